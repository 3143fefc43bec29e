//! Data-plane counters. Each worker owns one [`Counters`] and is its only writer (relaxed
//! atomics, no shared cache line between workers); readers add them up into [`Stats`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use loci_core::encap::DecapDrop;
use loci_core::map_cache::DropReason as CacheDrop;

/// Why the data plane dropped a packet. Names are stable (`loci show stats`, metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Drop {
    // ITR side.
    /// A negative map-cache entry whose action is drop.
    NegativeAction,
    /// A mapping with no usable locator.
    NoUsableLocator,
    /// The map-cache has no entry yet and the packet could not wait for one: the miss queue is
    /// off (no room configured) or it holds no more for this destination or at all.
    MapCacheMiss,
    /// A packet waited in the miss queue longer than a Map-Request round trip may take.
    MissQueueExpired,
    /// Neither a well-formed IPv4 nor IPv6 packet came out of the TUN device.
    BadPacket,
    /// A multicast, broadcast or link-local destination (the TUN device's own neighbour
    /// discovery and MLD, for one): not for a map-cache.
    NotRoutable,
    /// The packet could not be encapsulated (too big, no source RLOC of the family).
    EncapFailed,
    /// Native forwarding of a packet whose TTL ran out.
    TtlExceeded,
    /// The underlay refused to send (no route, buffer full).
    SendFailed,
    // ETR side: the decapsulation checks.
    Decap(DecapDrop),
    /// A datagram longer than the receive buffer.
    Truncated,
    /// The TUN device refused the inner packet.
    TunWriteFailed,
    /// A Proxy-ETR refused to relay: the inner source is no EID of a site it serves (RFC 6832
    /// §6.1).
    RelayRefused,
    /// Too big for the path after encapsulation and not to be fragmented: answered with an
    /// ICMP too-big (RFC 9300 §7.1).
    TooBig,
}

const DECAP: [DecapDrop; 10] = [
    DecapDrop::BadOuter,
    DecapDrop::BadOuterChecksum,
    DecapDrop::OuterFragment,
    DecapDrop::NotUdp,
    DecapDrop::WrongPort,
    DecapDrop::NotOurRloc,
    DecapDrop::Encrypted,
    DecapDrop::UnknownIid,
    DecapDrop::BadInner,
    DecapDrop::CongestionOnNotEct,
];

const SLOTS: usize = 13 + DECAP.len();

impl Drop {
    pub fn name(self) -> &'static str {
        match self {
            Drop::NegativeAction => CacheDrop::NegativeAction.name(),
            Drop::NoUsableLocator => CacheDrop::NoUsableLocator.name(),
            Drop::MapCacheMiss => "map-cache-miss",
            Drop::MissQueueExpired => "miss-queue-expired",
            Drop::BadPacket => "bad-packet",
            Drop::NotRoutable => "not-routable",
            Drop::EncapFailed => "encap-failed",
            Drop::TtlExceeded => "ttl-exceeded",
            Drop::SendFailed => "send-failed",
            Drop::Decap(d) => d.name(),
            Drop::Truncated => "truncated",
            Drop::TunWriteFailed => "tun-write-failed",
            Drop::RelayRefused => "relay-refused",
            Drop::TooBig => "too-big",
        }
    }

    fn slot(self) -> usize {
        match self {
            Drop::NegativeAction => 0,
            Drop::NoUsableLocator => 1,
            Drop::MapCacheMiss => 2,
            Drop::BadPacket => 3,
            Drop::EncapFailed => 4,
            Drop::TtlExceeded => 5,
            Drop::SendFailed => 6,
            Drop::Truncated => 7,
            Drop::TunWriteFailed => 8,
            Drop::NotRoutable => 9,
            Drop::MissQueueExpired => 10,
            Drop::RelayRefused => 11,
            Drop::TooBig => 12,
            Drop::Decap(d) => 13 + DECAP.iter().position(|&x| x == d).unwrap_or(0),
        }
    }

    fn all() -> impl Iterator<Item = Drop> {
        [
            Drop::NegativeAction,
            Drop::NoUsableLocator,
            Drop::MapCacheMiss,
            Drop::BadPacket,
            Drop::EncapFailed,
            Drop::TtlExceeded,
            Drop::SendFailed,
            Drop::Truncated,
            Drop::TunWriteFailed,
            Drop::NotRoutable,
            Drop::MissQueueExpired,
            Drop::RelayRefused,
            Drop::TooBig,
        ]
        .into_iter()
        .chain(DECAP.iter().map(|&d| Drop::Decap(d)))
    }
}

