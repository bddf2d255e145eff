//! The image verbs through the real `husk` binary, each test with its own `--root`:
//! import of the default images (built by scripts/images.sh), `images`, `tag`, `rmi`,
//! `image inspect`, `image prune`, `save` (checked with skopeo) and `load`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed setup step is a failed test

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use husk_e2e::{husk, output, stderr};

fn default_tarball(file: &str) -> PathBuf {
    let p = runtime::paths::cache_dir()
        .expect("no cache dir")
        .join("images")
        .join(file);
    assert!(
        p.is_file(),
        "{} is missing: run scripts/images.sh (scripts/prepare.sh does)",
        p.display()
    );
    p
}

fn run(root: &Path, args: &[&str]) -> Output {
    let mut c = husk(root);
    c.args(args);
    output(c)
}

fn ok(root: &Path, args: &[&str]) -> String {
    let o = run(root, args);
    assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    String::from_utf8(o.stdout).unwrap()
}

/// A failure the docker way: exit 1, one line `Error: ...` on stderr.
fn fails(root: &Path, args: &[&str]) -> String {
    let o = run(root, args);
    assert_eq!(o.status.code(), Some(1), "{args:?}: {}", stderr(&o));
    let e = stderr(&o);
    assert_eq!(e.lines().count(), 1, "one line: {e}");
    assert!(e.starts_with("Error: "), "{e}");
    e.trim_end().to_owned()
}

