//! docker's `cp` endpoints: `HEAD` and `GET /containers/{id}/archive?path=` (the path's
//! stat in the `X-Docker-Container-Path-Stat` header, base64 JSON, and for `GET` its tar),
//! and `PUT /containers/{id}/archive?path=DIR` (a tar extracted as is into that existing
//! directory). One run of the container's archive tool both describes and carries a copy:
//! its first entry is read for the stat as the tar streams by.

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use bytes::{Buf, Bytes};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Request, StatusCode};
use runtime::files::stat::PathStat;
use tokio::sync::{mpsc, oneshot};

use crate::body::{self, Resp};
use crate::error::ApiError;
use crate::route::Query;
use crate::server::{Daemon, blocking};
use crate::stream::{Framer, Stream};

/// The stat header's name.
const STAT_HEADER: &str = "x-docker-container-path-stat";

type StatSlot = Arc<Mutex<Option<oneshot::Sender<Result<Option<PathStat>, ApiError>>>>>;

fn send(slot: &StatSlot, r: Result<Option<PathStat>, ApiError>) {
    let tx = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(tx) = tx {
        let _ = tx.send(r);
    }
}

/// A writer that refuses everything: `HEAD` wants the stat only, so the copy stops as
/// soon as the tar would start.
struct Refuse;

impl Write for Refuse {
    fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
        Err(std::io::ErrorKind::BrokenPipe.into())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn path_param(q: &Query) -> Result<String, ApiError> {
    q.get("path")
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .ok_or(ApiError::BadParam {
            name: "path",
            value: String::new(),
        })
}

/// `HEAD` (`head_only`) and `GET /containers/{id}/archive?path=`.
pub async fn get(d: &Arc<Daemon>, id: &str, q: &Query, head_only: bool) -> Result<Resp, ApiError> {
    let path = path_param(q)?;
    let (stat_tx, stat_rx) = oneshot::channel();
    let slot: StatSlot = Arc::new(Mutex::new(Some(stat_tx)));
    let (tx, mut resp) = body::streamed("application/x-tar");
    let (engine, id) = (d.engine.clone(), id.to_owned());
    let reporter = Arc::clone(&slot);
    tokio::task::spawn_blocking(move || {
        let report = |s: Option<PathStat>| send(&reporter, Ok(s));
        let out: Box<dyn Write> = match head_only {
            true => Box::new(Refuse),
            false => Box::new(std::io::BufWriter::with_capacity(
                256 << 10,
                Framer::new(tx, Stream::Raw),
            )),
        };
        if let Err(e) = engine.copy_out(&id, &path, out, report) {
            // Before the stat: the request's answer; after it, a cut stream (or HEAD's
            // deliberate stop).
            send(&slot, Err(e.into()));
        }
    });
    let stat = match stat_rx.await.map_err(|_| ApiError::Worker)?? {
        Some(s) => s,
        None => return Err(ApiError::NotImplemented("an archive without a root entry")),
    };
    let json = serde_json::to_vec(&stat).unwrap_or_default();
    let encoded = base64::engine::general_purpose::STANDARD.encode(json);
    if head_only {
        resp = body::empty(StatusCode::OK);
    }
    if let Ok(v) = HeaderValue::from_str(&encoded) {
        resp.headers_mut().insert(STAT_HEADER, v);
    }
    Ok(resp)
}

/// The request body as a blocking `Read` (for the extraction, off the async runtime).
struct BodyReader {
    rx: mpsc::Receiver<Bytes>,
    cur: Bytes,
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(b) => self.cur = b,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        self.cur.advance(n);
        Ok(n)
    }
}

/// `PUT /containers/{id}/archive?path=DIR`.
pub async fn put(
    d: &Arc<Daemon>,
    id: &str,
    q: &Query,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    let path = path_param(q)?;
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let (engine, id) = (d.engine.clone(), id.to_owned());
    let extract = blocking(move || {
        let mut input = BodyReader {
            rx,
            cur: Bytes::new(),
        };
        let r = engine.copy_in(&id, &path, &mut input);
        // Whatever the tool left unread is drained, so the client's upload completes.
        let _ = std::io::copy(&mut input, &mut std::io::sink());
        Ok(r?)
    });
    let feed = async move {
        let mut body = req.into_body();
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { break };
            if let Ok(data) = frame.into_data()
                && tx.send(data).await.is_err()
            {
                break;
            }
        }
    };
    let (extracted, ()) = tokio::join!(extract, feed);
    extracted?;
    Ok(body::empty(StatusCode::OK))
}
