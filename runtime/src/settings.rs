//! Host-wide settings for hosts that want other defaults than husk's: the default isolation
//! (`HUSK_ISOLATION` in the environment, else `"default-isolation"` in `<root>/daemon.json`,
//! docker's daemon configuration file, which also holds `insecure-registries`; else `vm`).

use std::path::Path;

/// The environment variable naming the default isolation.
pub const ISOLATION_ENV: &str = "HUSK_ISOLATION";

/// docker's daemon configuration file in the state directory.
pub const DAEMON_CONFIG: &str = "daemon.json";

/// A settings file husk cannot use.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// daemon.json exists but cannot be read.
    #[error("cannot read {0}")]
    Read(String, #[source] std::io::Error),
    /// daemon.json is not JSON of the expected shape.
    #[error("{0} is not valid")]
    Parse(String, #[source] serde_json::Error),
}

#[derive(serde::Deserialize, Default)]
struct DaemonConfig {
    #[serde(rename = "default-isolation", default)]
    default_isolation: Option<String>,
}

/// The default `--isolation` (`vm`, `process` or `auto`; checked where it is used).
pub fn default_isolation(root: &Path, env: Option<String>) -> Result<String, SettingsError> {
    if let Some(v) = env.filter(|v| !v.is_empty()) {
        return Ok(v);
    }
    let path = root.join(DAEMON_CONFIG);
    let shown = path.display().to_string();
    let config: DaemonConfig = match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| SettingsError::Parse(shown, e))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => DaemonConfig::default(),
        Err(e) => return Err(SettingsError::Read(shown, e)),
    };
    Ok(config.default_isolation.unwrap_or_else(|| "vm".to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_then_daemon_json_then_vm() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(default_isolation(dir.path(), None).unwrap(), "vm");
        let file = dir.path().join(DAEMON_CONFIG);
        std::fs::write(
            &file,
            r#"{"default-isolation": "process", "insecure-registries": []}"#,
        )
        .unwrap();
        assert_eq!(default_isolation(dir.path(), None).unwrap(), "process");
        assert_eq!(
            default_isolation(dir.path(), Some("auto".into())).unwrap(),
            "auto"
        );
        std::fs::write(&file, "{").unwrap();
        assert!(default_isolation(dir.path(), None).is_err());
    }
}
