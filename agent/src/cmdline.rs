//! The agent's configuration from the kernel command line: where it is read from
//! (`/proc/cmdline`, or `HUSK_AGENT_CMDLINE` in process mode and tests), how it is split into
//! parameters (as the kernel does: whitespace-separated, double quotes group, `--` ends the
//! kernel's part) and which `husk.*` parameters the agent understands.
//!
//! The agent cannot take these from its environment: the kernel passes parameters whose name
//! contains a dot to modules, never to init.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::listen::ListenSpec;

/// Environment variable that replaces `/proc/cmdline` (process mode and tests: there
/// `/proc/cmdline` is the host's).
pub const CMDLINE_ENV: &str = "HUSK_AGENT_CMDLINE";
/// Where the kernel command line is read from when [`CMDLINE_ENV`] is unset.
const PROC_CMDLINE: &str = "/proc/cmdline";
/// Hostname when `husk.hostname=` is absent.
pub const DEFAULT_HOSTNAME: &str = "husk";
/// Longest hostname the kernel accepts (`HOST_NAME_MAX`).
const HOSTNAME_MAX: usize = 64;

/// Errors from reading or interpreting the command line.
#[derive(Debug, thiserror::Error)]
pub enum CmdlineError {
    /// `/proc/cmdline` could not be read.
    #[error("cannot read {PROC_CMDLINE}")]
    Read(#[source] io::Error),
    /// The command line is not valid UTF-8.
    #[error("the kernel command line is not UTF-8")]
    NotUtf8,
    /// `husk.hostname=` is not a valid hostname.
    #[error(
        "husk.hostname={0:?} is not a valid hostname (1-64 of [A-Za-z0-9.-], starting alphanumeric)"
    )]
    InvalidHostname(String),
    /// `husk.exec=` is not an absolute path.
    #[error("husk.exec={0:?} must be an absolute path")]
    InvalidExec(String),
    /// A descriptor parameter is not `fd:N` (N > 2).
    #[error("{0}={1:?} is not an inherited descriptor (fd:N, N > 2)")]
    BadFd(String, String),
    /// `husk.transport=` is not a transport.
    #[error("husk.transport={0:?} is not a transport (vsock, vsock:PORT, unix:/PATH or none)")]
    InvalidTransport(String),
    /// A device parameter is not a path under `/dev`.
    #[error("{0}={1:?} is not a device (/dev/NAME)")]
    BadDevice(String, String),
    /// A boolean parameter has a value that is not a boolean.
    #[error("{key}={value:?} is not a boolean (1/0, y/n, yes/no, true/false, on/off)")]
    InvalidBool { key: String, value: String },
}

/// Where the command line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The `HUSK_AGENT_CMDLINE` environment variable.
    Env,
    /// `/proc/cmdline`.
    Proc,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::Env => CMDLINE_ENV,
            Source::Proc => PROC_CMDLINE,
        })
    }
}

/// How the agent takes requests from the host after reporting ready (`husk.transport=`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Transport {
    /// The default: the vsock control port if this VM has a vsock device, else nothing
    /// (a guest without one has no host to talk to, and resets instead of waiting forever).
    #[default]
    Auto,
    /// `none`: serve nothing; report on the console only.
    None,
    /// `vsock`, `vsock:PORT` or `unix:/PATH`: serve there, failing if it cannot.
    Listen(ListenSpec),
}

/// What the command line asks of the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `husk.hostname=NAME`, else [`DEFAULT_HOSTNAME`].
    pub hostname: String,
    /// `husk.exec=/ABS/PATH`: a program to run (no arguments) before resetting.
    pub exec: Option<PathBuf>,
    /// `husk.panic_test=1`: panic right after reporting ready (tests the panic reset path).
    pub panic_test: bool,
    /// `husk.transport=`: where to serve the host protocol.
    pub transport: Transport,
    /// `husk.cgroup=fd:N`: an inherited `cgroup.procs` every container process joins (the
    /// host's `--pids-limit` group under process isolation).
    pub cgroup_fd: Option<i32>,
    /// `husk.scratch=/dev/NAME`: a warm-start template's fresh scratch disk, mounted
    /// before ready so that the template's clones have it mounted (`rootfs::prepare`).
    pub scratch: Option<String>,
    /// `husk.*` parameters this agent does not know (warned about, then ignored).
    pub unknown: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            hostname: DEFAULT_HOSTNAME.to_owned(),
            exec: None,
            panic_test: false,
            transport: Transport::Auto,
            cgroup_fd: None,
            scratch: None,
            unknown: vec![],
        }
    }
}

