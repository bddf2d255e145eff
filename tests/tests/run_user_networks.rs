//! User networks, end to end, under both isolations, each test inside a network namespace
//! of its own: containers on one network find each other by name and alias through the
//! network's DNS (which forwards other names to the asker's `--dns` server, here a tiny
//! server on the namespace's loopback), cannot reach a container on another network,
//! `--ip` and `network connect` place containers, an internal network gives no route out,
//! a network in use cannot be removed, and
//! after the last container everything husk made (bridges, links, its nftables table) is
//! gone. The `network` verbs' bad input fails with one line and leaves nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed setup step is a failed test

mod run_common;

use std::net::UdpSocket;

use husk_e2e::{NetNs, output};
use run_common::{BUSYBOX, Ctx, backends};

const SERVER: &str = "mkdir /www && echo hello-from-$(hostname) > /www/index.html \
    && exec httpd -f -p 80 -h /www";

/// What the namespace's upstream DNS server answers for `outside.test`.
const OUTSIDE: &str = "192.0.2.7";

/// A DNS server on 127.0.0.1:53 inside `ns` that answers an A question for
/// `outside.test` with [`OUTSIDE`], other questions for it with no answer, and every
/// other name with NXDOMAIN; it lives as long as the test process.
fn upstream_dns(ns: &NetNs) {
    let socket = ns.within(|| UdpSocket::bind("127.0.0.1:53").unwrap());
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((len, from)) = socket.recv_from(&mut buf) {
            if let Some(reply) = dns_reply(&buf[..len]) {
                let _ = socket.send_to(&reply, from);
            }
        }
    });
}

/// The reply to one question: the header and question echoed, plus an A record for
/// an A question for `outside.test`.
fn dns_reply(query: &[u8]) -> Option<Vec<u8>> {
    let mut end = 12;
    while *query.get(end)? != 0 {
        end += 1 + usize::from(query[end]);
    }
    let known = query[12..end] == *b"\x07outside\x04test";
    let qtype = u16::from_be_bytes([*query.get(end + 1)?, *query.get(end + 2)?]);
    let answer = known && qtype == 1;
    let mut reply = query[..end + 5].to_vec();
    reply[2] |= 0x80;
    reply[3] = if known { 0x80 } else { 0x83 };
    reply[4..12].copy_from_slice(&[0, 1, 0, u8::from(answer), 0, 0, 0, 0]);
    if answer {
        reply.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
        let ip: std::net::Ipv4Addr = OUTSIDE.parse().unwrap();
        reply.extend_from_slice(&ip.octets());
    }
    Some(reply)
}

