//! Loop devices for process isolation: attaches a file to a free `/dev/loopN` with
//! `LOOP_CTL_GET_FREE` + `LOOP_CONFIGURE` (read-only or not, always `AUTOCLEAR`, so the
//! device detaches by itself once the last mount and the last open descriptor are gone).
//! A [`LoopDevice`] holds the device open; drop it once the sandbox has mounted it (or died).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// `LOOP_CTL_GET_FREE` (linux/loop.h).
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
/// `LOOP_CONFIGURE` (linux/loop.h, Linux 5.8).
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
/// How often a device another attacher grabbed first is retried.
const ATTEMPTS: usize = 64;

/// Errors from attaching.
#[derive(Debug, thiserror::Error)]
pub enum LoopError {
    /// /dev/loop-control could not be used.
    #[error("cannot get a free loop device from /dev/loop-control")]
    Control(#[source] io::Error),
    /// The backing file could not be opened.
    #[error("cannot open {0}")]
    Backing(PathBuf, #[source] io::Error),
    /// The loop device could not be opened or configured.
    #[error("cannot attach {0} to {1}")]
    Configure(PathBuf, PathBuf, #[source] io::Error),
    /// Every free device was taken by someone else first.
    #[error("no free loop device for {0} after {ATTEMPTS} attempts")]
    Exhausted(PathBuf),
}

/// `struct loop_info64`.
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// `struct loop_config`.
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

const _: () = assert!(std::mem::size_of::<LoopInfo64>() == 232);
const _: () = assert!(std::mem::size_of::<LoopConfig>() == 304);

/// An attached loop device, held open.
#[derive(Debug)]
pub struct LoopDevice {
    path: PathBuf,
    _dev: File,
}

impl LoopDevice {
    /// `/dev/loopN`.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Attaches `file` to a free loop device (autoclear; read-only if `read_only`).
pub fn attach(file: &Path, read_only: bool) -> Result<LoopDevice, LoopError> {
    let backing = OpenOptions::new()
        .read(true)
        .write(!read_only)
        .open(file)
        .map_err(|e| LoopError::Backing(file.to_owned(), e))?;
    let control = File::open("/dev/loop-control").map_err(LoopError::Control)?;
    for _ in 0..ATTEMPTS {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number.
        let n = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE as _) };
        if n < 0 {
            return Err(LoopError::Control(io::Error::last_os_error()));
        }
        let path = PathBuf::from(format!("/dev/loop{n}"));
        let dev = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(&path)
            .map_err(|e| LoopError::Configure(file.to_owned(), path.clone(), e))?;
        match configure(&dev, &backing, read_only) {
            Ok(()) => return Ok(LoopDevice { path, _dev: dev }),
            // Another attacher got this one between GET_FREE and CONFIGURE: next.
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => continue,
            Err(e) => return Err(LoopError::Configure(file.to_owned(), path, e)),
        }
    }
    Err(LoopError::Exhausted(file.to_owned()))
}

fn configure(dev: &File, backing: &File, read_only: bool) -> io::Result<()> {
    // SAFETY: all-zero is a valid LoopConfig (plain integers and byte arrays).
    let mut cfg: LoopConfig = unsafe { std::mem::zeroed() };
    cfg.fd = u32::try_from(backing.as_raw_fd()).map_err(io::Error::other)?;
    cfg.info.lo_flags = LO_FLAGS_AUTOCLEAR | if read_only { LO_FLAGS_READ_ONLY } else { 0 };
    // SAFETY: LOOP_CONFIGURE reads a struct loop_config, which `cfg` is, for the call only.
    let rc = unsafe {
        libc::ioctl(
            dev.as_raw_fd(),
            LOOP_CONFIGURE as _,
            &cfg as *const LoopConfig,
        )
    };
    match rc {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

/// The loop devices whose backing file is `file` (from sysfs), for leak checks.
pub fn devices_backed_by(file: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir("/sys/block") else {
        return Vec::new();
    };
    let want = file.to_string_lossy().into_owned();
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("loop"))
        .filter(|e| {
            std::fs::read_to_string(e.path().join("loop/backing_file"))
                .is_ok_and(|b| b.trim_end() == want)
        })
        .map(|e| PathBuf::from("/dev").join(e.file_name()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attach_read_only_and_autoclear() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("disk.img");
        std::fs::write(&file, vec![7u8; 1 << 20]).unwrap();
        let file = file.canonicalize().unwrap();
        let dev = attach(&file, true).unwrap();
        assert_eq!(devices_backed_by(&file), [dev.path().to_owned()]);
        let name = dev
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let ro = std::fs::read_to_string(format!("/sys/block/{name}/ro")).unwrap();
        assert_eq!(ro.trim(), "1");
        let mut w = OpenOptions::new().write(true).open(dev.path()).unwrap();
        assert!(
            std::io::Write::write_all(&mut w, &[0u8; 512]).is_err(),
            "a read-only loop device took a write"
        );
        drop(w);
        drop(dev);
        // Detaching may be deferred to a kernel worker: wait for it (bounded).
        for _ in 0..100 {
            if devices_backed_by(&file).is_empty() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("autoclear did not detach {}", file.display());
    }
}
