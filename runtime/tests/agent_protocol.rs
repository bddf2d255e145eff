//! The host↔agent protocol end to end: the real husk-agent binary in host-process mode on a
//! unix socket (see `support`), driven by `runtime::agent_client`, and by hand-made frames
//! for what a well-behaved client never sends.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

#[path = "support/agent_checks.rs"]
mod agent_checks;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_proto::{ErrorKind, Frame, FrameReader, FrameWriter, Reply, StreamId};
use runtime::agent_client::{
    AgentClient, ClientError, ConnectError, Endpoint, ProcessSpec, Sink, TermSize, User, sink_fn,
};
use sha2::{Digest, Sha256};
use support::{Agent, TIMEOUT, pattern};

/// Collects a stream's bytes.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Capture {
    fn sink(&self) -> Sink {
        let buf = Arc::clone(&self.0);
        sink_fn(move |bytes| buf.lock().unwrap().extend_from_slice(bytes))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

fn spec(argv: &[&str]) -> ProcessSpec {
    ProcessSpec {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        ..ProcessSpec::default()
    }
}

fn sh(script: &str) -> ProcessSpec {
    spec(&["sh", "-c", script])
}

/// Runs `spec` without stdin; returns (code, stdout, stderr).
fn run(client: &AgentClient, spec: &ProcessSpec) -> (i32, String, String) {
    let (out, err) = (Capture::default(), Capture::default());
    let exit = client.run(spec, None, out.sink(), err.sink()).unwrap();
    (exit.code, out.text(), err.text())
}

#[test]
fn stdout_of_64_mib_arrives_byte_exact() {
    let agent = Agent::start();
    let data = pattern(64 << 20, 0x5eed);
    let file = agent.dir().join("big");
    std::fs::write(&file, &data).unwrap();
    let want = Sha256::digest(&data);
    drop(data);

    let hasher = Arc::new(Mutex::new((Sha256::new(), 0usize)));
    let h = Arc::clone(&hasher);
    let out = sink_fn(move |bytes| {
        let mut h = h.lock().unwrap();
        h.0.update(bytes);
        h.1 += bytes.len();
    });
    let err = Capture::default();
    let client = agent.client();
    let exit = client
        .run(
            &spec(&["cat", file.to_str().unwrap()]),
            None,
            out,
            err.sink(),
        )
        .unwrap();
    assert_eq!(exit.code, 0, "{exit:?} {}", err.text());
    let (hasher, len) = std::mem::take(&mut *hasher.lock().unwrap());
    assert_eq!(len, 64 << 20);
    assert_eq!(hasher.finalize(), want, "stdout differs from the file");
    assert_eq!(err.text(), "");
}

#[test]
fn stdin_reaches_the_process() {
    let agent = Agent::start();
    let client = agent.client();
    let input = pattern(8 << 20, 42);
    let want = format!("{}  -\n", hex::encode(Sha256::digest(&input)));
    let out = Capture::default();
    let exit = client
        .run(
            &spec(&["sha256sum"]),
            Some(&mut &input[..]),
            out.sink(),
            sink_fn(|_| {}),
        )
        .unwrap();
    assert_eq!((exit.code, out.text()), (0, want));

    let out = Capture::default();
    let exit = client
        .run(
            &spec(&["cat"]),
            Some(&mut &b"echo through cat\n"[..]),
            out.sink(),
            sink_fn(|_| {}),
        )
        .unwrap();
    assert_eq!((exit.code, out.text().as_str()), (0, "echo through cat\n"));
}

#[test]
fn exit_codes_follow_docker() {
    let agent = Agent::start();
    let client = agent.client();
    let not_exec = agent.dir().join("not-executable");
    std::fs::write(&not_exec, "#!/bin/sh\necho never\n").unwrap();
    std::fs::set_permissions(&not_exec, std::fs::Permissions::from_mode(0o644)).unwrap();

    assert_eq!(run(&client, &spec(&["true"])).0, 0);
    assert_eq!(
        run(&client, &sh("echo out; echo err >&2; exit 3")),
        (3, "out\n".into(), "err\n".into())
    );
    let (code, _, _) = run(&client, &spec(&[not_exec.to_str().unwrap()]));
    assert_eq!(code, 126, "not executable");
    assert_eq!(run(&client, &spec(&["/nonexistent/husk-program"])).0, 127);
    assert_eq!(
        run(&client, &spec(&["husk-no-such-program-on-path"])).0,
        127
    );
    assert_eq!(run(&client, &sh("kill -9 $$")).0, 137);

    let process = client
        .start(&spec(&["/nonexistent/x"]), sink_fn(|_| {}), sink_fn(|_| {}))
        .unwrap();
    assert_eq!(process.pid(), None);
    let exit = process.wait().unwrap();
    assert_eq!(exit.code, 127);
    assert!(exit.detail.contains("/nonexistent/x"), "{exit:?}");
}

#[test]
fn signals_from_the_host() {
    let agent = Agent::start();
    let client = agent.client();
    let sleeper = client
        .start(&spec(&["sleep", "1000"]), sink_fn(|_| {}), sink_fn(|_| {}))
        .unwrap();
    sleeper.signal(libc::SIGTERM).unwrap();
    assert_eq!(sleeper.wait().unwrap().code, 143);
    let err = sleeper.signal(libc::SIGTERM).unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Agent {
                kind: ErrorKind::UnknownProcess | ErrorKind::NotRunning,
                ..
            }
        ),
        "{err}"
    );

    let sleeper = client
        .start(&spec(&["sleep", "1000"]), sink_fn(|_| {}), sink_fn(|_| {}))
        .unwrap();
    let err = sleeper.signal(0).unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Agent {
                kind: ErrorKind::BadRequest,
                ..
            }
        ),
        "{err}"
    );
    sleeper.signal(libc::SIGKILL).unwrap();
    assert_eq!(sleeper.wait().unwrap().code, 137);
}

