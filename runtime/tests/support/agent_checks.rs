//! The agent checks that must hold over every transport, the same as the host-process
//! tests in `agent_protocol.rs`: output of `echo`, exit codes 0, 3, 126, 127 and 137, a
//! 64 MiB stdout stream arriving sha256-exact, stdin reaching `cat`, a signal from the host
//! killing `sleep`, malformed, oversized and wrong-version frames answered with error
//! replies while the agent keeps serving, and the requests it must refuse (a process number
//! in use, stdin for an unknown process, for one without stdin or after its end, a signal to
//! a process that has exited). Shared (by `#[path]`) between runtime's
//! `agent_over_vsock` (the agent behind the real vsock muxer and a simulated guest) and
//! the end-to-end `vm_agent` (the agent as PID 1 of a real microVM).
//!
//! Needs only `sh`, `echo`, `cat` and `sleep` on the agent's `PATH`, and a file of
//! [`BIG_LEN`] bytes of [`big_pattern`] where the agent can read it.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use std::io::Write;
use std::os::unix::net::UnixStream;

use agent_proto::{ErrorKind, Frame, FrameReader, FrameWriter, Reply, StreamId};
use runtime::agent_client::{AgentClient, ProcessSpec, Sink, sink_fn};
use sha2::{Digest, Sha256};

/// Size of the stdout stream.
pub const BIG_LEN: usize = 64 << 20;

/// Collects a stream's bytes.
#[derive(Clone, Default)]
pub struct Capture(Arc<Mutex<Vec<u8>>>);

impl Capture {
    pub fn sink(&self) -> Sink {
        let buf = Arc::clone(&self.0);
        sink_fn(move |bytes| buf.lock().unwrap().extend_from_slice(bytes))
    }

    pub fn bytes(&self) -> Vec<u8> {
        self.0.lock().unwrap().clone()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

pub fn spec(argv: &[&str]) -> ProcessSpec {
    ProcessSpec {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        ..ProcessSpec::default()
    }
}

/// Deterministic pseudo-random bytes (xorshift), the content of the big file.
pub fn big_pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Runs `spec` without stdin; returns (code, stdout, stderr).
fn run(client: &AgentClient, spec: &ProcessSpec) -> (i32, String, String) {
    let (out, err) = (Capture::default(), Capture::default());
    let exit = client.run(spec, None, out.sink(), err.sink()).unwrap();
    (exit.code, out.text(), err.text())
}

pub fn echo(client: &AgentClient) {
    let (code, out, err) = run(client, &spec(&["echo", "hello", "from", "the agent"]));
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (0, "hello from the agent\n", "")
    );
}

pub fn exit_codes(client: &AgentClient) {
    assert_eq!(run(client, &spec(&["sh", "-c", "exit 0"])).0, 0);
    assert_eq!(
        run(
            client,
            &spec(&["sh", "-c", "echo out; echo err >&2; exit 3"])
        ),
        (3, "out\n".into(), "err\n".into())
    );
    let (code, out, _) = run(client, &spec(&["husk-no-such-program"]));
    assert_eq!((code, out.as_str()), (127, ""));
    // A directory cannot be executed: docker's 126.
    assert_eq!(run(client, &spec(&["/"])).0, 126);
    assert_eq!(run(client, &spec(&["sh", "-c", "kill -9 $$"])).0, 137);
}

/// On a fresh connection to the agent (`stream`, past any vsock `CONNECT`): bad JSON, an
/// oversized frame, a wrong protocol version and an unknown request each get an error
/// reply, and the same connection still answers pings.
pub fn malformed_frames(stream: UnixStream) {
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let mut out = stream.try_clone().unwrap();
    let mut frames = FrameReader::new(stream);
    let mut reply = || loop {
        match frames.read_frame().unwrap() {
            Some(Frame::Control(json)) => return agent_proto::decode(&json).unwrap(),
            Some(Frame::Data(_)) => {}
            None => panic!("the agent closed the connection"),
        }
    };
    assert!(matches!(reply(), (None, Reply::Ready { .. })));
    let mut control = |json: &str| {
        FrameWriter::new(&mut out)
            .write_control(json.as_bytes())
            .unwrap();
    };
    let cases: [(&str, ErrorKind); 3] = [
        ("this is not json", ErrorKind::BadMessage),
        (
            r#"{"v":99,"id":3,"body":{"type":"teleport"}}"#,
            ErrorKind::Version,
        ),
        (
            r#"{"v":1,"id":5,"body":{"type":"reboot_the_host"}}"#,
            ErrorKind::BadMessage,
        ),
    ];
    for (n, (json, kind)) in cases.into_iter().enumerate() {
        control(json);
        match reply() {
            (_, Reply::Error { kind: k, message }) => assert_eq!(k, kind, "{message}"),
            other => panic!("{json}: expected an error, got {other:?}"),
        }
        control(&format!(
            r#"{{"v":1,"id":{},"body":{{"type":"ping"}}}}"#,
            100 + n
        ));
        assert_eq!(reply(), (Some(100 + n as u64), Reply::Pong));
    }
    let mut oversized = (agent_proto::MAX_FRAME + 1).to_be_bytes().to_vec();
    oversized.resize(4 + agent_proto::MAX_FRAME as usize + 1, 1);
    out.write_all(&oversized).unwrap();
    match reply() {
        (_, Reply::Error { kind, message }) => assert_eq!(kind, ErrorKind::TooLarge, "{message}"),
        other => panic!("oversized frame: expected an error, got {other:?}"),
    }
    FrameWriter::new(&mut out)
        .write_control(br#"{"v":1,"id":200,"body":{"type":"ping"}}"#)
        .unwrap();
    assert_eq!(reply(), (Some(200), Reply::Pong));
}

/// Hand-made frames on one connection, for what a well-behaved client never sends.
struct RawConn {
    frames: FrameReader<UnixStream>,
    out: UnixStream,
    /// Pings sent so far (their ids are 1000 + n).
    pings: u64,
}

impl RawConn {
    /// Takes a fresh connection (past any vsock `CONNECT`) and its `Ready`.
    fn new(stream: UnixStream) -> Self {
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(60)))
            .unwrap();
        let mut raw = Self {
            out: stream.try_clone().unwrap(),
            frames: FrameReader::new(stream),
            pings: 0,
        };
        assert!(matches!(raw.reply("ready"), (None, Reply::Ready { .. })));
        raw
    }

