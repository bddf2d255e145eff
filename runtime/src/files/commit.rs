//! docker's `commit`: the container's changes (the archive tool's `Layer`, read in the
//! container while it runs, or in a sandbox of its own when it does not) become a new image
//! on top of the container's image, with the container's config as the image's defaults.

use std::path::Path;

use agent_proto::archive::ArchiveOp;
use rootfs::digest::Digest;
use rootfs::reference::Reference;
use rootfs::store::ImageRecord;
use rootfs::store::config::ContainerConfig as ImageDefaults;

use super::{FilesError, Session};
use crate::container::{RunConfig, Store};

/// Options of `commit`.
#[derive(Debug, Default, Clone)]
pub struct CommitOptions {
    /// The new image's tag.
    pub reference: Option<Reference>,
    /// `-m`.
    pub message: Option<String>,
    /// `-a`.
    pub author: Option<String>,
    /// `-c`: Dockerfile instructions applied to the config.
    pub changes: Vec<String>,
}

/// Commits container `query`; returns the new image.
pub fn commit(root: &Path, query: &str, opts: &CommitOptions) -> Result<ImageRecord, FilesError> {
    let containers = Store::open(root)?;
    let config = containers.config(&containers.resolve(query)?)?;
    let images = rootfs::store::Store::open(root)?;
    let base = images.resolve(&config.image)?;
    let mut argv = vec![config.path.clone()];
    argv.extend(config.args.iter().cloned());
    let commit_opts = rootfs::archive::CommitOptions {
        config: defaults(&config.config),
        changes: opts.changes.clone(),
        message: opts.message.clone(),
        author: opts.author.clone(),
        created_by: argv.join(" "),
    };
    let layer = layer(root, query)?;
    let record =
        rootfs::archive::commit(&images, &base, layer, opts.reference.as_ref(), &commit_opts)?;
    containers.event("commit", &config, &[]);
    Ok(record)
}

/// Stores container `query`'s changes as a layer (read by the archive tool, as the layer is
/// only kept once the tool has said it is whole); returns its digest and size.
pub fn layer(root: &Path, query: &str) -> Result<(Digest, u64), FilesError> {
    let images = rootfs::store::Store::open(root)?;
    let session = Session::open(root, query)?;
    let mut ingested = None;
    let read = session.tool_reading(ArchiveOp::Layer, "/", |layer| {
        let stored = rootfs::archive::ingest_layer(&images, layer)?;
        ingested = Some(stored.0.clone());
        Ok(stored)
    });
    session.close();
    read.inspect_err(|_| {
        if let Some(d) = ingested {
            let _ = images.remove_unreferenced(std::slice::from_ref(&d));
        }
    })
}

/// The image defaults a container's config makes (docker copies them all).
fn defaults(c: &RunConfig) -> ImageDefaults {
    let some_vec = |v: &Vec<String>| Some(v.clone()).filter(|v| !v.is_empty());
    let some_str = |s: &String| Some(s.clone()).filter(|s| !s.is_empty());
    ImageDefaults {
        user: some_str(&c.user),
        env: some_vec(&c.env),
        entrypoint: some_vec(&c.entrypoint),
        cmd: some_vec(&c.cmd),
        working_dir: some_str(&c.working_dir),
        exposed_ports: Some(c.exposed_ports.clone()).filter(|p| !p.is_empty()),
        volumes: Some(c.volumes.clone()).filter(|v| !v.is_empty()),
        labels: Some(c.labels.clone()).filter(|l| !l.is_empty()),
        stop_signal: some_str(&c.stop_signal),
        healthcheck: c.healthcheck.clone(),
        ..ImageDefaults::default()
    }
}
