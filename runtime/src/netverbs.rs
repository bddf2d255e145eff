//! The `network` verbs that touch containers: `connect` and `disconnect` (a stopped
//! container's network, for its next start: husk gives a container one network, and a
//! running one keeps the one it started with), and `prune`.

use std::net::Ipv4Addr;
use std::path::Path;

use crate::container::{ContainerError, Store};
use crate::network::Mode;
use crate::network::defs::{self, DefError};

/// Errors of `connect`, `disconnect` and `prune`.
#[derive(Debug, thiserror::Error)]
pub enum NetVerbError {
    /// The network is not there (or definitions cannot be read).
    #[error(transparent)]
    Def(#[from] DefError),
    /// The container is not there (or its state cannot be read).
    #[error(transparent)]
    Container(#[from] ContainerError),
    /// `connect`/`disconnect` of a running container.
    #[error(
        "container {0} is running: husk changes a container's network only while it is stopped"
    )]
    Running(String),
    /// `connect` to the network it is on (docker's words).
    #[error("endpoint with name {container} already exists in network {network}")]
    AlreadyOn {
        /// The container.
        container: String,
        /// The network.
        network: String,
    },
    /// `connect` while on another network.
    #[error(
        "container {container} is on network {network}: a husk container has one network, disconnect it first"
    )]
    OnAnother {
        /// The container.
        container: String,
        /// Its network.
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

/// Puts stopped container `query` on network `network` (from its next start).
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
    let config = store.config(&id)?;
    if store.state(&id)?.observed().running() {
        return Err(NetVerbError::Running(config.name));
    }
    match &config.host_config.network_mode {
        Mode::None => {}
        m if *m == Mode::of(&net) => {
            return Err(NetVerbError::AlreadyOn {
                container: config.name,
                network: net.name,
            });
        }
        m => {
            return Err(NetVerbError::OnAnother {
                container: config.name,
                network: m.as_str().to_string(),
            });
        }
    }
    store.update_config(&id, |c| {
        c.host_config.network_mode = Mode::of(&net);
        c.host_config.network_aliases = o.aliases.clone();
        c.host_config.ipv4_address = o.ip;
    })?;
    store.event_for("connect", &id, &[("network", net.name)]);
    Ok(())
}

/// Takes stopped container `query` off network `network` (it keeps loopback only).
pub fn disconnect(root: &Path, network: &str, query: &str) -> Result<(), NetVerbError> {
    let net = defs::find(root, network)?;
    let store = Store::open(root)?;
    let id = store.resolve(query)?;
    let config = store.config(&id)?;
    if config.host_config.network_mode != Mode::of(&net) {
        return Err(NetVerbError::NotOn {
            container: config.name,
            network: net.name,
        });
    }
    if store.state(&id)?.observed().running() {
        return Err(NetVerbError::Running(config.name));
    }
    store.update_config(&id, |c| {
        c.host_config.network_mode = Mode::None;
        c.host_config.network_aliases.clear();
        c.host_config.ipv4_address = None;
    })?;
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
