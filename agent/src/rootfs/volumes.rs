//! Volumes and bind mounts: in a VM the container's shared directory (virtio-fs, one
//! tag) is mounted in the agent's own tree first and each volume is a directory or file
//! inside it, bind-mounted onto its target; under process isolation each source is a
//! detached mount the host made (`open_tree`) and passed as a descriptor, moved onto its
//! target (a path would not do: the agent's own mounts may hide it, and a mount of the
//! host's namespace cannot be bound into the sandbox's). Every target which is resolved inside the rootfs (so an
//! image's symlinks cannot aim a mount outside it), created as a directory or an empty
//! file to match the source, and made read-only with a second (remount) step where
//! asked. A new, empty volume is first filled with what the image has at the target.

use std::fs;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use agent_proto::{SandboxSpec, VolumeMount};
use libc::{MS_BIND, MS_RDONLY, MS_REC, MS_REMOUNT};

use super::{RootfsError, step, sys};

/// Where the shared directory is mounted, under the agent's base directory.
const SHARE_DIR: &str = "share";

/// Mounts the shared directory (if any) and every volume of `spec`.
pub fn mount_all(base: &Path, root: BorrowedFd<'_>, spec: &SandboxSpec) -> Result<(), RootfsError> {
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
        let mounted = mount_one(root, &source, v);
        if let Source::Passed(fd) = source {
            // SAFETY: close of the descriptor the host handed over for this mount only.
            unsafe { libc::close(fd) };
        }
        mounted?;
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
    sys::mount(Some(tag), &dir, Some("virtiofs"), 0, None).map_err(step(format!(
        "mount the shared directory (virtio-fs tag {tag})"
    )))?;
    Ok(dir)
}

fn mount_one(root: BorrowedFd<'_>, source: &Source, v: &VolumeMount) -> Result<(), RootfsError> {
    let target = v.target.trim_start_matches('/');
    let path = source.path();
    let meta = fs::metadata(&path).map_err(step(format!("find the source of {}", v.target)))?;
    if v.fill && meta.is_dir() {
        fill(root, target, &path)?;
    }
    let open = |root| match meta.is_dir() {
        true => sys::ensure_dir(root, target),
        false => sys::ensure_file(root, target),
    };
    let at = open(root).map_err(step(format!("create the mount point {}", v.target)))?;
    let what = format!("mount the volume on {}", v.target);
    match source {
        Source::Passed(fd) => sys::move_mount(*fd, at.as_fd()).map_err(step(what))?,
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
            .map_err(step(what))?
        }
    }
    if v.read_only {
        // Reopened: the handle from before the mount refers to what is underneath.
        let at = open(root).map_err(step(format!("reopen {}", v.target)))?;
        let flags = MS_REMOUNT | MS_BIND | MS_RDONLY;
        sys::mount(None, &sys::fd_path(at.as_fd()), None, flags, None)
            .map_err(step(format!("make the volume on {} read-only", v.target)))?;
    }
    Ok(())
}

/// Copies what the image has at `target` (a directory) into the empty volume `volume`,
/// with owners and modes, the directory's own included (docker's copy-up).
fn fill(root: BorrowedFd<'_>, target: &str, volume: &Path) -> Result<(), RootfsError> {
    let empty = fs::read_dir(volume)
        .map_err(step(format!("read the volume for /{target}")))?
        .next()
        .is_none();
    if !empty {
        return Ok(());
    }
    let dir = match sys::open_in_root(root, target, libc::O_PATH | libc::O_DIRECTORY, 0) {
        Ok(fd) => fd,
        // Nothing (or no directory) there in the image: nothing to copy.
        Err(_) => return Ok(()),
    };
    let from = sys::fd_path(dir.as_fd());
    let what = || format!("copy the image's /{target} into its volume");
    copy_owner_and_mode(&from, volume).map_err(step(what()))?;
    copy_tree(&from, volume).map_err(step(what()))
}

fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type()?;
        if kind.is_dir() {
            fs::create_dir(&dst)?;
            copy_tree(&src, &dst)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&src)?, &dst)?;
        } else if kind.is_file() {
            fs::copy(&src, &dst)?;
        } else {
            // Device nodes, sockets and FIFOs are not copied (docker copies them; a
            // volume is data).
            continue;
        }
        copy_owner_and_mode(&src, &dst)?;
    }
    Ok(())
}

fn copy_owner_and_mode(src: &Path, dst: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(src)?;
    std::os::unix::fs::lchown(dst, Some(meta.uid()), Some(meta.gid()))?;
    if !meta.file_type().is_symlink() {
        fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    }
    Ok(())
}

/// Checks the volumes of a spec: clean absolute targets; sources absolute (process) or
/// clean and relative (inside the shared directory).
pub fn validate(spec: &SandboxSpec) -> Result<(), String> {
    let clean = |p: &str| {
        !p.contains('\0')
            && p.split('/')
                .filter(|c| !c.is_empty())
                .all(|c| c != "." && c != "..")
    };
    for v in &spec.volumes {
        if !v.target.starts_with('/') || v.target == "/" || !clean(&v.target) {
            return Err(format!(
                "volume target {:?} is not a clean absolute path",
                v.target
            ));
        }
        let source_ok = match (v.fd, &spec.share) {
            (Some(fd), _) => fd > 2,
            (None, Some(_)) => {
                !v.source.is_empty() && !v.source.starts_with('/') && clean(&v.source)
            }
            (None, None) => false,
        };
        if !source_ok {
            return Err(format!("volume source {:?} is not valid here", v.source));
        }
    }
    Ok(())
}
