//! Host mobility state of an xTR (DESIGN §5): dynamic EIDs detected on site interfaces, with
//! their idle and probe timers, and away entries for hosts that moved to another xTR.
//!
//! This module keeps the state and its bounds; the ETR ([`crate::etr`]) turns changes into
//! Map-Registers, Map-Notifies and SMRs, and the node into events for the data plane.
//!
//! * A host becomes a dynamic EID when the data plane reports it (`Node::handle_host_seen`)
//!   inside a configured range on that range's interface. Each range holds at most `max_hosts`
//!   hosts: a flood of packets from random sources fills it and is then counted, not stored.
//! * A host silent for `idle_timeout` is probed `probe_count` times, `probe_interval` apart (the
//!   data plane sends ARP/ND; any packet from the host counts as an answer). Unanswered, it is
//!   removed and its registration withdrawn.
//! * An away entry maps a host that left to its new RLOC set for `away_time`. It is a second
//!   [`MapCache`], so the data plane reads it the way it reads the ITR's map-cache: lock-free
//!   snapshots and the same `forward` verdict.
//!
//! What the data plane does (the daemon's side of the contract):
//!
//! * On an ARP, ND or IP packet from a local host on a site interface, call
//!   `Node::handle_host_seen(now, iid, host, interface)`. In extended-subnet mode only frames
//!   addressed to the gateway MAC count (the LAN extension does not carry that MAC, so frames
//!   flooded across it never make both sites claim a host). New sources at once; known hosts
//!   need no more than a call per second or so (it only restarts their timers).
//! * `Event::HostDetected`: install the host route (/32, /128) towards the interface; in
//!   across-subnet mode also answer ARP/ND for the range's gateway and proxy it for the home
//!   subnet. `Event::HostRemoved`: remove the route. `Event::ProbeHost`: send an ARP request or
//!   Neighbor Solicitation to the host.
//! * ETR workers look the inner destination of every decapsulated packet up in
//!   `Node::away_reader()`: a hit means re-encapsulate to the RLOC it gives, and report the
//!   packet with `Node::handle_away_packet(now, iid, eid, outer_source)` (the core rate limits
//!   the SMRs; the worker may report only the first packet per flow and second).
//! * Persist `Etr::last_nonce()` after Map-Notifies too: accepting a move moves it forward.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::IpAddr;
use std::time::Instant;

use loci_wire::Action;

use crate::config::{DynamicEidRange, MobilityConfig, MobilityMode};
use crate::eid::EidPrefix;
use crate::locator::Rloc;
use crate::map_cache::{CacheEvent, MapCache, MapCacheConfig, MapCacheReader, Mapping};
use crate::prefix_table::PrefixTable;
use crate::ratelimit::KeyedLimiter;

/// Most xTRs of the site whose map-notify-group nonces are remembered.
const MAX_GROUP_PEERS: usize = 256;
/// Most (ITR, EID) pairs the SMR rate limit tracks.
const MAX_SMR_KEYS: usize = 100_000;

/// Where a dynamic EID is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostState {
    /// Seen within `idle_timeout`.
    Active,
    /// Gone quiet: this many probes sent so far.
    Probing(u32),
}

impl HostState {
    pub fn name(self) -> &'static str {
        match self {
            HostState::Active => "active",
            HostState::Probing(_) => "probing",
        }
    }
}

/// One host this xTR serves as a dynamic EID.
#[derive(Debug, Clone)]
pub struct DynamicEid {
    /// The host prefix (/32 or /128) in its instance.
    pub prefix: EidPrefix,
    /// Index of its range in the configuration.
    pub range: usize,
    pub since: Instant,
    pub last_seen: Instant,
    pub state: HostState,
    /// Nonce of the first Map-Register that announced the host: a Map-Notify saying it moved
    /// must be newer (the Map-Server numbers those above the registrant's own nonces).
    pub registered_nonce: u64,
    /// When the timer of its current state fires.
    next: Instant,
}

/// A dynamic EID as `loci show dynamic-eids` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynamicEidView {
    pub prefix: EidPrefix,
    pub interface: String,
    pub mode: MobilityMode,
    pub since: Instant,
    pub last_seen: Instant,
    pub state: HostState,
}

/// An away entry as `loci show` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwayView {
    pub prefix: EidPrefix,
    pub rlocs: Vec<IpAddr>,
    pub since: Instant,
    pub expires: Instant,
}

/// What a report of a host packet did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// A new dynamic EID in range `range`.
    New { prefix: EidPrefix, range: usize },
    /// A known host: timers restarted.
    Refreshed,
    /// In no range configured on that interface.
    Outside,
    /// Its range is full.
    Full,
}

