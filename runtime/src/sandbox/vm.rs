//! vm isolation: our VMM in a child process (`<shim> --vmm <ctr>/vmm.json`, so a VMM crash
//! is a sandbox death the shim sees), booting the default kernel with the agent initramfs,
//! one read-only virtio-blk disk per layer (`/dev/vda`, ...) then the scratch disk, vCPUs
//! and RAM from `--cpus`/`--memory`, the console in `<ctr>/console.log`, and
//! `husk.transport=vsock`. The agent is reached through the VMM's vsock socket
//! `<ctr>/vsock.sock` (port 1024).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use super::Params;
use super::template::{Ready, TemplateError};
use crate::agent_client::Endpoint;
use crate::container::files;

/// NICs every vm container has (unplugged where it has no network): one per network it
/// may be on, plugged at boot or while it runs (`network connect`, `vmctl`).
pub const NICS: usize = 3;

/// Disks of a vm container: what the VMM's device budget leaves beside the NICs, the
/// vsock device and the shared-directory slot (volumes).
pub const DISK_SLOTS: usize = vmm::config::disk_budget(NICS + 2);

/// The shared-directory slot every vm container has (unplugged without volumes, so
/// every VM, template or not, has the same devices).
pub fn fs_slot(shared_dir: bool) -> Result<vmm::FsConfig, vmm::devices::virtio::fs::Error> {
    match shared_dir {
        true => vmm::FsConfig::new(files::FS_SOCKET, super::share::TAG),
        false => vmm::FsConfig::unplugged(super::share::TAG),
    }
}

/// Most layers of a vm container's image: one disk each, plus the scratch disk.
pub const MAX_LAYERS: usize = DISK_SLOTS - 1;

/// The MAC address of a NIC nobody has plugged in (templates and `--network none`).
pub const UNPLUGGED_MAC: [u8; 6] = [0x02, 0x68, 0x75, 0x73, 0x6b, 0x00];

/// The NICs of a vm container without a network.
pub fn unplugged_nics() -> Vec<vmm::NetConfig> {
    vec![
        vmm::NetConfig {
            tap: None,
            mac: UNPLUGGED_MAC,
        };
        NICS
    ]
}

/// The NICs of a vm container whose networks are `plugged`: (NIC index, TAP, MAC).
fn nics(plugged: &[(usize, String, [u8; 6])]) -> Vec<vmm::NetConfig> {
    let mut nics = unplugged_nics();
    for (slot, tap, mac) in plugged {
        if let Some(nic) = nics.get_mut(*slot) {
            *nic = vmm::NetConfig {
                tap: Some(tap.clone()),
                mac: *mac,
            };
        }
    }
    nics
}

/// Default guest RAM when `--memory` is not given.
pub const DEFAULT_MEM_MIB: u64 = 256;

/// Errors from the vm backend.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// The VMM's spec could not be written or read.
    #[error("VMM spec {0}")]
    Spec(PathBuf, #[source] std::io::Error),
    /// The VMM child could not be started.
    #[error("cannot start the VMM process")]
    Spawn(#[source] std::io::Error),
    /// The host's RNG could not be read.
    #[error("cannot read entropy for the guest from /dev/urandom")]
    Entropy(#[source] std::io::Error),
    /// Too many disks for the virtio-mmio IRQ budget.
    #[error(
        "the image has {0} layers: a microVM takes at most {MAX_LAYERS} (plus the scratch disk)"
    )]
    TooManyDisks(usize),
}

/// What the VMM child boots (`vmm.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VmmSpec {
    /// Disks in guest order with read-only flags.
    pub disks: Vec<(PathBuf, bool)>,
    /// Extra kernel parameters.
    pub cmdline: String,
    /// vCPUs.
    pub vcpus: u8,
    /// RAM in MiB.
    pub mem_mib: u64,
    /// Console file.
    pub console: PathBuf,
    /// The VMM's vsock socket, relative to the container directory (the VMM child's
    /// working directory), so that deep state directories stay within `SUN_LEN`.
    pub vsock: PathBuf,
    /// Where warm-start templates live; `None` boots cold.
    #[serde(default)]
    pub templates: Option<PathBuf>,
    /// `--cold`: the cold boot was asked for (otherwise a cold boot says why).
    #[serde(default)]
    pub cold: bool,
    /// The NICs plugged at boot: (index, TAP, MAC); the others stay unplugged.
    #[serde(default)]
    pub nics: Vec<(usize, String, [u8; 6])>,
    /// The container's volumes are shared through virtio-fs (`share`): the daemon's
    /// socket is `share::SOCKET` in the working directory.
    #[serde(default)]
    pub shared_dir: bool,
    /// What an image template made for this container reads into its page cache.
    #[serde(default)]
    pub warm: super::template::Warm,
}

/// A VM sandbox (its VMM child).
#[derive(Debug)]
pub struct VmSandbox {
    pid: i32,
    layers: usize,
    vsock: PathBuf,
    /// The VMM's word that the guest has the scratch disk mounted.
    scratch_ready: PathBuf,
}

