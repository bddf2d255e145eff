//! Conversion benchmark (ignored by default; numbers, no assertions on time): a ~200 MiB
//! gzip layer of many mixed-size files converted into its EROFS disk by husk, side by side
//! with the tools alone on the same data: `tar -xzf` of the blob, `mkfs.erofs` and
//! `mkfs.ext4 -d` of the already-extracted tree.
//!
//! Run: `cargo test --release -p rootfs --test layer_bench -- --ignored --nocapture`
//! (`HUSK_BENCH_LAYER_MIB` changes the size).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod layer_util;

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use layer_util::write_blob;
use rootfs::layer;

/// xorshift: reproducible, fast, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Data that compresses about 3:1 like binaries and text do: random words from a small set.
fn content(rng: &mut Rng, len: usize) -> Vec<u8> {
    const WORDS: [&[u8]; 8] = [
        b"lib",
        b"usr ",
        b"\x7fELF",
        b"\0\0\0\0",
        b"share/",
        b"#include",
        b"0x1f",
        b"\n",
    ];
    let mut v = Vec::with_capacity(len + 16);
    while v.len() < len {
        let r = rng.next();
        v.extend_from_slice(WORDS[(r & 7) as usize]);
        v.push((r >> 8) as u8);
    }
    v.truncate(len);
    v
}

fn header(ty: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(ty);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_600_000_000);
    h.set_size(size);
    h
}

/// A gzip layer tar of about `mib` MiB; returns (blob bytes, uncompressed size, files).
fn make_layer(mib: u64) -> (Vec<u8>, u64, usize) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut b = tar::Builder::new(enc);
    let (mut total, mut files) = (0u64, 0usize);
    let mut dir = String::new();
    while total < mib << 20 {
        if files % 50 == 0 {
            dir = format!("usr/lib/pkg{:04}", files / 50);
            let mut h = header(tar::EntryType::Directory, 0o755, 0);
            b.append_data(&mut h, &dir, std::io::empty()).unwrap();
        }
        let r = rng.next() % 100;
        let len = match r {
            0..70 => rng.next() % 4096,
            70..95 => 4096 + rng.next() % (60 << 10),
            _ => (64 << 10) + rng.next() % (1 << 20),
        } as usize;
        let data = content(&mut rng, len);
        let mode = if r.is_multiple_of(7) { 0o755 } else { 0o644 };
        let mut h = header(tar::EntryType::Regular, mode, len as u64);
        b.append_data(&mut h, format!("{dir}/f{files}"), &data[..])
            .unwrap();
        total += len as u64;
        files += 1;
    }
    let gz = b.into_inner().unwrap().finish().unwrap();
    (gz, total, files)
}

fn timed(what: &str, f: impl FnOnce()) -> f64 {
    let t = Instant::now();
    f();
    let s = t.elapsed().as_secs_f64();
    eprintln!("  {what:<44} {s:>7.2} s");
    s
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn du(p: &Path) -> u64 {
    fs::metadata(p).unwrap().len()
}

#[test]
#[ignore = "benchmark: run explicitly with --ignored --nocapture"]
fn layer_conversion_benchmark() {
    let mib = std::env::var("HUSK_BENCH_LAYER_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let work = tempfile::tempdir().unwrap();
    let (gz, data, files) = make_layer(mib);
    let blob = write_blob(work.path(), &gz);
    let tar_size = {
        let mut d = flate2::read::GzDecoder::new(&gz[..]);
        std::io::copy(&mut d, &mut std::io::sink()).unwrap()
    };
    let m = |b: u64| b as f64 / (1 << 20) as f64;
    eprintln!(
        "layer: {files} files, {:.0} MiB of data, tar {:.0} MiB, gzip {:.0} MiB",
        m(data),
        m(tar_size),
        m(gz.len() as u64)
    );
    // Drop caches' influence on the first run: the blob was just written, so it is cached
    // for every contender alike.
    let root = work.path().join("root");
    let mut disk = None;
    let husk = timed("husk build_layer_disk (gzip blob -> erofs)", || {
        disk = Some(layer::build_layer_disk(&root, &blob, None, &[]).unwrap());
    });
    let disk = disk.unwrap();
    let tree = work.path().join("tree");
    fs::create_dir(&tree).unwrap();
    let untar = timed("tar -xzf (blob -> tree)", || {
        run(Command::new("tar")
            .arg("-xzf")
            .arg(&blob)
            .arg("-C")
            .arg(&tree)
            .arg("--xattrs"));
    });
    let erofs = work.path().join("plain.erofs");
    let mkfs_erofs = timed("mkfs.erofs (tree -> erofs)", || {
        run(Command::new("mkfs.erofs")
            .arg("--quiet")
            .arg(&erofs)
            .arg(&tree));
    });
    let ext4 = work.path().join("plain.ext4");
    let mkfs_ext4 = timed("mkfs.ext4 -d (tree -> ext4, 2x data size)", || {
        let f = fs::File::create(&ext4).unwrap();
        f.set_len(data * 2 + (64 << 20)).unwrap();
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-d"])
            .arg(&tree)
            .arg(&ext4));
    });
    let rate = |s: f64| m(tar_size) / s;
    eprintln!("results (MiB/s of uncompressed tar):");
    eprintln!(
        "  husk conversion             {:>7.1} MiB/s  disk {:.0} MiB",
        rate(husk),
        m(disk.size)
    );
    eprintln!(
        "  tar -xzf + mkfs.erofs       {:>7.1} MiB/s",
        rate(untar + mkfs_erofs)
    );
    eprintln!(
        "  mkfs.erofs alone            {:>7.1} MiB/s  disk {:.0} MiB",
        rate(mkfs_erofs),
        m(du(&erofs))
    );
    eprintln!(
        "  mkfs.ext4 -d alone          {:>7.1} MiB/s",
        rate(mkfs_ext4)
    );
    std::io::stderr().flush().unwrap();
}
