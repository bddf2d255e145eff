//! Signals and terminals of a foreground `husk run`: SIGTERM and SIGINT sent to the husk
//! process reach the workload's `trap`; `-it` under tmux gives a real pty with the window's
//! size, resizing the window changes what `stty size` says, Ctrl-P Ctrl-Q detaches and
//! `attach` takes the same shell back; `-a` picks the streams shown and `--sig-proxy=false`
//! leaves the workload alone when husk itself is signalled.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed setup step is a failed test

mod run_common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use run_common::{BUSYBOX, Ctx, Tmux, backends};

fn forwards(iso: &str, signal: i32, name: &str) {
    let ctx = Ctx::isolated(iso);
    let script = format!(
        "trap 'echo trapped {name}; exit 42' {name}; echo ready; while true; do sleep 0.1; done"
    );
    let mut child = ctx
        .cmd()
        .args([
            "run",
            "--rm",
            "--isolation",
            iso,
            BUSYBOX,
            "sh",
            "-c",
            &script,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    // A lost signal must fail the test, not hang it: kill husk after two minutes (a hang
    // guard: a vm container boots a kernel first).
    let (done, watchdog) = std::sync::mpsc::channel::<()>();
    let pid = child.id() as i32;
    let guard = std::thread::spawn(move || {
        if watchdog.recv_timeout(Duration::from_secs(120)).is_err() {
            // SAFETY: our child, still unreaped (the test waits for it below).
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    });
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n", "[{iso}]");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, signal) };
    line.clear();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, format!("trapped {name}\n"), "[{iso}]");
    let status = child.wait().unwrap();
    let _ = done.send(());
    guard.join().unwrap();
    assert_eq!(status.code(), Some(42), "[{iso}]");
    ctx.assert_clean();
}

#[test]
fn sigterm_and_sigint_reach_the_workload() {
    for iso in backends("sigterm_and_sigint_reach_the_workload") {
        forwards(iso, libc::SIGTERM, "TERM");
        forwards(iso, libc::SIGINT, "INT");
    }
}

#[test]
fn attach_streams_and_no_signal_proxy() {
    for iso in backends("attach_streams_and_no_signal_proxy") {
        let ctx = Ctx::isolated(iso);
        let mut child = ctx
            .cmd()
            .args([
                "run",
                "--name",
                "s",
                "-a",
                "STDERR",
                "--sig-proxy=false",
                "--isolation",
                iso,
            ])
            .args([
                BUSYBOX,
                "sh",
                "-c",
                "echo out; echo err >&2; exec sleep 100",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        err.read_line(&mut line).unwrap();
        assert_eq!(line, "err\n", "[{iso}]");
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let o = child.wait_with_output().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            o.status.signal(),
            Some(libc::SIGTERM),
            "[{iso}] husk itself ends"
        );
        assert!(o.stdout.is_empty(), "[{iso}] stdout was not attached");
        let running = ctx.ok(&["inspect", "-f", "{{.State.Running}}", "s"]);
        assert_eq!(running.trim(), "true", "[{iso}] the workload got no signal");
        ctx.ok(&["rm", "-f", "s"]);

        let e = ctx.fails(125, &["run", "-d", "-a", "stdout", BUSYBOX]);
        assert_eq!(e, "husk: Conflicting options: -a and -d");
        let e = ctx.fails(125, &["run", "-a", "stdpipe", BUSYBOX]);
        assert!(
            e.contains("valid streams are STDIN, STDOUT and STDERR"),
            "{e}"
        );
        ctx.assert_clean();
    }
}

#[test]
fn interactive_tty_under_tmux() {
    for iso in backends("interactive_tty_under_tmux") {
        let ctx = Ctx::isolated(iso);
        let tmux = Tmux {
            socket: format!("husk-test-{}-{iso}", std::process::id()),
        };
        let husk = husk_e2e::husk_bin();
        // Detach with docker's keys, then attach again and end the shell from there.
        let husk = format!("{} --root {}", husk.display(), ctx.root().display());
        let command = format!(
            "{husk} run -it --name tty --network none --isolation {iso} {BUSYBOX} sh; echo husk-exited-$?; \
             {husk} attach tty; echo attach-exited-$?; sleep 30"
        );
        tmux.start(&command);
        // The starting size (not the agent's 24x80 default) reaches the pty.
        tmux.assert_shell_on_a_pty_of_the_window_size();
        tmux.run(&["resize-window", "-t", "t", "-x", "100", "-y", "30"]);
        // The resize travels husk -> shim -> agent -> pty on its own schedule: the shell
        // waits until the pty has the new size, then says so (the typed line itself never
        // shows "resized 30 100").
        tmux.run(&[
            "send-keys",
            "-t",
            "t",
            "clear; until [ \"$(stty size)\" = '30 100' ]; do sleep 0.1; done; echo re''sized $(stty size)",
            "Enter",
        ]);
        tmux.wait_for("resized 30 100");
        // Ctrl-P Ctrl-Q: husk exits 0, the container runs on with its shell.
        tmux.run(&["send-keys", "-t", "t", "C-p", "C-q"]);
        tmux.wait_for("husk-exited-0");
        let running = ctx.ok(&["ps", "--format", "{{.Names}} {{.State}}"]);
        assert_eq!(running.trim(), "tty running", "[{iso}]");
        // `attach` takes the same shell back: its stdin is still open.
        tmux.run(&["send-keys", "-t", "t", "echo back''again", "Enter"]);
        tmux.wait_for("backagain");
        tmux.run(&["send-keys", "-t", "t", "exit 3", "Enter"]);
        tmux.wait_for("attach-exited-3");
        drop(tmux); // its server's command line names the root too
        let state = ctx.ok(&["inspect", "-f", "{{.State.ExitCode}}", "tty"]);
        assert_eq!(state.trim(), "3", "[{iso}]");
        ctx.ok(&["rm", "tty"]);
        ctx.assert_clean();
    }
}
