//! A small per-thread flow cache in front of the map-cache snapshot.
//!
//! Direct-mapped: a flow (instance ID, destination EID, flow hash) has one slot, picked from its
//! flow hash; a colliding flow just takes the slot over. A slot holds the verdict computed from
//! one snapshot generation and is valid only while the snapshot in hand has that generation,
//! so every publication invalidates the whole cache at once without touching it.
//!
//! Keying on the flow hash (not only on the destination) caches the locator choice too: a hit
//! is a compare and a copy, with no trie walk and no rendezvous hashing. A hit still marks the
//! mapping used, which is what keeps an entry in use from expiring or being evicted.
//!
//! Not `Sync` on purpose: one per worker thread, no sharing, no atomics except the use bits.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use crate::locator::Families;
use crate::map_cache::{Forward, Mapping, Snapshot};

/// Generation of an empty slot (a snapshot never reaches it).
const EMPTY: u64 = u64::MAX;

#[derive(Debug, Clone)]
struct Slot {
    generation: u64,
    iid: u32,
    flow: u32,
    dst: IpAddr,
    verdict: Forward,
    mapping: Option<Arc<Mapping>>,
}

impl Default for Slot {
    fn default() -> Self {
        Slot {
            generation: EMPTY,
            iid: 0,
            flow: 0,
            dst: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            verdict: Forward::Miss,
            mapping: None,
        }
    }
}

/// Per-thread cache of (IID, destination, flow hash) -> verdict.
#[derive(Debug)]
pub struct FlowCache {
    slots: Box<[Slot]>,
    mask: usize,
    families: Families,
    hits: u64,
    misses: u64,
}

impl FlowCache {
    /// A cache of `capacity` slots (rounded up to a power of two, at least 16) for a worker
    /// that can send on `families`.
    pub fn new(capacity: usize, families: Families) -> Self {
        let n = capacity.max(16).next_power_of_two();
        FlowCache { slots: vec![Slot::default(); n].into_boxed_slice(), mask: n - 1, families, hits: 0, misses: 0 }
    }

    /// What to do with a packet of the flow `flow` (from [`crate::locator::flow_hash`]) to
    /// `dst` in instance `iid`, answered from the cache when it holds a verdict of `snap`'s
    /// generation, else from `snap` (and remembered).
    #[inline]
    pub fn forward(&mut self, snap: &Snapshot, iid: u32, dst: IpAddr, flow: u32) -> Forward {
        let i = (flow ^ iid.wrapping_mul(0x9e37_79b9)) as usize & self.mask;
        let slot = &mut self.slots[i];
        if slot.generation == snap.generation() && slot.flow == flow && slot.iid == iid && slot.dst == dst {
            self.hits += 1;
            if let Some(m) = &slot.mapping {
                m.mark_used();
            }
            return slot.verdict;
        }
        self.misses += 1;
        let mapping = snap.lookup(iid, dst);
        let verdict = match mapping {
            Some(m) => {
                m.mark_used();
                m.forward(flow, self.families)
            }
            None => Forward::Miss,
        };
        *slot = Slot { generation: snap.generation(), iid, flow, dst, verdict, mapping: mapping.cloned() };
        verdict
    }

    /// (hits, misses) since creation.
    pub fn counters(&self) -> (u64, u64) {
        (self.hits, self.misses)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::locator::Rloc;
    use crate::map_cache::{MapCache, MapCacheConfig};
    use loci_wire::Action;
    use std::time::{Duration, Instant};

    #[test]
    fn hits_until_the_generation_changes() {
        let t0 = Instant::now();
        let mut c = MapCache::new(MapCacheConfig::default());
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        let m = |r: &str| {
            Mapping::new(
                "10.1.0.0/16".parse().unwrap(),
                vec![Rloc::new(ip(r), 1, 1, true)],
                Action::NO_ACTION,
                Duration::from_secs(600),
                t0,
            )
        };
        c.insert(m("192.0.2.1"), ip("10.1.0.1"));
        c.publish();
        let reader = c.reader();
        let mut fc = FlowCache::new(64, Families::ALL);
        let dst = ip("10.1.2.3");
        let snap = reader.load();
        assert_eq!(fc.forward(&snap, 0, dst, 7), Forward::Encapsulate(ip("192.0.2.1")));
        assert_eq!(fc.forward(&snap, 0, dst, 7), Forward::Encapsulate(ip("192.0.2.1")));
        assert_eq!(fc.counters(), (1, 1));
        // Same flow hash, other IID or destination: not a hit.
        assert_eq!(fc.forward(&snap, 1, dst, 7), Forward::Miss);
        assert_eq!(fc.forward(&snap, 0, ip("10.9.0.1"), 7), Forward::Miss);
        assert_eq!(fc.counters(), (1, 3));
        drop(snap);
        // The mapping changes: the next snapshot's generation invalidates the cached verdict.
        c.insert(m("192.0.2.2"), ip("10.1.0.1"));
        c.publish();
        let snap = reader.load();
        assert_eq!(fc.forward(&snap, 0, dst, 7), Forward::Encapsulate(ip("192.0.2.2")));
        // Hits mark the mapping used (what keeps it from expiring while traffic flows).
        assert!(snap.lookup(0, dst).unwrap().used_recently());
    }
}
