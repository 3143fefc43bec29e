//! Resilience on the simulator (issue 8): RLOC probing moves traffic off a dead locator and back
//! (default and fast-failover timers, convergence measured in virtual time), the ITR fails over
//! between Map-Resolvers and returns to the preferred one, a restarted Map-Server is healed by
//! the next registration round, forged probe replies change nothing, and locator-status bits
//! count only from the sending site's own locators.
//!
//! Convergence is the virtual time from the cut (or the repair) to the first instant at which
//! the ITR's published map-cache snapshot sends the flow to the other locator: what its data
//! plane would do with the next packet. Each figure is the worst over cuts at ten phases of the
//! probe timer; run with `--nocapture` to see them.

use std::net::SocketAddr;
use std::time::Duration;

use loci_core::config::{MapResolverConfig, MapServerPeer, NodeConfig};
use loci_core::itr::ItrConfig;
use loci_core::locator::Families;
use loci_core::map_cache::Forward;
use loci_core::probing::{status_bits_change, FastFailover, ProbingConfig};
use loci_core::stats::Drop;
use loci_sim::scenario::{etr, ip, map_server, prefix, rloc, site};
use loci_sim::{Id, Sim};
use loci_wire::map_reply::MapReply;
use loci_wire::map_request::MapRequest;
use loci_wire::message::{message_type, peek_type};
use loci_wire::Wire;

const KEY: &[u8] = b"site-a-secret";
const ITR_RLOC: &str = "198.51.100.1";
const P1: &str = "203.0.113.1";
const P2: &str = "203.0.113.2";

fn itr_config(resolvers: &[&str], probing: Option<ProbingConfig>) -> NodeConfig {
    NodeConfig {
        name: "itr".into(),
        itr: Some(ItrConfig {
            map_resolvers: resolvers.iter().map(|r| SocketAddr::new(ip(r), 4342)).collect(),
            rlocs: vec![ip(ITR_RLOC)],
            probing,
            ..Default::default()
        }),
        ..Default::default()
    }
}

struct Site {
    sim: Sim,
    ms: Id,
    itr: Id,
    etr1: Id,
}

/// MS/MR at 192.0.2.10 for 10.1.0.0/16; a site 10.1.1.0/24 with two xTRs, etr1 at P1
/// (priority 1) and etr2 at P2 (priority 2, the backup), 20 ms from the ITR; the ITR has
/// resolved 10.1.1.7 and sends to P1.
fn site_with_backup(seed: u64, probing: ProbingConfig) -> Site {
    let mut sim = Sim::new(seed);
    let ms = sim.add_node(map_server("ms", vec![site("site-a", KEY, &["10.1.0.0/16"])]), &[ip("192.0.2.10")]);
    let db = || vec![("10.1.1.0/24", vec![rloc(P1, 1, 50), rloc(P2, 2, 50)])];
    let etr1 = sim.add_node(etr("etr1", "192.0.2.10", KEY, db(), 1), &[ip(P1)]);
    let etr2 = sim.add_node(etr("etr2", "192.0.2.10", KEY, db(), 2), &[ip(P2)]);
    let itr = sim.add_node(itr_config(&["192.0.2.10"], Some(probing)), &[ip(ITR_RLOC)]);
    for e in [etr1, etr2] {
        sim.set_link_delay(itr, e, Duration::from_millis(20));
    }
    sim.run_for(Duration::from_secs(2));
    miss(&mut sim, itr, "10.1.1.7");
    sim.run_for(Duration::from_secs(3));
    assert_eq!(forward(&sim, itr, "10.1.1.7"), Forward::Encapsulate(ip(P1)));
    Site { sim, ms, itr, etr1 }
}

fn miss(sim: &mut Sim, itr: Id, dst: &str) {
    let now = sim.now();
    sim.node_mut(itr).handle_miss(now, 0, ip(dst), ip("10.9.0.1"));
}

/// What the ITR's data plane would do with a packet of flow `flow` to `dst` now.
fn forward_flow(sim: &Sim, itr: Id, dst: &str, flow: u32) -> Forward {
    sim.node(itr).itr().unwrap().reader().load().forward(0, ip(dst), flow, Families::ALL)
}

fn forward(sim: &Sim, itr: Id, dst: &str) -> Forward {
    forward_flow(sim, itr, dst, 0x1234)
}

