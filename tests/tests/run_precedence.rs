//! docker's precedence between the image config and the run flags, seen from inside the
//! container: entrypoint/cmd, env (image, --env-file, -e), working directory, user and
//! hostname. The image is busybox imported with ENTRYPOINT, CMD, ENV, WORKDIR and USER set.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed setup step is a failed test

mod run_common;

use rootfs::defaults::DefaultImage;
use run_common::{Ctx, backends, scratch};

const IMAGE: &str = "test/precedence";

fn with_image(ctx: &Ctx) {
    let tar = DefaultImage::Busybox.tarball().unwrap();
    ctx.ok(&[
        "import",
        "-c",
        r#"ENTRYPOINT ["echo", "ep"]"#,
        "-c",
        r#"CMD ["default"]"#,
        "-c",
        "ENV A=image B=image",
        "-c",
        "WORKDIR /var",
        "-c",
        "USER nobody",
        tar.to_str().unwrap(),
        IMAGE,
    ]);
}

fn run(ctx: &Ctx, iso: &str, args: &[&str]) -> String {
    let mut all = vec!["run", "--rm", "--isolation", iso];
    all.extend_from_slice(args);
    ctx.ok(&all)
}

#[test]
fn entrypoint_and_cmd() {
    for iso in backends("entrypoint_and_cmd") {
        let ctx = Ctx::isolated(iso);
        with_image(&ctx);
        assert_eq!(run(&ctx, iso, &[IMAGE]), "ep default\n", "[{iso}]");
        assert_eq!(run(&ctx, iso, &[IMAGE, "x", "-y"]), "ep x -y\n", "[{iso}]");
        // --entrypoint drops the image's CMD too.
        assert_eq!(
            run(&ctx, iso, &["--entrypoint", "/bin/echo", IMAGE]),
            "\n",
            "[{iso}]"
        );
        assert_eq!(
            run(&ctx, iso, &["--entrypoint", "/bin/echo", IMAGE, "mine"]),
            "mine\n",
            "[{iso}]"
        );
        ctx.assert_clean();
    }
}

#[test]
fn env_workdir_user_and_hostname() {
    for iso in backends("env_workdir_user_and_hostname") {
        let ctx = Ctx::isolated(iso);
        with_image(&ctx);
        let script =
            r#"echo "$A/$B/$C/$D/${GONE-unset}"; pwd; id -u; id -g; hostname; echo "$HOSTNAME""#;
        let out = run(&ctx, iso, &["--entrypoint", "sh", IMAGE, "-c", script]);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[..4],
            ["image/image///unset", "/var", "65534", "65534"],
            "[{iso}]"
        );
        assert_eq!(
            lines[4].len(),
            12,
            "[{iso}] hostname is the short ID: {out}"
        );
        assert_eq!(lines[4], lines[5], "[{iso}] HOSTNAME matches: {out}");

        let env_file = scratch(&ctx, "env.list");
        std::fs::write(&env_file, "# comment\n\nB=file\n  C=file\nGONE=file\n").unwrap();
        let out = run(
            &ctx,
            iso,
            &[
                "--env-file",
                env_file.to_str().unwrap(),
                "-e",
                "C=flag",
                "-e",
                "D",
                "-e",
                "GONE",
                "-w",
                "/tmp",
                "-u",
                "0:65534",
                "--hostname",
                "web",
                "--entrypoint",
                "sh",
                IMAGE,
                "-c",
                script,
            ],
        );
        // D is not set on the host in the test's environment, so -e D sets nothing and
        // -e GONE unsets what the env file set.
        assert_eq!(
            out.lines().collect::<Vec<_>>(),
            ["image/file/flag//unset", "/tmp", "0", "65534", "web", "web"],
            "[{iso}]"
        );
        ctx.assert_clean();
    }
}

#[test]
fn e_key_passes_the_host_value_and_user_names_resolve() {
    for iso in backends("e_key_passes_the_host_value_and_user_names_resolve") {
        let ctx = Ctx::isolated(iso);
        with_image(&ctx);
        let mut c = ctx.cmd();
        c.env("HUSK_TEST_FROM_HOST", "from host").args([
            "run",
            "--rm",
            "--isolation",
            iso,
            "-e",
            "HUSK_TEST_FROM_HOST",
            "-u",
            "root",
            "--entrypoint",
            "sh",
            IMAGE,
            "-c",
            "echo $HUSK_TEST_FROM_HOST; id -un",
        ]);
        let o = husk_e2e::output(c);
        assert!(o.status.success(), "[{iso}] {}", husk_e2e::stderr(&o));
        assert_eq!(
            String::from_utf8_lossy(&o.stdout),
            "from host\nroot\n",
            "[{iso}]"
        );
        ctx.assert_clean();
    }
}
