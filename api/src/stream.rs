//! docker's stream framing. A container without a terminal has its stdout and stderr
//! multiplexed on one connection: each chunk behind an 8-byte header (stream 1 = stdout,
//! 2 = stderr, three zero bytes, the big-endian length); with a terminal the bytes go raw.
//! [`Framer`] is a blocking `Write` (the runtime's pumps write to it) that frames and
//! hands chunks to the async side over a bounded channel (so a slow client slows the
//! container's reader, never grows memory).

use std::io::{self, Write};

use bytes::Bytes;
use tokio::sync::mpsc;

/// docker's stream numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Raw bytes (a container with a terminal).
    Raw,
    /// Framed as stdout.
    Stdout,
    /// Framed as stderr.
    Stderr,
}

impl Stream {
    /// The (stdout, stderr) streams of a container or exec with a terminal (`tty`: both
    /// raw) or without one (framed apart).
    pub fn pair(tty: bool) -> (Stream, Stream) {
        match tty {
            true => (Stream::Raw, Stream::Raw),
            false => (Stream::Stdout, Stream::Stderr),
        }
    }
}

/// Frames `bytes` as `stream` (docker's header, or nothing for raw).
pub fn frame(stream: Stream, bytes: &[u8]) -> Vec<u8> {
    let kind = match stream {
        Stream::Raw => return bytes.to_vec(),
        Stream::Stdout => 1u8,
        Stream::Stderr => 2u8,
    };
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(8 + bytes.len());
    out.extend_from_slice(&[kind, 0, 0, 0]);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
    out
}

/// A blocking writer of one stream into a channel (call only off the async runtime).
#[derive(Debug, Clone)]
pub struct Framer {
    tx: mpsc::Sender<Bytes>,
    stream: Stream,
}

impl Framer {
    /// Writes `stream` into `tx`.
    pub fn new(tx: mpsc::Sender<Bytes>, stream: Stream) -> Self {
        Self { tx, stream }
    }
}

impl Write for Framer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        // Frames of at most 32 KiB, as docker sends them.
        let n = buf.len().min(32 << 10);
        self.tx
            .blocking_send(Bytes::from(frame(self.stream, &buf[..n])))
            .map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_dockers_header() {
        assert_eq!(
            frame(Stream::Stdout, b"hi"),
            [1, 0, 0, 0, 0, 0, 0, 2, b'h', b'i']
        );
        assert_eq!(frame(Stream::Stderr, b""), [2, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(frame(Stream::Raw, b"hi"), b"hi");
    }
}
