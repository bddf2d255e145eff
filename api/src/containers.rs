//! The container endpoints: create, list, inspect, logs, the verbs (start, stop, kill,
//! restart, wait, pause, unpause, rename, resize) and remove. (`attach` has its own module:
//! it hijacks the connection.)

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use runtime::engine::WaitCondition;
use runtime::engine::models::CreateBody;
use runtime::lifecycle::Summary;
use serde_json::json;

use crate::body::{self, Resp};
use crate::error::ApiError;
use crate::route::Query;
use crate::server::{Daemon, blocking};
use crate::stream::{Framer, Stream};

/// The largest create body husk reads.
const MAX_BODY: usize = 1 << 20;

/// Reads a JSON body of at most [`MAX_BODY`] bytes.
pub async fn json_body<T: serde::de::DeserializeOwned>(
    req: Request<Incoming>,
) -> Result<T, ApiError> {
    let bytes = Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|_| ApiError::Body)?
        .to_bytes();
    serde_json::from_slice(&bytes).map_err(ApiError::BadJson)
}

/// `POST /containers/create?name=`.
pub async fn create(d: &Arc<Daemon>, q: &Query, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let body: CreateBody = json_body(req).await?;
    let name = q.get("name").map(str::to_owned);
    let engine = d.engine.clone();
    let config = blocking(move || Ok(engine.create(name, &body)?)).await?;
    Ok(body::json(
        StatusCode::CREATED,
        &json!({"Id": config.id, "Warnings": []}),
    ))
}

/// `GET /containers/json?all=&limit=&filters=`.
pub async fn list(d: &Arc<Daemon>, q: &Query) -> Result<Resp, ApiError> {
    let filters = q.filters()?;
    let all = q.flag("all") || filters.contains_key("status");
    let limit = q.int("limit")?.filter(|l| *l > 0);
    let engine = d.engine.clone();
    let rows = blocking(move || Ok(engine.list(all || limit.is_some())?)).await?;
    let now = chrono::Utc::now();
    let out: Vec<serde_json::Value> = rows
        .iter()
        .filter(|r| matches(r, &filters))
        .take(limit.map_or(usize::MAX, |l| usize::try_from(l).unwrap_or(usize::MAX)))
        .map(|r| runtime::engine::summary::api_summary(r, now))
        .collect();
    Ok(body::json(StatusCode::OK, &out))
}

/// docker's `ps` filters husk knows: id, name, label (`k` or `k=v`), status.
fn matches(r: &Summary, filters: &HashMap<String, Vec<String>>) -> bool {
    let c = &r.config;
    // docker: several labels must all match; several of another filter, any.
    filters.iter().all(|(name, values)| {
        let mut each = values.iter();
        let test = |v: &String| match name.as_str() {
            "id" => c.id.starts_with(v.as_str()),
            "name" => c.name.contains(v.trim_start_matches('/')),
            "label" => match v.split_once('=') {
                Some((k, val)) => c.config.labels.get(k).is_some_and(|x| x == val),
                None => c.config.labels.contains_key(v),
            },
            "status" => r.state.observed().status_word() == v,
            _ => true,
        };
        match name.as_str() {
            "label" => each.all(test),
            _ => each.any(test),
        }
    })
}

/// `GET /containers/{id}/json`.
pub async fn inspect(d: &Arc<Daemon>, id: &str) -> Result<Resp, ApiError> {
    let (engine, id) = (d.engine.clone(), id.to_owned());
    let doc = blocking(move || Ok(engine.inspect(&id)?)).await?;
    Ok(body::json(StatusCode::OK, &doc))
}

/// `GET /containers/{id}/top`.
pub async fn top(d: &Arc<Daemon>, id: &str) -> Result<Resp, ApiError> {
    let (engine, id) = (d.engine.clone(), id.to_owned());
    let top = blocking(move || Ok(engine.top(&id)?)).await?;
    Ok(body::json(
        StatusCode::OK,
        &json!({"Titles": top.titles, "Processes": top.processes}),
    ))
}

/// `GET /containers/{id}/logs?stdout=&stderr=&follow=&tail=&timestamps=`.
pub async fn logs(d: &Arc<Daemon>, id: &str, q: &Query) -> Result<Resp, ApiError> {
    let opts = runtime::logs::LogOptions {
        follow: q.flag("follow"),
        tail: match q.get("tail") {
            None | Some("" | "all") => None,
            Some(n) => Some(n.parse().map_err(|_| ApiError::BadParam {
                name: "tail",
                value: n.to_owned(),
            })?),
        },
        timestamps: q.flag("timestamps"),
        since: at(q.unix_nanos("since")?.filter(|n| *n > 0)),
        until: at(q.unix_nanos("until")?.filter(|n| *n > 0)),
    };
    let (stdout, stderr) = (q.flag("stdout"), q.flag("stderr"));
    let (engine, id) = (d.engine.clone(), id.to_owned());
    let tty = {
        let (engine, id) = (engine.clone(), id.clone());
        blocking(move || Ok(engine.config(&id)?.config.tty)).await?
    };
    let (tx, resp) = body::streamed("application/vnd.docker.raw-stream");
    let (out_stream, err_stream) = Stream::pair(tty);
    tokio::task::spawn_blocking(move || {
        let mut out: Box<dyn std::io::Write> = match stdout {
            true => Box::new(Framer::new(tx.clone(), out_stream)),
            false => Box::new(std::io::sink()),
        };
        let mut err: Box<dyn std::io::Write> = match stderr {
            true => Box::new(Framer::new(tx, err_stream)),
            false => Box::new(std::io::sink()),
        };
        if let Err(e) = engine.logs(&id, &opts, &mut out, &mut err) {
            log::debug!("logs of {id}: {e}");
        }
    });
    Ok(resp)
}

