//! One vsock stream between a guest port and a host unix socket: its state machine, the
//! credit accounting for both directions, the bounded buffer of guest bytes the host socket
//! has not taken yet, and the control packets owed to the guest. It never touches the
//! queues or the event loop: the muxer asks it for packets and for the epoll interest it
//! wants.
//!
//! Credit: the guest may have at most `CONN_BUF_ALLOC` bytes in flight towards the host;
//! bytes the host socket refuses wait in `pending` (so `pending` never exceeds that, and a
//! guest that sends past its credit is reset). Towards the guest husk never sends more than
//! the guest's free space (`buf_alloc - (tx_cnt - fwd_cnt)`), and stops reading the host
//! socket while that is zero.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use vmm_sys_util::epoll::EventSet;

use super::packet::Header;
use super::{CONN_BUF_ALLOC, HOST_CID, MAX_PAYLOAD, SHUTDOWN_BOTH, SHUTDOWN_RCV, SHUTDOWN_SEND};
use super::{TYPE_STREAM, op};

/// How long the guest has to answer a host-initiated REQUEST.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the guest has to answer a full SHUTDOWN (or husk has to drain towards the host
/// after the guest's) before husk resets the connection.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(2);
/// Fraction of the buffer the host must have consumed before husk tells the guest unasked.
const CREDIT_UPDATE_THRESHOLD: u32 = CONN_BUF_ALLOC / 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Host-initiated: REQUEST owed or sent, waiting for the guest's RESPONSE.
    Connecting,
    /// Data flows.
    Established,
    /// Torn down on our side; an RST is owed to the guest.
    Resetting,
    /// Gone: the muxer drops it.
    Closed,
}

/// Control packets owed to the guest.
#[derive(Debug, Default)]
struct Owed {
    request: bool,
    response: bool,
    shutdown: u32,
    credit_update: bool,
}

/// One stream.
#[derive(Debug)]
pub(super) struct Connection {
    stream: UnixStream,
    local_port: u32,
    peer_port: u32,
    state: State,
    owed: Owed,
    // Guest to host.
    rx_cnt: u32,
    fwd_cnt: u32,
    last_fwd_cnt_sent: u32,
    pending: VecDeque<u8>,
    peer_shutdown: u32,
    host_write_closed: bool,
    // Host to guest.
    tx_cnt: u32,
    peer_buf_alloc: u32,
    peer_fwd_cnt: u32,
    host_readable: bool,
    host_eof: bool,
    sent_shutdown: u32,
    credit_requested: bool,
    deadline: Option<Instant>,
}

impl Connection {
    fn new(stream: UnixStream, local_port: u32, peer_port: u32, state: State) -> Self {
        Connection {
            stream,
            local_port,
            peer_port,
            state,
            owed: Owed::default(),
            rx_cnt: 0,
            fwd_cnt: 0,
            last_fwd_cnt_sent: 0,
            pending: VecDeque::new(),
            peer_shutdown: 0,
            host_write_closed: false,
            tx_cnt: 0,
            peer_buf_alloc: 0,
            peer_fwd_cnt: 0,
            host_readable: false,
            host_eof: false,
            sent_shutdown: 0,
            credit_requested: false,
            deadline: None,
        }
    }

    /// A host client asked for guest `peer_port`; a REQUEST is owed.
    pub(super) fn host_initiated(stream: UnixStream, local_port: u32, peer_port: u32) -> Self {
        let mut c = Connection::new(stream, local_port, peer_port, State::Connecting);
        c.owed.request = true;
        c.deadline = Some(Instant::now() + CONNECT_TIMEOUT);
        c
    }

    /// The guest's REQUEST `hdr` reached a host listener on `stream`; a RESPONSE is owed.
    pub(super) fn guest_initiated(stream: UnixStream, hdr: &Header) -> Self {
        let mut c = Connection::new(stream, hdr.dst_port, hdr.src_port, State::Established);
        c.owed.response = true;
        c.update_peer_credit(hdr);
        c
    }

