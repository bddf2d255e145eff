//! The Dockerfile's word rules for the instructions the builder expands itself (FROM, COPY,
//! ADD, ENV, ARG, LABEL, WORKDIR, USER, EXPOSE, VOLUME, STOPSIGNAL): quotes, the escape
//! character (`\`, or the `# escape=` directive's), and `$VAR`, `${VAR}`, `${VAR:-default}`,
//! `${VAR-default}`, `${VAR:+alternative}` and `${VAR+alternative}` from the build's variables.
//! RUN, CMD and ENTRYPOINT are left to the container's shell, as docker does.

/// A word that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WordError {
    /// A quote is not closed.
    #[error("unexpected end of statement while looking for matching {0}")]
    Unclosed(char),
    /// `${` without its `}`, or a modifier husk does not know.
    #[error("missing '}}' or bad substitution in {0:?}")]
    BadSubstitution(String),
    /// `KEY=VALUE` was wanted.
    #[error("{what} names must not be empty: {text:?}")]
    EmptyName {
        /// ENV, LABEL or ARG.
        what: &'static str,
        /// The instruction's arguments.
        text: String,
    },
    /// ENV/LABEL in the old one-pair form without a value.
    #[error("{0} requires exactly one argument in its legacy form: KEY VALUE")]
    Legacy(&'static str),
}

/// The variables words are expanded with.
pub trait Vars {
    /// The value of `name`, if set.
    fn get(&self, name: &str) -> Option<String>;
}

impl<F: Fn(&str) -> Option<String>> Vars for F {
    fn get(&self, name: &str) -> Option<String> {
        self(name)
    }
}

/// Splits `text` into words (quotes removed, variables expanded; whitespace separates
/// words outside quotes).
pub fn split(text: &str, escape: char, vars: &dyn Vars) -> Result<Vec<String>, WordError> {
    Lexer::new(text, escape, vars).words(true)
}

/// `text` as one word (whitespace kept).
pub fn expand(text: &str, escape: char, vars: &dyn Vars) -> Result<String, WordError> {
    Ok(Lexer::new(text, escape, vars).words(false)?.concat())
}

/// ENV, LABEL and ARG arguments as `(name, value)` pairs: `K=V K2="a b"`; ENV and LABEL
/// also take docker's legacy `K some value` (one pair, the rest of the line). ARG's
/// `NAME` without `=` gives `(NAME, None)`.
pub fn pairs(
    what: &'static str,
    text: &str,
    escape: char,
    vars: &dyn Vars,
) -> Result<Vec<(String, Option<String>)>, WordError> {
    let text = text.trim();
    let first = text.split_whitespace().next().unwrap_or("");
    if what != "ARG" && !first.contains('=') {
        let (name, rest) = text
            .split_once(char::is_whitespace)
            .ok_or(WordError::Legacy(what))?;
        return Ok(vec![(
            name.to_owned(),
            Some(expand(rest.trim(), escape, vars)?),
        )]);
    }
    let mut out = Vec::new();
    for word in Lexer::new(text, escape, vars).raw_words()? {
        let (name, value) = match word.split_once('=') {
            Some((n, v)) => (expand(n, escape, vars)?, Some(expand(v, escape, vars)?)),
            None if what == "ARG" => (word.clone(), None),
            None => return Err(WordError::Legacy(what)),
        };
        if name.is_empty() {
            return Err(WordError::EmptyName {
                what,
                text: text.to_owned(),
            });
        }
        out.push((name, value));
    }
    Ok(out)
}

struct Lexer<'a> {
    chars: Vec<char>,
    pos: usize,
    escape: char,
    vars: &'a dyn Vars,
}

