//! A three-layer image converted to EROFS layer disks, stacked with overlayfs on the host, must
//! show exactly the tree a plain sequential untar (with whiteout handling) gives. Needs root,
//! loop devices, erofs and overlayfs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod layer_util;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use layer_util::*;
use rootfs::digest::Digest;
use rootfs::layer::{self, LowerLayer};
use tar::EntryType;

fn base() -> Vec<u8> {
    Tb::new()
        .dir("./")
        .dir("bin")
        .file_as("bin/tool", b"#!/bin/sh\necho tool\n", 0o755, (0, 0))
        .file_as("bin/su", b"ELF su", 0o4755, (0, 0))
        .dir("etc")
        .file("etc/passwd", b"root:x:0:0::/root:/bin/sh\n")
        .dir("etc/conf")
        .file("etc/conf/a", b"a")
        .file("etc/conf/b", b"b")
        .dir("data")
        .file("data/old", b"old")
        .file("data/keep", b"keep")
        .dir("opt")
        .dir("opt/x")
        .file("opt/x/inner", b"inner")
        .dir("lib")
        .file("lib/libfoo.so.1", b"v1")
        .symlink("lib/libfoo.so", "libfoo.so.1")
        .dir("dev")
        .node("dev/null", EntryType::Char, 1, 3)
        .file("file-becomes-dir", b"f")
        .dir("dir-becomes-file")
        .file("dir-becomes-file/child", b"c")
        .file_as("owned", b"secret", 0o640, (1000, 1000))
        .dir("hl")
        .file("hl/a", b"shared")
        .hardlink("hl/b", "hl/a")
        .file_xattr("xa", b"x", &[("user.test", b"one")])
        .dir_as("tmp", 0o1777, (0, 0))
        .finish()
}

fn middle() -> Vec<u8> {
    Tb::new()
        .at(MTIME + 100)
        .dir("./")
        .dir("etc")
        .file(".wh.ignored-at-root-level-is-fine", b"")
        .file("etc/.wh.passwd", b"")
        .dir("etc/conf")
        .file("etc/conf/.wh..wh..opq", b"")
        .file("etc/conf/c", b"c2")
        .dir("data")
        .file("data/.wh.old", b"")
        .dir("file-becomes-dir")
        .file("file-becomes-dir/child", b"now a dir")
        .file("dir-becomes-file", b"now a file")
        .dir("opt")
        .file("opt/.wh.x", b"")
        .file_as("owned", b"secret", 0o600, (2000, 2001))
        .dir("bin")
        .file_as("bin/newsu", b"ELF newsu", 0o4711, (0, 0))
        .hardlink("bin/tool-link", "bin/tool")
        .dir("dev")
        .node("dev/zero", EntryType::Char, 1, 5)
        .node("dev/fifo", EntryType::Fifo, 0, 0)
        .finish()
}

fn top() -> Vec<u8> {
    Tb::new()
        .at(MTIME + 200)
        .dir("./")
        .dir("etc")
        .file("etc/passwd", b"root:x:0:0::/root:/bin/ash\n")
        .dir("opt")
        .dir("opt/x")
        .file("opt/x/new", b"new")
        .dir("data")
        .file("data/.wh.keep", b"")
        .file_xattr("xa", b"x2", &[("user.test", b"two"), ("user.other", b"3")])
        .dir("lib")
        .file("lib/libfoo.so.2", b"v2")
        .symlink("lib/libfoo.so", "libfoo.so.2")
        .dir("hl")
        .file("hl/d", b"own")
        .hardlink("hl/e", "hl/d")
        .finish()
}

