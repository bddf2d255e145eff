//! The embedded DNS server of a user network (docker's behaviour): containers resolve each
//! other's names, aliases and short IDs to their addresses on the network, and every other
//! question goes to the asking container's `--dns` servers or, without any, the host's
//! resolvers (an internal network forwards only to `--dns` servers inside its subnet:
//! nothing may leave it, not even by DNS). It listens on the network's gateway, UDP port
//! 53, which containers' `resolv.conf` names.
//!
//! There is no daemon: the shim of every container on the network runs a [`Responder`]
//! bound with `SO_REUSEPORT`, so the kernel gives each query to one of them, and each
//! answers from the network's address pool (`directory`), which always says who is on the
//! network now. The socket is bound to the network's bridge and only members of the
//! network are answered, so no other network, host or forged source gets a resolver. The
//! last container's shim closes the last socket with the bridge. Only UDP; only A
//! questions are answered locally (AAAA for a known name gets an empty answer: there is
//! no IPv6 yet).

mod answer;
mod directory;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use answer::{Answer, answer, servfail};
use directory::Directory;

use super::defs::Net;
use super::subnet::Subnet;

/// How long an upstream server gets to answer.
const UPSTREAM_WAIT: Duration = Duration::from_secs(2);
/// Most forwarded questions in flight at once per shim, and per asking container (more
/// are dropped: the client retries), so one container cannot starve its neighbours.
const MAX_FORWARDS: usize = 64;
const MAX_FORWARDS_PER_ASKER: usize = 8;
/// How often the loop looks whether it should stop.
const POLL: Duration = Duration::from_millis(500);

/// Errors starting a responder.
#[derive(Debug, thiserror::Error)]
#[error("cannot serve DNS on {0}:53")]
pub struct DnsError(Ipv4Addr, #[source] std::io::Error);

/// A running responder; dropping it stops it (within [`POLL`]).
#[derive(Debug)]
pub struct Responder {
    stop: Arc<AtomicBool>,
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Responder {
    /// Serves `net` (its bridge and gateway address exist) from `root`'s pool, forwarding
    /// to `host_resolvers` for containers without `--dns`.
    pub fn start(root: &Path, net: &Net, host_resolvers: Vec<Ipv4Addr>) -> Result<Self, DnsError> {
        let socket = bind(net.gateway, &net.iface()).map_err(|e| DnsError(net.gateway, e))?;
        let stop = Arc::new(AtomicBool::new(false));
        let server = Server {
            socket,
            dir: Directory::new(net.pool(root), root.to_path_buf()),
            host_resolvers: host_resolvers
                .into_iter()
                .filter(|r| *r != net.gateway)
                .collect(),
            internal: net.internal.then_some(net.subnet),
            in_flight: Arc::new(Mutex::new(InFlight::default())),
        };
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("dns".into())
            .spawn(move || server.run(&flag))
            .map_err(|e| DnsError(net.gateway, e))?;
        Ok(Responder { stop })
    }
}

/// A UDP socket on `ip:53` of bridge `iface`, shared with the network's other shims.
fn bind(ip: Ipv4Addr, iface: &str) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Socket, Type};
    // socket2 opens it close-on-exec.
    let s = Socket::new(Domain::IPV4, Type::DGRAM, None)?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.bind_device(Some(iface.as_bytes()))?;
    s.bind(&SocketAddr::V4(SocketAddrV4::new(ip, 53)).into())?;
    let s: UdpSocket = s.into();
    s.set_read_timeout(Some(POLL))?;
    Ok(s)
}

/// Forwarded questions in flight: in all, and per asker.
#[derive(Debug, Default)]
struct InFlight {
    total: usize,
    by_asker: HashMap<Ipv4Addr, usize>,
}

impl InFlight {
    /// Counts one more for `asker` if both limits allow it.
    fn admit(&mut self, asker: Ipv4Addr) -> bool {
        let mine = self.by_asker.entry(asker).or_default();
        if self.total >= MAX_FORWARDS || *mine >= MAX_FORWARDS_PER_ASKER {
            return false;
        }
        *mine += 1;
        self.total += 1;
        true
    }

