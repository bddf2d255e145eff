//! The network and volume endpoints: list (with docker's name/id/label filters), inspect,
//! create, remove, and a network's connect/disconnect.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use runtime::netverbs::ConnectOptions;
use runtime::network::defs::CreateOptions;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::body::{self, Resp};
use crate::containers::json_body;
use crate::error::ApiError;
use crate::route::Query;
use crate::server::{Daemon, blocking};

/// docker's generic object filters over an inspect document.
fn matches(doc: &Value, filters: &HashMap<String, Vec<String>>) -> bool {
    // docker: several labels must all match; several of another filter, any.
    filters.iter().all(|(name, values)| {
        let mut each = values.iter();
        let test = |v: &String| match name.as_str() {
            "name" => doc["Name"].as_str().is_some_and(|n| n.contains(v.as_str())),
            "id" => doc["Id"]
                .as_str()
                .is_some_and(|i| i.starts_with(v.as_str())),
            "label" => {
                let labels = &doc["Labels"];
                match v.split_once('=') {
                    Some((k, val)) => labels[k].as_str() == Some(val),
                    None => !labels[v.as_str()].is_null(),
                }
            }
            "driver" => doc["Driver"].as_str() == Some(v.as_str()),
            _ => true,
        };
        match name.as_str() {
            "label" => each.all(test),
            _ => each.any(test),
        }
    })
}

/// `GET /networks`.
pub async fn networks(d: &Arc<Daemon>, q: &Query) -> Result<Resp, ApiError> {
    let filters = q.filters()?;
    let engine = d.engine.clone();
    let docs = blocking(move || {
        let mut out = Vec::new();
        for net in engine.networks()? {
            out.push(engine.network_inspect(&net.id)?);
        }
        Ok(out)
    })
    .await?;
    let docs: Vec<Value> = docs.into_iter().filter(|n| matches(n, &filters)).collect();
    Ok(body::json(StatusCode::OK, &docs))
}

