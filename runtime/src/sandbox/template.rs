//! Warm starts (docs/warm-starts.md): a vm container's VM restored from a template, a
//! snapshot of a guest booted with the container layout ([`SLOTS`] empty disk slots, a
//! vsock device, an unplugged NIC and an unplugged shared-directory slot) whose agent is
//! up and waiting for the host. A container with volumes gets virtiofsd behind the slot
//! at restore, and its guest memory is then a shared copy of the template's. The container's disks go
//! into the slots at restore; the guest learns their sizes from a configuration-change
//! interrupt. Templates live under `<cache>/vm-templates/<key>`, keyed by everything the
//! snapshot depends on (kernel, agent initramfs, command line, vCPUs, RAM, layout, VMM
//! version). The first container that needs one makes it, under a lock so that
//! concurrent first runs make it once, and is then restored from it like every later
//! one. A refused template (corrupt, truncated, mismatched) is said so in the VMM's log
//! and made anew.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::time::Instant;

use sha2::{Digest, Sha256};
use vmm::config::{AfterSnapshot, SnapshotPlan};
use vmm::{DiskConfig, MicroVm, VmConfig, VmExit, VsockConfig};

use super::vm::NICS;
use crate::guest::{self, BootRequest};

/// Disk slots in a template: layers plus the scratch disk, as many as a container has.
pub const SLOTS: usize = super::vm::DISK_SLOTS;
/// The template guest's command line: nothing container-specific (the hostname comes
/// with the host's setup).
const CMDLINE: &str = "husk.transport=vsock";
/// The console line at which the template is taken.
const READY: &str = "husk-agent: ready";
/// The template-making VM's vsock socket (relative to the VMM's working directory), so
/// that the shim waiting on the container's socket never meets it.
const MAKER_VSOCK: &str = "template.vsock";
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
    /// Restoring failed for a reason other than the template.
    #[error("cannot restore the template")]
    Restore(#[source] vmm::Error),
}

/// Where templates live: `$HUSK_VM_TEMPLATES`, else `<cache>/vm-templates`.
pub fn templates_dir() -> Option<PathBuf> {
    std::env::var_os(DIR_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| crate::paths::cache_dir().map(|c| c.join("vm-templates")))
}

/// The VM `req` describes (the container's disks in the first slots), restored from its
/// template in `templates`, which is made first if it is missing or refused.
pub fn restore(req: &BootRequest, templates: &Path) -> Result<MicroVm, TemplateError> {
    if req.disks.len() > SLOTS {
        return Err(TemplateError::TooManyDisks(req.disks.len()));
    }
    let mut config = guest::vm_config(&BootRequest {
        cmdline: CMDLINE.into(),
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
        "husk container template, {SLOTS} disk slots, {NICS} NICs, 1 shared-directory slot; vmm {vmm_binary}; {}",
        guest::snapshot_label(&config)
    );
    let key = key(&label, config.vcpus, config.mem_mib);
    let dir = templates.join(&key);
    let started = Instant::now();
    crate::timing::mark("vmm.restore");
    match MicroVm::restore(&config, &dir, &label) {
        Ok(vm) => {
            say_restored(&key, started, false);
            return Ok(vm);
        }
        Err(_) if !dir.exists() => {}
        Err(e) if refused(&e) => eprintln!(
            "husk-vmm: template {} refused ({}): making it anew",
            dir.display(),
            agent_proto::error_chain(&e)
        ),
        Err(e) => return Err(TemplateError::Restore(e)),
    }
    make(&config, templates, &key, &label)?;
    let started = Instant::now();
    let vm = MicroVm::restore(&config, &dir, &label).map_err(TemplateError::Restore)?;
    say_restored(&key, started, true);
    Ok(vm)
}

fn say_restored(key: &str, started: Instant, made: bool) {
    eprintln!(
        "husk-vmm: warm start from template {key}{} (restored in {} us)",
        if made { ", made for this run" } else { "" },
        started.elapsed().as_micros()
    );
}

/// Whether a restore failed because of the template itself.
fn refused(e: &vmm::Error) -> bool {
    matches!(
        e,
        vmm::Error::Snapshot(_) | vmm::Error::VirtioRestore(_) | vmm::Error::SerialRestore(_)
    )
}

/// The template's directory name: a digest of everything it depends on.
fn key(label: &str, vcpus: u8, mem_mib: u64) -> String {
    let mut h = Sha256::new();
    h.update(label.as_bytes());
    h.update(format!(
        "\nvcpus {vcpus} mem {mem_mib} vmm {}",
        vmm::snapshot::VMM_VERSION
    ));
    let digest = hex::encode(h.finalize());
    format!("{}-{vcpus}x{mem_mib}m", &digest[..16])
}

/// Boots the template guest with empty slots and snapshots it once its agent is ready,
/// unless another VMM made a good one while this one waited for the lock.
fn make(config: &VmConfig, templates: &Path, key: &str, label: &str) -> Result<(), TemplateError> {
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |e| TemplateError::Io(p, e)
    };
    fs::create_dir_all(templates).map_err(io(templates))?;
    let lock_path = templates.join(format!("{key}.lock"));
    let lock = File::create(&lock_path).map_err(io(&lock_path))?;
    lock.lock().map_err(io(&lock_path))?;
    let dir = templates.join(key);
    if MicroVm::check_snapshot(config, &dir, label).is_ok() {
        return Ok(());
    }
    remove_leftovers(templates, key);
    let console = templates.join(format!("{key}.console.log"));
    let maker = VmConfig {
        profile: None,
        disks: vec![DiskConfig::empty_slot(); SLOTS],
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
    let report = report?;
    if report.exit != VmExit::Snapshotted {
        return Err(TemplateError::NotSaved(report.exit, console));
    }
    eprintln!(
        "husk-vmm: template {key} made in {} ms",
        started.elapsed().as_millis()
    );
    Ok(())
}

/// A refused template and the temporary directories of makers that were killed (only
/// the lock holder makes `key`, so every one found is stale).
fn remove_leftovers(templates: &Path, key: &str) {
    let _ = fs::remove_dir_all(templates.join(key));
    let prefix = format!(".{key}.tmp-");
    let Ok(entries) = fs::read_dir(templates) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = fs::remove_dir_all(entry.path());
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
        remove_leftovers(t.path(), "k");
        let mut left: Vec<_> = fs::read_dir(t.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, vec![".other.tmp-1"]);
    }
}
