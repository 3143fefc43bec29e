//! ITR control plane (RFC 9301 §5.3-§5.5, §8.1): resolves the destinations the data plane
//! misses by sending Encapsulated Map-Requests to the configured Map-Resolvers, and fills the
//! map-cache from the Map-Replies.
//!
//! * A miss (IID, destination EID, source EID) starts a resolution unless one covering that EID
//!   is already pending (the pending table is bounded and deduplicated).
//! * Map-Requests for one EID-prefix go out at most once per `request_interval` (1 s); after
//!   `max_attempts` (10) unanswered ones the ITR waits `hold_down` (30 s) (RFC 9301 §5.3), and
//!   only starts again if traffic still wants the EID.
//! * Each retransmission goes to the next Map-Resolver; a resolver that lets a request time out
//!   loses its place as the first choice to the next one, and the resolver that answered
//!   becomes the first choice. After `resolver_return` away from the first configured resolver
//!   (the preferred one), new resolutions try it first again; if it is still silent, that
//!   costs one retransmission interval.
//! * Every request carries a fresh random nonce; a Map-Reply is accepted only if its nonce is
//!   outstanding, and only its records that cover the requested EID (or lie inside the one
//!   that does) are installed. Anything else is dropped and counted: an off-path sender cannot
//!   poison the cache without guessing a 64-bit nonce.
//! * Entries in use are refreshed before their TTL runs out (see [`crate::map_cache`]).
//! * Mobility (RFC 9301 §6.1, RFC 9437): a Solicit-Map-Request is never trusted. For an EID we
//!   have cached, it starts an SMR-invoked Map-Request through the Map-Resolver (rate limited
//!   per source and EID) and the nonce-checked answer replaces the entry. With `subscribe`, the
//!   first Map-Request for an EID asks to be notified (I and N bits); the Map-Server's
//!   Map-Notifies, authenticated with the pub/sub key and with nonces that only grow, update the
//!   map-cache and are acknowledged with a Map-Notify-Ack.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use loci_wire::auth::{self, KeyRing, SendPolicy};
use loci_wire::map_notify::MapNotify;
use loci_wire::map_register::XtrId;
use loci_wire::map_reply::MapReply;
use loci_wire::map_request::MapRequest;
use loci_wire::{Action, Address, MapRecord, Wire};
use rand::rngs::StdRng;
use rand::RngCore;

use crate::echo_nonce::{EchoConfig, EchoNonce};
use crate::eid::EidPrefix;
use crate::locator::Rloc;
use crate::map_cache::{CacheEvent, MapCache, MapCacheConfig, MapCacheReader, Mapping};
use crate::mapping::{eid_from_wire, eid_to_wire, encapsulate_request};
use crate::node::{Io, CONTROL_PORT};
use crate::prefix_table::PrefixTable;
use crate::probing::{Prober, ProbingConfig, StatusBits, Unreachable};
use crate::ratelimit::KeyedLimiter;
use crate::stats::Drop;

/// ITR settings. Defaults follow RFC 9301 §5.3.
#[derive(Debug, Clone)]
pub struct ItrConfig {
    /// Map-Resolvers, first choice first.
    pub map_resolvers: Vec<SocketAddr>,
    /// Our RLOCs: the ITR-RLOCs of Map-Requests (replies come back to them) and the source of
    /// the Encapsulated Map-Requests (one of the resolver's family).
    pub rlocs: Vec<IpAddr>,
    pub cache: MapCacheConfig,
    /// Most resolutions in flight; misses beyond it are dropped and counted.
    pub max_pending: usize,
    /// Least time between two Map-Requests for one EID-prefix.
    pub request_interval: Duration,
    /// Unanswered Map-Requests in a row before pausing.
    pub max_attempts: u32,
    /// The pause.
    pub hold_down: Duration,
    /// Map-Requests per second over all EIDs (0: no limit besides the per-prefix one).
    pub requests_per_second: u32,
    /// Act on Solicit-Map-Requests (with an SMR-invoked Map-Request; RFC 9301 §6.1).
    pub smr: bool,
    /// At most one SMR-invoked Map-Request per (SMR source, EID) per this (RFC 9301 §6.1: 3 s).
    pub smr_interval: Duration,
    /// Subscribe to resolved mappings (RFC 9437). Needs `pubsub_key`; on by default.
    pub subscribe: bool,
    /// Our identity in subscriptions (the I bit's xTR-ID and Site-ID).
    pub xtr_id: u128,
    pub site_id: u64,
    /// Key ID and secret the Map-Servers sign publications with (the pub/sub key).
    pub pubsub_key: Option<(u8, Vec<u8>)>,
    /// How long after leaving the preferred (first) Map-Resolver new resolutions try it again.
    pub resolver_return: Duration,
    /// RLOC probing of the cached locators ([`crate::probing`]); `None`: off.
    pub probing: Option<ProbingConfig>,
    /// A Proxy-ITR (RFC 6832): Map-Requests carry the P bit.
    pub pitr: bool,
    /// Echo-nonce ([`crate::echo_nonce`]); `None`: off. Acts only with probing on, which
    /// brings back the locators it marks down.
    pub echo_nonce: Option<EchoConfig>,
}

