//! Who is on a network, as its address pool says (`ipam`): read again when the pool's
//! directory changes (a container came or went) and at least once a second (an address
//! taken over in place), never per query.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use super::super::ipam::{self, Holding};

/// The longest a read of the pool is trusted.
const FRESH: Duration = Duration::from_secs(1);

/// A network's members, cached.
#[derive(Debug)]
pub(super) struct Directory {
    pool: PathBuf,
    root: PathBuf,
    read_at: Option<(Instant, Option<SystemTime>)>,
    holders: Vec<Holding>,
}

impl Directory {
    /// The directory of the pool at `pool` (containers of state root `root`).
    pub(super) fn new(pool: PathBuf, root: PathBuf) -> Self {
        Directory {
            pool,
            root,
            read_at: None,
            holders: Vec::new(),
        }
    }

    /// Reads the pool again if it changed or the last read is too old.
    pub(super) fn refresh(&mut self) {
        let mtime = std::fs::metadata(&self.pool)
            .and_then(|m| m.modified())
            .ok();
        let fresh = self
            .read_at
            .is_some_and(|(at, seen)| at.elapsed() < FRESH && seen == mtime);
        if !fresh {
            self.holders = ipam::holders(&self.pool, &self.root);
            self.read_at = Some((Instant::now(), mtime));
        }
    }

    /// The address `name` (lower case) has on the network.
    pub(super) fn lookup(&self, name: &str) -> Option<Ipv4Addr> {
        self.holders
            .iter()
            .find(|h| h.names.iter().any(|n| n.eq_ignore_ascii_case(name)))
            .map(|h| h.ip)
    }

    /// The member at `ip`, if one is.
    pub(super) fn member(&self, ip: Ipv4Addr) -> Option<&Holding> {
        self.holders.iter().find(|h| h.ip == ip)
    }
}
