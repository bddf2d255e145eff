//! A build's context: the directory (or the tar a client sent) that COPY and ADD read,
//! minus what `.dockerignore` excludes. A client packs it ([`pack`]); the builder unpacks
//! it into the build's own directory under the state root ([`unpack`]), keeping only
//! files, directories and links, and reads sources only inside it ([`Context::resolve`]
//! follows symlinks within the context, as docker does, never out of it).

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};

use globset::{GlobBuilder, GlobMatcher};

/// Errors of the build context.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    /// Reading or writing the context failed.
    #[error("{0}: {1}")]
    Io(String, #[source] io::Error),
    /// A `.dockerignore` line is not a pattern.
    #[error(".dockerignore: bad pattern {0:?}: {1}")]
    BadPattern(String, String),
    /// A source is not in the context.
    #[error(
        "file not found in build context or excluded by .dockerignore: stat {0}: file does not exist"
    )]
    NotFound(String),
    /// A symlink loop (or too deep a chain) in the context.
    #[error("too many levels of symbolic links resolving {0} in the build context")]
    Loop(String),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> ContextError {
    let what = what.into();
    move |e| ContextError::Io(what, e)
}

/// `.dockerignore`: patterns (Go's `filepath.Match` syntax plus `**`), `!` exceptions, the
/// last matching line deciding; a pattern that matches a directory excludes what is in it.
#[derive(Debug, Default)]
pub struct Ignore {
    rules: Vec<(GlobMatcher, bool)>,
}

impl Ignore {
    /// Parses `.dockerignore` text.
    pub fn parse(text: &str) -> Result<Self, ContextError> {
        let mut rules = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (pattern, exclude) = match line.strip_prefix('!') {
                Some(p) => (p.trim(), false),
                None => (line, true),
            };
            let cleaned = clean(pattern);
            if cleaned.is_empty() {
                continue;
            }
            let glob = GlobBuilder::new(&cleaned)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| ContextError::BadPattern(line.to_owned(), e.kind().to_string()))?;
            rules.push((glob.compile_matcher(), exclude));
        }
        Ok(Self { rules })
    }

    /// Reads `<dir>/.dockerignore` (none: nothing excluded).
    pub fn read(dir: &Path) -> Result<Self, ContextError> {
        match fs::read_to_string(dir.join(".dockerignore")) {
            Ok(text) => Self::parse(&text),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(ContextError::Io(".dockerignore".into(), e)),
        }
    }

    /// Whether `rel` (a path relative to the context, `/`-separated) is excluded.
    pub fn excluded(&self, rel: &str) -> bool {
        let mut excluded = false;
        for (glob, exclude) in &self.rules {
            if excluded == *exclude {
                continue;
            }
            let hit = glob.is_match(rel) || ancestors(rel).any(|a| glob.is_match(a));
            if hit {
                excluded = *exclude;
            }
        }
        excluded
    }

    /// Whether an exception could bring back something under an excluded directory (then
    /// the directory is still walked).
    fn has_exceptions(&self) -> bool {
        self.rules.iter().any(|(_, exclude)| !exclude)
    }
}

/// `a/b/c` -> `a`, `a/b`.
fn ancestors(rel: &str) -> impl Iterator<Item = &str> {
    rel.match_indices('/').map(move |(i, _)| &rel[..i])
}

