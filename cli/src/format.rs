//! docker's `--format`: a Go template (rendered by the gtmpl crate, a Rust implementation of
//! Go's text/template) over the JSON shape docker gives the same verb, with docker's extra
//! functions (`json`, `upper`, `lower`, `title`, `join`, `split`, `truncate`) and its
//! `table` prefix: a header row made by rendering the template over the column names, then
//! the rows, aligned as docker's tabwriter aligns them.

use std::collections::HashMap;

use gtmpl::error::ExecError;
use gtmpl::{Context, FuncError, Template, Value};

/// A parsed `--format`.
pub struct Format {
    template: Template,
    /// With the `table` prefix: the headers by field name.
    table: bool,
}

impl std::fmt::Debug for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Format")
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}

impl Format {
    /// Parses `spec` (`table` prefix, `{{json .}}`, `{{.Field}}`, ...).
    pub fn parse(spec: &str) -> anyhow::Result<Self> {
        let (table, body) = match spec.strip_prefix("table") {
            Some(rest) => (true, rest.trim_start()),
            None => (false, spec),
        };
        let mut template = Template::default();
        template.add_funcs(&FUNCS);
        // docker's `\t` in a format means a tab, as its shell users type it.
        template
            .parse(body.replace("\\t", "\t").replace("\\n", "\n"))
            .map_err(|e| anyhow::anyhow!("template parsing error: {e}"))?;
        Ok(Self { template, table })
    }

    /// Renders one object.
    pub fn render(&self, value: &serde_json::Value) -> anyhow::Result<String> {
        self.template
            .render(&Context::from(to_template(value)))
            .map_err(|e| match e {
                // gtmpl's message would print the whole object.
                ExecError::NoFiledFor(field, _) => {
                    anyhow::anyhow!("template: can't evaluate field {field}")
                }
                e => anyhow::anyhow!("template: {e}"),
            })
    }

    /// Renders every row, one per line; with `table`, under a header row made from
    /// `headers` (field name -> column title) and aligned.
    pub fn render_rows(
        &self,
        rows: &[serde_json::Value],
        headers: &[(&str, &str)],
    ) -> anyhow::Result<String> {
        let mut lines = Vec::new();
        if self.table {
            let titles: serde_json::Map<String, serde_json::Value> = headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), serde_json::Value::from(*v)))
                .collect();
            lines.push(self.render(&serde_json::Value::Object(titles))?);
        }
        for row in rows {
            lines.push(self.render(row)?);
        }
        if !self.table {
            return Ok(lines.iter().map(|l| format!("{l}\n")).collect());
        }
        let cells: Vec<Vec<String>> = lines
            .iter()
            .map(|l| l.split('\t').map(str::to_owned).collect())
            .collect();
        Ok(crate::human::table(&cells))
    }
}

/// What every `inspect` prints, as docker does: the objects found (a JSON array, or one
/// `format` line each), then one `Error: ...` line per query that found nothing; exit 1
/// if there was one.
pub fn print_inspected(
    found: &[serde_json::Value],
    errors: &[String],
    format: Option<&str>,
) -> anyhow::Result<std::process::ExitCode> {
    match format.map(Format::parse).transpose()? {
        Some(f) => {
            for v in found {
                println!("{}", f.render(v)?);
            }
        }
        None => println!("{}", serde_json::to_string_pretty(found)?),
    }
    for e in errors {
        eprintln!("Error: {e}");
    }
    Ok(match errors.is_empty() {
        true => std::process::ExitCode::SUCCESS,
        false => std::process::ExitCode::from(1),
    })
}

/// JSON as template data: objects are Go structs (an unknown field is an error, as in
/// docker), arrays slices, null nil.
fn to_template(value: &serde_json::Value) -> Value {
    match value {
        serde_json::Value::Null => Value::Nil,
        serde_json::Value::Bool(b) => Value::from(*b),
        serde_json::Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => Value::from(i),
            (_, Some(u), _) => Value::from(u),
            (_, _, f) => Value::from(f.unwrap_or(0.0)),
        },
        serde_json::Value::String(s) => Value::from(s.clone()),
        serde_json::Value::Array(a) => Value::Array(a.iter().map(to_template).collect()),
        serde_json::Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| (k.clone(), to_template(v)))
                .collect::<HashMap<_, _>>(),
        ),
    }
}

