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
use std::process::{Command, Stdio};
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
/// How long a server may take to listen: a hang guard.
const READY: Duration = Duration::from_secs(300);

/// One path's figures: iperf3 MiB/s, and connections per second.
struct Row {
    direct: f64,
    published: Option<f64>,
    conns: f64,
    conns_published: Option<f64>,
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
    let loopback = loopback(&iperf3, o)?;
    let mut rows = vec![("host loopback".to_string(), loopback)];
    for iso in isolations {
        let row = container(o, root, &iperf3, iso);
        let _ = std::fs::remove_dir_all(root.join("containers"));
        rows.push((format!("{iso} container"), row?));
    }
    let mut out = vec![
        format!(
            "iperf3 ({} MiB per transfer, the host's binary at both ends) and new connections ({} per path, accepted and closed by perl):",
            o.mib, o.round_trips
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
    let (base, base_conns) = (rows[0].1.direct, rows[0].1.conns);
    for (name, r) in &rows {
        let published = r.published.map_or("-".into(), super::net::mib_s);
        let ratio = r
            .published
            .map_or("-".into(), |p| format!("{:.2}", p / r.direct));
        let conns_published = r.conns_published.map_or("-".into(), |c| format!("{c:.0}"));
        out.push(format!(
            "{name:<18} {:>14} {:>8.3} {published:>22} {ratio:>8} {:>10.0} {:>8.3} {conns_published:>20}",
            super::net::mib_s(r.direct),
            r.direct / base,
            r.conns,
            r.conns / base_conns,
        ));
    }
    Ok(out)
}

fn import_debian(root: &Path) -> Result<(), String> {
    let store = rootfs::store::Store::open(root).map_err(|e| e.to_string())?;
    rootfs::defaults::DefaultImage::Debian
        .import(&store)
        .map_err(|e| e.to_string())
        .map(|_| ())
}

/// The host's iperf3 and accept-and-close servers on 127.0.0.1, and the clients.
fn loopback(iperf3: &Path, o: &NetOptions) -> Result<Row, Error> {
    let fail = |e: String| Error::Failed("the host loopback servers (iperf3, perl)".into(), e);
    let quiet = |c: &mut Command| {
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
    };
    let port = LOOPBACK_PORT.to_string();
    let mut server = quiet(Command::new(iperf3).args(["-s", "-B", "127.0.0.1", "-p", &port]))
        .map_err(|e| fail(e.to_string()))?;
    let accept_port = ACCEPT_LOOPBACK.to_string();
    let acceptor = quiet(Command::new("perl").args(["-e", ACCEPTOR, &accept_port]));
    let measured = acceptor
        .map_err(|e| e.to_string())
        .and_then(|mut acceptor| {
            let r = client(iperf3, Ipv4Addr::LOCALHOST, LOOPBACK_PORT, o.mib).and_then(|direct| {
                let to = SocketAddr::from((Ipv4Addr::LOCALHOST, ACCEPT_LOOPBACK));
                Ok((direct, connections(to, o.round_trips)?))
            });
            let _ = acceptor.kill();
            let _ = acceptor.wait();
            r
        });
    let _ = server.kill();
    let _ = server.wait();
    let (direct, conns) = measured.map_err(fail)?;
    Ok(Row {
        direct,
        published: None,
        conns,
        conns_published: None,
    })
}

/// A container of `iso` running the host's iperf3 server, measured directly and
/// through its published port.
fn container(o: &NetOptions, root: &Path, iperf3: &Path, iso: &str) -> Result<Row, Error> {
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
        Ok(Row {
            direct: client(iperf3, ip, PORT, o.mib)?,
            published: Some(client(iperf3, Ipv4Addr::LOCALHOST, PUBLISHED, o.mib)?),
            conns: connections(SocketAddr::from((ip, ACCEPT)), o.round_trips)?,
            conns_published: Some(connections(local(ACCEPT_PUBLISHED), o.round_trips)?),
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
