//! Echo-nonce (RFC 9300 §10.1): the data plane's own check that the path to a remote locator
//! works both ways, when traffic flows both ways between two xTRs that both do it.
//!
//! RFC 9300 §10.1 and §16 allow it only in trusted, closed deployments, so it is off unless
//! configured, and nonces are requested only from locators whose Map-Reply set the E bit
//! (the site says it echoes).
//!
//! * The control plane ([`EchoNonce`], run by the ITR) puts a random 24-bit nonce in a
//!   locator's slot of the shared [`EchoTable`] every `interval`; the ITR workers then send it
//!   with the N and E bits in every packet to that locator ([`EchoTable::outgoing`]). The peer's
//!   ETR notes it and its ITR sends it back with N set and E clear; our ETR workers see it come
//!   back ([`EchoTable::incoming`]).
//! * A request lasts `timeout`, judged in two halves:
//!   - echoed: the locator is verified; the next request goes out `interval` later;
//!   - not echoed although we sent the request in the first half and the peer kept sending us
//!     packets in the second half (when it had had the request for at least half the
//!     timeout): the path is broken, and the locator is marked down as a missed probe would
//!     ([`crate::probing::Prober::handle_unreachable`]). RLOC probing brings it back (other
//!     algorithms may override, §10.1), and echo requests to it back off (doubling the
//!     interval, up to 64 times) until one is echoed, so a peer that claims the E bit but does
//!     not echo cannot make it flap at the echo rate;
//!   - otherwise no verdict: no traffic came back, and RFC 9300 §10 says the lack of return
//!     traffic is no sign of anything.
//! * When the peer asks us for an echo, our packets to it carry its nonce (N set, E clear)
//!   until it has not asked for half a timeout. While we request too, packets alternate
//!   between its echo and our request. (§10.1 suggests suspending our own request instead;
//!   but a peer that cannot hear us never gets its echo and keeps asking, which would
//!   suspend ours for good exactly when the path is broken.)
//!
//! Security (RFC 9300 §16): only locators of our map-cache have slots, so packets from
//! strangers change nothing; an echo counts only if it is the nonce requested now. A forged
//! "no echo" can mark a locator down only until its next answered probe.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use loci_wire::data::DataHeaderRepr;
use rand::rngs::StdRng;
use rand::RngCore;

use crate::encap::Nonce;
use crate::map_cache::MapCache;
use crate::node::Io;
use crate::probing::{Prober, Unreachable};

/// Echo-nonce timers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EchoConfig {
    /// Time between the end of one request and the start of the next, per locator.
    pub interval: Duration,
    /// How long a request waits for its echo.
    pub timeout: Duration,
}

impl Default for EchoConfig {
    /// A dead path is noticed 0.5 to 1.5 s after it dies, while traffic flows both ways.
    fn default() -> Self {
        EchoConfig { interval: Duration::from_secs(1), timeout: Duration::from_millis(500) }
    }
}

/// Echo-nonce counters. Names are stable (`loci show stats`, metrics).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EchoStats {
    /// Requests sent and concluded (echoed, failed or inconclusive).
    pub requests: u64,
    /// Requests echoed in time.
    pub echoed: u64,
    /// Requests not echoed while the peer sent us traffic: the locator was marked down.
    pub failed: u64,
    /// Requests without a verdict: nothing came back.
    pub inconclusive: u64,
}

/// Marks a slot value as set; the nonce itself is 24 bits.
const SET: u32 = 1 << 31;
const NONCE: u32 = 0x00ff_ffff;

/// The data plane's state for one remote locator (lock-free; workers on any thread).
#[derive(Debug, Default)]
pub struct EchoSlot {
    /// Our request: `SET | nonce`, or 0.
    request: AtomicU32,
    /// The request the ETR saw echoed.
    echoed: AtomicU32,
    /// The peer's request we echo: `SET | nonce`, or 0.
    owed: AtomicU32,
    requests_in: AtomicU64,
    packets_in: AtomicU64,
    requests_out: AtomicU64,
    /// Alternates echo and request while both are due.
    turn: AtomicU32,
}

