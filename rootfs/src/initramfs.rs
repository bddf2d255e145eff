//! The agent's initramfs: the archive layout the guest kernel unpacks as its first root
//! (`/init` = the static agent, the mount-point directories, `/dev/console`) and the
//! content-addressed copy of it in husk's cache.
//!
//! The archive is uncompressed: under software KVM the guest kernel's decompressor runs
//! emulated at a few million instructions per second, so inflating even a 1 MiB gzip costs
//! far more than reading the extra bytes from guest memory.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::cache::{self, CacheError};
use crate::cpio::{CpioError, CpioWriter};
use crate::elf::{self, ElfError};

/// Version of the archive layout. Bump it whenever [`write_initramfs`] changes what it writes,
/// so cached archives built by older code are not reused.
pub const FORMAT_VERSION: u32 = 1;

/// Length of the cache key in hex digits (64 bits of the SHA-256).
const KEY_HEX_LEN: usize = 16;

/// Directories the agent mounts onto, with their permissions. `sys/fs/cgroup` is not here: it
/// is provided by sysfs once that is mounted.
const DIRS: &[(&str, u32)] = &[
    ("dev", 0o755),
    ("proc", 0o555),
    ("sys", 0o555),
    ("run", 0o755),
    ("tmp", 0o1777),
];

/// `/dev/console` (char 5:1): the kernel opens it as init's stdin/stdout/stderr before running
/// `/init`, which is long before the agent can mount devtmpfs.
const CONSOLE: (&str, u32, u32, u32) = ("dev/console", 0o600, 5, 1);

/// Errors from building the agent's initramfs.
#[derive(Debug, thiserror::Error)]
pub enum InitramfsError {
    /// The agent binary could not be read.
    #[error("cannot read agent binary {0}")]
    ReadAgent(PathBuf, #[source] io::Error),
    /// The agent binary cannot run as `/init`.
    #[error("agent binary {0} cannot be the guest's /init")]
    BadAgent(PathBuf, #[source] ElfError),
    /// The archive could not be encoded.
    #[error("cannot encode the initramfs")]
    Encode(#[source] CpioError),
    /// The archive could not be stored in the cache.
    #[error("cannot store the initramfs in the cache")]
    Cache(#[source] CacheError),
}

/// Writes the initramfs for `agent` (the bytes of a static agent binary) into `out` and
/// returns it. The output is a pure function of `agent` and [`FORMAT_VERSION`].
pub fn write_initramfs<W: Write>(agent: &[u8], out: W) -> Result<W, CpioError> {
    let mut cpio = CpioWriter::new(out);
    for &(dir, mode) in DIRS {
        cpio.dir(dir, mode)?;
    }
    let (console, mode, major, minor) = CONSOLE;
    cpio.char_device(console, mode, major, minor)?;
    cpio.file("init", 0o755, agent)?;
    cpio.finish()
}

/// The cache key of the initramfs for `agent`: the first 16 hex digits of
/// SHA-256(`"husk-initramfs"`, [`FORMAT_VERSION`], agent bytes).
pub fn cache_key(agent: &[u8]) -> String {
    let mut hash = Sha256::new();
    hash.update(b"husk-initramfs\0");
    hash.update(FORMAT_VERSION.to_le_bytes());
    hash.update(agent);
    let mut key = hex::encode(hash.finalize());
    key.truncate(KEY_HEX_LEN);
    key
}

/// Returns `<cache_dir>/initramfs/<key>.cpio` for the agent at `agent_path`, building it
/// (atomically: temp file + rename) only if it is not cached yet. Rejects agents that are not
/// static x86-64 ELF binaries. Concurrent callers may both build; the last rename wins and
/// both files are identical.
pub fn build_cached(agent_path: &Path, cache_dir: &Path) -> Result<PathBuf, InitramfsError> {
    let agent =
        fs::read(agent_path).map_err(|e| InitramfsError::ReadAgent(agent_path.into(), e))?;
    elf::check_static_x86_64(&agent).map_err(|e| InitramfsError::BadAgent(agent_path.into(), e))?;
    let path = cache_dir
        .join("initramfs")
        .join(format!("{}.cpio", cache_key(&agent)));
    if path.is_file() {
        log::debug!("initramfs cache hit: {}", path.display());
        return Ok(path);
    }
    let archive = write_initramfs(&agent, Vec::new()).map_err(InitramfsError::Encode)?;
    cache::write_atomic(&path, |out| out.write_all(&archive)).map_err(InitramfsError::Cache)?;
    log::debug!(
        "initramfs built: {} ({} bytes)",
        path.display(),
        archive.len()
    );
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpio::read::{Parsed, parse};
    use crate::elf::fake;
    use std::os::unix::fs::MetadataExt;

    fn entry<'a>(entries: &'a [Parsed], name: &str) -> &'a Parsed {
        entries
            .iter()
            .find(|e| e.name == name)
            .unwrap_or_else(|| panic!("{name} missing"))
    }

    #[test]
    fn layout_has_init_dirs_and_console() {
        let agent = fake::elf(None, b"odd-sized agent!!");
        let entries = parse(&write_initramfs(&agent, Vec::new()).unwrap());
        let names: Vec<_> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            ["dev", "proc", "sys", "run", "tmp", "dev/console", "init"]
        );
        let init = entry(&entries, "init");
        assert_eq!((init.mode, init.nlink, &init.data), (0o100_755, 1, &agent));
        let console = entry(&entries, "dev/console");
        assert_eq!((console.mode, console.rdev), (0o020_600, (5, 1)));
        assert_eq!(entry(&entries, "tmp").mode, 0o041_777);
        assert_eq!(entry(&entries, "proc").mode, 0o040_555);
    }

    #[test]
    fn output_is_deterministic_and_key_depends_on_agent() {
        let a = fake::elf(None, b"a");
        assert_eq!(
            write_initramfs(&a, Vec::new()).unwrap(),
            write_initramfs(&a, Vec::new()).unwrap()
        );
        assert_eq!(cache_key(&a), cache_key(&a));
        assert_eq!(cache_key(&a).len(), 16);
        assert!(cache_key(&a).chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(cache_key(&a), cache_key(&fake::elf(None, b"b")));
    }

    #[test]
    fn build_cached_writes_once_and_hits_afterwards() {
        let dir = tempfile::tempdir().unwrap();
        let agent_path = dir.path().join("husk-agent");
        fs::write(&agent_path, fake::elf(None, b"agent v1")).unwrap();
        let cache = dir.path().join("cache");

        let first = build_cached(&agent_path, &cache).unwrap();
        let expected = cache.join("initramfs").join(format!(
            "{}.cpio",
            cache_key(&fs::read(&agent_path).unwrap())
        ));
        assert_eq!(first, expected);
        let before = fs::metadata(&first).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));

        let second = build_cached(&agent_path, &cache).unwrap();
        assert_eq!(first, second);
        let after = fs::metadata(&second).unwrap();
        assert_eq!(
            (before.ino(), before.mtime_nsec()),
            (after.ino(), after.mtime_nsec())
        );

        fs::write(&agent_path, fake::elf(None, b"agent v2")).unwrap();
        let third = build_cached(&agent_path, &cache).unwrap();
        assert_ne!(third, first, "a new agent gets a new entry");
        assert_eq!(fs::read_dir(cache.join("initramfs")).unwrap().count(), 2);
    }