/// Template data back as JSON (for `json`).
fn to_json(value: &Value) -> serde_json::Value {
    match value {
        Value::Nil | Value::NoValue | Value::Function(_) => serde_json::Value::Null,
        Value::Bool(b) => serde_json::Value::from(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => serde_json::Value::from(i),
            (_, Some(u), _) => serde_json::Value::from(u),
            (_, _, f) => serde_json::Value::from(f.unwrap_or(0.0)),
        },
        Value::String(s) => serde_json::Value::from(s.clone()),
        Value::Array(a) => serde_json::Value::Array(a.iter().map(to_json).collect()),
        Value::Object(o) | Value::Map(o) => {
            let sorted: std::collections::BTreeMap<_, _> =
                o.iter().map(|(k, v)| (k.clone(), to_json(v))).collect();
            serde_json::Value::Object(sorted.into_iter().collect())
        }
    }
}

const FUNCS: [(&str, gtmpl::Func); 7] = [
    ("json", json),
    ("upper", upper),
    ("lower", lower),
    ("title", title),
    ("join", join),
    ("split", split),
    ("truncate", truncate),
];

fn one<'a>(name: &str, args: &'a [Value]) -> Result<&'a Value, FuncError> {
    match args {
        [v] => Ok(v),
        _ => Err(FuncError::ExactlyXArgs(name.to_owned(), 1)),
    }
}

fn string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn json(args: &[Value]) -> Result<Value, FuncError> {
    let v = one("json", args)?;
    Ok(Value::from(to_json(v).to_string()))
}

fn upper(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::from(string(one("upper", args)?).to_uppercase()))
}

fn lower(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::from(string(one("lower", args)?).to_lowercase()))
}

fn title(args: &[Value]) -> Result<Value, FuncError> {
    let s = string(one("title", args)?);
    let mut out = String::with_capacity(s.len());
    let mut start = true;
    for c in s.chars() {
        match start {
            true => out.extend(c.to_uppercase()),
            false => out.push(c),
        }
        start = c.is_whitespace();
    }
    Ok(Value::from(out))
}

fn join(args: &[Value]) -> Result<Value, FuncError> {
    let [Value::Array(items), sep] = args else {
        return Err(FuncError::ExactlyXArgs("join".to_owned(), 2));
    };
    let items: Vec<String> = items.iter().map(string).collect();
    Ok(Value::from(items.join(&string(sep))))
}

fn split(args: &[Value]) -> Result<Value, FuncError> {
    let [s, sep] = args else {
        return Err(FuncError::ExactlyXArgs("split".to_owned(), 2));
    };
    let parts = string(s)
        .split(string(sep).as_str())
        .map(|p| Value::from(p.to_owned()))
        .collect();
    Ok(Value::Array(parts))
}

fn truncate(args: &[Value]) -> Result<Value, FuncError> {
    let [s, n] = args else {
        return Err(FuncError::ExactlyXArgs("truncate".to_owned(), 2));
    };
    let n = match n {
        Value::Number(n) => n.as_u64().unwrap_or(0),
        _ => return Err(FuncError::UnableToConvertFromValue),
    };
    let n = usize::try_from(n).unwrap_or(usize::MAX);
    Ok(Value::from(string(s).chars().take(n).collect::<String>()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(spec: &str, v: serde_json::Value) -> String {
        Format::parse(spec).unwrap().render(&v).unwrap()
    }

    #[test]
    fn fields_functions_and_json() {
        let v = serde_json::json!({"State": {"Pid": 42, "Status": "running"}, "Names": ["a", "b"], "Labels": null});
        assert_eq!(render("{{.State.Pid}}", v.clone()), "42");
        assert_eq!(render("{{upper .State.Status}}", v.clone()), "RUNNING");
        assert_eq!(render("{{join .Names \",\"}}", v.clone()), "a,b");
        assert_eq!(
            render("{{json .State}}", v.clone()),
            r#"{"Pid":42,"Status":"running"}"#
        );
        assert_eq!(render("{{json .Labels}}", v.clone()), "null");
        assert_eq!(render("{{truncate .State.Status 3}}", v.clone()), "run");
        assert!(Format::parse("{{.Nope}}").unwrap().render(&v).is_err());
        assert!(Format::parse("{{.State.Pid").is_err());
    }

    #[test]
    fn tables_have_headers_and_align() {
        let f = Format::parse("table {{.ID}}\\t{{.Name}}").unwrap();
        let rows = [
            serde_json::json!({"ID": "abc", "Name": "web"}),
            serde_json::json!({"ID": "0123456789ab", "Name": "db"}),
        ];
        let out = f
            .render_rows(&rows, &[("ID", "CONTAINER ID"), ("Name", "NAMES")])
            .unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        assert!(lines[0].starts_with("CONTAINER ID"), "{out}");
        let col = lines[0].find("NAMES").unwrap();
        assert_eq!(lines[1].find("web"), Some(col), "{out}");
        assert_eq!(lines[2].find("db"), Some(col), "{out}");
    }
}
