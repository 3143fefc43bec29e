//! The data plane on the simulator: a host's packet misses at the ITR, is dropped while the
//! mapping is resolved, and once installed is encapsulated to a locator chosen per flow,
//! decapsulated by that ETR and delivered; flows spread by weight; negative mappings forward
//! natively; the ETR refuses instance IDs it does not serve.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use loci_core::encap::{encapsulate, EncapParams, ENCAP_OVERHEAD_V4};
use loci_sim::packet::{tcp_syn, udp, Summary};
use loci_sim::scenario::{ip, map_server, rloc, site, xtr};
use loci_sim::xtr::Handling;
use loci_sim::{Carried, Id, Sim};

const KEY: &[u8] = b"dc-secret";
const C1: &str = "10.1.1.10";
const D1: &str = "10.2.1.5";

struct World {
    sim: Sim,
    b: Id,
    c1: Id,
    d1: Id,
}

/// MS/MR 192.0.2.10; xtr-d1 (.11) and xtr-d2 (.12) register 10.2.1.0/24 with .11 and .12 at
/// priority 1 (weight 50 each) and .13 at priority 2; xtr-b (198.51.100.1) serves C1.
fn world(seed: u64) -> World {
    let mut sim = Sim::new(seed);
    sim.add_node(
        map_server("ms", vec![site("branch", KEY, &["10.1.0.0/16"]), site("dc", KEY, &["10.2.0.0/16"])]),
        &[ip("192.0.2.10")],
    );
    let set = || vec![rloc("203.0.113.11", 1, 50), rloc("203.0.113.12", 1, 50), rloc("203.0.113.13", 2, 100)];
    let x1 = sim.add_node(
        xtr("xtr-d1", "192.0.2.10", KEY, vec![("10.2.1.0/24", set())], 1, "203.0.113.11"),
        &[ip("203.0.113.11")],
    );
    let x2 = sim.add_node(
        xtr("xtr-d2", "192.0.2.10", KEY, vec![("10.2.1.0/24", set())], 2, "203.0.113.12"),
        &[ip("203.0.113.12")],
    );
    let branch = vec![("10.1.1.0/24", vec![rloc("198.51.100.1", 1, 100)])];
    let b = sim.add_node(xtr("xtr-b", "192.0.2.10", KEY, branch, 3, "198.51.100.1"), &[ip("198.51.100.1")]);
    let c1 = sim.add_host("c1", ip(C1), 0, &[b]).unwrap();
    let d1 = sim.add_host("d1", ip(D1), 0, &[x1, x2]).unwrap();
    sim.run_for(Duration::from_secs(2));
    World { sim, b, c1, d1 }
}

/// (trace index, handling) of every packet the host sent.
fn sent_by(sim: &Sim, host: Id) -> Vec<(usize, Option<Handling>)> {
    (0..sim.trace().len()).filter(|&i| sim.trace()[i].from == host).map(|i| (i, sim.handling(i))).collect()
}

fn requests_from(sim: &Sim, id: Id) -> usize {
    sim.trace()
        .iter()
        .filter(|e| e.from == id && e.carried == Carried::Datagram && e.data.first() == Some(&0x80))
        .count()
}