/// Runs until the ITR sends 10.1.1.7 to `rloc`; returns how long that took.
fn converge(w: &mut Site, rloc: &str, limit: Duration) -> Duration {
    let start = w.sim.elapsed();
    let itr = w.itr;
    let to = Forward::Encapsulate(ip(rloc));
    assert!(w.sim.run_until(limit, |s| forward(s, itr, "10.1.1.7") == to), "not on {rloc} within {limit:?}");
    w.sim.elapsed() - start
}

/// Cuts P1 at ten phases of the probe timer and repairs it; returns the worst failover and
/// recovery times.
fn failover_and_back(probing: &ProbingConfig) -> (Duration, Duration) {
    let mut worst = (Duration::ZERO, Duration::ZERO);
    for phase in 0..10u64 {
        let mut w = site_with_backup(phase, probing.clone());
        let step = probing.fast.as_ref().map_or(probing.interval, |f| f.interval) / 10;
        w.sim.run_for(step * phase as u32);
        w.sim.partition(w.itr, w.etr1, true);
        let down = converge(&mut w, P2, Duration::from_secs(10));
        // Stays on the backup while P1 is cut.
        w.sim.run_for(Duration::from_secs(5));
        assert_eq!(forward(&w.sim, w.itr, "10.1.1.7"), Forward::Encapsulate(ip(P2)));
        w.sim.partition(w.itr, w.etr1, false);
        let up = converge(&mut w, P1, Duration::from_secs(10));
        worst = (worst.0.max(down), worst.1.max(up));
        let p = w.sim.node(w.itr).itr().unwrap().prober().unwrap();
        assert_eq!((p.stats().downs, p.stats().ups), (1, 1));
        let st = p.locator(ip(P1)).unwrap();
        assert!(st.up && st.rtt == Some(Duration::from_millis(40)), "{st:?}");
    }
    worst
}

#[test]
fn default_timers_fail_over_to_the_backup_and_back() {
    let (down, up) = failover_and_back(&ProbingConfig::default());
    eprintln!("default probing (1 s, 2 misses): failover {down:?}, back {up:?}");
    assert!(down <= Duration::from_secs(3), "{down:?}");
    assert!(up <= Duration::from_millis(1100), "{up:?}");
}

#[test]
fn fast_failover_is_sub_second() {
    let probing = ProbingConfig { fast: Some(FastFailover::new(vec![ip(P1), ip(P2)])), ..Default::default() };
    let (down, up) = failover_and_back(&probing);
    eprintln!("fast-failover probing (200 ms, 3 misses): failover {down:?}, back {up:?}");
    assert!(down <= Duration::from_secs(1), "{down:?}");
    assert!(up <= Duration::from_millis(300), "{up:?}");
}

#[test]
fn flows_on_surviving_locators_stay_put() {
    let mut sim = Sim::new(11);
    sim.add_node(map_server("ms", vec![site("site-a", KEY, &["10.1.0.0/16"])]), &[ip("192.0.2.10")]);
    let locs = || vec![rloc("203.0.113.1", 1, 50), rloc("203.0.113.3", 1, 50), rloc(P2, 2, 50)];
    let mut etrs = Vec::new();
    for (i, a) in ["203.0.113.1", "203.0.113.3", P2].into_iter().enumerate() {
        let cfg = etr(&format!("etr{i}"), "192.0.2.10", KEY, vec![("10.1.1.0/24", locs())], i as u128 + 1);
        etrs.push(sim.add_node(cfg, &[ip(a)]));
    }
    let itr = sim.add_node(itr_config(&["192.0.2.10"], Some(ProbingConfig::default())), &[ip(ITR_RLOC)]);
    sim.run_for(Duration::from_secs(2));
    miss(&mut sim, itr, "10.1.1.7");
    sim.run_for(Duration::from_secs(3));
    let flows: Vec<u32> = (0..2000u32).map(|i| i.wrapping_mul(0x9e37_79b9)).collect();
    let on = |sim: &Sim| -> Vec<Forward> { flows.iter().map(|&f| forward_flow(sim, itr, "10.1.1.7", f)).collect() };
    let before = on(&sim);
    let enc = |a: &str| Forward::Encapsulate(ip(a));
    assert!(before.contains(&enc("203.0.113.1")) && before.contains(&enc("203.0.113.3")));
    // One of the two priority-1 locators dies: its flows move to the other, the others stay.
    sim.partition(itr, etrs[0], true);
    sim.run_for(Duration::from_secs(4));
    for (b, a) in before.iter().zip(on(&sim)) {
        assert_eq!(a, enc("203.0.113.3"));
        if *b == enc("203.0.113.3") {
            assert_eq!(a, *b, "a flow on the surviving locator moved");
        }
    }
    // Both priority-1 locators dead: the backup. Then both back: every flow where it was.
    sim.partition(itr, etrs[1], true);
    sim.run_for(Duration::from_secs(4));
    assert!(on(&sim).iter().all(|f| *f == enc(P2)));
    sim.partition(itr, etrs[0], false);
    sim.partition(itr, etrs[1], false);
    sim.run_for(Duration::from_secs(2));
    assert_eq!(on(&sim), before);
}

