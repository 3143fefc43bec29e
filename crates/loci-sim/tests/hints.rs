//! Unreachability hints on the simulator (RFC 9300 §10): an ICMP unreachable or a withdrawn
//! route marks a locator down at once, without waiting for probes to go unanswered; the next
//! answered probe brings it back; hints about addresses that are no locator change nothing.

use std::net::SocketAddr;
use std::time::Duration;

use loci_core::config::NodeConfig;
use loci_core::itr::ItrConfig;
use loci_core::locator::Families;
use loci_core::map_cache::Forward;
use loci_core::probing::{ProbingConfig, Unreachable};
use loci_sim::scenario::{etr, ip, map_server, rloc, site};
use loci_sim::{Id, Sim};

const KEY: &[u8] = b"site-a-secret";
const P1: &str = "203.0.113.1";
const P2: &str = "203.0.113.2";

/// A site 10.1.1.0/24 behind etr1 (P1, priority 1) and etr2 (P2, priority 2); the ITR probes
/// with the default timers (1 s, down after 2 misses) and sends 10.1.1.7's traffic to P1.
fn world() -> (Sim, Id, Id) {
    let mut sim = Sim::new(1);
    sim.add_node(map_server("ms", vec![site("site-a", KEY, &["10.1.0.0/16"])]), &[ip("192.0.2.10")]);
    let db = || vec![("10.1.1.0/24", vec![rloc(P1, 1, 50), rloc(P2, 2, 50)])];
    let etr1 = sim.add_node(etr("etr1", "192.0.2.10", KEY, db(), 1), &[ip(P1)]);
    sim.add_node(etr("etr2", "192.0.2.10", KEY, db(), 2), &[ip(P2)]);
    let itr = ItrConfig {
        map_resolvers: vec![SocketAddr::new(ip("192.0.2.10"), 4342)],
        rlocs: vec![ip("198.51.100.1")],
        probing: Some(ProbingConfig::default()),
        ..Default::default()
    };
    let itr =
        sim.add_node(NodeConfig { name: "itr".into(), itr: Some(itr), ..Default::default() }, &[ip("198.51.100.1")]);
    sim.run_for(Duration::from_secs(2));
    let now = sim.now();
    sim.node_mut(itr).handle_miss(now, 0, ip("10.1.1.7"), ip("10.9.0.1"));
    sim.run_for(Duration::from_secs(3));
    assert_eq!(forward(&sim, itr), Forward::Encapsulate(ip(P1)));
    (sim, itr, etr1)
}

fn forward(sim: &Sim, itr: Id) -> Forward {
    sim.node(itr).itr().unwrap().reader().load().forward(0, ip("10.1.1.7"), 0, Families::ALL)
}

fn hint(sim: &mut Sim, itr: Id, rloc: &str, reason: Unreachable) -> bool {
    let now = sim.now();
    sim.node_mut(itr).handle_rloc_unreachable(now, ip(rloc), reason)
}

#[test]
fn a_hint_fails_over_at_once_and_a_probe_brings_the_locator_back() {
    let (mut sim, itr, etr1) = world();
    sim.partition(itr, etr1, true);
    assert!(hint(&mut sim, itr, P1, Unreachable::RouteWithdrawn));
    assert_eq!(forward(&sim, itr), Forward::Encapsulate(ip(P2)), "no probe missed yet: the hint alone");
    // Probes go on unanswered: it stays down, counted once.
    sim.run_for(Duration::from_secs(3));
    assert_eq!(forward(&sim, itr), Forward::Encapsulate(ip(P2)));
    sim.partition(itr, etr1, false);
    sim.run_for(Duration::from_millis(1100));
    assert_eq!(forward(&sim, itr), Forward::Encapsulate(ip(P1)), "the next answered probe");
    let st = sim.node(itr).itr().unwrap().prober().unwrap().stats().clone();
    assert_eq!((st.hints_applied, st.downs, st.ups), (1, 1, 1));
}

#[test]
fn hints_about_strangers_change_nothing() {
    let (mut sim, itr, _) = world();
    for a in ["192.0.2.99", "10.1.1.7", "198.51.100.1"] {
        assert!(!hint(&mut sim, itr, a, Unreachable::Icmp), "{a}");
    }
    assert_eq!(forward(&sim, itr), Forward::Encapsulate(ip(P1)));
    assert_eq!(sim.node(itr).itr().unwrap().prober().unwrap().stats().hints_unknown, 3);
}
