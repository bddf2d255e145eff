//! Where the agent listens for the host, and the connections it accepts: a vsock port in a VM
//! (`vsock`, `vsock:PORT`), a unix socket path in host-process mode (`unix:/PATH`), or a
//! listening unix socket inherited as descriptor N (`fd:N`): process isolation's shim binds
//! the socket itself, so it can connect the moment the agent exists, with no polling. Owns parsing those specs, binding (a unix socket is made 0600: whoever can
//! connect can run anything as the agent's user), accepting, and removing the socket file.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use crate::vsock::{VsockError, VsockListener};

/// Errors from parsing a listen spec or binding it.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// The spec is neither `vsock[:PORT]`, `unix:/ABSOLUTE/PATH` nor `fd:N`.
    #[error("{0:?} is not a listen address (vsock, vsock:PORT, unix:/ABSOLUTE/PATH or fd:N)")]
    BadSpec(String),
    /// The inherited descriptor is not a listening unix socket.
    #[error("descriptor {0} is not a listening unix socket")]
    NotAListener(i32),
    /// The unix socket path is taken by something that is not a stale socket.
    #[error("{0} exists and is not a socket")]
    NotASocket(PathBuf),
    /// Another agent (or anything) already serves on the unix socket.
    #[error("{0} is in use by a live listener")]
    InUse(PathBuf),
    /// Removing a stale socket failed.
    #[error("cannot remove stale socket {0}")]
    RemoveStale(PathBuf, #[source] io::Error),
    /// Binding the unix socket failed.
    #[error("cannot listen on {0}")]
    BindUnix(PathBuf, #[source] io::Error),
    /// Binding the vsock port failed.
    #[error("cannot listen on vsock")]
    Vsock(#[from] VsockError),
}

/// Where to listen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenSpec {
    /// A vsock port on any local CID.
    Vsock(u32),
    /// A unix socket at this absolute path.
    Unix(PathBuf),
    /// A listening unix socket already open as this descriptor (3 or above).
    Fd(i32),
}

impl ListenSpec {
    /// Parses `vsock`, `vsock:PORT` or `unix:/ABSOLUTE/PATH`.
    pub fn parse(text: &str) -> Result<Self, ListenError> {
        let bad = || ListenError::BadSpec(text.to_owned());
        if text == "vsock" {
            return Ok(ListenSpec::Vsock(agent_proto::CONTROL_PORT));
        }
        if let Some(port) = text.strip_prefix("vsock:") {
            return port.parse().map(ListenSpec::Vsock).map_err(|_| bad());
        }
        if let Some(fd) = text.strip_prefix("fd:") {
            return match fd.parse() {
                Ok(n) if n >= 3 => Ok(ListenSpec::Fd(n)),
                _ => Err(bad()),
            };
        }
        match text.strip_prefix("unix:") {
            Some(path) if path.starts_with('/') => Ok(ListenSpec::Unix(PathBuf::from(path))),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for ListenSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenSpec::Vsock(port) => write!(f, "vsock:{port}"),
            ListenSpec::Unix(path) => write!(f, "unix:{}", path.display()),
            ListenSpec::Fd(fd) => write!(f, "fd:{fd}"),
        }
    }
}

/// A bound listener. A unix socket file is removed when it is dropped.
#[derive(Debug)]
pub enum Listener {
    /// Unix socket and its file.
    Unix(UnixListener, SocketFile),
    /// An inherited unix socket (its file belongs to whoever bound it).
    Inherited(UnixListener),
    /// Vsock port.
    Vsock(VsockListener),
}

impl Listener {
    /// Binds `spec`. Call before starting threads: it briefly changes the process umask.
    pub fn bind(spec: &ListenSpec) -> Result<Self, ListenError> {
        match spec {
            ListenSpec::Vsock(port) => Ok(Listener::Vsock(VsockListener::bind(*port)?)),
            ListenSpec::Unix(path) => {
                remove_stale(path)?;
                // SAFETY: umask only swaps the process's file-mode mask; it cannot fail.
                let old = unsafe { libc::umask(0o177) };
                let bound = UnixListener::bind(path);
                // SAFETY: as above, restoring the previous mask.
                unsafe { libc::umask(old) };
                let listener = bound.map_err(|e| ListenError::BindUnix(path.clone(), e))?;
                Ok(Listener::Unix(listener, SocketFile::new(path)))
            }
            ListenSpec::Fd(fd) => inherited(*fd).map(Listener::Inherited),
        }
    }

    /// Waits for the next connection.
    pub fn accept(&self) -> io::Result<Conn> {
        match self {
            Listener::Unix(l, _) | Listener::Inherited(l) => l.accept().map(|(s, _)| Conn::Unix(s)),
            Listener::Vsock(l) => l.accept().map(Conn::Vsock),
        }
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Listener::Unix(l, _) | Listener::Inherited(l) => l.as_fd(),
            Listener::Vsock(l) => l.as_fd(),
        }
    }
}

/// Where a bound unix socket lives. Its directory is held open, so the file can be removed
/// even after the agent has moved into a container's rootfs (where the path means another
/// file, or nothing).
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    dir: Option<(File, std::ffi::CString)>,
}

impl SocketFile {
    fn new(path: &Path) -> Self {
        let dir = path.parent().zip(path.file_name()).and_then(|(dir, name)| {
            let name = std::ffi::CString::new(name.as_encoded_bytes()).ok()?;
            let dir = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECTORY | libc::O_PATH)
                .open(dir)
                .ok()?;
            Some((dir, name))
        });
        Self {
            path: path.to_owned(),
            dir,
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, file) = self {
            match &file.dir {
                // SAFETY: unlinkat takes a live directory descriptor and a NUL-terminated
                // name, both owned by `file`.
                Some((dir, name)) => unsafe {
                    libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0);
                },
                None => {
                    let _ = std::fs::remove_file(&file.path);
                }
            }
        }
    }
}

