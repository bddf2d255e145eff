//! A writer for cpio "newc" archives (`070701`), the format the Linux kernel unpacks as an
//! initramfs. Owns the on-disk encoding only: headers, name/data padding, the `TRAILER!!!`
//! record and the final block padding; what goes *into* an archive is `initramfs`'s business.
//!
//! Entries are deterministic (uid/gid 0, mtime 0, inode numbers in write order) so the same
//! input always yields the same bytes. The writer refuses archives the kernel would unpack
//! wrongly: paths that are absolute or contain `.`/`..`/empty components, entries whose parent
//! directory was not written earlier, duplicate paths, and sizes that do not fit newc's
//! 32-bit fields.

use std::collections::HashSet;
use std::io::{self, Write};

/// The newc magic (no checksums; `070702` would be the CRC variant).
const MAGIC: &[u8; 6] = b"070701";
/// The name of the end-of-archive record.
const TRAILER: &str = "TRAILER!!!";
/// Size of a newc header: the magic plus 13 fields of 8 hex digits.
pub const HEADER_LEN: usize = 6 + 13 * 8;
/// `cpio(1)` pads whole archives to this block size; the kernel skips the zeros.
const BLOCK: u64 = 512;

/// File-type bits of `st_mode`.
const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;
/// Permission bits a caller may set (including setuid/setgid/sticky).
const PERM_MASK: u32 = 0o7777;

/// Errors from writing a cpio archive.
#[derive(Debug, thiserror::Error)]
pub enum CpioError {
    /// The underlying writer failed.
    #[error("cannot write cpio archive")]
    Io(#[source] io::Error),
    /// The path is not a clean relative path.
    #[error(
        "invalid archive path {0:?}: must be relative, non-empty, without `.`, `..` or empty components or NUL"
    )]
    InvalidPath(String),
    /// The entry's parent directory has not been written yet.
    #[error("parent directory of {0:?} is not in the archive yet (write directories first)")]
    MissingParent(String),
    /// The path was already written.
    #[error("duplicate archive path {0:?}")]
    Duplicate(String),
    /// The mode contains bits other than permissions.
    #[error("mode {mode:#o} of {path:?} has bits outside 0o7777 (the writer sets the file type)")]
    InvalidMode { path: String, mode: u32 },
    /// A size does not fit the format's 32-bit fields.
    #[error("{what} of {path:?} is {len} bytes, more than a newc archive can hold")]
    TooLarge {
        path: String,
        what: &'static str,
        len: usize,
    },
    /// More entries than newc inode numbers.
    #[error("too many entries for a newc archive")]
    TooManyEntries,
}

/// Streams a newc archive into `W`. Call [`CpioWriter::finish`] to write the trailer.
#[derive(Debug)]
pub struct CpioWriter<W: Write> {
    inner: W,
    /// Bytes written so far, for padding.
    offset: u64,
    /// Inode number of the next entry.
    next_ino: u32,
    /// Every path written, to catch duplicates.
    paths: HashSet<String>,
    /// Directories written, to check parents exist.
    dirs: HashSet<String>,
}

/// The metadata of one entry, before encoding.
struct Entry<'a> {
    path: &'a str,
    mode: u32,
    nlink: u32,
    rdev: (u32, u32),
    data: &'a [u8],
}

