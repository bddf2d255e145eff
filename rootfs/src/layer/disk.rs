//! Block images: a staging tree becomes a read-only EROFS image (`mkfs.erofs`), published
//! atomically into `<root>/layers/`; and the per-container writable scratch disk (a sparse
//! ext4 image with `upper/` and `work/` ready for overlayfs).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Errors from making a block image.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// The formatting tool could not be started.
    #[error("cannot run {0} (is {1} installed?)")]
    Spawn(&'static str, &'static str, #[source] io::Error),
    /// The formatting tool failed.
    #[error("{0} failed: {1}")]
    Tool(&'static str, String),
    /// Creating, syncing or renaming the image failed.
    #[error("cannot write disk image {0}")]
    Io(PathBuf, #[source] io::Error),
    /// A scratch disk too small for ext4.
    #[error("scratch disk size {0} is below the 16 MiB minimum")]
    TooSmall(u64),
}

/// Runs a formatting tool, turning a failure into its last stderr line.
fn run(tool: &'static str, package: &'static str, cmd: &mut Command) -> Result<(), DiskError> {
    let out = cmd
        .output()
        .map_err(|e| DiskError::Spawn(tool, package, e))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    Err(DiskError::Tool(
        tool,
        format!("{} ({})", last.trim(), out.status),
    ))
}

/// Builds an EROFS image of `tree` at `out` (uncompressed; per-file mtimes kept), synced.
pub fn make_erofs(tree: &Path, out: &Path) -> Result<(), DiskError> {
    let mut cmd = Command::new("mkfs.erofs");
    cmd.arg("--quiet")
        .arg("--preserve-mtime")
        .arg(out)
        .arg(tree);
    run("mkfs.erofs", "erofs-utils", &mut cmd)?;
    let io_err = |e| DiskError::Io(out.to_owned(), e);
    let f = File::open(out).map_err(io_err)?;
    f.set_permissions(fs::Permissions::from_mode(0o644))
        .map_err(io_err)?;
    f.sync_all().map_err(io_err)
}

/// Renames `tmp` to `dest` and syncs the directory so the name survives a crash.
pub fn publish(tmp: &Path, dest: &Path) -> Result<(), DiskError> {
    let io_err = |e| DiskError::Io(dest.to_owned(), e);
    fs::rename(tmp, dest).map_err(io_err)?;
    if let Some(dir) = dest.parent() {
        File::open(dir).and_then(|d| d.sync_all()).map_err(io_err)?;
    }
    Ok(())
}

/// Smallest scratch disk: ext4 with a journal needs a few MiB of metadata.
const MIN_SCRATCH: u64 = 16 << 20;

/// Creates the writable scratch disk of a container at `path`: a sparse file of `size` bytes
/// formatted ext4 (no reserved blocks), holding empty `upper/` and `work/` directories for
/// an overlay. Fails if `path` exists.
///
/// Formatted for the guest's cost, not the host's: no metadata checksums (the guest would
/// compute a crc32c in software over every inode and directory block it writes: 8% of a
/// warm container's guest time under an emulating KVM, where overlayfs's mount-time probes
/// alone took ~0.4 s more with them) and inode tables zeroed here (`lazy_itable_init=0`,
/// as holes), so no `ext4lazyinit` thread zeroes them in every guest. The journal stays:
/// a VM killed mid-write still leaves a consistent file system.
pub fn create_scratch_disk(path: &Path, size: u64) -> Result<(), DiskError> {
    if size < MIN_SCRATCH {
        return Err(DiskError::TooSmall(size));
    }
    let io_err = |e| DiskError::Io(path.to_owned(), e);
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(io_err)?;
    let made = (|| {
        file.set_len(size).map_err(io_err)?;
        let template = tempfile::tempdir().map_err(io_err)?;
        for d in ["upper", "work"] {
            fs::create_dir(template.path().join(d)).map_err(io_err)?;
            fs::set_permissions(template.path().join(d), fs::Permissions::from_mode(0o755))
                .map_err(io_err)?;
        }
        fs::set_permissions(template.path(), fs::Permissions::from_mode(0o755)).map_err(io_err)?;
        let mut cmd = Command::new("mkfs.ext4");
        cmd.args([
            "-q",
            "-F",
            "-m",
            "0",
            "-O",
            "^metadata_csum",
            "-E",
            "lazy_itable_init=0,lazy_journal_init=1",
            "-d",
        ])
        .arg(template.path())
        .arg(path);
        run("mkfs.ext4", "e2fsprogs", &mut cmd)?;
        file.sync_all().map_err(io_err)
    })();
    if made.is_err() {
        let _ = fs::remove_file(path);
    }
    made
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    #[test]
    fn scratch_disk_is_sparse_ext4() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("scratch.img");
        create_scratch_disk(&p, 1 << 30).unwrap();
        let md = fs::metadata(&p).unwrap();
        assert_eq!(md.len(), 1 << 30);
        assert!(
            md.blocks() * 512 < 64 << 20,
            "allocated {}",
            md.blocks() * 512
        );
        let mut head = [0u8; 2048];
        io::Read::read_exact(&mut File::open(&p).unwrap(), &mut head).unwrap();
        let magic = u16::from_le_bytes([head[1024 + 0x38], head[1024 + 0x39]]);
        assert_eq!(magic, 0xef53, "ext superblock magic");
        assert!(
            create_scratch_disk(&p, 1 << 30).is_err(),
            "existing file kept"
        );
        assert!(matches!(
            create_scratch_disk(&dir.path().join("small"), 1 << 20),
            Err(DiskError::TooSmall(_))
        ));
        assert!(!dir.path().join("small").exists());
    }
}
