//! The agent's archive tool (`husk-archive`): what the host may ask of a container's files
//! (docker's `cp`, `export`, `diff`, `commit`) and the tool's output conventions. The tool is
//! the agent binary run as a process of the container ([`ProcessSpec::tool`]), so its
//! output travels as that process's stdout, its errors as stderr, and its verdict as its
//! exit code; a crash or a hostile container can spoil one answer, never the agent.
//!
//! [`ProcessSpec::tool`]: crate::ProcessSpec::tool

use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Exit code: the operation succeeded.
pub const EXIT_OK: i32 = 0;
/// Exit code: the operation failed (stderr says why).
pub const EXIT_FAILED: i32 = 1;
/// Exit code: the path named by the operation does not exist (stderr names it).
pub const EXIT_NOT_FOUND: i32 = 2;
/// Exit code: the destination is a file where a directory was needed, or the other way.
pub const EXIT_NOT_DIR: i32 = 3;

/// One operation of the archive tool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArchiveOp {
    /// A tar of `path` (not following a final symlink) on stdout, its entries under one root
    /// named [`root_name`]`(path)`; uid, gid, mode and mtime kept. `/` is read without
    /// anything mounted on it, as `Export` reads it.
    Get {
        /// Absolute path in the container.
        path: String,
    },
    /// A tar of the container's root filesystem without anything mounted on it (docker's
    /// `export`), entries named relative to `/`.
    Export,
    /// Extracts the tar on stdin into the container at `dest` (docker's `cp` to a container).
    Put {
        /// Absolute path in the container.
        dest: String,
        /// `None`: a tar as the user gave it (`cp - CONTAINER:DIR`), extracted as is into
        /// the existing directory `dest`. `Some`: a copy made by the host, whose entries sit
        /// under one root entry; the tool places that root as docker's `cp` rules say.
        copy: Option<CopySource>,
        /// Keep the archive's owners (`cp -a`); otherwise everything is root's, as docker.
        keep_owner: bool,
    },
    /// The container's changes to its image as lines `A /path`, `C /path`, `D /path`
    /// (docker's `diff`), parents before children.
    Changes,
    /// The container's changes as an OCI layer tar (whiteouts as `.wh.` entries), for
    /// docker's `commit`.
    Layer,
}

/// What the host copies into a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopySource {
    /// The source is a directory.
    pub is_dir: bool,
    /// The source path ended in `/.`: its contents go into the destination directory.
    pub contents_only: bool,
}

impl ArchiveOp {
    /// The tool's argument for this operation.
    pub fn to_arg(&self) -> String {
        // Serializing plain strings and booleans cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses the tool's argument.
    pub fn from_arg(arg: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(arg)
    }
}

/// The root entry's name of `Get`'s archive of `path`: its last component (`rootfs` for
/// `/`, whose copy is always its contents).
pub fn root_name(path: &str) -> String {
    Path::new(path)
        .file_name()
        .map_or_else(|| "rootfs".to_owned(), |n| n.to_string_lossy().into_owned())
}

/// What is at a copy's destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DestKind {
    /// A directory (symlinks followed).
    Dir,
    /// Something else.
    Other,
    /// Nothing.
    Missing,
}

/// Where a copy's root entry goes (both directions of docker's `cp` follow the same rules).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// Into this directory, under its own name.
    Into(PathBuf),
    /// Its contents into this directory.
    Contents(PathBuf),
    /// Into this directory, under this name.
    As(PathBuf, String),
}

/// Why a copy cannot go where it was asked to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CopyError {
    /// The destination (or its parent) does not exist.
    #[error("{0} does not exist")]
    NotFound(String),
    /// A directory onto a file, or a parent that is a file.
    #[error("{0}")]
    NotDir(String),
    /// An archive entry that is not under the copy's single root, or leaves it.
    #[error("{0}")]
    BadEntry(String),
}

/// docker's `cp` rules: a directory destination receives the source under its own name (or
/// its contents, for `SRC/.`); an existing file is replaced by a file; a missing destination
/// names the copy, in a parent that must exist. `kind` tells what is at a path.
pub fn place(
    dest: &str,
    src: CopySource,
    kind: impl Fn(&Path) -> DestKind,
) -> Result<Placement, CopyError> {
    let path = PathBuf::from(dest);
    match kind(&path) {
        DestKind::Dir if src.contents_only => Ok(Placement::Contents(path)),
        DestKind::Dir => Ok(Placement::Into(path)),
        DestKind::Other if src.is_dir => Err(CopyError::NotDir(format!(
            "cannot overwrite non-directory {dest} with directory"
        ))),
        DestKind::Missing if dest.ends_with('/') => Err(CopyError::NotFound(dest.to_owned())),
        _ => {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .ok_or_else(|| CopyError::NotFound(dest.to_owned()))?;
            let parent = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
                _ => PathBuf::from("."),
            };
            match kind(&parent) {
                DestKind::Dir => Ok(Placement::As(parent, name)),
                DestKind::Other => Err(CopyError::NotDir(format!(
                    "{} is not a directory",
                    parent.display()
                ))),
                DestKind::Missing => Err(CopyError::NotFound(parent.display().to_string())),
            }
        }
    }
}

