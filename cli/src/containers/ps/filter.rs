//! `ps --filter`: docker's keys (`status`, `name`, `id`, `label`, `ancestor`, `exited`, and
//! husk's `isolation`). Values of one key are alternatives; different keys must all match.

use std::collections::BTreeMap;

use anyhow::bail;
use runtime::container::Status;
use runtime::lifecycle::Summary;

/// The keys `ps --filter` takes.
const KEYS: &[&str] = &[
    "status",
    "name",
    "id",
    "label",
    "ancestor",
    "exited",
    "isolation",
    "health",
];

/// The statuses docker names.
const STATUSES: &[&str] = &[
    "created",
    "restarting",
    "running",
    "removing",
    "paused",
    "exited",
    "dead",
];

/// Parsed filters: key -> alternatives.
#[derive(Debug, Default)]
pub struct Filters(BTreeMap<String, Vec<String>>);

impl Filters {
    /// Parses `KEY=VALUE` strings, refusing unknown keys and values as docker does.
    pub fn parse(specs: &[String]) -> anyhow::Result<Self> {
        let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for spec in specs {
            let Some((key, value)) = spec.split_once('=') else {
                bail!("bad format of filter (expected name=value)");
            };
            if !KEYS.contains(&key) {
                bail!("invalid filter '{key}'");
            }
            if key == "status" && !STATUSES.contains(&value) {
                bail!(
                    "invalid filter 'status={value}': must be one of {}",
                    STATUSES.join(", ")
                );
            }
            if key == "exited" && value.parse::<i32>().is_err() {
                bail!("invalid filter 'exited={value}'");
            }
            map.entry(key.to_owned())
                .or_default()
                .push(value.to_owned());
        }
        Ok(Self(map))
    }

    /// Whether a filter asks for containers that are not running (so `-a` is implied).
    pub fn names_a_stopped_state(&self) -> bool {
        self.0.contains_key("exited")
            || self
                .0
                .get("status")
                .is_some_and(|v| v.iter().any(|s| s != "running"))
    }

    /// Whether `c` passes every filter.
    pub fn matches(&self, c: &Summary) -> bool {
        self.0
            .iter()
            .all(|(key, values)| values.iter().any(|value| matches_one(c, key, value)))
    }
}

fn matches_one(c: &Summary, key: &str, value: &str) -> bool {
    let state = c.state.observed();
    match key {
        "status" => state.status_word() == value,
        "name" => c.config.name.contains(value.trim_start_matches('/')),
        "id" => c.config.id.starts_with(value),
        "label" => {
            let labels = &c.config.config.labels;
            match value.split_once('=') {
                Some((k, v)) => labels.get(k).is_some_and(|have| have == v),
                None => labels.contains_key(value),
            }
        }
        "ancestor" => {
            let image = &c.config.image_ref;
            image == value
                || image.strip_suffix(":latest") == Some(value)
                || value.strip_suffix(":latest") == Some(image.as_str())
                || c.config
                    .image
                    .trim_start_matches("sha256:")
                    .starts_with(value.trim_start_matches("sha256:"))
        }
        "exited" => {
            state.status == Status::Exited
                && value.parse::<i32>().is_ok_and(|v| v == state.exit_code)
        }
        "isolation" => c.config.host_config.isolation.as_str() == value,
        "health" => match (&state.health, state.running()) {
            (Some(h), true) => h.status == value,
            _ => value == "none",
        },
        _ => false,
    }
}
