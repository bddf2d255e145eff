//! docker's `--device HOST[:CONTAINER][:PERMISSIONS]`: a host device node made available in
//! a container. Only under process isolation, where the container shares the host's kernel
//! and its devices; a microVM has a kernel and devices of its own, so vm refuses the flag.
//! The agent bind-mounts the node; everything else the container's root holds is `nodev`.
//! Without a devices cgroup a node opens for reading and writing alike (a read-only mount
//! does not stop writes to a device), so permissions must include `r` and `w`.

use std::os::unix::fs::FileTypeExt;

use serde::{Deserialize, Serialize};

use crate::container::Isolation;

/// Errors in `--device` (docker's messages where docker has one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    /// Malformed.
    #[error("invalid device specification: {0}")]
    Invalid(String),
    /// The host path is missing or not a device.
    #[error("error gathering device information while adding custom device {path:?}: {why}")]
    NotADevice {
        /// The host path.
        path: String,
        /// Why.
        why: String,
    },
    /// Permissions husk cannot enforce.
    #[error(
        "device permissions {0:?}: husk opens --device nodes for reading and writing (rw or rwm)"
    )]
    Permissions(String),
    /// Asked for under vm isolation.
    #[error(
        "--device is not supported under vm isolation: a microVM has no host devices (use --isolation process)"
    )]
    Vm,
}

/// docker's `HostConfig.Devices` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeviceMapping {
    /// The host's node.
    pub path_on_host: String,
    /// Where it appears in the container.
    pub path_in_container: String,
    /// `r`, `w`, `m` letters.
    pub cgroup_permissions: String,
}

impl DeviceMapping {
    /// What the agent mounts.
    pub fn mount(&self) -> agent_proto::DeviceMount {
        agent_proto::DeviceMount {
            source: self.path_on_host.clone(),
            target: self.path_in_container.clone(),
        }
    }
}

/// Parses and checks one `--device` for a container of `isolation`.
pub fn parse(text: &str, isolation: Isolation) -> Result<DeviceMapping, DeviceError> {
    if isolation == Isolation::Vm {
        return Err(DeviceError::Vm);
    }
    let invalid = || DeviceError::Invalid(text.to_owned());
    let perms_ok = |p: &str| !p.is_empty() && p.chars().all(|c| "rwm".contains(c));
    let parts: Vec<&str> = text.split(':').collect();
    let (host, container, perms) = match parts.as_slice() {
        [host] => (*host, *host, "rwm"),
        [host, p] if perms_ok(p) => (*host, *host, *p),
        [host, container] => (*host, *container, "rwm"),
        [host, container, p] if perms_ok(p) => (*host, *container, *p),
        _ => return Err(invalid()),
    };
    let clean =
        |p: &str| p.starts_with('/') && !p.split('/').skip(1).any(|c| matches!(c, "" | "." | ".."));
    if !clean(host) || !clean(container) {
        return Err(invalid());
    }
    if !(perms.contains('r') && perms.contains('w')) {
        return Err(DeviceError::Permissions(perms.to_owned()));
    }
    let not_device = |why: String| DeviceError::NotADevice {
        path: host.to_owned(),
        why,
    };
    let meta = std::fs::metadata(host).map_err(|e| not_device(io_text(&e)))?;
    let kind = meta.file_type();
    if !(kind.is_char_device() || kind.is_block_device()) {
        return Err(not_device("not a device node".into()));
    }
    Ok(DeviceMapping {
        path_on_host: host.to_owned(),
        path_in_container: container.to_owned(),
        cgroup_permissions: perms.to_owned(),
    })
}

/// `no such file or directory`: an I/O error as Go writes it.
fn io_text(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".into(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_device_syntax() {
        let p = |t: &str| parse(t, Isolation::Process);
        let d = p("/dev/null").unwrap();
        assert_eq!(
            (d.path_in_container.as_str(), d.cgroup_permissions.as_str()),
            ("/dev/null", "rwm")
        );
        let d = p("/dev/zero:/dev/z:rw").unwrap();
        assert_eq!(d.path_in_container, "/dev/z");
        assert_eq!(p("/dev/zero:rw").unwrap().path_in_container, "/dev/zero");
        assert_eq!(
            p("/dev/zero:/dev/z:r"),
            Err(DeviceError::Permissions("r".into()))
        );
        for bad in [
            "dev/null",
            "/dev/null:x:y:z",
            "/dev/null:/a/../b",
            "/dev/null:/d:q",
        ] {
            assert!(matches!(p(bad), Err(DeviceError::Invalid(_))), "{bad}");
        }
        assert_eq!(
            p("/dev/nosuch").unwrap_err().to_string(),
            "error gathering device information while adding custom device \"/dev/nosuch\": no such file or directory"
        );
        assert!(matches!(
            p("/etc/passwd"),
            Err(DeviceError::NotADevice { .. })
        ));
        assert_eq!(parse("/dev/null", Isolation::Vm), Err(DeviceError::Vm));
    }
}