    /// Sends request `id` with `body` (the JSON of a request body).
    fn request(&mut self, id: u64, body: &str) {
        let json = format!(r#"{{"v":1,"id":{id},"body":{body}}}"#);
        FrameWriter::new(&mut self.out)
            .write_control(json.as_bytes())
            .unwrap();
    }

    /// Sends stdin bytes for `process` (empty: its end).
    fn stdin(&mut self, process: u32, bytes: &[u8]) {
        FrameWriter::new(&mut self.out)
            .write_data(process, StreamId::Stdin, bytes)
            .unwrap();
    }

    /// The next control message, skipping output frames and stdin credits (unsolicited:
    /// the agent grants them whenever a process drains its pipe).
    fn reply(&mut self, what: &str) -> (Option<u64>, Reply) {
        loop {
            let frame = self.frames.read_frame();
            match frame.unwrap_or_else(|e| panic!("{what}: no answer from the agent ({e})")) {
                Some(Frame::Control(json)) => match agent_proto::decode(&json).unwrap() {
                    (None, Reply::Credit { .. }) => {}
                    other => return other,
                },
                Some(Frame::Data(_)) => {}
                None => panic!("the agent closed the connection"),
            }
        }
    }

    /// Asserts that the next reply is the refusal `kind` with `message` (to request `id`).
    /// A ping sent after the refused frame must be answered after the refusal: the agent
    /// handles a connection's frames in order, so a frame it accepted silently shows up
    /// as the pong coming first, not as a wait.
    fn refused(&mut self, what: &str, id: Option<u64>, kind: ErrorKind, message: &str) {
        self.pings += 1;
        let ping = 1000 + self.pings;
        self.request(ping, r#"{"type":"ping"}"#);
        let want = Reply::Error {
            kind,
            message: message.to_owned(),
        };
        assert_eq!(self.reply(what), (id, want), "{what}");
        assert_eq!(self.reply(what), (Some(ping), Reply::Pong), "{what}");
    }
}

/// On a fresh connection to the agent (`stream`, past any vsock `CONNECT`): every request
/// the agent must refuse gets its error kind and message, and the connection keeps serving:
/// a process number already in use, stdin for an unknown process, stdin for a process
/// started without it, stdin after its end of stream, and a signal to a process that has
/// exited.
pub fn refusals(stream: UnixStream) {
    let mut raw = RawConn::new(stream);
    let cat = r#"{"type":"start","process":1,"spec":{"argv":["cat"],"stdin":true}}"#;
    raw.request(1, cat);
    let started = raw.reply("starting cat");
    assert!(
        matches!(started, (Some(1), Reply::Started { process: 1, .. })),
        "{started:?}"
    );
    raw.request(2, cat);
    raw.refused(
        "a second process 1",
        Some(2),
        ErrorKind::DuplicateProcess,
        "process number 1 is in use",
    );
    raw.stdin(7, b"x");
    raw.refused(
        "stdin for a process never started",
        None,
        ErrorKind::UnknownProcess,
        "stdin for unknown process 7",
    );
    raw.request(
        3,
        r#"{"type":"start","process":2,"spec":{"argv":["sleep","1000"]}}"#,
    );
    let started = raw.reply("starting sleep");
    assert!(
        matches!(started, (Some(3), Reply::Started { process: 2, .. })),
        "{started:?}"
    );
    raw.stdin(2, b"x");
    raw.refused(
        "stdin for a process started without it",
        None,
        ErrorKind::FlowControl,
        "process 2 was started without stdin",
    );
    // End of stdin: `cat` exits; stdin after that, and a signal to it, are refused.
    raw.stdin(1, b"");
    raw.request(4, r#"{"type":"wait","process":1}"#);
    let exited = raw.reply("cat's exit after the end of its stdin");
    assert!(
        matches!(
            exited,
            (
                Some(4),
                Reply::Exited {
                    process: 1,
                    code: 0,
                    ..
                }
            )
        ),
        "{exited:?}"
    );
    raw.stdin(1, b"late");
    raw.refused(
        "stdin after its end",
        None,
        ErrorKind::FlowControl,
        "stdin of process 1 has already ended",
    );
    raw.request(5, r#"{"type":"signal","process":1,"signal":15}"#);
    raw.refused(
        "a signal to a process that has exited",
        Some(5),
        ErrorKind::NotRunning,
        "process 1 is not running",
    );
    // Still serving: process 2 is signalled and waited for as usual.
    raw.request(6, r#"{"type":"signal","process":2,"signal":9}"#);
    assert_eq!(raw.reply("signalling sleep"), (Some(6), Reply::Ok));
    raw.request(7, r#"{"type":"wait","process":2}"#);
    let exited = raw.reply("sleep's exit");
    assert!(
        matches!(
            exited,
            (
                Some(7),
                Reply::Exited {
                    process: 2,
                    code: 137,
                    ..
                }
            )
        ),
        "{exited:?}"
    );
    raw.request(8, r#"{"type":"ping"}"#);
    assert_eq!(raw.reply("ping"), (Some(8), Reply::Pong));
}

/// `cat big_path` (a file of [`BIG_LEN`] bytes of `big_pattern(BIG_LEN, seed)`).
pub fn big_stdout(client: &AgentClient, big_path: &str, seed: u64) {
    let want = Sha256::digest(big_pattern(BIG_LEN, seed));
    let hasher = Arc::new(Mutex::new((Sha256::new(), 0usize)));
    let h = Arc::clone(&hasher);
    let out = sink_fn(move |bytes| {
        let mut h = h.lock().unwrap();
        h.0.update(bytes);
        h.1 += bytes.len();
    });
    let err = Capture::default();
    let exit = client
        .run(&spec(&["cat", big_path]), None, out, err.sink())
        .unwrap();
    assert_eq!(exit.code, 0, "{exit:?} {}", err.text());
    let (hasher, len) = std::mem::take(&mut *hasher.lock().unwrap());
    assert_eq!(len, BIG_LEN);
    assert_eq!(hasher.finalize(), want, "stdout differs from {big_path}");
}

/// A line and then 2 MiB (twice the stdin window) through `cat`, byte-exact.
pub fn stdin_to_cat(client: &AgentClient) {
    let out = Capture::default();
    let exit = client
        .run(
            &spec(&["cat"]),
            Some(&mut &b"through cat\n"[..]),
            out.sink(),
            sink_fn(|_| {}),
        )
        .unwrap();
    assert_eq!((exit.code, out.text().as_str()), (0, "through cat\n"));

    let input = big_pattern(2 << 20, 99);
    let out = Capture::default();
    let exit = client
        .run(
            &spec(&["cat"]),
            Some(&mut &input[..]),
            out.sink(),
            sink_fn(|_| {}),
        )
        .unwrap();
    assert_eq!(exit.code, 0);
    let got = out.bytes();
    assert_eq!(got.len(), input.len());
    assert!(got == input, "cat echoed different bytes");
}

/// SIGTERM and SIGKILL from the host end `sleep` with 128 + the signal.
pub fn signal_kills_sleep(client: &AgentClient) {
    for (signal, code) in [(libc::SIGTERM, 143), (libc::SIGKILL, 137)] {
        let sleeper = client
            .start(&spec(&["sleep", "1000"]), sink_fn(|_| {}), sink_fn(|_| {}))
            .unwrap();
        assert!(sleeper.pid().is_some());
        sleeper.signal(signal).unwrap();
        assert_eq!(sleeper.wait().unwrap().code, code, "signal {signal}");
    }
}

/// Every check, in order.
pub fn all(client: &AgentClient, big_path: &str, seed: u64) {
    client.ping().unwrap();
    echo(client);
    exit_codes(client);
    big_stdout(client, big_path, seed);
    stdin_to_cat(client);
    signal_kills_sleep(client);
}
