//! `POST /containers/{id}/attach`: docker's hijacked connection. husk answers `101
//! UPGRADED` at once (clients attach *before* they start a container), then, once the
//! container runs, relays its output (framed per stream unless it has a terminal) and,
//! with `stdin=1`, the client's bytes to its stdin (the client closing its side is end of
//! file). A start while an attach waits holds the workload until the attach is connected.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{CONNECTION, CONTENT_TYPE, HeaderValue, UPGRADE};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::body::{self, Resp};
use crate::error::ApiError;
use crate::route::Query;
use crate::server::{Daemon, blocking};
use crate::stream::{Framer, Stream, frame};

/// How long an attach waits for its container to be started.
const START_WAIT: Duration = Duration::from_secs(600);

/// What the client attached to.
#[derive(Debug, Clone, Copy)]
struct Want {
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
}

/// `POST /containers/{id}/attach?stream=1&stdin=&stdout=&stderr=`.
pub async fn attach(
    d: &Arc<Daemon>,
    query: &str,
    q: &Query,
    mut req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    let (engine, query) = (d.engine.clone(), query.to_owned());
    let config = blocking(move || Ok(engine.config(&query)?)).await?;
    let want = Want {
        stdin: q.flag("stdin") && config.config.open_stdin,
        stdout: q.flag("stdout"),
        stderr: q.flag("stderr"),
        tty: config.config.tty,
    };
    let id = config.id;
    let upgrade = hyper::upgrade::on(&mut req);
    d.attach_waiting(&id);
    let daemon = Arc::clone(d);
    tokio::spawn(async move {
        match upgrade.await {
            Ok(conn) => session(daemon, id, TokioIo::new(conn), want).await,
            Err(e) => {
                daemon.attach_done(&id);
                log::debug!("attach to {id}: no upgrade: {e}");
            }
        }
    });
    let mut resp = body::empty(StatusCode::SWITCHING_PROTOCOLS);
    let h = resp.headers_mut();
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(UPGRADE, HeaderValue::from_static("tcp"));
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/vnd.docker.raw-stream"),
    );
    Ok(resp)
}

async fn session<IO>(daemon: Arc<Daemon>, id: String, conn: IO, want: Want)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(conn);
    let (tx, mut rx) = mpsc::channel::<Bytes>(64);
    let (in_tx, in_rx) = std::sync::mpsc::channel::<Vec<u8>>();
    tokio::task::spawn_blocking(move || relay(&daemon, &id, want, tx, in_rx));
    if want.stdin {
        tokio::spawn(async move {
            let mut buf = vec![0u8; 16 << 10];
            loop {
                match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if in_tx.send(buf[..n].to_vec()).is_err() {
                            break;
                        }
                    }
                }
            }
            // Dropping the sender ends the workload's stdin.
        });
    }
    while let Some(chunk) = rx.recv().await {
        if wr.write_all(&chunk).await.is_err() {
            return;
        }
    }
    let _ = wr.shutdown().await;
}

/// The blocking half: waits for the container, then pumps its output into `tx` (and
/// `input` into its stdin) until it exits.
fn relay(
    daemon: &Daemon,
    id: &str,
    want: Want,
    tx: mpsc::Sender<Bytes>,
    input: std::sync::mpsc::Receiver<Vec<u8>>,
) {
    let husk_stream = match want.tty {
        true => Stream::Raw,
        false => Stream::Stderr,
    };
    let attached = daemon.engine.attach(id, want.stdin, START_WAIT);
    daemon.attach_done(id);
    let attached = match attached {
        Ok(a) => a,
        Err(e) => {
            let line = format!("husk: {}\n", agent_proto::error_chain(&e));
            let _ = tx.blocking_send(Bytes::from(frame(husk_stream, line.as_bytes())));
            return;
        }
    };
    if want.stdin {
        match attached.stdin() {
            Ok(mut w) => {
                std::thread::spawn(move || {
                    for chunk in input {
                        if w.write_all(&chunk).is_err() {
                            break;
                        }
                    }
                });
            }
            Err(e) => log::debug!("attach to {id}: no stdin: {e}"),
        }
    }
    let writer = |on: bool, stream: Stream| -> Box<dyn Write> {
        match on {
            true => Box::new(Framer::new(tx.clone(), stream)),
            false => Box::new(std::io::sink()),
        }
    };
    let (out_stream, err_stream) = match want.tty {
        true => (Stream::Raw, Stream::Raw),
        false => (Stream::Stdout, Stream::Stderr),
    };
    let mut out = writer(want.stdout, out_stream);
    let mut err = writer(want.stderr, err_stream);
    let mut husk = Framer::new(tx.clone(), husk_stream);
    if let Err(e) = attached.pump(&mut out, &mut err, &mut husk) {
        log::debug!("attach to {id}: {e}");
    }
}
