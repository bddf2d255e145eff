//! Warm starts (docs/warm-starts.md): a vm container's VM restored from a template, a
//! snapshot of a guest booted with the container layout ([`SLOTS`] empty disk slots, a
//! vsock device, an unplugged NIC and an unplugged shared-directory slot) whose agent is
//! up and waiting for the host. A container with volumes gets virtiofsd behind the slot
//! at restore, and its guest memory is then a shared copy of the template's. The container's disks go
//! into the slots at restore; the guest learns their sizes from a configuration-change
//! interrupt. The template's agent has a fresh scratch disk mounted ([`SCRATCH_SLOT`]):
//! a container whose scratch disk was never mounted gets a copy of that disk as its own
//! and skips mounting one; such a container's first start uses its image's template
//! (`image_template`) where it can, which has the image's rootfs assembled as well. Templates live under `<cache>/vm-templates/<key>`, keyed by everything the
//! snapshot depends on (kernel, agent initramfs, command line, vCPUs, RAM, layout, VMM
//! version). The first container that needs one makes it, under a lock so that
//! concurrent first runs make it once, and is then restored from it like every later
//! one. A refused template (corrupt, truncated, mismatched) is said so in the VMM's log
//! and made anew.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use vmm::config::{AfterSnapshot, SnapshotPlan};
use vmm::{DiskConfig, MicroVm, VmConfig, VmExit, VsockConfig};

use super::vm::NICS;
use crate::guest::{self, BootRequest};

/// Disk slots in a template: layers plus the scratch disk, as many as a container has.
pub const SLOTS: usize = super::vm::DISK_SLOTS;
/// The slot of the template's own scratch disk (the last), which its agent mounts before
/// the snapshot. A clone whose container disk was never mounted gets a copy of it there
/// and finds its scratch disk mounted; any other clone has its own scratch disk in the
/// slot after its layers, and this one empty.
pub const SCRATCH_SLOT: usize = SLOTS - 1;
/// The template's scratch disk, beside the snapshot, and the digest of its data.
const SCRATCH_DISK: &str = "scratch.ext4";
const SCRATCH_DIGEST: &str = "scratch.sha256";
/// The console line at which the template is taken.
const READY: &str = "husk-agent: ready";
/// The template-making VM's vsock socket (relative to the VMM's working directory), so
/// that the shim waiting on the container's socket never meets it.
pub(super) const MAKER_VSOCK: &str = "template.vsock";
/// Overrides where templates live.
pub const DIR_ENV: &str = "HUSK_VM_TEMPLATES";

