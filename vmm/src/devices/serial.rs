//! The 8250 UART at COM1 (port 0x3f8, IRQ 4): the guest's console. The register model is
//! vm-superio's; this file wires its output to husk's console sink and its interrupt to
//! an eventfd the in-kernel irqchip injects.

use std::io::{self, Write};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use vm_superio::serial::NoEvents;
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

use super::bus::{BusDevice, lock};

/// COM1's first port.
pub const COM1_BASE: u64 = 0x3f8;
/// Number of ports an 8250 decodes.
pub const COM1_LEN: u64 = 8;
/// COM1's legacy IRQ.
pub const COM1_IRQ: u32 = 4;

/// How much of the most recent console output is always kept, console on or off.
pub const TAIL_BYTES: usize = 16 * 1024;

/// An eventfd that raises an interrupt line when written.
#[derive(Debug)]
pub struct IrqTrigger(pub EventFd);

impl Trigger for IrqTrigger {
    type E = io::Error;

    fn trigger(&self) -> io::Result<()> {
        self.0.write(1)
    }
}

/// The last `TAIL_BYTES` the guest printed: for error reports when a guest dies.
#[derive(Debug, Default)]
pub struct ConsoleTail {
    buf: std::collections::VecDeque<u8>,
}

impl ConsoleTail {
    fn push(&mut self, data: &[u8]) {
        let data = &data[data.len().saturating_sub(TAIL_BYTES)..];
        let overflow = (self.buf.len() + data.len()).saturating_sub(TAIL_BYTES);
        self.buf.drain(..overflow);
        self.buf.extend(data);
    }

    /// The kept bytes, oldest first.
    pub fn contents(&self) -> Vec<u8> {
        self.buf.iter().copied().collect()
    }
}

/// Called once, on the first console line containing a pattern.
pub type LineTrigger = (String, Box<dyn FnOnce() + Send>);

/// Watches console lines for milestones (e.g. `Run /init as init process`) and records
/// when each first appeared, measured on the host as the bytes arrive.
#[derive(Default)]
pub struct Milestones {
    patterns: Vec<String>,
    seen: Vec<Option<Instant>>,
    line: Vec<u8>,
    trigger: Option<LineTrigger>,
}

impl std::fmt::Debug for Milestones {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Milestones")
            .field("patterns", &self.patterns)
            .field("trigger", &self.trigger.as_ref().map(|t| &t.0))
            .finish()
    }
}

/// Longest line prefix kept for matching.
const MAX_LINE: usize = 4096;

impl Milestones {
    /// Watches for lines containing each of `patterns`.
    pub fn new(patterns: Vec<String>) -> Self {
        let seen = vec![None; patterns.len()];
        Milestones {
            patterns,
            seen,
            line: Vec::new(),
            trigger: None,
        }
    }

    /// Also calls `trigger.1` on the first line containing `trigger.0`.
    pub fn with_trigger(mut self, trigger: LineTrigger) -> Self {
        self.trigger = Some(trigger);
        self
    }

    fn feed(&mut self, data: &[u8]) {
        if self.patterns.is_empty() && self.trigger.is_none() {
            return;
        }
        for &b in data {
            if b == b'\n' {
                self.end_line();
            } else if self.line.len() < MAX_LINE {
                self.line.push(b);
            }
        }
    }

    fn end_line(&mut self) {
        let line = String::from_utf8_lossy(&self.line);
        for (pattern, seen) in self.patterns.iter().zip(self.seen.iter_mut()) {
            if seen.is_none() && line.contains(pattern.as_str()) {
                *seen = Some(Instant::now());
            }
        }
        if self
            .trigger
            .as_ref()
            .is_some_and(|(p, _)| line.contains(p.as_str()))
            && let Some((_, call)) = self.trigger.take()
        {
            call();
        }
        self.line.clear();
    }

    /// Each pattern with the instant its first line arrived, if it did.
    pub fn results(&self) -> Vec<(String, Option<Instant>)> {
        self.patterns
            .iter()
            .cloned()
            .zip(self.seen.iter().copied())
            .collect()
    }
}

/// Where console bytes go: an optional destination, the tail, and the milestone watch.
pub struct ConsoleSink {
    out: Option<Box<dyn Write + Send>>,
    tail: Arc<Mutex<ConsoleTail>>,
    milestones: Arc<Mutex<Milestones>>,
}

impl std::fmt::Debug for ConsoleSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleSink")
            .field("has_output", &self.out.is_some())
            .finish()
    }
}

impl ConsoleSink {
    /// A sink writing to `out` (if any) and keeping the tail in `tail`.
    pub fn new(out: Option<Box<dyn Write + Send>>, tail: Arc<Mutex<ConsoleTail>>) -> Self {
        ConsoleSink {
            out,
            tail,
            milestones: Arc::default(),
        }
    }

    /// Also feeds every byte to `milestones`.
    pub fn with_milestones(mut self, milestones: Arc<Mutex<Milestones>>) -> Self {
        self.milestones = milestones;
        self
    }
}

impl Write for ConsoleSink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        lock(&self.tail).push(data);
        lock(&self.milestones).feed(data);
        if let Some(out) = self.out.as_mut() {
            // A destination that fails (closed stdout, full disk) must not stop the guest:
            // drop it and keep only the tail.
            if out.write_all(data).is_err() {
                self.out = None;
            }
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if let Some(out) = self.out.as_mut()
            && out.flush().is_err()
        {
            self.out = None;
        }
        Ok(())
    }
}

