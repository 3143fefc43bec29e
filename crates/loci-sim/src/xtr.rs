//! The data plane of a simulated xTR: the per-packet steps of loci-dataplane's workers
//! (`crates/loci-dataplane/src/itr.rs` and `etr.rs`), calling the same loci-core functions in
//! the same order, on packets the simulator carries instead of TUN devices and sockets: one
//! ITR worker per instance ID with its flow cache, miss filter and miss queue (packets to a
//! destination without a mapping wait there and go out when a new map-cache snapshot has it).
//!
//! Only the I/O differs, and the simulator plays the kernel's part. The ITR writes the LISP
//! header ([`encapsulate_payload`]) and the kernel adds the outer IP and UDP headers (with the
//! TTL and TOS the payload asks for); the source port is the flow's (the real ITR folds it onto
//! its pool of sockets). The ETR's socket strips the outer headers and reports their fields, and
//! [`decapsulate_payload`] checks the rest.
//!
//! Host mobility (DESIGN §5 step 4): the ETR looks the inner destination of every
//! decapsulated packet up in the node's away entries (`Node::away_reader`, the same snapshot
//! lookup as the ITR's map-cache). A hit is re-encapsulated to the host's new RLOC and reported
//! with `Node::handle_away_packet`, which solicits a Map-Request from the sending ITR (rate
//! limited in the core). Loop guard: an ETR re-encapsulates from its own port-4341 socket, so a
//! re-encapsulated packet's outer source port is [`LISP_DATA_PORT`], while ITRs send from their
//! flow ports ([`source_port`]: 0xc000 and up). A packet with source port 4341 that hits an
//! away entry was already redirected once: it is dropped (`away-loop`), never bounced again.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Instant;

use loci_core::echo_nonce::EchoTable;
use loci_core::encap::{decapsulate_payload, encapsulate_payload, source_port, LocalRlocs, OuterHeader};
use loci_core::flow_cache::FlowCache;
use loci_core::locator::{flow_hash, Families};
use loci_core::map_cache::{Forward, MapCacheReader};
use loci_core::miss_filter::RecentMisses;
use loci_core::miss_queue::{self, MissQueue};
use loci_core::node::Node;
use loci_core::packet;
use loci_wire::data::{HEADER_LEN, LISP_DATA_PORT};

use crate::packet::{udp_datagram, Summary};
use loci_core::petr::{Proxy, Relay};

/// Flow-cache slots, as the daemon's default.
const FLOW_CACHE_SLOTS: usize = 4096;

/// What an xTR did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handling {
    /// ITR: encapsulated to `rloc` in instance `iid`.
    Encapsulated { iid: u32, rloc: IpAddr },
    /// ITR: no mapping yet. Like the real data plane it reports the miss to the control plane
    /// (`Node::handle_miss`, at most once per 250 ms per destination) and keeps the packet
    /// until the mapping is in (`queued`), or drops it when the miss queue is full.
    Miss { queued: bool },
    /// ITR: a negative mapping says the destination is not a LISP EID.
    NativeForwarded,
    /// ETR: decapsulated and handed to the site's instance `iid`.
    Decapsulated { iid: u32 },
    /// ETR: decapsulated for a host that moved away (an away entry) and re-encapsulated to its
    /// new locator `rloc`.
    Reencapsulated { iid: u32, rloc: IpAddr },
    /// xTR: a host's gratuitous ARP (or unsolicited NA) announcing its address: reported to
    /// the control plane as a host seen on the site interface, not forwarded.
    HostAnnounced,
    /// Proxy-ETR: decapsulated and forwarded natively for a site it serves (RFC 6832).
    Relayed { iid: u32 },
    /// Dropped, for the reason named (loci-dataplane's counter names).
    Dropped(&'static str),
}

/// Data-plane counters of one simulated xTR.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    pub encapsulated: u64,
    pub decapsulated: u64,
    pub native_forwarded: u64,
    /// Packets for hosts that moved away, re-encapsulated to their new locator.
    pub reencapsulated: u64,
    pub misses_reported: u64,
    /// Misses not reported: the destination was reported less than 250 ms ago.
    pub misses_suppressed: u64,
    /// Packets sent from the miss queue once their mapping was in.
    pub sent_after_miss: u64,
    pub dropped: BTreeMap<&'static str, u64>,
}

