//! Docker parity of what a container is inside, under both isolations: the workload is PID 1
//! of its own PID namespace (the agent is invisible; `exec` joins it; a plain `sh` ignores
//! SIGTERM, so `stop` ends with SIGKILL and 137, as docker's does), `--init` puts a reaping
//! init in front of it, loopback is up and serves a client, resolv.conf names no loopback
//! resolver, `HOME` comes from the passwd entry, and signals the caller of `husk` ignored
//! are not ignored in the container. One microVM does the checks of one container.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed setup step is a failed test

mod run_common;

use std::os::unix::process::CommandExt;
use std::process::Stdio;

use run_common::{BUSYBOX, Ctx, GUARD, assert_kernel, backends, stdout};

/// What the detached workload reports about itself before idling as a plain PID 1 shell.
const INSIDE: &str = r#"
echo "pid $$"
echo "procs $(ls /proc | grep -c '^[0-9]')"
echo "home $HOME"
grep -E '^Sig(Ign|Blk)' /proc/self/status
# busybox nc quits when its stdin ends: the server's stays open until the exchange is done.
sleep 60 | nc -l -p 7777 > /tmp/got &
server=$!
ok=no
for i in 1 2 3 4 5 6 7 8 9 10; do
  echo over-loopback | nc 127.0.0.1 7777 2>/dev/null && ok=yes && break
  sleep 1
done
[ $ok = yes ] || kill $server
wait $server
echo "loopback $(cat /tmp/got)"
grep nameserver /etc/resolv.conf | sed 's/^/resolv /'
echo "kernel $(cat /proc/version)"
echo ready
while true; do sleep 1; done
"#;

/// The `run -d` command line, started with TERM, HUP and INT ignored, as a shell's `nohup`
/// or `trap '' TERM` leaves them for its children.
fn run_detached_ignoring(ctx: &Ctx, iso: &str) -> String {
    let mut c = ctx.cmd();
    c.args([
        "run",
        "-d",
        "--name",
        "box",
        "--isolation",
        iso,
        BUSYBOX,
        "sh",
        "-c",
        INSIDE,
    ]);
    c.stdin(Stdio::null());
    // SAFETY: between fork and exec only signal(), which is async-signal-safe.
    unsafe {
        c.pre_exec(|| {
            for sig in [libc::SIGTERM, libc::SIGHUP, libc::SIGINT] {
                libc::signal(sig, libc::SIG_IGN);
            }
            Ok(())
        });
    }
    let o = husk_e2e::output(c);
    assert!(o.status.success(), "[{iso}] {}", husk_e2e::stderr(&o));
    stdout(&o)
}

fn logs(ctx: &Ctx) -> String {
    stdout(&ctx.run(&["logs", "box"]))
}

