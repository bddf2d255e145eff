//! `husk bench net`: TCP between the host and a container on the default bridge, under
//! process and vm isolation, beside host loopback in the same run: bulk throughput to
//! the container's address, through a port published on 127.0.0.1 (kernel DNAT), and
//! the round-trip time of one-byte ping-pongs. The servers are busybox `nc` (a sink to
//! /dev/null, and `cat` as an echo server), in the container and, for the baseline, on
//! the host (busybox-static); the client is this process. Then the same paths measured
//! by Debian's iperf3 (`iperf.rs`).
//!
//! The whole benchmark runs in a network namespace of its own (`unshare(CLONE_NEWNET)`
//! before anything else): the bridge, TAPs, veths and nftables rules it makes, and
//! every packet, stay in it and vanish with it.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::Error;

const IMAGE: &str = "husk/busybox";
/// The container's sink and echo ports, and where the sink is published.
const SINK: u16 = 5001;
const ECHO: u16 = 5002;
const PUBLISHED: u16 = 15001;
/// How long a container's servers may take to answer: a hang guard.
const READY: Duration = Duration::from_secs(300);

/// What to measure.
#[derive(Debug, Clone)]
pub struct NetOptions {
    /// The husk binary.
    pub husk: PathBuf,
    /// MiB moved per throughput measurement.
    pub mib: usize,
    /// Ping-pongs per latency measurement.
    pub round_trips: usize,
    /// iperf3 rounds per process container (loopback, direct, published in turn).
    pub rounds: usize,
    /// MiB per iperf3 transfer (a vm container's are capped: its guest kernel is emulated).
    pub iperf_mib: usize,
    /// Also measure vm isolation.
    pub vm: bool,
    /// Scratch directory (its own state root).
    pub work_dir: PathBuf,
}

/// One path's figures.
#[derive(Clone, Copy)]
struct Figures {
    direct: f64,
    published: Option<f64>,
    rtt_us: f64,
}

/// Runs the benchmark; returns the report.
pub fn run(o: &NetOptions) -> Result<String, Error> {
    own_namespace()?;
    let root = o.work_dir.join("root");
    let store = rootfs::store::Store::open(&root)
        .map_err(|e| Error::Failed("the benchmark's image store".into(), e.to_string()))?;
    rootfs::defaults::DefaultImage::Busybox
        .import(&store)
        .map_err(|e| Error::Failed(format!("importing {IMAGE}"), e.to_string()))?;
    let mut out = vec![format!(
        "husk bench net: {} MiB per transfer, {} one-byte round trips, host <-> container over the default bridge",
        o.mib, o.round_trips
    )];
    let loopback = loopback(o)?;
    let mut rows = vec![("host loopback".to_string(), loopback)];
    let mut isolations = vec!["process"];
    if o.vm {
        isolations.push("vm");
    }
    for iso in isolations.iter().copied() {
        let figures = container(o, &root, iso);
        let _ = std::fs::remove_dir_all(root.join("containers"));
        rows.push((format!("{iso} container"), figures?));
    }
    out.push(format!(
        "{:<18} {:>14} {:>8} {:>22} {:>8} {:>12}",
        "path", "direct MiB/s", "x loop", "via 127.0.0.1 MiB/s", "x direct", "RTT us"
    ));
    for (name, f) in &rows {
        let published = f.published.map_or("-".into(), mib_s);
        let ratio = f
            .published
            .map_or("-".into(), |p| format!("{:.2}", p / f.direct));
        out.push(format!(
            "{name:<18} {:>14} {:>8.3} {published:>22} {ratio:>8} {:>12.0}",
            mib_s(f.direct),
            f.direct / loopback.direct,
            f.rtt_us
        ));
    }
    out.extend(super::iperf::table(o, &root, &isolations)?);
    let _ = std::fs::remove_dir_all(&o.work_dir);
    Ok(out.join("\n"))
}

/// A throughput as the table shows it: whole MiB/s, or three significant digits below 10
/// (a vm container on an emulating KVM moves a fraction of a MiB/s).
pub(super) fn mib_s(v: f64) -> String {
    match v >= 10.0 {
        true => format!("{v:.0}"),
        false => format!("{v:.3}"),
    }
}

/// Moves this process into a fresh network namespace with loopback up.
fn own_namespace() -> Result<(), Error> {
    // SAFETY: unshare takes no pointers; called before the benchmark starts any thread.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(Error::Failed(
            "a network namespace of its own".into(),
            std::io::Error::last_os_error().to_string(),
        ));
    }
    let fail = |e: netconf::Error| Error::Failed("loopback".into(), e.to_string());
    let mut nl = netconf::Netlink::open().map_err(fail)?;
    let lo = nl.index("lo").map_err(fail)?;
    let up = netconf::LinkChange {
        up: Some(true),
        ..netconf::LinkChange::default()
    };
    nl.set_link(lo, &up).map_err(fail)
}