/// Where a handled packet goes next.
pub(crate) enum Out {
    Nowhere,
    /// Into the underlay, routed by its destination.
    Underlay(Vec<u8>),
    /// To the host of instance `iid` that owns the packet's destination.
    Site {
        iid: u32,
        packet: Vec<u8>,
    },
}

/// The ITR worker of one instance (a thread per TUN device, in the real data plane).
struct Worker {
    flows: FlowCache,
    recent: RecentMisses,
    waiting: MissQueue,
    /// Snapshot generation the waiting packets were last tried against.
    tried: u64,
    last_sweep: Instant,
    /// When the worker looks at its waiting packets next (while there are some).
    next_poll: Option<Instant>,
}

pub struct DataPlane {
    /// The ITR's map-cache snapshots (none: the node has no ITR role).
    reader: Option<MapCacheReader>,
    /// The ETR's away entries (none: the node has no ETR role).
    away: Option<MapCacheReader>,
    /// Echo-nonce's per-locator slots (none: off).
    echo: Option<EchoTable>,
    workers: BTreeMap<u32, Worker>,
    families: Families,
    src_v4: Option<IpAddr>,
    src_v6: Option<IpAddr>,
    /// The ETR's RLOCs and instance IDs.
    filter: LocalRlocs,
    /// PETRs for the ITR, relaying for the ETR.
    proxy: Proxy,
    counters: Counters,
}

/// The node's echo-nonce slots, when it does echo-nonce.
fn echo_table(node: &Node) -> Option<EchoTable> {
    node.itr().and_then(|i| i.echo_nonce()).map(|e| e.table())
}

impl DataPlane {
    pub(crate) fn new(rlocs: &[IpAddr], node: &Node) -> Self {
        let families = Families::of(rlocs);
        DataPlane {
            reader: node.itr().map(|i| i.reader()),
            away: node.away_reader(),
            echo: echo_table(node),
            workers: BTreeMap::new(),
            families,
            src_v4: rlocs.iter().copied().find(IpAddr::is_ipv4),
            src_v6: rlocs.iter().copied().find(IpAddr::is_ipv6),
            filter: LocalRlocs { rlocs: rlocs.to_vec(), iids: Vec::new() },
            proxy: Proxy::default(),
            counters: Counters::default(),
        }
    }

    /// Reads the snapshots of `node` (a restarted node has new ones).
    pub(crate) fn attach(&mut self, node: &Node) {
        self.reader = node.itr().map(|i| i.reader());
        self.away = node.away_reader();
        self.echo = echo_table(node);
    }

    /// PETRs and relaying (the `petr` key and role); a PETR serves the instances it relays in.
    pub(crate) fn set_proxy(&mut self, proxy: Proxy, now: Instant) {
        for p in &proxy.relay.sources {
            self.add_instance(p.iid, now);
        }
        self.proxy = proxy;
    }

    /// Serves instance `iid` (a TUN device, in the real data plane).
    pub(crate) fn add_instance(&mut self, iid: u32, now: Instant) {
        if !self.filter.iids.contains(&iid) {
            self.filter.iids.push(iid);
        }
        let families = self.families;
        self.workers.entry(iid).or_insert_with(|| Worker {
            flows: FlowCache::new(FLOW_CACHE_SLOTS, families),
            recent: RecentMisses::default(),
            waiting: MissQueue::new(miss_queue::TOTAL, miss_queue::PER_DESTINATION),
            tried: u64::MAX,
            last_sweep: now,
            next_poll: None,
        });
    }

    /// When a worker next looks at its waiting packets.
    pub(crate) fn next_poll(&self) -> Option<Instant> {
        self.workers.values().filter_map(|w| w.next_poll).min()
    }

