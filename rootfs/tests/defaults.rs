//! The default busybox image built by scripts/images.sh imports into a store, with the
//! applet symlinks and users the README demo needs; importing again changes nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::Read;

use rootfs::defaults::DefaultImage;
use rootfs::store::Store;

#[test]
fn busybox_default_image() {
    let tar = DefaultImage::Busybox.tarball().unwrap();
    assert!(
        tar.is_file(),
        "{} missing: run scripts/images.sh",
        tar.display()
    );
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    let rec = DefaultImage::Busybox.import(&store).unwrap();
    assert_eq!(rec.references, ["docker.io/husk/busybox:latest"]);
    let cmd = rec.config.config.as_ref().unwrap().cmd.clone().unwrap();
    assert_eq!(cmd, ["sh"]);
    let again = DefaultImage::Busybox.import(&store).unwrap();
    assert_eq!(again.id, rec.id, "second import is a no-op");
    assert_eq!(store.list().unwrap().len(), 1);

    let mut links = HashMap::new();
    let mut passwd = String::new();
    let mut ar = tar::Archive::new(store.open_blob(&rec.layers[0].digest).unwrap());
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e
            .path()
            .unwrap()
            .to_string_lossy()
            .trim_start_matches("./")
            .to_owned();
        if let Some(t) = e.link_name().unwrap() {
            links.insert(path.clone(), t.to_string_lossy().into_owned());
        }
        if path == "etc/passwd" {
            e.read_to_string(&mut passwd).unwrap();
        }
    }
    assert_eq!(links.get("bin/sh").map(String::as_str), Some("busybox"));
    assert_eq!(links.get("bin/ls").map(String::as_str), Some("busybox"));
    assert!(passwd.starts_with("root:x:0:0:"), "{passwd}");
    assert!(passwd.contains("nobody:x:65534:65534:"), "{passwd}");
}
