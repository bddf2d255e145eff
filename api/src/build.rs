//! `POST /build`: the docker CLI's classic builder and compose's `build:` send the context as
//! a tar (plain or gzip: the builder unpacks both) with the options in the query; the answer is docker's JSON stream
//! (`{"stream": "Step 1/3 : ..."}` lines, `{"aux": {"ID": ...}}`, and an `error` line if the
//! build fails after the headers went out).

use std::collections::BTreeMap;
use std::io::{Seek, Write};
use std::sync::Arc;

use runtime::build::{BuildOptions, DockerfileSource, Output};
use serde_json::json;
use tokio::sync::mpsc;

use crate::body::{self, Resp};
use crate::error::ApiError;
use crate::route::Query;
use crate::server::Daemon;

/// `POST /build?t=&dockerfile=&buildargs=&nocache=&target=&labels=&q=&pull=&networkmode=`.
pub async fn build(
    d: &Arc<Daemon>,
    q: &Query,
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<Resp, ApiError> {
    if q.get("remote").is_some_and(|r| !r.is_empty()) {
        return Err(ApiError::NotImplemented(
            "building from a remote context (husk builds have no internet)",
        ));
    }
    let opts = options(q)?;
    let dockerfile = q
        .get("dockerfile")
        .filter(|f| !f.is_empty())
        .unwrap_or("Dockerfile")
        .to_owned();
    let quiet = q.flag("q");
    let spool = crate::spool::receive(req, &d.engine.root().join("builds"), "context").await?;
    let engine = d.engine.clone();
    let (tx, resp) = body::streamed("application/json");
    tokio::task::spawn_blocking(move || {
        let mut spool = spool;
        let lines = JsonLines { tx: tx.clone() };
        let out = Output::new(match quiet {
            true => Box::new(std::io::sink()),
            false => Box::new(lines),
        });
        let result = build_spooled(&engine, &mut spool.1, dockerfile, &opts, &out);
        drop(spool);
        let send = |v: serde_json::Value| {
            let _ = tx.blocking_send(bytes::Bytes::from(v.to_string() + "\r\n"));
        };
        match result {
            Ok(built) => {
                send(json!({"aux": {"ID": built.image.id.to_string()}}));
                if quiet {
                    send(json!({"stream": format!("{}\n", built.image.id)}));
                }
            }
            Err(e) => {
                let m = agent_proto::error_chain(&e);
                send(json!({"errorDetail": {"code": 1, "message": m}, "error": m}));
            }
        }
    });
    Ok(resp)
}

/// Builds the context spooled in `file`.
fn build_spooled(
    engine: &runtime::engine::Engine,
    file: &mut std::fs::File,
    dockerfile: String,
    opts: &BuildOptions,
    out: &Output,
) -> Result<runtime::build::Built, Box<runtime::build::BuildError>> {
    use runtime::build::BuildError;
    file.rewind().map_err(BuildError::Output)?;
    let source = DockerfileSource::InContext(dockerfile);
    Ok(runtime::build::build_tar(engine, file, &source, opts, out)?)
}

/// The build's options from the query (docker's JSON-encoded maps included).
fn options(q: &Query) -> Result<BuildOptions, ApiError> {
    let map = |name: &'static str| -> Result<BTreeMap<String, Option<String>>, ApiError> {
        match q.get(name).filter(|v| !v.is_empty()) {
            None => Ok(BTreeMap::new()),
            Some(v) => serde_json::from_str(v).map_err(|_| ApiError::BadParam {
                name,
                value: v.to_owned(),
            }),
        }
    };
    let build_args = map("buildargs")?
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect::<BTreeMap<_, _>>();
    let labels = map("labels")?
        .into_iter()
        .map(|(k, v)| (k, v.unwrap_or_default()))
        .collect();
    let tags = q
        .all("t")
        .iter()
        .map(|t| {
            rootfs::reference::Reference::parse(t).map_err(|_| ApiError::BadParam {
                name: "t",
                value: t.clone(),
            })
        })
        .collect::<Result<_, _>>()?;
    let isolation = q
        .get("isolation")
        .filter(|i| !i.is_empty() && *i != "default")
        .map(str::to_owned);
    let network = q
        .get("networkmode")
        .filter(|n| !n.is_empty() && *n != "default")
        .map(str::to_owned);
    let epoch = match build_args.get("SOURCE_DATE_EPOCH") {
        Some(s) => Some(s.parse().map_err(|_| ApiError::BadParam {
            name: "buildargs",
            value: format!("SOURCE_DATE_EPOCH={s}"),
        })?),
        None => None,
    };
    Ok(BuildOptions {
        tags,
        build_args,
        target: q.get("target").filter(|t| !t.is_empty()).map(str::to_owned),
        no_cache: q.flag("nocache"),
        pull: q.flag("pull"),
        isolation,
        network,
        labels,
        source_date_epoch: epoch,
    })
}

/// Build output as docker's `{"stream": ...}` lines.
struct JsonLines {
    tx: mpsc::Sender<bytes::Bytes>,
}

impl Write for JsonLines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let line = json!({"stream": String::from_utf8_lossy(buf)}).to_string() + "\r\n";
        self.tx
            .blocking_send(bytes::Bytes::from(line))
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
