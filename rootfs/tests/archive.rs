//! load / import / save on real files: round trips that keep the image ID, archives that
//! skopeo reads and writes, and hostile or broken archives that must fail cleanly (a clear
//! error naming image and layer, nothing left in the store).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::{TestImage, assert_empty, blob, layer_tar, write_dir, write_tar};
use rootfs::archive::{self, ArchiveError, ImportOptions, SaveFormat};
use rootfs::digest::Digest;
use rootfs::reference::Reference;
use rootfs::store::Store;

fn two_layers(gzip: bool) -> TestImage {
    let base = layer_tar(&[("bin/tool", b"#!/bin/sh\necho base\n"), ("etc/a", b"a")]);
    let top = layer_tar(&[("etc/b", b"b")]);
    TestImage::new(&[base, top], "sh", gzip)
}

fn store_in(dir: &Path) -> Store {
    Store::open(dir).unwrap()
}

fn skopeo_inspect(transport: &str) -> serde_json::Value {
    let o = Command::new("skopeo")
        .args(["inspect", transport])
        .output()
        .expect("skopeo (scripts/prepare.sh installs it)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn import_save_load_round_trip_keeps_the_id() {
    let work = tempfile::tempdir().unwrap();
    let rootfs_tar = work.path().join("rootfs.tar.gz");
    std::fs::write(&rootfs_tar, common::gzip(&layer_tar(&[("hello", b"hi")]))).unwrap();
    let a = store_in(&work.path().join("a"));
    let opts = ImportOptions {
        message: Some("msg".into()),
        changes: vec![r#"CMD ["/hello"]"#.into(), "ENV A=1".into()],
    };
    let name = Reference::parse("example/imported:v1").unwrap();
    let rec = archive::import(&a, &rootfs_tar, Some(&name), &opts).unwrap();
    let cfg = &rec.config;
    assert_eq!(
        (cfg.architecture.as_str(), cfg.os.as_str()),
        ("amd64", "linux")
    );
    assert_eq!(
        cfg.config.as_ref().unwrap().cmd.as_ref().unwrap(),
        &["/hello"]
    );
    assert_eq!(cfg.history[0].comment.as_deref(), Some("msg"));
    // Stored uncompressed: the layer digest is its diff_id.
    assert_eq!(rec.layers[0].digest, rec.layers[0].diff_id);
    assert_eq!(
        rec.layers[0].diff_id,
        Digest::of(&layer_tar(&[("hello", b"hi")]))
    );

    for (format, transport) in [
        (SaveFormat::Docker, "docker-archive"),
        (SaveFormat::Oci, "oci-archive"),
    ] {
        let out = work.path().join(format!("{transport}.tar"));
        let q = ["example/imported:v1".to_owned()];
        archive::save(&a, &q, format, std::fs::File::create(&out).unwrap()).unwrap();
        let info = skopeo_inspect(&format!("{transport}:{}", out.display()));
        assert_eq!(info["Architecture"], "amd64");
        assert_eq!(info["Layers"][0], rec.layers[0].digest.to_string());
        let b = store_in(&work.path().join(format!("b-{transport}")));
        let loaded = archive::load(&b, &out).unwrap();
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0].id, rec.id, "{transport}: same image ID");
        assert_eq!(loaded[0].references, ["docker.io/example/imported:v1"]);
        assert_eq!(
            b.resolve("example/imported:v1").unwrap().layers,
            loaded[0].layers
        );
    }
}

#[test]
fn loads_what_skopeo_writes() {
    let work = tempfile::tempdir().unwrap();
    let img = two_layers(true);
    let layout = work.path().join("layout");
    write_dir(&layout, &img.oci_files("localhost:5000/src/img:1"));
    // An OCI layout directory with gzip layers, straight.
    let s = store_in(&work.path().join("s"));
    let recs = archive::load(&s, &layout).unwrap();
    assert_eq!(recs[0].id, img.id());
    assert_eq!(recs[0].references, ["localhost:5000/src/img:1"]);
    assert!(recs[0].layers[0].media_type.ends_with("tar+gzip"));
    // skopeo converts it to a docker-archive; husk loads that too, same ID.
    let da = work.path().join("skopeo.tar");
    let o = Command::new("skopeo")
        .args(["copy", "--quiet"])
        .arg(format!("oci:{}", layout.display()))
        .arg(format!(
            "docker-archive:{}:husk/from-skopeo:v2",
            da.display()
        ))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s2 = store_in(&work.path().join("s2"));
    let recs = archive::load(&s2, &da).unwrap();
    assert_eq!(recs[0].id, img.id());
    assert_eq!(recs[0].references, ["docker.io/husk/from-skopeo:v2"]);
}

#[test]
fn old_docker_save_layout_with_symlinked_layer() {
    let work = tempfile::tempdir().unwrap();
    let same = layer_tar(&[("x", b"same")]);
    let img = TestImage::new(&[same.clone(), same.clone()], "sh", false);
    let cfg_name = format!("{}.json", img.id().hex());
    let files = vec![
        (cfg_name.clone(), img.config.clone()),
        ("aaa/layer.tar".to_owned(), same.clone()),
        ("manifest.json".to_owned(),
         serde_json::to_vec(&serde_json::json!([{"Config": cfg_name, "RepoTags": ["old:1"], "Layers": ["aaa/layer.tar", "bbb/layer.tar"]}])).unwrap()),
    ];
    let tar_path = work.path().join("old.tar");
    let mut b = tar::Builder::new(std::fs::File::create(&tar_path).unwrap());
    for (p, d) in &files {
        let mut h = tar::Header::new_gnu();
        h.set_size(d.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, p, &d[..]).unwrap();
    }
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    b.append_link(&mut h, "bbb/layer.tar", "../aaa/layer.tar")
        .unwrap();
    b.finish().unwrap();
    drop(b);
    let s = store_in(&work.path().join("s"));
    let recs = archive::load(&s, &tar_path).unwrap();
    assert_eq!(recs[0].id, img.id());
    assert_eq!(recs[0].layers.len(), 2);
}