#[test]
fn miss_queue_resolve_then_encapsulate_and_deliver() {
    let mut w = world(1);
    let syn = tcp_syn(ip(C1), 40000, ip(D1), 80);
    // The first Map-Request is lost, so the resolution takes a retransmission (1 s).
    let ms = 0;
    w.sim.partition(w.b, ms, true);
    assert!(w.sim.send_packet(w.c1, syn.clone()));
    w.sim.run_for(Duration::from_millis(1));
    w.sim.partition(w.b, ms, false);
    // A second packet while the resolution is on: queued too, and not even reported.
    assert!(w.sim.send_packet(w.c1, syn.clone()));
    w.sim.run_for(Duration::from_millis(300));
    // A third, after the data plane's 250 ms hold: reported; the core knows it is pending.
    let start = w.sim.elapsed();
    assert!(w.sim.send_packet(w.c1, syn.clone()));
    w.sim.run_for(Duration::from_secs(1));
    let itr = w.sim.node(w.b).itr().unwrap().stats();
    assert_eq!((itr.misses, itr.misses_pending, itr.requests, itr.timeouts, itr.installed), (2, 1, 2, 1, 1));
    // The three waited for the Map-Reply (about 1 s after the first) and then went out.
    let got = w.sim.received(w.d1);
    assert_eq!(got.len(), 3, "queued packets are sent once the mapping is in");
    assert!(got.iter().all(|g| g.0 > start + Duration::from_millis(600) && g.3 == syn), "{got:?}");
    let h: Vec<Option<Handling>> = sent_by(&w.sim, w.c1).into_iter().map(|(_, h)| h).collect();
    assert_eq!(h, [Some(Handling::Miss { queued: true }); 3]);
    // A packet after that is encapsulated at once, to a priority-1 locator.
    assert!(w.sim.send_packet(w.c1, syn.clone()));
    w.sim.run_for(Duration::from_millis(100));
    let (last, h) = *sent_by(&w.sim, w.c1).last().unwrap();
    let Some(Handling::Encapsulated { iid: 0, rloc }) = h else { panic!("{h:?}") };
    assert!(rloc == ip("203.0.113.11") || rloc == ip("203.0.113.12"), "a priority-1 locator: {rloc}");
    // It went to that RLOC's ETR, UDP 4341, and was decapsulated there and delivered as sent.
    let i = (last..w.sim.trace().len()).find(|&i| w.sim.trace()[i].is_encapsulated()).unwrap();
    let e = &w.sim.trace()[i];
    assert_eq!((e.src.ip(), e.dst, e.src.port() & 0xc000), (ip("198.51.100.1"), (rloc, 4341).into(), 0xc000));
    // The outer header takes the inner TTL (RFC 9300 §5.3); the UDP checksum is the kernel's.
    let outer = Summary::parse(&e.data).unwrap();
    assert_eq!(outer.ttl, Summary::parse(&syn).unwrap().ttl);
    assert!(loci_wire::ecm::checksum::udp_ok(e.src.ip(), rloc, &e.data[outer.l4..]));
    assert_eq!(w.sim.handling(i), Some(Handling::Decapsulated { iid: 0 }));
    assert_eq!(w.sim.addrs(e.to.unwrap())[0], rloc);
    assert_eq!(w.sim.received(w.d1).len(), 4);
    assert_eq!(w.sim.received(w.d1)[3].3, syn, "the inner packet arrives unchanged");
    let c = w.sim.data_plane(w.b).unwrap().counters();
    assert_eq!((c.encapsulated, c.sent_after_miss, c.misses_reported, c.misses_suppressed), (4, 3, 2, 1));
    assert!(c.dropped.is_empty(), "{c:?}");
}

#[test]
fn miss_queue_is_bounded_and_expires() {
    let mut w = world(5);
    w.sim.partition(w.b, 0, true);
    for port in 0..6 {
        w.sim.send_packet(w.c1, udp(ip(C1), 1000 + port, ip(D1), 53, b"q"));
    }
    w.sim.run_for(Duration::from_millis(10));
    let h: Vec<Option<Handling>> = sent_by(&w.sim, w.c1).into_iter().map(|(_, h)| h).collect();
    let queued = h.iter().filter(|h| **h == Some(Handling::Miss { queued: true })).count();
    assert_eq!((queued, h.len()), (4, 6), "four per destination: {h:?}");
    // The resolver stays away: the waiting packets expire after 2.5 s.
    w.sim.run_for(Duration::from_secs(3));
    let c = w.sim.data_plane(w.b).unwrap().counters();
    assert_eq!((c.dropped["map-cache-miss"], c.dropped["miss-queue-expired"], c.sent_after_miss), (2, 4, 0));
    assert!(w.sim.received(w.d1).is_empty());
}

