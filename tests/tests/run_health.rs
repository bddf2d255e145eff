//! docker's health checks: `--health-*` over the image's `HEALTHCHECK` (set here with
//! `commit -c`), `--no-healthcheck`, the start period (failures do not count until a check
//! passes), `starting` → `healthy` → `unhealthy` in `inspect`'s `State.Health` and in `ps`
//! (status words and `--filter health=`), and the flag errors; and `top` on the same
//! container. One test per isolation.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed setup step is a failed test

mod run_common;

use std::time::Duration;

use run_common::{BUSYBOX, Ctx};

#[test]
fn health_checks_under_process() {
    health_checks("process");
}

#[test]
fn health_checks_under_vm() {
    if husk_e2e::linux_guests_available("health_checks_under_vm") {
        health_checks("vm");
    }
}

/// `inspect -f TEMPLATE h`, trimmed.
fn field(ctx: &Ctx, template: &str) -> String {
    ctx.ok(&["inspect", "-f", template, "h"]).trim().to_owned()
}

fn health_checks(iso: &str) {
    let ctx = Ctx::isolated(iso);
    let long = Duration::from_secs(600);
    ctx.ok(&[
        "run",
        "-d",
        "--name",
        "h",
        "--isolation",
        iso,
        "--health-cmd",
        "test -f /tmp/ok && echo fine",
        "--health-interval",
        "1s",
        "--health-start-period",
        "1h",
        "--health-start-interval",
        "1s",
        "--health-retries",
        "1",
        BUSYBOX,
        "sleep",
        "1000",
    ]);
    // top: ps -ef's columns, the workload as PID 1, the container's PIDs.
    let top = ctx.ok(&["top", "h"]);
    let mut lines = top.lines();
    let titles: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        titles,
        ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
    );
    let first: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        (first[0], first[1], first[2], &first[7..]),
        ("root", "1", "0", &["sleep", "1000"][..]),
        "[{iso}] {top}"
    );
    let e = ctx.fails_with(1, &["top", "h", "aux"]);
    assert!(e.contains("ps options are not supported"), "{e}");

    // Failing in the start period: still starting, nothing counted.
    let failed_once = Ctx::eventually(long, || field(&ctx, "{{len .State.Health.Log}}") != "0");
    assert!(failed_once, "[{iso}] no check ever ran");
    assert_eq!(
        field(
            &ctx,
            "{{.State.Health.Status}} {{.State.Health.FailingStreak}} {{(index .State.Health.Log 0).ExitCode}}"
        ),
        "starting 0 1",
        "[{iso}]"
    );
    let ps = ctx.ok(&["ps", "--format", "{{.Status}}"]);
    assert!(ps.trim().ends_with("(health: starting)"), "[{iso}] {ps}");

    ctx.ok(&["exec", "h", "touch", "/tmp/ok"]);
    let healthy = Ctx::eventually(long, || {
        field(&ctx, "{{.State.Health.Status}}") == "healthy"
    });
    assert!(healthy, "[{iso}] never healthy");
    let outputs = field(
        &ctx,
        "{{range .State.Health.Log}}{{.ExitCode}}:{{.Output}}|{{end}}",
    );
    assert!(outputs.contains("0:fine\n|"), "[{iso}] {outputs}");
    let ps = ctx.ok(&[
        "ps",
        "--filter",
        "health=healthy",
        "--format",
        "{{.Names}} {{.Status}}",
    ]);
    assert!(
        ps.starts_with("h Up ") && ps.trim().ends_with("(healthy)"),
        "[{iso}] {ps}"
    );

    // After a pass the start period is over for counting: one failure is unhealthy.
    ctx.ok(&["exec", "h", "rm", "/tmp/ok"]);
    let unhealthy = Ctx::eventually(long, || {
        field(&ctx, "{{.State.Health.Status}}") == "unhealthy"
    });
    assert!(unhealthy, "[{iso}] never unhealthy");
    let ps = ctx.ok(&[
        "ps",
        "--filter",
        "health=unhealthy",
        "--format",
        "{{.Status}}",
    ]);
    assert!(ps.trim().ends_with("(unhealthy)"), "[{iso}] {ps}");
    assert!(
        ctx.ok(&["ps", "-q", "--filter", "health=healthy"])
            .is_empty()
    );

    // The image's HEALTHCHECK, and --no-healthcheck over it (created only: no boot).
    ctx.ok(&[
        "commit",
        "-c",
        "HEALTHCHECK --interval=2s CMD true",
        "h",
        "test/hc",
    ]);
    ctx.ok(&[
        "create",
        "--name",
        "from-image",
        "--isolation",
        iso,
        "test/hc",
    ]);
    let hc = ctx.ok(&[
        "inspect",
        "-f",
        "{{json .Config.Healthcheck}}",
        "from-image",
    ]);
    assert_eq!(
        hc.trim(),
        r#"{"Interval":2000000000,"Test":["CMD-SHELL","true"]}"#
    );
    ctx.ok(&[
        "create",
        "--name",
        "none",
        "--no-healthcheck",
        "--isolation",
        iso,
        "test/hc",
    ]);
    let hc = ctx.ok(&["inspect", "-f", "{{json .Config.Healthcheck.Test}}", "none"]);
    assert_eq!(hc.trim(), r#"["NONE"]"#);

    let e = ctx.fails(
        125,
        &["run", "--no-healthcheck", "--health-cmd", "true", BUSYBOX],
    );
    assert_eq!(
        e,
        "husk: --no-healthcheck conflicts with --health-* options"
    );
    let e = ctx.fails(125, &["run", "--health-interval", "-1s", BUSYBOX]);
    assert_eq!(e, "husk: --health-interval cannot be negative");

    let e = ctx.fails_with(1, &["top", "none"]);
    assert_eq!(e, "Error: container none is not running");
    ctx.ok(&["rm", "-f", "h", "from-image", "none"]);
    ctx.ok(&["rmi", "test/hc"]);
    ctx.assert_clean();
}
