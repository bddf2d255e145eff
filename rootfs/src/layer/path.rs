//! Layer entry paths: lexical normalisation of tar names and hardlink targets into paths
//! relative to the image root, rejecting every name that climbs out of it, and recognition of
//! OCI whiteout names.

use std::ffi::CString;
use std::fmt;

/// Errors from normalising a tar path.
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    /// `..` climbs above the image root.
    #[error("path {0:?} escapes the image root")]
    Escapes(String),
    /// The name holds a NUL byte.
    #[error("path {0:?} contains a NUL byte")]
    Nul(String),
}

/// A normalised path below the image root: no empty, `.` or `..` components. Empty means the
/// root itself.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct RelPath(Vec<Vec<u8>>);

impl RelPath {
    /// Normalises a tar name. A leading `/` is dropped (docker does the same: names are always
    /// taken relative to the image root); `..` pops a component and is an error at the root.
    pub fn parse(raw: &[u8]) -> Result<Self, PathError> {
        let shown = || String::from_utf8_lossy(raw).into_owned();
        if raw.contains(&0) {
            return Err(PathError::Nul(shown()));
        }
        let mut parts: Vec<Vec<u8>> = Vec::new();
        for comp in raw.split(|&b| b == b'/') {
            match comp {
                b"" | b"." => {}
                b".." => {
                    if parts.pop().is_none() {
                        return Err(PathError::Escapes(shown()));
                    }
                }
                c => parts.push(c.to_vec()),
            }
        }
        Ok(Self(parts))
    }

    /// Whether this is the image root.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The last component (empty for the root).
    pub fn name(&self) -> &[u8] {
        self.0.last().map_or(&[], Vec::as_slice)
    }

    /// The containing directory (the root's parent is the root).
    pub fn parent(&self) -> Self {
        let n = self.0.len().saturating_sub(1);
        Self(self.0[..n].to_vec())
    }

    /// This path with `name` appended.
    pub fn join(&self, name: &[u8]) -> Self {
        let mut parts = self.0.clone();
        parts.push(name.to_vec());
        Self(parts)
    }

    /// The first `n` components.
    pub fn prefix(&self, n: usize) -> Self {
        Self(self.0[..n.min(self.0.len())].to_vec())
    }

    /// Number of components.
    pub fn depth(&self) -> usize {
        self.0.len()
    }

    /// Whether `self` is a strict ancestor of `other`.
    pub fn is_ancestor_of(&self, other: &Self) -> bool {
        self.0.len() < other.0.len() && other.0.starts_with(&self.0)
    }

    /// The path as a C string for `*at` calls (`.` for the root).
    pub fn to_cstring(&self) -> CString {
        let joined = if self.is_root() {
            b".".to_vec()
        } else {
            self.0.join(&b'/')
        };
        // Components never hold NUL: `parse` rejects it.
        CString::new(joined).unwrap_or_default()
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_root() {
            return f.write_str("/");
        }
        for c in &self.0 {
            write!(f, "/{}", String::from_utf8_lossy(c))?;
        }
        Ok(())
    }
}

impl fmt::Debug for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// What an OCI whiteout entry asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Whiteout<'a> {
    /// `.wh..wh..opq`: hide everything lower layers have in this directory.
    Opaque,
    /// `.wh.NAME`: hide NAME of lower layers.
    Remove(&'a [u8]),
    /// Another `.wh..wh.` name (aufs bookkeeping): ignored, as docker does.
    Ignore,
}

const WH_PREFIX: &[u8] = b".wh.";
const WH_META: &[u8] = b".wh..wh.";

/// Recognises a whiteout file name.
pub fn whiteout(name: &[u8]) -> Option<Whiteout<'_>> {
    if name == b".wh..wh..opq" {
        return Some(Whiteout::Opaque);
    }
    if name.starts_with(WH_META) {
        return Some(Whiteout::Ignore);
    }
    let target = name.strip_prefix(WH_PREFIX)?;
    Some(match target {
        b"" | b"." | b".." => Whiteout::Ignore,
        t => Whiteout::Remove(t),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> String {
        RelPath::parse(s.as_bytes()).unwrap().to_string()
    }

    #[test]
    fn normalises_names() {
        assert_eq!(p("./a/b/"), "/a/b");
        assert_eq!(p("/etc//passwd"), "/etc/passwd");
        assert_eq!(p("a/./b/../c"), "/a/c");
        assert_eq!(p("./"), "/");
        assert!(RelPath::parse(b"./").unwrap().is_root());
    }

    #[test]
    fn rejects_escapes() {
        for bad in ["..", "../etc/passwd", "a/../../b", "/../x", "./a/../.."] {
            assert!(
                matches!(RelPath::parse(bad.as_bytes()), Err(PathError::Escapes(_))),
                "{bad}"
            );
        }
        assert!(matches!(RelPath::parse(b"a\0b"), Err(PathError::Nul(_))));
    }

    #[test]
    fn ancestry_and_parts() {
        let a = RelPath::parse(b"a").unwrap();
        let abc = RelPath::parse(b"a/b/c").unwrap();
        assert!(a.is_ancestor_of(&abc));
        assert!(!abc.is_ancestor_of(&a));
        assert!(!a.is_ancestor_of(&a));
        assert!(RelPath::default().is_ancestor_of(&a));
        assert_eq!(abc.parent().to_string(), "/a/b");
        assert_eq!(abc.name(), b"c");
        assert_eq!(abc.prefix(1), a);
        assert_eq!(abc.to_cstring().as_bytes(), b"a/b/c");
        assert_eq!(RelPath::default().to_cstring().as_bytes(), b".");
    }

    #[test]
    fn recognises_whiteouts() {
        assert_eq!(whiteout(b".wh..wh..opq"), Some(Whiteout::Opaque));
        assert_eq!(whiteout(b".wh.foo"), Some(Whiteout::Remove(b"foo")));
        assert_eq!(whiteout(b".wh..wh.plnk"), Some(Whiteout::Ignore));
        assert_eq!(whiteout(b".wh.."), Some(Whiteout::Ignore));
        assert_eq!(whiteout(b"foo.wh.bar"), None);
    }
}