/// The slots of the locators echo-nonce watches, shared by the control plane and the ITR and
/// ETR workers. Replaced as a whole when the set of locators changes (rarely).
#[derive(Debug, Clone, Default)]
pub struct EchoTable {
    slots: Arc<ArcSwap<Slots>>,
}

/// Looked up twice per packet (ITR and ETR): foldhash rather than SipHash, whose flood
/// resistance buys nothing here (only the control plane adds keys: map-cache locators).
type Slots = HashMap<IpAddr, Arc<EchoSlot>, foldhash::fast::RandomState>;

impl EchoTable {
    /// ITR, per packet to `rloc`: the nonce its LISP header carries: the peer's, echoed, when
    /// it asked for one, and ours, with the E bit, while we request one (alternately when
    /// both).
    #[inline]
    pub fn outgoing(&self, rloc: IpAddr) -> Option<Nonce> {
        let slots = self.slots.load();
        let s = slots.get(&rloc)?;
        let (owed, request) = (s.owed.load(Relaxed), s.request.load(Relaxed));
        let echo = Nonce { value: owed & NONCE, echo_request: false };
        match (owed & SET != 0, request & SET != 0) {
            (false, false) => None,
            (true, false) => Some(echo),
            (true, true) if s.turn.fetch_add(1, Relaxed) & 1 == 0 => Some(echo),
            (_, true) => {
                s.requests_out.fetch_add(1, Relaxed);
                Some(Nonce { value: request & NONCE, echo_request: true })
            }
        }
    }

    /// ETR, per decapsulated packet from `src` with LISP header `h`.
    #[inline]
    pub fn incoming(&self, src: IpAddr, h: &DataHeaderRepr) {
        let slots = self.slots.load();
        let Some(s) = slots.get(&src) else { return };
        s.packets_in.fetch_add(1, Relaxed);
        let Some(n) = h.nonce else { return };
        let n = SET | (n & NONCE);
        if h.echo_nonce_request {
            s.owed.store(n, Relaxed);
            s.requests_in.fetch_add(1, Relaxed);
        } else if s.request.load(Relaxed) == n {
            s.echoed.store(n, Relaxed);
        }
    }
}

/// Where a locator's echo check stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The next request starts at the locator's `next`.
    Idle,
    /// Requesting; `packets_in` is the peer's packet count at the start of the second half.
    First,
    Second {
        packets_in: u64,
    },
}

/// What the ITR knows of one locator's echoes.
#[derive(Debug, Clone)]
pub struct EchoState {
    pub phase: Phase,
    /// When the current request started, or the next one starts (idle).
    pub next: Instant,
    pub last_echo: Option<Instant>,
    /// Requests in a row that failed (the back-off exponent).
    pub failures: u32,
    nonce: u32,
    requests_out: u64,
    /// The peer's request count when we last looked, and since when it has not changed.
    requests_in: (u64, Instant),
}

impl EchoState {
    /// For `loci show rlocs`: requesting, verified (last request echoed), failed (the last
    /// ones were not), or idle (nothing concluded yet).
    pub fn state(&self) -> &'static str {
        match (self.phase, self.failures, self.last_echo) {
            (Phase::First | Phase::Second { .. }, ..) => "requesting",
            (Phase::Idle, 0, Some(_)) => "verified",
            (Phase::Idle, 0, None) => "idle",
            (Phase::Idle, ..) => "failed",
        }
    }
}

pub struct EchoNonce {
    config: EchoConfig,
    table: EchoTable,
    locators: HashMap<IpAddr, EchoState>,
    /// When `handle_timeout` last ran.
    ticked: Option<Instant>,
    stats: EchoStats,
}

impl EchoNonce {
    pub fn new(config: EchoConfig) -> Self {
        EchoNonce {
            config,
            table: EchoTable::default(),
            locators: HashMap::new(),
            ticked: None,
            stats: EchoStats::default(),
        }
    }

