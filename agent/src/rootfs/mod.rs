//! The container's root filesystem (`Setup`): mounting the read-only layer disks and the
//! scratch disk under `/run/husk`, the overlay of them at `/run/husk/rootfs`, the kernel
//! filesystems and the minimal `/dev` inside it, `/etc/{hosts,hostname,resolv.conf}`, the
//! hostname, the loopback interface up, and finally moving the agent itself into it (pivot_root, old root detached), so
//! every process it starts afterwards runs in the container. Once per sandbox.
//!
//! ```text
//! /run/husk/layers/<n>   layer n (0 = lowest), read-only
//! /run/husk/init         docker's init layer: the mount points below, the topmost lower
//! /run/husk/scratch      the scratch ext4: upper/ and work/ (ready/scratch if prepared)
//! /run/husk/etc          hosts, hostname, resolv.conf (bind-mounted into the rootfs)
//! /run/husk/rootfs       overlay lowerdir=init:<top>:...:<0>,upperdir=scratch/upper,workdir=scratch/work
//! ```

mod copyup;
mod inside;
mod layers;
mod sys;
mod volumes;
mod warm;

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use agent_proto::SandboxSpec;

use crate::console::say;

/// Where everything is assembled (a tmpfs of the agent's: the VM's, or process mode's own).
const BASE: &str = "/run/husk";

