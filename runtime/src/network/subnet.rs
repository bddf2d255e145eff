//! IPv4 subnets as `husk network create --subnet` takes them: parsing with docker's
//! complaints, containment, overlap, and the addresses a network hands out.

use std::fmt;
use std::net::Ipv4Addr;

/// Errors in a `--subnet` or `--gateway`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SubnetError {
    /// Not `A.B.C.D/N`.
    #[error("invalid subnet {0:?}: not an IPv4 CIDR such as 10.1.0.0/24")]
    Syntax(String),
    /// Host bits are set.
    #[error("invalid subnet {given}: it should be {canonical}")]
    HostBits {
        /// As typed.
        given: String,
        /// With the host bits cleared.
        canonical: Subnet,
    },
    /// Too small to hold a gateway and a container, or too large to be sensible.
    #[error("invalid subnet {0}: the prefix length must be between 8 and 30")]
    Size(Subnet),
    /// A gateway that is not an IPv4 address.
    #[error("invalid gateway {0:?}: not an IPv4 address")]
    GatewaySyntax(String),
    /// A gateway outside the subnet or on its network or broadcast address.
    #[error("invalid gateway {gateway}: not a host address of subnet {subnet}")]
    GatewayOutside {
        /// The gateway.
        gateway: Ipv4Addr,
        /// The subnet.
        subnet: Subnet,
    },
}

/// An IPv4 network: address (host bits clear) and prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Subnet {
    /// The network address.
    pub addr: Ipv4Addr,
    /// The prefix length.
    pub prefix: u8,
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Subnet {
    /// Parses `A.B.C.D/N` (8 ≤ N ≤ 30, host bits clear).
    pub fn parse(s: &str) -> Result<Subnet, SubnetError> {
        let syntax = || SubnetError::Syntax(s.to_string());
        let (addr, prefix) = s.split_once('/').ok_or_else(syntax)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| syntax())?;
        let prefix: u8 = prefix.parse().map_err(|_| syntax())?;
        if prefix > 32 {
            return Err(syntax());
        }
        let canonical = Subnet {
            addr: Ipv4Addr::from(u32::from(addr) & mask(prefix)),
            prefix,
        };
        if canonical.addr != addr {
            return Err(SubnetError::HostBits {
                given: s.to_string(),
                canonical,
            });
        }
        if !(8..=30).contains(&prefix) {
            return Err(SubnetError::Size(canonical));
        }
        Ok(canonical)
    }

    /// Whether `ip` is a host address of the subnet (not its network or broadcast
    /// address).
    pub fn has_host(&self, ip: Ipv4Addr) -> bool {
        let n = u32::from(ip);
        n & mask(self.prefix) == u32::from(self.addr)
            && n != u32::from(self.addr)
            && n != self.broadcast()
    }

    /// Whether the two share an address.
    pub fn overlaps(&self, other: &Subnet) -> bool {
        let m = mask(self.prefix.min(other.prefix));
        u32::from(self.addr) & m == u32::from(other.addr) & m
    }

    /// The first host address (docker's default gateway).
    pub fn first_host(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) + 1)
    }

    /// The host addresses, lowest first.
    pub fn hosts(&self) -> impl Iterator<Item = Ipv4Addr> {
        (u32::from(self.addr) + 1..self.broadcast()).map(Ipv4Addr::from)
    }

    fn broadcast(&self) -> u32 {
        u32::from(self.addr) | !mask(self.prefix)
    }

    /// Parses `--gateway` for this subnet.
    pub fn gateway(&self, s: &str) -> Result<Ipv4Addr, SubnetError> {
        let gateway: Ipv4Addr = s
            .parse()
            .map_err(|_| SubnetError::GatewaySyntax(s.to_string()))?;
        match self.has_host(gateway) {
            true => Ok(gateway),
            false => Err(SubnetError::GatewayOutside {
                gateway,
                subnet: *self,
            }),
        }
    }
}

fn mask(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Subnet {
        Subnet::parse(s).unwrap()
    }

    #[test]
    fn subnets_parse_with_docker_like_complaints() {
        assert_eq!(net("10.1.0.0/24").to_string(), "10.1.0.0/24");
        assert_eq!(
            Subnet::parse("10.1.2.3/24").unwrap_err().to_string(),
            "invalid subnet 10.1.2.3/24: it should be 10.1.2.0/24"
        );
        for bad in [
            "10.1.0.0",
            "10.1.0.0/33",
            "nope/8",
            "10.1.0/24",
            "10.1.0.0/x",
            "",
        ] {
            assert!(
                matches!(Subnet::parse(bad), Err(SubnetError::Syntax(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            Subnet::parse("10.1.0.0/31"),
            Err(SubnetError::Size(_))
        ));
        assert!(matches!(
            Subnet::parse("0.0.0.0/0"),
            Err(SubnetError::Size(_))
        ));
    }

    #[test]
    fn overlap_containment_and_gateways() {
        assert!(net("10.0.0.0/8").overlaps(&net("10.88.0.0/16")));
        assert!(net("10.88.0.0/16").overlaps(&net("10.0.0.0/8")));
        assert!(!net("10.89.0.0/24").overlaps(&net("10.89.1.0/24")));
        let n = net("10.89.0.0/24");
        assert!(n.has_host(Ipv4Addr::new(10, 89, 0, 1)));
        assert!(!n.has_host(Ipv4Addr::new(10, 89, 0, 0)));
        assert!(!n.has_host(Ipv4Addr::new(10, 89, 0, 255)));
        assert!(!n.has_host(Ipv4Addr::new(10, 89, 1, 1)));
        assert_eq!(
            n.gateway("10.89.0.254").unwrap(),
            Ipv4Addr::new(10, 89, 0, 254)
        );
        assert_eq!(
            n.gateway("10.90.0.1").unwrap_err().to_string(),
            "invalid gateway 10.90.0.1: not a host address of subnet 10.89.0.0/24"
        );
        assert_eq!(n.hosts().count(), 254);
        assert_eq!(net("10.1.0.0/30").hosts().count(), 2);
    }
}
