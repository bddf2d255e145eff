//! Container networks. For now the default `bridge` network, the same for both
//! isolations: a Linux bridge `husk0` with 10.88.0.1/16 in the network namespace husk
//! runs in, one address per container from `ipam`, and the container's end of the wire:
//! a TAP on the bridge that the VMM opens (vm) or a veth pair whose other end becomes
//! `eth0` in the sandbox's namespace (process). The agent then gives the interface its
//! MAC, address and default route (`agent_proto::InterfaceSpec`). `--network none`
//! leaves only loopback (a vm guest's NIC stays unplugged).
//!
//! Published ports (`ports.rs`) are kernel DNAT in husk's own nftables table
//! (`nat.rs`), which also masquerades the subnet's outbound traffic.
//!
//! Everything is made in the calling process's network namespace and removed with the
//! container's sandbox (the bridge and the table with the last container on it); a link,
//! address or table left by a killed husk is replaced or reused.

mod ipam;
pub mod nat;
pub mod ports;

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use ports::{PortBinding, Reservation};

use agent_proto::InterfaceSpec;
use netconf::{LinkChange, Netlink};

/// The default network's name, as `--network` and `inspect` spell it.
pub const BRIDGE: &str = "bridge";
/// The default network's bridge interface.
pub const BRIDGE_IFACE: &str = "husk0";
/// The default network's subnet and gateway (the bridge's own address).
pub const SUBNET: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 88, 0, 0), 16);
/// The gateway: the bridge's address.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 1);
/// MTU of every interface husk makes.
pub const MTU: u32 = 1500;
/// A container's interface name inside its sandbox.
pub const CONTAINER_IFACE: &str = "eth0";

/// A `--network` husk cannot honour.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ModeError {
    /// `--network` names a network that does not exist.
    #[error("network {0} not found")]
    NotFound(String),
    /// `--network host` under vm isolation.
    #[error("--network host is not possible with vm isolation: a microVM has its own kernel")]
    HostWithVm,
    /// `--network host` is not built yet.
    #[error("--network host is not supported yet")]
    HostUnsupported,
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
    /// Every address of the subnet is taken.
    #[error("no free address left in network {BRIDGE} (10.88.0.0/16)")]
    Exhausted,
    /// A host port is taken.
    #[error(transparent)]
    PortTaken(#[from] ports::PortTaken),
    /// husk's nftables table could not be made or changed.
    #[error(transparent)]
    Nat(#[from] nat::NatError),
    /// A kernel setting of the namespace could not be written.
    #[error("cannot set {0}")]
    Sysctl(&'static str, #[source] std::io::Error),
}

/// What `--network` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Loopback only.
    #[default]
    None,
    /// The default bridge network.
    Bridge,
}

impl Mode {
    /// Parses `--network` (docker's `NetworkMode`: `none`, `bridge`, `default`, `host`,
    /// or a network's name).
    pub fn parse(s: &str, vm: bool) -> Result<Mode, ModeError> {
        match s {
            "none" => Ok(Mode::None),
            "bridge" | "default" => Ok(Mode::Bridge),
            "host" if vm => Err(ModeError::HostWithVm),
            "host" => Err(ModeError::HostUnsupported),
            other => Err(ModeError::NotFound(other.to_string())),
        }
    }

    /// docker's `HostConfig.NetworkMode` for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::None => "none",
            Mode::Bridge => BRIDGE,
        }
    }
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
    /// Where the address is recorded (released at detach).
    pool: PathBuf,
    /// The container's ID (the address's holder).
    id: String,
}

impl Endpoint {
    /// What the agent configures for it.
    pub fn interface(&self) -> InterfaceSpec {
        InterfaceSpec {
            name: CONTAINER_IFACE.into(),
            mac: self.mac,
            mtu: MTU,
            addresses: vec![(IpAddr::V4(self.ip), SUBNET.1)],
            gateway: Some(GATEWAY),
        }
    }
}

/// The host-side name of container `id`'s link (`hk` + 11 hex digits: 13 bytes, within
/// the 15 an interface name may have).
fn link_name(id: &str) -> String {
    format!("hk{}", &id[..id.len().min(11)])
}

/// The default network's pool directory and the lock every change to the network
/// (bridge, table, pool) is made under.
fn pool_locked(root: &Path) -> Result<(PathBuf, File), NetworkError> {
    let dir = root.join("networks");
    let fail = |e| NetworkError::Pool(dir.clone(), e);
    std::fs::create_dir_all(&dir).map_err(fail)?;
    let lock = File::create(dir.join(format!("{BRIDGE}.lock"))).map_err(fail)?;
    lock.lock().map_err(fail)?;
    Ok((dir.join(BRIDGE), lock))
}

