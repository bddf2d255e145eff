//! Framing: how bytes on the connection split into frames, and the limits on them.
//!
//! ```text
//! frame   = len:u32 BE | kind:u8 | payload        len = 1 + payload length, 1..=MAX_FRAME
//! kind 1  = control: payload is one JSON envelope (see `message`)
//! kind 2  = data:    payload = process:u32 BE | stream:u8 | raw bytes (empty = end of stream)
//! ```
//!
//! Errors that leave the framing intact (an unknown kind, a zero length, a bad data header,
//! an oversized frame) are [recoverable](FrameError::is_recoverable): the reader has consumed
//! (or, for an oversized frame, will skip on the next read) exactly that frame and the next one
//! starts cleanly. I/O errors and frames cut short by the end of the stream are not.

use std::io::{self, IoSlice, Read, Write};

use serde::{Deserialize, Serialize};

/// Largest frame body (kind byte + payload) either side accepts: 1 MiB.
pub const MAX_FRAME: u32 = 1 << 20;
/// Bytes before the payload of a data frame: the process id and the stream.
const DATA_HEADER: usize = 5;
/// Largest number of stdio bytes one data frame carries.
pub const MAX_DATA: usize = MAX_FRAME as usize - 1 - DATA_HEADER;

const KIND_CONTROL: u8 = 1;
const KIND_DATA: u8 = 2;

/// Errors from reading or writing frames.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The underlying stream failed.
    #[error("connection I/O failed")]
    Io(#[source] io::Error),
    /// The stream ended inside a frame.
    #[error("connection closed in the middle of a frame ({got} of {expected} bytes)")]
    Truncated {
        /// Bytes the frame (header or body) needed.
        expected: u64,
        /// Bytes that arrived.
        got: u64,
    },
    /// A frame longer than [`MAX_FRAME`].
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Its announced length.
        len: u32,
        /// The limit.
        max: u32,
    },
    /// A frame of length 0 (no kind byte).
    #[error("empty frame (length 0)")]
    Empty,
    /// A kind byte this side does not know.
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    /// A data frame too short for its process id and stream.
    #[error("data frame of {0} bytes is shorter than its {DATA_HEADER}-byte header")]
    ShortData(usize),
    /// A data frame naming a stream that does not exist.
    #[error("unknown stream {0} (0 stdin, 1 stdout, 2 stderr)")]
    UnknownStream(u8),
    /// The caller tried to send more than fits in one frame.
    #[error("payload of {len} bytes does not fit in one frame (at most {max})")]
    PayloadTooLarge {
        /// Bytes given.
        len: usize,
        /// The limit for this kind of frame.
        max: usize,
    },
}

impl FrameError {
    /// Whether the connection is still in sync after this error, so the next frame can be
    /// read (the offending frame was consumed or will be skipped).
    pub fn is_recoverable(&self) -> bool {
        !matches!(self, FrameError::Io(_) | FrameError::Truncated { .. })
    }
}

/// One of a process's standard streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamId {
    /// Host → process.
    Stdin,
    /// Process → host (with a tty: everything the terminal shows).
    Stdout,
    /// Process → host (never used with a tty).
    Stderr,
}

impl StreamId {
    /// Its byte on the wire.
    pub fn to_byte(self) -> u8 {
        match self {
            StreamId::Stdin => 0,
            StreamId::Stdout => 1,
            StreamId::Stderr => 2,
        }
    }

    /// Parses its byte on the wire.
    pub fn from_byte(byte: u8) -> Result<Self, FrameError> {
        match byte {
            0 => Ok(StreamId::Stdin),
            1 => Ok(StreamId::Stdout),
            2 => Ok(StreamId::Stderr),
            other => Err(FrameError::UnknownStream(other)),
        }
    }
}

/// Stdio bytes for one stream of one process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Data {
    /// The process, as numbered by the host in its start request.
    pub process: u32,
    /// Which stream.
    pub stream: StreamId,
    /// The bytes; empty means the stream has ended.
    pub bytes: Vec<u8>,
}

/// One frame read off the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A control message: the JSON envelope, still encoded (see [`crate::message::decode`]).
    Control(Vec<u8>),
    /// Stdio bytes.
    Data(Data),
}

