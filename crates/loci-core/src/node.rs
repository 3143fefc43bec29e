//! One LISP node: the roles its configuration enables, driven sans-IO.
//!
//! The daemon feeds it datagrams and time and sends what it emits; the simulator does the same
//! on virtual time; tests call it by hand. Nothing here touches a socket or a clock.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use loci_wire::ecm::Ecm;
use loci_wire::message::{message_type, peek_type};
use loci_wire::{Notes, Wire};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

use crate::config::{MobilityMode, NodeConfig};
use crate::eid::EidPrefix;
use crate::etr::{Etr, NotifyVerdict};
use crate::itr::Itr;
use crate::map_resolver::MapResolver;
use crate::map_server::MapServer;
use crate::mobility::{AwayView, DynamicEidView};
use crate::stats::{Drop, Stats};

/// The LISP control port (RFC 9301 §5).
pub const CONTROL_PORT: u16 = 4342;

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Source address to send from, when it matters (replies go out from the address the
    /// request came to); `None` lets the host choose.
    pub src: Option<IpAddr>,
    pub dst: SocketAddr,
    pub data: Vec<u8>,
}

/// Something that changed, for logs, the API and other components.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A registration was added or its RLOC set changed.
    Registered { site: String, prefix: EidPrefix, by: IpAddr },
    /// A registration expired or was withdrawn.
    Unregistered { site: String, prefix: EidPrefix },
    /// The Map-Server acknowledged this ETR's registration.
    RegistrationAcknowledged { map_server: SocketAddr },
    /// Replay-protection nonces changed and should be persisted (batched by the caller).
    NoncesChanged,
    /// RLOC probing found a locator dead: the map-cache no longer chooses it.
    LocatorDown { rloc: IpAddr },
    /// A locator found dead answers probes again.
    LocatorUp { rloc: IpAddr },
    /// A local host became a dynamic EID: route it towards `interface` (in across-subnet mode,
    /// also answer ARP/ND for its gateway and home-subnet neighbours there).
    HostDetected { prefix: EidPrefix, interface: String, mode: MobilityMode },
    /// A dynamic EID is no longer here: remove its host route.
    HostRemoved { prefix: EidPrefix, interface: String, reason: HostRemoval },
    /// A dynamic EID has gone quiet: send it an ARP request or a Neighbor Solicitation on
    /// `interface`; any packet from it calls `Node::handle_host_seen` again.
    ProbeHost { prefix: EidPrefix, interface: String },
}

/// Why a dynamic EID left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostRemoval {
    /// Another xTR registered it (or announced it on the map-notify-group): its packets go to
    /// these RLOCs now (the away entry).
    Moved { to: Vec<IpAddr> },
    /// It did not answer the probes.
    Silent,
}

/// Where role handlers put what they produce.
#[derive(Debug, Default)]
pub struct Io {
    pub transmits: VecDeque<Transmit>,
    pub events: VecDeque<Event>,
    pub stats: Stats,
    /// When each (site, reason) was last logged, and how many drops went unlogged since.
    log_gate: HashMap<(String, Drop), (Instant, u64)>,
}

/// A refusal is logged at most once per this interval per site and reason (strangers must not
/// be able to flood the log); the count of the others goes with the next line.
const LOG_INTERVAL: Duration = Duration::from_secs(10);

impl Io {
    /// Queues `msg` for `dst` and counts it under `name`.
    pub fn send(&mut self, name: &'static str, src: Option<IpAddr>, dst: SocketAddr, data: Vec<u8>) {
        self.stats.sent(name);
        self.transmits.push_back(Transmit { src, dst, data });
    }

    /// Counts a refused message against `site` (when known) and logs it, rate limited.
    pub fn refuse(&mut self, now: Instant, site: Option<&str>, reason: Drop, remote: SocketAddr, detail: &str) {
        match site {
            Some(s) => self.stats.site_drop(s, reason),
            None => self.stats.drop(reason),
        }
        let key = (site.unwrap_or("").to_string(), reason);
        let suppressed = match self.log_gate.get_mut(&key) {
            Some(gate) if now.saturating_duration_since(gate.0) < LOG_INTERVAL => {
                gate.1 += 1;
                return;
            }
            Some(gate) => std::mem::replace(gate, (now, 0)).1,
            None => {
                self.log_gate.insert(key, (now, 0));
                0
            }
        };
        tracing::warn!(site = site.unwrap_or("-"), reason = reason.name(), %remote, suppressed, "{detail}");
    }

    /// Counts the tolerated oddities a decoder noted.
    pub fn note(&mut self, notes: &Notes) {
        if !notes.is_clean() {
            self.stats.tolerated += 1;
        }
    }
}

/// Whether a Map-Request has the S bit (a Solicit-Map-Request, RFC 9301 §6.1).
fn is_smr(data: &[u8]) -> bool {
    data.first().is_some_and(|b| b & 0x01 != 0)
}

