//! ETR control plane: registers the local database with every configured Map-Server
//! (RFC 9301 §8.2, retransmitting per §5.7) and answers Map-Requests for it with Map-Replies.
//!
//! With host mobility ([`crate::mobility`], DESIGN §5) the database also holds dynamic EIDs:
//! a new host is registered at once with a Map-Register of its own (then with the others every
//! minute), a silent one is withdrawn (a Map-Register with the T bit and Record TTL 0: RFC 9301
//! §5.6 has the Map-Server time the registration out by that TTL, at once). An authenticated
//! Map-Notify from a Map-Server saying a host now registers elsewhere turns it into an away
//! entry; packets still arriving for it are re-encapsulated by the data plane and their ITRs
//! get a Solicit-Map-Request (RFC 9301 §6.1), rate limited per (ITR, EID).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use loci_wire::auth::{self, KeyRing};
use loci_wire::ecm::Ecm;
use loci_wire::map_notify::MapNotify;
use loci_wire::map_register::{MapRegister, XtrId};
use loci_wire::map_reply::MapReply;
use loci_wire::map_request::MapRequest;
use loci_wire::{Action, Address, MapRecord, Wire};
use rand::rngs::StdRng;
use rand::RngCore;

use crate::config::{DatabaseMapping, EtrConfig, Limits, MobilityMode, RegisterPeer};
use crate::eid::EidPrefix;
use crate::locator::Rloc;
use crate::map_cache::MapCacheReader;
use crate::mapping::{eid_from_wire, eid_to_wire, record, reply_destination};
use crate::mobility::{AwayView, DynamicEidView, HostTimer, Mobility, Seen};
use crate::node::{Event, HostRemoval, Io, CONTROL_PORT};
use crate::prefix_table::PrefixTable;
use crate::ratelimit::KeyedLimiter;
use crate::stats::Drop;

/// First retransmission of an unacknowledged Map-Register, doubled up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Retransmissions of a Map-Register for single hosts before leaving them to the next round.
const UPDATE_RETRIES: u32 = 3;
/// Most such Map-Registers awaiting their Map-Notify per Map-Server.
const MAX_UPDATES: usize = 4096;
/// Host prefixes per Map-Register outside the round (their records stay well within
/// [`MAX_RECORD_BYTES`], with an Instance-ID LCAF and an IPv6 locator).
const UPDATE_PREFIXES: usize = 16;
/// Records of a Map-Register are kept within this many bytes (one unfragmented datagram).
const MAX_RECORD_BYTES: usize = 1200;

/// A Map-Register for a few records (new hosts, or withdrawn ones) awaiting its Map-Notify.
#[derive(Debug, Clone)]
pub struct Update {
    pub nonce: u64,
    pub prefixes: Vec<EidPrefix>,
    /// Record TTL 0 with the T bit: the registrations are withdrawn.
    pub withdraw: bool,
    sent: u32,
    next: Instant,
}

/// Registration state towards one Map-Server.
#[derive(Debug, Clone)]
pub struct Registration {
    pub peer: RegisterPeer,
    /// Nonces of this round's Map-Registers (one per group of records) awaiting their Map-Notify.
    pub outstanding: Vec<u64>,
    pub backoff: Duration,
    pub next: Instant,
    pub acknowledged: Option<Instant>,
    pub updates: Vec<Update>,
}

impl Registration {
    fn keys(&self) -> KeyRing {
        KeyRing::with_key(self.peer.key_id, self.peer.key.clone())
    }

    fn next_timer(&self) -> Instant {
        self.updates.iter().map(|u| u.next).fold(self.next, Instant::min)
    }
}

/// What a Map-Notify was, to the ETR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyVerdict {
    /// Handled (or refused and counted) here.
    Handled,
    /// Not for the ETR: perhaps a publication for the ITR.
    NotMine,
}

pub struct Etr {
    config: EtrConfig,
    database: PrefixTable<DatabaseMapping>,
    peers: Vec<Registration>,
    interval: Duration,
    last_nonce: u64,
    mobility: Mobility,
    /// Replies to Map-Requests sent straight to us, per requester and in all
    /// ([`Limits::etr_replies_per_source`], [`Limits::etr_replies_per_second`]).
    direct_per_source: KeyedLimiter<IpAddr>,
    direct_total: KeyedLimiter<()>,
}

