//! Docker's typed models of a container create (the Engine API's `POST /containers/create`
//! body: `Config`, `HostConfig`, `NetworkingConfig`), as clients send them, and their
//! translation into husk's run flags (`spec::RunFlags`), so that one set of rules
//! (`spec::build`) turns the CLI's flags and the API's bodies into containers alike.
//!
//! Every field is optional (clients send nulls and omit what they do not set); what husk
//! cannot honour yet is accepted and ignored only where docker itself treats it as a hint
//! (`Domainname`, `MacAddress`, ...). Unknown fields are ignored, as docker does.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::container::Isolation;
use crate::spec::RunFlags;

/// The create body: docker's `ContainerConfig` with `HostConfig` and `NetworkingConfig`
/// inside it.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CreateBody {
    /// The image as typed by the user.
    pub image: String,
    /// Hostname (default: the short ID).
    pub hostname: Option<String>,
    /// `-u`.
    pub user: Option<String>,
    /// `-e`, already `KEY=VALUE`.
    pub env: Option<Vec<String>>,
    /// Arguments (replace the image's Cmd).
    pub cmd: Option<Vec<String>>,
    /// `--entrypoint` as argv.
    pub entrypoint: Option<Vec<String>>,
    /// `-w`.
    pub working_dir: Option<String>,
    /// `--label`.
    pub labels: Option<BTreeMap<String, String>>,
    /// `-t`.
    pub tty: bool,
    /// `-i`.
    pub open_stdin: bool,
    /// Whether a client will attach to stdout (foreground `run`).
    pub attach_stdout: bool,
    /// Whether a client will attach to stderr.
    pub attach_stderr: bool,
    /// `--stop-signal`.
    pub stop_signal: Option<String>,
    /// `--stop-timeout` (seconds).
    pub stop_timeout: Option<i64>,
    /// `EXPOSE` from the client (merged with the image's by docker; husk keeps the image's).
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    /// `--health-*` (durations in nanoseconds; `Test` `["NONE"]` disables the image's).
    pub healthcheck: Option<HealthcheckBody>,
    /// The host side.
    pub host_config: Option<HostConfigBody>,
    /// Per-network endpoint settings (aliases, a fixed address).
    pub networking_config: Option<NetworkingConfig>,
}

/// A create body's health check.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct HealthcheckBody {
    /// `["CMD", ...]`, `["CMD-SHELL", cmd]` or `["NONE"]`; empty inherits the image's.
    pub test: Option<Vec<String>>,
    /// Nanoseconds between checks (0: inherit).
    pub interval: i64,
    /// Nanoseconds a check may run (0: inherit).
    pub timeout: i64,
    /// Nanoseconds after start in which failures do not count (0: inherit).
    pub start_period: i64,
    /// Nanoseconds between checks in the start period (0: inherit).
    pub start_interval: i64,
    /// Failures that make it unhealthy (0: inherit).
    pub retries: i64,
}

impl HealthcheckBody {
    fn flags(&self) -> crate::health::HealthFlags {
        let ns = |v: i64| (v != 0).then(|| format!("{v}ns"));
        let test = self.test.clone().filter(|t| !t.is_empty());
        crate::health::HealthFlags {
            none: test
                .as_deref()
                .is_some_and(|t| t.first().is_some_and(|w| w == "NONE")),
            test: test.filter(|t| t.first().is_none_or(|w| w != "NONE")),
            interval: ns(self.interval),
            timeout: ns(self.timeout),
            start_period: ns(self.start_period),
            start_interval: ns(self.start_interval),
            retries: (self.retries != 0).then_some(self.retries),
            cmd: None,
        }
    }
}

