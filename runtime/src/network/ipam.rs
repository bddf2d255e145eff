//! A network's address pool: one file per address in use, `<pool>/<ip>`, made with
//! `create_new` so two husks never hand out one address. The file holds the container's
//! ID on its first line, then the names the network's DNS answers with that address (name,
//! aliases, short ID) and the container's `--dns` servers (`@IP`), one per line. An address whose container no longer exists (a
//! killed husk never released it) is taken back when the pool is scanned.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::Path;

use super::NetworkError;
use super::defs::Net;

/// What a container holds in a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder<'a> {
    /// Its ID.
    pub id: &'a str,
    /// The names it answers to on the network.
    pub names: &'a [String],
    /// Its `--dns` servers (where the network's DNS forwards its other questions).
    pub upstreams: &'a [Ipv4Addr],
    /// `--ip`: this address or none.
    pub want: Option<Ipv4Addr>,
}

/// A live holder as the pool records it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Holding {
    /// The address.
    pub ip: Ipv4Addr,
    /// The container's ID.
    pub id: String,
    /// Its names on the network.
    pub names: Vec<String>,
    /// Its `--dns` servers.
    pub upstreams: Vec<Ipv4Addr>,
}

impl Holder<'_> {
    fn record(&self) -> String {
        let mut out = self.id.to_string();
        for n in self.names {
            out.push('\n');
            out.push_str(n);
        }
        for u in self.upstreams {
            out.push_str(&format!("\n@{u}"));
        }
        out
    }
}

/// An address of `net` for `holder` (the lowest free one, or the one it wants). Any
/// other address the holder kept from a start that never recorded it (a shim killed
/// early) is given back: a container holds one address per network.
pub fn allocate(net: &Net, root: &Path, holder: &Holder) -> Result<Ipv4Addr, NetworkError> {
    let pool = net.pool(root);
    let ip = take_one(net, root, &pool, holder)?;
    for held in holders(&pool, root) {
        if held.id == holder.id && held.ip != ip {
            release(&pool, held.ip, holder.id);
        }
    }
    Ok(ip)
}

fn take_one(
    net: &Net,
    root: &Path,
    pool: &Path,
    holder: &Holder,
) -> Result<Ipv4Addr, NetworkError> {
    let fail = |e| NetworkError::Pool(pool.to_path_buf(), e);
    fs::create_dir_all(pool).map_err(fail)?;
    if let Some(ip) = holder.want {
        if !net.subnet.has_host(ip) || ip == net.gateway {
            return Err(NetworkError::AddressOutside(ip, net.name.clone()));
        }
        return match take(pool, root, ip, holder).map_err(fail)? {
            true => Ok(ip),
            false => Err(NetworkError::AddressTaken(ip)),
        };
    }
    for ip in net.subnet.hosts().filter(|ip| *ip != net.gateway) {
        if take(pool, root, ip, holder).map_err(fail)? {
            return Ok(ip);
        }
    }
    Err(NetworkError::Exhausted(net.name.clone(), net.subnet))
}

