//! Control messages: the JSON envelope every control frame carries, the host's [`Request`]s,
//! the agent's [`Reply`]s, and the version check made on every message.
//!
//! ```text
//! {"v": 1, "id": 42, "body": {"type": "start", "process": 1, "spec": {...}}}
//! ```
//!
//! `v` is the sender's [`PROTOCOL_VERSION`](crate::PROTOCOL_VERSION); `id` is chosen by the host
//! for each request and echoed on its reply (absent on events and on errors about frames that
//! had no readable id). The envelope's shape never changes, so a wrong-version peer can always
//! be told so. Unknown fields are ignored (newer senders may add optional ones); unknown
//! message types are errors.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::PROTOCOL_VERSION;

/// Errors from encoding or decoding a control message.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    /// Serialization failed (not expected for these types).
    #[error("cannot encode the message")]
    Encode(#[source] serde_json::Error),
    /// Not a JSON envelope with a numeric `v`.
    #[error("not a protocol message (expected a JSON envelope {{\"v\", \"id\", \"body\"}})")]
    Malformed(#[source] serde_json::Error),
    /// The envelope is from another protocol version.
    #[error("message is protocol version {got}, this side speaks version {PROTOCOL_VERSION}")]
    Version {
        /// The sender's version.
        got: u32,
        /// The request id, if the envelope had one.
        id: Option<u64>,
    },
    /// The envelope is fine but its body is not a known message.
    #[error("unknown or invalid message body")]
    Body {
        /// The request id.
        id: Option<u64>,
        /// What serde found wrong.
        #[source]
        source: serde_json::Error,
    },
}

impl MessageError {
    /// The request id the message carried, so the error reply can be matched to it.
    pub fn id(&self) -> Option<u64> {
        match self {
            MessageError::Version { id, .. } | MessageError::Body { id, .. } => *id,
            MessageError::Encode(_) | MessageError::Malformed(_) => None,
        }
    }

    /// The error kind to report to the peer.
    pub fn kind(&self) -> ErrorKind {
        match self {
            MessageError::Version { .. } => ErrorKind::Version,
            MessageError::Encode(_) => ErrorKind::Internal,
            MessageError::Malformed(_) | MessageError::Body { .. } => ErrorKind::BadMessage,
        }
    }
}

/// The envelope of every control message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope<T> {
    /// The sender's protocol version.
    pub v: u32,
    /// Request id (host-chosen), echoed on the reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    /// The message.
    pub body: T,
}

/// The part of an envelope every version can read.
#[derive(Deserialize)]
struct Header {
    v: u32,
    #[serde(default)]
    id: Option<u64>,
}

/// Encodes `body` in an envelope of this [`PROTOCOL_VERSION`].
pub fn encode<T: Serialize>(id: Option<u64>, body: &T) -> Result<Vec<u8>, MessageError> {
    serde_json::to_vec(&Envelope {
        v: PROTOCOL_VERSION,
        id,
        body,
    })
    .map_err(MessageError::Encode)
}

/// Decodes an envelope, checking its version first: returns the request id and the body.
pub fn decode<T: DeserializeOwned>(json: &[u8]) -> Result<(Option<u64>, T), MessageError> {
    let header: Header = serde_json::from_slice(json).map_err(MessageError::Malformed)?;
    if header.v != PROTOCOL_VERSION {
        return Err(MessageError::Version {
            got: header.v,
            id: header.id,
        });
    }
    let id = header.id;
    let envelope: Envelope<T> =
        serde_json::from_slice(json).map_err(|source| MessageError::Body { id, source })?;
    Ok((id, envelope.body))
}

