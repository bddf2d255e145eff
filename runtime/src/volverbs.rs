//! `husk volume` verbs and the volume side of container verbs: who uses a volume (every
//! container's config, running or not, as docker counts), `rm` refused for a volume in
//! use, `prune` of unused (anonymous, or all with `--all`) volumes, `ls`/`inspect`
//! shapes, and the anonymous volumes that `rm -v` and `--rm` take with a container.
//! Every change holds the volume store's lock, which container creation holds too.

use std::collections::BTreeMap;
use std::path::Path;

use crate::container::{ContainerConfig, Store};
use crate::volumes::{Kind, Volume, VolumeError, VolumeStore};

/// Names (docker: IDs) of the containers whose mounts use volume `name`.
fn users(configs: &[ContainerConfig], name: &str) -> Vec<String> {
    configs
        .iter()
        .filter(|c| {
            c.host_config
                .mounts
                .iter()
                .any(|m| m.kind == Kind::Volume && m.source == name)
        })
        .map(|c| c.id.clone())
        .collect()
}

/// Every container's config (unreadable ones skipped).
fn all_configs(root: &Path) -> Vec<ContainerConfig> {
    let Ok(store) = Store::open(root) else {
        return Vec::new();
    };
    store
        .ids()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|id| store.config(&id).ok())
        .collect()
}

/// `volume create`.
pub fn create(
    root: &Path,
    name: Option<&str>,
    labels: BTreeMap<String, String>,
) -> Result<Volume, VolumeError> {
    let store = VolumeStore::open(root)?;
    let _lock = store.lock()?;
    Ok(store.create(name, labels)?.0)
}

/// `volume rm`: refused for a volume in use; `force` ignores missing ones.
pub fn remove(root: &Path, name: &str, force: bool) -> Result<(), VolumeError> {
    let store = VolumeStore::open(root)?;
    let _lock = store.lock()?;
    let using = users(&all_configs(root), name);
    if !using.is_empty() {
        return Err(VolumeError::InUse(name.to_owned(), using));
    }
    match store.remove(name) {
        Err(VolumeError::NotFound(_)) if force => Ok(()),
        other => other,
    }
}

/// One row of `volume ls`, with who uses it.
#[derive(Debug, Clone)]
pub struct Listed {
    /// The volume.
    pub volume: Volume,
    /// How many containers use it.
    pub users: usize,
}

/// `volume ls`.
pub fn list(root: &Path) -> Result<Vec<Listed>, VolumeError> {
    let store = VolumeStore::open(root)?;
    let configs = all_configs(root);
    Ok(store
        .list()?
        .into_iter()
        .map(|v| Listed {
            users: users(&configs, &v.name).len(),
            volume: v,
        })
        .collect())
}

/// `volume inspect`'s object for `name`.
pub fn inspect(root: &Path, name: &str) -> Result<serde_json::Value, VolumeError> {
    let store = VolumeStore::open(root)?;
    let v = store.get(name)?;
    Ok(store.inspect(&v))
}

/// `volume prune`: removes unused volumes (anonymous ones only unless `all`); returns
/// their names and the bytes freed.
pub fn prune(root: &Path, all: bool) -> Result<(Vec<String>, u64), VolumeError> {
    let store = VolumeStore::open(root)?;
    let _lock = store.lock()?;
    let configs = all_configs(root);
    let mut removed = Vec::new();
    let mut freed = 0;
    for v in store.list()? {
        if (all || v.anonymous) && users(&configs, &v.name).is_empty() {
            let size = store.size(&v.name);
            if store.remove(&v.name).is_ok() {
                removed.push(v.name);
                freed += size;
            }
        }
    }
    Ok((removed, freed))
}

/// Bytes each volume takes (`system df -v`, `volume ls` sizes).
pub fn size(root: &Path, name: &str) -> u64 {
    VolumeStore::open(root).map_or(0, |s| s.size(name))
}

/// After container `gone` was removed: removes its anonymous volumes that no other
/// container uses (docker's `rm -v` and `--rm`).
pub fn release_anonymous(root: &Path, gone: &ContainerConfig) {
    if !gone.host_config.mounts.iter().any(|m| m.anonymous) {
        return;
    }
    let Ok(store) = VolumeStore::open(root) else {
        return;
    };
    let Ok(_lock) = store.lock() else {
        return;
    };
    let configs: Vec<ContainerConfig> = all_configs(root)
        .into_iter()
        .filter(|c| c.id != gone.id)
        .collect();
    let still_used: Vec<String> = gone
        .host_config
        .mounts
        .iter()
        .filter(|m| !users(&configs, &m.source).is_empty())
        .map(|m| m.source.clone())
        .collect();
    crate::volumes::release_anonymous(&store, &gone.host_config.mounts, &still_used);
}

/// `--volumes-from CONTAINER[:ro|rw]`: that container's mounts, in the forced mode.
pub fn borrowed(
    root: &Path,
    from: &[(String, Option<bool>)],
) -> Result<Vec<crate::volumes::Mount>, VolumeError> {
    let store = Store::open(root).map_err(|_| VolumeError::NoContainer(String::new()))?;
    let mut out = Vec::new();
    for (query, read_only) in from {
        let config = store
            .resolve(query)
            .and_then(|id| store.config(&id))
            .map_err(|_| VolumeError::NoContainer(query.clone()))?;
        for mut m in config.host_config.mounts {
            if let Some(ro) = read_only {
                m.read_only = *ro;
            }
            // Borrowed, not owned: the lender's `rm -v` decides about it.
            m.anonymous = false;
            out.push(m);
        }
    }
    Ok(out)
}
