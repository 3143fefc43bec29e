//! Map-Resolver (RFC 9301 §8.4): takes Encapsulated Map-Requests from ITRs and gets them
//! answered: by the co-located Map-Server in process, by forwarding to the Map-Server that
//! serves the EID, or with a Negative Map-Reply when no Map-Server does.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use loci_wire::ecm::Ecm;
use loci_wire::map_reply::MapReply;
use loci_wire::map_request::MapRequest;
use loci_wire::Wire;
use rand::rngs::StdRng;

use crate::config::{Limits, MapResolverConfig, MapServerPeer};
use crate::map_server::{negative_record, MapServer};
use crate::mapping::{eid_from_wire, reply_destination};
use crate::negative;
use crate::node::{Io, CONTROL_PORT};
use crate::prefix_table::PrefixTable;
use crate::ratelimit::KeyedLimiter;
use crate::stats::Drop;

pub struct MapResolver {
    /// Prefix -> index into `peers`.
    served: PrefixTable<usize>,
    peers: Vec<MapServerPeer>,
    request_limiter: KeyedLimiter<IpAddr>,
    /// Always empty: stands in for "registered" when computing negative prefixes.
    none: PrefixTable<usize>,
}

impl MapResolver {
    pub fn new(config: MapResolverConfig, limits: &Limits) -> Self {
        let mut served = PrefixTable::new();
        for (i, p) in config.map_servers.iter().enumerate() {
            for prefix in &p.eid_prefixes {
                served.insert(*prefix, i);
            }
        }
        MapResolver {
            served,
            peers: config.map_servers,
            request_limiter: KeyedLimiter::per_second(limits.map_requests_per_source, limits.max_rate_limited_sources),
            none: PrefixTable::new(),
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub fn handle_ecm(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        ecm: Ecm,
        ms: Option<&mut MapServer>,
        _rng: &mut StdRng,
        io: &mut Io,
    ) {
        if !self.request_limiter.check(now, &remote.ip()) {
            io.stats.drop(Drop::RateLimited);
            return;
        }
        let req = match MapRequest::parse(&ecm.payload) {
            Ok(r) => r,
            Err(_) => {
                io.stats.drop(Drop::Malformed);
                return;
            }
        };
        let Some(eid) = req.records.first().and_then(|r| eid_from_wire(&r.eid, r.eid_mask_len)) else {
            io.stats.drop(Drop::Malformed);
            return;
        };
        if let Some(ms) = ms {
            // Co-located: the Map-Server answers, forwards or replies negatively itself.
            ms.handle_resolved_ecm(now, local, &ecm, io);
            return;
        }
        io.stats.received("Map-Request");
        if let Some((_, &peer)) = self.served.longest_match(eid.iid, eid.net.network()) {
            let dst = SocketAddr::new(self.peers[peer].address, CONTROL_PORT);
            io.stats.forwarded_requests += 1;
            io.send("Encapsulated-Control-Message", Some(local.ip()), dst, ecm.to_bytes());
            return;
        }
        // No Map-Server serves it: it is not a LISP EID (RFC 9301 §8.4).
        let Some(dst) = reply_destination(&req, ecm.inner_ip.src, ecm.src_port) else {
            io.stats.drop(Drop::Malformed);
            return;
        };
        let neg = negative::compute(&self.served, &self.none, eid.iid, eid.net.network());
        io.stats.negative_replies += 1;
        let reply = MapReply {
            probe: false,
            echo_nonce_capable: false,
            security: false,
            nonce: req.nonce,
            records: vec![negative_record(&neg)],
            auth: None,
        };
        io.send("Map-Reply", Some(local.ip()), dst, reply.to_bytes());
    }
}
