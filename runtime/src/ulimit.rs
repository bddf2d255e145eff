//! docker's `--ulimit NAME=SOFT[:HARD]` (`nofile=1024:2048`, `nproc=100`; `-1` is
//! unlimited), checked and turned into the agent's resource limits.

use serde::{Deserialize, Serialize};

/// One `--ulimit`, as docker's `HostConfig.Ulimits` holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Ulimit {
    /// `nofile`, `nproc`, ...
    pub name: String,
    /// Soft limit (-1: unlimited).
    pub soft: i64,
    /// Hard limit (-1: unlimited).
    pub hard: i64,
}

/// A `--ulimit` husk cannot use.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UlimitError {
    /// Not `NAME=SOFT[:HARD]` with numbers.
    #[error("invalid ulimit argument: {0}")]
    Syntax(String),
    /// An unknown name.
    #[error("invalid ulimit type: {0}")]
    Name(String),
    /// Soft above hard.
    #[error("ulimit soft limit must be less than or equal to hard limit: {0} > {1}")]
    SoftAboveHard(i64, i64),
}

/// docker's names and the kernel's resource numbers.
const RESOURCES: &[(&str, u32)] = &[
    ("core", 4),
    ("cpu", 0),
    ("data", 2),
    ("fsize", 1),
    ("locks", 10),
    ("memlock", 8),
    ("msgqueue", 12),
    ("nice", 13),
    ("nofile", 7),
    ("nproc", 6),
    ("rss", 5),
    ("rtprio", 14),
    ("rttime", 15),
    ("sigpending", 11),
    ("stack", 3),
];

impl Ulimit {
    /// Parses `NAME=SOFT[:HARD]`.
    pub fn parse(text: &str) -> Result<Self, UlimitError> {
        let syntax = || UlimitError::Syntax(text.to_owned());
        let (name, limits) = text.split_once('=').ok_or_else(syntax)?;
        if !RESOURCES.iter().any(|(n, _)| *n == name) {
            return Err(UlimitError::Name(name.to_owned()));
        }
        let (soft, hard) = limits.split_once(':').unwrap_or((limits, limits));
        let number = |s: &str| {
            s.parse::<i64>()
                .ok()
                .filter(|n| *n >= -1)
                .ok_or_else(syntax)
        };
        let (soft, hard) = (number(soft)?, number(hard)?);
        if hard != -1 && (soft == -1 || soft > hard) {
            return Err(UlimitError::SoftAboveHard(soft, hard));
        }
        Ok(Self {
            name: name.to_owned(),
            soft,
            hard,
        })
    }

    /// The agent's form (unknown names were refused when parsed).
    pub fn to_rlimit(&self) -> Option<agent_proto::Rlimit> {
        let resource = RESOURCES.iter().find(|(n, _)| *n == self.name)?.1;
        let value = |n: i64| u64::try_from(n).unwrap_or(u64::MAX);
        Some(agent_proto::Rlimit {
            resource,
            soft: value(self.soft),
            hard: value(self.hard),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockers_forms() {
        let u = Ulimit::parse("nofile=1024:2048").unwrap();
        assert_eq!((u.soft, u.hard), (1024, 2048));
        assert_eq!(u.to_rlimit().unwrap().resource, 7);
        assert_eq!(Ulimit::parse("nproc=100").unwrap().hard, 100);
        let inf = Ulimit::parse("core=-1").unwrap().to_rlimit().unwrap();
        assert_eq!((inf.soft, inf.hard), (u64::MAX, u64::MAX));
        assert_eq!(
            Ulimit::parse("bogus=1"),
            Err(UlimitError::Name("bogus".into()))
        );
        assert!(matches!(
            Ulimit::parse("nofile"),
            Err(UlimitError::Syntax(_))
        ));
        assert!(matches!(
            Ulimit::parse("nofile=x"),
            Err(UlimitError::Syntax(_))
        ));
        assert_eq!(
            Ulimit::parse("nofile=10:5"),
            Err(UlimitError::SoftAboveHard(10, 5))
        );
    }
}
