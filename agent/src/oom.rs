//! The kernel's OOM kill count (`oom_kill` in `/proc/vmstat`): a process that died of
//! SIGKILL while the count rose was, as far as the agent can tell, killed for memory (in a
//! VM the whole guest is the container's memory; docker's `State.OOMKilled`).

/// The count so far (0 if unreadable).
pub fn kills() -> u64 {
    std::fs::read_to_string("/proc/vmstat")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("oom_kill "))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}
