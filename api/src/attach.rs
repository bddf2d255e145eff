//! `POST /containers/{id}/attach`: docker's hijacked connection. husk answers `101
//! UPGRADED` at once (clients attach *before* they start a container), then, once the
//! container runs, relays its output (framed per stream unless it has a terminal) and,
//! with `stdin=1`, the client's bytes to its stdin (the client closing its side is end of
//! file). A start while an attach waits holds the workload until the attach is connected.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::Request;
use hyper::body::Incoming;
use tokio::sync::mpsc;

use crate::body::Resp;
use crate::error::ApiError;
use crate::hijack;
use crate::route::Query;
use crate::server::{Daemon, blocking};
use crate::stream::{Framer, Stream};

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
            Ok(conn) => {
                hijack::serve(conn, want.stdin, move |tx, input| {
                    relay(&daemon, &id, want, tx, input);
                })
                .await;
            }
            Err(e) => {
                daemon.attach_done(&id);
                log::debug!("attach to {id}: no upgrade: {e}");
            }
        }
    });
    Ok(hijack::upgraded())
}

/// The blocking half: waits for the container, then pumps its output into `tx` (and
/// `input` into its stdin) until it exits.
fn relay(
    daemon: &Daemon,
    id: &str,
    want: Want,
    tx: mpsc::Sender<Bytes>,
    input: Option<hijack::Input>,
) {
    let (out_stream, err_stream) = Stream::pair(want.tty);
    let attached = daemon.engine.attach(id, want.stdin, START_WAIT);
    daemon.attach_done(id);
    let attached = match attached {
        Ok(a) => a,
        Err(e) => {
            hijack::say(&tx, err_stream, &agent_proto::error_chain(&e));
            return;
        }
    };
    if let Some(input) = input {
        match attached.stdin() {
            Ok(w) => hijack::feed_stdin(input, w),
            Err(e) => log::debug!("attach to {id}: no stdin: {e}"),
        }
    }
    let writer = |on: bool, stream: Stream| -> Box<dyn Write> {
        match on {
            true => Box::new(Framer::new(tx.clone(), stream)),
            false => Box::new(std::io::sink()),
        }
    };
    let mut out = writer(want.stdout, out_stream);
    let mut err = writer(want.stderr, err_stream);
    let mut husk = Framer::new(tx.clone(), err_stream);
    if let Err(e) = attached.pump(&mut out, &mut err, &mut husk) {
        log::debug!("attach to {id}: {e}");
    }
}
