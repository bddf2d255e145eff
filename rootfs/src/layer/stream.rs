//! The uncompressed byte stream of a layer blob: compression detected by magic number (gzip,
//! zstd or a plain tar), the diff_id (sha256 of the uncompressed bytes) computed while reading,
//! and the decompression-bomb limits enforced on the way.

use std::cell::Cell;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;
use std::rc::Rc;

use sha2::{Digest as _, Sha256};

use crate::digest::Digest;

/// How much a layer may expand. Both limits apply to the uncompressed tar stream and the
/// absolute one also to the bytes written into the staging tree (sparse entries).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerLimits {
    /// Most uncompressed bytes a layer may have.
    pub max_uncompressed: u64,
    /// Most uncompressed bytes per compressed byte, enforced once `ratio_grace` bytes have
    /// been produced (small layers of zeros compress far better than any real tree).
    pub max_ratio: u64,
    /// Uncompressed bytes allowed before the ratio is checked.
    pub ratio_grace: u64,
}

impl Default for LayerLimits {
    fn default() -> Self {
        Self {
            max_uncompressed: 32 << 30,
            max_ratio: 250,
            ratio_grace: 256 << 20,
        }
    }
}

/// Errors from opening or reading a layer stream.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The blob could not be opened or its first bytes read.
    #[error("cannot read layer blob {0}")]
    Open(String, #[source] io::Error),
    /// The blob is compressed with something husk does not decode.
    #[error("unsupported layer compression {0} (want gzip, zstd or an uncompressed tar)")]
    Compression(&'static str),
}

/// The compression a layer blob uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// An uncompressed tar.
    None,
    /// gzip (one or more members).
    Gzip,
    /// zstd (one or more frames).
    Zstd,
}

/// Detects the compression from the first bytes of a blob.
pub fn detect(magic: &[u8]) -> Result<Compression, StreamError> {
    match magic {
        [0x1f, 0x8b, ..] => Ok(Compression::Gzip),
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Ok(Compression::Zstd),
        [b'B', b'Z', b'h', ..] => Err(StreamError::Compression("bzip2")),
        [0xfd, b'7', b'z', b'X', b'Z', 0, ..] => Err(StreamError::Compression("xz")),
        _ => Ok(Compression::None),
    }
}

/// What the reader saw, shared between the reader (owned by the tar parser) and its creator.
#[derive(Debug, Default)]
pub(crate) struct StreamState {
    compressed: Cell<u64>,
    uncompressed: Cell<u64>,
    eof: Cell<bool>,
    over_limit: Cell<bool>,
}

impl StreamState {
    /// Uncompressed bytes produced so far.
    pub(crate) fn uncompressed(&self) -> u64 {
        self.uncompressed.get()
    }
    /// Compressed bytes consumed so far.
    pub(crate) fn compressed(&self) -> u64 {
        self.compressed.get()
    }
    /// Whether a read has returned end of stream.
    pub(crate) fn eof(&self) -> bool {
        self.eof.get()
    }
    /// Whether a limit stopped the stream.
    pub(crate) fn over_limit(&self) -> bool {
        self.over_limit.get()
    }
}

/// Counts the compressed bytes read from the blob file.
struct Counting<R> {
    inner: R,
    state: Rc<StreamState>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let c = &self.state.compressed;
        c.set(c.get() + n as u64);
        Ok(n)
    }
}

/// The uncompressed stream: hashes, counts and enforces the limits.
pub(crate) struct LayerStream {
    inner: Box<dyn Read>,
    hasher: Sha256,
    state: Rc<StreamState>,
    limits: LayerLimits,
    compression: Compression,
}

impl std::fmt::Debug for LayerStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerStream")
            .field("state", &self.state)
            .field("compression", &self.compression)
            .finish_non_exhaustive()
    }
}

