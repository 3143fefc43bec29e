//! `resolve`: the classic walk-through. Two data-centre ETRs register D1's prefix with the
//! site's locator set; C1 opens a connection to D1; xTR-B misses, asks the Map-Resolver, the
//! Map-Server forwards the request to the last registered ETR, which answers xTR-B directly;
//! xTR-B installs the mapping and encapsulates, each flow to one priority-1 locator.

use std::time::Duration;

use loci_sim::packet::{tcp_syn, udp};
use loci_sim::scenario::{etr, ip, map_server, rloc, site, xtr};
use loci_sim::Sim;

use super::{data_plane, flows, map_cache, registrations, Outcome, Scenario};

pub const SCENARIO: Scenario = Scenario {
    name: "resolve",
    about: "registration, resolution ITR -> MR -> MS -> ETR -> ITR, then data spread over two ETRs",
    run,
};

const KEY: &[u8] = b"demo-secret";
const MS: &str = "192.0.2.10";
const C1: &str = "10.1.1.10";
const D1: &str = "10.2.1.5";
/// Flows C1 opens once the mapping is cached.
pub const FLOWS: u16 = 200;

fn run(seed: u64) -> Outcome {
    let mut sim = Sim::new(seed);
    let ms = sim.add_node(
        map_server("ms-mr", vec![site("branch", KEY, &["10.1.0.0/16"]), site("dc", KEY, &["10.2.0.0/16"])]),
        &[ip(MS)],
    );
    // D1's prefix with the whole locator set: one priority-1 locator per ETR, a priority-2 backup.
    let set = || vec![rloc("203.0.113.11", 1, 50), rloc("203.0.113.12", 1, 50), rloc("203.0.113.13", 2, 100)];
    let x1 = sim.add_node(etr("xtr-d1", MS, KEY, vec![("10.2.1.0/24", set())], 0xd1), &[ip("203.0.113.11")]);
    let x2 = sim.add_node(etr("xtr-d2", MS, KEY, vec![("10.2.1.0/24", set())], 0xd2), &[ip("203.0.113.12")]);
    let branch = vec![("10.1.1.0/24", vec![rloc("198.51.100.1", 1, 100)])];
    let b = sim.add_node(xtr("xtr-b", MS, KEY, branch, 0xb, "198.51.100.1"), &[ip("198.51.100.1")]);
    let c1 = sim.add_host("c1", ip(C1), 0, &[b]).expect("xtr-b is a node");
    let d1 = sim.add_host("d1", ip(D1), 0, &[x1, x2]).expect("the DC xTRs are nodes");
    // D2's registration arrives last, so the Map-Server forwards requests to it.
    sim.set_link_delay(x2, ms, Duration::from_millis(3));
    for (h, x) in [(c1, b), (d1, x1), (d1, x2)] {
        sim.set_link_delay(h, x, Duration::from_micros(100));
    }
    sim.run_for(Duration::from_secs(2));
    // C1 opens a TCP connection to D1: the SYN misses and waits in xtr-b's miss queue until the
    // Map-Reply is in.
    sim.send_packet(c1, tcp_syn(ip(C1), 40000, ip(D1), 80));
    sim.run_for(Duration::from_millis(100));
    // Many more flows, one packet each: the cache answers, the flows spread by weight.
    for port in 50000..50000 + FLOWS {
        sim.send_packet(c1, udp(ip(C1), port, ip(D1), 5001, b"hello"));
        sim.run_for(Duration::from_millis(1));
    }
    sim.run_for(Duration::from_millis(100));
    let topology = vec![
        "ms-mr   192.0.2.10    Map-Server + Map-Resolver, sites branch 10.1.0.0/16 and dc 10.2.0.0/16;\n                        every xTR registers every 60 s, authenticated (HMAC-SHA-256-128)".into(),
        "xtr-d1  203.0.113.11  ETR for D1's prefix 10.2.1.0/24 (locators .11 p1/w50, .12 p1/w50, .13 p2)".into(),
        "xtr-d2  203.0.113.12  ETR for the same prefix, same locator set".into(),
        "xtr-b   198.51.100.1  branch xTR (ITR + ETR) for 10.1.1.0/24".into(),
        format!("c1      {C1}     client behind xtr-b: a TCP SYN to D1, then {FLOWS} UDP flows"),
        format!("d1      {D1}      server behind xtr-d1 and xtr-d2"),
    ];
    let tables =
        registrations(&sim, ms) + &map_cache(&sim, b) + &flows(&sim, c1) + &data_plane(&sim, &[b, x1, x2], &[c1, d1]);
    Outcome::new(sim, topology, vec![c1, b, ms, x2, x1, d1], tables)
}

