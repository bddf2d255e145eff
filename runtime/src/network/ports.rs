//! Published ports (`-p`, `-P`): parsing docker's forms, reserving the host ports, and
//! what `port`, `ps` and `inspect` show. Traffic reaches the container through kernel
//! DNAT (`nat.rs`), not a copying proxy; the reservation is a bound socket the
//! container's sandbox holds (never listening: connections are rewritten before they
//! could reach it), so another program cannot take the port meanwhile and a port that is
//! already taken fails the run.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use serde::{Deserialize, Serialize};

/// A transport protocol of a published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// TCP (the default).
    Tcp,
    /// UDP.
    Udp,
}

impl Proto {
    /// `tcp` or `udp`.
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// One `-p` mapping as asked (host port 0: an ephemeral one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PortBinding {
    /// The host address (`None`: every address, docker's `0.0.0.0`).
    pub host_ip: Option<Ipv4Addr>,
    /// The host port, 0 for one the kernel picks.
    pub host_port: u16,
    /// The container's port.
    pub container_port: u16,
    /// Its protocol.
    pub proto: Proto,
}

impl PortBinding {
    /// docker's `port` line: `80/tcp -> 0.0.0.0:8080`.
    pub fn describe(&self) -> String {
        format!(
            "{}/{} -> {}:{}",
            self.container_port,
            self.proto.as_str(),
            self.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED),
            self.host_port
        )
    }

    /// docker's `ps` form: `0.0.0.0:8080->80/tcp`.
    pub fn short(&self) -> String {
        format!(
            "{}:{}->{}/{}",
            self.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED),
            self.host_port,
            self.container_port,
            self.proto.as_str()
        )
    }
}

/// A `-p` value husk cannot use.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PortError {
    /// Not docker's `[IP:][HOST:]CONTAINER[/PROTO]`.
    #[error("invalid port specification: {0:?}")]
    Invalid(String),
    /// A protocol other than tcp or udp.
    #[error("invalid proto: {0}")]
    Proto(String),
    /// Host and container ranges of different lengths.
    #[error("invalid ranges specified for container and host ports: {0:?}")]
    RangeMismatch(String),
}

/// Parses one `-p` value: `[IP:][HOSTPORT[-END]:]PORT[-END][/tcp|/udp]`.
pub fn parse(spec: &str) -> Result<Vec<PortBinding>, PortError> {
    let invalid = || PortError::Invalid(spec.to_string());
    let (rest, proto) = match spec.rsplit_once('/') {
        Some((r, "tcp")) => (r, Proto::Tcp),
        Some((r, "udp")) => (r, Proto::Udp),
        Some((_, p)) => return Err(PortError::Proto(p.to_string())),
        None => (spec, Proto::Tcp),
    };
    let parts: Vec<&str> = rest.split(':').collect();
    let (ip, host, container) = match parts[..] {
        [c] => (None, None, c),
        [h, c] => (None, Some(h), c),
        [ip, h, c] => (Some(ip), Some(h).filter(|h| !h.is_empty()), c),
        _ => return Err(invalid()),
    };
    let host_ip = match ip {
        None | Some("") => None,
        Some(ip) => Some(ip.parse::<Ipv4Addr>().map_err(|_| invalid())?),
    }
    .filter(|ip| !ip.is_unspecified());
    let container = range(container).ok_or_else(invalid)?;
    let host = match host {
        None => None,
        Some(h) => Some(range(h).ok_or_else(invalid)?),
    };
    let len = container.1 - container.0;
    match host {
        Some((start, end)) if end - start != len => Err(PortError::RangeMismatch(spec.to_string())),
        _ => Ok((0..=len)
            .map(|i| PortBinding {
                host_ip,
                host_port: host.map_or(0, |(start, _)| start + i),
                container_port: container.0 + i,
                proto,
            })
            .collect()),
    }
}

/// `PORT` or `START-END`, ports 1-65535.
fn range(s: &str) -> Option<(u16, u16)> {
    let port = |p: &str| p.parse::<u16>().ok().filter(|p| *p > 0);
    match s.split_once('-') {
        Some((a, b)) => Some((port(a)?, port(b)?)).filter(|(a, b)| a <= b),
        None => port(s).map(|p| (p, p)),
    }
}

/// The image's `ExposedPorts` keys (`80/tcp`, `53/udp`, `8080`) as `-P` publishes them:
/// every one to an ephemeral host port.
pub fn from_exposed<'a>(keys: impl Iterator<Item = &'a String>) -> Vec<PortBinding> {
    keys.filter_map(|k| parse(k).ok()).flatten().collect()
}

/// Host ports held for a container: one bound socket per published port.
#[derive(Debug, Default)]
pub struct Reservation {
    sockets: Vec<OwnedFd>,
}

/// Why a host port could not be held.
#[derive(Debug, thiserror::Error)]
#[error("Bind for {addr}:{port} failed: port is already allocated")]
pub struct PortTaken {
    /// The address.
    pub addr: Ipv4Addr,
    /// The port.
    pub port: u16,
    /// The kernel's reason.
    #[source]
    pub source: std::io::Error,
}