/// What the host asks of the agent. Each gets exactly one [`Reply`] with the same id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    /// Liveness and round-trip check; replied with [`Reply::Pong`].
    Ping,
    /// Starts a process. `process` is the host's number for it, unique on this connection,
    /// used in every later message and data frame about it. Replied with
    /// [`Reply::Started`], or [`Reply::Exited`] (126/127) if the program could not be run.
    Start {
        /// The host's number for the process.
        process: u32,
        /// What to run.
        spec: ProcessSpec,
    },
    /// Sends a signal to a running process; replied with [`Reply::Ok`].
    Signal {
        /// The process.
        process: u32,
        /// The signal number (1-64).
        signal: i32,
    },
    /// Sets a tty process's terminal size; replied with [`Reply::Ok`].
    Resize {
        /// The process.
        process: u32,
        /// The new size.
        size: TermSize,
    },
    /// Waits for a process: replied with [`Reply::Exited`] once it has exited and all its
    /// output has been sent (so its data frames always come first).
    Wait {
        /// The process.
        process: u32,
    },
    /// Kills every process and ends the sandbox (a VM resets, a host-process agent exits),
    /// after replying [`Reply::Ok`].
    Shutdown,
    /// Assembles the container's root filesystem from its layer disks and scratch disk and
    /// moves the agent into it: every process started afterwards (on any connection) runs
    /// there. Once per sandbox; replied with [`Reply::Ok`], or an error (kind
    /// [`ErrorKind::Setup`]) naming what failed.
    Setup {
        /// What to assemble.
        spec: SandboxSpec,
    },
    /// Mounts an image's layer disks and the overlay of them over the scratch disk the
    /// agent mounted before ready (`husk.scratch=`), with `/proc`, `/sys` and `/dev` moved
    /// in, and syncs: the image's part of [`Request::Setup`], done in a warm-start image
    /// template's guest, which the host snapshots once this is replied to. A later `Setup`
    /// with `rootfs_ready` and the same layers uses it. Once per sandbox, before `Setup`; replied with [`Reply::Ok`], or an error (kind
    /// [`ErrorKind::Setup`]).
    PrepareImage {
        /// Read-only layer block devices, lowest layer first.
        layers: Vec<String>,
        /// The layers' filesystem type (`erofs`).
        layer_fstype: String,
        /// Programs to read into the page cache (paths, or names searched in `path`),
        /// with their ELF interpreters: what the clones will likely start first.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        warm: Vec<String>,
        /// The PATH searched for `warm` (empty: docker's default).
        #[serde(default, skip_serializing_if = "String::is_empty")]
        path: String,
    },
    /// Changes the sandbox's interfaces while it runs (`network connect`/`disconnect`):
    /// each of `remove` loses the listed addresses and goes down, then each of `add` is
    /// configured as in setup (it gets the default route if there is none), then the
    /// container's `/etc/resolv.conf` is rewritten in place if `resolv_conf` is given.
    /// Replied with [`Reply::Ok`], or an error (kind [`ErrorKind::Network`]).
    Network {
        /// Interfaces to configure.
        #[serde(default)]
        add: Vec<InterfaceSpec>,
        /// Interfaces to take down, with the addresses the host gave them.
        #[serde(default)]
        remove: Vec<InterfaceSpec>,
        /// The container's new `/etc/resolv.conf` (its DNS server changed).
        #[serde(default)]
        resolv_conf: Option<String>,
    },
}

/// The container's root filesystem and identity files, for [`Request::Setup`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxSpec {
    /// Read-only layer block devices, lowest layer first (`/dev/vda`, `/dev/loop3`, ...).
    pub layers: Vec<String>,
    /// The layers' filesystem type (`erofs`).
    pub layer_fstype: String,
    /// The writable ext4 scratch device holding `upper/` and `work/`.
    pub scratch: String,
    /// The scratch device is the warm-start template's, which the agent mounted before
    /// the snapshot (`husk.scratch=`): the host attached a copy of the template's disk
    /// to it, so it is used as mounted.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub scratch_ready: bool,
    /// The overlay of `layers` over that scratch disk is assembled already
    /// ([`Request::PrepareImage`] in an image template's guest): only the container's
    /// part of the setup is left.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rootfs_ready: bool,
    /// The container's hostname (also set on the UTS namespace).
    pub hostname: String,
    /// Contents of the container's `/etc/hosts`.
    pub hosts: String,
    /// Contents of the container's `/etc/resolv.conf`.
    pub resolv_conf: String,
    /// Whether to write `/etc/hostname` (docker does unless the image is run with none).
    pub hostname_file: bool,
    /// docker's `--read-only`: the root filesystem is mounted read-only (the kernel
    /// filesystems, `/dev` and the `/etc` files stay as they are).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
    /// docker's `--shm-size` in bytes (`None`: 64 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shm_size: Option<u64>,
    /// docker's `--tmpfs PATH[:OPTIONS]`: fresh tmpfs mounts inside the rootfs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tmpfs: Vec<TmpfsMount>,
    /// docker's `--pids-limit`, applied inside the sandbox (a VM's own cgroup); `None`
    /// where the host's cgroup limits the sandbox already.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids_limit: Option<u64>,
    /// docker's `--sysctl KEY=VALUE` (namespaced ones; checked by the host).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sysctls: Vec<(String, String)>,
    /// docker's `--device`: device nodes of the agent's own `/dev` (the host's, under
    /// process isolation) made available in the container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<DeviceMount>,
    /// What makes a VM guest itself rather than a twin of the snapshot it was restored
    /// from, applied before anything else. Sent to VM agents only: a process sandbox
    /// shares the host's kernel, clock and RNG.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest: Option<GuestIdentity>,
    /// Network interfaces to configure (none: only loopback, docker's `--network none`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<InterfaceSpec>,
    /// The virtio-fs tag of the container's shared directory (vm isolation), mounted in
    /// the agent's own tree before the volumes, whose sources are relative to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share: Option<String>,
    /// Volumes and bind mounts, in mount order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeMount>,
}

