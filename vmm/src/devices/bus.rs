//! An address-range bus: devices claim `[base, base + len)`, a vCPU exit is routed to the
//! device that claims its address with the offset inside the range. Accesses no device
//! claims are answered (reads return all ones, as an empty bus does), counted and
//! logged, never fatal: a guest probing for hardware that is not there is normal.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A device on a bus.
pub trait BusDevice: Send {
    /// Fills `data` from the register at `offset`.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// Writes `data` to the register at `offset`.
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// Errors registering a device.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// The range is empty or wraps.
    #[error("invalid bus range {base:#x}+{len:#x}")]
    InvalidRange {
        /// First address.
        base: u64,
        /// Length.
        len: u64,
    },
    /// The range overlaps a device already there.
    #[error("bus range {base:#x}+{len:#x} overlaps another device")]
    Overlap {
        /// First address.
        base: u64,
        /// Length.
        len: u64,
    },
}

type SharedDevice = Arc<Mutex<dyn BusDevice>>;

/// How many unclaimed accesses are logged at warning level before the rest go to debug.
const LOUD_UNHANDLED: u64 = 16;

/// One bus (port I/O or MMIO).
pub struct Bus {
    name: &'static str,
    devices: BTreeMap<u64, (u64, SharedDevice)>,
    unhandled: AtomicU64,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus")
            .field("name", &self.name)
            .field(
                "ranges",
                &self
                    .devices
                    .iter()
                    .map(|(b, (l, _))| (*b, *l))
                    .collect::<Vec<_>>(),
            )
            .field("unhandled", &self.unhandled)
            .finish()
    }
}

impl Bus {
    /// An empty bus; `name` appears in logs ("pio", "mmio").
    pub fn new(name: &'static str) -> Self {
        Bus {
            name,
            devices: BTreeMap::new(),
            unhandled: AtomicU64::new(0),
        }
    }

    /// Puts `device` at `[base, base + len)`.
    pub fn insert(&mut self, device: SharedDevice, base: u64, len: u64) -> Result<(), Error> {
        let end = base.checked_add(len).filter(|_| len > 0);
        let Some(end) = end else {
            return Err(Error::InvalidRange { base, len });
        };
        let before = self.devices.range(..end).next_back();
        if let Some((b, (l, _))) = before
            && b + l > base
        {
            return Err(Error::Overlap { base, len });
        }
        self.devices.insert(base, (len, device));
        Ok(())
    }

    fn resolve(&self, addr: u64, size: usize) -> Option<(u64, &SharedDevice)> {
        let (base, (len, dev)) = self.devices.range(..=addr).next_back()?;
        let offset = addr - base;
        // The whole access must fall inside the device's range.
        (offset.checked_add(size as u64)? <= *len).then_some((offset, dev))
    }

    /// Routes a read; returns whether a device handled it.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.resolve(addr, data.len()) {
            Some((offset, dev)) => {
                lock(dev).read(offset, data);
                true
            }
            None => {
                data.fill(0xff);
                self.note_unhandled("read", addr, data.len());
                false
            }
        }
    }

    /// Routes a write; returns whether a device handled it.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.resolve(addr, data.len()) {
            Some((offset, dev)) => {
                lock(dev).write(offset, data);
                true
            }
            None => {
                self.note_unhandled("write", addr, data.len());
                false
            }
        }
    }

    /// Accesses no device claimed so far.
    pub fn unhandled_count(&self) -> u64 {
        self.unhandled.load(Ordering::Relaxed)
    }

    fn note_unhandled(&self, kind: &str, addr: u64, size: usize) {
        let n = self.unhandled.fetch_add(1, Ordering::Relaxed);
        if n < LOUD_UNHANDLED {
            log::warn!(
                "unhandled {} {kind} of {size} bytes at {addr:#x}",
                self.name
            );
        } else {
            log::debug!(
                "unhandled {} {kind} of {size} bytes at {addr:#x}",
                self.name
            );
        }
    }
}

/// Locks a device, recovering from a poisoned lock: a device whose handler panicked on
/// one vCPU keeps serving the others.
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder {
        writes: Vec<(u64, Vec<u8>)>,
    }

    impl BusDevice for Recorder {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.writes.push((offset, data.to_vec()));
        }
    }

    #[test]
    fn routes_by_range_with_offsets() {
        let mut bus = Bus::new("pio");
        let dev = Arc::new(Mutex::new(Recorder::default()));
        bus.insert(dev.clone(), 0x3f8, 8).unwrap();
        let mut b = [0u8; 1];
        assert!(bus.read(0x3fd, &mut b));
        assert_eq!(b, [5]);
        assert!(bus.write(0x3f8, b"A"));
        assert_eq!(dev.lock().unwrap().writes, vec![(0, b"A".to_vec())]);
    }

    #[test]
    fn unclaimed_reads_are_all_ones_and_counted() {
        let bus = Bus::new("mmio");
        let mut b = [0u8; 4];
        assert!(!bus.read(0xd000_0000, &mut b));
        assert_eq!(b, [0xff; 4]);
        assert!(!bus.write(0x80, &[1]));
        assert_eq!(bus.unhandled_count(), 2);
    }

    #[test]
    fn accesses_straddling_the_end_are_unclaimed() {
        let mut bus = Bus::new("pio");
        bus.insert(Arc::new(Mutex::new(Recorder::default())), 0x60, 5)
            .unwrap();
        let mut b = [0u8; 2];
        assert!(!bus.read(0x64, &mut b));
        assert!(bus.read(0x63, &mut b));
    }

    #[test]
    fn overlaps_and_bad_ranges_are_refused() {
        let mut bus = Bus::new("pio");
        let d = || Arc::new(Mutex::new(Recorder::default()));
        bus.insert(d(), 0x10, 0x10).unwrap();
        assert_eq!(
            bus.insert(d(), 0x18, 4),
            Err(Error::Overlap { base: 0x18, len: 4 })
        );
        assert_eq!(
            bus.insert(d(), 0x8, 0x9),
            Err(Error::Overlap {
                base: 0x8,
                len: 0x9
            })
        );
        assert!(bus.insert(d(), 0x20, 1).is_ok());
        assert!(matches!(
            bus.insert(d(), 0x30, 0),
            Err(Error::InvalidRange { .. })
        ));
        assert!(matches!(
            bus.insert(d(), u64::MAX, 2),
            Err(Error::InvalidRange { .. })
        ));
    }
}