/// Reads frames from any `Read` (wrap sockets in a `BufReader` to save system calls).
#[derive(Debug)]
pub struct FrameReader<R> {
    inner: R,
    /// Body bytes of an oversized frame still to be thrown away.
    skip: u64,
}

impl<R: Read> FrameReader<R> {
    /// Reads frames from `inner`.
    pub fn new(inner: R) -> Self {
        Self { inner, skip: 0 }
    }

    /// The underlying reader.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// Reads the next frame; `Ok(None)` when the stream ends cleanly between frames.
    ///
    /// An oversized frame gives [`FrameError::TooLarge`] without reading its body; the next
    /// call skips that body first, so a caller that carries on stays in sync, and one that
    /// gives up never reads the (possibly huge) body at all.
    pub fn read_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        self.skip_pending()?;
        let mut header = [0u8; 4];
        match read_full(&mut self.inner, &mut header)? {
            0 => return Ok(None),
            4 => {}
            got => return Err(truncated(4, got)),
        }
        let len = u32::from_be_bytes(header);
        if len == 0 {
            return Err(FrameError::Empty);
        }
        if len > MAX_FRAME {
            self.skip = u64::from(len);
            return Err(FrameError::TooLarge {
                len,
                max: MAX_FRAME,
            });
        }
        let mut body = vec![0u8; len as usize];
        let got = read_full(&mut self.inner, &mut body)?;
        if got < body.len() {
            return Err(truncated(body.len(), got));
        }
        parse_body(body).map(Some)
    }

    fn skip_pending(&mut self) -> Result<(), FrameError> {
        if self.skip == 0 {
            return Ok(());
        }
        let want = std::mem::take(&mut self.skip);
        let got =
            io::copy(&mut (&mut self.inner).take(want), &mut io::sink()).map_err(FrameError::Io)?;
        if got < want {
            return Err(FrameError::Truncated {
                expected: want,
                got,
            });
        }
        Ok(())
    }
}

fn truncated(expected: usize, got: usize) -> FrameError {
    FrameError::Truncated {
        expected: expected as u64,
        got: got as u64,
    }
}

/// Splits a frame body (kind byte + payload) into a [`Frame`].
fn parse_body(mut body: Vec<u8>) -> Result<Frame, FrameError> {
    match body[0] {
        KIND_CONTROL => {
            body.remove(0);
            Ok(Frame::Control(body))
        }
        KIND_DATA => {
            let payload = &body[1..];
            if payload.len() < DATA_HEADER {
                return Err(FrameError::ShortData(payload.len()));
            }
            let process = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
            let stream = StreamId::from_byte(payload[4])?;
            body.drain(..1 + DATA_HEADER);
            Ok(Frame::Data(Data {
                process,
                stream,
                bytes: body,
            }))
        }
        other => Err(FrameError::UnknownKind(other)),
    }
}

/// Reads until `buf` is full or the stream ends; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> Result<usize, FrameError> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(FrameError::Io(e)),
        }
    }
    Ok(got)
}

/// Writes frames to any `Write`, each with one vectored write where the OS allows (no copy of
/// the payload). Callers sharing a connection put the writer behind a mutex so frames never
/// interleave.
#[derive(Debug)]
pub struct FrameWriter<W> {
    inner: W,
}

impl<W: Write> FrameWriter<W> {
    /// Writes frames to `inner`.
    pub fn new(inner: W) -> Self {
        Self { inner }
    }

    /// The underlying writer.
    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// Sends one control frame carrying `json` (an encoded envelope).
    pub fn write_control(&mut self, json: &[u8]) -> Result<(), FrameError> {
        let max = MAX_FRAME as usize - 1;
        if json.len() > max {
            return Err(FrameError::PayloadTooLarge {
                len: json.len(),
                max,
            });
        }
        let mut header = [0u8; 5];
        header[..4].copy_from_slice(&frame_len(json.len()).to_be_bytes());
        header[4] = KIND_CONTROL;
        self.write_parts(&header, json)
    }

