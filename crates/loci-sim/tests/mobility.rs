//! Host mobility on the simulator (DESIGN §5): a host moves between two xTRs of a site in
//! extended-subnet and across-subnet mode; the remote ITR follows by pub/sub or by SMR; silent
//! hosts are removed; forged or replayed Map-Notifies, SMRs from strangers and floods of host
//! packets redirect nothing and grow nothing without bound.
//!
//! The data plane is emulated here: `host_seen` is what it reports on a host's ARP/ND/IP, and
//! `stream` plays a 1,000 packet/s flow from the remote ITR to the host, re-encapsulated and
//! reported by the old xTR while it holds an away entry.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use loci_core::config::{DynamicEidRange, MobilityConfig, MobilityMode, NodeConfig};
use loci_core::itr::ItrConfig;
use loci_core::locator::Families;
use loci_core::map_cache::Forward;
use loci_core::mapping::eid_to_wire;
use loci_core::mobility::HostState;
use loci_core::stats::Drop;
use loci_sim::scenario::{etr, ip, map_server, prefix, rloc, site};
use loci_sim::{Id, Sim};
use loci_wire::map_register::{MapRegister, XtrId};
use loci_wire::message::ControlMessage;
use loci_wire::{Action, MapRecord, Wire};

const KEY: &[u8] = b"dc-secret";
const MS: &str = "192.0.2.10";
const A: &str = "203.0.113.1";
const B: &str = "203.0.113.2";
const R: &str = "198.51.100.1";
const XTR_A: u128 = 0xa;
const XTR_B: u128 = 0xb;
const HOST: &str = "10.1.9.10";
/// A second range, IPv6 in instance 5.
const V6_RANGE: &str = "[5]2001:db8:9::/64";

struct World {
    sim: Sim,
    ms: Id,
    a: Id,
    b: Id,
    /// The remote ITR.
    r: Id,
}

#[derive(Clone, Copy)]
struct Options {
    mode: MobilityMode,
    /// The remote ITR subscribes (pub/sub).
    subscribe: bool,
    /// The remote ITR acts on SMRs.
    smr: bool,
    max_hosts: usize,
    /// A is an ITR too, subscribing like R.
    a_is_itr: bool,
}

impl Options {
    fn new(mode: MobilityMode) -> Self {
        Options { mode, subscribe: true, smr: true, max_hosts: 1000, a_is_itr: false }
    }
}

/// An ITR at `addr` using the Map-Resolver.
fn itr_config(addr: &str, xtr_id: u128, o: Options) -> ItrConfig {
    ItrConfig {
        map_resolvers: vec![SocketAddr::new(ip(MS), 4342)],
        rlocs: vec![ip(addr)],
        subscribe: o.subscribe,
        smr: o.smr,
        xtr_id,
        site_id: 7,
        pubsub_key: Some((1, KEY.to_vec())),
        ..Default::default()
    }
}

/// An xTR (ETR role) at `addr` with dynamic-EID range 10.1.9.0/24 on `site0` and the static
/// prefix `local`; in extended-subnet mode its map-notify-group is the other xTR.
fn xtr(name: &str, addr: &str, local: &str, xtr_id: u128, peer: &str, o: Options) -> NodeConfig {
    let mut cfg = etr(name, MS, KEY, vec![(local, vec![rloc(addr, 1, 100)])], xtr_id);
    let group = if o.mode == MobilityMode::ExtendedSubnet { vec![ip(peer)] } else { Vec::new() };
    let range = |p: &str| DynamicEidRange {
        prefix: prefix(p),
        interface: "site0".into(),
        mode: o.mode,
        map_notify_group: group.clone(),
        gateway: None,
        locators: vec![rloc(addr, 1, 100)],
        max_hosts: o.max_hosts,
    };
    let ranges = vec![range("10.1.9.0/24"), range(V6_RANGE)];
    cfg.etr.as_mut().unwrap().mobility = MobilityConfig { ranges, ..MobilityConfig::default() };
    cfg
}

