//! A container's files from the host, as docker does them: `ps -s`, `cp` both ways (files,
//! directories, `SRC/.`, `-` tars, symlinks kept), `diff` (added, changed, deleted; not the
//! mount points husk adds), `export` (the root without what is mounted on it) and `commit`
//! (an image of the changes that runs), on a running container and on a stopped one (which
//! gets a sandbox of its own isolation just for that), with docker's messages and exit
//! codes. One test per isolation, so the two run side by side.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed setup step is a failed test

mod run_common;

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use run_common::{BUSYBOX, Ctx};

/// The changes the workload makes before it says `ready`.
const CHANGES: &str = "mkdir -p /data/sub && echo hello > /data/sub/f && ln -s /etc /data/link \
     && echo s > /data/sub/s && chmod 4755 /data/sub/s \
     && echo extra >> /etc/passwd && rm /etc/group && echo ready && exec sleep 1000";

#[test]
fn container_files_under_process() {
    container_files("process");
}

#[test]
fn container_files_under_vm() {
    if husk_e2e::linux_guests_available("container_files_under_vm") {
        container_files("vm");
    }
}

fn container_files(iso: &str) {
    let ctx = Ctx::isolated(iso);
    let local = tempfile::tempdir().unwrap();
    ctx.ok(&[
        "run",
        "-d",
        "--name",
        "c",
        "--isolation",
        iso,
        BUSYBOX,
        "sh",
        "-c",
        CHANGES,
    ]);
    let ready = Ctx::eventually(Duration::from_secs(600), || {
        ctx.ok(&["logs", "c"]).contains("ready")
    });
    assert!(ready, "[{iso}] the workload never got ready");

    // diff: docker's kinds, parents first, without /etc/hosts & co.
    let diff = ctx.ok(&["diff", "c"]);
    let lines: Vec<&str> = diff.lines().collect();
    for want in [
        "A /data",
        "A /data/link",
        "A /data/sub",
        "A /data/sub/f",
        "C /etc",
        "C /etc/passwd",
        "D /etc/group",
    ] {
        assert!(
            lines.contains(&want),
            "[{iso}] {want} missing from diff:\n{diff}"
        );
    }
    assert!(
        !diff.contains("/etc/hosts") && !diff.contains("/proc"),
        "[{iso}] husk's own mount points are no changes:\n{diff}"
    );

    // ps -s: the container's own disk use, and with its image.
    let table = ctx.ok(&["ps", "-s"]);
    assert!(
        table.lines().next().unwrap().ends_with("SIZE"),
        "[{iso}] {table}"
    );
    let size = ctx.ok(&["ps", "-s", "--format", "{{.Size}}"]);
    let (own, virt) = size.trim().split_once(" (virtual ").unwrap();
    assert!(own.ends_with('B') && virt.ends_with("B)"), "[{iso}] {size}");
    assert_ne!(own, "0B", "[{iso}] the changes take room");

    copies_out(&ctx, iso, local.path());
    copies_in(&ctx, iso, local.path());
    exports(&ctx, iso, local.path());

    // commit: the changes become an image that runs (a container of its own).
    let id = ctx.ok(&[
        "commit",
        "-m",
        "from a test",
        "-c",
        "CMD [\"sh\", \"-c\", \"cat /data/sub/f; test -e /etc/group || echo no-group\"]",
        "c",
        "test/committed:v1",
    ]);
    assert!(id.trim().starts_with("sha256:"), "[{iso}] {id}");
    let history = ctx.ok(&["history", "--format", "{{.Comment}}", "test/committed:v1"]);
    assert_eq!(history.lines().next(), Some("from a test"), "[{iso}]");
    let out = ctx.ok(&["run", "--rm", "--isolation", iso, "test/committed:v1"]);
    assert_eq!(out.trim(), "hello\nno-group", "[{iso}]");

    // A stopped container: its own sandbox does the work.
    ctx.ok(&["stop", "-t", "0", "c"]);
    std::fs::write(local.path().join("late"), "after stop\n").unwrap();
    let late = local.path().join("late");
    ctx.ok(&["cp", "-q", late.to_str().unwrap(), "c:/data/"]);
    let diff = ctx.ok(&["diff", "c"]);
    assert!(diff.lines().any(|l| l == "A /data/late"), "[{iso}] {diff}");
    let state = ctx.ok(&["inspect", "-f", "{{.State.Status}}", "c"]);
    assert_eq!(
        state.trim(),
        "exited",
        "[{iso}] cp and diff do not start it"
    );

    let e = ctx.fails_with(1, &["diff", "nosuch"]);
    assert_eq!(e, "Error: No such container: nosuch");
    ctx.ok(&["rm", "c"]);
    ctx.ok(&["rmi", "test/committed:v1"]);
    ctx.assert_clean();
}