/// A timer outcome for the ETR to act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostTimer {
    /// Ask the data plane to probe the host (ARP/ND).
    Probe { prefix: EidPrefix, interface: String },
    /// The host did not answer: it was removed.
    Silent { prefix: EidPrefix, interface: String },
}

pub struct Mobility {
    config: MobilityConfig,
    /// Range prefix -> index into `config.ranges`.
    ranges: PrefixTable<usize>,
    /// Hosts per range.
    counts: Vec<usize>,
    hosts: HashMap<EidPrefix, DynamicEid>,
    /// (time, host): stale entries (the host was seen since, or removed) are skipped.
    timers: BinaryHeap<Reverse<(Instant, EidPrefix)>>,
    away: MapCache,
    /// Nonce of the Map-Notify behind each away entry (a retransmission carries the same one;
    /// an older one is a replay).
    away_nonces: HashMap<EidPrefix, u64>,
    smr_limiter: KeyedLimiter<(IpAddr, EidPrefix)>,
    /// Last accepted map-notify-group nonce per xTR-ID of the site.
    group_nonces: HashMap<u128, u64>,
}

impl Mobility {
    pub fn new(config: MobilityConfig) -> Self {
        let mut ranges = PrefixTable::new();
        for (i, r) in config.ranges.iter().enumerate() {
            ranges.insert(r.prefix, i);
        }
        let away = MapCache::new(MapCacheConfig {
            max_entries: config.max_away.max(1),
            max_ttl: config.away_time,
            ..MapCacheConfig::default()
        });
        let smr_limiter = KeyedLimiter::one_per(config.smr_interval, MAX_SMR_KEYS);
        Mobility {
            counts: vec![0; config.ranges.len()],
            config,
            ranges,
            hosts: HashMap::new(),
            timers: BinaryHeap::new(),
            away,
            away_nonces: HashMap::new(),
            smr_limiter,
            group_nonces: HashMap::new(),
        }
    }

    pub fn config(&self) -> &MobilityConfig {
        &self.config
    }

    pub fn range(&self, i: usize) -> &DynamicEidRange {
        &self.config.ranges[i]
    }

    pub fn is_enabled(&self) -> bool {
        !self.config.ranges.is_empty()
    }

    pub fn host(&self, prefix: &EidPrefix) -> Option<&DynamicEid> {
        self.hosts.get(prefix)
    }

    pub fn host_mut(&mut self, prefix: &EidPrefix) -> Option<&mut DynamicEid> {
        self.hosts.get_mut(prefix)
    }

    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// Every dynamic EID, in prefix order.
    pub fn views(&self) -> Vec<DynamicEidView> {
        let mut v: Vec<DynamicEidView> = self
            .hosts
            .values()
            .map(|h| {
                let r = &self.config.ranges[h.range];
                DynamicEidView {
                    prefix: h.prefix,
                    interface: r.interface.clone(),
                    mode: r.mode,
                    since: h.since,
                    last_seen: h.last_seen,
                    state: h.state,
                }
            })
            .collect();
        v.sort_by_key(|h| h.prefix);
        v
    }

    /// A packet (ARP, ND or IP) from local host `ip` arrived on `interface`.
    pub fn host_seen(&mut self, now: Instant, iid: u32, ip: IpAddr, interface: &str) -> Seen {
        let prefix = EidPrefix::host(iid, ip);
        if let Some(h) = self.hosts.get_mut(&prefix) {
            if self.config.ranges[h.range].interface == interface {
                h.last_seen = now;
                if h.state != HostState::Active {
                    h.state = HostState::Active;
                    h.next = now + self.config.idle_timeout;
                    self.timers.push(Reverse((h.next, prefix)));
                }
                // An active host's timer is moved lazily: when it fires, it looks at last_seen.
                return Seen::Refreshed;
            }
        }
        // The most specific range on this interface that holds the address.
        let Some(range) = self
            .ranges
            .covering(&prefix)
            .filter(|(_, &i)| self.config.ranges[i].interface == interface)
            .last()
            .map(|(_, &i)| i)
        else {
            return Seen::Outside;
        };
        if self.hosts.contains_key(&prefix) {
            // Known on another interface of ours: that range keeps it.
            return Seen::Outside;
        }
        if self.counts[range] >= self.config.ranges[range].max_hosts {
            return Seen::Full;
        }
        self.counts[range] += 1;
        let next = now + self.config.idle_timeout;
        let host = DynamicEid {
            prefix,
            range,
            since: now,
            last_seen: now,
            state: HostState::Active,
            registered_nonce: 0,
            next,
        };
        self.hosts.insert(prefix, host);
        self.timers.push(Reverse((next, prefix)));
        Seen::New { prefix, range }
    }

