//! Hostile and broken layer tars: each must fail with a one-line error naming the layer, write
//! nothing outside the store and leave no disk and no staging tree behind. Runs as root.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod layer_util;

use std::error::Error as _;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use layer_util::*;
use rootfs::digest::Digest;
use rootfs::layer::{self, LayerError, LayerLimits, LowerLayer};
use tar::EntryType;

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("outside")).unwrap();
        Self { dir }
    }
    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }
    fn outside(&self) -> PathBuf {
        self.dir.path().join("outside")
    }
    fn blob(&self, bytes: &[u8]) -> PathBuf {
        write_blob(self.dir.path(), bytes)
    }
    /// Builds `bytes` (expecting failure) and returns the whole error chain on one line.
    fn fail(&self, bytes: &[u8], lowers: &[LowerLayer], limits: LayerLimits) -> String {
        let blob = self.blob(bytes);
        let err = layer::build_layer_disk_with(&self.root(), &blob, None, lowers, limits)
            .expect_err("hostile layer accepted");
        self.check_clean();
        chain(&err)
    }
    /// One disk, no staging leftovers, nothing written outside.
    fn check_disk_only(&self) {
        let layers = list(&self.root().join("layers"));
        assert!(
            layers.len() == 2 && layers[0].ends_with(".erofs") && layers[1] == "tmp",
            "{layers:?}"
        );
        assert_eq!(list(&self.root().join("layers/tmp")), Vec::<String>::new());
        assert_eq!(list(&self.outside()), Vec::<String>::new());
    }
    /// No disk, no staging leftovers, nothing written outside.
    fn check_clean(&self) {
        assert_eq!(list(&self.root().join("layers")), vec!["tmp".to_owned()]);
        assert_eq!(list(&self.root().join("layers/tmp")), Vec::<String>::new());
        assert_eq!(list(&self.outside()), Vec::<String>::new());
    }
}

fn chain(err: &LayerError) -> String {
    let mut s = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        s.push_str(": ");
        s.push_str(&e.to_string());
        cur = e.source();
    }
    assert!(!s.contains('\n'), "multi-line error: {s}");
    eprintln!("error: {s}");
    s
}

fn assert_names_layer(msg: &str, bytes: &[u8]) {
    assert!(
        msg.starts_with(&format!("layer sha256:{}", sha256(bytes))),
        "{msg}"
    );
}

#[test]
fn dotdot_paths_are_rejected() {
    let env = Env::new();
    for name in [&b"../escape"[..], b"a/../../escape", b"./../../outside/x"] {
        let tar = Tb::new()
            .dir("a")
            .raw(name, EntryType::Regular, b"", b"evil")
            .finish();
        let msg = env.fail(&tar, &[], LayerLimits::default());
        assert_names_layer(&msg, &tar);
        assert!(msg.contains("escapes the image root"), "{msg}");
    }
    assert!(!env.dir.path().join("escape").exists());
}

#[test]
fn writes_through_symlinks_leaving_the_root_are_rejected() {
    let env = Env::new();
    let outside = env.outside().display().to_string();
    let cases = [
        Tb::new()
            .symlink("evil", &outside)
            .file("evil/planted", b"x")
            .finish(),
        Tb::new()
            .symlink("up", "../../../../../../../..")
            .file(&format!("up{outside}/planted"), b"x")
            .finish(),
        Tb::new()
            .dir("d")
            .symlink("d/loop", "loop")
            .file("d/loop/x", b"x")
            .finish(),
        Tb::new().symlink("evil", &outside).dir("evil/sub").finish(),
        Tb::new()
            .symlink("evil", &outside)
            .file("evil/.wh.victim", b"")
            .finish(),
    ];
    fs::write(env.dir.path().join("victim"), b"keep").unwrap();
    for tar in cases {
        let msg = env.fail(&tar, &[], LayerLimits::default());
        assert_names_layer(&msg, &tar);
        assert!(
            msg.contains("written through a symlink that leaves the image root"),
            "{msg}"
        );
    }
    assert_eq!(fs::read(env.dir.path().join("victim")).unwrap(), b"keep");
}

