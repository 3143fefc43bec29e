//! loci-sim: many loci-core nodes in one process on virtual time.
//!
//! Nodes own IP addresses; a datagram a node emits is delivered to the node that owns its
//! destination after the link delay (or lost, or dropped by a partition). Endpoints are bare
//! addresses that only record what reaches them (a `lig` client, a host). Every delivery is
//! recorded in the trace. Same seed, same configuration: the same run, byte for byte.
//!
//! Data plane: a host attached to an xTR ([`Sim::add_host`]) sends IP packets
//! ([`Sim::send_packet`]) to that xTR, whose ITR looks them up in its map-cache, reports misses
//! to its node and encapsulates; the ETR that owns the outer destination decapsulates and hands
//! the inner packet to its host of that instance ID. Both steps are loci-core's functions, as
//! in the real data plane (see [`xtr`]).
//!
//! Proxies (RFC 6832): [`Sim::set_proxy`] gives an ITR its PETRs and a PETR its relay policy;
//! [`Sim::announce`] has a PITR announce an EID prefix into the underlay, so native packets to
//! the prefix's addresses reach its ITR.
//!
//! Mobility: [`Sim::move_host`] moves a host behind other xTRs and has it send a gratuitous
//! ARP there; from then on its packets are reported as a host seen on its site interface, and
//! ETRs re-encapsulate packets for hosts that moved away (see [`xtr`]).
#![forbid(unsafe_code)]

pub mod packet;
pub mod scenario;
pub mod xtr;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use loci_core::config::NodeConfig;
use loci_core::node::{Node, CONTROL_PORT};
use loci_wire::data::LISP_DATA_PORT;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::packet::Summary;
use crate::xtr::{DataPlane, Handling, Out};

/// Index of a node or endpoint in the simulation.
pub type Id = usize;

/// What a trace entry's `data` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carried {
    /// A UDP payload (control messages): what the receiving socket reads.
    Datagram,
    /// A whole IP packet: a host's packet to or from its xTR, a natively forwarded one, or a
    /// LISP-encapsulated one (outer IP, UDP to port 4341, LISP header, inner packet).
    Packet,
}

/// One datagram or packet the network carried (or lost).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceEntry {
    /// Virtual time since the start of the run.
    pub sent: Duration,
    pub delivered: Option<Duration>,
    pub from: Id,
    pub to: Option<Id>,
    /// Addresses and ports (0 for packets without ports).
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub carried: Carried,
    pub data: Vec<u8>,
}

impl TraceEntry {
    /// A LISP-encapsulated data packet.
    pub fn is_encapsulated(&self) -> bool {
        self.carried == Carried::Packet && self.dst.port() == LISP_DATA_PORT
    }
}

enum Host {
    Node(Box<Node>),
    /// Records what it receives.
    Endpoint(Vec<(Duration, SocketAddr, SocketAddr, Vec<u8>)>),
}

struct Member {
    name: String,
    addrs: Vec<IpAddr>,
    host: Host,
    /// An xTR's data plane (created when a host is attached to it).
    data_plane: Option<DataPlane>,
    /// A host's site.
    site: Option<Site>,
    /// A host that is a dynamic EID: the site interface its xTR sees its packets on.
    interface: Option<String>,
}

impl Member {
    /// The data plane of a node, created on first use; `None` for anything but a node.
    fn data_plane_mut(&mut self) -> Option<&mut DataPlane> {
        let Host::Node(node) = &self.host else { return None };
        let addrs = &self.addrs;
        Some(self.data_plane.get_or_insert_with(|| DataPlane::new(addrs, node)))
    }
}

/// Where a host sits: behind these xTRs (the first is its gateway), in this instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    pub xtrs: Vec<Id>,
    pub iid: u32,
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Pending {
    at: Instant,
    seq: u64,
    trace: usize,
}

pub struct Sim {
    start: Instant,
    now: Instant,
    members: Vec<Member>,
    queue: BinaryHeap<Reverse<Pending>>,
    seq: u64,
    trace: Vec<TraceEntry>,
    rng: StdRng,
    delay: Duration,
    link_delay: BTreeMap<(Id, Id), Duration>,
    loss: f64,
    partitioned: BTreeSet<(Id, Id)>,
    /// What the xTRs did with each packet delivered to them, by trace index.
    handled: BTreeMap<usize, Handling>,
    /// EID prefixes announced into the underlay by PITRs ([`Sim::announce`]).
    announced: Vec<(Id, loci_core::eid::EidPrefix)>,
}