/// `GET /networks/{id}`.
pub async fn network(d: &Arc<Daemon>, query: &str) -> Result<Resp, ApiError> {
    let (engine, query) = (d.engine.clone(), query.to_owned());
    let doc = blocking(move || Ok(engine.network_inspect(&query)?)).await?;
    Ok(body::json(StatusCode::OK, &doc))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct NetworkCreate {
    name: String,
    internal: bool,
    labels: Option<BTreeMap<String, String>>,
    #[serde(rename = "IPAM")]
    ipam: Option<Ipam>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct Ipam {
    config: Option<Vec<IpamPool>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct IpamPool {
    subnet: Option<String>,
    gateway: Option<String>,
}

/// `POST /networks/create`.
pub async fn network_create(d: &Arc<Daemon>, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let body: NetworkCreate = json_body(req).await?;
    let pool = body
        .ipam
        .and_then(|i| i.config)
        .and_then(|c| c.into_iter().next())
        .unwrap_or_default();
    let opts = CreateOptions {
        name: body.name,
        subnet: pool.subnet.filter(|s| !s.is_empty()),
        gateway: pool.gateway.filter(|g| !g.is_empty()),
        internal: body.internal,
        labels: body.labels.unwrap_or_default(),
    };
    let engine = d.engine.clone();
    let net = blocking(move || Ok(engine.network_create(&opts)?)).await?;
    Ok(body::json(
        StatusCode::CREATED,
        &json!({"Id": net.id, "Warning": ""}),
    ))
}

/// `DELETE /networks/{id}`.
pub async fn network_remove(d: &Arc<Daemon>, query: &str) -> Result<Resp, ApiError> {
    let (engine, query) = (d.engine.clone(), query.to_owned());
    blocking(move || Ok(engine.network_remove(&query)?)).await?;
    Ok(body::empty(StatusCode::NO_CONTENT))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct Connect {
    container: String,
    endpoint_config: Option<runtime::engine::models::EndpointConfig>,
}

/// `POST /networks/{id}/connect` and `/disconnect`.
pub async fn network_connect(
    d: &Arc<Daemon>,
    network: &str,
    connect: bool,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    let body: Connect = json_body(req).await?;
    let ep = body.endpoint_config.unwrap_or_default();
    let ip = ep
        .ipam_config
        .and_then(|i| i.ipv4_address)
        .filter(|a| !a.is_empty());
    let ip = match ip {
        Some(a) => Some(a.parse().map_err(|_| ApiError::BadParam {
            name: "IPv4Address",
            value: a.clone(),
        })?),
        None => None,
    };
    let opts = ConnectOptions {
        aliases: ep.aliases.unwrap_or_default(),
        ip,
    };
    let (engine, network) = (d.engine.clone(), network.to_owned());
    blocking(move || {
        match connect {
            true => engine.network_connect(&network, &body.container, &opts)?,
            false => engine.network_disconnect(&network, &body.container)?,
        }
        Ok(())
    })
    .await?;
    Ok(body::empty(StatusCode::OK))
}

/// `GET /volumes`.
pub async fn volumes(d: &Arc<Daemon>, q: &Query) -> Result<Resp, ApiError> {
    let filters = q.filters()?;
    let engine = d.engine.clone();
    let docs = blocking(move || {
        let mut out = Vec::new();
        for v in engine.volumes()? {
            let dangling = v.users == 0;
            let doc = engine.volume_inspect(&v.volume.name)?;
            let keep = match filters.get("dangling").and_then(|d| d.first()) {
                Some(want) => (want == "true" || want == "1") == dangling,
                None => true,
            };
            if keep && matches(&doc, &filters) {
                out.push(doc);
            }
        }
        Ok(out)
    })
    .await?;
    Ok(body::json(
        StatusCode::OK,
        &json!({"Volumes": docs, "Warnings": []}),
    ))
}

/// `GET /volumes/{name}`.
pub async fn volume(d: &Arc<Daemon>, name: &str) -> Result<Resp, ApiError> {
    let (engine, name) = (d.engine.clone(), name.to_owned());
    let doc = blocking(move || Ok(engine.volume_inspect(&name)?)).await?;
    Ok(body::json(StatusCode::OK, &doc))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct VolumeCreate {
    name: String,
    labels: Option<BTreeMap<String, String>>,
}

/// `POST /volumes/create`.
pub async fn volume_create(d: &Arc<Daemon>, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let body: VolumeCreate = json_body(req).await?;
    let engine = d.engine.clone();
    let doc = blocking(move || {
        let name = Some(body.name.as_str()).filter(|n| !n.is_empty());
        Ok(engine.volume_create(name, body.labels.unwrap_or_default())?)
    })
    .await?;
    Ok(body::json(StatusCode::CREATED, &doc))
}

/// `DELETE /volumes/{name}?force=`.
pub async fn volume_remove(d: &Arc<Daemon>, name: &str, q: &Query) -> Result<Resp, ApiError> {
    let (engine, name, force) = (d.engine.clone(), name.to_owned(), q.flag("force"));
    blocking(move || Ok(engine.volume_remove(&name, force)?)).await?;
    Ok(body::empty(StatusCode::NO_CONTENT))
}

/// `POST /containers/prune`, `/networks/prune`, `/volumes/prune`.
pub async fn prune(d: &Arc<Daemon>, what: &str, q: &Query) -> Result<Resp, ApiError> {
    let engine = d.engine.clone();
    let all = q
        .filters()?
        .get("all")
        .is_some_and(|v| v.iter().any(|x| x == "true" || x == "1"));
    let doc = match what {
        "containers" => {
            let (ids, freed) = blocking(move || Ok(engine.container_prune()?)).await?;
            json!({"ContainersDeleted": ids, "SpaceReclaimed": freed})
        }
        "networks" => {
            let names = blocking(move || Ok(engine.network_prune()?)).await?;
            json!({ "NetworksDeleted": names })
        }
        _ => {
            let (names, freed) = blocking(move || Ok(engine.volume_prune(all)?)).await?;
            json!({"VolumesDeleted": names, "SpaceReclaimed": freed})
        }
    };
    Ok(body::json(StatusCode::OK, &doc))
}
