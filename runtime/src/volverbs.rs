//! `husk volume` verbs and the volume side of container verbs: who uses a volume (every
//! container's config, running or not, as docker counts), `rm` refused for a volume in
//! use, `prune` of unused (anonymous, or all with `--all`) volumes, `ls`/`inspect`
//! shapes, and the anonymous volumes that `rm -v` and `--rm` take with a container.
//! Every change holds the volume store's lock, which container creation holds too.

use std::collections::BTreeMap;
use std::path::Path;

use crate::container::{ContainerConfig, ContainerError, Store};
use crate::volumes::{Kind, Volume, VolumeError, VolumeStore};

/// Errors of the volume verbs.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A volume could not be made, found or removed.
    #[error(transparent)]
    Volume(#[from] VolumeError),
    /// The containers could not be listed, so no one can say a volume is unused.
    #[error("cannot list the containers that may use volumes")]
    Containers(#[from] ContainerError),
}

/// A container as far as volumes care: its ID and its config (`None`: unreadable, so
/// it counts as using every volume, and nothing it might use is removed).
type Holder = (String, Option<ContainerConfig>);

/// IDs of the containers whose mounts (may) use volume `name`.
fn users(holders: &[Holder], name: &str) -> Vec<String> {
    holders
        .iter()
        .filter(|(_, c)| {
            c.as_ref().is_none_or(|c| {
                c.host_config
                    .mounts
                    .iter()
                    .any(|m| m.kind == Kind::Volume && m.source == name)
            })
        })
        .map(|(id, _)| id.clone())
        .collect()
}

/// Every container with its config. An error if the containers cannot be listed: then
/// no one can say a volume is unused.
fn holders(root: &Path) -> Result<Vec<Holder>, Error> {
    let store = Store::open(root)?;
    Ok(store
        .ids()?
        .into_iter()
        .map(|id| {
            let config = store.config(&id).ok();
            (id, config)
        })
        .collect())
}

/// `volume create`.
pub fn create(
    root: &Path,
    name: Option<&str>,
    labels: BTreeMap<String, String>,
) -> Result<Volume, Error> {
    let store = VolumeStore::open(root)?;
    let _lock = store.lock()?;
    Ok(store.create(name, labels)?.0)
}

/// `volume rm`: refused for a volume in use; `force` ignores missing ones.
pub fn remove(root: &Path, name: &str, force: bool) -> Result<(), Error> {
    let store = VolumeStore::open(root)?;
    let _lock = store.lock()?;
    let using = users(&holders(root)?, name);
    if !using.is_empty() {
        return Err(VolumeError::InUse(name.to_owned(), using).into());
    }
    match store.remove(name) {
        Err(VolumeError::NotFound(_)) if force => Ok(()),
        other => Ok(other?),
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
pub fn list(root: &Path) -> Result<Vec<Listed>, Error> {
    let store = VolumeStore::open(root)?;
    let holders = holders(root)?;
    Ok(store
        .list()?
        .into_iter()
        .map(|v| Listed {
            users: users(&holders, &v.name).len(),
            volume: v,
        })
        .collect())
}

/// `volume inspect`'s object for `name`.
pub fn inspect(root: &Path, name: &str) -> Result<serde_json::Value, Error> {
    let store = VolumeStore::open(root)?;
    let v = store.get(name)?;
    Ok(store.inspect(&v))
}

/// `volume prune`: removes unused volumes (anonymous ones only unless `all`); returns
/// their names and the bytes freed.
pub fn prune(root: &Path, all: bool) -> Result<(Vec<String>, u64), Error> {
    let store = VolumeStore::open(root)?;
    let _lock = store.lock()?;
    let holders = holders(root)?;
    let mut removed = Vec::new();
    let mut freed = 0;
    for v in store.list()? {
        if (all || v.anonymous) && users(&holders, &v.name).is_empty() {
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
    let Ok(all) = holders(root) else {
        log::warn!(
            "cannot tell who uses container {}'s anonymous volumes: kept",
            gone.id
        );
        return;
    };
    let others: Vec<Holder> = all.into_iter().filter(|(id, _)| *id != gone.id).collect();
    let still_used: Vec<String> = gone
        .host_config
        .mounts
        .iter()
        .filter(|m| !users(&others, &m.source).is_empty())
        .map(|m| m.source.clone())
        .collect();
    crate::volumes::release_anonymous(&store, &gone.host_config.mounts, &still_used);
}

/// `--volumes-from CONTAINER[:ro|rw]`: that container's mounts, in the forced mode.
pub fn borrowed(
    root: &Path,
    from: &[(String, Option<bool>)],
) -> Result<Vec<crate::volumes::Mount>, Error> {
    if from.is_empty() {
        return Ok(Vec::new());
    }
    let store = Store::open(root)?;
    let mut out = Vec::new();
    for (query, read_only) in from {
        let config = store
            .resolve(query)
            .and_then(|id| store.config(&id))
            .map_err(|_| Error::Volume(VolumeError::NoContainer(query.clone())))?;
        for mut m in config.host_config.mounts {
            if let Some(ro) = read_only {
                m.read_only = *ro;
            }
            // An anonymous volume stays anonymous when borrowed: whichever of lender and
            // borrowers is removed last with `-v` takes it (no one else uses it then).
            out.push(m);
        }
    }
    Ok(out)
}