impl Sim {
    /// An empty network with 1 ms links and no loss.
    pub fn new(seed: u64) -> Self {
        let start = Instant::now();
        Sim {
            start,
            now: start,
            members: Vec::new(),
            queue: BinaryHeap::new(),
            seq: 0,
            trace: Vec::new(),
            rng: StdRng::seed_from_u64(seed),
            delay: Duration::from_millis(1),
            link_delay: BTreeMap::new(),
            loss: 0.0,
            partitioned: BTreeSet::new(),
            handled: BTreeMap::new(),
            announced: Vec::new(),
        }
    }

    /// Adds a node running `config` on `addrs`.
    pub fn add_node(&mut self, config: NodeConfig, addrs: &[IpAddr]) -> Id {
        let seed = self.rng.gen();
        let name = config.name.clone();
        let node = Node::new(config, seed, self.now);
        self.push(name, addrs, Host::Node(Box::new(node)), None)
    }

    /// Replaces node `id` by a fresh one running `config` (a restart: its state is lost; its
    /// addresses and links stay).
    pub fn restart_node(&mut self, id: Id, config: NodeConfig) {
        let seed = self.rng.gen();
        let node = Node::new(config, seed, self.now);
        if let Some(dp) = &mut self.members[id].data_plane {
            dp.attach(&node);
        }
        self.members[id].host = Host::Node(Box::new(node));
    }

    /// Adds an endpoint that only records what it receives.
    pub fn add_endpoint(&mut self, name: &str, addrs: &[IpAddr]) -> Id {
        self.push(name.into(), addrs, Host::Endpoint(Vec::new()), None)
    }

    /// Adds a host with EID `eid` in instance `iid` of a site behind the xTR nodes `xtrs`: its
    /// packets go to the first one's ITR, and their ETRs deliver the packets for `eid` in `iid`
    /// to it. Their data planes serve `iid` from then on. Returns `None` (adding nothing) when
    /// `xtrs` is empty or names something other than a node.
    pub fn add_host(&mut self, name: &str, eid: IpAddr, iid: u32, xtrs: &[Id]) -> Option<Id> {
        let nodes = xtrs.iter().all(|&x| matches!(self.members.get(x).map(|m| &m.host), Some(Host::Node(_))));
        if xtrs.is_empty() || !nodes {
            return None;
        }
        self.attach(xtrs, iid);
        let site = Site { xtrs: xtrs.to_vec(), iid };
        Some(self.push(name.into(), &[eid], Host::Endpoint(Vec::new()), Some(site)))
    }

    /// Moves host `host` (a VM migrating) behind the xTR nodes `xtrs` (its gateway first; in
    /// extended-subnet mode add the xTRs that still reach it over the LAN extension), on their
    /// site interface `interface`: from now on every packet it sends is reported there as a
    /// host seen (`Node::handle_host_seen`), as the real data plane does, and at once it sends
    /// a gratuitous ARP to its gateway, as a hypervisor does after a move. The first call makes
    /// a host a dynamic EID where it stands. Returns false (changing nothing) when `host` is
    /// not a host or `xtrs` is empty or names something other than a node.
    pub fn move_host(&mut self, host: Id, xtrs: &[Id], interface: &str) -> bool {
        let nodes = xtrs.iter().all(|&x| matches!(self.members.get(x).map(|m| &m.host), Some(Host::Node(_))));
        let Some(iid) = self.members.get(host).and_then(|m| m.site.as_ref()).map(|s| s.iid) else { return false };
        if xtrs.is_empty() || !nodes {
            return false;
        }
        self.attach(xtrs, iid);
        let m = &mut self.members[host];
        m.site = Some(Site { xtrs: xtrs.to_vec(), iid });
        m.interface = Some(interface.into());
        let eid = m.addrs[0];
        // A gratuitous ARP: the host announces its own address (sender = target).
        self.enqueue_packet(host, Some(xtrs[0]), packet::udp(eid, 0, eid, 0, b""))
    }

    /// Gives the xTR nodes `xtrs` a data plane serving instance `iid`.
    fn attach(&mut self, xtrs: &[Id], iid: u32) {
        for &x in xtrs {
            let now = self.now;
            if let Some(dp) = self.members[x].data_plane_mut() {
                dp.add_instance(iid, now);
            }
        }
    }

