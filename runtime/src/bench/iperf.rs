//! The iperf3 and connection-rate rows of `husk bench net`: TCP throughput measured by
//! Debian's iperf3 (the host's binary) between the host and a container, and new TCP
//! connections per second to a server that accepts and closes each one (perl, which
//! the debian image and the host both have), beside host loopback in the same run,
//! directly and through ports published on 127.0.0.1. The container runs the debian
//! image with the host's `iperf3` and the libraries it needs that the image lacks
//! (`ldd`; the C library and loader are the image's own, the same Debian release)
//! bind-mounted read-only, so the same programs run at both ends; the clients are on the
//! host. Runs inside the namespace `net::run` made.

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::Error;
use super::net::NetOptions;

const IMAGE: &str = "husk/debian:bookworm";
/// The container's iperf3 port, and where it is published.
const PORT: u16 = 5201;
const PUBLISHED: u16 = 15201;
/// The loopback baseline's port.
const LOOPBACK_PORT: u16 = 6201;
/// The accept-and-close server's port in the container, where it is published, and the
/// baseline's.
const ACCEPT: u16 = 5301;
const ACCEPT_PUBLISHED: u16 = 15301;
const ACCEPT_LOOPBACK: u16 = 6301;
/// The accept-and-close server (perl, in the image and on the host): every connection
/// is accepted and closed at once.
const ACCEPTOR: &str = "use IO::Socket::INET; my $s = IO::Socket::INET->new(LocalPort => $ARGV[0], \
    Listen => 1024, ReuseAddr => 1) or die $!; while (my $c = $s->accept) { close $c }";
/// Where the libraries go in the container.
const LIBS: &str = "/opt/husk-iperf3";
/// MiB per iperf3 transfer to a vm container at most (~0.25 MiB/s on an emulating KVM).
const VM_MIB: usize = 4;
/// How long a server may take to listen: a hang guard.
const READY: Duration = Duration::from_secs(300);

/// One container's figures, each beside the host loopback measured just before it (the
/// machine's speed drifts between transfers, so every ratio compares neighbours).
struct Row {
    /// (loopback, direct, published) MiB/s of each round.
    rounds: Vec<(f64, f64, f64)>,
    /// (loopback, direct, published) connections per second.
    conns: (f64, f64, f64),
}

/// The iperf3 table, or why there is none (no iperf3 or no debian image on this host).
pub fn table(o: &NetOptions, root: &Path, isolations: &[&str]) -> Result<Vec<String>, Error> {
    let Some(iperf3) = crate::paths::on_path("iperf3") else {
        return Ok(vec![
            "iperf3: not installed (Debian's iperf3 package): rows skipped".into(),
        ]);
    };
    if let Err(e) = import_debian(root) {
        return Ok(vec![format!(
            "iperf3: no {IMAGE} image ({e}): rows skipped"
        )]);
    }
    let servers = Loopback::start(&iperf3)?;
    let mut rows = Vec::new();
    for iso in isolations {
        // An emulated guest kernel moves a fraction of a MiB/s: one short round there.
        let (rounds, mib) = match *iso {
            "vm" => (1, o.iperf_mib.min(VM_MIB)),
            _ => (o.rounds, o.iperf_mib),
        };
        let row = container(o, root, &iperf3, iso, rounds, mib);
        let _ = std::fs::remove_dir_all(root.join("containers"));
        rows.push((format!("{iso} container"), row?));
    }
    drop(servers);
    Ok(render(o, &rows))
}