/// Joins container `id` to the default bridge (bridge and nftables table made if
/// missing): an address from the pool under `root`, and `ports` held on the host and
/// published to it. The wire is plugged by [`plug_tap`] or [`plug_veth`]. On failure
/// nothing is left (the bridge and table go again if no one else uses them).
pub fn attach(
    root: &Path,
    id: &str,
    ports: &[PortBinding],
) -> Result<(Endpoint, Reservation), NetworkError> {
    let (pool, _lock) = pool_locked(root)?;
    let made = ensure_bridge().and_then(|()| Ok(nat::ensure()?));
    let ip = made.and_then(|()| ipam::allocate(&pool, root, id));
    let ip = match ip {
        Ok(ip) => ip,
        Err(e) => {
            remove_if_unused(&pool);
            return Err(e);
        }
    };
    let published =
        ports::reserve(ports)
            .map_err(NetworkError::from)
            .and_then(|(resolved, held)| {
                nat::publish(&resolved, ip)?;
                Ok((resolved, held))
            });
    let (resolved, held) = match published {
        Ok(p) => p,
        Err(e) => {
            ipam::release(&pool, ip, id);
            remove_if_unused(&pool);
            return Err(e);
        }
    };
    let o = ip.octets();
    let ep = Endpoint {
        link: link_name(id),
        ip,
        mac: [0x02, 0x42, o[0], o[1], o[2], o[3]],
        ports: resolved,
        pool,
        id: id.to_string(),
    };
    Ok((ep, held))
}

/// Deletes the bridge and the nftables table when no container holds an address.
fn remove_if_unused(pool: &Path) {
    let in_use = std::fs::read_dir(pool).map_or(0, |d| d.count());
    if in_use > 0 {
        return;
    }
    nat::remove();
    if let Ok(mut nl) = Netlink::open() {
        remove_stale(&mut nl, BRIDGE_IFACE);
    }
}

/// The bridge with its address, up, forwarding on, and (for ports published on
/// 127.0.0.1) routing of loopback-sourced packets allowed on it; made if missing.
fn ensure_bridge() -> Result<(), NetworkError> {
    let fail = |op| move |e| NetworkError::Netlink(op, e);
    let nl = &mut Netlink::open().map_err(fail("open netlink"))?;
    if netconf::link_index(BRIDGE_IFACE).is_none() {
        match nl.add_bridge(BRIDGE_IFACE) {
            Err(e) if e.errno() != Some(libc::EEXIST) => {
                return Err(NetworkError::Netlink("create bridge husk0", e));
            }
            _ => {}
        }
    }
    let br = nl.index(BRIDGE_IFACE).map_err(fail("find bridge husk0"))?;
    match nl.add_address(br, IpAddr::V4(GATEWAY), SUBNET.1) {
        Err(e) if e.errno() != Some(libc::EEXIST) => {
            return Err(NetworkError::Netlink("address bridge husk0", e));
        }
        _ => {}
    }
    let up = LinkChange {
        up: Some(true),
        ..LinkChange::default()
    };
    nl.set_link(br, &up)
        .map_err(fail("bring bridge husk0 up"))?;
    // Like docker: containers reach beyond the host only if it forwards. Both settings
    // belong to the network namespace husk runs in.
    let sysctl = |what: &'static str, path: &str| {
        std::fs::write(path, "1").map_err(|e| NetworkError::Sysctl(what, e))
    };
    sysctl("net.ipv4.ip_forward", "/proc/sys/net/ipv4/ip_forward")?;
    sysctl(
        "route_localnet on husk0",
        "/proc/sys/net/ipv4/conf/husk0/route_localnet",
    )
}

/// Removes a link of that name left by a killed husk.
fn remove_stale(nl: &mut Netlink, name: &str) {
    if let Some(index) = netconf::link_index(name) {
        let _ = nl.delete_link(index);
    }
}

/// Puts `ep`'s host link on the bridge and brings it up.
fn enslave(nl: &mut Netlink, ep: &Endpoint) -> Result<(), NetworkError> {
    let fail = |op| move |e| NetworkError::Netlink(op, e);
    let br = nl.index(BRIDGE_IFACE).map_err(fail("find bridge husk0"))?;
    let link = nl
        .index(&ep.link)
        .map_err(fail("find the container's link"))?;
    let change = LinkChange {
        up: Some(true),
        mtu: Some(MTU),
        controller: Some(br),
        ..LinkChange::default()
    };
    nl.set_link(link, &change)
        .map_err(fail("put the container's link on bridge husk0"))
}

/// vm: makes `ep`'s persistent TAP on the bridge, for the VMM to open by name.
pub fn plug_tap(ep: &Endpoint) -> Result<(), NetworkError> {
    let mut nl = Netlink::open().map_err(|e| NetworkError::Netlink("open netlink", e))?;
    remove_stale(&mut nl, &ep.link);
    netconf::tap::create_persistent(&ep.link)
        .map_err(|e| NetworkError::Netlink("create the container's TAP", e))?;
    enslave(&mut nl, ep)
}

