//! The host↔agent protocol through husk's real virtio-vsock device and muxer: the real
//! `AgentClient` connects to the muxer's unix socket with `Endpoint::Vsock` (`CONNECT 1024`);
//! a simulated guest driver (vmm's test driver, in real guest memory behind the real
//! virtio-mmio transport and event loop) accepts the REQUEST on port 1024 and bridges the
//! stream byte for byte, honouring vsock credit both ways, to the real husk-agent serving a
//! unix socket in host-process mode. So every frame crosses the muxer's CONNECT handshake,
//! its credit flow control and its shutdown handling, as it does in a microVM.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/agent_checks.rs"]
mod agent_checks;
mod support;
#[path = "../../vmm/tests/support/vsock_guest.rs"]
mod vsock_guest;

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;

use agent_proto::CONTROL_PORT;
use runtime::agent_client::{AgentClient, Endpoint};
use support::{Agent, TIMEOUT};
use vmm::devices::virtio::vsock::packet::Header;
use vmm::devices::virtio::vsock::{
    MAX_PAYLOAD, SHUTDOWN_RCV, SHUTDOWN_SEND, VsockConfig, VsockDevice, op,
};
use vsock_guest::{Guest, hdr};

/// The receive buffer the simulated guest advertises per connection: small, so the
/// muxer runs out of credit for host-to-guest bytes again and again.
const GUEST_BUF_ALLOC: u32 = 64 << 10;
/// Receive buffers posted on the rx queue, each large enough for a full packet.
const RX_BUF: u32 = (MAX_PAYLOAD + 44) as u32;
const RX_BUFS: usize = 64;

/// One guest-side connection: a host client's stream on guest port 1024, bridged to a
/// connection to the agent's unix socket.
struct Conn {
    agent: UnixStream,
    host_port: u32,
    /// Bytes from the host not yet written to the agent, and how many were.
    to_agent: Vec<u8>,
    fwd_cnt: u32,
    told_fwd_cnt: u32,
    /// Bytes from the agent not yet sent to the host, and how many were.
    to_host: Vec<u8>,
    tx_cnt: u32,
    /// The host side's buffer and what it has consumed of ours.
    peer_buf_alloc: u32,
    peer_fwd_cnt: u32,
    credit_requested: bool,
    host_sends_no_more: bool,
    agent_eof: bool,
    shutdown_sent: bool,
}

impl Conn {
    fn credit(&self) -> usize {
        self.peer_buf_alloc
            .saturating_sub(self.tx_cnt.wrapping_sub(self.peer_fwd_cnt)) as usize
    }

    fn header(&self, op: u16) -> Header {
        let mut h = hdr(op, CONTROL_PORT, self.host_port);
        h.buf_alloc = GUEST_BUF_ALLOC;
        h.fwd_cnt = self.fwd_cnt;
        h
    }
}

/// What the bridge saw, for the report.
#[derive(Debug, Default)]
struct Stats {
    connections: usize,
    to_agent: u64,
    to_host: u64,
    credit_requests_sent: usize,
    credit_requests_received: usize,
}

/// The simulated guest on its own thread, with the agent behind it.
struct Bridge {
    uds: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Stats>>,
    _dir: tempfile::TempDir,
}

impl Bridge {
    fn start(agent_socket: &Path) -> Bridge {
        let dir = tempfile::tempdir().unwrap();
        let uds = dir.path().join("vsock.sock");
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("sim-guest".into())
            .spawn({
                let (uds, stop) = (uds.clone(), Arc::clone(&stop));
                let agent_socket = agent_socket.to_owned();
                move || {
                    let device = VsockDevice::new(&VsockConfig::new(&uds)).unwrap();
                    let mut guest = Guest::new(device, RX_BUF, RX_BUFS);
                    ready_tx.send(()).unwrap();
                    run_guest(&mut guest, &agent_socket, &stop)
                }
            })
            .unwrap();
        ready_rx
            .recv()
            .expect("the simulated guest did not come up");
        Bridge {
            uds,
            stop,
            thread: Some(thread),
            _dir: dir,
        }
    }

    fn client(&self) -> AgentClient {
        let endpoint = Endpoint::Vsock {
            uds: self.uds.clone(),
            port: CONTROL_PORT,
        };
        AgentClient::connect(&endpoint, TIMEOUT).unwrap()
    }

