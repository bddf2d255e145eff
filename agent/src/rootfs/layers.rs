//! The bottom half of the rootfs: each layer device mounted read-only at
//! `<base>/layers/<n>`, docker's init layer at `<base>/init`, the scratch ext4 at
//! `<base>/scratch` (or prepared at `<base>/ready/scratch` in a warm-start template), and
//! the overlay of them at `<base>/rootfs`. overlayfs wants the
//! topmost lower first in `lowerdir`, so the bottom-first list is reversed.

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use agent_proto::SandboxSpec;

use super::{RootfsError, step, sys};

/// The image's side of the overlay.
pub struct Lowers<'a> {
    /// Layer devices, lowest first, and their filesystem type.
    pub layers: &'a [String],
    pub fstype: &'a str,
    /// A VM's disks (their readahead is lowered).
    pub vm: bool,
    /// The init layer has `/etc/hostname`.
    pub hostname_file: bool,
}

/// Mounts the layers and the overlay of them over `scratch`'s `upper/` and `work/` (see
/// [`scratch`]); returns the overlay's mount point.
pub fn mount_overlay(base: &Path, image: &Lowers, scratch: &Path) -> Result<PathBuf, RootfsError> {
    let mut lowers = Vec::with_capacity(image.layers.len());
    for (n, device) in image.layers.iter().enumerate() {
        let target = base.join("layers").join(n.to_string());
        mkdir(&target)?;
        wait_for_capacity(device)?;
        if image.vm {
            limit_read_ahead(device);
        }
        sys::mount(
            Some(device),
            &target,
            Some(image.fstype),
            libc::MS_RDONLY,
            None,
        )
        .map_err(step(format!(
            "mount layer {n} ({device}, {}) read-only on {}",
            image.fstype,
            target.display()
        )))?;
        lowers.push(target);
    }
    lowers.push(init_layer(base, image.hostname_file)?);
    let (upper, work) = (scratch.join("upper"), scratch.join("work"));
    let rootfs = base.join("rootfs");
    mkdir(&rootfs)?;
    let options = overlay_options(&lowers, &upper, &work);
    // nodev: device nodes in the image or made by the workload cannot be opened (see
    // `inside`: the container's devices are bind mounts).
    let flags = libc::MS_NODEV;
    sys::mount(
        Some("overlay"),
        &rootfs,
        Some("overlay"),
        flags,
        Some(&options),
    )
    .map_err(step(format!(
        "mount the overlay on {} ({options})",
        rootfs.display()
    )))?;
    keep_dirs(&upper, &lowers)?;
    Ok(rootfs)
}

/// Where [`prepare_scratch`] mounts a template's scratch disk (under the agent's base).
const READY_SCRATCH: &str = "ready/scratch";

/// Takes the scratch disk [`prepare_scratch`] mounted, if it did (for an image template).
pub fn take_prepared_scratch(base: &Path) -> Option<PathBuf> {
    SCRATCH_PREPARED
        .swap(false, Ordering::SeqCst)
        .then(|| base.join(READY_SCRATCH))
}

