//! Echo-nonce on the simulator (RFC 9300 §10.1): two xTRs that both echo verify their paths
//! with the N and E bits of their data packets; a path broken one way is noticed from the
//! missing echo while the peer's traffic still arrives, long before probing at its RFC rate
//! would notice; without return traffic, or with a peer that does not say it echoes, nothing is
//! concluded; strangers' nonces change nothing.

use std::time::Duration;

use loci_core::config::NodeConfig;
use loci_core::echo_nonce::{EchoConfig, EchoStats};
use loci_core::locator::Families;
use loci_core::map_cache::Forward;
use loci_core::probing::ProbingConfig;
use loci_sim::packet::{udp, udp_datagram};
use loci_sim::scenario::{ip, map_server, rloc, site, xtr};
use loci_sim::{Id, Sim};
use loci_wire::data::{DataHeaderRepr, HEADER_LEN, LISP_DATA_PORT};

const KEY: &[u8] = b"echo-secret";
const MS: &str = "192.0.2.10";
const A: &str = "198.51.100.1";
const P1: &str = "203.0.113.1";
const P2: &str = "203.0.113.2";
const HA: &str = "10.2.1.10";
const HB: &str = "10.1.1.7";

/// Probing slow enough (10 s, 2 misses) that whatever happens within a few seconds is
/// echo-nonce's doing.
fn slow_probing() -> ProbingConfig {
    ProbingConfig { interval: Duration::from_secs(10), ..Default::default() }
}

/// An xTR with echo-nonce on (`echo`) or off, probing slowly.
fn node(name: &str, eids: &str, locators: &[(&str, u8)], id: u128, addr: &str, echo: bool) -> NodeConfig {
    let db = vec![(eids, locators.iter().map(|&(a, p)| rloc(a, p, 100)).collect())];
    let mut cfg = xtr(name, MS, KEY, db, id, addr);
    if let Some(itr) = &mut cfg.itr {
        itr.probing = Some(slow_probing());
        itr.echo_nonce = echo.then(EchoConfig::default);
    }
    if let Some(etr) = &mut cfg.etr {
        etr.echo_nonce = echo;
    }
    cfg
}

struct World {
    sim: Sim,
    a: Id,
    b1: Id,
    ha: Id,
    hb: Id,
}

/// xTR A (site 10.2.1.0/24, host HA) and site 10.1.1.0/24 (host HB) behind B1 (P1, priority
/// 1) and B2 (P2, the backup); HB's traffic leaves through B1. `b_echo`: B1 and B2 echo.
fn world(b_echo: bool) -> World {
    let mut sim = Sim::new(7);
    let sites = vec![site("a", KEY, &["10.2.0.0/16"]), site("b", KEY, &["10.1.0.0/16"])];
    sim.add_node(map_server("ms", sites), &[ip(MS)]);
    let b_rlocs = [(P1, 1), (P2, 2)];
    let a = sim.add_node(node("a", "10.2.1.0/24", &[(A, 1)], 0xa, A, true), &[ip(A)]);
    let b1 = sim.add_node(node("b1", "10.1.1.0/24", &b_rlocs, 0xb1, P1, b_echo), &[ip(P1)]);
    let b2 = sim.add_node(node("b2", "10.1.1.0/24", &b_rlocs, 0xb2, P2, b_echo), &[ip(P2)]);
    let ha = sim.add_host("ha", ip(HA), 0, &[a]).unwrap();
    let hb = sim.add_host("hb", ip(HB), 0, &[b1, b2]).unwrap();
    sim.run_for(Duration::from_secs(2));
    let mut w = World { sim, a, b1, ha, hb };
    // Both ways once, so that each side has resolved the other and probed it.
    traffic(&mut w, true, Duration::from_millis(100));
    w.sim.run_for(Duration::from_secs(2));
    assert_eq!(forward(&w), Forward::Encapsulate(ip(P1)));
    w
}

