//! docker's `cp`: out of a container into a local path (or a tar on stdout), and from a
//! local path (or a tar on stdin) into a container. Both directions place the copy by the
//! same rules (`agent_proto::archive::place`). Extracting on the host trusts nothing in the
//! container's archive: every entry must stay under the copy's one root, no entry is
//! written through a symlink (an earlier entry's or one already there), and owners are
//! kept only with `-a`.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use agent_proto::archive::{self, ArchiveOp, DestKind, Placement};

use super::{FilesError, Session};

/// Where `copy_from` writes.
pub enum CopyTarget<'a> {
    /// A local path (docker's placement rules).
    Local(&'a Path),
    /// The tar itself (`-`).
    Stream(&'a mut dyn Write),
}

/// What `copy_to` reads.
pub enum CopySource<'a> {
    /// A local file or directory.
    Local(&'a Path),
    /// A tar extracted as is into an existing directory (`-`).
    Stream(&'a mut dyn Read),
}

impl std::fmt::Debug for CopyTarget<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CopyTarget::Local(p) => write!(f, "Local({})", p.display()),
            CopyTarget::Stream(_) => f.write_str("Stream"),
        }
    }
}

impl std::fmt::Debug for CopySource<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CopySource::Local(p) => write!(f, "Local({})", p.display()),
            CopySource::Stream(_) => f.write_str("Stream"),
        }
    }
}

/// Options of `cp`.
#[derive(Debug, Clone, Copy, Default)]
pub struct CopyOptions {
    /// `-a`: keep the source's owners (otherwise the copier's: root in the container, the
    /// invoking user on the host).
    pub archive: bool,
}

/// A container path as `cp` takes it: absolute (relative ones are under `/`), and whether
/// it ends in `/.` (contents only; `/` itself always copies its contents).
fn container_path(path: &str) -> (String, bool) {
    let absolute = match path.starts_with('/') {
        true => path.to_owned(),
        false => format!("/{path}"),
    };
    match absolute.strip_suffix("/.") {
        Some("") => ("/".into(), true),
        Some(dir) => (dir.to_owned(), true),
        None if absolute.trim_end_matches('/').is_empty() => ("/".into(), true),
        None => (absolute, false),
    }
}

/// Copies `src` out of container `query`; returns the archive's size in bytes.
pub fn copy_from(
    root: &Path,
    query: &str,
    src: &str,
    target: CopyTarget<'_>,
    opts: CopyOptions,
) -> Result<u64, FilesError> {
    let (path, contents_only) = container_path(src);
    let tool_path = match path.len() > 1 {
        true => path.trim_end_matches('/').to_owned(),
        false => path.clone(),
    };
    let session = Session::open(root, query)?;
    let op = ArchiveOp::Get {
        path: tool_path.clone(),
    };
    let size = session.tool_reading(op, &path, |r| {
        let mut counted = Counted { inner: r, bytes: 0 };
        match target {
            CopyTarget::Stream(out) => {
                io::copy(&mut counted, out)
                    .map_err(|e| FilesError::Local("write the archive".into(), e))?;
            }
            CopyTarget::Local(dest) => {
                let root = archive::root_name(&tool_path);
                extract(&mut counted, dest, &root, contents_only, opts.archive)?;
                // Drain the end-of-archive blocks, so the tool is not cut short.
                let _ = io::copy(&mut counted, &mut io::sink());
            }
        }
        Ok(counted.bytes)
    })?;
    session.close();
    Ok(size)
}

