//! The `network` verbs that touch containers: `connect` and `disconnect` (of a running
//! container through its shim, which rewires the sandbox at once; the configuration keeps
//! the change for every later start), and `prune`.

use std::net::Ipv4Addr;
use std::path::Path;

use crate::container::{ContainerError, Store};
use crate::network::defs::{self, DefError};
use crate::network::{Attachment, Mode};
use crate::shim::client::ShimClient;

/// Errors of `connect`, `disconnect` and `prune`.
#[derive(Debug, thiserror::Error)]
pub enum NetVerbError {
    /// The network is not there (or definitions cannot be read).
    #[error(transparent)]
    Def(#[from] DefError),
    /// The container is not there (or its state cannot be read).
    #[error(transparent)]
    Container(#[from] ContainerError),
    /// The running container's shim could not make the change.
    #[error(transparent)]
    Shim(#[from] crate::shim::ShimError),
    /// `connect`/`disconnect` of a container on the host's network (docker's words).
    #[error("container cannot be disconnected from host network or connected to host network")]
    HostNetwork,
    /// As many networks as the container's isolation allows (a vm's NICs).
    #[error("container {0} is on {1} networks, the most a {2} container can be on")]
    Full(String, usize, &'static str),
    /// `connect` to the network it is on (docker's words).
    #[error("endpoint with name {container} already exists in network {network}")]
    AlreadyOn {
        /// The container.
        container: String,
        /// The network.
        network: String,
    },
    /// `disconnect` from a network it is not on (docker's words).
    #[error("container {container} is not connected to network {network}")]
    NotOn {
        /// The container.
        container: String,
        /// The network.
        network: String,
    },
    /// A `--alias` that is no DNS name.
    #[error("invalid argument {0:?} for \"--alias\" flag: not a DNS name")]
    Alias(String),
    /// A `--ip` that is no host address of the network (docker's words).
    #[error("no configured subnet or ip-range contain the IP address {0} (network {1})")]
    AddressOutside(Ipv4Addr, String),
    /// `--ip` or `--alias` on the default network (docker's words).
    #[error("user specified IP address and aliases are supported on user defined networks only")]
    UserOnly,
}

/// What `connect` gives the container on the network.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// `--alias`es.
    pub aliases: Vec<String>,
    /// `--ip`.
    pub ip: Option<Ipv4Addr>,
}

/// Puts container `query` on network `network`: in its configuration first (so a start
/// from now on has it), then, if it runs, at once through its shim (the configuration
/// goes back if that fails).
pub fn connect(
    root: &Path,
    network: &str,
    query: &str,
    o: &ConnectOptions,
) -> Result<(), NetVerbError> {
    let net = defs::find(root, network)?;
    if net.is_default() && (o.ip.is_some() || !o.aliases.is_empty()) {
        return Err(NetVerbError::UserOnly);
    }
    if let Some(alias) = o.aliases.iter().find(|a| !crate::network::valid_alias(a)) {
        return Err(NetVerbError::Alias(alias.clone()));
    }
    if let Some(ip) = o.ip
        && (!net.subnet.has_host(ip) || ip == net.gateway)
    {
        return Err(NetVerbError::AddressOutside(ip, net.name));
    }
    let store = Store::open(root)?;
    let id = store.resolve(query)?;
    let attachment = Attachment {
        network: net.name.clone(),
        aliases: o.aliases.clone(),
        ipv4_address: o.ip,
    };
    let mut refusal = None;
    let mut before = Vec::new();
    store.update_config(&id, |c| {
        let h = &mut c.host_config;
        let mut on = h.networks();
        let (max, kind) = match h.isolation {
            crate::container::Isolation::Vm => (crate::sandbox::vm::NICS, "vm"),
            crate::container::Isolation::Process => (crate::network::MAX_NETWORKS, "process"),
        };
        refusal = if h.network_mode == Mode::Host {
            Some(NetVerbError::HostNetwork)
        } else if on.iter().any(|a| names(root, &a.network, &net)) {
            Some(NetVerbError::AlreadyOn {
                container: c.name.clone(),
                network: net.name.clone(),
            })
        } else if on.len() >= max {
            Some(NetVerbError::Full(c.name.clone(), max, kind))
        } else {
            None
        };
        if refusal.is_none() {
            before = on.clone();
            on.push(attachment.clone());
            h.set_networks(on);
        }
    })?;
    if let Some(refusal) = refusal {
        return Err(refusal);
    }
    if store.state(&id)?.observed().running() {
        let live =
            ShimClient::connect(&store.dir(&id)).and_then(|s| s.connect_network(&attachment));
        if let Err(e) = live {
            let _ = store.update_config(&id, |c| c.host_config.set_networks(before));
            return Err(e.into());
        }
    }
    store.event_for("connect", &id, &[("network", net.name)]);
    Ok(())
}

/// Whether the network a container's configuration names as `name` is `net`.
fn names(root: &Path, name: &str, net: &defs::Net) -> bool {
    name == net.name || name == net.id || defs::find(root, name).is_ok_and(|n| n.id == net.id)
}

/// Takes container `query` off network `network`: in its configuration first (its next
/// network, if any, takes the first place: `eth0`, the ports), then, if it runs, at once
/// through its shim (the configuration goes back if that fails).
pub fn disconnect(root: &Path, network: &str, query: &str) -> Result<(), NetVerbError> {
    let net = defs::find(root, network)?;
    let store = Store::open(root)?;
    let id = store.resolve(query)?;
    let mut before = None;
    let config = store.update_config(&id, |c| {
        let h = &mut c.host_config;
        let mut on = h.networks();
        if let Some(at) = on.iter().position(|a| names(root, &a.network, &net)) {
            before = Some(on.clone());
            on.remove(at);
            h.set_networks(on);
        }
    })?;
    let Some(before) = before else {
        return Err(NetVerbError::NotOn {
            container: config.name,
            network: net.name,
        });
    };
    if store.state(&id)?.observed().running() {
        let live = ShimClient::connect(&store.dir(&id)).and_then(|s| s.disconnect_network(&net.id));
        if let Err(e) = live {
            let _ = store.update_config(&id, |c| c.host_config.set_networks(before));
            return Err(e.into());
        }
    }
    store.event_for("disconnect", &id, &[("network", net.name)]);
    Ok(())
}

/// Removes every user network no container runs on; their names.
pub fn prune(root: &Path) -> Result<Vec<String>, NetVerbError> {
    let mut removed = Vec::new();
    for net in defs::list(root)?.into_iter().filter(|n| !n.is_default()) {
        match crate::network::remove_network(root, &net.id) {
            Ok(n) => removed.push(n.name),
            Err(DefError::InUse { .. } | DefError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::{ContainerConfig, HostConfig, RunConfig};

    fn net(root: &Path, name: &str) {
        let o = defs::CreateOptions {
            name: name.into(),
            ..defs::CreateOptions::default()
        };
        defs::create(root, &o).unwrap();
    }

    fn on(root: &Path) -> (Mode, Vec<String>) {
        let store = Store::open(root).unwrap();
        let id = store.resolve("c").unwrap();
        let h = store.config(&id).unwrap().host_config;
        let names = h.networks().into_iter().map(|a| a.network).collect();
        (h.network_mode, names)
    }

    #[test]
    fn a_stopped_container_joins_several_networks_and_the_next_takes_the_first_place() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        net(root, "a");
        net(root, "b");
        let store = Store::open(root).unwrap();
        let host = HostConfig {
            network_mode: Mode::User("a".into()),
            network_aliases: vec!["x".into()],
            ..HostConfig::default()
        };
        store
            .create(Some("c"), |id, name| {
                let c = RunConfig::default();
                ContainerConfig::new(id, name, "sha256:00", "busybox", c, host, vec![])
            })
            .unwrap();
        let alias = ConnectOptions {
            aliases: vec!["y".into()],
            ip: None,
        };
        connect(root, "b", "c", &alias).unwrap();
        connect(root, "bridge", "c", &ConnectOptions::default()).unwrap();
        assert_eq!(
            on(root).1,
            ["a", "b", "bridge"],
            "in interface order, eth0 first"
        );
        let e = connect(root, "b", "c", &ConnectOptions::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "endpoint with name c already exists in network b"
        );

        disconnect(root, "a", "c").unwrap();
        let (mode, names) = on(root);
        assert_eq!(mode, Mode::User("b".into()));
        assert_eq!(names, ["b", "bridge"]);
        let store = Store::open(root).unwrap();
        let id = store.resolve("c").unwrap();
        let h = store.config(&id).unwrap().host_config;
        assert_eq!(h.network_aliases, ["y"], "b's aliases came along");
        disconnect(root, "bridge", "c").unwrap();
        disconnect(root, "b", "c").unwrap();
        assert_eq!(on(root), (Mode::None, vec![]));
        let e = disconnect(root, "b", "c").unwrap_err();
        assert_eq!(e.to_string(), "container c is not connected to network b");
        // From none, the next network is the first.
        connect(root, "a", "c", &ConnectOptions::default()).unwrap();
        assert_eq!(on(root), (Mode::User("a".into()), vec!["a".to_string()]));
    }
}
