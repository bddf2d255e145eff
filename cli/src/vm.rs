//! `husk vm ...` and `husk bench ...`: parsing and printing around `runtime::guest` and
//! `runtime::bench`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use runtime::{bench, guest, units};
use vmm::Console;

#[derive(Subcommand, Debug)]
pub enum VmCommand {
    /// Boot a kernel in a husk microVM and report how far it got.
    Boot(BootArgs),
}

#[derive(Args, Debug)]
pub struct BootArgs {
    /// Guest kernel: an uncompressed ELF vmlinux or a bzImage [default: the one
    /// guest-kernel/build.sh built].
    #[arg(long)]
    kernel: Option<PathBuf>,
    /// Initramfs [default: the husk agent's].
    #[arg(long, conflicts_with = "no_initrd")]
    initrd: Option<PathBuf>,
    /// Boot without an initramfs.
    #[arg(long)]
    no_initrd: bool,
    /// Extra kernel parameters, appended after husk's own.
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    cmdline: String,
    /// Number of vCPUs.
    #[arg(long, default_value_t = 1)]
    vcpus: u8,
    /// Guest memory: a size like 256m or 2g; a bare number is MiB.
    #[arg(long, default_value = "128m")]
    memory: String,
    /// Show the guest's serial console on stdout.
    #[arg(long, conflicts_with = "console_file")]
    console: bool,
    /// Write the guest's serial console to this file.
    #[arg(long, value_name = "FILE")]
    console_file: Option<PathBuf>,
    /// A disk image served as virtio-blk; repeat for more (/dev/vda, /dev/vdb, ...).
    /// A `:ro` suffix makes it read-only.
    #[arg(long = "disk", value_name = "PATH[:ro]")]
    disks: Vec<String>,
    /// Give the guest a virtio-vsock device (CID 3) whose host side is this unix socket:
    /// connect and write `CONNECT <port>` to reach a guest port; guest connections to host
    /// port P reach a listener at SOCKET_PATH_P.
    #[arg(long, value_name = "SOCKET_PATH")]
    vsock: Option<PathBuf>,
    /// Share a directory as virtio-fs through a vhost-user daemon (virtiofsd) listening on
    /// SOCKET_PATH; the guest mounts it with `mount -t virtiofs TAG DIR`. Repeatable.
    #[arg(long = "fs", value_name = "SOCKET_PATH:TAG")]
    fs: Vec<String>,
    /// Save a snapshot of the running guest to DIR (docs/snapshots.md) when its console
    /// prints a line containing --snapshot-on, then stop it (or go on with
    /// --snapshot-resume).
    #[arg(long, value_name = "DIR", conflicts_with = "profile")]
    snapshot: Option<PathBuf>,
    /// The console text that triggers the snapshot.
    #[arg(
        long,
        value_name = "TEXT",
        default_value = "husk-agent: ready",
        requires = "snapshot"
    )]
    snapshot_on: String,
    /// Let the guest run on after the snapshot.
    #[arg(long, requires = "snapshot")]
    snapshot_resume: bool,
    /// Start from a snapshot taken by --snapshot (same kernel, initramfs, vCPUs, memory
    /// and devices) instead of booting.
    #[arg(long, value_name = "DIR", conflicts_with = "profile")]
    restore: Option<PathBuf>,
    #[command(flatten)]
    profile: ProfileArgs,
}

/// The guest profiler's flags (docs/profiling.md).
#[derive(Args, Debug)]
pub struct ProfileArgs {
    /// Sample every vCPU's instruction pointer while the guest runs and write a report
    /// (top kernel functions overall, per boot phase and per second) to FILE; a summary
    /// goes to stderr. Boot phases need the console on (--console or --console-file).
    #[arg(long, value_name = "FILE")]
    profile: Option<PathBuf>,
    /// Microseconds between two samples of one vCPU (100 to 1000000).
    #[arg(long, value_name = "US", default_value_t = 1000, requires = "profile")]
    profile_interval_us: u64,
    /// Functions listed per table in the report.
    #[arg(long, value_name = "N", default_value_t = 30, requires = "profile")]
    profile_top: usize,
    /// The guest kernel's System.map [default: System.map beside the kernel, after
    /// following symlinks].
    #[arg(long, value_name = "PATH", requires = "profile")]
    system_map: Option<PathBuf>,
}

