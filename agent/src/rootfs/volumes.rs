//! Volumes and bind mounts: in a VM the container's shared directory (virtio-fs, one
//! tag) is mounted in the agent's own tree first and each volume is a directory or file
//! inside it, bind-mounted onto its target; under process isolation each source is a
//! detached mount the host made (`open_tree`, already private, `nodev` and, where asked,
//! read-only throughout) and passed as a descriptor, moved onto its target (a path would
//! not do: the agent's own mounts may hide it, and a mount of the host's namespace cannot
//! be bound into the sandbox's). Every target is resolved inside the rootfs (so an
//! image's symlinks cannot aim a mount outside it) and created as a directory or an empty
//! file to match the source. Every volume is `nodev` (no device cgroup guards a process
//! sandbox: a device node made in a volume must not open); read-only ones are made so
//! after all volumes are in place, so a volume inside a read-only one can still be
//! mounted. A new, empty volume is first filled with what the image has at the target.

use std::fs;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

use agent_proto::{SandboxSpec, VolumeMount};
use libc::{MS_BIND, MS_NODEV, MS_RDONLY, MS_REC, MS_REMOUNT};

use super::{RootfsError, copyup, step, sys};

/// Where the shared directory is mounted, under the agent's base directory.
const SHARE_DIR: &str = "share";

/// The first descriptor the host may pass a volume on (0-2 are stdio, 3 the agent's
/// socket, 4 the workload cgroup).
const FIRST_VOLUME_FD: i32 = 5;

/// Mounts the shared directory (if any) and every volume of `spec`. Every descriptor the
/// host passed is closed, whatever happens, so no workload inherits one.
pub fn mount_all(base: &Path, root: BorrowedFd<'_>, spec: &SandboxSpec) -> Result<(), RootfsError> {
    let result = mount_volumes(base, root, spec);
    for fd in spec.volumes.iter().filter_map(|v| v.fd) {
        // SAFETY: close of a descriptor the host handed over for a volume only (checked
        // to be one of those numbers by `validate`); closing it twice is harmless.
        unsafe { libc::close(fd) };
    }
    result
}

fn mount_volumes(base: &Path, root: BorrowedFd<'_>, spec: &SandboxSpec) -> Result<(), RootfsError> {
    let share = match &spec.share {
        Some(tag) => Some(mount_share(base, tag)?),
        None => None,
    };
    for v in &spec.volumes {
        let source = match (v.fd, &share) {
            (Some(fd), _) => Source::Passed(fd),
            (None, Some(dir)) => Source::Path(dir.join(&v.source)),
            (None, None) => {
                return Err(RootfsError::Invalid(format!(
                    "volume {} has neither a descriptor nor a shared directory",
                    v.target
                )));
            }
        };
        mount_one(root, &source, v)?;
    }
    for v in &spec.volumes {
        restrict(root, v)?;
    }
    Ok(())
}

/// Where a volume's content comes from.
enum Source {
    /// A path of the agent's tree (inside the shared directory).
    Path(PathBuf),
    /// A detached mount inherited as a descriptor.
    Passed(i32),
}

impl Source {
    /// A path that reaches the content.
    fn path(&self) -> PathBuf {
        match self {
            Source::Path(p) => p.clone(),
            Source::Passed(fd) => PathBuf::from(format!("/proc/self/fd/{fd}")),
        }
    }
}

/// Mounts virtio-fs `tag` at `<base>/share`.
fn mount_share(base: &Path, tag: &str) -> Result<PathBuf, RootfsError> {
    let dir = base.join(SHARE_DIR);
    fs::create_dir_all(&dir).map_err(step(format!("create {}", dir.display())))?;
    sys::mount(Some(tag), &dir, Some("virtiofs"), MS_NODEV, None).map_err(step(format!(
        "mount the shared directory (virtio-fs tag {tag})"
    )))?;
    Ok(dir)
}

/// Opens the mount point of `v` (a directory or a file, made if missing).
fn mount_point(
    root: BorrowedFd<'_>,
    v: &VolumeMount,
    is_dir: bool,
) -> Result<std::os::fd::OwnedFd, RootfsError> {
    let target = v.target.trim_start_matches('/');
    let made = match is_dir {
        true => sys::ensure_dir(root, target),
        false => sys::ensure_file(root, target),
    };
    made.map_err(step(format!("create the mount point {}", v.target)))
}