/// Errors from assembling the rootfs. Each says what it was doing.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    /// A second `Setup`.
    #[error("the sandbox is already set up")]
    AlreadyDone,
    /// An earlier `Setup` failed half-way; its mounts are still there.
    #[error("an earlier setup failed half-way; the sandbox is not usable")]
    Poisoned,
    /// Outside PID 1 of a sandbox (host-process mode) the agent must not touch mounts.
    #[error("setup needs the agent to be PID 1 of a sandbox (it runs as a host process)")]
    NotSandbox,
    /// The spec is unusable; nothing was changed.
    #[error("invalid sandbox spec: {0}")]
    Invalid(String),
    /// A device named by the spec is missing or not a block device; nothing was changed.
    #[error("{what} {device}: {problem}")]
    Device {
        /// `layer 0`, `scratch`.
        what: String,
        /// The device path.
        device: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The hostname could not be set.
    #[error("cannot set the hostname")]
    Hostname(#[source] crate::hostname::HostnameError),
    /// A network interface could not be configured.
    #[error("cannot configure the network")]
    Network(#[source] crate::network::NetworkError),
    /// The guest could not be made itself (entropy, clock).
    #[error("cannot make the guest its own")]
    Fresh(#[source] crate::fresh::FreshError),
    /// A step failed.
    #[error("cannot {0}")]
    Step(String, #[source] io::Error),
}

/// Shorthand for a failed step.
fn step(what: impl Into<String>) -> impl FnOnce(io::Error) -> RootfsError {
    let what = what.into();
    move |e| RootfsError::Step(what, e)
}

/// The overlay's directories, kept open after the agent has moved into the rootfs.
#[derive(Debug)]
pub struct KeptDirs {
    /// The scratch disk's `upper/`: the container's changes.
    pub upper: OwnedFd,
    /// The lower directories, topmost first.
    pub lowers: Vec<OwnedFd>,
}

/// Set once by a successful `Setup`.
static KEPT: OnceLock<KeptDirs> = OnceLock::new();

/// The overlay's directories (after `Setup`).
pub fn kept_dirs() -> Option<&'static KeptDirs> {
    KEPT.get()
}

/// Whether setup has run: `None` not yet, `Some(true)` done, `Some(false)` failed.
static STATE: Mutex<Option<bool>> = Mutex::new(None);

/// Whether the agent now lives in a container's rootfs.
pub fn is_done() -> bool {
    *STATE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        == Some(true)
}

/// Prepares what every container's sandbox gets, before the agent reports ready: `/proc`,
/// `/sys` and `/dev` (see `inside::prepare`), a warm-start template's `scratch` disk
/// mounted (`layers::prepare_scratch`) and the loopback interface up. Only as PID 1
/// of a sandbox; failures only cost time later.
pub fn prepare(scratch: Option<&str>) {
    if !crate::reset::is_pid1() {
        return;
    }
    if let Err(e) = inside::prepare(Path::new(BASE)) {
        say!("rootfs: nothing prepared: {}", crate::chain(&e));
    }
    if let Some(device) = scratch
        && let Err(e) = layers::prepare_scratch(Path::new(BASE), device)
    {
        say!("rootfs: no scratch disk prepared: {}", crate::chain(&e));
    }
    // Setup brings it up too (a no-op then); done here, a template's clones have it.
    if let Err(e) = crate::loopback::up() {
        say!("cannot bring the loopback interface up early: {e}");
    }
}

/// Assembles the rootfs `spec` describes and moves the agent into it. Refused if it was done
/// before or if the agent is not PID 1; a bad spec or missing device changes nothing.
pub fn setup(spec: &SandboxSpec) -> Result<(), RootfsError> {
    if !crate::reset::is_pid1() {
        return Err(RootfsError::NotSandbox);
    }
    let mut state = STATE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    match *state {
        Some(true) => return Err(RootfsError::AlreadyDone),
        Some(false) => return Err(RootfsError::Poisoned),
        None => {}
    }
    validate(spec)?;
    let result = assemble(spec);
    *state = Some(result.is_ok());
    result
}

/// The image whose rootfs `prepare_image` assembled, waiting for a setup.
#[derive(Debug, PartialEq, Eq)]
struct PreparedImage {
    layers: Vec<String>,
    fstype: String,
}

static IMAGE: Mutex<Option<PreparedImage>> = Mutex::new(None);

/// The image's part of the setup, ahead of it (`PrepareImage`, in an image template's
/// guest): the layers and the overlay of them over the prepared scratch disk (see
/// `layers::prepare_scratch`), `/proc`, `/sys` and `/dev` moved in, the programs `warm`
/// read into the page cache (see `warm`), everything synced (the
/// host snapshots the guest once this is replied to). Refused (changing
/// nothing) without a prepared scratch disk, after a setup, or a second time.
pub fn prepare_image(
    layers: &[String],
    fstype: &str,
    warm: &[String],
    path: &str,
) -> Result<(), RootfsError> {
    if !crate::reset::is_pid1() {
        return Err(RootfsError::NotSandbox);
    }
    let state = STATE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut image = IMAGE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if state.is_some() || image.is_some() {
        return Err(RootfsError::AlreadyDone);
    }
    validate_layers(layers, fstype)?;
    let base = Path::new(BASE);
    let Some(scratch) = layers::take_prepared_scratch(base) else {
        return Err(RootfsError::Invalid("no prepared scratch disk".into()));
    };
    let lowers = layers::Lowers {
        layers,
        fstype,
        vm: true,
        hostname_file: true,
    };
    let rootfs = layers::mount_overlay(base, &lowers, &scratch)?;
    inside::move_prepared(base, &rootfs)?;
    let root = sys::open_dir(&rootfs).map_err(step(format!("open {}", rootfs.display())))?;
    let warmed = warm::programs(std::os::fd::AsFd::as_fd(&root), warm, path);
    layers::sync_fs(&scratch)?;
    *image = Some(PreparedImage {
        layers: layers.to_vec(),
        fstype: fstype.to_owned(),
    });
    say!(
        "rootfs: image of {} layer(s) prepared, {warmed} file(s) read ahead",
        layers.len()
    );
    Ok(())
}

/// The rootfs: the prepared image's if the host says so (`rootfs_ready`, the same
/// layers), else assembled here.
fn rootfs(base: &Path, spec: &SandboxSpec) -> Result<PathBuf, RootfsError> {
    let prepared = IMAGE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    if spec.rootfs_ready {
        let want = PreparedImage {
            layers: spec.layers.clone(),
            fstype: spec.layer_fstype.clone(),
        };
        return match prepared {
            Some(p) if p == want => Ok(base.join("rootfs")),
            _ => Err(RootfsError::Invalid(
                "the host says the rootfs is prepared, and no rootfs of these layers is".into(),
            )),
        };
    }
    let scratch = layers::scratch(base, spec)?;
    let lowers = layers::Lowers {
        layers: &spec.layers,
        fstype: &spec.layer_fstype,
        vm: spec.guest.is_some(),
        hostname_file: spec.hostname_file,
    };
    layers::mount_overlay(base, &lowers, &scratch)
}

fn assemble(spec: &SandboxSpec) -> Result<(), RootfsError> {
    if let Some(identity) = &spec.guest {
        crate::fresh::apply(identity).map_err(RootfsError::Fresh)?;
    }
    let base = Path::new(BASE);
    let rootfs = rootfs(base, spec)?;
    inside::populate(base, &rootfs, spec)?;
    if spec.read_only {
        // The overlay's own mount only: what is mounted inside it keeps its flags.
        let flags = libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | libc::MS_NODEV;
        sys::mount(None, &rootfs, None, flags, None)
            .map_err(step("make the root filesystem read-only"))?;
    }
    crate::hostname::set(&spec.hostname).map_err(RootfsError::Hostname)?;
    crate::loopback::up().map_err(step("bring the loopback interface up"))?;
    crate::network::configure(&spec.interfaces).map_err(RootfsError::Network)?;
    if let Some(pids) = spec.pids_limit {
        crate::cgroup::setup(pids).map_err(step("create the container's cgroup"))?;
    }
    for (key, value) in &spec.sysctls {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        std::fs::write(&path, value).map_err(step(format!("set sysctl {key}")))?;
    }
    enter(&rootfs)?;
    say!(
        "rootfs: {} layer(s) + scratch {} assembled; now running inside it",
        spec.layers.len(),
        spec.scratch
    );
    Ok(())
}

/// Moves the agent (all its threads) into `rootfs` and detaches the old root.
fn enter(rootfs: &Path) -> Result<(), RootfsError> {
    sys::chdir(rootfs).map_err(step(format!("enter {}", rootfs.display())))?;
    match sys::pivot_here() {
        Ok(()) => {}
        // The initramfs root of a VM cannot be pivoted away from: switch_root's way.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            sys::move_root_here().map_err(step("move the rootfs onto /"))?;
        }
        Err(e) => return Err(step("pivot_root into the rootfs")(e)),
    }
    sys::chdir(Path::new("/")).map_err(step("chdir to the new /"))
}

/// Checks the spec and its devices before anything is mounted.
fn validate(spec: &SandboxSpec) -> Result<(), RootfsError> {
    let invalid = |m: String| Err(RootfsError::Invalid(m));
    if !crate::cmdline::is_valid_hostname(&spec.hostname) {
        return invalid(format!(
            "hostname {:?} is not valid (1-64 of [A-Za-z0-9.-], starting alphanumeric)",
            spec.hostname
        ));
    }
    crate::network::validate(&spec.interfaces).map_err(RootfsError::Network)?;
    if [&spec.hosts, &spec.resolv_conf]
        .iter()
        .any(|s| s.contains('\0'))
    {
        return invalid("hosts or resolv_conf contains a NUL byte".into());
    }
    for t in &spec.tmpfs {
        let parts = t.path.split('/').skip(1);
        if !t.path.starts_with('/')
            || t.path == "/"
            || parts.clone().any(|p| matches!(p, "" | "." | ".."))
        {
            return invalid(format!(
                "tmpfs path {:?} is not a clean absolute path",
                t.path
            ));
        }
    }
    volumes::validate(spec)?;
    for d in &spec.devices {
        for path in [&d.source, &d.target] {
            let clean = path.starts_with('/')
                && !path.contains('\0')
                && !path
                    .split('/')
                    .skip(1)
                    .any(|p| matches!(p, "" | "." | ".."));
            if !clean {
                return invalid(format!("device path {path:?} is not a clean absolute path"));
            }
        }
    }
    for (key, _) in &spec.sysctls {
        let clean = key.split('.').all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        });
        if !clean {
            return invalid(format!("sysctl {key:?} is not a sysctl name"));
        }
    }
    validate_layers(&spec.layers, &spec.layer_fstype)?;
    block_device("scratch", &spec.scratch)
}