/// Copies `src` into container `query` at `dest`; returns the archive's size in bytes.
pub fn copy_to(
    root: &Path,
    query: &str,
    src: CopySource<'_>,
    dest: &str,
    opts: CopyOptions,
) -> Result<u64, FilesError> {
    let (dest, _) = container_path(dest);
    let (local, contents_only) = match src {
        CopySource::Stream(input) => {
            let session = Session::open(root, query)?;
            let op = ArchiveOp::Put {
                dest: dest.clone(),
                copy: None,
                keep_owner: opts.archive,
            };
            let mut counted = Counted {
                inner: input,
                bytes: 0,
            };
            session.tool(op, &dest, Some(&mut counted), Box::new(io::sink()))?;
            session.close();
            return Ok(counted.bytes);
        }
        CopySource::Local(path) => {
            let text = path.to_string_lossy();
            match text.strip_suffix("/.") {
                Some(dir) => (PathBuf::from(if dir.is_empty() { "/" } else { dir }), true),
                None => (path.to_owned(), false),
            }
        }
    };
    let meta = fs::symlink_metadata(&local)
        .map_err(|e| FilesError::Local(format!("lstat {}", local.display()), e))?;
    // The name as given (a symlink is copied as itself, under its own name); `.` and `..`
    // name the directory they stand for.
    let name = local
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .or_else(|| {
            fs::canonicalize(&local)
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        })
        .unwrap_or_else(|| "root".into());
    let source = archive::CopySource {
        is_dir: meta.is_dir(),
        contents_only,
    };
    let session = Session::open(root, query)?;
    let op = ArchiveOp::Put {
        dest: dest.clone(),
        copy: Some(source),
        keep_owner: opts.archive,
    };
    let (mut reader, writer) =
        io::pipe().map_err(|e| FilesError::Local("cannot make a pipe".into(), e))?;
    let (sent, built) = std::thread::scope(|s| {
        let built = s.spawn(|| build(writer, &local, &name, meta.is_dir()));
        let mut counted = Counted {
            inner: &mut reader,
            bytes: 0,
        };
        let sent = session.tool(op, &dest, Some(&mut counted), Box::new(io::sink()));
        let bytes = counted.bytes;
        drop(reader);
        let built = built
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the archive writer panicked")));
        (sent.map(|()| bytes), built)
    });
    session.close();
    built.map_err(|e| FilesError::Local(format!("archive {}", local.display()), e))?;
    sent
}

/// Writes `path` as a tar under the root name `name` (symlinks kept as links).
fn build(out: impl Write, path: &Path, name: &str, is_dir: bool) -> io::Result<()> {
    let mut tar = tar::Builder::new(out);
    tar.follow_symlinks(false);
    match is_dir {
        true => tar.append_dir_all(name, path)?,
        false => tar.append_path_with_name(path, name)?,
    }
    tar.into_inner()?.flush()
}

/// Extracts a copy from a container into `dest` by docker's placement rules. Every entry
/// must sit under `root` (the name asked for: the container does not get to choose what is
/// written); modes lose setuid/setgid unless `keep_owner` (`-a`).
fn extract(
    input: &mut dyn Read,
    dest: &Path,
    root: &str,
    contents_only: bool,
    keep_owner: bool,
) -> Result<(), FilesError> {
    let bad = |e: io::Error| FilesError::BadArchive(e.to_string());
    let mut tar = tar::Archive::new(input);
    tar.set_preserve_permissions(keep_owner);
    tar.set_preserve_ownerships(keep_owner);
    tar.set_preserve_mtime(true);
    tar.set_overwrite(true);
    tar.set_unpack_xattrs(false);
    let mut entries = tar.entries().map_err(bad)?;
    let mut placed: Option<(Placement, PathBuf, PathBuf)> = None;
    let mut root = Some(root.to_owned());
    for entry in entries.by_ref() {
        let mut entry = entry.map_err(bad)?;
        let (placement, dir, base) = match &placed {
            Some(p) => p,
            None => {
                let source = archive::CopySource {
                    is_dir: entry.header().entry_type().is_dir(),
                    contents_only,
                };
                let placement = archive::place(&dest.to_string_lossy(), source, local_kind)?;
                let (Placement::Into(d) | Placement::Contents(d) | Placement::As(d, _)) =
                    &placement;
                let base = fs::canonicalize(d)
                    .map_err(|e| FilesError::Local(d.display().to_string(), e))?;
                let dir = d.clone();
                placed.insert((placement, dir, base))
            }
        };
        let name = entry.path().map_err(bad)?.into_owned();
        let Some(target) = archive::rebase(&name, &mut root, placement)? else {
            continue;
        };
        let target = writable(base, dir, &target)?;
        if entry.header().entry_type().is_hard_link() {
            let link = entry.link_name().map_err(bad)?.map(|l| l.into_owned());
            let from = link
                .map(|l| archive::rebase(&l, &mut root, placement))
                .transpose()?
                .flatten()
                .ok_or_else(|| FilesError::BadArchive(format!("bad link {}", name.display())))?;
            let from = writable(base, dir, &from)?;
            fs::hard_link(&from, &target)
                .map_err(|e| FilesError::Local(format!("link {}", target.display()), e))?;
            continue;
        }
        entry
            .unpack(&target)
            .map_err(|e| FilesError::Local(format!("create {}", target.display()), e))?;
    }
    if placed.is_none() {
        return Err(FilesError::BadArchive("it is empty".into()));
    }
    Ok(())
}

