//! The simulated data plane during a host move (DESIGN §5 step 4): packets in flight to the old
//! xTR are re-encapsulated to the new one from its away entry and delivered, the sending ITR is
//! solicited and follows; a packet already re-encapsulated once is never bounced again.

use std::time::Duration;

use loci_core::config::MobilityMode;
use loci_core::encap::encapsulate_payload;
use loci_sim::packet::{udp, udp_datagram};
use loci_sim::scenario::{dynamic_eids, ip, map_server, rloc, site, subscriber, xtr};
use loci_sim::xtr::Handling;
use loci_sim::{Id, Sim};
use loci_wire::data::{HEADER_LEN, LISP_DATA_PORT};

const KEY: &[u8] = b"dc-secret";
const MS: &str = "192.0.2.10";
const A: &str = "203.0.113.1";
const B: &str = "203.0.113.2";
const R: &str = "198.51.100.1";
const H: &str = "10.1.9.10";
const C: &str = "10.7.1.10";

struct World {
    sim: Sim,
    a: Id,
    b: Id,
    r: Id,
    h: Id,
    c: Id,
}

/// xTRs A and B of site dc, each detecting hosts of 10.1.9.0/24 across subnets; H starts at A;
/// remote xTR R (SMR on, pub/sub off) serves client C and has resolved H to A.
fn world(seed: u64) -> World {
    let mut sim = Sim::new(seed);
    let sites = vec![site("dc", KEY, &["10.1.0.0/16"]), site("remote", KEY, &["10.7.0.0/16"])];
    sim.add_node(map_server("ms", sites), &[ip(MS)]);
    let mobile = |name, addr, local, id| {
        let cfg = xtr(name, MS, KEY, vec![(local, vec![rloc(addr, 1, 100)])], id, addr);
        dynamic_eids(cfg, "10.1.9.0/24", "site0", MobilityMode::AcrossSubnet, &[], addr)
    };
    let a = sim.add_node(mobile("a", A, "10.1.1.0/24", 0xa), &[ip(A)]);
    let b = sim.add_node(mobile("b", B, "10.1.2.0/24", 0xb), &[ip(B)]);
    let remote = xtr("r", MS, KEY, vec![("10.7.1.0/24", vec![rloc(R, 1, 100)])], 0x99, R);
    let r = sim.add_node(subscriber(remote, KEY, 0x99, false, true), &[ip(R)]);
    let h = sim.add_host("h", ip(H), 0, &[a]).unwrap();
    let c = sim.add_host("c", ip(C), 0, &[r]).unwrap();
    sim.run_for(Duration::from_secs(2));
    assert!(sim.move_host(h, &[a], "site0"), "H announces itself at A");
    sim.run_for(Duration::from_millis(10));
    sim.send_packet(c, udp(ip(C), 5000, ip(H), 7, b"first"));
    sim.run_for(Duration::from_millis(50));
    assert_eq!(sim.received(h).len(), 1, "resolved and delivered at A");
    World { sim, a, b, r, h, c }
}