    /// Removes a dynamic EID (moved away, or silent).
    pub fn remove_host(&mut self, prefix: &EidPrefix) -> Option<DynamicEid> {
        let h = self.hosts.remove(prefix)?;
        self.counts[h.range] -= 1;
        Some(h)
    }

    /// The interface a dynamic EID was seen on.
    pub fn interface(&self, h: &DynamicEid) -> &str {
        &self.config.ranges[h.range].interface
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let hosts = self.timers.peek().map(|Reverse((t, _))| *t);
        [hosts, self.away.poll_timeout()].into_iter().flatten().min()
    }

    /// Runs the host and away-entry timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant, out: &mut Vec<HostTimer>) {
        while let Some(&Reverse((t, prefix))) = self.timers.peek() {
            if t > now {
                break;
            }
            self.timers.pop();
            let Some(h) = self.hosts.get_mut(&prefix).filter(|h| h.next == t) else { continue };
            let interface = self.config.ranges[h.range].interface.clone();
            let idle_end = h.last_seen + self.config.idle_timeout;
            match h.state {
                HostState::Active if idle_end > now => h.next = idle_end,
                HostState::Active | HostState::Probing(_) => {
                    let sent = match h.state {
                        HostState::Probing(n) => n,
                        HostState::Active => 0,
                    };
                    if sent >= self.config.probe_count {
                        self.remove_host(&prefix);
                        out.push(HostTimer::Silent { prefix, interface });
                        continue;
                    }
                    h.state = HostState::Probing(sent + 1);
                    h.next = now + self.config.probe_interval;
                    out.push(HostTimer::Probe { prefix, interface });
                }
            }
            self.timers.push(Reverse((h.next, prefix)));
        }
        let mut events = Vec::new();
        self.away.handle_timeout(now, &mut events);
        for ev in events {
            if let CacheEvent::Expired(p) = ev {
                self.away_nonces.remove(&p);
                tracing::debug!(prefix = %p, "away entry expired");
            }
        }
        self.away.publish();
    }

    /// Records that `prefix` moved to `rlocs`, as a Map-Notify with `nonce` said.
    pub fn add_away(&mut self, now: Instant, prefix: EidPrefix, rlocs: Vec<Rloc>, nonce: u64) {
        let m = Mapping::new(prefix, rlocs, Action::NO_ACTION, self.config.away_time, now);
        if let Some(evicted) = self.away.insert(m, prefix.net.network()) {
            self.away_nonces.remove(&evicted);
        }
        self.away_nonces.insert(prefix, nonce);
        self.away.publish();
    }

    /// The nonce of the Map-Notify behind the away entry of `prefix`, if there is one.
    pub fn away_nonce(&self, prefix: &EidPrefix) -> Option<u64> {
        self.away.get(prefix).and(self.away_nonces.get(prefix).copied())
    }

    pub fn remove_away(&mut self, prefix: &EidPrefix) {
        if self.away.remove(prefix).is_some() {
            self.away_nonces.remove(prefix);
            self.away.publish();
        }
    }

    /// The data plane's handle on the away entries (same snapshots as the map-cache's).
    pub fn away_reader(&self) -> MapCacheReader {
        self.away.reader()
    }

    /// The away entry covering `eid`, if any.
    pub fn away(&self, iid: u32, eid: IpAddr) -> Option<AwayView> {
        let (prefix, m) = self.away.lookup(iid, eid)?;
        Some(AwayView {
            prefix,
            rlocs: m.rlocs.iter().map(|r| r.addr).collect(),
            since: m.installed,
            expires: m.expires,
        })
    }

    /// Every away entry.
    pub fn away_entries(&self) -> Vec<AwayView> {
        self.away
            .iter()
            .map(|m| AwayView {
                prefix: m.prefix,
                rlocs: m.rlocs.iter().map(|r| r.addr).collect(),
                since: m.installed,
                expires: m.expires,
            })
            .collect()
    }

    /// Whether an SMR to `itr` about `prefix` may go now (and counts it when it may).
    pub fn smr_allowed(&mut self, now: Instant, itr: IpAddr, prefix: EidPrefix) -> bool {
        self.smr_limiter.check(now, &(itr, prefix))
    }

    /// Accepts `nonce` from site xTR `xtr_id` when it is newer than the last one; false for a
    /// replay or when the table of peers is full.
    pub fn group_nonce(&mut self, xtr_id: u128, nonce: u64) -> bool {
        let full = self.group_nonces.len() >= MAX_GROUP_PEERS;
        match self.group_nonces.get_mut(&xtr_id) {
            Some(n) if nonce <= *n => false,
            Some(n) => {
                *n = nonce;
                true
            }
            None if full => false,
            None => {
                self.group_nonces.insert(xtr_id, nonce);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn config(max_hosts: usize) -> MobilityConfig {
        MobilityConfig {
            ranges: vec![DynamicEidRange {
                prefix: "10.1.9.0/24".parse().unwrap(),
                interface: "site0".into(),
                mode: MobilityMode::AcrossSubnet,
                map_notify_group: Vec::new(),
                gateway: None,
                locators: Vec::new(),
                max_hosts,
            }],
            idle_timeout: Duration::from_secs(60),
            probe_interval: Duration::from_secs(2),
            probe_count: 3,
            ..MobilityConfig::default()
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ranges_interfaces_and_bounds() {
        let t0 = Instant::now();
        let mut m = Mobility::new(config(2));
        assert!(matches!(m.host_seen(t0, 0, ip("10.1.9.5"), "site0"), Seen::New { .. }));
        assert_eq!(m.host_seen(t0, 0, ip("10.1.9.5"), "site0"), Seen::Refreshed);
        assert_eq!(m.host_seen(t0, 0, ip("10.1.8.5"), "site0"), Seen::Outside);
        assert_eq!(m.host_seen(t0, 0, ip("10.1.9.6"), "other0"), Seen::Outside);
        assert_eq!(m.host_seen(t0, 7, ip("10.1.9.6"), "site0"), Seen::Outside, "another instance");
        assert!(matches!(m.host_seen(t0, 0, ip("10.1.9.6"), "site0"), Seen::New { .. }));
        assert_eq!(m.host_seen(t0, 0, ip("10.1.9.7"), "site0"), Seen::Full);
        m.remove_host(&"10.1.9.5/32".parse().unwrap());
        assert!(matches!(m.host_seen(t0, 0, ip("10.1.9.7"), "site0"), Seen::New { .. }));
    }

    #[test]
    fn idle_host_is_probed_then_removed_unless_it_answers() {
        let t0 = Instant::now();
        let mut m = Mobility::new(config(10));
        m.host_seen(t0, 0, ip("10.1.9.5"), "site0");
        m.host_seen(t0, 0, ip("10.1.9.6"), "site0");
        let mut out = Vec::new();
        let run = |m: &mut Mobility, until: Instant, out: &mut Vec<HostTimer>| {
            while let Some(t) = m.poll_timeout().filter(|&t| t <= until) {
                m.handle_timeout(t, out);
            }
        };
        // .5 keeps talking at 50 s; both are quiet afterwards.
        run(&mut m, t0 + Duration::from_secs(50), &mut out);
        m.host_seen(t0 + Duration::from_secs(50), 0, ip("10.1.9.5"), "site0");
        run(&mut m, t0 + Duration::from_secs(61), &mut out);
        let probes = |out: &[HostTimer]| out.iter().filter(|t| matches!(t, HostTimer::Probe { .. })).count();
        assert_eq!(probes(&out), 1, "{out:?}");
        assert_eq!(m.host(&"10.1.9.6/32".parse().unwrap()).unwrap().state, HostState::Probing(1));
        // .6 answers the first probe: active again, no more probes for a while.
        m.host_seen(t0 + Duration::from_secs(62), 0, ip("10.1.9.6"), "site0");
        run(&mut m, t0 + Duration::from_secs(100), &mut out);
        assert_eq!(probes(&out), 1);
        // Then nobody answers: 3 probes each, 2 s apart, and both go.
        run(&mut m, t0 + Duration::from_secs(200), &mut out);
        assert_eq!(probes(&out), 7);
        assert_eq!(out.iter().filter(|t| matches!(t, HostTimer::Silent { .. })).count(), 2);
        assert!(m.is_empty());
        let silent_at = |m: &Mobility| m.poll_timeout();
        assert_eq!(silent_at(&m), None);
    }

    #[test]
    fn away_entries_expire_and_group_nonces_only_grow() {
        let t0 = Instant::now();
        let mut m = Mobility::new(config(10));
        let p: EidPrefix = "10.1.9.5/32".parse().unwrap();
        m.add_away(t0, p, vec![Rloc::new(ip("192.0.2.2"), 1, 1, true)], 9);
        assert_eq!(m.away_nonce(&p), Some(9));
        assert_eq!(m.away(0, ip("10.1.9.5")).unwrap().rlocs, [ip("192.0.2.2")]);
        assert!(m.away_reader().load().lookup(0, ip("10.1.9.5")).is_some());
        let mut out = Vec::new();
        m.handle_timeout(t0 + Duration::from_secs(301), &mut out);
        assert!(m.away(0, ip("10.1.9.5")).is_none());
        assert_eq!(m.away_nonce(&p), None);
        assert!(m.group_nonce(1, 5));
        assert!(!m.group_nonce(1, 5));
        assert!(m.group_nonce(1, 6));
    }
}