    fn done(&mut self, asker: Ipv4Addr) {
        self.total = self.total.saturating_sub(1);
        if let Some(n) = self.by_asker.get_mut(&asker) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.by_asker.remove(&asker);
            }
        }
    }
}

struct Server {
    socket: UdpSocket,
    dir: Directory,
    host_resolvers: Vec<Ipv4Addr>,
    /// An internal network's subnet: only `--dns` servers in it are asked.
    internal: Option<Subnet>,
    in_flight: Arc<Mutex<InFlight>>,
}

impl Server {
    fn run(mut self, stop: &AtomicBool) {
        let mut buf = [0u8; 4096];
        while !stop.load(Ordering::Relaxed) {
            let Ok((len, SocketAddr::V4(from))) = self.socket.recv_from(&mut buf) else {
                continue;
            };
            self.dir.refresh();
            // Only the network's own containers get answers.
            let Some(upstreams) = self.dir.member(*from.ip()).map(|m| m.upstreams.clone()) else {
                continue;
            };
            let query = &buf[..len];
            let dir = &mut self.dir;
            match answer(query, |name| dir.lookup(name, *from.ip())) {
                Answer::Local(reply) => {
                    let _ = self.socket.send_to(&reply, from);
                }
                Answer::Forward => self.forward(query.to_vec(), from, upstreams),
                Answer::Ignore => {}
            }
        }
    }

    /// The servers the asker's other questions go to.
    fn upstreams(&self, own: Vec<Ipv4Addr>) -> Vec<Ipv4Addr> {
        match self.internal {
            Some(subnet) => own.into_iter().filter(|u| subnet.has_host(*u)).collect(),
            None if own.is_empty() => self.host_resolvers.clone(),
            None => own,
        }
    }

    /// Asks the asker's upstream servers in a thread of its own and relays the first
    /// answer (SERVFAIL if none answers, or there is none to ask).
    fn forward(&self, query: Vec<u8>, from: SocketAddrV4, own: Vec<Ipv4Addr>) {
        let upstreams = self.upstreams(own);
        if upstreams.is_empty() {
            let _ = self.socket.send_to(&servfail(&query), from);
            return;
        }
        let asker = *from.ip();
        let admitted = self.in_flight.lock().is_ok_and(|mut f| f.admit(asker));
        if !admitted {
            return;
        }
        let (socket, in_flight) = (self.socket.try_clone(), self.in_flight.clone());
        let spawned = socket.map(|socket| {
            let in_flight = in_flight.clone();
            std::thread::Builder::new()
                .name("dns-forward".into())
                .spawn(move || {
                    let reply = upstreams
                        .iter()
                        .find_map(|u| ask(*u, &query))
                        .unwrap_or_else(|| servfail(&query));
                    let _ = socket.send_to(&reply, from);
                    if let Ok(mut f) = in_flight.lock() {
                        f.done(asker);
                    }
                })
        });
        if !matches!(spawned, Ok(Ok(_)))
            && let Ok(mut f) = in_flight.lock()
        {
            f.done(asker);
        }
    }
}

/// One upstream server's answer to `query`, if it gives one in time (whole: up to the
/// largest UDP payload).
fn ask(server: Ipv4Addr, query: &[u8]) -> Option<Vec<u8>> {
    let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
    s.set_read_timeout(Some(UPSTREAM_WAIT)).ok()?;
    s.connect((server, 53)).ok()?;
    s.send(query).ok()?;
    let mut buf = vec![0u8; 65535];
    let len = s.recv(&mut buf).ok()?;
    buf.truncate(len);
    // Only the answer to this question, not a stray datagram.
    (len >= 2 && buf[..2] == query[..2]).then_some(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwards_are_limited_per_asker_and_in_all() {
        let mut f = InFlight::default();
        let a = Ipv4Addr::new(10, 89, 0, 2);
        for _ in 0..MAX_FORWARDS_PER_ASKER {
            assert!(f.admit(a));
        }
        assert!(!f.admit(a));
        f.done(a);
        assert!(f.admit(a));
        for i in 0..MAX_FORWARDS as u8 {
            let _ = f.admit(Ipv4Addr::new(10, 89, 1, i));
        }
        assert_eq!(f.total, MAX_FORWARDS);
        assert!(!f.admit(Ipv4Addr::new(10, 89, 2, 1)));
    }
}
