//! The daemon's server: a unix socket (root-only: mode 0600), HTTP/1.1 with upgrades (for
//! docker's hijacked attach connections), the dispatch of every request to its endpoint,
//! and a clean exit on SIGTERM or SIGINT (containers keep running: their shims are their
//! own processes).

use std::collections::HashMap;
use std::convert::Infallible;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use runtime::engine::Engine;
use tokio::net::UnixListener;

use crate::body::Resp;
use crate::error::ApiError;
use crate::route::{self, Query};
use crate::{containers, images, objects, system};

/// Where the daemon listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// A unix socket at this path.
    Unix(PathBuf),
}

impl Listen {
    /// Parses docker's `-H`: `unix:///path` or a bare path. TCP is refused: the API gives
    /// whoever reaches it root on the host, and husk has no TLS yet.
    pub fn parse(text: &str) -> Result<Self, ServeError> {
        if let Some(path) = text.strip_prefix("unix://") {
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        if text.starts_with('/') {
            return Ok(Self::Unix(PathBuf::from(text)));
        }
        Err(ServeError::BadListen(text.to_owned()))
    }
}

/// Why the daemon could not serve.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// `-H` is not a unix socket.
    #[error(
        "cannot listen on {0:?}: husk serves the API on unix sockets only (unix:///path); TCP without TLS would give the network root"
    )]
    BadListen(String),
    /// Something else answers on the socket.
    #[error("another daemon already listens on {0}")]
    InUse(PathBuf),
    /// The path exists and is not a socket.
    #[error("{0} exists and is not a socket")]
    NotSocket(PathBuf),
    /// The socket could not be made.
    #[error("cannot listen on {0}")]
    Bind(PathBuf, #[source] std::io::Error),
    /// The async runtime could not start.
    #[error("cannot start the daemon's runtime")]
    Runtime(#[source] std::io::Error),
}

/// What every request shares: the engine, and the attaches waiting for their container
/// to start (a start then holds the workload until they are connected).
#[derive(Debug)]
pub struct Daemon {
    /// The engine.
    pub engine: Engine,
    /// Exec instances.
    pub execs: crate::exec::Execs,
    attaches: Mutex<HashMap<String, usize>>,
}

impl Daemon {
    /// Notes an attach waiting on container `id` (until [`Daemon::attach_done`]).
    pub fn attach_waiting(&self, id: &str) {
        let mut a = self.attaches.lock().unwrap_or_else(|p| p.into_inner());
        *a.entry(id.to_owned()).or_default() += 1;
    }

    /// The attach on `id` is connected (or gave up).
    pub fn attach_done(&self, id: &str) {
        let mut a = self.attaches.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = a.get_mut(id) {
            *n -= 1;
            if *n == 0 {
                a.remove(id);
            }
        }
    }

    /// Whether an attach waits on `id`.
    pub fn attach_pending(&self, id: &str) -> bool {
        let a = self.attaches.lock().unwrap_or_else(|p| p.into_inner());
        a.contains_key(id)
    }
}

/// Serves the Engine API on `listen` until SIGTERM or SIGINT.
pub fn serve(engine: Engine, listen: &Listen) -> Result<(), ServeError> {
    let Listen::Unix(path) = listen;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ServeError::Runtime)?;
    // The first pass runs before the socket exists, so that no request races with what
    // it starts (an `rm -f` of an `always` container as it comes back).
    supervise_pass(&engine, true);
    let supervisor = engine.clone();
    std::thread::Builder::new()
        .name("supervise".into())
        .spawn(move || {
            loop {
                std::thread::sleep(std::time::Duration::from_secs(1));
                supervise_pass(&supervisor, false);
            }
        })
        .map_err(ServeError::Runtime)?;
    let daemon = Arc::new(Daemon {
        engine,
        execs: crate::exec::Execs::default(),
        attaches: Mutex::default(),
    });
    let served = rt.block_on(async move {
        let (listener, ours) = match activated() {
            Some(l) => (l, false),
            None => (bind(path)?, true),
        };
        log::info!("husk daemon: serving the Engine API on {}", path.display());
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(ServeError::Runtime)?;
        loop {
            tokio::select! {
                conn = listener.accept() => match conn {
                    Ok((stream, _)) => {
                        tokio::spawn(connection(stream, Arc::clone(&daemon)));
                    }
                    Err(e) => log::warn!("accept: {e}"),
                },
                _ = term.recv() => break,
                _ = tokio::signal::ctrl_c() => break,
            }
        }
        if ours {
            let _ = std::fs::remove_file(path);
        }
        Ok(())
    });
    // Requests still running on the blocking pool (a verb waiting on a container) do not
    // hold the exit: the containers do not need the daemon, and every state file is
    // written atomically.
    rt.shutdown_timeout(std::time::Duration::from_secs(5));
    served
}