#[test]
fn overlay_of_layer_disks_matches_sequential_untar() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let tars = [base(), middle(), top()];
    let blobs = [
        write_blob(work.path(), &gzip(&tars[0])),
        write_blob(work.path(), &zstd(&tars[1])),
        write_blob(work.path(), &tars[2]),
    ];
    let mut lowers: Vec<LowerLayer> = Vec::new();
    let mut disks: Vec<PathBuf> = Vec::new();
    for (tar, blob) in tars.iter().zip(&blobs) {
        let diff_id = Digest::parse(&format!("sha256:{}", sha256(tar))).unwrap();
        let disk = layer::build_layer_disk(&root, blob, Some(&diff_id), &lowers).unwrap();
        assert_eq!(disk.diff_id, diff_id);
        assert_eq!(disk.size, fs::metadata(&disk.path).unwrap().len());
        disks.push(disk.path);
        lowers.push(LowerLayer {
            blob: blob.clone(),
            diff_id,
        });
    }
    // The middle layer links a file of the base layer, so its disk is keyed by chain.
    assert!(
        disks[1].to_string_lossy().ends_with(".chain.erofs"),
        "{disks:?}"
    );
    assert!(disks[0].ends_with(format!("{}.erofs", sha256(&tars[0]))));
    assert_eq!(
        list(&root.join("layers/tmp")),
        Vec::<String>::new(),
        "staging left behind"
    );

    let want_dir = work.path().join("reference");
    reference_untar(&tars, &want_dir);
    let want = snapshot(&want_dir);

    let merged = mount_merged(&disks, &work.path().join("mnt"));
    let got = snapshot(&merged.overlay.0);
    drop(merged);

    let names =
        |m: &std::collections::BTreeMap<String, Node>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(&got), names(&want));
    for (path, w) in &want {
        let g = &got[path];
        // Directory sizes differ by filesystem; everything else must match.
        assert_eq!(g, w, "{path}");
    }
    // Spot checks that the fixture exercises what it claims to.
    assert_eq!(want["/bin/su"].mode, 0o4755);
    assert_eq!(want["/dev/null"].rdev, libc_makedev(1, 3));
    assert_eq!(want["/bin/tool-link"].links, vec!["/bin/tool".to_owned()]);
    assert_eq!(want["/hl/e"].links, vec!["/hl/d".to_owned()]);
    assert!(!want.contains_key("/etc/conf/a") && want.contains_key("/etc/conf/c"));
    assert_eq!(want["/xa"].xattrs.len(), 2);
}

fn libc_makedev(major: u32, minor: u32) -> u64 {
    libc::makedev(major, minor)
}

#[test]
fn layer_disks_are_cached_by_diff_id_and_shared() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let tar = base();
    let diff_id = Digest::parse(&format!("sha256:{}", sha256(&tar))).unwrap();
    let gz = write_blob(work.path(), &gzip(&tar));
    let first = layer::build_layer_disk(&root, &gz, Some(&diff_id), &[]).unwrap();
    let ino = fs::metadata(&first.path).unwrap().ino();
    // Another image carrying the same layer compressed differently reuses the disk, even
    // when its diff_id is only learnt by reading the blob.
    let zst = write_blob(work.path(), &zstd(&tar));
    let second = layer::build_layer_disk(&root, &zst, None, &[]).unwrap();
    assert_eq!(second, first);
    let third = layer::build_layer_disk(&root, &zst, Some(&diff_id), &[]).unwrap();
    assert_eq!(third, first);
    assert_eq!(
        fs::metadata(&first.path).unwrap().ino(),
        ino,
        "disk rebuilt"
    );
    assert_eq!(
        list(&root.join("layers")),
        vec![format!("{}.erofs", diff_id.hex()), "tmp".into()]
    );

    let mut in_use = std::collections::BTreeSet::new();
    in_use.insert(diff_id.clone());
    assert_eq!(
        layer::prune_layer_disks(&root, &in_use, &Default::default()).unwrap(),
        0
    );
    // A disk a container still mounts stays even when no image has the layer any more.
    let keep = std::collections::HashSet::from([root
        .join("layers")
        .join(format!("{}.erofs", diff_id.hex()))]);
    assert_eq!(
        layer::prune_layer_disks(&root, &Default::default(), &keep).unwrap(),
        0
    );
    assert_eq!(
        layer::prune_layer_disks(&root, &Default::default(), &Default::default()).unwrap(),
        first.size
    );
    assert!(!first.path.exists());
}

