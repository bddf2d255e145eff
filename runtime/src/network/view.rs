//! Networks as docker shows them: `network inspect`'s object and `network ls`'s row.

use std::path::Path;

use serde_json::json;

use super::defs::Net;
use super::ipam;

/// docker's `network inspect` object for `net`, with its running containers.
pub fn inspect(root: &Path, net: &Net) -> serde_json::Value {
    let mut containers = serde_json::Map::new();
    for h in ipam::holders(&net.pool(root), root) {
        let o = h.ip.octets();
        containers.insert(
            h.id.clone(),
            json!({
                "Name": h.names.first().cloned().unwrap_or_default(),
                "EndpointID": "",
                "MacAddress": format!("02:42:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3]),
                "IPv4Address": format!("{}/{}", h.ip, net.subnet.prefix),
                "IPv6Address": "",
            }),
        );
    }
    json!({
        "Name": net.name,
        "Id": net.id,
        "Created": if net.created.is_empty() { "0001-01-01T00:00:00Z" } else { &net.created },
        "Scope": "local",
        "Driver": "bridge",
        "EnableIPv4": true,
        "EnableIPv6": false,
        "IPAM": {
            "Driver": "default",
            "Options": null,
            "Config": [{ "Subnet": net.subnet.to_string(), "Gateway": net.gateway.to_string() }],
        },
        "Internal": net.internal,
        "Attachable": false,
        "Ingress": false,
        "ConfigFrom": { "Network": "" },
        "ConfigOnly": false,
        "Containers": containers,
        "Options": { "com.docker.network.bridge.name": net.iface() },
        "Labels": net.labels,
    })
}

/// One `network ls` row (the fields docker's `--format` knows).
pub fn row(net: &Net) -> serde_json::Value {
    let labels: Vec<String> = net.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    json!({
        "ID": &net.id[..12],
        "Name": net.name,
        "Driver": "bridge",
        "Scope": "local",
        "IPv4": "true",
        "IPv6": "false",
        "Internal": net.internal.to_string(),
        "Labels": labels.join(","),
        "CreatedAt": net.created,
    })
}
