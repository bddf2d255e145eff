//! vm isolation's volumes: one virtiofsd per container serving `<ctr>/share`, in which
//! volume `n`'s host directory (or file) is bind-mounted as `<ctr>/share/<n>`. The binds
//! are made in a mount namespace of the daemon's own, between fork and exec: the host's
//! mount table never shows them and they go with the daemon. Each bind is made `nodev`
//! and, for a read-only volume, read-only throughout (`mount_setattr`), so the guest
//! cannot write through it whatever it sends; the daemon runs without `CAP_MKNOD`. The
//! daemon's socket is relative to the container directory (`fs.sock`), which is the
//! working directory of both the daemon and the VMM, so deep state directories stay
//! within `SUN_LEN`. virtiofsd jails itself in the shared directory (its `namespace`
//! sandbox: `..` and symlinks cannot leave it) and serves one VMM, then exits.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::HostMount;

/// The virtio-fs tag of a container's shared directory.
pub const TAG: &str = "husk-volumes";
/// The daemon's socket, relative to the container directory.
use crate::container::files::FS_SOCKET as SOCKET;
/// The shared directory inside the container directory.
const DIR: &str = "share";

/// Errors starting the daemon.
#[derive(Debug, thiserror::Error)]
pub enum ShareError {
    /// No virtiofsd.
    #[error("volumes in vm isolation need virtiofsd: run scripts/prepare.sh or set HUSK_VIRTIOFSD")]
    NoDaemon,
    /// A mount point could not be made.
    #[error("cannot prepare the shared directory {0}")]
    Prepare(PathBuf, #[source] std::io::Error),
    /// A path has a NUL byte.
    #[error("a volume path contains a NUL byte")]
    Nul,
    /// The daemon could not be started.
    #[error("cannot start virtiofsd")]
    Spawn(#[source] std::io::Error),
}

/// A running daemon.
#[derive(Debug)]
pub struct Share {
    child: Child,
    socket: PathBuf,
}

/// One bind the daemon's namespace gets: source, mount point, read-only.
struct Bind {
    source: CString,
    target: CString,
    read_only: bool,
}

impl Share {
    /// Makes `<dir>/share/<n>` for each mount and starts virtiofsd on it.
    pub fn start(dir: &Path, mounts: &[HostMount]) -> Result<Share, ShareError> {
        let daemon = crate::paths::virtiofsd().ok_or(ShareError::NoDaemon)?;
        let shared = dir.join(DIR);
        let binds = prepare(&shared, mounts)?;
        let socket = dir.join(SOCKET);
        let _ = std::fs::remove_file(&socket);
        let log = dir.join(crate::container::files::VIRTIOFSD_LOG);
        let log = std::fs::File::create(&log).map_err(|e| ShareError::Prepare(log, e))?;
        let log2 = log.try_clone().map_err(ShareError::Spawn)?;
        let mut cmd = Command::new(daemon);
        cmd.arg("--shared-dir")
            .arg(&shared)
            .args(["--socket-path", SOCKET, "--sandbox", "namespace", "--xattr"])
            // The guest makes no device nodes on the host, whatever it asks.
            .arg("--modcaps=-mknod")
            .args(["--cache", "auto", "--log-level", "warn"])
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        // SAFETY: the closure makes only system calls (unshare, mount, prctl) on data
        // prepared before the fork; it allocates nothing and takes no locks.
        unsafe {
            cmd.pre_exec(move || enter_own_namespace(&binds));
        }
        let child = cmd.spawn().map_err(ShareError::Spawn)?;
        Ok(Share { child, socket })
    }

    /// Stops the daemon (if the VMM's end did not already) and removes its socket.
    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// Creates the mount points (directories for directories, empty files for files).
fn prepare(shared: &Path, mounts: &[HostMount]) -> Result<Vec<Bind>, ShareError> {
    let fail = |p: &Path| {
        let p = p.to_path_buf();
        move |e| ShareError::Prepare(p, e)
    };
    std::fs::create_dir_all(shared).map_err(fail(shared))?;
    let cstr = |p: &Path| CString::new(p.as_os_str().as_bytes()).map_err(|_| ShareError::Nul);
    let mut binds = Vec::with_capacity(mounts.len());
    for (n, m) in mounts.iter().enumerate() {
        let point = shared.join(n.to_string());
        match std::fs::metadata(&m.source)
            .map_err(fail(&m.source))?
            .is_dir()
        {
            true => std::fs::create_dir_all(&point).map_err(fail(&point))?,
            false => {
                std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&point)
                    .map_err(fail(&point))?;
            }
        }
        binds.push(Bind {
            source: cstr(&m.source)?,
            target: cstr(&point)?,
            read_only: m.read_only,
        });
    }
    Ok(binds)
}

/// In the forked child: a private mount namespace with the binds, and death with the
/// parent.
fn enter_own_namespace(binds: &[Bind]) -> std::io::Result<()> {
    let check = |rc: libc::c_int| match rc {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    };
    // SAFETY: unshare, mount and prctl take only the NUL-terminated strings prepared
    // before the fork (alive for the closure's life) and null pointers.
    unsafe {
        check(libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
        ))?;
        check(libc::unshare(libc::CLONE_NEWNS))?;
        check(libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ))?;
        for b in binds {
            check(libc::mount(
                b.source.as_ptr(),
                b.target.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND | libc::MS_REC,
                std::ptr::null(),
            ))?;
        }
    }
    for b in binds {
        super::mountattr::restrict(libc::AT_FDCWD, &b.target, 0, b.read_only)?;
    }
    Ok(())
}
