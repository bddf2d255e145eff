//! Container networking, end to end, under both isolations, each test inside a network
//! namespace of its own (`husk_e2e::NetNs`): the default bridge network (containers reach
//! the gateway and each other by address, the namespace reaches them, `/etc/hosts` has
//! the container's address, and everything husk made is gone after `rm`), the default
//! (the bridge), `--network none` (loopback only), `--network host` (process), and bad
//! `--network` values (exit 125, one line, nothing made).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed setup step is a failed test

mod run_common;

use std::process::Command;

use husk_e2e::{NetNs, output};
use run_common::{BUSYBOX, Ctx, backends};

const SERVER: &str = "mkdir /www && echo hello-from-$(hostname) > /www/index.html \
    && exec httpd -f -p 80 -h /www";

/// The IPv4 address on `eth0` of container `id`.
fn address(ctx: &Ctx, id: &str) -> String {
    let out = ctx.ok(&["exec", id, "ip", "-4", "-o", "addr", "show", "eth0"]);
    let inet = out.split("inet ").nth(1).unwrap_or_default();
    inet.split('/').next().unwrap_or_default().to_owned()
}

#[test]
fn bridge_network_containers_reach_the_gateway_each_other_and_the_host() {
    for iso in backends("bridge_network_containers_reach_the_gateway_each_other_and_the_host") {
        let ns = NetNs::new(&format!("br{iso}"));
        let ctx = Ctx::isolated(iso).in_netns(&ns);
        let run = ["run", "--isolation", iso, "--network", "bridge"];
        let id = ctx.ok(&[&run[..], &["-d", BUSYBOX, "sh", "-c", SERVER]].concat());
        let id = id.trim();
        let ip = address(&ctx, id);
        assert!(ip.starts_with("10.88."), "[{iso}] address {ip:?}");
        let page = format!("hello-from-{}", &id[..12]);

        // Another container: the gateway, the server by address, its own hosts entry.
        let client = format!(
            "ping -c 1 -W 10 10.88.0.1 > /dev/null && echo gateway-ok; \
             for i in 1 2 3 4 5 6 7 8 9 10; do wget -q -O - http://{ip}/ && break; sleep 1; done; \
             grep -c \"^10\\.88\\..*$(hostname)$\" /etc/hosts; cat /sys/class/net/eth0/address"
        );
        let out = ctx.ok(&[&run[..], &["--rm", BUSYBOX, "sh", "-c", &client]].concat());
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 4, "[{iso}] {out}");
        assert_eq!(lines[0], "gateway-ok", "[{iso}] {out}");
        assert_eq!(lines[1], page, "[{iso}] {out}");
        assert_eq!(lines[2], "1", "[{iso}] {out}");
        assert!(
            lines[3].starts_with("02:42:0a:58:"),
            "[{iso}] MAC {}",
            lines[3]
        );

        // The namespace husk runs in (the "host") reaches the container directly.
        let mut wget = ns.command("busybox");
        wget.args(["wget", "-q", "-O", "-", &format!("http://{ip}/")]);
        let o = output(wget);
        assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), page, "[{iso}]");

        ctx.ok(&["rm", "-f", id]);
        let links = ns.links();
        assert!(!links.contains(" hk"), "[{iso}] links left: {links}");
        let pool = ctx.root().join("networks/bridge");
        let left: Vec<_> = std::fs::read_dir(&pool).unwrap().collect();
        assert!(left.is_empty(), "[{iso}] addresses left: {left:?}");
        ctx.assert_clean();
    }
}

