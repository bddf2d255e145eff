//! The container's end of the wire: a persistent TAP on the network's bridge for the
//! VMM (vm), or a veth pair whose other end becomes `eth<slot>` in the sandbox (process).

use std::path::PathBuf;

use netconf::{LinkChange, Netlink};

use super::{Endpoint, MTU, NetworkError, container_iface, remove_stale};

/// Puts `ep`'s host link on the bridge and brings it up.
fn enslave(nl: &mut Netlink, ep: &Endpoint) -> Result<(), NetworkError> {
    let fail = |op| move |e| NetworkError::Netlink(op, e);
    let br = nl
        .index(&ep.net.iface())
        .map_err(fail("find the network's bridge"))?;
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
        .map_err(fail("put the container's link on the network's bridge"))
}

/// vm: makes `ep`'s persistent TAP on the bridge, for the VMM to open by name.
pub fn plug_tap(ep: &Endpoint) -> Result<(), NetworkError> {
    let mut nl = Netlink::open().map_err(|e| NetworkError::Netlink("open netlink", e))?;
    remove_stale(&mut nl, &ep.link);
    netconf::tap::create_persistent(&ep.link)
        .map_err(|e| NetworkError::Netlink("create the container's TAP", e))?;
    enslave(&mut nl, ep)
}

/// The name a veth's container end has until it is moved and renamed (`p` and the host
/// end's name less its first byte).
pub(super) fn peer_name(link: &str) -> String {
    format!("p{}", &link[1..])
}

/// process: a veth pair whose host end goes on the bridge and whose other end becomes
/// `eth<slot>` in the network namespace of process `pid` (the sandbox's agent).
pub fn plug_veth(ep: &Endpoint, pid: i32) -> Result<(), NetworkError> {
    let fail = |op| move |e| NetworkError::Netlink(op, e);
    let mut nl = Netlink::open().map_err(fail("open netlink"))?;
    let peer = peer_name(&ep.link);
    remove_stale(&mut nl, &ep.link);
    remove_stale(&mut nl, &peer);
    nl.add_veth(&ep.link, &peer)
        .map_err(fail("create the container's veth pair"))?;
    let ns_path = format!("/proc/{pid}/ns/net");
    let ns = std::fs::File::open(&ns_path)
        .map_err(|e| NetworkError::Sandbox(PathBuf::from(&ns_path), e))?;
    let index = nl
        .index(&peer)
        .map_err(fail("find the veth's container end"))?;
    let into_sandbox = LinkChange {
        name: Some(container_iface(ep.slot)),
        netns_fd: Some(std::os::fd::AsRawFd::as_raw_fd(&ns)),
        ..LinkChange::default()
    };
    nl.set_link(index, &into_sandbox)
        .map_err(fail("move the veth's end into the sandbox"))?;
    enslave(&mut nl, ep)
}
