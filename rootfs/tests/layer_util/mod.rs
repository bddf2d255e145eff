//! Shared helpers of the layer-disk tests: tar fixtures, loop devices and mounts cleaned up
//! in Drop, a tree snapshot for comparisons, and the reference extractor (a plain sequential
//! untar with whiteout handling).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest as _, Sha256};

/// Builds a layer tar entry by entry.
pub struct Tb {
    b: tar::Builder<Vec<u8>>,
    mtime: u64,
}

pub const MTIME: u64 = 1_600_000_000;

impl Tb {
    pub fn new() -> Self {
        let mut b = tar::Builder::new(Vec::new());
        b.mode(tar::HeaderMode::Complete);
        Self { b, mtime: MTIME }
    }

    /// Entries added from now on carry this mtime.
    pub fn at(mut self, mtime: u64) -> Self {
        self.mtime = mtime;
        self
    }

    fn header(&self, ty: tar::EntryType, mode: u32, owner: (u64, u64), size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(ty);
        h.set_mode(mode);
        h.set_uid(owner.0);
        h.set_gid(owner.1);
        h.set_mtime(self.mtime);
        h.set_size(size);
        h
    }

    pub fn dir(self, path: &str) -> Self {
        self.dir_as(path, 0o755, (0, 0))
    }

    pub fn dir_as(mut self, path: &str, mode: u32, owner: (u64, u64)) -> Self {
        let mut h = self.header(tar::EntryType::Directory, mode, owner, 0);
        self.b.append_data(&mut h, path, io::empty()).unwrap();
        self
    }

    pub fn file(self, path: &str, data: &[u8]) -> Self {
        self.file_as(path, data, 0o644, (0, 0))
    }

    pub fn file_as(mut self, path: &str, data: &[u8], mode: u32, owner: (u64, u64)) -> Self {
        let mut h = self.header(tar::EntryType::Regular, mode, owner, data.len() as u64);
        self.b.append_data(&mut h, path, data).unwrap();
        self
    }

    pub fn file_xattr(mut self, path: &str, data: &[u8], xattrs: &[(&str, &[u8])]) -> Self {
        let keys: Vec<(String, &[u8])> = xattrs
            .iter()
            .map(|(k, v)| (format!("SCHILY.xattr.{k}"), *v))
            .collect();
        self.b
            .append_pax_extensions(keys.iter().map(|(k, v)| (k.as_str(), *v)))
            .unwrap();
        self.file(path, data)
    }

    pub fn symlink(mut self, path: &str, target: &str) -> Self {
        let mut h = self.header(tar::EntryType::Symlink, 0o777, (0, 0), 0);
        self.b.append_link(&mut h, path, target).unwrap();
        self
    }

    pub fn hardlink(mut self, path: &str, target: &str) -> Self {
        let mut h = self.header(tar::EntryType::Link, 0o644, (0, 0), 0);
        self.b.append_link(&mut h, path, target).unwrap();
        self
    }

    pub fn node(mut self, path: &str, ty: tar::EntryType, major: u32, minor: u32) -> Self {
        let mut h = self.header(ty, 0o666, (0, 0), 0);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        self.b.append_data(&mut h, path, io::empty()).unwrap();
        self
    }

    /// Raw header with an arbitrary name (bypasses the tar crate's path checks).
    pub fn raw(mut self, name: &[u8], ty: tar::EntryType, link: &[u8], data: &[u8]) -> Self {
        let mut h = self.header(ty, 0o644, (0, 0), data.len() as u64);
        let gnu = h.as_gnu_mut().unwrap();
        gnu.name[..name.len()].copy_from_slice(name);
        gnu.linkname[..link.len()].copy_from_slice(link);
        h.set_cksum();
        self.b.append(&h, data).unwrap();
        self
    }

    pub fn finish(self) -> Vec<u8> {
        self.b.into_inner().unwrap()
    }
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).unwrap()
}