impl<W: Write> CpioWriter<W> {
    /// Starts an empty archive.
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            offset: 0,
            next_ino: 1,
            paths: HashSet::new(),
            dirs: HashSet::new(),
        }
    }

    /// Adds a directory with permission bits `mode`.
    pub fn dir(&mut self, path: &str, mode: u32) -> Result<(), CpioError> {
        let mode = S_IFDIR | check_mode(path, mode)?;
        self.entry(Entry {
            path,
            mode,
            nlink: 2,
            rdev: (0, 0),
            data: &[],
        })?;
        self.dirs.insert(path.to_owned());
        Ok(())
    }

    /// Adds a regular file with permission bits `mode` and contents `data`.
    pub fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> Result<(), CpioError> {
        let mode = S_IFREG | check_mode(path, mode)?;
        self.entry(Entry {
            path,
            mode,
            nlink: 1,
            rdev: (0, 0),
            data,
        })
    }

    /// Adds a symbolic link at `path` pointing to `target` (stored as the entry's data).
    pub fn symlink(&mut self, path: &str, target: &str) -> Result<(), CpioError> {
        if target.is_empty() || target.contains('\0') {
            return Err(CpioError::InvalidPath(target.to_owned()));
        }
        let data = target.as_bytes();
        self.entry(Entry {
            path,
            mode: S_IFLNK | 0o777,
            nlink: 1,
            rdev: (0, 0),
            data,
        })
    }

    /// Adds a character device node `major:minor` with permission bits `mode`.
    pub fn char_device(
        &mut self,
        path: &str,
        mode: u32,
        major: u32,
        minor: u32,
    ) -> Result<(), CpioError> {
        let mode = S_IFCHR | check_mode(path, mode)?;
        self.entry(Entry {
            path,
            mode,
            nlink: 1,
            rdev: (major, minor),
            data: &[],
        })
    }

    /// Writes the `TRAILER!!!` record, pads the archive to a 512-byte multiple as `cpio(1)`
    /// does, flushes, and returns the inner writer.
    pub fn finish(mut self) -> Result<W, CpioError> {
        self.record(
            0,
            &Entry {
                path: TRAILER,
                mode: 0,
                nlink: 1,
                rdev: (0, 0),
                data: &[],
            },
        )?;
        let pad = pad_len(self.offset, BLOCK);
        self.put(&vec![0; pad])?;
        self.inner.flush().map_err(CpioError::Io)?;
        Ok(self.inner)
    }

    /// Validates and writes one entry, assigning it the next inode number.
    fn entry(&mut self, entry: Entry<'_>) -> Result<(), CpioError> {
        check_path(entry.path)?;
        if self.paths.contains(entry.path) {
            return Err(CpioError::Duplicate(entry.path.to_owned()));
        }
        let parent = entry.path.rsplit_once('/').map(|(parent, _)| parent);
        if parent.is_some_and(|parent| !self.dirs.contains(parent)) {
            return Err(CpioError::MissingParent(entry.path.to_owned()));
        }
        let ino = self.next_ino;
        self.next_ino = ino.checked_add(1).ok_or(CpioError::TooManyEntries)?;
        self.record(ino, &entry)?;
        self.paths.insert(entry.path.to_owned());
        Ok(())
    }

    /// Encodes header, name and data, each padded to 4 bytes.
    fn record(&mut self, ino: u32, e: &Entry<'_>) -> Result<(), CpioError> {
        let name_len = fit(e.path, "name", e.path.len() + 1)?;
        let data_len = fit(e.path, "data", e.data.len())?;
        let fields = [
            ino, e.mode, 0, 0, e.nlink, 0, data_len, 0, 0, e.rdev.0, e.rdev.1, name_len, 0,
        ];
        let mut header = Vec::with_capacity(HEADER_LEN + e.path.len() + 4);
        header.extend_from_slice(MAGIC);
        for field in fields {
            header.extend_from_slice(format!("{field:08x}").as_bytes());
        }
        header.extend_from_slice(e.path.as_bytes());
        header.push(0);
        self.put(&header)?;
        self.pad4()?;
        self.put(e.data)?;
        self.pad4()
    }

    fn pad4(&mut self) -> Result<(), CpioError> {
        let pad = pad_len(self.offset, 4);
        self.put(&[0; 3][..pad])
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), CpioError> {
        self.inner.write_all(bytes).map_err(CpioError::Io)?;
        self.offset += bytes.len() as u64;
        Ok(())
    }
}

/// Bytes needed to bring `offset` to a multiple of `align`.
fn pad_len(offset: u64, align: u64) -> usize {
    // The result is < align (at most 511), so it always fits usize.
    ((align - offset % align) % align) as usize
}

/// Converts a length to a newc field, or says which one overflowed.
fn fit(path: &str, what: &'static str, len: usize) -> Result<u32, CpioError> {
    u32::try_from(len).map_err(|_| CpioError::TooLarge {
        path: path.to_owned(),
        what,
        len,
    })
}