/// A node and its enabled roles.
pub struct Node {
    pub name: String,
    ms: Option<MapServer>,
    mr: Option<MapResolver>,
    etr: Option<Etr>,
    itr: Option<Itr>,
    rng: StdRng,
    io: Io,
}

impl Node {
    /// Builds a node; `seed` makes its nonces reproducible (the daemon passes a random seed).
    pub fn new(config: NodeConfig, seed: u64, now: Instant) -> Self {
        let limits = config.limits.clone();
        let mut ms = config.map_server.map(|c| MapServer::new(c, &limits));
        if let (Some(ms), Some(etr)) = (&mut ms, &config.etr) {
            ms.set_local_etr(etr.xtr_id, etr.site_id);
        }
        Node {
            name: config.name,
            ms,
            mr: config.map_resolver.map(|c| MapResolver::new(c, &limits)),
            etr: config.etr.map(|c| Etr::new(c, &limits, now)),
            itr: config.itr.map(|c| Itr::new(c, now)),
            rng: StdRng::seed_from_u64(seed),
            io: Io::default(),
        }
    }

    /// Handles one UDP datagram that arrived on `local` from `remote`.
    pub fn handle_datagram(&mut self, now: Instant, local: SocketAddr, remote: SocketAddr, data: &[u8]) {
        let io = &mut self.io;
        let Ok(kind) = peek_type(data) else {
            io.stats.drop(Drop::Malformed);
            return;
        };
        match kind {
            message_type::MAP_REGISTER => match &mut self.ms {
                Some(ms) => ms.handle_register(now, local, remote, data, io),
                None => io.stats.drop(Drop::Unexpected),
            },
            message_type::MAP_NOTIFY_ACK => match &mut self.ms {
                Some(ms) => ms.handle_notify_ack(now, remote, data, io),
                None => io.stats.drop(Drop::Unexpected),
            },
            message_type::MAP_REPLY => match &mut self.itr {
                Some(itr) => itr.handle_map_reply(now, remote, data, io),
                None => io.stats.drop(Drop::Unexpected),
            },
            message_type::MAP_NOTIFY => {
                io.stats.received("Map-Notify");
                // Publications and confirmations the ITR recognises by nonce go to it; the
                // ETR takes acknowledgements, moves and site announcements; what neither
                // recognises goes to the ITR, which counts it.
                let for_itr = self.itr.as_ref().is_some_and(|i| i.expects_notify(data));
                let verdict = match &mut self.etr {
                    Some(etr) if !for_itr => etr.handle_notify(now, remote, data, io),
                    _ => NotifyVerdict::NotMine,
                };
                match (verdict, &mut self.itr) {
                    (NotifyVerdict::Handled, _) => {}
                    (NotifyVerdict::NotMine, Some(itr)) => itr.handle_notify(now, remote, data, io),
                    (NotifyVerdict::NotMine, None) => {
                        io.stats.mobility.forged_notifies += 1;
                        io.refuse(now, None, Drop::Unexpected, remote, "Map-Notify matches nothing we expect");
                    }
                }
            }
            message_type::ECM => {
                let (ecm, notes) = match Ecm::parse_noting(data) {
                    Ok(v) => v,
                    Err(_) => {
                        io.stats.drop(Drop::Malformed);
                        return;
                    }
                };
                io.note(&notes);
                io.stats.received("Encapsulated-Control-Message");
                // A Map-Resolver takes requests from ITRs; a Map-Server without one takes them
                // from Map-Resolvers; an ETR takes them from its Map-Server.
                if let Some(mr) = &mut self.mr {
                    mr.handle_ecm(now, local, remote, ecm, self.ms.as_mut(), &mut self.rng, io);
                } else if let Some(ms) = &mut self.ms {
                    ms.handle_ecm(now, local, remote, &ecm, io);
                } else if let Some(etr) = &mut self.etr {
                    etr.handle_ecm(now, local, &ecm, io);
                } else {
                    io.stats.drop(Drop::Unexpected);
                }
            }
            message_type::MAP_REQUEST if is_smr(data) => match &mut self.itr {
                Some(itr) => itr.handle_smr(now, remote, data, &mut self.rng, io),
                None => {
                    io.stats.received("Map-Request");
                    io.stats.mobility.smrs_ignored += 1;
                    io.stats.drop(Drop::Unexpected);
                }
            },
            message_type::MAP_REQUEST => {
                // RLOC probes are for the ETR, also on a node that is a Map-Server too.
                let probe = loci_wire::map_request::MapRequestPacket::new_checked(data).is_ok_and(|p| p.probe());
                if let Some(etr) = self.etr.as_mut().filter(|_| probe) {
                    etr.handle_direct_request(now, local, remote, data, io);
                } else if let Some(ms) = &mut self.ms {
                    ms.handle_direct_request(now, local, remote, data, io);
                } else if let Some(etr) = &mut self.etr {
                    etr.handle_direct_request(now, local, remote, data, io);
                } else {
                    io.stats.drop(Drop::Unexpected);
                }
            }
            _ => io.stats.drop(Drop::Unexpected),
        }
    }

