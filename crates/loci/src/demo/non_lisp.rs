//! `non-lisp`: C1, a host of a LISP site, talks to N1, a host of no LISP site, through a
//! Proxy-ETR (RFC 6832). The Map-Server answers xTR-B's miss with a Negative Map-Reply
//! (native-forward); xTR-B has a PETR configured, so it encapsulates to the PETR instead of
//! forwarding natively; the PETR checks that the inner source is an EID of a site it serves and
//! forwards the packet natively to N1. A stranger's packet encapsulated to the PETR is refused
//! (never an open relay, RFC 6832 §6.1). N1 answers: its reply is routed in the underlay to
//! the PITR, which announces 10.1.0.0/16; the PITR resolves C1's EID (a Map-Request with the P
//! bit) and encapsulates the reply to xTR-B, which delivers it to C1.

use std::time::Duration;

use std::net::SocketAddr;

use loci_core::config::NodeConfig;
use loci_core::eid::EidPrefix;
use loci_core::encap::{encapsulate, EncapParams, ENCAP_OVERHEAD_V4};
use loci_core::itr::ItrConfig;
use loci_core::petr::{Petrs, Proxy, RelayPolicy};
use loci_sim::packet::udp;
use loci_sim::scenario::{ip, map_server, rloc, site, xtr};
use loci_sim::Sim;

use super::{data_plane, map_cache, registrations, Outcome, Scenario};

pub const SCENARIO: Scenario = Scenario {
    name: "non-lisp",
    about: "a LISP site and a non-LISP host talk through a PETR and a PITR; the PETR refuses a stranger",
    run,
};

const KEY: &[u8] = b"demo-secret";
const MS: &str = "192.0.2.10";
const ITR: &str = "198.51.100.1";
const PETR: &str = "203.0.113.20";
const PITR: &str = "203.0.113.30";
const STRANGER: &str = "192.0.2.66";
const C1: &str = "10.1.1.10";
const N1: &str = "100.64.0.10";

fn run(seed: u64) -> Outcome {
    let mut sim = Sim::new(seed);
    let ms = sim.add_node(map_server("ms-mr", vec![site("branch", KEY, &["10.1.0.0/16"])]), &[ip(MS)]);
    let own = vec![("10.1.1.0/24", vec![rloc(ITR, 1, 100)])];
    let b = sim.add_node(xtr("xtr-b", MS, KEY, own, 0xb, ITR), &[ip(ITR)]);
    let petr = sim.add_node(NodeConfig { name: "petr".into(), ..Default::default() }, &[ip(PETR)]);
    let c1 = sim.add_host("c1", ip(C1), 0, &[b]).expect("xtr-b is a node");
    let n1 = sim.add_endpoint("n1", &[ip(N1)]);
    let stranger = sim.add_endpoint("stranger", &[ip(STRANGER)]);
    let petrs = Proxy { petrs: Petrs::new(vec![ip(PETR)]), ..Default::default() };
    assert!(sim.set_proxy(b, petrs), "xtr-b is a node");
    let relay = RelayPolicy { enabled: true, local: Vec::new(), sources: vec![site_prefix()] };
    assert!(sim.set_proxy(petr, Proxy { relay, ..Default::default() }), "the PETR is a node");
    let itr = ItrConfig {
        map_resolvers: vec![SocketAddr::new(ip(MS), 4342)],
        rlocs: vec![ip(PITR)],
        pitr: true,
        ..Default::default()
    };
    let pitr = sim.add_node(NodeConfig { name: "pitr".into(), itr: Some(itr), ..Default::default() }, &[ip(PITR)]);
    assert!(sim.announce(pitr, site_prefix()), "the PITR is a node");
    sim.set_link_delay(c1, b, Duration::from_micros(100));
    sim.run_for(Duration::from_secs(2));

    // The first packet misses and waits for the negative reply; the second finds the mapping.
    sim.send_packet(c1, udp(ip(C1), 40000, ip(N1), 53, b"query"));
    sim.run_for(Duration::from_millis(100));
    sim.send_packet(c1, udp(ip(C1), 40000, ip(N1), 53, b"query again"));
    sim.run_for(Duration::from_millis(100));
    // N1 answers: through the PITR (its first answer waits there for the Map-Reply).
    sim.send_packet(n1, udp(ip(N1), 53, ip(C1), 40000, b"answer"));
    sim.run_for(Duration::from_millis(100));
    sim.send_packet(n1, udp(ip(N1), 53, ip(C1), 40000, b"answer again"));
    sim.run_for(Duration::from_millis(100));
    sim.send_packet(stranger, stranger_packet());
    sim.run_for(Duration::from_millis(100));

    let topology = vec![
        "ms-mr     192.0.2.10    Map-Server + Map-Resolver, site branch 10.1.0.0/16".into(),
        format!("xtr-b     {ITR}  branch xTR, registers 10.1.1.0/24; PETR {PETR} for non-LISP traffic"),
        format!("petr      {PETR}  Proxy-ETR, relays for sources in 10.1.0.0/16 only"),
        format!("c1        {C1}     client behind xtr-b: two UDP packets to {N1}"),
        format!("pitr      {PITR}  Proxy-ITR, announces 10.1.0.0/16 into the underlay"),
        format!("n1        {N1}   a host of no LISP site: answers C1"),
        format!("stranger  {STRANGER}    not a LISP site: encapsulates its own packet to the PETR"),
    ];
    let tables = registrations(&sim, ms)
        + &map_cache(&sim, b)
        + &map_cache(&sim, pitr)
        + &data_plane(&sim, &[b, petr, pitr], &[c1, n1, stranger]);
    let mut out = Outcome::new(sim, topology, vec![c1, b, ms, petr, pitr, n1, stranger], tables);
    // C1 to N1, N1 to C1, and the stranger's.
    out.shown_flows = 3;
    out
}

