//! The container lifecycle through the real binary: detached run, ps, logs (after exit too),
//! exec into a running container, stop with a grace period, start/restart/wait, inspect,
//! rm, and containers started at once. Each test checks nothing is left behind.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed setup step is a failed test

mod run_common;

use run_common::{BUSYBOX, Ctx, GUARD, backends, stdout};

fn inspect(ctx: &Ctx, c: &str) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_str(&ctx.ok(&["inspect", c])).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);
    v[0].clone()
}

fn logs(ctx: &Ctx, args: &[&str]) -> (String, String) {
    let mut all = vec!["logs"];
    all.extend_from_slice(args);
    let o = ctx.run(&all);
    assert!(o.status.success(), "{}", husk_e2e::stderr(&o));
    (stdout(&o), husk_e2e::stderr(&o).trim_end().to_owned())
}

/// A workload that says it started, traps TERM (exit 7), and reports when a file that `exec`
/// writes appears.
const SERVICE: &str = r#"echo started; echo main > /tmp/from-main; trap 'echo got term; exit 7' TERM; seen=; while true; do if [ -z "$seen" ] && [ -f /tmp/from-exec ]; then echo "main saw $(cat /tmp/from-exec)"; seen=1; fi; sleep 0.1; done"#;

#[test]
fn detached_ps_exec_logs_stop_start_rm() {
    for iso in backends("detached_ps_exec_logs_stop_start_rm") {
        let ctx = Ctx::isolated(iso);
        let id = ctx.ok(&[
            "run",
            "-d",
            "--name",
            "svc",
            "--isolation",
            iso,
            BUSYBOX,
            "sh",
            "-c",
            SERVICE,
        ]);
        let id = id.trim();
        assert!(
            id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()),
            "{id}"
        );
        assert!(Ctx::eventually(GUARD, || logs(&ctx, &["svc"])
            .0
            .contains("started")));

        // ps: docker's columns, the container up.
        let ps = ctx.ok(&["ps"]);
        let lines: Vec<&str> = ps.lines().collect();
        assert_eq!(lines.len(), 2, "{ps}");
        for col in [
            "CONTAINER ID",
            "IMAGE",
            "COMMAND",
            "CREATED",
            "STATUS",
            "PORTS",
            "NAMES",
        ] {
            assert!(lines[0].contains(col), "{ps}");
        }
        assert!(lines[1].starts_with(&id[..12]), "{ps}");
        assert!(
            lines[1].contains(" Up ") && lines[1].ends_with("svc"),
            "{ps}"
        );
        assert!(
            lines[1].contains("husk/busybox") && lines[1].contains("\"sh -c echo started;…\""),
            "{ps}"
        );
        assert_eq!(ctx.ok(&["ps", "-q"]).trim(), &id[..12]);
        assert_eq!(ctx.ok(&["ps", "-q", "--no-trunc"]).trim(), id);

        // exec: same rootfs, both ways; a prefix of the ID resolves.
        assert_eq!(ctx.ok(&["exec", "svc", "cat", "/tmp/from-main"]), "main\n");
        ctx.ok(&["exec", &id[..6], "sh", "-c", "echo exec > /tmp/from-exec"]);
        assert!(Ctx::eventually(GUARD, || logs(&ctx, &["svc"])
            .0
            .contains("main saw exec")));
        let o = ctx.run(&["exec", "svc", "sh", "-c", "exit 5"]);
        assert_eq!(o.status.code(), Some(5));
        let o = ctx.run(&[
            "exec",
            "-e",
            "X=1",
            "-w",
            "/tmp",
            "-u",
            "nobody",
            "svc",
            "sh",
            "-c",
            "echo $X $(pwd) $(id -u)",
        ]);
        assert_eq!(stdout(&o), "1 /tmp 65534", "{}", husk_e2e::stderr(&o));

        // stop: SIGTERM reaches the trap within the grace period.
        ctx.ok(&["stop", "-t", "10", "svc"]);
        let state = inspect(&ctx, "svc");
        assert_eq!(state["State"]["Status"], "exited", "{state}");
        assert_eq!(state["State"]["ExitCode"], 7, "{state}");
        assert_eq!(state["HostConfig"]["Isolation"], iso, "{state}");
        assert_eq!(state["Name"], "/svc");
        assert_eq!(state["Id"], id);
        assert_eq!(ctx.ok(&["wait", "svc"]).trim(), "7");
        assert!(logs(&ctx, &["svc"]).0.ends_with("got term"));
        assert!(ctx.ok(&["ps"]).lines().count() == 1);
        let all = ctx.ok(&["ps", "-a"]);
        assert!(all.contains("Exited (7)"), "{all}");

        // start again: the same container runs again; rm refuses it running; rm -f kills it.
        ctx.ok(&["start", "svc"]);
        assert!(Ctx::eventually(GUARD, || {
            logs(&ctx, &["svc"]).0.matches("started").count() == 2
        }));
        let o = ctx.run(&["rm", "svc"]);
        assert_eq!(o.status.code(), Some(1), "{}", husk_e2e::stderr(&o));
        assert!(husk_e2e::stderr(&o).contains("running"));
        ctx.ok(&["rm", "-f", "svc"]);
        ctx.assert_clean();
    }
}

