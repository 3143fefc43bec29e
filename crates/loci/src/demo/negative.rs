//! `negative`: xTR-B asks for a non-LISP address and for an unregistered part of a LISP site;
//! the Map-Server answers with Negative Map-Replies for the least-specific safe prefixes.

use loci_sim::scenario::{etr, ip, map_server, rloc, site};
use loci_sim::Sim;

use super::{ask, settle, tables, Outcome, Scenario};

pub const SCENARIO: Scenario = Scenario {
    name: "negative",
    about: "Negative Map-Replies: least-specific prefix, native-forward, 15 min outside sites, 1 min inside",
    run,
};

const KEY: &[u8] = b"demo-secret";

fn run(seed: u64) -> Outcome {
    let mut sim = Sim::new(seed);
    let ms = sim.add_node(
        map_server("ms-mr", vec![site("a", KEY, &["10.1.0.0/16"]), site("c", KEY, &["10.3.0.0/16"])]),
        &[ip("192.0.2.10")],
    );
    let b = sim.add_node(
        etr("xtr-b", "192.0.2.10", KEY, vec![("10.1.1.0/24", vec![rloc("198.51.100.1", 1, 100)])], 0xb),
        &[ip("198.51.100.1")],
    );
    settle(&mut sim, 2);
    ask(&mut sim, b, ip("192.0.2.10"), "10.200.0.1/32", 1);
    ask(&mut sim, b, ip("192.0.2.10"), "10.1.77.1/32", 2);
    settle(&mut sim, 1);
    let topology = vec![
        "ms-mr   192.0.2.10    Map-Server + Map-Resolver, sites a 10.1.0.0/16 and c 10.3.0.0/16".into(),
        "xtr-b   198.51.100.1  registers 10.1.1.0/24; asks for 10.200.0.1 (non-LISP) and 10.1.77.1 (unregistered)"
            .into(),
    ];
    let tables = tables(&sim, ms, b);
    Outcome { sim, topology, tables }
}

#[cfg(test)]
mod tests {
    #[test]
    fn least_specific_negative_prefixes() {
        let out = super::run(1);
        assert!(out.tables.contains("10.128.0.0/9 negative native-forward ttl 15m"), "{}", out.tables);
        assert!(out.tables.contains("10.1.64.0/18 negative native-forward ttl 1m"), "{}", out.tables);
    }
}