#[test]
fn none_is_loopback_only_the_default_is_the_bridge_and_bad_networks_fail_cleanly() {
    for iso in
        backends("none_is_loopback_only_the_default_is_the_bridge_and_bad_networks_fail_cleanly")
    {
        let ns = NetNs::new(&format!("no{iso}"));
        let ctx = Ctx::isolated(iso).in_netns(&ns);
        let show = "ip -4 -o addr | awk '{print $2, $4}'; ip route | grep -c . || true; \
            grep -E '[[:space:]](db|cache)$' /etc/hosts; grep -c '^nameserver 192.0.2.53$' /etc/resolv.conf";
        // --add-host and --dns need no network: /etc/hosts and /etc/resolv.conf. (Whole
        // names only: the container's own line has its hex ID, which may hold "db".)
        let extra = [
            "--add-host",
            "db:10.1.2.3",
            "--add-host",
            "cache=fd00::5",
            "--dns",
            "192.0.2.53",
        ];
        let hosts_and_dns = "10.1.2.3\tdb\nfd00::5\tcache\n1";
        for (flags, want) in [
            (
                &["--network", "none"][..],
                format!("lo 127.0.0.1/8\n0\n{hosts_and_dns}"),
            ),
            // The default, as in docker: the bridge network (an address, a subnet route
            // and the default route).
            (
                &[],
                format!("lo 127.0.0.1/8\neth0 10.88.0.2/16\n2\n{hosts_and_dns}"),
            ),
        ] {
            let args = [
                &["run", "--rm", "--isolation", iso][..],
                flags,
                &extra,
                &[BUSYBOX, "sh", "-c", show],
            ]
            .concat();
            let out = ctx.ok(&args);
            assert_eq!(out.trim(), want, "[{iso}] {flags:?}: {out}");
        }
        for (flag, bad) in [
            ("--add-host", "nocolon"),
            ("--add-host", "db:999.1.1.1"),
            ("--dns", "x.y"),
        ] {
            let e = ctx.fails(
                125,
                &[
                    "run",
                    "--rm",
                    "--isolation",
                    iso,
                    flag,
                    bad,
                    BUSYBOX,
                    "true",
                ],
            );
            assert!(e.contains(flag) && e.contains(bad), "[{iso}] {e}");
        }
        let e = ctx.fails(
            125,
            &[
                "run",
                "--rm",
                "--isolation",
                iso,
                "--network",
                "nope",
                BUSYBOX,
                "true",
            ],
        );
        assert_eq!(e, "husk: network nope not found", "[{iso}]");
        let e = ctx.fails(
            125,
            &[
                "run",
                "--rm",
                "--isolation",
                "vm",
                "--network",
                "host",
                BUSYBOX,
                "true",
            ],
        );
        assert!(e.contains("not possible with vm isolation"), "{e}");
        // Nothing was made in the namespace: no bridge, no links.
        let links = ns.links();
        assert_eq!(links.lines().count(), 1, "[{iso}] {links}");
        ctx.assert_clean();
    }
}

#[test]
fn host_network_shares_the_namespace_husk_runs_in() {
    let ns = NetNs::new("host");
    let ctx = Ctx::isolated("process").in_netns(&ns);
    let mut dummy = ns.command("ip");
    dummy.args([
        "link",
        "add",
        "hostprobe",
        "type",
        "veth",
        "peer",
        "name",
        "probepeer",
    ]);
    assert!(output(dummy).status.success());
    let show = "ip -o link | grep -c ': hostprobe@'; hostname";
    let args = [
        "run",
        "--rm",
        "--network",
        "host",
        "--isolation",
        "process",
        BUSYBOX,
        "sh",
        "-c",
        show,
    ];
    let out = ctx.ok(&args);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(out, format!("1\n{}\n", host.trim()));
    // Its sysctls would be the host's: refused, as docker does.
    let e = ctx.fails(
        125,
        &[
            &args[..6],
            &["--sysctl", "net.ipv4.ip_forward=1", BUSYBOX, "true"],
        ]
        .concat(),
    );
    assert!(e.contains("not allowed in host network namespace"), "{e}");
    ctx.assert_clean();
}

/// `GET /` over plain HTTP/1.0 to `addr`: the body, or the error.
fn http_get(addr: &str) -> Result<String, String> {
    use std::io::{Read, Write};
    let to = std::time::Duration::from_secs(10);
    let sa: std::net::SocketAddr = addr.parse().map_err(|e| format!("{e}"))?;
    let mut s = std::net::TcpStream::connect_timeout(&sa, to).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(to)).map_err(|e| e.to_string())?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| e.to_string())?;
    Ok(out
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .trim()
        .to_owned())
}

