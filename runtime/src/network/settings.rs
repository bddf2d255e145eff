//! A running container's network settings, kept in its directory (`network.json`) for
//! `port`, `ps` and `inspect`, and for repairing what a killed shim left behind.

use std::net::Ipv4Addr;
use std::path::Path;

use super::ports::{self, PortBinding};
use super::{Endpoint, defs, detach, link_name, remove_stale};

/// What `port`, `ps` and `inspect` read: the running container's address and ports.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Settings {
    /// The network's name.
    pub network: String,
    /// The network's ID.
    #[serde(default)]
    pub network_id: String,
    /// The names the network's DNS answers for the container.
    #[serde(default)]
    pub dns_names: Vec<String>,
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
pub fn record(dir: &Path, ep: &Endpoint, names: &[String]) {
    let s = Settings {
        network: ep.net.name.clone(),
        network_id: ep.net.id.clone(),
        dns_names: names.to_vec(),
        ip: Some(ep.ip),
        prefix: ep.net.subnet.prefix,
        gateway: (!ep.net.internal).then_some(ep.net.gateway),
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
    if let Some(ip) = s.ip
        && let Ok(net) = defs::find(root, &s.network_id)
    {
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
            net,
            id: id.to_string(),
        };
        detach(root, &ep);
    } else if let Ok(mut nl) = netconf::Netlink::open() {
        remove_stale(&mut nl, &link_name(id));
    }
    forget(dir);
}
