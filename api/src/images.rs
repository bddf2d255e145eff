//! The image endpoints: list, inspect and create (pull), in docker's shapes (familiar names:
//! `husk/busybox:latest`, not `docker.io/husk/busybox:latest`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use hyper::StatusCode;
use rootfs::registry::Progress;
use rootfs::store::{ImageRecord, RemoveEvent};
use serde_json::{Value, json};

use crate::body::{self, Resp};
use crate::error::ApiError;
use crate::route::Query;
use crate::server::{Daemon, blocking};

fn tags(i: &ImageRecord) -> Vec<String> {
    i.tags().iter().map(|r| r.familiar()).collect()
}

fn created(i: &ImageRecord) -> i64 {
    i.created
        .as_deref()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map_or(0, |t| t.timestamp())
}

fn summary(i: &ImageRecord) -> Value {
    let size = i64::try_from(i.size).unwrap_or(i64::MAX);
    let labels = i
        .config
        .config
        .as_ref()
        .and_then(|c| c.labels.clone())
        .unwrap_or_default();
    json!({
        "Id": i.id.to_string(),
        "ParentId": "",
        "RepoTags": tags(i),
        "RepoDigests": i.repo_digests,
        "Created": created(i),
        "Size": size,
        "VirtualSize": size,
        "SharedSize": -1,
        "Labels": labels,
        "Containers": -1,
    })
}

/// `GET /images/json`.
pub async fn list(d: &Arc<Daemon>) -> Result<Resp, ApiError> {
    let engine = d.engine.clone();
    let images = blocking(move || Ok(engine.images()?)).await?;
    let out: Vec<Value> = images.iter().map(summary).collect();
    Ok(body::json(StatusCode::OK, &out))
}

/// `GET /images/{name}/json`.
pub async fn inspect(d: &Arc<Daemon>, name: &str) -> Result<Resp, ApiError> {
    let (engine, name) = (d.engine.clone(), name.to_owned());
    let i = blocking(move || Ok(engine.image(&name)?)).await?;
    let size = i64::try_from(i.size).unwrap_or(i64::MAX);
    let diff_ids: Vec<String> = i.layers.iter().map(|l| l.diff_id.to_string()).collect();
    let doc = json!({
        "Id": i.id.to_string(),
        "RepoTags": tags(&i),
        "RepoDigests": i.repo_digests,
        "Parent": "",
        "Comment": "",
        "Created": i.created.clone().unwrap_or_default(),
        "Config": i.config.config,
        "Architecture": i.config.architecture,
        "Os": i.config.os,
        "Size": size,
        "VirtualSize": size,
        "RootFS": {"Type": "layers", "Layers": diff_ids},
        "Metadata": {"LastTagTime": i.added},
    });
    Ok(body::json(StatusCode::OK, &doc))
}

/// `POST /images/create?fromImage=&tag=`: a pull, reported as docker's JSON progress
/// stream (errors after the headers arrive in the stream, as docker sends them).
pub async fn create(d: &Arc<Daemon>, q: &Query) -> Result<Resp, ApiError> {
    if q.get("fromSrc").is_some() {
        return Err(ApiError::NotImplemented(
            "importing through the API (use husk import)",
        ));
    }
    let from = q
        .get("fromImage")
        .filter(|f| !f.is_empty())
        .ok_or(ApiError::BadParam {
            name: "fromImage",
            value: String::new(),
        })?;
    let reference = match q.get("tag").filter(|t| !t.is_empty()) {
        Some(t) if t.starts_with("sha256:") => format!("{from}@{t}"),
        Some(t) => format!("{from}:{t}"),
        None => from.to_owned(),
    };
    let (engine, from) = (d.engine.clone(), from.to_owned());
    let (tx, resp) = body::streamed("application/json");
    tokio::task::spawn_blocking(move || {
        let progress = JsonProgress {
            tx,
            done: Mutex::default(),
        };
        progress.send(json!({"status": format!("Pulling from {from}")}));
        match engine.pull(&reference, &progress) {
            Ok(report) => {
                let status = match report.up_to_date {
                    true => "Image is up to date for",
                    false => "Downloaded newer image for",
                };
                progress.send(json!({"status": format!("Digest: {}", report.digest)}));
                progress.send(json!({"status": format!("Status: {status} {reference}")}));
            }
            Err(e) => {
                let m = agent_proto::error_chain(&e);
                progress.send(json!({"errorDetail": {"message": m}, "error": m}));
            }
        }
    });
    Ok(resp)
}

/// A pull's progress as docker's JSON lines.
struct JsonProgress {
    tx: tokio::sync::mpsc::Sender<bytes::Bytes>,
    /// Bytes so far per blob.
    done: Mutex<HashMap<String, (u64, u64)>>,
}

impl JsonProgress {
    fn send(&self, v: Value) {
        let _ = self
            .tx
            .blocking_send(bytes::Bytes::from(v.to_string() + "\r\n"));
    }
}

impl Progress for JsonProgress {
    fn start(&self, id: &str, total: u64) {
        let mut d = self.done.lock().unwrap_or_else(|p| p.into_inner());
        d.insert(id.to_owned(), (0, total));
        drop(d);
        self.send(json!({"status": "Pulling fs layer", "progressDetail": {}, "id": id}));
    }

    fn advance(&self, id: &str, bytes: u64) {
        let mut d = self.done.lock().unwrap_or_else(|p| p.into_inner());
        let entry = d.entry(id.to_owned()).or_default();
        entry.0 += bytes;
        let (current, total) = *entry;
        drop(d);
        self.send(json!({"status": "Downloading",
                         "progressDetail": {"current": current, "total": total}, "id": id}));
    }

    fn finish(&self, id: &str, status: &str) {
        self.send(json!({"status": status, "progressDetail": {}, "id": id}));
    }

    fn message(&self, line: &str) {
        self.send(json!({ "status": line }));
    }
}

/// `DELETE /images/{name}?force=`.
pub async fn remove(d: &Arc<Daemon>, name: &str, q: &Query) -> Result<Resp, ApiError> {
    let (engine, name, force) = (d.engine.clone(), name.to_owned(), q.flag("force"));
    let events = blocking(move || Ok(engine.image_remove(&name, force)?)).await?;
    let out: Vec<Value> = events
        .iter()
        .map(|e| match e {
            RemoveEvent::Untagged(n) => json!({ "Untagged": n }),
            RemoveEvent::Deleted(d) => json!({ "Deleted": d.to_string() }),
        })
        .collect();
    Ok(body::json(StatusCode::OK, &out))
}

/// `POST /images/{name}/tag?repo=&tag=`.
pub async fn tag(d: &Arc<Daemon>, name: &str, q: &Query) -> Result<Resp, ApiError> {
    let repo = q
        .get("repo")
        .filter(|r| !r.is_empty())
        .ok_or(ApiError::BadParam {
            name: "repo",
            value: String::new(),
        })?;
    let target = match q.get("tag").filter(|t| !t.is_empty()) {
        Some(t) => format!("{repo}:{t}"),
        None => repo.to_owned(),
    };
    let (engine, name) = (d.engine.clone(), name.to_owned());
    blocking(move || Ok(engine.image_tag(&name, &target)?)).await?;
    Ok(body::empty(StatusCode::CREATED))
}
