//! Copy-up: what the image has at a volume's target, copied into the new, empty volume
//! with owners and modes (docker's behaviour). Everything is relative to directory
//! descriptors and nothing follows a symlink (`O_NOFOLLOW`, `AT_SYMLINK_NOFOLLOW`, new
//! entries made with `O_EXCL`): the agent runs as root, in process isolation still in the
//! host's root, and another container sharing the volume may be changing it meanwhile,
//! so no path may lead it anywhere else. Device nodes, sockets and FIFOs are not copied.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

/// How deep a copied tree may nest.
const MAX_DEPTH: usize = 128;

/// Copies the directory `from` into the directory `to` (the owner and mode of `from`
/// included).
pub fn copy(from: BorrowedFd<'_>, to: BorrowedFd<'_>) -> io::Result<()> {
    copy_dir(from, to, 0)?;
    let st = fstat(from)?;
    set_owner_and_mode(to, &st)
}

fn copy_dir(from: BorrowedFd<'_>, to: BorrowedFd<'_>, depth: usize) -> io::Result<()> {
    if depth > MAX_DEPTH {
        return Err(io::Error::other("the image's tree is nested too deep"));
    }
    for entry in std::fs::read_dir(format!("/proc/self/fd/{}", from.as_raw_fd()))? {
        let name = cstr(entry?.file_name().as_os_str())?;
        let st = stat_at(from, &name)?;
        match st.st_mode & libc::S_IFMT {
            libc::S_IFDIR => {
                // SAFETY: mkdirat with a live NUL-terminated name.
                check(unsafe { libc::mkdirat(to.as_raw_fd(), name.as_ptr(), 0o700) })?;
                let src = open_at(from, &name, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
                let dst = open_at(to, &name, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
                copy_dir(fd(&src), fd(&dst), depth + 1)?;
                set_owner_and_mode(fd(&dst), &st)?;
            }
            libc::S_IFREG => {
                let src = open_at(from, &name, libc::O_RDONLY, 0)?;
                let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL;
                let dst = open_at(to, &name, flags, 0o600)?;
                let (mut r, mut w) = (File::from(src), File::from(dst));
                io::copy(&mut r, &mut w)?;
                set_owner_and_mode(fd(&OwnedFd::from(w)), &st)?;
            }
            libc::S_IFLNK => {
                let target = read_link_at(from, &name)?;
                // SAFETY: symlinkat with live NUL-terminated strings.
                check(unsafe { libc::symlinkat(target.as_ptr(), to.as_raw_fd(), name.as_ptr()) })?;
                // SAFETY: fchownat with a live name; AT_SYMLINK_NOFOLLOW changes the link.
                check(unsafe {
                    libc::fchownat(
                        to.as_raw_fd(),
                        name.as_ptr(),
                        st.st_uid,
                        st.st_gid,
                        libc::AT_SYMLINK_NOFOLLOW,
                    )
                })?;
            }
            _ => {}
        }
    }
    Ok(())
}

fn fd(f: &OwnedFd) -> BorrowedFd<'_> {
    std::os::fd::AsFd::as_fd(f)
}

fn check(rc: libc::c_int) -> io::Result<()> {
    match rc {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

fn cstr(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| io::Error::other("a name with a NUL byte"))
}

/// Opens `name` beneath `dir`, never through a symlink.
fn open_at(dir: BorrowedFd<'_>, name: &CString, flags: i32, mode: u32) -> io::Result<OwnedFd> {
    let flags = flags | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: openat with a live NUL-terminated name; the result is checked.
    let raw = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags, mode) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: openat just returned this descriptor and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

fn stat_at(dir: BorrowedFd<'_>, name: &CString) -> io::Result<libc::stat> {
    // SAFETY: an all-zero `stat` is a valid value of this plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let flags = libc::AT_SYMLINK_NOFOLLOW;
    // SAFETY: fstatat writes into `st`, a live local, and reads the live name.
    check(unsafe { libc::fstatat(dir.as_raw_fd(), name.as_ptr(), &mut st, flags) })?;
    Ok(st)
}

fn fstat(f: BorrowedFd<'_>) -> io::Result<libc::stat> {
    // SAFETY: an all-zero `stat` is a valid value of this plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes into `st`, a live local.
    check(unsafe { libc::fstat(f.as_raw_fd(), &mut st) })?;
    Ok(st)
}

fn read_link_at(dir: BorrowedFd<'_>, name: &CString) -> io::Result<CString> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: readlinkat writes at most `buf.len()` bytes into `buf`.
    let n = unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
    buf.truncate(n);
    CString::new(buf).map_err(|_| io::Error::other("a link target with a NUL byte"))
}

/// Owner, then mode (a change of owner clears set-id bits), on an open file.
fn set_owner_and_mode(f: BorrowedFd<'_>, st: &libc::stat) -> io::Result<()> {
    // SAFETY: fchown and fchmod take a descriptor we hold and plain integers.
    unsafe {
        check(libc::fchown(f.as_raw_fd(), st.st_uid, st.st_gid))?;
        check(libc::fchmod(f.as_raw_fd(), st.st_mode & 0o7777))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn dir(p: &std::path::Path) -> File {
        File::open(p).unwrap()
    }

    #[test]
    fn copies_files_dirs_links_and_modes_without_following_links() {
        let t = tempfile::tempdir().unwrap();
        let (src, dst) = (t.path().join("src"), t.path().join("dst"));
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::create_dir(&dst).unwrap();
        std::fs::write(src.join("sub/f"), "data").unwrap();
        std::fs::set_permissions(src.join("sub/f"), std::fs::Permissions::from_mode(0o640))
            .unwrap();
        std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o1751)).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", src.join("link")).unwrap();
        copy(dir(&src).as_fd(), dir(&dst).as_fd()).unwrap();
        assert_eq!(std::fs::read_to_string(dst.join("sub/f")).unwrap(), "data");
        assert_eq!(
            std::fs::metadata(dst.join("sub/f")).unwrap().mode() & 0o7777,
            0o640
        );
        assert_eq!(std::fs::metadata(&dst).unwrap().mode() & 0o7777, 0o1751);
        assert_eq!(
            std::fs::read_link(dst.join("link")).unwrap(),
            std::path::Path::new("/etc/passwd")
        );
    }

    #[test]
    fn an_entry_already_in_the_way_is_not_written_through() {
        let t = tempfile::tempdir().unwrap();
        let (src, dst) = (t.path().join("src"), t.path().join("dst"));
        std::fs::create_dir(&src).unwrap();
        std::fs::create_dir(&dst).unwrap();
        std::fs::write(src.join("f"), "image").unwrap();
        let victim = t.path().join("victim");
        std::fs::write(&victim, "host").unwrap();
        std::os::unix::fs::symlink(&victim, dst.join("f")).unwrap();
        assert!(copy(dir(&src).as_fd(), dir(&dst).as_fd()).is_err());
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "host");
    }
}