#[test]
fn a_symlink_inside_the_root_may_be_written_through() {
    let env = Env::new();
    let tar = Tb::new()
        .dir("real")
        .symlink("alias", "real")
        .file("alias/f", b"via alias")
        .finish();
    let disk = layer::build_layer_disk(&env.root(), &env.blob(&tar), None, &[]).unwrap();
    let lo = Loop::attach(&disk.path);
    let m = Mount::new("erofs", &lo.0, &env.dir.path().join("m"), "ro");
    assert_eq!(fs::read(m.0.join("real/f")).unwrap(), b"via alias");
}

#[test]
fn hardlinks_escaping_the_root_are_rejected() {
    let env = Env::new();
    let target = env.outside().join("secret");
    fs::write(env.dir.path().join("secret"), b"s").unwrap();
    let bad = Tb::new()
        .raw(b"link", EntryType::Link, b"../../secret", b"")
        .finish();
    let msg = env.fail(&bad, &[], LayerLimits::default());
    assert!(
        msg.contains("hardlink /link: bad target") && msg.contains("escapes"),
        "{msg}"
    );

    let through_symlink = Tb::new()
        .symlink("out", &env.dir.path().display().to_string())
        .hardlink("link", "out/secret")
        .finish();
    let msg = env.fail(&through_symlink, &[], LayerLimits::default());
    assert!(msg.contains("symlink that leaves the image root"), "{msg}");

    // An absolute target is taken inside the image: absent there, so an error.
    let absolute = Tb::new()
        .raw(
            b"link",
            EntryType::Link,
            target.to_string_lossy().as_bytes(),
            b"",
        )
        .finish();
    let msg = env.fail(&absolute, &[], LayerLimits::default());
    assert!(
        msg.contains("is not in this layer or any lower layer"),
        "{msg}"
    );
}

#[test]
fn hardlink_to_a_file_a_lower_layer_deleted_is_rejected() {
    let env = Env::new();
    let l0 = Tb::new().dir("etc").file("etc/shadow", b"s").finish();
    let l1 = Tb::new().dir("etc").file("etc/.wh.shadow", b"").finish();
    let mut lowers = Vec::new();
    for t in [&l0, &l1] {
        let blob = env.blob(t);
        let d = layer::build_layer_disk(&env.root(), &blob, None, &lowers).unwrap();
        lowers.push(LowerLayer {
            blob,
            diff_id: d.diff_id,
        });
    }
    let l2 = Tb::new().hardlink("copy", "etc/shadow").finish();
    let blob = env.blob(&l2);
    let err = layer::build_layer_disk(&env.root(), &blob, None, &lowers).unwrap_err();
    let msg = chain(&err);
    assert!(
        msg.contains("hardlink /copy: target /etc/shadow is not in this layer"),
        "{msg}"
    );
    // Without the whiteout layer the same link works.
    layer::build_layer_disk(&env.root(), &blob, None, &lowers[..1]).unwrap();
}

#[test]
fn decompression_bombs_are_stopped() {
    let env = Env::new();
    // 1 GiB of zeros as one file: a few hundred KiB of zstd.
    let mut b = tar::Builder::new(zstd::Encoder::new(Vec::new(), 1).unwrap());
    let mut h = tar::Header::new_gnu();
    h.set_size(1 << 30);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    b.append_data(&mut h, "zeros", io::repeat(0).take_bytes(1 << 30))
        .unwrap();
    let bomb = b.into_inner().unwrap().finish().unwrap();
    let msg = env.fail(&bomb, &[], LayerLimits::default());
    assert_names_layer(&msg, &bomb);
    assert!(msg.contains("decompression bomb"), "{msg}");

    // The absolute cap, on a tiny layer.
    let small = Tb::new().file("f", &[7u8; 4096]).finish();
    let limits = LayerLimits {
        max_uncompressed: 2048,
        ..LayerLimits::default()
    };
    let msg = env.fail(&gzip(&small), &[], limits);
    assert!(msg.contains("decompression bomb"), "{msg}");
}

trait TakeBytes: io::Read + Sized {
    fn take_bytes(self, n: u64) -> io::Take<Self> {
        io::Read::take(self, n)
    }
}
impl<R: io::Read> TakeBytes for R {}