    /// Gives node `id` PETRs and relaying, as `xtr.petr` and the petr role do (RFC 6832).
    /// Returns false (changing nothing) when `id` is not a node.
    pub fn set_proxy(&mut self, id: Id, proxy: loci_core::petr::Proxy) -> bool {
        let now = self.now;
        let Some(dp) = self.members.get_mut(id).and_then(Member::data_plane_mut) else { return false };
        dp.set_proxy(proxy, now);
        true
    }

    /// Has node `pitr` announce `prefix` into the underlay, as a PITR does with a route (RFC
    /// 6832): native packets to an address of the prefix that no member owns go to it, and its
    /// ITR handles them in the prefix's instance. Returns false (changing nothing) when `pitr`
    /// is not a node.
    pub fn announce(&mut self, pitr: Id, prefix: loci_core::eid::EidPrefix) -> bool {
        if !matches!(self.members.get(pitr).map(|m| &m.host), Some(Host::Node(_))) {
            return false;
        }
        self.attach(&[pitr], prefix.iid);
        self.announced.push((pitr, prefix));
        true
    }

    fn push(&mut self, name: String, addrs: &[IpAddr], host: Host, site: Option<Site>) -> Id {
        self.members.push(Member { name, addrs: addrs.to_vec(), host, data_plane: None, site, interface: None });
        self.members.len() - 1
    }

    /// Default one-way delay of every link.
    pub fn set_delay(&mut self, d: Duration) {
        self.delay = d;
    }

    /// One-way delay between two members (both directions).
    pub fn set_link_delay(&mut self, a: Id, b: Id, d: Duration) {
        self.link_delay.insert((a, b), d);
        self.link_delay.insert((b, a), d);
    }

    /// Probability that any datagram is lost.
    pub fn set_loss(&mut self, p: f64) {
        self.loss = p;
    }

    /// Cuts (or, with `false`, restores) the path between two members.
    pub fn partition(&mut self, a: Id, b: Id, cut: bool) {
        self.partition_one_way(a, b, cut);
        self.partition_one_way(b, a, cut);
    }

    /// Cuts (or restores) only what `from` sends to `to`.
    pub fn partition_one_way(&mut self, from: Id, to: Id, cut: bool) {
        if cut {
            self.partitioned.insert((from, to));
        } else {
            self.partitioned.remove(&(from, to));
        }
    }

    pub fn now(&self) -> Instant {
        self.now
    }

    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    pub fn name(&self, id: Id) -> &str {
        &self.members[id].name
    }

    /// The member called `name`.
    pub fn id(&self, name: &str) -> Option<Id> {
        self.members.iter().position(|m| m.name == name)
    }

    pub fn addrs(&self, id: Id) -> &[IpAddr] {
        &self.members[id].addrs
    }

    pub fn node(&self, id: Id) -> &Node {
        match &self.members[id].host {
            Host::Node(n) => n,
            Host::Endpoint(_) => panic!("member {id} is an endpoint, not a node"),
        }
    }

    pub fn node_mut(&mut self, id: Id) -> &mut Node {
        match &mut self.members[id].host {
            Host::Node(n) => n,
            Host::Endpoint(_) => panic!("member {id} is an endpoint, not a node"),
        }
    }

    /// What an endpoint or host has received: (time, source, destination, bytes); for packets
    /// the whole IP packet, with its addresses and ports (0 without ports).
    pub fn received(&self, id: Id) -> &[(Duration, SocketAddr, SocketAddr, Vec<u8>)] {
        match &self.members[id].host {
            Host::Endpoint(r) => r,
            Host::Node(_) => panic!("member {id} is a node, not an endpoint"),
        }
    }

    pub fn trace(&self) -> &[TraceEntry] {
        &self.trace
    }

    /// A host's site (`None` for nodes and plain endpoints).
    pub fn site(&self, id: Id) -> Option<&Site> {
        self.members[id].site.as_ref()
    }

    /// An xTR's data plane (`None` until a host is attached to it).
    pub fn data_plane(&self, id: Id) -> Option<&DataPlane> {
        self.members[id].data_plane.as_ref()
    }

    /// What the xTR the packet of trace entry `trace` reached did with it.
    pub fn handling(&self, trace: usize) -> Option<Handling> {
        self.handled.get(&trace).copied()
    }

    /// Sends a datagram from member `from` (an endpoint, usually) as if it had emitted it.
    pub fn send(&mut self, from: Id, src: SocketAddr, dst: SocketAddr, data: Vec<u8>) {
        let to = self.owner(from, dst.ip());
        self.enqueue(from, to, src, dst, Carried::Datagram, data);
    }

