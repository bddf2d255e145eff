//! Capabilities as docker takes them: `--cap-add`, `--cap-drop` (names with or without
//! `CAP_`, any case, or `ALL`) and `--privileged`, turned into the bounding set the agent
//! gives container processes, with docker's rules (moby's `TweakCapabilities`).

/// Every capability the guest and host kernels know (6.x), by number.
const NAMES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// docker's default set: CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL, SETGID, SETUID, SETPCAP,
/// NET_BIND_SERVICE, NET_RAW, SYS_CHROOT, MKNOD, AUDIT_WRITE, SETFCAP.
pub const DEFAULT_MASK: u64 = 0xa804_25fb;

/// Every capability.
pub const ALL_MASK: u64 = (1 << NAMES.len()) - 1;

/// A name that is no capability.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown capability: {0:?}")]
pub struct CapError(pub String);

/// The bit of `name` (`NET_ADMIN`, `cap_net_admin`); `None` for `ALL`.
fn bit(name: &str) -> Result<Option<u64>, CapError> {
    let upper = name.to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    if bare == "ALL" {
        return Ok(None);
    }
    NAMES
        .iter()
        .position(|n| *n == bare)
        .map(|i| Some(1u64 << i))
        .ok_or_else(|| CapError(name.to_owned()))
}

/// The bounding set for `--privileged`, `--cap-add`s and `--cap-drop`s.
pub fn bounding_set(privileged: bool, add: &[String], drop: &[String]) -> Result<u64, CapError> {
    let mask = |names: &[String]| -> Result<(u64, bool), CapError> {
        let mut m = 0;
        let mut all = false;
        for n in names {
            match bit(n)? {
                Some(b) => m |= b,
                None => all = true,
            }
        }
        Ok((m, all))
    };
    let (add, add_all) = mask(add)?;
    let (drop, drop_all) = mask(drop)?;
    Ok(match (privileged, add_all, drop_all) {
        (true, _, _) => ALL_MASK,
        (false, true, _) => ALL_MASK & !drop,
        (false, false, true) => add,
        (false, false, false) => (DEFAULT_MASK & !drop) | add,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn dockers_rules() {
        assert_eq!(bounding_set(false, &[], &[]), Ok(DEFAULT_MASK));
        assert_eq!(bounding_set(true, &[], &v(&["ALL"])), Ok(ALL_MASK));
        let net_admin = 1 << 12;
        assert_eq!(
            bounding_set(false, &v(&["net_admin"]), &v(&["CAP_CHOWN"])),
            Ok((DEFAULT_MASK & !1) | net_admin)
        );
        assert_eq!(
            bounding_set(false, &v(&["NET_ADMIN"]), &v(&["all"])),
            Ok(net_admin)
        );
        assert_eq!(
            bounding_set(false, &v(&["ALL"]), &v(&["SYS_ADMIN"])),
            Ok(ALL_MASK & !(1 << 21))
        );
        assert_eq!(
            bounding_set(false, &v(&["NOPE"]), &[]),
            Err(CapError("NOPE".into()))
        );
        assert_eq!(NAMES[40], "CHECKPOINT_RESTORE");
    }
}