/// The site's EID prefix: what the PETR relays for and the PITR announces.
fn site_prefix() -> EidPrefix {
    EidPrefix::new(0, "10.1.0.0/16".parse().expect("a prefix"))
}

/// A packet from the stranger to N1, LISP-encapsulated to the PETR by the stranger itself.
fn stranger_packet() -> Vec<u8> {
    let inner = udp(ip(STRANGER), 40000, ip(N1), 53, b"relay me");
    let mut buf = vec![0u8; ENCAP_OVERHEAD_V4 + inner.len()];
    buf[ENCAP_OVERHEAD_V4..].copy_from_slice(&inner);
    let params = EncapParams::new(ip(STRANGER), ip(PETR), 0, 7);
    let inner_at = ENCAP_OVERHEAD_V4..buf.len();
    let range = encapsulate(&mut buf, inner_at, &params).expect("room for the headers");
    buf[range].to_vec()
}

#[cfg(test)]
mod tests {
    use super::super::moving::tests::{after, lines};
    use super::*;
    use loci_sim::packet::Summary;
    use loci_sim::xtr::Handling;

    #[test]
    fn the_site_reaches_n1_through_the_petr() {
        let out = super::run(1);
        let steps = lines(&out);
        let miss = after(&steps, 0, "c1>xtr-b UDP");
        let reply = after(&steps, miss, "ms-mr>xtr-b Map-Reply");
        let to_petr = after(&steps, reply, "xtr-b>petr LISP data");
        after(&steps, to_petr, "petr>n1 UDP");
        assert!(out.tables.contains("negative, native-forward"), "{}", out.tables);
        // Both of C1's packets reached N1, natively forwarded by the PETR (one hop older).
        let got = out.sim.received(out.sim.id("n1").unwrap());
        assert_eq!(got.len(), 2, "{got:?}");
        for g in got {
            let s = Summary::parse(&g.3).unwrap();
            assert_eq!((s.src, s.dst, s.ttl), (ip(C1), ip(N1), 63));
        }
        let b = out.sim.data_plane(out.sim.id("xtr-b").unwrap()).unwrap().counters();
        assert_eq!((b.encapsulated, b.native_forwarded), (2, 0), "to the PETR, never natively");
    }

    #[test]
    fn n1_answers_through_the_pitr() {
        let out = super::run(1);
        let steps = lines(&out);
        let answer = after(&steps, 0, "n1>pitr UDP");
        let request = after(&steps, answer, "pitr>ms-mr ECM");
        let to_b = after(&steps, request, "pitr>xtr-b LISP data");
        after(&steps, to_b, "xtr-b>c1 UDP");
        let c1 = out.sim.received(out.sim.id("c1").unwrap());
        assert_eq!(c1.len(), 2, "both answers: {c1:?}");
        assert!(c1.iter().all(|g| g.1.ip() == ip(N1)));
        let p = out.sim.data_plane(out.sim.id("pitr").unwrap()).unwrap().counters();
        assert_eq!((p.encapsulated, p.sent_after_miss), (2, 1));
        assert!(out.tables.contains("Map-cache of pitr"), "{}", out.tables);
    }

    #[test]
    fn the_stranger_is_refused() {
        let out = super::run(1);
        let refused = super::super::ladder(&out.sim)
            .into_iter()
            .filter(|s| (s.from.as_str(), s.to.as_str()) == ("stranger", "petr"))
            .map(|s| s.handling)
            .collect::<Vec<_>>();
        assert_eq!(refused, [Some(Handling::Dropped("relay-refused"))]);
        let text = super::super::render(&super::SCENARIO, 1, &out);
        assert!(text.contains("stranger -> petr") && text.contains("=> dropped: relay-refused"), "listed: {text}");
        let p = out.sim.data_plane(out.sim.id("petr").unwrap()).unwrap().counters();
        assert_eq!((p.decapsulated, p.dropped.get("relay-refused").copied()), (2, Some(1)));
        assert!(out.sim.received(out.sim.id("n1").unwrap()).iter().all(|g| g.1.ip() != ip(STRANGER)));
    }

    #[test]
    fn deterministic() {
        let s = &super::SCENARIO;
        let (a, b) = (super::run(7), super::run(7));
        assert_eq!(super::super::render(s, 7, &a), super::super::render(s, 7, &b));
    }
}
