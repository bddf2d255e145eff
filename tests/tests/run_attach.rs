//! Following and attaching through the real binary, one container per isolation doing every
//! check: `logs -f` on a running container (it shows lines as they are written and ends when
//! the container exits), `exec` with and without `-t` (a terminal, or none), and `start -a`
//! (the output of a fresh run of the container, and its exit code).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed setup step is a failed test

mod run_common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use run_common::{BUSYBOX, Ctx, backends, stdout};

/// A hang guard for anything that waits on a container (a vm container boots a kernel
/// first, and every exec there starts a process under an emulated kernel).
const GUARD: Duration = Duration::from_secs(120);

/// Says `one` (and `oops` on stderr), `two` once /tmp/two exists, then `end` once /tmp/end
/// exists, and exits 3. The container's files outlive a run, so each run first removes the
/// markers of the last one.
const SCRIPT: &str = "rm -f /tmp/two /tmp/end; echo one; echo oops >&2; \
    until [ -e /tmp/two ]; do sleep 0.1; done; echo two; \
    until [ -e /tmp/end ]; do sleep 0.1; done; echo end; exit 3";

/// A running `husk` whose stdout is read line by line as it comes.
struct Lines {
    what: String,
    child: Option<Child>,
    lines: Receiver<String>,
    stderr: Option<JoinHandle<String>>,
}

impl Lines {
    fn spawn(ctx: &Ctx, args: &[&str]) -> Self {
        let mut child = ctx
            .cmd()
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in out.lines() {
                if tx.send(line.unwrap()).is_err() {
                    return;
                }
            }
        });
        let mut err = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            err.read_to_string(&mut text).unwrap();
            text
        });
        Self {
            what: format!("husk {}", args.join(" ")),
            child: Some(child),
            lines,
            stderr: Some(stderr),
        }
    }

    /// The next line of stdout.
    fn next(&self, expecting: &str) -> String {
        match self.lines.recv_timeout(GUARD) {
            Ok(line) => line,
            Err(RecvTimeoutError::Disconnected) => {
                panic!("{}: stdout ended while expecting {expecting}", self.what)
            }
            Err(RecvTimeoutError::Timeout) => panic!(
                "{}: no line within {GUARD:?} while expecting {expecting}",
                self.what
            ),
        }
    }

    /// Waits for the end of stdout (no further line) and the exit; the exit status and
    /// everything said on stderr.
    fn finish(mut self) -> (ExitStatus, String) {
        match self.lines.recv_timeout(GUARD) {
            Err(RecvTimeoutError::Disconnected) => {}
            Ok(line) => panic!("{}: unexpected line {line:?}", self.what),
            Err(RecvTimeoutError::Timeout) => panic!("{}: still running", self.what),
        }
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + GUARD;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "{}: closed stdout but never exited",
                self.what
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        (status, self.stderr.take().unwrap().join().unwrap())
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        // A failed test must not leave it running.
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn logs_follow_exec_tty_and_start_attach() {
    for iso in backends("logs_follow_exec_tty_and_start_attach") {
        let ctx = Ctx::isolated(iso);
        let run = [
            "run",
            "-d",
            "--name",
            "c",
            "--isolation",
            iso,
            BUSYBOX,
            "sh",
            "-c",
            SCRIPT,
        ];
        ctx.ok(&run);
        let follow = Lines::spawn(&ctx, &["logs", "-f", "c"]);
        assert_eq!(follow.next("the first line"), "one", "[{iso}]");

        // exec: no terminal by default (and the isolation asked for, no fallback); with -t,
        // stdin and stdout are one.
        let o = ctx.run(&["exec", "c", "sh", "-c", "cat /proc/version; tty"]);
        let out = stdout(&o);
        let (version, tty) = out.rsplit_once('\n').unwrap_or_default();
        assert_eq!(
            (o.status.code(), tty),
            (Some(1), "not a tty"),
            "exec without -t [{iso}]: {out:?} {}",
            husk_e2e::stderr(&o)
        );
        run_common::assert_kernel(iso, version);
        let o = ctx.run(&[
            "exec",
            "-t",
            "c",
            "sh",
            "-c",
            "tty; test -t 0 && test -t 1 && echo both-ttys; exit 4",
        ]);
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        assert_eq!(
            o.status.code(),
            Some(4),
            "exec -t [{iso}]: {out:?} {}",
            husk_e2e::stderr(&o)
        );
        // A terminal turns each newline into CR LF.
        let lines: Vec<&str> = out.split("\r\n").collect();
        let pts = lines[0].strip_prefix("/dev/pts/");
        assert!(
            pts.is_some_and(|n| n.parse::<u32>().is_ok()) && lines[1..] == ["both-ttys", ""],
            "exec -t [{iso}]: {out:?}"
        );

        // -f shows the lines the container writes from now on, and ends when it exits.
        ctx.ok(&["exec", "c", "touch", "/tmp/two", "/tmp/end"]);
        assert_eq!(follow.next("a line written while following"), "two");
        assert_eq!(follow.next("the last line"), "end");
        let (status, err) = follow.finish();
        assert!(status.success(), "logs -f [{iso}]: {status} {err}");
        assert_eq!(err, "oops\n", "logs -f [{iso}]");
        assert_eq!(ctx.ok(&["wait", "c"]).trim(), "3", "[{iso}]");

        // start -a: the container runs again, attached: its output and its exit code.
        let attached = Lines::spawn(&ctx, &["start", "-a", "c"]);
        assert_eq!(attached.next("the first line"), "one", "[{iso}]");
        ctx.ok(&["exec", "c", "touch", "/tmp/two", "/tmp/end"]);
        assert_eq!(attached.next("the second line"), "two", "[{iso}]");
        assert_eq!(attached.next("the last line"), "end", "[{iso}]");
        let (status, err) = attached.finish();
        assert_eq!(status.code(), Some(3), "start -a [{iso}]: {err}");
        assert_eq!(err, "oops\n", "start -a [{iso}]");

        let o = ctx.run(&["logs", "c"]);
        assert_eq!(
            stdout(&o),
            "one\ntwo\nend\none\ntwo\nend",
            "both runs [{iso}]"
        );
        ctx.ok(&["rm", "c"]);
        ctx.assert_clean();
    }
}