#[test]
fn forged_probe_replies_are_ignored() {
    let mut w = site_with_backup(3, ProbingConfig::default());
    let attacker = w.sim.add_endpoint("attacker", &[ip("192.0.2.66")]);
    w.sim.partition(w.itr, w.etr1, true);
    converge(&mut w, P2, Duration::from_secs(5));
    // The attacker sees the probes (on path) and answers them: from its own address with the
    // right nonce, and from P1's address with a guessed one. Neither brings P1 back.
    for _ in 0..5 {
        w.sim.run_for(Duration::from_millis(1000));
        let probe = w
            .sim
            .trace()
            .iter()
            .rev()
            .find(|e| e.dst.ip() == ip(P1) && peek_type(&e.data) == Ok(message_type::MAP_REQUEST))
            .map(|e| MapRequest::parse(&e.data).unwrap())
            .unwrap();
        assert!(probe.probe);
        let forged = |nonce| {
            MapReply { probe: true, echo_nonce_capable: false, security: false, nonce, records: vec![], auth: None }
                .to_bytes()
        };
        let itr_addr = SocketAddr::new(ip(ITR_RLOC), 4342);
        w.sim.send(attacker, SocketAddr::new(ip("192.0.2.66"), 4342), itr_addr, forged(probe.nonce));
        w.sim.send(attacker, SocketAddr::new(ip(P1), 4342), itr_addr, forged(probe.nonce ^ 0x5a5a));
    }
    w.sim.run_for(Duration::from_millis(100));
    assert_eq!(forward(&w.sim, w.itr, "10.1.1.7"), Forward::Encapsulate(ip(P2)));
    let p = w.sim.node(w.itr).itr().unwrap().prober().unwrap();
    assert!(!p.locator(ip(P1)).unwrap().up);
    assert_eq!(p.stats().replies_wrong_source, 5);
    assert_eq!(p.stats().replies_unmatched, 5);
    assert!(w.sim.node(w.itr).stats().dropped(Drop::NoMatchingNonce) >= 5);
}

/// A Map-Resolver on its own node, forwarding to the Map-Server at `ms`.
fn resolver(name: &str, ms: &str) -> NodeConfig {
    NodeConfig {
        name: name.into(),
        map_resolver: Some(MapResolverConfig {
            map_servers: vec![MapServerPeer { address: ip(ms), eid_prefixes: vec![prefix("10.1.0.0/16")] }],
        }),
        ..Default::default()
    }
}

/// Which resolvers the ITR's Encapsulated Map-Requests went to, in order, from trace entry
/// `from` on.
fn asked(sim: &Sim, itr: Id, from: usize) -> Vec<String> {
    sim.trace()[from..]
        .iter()
        .filter(|e| e.from == itr && peek_type(&e.data) == Ok(message_type::ECM))
        .map(|e| e.dst.ip().to_string())
        .collect()
}