/// Syncs the file system of `dir`.
pub fn sync_fs(dir: &Path) -> Result<(), RootfsError> {
    let file = fs::File::open(dir).map_err(step(format!("open {}", dir.display())))?;
    // SAFETY: syncfs takes a descriptor we own (not O_PATH: syncfs needs a real one).
    if unsafe { libc::syncfs(file.as_raw_fd()) } < 0 {
        return Err(step(format!("sync {}", dir.display()))(
            io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Whether [`prepare_scratch`] mounted one and no setup has taken it yet.
static SCRATCH_PREPARED: AtomicBool = AtomicBool::new(false);

/// A prepared scratch disk that a setup did not take, held open (see [`scratch`]).
static UNUSED_SCRATCH: OnceLock<OwnedFd> = OnceLock::new();

/// Mounts a warm-start template's fresh scratch disk `device` at `<base>/ready/scratch`
/// with `upper/` and `work/` made and synced, before the agent reports ready: a clone whose
/// host attached a copy of that disk (the host's `scratch_ready`) has its scratch mounted
/// already. Mounting ext4 is ~0.5 s of emulated guest-kernel work per container on an
/// emulating KVM.
pub fn prepare_scratch(base: &Path, device: &str) -> Result<(), RootfsError> {
    let dir = base.join(READY_SCRATCH);
    mkdir(&dir)?;
    wait_for_capacity(device)?;
    mount_scratch(device, &dir)?;
    mkdir(&dir.join("upper"))?;
    mkdir(&dir.join("work"))?;
    sync_fs(&dir)?;
    SCRATCH_PREPARED.store(true, Ordering::SeqCst);
    Ok(())
}

/// The scratch disk's mount point (its `upper/` and `work/` made): the prepared one if
/// the host says the disk behind it is the container's (`scratch_ready`), else the
/// container's disk mounted at `<base>/scratch` (also when the host says so but nothing
/// was prepared: the device is then an unmounted copy of the template's disk). A prepared
/// disk not taken stays mounted, held by an open descriptor: unmounting it (or letting
/// `enter` detach it) would write its superblock to a slot the host left empty.
pub fn scratch(base: &Path, spec: &SandboxSpec) -> Result<PathBuf, RootfsError> {
    let prepared = SCRATCH_PREPARED.swap(false, Ordering::SeqCst);
    if prepared && spec.scratch_ready {
        return Ok(base.join(READY_SCRATCH));
    }
    if prepared {
        let dir = base.join(READY_SCRATCH);
        let fd = sys::open_dir(&dir).map_err(step(format!("open {}", dir.display())))?;
        let _ = UNUSED_SCRATCH.set(fd);
    }
    let scratch = base.join("scratch");
    mkdir(&scratch)?;
    wait_for_capacity(&spec.scratch)?;
    mount_scratch(&spec.scratch, &scratch)?;
    mkdir(&scratch.join("upper"))?;
    mkdir(&scratch.join("work"))?;
    Ok(scratch)
}

fn mount_scratch(device: &str, target: &Path) -> Result<(), RootfsError> {
    sys::mount(Some(device), target, Some("ext4"), 0, None).map_err(step(format!(
        "mount the scratch disk {device} (ext4) on {}",
        target.display()
    )))
}

/// The mount points that the rest of the setup binds or mounts over, as docker's init
/// layer has them: empty `/etc/hosts`, `/etc/resolv.conf` and (when it is bind-mounted)
/// `/etc/hostname`, and the `/dev`, `/proc` and `/sys` directories, in a directory of the
/// agent's own tmpfs that becomes the overlay's topmost lower layer. Mount points that
/// were made in the overlay instead were writes to the scratch disk: a copy-up of the
/// image's `/etc` and new files on the journaled ext4, ~0.4 s of emulated guest-kernel
/// work per container on an emulating KVM. Like docker's, the layer hides what the image
/// has under these names (all of it mounted over) and is not part of the container's
/// changes (`diff`, `commit`), while `export` sees its empty files.
fn init_layer(base: &Path, hostname_file: bool) -> Result<PathBuf, RootfsError> {
    let init = base.join("init");
    for dir in ["dev", "proc", "sys", "etc"] {
        let path = init.join(dir);
        mkdir(&path)?;
        set_mode(&path, 0o755)?;
    }
    set_mode(&init, 0o755)?;
    let files = ["hosts", "resolv.conf"];
    let hostname = hostname_file.then_some("hostname");
    for name in files.into_iter().chain(hostname) {
        let path = init.join("etc").join(name);
        fs::File::create(&path).map_err(step(format!("create {}", path.display())))?;
        set_mode(&path, 0o644)?;
    }
    Ok(init)
}

fn set_mode(path: &Path, mode: u32) -> Result<(), RootfsError> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(step(format!("chmod {}", path.display())))
}

/// How long a disk may take to show its capacity.
const CAPACITY_WAIT: Duration = Duration::from_secs(30);

/// Waits until the block device `device` has a capacity. A VM restored from a snapshot
/// had empty disk slots when the snapshot was taken; it learns their sizes from a
/// configuration-change interrupt that the guest kernel handles in a workqueue, which
/// may not have run yet when the host's setup arrives. Devices without a sysfs entry
/// are left for `mount` to judge.
fn wait_for_capacity(device: &str) -> Result<(), RootfsError> {
    let Some(name) = Path::new(device).file_name() else {
        return Ok(());
    };
    let size = Path::new("/sys/class/block").join(name).join("size");
    let started = Instant::now();
    loop {
        match fs::read_to_string(&size) {
            Err(_) => return Ok(()),
            Ok(s) if s.trim() != "0" => return Ok(()),
            Ok(_) if started.elapsed() > CAPACITY_WAIT => {
                return Err(RootfsError::Device {
                    what: "disk".into(),
                    device: device.into(),
                    problem: format!("still empty after {CAPACITY_WAIT:?}"),
                });
            }
            Ok(_) => std::thread::sleep(Duration::from_millis(2)),
        }
    }
}

/// Readahead of a VM's layer disks, in KiB (the kernel's default is 128).
const VM_LAYER_READ_AHEAD_KB: &str = "32";

/// Lowers a VM's layer disk's readahead to [`VM_LAYER_READ_AHEAD_KB`], best effort. Starting
/// programs is mostly page faults on their files, and each fault reads the window around it
/// into the page cache; every page of that costs ~2 ms of emulated guest-kernel work on an
/// emulating KVM. Measured there for `husk/busybox true`: 128 KiB read 1.5 MiB in 20
/// requests for the first exec, 32 KiB 0.9 MiB in 34, and the first exec took ~0.3 s less.
/// Not done under process isolation, where the layers are the host's loop devices.
fn limit_read_ahead(device: &str) {
    let Some(name) = Path::new(device).file_name() else {
        return;
    };
    let knob = Path::new("/sys/class/block")
        .join(name)
        .join("queue/read_ahead_kb");
    let _ = fs::write(knob, VM_LAYER_READ_AHEAD_KB);
}

/// Keeps handles on the upper and lower directories, which the archive tool reads after
/// the agent has left this tree (docker's `diff` and `commit`).
fn keep_dirs(upper: &Path, lowers: &[PathBuf]) -> Result<(), RootfsError> {
    let open = |p: &Path| sys::open_dir(p).map_err(step(format!("open {}", p.display())));
    let kept = super::KeptDirs {
        upper: open(upper)?,
        lowers: lowers
            .iter()
            .rev()
            .map(|p| open(p))
            .collect::<Result<_, _>>()?,
    };
    // Setup runs once (see `setup`), so this is the first and only value.
    let _ = super::KEPT.set(kept);
    Ok(())
}

/// `lowerdir=<top>:...:<bottom>,upperdir=..,workdir=..` from bottom-first lowers.
fn overlay_options(lowers: &[PathBuf], upper: &Path, work: &Path) -> String {
    let lowerdir: Vec<String> = lowers
        .iter()
        .rev()
        .map(|p| p.display().to_string())
        .collect();
    format!(
        "lowerdir={},upperdir={},workdir={}",
        lowerdir.join(":"),
        upper.display(),
        work.display()
    )
}

fn mkdir(path: &Path) -> Result<(), RootfsError> {
    fs::create_dir_all(path).map_err(step(format!("create {}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowerdir_lists_the_top_layer_first() {
        let lowers: Vec<PathBuf> = ["/b/0", "/b/1", "/b/2"].iter().map(PathBuf::from).collect();
        assert_eq!(
            overlay_options(&lowers, Path::new("/s/upper"), Path::new("/s/work")),
            "lowerdir=/b/2:/b/1:/b/0,upperdir=/s/upper,workdir=/s/work"
        );
    }
}
