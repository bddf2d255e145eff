//! husk's own nftables table, `ip husk`, in the network namespace husk runs in: outbound
//! masquerading for the bridge's subnet and kernel DNAT for published ports. Nothing
//! else in the host's ruleset is read or touched. The table is made whole in one `nft`
//! transaction when the first container joins the bridge (under the pool's lock, so two
//! husks never make it twice) and deleted with the last one; published ports are elements
//! of four maps (TCP and UDP, any address or one address), added and deleted per
//! container, so no rule ever has to be found again to be removed.
//!
//! The rules are nft's own language, fed to `nft -f -`: the ruleset is small and fixed,
//! and the text is exactly what an operator reads back with `nft list table ip husk`.

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use super::ports::PortBinding;
#[cfg(test)]
use super::ports::Proto;
use super::{BRIDGE_IFACE, SUBNET};

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

/// The whole table. `fib daddr type local` limits DNAT to the host's own addresses (any
/// interface, 127.0.0.1 included); traffic DNATed from localhost or from a container back
/// to a container is masqueraded, so replies return through the host.
fn ruleset() -> String {
    let (net, prefix) = SUBNET;
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
    ip saddr {net}/{prefix} oifname != \"{BRIDGE_IFACE}\" masquerade
    oifname \"{BRIDGE_IFACE}\" ct status dnat ip saddr {{ 127.0.0.0/8, {net}/{prefix} }} masquerade
  }}
}}
"
    )
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
        assert!(ruleset().contains("oifname != \"husk0\" masquerade"));
    }
}
