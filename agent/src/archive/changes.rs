//! The container's changes, read from the overlay's upper directory against its lower
//! directories: docker's `diff` (`A`dded, `C`hanged, `D`eleted paths) and `commit`'s layer
//! (the upper directory as an OCI layer: overlay whiteouts, 0:0 character devices, become
//! `.wh.<name>` entries; an opaque directory gets `.wh..wh..opq`).

use std::fs::{self, Metadata};
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::tree::{TarOut, sorted_children};
use super::{ArchiveError, io_err};

/// The overlay's directories (each a `/proc/self/fd/N` path).
pub struct Overlay<'a> {
    /// The upper directory.
    pub upper: &'a Path,
    /// The lower directories, topmost first.
    pub lowers: &'a [PathBuf],
}

/// What the agent creates as mount points in a root that lacks them (bind-mounted files,
/// kernel filesystems): not the container's changes, as with docker's init layer.
const PLACEHOLDERS: &[&str] = &[
    "etc/hosts",
    "etc/hostname",
    "etc/resolv.conf",
    "proc",
    "sys",
    "dev",
];

/// `changes` (parents first) without added placeholders, and without the directories
/// that held nothing else.
fn without_placeholders(changes: Vec<(char, String)>) -> Vec<(char, String)> {
    let placeholder = |kind: char, name: &str| kind == 'A' && PLACEHOLDERS.contains(&name);
    let kept: Vec<(char, String)> = changes
        .iter()
        .filter(|(kind, name)| !placeholder(*kind, name))
        .cloned()
        .collect();
    let had_placeholder = |dir: &str| {
        changes
            .iter()
            .any(|(k, n)| placeholder(*k, n) && n.starts_with(&format!("{dir}/")))
    };
    let has_other = |dir: &str| kept.iter().any(|(_, n)| n.starts_with(&format!("{dir}/")));
    kept.iter()
        .filter(|(_, name)| !had_placeholder(name) || has_other(name))
        .cloned()
        .collect()
}

/// What `walk` calls for each change: kind, name, path, `lstat` (`None` for a deletion).
type Visit<'a> = dyn FnMut(char, &str, &Path, Option<&Metadata>) -> Result<(), ArchiveError> + 'a;

/// overlayfs marks a directory that hides everything below it with this xattr.
const OPAQUE_XATTR: &std::ffi::CStr = c"trusted.overlay.opaque";

impl Overlay<'_> {
    /// `Changes`: one line per changed path, parents first. The mount points the agent
    /// itself added (see [`PLACEHOLDERS`]) are left out, and so is a directory changed only
    /// by them.
    pub fn list(&self, out: impl Write) -> Result<(), ArchiveError> {
        let mut changes: Vec<(char, String)> = Vec::new();
        self.walk(self.upper, "", true, &mut |kind, name, _, _| {
            changes.push((kind, name.to_owned()));
            Ok(())
        })?;
        let mut out = io::BufWriter::new(out);
        for (kind, name) in without_placeholders(changes) {
            writeln!(out, "{kind} /{name}").map_err(io_err("write the changes"))?;
        }
        out.flush().map_err(io_err("write the changes"))
    }

    /// `Layer`: the upper directory as a layer tar (without the added placeholders).
    pub fn layer(&self, out: impl Write) -> Result<(), ArchiveError> {
        let mut tar = TarOut::new(out);
        self.walk(self.upper, "", true, &mut |kind, name, path, meta| {
            // The agent's own mount points are no part of the image, as with `list`.
            if kind == 'A' && PLACEHOLDERS.contains(&name) {
                return Ok(());
            }
            let Some(meta) = meta else {
                return tar.marker(&whiteout_name(name, None));
            };
            tar.entry(path, name, meta)?;
            if kind != 'D' && meta.is_dir() && is_opaque(path) {
                tar.marker(&whiteout_name(name, Some(".wh..opq")))?;
            }
            Ok(())
        })?;
        tar.finish()
    }

    /// Calls `visit(kind, name, path, meta)` for each entry below `dir` (named `prefix`),
    /// parents first; `meta` is `None` for a whiteout (a deletion). `lower` says whether the
    /// lower directories can still hold this part of the tree (not below a new or opaque
    /// directory).
    fn walk(
        &self,
        dir: &Path,
        prefix: &str,
        lower: bool,
        visit: &mut Visit<'_>,
    ) -> Result<(), ArchiveError> {
        for (child, meta) in sorted_children(dir)? {
            let path = dir.join(&child);
            let name = match prefix {
                "" => child,
                _ => format!("{prefix}/{child}"),
            };
            if is_whiteout(&meta) {
                visit('D', &name, &path, None)?;
                continue;
            }
            let existed = lower && self.in_lower(&name);
            visit(if existed { 'C' } else { 'A' }, &name, &path, Some(&meta))?;
            if meta.is_dir() {
                let below = existed && !is_opaque(&path);
                self.walk(&path, &name, below, visit)?;
            }
        }
        Ok(())
    }

    /// Whether `name` exists in the lower directories (the topmost one that has it, or a
    /// whiteout of it, decides).
    fn in_lower(&self, name: &str) -> bool {
        for lower in self.lowers {
            if let Ok(meta) = fs::symlink_metadata(lower.join(name)) {
                return !is_whiteout(&meta);
            }
        }
        false
    }
}

fn is_whiteout(meta: &Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

fn is_opaque(path: &Path) -> bool {
    let Ok(cpath) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    let mut value = [0u8; 4];
    // SAFETY: lgetxattr reads two NUL-terminated strings and writes at most `value.len()`
    // bytes into the local buffer.
    let n = unsafe {
        libc::lgetxattr(
            cpath.as_ptr(),
            OPAQUE_XATTR.as_ptr(),
            value.as_mut_ptr().cast(),
            value.len(),
        )
    };
    n == 1 && value[0] == b'y'
}

/// `dir/.wh.<base>` for a whiteout of `name`, or `name/<marker>` for an opaque directory.
fn whiteout_name(name: &str, marker: Option<&str>) -> String {
    match (marker, name.rsplit_once('/')) {
        (Some(marker), _) => format!("{name}/{marker}"),
        (None, Some((dir, base))) => format!("{dir}/.wh.{base}"),
        (None, None) => format!(".wh.{name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_not_changes() {
        let c = |k: char, n: &str| (k, n.to_owned());
        let changes = vec![
            c('C', "etc"),
            c('A', "etc/hosts"),
            c('A', "proc"),
            c('A', "x"),
        ];
        assert_eq!(without_placeholders(changes), vec![c('A', "x")]);
        let changes = vec![c('C', "etc"), c('A', "etc/hosts"), c('C', "etc/passwd")];
        assert_eq!(
            without_placeholders(changes),
            vec![c('C', "etc"), c('C', "etc/passwd")]
        );
        let changes = vec![c('C', "etc"), c('C', "etc/hosts")];
        assert_eq!(without_placeholders(changes.clone()), changes);
    }

    #[test]
    fn whiteout_names() {
        assert_eq!(whiteout_name("a", None), ".wh.a");
        assert_eq!(whiteout_name("etc/passwd", None), "etc/.wh.passwd");
        assert_eq!(whiteout_name("etc", Some(".wh..opq")), "etc/.wh..opq");
    }
}