fn local_kind(path: &Path) -> DestKind {
    match fs::metadata(path) {
        Ok(m) if m.is_dir() => DestKind::Dir,
        Ok(_) => DestKind::Other,
        Err(_) => DestKind::Missing,
    }
}

/// Makes `target` (under `dir`, whose canonical form is `base`) safe to create: every directory
/// between them exists and none is a symlink, and a symlink already at `target` is removed
/// (an entry replaces it rather than writing through it).
fn writable(base: &Path, dir: &Path, target: &Path) -> Result<PathBuf, FilesError> {
    let rel = target
        .strip_prefix(dir)
        .map_err(|_| FilesError::BadArchive(format!("{} is outside", target.display())))?;
    let mut dir = base.to_owned();
    let parts: Vec<_> = rel.components().collect();
    let Some((last, parents)) = parts.split_last() else {
        return Ok(base.to_owned());
    };
    for part in parents {
        dir.push(part);
        match fs::symlink_metadata(&dir) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(FilesError::BadArchive(format!(
                    "{} would be written through the symlink {}",
                    target.display(),
                    dir.display()
                )));
            }
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(FilesError::BadArchive(format!(
                    "{} is not a directory",
                    dir.display()
                )));
            }
            Err(_) => fs::create_dir(&dir)
                .map_err(|e| FilesError::Local(format!("create {}", dir.display()), e))?,
        }
    }
    let path = dir.join(last);
    if fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
        fs::remove_file(&path)
            .map_err(|e| FilesError::Local(format!("replace {}", path.display()), e))?;
    }
    Ok(path)
}

/// Counts what passes through.
struct Counted<R> {
    inner: R,
    bytes: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_paths() {
        assert_eq!(container_path("/etc/."), ("/etc".into(), true));
        assert_eq!(container_path("/."), ("/".into(), true));
        assert_eq!(container_path("etc/passwd"), ("/etc/passwd".into(), false));
        assert_eq!(container_path("/"), ("/".into(), true));
    }

    fn tar_of(entries: &[(&str, tar::EntryType, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(0o755);
            if *kind == tar::EntryType::Symlink {
                h.set_size(0);
                b.append_link(&mut h, name, data).unwrap();
            } else {
                h.set_size(data.len() as u64);
                b.append_data(&mut h, name, data.as_bytes()).unwrap();
            }
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn a_hostile_archive_cannot_write_through_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let tar = tar_of(&[
            ("d", tar::EntryType::Directory, ""),
            (
                "d/link",
                tar::EntryType::Symlink,
                outside.path().to_str().unwrap(),
            ),
            ("d/link/evil", tar::EntryType::Regular, "x"),
        ]);
        let err = extract(&mut tar.as_slice(), dir.path(), "d", false, false).unwrap_err();
        assert!(err.to_string().contains("symlink"), "{err}");
        assert!(!outside.path().join("evil").exists());
        let tar = tar_of(&[
            ("d", tar::EntryType::Directory, ""),
            ("e/x", tar::EntryType::Regular, "x"),
        ]);
        assert!(extract(&mut tar.as_slice(), dir.path(), "d", false, false).is_err());
        // The container does not choose the name: a root other than the one asked for.
        let tar = tar_of(&[(".ssh", tar::EntryType::Directory, "")]);
        assert!(extract(&mut tar.as_slice(), dir.path(), "app.log", false, false).is_err());
        assert!(!dir.path().join(".ssh").exists());
    }

    #[test]
    fn copies_land_where_docker_puts_them() {
        let dir = tempfile::tempdir().unwrap();
        let tar = tar_of(&[
            ("d", tar::EntryType::Directory, ""),
            ("d/f", tar::EntryType::Regular, "hello"),
        ]);
        extract(&mut tar.as_slice(), dir.path(), "d", false, false).unwrap();
        assert_eq!(fs::read_to_string(dir.path().join("d/f")).unwrap(), "hello");
        extract(
            &mut tar.as_slice(),
            &dir.path().join("new"),
            "d",
            false,
            false,
        )
        .unwrap();
        assert_eq!(
            fs::read_to_string(dir.path().join("new/f")).unwrap(),
            "hello"
        );
        let file = tar_of(&[("f", tar::EntryType::Regular, "bye")]);
        extract(
            &mut file.as_slice(),
            &dir.path().join("d/f"),
            "f",
            false,
            false,
        )
        .unwrap();
        assert_eq!(fs::read_to_string(dir.path().join("d/f")).unwrap(), "bye");
        assert!(
            extract(
                &mut tar.as_slice(),
                &dir.path().join("d/f"),
                "d",
                false,
                false
            )
            .is_err()
        );
    }
}