/// MS/MR (site "dc": 10.1.0.0/16 and 10.2.0.0/16, pub/sub with the site key), xTRs A and B of
/// the site, and a remote ITR R.
fn world(seed: u64, o: Options) -> World {
    let mut sim = Sim::new(seed);
    let ms = sim.add_node(
        map_server("ms", vec![site("dc", KEY, &["10.1.0.0/16", "10.2.0.0/16", "[5]2001:db8::/32"])]),
        &[ip(MS)],
    );
    let mut a_cfg = xtr("a", A, "10.1.1.0/24", XTR_A, B, o);
    if o.a_is_itr {
        a_cfg.itr = Some(itr_config(A, XTR_A, o));
    }
    let a = sim.add_node(a_cfg, &[ip(A)]);
    let b = sim.add_node(xtr("b", B, "10.2.1.0/24", XTR_B, A, o), &[ip(B)]);
    let itr = NodeConfig { name: "r".into(), itr: Some(itr_config(R, 0x99, o)), ..Default::default() };
    let r = sim.add_node(itr, &[ip(R)]);
    sim.run_for(Duration::from_secs(2));
    World { sim, ms, a, b, r }
}

impl World {
    /// The data plane of `at` sees a packet from `host` on its site interface.
    fn seen(&mut self, at: Id, host: &str) {
        let now = self.sim.now();
        self.sim.node_mut(at).handle_host_seen(now, 0, ip(host), "site0");
    }

    /// Moves `host` to `to` (its first packet there) and waits for the remote ITR to follow
    /// without traffic (pub/sub). Returns the convergence time.
    fn converge_quietly(&mut self, to: Id, host: &str) -> Duration {
        let start = self.sim.elapsed();
        self.seen(to, host);
        let target = self.sim.addrs(to)[0];
        let r = self.r;
        let ok = self.sim.run_until(Duration::from_secs(1), |s| {
            let snap = s.node(r).itr().unwrap().reader().load_full();
            snap.forward(0, ip(host), 7, Families::ALL) == Forward::Encapsulate(target)
        });
        assert!(ok, "the remote ITR follows {host} to {target}");
        self.sim.elapsed() - start
    }
}

/// Where the remote ITR sends packets for `host` now.
fn rloc_at_r(w: &World, host: &str) -> Option<IpAddr> {
    let snap = w.sim.node(w.r).itr().unwrap().reader().load_full();
    match snap.forward(0, ip(host), 7, Families::ALL) {
        Forward::Encapsulate(a) => Some(a),
        _ => None,
    }
}

/// The remote ITR resolves `host` (a data-plane miss) and caches it at `expect`.
fn resolve(w: &mut World, host: &str, expect: &str) {
    let (now, r) = (w.sim.now(), w.r);
    w.sim.node_mut(r).handle_miss(now, 0, ip(host), ip("10.77.0.1"));
    let ok =
        w.sim.run_until(Duration::from_secs(1), |s| s.node(r).itr().unwrap().map_cache().lookup(0, ip(host)).is_some());
    assert!(ok, "{host} resolved");
    assert_eq!(rloc_at_r(w, host), Some(ip(expect)));
}

fn has_host(w: &World, at: Id, host: &str) -> bool {
    w.sim.node(at).dynamic_eids().iter().any(|h| h.prefix == prefix(&format!("{host}/32")))
}

/// The RLOC the Map-Server answers with for `host`.
fn registered_at(w: &World, host: &str) -> Option<IpAddr> {
    let reg = w.sim.node(w.ms).map_server().unwrap().registration(&prefix(&format!("{host}/32")))?.clone();
    reg.locators().first().and_then(|l| l.address.ip())
}

/// Plays the data plane for up to `limit`: every millisecond the remote ITR sends a packet to
/// each of `hosts`; one that reaches an xTR holding an away entry for it is re-encapsulated and
/// reported there (which solicits a Map-Request). Returns when every host is reached at `to`,
/// with the time that took.
fn stream(w: &mut World, hosts: &[&str], to: &str, limit: Duration) -> Option<Duration> {
    let start = w.sim.elapsed();
    while w.sim.elapsed() - start <= limit {
        let mut done = true;
        for h in hosts {
            let at = rloc_at_r(w, h);
            if at != Some(ip(to)) {
                done = false;
            }
            let Some(xtr) = [w.a, w.b].into_iter().find(|&x| Some(w.sim.addrs(x)[0]) == at) else { continue };
            let away = w.sim.node(xtr).etr().unwrap().away_reader().load_full();
            if away.lookup(0, ip(h)).is_some() {
                let now = w.sim.now();
                w.sim.node_mut(xtr).handle_away_packet(now, 0, ip(h), ip(R));
            }
        }
        if done {
            return Some(w.sim.elapsed() - start);
        }
        w.sim.run_for(Duration::from_millis(1));
    }
    None
}