/// Takes over descriptor `fd` after checking that it is a listening unix socket, and marks
/// it close-on-exec so that no workload inherits it.
fn inherited(fd: i32) -> Result<UnixListener, ListenError> {
    use std::os::fd::FromRawFd;
    let (mut accepting, mut domain): (libc::c_int, libc::c_int) = (0, 0);
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes one c_int into each local we own; a bad `fd` only fails.
    let ok = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ACCEPTCONN,
            (&raw mut accepting).cast(),
            &raw mut len,
        ) == 0
            && libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_DOMAIN,
                (&raw mut domain).cast(),
                &raw mut len,
            ) == 0
    };
    if !ok || accepting == 0 || domain != libc::AF_UNIX {
        return Err(ListenError::NotAListener(fd));
    }
    // SAFETY: fcntl on the descriptor just checked; sets only the close-on-exec flag.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    // SAFETY: `fd` is a listening unix socket this process owns from now on (nothing else
    // in the agent uses that number).
    Ok(unsafe { UnixListener::from_raw_fd(fd) })
}

/// Removes a socket left behind by a dead listener; refuses to touch anything else.
fn remove_stale(path: &Path) -> Result<(), ListenError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(_) => return Ok(()),
    };
    if !meta.file_type().is_socket() {
        return Err(ListenError::NotASocket(path.to_owned()));
    }
    if UnixStream::connect(path).is_ok() {
        return Err(ListenError::InUse(path.to_owned()));
    }
    std::fs::remove_file(path).map_err(|e| ListenError::RemoveStale(path.to_owned(), e))
}

/// One accepted connection.
#[derive(Debug)]
pub enum Conn {
    /// Over a unix socket.
    Unix(UnixStream),
    /// Over vsock (a socket descriptor behind `File`'s read/write).
    Vsock(File),
}

impl Conn {
    /// A second handle on the same connection (one reads, the other writes).
    pub fn try_clone(&self) -> io::Result<Conn> {
        match self {
            Conn::Unix(s) => s.try_clone().map(Conn::Unix),
            Conn::Vsock(f) => f.try_clone().map(Conn::Vsock),
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Unix(s) => s.read(buf),
            Conn::Vsock(f) => f.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Unix(s) => s.write(buf),
            Conn::Vsock(f) => f.write(buf),
        }
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Conn::Unix(s) => s.write_vectored(bufs),
            Conn::Vsock(f) => f.write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn parses_specs() {
        assert_eq!(ListenSpec::parse("vsock").unwrap(), ListenSpec::Vsock(1024));
        assert_eq!(
            ListenSpec::parse("vsock:5000").unwrap(),
            ListenSpec::Vsock(5000)
        );
        assert_eq!(
            ListenSpec::parse("unix:/run/a b.sock").unwrap(),
            ListenSpec::Unix("/run/a b.sock".into())
        );
        for bad in [
            "",
            "unix:",
            "unix:rel.sock",
            "vsock:",
            "vsock:x",
            "tcp:1",
            "/a",
            "fd:",
            "fd:2",
            "fd:-4",
            "fd:x",
        ] {
            assert!(ListenSpec::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(ListenSpec::Vsock(7).to_string(), "vsock:7");
        assert_eq!(ListenSpec::Unix("/s".into()).to_string(), "unix:/s");
        assert_eq!(ListenSpec::parse("fd:3").unwrap(), ListenSpec::Fd(3));
        assert_eq!(ListenSpec::Fd(9).to_string(), "fd:9");
    }

    #[test]
    fn inherited_descriptors_must_be_listening_unix_sockets() {
        use std::os::fd::{AsRawFd, IntoRawFd};
        let dir = tempfile::tempdir().unwrap();
        let file = std::fs::File::create(dir.path().join("f")).unwrap();
        let e = Listener::bind(&ListenSpec::Fd(file.as_raw_fd())).unwrap_err();
        assert!(matches!(e, ListenError::NotAListener(_)), "{e}");
        let (a, _b) = UnixStream::pair().unwrap();
        assert!(Listener::bind(&ListenSpec::Fd(a.as_raw_fd())).is_err());
        let path = dir.path().join("s");
        let fd = UnixListener::bind(&path).unwrap().into_raw_fd();
        let l = Listener::bind(&ListenSpec::Fd(fd)).unwrap();
        // SAFETY: fcntl F_GETFD on a descriptor the listener owns.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        assert_eq!(flags & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
        let client = std::thread::spawn(move || UnixStream::connect(&path).unwrap());
        assert!(matches!(l.accept().unwrap(), Conn::Unix(_)));
        client.join().unwrap();
    }

    #[test]
    fn unix_socket_is_private_replaces_stale_and_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sock");
        let spec = ListenSpec::Unix(path.clone());
        drop(UnixListener::bind(&path).unwrap()); // a stale socket: nobody listens
        let listener = Listener::bind(&spec).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(matches!(Listener::bind(&spec), Err(ListenError::InUse(_))));
        drop(listener);
        assert!(!path.exists());
        std::fs::write(&path, b"not a socket").unwrap();
        assert!(matches!(
            Listener::bind(&spec),
            Err(ListenError::NotASocket(_))
        ));
    }
}