#[test]
fn map_resolver_failover_and_return() {
    let mut sim = Sim::new(21);
    let mut ms_cfg = map_server("ms", vec![site("site-a", KEY, &["10.1.0.0/16"])]);
    ms_cfg.map_resolver = None;
    sim.add_node(ms_cfg, &[ip("192.0.2.10")]);
    let mr1 = sim.add_node(resolver("mr1", "192.0.2.10"), &[ip("192.0.2.53")]);
    sim.add_node(resolver("mr2", "192.0.2.10"), &[ip("192.0.2.54")]);
    let db = (0..4).map(|i| (["10.1.1.0/24", "10.1.2.0/24", "10.1.3.0/24", "10.1.4.0/24"][i], vec![rloc(P1, 1, 50)]));
    sim.add_node(etr("etr1", "192.0.2.10", KEY, db.collect(), 1), &[ip(P1)]);
    let itr = sim.add_node(itr_config(&["192.0.2.53", "192.0.2.54"], None), &[ip(ITR_RLOC)]);
    sim.run_for(Duration::from_secs(2));
    let preferred = Some(SocketAddr::new(ip("192.0.2.53"), 4342));
    let resolved = |sim: &Sim, eid: &str| forward(sim, itr, eid) == Forward::Encapsulate(ip(P1));

    // The preferred resolver stops; a new EID still resolves, through the other, within 3 s.
    sim.partition(itr, mr1, true);
    let (t, mark) = (sim.elapsed(), sim.trace().len());
    miss(&mut sim, itr, "10.1.1.7");
    assert!(sim.run_until(Duration::from_secs(3), |s| resolved(s, "10.1.1.7")));
    let took = sim.elapsed() - t;
    eprintln!("Map-Resolver failover: a new EID resolved {took:?} after the miss");
    assert_eq!(asked(&sim, itr, mark), ["192.0.2.53", "192.0.2.54"]);
    // The next one goes straight to the resolver that answered.
    let mark = sim.trace().len();
    miss(&mut sim, itr, "10.1.2.7");
    assert!(sim.run_until(Duration::from_secs(1), |s| resolved(s, "10.1.2.7")));
    assert_eq!(asked(&sim, itr, mark), ["192.0.2.54"]);

    // The preferred resolver comes back; once the return delay has passed, new resolutions
    // go to it again, and stay there.
    sim.partition(itr, mr1, false);
    sim.run_for(ItrConfig::default().resolver_return);
    let mark = sim.trace().len();
    miss(&mut sim, itr, "10.1.3.7");
    assert!(sim.run_until(Duration::from_secs(1), |s| resolved(s, "10.1.3.7")));
    miss(&mut sim, itr, "10.1.4.7");
    assert!(sim.run_until(Duration::from_secs(1), |s| resolved(s, "10.1.4.7")));
    assert_eq!(asked(&sim, itr, mark), ["192.0.2.53", "192.0.2.53"]);
    assert_eq!(sim.node(itr).itr().unwrap().current_resolver(), preferred);
}

#[test]
fn map_server_restart_is_healed_by_the_next_registration_round() {
    let mut w = site_with_backup(5, ProbingConfig::default());
    let p = prefix("10.1.1.0/24");
    assert!(w.sim.node(w.ms).map_server().unwrap().registration(&p).is_some());
    // The Map-Server restarts with nothing: its registrations are gone.
    w.sim.restart_node(w.ms, map_server("ms", vec![site("site-a", KEY, &["10.1.0.0/16"])]));
    assert!(w.sim.node(w.ms).map_server().unwrap().registration(&p).is_none());
    // Within one register interval (60 s) the ETRs have registered again, with no one acting.
    let (ms, etr1, restarted) = (w.ms, w.etr1, w.sim.now());
    let back = |s: &Sim| s.node(ms).map_server().unwrap().registration(&p).is_some();
    assert!(w.sim.run_until(Duration::from_secs(61), back));
    eprintln!("Map-Server restart healed after {:?}", w.sim.now() - restarted);
    w.sim.run_for(Duration::from_secs(1));
    let acked = w.sim.node(etr1).etr().unwrap().registrations()[0].acknowledged;
    assert!(acked.is_some_and(|t| t > restarted), "the fresh Map-Server acknowledged etr1");
    // And a new lookup resolves through it.
    let mut cfg = itr_config(&["192.0.2.10"], None);
    cfg.itr.as_mut().unwrap().rlocs = vec![ip("198.51.100.2")];
    let itr2 = w.sim.add_node(cfg, &[ip("198.51.100.2")]);
    miss(&mut w.sim, itr2, "10.1.1.8");
    assert!(w.sim.run_until(Duration::from_secs(2), |s| forward(s, itr2, "10.1.1.8") == Forward::Encapsulate(ip(P1))));
}