/// Control messages in the trace from member `from` to member `to`.
fn messages(w: &World, from: Id, to: Id) -> Vec<ControlMessage> {
    w.sim
        .trace()
        .iter()
        .filter(|e| e.from == from && e.to == Some(to))
        .filter_map(|e| ControlMessage::parse(&e.data).ok())
        .collect()
}

#[test]
fn extended_subnet_move_and_back_with_pubsub() {
    let mut w = world(1, Options::new(MobilityMode::ExtendedSubnet));
    w.seen(w.a, HOST);
    w.sim.run_for(Duration::from_millis(10));
    assert!(has_host(&w, w.a, HOST));
    assert_eq!(registered_at(&w, HOST), Some(ip(A)), "registered at once, not at the next round");
    resolve(&mut w, HOST, A);
    assert_eq!(w.sim.node(w.r).itr().unwrap().subscriptions().len(), 1, "subscribed");

    let took = w.converge_quietly(w.b, HOST);
    assert!(took <= Duration::from_millis(10), "pub/sub convergence {took:?}");
    w.sim.run_for(Duration::from_millis(20));
    assert!(has_host(&w, w.b, HOST));
    assert!(!has_host(&w, w.a, HOST), "A withdrew the host");
    assert_eq!(registered_at(&w, HOST), Some(ip(B)));
    let away = w.sim.node(w.a).away_entries();
    assert_eq!((away.len(), away[0].rlocs.as_slice()), (1, [ip(B)].as_slice()));
    let (sa, sb, sm) = (w.sim.node(w.a).stats(), w.sim.node(w.b).stats(), w.sim.node(w.ms).stats());
    assert_eq!(sb.mobility.group_notifies_sent, 1);
    assert_eq!(sa.mobility.group_notifies_accepted, 1);
    assert_eq!(sa.mobility.moves_away, 1, "one move, though told twice (group and Map-Server)");
    assert_eq!((sm.mobility.moves, sm.mobility.move_notifies), (1, 1));
    // A acknowledged the Map-Server's Map-Notify and R its publication: nothing retransmitted.
    w.sim.run_for(Duration::from_secs(10));
    let sm = w.sim.node(w.ms).stats();
    assert_eq!(sm.mobility.notifies_acked, sm.mobility.notifies_pushed, "{:?}", sm.mobility);
    assert!(messages(&w, w.a, w.ms).iter().any(|m| matches!(m, ControlMessage::MapNotify(n) if n.ack)));

    // And back.
    let took = w.converge_quietly(w.a, HOST);
    assert!(took <= Duration::from_millis(10), "pub/sub convergence back {took:?}");
    w.sim.run_for(Duration::from_millis(20));
    assert!(has_host(&w, w.a, HOST) && !has_host(&w, w.b, HOST));
    assert!(w.sim.node(w.a).away_entries().is_empty(), "home again: no away entry");
    assert_eq!(w.sim.node(w.b).away_entries()[0].rlocs, [ip(A)]);
    // Minutes of refreshes later nothing has flapped.
    w.sim.run_for(Duration::from_secs(200));
    assert_eq!(registered_at(&w, HOST), Some(ip(A)));
    assert_eq!(rloc_at_r(&w, HOST), Some(ip(A)));
    assert_eq!(w.sim.node(w.ms).stats().mobility.moves, 2);
}