impl Etr {
    pub fn new(config: EtrConfig, limits: &Limits, now: Instant) -> Self {
        let mut database = PrefixTable::new();
        for m in &config.database {
            database.insert(m.prefix, m.clone());
        }
        let peers = config
            .map_servers
            .iter()
            .map(|p| Registration {
                peer: p.clone(),
                outstanding: Vec::new(),
                backoff: FIRST_BACKOFF,
                next: now,
                acknowledged: None,
                updates: Vec::new(),
            })
            .collect();
        let last_nonce = config.first_nonce;
        let mobility = Mobility::new(config.mobility.clone());
        Etr {
            config,
            database,
            peers,
            interval: limits.register_interval,
            last_nonce,
            mobility,
            direct_per_source: KeyedLimiter::per_second(limits.etr_replies_per_source, limits.max_rate_limited_sources),
            // Room for more than the one key: a full table refuses even the keys it holds.
            direct_total: KeyedLimiter::per_second(limits.etr_replies_per_second, 2),
        }
    }

    /// The last Map-Register nonce used (persist it: nonces only increase, across restarts too).
    pub fn last_nonce(&self) -> u64 {
        self.last_nonce
    }

    pub fn registrations(&self) -> &[Registration] {
        &self.peers
    }

    pub fn database(&self) -> &PrefixTable<DatabaseMapping> {
        &self.database
    }

    /// The dynamic EIDs this xTR serves now (`loci show dynamic-eids`).
    pub fn dynamic_eids(&self) -> Vec<DynamicEidView> {
        self.mobility.views()
    }

    /// Hosts that moved away and where their packets are re-encapsulated to.
    pub fn away_entries(&self) -> Vec<AwayView> {
        self.mobility.away_entries()
    }

    /// The data plane's handle on the away entries: look the inner destination of each
    /// decapsulated packet up here; a hit means re-encapsulate to that RLOC and report the
    /// packet with `Node::handle_away_packet`.
    pub fn away_reader(&self) -> MapCacheReader {
        self.mobility.away_reader()
    }

    pub fn mobility(&self) -> &Mobility {
        &self.mobility
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let peers = self.peers.iter().map(Registration::next_timer).min();
        [peers, self.mobility.poll_timeout()].into_iter().flatten().min()
    }

    pub fn handle_timeout(&mut self, now: Instant, _rng: &mut StdRng, io: &mut Io) {
        let mut timers = Vec::new();
        self.mobility.handle_timeout(now, &mut timers);
        let mut silent = Vec::new();
        for t in timers {
            match t {
                HostTimer::Probe { prefix, interface } => {
                    io.stats.mobility.probes += 1;
                    io.events.push_back(Event::ProbeHost { prefix, interface });
                }
                HostTimer::Silent { prefix, interface } => {
                    tracing::info!(%prefix, %interface, "dynamic EID silent: removed");
                    io.stats.mobility.hosts_silent += 1;
                    self.database.remove(&prefix);
                    io.events.push_back(Event::HostRemoved { prefix, interface, reason: HostRemoval::Silent });
                    silent.push(prefix);
                }
            }
        }
        if !silent.is_empty() {
            self.send_update(now, &silent, true, io);
        }
        for i in 0..self.peers.len() {
            self.retransmit_updates(now, i, io);
            if self.peers[i].next > now {
                continue;
            }
            let p = &mut self.peers[i];
            if !p.outstanding.is_empty() {
                // No Map-Notify: retransmit, backing off exponentially (RFC 9301 §5.7).
                p.next = now + p.backoff;
                p.backoff = (p.backoff * 2).min(MAX_BACKOFF);
            } else {
                p.next = now + FIRST_BACKOFF;
                p.backoff = FIRST_BACKOFF * 2;
            }
            self.send_round(now, i, io);
        }
    }

    fn record_of(&self, m: &DatabaseMapping) -> MapRecord {
        record(&m.prefix, self.config.record_ttl, Action::NO_ACTION, true, m.locators.clone())
    }

