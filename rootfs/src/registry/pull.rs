//! Pulling an image into the content store: resolve the reference to a manifest (choosing
//! linux/amd64 from an index or manifest list), fetch the config and the layers (several at
//! once, skipping blobs the store has), then store the manifest and record the image.

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::client::{Client, ClientError};
use super::credentials::{self, CredentialsError};
use super::download::{self, DownloadError, Outcome};
use super::progress::{Progress, Silent};
use super::transport::{Transport, TransportError};
use crate::digest::Digest;
use crate::reference::Reference;
use crate::store::manifest::{self, Descriptor, Manifest, ManifestError, Parsed};
use crate::store::{ImageRecord, Store, StoreError};

/// Largest image config accepted.
const MAX_CONFIG: u64 = 64 << 20;
/// Blobs downloaded at once by default (docker's `max-concurrent-downloads`).
pub const DEFAULT_PARALLEL: usize = 3;

/// Errors pulling an image; each names the image (and the layer, where one is at fault).
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// Plain-HTTP policy or daemon.json problems.
    #[error("registry settings")]
    Transport(#[from] TransportError),
    /// The credentials files could not be read.
    #[error("reading registry credentials")]
    Credentials(#[from] CredentialsError),
    /// Talking to the registry failed.
    #[error("pulling {image}")]
    Registry {
        /// The image.
        image: String,
        /// Why.
        #[source]
        source: ClientError,
    },
    /// The manifest or index is unusable.
    #[error("pulling {image}: manifest {digest}")]
    Manifest {
        /// The image.
        image: String,
        /// The document.
        digest: Digest,
        /// Why.
        #[source]
        source: ManifestError,
    },
    /// The manifest is well-formed but unacceptable.
    #[error("pulling {image}: {reason}")]
    Invalid {
        /// The image.
        image: String,
        /// What is wrong.
        reason: String,
    },
    /// A blob failed to download or verify.
    #[error("pulling {image}: {what} {digest}")]
    Blob {
        /// The image.
        image: String,
        /// `layer` or `config`.
        what: &'static str,
        /// The blob.
        digest: Digest,
        /// Why.
        #[source]
        source: Box<DownloadError>,
    },
    /// The store refused the image.
    #[error("pulling {image}")]
    Store {
        /// The image.
        image: String,
        /// Why.
        #[source]
        source: StoreError,
    },
}

/// How to pull.
#[derive(Clone, Debug)]
pub struct PullOptions {
    /// Registries (`host[:port]` or `host`) that may be spoken to over plain HTTP, on top
    /// of loopback ones and `<root>/daemon.json`'s `insecure-registries`.
    pub insecure_registries: Vec<String>,
    /// Blobs downloaded at once.
    pub parallel: usize,
}

impl Default for PullOptions {
    fn default() -> Self {
        Self {
            insecure_registries: Vec::new(),
            parallel: DEFAULT_PARALLEL,
        }
    }
}

/// What a pull did.
#[derive(Debug)]
pub struct PullReport {
    /// The image as recorded in the store.
    pub image: ImageRecord,
    /// The digest the reference resolved to (the index's, for a multi-platform image).
    pub digest: Digest,
    /// Each layer and what fetching it did, bottom first.
    pub layers: Vec<(Digest, Outcome)>,
    /// Whether the store already had this image under this reference (nothing was
    /// downloaded and nothing changed).
    pub up_to_date: bool,
}

impl PullReport {
    /// Bytes that came over the network for layers.
    pub fn downloaded_bytes(&self) -> u64 {
        self.layers
            .iter()
            .map(|(_, o)| match o {
                Outcome::Downloaded { bytes, .. } => *bytes,
                Outcome::AlreadyExists => 0,
            })
            .sum()
    }
}

/// Pulls `reference` into the store of the state directory `root`.
pub fn pull(
    root: &Path,
    reference: &Reference,
    opts: &PullOptions,
    progress: &dyn Progress,
) -> Result<PullReport, PullError> {
    let image = reference.familiar();
    let store = Store::open(root).map_err(|source| PullError::Store {
        image: image.clone(),
        source,
    })?;
    let transport = Transport::new(root, &opts.insecure_registries)?;
    let creds = credentials::lookup(root, reference.registry())?;
    let reg_err = |source| PullError::Registry {
        image: image.clone(),
        source,
    };
    let client = Client::connect(
        &transport,
        reference.registry(),
        Some(reference.repository()),
        creds,
    )
    .map_err(reg_err)?;
    let before = store.resolve(&reference.to_string()).ok();
    let tag_or_digest = match reference.digest() {
        Some(d) => d.to_string(),
        None => reference.tag().unwrap_or("latest").to_owned(),
    };
    progress.message(&format!(
        "{tag_or_digest}: Pulling from {}",
        reference.repository()
    ));
    let (top, m) = resolve_manifest(&client, &tag_or_digest, &image)?;
    let manifest: Manifest =
        parse_image_manifest(&m.bytes, m.content_type.as_deref(), &image, &m.digest)?;
    check_manifest(&manifest, &image)?;
    let blob_err = |what, digest: &Digest| {
        let image = image.clone();
        let digest = digest.clone();
        move |source| PullError::Blob {
            image,
            what,
            digest,
            source: Box::new(source),
        }
    };
    let cfg = &manifest.config;
    let cfg_outcome = download::fetch_blob(&client, &store, &cfg.digest, cfg.size, &Silent)
        .map_err(blob_err("config", &cfg.digest))?;
    let layers = fetch_layers(&client, &store, &manifest.layers, opts.parallel, progress)
        .map_err(|(d, e)| blob_err("layer", &d)(e))?;
    let store_err = |source| PullError::Store {
        image: image.clone(),
        source,
    };
    store
        .put_bytes(Some(&m.digest), &m.bytes)
        .map_err(store_err)?;
    let record = store
        .add_image(&m.digest, std::slice::from_ref(reference), true)
        .map_err(store_err)?;
    // Integration point: build the layer disks here once rootfs::layer offers it.
    let nothing_new = cfg_outcome == Outcome::AlreadyExists
        && layers.iter().all(|(_, o)| *o == Outcome::AlreadyExists);
    let up_to_date = nothing_new && before.is_some_and(|b| b.manifest_digest == m.digest);
    Ok(PullReport {
        image: record,
        digest: top,
        layers,
        up_to_date,
    })
}

/// Fetches the manifest for `reference`; an index or list is resolved to its linux/amd64
/// manifest. Returns the digest `reference` resolved to and the image manifest.
fn resolve_manifest(
    client: &Client,
    reference: &str,
    image: &str,
) -> Result<(Digest, super::client::FetchedManifest), PullError> {
    let reg_err = |source| PullError::Registry {
        image: image.to_owned(),
        source,
    };
    let first = client.manifest(reference, image).map_err(reg_err)?;
    let parsed =
        manifest::parse(&first.bytes, first.content_type.as_deref()).map_err(|source| {
            PullError::Manifest {
                image: image.to_owned(),
                digest: first.digest.clone(),
                source,
            }
        })?;
    let Parsed::Index(index) = parsed else {
        return Ok((first.digest.clone(), first));
    };
    let entry = manifest::select_platform(&index).map_err(|source| PullError::Manifest {
        image: image.to_owned(),
        digest: first.digest.clone(),
        source,
    })?;
    let m = client
        .manifest(&entry.digest.to_string(), image)
        .map_err(reg_err)?;
    Ok((first.digest, m))
}

fn parse_image_manifest(
    bytes: &[u8],
    content_type: Option<&str>,
    image: &str,
    digest: &Digest,
) -> Result<Manifest, PullError> {
    let err = |source| PullError::Manifest {
        image: image.to_owned(),
        digest: digest.clone(),
        source,
    };
    match manifest::parse(bytes, content_type).map_err(err)? {
        Parsed::Manifest(m) => Ok(m),
        Parsed::Index(_) => Err(PullError::Invalid {
            image: image.to_owned(),
            reason: format!("index {digest} points at another index"),
        }),
    }
}

fn check_manifest(m: &Manifest, image: &str) -> Result<(), PullError> {
    let invalid = |reason: String| PullError::Invalid {
        image: image.to_owned(),
        reason,
    };
    if m.config.size > MAX_CONFIG {
        return Err(invalid(format!(
            "config {} is {} bytes, more than the 64 MiB husk accepts",
            m.config.digest, m.config.size
        )));
    }
    for l in &m.layers {
        if !manifest::is_layer_media_type(&l.media_type) {
            return Err(invalid(format!(
                "layer {} has unsupported media type {:?}",
                l.digest, l.media_type
            )));
        }
    }
    Ok(())
}

type LayerResult = Result<Vec<(Digest, Outcome)>, (Digest, DownloadError)>;

/// Downloads the layers, `parallel` at a time; stops handing out work after a failure.
fn fetch_layers(
    client: &Client,
    store: &Store,
    layers: &[Descriptor],
    parallel: usize,
    progress: &dyn Progress,
) -> LayerResult {
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let results: Mutex<Vec<Option<Result<Outcome, DownloadError>>>> =
        Mutex::new((0..layers.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..parallel.clamp(1, layers.len().max(1)) {
            s.spawn(|| {
                while !failed.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(l) = layers.get(i) else { break };
                    let r = download::fetch_blob(client, store, &l.digest, l.size, progress);
                    match &r {
                        Ok(o) => progress.finish(l.digest.short(), finish_word(*o)),
                        Err(_) => failed.store(true, Ordering::Relaxed),
                    }
                    results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r);
                }
            });
        }
    });
    let results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    let mut out = Vec::new();
    let mut first_err = None;
    for (l, r) in layers.iter().zip(results) {
        match r {
            Some(Ok(o)) => out.push((l.digest.clone(), o)),
            Some(Err(e)) if first_err.is_none() => first_err = Some((l.digest.clone(), e)),
            _ => {}
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

fn finish_word(o: Outcome) -> &'static str {
    match o {
        Outcome::AlreadyExists => "Already exists",
        Outcome::Downloaded { .. } => "Pull complete",
    }
}