/// What the VMM writes in `files::SCRATCH_READY` when the guest has the image's rootfs
/// assembled (else `scratch`: only the scratch disk mounted).
const ROOTFS_READY: &str = "rootfs";

/// `/dev/vda`, `/dev/vdb`, ... for disk `n`.
pub fn disk_name(n: usize) -> String {
    let letters = b"abcdefghijklmnopqrstuvwxyz";
    match n < 26 {
        true => format!("/dev/vd{}", char::from(letters[n])),
        false => format!(
            "/dev/vd{}{}",
            char::from(letters[n / 26 - 1]),
            char::from(letters[n % 26])
        ),
    }
}

impl VmSandbox {
    /// Writes `vmm.json` and starts the VMM child.
    pub fn create(
        p: &Params,
        endpoints: &[crate::network::Endpoint],
        shared_dir: bool,
    ) -> Result<Self, super::SandboxError> {
        if p.layers.len() > MAX_LAYERS {
            return Err(VmError::TooManyDisks(p.layers.len()).into());
        }
        let mut disks: Vec<(PathBuf, bool)> = p.layers.iter().map(|l| (l.clone(), true)).collect();
        disks.push((p.scratch.clone(), false));
        let vcpus = p
            .nano_cpus
            .div_ceil(1_000_000_000)
            .clamp(1, u64::from(vmm::config::MAX_VCPUS));
        let mem_mib = match p.memory {
            0 => DEFAULT_MEM_MIB,
            m => (m >> 20).max(vmm::config::MIN_MEM_MIB),
        };
        let spec = VmmSpec {
            disks,
            cmdline: format!("husk.transport=vsock husk.hostname={}", p.hostname),
            vcpus: u8::try_from(vcpus).unwrap_or(1),
            mem_mib,
            console: p.dir.join(files::CONSOLE_LOG),
            vsock: PathBuf::from(files::VSOCK_SOCKET),
            templates: match p.cold_boot {
                true => None,
                false => super::template::templates_dir(),
            },
            cold: p.cold_boot,
            nics: endpoints
                .iter()
                .map(|e| (e.slot, e.link.clone(), e.mac))
                .collect(),
            shared_dir,
            warm: p.warm.clone(),
        };
        let scratch_ready = p.dir.join(files::SCRATCH_READY);
        match std::fs::remove_file(&scratch_ready) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(VmError::Spec(scratch_ready, e).into());
            }
            _ => {}
        }
        let path = p.dir.join(files::VMM_CONFIG);
        let json =
            serde_json::to_vec_pretty(&spec).map_err(|e| VmError::Spec(path.clone(), e.into()))?;
        std::fs::write(&path, json).map_err(|e| VmError::Spec(path.clone(), e))?;
        let log_path = p.dir.join(files::VMM_LOG);
        let log = std::fs::File::create(&log_path).map_err(|e| VmError::Spec(log_path, e))?;
        let log2 = log.try_clone().map_err(VmError::Spawn)?;
        let mut cmd = Command::new(&p.self_cmd.0);
        cmd.args(&p.self_cmd.1)
            .arg("--vmm")
            .arg(&path)
            .current_dir(&p.dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        // SAFETY: the closure only calls prctl, which is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(VmError::Spawn)?;
        let pid =
            i32::try_from(child.id()).map_err(|e| VmError::Spawn(std::io::Error::other(e)))?;
        // The sandbox watcher reaps it by pid; std's handle is not needed.
        drop(child);
        Ok(Self {
            pid,
            layers: p.layers.len(),
            vsock: p.dir.join(files::VSOCK_SOCKET),
            scratch_ready,
        })
    }

    /// The VMM's pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The agent behind the VMM's vsock socket.
    pub fn endpoint(&self) -> Endpoint {
        Endpoint::Vsock {
            uds: self.vsock.clone(),
            port: agent_proto::CONTROL_PORT,
        }
    }

    /// Guest device names: layers, then scratch (in the template's scratch slot when the
    /// VMM said the guest has it mounted: [`Self::ready`]). Asked once the agent is
    /// connected, i.e. after the VMM restored or booted the guest.
    pub fn devices(&self) -> (Vec<String>, String) {
        let scratch = match self.ready() {
            Ready::Nothing => self.layers,
            Ready::Scratch | Ready::Rootfs => super::template::SCRATCH_SLOT,
        };
        (
            (0..self.layers).map(disk_name).collect(),
            disk_name(scratch),
        )
    }

    /// What the guest has ready of the container's rootfs, as its VMM wrote it.
    pub fn ready(&self) -> Ready {
        match std::fs::read_to_string(&self.scratch_ready).as_deref() {
            Ok(ROOTFS_READY) => Ready::Rootfs,
            Ok(_) => Ready::Scratch,
            Err(_) => Ready::Nothing,
        }
    }

    /// Removes the sockets (the VMM has been reaped).
    pub fn teardown(self) {
        let _ = std::fs::remove_file(&self.vsock);
        if let Some(dir) = self.vsock.parent() {
            let _ = std::fs::remove_file(dir.join(files::VMM_SOCKET));
        }
    }
}

