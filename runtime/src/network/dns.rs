//! The embedded DNS server of a user network (docker's behaviour): containers resolve each
//! other's names, aliases and short IDs to their addresses on the network, and every other
//! question goes to the asking container's `--dns` servers or, without any, the host's
//! resolvers. It listens on the network's gateway, UDP port 53, which containers'
//! `resolv.conf` names.
//!
//! There is no daemon: the shim of every container on the network runs a [`Responder`]
//! bound with `SO_REUSEPORT`, so the kernel gives each query to one of them, and each
//! answers from the network's address pool (the same files `ipam` hands addresses out
//! from), which always says who is on the network now. The last container's shim closes
//! the last socket with the bridge. Only UDP; only A questions are answered locally
//! (AAAA for a known name gets an empty answer: there is no IPv6 yet).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use simple_dns::rdata::{A, RData};
use simple_dns::{CLASS, Packet, PacketFlag, QCLASS, QTYPE, RCODE, ResourceRecord, TYPE};

use super::defs::Net;
use super::ipam;

/// TTL of local answers (docker's).
const TTL: u32 = 600;
/// How long an upstream server gets to answer.
const UPSTREAM_WAIT: Duration = Duration::from_secs(2);
/// Most forwarded questions in flight at once (more are dropped: the client retries).
const MAX_FORWARDS: usize = 64;
/// How often the loop looks whether it should stop.
const POLL: Duration = Duration::from_millis(500);

/// Errors starting a responder.
#[derive(Debug, thiserror::Error)]
#[error("cannot serve DNS on {0}:53")]
pub struct DnsError(Ipv4Addr, #[source] std::io::Error);

/// Who is on the network, as the pool says.
#[derive(Debug, Clone)]
struct Directory {
    pool: PathBuf,
    root: PathBuf,
}

impl Directory {
    /// The address `name` (lower case) has on the network.
    fn lookup(&self, name: &str) -> Option<Ipv4Addr> {
        ipam::holders(&self.pool, &self.root)
            .into_iter()
            .find(|h| h.names.iter().any(|n| n.eq_ignore_ascii_case(name)))
            .map(|h| h.ip)
    }

    /// The `--dns` servers of the container at `ip`.
    fn upstreams_of(&self, ip: Ipv4Addr) -> Vec<Ipv4Addr> {
        ipam::holders(&self.pool, &self.root)
            .into_iter()
            .find(|h| h.ip == ip)
            .map(|h| h.upstreams)
            .unwrap_or_default()
    }
}

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
        let socket = bind(net.gateway).map_err(|e| DnsError(net.gateway, e))?;
        let stop = Arc::new(AtomicBool::new(false));
        let server = Server {
            socket,
            dir: Directory {
                pool: net.pool(root),
                root: root.to_path_buf(),
            },
            host_resolvers: host_resolvers
                .into_iter()
                .filter(|r| *r != net.gateway)
                .collect(),
            in_flight: Arc::new(AtomicUsize::new(0)),
        };
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("dns".into())
            .spawn(move || server.run(&flag))
            .map_err(|e| DnsError(net.gateway, e))?;
        Ok(Responder { stop })
    }
}

/// A UDP socket on `ip:53` shared with the network's other shims.
fn bind(ip: Ipv4Addr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Socket, Type};
    // socket2 opens it close-on-exec.
    let s = Socket::new(Domain::IPV4, Type::DGRAM, None)?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.bind(&SocketAddr::V4(SocketAddrV4::new(ip, 53)).into())?;
    let s: UdpSocket = s.into();
    s.set_read_timeout(Some(POLL))?;
    Ok(s)
}

struct Server {
    socket: UdpSocket,
    dir: Directory,
    host_resolvers: Vec<Ipv4Addr>,
    in_flight: Arc<AtomicUsize>,
}

impl Server {
    fn run(self, stop: &AtomicBool) {
        let mut buf = [0u8; 4096];
        while !stop.load(Ordering::Relaxed) {
            let Ok((len, from)) = self.socket.recv_from(&mut buf) else {
                continue;
            };
            let query = &buf[..len];
            match answer(query, |name| self.dir.lookup(name)) {
                Answer::Local(reply) => {
                    let _ = self.socket.send_to(&reply, from);
                }
                Answer::Forward => self.forward(query.to_vec(), from),
                Answer::Ignore => {}
            }
        }
    }

