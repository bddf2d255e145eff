//! Hardlinks into lower layers. A layer may hardlink a file that only a lower layer has
//! (docker and containerd allow it: applied on a mounted overlay, `link(2)` copies the lower
//! file up and links the copy). husk does the same offline: it finds the file in the lower
//! layers' tars (topmost first, honouring whiteouts and opaque directories), writes a copy at
//! the target's path in this layer and links the new names to that copy, so the merged view
//! shows exactly what the overlay-applied layer shows.

use std::fs::File;
use std::io;
use std::path::PathBuf;

use super::entry::{Kind, Meta};
use super::extract::{ExtractError, Stage};
use super::path::{RelPath, Whiteout, whiteout};
use super::stream::LayerStream;
use crate::digest::Digest;

/// A layer below the one being built: its blob and diff_id.
#[derive(Debug, Clone)]
pub struct LowerLayer {
    /// The (possibly compressed) layer tar.
    pub blob: PathBuf,
    /// sha256 of the uncompressed tar.
    pub diff_id: Digest,
}

/// How many hardlink hops within lower layers are followed.
const MAX_HOPS: usize = 16;

/// A file found in a lower layer, its data (if a regular file) spooled next to the tree.
struct Found {
    meta: Meta,
    spool: Option<PathBuf>,
}

/// Resolves the pending hardlinks of `stage` against `lowers` (bottom first).
pub fn resolve_pending(
    stage: &mut Stage,
    lowers: &[LowerLayer],
    pending: Vec<(RelPath, RelPath)>,
) -> Result<(), ExtractError> {
    let mut groups: Vec<(RelPath, Vec<RelPath>)> = Vec::new();
    for (target, link) in pending {
        match groups.iter_mut().find(|(t, _)| *t == target) {
            Some((_, links)) => links.push(link),
            None => groups.push((target, vec![link])),
        }
    }
    for (n, (target, links)) in groups.into_iter().enumerate() {
        let missing = || ExtractError::LinkMissing(links[0].clone(), target.clone());
        let found = find(stage, lowers, &target, n, 0)?.ok_or_else(missing)?;
        if found.meta.kind == Kind::Dir {
            return Err(ExtractError::LinkToDir(links[0].clone(), target.clone()));
        }
        // A later entry of this layer may have replaced the target: then the copy of the
        // lower file lives at the first link name only.
        let (home, rest) = if stage.exists(&target)? {
            (links[0].clone(), &links[1..])
        } else {
            (target.clone(), &links[..])
        };
        let mut data: Box<dyn io::Read> = match &found.spool {
            Some(p) => Box::new(File::open(p).map_err(ExtractError::Read)?),
            None => Box::new(io::empty()),
        };
        stage.apply(&home, &found.meta, &mut data)?;
        let link_meta = Meta {
            kind: Kind::Link(home.clone()),
            ..found.meta
        };
        for link in rest {
            stage.apply(link, &link_meta, &mut io::empty())?;
        }
    }
    Ok(())
}

/// Finds what the merged view of `lowers` has at `target`.
fn find(
    stage: &Stage,
    lowers: &[LowerLayer],
    target: &RelPath,
    n: usize,
    hops: usize,
) -> Result<Option<Found>, ExtractError> {
    if hops > MAX_HOPS {
        return Ok(None);
    }
    for (k, layer) in lowers.iter().enumerate().rev() {
        let (found, hidden) = scan(stage, layer, target, n)?;
        match found {
            Some(Found {
                meta:
                    Meta {
                        kind: Kind::Link(next),
                        ..
                    },
                ..
            }) => return find(stage, &lowers[..=k], &next, n, hops + 1),
            Some(f) => return Ok(Some(f)),
            None if hidden => return Ok(None),
            None => {}
        }
    }
    Ok(None)
}

/// Scans one lower layer for `target`: the last entry at that path (data spooled), and
/// whether the layer hides lower layers' `target` (whiteout, opaque or non-directory parent).
fn scan(
    stage: &Stage,
    layer: &LowerLayer,
    target: &RelPath,
    n: usize,
) -> Result<(Option<Found>, bool), ExtractError> {
    let stream = LayerStream::open(&layer.blob, stage.limits())
        .map_err(|e| ExtractError::Read(io::Error::other(e)))?;
    let mut archive = tar::Archive::new(stream);
    let (mut found, mut hidden) = (None, false);
    for entry in archive.entries().map_err(ExtractError::Read)? {
        let mut entry = entry.map_err(ExtractError::Read)?;
        let Some((path, meta)) = Meta::from_entry(&mut entry)? else {
            continue;
        };
        if let Some(wh) = whiteout(path.name()) {
            let dir = path.parent();
            hidden |= match wh {
                Whiteout::Opaque => dir.is_ancestor_of(target),
                Whiteout::Remove(name) => {
                    let gone = dir.join(name);
                    gone == *target || gone.is_ancestor_of(target)
                }
                Whiteout::Ignore => false,
            };
        } else if path == *target {
            let spool = if meta.kind == Kind::File {
                let p = stage.spool_path(n);
                let mut f = File::create(&p).map_err(ExtractError::Read)?;
                io::copy(&mut entry, &mut f).map_err(ExtractError::Read)?;
                Some(p)
            } else {
                None
            };
            found = Some(Found { meta, spool });
        } else if path.is_ancestor_of(target) && meta.kind != Kind::Dir {
            hidden = true;
        }
    }
    Ok((found, hidden))
}