#[test]
fn packets_in_flight_are_reencapsulated_and_the_itr_follows() {
    let mut w = world(1);
    let moved = w.sim.elapsed();
    assert!(w.sim.move_host(w.h, &[w.b], "site0"));
    // C streams 1 packet/ms for 100 ms.
    for seq in 0u32..100 {
        w.sim.send_packet(w.c, udp(ip(C), 5000, ip(H), 7, &seq.to_be_bytes()));
        w.sim.run_for(Duration::from_millis(1));
    }
    w.sim.run_for(Duration::from_millis(20));
    let trace = w.sim.trace();
    // A's handling of every packet of the stream that reached it after the move.
    let at_a: Vec<(usize, Handling)> = (0..trace.len())
        .filter(|&i| trace[i].sent > moved && trace[i].to == Some(w.a) && trace[i].is_encapsulated())
        .filter_map(|i| Some((i, w.sim.handling(i)?)))
        .collect();
    let reencapsulated: Vec<usize> =
        at_a.iter().filter(|(_, h)| *h == Handling::Reencapsulated { iid: 0, rloc: ip(B) }).map(|&(i, _)| i).collect();
    assert!(!reencapsulated.is_empty(), "{at_a:?}");
    // Once A had the away entry, every packet was re-encapsulated: only those before are lost.
    let first = reencapsulated[0];
    assert!(at_a.iter().filter(|(i, _)| *i > first).all(|(_, h)| matches!(h, Handling::Reencapsulated { .. })));
    let c = w.sim.data_plane(w.a).unwrap().counters();
    assert_eq!(c.reencapsulated as usize, reencapsulated.len());
    // Each went from A's port 4341 to B, was decapsulated there and reached H.
    for &i in &reencapsulated {
        let out = (i + 1..trace.len())
            .find(|&j| trace[j].from == w.a && trace[j].to == Some(w.b) && trace[j].is_encapsulated())
            .unwrap();
        assert_eq!((trace[out].src, trace[out].dst), ((ip(A), LISP_DATA_PORT).into(), (ip(B), LISP_DATA_PORT).into()));
        assert_eq!(w.sim.handling(out), Some(Handling::Decapsulated { iid: 0 }));
    }
    let lost_at_a = at_a.iter().filter(|(_, h)| matches!(h, Handling::Decapsulated { .. })).count();
    let got = w.sim.received(w.h).len() - 1;
    assert_eq!(got + lost_at_a, 100, "every packet delivered but those A took before it knew");
    assert!(lost_at_a <= 3, "the window is the Map-Server round trip: {lost_at_a}");
    // A solicited R once (rate limited), R asked the mapping system and now sends to B.
    assert_eq!(w.sim.node(w.a).stats().mobility.smrs_sent, 1);
    assert_eq!(w.sim.node(w.r).stats().mobility.smrs_accepted, 1);
    let last = trace.iter().rev().find(|e| e.from == w.r && e.is_encapsulated()).unwrap();
    assert_eq!(last.dst.ip(), ip(B));
    // H's packets at B are reported as host seen, not only its gratuitous ARP.
    assert!(w.sim.node(w.b).dynamic_eids().iter().any(|d| d.prefix.to_string() == "10.1.9.10/32"));
}

#[test]
fn a_reencapsulated_packet_is_never_redirected_again() {
    let mut w = world(2);
    assert!(w.sim.move_host(w.h, &[w.b], "site0"));
    w.sim.run_for(Duration::from_millis(20));
    assert_eq!(w.sim.node(w.a).away_entries().len(), 1);
    // A packet for H reaches A from another xTR's port 4341 (as if B had redirected it back
    // from a stale away entry): A drops it instead of bouncing it.
    let peer = w.sim.add_endpoint("peer", &[ip("203.0.113.3")]);
    let inner = udp(ip(C), 5000, ip(H), 7, b"bounced");
    let mut buf = vec![0u8; HEADER_LEN + inner.len()];
    buf[HEADER_LEN..].copy_from_slice(&inner);
    let n = buf.len();
    let p = encapsulate_payload(&mut buf, HEADER_LEN..n, 0, None).unwrap();
    let outer = |sport| udp_datagram(ip("203.0.113.3"), sport, ip(A), LISP_DATA_PORT, &buf[p.range.clone()], 64, 0);
    assert!(w.sim.send_packet(peer, outer(LISP_DATA_PORT)));
    w.sim.run_for(Duration::from_millis(10));
    let looped = w.sim.trace().len() - 1;
    assert_eq!(w.sim.handling(looped), Some(Handling::Dropped("away-loop")));
    assert_eq!(w.sim.data_plane(w.a).unwrap().counters().reencapsulated, 0);
    // The same packet from an ITR's flow port is redirected.
    assert!(w.sim.send_packet(peer, outer(0xc123)));
    w.sim.run_for(Duration::from_millis(10));
    let i = (looped + 1..w.sim.trace().len()).find(|&i| w.sim.trace()[i].from == peer).unwrap();
    assert_eq!(w.sim.handling(i), Some(Handling::Reencapsulated { iid: 0, rloc: ip(B) }));
    assert_eq!(w.sim.received(w.h).last().unwrap().3, inner);
}

#[test]
fn move_host_refuses_what_is_not_a_host_or_a_node() {
    let mut w = world(3);
    assert!(!w.sim.move_host(w.a, &[w.b], "site0"), "an xTR is not a host");
    assert!(!w.sim.move_host(w.h, &[], "site0"));
    assert!(!w.sim.move_host(w.h, &[w.c], "site0"), "a host is not an xTR");
    assert!(!w.sim.move_host(w.h, &[99], "site0"));
}