#[test]
fn across_subnet_move_and_back_with_smr_only() {
    let o = Options { subscribe: false, ..Options::new(MobilityMode::AcrossSubnet) };
    let mut w = world(2, o);
    w.seen(w.a, HOST);
    w.sim.run_for(Duration::from_millis(10));
    resolve(&mut w, HOST, A);
    assert!(w.sim.node(w.r).itr().unwrap().subscriptions().is_empty());

    w.seen(w.b, HOST);
    let took = stream(&mut w, &[HOST], B, Duration::from_millis(200)).expect("converged by SMR");
    assert!(took <= Duration::from_millis(50), "SMR convergence {took:?}");
    assert!(!has_host(&w, w.a, HOST) && has_host(&w, w.b, HOST));
    let (sa, sr) = (w.sim.node(w.a).stats().mobility.clone(), w.sim.node(w.r).stats().mobility.clone());
    assert_eq!(sa.group_notifies_sent + sa.group_notifies_accepted, 0, "no LAN extension, no group");
    assert!(sa.away_packets >= 1);
    assert_eq!(sa.smrs_sent, 1, "rate limited per (ITR, EID): {sa:?}");
    assert_eq!((sr.smrs_received, sr.smrs_accepted), (1, 1));
    // The SMR-invoked Map-Request went through the mapping system, with the s bit.
    let invoked = messages(&w, w.r, w.ms).into_iter().any(|m| match m {
        ControlMessage::Ecm(e) => loci_wire::map_request::MapRequest::parse(&e.payload).is_ok_and(|r| r.smr_invoked),
        _ => false,
    });
    assert!(invoked);

    // And back, after the SMR interval.
    w.sim.run_for(Duration::from_secs(5));
    w.seen(w.a, HOST);
    let took = stream(&mut w, &[HOST], A, Duration::from_millis(200)).expect("converged back by SMR");
    assert!(took <= Duration::from_millis(50), "SMR convergence back {took:?}");
    assert_eq!(w.sim.node(w.b).stats().mobility.smrs_sent, 1);
}

#[test]
fn pubsub_path_with_smr_off() {
    let o = Options { smr: false, ..Options::new(MobilityMode::AcrossSubnet) };
    let mut w = world(3, o);
    w.seen(w.a, HOST);
    w.sim.run_for(Duration::from_millis(10));
    resolve(&mut w, HOST, A);
    let took = w.converge_quietly(w.b, HOST);
    assert!(took <= Duration::from_millis(10), "{took:?}");
    // With traffic the old xTR still solicits, and R ignores it: pub/sub alone did the work.
    w.seen(w.a, HOST);
    w.sim.run_for(Duration::from_millis(50));
    assert_eq!(rloc_at_r(&w, HOST), Some(ip(A)));
    let sr = w.sim.node(w.r).stats();
    assert_eq!(sr.mobility.smrs_accepted, 0);
    assert_eq!(sr.mobility.publications_applied, 2);
}

/// 100 hosts detected at A and resolved by R.
fn hundred_hosts(w: &mut World) -> Vec<String> {
    let hosts: Vec<String> = (1..=100).map(|i| format!("10.1.9.{i}")).collect();
    for h in &hosts {
        w.seen(w.a, h);
    }
    w.sim.run_for(Duration::from_millis(10));
    for h in &hosts {
        resolve(w, h, A);
    }
    hosts
}

#[test]
fn a_hundred_hosts_move_at_once_by_smr() {
    let o = Options { subscribe: false, ..Options::new(MobilityMode::AcrossSubnet) };
    let mut w = world(11, o);
    let hosts = hundred_hosts(&mut w);
    let hosts: Vec<&str> = hosts.iter().map(String::as_str).collect();
    for h in &hosts {
        w.seen(w.b, h);
    }
    let took = stream(&mut w, &hosts, B, Duration::from_millis(500)).expect("all converged by SMR");
    assert!(took <= Duration::from_millis(50), "100 hosts converged by SMR in {took:?}");
    assert_eq!(w.sim.node(w.a).stats().mobility.smrs_sent, 100);
}

#[test]
fn a_hundred_hosts_move_at_once() {
    let mut w = world(4, Options::new(MobilityMode::ExtendedSubnet));
    let hosts = hundred_hosts(&mut w);
    let hosts: Vec<&str> = hosts.iter().map(String::as_str).collect();
    let start = w.sim.elapsed();
    for h in &hosts {
        w.seen(w.b, h);
    }
    let r = w.r;
    let all = w.sim.run_until(Duration::from_secs(1), |s| {
        let snap = s.node(r).itr().unwrap().reader().load_full();
        hosts.iter().all(|h| snap.forward(0, ip(h), 7, Families::ALL) == Forward::Encapsulate(ip(B)))
    });
    let took = w.sim.elapsed() - start;
    assert!(all && took <= Duration::from_millis(10), "100 hosts converged in {took:?}");
    w.sim.run_for(Duration::from_secs(70));
    assert!(w.sim.node(w.a).dynamic_eids().is_empty());
    assert_eq!(w.sim.node(w.b).dynamic_eids().len(), 100);
    assert!(hosts.iter().all(|h| registered_at(&w, h) == Some(ip(B))));
    assert_eq!(w.sim.node(w.ms).stats().mobility.moves, 100);
    // B's periodic registration of 100 hosts and its static prefix fits in datagrams.
    assert!(w.sim.trace().iter().all(|e| e.data.len() <= 1400), "no datagram over 1400 bytes");
}

