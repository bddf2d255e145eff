//! The vsock packet: the 44-byte little-endian header, and the guest buffers packets travel
//! in. A transmit chain (driver to device) must be all device-readable and hold a header
//! and exactly `len` payload bytes; a receive chain must be all device-writable and hold at
//! least a header. Anything else the guest hands over is an error, never a panic.

use virtio_queue::DescriptorChain;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};

use super::{HDR_SIZE, MAX_PAYLOAD};

/// Why a guest buffer cannot carry a packet.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The chain is shorter than a header.
    #[error("vsock buffer of {0} bytes is shorter than a packet header")]
    ShortBuffer(usize),
    /// A transmit chain has device-writable parts, or a receive chain device-readable ones.
    #[error("vsock buffer has descriptors in the wrong direction")]
    WrongDirection,
    /// The header announces more payload than husk accepts.
    #[error("vsock packet announces {0} bytes of payload")]
    PayloadTooLarge(u32),
    /// The header's length disagrees with the buffer.
    #[error("vsock packet announces {announced} bytes of payload but carries {carried}")]
    LengthMismatch {
        /// The header's `len`.
        announced: u32,
        /// Bytes after the header in the chain.
        carried: usize,
    },
    /// The chain is longer than any packet husk handles.
    #[error("vsock buffer is too long")]
    TooLong,
    /// A descriptor points outside guest memory.
    #[error("vsock buffer is outside guest memory")]
    Memory(#[source] vm_memory::GuestMemoryError),
}

/// The packet header (virtio_vsock_hdr), host byte order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Header {
    /// Source context ID.
    pub src_cid: u64,
    /// Destination context ID.
    pub dst_cid: u64,
    /// Source port.
    pub src_port: u32,
    /// Destination port.
    pub dst_port: u32,
    /// Payload length.
    pub len: u32,
    /// Socket type (`TYPE_STREAM`).
    pub type_: u16,
    /// Operation (`op::*`).
    pub op: u16,
    /// Operation flags (SHUTDOWN flags).
    pub flags: u32,
    /// The sender's receive buffer size.
    pub buf_alloc: u32,
    /// Bytes the sender has consumed from its receive buffer, ever (wrapping).
    pub fwd_cnt: u32,
}

fn le<const N: usize>(b: &[u8; HDR_SIZE], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&b[at..at + N]);
    out
}

impl Header {
    /// Decodes a header.
    pub fn from_bytes(b: &[u8; HDR_SIZE]) -> Header {
        Header {
            src_cid: u64::from_le_bytes(le(b, 0)),
            dst_cid: u64::from_le_bytes(le(b, 8)),
            src_port: u32::from_le_bytes(le(b, 16)),
            dst_port: u32::from_le_bytes(le(b, 20)),
            len: u32::from_le_bytes(le(b, 24)),
            type_: u16::from_le_bytes(le(b, 28)),
            op: u16::from_le_bytes(le(b, 30)),
            flags: u32::from_le_bytes(le(b, 32)),
            buf_alloc: u32::from_le_bytes(le(b, 36)),
            fwd_cnt: u32::from_le_bytes(le(b, 40)),
        }
    }

