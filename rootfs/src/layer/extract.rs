//! The staging tree of one layer: a private temporary directory under `<root>/layers/tmp/`
//! into which the layer's tar is materialised in overlayfs form (whiteouts as 0:0 character
//! devices, opaque directories as `trusted.overlay.opaque=y`), with owners, modes, devices,
//! xattrs and mtimes, and every write confined below the tree.

use std::ffi::CStr;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use super::entry::{EntryError, Kind, Meta};
use super::fsops;
use super::path::{RelPath, Whiteout, whiteout};
use super::stream::{LayerLimits, LayerStream, StreamState};
use crate::digest::Digest;

/// Errors from materialising a layer.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    /// A tar header is unusable.
    #[error(transparent)]
    Entry(#[from] EntryError),
    /// The entry's parent path resolves through a symlink that leaves the image root.
    #[error("entry {0} would be written through a symlink that leaves the image root (or loops)")]
    Escape(RelPath),
    /// A parent of the entry exists and is not a directory.
    #[error("entry {0}: a parent is not a directory")]
    NotDir(RelPath),
    /// A hardlink names itself or a directory.
    #[error("hardlink {0}: target {1} is not a file")]
    LinkToDir(RelPath, RelPath),
    /// A hardlink target is in neither this layer nor a lower one.
    #[error("hardlink {0}: target {1} is not in this layer or any lower layer")]
    LinkMissing(RelPath, RelPath),
    /// The root entry (`./`) is not a directory.
    #[error("entry /: the image root must be a directory")]
    RootNotDir,
    /// A system call on the staging tree failed.
    #[error("entry {0}: cannot {1}")]
    Io(RelPath, &'static str, #[source] io::Error),
    /// The stream ended inside an entry's data.
    #[error("entry {0}: data ends early (truncated layer)")]
    TruncatedEntry(RelPath),
    /// The stream ended without the tar end-of-archive marker, or mid-block.
    #[error("the tar ends without its end-of-archive marker (truncated layer)")]
    Truncated,
    /// The decompression-bomb limits were hit.
    #[error("decompression bomb: {0} bytes from {1} compressed bytes exceed the expansion limits")]
    Bomb(u64, u64),
    /// Reading or decompressing the layer failed.
    #[error("cannot read the layer tar")]
    Read(#[source] io::Error),
    /// Creating the staging directory failed.
    #[error("cannot create a staging directory in {0}")]
    Stage(PathBuf, #[source] io::Error),
}

/// A layer being materialised. Dropping it removes the staging directory.
#[derive(Debug)]
pub struct Stage {
    tmp: tempfile::TempDir,
    root: OwnedFd,
    dir_times: Vec<(RelPath, (i64, u32))>,
    pending: Vec<(RelPath, RelPath)>,
    written: u64,
    limits: LayerLimits,
    state: Option<Rc<StreamState>>,
}

impl Stage {
    /// Creates an empty staging tree (mode 0755) under `tmp_parent`.
    pub fn new(tmp_parent: &Path, limits: LayerLimits) -> Result<Self, ExtractError> {
        let err = |e| ExtractError::Stage(tmp_parent.to_owned(), e);
        std::fs::create_dir_all(tmp_parent).map_err(err)?;
        let tmp = tempfile::Builder::new()
            .prefix(&format!("{}-stage-", std::process::id()))
            .tempdir_in(tmp_parent)
            .map_err(err)?;
        let tree = tmp.path().join("tree");
        std::fs::create_dir(&tree).map_err(err)?;
        let root = std::fs::File::open(&tree).map_err(err)?.into();
        let stage = Self {
            tmp,
            root,
            dir_times: Vec::new(),
            pending: Vec::new(),
            written: 0,
            limits,
            state: None,
        };
        fsops::chown_chmod_at(stage.root(), c".", 0, 0, Some(0o755)).map_err(err)?;
        Ok(stage)
    }

    /// The tree to turn into a disk.
    pub fn tree(&self) -> PathBuf {
        self.tmp.path().join("tree")
    }

    /// A path for a scratch file next to (not inside) the tree.
    pub fn spool_path(&self, n: usize) -> PathBuf {
        self.tmp.path().join(format!("spool-{n}"))
    }

    /// The limits this stage enforces.
    pub fn limits(&self) -> LayerLimits {
        self.limits
    }

    fn root(&self) -> BorrowedFd<'_> {
        self.root.as_fd()
    }

    /// Materialises the whole tar of `stream`; returns the diff_id and uncompressed size.
    pub fn extract(&mut self, stream: LayerStream) -> Result<(Digest, u64), ExtractError> {
        let state = stream.state();
        self.state = Some(Rc::clone(&state));
        let mut archive = tar::Archive::new(stream);
        let entries = archive.entries().map_err(|e| self.read_error(e))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| self.read_error(e))?;
            if let Some((path, meta)) = Meta::from_entry(&mut entry)? {
                self.apply(&path, &meta, &mut entry)?;
            }
        }
        if state.eof() {
            return Err(ExtractError::Truncated);
        }
        archive
            .into_inner()
            .finish()
            .map_err(|e| self.read_error(e))
    }

    /// Classifies a read error: a limit, a truncation or a plain read failure.
    fn read_error(&self, e: io::Error) -> ExtractError {
        if let Some(s) = self.state.as_ref().filter(|s| s.over_limit()) {
            return ExtractError::Bomb(s.uncompressed(), s.compressed());
        }
        if e.kind() == io::ErrorKind::UnexpectedEof {
            return ExtractError::Truncated;
        }
        ExtractError::Read(e)
    }

    /// Hardlinks whose targets were not in this layer: (target, link).
    pub fn take_pending(&mut self) -> Vec<(RelPath, RelPath)> {
        std::mem::take(&mut self.pending)
    }

    /// Whether `path` exists in the tree (without following a final symlink).
    pub fn exists(&self, path: &RelPath) -> Result<bool, ExtractError> {
        match fsops::open_dir_beneath(self.root(), &path.parent().to_cstring()) {
            Ok(dir) => Ok(self.lstat(path, dir.as_fd())?.is_some()),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(self.resolve_error(path, e)),
        }
    }

    /// Creates (or for directories updates) `path` as `meta` says; `data` feeds a file.
    pub fn apply(
        &mut self,
        path: &RelPath,
        meta: &Meta,
        data: &mut dyn Read,
    ) -> Result<(), ExtractError> {
        if path.is_root() {
            return self.apply_root(meta);
        }
        self.pending.retain(|(_, link)| link != path);
        if let Some(wh) = whiteout(path.name()) {
            return self.apply_whiteout(path, wh, meta);
        }
        let parent = self.ensure_dir(&path.parent(), path)?;
        let parent = parent.as_fd();
        let name = name_cstr(path);
        let existing = self.lstat(path, parent)?;
        if meta.kind == Kind::Dir {
            if existing.as_ref().is_some_and(fsops::is_dir) {
                return self.set_meta(path, parent, &name, meta);
            }
        } else if let Kind::Link(target) = &meta.kind {
            return self.hardlink(target, path);
        }
        if let Some(st) = existing {
            fsops::remove_at(parent, &name, &st).map_err(io_err(path, "remove the old entry"))?;
        }
        self.create(path, parent, &name, meta, data)?;
        self.set_meta(path, parent, &name, meta)
    }

    /// Creates the new inode for a non-link entry.
    fn create(
        &mut self,
        path: &RelPath,
        parent: BorrowedFd<'_>,
        name: &CStr,
        meta: &Meta,
        data: &mut dyn Read,
    ) -> Result<(), ExtractError> {
        let made = match &meta.kind {
            Kind::File => return self.write_file(path, parent, name, meta.size, data),
            Kind::Dir => fsops::mkdir_at(parent, name, 0o700),
            Kind::Symlink(target) => fsops::symlink_at(target, parent, name),
            Kind::Char(ma, mi) => fsops::mknod_at(parent, name, libc::S_IFCHR | 0o600, *ma, *mi),
            Kind::Block(ma, mi) => fsops::mknod_at(parent, name, libc::S_IFBLK | 0o600, *ma, *mi),
            Kind::Fifo => fsops::mknod_at(parent, name, libc::S_IFIFO | 0o600, 0, 0),
            Kind::Link(_) => Ok(()),
        };
        made.map_err(io_err(path, "create it"))
    }

    fn write_file(
        &mut self,
        path: &RelPath,
        parent: BorrowedFd<'_>,
        name: &CStr,
        size: u64,
        data: &mut dyn Read,
    ) -> Result<(), ExtractError> {
        if self.written.saturating_add(size) > self.limits.max_uncompressed {
            let compressed = self.state.as_ref().map_or(0, |s| s.compressed());
            return Err(ExtractError::Bomb(
                self.written.saturating_add(size),
                compressed,
            ));
        }
        let mut file = fsops::create_file(parent, name).map_err(io_err(path, "create it"))?;
        let copied =
            io::copy(&mut data.take(size), &mut file).map_err(|e| match self.read_error(e) {
                ExtractError::Read(e) => ExtractError::Io(path.clone(), "write its data", e),
                other => other,
            })?;
        self.written += copied;
        if copied < size {
            return Err(ExtractError::TruncatedEntry(path.clone()));
        }
        Ok(())
    }

    /// Owner, mode, xattrs; mtime now for non-directories, at the end for directories.
    fn set_meta(
        &mut self,
        path: &RelPath,
        parent: BorrowedFd<'_>,
        name: &CStr,
        meta: &Meta,
    ) -> Result<(), ExtractError> {
        let is_link = matches!(meta.kind, Kind::Symlink(_));
        let mode = (!is_link).then_some(meta.mode);
        fsops::chown_chmod_at(parent, name, meta.uid, meta.gid, mode)
            .map_err(io_err(path, "set owner and mode"))?;
        for (key, value) in &meta.xattrs {
            fsops::set_xattr_at(parent, name, key, value).map_err(io_err(path, "set an xattr"))?;
        }
        if meta.kind == Kind::Dir {
            self.dir_times.push((path.clone(), meta.mtime));
            return Ok(());
        }
        let (s, ns) = meta.mtime;
        fsops::set_mtime_at(parent, name, s, ns).map_err(io_err(path, "set its mtime"))
    }

    fn apply_root(&mut self, meta: &Meta) -> Result<(), ExtractError> {
        if meta.kind != Kind::Dir {
            return Err(ExtractError::RootNotDir);
        }
        let root = self
            .root
            .try_clone()
            .map_err(io_err(&RelPath::default(), "open"))?;
        self.set_meta(&RelPath::default(), root.as_fd(), c".", meta)
    }

    fn apply_whiteout(
        &mut self,
        path: &RelPath,
        wh: Whiteout<'_>,
        meta: &Meta,
    ) -> Result<(), ExtractError> {
        let dir = path.parent();
        let parent = self.ensure_dir(&dir, path)?;
        let parent = parent.as_fd();
        match wh {
            Whiteout::Ignore => Ok(()),
            Whiteout::Opaque => fsops::set_xattr_at(parent, c".", c"trusted.overlay.opaque", b"y")
                .map_err(io_err(path, "mark the directory opaque")),
            Whiteout::Remove(hidden) => {
                let target = dir.join(hidden);
                let name = name_cstr(&target);
                if let Some(st) = self.lstat(&target, parent)? {
                    fsops::remove_at(parent, &name, &st).map_err(io_err(path, "remove"))?;
                }
                fsops::mknod_at(parent, &name, libc::S_IFCHR, 0, 0)
                    .map_err(io_err(path, "create the whiteout"))?;
                fsops::chown_chmod_at(parent, &name, meta.uid, meta.gid, None)
                    .map_err(io_err(path, "set the whiteout's owner"))
            }
        }
    }

    /// Links `link` to `target` if the target is in this layer, else remembers it for the
    /// lower layers.
    fn hardlink(&mut self, target: &RelPath, link: &RelPath) -> Result<(), ExtractError> {
        if target == link || target.is_root() {
            return Err(ExtractError::LinkToDir(link.clone(), target.clone()));
        }
        let tdir = match fsops::open_dir_beneath(self.root(), &target.parent().to_cstring()) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                self.pending.push((target.clone(), link.clone()));
                return Ok(());
            }
            Err(e) => return Err(self.resolve_error(target, e)),
        };
        match self.lstat(target, tdir.as_fd())? {
            None => {
                self.pending.push((target.clone(), link.clone()));
                Ok(())
            }
            Some(st) if fsops::is_dir(&st) => {
                Err(ExtractError::LinkToDir(link.clone(), target.clone()))
            }
            Some(_) => {
                let parent = self.ensure_dir(&link.parent(), link)?;
                let name = name_cstr(link);
                if let Some(st) = self.lstat(link, parent.as_fd())? {
                    fsops::remove_at(parent.as_fd(), &name, &st)
                        .map_err(io_err(link, "remove the old entry"))?;
                }
                fsops::link_at(tdir.as_fd(), &name_cstr(target), parent.as_fd(), &name)
                    .map_err(io_err(link, "create the hardlink"))
            }
        }
    }

    /// Opens directory `dir` of the tree, creating missing components (0755, root-owned, as
    /// docker does for parents a layer leaves out). `entry` names the errors.
    fn ensure_dir(&self, dir: &RelPath, entry: &RelPath) -> Result<OwnedFd, ExtractError> {
        match fsops::open_dir_beneath(self.root(), &dir.to_cstring()) {
            Ok(fd) => return Ok(fd),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(self.resolve_error(entry, e)),
        }
        for depth in 1..=dir.depth() {
            let prefix = dir.prefix(depth);
            match fsops::open_dir_beneath(self.root(), &prefix.to_cstring()) {
                Ok(_) => continue,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => return Err(self.resolve_error(entry, e)),
            }
            let parent = fsops::open_dir_beneath(self.root(), &prefix.parent().to_cstring())
                .map_err(|e| self.resolve_error(entry, e))?;
            let name = name_cstr(&prefix);
            match fsops::mkdir_at(parent.as_fd(), &name, 0o755) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                    return Err(ExtractError::NotDir(entry.clone()));
                }
                Err(e) => return Err(ExtractError::Io(entry.clone(), "create a parent", e)),
            }
            fsops::chown_chmod_at(parent.as_fd(), &name, 0, 0, Some(0o755))
                .map_err(io_err(entry, "create a parent"))?;
        }
        fsops::open_dir_beneath(self.root(), &dir.to_cstring())
            .map_err(|e| self.resolve_error(entry, e))
    }

    fn resolve_error(&self, entry: &RelPath, e: io::Error) -> ExtractError {
        match e.raw_os_error() {
            Some(libc::EXDEV | libc::ELOOP) => ExtractError::Escape(entry.clone()),
            Some(libc::ENOTDIR) => ExtractError::NotDir(entry.clone()),
            _ => ExtractError::Io(entry.clone(), "open its directory", e),
        }
    }

    fn lstat(
        &self,
        path: &RelPath,
        dir: BorrowedFd<'_>,
    ) -> Result<Option<libc::stat>, ExtractError> {
        fsops::lstat_at(dir, &name_cstr(path)).map_err(io_err(path, "stat"))
    }

    /// Sets the directory mtimes recorded while extracting, deepest first, once nothing more
    /// will be created in them.
    pub fn finish_times(&mut self) -> Result<(), ExtractError> {
        let mut times = std::mem::take(&mut self.dir_times);
        times.sort_by_key(|(p, _)| std::cmp::Reverse(p.depth()));
        for (path, (s, ns)) in times {
            let (dir, name) = if path.is_root() {
                (fsops::open_dir_beneath(self.root(), c"."), c".".to_owned())
            } else {
                let dir = fsops::open_dir_beneath(self.root(), &path.parent().to_cstring());
                (dir, name_cstr(&path))
            };
            // A directory replaced or removed by a later entry has nothing left to stamp.
            let Ok(dir) = dir else { continue };
            match fsops::lstat_at(dir.as_fd(), &name) {
                Ok(Some(st)) if fsops::is_dir(&st) => {}
                _ => continue,
            }
            fsops::set_mtime_at(dir.as_fd(), &name, s, ns)
                .map_err(io_err(&path, "set its mtime"))?;
        }
        Ok(())
    }
}

/// The last component of a non-root path as a C string.
fn name_cstr(path: &RelPath) -> std::ffi::CString {
    // Components never hold NUL: RelPath::parse rejects it.
    std::ffi::CString::new(path.name()).unwrap_or_default()
}

fn io_err<'a>(path: &'a RelPath, what: &'static str) -> impl Fn(io::Error) -> ExtractError + 'a {
    move |e| ExtractError::Io(path.clone(), what, e)
}