#[test]
fn silent_host_is_removed_and_no_longer_registered() {
    let mut w = world(5, Options::new(MobilityMode::AcrossSubnet));
    w.seen(w.a, HOST);
    w.seen(w.a, "10.1.9.11");
    // .11 keeps talking every 30 s; HOST says nothing after its first packet.
    for _ in 0..11 {
        w.sim.run_for(Duration::from_secs(30));
        w.seen(w.a, "10.1.9.11");
    }
    let quiet_for = w.sim.elapsed();
    assert!(!has_host(&w, w.a, HOST), "removed after 300 s idle and 3 probes");
    assert!(has_host(&w, w.a, "10.1.9.11"));
    assert_eq!(w.sim.node(w.a).dynamic_eids()[0].state, HostState::Active);
    let s = w.sim.node(w.a).stats().mobility.clone();
    assert_eq!((s.probes, s.hosts_silent), (3, 1));
    assert_eq!(registered_at(&w, HOST), None, "withdrawn (T bit, TTL 0) at once");
    // Its registrations stopped: no Map-Register after the removal names it.
    w.sim.run_for(Duration::from_secs(300));
    assert_eq!(registered_at(&w, HOST), None);
    let host = prefix(&format!("{HOST}/32"));
    let late =
        w.sim.trace().iter().filter(|e| e.sent > quiet_for && e.from == w.a).filter_map(
            |e| match ControlMessage::parse(&e.data) {
                Ok(ControlMessage::MapRegister(r)) => Some(r),
                _ => None,
            },
        );
    let (wire, len) = eid_to_wire(&host);
    assert!(late.flat_map(|r| r.records).all(|rec| (rec.eid, rec.eid_mask_len) != (wire.clone(), len)));
    assert!(registered_at(&w, "10.1.9.11").is_some());
}

/// A signed Map-Notify from the Map-Server's address saying `host` moved to `to`.
fn notify(nonce: u64, host: &str, to: &str, key: &[u8]) -> Vec<u8> {
    let rec = loci_core::mapping::record(
        &prefix(&format!("{host}/32")),
        1440,
        Action::NO_ACTION,
        true,
        vec![rloc(to, 1, 100)],
    );
    let mut n = loci_wire::map_notify::MapNotify::new(nonce, vec![rec]);
    n.to_signed_bytes(1, key, &loci_wire::auth::SendPolicy::default()).unwrap()
}

