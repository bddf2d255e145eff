//! Writing a directory tree as a tar stream: `get` (one path, under its own name), `export`
//! (the whole root without what is mounted on it) and the entry writer `changes` uses for
//! layers. Symlinks are stored, never followed; hard links become link entries; sockets
//! are skipped (docker's archives have none); a file that changes size while it is read is
//! cut or zero-padded to the size in its header, so the stream stays a valid tar.

use std::collections::HashMap;
use std::fs::{self, Metadata};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use tar::{EntryType, Header, HeaderMode};

use super::{ArchiveError, io_err};

/// A tar stream being written.
pub struct TarOut<W: Write> {
    builder: tar::Builder<W>,
    /// `(dev, ino)` of files with several links, by the name first written.
    links: HashMap<(u64, u64), String>,
}

impl<W: Write> TarOut<W> {
    pub fn new(out: W) -> Self {
        Self {
            builder: tar::Builder::new(out),
            links: HashMap::new(),
        }
    }

    /// Ends the archive and flushes it.
    pub fn finish(self) -> Result<(), ArchiveError> {
        let mut out = self
            .builder
            .into_inner()
            .map_err(io_err("finish the archive"))?;
        out.flush().map_err(io_err("write the archive"))
    }

    /// Writes `path` (described by `meta`, from `lstat`) as the entry `name`.
    pub fn entry(&mut self, path: &Path, name: &str, meta: &Metadata) -> Result<(), ArchiveError> {
        let failed = io_err(format!("archive {name}"));
        let ft = meta.file_type();
        if ft.is_socket() {
            return Ok(());
        }
        let mut h = Header::new_gnu();
        h.set_metadata_in_mode(meta, HeaderMode::Complete);
        if ft.is_dir() {
            let name = format!("{}/", name.trim_end_matches('/'));
            return self
                .builder
                .append_data(&mut h, name, io::empty())
                .map_err(failed);
        }
        if ft.is_symlink() {
            let target = fs::read_link(path).map_err(io_err(format!("read link {name}")))?;
            return self
                .builder
                .append_link(&mut h, name, target)
                .map_err(failed);
        }
        if ft.is_char_device() || ft.is_block_device() {
            let rdev = meta.rdev();
            let _ = h.set_device_major(libc::major(rdev));
            let _ = h.set_device_minor(libc::minor(rdev));
        }
        if meta.nlink() > 1 {
            let key = (meta.dev(), meta.ino());
            if let Some(first) = self.links.get(&key) {
                h.set_entry_type(EntryType::Link);
                h.set_size(0);
                let first = first.clone();
                return self
                    .builder
                    .append_link(&mut h, name, first)
                    .map_err(failed);
            }
            self.links.insert(key, name.to_owned());
        }
        if !ft.is_file() {
            return self
                .builder
                .append_data(&mut h, name, io::empty())
                .map_err(failed);
        }
        let size = meta.len();
        // Never through a symlink put there since the lstat; a file gone meanwhile is left out.
        let file = match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)
        {
            Ok(f) => f,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ELOOP)) => {
                return Ok(());
            }
            Err(e) => return Err(io_err(format!("open {name}"))(e)),
        };
        let data = file.take(size).chain(io::repeat(0)).take(size);
        self.builder.append_data(&mut h, name, data).map_err(failed)
    }

    /// Writes an empty regular file `name` owned by root (a layer's whiteout marker).
    pub fn marker(&mut self, name: &str) -> Result<(), ArchiveError> {
        let mut h = Header::new_gnu();
        h.set_entry_type(EntryType::Regular);
        h.set_size(0);
        h.set_mode(0o600);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        self.builder
            .append_data(&mut h, name, io::empty())
            .map_err(io_err(format!("archive {name}")))
    }

    /// Writes `path` as `name` and, if it is a directory, everything below it (siblings in
    /// name order); `name` empty leaves the top directory itself out.
    pub fn tree(&mut self, path: &Path, name: &str, meta: &Metadata) -> Result<(), ArchiveError> {
        if !name.is_empty() {
            self.entry(path, name, meta)?;
        }
        if !meta.is_dir() {
            return Ok(());
        }
        for (child, child_meta) in sorted_children(path)? {
            let child_name = match name {
                "" => child.clone(),
                _ => format!("{}/{child}", name.trim_end_matches('/')),
            };
            self.tree(&path.join(&child), &child_name, &child_meta)?;
        }
        Ok(())
    }
}

/// A directory's entries (name, `lstat`) in name order; entries gone meanwhile are left out.
pub fn sorted_children(dir: &Path) -> Result<Vec<(String, Metadata)>, ArchiveError> {
    let mut out = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        // Gone, or no longer a directory, since it was listed.
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => {
            return Ok(out);
        }
        Err(e) => return Err(io_err(format!("read {}", dir.display()))(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io_err(format!("read {}", dir.display())))?;
        let Ok(meta) = fs::symlink_metadata(entry.path()) else {
            continue;
        };
        out.push((entry.file_name().to_string_lossy().into_owned(), meta));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// `Get`: `path` under the name of its last component.
pub fn get(path: &str, out: impl Write) -> Result<(), ArchiveError> {
    if !path.starts_with('/') {
        return Err(ArchiveError::Invalid(format!("{path:?} is not absolute")));
    }
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => {
            return Err(ArchiveError::NotFound(path.to_owned()));
        }
        Err(e) => return Err(io_err(format!("stat {path}"))(e)),
    };
    let name = agent_proto::archive::root_name(path);
    let mut tar = TarOut::new(out);
    if path == "/" {
        // The root alone, as `export` reads it (nothing mounted on it).
        let root = clone_root().map_err(io_err("take a copy of the root mount"))?;
        let base = std::path::PathBuf::from(format!("/proc/self/fd/{}", root.as_raw_fd()));
        let meta = fs::metadata(&base).map_err(io_err("stat the root"))?;
        tar.tree(&base, &name, &meta)?;
    } else {
        tar.tree(Path::new(path), &name, &meta)?;
    }
    tar.finish()
}

/// `Export`: the root filesystem alone, through a detached copy of its mount that has
/// nothing mounted on it (no `/proc`, `/dev` or `/etc/hosts` contents).
pub fn export(out: impl Write) -> Result<(), ArchiveError> {
    let root = clone_root().map_err(io_err("take a copy of the root mount"))?;
    let path = std::path::PathBuf::from(format!("/proc/self/fd/{}", root.as_raw_fd()));
    let meta = fs::metadata(&path).map_err(io_err("stat the root"))?;
    let mut tar = TarOut::new(out);
    tar.tree(&path, "", &meta)?;
    tar.finish()
}

/// `open_tree(/, OPEN_TREE_CLONE)`: the root mount alone, detached.
fn clone_root() -> io::Result<OwnedFd> {
    const OPEN_TREE_CLONE: libc::c_uint = 1;
    // SAFETY: open_tree reads a NUL-terminated path that outlives the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            c"/".as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(|_| io::Error::other("descriptor out of range"))?;
    // SAFETY: open_tree just returned this descriptor and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