/// Applies restart policies where no shim is left (`Engine::supervise`; `at_boot`: the
/// daemon's first pass).
fn supervise_pass(engine: &Engine, at_boot: bool) {
    match engine.supervise(at_boot) {
        Ok(done) => {
            for (id, why, result) in done {
                match result {
                    Ok(()) => log::info!("restarted {id:.12} ({why:?})"),
                    Err(e) => log::warn!(
                        "cannot restart {id:.12} ({why:?}): {}",
                        agent_proto::error_chain(&e)
                    ),
                }
            }
        }
        Err(e) => log::warn!("restart policies: {}", agent_proto::error_chain(&e)),
    }
}

/// The socket systemd passed (socket activation: `LISTEN_PID` is this process and
/// `LISTEN_FDS` at least 1; the socket is fd 3), if any.
fn activated() -> Option<UnixListener> {
    let pid: u32 = std::env::var("LISTEN_PID").ok()?.parse().ok()?;
    let fds: u32 = std::env::var("LISTEN_FDS").ok()?.parse().ok()?;
    if pid != std::process::id() || fds < 1 {
        return None;
    }
    const FIRST_FD: std::os::fd::RawFd = 3;
    // SAFETY: systemd's protocol hands this process fd 3 as its listening socket; it was
    // open when the process started, so no file this process opened has that number, and
    // this runs once (only here is fd 3 taken).
    let std_listener = unsafe {
        <std::os::unix::net::UnixListener as std::os::fd::FromRawFd>::from_raw_fd(FIRST_FD)
    };
    std_listener.set_nonblocking(true).ok()?;
    UnixListener::from_std(std_listener).ok()
}

/// Binds `path`, replacing a stale socket (nothing answers) but never a live one or a file
/// that is not a socket.
fn bind(path: &Path) -> Result<UnixListener, ServeError> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(ServeError::NotSocket(path.to_owned()));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(ServeError::InUse(path.to_owned()));
        }
        std::fs::remove_file(path).map_err(|e| ServeError::Bind(path.to_owned(), e))?;
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| ServeError::Bind(path.to_owned(), e))?;
    }
    let listener = UnixListener::bind(path).map_err(|e| ServeError::Bind(path.to_owned(), e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| ServeError::Bind(path.to_owned(), e))?;
    Ok(listener)
}

async fn connection(stream: tokio::net::UnixStream, daemon: Arc<Daemon>) {
    let service = service_fn(move |req| handle(Arc::clone(&daemon), req));
    let served = http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades()
        .await;
    if let Err(e) = served {
        log::debug!("connection: {e}");
    }
}

async fn handle(daemon: Arc<Daemon>, req: Request<Incoming>) -> Result<Resp, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let mut resp = dispatch(daemon, req).await.unwrap_or_else(|e| e.response());
    log::debug!("{method} {path} -> {}", resp.status());
    let headers = resp.headers_mut();
    for (name, value) in system::SERVER_HEADERS {
        headers.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    Ok(resp)
}