/// A path as Go's `filepath.Clean` leaves it, relative (no leading `/`; `..` stops at the
/// top): `.dockerignore` patterns, COPY's wildcards, WORKDIR.
pub(super) fn clean(pattern: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in pattern.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

/// Writes the context directory `dir` as a tar to `out`, without what `ignore` excludes
/// (never read, however large); symlinks go as links, sockets and devices not at all.
pub fn pack(dir: &Path, ignore: &Ignore, out: impl Write) -> Result<(), ContextError> {
    let mut tar = tar::Builder::new(out);
    tar.follow_symlinks(false);
    tar.mode(tar::HeaderMode::Complete);
    walk(dir, "", ignore, &mut tar)?;
    tar.into_inner()
        .and_then(|mut w| w.flush())
        .map_err(io_err("write the build context"))
}

fn walk<W: Write>(
    dir: &Path,
    prefix: &str,
    ignore: &Ignore,
    tar: &mut tar::Builder<W>,
) -> Result<(), ContextError> {
    let what = || format!("read the build context {}", dir.display());
    let mut names: Vec<_> = fs::read_dir(dir)
        .map_err(io_err(what()))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .map_err(io_err(what()))?;
    names.sort();
    for name in names {
        let Some(name) = name.to_str() else {
            log::warn!(
                "build context: skipping a name that is not UTF-8 in {}",
                dir.display()
            );
            continue;
        };
        let rel = format!("{prefix}{name}");
        let path = dir.join(name);
        let meta = fs::symlink_metadata(&path).map_err(io_err(format!("stat {rel}")))?;
        let excluded = ignore.excluded(&rel);
        if meta.is_dir() {
            if excluded && !ignore.has_exceptions() {
                continue;
            }
            if !excluded {
                tar.append_path_with_name(&path, &rel)
                    .map_err(io_err(format!("pack {rel}")))?;
            }
            walk(&path, &format!("{rel}/"), ignore, tar)?;
        } else if !excluded && (meta.is_file() || meta.file_type().is_symlink()) {
            tar.append_path_with_name(&path, &rel)
                .map_err(io_err(format!("pack {rel}")))?;
        }
    }
    Ok(())
}

/// `input`, gunzipped if it starts as gzip does (a context docker's `--compress` sent, an
/// archive ADD unpacks), as it is otherwise.
pub(super) fn gunzipped<'a>(input: impl Read + 'a) -> io::Result<Box<dyn Read + 'a>> {
    let mut r = io::BufReader::new(input);
    let gz = io::BufRead::fill_buf(&mut r)?.starts_with(&[0x1f, 0x8b]);
    Ok(match gz {
        true => Box::new(flate2::read::GzDecoder::new(r)),
        false => Box::new(r),
    })
}

/// Unpacks a context tar (plain or gzip) into `dest` (an empty directory of the build's):
/// files, directories, symlinks and hard links within it; anything else, and any entry that
/// would land outside `dest`, is skipped.
pub fn unpack(input: impl Read, dest: &Path) -> Result<(), ContextError> {
    let bad = || io_err("read the build context (a tar)");
    let mut tar = tar::Archive::new(gunzipped(input).map_err(bad())?);
    tar.set_preserve_permissions(true);
    tar.set_preserve_ownerships(false);
    tar.set_preserve_mtime(true);
    tar.set_unpack_xattrs(false);
    tar.set_overwrite(true);
    for entry in tar.entries().map_err(bad())? {
        let mut entry = entry.map_err(bad())?;
        let kind = entry.header().entry_type();
        let wanted = kind.is_file() || kind.is_dir() || kind.is_symlink() || kind.is_hard_link();
        if !wanted {
            continue;
        }
        // unpack_in refuses `..` and paths through symlinks that leave `dest`.
        entry.unpack_in(dest).map_err(bad())?;
    }
    Ok(())
}

/// An unpacked context.
#[derive(Debug, Clone)]
pub struct Context {
    root: PathBuf,
}

impl Context {
    /// The context unpacked at `root`.
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    /// Its directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The host path of `rel` in the context, every symlink on the way (the last one too)
    /// followed inside the context: an absolute target starts again at its root, `..`
    /// stops there. Missing: [`ContextError::NotFound`].
    pub fn resolve(&self, rel: &str) -> Result<PathBuf, ContextError> {
        let mut hops = 0;
        let mut todo: Vec<String> = components(rel);
        todo.reverse();
        let mut done: Vec<String> = Vec::new();
        while let Some(part) = todo.pop() {
            if part == ".." {
                done.pop();
                continue;
            }
            let here = self.root.join(done.iter().collect::<PathBuf>()).join(&part);
            let meta =
                fs::symlink_metadata(&here).map_err(|_| ContextError::NotFound(rel.into()))?;
            if !meta.file_type().is_symlink() {
                done.push(part);
                continue;
            }
            hops += 1;
            if hops > 40 {
                return Err(ContextError::Loop(rel.into()));
            }
            let target = fs::read_link(&here).map_err(io_err(format!("read link {rel}")))?;
            if target.is_absolute() {
                done.clear();
            }
            let mut more = components(&target.to_string_lossy());
            more.reverse();
            todo.extend(more);
        }
        Ok(self.root.join(done.iter().collect::<PathBuf>()))
    }