    fn next_nonce(&mut self) -> u64 {
        self.last_nonce = self.last_nonce.wrapping_add(1);
        self.last_nonce
    }

    /// A signed Map-Register of `records` for peer `i`.
    fn register_bytes(&self, i: usize, nonce: u64, records: Vec<MapRecord>, use_ttl: bool) -> Option<Vec<u8>> {
        let peer = &self.peers[i].peer;
        let mut reg = MapRegister {
            proxy_reply: self.config.proxy_reply,
            security: false,
            eid_notify: false,
            use_ttl,
            merge: self.config.merge,
            want_map_notify: true,
            nonce,
            key_id: 0,
            algorithm_id: 0,
            auth_data: Vec::new(),
            records,
            xtr_id: Some(XtrId { xtr_id: self.config.xtr_id, site_id: self.config.site_id }),
        };
        match reg.to_signed_bytes(peer.key_id, &peer.key, &peer.policy) {
            Ok(bytes) => Some(bytes),
            Err(e) => {
                tracing::warn!(map_server = %peer.address, error = %e, "cannot sign Map-Register");
                None
            }
        }
    }

    /// The whole database to peer `i`, in Map-Registers that each fit one datagram.
    fn send_round(&mut self, now: Instant, i: usize, io: &mut Io) {
        let records: Vec<MapRecord> = self.database.iter().map(|(_, m)| self.record_of(m)).collect();
        self.peers[i].outstanding.clear();
        if records.is_empty() {
            // Nothing to register yet (only dynamic-EID ranges, no host seen).
            self.peers[i].next = now + self.interval;
            return;
        }
        for group in groups(records) {
            let nonce = self.next_nonce();
            let Some(bytes) = self.register_bytes(i, nonce, group, false) else { return };
            self.peers[i].outstanding.push(nonce);
            io.send("Map-Register", None, self.peers[i].peer.address, bytes);
        }
    }

    /// Registers (or, with `withdraw`, withdraws) `prefixes` with every Map-Server now, apart
    /// from the round, [`UPDATE_PREFIXES`] to a Map-Register. Returns the first nonce used.
    fn send_update(&mut self, now: Instant, prefixes: &[EidPrefix], withdraw: bool, io: &mut Io) -> u64 {
        let first = self.last_nonce.wrapping_add(1);
        for i in 0..self.peers.len() {
            for chunk in prefixes.chunks(UPDATE_PREFIXES) {
                if self.peers[i].updates.len() >= MAX_UPDATES {
                    // The next round carries them; stop retransmitting the oldest.
                    self.peers[i].updates.remove(0);
                }
                let next = now + FIRST_BACKOFF;
                let update = Update { nonce: 0, prefixes: chunk.to_vec(), withdraw, sent: 0, next };
                self.peers[i].updates.push(update);
                let last = self.peers[i].updates.len() - 1;
                self.transmit_update(i, last, io);
            }
        }
        first
    }

    fn update_records(&self, u: &Update) -> Vec<MapRecord> {
        if u.withdraw {
            u.prefixes.iter().map(|p| record(p, 0, Action::NO_ACTION, true, Vec::new())).collect()
        } else {
            u.prefixes.iter().filter_map(|p| self.database.get(p)).map(|m| self.record_of(m)).collect()
        }
    }

    /// Sends update `u` to peer `i`, with a fresh nonce (the Map-Server refuses a nonce twice).
    fn transmit_update(&mut self, i: usize, u: usize, io: &mut Io) {
        let records = self.update_records(&self.peers[i].updates[u]);
        if records.is_empty() {
            // Every host of it left again before the Map-Notify came.
            self.peers[i].updates.remove(u);
            return;
        }
        let nonce = self.next_nonce();
        let update = &mut self.peers[i].updates[u];
        update.nonce = nonce;
        let withdraw = update.withdraw;
        if let Some(bytes) = self.register_bytes(i, nonce, records, withdraw) {
            io.send("Map-Register", None, self.peers[i].peer.address, bytes);
        }
    }

