//! `husk pull` and `husk login` end to end against a real loopback registry (Debian's
//! docker-registry, images pushed with skopeo): docker-like output, one-line errors with
//! exit code 1, credentials saved by login and used by pull.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed setup step is a failed test

#[path = "../../rootfs/tests/support/mod.rs"]
mod support;

use husk_e2e::{husk, output, stderr};
use support::oci::{self, ImageSpec};
use support::registry::{Push, Registry};

fn push(reg: &Registry, name: &str) {
    push_random(reg, name, 2, 900, 50_000);
}

/// Pushes `name` with `n` layers of one file of `size` random bytes each (seeded).
fn push_random(reg: &Registry, name: &str, n: u64, seed: u64, size: usize) {
    let layout = tempfile::tempdir().unwrap();
    let layers = (0..n)
        .map(|i| vec![(format!("f{i}"), oci::random_bytes(seed + i, size))])
        .collect();
    oci::write_layout(
        layout.path(),
        "t",
        &[ImageSpec {
            arch: "amd64",
            layers,
        }],
    );
    reg.push(layout.path(), "t", name, Push::OciGzip);
}

#[test]
fn pull_prints_like_docker_and_repull_is_up_to_date() {
    let reg = Registry::start();
    push(&reg, "e2e/img:1");
    let root = tempfile::tempdir().unwrap();
    let name = format!("{}/e2e/img:1", reg.host());
    let mut c = husk(root.path());
    c.args(["pull", "--no-layer-disks", &name]);
    let o = output(c);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(out.contains("1: Pulling from e2e/img"), "{out}");
    assert_eq!(out.matches(": Pull complete").count(), 2, "{out}");
    assert!(
        out.contains(&format!("Status: Downloaded newer image for {name}")),
        "{out}"
    );
    assert_eq!(out.lines().last(), Some(name.as_str()));
    let mut c = husk(root.path());
    c.args(["pull", "--no-layer-disks", &name]);
    let out = String::from_utf8_lossy(&output(c).stdout).into_owned();
    assert!(out.contains("Status: Image is up to date for"), "{out}");
    assert_eq!(out.matches(": Already exists").count(), 2, "{out}");
    let mut c = husk(root.path());
    c.args(["images", "-q"]);
    assert_eq!(
        String::from_utf8_lossy(&output(c).stdout).lines().count(),
        1
    );
}

fn one_line_error(args: &[&str], root: &std::path::Path) -> String {
    let mut c = husk(root);
    c.args(args);
    let o = output(c);
    assert_eq!(o.status.code(), Some(1), "{args:?}: {}", stderr(&o));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "one line, got: {err}");
    err
}

#[test]
fn unknown_tag_is_one_docker_like_line() {
    let reg = Registry::start();
    push(&reg, "e2e/img:1");
    let root = tempfile::tempdir().unwrap();
    let name = format!("{}/e2e/img:nope", reg.host());
    let e = one_line_error(&["pull", &name], root.path());
    assert!(
        e.contains(&format!("manifest for {name} not found: manifest unknown")),
        "{e}"
    );
}

#[test]
fn login_checks_the_password_and_pull_uses_it() {
    let reg = Registry::start_with_basic_auth("bob", "hunter2");
    push(&reg, "e2e/private:1");
    let root = tempfile::tempdir().unwrap();
    let name = format!("{}/e2e/private:1", reg.host());
    let e = one_line_error(&["pull", "--no-layer-disks", &name], root.path());
    assert!(e.contains("pull access denied"), "{e}");
    let bad = login(root.path(), &reg.host(), "nope");
    assert_eq!(bad.status.code(), Some(1));
    let err = stderr(&bad);
    assert_eq!(err.lines().count(), 1, "one line, got: {err}");
    assert!(err.contains("incorrect username or password"), "{err}");
    assert!(!root.path().join("auth.json").exists());
    let o = login(root.path(), &reg.host(), "hunter2");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("Login Succeeded"));
    let auth: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.path().join("auth.json")).unwrap()).unwrap();
    assert!(auth["auths"][reg.host()]["auth"].is_string(), "{auth}");
    let mut c = husk(root.path());
    c.args(["pull", "-q", "--no-layer-disks", &name]);
    let o = output(c);
    assert!(o.status.success(), "{}", stderr(&o));
    // logout forgets them: the pull is denied again.
    let logout = || {
        let mut c = husk(root.path());
        c.args(["logout", &reg.host()]);
        let o = output(c);
        assert!(o.status.success(), "{}", stderr(&o));
        String::from_utf8(o.stdout).unwrap()
    };
    assert_eq!(
        logout(),
        format!("Removing login credentials for {}\n", reg.host())
    );
    let e = one_line_error(&["pull", "--no-layer-disks", &name], root.path());
    assert!(e.contains("pull access denied"), "{e}");
    assert_eq!(logout(), format!("Not logged in to {}\n", reg.host()));
}

