//! The ITR on the simulator, on top of the Map-Server and ETR: a data-plane miss becomes an
//! Encapsulated Map-Request, the reply fills the map-cache (positive or negative), requests are
//! rate limited and paused, forged replies are ignored, entries expire or are refreshed while
//! in use, and a partitioned Map-Resolver is routed around.

use std::net::SocketAddr;
use std::time::Duration;

use loci_core::config::{MapResolverConfig, MapServerPeer, NodeConfig};
use loci_core::itr::ItrConfig;
use loci_core::locator::Families;
use loci_core::map_cache::Forward;
use loci_core::mapping::eid_to_wire;
use loci_core::stats::Drop;
use loci_sim::scenario::{etr, ip, map_server, prefix, rloc, site};
use loci_sim::{Id, Sim};
use loci_wire::map_reply::MapReply;
use loci_wire::message::ControlMessage;
use loci_wire::{Action, MapRecord, Wire};

const KEY: &[u8] = b"site-a-secret";
const ITR_RLOC: &str = "198.51.100.1";

struct World {
    sim: Sim,
    itr: Id,
    etr1: Id,
}

fn itr_config(name: &str, resolvers: &[&str]) -> NodeConfig {
    NodeConfig {
        name: name.into(),
        itr: Some(ItrConfig {
            map_resolvers: resolvers.iter().map(|r| SocketAddr::new(ip(r), 4342)).collect(),
            rlocs: vec![ip(ITR_RLOC)],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// MS/MR at 192.0.2.10 serving 10.1.0.0/16 and 10.3.0.0/16; an ETR at 203.0.113.1 registering
/// 10.1.1.0/24 (Record TTL `ttl_minutes`); an ITR at 198.51.100.1 using that resolver.
fn world(seed: u64, ttl_minutes: u32) -> World {
    let mut sim = Sim::new(seed);
    sim.add_node(map_server("ms", vec![site("site-a", KEY, &["10.1.0.0/16", "10.3.0.0/16"])]), &[ip("192.0.2.10")]);
    let mut cfg = etr(
        "etr1",
        "192.0.2.10",
        KEY,
        vec![("10.1.1.0/24", vec![rloc("203.0.113.1", 1, 50), rloc("203.0.113.2", 2, 50)])],
        0x11,
    );
    cfg.etr.as_mut().unwrap().record_ttl = ttl_minutes;
    let etr1 = sim.add_node(cfg, &[ip("203.0.113.1")]);
    let itr = sim.add_node(itr_config("itr", &["192.0.2.10"]), &[ip(ITR_RLOC)]);
    sim.run_for(Duration::from_secs(2));
    World { sim, itr, etr1 }
}

fn miss(sim: &mut Sim, itr: Id, dst: &str) {
    let now = sim.now();
    sim.node_mut(itr).handle_miss(now, 0, ip(dst), ip("10.9.0.1"));
}

/// What the ITR's data plane would do with a packet to `dst` now (marks the entry used).
fn forward(sim: &Sim, itr: Id, dst: &str) -> Forward {
    sim.node(itr).itr().unwrap().reader().load().forward(0, ip(dst), 0x1234, Families::ALL)
}

/// Message names in trace order, as "from>to:Name", with the send time in ms.
fn ladder(sim: &Sim) -> Vec<(u128, String)> {
    sim.trace()
        .iter()
        .map(|e| {
            let name = ControlMessage::parse(&e.data).map(|m| m.name()).unwrap_or("?");
            let to = e.to.map(|t| sim.name(t).to_string()).unwrap_or_default();
            (e.sent.as_millis(), format!("{}>{}:{}", sim.name(e.from), to, name))
        })
        .collect()
}

/// Send times (ms) of the Map-Requests the ITR sent.
fn itr_requests(sim: &Sim) -> Vec<u128> {
    ladder(sim)
        .into_iter()
        .filter(|(_, l)| l.starts_with("itr>") && l.ends_with("Encapsulated-Control-Message"))
        .map(|(t, _)| t)
        .collect()
}

#[test]
fn miss_resolves_through_the_mapping_system_and_installs() {
    let mut w = world(1, 1440);
    assert_eq!(forward(&w.sim, w.itr, "10.1.1.7"), Forward::Miss);
    miss(&mut w.sim, w.itr, "10.1.1.7");
    miss(&mut w.sim, w.itr, "10.1.1.7");
    w.sim.run_for(Duration::from_secs(1));
    let tail: Vec<String> = ladder(&w.sim).into_iter().rev().take(3).rev().map(|(_, l)| l).collect();
    assert_eq!(
        tail,
        ["itr>ms:Encapsulated-Control-Message", "ms>etr1:Encapsulated-Control-Message", "etr1>itr:Map-Reply"]
    );
    let cache = w.sim.node(w.itr).itr().unwrap().map_cache();
    let m = cache.get(&prefix("10.1.1.0/24")).expect("installed");
    assert!(m.authoritative);
    assert_eq!(m.rlocs.len(), 2);
    assert_eq!(m.ttl, Duration::from_secs(1440 * 60));
    // The priority-1 locator carries the traffic; the whole /24 is covered by one request.
    assert_eq!(forward(&w.sim, w.itr, "10.1.1.200"), Forward::Encapsulate(ip("203.0.113.1")));
    let s = w.sim.node(w.itr).itr().unwrap().stats();
    assert_eq!((s.misses, s.misses_pending, s.requests, s.installed), (2, 1, 1, 1));
    let _ = w.etr1;
}

#[test]
fn negative_reply_installed_with_its_action() {
    let mut w = world(2, 1440);
    miss(&mut w.sim, w.itr, "10.200.0.1");
    w.sim.run_for(Duration::from_secs(1));
    let m = w.sim.node(w.itr).itr().unwrap().map_cache().get(&prefix("10.128.0.0/9")).cloned().expect("negative entry");
    assert!(m.is_negative());
    assert_eq!((m.action, m.ttl), (Action::NATIVE_FORWARD, Duration::from_secs(15 * 60)));
    assert_eq!(forward(&w.sim, w.itr, "10.250.1.1"), Forward::NativeForward);
    // A late miss for a covered EID (from an older snapshot) sends nothing.
    miss(&mut w.sim, w.itr, "10.201.0.1");
    w.sim.run_for(Duration::from_secs(1));
    assert_eq!(itr_requests(&w.sim).len(), 1);
    assert_eq!(w.sim.node(w.itr).itr().unwrap().stats().misses_cached, 1);
}

#[test]
fn requests_are_rate_limited_and_paused_after_ten() {
    let mut w = world(3, 1440);
    let ms = 0;
    w.sim.partition(w.itr, ms, true);
    // Traffic keeps missing every 100 ms for 44.9 s.
    let start = w.sim.elapsed().as_millis();
    for _ in 0..449 {
        miss(&mut w.sim, w.itr, "10.1.1.7");
        w.sim.run_for(Duration::from_millis(100));
    }
    let sent: Vec<u128> = itr_requests(&w.sim).into_iter().map(|t| t - start).collect();
    // 10 requests one second apart, then silence for 30 s, then a new round.
    assert_eq!(&sent[..10], &(0..10).map(|i| i * 1000).collect::<Vec<_>>()[..], "{sent:?}");
    assert_eq!(sent[10], 40_000, "{sent:?}");
    assert!(sent.windows(2).all(|p| p[1] - p[0] >= 1000), "at most one per second: {sent:?}");
    assert_eq!(sent.len(), 15, "{sent:?}");
    let s = w.sim.node(w.itr).itr().unwrap().stats();
    assert_eq!((s.hold_downs, s.timeouts), (1, 14));
    // Healed: the next request of the round is answered.
    w.sim.partition(w.itr, ms, false);
    w.sim.run_for(Duration::from_secs(2));
    assert_eq!(forward(&w.sim, w.itr, "10.1.1.7"), Forward::Encapsulate(ip("203.0.113.1")));
}

#[test]
fn forged_replies_are_ignored() {
    let mut w = world(4, 1440);
    let attacker = w.sim.add_endpoint("attacker", &[ip("192.0.2.66")]);
    let forged = |nonce| {
        let (eid, eid_mask_len) = eid_to_wire(&prefix("10.1.1.0/24"));
        MapReply {
            probe: false,
            echo_nonce_capable: false,
            security: false,
            nonce,
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
        }
        .to_bytes()
    };
    let to_itr = SocketAddr::new(ip(ITR_RLOC), 4342);
    let from = SocketAddr::new(ip("192.0.2.66"), 4342);
    // Unsolicited, and racing a real request with guessed nonces: all refused.
    w.sim.send(attacker, from, to_itr, forged(1));
    miss(&mut w.sim, w.itr, "10.1.1.7");
    for n in 2..50 {
        w.sim.send(attacker, from, to_itr, forged(n));
    }
    w.sim.run_for(Duration::from_secs(1));
    let itr = w.sim.node(w.itr);
    assert_eq!(itr.itr().unwrap().stats().replies_unmatched, 49);
    assert_eq!(itr.stats().dropped(Drop::NoMatchingNonce), 49);
    assert_eq!(forward(&w.sim, w.itr, "10.1.1.7"), Forward::Encapsulate(ip("203.0.113.1")), "the real answer");
}

#[test]
fn entries_expire_unless_used_and_are_refreshed_while_used() {
    let mut w = world(5, 2);
    let asked = w.sim.elapsed();
    miss(&mut w.sim, w.itr, "10.1.1.7");
    miss(&mut w.sim, w.itr, "10.200.0.1");
    w.sim.run_for(Duration::from_secs(1));
    let installed = w.sim.elapsed();
    // 10.1.1.0/24 (TTL 2 min) carries traffic every second; the negative /9 (15 min) none.
    let used_until = installed + Duration::from_secs(300);
    while w.sim.elapsed() < used_until {
        assert_eq!(forward(&w.sim, w.itr, "10.1.1.7"), Forward::Encapsulate(ip("203.0.113.1")));
        w.sim.run_for(Duration::from_secs(1));
    }
    // Refreshed before each expiry (12 s before: a tenth of the TTL), never missing.
    let refreshes = itr_requests(&w.sim).len() - 2;
    assert!((2..=3).contains(&refreshes), "{refreshes} refreshes in 300 s of a 120 s TTL");
    assert_eq!(w.sim.node(w.itr).itr().unwrap().stats().refreshes as usize, refreshes);
    // Traffic stops: at most one more refresh (it was used within the window), then expiry.
    let itr = w.itr;
    let cached = |s: &Sim, p: &str| s.node(itr).itr().unwrap().map_cache().get(&prefix(p)).is_some();
    let stopped = w.sim.elapsed();
    assert!(w.sim.run_until(Duration::from_secs(200), |s| !cached(s, "10.1.1.0/24")));
    assert!(w.sim.elapsed() - stopped > Duration::from_secs(60), "not before its TTL");
    assert!(itr_requests(&w.sim).len() - 2 - refreshes <= 1);
    assert_eq!(forward(&w.sim, w.itr, "10.1.1.7"), Forward::Miss);
    // The unused negative entry expires after its 15 minutes, unrefreshed.
    assert!(cached(&w.sim, "10.128.0.0/9"));
    assert!(w.sim.run_until(Duration::from_secs(15 * 60), |s| !cached(s, "10.128.0.0/9")));
    assert!(w.sim.elapsed() >= asked + Duration::from_secs(15 * 60));
    assert_eq!(w.sim.node(w.itr).itr().unwrap().stats().expired, 2);
}

/// A Map-Resolver on its own node, forwarding to the Map-Server at `ms`.
fn resolver(name: &str, ms: &str, prefixes: &[&str]) -> NodeConfig {
    NodeConfig {
        name: name.into(),
        map_resolver: Some(MapResolverConfig {
            map_servers: vec![MapServerPeer {
                address: ip(ms),
                eid_prefixes: prefixes.iter().map(|p| prefix(p)).collect(),
            }],
        }),
        ..Default::default()
    }
}

#[test]
fn rotates_to_the_next_resolver_when_one_is_partitioned() {
    let mut sim = Sim::new(6);
    let mut ms_cfg = map_server("ms", vec![site("site-a", KEY, &["10.1.0.0/16"])]);
    ms_cfg.map_resolver = None;
    sim.add_node(ms_cfg, &[ip("192.0.2.20")]);
    let mr_a = sim.add_node(resolver("mr-a", "192.0.2.20", &["10.1.0.0/16"]), &[ip("192.0.2.53")]);
    sim.add_node(resolver("mr-b", "192.0.2.20", &["10.1.0.0/16"]), &[ip("192.0.2.54")]);
    sim.add_node(
        etr("etr1", "192.0.2.20", KEY, vec![("10.1.1.0/24", vec![rloc("203.0.113.1", 1, 50)])], 1),
        &[ip("203.0.113.1")],
    );
    let itr = sim.add_node(itr_config("itr", &["192.0.2.53", "192.0.2.54"]), &[ip(ITR_RLOC)]);
    sim.run_for(Duration::from_secs(2));
    sim.partition(itr, mr_a, true);
    miss(&mut sim, itr, "10.1.1.7");
    sim.run_for(Duration::from_secs(2));
    assert_eq!(forward(&sim, itr, "10.1.1.7"), Forward::Encapsulate(ip("203.0.113.1")));
    let l: Vec<String> = ladder(&sim).into_iter().map(|(_, l)| l).filter(|l| l.starts_with("itr>")).collect();
    assert_eq!(l, ["itr>mr-a:Encapsulated-Control-Message", "itr>mr-b:Encapsulated-Control-Message"]);
    assert_eq!(sim.node(itr).itr().unwrap().current_resolver(), Some(SocketAddr::new(ip("192.0.2.54"), 4342)));
    // The next resolution goes to the resolver that answered, first time.
    miss(&mut sim, itr, "10.1.77.1");
    sim.run_for(Duration::from_secs(1));
    let l: Vec<String> = ladder(&sim).into_iter().map(|(_, l)| l).filter(|l| l.starts_with("itr>")).collect();
    assert_eq!(l.last().map(String::as_str), Some("itr>mr-b:Encapsulated-Control-Message"));
    assert_eq!(l.len(), 3);
    assert_eq!(forward(&sim, itr, "10.1.77.1"), Forward::NativeForward, "a hole in the site prefix");
}

#[test]
fn same_seed_same_trace() {
    let run = |seed| {
        let mut w = world(seed, 2);
        miss(&mut w.sim, w.itr, "10.1.1.7");
        miss(&mut w.sim, w.itr, "10.200.0.1");
        w.sim.run_for(Duration::from_secs(200));
        w.sim.trace().to_vec()
    };
    assert_eq!(run(42), run(42));
}