#[test]
fn truncated_layers_are_rejected() {
    let env = Env::new();
    let tar = Tb::new()
        .dir("d")
        .file("d/big", &vec![1u8; 100_000])
        .file("d/last", b"last")
        .finish();
    let mid_data = &tar[..50_000];
    let msg = env.fail(mid_data, &[], LayerLimits::default());
    assert_names_layer(&msg, mid_data);
    assert!(msg.contains("truncated layer"), "{msg}");

    // Cut at an entry boundary: every entry complete but no end-of-archive marker.
    let no_marker = &tar[..tar.len() - 1024];
    let boundary = no_marker.iter().rposition(|&b| b != 0).unwrap();
    let cut = &no_marker[..boundary.div_ceil(512) * 512];
    let msg = env.fail(cut, &[], LayerLimits::default());
    assert!(msg.contains("truncated layer"), "{msg}");

    let gz = gzip(&tar);
    let msg = env.fail(&gz[..gz.len() / 2], &[], LayerLimits::default());
    assert!(msg.contains("truncated layer"), "{msg}");
}

#[test]
fn diff_id_mismatch_is_rejected() {
    let env = Env::new();
    let tar = Tb::new().file("f", b"content").finish();
    let blob = env.blob(&gzip(&tar));
    let wrong = Digest::of(b"something else");
    let err = layer::build_layer_disk(&env.root(), &blob, Some(&wrong), &[]).unwrap_err();
    let msg = chain(&err);
    assert!(msg.contains("diff_id mismatch"), "{msg}");
    assert!(
        msg.contains(&wrong.to_string()) && msg.contains(&sha256(&tar)),
        "{msg}"
    );
    env.check_clean();
}

#[test]
fn overlay_control_xattrs_are_not_taken_from_layers() {
    let env = Env::new();
    let tar = Tb::new()
        .file_xattr(
            "f",
            b"x",
            &[("trusted.overlay.redirect", b"/etc"), ("user.ok", b"1")],
        )
        .finish();
    let disk = layer::build_layer_disk(&env.root(), &env.blob(&tar), None, &[]).unwrap();
    let lo = Loop::attach(&disk.path);
    let m = Mount::new("erofs", &lo.0, &env.dir.path().join("m"), "ro");
    let attrs = xattrs_all(&m.0.join("f"));
    assert_eq!(attrs, vec!["user.ok".to_owned()]);
}