#[test]
fn stop_kills_after_the_grace_period_and_kill_sends_signals() {
    for iso in backends("stop_kills_after_the_grace_period_and_kill_sends_signals") {
        let ctx = Ctx::isolated(iso);
        let script = "trap '' TERM; trap 'echo usr1' USR1; trap 'echo hang; exit 0' HUP; \
                      echo up; while true; do sleep 0.1; done";
        ctx.ok(&[
            "run",
            "-d",
            "--name",
            "stubborn",
            "--isolation",
            iso,
            BUSYBOX,
            "sh",
            "-c",
            script,
        ]);
        assert!(Ctx::eventually(GUARD, || logs(&ctx, &["stubborn"])
            .0
            .contains("up")));
        ctx.ok(&["kill", "-s", "USR1", "stubborn"]);
        assert!(Ctx::eventually(GUARD, || logs(&ctx, &["stubborn"])
            .0
            .contains("usr1")));
        ctx.ok(&["stop", "-t", "1", "stubborn"]);
        assert_eq!(inspect(&ctx, "stubborn")["State"]["ExitCode"], 137);
        ctx.ok(&["restart", "-t", "1", "stubborn"]);
        // Running again once the workload has printed again.
        assert!(Ctx::eventually(GUARD, || {
            logs(&ctx, &["stubborn"]).0.matches("up").count() == 2
        }));
        assert_eq!(inspect(&ctx, "stubborn")["State"]["Running"], true);
        // restart -s: the given signal first (the trap ends that run with it), then a new run.
        ctx.ok(&["restart", "-s", "HUP", "-t", "100", "stubborn"]);
        assert_eq!(logs(&ctx, &["stubborn"]).0.matches("hang").count(), 1);
        assert!(Ctx::eventually(GUARD, || {
            logs(&ctx, &["stubborn"]).0.matches("up").count() == 3
        }));
        ctx.ok(&["kill", "stubborn"]);
        assert_eq!(ctx.ok(&["wait", "stubborn"]).trim(), "137");
        ctx.ok(&["rm", "stubborn"]);
        ctx.assert_clean();
    }
}

#[test]
fn logs_survive_the_exit() {
    for iso in backends("logs_survive_the_exit") {
        let ctx = Ctx::isolated(iso);
        let o = ctx.run(&[
            "run",
            "--name",
            "once",
            "--isolation",
            iso,
            BUSYBOX,
            "sh",
            "-c",
            "echo out1; echo err1 >&2; echo out2; exit 4",
        ]);
        assert_eq!(o.status.code(), Some(4));
        assert_eq!(stdout(&o), "out1\nout2");
        assert_eq!(husk_e2e::stderr(&o).trim_end(), "err1");
        assert_eq!(logs(&ctx, &["once"]), ("out1\nout2".into(), "err1".into()));
        // stdout and stderr are separate streams: their relative order in the log is not
        // fixed, but --tail counts lines of both.
        let lines = |(o, e): (String, String)| o.lines().chain(e.lines()).count();
        assert_eq!(lines(logs(&ctx, &["--tail", "1", "once"])), 1);
        assert_eq!(lines(logs(&ctx, &["--tail", "2", "once"])), 2);
        assert_eq!(lines(logs(&ctx, &["--tail", "all", "once"])), 3);
        let (ts, _) = logs(&ctx, &["-t", "once"]);
        for line in ts.lines() {
            let (time, text) = line.split_once(' ').unwrap();
            assert!(chrono_like(time), "{line}");
            assert!(text.starts_with("out"), "{line}");
        }
        // -f on an exited container prints everything and returns.
        assert_eq!(logs(&ctx, &["-f", "once"]).0, "out1\nout2");
        // --since/--until: by each line's time, in docker's forms.
        let (second, _) = ts.lines().nth(1).unwrap().split_once(' ').unwrap();
        assert_eq!(logs(&ctx, &["--since", second, "once"]).0, "out2");
        assert_eq!(logs(&ctx, &["--until", second, "once"]).0, "out1");
        assert_eq!(lines(logs(&ctx, &["--since", "10m", "once"])), 3);
        assert_eq!(lines(logs(&ctx, &["--until", "10m", "once"])), 0);
        assert_eq!(lines(logs(&ctx, &["--since", "4000000000", "once"])), 0);
        let o = ctx.run(&["logs", "--since", "soon", "once"]);
        assert_eq!(o.status.code(), Some(1));
        assert!(husk_e2e::stderr(&o).starts_with("Error: invalid time \"soon\""));
        let i = inspect(&ctx, "once");
        assert_eq!(i["State"]["ExitCode"], 4);
        assert_eq!(
            i["Config"]["Cmd"],
            serde_json::json!(["sh", "-c", "echo out1; echo err1 >&2; echo out2; exit 4"])
        );
        ctx.ok(&["rm", "once"]);
        ctx.assert_clean();
    }
}