#[test]
fn forged_and_replayed_notifies_are_ignored() {
    let mut w = world(6, Options::new(MobilityMode::ExtendedSubnet));
    let evil = w.sim.add_endpoint("evil", &[ip("192.0.2.66")]);
    w.seen(w.a, HOST);
    w.sim.run_for(Duration::from_millis(10));
    resolve(&mut w, HOST, A);
    let spoofed_ms = SocketAddr::new(ip(MS), 4342);
    let to = |x: &str| SocketAddr::new(ip(x), 4342);
    // Forged: the wrong key, from the Map-Server's address, to the xTR and to the ITR; and a
    // map-notify-group announcement with the wrong key.
    w.sim.send(evil, spoofed_ms, to(A), notify(u64::MAX - 1, HOST, "192.0.2.66", b"guess"));
    w.sim.send(evil, spoofed_ms, to(R), notify(u64::MAX - 1, HOST, "192.0.2.66", b"guess"));
    let mut group = loci_wire::map_notify::MapNotify::parse(&notify(u64::MAX, HOST, "192.0.2.66", b"guess")).unwrap();
    group.xtr_id = Some(XtrId { xtr_id: XTR_B, site_id: 1 });
    let bytes = group.to_signed_bytes(1, b"guess", &loci_wire::auth::SendPolicy::default()).unwrap();
    w.sim.send(evil, to(B), to(A), bytes);
    w.sim.run_for(Duration::from_millis(10));
    assert!(has_host(&w, w.a, HOST) && w.sim.node(w.a).away_entries().is_empty());
    assert_eq!(rloc_at_r(&w, HOST), Some(ip(A)));
    assert_eq!(w.sim.node(w.a).stats().mobility.forged_notifies, 2);
    assert_eq!(w.sim.node(w.r).stats().mobility.forged_notifies, 1);

    // A genuine move and back; then the Map-Server's move Map-Notify to A and its publication
    // to R, both captured, are replayed.
    w.converge_quietly(w.b, HOST);
    w.sim.run_for(Duration::from_secs(1));
    w.converge_quietly(w.a, HOST);
    w.sim.run_for(Duration::from_secs(1));
    // The last Map-Notify from the Map-Server to `to` that pointed at B.
    let captured = |w: &World, to: Id| {
        let points_at_b = |d: &[u8]| match ControlMessage::parse(d) {
            Ok(ControlMessage::MapNotify(n)) => {
                n.records[0].locators.first().and_then(|l| l.address.ip()) == Some(ip(B))
            }
            _ => false,
        };
        let trace = w.sim.trace().iter().rev();
        trace.filter(|e| e.from == w.ms && e.to == Some(to) && points_at_b(&e.data)).map(|e| e.data.clone()).next()
    };
    let (to_a, to_r) = (captured(&w, w.a).expect("captured"), captured(&w, w.r).expect("captured"));
    w.sim.send(evil, spoofed_ms, to(A), to_a);
    w.sim.send(evil, spoofed_ms, to(R), to_r);
    w.sim.run_for(Duration::from_millis(10));
    assert!(has_host(&w, w.a, HOST), "a replayed move Map-Notify moves nothing");
    assert_eq!(rloc_at_r(&w, HOST), Some(ip(A)), "a replayed publication redirects nothing");
    assert_eq!(w.sim.node(w.a).stats().mobility.replayed_notifies, 1);
    assert_eq!(w.sim.node(w.r).stats().mobility.replayed_notifies, 1);
}

#[test]
fn smr_from_anyone_only_causes_a_nonce_checked_map_request() {
    let o = Options { subscribe: false, ..Options::new(MobilityMode::AcrossSubnet) };
    let mut w = world(7, o);
    let evil = w.sim.add_endpoint("evil", &[ip("192.0.2.66")]);
    w.seen(w.a, HOST);
    w.sim.run_for(Duration::from_millis(10));
    resolve(&mut w, HOST, A);
    let smr = |eid: &str, nonce| {
        let mut req = loci_core::mapping::map_request(
            nonce,
            &prefix(&format!("{eid}/32")),
            vec![loci_wire::Address::from(ip("192.0.2.66"))],
        );
        req.smr = true;
        req.to_bytes()
    };
    let (from, r) = (SocketAddr::new(ip("192.0.2.66"), 4342), SocketAddr::new(ip(R), 4342));
    // Ten SMRs for the cached host, one for an EID R never asked about.
    for n in 0..10 {
        w.sim.send(evil, from, r, smr(HOST, n));
    }
    w.sim.send(evil, from, r, smr("10.1.9.99", 99));
    // And a Map-Reply claiming the host moved to the stranger, with a guessed nonce.
    let (eid, eid_mask_len) = eid_to_wire(&prefix(&format!("{HOST}/32")));
    let forged = loci_wire::map_reply::MapReply {
        probe: false,
        echo_nonce_capable: false,
        security: false,
        nonce: 5,
        records: vec![MapRecord {
            ttl: 1440,
            eid_mask_len,
            action: Action::NO_ACTION,
            authoritative: true,
            map_version: 0,
            eid,
            locators: vec![rloc("192.0.2.66", 1, 100)],
        }],
        auth: None,
    };
    w.sim.send(evil, from, r, forged.to_bytes());
    w.sim.run_for(Duration::from_secs(1));
    assert_eq!(rloc_at_r(&w, HOST), Some(ip(A)), "the answer came from the mapping system");
    let s = w.sim.node(w.r).stats();
    assert_eq!(
        (s.mobility.smrs_received, s.mobility.smrs_accepted, s.mobility.smrs_rate_limited, s.mobility.smrs_ignored),
        (11, 1, 9, 1)
    );
    assert_eq!(s.dropped(Drop::NoMatchingNonce), 1);
    // Exactly one SMR-invoked Map-Request, to the Map-Resolver; nothing went to the stranger.
    let to_ms = messages(&w, w.r, w.ms);
    let invoked = to_ms.iter().filter(|m| matches!(m, ControlMessage::Ecm(e) if loci_wire::map_request::MapRequest::parse(&e.payload).is_ok_and(|r| r.smr_invoked))).count();
    assert_eq!(invoked, 1);
    assert!(w.sim.received(evil).is_empty());
}

