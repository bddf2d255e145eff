//! husk's rtnetlink calls, shared by the host side (runtime: bridges, veths, TAPs on
//! bridges) and the guest side (agent: the container's interface, addresses, routes).
//! Messages are built and parsed by the rust-netlink crates; this crate owns the socket,
//! the request/acknowledge exchange and one error type with the kernel's errno.
//!
//! Every call acts in the network namespace of the calling thread.

pub mod tap;

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::RawFd;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

/// Errors talking to the kernel.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The netlink socket could not be opened.
    #[error("cannot open a netlink socket")]
    Open(#[source] std::io::Error),
    /// A request could not be sent or its answer read.
    #[error("netlink I/O failed while trying to {0}")]
    Io(&'static str, #[source] std::io::Error),
    /// The kernel refused a request.
    #[error("cannot {op}")]
    Kernel {
        /// What was asked.
        op: &'static str,
        /// The kernel's reason.
        #[source]
        source: std::io::Error,
    },
    /// The kernel's answer could not be parsed.
    #[error("unreadable netlink answer while trying to {0}")]
    Decode(&'static str),
    /// No interface has this name.
    #[error("no network interface named {0:?}")]
    NoSuchLink(String),
}

impl Error {
    /// The kernel's errno, if the kernel refused.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Kernel { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// `result`, with the kernel's refusal `errno` counting as success: what was asked for is
/// already so (`EEXIST`) or already gone (`EADDRNOTAVAIL`).
pub fn except(result: Result<(), Error>, errno: i32) -> Result<(), Error> {
    match result {
        Err(e) if e.errno() == Some(errno) => Ok(()),
        other => other,
    }
}

/// What to change on a link (`ip link set`); `None` leaves a field alone.
#[derive(Debug, Clone, Default)]
pub struct LinkChange {
    /// Bring it up (`Some(true)`) or down.
    pub up: Option<bool>,
    /// MTU.
    pub mtu: Option<u32>,
    /// MAC address.
    pub mac: Option<[u8; 6]>,
    /// New name.
    pub name: Option<String>,
    /// Enslave to the bridge with this index.
    pub controller: Option<u32>,
    /// Move into the network namespace of this fd.
    pub netns_fd: Option<RawFd>,
}

/// A netlink route socket.
#[derive(Debug)]
pub struct Netlink {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl Netlink {
    /// Opens a socket in the calling thread's network namespace.
    pub fn open() -> Result<Netlink, Error> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(Error::Open)?;
        socket.bind_auto().map_err(Error::Open)?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(Error::Open)?;
        Ok(Netlink {
            socket,
            seq: 0,
            buf: vec![0; 16 * 1024],
        })
    }

    /// The index of the interface `name`.
    pub fn index(&self, name: &str) -> Result<u32, Error> {
        link_index(name).ok_or_else(|| Error::NoSuchLink(name.to_string()))
    }

    /// Changes the link with index `index`.
    pub fn set_link(&mut self, index: u32, change: &LinkChange) -> Result<(), Error> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        if let Some(up) = change.up {
            msg.header.change_mask = LinkFlags::Up;
            if up {
                msg.header.flags = LinkFlags::Up;
            }
        }
        let attrs = &mut msg.attributes;
        if let Some(mtu) = change.mtu {
            attrs.push(LinkAttribute::Mtu(mtu));
        }
        if let Some(mac) = change.mac {
            attrs.push(LinkAttribute::Address(mac.to_vec()));
        }
        if let Some(name) = &change.name {
            attrs.push(LinkAttribute::IfName(name.clone()));
        }
        if let Some(c) = change.controller {
            attrs.push(LinkAttribute::Controller(c));
        }
        if let Some(fd) = change.netns_fd {
            attrs.push(LinkAttribute::NetNsFd(fd));
        }
        self.request(
            "change a network interface",
            RouteNetlinkMessage::SetLink(msg),
            0,
        )
    }

    /// Creates a bridge `name` (down).
    pub fn add_bridge(&mut self, name: &str) -> Result<(), Error> {
        let mut msg = LinkMessage::default();
        msg.attributes = vec![
            LinkAttribute::IfName(name.to_string()),
            LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Bridge)]),
        ];
        let flags = NLM_F_CREATE | NLM_F_EXCL;
        self.request("create a bridge", RouteNetlinkMessage::NewLink(msg), flags)
    }

    /// Creates a veth pair `name` / `peer` (both down).
    pub fn add_veth(&mut self, name: &str, peer: &str) -> Result<(), Error> {
        let mut other = LinkMessage::default();
        other.attributes = vec![LinkAttribute::IfName(peer.to_string())];
        let mut msg = LinkMessage::default();
        msg.attributes = vec![
            LinkAttribute::IfName(name.to_string()),
            LinkAttribute::LinkInfo(vec![
                LinkInfo::Kind(InfoKind::Veth),
                LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(other))),
            ]),
        ];
        let flags = NLM_F_CREATE | NLM_F_EXCL;
        self.request(
            "create a veth pair",
            RouteNetlinkMessage::NewLink(msg),
            flags,
        )
    }

    /// Deletes the link with index `index` (a veth takes its peer with it).
    pub fn delete_link(&mut self, index: u32) -> Result<(), Error> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        self.request(
            "delete a network interface",
            RouteNetlinkMessage::DelLink(msg),
            0,
        )
    }

    /// Adds `addr/prefix` to the link with index `index`.
    pub fn add_address(&mut self, index: u32, addr: IpAddr, prefix: u8) -> Result<(), Error> {
        let mut msg = AddressMessage::default();
        msg.header.index = index;
        msg.header.prefix_len = prefix;
        msg.header.family = family(addr);
        msg.attributes = vec![
            AddressAttribute::Local(addr),
            AddressAttribute::Address(addr),
        ];
        if let IpAddr::V4(v4) = addr {
            msg.attributes
                .push(AddressAttribute::Broadcast(broadcast(v4, prefix)));
        }
        let flags = NLM_F_CREATE | NLM_F_EXCL;
        self.request(
            "add an address",
            RouteNetlinkMessage::NewAddress(msg),
            flags,
        )
    }

    /// Removes `addr/prefix` from the link with index `index`.
    pub fn delete_address(&mut self, index: u32, addr: IpAddr, prefix: u8) -> Result<(), Error> {
        let mut msg = AddressMessage::default();
        msg.header.index = index;
        msg.header.prefix_len = prefix;
        msg.header.family = family(addr);
        msg.attributes = vec![AddressAttribute::Local(addr)];
        self.request("remove an address", RouteNetlinkMessage::DelAddress(msg), 0)
    }

    /// Adds the default IPv4 route through `gateway`.
    pub fn add_default_route(&mut self, gateway: Ipv4Addr) -> Result<(), Error> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = AddressFamily::Inet;
        msg.header.table = RouteHeader::RT_TABLE_MAIN;
        msg.header.protocol = RouteProtocol::Boot;
        msg.header.scope = RouteScope::Universe;
        msg.header.kind = RouteType::Unicast;
        msg.attributes = vec![RouteAttribute::Gateway(RouteAddress::Inet(gateway))];
        let flags = NLM_F_CREATE | NLM_F_EXCL;
        self.request(
            "add the default route",
            RouteNetlinkMessage::NewRoute(msg),
            flags,
        )
    }

    /// Sends one request and waits for its acknowledgement.
    fn request(
        &mut self,
        op: &'static str,
        message: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<(), Error> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        header.sequence_number = self.seq;
        let mut msg = NetlinkMessage::new(header, NetlinkPayload::from(message));
        msg.finalize();
        let len = msg.buffer_len();
        if self.buf.len() < len {
            self.buf.resize(len, 0);
        }
        msg.serialize(&mut self.buf[..len]);
        self.socket
            .send(&self.buf[..len], 0)
            .map_err(|e| Error::Io(op, e))?;
        loop {
            let n = self
                .socket
                .recv(&mut &mut self.buf[..], 0)
                .map_err(|e| Error::Io(op, e))?;
            let mut at = 0;
            while at < n {
                let answer = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&self.buf[at..n])
                    .map_err(|_| Error::Decode(op))?;
                let size = answer.header.length as usize;
                if answer.header.sequence_number == self.seq
                    && let NetlinkPayload::Error(e) = answer.payload
                {
                    return match e.code {
                        None => Ok(()),
                        Some(code) => Err(Error::Kernel {
                            op,
                            source: std::io::Error::from_raw_os_error(-code.get()),
                        }),
                    };
                }
                if size == 0 {
                    break;
                }
                at += size;
            }
        }
    }
}

/// The index of interface `name` in the calling thread's namespace, if it exists.
pub fn link_index(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: if_nametoindex reads the NUL-terminated name, valid for the call.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (index != 0).then_some(index)
}

fn family(addr: IpAddr) -> AddressFamily {
    match addr {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

/// The broadcast address of `addr/prefix`.
pub fn broadcast(addr: Ipv4Addr, prefix: u8) -> Ipv4Addr {
    let mask = u32::MAX.checked_shr(u32::from(prefix)).unwrap_or(0);
    Ipv4Addr::from(u32::from(addr) | mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_addresses() {
        let a = Ipv4Addr::new(10, 88, 3, 4);
        assert_eq!(broadcast(a, 16), Ipv4Addr::new(10, 88, 255, 255));
        assert_eq!(broadcast(a, 24), Ipv4Addr::new(10, 88, 3, 255));
        assert_eq!(broadcast(a, 32), a);
        assert_eq!(broadcast(a, 0), Ipv4Addr::BROADCAST);
    }
}