impl Default for ItrConfig {
    fn default() -> Self {
        ItrConfig {
            map_resolvers: Vec::new(),
            rlocs: Vec::new(),
            cache: MapCacheConfig::default(),
            max_pending: 10_000,
            request_interval: Duration::from_secs(1),
            max_attempts: 10,
            hold_down: Duration::from_secs(30),
            requests_per_second: 1000,
            smr: true,
            smr_interval: Duration::from_secs(3),
            subscribe: true,
            xtr_id: 0,
            site_id: 0,
            pubsub_key: None,
            resolver_return: Duration::from_secs(60),
            probing: None,
            pitr: false,
            echo_nonce: None,
        }
    }
}

/// ITR counters. Names are stable (they appear in `loci show stats`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ItrStats {
    /// Misses reported by the data plane.
    pub misses: u64,
    /// Misses for an EID the cache already covers (the data plane's snapshot was older).
    pub misses_cached: u64,
    /// Misses for an EID whose resolution is already pending (or pausing).
    pub misses_pending: u64,
    /// Misses dropped because the pending table was full.
    pub misses_dropped: u64,
    pub requests: u64,
    /// Map-Requests that got no answer within `request_interval`.
    pub timeouts: u64,
    /// Resolutions that paused after `max_attempts` unanswered requests.
    pub hold_downs: u64,
    /// Map-Requests delayed by the global rate limit.
    pub requests_delayed: u64,
    pub replies_accepted: u64,
    /// Map-Replies whose nonce matched no outstanding request (dropped).
    pub replies_unmatched: u64,
    /// Records of accepted replies that did not cover the requested EID (dropped).
    pub records_refused: u64,
    pub installed: u64,
    pub negative_installed: u64,
    pub refreshes: u64,
    pub expired: u64,
    pub evicted: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Sending,
    /// Paused after `max_attempts`; `wanted` records misses during the pause.
    Holding {
        wanted: bool,
    },
}

#[derive(Debug, Clone, Copy)]
struct Attempt {
    nonce: u64,
    resolver: usize,
}

/// One resolution in flight, keyed by EID-prefix: the host prefix of a missed EID, or the
/// prefix of an entry being refreshed or flagged send-map-request.
#[derive(Debug, Clone)]
pub struct Pending {
    /// The EID asked for.
    pub eid: IpAddr,
    /// The source EID of the packet that missed (unspecified when unknown).
    pub source: IpAddr,
    /// Refreshing an entry in use (rather than resolving a miss).
    pub refresh: bool,
    /// Asked for by an SMR (the requests carry the s bit).
    pub smr_invoked: bool,
    /// The requests ask to subscribe (I and N bits).
    pub subscribe: bool,
    attempts: Vec<Attempt>,
    state: State,
    next: Instant,
    seq: u64,
}

impl Pending {
    /// Map-Requests sent in the current round.
    pub fn attempts(&self) -> usize {
        self.attempts.len()
    }

    /// Whether the resolution is pausing after unanswered requests.
    pub fn holding(&self) -> bool {
        matches!(self.state, State::Holding { .. })
    }
}

/// The first-choice Map-Resolver, and since when it is not the preferred one (index 0).
#[derive(Debug, Default)]
struct Choice {
    current: usize,
    left_preferred: Option<Instant>,
}

impl Choice {
    fn set(&mut self, r: usize, now: Instant) {
        if r == 0 {
            self.left_preferred = None;
        } else if self.left_preferred.is_none() {
            self.left_preferred = Some(now);
        }
        self.current = r;
    }
}

pub struct Itr {
    config: ItrConfig,
    cache: MapCache,
    pending: PrefixTable<Pending>,
    /// Outstanding nonce -> pending key.
    nonces: HashMap<u64, EidPrefix>,
    timers: BinaryHeap<Reverse<(Instant, u64, EidPrefix)>>,
    resolver: Choice,
    tokens: f64,
    refilled: Instant,
    next_seq: u64,
    stats: ItrStats,
    /// Logged once: no resolver can be reached from our RLOCs (a configuration error).
    warned_no_resolver: bool,
    /// Prefixes we are subscribed to, with the last publication nonce accepted for each.
    subscriptions: PrefixTable<Subscription>,
    smr_limiter: KeyedLimiter<(IpAddr, EidPrefix)>,
    prober: Option<Prober>,
    echo: Option<EchoNonce>,
}

/// A subscription (RFC 9437) as the ITR keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subscription {
    /// Nonce of the last Map-Notify accepted for it: a publication must be newer.
    pub last_nonce: u64,
    pub map_server: IpAddr,
    pub since: Instant,
}

/// Most SMR sources and EIDs the SMR rate limit tracks.
const MAX_SMR_KEYS: usize = 100_000;

impl Itr {
    pub fn new(config: ItrConfig, now: Instant) -> Self {
        let cache = MapCache::new(config.cache.clone());
        let tokens = f64::from(config.requests_per_second);
        let smr_limiter = KeyedLimiter::one_per(config.smr_interval, MAX_SMR_KEYS);
        let prober = config.probing.clone().map(Prober::new);
        let echo = config.echo_nonce.clone().filter(|_| prober.is_some()).map(EchoNonce::new);
        Itr {
            echo,
            subscriptions: PrefixTable::new(),
            smr_limiter,
            config,
            cache,
            pending: PrefixTable::new(),
            nonces: HashMap::new(),
            timers: BinaryHeap::new(),
            resolver: Choice::default(),
            tokens,
            refilled: now,
            next_seq: 0,
            stats: ItrStats::default(),
            warned_no_resolver: false,
            prober,
        }
    }