#[cfg(test)]
mod tests {
    use super::super::{flow_locators, ladder, per_locator, svg};
    use loci_sim::scenario::ip;

    fn lines(out: &super::Outcome) -> Vec<String> {
        ladder(&out.sim).iter().map(|s| format!("{}>{} {}", s.from, s.to, s.message)).collect()
    }

    #[test]
    fn ladder_order_direct_reply_and_no_more_requests() {
        let out = super::run(1);
        let steps = lines(&out);
        let first_request = steps.iter().position(|s| s == "xtr-b>ms-mr ECM").expect("request");
        let registers = steps.iter().rposition(|s| s.ends_with("Map-Register")).unwrap();
        assert!(registers < first_request, "registration before resolution: {steps:?}");
        assert_eq!(steps[first_request - 1], "c1>xtr-b TCP SYN", "the miss causes the request");
        assert_eq!(steps[first_request + 1], "ms-mr>xtr-d2 ECM", "forwarded to the last registered ETR");
        assert_eq!(steps[first_request + 2], "xtr-d2>xtr-b Map-Reply", "the ETR answers the ITR directly");
        assert_eq!(steps.iter().filter(|s| *s == "xtr-b>ms-mr ECM").count(), 1, "later flows cause no Map-Request");
        // The SYN waited for the Map-Reply, then went out encapsulated and was delivered.
        let data = &steps[first_request + 3..first_request + 5];
        assert!(data[0] == "xtr-b>xtr-d1 LISP data" || data[0] == "xtr-b>xtr-d2 LISP data", "{data:?}");
        assert!(data[1] == "xtr-d1>d1 TCP SYN" || data[1] == "xtr-d2>d1 TCP SYN", "{data:?}");
    }

    #[test]
    fn tables_and_spread() {
        let out = super::run(1);
        for want in
            ["10.2.1.0/24  dc", "203.0.113.11 p1/w50, 203.0.113.12 p1/w50, 203.0.113.13 p2/w100", "10.1.1.0/24  branch"]
        {
            assert!(out.tables.contains(want), "{want}: {}", out.tables);
        }
        assert!(
            out.tables.contains("Map-cache of xtr-b (misses 1, Map-Requests 1, Map-Replies accepted 1)"),
            "{}",
            out.tables
        );
        let flows = flow_locators(&out.sim, out.sim.id("c1").unwrap());
        assert_eq!(flows.len(), 1 + usize::from(super::FLOWS));
        let per = per_locator(&flows[1..]);
        let n = f64::from(super::FLOWS);
        for rloc in ["203.0.113.11", "203.0.113.12"] {
            let share = per.get(&ip(rloc)).copied().unwrap_or(0) as f64 / n;
            assert!((0.35..=0.65).contains(&share), "{rloc}: {share} {per:?}");
        }
        assert!(!per.contains_key(&ip("203.0.113.13")), "the backup carries nothing");
        assert_eq!(
            out.sim.received(out.sim.id("d1").unwrap()).len(),
            1 + usize::from(super::FLOWS),
            "D1 got every packet after the miss"
        );
    }

    #[test]
    fn deterministic_text_json_and_svg() {
        let s = &super::SCENARIO;
        let (a, b) = (super::run(7), super::run(7));
        assert_eq!(super::super::render(s, 7, &a), super::super::render(s, 7, &b));
        assert_eq!(super::super::json(s, 7, &a), super::super::json(s, 7, &b));
        assert_eq!(svg(s, 7, &a), svg(s, 7, &b));
        let other = super::run(8);
        assert_ne!(
            super::super::json(s, 7, &a)["trace"],
            super::super::json(s, 8, &other)["trace"],
            "the seed matters (nonces)"
        );
    }
}
