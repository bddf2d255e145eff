//! What goes inside the assembled rootfs before the agent moves in: proc, a read-only sysfs,
//! docker's minimal `/dev` (a `nodev` tmpfs onto which null, zero, full, random, urandom and
//! tty are bind-mounted from the agent's own `/dev`, plus `--device`s, the `/proc/self/fd`
//! links, a private devpts instance with `ptmx` pointing at it, `shm` and `mqueue`; never the
//! agent's devtmpfs itself, which in process mode is the host's and would expose its disks),
//! `/tmp`, and `/etc/{hosts,hostname,resolv.conf}` bind-mounted from files the agent writes
//! under `<base>/etc`. Every target is resolved inside the rootfs, so an image's symlinks
//! cannot aim a mount outside it. The root (see `layers`) and `/dev` are `nodev`: a device
//! node a workload makes with CAP_MKNOD cannot be opened, so only the bind-mounted nodes
//! work (runc's way without a devices cgroup, and the same under both isolations).

use std::fs;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use agent_proto::SandboxSpec;
use libc::{MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_RDONLY, c_ulong};

use super::{RootfsError, step, sys};
use crate::console::say;

/// Flags of the kernel filesystems that hold no programs or devices.
const SECURE: c_ulong = MS_NOSUID | MS_NODEV | MS_NOEXEC;

/// Device nodes of the container's `/dev`, bind-mounted from the agent's `/dev`.
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// Symlinks of the container's `/dev`: (name, target).
const LINKS: &[(&str, &str)] = &[
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
    ("ptmx", "pts/ptmx"),
    ("core", "/proc/kcore"),
];

/// Where [`prepare`] builds `proc`, `sys` and `dev` (under the agent's base directory).
const READY: &str = "ready";

/// Whether [`prepare`] has built them and no setup has taken them yet.
static PREPARED: AtomicBool = AtomicBool::new(false);

/// Builds the container's `/proc`, `/sys` and `/dev` (with docker's default `/dev/shm`)
/// under `<base>/ready` before the agent reports ready; `populate` moves them into the
/// rootfs. They are the same for every container, and making them is a dozen mounts: a
/// warm-start template's guest has them made once for all its clones (~0.6 s of emulated
/// guest-kernel work per container on an emulating KVM). Best effort: what is missing is
/// made in place by `populate`.
pub fn prepare(base: &Path) -> Result<(), RootfsError> {
    let ready = base.join(READY);
    fs::create_dir_all(&ready).map_err(step(format!("create {}", ready.display())))?;
    let root = sys::open_dir(&ready).map_err(step(format!("open {}", ready.display())))?;
    let root = root.as_fd();
    mount_in(root, "proc", "proc", SECURE, None)?;
    mount_in(root, "sys", "sysfs", SECURE | MS_RDONLY, None)?;
    dev(root, None, &[])?;
    PREPARED.store(true, Ordering::SeqCst);
    Ok(())
}

/// Which prepared mounts [`move_prepared`] moved into the rootfs already.
static MOVED: AtomicU8 = AtomicU8::new(0);
const PROC: u8 = 1;
const SYS: u8 = 2;
const DEV: u8 = 4;

/// Moves the prepared `/proc`, `/sys` and `/dev` into `rootfs` ahead of the setup (an
/// image template's guest; see `rootfs::prepare_image`). What could not be moved is made
/// by `populate`.
pub fn move_prepared(base: &Path, rootfs: &Path) -> Result<(), RootfsError> {
    let root = sys::open_dir(rootfs).map_err(step(format!("open {}", rootfs.display())))?;
    if !PREPARED.swap(false, Ordering::SeqCst) {
        return Ok(());
    }
    let ready = base.join(READY);
    let mut moved = 0;
    for (bit, name) in [(PROC, "proc"), (SYS, "sys"), (DEV, "dev")] {
        if move_in(root.as_fd(), &ready, name) {
            moved |= bit;
        }
    }
    MOVED.store(moved, Ordering::SeqCst);
    Ok(())
}