    fn retransmit_updates(&mut self, now: Instant, i: usize, io: &mut Io) {
        let mut u = 0;
        while u < self.peers[i].updates.len() {
            let update = &mut self.peers[i].updates[u];
            if update.next > now {
                u += 1;
                continue;
            }
            if update.sent >= UPDATE_RETRIES {
                self.peers[i].updates.remove(u);
                continue;
            }
            update.sent += 1;
            update.next = now + FIRST_BACKOFF * (1 << update.sent);
            let before = self.peers[i].updates.len();
            self.transmit_update(i, u, io);
            if self.peers[i].updates.len() == before {
                u += 1;
            }
        }
    }

    /// The data plane saw a packet (ARP, ND or IP) from local host `host` on `interface`.
    pub fn handle_host_seen(&mut self, now: Instant, iid: u32, host: IpAddr, interface: &str, io: &mut Io) {
        let (prefix, range) = match self.mobility.host_seen(now, iid, host, interface) {
            Seen::Refreshed => return,
            Seen::Outside => {
                io.stats.mobility.hosts_outside_ranges += 1;
                return;
            }
            Seen::Full => {
                io.stats.mobility.hosts_refused += 1;
                io.stats.drop(Drop::TableFull);
                return;
            }
            Seen::New { prefix, range } => (prefix, range),
        };
        let r = self.mobility.range(range).clone();
        tracing::info!(%prefix, interface, mode = ?r.mode, "dynamic EID detected");
        io.stats.mobility.hosts_detected += 1;
        self.mobility.remove_away(&prefix);
        self.database.insert(prefix, DatabaseMapping { prefix, locators: r.locators.clone() });
        let nonce = self.send_update(now, &[prefix], false, io);
        if let Some(h) = self.mobility.host_mut(&prefix) {
            h.registered_nonce = nonce;
        }
        if r.mode == MobilityMode::ExtendedSubnet && !r.map_notify_group.is_empty() {
            self.announce(prefix, &r.locators, &r.map_notify_group, io);
        }
        io.events.push_back(Event::HostDetected { prefix, interface: r.interface, mode: r.mode });
    }

    /// Tells the site's other xTRs (map-notify-group) that `prefix` is now here.
    fn announce(&mut self, prefix: EidPrefix, locators: &[loci_wire::Locator], group: &[IpAddr], io: &mut Io) {
        let Some(peer) = self.peers.first().map(|p| p.peer.clone()) else {
            tracing::warn!(%prefix, "no Map-Server key to sign the map-notify-group announcement with");
            return;
        };
        let nonce = self.next_nonce();
        let records = vec![record(&prefix, self.config.record_ttl, Action::NO_ACTION, true, locators.to_vec())];
        let mut notify = MapNotify {
            xtr_id: Some(XtrId { xtr_id: self.config.xtr_id, site_id: self.config.site_id }),
            ..MapNotify::new(nonce, records)
        };
        let Ok(bytes) = notify.to_signed_bytes(peer.key_id, &peer.key, &peer.policy) else { return };
        for &dst in group {
            io.stats.mobility.group_notifies_sent += 1;
            io.send("Map-Notify", None, SocketAddr::new(dst, CONTROL_PORT), bytes.clone());
        }
    }

    /// A Map-Notify: the acknowledgement of one of our Map-Registers, a Map-Server telling us a
    /// host moved, or a site xTR announcing a host on the map-notify-group.
    pub fn handle_notify(&mut self, now: Instant, remote: SocketAddr, data: &[u8], io: &mut Io) -> NotifyVerdict {
        let notify = match MapNotify::parse(data) {
            Ok(n) => n,
            Err(_) => {
                io.stats.drop(Drop::Malformed);
                return NotifyVerdict::Handled;
            }
        };
        let Some(i) = self.peers.iter().position(|p| p.peer.address.ip() == remote.ip()) else {
            return self.handle_group_notify(now, remote, data, &notify, io);
        };
        let p = &mut self.peers[i];
        let round = p.outstanding.iter().position(|&n| n == notify.nonce);
        let update = p.updates.iter().position(|u| u.nonce == notify.nonce);
        if round.is_none() && update.is_none() {
            return self.handle_move_notify(now, i, remote, data, &notify, io);
        }
        if auth::verify(data, &p.keys(), false).is_err() {
            io.stats.drop(Drop::BadAuth);
            return NotifyVerdict::Handled;
        }
        if let Some(u) = update {
            p.updates.remove(u);
            return NotifyVerdict::Handled;
        }
        if let Some(r) = round {
            p.outstanding.remove(r);
        }
        if !p.outstanding.is_empty() {
            return NotifyVerdict::Handled;
        }
        p.backoff = FIRST_BACKOFF;
        p.next = now + self.interval;
        if p.acknowledged.is_none() {
            tracing::info!(map_server = %p.peer.address, "registration acknowledged");
        }
        p.acknowledged = Some(now);
        io.events.push_back(Event::RegistrationAcknowledged { map_server: p.peer.address });
        NotifyVerdict::Handled
    }