    /// Sends the IP packet `packet` from member `from`: a host's goes to its xTR; any other
    /// member's into the underlay, to the owner of its destination. Returns false (sending
    /// nothing) when `packet` is not an IPv4 or IPv6 packet.
    pub fn send_packet(&mut self, from: Id, packet: Vec<u8>) -> bool {
        let to = match &self.members[from].site {
            Some(site) => site.xtrs.first().copied(),
            None => match Summary::parse(&packet) {
                Some(s) => self.owner(from, s.dst),
                None => return false,
            },
        };
        self.enqueue_packet(from, to, packet)
    }

    /// Queues an IP packet from `from` to the next hop `to`; false if it is not one.
    fn enqueue_packet(&mut self, from: Id, to: Option<Id>, packet: Vec<u8>) -> bool {
        let Some(s) = Summary::parse(&packet) else { return false };
        let (sp, dp) = s.ports.unwrap_or((0, 0));
        self.enqueue(from, to, SocketAddr::new(s.src, sp), SocketAddr::new(s.dst, dp), Carried::Packet, packet);
        true
    }

    /// The member owning `ip` in the underlay; with several (anycast), the nearest to `from`.
    /// Hosts in sites are reached only through their xTR.
    /// Failing that, the first PITR announcing a prefix that covers it.
    fn owner(&self, from: Id, ip: IpAddr) -> Option<Id> {
        (0..self.members.len())
            .filter(|&i| self.members[i].site.is_none() && self.members[i].addrs.contains(&ip))
            .min_by_key(|&i| (self.delay_between(from, i), i))
            .or_else(|| self.announced.iter().find(|(_, p)| p.contains(ip)).map(|(pitr, _)| *pitr))
    }

    fn delay_between(&self, a: Id, b: Id) -> Duration {
        self.link_delay.get(&(a, b)).copied().unwrap_or(self.delay)
    }

    fn enqueue(&mut self, from: Id, to: Option<Id>, src: SocketAddr, dst: SocketAddr, carried: Carried, data: Vec<u8>) {
        let lost = self.loss > 0.0 && self.rng.gen_bool(self.loss);
        let blocked = to.is_some_and(|t| self.partitioned.contains(&(from, t)));
        let delivered = match to {
            Some(t) if !lost && !blocked => Some(self.elapsed() + self.delay_between(from, t)),
            _ => None,
        };
        self.trace.push(TraceEntry { sent: self.elapsed(), delivered, from, to, src, dst, carried, data });
        if let Some(d) = delivered {
            self.seq += 1;
            self.queue.push(Reverse(Pending { at: self.start + d, seq: self.seq, trace: self.trace.len() - 1 }));
        }
    }

    /// Moves every node's pending output onto the network.
    fn collect(&mut self) {
        for id in 0..self.members.len() {
            while let Host::Node(node) = &mut self.members[id].host {
                let Some(t) = node.poll_transmit() else { break };
                let addrs = &self.members[id].addrs;
                let src_ip = t
                    .src
                    .filter(|s| !s.is_unspecified())
                    .or_else(|| addrs.iter().copied().find(|a| a.is_ipv4() == t.dst.is_ipv4()))
                    .unwrap_or(t.dst.ip());
                let to = self.owner(id, t.dst.ip());
                self.enqueue(id, to, SocketAddr::new(src_ip, CONTROL_PORT), t.dst, Carried::Datagram, t.data);
            }
            if let Host::Node(node) = &mut self.members[id].host {
                while node.poll_event().is_some() {}
            }
        }
    }

    /// The next instant something happens: a delivery or a node timer.
    fn next_event(&self) -> Option<Instant> {
        let delivery = self.queue.peek().map(|Reverse(p)| p.at);
        let timers = self.members.iter().filter_map(|m| match &m.host {
            Host::Node(n) => n.poll_timeout(),
            Host::Endpoint(_) => None,
        });
        let polls = self.members.iter().filter_map(|m| m.data_plane.as_ref()?.next_poll());
        delivery.into_iter().chain(timers).chain(polls).min()
    }