/// COM1 on the port bus.
pub struct SerialDevice {
    uart: Serial<IrqTrigger, vm_superio::serial::NoEvents, ConsoleSink>,
}

impl std::fmt::Debug for SerialDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SerialDevice")
            .field("sink", self.uart.writer())
            .finish()
    }
}

impl SerialDevice {
    /// A UART raising `irq` and printing to `sink`.
    pub fn new(irq: EventFd, sink: ConsoleSink) -> Self {
        SerialDevice {
            uart: Serial::new(IrqTrigger(irq), sink),
        }
    }

    /// A UART in a saved state (a snapshot's).
    pub fn from_saved(
        irq: EventFd,
        sink: ConsoleSink,
        saved: &SerialState,
    ) -> Result<Self, RestoreError> {
        let state = vm_superio::serial::SerialState {
            baud_divisor_low: saved.registers[0],
            baud_divisor_high: saved.registers[1],
            interrupt_enable: saved.registers[2],
            interrupt_identification: saved.registers[3],
            line_control: saved.registers[4],
            line_status: saved.registers[5],
            modem_control: saved.registers[6],
            modem_status: saved.registers[7],
            scratch: saved.registers[8],
            in_buffer: saved.in_buffer.clone(),
        };
        let uart =
            Serial::from_state(&state, IrqTrigger(irq), NoEvents, sink).map_err(RestoreError)?;
        Ok(SerialDevice { uart })
    }

    /// The UART's registers and pending input.
    pub fn save(&self) -> SerialState {
        let s = self.uart.state();
        SerialState {
            registers: [
                s.baud_divisor_low,
                s.baud_divisor_high,
                s.interrupt_enable,
                s.interrupt_identification,
                s.line_control,
                s.line_status,
                s.modem_control,
                s.modem_status,
                s.scratch,
            ],
            in_buffer: s.in_buffer,
        }
    }
}

/// The saved UART state was refused (more pending input than its FIFO holds, or the
/// interrupt could not be raised).
#[derive(Debug, thiserror::Error)]
#[error("the snapshot's serial port state is invalid")]
pub struct RestoreError(#[source] vm_superio::serial::Error<io::Error>);

/// The UART's state in a snapshot: its nine registers in vm-superio's order, and the
/// bytes the guest has not read yet.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SerialState {
    registers: [u8; 9],
    in_buffer: Vec<u8>,
}

impl BusDevice for SerialDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if let [byte] = data {
            *byte = self.uart.read(offset as u8);
        } else {
            data.fill(0xff);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let [byte] = data {
            if let Err(e) = self.uart.write(offset as u8, *byte) {
                log::debug!("serial write failed: {e:?}");
            }
            if offset == 0 && *byte == b'\n' {
                let _ = self.uart.writer_mut().flush();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, d: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(d);
            Ok(d.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn guest_bytes_reach_the_sink_and_the_tail() {
        let out = Arc::new(Mutex::new(Vec::new()));
        let tail = Arc::new(Mutex::new(ConsoleTail::default()));
        let sink = ConsoleSink::new(Some(Box::new(Shared(out.clone()))), tail.clone());
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let mut dev = SerialDevice::new(irq, sink);
        for b in b"hi\n" {
            dev.write(0, &[*b]);
        }
        assert_eq!(&*out.lock().unwrap(), b"hi\n");
        assert_eq!(tail.lock().unwrap().contents(), b"hi\n");
        // Line status register: transmitter empty.
        let mut lsr = [0u8];
        dev.read(5, &mut lsr);
        assert_ne!(lsr[0] & 0x20, 0);
    }

    #[test]
    fn milestones_record_first_matching_lines() {
        let m = Arc::new(Mutex::new(Milestones::new(vec![
            "Run /init".into(),
            "never".into(),
        ])));
        let tail = Arc::new(Mutex::new(ConsoleTail::default()));
        let mut sink = ConsoleSink::new(None, tail).with_milestones(m.clone());
        sink.write_all(b"[ 1.0] Linux version 6.12\n[ 2.0] Run /in")
            .unwrap();
        assert!(m.lock().unwrap().results()[0].1.is_none());
        sink.write_all(b"it as init process\n").unwrap();
        let r = m.lock().unwrap().results();
        assert!(r[0].1.is_some());
        assert_eq!(r[1], ("never".to_string(), None));
    }

    #[test]
    fn tail_keeps_only_the_newest_bytes() {
        let mut t = ConsoleTail::default();
        t.push(&vec![b'a'; TAIL_BYTES]);
        t.push(b"xyz");
        let c = t.contents();
        assert_eq!(c.len(), TAIL_BYTES);
        assert!(c.ends_with(b"axyz"));
        t.push(&vec![b'b'; TAIL_BYTES * 2]);
        assert!(t.contents().iter().all(|b| *b == b'b'));
    }

    #[test]
    fn wide_accesses_read_as_empty_bus() {
        let tail = Arc::new(Mutex::new(ConsoleTail::default()));
        let mut dev = SerialDevice::new(
            EventFd::new(0).unwrap(),
            ConsoleSink::new(None, tail.clone()),
        );
        let mut w = [0u8; 2];
        dev.read(0, &mut w);
        assert_eq!(w, [0xff, 0xff]);
        dev.write(0, b"ab");
        assert!(tail.lock().unwrap().contents().is_empty());
    }
}