/// One volume or bind mount (docker's `-v`, `--mount type=volume|bind`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeMount {
    /// What to mount: a path relative to the shared directory ([`SandboxSpec::share`]),
    /// or (with `fd`) the host's path, for messages.
    pub source: String,
    /// Process isolation: the source is a detached mount (`open_tree` on the host)
    /// inherited as this descriptor, which the agent moves into place and then closes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fd: Option<i32>,
    /// Absolute path inside the container.
    pub target: String,
    /// Mounted read-only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
    /// A new volume: if it is empty, first copy into it what the image has at `target`
    /// (docker's copy-up of image content into a fresh volume).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fill: bool,
}

/// One network interface of the sandbox, as the host wired it: a virtio-net NIC in a VM,
/// a veth end moved into the sandbox's namespace under process isolation. The agent finds
/// it by name, sets its MAC and MTU, adds the addresses and the default route, and
/// brings it up, through rtnetlink; there is no DHCP in a sandbox.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceSpec {
    /// The interface's name in the sandbox (`eth0`).
    pub name: String,
    /// Its MAC address (a VM restored from a template has the template's until set).
    pub mac: [u8; 6],
    /// Its MTU.
    pub mtu: u32,
    /// Addresses with prefix lengths.
    pub addresses: Vec<(std::net::IpAddr, u8)>,
    /// The default IPv4 route's gateway, if the network has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<std::net::Ipv4Addr>,
}

/// A VM guest's own randomness and time (see [`SandboxSpec::guest`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestIdentity {
    /// Bytes from the host's RNG that the agent mixes into the guest kernel's pool and
    /// credits, then reseeds the kernel's generator with (`RNDADDENTROPY`,
    /// `RNDRESEEDCRNG`): clones of one snapshot draw different numbers from then on.
    pub entropy: Vec<u8>,
    /// The host's wall-clock time when it sent the request, in nanoseconds since the
    /// epoch: a restored guest's clock stands still at the snapshot's time otherwise.
    pub wall_clock_ns: u64,
}

/// One `--device`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceMount {
    /// The device node as the agent sees it (absolute).
    pub source: String,
    /// Where it appears in the container (absolute).
    pub target: String,
}

/// One `--tmpfs`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TmpfsMount {
    /// Absolute path inside the container.
    pub path: String,
    /// docker's options (`rw`/`ro`, `exec`/`noexec`, `suid`/`nosuid`, `dev`/`nodev`,
    /// `size=`, `mode=`, `uid=`, `gid=`, `nr_inodes=`), comma-separated.
    pub options: String,
}