    /// Runs the network for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        self.collect();
        while let Some(t) = self.next_event().filter(|&t| t <= end) {
            self.now = self.now.max(t);
            self.step();
        }
        self.now = end;
    }

    /// Runs until `done` holds (checked after every step) or `limit` of virtual time passes.
    /// Returns whether `done` held.
    pub fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&Sim) -> bool) -> bool {
        let end = self.now + limit;
        self.collect();
        while !done(self) {
            match self.next_event().filter(|&t| t <= end) {
                Some(t) => {
                    self.now = self.now.max(t);
                    self.step();
                }
                None => {
                    self.now = end;
                    return done(self);
                }
            }
        }
        true
    }

    /// Delivers everything due now and fires every due timer.
    fn step(&mut self) {
        let now = self.now;
        while let Some(Reverse(p)) = self.queue.peek() {
            if p.at > now {
                break;
            }
            let Some(Reverse(p)) = self.queue.pop() else { break };
            let e = &self.trace[p.trace];
            let (src, dst, data, to, from, carried) = (e.src, e.dst, e.data.clone(), e.to, e.from, e.carried);
            let Some(to) = to else { continue };
            let at = self.elapsed();
            match (&mut self.members[to].host, carried) {
                (Host::Node(n), Carried::Datagram) => n.handle_datagram(now, dst, src, &data),
                (Host::Node(_), Carried::Packet) => self.forward(p.trace, from, to, data),
                (Host::Endpoint(r), _) => r.push((at, src, dst, data)),
            }
        }
        for m in &mut self.members {
            if let Host::Node(n) = &mut m.host {
                if n.poll_timeout().is_some_and(|t| t <= now) {
                    n.handle_timeout(now);
                }
            }
        }
        for at in 0..self.members.len() {
            let m = &mut self.members[at];
            let (Host::Node(node), Some(dp)) = (&mut m.host, &mut m.data_plane) else { continue };
            if dp.next_poll().is_some_and(|t| t <= now) {
                for out in dp.poll(node, now) {
                    self.emit(at, out);
                }
            }
        }
        self.collect();
    }

    /// xTR `at` received the packet of trace entry `trace` from `from`: its ITR handles what
    /// its hosts send, its ETR what arrives on its RLOCs for port 4341.
    fn forward(&mut self, trace: usize, from: Id, at: Id, packet: Vec<u8>) {
        let now = self.now;
        let from_site = self.members[from].site.as_ref().filter(|s| s.xtrs.first() == Some(&at)).map(|s| s.iid);
        let encapsulated = self.trace[trace].is_encapsulated();
        let interface = self.members[from].interface.clone().filter(|_| from_site.is_some());
        let m = &mut self.members[at];
        let (Host::Node(node), Some(dp)) = (&mut m.host, &mut m.data_plane) else {
            self.handled.insert(trace, Handling::Dropped("no-data-plane"));
            return;
        };
        let addresses = loci_core::packet::addresses(&packet);
        if let (Some(interface), Some(iid), Some((src, _))) = (&interface, from_site, addresses) {
            node.handle_host_seen(now, iid, src, interface);
        }
        let announced = addresses.is_some_and(|(src, dst)| src == dst);
        // A native packet to a prefix this node announces as a PITR.
        let pitr = addresses
            .and_then(|(_, dst)| self.announced.iter().find(|(id, p)| *id == at && p.contains(dst)))
            .map(|(_, p)| p.iid);
        let (handling, out) = match (from_site, pitr) {
            (Some(_), _) if announced => (Handling::HostAnnounced, Out::Nowhere),
            (Some(iid), _) => dp.itr(node, now, iid, &packet),
            _ if encapsulated => dp.etr(node, now, packet),
            (None, Some(iid)) => dp.itr(node, now, iid, &packet),
            _ => (Handling::Dropped("not-for-us"), Out::Nowhere),
        };
        self.handled.insert(trace, handling);
        self.emit(at, out);
    }

    /// Sends what xTR `at`'s data plane produced.
    fn emit(&mut self, at: Id, out: Out) {
        match out {
            Out::Nowhere => {}
            Out::Underlay(p) => {
                let to = Summary::parse(&p).and_then(|s| self.owner(at, s.dst));
                self.enqueue_packet(at, to, p);
            }
            Out::Site { iid, packet } => {
                let dst = Summary::parse(&packet).map(|s| s.dst);
                let host = (0..self.members.len()).find(|&h| {
                    let m = &self.members[h];
                    m.site.as_ref().is_some_and(|s| s.iid == iid && s.xtrs.contains(&at))
                        && dst.is_some_and(|d| m.addrs.contains(&d))
                });
                self.enqueue_packet(at, host, packet);
            }
        }
    }
}
