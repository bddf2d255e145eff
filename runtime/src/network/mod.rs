//! Container networks, the same for both isolations: the default `bridge` network and
//! user networks (`defs`), each a Linux bridge with its gateway address in the network
//! namespace husk runs in, one address per container from the network's pool (`ipam`),
//! and the container's end of the wire: a TAP on the bridge that the VMM opens (vm) or a
//! veth pair whose other end becomes `eth0` in the sandbox's namespace (process). The
//! agent then gives the interface its MAC, address and default route
//! (`agent_proto::InterfaceSpec`). `--network none` leaves only loopback (a vm guest's NIC
//! stays unplugged). On user networks containers find each other by name (`dns`).
//!
//! Published ports (`ports.rs`) are kernel DNAT in husk's own nftables table
//! (`nat.rs`), which also masquerades outbound traffic and keeps networks apart.
//!
//! Everything is made in the calling process's network namespace when a network's first
//! container joins it and removed with the last one; a link, address or table left by a
//! killed husk is replaced or reused.

pub mod defs;
pub mod dns;
mod ipam;
pub mod nat;
pub mod ports;
mod settings;
pub mod subnet;
pub mod view;
mod wire;

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use defs::Net;
use ports::{PortBinding, Reservation};

use agent_proto::InterfaceSpec;
use netconf::{LinkChange, Netlink};

pub use defs::BRIDGE;
pub use settings::{Settings, record, remove_leftovers, settings};
pub use wire::{plug_tap, plug_veth};

/// MTU of every interface husk makes.
pub const MTU: u32 = 1500;
/// Most networks a process container can be on at once (its interfaces `eth0` to
/// `eth9`); a vm container is on at most as many as its VM has NICs.
pub const MAX_NETWORKS: usize = 10;

/// The container's interface name for its endpoint in slot `slot` (`eth0`, `eth1`, ...).
pub fn container_iface(slot: usize) -> String {
    format!("eth{slot}")
}

/// A `--network` husk cannot honour.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ModeError {
    /// `--network host` under vm isolation.
    #[error("--network host is not possible with vm isolation: a microVM has its own kernel")]
    HostWithVm,
    /// `--network ""`.
    #[error("invalid network name \"\"")]
    Empty,
}

