//! One tar entry as husk understands it: the normalised path, the kind (with symlink and
//! hardlink targets and device numbers), owner, mode, mtime (with the pax fraction) and
//! xattrs (pax `SCHILY.xattr.*`).

use std::ffi::CString;
use std::io::{self, Read};

use tar::EntryType;

use super::path::{PathError, RelPath};

/// Errors from interpreting a tar header.
#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    /// The entry's own name is unusable.
    #[error("bad entry name")]
    Name(#[source] PathError),
    /// A hardlink target is unusable (climbs out of the image root).
    #[error("hardlink {0}: bad target")]
    LinkTarget(RelPath, #[source] PathError),
    /// A header field could not be read.
    #[error("entry {0}: malformed header")]
    Header(RelPath, #[source] io::Error),
    /// The entry type has no meaning in an image layer.
    #[error("entry {0}: unsupported tar entry type {1}")]
    Type(RelPath, String),
    /// uid or gid above 2^32-1.
    #[error("entry {0}: owner {1}:{2} out of range")]
    Owner(RelPath, u64, u64),
}

/// What kind of file an entry makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A regular file with `Meta::size` bytes of data.
    File,
    /// A directory.
    Dir,
    /// A symlink to the given (unresolved) target.
    Symlink(CString),
    /// A hardlink to another path of the image.
    Link(RelPath),
    /// A character device.
    Char(u32, u32),
    /// A block device.
    Block(u32, u32),
    /// A named pipe.
    Fifo,
}

/// Everything husk applies from a tar header.
#[derive(Debug, Clone)]
pub struct Meta {
    /// What to create.
    pub kind: Kind,
    /// Permission bits including setuid, setgid and sticky.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time: seconds and nanoseconds.
    pub mtime: (i64, u32),
    /// Extended attributes (`trusted.overlay.*` ones are dropped: they would steer overlayfs).
    pub xattrs: Vec<(CString, Vec<u8>)>,
    /// Data bytes (regular files).
    pub size: u64,
}

const XATTR_PREFIX: &str = "SCHILY.xattr.";

impl Meta {
    /// Reads path and metadata of `entry`; `None` for entries that carry no file (pax global
    /// headers).
    pub fn from_entry<R: Read>(
        entry: &mut tar::Entry<'_, R>,
    ) -> Result<Option<(RelPath, Self)>, EntryError> {
        let path = RelPath::parse(&entry.path_bytes()).map_err(EntryError::Name)?;
        let header = entry.header();
        let hdr = |e| EntryError::Header(path.clone(), e);
        let device = || -> Result<(u32, u32), EntryError> {
            let major = header.device_major().map_err(hdr)?.unwrap_or(0);
            let minor = header.device_minor().map_err(hdr)?.unwrap_or(0);
            Ok((major, minor))
        };
        let kind = match header.entry_type() {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => Kind::File,
            EntryType::Directory => Kind::Dir,
            EntryType::Symlink => {
                let target = entry.link_name_bytes().unwrap_or_default().into_owned();
                let target = CString::new(target).map_err(|e| hdr(io::Error::other(e)))?;
                Kind::Symlink(target)
            }
            EntryType::Link => {
                let target = entry.link_name_bytes().unwrap_or_default();
                let target =
                    RelPath::parse(&target).map_err(|e| EntryError::LinkTarget(path.clone(), e))?;
                Kind::Link(target)
            }
            EntryType::Char => {
                let (ma, mi) = device()?;
                Kind::Char(ma, mi)
            }
            EntryType::Block => {
                let (ma, mi) = device()?;
                Kind::Block(ma, mi)
            }
            EntryType::Fifo => Kind::Fifo,
            EntryType::XGlobalHeader => return Ok(None),
            // The type byte as the tar header has it (the tar crate's Debug of an unknown
            // type is an internal variant name).
            other => {
                let byte = char::from(other.as_byte()).escape_default();
                return Err(EntryError::Type(path, format!("'{byte}'")));
            }
        };
        let old = header.as_old();
        let uid = numeric(&old.uid, || header.uid()).map_err(hdr)?;
        let gid = numeric(&old.gid, || header.gid()).map_err(hdr)?;
        let (Ok(uid32), Ok(gid32)) = (u32::try_from(uid), u32::try_from(gid)) else {
            return Err(EntryError::Owner(path, uid, gid));
        };
        let mode = numeric(&old.mode, || header.mode().map(u64::from)).map_err(hdr)? & 0o7777;
        let mode = u32::try_from(mode).unwrap_or(0);
        let secs = numeric(&old.mtime, || header.mtime()).map_err(hdr)?;
        let mut meta = Self {
            kind,
            mode,
            uid: uid32,
            gid: gid32,
            mtime: (i64::try_from(secs).unwrap_or(i64::MAX), 0),
            xattrs: Vec::new(),
            size: entry.size(),
        };
        meta.read_pax(entry).map_err(hdr)?;
        Ok(Some((path, meta)))
    }

    /// Applies pax records: fractional mtime and xattrs.
    fn read_pax<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> io::Result<()> {
        let Some(exts) = entry.pax_extensions()? else {
            return Ok(());
        };
        for ext in exts {
            let ext = ext?;
            let Ok(key) = ext.key() else { continue };
            if key == "mtime" {
                if let Some(t) = ext.value().ok().and_then(parse_pax_time) {
                    self.mtime = t;
                }
            } else if let Some(name) = key.strip_prefix(XATTR_PREFIX) {
                if name.starts_with("trusted.overlay.") {
                    log::warn!(
                        "dropping xattr {name}: overlayfs control attributes are not taken from layers"
                    );
                    continue;
                }
                let name = CString::new(name).map_err(io::Error::other)?;
                self.xattrs.push((name, ext.value_bytes().to_vec()));
            }
        }
        Ok(())
    }
}

/// Parses a pax time `SECONDS[.FRACTION]` (possibly negative) into seconds and nanoseconds.
fn parse_pax_time(v: &str) -> Option<(i64, u32)> {
    let (secs, frac) = v.split_once('.').unwrap_or((v, ""));
    let secs: i64 = secs.parse().ok()?;
    let digits: String = frac.chars().take(9).collect();
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let nanos = if digits.is_empty() {
        0
    } else {
        format!("{digits:0<9}").parse().ok()?
    };
    if secs < 0 && nanos > 0 {
        // -1.25 means 1.25 s before the epoch: -2 s + 0.75 s.
        return Some((secs - 1, 1_000_000_000 - nanos));
    }
    Some((secs, nanos))
}

/// A numeric header field: empty (all NUL or spaces) reads as 0, as Go's archive/tar
/// (docker's) reads it; anything else as the tar crate parses it.
fn numeric(raw: &[u8], parsed: impl FnOnce() -> io::Result<u64>) -> io::Result<u64> {
    match raw.iter().all(|b| *b == 0 || *b == b' ') {
        true => Ok(0),
        false => parsed(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_times() {
        assert_eq!(parse_pax_time("1234"), Some((1234, 0)));
        assert_eq!(parse_pax_time("1234.5"), Some((1234, 500_000_000)));
        assert_eq!(parse_pax_time("1.123456789123"), Some((1, 123_456_789)));
        assert_eq!(parse_pax_time("-1.25"), Some((-2, 750_000_000)));
        assert_eq!(parse_pax_time("x"), None);
    }

    #[test]
    fn reads_kinds_owner_mode_and_xattrs() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(EntryType::Char);
        h.set_device_major(1).unwrap();
        h.set_device_minor(3).unwrap();
        h.set_mode(0o4755);
        h.set_uid(7);
        h.set_gid(8);
        h.set_mtime(99);
        h.set_size(0);
        b.append_pax_extensions([
            ("SCHILY.xattr.user.a", &b"1"[..]),
            ("SCHILY.xattr.trusted.overlay.redirect", &b"/x"[..]),
            ("mtime", &b"99.5"[..]),
        ])
        .unwrap();
        b.append_data(&mut h, "./dev/null", io::empty()).unwrap();
        let bytes = b.into_inner().unwrap();
        let mut a = tar::Archive::new(&bytes[..]);
        let mut e = a.entries().unwrap().next().unwrap().unwrap();
        let (path, meta) = Meta::from_entry(&mut e).unwrap().unwrap();
        assert_eq!(path.to_string(), "/dev/null");
        assert_eq!(meta.kind, Kind::Char(1, 3));
        assert_eq!((meta.mode, meta.uid, meta.gid), (0o4755, 7, 8));
        assert_eq!(meta.mtime, (99, 500_000_000));
        assert_eq!(
            meta.xattrs,
            vec![(CString::new("user.a").unwrap(), b"1".to_vec())]
        );
    }
}
