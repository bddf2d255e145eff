//! docker's `State.OOMKilled`: a workload that outgrows `--memory` is killed by the kernel
//! (137) and `inspect` says why; one that ends by another SIGKILL is not marked. Under
//! process isolation the limit is the container's cgroup; under vm it is the guest's RAM.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed setup step is a failed test

mod run_common;

use run_common::{BUSYBOX, Ctx};

/// Outgrows a small limit: `dd` reads /dev/zero into one 56 MiB buffer, which a 64 MiB
/// guest (the smallest microVM) lets it allocate; touching it is what runs out. Slow in a
/// VM here: every page the guest kernel clears is emulated work.
const HOG: &str = "exec dd if=/dev/zero of=/dev/null bs=56M count=1";

#[test]
fn out_of_memory_under_process() {
    out_of_memory("process", "16m");
}

#[test]
fn out_of_memory_under_vm() {
    if husk_e2e::linux_guests_available("out_of_memory_under_vm") {
        out_of_memory("vm", "64m");
    }
}

fn out_of_memory(iso: &str, memory: &str) {
    let ctx = Ctx::isolated(iso);
    let o = ctx.run(&[
        "run",
        "--name",
        "hog",
        "--isolation",
        iso,
        "--memory",
        memory,
        BUSYBOX,
        "sh",
        "-c",
        HOG,
    ]);
    assert_eq!(
        o.status.code(),
        Some(137),
        "[{iso}] {}",
        husk_e2e::stderr(&o)
    );
    let state = ctx.ok(&[
        "inspect",
        "-f",
        "{{.State.OOMKilled}} {{.State.ExitCode}}",
        "hog",
    ]);
    assert_eq!(state.trim(), "true 137", "[{iso}]");
    ctx.ok(&["rm", "hog"]);
    if iso == "process" {
        // A SIGKILL from anyone else is no OOM kill (a VM would need one more boot).
        ctx.ok(&[
            "run",
            "-d",
            "--name",
            "k",
            "--isolation",
            iso,
            BUSYBOX,
            "sleep",
            "100",
        ]);
        ctx.ok(&["kill", "k"]);
        assert_eq!(ctx.ok(&["wait", "k"]).trim(), "137");
        let state = ctx.ok(&["inspect", "-f", "{{.State.OOMKilled}}", "k"]);
        assert_eq!(state.trim(), "false");
        ctx.ok(&["rm", "k"]);
    }
    ctx.assert_clean();
}