impl From<CacheDrop> for Drop {
    fn from(d: CacheDrop) -> Self {
        match d {
            CacheDrop::NegativeAction => Drop::NegativeAction,
            CacheDrop::NoUsableLocator => Drop::NoUsableLocator,
        }
    }
}

/// One worker's counters.
#[derive(Debug, Default)]
pub struct Counters {
    pub encapsulated: AtomicU64,
    pub encapsulated_bytes: AtomicU64,
    pub decapsulated: AtomicU64,
    pub decapsulated_bytes: AtomicU64,
    pub native_forwarded: AtomicU64,
    /// Misses handed to the control plane.
    pub misses_reported: AtomicU64,
    /// Misses not handed over: the same destination was reported a moment ago, or the queue
    /// to the control plane was full.
    pub misses_suppressed: AtomicU64,
    drops: [AtomicU64; SLOTS],
}

impl Counters {
    #[inline]
    pub fn add(c: &AtomicU64, n: u64) {
        // Single writer: a load and a store, no locked instruction.
        c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
    }

    #[inline]
    pub fn drop_packet(&self, reason: Drop) {
        self.drop_packets(reason, 1);
    }

    #[inline]
    pub fn drop_packets(&self, reason: Drop, n: u64) {
        Self::add(&self.drops[reason.slot()], n);
    }

    fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

/// Counters of the whole data plane, added up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub encapsulated: u64,
    pub encapsulated_bytes: u64,
    pub decapsulated: u64,
    pub decapsulated_bytes: u64,
    pub native_forwarded: u64,
    pub misses_reported: u64,
    pub misses_suppressed: u64,
    /// Drops by reason; reasons that never happened are left out.
    pub drops: BTreeMap<&'static str, u64>,
}

impl Stats {
    pub fn sum<'a>(all: impl IntoIterator<Item = &'a Counters>) -> Stats {
        let mut s = Stats::default();
        for c in all {
            s.encapsulated += Counters::get(&c.encapsulated);
            s.encapsulated_bytes += Counters::get(&c.encapsulated_bytes);
            s.decapsulated += Counters::get(&c.decapsulated);
            s.decapsulated_bytes += Counters::get(&c.decapsulated_bytes);
            s.native_forwarded += Counters::get(&c.native_forwarded);
            s.misses_reported += Counters::get(&c.misses_reported);
            s.misses_suppressed += Counters::get(&c.misses_suppressed);
            for d in Drop::all() {
                let n = Counters::get(&c.drops[d.slot()]);
                if n > 0 {
                    *s.drops.entry(d.name()).or_default() += n;
                }
            }
        }
        s
    }

    pub fn dropped(&self, reason: Drop) -> u64 {
        self.drops.get(reason.name()).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_its_own_slot_and_name() {
        let mut slots: Vec<usize> = Drop::all().map(Drop::slot).collect();
        let n = slots.len();
        slots.sort();
        slots.dedup();
        assert_eq!(slots.len(), n);
        assert!(slots.iter().all(|&s| s < SLOTS));
        let mut names: Vec<&str> = Drop::all().map(Drop::name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n);
    }

    #[test]
    fn sums_over_workers() {
        let (a, b) = (Counters::default(), Counters::default());
        Counters::add(&a.encapsulated, 2);
        Counters::add(&b.encapsulated, 3);
        a.drop_packet(Drop::Decap(DecapDrop::UnknownIid));
        b.drop_packet(Drop::Decap(DecapDrop::UnknownIid));
        b.drop_packet(Drop::MapCacheMiss);
        let s = Stats::sum([&a, &b]);
        assert_eq!(s.encapsulated, 5);
        assert_eq!(s.dropped(Drop::Decap(DecapDrop::UnknownIid)), 2);
        assert_eq!(s.dropped(Drop::MapCacheMiss), 1);
        assert_eq!(s.drops.len(), 2);
    }
}
