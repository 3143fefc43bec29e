//! `resolve`: the classic walk-through. Two data-centre ETRs register D1's prefix with the
//! site's locator set; branch xTR-B asks the Map-Resolver for D1; the Map-Server forwards the
//! request to the last registered ETR, which answers xTR-B directly.

use loci_sim::scenario::{etr, ip, map_server, rloc, site};
use loci_sim::Sim;

use super::{ask, settle, tables, Outcome, Scenario};

pub const SCENARIO: Scenario = Scenario {
    name: "resolve",
    about: "registration, then resolution ITR -> Map-Resolver -> Map-Server -> ETR -> ITR",
    run,
};

const KEY: &[u8] = b"demo-secret";

fn run(seed: u64) -> Outcome {
    let mut sim = Sim::new(seed);
    let ms = sim.add_node(
        map_server("ms-mr", vec![site("branch", KEY, &["10.1.0.0/16"]), site("dc", KEY, &["10.2.0.0/16"])]),
        &[ip("192.0.2.10")],
    );
    // D1's prefix with the whole locator set: one priority-1 locator per ETR, a priority-2 backup.
    let dc_rlocs = || vec![rloc("203.0.113.11", 1, 50), rloc("203.0.113.12", 1, 50), rloc("203.0.113.13", 2, 100)];
    let d1 =
        sim.add_node(etr("xtr-d1", "192.0.2.10", KEY, vec![("10.2.1.0/24", dc_rlocs())], 0xd1), &[ip("203.0.113.11")]);
    let d2 =
        sim.add_node(etr("xtr-d2", "192.0.2.10", KEY, vec![("10.2.1.0/24", dc_rlocs())], 0xd2), &[ip("203.0.113.12")]);
    let b = sim.add_node(
        etr("xtr-b", "192.0.2.10", KEY, vec![("10.1.1.0/24", vec![rloc("198.51.100.1", 1, 100)])], 0xb),
        &[ip("198.51.100.1")],
    );
    // Make D2's registration arrive last, so the Map-Server forwards to it.
    sim.set_link_delay(d2, ms, std::time::Duration::from_millis(3));
    settle(&mut sim, 2);
    // C1 (10.1.1.10) opens a connection to D1 (10.2.1.5): xTR-B has no mapping and asks.
    ask(&mut sim, b, ip("192.0.2.10"), "10.2.1.5/32", 0x5eed);
    settle(&mut sim, 1);
    let topology = vec![
        "ms-mr   192.0.2.10    Map-Server + Map-Resolver, sites branch 10.1.0.0/16 and dc 10.2.0.0/16".into(),
        "xtr-d1  203.0.113.11  ETR for D1's prefix 10.2.1.0/24 (locators .11 p1/w50, .12 p1/w50, .13 p2)".into(),
        "xtr-d2  203.0.113.12  ETR for the same prefix, same locator set".into(),
        "xtr-b   198.51.100.1  branch xTR for 10.1.1.0/24; C1 = 10.1.1.10 asks for D1 = 10.2.1.5".into(),
    ];
    let _ = d1;
    let tables = tables(&sim, ms, b);
    Outcome { sim, topology, tables }
}

#[cfg(test)]
mod tests {
    use super::super::ladder;

    #[test]
    fn ladder_order_and_direct_reply() {
        let out = super::run(1);
        let steps: Vec<String> =
            ladder(&out.sim).iter().map(|s| format!("{}>{} {}", s.from, s.to, s.message)).collect();
        let first_request = steps.iter().position(|s| s == "xtr-b>ms-mr ECM").expect("request");
        let registers = steps.iter().rposition(|s| s.ends_with("Map-Register")).unwrap();
        assert!(registers < first_request, "registration before resolution: {steps:?}");
        assert_eq!(steps[first_request + 1], "ms-mr>xtr-d2 ECM", "forwarded to the last registered ETR");
        assert_eq!(steps[first_request + 2], "xtr-d2>xtr-b Map-Reply", "the ETR answers the ITR directly");
        assert!(out.tables.contains("10.2.1.0/24"));
        // Deterministic: same seed, same ladder.
        let again: Vec<String> = ladder(&super::run(1).sim).iter().map(|s| s.to_string()).collect();
        assert_eq!(again, ladder(&out.sim).iter().map(|s| s.to_string()).collect::<Vec<_>>());
    }
}
