//! Restart policies through the real binary: `no`, `on-failure[:N]`, `always` and
//! `unless-stopped` with docker's back-off, `stop` ending the restarts, and a sandbox that
//! dies under its workload (its agent killed) told apart from a workload exit in `inspect`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed setup step is a failed test

mod run_common;

use std::time::Duration;

use run_common::{BUSYBOX, Ctx, GUARD, backends};

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
        let ctx = Ctx::isolated(iso);
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

/// How long a container may take to be restarted a few times: a hang guard, generous since
/// a vm container boots a kernel per run.
const RESTARTS_GUARD: Duration = Duration::from_secs(240);
/// How long a stopped container's shim may take to exit: a hang guard.
const SHIM_EXIT_GUARD: Duration = Duration::from_secs(60);

/// The full ID of container `name`.
fn id_of(ctx: &Ctx, name: &str) -> String {
    inspect(ctx, name)["Id"].as_str().unwrap().to_owned()
}

/// The pid of the shim that runs (and restarts) container `name`.
fn shim_pid(ctx: &Ctx, name: &str) -> i32 {
    let store = runtime::container::Store::open(ctx.root()).unwrap();
    store.state(&id_of(ctx, name)).unwrap().shim_pid
}

#[test]
fn always_and_unless_stopped_restart_until_stopped() {
    for iso in backends("always_and_unless_stopped_restart_until_stopped") {
        let ctx = Ctx::isolated(iso);
        let policies = ["always", "unless-stopped"];
        for policy in policies {
            run_detached(&ctx, iso, policy, policy, "echo run; exit 0");
        }
        for (i, policy) in policies.into_iter().enumerate() {
            assert!(
                Ctx::eventually(RESTARTS_GUARD, || restarts(&ctx, policy) >= 2),
                "{policy} [{iso}] did not keep restarting: {:#}",
                inspect(&ctx, policy)
            );
            let shim = shim_pid(&ctx, policy);
            assert!(shim > 0, "{policy} [{iso}] has no shim");
            ctx.ok(&["stop", "-t", "1", policy]);
            let v = inspect(&ctx, policy);
            assert_eq!(v["State"]["Status"], "exited", "{policy} [{iso}]: {v:#}");
            assert_eq!(v["State"]["Running"], false, "{policy} [{iso}]: {v:#}");
            let count = v["RestartCount"].as_u64().unwrap();
            // The shim applies the policy: once it has exited, nothing can restart the
            // container, so the count it left is final.
            assert!(
                Ctx::eventually(SHIM_EXIT_GUARD, || !runtime::procfs::alive(shim)),
                "{policy} [{iso}]: its shim (pid {shim}) still runs after stop: {:#}",
                inspect(&ctx, policy)
            );
            let v = inspect(&ctx, policy);
            assert_eq!(
                (v["RestartCount"].as_u64().unwrap(), &v["State"]["Status"]),
                (count, &serde_json::json!("exited")),
                "{policy} [{iso}] restarted after stop: {v:#}"
            );
            // Exactly the containers not stopped yet still run.
            let mut running: Vec<String> = ctx
                .ok(&["ps", "-q", "--no-trunc"])
                .lines()
                .map(str::to_owned)
                .collect();
            running.sort();
            let mut want: Vec<String> = policies[i + 1..].iter().map(|p| id_of(&ctx, p)).collect();
            want.sort();
            assert_eq!(running, want, "running after stopping {policy} [{iso}]");
        }
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
    assert!(Ctx::eventually(GUARD, || {
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
