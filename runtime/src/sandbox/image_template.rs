//! Image templates (docs/warm-starts.md): a second snapshot per image, of a guest restored
//! from the container template with the image's layer disks in their slots and a copy of
//! the template's scratch disk in its slot, taken once its agent has assembled the
//! image's rootfs (`PrepareImage`: the layers, the overlay over the scratch disk, `/proc`,
//! `/sys` and `/dev` moved in). A container's first start restores it with a copy of its
//! scratch disk, and the agent's setup does only the container's part (its files, mounts,
//! network, identity). Keyed by the container template's label and every layer disk
//! (its file's name, which is the layer's digest, and size); made by the second container
//! of the image that needs it (the first only leaves a mark: see [`first_use`]), under a
//! lock, like the container template.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use vmm::config::{AfterSnapshot, SnapshotPlan};
use vmm::{DiskConfig, MicroVm, VmConfig, VmExit, VsockConfig};

use super::template::{
    Base, MAKER_VSOCK, Restore, SCRATCH_SLOT, TemplateError, Warm, checked_scratch, finish_making,
    key, lock_for_making, make, maker_scratch,
};
use crate::agent_client::{AgentClient, Endpoint};

/// How long the maker waits for the restored guest's agent to answer.
const CONNECT: Duration = Duration::from_secs(60);
/// How long the guest is left idle between the agent's reply and the snapshot.
const SETTLE: Duration = Duration::from_millis(300);
/// How long the agent may take to assemble the image's rootfs.
const PREPARE: Duration = Duration::from_secs(300);

/// The container's VM restored from its image's template (made first if it is missing or
/// refused). Only for a container whose scratch disk was never mounted.
pub(super) fn restore(
    base: &Base,
    layers: &[vmm::DiskConfig],
    scratch: &Path,
    warm: &Warm,
) -> Result<MicroVm, TemplateError> {
    // A layer disk's file is named by its content's digest: the same image is the same
    // template under every state directory.
    let identities: Vec<String> = layers.iter().map(|d| layer_identity(&d.path)).collect();
    let label = format!("{}; image layers [{}]", base.label, identities.join(", "));
    let key = format!(
        "{}-image",
        key(&label, base.config.vcpus, base.config.mem_mib)
    );
    let dir = base.templates.join(&key);
    let container = Restore {
        config: base.config,
        dir: &dir,
        label: &label,
        scratch,
        slot: layers.len(),
        image: true,
    };
    let (vm, _) = container.or_make(
        &key,
        || first_use(base.templates, &key),
        || make_image(base, layers, &key, &label, warm),
    )?;
    Ok(vm)
}

/// Whether image `key` was asked for before: the first time leaves a mark and says no
/// (`FirstUse`), so that an image run once (a build step's, a one-off's) never pays for a
/// template it would not use again; the second makes it.
fn first_use(templates: &Path, key: &str) -> Result<(), TemplateError> {
    let mark = templates.join(format!("{key}.seen"));
    if mark.exists() {
        return Ok(());
    }
    fs::create_dir_all(templates)
        .and_then(|()| fs::write(&mark, ""))
        .map_err(|e| TemplateError::Io(mark, e))?;
    Err(TemplateError::FirstUse)
}

/// A layer disk's name (its content's digest) and size.
fn layer_identity(path: &Path) -> String {
    let len = fs::metadata(path).map_or(0, |m| m.len());
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    format!("{name} {len}")
}

/// Restores the container template with the image's layers and a copy of its scratch
/// disk, has the agent prepare the image, and snapshots the guest into
/// `<templates>/<key>` (with its scratch disk), unless another VMM made a good one while
/// this one waited for the lock.
fn make_image(
    base: &Base,
    layers: &[DiskConfig],
    key: &str,
    label: &str,
    warm: &Warm,
) -> Result<(), TemplateError> {
    let templates = base.templates;
    let Some(_lock) = lock_for_making(templates, key, base.config, label)? else {
        return Ok(());
    };
    let dir = templates.join(key);
    if MicroVm::check_snapshot(base.config, base.dir, base.label).is_err()
        || checked_scratch(base.dir).is_err()
    {
        make(base)?;
    }
    let started = Instant::now();
    let scratch = maker_scratch(templates, key);
    rootfs::layer::copy_scratch(&checked_scratch(base.dir)?, &scratch)
        .map_err(|e| TemplateError::Scratch(scratch.clone(), e))?;
    let saved = maker_config(base, layers, key, &scratch)
        .and_then(|maker| run_maker(base, (layers, warm), &maker, &dir, label));
    finish_making(saved, &scratch, &dir, key, started)
}

