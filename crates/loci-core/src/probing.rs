//! RLOC reachability at the ITR: RLOC probing (RFC 9301 §7.1) and locator-status bits
//! (RFC 9300 §10).
//!
//! * Every locator the map-cache may choose is probed on its own timer: a Map-Request with the
//!   probe bit, not encapsulated, sent from our RLOC of its family straight to the locator's
//!   port 4342, naming one EID-prefix cached for it. One probe per locator per interval,
//!   however many entries use it. The first probe goes out within a tenth of the interval of
//!   the locator appearing (a random phase, so locators learnt together are not probed in
//!   step: RFC 9301 §7.1's "jittered timer"); later ones exactly one interval apart.
//! * A probe counts as missed when the next one is due and no reply came. After
//!   `misses_to_down` misses in a row the locator is marked down in the map-cache and the data
//!   plane skips it at its next lookup ([`crate::locator::choose`]: the next locator by
//!   priority takes its flows; flows on the others stay where they are). Probing goes on at the
//!   same pace, and the first reply brings it back.
//! * A reply counts only if its nonce is one of the locator's outstanding probes and it comes
//!   from the probed address. It updates the locator's state and RTT and nothing else: its
//!   records are not installed, so a probe reply cannot add locators or change a mapping
//!   (mappings come from the mapping system, nonce-checked, in [`crate::itr`]).
//!
//! Default timers (1 s, 2 misses) keep to RFC 9301 §5.3's one Map-Request per second per
//! EID-prefix (a probe is a Map-Request; we send at most one per second per locator) and
//! notice a dead locator 2 to 3 s after it dies. The fast-failover profile probes only the
//! peers it names, at the interval it names (sub-second): a rate above the RFC's, so it is
//! never on unless configured.
//!
//! Locator-status bits: RFC 9300 §10 forbids them on the public Internet, so they count only
//! when configured (a private underlay), and only from one of the sending site's own locators.
//! [`status_bits_change`] is the data plane's per-packet check; the control plane applies what
//! it reports with [`crate::map_cache::MapCache::set_status_bits`].

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use loci_wire::map_reply::MapReply;
use loci_wire::{Address, Wire};
use rand::rngs::StdRng;
use rand::RngCore;

use crate::eid::EidPrefix;
use crate::map_cache::{status_bits_down, MapCache, Snapshot};
use crate::node::{Event, Io, CONTROL_PORT};
use crate::ratelimit::KeyedLimiter;
use crate::stats::Drop;

/// Probing settings. The defaults respect RFC 9301 §5.3 (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbingConfig {
    pub interval: Duration,
    /// Probes missed in a row before a locator is marked down.
    pub misses_to_down: u32,
    /// Sub-second probing of a few named peers (explicit opt-in).
    pub fast: Option<FastFailover>,
    /// Honour locator-status bits in data packets (private underlays only, RFC 9300 §10).
    pub status_bits: bool,
    /// Most probes sent per second, all locators together: they go out at least 1/this apart,
    /// and probes due faster wait their turn, oldest first (`probes_deferred`). 0: no cap.
    pub max_probes_per_second: u32,
}

impl Default for ProbingConfig {
    fn default() -> Self {
        ProbingConfig {
            interval: Duration::from_secs(1),
            misses_to_down: 2,
            fast: None,
            status_bits: false,
            max_probes_per_second: 1000,
        }
    }
}

/// The fast-failover profile: its timers apply to the locators in `peers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FastFailover {
    pub interval: Duration,
    pub misses_to_down: u32,
    pub peers: Vec<IpAddr>,
}

impl FastFailover {
    /// A profile that notices a dead peer in under a second: probes every 200 ms, down after 3
    /// misses (0.6 to 0.8 s).
    pub fn new(peers: Vec<IpAddr>) -> Self {
        FastFailover { interval: Duration::from_millis(200), misses_to_down: 3, peers }
    }
}

/// Probing counters. Names are stable (`loci show stats`, metrics).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbeStats {
    pub probes_sent: u64,
    /// Probes that were due when `max_probes_per_second` allowed none, and went out later
    /// (each counted once however long it waited; a wait is never a miss).
    pub probes_deferred: u64,
    pub replies: u64,
    /// Probe replies whose nonce matched no outstanding probe (dropped).
    pub replies_unmatched: u64,
    /// Probe replies with a valid nonce from another address than the probed locator (dropped).
    pub replies_wrong_source: u64,
    pub misses: u64,
    /// Locators marked down (each is a failover of the traffic they carried).
    pub downs: u64,
    pub ups: u64,
    /// Locator-status bits applied / refused (not from one of the mapping's locators).
    pub status_bits_applied: u64,
    pub status_bits_refused: u64,
    /// Locator-status bit changes beyond the rate limit (ignored; a later packet repeats them).
    pub status_bits_rate_limited: u64,
    /// Unreachability hints (ICMP, route withdrawals) that marked a locator down.
    pub hints_applied: u64,
    /// Hints about an address that is no locator in the map-cache (ignored).
    pub hints_unknown: u64,
    /// Hints about a locator already down, or within an interval of the last hint applied to
    /// it (ignored).
    pub hints_ignored: u64,
}

