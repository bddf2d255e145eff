//! The host side of the vsock device: the per-VM unix listener, host clients' `CONNECT
//! <port>\n` handshakes, guest connections to `<socket>_<port>` listeners, the table of
//! streams, which of them have packets for the guest (served round-robin), RSTs for packets
//! that match no stream, connection timeouts, and every fd's registration in the VMM's event
//! loop. Epoll interest follows each connection's wishes: a host socket is not watched for
//! reading while the guest has no credit, nor for writing while nothing waits for it.

use std::collections::{HashMap, VecDeque};
use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use event_manager::{EventOps, Events};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::timerfd::TimerFd;

use super::connection::Connection;
use super::packet::Header;
use super::{Error, HOST_CID, MAX_CONNECTIONS, TYPE_STREAM, VsockConfig, op};
use crate::devices::virtio::lifecycle::FIRST_DEVICE_TOKEN;

/// Event token of the listener.
pub(super) const TOKEN_LISTENER: u32 = FIRST_DEVICE_TOKEN;
/// Event token of the timeout timer.
pub(super) const TOKEN_TIMER: u32 = FIRST_DEVICE_TOKEN + 1;
/// First token handed to host sockets.
const FIRST_DYNAMIC_TOKEN: u32 = FIRST_DEVICE_TOKEN + 8;
/// Longest `CONNECT <port>\n` line.
const MAX_CONNECT_LINE: usize = 32;
/// First host port given to host-initiated connections (as Firecracker does).
const FIRST_LOCAL_PORT: u32 = 1 << 30;
/// How often deadlines are checked while any is armed.
const TIMER_PERIOD: Duration = Duration::from_millis(250);
/// Most RSTs for unknown streams kept while the guest posts no receive buffers.
const MAX_STRAY_RSTS: usize = 1024;

/// (host port, guest port).
type Key = (u32, u32);

#[derive(Debug)]
struct Entry {
    conn: Connection,
    token: u32,
    registered: Option<EventSet>,
    queued: bool,
}

/// The vsock host side.
#[derive(Debug)]
pub(super) struct Muxer {
    guest_cid: u64,
    uds_path: PathBuf,
    listener: UnixListener,
    timer: TimerFd,
    timer_armed: bool,
    handshakes: HashMap<u32, UnixStream>,
    conns: HashMap<Key, Entry>,
    tokens: HashMap<u32, Key>,
    rx_ready: VecDeque<Key>,
    stray_rsts: VecDeque<Header>,
    dirty: Vec<Key>,
    next_token: u32,
    next_local_port: u32,
}

impl Muxer {
    /// Binds the host socket (replacing a stale one left by a dead VMM).
    pub(super) fn new(config: &VsockConfig) -> Result<Muxer, Error> {
        let path = &config.uds_path;
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).map_err(|e| Error::Bind(path.clone(), e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| Error::Bind(path.clone(), e))?;
        Ok(Muxer {
            guest_cid: config.guest_cid,
            uds_path: path.clone(),
            listener,
            timer: nonblocking_timer()?,
            timer_armed: false,
            handshakes: HashMap::new(),
            conns: HashMap::new(),
            tokens: HashMap::new(),
            rx_ready: VecDeque::new(),
            stray_rsts: VecDeque::new(),
            dirty: Vec::new(),
            next_token: FIRST_DYNAMIC_TOKEN,
            next_local_port: FIRST_LOCAL_PORT,
        })
    }

    /// Registers the listener and the timer.
    pub(super) fn init(&mut self, ops: &mut EventOps) {
        let listener = Events::with_data(&self.listener, TOKEN_LISTENER, EventSet::IN);
        let timer = Events::with_data(&self.timer, TOKEN_TIMER, EventSet::IN);
        for ev in [listener, timer] {
            if let Err(e) = ops.add(ev) {
                log::error!("vsock: cannot watch fd {}: {e:?}", ev.fd());
            }
        }
    }

    /// Streams open now (for tests and diagnostics).
    pub(super) fn connection_count(&self) -> usize {
        self.conns.len()
    }

    fn alloc_token(&mut self) -> u32 {
        loop {
            let t = self.next_token;
            self.next_token = self
                .next_token
                .checked_add(1)
                .unwrap_or(FIRST_DYNAMIC_TOKEN);
            if !self.tokens.contains_key(&t) && !self.handshakes.contains_key(&t) {
                return t;
            }
        }
    }

    fn alloc_local_port(&mut self, peer_port: u32) -> u32 {
        loop {
            let p = self.next_local_port;
            self.next_local_port = self
                .next_local_port
                .checked_add(1)
                .unwrap_or(FIRST_LOCAL_PORT);
            if !self.conns.contains_key(&(p, peer_port)) {
                return p;
            }
        }
    }