/// Docker's `HostConfig` (the fields husk reads).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct HostConfigBody {
    /// `-v SRC:DST[:OPTS]`.
    pub binds: Option<Vec<String>>,
    /// `--mount`.
    pub mounts: Option<Vec<Mount>>,
    /// `--network`: bridge, default, none, host or a user network.
    pub network_mode: Option<String>,
    /// `-p`: `"80/tcp": [{"HostIp": "", "HostPort": "8080"}]`.
    pub port_bindings: Option<BTreeMap<String, Option<Vec<PortBinding>>>>,
    /// `-P`.
    pub publish_all_ports: bool,
    /// `--restart`.
    pub restart_policy: Option<RestartPolicyBody>,
    /// `--rm`.
    pub auto_remove: bool,
    /// `--memory` in bytes (0: husk's default).
    pub memory: i64,
    /// `--cpus` in billionths of a CPU (0: all).
    pub nano_cpus: i64,
    /// `--cap-add`.
    pub cap_add: Option<Vec<String>>,
    /// `--cap-drop`.
    pub cap_drop: Option<Vec<String>>,
    /// `--privileged`.
    pub privileged: bool,
    /// `--read-only`.
    pub readonly_rootfs: bool,
    /// `--dns`.
    pub dns: Option<Vec<String>>,
    /// `--add-host NAME:IP`.
    pub extra_hosts: Option<Vec<String>>,
    /// `--tmpfs PATH:OPTS`.
    pub tmpfs: Option<BTreeMap<String, String>>,
    /// `--init`.
    pub init: Option<bool>,
    /// `--shm-size` in bytes.
    pub shm_size: i64,
    /// `--ulimit`.
    pub ulimits: Option<Vec<UlimitBody>>,
    /// `--sysctl`.
    pub sysctls: Option<BTreeMap<String, String>>,
    /// `--pids-limit`.
    pub pids_limit: Option<i64>,
    /// `--volumes-from`.
    pub volumes_from: Option<Vec<String>>,
    /// `--device`.
    pub devices: Option<Vec<DeviceBody>>,
    /// `--isolation`: husk reads `vm`, `process` or `auto` here (`default` or empty: the
    /// host's default, `husk system isolation`).
    pub isolation: Option<String>,
}

/// One `--mount`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Mount {
    /// `bind`, `volume` or `tmpfs`.
    #[serde(rename = "Type")]
    pub kind: String,
    /// Host path or volume name.
    pub source: Option<String>,
    /// Path in the container.
    pub target: String,
    /// `readonly`.
    pub read_only: bool,
}

/// One host binding of a published port.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct PortBinding {
    /// The host address (empty: every address).
    pub host_ip: String,
    /// The host port (empty: an ephemeral one).
    pub host_port: String,
}

/// `--restart`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct RestartPolicyBody {
    /// `no`, `always`, `on-failure`, `unless-stopped` (empty: no).
    pub name: String,
    /// on-failure's retry bound (0: none).
    pub maximum_retry_count: i64,
}

/// One `--ulimit`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct UlimitBody {
    /// `nofile`, `nproc`, ...
    pub name: String,
    /// Soft limit.
    pub soft: i64,
    /// Hard limit.
    pub hard: i64,
}

/// One `--device`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct DeviceBody {
    /// The host's device node.
    pub path_on_host: String,
    /// Where it appears in the container.
    pub path_in_container: String,
    /// `rwm`.
    pub cgroup_permissions: String,
}

/// `NetworkingConfig`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct NetworkingConfig {
    /// Per network name.
    pub endpoints_config: Option<BTreeMap<String, Option<EndpointConfig>>>,
}

/// One network's endpoint settings.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct EndpointConfig {
    /// `--network-alias`.
    pub aliases: Option<Vec<String>>,
    /// `--ip`.
    #[serde(rename = "IPAMConfig")]
    pub ipam_config: Option<IpamConfig>,
}

/// An endpoint's fixed addresses.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct IpamConfig {
    /// `--ip`.
    #[serde(rename = "IPv4Address")]
    pub ipv4_address: Option<String>,
}

