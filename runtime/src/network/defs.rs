//! Network definitions: the built-in `bridge` and the user networks `husk network create`
//! makes, one JSON file each, `<root>/networks/<id>.json`. A definition is only words:
//! its bridge, rules and DNS come to life with its first container and go with the last
//! (`network::attach`/`detach`). Every change happens under the networks' lock
//! (`<root>/networks/networks.lock`), which `attach` and `detach` take too, so a network
//! is never removed while a container joins it.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use super::subnet::{Subnet, SubnetError};

/// The default network's name.
pub const BRIDGE: &str = "bridge";
/// The default network's ID (fixed: it is made by no one).
pub const BRIDGE_ID: &str = "6875736b2d6272696467652d64656661756c742d6e6574776f726b2d30303031";
/// Names `--network` gives other meanings to.
const RESERVED: &[&str] = &[BRIDGE, "default", "host", "none"];

/// Errors about network definitions.
#[derive(Debug, thiserror::Error)]
pub enum DefError {
    /// No network of that name or ID.
    #[error("network {0} not found")]
    NotFound(String),
    /// The ID prefix names several networks.
    #[error("network {0} is ambiguous: it matches more than one network ID")]
    Ambiguous(String),
    /// A network of that name exists.
    #[error("network with name {0} already exists")]
    NameTaken(String),
    /// A name docker would refuse, or one `--network` reserves.
    #[error(
        "invalid network name {0:?}: use [a-zA-Z0-9][a-zA-Z0-9_.-]* and none of bridge, default, host, none"
    )]
    BadName(String),
    /// `rm` of the default network.
    #[error("{0} is a pre-defined network and cannot be removed")]
    Predefined(String),
    /// `rm` of a network containers are running on.
    #[error("network {name} has active endpoints: container {container} is running on it")]
    InUse {
        /// The network.
        name: String,
        /// One of its running containers.
        container: String,
    },
    /// A bad `--subnet` or `--gateway`.
    #[error(transparent)]
    Subnet(#[from] SubnetError),
    /// `--gateway` without `--subnet`.
    #[error("--gateway needs --subnet")]
    GatewayWithoutSubnet,
    /// The subnet overlaps another network's.
    #[error("subnet {subnet} overlaps network {other} ({other_subnet})")]
    Overlap {
        /// Asked for.
        subnet: Subnet,
        /// The network it overlaps.
        other: String,
        /// That network's subnet.
        other_subnet: Subnet,
    },
    /// No default subnet is free.
    #[error("no free subnet left in 10.89.0.0/16: give one with --subnet")]
    NoFreeSubnet,
    /// The state directory could not be read or written.
    #[error("cannot use the network definitions in {0}")]
    Io(PathBuf, #[source] std::io::Error),
}

/// One network.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Net {
    /// 64 hex digits.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Its addresses.
    pub subnet: Subnet,
    /// The bridge's address: containers' default route and DNS server.
    pub gateway: Ipv4Addr,
    /// `--internal`: no traffic in or out of the network but to its own members.
    #[serde(default)]
    pub internal: bool,
    /// RFC 3339.
    #[serde(default)]
    pub created: String,
    /// `--label`s.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl Net {
    /// The default `bridge` network.
    pub fn default_bridge() -> Net {
        let subnet = Subnet {
            addr: Ipv4Addr::new(10, 88, 0, 0),
            prefix: 16,
        };
        Net {
            id: BRIDGE_ID.into(),
            name: BRIDGE.into(),
            gateway: subnet.first_host(),
            subnet,
            internal: false,
            created: String::new(),
            labels: BTreeMap::new(),
        }
    }

    /// Whether this is the default network (no name resolution, no aliases, no `--ip`:
    /// docker's rules).
    pub fn is_default(&self) -> bool {
        self.id == BRIDGE_ID
    }

    /// Its bridge interface: `husk0`, or `hb-` and 12 digits of the ID.
    pub fn iface(&self) -> String {
        match self.is_default() {
            true => "husk0".into(),
            false => format!("hb-{}", &self.id[..12]),
        }
    }

    /// Its address pool's directory.
    pub fn pool(&self, root: &Path) -> PathBuf {
        let dir = match self.is_default() {
            true => BRIDGE,
            false => &self.id,
        };
        root.join("networks").join(dir)
    }
}