#[test]
fn host_seen_flood_is_bounded() {
    let o = Options { max_hosts: 64, ..Options::new(MobilityMode::AcrossSubnet) };
    let mut w = world(8, o);
    let now = w.sim.now();
    let mut x: u32 = 12345;
    for _ in 0..10_000 {
        // A cheap deterministic scramble of sources: half in the range, half anywhere.
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        let host = if x & 1 == 0 { IpAddr::from([10, 1, 9, (x >> 8) as u8]) } else { IpAddr::from(x.to_be_bytes()) };
        w.sim.node_mut(w.b).handle_host_seen(now, 0, host, "site0");
    }
    w.sim.run_for(Duration::from_secs(2));
    let s = w.sim.node(w.b).stats().mobility.clone();
    assert_eq!(w.sim.node(w.b).dynamic_eids().len(), 64);
    assert_eq!(s.hosts_detected, 64);
    assert!(s.hosts_refused > 0 && s.hosts_outside_ranges > 4000, "{s:?}");
    let registered = w.sim.node(w.ms).map_server().unwrap().registrations().len();
    assert!(registered <= 2 + 64, "{registered} registrations");
    // None of them answers probes: all withdrawn together, in Map-Registers that fit datagrams.
    w.sim.run_for(Duration::from_secs(400));
    assert!(w.sim.node(w.b).dynamic_eids().is_empty());
    assert_eq!(w.sim.node(w.b).stats().mobility.hosts_silent, 64);
    assert_eq!(w.sim.node(w.ms).map_server().unwrap().registrations().len(), 2, "the two static prefixes");
    assert!(w.sim.trace().iter().all(|e| e.data.len() <= 1400));
}

#[test]
fn register_in_flight_when_the_host_moved_does_not_move_it_back() {
    let mut w = world(9, Options::new(MobilityMode::AcrossSubnet));
    w.seen(w.a, HOST);
    w.sim.run_for(Duration::from_millis(10));
    w.seen(w.b, HOST);
    w.sim.run_for(Duration::from_millis(10));
    assert_eq!(registered_at(&w, HOST), Some(ip(B)));
    // A Map-Register of the host from A, newer than any the Map-Server saw from A but sent
    // before A got the Map-Notify (its nonce is below that Map-Notify's).
    let last = w.sim.node(w.a).etr().unwrap().last_nonce();
    let (eid, eid_mask_len) = eid_to_wire(&prefix(&format!("{HOST}/32")));
    let mut reg = MapRegister {
        proxy_reply: false,
        security: false,
        eid_notify: false,
        use_ttl: false,
        merge: false,
        want_map_notify: false,
        nonce: last - (1 << 19),
        key_id: 0,
        algorithm_id: 0,
        auth_data: Vec::new(),
        records: vec![MapRecord {
            ttl: 1440,
            eid_mask_len,
            action: Action::NO_ACTION,
            authoritative: true,
            map_version: 0,
            eid,
            locators: vec![rloc(A, 1, 100)],
        }],
        xtr_id: Some(XtrId { xtr_id: XTR_A, site_id: 1 }),
    };
    let bytes = reg.to_signed_bytes(1, KEY, &loci_wire::auth::SendPolicy::default()).unwrap();
    let evil = w.sim.add_endpoint("in-flight", &[ip("192.0.2.77")]);
    w.sim.send(evil, SocketAddr::new(ip(A), 4342), SocketAddr::new(ip(MS), 4342), bytes);
    w.sim.run_for(Duration::from_millis(10));
    assert_eq!(registered_at(&w, HOST), Some(ip(B)));
    assert_eq!(w.sim.node(w.ms).stats().mobility.stale_registrations, 1);
    // A's own registrations after the move carry no host, and A's static prefix stays.
    w.sim.run_for(Duration::from_secs(120));
    assert_eq!(registered_at(&w, HOST), Some(ip(B)));
    assert!(w.sim.node(w.ms).map_server().unwrap().registration(&prefix("10.1.1.0/24")).is_some());
}

