//! The default network's address pool: one file per address in use,
//! `<root>/networks/bridge/<ip>`, holding the container's ID, made with `create_new` so
//! two husks never hand out one address. An address whose container no longer exists
//! (a killed husk never released it) is taken back when the pool is scanned.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::Path;

use super::{GATEWAY, NetworkError, SUBNET};

/// An address for container `id` (the lowest free one above the gateway).
pub fn allocate(pool: &Path, root: &Path, id: &str) -> Result<Ipv4Addr, NetworkError> {
    let fail = |e| NetworkError::Pool(pool.to_path_buf(), e);
    fs::create_dir_all(pool).map_err(fail)?;
    let base = u32::from(SUBNET.0);
    let size = 1u32 << (32 - SUBNET.1);
    for n in (u32::from(GATEWAY) - base + 1)..size - 1 {
        let ip = Ipv4Addr::from(base + n);
        let path = pool.join(ip.to_string());
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(mut f) => {
                f.write_all(id.as_bytes()).map_err(fail)?;
                return Ok(ip);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let owner = fs::read_to_string(&path).unwrap_or_default();
                if owner == id || is_stale(root, &owner) {
                    fs::write(&path, id).map_err(fail)?;
                    return Ok(ip);
                }
            }
            Err(e) => return Err(fail(e)),
        }
    }
    Err(NetworkError::Exhausted)
}

/// Whether `owner` names no container of `root` (empty: a husk killed mid-write).
fn is_stale(root: &Path, owner: &str) -> bool {
    owner.is_empty() || owner.contains('/') || !root.join("containers").join(owner).exists()
}

/// Frees `ip` if container `id` holds it (best effort).
pub fn release(pool: &Path, ip: Ipv4Addr, id: &str) {
    let path = pool.join(ip.to_string());
    if fs::read_to_string(&path).is_ok_and(|owner| owner == id) {
        let _ = fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_unique_reused_after_release_and_taken_back_from_the_dead() {
        let root = tempfile::tempdir().unwrap();
        let pool = root.path().join("networks/bridge");
        for id in ["a", "b", "c", "d"] {
            fs::create_dir_all(root.path().join("containers").join(id)).unwrap();
        }
        let ip = |n: u8| Ipv4Addr::new(10, 88, 0, n);
        assert_eq!(allocate(&pool, root.path(), "a").unwrap(), ip(2));
        assert_eq!(allocate(&pool, root.path(), "b").unwrap(), ip(3));
        // Only the holder releases an address.
        release(&pool, ip(2), "b");
        assert_eq!(allocate(&pool, root.path(), "c").unwrap(), ip(4));
        release(&pool, ip(2), "a");
        assert_eq!(allocate(&pool, root.path(), "a").unwrap(), ip(2));
        // "b" is removed without releasing (a killed husk): its address is taken back.
        fs::remove_dir(root.path().join("containers/b")).unwrap();
        assert_eq!(allocate(&pool, root.path(), "d").unwrap(), ip(3));
        // The holder asking again gets its own address.
        assert_eq!(allocate(&pool, root.path(), "c").unwrap(), ip(4));
    }
}