/// Errors wiring a container to a network.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// The kernel refused a step.
    #[error("cannot {0}")]
    Netlink(&'static str, #[source] netconf::Error),
    /// The address pool's state could not be read or written.
    #[error("cannot use the address pool in {0}")]
    Pool(PathBuf, #[source] std::io::Error),
    /// The sandbox's network namespace could not be opened.
    #[error("cannot open the sandbox's network namespace {0}")]
    Sandbox(PathBuf, #[source] std::io::Error),
    /// Every address of the subnet is taken.
    #[error("no free address left in network {0} ({1})")]
    Exhausted(String, subnet::Subnet),
    /// `--ip` names a taken address (docker's words).
    #[error("Address already in use: {0}")]
    AddressTaken(Ipv4Addr),
    /// `--ip` outside the network's subnet (docker's words).
    #[error("no configured subnet or ip-range contain the IP address {0} (network {1})")]
    AddressOutside(Ipv4Addr, String),
    /// The network is not defined, or its definitions cannot be read.
    #[error(transparent)]
    Def(#[from] defs::DefError),
    /// A host port is taken.
    #[error(transparent)]
    PortTaken(#[from] ports::PortTaken),
    /// husk's nftables table could not be made or changed.
    #[error(transparent)]
    Nat(#[from] nat::NatError),
    /// A kernel setting of the namespace could not be written.
    #[error("cannot set {0}")]
    Sysctl(String, #[source] std::io::Error),
    /// The network's DNS server could not start.
    #[error(transparent)]
    Dns(#[from] dns::DnsError),
}

/// What `--network` asks for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Mode {
    /// Loopback only.
    #[default]
    None,
    /// The default bridge network.
    Bridge,
    /// The network namespace husk runs in (process isolation only).
    Host,
    /// A user network, by name or ID (looked up when the container starts).
    User(String),
}

impl Mode {
    /// Parses `--network` (docker's `NetworkMode`: `none`, `bridge`, `default`, `host`,
    /// or a network's name or ID).
    pub fn parse(s: &str, vm: bool) -> Result<Mode, ModeError> {
        match s {
            "none" => Ok(Mode::None),
            "bridge" | "default" => Ok(Mode::Bridge),
            "host" if vm => Err(ModeError::HostWithVm),
            "host" => Ok(Mode::Host),
            "" => Err(ModeError::Empty),
            other => Ok(Mode::User(other.to_string())),
        }
    }

    /// The mode that puts a container on `net` (kept by name, as docker does).
    pub fn of(net: &Net) -> Mode {
        match net.is_default() {
            true => Mode::Bridge,
            false => Mode::User(net.name.clone()),
        }
    }

    /// docker's `HostConfig.NetworkMode` for it.
    pub fn as_str(&self) -> &str {
        match self {
            Mode::None => "none",
            Mode::Bridge => BRIDGE,
            Mode::Host => "host",
            Mode::User(name) => name,
        }
    }

    /// Whether the container joins a bridge (default or user network).
    pub fn is_bridged(&self) -> bool {
        matches!(self, Mode::Bridge | Mode::User(_))
    }
}

/// One network a container is on, as its configuration keeps it: `NetworkMode` with
/// `--network-alias` and `--ip`, or one joined with `network connect` (docker's
/// `EndpointsConfig` entries).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Attachment {
    /// The network's name (or ID).
    pub network: String,
    /// Its DNS aliases for the container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// The address asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4_address: Option<Ipv4Addr>,
}

/// Whether `alias` can be a DNS name on a network (`--network-alias`, `connect --alias`).
pub fn valid_alias(alias: &str) -> bool {
    !alias.is_empty()
        && alias.len() <= 253
        && alias.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// What a container asks of its network besides an address.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// Ports to publish.
    pub ports: Vec<PortBinding>,
    /// `--ip`.
    pub ip: Option<Ipv4Addr>,
    /// The names its network's DNS answers for it (user networks only).
    pub names: Vec<String>,
    /// Its `--dns` servers (where its other DNS questions go).
    pub upstreams: Vec<Ipv4Addr>,
}

/// A container's place on a network: its address and the host end of its wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The host-side interface: the TAP (vm) or the host end of the veth (process).
    pub link: String,
    /// The container's address.
    pub ip: Ipv4Addr,
    /// The container's MAC (docker's shape: 02:42 and the address).
    pub mac: [u8; 6],
    /// The published ports, host ports resolved.
    pub ports: Vec<PortBinding>,
    /// The network.
    pub net: Net,
    /// Which of the container's interfaces it is (`eth<slot>`; a vm's NIC index).
    pub slot: usize,
    /// The container's ID (the address's holder).
    id: String,
}

impl Endpoint {
    /// What the agent configures for it (an internal network has no default route).
    pub fn interface(&self) -> InterfaceSpec {
        InterfaceSpec {
            name: container_iface(self.slot),
            mac: self.mac,
            mtu: MTU,
            addresses: vec![(IpAddr::V4(self.ip), self.net.subnet.prefix)],
            gateway: (!self.net.internal).then_some(self.net.gateway),
        }
    }
}

/// The host-side name of container `id`'s link in slot `slot` (`hk` or `h<slot>`, then
/// 11 hex digits of the ID: 13 bytes, within the 15 an interface name may have).
fn link_name(id: &str, slot: usize) -> String {
    let short = &id[..id.len().min(11)];
    match slot {
        0 => format!("hk{short}"),
        n => format!("h{n}{short}"),
    }
}

/// Joins container `id` to network `network` (a name or ID; its bridge and husk's
/// nftables rules made if missing) as its interface `slot`: an address from the network's
/// pool under `root`, and `req.ports` held on the host and published to it. The wire is plugged by [`plug_tap`]
/// or [`plug_veth`]. On failure nothing is left (the bridge and rules go again if no one
/// else uses them).
pub fn attach(
    root: &Path,
    network: &str,
    id: &str,
    slot: usize,
    req: &Request,
) -> Result<(Endpoint, Reservation), NetworkError> {
    let _lock = defs::lock(root)?;
    let net = defs::find(root, network)?;
    let (names, upstreams): (&[String], &[Ipv4Addr]) = match net.is_default() {
        true => (&[], &[]),
        false => (&req.names, &req.upstreams),
    };
    let holder = ipam::Holder {
        id,
        names,
        upstreams,
        want: req.ip,
    };
    let ip = ensure_bridge(&net)
        .and_then(|()| sync_rules(root))
        .and_then(|()| ipam::allocate(&net, root, &holder));
    let ip = match ip {
        Ok(ip) => ip,
        Err(e) => {
            remove_if_unused(root, &net);
            return Err(e);
        }
    };
    let published = ports::reserve(&req.ports)
        .map_err(NetworkError::from)
        .and_then(|(resolved, held)| {
            nat::publish(&resolved, ip)?;
            Ok((resolved, held))
        });
    let (resolved, held) = match published {
        Ok(p) => p,
        Err(e) => {
            ipam::release(&net.pool(root), ip, id);
            remove_if_unused(root, &net);
            return Err(e);
        }
    };
    let o = ip.octets();
    let ep = Endpoint {
        link: link_name(id, slot),
        ip,
        mac: [0x02, 0x42, o[0], o[1], o[2], o[3]],
        ports: resolved,
        net,
        slot,
        id: id.to_string(),
    };
    Ok((ep, held))
}

/// Rewrites husk's per-network rules for the networks whose bridges exist (the table is
/// made first, and deleted when no bridge is left).
fn sync_rules(root: &Path) -> Result<(), NetworkError> {
    let live: Vec<Net> = defs::list(root)?
        .into_iter()
        .filter(|n| netconf::link_index(&n.iface()).is_some())
        .collect();
    if live.is_empty() {
        nat::remove();
        return Ok(());
    }
    nat::ensure()?;
    Ok(nat::sync(&live)?)
}

/// Deletes the network's bridge when no container holds an address on it, and its rules
/// with it (the table with the last bridge).
fn remove_if_unused(root: &Path, net: &Net) {
    if ipam::holders(&net.pool(root), root).is_empty() {
        remove_bridge(root, net);
    }
}

/// Deletes the network's bridge (if there is one) and rewrites the rules for the bridges
/// left (best effort).
fn remove_bridge(root: &Path, net: &Net) {
    if let Ok(mut nl) = Netlink::open() {
        remove_stale(&mut nl, &net.iface());
    }
    if let Err(e) = sync_rules(root) {
        log::warn!("{e}");
    }
}

/// The network's bridge with its address, up, forwarding on, and (for ports published on
/// 127.0.0.1) routing of loopback-sourced packets allowed on it; made if missing.
fn ensure_bridge(net: &Net) -> Result<(), NetworkError> {
    let fail = |op| move |e| NetworkError::Netlink(op, e);
    let iface = net.iface();
    let nl = &mut Netlink::open().map_err(fail("open netlink"))?;
    if netconf::link_index(&iface).is_none() {
        netconf::except(nl.add_bridge(&iface), libc::EEXIST)
            .map_err(fail("create the network's bridge"))?;
    }
    let br = nl
        .index(&iface)
        .map_err(fail("find the network's bridge"))?;
    let addressed = nl.add_address(br, IpAddr::V4(net.gateway), net.subnet.prefix);
    netconf::except(addressed, libc::EEXIST).map_err(fail("address the network's bridge"))?;
    let up = LinkChange {
        up: Some(true),
        ..LinkChange::default()
    };
    nl.set_link(br, &up)
        .map_err(fail("bring the network's bridge up"))?;
    // Like docker: containers reach beyond the host only if it forwards. Both settings
    // belong to the network namespace husk runs in.
    let sysctl = |what: String, path: String| {
        std::fs::write(path, "1").map_err(|e| NetworkError::Sysctl(what, e))
    };
    sysctl(
        "net.ipv4.ip_forward".into(),
        "/proc/sys/net/ipv4/ip_forward".into(),
    )?;
    sysctl(
        format!("route_localnet on {iface}"),
        format!("/proc/sys/net/ipv4/conf/{iface}/route_localnet"),
    )
}

/// Removes a link of that name left by a killed husk.
pub(crate) fn remove_stale(nl: &mut Netlink, name: &str) {
    if let Some(index) = netconf::link_index(name) {
        let _ = nl.delete_link(index);
    }
}

/// Unpublishes `ep`'s ports, removes its host link (a veth takes its sandbox end along)
/// and frees its address; the network's last container takes the bridge and its rules
/// along. Best effort: what is already gone is fine.
pub fn detach(root: &Path, ep: &Endpoint) {
    let lock = defs::lock(root);
    nat::unpublish(&ep.ports);
    if let Ok(mut nl) = Netlink::open() {
        remove_stale(&mut nl, &ep.link);
    }
    ipam::release(&ep.net.pool(root), ep.ip, &ep.id);
    if lock.is_ok() {
        remove_if_unused(root, &ep.net);
    }
}

/// The running containers on `net`: (container ID, address).
pub fn members(root: &Path, net: &Net) -> Vec<(String, Ipv4Addr)> {
    ipam::holders(&net.pool(root), root)
        .into_iter()
        .map(|h| (h.id, h.ip))
        .collect()
}

/// Removes user network `query` if no container runs on it (under the networks' lock, so
/// no container joins it meanwhile).
pub fn remove_network(root: &Path, query: &str) -> Result<Net, defs::DefError> {
    let _lock = defs::lock(root)?;
    let net = defs::find(root, query)?;
    if net.is_default() {
        return Err(defs::DefError::Predefined(net.name));
    }
    if let Some(h) = ipam::holders(&net.pool(root), root).first() {
        return Err(defs::DefError::InUse {
            name: net.name.clone(),
            container: h.names.first().cloned().unwrap_or_else(|| h.id.clone()),
        });
    }
    defs::remove(root, &net)?;
    // A bridge its killed containers left goes with it (its subnet may be handed out
    // again).
    remove_bridge(root, &net);
    Ok(net)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_modes_parse_like_docker() {
        assert_eq!(Mode::parse("none", true).unwrap(), Mode::None);
        assert_eq!(Mode::parse("bridge", false).unwrap(), Mode::Bridge);
        assert_eq!(Mode::parse("default", true).unwrap(), Mode::Bridge);
        assert_eq!(
            Mode::parse("host", true).unwrap_err().to_string(),
            "--network host is not possible with vm isolation: a microVM has its own kernel"
        );
        assert_eq!(
            Mode::parse("mynet", false).unwrap(),
            Mode::User("mynet".into())
        );
        assert!(Mode::parse("", false).is_err());
    }

    #[test]
    fn link_names_fit_an_interface_name() {
        let id = "0123456789abcdef0123456789abcdef";
        assert_eq!(link_name(id, 0), "hk0123456789a");
        assert_eq!(link_name(id, 2), "h20123456789a");
        for slot in 0..MAX_NETWORKS {
            assert!(link_name(id, slot).len() <= 15);
            assert_ne!(link_name(id, slot), wire::peer_name(&link_name(id, slot)));
        }
    }
}
