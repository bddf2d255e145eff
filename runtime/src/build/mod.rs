//! `husk build`: a Dockerfile and its context become an image. Each instruction makes one
//! image on top of the one before (docker's classic builder): metadata instructions only a
//! new config, RUN, COPY and ADD a layer made in a sandbox of the build's isolation (a
//! microVM by default: a Dockerfile's commands are as untrusted as any image), taken from
//! the sandbox's writable upper by the agent's archive tool exactly as `commit` takes it.
//! Every step's image is kept (untagged, with its parent) under a cache key of the parent,
//! the instruction, the build arguments it sees and the digest of the files it reads, so
//! an unchanged step is found again instead of run again.
//!
//! The Dockerfile's syntax comes from `parse-dockerfile`; what each instruction means, the
//! word expansion rules ([`words`]) and the context's rules ([`context`]) are husk's.

pub mod context;
mod copy;
mod stage;
mod step;
pub mod words;

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::{Arc, Mutex};

use rootfs::reference::Reference;
use rootfs::store::ImageRecord;

use crate::engine::{Engine, EngineError};

pub use context::{Context, ContextError, Ignore};

/// Errors of a build. Each is one line for the user, as docker words it where it can.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The Dockerfile is not one.
    #[error("dockerfile parse error: {0}")]
    Parse(String),
    /// A word of an instruction cannot be expanded.
    #[error(transparent)]
    Words(#[from] words::WordError),
    /// The context cannot be read, or a source is not in it.
    #[error(transparent)]
    Context(#[from] ContextError),
    /// A container or image verb failed.
    #[error(transparent)]
    Engine(Box<EngineError>),
    /// The step's files could not be moved in or out of its sandbox.
    #[error(transparent)]
    Files(#[from] crate::files::FilesError),
    /// The image store failed.
    #[error(transparent)]
    Store(#[from] rootfs::store::StoreError),
    /// A step's image could not be written.
    #[error(transparent)]
    Archive(#[from] rootfs::archive::ArchiveError),
    /// `--target` names no stage.
    #[error("failed to reach build target {0} in Dockerfile")]
    NoTarget(String),
    /// A RUN's command failed (docker's words).
    #[error("The command '{command}' returned a non-zero code: {code}")]
    RunFailed {
        /// The command as docker shows it.
        command: String,
        /// Its exit code.
        code: i32,
    },
    /// Something the Dockerfile asks for that husk does not do.
    #[error("{0}")]
    Unsupported(String),
    /// An instruction's arguments are wrong.
    #[error("{instruction}: {why}")]
    Invalid {
        /// The instruction.
        instruction: &'static str,
        /// What is wrong.
        why: String,
    },
    /// The build's output could not be written.
    #[error("cannot write the build output")]
    Output(#[source] io::Error),
}

impl BuildError {
    fn engine(e: EngineError) -> Self {
        Self::Engine(Box::new(e))
    }

    fn invalid(instruction: &'static str, why: impl Into<String>) -> Self {
        Self::Invalid {
            instruction,
            why: why.into(),
        }
    }

    /// Whether the build failed because of what it was given (the Dockerfile, the context,
    /// a missing image: docker's 400), not because husk failed.
    pub fn is_bad_request(&self) -> bool {
        match self {
            Self::Engine(e) => e.kind() != crate::engine::ErrorKind::Internal,
            Self::Parse(_)
            | Self::Words(_)
            | Self::NoTarget(_)
            | Self::RunFailed { .. }
            | Self::Unsupported(_)
            | Self::Invalid { .. } => true,
            Self::Context(ContextError::Io(..)) => false,
            Self::Context(_) => true,
            _ => false,
        }
    }
}

/// What a build is asked for besides its Dockerfile and context.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// `-t`: the names the result gets.
    pub tags: Vec<Reference>,
    /// `--build-arg NAME=VALUE`.
    pub build_args: BTreeMap<String, String>,
    /// `--target`: the last stage built.
    pub target: Option<String>,
    /// `--no-cache`.
    pub no_cache: bool,
    /// `--pull`: pull every FROM image even if it is here.
    pub pull: bool,
    /// `--isolation` of the steps' sandboxes (the host's default without).
    pub isolation: Option<String>,
    /// `--network` of RUN steps (docker's default, the bridge network, without).
    pub network: Option<String>,
    /// `--label`s on the result.
    pub labels: BTreeMap<String, String>,
    /// `SOURCE_DATE_EPOCH`: every timestamp of the new images and layers is at most this
    /// (seconds), so that the same inputs give the same image digest.
    pub source_date_epoch: Option<i64>,
}

/// What a build made.
#[derive(Debug, Clone)]
pub struct Built {
    /// The image (tagged as asked).
    pub image: ImageRecord,
    /// Steps found in the cache.
    pub cached: usize,
    /// Steps that ran (RUN, COPY and ADD made anew).
    pub ran: usize,
}

/// Where a build's progress goes (docker's plain `Step N/M : ...` lines and the RUN steps'
/// output), shared with the threads that relay a RUN's output.
#[derive(Clone)]
pub struct Output {
    out: Arc<Mutex<Box<dyn Write + Send>>>,
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Output")
    }
}

impl Output {
    /// Progress to `out`.
    pub fn new(out: Box<dyn Write + Send>) -> Self {
        Self {
            out: Arc::new(Mutex::new(out)),
        }
    }

    /// Writes one line.
    fn line(&self, text: &str) -> Result<(), BuildError> {
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        writeln!(out, "{text}")
            .and_then(|()| out.flush())
            .map_err(BuildError::Output)
    }

    /// A sink for a RUN's stdout or stderr.
    fn sink(&self) -> crate::agent_client::Sink {
        let out = Arc::clone(&self.out);
        crate::agent_client::sink_fn(move |bytes| {
            let mut out = out.lock().unwrap_or_else(|p| p.into_inner());
            let _ = out.write_all(bytes).and_then(|()| out.flush());
        })
    }
}

/// Builds `dockerfile` (its text) with the files of `context`; progress goes to `out`.
pub fn build(
    engine: &Engine,
    dockerfile: &str,
    context: &Context,
    opts: &BuildOptions,
    out: &Output,
) -> Result<Built, BuildError> {
    stage::Build::new(engine, dockerfile, context, opts, out)?.run()
}

/// Where the Dockerfile comes from.
#[derive(Debug, Clone)]
pub enum DockerfileSource {
    /// Its text (the CLI read it, from anywhere).
    Text(String),
    /// A path in the context (the Engine API's `dockerfile`).
    InContext(String),
}

/// The most of a Dockerfile read from a context.
const MAX_DOCKERFILE: u64 = 4 << 20;

/// Unpacks `context` (a tar) into a directory of the build's own under `<root>/builds`,
/// builds, and removes the directory whatever happens.
pub fn build_tar(
    engine: &Engine,
    context: impl io::Read,
    dockerfile: &DockerfileSource,
    opts: &BuildOptions,
    out: &Output,
) -> Result<Built, BuildError> {
    let id = crate::container::random_id().map_err(|e| BuildError::engine(e.into()))?;
    let dir = engine.root().join("builds").join(&id[..16]);
    std::fs::create_dir_all(&dir)
        .map_err(|e| ContextError::Io(format!("create {}", dir.display()), e))?;
    let _cleanup = RemoveOnDrop(dir.clone());
    context::unpack(context, &dir)?;
    let ctx = Context::new(dir);
    let text = match dockerfile {
        DockerfileSource::Text(t) => t.clone(),
        DockerfileSource::InContext(path) => read_dockerfile(&ctx, path)?,
    };
    build(engine, &text, &ctx, opts, out)
}

fn read_dockerfile(ctx: &Context, path: &str) -> Result<String, BuildError> {
    use std::io::Read as _;
    let missing = || BuildError::Unsupported(format!("Cannot locate specified Dockerfile: {path}"));
    let file = ctx.resolve(path).map_err(|_| missing())?;
    let f = std::fs::File::open(&file).map_err(|_| missing())?;
    let mut text = String::new();
    f.take(MAX_DOCKERFILE)
        .read_to_string(&mut text)
        .map_err(|e| ContextError::Io(format!("read {path}"), e))?;
    Ok(text)
}

/// Removes a build's directory when the build ends.
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
