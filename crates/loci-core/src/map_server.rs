//! Map-Server (RFC 9301 §8.2-§8.3): accepts authenticated Map-Registers from the ETRs of
//! configured sites, and answers Map-Requests for their EIDs by proxy, by forwarding them to the
//! last registered ETR, or negatively.
//!
//! Host mobility (DESIGN §5): a host prefix (/32, /128) registered by another xTR with an RLOC
//! set disjoint from the previous registrant's has moved. The new registration replaces the
//! old, subscribers get the new mapping (pub/sub), and the previous registrant gets a
//! Map-Notify signed with the site key, retransmitted until its Map-Notify-Ack (RFC 9301 §5.7).
//! That Map-Notify's nonce lies [`MOVE_NONCE_GAP`] above the last Map-Register nonce seen from
//! the registrant, which moves its own counter past it on receipt: so a Map-Register of the host
//! that was already in flight when the host moved (nonce below) is told from a real move back
//! (nonce above) and ignored, and a replayed Map-Notify is older than any later registration.
//! A record with TTL 0 in a Map-Register with the T bit withdraws that xTR's registration.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use loci_wire::auth::{self, SendPolicy};
use loci_wire::ecm::Ecm;
use loci_wire::map_notify::MapNotify;
use loci_wire::map_register::{MapRegister, XtrId};
use loci_wire::map_reply::MapReply;
use loci_wire::map_request::MapRequest;
use loci_wire::{Action, Locator, MapRecord, Wire};

use crate::config::{Limits, MapServerConfig, SiteConfig};
use crate::eid::EidPrefix;
use crate::mapping::{eid_from_wire, eid_to_wire, encapsulate_request, reply_destination};
use crate::negative::{self, Negative};
use crate::node::{Event, Io, CONTROL_PORT};
use crate::prefix_table::PrefixTable;
use crate::pubsub::{signed_notify, SubscribeResult, Subscriptions, RETRANSMIT};
use crate::ratelimit::KeyedLimiter;
use crate::stats::Drop;

/// Who registered: the xTR-ID when the Map-Register carried one, else its source address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Registrant {
    XtrId(u128, u64),
    Address(IpAddr),
}

impl core::fmt::Display for Registrant {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Registrant::XtrId(x, s) => write!(f, "xtr-id {x:032x} site-id {s}"),
            Registrant::Address(a) => write!(f, "{a}"),
        }
    }
}

/// One xTR's registration of a prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XtrRegistration {
    pub registrant: Registrant,
    /// Where the Map-Register came from; forwarded Map-Requests go here.
    pub source: IpAddr,
    pub locators: Vec<Locator>,
    /// Record TTL in minutes, as registered.
    pub ttl: u32,
    pub map_version: u16,
    pub proxy_reply: bool,
    pub merge: bool,
    pub first_registered: Instant,
    pub last_registered: Instant,
    pub expires: Instant,
    /// Key ID and MAC shape it authenticated with: Map-Notifies to it are signed alike.
    pub key_id: u8,
    pub auth: SendPolicy,
}

/// How far above a registrant's last Map-Register nonce the Map-Notify telling it that a host
/// moved is numbered: more than the Map-Registers it can have in flight.
pub const MOVE_NONCE_GAP: u64 = 1 << 20;
/// Displaced registrants remembered per host prefix.
const MAX_DISPLACED: usize = 4;

/// A Map-Notify telling a previous registrant its host moved, until acknowledged.
#[derive(Debug, Clone)]
struct MoveNotify {
    site: usize,
    prefix: EidPrefix,
    registrant: Registrant,
    dst: SocketAddr,
    bytes: Vec<u8>,
    sent: usize,
    next: Instant,
}

/// The registrations of one (IID, prefix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub site: usize,
    /// Most recently refreshed last.
    pub xtrs: Vec<XtrRegistration>,
}

impl Registration {
    /// The xTR that registered most recently.
    pub fn latest(&self) -> Option<&XtrRegistration> {
        self.xtrs.last()
    }

    /// The RLOC set to answer with: the union over merging xTRs, else the latest one's.
    pub fn locators(&self) -> Vec<Locator> {
        let Some(latest) = self.latest() else { return Vec::new() };
        if !latest.merge {
            return latest.locators.clone();
        }
        let mut out: Vec<Locator> = Vec::new();
        for x in self.xtrs.iter().filter(|x| x.merge) {
            for l in &x.locators {
                if !out.iter().any(|o| o.address == l.address) {
                    out.push(l.clone());
                }
            }
        }
        out
    }

    fn earliest_expiry(&self) -> Option<Instant> {
        self.xtrs.iter().map(|x| x.expires).min()
    }

    fn proxy_reply(&self) -> bool {
        self.xtrs.iter().any(|x| x.proxy_reply)
    }
}

/// Per-site state next to its configuration.
#[derive(Debug)]
pub struct Site {
    pub config: SiteConfig,
}