/// The directory of the definitions.
fn dir(root: &Path) -> PathBuf {
    root.join("networks")
}

/// Takes the networks' lock (held until the file is dropped).
pub fn lock(root: &Path) -> Result<File, DefError> {
    let d = dir(root);
    let fail = |e| DefError::Io(d.clone(), e);
    std::fs::create_dir_all(&d).map_err(fail)?;
    let f = File::create(d.join("networks.lock")).map_err(fail)?;
    f.lock().map_err(fail)?;
    Ok(f)
}

/// Every network: the default first, then the user networks by name.
pub fn list(root: &Path) -> Result<Vec<Net>, DefError> {
    let d = dir(root);
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(&d) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(vec![Net::default_bridge()]);
        }
        Err(e) => return Err(DefError::Io(d, e)),
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "json")
            && let Some(net) = read(&path)
        {
            out.push(net);
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out.insert(0, Net::default_bridge());
    Ok(out)
}

/// A definition file (a damaged one is skipped: it names no usable network).
fn read(path: &Path) -> Option<Net> {
    let mut text = String::new();
    File::open(path).ok()?.read_to_string(&mut text).ok()?;
    let net: Net = serde_json::from_str(&text).ok()?;
    let named_right = path.file_stem().is_some_and(|s| s == net.id.as_str());
    (named_right && net.id.len() == 64 && net.id.bytes().all(|b| b.is_ascii_hexdigit()))
        .then_some(net)
}

/// The network `query` names: a name, a full ID or an unambiguous ID prefix.
pub fn find(root: &Path, query: &str) -> Result<Net, DefError> {
    let nets = list(root)?;
    if let Some(n) = nets.iter().find(|n| n.name == query || n.id == query) {
        return Ok(n.clone());
    }
    let by_prefix: Vec<&Net> = match query.is_empty() {
        true => Vec::new(),
        false => nets.iter().filter(|n| n.id.starts_with(query)).collect(),
    };
    match by_prefix.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(DefError::NotFound(query.to_string())),
        _ => Err(DefError::Ambiguous(query.to_string())),
    }
}

/// What `husk network create` asks for.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    /// The name.
    pub name: String,
    /// `--subnet` (default: the first free /24 of 10.89.0.0/16).
    pub subnet: Option<String>,
    /// `--gateway` (default: the subnet's first address).
    pub gateway: Option<String>,
    /// `--internal`.
    pub internal: bool,
    /// `--label`s.
    pub labels: BTreeMap<String, String>,
}

/// Defines a user network (nothing is made in the kernel until a container joins it).
pub fn create(root: &Path, o: &CreateOptions) -> Result<Net, DefError> {
    if !valid_name(&o.name) {
        return Err(DefError::BadName(o.name.clone()));
    }
    let _lock = lock(root)?;
    let nets = list(root)?;
    if nets.iter().any(|n| n.name == o.name) {
        return Err(DefError::NameTaken(o.name.clone()));
    }
    let subnet = match &o.subnet {
        Some(s) => {
            let subnet = Subnet::parse(s)?;
            if let Some(other) = nets.iter().find(|n| n.subnet.overlaps(&subnet)) {
                return Err(DefError::Overlap {
                    subnet,
                    other: other.name.clone(),
                    other_subnet: other.subnet,
                });
            }
            subnet
        }
        None if o.gateway.is_some() => return Err(DefError::GatewayWithoutSubnet),
        None => free_subnet(&nets)?,
    };
    let gateway = match &o.gateway {
        Some(g) => subnet.gateway(g)?,
        None => subnet.first_host(),
    };
    let net = Net {
        id: new_id(&dir(root))?,
        name: o.name.clone(),
        subnet,
        gateway,
        internal: o.internal,
        created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        labels: o.labels.clone(),
    };
    write(root, &net)?;
    Ok(net)
}

/// Docker's name rule, less the names `--network` reserves.
fn valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && bytes.all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        && !RESERVED.contains(&name)
        && name.len() <= 128
}

/// The first /24 of 10.89.0.0/16 no network overlaps.
fn free_subnet(nets: &[Net]) -> Result<Subnet, DefError> {
    (0..=255u8)
        .map(|n| Subnet {
            addr: Ipv4Addr::new(10, 89, n, 0),
            prefix: 24,
        })
        .find(|s| !nets.iter().any(|n| n.subnet.overlaps(s)))
        .ok_or(DefError::NoFreeSubnet)
}

