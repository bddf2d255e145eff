//! husk's own nftables table, `ip husk`, in the network namespace husk runs in: kernel
//! DNAT for published ports, outbound masquerading for each live network's subnet, and
//! the isolation of networks from each other. Nothing else in the host's ruleset is read
//! or touched. The table is made whole in one `nft` transaction when the first container
//! joins a network (under the networks' lock, so two husks never make it twice) and
//! deleted with the last one; published ports are elements of four maps (TCP and UDP,
//! any address or one address), added and deleted per container, so no rule ever has to
//! be found again to be removed. The per-network rules (`postrouting` and `forward`) are
//! rewritten whole by [`sync`] whenever a network's bridge comes or goes.
//!
//! The rules are nft's own language, fed to `nft -f -`: the ruleset is small, and the
//! text is exactly what an operator reads back with `nft list table ip husk`.

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use super::defs::Net;
use super::ports::PortBinding;
#[cfg(test)]
use super::ports::Proto;

/// The table's name (family `ip`).
pub const TABLE: &str = "husk";

/// Errors from `nft`.
#[derive(Debug, thiserror::Error)]
pub enum NatError {
    /// `nft` could not be run.
    #[error("cannot run nft (install the nftables package)")]
    Spawn(#[source] std::io::Error),
    /// `nft` refused the change.
    #[error("nft refused to {what}: {message}")]
    Refused {
        /// What was asked.
        what: &'static str,
        /// nft's first line of complaint.
        message: String,
    },
}

/// The whole table, with no network's rules yet (see [`sync`]). `fib daddr type local`
/// limits DNAT to the host's own addresses (any interface, 127.0.0.1 included).
fn ruleset() -> String {
    format!(
        "table ip {TABLE} {{
  map tcp_any {{ type inet_service : ipv4_addr . inet_service; }}
  map udp_any {{ type inet_service : ipv4_addr . inet_service; }}
  map tcp_addr {{ type ipv4_addr . inet_service : ipv4_addr . inet_service; }}
  map udp_addr {{ type ipv4_addr . inet_service : ipv4_addr . inet_service; }}
  chain publish {{
    dnat ip to ip daddr . tcp dport map @tcp_addr
    dnat ip to tcp dport map @tcp_any
    dnat ip to ip daddr . udp dport map @udp_addr
    dnat ip to udp dport map @udp_any
  }}
  chain prerouting {{
    type nat hook prerouting priority -100; policy accept;
    fib daddr type local jump publish
  }}
  chain output {{
    type nat hook output priority -100; policy accept;
    fib daddr type local jump publish
  }}
  chain postrouting {{
    type nat hook postrouting priority 100; policy accept;
  }}
  chain forward {{
    type filter hook forward priority 0; policy accept;
  }}
}}
"
    )
}

/// The per-network rules for the networks whose bridges exist. Outbound traffic of a
/// non-internal network is masqueraded; traffic DNATed from localhost or from the network
/// itself back into it is masqueraded too, so replies return through the host. Between
/// networks nothing passes but published ports (DNATed connections and their replies);
/// an internal network talks to nothing beyond its bridge, published ports included.
fn network_rules(nets: &[Net]) -> String {
    // The chains are added first (a no-op when they exist), so a table an older husk made
    // without one is mended rather than refused.
    let mut out = format!(
        "add chain ip {TABLE} postrouting {{ type nat hook postrouting priority 100; policy accept; }}
add chain ip {TABLE} forward {{ type filter hook forward priority 0; policy accept; }}
flush chain ip {TABLE} postrouting
flush chain ip {TABLE} forward
"
    );
    let rule = |chain: &str, text: String| format!("add rule ip {TABLE} {chain} {text}\n");
    // An internal network first: not even a published port crosses its bridge.
    for n in nets.iter().filter(|n| n.internal) {
        let iface = n.iface();
        out += &rule(
            "forward",
            format!("iifname \"{iface}\" oifname != \"{iface}\" drop"),
        );
        out += &rule(
            "forward",
            format!("oifname \"{iface}\" iifname != \"{iface}\" drop"),
        );
    }
    if !nets.is_empty() {
        out += &rule("forward", "ct status dnat accept".into());
    }
    let all: Vec<String> = nets.iter().map(|n| format!("\"{}\"", n.iface())).collect();
    let all = format!("{{ {} }}", all.join(", "));
    for n in nets {
        let (iface, subnet) = (n.iface(), n.subnet);
        if !n.internal {
            out += &rule(
                "postrouting",
                format!("ip saddr {subnet} oifname != \"{iface}\" masquerade"),
            );
            out += &rule(
                "forward",
                format!("iifname \"{iface}\" oifname != \"{iface}\" oifname {all} drop"),
            );
        }
        out += &rule(
            "postrouting",
            format!(
                "oifname \"{iface}\" ct status dnat ip saddr {{ 127.0.0.0/8, {subnet} }} masquerade"
            ),
        );
    }
    out
}