#[test]
fn two_processes_at_once() {
    let agent = Agent::start();
    let client = agent.client();
    let (out_a, out_b) = (Capture::default(), Capture::default());
    let mut cat = spec(&["cat"]);
    cat.stdin = true;
    let a = client.start(&cat, out_a.sink(), sink_fn(|_| {})).unwrap();
    let b = client
        .start(&sh("echo b; exit 4"), out_b.sink(), sink_fn(|_| {}))
        .unwrap();
    assert_ne!(a.id(), b.id());
    // b finishes while a is still waiting for input.
    assert_eq!(b.wait().unwrap().code, 4);
    assert_eq!(out_b.text(), "b\n");
    let mut stdin = a.stdin().unwrap();
    stdin.write_all(b"to a\n").unwrap();
    stdin.close().unwrap();
    assert_eq!(a.wait().unwrap().code, 0);
    assert_eq!(out_a.text(), "to a\n");

    // And two large streams from two threads on the same connection.
    let file = agent.dir().join("shared");
    let data = pattern(8 << 20, 7);
    std::fs::write(&file, &data).unwrap();
    let want = hex::encode(Sha256::digest(&data));
    std::thread::scope(|s| {
        let runs: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    let out = Capture::default();
                    let exit = client
                        .run(
                            &spec(&["cat", file.to_str().unwrap()]),
                            None,
                            out.sink(),
                            sink_fn(|_| {}),
                        )
                        .unwrap();
                    (
                        exit.code,
                        hex::encode(Sha256::digest(&*out.0.lock().unwrap())),
                    )
                })
            })
            .collect();
        for run in runs {
            assert_eq!(run.join().unwrap(), (0, want.clone()));
        }
    });
}

