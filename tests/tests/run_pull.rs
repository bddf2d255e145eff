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
    push_from(&Ctx::new(), BUSYBOX, "latest", reg)
}

/// Pushes `name` (tagged `tag`) of `source` to `reg` as `e2e/busybox:1`; returns its full
/// name there.
fn push_from(source: &Ctx, name: &str, tag: &str, reg: &Registry) -> String {
    let layout = source.oci_layout(name);
    reg.push(layout.path(), tag, "e2e/busybox:1", Push::OciGzip);
    format!("{}/e2e/busybox:1", reg.host())
}

#[test]
fn run_pulls_a_missing_image_like_docker() {
    let reg = Registry::start();
    let image = push_busybox(&reg);
    for iso in backends("run_pulls_a_missing_image_like_docker") {
        // The registry listens on the host's loopback.
        let ctx = Ctx::isolated(iso).on_host_network();
        let run = |pull: &str| {
            ctx.run(&[
                "run",
                "--rm",
                "--network",
                "none",
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

/// docker's SIZE is the uncompressed content: the same image shows the same size whether it
/// was imported (an uncompressed tar) or pulled (gzip-compressed layers).
#[test]
fn pulled_and_imported_images_show_the_same_size() {
    let reg = Registry::start();
    let imported = Ctx::new();
    let tar = runtime::paths::cache_dir()
        .unwrap()
        .join("images")
        .join("busybox.tar");
    imported.ok(&["import", tar.to_str().unwrap(), "cli/busybox:1"]);
    let image = push_from(&imported, "cli/busybox:1", "1", &reg);
    let pulled = tempfile::tempdir().unwrap();
    let mut c = husk_e2e::husk(pulled.path());
    c.args(["pull", "-q", &image]);
    let o = husk_e2e::output(c);
    assert!(o.status.success(), "{}", husk_e2e::stderr(&o));
    let show = |root: &std::path::Path, name: &str, format: &str| {
        let mut c = husk_e2e::husk(root);
        c.args(["images", "--format", format, name]);
        let o = husk_e2e::output(c);
        assert!(o.status.success(), "{}", husk_e2e::stderr(&o));
        String::from_utf8(o.stdout).unwrap()
    };
    let format = "{{.ID}} {{.Size}}";
    let here = show(imported.root(), "cli/busybox:1", format);
    assert_eq!(show(pulled.path(), &image, format), here);
    let inspect = |root: &std::path::Path, name: &str| {
        let mut c = husk_e2e::husk(root);
        c.args(["image", "inspect", "-f", "{{.Size}}", name]);
        String::from_utf8(husk_e2e::output(c).stdout).unwrap()
    };
    assert_eq!(
        inspect(pulled.path(), &image),
        inspect(imported.root(), "cli/busybox:1")
    );
}