impl<'a> Lexer<'a> {
    fn new(text: &str, escape: char, vars: &'a dyn Vars) -> Self {
        Self {
            chars: text.chars().collect(),
            pos: 0,
            escape,
            vars,
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += 1;
        Some(c)
    }

    /// The words, or with `separate` false one word with the whitespace in it.
    fn words(&mut self, separate: bool) -> Result<Vec<String>, WordError> {
        let mut words = Vec::new();
        let mut word = String::new();
        let mut started = false;
        while let Some(c) = self.next() {
            match c {
                c if separate && c.is_whitespace() => {
                    if started {
                        words.push(std::mem::take(&mut word));
                        started = false;
                    }
                }
                '\'' => {
                    started = true;
                    word.push_str(&self.single_quoted()?);
                }
                '"' => {
                    started = true;
                    word.push_str(&self.double_quoted()?);
                }
                '$' if separate => {
                    // An unquoted value splits at its whitespace, as in a shell.
                    for v in self.variable()?.chars() {
                        match v.is_whitespace() {
                            true if started => {
                                words.push(std::mem::take(&mut word));
                                started = false;
                            }
                            true => {}
                            false => {
                                started = true;
                                word.push(v);
                            }
                        }
                    }
                }
                '$' => {
                    started = true;
                    word.push_str(&self.variable()?);
                }
                c if c == self.escape => {
                    started = true;
                    if let Some(n) = self.next() {
                        word.push(n);
                    }
                }
                c => {
                    started = true;
                    word.push(c);
                }
            }
        }
        if started || !separate {
            words.push(word);
        }
        Ok(words)
    }

    /// Whitespace-separated words with quotes kept (for `K="a b"` pairs, expanded after
    /// the split at `=`).
    fn raw_words(&mut self) -> Result<Vec<String>, WordError> {
        let mut words = Vec::new();
        let mut word = String::new();
        let mut quote = None;
        while let Some(c) = self.next() {
            match (quote, c) {
                (None, c) if c.is_whitespace() => {
                    if !word.is_empty() {
                        words.push(std::mem::take(&mut word));
                    }
                    continue;
                }
                (None, '\'' | '"') => quote = Some(c),
                (Some(q), c) if c == q => quote = None,
                (Some('\''), _) => {}
                (_, c) if c == self.escape => {
                    word.push(c);
                    if let Some(n) = self.next() {
                        word.push(n);
                    }
                    continue;
                }
                _ => {}
            }
            word.push(c);
        }
        if let Some(q) = quote {
            return Err(WordError::Unclosed(q));
        }
        if !word.is_empty() {
            words.push(word);
        }
        Ok(words)
    }

    fn single_quoted(&mut self) -> Result<String, WordError> {
        let mut s = String::new();
        loop {
            match self.next() {
                None => return Err(WordError::Unclosed('\'')),
                Some('\'') => return Ok(s),
                Some(c) => s.push(c),
            }
        }
    }

    fn double_quoted(&mut self) -> Result<String, WordError> {
        let mut s = String::new();
        loop {
            match self.next() {
                None => return Err(WordError::Unclosed('"')),
                Some('"') => return Ok(s),
                Some('$') => s.push_str(&self.variable()?),
                Some(c) if c == self.escape => match self.peek() {
                    Some(n) if n == '"' || n == '$' || n == self.escape => {
                        self.pos += 1;
                        s.push(n);
                    }
                    _ => s.push(c),
                },
                Some(c) => s.push(c),
            }
        }
    }

    /// After a `$`: the variable's value (a lone `$` stays).
    fn variable(&mut self) -> Result<String, WordError> {
        if self.peek() == Some('{') {
            self.pos += 1;
            return self.braced();
        }
        let name = self.name();
        if name.is_empty() {
            return Ok("$".into());
        }
        Ok(self.vars.get(&name).unwrap_or_default())
    }

    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(c) = self
            .peek()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        {
            name.push(c);
            self.pos += 1;
        }
        name
    }

