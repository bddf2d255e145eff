//! The container's `/etc/resolv.conf`, made from the host's the way docker makes it for a
//! container without its own DNS settings: `nameserver` lines naming a loopback address are
//! dropped (nothing listens on the container's own loopback), `search` and `options` stay,
//! and with no resolver left docker's fallback (Google's public resolvers) goes in.

use std::net::IpAddr;

/// The host's resolver configuration.
pub const HOST_RESOLV_CONF: &str = "/etc/resolv.conf";

/// Docker's resolvers for a container whose host has none it can use.
const FALLBACK: &[&str] = &["8.8.8.8", "8.8.4.4"];

/// The container's resolv.conf for the host's `host` (`None`: unreadable or absent).
pub fn for_container(host: Option<&str>) -> String {
    let mut out = String::new();
    let mut servers = 0;
    for line in host.unwrap_or_default().lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => {
                let usable = words
                    .next()
                    .and_then(|a| a.split('%').next()?.parse::<IpAddr>().ok())
                    .is_some_and(|ip| !ip.is_loopback());
                if usable {
                    out.push_str(line.trim());
                    out.push('\n');
                    servers += 1;
                }
            }
            Some("search" | "domain" | "options") => {
                out.push_str(line.trim());
                out.push('\n');
            }
            _ => {}
        }
    }
    if servers == 0 {
        for server in FALLBACK {
            out.push_str(&format!("nameserver {server}\n"));
        }
    }
    out
}

/// The container's resolv.conf with `--dns` servers: they replace the host's
/// nameservers; the host's `search` and `options` stay (docker's rule).
pub fn with_servers(base: &str, servers: &[IpAddr]) -> String {
    if servers.is_empty() {
        return base.to_string();
    }
    let mut out: String = servers
        .iter()
        .map(|s| format!("nameserver {s}\n"))
        .collect();
    for line in base
        .lines()
        .filter(|l| !l.trim_start().starts_with("nameserver"))
    {
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The host's IPv4 resolvers, loopback ones included (for the embedded DNS server of user
/// networks, which runs on the host side).
pub fn host_resolvers() -> Vec<std::net::Ipv4Addr> {
    let text = std::fs::read_to_string(HOST_RESOLV_CONF).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("nameserver")).then(|| w.next()?.parse().ok())?
        })
        .collect()
}

/// [`for_container`] of this host's file.
pub fn from_host() -> String {
    for_container(std::fs::read_to_string(HOST_RESOLV_CONF).ok().as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_resolvers_are_dropped_others_kept() {
        let host = "# comment\nnameserver 127.0.0.53\nnameserver 10.0.0.2\nnameserver ::1\n\
                    search example.org\noptions edns0 trust-ad\nsortlist 1.2.3.4\n";
        assert_eq!(
            for_container(Some(host)),
            "nameserver 10.0.0.2\nsearch example.org\noptions edns0 trust-ad\n"
        );
    }

    #[test]
    fn nothing_usable_means_docker_fallback() {
        let fallback = "nameserver 8.8.8.8\nnameserver 8.8.4.4\n";
        assert_eq!(for_container(None), fallback);
        assert_eq!(for_container(Some("nameserver 127.0.0.1\n")), fallback);
        assert_eq!(for_container(Some("nameserver bogus\n")), fallback);
        assert_eq!(
            for_container(Some("search a.b\nnameserver 127.0.0.53")),
            format!("search a.b\n{fallback}")
        );
    }

    #[test]
    fn scoped_ipv6_resolvers_stay() {
        let host = "nameserver fe80::1%eth0\n";
        assert_eq!(for_container(Some(host)), host);
    }

    #[test]
    fn dns_servers_replace_the_nameservers_and_keep_search_and_options() {
        let base = "nameserver 10.0.0.1\nsearch example.org\noptions ndots:2\n";
        let ips: Vec<IpAddr> = vec![
            "192.0.2.53".parse().unwrap(),
            "2001:db8::1".parse().unwrap(),
        ];
        assert_eq!(
            with_servers(base, &ips),
            "nameserver 192.0.2.53\nnameserver 2001:db8::1\nsearch example.org\noptions ndots:2\n"
        );
        assert_eq!(with_servers(base, &[]), base);
    }
}