/// A time in nanoseconds since the epoch as a date.
fn at(nanos: Option<i64>) -> Option<chrono::DateTime<chrono::Utc>> {
    nanos.map(chrono::DateTime::from_timestamp_nanos)
}

/// `POST /containers/{id}/{verb}`.
pub async fn verb(d: &Arc<Daemon>, id: &str, verb: &str, q: &Query) -> Result<Resp, ApiError> {
    let engine = d.engine.clone();
    let id = id.to_owned();
    let timeout = q
        .int("t")?
        .map(|t| Duration::from_secs(u64::try_from(t).unwrap_or(0)));
    let signal = q.get("signal").filter(|s| !s.is_empty()).map(str::to_owned);
    match verb {
        "start" => {
            let hold = d.attach_pending(&full_id(d, &id).await?);
            blocking(move || Ok(engine.start(&id, hold)?)).await?;
        }
        "stop" => blocking(move || Ok(engine.stop(&id, timeout, signal.as_deref())?)).await?,
        "restart" => {
            blocking(move || Ok(engine.restart(&id, timeout, None)?)).await?;
        }
        "kill" => {
            let signal = signal.unwrap_or_else(|| "KILL".to_owned());
            blocking(move || Ok(engine.kill(&id, &signal)?)).await?;
        }
        "pause" | "unpause" => {
            let paused = verb == "pause";
            blocking(move || Ok(engine.pause(&id, paused)?)).await?;
        }
        "rename" => {
            let name = q.get("name").unwrap_or_default().to_owned();
            blocking(move || Ok(engine.rename(&id, &name)?)).await?;
        }
        "resize" => {
            let size = |n| {
                q.int(n)
                    .map(|v| v.and_then(|v| u16::try_from(v).ok()).unwrap_or(0))
            };
            let (rows, cols) = (size("h")?, size("w")?);
            // A container without a terminal (or that is gone) has nothing to resize.
            let _ = blocking(move || Ok(engine.resize(&id, rows, cols)?)).await;
            return Ok(body::empty(StatusCode::OK));
        }
        "wait" => return wait(engine, id, q).await,
        _ => return Err(ApiError::NotFound),
    }
    Ok(body::empty(StatusCode::NO_CONTENT))
}

async fn full_id(d: &Arc<Daemon>, query: &str) -> Result<String, ApiError> {
    let (engine, query) = (d.engine.clone(), query.to_owned());
    blocking(move || Ok(engine.config(&query)?.id)).await
}

async fn wait(engine: runtime::engine::Engine, id: String, q: &Query) -> Result<Resp, ApiError> {
    let word = q.get("condition").unwrap_or_default();
    let condition = WaitCondition::parse(word).ok_or_else(|| ApiError::BadParam {
        name: "condition",
        value: word.to_owned(),
    })?;
    // Exists now (a 404 is an error response, not a wait result).
    let check = engine.clone();
    let query = id.clone();
    blocking(move || Ok(check.config(&query)?)).await?;
    // Headers now, the result when it comes: clients wait for the headers before they
    // start the container (docker's daemon answers the same way).
    let (tx, resp) = body::streamed("application/json");
    tokio::task::spawn_blocking(move || {
        // A client that hung up (docker's `run -d` sends a wait it never reads) stops it.
        let doc = match engine.wait_while(&id, condition, &|| !tx.is_closed()) {
            Ok(Some(code)) => json!({"StatusCode": code, "Error": null}),
            Ok(None) => return,
            Err(e) => json!({"StatusCode": -1, "Error": {"Message": agent_proto::error_chain(&e)}}),
        };
        let _ = tx.blocking_send(bytes::Bytes::from(doc.to_string() + "\n"));
    });
    Ok(resp)
}

/// `DELETE /containers/{id}?force=&v=`.
pub async fn remove(d: &Arc<Daemon>, id: &str, q: &Query) -> Result<Resp, ApiError> {
    let (engine, id) = (d.engine.clone(), id.to_owned());
    let (force, volumes) = (q.flag("force"), q.flag("v"));
    blocking(move || Ok(engine.remove(&id, force, volumes)?)).await?;
    Ok(body::empty(StatusCode::NO_CONTENT))
}