#[test]
fn locator_status_bits_only_from_the_sites_locators() {
    let probing = ProbingConfig { status_bits: true, ..Default::default() };
    let mut w = site_with_backup(8, probing);
    let itr = w.itr;
    // What the ITR's data plane calls on decapsulating a packet from 10.1.1.7 with the L bit.
    let decap = |sim: &mut Sim, outer: &str, bits: u32| {
        let snap = sim.node(itr).itr().unwrap().reader().load_full();
        if let Some(change) = status_bits_change(true, &snap, 0, ip("10.1.1.7"), ip(outer), Some(bits)) {
            let now = sim.now();
            sim.node_mut(itr).handle_status_bits(now, &change);
        }
    };
    // A stranger says P1 (ordinal 0) is down: ignored.
    decap(&mut w.sim, "192.0.2.66", 0b10);
    assert_eq!(forward(&w.sim, itr, "10.1.1.7"), Forward::Encapsulate(ip(P1)));
    // The site's backup xTR says so: traffic moves at once, though probes still answer.
    decap(&mut w.sim, P2, 0b10);
    assert_eq!(forward(&w.sim, itr, "10.1.1.7"), Forward::Encapsulate(ip(P2)));
    w.sim.run_for(Duration::from_secs(3));
    assert_eq!(forward(&w.sim, itr, "10.1.1.7"), Forward::Encapsulate(ip(P2)));
    // Until the bit returns to 1.
    decap(&mut w.sim, P2, 0b11);
    assert_eq!(forward(&w.sim, itr, "10.1.1.7"), Forward::Encapsulate(ip(P1)));
    // Bits flapping on every packet (RFC 9300 §10: the ETR MUST rate limit what it does about
    // changes): a change on every packet for a second, at most 10 applied (a burst of 5, then
    // 5 per second); the packets that repeat the state in force are no change at all.
    let stats = |sim: &Sim| sim.node(itr).itr().unwrap().prober().unwrap().stats().clone();
    w.sim.run_for(Duration::from_secs(2));
    let before = stats(&w.sim);
    for k in 0..100u32 {
        decap(&mut w.sim, P2, if k % 2 == 0 { 0b10 } else { 0b11 });
        w.sim.run_for(Duration::from_millis(10));
    }
    let after = stats(&w.sim);
    let applied = after.status_bits_applied - before.status_bits_applied;
    let limited = after.status_bits_rate_limited - before.status_bits_rate_limited;
    assert!(applied <= 10 && limited >= 40, "applied {applied}, rate-limited {limited}");
}

#[test]
fn a_map_server_that_is_also_the_etr_answers_probes() {
    let mut sim = Sim::new(9);
    let mut cfg = map_server("ms-etr", vec![site("site-a", KEY, &["10.1.0.0/16"])]);
    let db = vec![("10.1.1.0/24", vec![rloc("192.0.2.10", 1, 50)])];
    cfg.etr = etr("ms-etr", "192.0.2.10", KEY, db, 1).etr;
    let node = sim.add_node(cfg, &[ip("192.0.2.10")]);
    let itr = sim.add_node(itr_config(&["192.0.2.10"], Some(ProbingConfig::default())), &[ip(ITR_RLOC)]);
    sim.run_for(Duration::from_secs(2));
    miss(&mut sim, itr, "10.1.1.7");
    sim.run_for(Duration::from_secs(5));
    let st = sim.node(itr).itr().unwrap().prober().unwrap().locator(ip("192.0.2.10")).unwrap().clone();
    assert!(st.up && st.replies >= 4, "{st:?}");
    assert_eq!(sim.node(node).stats().dropped(Drop::ProbeToMappingSystem), 0);
}

#[test]
fn etr_probe_replies_name_the_probed_locator_and_need_no_record() {
    let mut w = site_with_backup(4, ProbingConfig::default());
    let prober = w.sim.add_endpoint("prober", &[ip("198.51.100.9")]);
    let mut req = loci_core::mapping::map_request(0xabcd, &prefix("10.1.99.0/24"), vec![ip("198.51.100.9").into()]);
    let src = SocketAddr::new(ip("198.51.100.9"), 4342);
    w.sim.send(prober, src, SocketAddr::new(ip(P1), 4342), req.to_bytes());
    req.probe = true;
    req.nonce = 0xbeef;
    w.sim.send(prober, src, SocketAddr::new(ip(P1), 4342), req.to_bytes());
    // A probe for an EID it has: the record's p bit marks the locator probed.
    let mut known = loci_core::mapping::map_request(0xcafe, &prefix("10.1.1.0/24"), vec![ip("198.51.100.9").into()]);
    known.probe = true;
    w.sim.send(prober, src, SocketAddr::new(ip(P1), 4342), known.to_bytes());
    w.sim.run_for(Duration::from_millis(100));
    let got: Vec<(SocketAddr, MapReply)> =
        w.sim.received(prober).iter().map(|(_, from, _, d)| (*from, MapReply::parse(d).unwrap())).collect();
    assert_eq!(got.len(), 2, "only the probes are answered");
    assert!(got.iter().all(|(from, r)| from.ip() == ip(P1) && r.probe));
    assert!(got[0].1.nonce == 0xbeef && got[0].1.records.is_empty());
    let probed: Vec<(String, bool)> =
        got[1].1.records[0].locators.iter().map(|l| (l.address.to_string(), l.probed)).collect();
    assert_eq!(probed, [(P1.to_string(), true), (P2.to_string(), false)]);
}