    /// Whether a record names one of our locators (the mapping still includes us).
    fn names_us(&self, rec: &MapRecord, prefix: &EidPrefix) -> bool {
        let ours = self.mobility.config().ranges.iter().filter(|r| r.prefix.covers(prefix)).flat_map(|r| &r.locators);
        let ours: Vec<&Address> = ours.map(|l| &l.address).collect();
        rec.locators.iter().any(|l| ours.contains(&&l.address))
    }

    /// An unsolicited Map-Notify from Map-Server `i`: hosts of ours now registered elsewhere.
    fn handle_move_notify(
        &mut self,
        now: Instant,
        i: usize,
        remote: SocketAddr,
        data: &[u8],
        notify: &MapNotify,
        io: &mut Io,
    ) -> NotifyVerdict {
        let moved: Vec<(EidPrefix, &MapRecord)> = notify
            .records
            .iter()
            .filter_map(|r| eid_from_wire(&r.eid, r.eid_mask_len).map(|p| (p, r)))
            .filter(|(p, _)| self.mobility.host(p).is_some() || self.mobility.away_nonce(p).is_some())
            .collect();
        if moved.is_empty() {
            return NotifyVerdict::NotMine;
        }
        let peer = &self.peers[i];
        if auth::verify(data, &peer.keys(), false).is_err() {
            io.stats.mobility.forged_notifies += 1;
            io.refuse(now, None, Drop::BadAuth, remote, "Map-Notify about our hosts failed authentication");
            return NotifyVerdict::Handled;
        }
        let mut accepted = false;
        for (prefix, rec) in moved {
            if self.names_us(rec, &prefix) {
                continue;
            }
            let rlocs: Vec<Rloc> = rec.locators.iter().filter_map(Rloc::from_wire).collect();
            if let Some(h) = self.mobility.host(&prefix) {
                if notify.nonce <= h.registered_nonce {
                    io.stats.mobility.replayed_notifies += 1;
                    io.refuse(now, None, Drop::Replay, remote, "Map-Notify older than our registration of the host");
                    continue;
                }
                self.moved_away(now, prefix, rlocs, notify.nonce, io);
                accepted = true;
            } else if let Some(n) = self.mobility.away_nonce(&prefix) {
                if notify.nonce < n {
                    io.stats.mobility.replayed_notifies += 1;
                    io.stats.drop(Drop::Replay);
                    continue;
                }
                // A retransmission (same nonce: the Map-Notify-Ack was lost) or a newer move.
                if notify.nonce > n {
                    self.mobility.add_away(now, prefix, rlocs, notify.nonce);
                }
                accepted = true;
            }
        }
        if !accepted {
            return NotifyVerdict::Handled;
        }
        // Map-Registers sent from now on are newer than this Map-Notify: the Map-Server tells
        // them from those that were in flight when the host moved.
        self.last_nonce = self.last_nonce.max(notify.nonce);
        let peer = &self.peers[i].peer;
        let mut ack = notify.to_ack();
        if let Ok(bytes) = ack.to_signed_bytes(peer.key_id, &peer.key, &peer.policy) {
            io.send("Map-Notify-Ack", None, SocketAddr::new(remote.ip(), CONTROL_PORT), bytes);
        }
        NotifyVerdict::Handled
    }

