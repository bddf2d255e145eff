//! `Put`: a tar from the host extracted into the container. A user's own tar (`cp -
//! CONTAINER:DIR`) goes as is into an existing directory; a copy the host made has one root
//! entry, placed by docker's `cp` rules (`agent_proto::archive::place`). Paths with `..` or
//! absolute names are refused; everything lands inside the container's own root, which is
//! the only root this process has.

use std::fs;
use std::io::Read;
use std::path::Path;

use agent_proto::archive::{self, CopyError, CopySource, DestKind, Placement};

use super::{ArchiveError, io_err};

pub fn put(
    dest: &str,
    copy: Option<CopySource>,
    keep_owner: bool,
    input: impl Read,
) -> Result<(), ArchiveError> {
    if !dest.starts_with('/') {
        return Err(ArchiveError::Invalid(format!("{dest:?} is not absolute")));
    }
    let mut tar = tar::Archive::new(input);
    tar.set_preserve_permissions(true);
    tar.set_preserve_ownerships(keep_owner);
    tar.set_preserve_mtime(true);
    tar.set_overwrite(true);
    tar.set_unpack_xattrs(false);
    let Some(src) = copy else {
        return match kind(Path::new(dest)) {
            DestKind::Dir => tar
                .unpack(dest)
                .map_err(io_err(format!("extract into {dest}"))),
            DestKind::Other => Err(ArchiveError::NotDir(
                "extraction point is not a directory".into(),
            )),
            DestKind::Missing => Err(ArchiveError::NotFound(dest.to_owned())),
        };
    };
    let placement = archive::place(dest, src, kind).map_err(copy_error)?;
    extract_copy(&mut tar, &placement)
}

fn kind(path: &Path) -> DestKind {
    match fs::metadata(path) {
        Ok(m) if m.is_dir() => DestKind::Dir,
        Ok(_) => DestKind::Other,
        Err(_) => DestKind::Missing,
    }
}

fn copy_error(e: CopyError) -> ArchiveError {
    match e {
        CopyError::NotFound(p) => ArchiveError::NotFound(p),
        CopyError::NotDir(m) => ArchiveError::NotDir(m),
        CopyError::BadEntry(m) => ArchiveError::Invalid(m),
    }
}

fn extract_copy(
    tar: &mut tar::Archive<impl Read>,
    placement: &Placement,
) -> Result<(), ArchiveError> {
    let mut root: Option<String> = None;
    let entries = tar.entries().map_err(io_err("read the archive"))?;
    for entry in entries {
        let mut entry = entry.map_err(io_err("read the archive"))?;
        let name = entry
            .path()
            .map_err(io_err("read the archive"))?
            .into_owned();
        let Some(target) = archive::rebase(&name, &mut root, placement).map_err(copy_error)? else {
            continue;
        };
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(io_err(format!("create {}", parent.display())))?;
        }
        if entry.header().entry_type().is_hard_link() {
            let link = entry
                .link_name()
                .map_err(io_err("read the archive"))?
                .map(|l| l.into_owned())
                .unwrap_or_default();
            let from = archive::rebase(&link, &mut root, placement)
                .map_err(copy_error)?
                .ok_or_else(|| {
                    ArchiveError::Invalid(format!("bad hard link {}", name.display()))
                })?;
            let _ = fs::remove_file(&target);
            fs::hard_link(&from, &target).map_err(io_err(format!("link {}", target.display())))?;
            continue;
        }
        entry
            .unpack(&target)
            .map_err(io_err(format!("create {}", target.display())))?;
    }
    Ok(())
}