/// `addr` answers `GET /` with `page` (retried while the server starts: a hang guard).
fn serves(ns: &NetNs, addr: String, page: String) -> bool {
    ns.within(move || {
        let mut last = String::new();
        for _ in 0..30 {
            match http_get(&addr) {
                Ok(body) if body == page => return true,
                Ok(body) => last = body,
                Err(e) => last = e,
            }
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
        eprintln!("{addr}: {last}");
        false
    })
}

/// One UDP datagram to `addr`; the answer.
fn udp_ask(ns: &NetNs, addr: &'static str) -> String {
    ns.within(move || {
        let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 64];
        for _ in 0..10 {
            s.send_to(b"ping\n", addr).unwrap();
            if let Ok(n) = s.recv(&mut buf) {
                return String::from_utf8_lossy(&buf[..n]).trim().to_owned();
            }
        }
        String::new()
    })
}

const PUBLISHED: &str = "mkdir /www && echo published-page > /www/index.html \
    && httpd -p 80 -h /www && exec httpd -f -p 81 -h /www";

/// A UDP server answering every datagram (busybox has none: debian's perl).
const UDP_PONG: &str = "my $s = IO::Socket::INET->new(LocalPort => 53, Proto => 'udp') \
    or die $!; while ($s->recv(my $m, 64)) { $s->send(\"udp-pong\\n\") }";

#[test]
fn published_ports_answer_on_localhost_the_hosts_address_and_from_containers() {
    for iso in backends("published_ports_answer_on_localhost_the_hosts_address_and_from_containers")
    {
        let ns = NetNs::new(&format!("pp{iso}"));
        // The namespace's own address besides loopback.
        for args in [
            &["link", "add", "v0", "type", "veth", "peer", "name", "v1"][..],
            &["addr", "add", "192.0.2.7/24", "dev", "v0"],
            &["link", "set", "v0", "up"],
            &["link", "set", "v1", "up"],
        ] {
            let mut ip = ns.command("ip");
            ip.args(args);
            assert!(output(ip).status.success(), "ip {args:?}");
        }
        let ctx = Ctx::isolated(iso).in_netns(&ns);
        let run = ["run", "--isolation", iso];
        let ports = ["-p", "8080:80", "-p", "127.0.0.1::81"];
        let id = ctx.ok(&[&run[..], &["-d"], &ports, &[BUSYBOX, "sh", "-c", PUBLISHED]].concat());
        let id = id.trim();

        let listed = ctx.ok(&["port", id]);
        let lines: Vec<&str> = listed.lines().collect();
        assert_eq!(lines[0], "80/tcp -> 0.0.0.0:8080", "[{iso}] {listed}");
        assert!(
            lines[1].starts_with("81/tcp -> 127.0.0.1:"),
            "[{iso}] {listed}"
        );
        assert_eq!(lines.len(), 2, "[{iso}] {listed}");
        let eph = ctx.ok(&["port", id, "81/tcp"]).trim().to_owned();
        assert!(eph.starts_with("127.0.0.1:"), "[{iso}] {eph}");
        let ps = ctx.ok(&["ps", "--format", "{{.Ports}}"]);
        assert!(
            ps.starts_with("0.0.0.0:8080->80/tcp, 127.0.0.1:"),
            "[{iso}] {ps}"
        );
        let json = ctx.ok(&["inspect", "--format", "{{json .NetworkSettings}}", id]);
        let settings: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(
            settings["Ports"]["80/tcp"][0]["HostPort"], "8080",
            "[{iso}] {json}"
        );
        assert_eq!(
            settings["Networks"]["bridge"]["Gateway"], "10.88.0.1",
            "[{iso}] {json}"
        );
        let ip = settings["IPAddress"].as_str().unwrap_or_default();
        assert!(ip.starts_with("10.88."), "[{iso}] {json}");

        let page = "published-page".to_string();
        assert!(
            serves(&ns, "127.0.0.1:8080".into(), page.clone()),
            "[{iso}] localhost"
        );
        assert!(
            serves(&ns, "192.0.2.7:8080".into(), page.clone()),
            "[{iso}] own address"
        );
        assert!(
            serves(&ns, eph.clone(), page.clone()),
            "[{iso}] ephemeral port"
        );
        // From another container, through the host's address on the bridge.
        let got = ctx.ok(&[
            &run[..],
            &[
                "--rm",
                "--network",
                "bridge",
                BUSYBOX,
                "wget",
                "-q",
                "-O",
                "-",
                "http://10.88.0.1:8080/",
            ],
        ]
        .concat());
        assert_eq!(got.trim(), page, "[{iso}] from a container");

        // A taken port: exit 125, one line, nothing new left behind.
        let e = ctx.fails(
            125,
            &[&run[..], &["--rm", "-p", "8080:80", BUSYBOX, "true"]].concat(),
        );
        assert!(
            e.starts_with("husk: Bind for 0.0.0.0:8080 failed: port is already allocated"),
            "{e}"
        );
        let pool = ctx.root().join("networks/bridge");
        assert_eq!(std::fs::read_dir(&pool).unwrap().count(), 1, "[{iso}] pool");

        ctx.ok(&["rm", "-f", id]);
        let mut nft = ns.command("nft");
        nft.args(["list", "tables"]);
        let tables = output(nft);
        assert_eq!(
            String::from_utf8_lossy(&tables.stdout).trim(),
            "",
            "[{iso}] tables left"
        );
        let links = ns.links();
        assert!(
            !links.contains("husk0") && !links.contains(" hk"),
            "[{iso}] {links}"
        );
        ctx.assert_clean();
    }
}