    /// `prefix` now lives behind `rlocs`: forget it, keep an away entry.
    fn moved_away(&mut self, now: Instant, prefix: EidPrefix, rlocs: Vec<Rloc>, nonce: u64, io: &mut Io) {
        let Some(h) = self.mobility.remove_host(&prefix) else { return };
        let interface = self.mobility.interface(&h).to_string();
        self.database.remove(&prefix);
        let to: Vec<IpAddr> = rlocs.iter().map(|r| r.addr).collect();
        tracing::info!(%prefix, ?to, "dynamic EID moved away");
        io.stats.mobility.moves_away += 1;
        self.mobility.add_away(now, prefix, rlocs, nonce);
        io.events.push_back(Event::HostRemoved { prefix, interface, reason: HostRemoval::Moved { to } });
    }

    /// A Map-Notify from a site xTR on the map-notify-group (extended subnet).
    fn handle_group_notify(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        data: &[u8],
        notify: &MapNotify,
        io: &mut Io,
    ) -> NotifyVerdict {
        let from_site = notify.xtr_id.filter(|x| x.site_id == self.config.site_id);
        let (Some(from), true) = (from_site, self.mobility.is_enabled()) else { return NotifyVerdict::NotMine };
        if from.xtr_id == self.config.xtr_id {
            // Our own announcement, looped back by the multicast group.
            return NotifyVerdict::Handled;
        }
        if !self.peers.iter().any(|p| auth::verify(data, &p.keys(), false).is_ok()) {
            io.stats.mobility.forged_notifies += 1;
            io.refuse(now, None, Drop::BadAuth, remote, "map-notify-group announcement failed authentication");
            return NotifyVerdict::Handled;
        }
        if !self.mobility.group_nonce(from.xtr_id, notify.nonce) {
            io.stats.mobility.replayed_notifies += 1;
            io.refuse(now, None, Drop::Replay, remote, "map-notify-group announcement replayed");
            return NotifyVerdict::Handled;
        }
        io.stats.mobility.group_notifies_accepted += 1;
        for rec in &notify.records {
            let Some(prefix) = eid_from_wire(&rec.eid, rec.eid_mask_len) else { continue };
            let extended = self
                .mobility
                .host(&prefix)
                .is_some_and(|h| self.mobility.range(h.range).mode == MobilityMode::ExtendedSubnet);
            if extended && !self.names_us(rec, &prefix) {
                let rlocs = rec.locators.iter().filter_map(Rloc::from_wire).collect();
                // Nonce 0: the Map-Server's Map-Notify that follows is newer and updates it.
                self.moved_away(now, prefix, rlocs, 0, io);
            }
        }
        NotifyVerdict::Handled
    }

    /// The data plane re-encapsulated a packet from ITR `itr` for `eid`, which has an away
    /// entry: solicit a Map-Request from that ITR (RFC 9301 §6.1), at most once per
    /// `smr_interval` per (ITR, EID).
    pub fn handle_away_packet(
        &mut self,
        now: Instant,
        iid: u32,
        eid: IpAddr,
        itr: IpAddr,
        rng: &mut StdRng,
        io: &mut Io,
    ) {
        let Some(away) = self.mobility.away(iid, eid) else { return };
        io.stats.mobility.away_packets += 1;
        // Known from the map-notify-group only (nonce 0): the Map-Server may not have the new
        // registration yet and would send the SMR-invoked Map-Request to us, who no longer
        // answer it. Its Map-Notify follows within a round trip; the SMR then.
        if self.mobility.away_nonce(&away.prefix) == Some(0) {
            io.stats.mobility.smrs_suppressed += 1;
            return;
        }
        if !self.mobility.smr_allowed(now, itr, away.prefix) {
            io.stats.mobility.smrs_suppressed += 1;
            return;
        }
        let Some(src) = self.own_rloc(&away.prefix, itr.is_ipv4()) else {
            io.stats.drop(Drop::Unexpected);
            return;
        };
        let mut req = crate::mapping::map_request(rng.next_u64(), &away.prefix, vec![Address::from(src)]);
        req.smr = true;
        // RFC 9301 §5.2 (D bit): the SMR itself wants no Map-Reply.
        req.dont_map_reply = true;
        req.source_eid = eid_to_wire(&EidPrefix::host(iid, eid)).0;
        io.stats.mobility.smrs_sent += 1;
        io.send("Map-Request", Some(src), SocketAddr::new(itr, CONTROL_PORT), req.to_bytes());
    }