/// Reads the command line (from [`CMDLINE_ENV`] if set, else `/proc/cmdline`, which must be
/// mounted) and parses it.
pub fn load() -> Result<(Config, Source), CmdlineError> {
    let (raw, source) = match std::env::var_os(CMDLINE_ENV) {
        Some(value) => (value.into_encoded_bytes(), Source::Env),
        None => (
            std::fs::read(PROC_CMDLINE).map_err(CmdlineError::Read)?,
            Source::Proc,
        ),
    };
    let text = String::from_utf8(raw).map_err(|_| CmdlineError::NotUtf8)?;
    Ok((parse(&text)?, source))
}

/// A `/dev/NAME` parameter value.
fn device(key: &str, value: Option<String>) -> Result<String, CmdlineError> {
    let value = value.unwrap_or_default();
    match value.strip_prefix("/dev/") {
        Some(name) if !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric()) => {
            Ok(value)
        }
        _ => Err(CmdlineError::BadDevice(key.to_owned(), value)),
    }
}

/// Parses a kernel command line. Later occurrences of a parameter override earlier ones.
pub fn parse(cmdline: &str) -> Result<Config, CmdlineError> {
    let mut config = Config::default();
    for (key, value) in params(cmdline) {
        match key.as_str() {
            "husk.hostname" => config.hostname = hostname(value.unwrap_or_default())?,
            "husk.exec" => config.exec = Some(exec_path(value.unwrap_or_default())?),
            "husk.panic_test" => config.panic_test = boolean(&key, value)?,
            "husk.transport" => config.transport = transport(value.unwrap_or_default())?,
            "husk.cgroup" => config.cgroup_fd = Some(inherited_fd(&key, value)?),
            // The guest kernel's own (guest-kernel patch 0004), not the agent's.
            "husk.scratch" => config.scratch = Some(device(&key, value)?),
            "husk.lean_sysfs" => {}
            k if k.starts_with("husk.") => config.unknown.push(key),
            _ => {}
        }
    }
    Ok(config)
}

/// Splits a command line into `(name, value)` pairs the way the kernel's `next_arg` does:
/// whitespace separates parameters except inside double quotes, the quotes themselves are
/// dropped, and a bare `--` ends the kernel's parameters (the rest is init's argv).
fn params(cmdline: &str) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    let mut chars = cmdline.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return out;
        }
        let (mut token, mut quoted) = (String::new(), false);
        while let Some(c) = chars.next_if(|&c| quoted || !c.is_whitespace()) {
            if c == '"' {
                quoted = !quoted;
            } else {
                token.push(c);
            }
        }
        if token == "--" {
            return out;
        }
        out.push(match token.split_once('=') {
            Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
            None => (token, None),
        });
    }
}

/// `fd:N` with N above the standard streams.
fn inherited_fd(key: &str, value: Option<String>) -> Result<i32, CmdlineError> {
    let value = value.unwrap_or_default();
    value
        .strip_prefix("fd:")
        .and_then(|n| n.parse::<i32>().ok())
        .filter(|n| *n > 2)
        .ok_or_else(|| CmdlineError::BadFd(key.to_owned(), value.clone()))
}

/// Whether `name` is a hostname the agent accepts: 1-64 of `[A-Za-z0-9.-]`, starting
/// alphanumeric.
pub fn is_valid_hostname(name: &str) -> bool {
    (1..=HOSTNAME_MAX).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
}

fn hostname(value: String) -> Result<String, CmdlineError> {
    if is_valid_hostname(&value) {
        Ok(value)
    } else {
        Err(CmdlineError::InvalidHostname(value))
    }
}

fn exec_path(value: String) -> Result<PathBuf, CmdlineError> {
    if value.starts_with('/') {
        Ok(PathBuf::from(value))
    } else {
        Err(CmdlineError::InvalidExec(value))
    }
}

fn transport(value: String) -> Result<Transport, CmdlineError> {
    if value == "none" {
        return Ok(Transport::None);
    }
    ListenSpec::parse(&value)
        .map(Transport::Listen)
        .map_err(|_| CmdlineError::InvalidTransport(value))
}

