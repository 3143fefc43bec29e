//! The data plane of a simulated xTR: the per-packet steps of loci-dataplane's workers
//! (`crates/loci-dataplane/src/itr.rs` and `etr.rs`), calling the same loci-core functions in
//! the same order, on packets the simulator carries instead of TUN devices and sockets. Only
//! the I/O differs: the ITR side returns the encapsulated packet for the underlay instead of
//! writing it to a raw socket, and the ETR side checks the whole outer packet with
//! [`decapsulate`] (the real one gets the outer header from its UDP socket and calls
//! `decapsulate_payload`, which `decapsulate` ends in).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Instant;

use loci_core::encap::{decapsulate, encapsulate, EncapParams, LocalRlocs, ENCAP_OVERHEAD_V6};
use loci_core::flow_cache::FlowCache;
use loci_core::locator::{flow_hash, Families};
use loci_core::map_cache::{Forward, MapCacheReader};
use loci_core::node::Node;
use loci_core::packet;
use loci_core::petr::{Proxy, Relay};
use loci_wire::ecm::checksum;

/// Flow-cache slots, as the daemon's default.
const FLOW_CACHE_SLOTS: usize = 4096;

/// What an xTR did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handling {
    /// ITR: encapsulated to `rloc` in instance `iid`.
    Encapsulated { iid: u32, rloc: IpAddr },
    /// ITR: no mapping yet. Like the real data plane it reports the miss to the control plane
    /// (`Node::handle_miss`) and drops the packet: nothing is queued, the sender retransmits.
    Miss,
    /// ITR: a negative mapping says the destination is not a LISP EID.
    NativeForwarded,
    /// ETR: decapsulated and handed to the site's instance `iid`.
    Decapsulated { iid: u32 },
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
    pub misses_reported: u64,
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

pub struct DataPlane {
    /// The ITR's map-cache snapshots (none: the node has no ITR role).
    reader: Option<MapCacheReader>,
    flows: FlowCache,
    families: Families,
    src_v4: Option<IpAddr>,
    src_v6: Option<IpAddr>,
    /// The ETR's RLOCs and instance IDs.
    filter: LocalRlocs,
    /// PETRs for the ITR, relaying for the ETR.
    proxy: Proxy,
    counters: Counters,
}

impl DataPlane {
    pub(crate) fn new(rlocs: &[IpAddr], reader: Option<MapCacheReader>) -> Self {
        let families = Families::of(rlocs);
        DataPlane {
            reader,
            flows: FlowCache::new(FLOW_CACHE_SLOTS, families),
            families,
            src_v4: rlocs.iter().copied().find(IpAddr::is_ipv4),
            src_v6: rlocs.iter().copied().find(IpAddr::is_ipv6),
            filter: LocalRlocs { rlocs: rlocs.to_vec(), iids: Vec::new() },
            proxy: Proxy::default(),
            counters: Counters::default(),
        }
    }

    /// PETRs and relaying (the `petr` key and role); a PETR serves the instances it relays in.
    pub(crate) fn set_proxy(&mut self, proxy: Proxy) {
        for p in &proxy.relay.sources {
            self.add_instance(p.iid);
        }
        self.proxy = proxy;
    }

    /// Serves instance `iid` (a TUN device, in the real data plane).
    pub(crate) fn add_instance(&mut self, iid: u32) {
        if !self.filter.iids.contains(&iid) {
            self.filter.iids.push(iid);
        }
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
        let Some(reader) = &self.reader else { return self.drop("no-itr") };
        let flow = flow_hash(p);
        let verdict = self.flows.forward(&reader.load(), iid, dst, flow);
        let verdict = self.proxy.petrs.apply(verdict, flow, self.families);
        match verdict {
            Forward::Encapsulate(rloc) => self.encapsulate(p, iid, rloc, flow),
            Forward::Miss => {
                node.handle_miss(now, iid, dst, src);
                self.counters.misses_reported += 1;
                *self.counters.dropped.entry("map-cache-miss").or_default() += 1;
                (Handling::Miss, Out::Nowhere)
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

    fn encapsulate(&mut self, p: &[u8], iid: u32, rloc: IpAddr, flow: u32) -> (Handling, Out) {
        let src = if rloc.is_ipv4() { self.src_v4 } else { self.src_v6 };
        let Some(src) = src.filter(|_| self.families.has(rloc)) else { return self.drop("encap-failed") };
        let mut buf = vec![0u8; ENCAP_OVERHEAD_V6 + p.len()];
        buf[ENCAP_OVERHEAD_V6..].copy_from_slice(p);
        let inner = ENCAP_OVERHEAD_V6..buf.len();
        let Ok(range) = encapsulate(&mut buf, inner, &EncapParams::new(src, rloc, iid, flow)) else {
            return self.drop("encap-failed");
        };
        let mut out = buf[range].to_vec();
        if rloc.is_ipv6() {
            // As the real ITR: a UDP checksum over IPv6 (see loci-dataplane's itr.rs).
            let c = checksum::udp(src, rloc, &out[40..]);
            out[46..48].copy_from_slice(&c.to_be_bytes());
        }
        self.counters.encapsulated += 1;
        (Handling::Encapsulated { iid, rloc }, Out::Underlay(out))
    }

    /// A packet from the underlay to one of our RLOCs, port 4341.
    pub(crate) fn etr(&mut self, mut p: Vec<u8>) -> (Handling, Out) {
        match decapsulate(&mut p, &self.filter) {
            Ok(d) => {
                let inner = &p[d.inner.clone()];
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
                        (Handling::Decapsulated { iid: d.iid }, Out::Site { iid: d.iid, packet: inner.to_vec() })
                    }
                }
            }
            Err(reason) => self.drop(reason.name()),
        }
    }
}