    /// An event on one of the muxer's fds; `active` says whether a driver is running.
    pub(super) fn handle_event(
        &mut self,
        token: u32,
        events: EventSet,
        ops: &mut EventOps,
        active: bool,
    ) {
        match token {
            TOKEN_LISTENER => self.accept(ops),
            TOKEN_TIMER => self.tick(),
            t if self.handshakes.contains_key(&t) => self.handshake(t, ops, active),
            t => match self.tokens.get(&t) {
                Some(&key) => {
                    if let Some(e) = self.conns.get_mut(&key) {
                        e.conn.host_event(events);
                        self.dirty.push(key);
                    }
                }
                None => log::debug!("vsock: event for unknown token {t}"),
            },
        }
    }

    fn accept(&mut self, ops: &mut EventOps) {
        loop {
            let stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    log::warn!("vsock: accept on {} failed: {e}", self.uds_path.display());
                    return;
                }
            };
            if self.handshakes.len() + self.conns.len() >= MAX_CONNECTIONS {
                log::warn!("vsock: too many connections; refusing a host client");
                continue;
            }
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            let token = self.alloc_token();
            if let Err(e) = ops.add(Events::with_data(&stream, token, EventSet::IN)) {
                log::error!("vsock: cannot watch a host client: {e:?}");
                continue;
            }
            self.handshakes.insert(token, stream);
        }
    }

    /// Reads a host client's `CONNECT <port>\n` (without consuming what follows it).
    fn handshake(&mut self, token: u32, ops: &mut EventOps, active: bool) {
        let Some(stream) = self.handshakes.get(&token) else {
            return;
        };
        let line = match peek_line(stream) {
            Ok(Some(line)) => line,
            Ok(None) => return,
            Err(e) => {
                log::debug!("vsock: dropping a host client: {e}");
                self.end_handshake(token, ops);
                return;
            }
        };
        let Some(stream) = self.end_handshake(token, ops) else {
            return;
        };
        let port = match parse_connect(&line) {
            Some(port) if active => port,
            Some(port) => {
                log::debug!("vsock: CONNECT {port} while the driver is not running");
                return;
            }
            None => {
                log::debug!("vsock: bad handshake {line:?}");
                return;
            }
        };
        let local = self.alloc_local_port(port);
        self.insert(
            Connection::host_initiated(stream, local, port),
            (local, port),
        );
    }

    fn end_handshake(&mut self, token: u32, ops: &mut EventOps) -> Option<UnixStream> {
        let stream = self.handshakes.remove(&token)?;
        if let Err(e) = ops.remove(Events::with_data(&stream, token, EventSet::IN)) {
            log::error!("vsock: cannot unwatch a host client: {e:?}");
        }
        Some(stream)
    }

    fn insert(&mut self, conn: Connection, key: Key) {
        let token = self.alloc_token();
        self.tokens.insert(token, key);
        self.conns.insert(
            key,
            Entry {
                conn,
                token,
                registered: None,
                queued: false,
            },
        );
        self.dirty.push(key);
    }

    fn tick(&mut self) {
        // Non-blocking: the timer may have been disarmed (or re-armed) by another event of
        // the same epoll batch since it was reported readable; a blocking read would then
        // stop the whole event loop (every device of this VM) until it fired again, or
        // forever. EAGAIN means just that, and the check below is harmless either way.
        let _ = self.timer.wait();
        let now = Instant::now();
        for (key, e) in &mut self.conns {
            if e.conn.deadline().is_some() {
                e.conn.check_deadline(now);
                self.dirty.push(*key);
            }
        }
    }

    fn stray_rst(&mut self, to: &Header) {
        if self.stray_rsts.len() >= MAX_STRAY_RSTS {
            return;
        }
        self.stray_rsts.push_back(Header {
            src_cid: HOST_CID,
            dst_cid: self.guest_cid,
            src_port: to.dst_port,
            dst_port: to.src_port,
            type_: TYPE_STREAM,
            op: op::RST,
            ..Header::default()
        });
    }

    /// Whether a packet is addressed from our guest to the host at all.
    fn addressed_to_us(&self, hdr: &Header) -> bool {
        hdr.src_cid == self.guest_cid && hdr.dst_cid == HOST_CID
    }

    /// A packet the guest transmitted.
    pub(super) fn guest_packet(&mut self, hdr: &Header, payload: &[u8]) {
        if !self.addressed_to_us(hdr) {
            log::debug!(
                "vsock: dropping a packet from cid {} to cid {}",
                hdr.src_cid,
                hdr.dst_cid
            );
            return;
        }
        if hdr.type_ != TYPE_STREAM {
            self.guest_bad_packet(hdr);
            return;
        }
        let key = (hdr.dst_port, hdr.src_port);
        if let Some(e) = self.conns.get_mut(&key) {
            e.conn.guest_packet(hdr, payload);
            self.dirty.push(key);
            return;
        }
        match hdr.op {
            op::REQUEST => self.guest_connect(hdr),
            op::RST => {}
            _ => self.stray_rst(hdr),
        }
    }

    /// A packet whose header parsed but whose body is invalid: reset its stream.
    pub(super) fn guest_bad_packet(&mut self, hdr: &Header) {
        if !self.addressed_to_us(hdr) || hdr.op == op::RST {
            return;
        }
        let key = (hdr.dst_port, hdr.src_port);
        match self.conns.get_mut(&key) {
            Some(e) => {
                e.conn.kill(true);
                self.dirty.push(key);
            }
            None => self.stray_rst(hdr),
        }
    }

    fn guest_connect(&mut self, hdr: &Header) {
        if self.handshakes.len() + self.conns.len() >= MAX_CONNECTIONS {
            self.stray_rst(hdr);
            return;
        }
        let mut path = OsString::from(self.uds_path.as_os_str());
        path.push(format!("_{}", hdr.dst_port));
        match connect_nonblocking(Path::new(&path)) {
            Ok(stream) => {
                let key = (hdr.dst_port, hdr.src_port);
                self.insert(Connection::guest_initiated(stream, hdr), key);
            }
            Err(e) => {
                log::debug!(
                    "vsock: guest connect to {}: {e}",
                    Path::new(&path).display()
                );
                self.stray_rst(hdr);
            }
        }
    }

    /// Writing the packet `hdr` into the guest failed: its bytes are lost, so reset.
    pub(super) fn rx_failed(&mut self, hdr: &Header) {
        let key = (hdr.src_port, hdr.dst_port);
        if let Some(e) = self.conns.get_mut(&key) {
            e.conn.kill(true);
            self.dirty.push(key);
        }
    }

    /// Whether any packet waits for a receive buffer.
    pub(super) fn has_rx_work(&self) -> bool {
        !self.stray_rsts.is_empty() || !self.rx_ready.is_empty()
    }

    /// The next packet for the guest (payload of at most `room` bytes into `scratch`).
    pub(super) fn next_rx_packet(&mut self, room: usize, scratch: &mut [u8]) -> Option<Header> {
        if let Some(h) = self.stray_rsts.pop_front() {
            return Some(h);
        }
        for _ in 0..self.rx_ready.len() {
            let key = self.rx_ready.pop_front()?;
            let Some(e) = self.conns.get_mut(&key) else {
                continue;
            };
            e.queued = false;
            let pkt = e.conn.next_packet(self.guest_cid, room, scratch);
            if e.conn.has_rx_work() {
                e.queued = true;
                self.rx_ready.push_back(key);
            }
            self.dirty.push(key);
            if pkt.is_some() {
                return pkt;
            }
        }
        None
    }

    /// Brings registrations, the ready list and the timer in line with the connections
    /// touched since the last call, and drops closed ones.
    pub(super) fn sync(&mut self, ops: &mut EventOps) {
        let dirty = std::mem::take(&mut self.dirty);
        for key in dirty {
            let Some(e) = self.conns.get_mut(&key) else {
                continue;
            };
            if e.conn.is_closed() {
                self.remove(key, ops);
                continue;
            }
            reconcile(e, ops);
            if !e.queued && e.conn.has_rx_work() {
                e.queued = true;
                self.rx_ready.push_back(key);
            }
        }
        self.sync_timer();
    }

    fn remove(&mut self, key: Key, ops: &mut EventOps) {
        if let Some(mut e) = self.conns.remove(&key) {
            e.conn.kill(false);
            unregister(&e, ops);
            self.tokens.remove(&e.token);
        }
    }

    fn sync_timer(&mut self) {
        let want = self.conns.values().any(|e| e.conn.deadline().is_some());
        if want == self.timer_armed {
            return;
        }
        let result = if want {
            self.timer.reset(TIMER_PERIOD, Some(TIMER_PERIOD))
        } else {
            self.timer.clear()
        };
        match result {
            Ok(()) => self.timer_armed = want,
            Err(e) => log::error!("vsock: cannot set the timeout timer: {e}"),
        }
    }

    /// Drops every stream (device reset): host clients see their sockets close.
    pub(super) fn drop_all(&mut self, ops: &mut EventOps) {
        let keys: Vec<Key> = self.conns.keys().copied().collect();
        for key in keys {
            self.remove(key, ops);
        }
        self.rx_ready.clear();
        self.stray_rsts.clear();
        self.dirty.clear();
        self.sync_timer();
    }
}