/// Where the archive entry `name` goes under `placement`: `None` for the root entry of a
/// contents-only copy. Every entry must sit under the first entry's root (`root` remembers
/// it) and use plain names only (no `..`, no absolute paths).
pub fn rebase(
    name: &Path,
    root: &mut Option<String>,
    placement: &Placement,
) -> Result<Option<PathBuf>, CopyError> {
    let mut parts = Vec::new();
    for c in name.components() {
        match c {
            Component::Normal(p) => parts.push(p.to_string_lossy().into_owned()),
            Component::CurDir => {}
            _ => {
                return Err(CopyError::BadEntry(format!(
                    "archive entry {} leaves its directory",
                    name.display()
                )));
            }
        }
    }
    let Some((first, rest)) = parts.split_first() else {
        return Err(CopyError::BadEntry(
            "archive entry with an empty name".into(),
        ));
    };
    match root {
        Some(r) if r != first => {
            return Err(CopyError::BadEntry(format!(
                "archive entry {} is outside the copy's root {r}",
                name.display()
            )));
        }
        Some(_) => {}
        None => *root = Some(first.clone()),
    }
    let base = match placement {
        Placement::Into(dir) => dir.join(first),
        Placement::Contents(_) if rest.is_empty() => return Ok(None),
        Placement::Contents(dir) => dir.clone(),
        Placement::As(dir, n) => dir.join(n),
    };
    Ok(Some(rest.iter().fold(base, |p, c| p.join(c))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(is_dir: bool, contents_only: bool) -> CopySource {
        CopySource {
            is_dir,
            contents_only,
        }
    }

    #[test]
    fn placement_follows_docker_cp() {
        let fs = |p: &Path| match p.to_str().unwrap() {
            "/d" | "/" => DestKind::Dir,
            "/f" => DestKind::Other,
            _ => DestKind::Missing,
        };
        assert_eq!(
            place("/d", src(true, false), fs),
            Ok(Placement::Into("/d".into()))
        );
        assert_eq!(
            place("/d", src(true, true), fs),
            Ok(Placement::Contents("/d".into()))
        );
        assert_eq!(
            place("/f", src(false, false), fs),
            Ok(Placement::As("/".into(), "f".into()))
        );
        assert!(matches!(
            place("/f", src(true, false), fs),
            Err(CopyError::NotDir(_))
        ));
        assert_eq!(
            place("/new", src(true, true), fs),
            Ok(Placement::As("/".into(), "new".into()))
        );
        assert!(matches!(
            place("/new/", src(false, false), fs),
            Err(CopyError::NotFound(_))
        ));
        assert_eq!(
            place("/nosuch/x", src(false, false), fs),
            Err(CopyError::NotFound("/nosuch".into()))
        );
        assert!(matches!(
            place("/f/x", src(false, false), fs),
            Err(CopyError::NotDir(_))
        ));
    }

    #[test]
    fn rebasing_follows_the_placement() {
        let into = Placement::Into("/tmp".into());
        let mut root = None;
        assert_eq!(
            rebase(Path::new("d/a/b"), &mut root, &into).unwrap(),
            Some(PathBuf::from("/tmp/d/a/b"))
        );
        assert!(rebase(Path::new("other/x"), &mut root, &into).is_err());
        let contents = Placement::Contents("/srv".into());
        let mut root = None;
        assert_eq!(rebase(Path::new("d/"), &mut root, &contents).unwrap(), None);
        assert_eq!(
            rebase(Path::new("d/x"), &mut root, &contents).unwrap(),
            Some(PathBuf::from("/srv/x"))
        );
        let renamed = Placement::As("/srv".into(), "new".into());
        let mut root = None;
        assert_eq!(
            rebase(Path::new("./f"), &mut root, &renamed).unwrap(),
            Some(PathBuf::from("/srv/new"))
        );
        for bad in ["../x", "/abs", "d/../../x", ""] {
            let mut root = None;
            assert!(
                rebase(Path::new(bad), &mut root, &renamed).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn ops_round_trip_through_the_argument() {
        for op in [
            ArchiveOp::Get {
                path: "/etc".into(),
            },
            ArchiveOp::Export,
            ArchiveOp::Put {
                dest: "/tmp".into(),
                copy: Some(CopySource {
                    is_dir: true,
                    contents_only: false,
                }),
                keep_owner: false,
            },
            ArchiveOp::Changes,
            ArchiveOp::Layer,
        ] {
            assert_eq!(ArchiveOp::from_arg(&op.to_arg()).unwrap(), op);
        }
        assert!(ArchiveOp::from_arg("{\"get\":{}}").is_err());
    }
}