fn import_busybox(root: &Path, name: &str) -> String {
    let tar = default_tarball("busybox.tar");
    let out = ok(
        root,
        &["import", "-c", r#"CMD ["sh"]"#, tar.to_str().unwrap(), name],
    );
    let id = out.trim().to_owned();
    assert!(id.starts_with("sha256:") && id.len() == 71, "{out}");
    id
}

fn inspect(root: &Path, image: &str) -> serde_json::Value {
    let v: serde_json::Value =
        serde_json::from_str(&ok(root, &["image", "inspect", image])).unwrap();
    v[0].clone()
}

#[test]
fn images_table_tag_inspect_and_rmi() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let id = import_busybox(root, "husk/busybox:latest");
    let short = &id[7..19];
    let table = ok(root, &["images"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    let header: Vec<&str> = lines[0]
        .split("   ")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    assert_eq!(
        header,
        ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"],
        "{table}"
    );
    let row = lines[1];
    assert!(row.starts_with("husk/busybox   latest    "), "{table}");
    assert!(row.contains(short), "{table}");
    assert!(row.contains(" ago "), "{table}");
    assert!(row.ends_with("MB"), "{table}");
    // Columns line up under the header.
    assert_eq!(lines[0].find("IMAGE ID"), row.find(short));
    assert_eq!(ok(root, &["images", "-q"]).trim(), short);

    let i = inspect(root, "husk/busybox");
    assert_eq!(i["Id"], id.as_str());
    assert_eq!(i["RepoTags"], serde_json::json!(["husk/busybox:latest"]));
    assert_eq!(i["Architecture"], "amd64");
    assert_eq!(i["Os"], "linux");
    assert_eq!(i["Config"]["Cmd"], serde_json::json!(["sh"]));
    assert_eq!(i["RootFS"]["Type"], "layers");
    assert_eq!(i["RootFS"]["Layers"].as_array().unwrap().len(), 1);
    assert!(i["Size"].as_u64().unwrap() > 1_000_000);
    // By ID prefix too.
    assert_eq!(inspect(root, short)["Id"], id.as_str());
    // Import built the layer's read-only disk.
    let diff_id: rootfs::digest::Digest =
        i["RootFS"]["Layers"][0].as_str().unwrap().parse().unwrap();
    let disk = rootfs::layer::disk_path(root, &diff_id);
    assert!(disk.is_file(), "{} built", disk.display());

    ok(root, &["tag", "husk/busybox", "localhost:5000/mine/box:v1"]);
    let table = ok(root, &["images"]);
    assert!(table.contains("localhost:5000/mine/box   v1"), "{table}");
    // Removing by ID with two tags needs -f; removing one tag only untags.
    let e = fails(root, &["rmi", short]);
    assert!(e.contains("must be forced"), "{e}");
    assert_eq!(
        ok(root, &["rmi", "localhost:5000/mine/box:v1"]),
        "Untagged: localhost:5000/mine/box:v1\n"
    );
    assert_eq!(
        ok(root, &["rmi", "husk/busybox"]),
        format!("Untagged: husk/busybox:latest\nDeleted: {id}\n")
    );
    assert_eq!(ok(root, &["images", "-q"]), "");
    let blobs = std::fs::read_dir(root.join("images/blobs/sha256"))
        .unwrap()
        .count();
    assert_eq!(blobs, 0, "blobs collected");
    assert!(!disk.exists(), "layer disk collected");
}

#[test]
fn unknown_images_fail_like_docker() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let o = run(root, &["image", "inspect", "nope"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "[]");
    assert_eq!(stderr(&o).trim(), "Error: No such image: nope");
    assert_eq!(fails(root, &["rmi", "nope"]), "Error: No such image: nope");
    assert_eq!(
        fails(root, &["tag", "nope", "x"]),
        "Error: No such image: nope"
    );
    let out = root.join("x.tar");
    assert_eq!(
        fails(root, &["save", "-o", out.to_str().unwrap(), "nope:1"]),
        "Error: No such image: nope:1"
    );
    assert!(!out.exists(), "no partial archive");
    let e = fails(root, &["import", "/nonexistent.tar", "x"]);
    assert!(e.contains("/nonexistent.tar"), "{e}");
    let e = fails(root, &["tag", "nope", "Bad Name"]);
    assert!(e.contains("invalid"), "{e}");
}

#[test]
fn save_is_read_by_skopeo_and_loads_back_with_the_same_id() {
    let work = tempfile::tempdir().unwrap();
    let (a, b) = (work.path().join("a"), work.path().join("b"));
    let id = import_busybox(&a, "husk/busybox:latest");
    for (format, transport) in [("docker", "docker-archive"), ("oci", "oci-archive")] {
        let out = work.path().join(format!("{format}.tar"));
        ok(
            &a,
            &[
                "save",
                "--format",
                format,
                "-o",
                out.to_str().unwrap(),
                "husk/busybox",
            ],
        );
        let sk = Command::new("skopeo")
            .args(["inspect", "--raw"])
            .arg(format!("{transport}:{}", out.display()))
            .output()
            .expect("skopeo (scripts/prepare.sh installs it)");
        assert!(
            sk.status.success(),
            "{}",
            String::from_utf8_lossy(&sk.stderr)
        );
        let cfg = Command::new("skopeo")
            .args(["inspect", "--config", "--raw"])
            .arg(format!("{transport}:{}", out.display()))
            .output()
            .unwrap();
        let digest = format!("sha256:{}", sha256_hex(&cfg.stdout));
        assert_eq!(digest, id, "skopeo sees the same config");
        let loaded = ok(&b, &["load", "-i", out.to_str().unwrap()]);
        assert_eq!(loaded, "Loaded image: husk/busybox:latest\n");
        assert_eq!(inspect(&b, "husk/busybox")["Id"], id.as_str());
    }
}

fn sha256_hex(data: &[u8]) -> String {
    rootfs::digest::Digest::of(data).hex().to_owned()
}

#[test]
fn load_reports_a_truncated_archive() {
    let work = tempfile::tempdir().unwrap();
    let (a, b) = (work.path().join("a"), work.path().join("b"));
    import_busybox(&a, "busy");
    let out = work.path().join("full.tar");
    ok(&a, &["save", "-o", out.to_str().unwrap(), "busy"]);
    let bytes = std::fs::read(&out).unwrap();
    let cut = work.path().join("cut.tar");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let e = fails(&b, &["load", "-i", cut.to_str().unwrap()]);
    assert!(e.contains("cut.tar: truncated or corrupt archive"), "{e}");
    assert_eq!(ok(&b, &["images", "-q"]), "");
    let blobs = std::fs::read_dir(b.join("images/blobs/sha256"))
        .unwrap()
        .count();
    assert_eq!(blobs, 0, "nothing left behind");
}

#[test]
fn prune_removes_dangling_images_after_confirmation() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let old = import_busybox(root, "busy");
    let new = import_busybox(root, "busy"); // a new config (time stamp): `old` is dangling
    assert_ne!(old, new);
    let table = ok(root, &["images"]);
    let dangling = table
        .lines()
        .find(|l| l.starts_with("<none>"))
        .unwrap_or_else(|| panic!("no dangling row: {table}"));
    let cols: Vec<&str> = dangling.split_whitespace().collect();
    assert_eq!(cols[..3], ["<none>", "<none>", &old[7..19]], "{table}");
    // Answering no keeps everything.
    let mut c = husk(root);
    c.args(["image", "prune"]).stdin(Stdio::piped());
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"n\n").unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success());
    assert!(stderr(&o).contains("WARNING! This will remove all dangling images."));
    assert_eq!(ok(root, &["images", "-q"]).lines().count(), 2);
    let out = ok(root, &["image", "prune", "-f"]);
    assert!(
        out.starts_with(&format!("Deleted Images:\ndeleted: {old}\n")),
        "{out}"
    );
    assert!(out.contains("Total reclaimed space: "), "{out}");
    assert_eq!(ok(root, &["images", "-q"]).trim(), &new[7..19]);
}

