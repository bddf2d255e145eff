//! netconf against the real kernel, in a network namespace the test thread makes for
//! itself (`unshare(CLONE_NEWNET)`; it vanishes with the thread): bridge, veth pair,
//! enslaving, addresses, the default route, moving a link into another namespace, and
//! the kernel's refusals as one-line errors. Needs root.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed setup step is a failed test

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::process::Command;

use netconf::{LinkChange, Netlink, link_index};

fn own_netns() {
    // SAFETY: unshare(CLONE_NEWNET) only changes the calling thread's namespace.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "unshare: {}", std::io::Error::last_os_error());
}

fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(out.status.success(), "ip {args:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn bridge_veth_addresses_and_route() {
    own_netns();
    let mut nl = Netlink::open().unwrap();
    nl.add_bridge("hbr0").unwrap();
    let br = nl.index("hbr0").unwrap();
    nl.add_address(br, IpAddr::V4(Ipv4Addr::new(10, 77, 0, 1)), 16)
        .unwrap();
    nl.set_link(
        br,
        &LinkChange {
            up: Some(true),
            ..LinkChange::default()
        },
    )
    .unwrap();
    nl.add_veth("hv0", "hv0p").unwrap();
    let v = nl.index("hv0").unwrap();
    nl.set_link(
        v,
        &LinkChange {
            up: Some(true),
            controller: Some(br),
            mtu: Some(1400),
            ..LinkChange::default()
        },
    )
    .unwrap();
    let p = nl.index("hv0p").unwrap();
    nl.set_link(
        p,
        &LinkChange {
            up: Some(true),
            name: Some("eth9".into()),
            mac: Some([0x02, 0, 0, 0, 0, 0x42]),
            ..LinkChange::default()
        },
    )
    .unwrap();
    assert!(link_index("hv0p").is_none());
    let eth = nl.index("eth9").unwrap();
    nl.add_address(eth, IpAddr::V4(Ipv4Addr::new(10, 78, 0, 2)), 24)
        .unwrap();
    nl.add_default_route(Ipv4Addr::new(10, 78, 0, 1)).unwrap();

    let links = ip(&["-o", "link"]);
    assert!(
        links.contains("hv0@eth9") && links.contains("master hbr0"),
        "{links}"
    );
    assert!(links.contains("mtu 1400"), "{links}");
    assert!(links.contains("02:00:00:00:00:42"), "{links}");
    let addrs = ip(&["-o", "-4", "addr"]);
    assert!(addrs.contains("10.77.0.1/16 brd 10.77.255.255"), "{addrs}");
    assert!(addrs.contains("10.78.0.2/24 brd 10.78.0.255"), "{addrs}");
    let routes = ip(&["route"]);
    assert!(
        routes.contains("default via 10.78.0.1 dev eth9"),
        "{routes}"
    );

    // Refusals: one line each, the errno kept.
    let e = nl.add_bridge("hbr0").unwrap_err();
    assert_eq!(e.errno(), Some(libc::EEXIST));
    assert_eq!(e.to_string(), "cannot create a bridge");
    assert!(
        nl.index("nope0")
            .unwrap_err()
            .to_string()
            .contains("\"nope0\"")
    );
    let e = nl
        .add_default_route(Ipv4Addr::new(10, 78, 0, 1))
        .unwrap_err();
    assert_eq!(e.errno(), Some(libc::EEXIST));

    // Deleting one end of a veth takes the other with it.
    nl.delete_link(v).unwrap();
    assert!(link_index("eth9").is_none());
    nl.delete_link(br).unwrap();
    assert!(link_index("hbr0").is_none());
}

#[test]
fn a_link_moves_into_another_namespace() {
    own_netns();
    let mut nl = Netlink::open().unwrap();
    nl.add_veth("mv0", "mv0p").unwrap();
    // The other namespace: a child thread's own.
    let (tx, rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let other = std::thread::spawn(move || {
        own_netns();
        let ns = std::fs::File::open("/proc/thread-self/ns/net").unwrap();
        tx.send(ns).unwrap();
        done_rx.recv().unwrap();
        link_index("mv0p").is_some()
    });
    let ns = rx.recv().unwrap();
    let p = nl.index("mv0p").unwrap();
    nl.set_link(
        p,
        &LinkChange {
            netns_fd: Some(ns.as_raw_fd()),
            ..LinkChange::default()
        },
    )
    .unwrap();
    assert!(link_index("mv0p").is_none());
    done_tx.send(()).unwrap();
    assert!(
        other.join().unwrap(),
        "the link is not in the other namespace"
    );
}

#[test]
fn a_persistent_tap_outlives_its_creator_until_deleted() {
    own_netns();
    netconf::tap::create_persistent("ht0").unwrap();
    let mut nl = Netlink::open().unwrap();
    let t = nl.index("ht0").unwrap();
    nl.add_bridge("hbr1").unwrap();
    let br = nl.index("hbr1").unwrap();
    nl.set_link(
        t,
        &LinkChange {
            controller: Some(br),
            up: Some(true),
            ..LinkChange::default()
        },
    )
    .unwrap();
    assert!(ip(&["-o", "link", "show", "ht0"]).contains("master hbr1"));
    nl.delete_link(t).unwrap();
    assert!(link_index("ht0").is_none());
}