/// `cp CONTAINER:SRC DEST` by docker's placement rules, `-` and a missing source.
fn copies_out(ctx: &Ctx, iso: &str, local: &Path) {
    let file = local.join("f-copy");
    let o = ctx.run(&["cp", "c:/data/sub/f", file.to_str().unwrap()]);
    assert!(o.status.success(), "[{iso}] {}", husk_e2e::stderr(&o));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "hello\n");
    assert!(
        husk_e2e::stderr(&o).starts_with("Successfully copied "),
        "[{iso}] {}",
        husk_e2e::stderr(&o)
    );
    // Into an existing directory: under its own name; the symlink stays a symlink.
    let into = local.join("into");
    std::fs::create_dir(&into).unwrap();
    ctx.ok(&["cp", "-q", "c:/data", into.to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(into.join("data/sub/f")).unwrap(),
        "hello\n"
    );
    let link = std::fs::read_link(into.join("data/link")).unwrap();
    assert_eq!(link, Path::new("/etc"), "[{iso}]");
    // No setuid bit from a container lands on the host without -a.
    let mode = std::fs::metadata(into.join("data/sub/s")).unwrap().mode() & 0o7777;
    assert_eq!(mode, 0o755, "[{iso}]");
    // `/`: the root's contents, without what is mounted on it.
    let whole = local.join("whole");
    ctx.ok(&["cp", "-q", "c:/", whole.to_str().unwrap()]);
    assert!(
        whole.join("data/sub/f").is_file() && whole.join("bin").is_dir(),
        "[{iso}]"
    );
    assert_eq!(
        std::fs::read_dir(whole.join("proc")).unwrap().count(),
        0,
        "[{iso}]"
    );
    // A missing destination names the copy; `/.` copies the contents.
    let contents = local.join("contents");
    ctx.ok(&["cp", "-q", "c:/data/.", contents.to_str().unwrap()]);
    assert!(contents.join("sub/f").is_file(), "[{iso}]");
    // Owners: the copier's unless -a.
    let owned = local.join("owned");
    ctx.ok(&["cp", "-q", "-a", "c:/data/sub/f", owned.to_str().unwrap()]);
    assert_eq!(std::fs::metadata(&owned).unwrap().uid(), 0);
    // `-`: the tar itself.
    let o = ctx.run(&["cp", "c:/data/sub", "-"]);
    assert!(o.status.success(), "[{iso}] {}", husk_e2e::stderr(&o));
    let mut names: Vec<String> = tar::Archive::new(o.stdout.as_slice())
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    names.sort();
    assert_eq!(names, ["sub/", "sub/f", "sub/s"], "[{iso}]");

    let e = ctx.fails_with(1, &["cp", "c:/nosuch", local.to_str().unwrap()]);
    assert_eq!(e, "Error: Could not find the file /nosuch in container c");
    let e = ctx.fails_with(1, &["cp", "a", "b"]);
    assert_eq!(e, "Error: must specify at least one container source");
    let e = ctx.fails_with(1, &["cp", "c:/a", "c:/b"]);
    assert_eq!(e, "Error: copying between containers is not supported");
    let e = ctx.fails_with(1, &["cp", "c:/data", file.to_str().unwrap()]);
    assert!(e.contains("cannot overwrite non-directory"), "[{iso}] {e}");
}