/// HA sends to HB (and HB back when `both_ways`) every 10 ms for `d`.
fn traffic(w: &mut World, both_ways: bool, d: Duration) {
    let end = w.sim.elapsed() + d;
    while w.sim.elapsed() < end {
        w.sim.send_packet(w.ha, udp(ip(HA), 5000, ip(HB), 7, b"ping"));
        if both_ways {
            w.sim.send_packet(w.hb, udp(ip(HB), 7, ip(HA), 5000, b"pong"));
        }
        w.sim.run_for(Duration::from_millis(10));
    }
}

fn forward(w: &World) -> Forward {
    w.sim.node(w.a).itr().unwrap().reader().load().forward(0, ip(HB), 0, Families::ALL)
}

fn echo_stats(w: &World, id: Id) -> EchoStats {
    w.sim.node(id).itr().unwrap().echo_nonce().unwrap().stats().clone()
}

/// The LISP headers of the data packets `from` sent since trace entry `since`.
fn headers(w: &World, from: Id, since: usize) -> Vec<DataHeaderRepr> {
    w.sim.trace()[since..]
        .iter()
        .filter(|t| t.from == from && t.is_encapsulated())
        .filter_map(|t| {
            t.data.get(28..28 + HEADER_LEN)?.first_chunk::<HEADER_LEN>().map(|h| DataHeaderRepr::from_array(h).0)
        })
        .collect()
}

#[test]
fn both_sides_verify_their_paths_with_echoed_nonces() {
    let mut w = world(true);
    let since = w.sim.trace().len();
    traffic(&mut w, true, Duration::from_secs(5));
    let (a, b1) = (echo_stats(&w, w.a), echo_stats(&w, w.b1));
    eprintln!("A: {a:?}\nB1: {b1:?}");
    assert!(a.echoed >= 3 && b1.echoed >= 3, "each side had its nonces echoed: {a:?} {b1:?}");
    assert_eq!((a.failed, b1.failed), (0, 0));
    let st = w.sim.node(w.a).itr().unwrap().echo_nonce().unwrap().locator(ip(P1)).cloned().unwrap();
    assert!(st.last_echo.is_some() && st.failures == 0, "{st:?}");
    // On the wire: requests (N and E) and echoes (N alone) both ways, and the echoes repeat a
    // nonce the other side asked for.
    let (from_a, from_b1) = (headers(&w, w.a, since), headers(&w, w.b1, since));
    for (hs, who) in [(&from_a, "A"), (&from_b1, "B1")] {
        assert!(hs.iter().any(|h| h.nonce.is_some() && h.echo_nonce_request), "{who} requests");
        assert!(hs.iter().any(|h| h.nonce.is_some() && !h.echo_nonce_request), "{who} echoes");
    }
    let asked: Vec<u32> = from_a.iter().filter(|h| h.echo_nonce_request).filter_map(|h| h.nonce).collect();
    let echoed: Vec<u32> = from_b1.iter().filter(|h| !h.echo_nonce_request).filter_map(|h| h.nonce).collect();
    assert!(echoed.iter().all(|n| asked.contains(n)), "B1 echoes only what A asked");
    assert_eq!(forward(&w), Forward::Encapsulate(ip(P1)));
}

/// Cuts what A sends to B1 after `offset`; returns how long until A sent HB's traffic to P2.
fn one_way_failover(offset: Duration) -> (World, Duration) {
    let mut w = world(true);
    traffic(&mut w, true, offset);
    w.sim.partition_one_way(w.a, w.b1, true);
    let cut = w.sim.elapsed();
    while w.sim.elapsed() - cut < Duration::from_secs(5) {
        traffic(&mut w, true, Duration::from_millis(10));
        if forward(&w) == Forward::Encapsulate(ip(P2)) {
            let took = w.sim.elapsed() - cut;
            return (w, took);
        }
    }
    panic!("no failover to P2 within 5 s of a one-way cut at {offset:?}");
}