/// A process to run, as docker's exec/run specs describe it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessSpec {
    /// Program and arguments; `argv[0]` without a slash is looked up in the `PATH` of `env`.
    pub argv: Vec<String>,
    /// The whole environment, as `KEY=VALUE`; the agent adds a default `PATH` if it has none.
    #[serde(default)]
    pub env: Vec<String>,
    /// Working directory; `/` if absent.
    #[serde(default)]
    pub cwd: Option<String>,
    /// Identity to run as; the agent's own (root) if absent.
    #[serde(default)]
    pub user: Option<User>,
    /// Run on a new pseudo-terminal (stdout carries everything, there is no stderr).
    #[serde(default)]
    pub tty: bool,
    /// Initial terminal size (tty only).
    #[serde(default)]
    pub size: Option<TermSize>,
    /// Whether the host will send stdin; if false the process reads `/dev/null`.
    #[serde(default)]
    pub stdin: bool,
    /// Docker's `--user` (`user`, `uid`, `user:group`, `uid:gid`), resolved by the agent
    /// against the container's `/etc/passwd` and `/etc/group`; takes precedence over `user`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_name: Option<String>,
    /// Docker's `--init`: run the program under a minimal init (`husk-init`, the agent's
    /// own) that forwards signals to it, reaps orphans and exits with its status.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub init: bool,
    /// The container's main process (after `Setup`, once): PID 1 of the container's own PID
    /// and mount namespaces, which every later process joins. Processes started before it
    /// run in the agent's namespaces.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub main: bool,
    /// The capability bounding set after `Setup`, as a mask of capability numbers
    /// (`None`: docker's default set); docker's `--cap-add`, `--cap-drop`, `--privileged`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<u64>,
    /// Resource limits set before exec (docker's `--ulimit`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rlimits: Vec<Rlimit>,
    /// Run one of the agent's own tools instead of a program of the container's, as root
    /// (docker's daemon-side work on a container's files) with docker's default
    /// capabilities plus DAC_READ_SEARCH and SYS_ADMIN; `argv` only names it in messages;
    /// `user`, `capabilities` and `rlimits` are ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<Tool>,
}

/// The agent's own tools.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tool {
    /// `husk-archive`: one operation on the container's files.
    Archive(crate::archive::ArchiveOp),
    /// `husk-top`: the container's processes as `ps -ef` lists them ([`Top`] as JSON on
    /// stdout).
    Top,
    /// `husk-init --hold`, as the main process only: holds the container open with no
    /// program of the image's (docker's build steps run their commands as later processes),
    /// reaping orphans, until a stop signal ends it with 0.
    Hold,
}

/// docker's `top`: column titles and one row per process.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Top {
    /// Column titles.
    pub titles: Vec<String>,
    /// Rows, one value per title.
    pub processes: Vec<Vec<String>>,
}

impl Top {
    /// The tool's output.
    pub fn to_json(&self) -> String {
        // Strings only: serializing cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses the tool's output.
    pub fn from_json(json: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(json)
    }
}

/// One resource limit (`setrlimit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rlimit {
    /// The resource (`RLIMIT_NOFILE` = 7, ...).
    pub resource: u32,
    /// Soft limit.
    pub soft: u64,
    /// Hard limit.
    pub hard: u64,
}

/// Numeric identity of a process (names are resolved by the host).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups (replaces the agent's).
    #[serde(default)]
    pub additional_gids: Vec<u32>,
}

/// A terminal size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TermSize {
    /// Rows.
    pub rows: u16,
    /// Columns.
    pub cols: u16,
}

/// What the agent sends: a reply to one request (same id), or an event (no id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Reply {
    /// First message on every connection (event).
    Ready {
        /// The agent's [`PROTOCOL_VERSION`]; the host must check it.
        version: u32,
        /// The agent's build version, for people.
        agent: String,
    },
    /// Answer to [`Request::Ping`].
    Pong,
    /// The process runs.
    Started {
        /// The host's number for it.
        process: u32,
        /// Its pid in the sandbox.
        pid: i32,
    },
    /// The request was carried out.
    Ok,
    /// The process has exited and all its output has been sent.
    Exited {
        /// The host's number for it.
        process: u32,
        /// Docker-style: the exit status, 128 + signal, 126 cannot execute, 127 not found.
        code: i32,
        /// What happened, for people.
        detail: String,
        /// SIGKILL came from the kernel's OOM killer (the sandbox ran out of memory).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        oom_killed: bool,
    },
    /// The agent has written `bytes` more of the process's stdin: the host may send that
    /// much more (event; see [`STDIN_WINDOW`](crate::STDIN_WINDOW)).
    Credit {
        /// The host's number for the process.
        process: u32,
        /// Bytes granted.
        bytes: u32,
    },
    /// The request (or, without an id, a frame) was refused; the connection stays usable.
    Error {
        /// What kind of failure.
        kind: ErrorKind,
        /// What went wrong, for people.
        message: String,
    },
}