    /// The host socket.
    pub(super) fn stream(&self) -> &UnixStream {
        &self.stream
    }

    /// Whether the muxer should drop it.
    pub(super) fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// When a timeout fires, if one is armed.
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Tears the connection down; an RST is owed to the guest if `tell_guest`.
    pub(super) fn kill(&mut self, tell_guest: bool) {
        let _ = self.stream.shutdown(Shutdown::Both);
        self.pending = VecDeque::new();
        self.deadline = None;
        self.state = if tell_guest {
            State::Resetting
        } else {
            State::Closed
        };
    }

    /// Fires the timeout if it is due.
    pub(super) fn check_deadline(&mut self, now: Instant) {
        if self.deadline.is_some_and(|d| d <= now) {
            log::debug!("vsock {}:{}: timed out", self.local_port, self.peer_port);
            self.kill(true);
        }
    }

    fn peer_free(&self) -> u32 {
        let in_flight = self.tx_cnt.wrapping_sub(self.peer_fwd_cnt);
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    fn update_peer_credit(&mut self, hdr: &Header) {
        self.peer_buf_alloc = hdr.buf_alloc;
        self.peer_fwd_cnt = hdr.fwd_cnt;
        if self.peer_free() > 0 {
            self.credit_requested = false;
        }
    }

    /// Whether reading the host socket is allowed now (state and credit).
    fn may_read_host(&self) -> bool {
        self.state == State::Established
            && !self.host_eof
            && self.peer_shutdown & SHUTDOWN_RCV == 0
            && self.peer_free() > 0
    }

    /// Whether the host has data for a guest that has no room for it.
    fn starved(&self) -> bool {
        self.state == State::Established
            && self.host_readable
            && !self.host_eof
            && self.peer_shutdown & SHUTDOWN_RCV == 0
            && self.peer_free() == 0
    }

    /// The epoll events it wants on its host socket.
    pub(super) fn wanted_interest(&self) -> EventSet {
        let mut set = EventSet::empty();
        if self.may_read_host() && !self.host_readable {
            set |= EventSet::IN;
        }
        if !self.pending.is_empty() && !self.host_write_closed {
            set |= EventSet::OUT;
        }
        set
    }

    /// Whether it has a packet for the guest.
    pub(super) fn has_rx_work(&self) -> bool {
        match self.state {
            State::Resetting => true,
            State::Closed => false,
            State::Connecting => self.owed.request,
            State::Established => {
                self.owed.response
                    || self.owed.shutdown & !self.sent_shutdown != 0
                    || self.owed.credit_update
                    || (self.host_readable && self.may_read_host())
                    || (self.starved() && !self.credit_requested)
            }
        }
    }

    /// The host socket became ready.
    pub(super) fn host_event(&mut self, events: EventSet) {
        if events.intersects(EventSet::IN | EventSet::HANG_UP | EventSet::READ_HANG_UP) {
            self.host_readable = true;
        }
        if events.intersects(EventSet::OUT | EventSet::ERROR | EventSet::HANG_UP) {
            self.flush_host();
        }
    }

    /// A packet from the guest for this connection.
    pub(super) fn guest_packet(&mut self, hdr: &Header, payload: &[u8]) {
        if matches!(self.state, State::Resetting | State::Closed) {
            if hdr.op == op::RST {
                self.state = State::Closed;
            }
            return;
        }
        if hdr.op != op::RST {
            self.update_peer_credit(hdr);
        }
        match (hdr.op, self.state) {
            (op::RST, _) => self.kill(false),
            (op::RESPONSE, State::Connecting) if !self.owed.request => self.accepted(),
            (op::RW, State::Established) => self.guest_data(payload),
            (op::CREDIT_UPDATE, _) => {}
            (op::CREDIT_REQUEST, State::Established) => self.owed.credit_update = true,
            (op::SHUTDOWN, State::Established) => self.guest_shutdown(hdr.flags),
            _ => {
                log::debug!(
                    "vsock {}:{}: unexpected op {} in {:?}",
                    self.local_port,
                    self.peer_port,
                    hdr.op,
                    self.state
                );
                self.kill(true);
            }
        }
    }

    /// The guest accepted a host-initiated connection: tell the host client.
    fn accepted(&mut self) {
        self.state = State::Established;
        self.deadline = None;
        let line = format!("OK {}\n", self.local_port);
        // A fresh socket's send buffer takes a short line whole; anything else means the
        // client is gone.
        match send_nosignal(&self.stream, line.as_bytes()) {
            Ok(n) if n == line.len() => {}
            _ => self.kill(true),
        }
    }

    fn guest_data(&mut self, payload: &[u8]) {
        if self.peer_shutdown & SHUTDOWN_SEND != 0 {
            self.kill(true);
            return;
        }
        let len = payload.len() as u32;
        self.rx_cnt = self.rx_cnt.wrapping_add(len);
        if self.host_write_closed {
            // The host is gone and the guest was told; drop what was already in flight.
            self.fwd_cnt = self.fwd_cnt.wrapping_add(len);
            return;
        }
        if self.pending.len() + payload.len() > CONN_BUF_ALLOC as usize {
            log::debug!(
                "vsock {}:{}: guest sent past its credit",
                self.local_port,
                self.peer_port
            );
            self.kill(true);
            return;
        }
        let mut written = 0;
        if self.pending.is_empty() {
            match send_nosignal(&self.stream, payload) {
                Ok(n) => written = n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => {
                    self.kill(true);
                    return;
                }
            }
            self.forwarded(written);
        }
        self.pending.extend(&payload[written..]);
    }

    /// `n` more guest bytes reached the host socket.
    fn forwarded(&mut self, n: usize) {
        self.fwd_cnt = self.fwd_cnt.wrapping_add(n as u32);
        if self.fwd_cnt.wrapping_sub(self.last_fwd_cnt_sent) >= CREDIT_UPDATE_THRESHOLD {
            self.owed.credit_update = true;
        }
    }

    /// Writes buffered guest bytes to the host socket, as much as it takes.
    fn flush_host(&mut self) {
        while !self.pending.is_empty() && !self.host_write_closed {
            let (front, _) = self.pending.as_slices();
            match send_nosignal(&self.stream, front) {
                Ok(0) => break,
                Ok(n) => {
                    self.pending.drain(..n);
                    self.forwarded(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.kill(true);
                    return;
                }
            }
        }
        self.finish_guest_shutdown();
    }

    fn guest_shutdown(&mut self, flags: u32) {
        self.peer_shutdown |= flags & SHUTDOWN_BOTH;
        if self.peer_shutdown == SHUTDOWN_BOTH && self.deadline.is_none() {
            self.deadline = Some(Instant::now() + SHUTDOWN_TIMEOUT);
        }
        self.finish_guest_shutdown();
    }

    /// Once the guest's bytes are all out: half-close the host socket after SHUTDOWN(SEND),
    /// and end the connection (RST) after a full SHUTDOWN.
    fn finish_guest_shutdown(&mut self) {
        if !self.pending.is_empty() || self.state != State::Established {
            return;
        }
        if self.peer_shutdown & SHUTDOWN_SEND != 0 && !self.host_write_closed {
            let _ = self.stream.shutdown(Shutdown::Write);
            self.host_write_closed = true;
        }
        if self.peer_shutdown == SHUTDOWN_BOTH {
            self.kill(true);
        }
    }

    fn header(&self, op: u16, guest_cid: u64) -> Header {
        Header {
            src_cid: HOST_CID,
            dst_cid: guest_cid,
            src_port: self.local_port,
            dst_port: self.peer_port,
            len: 0,
            type_: TYPE_STREAM,
            op,
            flags: 0,
            buf_alloc: CONN_BUF_ALLOC,
            fwd_cnt: self.fwd_cnt,
        }
    }

    /// The next packet for the guest, its payload (at most `room` bytes) in `scratch`.
    pub(super) fn next_packet(
        &mut self,
        guest_cid: u64,
        room: usize,
        scratch: &mut [u8],
    ) -> Option<Header> {
        let hdr = self.next_packet_inner(guest_cid, room, scratch)?;
        self.last_fwd_cnt_sent = hdr.fwd_cnt;
        self.owed.credit_update = false;
        Some(hdr)
    }

    fn next_packet_inner(
        &mut self,
        guest_cid: u64,
        room: usize,
        scratch: &mut [u8],
    ) -> Option<Header> {
        match self.state {
            State::Closed => return None,
            State::Resetting => {
                self.state = State::Closed;
                return Some(self.header(op::RST, guest_cid));
            }
            State::Connecting if self.owed.request => {
                self.owed.request = false;
                return Some(self.header(op::REQUEST, guest_cid));
            }
            State::Connecting => return None,
            State::Established => {}
        }
        if self.owed.response {
            self.owed.response = false;
            return Some(self.header(op::RESPONSE, guest_cid));
        }
        if self.host_readable
            && self.may_read_host()
            && let Some(hdr) = self.read_host(guest_cid, room, scratch)
        {
            return Some(hdr);
        }
        let shutdown = self.owed.shutdown & !self.sent_shutdown;
        if shutdown != 0 {
            self.sent_shutdown |= shutdown;
            let mut hdr = self.header(op::SHUTDOWN, guest_cid);
            hdr.flags = shutdown;
            return Some(hdr);
        }
        if self.starved() && !self.credit_requested {
            self.credit_requested = true;
            return Some(self.header(op::CREDIT_REQUEST, guest_cid));
        }
        if self.owed.credit_update {
            return Some(self.header(op::CREDIT_UPDATE, guest_cid));
        }
        None
    }

    /// Reads host bytes into an RW packet, or notes EOF / an empty socket.
    fn read_host(&mut self, guest_cid: u64, room: usize, scratch: &mut [u8]) -> Option<Header> {
        let want = room
            .min(MAX_PAYLOAD)
            .min(scratch.len())
            .min(self.peer_free() as usize);
        if want == 0 {
            return None;
        }
        match (&self.stream).read(&mut scratch[..want]) {
            Ok(0) => {
                self.host_eof = true;
                self.host_readable = false;
                self.host_closed();
                None
            }
            Ok(n) => {
                self.tx_cnt = self.tx_cnt.wrapping_add(n as u32);
                let mut hdr = self.header(op::RW, guest_cid);
                hdr.len = n as u32;
                Some(hdr)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.host_readable = false;
                None
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => None,
            Err(_) => {
                self.kill(true);
                None
            }
        }
    }

    /// The host stopped sending: SHUTDOWN(SEND) after a half-close; after a full close the
    /// host can take nothing either, so SHUTDOWN(both) and an RST if the guest does not
    /// answer in time.
    fn host_closed(&mut self) {
        if peer_hung_up(&self.stream) {
            self.owed.shutdown |= SHUTDOWN_BOTH;
            self.host_write_closed = true;
            self.pending = VecDeque::new();
            self.deadline = Some(Instant::now() + SHUTDOWN_TIMEOUT);
        } else {
            self.owed.shutdown |= SHUTDOWN_SEND;
        }
    }
}

/// send(2) without SIGPIPE if the peer is gone.
fn send_nosignal(stream: &UnixStream, data: &[u8]) -> io::Result<usize> {
    loop {
        // SAFETY: `data` is a valid buffer of `data.len()` bytes and the fd is owned by
        // `stream`, which outlives the call.
        let n = unsafe {
            libc::send(
                stream.as_raw_fd(),
                data.as_ptr().cast(),
                data.len(),
                libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Whether the host peer closed its socket entirely (not just its sending half).
fn peer_hung_up(stream: &UnixStream) -> bool {
    let mut pfd = libc::pollfd {
        fd: stream.as_raw_fd(),
        events: 0,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout; the fd is owned by `stream`.
    let n = unsafe { libc::poll(&mut pfd, 1, 0) };
    n == 1 && pfd.revents & libc::POLLHUP != 0
}
