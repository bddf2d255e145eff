//! Restart policies through the real binary: `no`, `on-failure[:N]`, `always` and
//! `unless-stopped` with docker's back-off, `stop` ending the restarts, and a sandbox that
//! dies under its workload (its agent killed) told apart from a workload exit in `inspect`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed setup step is a failed test

mod run_common;

use std::time::Duration;

use run_common::{BUSYBOX, Ctx, backends};

fn inspect(ctx: &Ctx, c: &str) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_str(&ctx.ok(&["inspect", c])).unwrap();
    v[0].clone()
}

fn restarts(ctx: &Ctx, c: &str) -> u64 {
    inspect(ctx, c)["RestartCount"].as_u64().unwrap()
}

fn run_detached(ctx: &Ctx, iso: &str, name: &str, policy: &str, script: &str) {
    ctx.ok(&[
        "run",
        "-d",
        "--isolation",
        iso,
        "--name",
        name,
        "--restart",
        policy,
        BUSYBOX,
        "sh",
        "-c",
        script,
    ]);
}

#[test]
fn no_and_on_failure_with_a_retry_limit() {
    for iso in backends("no_and_on_failure_with_a_retry_limit") {
        let ctx = Ctx::new();
        run_detached(&ctx, iso, "never", "no", "echo run; exit 3");
        run_detached(&ctx, iso, "twice", "on-failure:2", "echo run; exit 3");
        run_detached(&ctx, iso, "fine", "on-failure", "echo run; exit 0");
        assert_eq!(
            ctx.ok(&["wait", "never", "twice", "fine"]).trim(),
            "3\n3\n0"
        );
        for (name, count, code) in [("never", 0, 3), ("twice", 2, 3), ("fine", 0, 0)] {
            let v = inspect(&ctx, name);
            assert_eq!(v["RestartCount"], count, "{name}: {v:#}");
            assert_eq!(v["State"]["ExitCode"], code, "{name}");
            assert_eq!(v["State"]["Status"], "exited", "{name}");
            assert_eq!(v["State"]["LastExit"], "workload", "{name}");
            assert_eq!(v["HostConfig"]["RestartPolicy"]["Name"], name_of(name));
            let logs = ctx.ok(&["logs", name]);
            assert_eq!(logs.lines().count(), count as usize + 1, "{name}: {logs}");
        }
        ctx.ok(&["rm", "never", "twice", "fine"]);
        ctx.assert_clean();
    }
}

fn name_of(container: &str) -> &'static str {
    match container {
        "never" => "no",
        _ => "on-failure",
    }
}

#[test]
fn always_and_unless_stopped_restart_until_stopped() {
    for iso in backends("always_and_unless_stopped_restart_until_stopped") {
        let ctx = Ctx::new();
        for policy in ["always", "unless-stopped"] {
            run_detached(&ctx, iso, policy, policy, "echo run; exit 0");
        }
        for policy in ["always", "unless-stopped"] {
            assert!(
                Ctx::eventually(Duration::from_secs(30), || restarts(&ctx, policy) >= 3),
                "{policy}: {:#}",
                inspect(&ctx, policy)
            );
            ctx.ok(&["stop", "-t", "1", policy]);
            let v = inspect(&ctx, policy);
            assert_eq!(v["State"]["Status"], "exited", "{policy}: {v:#}");
            assert!(!v["State"]["Running"].as_bool().unwrap());
            let count = restarts(&ctx, policy);
            // The back-off has grown past 100 ms: a restart would show within a second.
            std::thread::sleep(Duration::from_secs(1));
            assert_eq!(
                restarts(&ctx, policy),
                count,
                "{policy} restarted after stop"
            );
            assert!(ctx.ok(&["ps", "-q"]).trim().is_empty() || policy == "always");
        }
        assert!(ctx.ok(&["ps", "-q"]).trim().is_empty());
        ctx.ok(&["rm", "always", "unless-stopped"]);
        ctx.assert_clean();
    }
}

/// The sandbox (not the workload) dies: its agent, PID 1 of the container, is killed
/// from the host. `on-failure` counts that as a failure, restarts the container in a
/// fresh sandbox, and `inspect` says why the last run ended.
#[test]
fn a_dead_sandbox_is_told_apart_and_restarted() {
    let ctx = Ctx::new();
    let id = ctx.ok(&[
        "run",
        "-d",
        "--isolation",
        "process",
        "--restart",
        "on-failure:1",
        BUSYBOX,
        "sleep",
        "1000",
    ]);
    let id = id.trim();
    let store = runtime::container::Store::open(ctx.root()).unwrap();
    let shim = store.state(id).unwrap().shim_pid;
    let agents = runtime::procfs::children_of(shim);
    assert_eq!(
        agents.len(),
        1,
        "the shim's only child is the agent: {agents:?}"
    );
    // SAFETY: kill takes no pointers; the pid is this test's container's agent.
    unsafe { libc::kill(agents[0], libc::SIGKILL) };
    assert!(Ctx::eventually(Duration::from_secs(30), || {
        let v = inspect(&ctx, id);
        v["RestartCount"] == 1 && v["State"]["Running"] == true && v["State"]["Pid"] != 0
    }));
    let v = inspect(&ctx, id);
    let last = v["State"]["LastExit"].as_str().unwrap();
    assert!(last.starts_with("sandbox: "), "{last}");
    assert!(last.contains("killed by signal 9"), "{last}");
    // The new sandbox runs the workload again, and exec reaches it.
    assert_eq!(ctx.ok(&["exec", id, "echo", "again"]).trim(), "again");
    ctx.ok(&["rm", "-f", id]);
    ctx.assert_clean();
}