/// Mounts and writes everything the container expects to find in its rootfs.
pub fn populate(base: &Path, rootfs: &Path, spec: &SandboxSpec) -> Result<(), RootfsError> {
    let root = sys::open_dir(rootfs).map_err(step(format!("open {}", rootfs.display())))?;
    let root = root.as_fd();
    let prepared = PREPARED.swap(false, Ordering::SeqCst);
    let moved = MOVED.swap(0, Ordering::SeqCst);
    let ready = base.join(READY);
    let in_place =
        |bit: u8, name: &str| moved & bit != 0 || (prepared && move_in(root, &ready, name));
    if !in_place(PROC, "proc") {
        mount_in(root, "proc", "proc", SECURE, None)?;
    }
    if !in_place(SYS, "sys") {
        mount_in(root, "sys", "sysfs", SECURE | MS_RDONLY, None)?;
    }
    if in_place(DEV, "dev") {
        if let Some(size) = spec.shm_size.filter(|&s| s != DEFAULT_SHM) {
            let shm = sys::ensure_dir(root, "dev/shm").map_err(step("open /dev/shm"))?;
            let flags = libc::MS_REMOUNT | SECURE;
            sys::mount(
                None,
                &sys::fd_path(shm.as_fd()),
                None,
                flags,
                Some(&shm_data(size)),
            )
            .map_err(step("resize /dev/shm"))?;
        }
        bind_devices(root, &spec.devices)?;
    } else {
        dev(root, spec.shm_size, &spec.devices)?;
    }
    tmp(root)?;
    // Volumes before the /etc files, so a volume on /etc still gets them.
    super::volumes::mount_all(base, root, spec)?;
    etc_files(base, root, spec)?;
    for t in &spec.tmpfs {
        tmpfs(root, t)?;
    }
    Ok(())
}

/// Moves the prepared mount `<ready>/<name>` (with what is mounted inside it) onto `/<name>`
/// of the rootfs; `false` (nothing changed) if that cannot be done.
fn move_in(root: BorrowedFd<'_>, ready: &Path, name: &str) -> bool {
    let Ok(target) = sys::ensure_dir(root, name) else {
        return false;
    };
    let source = ready.join(name).display().to_string();
    let moved = sys::mount(
        Some(&source),
        &sys::fd_path(target.as_fd()),
        None,
        libc::MS_MOVE,
        None,
    );
    if let Err(e) = &moved {
        say!("rootfs: prepared /{name} not used: {e}");
    }
    moved.is_ok()
}

/// A `--tmpfs`: docker's defaults (`noexec,nosuid,nodev`, mode 1777) under the options.
fn tmpfs(root: BorrowedFd<'_>, t: &agent_proto::TmpfsMount) -> Result<(), RootfsError> {
    let (flags, data) = tmpfs_options(&t.options)?;
    let path = t.path.trim_start_matches('/');
    mount_in(root, path, "tmpfs", flags, Some(&data))
}

/// docker's `--tmpfs` options as mount flags and tmpfs data.
fn tmpfs_options(options: &str) -> Result<(c_ulong, String), RootfsError> {
    let mut flags = SECURE;
    let mut data: Vec<&str> = Vec::new();
    for o in options.split(',').filter(|o| !o.is_empty()) {
        match o {
            "rw" => flags &= !MS_RDONLY,
            "ro" => flags |= MS_RDONLY,
            "exec" => flags &= !MS_NOEXEC,
            "noexec" => flags |= MS_NOEXEC,
            "suid" => flags &= !MS_NOSUID,
            "nosuid" => flags |= MS_NOSUID,
            "dev" => flags &= !MS_NODEV,
            "nodev" => flags |= MS_NODEV,
            o if ["size=", "mode=", "uid=", "gid=", "nr_inodes="]
                .iter()
                .any(|p| o.starts_with(p))
                && o.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'=') =>
            {
                data.push(o);
            }
            o => return Err(RootfsError::Invalid(format!("tmpfs option {o:?}"))),
        }
    }
    if !data.iter().any(|d| d.starts_with("mode=")) {
        data.push("mode=1777");
    }
    Ok((flags, data.join(",")))
}

/// docker's `/dev/shm` size when `--shm-size` is not given.
const DEFAULT_SHM: u64 = 64 << 20;

/// Mounts a fresh `fstype` on directory `path` of the rootfs (created if missing).
fn mount_in(
    root: BorrowedFd<'_>,
    path: &str,
    fstype: &str,
    flags: c_ulong,
    data: Option<&str>,
) -> Result<(), RootfsError> {
    let dir = sys::ensure_dir(root, path).map_err(step(format!("create /{path}")))?;
    sys::mount(
        Some(fstype),
        &sys::fd_path(dir.as_fd()),
        Some(fstype),
        flags,
        data,
    )
    .map_err(step(format!("mount {fstype} on /{path}")))
}