/// An RLOC probe for 10.1.1.0/24 as a prober at `from` sends it.
fn probe_from(from: &str, nonce: u64) -> Vec<u8> {
    let mut req = loci_core::mapping::map_request(nonce, &prefix("10.1.1.0/24"), vec![ip(from).into()]);
    req.probe = true;
    req.to_bytes()
}

#[test]
fn a_stranger_flooding_probes_is_rate_limited_and_probers_are_not() {
    // The ITR probes P1 and P2 with the fast-failover profile (every 200 ms).
    let probing = ProbingConfig { fast: Some(FastFailover::new(vec![ip(P1), ip(P2)])), ..Default::default() };
    let mut w = site_with_backup(12, probing);
    let stranger = w.sim.add_endpoint("stranger", &[ip("192.0.2.66")]);
    let (itr, etr1) = (w.itr, w.etr1);
    let prober = |sim: &Sim| sim.node(itr).itr().unwrap().prober().unwrap().stats().clone();
    let before = prober(&w.sim);
    // Ten probes a millisecond for two seconds, all to P1.
    let (src, dst) = (SocketAddr::new(ip("192.0.2.66"), 4342), SocketAddr::new(ip(P1), 4342));
    let mut sent = 0u64;
    for _ in 0..2000 {
        for _ in 0..10 {
            sent += 1;
            w.sim.send(stranger, src, dst, probe_from("192.0.2.66", sent));
        }
        w.sim.run_for(Duration::from_millis(1));
    }
    w.sim.run_for(Duration::from_millis(100));
    let replies = w.sim.received(stranger).len() as u64;
    let limited = w.sim.node(etr1).stats().dropped(Drop::RateLimited);
    eprintln!("stranger: {sent} probes in 2 s, {replies} answered, {limited} dropped as rate-limited");
    // 50 a second with a burst of 50: 150 at most over two seconds, and its share it gets.
    assert!((100..=151).contains(&replies), "{replies}");
    assert_eq!(limited, sent - replies);
    // Meanwhile every probe of the ITR's was answered: no miss, both locators up.
    let after = prober(&w.sim);
    assert!(after.replies - before.replies >= 18, "{before:?} {after:?}");
    assert_eq!(after.misses, before.misses);
    assert_eq!(after.downs, 0);
    assert_eq!(forward(&w.sim, itr, "10.1.1.7"), Forward::Encapsulate(ip(P1)));
}

#[test]
fn spoofed_sources_meet_the_etrs_total_reply_limit() {
    let mut sim = Sim::new(13);
    sim.add_node(map_server("ms", vec![site("site-a", KEY, &["10.1.0.0/16"])]), &[ip("192.0.2.10")]);
    let mut cfg = etr("etr1", "192.0.2.10", KEY, vec![("10.1.1.0/24", vec![rloc(P1, 1, 50)])], 1);
    cfg.limits.etr_replies_per_second = 100;
    let etr1 = sim.add_node(cfg, &[ip(P1)]);
    let attacker = sim.add_endpoint("attacker", &[ip("192.0.2.66")]);
    sim.run_for(Duration::from_secs(2));
    // 2000 probes in one second, each from another (spoofed) address: no per-requester limit
    // applies, the total one does (a burst of 100, then 100 a second).
    for i in 0..2000u32 {
        let from = std::net::Ipv4Addr::from(0x0a63_0000 + i).to_string();
        sim.send(
            attacker,
            SocketAddr::new(ip(&from), 4342),
            SocketAddr::new(ip(P1), 4342),
            probe_from(&from, i.into()),
        );
        if i % 2 == 1 {
            sim.run_for(Duration::from_millis(1));
        }
    }
    sim.run_for(Duration::from_millis(10));
    let stats = sim.node(etr1).stats();
    let replies = stats.sent.get("Map-Reply").copied().unwrap_or(0);
    assert!((190..=201).contains(&replies), "{replies}");
    assert_eq!(stats.dropped(Drop::RateLimited), 2000 - replies);
}