#[test]
fn bad_port_specifications_fail_before_anything_is_made() {
    let ns = NetNs::new("pbad");
    let ctx = Ctx::isolated("process").in_netns(&ns);
    for (args, want) in [
        (
            &["-p", "70000"][..],
            "husk: invalid port specification: \"70000\"",
        ),
        (&["-p", "80/sctp"], "husk: invalid proto: sctp"),
        (
            &["-p", "8000-8002:80-81"],
            "husk: invalid ranges specified for container and host ports: \"8000-8002:80-81\"",
        ),
        (
            &["--network", "none", "-p", "80"],
            "husk: published ports need a network: --network none has none",
        ),
    ] {
        let e = ctx.fails(
            125,
            &[
                &["run", "--rm", "--isolation", "process"][..],
                args,
                &[BUSYBOX, "true"],
            ]
            .concat(),
        );
        assert_eq!(e, want);
    }
    assert_eq!(ns.links().lines().count(), 1, "{}", ns.links());
    assert!(ctx.container_dirs().is_empty());
}

#[test]
fn a_published_udp_port_answers() {
    for iso in backends("a_published_udp_port_answers") {
        let ns = NetNs::new(&format!("pu{iso}"));
        let ctx = Ctx::isolated(iso).in_netns(&ns);
        ctx.import_debian();
        let id = ctx.ok(&[
            "run",
            "-d",
            "--isolation",
            iso,
            "-p",
            "5353:53/udp",
            "husk/debian:bookworm",
            "perl",
            "-MIO::Socket::INET",
            "-e",
            UDP_PONG,
        ]);
        let id = id.trim();
        assert_eq!(ctx.ok(&["port", id, "53/udp"]).trim(), "0.0.0.0:5353");
        assert_eq!(udp_ask(&ns, "127.0.0.1:5353"), "udp-pong", "[{iso}]");
        ctx.ok(&["rm", "-f", id]);
        ctx.assert_clean();
    }
}