/// The baseline: the same busybox `nc` sink and echo server as in the containers, run
/// on the host (busybox-static), on 127.0.0.1.
fn loopback(o: &NetOptions) -> Result<Figures, Error> {
    let fail = |e: String| Error::Failed("the host loopback servers (busybox)".into(), e);
    let (sink_port, echo_port) = (SINK + 1000, ECHO + 1000);
    let script = format!(
        "while true; do busybox nc -l -p {sink_port} > /dev/null; done & exec busybox nc -ll -p {echo_port} -e cat"
    );
    let servers = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| fail(e.to_string()))?;
    let group = i32::try_from(servers.id()).unwrap_or(0);
    let sink = SocketAddr::from(([127, 0, 0, 1], sink_port));
    let echo = SocketAddr::from(([127, 0, 0, 1], echo_port));
    let measured = ready(echo).and_then(|()| {
        let e = |e: std::io::Error| e.to_string();
        Ok(Figures {
            direct: throughput(sink, o.mib).map_err(e)?,
            published: None,
            rtt_us: round_trips(echo, o.round_trips).map_err(e)?,
        })
    });
    if group > 0 {
        // SAFETY: kill takes no pointers; the group is the servers' own (process_group(0)).
        unsafe { libc::kill(-group, libc::SIGKILL) };
    }
    let mut servers = servers;
    let _ = servers.wait();
    measured.map_err(fail)
}

/// Waits until the echo server at `to` answers (a hang guard of `READY`).
fn ready(to: SocketAddr) -> Result<(), String> {
    let started = Instant::now();
    while round_trips(to, 1).is_err() {
        if started.elapsed() > READY {
            return Err("the echo server never answered".into());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

/// A container of `iso` with a sink and an echo server, measured directly and through
/// its published port.
fn container(o: &NetOptions, root: &std::path::Path, iso: &str) -> Result<Figures, Error> {
    let script =
        format!("while true; do nc -l -p {SINK} > /dev/null; done & exec nc -ll -p {ECHO} -e cat");
    let published = format!("127.0.0.1:{PUBLISHED}:{SINK}");
    let args = ["-p", &published, IMAGE, "sh", "-c", &script].map(String::from);
    with_container(o, root, iso, &args, |ip| measure_container(o, ip))
        .map_err(|e| Error::Failed(format!("the {iso} container"), e))
}

/// Runs a detached container of `iso` (`run -d --isolation ISO` then `args`), measures it
/// at its address with `measure`, and removes it.
pub(super) fn with_container<T>(
    o: &NetOptions,
    root: &std::path::Path,
    iso: &str,
    args: &[String],
    measure: impl FnOnce(std::net::Ipv4Addr) -> Result<T, String>,
) -> Result<T, String> {
    let out = husk(o, root)
        .args(["run", "-d", "--isolation", iso])
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let dir = root.join("containers").join(&id);
    let result = crate::network::settings(&dir)
        .first()
        .and_then(|s| s.ip)
        .ok_or_else(|| "the container has no address".to_string())
        .and_then(measure);
    let _ = husk(o, root).args(["rm", "-f", &id]).output();
    result
}

fn measure_container(o: &NetOptions, ip: std::net::Ipv4Addr) -> Result<Figures, String> {
    let direct = SocketAddr::from((ip, SINK));
    let echo = SocketAddr::from((ip, ECHO));
    ready(echo)?;
    let e = |e: std::io::Error| e.to_string();
    let local = SocketAddr::from(([127, 0, 0, 1], PUBLISHED));
    Ok(Figures {
        direct: throughput(direct, o.mib).map_err(e)?,
        published: Some(throughput(local, o.mib).map_err(e)?),
        rtt_us: round_trips(echo, o.round_trips).map_err(e)?,
    })
}

pub(super) fn husk(o: &NetOptions, root: &std::path::Path) -> Command {
    let mut c = Command::new(&o.husk);
    c.arg("--root").arg(root).stdin(Stdio::null());
    c
}

/// MiB/s moving `mib` MiB to the sink at `to` (until the sink has read it all: it closes
/// at end of input, and the close is waited for).
fn throughput(to: SocketAddr, mib: usize) -> std::io::Result<f64> {
    let chunk = vec![0x5au8; 1 << 20];
    let mut s = connect(to)?;
    s.set_read_timeout(Some(Duration::from_secs(300)))?;
    let started = Instant::now();
    for _ in 0..mib {
        s.write_all(&chunk)?;
    }
    s.shutdown(Shutdown::Write)?;
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    Ok(mib as f64 / started.elapsed().as_secs_f64())
}

/// Connects to `to`, retrying while nothing listens (the container's sink restarts
/// between connections): a hang guard of 30 s.
fn connect(to: SocketAddr) -> std::io::Result<TcpStream> {
    let started = Instant::now();
    loop {
        match TcpStream::connect_timeout(&to, Duration::from_secs(30)) {
            Err(e)
                if e.kind() == std::io::ErrorKind::ConnectionRefused
                    && started.elapsed() < Duration::from_secs(30) =>
            {
                std::thread::sleep(Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

/// Mean microseconds per one-byte round trip to the echo server at `to`.
fn round_trips(to: SocketAddr, n: usize) -> std::io::Result<f64> {
    let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(5))?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut b = [0x42u8; 1];
    let started = Instant::now();
    for _ in 0..n.max(1) {
        s.write_all(&b)?;
        s.read_exact(&mut b)?;
    }
    Ok(started.elapsed().as_secs_f64() * 1e6 / n.max(1) as f64)
}