/// Checks the layer devices and their filesystem type.
fn validate_layers(layers: &[String], fstype: &str) -> Result<(), RootfsError> {
    if !layers.is_empty()
        && (fstype.is_empty() || !fstype.chars().all(|c| c.is_ascii_alphanumeric()))
    {
        return Err(RootfsError::Invalid(format!(
            "layer_fstype {fstype:?} is not a filesystem type"
        )));
    }
    for (n, layer) in layers.iter().enumerate() {
        block_device(&format!("layer {n}"), layer)?;
    }
    Ok(())
}

fn block_device(what: &str, device: &str) -> Result<(), RootfsError> {
    let problem = |p: String| RootfsError::Device {
        what: what.to_owned(),
        device: device.to_owned(),
        problem: p,
    };
    if !device.starts_with('/') || device.contains('\0') {
        return Err(problem("not an absolute device path".into()));
    }
    match std::fs::metadata(device) {
        Ok(meta) if meta.file_type().is_block_device() => Ok(()),
        Ok(_) => Err(problem("not a block device".into())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(problem("no such device".into())),
        Err(e) => Err(problem(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> SandboxSpec {
        SandboxSpec {
            layers: vec![],
            layer_fstype: "erofs".into(),
            scratch: "/dev/null".into(),
            hostname: "box".into(),
            hosts: String::new(),
            resolv_conf: String::new(),
            hostname_file: true,
            ..SandboxSpec::default()
        }
    }

    #[test]
    fn validation_names_the_problem() {
        let err = validate(&spec()).unwrap_err();
        assert_eq!(err.to_string(), "scratch /dev/null: not a block device");
        let mut s = spec();
        s.layers = vec!["/dev/husk-no-such-disk".into()];
        let err = validate(&s).unwrap_err();
        assert_eq!(
            err.to_string(),
            "layer 0 /dev/husk-no-such-disk: no such device"
        );
        s.layers = vec!["relative".into()];
        assert!(validate(&s).unwrap_err().to_string().contains("absolute"));
        s.layer_fstype = "erofs,ro".into();
        assert!(
            validate(&s)
                .unwrap_err()
                .to_string()
                .contains("layer_fstype")
        );
        let mut s = spec();
        s.hostname = "-bad".into();
        assert!(validate(&s).unwrap_err().to_string().contains("hostname"));
    }
}