#[test]
fn the_workload_is_pid_1_with_loopback_home_dns_and_clean_signals() {
    for iso in backends("the_workload_is_pid_1_with_loopback_home_dns_and_clean_signals") {
        let ctx = Ctx::isolated(iso);
        run_detached_ignoring(&ctx, iso);
        assert!(
            Ctx::eventually(GUARD, || logs(&ctx).contains("ready")),
            "[{iso}] {}",
            logs(&ctx)
        );
        let out = logs(&ctx);
        let line = |key: &str| {
            out.lines()
                .find_map(|l| l.strip_prefix(key))
                .unwrap_or_else(|| panic!("[{iso}] no {key:?} in {out}"))
                .trim()
                .to_owned()
        };
        assert_kernel(iso, &line("kernel "));
        assert_eq!(line("pid "), "1", "[{iso}] the workload is PID 1");
        // The shell and `ls` (and grep's subshell): never the agent or anything of husk's.
        let procs: u32 = line("procs ").parse().unwrap();
        assert!(procs <= 4, "[{iso}] {procs} processes visible: {out}");
        assert_eq!(line("home "), "/root", "[{iso}]");
        assert_eq!(line("SigIgn:"), "0000000000000000", "[{iso}] {out}");
        assert_eq!(line("SigBlk:"), "0000000000000000", "[{iso}] {out}");
        assert_eq!(line("loopback "), "over-loopback", "[{iso}] {out}");
        let resolvers: Vec<&str> = out
            .lines()
            .filter_map(|l| l.strip_prefix("resolv nameserver "))
            .collect();
        assert!(!resolvers.is_empty(), "[{iso}] no resolver: {out}");
        for r in resolvers {
            let ip: std::net::IpAddr = r.trim().parse().unwrap();
            assert!(!ip.is_loopback(), "[{iso}] loopback resolver {ip}");
        }

        // exec joins the workload's PID namespace: it sees the workload as PID 1, itself
        // as another PID, and no agent.
        let seen = ctx.ok(&[
            "exec",
            "box",
            "sh",
            "-c",
            "echo $$; cat /proc/1/comm; ps -o comm | grep -c husk; true",
        ]);
        let mut seen = seen.lines();
        let own: u32 = seen.next().unwrap().parse().unwrap();
        assert!(own > 1, "[{iso}] exec's pid {own}");
        assert_eq!(seen.next(), Some("sh"), "[{iso}] PID 1 is the workload");
        assert_eq!(seen.next(), Some("0"), "[{iso}] husk visible in exec");

        // A shell as PID 1 without a TERM handler ignores SIGTERM, as under docker: stop
        // waits out the grace period and kills.
        ctx.ok(&["stop", "-t", "1", "box"]);
        let state: serde_json::Value = serde_json::from_str(&ctx.ok(&["inspect", "box"])).unwrap();
        assert_eq!(state[0]["State"]["ExitCode"], 137, "[{iso}] {state}");
        ctx.ok(&["rm", "box"]);
        ctx.assert_clean();
    }
}

#[test]
fn init_reaps_orphans_and_passes_signals_on() {
    for iso in backends("init_reaps_orphans_and_passes_signals_on") {
        let ctx = Ctx::isolated(iso);
        // An orphan (the subshell's sleep) ends under husk-init, which must reap it; then
        // the workload's TERM to itself reaches it (it is not PID 1) and ends the run.
        let script = "sh -c 'sleep 0.2 &'; sleep 1; ps -o pid,stat,comm; kill -TERM $$; sleep 9";
        let o = ctx.run(&[
            "run",
            "--rm",
            "--init",
            "--isolation",
            iso,
            BUSYBOX,
            "sh",
            "-c",
            script,
        ]);
        let out = stdout(&o);
        assert_eq!(o.status.code(), Some(143), "[{iso}] {out}");
        let first = out.lines().nth(1).unwrap_or_default();
        assert!(
            first.split_whitespace().last() == Some("husk-init")
                && first.split_whitespace().next() == Some("1"),
            "[{iso}] PID 1 is husk-init: {out}"
        );
        assert!(
            !out.lines().skip(1).any(|l| l.contains(" Z ")),
            "[{iso}] a zombie was left: {out}"
        );
        // A program that is not there: docker's 127, with husk-init saying so.
        let o = ctx.run(&[
            "run",
            "--rm",
            "--init",
            "--isolation",
            iso,
            BUSYBOX,
            "no-such-program",
        ]);
        assert_eq!(o.status.code(), Some(127), "[{iso}]");
        assert!(
            husk_e2e::stderr(&o).contains("no-such-program"),
            "[{iso}] {}",
            husk_e2e::stderr(&o)
        );
        let state = ctx.ok(&["ps", "-a", "-q"]);
        assert!(state.is_empty(), "[{iso}] {state}");
        ctx.assert_clean();
    }
}

/// The host's capability bounding set (what `--privileged` can give under process
/// isolation; a guest kernel has every capability).
fn host_bounding_set() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("CapBnd:")).unwrap();
    line.trim_start_matches("CapBnd:").trim().to_owned()
}

