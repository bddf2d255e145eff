//! What `/proc` says about host processes: whether one is alive (a zombie is not), its
//! state letter, parent, children and everything below it, its CPU time, its resident and
//! proportional memory (RSS, PSS). Used to tell when a shim is gone, by `husk stats`, by
//! `husk bench run`, and by the tests.

/// Whether process `pid` exists and is not a zombie (a reparented shim is a zombie until
/// init reaps it, and `kill(pid, 0)` still succeeds on it).
pub fn alive(pid: i32) -> bool {
    state(pid).is_some_and(|s| s != 'Z')
}

/// The state letter of `pid` (`R`, `S`, `D`, `T`, `Z`, ...).
pub fn state(pid: i32) -> Option<char> {
    stat_after_name(pid)?.trim_start().chars().next()
}

/// CPU time of `pid` and of its reaped children, in clock ticks (utime + stime + cutime +
/// cstime); 0 when unreadable.
pub fn cpu_ticks(pid: i32) -> u64 {
    // After the name: state, ppid, ..., utime is the 12th field, cstime the 15th.
    stat_after_name(pid).map_or(0, |rest| {
        rest.split_whitespace()
            .skip(11)
            .take(4)
            .filter_map(|f| f.parse::<u64>().ok())
            .sum()
    })
}

/// Resident memory of `pid` in bytes (`VmRSS`; 0 when unreadable).
pub fn rss(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            let kib = s.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
            kib.split_whitespace().next()?.parse::<u64>().ok()
        })
        .map_or(0, |kib| kib * 1024)
}

/// The fields of `/proc/<pid>/stat` after the command name (which may hold spaces and
/// parentheses, so they start after the last `)`).
fn stat_after_name(pid: i32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(stat[stat.rfind(')')? + 1..].to_owned())
}

/// The parent of `pid`.
pub fn parent_of(pid: i32) -> Option<i32> {
    stat_after_name(pid)?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Every process on the host with its parent.
fn all_with_parents() -> Vec<(i32, i32)> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|p| Some((p, parent_of(p)?)))
        .collect()
}

/// The processes whose parent is `ppid`.
pub fn children_of(ppid: i32) -> Vec<i32> {
    all_with_parents()
        .into_iter()
        .filter(|(_, pp)| *pp == ppid)
        .map(|(p, _)| p)
        .collect()
}

/// The child of `parent` that has pid `ns_pid` in the PID namespace one level below the
/// host's (`NSpid:` of `/proc/<pid>/status`: host pid first, then each nested namespace's).
pub fn child_with_ns_pid(parent: i32, ns_pid: i32) -> Option<i32> {
    children_of(parent).into_iter().find(|&child| {
        std::fs::read_to_string(format!("/proc/{child}/status")).is_ok_and(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("NSpid:"))
                .and_then(|pids| pids.split_whitespace().nth(1)?.parse::<i32>().ok())
                == Some(ns_pid)
        })
    })
}

/// `pid` and every process whose parent chain reaches it.
pub fn tree(pid: i32) -> Vec<i32> {
    let parents = all_with_parents();
    let mut found = vec![pid];
    let mut i = 0;
    while i < found.len() {
        let cur = found[i];
        found.extend(parents.iter().filter(|(_, pp)| *pp == cur).map(|(p, _)| *p));
        i += 1;
    }
    found
}

/// Proportional set size of `pid` in KiB (0 when unreadable).
pub fn pss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_is_seen_alive_in_the_tree_then_gone() {
        let me = i32::try_from(std::process::id()).unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let kid = i32::try_from(child.id()).unwrap();
        assert!(alive(kid));
        assert_eq!(parent_of(kid), Some(me));
        assert!(children_of(me).contains(&kid));
        let t = tree(me);
        assert!(t.contains(&me) && t.contains(&kid), "{t:?}");
        assert!(pss_kib(kid) > 0);
        assert!(rss(kid) > 0);
        assert_eq!(state(kid), Some('S'));
        child.kill().unwrap();
        // A zombie until reaped: not alive.
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(!alive(kid));
        child.wait().unwrap();
        assert!(!alive(kid));
    }
}