fn check_mode(path: &str, mode: u32) -> Result<u32, CpioError> {
    if mode & !PERM_MASK != 0 {
        return Err(CpioError::InvalidMode {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(mode)
}

fn check_path(path: &str) -> Result<(), CpioError> {
    let clean = !path.is_empty()
        && !path.contains('\0')
        && path
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..");
    if clean {
        Ok(())
    } else {
        Err(CpioError::InvalidPath(path.to_owned()))
    }
}

/// A minimal newc reader for tests: checks magic and alignment, stops at the trailer.
#[cfg(test)]
pub(crate) mod read {
    /// One parsed entry.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Parsed {
        pub name: String,
        pub ino: u32,
        pub mode: u32,
        pub nlink: u32,
        pub rdev: (u32, u32),
        pub data: Vec<u8>,
    }

    /// Parses every entry before `TRAILER!!!`; panics on malformed input.
    pub fn parse(bytes: &[u8]) -> Vec<Parsed> {
        let mut off = 0;
        let mut out = Vec::new();
        loop {
            assert_eq!(off % 4, 0, "record at {off} not 4-byte aligned");
            assert_eq!(&bytes[off..off + 6], super::MAGIC, "bad magic at {off}");
            let at = off;
            let field = |i: usize| {
                let s = std::str::from_utf8(&bytes[at + 6 + i * 8..at + 14 + i * 8]).unwrap();
                u32::from_str_radix(s, 16).unwrap()
            };
            let (size, namesize) = (field(6) as usize, field(11) as usize);
            let name_at = off + super::HEADER_LEN;
            assert_eq!(bytes[name_at + namesize - 1], 0, "name not NUL-terminated");
            let name = std::str::from_utf8(&bytes[name_at..name_at + namesize - 1]).unwrap();
            let data_at = (name_at + namesize).next_multiple_of(4);
            assert!(
                bytes[name_at + namesize..data_at].iter().all(|&b| b == 0),
                "name pad"
            );
            let end = data_at + size;
            assert!(
                bytes[end..end.next_multiple_of(4)].iter().all(|&b| b == 0),
                "data pad"
            );
            off = end.next_multiple_of(4);
            if name == super::TRAILER {
                assert!(bytes[off..].iter().all(|&b| b == 0), "junk after trailer");
                assert_eq!(bytes.len() % 512, 0, "archive not block-padded");
                return out;
            }
            out.push(Parsed {
                name: name.to_owned(),
                ino: field(0),
                mode: field(1),
                nlink: field(4),
                rdev: (field(9), field(10)),
                data: bytes[data_at..end].to_vec(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(build: impl FnOnce(&mut CpioWriter<Vec<u8>>)) -> Vec<u8> {
        let mut w = CpioWriter::new(Vec::new());
        build(&mut w);
        w.finish().unwrap()
    }

    #[test]
    fn empty_archive_is_a_padded_trailer() {
        let bytes = archive(|_| {});
        assert_eq!(bytes.len(), 512);
        assert_eq!(&bytes[..6], MAGIC);
        let name = &bytes[HEADER_LEN..HEADER_LEN + TRAILER.len()];
        assert_eq!(name, TRAILER.as_bytes());
        assert!(
            bytes[HEADER_LEN + TRAILER.len() + 1..]
                .iter()
                .all(|&b| b == 0)
        );
    }

    #[test]
    fn header_fields_are_hex_in_newc_order() {
        let bytes = archive(|w| w.char_device("console", 0o600, 5, 1).unwrap());
        let field = |i: usize| {
            let s = std::str::from_utf8(&bytes[6 + i * 8..6 + (i + 1) * 8]).unwrap();
            u32::from_str_radix(s, 16).unwrap()
        };
        assert_eq!(field(0), 1, "ino");
        assert_eq!(field(1), 0o020_600, "mode");
        assert_eq!(field(4), 1, "nlink");
        assert_eq!(field(6), 0, "filesize");
        assert_eq!((field(9), field(10)), (5, 1), "rdev");
        assert_eq!(field(11), 8, "namesize includes NUL");
    }

    #[test]
    fn every_record_is_padded_for_odd_name_and_data_sizes() {
        // Names of length 1..=4 and data of length 0..=5 cover every padding remainder.
        let bytes = archive(|w| {
            for (i, name) in ["a", "bb", "ccc", "dddd"].iter().enumerate() {
                w.file(name, 0o644, &b"xyzw"[..i]).unwrap();
            }
            w.file("e", 0o640, b"12345").unwrap();
        });
        let entries = read::parse(&bytes);
        let names: Vec<_> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["a", "bb", "ccc", "dddd", "e"]);
        assert_eq!(entries[2].data, b"xy");
        assert_eq!(entries[4].data, b"12345");
        assert_eq!(entries[4].mode, 0o100_640);
        let inos: Vec<_> = entries.iter().map(|e| e.ino).collect();
        assert_eq!(inos, [1, 2, 3, 4, 5]);
    }

    #[test]
    fn rejects_bad_paths() {
        let mut w = CpioWriter::new(Vec::new());
        for bad in ["", "/init", "a//b", "./x", "a/../b", "a/.", "nul\0"] {
            assert!(
                matches!(w.file(bad, 0o644, b""), Err(CpioError::InvalidPath(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn rejects_missing_parent_duplicates_and_type_bits() {
        let mut w = CpioWriter::new(Vec::new());
        assert!(matches!(
            w.file("dev/console", 0o600, b""),
            Err(CpioError::MissingParent(_))
        ));
        w.dir("dev", 0o755).unwrap();
        w.file("dev/null", 0o600, b"").unwrap();
        assert!(matches!(w.dir("dev", 0o755), Err(CpioError::Duplicate(_))));
        assert!(matches!(
            w.file("x", 0o100_644, b""),
            Err(CpioError::InvalidMode { .. })
        ));
        // A file is not a directory: nothing may live under it.
        assert!(matches!(
            w.file("dev/null/x", 0o600, b""),
            Err(CpioError::MissingParent(_))
        ));
    }

    #[test]
    fn symlink_stores_target_as_data() {
        let bytes = archive(|w| w.symlink("sbin", "bin").unwrap());
        let start = HEADER_LEN + "sbin\0".len();
        let data_start = start.next_multiple_of(4);
        assert_eq!(&bytes[data_start..data_start + 3], b"bin");
    }

    #[test]
    fn write_errors_propagate() {
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::other("disk full"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut w = CpioWriter::new(Full);
        assert!(matches!(w.dir("dev", 0o755), Err(CpioError::Io(_))));
    }
}
