//! Image operations over the database: add (from a manifest already in the store), tag,
//! untag, resolve (name:tag, name@digest, ID or ID prefix), list, remove with blob garbage
//! collection (a blob goes when no image needs it any more), prune.

use std::collections::{BTreeSet, HashSet};
use std::fs;

use super::config::ImageConfig;
use super::db::{Db, ImageRecord, LayerRecord};
use super::manifest::{self, OCI_MANIFEST};
use super::{Store, StoreError};
use crate::digest::Digest;
use crate::reference::Reference;

/// What removing or pruning did, in docker's vocabulary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RemoveEvent {
    /// A tag or repo digest was removed (familiar form).
    Untagged(String),
    /// The image was deleted.
    Deleted(Digest),
}

impl Store {
    /// Records the image whose manifest `manifest_digest` is in the store (its config and
    /// layers must be too), tagged with every tagged reference in `refs`. A tag that named
    /// another image moves here (the other image stays, untagged, as docker does). With
    /// `repo_digests`, `name@manifest_digest` is recorded for each reference's repository.
    pub fn add_image(
        &self,
        manifest_digest: &Digest,
        refs: &[Reference],
        repo_digests: bool,
    ) -> Result<ImageRecord, StoreError> {
        self.add_record(self.build_record(manifest_digest)?, refs, repo_digests)
    }

    /// Adds the image a build step made (manifest and blobs stored) on `parent`, found again
    /// by [`Store::built`] with `key`.
    pub fn add_built(
        &self,
        manifest_digest: &Digest,
        refs: &[Reference],
        parent: Option<Digest>,
        key: String,
    ) -> Result<ImageRecord, StoreError> {
        let mut rec = self.build_record(manifest_digest)?;
        rec.parent = parent;
        rec.build_key = Some(key);
        self.add_record(rec, refs, false)
    }

    /// The image a build step with `key` made on `parent` (`None`: on no image), if it is
    /// still here: the build cache.
    pub fn built(
        &self,
        parent: Option<&Digest>,
        key: &str,
    ) -> Result<Option<ImageRecord>, StoreError> {
        Ok(self
            .read_db()?
            .images
            .into_values()
            .find(|r| r.parent.as_ref() == parent && r.build_key.as_deref() == Some(key)))
    }

    fn add_record(
        &self,
        mut rec: ImageRecord,
        refs: &[Reference],
        repo_digests: bool,
    ) -> Result<ImageRecord, StoreError> {
        let manifest_digest = &rec.manifest_digest.clone();
        let tags: Vec<String> = refs
            .iter()
            .filter_map(|r| r.tag().map(|t| r.with_tag(t).map(|r| r.to_string())))
            .collect::<Result<_, _>>()?;
        let digests: Vec<String> = if repo_digests {
            refs.iter()
                .map(|r| r.with_digest(manifest_digest.clone()).to_string())
                .collect()
        } else {
            Vec::new()
        };
        self.update(|db| {
            // Checked again under the lock: a concurrent remove may have collected a blob.
            if let Some(missing) = rec.blobs().find(|d| !self.has_blob(d)) {
                return Err(StoreError::MissingBlob(missing.clone()));
            }
            for t in &tags {
                drop_tag(db, t);
            }
            if let Some(old) = db.images.get(&rec.id) {
                rec.references = old.references.clone();
                rec.repo_digests = old.repo_digests.clone();
                rec.added = old.added.clone();
                rec.parent = rec.parent.take().or_else(|| old.parent.clone());
                rec.build_key = rec.build_key.take().or_else(|| old.build_key.clone());
            }
            merge(&mut rec.references, tags.iter().cloned());
            merge(&mut rec.repo_digests, digests.iter().cloned());
            db.images.insert(rec.id.clone(), rec.clone());
            Ok(rec.clone())
        })
    }

    fn build_record(&self, manifest_digest: &Digest) -> Result<ImageRecord, StoreError> {
        let bytes = self.read_blob(manifest_digest)?;
        let m = manifest::parse_manifest(&bytes)
            .map_err(|e| StoreError::Manifest(manifest_digest.clone(), e))?;
        let bad = |reason: String| StoreError::BadImage {
            image: manifest_digest.to_string(),
            reason,
        };
        let cfg_bytes = self.read_blob(&m.config.digest)?;
        let config: ImageConfig = serde_json::from_slice(&cfg_bytes)
            .map_err(|e| StoreError::Config(m.config.digest.clone(), e))?;
        if config.rootfs.diff_ids.len() != m.layers.len() {
            return Err(bad(format!(
                "manifest has {} layers but the config lists {} diff_ids",
                m.layers.len(),
                config.rootfs.diff_ids.len()
            )));
        }
        let mut layers = Vec::new();
        for (l, diff_id) in m.layers.iter().zip(&config.rootfs.diff_ids) {
            if !manifest::is_layer_media_type(&l.media_type) {
                return Err(bad(format!(
                    "unsupported layer media type {:?}",
                    l.media_type
                )));
            }
            if !self.has_blob(&l.digest) {
                return Err(StoreError::MissingBlob(l.digest.clone()));
            }
            layers.push(LayerRecord {
                digest: l.digest.clone(),
                media_type: l.media_type.clone(),
                size: l.size,
                diff_id: diff_id.clone(),
            });
        }
        Ok(ImageRecord {
            id: m.config.digest.clone(),
            references: Vec::new(),
            repo_digests: Vec::new(),
            manifest_digest: manifest_digest.clone(),
            manifest_media_type: m.media_type.unwrap_or_else(|| OCI_MANIFEST.to_owned()),
            created: config.created.clone(),
            size: layers.iter().map(|l| l.size).sum(),
            layers,
            config,
            added: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
            parent: None,
            build_key: None,
        })
    }