#[test]
fn debian_default_image_imports() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let tar = default_tarball("debian-bookworm.tar");
    ok(
        root,
        &[
            "import",
            "-c",
            r#"CMD ["bash"]"#,
            tar.to_str().unwrap(),
            "husk/debian:bookworm",
        ],
    );
    let i = inspect(root, "husk/debian:bookworm");
    assert!(i["Size"].as_u64().unwrap() > 50_000_000, "{i}");
    // The layer is a Debian root filesystem.
    let store = rootfs::store::Store::open(root).unwrap();
    let rec = store.resolve("husk/debian:bookworm").unwrap();
    let list = Command::new("tar")
        .arg("-tf")
        .arg(store.blob_path(&rec.layers[0].digest))
        .output()
        .unwrap();
    let found = String::from_utf8_lossy(&list.stdout)
        .lines()
        .any(|l| l.trim_start_matches("./") == "etc/debian_version");
    assert!(found, "etc/debian_version in the layer");
}

/// A tar whose entries are (path, contents); paths are written raw, `../` included.
fn raw_tar(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (p, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.as_gnu_mut().unwrap().name[..p.len()].copy_from_slice(p.as_bytes());
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap()
}

#[test]
fn load_refuses_a_hostile_layer_and_keeps_the_store_clean() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let layer = raw_tar(&[
        ("etc/ok", b"fine"),
        ("../../../../../../tmp/husk-escape-test", b"pwned"),
    ]);
    let diff_id = rootfs::digest::Digest::of(&layer);
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [diff_id.to_string()]},
    }))
    .unwrap();
    let cfg_id = rootfs::digest::Digest::of(&config);
    let manifest = serde_json::to_vec(&serde_json::json!([{
        "Config": format!("blobs/sha256/{}", cfg_id.hex()),
        "RepoTags": ["evil:1"],
        "Layers": [format!("blobs/sha256/{}", diff_id.hex())],
    }]))
    .unwrap();
    let archive = raw_tar(&[
        (&format!("blobs/sha256/{}", cfg_id.hex()), &config),
        (&format!("blobs/sha256/{}", diff_id.hex()), &layer),
        ("manifest.json", &manifest),
    ]);
    let path = work.path().join("evil.tar");
    std::fs::write(&path, archive).unwrap();
    let e = fails(&root, &["load", "-i", path.to_str().unwrap()]);
    assert!(e.contains("evil:1"), "names the image: {e}");
    assert!(
        e.contains(diff_id.hex()) || e.contains(&diff_id.to_string()[..19]),
        "names the layer: {e}"
    );
    assert!(
        !Path::new("/tmp/husk-escape-test").exists(),
        "nothing written outside"
    );
    assert_eq!(ok(&root, &["images", "-q"]), "", "image removed again");
    let blobs = std::fs::read_dir(root.join("images/blobs/sha256"))
        .unwrap()
        .count();
    assert_eq!(blobs, 0, "blobs collected");
}

