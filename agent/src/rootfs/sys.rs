//! The system calls rootfs assembly needs, as small safe wrappers: mount(2), paths resolved
//! inside the container's root with openat2(RESOLVE_IN_ROOT) (so a symlink in an image can
//! never point a mount or a write at the agent's own filesystem), creating directories, files
//! and device nodes beneath such a descriptor, and pivot_root(2).

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use libc::c_ulong;

/// `s` as a C string; a NUL byte inside is an invalid-input error.
pub fn cstr(s: impl AsRef<OsStr>) -> io::Result<CString> {
    CString::new(s.as_ref().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// mount(2). `source`, `fstype` and `data` may be absent.
pub fn mount(
    source: Option<&str>,
    target: &Path,
    fstype: Option<&str>,
    flags: c_ulong,
    data: Option<&str>,
) -> io::Result<()> {
    let source = source.map(cstr).transpose()?;
    let fstype = fstype.map(cstr).transpose()?;
    let data = data.map(cstr).transpose()?;
    let target = cstr(target)?;
    let ptr = |c: &Option<CString>| c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
    // SAFETY: every pointer is null or points at a NUL-terminated CString that lives until
    // the call returns; mount(2) only reads them.
    check(unsafe {
        libc::mount(
            ptr(&source),
            target.as_ptr(),
            ptr(&fstype),
            flags,
            ptr(&data).cast(),
        )
    })
}

/// The path through which the agent reaches what `fd` refers to (for mount targets).
pub fn fd_path(fd: BorrowedFd<'_>) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// Opens a directory of the agent's own tree (trusted paths only) as an `O_PATH` handle.
pub fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    let path = cstr(path)?;
    let flags = libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC;
    // SAFETY: `path` is a NUL-terminated string living across the call.
    let fd = unsafe { libc::open(path.as_ptr(), flags) };
    check(fd)?;
    // SAFETY: open just returned this descriptor and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// openat2's `struct open_how` (the libc crate's is non-exhaustive).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// Opens `path` (relative) with `root` as `/` for every lookup, `..` and absolute symlinks
/// included (openat2 `RESOLVE_IN_ROOT`); magic links are refused.
pub fn open_in_root(
    root: BorrowedFd<'_>,
    path: &str,
    flags: libc::c_int,
    mode: u32,
) -> io::Result<OwnedFd> {
    let path = cstr(path)?;
    let how = OpenHow {
        flags: u64::try_from(flags | libc::O_CLOEXEC).unwrap_or_default(),
        mode: if flags & libc::O_CREAT != 0 {
            u64::from(mode)
        } else {
            0
        },
        resolve: libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: openat2 reads the NUL-terminated path and `how` (its size passed alongside),
    // both living across the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            path.as_ptr(),
            &raw const how,
            std::mem::size_of::<OpenHow>(),
        )
    };
    let fd = libc::c_int::try_from(fd).map_err(|_| io::Error::other("bad descriptor"))?;
    check(fd)?;
    // SAFETY: openat2 just returned this descriptor and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens directory `path` inside `root` (`O_PATH`), creating missing components (mode
/// 0755) one by one, each resolved inside `root`.
pub fn ensure_dir(root: BorrowedFd<'_>, path: &str) -> io::Result<OwnedFd> {
    let dir = |p: &str| open_in_root(root, p, libc::O_PATH | libc::O_DIRECTORY, 0);
    let mut prefix = String::new();
    let mut parent: Option<OwnedFd> = None;
    for name in path.split('/').filter(|c| !c.is_empty()) {
        if !prefix.is_empty() {
            prefix.push('/');
        }
        prefix.push_str(name);
        let fd = match dir(&prefix) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let at = parent.as_ref().map_or(root, |p| p.as_fd());
                match mkdir_at(at, name, 0o755) {
                    Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
                    _ => {}
                }
                dir(&prefix)?
            }
            other => other?,
        };
        parent = Some(fd);
    }
    match parent {
        Some(fd) => Ok(fd),
        None => dir("."),
    }
}

/// Opens the non-directory `path` inside `root` (`O_PATH`), creating an empty file (0644)
/// and its parent directories if it does not exist.
pub fn ensure_file(root: BorrowedFd<'_>, path: &str) -> io::Result<OwnedFd> {
    match open_in_root(root, path, libc::O_PATH, 0) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some((parent, _)) = path.rsplit_once('/') {
                ensure_dir(root, parent)?;
            }
            let flags = libc::O_CREAT | libc::O_WRONLY | libc::O_NOCTTY;
            drop(open_in_root(root, path, flags, 0o644)?);
            open_in_root(root, path, libc::O_PATH, 0)
        }
        other => other,
    }
}

/// mkdirat(2) of one name beneath `dir`.
pub fn mkdir_at(dir: BorrowedFd<'_>, name: &str, mode: u32) -> io::Result<()> {
    let name = cstr(name)?;
    // SAFETY: `name` is NUL-terminated and lives across the call.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode) })
}

/// Sets the mode of `name` beneath `dir` (after creation, whatever the umask took away).
pub fn chmod_at(dir: BorrowedFd<'_>, name: &str, mode: u32) -> io::Result<()> {
    let name = cstr(name)?;
    // SAFETY: `name` is NUL-terminated and lives across the call.
    check(unsafe { libc::fchmodat(dir.as_raw_fd(), name.as_ptr(), mode, 0) })
}

/// Creates symlink `name` -> `target` beneath `dir`.
pub fn symlink_at(target: &str, dir: BorrowedFd<'_>, name: &str) -> io::Result<()> {
    let (target, name) = (cstr(target)?, cstr(name)?);
    // SAFETY: both strings are NUL-terminated and live across the call.
    check(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) })
}

/// Makes the current directory the root: pivot_root(".", ".") stacks the old root on top of
/// the new one, and a lazy unmount of "." then removes it (and every mount below it) from
/// this mount namespace. Every thread's root and cwd move along.
pub fn pivot_here() -> io::Result<()> {
    let dot = c".";
    // SAFETY: pivot_root reads two NUL-terminated static strings.
    check(unsafe { libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) } as i32)?;
    // SAFETY: umount2 reads a NUL-terminated static string.
    check(unsafe { libc::umount2(dot.as_ptr(), libc::MNT_DETACH) })
}

/// What switch_root does where pivot_root cannot (the initramfs is the namespace's root
/// mount and has no parent): move the current directory's mount onto `/` and chroot there.
pub fn move_root_here() -> io::Result<()> {
    mount(Some("."), Path::new("/"), None, libc::MS_MOVE, None)?;
    // SAFETY: chroot reads a NUL-terminated static string.
    check(unsafe { libc::chroot(c".".as_ptr()) })
}

/// chdir(2).
pub fn chdir(path: &Path) -> io::Result<()> {
    std::env::set_current_dir(path)
}

/// move_mount(2) of the detached mount `from` onto the directory or file `to`.
pub fn move_mount(from: RawFd, to: BorrowedFd<'_>) -> io::Result<()> {
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
    const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;
    // SAFETY: move_mount takes two descriptors and two empty NUL-terminated paths that
    // outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            from,
            c"".as_ptr(),
            to.as_raw_fd(),
            c"".as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    check(i32::try_from(rc).unwrap_or(-1))
}