    #[test]
    fn build_cached_rejects_dynamic_or_missing_agent_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        let dynamic = dir.path().join("dyn");
        fs::write(
            &dynamic,
            fake::elf(Some("/lib64/ld-linux-x86-64.so.2"), b""),
        )
        .unwrap();
        let err = build_cached(&dynamic, &cache).unwrap_err();
        assert!(
            matches!(err, InitramfsError::BadAgent(_, ElfError::Dynamic(_))),
            "{err}"
        );
        let err = build_cached(&dir.path().join("missing"), &cache).unwrap_err();
        assert!(matches!(err, InitramfsError::ReadAgent(..)), "{err}");
        assert!(!cache.exists());
    }

    #[test]
    fn failed_publish_leaves_no_partial_file() {
        let dir = tempfile::tempdir().unwrap();
        let agent_path = dir.path().join("husk-agent");
        let agent = fake::elf(None, b"agent");
        fs::write(&agent_path, &agent).unwrap();
        let cache = dir.path().join("cache");
        // A directory where the archive should go makes the final rename fail.
        let blocker = cache
            .join("initramfs")
            .join(format!("{}.cpio", cache_key(&agent)));
        fs::create_dir_all(blocker.join("occupied")).unwrap();
        let err = build_cached(&agent_path, &cache).unwrap_err();
        assert!(
            matches!(err, InitramfsError::Cache(CacheError::Publish(..))),
            "{err}"
        );
        let left: Vec<_> = fs::read_dir(cache.join("initramfs")).unwrap().collect();
        assert_eq!(left.len(), 1, "temporary file left behind: {left:?}");
    }

    /// Cross-checks the archive with GNU cpio: extract it as root into a temp dir and compare
    /// the tree, including the device node and permission bits.
    #[test]
    fn system_cpio_extracts_the_same_tree() {
        use std::os::unix::fs::{FileTypeExt, PermissionsExt};
        use std::process::{Command, Stdio};

        if Command::new("cpio")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_err()
        {
            eprintln!("SKIPPED system_cpio_extracts_the_same_tree: no `cpio` (apt install cpio)");
            return;
        }
        if !is_root() {
            eprintln!("SKIPPED system_cpio_extracts_the_same_tree: needs root for mknod");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let agent = fake::elf(None, b"payload with an odd length");
        let archive = write_initramfs(&agent, Vec::new()).unwrap();
        let mut child = Command::new("cpio")
            .args(["-idm", "--quiet", "--no-absolute-filenames"])
            .current_dir(dir.path())
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&archive).unwrap();
        assert!(child.wait().unwrap().success(), "cpio -id failed");

        let root = dir.path();
        let mode = |p: &str| {
            fs::symlink_metadata(root.join(p))
                .unwrap()
                .permissions()
                .mode()
        };
        assert_eq!(fs::read(root.join("init")).unwrap(), agent);
        assert_eq!(mode("init"), 0o100_755);
        for &(d, m) in DIRS {
            assert_eq!(mode(d), 0o040_000 | m, "{d}");
        }
        let console = fs::symlink_metadata(root.join("dev/console")).unwrap();
        assert!(console.file_type().is_char_device());
        let rdev = console.rdev();
        let major = ((rdev >> 8) & 0xfff) | ((rdev >> 32) & 0xffff_f000);
        let minor = (rdev & 0xff) | ((rdev >> 12) & 0xffff_ff00);
        assert_eq!((major, minor), (5, 1));
        assert_eq!(console.permissions().mode() & 0o7777, 0o600);
    }

    /// Whether this process can create device nodes.
    fn is_root() -> bool {
        fs::read_to_string("/proc/self/status")
            .map(|s| {
                s.lines()
                    .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
            })
            .unwrap_or(false)
    }
}