/// `husk login -u bob --password-stdin HOST` with `password` on stdin.
fn login(root: &std::path::Path, host: &str, password: &str) -> std::process::Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut c = husk(root);
    c.args(["login", "-u", "bob", "--password-stdin", host]);
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(format!("{password}\n").as_bytes()).unwrap();
    drop(stdin);
    child.wait_with_output().unwrap()
}

/// `husk pull` killed with SIGKILL at many points (manifest, blob downloads, layer disks,
/// the database update): after every kill the store still works, every blob in it matches
/// its digest, and the next pull finishes the job (resuming what was there).
#[test]
fn a_pull_killed_anywhere_leaves_a_working_store() {
    use sha2::Digest as _;
    let reg = Registry::start();
    push_random(&reg, "e2e/big:1", 4, 700, 12 << 20);
    let root = tempfile::tempdir().unwrap();
    let name = format!("{}/e2e/big:1", reg.host());
    let blobs = root.path().join("images/blobs/sha256");
    for delay_ms in [5u64, 20, 50, 100, 150, 250, 400, 600] {
        let mut c = husk(root.path());
        c.args(["pull", "-q", &name])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let mut child = c.spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill(); // SIGKILL
        child.wait().unwrap();
        let mut c = husk(root.path());
        c.args(["images"]);
        let o = output(c);
        assert!(
            o.status.success(),
            "after a kill at {delay_ms} ms: {}",
            stderr(&o)
        );
        for blob in std::fs::read_dir(&blobs).into_iter().flatten().flatten() {
            let hex = blob.file_name().to_string_lossy().into_owned();
            let bytes = std::fs::read(blob.path()).unwrap();
            assert_eq!(
                format!("{:x}", sha2::Sha256::digest(&bytes)),
                hex,
                "blob {hex} does not match its digest after a kill at {delay_ms} ms"
            );
        }
    }
    let mut c = husk(root.path());
    c.args(["pull", &name]);
    let o = output(c);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut c = husk(root.path());
    c.args(["image", "inspect", &name]);
    let o = output(c);
    assert!(o.status.success(), "{}", stderr(&o));
}

/// A layer whose symlink leads out of the image's root and a file written through it:
/// `husk pull` (which builds the layer disks) fails with exit code 1 and one line naming the
/// image, the layer blob and the entry, and the store keeps no trace of the image.
#[test]
fn a_hostile_layer_fails_the_pull_and_leaves_no_image() {
    // Complete headers (owner and mtime too), so that the escape is what fails.
    let header = |kind, size, mode| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h
    };
    let mut b = tar::Builder::new(Vec::new());
    let mut h = header(tar::EntryType::Symlink, 0, 0o777);
    b.append_link(&mut h, "escape", "../../../../../../tmp")
        .unwrap();
    let body = b"pwned\n";
    let mut h = header(tar::EntryType::Regular, body.len() as u64, 0o644);
    b.append_data(&mut h, "escape/husk-pwned", &body[..])
        .unwrap();
    let tar = b.into_inner().unwrap();
    let layout = tempfile::tempdir().unwrap();
    oci::write_layout_of_tars(layout.path(), "t", &[tar]);
    let reg = Registry::start();
    reg.push(layout.path(), "t", "e2e/hostile:1", Push::OciGzip);
    // skopeo compressed the layer: its blob (the only gzip in the registry) names it.
    let layer = reg
        .blob_files()
        .into_iter()
        .find(|f| std::fs::read(f).unwrap().starts_with(&[0x1f, 0x8b]))
        .expect("the pushed layer blob");
    let layer = layer
        .parent()
        .unwrap()
        .file_name()
        .unwrap()
        .to_string_lossy();
    let root = tempfile::tempdir().unwrap();
    let name = format!("{}/e2e/hostile:1", reg.host());
    let e = one_line_error(&["pull", "-q", &name], root.path());
    assert_eq!(
        e.trim_end(),
        format!(
            "Error: image {name}: layer sha256:{layer}: entry /escape/husk-pwned would be \
             written through a symlink that leaves the image root (or loops)"
        )
    );
    let mut c = husk(root.path());
    c.args(["images", "-q"]);
    let o = output(c);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        o.stdout.is_empty(),
        "the hostile image was kept: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    // No layer disk and no staging tree of it either.
    let layers = root.path().join("layers");
    let left: Vec<_> = walk_files(&layers);
    assert!(left.is_empty(), "left in {}: {left:?}", layers.display());
    assert!(!std::path::Path::new("/tmp/husk-pwned").exists());
}