/// The container's `/dev`, with a `/dev/shm` of `shm_size` bytes and the `--device`s.
fn dev(
    root: BorrowedFd<'_>,
    shm_size: Option<u64>,
    devices: &[agent_proto::DeviceMount],
) -> Result<(), RootfsError> {
    let data = "mode=755,size=65536k";
    mount_in(root, "dev", "tmpfs", MS_NOSUID | MS_NODEV, Some(data))?;
    // Reopened: the handle from before the mount refers to the directory underneath.
    let dev: OwnedFd = sys::ensure_dir(root, "dev").map_err(step("open /dev"))?;
    let dev = dev.as_fd();
    for name in DEVICES {
        bind_device(root, &format!("/dev/{name}"), &format!("dev/{name}"))?;
    }
    for &(name, target) in LINKS {
        sys::symlink_at(target, dev, name).map_err(step(format!("link /dev/{name}")))?;
    }
    let pts = "newinstance,ptmxmode=0666,mode=0620,gid=5";
    mount_in(root, "dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, Some(pts))?;
    let shm = shm_data(shm_size.unwrap_or(DEFAULT_SHM));
    mount_in(root, "dev/shm", "tmpfs", SECURE, Some(&shm))?;
    // POSIX message queues need the kernel's mqueue (and, on a host, an IPC namespace):
    // useful, not essential.
    if let Err(e) = mount_in(root, "dev/mqueue", "mqueue", SECURE, None) {
        say!("rootfs: no /dev/mqueue: {}", crate::chain(&e));
    }
    bind_devices(root, devices)
}

/// The tmpfs data of a `/dev/shm` of `size` bytes.
fn shm_data(size: u64) -> String {
    format!("mode=1777,size={size}")
}

/// Bind-mounts the `--device`s into the rootfs's `/dev`.
fn bind_devices(
    root: BorrowedFd<'_>,
    devices: &[agent_proto::DeviceMount],
) -> Result<(), RootfsError> {
    for d in devices {
        bind_device(root, &d.source, d.target.trim_start_matches('/'))?;
    }
    Ok(())
}

/// Bind-mounts the device node `source` of the agent's tree onto `target` (relative to the
/// root, created as an empty file).
fn bind_device(root: BorrowedFd<'_>, source: &str, target: &str) -> Result<(), RootfsError> {
    let meta = fs::metadata(source).map_err(step(format!("find the device {source}")))?;
    let kind = meta.file_type();
    if !(kind.is_char_device() || kind.is_block_device()) {
        return Err(RootfsError::Invalid(format!("{source} is not a device")));
    }
    let node = sys::ensure_file(root, target).map_err(step(format!("create /{target}")))?;
    let path = sys::fd_path(node.as_fd());
    sys::mount(Some(source), &path, None, MS_BIND, None)
        .map_err(step(format!("bind-mount {source} on /{target}")))?;
    Ok(())
}

/// `/tmp` comes from the image (writes land in the scratch disk, as with docker); created
/// world-writable and sticky if the image has none.
fn tmp(root: BorrowedFd<'_>) -> Result<(), RootfsError> {
    match sys::open_in_root(root, "tmp", libc::O_PATH, 0) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => sys::mkdir_at(root, "tmp", 0o1777)
            .and_then(|()| sys::chmod_at(root, "tmp", 0o1777))
            .map_err(step("create /tmp")),
        Err(e) => Err(step("open /tmp")(e)),
    }
}

/// Writes hosts, resolv.conf and (if asked) hostname under `<base>/etc` and bind-mounts each
/// onto its place in the rootfs.
fn etc_files(base: &Path, root: BorrowedFd<'_>, spec: &SandboxSpec) -> Result<(), RootfsError> {
    let dir = base.join("etc");
    fs::create_dir_all(&dir).map_err(step(format!("create {}", dir.display())))?;
    let hostname = format!("{}\n", spec.hostname);
    let mut files = vec![
        ("hosts", spec.hosts.as_str()),
        ("resolv.conf", &spec.resolv_conf),
    ];
    if spec.hostname_file {
        files.push(("hostname", &hostname));
    }
    for (name, contents) in files {
        let source = dir.join(name);
        fs::write(&source, contents).map_err(step(format!("write {}", source.display())))?;
        fs::set_permissions(&source, fs::Permissions::from_mode(0o644))
            .map_err(step(format!("chmod {}", source.display())))?;
        let path = format!("etc/{name}");
        let target = sys::ensure_file(root, &path).map_err(step(format!("create /{path}")))?;
        let source = source.display().to_string();
        sys::mount(
            Some(&source),
            &sys::fd_path(target.as_fd()),
            None,
            MS_BIND,
            None,
        )
        .map_err(step(format!("bind-mount /{path}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tmpfs_options_as_docker_reads_them() {
        let (f, d) = tmpfs_options("").unwrap();
        assert_eq!((f, d.as_str()), (SECURE, "mode=1777"));
        let (f, d) = tmpfs_options("exec,size=1m,mode=700").unwrap();
        assert_eq!(f, MS_NOSUID | MS_NODEV);
        assert_eq!(d, "size=1m,mode=700");
        assert_eq!(tmpfs_options("ro").unwrap().0 & MS_RDONLY, MS_RDONLY);
        assert!(tmpfs_options("size=1m,foo").is_err());
        assert!(tmpfs_options("size=1m;x").is_err());
    }
}