#[test]
fn user_networks_resolve_names_and_aliases_forward_the_rest_and_stay_apart() {
    for iso in backends("user_networks_resolve_names_and_aliases_forward_the_rest_and_stay_apart") {
        let ns = NetNs::new(&format!("un{iso}"));
        upstream_dns(&ns);
        let ctx = Ctx::isolated(iso).in_netns(&ns);
        ctx.ok(&["network", "create", "--subnet", "10.90.0.0/24", "front"]);
        ctx.ok(&["network", "create", "back"]);
        let run = ["run", "--isolation", iso];
        let web = ctx.ok(&[
            &run[..],
            &["-d", "--name", "web", "--network", "front"],
            &["--network-alias", "www", BUSYBOX, "sh", "-c", SERVER],
        ]
        .concat());
        let page = format!("hello-from-{}", &web.trim()[..12]);
        ctx.ok(&[
            &run[..],
            &["-d", "--name", "other", "--network", "back"],
            &["--ip", "10.89.0.50", BUSYBOX, "sh", "-c", SERVER],
        ]
        .concat());
        let e = ctx.fails_with(1, &["network", "rm", "front"]);
        assert_eq!(
            e, "Error: network front has active endpoints: container web is running on it",
            "[{iso}]"
        );

        // A client on `front`: the network's DNS, names and aliases, nothing of `back`,
        // other names from its --dns server.
        let client = "grep nameserver /etc/resolv.conf; \
            for i in 1 2 3 4 5 6 7 8 9 10; do wget -q -O - http://web/ && break; sleep 1; done; \
            wget -q -O - http://www/; \
            nslookup other > /dev/null 2>&1 && echo other-resolved || echo other-unknown; \
            nslookup other 10.89.0.1 > /dev/null 2>&1 && echo cross-dns || echo no-cross-dns; \
            timeout 3 wget -q -O - http://10.89.0.50/ 2>/dev/null || echo other-unreachable; \
            nslookup outside.test | grep -A1 '^Name:' | grep -c 192.0.2.7";
        let out = ctx.ok(&[
            &run[..],
            &["--rm", "--network", "front", "--dns", "127.0.0.1"],
            &[BUSYBOX, "sh", "-c", client],
        ]
        .concat());
        let want = format!(
            "nameserver 10.90.0.1\n{page}\n{page}\nother-unknown\nno-cross-dns\nother-unreachable\n1"
        );
        assert_eq!(out.trim(), want, "[{iso}]");
        // The namespace husk runs in reaches `back`'s container at its --ip.
        let mut wget = ns.command("busybox");
        wget.args(["wget", "-q", "-O", "-", "http://10.89.0.50/"]);
        assert!(
            String::from_utf8_lossy(&output(wget).stdout).starts_with("hello-from-"),
            "[{iso}]"
        );

        // connect: a stopped container joins an internal network at its next start: found
        // by its alias there, and no route beyond the network.
        ctx.ok(&[
            "network",
            "create",
            "--internal",
            "--subnet",
            "10.92.0.0/24",
            "inside",
        ]);
        let show = "ip -4 -o addr show eth0 | awk '{print $4}'; \
            nslookup late2 | grep -A1 '^Name:' | grep -c 10.92.0.; ip route | grep -c default; \
            nslookup outside.test > /dev/null 2>&1 && echo leaked || echo contained";
        let mut create = run.to_vec();
        create[0] = "create";
        // Its --dns server answers outside.test, but nothing leaves an internal network.
        let late = [
            "--name",
            "late",
            "--network",
            "none",
            "--dns",
            "127.0.0.1",
            BUSYBOX,
            "sh",
            "-c",
            show,
        ];
        ctx.ok(&[&create[..], &late].concat());
        ctx.ok(&["network", "connect", "--alias", "late2", "inside", "late"]);
        let out = ctx.ok(&["start", "-a", "late"]);
        assert!(
            out.starts_with("10.92.0.") && out.ends_with("/24\n1\n0\ncontained\n"),
            "[{iso}] {out}"
        );
        let inspect: serde_json::Value =
            serde_json::from_str(&ctx.ok(&["network", "inspect", "front"])).unwrap();
        let names: Vec<&str> = inspect[0]["Containers"]
            .as_object()
            .unwrap()
            .values()
            .map(|c| c["Name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["web"], "[{iso}] {inspect}");
        ctx.ok(&["network", "disconnect", "inside", "late"]);

        ctx.ok(&["rm", "-f", "web", "other", "late"]);
        let rm = ctx.ok(&["network", "rm", "front", "back", "inside"]);
        assert_eq!(rm, "front\nback\ninside\n");
        ns.assert_no_husk_networking(iso);
        ctx.assert_clean();
    }
}

#[test]
fn network_verbs_refuse_bad_input_with_one_line_and_leave_nothing() {
    for iso in backends("network_verbs_refuse_bad_input_with_one_line_and_leave_nothing") {
        let ns = NetNs::new(&format!("nv{iso}"));
        let ctx = Ctx::isolated(iso).in_netns(&ns);
        let id = ctx.ok(&["network", "create", "--label", "team=a", "a"]);
        assert_eq!(id.trim().len(), 64, "[{iso}] {id}");
        ctx.ok(&[
            "network",
            "create",
            "--internal",
            "--subnet",
            "10.91.0.0/16",
            "b",
        ]);
        let ls = ctx.ok(&[
            "network",
            "ls",
            "--format",
            "{{.Name}} {{.Driver}} {{.Internal}}",
        ]);
        assert_eq!(
            ls, "bridge bridge false\na bridge false\nb bridge true\n",
            "[{iso}]"
        );
        assert_eq!(ctx.ok(&["network", "ls", "-q"]).lines().count(), 3);
        let subnet = ctx.ok(&[
            "network",
            "inspect",
            "-f",
            "{{(index .IPAM.Config 0).Subnet}} {{.Labels.team}}",
            &id.trim()[..8],
        ]);
        assert_eq!(subnet.trim(), "10.89.0.0/24 a", "[{iso}]");
        for (args, want) in [
            (
                &["network", "create", "--subnet", "10.1.2.3/24", "c"][..],
                "Error: invalid subnet 10.1.2.3/24: it should be 10.1.2.0/24",
            ),
            (
                &["network", "create", "--subnet", "nonsense", "c"],
                "Error: invalid subnet \"nonsense\": not an IPv4 CIDR such as 10.1.0.0/24",
            ),
            (
                &["network", "create", "--subnet", "10.91.3.0/24", "c"],
                "Error: subnet 10.91.3.0/24 overlaps network b (10.91.0.0/16)",
            ),
            (
                &[
                    "network",
                    "create",
                    "--subnet",
                    "10.92.0.0/24",
                    "--gateway",
                    "10.93.0.1",
                    "c",
                ],
                "Error: invalid gateway 10.93.0.1: not a host address of subnet 10.92.0.0/24",
            ),
            (
                &["network", "create", "a"],
                "Error: network with name a already exists",
            ),
            (&["network", "rm", "nope"], "Error: network nope not found"),
            (
                &["network", "rm", "bridge"],
                "Error: bridge is a pre-defined network and cannot be removed",
            ),
            (
                &["network", "inspect", "nope"],
                "Error: network nope not found",
            ),
            (
                &["network", "connect", "nope", "x"],
                "Error: network nope not found",
            ),
        ] {
            assert_eq!(ctx.fails_with(1, args), want, "[{iso}] {args:?}");
        }
        // Bad --ip and --network-alias: refused before anything is made.
        let run = ["run", "--rm", "--isolation", iso];
        for (flags, want) in [
            (
                &["--ip", "10.89.0.9"][..],
                "husk: user specified IP address is supported on user defined networks only",
            ),
            (
                &["--network", "bridge", "--network-alias", "x"],
                "husk: network-scoped alias is supported only for containers in user defined networks",
            ),
            (
                &["--network", "a", "--ip", "nope"],
                "husk: invalid argument \"nope\" for \"--ip\" flag: not an IPv4 address",
            ),
        ] {
            let args = [&run[..], flags, &[BUSYBOX, "true"]].concat();
            assert_eq!(ctx.fails(125, &args), want, "[{iso}] {flags:?}");
        }
        // An address outside the network fails the run and leaves no link, rule or address.
        let args = [
            &run[..],
            &["--network", "a", "--ip", "10.1.1.1", BUSYBOX, "true"],
        ]
        .concat();
        let e = ctx.fails(125, &args);
        assert!(
            e.contains("10.1.1.1") && e.contains("network a"),
            "[{iso}] {e}"
        );
        ns.assert_no_husk_networking(iso);
        let out = ctx.ok(&["network", "prune", "-f"]);
        assert_eq!(out, "Deleted Networks:\na\nb\n", "[{iso}]");
        assert_eq!(ctx.ok(&["network", "ls", "-q"]).lines().count(), 1);
        ctx.assert_clean();
    }
}
