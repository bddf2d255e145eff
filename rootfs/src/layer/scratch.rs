//! Fast scratch disks: `mkfs.ext4` runs once per disk size into a template kept in
//! `<root>/layers/scratch-v2-<size>.ext4` (published atomically; `v2` is the format of
//! `create_scratch_disk`, so templates of an older format are never reused), and each container's
//! scratch disk is a sparse copy of it: only the few MiB of metadata mkfs wrote are copied
//! (`SEEK_DATA`/`SEEK_HOLE` plus `copy_file_range`, which reflinks where the filesystem
//! can), the rest stays a hole. Every copy is an ext4 file system with the same UUID,
//! which ext4 does not mind (each is mounted in its own sandbox).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

use super::disk::{DiskError, create_scratch_disk};

/// Creates the scratch disk `path` of `size` bytes from the template for that size under
/// `layers` (made on first use). Fails if `path` exists; leaves nothing behind on failure.
pub fn create_scratch_from_template(
    layers: &Path,
    path: &Path,
    size: u64,
) -> Result<(), DiskError> {
    let template = layers.join(format!("scratch-v2-{size}.ext4"));
    if !template.is_file() {
        make_template(layers, &template, size)?;
    }
    let io_err = |e| DiskError::Io(path.to_owned(), e);
    let dst = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(io_err)?;
    let copied = File::open(&template)
        .and_then(|src| sparse_copy(&src, &dst, size))
        .and_then(|()| dst.sync_all());
    if let Err(e) = copied {
        let _ = fs::remove_file(path);
        return Err(io_err(e));
    }
    Ok(())
}

/// Copies the scratch disk `src` sparsely into the new file `dst` (refused if it exists),
/// synced; leaves nothing behind on failure.
pub fn copy_scratch(src: &Path, dst: &Path) -> io::Result<()> {
    let out = OpenOptions::new().write(true).create_new(true).open(dst)?;
    let copied = File::open(src)
        .and_then(|src| {
            let len = src.metadata()?.len();
            sparse_copy(&src, &out, len)
        })
        .and_then(|()| out.sync_all());
    if copied.is_err() {
        let _ = fs::remove_file(dst);
    }
    copied
}

/// Whether the ext4 disk `path` was never mounted writable: its superblock's mount count
/// and last mount time are still mkfs's zeros (every read-write mount raises the one and
/// sets the other). `false` for anything that is not ext4.
pub fn never_mounted(path: &Path) -> io::Result<bool> {
    use std::os::unix::fs::FileExt;
    let mut sb = [0u8; 0x3a];
    File::open(path)?.read_exact_at(&mut sb, SUPERBLOCK)?;
    let le16 = |at: usize| u16::from_le_bytes([sb[at], sb[at + 1]]);
    let mtime = u32::from_le_bytes([sb[0x2c], sb[0x2d], sb[0x2e], sb[0x2f]]);
    Ok(le16(0x38) == EXT4_MAGIC && le16(0x34) == 0 && mtime == 0)
}

/// Where ext4's superblock starts.
const SUPERBLOCK: u64 = 1024;
/// ext4's `s_magic` (at 0x38 in the superblock).
const EXT4_MAGIC: u16 = 0xef53;

/// A SHA-256 over the data extents of `path` (each one's offset, length and bytes) and
/// its length: what a sparse copy preserves, read without the holes.
pub fn data_digest(path: &Path) -> io::Result<String> {
    use sha2::{Digest, Sha256};
    use std::io::{Read, Seek, SeekFrom};
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    let mut h = Sha256::new();
    h.update(len.to_le_bytes());
    for (from, to) in data_extents(&file, len)? {
        h.update(from.to_le_bytes());
        h.update(to.to_le_bytes());
        file.seek(SeekFrom::Start(from))?;
        let copied = io::copy(&mut (&mut file).take(to - from), &mut h)?;
        if copied != to - from {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
        }
    }
    Ok(hex::encode(h.finalize()))
}

/// The `[from, to)` data extents of `file` up to `len` (`SEEK_DATA`/`SEEK_HOLE`).
fn data_extents(file: &File, len: u64) -> io::Result<Vec<(u64, u64)>> {
    let mut extents = Vec::new();
    let mut pos: i64 = 0;
    let end = i64::try_from(len).map_err(io::Error::other)?;
    while pos < end {
        // SAFETY: lseek on a descriptor we own.
        let data = unsafe { libc::lseek(file.as_raw_fd(), pos, libc::SEEK_DATA) };
        if data < 0 {
            let e = io::Error::last_os_error();
            // ENXIO: no data after `pos`.
            return match e.raw_os_error() == Some(libc::ENXIO) {
                true => Ok(extents),
                false => Err(e),
            };
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(file.as_raw_fd(), data, libc::SEEK_HOLE) };
        if hole < 0 {
            return Err(io::Error::last_os_error());
        }
        let to = hole.min(end);
        extents.push((data.cast_unsigned(), to.cast_unsigned()));
        pos = hole;
    }
    Ok(extents)
}

