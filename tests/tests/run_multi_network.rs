//! A container on several networks, end to end, under both isolations, inside a network
//! namespace of its own: `network connect` of a *running* container gives it a new
//! interface at once (a TAP plugged into a free NIC of its microVM, or a veth moved into
//! its namespace), where it reaches and resolves the network's members (its first
//! network's DNS answers for all its user networks), and they resolve it by its alias;
//! `network disconnect` takes the interface away at once (and the next network's DNS
//! server takes over in `resolv.conf`); the configuration keeps both
//! changes, so the next start has the same networks; and nothing is left at the end.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed setup step is a failed test

mod run_common;

use husk_e2e::NetNs;
use run_common::{BUSYBOX, Ctx, backends};

const SERVER: &str = "mkdir /www && echo hello-from-$(hostname) > /www/index.html \
    && exec httpd -f -p 80 -h /www";

/// The container's networks as `inspect` lists them: `name=address` in name order (the
/// template ranges over a map, whose order gtmpl does not keep).
fn networks(ctx: &Ctx, name: &str) -> String {
    let out = ctx.ok(&[
        "inspect",
        "-f",
        "{{range $n, $e := .NetworkSettings.Networks}}{{$n}}={{$e.IPAddress}} {{end}}",
        name,
    ]);
    let mut all: Vec<&str> = out.split_whitespace().collect();
    all.sort_unstable();
    all.join(" ")
}

#[test]
fn running_containers_join_and_leave_networks_and_keep_them_for_the_next_start() {
    for iso in
        backends("running_containers_join_and_leave_networks_and_keep_them_for_the_next_start")
    {
        let ns = NetNs::new(&format!("mn{iso}"));
        let ctx = Ctx::isolated(iso).in_netns(&ns);
        ctx.ok(&["network", "create", "--subnet", "10.93.0.0/24", "a"]);
        ctx.ok(&["network", "create", "--subnet", "10.94.0.0/24", "b"]);
        let run = ["run", "-d", "--isolation", iso];
        ctx.ok(&[
            &run[..],
            &["--name", "peer", "--network", "b", "--ip", "10.94.0.20"],
            &[BUSYBOX, "sh", "-c", SERVER],
        ]
        .concat());
        ctx.ok(&[
            &run[..],
            &["--name", "subj", "--network", "a", "--ip", "10.93.0.10"],
            &[BUSYBOX, "sleep", "100000"],
        ]
        .concat());
        assert_eq!(networks(&ctx, "subj"), "a=10.93.0.10", "[{iso}]");

        // Live connect: eth1 on b at once; the peer is reached by name through a's DNS,
        // and the peer finds the container by its alias on b.
        ctx.ok(&[
            "network",
            "connect",
            "--alias",
            "s2",
            "--ip",
            "10.94.0.30",
            "b",
            "subj",
        ]);
        let check = "ip -4 -o addr show eth1 | awk '{print $4}'; \
            for i in 1 2 3 4 5 6 7 8 9 10; do wget -q -O - http://peer/ && break; sleep 1; done";
        let out = ctx.ok(&["exec", "subj", "sh", "-c", check]);
        assert!(
            out.starts_with("10.94.0.30/24\nhello-from-"),
            "[{iso}] {out}"
        );
        let out = ctx.ok(&[
            "exec",
            "peer",
            "sh",
            "-c",
            "nslookup s2 | grep -A1 '^Name:' | tail -1",
        ]);
        assert!(out.contains("10.94.0.30"), "[{iso}] {out}");
        assert_eq!(
            networks(&ctx, "subj"),
            "a=10.93.0.10 b=10.94.0.30",
            "[{iso}]"
        );
        let e = ctx.fails_with(1, &["network", "connect", "b", "subj"]);
        assert_eq!(
            e, "Error: endpoint with name subj already exists in network b",
            "[{iso}]"
        );

        // Live disconnect of the first network: eth0 loses its address, b still works,
        // the default route moves to b and b's DNS server takes over (resolv.conf
        // rewritten in place).
        ctx.ok(&["network", "disconnect", "a", "subj"]);
        let check = "ip -4 -o addr show eth0 2>/dev/null | grep -c inet; \
            ip route | grep default | cut -d' ' -f1-5; \
            grep nameserver /etc/resolv.conf; wget -q -O - http://peer/";
        let out = ctx.ok(&["exec", "subj", "sh", "-c", check]);
        assert!(
            out.starts_with("0\ndefault via 10.94.0.1 dev eth1\nnameserver 10.94.0.1\nhello-from-"),
            "[{iso}] {out}"
        );
        assert_eq!(networks(&ctx, "subj"), "b=10.94.0.30", "[{iso}]");
        let id = ctx.ok(&["inspect", "-f", "{{.Id}}", "subj"]);
        let links = ns.links();
        let gone = format!(" hk{}", &id.trim()[..11]);
        assert!(!links.contains(&gone), "[{iso}] a's link is left: {links}");

        // The configuration kept it: the next start is on b (now eth0) and, connected
        // while stopped, a again (eth1).
        ctx.ok(&["stop", "-t", "1", "subj"]);
        ctx.ok(&["network", "connect", "a", "subj"]);
        ctx.ok(&["start", "subj"]);
        let check = "for i in eth0 eth1; do ip -4 -o addr show $i | awk '{print $4}'; done";
        let out = ctx.ok(&["exec", "subj", "sh", "-c", check]);
        let lines: Vec<&str> = out.lines().collect();
        assert!(
            lines.len() == 2 && lines[0] == "10.94.0.30/24" && lines[1].starts_with("10.93.0."),
            "[{iso}] {out}"
        );

        ctx.ok(&["rm", "-f", "subj", "peer"]);
        ctx.ok(&["network", "rm", "a", "b"]);
        ns.assert_no_husk_networking(iso);
        ctx.assert_clean();
    }
}