#[test]
fn a_probe_rate_cap_defers_probes_without_marking_locators_down() {
    const LOCATORS: u32 = 3000;
    const CAP: u32 = 1000;
    let mut sim = Sim::new(14);
    sim.add_node(map_server("ms", vec![site("site-a", KEY, &["10.0.0.0/8"])]), &[ip("192.0.2.10")]);
    // One ETR node answering on 3000 addresses: 12 prefixes of 250 locators each.
    let addrs: Vec<String> = (0..LOCATORS).map(|i| std::net::Ipv4Addr::from(0x6440_0000 + i).to_string()).collect();
    let prefixes: Vec<String> = (0..12).map(|k| format!("10.1.{k}.0/24")).collect();
    let db = prefixes
        .iter()
        .zip(addrs.chunks(250))
        .map(|(p, chunk)| (p.as_str(), chunk.iter().map(|a| rloc(a, 1, 1)).collect()))
        .collect();
    let mut cfg = etr("big", "192.0.2.10", KEY, db, 1);
    // This ETR stands for 3000: the ITR probes it 1000 times a second from one address.
    cfg.limits.etr_replies_per_source = 2 * CAP;
    cfg.limits.etr_replies_per_second = 2 * CAP;
    let ips: Vec<std::net::IpAddr> = addrs.iter().map(|a| ip(a)).collect();
    sim.add_node(cfg, &ips);
    let probing = ProbingConfig { max_probes_per_second: CAP, ..Default::default() };
    let itr = sim.add_node(itr_config(&["192.0.2.10"], Some(probing)), &[ip(ITR_RLOC)]);
    sim.run_for(Duration::from_secs(2));
    let start = sim.trace().len();
    for k in 0..12 {
        miss(&mut sim, itr, &format!("10.1.{k}.7"));
    }
    sim.run_for(Duration::from_secs(10));
    let prober = sim.node(itr).itr().unwrap().prober().unwrap();
    assert_eq!(prober.locators().count(), LOCATORS as usize);
    // Probes: (sent, locator), in the order sent.
    let probes: Vec<(Duration, std::net::IpAddr)> = sim.trace()[start..]
        .iter()
        .filter(|e| e.from == itr && peek_type(&e.data) == Ok(message_type::MAP_REQUEST))
        .filter(|e| MapRequest::parse(&e.data).is_ok_and(|r| r.probe))
        .map(|e| (e.sent, e.dst.ip()))
        .collect();
    // No second, wherever it starts, has more than the cap.
    let mut busiest = 0;
    let mut from = 0;
    for to in 0..probes.len() {
        while probes[to].0 - probes[from].0 >= Duration::from_secs(1) {
            from += 1;
        }
        busiest = busiest.max(to + 1 - from);
    }
    // Every locator probed, none waiting more than 4 intervals between probes.
    let mut last: std::collections::HashMap<std::net::IpAddr, Duration> = Default::default();
    let mut longest = Duration::ZERO;
    for (t, a) in &probes {
        if let Some(prev) = last.insert(*a, *t) {
            longest = longest.max(*t - prev);
        }
    }
    let st = prober.stats();
    eprintln!(
        "{LOCATORS} locators, cap {CAP}/s: {} probes in 10 s, busiest second {busiest}, longest gap {longest:?}, \
         {} deferred, {} misses",
        probes.len(),
        st.probes_deferred,
        st.misses
    );
    assert!(busiest <= CAP as usize, "{busiest}");
    assert!(probes.len() >= 9 * CAP as usize, "the cap is used: {}", probes.len());
    assert_eq!(last.len(), LOCATORS as usize, "every locator probed");
    assert!(longest <= Duration::from_secs(4), "{longest:?}");
    assert!(st.probes_deferred > 0);
    assert_eq!((st.misses, st.downs), (0, 0), "a deferred probe is no miss");
    assert!(prober.locators().all(|(_, s)| s.up));
}