/// The table: medians of the rounds, and the median of each round's ratio.
fn render(o: &NetOptions, rows: &[(String, Row)]) -> Vec<String> {
    let mut out = vec![
        format!(
            "iperf3 ({} MiB per transfer, vm at most {VM_MIB}; the host's binary at both ends; process: {} rounds of loopback, direct and published transfers in turn, medians) and new connections ({} per path, accepted and closed by perl):",
            o.iperf_mib, o.rounds, o.round_trips
        ),
        format!(
            "{:<18} {:>14} {:>8} {:>22} {:>8} {:>10} {:>8} {:>20}",
            "path",
            "direct MiB/s",
            "x loop",
            "via 127.0.0.1 MiB/s",
            "x direct",
            "conn/s",
            "x loop",
            "conn/s via 127.0.0.1"
        ),
    ];
    let loops: Vec<f64> = rows
        .iter()
        .flat_map(|(_, r)| r.rounds.iter().map(|x| x.0))
        .collect();
    let loop_conns: Vec<f64> = rows.iter().map(|(_, r)| r.conns.0).collect();
    out.push(format!(
        "{:<18} {:>14} {:>8.3} {:>22} {:>8} {:>10.0} {:>8.3} {:>20}",
        "host loopback",
        super::net::mib_s(median(&loops)),
        1.0,
        "-",
        "-",
        median(&loop_conns),
        1.0,
        "-"
    ));
    for (name, r) in rows {
        let pick =
            |f: fn(&(f64, f64, f64)) -> f64| median(&r.rounds.iter().map(f).collect::<Vec<_>>());
        let (lo, direct, published) = r.conns;
        out.push(format!(
            "{name:<18} {:>14} {:>8.3} {:>22} {:>8.2} {:>10.0} {:>8.3} {:>20.0}",
            super::net::mib_s(pick(|x| x.1)),
            pick(|x| x.1 / x.0),
            super::net::mib_s(pick(|x| x.2)),
            pick(|x| x.2 / x.1),
            direct,
            direct / lo,
            published,
        ));
    }
    if let Some((_, r)) = rows.first().filter(|(_, r)| r.rounds.len() > 1) {
        let each: Vec<String> = r
            .rounds
            .iter()
            .map(|x| format!("{:.2}", x.1 / x.0))
            .collect();
        out.push(format!(
            "{} x loop per round: {}",
            rows[0].0,
            each.join(" ")
        ));
    }
    out
}

/// The median of `v` (0 for none).
fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn import_debian(root: &Path) -> Result<(), String> {
    let store = rootfs::store::Store::open(root).map_err(|e| e.to_string())?;
    rootfs::defaults::DefaultImage::Debian
        .import(&store)
        .map_err(|e| e.to_string())
        .map(|_| ())
}

/// The host's iperf3 and accept-and-close servers on 127.0.0.1, running for the whole
/// table; killed when dropped.
struct Loopback {
    servers: Vec<Child>,
}

impl Loopback {
    fn start(iperf3: &Path) -> Result<Self, Error> {
        let fail = |e: std::io::Error| {
            Error::Failed(
                "the host loopback servers (iperf3, perl)".into(),
                e.to_string(),
            )
        };
        let quiet = |c: &mut Command| {
            c.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
        };
        let port = LOOPBACK_PORT.to_string();
        let mut me = Self {
            servers: vec![
                quiet(Command::new(iperf3).args(["-s", "-B", "127.0.0.1", "-p", &port]))
                    .map_err(fail)?,
            ],
        };
        let accept_port = ACCEPT_LOOPBACK.to_string();
        me.servers
            .push(quiet(Command::new("perl").args(["-e", ACCEPTOR, &accept_port])).map_err(fail)?);
        Ok(me)
    }
}

impl Drop for Loopback {
    fn drop(&mut self) {
        for s in &mut self.servers {
            let _ = s.kill();
            let _ = s.wait();
        }
    }
}

/// A container of `iso` running the host's iperf3 server, measured directly and through
/// its published port, `rounds` times, each round after a loopback transfer.
fn container(
    o: &NetOptions,
    root: &Path,
    iperf3: &Path,
    iso: &str,
    rounds: usize,
    mib: usize,
) -> Result<Row, Error> {
    let what = format!("the {iso} iperf3 container");
    let fail = |e: String| Error::Failed(what.clone(), e);
    let mut args: Vec<String> = vec![
        "-p".into(),
        format!("127.0.0.1:{PUBLISHED}:{PORT}"),
        "-p".into(),
        format!("127.0.0.1:{ACCEPT_PUBLISHED}:{ACCEPT}"),
        "-v".into(),
        format!("{}:/usr/local/bin/iperf3:ro", iperf3.display()),
        "-e".into(),
        format!("LD_LIBRARY_PATH={LIBS}"),
    ];
    for lib in libraries(iperf3).map_err(&fail)? {
        let name = lib.file_name().map(|n| n.to_string_lossy().into_owned());
        let name = name.ok_or_else(|| fail(format!("{}: no file name", lib.display())))?;
        args.extend(["-v".into(), format!("{}:{LIBS}/{name}:ro", lib.display())]);
    }
    let script = format!("perl -e '{ACCEPTOR}' {ACCEPT} & exec iperf3 -s -p {PORT}");
    args.extend([IMAGE, "sh", "-c", &script].map(String::from));
    let measure = |ip| {
        let local = |port| SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let mut each = Vec::new();
        for _ in 0..rounds.max(1) {
            let lo = client(iperf3, Ipv4Addr::LOCALHOST, LOOPBACK_PORT, mib)?;
            let direct = client(iperf3, ip, PORT, mib)?;
            let published = client(iperf3, Ipv4Addr::LOCALHOST, PUBLISHED, mib)?;
            each.push((lo, direct, published));
        }
        Ok(Row {
            rounds: each,
            conns: (
                connections(local(ACCEPT_LOOPBACK), o.round_trips)?,
                connections(SocketAddr::from((ip, ACCEPT)), o.round_trips)?,
                connections(local(ACCEPT_PUBLISHED), o.round_trips)?,
            ),
        })
    };
    super::net::with_container(o, root, iso, &args, measure).map_err(fail)
}

