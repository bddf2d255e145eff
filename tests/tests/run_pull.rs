//! `husk run` pulls a missing image as docker does (`--pull missing`, the default), again
//! with `--pull always`, never with `--pull never`, against a real loopback registry
//! (Debian's docker-registry, the busybox image pushed with skopeo). Pull progress goes to
//! stderr, so the workload's stdout stays its own.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed setup step is a failed test

mod run_common;
#[path = "../../rootfs/tests/support/mod.rs"]
mod support;

use run_common::{BUSYBOX, Ctx, backends, stdout};
use support::registry::{Push, Registry};

/// Pushes the busybox test image to `reg` as `e2e/busybox:1`; returns its full name.
fn push_busybox(reg: &Registry) -> String {
    let source = Ctx::new();
    let tar = source.root().join("busybox-oci.tar");
    source.ok(&[
        "save",
        "--format",
        "oci",
        "-o",
        tar.to_str().unwrap(),
        BUSYBOX,
    ]);
    let layout = tempfile::tempdir().unwrap();
    let untar = std::process::Command::new("tar")
        .arg("-xf")
        .arg(&tar)
        .arg("-C")
        .arg(layout.path())
        .status()
        .unwrap();
    assert!(untar.success());
    reg.push(layout.path(), "latest", "e2e/busybox:1", Push::OciGzip);
    format!("{}/e2e/busybox:1", reg.host())
}

#[test]
fn run_pulls_a_missing_image_like_docker() {
    let reg = Registry::start();
    let image = push_busybox(&reg);
    for iso in backends("run_pulls_a_missing_image_like_docker") {
        let ctx = Ctx::isolated(iso);
        let run = |pull: &str| {
            ctx.run(&[
                "run",
                "--rm",
                "--pull",
                pull,
                "--isolation",
                iso,
                &image,
                "echo",
                "hi",
            ])
        };
        let err = ctx.fails(125, &["run", "--rm", "--pull", "never", &image, "true"]);
        assert_eq!(err, format!("husk: No such image: {image}"), "[{iso}]");

        let o = run("missing");
        let err = husk_e2e::stderr(&o);
        assert_eq!(o.status.code(), Some(0), "[{iso}] {err}");
        assert_eq!(stdout(&o), "hi", "[{iso}] stdout is the workload's alone");
        assert!(
            err.starts_with(&format!("Unable to find image '{image}' locally\n")),
            "[{iso}] {err}"
        );
        assert!(err.contains(": Pull complete"), "[{iso}] {err}");
        assert!(
            err.contains(&format!("Status: Downloaded newer image for {image}")),
            "[{iso}] {err}"
        );

        let o = run("always");
        let err = husk_e2e::stderr(&o);
        assert_eq!(stdout(&o), "hi", "[{iso}] {err}");
        assert!(!err.contains("Unable to find"), "[{iso}] {err}");
        assert!(
            err.contains(&format!("Status: Image is up to date for {image}")),
            "[{iso}] {err}"
        );
        ctx.assert_clean();
    }
}

#[test]
fn bad_pull_options_and_unreachable_registries_are_one_line() {
    let ctx = Ctx::new();
    let err = ctx.fails(125, &["run", "--pull", "sometimes", BUSYBOX, "true"]);
    assert_eq!(
        err,
        r#"husk: invalid pull option: 'sometimes': must be one of "always", "missing" or "never""#
    );
    // Nothing listens on port 1 of loopback.
    let o = ctx.run(&["run", "--rm", "127.0.0.1:1/nothing:here", "true"]);
    let err = husk_e2e::stderr(&o);
    assert_eq!(o.status.code(), Some(125), "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert_eq!(
        lines[0],
        "Unable to find image '127.0.0.1:1/nothing:here' locally"
    );
    assert!(lines[1].starts_with("husk: "), "{err}");
    assert!(ctx.container_dirs().is_empty());
}
