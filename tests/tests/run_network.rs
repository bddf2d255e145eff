//! Container networking, end to end, under both isolations, each test inside a network
//! namespace of its own (`husk_e2e::NetNs`): the default bridge network (containers reach
//! the gateway and each other by address, the namespace reaches them, `/etc/hosts` has
//! the container's address, and everything husk made is gone after `rm`), `--network
//! none` and the default (loopback only), and bad `--network` values (exit 125, one line,
//! nothing made).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed setup step is a failed test

mod run_common;

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
fn none_and_the_default_leave_loopback_only_and_bad_networks_fail_cleanly() {
    for iso in backends("none_and_the_default_leave_loopback_only_and_bad_networks_fail_cleanly") {
        let ns = NetNs::new(&format!("no{iso}"));
        let ctx = Ctx::isolated(iso).in_netns(&ns);
        let show = "ip -4 -o addr | awk '{print $2, $4}'; ip route | grep -c . || true";
        for flags in [&["--network", "none"][..], &[]] {
            let args = [
                &["run", "--rm", "--isolation", iso][..],
                flags,
                &[BUSYBOX, "sh", "-c", show],
            ]
            .concat();
            let out = ctx.ok(&args);
            assert_eq!(out.trim(), "lo 127.0.0.1/8\n0", "[{iso}] {flags:?}: {out}");
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
                iso,
                "--network",
                "host",
                BUSYBOX,
                "true",
            ],
        );
        match iso {
            "vm" => assert!(e.contains("not possible with vm isolation"), "{e}"),
            _ => assert!(e.contains("not supported yet"), "{e}"),
        }
        // Nothing was made in the namespace: no bridge, no links.
        let links = ns.links();
        assert_eq!(links.lines().count(), 1, "[{iso}] {links}");
        ctx.assert_clean();
    }
}