#[test]
fn full_stdin_window_does_not_block_the_connection() {
    let agent = Agent::start();
    let client = agent.client();
    let mut sleeper = spec(&["sleep", "1000"]);
    sleeper.stdin = true;
    let process = client
        .start(&sleeper, sink_fn(|_| {}), sink_fn(|_| {}))
        .unwrap();
    let mut stdin = process.stdin().unwrap();
    // Far more than the window and the pipe hold: the writer blocks once the window is used.
    // It counts what the client let through.
    const TOTAL: usize = 4 << 20;
    let accepted = Arc::new(AtomicUsize::new(0));
    let writer = std::thread::spawn({
        let accepted = Arc::clone(&accepted);
        move || {
            let chunk = vec![b'x'; 64 << 10];
            let mut left = TOTAL;
            while left > 0 {
                match stdin.write(&chunk[..chunk.len().min(left)]) {
                    Ok(n) => {
                        accepted.fetch_add(n, Ordering::SeqCst);
                        left -= n;
                    }
                    Err(e) => return (Err(e), stdin),
                }
            }
            (Ok(()), stdin)
        }
    });
    // A whole window has gone out: the agent holds it for a process that reads nothing.
    let window = agent_proto::STDIN_WINDOW as usize;
    let deadline = std::time::Instant::now() + TIMEOUT;
    while accepted.load(Ordering::SeqCst) < window {
        assert!(
            std::time::Instant::now() < deadline && !writer.is_finished(),
            "the window never filled: {} bytes sent",
            accepted.load(Ordering::SeqCst)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // The connection still serves everything else.
    client.ping().unwrap();
    assert_eq!(run(&client, &spec(&["true"])).0, 0);
    // While the process lives, no more than the window plus what its pipe took (1 MiB at
    // most) can have left the client.
    let sent = accepted.load(Ordering::SeqCst);
    assert!(
        sent <= window + (1 << 20),
        "{sent} bytes went into a process that reads nothing"
    );
    process.signal(libc::SIGKILL).unwrap();
    assert_eq!(process.wait().unwrap().code, 137);
    // Writing to a process that has finished fails like writing to a closed pipe. (The
    // writer may still have used credit the agent returned as the process died, so it is
    // the first write after the exit was reported that must fail.)
    let (result, mut stdin) = writer.join().unwrap();
    if let Err(e) = result {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
    }
    let err = stdin.write(b"late").unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::BrokenPipe, "{err}");
}

#[test]
fn environment_cwd_and_user() {
    let agent = Agent::start();
    let client = agent.client();
    let mut s = sh("echo \"$FOO|$PATH|$HOME\"; pwd");
    s.env = vec!["FOO=bar baz".into()];
    s.cwd = Some(agent.dir().to_str().unwrap().into());
    let (code, out, _) = run(&client, &s);
    assert_eq!(code, 0);
    assert_eq!(
        out,
        format!(
            "bar baz|/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin|\n{}\n",
            agent.dir().display()
        )
    );

    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let mut s = sh("id -u; id -g; id -G");
        s.user = Some(User {
            uid: 65534,
            gid: 65533,
            additional_gids: vec![65532],
        });
        assert_eq!(
            run(&client, &s),
            (0, "65534\n65533\n65533 65532\n".into(), String::new())
        );
    } else {
        eprintln!("SKIPPED: the user switch needs root");
    }
}

#[test]
fn tty_processes() {
    let agent = Agent::start();
    let client = agent.client();
    let mut s = sh("test -t 0 && test -t 1 && echo tty; stty size");
    s.tty = true;
    s.size = Some(TermSize {
        rows: 30,
        cols: 100,
    });
    let (code, out, err) = run(&client, &s);
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (0, "tty\r\n30 100\r\n", "")
    );

    let mut s = sh("read line; stty size");
    s.tty = true;
    s.stdin = true;
    let out = Capture::default();
    let process = client.start(&s, out.sink(), sink_fn(|_| {})).unwrap();
    process.resize(40, 120).unwrap();
    let mut stdin = process.stdin().unwrap();
    stdin.write_all(b"go\n").unwrap();
    assert_eq!(process.wait().unwrap().code, 0);
    assert!(out.text().ends_with("40 120\r\n"), "{:?}", out.text());
    let plain = client
        .start(&spec(&["true"]), sink_fn(|_| {}), sink_fn(|_| {}))
        .unwrap();
    let err = plain.resize(1, 1).unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Agent {
                kind: ErrorKind::BadRequest,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn closing_the_connection_kills_its_processes() {
    let agent = Agent::start();
    let client = agent.client();
    let process = client
        .start(
            &sh("sleep 1000 & sleep 1000"),
            sink_fn(|_| {}),
            sink_fn(|_| {}),
        )
        .unwrap();
    let pid = process.pid().unwrap();
    assert!(support::alive(pid));
    drop(process);
    drop(client);
    support::wait_gone(pid, Duration::from_secs(5));
    // The agent serves the next connection as before.
    assert_eq!(run(&agent.client(), &spec(&["true"])).0, 0);
}

#[test]
fn shutdown_kills_everything_and_ends_the_agent() {
    let mut agent = Agent::start();
    let other = agent.client();
    let process = other
        .start(&spec(&["sleep", "1000"]), sink_fn(|_| {}), sink_fn(|_| {}))
        .unwrap();
    let pid = process.pid().unwrap();
    agent.client().shutdown().unwrap();
    let status = agent.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status}\n{}", agent.log());
    support::wait_gone(pid, Duration::from_secs(5));
    assert!(!agent.socket().exists(), "socket left behind");
}

