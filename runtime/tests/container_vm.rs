//! vm isolation wiring on any host with /dev/kvm (an emulating KVM such as PVM included): a
//! container's shim boots the real guest kernel in its VMM child with the container's layer
//! disks and scratch disk attached, the kernel probes them, --cpus/--memory reach the
//! guest, and the workload runs on husk's guest kernel and its exit code comes back; the
//! same container restored from a warm-start template (made for its 2 vCPUs and 300 MiB)
//! sees the same. Needs the guest kernel (guest-kernel/build.sh) and the agent.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod containers_support;

use containers_support::Root;
use runtime::container::{HostConfig, Isolation, RunConfig};
use runtime::lifecycle::{self, CreateRequest};

#[test]
fn vm_container_boots_the_kernel_with_its_disks() {
    assert!(
        std::path::Path::new("/dev/kvm").exists(),
        "/dev/kvm is missing: vm isolation cannot be tested"
    );
    let kernel = runtime::paths::default_kernel().expect("no cache dir");
    assert!(
        kernel.is_file(),
        "{} missing: run guest-kernel/build.sh",
        kernel.display()
    );
    let root = Root::new();
    // The guest's /init must be static: scripts/build-agent.sh puts it at target/husk-agent.
    let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap();
    let static_agent = workspace.join("target/husk-agent");
    assert!(static_agent.is_file(), "run scripts/build-agent.sh first");
    // SAFETY: the only test in this binary; set before its container starts. The cold
    // boot's kernel prints its whole log (quiet otherwise), which the checks below read.
    unsafe {
        std::env::set_var("HUSK_AGENT", &static_agent);
        std::env::set_var(runtime::sandbox::vm::KERNEL_LOG_ENV, "full");
    }
    for cold_boot in [true, false] {
        check_run(&root, cold_boot);
    }
}

/// One container asking for 2 vCPUs and 300 MiB, booted cold (the console shows the
/// kernel probing its disks and memory) or restored warm (the VMM log says so).
fn check_run(root: &Root, cold_boot: bool) {
    let req = CreateRequest {
        name: None,
        image: "husk/busybox".into(),
        config: RunConfig {
            // Exit 7 only on husk's guest kernel with the two vCPUs asked for.
            cmd: vec![
                "sh".into(),
                "-c".into(),
                "grep -q '(husk@husk)' /proc/version && \
                 [ \"$(grep -c ^processor /proc/cpuinfo)\" = 2 ] && exit 7"
                    .into(),
            ],
            ..RunConfig::default()
        },
        host: HostConfig {
            isolation: Isolation::Vm,
            // --cpus 1.5 --memory 300m: 2 vCPUs (rounded up) and 300 MiB of guest RAM.
            nano_cpus: 1_500_000_000,
            memory: 300 << 20,
            cold_boot,
            ..HostConfig::default()
        },
        ..CreateRequest::default()
    };
    let config = lifecycle::create(root.path(), req).unwrap();
    let started = lifecycle::start(root.path(), &config.id);
    let code = lifecycle::wait(root.path(), &config.id).unwrap();
    let dir = root.store().dir(&config.id);
    let console = std::fs::read_to_string(dir.join("console.log")).unwrap_or_default();
    let vmm_log = std::fs::read_to_string(dir.join("vmm.log")).unwrap_or_default();
    let state = root.state(&config.id);
    let state_text = format!("{state:?}");
    assert!(
        started.is_ok(),
        "{started:?}\nconsole:\n{console}\n{state_text}"
    );
    assert_eq!(
        code, 7,
        "console:\n{console}\nvmm.log:\n{vmm_log}\n{state_text}"
    );
    assert!(
        !state.last_exit.starts_with("sandbox: "),
        "{}",
        state.last_exit
    );
    assert_eq!(state.isolation, Isolation::Vm);
    if !cold_boot {
        assert!(
            vmm_log.contains("warm start from template") && vmm_log.contains("-2x300m"),
            "vmm.log:\n{vmm_log}"
        );
        return;
    }
    assert!(
        console.contains("virtio_blk virtio0: [vda]"),
        "console:\n{console}\nvmm.log:\n{vmm_log}\nstate: {state:?}"
    );
    assert!(
        console.contains("virtio_blk virtio1: [vdb]"),
        "console:\n{console}"
    );
    // The guest really sees what --cpus and --memory asked for: our MP table's two CPUs
    // and our e820 map of 300 MiB, as the kernel itself reports them.
    assert!(
        console.contains("Allowing 2 present CPUs"),
        "console:\n{console}"
    );
    for e in vmm::arch::x86_64::bootparams::e820_map(300 << 20).unwrap() {
        let kind = match e.kind == vmm::arch::x86_64::bootparams::E820_RAM {
            true => "usable",
            false => "reserved",
        };
        let line = format!(
            "BIOS-e820: [mem {:#018x}-{:#018x}] {kind}",
            e.addr,
            e.addr + e.size - 1
        );
        assert!(console.contains(&line), "missing {line:?}:\n{console}");
    }
}
