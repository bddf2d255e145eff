//! Unix socket paths that fit `sun_path` (108 bytes) wherever the state directory lives: a
//! long path is reached through `/proc/self/fd/<dir fd>/<name>` with the directory held open.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Longest path used as is.
const MAX_DIRECT: usize = 100;

/// A socket path usable for bind/connect while this value lives.
#[derive(Debug)]
pub struct SockPath {
    path: PathBuf,
    _dir: Option<File>,
}

impl SockPath {
    /// The path to hand to bind(2) or connect(2).
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// `dir/name`, shortened if needed.
pub fn short(dir: &Path, name: &str) -> io::Result<SockPath> {
    let full = dir.join(name);
    if full.as_os_str().len() <= MAX_DIRECT {
        return Ok(SockPath {
            path: full,
            _dir: None,
        });
    }
    let d = File::open(dir)?;
    Ok(SockPath {
        path: PathBuf::from(format!("/proc/self/fd/{}/{name}", d.as_raw_fd())),
        _dir: Some(d),
    })
}
