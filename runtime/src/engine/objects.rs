//! The engine's network and volume verbs (docker's `network` and `volume` objects), and
//! what kind of failure each of their errors is.

use std::collections::BTreeMap;

use crate::container::ContainerError;
use crate::netverbs::{self, ConnectOptions, NetVerbError};
use crate::network::defs::{self, CreateOptions, DefError, Net};
use crate::volumes::VolumeError;
use crate::volverbs;

use super::{Engine, EngineError, ErrorKind};

pub(super) fn def_kind(e: &DefError) -> ErrorKind {
    match e {
        DefError::NotFound(_) => ErrorKind::NotFound,
        DefError::NameTaken(_) | DefError::InUse { .. } | DefError::Predefined(_) => {
            ErrorKind::Conflict
        }
        DefError::Ambiguous(_) | DefError::BadName(_) | DefError::Subnet(_) => {
            ErrorKind::BadRequest
        }
        _ => ErrorKind::Internal,
    }
}

pub(super) fn netverb_kind(e: &NetVerbError) -> ErrorKind {
    match e {
        NetVerbError::Def(d) => def_kind(d),
        NetVerbError::Container(ContainerError::NoSuchContainer(_)) => ErrorKind::NotFound,
        NetVerbError::Shim(_) | NetVerbError::Container(_) => ErrorKind::Internal,
        _ => ErrorKind::Conflict,
    }
}

pub(super) fn volume_kind(e: &volverbs::Error) -> ErrorKind {
    match e {
        volverbs::Error::Volume(VolumeError::NotFound(_)) => ErrorKind::NotFound,
        volverbs::Error::Volume(VolumeError::InUse(..)) => ErrorKind::Conflict,
        volverbs::Error::Volume(VolumeError::Parse(_)) => ErrorKind::BadRequest,
        _ => ErrorKind::Internal,
    }
}

impl Engine {
    /// Every network.
    pub fn networks(&self) -> Result<Vec<Net>, EngineError> {
        Ok(defs::list(&self.root).map_err(NetVerbError::Def)?)
    }

    /// One network by name, ID or ID prefix.
    pub fn network(&self, query: &str) -> Result<Net, EngineError> {
        Ok(defs::find(&self.root, query).map_err(NetVerbError::Def)?)
    }

    /// docker's `network inspect` document (with the containers on it).
    pub fn network_inspect(&self, query: &str) -> Result<serde_json::Value, EngineError> {
        let net = self.network(query)?;
        Ok(crate::network::view::inspect(&self.root, &net))
    }

    /// Defines a user network.
    pub fn network_create(&self, o: &CreateOptions) -> Result<Net, EngineError> {
        Ok(defs::create(&self.root, o).map_err(NetVerbError::Def)?)
    }

    /// Removes a user network nobody is on.
    pub fn network_remove(&self, query: &str) -> Result<(), EngineError> {
        crate::network::remove_network(&self.root, query).map_err(NetVerbError::Def)?;
        Ok(())
    }

    /// Puts a container on a network (at once if it runs).
    pub fn network_connect(
        &self,
        network: &str,
        container: &str,
        o: &ConnectOptions,
    ) -> Result<(), EngineError> {
        Ok(netverbs::connect(&self.root, network, container, o)?)
    }

    /// Takes a container off a network.
    pub fn network_disconnect(&self, network: &str, container: &str) -> Result<(), EngineError> {
        Ok(netverbs::disconnect(&self.root, network, container)?)
    }

    /// Every volume, with how many containers use it.
    pub fn volumes(&self) -> Result<Vec<volverbs::Listed>, EngineError> {
        Ok(volverbs::list(&self.root)?)
    }

    /// docker's `volume inspect` document.
    pub fn volume_inspect(&self, name: &str) -> Result<serde_json::Value, EngineError> {
        Ok(volverbs::inspect(&self.root, name)?)
    }

    /// Creates a volume (a random name when `None`); an existing one is kept, as docker
    /// does. Its inspect document.
    pub fn volume_create(
        &self,
        name: Option<&str>,
        labels: BTreeMap<String, String>,
    ) -> Result<serde_json::Value, EngineError> {
        let v = volverbs::create(&self.root, name, labels)?;
        self.volume_inspect(&v.name)
    }

    /// Removes every user network no container is on; their names.
    pub fn network_prune(&self) -> Result<Vec<String>, EngineError> {
        Ok(netverbs::prune(&self.root)?)
    }

    /// Removes unused volumes (anonymous ones only unless `all`); their names and the
    /// bytes freed.
    pub fn volume_prune(&self, all: bool) -> Result<(Vec<String>, u64), EngineError> {
        Ok(volverbs::prune(&self.root, all)?)
    }

    /// Removes every stopped container; their IDs and the bytes freed.
    pub fn container_prune(&self) -> Result<(Vec<String>, u64), EngineError> {
        let mut gone = Vec::new();
        let mut freed = 0;
        for c in self.list(true)? {
            if c.state.observed().running() {
                continue;
            }
            let bytes = crate::lifecycle::disk_usage(&self.root, &c.config.id);
            // Started or removed by someone else meanwhile: not an error of the prune.
            if self.remove(&c.config.id, false, false).is_ok() {
                gone.push(c.config.id);
                freed += bytes;
            }
        }
        Ok((gone, freed))
    }

    /// Removes a volume nobody uses (`force`: a missing one is fine).
    pub fn volume_remove(&self, name: &str, force: bool) -> Result<(), EngineError> {
        Ok(volverbs::remove(&self.root, name, force)?)
    }
}
