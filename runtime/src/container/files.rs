//! The one place that names the files of a container's directory
//! (`<root>/containers/<id>/`): what the store, the shim, the sandboxes, the network and
//! the logs keep there. Everything else asks a [`ContainerDir`] for a path (or takes a
//! socket's bare name from here, for the short paths of `sockpath`).

use std::path::{Path, PathBuf};

/// `config.json`: the container's run config, written at create (and by rename/update).
pub const CONFIG: &str = "config.json";
/// `state.json`: its status, rewritten by the shim and the lifecycle verbs.
pub const STATE: &str = "state.json";
/// `lock`: the flock every writer of the directory holds.
pub const LOCK: &str = "lock";
/// The workload's output, one JSON record per chunk.
pub const LOG: &str = "log.jsonl";
/// The shim's own log.
pub const SHIM_LOG: &str = "shim.log";
/// The shim's control socket.
pub const SHIM_SOCKET: &str = "shim.sock";
/// The container's writable disk (the overlay's upper).
pub const SCRATCH: &str = "scratch.img";
/// The addresses, ports and host links of its networks (`network::Settings`).
pub const NETWORK: &str = "network.json";
/// `/etc/resolv.conf` as given to the sandbox.
pub const RESOLV_CONF: &str = "resolv.conf";
/// `/etc/hosts`, likewise.
pub const HOSTS: &str = "hosts";
/// `/etc/hostname`, likewise.
pub const HOSTNAME: &str = "hostname";
/// A process sandbox's agent socket.
pub const AGENT_SOCKET: &str = "agent.sock";
/// A process sandbox's agent log.
pub const AGENT_LOG: &str = "agent.log";
/// A VM sandbox's vsock, as a host unix socket (Firecracker's `CONNECT <port>`;
/// guest-initiated connections to host port P go to `vsock.sock_P` beside it).
pub const VSOCK_SOCKET: &str = "vsock.sock";
/// A VM sandbox's VMM control socket (pause, snapshot).
pub const VMM_SOCKET: &str = "vmm.sock";
/// A VM sandbox's VMM config.
pub const VMM_CONFIG: &str = "vmm.json";
/// A VM sandbox's VMM log.
pub const VMM_LOG: &str = "vmm.log";
/// Written by a VM sandbox's VMM when the guest it restored has the container's scratch
/// disk mounted already (a warm start's fresh scratch disk: `scratch`), or the image's
/// rootfs assembled over it too (an image template: `rootfs`); removed before each start.
pub const SCRATCH_READY: &str = "scratch-ready";
/// A VM sandbox's serial console.
pub const CONSOLE_LOG: &str = "console.log";
/// The vhost-user socket of a VM sandbox's virtiofsd (shared volumes).
pub const FS_SOCKET: &str = "fs.sock";
/// That virtiofsd's log.
pub const VIRTIOFSD_LOG: &str = "virtiofsd.log";

/// A container's (or a sandbox's) directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerDir {
    path: PathBuf,
}

impl ContainerDir {
    /// The directory at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The directory itself.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A file of it, by one of this module's names.
    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// [`CONFIG`].
    pub fn config(&self) -> PathBuf {
        self.file(CONFIG)
    }

    /// [`STATE`].
    pub fn state(&self) -> PathBuf {
        self.file(STATE)
    }

    /// [`LOCK`].
    pub fn lock(&self) -> PathBuf {
        self.file(LOCK)
    }

    /// [`LOG`].
    pub fn log(&self) -> PathBuf {
        self.file(LOG)
    }

    /// [`SCRATCH`].
    pub fn scratch(&self) -> PathBuf {
        self.file(SCRATCH)
    }

    /// [`NETWORK`].
    pub fn network(&self) -> PathBuf {
        self.file(NETWORK)
    }
}

impl AsRef<Path> for ContainerDir {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_is_a_distinct_plain_file_name() {
        let names = [
            CONFIG,
            STATE,
            LOCK,
            LOG,
            SHIM_LOG,
            SHIM_SOCKET,
            SCRATCH,
            NETWORK,
            RESOLV_CONF,
            HOSTS,
            HOSTNAME,
            AGENT_SOCKET,
            AGENT_LOG,
            VSOCK_SOCKET,
            VMM_SOCKET,
            VMM_CONFIG,
            VMM_LOG,
            CONSOLE_LOG,
            FS_SOCKET,
            VIRTIOFSD_LOG,
        ];
        let unique: std::collections::BTreeSet<_> = names.iter().collect();
        assert_eq!(unique.len(), names.len());
        assert!(
            names
                .iter()
                .all(|n| !n.contains('/') && !n.starts_with('.'))
        );
        let d = ContainerDir::new("/x/containers/ab");
        assert_eq!(d.state(), Path::new("/x/containers/ab/state.json"));
        assert_eq!(d.file(VMM_LOG), Path::new("/x/containers/ab/vmm.log"));
    }
}
