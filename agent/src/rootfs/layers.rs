//! The bottom half of the rootfs: each layer device mounted read-only at
//! `<base>/layers/<n>`, the scratch ext4 at `<base>/scratch`, and the overlay of them at
//! `<base>/rootfs`. overlayfs wants the topmost lower first in `lowerdir`, so the spec's
//! bottom-first list is reversed.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use agent_proto::SandboxSpec;

use super::{RootfsError, step, sys};

/// Mounts the layers, the scratch disk and the overlay; returns the overlay's mount point.
pub fn mount_overlay(base: &Path, spec: &SandboxSpec) -> Result<PathBuf, RootfsError> {
    let mut lowers = Vec::with_capacity(spec.layers.len());
    for (n, device) in spec.layers.iter().enumerate() {
        let target = base.join("layers").join(n.to_string());
        mkdir(&target)?;
        wait_for_capacity(device)?;
        if spec.guest.is_some() {
            limit_read_ahead(device);
        }
        sys::mount(
            Some(device),
            &target,
            Some(&spec.layer_fstype),
            libc::MS_RDONLY,
            None,
        )
        .map_err(step(format!(
            "mount layer {n} ({device}, {}) read-only on {}",
            spec.layer_fstype,
            target.display()
        )))?;
        lowers.push(target);
    }
    if lowers.is_empty() {
        // An image without layers: overlay needs one lower, so an empty one.
        let empty = base.join("empty");
        mkdir(&empty)?;
        lowers.push(empty);
    }
    let scratch = base.join("scratch");
    mkdir(&scratch)?;
    wait_for_capacity(&spec.scratch)?;
    sys::mount(Some(&spec.scratch), &scratch, Some("ext4"), 0, None).map_err(step(format!(
        "mount the scratch disk {} (ext4) on {}",
        spec.scratch,
        scratch.display()
    )))?;
    let (upper, work) = (scratch.join("upper"), scratch.join("work"));
    mkdir(&upper)?;
    mkdir(&work)?;
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