/// Rewrites the per-network rules for `nets` (the networks whose bridges exist), in one
/// transaction.
pub fn sync(nets: &[Net]) -> Result<(), NatError> {
    nft("write the networks' rules", &network_rules(nets))
}

/// Runs `nft -f -` with `script`.
fn nft(what: &'static str, script: &str) -> Result<(), NatError> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(NatError::Spawn)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(NatError::Spawn)?;
    }
    let out = child.wait_with_output().map_err(NatError::Spawn)?;
    if out.status.success() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&out.stderr);
    Err(NatError::Refused {
        what,
        message: text.lines().next().unwrap_or("no reason given").to_string(),
    })
}

/// Whether the table exists.
fn exists() -> Result<bool, NatError> {
    let st = Command::new("nft")
        .args(["list", "table", "ip", TABLE])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(NatError::Spawn)?;
    Ok(st.success())
}

/// Makes the table if it is missing (call under the pool's lock).
pub fn ensure() -> Result<(), NatError> {
    if exists()? {
        return Ok(());
    }
    nft("create husk's nftables table", &ruleset())
}

/// Deletes the table (the last container left the bridge); a missing one is fine.
pub fn remove() {
    if exists().unwrap_or(false)
        && let Err(e) = nft(
            "delete husk's nftables table",
            &format!("delete table ip {TABLE}\n"),
        )
    {
        log::warn!("{e}");
    }
}

/// The map element of `b` pointing at `target`.
fn element(b: &PortBinding, target: Ipv4Addr) -> (String, String) {
    let proto = b.proto.as_str();
    match b.host_ip {
        None => (
            format!("{proto}_any"),
            format!("{} : {target} . {}", b.host_port, b.container_port),
        ),
        Some(ip) => (
            format!("{proto}_addr"),
            format!("{ip} . {} : {target} . {}", b.host_port, b.container_port),
        ),
    }
}

fn key(b: &PortBinding) -> (String, String) {
    let proto = b.proto.as_str();
    match b.host_ip {
        None => (format!("{proto}_any"), b.host_port.to_string()),
        Some(ip) => (format!("{proto}_addr"), format!("{ip} . {}", b.host_port)),
    }
}

/// Publishes `ports` of the container at `target`, all in one transaction. An element
/// left for the same host port by a container whose shim was killed is replaced: the
/// port's reservation (held by the caller) says no live container has it.
pub fn publish(ports: &[PortBinding], target: Ipv4Addr) -> Result<(), NatError> {
    if ports.is_empty() {
        return Ok(());
    }
    unpublish(ports);
    let script: String = ports
        .iter()
        .map(|b| {
            let (map, elem) = element(b, target);
            format!("add element ip {TABLE} {map} {{ {elem} }}\n")
        })
        .collect();
    nft("publish the container's ports", &script)
}

/// Stops publishing `ports` (best effort: each element on its own, gone ones are fine).
pub fn unpublish(ports: &[PortBinding]) {
    for b in ports {
        let (map, k) = key(b);
        let _ = nft(
            "unpublish a port",
            &format!("delete element ip {TABLE} {map} {{ {k} }}\n"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elements_name_their_map_and_target() {
        let any = PortBinding {
            host_ip: None,
            host_port: 8080,
            container_port: 80,
            proto: Proto::Tcp,
        };
        let target = Ipv4Addr::new(10, 88, 0, 2);
        assert_eq!(
            element(&any, target),
            ("tcp_any".into(), "8080 : 10.88.0.2 . 80".into())
        );
        let lo = PortBinding {
            host_ip: Some(Ipv4Addr::LOCALHOST),
            proto: Proto::Udp,
            ..any
        };
        assert_eq!(
            element(&lo, target),
            (
                "udp_addr".into(),
                "127.0.0.1 . 8080 : 10.88.0.2 . 80".into()
            )
        );
        assert_eq!(key(&lo), ("udp_addr".into(), "127.0.0.1 . 8080".into()));
        let mut user = Net::default_bridge();
        user.id = "ab".repeat(32);
        user.name = "u".into();
        user.internal = true;
        let rules = network_rules(&[Net::default_bridge(), user]);
        assert!(rules.contains("ip saddr 10.88.0.0/16 oifname != \"husk0\" masquerade"));
        assert!(rules.contains(
            "iifname \"husk0\" oifname != \"husk0\" oifname { \"husk0\", \"hb-abababababab\" } drop"
        ));
        let internal_drop = "oifname \"hb-abababababab\" iifname != \"hb-abababababab\" drop";
        let dnat = rules.find("ct status dnat accept").unwrap();
        assert!(rules.find(internal_drop).unwrap() < dnat, "{rules}");
        assert!(!rules.contains("oifname != \"hb-abababababab\" masquerade"));
    }
}