/// Takes `ip` for `holder` if it is free, stale or already the holder's.
fn take(pool: &Path, root: &Path, ip: Ipv4Addr, holder: &Holder) -> std::io::Result<bool> {
    let path = pool.join(ip.to_string());
    match OpenOptions::new().write(true).create_new(true).open(&path) {
        Ok(mut f) => {
            f.write_all(holder.record().as_bytes())?;
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let owner = owner(&path);
            if owner == holder.id || is_stale(root, &owner) {
                fs::write(&path, holder.record())?;
                return Ok(true);
            }
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// The ID on an address file's first line ("" if unreadable).
fn owner(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    text.lines().next().unwrap_or_default().to_string()
}

/// Whether `owner` names no container of `root` (empty: a husk killed mid-write).
fn is_stale(root: &Path, owner: &str) -> bool {
    owner.is_empty() || owner.contains('/') || !root.join("containers").join(owner).exists()
}

/// Frees `ip` if container `id` holds it (best effort).
pub fn release(pool: &Path, ip: Ipv4Addr, id: &str) {
    let path = pool.join(ip.to_string());
    if owner(&path) == id {
        let _ = fs::remove_file(path);
    }
}

/// The live holders of the pool, by address.
pub fn holders(pool: &Path, root: &Path) -> Vec<Holding> {
    let Ok(entries) = fs::read_dir(pool) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let Some(ip) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let text = fs::read_to_string(entry.path()).unwrap_or_default();
        let mut lines = text.lines();
        let id = lines.next().unwrap_or_default().to_string();
        if is_stale(root, &id) {
            continue;
        }
        let (mut names, mut upstreams) = (Vec::new(), Vec::new());
        for line in lines {
            match line.strip_prefix('@') {
                Some(u) => upstreams.extend(u.parse::<Ipv4Addr>().ok()),
                None => names.push(line.to_string()),
            }
        }
        out.push(Holding {
            ip,
            id,
            names,
            upstreams,
        });
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_unique_reused_after_release_and_taken_back_from_the_dead() {
        let root = tempfile::tempdir().unwrap();
        let net = Net::default_bridge();
        let pool = net.pool(root.path());
        for id in ["a", "b", "c", "d", "e"] {
            fs::create_dir_all(root.path().join("containers").join(id)).unwrap();
        }
        let names = ["web".to_string(), "www".to_string()];
        let upstreams = [Ipv4Addr::new(10, 0, 0, 53)];
        let h = |id| Holder {
            id,
            names: &names,
            upstreams: &upstreams,
            want: None,
        };
        let ip = |n: u8| Ipv4Addr::new(10, 88, 0, n);
        assert_eq!(allocate(&net, root.path(), &h("a")).unwrap(), ip(2));
        assert_eq!(allocate(&net, root.path(), &h("b")).unwrap(), ip(3));
        // Only the holder releases an address.
        release(&pool, ip(2), "b");
        assert_eq!(allocate(&net, root.path(), &h("c")).unwrap(), ip(4));
        release(&pool, ip(2), "a");
        assert_eq!(allocate(&net, root.path(), &h("a")).unwrap(), ip(2));
        // "b" is removed without releasing (a killed husk): its address is taken back.
        fs::remove_dir(root.path().join("containers/b")).unwrap();
        assert_eq!(allocate(&net, root.path(), &h("d")).unwrap(), ip(3));
        // The holder asking again gets its own address.
        assert_eq!(allocate(&net, root.path(), &h("c")).unwrap(), ip(4));
        // A wanted address: free, taken, outside, the gateway.
        let want = |w| Holder {
            want: Some(w),
            ..h("e")
        };
        assert_eq!(allocate(&net, root.path(), &want(ip(9))).unwrap(), ip(9));
        let e = |r: Result<Ipv4Addr, NetworkError>| r.unwrap_err().to_string();
        assert_eq!(
            e(allocate(
                &net,
                root.path(),
                &Holder {
                    id: "x",
                    ..want(ip(9))
                }
            )),
            "Address already in use: 10.88.0.9"
        );
        assert!(e(allocate(&net, root.path(), &want(ip(1)))).contains("10.88.0.1"));
        assert!(
            e(allocate(
                &net,
                root.path(),
                &want(Ipv4Addr::new(10, 1, 0, 1))
            ))
            .contains("no configured subnet")
        );
        let held = holders(&pool, root.path());
        assert_eq!(held.len(), 4);
        // A holder that kept an address from an unrecorded start gets one address again.
        fs::write(pool.join("10.88.0.20"), "e\nweb").unwrap();
        assert_eq!(allocate(&net, root.path(), &h("e")).unwrap(), ip(5));
        let e: Vec<_> = holders(&pool, root.path())
            .into_iter()
            .filter(|h| h.id == "e")
            .collect();
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(
            held[0],
            Holding {
                ip: ip(2),
                id: "a".into(),
                names: names.to_vec(),
                upstreams: upstreams.to_vec(),
            }
        );
    }
}