    /// The data plane found no usable mapping for `dst` in instance `iid` (ITR role).
    pub fn handle_miss(&mut self, now: Instant, iid: u32, dst: IpAddr, src: IpAddr) {
        match &mut self.itr {
            Some(itr) => itr.handle_miss(now, iid, dst, src, &mut self.rng, &mut self.io),
            None => self.io.stats.drop(Drop::Unexpected),
        }
    }

    /// The data plane saw a packet (ARP, ND or IP) from local host `host` on site interface
    /// `interface`: in a dynamic-EID range there, the host becomes (or stays) a dynamic EID of
    /// this xTR. Call it for every new source and at least once per probe interval for known
    /// ones (calls for known hosts only restart their timers).
    pub fn handle_host_seen(&mut self, now: Instant, iid: u32, host: IpAddr, interface: &str) {
        match &mut self.etr {
            Some(etr) => etr.handle_host_seen(now, iid, host, interface, &mut self.io),
            None => self.io.stats.mobility.hosts_outside_ranges += 1,
        }
    }

    /// The data plane re-encapsulated a packet from ITR `itr_rloc` (the outer source) for
    /// `eid`, found in the away entries ([`Etr::away_reader`]): the ITR gets a
    /// Solicit-Map-Request, rate limited per (ITR, EID).
    pub fn handle_away_packet(&mut self, now: Instant, iid: u32, eid: IpAddr, itr_rloc: IpAddr) {
        if let Some(etr) = &mut self.etr {
            etr.handle_away_packet(now, iid, eid, itr_rloc, &mut self.rng, &mut self.io);
        }
    }

    /// The dynamic EIDs of this xTR (`loci show dynamic-eids`).
    pub fn dynamic_eids(&self) -> Vec<DynamicEidView> {
        self.etr.as_ref().map(Etr::dynamic_eids).unwrap_or_default()
    }

    /// The data plane's handle on the away entries (ETR role): see [`Etr::away_reader`].
    pub fn away_reader(&self) -> Option<crate::map_cache::MapCacheReader> {
        self.etr.as_ref().map(Etr::away_reader)
    }

    /// Hosts that moved away, with their new RLOCs.
    pub fn away_entries(&self) -> Vec<AwayView> {
        self.etr.as_ref().map(Etr::away_entries).unwrap_or_default()
    }

    /// Locator-status bits the data plane saw on a decapsulated packet (ITR role; see
    /// [`crate::probing::status_bits_change`]).
    pub fn handle_status_bits(&mut self, now: Instant, change: &crate::probing::StatusBits) {
        if let Some(itr) = &mut self.itr {
            itr.handle_status_bits(now, change);
        }
    }

    /// A hint from the data plane or the underlay that locator `rloc` is unreachable (ITR
    /// role with probing; see [`crate::probing::Prober::handle_unreachable`]). Returns whether
    /// the locator went down.
    pub fn handle_rloc_unreachable(&mut self, now: Instant, rloc: IpAddr, reason: crate::probing::Unreachable) -> bool {
        match &mut self.itr {
            Some(itr) => itr.handle_rloc_unreachable(now, rloc, reason, &mut self.io),
            None => false,
        }
    }

    /// Runs every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(ms) = &mut self.ms {
            ms.handle_timeout(now, &mut self.io);
        }
        if let Some(etr) = &mut self.etr {
            etr.handle_timeout(now, &mut self.rng, &mut self.io);
        }
        if let Some(itr) = &mut self.itr {
            itr.handle_timeout(now, &mut self.rng, &mut self.io);
        }
    }

    /// When `handle_timeout` should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let ms = self.ms.as_ref().and_then(|m| m.poll_timeout());
        let etr = self.etr.as_ref().and_then(|e| e.poll_timeout());
        let itr = self.itr.as_ref().and_then(|i| i.poll_timeout());
        [ms, etr, itr].into_iter().flatten().min()
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.io.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.io.events.pop_front()
    }

    pub fn stats(&self) -> &Stats {
        &self.io.stats
    }

    pub fn map_server(&self) -> Option<&MapServer> {
        self.ms.as_ref()
    }

    pub fn map_server_mut(&mut self) -> Option<&mut MapServer> {
        self.ms.as_mut()
    }

    pub fn etr(&self) -> Option<&Etr> {
        self.etr.as_ref()
    }

    pub fn itr(&self) -> Option<&Itr> {
        self.itr.as_ref()
    }

    /// A fresh random 64-bit nonce.
    pub fn nonce(&mut self) -> u64 {
        self.rng.next_u64()
    }
}