/// Which site a configured prefix belongs to.
#[derive(Debug, Clone, Copy)]
struct SitePrefix {
    site: usize,
}

pub struct MapServer {
    sites: Vec<Site>,
    site_prefixes: PrefixTable<SitePrefix>,
    registrations: PrefixTable<Registration>,
    /// (time, prefix): every registration has an entry at or before its earliest expiry. A
    /// refresh that expires later adds none (the entry fires, finds nothing due and is pushed
    /// again for the new time), so the heap holds about one entry per prefix, not one per
    /// refresh.
    expiry: BinaryHeap<Reverse<(Instant, EidPrefix)>>,
    /// Last Map-Register nonce per (site, registrant), for replay protection.
    nonces: HashMap<(usize, Registrant), u64>,
    nonces_dirty: bool,
    max_registrations: usize,
    registration_timeout: Duration,
    register_limiter: KeyedLimiter<IpAddr>,
    request_limiter: KeyedLimiter<IpAddr>,
    reply_limiter: KeyedLimiter<(IpAddr, EidPrefix)>,
    subscriptions: Subscriptions,
    /// The ETR on this same node, when there is one: it registers with us, and forwarding a
    /// Map-Request to its address would send it back to this Map-Server, around and around.
    local_etr: Option<Registrant>,
    /// Per moved host prefix, the registrants it moved away from and the nonce of the
    /// Map-Notify that told them (their Map-Registers of it with lower nonces are stale).
    displaced: HashMap<EidPrefix, Vec<(Registrant, u64)>>,
    /// Last move Map-Notify nonce per (site, registrant).
    move_nonces: HashMap<(usize, Registrant), u64>,
    /// Move Map-Notifies awaiting their Map-Notify-Ack, by nonce, and their timers.
    moves: HashMap<u64, MoveNotify>,
    move_timers: BinaryHeap<Reverse<(Instant, u64)>>,
}

/// What a Map-Request for one EID resolves to at this Map-Server.
enum Answer {
    /// Answered here: by proxy, or for the ETR on this node.
    Proxy(MapRecord),
    Forward(IpAddr),
    Negative(Negative),
}

impl MapServer {
    pub fn new(config: MapServerConfig, limits: &Limits) -> Self {
        let mut site_prefixes = PrefixTable::new();
        for (i, s) in config.sites.iter().enumerate() {
            for p in &s.eid_prefixes {
                site_prefixes.insert(p.prefix, SitePrefix { site: i });
            }
        }
        let max_keys = limits.max_rate_limited_sources;
        MapServer {
            sites: config.sites.into_iter().map(|config| Site { config }).collect(),
            site_prefixes,
            registrations: PrefixTable::new(),
            expiry: BinaryHeap::new(),
            nonces: HashMap::new(),
            nonces_dirty: false,
            max_registrations: if config.max_registrations == 0 { 2_000_000 } else { config.max_registrations },
            registration_timeout: limits.registration_timeout,
            register_limiter: KeyedLimiter::per_second(limits.map_registers_per_source, max_keys),
            request_limiter: KeyedLimiter::per_second(limits.map_requests_per_source, max_keys),
            reply_limiter: KeyedLimiter::one_per(limits.map_reply_repeat, max_keys),
            subscriptions: Subscriptions::new(config.max_subscriptions),
            local_etr: None,
            displaced: HashMap::new(),
            move_nonces: HashMap::new(),
            moves: HashMap::new(),
            move_timers: BinaryHeap::new(),
        }
    }

    /// Says that the ETR with this xTR-ID and Site-ID runs on the same node: Map-Requests for
    /// what it registers are answered here, authoritatively, instead of being forwarded.
    pub fn set_local_etr(&mut self, xtr_id: u128, site_id: u64) {
        self.local_etr = Some(Registrant::XtrId(xtr_id, site_id));
    }

    pub fn sites(&self) -> &[Site] {
        &self.sites
    }

    pub fn registrations(&self) -> &PrefixTable<Registration> {
        &self.registrations
    }

    /// The registration covering `prefix` exactly, if any.
    pub fn registration(&self, prefix: &EidPrefix) -> Option<&Registration> {
        self.registrations.get(prefix)
    }