impl LayerStream {
    /// Opens `blob` and sets up the decoder its magic number asks for.
    pub(crate) fn open(blob: &Path, limits: LayerLimits) -> Result<Self, StreamError> {
        let open_err = |e| StreamError::Open(blob.display().to_string(), e);
        let file = File::open(blob).map_err(open_err)?;
        let state = Rc::new(StreamState::default());
        let counting = Counting {
            inner: file,
            state: Rc::clone(&state),
        };
        let mut buffered = BufReader::with_capacity(256 << 10, counting);
        let compression = detect(buffered.fill_buf().map_err(open_err)?)?;
        let inner: Box<dyn Read> = match compression {
            Compression::None => Box::new(buffered),
            Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
            Compression::Zstd => {
                Box::new(zstd::stream::read::Decoder::with_buffer(buffered).map_err(open_err)?)
            }
        };
        Ok(Self {
            inner,
            hasher: Sha256::new(),
            state,
            limits,
            compression,
        })
    }

    /// The shared counters.
    pub(crate) fn state(&self) -> Rc<StreamState> {
        Rc::clone(&self.state)
    }

    /// Reads the rest of the stream (tar padding after the end marker) and returns the
    /// diff_id and the uncompressed size.
    pub(crate) fn finish(mut self) -> io::Result<(Digest, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        let hex = hex::encode(self.hasher.finalize());
        let digest = Digest::from_hex(&hex).map_err(io::Error::other)?;
        Ok((digest, self.state.uncompressed()))
    }

    fn check_limits(&self) -> io::Result<()> {
        let out = self.state.uncompressed();
        let within_ratio = out <= self.limits.ratio_grace
            || out / self.state.compressed().max(1) <= self.limits.max_ratio;
        if out > self.limits.max_uncompressed || !within_ratio {
            self.state.over_limit.set(true);
            return Err(io::Error::other("layer expansion limit exceeded"));
        }
        Ok(())
    }
}

impl Read for LayerStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.state.over_limit() {
            return Err(io::Error::other("layer expansion limit exceeded"));
        }
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.state.eof.set(true);
        }
        self.hasher.update(&buf[..n]);
        let u = &self.state.uncompressed;
        u.set(u.get() + n as u64);
        self.check_limits()?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_magic_numbers() {
        assert_eq!(detect(&[0x1f, 0x8b, 8]).unwrap(), Compression::Gzip);
        assert_eq!(
            detect(&[0x28, 0xb5, 0x2f, 0xfd, 0]).unwrap(),
            Compression::Zstd
        );
        assert_eq!(detect(b"etc/passwd\0").unwrap(), Compression::None);
        assert_eq!(detect(b"").unwrap(), Compression::None);
        assert!(matches!(
            detect(b"BZh91AY"),
            Err(StreamError::Compression("bzip2"))
        ));
        let xz = [0xfd, b'7', b'z', b'X', b'Z', 0, 0];
        assert!(matches!(detect(&xz), Err(StreamError::Compression("xz"))));
    }

    #[test]
    fn hashes_uncompressed_bytes_of_every_compression() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let gz = {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            io::Write::write_all(&mut e, &data).unwrap();
            e.finish().unwrap()
        };
        let zst = zstd::encode_all(&data[..], 1).unwrap();
        for (name, bytes) in [("plain", data.clone()), ("gz", gz), ("zst", zst)] {
            let p = dir.path().join(name);
            std::fs::write(&p, bytes).unwrap();
            let mut s = LayerStream::open(&p, LayerLimits::default()).unwrap();
            let mut first = [0u8; 10];
            s.read_exact(&mut first).unwrap();
            let (d, n) = s.finish().unwrap();
            assert_eq!((d, n), (Digest::of(&data), data.len() as u64), "{name}");
        }
    }

    #[test]
    fn ratio_limit_stops_a_bomb() {
        let dir = tempfile::tempdir().unwrap();
        let zeros = vec![0u8; 8 << 20];
        let p = dir.path().join("bomb");
        std::fs::write(&p, zstd::encode_all(&zeros[..], 3).unwrap()).unwrap();
        let limits = LayerLimits {
            max_ratio: 100,
            ratio_grace: 1 << 20,
            ..LayerLimits::default()
        };
        let s = LayerStream::open(&p, limits).unwrap();
        let state = s.state();
        assert!(s.finish().is_err());
        assert!(state.over_limit());
        assert!(state.uncompressed() < zeros.len() as u64);
    }
}