/// Why the data plane thinks a locator is unreachable (RFC 9300 §10's hints besides probing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreachable {
    /// An ICMP or ICMPv6 destination-unreachable quoting a packet we sent to the locator.
    Icmp,
    /// The underlay has no route to the locator any more.
    RouteWithdrawn,
    /// An echo-nonce request went unanswered while the peer sent us traffic
    /// ([`crate::echo_nonce`]).
    NoEcho,
}

impl Unreachable {
    pub fn name(self) -> &'static str {
        match self {
            Unreachable::Icmp => "icmp-unreachable",
            Unreachable::RouteWithdrawn => "route-withdrawn",
            Unreachable::NoEcho => "no-echo",
        }
    }
}

/// What the ITR knows of one locator's reachability.
#[derive(Debug, Clone)]
pub struct LocatorState {
    pub up: bool,
    /// When `up` last changed (or the locator appeared).
    pub since: Instant,
    /// Round-trip time of the last answered probe.
    pub rtt: Option<Duration>,
    pub last_reply: Option<Instant>,
    /// Probes missed in a row.
    pub misses: u32,
    /// Probed with the fast-failover profile.
    pub fast: bool,
    pub probes: u64,
    pub replies: u64,
    /// Its last probe reply had the E bit: it echoes nonces (RFC 9300 §10.1).
    pub echo_nonce: bool,
    /// When an unreachability hint last marked it down.
    last_hint: Option<Instant>,
    /// Recent probes (nonce, sent), oldest first; a reply to any of them counts.
    outstanding: VecDeque<(u64, Instant)>,
    /// The latest probe has been answered.
    answered: bool,
    next: Instant,
}

impl LocatorState {
    /// When the next probe goes out.
    pub fn next_probe(&self) -> Instant {
        self.next
    }
}

pub struct Prober {
    config: ProbingConfig,
    locators: HashMap<IpAddr, LocatorState>,
    /// Outstanding probe nonce -> locator.
    nonces: HashMap<u64, IpAddr>,
    /// (due, locator); an entry whose time is not the locator's `next` is stale.
    timers: BinaryHeap<Reverse<(Instant, IpAddr)>>,
    /// Probes due, taken from `timers`, waiting for the budget: (due, locator), oldest first.
    due: VecDeque<(Instant, IpAddr)>,
    /// How many of `due`, from the front, are already counted as deferred.
    due_counted: usize,
    /// `max_probes_per_second`, as one probe per 1/max.
    budget: KeyedLimiter<()>,
    /// When the budget allows the next probe, while `due` is not empty.
    retry: Option<Instant>,
    /// RFC 9300 §10: "An ETR MUST rate limit the action it takes when it detects changes in
    /// the Locator-Status-Bits": per EID-prefix, and in all.
    status_per_prefix: KeyedLimiter<EidPrefix>,
    status_all: KeyedLimiter<()>,
    stats: ProbeStats,
}

impl Prober {
    pub fn new(config: ProbingConfig) -> Self {
        // Paced rather than a burst of a second's worth: then no second, wherever it starts,
        // sees more than the cap. (Two keys' room: a full table refuses even the keys it holds.)
        let pace = Duration::from_secs(1).checked_div(config.max_probes_per_second).unwrap_or(Duration::ZERO);
        Prober {
            config,
            locators: HashMap::new(),
            nonces: HashMap::new(),
            timers: BinaryHeap::new(),
            due: VecDeque::new(),
            due_counted: 0,
            budget: KeyedLimiter::one_per(pace, 2),
            retry: None,
            status_per_prefix: KeyedLimiter::per_second(STATUS_CHANGES_PER_PREFIX, MAX_STATUS_PREFIXES),
            status_all: KeyedLimiter::per_second(STATUS_CHANGES_IN_ALL, 2),
            stats: ProbeStats::default(),
        }
    }

    pub fn config(&self) -> &ProbingConfig {
        &self.config
    }

    pub fn stats(&self) -> &ProbeStats {
        &self.stats
    }

