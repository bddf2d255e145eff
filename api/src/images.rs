//! The image endpoints: list and inspect, in docker's shapes (familiar names:
//! `husk/busybox:latest`, not `docker.io/husk/busybox:latest`).

use std::sync::Arc;

use hyper::StatusCode;
use rootfs::store::ImageRecord;
use serde_json::{Value, json};

use crate::body::{self, Resp};
use crate::error::ApiError;
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