    /// The context's paths (relative, `/`-separated, sorted) that `pattern` matches
    /// (Go's `filepath.Match` per path component, as COPY's sources).
    pub fn glob(&self, pattern: &str) -> Result<Vec<String>, ContextError> {
        let pattern = clean(pattern);
        let glob = GlobBuilder::new(&pattern)
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .map_err(|e| ContextError::BadPattern(pattern.clone(), e.kind().to_string()))?
            .compile_matcher();
        let depth = pattern.split('/').count();
        let mut hits = Vec::new();
        self.collect(&self.root, "", depth, &glob, &mut hits)?;
        hits.sort();
        Ok(hits)
    }

    fn collect(
        &self,
        dir: &Path,
        prefix: &str,
        depth: usize,
        glob: &GlobMatcher,
        hits: &mut Vec<String>,
    ) -> Result<(), ContextError> {
        if depth == 0 {
            return Ok(());
        }
        let entries = fs::read_dir(dir).map_err(io_err(format!("read {prefix}")))?;
        for e in entries.flatten() {
            let Ok(name) = e.file_name().into_string() else {
                continue;
            };
            let rel = format!("{prefix}{name}");
            if depth == 1 {
                if glob.is_match(&rel) {
                    hits.push(rel);
                }
            } else if e.file_type().is_ok_and(|t| t.is_dir()) {
                self.collect(&e.path(), &format!("{rel}/"), depth - 1, glob, hits)?;
            }
        }
        Ok(())
    }
}

/// The normal components of a path (`.` and empty ones dropped, `..` kept).
fn components(path: &str) -> Vec<String> {
    Path::new(path)
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_string_lossy().into_owned()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect()
}

/// Whether a COPY source is a pattern.
pub fn is_pattern(source: &str) -> bool {
    source.contains(['*', '?', '['])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockerignore_follows_docker() {
        let i = Ignore::parse("# c\n*.log\n!keep.log\nbuild\n/secret/\n**/*.tmp\n").unwrap();
        assert!(i.excluded("a.log"));
        assert!(!i.excluded("keep.log"));
        assert!(!i.excluded("sub/a.log"), "* does not cross /");
        assert!(i.excluded("build"));
        assert!(
            i.excluded("build/out/x"),
            "a directory's contents go with it"
        );
        assert!(i.excluded("secret/key"));
        assert!(i.excluded("deep/er/x.tmp"));
        assert!(!i.excluded("index.html"));
        assert!(Ignore::parse("[").is_err());
    }

    #[test]
    fn pack_and_unpack_keep_the_context_without_what_is_ignored() {
        let src = tempfile::tempdir().unwrap();
        fs::write(src.path().join("index.html"), "hi").unwrap();
        fs::create_dir(src.path().join("node_modules")).unwrap();
        fs::write(src.path().join("node_modules/big"), "x").unwrap();
        std::os::unix::fs::symlink("/etc", src.path().join("escape")).unwrap();
        let ignore = Ignore::parse("node_modules").unwrap();
        let mut tar = Vec::new();
        pack(src.path(), &ignore, &mut tar).unwrap();
        let dst = tempfile::tempdir().unwrap();
        unpack(tar.as_slice(), dst.path()).unwrap();
        assert_eq!(
            fs::read_to_string(dst.path().join("index.html")).unwrap(),
            "hi"
        );
        assert!(!dst.path().join("node_modules").exists());
        let ctx = Context::new(dst.path().to_owned());
        // The link to /etc resolves inside the context, where there is no etc/passwd.
        assert!(matches!(
            ctx.resolve("escape/passwd"),
            Err(ContextError::NotFound(_))
        ));
        assert_eq!(
            ctx.resolve("./index.html").unwrap(),
            dst.path().join("index.html")
        );
        assert_eq!(
            ctx.resolve("../../index.html").unwrap(),
            dst.path().join("index.html")
        );
        assert_eq!(ctx.glob("*.html").unwrap(), ["index.html"]);
        // The same context gzip'd (docker's --compress) unpacks the same.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let gzipped = tempfile::tempdir().unwrap();
        unpack(gz.finish().unwrap().as_slice(), gzipped.path()).unwrap();
        let text = fs::read_to_string(gzipped.path().join("index.html")).unwrap();
        assert_eq!(text, "hi");
    }

    #[test]
    fn hostile_context_tars_stay_inside() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, "out", "/tmp").unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_mode(0o644);
        b.append_data(&mut h, "out/planted", &b"x"[..]).unwrap();
        let tar = b.into_inner().unwrap();
        let dst = tempfile::tempdir().unwrap();
        assert!(unpack(tar.as_slice(), dst.path()).is_err());
        assert!(!Path::new("/tmp/planted").exists());
    }
}
