//! loci-sim: many loci-core nodes in one process on virtual time.
//!
//! Nodes own IP addresses; a datagram a node emits is delivered to the node that owns its
//! destination after the link delay (or lost, or dropped by a partition). Endpoints are bare
//! addresses that only record what reaches them (a `lig` client, a host). Every delivery is
//! recorded in the trace. Same seed, same configuration: the same run, byte for byte.
#![forbid(unsafe_code)]

pub mod scenario;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use loci_core::config::NodeConfig;
use loci_core::node::{Node, CONTROL_PORT};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Index of a node or endpoint in the simulation.
pub type Id = usize;

/// One datagram the network carried (or lost).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceEntry {
    /// Virtual time since the start of the run.
    pub sent: Duration,
    pub delivered: Option<Duration>,
    pub from: Id,
    pub to: Option<Id>,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub data: Vec<u8>,
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
        }
    }

    /// Adds a node running `config` on `addrs`.
    pub fn add_node(&mut self, config: NodeConfig, addrs: &[IpAddr]) -> Id {
        let seed = self.rng.gen();
        let name = config.name.clone();
        let node = Node::new(config, seed, self.now);
        self.members.push(Member { name, addrs: addrs.to_vec(), host: Host::Node(Box::new(node)) });
        self.members.len() - 1
    }

    /// Replaces node `id` by a fresh one running `config` (a restart: its state is lost; its
    /// addresses and links stay).
    pub fn restart_node(&mut self, id: Id, config: NodeConfig) {
        let seed = self.rng.gen();
        let node = Node::new(config, seed, self.now);
        self.members[id].host = Host::Node(Box::new(node));
    }

    /// Adds an endpoint that only records what it receives.
    pub fn add_endpoint(&mut self, name: &str, addrs: &[IpAddr]) -> Id {
        self.members.push(Member { name: name.into(), addrs: addrs.to_vec(), host: Host::Endpoint(Vec::new()) });
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
        for k in [(a, b), (b, a)] {
            if cut {
                self.partitioned.insert(k);
            } else {
                self.partitioned.remove(&k);
            }
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

    /// What an endpoint has received: (time, source, destination, bytes).
    pub fn received(&self, id: Id) -> &[(Duration, SocketAddr, SocketAddr, Vec<u8>)] {
        match &self.members[id].host {
            Host::Endpoint(r) => r,
            Host::Node(_) => panic!("member {id} is a node, not an endpoint"),
        }
    }

    pub fn trace(&self) -> &[TraceEntry] {
        &self.trace
    }

    /// Sends a datagram from member `from` (an endpoint, usually) as if it had emitted it.
    pub fn send(&mut self, from: Id, src: SocketAddr, dst: SocketAddr, data: Vec<u8>) {
        self.enqueue(from, src, dst, data);
    }

    /// The member owning `ip`; with several (anycast), the nearest to `from`.
    fn owner(&self, from: Id, ip: IpAddr) -> Option<Id> {
        (0..self.members.len())
            .filter(|&i| self.members[i].addrs.contains(&ip))
            .min_by_key(|&i| (self.delay_between(from, i), i))
    }

    fn delay_between(&self, a: Id, b: Id) -> Duration {
        self.link_delay.get(&(a, b)).copied().unwrap_or(self.delay)
    }

    fn enqueue(&mut self, from: Id, src: SocketAddr, dst: SocketAddr, data: Vec<u8>) {
        let to = self.owner(from, dst.ip());
        let lost = self.loss > 0.0 && self.rng.gen_bool(self.loss);
        let blocked = to.is_some_and(|t| self.partitioned.contains(&(from, t)));
        let delivered = match to {
            Some(t) if !lost && !blocked => Some(self.elapsed() + self.delay_between(from, t)),
            _ => None,
        };
        self.trace.push(TraceEntry { sent: self.elapsed(), delivered, from, to, src, dst, data });
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
                self.enqueue(id, SocketAddr::new(src_ip, CONTROL_PORT), t.dst, t.data);
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
        delivery.into_iter().chain(timers).min()
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
            let (src, dst, data, to) = (e.src, e.dst, e.data.clone(), e.to);
            let Some(to) = to else { continue };
            let at = self.elapsed();
            match &mut self.members[to].host {
                Host::Node(n) => n.handle_datagram(now, dst, src, &data),
                Host::Endpoint(r) => r.push((at, src, dst, data)),
            }
        }
        for m in &mut self.members {
            if let Host::Node(n) = &mut m.host {
                if n.poll_timeout().is_some_and(|t| t <= now) {
                    n.handle_timeout(now);
                }
            }
        }
        self.collect();
    }
}