    /// Every probed locator and its state, in no particular order.
    pub fn locators(&self) -> impl Iterator<Item = (IpAddr, &LocatorState)> + '_ {
        self.locators.iter().map(|(a, s)| (*a, s))
    }

    pub fn locator(&self, addr: IpAddr) -> Option<&LocatorState> {
        self.locators.get(&addr)
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        // With probes waiting for the budget, nothing can go out before it allows one.
        self.retry.filter(|_| !self.due.is_empty()).or_else(|| self.timers.peek().map(|Reverse((t, _))| *t))
    }

    fn timers_for(&self, addr: IpAddr) -> (Duration, u32, bool) {
        match &self.config.fast {
            Some(f) if f.peers.contains(&addr) => (f.interval, f.misses_to_down, true),
            _ => (self.config.interval, self.config.misses_to_down, false),
        }
    }

    /// Starts probing the locators that entered the map-cache and forgets those that left.
    pub fn sync(&mut self, now: Instant, cache: &mut MapCache) {
        for (addr, present) in cache.take_locator_changes() {
            if present {
                if self.locators.contains_key(&addr) {
                    continue;
                }
                let (interval, _, fast) = self.timers_for(addr);
                let next = now + phase(addr, interval);
                let state = LocatorState {
                    up: true,
                    since: now,
                    rtt: None,
                    last_reply: None,
                    misses: 0,
                    fast,
                    probes: 0,
                    replies: 0,
                    echo_nonce: false,
                    last_hint: None,
                    outstanding: VecDeque::new(),
                    answered: true,
                    next,
                };
                self.locators.insert(addr, state);
                self.timers.push(Reverse((next, addr)));
            } else if let Some(s) = self.locators.remove(&addr) {
                for (n, _) in s.outstanding {
                    self.nonces.remove(&n);
                }
                // Gone from the cache: if it comes back, it starts afresh.
                cache.set_locator_down(addr, false);
            }
        }
    }

    /// Sends the probes due at `now` (from `rlocs`, our RLOCs) and marks down the locators that
    /// missed too many. Publishes the map-cache when a locator changed state.
    pub fn handle_timeout(
        &mut self,
        now: Instant,
        cache: &mut MapCache,
        rlocs: &[IpAddr],
        rng: &mut StdRng,
        io: &mut Io,
    ) {
        self.sync(now, cache);
        // Every probe due joins those waiting for the budget, behind them: oldest first.
        while let Some(&Reverse((t, addr))) = self.timers.peek() {
            if t > now {
                break;
            }
            self.timers.pop();
            if self.locators.get(&addr).is_some_and(|s| s.next == t) {
                self.due.push_back((t, addr));
            }
        }
        let mut changed = false;
        while let Some(&(t, addr)) = self.due.front() {
            // Gone from the cache meanwhile, or rescheduled: not this probe any more.
            let current = self.locators.get(&addr).is_some_and(|s| s.next == t);
            if current && !self.budget.check(now, &()) {
                // Deferred, not missed: a locator's misses are counted only when its next probe
                // actually goes out.
                self.stats.probes_deferred += (self.due.len() - self.due_counted) as u64;
                self.due_counted = self.due.len();
                self.retry = Some(now + Duration::from_secs(1) / self.config.max_probes_per_second.max(1));
                break;
            }
            self.due.pop_front();
            self.due_counted = self.due_counted.saturating_sub(1);
            let (interval, misses_to_down, _) = self.timers_for(addr);
            let Some(s) = self.locators.get_mut(&addr).filter(|_| current) else { continue };
            if !s.answered {
                s.misses = s.misses.saturating_add(1);
                self.stats.misses += 1;
                if s.up && s.misses >= misses_to_down.max(1) {
                    s.up = false;
                    s.since = now;
                    self.stats.downs += 1;
                    let n = cache.set_locator_down(addr, true);
                    changed = true;
                    tracing::info!(rloc = %addr, misses = s.misses, entries = n, "locator down: probes unanswered");
                    io.events.push_back(Event::LocatorDown { rloc: addr });
                }
            }
            // A late call (a busy or suspended host) must not send a burst of catch-up probes
            // that would count each other as missed.
            s.next = if t + interval > now { t + interval } else { now + interval };
            self.timers.push(Reverse((s.next, addr)));
            // The probe: from our RLOC of the locator's family, for one EID-prefix cached for it.
            let (Some(src), Some(prefix)) =
                (rlocs.iter().copied().find(|a| a.is_ipv4() == addr.is_ipv4()), cache.locator_entry(addr))
            else {
                continue;
            };
            let mut nonce = rng.next_u64();
            while self.nonces.contains_key(&nonce) {
                nonce = rng.next_u64();
            }
            if s.outstanding.len() > misses_to_down as usize {
                if let Some((old, _)) = s.outstanding.pop_front() {
                    self.nonces.remove(&old);
                }
            }
            s.outstanding.push_back((nonce, now));
            s.answered = false;
            s.probes += 1;
            self.nonces.insert(nonce, addr);
            self.stats.probes_sent += 1;
            let req = probe_request(nonce, &prefix, rlocs);
            io.send("Map-Request", Some(src), SocketAddr::new(addr, CONTROL_PORT), req.to_bytes());
        }
        if changed {
            cache.publish();
        }
    }

    /// A Map-Reply with the probe bit, from `remote`.
    pub fn handle_reply(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        reply: &MapReply,
        cache: &mut MapCache,
        io: &mut Io,
    ) {
        let Some(&addr) = self.nonces.get(&reply.nonce) else {
            self.stats.replies_unmatched += 1;
            io.refuse(now, None, Drop::NoMatchingNonce, remote, "probe Map-Reply matches no outstanding probe");
            return;
        };
        if remote.ip() != addr {
            self.stats.replies_wrong_source += 1;
            io.refuse(
                now,
                None,
                Drop::Unexpected,
                remote,
                "probe Map-Reply from another address than the probed locator",
            );
            return;
        }
        self.nonces.remove(&reply.nonce);
        let Some(s) = self.locators.get_mut(&addr) else { return };
        let Some(i) = s.outstanding.iter().position(|(n, _)| *n == reply.nonce) else { return };
        let Some((_, sent)) = s.outstanding.remove(i) else { return };
        s.rtt = Some(now.saturating_duration_since(sent));
        s.last_reply = Some(now);
        s.misses = 0;
        s.answered = true;
        s.replies += 1;
        s.echo_nonce = reply.echo_nonce_capable;
        self.stats.replies += 1;
        if !s.up {
            s.up = true;
            s.since = now;
            self.stats.ups += 1;
            let n = cache.set_locator_down(addr, false);
            cache.publish();
            tracing::info!(rloc = %addr, rtt_ms = s.rtt.map(|d| d.as_secs_f64() * 1e3), entries = n, "locator up: probe answered");
            io.events.push_back(Event::LocatorUp { rloc: addr });
        }
    }

    /// A hint that locator `addr` is unreachable (ICMP unreachable, a route withdrawn, a nonce
    /// not echoed: RFC 9300 §10). Hints are unauthenticated, so they only speed up what probing would find: the
    /// locator is marked down at once, and the next probe reply brings it back as after missed
    /// probes. Only for locators in the map-cache, at most once per probe interval each.
    /// Replies to probes sent before the hint no longer count: they may predate the failure.
    /// Returns whether the locator went down.
    pub fn handle_unreachable(
        &mut self,
        now: Instant,
        addr: IpAddr,
        reason: Unreachable,
        cache: &mut MapCache,
        io: &mut Io,
    ) -> bool {
        self.sync(now, cache);
        let (interval, _, _) = self.timers_for(addr);
        let Some(s) = self.locators.get_mut(&addr) else {
            self.stats.hints_unknown += 1;
            return false;
        };
        // Echo-nonce keeps its own counters; these are the underlay's hints.
        let hint = reason != Unreachable::NoEcho;
        if !s.up || s.last_hint.is_some_and(|t| now.saturating_duration_since(t) < interval) {
            self.stats.hints_ignored += u64::from(hint);
            return false;
        }
        s.up = false;
        s.since = now;
        s.last_hint = Some(now);
        s.answered = true;
        for (n, _) in s.outstanding.drain(..) {
            self.nonces.remove(&n);
        }
        self.stats.hints_applied += u64::from(hint);
        self.stats.downs += 1;
        let n = cache.set_locator_down(addr, true);
        cache.publish();
        tracing::info!(rloc = %addr, reason = reason.name(), entries = n, "locator down: unreachability hint");
        io.events.push_back(Event::LocatorDown { rloc: addr });
        true
    }

    /// Applies locator-status bits the data plane reported (see [`status_bits_change`]); the
    /// map-cache checks again that they came from one of the mapping's locators.
    pub fn handle_status_bits(&mut self, now: Instant, change: &StatusBits, cache: &mut MapCache) {
        if !self.config.status_bits {
            self.stats.status_bits_refused += 1;
            return;
        }
        if !self.status_per_prefix.check(now, &change.prefix) || !self.status_all.check(now, &()) {
            self.stats.status_bits_rate_limited += 1;
            return;
        }
        match cache.set_status_bits(&change.prefix, change.from, change.bits) {
            Ok(changed) => {
                self.stats.status_bits_applied += 1;
                if changed {
                    tracing::info!(prefix = %change.prefix, from = %change.from, bits = format_args!("{:#x}", change.bits), "locator-status bits applied");
                    cache.publish();
                }
            }
            Err(_) => self.stats.status_bits_refused += 1,
        }
    }
}

