//! Where husk keeps things: the state directory (`--root`, `HUSK_ROOT`, default
//! `/var/lib/husk`), the cache (`HUSK_CACHE_DIR`, default `~/.cache/husk`), the default
//! guest kernel built by `guest-kernel/build.sh`, the static agent binary and virtiofsd.

use std::path::{Path, PathBuf};

/// Default state directory, as docker's `/var/lib/docker`.
pub const DEFAULT_ROOT: &str = "/var/lib/husk";

/// The state directory: `explicit`, else `HUSK_ROOT`, else the default.
pub fn state_dir(explicit: Option<&Path>) -> PathBuf {
    explicit
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("HUSK_ROOT").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_ROOT))
}

/// The cache directory (see `rootfs::cache_dir`).
pub fn cache_dir() -> Option<PathBuf> {
    rootfs::cache_dir().ok()
}

/// The kernel `guest-kernel/build.sh` last built: `HUSK_KERNEL`, else
/// `<cache>/kernel/vmlinux`.
pub fn default_kernel() -> Option<PathBuf> {
    std::env::var_os("HUSK_KERNEL")
        .map(PathBuf::from)
        .or_else(|| cache_dir().map(|c| c.join("kernel").join("vmlinux")))
}

/// The static agent: `HUSK_AGENT`, else `husk-agent` one directory above the `husk`
/// binary (where `scripts/build-agent.sh` puts it: `target/husk-agent`), else beside it
/// (an installed layout).
pub fn agent_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("HUSK_AGENT") {
        return Some(PathBuf::from(p));
    }
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    [dir.join("..").join("husk-agent"), dir.join("husk-agent")]
        .into_iter()
        .find(|p| p.is_file())
}

/// The virtio-fs daemon that serves vm containers' volumes: `HUSK_VIRTIOFSD`, else
/// `<cache>/tools/virtiofsd` (where `scripts/prepare.sh` installs it from crates.io),
/// else `virtiofsd` on `PATH`.
pub fn virtiofsd() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("HUSK_VIRTIOFSD") {
        return Some(PathBuf::from(p));
    }
    let cached = cache_dir().map(|c| c.join("tools").join("virtiofsd"));
    cached
        .filter(|p| p.is_file())
        .or_else(|| on_path("virtiofsd"))
}

/// The program `name` in a directory of `PATH`, the first that has it.
pub fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}