/// Makes the fd's epoll registration match what the connection wants; an fd that wants
/// nothing is taken out of epoll entirely (so a hung-up socket cannot spin the loop).
fn reconcile(e: &mut Entry, ops: &mut EventOps) {
    let want = e.conn.wanted_interest();
    let fd = e.conn.stream();
    let result = match (e.registered, want.is_empty()) {
        (None, true) => return,
        (Some(have), false) if have == want => return,
        (None, false) => ops.add(Events::with_data(fd, e.token, want)),
        (Some(have), true) => ops.remove(Events::with_data(fd, e.token, have)),
        (Some(_), false) => ops.modify(Events::with_data(fd, e.token, want)),
    };
    match result {
        Ok(()) => e.registered = (!want.is_empty()).then_some(want),
        Err(err) => {
            log::error!("vsock: cannot change a host socket's events: {err:?}");
            e.conn.kill(true);
        }
    }
}

fn unregister(e: &Entry, ops: &mut EventOps) {
    if let Some(have) = e.registered
        && let Err(err) = ops.remove(Events::with_data(e.conn.stream(), e.token, have))
    {
        log::error!("vsock: cannot unwatch a host socket: {err:?}");
    }
}

/// Peeks at the start of a host client's stream: `Some(line)` once a whole line is there
/// (and consumed), `None` if more is needed; an error if the client closed or sent junk.
/// The connection-timeout timer, non-blocking (see `Muxer::tick`).
fn nonblocking_timer() -> Result<TimerFd, Error> {
    let timer =
        TimerFd::new().map_err(|e| Error::EventFd(io::Error::from_raw_os_error(e.errno())))?;
    let fd = timer.as_raw_fd();
    // SAFETY: fcntl on a descriptor we own; F_GETFL/F_SETFL take and return plain ints.
    let ok = unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        flags >= 0 && libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) == 0
    };
    if !ok {
        return Err(Error::EventFd(io::Error::last_os_error()));
    }
    Ok(timer)
}