/// `cp SRC CONTAINER:DEST`: a file, a directory, a tar on stdin; checked from inside.
fn copies_in(ctx: &Ctx, iso: &str, local: &Path) {
    let dir = local.join("up");
    std::fs::create_dir_all(dir.join("deep")).unwrap();
    std::fs::write(dir.join("deep/g"), "from the host\n").unwrap();
    std::fs::write(local.join("single"), "one file\n").unwrap();
    // A symlink goes as itself, under its own name.
    std::os::unix::fs::symlink("single", local.join("lnk")).unwrap();
    ctx.ok(&["cp", "-q", local.join("lnk").to_str().unwrap(), "c:/tmp/"]);
    ctx.ok(&[
        "cp",
        "-q",
        local.join("single").to_str().unwrap(),
        "c:/tmp/",
    ]);
    ctx.ok(&["cp", "-q", dir.to_str().unwrap(), "c:/tmp/renamed"]);

    let mut tarball = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(7);
    h.set_mode(0o640);
    tarball
        .append_data(&mut h, "streamed", "stdin!\n".as_bytes())
        .unwrap();
    let tarball = tarball.into_inner().unwrap();
    let mut child = ctx
        .cmd()
        .args(["cp", "-", "c:/tmp"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&tarball).unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "[{iso}] {}", husk_e2e::stderr(&o));

    let seen = ctx.ok(&[
        "exec",
        "c",
        "sh",
        "-c",
        "cat /tmp/single /tmp/renamed/deep/g /tmp/streamed; stat -c '%u %a' /tmp/single /tmp/streamed; readlink /tmp/lnk",
    ]);
    assert_eq!(
        seen, "one file\nfrom the host\nstdin!\n0 644\n0 640\nsingle\n",
        "[{iso}]"
    );
    let e = ctx.fails_with(1, &["cp", local.join("nosuch").to_str().unwrap(), "c:/tmp"]);
    assert!(e.starts_with("Error: lstat "), "[{iso}] {e}");
    let e = ctx.fails_with(1, &["cp", dir.to_str().unwrap(), "c:/nosuch/deeper"]);
    assert_eq!(
        e,
        "Error: Could not find the file /nosuch/deeper in container c"
    );
}

/// `export`: the root filesystem with the changes, nothing mounted on it; `-o` and stdout.
fn exports(ctx: &Ctx, iso: &str, local: &Path) {
    let out = local.join("export.tar");
    ctx.ok(&["export", "-o", out.to_str().unwrap(), "c"]);
    let mut passwd = String::new();
    let mut names = Vec::new();
    let mut ar = tar::Archive::new(std::fs::File::open(&out).unwrap());
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().display().to_string();
        if name == "etc/passwd" {
            std::io::Read::read_to_string(&mut e, &mut passwd).unwrap();
        }
        names.push(name);
    }
    assert!(passwd.ends_with("extra\n"), "[{iso}] {passwd}");
    assert!(names.iter().any(|n| n == "data/sub/f"), "[{iso}]");
    assert!(!names.iter().any(|n| n == "etc/group"), "[{iso}] deleted");
    assert!(
        !names.iter().any(|n| n.starts_with("proc/") && n.len() > 5),
        "[{iso}] nothing under /proc: {:?}",
        names
            .iter()
            .filter(|n| n.starts_with("proc/"))
            .take(3)
            .collect::<Vec<_>>()
    );
    let o = ctx.run(&["export", "c"]);
    assert!(o.status.success(), "[{iso}] {}", husk_e2e::stderr(&o));
    assert_eq!(o.stdout, std::fs::read(&out).unwrap(), "[{iso}] same bytes");
}