/// Machine-readable kinds of [`Reply::Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// A frame was malformed (length 0, unknown kind, bad data header).
    BadFrame,
    /// A frame exceeded [`MAX_FRAME`](crate::MAX_FRAME).
    TooLarge,
    /// A control frame was not a valid message.
    BadMessage,
    /// A message from another protocol version.
    Version,
    /// A valid message with invalid content (empty argv, bad signal, ...).
    BadRequest,
    /// No process with that number on this connection.
    UnknownProcess,
    /// The process number is already in use on this connection.
    DuplicateProcess,
    /// The process has already exited.
    NotRunning,
    /// Stdin beyond the granted window, or after its end.
    FlowControl,
    /// The agent failed internally.
    Internal,
    /// [`Request::Setup`] failed (a device is missing, a mount failed) or was already done.
    Setup,
    /// [`Request::Network`] failed (no such interface, the kernel refused a change).
    Network,
    /// A kind this side does not know (sent by a newer peer).
    #[serde(other)]
    Unknown,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        let spec = ProcessSpec {
            argv: vec!["sh".into(), "-c".into(), "echo \"hi\"".into()],
            env: vec!["A=b".into()],
            cwd: Some("/tmp".into()),
            user: Some(User {
                uid: 1000,
                gid: 100,
                additional_gids: vec![10, 20],
            }),
            tty: true,
            size: Some(TermSize { rows: 24, cols: 80 }),
            stdin: true,
            user_name: Some("nobody:nogroup".into()),
            init: true,
            main: true,
            capabilities: Some(0xa80425fb),
            rlimits: vec![Rlimit {
                resource: 7,
                soft: 1024,
                hard: 2048,
            }],
            tool: Some(Tool::Archive(crate::archive::ArchiveOp::Changes)),
        };
        for req in [
            Request::Ping,
            Request::Start { process: 3, spec },
            Request::Setup {
                spec: sandbox_spec(),
            },
            Request::Signal {
                process: 3,
                signal: 15,
            },
            Request::Resize {
                process: 3,
                size: TermSize { rows: 1, cols: 2 },
            },
            Request::Wait { process: 3 },
            Request::Shutdown,
        ] {
            let json = encode(Some(9), &req).unwrap();
            assert_eq!(decode::<Request>(&json).unwrap(), (Some(9), req));
        }
    }

    fn sandbox_spec() -> SandboxSpec {
        SandboxSpec {
            layers: vec!["/dev/loop3".into(), "/dev/loop4".into()],
            layer_fstype: "erofs".into(),
            scratch: "/dev/loop5".into(),
            hostname: "c0ffee".into(),
            hosts: "127.0.0.1\tlocalhost\n".into(),
            resolv_conf: "nameserver 10.0.2.3\n".into(),
            hostname_file: true,
            ..SandboxSpec::default()
        }
    }

    #[test]
    fn setup_wire_shape_is_stable() {
        let json = encode(
            Some(2),
            &Request::Setup {
                spec: sandbox_spec(),
            },
        )
        .unwrap();
        assert_eq!(
            std::str::from_utf8(&json).unwrap(),
            concat!(
                r#"{"v":1,"id":2,"body":{"type":"setup","spec":{"layers":["/dev/loop3","/dev/loop4"],"#,
                r#""layer_fstype":"erofs","scratch":"/dev/loop5","hostname":"c0ffee","#,
                r#""hosts":"127.0.0.1\tlocalhost\n","resolv_conf":"nameserver 10.0.2.3\n","#,
                r#""hostname_file":true}}}"#
            )
        );
        let reply = encode(
            Some(2),
            &Reply::Error {
                kind: ErrorKind::Setup,
                message: "m".into(),
            },
        )
        .unwrap();
        assert!(
            std::str::from_utf8(&reply)
                .unwrap()
                .contains(r#""kind":"setup""#)
        );
    }

    #[test]
    fn user_name_is_optional_on_the_wire() {
        let spec = ProcessSpec {
            argv: vec!["id".into()],
            ..ProcessSpec::default()
        };
        let json = serde_json::to_string(&spec).unwrap();
        assert!(!json.contains("user_name"), "{json}");
        let named: ProcessSpec =
            serde_json::from_str(r#"{"argv":["id"],"user_name":"1000:1000"}"#).unwrap();
        assert_eq!(named.user_name.as_deref(), Some("1000:1000"));
    }

    #[test]
    fn replies_round_trip() {
        for reply in [
            Reply::Ready {
                version: PROTOCOL_VERSION,
                agent: "0.1.0".into(),
            },
            Reply::Pong,
            Reply::Started {
                process: 1,
                pid: 42,
            },
            Reply::Ok,
            Reply::Exited {
                process: 1,
                code: 137,
                detail: "killed by signal 9".into(),
                oom_killed: true,
            },
            Reply::Credit {
                process: 1,
                bytes: 65536,
            },
            Reply::Error {
                kind: ErrorKind::TooLarge,
                message: "x".into(),
            },
        ] {
            let json = encode(None, &reply).unwrap();
            assert_eq!(decode::<Reply>(&json).unwrap(), (None, reply));
        }
    }

    #[test]
    fn wire_shape_is_stable() {
        let json = encode(Some(5), &Request::Wait { process: 2 }).unwrap();
        assert_eq!(
            std::str::from_utf8(&json).unwrap(),
            r#"{"v":1,"id":5,"body":{"type":"wait","process":2}}"#
        );
        let json = encode(None, &Reply::Pong).unwrap();
        assert_eq!(
            std::str::from_utf8(&json).unwrap(),
            r#"{"v":1,"body":{"type":"pong"}}"#
        );
    }

    #[test]
    fn minimal_start_uses_defaults_and_ignores_unknown_fields() {
        let json = br#"{"v":1,"id":1,"body":{"type":"start","process":1,
            "spec":{"argv":["true"],"future":1},"later":true}}"#;
        let (id, req) = decode::<Request>(json).unwrap();
        assert_eq!(id, Some(1));
        let Request::Start { spec, .. } = req else {
            panic!("{req:?}")
        };
        assert_eq!(
            spec,
            ProcessSpec {
                argv: vec!["true".into()],
                ..ProcessSpec::default()
            }
        );
    }

    #[test]
    fn wrong_version_is_reported_with_its_id() {
        let err = decode::<Request>(br#"{"v":2,"id":77,"body":{"type":"hello_v2"}}"#).unwrap_err();
        assert!(matches!(
            err,
            MessageError::Version {
                got: 2,
                id: Some(77)
            }
        ));
        assert_eq!(err.kind(), ErrorKind::Version);
        assert_eq!(err.id(), Some(77));
        assert!(err.to_string().contains("version 2"), "{err}");
    }

    #[test]
    fn malformed_messages() {
        for bad in [
            &b"not json"[..],
            b"{}",
            b"[]",
            br#"{"v":"1"}"#,
            b"",
            b"\xff",
        ] {
            let err = decode::<Request>(bad).unwrap_err();
            assert!(matches!(err, MessageError::Malformed(_)), "{err}");
            assert_eq!((err.kind(), err.id()), (ErrorKind::BadMessage, None));
        }
        for bad in [
            &br#"{"v":1,"id":4,"body":{"type":"reboot_host"}}"#[..],
            br#"{"v":1,"id":4}"#,
            br#"{"v":1,"id":4,"body":{"type":"signal","process":1}}"#,
        ] {
            let err = decode::<Request>(bad).unwrap_err();
            assert!(
                matches!(err, MessageError::Body { id: Some(4), .. }),
                "{err}"
            );
            assert_eq!(err.kind(), ErrorKind::BadMessage);
        }
    }

    #[test]
    fn unknown_error_kinds_from_newer_agents_are_tolerated() {
        let json = br#"{"v":1,"body":{"type":"error","kind":"quota","message":"m"}}"#;
        let (_, reply) = decode::<Reply>(json).unwrap();
        assert_eq!(
            reply,
            Reply::Error {
                kind: ErrorKind::Unknown,
                message: "m".into()
            }
        );
    }
}