/// Locator-status bit changes applied per second, per EID-prefix and in all, and the most
/// EID-prefixes tracked for the limit.
const STATUS_CHANGES_PER_PREFIX: u32 = 5;
const STATUS_CHANGES_IN_ALL: u32 = 200;
const MAX_STATUS_PREFIXES: usize = 100_000;

/// When, within the first tenth of an interval, a new locator is first probed: a hash of its
/// address, so locators learnt together are not probed in step, and the simulator replays.
fn phase(addr: IpAddr, interval: Duration) -> Duration {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    addr.hash(&mut h);
    let span = (interval.as_nanos() / 10).max(1);
    Duration::from_nanos((u128::from(h.finish()) % span) as u64)
}

/// An RLOC-probe: a Map-Request with the probe bit for `prefix`, naming our RLOCs.
fn probe_request(nonce: u64, prefix: &EidPrefix, rlocs: &[IpAddr]) -> loci_wire::map_request::MapRequest {
    let mut req = crate::mapping::map_request(nonce, prefix, rlocs.iter().map(|&a| Address::from(a)).collect());
    req.probe = true;
    req
}

/// Locator-status bits worth telling the control plane about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusBits {
    /// The cached mapping of the packet's inner source.
    pub prefix: EidPrefix,
    /// The outer source: one of that mapping's locators.
    pub from: IpAddr,
    pub bits: u32,
}