    /// Every image, newest first.
    pub fn list(&self) -> Result<Vec<ImageRecord>, StoreError> {
        let mut v: Vec<ImageRecord> = self.read_db()?.images.into_values().collect();
        v.sort_by(|a, b| {
            let key = |r: &ImageRecord| r.created.clone().unwrap_or_default();
            key(b).cmp(&key(a)).then_with(|| a.id.cmp(&b.id))
        });
        Ok(v)
    }

    /// Finds an image by `name[:tag]`, `name@digest`, `sha256:<id>` or an unambiguous ID
    /// prefix, as docker does.
    pub fn resolve(&self, query: &str) -> Result<ImageRecord, StoreError> {
        let db = self.read_db()?;
        find(&db, query).cloned()
    }

    /// Adds the tag `dst` to the image `src` names.
    pub fn tag(&self, src: &str, dst: &Reference) -> Result<ImageRecord, StoreError> {
        let tag = dst.with_tag(dst.tag().unwrap_or("latest"))?.to_string();
        self.update(|db| {
            let id = find(db, src)?.id.clone();
            drop_tag(db, &tag);
            let rec = db
                .images
                .get_mut(&id)
                .ok_or_else(|| StoreError::NoSuchImage(src.to_owned()))?;
            merge(&mut rec.references, [tag.clone()]);
            Ok(rec.clone())
        })
    }

    /// `rmi`: removes the reference `query` names; the image itself goes when that was its
    /// last reference, or when `query` is an ID (which needs `force` if the image has several
    /// tags). Images a container uses (`in_use`) are refused unless `force`.
    pub fn remove_image(
        &self,
        query: &str,
        force: bool,
        in_use: &HashSet<Digest>,
    ) -> Result<Vec<RemoveEvent>, StoreError> {
        let mut events = Vec::new();
        let removed = self.update(|db| {
            let rec = find(db, query)?.clone();
            let by_name = matches_name(&rec, query);
            let names = rec.references.len() + rec.repo_digests.len();
            if in_use.contains(&rec.id) && !force && (!by_name || names <= 1) {
                return Err(StoreError::Conflict(format!(
                    "unable to remove image {query} (must force): a container is using image {}",
                    rec.id.short()
                )));
            }
            if let Some(name) = by_name.then(|| name_of(&rec, query)).flatten() {
                if names > 1 {
                    untag(db, &rec.id, &name, &mut events);
                    return Ok(None);
                }
            } else if rec.references.len() > 1 && !force {
                return Err(StoreError::Conflict(format!(
                    "unable to delete {} (must be forced) - image is referenced in multiple repositories",
                    rec.id.short()
                )));
            }
            for n in rec.references.iter().chain(&rec.repo_digests) {
                events.push(RemoveEvent::Untagged(familiar(n)));
            }
            db.images.remove(&rec.id);
            events.push(RemoveEvent::Deleted(rec.id.clone()));
            let mut gone = vec![rec.clone()];
            remove_parents(db, &rec, in_use, &mut gone, &mut events);
            Ok(Some((gone, needed_blobs(db))))
        })?;
        if let Some((gone, needed)) = removed {
            for rec in gone {
                self.collect_blobs(rec.blobs(), &needed);
            }
        }
        Ok(events)
    }

    /// Removes dangling images (no tags), or with `all` every image no container uses, and
    /// their blobs. Returns what was removed and the bytes freed.
    pub fn prune(
        &self,
        all: bool,
        in_use: &HashSet<Digest>,
    ) -> Result<(Vec<RemoveEvent>, u64), StoreError> {
        let mut events = Vec::new();
        let (gone, needed) = self.update(|db| {
            // A build's intermediate images are not dangling while an image is built on them.
            let parents: HashSet<&Digest> = db
                .images
                .values()
                .filter_map(|r| r.parent.as_ref())
                .collect();
            let victims: Vec<ImageRecord> = db
                .images
                .values()
                .filter(|r| {
                    !in_use.contains(&r.id)
                        && (all || (r.references.is_empty() && !parents.contains(&r.id)))
                })
                .cloned()
                .collect();
            for r in &victims {
                for n in r.references.iter().chain(&r.repo_digests) {
                    events.push(RemoveEvent::Untagged(familiar(n)));
                }
                db.images.remove(&r.id);
                events.push(RemoveEvent::Deleted(r.id.clone()));
            }
            Ok((victims, needed_blobs(db)))
        })?;
        let freed = gone
            .iter()
            .map(|r| self.collect_blobs(r.blobs(), &needed))
            .sum();
        Ok((events, freed))
    }