    /// `${NAME}`, `${NAME:-word}`, `${NAME-word}`, `${NAME:+word}`, `${NAME+word}`.
    fn braced(&mut self) -> Result<String, WordError> {
        let start = self.pos;
        let bad = |l: &Self| {
            WordError::BadSubstitution(l.chars[start.saturating_sub(2)..].iter().collect())
        };
        let name = self.name();
        if name.is_empty() {
            return Err(bad(self));
        }
        let value = self.vars.get(&name);
        let colon = self.peek() == Some(':');
        if colon {
            self.pos += 1;
        }
        let op = match self.next() {
            Some('}') if !colon => return Ok(value.unwrap_or_default()),
            Some(op @ ('-' | '+')) => op,
            _ => return Err(bad(self)),
        };
        let word = self.until_brace().ok_or_else(|| bad(self))?;
        let word = expand(&word, self.escape, self.vars)?;
        let set = match colon {
            true => value.as_deref().is_some_and(|v| !v.is_empty()),
            false => value.is_some(),
        };
        Ok(match (op, set) {
            ('-', true) => value.unwrap_or_default(),
            ('-', false) => word,
            (_, true) => word,
            (_, false) => String::new(),
        })
    }

    /// The text up to the `}` that closes this substitution (nested `${...}` included).
    fn until_brace(&mut self) -> Option<String> {
        let mut depth = 0;
        let mut s = String::new();
        while let Some(c) = self.next() {
            match c {
                '}' if depth == 0 => return Some(s),
                '}' => depth -= 1,
                '{' if s.ends_with('$') => depth += 1,
                _ => {}
            }
            s.push(c);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(name: &str) -> Option<String> {
        match name {
            "NAME" => Some("world".into()),
            "EMPTY" => Some(String::new()),
            "SPACED" => Some("a b".into()),
            _ => None,
        }
    }

    #[test]
    fn variables_expand_like_docker() {
        let e = |t: &str| expand(t, '\\', &vars).unwrap();
        assert_eq!(e("hello $NAME"), "hello world");
        assert_eq!(e("${NAME}s"), "worlds");
        assert_eq!(e("${MISSING:-dflt}"), "dflt");
        assert_eq!(e("${EMPTY:-dflt}"), "dflt");
        assert_eq!(e("${EMPTY-dflt}"), "");
        assert_eq!(e("${NAME:+alt}"), "alt");
        assert_eq!(e("${MISSING:+alt}"), "");
        assert_eq!(e("${MISSING:-${NAME}}"), "world");
        assert_eq!(e("'$NAME'"), "$NAME");
        assert_eq!(e("\"$NAME\""), "world");
        assert_eq!(e("\\$NAME"), "$NAME");
        assert_eq!(e("cost: 5$"), "cost: 5$");
        assert_eq!(e("$MISSING/x"), "/x");
        assert!(expand("${NAME", '\\', &vars).is_err());
        assert!(expand("${NAME:?x}", '\\', &vars).is_err());
        assert!(expand("'open", '\\', &vars).is_err());
    }

    #[test]
    fn the_escape_directive_changes_the_escape_character() {
        assert_eq!(
            expand("C:\\dir `$NAME", '`', &vars).unwrap(),
            "C:\\dir $NAME"
        );
    }

    #[test]
    fn words_split_outside_quotes_only() {
        let w = split("80/tcp \"a b\" $SPACED ''", '\\', &vars).unwrap();
        assert_eq!(w, ["80/tcp", "a b", "a", "b", ""]);
    }

    #[test]
    fn pairs_take_both_forms() {
        let p = pairs("ENV", "A=1 B=\"two words\" C=$NAME", '\\', &vars).unwrap();
        assert_eq!(
            p,
            [
                ("A".into(), Some("1".into())),
                ("B".into(), Some("two words".into())),
                ("C".into(), Some("world".into()))
            ]
        );
        let legacy = pairs("ENV", "GREETING hello $NAME", '\\', &vars).unwrap();
        assert_eq!(legacy, [("GREETING".into(), Some("hello world".into()))]);
        let args = pairs("ARG", "VERSION X=1", '\\', &vars).unwrap();
        assert_eq!(
            args,
            [("VERSION".into(), None), ("X".into(), Some("1".into()))]
        );
        assert!(pairs("ENV", "=1", '\\', &vars).is_err());
        assert!(pairs("LABEL", "lonely", '\\', &vars).is_err());
    }
}