impl ProfileArgs {
    fn config(&self) -> Option<vmm::ProfileConfig> {
        self.profile.as_ref().map(|_| vmm::ProfileConfig {
            interval: std::time::Duration::from_micros(self.profile_interval_us),
            system_map: self.system_map.clone(),
        })
    }
}

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// husk's VMM against QEMU's microvm machine: a trivial guest and the real kernel.
    Vmm(BenchVmmArgs),
    /// Containers: `husk run --rm husk/busybox true` against `crun run`, phases, memory
    /// per idle container, density, and vm isolation's host-side phases.
    Run(BenchRunArgs),
    /// Networking: TCP throughput and round trips between the host and a container on
    /// the default bridge (directly and through a published port), process and vm,
    /// against host loopback; in a network namespace of its own.
    Net(BenchNetArgs),
    /// Image builds: the same Dockerfile built by husk (process and vm isolation) and by
    /// buildah, cold and fully cached.
    Build(BenchBuildArgs),
}

#[derive(Args, Debug)]
pub struct BenchBuildArgs {
    /// Measured builds per side and mode.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Measured vm builds per mode (0 skips vm isolation).
    #[arg(long, default_value_t = 2)]
    vm_runs: usize,
    /// Do not measure buildah.
    #[arg(long)]
    no_buildah: bool,
}

#[derive(Args, Debug)]
pub struct BenchNetArgs {
    /// MiB per throughput measurement.
    #[arg(long, default_value_t = 256)]
    mib: usize,
    /// One-byte round trips per latency measurement.
    #[arg(long, default_value_t = 2000)]
    round_trips: usize,
    /// Measure process isolation only.
    #[arg(long)]
    no_vm: bool,
    /// iperf3 rounds in process isolation: host loopback, then the container directly and
    /// through its published port, in turn; the table gives the medians (this machine's
    /// speed drifts between transfers).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// MiB per iperf3 transfer (at most 4 to a vm container).
    #[arg(long, default_value_t = 1024)]
    iperf_mib: usize,
}

#[derive(Args, Debug)]
pub struct BenchRunArgs {
    /// Measured runs of each side (husk and crun, alternating).
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// Idle `sleep` containers for the memory measurement (0 skips it).
    #[arg(long, default_value_t = 10)]
    idle: usize,
    /// Cap of the density ramp: idle containers started until one fails (0 skips it).
    #[arg(long, default_value_t = 0)]
    max_containers: usize,
    /// `husk run --rm --isolation vm ... true` runs end to end, each cold, warm and beside
    /// a process run, with vm's phases (0 skips them; a cold one boots a guest kernel).
    #[arg(long, default_value_t = 3)]
    vm_runs: usize,
    /// Idle warm vm `sleep` containers for the memory measurement (0 skips it).
    #[arg(long, default_value_t = 3)]
    vm_idle: usize,
    /// Starts through the Engine API (`husk daemon`) beside CLI and crun starts, then
    /// list/inspect latency with 100 containers and the daemon's memory (0 skips them).
    #[arg(long, default_value_t = 10)]
    api_runs: usize,
    /// Measure husk alone, without crun.
    #[arg(long)]
    no_crun: bool,
}

#[derive(Args, Debug)]
pub struct BenchVmmArgs {
    /// Runs of the trivial guest per VMM.
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// Runs of the real kernel (to `Run /init`) per VMM; 0 skips them.
    #[arg(long, default_value_t = 3)]
    kernel_runs: usize,
    /// Guest kernel [default: the one guest-kernel/build.sh built].
    #[arg(long)]
    kernel: Option<PathBuf>,
    /// Initramfs for the kernel runs [default: the husk agent's].
    #[arg(long)]
    initrd: Option<PathBuf>,
    /// Measure husk alone, without QEMU.
    #[arg(long)]
    no_qemu: bool,
}