    /// Deletes the blobs in `candidates` that are not in `needed`; returns bytes freed.
    fn collect_blobs<'a>(
        &self,
        candidates: impl Iterator<Item = &'a Digest>,
        needed: &BTreeSet<Digest>,
    ) -> u64 {
        let mut freed = 0;
        for d in candidates.filter(|d| !needed.contains(*d)) {
            let p = self.blob_path(d);
            let len = fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
            if fs::remove_file(&p).is_ok() {
                freed += len;
            }
        }
        freed
    }

    /// Deletes those of `candidates` that no image needs (blobs a failed or partial load or
    /// import stored). Returns bytes freed.
    pub fn remove_unreferenced(&self, candidates: &[Digest]) -> Result<u64, StoreError> {
        let _lock = self.lock()?;
        let needed = needed_blobs(&self.read_db()?);
        Ok(self.collect_blobs(candidates.iter(), &needed))
    }

    /// The diff_ids of every layer of every image (for collecting layer disks).
    pub fn diff_ids_in_use(&self) -> Result<BTreeSet<Digest>, StoreError> {
        Ok(self
            .read_db()?
            .images
            .values()
            .flat_map(|r| r.layers.iter().map(|l| l.diff_id.clone()))
            .collect())
    }
}

fn needed_blobs(db: &Db) -> BTreeSet<Digest> {
    db.images
        .values()
        .flat_map(|r| r.blobs().cloned().collect::<Vec<_>>())
        .collect()
}

fn merge(into: &mut Vec<String>, add: impl IntoIterator<Item = String>) {
    for a in add {
        if !into.contains(&a) {
            into.push(a);
        }
    }
    into.sort();
}

/// Removes the tag `full` from whichever image has it.
fn drop_tag(db: &mut Db, full: &str) {
    for r in db.images.values_mut() {
        r.references.retain(|t| t != full);
    }
}

fn untag(db: &mut Db, id: &Digest, name: &str, events: &mut Vec<RemoveEvent>) {
    if let Some(r) = db.images.get_mut(id) {
        r.references.retain(|t| t != name);
        r.repo_digests.retain(|t| t != name);
    }
    events.push(RemoveEvent::Untagged(familiar(name)));
}

fn familiar(full: &str) -> String {
    Reference::parse(full).map_or_else(|_| full.to_owned(), |r| r.familiar())
}

/// The stored tag or repo digest `query` names, if it is a name rather than an ID.
fn name_of(rec: &ImageRecord, query: &str) -> Option<String> {
    let full = Reference::parse(query).ok()?.to_string();
    rec.references
        .iter()
        .chain(&rec.repo_digests)
        .find(|n| **n == full)
        .cloned()
}

fn matches_name(rec: &ImageRecord, query: &str) -> bool {
    name_of(rec, query).is_some()
}

/// docker's lookup order: a name (tag or repo digest), then a full ID, then an ID prefix.
fn find<'a>(db: &'a Db, query: &str) -> Result<&'a ImageRecord, StoreError> {
    if let Some(r) = db.images.values().find(|r| matches_name(r, query)) {
        return Ok(r);
    }
    let hex = query.strip_prefix("sha256:").unwrap_or(query);
    let is_hex = !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit());
    if is_hex {
        let hex = hex.to_ascii_lowercase();
        let mut hits = db.images.values().filter(|r| r.id.hex().starts_with(&hex));
        if let Some(first) = hits.next() {
            if hits.next().is_some() {
                return Err(StoreError::Ambiguous(query.to_owned()));
            }
            return Ok(first);
        }
    }
    Err(StoreError::NoSuchImage(query.to_owned()))
}

/// As docker: removing a built image also removes the build's intermediate images it stood
/// on, up the chain while each is untagged, unused and the parent of nothing else.
fn remove_parents(
    db: &mut Db,
    rec: &ImageRecord,
    in_use: &HashSet<Digest>,
    gone: &mut Vec<ImageRecord>,
    events: &mut Vec<RemoveEvent>,
) {
    let mut next = rec.parent.clone();
    while let Some(id) = next {
        let Some(parent) = db.images.get(&id) else {
            return;
        };
        let has_children = db.images.values().any(|r| r.parent.as_ref() == Some(&id));
        let keep = !parent.references.is_empty()
            || !parent.repo_digests.is_empty()
            || parent.build_key.is_none()
            || in_use.contains(&id)
            || has_children;
        if keep {
            return;
        }
        next = parent.parent.clone();
        if let Some(p) = db.images.remove(&id) {
            events.push(RemoveEvent::Deleted(p.id.clone()));
            gone.push(p);
        }
    }
}