    /// Sends stdio bytes (at most [`MAX_DATA`]); empty `bytes` ends the stream.
    pub fn write_data(
        &mut self,
        process: u32,
        stream: StreamId,
        bytes: &[u8],
    ) -> Result<(), FrameError> {
        if bytes.len() > MAX_DATA {
            return Err(FrameError::PayloadTooLarge {
                len: bytes.len(),
                max: MAX_DATA,
            });
        }
        let mut header = [0u8; 10];
        header[..4].copy_from_slice(&frame_len(DATA_HEADER + bytes.len()).to_be_bytes());
        header[4] = KIND_DATA;
        header[5..9].copy_from_slice(&process.to_be_bytes());
        header[9] = stream.to_byte();
        self.write_parts(&header, bytes)
    }

    /// Sends a frame read earlier (used by proxies and tests).
    pub fn write_frame(&mut self, frame: &Frame) -> Result<(), FrameError> {
        match frame {
            Frame::Control(json) => self.write_control(json),
            Frame::Data(d) => self.write_data(d.process, d.stream, &d.bytes),
        }
    }

    fn write_parts(&mut self, header: &[u8], payload: &[u8]) -> Result<(), FrameError> {
        let mut parts = [IoSlice::new(header), IoSlice::new(payload)];
        let mut slices = &mut parts[..];
        while !slices.is_empty() {
            match self.inner.write_vectored(slices) {
                Ok(0) => return Err(FrameError::Io(io::ErrorKind::WriteZero.into())),
                Ok(n) => IoSlice::advance_slices(&mut slices, n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(FrameError::Io(e)),
            }
        }
        self.inner.flush().map_err(FrameError::Io)
    }
}

/// The length field for a payload (checked against [`MAX_FRAME`] by the callers).
fn frame_len(payload: usize) -> u32 {
    u32::try_from(1 + payload).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(write: impl FnOnce(&mut FrameWriter<Vec<u8>>)) -> Vec<u8> {
        let mut w = FrameWriter::new(Vec::new());
        write(&mut w);
        w.inner
    }

    fn reader(bytes: Vec<u8>) -> FrameReader<io::Cursor<Vec<u8>>> {
        FrameReader::new(io::Cursor::new(bytes))
    }

    #[test]
    fn round_trips_control_and_data() {
        let big = vec![0xa5; MAX_DATA];
        let wire = encoded(|w| {
            w.write_control(br#"{"v":1}"#).unwrap();
            w.write_data(7, StreamId::Stdout, b"hello\0\xff").unwrap();
            w.write_data(u32::MAX, StreamId::Stderr, &[]).unwrap();
            w.write_data(1, StreamId::Stdin, &big).unwrap();
        });
        let mut r = reader(wire);
        assert_eq!(
            r.read_frame().unwrap(),
            Some(Frame::Control(br#"{"v":1}"#.to_vec()))
        );
        let data = |process, stream, bytes: &[u8]| {
            Some(Frame::Data(Data {
                process,
                stream,
                bytes: bytes.to_vec(),
            }))
        };
        assert_eq!(
            r.read_frame().unwrap(),
            data(7, StreamId::Stdout, b"hello\0\xff")
        );
        assert_eq!(
            r.read_frame().unwrap(),
            data(u32::MAX, StreamId::Stderr, b"")
        );
        assert_eq!(r.read_frame().unwrap(), data(1, StreamId::Stdin, &big));
        assert_eq!(r.read_frame().unwrap(), None);
        assert_eq!(r.read_frame().unwrap(), None);
    }

    #[test]
    fn wire_layout_is_fixed() {
        let wire = encoded(|w| {
            w.write_control(b"{}").unwrap();
            w.write_data(0x0102_0304, StreamId::Stderr, b"ab").unwrap();
        });
        assert_eq!(
            wire,
            [
                &[0, 0, 0, 3, 1, b'{', b'}'][..],
                &[0, 0, 0, 8, 2, 1, 2, 3, 4, 2, b'a', b'b'][..],
            ]
            .concat()
        );
    }

    #[test]
    fn truncated_frames_are_fatal() {
        let wire = encoded(|w| w.write_data(1, StreamId::Stdout, b"0123456789").unwrap());
        for cut in 1..wire.len() {
            let err = reader(wire[..cut].to_vec()).read_frame().unwrap_err();
            assert!(
                matches!(err, FrameError::Truncated { .. }),
                "cut at {cut}: {err}"
            );
            assert!(!err.is_recoverable());
        }
    }

    #[test]
    fn oversized_frame_is_skipped_on_the_next_read() {
        let mut wire = (MAX_FRAME + 1).to_be_bytes().to_vec();
        wire.extend(std::iter::repeat_n(7u8, MAX_FRAME as usize + 1));
        wire.extend(encoded(|w| w.write_control(b"next").unwrap()));
        let mut r = reader(wire);
        let err = r.read_frame().unwrap_err();
        assert!(
            matches!(err, FrameError::TooLarge { len, max: MAX_FRAME } if len == MAX_FRAME + 1)
        );
        assert!(err.is_recoverable());
        assert_eq!(
            r.read_frame().unwrap(),
            Some(Frame::Control(b"next".to_vec()))
        );
    }

    #[test]
    fn oversized_frame_cut_short_is_truncated() {
        let mut wire = u32::MAX.to_be_bytes().to_vec();
        wire.extend([0u8; 100]);
        let mut r = reader(wire);
        assert!(matches!(r.read_frame(), Err(FrameError::TooLarge { .. })));
        assert!(matches!(
            r.read_frame(),
            Err(FrameError::Truncated { got: 100, .. })
        ));
    }

    #[test]
    fn exactly_max_frame_is_accepted() {
        let wire = encoded(|w| {
            w.write_control(&vec![b' '; MAX_FRAME as usize - 1])
                .unwrap()
        });
        assert_eq!(wire.len(), 4 + MAX_FRAME as usize);
        assert!(matches!(
            reader(wire).read_frame(),
            Ok(Some(Frame::Control(_)))
        ));
    }

    #[test]
    fn malformed_frames_are_recoverable() {
        let next = encoded(|w| w.write_control(b"ok").unwrap());
        let bad: [&[u8]; 4] = [
            &[0, 0, 0, 0],
            &[0, 0, 0, 2, 9, 0],
            &[0, 0, 0, 4, 2, 0, 0, 0],
            &[0, 0, 0, 6, 2, 0, 0, 0, 1, 3],
        ];
        for frame in bad {
            let mut r = reader([frame, &next].concat());
            let err = r.read_frame().unwrap_err();
            assert!(err.is_recoverable(), "{err}");
            assert_eq!(
                r.read_frame().unwrap(),
                Some(Frame::Control(b"ok".to_vec()))
            );
        }
        assert!(matches!(
            reader(bad[1].to_vec()).read_frame(),
            Err(FrameError::UnknownKind(9))
        ));
        assert!(matches!(
            reader(bad[2].to_vec()).read_frame(),
            Err(FrameError::ShortData(3))
        ));
        assert!(matches!(
            reader(bad[3].to_vec()).read_frame(),
            Err(FrameError::UnknownStream(3))
        ));
    }

    #[test]
    fn writer_refuses_payloads_over_the_limit() {
        let mut w = FrameWriter::new(Vec::new());
        let err = w
            .write_data(1, StreamId::Stdout, &vec![0; MAX_DATA + 1])
            .unwrap_err();
        assert!(matches!(err, FrameError::PayloadTooLarge { .. }));
        let err = w.write_control(&vec![0; MAX_FRAME as usize]).unwrap_err();
        assert!(matches!(err, FrameError::PayloadTooLarge { .. }));
        assert!(w.inner.is_empty());
    }

    /// A writer that takes at most 3 bytes per call, to exercise partial vectored writes.
    struct Trickle(Vec<u8>);

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let n = buf.len().min(3);
            self.0.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn partial_writes_still_produce_whole_frames() {
        let mut w = FrameWriter::new(Trickle(Vec::new()));
        w.write_data(5, StreamId::Stdout, b"partial writes")
            .unwrap();
        let mut r = reader(w.inner.0);
        match r.read_frame().unwrap() {
            Some(Frame::Data(d)) => assert_eq!(d.bytes, b"partial writes"),
            other => panic!("{other:?}"),
        }
    }
}
