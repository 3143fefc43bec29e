//! ETR control plane: registers the local database with every configured Map-Server
//! (RFC 9301 §8.2, retransmitting per §5.7) and answers Map-Requests for it with Map-Replies.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use loci_wire::auth::{self, KeyRing};
use loci_wire::ecm::Ecm;
use loci_wire::map_notify::MapNotify;
use loci_wire::map_register::{MapRegister, XtrId};
use loci_wire::map_reply::MapReply;
use loci_wire::map_request::MapRequest;
use loci_wire::{Action, MapRecord, Wire};
use rand::rngs::StdRng;

use crate::config::{DatabaseMapping, EtrConfig, Limits, RegisterPeer};
use crate::mapping::{eid_from_wire, record, reply_destination};
use crate::node::{Event, Io};
use crate::prefix_table::PrefixTable;
use crate::stats::Drop;

/// First retransmission of an unacknowledged Map-Register, doubled up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Registration state towards one Map-Server.
#[derive(Debug, Clone)]
pub struct Registration {
    pub peer: RegisterPeer,
    /// Nonce of the Map-Register awaiting its Map-Notify.
    pub outstanding: Option<u64>,
    pub backoff: Duration,
    pub next: Instant,
    pub acknowledged: Option<Instant>,
}

pub struct Etr {
    config: EtrConfig,
    database: PrefixTable<DatabaseMapping>,
    peers: Vec<Registration>,
    interval: Duration,
    last_nonce: u64,
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
                outstanding: None,
                backoff: FIRST_BACKOFF,
                next: now,
                acknowledged: None,
            })
            .collect();
        let last_nonce = config.first_nonce;
        Etr { config, database, peers, interval: limits.register_interval, last_nonce }
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

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.peers.iter().map(|p| p.next).min()
    }

    pub fn handle_timeout(&mut self, now: Instant, _rng: &mut StdRng, io: &mut Io) {
        for i in 0..self.peers.len() {
            if self.peers[i].next > now {
                continue;
            }
            let p = &mut self.peers[i];
            if p.outstanding.is_some() {
                // No Map-Notify: retransmit, backing off exponentially (RFC 9301 §5.7).
                p.next = now + p.backoff;
                p.backoff = (p.backoff * 2).min(MAX_BACKOFF);
            } else {
                p.next = now + FIRST_BACKOFF;
                p.backoff = FIRST_BACKOFF * 2;
            }
            self.send_register(i, io);
        }
    }

    fn records(&self) -> Vec<MapRecord> {
        self.config
            .database
            .iter()
            .map(|m| record(&m.prefix, self.config.record_ttl, Action::NO_ACTION, true, m.locators.clone()))
            .collect()
    }

    fn send_register(&mut self, i: usize, io: &mut Io) {
        self.last_nonce = self.last_nonce.wrapping_add(1);
        let nonce = self.last_nonce;
        let peer = &self.peers[i].peer;
        let mut reg = MapRegister {
            proxy_reply: self.config.proxy_reply,
            security: false,
            eid_notify: false,
            use_ttl: false,
            merge: self.config.merge,
            want_map_notify: true,
            nonce,
            key_id: 0,
            algorithm_id: 0,
            auth_data: Vec::new(),
            records: self.records(),
            xtr_id: Some(XtrId { xtr_id: self.config.xtr_id, site_id: self.config.site_id }),
        };
        reg.prepare_auth(peer.key_id, &peer.policy);
        let mut bytes = reg.to_bytes();
        if let Err(e) = auth::sign(&mut bytes, peer.key_id, &peer.key, &peer.policy) {
            tracing::warn!(map_server = %peer.address, error = %e, "cannot sign Map-Register");
            return;
        }
        let dst = peer.address;
        self.peers[i].outstanding = Some(nonce);
        io.send("Map-Register", None, dst, bytes);
    }

    /// Map-Notify acknowledging one of our Map-Registers.
    pub fn handle_notify(&mut self, now: Instant, remote: SocketAddr, data: &[u8], io: &mut Io) {
        io.stats.received("Map-Notify");
        let Some(i) = self.peers.iter().position(|p| p.peer.address.ip() == remote.ip()) else {
            io.stats.drop(Drop::Unexpected);
            return;
        };
        let notify = match MapNotify::parse(data) {
            Ok(n) => n,
            Err(_) => {
                io.stats.drop(Drop::Malformed);
                return;
            }
        };
        let p = &mut self.peers[i];
        if p.outstanding != Some(notify.nonce) {
            io.stats.drop(Drop::NoMatchingNonce);
            return;
        }
        let mut keys = KeyRing::new();
        keys.insert(p.peer.key_id, p.peer.key.clone());
        if auth::verify(data, &keys, false).is_err() {
            io.stats.drop(Drop::BadAuth);
            return;
        }
        p.outstanding = None;
        p.backoff = FIRST_BACKOFF;
        p.next = now + self.interval;
        if p.acknowledged.is_none() {
            tracing::info!(map_server = %p.peer.address, "registration acknowledged");
        }
        p.acknowledged = Some(now);
        io.events.push_back(Event::RegistrationAcknowledged { map_server: p.peer.address });
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

    /// A Map-Request sent straight to us (an RLOC probe, or a direct query).
    pub fn handle_direct_request(
        &mut self,
        _now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        data: &[u8],
        io: &mut Io,
    ) {
        match MapRequest::parse(data) {
            Ok(req) => {
                io.stats.received("Map-Request");
                self.answer(local, remote.ip(), remote.port(), &req, io);
            }
            Err(_) => io.stats.drop(Drop::Malformed),
        }
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
            echo_nonce_capable: false,
            security: false,
            nonce: req.nonce,
            records,
            auth: None,
        };
        io.send("Map-Reply", Some(local.ip()), dst, reply.to_bytes());
    }
}