    /// Asks the asker's upstream servers in a thread of its own and relays the first
    /// answer (SERVFAIL if none answers).
    fn forward(&self, query: Vec<u8>, from: SocketAddr) {
        let asker = match from {
            SocketAddr::V4(a) => *a.ip(),
            SocketAddr::V6(_) => return,
        };
        let mut upstreams = self.dir.upstreams_of(asker);
        if upstreams.is_empty() {
            upstreams = self.host_resolvers.clone();
        }
        if self.in_flight.fetch_add(1, Ordering::Relaxed) >= MAX_FORWARDS {
            self.in_flight.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        let (Ok(socket), in_flight) = (self.socket.try_clone(), self.in_flight.clone()) else {
            self.in_flight.fetch_sub(1, Ordering::Relaxed);
            return;
        };
        let spawned = std::thread::Builder::new()
            .name("dns-forward".into())
            .spawn(move || {
                let reply = upstreams
                    .iter()
                    .find_map(|u| ask(*u, &query))
                    .unwrap_or_else(|| servfail(&query));
                let _ = socket.send_to(&reply, from);
                in_flight.fetch_sub(1, Ordering::Relaxed);
            });
        if spawned.is_err() {
            self.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// One upstream server's answer to `query`, if it gives one in time.
fn ask(server: Ipv4Addr, query: &[u8]) -> Option<Vec<u8>> {
    let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
    s.set_read_timeout(Some(UPSTREAM_WAIT)).ok()?;
    s.connect((server, 53)).ok()?;
    s.send(query).ok()?;
    let mut buf = vec![0u8; 4096];
    let len = s.recv(&mut buf).ok()?;
    buf.truncate(len);
    // Only the answer to this question, not a stray datagram.
    (len >= 2 && buf[..2] == query[..2]).then_some(buf)
}

/// `query` turned into a SERVFAIL reply (header flags only; the question stays).
fn servfail(query: &[u8]) -> Vec<u8> {
    let mut reply = query.to_vec();
    if reply.len() >= 4 {
        reply[2] |= 0x80; // QR: a response
        reply[3] = (reply[3] & 0x70) | 0x80 | RCODE::ServerFailure as u8; // RA, SERVFAIL
    }
    reply
}

/// What to do with a datagram.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    /// Send this reply.
    Local(Vec<u8>),
    /// Not a name of the network: ask upstream.
    Forward,
    /// Not a DNS query (or a hostile one): no reply.
    Ignore,
}

/// Answers `query` from `lookup` if it asks for a name of the network.
fn answer(query: &[u8], lookup: impl Fn(&str) -> Option<Ipv4Addr>) -> Answer {
    let Ok(packet) = Packet::parse(query) else {
        return Answer::Ignore;
    };
    if packet.has_flags(PacketFlag::RESPONSE) {
        return Answer::Ignore;
    }
    let [question] = packet.questions.as_slice() else {
        return Answer::Forward;
    };
    let wanted = match question.qtype {
        QTYPE::TYPE(TYPE::A) => TYPE::A,
        QTYPE::TYPE(TYPE::AAAA) => TYPE::AAAA,
        _ => return Answer::Forward,
    };
    if !matches!(question.qclass, QCLASS::CLASS(CLASS::IN)) {
        return Answer::Forward;
    }
    let name = question.qname.to_string().to_ascii_lowercase();
    let Some(ip) = lookup(name.trim_end_matches('.')) else {
        return Answer::Forward;
    };
    let mut reply = Packet::new_reply(packet.id());
    reply.set_flags(PacketFlag::AUTHORITATIVE_ANSWER | PacketFlag::RECURSION_AVAILABLE);
    if packet.has_flags(PacketFlag::RECURSION_DESIRED) {
        reply.set_flags(PacketFlag::RECURSION_DESIRED);
    }
    reply.questions.push(question.clone());
    if wanted == TYPE::A {
        reply.answers.push(ResourceRecord::new(
            question.qname.clone(),
            CLASS::IN,
            TTL,
            RData::A(A::from(ip)),
        ));
    }
    match reply.build_bytes_vec_compressed() {
        Ok(bytes) => Answer::Local(bytes),
        Err(_) => Answer::Forward,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use simple_dns::{Name, Question};

    fn query(name: &str, qtype: TYPE) -> Vec<u8> {
        let mut p = Packet::new_query(0x1234);
        p.set_flags(PacketFlag::RECURSION_DESIRED);
        p.questions.push(Question::new(
            Name::new_unchecked(name),
            qtype.into(),
            CLASS::IN.into(),
            false,
        ));
        p.build_bytes_vec().unwrap()
    }

    fn lookup(name: &str) -> Option<Ipv4Addr> {
        (name == "web").then_some(Ipv4Addr::new(10, 89, 0, 2))
    }

    #[test]
    fn network_names_are_answered_and_others_forwarded() {
        let Answer::Local(bytes) = answer(&query("WEB.", TYPE::A), lookup) else {
            panic!("no local answer");
        };
        let reply = Packet::parse(&bytes).unwrap();
        assert_eq!(reply.id(), 0x1234);
        assert!(reply.has_flags(PacketFlag::RESPONSE));
        assert_eq!(reply.rcode(), RCODE::NoError);
        match &reply.answers[0].rdata {
            RData::A(a) => assert_eq!(Ipv4Addr::from(a.address), Ipv4Addr::new(10, 89, 0, 2)),
            other => panic!("{other:?}"),
        }
        let Answer::Local(bytes) = answer(&query("web", TYPE::AAAA), lookup) else {
            panic!("no local answer");
        };
        assert!(Packet::parse(&bytes).unwrap().answers.is_empty());
        assert_eq!(
            answer(&query("example.org", TYPE::A), lookup),
            Answer::Forward
        );
        assert_eq!(answer(&query("web", TYPE::MX), lookup), Answer::Forward);
        assert_eq!(answer(b"\x01\x02garbage", lookup), Answer::Ignore);
        assert_eq!(answer(&bytes, lookup), Answer::Ignore);
        let fail = servfail(&query("x", TYPE::A));
        let p = Packet::parse(&fail).unwrap();
        assert!(p.has_flags(PacketFlag::RESPONSE));
        assert_eq!(p.rcode(), RCODE::ServerFailure);
    }
}
