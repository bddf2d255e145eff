//! Volumes and bind mounts, the same for both isolations: docker's `-v`, `--mount`,
//! `--volumes-from` and image `VOLUME`s parsed into [`Mount`]s (`parse`), resolved when
//! a container is created (`resolve`: named volumes made on first use, anonymous ones
//! made with random names, bind sources checked and made canonical), and the volume
//! store behind `husk volume` (`store`). At start the sandbox hands the agent each
//! mount's host directory (process isolation: a bind mount) or its place in the
//! container's shared directory (vm isolation: virtio-fs, `sandbox::share`).

mod parse;
mod resolve;
mod store;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use parse::{MountFlag, ParseError, parse_mount, parse_volume, parse_volumes_from};
pub use resolve::Source;
pub use resolve::{MountRequest, release_anonymous, resolve, undo};
pub use store::{Volume, VolumeStore};

/// What a mount's source is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A host path.
    Bind,
    /// A husk volume.
    Volume,
}

impl Kind {
    /// docker's word.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Bind => "bind",
            Kind::Volume => "volume",
        }
    }
}

/// One resolved mount of a container (kept in its `HostConfig`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// Bind or volume.
    pub kind: Kind,
    /// The canonical host path (bind) or the volume's name.
    pub source: String,
    /// Absolute path in the container.
    pub target: String,
    /// Mounted read-only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
    /// An anonymous volume (`-v /path`, image `VOLUME`): `rm -v` removes it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub anonymous: bool,
    /// `nocopy`: an empty volume is not filled from the image.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_copy: bool,
}

impl Mount {
    /// The host path whose content the container sees.
    pub fn host_path(&self, store: &VolumeStore) -> PathBuf {
        match self.kind {
            Kind::Bind => PathBuf::from(&self.source),
            Kind::Volume => store.data_dir(&self.source),
        }
    }

    /// docker's `Mounts` entry of `inspect`.
    pub fn inspect(&self, store: &VolumeStore) -> serde_json::Value {
        let source = self.host_path(store).display().to_string();
        let mut m = serde_json::json!({
            "Type": self.kind.as_str(),
            "Source": source,
            "Destination": self.target,
            "Mode": "",
            "RW": !self.read_only,
            "Propagation": match self.kind { Kind::Bind => "rprivate", Kind::Volume => "" },
        });
        if self.kind == Kind::Volume {
            m["Name"] = self.source.clone().into();
            m["Driver"] = "local".into();
            m["Mode"] = "z".into();
        }
        m
    }
}

/// Errors resolving or storing volumes, in docker's words where it has them.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// A mount flag is wrong.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// A bind source that does not exist.
    #[error("invalid mount config for type \"bind\": bind source path does not exist: {0}")]
    NoSource(String),
    /// Two mounts on one path.
    #[error("Duplicate mount point: {0}")]
    Duplicate(String),
    /// No such volume.
    #[error("get {0}: no such volume")]
    NotFound(String),
    /// A volume that containers use.
    #[error("remove {0}: volume is in use - [{users}]", users = .1.join(", "))]
    InUse(String, Vec<String>),
    /// `--volumes-from` a container that does not exist.
    #[error("No such container: {0}")]
    NoContainer(String),
    /// The store could not be read or written.
    #[error("{0}")]
    Io(String, #[source] std::io::Error),
    /// A volume's record is damaged.
    #[error("volume record {0} is damaged")]
    Corrupt(PathBuf, #[source] serde_json::Error),
}