    /// RLOC probing, when configured.
    pub fn prober(&self) -> Option<&Prober> {
        self.prober.as_ref()
    }

    /// Echo-nonce, when configured.
    pub fn echo_nonce(&self) -> Option<&EchoNonce> {
        self.echo.as_ref()
    }

    /// Locator-status bits the data plane saw ([`crate::probing::status_bits_change`]).
    pub fn handle_status_bits(&mut self, now: Instant, change: &StatusBits) {
        if let Some(p) = &mut self.prober {
            p.handle_status_bits(now, change, &mut self.cache);
        }
    }

    /// A hint that locator `rloc` is unreachable ([`Prober::handle_unreachable`]); ignored
    /// without probing, which alone would bring the locator back.
    pub fn handle_rloc_unreachable(&mut self, now: Instant, rloc: IpAddr, reason: Unreachable, io: &mut Io) -> bool {
        let Some(p) = &mut self.prober else { return false };
        p.handle_unreachable(now, rloc, reason, &mut self.cache, io)
    }

    pub fn config(&self) -> &ItrConfig {
        &self.config
    }

    pub fn map_cache(&self) -> &MapCache {
        &self.cache
    }

    /// The data plane's handle on the map-cache snapshots.
    pub fn reader(&self) -> MapCacheReader {
        self.cache.reader()
    }

    pub fn stats(&self) -> &ItrStats {
        &self.stats
    }

    /// The resolution pending for exactly `prefix`.
    pub fn pending(&self, prefix: &EidPrefix) -> Option<&Pending> {
        self.pending.get(prefix)
    }

    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// The prefixes we are subscribed to (RFC 9437).
    pub fn subscriptions(&self) -> &PrefixTable<Subscription> {
        &self.subscriptions
    }

    /// Whether Map-Requests may ask for subscriptions (enabled, with a key to check them by).
    fn may_subscribe(&self) -> bool {
        self.config.subscribe && self.config.pubsub_key.is_some()
    }

    /// The Map-Resolver tried first for new resolutions.
    pub fn current_resolver(&self) -> Option<SocketAddr> {
        self.config.map_resolvers.get(self.resolver.current).copied()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let pending = self.timers.peek().map(|Reverse((t, ..))| *t);
        let probe = self.prober.as_ref().and_then(Prober::poll_timeout);
        let echo = self.echo.as_ref().and_then(EchoNonce::poll_timeout);
        [pending, self.cache.poll_timeout(), probe, echo].into_iter().flatten().min()
    }

    /// The data plane found no usable mapping for `dst` (or one flagged send-map-request).
    pub fn handle_miss(&mut self, now: Instant, iid: u32, dst: IpAddr, src: IpAddr, rng: &mut StdRng, io: &mut Io) {
        self.stats.misses += 1;
        let key = match self.cache.lookup(iid, dst) {
            Some((prefix, m)) if m.is_negative() && m.action == Action::SEND_MAP_REQUEST => prefix,
            Some(_) => {
                self.stats.misses_cached += 1;
                return;
            }
            None => EidPrefix::host(iid, dst),
        };
        if self.note_pending(iid, dst) {
            return;
        }
        self.start(now, key, dst, src, Kind::Miss, rng, io);
        self.cache.publish();
    }

    /// Whether a resolution covering `dst` is pending (a miss for it is then only noted).
    fn note_pending(&mut self, iid: u32, dst: IpAddr) -> bool {
        let Some((_, p)) = self.pending.longest_match_mut(iid, dst) else { return false };
        if let State::Holding { wanted } = &mut p.state {
            *wanted = true;
        }
        self.stats.misses_pending += 1;
        true
    }

    #[allow(clippy::too_many_arguments)]
    fn start(
        &mut self,
        now: Instant,
        key: EidPrefix,
        eid: IpAddr,
        source: IpAddr,
        kind: Kind,
        rng: &mut StdRng,
        io: &mut Io,
    ) {
        if self.pending.len() >= self.config.max_pending.max(1) {
            self.stats.misses_dropped += 1;
            io.stats.drop(Drop::TableFull);
            return;
        }
        let seq = self.seq();
        // Subscribe once per prefix: later requests (refreshes, SMR-invoked) need no N bit, and
        // a repeated subscription would need a nonce above the last one (RFC 9437 §5).
        let subscribe = self.may_subscribe() && self.subscriptions.longest_match(key.iid, eid).is_none();
        let p = Pending {
            eid,
            source,
            refresh: kind != Kind::Miss,
            smr_invoked: kind == Kind::Smr,
            subscribe,
            attempts: Vec::new(),
            state: State::Sending,
            next: now,
            seq,
        };
        self.pending.insert(key, p);
        self.send(now, key, rng, io);
    }