    /// Last accepted nonce per (site name, registrant), to persist across restarts.
    pub fn nonces(&self) -> impl Iterator<Item = (&str, Registrant, u64)> + '_ {
        self.nonces.iter().map(|((s, r), n)| (self.sites[*s].config.name.as_str(), *r, *n))
    }

    /// Restores a persisted nonce (unknown site names are ignored).
    pub fn restore_nonce(&mut self, site: &str, registrant: Registrant, nonce: u64) {
        if let Some(i) = self.sites.iter().position(|s| s.config.name == site) {
            let n = self.nonces.entry((i, registrant)).or_default();
            *n = (*n).max(nonce);
        }
    }

    /// True once since the nonces last changed (the caller persists them in batches).
    pub fn take_nonces_dirty(&mut self) -> bool {
        std::mem::take(&mut self.nonces_dirty)
    }

    pub fn subscriptions(&self) -> &Subscriptions {
        &self.subscriptions
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let expiry = self.expiry.peek().map(|Reverse((t, _))| *t);
        let moves = self.move_timers.peek().map(|Reverse((t, _))| *t);
        [expiry, self.subscriptions.poll_timeout(), moves].into_iter().flatten().min()
    }

    /// The pub/sub policy of the site owning `prefix`.
    fn pubsub_policy(&self, prefix: &EidPrefix) -> Option<crate::config::PubSubPolicy> {
        self.site_of(prefix).and_then(|s| self.sites[s].config.pubsub.clone())
    }

    /// Pushes the current mapping of `prefix` (TTL 0 when gone) to its subscribers.
    fn publish(&mut self, now: Instant, prefix: EidPrefix, io: &mut Io) {
        if self.subscriptions.is_empty() {
            return;
        }
        let Some(policy) = self.pubsub_policy(&prefix) else { return };
        let record = match self.registrations.get(&prefix) {
            Some(reg) => proxy_record(prefix, reg),
            None => {
                let (eid, eid_mask_len) = eid_to_wire(&prefix);
                MapRecord {
                    ttl: 0,
                    eid_mask_len,
                    action: Action::NO_ACTION,
                    authoritative: false,
                    map_version: 0,
                    eid,
                    locators: Vec::new(),
                }
            }
        };
        self.subscriptions.publish(now, prefix, &record, &policy, io);
    }

    /// Removes registrations whose time is up and retransmits publications.
    pub fn handle_timeout(&mut self, now: Instant, io: &mut Io) {
        let (sites, site_prefixes) = (&self.sites, &self.site_prefixes);
        let key_of = |p: &EidPrefix| {
            site_prefixes.longest_match(p.iid, p.net.network()).and_then(|(_, s)| sites[s.site].config.pubsub.clone())
        };
        self.subscriptions.handle_timeout(now, key_of, io);
        self.retransmit_moves(now, io);
        let mut gone = Vec::new();
        while let Some(Reverse((t, prefix))) = self.expiry.peek().copied() {
            if t > now {
                break;
            }
            self.expiry.pop();
            let Some(reg) = self.registrations.get_mut(&prefix) else { continue };
            let before = reg.xtrs.len();
            reg.xtrs.retain(|x| x.expires > now);
            if let Some(next) = reg.earliest_expiry() {
                self.expiry.push(Reverse((next, prefix)));
            }
            if reg.xtrs.len() == before {
                continue;
            }
            io.stats.registrations_expired += (before - reg.xtrs.len()) as u64;
            if reg.xtrs.is_empty() {
                let site = reg.site;
                self.unregister(prefix, site, "registration expired", io);
                gone.push(prefix);
            }
        }
        for prefix in gone {
            self.publish(now, prefix, io);
        }
        // Lazy deletion leaves stale heap entries behind; rebuild when they dominate.
        if self.expiry.len() > 2 * self.registrations.len() + 1024 {
            self.expiry =
                self.registrations.iter().filter_map(|(p, r)| r.earliest_expiry().map(|t| Reverse((t, p)))).collect();
        }
    }

    /// Removes the registration of `prefix` (all its xTRs gone).
    fn unregister(&mut self, prefix: EidPrefix, site: usize, why: &str, io: &mut Io) {
        self.registrations.remove(&prefix);
        self.displaced.remove(&prefix);
        let site = self.sites[site].config.name.clone();
        tracing::info!(%prefix, %site, "{why}");
        io.events.push_back(Event::Unregistered { site, prefix });
    }

    /// Retransmits unacknowledged move Map-Notifies (RFC 9301 §5.7), then gives up.
    fn retransmit_moves(&mut self, now: Instant, io: &mut Io) {
        while let Some(&Reverse((t, nonce))) = self.move_timers.peek() {
            if t > now {
                break;
            }
            self.move_timers.pop();
            let Some(m) = self.moves.get_mut(&nonce).filter(|m| m.next == t) else { continue };
            if m.sent >= RETRANSMIT.len() {
                tracing::info!(dst = %m.dst, prefix = %m.prefix, "move Map-Notify never acknowledged");
                // It never learnt of the move, so its counter did not jump: its later
                // registrations of the host cannot be told apart and are taken as they come.
                if let Some(d) = self.displaced.get_mut(&m.prefix) {
                    d.retain(|(r, n)| !(*r == m.registrant && *n == nonce));
                }
                self.moves.remove(&nonce);
                continue;
            }
            io.send("Map-Notify", None, m.dst, m.bytes.clone());
            io.stats.mobility.notifies_pushed += 1;
            m.next = now + RETRANSMIT[m.sent];
            m.sent += 1;
            self.move_timers.push(Reverse((m.next, nonce)));
        }
    }

    fn site_of(&self, prefix: &EidPrefix) -> Option<usize> {
        self.site_prefixes.longest_match(prefix.iid, prefix.net.network()).map(|(_, s)| s.site)
    }

    /// Whether `site` may register `prefix`.
    fn allowed(&self, site: usize, prefix: &EidPrefix) -> bool {
        self.sites[site]
            .config
            .eid_prefixes
            .iter()
            .any(|p| p.prefix == *prefix || (p.accept_more_specifics && p.prefix.covers(prefix)))
    }

    /// Map-Register (RFC 9301 §5.6, §8.2).
    pub fn handle_register(&mut self, now: Instant, local: SocketAddr, remote: SocketAddr, data: &[u8], io: &mut Io) {
        io.stats.received("Map-Register");
        if !self.register_limiter.check(now, &remote.ip()) {
            io.stats.drop(Drop::RateLimited);
            return;
        }
        let (reg, notes) = match MapRegister::parse_noting(data) {
            Ok(v) => v,
            Err(e) => {
                io.refuse(now, None, Drop::Malformed, remote, &format!("malformed Map-Register: {e}"));
                return;
            }
        };
        io.note(&notes);
        let prefixes: Option<Vec<EidPrefix>> =
            reg.records.iter().map(|r| eid_from_wire(&r.eid, r.eid_mask_len)).collect();
        let Some(prefixes) = prefixes.filter(|p| !p.is_empty()) else {
            io.stats.drop(Drop::Malformed);
            return;
        };
        let Some(site) = self.site_of(&prefixes[0]) else {
            io.refuse(now, None, Drop::UnknownSite, remote, &format!("Map-Register for {}: no such site", prefixes[0]));
            return;
        };
        let cfg = &self.sites[site].config;
        let verified = match auth::verify(data, &cfg.keys, cfg.allow_unauthenticated) {
            Ok(v) => v,
            Err(e) => {
                let reason = if reg.algorithm_id == 0 { Drop::Unauthenticated } else { Drop::BadAuth };
                io.refuse(now, Some(&cfg.name), reason, remote, &format!("Map-Register failed authentication: {e}"));
                return;
            }
        };
        if let Some(p) = prefixes.iter().find(|p| !self.allowed(site, p)) {
            let detail = format!("Map-Register for {p}, outside the site's prefixes");
            io.refuse(now, Some(&cfg.name), Drop::PrefixOutsideSite, remote, &detail);
            return;
        }
        let registrant = match reg.xtr_id {
            Some(XtrId { xtr_id, site_id }) => Registrant::XtrId(xtr_id, site_id),
            None => Registrant::Address(remote.ip()),
        };
        let known = self.nonces.get(&(site, registrant)).copied();
        if known.is_some_and(|n| reg.nonce <= n) {
            io.refuse(now, Some(&cfg.name), Drop::Replay, remote, "Map-Register with a replayed nonce");
            return;
        }
        if known.is_none() && self.nonces.len() >= self.max_registrations {
            io.refuse(now, Some(&cfg.name), Drop::TableFull, remote, "Map-Register refused: registrant table full");
            return;
        }
        let new = prefixes.iter().filter(|p| self.registrations.get(p).is_none()).count();
        if self.registrations.len() + new > self.max_registrations {
            let name = &self.sites[site].config.name;
            io.refuse(now, Some(name), Drop::TableFull, remote, "Map-Register refused: registration table full");
            return;
        }
        self.nonces.insert((site, registrant), reg.nonce);
        self.nonces_dirty = true;
        io.events.push_back(Event::NoncesChanged);

        let key = (
            verified.key_id,
            SendPolicy { algorithm: verified.algorithm, coverage: verified.coverage, length: verified.length },
        );
        for (rec, prefix) in reg.records.iter().zip(&prefixes) {
            let changed = if reg.use_ttl && rec.ttl == 0 {
                self.withdraw(site, registrant, *prefix, io)
            } else {
                self.store(now, site, registrant, remote.ip(), &reg, rec, *prefix, key, io)
            };
            if changed {
                self.publish(now, *prefix, io);
            }
        }

        if reg.want_map_notify {
            let cfg = &self.sites[site].config;
            let Some(key) = cfg.keys.get(verified.key_id) else { return };
            let mut notify = MapNotify { xtr_id: reg.xtr_id, ..MapNotify::new(reg.nonce, reg.records) };
            // Mirror the registrant's algorithm and MAC shape: that is what it can verify.
            let policy =
                SendPolicy { algorithm: verified.algorithm, coverage: verified.coverage, length: verified.length };
            notify.prepare_auth(verified.key_id, &policy);
            let mut bytes = notify.to_bytes();
            if auth::sign(&mut bytes, verified.key_id, key, &policy).is_ok() {
                io.send("Map-Notify", Some(local.ip()), SocketAddr::new(remote.ip(), CONTROL_PORT), bytes);
            }
        }
    }

    /// A record with TTL 0 and the T bit: `registrant` withdraws its registration of `prefix`
    /// (others' registrations of it stand). Returns whether the mapping changed.
    fn withdraw(&mut self, site: usize, registrant: Registrant, prefix: EidPrefix, io: &mut Io) -> bool {
        let Some(entry) = self.registrations.get_mut(&prefix) else { return false };
        let Some(i) = entry.xtrs.iter().position(|x| x.registrant == registrant) else { return false };
        entry.xtrs.remove(i);
        if entry.xtrs.is_empty() {
            self.unregister(prefix, site, "registration withdrawn", io);
        }
        true
    }

    /// Whether a Map-Register of host `prefix` by `registrant` with `nonce` was sent before the
    /// registrant learnt that the host had moved away from it.
    fn stale(&self, prefix: &EidPrefix, registrant: Registrant, nonce: u64) -> bool {
        self.displaced.get(prefix).is_some_and(|d| d.iter().any(|&(r, n)| r == registrant && nonce <= n))
    }

    #[allow(clippy::too_many_arguments)]
    fn store(
        &mut self,
        now: Instant,
        site: usize,
        registrant: Registrant,
        source: IpAddr,
        reg: &MapRegister,
        rec: &MapRecord,
        prefix: EidPrefix,
        (key_id, auth): (u8, SendPolicy),
        io: &mut Io,
    ) -> bool {
        if prefix.is_host() && self.stale(&prefix, registrant, reg.nonce) {
            io.stats.mobility.stale_registrations += 1;
            return false;
        }
        let ttl_expiry = Duration::from_secs(u64::from(rec.ttl) * 60);
        let expires = now + if reg.use_ttl { ttl_expiry } else { self.registration_timeout };
        let entry = self.registrations.get_or_insert_with(prefix, || Registration { site, xtrs: Vec::new() });
        let timer_due = entry.earliest_expiry();
        let previous = entry.xtrs.iter().position(|x| x.registrant == registrant).map(|i| entry.xtrs.remove(i));
        let first_registered = previous.as_ref().map_or(now, |p| p.first_registered);
        let changed = previous.as_ref().is_none_or(|p| p.locators != rec.locators);
        // A host registered by another xTR with none of its locators has moved.
        let moved_from: Vec<XtrRegistration> = if prefix.is_host() {
            let disjoint = |x: &XtrRegistration| {
                !x.locators.is_empty()
                    && !rec.locators.is_empty()
                    && !x.locators.iter().any(|l| rec.locators.iter().any(|m| m.address == l.address))
            };
            let (gone, stay) = std::mem::take(&mut entry.xtrs).into_iter().partition(disjoint);
            entry.xtrs = stay;
            gone
        } else {
            Vec::new()
        };
        if !reg.merge {
            // Without the merge bit the latest registration stands alone.
            entry.xtrs.clear();
        }
        // Most prefixes have one xTR: a plain push would reserve room for four (576 bytes).
        entry.xtrs.reserve_exact(1);
        entry.xtrs.push(XtrRegistration {
            registrant,
            source,
            locators: rec.locators.clone(),
            ttl: rec.ttl,
            map_version: rec.map_version,
            proxy_reply: reg.proxy_reply,
            merge: reg.merge,
            first_registered,
            last_registered: now,
            expires,
            key_id,
            auth,
        });
        if timer_due.is_none_or(|t| expires < t) {
            self.expiry.push(Reverse((expires, prefix)));
        }
        if let Some(d) = self.displaced.get_mut(&prefix) {
            // Back at a registrant it had left, with a newer registration: no longer stale.
            d.retain(|(r, _)| *r != registrant);
        }
        for old in moved_from {
            self.moved(now, site, prefix, old, io);
        }
        if changed {
            let site = self.sites[site].config.name.clone();
            tracing::info!(%prefix, %site, by = %registrant, rlocs = rec.locators.len(), "registered");
            io.events.push_back(Event::Registered { site, prefix, by: source });
        }
        changed
    }

    /// Host `prefix` moved away from `old`: tell it, signed with the site key, until it acks.
    fn moved(&mut self, now: Instant, site: usize, prefix: EidPrefix, old: XtrRegistration, io: &mut Io) {
        let Some(reg) = self.registrations.get(&prefix) else { return };
        let record = proxy_record(prefix, reg);
        let to = reg.latest().map(|x| x.registrant);
        io.stats.mobility.moves += 1;
        tracing::info!(%prefix, from = %old.registrant, to = ?to.map(|r| r.to_string()), "host moved");
        let last_register = self.nonces.get(&(site, old.registrant)).copied().unwrap_or(0);
        let last_move = self.move_nonces.get(&(site, old.registrant)).copied().unwrap_or(0);
        let nonce = last_register.saturating_add(MOVE_NONCE_GAP).max(last_move.saturating_add(1));
        self.move_nonces.insert((site, old.registrant), nonce);
        let d = self.displaced.entry(prefix).or_default();
        d.retain(|(r, _)| *r != old.registrant);
        if d.len() >= MAX_DISPLACED {
            d.remove(0);
        }
        d.push((old.registrant, nonce));
        let Some(key) = self.sites[site].config.keys.get(old.key_id) else { return };
        let mut notify = MapNotify::new(nonce, vec![record]);
        let Ok(bytes) = notify.to_signed_bytes(old.key_id, key, &old.auth) else { return };
        let dst = SocketAddr::new(old.source, CONTROL_PORT);
        io.send("Map-Notify", None, dst, bytes.clone());
        io.stats.mobility.move_notifies += 1;
        io.stats.mobility.notifies_pushed += 1;
        if self.moves.len() < self.max_registrations {
            let next = now + RETRANSMIT[0];
            let m = MoveNotify { site, prefix, registrant: old.registrant, dst, bytes, sent: 1, next };
            self.moves.insert(nonce, m);
            self.move_timers.push(Reverse((next, nonce)));
        }
    }

    /// A Map-Request that came straight to us (not encapsulated), as `loci rig` sends.
    pub fn handle_direct_request(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        data: &[u8],
        io: &mut Io,
    ) {
        io.stats.received("Map-Request");
        if !self.request_limiter.check(now, &remote.ip()) {
            io.stats.drop(Drop::RateLimited);
            return;
        }
        match MapRequest::parse_noting(data) {
            Ok((req, notes)) => {
                io.note(&notes);
                self.answer(now, local, remote.ip(), remote.port(), &req, None, io);
            }
            Err(_) => io.stats.drop(Drop::Malformed),
        }
    }

    /// An Encapsulated Map-Request from a Map-Resolver (or an ITR, when we are also its MR).
    pub fn handle_ecm(&mut self, now: Instant, local: SocketAddr, remote: SocketAddr, ecm: &Ecm, io: &mut Io) {
        if !self.request_limiter.check(now, &remote.ip()) {
            io.stats.drop(Drop::RateLimited);
            return;
        }
        self.handle_resolved_ecm(now, local, ecm, io);
    }

    /// An Encapsulated Map-Request, rate limits already applied (the co-located Map-Resolver
    /// calls this in process).
    pub fn handle_resolved_ecm(&mut self, now: Instant, local: SocketAddr, ecm: &Ecm, io: &mut Io) {
        match MapRequest::parse_noting(&ecm.payload) {
            Ok((req, notes)) => {
                io.note(&notes);
                io.stats.received("Map-Request");
                self.answer(now, local, ecm.inner_ip.src, ecm.src_port, &req, Some(ecm), io);
            }
            Err(_) => io.stats.drop(Drop::Malformed),
        }
    }

    /// Whether some configured site prefix or registration covers `prefix` (a Map-Resolver
    /// uses this to decide between asking us and answering negatively).
    pub fn serves(&self, prefix: &EidPrefix) -> bool {
        self.site_of(prefix).is_some()
    }

    #[allow(clippy::too_many_arguments)]
    fn answer(
        &mut self,
        now: Instant,
        local: SocketAddr,
        requester: IpAddr,
        port: u16,
        req: &MapRequest,
        ecm: Option<&Ecm>,
        io: &mut Io,
    ) {
        if req.probe {
            // RFC 9301 §5.2: RLOC probes never go to the mapping system.
            io.stats.drop(Drop::ProbeToMappingSystem);
            return;
        }
        // No usable ITR-RLOC (an AFI-0 unsubscription, RFC 9437 §5): answer the requester.
        let dst = reply_destination(req, requester, port).unwrap_or(SocketAddr::new(requester, port));
        let mut records = Vec::new();
        let mut forward_to = None;
        for r in &req.records {
            let Some(eid) = eid_from_wire(&r.eid, r.eid_mask_len) else {
                io.stats.drop(Drop::Malformed);
                continue;
            };
            if r.notify {
                if let Some(xtr) = req.xtr_id {
                    match self.subscribe(now, local, eid, xtr, req, dst, io) {
                        SubscribeResult::Subscribed | SubscribeResult::Unsubscribed => continue,
                        SubscribeResult::Replay => {
                            io.stats.drop(Drop::Replay);
                            return;
                        }
                        SubscribeResult::Denied => io.stats.drop(Drop::SubscriptionDenied),
                    }
                }
            }
            match self.lookup(&eid) {
                Answer::Proxy(rec) => {
                    io.stats.proxy_replies += 1;
                    records.push(rec);
                }
                Answer::Forward(etr) => forward_to = forward_to.or(Some(etr)),
                Answer::Negative(neg) => {
                    io.stats.negative_replies += 1;
                    records.push(negative_record(&neg));
                }
            }
        }
        if let Some(etr) = forward_to {
            let ecm = match ecm {
                Some(e) => e.clone(),
                None => encapsulate_request(requester, port, req),
            };
            io.stats.forwarded_requests += 1;
            io.send(
                "Encapsulated-Control-Message",
                Some(local.ip()),
                SocketAddr::new(etr, CONTROL_PORT),
                ecm.to_bytes(),
            );
        }
        if records.is_empty() || req.dont_map_reply {
            return;
        }
        let first = records.first().and_then(|r| eid_from_wire(&r.eid, r.eid_mask_len));
        if let Some(p) = first {
            if !self.reply_limiter.check(now, &(dst.ip(), p)) {
                io.stats.drop(Drop::RateLimited);
                return;
            }
        }
        let reply = MapReply {
            probe: false,
            echo_nonce_capable: false,
            security: false,
            nonce: req.nonce,
            records,
            auth: None,
        };
        io.send("Map-Reply", Some(local.ip()), dst, reply.to_bytes());
    }

    /// Handles the N bit of a request record (RFC 9437 §5): subscribes the xTR to the
    /// registered prefix covering `eid` and confirms with a Map-Notify carrying the mapping.
    #[allow(clippy::too_many_arguments)]
    fn subscribe(
        &mut self,
        now: Instant,
        local: SocketAddr,
        eid: EidPrefix,
        xtr: XtrId,
        req: &MapRequest,
        dst: SocketAddr,
        io: &mut Io,
    ) -> SubscribeResult {
        let Some((prefix, reg)) = self.registrations.longest_match(eid.iid, eid.net.network()) else {
            return SubscribeResult::Denied;
        };
        let Some(policy) = self.sites[reg.site].config.pubsub.clone() else { return SubscribeResult::Denied };
        if !Subscriptions::allowed(&policy, &xtr) {
            return SubscribeResult::Denied;
        }
        let record = proxy_record(prefix, reg);
        let rlocs: Vec<IpAddr> = req.itr_rlocs.iter().filter_map(|a| a.ip()).collect();
        let result = self.subscriptions.subscribe(now, prefix, xtr, req.nonce, rlocs);
        let to = match result {
            SubscribeResult::Subscribed => SocketAddr::new(dst.ip(), CONTROL_PORT),
            // The unsubscribe confirmation goes to the request's source (RFC 9437 §5).
            SubscribeResult::Unsubscribed => dst,
            _ => return result,
        };
        tracing::info!(%prefix, xtr = format!("{:032x}", xtr.xtr_id), ?result, "subscription");
        if let Some(bytes) = signed_notify(req.nonce, record, &policy) {
            io.send("Map-Notify", Some(local.ip()), to, bytes);
            io.stats.mobility.notifies_pushed += 1;
        }
        result
    }

    fn lookup(&self, eid: &EidPrefix) -> Answer {
        if let Some((prefix, reg)) = self.registrations.longest_match(eid.iid, eid.net.network()) {
            if reg.proxy_reply() || self.sites[reg.site].config.force_proxy_reply {
                return Answer::Proxy(proxy_record(prefix, reg));
            }
            if let Some(x) = reg.latest() {
                if Some(x.registrant) == self.local_etr {
                    return Answer::Proxy(MapRecord { authoritative: true, ..proxy_record(prefix, reg) });
                }
                return Answer::Forward(x.source);
            }
        }
        Answer::Negative(negative::compute(&self.site_prefixes, &self.registrations, eid.iid, eid.net.network()))
    }

    /// Map-Notify-Ack of a publication.
    pub fn handle_notify_ack(&mut self, _now: Instant, _remote: SocketAddr, data: &[u8], io: &mut Io) {
        io.stats.received("Map-Notify-Ack");
        let Ok(ack) = MapNotify::parse(data) else {
            io.stats.drop(Drop::Malformed);
            return;
        };
        let (sites, site_prefixes) = (&self.sites, &self.site_prefixes);
        let key_of = |p: &EidPrefix| {
            site_prefixes.longest_match(p.iid, p.net.network()).and_then(|(_, s)| sites[s.site].config.pubsub.clone())
        };
        if self.subscriptions.acknowledge(data, ack.nonce, key_of) {
            io.stats.mobility.notifies_acked += 1;
            return;
        }
        let confirmed = ack.records.first().and_then(|r| eid_from_wire(&r.eid, r.eid_mask_len)).is_some_and(|p| {
            self.pubsub_policy(&p)
                .is_some_and(|policy| self.subscriptions.acknowledge_confirmation(data, ack.nonce, &p, &policy))
        });
        if confirmed {
            io.stats.mobility.notifies_acked += 1;
            return;
        }
        let moved = self.moves.get(&ack.nonce).map(|m| m.site);
        match moved {
            Some(site) if auth::verify(data, &self.sites[site].config.keys, false).is_ok() => {
                self.moves.remove(&ack.nonce);
                io.stats.mobility.notifies_acked += 1;
            }
            _ => io.stats.drop(Drop::NoMatchingNonce),
        }
    }
}

