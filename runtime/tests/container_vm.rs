//! vm isolation wiring on any host with /dev/kvm: with HUSK_VM_FORCE=1 a container's shim
//! boots the real guest kernel in its VMM child with the container's layer disks and scratch
//! disk attached, and the kernel probes them. Where the guest's user space cannot run (an
//! emulating KVM such as PVM) the container then ends as a sandbox death, and state.json
//! says so. Needs the guest kernel (guest-kernel/build.sh) and the agent.

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
    // SAFETY: the only test in this binary; set before its container starts.
    unsafe {
        std::env::set_var("HUSK_VM_FORCE", "1");
        std::env::set_var("HUSK_AGENT", &static_agent);
    }
    let req = CreateRequest {
        name: None,
        image: "husk/busybox".into(),
        config: RunConfig {
            cmd: vec!["true".into()],
            ..RunConfig::default()
        },
        host: HostConfig {
            isolation: Isolation::Vm,
            ..HostConfig::default()
        },
    };
    let config = lifecycle::create(root.path(), req).unwrap();
    lifecycle::start(root.path(), &config.id).unwrap();
    let code = lifecycle::wait(root.path(), &config.id).unwrap();
    let dir = root.store().dir(&config.id);
    let console = std::fs::read_to_string(dir.join("console.log")).unwrap_or_default();
    let vmm_log = std::fs::read_to_string(dir.join("vmm.log")).unwrap_or_default();
    let state = root.state(&config.id);
    assert!(
        console.contains("virtio_blk virtio0: [vda]"),
        "console:\n{console}\nvmm.log:\n{vmm_log}\nstate: {state:?}"
    );
    assert!(
        console.contains("virtio_blk virtio1: [vdb]"),
        "console:\n{console}"
    );
    assert_eq!(state.isolation, Isolation::Vm);
    if runtime::info::kvm_info(std::path::Path::new("/dev/kvm")).can_run_linux_guests {
        eprintln!("this host runs Linux guests: the agent answered, exit {code}");
    } else {
        assert!(
            state.last_exit.starts_with("sandbox: "),
            "{}",
            state.last_exit
        );
        // The workload never started: husk could not run it (docker's 125).
        assert_eq!(code, 125);
    }
}
