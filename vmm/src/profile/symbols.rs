//! The guest kernel's symbol table for the profiler: parses a `System.map` (`nm` output:
//! address, type letter, name), keeps the text symbols (`t`, `T`, `w`, `W`) sorted by
//! address, and maps an instruction pointer to the function that contains it.

use std::path::{Path, PathBuf};

/// Errors reading a symbol map.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("cannot read the symbol map {0}")]
    Read(PathBuf, #[source] std::io::Error),
    /// A line is not `ADDRESS TYPE NAME`.
    #[error("{path}:{line}: not a System.map line (expected `ADDRESS TYPE NAME`)")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
    },
    /// The file has no text symbols at all.
    #[error("the symbol map {0} has no text (t/T/w/W) symbols")]
    NoText(PathBuf),
}

/// How far past the last text symbol an address still counts as inside it, when no other
/// symbol marks where it ends.
const LAST_SYMBOL_SPAN: u64 = 64 << 10;

/// One function: where it starts, where the next symbol starts, its name.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TextSymbol {
    start: u64,
    end: u64,
    name: String,
}

/// A parsed symbol map, ready for lookups.
#[derive(Debug, Clone)]
pub struct SymbolMap {
    source: PathBuf,
    text: Vec<TextSymbol>,
}

/// One parsed line: address, whether it is a text symbol, name.
type Entry = (u64, bool, String);

fn parse_line(line: &str) -> Option<Entry> {
    let mut fields = line.split_whitespace();
    let addr = u64::from_str_radix(fields.next()?, 16).ok()?;
    let kind = fields.next()?;
    let name = fields.next()?;
    if kind.len() != 1 {
        return None;
    }
    let is_text = matches!(kind, "t" | "T" | "w" | "W");
    Some((addr, is_text, name.to_string()))
}

impl SymbolMap {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<SymbolMap, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Read(path.to_path_buf(), e))?;
        SymbolMap::parse(&text, path)
    }

    /// Parses System.map text; `source` names it in errors and reports. Blank lines are
    /// skipped; any other line that is not `ADDRESS TYPE NAME` is an error.
    pub fn parse(text: &str, source: &Path) -> Result<SymbolMap, Error> {
        let mut entries: Vec<Entry> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let entry = parse_line(line).ok_or_else(|| Error::Syntax {
                path: source.to_path_buf(),
                line: i + 1,
            })?;
            entries.push(entry);
        }
        let text = text_symbols(entries);
        if text.is_empty() {
            return Err(Error::NoText(source.to_path_buf()));
        }
        Ok(SymbolMap {
            source: source.to_path_buf(),
            text,
        })
    }

    /// Where the map was read from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// How many text symbols the map holds.
    pub fn len(&self) -> usize {
        self.text.len()
    }

    /// Whether the map holds no text symbols (never true for a parsed map).
    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }

    /// The function containing `addr`, if any.
    pub fn lookup(&self, addr: u64) -> Option<&str> {
        let after = self.text.partition_point(|s| s.start <= addr);
        let sym = self.text.get(after.checked_sub(1)?)?;
        (addr < sym.end).then_some(sym.name.as_str())
    }
}

/// Sorts the entries and turns the text ones into `[start, end)` ranges, where `end` is
/// the next higher address of any symbol. Of several text symbols at one address the
/// first in the file wins (System.map lists the canonical name first).
fn text_symbols(mut entries: Vec<Entry>) -> Vec<TextSymbol> {
    entries.sort_by_key(|e| e.0);
    let mut text: Vec<TextSymbol> = Vec::new();
    for (i, (addr, is_text, name)) in entries.iter().enumerate() {
        if !is_text || text.last().is_some_and(|t| t.start == *addr) {
            continue;
        }
        let end = entries[i + 1..]
            .iter()
            .map(|e| e.0)
            .find(|a| a > addr)
            .unwrap_or_else(|| addr.saturating_add(LAST_SYMBOL_SPAN));
        text.push(TextSymbol {
            start: *addr,
            end,
            name: name.clone(),
        });
    }
    text
}