impl CreateBody {
    /// The run flags this body asks for, under `isolation` (resolved by the caller from
    /// `HostConfig.Isolation`); `name` is the request's `?name=`.
    pub fn flags(&self, name: Option<String>, isolation: Isolation) -> RunFlags {
        let host = self.host_config.clone().unwrap_or_default();
        let network = host.network_mode.clone().filter(|m| m != "default");
        let endpoint = network
            .as_deref()
            .and_then(|n| self.endpoint(n))
            .unwrap_or_default();
        RunFlags {
            name: name.filter(|n| !n.is_empty()),
            env: self.env.clone().unwrap_or_default(),
            workdir: self.working_dir.clone().filter(|w| !w.is_empty()),
            user: self.user.clone().filter(|u| !u.is_empty()),
            entrypoint: self.entrypoint.clone(),
            hostname: self.hostname.clone().filter(|h| !h.is_empty()),
            interactive: self.open_stdin,
            tty: self.tty,
            cpus: (host.nano_cpus > 0).then(|| nano_to_cpus(host.nano_cpus)),
            memory: (host.memory > 0).then(|| host.memory.to_string()),
            restart: host.restart_policy.as_ref().and_then(restart_flag),
            isolation,
            attach: self.attach_stdout || self.attach_stderr,
            auto_remove: host.auto_remove,
            init: host.init.unwrap_or(false),
            network,
            network_aliases: endpoint.aliases.unwrap_or_default(),
            ip: endpoint
                .ipam_config
                .and_then(|i| i.ipv4_address)
                .filter(|a| !a.is_empty()),
            publish: publish_flags(host.port_bindings.as_ref()),
            publish_all: host.publish_all_ports,
            add_hosts: host.extra_hosts.unwrap_or_default(),
            dns: host.dns.unwrap_or_default(),
            labels: self
                .labels
                .iter()
                .flatten()
                .map(|(k, v)| format!("{k}={v}"))
                .collect(),
            stop_signal: self.stop_signal.clone().filter(|s| !s.is_empty()),
            stop_timeout: self.stop_timeout,
            cap_add: host.cap_add.unwrap_or_default(),
            cap_drop: host.cap_drop.unwrap_or_default(),
            privileged: host.privileged,
            read_only: host.readonly_rootfs,
            shm_size: (host.shm_size > 0).then(|| host.shm_size.to_string()),
            ulimits: host
                .ulimits
                .iter()
                .flatten()
                .map(|u| format!("{}={}:{}", u.name, u.soft, u.hard))
                .collect(),
            tmpfs: host
                .tmpfs
                .iter()
                .flatten()
                .map(|(p, o)| match o.is_empty() {
                    true => p.clone(),
                    false => format!("{p}:{o}"),
                })
                .collect(),
            volumes: host.binds.unwrap_or_default(),
            mounts: host.mounts.iter().flatten().map(mount_flag).collect(),
            volumes_from: host.volumes_from.unwrap_or_default(),
            sysctls: host
                .sysctls
                .iter()
                .flatten()
                .map(|(k, v)| format!("{k}={v}"))
                .collect(),
            pids_limit: host.pids_limit.filter(|p| *p != 0),
            devices: host.devices.iter().flatten().map(device_flag).collect(),
            cmd: self.cmd.clone().unwrap_or_default(),
            health: self
                .healthcheck
                .as_ref()
                .map(HealthcheckBody::flags)
                .unwrap_or_default(),
            ..RunFlags::default()
        }
    }

    /// `HostConfig.Isolation` as asked (`None`: the host's default).
    pub fn isolation(&self) -> Option<&str> {
        self.host_config
            .as_ref()
            .and_then(|h| h.isolation.as_deref())
            .filter(|i| !i.is_empty() && *i != "default")
    }

    fn endpoint(&self, network: &str) -> Option<EndpointConfig> {
        self.networking_config
            .as_ref()?
            .endpoints_config
            .as_ref()?
            .get(network)
            .cloned()
            .flatten()
    }
}

fn nano_to_cpus(nano: i64) -> String {
    format!("{}.{:09}", nano / 1_000_000_000, nano % 1_000_000_000)
}

fn restart_flag(p: &RestartPolicyBody) -> Option<String> {
    match (p.name.as_str(), p.maximum_retry_count) {
        ("", _) => None,
        ("on-failure", n) if n > 0 => Some(format!("on-failure:{n}")),
        (name, _) => Some(name.to_owned()),
    }
}

/// `-p` flags (`[IP:]HOSTPORT:PORT/PROTO`, `[IP::]PORT/PROTO` for an ephemeral port).
fn publish_flags(bindings: Option<&BTreeMap<String, Option<Vec<PortBinding>>>>) -> Vec<String> {
    let mut out = Vec::new();
    for (port, hosts) in bindings.into_iter().flatten() {
        let hosts = hosts.clone().unwrap_or_default();
        if hosts.is_empty() {
            out.push(port.clone());
        }
        for h in hosts {
            out.push(match (h.host_ip.as_str(), h.host_port.as_str()) {
                ("", "") => port.clone(),
                ("", hp) => format!("{hp}:{port}"),
                (ip, hp) => format!("{ip}:{hp}:{port}"),
            });
        }
    }
    out
}

fn mount_flag(m: &Mount) -> String {
    let mut parts = vec![format!("type={}", m.kind)];
    if let Some(s) = m.source.as_deref().filter(|s| !s.is_empty()) {
        parts.push(format!("source={s}"));
    }
    parts.push(format!("target={}", m.target));
    if m.read_only {
        parts.push("readonly".to_owned());
    }
    parts.join(",")
}