    /// One of our RLOCs of the family asked, preferring those of the range holding `prefix`.
    fn own_rloc(&self, prefix: &EidPrefix, v4: bool) -> Option<IpAddr> {
        let ranges = self.mobility.config().ranges.iter();
        let covering = ranges.clone().filter(|r| r.prefix.covers(prefix)).flat_map(|r| &r.locators);
        let any_range = ranges.flat_map(|r| &r.locators);
        let database = self.config.database.iter().flat_map(|m| &m.locators);
        covering.chain(any_range).chain(database).filter_map(|l| l.address.ip()).find(|a| a.is_ipv4() == v4)
    }

    /// A Map-Request forwarded by our Map-Server.
    pub fn handle_ecm(&mut self, _now: Instant, local: SocketAddr, ecm: &Ecm, io: &mut Io) {
        match MapRequest::parse(&ecm.payload) {
            Ok(req) => {
                io.stats.received("Map-Request");
                self.answer(local, ecm.inner_ip.src, ecm.src_port, &req, io);
            }
            Err(_) => io.stats.drop(Drop::Malformed),
        }
    }

    /// A Map-Request sent straight to us (an RLOC probe, or a direct query). Anyone can send
    /// one, from any address, so the replies are rate limited per requester and in all.
    pub fn handle_direct_request(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        data: &[u8],
        io: &mut Io,
    ) {
        let Ok(req) = MapRequest::parse(data) else {
            io.stats.drop(Drop::Malformed);
            return;
        };
        io.stats.received("Map-Request");
        if req.dont_map_reply {
            return;
        }
        // Per requester first: one flooding source then spends only its own share of the total.
        if !self.direct_per_source.check(now, &remote.ip()) {
            io.refuse(now, None, Drop::RateLimited, remote, "direct Map-Requests over the per-requester limit");
            return;
        }
        if !self.direct_total.check(now, &()) {
            io.refuse(now, None, Drop::RateLimited, remote, "direct Map-Requests over the ETR's total limit");
            return;
        }
        self.answer(local, remote.ip(), remote.port(), &req, io);
    }

    fn answer(&mut self, local: SocketAddr, requester: IpAddr, port: u16, req: &MapRequest, io: &mut Io) {
        if req.dont_map_reply {
            return;
        }
        let mut records: Vec<MapRecord> = req
            .records
            .iter()
            .filter_map(|r| eid_from_wire(&r.eid, r.eid_mask_len))
            .filter_map(|eid| self.database.longest_match(eid.iid, eid.net.network()))
            .map(|(prefix, m)| record(&prefix, self.config.record_ttl, Action::NO_ACTION, true, m.locators.clone()))
            .collect();
        if req.probe {
            // The p bit names the locator that was probed (RFC 9301 §5.4): the one asked.
            for l in records.iter_mut().flat_map(|r| r.locators.iter_mut()) {
                l.probed = l.address.ip() == Some(local.ip());
            }
        }
        // A probe is about this locator's reachability: answered even when the EID it names is
        // no longer ours (the reply then carries no record, RFC 9301 §7.1's data being a SHOULD).
        if records.is_empty() && !req.probe {
            io.stats.drop(Drop::Unexpected);
            return;
        }
        // Probe replies go back to the prober; others to the ITR-RLOC at the request's port.
        let dst =
            if req.probe { Some(SocketAddr::new(requester, port)) } else { reply_destination(req, requester, port) };
        let Some(dst) = dst else {
            io.stats.drop(Drop::Malformed);
            return;
        };
        let reply = MapReply {
            probe: req.probe,
            echo_nonce_capable: self.config.echo_nonce,
            security: false,
            nonce: req.nonce,
            records,
            auth: None,
        };
        io.send("Map-Reply", Some(local.ip()), dst, reply.to_bytes());
    }
}

