//! The sandbox's network interfaces, as the host wired them ([`InterfaceSpec`]): each is
//! found by name, given its MAC and MTU, its addresses and (for the first with a gateway)
//! the default route, then brought up, through rtnetlink (`netconf`). Runs during setup,
//! after loopback is up and before the workload exists, and again when the host connects
//! or disconnects a network while the container runs ([`change`]).

use agent_proto::InterfaceSpec;
use netconf::{LinkChange, Netlink};

/// Errors configuring an interface.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// The spec asks for something no interface can be.
    #[error("interface {0:?}: {1}")]
    Invalid(String, &'static str),
    /// The kernel refused a step.
    #[error("interface {0:?}")]
    Netlink(String, #[source] netconf::Error),
    /// The new resolv.conf could not be written.
    #[error("cannot rewrite /etc/resolv.conf")]
    Resolv(#[source] std::io::Error),
}

/// Smallest MTU an IPv4 interface may have.
const MIN_MTU: u32 = 68;
/// Largest MTU husk sets (a jumbo frame).
const MAX_MTU: u32 = 9000;

/// Checks `interfaces` before anything is changed.
pub fn validate(interfaces: &[InterfaceSpec]) -> Result<(), NetworkError> {
    for i in interfaces {
        let bad = |why| Err(NetworkError::Invalid(i.name.clone(), why));
        let name = i.name.as_bytes();
        if name.is_empty() || name.len() > 15 || name.iter().any(|b| matches!(b, 0 | b'/' | b' ')) {
            return bad("not an interface name");
        }
        if i.name == "lo" {
            return bad("loopback is not configured by the host");
        }
        if !(MIN_MTU..=MAX_MTU).contains(&i.mtu) {
            return bad("MTU out of range (68 to 9000)");
        }
        if i.mac[0] & 1 == 1 || i.mac == [0; 6] {
            return bad("not a unicast MAC address");
        }
        for (addr, prefix) in &i.addresses {
            let max = if addr.is_ipv4() { 32 } else { 128 };
            if *prefix > max || addr.is_unspecified() || addr.is_multicast() {
                return bad("bad address or prefix length");
            }
        }
    }
    Ok(())
}

fn fail(name: &str) -> impl Fn(netconf::Error) -> NetworkError + use<> {
    let name = name.to_string();
    move |e| NetworkError::Netlink(name.clone(), e)
}

/// Configures every interface; the first gateway becomes the default route.
pub fn configure(interfaces: &[InterfaceSpec]) -> Result<(), NetworkError> {
    if interfaces.is_empty() {
        return Ok(());
    }
    let mut nl = Netlink::open().map_err(fail("(netlink)"))?;
    bring_up(&mut nl, interfaces, false)
}

/// The name the VM's first NIC gets from the guest kernel.
const FIRST_NIC: &str = "eth0";

/// Brings a VM's first NIC up before the agent reports ready, still without addresses (and
/// without a carrier until the host plugs it in). Going up fills the NIC's receive ring:
/// done here, a warm-start template has it done once for all its clones, instead of every
/// container paying it during setup (~0.3 s of emulated guest-kernel work on an emulating
/// KVM). Setup then only sets MTU, MAC, addresses and routes on it (`bring_up`; MTU and MAC
/// change on a running virtio NIC). Best effort: setup brings it up anyway.
pub fn prepare_first_nic() {
    let Some(index) = netconf::link_index(FIRST_NIC) else {
        return;
    };
    let up = LinkChange {
        up: Some(true),
        ..LinkChange::default()
    };
    if let Err(e) = Netlink::open().and_then(|mut nl| nl.set_link(index, &up)) {
        crate::say!("network: cannot bring {FIRST_NIC} up early: {e}");
    }
}

/// A running sandbox's change: `remove`'s interfaces lose their addresses and go down
/// (their routes go with them), then `add`'s are configured (a new gateway becomes the
/// default route only where there is none), then `/etc/resolv.conf` gets `resolv_conf`
/// (written through its bind mount, so every process of the container sees it).
pub fn change(
    add: &[InterfaceSpec],
    remove: &[InterfaceSpec],
    resolv_conf: Option<&str>,
) -> Result<(), NetworkError> {
    validate(add)?;
    validate(remove)?;
    if resolv_conf.is_some_and(|r| r.contains('\0')) {
        return Err(NetworkError::Invalid(
            "resolv.conf".into(),
            "contains a NUL byte",
        ));
    }
    let mut nl = Netlink::open().map_err(fail("(netlink)"))?;
    for i in remove {
        // A veth the host deleted took the interface along: nothing is left to do.
        let Some(index) = netconf::link_index(&i.name) else {
            continue;
        };
        for (addr, prefix) in &i.addresses {
            netconf::except(
                nl.delete_address(index, *addr, *prefix),
                libc::EADDRNOTAVAIL,
            )
            .map_err(fail(&i.name))?;
        }
        let down = LinkChange {
            up: Some(false),
            ..LinkChange::default()
        };
        nl.set_link(index, &down).map_err(fail(&i.name))?;
        crate::say!("network: {} down", i.name);
    }
    bring_up(&mut nl, add, true)?;
    match resolv_conf {
        Some(r) => std::fs::write("/etc/resolv.conf", r).map_err(NetworkError::Resolv),
        None => Ok(()),
    }
}

/// `added`, where with `keep` an address or route that exists counts as added.
fn already(added: Result<(), netconf::Error>, keep: bool) -> Result<(), netconf::Error> {
    match keep {
        true => netconf::except(added, libc::EEXIST),
        false => added,
    }
}

/// Configures `interfaces`; the first gateway becomes the default route, unless `keep`
/// and there is one already.
fn bring_up(
    nl: &mut Netlink,
    interfaces: &[InterfaceSpec],
    keep: bool,
) -> Result<(), NetworkError> {
    let mut routed = false;
    for i in interfaces {
        let index = nl.index(&i.name).map_err(fail(&i.name))?;
        let change = LinkChange {
            mtu: Some(i.mtu),
            mac: Some(i.mac),
            ..LinkChange::default()
        };
        nl.set_link(index, &change).map_err(fail(&i.name))?;
        for (addr, prefix) in &i.addresses {
            let added = nl.add_address(index, *addr, *prefix);
            already(added, keep).map_err(fail(&i.name))?;
        }
        let up = LinkChange {
            up: Some(true),
            ..LinkChange::default()
        };
        nl.set_link(index, &up).map_err(fail(&i.name))?;
        if let (Some(gw), false) = (i.gateway, routed) {
            already(nl.add_default_route(gw), keep).map_err(fail(&i.name))?;
            routed = true;
        }
        crate::say!(
            "network: {} up ({} address(es){})",
            i.name,
            i.addresses.len(),
            i.gateway.map(|g| format!(", via {g}")).unwrap_or_default()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eth0() -> InterfaceSpec {
        InterfaceSpec {
            name: "eth0".into(),
            mac: [0x02, 0x42, 10, 88, 0, 2],
            mtu: 1500,
            addresses: vec![("10.88.0.2".parse().unwrap(), 16)],
            gateway: Some("10.88.0.1".parse().unwrap()),
        }
    }

    #[test]
    fn bad_specs_are_refused_before_anything_changes() {
        assert!(validate(&[eth0()]).is_ok());
        type Spoil = fn(&mut InterfaceSpec);
        let cases: Vec<(Spoil, &str)> = vec![
            (|i| i.name = String::new(), "not an interface name"),
            (
                |i| i.name = "a-very-long-interface".into(),
                "not an interface name",
            ),
            (|i| i.name = "lo".into(), "loopback"),
            (|i| i.mtu = 20, "MTU"),
            (|i| i.mac = [1, 0, 0, 0, 0, 1], "unicast"),
            (|i| i.addresses[0].1 = 33, "prefix"),
        ];
        for (spoil, want) in cases {
            let mut i = eth0();
            spoil(&mut i);
            let e = validate(&[i]).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
    }
}