/// Formats a template next to its final name and renames it into place (two husk
/// processes racing both succeed; one template wins).
fn make_template(layers: &Path, template: &Path, size: u64) -> Result<(), DiskError> {
    fs::create_dir_all(layers).map_err(|e| DiskError::Io(layers.to_owned(), e))?;
    let tmp = layers.join(format!(".scratch-v2-{size}.{}.tmp", std::process::id()));
    let _ = fs::remove_file(&tmp);
    create_scratch_disk(&tmp, size)?;
    fs::rename(&tmp, template).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        DiskError::Io(template.to_owned(), e)
    })
}

/// Copies the data extents of `src` into `dst` and gives `dst` length `len`.
fn sparse_copy(src: &File, dst: &File, len: u64) -> io::Result<()> {
    dst.set_len(len)?;
    for (from, to) in data_extents(src, len)? {
        let (from, to) = (i64::try_from(from), i64::try_from(to));
        copy_range(
            src,
            dst,
            from.map_err(io::Error::other)?,
            to.map_err(io::Error::other)?,
        )?;
    }
    Ok(())
}

fn copy_range(src: &File, dst: &File, from: i64, to: i64) -> io::Result<()> {
    let (mut off_in, mut off_out) = (from, from);
    while off_in < to {
        let want = usize::try_from(to - off_in).map_err(io::Error::other)?;
        // SAFETY: both descriptors are ours; the offsets are valid i64s we own.
        let n = unsafe {
            libc::copy_file_range(
                src.as_raw_fd(),
                &mut off_in,
                dst.as_raw_fd(),
                &mut off_out,
                want,
                0,
            )
        };
        match n {
            n if n > 0 => {}
            0 => return Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
            _ => return Err(io::Error::last_os_error()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;

    use super::*;

    #[test]
    fn copies_are_sparse_and_byte_identical_to_the_template() {
        let dir = tempfile::tempdir().unwrap();
        let layers = dir.path().join("layers");
        let (a, b) = (dir.path().join("a.img"), dir.path().join("b.img"));
        create_scratch_from_template(&layers, &a, 64 << 20).unwrap();
        create_scratch_from_template(&layers, &b, 64 << 20).unwrap();
        let template = layers.join(format!("scratch-v2-{}.ext4", 64u64 << 20));
        let mut want = Vec::new();
        File::open(&template)
            .unwrap()
            .read_to_end(&mut want)
            .unwrap();
        for p in [&a, &b] {
            let md = fs::metadata(p).unwrap();
            assert_eq!(md.len(), 64 << 20);
            assert!(md.blocks() * 512 < 32 << 20, "{p:?} is not sparse");
            let mut got = Vec::new();
            File::open(p).unwrap().read_to_end(&mut got).unwrap();
            assert!(got == want, "{p:?} differs from the template");
        }
        // An existing file is refused and kept.
        assert!(create_scratch_from_template(&layers, &a, 64 << 20).is_err());
        assert!(a.exists());
    }

    #[test]
    fn a_fresh_disk_was_never_mounted_and_its_copy_has_its_digest() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.img"), dir.path().join("b.img"));
        create_scratch_from_template(&dir.path().join("layers"), &a, 64 << 20).unwrap();
        assert!(never_mounted(&a).unwrap());
        copy_scratch(&a, &b).unwrap();
        assert!(copy_scratch(&a, &b).is_err(), "an existing copy is refused");
        let digest = data_digest(&a).unwrap();
        assert_eq!(data_digest(&b).unwrap(), digest);
        // What a read-write mount writes: the mount count.
        let f = OpenOptions::new().write(true).open(&b).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, &[1, 0], SUPERBLOCK + 0x34).unwrap();
        assert!(!never_mounted(&b).unwrap());
        assert_ne!(data_digest(&b).unwrap(), digest);
        // Not ext4.
        fs::write(&b, vec![0u8; 4096]).unwrap();
        assert!(!never_mounted(&b).unwrap());
        assert!(never_mounted(&dir.path().join("none")).is_err());
    }
}