/// Why a warm start did not happen.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// More disks than slots.
    #[error("{0} disks: a template has {SLOTS} disk slots")]
    TooManyDisks(usize),
    /// The container's NICs do not match the template's.
    #[error("{0} NICs: a template has {NICS}")]
    Nics(usize),
    /// The container's shared-directory slots do not match the template's.
    #[error("{0} shared-directory slots: a template has 1")]
    FsSlots(usize),
    /// The template's shared-directory slot could not be described.
    #[error(transparent)]
    FsSlot(vmm::devices::virtio::fs::Error),
    /// The VM config could not be made.
    #[error(transparent)]
    Config(#[from] guest::Error),
    /// The template directory or its lock could not be used.
    #[error("cannot use the template directory {0}")]
    Io(PathBuf, #[source] std::io::Error),
    /// Booting the template guest failed.
    #[error("cannot boot the template guest")]
    Boot(#[source] vmm::Error),
    /// The template guest ended before its snapshot.
    #[error("the template guest ended ({0}) before its agent was ready; see {1}")]
    NotSaved(VmExit, PathBuf),
    /// Restoring failed (see [`TemplateError::refused`]).
    #[error("cannot restore the template")]
    Restore(#[source] vmm::Error),
    /// The container's disks end without a writable scratch disk.
    #[error("the container has no scratch disk")]
    NoScratch,
    /// The template's scratch disk is missing or not what was saved.
    #[error("the template's scratch disk {0} {1}")]
    ScratchRefused(PathBuf, &'static str),
    /// A scratch disk could not be read, copied or made.
    #[error("cannot use the scratch disk {0}")]
    Scratch(PathBuf, #[source] std::io::Error),
    /// The template's scratch disk could not be made.
    #[error("cannot make the template's scratch disk")]
    MakeScratch(#[source] rootfs::layer::DiskError),
    /// An image's first use makes no image template (its second does).
    #[error("the image's first run here: its template is made on its next")]
    FirstUse,
    /// An image template needs a never-mounted scratch disk.
    #[error("the container's scratch disk has been used")]
    ScratchUsed,
    /// The image template guest's agent did not prepare the image.
    #[error("the image template guest's agent did not prepare the image")]
    Prepare(#[source] crate::agent_client::ClientError),
    /// The image template maker's VM thread panicked.
    #[error("the image template maker's VM thread ended abnormally")]
    MakerPanicked,
    /// The image template guest could not be snapshotted.
    #[error("cannot snapshot the image template guest")]
    Snapshot(#[source] vmm::snapshot::Error),
    /// A container with as many disks as slots, whose scratch disk is its own: it would
    /// take the template's scratch slot.
    #[error("{0} disks of a used scratch disk's container: the template's scratch slot is taken")]
    ScratchSlot(usize),
}

impl TemplateError {
    /// Whether restoring failed because of the template itself (made anew then).
    pub(super) fn refused(&self) -> bool {
        match self {
            TemplateError::Restore(e) => matches!(
                e,
                vmm::Error::Snapshot(_)
                    | vmm::Error::VirtioRestore(_)
                    | vmm::Error::SerialRestore(_)
            ),
            TemplateError::ScratchRefused(..) => true,
            _ => false,
        }
    }
}

/// The template guest's command line: nothing container-specific (the hostname comes
/// with the host's setup), the scratch disk to mount before ready, and a quiet kernel log
/// (see [`super::vm::QUIET`]; a restore does not boot, so profiles of warm runs lose
/// nothing).
fn cmdline() -> String {
    format!(
        "husk.transport=vsock husk.scratch={} {}",
        super::vm::disk_name(SCRATCH_SLOT),
        super::vm::QUIET
    )
}

/// Where templates live: `$HUSK_VM_TEMPLATES`, else `<cache>/vm-templates`.
pub fn templates_dir() -> Option<PathBuf> {
    std::env::var_os(DIR_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| crate::paths::cache_dir().map(|c| c.join("vm-templates")))
}

/// The VM `req` describes (the container's disks in the first slots), restored from its
/// template in `templates`, which is made first if it is missing or refused, or from the
/// template of its image for a container's first start (`image_template`); and what the
/// guest has ready of the container's rootfs (see [`SCRATCH_SLOT`]).
pub fn restore(
    req: &BootRequest,
    templates: &Path,
    warm: &Warm,
) -> Result<(MicroVm, Ready), TemplateError> {
    if req.disks.len() > SLOTS {
        return Err(TemplateError::TooManyDisks(req.disks.len()));
    }
    let scratch = match req.disks.last() {
        Some(d) if !d.read_only => d.path.clone(),
        _ => return Err(TemplateError::NoScratch),
    };
    let size = fs::metadata(&scratch)
        .map_err(|e| TemplateError::Scratch(scratch.clone(), e))?
        .len();
    let mut config = guest::vm_config(&BootRequest {
        cmdline: cmdline(),
        ..req.clone()
    })?;
    config.disks.resize(SLOTS, DiskConfig::empty_slot());
    if config.nets.len() != NICS {
        return Err(TemplateError::Nics(config.nets.len()));
    }
    if config.fs.len() != 1 {
        return Err(TemplateError::FsSlots(config.fs.len()));
    }
    config.profile = req.profile.clone();
    // The VMM binary too: its version number does not change with every build.
    let vmm_binary = std::env::current_exe()
        .map(|p| guest::file_identity(&p))
        .unwrap_or_default();
    let label = format!(
        "husk container template, {SLOTS} disk slots, a {size}-byte scratch disk mounted from slot {SCRATCH_SLOT}, {NICS} NICs, 1 shared-directory slot; vmm {vmm_binary}; {}",
        guest::snapshot_label(&config)
    );
    let key = key(&label, config.vcpus, config.mem_mib);
    let dir = templates.join(&key);
    crate::timing::mark("vmm.restore");
    let base = Base {
        config: &config,
        templates,
        key: &key,
        dir: &dir,
        label: &label,
        scratch_size: size,
    };
    let layers = &req.disks[..req.disks.len() - 1];
    if rootfs::layer::never_mounted(&scratch).unwrap_or(false) {
        match super::image_template::restore(&base, layers, &scratch, warm) {
            Ok(vm) => return Ok((vm, Ready::Rootfs)),
            Err(e) => eprintln!(
                "husk-vmm: no image template ({}): the container template instead",
                agent_proto::error_chain(&e)
            ),
        }
    }
    let container = Restore {
        config: &config,
        dir: &dir,
        label: &label,
        scratch: &scratch,
        slot: layers.len(),
        image: false,
    };
    let (vm, fresh) = container.or_make(&key, || Ok(()), || make(&base))?;
    Ok((vm, ready(fresh)))
}

/// What an image template's guest reads into its page cache (the container's program,
/// searched in its PATH): what its clones likely start first.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Warm {
    pub programs: Vec<String>,
    pub path: String,
}

/// What a restored guest has ready of the container's rootfs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ready {
    /// Nothing: setup mounts the container's scratch disk and assembles the rootfs.
    Nothing,
    /// The container's scratch disk is mounted (a copy of the template's).
    Scratch,
    /// The image's rootfs is assembled over it (an image template).
    Rootfs,
}

fn ready(fresh: bool) -> Ready {
    match fresh {
        true => Ready::Scratch,
        false => Ready::Nothing,
    }
}

/// The container template a VM is restored from or an image template is made from.
pub(super) struct Base<'a> {
    pub config: &'a VmConfig,
    pub templates: &'a Path,
    pub key: &'a str,
    pub dir: &'a Path,
    pub label: &'a str,
    /// Bytes of the container's scratch disk (the template's has as many).
    pub scratch_size: u64,
}

/// A container's VM to restore from the template in `dir`.
pub(super) struct Restore<'a> {
    pub config: &'a VmConfig,
    pub dir: &'a Path,
    pub label: &'a str,
    /// The container's scratch disk, and the slot it has after its layers.
    pub scratch: &'a Path,
    pub slot: usize,
    /// An image template: only for a never-mounted scratch disk.
    pub image: bool,
}

impl Restore<'_> {
    /// Restores the VM: with a copy of the template's scratch disk as the container's
    /// when the container's was never mounted (it then holds nothing but mkfs's
    /// output), else with the container's own disk after its layers. Returns the VM,
    /// whether its scratch disk is the template's, and how long the restore took.
    pub fn attempt(&self) -> Result<(MicroVm, bool, Duration), TemplateError> {
        let started = Instant::now();
        super::template_gc::stamp(self.dir);
        let template_scratch = checked_scratch(self.dir)?;
        let mut config = self.config.clone();
        let fresh = rootfs::layer::never_mounted(self.scratch).unwrap_or(false);
        if !fresh {
            if self.image {
                return Err(TemplateError::ScratchUsed);
            }
            if self.slot == SCRATCH_SLOT {
                return Err(TemplateError::ScratchSlot(self.slot + 1));
            }
            let vm =
                MicroVm::restore(&config, self.dir, self.label).map_err(TemplateError::Restore)?;
            return Ok((vm, false, started.elapsed()));
        }
        // The copy replaces the container's disk only once the restore has succeeded
        // (the VMM keeps the file it opened across the rename): a refused template
        // leaves the disk never mounted, for the next attempt.
        let copy = self.scratch.with_extension("warm.tmp");
        let failed = |e| {
            let _ = fs::remove_file(&copy);
            TemplateError::Scratch(self.scratch.to_path_buf(), e)
        };
        let _ = fs::remove_file(&copy);
        rootfs::layer::copy_scratch(&template_scratch, &copy).map_err(failed)?;
        config.disks[self.slot] = DiskConfig::empty_slot();
        config.disks[SCRATCH_SLOT] = DiskConfig {
            path: copy.clone(),
            read_only: false,
        };
        let vm = MicroVm::restore(&config, self.dir, self.label).map_err(|e| {
            let _ = fs::remove_file(&copy);
            TemplateError::Restore(e)
        })?;
        fs::rename(&copy, self.scratch).map_err(failed)?;
        Ok((vm, true, started.elapsed()))
    }

    /// Restores the VM ([`Restore::attempt`]), making the template with `make` first if
    /// it is missing (once `missing` agrees) or refused, and says which template it came
    /// from. Returns the VM and whether its scratch disk is the template's.
    pub fn or_make(
        &self,
        key: &str,
        missing: impl FnOnce() -> Result<(), TemplateError>,
        make: impl FnOnce() -> Result<(), TemplateError>,
    ) -> Result<(MicroVm, bool), TemplateError> {
        match self.attempt() {
            Ok(restored) => {
                say_restored(key, &restored, false);
                return Ok((restored.0, restored.1));
            }
            Err(_) if !self.dir.exists() => missing()?,
            Err(e) if e.refused() => eprintln!(
                "husk-vmm: template {} refused ({}): making it anew",
                self.dir.display(),
                agent_proto::error_chain(&e)
            ),
            Err(e) => return Err(e),
        }
        make()?;
        let restored = self.attempt()?;
        say_restored(key, &restored, true);
        Ok((restored.0, restored.1))
    }
}

/// The template's scratch disk in `dir`, if it is there and its data is what was saved.
pub(super) fn checked_scratch(dir: &Path) -> Result<PathBuf, TemplateError> {
    let disk = dir.join(SCRATCH_DISK);
    let Ok(want) = fs::read_to_string(dir.join(SCRATCH_DIGEST)) else {
        return Err(TemplateError::ScratchRefused(disk, "has no digest"));
    };
    match rootfs::layer::data_digest(&disk) {
        Ok(got) if got == want.trim() => Ok(disk),
        Ok(_) => Err(TemplateError::ScratchRefused(
            disk,
            "differs from its digest",
        )),
        Err(_) => Err(TemplateError::ScratchRefused(disk, "cannot be read")),
    }
}

fn say_restored(key: &str, restored: &(MicroVm, bool, Duration), made: bool) {
    eprintln!(
        "husk-vmm: warm start from template {key}{} (restored in {} us){}",
        if made { ", made for this run" } else { "" },
        restored.2.as_micros(),
        if restored.1 {
            "; the container's scratch disk mounted in the template"
        } else {
            ""
        }
    );
}

/// The template's directory name: a digest of everything it depends on.
pub(super) fn key(label: &str, vcpus: u8, mem_mib: u64) -> String {
    let mut h = Sha256::new();
    h.update(label.as_bytes());
    h.update(format!(
        "\nvcpus {vcpus} mem {mem_mib} vmm {}",
        vmm::snapshot::VMM_VERSION
    ));
    let digest = hex::encode(h.finalize());
    format!("{}-{vcpus}x{mem_mib}m", &digest[..16])
}

/// Boots the template guest with empty slots but a fresh scratch disk of `scratch_size`
/// bytes, and snapshots it once its agent is ready (the disk and its digest then join the
/// snapshot), unless another VMM made a good one while this one waited for the lock.
pub(super) fn make(base: &Base) -> Result<(), TemplateError> {
    let Base {
        config,
        templates,
        key,
        label,
        scratch_size,
        ..
    } = *base;
    let Some(_lock) = lock_for_making(templates, key, config, label)? else {
        return Ok(());
    };
    let dir = templates.join(key);
    let console = templates.join(format!("{key}.console.log"));
    let scratch = maker_scratch(templates, key);
    rootfs::layer::create_scratch_disk(&scratch, scratch_size)
        .map_err(TemplateError::MakeScratch)?;
    let mut disks = vec![DiskConfig::empty_slot(); SLOTS];
    disks[SCRATCH_SLOT] = DiskConfig {
        path: scratch.clone(),
        read_only: false,
    };
    let maker = VmConfig {
        profile: None,
        disks,
        vsock: Some(VsockConfig::new(MAKER_VSOCK)),
        nets: super::vm::unplugged_nics(),
        fs: vec![super::vm::fs_slot(false).map_err(TemplateError::FsSlot)?],
        console: vmm::Console::File(console.clone()),
        snapshot_on_console: Some((
            READY.into(),
            SnapshotPlan {
                dir: dir.clone(),
                label: label.into(),
                then: AfterSnapshot::Stop,
            },
        )),
        ..config.clone()
    };
    let started = Instant::now();
    let report = MicroVm::build(&maker)
        .and_then(MicroVm::run)
        .map_err(TemplateError::Boot);
    let _ = fs::remove_file(MAKER_VSOCK);
    let saved = report.and_then(|report| match report.exit {
        VmExit::Snapshotted => Ok(()),
        exit => Err(TemplateError::NotSaved(exit, console)),
    });
    finish_making(saved, &scratch, &dir, key, started)
}

/// Where a maker keeps its template guest's scratch disk until the snapshot is saved:
/// named like the snapshot's own temporary directory, so a killed maker's is cleared.
pub(super) fn maker_scratch(templates: &Path, key: &str) -> PathBuf {
    templates.join(format!(".{key}.tmp-scratch-{}", std::process::id()))
}

/// Ends making template `key` into `dir`: once the guest is `saved`, its scratch disk
/// joins the snapshot (`save_scratch`) and the time it took is said; on any failure the
/// disk is removed.
pub(super) fn finish_making(
    saved: Result<(), TemplateError>,
    scratch: &Path,
    dir: &Path,
    key: &str,
    started: Instant,
) -> Result<(), TemplateError> {
    let saved = saved.and_then(|()| save_scratch(scratch, dir));
    if saved.is_err() {
        let _ = fs::remove_file(scratch);
    }
    saved?;
    eprintln!(
        "husk-vmm: template {key} made in {} ms",
        started.elapsed().as_millis()
    );
    if let Some(templates) = dir.parent() {
        let removed = super::template_gc::prune(templates, key, std::time::SystemTime::now());
        if !removed.is_empty() {
            eprintln!(
                "husk-vmm: removed {} unused template(s): {}",
                removed.len(),
                removed.join(", ")
            );
        }
    }
    Ok(())
}

/// Takes `<key>.lock` in `templates` for making template `key`: `None` if the template is
/// whole by then (another VMM made it while this one waited), else the held lock, with
/// what earlier makers left removed.
pub(super) fn lock_for_making(
    templates: &Path,
    key: &str,
    config: &VmConfig,
    label: &str,
) -> Result<Option<File>, TemplateError> {
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |e| TemplateError::Io(p, e)
    };
    fs::create_dir_all(templates).map_err(io(templates))?;
    let lock_path = templates.join(format!("{key}.lock"));
    let lock = File::create(&lock_path).map_err(io(&lock_path))?;
    lock.lock().map_err(io(&lock_path))?;
    let dir = templates.join(key);
    if MicroVm::check_snapshot(config, &dir, label).is_ok() && checked_scratch(&dir).is_ok() {
        return Ok(None);
    }
    remove_leftovers(templates, key);
    Ok(Some(lock))
}

/// Moves the template guest's scratch disk into the snapshot's directory `dir`, then
/// writes its digest (last: a template without one is refused).
fn save_scratch(scratch: &Path, dir: &Path) -> Result<(), TemplateError> {
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |e| TemplateError::Scratch(p, e)
    };
    let digest = rootfs::layer::data_digest(scratch).map_err(io(scratch))?;
    let disk = dir.join(SCRATCH_DISK);
    fs::rename(scratch, &disk).map_err(io(&disk))?;
    let tmp = dir.join(format!(".{SCRATCH_DIGEST}.tmp"));
    fs::write(&tmp, digest)
        .and_then(|()| fs::rename(&tmp, dir.join(SCRATCH_DIGEST)))
        .map_err(io(dir))
}

/// A refused template and the temporary directories of makers that were killed (only
/// the lock holder makes `key`, so every one found is stale).
pub(super) fn remove_leftovers(templates: &Path, key: &str) {
    let _ = fs::remove_dir_all(templates.join(key));
    let prefix = format!(".{key}.tmp-");
    let Ok(entries) = fs::read_dir(templates) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let path = entry.path();
            let _ = fs::remove_dir_all(&path).or_else(|_| fs::remove_file(&path));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_differ_with_what_the_snapshot_depends_on() {
        let a = key("label", 1, 256);
        assert!(a.ends_with("-1x256m"), "{a}");
        assert_ne!(a, key("another kernel", 1, 256));
        assert_ne!(a, key("label", 1, 512));
        assert_ne!(a, key("label", 2, 256));
        assert_eq!(a, key("label", 1, 256));
    }

    #[test]
    fn leftovers_of_killed_makers_go() {
        let t = tempfile::tempdir().unwrap();
        for name in [".k.tmp-1", ".k.tmp-99", "k", ".other.tmp-1"] {
            fs::create_dir(t.path().join(name)).unwrap();
        }
        fs::write(t.path().join(".k.tmp-scratch-7"), "").unwrap();
        remove_leftovers(t.path(), "k");
        let mut left: Vec<_> = fs::read_dir(t.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, vec![".other.tmp-1"]);
    }
}
