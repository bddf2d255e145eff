//! Containers end to end in process isolation: the real shim (`husk-shim`), the real agent
//! as PID 1 of fresh namespaces, loop devices, cgroups and the busybox default image.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod containers_support;

use std::time::Duration;

use containers_support::{Root, loops_under};
use runtime::container::{HostConfig, RestartPolicy, Status};
use runtime::lifecycle;
use runtime::procfs::{alive, children_of};
use runtime::sandbox::cgroup::{self, Cgroup};

#[test]
fn output_and_exit_codes() {
    let root = Root::new();
    let id = root.run(
        &["sh", "-c", "echo hello; echo oops >&2; exit 3"],
        HostConfig::default(),
    );
    assert_eq!(lifecycle::wait(root.path(), &id).unwrap(), 3);
    let (out, err) = root.logs(&id);
    assert_eq!(out, "hello\n");
    assert_eq!(err, "oops\n");
    let s = root.state(&id);
    assert_eq!(
        (s.status, s.exit_code, s.last_exit.as_str()),
        (Status::Exited, 3, "workload")
    );
    for (argv, code) in [
        (&["true"][..], 0),
        (&["no-such-command"][..], 127),
        // The workload is PID 1 of its PID namespace: its own SIGKILL does not reach it
        // (docker's behaviour), a child's does.
        (&["sh", "-c", "kill -9 $$; exit 5"][..], 5),
        (&["sh", "-c", "sh -c 'kill -9 $$'; exit $?"][..], 137),
    ] {
        let id = root.run(argv, HostConfig::default());
        assert_eq!(lifecycle::wait(root.path(), &id).unwrap(), code, "{argv:?}");
    }
}

#[test]
fn stop_runs_the_term_trap() {
    let root = Root::new();
    let script = "trap 'echo got-term; exit 0' TERM; echo ready; while true; do sleep 0.1; done";
    let id = root.run(&["sh", "-c", script], HostConfig::default());
    root.until("ready", || root.logs(&id).0.contains("ready"));
    lifecycle::stop(root.path(), &id, secs(10)).unwrap();
    assert_eq!(lifecycle::wait(root.path(), &id).unwrap(), 0);
    assert!(root.logs(&id).0.contains("got-term"));
    // A workload that ignores SIGTERM gets SIGKILL after the timeout.
    let script = "trap '' TERM; echo ready; while true; do sleep 0.1; done";
    let id = root.run(&["sh", "-c", script], HostConfig::default());
    root.until("ready", || root.logs(&id).0.contains("ready"));
    lifecycle::stop(root.path(), &id, secs(1)).unwrap();
    assert_eq!(lifecycle::wait(root.path(), &id).unwrap(), 137);
}

#[test]
fn on_failure_restarts_twice() {
    let root = Root::new();
    let host = HostConfig {
        restart_policy: RestartPolicy::parse("on-failure:2").unwrap(),
        ..HostConfig::default()
    };
    let id = root.run(&["sh", "-c", "echo run; exit 1"], host);
    assert_eq!(lifecycle::wait(root.path(), &id).unwrap(), 1);
    let s = root.state(&id);
    assert_eq!(s.restart_count, 2);
    assert_eq!(root.logs(&id).0, "run\nrun\nrun\n");
    let inspect = lifecycle::inspect_json(root.path(), &id).unwrap();
    assert_eq!(inspect["RestartCount"], 2);
    assert_eq!(inspect["State"]["Status"], "exited");
}