/// A kernel-style boolean: a bare name means true.
fn boolean(key: &str, value: Option<String>) -> Result<bool, CmdlineError> {
    match value.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("1" | "y" | "yes" | "true" | "on") => Ok(true),
        Some("0" | "n" | "no" | "false" | "off") => Ok(false),
        Some(_) => Err(CmdlineError::InvalidBool {
            key: key.to_owned(),
            value: value.unwrap_or_default(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(k: &str, v: Option<&str>) -> (String, Option<String>) {
        (k.to_owned(), v.map(str::to_owned))
    }

    #[test]
    fn splits_like_the_kernel() {
        let got = params("  console=ttyS0 reboot=k  quiet\tx=\"a b\" \"y=c d\" -- husk.exec=/no\n");
        let want = [
            kv("console", Some("ttyS0")),
            kv("reboot", Some("k")),
            kv("quiet", None),
            kv("x", Some("a b")),
            kv("y", Some("c d")),
        ];
        assert_eq!(got, want);
        assert!(params("").is_empty());
        assert!(params("   \n").is_empty());
        assert_eq!(params("a==b"), [kv("a", Some("=b"))]);
    }

    #[test]
    fn defaults_without_husk_parameters() {
        let config = parse("console=ttyS0 reboot=k panic=-1\n").unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(config.hostname, "husk");
    }

    #[test]
    fn reads_husk_parameters_last_one_wins() {
        let config = parse(
            "husk.hostname=first husk.exec=/bin/true husk.hostname=web-1.example husk.panic_test husk.lean_sysfs husk.future=1",
        )
        .unwrap();
        assert_eq!(config.hostname, "web-1.example");
        assert_eq!(config.exec, Some(PathBuf::from("/bin/true")));
        assert!(config.panic_test);
        assert_eq!(config.unknown, ["husk.future"]);
        assert!(!parse("husk.panic_test=off").unwrap().panic_test);
        assert!(parse("husk.panic_test=ON").unwrap().panic_test);
    }

    #[test]
    fn quoted_exec_path_keeps_spaces() {
        let config = parse("husk.exec=\"/opt/my app/run\"").unwrap();
        assert_eq!(config.exec, Some(PathBuf::from("/opt/my app/run")));
    }

    #[test]
    fn rejects_bad_values() {
        for bad in [
            "husk.hostname=",
            "husk.hostname=-x",
            "husk.hostname=a_b",
            "husk.hostname=é",
        ] {
            assert!(
                matches!(parse(bad), Err(CmdlineError::InvalidHostname(_))),
                "{bad}"
            );
        }
        let long = format!("husk.hostname={}", "a".repeat(65));
        assert!(matches!(
            parse(&long),
            Err(CmdlineError::InvalidHostname(_))
        ));
        assert!(parse(&format!("husk.hostname={}", "a".repeat(64))).is_ok());
        assert!(matches!(
            parse("husk.exec=bin/sh"),
            Err(CmdlineError::InvalidExec(_))
        ));
        assert!(matches!(
            parse("husk.exec"),
            Err(CmdlineError::InvalidExec(_))
        ));
        assert!(matches!(
            parse("husk.panic_test=maybe"),
            Err(CmdlineError::InvalidBool { .. })
        ));
        for bad in [
            "husk.scratch",
            "husk.scratch=/dev/",
            "husk.scratch=vdb",
            "husk.scratch=/dev/../sda",
        ] {
            assert!(
                matches!(parse(bad), Err(CmdlineError::BadDevice(..))),
                "{bad}"
            );
        }
        assert_eq!(
            parse("husk.scratch=/dev/vds").unwrap().scratch.as_deref(),
            Some("/dev/vds")
        );
    }

    #[test]
    fn transports() {
        assert_eq!(parse("").unwrap().transport, Transport::Auto);
        assert_eq!(
            parse("husk.transport=none").unwrap().transport,
            Transport::None
        );
        assert_eq!(
            parse("husk.transport=vsock").unwrap().transport,
            Transport::Listen(ListenSpec::Vsock(agent_proto::CONTROL_PORT))
        );
        assert_eq!(
            parse("husk.transport=unix:/run/husk.sock")
                .unwrap()
                .transport,
            Transport::Listen(ListenSpec::Unix("/run/husk.sock".into()))
        );
        for bad in [
            "husk.transport",
            "husk.transport=tcp:1",
            "husk.transport=unix:x",
        ] {
            assert!(
                matches!(parse(bad), Err(CmdlineError::InvalidTransport(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn non_husk_dotted_parameters_are_ignored() {
        let config = parse("virtio_mmio.device=4K@0xd0000000:5 husk_hostname=x").unwrap();
        assert!(config.unknown.is_empty());
        assert_eq!(config.hostname, "husk");
    }
}