/// `2024-01-01T00:00:00.123456789Z`.
fn chrono_like(t: &str) -> bool {
    t.len() >= 20 && t.as_bytes()[4] == b'-' && t.contains('T') && t.ends_with('Z')
}

/// Containers started at once: ten in namespaces; four microVMs, since on this project's
/// machines every guest kernel is emulated and four already keep both cores busy for
/// minutes (ten at once found a real VMM freeze, `a_stale_timer_event_does_not_block`).
fn concurrency(iso: &str) -> usize {
    match iso {
        "vm" => 4,
        _ => 10,
    }
}

#[test]
fn concurrent_detached_runs_all_succeed() {
    for iso in backends("concurrent_detached_runs_all_succeed") {
        let ctx = Ctx::isolated(iso);
        let n = concurrency(iso);
        let ids: Vec<String> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..n)
                .map(|i| {
                    let ctx = &ctx;
                    s.spawn(move || {
                        let text = format!("hello {i}");
                        ctx.ok(&[
                            "run",
                            "-d",
                            "--isolation",
                            iso,
                            BUSYBOX,
                            "sh",
                            "-c",
                            &format!("echo {text}; sleep 60"),
                        ])
                        .trim()
                        .to_owned()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut unique = ids.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), n);
        let running = ctx.ok(&["ps", "-q", "--no-trunc"]);
        assert_eq!(running.lines().count(), n, "{running}");
        for (i, id) in ids.iter().enumerate() {
            assert!(Ctx::eventually(GUARD, || logs(&ctx, &[id]).0 == format!("hello {i}")));
        }
        let mut args = vec!["rm", "-f"];
        args.extend(ids.iter().map(String::as_str));
        ctx.ok(&args);
        ctx.assert_clean();
    }
}

/// `rmi` through the real binary against real containers: refused while a container uses
/// the image, refused even with `-f` while it runs, `image prune -a` keeps it, and a
/// forced `rmi` of a stopped container's image keeps the layer disks it mounts, so the
/// container still starts.
#[test]
fn rmi_keeps_what_containers_use() {
    let ctx = Ctx::new();
    ctx.ok(&[
        "run",
        "-d",
        "--name",
        "user",
        "--isolation",
        "process",
        BUSYBOX,
        "sleep",
        "60",
    ]);
    let rmi = |args: &[&str]| {
        let mut all = vec!["rmi"];
        all.extend_from_slice(args);
        ctx.run(&all)
    };
    let o = rmi(&[BUSYBOX]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        husk_e2e::stderr(&o).contains("a container is using"),
        "{o:?}"
    );
    let o = rmi(&["-f", BUSYBOX]);
    assert_eq!(o.status.code(), Some(1));
    assert!(husk_e2e::stderr(&o).contains("cannot be forced"), "{o:?}");
    assert!(
        ctx.ok(&["image", "prune", "-a", "-f"])
            .contains("Total reclaimed space: 0B")
    );
    ctx.ok(&["stop", "-t", "0", "user"]);
    let o = rmi(&[BUSYBOX]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let out = ctx.ok(&["rmi", "-f", BUSYBOX]);
    assert!(out.contains("Deleted: sha256:"), "{out}");
    assert!(ctx.ok(&["images", "-q"]).trim().is_empty());
    // The container still has its layer disks.
    ctx.ok(&["start", "user"]);
    let out = ctx.ok(&["exec", "user", "cat", "/etc/hostname"]);
    assert!(!out.trim().is_empty());
    ctx.ok(&["rm", "-f", "user"]);
    ctx.assert_clean();
}