#[test]
fn ipv6_host_in_an_instance_moves() {
    let mut w = world(10, Options::new(MobilityMode::AcrossSubnet));
    let host = ip("2001:db8:9::10");
    let now = w.sim.now();
    w.sim.node_mut(w.a).handle_host_seen(now, 5, host, "site0");
    w.sim.run_for(Duration::from_millis(10));
    assert_eq!(w.sim.node(w.a).dynamic_eids()[0].prefix, prefix("[5]2001:db8:9::10/128"));
    let (now, r) = (w.sim.now(), w.r);
    w.sim.node_mut(r).handle_miss(now, 5, host, ip("2001:db8:77::1"));
    w.sim.run_for(Duration::from_millis(10));
    let at_r = |w: &World| match w.sim.node(w.r).itr().unwrap().reader().load_full().forward(5, host, 1, Families::ALL)
    {
        Forward::Encapsulate(a) => Some(a),
        _ => None,
    };
    assert_eq!(at_r(&w), Some(ip(A)));
    assert_eq!(rloc_at_r(&w, "2001:db8:9::10"), None, "instance 0 knows nothing of it");
    let now = w.sim.now();
    w.sim.node_mut(w.b).handle_host_seen(now, 5, host, "site0");
    w.sim.run_for(Duration::from_millis(5));
    assert_eq!(at_r(&w), Some(ip(B)));
    assert!(w.sim.node(w.a).dynamic_eids().is_empty());
    assert_eq!(w.sim.node(w.a).away_entries()[0].prefix, prefix("[5]2001:db8:9::10/128"));
}

#[test]
fn map_notify_group_withdraws_before_the_map_server_speaks() {
    let mut w = world(12, Options::new(MobilityMode::ExtendedSubnet));
    w.seen(w.a, HOST);
    w.sim.run_for(Duration::from_millis(10));
    // The Map-Server is far from both xTRs; the LAN extension between them is short.
    w.sim.set_link_delay(w.ms, w.a, Duration::from_millis(40));
    w.sim.set_link_delay(w.ms, w.b, Duration::from_millis(40));
    w.seen(w.b, HOST);
    w.sim.run_for(Duration::from_millis(2));
    assert!(!has_host(&w, w.a, HOST), "withdrawn on B's announcement");
    assert_eq!(w.sim.node(w.a).away_entries()[0].rlocs, [ip(B)]);
    assert_eq!(registered_at(&w, HOST), Some(ip(A)), "the Map-Server has not heard yet");
    w.sim.run_for(Duration::from_millis(200));
    assert_eq!(registered_at(&w, HOST), Some(ip(B)));
    assert_eq!(w.sim.node(w.a).stats().mobility.moves_away, 1);
}

#[test]
fn an_xtr_that_is_also_an_itr_tells_its_notifies_apart() {
    let o = Options { a_is_itr: true, ..Options::new(MobilityMode::AcrossSubnet) };
    let mut w = world(13, o);
    w.seen(w.a, HOST);
    w.sim.run_for(Duration::from_millis(10));
    w.seen(w.b, HOST);
    w.sim.run_for(Duration::from_millis(10));
    assert_eq!(w.sim.node(w.a).away_entries().len(), 1);
    // A's own hosts now send to HOST: A's ITR subscribes; its confirmation, signed with the
    // same key as the Map-Server's move notices, goes to the ITR, not the ETR.
    let now = w.sim.now();
    w.sim.node_mut(w.a).handle_miss(now, 0, ip(HOST), ip("10.1.1.5"));
    w.sim.run_for(Duration::from_millis(10));
    let itr = w.sim.node(w.a).itr().unwrap();
    assert_eq!(itr.map_cache().lookup(0, ip(HOST)).map(|(_, m)| m.rlocs[0].addr), Some(ip(B)));
    assert_eq!(itr.subscriptions().len(), 1);
    // Home again: the ETR takes the host back, the ITR gets the publication.
    w.seen(w.a, HOST);
    w.sim.run_for(Duration::from_millis(10));
    assert!(has_host(&w, w.a, HOST) && w.sim.node(w.a).away_entries().is_empty());
    let s = w.sim.node(w.a).stats().mobility.clone();
    assert_eq!((s.publications_applied, s.forged_notifies, s.replayed_notifies), (1, 0, 0), "{s:?}");
}
