//! `/_ping`, `/version` and `/info`: what clients ask first (the API version they then
//! speak comes from `/_ping`'s `Api-Version` header).

use std::sync::Arc;

use hyper::StatusCode;
use serde_json::json;

use crate::body::{self, Resp};
use crate::error::ApiError;
use crate::server::{Daemon, blocking};

/// Headers on every response (lower-case names: HTTP/1.1 headers are case-insensitive).
pub const SERVER_HEADERS: [(&str, &str); 4] = [
    ("api-version", crate::API_VERSION),
    ("docker-experimental", "false"),
    ("ostype", "linux"),
    (
        "server",
        concat!("husk/", env!("CARGO_PKG_VERSION"), " (linux)"),
    ),
];

/// `GET /_ping`.
pub fn ping() -> Resp {
    let mut r = body::with(StatusCode::OK, "text/plain; charset=utf-8", "OK");
    r.headers_mut().insert(
        hyper::header::CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-cache, no-store, must-revalidate"),
    );
    r
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// `GET /version`.
pub fn version() -> Resp {
    let version = env!("CARGO_PKG_VERSION");
    body::json(
        StatusCode::OK,
        &json!({
            "Platform": {"Name": "husk"},
            "Components": [{"Name": "Engine", "Version": version,
                            "Details": {"ApiVersion": crate::API_VERSION,
                                        "MinAPIVersion": crate::MIN_API_VERSION,
                                        "Os": "linux", "Arch": "amd64"}}],
            "Version": version,
            "ApiVersion": crate::API_VERSION,
            "MinAPIVersion": crate::MIN_API_VERSION,
            "GitCommit": "",
            "GoVersion": "none (husk is written in Rust)",
            "Os": "linux",
            "Arch": "amd64",
            "KernelVersion": kernel_release(),
            "BuildTime": "",
        }),
    )
}

/// `GET /info`.
pub async fn info(d: &Arc<Daemon>) -> Result<Resp, ApiError> {
    let engine = d.engine.clone();
    let doc = blocking(move || {
        let containers = engine.list(true)?;
        let running = containers.iter().filter(|c| c.state.running()).count();
        let paused = containers
            .iter()
            .filter(|c| c.state.running() && c.state.paused)
            .count();
        let images = engine.images()?.len();
        let host = runtime::info::gather(engine.root(), std::path::Path::new("/dev/kvm"));
        let default = engine.isolation(None).map(|i| i.as_str()).unwrap_or("vm");
        Ok(json!({
            "ID": "husk",
            "Containers": containers.len(),
            "ContainersRunning": running - paused,
            "ContainersPaused": paused,
            "ContainersStopped": containers.len() - running,
            "Images": images,
            "Driver": "husk-layers",
            "DriverStatus": [["Layers", "read-only block images, one scratch disk per container"]],
            "Plugins": {"Volume": ["local"], "Network": ["bridge", "host", "null"], "Log": ["json-file"]},
            "MemoryLimit": true, "SwapLimit": false, "CpuCfsPeriod": true, "CpuCfsQuota": true,
            "CPUShares": false, "CPUSet": false, "PidsLimit": true, "IPv4Forwarding": true,
            "Debug": false, "NFd": 0, "NGoroutines": 0, "SystemTime": runtime::container::now(),
            "LoggingDriver": "json-file",
            "CgroupDriver": "cgroupfs",
            "CgroupVersion": if host.cgroups == "v2" { "2" } else { "1" },
            "KernelVersion": host.host_kernel,
            "OperatingSystem": "husk (every container in its own KVM microVM)",
            "OSType": "linux",
            "Architecture": std::env::consts::ARCH,
            "NCPU": host.cpus,
            "MemTotal": host.memory_mib * 1024 * 1024,
            "IndexServerAddress": "https://index.docker.io/v1/",
            "RegistryConfig": {"IndexConfigs": {}, "InsecureRegistryCIDRs": ["127.0.0.0/8"]},
            "DockerRootDir": engine.root(),
            "Name": hostname(),
            "Labels": [],
            "ExperimentalBuild": false,
            "ServerVersion": env!("CARGO_PKG_VERSION"),
            "Runtimes": {"vm": {"path": "husk"}, "process": {"path": "husk"}},
            "DefaultRuntime": default,
            "Isolation": default,
            "Swarm": {"LocalNodeState": "inactive", "NodeID": "", "NodeAddr": "",
                      "ControlAvailable": false, "Error": "", "RemoteManagers": null},
            "LiveRestoreEnabled": true,
            "InitBinary": "", "SecurityOptions": ["name=kvm-microvm"],
            "Warnings": [],
        }))
    })
    .await?;
    Ok(body::json(StatusCode::OK, &doc))
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}