/// `HUSK_VMM_PROFILE=FILE`: the VMM samples its guest's vCPUs and writes the profile to
/// FILE when the VM ends (docs/profiling.md), warm or cold.
pub const PROFILE_ENV: &str = "HUSK_VMM_PROFILE";

/// The kernel parameter that keeps a container VM's kernel log off its console but for
/// errors and panics (the agent's lines still reach `console.log`): the full log over the
/// serial port costs a VM exit per byte and formatting work, 1-1.7 s of a boot on
/// emulating hosts (docs/guest-kernel.md). A profiled VM keeps the full log, whose boot
/// milestones divide its report into phases, and so does a cold boot with
/// [`KERNEL_LOG_ENV`]`=full`.
pub(super) const QUIET: &str = "quiet";

/// `HUSK_KERNEL_LOG=full`: a container VM booted cold prints the kernel's whole log to
/// its `console.log` (for diagnosing a guest).
pub const KERNEL_LOG_ENV: &str = "HUSK_KERNEL_LOG";

/// Bytes of host entropy each guest gets.
const GUEST_ENTROPY: usize = 64;

/// A guest's own randomness and the host's time, for its agent's setup.
pub fn guest_identity() -> Result<agent_proto::GuestIdentity, VmError> {
    use std::io::Read;
    let mut entropy = vec![0u8; GUEST_ENTROPY];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut entropy))
        .map_err(VmError::Entropy)?;
    let wall_clock_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    Ok(agent_proto::GuestIdentity {
        entropy,
        wall_clock_ns,
    })
}

/// The VMM child's body: boots `spec_path`'s VM to its end. Exit code 0 when the guest
/// reset on purpose, 1 otherwise (the reason on stderr, i.e. `vmm.log`).
pub fn run_vmm(spec_path: &Path) -> i32 {
    crate::timing::mark("vmm.start");
    let spec: VmmSpec = match std::fs::read(spec_path)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("husk-vmm: cannot read {}: {e}", spec_path.display());
            return 1;
        }
    };
    let profile_path = std::env::var_os(PROFILE_ENV).map(PathBuf::from);
    let req = crate::guest::BootRequest {
        kernel: None,
        initrd: None,
        cmdline: match profile_path.is_some()
            || std::env::var_os(KERNEL_LOG_ENV).is_some_and(|v| v == "full")
        {
            true => spec.cmdline,
            false => format!("{} {QUIET}", spec.cmdline),
        },
        vcpus: spec.vcpus,
        mem_mib: spec.mem_mib,
        console: vmm::Console::File(spec.console),
        kvm_device: PathBuf::from("/dev/kvm"),
        disks: spec
            .disks
            .into_iter()
            .map(|(path, read_only)| vmm::DiskConfig { path, read_only })
            .collect(),
        vsock: Some(vmm::VsockConfig::new(spec.vsock)),
        nets: nics(&spec.nics),
        fs: match fs_slot(spec.shared_dir) {
            Ok(fs) => vec![fs],
            Err(e) => {
                eprintln!("husk-vmm: {e}");
                return 1;
            }
        },
        snapshot: None,
        restore: None,
        profile: profile_path.as_ref().map(|_| vmm::ProfileConfig::default()),
    };
    let vm = match &spec.templates {
        Some(templates) => super::template::restore(&req, templates, &spec.warm)
            .and_then(|(vm, ready)| {
                let word = match ready {
                    Ready::Nothing => return Ok(vm),
                    Ready::Scratch => "scratch",
                    Ready::Rootfs => ROOTFS_READY,
                };
                std::fs::write(files::SCRATCH_READY, word)
                    .map_err(|e| TemplateError::Scratch(files::SCRATCH_READY.into(), e))?;
                Ok(vm)
            })
            .or_else(|e| {
                eprintln!(
                    "husk-vmm: no warm start ({}): booting cold",
                    agent_proto::error_chain(&e)
                );
                crate::guest::build(&req)
            }),
        None => {
            if !spec.cold {
                eprintln!(
                    "husk-vmm: no warm start (no cache directory for templates): booting cold"
                );
            }
            crate::guest::build(&req)
        }
    };
    let ran = vm.and_then(|vm| {
        if let Err(e) = super::vmctl::serve(vm.nic_plugs()) {
            eprintln!("husk-vmm: no control socket (networks cannot be connected live): {e}");
        }
        // `husk bench run`: VMM setup done; the vCPUs enter the guest right after.
        crate::timing::mark("vmm.built");
        Ok(vm.run()?)
    });
    match ran {
        Ok(report) => {
            if let (Some(path), Some(profile)) = (&profile_path, &report.profile)
                && let Err(e) = profile.write(path, 40)
            {
                eprintln!("husk-vmm: cannot write the profile: {e}");
            }
            eprintln!("{}", crate::guest::summary(&report));
            i32::from(!crate::guest::clean_exit(&report))
        }
        Err(e) => {
            eprintln!("husk-vmm: {}", agent_proto::error_chain(&e));
            1
        }
    }
}