/// process: a veth pair whose host end goes on the bridge and whose other end becomes
/// `eth0` in the network namespace of process `pid` (the sandbox's agent).
pub fn plug_veth(ep: &Endpoint, pid: i32) -> Result<(), NetworkError> {
    let fail = |op| move |e| NetworkError::Netlink(op, e);
    let mut nl = Netlink::open().map_err(fail("open netlink"))?;
    let peer = format!("hp{}", &ep.link[2..]);
    remove_stale(&mut nl, &ep.link);
    remove_stale(&mut nl, &peer);
    nl.add_veth(&ep.link, &peer)
        .map_err(fail("create the container's veth pair"))?;
    let ns_path = format!("/proc/{pid}/ns/net");
    let ns = std::fs::File::open(&ns_path)
        .map_err(|e| NetworkError::Pool(PathBuf::from(&ns_path), e))?;
    let index = nl
        .index(&peer)
        .map_err(fail("find the veth's container end"))?;
    let into_sandbox = LinkChange {
        name: Some(CONTAINER_IFACE.into()),
        netns_fd: Some(std::os::fd::AsRawFd::as_raw_fd(&ns)),
        ..LinkChange::default()
    };
    nl.set_link(index, &into_sandbox)
        .map_err(fail("move the veth's end into the sandbox"))?;
    enslave(&mut nl, ep)
}

/// What `port`, `ps` and `inspect` read: the running container's address and ports.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Settings {
    /// The network's name.
    pub network: String,
    /// The container's address.
    pub ip: Option<Ipv4Addr>,
    /// Its prefix length.
    pub prefix: u8,
    /// The gateway.
    pub gateway: Option<Ipv4Addr>,
    /// The MAC address, `aa:bb:...`.
    pub mac: String,
    /// Published ports, host ports resolved.
    pub ports: Vec<PortBinding>,
}

/// The file in a container's directory that holds its [`Settings`] while it runs.
pub const SETTINGS_FILE: &str = "network.json";

/// Writes `ep`'s settings into the container directory (best effort: only `port`, `ps`
/// and `inspect` read it).
pub fn record(dir: &Path, ep: &Endpoint) {
    let s = Settings {
        network: BRIDGE.into(),
        ip: Some(ep.ip),
        prefix: SUBNET.1,
        gateway: Some(GATEWAY),
        mac: ep
            .mac
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":"),
        ports: ep.ports.clone(),
    };
    if let Ok(json) = serde_json::to_vec(&s) {
        let tmp = dir.join(format!(".{SETTINGS_FILE}.tmp"));
        if std::fs::write(&tmp, json).is_ok() {
            let _ = std::fs::rename(&tmp, dir.join(SETTINGS_FILE));
        }
    }
}

/// Removes the settings file (the container stopped).
pub fn forget(dir: &Path) {
    let _ = std::fs::remove_file(dir.join(SETTINGS_FILE));
}

/// The settings of the running container in `dir`, if it is on a network.
pub fn settings(dir: &Path) -> Option<Settings> {
    let bytes = std::fs::read(dir.join(SETTINGS_FILE)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Repairs what the sandbox of container `id` (directory `dir`) left of its network when
/// its shim was killed: the settings file names the address and ports, the link is named
/// after the ID. Called before the container starts again and when it is removed.
pub fn remove_leftovers(root: &Path, dir: &Path, id: &str) {
    let Some(s) = settings(dir) else {
        return;
    };
    if let Some(ip) = s.ip {
        // A port another container has published since is held by its sandbox: its
        // element is that container's now and stays.
        let ports = s
            .ports
            .into_iter()
            .filter(|p| ports::reserve(std::slice::from_ref(p)).is_ok())
            .collect();
        let ep = Endpoint {
            link: link_name(id),
            ip,
            mac: [0; 6],
            ports,
            pool: root.join("networks").join(BRIDGE),
            id: id.to_string(),
        };
        detach(root, &ep);
    }
    forget(dir);
}

/// Unpublishes `ep`'s ports, removes its host link (a veth takes its sandbox end along)
/// and frees its address; the last container takes the bridge and the table along.
/// Best effort: what is already gone is fine.
pub fn detach(root: &Path, ep: &Endpoint) {
    let lock = pool_locked(root);
    nat::unpublish(&ep.ports);
    if let Ok(mut nl) = Netlink::open() {
        remove_stale(&mut nl, &ep.link);
    }
    ipam::release(&ep.pool, ep.ip, &ep.id);
    if lock.is_ok() {
        remove_if_unused(&ep.pool);
    }
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
            Mode::parse("nope", false).unwrap_err().to_string(),
            "network nope not found"
        );
    }

    #[test]
    fn link_names_fit_an_interface_name() {
        let id = "0123456789abcdef0123456789abcdef";
        assert_eq!(link_name(id), "hk0123456789a");
        assert!(link_name(id).len() <= 15);
    }
}