/// A raw connection for frames a well-behaved client never sends.
struct Raw {
    frames: FrameReader<UnixStream>,
    out: UnixStream,
}

impl Raw {
    fn connect(agent: &Agent) -> Raw {
        let stream = UnixStream::connect(agent.socket()).unwrap();
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut raw = Raw {
            out: stream.try_clone().unwrap(),
            frames: FrameReader::new(stream),
        };
        assert!(matches!(
            raw.reply(),
            (None, Reply::Ready { version: 1, .. })
        ));
        raw
    }

    fn send(&mut self, bytes: &[u8]) {
        self.out.write_all(bytes).unwrap();
    }

    fn control(&mut self, json: &str) {
        FrameWriter::new(&mut self.out)
            .write_control(json.as_bytes())
            .unwrap();
    }

    /// The next control message, skipping output frames.
    fn reply(&mut self) -> (Option<u64>, Reply) {
        loop {
            match self.frames.read_frame().unwrap() {
                Some(Frame::Control(json)) => return agent_proto::decode(&json).unwrap(),
                Some(Frame::Data(_)) => {}
                None => panic!("agent closed the connection"),
            }
        }
    }

    /// The next error reply. Stdin credits are unsolicited and may arrive at any time (the
    /// process drains its pipe on its own schedule), so they are skipped.
    fn error(&mut self) -> (Option<u64>, ErrorKind, String) {
        loop {
            match self.reply() {
                (id, Reply::Error { kind, message }) => return (id, kind, message),
                (None, Reply::Credit { .. }) => {}
                other => panic!("expected an error, got {other:?}"),
            }
        }
    }