/// Entries a plain `tar -x` accepts but a naive extractor gets wrong, all in one layer:
/// each becomes exactly what tar makes of it.
#[test]
fn odd_entries_become_what_tar_makes_of_them() {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let env = Env::new();
    let tar = Tb::new()
        // The root entry sets the root's owner and mode.
        .dir_as("./", 0o750, (1, 2))
        // A pax global header carries no file.
        .raw(
            b"pax_global_header",
            EntryType::XGlobalHeader,
            b"",
            b"18 comment=global\n",
        )
        // Device nodes and a fifo keep their kind, numbers and mode.
        .dir("dev")
        .node("dev/null", EntryType::Char, 1, 3)
        .node("dev/loop0", EntryType::Block, 7, 0)
        .node("dev/pipe", EntryType::Fifo, 0, 0)
        // Absolute names and inner `..` are taken inside the image, as docker does.
        .raw(b"/abs/file", EntryType::Regular, b"", b"abs")
        .raw(b"dev/../dotdot", EntryType::Regular, b"", b"dotdot")
        // Duplicates: the later entry wins; a directory entry again merges.
        .file("dup", b"first")
        .file("./dup", b"second")
        .file("was-file", b"f")
        .dir("was-file")
        .file("was-file/inner", b"in")
        .dir("was-dir")
        .file("was-dir/child", b"c")
        .file("was-dir", b"now a file")
        .dir("merged")
        .file("merged/kept", b"k")
        .dir_as("merged", 0o700, (0, 0))
        // Hardlinks: an absolute target is inside the image; a link keeps the old file
        // when a later entry replaces its target.
        .file("linked", b"old")
        .hardlink("link-rel", "linked")
        .raw(b"link-abs", EntryType::Link, b"/linked", b"")
        .file("linked", b"new")
        // aufs bookkeeping is ignored.
        .file(".wh..wh.plnk", b"")
        .finish();
    let disk = layer::build_layer_disk(&env.root(), &env.blob(&tar), None, &[]).unwrap();
    env.check_disk_only();
    let lo = Loop::attach(&disk.path);
    let m = Mount::new("erofs", &lo.0, &env.dir.path().join("m"), "ro");
    let at = |p: &str| m.0.join(p);
    let md = |p: &str| fs::symlink_metadata(at(p)).unwrap();
    let read = |p: &str| String::from_utf8(fs::read(at(p)).unwrap()).unwrap();

    let root = md("");
    assert_eq!(
        (root.mode() & 0o7777, root.uid(), root.gid()),
        (0o750, 1, 2)
    );
    assert!(!at("pax_global_header").exists());
    let null = md("dev/null");
    assert!(null.file_type().is_char_device(), "{null:?}");
    assert_eq!(
        (null.rdev(), null.mode() & 0o7777),
        (libc::makedev(1, 3), 0o666)
    );
    let loop0 = md("dev/loop0");
    assert!(loop0.file_type().is_block_device(), "{loop0:?}");
    assert_eq!(loop0.rdev(), libc::makedev(7, 0));
    assert!(md("dev/pipe").file_type().is_fifo());
    assert_eq!(read("abs/file"), "abs");
    assert_eq!(
        md("abs").mode() & 0o7777,
        0o755,
        "a parent the layer left out"
    );
    assert_eq!(read("dotdot"), "dotdot");
    assert_eq!(read("dup"), "second");
    assert!(md("was-file").is_dir());
    assert_eq!(read("was-file/inner"), "in");
    assert!(md("was-dir").is_file());
    assert_eq!(read("was-dir"), "now a file");
    assert_eq!(md("merged").mode() & 0o7777, 0o700);
    assert_eq!(read("merged/kept"), "k");
    assert_eq!(read("linked"), "new");
    assert_eq!(
        (read("link-rel"), read("link-abs")),
        ("old".into(), "old".into())
    );
    assert_eq!(md("link-rel").ino(), md("link-abs").ino());
    assert_eq!(md("link-rel").nlink(), 2);
    assert_eq!(
        list(&m.0),
        [
            "abs", "dev", "dotdot", "dup", "link-abs", "link-rel", "linked", "merged", "was-dir",
            "was-file"
        ],
        "nothing else, no aufs metadata"
    );
}

/// Entries no tree can hold: each fails the layer with one line naming the layer and the
/// entry, and leaves nothing behind.
#[test]
fn odd_entries_that_cannot_be_materialised_are_rejected() {
    let env = Env::new();
    let cases = [
        (
            Tb::new().file("f", b"x").file("f/under", b"y").finish(),
            "entry /f/under: a parent is not a directory",
        ),
        (
            Tb::new().hardlink("link", "missing").finish(),
            "hardlink /link: target /missing is not in this layer or any lower layer",
        ),
        (
            Tb::new().dir("d").hardlink("link", "d").finish(),
            "hardlink /link: target /d is not a file",
        ),
        (
            Tb::new().hardlink("self", "self").finish(),
            "hardlink /self: target /self is not a file",
        ),
        (
            Tb::new().raw(b"./", EntryType::Regular, b"", b"").finish(),
            "entry /: the image root must be a directory",
        ),
        // tar has no socket type (GNU tar skips sockets): an unknown type byte stands in.
        (
            Tb::new()
                .raw(b"sock", EntryType::new(b'Z'), b"", b"")
                .finish(),
            "entry /sock: unsupported tar entry type 'Z'",
        ),
        (
            Tb::new()
                .file_as("big-owner", b"x", 0o644, (1 << 32, 0))
                .finish(),
            "entry /big-owner: owner 4294967296:0 out of range",
        ),
    ];
    for (tar, why) in cases {
        let msg = env.fail(&tar, &[], LayerLimits::default());
        assert_eq!(msg, format!("layer sha256:{}: {why}", sha256(&tar)));
    }
}

fn xattrs_all(p: &Path) -> Vec<String> {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let mut buf = vec![0u8; 4096];
    // SAFETY: test code; buffer valid for its length.
    let n = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert!(n >= 0);
    buf[..n as usize]
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect()
}
