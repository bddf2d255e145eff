//! `husk-top`: the agent binary run as a process of the container (`Tool::Top`) to list
//! the container's processes as `ps -ef` shows them (docker's `top`): it runs in the
//! container's PID and mount namespaces, so `/proc` holds exactly the container's
//! processes, numbered as the container sees them. Prints `agent_proto::Top` as JSON.

use std::fs;

use agent_proto::Top;

/// The name the agent runs under as the top tool.
pub const ARGV0: &str = "husk-top";

/// `ps -ef`'s columns.
const TITLES: [&str; 8] = ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"];

/// Whether this process was started as the top tool.
pub fn invoked() -> bool {
    crate::self_exe::invoked_as(ARGV0)
}

/// The command that runs the tool.
pub fn command() -> std::io::Result<crate::launch::Command> {
    crate::self_exe::command(ARGV0)
}

/// Prints the table; returns the exit code.
pub fn main() -> i32 {
    let top = Top {
        titles: TITLES.iter().map(|t| (*t).to_owned()).collect(),
        processes: processes(),
    };
    println!("{}", top.to_json());
    0
}

/// Every process but this one, by PID.
fn processes() -> Vec<Vec<String>> {
    let me = std::process::id();
    let now = now_secs();
    let boot = boot_time();
    let users = users();
    let mut pids: Vec<u32> = fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|pid| *pid != me)
        .collect();
    pids.sort_unstable();
    pids.into_iter()
        .filter_map(|pid| row(pid, now, boot, &users))
        .collect()
}

/// One `ps -ef` row; `None` if the process is gone.
fn row(pid: u32, now: u64, boot: u64, users: &[(u32, String)]) -> Option<Vec<String>> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid ...`: comm may hold spaces and parentheses.
    let (head, tail) = stat.rsplit_once(')')?;
    let comm = head.split_once('(')?.1;
    let f: Vec<&str> = tail.split_whitespace().collect();
    let field = |n: usize| f.get(n).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // Fields after `)`: 0 state, 1 ppid, 4 tty_nr, 11 utime, 12 stime, 19 starttime.
    let ticks = ticks_per_second();
    let cpu = (field(11) + field(12)) / ticks;
    let started = boot + field(19) / ticks;
    let elapsed = now.saturating_sub(started).max(1);
    let uid = fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u32>().ok())
        })
        .unwrap_or(0);
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let cmd = match cmdline.is_empty() {
        true => format!("[{comm}]"),
        false => String::from_utf8_lossy(&cmdline)
            .trim_end_matches('\0')
            .replace('\0', " "),
    };
    Some(vec![
        users
            .iter()
            .find(|(u, _)| *u == uid)
            .map_or_else(|| uid.to_string(), |(_, n)| n.clone()),
        pid.to_string(),
        field(1).to_string(),
        (cpu * 100 / elapsed).to_string(),
        stime(started, now),
        tty(field(4)),
        hms(cpu),
        cmd,
    ])
}

/// `HH:MM` today, `MonDD` before (UTC, as the container's clock has no zone).
fn stime(started: u64, now: u64) -> String {
    if started / 86400 == now / 86400 {
        return format!("{:02}:{:02}", started % 86400 / 3600, started % 3600 / 60);
    }
    let (_, month, day) = civil(started / 86400);
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!("{}{:02}", MONTHS[(month - 1) as usize % 12], day)
}

/// Year, month (1-12), day of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil(days: u64) -> (i64, u64, u64) {
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u64;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u64;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `pts/N` for a pseudo-terminal, `?` for none (or another kind).
fn tty(tty_nr: u64) -> String {
    let major = (tty_nr >> 8) & 0xfff;
    let minor = (tty_nr & 0xff) | ((tty_nr >> 12) & 0xfff00);
    match (tty_nr, major) {
        (0, _) => "?".into(),
        (_, 136..=143) => format!("pts/{}", (major - 136) * 256 + minor),
        _ => "?".into(),
    }
}

/// `HH:MM:SS` of CPU time.
fn hms(secs: u64) -> String {
    format!(
        "{:02}:{:02}:{:02}",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

fn ticks_per_second() -> u64 {
    // SAFETY: sysconf takes no pointers.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(t).ok().filter(|t| *t > 0).unwrap_or(100)
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Boot time in seconds since the epoch (`btime` of `/proc/stat`).
fn boot_time() -> u64 {
    fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("btime "))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// `(uid, name)` from the container's `/etc/passwd`.
fn users() -> Vec<(u32, String)> {
    fs::read_to_string("/etc/passwd")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let uid = f.nth(1)?.parse().ok()?;
            Some((uid, name.to_owned()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_as_ps_writes_them() {
        assert_eq!(hms(3725), "01:02:05");
        assert_eq!(tty(0), "?");
        assert_eq!(tty(136 << 8), "pts/0");
        assert_eq!(tty((136 << 8) | 3), "pts/3");
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(20_427), (2025, 12, 5));
        assert_eq!(stime(3600 * 13 + 60 * 7, 3600 * 20), "13:07");
        assert_eq!(stime(0, 86400 * 3), "Jan01");
    }
}