fn peek_line(stream: &UnixStream) -> io::Result<Option<String>> {
    let mut buf = [0u8; MAX_CONNECT_LINE];
    let n = match peek(stream, &mut buf) {
        Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed")),
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
        Err(e) => return Err(e),
    };
    let Some(end) = buf[..n].iter().position(|&b| b == b'\n') else {
        if n == MAX_CONNECT_LINE {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "line too long"));
        }
        return Ok(None);
    };
    let mut line = vec![0u8; end + 1];
    io::Read::read_exact(&mut &*stream, &mut line)?;
    line.pop();
    Ok(Some(String::from_utf8_lossy(&line).into_owned()))
}

/// recv(2) with MSG_PEEK: looks without consuming.
fn peek(stream: &UnixStream, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: `buf` is valid for `buf.len()` bytes; the fd is owned by `stream`.
        let n = unsafe {
            libc::recv(
                stream.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
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

/// `CONNECT <port>` -> port.
fn parse_connect(line: &str) -> Option<u32> {
    line.strip_prefix("CONNECT ")?
        .trim_end_matches('\r')
        .parse()
        .ok()
}

/// Connects to a unix socket without ever blocking the event loop (a full backlog is an
/// error, not a wait).
fn connect_nonblocking(path: &Path) -> io::Result<UnixStream> {
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: sockaddr_un is plain old data; all zeroes is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.len() >= addr.sun_path.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "socket path too long",
        ));
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (dst, &src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = src as libc::c_char;
    }
    // SAFETY: plain socket(2) call; the result is checked.
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh socket nobody else owns.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    // SAFETY: `addr` is a valid sockaddr_un of `len` bytes; `owned` is a valid socket.
    let rc = unsafe {
        libc::connect(
            owned.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast(),
            len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(UnixStream::from(owned))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The timer event can be stale by the time it is handled (another event of the same
    /// epoll batch disarmed the timer): handling it must not block the event loop. A
    /// blocking read here froze whole VMs under load (vsock and disks stopped answering).
    #[test]
    fn a_stale_timer_event_does_not_block() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = Muxer::new(&VsockConfig::new(dir.path().join("v.sock"))).unwrap();
        m.timer.reset(TIMER_PERIOD, None).unwrap();
        m.timer.clear().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            m.tick();
            let _ = tx.send(());
        });
        assert!(
            rx.recv_timeout(Duration::from_secs(5)).is_ok(),
            "tick() blocked on a disarmed timer"
        );
    }

    #[test]
    fn connect_lines() {
        assert_eq!(parse_connect("CONNECT 1024"), Some(1024));
        assert_eq!(parse_connect("CONNECT 52\r"), Some(52));
        assert_eq!(parse_connect("CONNECT"), None);
        assert_eq!(parse_connect("CONNECT -1"), None);
        assert_eq!(parse_connect("connect 5"), None);
        assert_eq!(parse_connect("CONNECT 99999999999"), None);
    }
}