#[test]
fn flows_spread_by_weight_without_more_requests() {
    let mut w = world(2);
    w.sim.send_packet(w.c1, udp(ip(C1), 39999, ip(D1), 5001, b"x"));
    w.sim.run_for(Duration::from_secs(1));
    let before = requests_from(&w.sim, w.b);
    for port in 40000..40200 {
        w.sim.send_packet(w.c1, udp(ip(C1), port, ip(D1), 5001, b"x"));
        w.sim.run_for(Duration::from_millis(1));
    }
    w.sim.run_for(Duration::from_millis(100));
    assert_eq!(requests_from(&w.sim, w.b), before, "later flows use the cache");
    let mut per: BTreeMap<IpAddr, usize> = BTreeMap::new();
    for (_, h) in sent_by(&w.sim, w.c1).into_iter().skip(1) {
        let Some(Handling::Encapsulated { rloc, .. }) = h else { panic!("{h:?}") };
        *per.entry(rloc).or_default() += 1;
    }
    let share = |a: &str| per.get(&ip(a)).copied().unwrap_or(0);
    assert!((70..=130).contains(&share("203.0.113.11")), "{per:?}");
    assert!((70..=130).contains(&share("203.0.113.12")), "{per:?}");
    assert_eq!(share("203.0.113.13"), 0, "the backup carries nothing");
    assert_eq!(w.sim.received(w.d1).len(), 201, "the first one waited for the mapping");
    // The same flow always takes the same locator.
    w.sim.send_packet(w.c1, udp(ip(C1), 40000, ip(D1), 5001, b"again"));
    w.sim.run_for(Duration::from_millis(10));
    let all = sent_by(&w.sim, w.c1);
    assert_eq!(all.last().unwrap().1, all[1].1);
}

#[test]
fn negative_mapping_forwards_natively() {
    let mut w = world(3);
    let web = w.sim.add_endpoint("web", &[ip("10.200.0.1")]);
    let syn = tcp_syn(ip(C1), 40000, ip("10.200.0.1"), 443);
    w.sim.send_packet(w.c1, syn.clone());
    w.sim.run_for(Duration::from_secs(1));
    w.sim.send_packet(w.c1, syn.clone());
    w.sim.run_for(Duration::from_millis(10));
    let h: Vec<Option<Handling>> = sent_by(&w.sim, w.c1).into_iter().map(|(_, h)| h).collect();
    assert_eq!(h, [Some(Handling::Miss { queued: true }), Some(Handling::NativeForwarded)]);
    // The first waited for the negative reply and went out natively too.
    let got = w.sim.received(web);
    assert_eq!(got.len(), 2);
    let s = Summary::parse(&got[0].3).unwrap();
    assert_eq!((s.src, s.ttl), (ip(C1), 63), "forwarded as it is, one hop older");
    assert_eq!(w.sim.data_plane(w.b).unwrap().counters().native_forwarded, 2);
}

#[test]
fn etr_refuses_instances_it_does_not_serve() {
    let mut w = world(4);
    let attacker = w.sim.add_endpoint("attacker", &[ip("198.51.100.66")]);
    let inner = udp(ip(C1), 1, ip(D1), 2, b"x");
    let mut buf = vec![0u8; ENCAP_OVERHEAD_V4 + inner.len()];
    buf[ENCAP_OVERHEAD_V4..].copy_from_slice(&inner);
    let params = EncapParams::new(ip("198.51.100.66"), ip("203.0.113.11"), 7, 1);
    let n = buf.len();
    let r = encapsulate(&mut buf, ENCAP_OVERHEAD_V4..n, &params).unwrap();
    assert!(w.sim.send_packet(attacker, buf[r].to_vec()));
    assert!(!w.sim.send_packet(attacker, vec![1, 2, 3]), "not an IP packet");
    w.sim.run_for(Duration::from_millis(10));
    let i = w.sim.trace().len() - 1;
    assert_eq!(w.sim.handling(i), Some(Handling::Dropped("unknown-iid")));
    assert!(w.sim.received(w.d1).is_empty());
}