/// The System.map beside `kernel`, following symlinks first (the kernel cache's
/// `vmlinux` link points into `<key>/`, where that build's System.map lives).
pub fn default_path(kernel: &Path) -> PathBuf {
    let real = std::fs::canonicalize(kernel).unwrap_or_else(|_| kernel.to_path_buf());
    real.with_file_name("System.map")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const MAP: &str = "\
ffffffff81000000 T _text
ffffffff81000000 T startup_64
ffffffff81000100 t early_helper
ffffffff81000200 W weak_thing
ffffffff81000300 r some_rodata
ffffffff81000400 T memset_orig
0000000000000000 A __absolute
ffffffff82000000 D _sdata

ffffffff81000500 T last_fn
";

    fn map() -> SymbolMap {
        SymbolMap::parse(MAP, Path::new("System.map")).unwrap()
    }

    #[test]
    fn keeps_text_symbols_sorted_and_dedups_aliases() {
        let m = map();
        let names: Vec<&str> = m.text.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "_text",
                "early_helper",
                "weak_thing",
                "memset_orig",
                "last_fn"
            ]
        );
        assert_eq!(m.len(), 5);
        assert!(!m.is_empty());
    }

    #[test]
    fn lookup_finds_the_containing_function() {
        let m = map();
        assert_eq!(m.lookup(0xffffffff81000000), Some("_text"));
        assert_eq!(m.lookup(0xffffffff810000ff), Some("_text"));
        assert_eq!(m.lookup(0xffffffff81000100), Some("early_helper"));
        assert_eq!(m.lookup(0xffffffff81000250), Some("weak_thing"));
        // Past weak_thing's end (the rodata symbol), before the next function.
        assert_eq!(m.lookup(0xffffffff81000350), None);
        assert_eq!(m.lookup(0xffffffff81000404), Some("memset_orig"));
        // The last function ends at the next symbol of any kind (_sdata).
        assert_eq!(m.lookup(0xffffffff81fffff0), Some("last_fn"));
        assert_eq!(m.lookup(0xffffffff82000000), None);
        // Below every function (user space, or the zero page).
        assert_eq!(m.lookup(0x40_1000), None);
        assert_eq!(m.lookup(0), None);
    }

    #[test]
    fn the_very_last_symbol_gets_a_bounded_span() {
        let m = SymbolMap::parse("1000 T only\n", Path::new("m")).unwrap();
        assert_eq!(m.lookup(0x1000), Some("only"));
        assert_eq!(m.lookup(0x1000 + LAST_SYMBOL_SPAN - 1), Some("only"));
        assert_eq!(m.lookup(0x1000 + LAST_SYMBOL_SPAN), None);
    }

    #[test]
    fn bad_lines_are_errors_with_a_line_number() {
        let e = SymbolMap::parse("1000 T a\nnot a map line\n", Path::new("m")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "m:2: not a System.map line (expected `ADDRESS TYPE NAME`)"
        );
        let e = SymbolMap::parse("zzzz T a\n", Path::new("m")).unwrap_err();
        assert!(matches!(e, Error::Syntax { line: 1, .. }), "{e}");
        let e = SymbolMap::parse("1000 TT a\n", Path::new("m")).unwrap_err();
        assert!(matches!(e, Error::Syntax { line: 1, .. }), "{e}");
        let e = SymbolMap::parse("1000 D data\n", Path::new("m")).unwrap_err();
        assert!(matches!(e, Error::NoText(_)), "{e}");
    }

    #[test]
    fn load_reports_a_missing_file() {
        let e = SymbolMap::load(Path::new("/nonexistent/System.map")).unwrap_err();
        assert!(matches!(e, Error::Read(..)), "{e}");
    }

    #[test]
    fn default_path_follows_the_kernel_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let build = dir.path().join("abc123");
        std::fs::create_dir(&build).unwrap();
        std::fs::write(build.join("vmlinux"), b"x").unwrap();
        let link = dir.path().join("vmlinux");
        std::os::unix::fs::symlink(build.join("vmlinux"), &link).unwrap();
        let real_build = std::fs::canonicalize(&build).unwrap();
        assert_eq!(default_path(&link), real_build.join("System.map"));
        // A kernel that does not exist: beside the path as given.
        assert_eq!(
            default_path(Path::new("/no/such/vmlinux")),
            PathBuf::from("/no/such/System.map")
        );
    }
}
