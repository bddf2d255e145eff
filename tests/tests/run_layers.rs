//! A three-layer image (busybox, then a layer adding files, then one deleting, replacing and
//! opaquing them) loaded with `husk load` and run: the container sees exactly the tree the
//! layers say (`find / -xdev`), with the replaced contents.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed setup step is a failed test

mod run_common;

use std::collections::BTreeSet;

use rootfs::defaults::DefaultImage;
use rootfs::digest::Digest;
use run_common::{Ctx, backends, scratch};

const IMAGE: &str = "test/layers:latest";

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h
}

/// A layer tar: directories and files (path, contents), paths without a leading slash.
fn layer(dirs: &[&str], files: &[(&str, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for d in dirs {
        let mut h = header(tar::EntryType::Directory, 0o755, 0);
        b.append_data(&mut h, format!("{d}/"), &[][..]).unwrap();
    }
    for (path, text) in files {
        let mut h = header(tar::EntryType::Regular, 0o644, text.len() as u64);
        b.append_data(&mut h, path, text.as_bytes()).unwrap();
    }
    b.into_inner().unwrap()
}

fn middle() -> Vec<u8> {
    layer(
        &[
            "data",
            "data/dir-to-file",
            "data/opaque",
            "data/sub",
            "data/sub/deep",
        ],
        &[
            ("data/keep", "kept"),
            ("data/gone", "deleted above"),
            ("data/replaced", "v1"),
            ("data/dir-to-file/child", "hidden above"),
            ("data/opaque/a", "hidden above"),
            ("data/opaque/b", "hidden above"),
            ("data/sub/deep/x", "x"),
        ],
    )
}

fn top() -> Vec<u8> {
    layer(
        &["data", "data/opaque", "data/new-dir", "bin"],
        &[
            (".wh.home", ""),
            ("bin/.wh.vi", ""),
            ("data/.wh.gone", ""),
            ("data/replaced", "v2"),
            ("data/dir-to-file", "now a file"),
            ("data/opaque/.wh..wh..opq", ""),
            ("data/opaque/c", "c"),
            ("data/new-dir/n", "n"),
        ],
    )
}

/// A docker-archive tar of the three layers.
fn archive(layers: &[Vec<u8>]) -> Vec<u8> {
    let diff_ids: Vec<String> = layers.iter().map(|l| Digest::of(l).to_string()).collect();
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let names: Vec<String> = (0..layers.len())
        .map(|i| format!("l{i}/layer.tar"))
        .collect();
    let manifest = serde_json::json!([{
        "Config": "config.json",
        "RepoTags": [IMAGE],
        "Layers": names,
    }]);
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |path: &str, bytes: &[u8]| {
        let mut h = header(tar::EntryType::Regular, 0o644, bytes.len() as u64);
        b.append_data(&mut h, path, bytes).unwrap();
    };
    add("config.json", config.to_string().as_bytes());
    add("manifest.json", manifest.to_string().as_bytes());
    for (name, l) in names.iter().zip(layers) {
        add(name, l);
    }
    b.into_inner().unwrap()
}

/// Every path in the busybox tarball, as absolute paths.
fn busybox_paths(bytes: &[u8]) -> BTreeSet<String> {
    let mut a = tar::Archive::new(bytes);
    a.entries()
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path().unwrap().to_string_lossy().into_owned();
            let p = p.trim_start_matches("./").trim_end_matches('/');
            format!("/{p}")
        })
        .collect()
}

fn expected(busybox: &[u8]) -> BTreeSet<String> {
    let mut want: BTreeSet<String> = busybox_paths(busybox)
        .into_iter()
        .filter(|p| p != "/home" && !p.starts_with("/home/") && p != "/bin/vi")
        .collect();
    for p in [
        "/data",
        "/data/keep",
        "/data/replaced",
        "/data/dir-to-file",
        "/data/opaque",
        "/data/opaque/c",
        "/data/sub",
        "/data/sub/deep",
        "/data/sub/deep/x",
        "/data/new-dir",
        "/data/new-dir/n",
    ] {
        want.insert(p.to_owned());
    }
    want
}

/// What the runtime itself puts in a container's tree, as docker does.
const RUNTIME_FILES: [&str; 3] = ["/etc/hosts", "/etc/hostname", "/etc/resolv.conf"];

#[test]
fn upper_layers_delete_replace_and_opaque_lower_files() {
    let busybox = std::fs::read(DefaultImage::Busybox.tarball().unwrap()).unwrap();
    let want = expected(&busybox);
    for iso in backends("upper_layers_delete_replace_and_opaque_lower_files") {
        let ctx = Ctx::isolated(iso);
        let file = scratch(&ctx, "layers.tar");
        std::fs::write(&file, archive(&[busybox.clone(), middle(), top()])).unwrap();
        ctx.ok(&["load", "-q", "-i", file.to_str().unwrap()]);
        let out = ctx.ok(&[
            "run",
            "--rm",
            "--isolation",
            iso,
            IMAGE,
            "sh",
            "-c",
            "find / -xdev; echo ==; cat /data/replaced /data/dir-to-file /data/keep",
        ]);
        let (listing, contents) = out.split_once("==\n").unwrap();
        assert_eq!(contents, "v2now a filekept", "[{iso}]");
        let got: BTreeSet<String> = listing.lines().map(str::to_owned).collect();
        let missing: Vec<&String> = want.difference(&got).collect();
        let extra: Vec<&String> = got
            .difference(&want)
            .filter(|p| !RUNTIME_FILES.contains(&p.as_str()))
            .collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "[{iso}] missing {missing:?}, unexpected {extra:?}"
        );
        ctx.assert_clean();
    }
}
