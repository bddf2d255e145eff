//! `husk build` through the real binary, each test with its own root: the seed's site image
//! (a Dockerfile with ARG/ENV expansion, multi-stage COPY --from, COPY --chown of context
//! files, ADD of a local gzip tar, a deletion across layers, USER) built in both isolations,
//! run and served; a second build entirely from the cache; a failing RUN; the stored
//! config of every metadata instruction; reproducible digests; hostile contexts.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed setup step is a failed test

mod run_common;

use std::path::Path;

use run_common::{Ctx, backends, stdout};

const SITE: &str = r#"# The seed's example on the local busybox image.
ARG BASE=husk/busybox
FROM $BASE AS build
ARG GREETING=hello
RUN mkdir -p /out && echo "$GREETING from the first stage" > /out/greeting \
 && echo doomed > /out/doomed

FROM ${BASE}
ARG GREETING
ENV SITE=/srv/www OWNER=1000
WORKDIR $SITE
COPY --from=build /out/greeting ./
COPY --chown=${OWNER}:1000 index.html notes ./
ADD files.tar.gz /opt/
RUN rm /opt/files/remove-me && echo "$GREETING built $SITE as $(id -u)" > built
USER 1000
EXPOSE 8080
CMD ["httpd", "-f", "-p", "8080", "-h", "/srv/www"]
"#;

/// A context directory for [`SITE`].
fn site_context(dir: &Path) {
    std::fs::create_dir_all(dir.join("notes")).unwrap();
    std::fs::write(dir.join("Dockerfile"), SITE).unwrap();
    std::fs::write(dir.join("index.html"), "<h1>husk</h1>\n").unwrap();
    std::fs::write(dir.join("notes/a.txt"), "note a\n").unwrap();
    std::fs::write(dir.join("secret.key"), "never sent\n").unwrap();
    std::fs::write(dir.join(".dockerignore"), "*.key\n").unwrap();
    let files = dir.join("files");
    std::fs::create_dir_all(&files).unwrap();
    std::fs::write(files.join("kept"), "kept\n").unwrap();
    std::fs::write(files.join("remove-me"), "gone\n").unwrap();
    let tar = std::process::Command::new("tar")
        .args(["-czf", "files.tar.gz", "files"])
        .current_dir(dir)
        .status()
        .unwrap();
    assert!(tar.success());
    std::fs::remove_dir_all(files).unwrap();
}