async fn dispatch(daemon: Arc<Daemon>, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let uri = req.uri().clone();
    let (version, segs) = route::split(uri.path());
    if let Some(v) = version.filter(|v| route::too_new(v)) {
        return Err(ApiError::VersionTooNew(v.to_owned()));
    }
    let q = Query::parse(uri.query());
    let method = req.method().clone();
    let d = daemon;
    match (&method, segs.as_slice()) {
        (&Method::GET | &Method::HEAD, ["_ping"]) => Ok(system::ping()),
        (&Method::GET, ["version"]) => Ok(system::version()),
        (&Method::GET, ["info"]) => system::info(&d).await,
        (&Method::POST, ["containers", "create"]) => containers::create(&d, &q, req).await,
        (&Method::POST, [what @ ("containers" | "networks" | "volumes"), "prune"]) => {
            objects::prune(&d, what, &q).await
        }
        (&Method::GET, ["containers", "json"]) => containers::list(&d, &q).await,
        (&Method::GET, ["containers", id, "json"]) => containers::inspect(&d, id).await,
        (&Method::GET, ["containers", id, "logs"]) => containers::logs(&d, id, &q).await,
        (&Method::GET, ["containers", id, "top"]) => containers::top(&d, id).await,
        (&Method::GET, ["containers", id, "stats"]) => crate::stats::stats(&d, id, &q).await,
        (&Method::GET, ["containers", id, "archive"]) => {
            crate::archive::get(&d, id, &q, false).await
        }
        (&Method::HEAD, ["containers", id, "archive"]) => {
            crate::archive::get(&d, id, &q, true).await
        }
        (&Method::PUT, ["containers", id, "archive"]) => crate::archive::put(&d, id, &q, req).await,
        (&Method::GET, ["events"]) => crate::events::events(&d, &q),
        (&Method::POST, ["containers", id, "attach"]) => {
            crate::attach::attach(&d, id, &q, req).await
        }
        (&Method::POST, ["containers", id, "exec"]) => crate::exec::create(&d, id, req).await,
        (&Method::POST, ["exec", id, "start"]) => crate::exec::start(&d, id, req).await,
        (&Method::GET, ["exec", id, "json"]) => crate::exec::inspect(&d, id),
        (&Method::POST, ["exec", id, "resize"]) => crate::exec::resize(&d, id, &q),
        (&Method::POST, ["containers", id, verb]) => containers::verb(&d, id, verb, &q).await,
        (&Method::DELETE, ["containers", id]) => containers::remove(&d, id, &q).await,
        (&Method::GET, ["images", "json"]) => images::list(&d, &q).await,
        (&Method::POST, ["images", "create"]) => images::create(&d, &q).await,
        (&Method::GET, ["images", "get"]) => images::save(&d, q.all("names")).await,
        (&Method::POST, ["images", "load"]) => images::load(&d, req).await,
        (&Method::POST, ["images", "prune"]) => images::prune(&d, &q).await,
        (&Method::POST, ["build"]) => crate::build::build(&d, &q, req).await,
        (&Method::GET, ["images", name @ .., "get"]) if !name.is_empty() => {
            images::save(&d, vec![name.join("/")]).await
        }
        (&Method::GET, ["images", name @ .., "json"]) if !name.is_empty() => {
            images::inspect(&d, &name.join("/")).await
        }
        (&Method::GET, ["images", name @ .., "history"]) if !name.is_empty() => {
            images::history(&d, &name.join("/")).await
        }
        (&Method::GET, ["system", "df"]) => images::disk_usage(&d).await,
        (&Method::POST, ["images", name @ .., "tag"]) if !name.is_empty() => {
            images::tag(&d, &name.join("/"), &q).await
        }
        (&Method::DELETE, ["images", name @ ..]) if !name.is_empty() => {
            images::remove(&d, &name.join("/"), &q).await
        }
        (&Method::GET, ["networks"]) => objects::networks(&d, &q).await,
        (&Method::POST, ["networks", "create"]) => objects::network_create(&d, req).await,
        (&Method::GET, ["networks", id]) => objects::network(&d, id).await,
        (&Method::DELETE, ["networks", id]) => objects::network_remove(&d, id).await,
        (&Method::POST, ["networks", id, "connect"]) => {
            objects::network_connect(&d, id, true, req).await
        }
        (&Method::POST, ["networks", id, "disconnect"]) => {
            objects::network_connect(&d, id, false, req).await
        }
        (&Method::GET, ["volumes"]) => objects::volumes(&d, &q).await,
        (&Method::POST, ["volumes", "create"]) => objects::volume_create(&d, req).await,
        (&Method::GET, ["volumes", name]) => objects::volume(&d, name).await,
        (&Method::DELETE, ["volumes", name]) => objects::volume_remove(&d, name, &q).await,
        _ => Err(ApiError::NotFound),
    }
}

/// Runs blocking engine work off the async runtime.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| ApiError::Worker)?
}
