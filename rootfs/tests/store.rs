//! The content store end to end on a real directory: adding images, tags, resolution,
//! removal with blob garbage collection, prune, crash leftovers, concurrent writers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::fs;
use std::time::{Duration, SystemTime};

use common::{TestImage, assert_empty, layer_tar};
use rootfs::digest::Digest;
use rootfs::reference::Reference;
use rootfs::store::{RemoveEvent, Store, StoreError};

fn image(seed: &str) -> TestImage {
    let base = layer_tar(&[("etc/shared", b"shared base layer")]);
    let top = layer_tar(&[("etc/own", seed.as_bytes())]);
    TestImage::new(&[base, top], seed, false)
}

#[test]
fn add_resolve_and_list() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    let img = image("a");
    let rec = img.add_to(&store, &["busybox", "localhost:5000/x/y:v1"]);
    assert_eq!(rec.id, img.id());
    assert_eq!(rec.layers.len(), 2);
    assert_eq!(
        rec.references,
        ["docker.io/library/busybox:latest", "localhost:5000/x/y:v1"]
    );
    assert_eq!(
        rec.size,
        img.layers.iter().map(|l| l.len() as u64).sum::<u64>()
    );
    for q in [
        "busybox",
        "busybox:latest",
        "docker.io/library/busybox",
        "localhost:5000/x/y:v1",
        &img.id().to_string(),
        img.id().hex(),
        &img.id().hex()[..5],
    ] {
        assert_eq!(store.resolve(q).unwrap().id, img.id(), "{q}");
    }
    for q in ["busybox:other", "nope", "localhost:5000/x/y"] {
        let e = store.resolve(q).unwrap_err();
        assert_eq!(e.to_string(), format!("No such image: {q}"));
    }
    assert_eq!(store.list().unwrap().len(), 1);
    // Layers are the ones with the diff_ids of the config.
    assert_eq!(rec.layers[0].diff_id, Digest::of(&img.layers[0]));
}

#[test]
fn missing_blob_is_refused_and_store_unchanged() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    let img = image("a");
    // Only the config and the first layer: the manifest references a missing blob.
    store.put_bytes(None, &img.config).unwrap();
    store.put_bytes(None, &img.layers[0]).unwrap();
    let md = store.put_bytes(None, &img.manifest()).unwrap();
    let e = store
        .add_image(&md, &[Reference::parse("x").unwrap()], false)
        .unwrap_err();
    match e {
        StoreError::MissingBlob(d) => assert_eq!(d, Digest::of(&img.layers[1])),
        other => panic!("{other}"),
    }
    assert!(store.list().unwrap().is_empty());
}

#[test]
fn tags_move_and_shared_layers_are_stored_once() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    let (a, b) = (image("a"), image("b"));
    a.add_to(&store, &["app:1"]);
    b.add_to(&store, &["app:1", "app:2"]);
    // The base layer is shared: 2 images x (manifest, config, top) + 1 base.
    assert_eq!(store.blobs().unwrap().len(), 7);
    assert_eq!(store.resolve("app:1").unwrap().id, b.id());
    let a_rec = store.resolve(a.id().hex()).unwrap();
    assert!(a_rec.references.is_empty(), "a is dangling now");
    store
        .tag(&a.id().to_string(), &Reference::parse("app:3").unwrap())
        .unwrap();
    assert_eq!(store.resolve("app:3").unwrap().id, a.id());
}

#[test]
fn rmi_untags_then_deletes_and_collects_blobs() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    let (a, b) = (image("a"), image("b"));
    a.add_to(&store, &["a:1", "a:2"]);
    b.add_to(&store, &["b"]);
    let none = HashSet::new();
    // An ID naming an image with two tags needs force.
    let e = store.remove_image(a.id().hex(), false, &none).unwrap_err();
    assert!(e.to_string().contains("must be forced"), "{e}");
    let ev = store.remove_image("a:1", false, &none).unwrap();
    assert_eq!(ev, [RemoveEvent::Untagged("a:1".into())]);
    let ev = store.remove_image("a:2", false, &none).unwrap();
    assert_eq!(
        ev,
        [
            RemoveEvent::Untagged("a:2".into()),
            RemoveEvent::Deleted(a.id())
        ]
    );
    // a's own blobs are gone, the shared base layer stays for b.
    let blobs: HashSet<Digest> = store.blobs().unwrap().into_iter().collect();
    assert!(!blobs.contains(&a.id()));
    assert!(!blobs.contains(&Digest::of(&a.layers[1])));
    assert!(blobs.contains(&Digest::of(&a.layers[0])));
    assert_eq!(blobs.len(), 4);
    store.remove_image("b", false, &none).unwrap();
    assert_empty(&store);
}

