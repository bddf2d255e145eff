//! The host file behind a virtio-blk device: opened read-only (`O_RDONLY`) or
//! read-write, its size checked to be whole sectors, its ID string, and positioned
//! scatter/gather I/O straight between the file and guest memory.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::{Error, ID_LEN, SECTOR_SIZE};

/// A disk image file.
#[derive(Debug)]
pub struct Disk {
    file: File,
    path: PathBuf,
    sectors: u64,
    read_only: bool,
    id: [u8; ID_LEN],
}

/// One guest buffer of a request: host address and length, already bounds-checked
/// against guest memory.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Segment {
    pub ptr: *mut u8,
    pub len: usize,
}

/// Direction of a data transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    /// File to guest (IN).
    Read,
    /// Guest to file (OUT).
    Write,
}

impl Disk {
    /// Opens `path`; read-only disks are opened `O_RDONLY` so no write can reach them.
    pub fn open(path: &Path, read_only: bool) -> Result<Disk, Error> {
        let file = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(path)
            .map_err(|e| Error::Open(path.to_path_buf(), e))?;
        let meta = file
            .metadata()
            .map_err(|e| Error::Metadata(path.to_path_buf(), e))?;
        let size = meta.len();
        if !size.is_multiple_of(SECTOR_SIZE) {
            return Err(Error::UnalignedSize(path.to_path_buf(), size));
        }
        // A stable ID from the host file's identity: device and inode numbers.
        let text = format!("{:x}-{:x}", meta.dev(), meta.ino());
        let mut id = [0u8; ID_LEN];
        let n = text.len().min(ID_LEN);
        id[..n].copy_from_slice(&text.as_bytes()[..n]);
        Ok(Disk {
            file,
            path: path.to_path_buf(),
            sectors: size / SECTOR_SIZE,
            read_only,
            id,
        })
    }

    /// Capacity in 512-byte sectors.
    pub fn sectors(&self) -> u64 {
        self.sectors
    }

    /// Whether writes are refused.
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// The 20-byte ID string GET_ID returns.
    pub fn id(&self) -> &[u8; ID_LEN] {
        &self.id
    }

    /// The image's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes the file's data to stable storage.
    pub(crate) fn flush(&self) -> std::io::Result<()> {
        if self.read_only {
            return Ok(());
        }
        self.file.sync_data()
    }

    /// Moves all of `segments` from/to the file at byte `offset`: one `preadv`/`pwritev`,
    /// finished segment by segment if the kernel transferred less.
    pub(crate) fn transfer(
        &self,
        dir: Direction,
        offset: u64,
        segments: &[Segment],
    ) -> std::io::Result<()> {
        if dir == Direction::Write && self.read_only {
            return Err(std::io::Error::from_raw_os_error(libc::EROFS));
        }
        let total: usize = segments.iter().map(|s| s.len).sum();
        let done = self.vectored(dir, offset, segments)?;
        if done == total {
            return Ok(());
        }
        // Short transfer: finish what is left one segment at a time.
        let mut skip = done;
        let mut pos = offset + done as u64;
        for s in segments {
            if skip >= s.len {
                skip -= s.len;
                continue;
            }
            let mut at = skip;
            skip = 0;
            while at < s.len {
                // SAFETY: `s.ptr + at .. s.ptr + s.len` lies inside the guest memory
                // slice this segment was built from.
                let ptr = unsafe { s.ptr.add(at) };
                let n = self.positioned(dir, pos, ptr, s.len - at)?;
                if n == 0 {
                    return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
                }
                at += n;
                pos += n as u64;
            }
        }
        Ok(())
    }

    fn vectored(
        &self,
        dir: Direction,
        offset: u64,
        segments: &[Segment],
    ) -> std::io::Result<usize> {
        let iov: Vec<libc::iovec> = segments
            .iter()
            .take(libc::UIO_MAXIOV as usize)
            .map(|s| libc::iovec {
                iov_base: s.ptr.cast(),
                iov_len: s.len,
            })
            .collect();
        let off = offset as libc::off_t;
        let fd = self.file.as_raw_fd();
        let n = loop {
            let n = match dir {
                // SAFETY: every iovec points into mapped guest memory of at least
                // `iov_len` bytes (checked when the segment was built), alive for the call.
                Direction::Read => unsafe { libc::preadv(fd, iov.as_ptr(), iov.len() as i32, off) },
                // SAFETY: as above; the kernel only reads the buffers.
                Direction::Write => unsafe {
                    libc::pwritev(fd, iov.as_ptr(), iov.len() as i32, off)
                },
            };
            if n >= 0 {
                break n;
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        };
        Ok(n as usize)
    }

    fn positioned(
        &self,
        dir: Direction,
        offset: u64,
        ptr: *mut u8,
        len: usize,
    ) -> std::io::Result<usize> {
        let fd = self.file.as_raw_fd();
        let off = offset as libc::off_t;
        loop {
            let n = match dir {
                // SAFETY: `ptr..ptr+len` is inside mapped guest memory (see `transfer`).
                Direction::Read => unsafe { libc::pread(fd, ptr.cast(), len, off) },
                // SAFETY: as above; the kernel only reads the buffer.
                Direction::Write => unsafe { libc::pwrite(fd, ptr.cast(), len, off) },
            };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}
