//! The agent checks that must hold over every transport, the same as the host-process
//! tests in `agent_protocol.rs`: output of `echo`, exit codes 0, 3, 126, 127 and 137, a
//! 64 MiB stdout stream arriving sha256-exact, stdin reaching `cat`, a signal from the host
//! killing `sleep`, and malformed, oversized and wrong-version frames answered with error
//! replies while the agent keeps serving. Shared (by `#[path]`) between runtime's
//! `agent_over_vsock` (the agent behind the real vsock muxer and a simulated guest) and
//! the end-to-end `vm_agent` (the agent as PID 1 of a real microVM).
//!
//! Needs only `sh`, `echo`, `cat` and `sleep` on the agent's `PATH`, and a file of
//! [`BIG_LEN`] bytes of [`big_pattern`] where the agent can read it.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use std::io::Write;
use std::os::unix::net::UnixStream;

use agent_proto::{ErrorKind, Frame, FrameReader, FrameWriter, Reply};
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
