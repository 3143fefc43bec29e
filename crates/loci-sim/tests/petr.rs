//! Proxy-ETR on the simulator (RFC 6832): an ITR with a PETR sends traffic for a non-LISP
//! destination (a negative native-forward mapping) encapsulated to the PETR, which forwards it
//! natively because its source is an EID of a site it serves; a stranger's packets are refused
//! (never an open relay).

use std::time::Duration;

use loci_core::config::NodeConfig;
use loci_core::eid::EidPrefix;
use loci_core::encap::{encapsulate, EncapParams, ENCAP_OVERHEAD_V4};
use loci_core::petr::{Petrs, Proxy, RelayPolicy};
use loci_sim::packet::{udp, Summary};
use loci_sim::scenario::{ip, map_server, rloc, site, xtr};
use loci_sim::xtr::Handling;
use loci_sim::{Id, Sim};

const KEY: &[u8] = b"branch-secret";
const C1: &str = "10.1.1.10";
const PETR: &str = "203.0.113.20";
const WEB: &str = "100.64.0.10";

struct World {
    sim: Sim,
    c1: Id,
    petr: Id,
    web: Id,
}

/// MS/MR 192.0.2.10 for 10.1.0.0/16; xtr-b (198.51.100.1) serves C1 and sends non-LISP traffic
/// to the PETR, which relays for 10.1.0.0/16; WEB is a host of no LISP site.
fn world(seed: u64) -> World {
    let mut sim = Sim::new(seed);
    sim.add_node(map_server("ms", vec![site("branch", KEY, &["10.1.0.0/16"])]), &[ip("192.0.2.10")]);
    let branch = vec![("10.1.1.0/24", vec![rloc("198.51.100.1", 1, 100)])];
    let b = sim.add_node(xtr("xtr-b", "192.0.2.10", KEY, branch, 1, "198.51.100.1"), &[ip("198.51.100.1")]);
    let petr = sim.add_node(NodeConfig { name: "petr".into(), ..Default::default() }, &[ip(PETR)]);
    let c1 = sim.add_host("c1", ip(C1), 0, &[b]).unwrap();
    assert!(sim.set_proxy(b, Proxy { petrs: Petrs::new(vec![ip(PETR)]), ..Default::default() }));
    let relay = RelayPolicy {
        enabled: true,
        local: Vec::new(),
        sources: vec![EidPrefix::new(0, "10.1.0.0/16".parse().unwrap())],
    };
    assert!(sim.set_proxy(petr, Proxy { relay, ..Default::default() }));
    let web = sim.add_endpoint("web", &[ip(WEB)]);
    sim.run_for(Duration::from_secs(2));
    World { sim, c1, petr, web }
}

#[test]
fn non_lisp_traffic_goes_through_the_petr() {
    let mut w = world(1);
    let p = udp(ip(C1), 40000, ip(WEB), 53, b"query");
    w.sim.send_packet(w.c1, p.clone());
    w.sim.run_for(Duration::from_secs(1));
    w.sim.send_packet(w.c1, p);
    w.sim.run_for(Duration::from_millis(10));
    let sent: Vec<Option<Handling>> =
        (0..w.sim.trace().len()).filter(|&i| w.sim.trace()[i].from == w.c1).map(|i| w.sim.handling(i)).collect();
    assert_eq!(sent, [Some(Handling::Miss { queued: true }), Some(Handling::Encapsulated { iid: 0, rloc: ip(PETR) })]);
    let got = w.sim.received(w.web);
    // The first waited in the miss queue until the negative reply came, then went the same way.
    assert_eq!(got.len(), 2, "both packets reach WEB through the PETR");
    let s = Summary::parse(&got[0].3).unwrap();
    assert_eq!((s.src, s.dst, s.ttl), (ip(C1), ip(WEB), 63), "natively forwarded by the PETR, one hop older");
    assert_eq!(w.sim.data_plane(w.petr).unwrap().counters().decapsulated, 2);
}

#[test]
fn the_petr_is_no_open_relay() {
    let mut w = world(2);
    let stranger = w.sim.add_endpoint("stranger", &[ip("192.0.2.66")]);
    let inner = udp(ip("192.0.2.66"), 40000, ip(WEB), 53, b"spoofed");
    let mut buf = vec![0u8; ENCAP_OVERHEAD_V4 + inner.len()];
    buf[ENCAP_OVERHEAD_V4..].copy_from_slice(&inner);
    let (inner_at, params) = (ENCAP_OVERHEAD_V4..buf.len(), EncapParams::new(ip("192.0.2.66"), ip(PETR), 0, 7));
    let range = encapsulate(&mut buf, inner_at, &params).expect("encapsulate");
    assert!(w.sim.send_packet(stranger, buf[range].to_vec()));
    w.sim.run_for(Duration::from_millis(10));
    assert!(w.sim.received(w.web).is_empty(), "nothing relayed for a source of no served site");
    let c = w.sim.data_plane(w.petr).unwrap().counters();
    assert_eq!((c.decapsulated, c.dropped.get("relay-refused").copied()), (0, Some(1)));
}

#[test]
fn a_pitr_brings_non_lisp_traffic_into_the_site() {
    let mut w = world(3);
    let ms = loci_sim::scenario::ip("192.0.2.10");
    let itr = loci_core::itr::ItrConfig {
        map_resolvers: vec![std::net::SocketAddr::new(ms, 4342)],
        rlocs: vec![ip("203.0.113.30")],
        pitr: true,
        ..Default::default()
    };
    let pitr =
        w.sim.add_node(NodeConfig { name: "pitr".into(), itr: Some(itr), ..Default::default() }, &[ip("203.0.113.30")]);
    let site = EidPrefix::new(0, "10.1.0.0/16".parse().unwrap());
    assert!(!w.sim.announce(w.web, site), "an endpoint announces nothing");
    let p = udp(ip(WEB), 53, ip(C1), 40000, b"answer");
    assert!(w.sim.send_packet(w.web, p.clone()));
    w.sim.run_for(Duration::from_millis(100));
    assert!(w.sim.received(w.c1).is_empty(), "no route to the site's EIDs without a PITR");
    assert!(w.sim.announce(pitr, site));
    for _ in 0..2 {
        w.sim.send_packet(w.web, p.clone());
        w.sim.run_for(Duration::from_millis(100));
    }
    assert_eq!(w.sim.received(w.c1).len(), 2, "both through the PITR, the first after its Map-Reply");
    let c = w.sim.data_plane(pitr).unwrap().counters();
    assert_eq!((c.encapsulated, c.sent_after_miss), (2, 1));
}
