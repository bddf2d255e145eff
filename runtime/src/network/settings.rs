//! A running container's network settings, one entry per network it is on, kept in its
//! directory (`network.json`, a JSON array) for `port`, `ps` and `inspect`, and for
//! repairing what a killed shim left behind.

use std::net::Ipv4Addr;
use std::path::Path;

use super::ports::{self, PortBinding};
use super::{Endpoint, defs, detach, link_name, remove_stale, wire};
use crate::container::files::NETWORK as SETTINGS_FILE;

/// What `port`, `ps` and `inspect` read: the running container's address and ports on
/// one network.
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
    /// The container's interface (`eth<slot>`).
    #[serde(default)]
    pub slot: usize,
}

impl Settings {
    /// `ep`'s settings, with the DNS names it is known by.
    pub fn of(ep: &Endpoint, names: &[String]) -> Settings {
        Settings {
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
            slot: ep.slot,
        }
    }
}

/// Writes the settings of every network the container is on into its directory (none:
/// the file goes), replacing the file whole. Best effort for `port`, `ps` and `inspect`;
/// what repairs a killed shim's leftovers reads it too, so it is written as soon as an
/// address is taken.
pub fn record(dir: &Path, all: &[Settings]) {
    if all.is_empty() {
        let _ = std::fs::remove_file(dir.join(SETTINGS_FILE));
        return;
    }
    if let Ok(json) = serde_json::to_vec(all) {
        let tmp = dir.join(format!(".{SETTINGS_FILE}.tmp"));
        if std::fs::write(&tmp, json).is_ok() {
            let _ = std::fs::rename(&tmp, dir.join(SETTINGS_FILE));
        }
    }
}

/// The settings of the running container in `dir`, one per network, `eth0` first.
pub fn settings(dir: &Path) -> Vec<Settings> {
    let Ok(bytes) = std::fs::read(dir.join(SETTINGS_FILE)) else {
        return Vec::new();
    };
    // A file from before containers had several networks holds one object.
    let mut all: Vec<Settings> = serde_json::from_slice(&bytes)
        .or_else(|_| serde_json::from_slice::<Settings>(&bytes).map(|s| vec![s]))
        .unwrap_or_default();
    all.sort_by_key(|s| s.slot);
    all
}

/// Repairs what the sandbox of container `id` (directory `dir`) left of its networks when
/// its shim was killed: the settings file names the addresses and ports, the links are
/// named after the ID. Called before the container starts again and when it is removed.
pub fn remove_leftovers(root: &Path, dir: &Path, id: &str) {
    for s in settings(dir) {
        let link = link_name(id, s.slot);
        match (s.ip, defs::find(root, &s.network_id)) {
            (Some(ip), Ok(net)) => {
                // A port another container has published since is held by its sandbox:
                // its element is that container's now and stays.
                let ports = s
                    .ports
                    .into_iter()
                    .filter(|p| ports::reserve(std::slice::from_ref(p)).is_ok())
                    .collect();
                let ep = Endpoint {
                    link,
                    ip,
                    mac: [0; 6],
                    ports,
                    net,
                    slot: s.slot,
                    id: id.to_string(),
                };
                detach(root, &ep);
            }
            _ => {
                if let Ok(mut nl) = netconf::Netlink::open() {
                    remove_stale(&mut nl, &link);
                    remove_stale(&mut nl, &wire::peer_name(&link));
                }
            }
        }
    }
    record(dir, &[]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_network_is_recorded_and_read_back_in_interface_order() {
        let dir = tempfile::tempdir().unwrap();
        let one = |slot, network: &str| Settings {
            network: network.into(),
            slot,
            ..Settings::default()
        };
        record(dir.path(), &[one(1, "b"), one(0, "a")]);
        let read = settings(dir.path());
        assert_eq!(read, [one(0, "a"), one(1, "b")]);
        let old = serde_json::to_vec(&one(0, "a")).unwrap();
        std::fs::write(dir.path().join(SETTINGS_FILE), old).unwrap();
        assert_eq!(settings(dir.path()), [one(0, "a")], "the one-object form");
        record(dir.path(), &[]);
        assert!(!dir.path().join(SETTINGS_FILE).exists());
        assert!(settings(dir.path()).is_empty());
    }
}