fn device_flag(d: &DeviceBody) -> String {
    let mut s = d.path_on_host.clone();
    if !d.path_in_container.is_empty() {
        s = format!("{s}:{}", d.path_in_container);
    }
    if !d.cgroup_permissions.is_empty() {
        s = format!("{s}:{}", d.cgroup_permissions);
    }
    s
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn docker_cli_body_becomes_run_flags() {
        let body: CreateBody = serde_json::from_str(
            r#"{"Image":"busybox","Cmd":["echo","hi"],"Entrypoint":null,"Env":["A=1"],
            "Tty":false,"OpenStdin":true,"AttachStdout":true,"Labels":{"k":"v"},
            "HostConfig":{"AutoRemove":true,"NetworkMode":"default","Memory":67108864,
              "NanoCpus":1500000000,"Isolation":"process",
              "PortBindings":{"80/tcp":[{"HostIp":"127.0.0.1","HostPort":"8080"}],"81/tcp":[{"HostIp":"","HostPort":""}]},
              "RestartPolicy":{"Name":"on-failure","MaximumRetryCount":3},
              "Tmpfs":{"/run":"size=1m"},"Binds":["v:/data:ro"]},
            "NetworkingConfig":{"EndpointsConfig":{"net1":{"Aliases":["a"]}}}}"#,
        )
        .unwrap();
        assert_eq!(body.isolation(), Some("process"));
        let f = body.flags(Some("web".into()), Isolation::Process);
        assert_eq!(f.name.as_deref(), Some("web"));
        assert_eq!(f.cmd, ["echo", "hi"]);
        assert_eq!(f.entrypoint, None);
        assert!(f.interactive && f.attach && f.auto_remove);
        assert_eq!(f.network, None);
        assert_eq!(f.memory.as_deref(), Some("67108864"));
        assert_eq!(f.cpus.as_deref(), Some("1.500000000"));
        assert_eq!(f.restart.as_deref(), Some("on-failure:3"));
        assert_eq!(f.publish, ["127.0.0.1:8080:80/tcp", "81/tcp"]);
        assert_eq!(f.tmpfs, ["/run:size=1m"]);
        assert_eq!(f.volumes, ["v:/data:ro"]);
        assert_eq!(f.labels, ["k=v"]);
    }

    #[test]
    fn endpoint_settings_of_the_chosen_network_apply() {
        let body: CreateBody = serde_json::from_str(
            r#"{"Image":"x","HostConfig":{"NetworkMode":"net1"},
            "NetworkingConfig":{"EndpointsConfig":{"net1":{"Aliases":["web"],"IPAMConfig":{"IPv4Address":"10.1.0.5"}}}}}"#,
        )
        .unwrap();
        let f = body.flags(None, Isolation::Vm);
        assert_eq!(f.network.as_deref(), Some("net1"));
        assert_eq!(f.network_aliases, ["web"]);
        assert_eq!(f.ip.as_deref(), Some("10.1.0.5"));
        assert_eq!(body.isolation(), None);
    }

    #[test]
    fn healthchecks_in_nanoseconds_and_none() {
        let body: CreateBody = serde_json::from_str(
            r#"{"Image":"x","Healthcheck":{"Test":["CMD","true"],"Interval":2000000000,"Retries":3}}"#,
        )
        .unwrap();
        let h = body.flags(None, Isolation::Vm).health;
        assert_eq!(h.test.unwrap(), ["CMD", "true"]);
        assert_eq!(h.interval.as_deref(), Some("2000000000ns"));
        assert_eq!((h.retries, h.none, h.timeout), (Some(3), false, None));
        let none: CreateBody =
            serde_json::from_str(r#"{"Image":"x","Healthcheck":{"Test":["NONE"]}}"#).unwrap();
        let h = none.flags(None, Isolation::Vm).health;
        assert!(h.none && h.test.is_none());
    }

    #[test]
    fn nulls_everywhere_are_fine() {
        let body: CreateBody = serde_json::from_str(
            r#"{"Image":"x","Cmd":null,"Env":null,"Labels":null,"HostConfig":null,"NetworkingConfig":null}"#,
        )
        .unwrap();
        let f = body.flags(None, Isolation::Vm);
        assert!(f.cmd.is_empty() && f.env.is_empty() && f.publish.is_empty());
    }
}