#[test]
fn the_site_image_builds_runs_and_rebuilds_from_the_cache() {
    for iso in backends("the_site_image_builds_runs_and_rebuilds_from_the_cache") {
        let ctx = Ctx::isolated(iso);
        let dir = ctx.root().join("site");
        site_context(&dir);
        let context = dir.to_str().unwrap();
        let out = ctx.ok(&[
            "build",
            "-t",
            "site:v1",
            "--isolation",
            iso,
            "--build-arg",
            "GREETING=hi",
            context,
        ]);
        assert!(
            out.contains("Step 1/14 : FROM $BASE AS build"),
            "[{iso}] {out}"
        );
        assert!(out.contains(" ---> Running in "), "[{iso}] {out}");
        assert!(out.contains("Successfully tagged site:v1"), "[{iso}] {out}");
        assert_eq!(
            ctx.ok(&["ps", "-aq"]).trim(),
            "",
            "[{iso}] build containers left"
        );

        // One container of the image checks what every step made, and serves it.
        let id = ctx.ok(&["run", "-d", "--isolation", iso, "site:v1"]);
        let id = id.trim();
        let script = "cd /srv/www && cat greeting index.html a.txt built /opt/files/kept \
            && ls /opt/files && stat -c '%u:%g %n' index.html a.txt && id -u && pwd \
            && ls /out 2>&1; ls secret.key 2>&1; wget -qO- http://127.0.0.1:8080/index.html";
        let seen = ctx.ok(&["exec", id, "sh", "-c", script]);
        for want in [
            "hi from the first stage",
            "<h1>husk</h1>",
            "note a",
            "hi built /srv/www as 0",
            "kept",
            "1000:1000 index.html",
            "1000:1000 a.txt",
            "\n1000\n/srv/www\n",
            "ls: /out: No such file or directory",
            "ls: secret.key: No such file or directory",
        ] {
            assert!(seen.contains(want), "[{iso}] want {want:?} in:\n{seen}");
        }
        assert!(
            !seen.contains("remove-me"),
            "[{iso}] the deletion did not hold:\n{seen}"
        );
        assert_eq!(
            seen.matches("<h1>husk</h1>").count(),
            2,
            "[{iso}] served:\n{seen}"
        );
        ctx.ok(&["rm", "-f", id]);

        // Unchanged: every step from the cache, nothing run, the same image.
        let again = ctx.ok(&[
            "build",
            "-t",
            "site:v2",
            "--isolation",
            iso,
            "--build-arg",
            "GREETING=hi",
            context,
        ]);
        assert!(
            !again.contains("Running in"),
            "[{iso}] a step ran again:\n{again}"
        );
        assert_eq!(
            again.matches(" ---> Using cache").count(),
            10,
            "[{iso}] {again}"
        );
        let ids = ctx.ok(&["images", "--format", "{{.ID}}", "site"]);
        let ids: Vec<&str> = ids.lines().collect();
        assert_eq!(ids.len(), 2, "[{iso}] {ids:?}");
        assert_eq!(
            ids[0], ids[1],
            "[{iso}] the cached build made another image"
        );
        // Intermediate images are listed with -a only; removing the last name of the image
        // removes them (docker's chain), and the first stage's image is then dangling.
        let all = ctx.ok(&["images", "-aq"]).lines().count();
        assert!(
            all > ctx.ok(&["images", "-q"]).lines().count() + 5,
            "[{iso}]"
        );
        assert!(ctx.ok(&["rmi", "site:v1"]).contains("Untagged: site:v1"));
        let removed = ctx.ok(&["rmi", "site:v2"]);
        assert!(
            removed.matches("Deleted: ").count() >= 9,
            "[{iso}] {removed}"
        );
        ctx.ok(&["image", "prune", "-f"]);
        let left = ctx.ok(&["images", "-a", "--format", "{{.Repository}}"]);
        assert_eq!(left.trim(), "husk/busybox", "[{iso}]");

        // A failing RUN: docker's message and exit code, no image, nothing left.
        std::fs::write(
            dir.join("Dockerfile"),
            "FROM husk/busybox\nRUN echo before; exit 3\n",
        )
        .unwrap();
        let o = ctx.run(&["build", "-t", "broken", "--isolation", iso, context]);
        assert_eq!(o.status.code(), Some(1), "[{iso}] {o:?}");
        let err = husk_e2e::stderr(&o);
        assert_eq!(
            err.trim(),
            "Error: The command '/bin/sh -c echo before; exit 3' returned a non-zero code: 3",
            "[{iso}]"
        );
        assert!(
            stdout(&o).contains("before"),
            "[{iso}] the RUN's output: {o:?}"
        );
        assert!(ctx.run(&["image", "inspect", "broken"]).status.code() == Some(1));
        assert_eq!(
            ctx.ok(&["ps", "-aq"]).trim(),
            "",
            "[{iso}] the failed step's container"
        );
        let builds = std::fs::read_dir(ctx.root().join("builds"))
            .unwrap()
            .count();
        assert_eq!(builds, 0, "[{iso}] build directories left");
        ctx.assert_clean();
    }
}