    fn seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    /// Takes a token of the global request budget.
    fn take_token(&mut self, now: Instant) -> bool {
        let rate = f64::from(self.config.requests_per_second);
        if rate == 0.0 {
            return true;
        }
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.refilled = self.refilled.max(now);
        self.tokens = (self.tokens + elapsed * rate).min(rate);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn schedule(&mut self, key: EidPrefix, at: Instant) {
        let seq = self.seq();
        if let Some(p) = self.pending.get_mut(&key) {
            p.next = at;
            p.seq = seq;
            self.timers.push(Reverse((at, seq, key)));
        }
    }

    /// Sends the next Map-Request of the resolution at `key`.
    fn send(&mut self, now: Instant, key: EidPrefix, rng: &mut StdRng, io: &mut Io) {
        if !self.take_token(now) {
            self.stats.requests_delayed += 1;
            let wait = Duration::from_secs_f64(1.0 / f64::from(self.config.requests_per_second));
            self.schedule(key, now + wait);
            return;
        }
        if self.resolver.left_preferred.is_some_and(|t| now.saturating_duration_since(t) >= self.config.resolver_return)
        {
            self.resolver.set(0, now);
        }
        let Some(p) = self.pending.get(&key) else { return };
        let n = self.config.map_resolvers.len();
        let first = p.attempts.last().map_or(self.resolver.current, |a| a.resolver + 1);
        // The next resolver we have a source RLOC for.
        let target = (0..n).map(|i| (first + i) % n).find_map(|r| {
            let addr = self.config.map_resolvers[r];
            let src = self.config.rlocs.iter().copied().find(|a| a.is_ipv4() == addr.is_ipv4())?;
            Some((r, addr, src))
        });
        let Some((resolver, addr, src)) = target else {
            if !std::mem::replace(&mut self.warned_no_resolver, true) {
                tracing::warn!(eid = %p.eid, "no Map-Resolver of the family of one of our RLOCs; cannot resolve");
            }
            self.stats.misses_dropped += 1;
            self.drop_pending(&key);
            return;
        };
        let mut nonce = rng.next_u64();
        while self.nonces.contains_key(&nonce) {
            nonce = rng.next_u64();
        }
        let mut req = self.request(key.iid, p.eid, p.source, nonce);
        req.smr_invoked = p.smr_invoked;
        if p.subscribe {
            req.records[0].notify = true;
            req.xtr_id = Some(XtrId { xtr_id: self.config.xtr_id, site_id: self.config.site_id });
        }
        let ecm = encapsulate_request(src, CONTROL_PORT, &req);
        io.send("Encapsulated-Control-Message", Some(src), addr, ecm.to_bytes());
        self.stats.requests += 1;
        self.nonces.insert(nonce, key);
        if let Some(p) = self.pending.get_mut(&key) {
            p.attempts.push(Attempt { nonce, resolver });
        }
        self.schedule(key, now + self.config.request_interval);
    }

    fn request(&self, iid: u32, eid: IpAddr, source: IpAddr, nonce: u64) -> MapRequest {
        let rlocs = self.config.rlocs.iter().map(|&a| Address::from(a)).collect();
        let mut req = crate::mapping::map_request(nonce, &EidPrefix::host(iid, eid), rlocs);
        req.pitr = self.config.pitr;
        if !source.is_unspecified() {
            req.source_eid = eid_to_wire(&EidPrefix::host(iid, source)).0;
        }
        req
    }

    fn drop_pending(&mut self, key: &EidPrefix) -> Option<Pending> {
        let p = self.pending.remove(key)?;
        for a in &p.attempts {
            self.nonces.remove(&a.nonce);
        }
        Some(p)
    }

    /// Retransmissions, pauses, refreshes and expiry due at `now`.
    pub fn handle_timeout(&mut self, now: Instant, rng: &mut StdRng, io: &mut Io) {
        let mut events = Vec::new();
        self.cache.handle_timeout(now, &mut events);
        for ev in events {
            match ev {
                CacheEvent::RefreshDue { prefix, eid } => {
                    if self.pending.longest_match(prefix.iid, eid).is_none() {
                        self.stats.refreshes += 1;
                        self.start(now, prefix, eid, unspecified(eid), Kind::Refresh, rng, io);
                    }
                }
                CacheEvent::Expired(prefix) => {
                    self.stats.expired += 1;
                    tracing::debug!(%prefix, "map-cache entry expired");
                }
            }
        }
        while let Some(&Reverse((t, seq, key))) = self.timers.peek() {
            if t > now {
                break;
            }
            self.timers.pop();
            let Some(p) = self.pending.get_mut(&key).filter(|p| p.seq == seq) else { continue };
            match p.state {
                State::Holding { wanted: false } => {
                    self.drop_pending(&key);
                }
                State::Holding { wanted: true } => {
                    // Traffic still wants it: a new round, with fresh nonces.
                    p.state = State::Sending;
                    let old = std::mem::take(&mut p.attempts);
                    for a in old {
                        self.nonces.remove(&a.nonce);
                    }
                    self.send(now, key, rng, io);
                }
                State::Sending => {
                    if let Some(last) = p.attempts.last().copied() {
                        self.stats.timeouts += 1;
                        // A resolver that lets a request time out is no longer the first choice.
                        if last.resolver == self.resolver.current && !self.config.map_resolvers.is_empty() {
                            self.resolver.set((self.resolver.current + 1) % self.config.map_resolvers.len(), now);
                        }
                    }
                    let covered = !p.refresh
                        && self
                            .cache
                            .lookup(key.iid, p.eid)
                            .is_some_and(|(_, m)| !(m.is_negative() && m.action == Action::SEND_MAP_REQUEST));
                    if covered {
                        // Another reply (for a covering prefix) already answered it.
                        self.drop_pending(&key);
                    } else if p.attempts.len() >= self.config.max_attempts.max(1) as usize {
                        p.state = State::Holding { wanted: false };
                        self.stats.hold_downs += 1;
                        tracing::info!(prefix = %key, attempts = p.attempts.len(), "no Map-Reply; pausing requests");
                        self.schedule(key, now + self.config.hold_down);
                    } else {
                        self.send(now, key, rng, io);
                    }
                }
            }
        }
        if let Some(p) = &mut self.prober {
            p.handle_timeout(now, &mut self.cache, &self.config.rlocs, rng, io);
            if let Some(e) = &mut self.echo {
                e.handle_timeout(now, &mut self.cache, p, rng, io);
            }
        }
        self.cache.publish();
    }

    /// A Map-Reply (type 2) that arrived from `remote`.
    pub fn handle_map_reply(&mut self, now: Instant, remote: SocketAddr, data: &[u8], io: &mut Io) {
        io.stats.received("Map-Reply");
        let (reply, notes) = match MapReply::parse_noting(data) {
            Ok(v) => v,
            Err(e) => {
                io.refuse(now, None, Drop::Malformed, remote, &format!("malformed Map-Reply: {e}"));
                return;
            }
        };
        io.note(&notes);
        if let Some(p) = self.prober.as_mut().filter(|_| reply.probe) {
            p.handle_reply(now, remote, &reply, &mut self.cache, io);
            return;
        }
        let Some(key) = self.nonces.get(&reply.nonce).copied().filter(|_| !reply.probe) else {
            self.stats.replies_unmatched += 1;
            io.refuse(now, None, Drop::NoMatchingNonce, remote, "Map-Reply matches no outstanding Map-Request");
            return;
        };
        let Some(p) = self.drop_pending(&key) else { return };
        if let Some(a) = p.attempts.iter().find(|a| a.nonce == reply.nonce) {
            self.resolver.set(a.resolver, now);
        }
        self.stats.replies_accepted += 1;
        let requested = EidPrefix::host(key.iid, p.eid);
        let prefixes: Vec<Option<EidPrefix>> =
            reply.records.iter().map(|r| eid_from_wire(&r.eid, r.eid_mask_len)).collect();
        // The least specific record covering the requested EID bounds what this reply may set.
        let bound = prefixes.iter().flatten().filter(|q| q.covers(&requested)).min_by_key(|q| q.prefix_len()).copied();
        for (rec, prefix) in reply.records.iter().zip(prefixes) {
            match prefix.filter(|q| bound.is_some_and(|b| b.covers(q))) {
                Some(prefix) => self.install(now, prefix, rec, p.eid, reply.echo_nonce_capable),
                None => {
                    self.stats.records_refused += 1;
                    io.refuse(now, None, Drop::Unexpected, remote, "Map-Reply record outside the requested EID");
                }
            }
        }
        if let Some(p) = &mut self.prober {
            p.sync(now, &mut self.cache);
        }
        self.cache.publish();
    }

    /// A Solicit-Map-Request (a Map-Request with the S bit) from `remote`. Its content is not
    /// trusted: for an EID we have cached, it only starts an SMR-invoked Map-Request through the
    /// mapping system (RFC 9301 §6.1), whose nonce-checked answer replaces the entry.
    pub fn handle_smr(&mut self, now: Instant, remote: SocketAddr, data: &[u8], rng: &mut StdRng, io: &mut Io) {
        io.stats.received("Map-Request");
        io.stats.mobility.smrs_received += 1;
        let req = match MapRequest::parse(data) {
            Ok(r) => r,
            Err(e) => {
                io.refuse(now, None, Drop::Malformed, remote, &format!("malformed SMR: {e}"));
                return;
            }
        };
        if !self.config.smr {
            io.stats.mobility.smrs_ignored += 1;
            return;
        }
        // One EID per SMR is what senders put in; more records are not more work for a stranger.
        let Some(eid) = req.records.first().and_then(|r| eid_from_wire(&r.eid, r.eid_mask_len)) else {
            io.stats.drop(Drop::Malformed);
            return;
        };
        let addr = eid.net.network();
        if !self.smr_limiter.check(now, &(remote.ip(), eid)) {
            io.stats.mobility.smrs_rate_limited += 1;
            io.stats.drop(Drop::RateLimited);
            return;
        }
        // RFC 9301 §6.1: no cached mapping, no SMR-invoked Map-Request.
        let Some((cached, _)) = self.cache.lookup(eid.iid, addr) else {
            io.stats.mobility.smrs_ignored += 1;
            return;
        };
        if self.pending.longest_match(eid.iid, addr).is_some() {
            io.stats.mobility.smrs_ignored += 1;
            return;
        }
        io.stats.mobility.smrs_accepted += 1;
        tracing::debug!(%eid, from = %remote, "SMR: SMR-invoked Map-Request");
        self.start(now, cached, addr, unspecified(addr), Kind::Smr, rng, io);
    }

    /// A Map-Notify for the ITR: the confirmation of a subscription (its nonce is that of an
    /// outstanding Map-Request) or a publication (newer than the last for a subscribed prefix
    /// covering its records). Authenticated with the pub/sub key; acknowledged.
    pub fn handle_notify(&mut self, now: Instant, remote: SocketAddr, data: &[u8], io: &mut Io) {
        let notify = match MapNotify::parse(data) {
            Ok(n) => n,
            Err(_) => {
                io.stats.drop(Drop::Malformed);
                return;
            }
        };
        let Some((key_id, key)) = self.config.pubsub_key.clone() else {
            io.stats.mobility.forged_notifies += 1;
            io.refuse(now, None, Drop::Unexpected, remote, "Map-Notify, but no pub/sub key is configured");
            return;
        };
        if notify.ack || auth::verify(data, &KeyRing::with_key(key_id, key.clone()), false).is_err() {
            io.stats.mobility.forged_notifies += 1;
            io.refuse(now, None, Drop::BadAuth, remote, "Map-Notify failed pub/sub authentication");
            return;
        }
        let records: Vec<(EidPrefix, &MapRecord)> =
            notify.records.iter().filter_map(|r| eid_from_wire(&r.eid, r.eid_mask_len).map(|p| (p, r))).collect();
        if let Some(pkey) = self.nonces.get(&notify.nonce).copied() {
            // The confirmation of a subscription: the answer to our Map-Request.
            let Some(p) = self.drop_pending(&pkey) else { return };
            self.stats.replies_accepted += 1;
            let requested = EidPrefix::host(pkey.iid, p.eid);
            for (prefix, rec) in records {
                if !prefix.covers(&requested) && !requested.covers(&prefix) {
                    self.stats.records_refused += 1;
                    continue;
                }
                self.install(now, prefix, rec, p.eid, false);
                if self.subscriptions.len() < self.config.cache.max_entries {
                    let s = Subscription { last_nonce: notify.nonce, map_server: remote.ip(), since: now };
                    self.subscriptions.insert(prefix, s);
                }
            }
        } else {
            let mut applied = false;
            for (prefix, rec) in records {
                let farewell = rec.locators.is_empty() && rec.action == Action::DROP_AUTH_FAILURE;
                let sub = self.subscription_for(&prefix, notify.nonce).or_else(|| {
                    // The farewell repeats the unacknowledged publication's nonce (RFC 9437 §5),
                    // which we may have accepted while our Map-Notify-Ack got lost.
                    let exact = |s: &&(EidPrefix, &Subscription)| s.1.last_nonce == notify.nonce;
                    let covering: Vec<(EidPrefix, &Subscription)> = self.subscriptions.covering(&prefix).collect();
                    farewell.then(|| covering.iter().find(exact).map(|(p, _)| *p)).flatten()
                });
                let Some(sub) = sub else {
                    let known = self.subscriptions.covering(&prefix).next().is_some();
                    if known {
                        io.stats.mobility.replayed_notifies += 1;
                        io.refuse(now, None, Drop::Replay, remote, "publication not newer than the last one");
                    } else {
                        io.stats.mobility.forged_notifies += 1;
                        io.refuse(now, None, Drop::NoMatchingNonce, remote, "publication for no subscription of ours");
                    }
                    continue;
                };
                if let Some(s) = self.subscriptions.get_mut(&sub) {
                    s.last_nonce = notify.nonce;
                }
                applied = true;
                if farewell {
                    // The Map-Server dropped our subscription (RFC 9437 §5): the next
                    // Map-Request subscribes again; the cached mapping stays until its TTL.
                    self.subscriptions.remove(&sub);
                    continue;
                }
                io.stats.mobility.publications_applied += 1;
                self.install(now, prefix, rec, prefix.net.network(), false);
            }
            if !applied {
                return;
            }
        }
        self.cache.publish();
        let mut ack = notify.to_ack();
        if let Ok(bytes) = ack.to_signed_bytes(key_id, &key, &SendPolicy::default()) {
            io.send("Map-Notify-Ack", None, SocketAddr::new(remote.ip(), CONTROL_PORT), bytes);
        }
    }

    /// Whether a Map-Notify looks like one for the ITR: its nonce is that of an outstanding
    /// Map-Request (a subscription's confirmation) or follows the last one of a subscription
    /// covering its first record (a publication). An xTR's ETR gets the others first.
    pub fn expects_notify(&self, data: &[u8]) -> bool {
        let Ok(n) = MapNotify::parse(data) else { return false };
        if self.nonces.contains_key(&n.nonce) {
            return true;
        }
        let Some(prefix) = n.records.first().and_then(|r| eid_from_wire(&r.eid, r.eid_mask_len)) else {
            return false;
        };
        self.subscription_for(&prefix, n.nonce).is_some()
            || self.subscriptions.covering(&prefix).any(|(_, s)| s.last_nonce == n.nonce)
    }

    /// The subscribed prefix covering `prefix` whose last nonce is below `nonce` (the most
    /// specific, when several are). The Map-Server numbers each subscription's publications
    /// from its request's random nonce, so a nonce far above one's last is another's.
    fn subscription_for(&self, prefix: &EidPrefix, nonce: u64) -> Option<EidPrefix> {
        const WINDOW: u64 = 1 << 32;
        let mut covering: Vec<(EidPrefix, &Subscription)> = self.subscriptions.covering(prefix).collect();
        covering.reverse();
        covering.into_iter().find(|(_, s)| nonce > s.last_nonce && nonce - s.last_nonce < WINDOW).map(|(p, _)| p)
    }

    /// Caches `rec` for `prefix`; `echo_nonce`: the reply's E bit.
    fn install(&mut self, now: Instant, prefix: EidPrefix, rec: &MapRecord, eid: IpAddr, echo_nonce: bool) {
        let rlocs: Vec<Rloc> = rec.locators.iter().filter_map(Rloc::from_wire).collect();
        let ttl = self.cache.ttl_from_minutes(rec.ttl);
        let mut m = Mapping::new(prefix, rlocs, rec.action, ttl, now);
        m.authoritative = rec.authoritative;
        m.map_version = rec.map_version;
        m.echo_nonce = echo_nonce;
        if m.is_negative() {
            self.stats.negative_installed += 1;
        } else {
            self.stats.installed += 1;
        }
        tracing::debug!(%prefix, rlocs = m.rlocs.len(), action = %rec.action, ttl_min = rec.ttl, "map-cache install");
        if self.cache.insert(m, eid).is_some() {
            self.stats.evicted += 1;
        }
    }
}

/// Why a resolution started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Miss,
    Refresh,
    Smr,
}