/// `husk save IMAGE | husk load`, as docker pipes them: the archive goes through standard
/// output and standard input and the image keeps its ID.
#[test]
fn save_to_stdout_loads_from_stdin() {
    let work = tempfile::tempdir().unwrap();
    let (a, b) = (work.path().join("a"), work.path().join("b"));
    let id = import_busybox(&a, "piped/busybox:1");
    let mut save = husk_e2e::husk(&a);
    save.args(["save", "piped/busybox:1"])
        .stdout(std::process::Stdio::piped());
    let mut saver = save.spawn().unwrap();
    let mut load = husk_e2e::husk(&b);
    load.arg("load")
        .stdin(saver.stdout.take().unwrap())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let loader = load.spawn().unwrap();
    drop(load); // the Command holds the pipe's read end
    let o = loader.wait_with_output().unwrap();
    assert!(saver.wait().unwrap().success());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("Loaded image: piped/busybox:1"),
        "{o:?}"
    );
    let inspect: serde_json::Value =
        serde_json::from_str(&ok(&b, &["image", "inspect", "piped/busybox:1"])).unwrap();
    assert_eq!(inspect[0]["Id"], id.as_str());
    // Nothing spooled is left behind.
    let leftovers: Vec<_> = std::fs::read_dir(b.join("images"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".stdin-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// `husk args` with `input` on stdin.
fn with_stdin(root: &Path, args: &[&str], input: &[u8]) -> Output {
    let mut c = husk(root);
    c.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    std::io::Write::write_all(&mut stdin, input).unwrap();
    drop(stdin);
    child.wait_with_output().unwrap()
}

/// `save` writes numeric tar fields every reader takes (uid/gid were NUL bytes, which
/// `import` refused); `import -` reads stdin; tars with empty numeric fields import as Go's
/// tar reads them (as 0); stdin that is empty or not an archive gets one line that names
/// standard input, never the spool file.
#[test]
fn archives_from_stdin_and_husks_own_save_output() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("r");
    import_busybox(&root, "src/busybox:1");
    let saved = work.path().join("saved.tar");
    ok(
        &root,
        &["save", "-o", saved.to_str().unwrap(), "src/busybox:1"],
    );
    let bytes = std::fs::read(&saved).unwrap();
    let mut archive = tar::Archive::new(bytes.as_slice());
    for entry in archive.entries().unwrap() {
        let entry = entry.unwrap();
        let h = entry.header();
        assert_eq!(&h.as_old().uid, b"0000000\0", "{:?}", entry.path());
        assert_eq!((h.uid().unwrap(), h.gid().unwrap()), (0, 0));
    }
    // The save output imports (as a root filesystem, as docker's import would take it).
    let o = with_stdin(&root, &["import", "-", "from/save:1"], &bytes);
    assert!(o.status.success(), "{}", stderr(&o));
    let id = String::from_utf8_lossy(&o.stdout).trim().to_owned();
    assert!(id.starts_with("sha256:"), "{id}");

    // Empty numeric fields, as some tar writers leave them.
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_size(3);
    h.set_mode(0o644);
    h.as_old_mut().uid = [0; 8];
    h.as_old_mut().gid = [b' '; 8];
    h.as_old_mut().mtime = [0; 12];
    h.set_cksum();
    b.append_data(&mut h, "hello.txt", &b"hi\n"[..]).unwrap();
    let tar = b.into_inner().unwrap();
    let o = with_stdin(&root, &["import", "-", "empty/fields:1"], &tar);
    assert!(o.status.success(), "{}", stderr(&o));

    for verb in ["load", "import"] {
        let args: &[&str] = match verb {
            "load" => &["load"],
            _ => &["import", "-"],
        };
        let o = with_stdin(&root, args, b"");
        assert_eq!(o.status.code(), Some(1));
        assert_eq!(
            stderr(&o).trim_end(),
            format!("Error: requested {verb} from stdin, but stdin is empty")
        );
        let o = with_stdin(&root, args, b"this is not an archive at all");
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{e}");
        assert_eq!(e.lines().count(), 1, "{e}");
        assert!(e.contains("standard input"), "{verb}: {e}");
        assert!(!e.contains(".stdin-"), "{verb}: {e}");
    }
    let leftovers: Vec<_> = std::fs::read_dir(root.join("images"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".stdin-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
