//! docker's `update`: a new restart policy applies to the running workload's next exit;
//! memory and CPUs change a running process-isolated container's cgroup at once, are
//! refused for a running VM (fixed at boot) and kept for the next start of a stopped one;
//! docker's messages. The same container's life as `events` tells it (past and followed).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed setup step is a failed test

mod run_common;

use std::time::Duration;

use run_common::{BUSYBOX, Ctx, backends};

#[test]
fn update_restart_policy_and_limits() {
    for iso in backends("update_restart_policy_and_limits") {
        let ctx = Ctx::isolated(iso);
        let script = "while [ ! -f /tmp/go ]; do sleep 0.2; done; exit 3";
        let id = ctx.ok(&[
            "run",
            "-d",
            "--name",
            "u",
            "--isolation",
            iso,
            BUSYBOX,
            "sh",
            "-c",
            script,
        ]);
        let id = id.trim();
        assert_eq!(ctx.ok(&["update", "--restart", "on-failure:1", "u"]), "u\n");
        if iso == "process" {
            ctx.ok(&["update", "--memory", "64m", "--cpus", "0.5", "u"]);
            let v1 = format!("/sys/fs/cgroup/memory/husk/{id}/memory.limit_in_bytes");
            let v2 = format!("/sys/fs/cgroup/husk/{id}/memory.max");
            let limit = std::fs::read_to_string(v1)
                .or_else(|_| std::fs::read_to_string(v2))
                .unwrap();
            assert_eq!(limit.trim(), "67108864", "the running cgroup changed");
        } else {
            let e = ctx.fails_with(1, &["update", "--memory", "128m", "u"]);
            assert!(
                e.starts_with("Error: cannot update the memory or CPUs of running container u"),
                "{e}"
            );
        }
        ctx.ok(&["exec", "u", "touch", "/tmp/go"]);
        // The workload exits 3, is restarted once (on-failure:1), finds /tmp/go and exits.
        let restarted = Ctx::eventually(Duration::from_secs(600), || {
            ctx.ok(&["inspect", "-f", "{{.RestartCount}} {{.State.Status}}", "u"])
                .trim()
                == "1 exited"
        });
        assert!(restarted, "[{iso}] the new policy never restarted it");
        ctx.ok(&["update", "--memory", "128m", "u"]);
        events(&ctx, iso);
        let shown = ctx.ok(&[
            "inspect",
            "-f",
            "{{.HostConfig.Memory}} {{.HostConfig.RestartPolicy.Name}}:{{.HostConfig.RestartPolicy.MaximumRetryCount}}",
            "u",
        ]);
        assert_eq!(shown.trim(), "134217728 on-failure:1", "[{iso}]");

        let e = ctx.fails_with(1, &["update", "u"]);
        assert_eq!(
            e,
            "Error: you must provide one or more flags when using this command"
        );
        let e = ctx.fails_with(1, &["update", "--cpus", "1", "nosuch"]);
        assert_eq!(e, "Error: No such container: nosuch");
        ctx.ok(&["rm", "u"]);
        ctx.assert_clean();
    }
}

/// `events`: the container's life so far, filtered and formatted, then a rename as it happens.
fn events(ctx: &Ctx, iso: &str) {
    let past = ctx.ok(&[
        "events",
        "--since",
        "1h",
        "--until",
        "0s",
        "--filter",
        "container=u",
        "--format",
        "{{.Action}}",
    ]);
    let actions: Vec<&str> = past.lines().collect();
    // Under vm the live memory update was refused: one update fewer while it ran.
    let live_updates: &[&str] = if iso == "process" {
        &["update", "update"]
    } else {
        &["update"]
    };
    let mut expected = vec!["create", "start"];
    expected.extend(live_updates);
    expected.extend(["die", "start", "die", "update"]);
    assert_eq!(actions, expected, "[{iso}]");
    let line = ctx.ok(&[
        "events",
        "--since",
        "1h",
        "--until",
        "0s",
        "--filter",
        "event=die",
    ]);
    assert!(
        line.lines()
            .all(|l| l.contains(" container die ") && l.contains("exitCode=3")),
        "[{iso}] {line}"
    );
    // Followed: a rename after `events` started (from a time just before, so its start
    // cannot race the rename).
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let mut follower = ctx
        .cmd()
        .args([
            "events",
            "--since",
            &since,
            "--filter",
            "event=rename",
            "--format",
        ])
        .arg("{{.Actor.Attributes.name}} {{.Actor.Attributes.oldName}}")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    ctx.ok(&["rename", "u", "v"]);
    let mut lines =
        std::io::BufRead::lines(std::io::BufReader::new(follower.stdout.take().unwrap()));
    let line = lines.next().unwrap().unwrap();
    let _ = follower.kill();
    let _ = follower.wait();
    assert_eq!(line, "v /u", "[{iso}]");
    ctx.ok(&["rename", "v", "u"]);
}