    /// Encodes a header.
    pub fn to_bytes(&self) -> [u8; HDR_SIZE] {
        let mut b = [0u8; HDR_SIZE];
        b[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
        b[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
        b[16..20].copy_from_slice(&self.src_port.to_le_bytes());
        b[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
        b[24..28].copy_from_slice(&self.len.to_le_bytes());
        b[28..30].copy_from_slice(&self.type_.to_le_bytes());
        b[30..32].copy_from_slice(&self.op.to_le_bytes());
        b[32..36].copy_from_slice(&self.flags.to_le_bytes());
        b[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
        b[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
        b
    }
}

/// A descriptor chain flattened into guest memory segments of one direction.
#[derive(Debug)]
pub struct GuestBuffer {
    segments: Vec<(GuestAddress, usize)>,
    len: usize,
}

/// Longest chain husk walks: a header plus the largest payload, with room for small pieces.
const MAX_BUFFER: usize = HDR_SIZE + MAX_PAYLOAD + 4096;

impl GuestBuffer {
    /// Collects `chain`; every descriptor must be device-writable if `writable`, else
    /// device-readable.
    pub fn from_chain(
        chain: DescriptorChain<&GuestMemoryMmap>,
        writable: bool,
    ) -> Result<GuestBuffer, Error> {
        let mut segments = Vec::new();
        let mut len = 0usize;
        for desc in chain {
            if desc.is_write_only() != writable {
                return Err(Error::WrongDirection);
            }
            let size = desc.len() as usize;
            if size == 0 {
                continue;
            }
            len = len.checked_add(size).ok_or(Error::TooLong)?;
            // A receive buffer may be larger than any packet: use what a packet can fill.
            if len > MAX_BUFFER {
                if !writable {
                    return Err(Error::TooLong);
                }
                let keep = size - (len - MAX_BUFFER);
                segments.push((desc.addr(), keep));
                len = MAX_BUFFER;
                break;
            }
            segments.push((desc.addr(), size));
        }
        Ok(GuestBuffer { segments, len })
    }

    /// Total bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Walks the segments covering `offset..offset + count` as (address, length) pieces.
    fn pieces(&self, offset: usize, count: usize) -> impl Iterator<Item = (GuestAddress, usize)> {
        let mut skip = offset;
        let mut left = count;
        self.segments.iter().filter_map(move |&(addr, size)| {
            if left == 0 {
                return None;
            }
            if skip >= size {
                skip -= size;
                return None;
            }
            let start = skip;
            skip = 0;
            let n = (size - start).min(left);
            left -= n;
            Some((addr.unchecked_add(start as u64), n))
        })
    }

    /// Copies `out.len()` bytes from guest memory at `offset` (the caller checked bounds).
    pub fn read_at(
        &self,
        mem: &GuestMemoryMmap,
        offset: usize,
        out: &mut [u8],
    ) -> Result<(), Error> {
        let mut done = 0;
        for (addr, n) in self.pieces(offset, out.len()) {
            mem.read_slice(&mut out[done..done + n], addr)
                .map_err(Error::Memory)?;
            done += n;
        }
        Ok(())
    }

    /// Copies `data` into guest memory at `offset` (the caller checked bounds).
    pub fn write_at(&self, mem: &GuestMemoryMmap, offset: usize, data: &[u8]) -> Result<(), Error> {
        let mut done = 0;
        for (addr, n) in self.pieces(offset, data.len()) {
            mem.write_slice(&data[done..done + n], addr)
                .map_err(Error::Memory)?;
            done += n;
        }
        Ok(())
    }

    /// Reads the header of a transmitted packet.
    pub fn read_header(&self, mem: &GuestMemoryMmap) -> Result<Header, Error> {
        if self.len < HDR_SIZE {
            return Err(Error::ShortBuffer(self.len));
        }
        let mut raw = [0u8; HDR_SIZE];
        self.read_at(mem, 0, &mut raw)?;
        Ok(Header::from_bytes(&raw))
    }

    /// Reads the payload `hdr` announces into `payload` (replacing what was there); it must
    /// be exactly what the buffer carries after the header.
    pub fn read_payload(
        &self,
        mem: &GuestMemoryMmap,
        hdr: &Header,
        payload: &mut Vec<u8>,
    ) -> Result<(), Error> {
        if hdr.len as usize > MAX_PAYLOAD {
            return Err(Error::PayloadTooLarge(hdr.len));
        }
        let carried = self.len.saturating_sub(HDR_SIZE);
        if hdr.len as usize != carried {
            return Err(Error::LengthMismatch {
                announced: hdr.len,
                carried,
            });
        }
        payload.resize(carried, 0);
        self.read_at(mem, HDR_SIZE, payload)
    }

    /// Room for payload after a header (0 if the buffer cannot even hold a header).
    pub fn payload_room(&self) -> usize {
        self.len.saturating_sub(HDR_SIZE).min(MAX_PAYLOAD)
    }

    /// Writes a packet for the driver; returns the bytes written (the used length).
    pub fn write_packet(
        &self,
        mem: &GuestMemoryMmap,
        hdr: &Header,
        payload: &[u8],
    ) -> Result<u32, Error> {
        if self.len < HDR_SIZE {
            return Err(Error::ShortBuffer(self.len));
        }
        if payload.len() > self.payload_room() {
            return Err(Error::TooLong);
        }
        self.write_at(mem, 0, &hdr.to_bytes())?;
        self.write_at(mem, HDR_SIZE, payload)?;
        // Bounded by MAX_BUFFER, so it fits.
        Ok((HDR_SIZE + payload.len()) as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_is_little_endian() {
        let h = Header {
            src_cid: 3,
            dst_cid: 2,
            src_port: 0x0102_0304,
            dst_port: 1024,
            len: 5,
            type_: 1,
            op: 5,
            flags: 2,
            buf_alloc: 0x10000,
            fwd_cnt: 77,
        };
        let b = h.to_bytes();
        assert_eq!(&b[0..8], &[3, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&b[16..20], &[4, 3, 2, 1]);
        assert_eq!(&b[28..32], &[1, 0, 5, 0]);
        assert_eq!(Header::from_bytes(&b), h);
    }

    #[test]
    fn segments_split_reads_and_writes() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
        let buf = GuestBuffer {
            segments: vec![(GuestAddress(0x1000), 10), (GuestAddress(0x3000), 50)],
            len: 60,
        };
        let data: Vec<u8> = (0..40).collect();
        buf.write_at(&mem, 5, &data).unwrap();
        let mut back = vec![0u8; 40];
        buf.read_at(&mem, 5, &mut back).unwrap();
        assert_eq!(back, data);
        let mut first = [0u8; 5];
        mem.read_slice(&mut first, GuestAddress(0x1005)).unwrap();
        assert_eq!(first, [0, 1, 2, 3, 4]);
        let mut second = [0u8; 3];
        mem.read_slice(&mut second, GuestAddress(0x3000)).unwrap();
        assert_eq!(second, [5, 6, 7]);
    }
}