    /// Forwards the waiting packets whose destination has a mapping in a new snapshot and drops
    /// those that waited too long, in every worker whose poll is due (loci-dataplane's
    /// `send_waiting`).
    pub(crate) fn poll(&mut self, node: &mut Node, now: Instant) -> Vec<Out> {
        let mut outs = Vec::new();
        let Some(reader) = self.reader.clone() else { return outs };
        let due: Vec<u32> =
            self.workers.iter().filter(|(_, w)| w.next_poll.is_some_and(|t| t <= now)).map(|(i, _)| *i).collect();
        for iid in due {
            let snap = reader.load_full();
            let families = self.families;
            let Some(w) = self.workers.get_mut(&iid) else { continue };
            let fresh =
                snap.generation() != w.tried || now.saturating_duration_since(w.last_sweep) >= miss_queue::SWEEP;
            let mut packets = Vec::new();
            if fresh {
                w.tried = snap.generation();
                w.last_sweep = now;
                let mut ready = Vec::new();
                let expired = w.waiting.take_ready(
                    now,
                    |iid, dst| snap.forward(iid, dst, 0, families) != Forward::Miss,
                    &mut ready,
                );
                for slot in ready {
                    packets.push(w.waiting.packet(slot).to_vec());
                    w.waiting.release(slot);
                }
                if expired > 0 {
                    *self.counters.dropped.entry("miss-queue-expired").or_default() += expired as u64;
                }
            }
            w.next_poll = (!w.waiting.is_empty()).then_some(now + miss_queue::POLL);
            // The queue keeps arrival order per destination but not across destinations (a
            // hash map): a fixed order keeps the simulation reproducible.
            packets.sort_by_key(|p| packet::addresses(p).map(|(_, dst)| dst));
            for p in packets {
                self.counters.sent_after_miss += 1;
                outs.push(self.itr(node, now, iid, &p).1);
            }
        }
        outs
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    pub fn instances(&self) -> &[u32] {
        &self.filter.iids
    }

    fn drop(&mut self, reason: &'static str) -> (Handling, Out) {
        *self.counters.dropped.entry(reason).or_default() += 1;
        (Handling::Dropped(reason), Out::Nowhere)
    }

    /// A packet from a host of instance `iid` (read from the TUN device, in the real one).
    pub(crate) fn itr(&mut self, node: &mut Node, now: Instant, iid: u32, p: &[u8]) -> (Handling, Out) {
        let Some((src, dst)) = packet::addresses(p) else { return self.drop("bad-packet") };
        if !packet::routable(dst) {
            return self.drop("not-routable");
        }
        let (Some(reader), Some(w)) = (&self.reader, self.workers.get_mut(&iid)) else { return self.drop("no-itr") };
        let flow = flow_hash(p);
        let verdict = w.flows.forward(&reader.load(), iid, dst, flow);
        let verdict = self.proxy.petrs.apply(verdict, flow, self.families);
        match verdict {
            Forward::Encapsulate(rloc) => {
                let (out, done) =
                    (self.encapsulate(p, iid, rloc, source_port(flow)), Handling::Encapsulated { iid, rloc });
                self.sent(out, done)
            }
            Forward::Miss => {
                let queued = w.waiting.push(iid, dst, p, now);
                if queued {
                    w.next_poll.get_or_insert(now + miss_queue::POLL);
                } else {
                    *self.counters.dropped.entry("map-cache-miss").or_default() += 1;
                }
                if w.recent.should_report(iid, dst, now) {
                    node.handle_miss(now, iid, dst, src);
                    self.counters.misses_reported += 1;
                } else {
                    self.counters.misses_suppressed += 1;
                }
                (Handling::Miss { queued }, Out::Nowhere)
            }
            Forward::NativeForward => {
                let mut p = p.to_vec();
                if !packet::decrement_ttl(&mut p) {
                    return self.drop("ttl-exceeded");
                }
                self.counters.native_forwarded += 1;
                (Handling::NativeForwarded, Out::Underlay(p))
            }
            Forward::Drop(reason) => self.drop(reason.name()),
        }
    }

    /// The LISP-encapsulated packet carrying `p` in `iid` to `rloc` from UDP port `sport`.
    fn encapsulate(&self, p: &[u8], iid: u32, rloc: IpAddr, sport: u16) -> Option<Vec<u8>> {
        let src = if rloc.is_ipv4() { self.src_v4 } else { self.src_v6 };
        let src = src.filter(|_| self.families.has(rloc))?;
        let mut buf = vec![0u8; HEADER_LEN + p.len()];
        buf[HEADER_LEN..].copy_from_slice(p);
        let inner = HEADER_LEN..buf.len();
        let nonce = self.echo.as_ref().and_then(|e| e.outgoing(rloc));
        let payload = encapsulate_payload(&mut buf, inner, iid, nonce).ok()?;
        let data = &buf[payload.range];
        Some(udp_datagram(src, sport, rloc, LISP_DATA_PORT, data, payload.ttl, payload.tos))
    }

    /// Counts and sends an encapsulated packet, or drops what could not be encapsulated.
    fn sent(&mut self, out: Option<Vec<u8>>, done: Handling) -> (Handling, Out) {
        let Some(out) = out else { return self.drop("encap-failed") };
        match done {
            Handling::Reencapsulated { .. } => self.counters.reencapsulated += 1,
            _ => self.counters.encapsulated += 1,
        }
        (done, Out::Underlay(out))
    }

    /// A UDP datagram from the underlay to one of our RLOCs, port 4341.
    pub(crate) fn etr(&mut self, node: &mut Node, now: Instant, mut p: Vec<u8>) -> (Handling, Out) {
        // The socket's part: the outer fields, and the UDP payload.
        let Some(s) = Summary::parse(&p).filter(|s| s.proto == 17) else { return self.drop("not-udp") };
        let (Some((src_port, dst_port)), Some(payload)) = (s.ports, p.get_mut(s.l4 + 8..)) else {
            return self.drop("bad-outer-header");
        };
        let outer = OuterHeader { src: s.src, dst: s.dst, ttl: s.ttl, tos: s.tos, src_port, dst_port };
        match decapsulate_payload(payload, &outer, &self.filter) {
            Ok(d) => {
                if let Some(e) = &self.echo {
                    e.incoming(outer.src, &d.lisp);
                }
                let inner = &payload[d.inner];
                let relay = match packet::addresses(inner) {
                    Some((src, dst)) => self.proxy.relay.check(d.iid, src, dst),
                    None if self.proxy.relay.enabled => Relay::Refuse,
                    None => Relay::Deliver,
                };
                match relay {
                    Relay::Refuse => self.drop("relay-refused"),
                    // As the real PETR: out of its TUN device, routed by the kernel (one hop).
                    Relay::Forward => {
                        let mut q = inner.to_vec();
                        if !packet::decrement_ttl(&mut q) {
                            return self.drop("ttl-exceeded");
                        }
                        self.counters.decapsulated += 1;
                        (Handling::Relayed { iid: d.iid }, Out::Underlay(q))
                    }
                    Relay::Deliver => {
                        self.counters.decapsulated += 1;
                        if let Some(out) = self.away(node, now, d.iid, inner, &outer) {
                            return out;
                        }
                        (Handling::Decapsulated { iid: d.iid }, Out::Site { iid: d.iid, packet: inner.to_vec() })
                    }
                }
            }
            Err(reason) => self.drop(reason.name()),
        }
    }

    /// A decapsulated packet whose destination is in the away entries: re-encapsulated to the
    /// host's new locator and reported (or dropped when it was re-encapsulated once already).
    /// `None`: not for a host that moved away.
    fn away(
        &mut self,
        node: &mut Node,
        now: Instant,
        iid: u32,
        inner: &[u8],
        outer: &OuterHeader,
    ) -> Option<(Handling, Out)> {
        let (_, dst) = packet::addresses(inner)?;
        let flow = flow_hash(inner);
        let rloc = match self.away.as_ref()?.load().forward(iid, dst, flow, self.families) {
            Forward::Encapsulate(rloc) => rloc,
            Forward::Miss => return None,
            _ => return Some(self.drop("away-unreachable")),
        };
        if outer.src_port == LISP_DATA_PORT {
            return Some(self.drop("away-loop"));
        }
        node.handle_away_packet(now, iid, dst, outer.src);
        let out = self.encapsulate(inner, iid, rloc, LISP_DATA_PORT);
        Some(self.sent(out, Handling::Reencapsulated { iid, rloc }))
    }
}