/// Loads `files` (as a tar and as a directory) into fresh stores; both must fail and leave
/// the store empty. Returns the tar's error message.
fn load_fails(files: &[(String, Vec<u8>)]) -> String {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("dir");
    write_dir(&dir, files);
    let tar_path = work.path().join("a.tar");
    write_tar(&tar_path, files);
    let mut msg = String::new();
    for (i, src) in [&tar_path, &dir].into_iter().enumerate() {
        let s = store_in(&work.path().join(format!("root{i}")));
        let e = archive::load(&s, src).unwrap_err();
        let cause = std::error::Error::source(&e).map(ToString::to_string);
        let this = format!("{e}: {}", cause.unwrap_or_default());
        assert_empty(&s);
        if i == 0 {
            msg = this;
        }
    }
    msg
}

#[test]
fn layer_not_matching_its_diff_id_is_refused() {
    let img = two_layers(false);
    let mut files = img.docker_files("bad:1");
    // Swap the contents of the second layer for another tar under the same name.
    let evil = layer_tar(&[("etc/b", b"evil")]);
    let name = blob(&Digest::of(&img.layers[1]));
    files.retain(|(p, _)| *p != name);
    files.push((format!("{}.tar", "evil"), evil.clone()));
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&files.iter().find(|f| f.0 == "manifest.json").unwrap().1).unwrap();
    manifest[0]["Layers"][1] = "evil.tar".into();
    files.retain(|(p, _)| p != "manifest.json");
    files.push((
        "manifest.json".into(),
        serde_json::to_vec(&manifest).unwrap(),
    ));
    let e = load_fails(&files);
    assert!(e.contains("image bad:1"), "{e}");
    assert!(e.contains(&format!("layer {}", Digest::of(&evil))), "{e}");
    assert!(
        e.contains(&format!("config says {}", Digest::of(&img.layers[1]))),
        "{e}"
    );
}

#[test]
fn blob_not_matching_its_digest_is_refused() {
    let img = two_layers(true);
    let mut files = img.oci_files("localhost/bad:1");
    let target = blob(&Digest::of(&img.layers[0]));
    for f in &mut files {
        if f.0 == target {
            f.1 = common::gzip(b"tampered");
        }
    }
    let e = load_fails(&files);
    assert!(e.contains("image localhost/bad:1: layer"), "{e}");
    assert!(e.contains("digest mismatch"), "{e}");
}

#[test]
fn manifest_referencing_a_missing_blob_is_refused() {
    let img = two_layers(false);
    let mut files = img.docker_files("gone:1");
    let missing = blob(&Digest::of(&img.layers[1]));
    files.retain(|(p, _)| *p != missing);
    let e = load_fails(&files);
    assert!(
        e.contains(&format!("image gone:1: layer {missing} is missing")),
        "{e}"
    );
    // A path escaping the archive is treated as missing, never read from the host.
    let mut files = img.docker_files("escape:1");
    let mut manifest: serde_json::Value = serde_json::from_slice(&files.last().unwrap().1).unwrap();
    manifest[0]["Layers"][0] = "../../../../../../etc/passwd".into();
    files.pop();
    files.push((
        "manifest.json".into(),
        serde_json::to_vec(&manifest).unwrap(),
    ));
    let e = load_fails(&files);
    assert!(e.contains("etc/passwd is missing"), "{e}");
}

#[test]
fn truncated_archives_are_refused() {
    let work = tempfile::tempdir().unwrap();
    // Big enough layer that it is streamed into the store while the tar is scanned.
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let img = TestImage::new(&[layer_tar(&[("big", &big)])], "sh", false);
    let full = work.path().join("full.tar");
    write_tar(&full, &img.docker_files("t:1"));
    let bytes = std::fs::read(&full).unwrap();
    for cut in [bytes.len() / 2, 1000, bytes.len() - 2048 - 700] {
        let p = work.path().join("cut.tar");
        std::fs::write(&p, &bytes[..cut]).unwrap();
        let s = store_in(&work.path().join(format!("r{cut}")));
        let e = archive::load(&s, &p).unwrap_err();
        assert!(
            matches!(
                e,
                ArchiveError::Corrupt(..)
                    | ArchiveError::UnknownFormat(_)
                    | ArchiveError::Missing { .. }
            ),
            "cut at {cut}: {e}"
        );
        assert_empty(&s);
    }
    // A truncated tarball for import fails too and leaves nothing.
    let s = store_in(&work.path().join("imp"));
    let p = work.path().join("rootfs.tar");
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    let e = archive::import(&s, &p, None, &ImportOptions::default()).unwrap_err();
    assert!(matches!(e, ArchiveError::Corrupt(..)), "{e}");
    assert_empty(&s);
}