/// Every file (not directory) below `dir`; none if it does not exist.
fn walk_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk_files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// `husk ARGS` in `root`: asserts success, returns stdout.
fn ok(root: &std::path::Path, args: &[&str]) -> String {
    let mut c = husk(root);
    c.args(args);
    let o = output(c);
    assert!(o.status.success(), "husk {args:?}: {}", stderr(&o));
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn push_uploads_what_the_registry_lacks_and_pulls_back_the_same_image() {
    let reg = Registry::start();
    push(&reg, "e2e/src:1");
    let a = tempfile::tempdir().unwrap();
    let host = reg.host();
    ok(
        a.path(),
        &[
            "pull",
            "-q",
            "--no-layer-disks",
            &format!("{host}/e2e/src:1"),
        ],
    );
    let dst = format!("{host}/e2e/dst:2");
    ok(a.path(), &["tag", &format!("{host}/e2e/src:1"), &dst]);
    let out = ok(a.path(), &["push", &dst]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        format!("The push refers to repository [{host}/e2e/dst]")
    );
    assert_eq!(out.matches(": Pushed").count(), 2, "{out}");
    assert!(
        lines.last().unwrap().starts_with("2: digest: sha256:"),
        "{out}"
    );
    let again = ok(a.path(), &["push", &dst]);
    assert_eq!(
        again.matches(": Layer already exists").count(),
        2,
        "{again}"
    );

    // A husk-made image (import) goes too, and comes back with the same ID.
    let tarball = a.path().join("rootfs.tar");
    let mut t = tar::Builder::new(std::fs::File::create(&tarball).unwrap());
    let mut h = tar::Header::new_gnu();
    h.set_size(6);
    h.set_mode(0o644);
    t.append_data(&mut h, "hello", "hello\n".as_bytes())
        .unwrap();
    t.finish().unwrap();
    drop(t);
    let made = format!("{host}/e2e/made:latest");
    let id = ok(a.path(), &["import", tarball.to_str().unwrap(), &made]);
    ok(a.path(), &["image", "push", "-q", &made]);
    let b = tempfile::tempdir().unwrap();
    ok(b.path(), &["pull", "-q", &made]);
    ok(b.path(), &["image", "pull", "-q", &dst]);
    let ids = |root: &std::path::Path, name: &str| {
        ok(root, &["images", "-q", "--no-trunc", name])
            .trim()
            .to_owned()
    };
    assert_eq!(ids(b.path(), &made), id.trim());
    assert_eq!(ids(b.path(), &dst), ids(a.path(), &dst));

    let e = one_line_error(&["push", &format!("{host}/e2e/nosuch")], a.path());
    assert_eq!(
        e.trim_end(),
        format!("Error: An image does not exist locally with the tag: {host}/e2e/nosuch")
    );
}

#[test]
fn push_needs_login_where_the_registry_asks() {
    let reg = Registry::start_with_basic_auth("bob", "hunter2");
    let root = tempfile::tempdir().unwrap();
    let tarball = root.path().join("rootfs.tar");
    let mut t = tar::Builder::new(std::fs::File::create(&tarball).unwrap());
    let mut h = tar::Header::new_gnu();
    h.set_size(2);
    h.set_mode(0o644);
    t.append_data(&mut h, "x", "x\n".as_bytes()).unwrap();
    t.finish().unwrap();
    drop(t);
    let name = format!("{}/e2e/private:1", reg.host());
    ok(root.path(), &["import", tarball.to_str().unwrap(), &name]);
    let e = one_line_error(&["push", &name], root.path());
    assert_eq!(
        e.trim_end(),
        "Error: denied: requested access to the resource is denied"
    );
    let o = login(root.path(), &reg.host(), "hunter2");
    assert!(o.status.success(), "{}", stderr(&o));
    let out = ok(root.path(), &["push", &name]);
    assert!(
        out.lines().last().unwrap().starts_with("1: digest: "),
        "{out}"
    );
}