/// Splits `records` into groups whose encoding stays within [`MAX_RECORD_BYTES`] (and the 255
/// records a header can count).
fn groups(records: Vec<MapRecord>) -> Vec<Vec<MapRecord>> {
    let mut out: Vec<Vec<MapRecord>> = Vec::new();
    let mut bytes = 0;
    for r in records {
        let len = r.wire_len();
        match out.last_mut() {
            Some(last) if bytes + len <= MAX_RECORD_BYTES && last.len() < 255 => last.push(r),
            _ => {
                out.push(vec![r]);
                bytes = 0;
            }
        }
        bytes += len;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DynamicEidRange, MobilityConfig};
    use loci_wire::auth::SendPolicy;
    use loci_wire::Locator;
    use rand::SeedableRng;

    fn locator() -> Locator {
        Locator::new("203.0.113.1".parse::<IpAddr>().unwrap())
    }

    /// An ETR with no static database and the dynamic range 10.1.9.0/24 on `site0`.
    fn etr(now: Instant) -> Etr {
        let config = EtrConfig {
            database: Vec::new(),
            map_servers: vec![RegisterPeer {
                address: "192.0.2.10:4342".parse().unwrap(),
                key_id: 1,
                key: b"k".to_vec(),
                policy: SendPolicy::default(),
            }],
            proxy_reply: false,
            merge: false,
            xtr_id: 1,
            site_id: 1,
            record_ttl: 1440,
            first_nonce: 0,
            echo_nonce: false,
            mobility: MobilityConfig {
                ranges: vec![DynamicEidRange {
                    prefix: "10.1.9.0/24".parse().unwrap(),
                    interface: "site0".into(),
                    mode: MobilityMode::AcrossSubnet,
                    map_notify_group: Vec::new(),
                    gateway: None,
                    locators: vec![locator()],
                    max_hosts: 10,
                }],
                ..MobilityConfig::default()
            },
        };
        Etr::new(config, &Limits::default(), now)
    }

    fn registers(io: &mut Io) -> Vec<MapRegister> {
        io.transmits.drain(..).map(|t| MapRegister::parse(&t.data).expect("a Map-Register")).collect()
    }

    #[test]
    fn groups_fit_a_datagram_and_keep_every_record() {
        let records: Vec<MapRecord> = (0..600u32)
            .map(|i| {
                let p = EidPrefix::host(1000, IpAddr::from((0x0a00_0000 + i).to_be_bytes()));
                record(&p, 1440, Action::NO_ACTION, true, vec![locator()])
            })
            .collect();
        let g = groups(records);
        assert!(g.len() > 1);
        assert!(g.iter().all(|g| g.iter().map(MapRecord::wire_len).sum::<usize>() <= MAX_RECORD_BYTES));
        assert_eq!(g.iter().map(Vec::len).sum::<usize>(), 600);
        assert!(groups(Vec::new()).is_empty());
    }

    #[test]
    fn a_new_host_is_registered_at_once_and_retransmitted_with_fresh_nonces() {
        let t0 = Instant::now();
        let (mut rng, mut io) = (StdRng::seed_from_u64(1), Io::default());
        let mut e = etr(t0);
        // Nothing to register yet: the first round sends nothing.
        e.handle_timeout(t0, &mut rng, &mut io);
        assert!(io.transmits.is_empty());
        e.handle_host_seen(t0, 0, "10.1.9.5".parse().unwrap(), "site0", &mut io);
        let first = registers(&mut io);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].records.len(), 1);
        assert_eq!(e.dynamic_eids()[0].prefix, "10.1.9.5/32".parse().unwrap());
        assert!(matches!(io.events.back(), Some(Event::HostDetected { .. })));
        // Unacknowledged: retransmitted after 1, 2 and 4 more seconds, each with a new nonce.
        let mut nonces = vec![first[0].nonce];
        for s in [1, 3, 7, 15] {
            e.handle_timeout(t0 + Duration::from_secs(s), &mut rng, &mut io);
            nonces.extend(registers(&mut io).iter().filter(|r| r.records.len() == 1).map(|r| r.nonce));
        }
        assert_eq!(nonces.len(), 4, "{nonces:?}");
        nonces.dedup();
        assert_eq!(nonces.len(), 4);
        assert!(e.registrations()[0].updates.is_empty(), "left to the rounds");
    }
}
