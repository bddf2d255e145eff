//! A sandbox's networks: one endpoint per network it is on (`eth0`, `eth1`, ... in the
//! sandbox), each with its address, published ports (the first network's) and, on user
//! networks, this shim's DNS responder. Joined when the sandbox is made, changed while it
//! runs (`network connect`/`disconnect`: the host end is wired, the VMM plugs the TAP into
//! a free NIC or the veth moves into the namespace, then the agent configures the
//! interface), and given back when it ends. `network.json` in the container directory
//! always lists what is held, so a killed shim's leftovers can be repaired.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use crate::agent_client::{AgentClient, ClientError, Endpoint as AgentEndpoint, lock};
use crate::network::dns::Responder;
use crate::network::ports::{PortBinding, Reservation};
use crate::network::{self, Attachment, Endpoint, NetworkError, Settings};

use super::vmctl::{self, NicRequest, VmctlError};

/// How the sandbox's interfaces reach it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// vm: TAPs plugged into the VMM's NICs.
    Tap,
    /// process: veth pairs into the network namespace of the agent with this pid.
    Veth(i32),
}

/// Errors changing a running sandbox's networks.
#[derive(Debug, thiserror::Error)]
pub enum WiringError {
    /// The network could not be joined or wired.
    #[error(transparent)]
    Network(#[from] NetworkError),
    /// Every interface slot is taken.
    #[error("container {0} is on {1} networks: a {2} container can be on at most {1}")]
    Full(String, usize, &'static str),
    /// The VMM could not plug or unplug the NIC.
    #[error(transparent)]
    Vmm(#[from] VmctlError),
    /// The agent could not configure the interface.
    #[error("the container could not configure its interface")]
    Agent(#[source] ClientError),
    /// The sandbox's workload is not running.
    #[error("container {0} is not running")]
    NotRunning(String),
}

/// One network the sandbox is on.
#[derive(Debug)]
struct Attached {
    ep: Endpoint,
    names: Vec<String>,
    _ports: Reservation,
    _dns: Option<Responder>,
}

/// The sandbox's networks and how to change them.
#[derive(Debug)]
pub struct Wiring {
    root: PathBuf,
    dir: PathBuf,
    id: String,
    name: String,
    /// `--dns` servers (where a user network's DNS forwards the container's questions).
    upstreams: Vec<Ipv4Addr>,
    /// Most networks at once (a vm's NICs).
    max: usize,
    kind: &'static str,
    nets: Mutex<Vec<Attached>>,
    /// Set (under the `nets` lock) when everything was given back: no more joins.
    closed: AtomicBool,
    wire: Mutex<Option<Wire>>,
    agent: Mutex<Option<Agent>>,
}

/// How live changes reach the sandbox's agent, and its resolv.conf.
#[derive(Debug, Clone)]
struct Agent {
    endpoint: AgentEndpoint,
    timeout: Duration,
    /// resolv.conf without a network's DNS server (the host's or `--dns` servers).
    base: String,
    /// What the container's resolv.conf holds now.
    current: String,
}

/// The container's resolv.conf on `nets`: its first user network's DNS server (which
/// answers for all its user networks), or `base` on none.
fn resolv_for<'a>(nets: impl Iterator<Item = &'a Endpoint>, base: &str) -> String {
    let dns = nets
        .filter(|ep| !ep.net.is_default())
        .min_by_key(|ep| ep.slot)
        .map(|ep| std::net::IpAddr::V4(ep.net.gateway));
    match dns {
        Some(server) => super::resolv::with_servers(base, &[server]),
        None => base.to_string(),
    }
}

impl Wiring {
    /// Nothing joined yet, for container `id` named `name` in directory `dir`.
    pub fn new(p: &super::Params, max: usize, kind: &'static str) -> Wiring {
        Wiring {
            root: super::state_root(&p.dir),
            dir: p.dir.clone(),
            id: p.id.clone(),
            name: p.name.clone(),
            upstreams: p
                .dns
                .iter()
                .filter_map(|d| match d {
                    std::net::IpAddr::V4(v4) => Some(*v4),
                    std::net::IpAddr::V6(_) => None,
                })
                .collect(),
            max,
            kind,
            nets: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
            wire: Mutex::new(None),
            agent: Mutex::new(None),
        }
    }

    fn nets(&self) -> MutexGuard<'_, Vec<Attached>> {
        lock(&self.nets)
    }

    /// Joins every network of `networks` in order (`eth0` first; `ports` are published on
    /// the first). On failure what was joined stays held: [`Wiring::leave_all`] gives it
    /// back.
    pub fn join_all(
        &self,
        networks: &[Attachment],
        ports: &[PortBinding],
    ) -> Result<(), WiringError> {
        if networks.len() > self.max {
            return Err(WiringError::Full(self.name.clone(), self.max, self.kind));
        }
        let mut nets = self.nets();
        for (slot, a) in networks.iter().enumerate() {
            let ports = if slot == 0 { ports } else { &[] };
            self.join(&mut nets, slot, a, ports)?;
        }
        Ok(())
    }

    /// Joins `a`'s network as interface `slot`: an address, ports, a DNS responder on a
    /// user network; recorded at once.
    fn join(
        &self,
        nets: &mut Vec<Attached>,
        slot: usize,
        a: &Attachment,
        ports: &[PortBinding],
    ) -> Result<Endpoint, NetworkError> {
        let names = self.dns_names(&a.aliases);
        let request = network::Request {
            ports: ports.to_vec(),
            ip: a.ipv4_address,
            names: names.clone(),
            upstreams: self.upstreams.clone(),
        };
        let (ep, held) = network::attach(&self.root, &a.network, &self.id, slot, &request)?;
        let dns = match ep.net.is_default() {
            true => None,
            false => {
                let host = super::resolv::host_resolvers();
                match Responder::start(&self.root, &ep.net, host) {
                    Ok(r) => Some(r),
                    Err(e) => {
                        network::detach(&self.root, &ep);
                        return Err(e.into());
                    }
                }
            }
        };
        nets.push(Attached {
            ep: ep.clone(),
            names,
            _ports: held,
            _dns: dns,
        });
        self.record(nets);
        Ok(ep)
    }

    /// The container's DNS names on a user network: its name, `aliases`, its short ID.
    fn dns_names(&self, aliases: &[String]) -> Vec<String> {
        let mut names = vec![self.name.clone()];
        let short = self.id[..self.id.len().min(12)].to_string();
        for n in aliases.iter().chain(std::iter::once(&short)) {
            if !names.contains(n) {
                names.push(n.clone());
            }
        }
        names
    }

    fn record(&self, nets: &[Attached]) {
        let all: Vec<Settings> = nets.iter().map(|a| Settings::of(&a.ep, &a.names)).collect();
        network::record(&self.dir, &all);
    }

    /// The endpoints held, `eth0`'s first.
    pub fn endpoints(&self) -> Vec<Endpoint> {
        let mut eps: Vec<Endpoint> = self.nets().iter().map(|a| a.ep.clone()).collect();
        eps.sort_by_key(|e| e.slot);
        eps
    }

    /// vm: makes every endpoint's TAP, before the VMM opens them.
    pub fn make_taps(&self) -> Result<(), NetworkError> {
        *lock(&self.wire) = Some(Wire::Tap);
        self.endpoints().iter().try_for_each(network::plug_tap)
    }

    /// process: moves every endpoint's veth into the namespace of agent `pid`.
    pub fn plug_veths(&self, pid: i32) -> Result<(), NetworkError> {
        *lock(&self.wire) = Some(Wire::Veth(pid));
        self.endpoints()
            .iter()
            .try_for_each(|ep| network::plug_veth(ep, pid))
    }

    /// The container's resolv.conf for the networks it is on: `base` (the host's or
    /// `--dns` servers) with the first user network's DNS server instead, if any.
    pub fn resolv_conf(&self, base: &str) -> String {
        resolv_for(self.nets().iter().map(|a| &a.ep), base)
    }

    /// The agent is set up with `resolv` (from `base`): live changes may configure
    /// interfaces through `endpoint`.
    pub fn set_agent(&self, endpoint: AgentEndpoint, timeout: Duration, base: &str, resolv: &str) {
        *lock(&self.agent) = Some(Agent {
            endpoint,
            timeout,
            base: base.to_string(),
            current: resolv.to_string(),
        });
    }

    fn agent(&self) -> Option<Agent> {
        lock(&self.agent).clone()
    }

    /// Asks the agent to change interfaces, with the resolv.conf `nets` need if it
    /// changes; the container directory's copy follows.
    fn tell_agent(
        &self,
        agent: &Agent,
        nets: &[&Endpoint],
        add: Vec<agent_proto::InterfaceSpec>,
        remove: Vec<agent_proto::InterfaceSpec>,
    ) -> Result<(), ClientError> {
        let resolv = resolv_for(nets.iter().copied(), &agent.base);
        let changed = (resolv != agent.current).then_some(resolv);
        AgentClient::connect(&agent.endpoint, agent.timeout)?
            .with_request_timeout(agent.timeout)
            .network(add, remove, changed.clone())?;
        if let Some(resolv) = changed {
            let path = self.dir.join(crate::container::files::RESOLV_CONF);
            let _ = std::fs::write(path, &resolv);
            if let Some(a) = lock(&self.agent).as_mut() {
                a.current = resolv;
            }
        }
        Ok(())
    }

    /// `network connect` of the running container: joins `a`'s network as its lowest free
    /// interface, wires it and has the agent configure it; already on it is done. On
    /// failure nothing is left.
    pub fn connect(&self, a: &Attachment) -> Result<(), WiringError> {
        let wire = (*lock(&self.wire)).ok_or_else(|| WiringError::NotRunning(self.name.clone()))?;
        let net = network::defs::find(&self.root, &a.network).map_err(NetworkError::from)?;
        let mut nets = self.nets();
        let agent = self
            .agent()
            .filter(|_| !self.closed.load(Ordering::Acquire))
            .ok_or_else(|| WiringError::NotRunning(self.name.clone()))?;
        // A sandbox made after the configuration named the network has it already.
        if nets.iter().any(|x| x.ep.net.id == net.id) {
            return Ok(());
        }
        let slot = (0..self.max)
            .find(|s| nets.iter().all(|x| x.ep.slot != *s))
            .ok_or_else(|| WiringError::Full(self.name.clone(), self.max, self.kind))?;
        let ep = self.join(&mut nets, slot, a, &[])?;
        let wired = self.wire_up(wire, &ep).and_then(|()| {
            let all: Vec<&Endpoint> = nets.iter().map(|a| &a.ep).collect();
            self.tell_agent(&agent, &all, vec![ep.interface()], vec![])
                .map_err(WiringError::Agent)
        });
        if let Err(e) = wired {
            // The guest may have taken part of the change: take it back (best effort).
            let rest: Vec<&Endpoint> = nets
                .iter()
                .map(|x| &x.ep)
                .filter(|x| x.slot != slot)
                .collect();
            let _ = self.tell_agent(&agent, &rest, vec![], vec![ep.interface()]);
            if wire == Wire::Tap {
                let _ = self.unplug_nic(slot);
            }
            self.drop_endpoint(&mut nets, slot);
            return Err(e);
        }
        Ok(())
    }

    fn wire_up(&self, wire: Wire, ep: &Endpoint) -> Result<(), WiringError> {
        match wire {
            Wire::Tap => {
                network::plug_tap(ep)?;
                let req = NicRequest {
                    nic: ep.slot,
                    tap: Some(ep.link.clone()),
                    mac: ep.mac,
                };
                Ok(vmctl::request(&self.dir, &req)?)
            }
            Wire::Veth(pid) => Ok(network::plug_veth(ep, pid)?),
        }
    }

    fn unplug_nic(&self, slot: usize) -> Result<(), VmctlError> {
        let req = NicRequest {
            nic: slot,
            tap: None,
            mac: super::vm::UNPLUGGED_MAC,
        };
        vmctl::request(&self.dir, &req)
    }

    /// Gives back the endpoint in `slot` (its link, address, ports and DNS responder).
    fn drop_endpoint(&self, nets: &mut Vec<Attached>, slot: usize) {
        if let Some(at) = nets.iter().position(|x| x.ep.slot == slot) {
            let gone = nets.remove(at);
            network::detach(&self.root, &gone.ep);
            self.record(nets);
        }
    }

    /// `network disconnect` of the running container: the agent takes the interface
    /// down (and routes through the networks left, so a default route survives), the VMM
    /// unplugs the NIC (vm), and the endpoint is given back; not on it is done. The
    /// container is off the network even if the agent or the VMM failed (the link is
    /// deleted).
    pub fn disconnect(&self, network: &str) -> Result<(), WiringError> {
        let net = network::defs::find(&self.root, network).map_err(NetworkError::from)?;
        let mut nets = self.nets();
        let Some(ep) = nets
            .iter()
            .find(|x| x.ep.net.id == net.id)
            .map(|x| x.ep.clone())
        else {
            // A sandbox made after the configuration dropped the network lacks it.
            return Ok(());
        };
        if let Some(agent) = self.agent() {
            let rest: Vec<&Endpoint> = nets
                .iter()
                .map(|a| &a.ep)
                .filter(|e| e.slot != ep.slot)
                .collect();
            let again = rest.iter().map(|e| e.interface()).collect();
            let down = self.tell_agent(&agent, &rest, again, vec![ep.interface()]);
            if let Err(e) = down {
                log::warn!("{}", agent_proto::error_chain(&WiringError::Agent(e)));
            }
        }
        let wire = *lock(&self.wire);
        if wire == Some(Wire::Tap)
            && let Err(e) = self.unplug_nic(ep.slot)
        {
            log::warn!("{}", agent_proto::error_chain(&e));
        }
        self.drop_endpoint(&mut nets, ep.slot);
        Ok(())
    }

    /// Gives back every endpoint (the sandbox ended).
    pub fn leave_all(&self) {
        let mut nets = self.nets();
        self.closed.store(true, Ordering::Release);
        for a in nets.drain(..) {
            network::detach(&self.root, &a.ep);
        }
        network::record(&self.dir, &[]);
    }
}