#[test]
fn always_restarts_a_dead_sandbox() {
    let root = Root::new();
    let host = HostConfig {
        restart_policy: RestartPolicy::parse("always").unwrap(),
        ..HostConfig::default()
    };
    let id = root.run(&["sleep", "1000"], host);
    root.until("running", || root.state(&id).pid > 0);
    let shim = root.state(&id).shim_pid;
    let agents = children_of(shim);
    assert_eq!(agents.len(), 1, "the shim's only child is the agent");
    // SAFETY: kill takes no pointers; the agent is PID 1 of the container.
    unsafe { libc::kill(agents[0], libc::SIGKILL) };
    root.until("restart", || {
        let s = root.state(&id);
        s.restart_count >= 1 && s.pid > 0
    });
    let s = root.state(&id);
    assert!(s.last_exit.starts_with("sandbox: "), "{}", s.last_exit);
    assert!(
        s.last_exit.contains("killed by signal 9"),
        "{}",
        s.last_exit
    );
    assert_eq!(s.status, Status::Running);
    lifecycle::remove(root.path(), &id, true).unwrap();
    assert!(!alive(shim));
}

#[test]
fn auto_remove_leaves_nothing() {
    let root = Root::new();
    let host = HostConfig {
        auto_remove: true,
        ..HostConfig::default()
    };
    let id = root.run(&["sh", "-c", "echo bye"], host);
    let dir = root.store().dir(&id);
    let shim = root.state(&id).shim_pid;
    assert_eq!(lifecycle::wait(root.path(), &id).unwrap(), 0);
    root.until("shim exit", || !alive(shim));
    assert!(!dir.exists(), "container directory left behind");
    root.until("loop devices gone", || loops_under(root.path()).is_empty());
    let layout = cgroup::detect().unwrap();
    for d in Cgroup::paths(layout, &id) {
        assert!(!d.exists(), "cgroup {} left behind", d.display());
    }
    assert!(lifecycle::list(root.path(), true).unwrap().is_empty());
}

#[test]
fn ten_at_once() {
    let root = Root::new();
    let ids: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..10)
            .map(|n| {
                let root = &root;
                s.spawn(move || root.run(&["echo", &format!("n{n}")], HostConfig::default()))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (n, id) in ids.iter().enumerate() {
        assert_eq!(lifecycle::wait(root.path(), id).unwrap(), 0);
        assert_eq!(root.logs(id).0, format!("n{n}\n"));
    }
    for id in &ids {
        lifecycle::remove(root.path(), id, false).unwrap();
    }
    root.until("loop devices gone", || loops_under(root.path()).is_empty());
}

#[test]
fn memory_limit_is_in_the_cgroup() {
    let root = Root::new();
    let host = HostConfig {
        memory: 64 << 20,
        nano_cpus: 500_000_000,
        ..HostConfig::default()
    };
    let id = root.run(&["sleep", "1000"], host);
    root.until("running", || root.state(&id).pid > 0);
    let dirs = Cgroup::paths(cgroup::detect().unwrap(), &id);
    let (mem, cpu) = match cgroup::detect().unwrap() {
        cgroup::Layout::V2 => (
            std::fs::read_to_string(dirs[0].join("memory.max")).unwrap(),
            std::fs::read_to_string(dirs[0].join("cpu.max")).unwrap(),
        ),
        cgroup::Layout::V1 => (
            std::fs::read_to_string(dirs[0].join("memory.limit_in_bytes")).unwrap(),
            std::fs::read_to_string(dirs[1].join("cpu.cfs_quota_us")).unwrap(),
        ),
    };
    assert_eq!(mem.trim(), (64u64 << 20).to_string());
    assert!(cpu.starts_with("50000"), "{cpu}");
    let procs = std::fs::read_to_string(dirs[0].join("cgroup.procs")).unwrap();
    assert!(
        procs.split_whitespace().count() >= 2,
        "agent and workload in the group: {procs}"
    );
    lifecycle::remove(root.path(), &id, true).unwrap();
    for d in dirs {
        assert!(!d.exists());
    }
}

/// `stop -t N` with the container's own stop signal.
fn secs(n: u64) -> lifecycle::StopOptions {
    lifecycle::StopOptions {
        timeout: Some(Duration::from_secs(n)),
        signal: None,
    }
}
