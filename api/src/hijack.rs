//! docker's hijacked connections, shared by `attach` and `exec start`: the `101 UPGRADED`
//! answer, then raw bytes both ways. The blocking side (the runtime's pumps) writes framed
//! output into a bounded channel that goes to the client until the blocking side drops its
//! sender; the client's bytes go, as they come, to the workload's stdin until the client
//! closes its side (end of file).

use std::io::Write;

use bytes::Bytes;
use hyper::StatusCode;
use hyper::header::{CONNECTION, CONTENT_TYPE, HeaderValue, UPGRADE};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::body::{self, Resp};
use crate::stream::{Stream, frame};

/// What the client typed, chunk by chunk, for the blocking side.
pub type Input = std::sync::mpsc::Receiver<Vec<u8>>;

/// The `101 UPGRADED` answer of a hijacked endpoint.
pub fn upgraded() -> Resp {
    let mut resp = body::empty(StatusCode::SWITCHING_PROTOCOLS);
    let h = resp.headers_mut();
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(UPGRADE, HeaderValue::from_static("tcp"));
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/vnd.docker.raw-stream"),
    );
    resp
}

/// Serves an upgraded connection: `work` runs on the blocking pool with the output's
/// sender and (with `stdin`) the client's input; returns when the output has ended.
pub async fn serve(
    conn: Upgraded,
    stdin: bool,
    work: impl FnOnce(mpsc::Sender<Bytes>, Option<Input>) + Send + 'static,
) {
    let (mut rd, mut wr) = tokio::io::split(TokioIo::new(conn));
    let (tx, mut rx) = mpsc::channel::<Bytes>(64);
    let (in_tx, in_rx) = std::sync::mpsc::channel::<Vec<u8>>();
    tokio::task::spawn_blocking(move || work(tx, stdin.then_some(in_rx)));
    if stdin {
        tokio::spawn(async move {
            let mut buf = vec![0u8; 16 << 10];
            // Dropping the sender at the end ends the workload's stdin.
            while let Ok(n) = rd.read(&mut buf).await {
                if n == 0 || in_tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
    }
    while let Some(chunk) = rx.recv().await {
        if wr.write_all(&chunk).await.is_err() {
            return;
        }
    }
    let _ = wr.shutdown().await;
}

/// Copies the client's input into the workload's stdin on a thread of its own; dropping
/// the writer at the client's end of file ends the workload's stdin.
pub fn feed_stdin(input: Input, mut stdin: impl Write + Send + 'static) {
    std::thread::spawn(move || {
        for chunk in input {
            if stdin.write_all(&chunk).is_err() {
                break;
            }
        }
    });
}

/// Sends one `husk: ...` line to the client on `stream` (blocking side).
pub fn say(tx: &mpsc::Sender<Bytes>, stream: Stream, text: &str) {
    let line = format!("husk: {text}\n");
    let _ = tx.blocking_send(Bytes::from(frame(stream, line.as_bytes())));
}