/// A child process killed when dropped.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn containers_reach_the_outside_through_masquerading() {
    for iso in backends("containers_reach_the_outside_through_masquerading") {
        // husk's host, and an outside host on a link of their own (192.0.2.0/24) that has
        // no route to the containers' subnet: only masquerading brings replies back.
        let host = NetNs::new(&format!("oh{iso}"));
        let outside = NetNs::new(&format!("oo{iso}"));
        let mut link = Command::new("ip");
        link.args([
            "link",
            "add",
            "v0",
            "netns",
            host.name(),
            "type",
            "veth",
            "peer",
            "name",
            "v1",
            "netns",
            outside.name(),
        ]);
        assert!(output(link).status.success());
        for (ns, dev, addr) in [
            (&host, "v0", "192.0.2.1/24"),
            (&outside, "v1", "192.0.2.2/24"),
        ] {
            for args in [
                &["addr", "add", addr, "dev", dev][..],
                &["link", "set", dev, "up"],
            ] {
                let mut ip = ns.command("ip");
                ip.args(args);
                assert!(output(ip).status.success(), "ip {args:?}");
            }
        }
        let ctx = Ctx::isolated(iso).in_netns(&host);
        let www = tempfile::tempdir().unwrap();
        std::fs::write(www.path().join("index.html"), "outside-page\n").unwrap();
        let mut httpd = outside.command("busybox");
        httpd
            .args(["httpd", "-f", "-p", "192.0.2.2:80", "-h"])
            .arg(www.path());
        let server = Server(httpd.spawn().unwrap());
        let fetch = "for i in 1 2 3 4 5 6 7 8 9 10; do wget -q -O - http://192.0.2.2/ && break; sleep 1; done";
        let got = ctx.ok(&[
            "run",
            "--rm",
            "--isolation",
            iso,
            "--network",
            "bridge",
            BUSYBOX,
            "sh",
            "-c",
            fetch,
        ]);
        assert_eq!(got.trim(), "outside-page", "[{iso}]");
        drop(server);
        ctx.assert_clean();
    }
}

#[test]
fn a_killed_shims_network_is_repaired_and_its_port_published_again() {
    for iso in backends("a_killed_shims_network_is_repaired_and_its_port_published_again") {
        let ns = NetNs::new(&format!("ks{iso}"));
        let ctx = Ctx::isolated(iso).in_netns(&ns);
        let run = [
            "run",
            "-d",
            "--isolation",
            iso,
            "-p",
            "8080:80",
            BUSYBOX,
            "sh",
            "-c",
            SERVER,
        ];
        let first = ctx.ok(&run).trim().to_owned();
        let page = |id: &str| format!("hello-from-{}", &id[..12]);
        assert!(
            serves(&ns, "127.0.0.1:8080".into(), page(&first)),
            "[{iso}]"
        );

        // kill -9 of the shim: the sandbox dies with it, its network is not cleaned up.
        let store = runtime::container::Store::open(ctx.root()).unwrap();
        let shim = store.state(&first).unwrap().shim_pid;
        // SAFETY: kill takes no pointers.
        assert_eq!(unsafe { libc::kill(shim, libc::SIGKILL) }, 0);
        assert!(
            Ctx::eventually(run_common::GUARD, || !runtime::procfs::alive(shim)),
            "[{iso}] the shim survived SIGKILL"
        );

        // Another container publishes the same port before the dead one is removed.
        let second = ctx.ok(&run).trim().to_owned();
        assert!(
            serves(&ns, "127.0.0.1:8080".into(), page(&second)),
            "[{iso}]"
        );
        // Removing the dead one repairs what it left and leaves the live one's port.
        ctx.ok(&["rm", "-f", &first]);
        assert!(
            serves(&ns, "127.0.0.1:8080".into(), page(&second)),
            "[{iso}] after rm"
        );
        ctx.ok(&["rm", "-f", &second]);

        let mut nft = ns.command("nft");
        nft.args(["list", "tables"]);
        let tables = output(nft);
        assert_eq!(
            String::from_utf8_lossy(&tables.stdout).trim(),
            "",
            "[{iso}] tables left"
        );
        let links = ns.links();
        assert_eq!(links.lines().count(), 1, "[{iso}] links left: {links}");
        let pool = ctx.root().join("networks/bridge");
        assert_eq!(
            std::fs::read_dir(&pool).unwrap().count(),
            0,
            "[{iso}] addresses left"
        );
        ctx.assert_clean();
    }
}
