//! docker's summary shapes of a container: the STATUS wording ("Up 2 seconds", "Exited (0)
//! 3 seconds ago") and the Engine API's `ContainerSummary` (`GET /containers/json`), shared
//! by `husk ps` and the daemon.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::container::{ContainerState, Status};
use crate::lifecycle::Summary;

/// `About an hour`, `3 days`, ... (docker's `HumanDuration`).
pub fn human_duration(secs: i64) -> String {
    let s = secs.max(0);
    let minutes = s / 60;
    let hours = (s as f64 / 3600.0 + 0.5) as i64;
    match () {
        _ if s < 1 => "Less than a second".into(),
        _ if s == 1 => "1 second".into(),
        _ if s < 60 => format!("{s} seconds"),
        _ if minutes == 1 => "About a minute".into(),
        _ if minutes < 60 => format!("{minutes} minutes"),
        _ if hours == 1 => "About an hour".into(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
        _ if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
        _ if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        _ => format!("{} years", hours / 24 / 365),
    }
}

fn since(t: &str, now: DateTime<Utc>) -> Option<i64> {
    let t = DateTime::parse_from_rfc3339(t).ok()?;
    Some((now - t.with_timezone(&Utc)).num_seconds())
}

/// docker's STATUS column.
pub fn status(s: &ContainerState, now: DateTime<Utc>) -> String {
    let ago = |t: &str| match since(t, now) {
        Some(secs) => format!(" {} ago", human_duration(secs)),
        None => String::new(),
    };
    let s = &s.observed();
    match s.status {
        Status::Running if s.running() => {
            let up = match since(&s.started_at, now) {
                Some(secs) => format!("Up {}", human_duration(secs)),
                None => "Up".to_owned(),
            };
            match (s.paused, s.health.as_ref().map(|h| h.status.as_str())) {
                (true, _) => format!("{up} (Paused)"),
                (false, Some("starting")) => format!("{up} (health: starting)"),
                (false, Some(health)) => format!("{up} ({health})"),
                (false, None) => up,
            }
        }
        Status::Restarting if s.running() => {
            format!("Restarting ({}){}", s.exit_code, ago(&s.finished_at))
        }
        Status::Created => "Created".to_owned(),
        Status::Dead => "Dead".to_owned(),
        Status::Removing => "Removal In Progress".to_owned(),
        // Exited, or running/restarting under a shim that is gone.
        _ => format!("Exited ({}){}", s.exit_code, ago(&s.finished_at)),
    }
}

/// The Engine API's `ContainerSummary` of one container (`GET /containers/json`).
pub fn api_summary(r: &Summary, now: DateTime<Utc>) -> Value {
    let c = &r.config;
    let created = DateTime::parse_from_rfc3339(&c.created).map_or(0, |t| t.timestamp());
    let command = std::iter::once(c.path.as_str())
        .chain(c.args.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join(" ");
    let ports: Vec<Value> = r
        .networks
        .iter()
        .flat_map(|n| n.ports.iter())
        .map(|p| {
            json!({
                "IP": p.host_ip.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED).to_string(),
                "PrivatePort": p.container_port,
                "PublicPort": p.host_port,
                "Type": p.proto.as_str(),
            })
        })
        .collect();
    let networks: serde_json::Map<String, Value> = r
        .networks
        .iter()
        .map(|n| {
            (
                n.network.clone(),
                json!({"IPAddress": n.ip.map(|a| a.to_string()).unwrap_or_default(),
                       "NetworkID": n.network_id, "MacAddress": n.mac,
                       "Gateway": n.gateway.map(|a| a.to_string()).unwrap_or_default(),
                       "IPPrefixLen": n.prefix}),
            )
        })
        .collect();
    json!({
        "Id": c.id,
        "Names": [format!("/{}", c.name)],
        "Image": c.image_ref,
        "ImageID": c.image,
        "Command": command,
        "Created": created,
        "Ports": ports,
        "Labels": c.config.labels,
        "State": r.state.observed().status_word(),
        "Status": status(&r.state, now),
        "HostConfig": {"NetworkMode": c.host_config.network_mode.as_str()},
        "NetworkSettings": {"Networks": networks},
        "Mounts": [],
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn at(t: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(t).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn durations_like_docker() {
        assert_eq!(human_duration(0), "Less than a second");
        assert_eq!(human_duration(30), "30 seconds");
        assert_eq!(human_duration(90), "About a minute");
        assert_eq!(human_duration(600), "10 minutes");
        assert_eq!(human_duration(3600), "About an hour");
        assert_eq!(human_duration(7200), "2 hours");
        assert_eq!(human_duration(3 * 86400), "3 days");
        assert_eq!(human_duration(20 * 86400), "2 weeks");
        assert_eq!(human_duration(100 * 86400), "3 months");
    }

    #[test]
    fn status_words_like_docker() {
        let now = at("2024-01-01T00:01:00Z");
        let exited = ContainerState {
            status: Status::Exited,
            exit_code: 3,
            finished_at: "2024-01-01T00:00:57.5Z".into(),
            ..ContainerState::default()
        };
        assert_eq!(status(&exited, now), "Exited (3) 2 seconds ago");
        let created = ContainerState::default();
        assert_eq!(status(&created, now), "Created");
        // Running with our own pid as the shim: alive.
        let running = ContainerState {
            status: Status::Running,
            shim_pid: std::process::id() as i32,
            started_at: "2024-01-01T00:00:30Z".into(),
            ..ContainerState::default()
        };
        assert_eq!(status(&running, now), "Up 30 seconds");
        // Running according to the file, but the shim is gone: its exit was lost.
        let stale = ContainerState {
            shim_pid: 0,
            exit_code: 0,
            ..running
        };
        assert_eq!(status(&stale, now), "Exited (255)");
    }
}