pub fn sha256(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Writes `bytes` as a blob file named by its digest; returns the path.
pub fn write_blob(dir: &Path, bytes: &[u8]) -> PathBuf {
    let d = dir.join("blobs").join("sha256");
    fs::create_dir_all(&d).unwrap();
    let p = d.join(sha256(bytes));
    fs::write(&p, bytes).unwrap();
    p
}

/// A read-only loop device, detached on drop.
pub struct Loop(pub String);

impl Loop {
    pub fn attach(file: &Path) -> Self {
        let out = Command::new("losetup")
            .args(["-f", "--show", "-r"])
            .arg(file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "losetup: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self(String::from_utf8(out.stdout).unwrap().trim().to_owned())
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}

/// A mount point, unmounted on drop.
pub struct Mount(pub PathBuf);

impl Mount {
    pub fn new(fstype: &str, source: &str, target: &Path, opts: &str) -> Self {
        fs::create_dir_all(target).unwrap();
        let out = Command::new("mount")
            .args(["-t", fstype, "-o", opts, source])
            .arg(target)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mount {fstype}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self(target.to_owned())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Mounts layer disks (bottom first) read-only and stacks them with overlayfs. Field order
/// makes the overlay go first on drop.
pub struct Merged {
    pub overlay: Mount,
    pub lowers: Vec<Mount>,
    pub loops: Vec<Loop>,
}

pub fn mount_merged(disks: &[PathBuf], work: &Path) -> Merged {
    let mut loops = Vec::new();
    let mut lowers = Vec::new();
    for (i, d) in disks.iter().enumerate() {
        let l = Loop::attach(d);
        lowers.push(Mount::new("erofs", &l.0, &work.join(format!("l{i}")), "ro"));
        loops.push(l);
    }
    let lowerdir: Vec<String> = lowers
        .iter()
        .rev()
        .map(|m| m.0.display().to_string())
        .collect();
    let opts = format!("ro,lowerdir={}", lowerdir.join(":"));
    let overlay = Mount::new("overlay", "overlay", &work.join("merged"), &opts);
    Merged {
        overlay,
        lowers,
        loops,
    }
}

/// What the comparison looks at for one path.
#[derive(Debug, PartialEq, Eq)]
pub struct Node {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: Option<u64>,
    pub content: Option<String>,
    pub link: Option<PathBuf>,
    pub rdev: u64,
    pub mtime: (i64, i64),
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// The other paths sharing this file's inode.
    pub links: Vec<String>,
}

fn kind(md: &fs::Metadata) -> &'static str {
    let ft = md.file_type();
    use std::os::unix::fs::FileTypeExt;
    if ft.is_dir() {
        "dir"
    } else if ft.is_symlink() {
        "symlink"
    } else if ft.is_char_device() {
        "char"
    } else if ft.is_block_device() {
        "block"
    } else if ft.is_fifo() {
        "fifo"
    } else {
        "file"
    }
}

pub fn xattrs(p: &Path) -> BTreeMap<String, Vec<u8>> {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    let mut buf = vec![0u8; 65536];
    // SAFETY: test code; buffer valid for its length.
    let n = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert!(n >= 0, "llistxattr {}", p.display());
    let mut out = BTreeMap::new();
    for name in buf[..n as usize]
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
    {
        let key = String::from_utf8_lossy(name).into_owned();
        if key.starts_with("trusted.overlay.") {
            continue;
        }
        let k = CString::new(name).unwrap();
        let mut v = vec![0u8; 65536];
        // SAFETY: test code; buffer valid for its length.
        let m = unsafe { libc::lgetxattr(c.as_ptr(), k.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
        assert!(m >= 0);
        v.truncate(m as usize);
        out.insert(key, v);
    }
    out
}

/// Every path below `root` (root itself as "/") with what the comparison checks.
pub fn snapshot(root: &Path) -> BTreeMap<String, Node> {
    let mut paths = Vec::new();
    walk(root, root, &mut paths);
    let mut by_inode: BTreeMap<(u64, u64), Vec<String>> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for (rel, p) in paths {
        let md = fs::symlink_metadata(&p).unwrap();
        let k = kind(&md);
        if k != "dir" {
            by_inode
                .entry((md.dev(), md.ino()))
                .or_default()
                .push(rel.clone());
        }
        let content = (k == "file").then(|| sha256(&fs::read(&p).unwrap()));
        let node = Node {
            kind: k,
            mode: md.mode() & 0o7777,
            uid: md.uid(),
            gid: md.gid(),
            size: (k == "file" || k == "symlink").then(|| md.size()),
            content,
            link: (k == "symlink").then(|| fs::read_link(&p).unwrap()),
            rdev: md.rdev(),
            mtime: (md.mtime(), md.mtime_nsec()),
            xattrs: xattrs(&p),
            links: Vec::new(),
        };
        out.insert(rel, node);
    }
    for group in by_inode.values().filter(|g| g.len() > 1) {
        for p in group {
            let others = group.iter().filter(|o| *o != p).cloned().collect();
            out.get_mut(p).unwrap().links = others;
        }
    }
    out
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) {
    let rel = format!("/{}", dir.strip_prefix(root).unwrap().display());
    out.push((rel, dir.to_owned()));
    let mut entries: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if fs::symlink_metadata(&p).unwrap().is_dir() {
            walk(root, &p, out);
        } else {
            let rel = format!("/{}", p.strip_prefix(root).unwrap().display());
            out.push((rel, p));
        }
    }
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn remove(p: &Path) {
    match fs::symlink_metadata(p) {
        Ok(md) if md.is_dir() => fs::remove_dir_all(p).unwrap(),
        Ok(_) => fs::remove_file(p).unwrap(),
        Err(_) => {}
    }
}

fn set_mtime(p: &Path, secs: i64) {
    let ts = libc::timespec {
        tv_sec: secs,
        tv_nsec: 0,
    };
    // SAFETY: test code; valid path and two timespecs.
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            cpath(p).as_ptr(),
            [ts, ts].as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(r, 0, "utimensat {}", p.display());
}

/// The reference: untars `layers` (uncompressed tars, bottom first) one after the other
/// into `dest`, a whiteout deleting what it names and an opaque marker emptying its
/// directory. Directory mtimes are set at the end of each layer.
pub fn reference_untar(layers: &[Vec<u8>], dest: &Path) {
    fs::create_dir_all(dest).unwrap();
    for layer in layers {
        let mut dir_times = Vec::new();
        let mut a = tar::Archive::new(&layer[..]);
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let name = e.path().unwrap().into_owned();
            let p = dest.join(&name);
            let base = name
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if base == ".wh..wh..opq" {
                for c in fs::read_dir(p.parent().unwrap()).unwrap() {
                    remove(&c.unwrap().path());
                }
                continue;
            }
            if let Some(gone) = base.strip_prefix(".wh.") {
                remove(&p.parent().unwrap().join(gone));
                continue;
            }
            let h = e.header().clone();
            let ty = h.entry_type();
            let existing = fs::symlink_metadata(&p).ok();
            let is_root = name.components().all(|c| c == std::path::Component::CurDir);
            let merge_dir = ty.is_dir() && existing.as_ref().is_some_and(|m| m.is_dir());
            if !is_root && !merge_dir {
                remove(&p);
            }
            let mode = h.mode().unwrap() & 0o7777;
            match ty {
                tar::EntryType::Directory => {
                    fs::create_dir_all(&p).unwrap();
                }
                tar::EntryType::Regular => {
                    let mut data = Vec::new();
                    e.read_to_end(&mut data).unwrap();
                    fs::write(&p, data).unwrap();
                }
                tar::EntryType::Symlink => {
                    std::os::unix::fs::symlink(e.link_name().unwrap().unwrap(), &p).unwrap();
                }
                tar::EntryType::Link => {
                    fs::hard_link(dest.join(e.link_name().unwrap().unwrap()), &p).unwrap();
                    continue;
                }
                tar::EntryType::Char | tar::EntryType::Fifo => {
                    let t = if ty == tar::EntryType::Char {
                        libc::S_IFCHR
                    } else {
                        libc::S_IFIFO
                    };
                    let dev = libc::makedev(
                        h.device_major().unwrap().unwrap_or(0),
                        h.device_minor().unwrap().unwrap_or(0),
                    );
                    // SAFETY: test code; valid path.
                    assert_eq!(unsafe { libc::mknod(cpath(&p).as_ptr(), t | mode, dev) }, 0);
                }
                other => panic!("fixture uses {other:?}"),
            }
            let c = cpath(&p);
            let (uid, gid) = (h.uid().unwrap() as u32, h.gid().unwrap() as u32);
            // SAFETY: test code; valid path.
            assert_eq!(unsafe { libc::lchown(c.as_ptr(), uid, gid) }, 0);
            if ty != tar::EntryType::Symlink {
                fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
            }
            if let Some(exts) = e.pax_extensions().unwrap() {
                for ext in exts {
                    let ext = ext.unwrap();
                    if let Some(k) = ext.key().unwrap().strip_prefix("SCHILY.xattr.") {
                        let k = CString::new(k).unwrap();
                        let v = ext.value_bytes();
                        // SAFETY: test code; valid path, key and value.
                        let r = unsafe {
                            libc::lsetxattr(c.as_ptr(), k.as_ptr(), v.as_ptr().cast(), v.len(), 0)
                        };
                        assert_eq!(r, 0);
                    }
                }
            }
            let mtime = h.mtime().unwrap() as i64;
            if ty.is_dir() {
                dir_times.push((p, mtime));
            } else {
                set_mtime(&p, mtime);
            }
        }
        dir_times.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
        for (p, t) in dir_times {
            set_mtime(&p, t);
        }
    }
}

/// Names in `dir` (for "nothing left behind" checks).
pub fn list(dir: &Path) -> Vec<String> {
    match fs::read_dir(dir) {
        Ok(rd) => {
            let mut v: Vec<String> = rd
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        }
        Err(_) => Vec::new(),
    }
}