/// The record the Map-Server answers with for a registration (proxy reply or publication).
fn proxy_record(prefix: EidPrefix, reg: &Registration) -> MapRecord {
    let (eid, eid_mask_len) = eid_to_wire(&prefix);
    let latest = reg.latest();
    MapRecord {
        ttl: latest.map_or(1440, |x| x.ttl),
        eid_mask_len,
        action: Action::NO_ACTION,
        // Proxy replies are not authoritative (RFC 9301 §8.2).
        authoritative: false,
        map_version: latest.map_or(0, |x| x.map_version),
        eid,
        locators: reg.locators(),
    }
}

/// The record of a Negative Map-Reply (action native-forward, no locators).
pub fn negative_record(neg: &Negative) -> MapRecord {
    let (eid, eid_mask_len) = eid_to_wire(&neg.prefix);
    MapRecord {
        ttl: neg.ttl_minutes,
        eid_mask_len,
        action: Action::NATIVE_FORWARD,
        authoritative: false,
        map_version: 0,
        eid,
        locators: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SiteEidPrefix;
    use crate::mapping::eid_to_wire;
    use loci_wire::auth::KeyRing;

    const KEY: &[u8] = b"k";

    fn server() -> MapServer {
        let site = SiteConfig {
            name: "s".into(),
            keys: KeyRing::with_key(1, KEY.to_vec()),
            notify_policy: SendPolicy::default(),
            allow_unauthenticated: false,
            eid_prefixes: vec![SiteEidPrefix { prefix: "10.0.0.0/8".parse().unwrap(), accept_more_specifics: true }],
            force_proxy_reply: false,
            pubsub: None,
        };
        MapServer::new(MapServerConfig { sites: vec![site], ..Default::default() }, &Limits::default())
    }

    /// A signed Map-Register of `eid` from xTR `xtr` (merge bit set), with the TTL used as the
    /// registration's lifetime when `ttl_minutes` is given.
    fn register(eid: &str, xtr: u128, nonce: u64, ttl_minutes: Option<u32>) -> Vec<u8> {
        let (eid, eid_mask_len) = eid_to_wire(&eid.parse().unwrap());
        let mut reg = MapRegister {
            proxy_reply: true,
            security: false,
            eid_notify: false,
            use_ttl: ttl_minutes.is_some(),
            merge: true,
            want_map_notify: false,
            nonce,
            key_id: 0,
            algorithm_id: 0,
            auth_data: Vec::new(),
            records: vec![MapRecord {
                ttl: ttl_minutes.unwrap_or(1440),
                eid_mask_len,
                action: Action::NO_ACTION,
                authoritative: true,
                map_version: 0,
                eid,
                locators: Vec::new(),
            }],
            xtr_id: Some(XtrId { xtr_id: xtr, site_id: 1 }),
        };
        reg.to_signed_bytes(1, KEY, &SendPolicy::default()).unwrap()
    }

    #[test]
    fn refreshes_keep_one_timer_per_prefix_and_expiry_follows_the_last() {
        let (t0, mut ms, mut io) = (Instant::now(), server(), Io::default());
        let (local, remote) = ("192.0.2.10:4342".parse().unwrap(), "192.0.2.1:4342".parse().unwrap());
        let at = |s: u64| t0 + Duration::from_secs(s);
        let tick = |ms: &mut MapServer, io: &mut Io, now| {
            while ms.poll_timeout().is_some_and(|t| t <= now) {
                ms.handle_timeout(now, io);
            }
        };
        for (i, s) in [0, 60, 120].into_iter().enumerate() {
            tick(&mut ms, &mut io, at(s));
            ms.handle_register(at(s), local, remote, &register("10.1.1.1/32", 1, i as u64 + 1, None), &mut io);
            assert_eq!(ms.expiry.len(), 1, "a later refresh adds no timer");
        }
        let prefix: EidPrefix = "10.1.1.1/32".parse().unwrap();
        tick(&mut ms, &mut io, at(299));
        assert!(ms.registration(&prefix).is_some(), "180 s after the last refresh, not the first");
        assert_eq!(ms.poll_timeout(), Some(at(300)));
        // A second xTR whose TTL runs out sooner gets its own, earlier timer.
        ms.handle_register(at(230), local, remote, &register("10.1.1.1/32", 2, 1, Some(1)), &mut io);
        assert_eq!(ms.poll_timeout(), Some(at(290)));
        tick(&mut ms, &mut io, at(290));
        assert_eq!(ms.registration(&prefix).map(|r| r.xtrs.len()), Some(1));
        assert_eq!(io.stats.registrations_expired, 1);
        tick(&mut ms, &mut io, at(300));
        assert!(ms.registration(&prefix).is_none());
        assert_eq!(io.stats.registrations_expired, 2);
        assert_eq!(ms.poll_timeout(), None);
    }
}