fn memory_mib(text: &str) -> anyhow::Result<u64> {
    let bytes = units::parse_size(text, 1 << 20).context("--memory")?;
    if bytes % (1 << 20) != 0 {
        anyhow::bail!("--memory {text}: guest memory must be a whole number of MiB");
    }
    Ok(bytes >> 20)
}

/// `--fs SOCKET_PATH:TAG` (the tag is what follows the last colon).
fn fs_share(arg: &str) -> anyhow::Result<vmm::FsConfig> {
    let (socket, tag) = arg
        .rsplit_once(':')
        .filter(|(s, t)| !s.is_empty() && !t.is_empty())
        .with_context(|| format!("invalid --fs {arg:?}: use SOCKET_PATH:TAG"))?;
    Ok(vmm::FsConfig::new(socket, tag)?)
}

/// `PATH[:ro]` as a disk.
fn disk(arg: &str) -> vmm::DiskConfig {
    match arg.strip_suffix(":ro") {
        Some(path) => vmm::DiskConfig {
            path: PathBuf::from(path),
            read_only: true,
        },
        None => vmm::DiskConfig {
            path: PathBuf::from(arg),
            read_only: false,
        },
    }
}

pub fn run_vm(cmd: VmCommand, kvm_device: &Path) -> anyhow::Result<ExitCode> {
    let VmCommand::Boot(a) = cmd;
    let console = match (a.console, a.console_file) {
        (true, _) => Console::Stdout,
        (false, Some(f)) => Console::File(f),
        (false, None) => Console::Off,
    };
    let req = guest::BootRequest {
        kernel: a.kernel,
        initrd: if a.no_initrd {
            Some(None)
        } else {
            a.initrd.map(Some)
        },
        cmdline: a.cmdline,
        vcpus: a.vcpus,
        mem_mib: memory_mib(&a.memory)?,
        console,
        kvm_device: kvm_device.to_path_buf(),
        disks: a.disks.iter().map(String::as_str).map(disk).collect(),
        vsock: a.vsock.map(vmm::VsockConfig::new),
        nets: Vec::new(),
        fs: a
            .fs
            .iter()
            .map(|f| fs_share(f))
            .collect::<anyhow::Result<_>>()?,
        snapshot: a.snapshot.map(|dir| {
            let plan = vmm::config::SnapshotPlan {
                dir,
                label: String::new(), // set by runtime::guest from the kernel and initrd
                then: if a.snapshot_resume {
                    vmm::config::AfterSnapshot::Resume
                } else {
                    vmm::config::AfterSnapshot::Stop
                },
            };
            (a.snapshot_on, plan)
        }),
        restore: a.restore,
        profile: a.profile.config(),
    };
    if let Some(path) = &a.profile.profile {
        // Fail before a long boot, not after it.
        std::fs::File::create(path)
            .with_context(|| format!("cannot create the profile file {}", path.display()))?;
    }
    let report = guest::boot(&req)?;
    eprintln!("{}", guest::summary(&report));
    if let (Some(path), Some(profile)) = (&a.profile.profile, &report.profile) {
        profile.write(path, a.profile.profile_top)?;
        eprintln!("\n{}", profile.summary(10));
        eprintln!(
            "full profile (per boot phase, timeline): {}",
            path.display()
        );
    }
    if guest::clean_exit(&report) {
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::from(1))
    }
}