/// The image template maker's VM: the container template's, with the image's layers,
/// the scratch disk copy, its own vsock socket and console log, no NIC or shared
/// directory plugged.
fn maker_config(
    base: &Base,
    layers: &[DiskConfig],
    key: &str,
    scratch: &Path,
) -> Result<VmConfig, TemplateError> {
    let mut disks = vec![DiskConfig::empty_slot(); base.config.disks.len()];
    disks[..layers.len()].clone_from_slice(layers);
    disks[SCRATCH_SLOT] = DiskConfig {
        path: scratch.to_path_buf(),
        read_only: false,
    };
    Ok(VmConfig {
        profile: None,
        disks,
        vsock: Some(VsockConfig::new(MAKER_VSOCK)),
        nets: super::vm::unplugged_nics(),
        // Never the container's virtiofsd: the template has an unplugged slot.
        fs: vec![super::vm::fs_slot(false).map_err(TemplateError::FsSlot)?],
        console: vmm::Console::File(base.templates.join(format!("{key}.console.log"))),
        ..base.config.clone()
    })
}

/// Runs the maker VM: the agent prepares the image, then the VMM saves the snapshot into
/// `dir` and stops. If the agent fails, the VM is stopped the same way into a scratch
/// directory that is then removed (the VMM's one way to end a guest from outside).
fn run_maker(
    base: &Base,
    (layers, warm): (&[DiskConfig], &Warm),
    maker: &VmConfig,
    dir: &Path,
    label: &str,
) -> Result<(), TemplateError> {
    let _ = fs::remove_file(MAKER_VSOCK);
    let vm = MicroVm::restore(maker, base.dir, base.label).map_err(TemplateError::Restore)?;
    let control = vm.control();
    let running = std::thread::spawn(move || vm.run());
    // The connection is closed and the guest left to settle before the snapshot, so that
    // its vsock device is saved idle, as the container template's is: a guest saved right
    // after the reply answered its clones' first connection only after the VMM's 2 s
    // connect timeout.
    let prepared = prepare(layers.len(), warm).map(drop);
    if prepared.is_ok() {
        std::thread::sleep(SETTLE);
    }
    let target = match prepared {
        Ok(()) => dir.to_path_buf(),
        Err(_) => base
            .templates
            .join(format!(".{}.tmp-abort-{}", base.key, std::process::id())),
    };
    let plan = SnapshotPlan {
        dir: target.clone(),
        label: label.into(),
        then: AfterSnapshot::Stop,
    };
    let answer = control.request_snapshot(plan).recv();
    let report = running.join().map_err(|_| TemplateError::MakerPanicked)?;
    let _ = fs::remove_file(MAKER_VSOCK);
    if target != dir {
        let _ = fs::remove_dir_all(&target);
    }
    prepared?;
    match answer {
        Ok(saved) => saved.map_err(TemplateError::Snapshot)?,
        Err(_) => return Err(TemplateError::MakerPanicked),
    };
    match report.map_err(TemplateError::Boot)?.exit {
        VmExit::Snapshotted => Ok(()),
        exit => Err(TemplateError::NotSaved(exit, dir.to_path_buf())),
    }
}

/// Connects to the maker guest's agent and has it prepare the image of `layers` disks,
/// reading `warm`'s programs into its page cache.
fn prepare(layers: usize, warm: &Warm) -> Result<AgentClient, TemplateError> {
    let endpoint = Endpoint::Vsock {
        uds: MAKER_VSOCK.into(),
        port: agent_proto::CONTROL_PORT,
    };
    let client = AgentClient::connect(&endpoint, CONNECT)
        .map_err(TemplateError::Prepare)?
        .with_request_timeout(PREPARE);
    let devices = (0..layers).map(super::vm::disk_name).collect();
    client
        .prepare_image(devices, "erofs", &warm.programs, &warm.path)
        .map_err(TemplateError::Prepare)?;
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_layer_is_known_by_its_name_and_size_wherever_it_lives() {
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        fs::create_dir_all(&a).unwrap();
        fs::create_dir_all(&b).unwrap();
        fs::write(a.join("0123.erofs"), b"layer").unwrap();
        fs::write(b.join("0123.erofs"), b"layer").unwrap();
        let id = layer_identity(&a.join("0123.erofs"));
        assert_eq!(id, "0123.erofs 5");
        assert_eq!(id, layer_identity(&b.join("0123.erofs")));
        fs::write(b.join("0123.erofs"), b"other layer").unwrap();
        assert_ne!(id, layer_identity(&b.join("0123.erofs")));
    }
}