fn mount_one(root: BorrowedFd<'_>, source: &Source, v: &VolumeMount) -> Result<(), RootfsError> {
    let path = source.path();
    let meta = fs::metadata(&path).map_err(step(format!("find the source of {}", v.target)))?;
    if v.fill && meta.is_dir() {
        fill(root, &v.target, &path)?;
    }
    let at = mount_point(root, v, meta.is_dir())?;
    let what = format!("mount the volume on {}", v.target);
    match source {
        Source::Passed(fd) => sys::move_mount(*fd, at.as_fd()).map_err(step(what)),
        Source::Path(p) => {
            let name = p.to_str().ok_or_else(|| {
                RootfsError::Invalid(format!("volume source {} is not UTF-8", p.display()))
            })?;
            sys::mount(
                Some(name),
                &sys::fd_path(at.as_fd()),
                None,
                MS_BIND | MS_REC,
                None,
            )
            .map_err(step(what))
        }
    }
}

/// The volume's own mount made `nodev` (and read-only where asked). Process isolation's
/// detached mounts are so throughout already; in a VM the guest's own devices are what
/// `nodev` keeps out, and the host's read-only bind under virtiofsd what `:ro` rests on.
fn restrict(root: BorrowedFd<'_>, v: &VolumeMount) -> Result<(), RootfsError> {
    let target = v.target.trim_start_matches('/');
    // Reopened: the mount point's handle from before the mount is what is underneath.
    let at = sys::open_in_root(root, target, libc::O_PATH, 0)
        .map_err(step(format!("reopen {}", v.target)))?;
    let mut flags = MS_REMOUNT | MS_BIND | MS_NODEV;
    if v.read_only {
        flags |= MS_RDONLY;
    }
    sys::mount(None, &sys::fd_path(at.as_fd()), None, flags, None)
        .map_err(step(format!("restrict the volume on {}", v.target)))
}

/// Copies what the image has at `target` (a directory) into the empty volume `volume`.
fn fill(root: BorrowedFd<'_>, target: &str, volume: &Path) -> Result<(), RootfsError> {
    let empty = fs::read_dir(volume)
        .map_err(step(format!("read the volume for {target}")))?
        .next()
        .is_none();
    if !empty {
        return Ok(());
    }
    let inside = target.trim_start_matches('/');
    let flags = libc::O_RDONLY | libc::O_DIRECTORY;
    let from = match sys::open_in_root(root, inside, flags, 0) {
        Ok(fd) => fd,
        // Nothing (or no directory) there in the image: nothing to copy.
        Err(_) => return Ok(()),
    };
    let what = || format!("copy the image's {target} into its volume");
    let to = fs::File::open(volume).map_err(step(what()))?;
    copyup::copy(from.as_fd(), to.as_fd()).map_err(step(what()))
}

/// Checks the volumes of a spec: clean absolute targets; sources passed as descriptors
/// from [`FIRST_VOLUME_FD`] on, or clean paths inside the shared directory.
pub fn validate(spec: &SandboxSpec) -> Result<(), RootfsError> {
    let invalid = |m: String| Err(RootfsError::Invalid(m));
    let clean = |p: &str| {
        !p.contains('\0')
            && p.split('/')
                .filter(|c| !c.is_empty())
                .all(|c| c != "." && c != "..")
    };
    for v in &spec.volumes {
        if !v.target.starts_with('/') || v.target == "/" || !clean(&v.target) {
            return invalid(format!(
                "volume target {:?} is not a clean absolute path",
                v.target
            ));
        }
        let source_ok = match (v.fd, &spec.share) {
            (Some(fd), _) => fd >= FIRST_VOLUME_FD,
            (None, Some(_)) => {
                !v.source.is_empty() && !v.source.starts_with('/') && clean(&v.source)
            }
            (None, None) => false,
        };
        if !source_ok {
            return invalid(format!("volume source {:?} is not valid here", v.source));
        }
    }
    Ok(())
}
