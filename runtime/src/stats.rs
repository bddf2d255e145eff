//! `husk stats`: what a running container uses, read from the host. Under process isolation
//! that is its cgroup (memory, pids) and the processes in it (CPU time, block I/O); under vm
//! isolation it is the VMM process (its CPU time covers every vCPU; its resident memory is
//! what the guest costs the host; its I/O is the guest's disk I/O). Neither isolation has a
//! network device yet, so network I/O is what the sandbox's interfaces other than `lo` moved.

use std::path::{Path, PathBuf};

use crate::container::{ContainerConfig, ContainerState, Isolation};
use crate::procfs;
use crate::sandbox::cgroup::{self, Cgroup};

/// One reading.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sample {
    /// CPU time used so far, in clock ticks (`/proc/<pid>/stat`'s unit).
    pub cpu_ticks: u64,
    /// Memory in use, bytes.
    pub memory: u64,
    /// The memory the container may use, bytes.
    pub limit: u64,
    /// Processes (`None` where the host cannot see them: inside a guest).
    pub pids: Option<u64>,
    /// Bytes read from / written to storage.
    pub block_io: (u64, u64),
    /// Bytes received / sent on network interfaces other than `lo`.
    pub net_io: (u64, u64),
}

/// Default guest RAM when `--memory` was not given (the VMM's default).
const DEFAULT_GUEST_RAM: u64 = 256 << 20;

/// Reads `config`'s container, running as `state` says.
pub fn sample(config: &ContainerConfig, state: &ContainerState) -> Sample {
    let memory_limit = u64::try_from(config.host_config.memory).unwrap_or(0);
    match state.isolation {
        Isolation::Vm => {
            let pid = state.pid;
            Sample {
                cpu_ticks: procfs::cpu_ticks(pid),
                memory: procfs::rss(pid),
                limit: if memory_limit > 0 {
                    memory_limit
                } else {
                    DEFAULT_GUEST_RAM
                },
                pids: None,
                block_io: io(pid),
                net_io: (0, 0),
            }
        }
        Isolation::Process => {
            let dirs = cgroup::detect()
                .map(|l| Cgroup::paths(l, &config.id))
                .unwrap_or_default();
            let procs = dirs.first().map(|d| cgroup::procs(d)).unwrap_or_default();
            let (mut cpu, mut read, mut written) = (0, 0, 0);
            for &pid in &procs {
                cpu += procfs::cpu_ticks(pid);
                let (r, w) = io(pid);
                read += r;
                written += w;
            }
            let host = vmm::host::host_mem_mib().saturating_mul(1 << 20);
            Sample {
                cpu_ticks: cpu,
                memory: cgroup_memory(&dirs),
                limit: if memory_limit > 0 { memory_limit } else { host },
                pids: Some(procs.len() as u64),
                block_io: (read, written),
                net_io: procs.first().map_or((0, 0), |&p| net_io(p)),
            }
        }
    }
}

/// Storage bytes read and written by `pid` (`/proc/<pid>/io`).
fn io(pid: i32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    (field("read_bytes:"), field("write_bytes:"))
}

/// Bytes received and sent on the interfaces (but `lo`) of `pid`'s network namespace.
fn net_io(pid: i32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).unwrap_or_default();
    text.lines()
        .skip(2)
        .filter_map(|l| l.split_once(':'))
        .filter(|(name, _)| name.trim() != "lo")
        .map(|(_, rest)| {
            let v: Vec<u64> = rest
                .split_whitespace()
                .filter_map(|f| f.parse().ok())
                .collect();
            (
                v.first().copied().unwrap_or(0),
                v.get(8).copied().unwrap_or(0),
            )
        })
        .fold((0, 0), |(r, t), (a, b)| (r + a, t + b))
}

/// The cgroup's memory use (v2 `memory.current`, v1 `memory.usage_in_bytes`).
fn cgroup_memory(dirs: &[PathBuf]) -> u64 {
    let read = |p: &Path| {
        std::fs::read_to_string(p)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
    };
    dirs.iter()
        .find_map(|d| {
            read(&d.join("memory.current")).or_else(|| read(&d.join("memory.usage_in_bytes")))
        })
        .unwrap_or(0)
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`).
pub fn ticks_per_second() -> u64 {
    // SAFETY: sysconf takes an integer and has no other effect.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(t).unwrap_or(100).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_per_second_is_known() {
        assert!(ticks_per_second() >= 1);
    }
}