#[test]
fn scratch_disk_mounts_as_overlay_upper() {
    let work = tempfile::tempdir().unwrap();
    let img = work.path().join("scratch.img");
    layer::create_scratch_disk(&img, 64 << 20).unwrap();
    let tar = Tb::new().dir("./").file("hello", b"hi").finish();
    let root = work.path().join("root");
    let blob = write_blob(work.path(), &tar);
    let disk = layer::build_layer_disk(&root, &blob, None, &[]).unwrap();

    let lo = Loop::attach(&disk.path);
    let lower = Mount::new("erofs", &lo.0, &work.path().join("lower"), "ro");
    let out = std::process::Command::new("losetup")
        .args(["-f", "--show"])
        .arg(&img)
        .output()
        .unwrap();
    let scratch_loop = Loop(String::from_utf8(out.stdout).unwrap().trim().to_owned());
    let scratch = Mount::new("ext4", &scratch_loop.0, &work.path().join("scratch"), "rw");
    let opts = format!(
        "lowerdir={},upperdir={}/upper,workdir={}/work",
        lower.0.display(),
        scratch.0.display(),
        scratch.0.display()
    );
    let merged = Mount::new("overlay", "overlay", &work.path().join("merged"), &opts);
    assert_eq!(fs::read(merged.0.join("hello")).unwrap(), b"hi");
    fs::write(merged.0.join("hello"), b"changed").unwrap();
    fs::remove_file(merged.0.join("hello")).unwrap();
    fs::write(merged.0.join("new"), b"n").unwrap();
    drop(merged);
    assert_eq!(fs::read(scratch.0.join("upper/new")).unwrap(), b"n");
    let wh = fs::symlink_metadata(scratch.0.join("upper/hello")).unwrap();
    assert_eq!(wh.rdev(), 0, "whiteout for the deleted lower file");
    drop(scratch);
    drop(scratch_loop);
    drop(lower);
    drop(lo);
}

/// Stores a two-layer image (the top layer hardlinks a base file) and returns its record.
fn store_image(
    store: &rootfs::store::Store,
    name: &str,
    tars: &[Vec<u8>],
    diff_ids: &[String],
) -> rootfs::store::ImageRecord {
    let mut layers = Vec::new();
    for t in tars {
        let gz = gzip(t);
        let d = store.put_bytes(None, &gz).unwrap();
        layers.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": d.to_string(), "size": gz.len(),
        }));
    }
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
    });
    let config = serde_json::to_vec(&config).unwrap();
    let config_digest = store.put_bytes(None, &config).unwrap();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest.to_string(), "size": config.len(),
        },
        "layers": layers,
    });
    let manifest_digest = store
        .put_bytes(None, &serde_json::to_vec(&manifest).unwrap())
        .unwrap();
    let reference = rootfs::reference::Reference::parse(name).unwrap();
    store
        .add_image(&manifest_digest, &[reference], false)
        .unwrap()
}

#[test]
fn ensure_layer_disks_builds_every_layer_of_a_stored_image() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let store = rootfs::store::Store::open(&root).unwrap();
    let tars = vec![
        Tb::new()
            .dir("bin")
            .file_as("bin/sh", b"sh", 0o755, (0, 0))
            .finish(),
        Tb::new().dir("bin").hardlink("bin/ash", "bin/sh").finish(),
    ];
    let ids: Vec<String> = tars
        .iter()
        .map(|t| format!("sha256:{}", sha256(t)))
        .collect();
    let image = store_image(&store, "test/img:1", &tars, &ids);
    let disks = layer::ensure_layer_disks(&root, &store, &image).unwrap();
    assert_eq!(disks.len(), 2);
    assert!(disks.iter().all(|d| d.path.is_file()));
    let merged = mount_merged(
        &[disks[0].path.clone(), disks[1].path.clone()],
        &work.path().join("m"),
    );
    let a = fs::metadata(merged.overlay.0.join("bin/ash")).unwrap();
    let s = fs::metadata(merged.overlay.0.join("bin/sh")).unwrap();
    assert_eq!((a.ino(), a.nlink(), a.mode() & 0o7777), (s.ino(), 2, 0o755));
    drop(merged);

    // A config whose diff_id does not match the layer: the error names image and layer.
    let wrong = vec![ids[0].clone(), format!("sha256:{}", sha256(b"nope"))];
    let bad = store_image(&store, "test/bad:1", &tars, &wrong);
    let err = layer::ensure_layer_disks(&root, &store, &bad).unwrap_err();
    let mut msg = err.to_string();
    let mut src = std::error::Error::source(&err);
    while let Some(e) = src {
        msg = format!("{msg}: {e}");
        src = e.source();
    }
    assert!(
        msg.starts_with("image docker.io/test/bad:1: layer sha256:"),
        "{msg}"
    );
    assert!(msg.contains("diff_id mismatch"), "{msg}");
}