    pub fn config(&self) -> &EchoConfig {
        &self.config
    }

    /// The data plane's handle.
    pub fn table(&self) -> EchoTable {
        self.table.clone()
    }

    pub fn stats(&self) -> &EchoStats {
        &self.stats
    }

    pub fn locator(&self, addr: IpAddr) -> Option<&EchoState> {
        self.locators.get(&addr)
    }

    /// Half a timeout: how often requests are judged and unanswered echoes expire.
    fn tick(&self) -> Duration {
        (self.config.timeout / 2).max(Duration::from_millis(1))
    }

    /// When `handle_timeout` should next run: every half timeout while any locator is watched.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let next = self.locators.values().map(|s| s.next).min()?;
        Some(self.ticked.map_or(next, |t| next.min(t + self.tick())))
    }

    /// Watches the map-cache's locators that said they echo (the E bit of the Map-Reply that
    /// installed their mapping, or of their last probe reply: mappings learnt by pub/sub come
    /// from the Map-Server, which cannot say); a new table when the set changed. A locator
    /// that left forgets its state.
    fn sync(&mut self, now: Instant, cache: &MapCache, prober: &Prober) {
        let wanted: HashSet<IpAddr> = cache
            .locators()
            .filter(|&(a, prefix)| {
                prober.locator(a).is_some_and(|s| s.echo_nonce) || cache.get(&prefix).is_some_and(|m| m.echo_nonce)
            })
            .map(|(a, _)| a)
            .collect();
        if wanted.len() == self.locators.len() && wanted.iter().all(|a| self.locators.contains_key(a)) {
            return;
        }
        let old = self.table.slots.load_full();
        self.locators.retain(|a, _| wanted.contains(a));
        let mut slots = Slots::with_capacity_and_hasher(wanted.len(), Default::default());
        for a in wanted {
            slots.insert(a, old.get(&a).cloned().unwrap_or_default());
            self.locators.entry(a).or_insert_with(|| EchoState {
                phase: Phase::Idle,
                next: now,
                last_echo: None,
                failures: 0,
                nonce: 0,
                requests_out: 0,
                requests_in: (0, now),
            });
        }
        self.table.slots.store(Arc::new(slots));
    }

    /// Starts, judges and ends requests; marks down (through `prober`) the locators whose
    /// path is broken.
    pub fn handle_timeout(
        &mut self,
        now: Instant,
        cache: &mut MapCache,
        prober: &mut Prober,
        rng: &mut StdRng,
        io: &mut Io,
    ) {
        self.sync(now, cache, prober);
        self.ticked = Some(now);
        let (half, interval) = (self.tick(), self.config.interval);
        let mut broken = Vec::new();
        let slots = self.table.slots.load();
        for (&addr, st) in &mut self.locators {
            let Some(slot) = slots.get(&addr) else { continue };
            // The peer's request is echoed until a tick passes without one.
            let requests_in = slot.requests_in.load(Relaxed);
            if requests_in != st.requests_in.0 {
                st.requests_in = (requests_in, now);
            } else if now.saturating_duration_since(st.requests_in.1) >= half {
                slot.owed.store(0, Relaxed);
            }
            if now < st.next {
                continue;
            }

            match st.phase {
                Phase::Idle => {
                    // A locator already down carries no traffic to ask with.
                    if cache.locator_down(addr) {
                        st.next = now + interval;
                        continue;
                    }
                    st.nonce = rng.next_u32() & NONCE;
                    st.requests_out = slot.requests_out.load(Relaxed);
                    slot.echoed.store(0, Relaxed);
                    slot.request.store(SET | st.nonce, Relaxed);
                    st.phase = Phase::First;
                    st.next = now + half;
                }
                Phase::First | Phase::Second { .. } => {
                    let echoed = slot.echoed.load(Relaxed) == SET | st.nonce;
                    match st.phase {
                        _ if echoed => {
                            st.last_echo = Some(now);
                            st.failures = 0;
                            self.stats.echoed += 1;
                        }
                        // Not sent yet (no traffic to the locator): stays armed for the next
                        // packet, so a flow that starts is checked at once.
                        Phase::First if slot.requests_out.load(Relaxed) == st.requests_out => {
                            st.next = now + half;
                            continue;
                        }
                        Phase::First => {
                            st.phase = Phase::Second { packets_in: slot.packets_in.load(Relaxed) };
                            st.next = now + half;
                            continue;
                        }
                        Phase::Second { packets_in } if slot.packets_in.load(Relaxed) != packets_in => {
                            st.failures = st.failures.saturating_add(1);
                            self.stats.failed += 1;
                            broken.push(addr);
                        }
                        _ => self.stats.inconclusive += 1,
                    }
                    self.stats.requests += 1;
                    slot.request.store(0, Relaxed);
                    st.phase = Phase::Idle;
                    st.next = now + interval * (1u32 << st.failures.min(6));
                }
            }
        }
        for addr in broken {
            tracing::info!(rloc = %addr, "echo-nonce not echoed while the peer sends to us");
            prober.handle_unreachable(now, addr, Unreachable::NoEcho, cache, io);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// A table watching `peer`, requesting `request` (when given).
    fn table(peer: IpAddr, request: Option<u32>) -> (EchoTable, Arc<EchoSlot>) {
        let t = EchoTable::default();
        let slot = Arc::new(EchoSlot::default());
        if let Some(n) = request {
            slot.request.store(SET | n, Relaxed);
        }
        t.slots.store(Arc::new(Slots::from_iter([(peer, slot.clone())])));
        (t, slot)
    }

    fn header(nonce: u32, echo_request: bool) -> DataHeaderRepr {
        DataHeaderRepr { nonce: Some(nonce), echo_nonce_request: echo_request, ..Default::default() }
    }

    #[test]
    fn packets_carry_requests_echoes_or_both_in_turn() {
        let peer = ip("203.0.113.1");
        let (t, slot) = table(peer, None);
        assert_eq!(t.outgoing(peer), None, "nothing asked, nothing owed");
        assert_eq!(t.outgoing(ip("203.0.113.9")), None, "no slot");
        slot.request.store(SET | 0x12_3456, Relaxed);
        let ask = Some(Nonce { value: 0x12_3456, echo_request: true });
        assert_eq!(t.outgoing(peer), ask);
        // The peer asks too: its nonce and ours alternate.
        t.incoming(peer, &header(0xab_cdef, true));
        let echo = Some(Nonce { value: 0xab_cdef, echo_request: false });
        let four: Vec<_> = (0..4).map(|_| t.outgoing(peer)).collect();
        assert_eq!(four, [echo, ask, echo, ask]);
        assert_eq!(slot.requests_out.load(Relaxed), 3, "only packets with our request count");
        slot.request.store(0, Relaxed);
        assert_eq!(t.outgoing(peer), echo, "only owed: every packet echoes");
    }

    #[test]
    fn only_the_current_nonce_from_the_peer_counts_as_echoed() {
        let peer = ip("2001:db8::1");
        let (t, slot) = table(peer, Some(0x00_0042));
        // From a stranger, the right nonce changes nothing (no slot).
        t.incoming(ip("2001:db8::66"), &header(0x42, false));
        t.incoming(peer, &header(0x43, false));
        t.incoming(peer, &DataHeaderRepr::default());
        assert_eq!(slot.echoed.load(Relaxed), 0);
        assert_eq!(slot.packets_in.load(Relaxed), 2, "the peer's packets are counted");
        // Only 24 bits travel.
        t.incoming(peer, &header(0xff00_0042, false));
        assert_eq!(slot.echoed.load(Relaxed), SET | 0x42);
        assert_eq!(slot.owed.load(Relaxed), 0, "an echo asks for nothing");
    }
}