/// Binds every host port of `bindings` (ephemeral ones get theirs from the kernel) and
/// returns the bindings with their ports filled in; nothing is held if one fails.
pub fn reserve(bindings: &[PortBinding]) -> Result<(Vec<PortBinding>, Reservation), PortTaken> {
    let mut held = Reservation::default();
    let mut resolved = Vec::with_capacity(bindings.len());
    for b in bindings {
        let addr = b.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
        let taken = |source| PortTaken {
            addr,
            port: b.host_port,
            source,
        };
        let (fd, port) = bind(addr, b.host_port, b.proto).map_err(taken)?;
        held.sockets.push(fd);
        resolved.push(PortBinding {
            host_port: port,
            ..*b
        });
    }
    Ok((resolved, held))
}

/// A socket bound to `addr:port` (not listening); returns it and the port it got.
fn bind(addr: Ipv4Addr, port: u16, proto: Proto) -> std::io::Result<(OwnedFd, u16)> {
    let kind = match proto {
        Proto::Tcp => libc::SOCK_STREAM,
        Proto::Udp => libc::SOCK_DGRAM,
    };
    // SAFETY: socket takes no pointers; the descriptor is owned right away.
    let raw = unsafe { libc::socket(libc::AF_INET, kind | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut sa = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(addr).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: `sa` is a valid sockaddr_in of `len` bytes for the call.
    if unsafe { libc::bind(fd.as_raw_fd(), (&raw const sa).cast(), len) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut got = len;
    // SAFETY: getsockname writes at most `got` bytes into `sa`, which is that large.
    if unsafe { libc::getsockname(fd.as_raw_fd(), (&raw mut sa).cast(), &mut got) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((fd, u16::from_be(sa.sin_port)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(ip: Option<[u8; 4]>, host: u16, container: u16, proto: Proto) -> PortBinding {
        PortBinding {
            host_ip: ip.map(Ipv4Addr::from),
            host_port: host,
            container_port: container,
            proto,
        }
    }

    #[test]
    fn docker_port_forms_parse() {
        use Proto::*;
        assert_eq!(parse("8080:80").unwrap(), vec![b(None, 8080, 80, Tcp)]);
        assert_eq!(parse("80").unwrap(), vec![b(None, 0, 80, Tcp)]);
        assert_eq!(parse("53/udp").unwrap(), vec![b(None, 0, 53, Udp)]);
        assert_eq!(
            parse("127.0.0.1:8080:80/tcp").unwrap(),
            vec![b(Some([127, 0, 0, 1]), 8080, 80, Tcp)]
        );
        assert_eq!(
            parse("127.0.0.1::80").unwrap(),
            vec![b(Some([127, 0, 0, 1]), 0, 80, Tcp)]
        );
        assert_eq!(
            parse("0.0.0.0:9000:90").unwrap(),
            vec![b(None, 9000, 90, Tcp)]
        );
        assert_eq!(
            parse("8000-8001:80-81/udp").unwrap(),
            vec![b(None, 8000, 80, Udp), b(None, 8001, 81, Udp)]
        );
        assert_eq!(parse("7000-7001").unwrap().len(), 2);
        assert_eq!(b(None, 8080, 80, Tcp).short(), "0.0.0.0:8080->80/tcp");
        assert_eq!(b(None, 8080, 80, Tcp).describe(), "80/tcp -> 0.0.0.0:8080");
    }

    #[test]
    fn bad_port_forms_are_refused() {
        for bad in [
            "", "abc", "0", "70000", "1:2:3:4", "x.y:1:2", "8080:", "90-80", ":80",
        ] {
            assert_eq!(parse(bad), Err(PortError::Invalid(bad.into())), "{bad}");
        }
        assert_eq!(parse("80/sctp"), Err(PortError::Proto("sctp".into())));
        assert_eq!(
            parse("8000-8002:80-81"),
            Err(PortError::RangeMismatch("8000-8002:80-81".into()))
        );
    }

    #[test]
    fn exposed_ports_become_ephemeral_bindings() {
        let keys = [
            "80/tcp".to_string(),
            "53/udp".to_string(),
            "junk/x".to_string(),
        ];
        let got = from_exposed(keys.iter());
        assert_eq!(
            got,
            vec![b(None, 0, 80, Proto::Tcp), b(None, 0, 53, Proto::Udp)]
        );
    }

    #[test]
    fn a_held_port_cannot_be_held_twice_and_ephemeral_ports_are_filled_in() {
        let lo = Some(Ipv4Addr::LOCALHOST);
        let ask = PortBinding {
            host_ip: lo,
            host_port: 0,
            container_port: 80,
            proto: Proto::Tcp,
        };
        let (got, held) = reserve(&[ask]).unwrap();
        assert_ne!(got[0].host_port, 0);
        let again = PortBinding {
            host_port: got[0].host_port,
            ..ask
        };
        let e = reserve(&[again]).unwrap_err();
        let p = got[0].host_port;
        assert_eq!(
            e.to_string(),
            format!("Bind for 127.0.0.1:{p} failed: port is already allocated")
        );
        drop(held);
        assert!(reserve(&[again]).is_ok());
    }
}
