//! Who is on a network, as its address pool says (`ipam`): read again when the pool's
//! directory changes (a container came or went) and at least once a second (an address
//! taken over in place), never per query. A container on several user networks finds
//! the members of all of them (docker's rule): the other user networks' pools are read
//! at most once a second too.

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
    /// The members of the state root's other user networks, and when they were read.
    others: Vec<Vec<Holding>>,
    others_at: Option<Instant>,
}

impl Directory {
    /// The directory of the pool at `pool` (containers of state root `root`).
    pub(super) fn new(pool: PathBuf, root: PathBuf) -> Self {
        Directory {
            pool,
            root,
            read_at: None,
            holders: Vec::new(),
            others: Vec::new(),
            others_at: None,
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

    /// The address `name` has for the member at `asker`: on this network, or else on
    /// another user network both are on.
    pub(super) fn lookup(&mut self, name: &str, asker: Ipv4Addr) -> Option<Ipv4Addr> {
        if let Some(ip) = find(&self.holders, name) {
            return Some(ip);
        }
        let id = self.member(asker)?.id.clone();
        if self.others_at.is_none_or(|at| at.elapsed() >= FRESH) {
            self.others = super::super::defs::list(&self.root)
                .unwrap_or_default()
                .into_iter()
                .filter(|n| !n.is_default() && n.pool(&self.root) != self.pool)
                .map(|n| ipam::holders(&n.pool(&self.root), &self.root))
                .collect();
            self.others_at = Some(Instant::now());
        }
        self.others
            .iter()
            .filter(|members| members.iter().any(|h| h.id == id))
            .find_map(|members| find(members, name))
    }

    /// The member at `ip`, if one is.
    pub(super) fn member(&self, ip: Ipv4Addr) -> Option<&Holding> {
        self.holders.iter().find(|h| h.ip == ip)
    }
}

/// The address of the member of `holders` known as `name` (any case).
fn find(holders: &[Holding], name: &str) -> Option<Ipv4Addr> {
    holders
        .iter()
        .find(|h| h.names.iter().any(|n| n.eq_ignore_ascii_case(name)))
        .map(|h| h.ip)
}