#[test]
fn rmi_refuses_images_containers_use_unless_forced() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    let a = image("a");
    a.add_to(&store, &["a"]);
    // The runtime tells which images containers use (runtime::lifecycle::in_use).
    let in_use = HashSet::from([a.id()]);
    let e = store.remove_image("a", false, &in_use).unwrap_err();
    assert!(e.to_string().contains("a container is using"), "{e}");
    assert!(store.resolve("a").is_ok());
    // prune never removes it either.
    assert!(store.prune(true, &in_use).unwrap().0.is_empty());
    store.remove_image("a", true, &in_use).unwrap();
    assert_empty(&store);
}

#[test]
fn prune_removes_dangling_or_all_unused() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    let (a, b) = (image("a"), image("b"));
    a.add_to(&store, &["app"]);
    b.add_to(&store, &["app"]); // a becomes dangling
    let (ev, freed) = store.prune(false, &HashSet::new()).unwrap();
    assert_eq!(ev, [RemoveEvent::Deleted(a.id())]);
    assert!(freed > 0);
    assert_eq!(store.list().unwrap().len(), 1);
    let (ev, _) = store.prune(true, &HashSet::new()).unwrap();
    assert_eq!(
        ev,
        [
            RemoveEvent::Untagged("app:latest".into()),
            RemoveEvent::Deleted(b.id())
        ]
    );
    assert_empty(&store);
}

#[test]
fn crash_leftovers_are_ignored_then_cleaned() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    image("a").add_to(&store, &["a"]);
    // What a writer killed mid-blob and mid-database-rewrite leaves behind.
    let blob_tmp = store.dir().join("tmp/4242-half");
    let db_tmp = store.dir().join(".tmp-dead");
    fs::write(&blob_tmp, b"half a layer").unwrap();
    fs::write(&db_tmp, b"{\"version\":1,\"ima").unwrap();
    let reopened = Store::open(root.path()).unwrap();
    assert_eq!(reopened.resolve("a").unwrap().references.len(), 1);
    assert!(
        blob_tmp.exists(),
        "fresh temporaries may belong to a live writer"
    );
    let old = SystemTime::now() - Duration::from_secs(2 * 3600);
    for p in [&blob_tmp, &db_tmp] {
        fs::File::options()
            .write(true)
            .open(p)
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
    let reopened = Store::open(root.path()).unwrap();
    assert!(!blob_tmp.exists() && !db_tmp.exists());
    assert!(reopened.resolve("a").is_ok());
}

#[test]
fn concurrent_writers_lose_nothing() {
    let root = tempfile::tempdir().unwrap();
    let shared = vec![0x5au8; 3 << 20];
    let threads: Vec<_> = (0..6)
        .map(|i| {
            let root = root.path().to_owned();
            let shared = shared.clone();
            std::thread::spawn(move || {
                // Each thread opens its own store handle, as separate processes would.
                let store = Store::open(&root).unwrap();
                let mut ids = Vec::new();
                for j in 0..5 {
                    let (d, _) = store.ingest_blob(None, &shared[..]).unwrap();
                    assert_eq!(d, Digest::of(&shared));
                    let img = image(&format!("t{i}-{j}"));
                    let rec = img.add_to(&store, &[&format!("img{i}:{j}"), "common:tag"]);
                    ids.push(rec.id);
                }
                ids
            })
        })
        .collect();
    let ids: Vec<Digest> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let store = Store::open(root.path()).unwrap();
    let list = store.list().unwrap();
    assert_eq!(list.len(), 30, "every image recorded");
    for i in 0..6 {
        for j in 0..5 {
            let rec = store.resolve(&format!("img{i}:{j}")).unwrap();
            assert_eq!(rec.id, ids[i * 5 + j]);
        }
    }
    let holders = list
        .iter()
        .filter(|r| r.references.iter().any(|t| t.contains("common:tag")))
        .count();
    assert_eq!(holders, 1, "a tag names exactly one image");
    assert_eq!(store.read_blob(&Digest::of(&shared)).unwrap(), shared);
    assert_eq!(fs::read_dir(store.dir().join("tmp")).unwrap().count(), 0);
}
