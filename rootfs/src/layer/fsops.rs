//! The system calls that build a layer's staging tree. Paths are resolved with
//! `openat2(RESOLVE_BENEATH)` below the staging root, so no symlink or `..` in the tree can
//! lead a write outside it; final components are never followed.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// Mirrors `struct open_how` of linux/openat2.h (the libc one is non-exhaustive).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// Turns a -1 return into the errno.
fn check(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Opens `path` (relative, `.` for `dir` itself) beneath `dir`: `..` may not climb above it
/// and symlinks may not leave it (EXDEV) or be magic links.
pub fn open_beneath(dir: BorrowedFd<'_>, path: &CStr, flags: libc::c_int) -> io::Result<OwnedFd> {
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS,
    };
    loop {
        // SAFETY: `path` is NUL-terminated and `how` is a valid open_how of the size passed;
        // the kernel reads both during the call only.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir.as_raw_fd(),
                path.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        };
        if fd >= 0 {
            // SAFETY: the kernel just returned this descriptor and nothing else owns it.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) });
        }
        let err = io::Error::last_os_error();
        // EAGAIN: a concurrent rename elsewhere on the system; the lookup can be retried.
        if err.raw_os_error() != Some(libc::EAGAIN) {
            return Err(err);
        }
    }
}

/// Opens the directory `path` beneath `dir` as an `O_PATH` handle for `*at` calls.
pub fn open_dir_beneath(dir: BorrowedFd<'_>, path: &CStr) -> io::Result<OwnedFd> {
    open_beneath(dir, path, libc::O_PATH | libc::O_DIRECTORY)
}

/// `lstat` of `name` in `dir`; `None` if it does not exist.
pub fn lstat_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Option<libc::stat>> {
    // SAFETY: an all-zero `stat` is a valid value of this plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `name` is NUL-terminated and `st` is a writable stat the kernel fills.
    let ret = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    match check(ret) {
        Ok(()) => Ok(Some(st)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether a `stat` mode is a directory.
pub fn is_dir(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

/// `mkdirat`.
pub fn mkdir_at(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated; the call only reads it.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode) })
}

/// `mknodat` with the file type in `mode`.
pub fn mknod_at(
    dir: BorrowedFd<'_>,
    name: &CStr,
    mode: u32,
    major: u32,
    minor: u32,
) -> io::Result<()> {
    let dev = libc::makedev(major, minor);
    // SAFETY: `name` is NUL-terminated; the call only reads it.
    check(unsafe { libc::mknodat(dir.as_raw_fd(), name.as_ptr(), mode, dev) })
}

/// `symlinkat`: `name` in `dir` pointing at `target` (never resolved here).
pub fn symlink_at(target: &CStr, dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    // SAFETY: both strings are NUL-terminated; the call only reads them.
    check(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) })
}

/// `linkat` without following a symlink at the old name.
pub fn link_at(
    old_dir: BorrowedFd<'_>,
    old: &CStr,
    new_dir: BorrowedFd<'_>,
    new: &CStr,
) -> io::Result<()> {
    // SAFETY: both names are NUL-terminated; the call only reads them.
    check(unsafe {
        libc::linkat(
            old_dir.as_raw_fd(),
            old.as_ptr(),
            new_dir.as_raw_fd(),
            new.as_ptr(),
            0,
        )
    })
}

/// Creates a new regular file (never through a symlink, never over an existing entry).
pub fn create_file(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<File> {
    let flags = libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: `name` is NUL-terminated; the call only reads it.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags, 0o600 as libc::c_uint) };
    check(fd)?;
    // SAFETY: `fd` was just returned by openat and nothing else owns it.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// The `/proc/self/fd` path of `name` in `dir`, for calls that have no `*at` form.
fn proc_path(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<CString> {
    let mut path = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    path.extend_from_slice(name.to_bytes());
    CString::new(path).map_err(io::Error::other)
}

/// Removes `name` from `dir`, a whole tree if it is a directory.
pub fn remove_at(dir: BorrowedFd<'_>, name: &CStr, st: &libc::stat) -> io::Result<()> {
    if is_dir(st) {
        let path = proc_path(dir, name)?;
        let path = PathBuf::from(std::ffi::OsStr::from_bytes(path.as_bytes()));
        // std's remove_dir_all never follows symlinks inside the tree.
        return std::fs::remove_dir_all(path);
    }
    // SAFETY: `name` is NUL-terminated; the call only reads it.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) })
}

/// Sets owner, then mode (chown clears setuid), of `name` in `dir` without following a
/// symlink. Symlinks have no mode of their own.
pub fn chown_chmod_at(
    dir: BorrowedFd<'_>,
    name: &CStr,
    uid: u32,
    gid: u32,
    mode: Option<u32>,
) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated; the call only reads it.
    check(unsafe {
        libc::fchownat(
            dir.as_raw_fd(),
            name.as_ptr(),
            uid,
            gid,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    if let Some(mode) = mode {
        // SAFETY: `name` is NUL-terminated; the call only reads it. The entry was just
        // checked or created as a non-symlink in a tree only this process writes.
        check(unsafe { libc::fchmodat(dir.as_raw_fd(), name.as_ptr(), mode, 0) })?;
    }
    Ok(())
}

/// Sets the extended attribute `key` of `name` in `dir` (not following a final symlink).
pub fn set_xattr_at(dir: BorrowedFd<'_>, name: &CStr, key: &CStr, value: &[u8]) -> io::Result<()> {
    let path = proc_path(dir, name)?;
    // SAFETY: path and key are NUL-terminated and `value` is valid for its length; the call
    // only reads them.
    check(unsafe {
        libc::lsetxattr(
            path.as_ptr(),
            key.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
}

/// Sets access and modification time of `name` in `dir` (not following a final symlink).
pub fn set_mtime_at(dir: BorrowedFd<'_>, name: &CStr, secs: i64, nsecs: u32) -> io::Result<()> {
    let ts = libc::timespec {
        tv_sec: secs,
        tv_nsec: libc::c_long::from(nsecs.min(999_999_999)),
    };
    let times = [ts, ts];
    // SAFETY: `name` is NUL-terminated and `times` holds the two timespecs utimensat reads.
    check(unsafe {
        libc::utimensat(
            dir.as_raw_fd(),
            name.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
}