    fn ping(&mut self, id: u64) {
        self.control(&format!(r#"{{"v":1,"id":{id},"body":{{"type":"ping"}}}}"#));
        assert_eq!(self.reply(), (Some(id), Reply::Pong));
    }
}

#[test]
fn bad_frames_get_error_replies_and_the_agent_keeps_serving() {
    let agent = Agent::start();
    let mut raw = Raw::connect(&agent);

    raw.control("this is not json");
    let (id, kind, message) = raw.error();
    assert_eq!((id, kind), (None, ErrorKind::BadMessage), "{message}");
    raw.ping(1);

    let mut oversized = (agent_proto::MAX_FRAME + 1).to_be_bytes().to_vec();
    oversized.resize(4 + agent_proto::MAX_FRAME as usize + 1, 1);
    raw.send(&oversized);
    let (_, kind, message) = raw.error();
    assert_eq!(kind, ErrorKind::TooLarge, "{message}");
    assert!(message.contains("exceeds the limit"), "{message}");
    raw.ping(2);

    raw.control(r#"{"v":99,"id":3,"body":{"type":"teleport"}}"#);
    let (id, kind, message) = raw.error();
    assert_eq!((id, kind), (Some(3), ErrorKind::Version));
    assert!(message.contains("protocol version 99"), "{message}");
    raw.ping(4);

    raw.control(r#"{"v":1,"id":5,"body":{"type":"reboot_the_host"}}"#);
    assert_eq!(raw.error().1, ErrorKind::BadMessage);
    raw.send(&[0, 0, 0, 2, 0x7f, 0]);
    assert_eq!(raw.error().1, ErrorKind::BadFrame);
    raw.send(&[0, 0, 0, 0]);
    assert_eq!(raw.error().1, ErrorKind::BadFrame);
    raw.control(r#"{"v":1,"body":{"type":"ping"}}"#);
    assert_eq!(raw.error().1, ErrorKind::BadRequest);
    raw.control(r#"{"v":1,"id":6,"body":{"type":"start","process":1,"spec":{"argv":[]}}}"#);
    assert_eq!(
        raw.error(),
        (
            Some(6),
            ErrorKind::BadRequest,
            "invalid process spec: argv is empty".into()
        )
    );
    raw.control(r#"{"v":1,"id":7,"body":{"type":"wait","process":9}}"#);
    assert_eq!(raw.error().1, ErrorKind::UnknownProcess);
    raw.ping(8);

    // A frame cut short ends that connection only.
    raw.send(&[0, 0, 0, 50, 1, b'{']);
    drop(raw);
    assert_eq!(run(&agent.client(), &spec(&["true"])).0, 0);
}

#[test]
fn refusals_name_what_was_wrong() {
    let agent = Agent::start();
    agent_checks::refusals(UnixStream::connect(agent.socket()).unwrap());
    // The agent serves the next connection as before.
    assert_eq!(run(&agent.client(), &spec(&["true"])).0, 0);
}

#[test]
fn stdin_beyond_the_window_and_host_output_are_refused() {
    let agent = Agent::start();
    let mut raw = Raw::connect(&agent);
    raw.control(r#"{"v":1,"id":9,"body":{"type":"start","process":1,"spec":{"argv":["sleep","1000"],"stdin":true}}}"#);
    assert!(matches!(
        raw.reply(),
        (Some(9), Reply::Started { process: 1, .. })
    ));
    // `sleep` reads nothing: at most one chunk fits in its pipe (1 MiB at most), the next
    // waits in the agent, and the third is beyond the window.
    let chunk = vec![0u8; agent_proto::MAX_DATA];
    for _ in 0..3 {
        FrameWriter::new(&mut raw.out)
            .write_data(1, StreamId::Stdin, &chunk)
            .unwrap();
    }
    let (_, kind, message) = loop {
        match raw.reply() {
            (None, Reply::Credit { .. }) => {}
            (id, Reply::Error { kind, message }) => break (id, kind, message),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(kind, ErrorKind::FlowControl, "{message}");
    FrameWriter::new(&mut raw.out)
        .write_data(1, StreamId::Stdout, b"x")
        .unwrap();
    // Under load the agent may not have granted the first chunk's credit before the second
    // arrived: that chunk is refused for flow control too, before the stdout frame is.
    let kind = loop {
        match raw.reply() {
            (None, Reply::Credit { .. }) => {}
            (
                _,
                Reply::Error {
                    kind: ErrorKind::FlowControl,
                    ..
                },
            ) => {}
            (_, Reply::Error { kind, .. }) => break kind,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(kind, ErrorKind::BadFrame);
    raw.ping(10);
}

#[test]
fn a_host_that_stops_reading_blocks_only_its_own_connection() {
    let agent = Agent::start();
    let mut stuck = Raw::connect(&agent);
    // A process that closes its output at once and exits when killed, waited for...
    stuck.control(
        r#"{"v":1,"id":1,"body":{"type":"start","process":1,"spec":{"argv":["sh","-c","exec >&- 2>&-; exec sleep 1000"]}}}"#,
    );
    let quiet = match stuck.reply() {
        (Some(1), Reply::Started { pid, .. }) => pid,
        other => panic!("{other:?}"),
    };
    stuck.control(r#"{"v":1,"id":2,"body":{"type":"wait","process":1}}"#);
    // ... while another floods the connection, which this host stops reading.
    stuck.control(
        r#"{"v":1,"id":3,"body":{"type":"start","process":2,"spec":{"argv":["head","-c","100M","/dev/zero"]}}}"#,
    );
    let flood = match stuck.reply() {
        (Some(3), Reply::Started { pid, .. }) => pid,
        other => panic!("{other:?}"),
    };
    // Full: the agent stopped draining the flood's pipe, so `head` blocks writing it.
    let deadline = std::time::Instant::now() + TIMEOUT;
    while !blocked_writing_a_pipe(flood) {
        assert!(
            std::time::Instant::now() < deadline,
            "the flood never filled the connection:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // The waited-for process ends: its exit is owed on the full connection.
    // SAFETY: kill takes no pointers; `quiet` is this test's agent's child, not yet reaped.
    assert_eq!(unsafe { libc::kill(quiet, libc::SIGKILL) }, 0);
    // A zombie keeps its /proc entry: gone means the agent has reaped it.
    let proc_dir = std::path::PathBuf::from(format!("/proc/{quiet}"));
    while proc_dir.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the agent never reaped pid {quiet}:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // Another connection is served as usual (on a thread: a blocked agent must fail the
    // test, not hang it).
    let client = agent.client();
    let (done, served) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for _ in 0..3 {
            assert_eq!(run(&client, &spec(&["true"])).0, 0);
        }
        client.ping().unwrap();
        let _ = done.send(());
    });
    assert!(
        served.recv_timeout(TIMEOUT).is_ok(),
        "the stuck connection blocked another one:\n{}",
        agent.log()
    );
    drop(stuck);
}

/// Whether `pid` is asleep in a pipe write (`/proc/PID/wchan`: `pipe_write`, or
/// `anon_pipe_write` on newer kernels).
fn blocked_writing_a_pipe(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/wchan")).is_ok_and(|w| w.contains("pipe_write"))
}

#[test]
fn client_refuses_an_agent_of_another_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("future-agent.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let ready = br#"{"v":2,"body":{"type":"ready","version":2,"agent":"9.9"}}"#;
        FrameWriter::new(&mut s).write_control(ready).unwrap();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
    });
    let err = AgentClient::connect(&Endpoint::Unix(path), TIMEOUT).unwrap_err();
    assert!(
        matches!(err, ClientError::Version { agent: 2, host: 1 }),
        "{err}"
    );
    server.join().unwrap();
}

/// A stand-in for the VMM's vsock socket (Firecracker's convention): answers `CONNECT
/// <port>` for `port` with `OK <n>` and then relays bytes to the agent's socket; closes the
/// connection for any other port.
fn vsock_muxer(
    agent_socket: std::path::PathBuf,
    port: u32,
) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vsock.sock");
    let listener = UnixListener::bind(&path).unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let mut host = conn.unwrap();
            let mut line = Vec::new();
            let mut byte = [0u8];
            while host.read(&mut byte).unwrap() == 1 && byte[0] != b'\n' {
                line.push(byte[0]);
            }
            if line != format!("CONNECT {port}").as_bytes() {
                continue; // Dropped: refused.
            }
            let guest = UnixStream::connect(&agent_socket).unwrap();
            host.write_all(b"OK 1073741824\n").unwrap();
            let (mut h2, mut g2) = (host.try_clone().unwrap(), guest.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut h2, &mut g2);
                let _ = g2.shutdown(std::net::Shutdown::Write);
            });
            std::thread::spawn(move || {
                let (mut g, mut h) = (guest, host);
                let _ = std::io::copy(&mut g, &mut h);
                let _ = h.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    (dir, path)
}

#[test]
fn vsock_connect_convention() {
    let agent = Agent::start();
    let port = agent_proto::CONTROL_PORT;
    let (_dir, uds) = vsock_muxer(agent.socket().to_owned(), port);
    let client = AgentClient::connect(
        &Endpoint::Vsock {
            uds: uds.clone(),
            port,
        },
        TIMEOUT,
    )
    .unwrap();
    assert_eq!(client.agent_version(), env!("CARGO_PKG_VERSION"));
    assert_eq!(
        run(&client, &sh("echo via vsock")),
        (0, "via vsock\n".into(), String::new())
    );
    let err = AgentClient::connect(&Endpoint::Vsock { uds, port: 5 }, TIMEOUT).unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Connect(ConnectError::Refused { port: 5, .. })
        ),
        "{err}"
    );
}