/// The shared libraries `iperf3` loads, less the C library, libm and the loader (the
/// container's own are used: the same Debian release).
fn libraries(iperf3: &Path) -> Result<Vec<PathBuf>, String> {
    let out = Command::new("ldd")
        .arg(iperf3)
        .output()
        .map_err(|e| format!("ldd: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .filter_map(|l| l.split("=> ").nth(1))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(PathBuf::from)
        .filter(|p| {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
            let name = name.unwrap_or_default();
            !(name.starts_with("libc.so")
                || name.starts_with("libm.so")
                || name.starts_with("ld-linux"))
        })
        .collect())
}

/// MiB/s the receiver saw for `mib` MiB sent by the iperf3 client to `ip:port`, retried
/// while the server does not listen yet (a hang guard of [`READY`]).
fn client(iperf3: &Path, ip: Ipv4Addr, port: u16, mib: usize) -> Result<f64, String> {
    let started = Instant::now();
    loop {
        let out = Command::new(iperf3)
            .args(["-c", &ip.to_string(), "-p", &port.to_string()])
            .args(["-n", &format!("{mib}M"), "-J"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("iperf3: {e}"))?;
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if let Some(bits) = json["end"]["sum_received"]["bits_per_second"].as_f64() {
            return Ok(bits / 8.0 / f64::from(1u32 << 20));
        }
        let why = json["error"].as_str().unwrap_or("no result").to_string();
        if started.elapsed() > READY {
            return Err(format!("iperf3 -c {ip}:{port}: {why}"));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// New TCP connections per second to the accept-and-close server at `to`: each one
/// connects and waits for the server's close. Waits first until the server accepts (a
/// hang guard of [`READY`]).
fn connections(to: SocketAddr, n: usize) -> Result<f64, String> {
    let once = || -> std::io::Result<()> {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut b = [0u8; 1];
        s.read(&mut b).map(|_| ())
    };
    let started = Instant::now();
    while let Err(e) = once() {
        if started.elapsed() > READY {
            return Err(format!("nothing accepts connections at {to}: {e}"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let started = Instant::now();
    for _ in 0..n.max(1) {
        once().map_err(|e| format!("connection to {to}: {e}"))?;
    }
    Ok(n.max(1) as f64 / started.elapsed().as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_ratios_of_neighbouring_transfers() {
        assert_eq!(median(&[]), 0.0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        let o = NetOptions {
            husk: PathBuf::new(),
            mib: 1,
            round_trips: 1,
            rounds: 3,
            iperf_mib: 8,
            vm: false,
            work_dir: PathBuf::new(),
        };
        // Loopback drifts 2x; each round's ratio is what counts.
        let row = Row {
            rounds: vec![
                (1000.0, 800.0, 800.0),
                (2000.0, 1700.0, 850.0),
                (1500.0, 1200.0, 1200.0),
            ],
            conns: (100.0, 80.0, 70.0),
        };
        let out = render(&o, &[("process container".into(), row)]);
        assert!(
            out[2].starts_with("host loopback") && out[2].contains(" 1500 "),
            "{out:?}"
        );
        let line = &out[3];
        assert!(
            line.contains(" 1200 ") && line.contains(" 0.800 "),
            "{line}"
        );
        assert!(
            line.contains(" 1.00 ") && line.contains(" 0.800 "),
            "{line}"
        );
        assert_eq!(out[4], "process container x loop per round: 0.80 0.85 0.80");
    }
}