/// The data plane's check of a decapsulated packet's locator-status bits (`lsb`, present when
/// the L bit was set): `Some` when they are `honoured` (configured for a private underlay),
/// the packet's outer source `outer_src` is a locator of the mapping cached for its inner source
/// `inner_src`, and they say something other than what that mapping shows. Anything else is
/// `None`: bits from an address that is not one of the site's locators are ignored (spoofed or
/// stale), and an unchanged state costs nothing beyond one lookup. Allocation-free.
pub fn status_bits_change(
    honoured: bool,
    snapshot: &Snapshot,
    iid: u32,
    inner_src: IpAddr,
    outer_src: IpAddr,
    lsb: Option<u32>,
) -> Option<StatusBits> {
    let bits = lsb.filter(|_| honoured)?;
    let m = snapshot.lookup(iid, inner_src)?;
    if !m.rlocs.iter().any(|r| r.addr == outer_src) {
        return None;
    }
    (status_bits_down(bits, m.rlocs.len()) != m.status_bits_down()).then_some(StatusBits {
        prefix: m.prefix,
        from: outer_src,
        bits,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::locator::{Families, Rloc};
    use crate::map_cache::{Forward, MapCacheConfig, Mapping};
    use loci_wire::map_request::MapRequest;
    use loci_wire::{Action, Locator, MapRecord};
    use rand::SeedableRng;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    const OURS: &str = "198.51.100.1";

    /// A cache holding 10.1.1.0/24 -> A (p1), B (p1), C (p2), and 10.2.0.0/16 -> A.
    fn cache(t0: Instant) -> MapCache {
        let mut c = MapCache::new(MapCacheConfig::default());
        let rlocs = vec![
            Rloc::new(ip("192.0.2.1"), 1, 50, true),
            Rloc::new(ip("192.0.2.2"), 1, 50, true),
            Rloc::new(ip("192.0.2.3"), 2, 50, true),
        ];
        let ttl = Duration::from_secs(3600);
        c.insert(Mapping::new("10.1.1.0/24".parse().unwrap(), rlocs, Action::NO_ACTION, ttl, t0), ip("10.1.1.1"));
        let one = vec![Rloc::new(ip("192.0.2.1"), 1, 50, true)];
        c.insert(Mapping::new("10.2.0.0/16".parse().unwrap(), one, Action::NO_ACTION, ttl, t0), ip("10.2.0.1"));
        c.publish();
        c
    }

    /// The probes sent: (locator, request).
    fn probes(io: &mut Io) -> Vec<(IpAddr, MapRequest)> {
        io.transmits
            .drain(..)
            .map(|t| {
                assert_eq!(t.dst.port(), 4342);
                assert_eq!(t.src, Some(ip(OURS)));
                (t.dst.ip(), MapRequest::parse(&t.data).unwrap())
            })
            .collect()
    }

    fn reply(nonce: u64, locators: &[&str]) -> MapReply {
        let (eid, eid_mask_len) = crate::mapping::eid_to_wire(&"10.1.1.0/24".parse().unwrap());
        let locators = locators
            .iter()
            .map(|a| Locator {
                priority: 1,
                weight: 1,
                m_priority: 255,
                m_weight: 0,
                local: true,
                probed: false,
                reachable: true,
                address: Address::from(ip(a)),
            })
            .collect();
        MapReply {
            probe: true,
            echo_nonce_capable: false,
            security: false,
            nonce,
            records: vec![MapRecord {
                ttl: 10,
                eid_mask_len,
                action: Action::NO_ACTION,
                authoritative: true,
                map_version: 0,
                eid,
                locators,
            }],
            auth: None,
        }
    }

    struct Rig {
        t: Instant,
        cache: MapCache,
        prober: Prober,
        rng: StdRng,
        io: Io,
        /// Replies on their way: (arrival, from, nonce).
        answers: Vec<(Instant, IpAddr, u64)>,
    }

    impl Rig {
        fn new(config: ProbingConfig) -> Rig {
            let t = Instant::now();
            let (cache, prober, rng) = (cache(t), Prober::new(config), StdRng::seed_from_u64(7));
            Rig { t, cache, prober, rng, io: Io::default(), answers: Vec::new() }
        }

        /// Runs the prober for `d`, every locator but those in `dead` answering after 10 ms.
        /// Returns the probes sent.
        fn run(&mut self, d: Duration, dead: &[&str]) -> Vec<(IpAddr, MapRequest)> {
            let end = self.t + d;
            let mut sent = Vec::new();
            // The first call finds the cache's locators.
            self.prober.handle_timeout(self.t, &mut self.cache, &[ip(OURS)], &mut self.rng, &mut self.io);
            loop {
                self.answers.sort();
                let answer = self.answers.first().map(|a| a.0);
                let Some(next) = [self.prober.poll_timeout(), answer].into_iter().flatten().min().filter(|&t| t <= end)
                else {
                    break;
                };
                self.t = next;
                if answer == Some(next) {
                    let (_, from, nonce) = self.answers.remove(0);
                    let r = reply(nonce, &[]);
                    self.prober.handle_reply(next, SocketAddr::new(from, 4342), &r, &mut self.cache, &mut self.io);
                    continue;
                }
                self.prober.handle_timeout(next, &mut self.cache, &[ip(OURS)], &mut self.rng, &mut self.io);
                for (to, req) in probes(&mut self.io) {
                    if !dead.iter().any(|d| ip(d) == to) {
                        self.answers.push((next + Duration::from_millis(10), to, req.nonce));
                    }
                    sent.push((to, req));
                }
            }
            self.t = end;
            sent
        }

        fn state(&self, a: &str) -> &LocatorState {
            self.prober.locator(ip(a)).unwrap()
        }
    }

    #[test]
    fn one_probe_per_locator_per_interval() {
        let mut r = Rig::new(ProbingConfig::default());
        let sent = r.run(Duration::from_millis(9_950), &[]);
        // Three locators, whatever the number of entries that use them; 10 probes each (the
        // first within 100 ms).
        for a in ["192.0.2.1", "192.0.2.2", "192.0.2.3"] {
            let to: Vec<_> = sent.iter().filter(|(t, _)| *t == ip(a)).collect();
            assert_eq!(to.len(), 10, "{a}");
            let (_, req) = to[0];
            assert!(req.probe);
            assert_eq!(req.itr_rlocs, [Address::from(ip(OURS))]);
            assert_eq!(r.state(a).rtt, Some(Duration::from_millis(10)));
            assert!(r.state(a).up);
        }
        let nonces: std::collections::HashSet<u64> = sent.iter().map(|(_, q)| q.nonce).collect();
        assert_eq!(nonces.len(), sent.len(), "a fresh nonce per probe");
        assert_eq!(r.prober.stats().replies, 30);
    }

    /// What the data plane picks for 1,000 flows to 10.1.1.9.
    fn picks(c: &MapCache) -> Vec<IpAddr> {
        let s = c.snapshot();
        (0..1000u32)
            .map(|f| match s.forward(0, ip("10.1.1.9"), f.wrapping_mul(0x9e37_79b9), Families::ALL) {
                Forward::Encapsulate(a) => a,
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn misses_mark_down_at_once_and_a_reply_brings_it_back() {
        let mut r = Rig::new(ProbingConfig::default());
        r.run(Duration::from_millis(2050), &[]);
        let before = picks(&r.cache);
        assert!(before.iter().all(|a| *a == ip("192.0.2.1") || *a == ip("192.0.2.2")));
        // 192.0.2.1 stops answering: two misses, then down in the published snapshot.
        r.run(Duration::from_millis(3000), &["192.0.2.1"]);
        assert!(!r.state("192.0.2.1").up);
        assert_eq!(r.state("192.0.2.1").misses, 2);
        assert!(r.cache.locator_down(ip("192.0.2.1")));
        let after = picks(&r.cache);
        for (b, a) in before.iter().zip(&after) {
            assert_eq!(*a, ip("192.0.2.2"), "the next usable locator by priority");
            if *b == ip("192.0.2.2") {
                assert_eq!(a, b, "flows on the surviving locator stay put");
            }
        }
        // Both p1 locators down: p2 takes over; the /16 (only 192.0.2.1) keeps using it.
        r.run(Duration::from_millis(3000), &["192.0.2.1", "192.0.2.2"]);
        assert!(picks(&r.cache).iter().all(|a| *a == ip("192.0.2.3")));
        let s = r.cache.snapshot();
        assert_eq!(s.forward(0, ip("10.2.3.4"), 1, Families::ALL), Forward::Encapsulate(ip("192.0.2.1")));
        assert!(s.lookup(0, ip("10.2.3.4")).unwrap().rlocs[0].down);
        // Back: the first answered probe restores each, and the flows return where they were.
        r.run(Duration::from_millis(1050), &[]);
        assert!(r.state("192.0.2.1").up && r.state("192.0.2.2").up);
        assert_eq!(picks(&r.cache), before);
        let st = r.prober.stats();
        assert_eq!((st.downs, st.ups), (2, 2));
        let events: Vec<_> = r.io.events.drain(..).collect();
        assert_eq!(
            events,
            [
                Event::LocatorDown { rloc: ip("192.0.2.1") },
                Event::LocatorDown { rloc: ip("192.0.2.2") },
                Event::LocatorUp { rloc: ip("192.0.2.1") },
                Event::LocatorUp { rloc: ip("192.0.2.2") },
            ]
        );
    }

    #[test]
    fn unreachable_hint_marks_down_and_the_next_probe_brings_back() {
        let mut r = Rig::new(ProbingConfig::default());
        r.run(Duration::from_millis(2050), &[]);
        let before = picks(&r.cache);
        r.io.events.clear();
        let (t, a) = (r.t, ip("192.0.2.1"));
        assert!(r.prober.handle_unreachable(t, a, Unreachable::RouteWithdrawn, &mut r.cache, &mut r.io));
        assert!(!r.state("192.0.2.1").up && r.cache.locator_down(a));
        assert!(picks(&r.cache).iter().all(|x| *x == ip("192.0.2.2")), "skipped at once, in the published snapshot");
        // Unknown addresses, a locator already down and a repeat within the interval: ignored.
        assert!(!r.prober.handle_unreachable(t, ip("203.0.113.9"), Unreachable::Icmp, &mut r.cache, &mut r.io));
        assert!(!r.prober.handle_unreachable(t, a, Unreachable::Icmp, &mut r.cache, &mut r.io));
        let st = r.prober.stats();
        assert_eq!((st.hints_applied, st.hints_unknown, st.hints_ignored, st.downs), (1, 1, 1, 1));
        // The next probe is answered: back, and the flows return where they were.
        r.run(Duration::from_millis(1050), &[]);
        assert!(r.state("192.0.2.1").up);
        assert_eq!(picks(&r.cache), before);
        assert_eq!(
            r.io.events.drain(..).collect::<Vec<_>>(),
            [Event::LocatorDown { rloc: a }, Event::LocatorUp { rloc: a }]
        );
        // Rate limited: a second hint within an interval of the first is ignored even though the
        // locator is up again; after the interval it applies.
        assert!(!r.prober.handle_unreachable(
            t + Duration::from_millis(999),
            a,
            Unreachable::Icmp,
            &mut r.cache,
            &mut r.io
        ));
        assert!(r.prober.handle_unreachable(r.t, a, Unreachable::Icmp, &mut r.cache, &mut r.io));
    }

    #[test]
    fn a_reply_to_a_probe_sent_before_the_hint_does_not_bring_it_back() {
        let mut r = Rig::new(ProbingConfig::default());
        r.run(Duration::from_millis(1500), &[]);
        // Until a probe to the locator is out (its reply comes 10 ms later).
        let a = ip("192.0.2.1");
        while !r.answers.iter().any(|x| x.1 == a) {
            r.run(Duration::from_millis(1), &[]);
        }
        let outstanding: Vec<u64> = r.answers.iter().filter(|x| x.1 == a).map(|x| x.2).collect();
        assert!(!outstanding.is_empty(), "a probe on its way: {:?}", r.answers);
        let t = r.t;
        assert!(r.prober.handle_unreachable(t, a, Unreachable::Icmp, &mut r.cache, &mut r.io));
        for n in outstanding {
            let late = reply(n, &[]);
            r.prober.handle_reply(t, SocketAddr::new(a, 4342), &late, &mut r.cache, &mut r.io);
        }
        assert!(!r.state("192.0.2.1").up, "the reply may predate the failure");
    }

    #[test]
    fn fast_profile_only_for_its_peers() {
        let config = ProbingConfig { fast: Some(FastFailover::new(vec![ip("192.0.2.1")])), ..Default::default() };
        let mut r = Rig::new(config);
        let sent = r.run(Duration::from_millis(2010), &[]);
        // Every 200 ms against every second (the phase decides whether the one at 2 s is in).
        assert!((10..=11).contains(&sent.iter().filter(|(t, _)| *t == ip("192.0.2.1")).count()));
        assert!((2..=3).contains(&sent.iter().filter(|(t, _)| *t == ip("192.0.2.2")).count()));
        assert!(r.state("192.0.2.1").fast && !r.state("192.0.2.2").fast);
        // Down within a second of the peer dying.
        let died = r.t;
        while r.state("192.0.2.1").up {
            r.run(Duration::from_millis(10), &["192.0.2.1"]);
        }
        assert!(r.t - died <= Duration::from_millis(1000), "{:?}", r.t - died);
    }

    #[test]
    fn forged_and_misdirected_replies_change_nothing() {
        // Uncapped: the probes due at one instant all go out at once.
        let mut r = Rig::new(ProbingConfig { max_probes_per_second: 0, ..Default::default() });
        r.run(Duration::from_millis(2500), &["192.0.2.1"]);
        assert!(!r.state("192.0.2.1").up);
        r.prober.handle_timeout(r.t + Duration::from_millis(600), &mut r.cache, &[ip(OURS)], &mut r.rng, &mut r.io);
        let nonce = probes(&mut r.io).iter().find(|(t, _)| *t == ip("192.0.2.1")).unwrap().1.nonce;
        let now = r.t + Duration::from_millis(610);
        let from = |a: &str| SocketAddr::new(ip(a), 4342);
        // Wrong nonce, right source.
        r.prober.handle_reply(now, from("192.0.2.1"), &reply(nonce ^ 1, &[]), &mut r.cache, &mut r.io);
        // Right nonce, from elsewhere (another locator of the set, or an attacker).
        r.prober.handle_reply(now, from("192.0.2.2"), &reply(nonce, &[]), &mut r.cache, &mut r.io);
        r.prober.handle_reply(now, from("203.0.113.66"), &reply(nonce, &[]), &mut r.cache, &mut r.io);
        assert!(!r.state("192.0.2.1").up);
        assert_eq!(r.prober.stats().replies_unmatched, 1);
        assert_eq!(r.prober.stats().replies_wrong_source, 2);
        assert_eq!(r.io.stats.dropped(Drop::NoMatchingNonce), 1);
        // The real one, carrying an extra locator: the state changes, the mapping does not.
        let before = r.cache.get(&"10.1.1.0/24".parse().unwrap()).unwrap().rlocs.len();
        r.prober.handle_reply(
            now,
            from("192.0.2.1"),
            &reply(nonce, &["192.0.2.1", "203.0.113.66"]),
            &mut r.cache,
            &mut r.io,
        );
        assert!(r.state("192.0.2.1").up);
        assert_eq!(r.cache.get(&"10.1.1.0/24".parse().unwrap()).unwrap().rlocs.len(), before);
        assert!(r.cache.locators().all(|(a, _)| a != ip("203.0.113.66")), "a probe reply adds no locator");
        // Replayed: the nonce is spent.
        r.prober.handle_reply(now, from("192.0.2.1"), &reply(nonce, &[]), &mut r.cache, &mut r.io);
        assert_eq!(r.prober.stats().replies_unmatched, 2);
    }

    #[test]
    fn a_late_timer_sends_one_probe_not_a_burst() {
        // Uncapped (a cap would pace the three due at once, 1 ms apart).
        let mut r = Rig::new(ProbingConfig { max_probes_per_second: 0, ..Default::default() });
        r.run(Duration::from_millis(1500), &[]);
        let late = r.t + Duration::from_secs(10);
        r.prober.handle_timeout(late, &mut r.cache, &[ip(OURS)], &mut r.rng, &mut r.io);
        assert_eq!(probes(&mut r.io).len(), 3, "one per locator");
        assert!(r.prober.locators().all(|(_, s)| s.up && s.misses == 0));
        assert_eq!(r.prober.poll_timeout(), Some(late + Duration::from_secs(1)));
    }

    #[test]
    fn locators_leaving_the_cache_are_no_longer_probed() {
        let mut r = Rig::new(ProbingConfig::default());
        r.run(Duration::from_millis(1500), &["192.0.2.3"]);
        r.run(Duration::from_millis(1000), &["192.0.2.3"]);
        assert!(!r.state("192.0.2.3").up);
        r.cache.remove(&"10.1.1.0/24".parse().unwrap());
        let sent = r.run(Duration::from_millis(3000), &[]);
        assert!(sent.iter().all(|(t, _)| *t == ip("192.0.2.1")), "only the /16's locator is left");
        assert!(r.prober.locator(ip("192.0.2.3")).is_none());
        assert!(!r.cache.locator_down(ip("192.0.2.3")), "forgotten, so it starts afresh");
    }

    #[test]
    fn no_rloc_of_the_family_no_probe() {
        let mut r = Rig::new(ProbingConfig::default());
        let rlocs = vec![Rloc::new(ip("2001:db8::1"), 1, 1, true)];
        let m =
            Mapping::new("[0]2001:db8:1::/48".parse().unwrap(), rlocs, Action::NO_ACTION, Duration::from_secs(60), r.t);
        r.cache.insert(m, ip("2001:db8:1::1"));
        let sent = r.run(Duration::from_millis(5000), &[]);
        assert!(sent.iter().all(|(t, _)| t.is_ipv4()));
        assert!(r.state("2001:db8::1").up, "unprobed, so never marked down");
    }

    #[test]
    fn status_bits_only_when_honoured_and_from_a_locator() {
        let t0 = Instant::now();
        let mut c = cache(t0);
        let mut p = Prober::new(ProbingConfig { status_bits: true, ..Default::default() });
        let src = ip("10.1.1.9");
        let (a, b, stranger) = (ip("192.0.2.1"), ip("192.0.2.2"), ip("203.0.113.66"));
        let snap = c.snapshot();
        // All up, as the cache shows: nothing to report (the per-packet common case).
        assert_eq!(status_bits_change(true, &snap, 0, src, a, Some(0b111)), None);
        // Bits beyond the locator count do not matter.
        assert_eq!(status_bits_change(true, &snap, 0, src, a, Some(u32::MAX)), None);
        // Not honoured, no L bit, a spoofed source, an unknown EID: ignored.
        assert_eq!(status_bits_change(false, &snap, 0, src, a, Some(0b110)), None);
        assert_eq!(status_bits_change(true, &snap, 0, src, a, None), None);
        assert_eq!(status_bits_change(true, &snap, 0, src, stranger, Some(0b110)), None);
        assert_eq!(status_bits_change(true, &snap, 0, ip("10.9.9.9"), a, Some(0b110)), None);
        // Locator 0 down, said by locator 1.
        let change = status_bits_change(true, &snap, 0, src, b, Some(0b110)).unwrap();
        assert_eq!(change, StatusBits { prefix: "10.1.1.0/24".parse().unwrap(), from: b, bits: 0b110 });
        p.handle_status_bits(t0, &change, &mut c);
        let snap = c.snapshot();
        let m = snap.lookup(0, src).unwrap();
        assert!(m.rlocs[0].down && !m.rlocs[1].down);
        assert_eq!(snap.forward(0, src, 1, Families::ALL), Forward::Encapsulate(b));
        // Per EID-prefix: the /16 still uses 192.0.2.1.
        assert!(!snap.lookup(0, ip("10.2.0.1")).unwrap().rlocs[0].down);
        assert_eq!(status_bits_change(true, &snap, 0, src, b, Some(0b110)), None, "now shown: no repeat");
        // A forged change that reached the control plane anyway is refused there too.
        p.handle_status_bits(t0, &StatusBits { bits: 0b111, from: stranger, ..change }, &mut c);
        assert!(c.snapshot().lookup(0, src).unwrap().rlocs[0].down);
        assert_eq!(p.stats().status_bits_refused, 1);
        // Back up when the bit returns to 1.
        let up = status_bits_change(true, &c.snapshot(), 0, src, a, Some(0b111)).unwrap();
        p.handle_status_bits(t0, &up, &mut c);
        assert!(!c.snapshot().lookup(0, src).unwrap().rlocs[0].down);
        // A node that does not honour them refuses what a data plane might still report.
        let mut off = Prober::new(ProbingConfig::default());
        off.handle_status_bits(t0, &change, &mut c);
        assert!(!c.snapshot().lookup(0, src).unwrap().rlocs[0].down);
    }
}