#[test]
fn capabilities_ulimits_pids_read_only_tmpfs_sysctls_and_shm_size() {
    for iso in backends("capabilities_ulimits_pids_read_only_tmpfs_sysctls_and_shm_size") {
        let ctx = Ctx::isolated(iso);
        let script = "grep CapBnd /proc/self/status; ulimit -n; ulimit -Hn; \
                      df -k /dev/shm | tail -1; touch /x 2>&1; echo shm > /dev/shm/z && cat /dev/shm/z; \
                      echo tmp > /run/x/a && grep ' /run/x ' /proc/mounts; \
                      cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/shmmni; \
                      sh -c 'for i in 1 2 3 4 5 6 7 8 9 10 11 12; do sleep 30 & done' 2>/dev/shm/forks; \
                      n=0; while read -r l; do case $l in *fork*) n=$((n+1));; esac; done </dev/shm/forks; \
                      echo forks-refused $n";
        let out = ctx.ok(&[
            "run",
            "--rm",
            "--isolation",
            iso,
            "--read-only",
            "--cap-drop",
            "CHOWN",
            "--cap-add",
            "net_admin",
            "--ulimit",
            "nofile=1000:2000",
            "--shm-size",
            "8m",
            "--tmpfs",
            "/run/x:size=1m",
            "--sysctl",
            "net.ipv4.ip_forward=1",
            "--sysctl",
            "kernel.shmmni=2048",
            "--pids-limit",
            "8",
            BUSYBOX,
            "sh",
            "-c",
            script,
        ]);
        let lines: Vec<&str> = out.lines().collect();
        // docker's default set without CHOWN (bit 0), with NET_ADMIN (bit 12).
        assert_eq!(lines[0], "CapBnd:\t00000000a80435fa", "[{iso}] {out}");
        assert_eq!(&lines[1..3], ["1000", "2000"], "[{iso}] {out}");
        assert_eq!(
            lines[3].split_whitespace().nth(1),
            Some("8192"),
            "[{iso}] {out}"
        );
        assert!(lines[4].contains("Read-only file system"), "[{iso}] {out}");
        assert_eq!(lines[5], "shm", "[{iso}] {out}");
        // A --tmpfs is writable under --read-only, with docker's default flags.
        assert!(
            lines[6].starts_with("tmpfs /run/x tmpfs rw,nosuid,nodev,noexec")
                && lines[6].contains("size=1024k"),
            "[{iso}] {out}"
        );
        assert_eq!(
            &lines[7..9],
            ["1", "2048"],
            "[{iso}] namespaced sysctls: {out}"
        );
        // --pids-limit 8 (the container's processes, never the agent's threads): a shell
        // starting twelve sleeps meets a fork it cannot make.
        assert_eq!(lines[9], "forks-refused 1", "[{iso}] {out}");
        let out = ctx.ok(&[
            "run",
            "--rm",
            "--isolation",
            iso,
            "--privileged",
            BUSYBOX,
            "grep",
            "CapBnd",
            "/proc/self/status",
        ]);
        let all = match iso {
            "vm" => "000001ffffffffff".to_owned(),
            _ => host_bounding_set(),
        };
        assert_eq!(out.trim(), format!("CapBnd:\t{all}"), "[{iso}]");
        let e = ctx.fails(
            125,
            &[
                "run",
                "--rm",
                "--sysctl",
                "kernel.hostname=x",
                BUSYBOX,
                "true",
            ],
        );
        assert!(e.contains("not in a separate kernel namespace"), "{e}");
        let e = ctx.fails(
            125,
            &["run", "--rm", "--tmpfs", "/x:bogus", BUSYBOX, "true"],
        );
        assert!(e.starts_with("husk: invalid --tmpfs"), "{e}");
        let e = ctx.fails(125, &["run", "--rm", "--cap-add", "NOPE", BUSYBOX, "true"]);
        assert_eq!(e, r#"husk: unknown capability: "NOPE""#);
        let e = ctx.fails(
            125,
            &["run", "--rm", "--ulimit", "nofile=5:1", BUSYBOX, "true"],
        );
        assert_eq!(
            e,
            "husk: ulimit soft limit must be less than or equal to hard limit: 5 > 1"
        );
        ctx.assert_clean();
    }
}