pub fn run_bench(cmd: BenchCommand, kvm_device: &Path) -> anyhow::Result<ExitCode> {
    let a = match cmd {
        BenchCommand::Vmm(a) => a,
        BenchCommand::Run(a) => return bench_run(a),
        BenchCommand::Net(a) => return bench_net(a),
        BenchCommand::Build(a) => return bench_build(a),
    };
    let host = vmm::host::probe(kvm_device)?;
    let qemu = baseline(
        a.no_qemu,
        "qemu-system-x86_64",
        "qemu-system-x86",
        "--no-qemu",
    )?;
    let kernel = a
        .kernel
        .or_else(runtime::paths::default_kernel)
        .filter(|k| k.is_file());
    let initrd = match a.initrd {
        Some(i) => Some(i),
        None => guest::agent_initramfs()?,
    };
    // QEMU gets exactly the command line husk gives a console-on guest on this host.
    let qemu_cmdline = vmm::cmdline::build(&vmm::cmdline::CmdlineSpec {
        console: true,
        emulated_host: host.needs_emulation_workarounds(),
        devices: &[],
        extra: "",
    })?;
    let work_dir = std::env::temp_dir().join(format!("husk-bench-{}", std::process::id()));
    let opts = bench::Options {
        husk: std::env::current_exe()?,
        qemu,
        runs: a.runs,
        kernel_runs: if kernel.is_some() { a.kernel_runs } else { 0 },
        kernel,
        initrd,
        qemu_cmdline,
        work_dir: work_dir.clone(),
    };
    println!(
        "husk bench vmm: {} trivial-guest runs and {} kernel runs per VMM; KVM backend: {:?}",
        opts.runs, opts.kernel_runs, host.backend
    );
    if opts.kernel.is_none() {
        println!("(no guest kernel built: kernel runs skipped; run guest-kernel/build.sh)");
    }
    let result = bench::run(&opts);
    let _ = std::fs::remove_dir_all(&work_dir);
    println!("{}", bench::render(&result?));
    Ok(ExitCode::SUCCESS)
}

fn bench_net(a: BenchNetArgs) -> anyhow::Result<ExitCode> {
    let opts = runtime::bench::net::NetOptions {
        husk: std::env::current_exe().context("cannot find the husk binary")?,
        mib: a.mib.max(1),
        round_trips: a.round_trips.max(1),
        rounds: a.rounds.max(1),
        iperf_mib: a.iperf_mib.max(1),
        vm: !a.no_vm,
        work_dir: PathBuf::from(format!("/var/tmp/husk-bench-net-{}", std::process::id())),
    };
    println!("{}", runtime::bench::net::run(&opts)?);
    Ok(ExitCode::SUCCESS)
}

/// A benchmark's baseline program `name` (Debian package `package`), unless `skip`; a clear
/// error naming `flag` when it is not installed.
fn baseline(skip: bool, name: &str, package: &str, flag: &str) -> anyhow::Result<Option<PathBuf>> {
    if skip {
        return Ok(None);
    }
    runtime::paths::on_path(name)
        .with_context(|| {
            format!(
                "{name} is not installed (apt-get install {package}, the baseline), or pass {flag}"
            )
        })
        .map(Some)
}

fn bench_build(a: BenchBuildArgs) -> anyhow::Result<ExitCode> {
    let buildah = baseline(a.no_buildah, "buildah", "buildah", "--no-buildah")?;
    let opts = runtime::bench::build::BuildOptions {
        husk: std::env::current_exe().context("cannot find the husk binary")?,
        buildah,
        runs: a.runs.max(1),
        vm_runs: a.vm_runs,
        work_dir: PathBuf::from(format!("/var/tmp/husk-bench-build-{}", std::process::id())),
    };
    println!("{}", runtime::bench::build::run(&opts)?);
    Ok(ExitCode::SUCCESS)
}

fn bench_run(a: BenchRunArgs) -> anyhow::Result<ExitCode> {
    let crun = baseline(a.no_crun, "crun", "crun", "--no-crun")?;
    let opts = runtime::bench::containers::RunOptions {
        husk: std::env::current_exe().context("cannot find the husk binary")?,
        crun,
        runs: a.runs.max(1),
        idle: a.idle,
        max_containers: a.max_containers,
        vm_runs: a.vm_runs,
        vm_idle: a.vm_idle,
        api_runs: a.api_runs,
        work_dir: PathBuf::from(format!("/var/tmp/husk-bench-{}", std::process::id())),
    };
    println!("{}", runtime::bench::containers::run(&opts)?);
    Ok(ExitCode::SUCCESS)
}