    /// Stops the guest and returns what it saw (a panic in it fails the test here).
    fn finish(mut self) -> Stats {
        self.stop.store(true, Ordering::SeqCst);
        match self.thread.take().unwrap().join() {
            Ok(stats) => stats,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The guest's main loop: run the device, answer packets, move bytes both ways.
fn run_guest(g: &mut Guest, agent_socket: &Path, stop: &AtomicBool) -> Stats {
    let mut conns: HashMap<u32, Conn> = HashMap::new();
    let mut stats = Stats::default();
    let mut busy = false;
    while !stop.load(Ordering::SeqCst) {
        g.step(if busy { 0 } else { 1 });
        busy = false;
        while let Some((h, data)) = g.inbox.pop_front() {
            busy = true;
            on_packet(g, &mut conns, &mut stats, agent_socket, h, data);
        }
        let mut gone = Vec::new();
        for conn in conns.values_mut() {
            busy |= pump(g, conn, &mut stats);
            if conn.shutdown_sent && conn.to_host.is_empty() && conn.host_sends_no_more {
                gone.push(conn.host_port);
            }
        }
        for port in gone {
            // Both sides are done: end the stream for good.
            let conn = conns.remove(&port).unwrap();
            assert!(g.send(conn.header(op::RST), &[]));
        }
    }
    stats
}

fn on_packet(
    g: &mut Guest,
    conns: &mut HashMap<u32, Conn>,
    stats: &mut Stats,
    agent_socket: &Path,
    h: Header,
    data: Vec<u8>,
) {
    if h.op == op::REQUEST {
        accept(g, conns, stats, agent_socket, &h);
        return;
    }
    let Some(conn) = conns.get_mut(&h.src_port) else {
        assert_eq!(h.op, op::RST, "packet for no connection: {h:?}");
        return;
    };
    assert_eq!(h.dst_port, CONTROL_PORT);
    conn.peer_buf_alloc = h.buf_alloc;
    conn.peer_fwd_cnt = h.fwd_cnt;
    match h.op {
        op::RW => {
            conn.to_agent.extend_from_slice(&data);
            assert!(
                conn.to_agent.len() <= GUEST_BUF_ALLOC as usize,
                "the muxer sent past the guest's credit"
            );
        }
        op::CREDIT_UPDATE => conn.credit_requested = false,
        op::CREDIT_REQUEST => {
            stats.credit_requests_received += 1;
            assert!(g.send(conn.header(op::CREDIT_UPDATE), &[]));
            conn.told_fwd_cnt = conn.fwd_cnt;
        }
        op::SHUTDOWN if h.flags & SHUTDOWN_RCV != 0 => {
            // The host client is gone: so is the bridge (the agent sees its socket close).
            let conn = conns.remove(&h.src_port).unwrap();
            assert!(g.send(conn.header(op::RST), &[]));
        }
        op::SHUTDOWN => conn.host_sends_no_more |= h.flags & SHUTDOWN_SEND != 0,
        op::RST => {
            conns.remove(&h.src_port);
        }
        other => panic!("unexpected op {other} from the muxer: {h:?}"),
    }
}

/// A host client's REQUEST: connect to the agent, answer RESPONSE (or RST if it is not
/// for the agent's port).
fn accept(
    g: &mut Guest,
    conns: &mut HashMap<u32, Conn>,
    stats: &mut Stats,
    agent_socket: &Path,
    h: &Header,
) {
    let refuse = |g: &mut Guest| {
        let mut r = hdr(op::RST, h.dst_port, h.src_port);
        r.buf_alloc = 0;
        assert!(g.send(r, &[]));
    };
    if h.dst_port != CONTROL_PORT {
        refuse(g);
        return;
    }
    let agent = UnixStream::connect(agent_socket).unwrap();
    agent.set_nonblocking(true).unwrap();
    let conn = Conn {
        agent,
        host_port: h.src_port,
        to_agent: Vec::new(),
        fwd_cnt: 0,
        told_fwd_cnt: 0,
        to_host: Vec::new(),
        tx_cnt: 0,
        peer_buf_alloc: h.buf_alloc,
        peer_fwd_cnt: h.fwd_cnt,
        credit_requested: false,
        host_sends_no_more: false,
        agent_eof: false,
        shutdown_sent: false,
    };
    assert!(g.send(conn.header(op::RESPONSE), &[]));
    stats.connections += 1;
    conns.insert(h.src_port, conn);
}

/// Moves what can move on one connection without blocking; true if anything did.
fn pump(g: &mut Guest, c: &mut Conn, stats: &mut Stats) -> bool {
    let mut moved = false;
    // Host -> agent, then tell the host about the room made.
    if !c.to_agent.is_empty() {
        match c.agent.write(&c.to_agent) {
            Ok(n) => {
                c.to_agent.drain(..n);
                c.fwd_cnt = c.fwd_cnt.wrapping_add(n as u32);
                stats.to_agent += n as u64;
                moved = true;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            // The agent closed its end; what the host still sends has nowhere to go.
            Err(e) if matches!(e.kind(), ErrorKind::BrokenPipe | ErrorKind::ConnectionReset) => {
                c.fwd_cnt = c.fwd_cnt.wrapping_add(c.to_agent.len() as u32);
                c.to_agent.clear();
            }
            Err(e) => panic!("writing to the agent: {e}"),
        }
    }
    if c.to_agent.is_empty() && c.host_sends_no_more && !c.agent_eof {
        let _ = c.agent.shutdown(std::net::Shutdown::Write);
    }
    let unreported = c.fwd_cnt.wrapping_sub(c.told_fwd_cnt);
    if unreported >= GUEST_BUF_ALLOC / 4 || (unreported > 0 && c.to_agent.is_empty()) {
        assert!(g.send(c.header(op::CREDIT_UPDATE), &[]));
        c.told_fwd_cnt = c.fwd_cnt;
    }
    // Agent -> host, within the host's credit.
    if c.to_host.is_empty() && !c.agent_eof {
        let mut buf = vec![0u8; MAX_PAYLOAD];
        match c.agent.read(&mut buf) {
            Ok(0) => c.agent_eof = true,
            Ok(n) => {
                c.to_host.extend_from_slice(&buf[..n]);
                moved = true;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => panic!("reading from the agent: {e}"),
        }
    }
    while !c.to_host.is_empty() {
        let n = c.credit().min(c.to_host.len());
        if n == 0 {
            if !c.credit_requested {
                assert!(g.send(c.header(op::CREDIT_REQUEST), &[]));
                c.credit_requested = true;
                stats.credit_requests_sent += 1;
            }
            break;
        }
        let h = c.header(op::RW);
        if !g.send(h, &c.to_host[..n]) {
            break; // every transmit slot is in flight; the next step frees them
        }
        c.told_fwd_cnt = c.fwd_cnt;
        c.tx_cnt = c.tx_cnt.wrapping_add(n as u32);
        stats.to_host += n as u64;
        c.to_host.drain(..n);
        moved = true;
    }
    if c.agent_eof && c.to_host.is_empty() && !c.shutdown_sent {
        let mut s = c.header(op::SHUTDOWN);
        s.flags = SHUTDOWN_RCV | SHUTDOWN_SEND;
        assert!(g.send(s, &[]));
        c.shutdown_sent = true;
        moved = true;
    }
    moved
}

#[test]
fn agent_protocol_through_the_vsock_muxer() {
    let agent = Agent::start();
    let big = agent.dir().join("big");
    std::fs::write(
        &big,
        agent_checks::big_pattern(agent_checks::BIG_LEN, 0xb16),
    )
    .unwrap();
    let bridge = Bridge::start(agent.socket());

    let client = bridge.client();
    agent_checks::all(&client, big.to_str().unwrap(), 0xb16);
    // A second client on its own vsock stream while the first is still connected.
    let second = bridge.client();
    agent_checks::echo(&second);
    drop(second);
    let raw = Endpoint::Vsock {
        uds: bridge.uds.clone(),
        port: CONTROL_PORT,
    };
    agent_checks::malformed_frames(raw.connect(TIMEOUT).unwrap());
    agent_checks::refusals(raw.connect(TIMEOUT).unwrap());
    drop(client);

    let stats = bridge.finish();
    eprintln!("simulated guest: {stats:?}");
    assert_eq!(stats.connections, 4);
    assert!(stats.to_host >= agent_checks::BIG_LEN as u64, "{stats:?}");
    assert!(stats.to_agent >= 2 << 20, "{stats:?}");
}

#[test]
fn a_port_nobody_listens_on_is_refused() {
    let agent = Agent::start();
    let bridge = Bridge::start(agent.socket());
    let endpoint = Endpoint::Vsock {
        uds: bridge.uds.clone(),
        port: 4242,
    };
    let err = AgentClient::connect(&endpoint, TIMEOUT).unwrap_err();
    assert!(
        matches!(
            err,
            runtime::agent_client::ClientError::Connect(
                runtime::agent_client::ConnectError::Refused { port: 4242, .. }
            )
        ),
        "{err:?}"
    );
    // The refusal did not disturb the agent's port.
    agent_checks::echo(&bridge.client());
    bridge.finish();
}
