//! A container's mounts as its creation fixes them: `--volumes-from` first, then `-v`
//! and `--mount` (which may replace a borrowed mount on the same path, not repeat one
//! of their own), then an anonymous volume for each image `VOLUME` nothing else covers.
//! Named volumes are made on first use, anonymous ones get random names, bind sources
//! must exist and are kept canonical (symlinks resolved now, as docker does).

use std::collections::BTreeMap;

use super::store::VolumeStore;
use super::{Kind, Mount, VolumeError};

/// Where a requested mount comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A new anonymous volume.
    Anonymous,
    /// A named volume (made if missing).
    Named(String),
    /// A host path.
    Bind(String),
}

/// One `-v` or `--mount` before the container exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountRequest {
    /// The source.
    pub source: Source,
    /// Clean absolute path in the container.
    pub target: String,
    /// Read-only.
    pub read_only: bool,
    /// Do not fill an empty volume from the image.
    pub no_copy: bool,
}

/// The mounts of a new container from its requests, the mounts it borrows
/// (`--volumes-from`, already in their final mode) and the image's `VOLUME` paths, with
/// the names of the volumes made for it (for [`undo`] if the container is not made
/// after all). Volumes made here are removed again if a later one fails. Call with the
/// store's lock held, and keep it until the container's config is written.
pub fn resolve(
    store: &VolumeStore,
    requests: &[MountRequest],
    borrowed: Vec<Mount>,
    image_volumes: &[String],
) -> Result<(Vec<Mount>, Vec<String>), VolumeError> {
    let mut made: Vec<String> = Vec::new();
    match resolve_all(store, requests, borrowed, image_volumes, &mut made) {
        Ok(mounts) => Ok((mounts, made)),
        Err(e) => {
            undo(store, &made);
            Err(e)
        }
    }
}

/// Removes the volumes `resolve` made (their container was not made after all).
pub fn undo(store: &VolumeStore, made: &[String]) {
    for name in made {
        if let Err(e) = store.remove(name) {
            log::warn!("cannot remove volume {name}: {e}");
        }
    }
}

fn resolve_all(
    store: &VolumeStore,
    requests: &[MountRequest],
    borrowed: Vec<Mount>,
    image_volumes: &[String],
    made: &mut Vec<String>,
) -> Result<Vec<Mount>, VolumeError> {
    let mut by_target: BTreeMap<String, Mount> = borrowed
        .into_iter()
        .map(|m| (m.target.clone(), m))
        .collect();
    let mut own: Vec<&str> = Vec::new();
    for r in requests {
        if own.contains(&r.target.as_str()) {
            return Err(VolumeError::Duplicate(r.target.clone()));
        }
        own.push(&r.target);
        let mount = one(store, r, made)?;
        by_target.insert(r.target.clone(), mount);
    }
    for target in image_volumes {
        let Ok(target) = super::parse::parse_volume(target).map(|r| r.target) else {
            continue; // an image VOLUME that is not an absolute path: docker skips it too
        };
        if let std::collections::btree_map::Entry::Vacant(slot) = by_target.entry(target) {
            let r = MountRequest {
                source: Source::Anonymous,
                target: slot.key().clone(),
                read_only: false,
                no_copy: false,
            };
            slot.insert(one(store, &r, made)?);
        }
    }
    // Parents before children, so a mount inside another lands on top of it.
    let mut mounts: Vec<Mount> = by_target.into_values().collect();
    mounts.sort_by_key(|m| m.target.matches('/').count());
    Ok(mounts)
}

fn one(
    store: &VolumeStore,
    r: &MountRequest,
    made: &mut Vec<String>,
) -> Result<Mount, VolumeError> {
    let (kind, source, anonymous) = match &r.source {
        Source::Bind(path) => {
            let canonical =
                std::fs::canonicalize(path).map_err(|_| VolumeError::NoSource(path.clone()))?;
            (Kind::Bind, canonical.display().to_string(), false)
        }
        Source::Named(name) => {
            let (v, new) = store.create(Some(name), BTreeMap::new())?;
            if new {
                made.push(v.name.clone());
            }
            (Kind::Volume, v.name, false)
        }
        Source::Anonymous => {
            let (v, _) = store.create(None, BTreeMap::new())?;
            made.push(v.name.clone());
            (Kind::Volume, v.name, true)
        }
    };
    Ok(Mount {
        kind,
        source,
        target: r.target.clone(),
        read_only: r.read_only,
        anonymous,
        no_copy: r.no_copy,
    })
}

/// Removes the anonymous volumes among `mounts` (docker's `rm -v`) that no one in
/// `still_used` uses; named volumes stay. Call with the store's lock held.
pub fn release_anonymous(store: &VolumeStore, mounts: &[Mount], still_used: &[String]) {
    for m in mounts
        .iter()
        .filter(|m| m.kind == Kind::Volume && m.anonymous)
    {
        if still_used.contains(&m.source) {
            continue;
        }
        if let Err(e) = store.remove(&m.source) {
            log::warn!("cannot remove anonymous volume {}: {e}", m.source);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(source: Source, target: &str) -> MountRequest {
        MountRequest {
            source,
            target: target.into(),
            read_only: false,
            no_copy: false,
        }
    }

    #[test]
    fn requests_image_volumes_and_borrowed_mounts_combine_as_docker_does() {
        let root = tempfile::tempdir().unwrap();
        let store = VolumeStore::open(root.path()).unwrap();
        let host = root.path().join("host");
        std::fs::create_dir(&host).unwrap();
        let borrowed = vec![Mount {
            kind: Kind::Volume,
            source: "shared".into(),
            target: "/b".into(),
            read_only: true,
            anonymous: false,
            no_copy: false,
        }];
        let requests = [
            req(Source::Named("db".into()), "/data"),
            req(Source::Bind(host.display().to_string()), "/data/host"),
        ];
        let (mounts, made) = resolve(
            &store,
            &requests,
            borrowed,
            &["/data".into(), "/cache".into()],
        )
        .unwrap();
        assert_eq!(made.len(), 2, "db and the anonymous /cache");
        let targets: Vec<&str> = mounts.iter().map(|m| m.target.as_str()).collect();
        assert_eq!(targets, ["/b", "/cache", "/data", "/data/host"]);
        assert!(mounts[1].anonymous && mounts[1].kind == Kind::Volume);
        assert_eq!(mounts[2].source, "db");
        assert!(store.get("db").is_ok());
    }

    #[test]
    fn a_failure_takes_back_the_volumes_it_made() {
        let root = tempfile::tempdir().unwrap();
        let store = VolumeStore::open(root.path()).unwrap();
        let requests = [
            req(Source::Named("fresh".into()), "/a"),
            req(Source::Bind("/no/such/husk/path".into()), "/b"),
        ];
        let e = resolve(&store, &requests, Vec::new(), &[]).unwrap_err();
        assert!(
            e.to_string().contains("bind source path does not exist"),
            "{e}"
        );
        assert!(store.list().unwrap().is_empty());
        let dup = [req(Source::Anonymous, "/a"), req(Source::Anonymous, "/a")];
        let e = resolve(&store, &dup, Vec::new(), &[]).unwrap_err();
        assert_eq!(e.to_string(), "Duplicate mount point: /a");
        assert!(store.list().unwrap().is_empty());
    }
}