/// The unspecified address of `eid`'s family (an unknown source EID).
fn unspecified(eid: IpAddr) -> IpAddr {
    if eid.is_ipv4() {
        IpAddr::from([0u8; 4])
    } else {
        IpAddr::from([0u8; 16])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use loci_wire::message::{message_type, peek_type};
    use loci_wire::{ecm::Ecm, Locator};
    use rand::SeedableRng;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn itr(resolvers: &[&str], now: Instant) -> Itr {
        let config = ItrConfig {
            map_resolvers: resolvers.iter().map(|r| SocketAddr::new(ip(r), 4342)).collect(),
            rlocs: vec![ip("198.51.100.1")],
            ..Default::default()
        };
        Itr::new(config, now)
    }

    /// The Map-Requests sent, with where they went.
    fn requests(io: &mut Io) -> Vec<(SocketAddr, MapRequest)> {
        io.transmits
            .drain(..)
            .map(|t| {
                assert_eq!(peek_type(&t.data), Ok(message_type::ECM));
                let ecm = Ecm::parse(&t.data).unwrap();
                (t.dst, MapRequest::parse(&ecm.payload).unwrap())
            })
            .collect()
    }

    fn reply(nonce: u64, prefix: &str, ttl: u32, locators: &[&str]) -> Vec<u8> {
        let p: EidPrefix = prefix.parse().unwrap();
        let (eid, eid_mask_len) = eid_to_wire(&p);
        let locators = locators
            .iter()
            .map(|a| Locator {
                priority: 1,
                weight: 1,
                m_priority: 255,
                m_weight: 0,
                local: false,
                probed: false,
                reachable: true,
                address: Address::from(ip(a)),
            })
            .collect();
        let action = if locators_empty(prefix) { Action::DROP_POLICY_DENIED } else { Action::NO_ACTION };
        MapReply {
            probe: false,
            echo_nonce_capable: false,
            security: false,
            nonce,
            records: vec![MapRecord { ttl, eid_mask_len, action, authoritative: true, map_version: 0, eid, locators }],
            auth: None,
        }
        .to_bytes()
    }

    fn locators_empty(prefix: &str) -> bool {
        prefix.starts_with("172.")
    }

    #[test]
    fn miss_request_reply_install() {
        let t0 = Instant::now();
        let mut rng = StdRng::seed_from_u64(1);
        let mut io = Io::default();
        let mut itr = itr(&["192.0.2.10"], t0);
        itr.handle_miss(t0, 0, ip("10.1.1.7"), ip("10.9.0.1"), &mut rng, &mut io);
        // A second miss for the same EID is deduplicated.
        itr.handle_miss(t0, 0, ip("10.1.1.7"), ip("10.9.0.1"), &mut rng, &mut io);
        let reqs = requests(&mut io);
        assert_eq!(reqs.len(), 1);
        let (dst, req) = &reqs[0];
        assert_eq!(*dst, SocketAddr::new(ip("192.0.2.10"), 4342));
        assert_eq!(req.itr_rlocs, [Address::from(ip("198.51.100.1"))]);
        assert_eq!(eid_from_wire(&req.records[0].eid, req.records[0].eid_mask_len), "10.1.1.7/32".parse().ok());
        assert_eq!(req.source_eid, Address::from(ip("10.9.0.1")));
        // A reply with another nonce is refused; the right one is installed.
        let remote = SocketAddr::new(ip("203.0.113.1"), 4342);
        itr.handle_map_reply(t0, remote, &reply(req.nonce ^ 1, "10.1.1.0/24", 10, &["203.0.113.1"]), &mut io);
        assert!(itr.map_cache().is_empty());
        assert_eq!(io.stats.dropped(Drop::NoMatchingNonce), 1);
        itr.handle_map_reply(t0, remote, &reply(req.nonce, "10.1.1.0/24", 10, &["203.0.113.1"]), &mut io);
        let snap = itr.reader().load_full();
        let m = snap.lookup(0, ip("10.1.1.200")).expect("installed and published");
        assert_eq!(m.rlocs[0].addr, ip("203.0.113.1"));
        assert_eq!(m.ttl, Duration::from_secs(600));
        assert_eq!(itr.pending_len(), 0);
        // Replaying the accepted reply does nothing: its nonce is no longer outstanding.
        itr.handle_map_reply(t0, remote, &reply(req.nonce, "10.1.1.0/24", 10, &["192.0.2.66"]), &mut io);
        assert_eq!(itr.map_cache().get(&"10.1.1.0/24".parse().unwrap()).unwrap().rlocs[0].addr, ip("203.0.113.1"));
        assert_eq!(itr.stats().replies_unmatched, 2);
    }

    #[test]
    fn records_outside_the_requested_eid_are_refused() {
        let t0 = Instant::now();
        let mut rng = StdRng::seed_from_u64(2);
        let mut io = Io::default();
        let mut itr = itr(&["192.0.2.10"], t0);
        itr.handle_miss(t0, 0, ip("10.1.1.7"), ip("0.0.0.0"), &mut rng, &mut io);
        let nonce = requests(&mut io)[0].1.nonce;
        // The right nonce, but a record for someone else's prefix.
        let remote = SocketAddr::new(ip("203.0.113.1"), 4342);
        itr.handle_map_reply(t0, remote, &reply(nonce, "8.8.8.0/24", 10, &["192.0.2.66"]), &mut io);
        assert!(itr.map_cache().is_empty());
        assert_eq!(itr.stats().records_refused, 1);
    }

    #[test]
    fn retransmit_rotate_and_hold_down() {
        let t0 = Instant::now();
        let mut rng = StdRng::seed_from_u64(3);
        let mut io = Io::default();
        let mut itr = itr(&["192.0.2.10", "192.0.2.11"], t0);
        itr.handle_miss(t0, 0, ip("10.1.1.7"), ip("10.9.0.1"), &mut rng, &mut io);
        let mut sent = requests(&mut io);
        // Runs the timers until `end`, with traffic still missing when `misses`.
        let mut drive = |itr: &mut Itr, end: Instant, misses: bool, sent: &mut Vec<(SocketAddr, MapRequest)>| {
            while let Some(t) = itr.poll_timeout().filter(|&t| t <= end) {
                itr.handle_timeout(t, &mut rng, &mut io);
                if misses {
                    itr.handle_miss(t, 0, ip("10.1.1.7"), ip("10.9.0.1"), &mut rng, &mut io);
                }
                sent.extend(requests(&mut io));
            }
        };
        // 10 requests at 1 s intervals, a 30 s pause, then (traffic still there) a new round.
        drive(&mut itr, t0 + Duration::from_secs(45), true, &mut sent);
        let ms = |r: &(SocketAddr, MapRequest)| r.0.ip();
        assert_eq!(sent.len(), 16);
        assert_eq!(ms(&sent[0]), ip("192.0.2.10"));
        assert_eq!(ms(&sent[1]), ip("192.0.2.11"), "rotated on timeout");
        assert_eq!(ms(&sent[2]), ip("192.0.2.10"));
        assert_eq!(itr.stats().hold_downs, 1);
        // The traffic stops: the round ends, pauses, and the resolution is then dropped.
        drive(&mut itr, t0 + Duration::from_secs(200), false, &mut sent);
        assert_eq!(sent.len(), 20);
        let nonces: std::collections::HashSet<u64> = sent.iter().map(|r| r.1.nonce).collect();
        assert_eq!(nonces.len(), 20, "a fresh nonce per request");
        assert_eq!(itr.stats().hold_downs, 2);
        assert_eq!(itr.pending_len(), 0);
        assert_eq!(itr.poll_timeout(), None);
    }

    #[test]
    fn no_usable_resolver_drops_misses() {
        let t0 = Instant::now();
        let mut rng = StdRng::seed_from_u64(5);
        let mut io = Io::default();
        // An IPv6 resolver but only an IPv4 RLOC: nothing can be sent.
        let mut itr = itr(&["2001:db8::53"], t0);
        for _ in 0..3 {
            itr.handle_miss(t0, 0, ip("10.1.1.7"), ip("10.9.0.1"), &mut rng, &mut io);
        }
        assert!(io.transmits.is_empty());
        assert_eq!((itr.pending_len(), itr.stats().misses_dropped), (0, 3));
    }

    #[test]
    fn pending_table_is_bounded() {
        let t0 = Instant::now();
        let mut rng = StdRng::seed_from_u64(4);
        let mut io = Io::default();
        let mut itr = Itr::new(
            ItrConfig {
                map_resolvers: vec![SocketAddr::new(ip("192.0.2.10"), 4342)],
                rlocs: vec![ip("198.51.100.1")],
                max_pending: 100,
                requests_per_second: 50,
                ..Default::default()
            },
            t0,
        );
        for i in 0..10_000u32 {
            itr.handle_miss(t0, 0, IpAddr::from((0x0a00_0000 + i).to_be_bytes()), ip("0.0.0.0"), &mut rng, &mut io);
        }
        assert_eq!(itr.pending_len(), 100);
        assert_eq!(itr.stats().misses_dropped, 9_900);
        assert_eq!(requests(&mut io).len(), 50, "the global budget: 50 now, the rest delayed");
        assert_eq!(itr.stats().requests_delayed, 50);
        itr.handle_timeout(t0 + Duration::from_millis(500), &mut rng, &mut io);
        assert!(requests(&mut io).len() >= 24);
    }
}