/// A fresh 64-hex-digit ID.
fn new_id(dir: &Path) -> Result<String, DefError> {
    let mut bytes = [0u8; 32];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| DefError::Io(dir.to_path_buf(), e))?;
    Ok(hex::encode(bytes))
}

/// Writes `net`'s definition whole (temporary file, then rename).
fn write(root: &Path, net: &Net) -> Result<(), DefError> {
    let d = dir(root);
    let fail = |e| DefError::Io(d.clone(), e);
    let json = serde_json::to_vec_pretty(net).map_err(|e| fail(e.into()))?;
    let tmp = d.join(format!(".{}.tmp", net.id));
    std::fs::write(&tmp, json).map_err(fail)?;
    std::fs::rename(&tmp, d.join(format!("{}.json", net.id))).map_err(fail)
}

/// Removes a user network no container runs on (the caller holds the lock and has
/// checked). Its pool directory goes too.
pub fn remove(root: &Path, net: &Net) -> Result<(), DefError> {
    if net.is_default() {
        return Err(DefError::Predefined(net.name.clone()));
    }
    let d = dir(root);
    std::fs::remove_file(d.join(format!("{}.json", net.id))).map_err(|e| DefError::Io(d, e))?;
    let _ = std::fs::remove_dir_all(net.pool(root));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(name: &str, subnet: Option<&str>) -> CreateOptions {
        CreateOptions {
            name: name.into(),
            subnet: subnet.map(Into::into),
            ..CreateOptions::default()
        }
    }

    #[test]
    fn networks_are_defined_found_and_refused_like_docker() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        assert_eq!(list(root).unwrap(), [Net::default_bridge()]);
        let a = create(root, &opts("a", None)).unwrap();
        assert_eq!(a.subnet.to_string(), "10.89.0.0/24");
        assert_eq!(a.gateway, Ipv4Addr::new(10, 89, 0, 1));
        assert!(a.iface().starts_with("hb-") && a.iface().len() == 15);
        let b = create(root, &opts("b", None)).unwrap();
        assert_eq!(b.subnet.to_string(), "10.89.1.0/24");
        assert_eq!(find(root, "a").unwrap(), a);
        assert_eq!(find(root, &a.id[..10]).unwrap(), a);
        assert_eq!(find(root, "bridge").unwrap(), Net::default_bridge());
        let e = |r: Result<Net, DefError>| r.unwrap_err().to_string();
        assert_eq!(e(find(root, "nope")), "network nope not found");
        assert_eq!(
            e(create(root, &opts("a", None))),
            "network with name a already exists"
        );
        assert_eq!(
            e(create(root, &opts("c", Some("10.0.0.0/8")))),
            "subnet 10.0.0.0/8 overlaps network bridge (10.88.0.0/16)"
        );
        assert_eq!(
            e(create(root, &opts("c", Some("10.89.1.128/25")))),
            "subnet 10.89.1.128/25 overlaps network b (10.89.1.0/24)"
        );
        assert!(e(create(root, &opts("host", None))).starts_with("invalid network name"));
        assert!(e(create(root, &opts("-x", None))).starts_with("invalid network name"));
        let gw = CreateOptions {
            gateway: Some("10.1.0.1".into()),
            ..opts("c", None)
        };
        assert_eq!(e(create(root, &gw)), "--gateway needs --subnet");
        let custom = CreateOptions {
            gateway: Some("192.168.7.254".into()),
            internal: true,
            ..opts("c", Some("192.168.7.0/24"))
        };
        let c = create(root, &custom).unwrap();
        assert_eq!(c.gateway, Ipv4Addr::new(192, 168, 7, 254));
        assert!(c.internal);
        remove(root, &a).unwrap();
        assert_eq!(
            list(root)
                .unwrap()
                .iter()
                .map(|n| n.name.as_str())
                .collect::<Vec<_>>(),
            ["bridge", "b", "c"]
        );
        assert_eq!(
            remove(root, &Net::default_bridge())
                .unwrap_err()
                .to_string(),
            "bridge is a pre-defined network and cannot be removed"
        );
        // A damaged definition names nothing.
        std::fs::write(
            root.join("networks")
                .join(format!("{}.json", "0".repeat(64))),
            "{",
        )
        .unwrap();
        assert_eq!(list(root).unwrap().len(), 3);
    }
}