/// Metadata instructions as the image config stores them (no sandbox is needed for them:
/// process isolation only, the vm half of building is the test above).
#[test]
fn metadata_instructions_are_stored_in_the_config() {
    let ctx = Ctx::isolated("process");
    let dir = ctx.root().join("meta");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("Dockerfile"),
        r#"# escape=`
FROM husk/busybox
ARG V=1
ENV A=one `
    B="two words" C=${V:-x}-${MISSING:-dflt}
LABEL org.example.version=$V "quoted key"=yes
SHELL ["/bin/sh", "-ec"]
ENTRYPOINT ["/bin/echo"]
CMD ["from", "cmd"]
STOPSIGNAL SIGUSR1
HEALTHCHECK --interval=5s --retries=2 CMD test -f /etc/passwd
VOLUME /data
VOLUME ["/logs"]
EXPOSE 80 53/udp
ONBUILD RUN echo triggered > /tmp/triggered
WORKDIR /app
WORKDIR sub
USER nobody
"#,
    )
    .unwrap();
    ctx.ok(&[
        "build",
        "-q",
        "-t",
        "meta",
        "--label",
        "from.cli=1",
        "--isolation",
        "process",
        dir.to_str().unwrap(),
    ]);
    let v: serde_json::Value =
        serde_json::from_str(&ctx.ok(&["image", "inspect", "meta"])).unwrap();
    let c = &v[0]["Config"];
    let env: Vec<&str> = c["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert!(env.contains(&"A=one"), "{env:?}");
    assert!(env.contains(&"B=two words"), "{env:?}");
    assert!(env.contains(&"C=1-dflt"), "{env:?}");
    assert!(
        !env.iter().any(|e| e.starts_with("V=")),
        "ARG leaked into ENV: {env:?}"
    );
    assert_eq!(c["Labels"]["org.example.version"], "1");
    assert_eq!(c["Labels"]["quoted key"], "yes");
    assert_eq!(c["Labels"]["from.cli"], "1");
    assert_eq!(c["Shell"], serde_json::json!(["/bin/sh", "-ec"]));
    assert_eq!(c["Entrypoint"], serde_json::json!(["/bin/echo"]));
    assert_eq!(c["Cmd"], serde_json::json!(["from", "cmd"]));
    assert_eq!(c["StopSignal"], "SIGUSR1");
    assert_eq!(
        c["Healthcheck"]["Test"],
        serde_json::json!(["CMD-SHELL", "test -f /etc/passwd"])
    );
    assert_eq!(c["Healthcheck"]["Interval"], 5_000_000_000u64);
    assert!(
        c["Volumes"]["/data"].is_object() && c["Volumes"]["/logs"].is_object(),
        "{c}"
    );
    assert!(c["ExposedPorts"]["80/tcp"].is_object() && c["ExposedPorts"]["53/udp"].is_object());
    assert_eq!(
        c["OnBuild"],
        serde_json::json!(["RUN echo triggered > /tmp/triggered"])
    );
    assert_eq!(c["WorkingDir"], "/app/sub");
    assert_eq!(c["User"], "nobody");
    // The entrypoint with the image's CMD, as run.
    assert_eq!(
        ctx.ok(&["run", "--rm", "--isolation", "process", "meta"])
            .trim(),
        "from cmd"
    );

    // A child build runs the ONBUILD trigger.
    std::fs::write(dir.join("Dockerfile"), "FROM meta\nUSER root\n").unwrap();
    let out = ctx.ok(&[
        "build",
        "-t",
        "child",
        "--isolation",
        "process",
        dir.to_str().unwrap(),
    ]);
    assert!(
        out.contains("# Executing 1 build trigger: RUN echo triggered > /tmp/triggered"),
        "{out}"
    );
    let seen = ctx.ok(&[
        "run",
        "--rm",
        "--isolation",
        "process",
        "--entrypoint",
        "cat",
        "child",
        "/tmp/triggered",
    ]);
    assert_eq!(seen.trim(), "triggered");
    ctx.assert_clean();
}

/// `SOURCE_DATE_EPOCH`: two uncached builds of the same inputs give the same image ID;
/// `--target` stops at a stage.
#[test]
fn reproducible_digests_and_targets() {
    let ctx = Ctx::isolated("process");
    let dir = ctx.root().join("repro");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("data.txt"), "data\n").unwrap();
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM husk/busybox AS first\nRUN echo one > /one\n\
         FROM first AS second\nCOPY data.txt /data.txt\nRUN echo two > /two\n",
    )
    .unwrap();
    let d = dir.to_str().unwrap();
    let build = || {
        let mut c = ctx.cmd();
        c.args(["build", "-q", "--no-cache", "--isolation", "process", d])
            .env("SOURCE_DATE_EPOCH", "1700000000");
        let o = husk_e2e::output(c);
        assert!(o.status.success(), "{o:?}");
        stdout(&o)
    };
    let (a, b) = (build(), build());
    assert!(a.starts_with("sha256:"), "{a}");
    assert_eq!(a, b, "the same inputs made different images");
    let first = ctx.ok(&[
        "build",
        "-q",
        "--target",
        "first",
        "-t",
        "first-only",
        "--isolation",
        "process",
        d,
    ]);
    let seen = ctx.run(&[
        "run",
        "--rm",
        "--isolation",
        "process",
        "first-only",
        "ls",
        "/two",
    ]);
    assert_eq!(
        seen.status.code(),
        Some(1),
        "the second stage was built: {first}"
    );
    let missing = ctx.run(&["build", "--target", "nope", "--isolation", "process", d]);
    assert_eq!(missing.status.code(), Some(1));
    assert_eq!(
        husk_e2e::stderr(&missing).trim(),
        "Error: failed to reach build target nope in Dockerfile"
    );
    ctx.assert_clean();
}

/// A context that tries to leave itself, a huge ignored file, a URL and a bad Dockerfile:
/// clear one-line errors (exit 1), nothing read from outside, nothing left behind.
#[test]
fn hostile_contexts_and_dockerfiles_are_refused() {
    let ctx = Ctx::isolated("process");
    let dir = ctx.root().join("hostile");
    std::fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::symlink("/etc", dir.join("escape")).unwrap();
    std::os::unix::fs::symlink("../../../../etc/passwd", dir.join("up")).unwrap();
    // 8 GiB of holes: never read, since .dockerignore excludes it.
    let big = std::fs::File::create(dir.join("huge.bin")).unwrap();
    big.set_len(8 << 30).unwrap();
    std::fs::write(dir.join(".dockerignore"), "huge.bin\n").unwrap();
    let d = dir.to_str().unwrap();
    let fails = |dockerfile: &str, want: &str| {
        std::fs::write(dir.join("Dockerfile"), dockerfile).unwrap();
        let o = ctx.run(&["build", "--isolation", "process", d]);
        let err = husk_e2e::stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{dockerfile}: {err}");
        assert_eq!(err.lines().count(), 1, "{dockerfile}: {err}");
        assert!(err.contains(want), "{dockerfile}: want {want:?} in {err}");
    };
    fails(
        "FROM husk/busybox\nCOPY escape/passwd /x\n",
        "file not found in build context",
    );
    fails(
        "FROM husk/busybox\nCOPY up /x\n",
        "file not found in build context",
    );
    fails(
        "FROM husk/busybox\nCOPY huge.bin /x\n",
        "file not found in build context",
    );
    fails(
        "FROM husk/busybox\nADD http://example.com/x /x\n",
        "husk builds have no internet access",
    );
    fails("FROM husk/busybox\nBOGUS x\n", "dockerfile parse error");
    fails("RUN true\n", "dockerfile parse error");
    fails("FROM husk/nope:1\n", "husk/nope:1");
    std::fs::write(dir.join("a"), "a").unwrap();
    std::fs::write(dir.join("b"), "b").unwrap();
    fails(
        "FROM husk/busybox\nCOPY a b /notadir\n",
        "must be a directory and end with a /",
    );
    let o = ctx.run(&["build", ctx.root().join("missing").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(husk_e2e::stderr(&o).contains("unable to prepare context"));

    // The whole context without what is ignored, symlinks as links.
    std::fs::write(dir.join("Dockerfile"), "FROM husk/busybox\nCOPY . /ctx/\n").unwrap();
    ctx.ok(&["build", "-t", "ctx", "--isolation", "process", d]);
    let seen = ctx.ok(&[
        "run",
        "--rm",
        "--isolation",
        "process",
        "ctx",
        "sh",
        "-c",
        "ls -A /ctx; readlink /ctx/escape; cat /ctx/escape/hostname 2>&1 | head -c 0",
    ]);
    assert!(!seen.contains("huge.bin"), "{seen}");
    assert!(
        seen.contains("Dockerfile") && seen.contains("/etc"),
        "{seen}"
    );
    assert_eq!(ctx.ok(&["ps", "-aq"]).trim(), "");
    assert_eq!(
        std::fs::read_dir(ctx.root().join("builds"))
            .unwrap()
            .count(),
        0
    );
    ctx.assert_clean();
}
