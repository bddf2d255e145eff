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
pub async fn list(d: &Arc<Daemon>, q: &Query) -> Result<Resp, ApiError> {
    let engine = d.engine.clone();
    let images = blocking(move || Ok(engine.images()?)).await?;
    let hidden = match q.flag("all") {
        true => Default::default(),
        false => rootfs::store::intermediates(&images),
    };
    let out: Vec<Value> = images
        .iter()
        .filter(|i| !hidden.contains(&i.id))
        .map(summary)
        .collect();
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
        "Parent": i.parent.as_ref().map(ToString::to_string).unwrap_or_default(),
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
    let out: Vec<Value> = events.iter().map(remove_event).collect();
    Ok(body::json(StatusCode::OK, &out))
}

/// `POST /images/prune?filters={"dangling":["false"]}`: dangling images, or every unused
/// one when `dangling` is false (docker's `image prune -a`).
pub async fn prune(d: &Arc<Daemon>, q: &Query) -> Result<Resp, ApiError> {
    let all = q
        .filters()?
        .get("dangling")
        .is_some_and(|v| v.iter().any(|x| x == "false" || x == "0"));
    let engine = d.engine.clone();
    let (events, freed) = blocking(move || Ok(engine.image_prune(all)?)).await?;
    let deleted: Vec<Value> = events.iter().map(remove_event).collect();
    Ok(body::json(
        StatusCode::OK,
        &json!({ "ImagesDeleted": deleted, "SpaceReclaimed": freed }),
    ))
}

fn remove_event(e: &RemoveEvent) -> Value {
    match e {
        RemoveEvent::Untagged(n) => json!({ "Untagged": n }),
        RemoveEvent::Deleted(d) => json!({ "Deleted": d.to_string() }),
    }
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

/// `GET /images/get?names=...` and `GET /images/{name}/get`: a docker-archive tar.
pub async fn save(d: &Arc<Daemon>, names: Vec<String>) -> Result<Resp, ApiError> {
    if names.is_empty() {
        return Err(ApiError::BadParam {
            name: "names",
            value: String::new(),
        });
    }
    // Every image must exist before the first byte goes out (a 404, not a cut tar).
    let (engine, check) = (d.engine.clone(), names.clone());
    blocking(move || {
        for n in &check {
            engine.image(n)?;
        }
        Ok(())
    })
    .await?;
    let (tx, resp) = body::streamed("application/x-tar");
    let engine = d.engine.clone();
    tokio::task::spawn_blocking(move || {
        let out = std::io::BufWriter::with_capacity(
            256 << 10,
            crate::stream::Framer::new(tx, crate::stream::Stream::Raw),
        );
        if let Err(e) = engine.image_save(&names, out) {
            log::warn!("save: {}", agent_proto::error_chain(&e));
        }
    });
    Ok(resp)
}

/// `POST /images/load`: the request body (a docker-archive or OCI-layout tar) is spooled
/// into the state directory (archives are read in more than one pass), then loaded.
pub async fn load(
    d: &Arc<Daemon>,
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<Resp, ApiError> {
    let spool = crate::spool::receive(req, &d.engine.root().join("images"), "load").await?;
    let engine = d.engine.clone();
    let loaded = blocking(move || {
        let r = engine.image_load(&spool.0);
        drop(spool);
        Ok(r?)
    })
    .await?;
    let mut lines = String::new();
    for rec in &loaded {
        let tags = tags(rec);
        if tags.is_empty() {
            lines += &json!({"stream": format!("Loaded image ID: {}\n", rec.id)}).to_string();
            lines.push('\n');
        }
        for t in tags {
            lines += &json!({"stream": format!("Loaded image: {t}\n")}).to_string();
            lines.push('\n');
        }
    }
    Ok(body::with(StatusCode::OK, "application/json", lines))
}

/// `GET /images/{name}/history`: newest step first, the image's ID on the top one.
pub async fn history(d: &Arc<Daemon>, name: &str) -> Result<Resp, ApiError> {
    let (engine, name) = (d.engine.clone(), name.to_owned());
    let i = blocking(move || Ok(engine.image(&name)?)).await?;
    let mut layers = i.layers.iter();
    let mut rows: Vec<Value> = i
        .config
        .history
        .iter()
        .map(|h| {
            let size = match h.empty_layer {
                true => 0,
                false => layers.next().map_or(0, |l| l.size),
            };
            let created = h
                .created
                .as_deref()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map_or(0, |t| t.timestamp());
            json!({"Id": "<missing>", "Created": created,
                   "CreatedBy": h.created_by.clone().unwrap_or_default(),
                   "Tags": null, "Size": size,
                   "Comment": h.comment.clone().unwrap_or_default()})
        })
        .collect();
    rows.reverse();
    match rows.first_mut() {
        Some(top) => {
            top["Id"] = json!(i.id.to_string());
            top["Tags"] = json!(tags(&i));
        }
        None => rows.push(json!({"Id": i.id.to_string(), "Created": created(&i),
                                 "CreatedBy": "", "Tags": tags(&i), "Size": i.size,
                                 "Comment": ""})),
    }
    Ok(body::json(StatusCode::OK, &rows))
}

/// `GET /system/df`: images, containers and volumes with what they take on disk.
pub async fn disk_usage(d: &Arc<Daemon>) -> Result<Resp, ApiError> {
    let engine = d.engine.clone();
    let doc = blocking(move || {
        let now = chrono::Utc::now();
        let containers = engine.list(true)?;
        let images: Vec<Value> = engine
            .images()?
            .iter()
            .map(|i| {
                let mut s = summary(i);
                let users = containers
                    .iter()
                    .filter(|c| c.config.image == i.id.to_string())
                    .count();
                s["Containers"] = json!(users);
                s
            })
            .collect();
        let layers: u64 = engine.images()?.iter().map(|i| i.size).sum();
        let rows: Vec<Value> = containers
            .iter()
            .map(|c| {
                let mut s = runtime::engine::summary::api_summary(c, now);
                let rw = runtime::lifecycle::disk_usage(engine.root(), &c.config.id);
                s["SizeRw"] = json!(rw);
                s["SizeRootFs"] = json!(rw);
                s
            })
            .collect();
        let mut volumes = Vec::new();
        for v in engine.volumes()? {
            let mut doc = engine.volume_inspect(&v.volume.name)?;
            let size = runtime::volverbs::size(engine.root(), &v.volume.name);
            doc["UsageData"] = json!({"Size": size, "RefCount": v.users});
            volumes.push(doc);
        }
        Ok(
            json!({"LayersSize": layers, "Images": images, "Containers": rows,
                  "Volumes": volumes, "BuildCache": []}),
        )
    })
    .await?;
    Ok(body::json(StatusCode::OK, &doc))
}