#[test]
fn a_path_broken_one_way_fails_over_on_the_missing_echo_and_a_probe_brings_it_back() {
    // Cuts at ten phases of the 1.5 s request cycle.
    let mut worst = Duration::ZERO;
    for k in 0..10u32 {
        let (w, took) = one_way_failover(Duration::from_millis(150) * k);
        worst = worst.max(took);
        assert_eq!(echo_stats(&w, w.a).failed, 1);
        let probes = w.sim.node(w.a).itr().unwrap().prober().unwrap().stats().clone();
        assert_eq!((probes.downs, probes.misses, probes.hints_applied), (1, 0, 0), "the echo alone: {probes:?}");
    }
    eprintln!("echo-nonce failover after a one-way cut: worst {worst:?} over 10 phases (probing every 10 s)");
    // At worst the cut follows an echo already on its way: the next request comes an interval
    // (1 s) after the tick that saw it, and fails a timeout (0.5 s) later; plus one tick.
    assert!(worst <= Duration::from_millis(1750), "{worst:?}");
    let (mut w, _) = one_way_failover(Duration::ZERO);
    // HB still gets HA's packets, through B2.
    let got = w.sim.received(w.hb).len();
    traffic(&mut w, true, Duration::from_millis(100));
    assert!(w.sim.received(w.hb).len() >= got + 9);
    // Repaired: the next answered probe (10 s interval) brings P1 back.
    w.sim.partition_one_way(w.a, w.b1, false);
    let a = w.a;
    let ok = w.sim.run_until(Duration::from_secs(11), |s| {
        s.node(a).itr().unwrap().reader().load().forward(0, ip(HB), 0, Families::ALL) == Forward::Encapsulate(ip(P1))
    });
    assert!(ok, "back on P1 after a probe");
}

#[test]
fn without_return_traffic_nothing_is_concluded() {
    let mut w = world(true);
    w.sim.partition_one_way(w.a, w.b1, true);
    traffic(&mut w, false, Duration::from_secs(4));
    let a = echo_stats(&w, w.a);
    assert!(a.requests >= 2 && a.inconclusive >= 2 && a.failed == 0, "{a:?}");
    assert_eq!(forward(&w), Forward::Encapsulate(ip(P1)), "probing alone decides, later");
}

#[test]
fn no_requests_to_a_site_that_does_not_echo() {
    let mut w = world(false);
    let since = w.sim.trace().len();
    traffic(&mut w, true, Duration::from_secs(3));
    assert!(headers(&w, w.a, since).iter().all(|h| h.nonce.is_none()), "no N bit towards a non-echoing site");
    assert_eq!(echo_stats(&w, w.a).requests, 0);
    assert_eq!(forward(&w), Forward::Encapsulate(ip(P1)));
}

#[test]
fn strangers_cannot_request_echoes_or_fake_them() {
    let mut w = world(true);
    let stranger = w.sim.add_endpoint("stranger", &[ip("192.0.2.66")]);
    // A stranger asks A to echo its nonce: A has no slot for it, its packets to B1 never
    // carry it.
    let lisp = |nonce: u32, echo: bool| {
        let h =
            DataHeaderRepr { nonce: Some(nonce), echo_nonce_request: echo, instance_id: Some(0), ..Default::default() };
        let mut p = h.to_array().to_vec();
        p.extend(udp(ip(HB), 7, ip(HA), 5000, b"forged"));
        p
    };
    let since = w.sim.trace().len();
    for _ in 0..20 {
        let forged = udp_datagram(ip("192.0.2.66"), 0xc001, ip(A), LISP_DATA_PORT, &lisp(0xabcdef, true), 64, 0);
        assert!(w.sim.send_packet(stranger, forged));
        traffic(&mut w, true, Duration::from_millis(50));
    }
    assert!(headers(&w, w.a, since).iter().all(|h| h.nonce != Some(0xabcdef)));
    // Spoofed echoes from P1's address with guessed nonces while A's packets to B1 are cut:
    // none counts, and A still fails over.
    w.sim.partition_one_way(w.a, w.b1, true);
    for n in 0..300u32 {
        let forged = udp_datagram(ip(P1), 0xc001, ip(A), LISP_DATA_PORT, &lisp(n, false), 64, 0);
        w.sim.send_packet(stranger, forged);
        traffic(&mut w, true, Duration::from_millis(10));
    }
    assert_eq!(forward(&w), Forward::Encapsulate(ip(P2)));
    assert!(echo_stats(&w, w.a).failed >= 1);
}
