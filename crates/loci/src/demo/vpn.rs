//! `vpn`: two customers use the same EID prefixes, kept apart by instance IDs. One provider
//! xTR serves both customers' branches; each customer's data centre has its own ETR. The same
//! packet (same addresses, same ports) from each customer reaches that customer's server only.

use std::time::Duration;

use loci_sim::packet::tcp_syn;
use loci_sim::scenario::{etr, ip, itr, map_server, rloc, site};
use loci_sim::Sim;

use super::{data_plane, map_cache, registrations, Outcome, Scenario};

pub const SCENARIO: Scenario =
    Scenario { name: "vpn", about: "two customers, same EID prefixes, instance IDs 1 and 2 kept apart", run };

const MS: &str = "192.0.2.10";
const C: &str = "10.1.1.10";
const D: &str = "10.2.1.5";

fn run(seed: u64) -> Outcome {
    let mut sim = Sim::new(seed);
    let ms = sim.add_node(
        map_server(
            "ms-mr",
            vec![site("cust1", b"key-1", &["[1]10.0.0.0/8"]), site("cust2", b"key-2", &["[2]10.0.0.0/8"])],
        ),
        &[ip(MS)],
    );
    let x1 = sim.add_node(
        etr("xtr-1", MS, b"key-1", vec![("[1]10.2.1.0/24", vec![rloc("203.0.113.21", 1, 100)])], 1),
        &[ip("203.0.113.21")],
    );
    let x2 = sim.add_node(
        etr("xtr-2", MS, b"key-2", vec![("[2]10.2.1.0/24", vec![rloc("203.0.113.22", 1, 100)])], 2),
        &[ip("203.0.113.22")],
    );
    let b = sim.add_node(itr("xtr-b", MS, "198.51.100.1"), &[ip("198.51.100.1")]);
    let c1 = sim.add_host("c1", ip(C), 1, &[b]).expect("xtr-b is a node");
    let c2 = sim.add_host("c2", ip(C), 2, &[b]).expect("xtr-b is a node");
    let d1 = sim.add_host("d1", ip(D), 1, &[x1]).expect("xtr-1 is a node");
    let d2 = sim.add_host("d2", ip(D), 2, &[x2]).expect("xtr-2 is a node");
    for (h, x) in [(c1, b), (c2, b), (d1, x1), (d2, x2)] {
        sim.set_link_delay(h, x, Duration::from_micros(100));
    }
    sim.run_for(Duration::from_secs(2));
    // The same SYN from both customers: two misses, one resolution per instance; each SYN
    // waits in its instance's miss queue for its own Map-Reply.
    let syn = tcp_syn(ip(C), 40000, ip(D), 80);
    for c in [c1, c2] {
        sim.send_packet(c, syn.clone());
        sim.run_for(Duration::from_millis(1));
    }
    sim.run_for(Duration::from_millis(100));
    let topology = vec![
        "ms-mr   192.0.2.10    Map-Server + Map-Resolver, sites cust1 [1]10.0.0.0/8 and cust2 [2]10.0.0.0/8".into(),
        "xtr-b   198.51.100.1  the provider's branch ITR, serving both customers (instances 1 and 2)".into(),
        "xtr-1   203.0.113.21  customer 1's ETR, registers [1]10.2.1.0/24".into(),
        "xtr-2   203.0.113.22  customer 2's ETR, registers [2]10.2.1.0/24".into(),
        format!("c1, c2  {C}     one client per customer, same address, behind xtr-b"),
        format!("d1, d2  {D}      one server per customer, same address"),
    ];
    let tables = registrations(&sim, ms) + &map_cache(&sim, b) + &data_plane(&sim, &[b, x1, x2], &[c1, c2, d1, d2]);
    Outcome::new(sim, topology, vec![c1, c2, b, ms, x1, x2, d1, d2], tables)
}

#[cfg(test)]
mod tests {
    use loci_sim::scenario::ip;
    use loci_sim::xtr::Handling;

    #[test]
    fn instances_kept_apart() {
        let out = super::run(1);
        let sim = &out.sim;
        let id = |name: &str| sim.id(name).unwrap();
        for (server, etr, rloc, iid) in [("d1", "xtr-1", "203.0.113.21", 1), ("d2", "xtr-2", "203.0.113.22", 2)] {
            assert_eq!(sim.received(id(server)).len(), 1, "{server} gets its own customer's SYN only");
            // Every encapsulated packet to this ETR carries its customer's instance.
            for (i, e) in sim.trace().iter().enumerate().filter(|(_, e)| e.is_encapsulated() && e.dst.ip() == ip(rloc))
            {
                assert_eq!(sim.handling(i), Some(Handling::Decapsulated { iid }), "{etr}");
                assert_eq!(e.to, Some(id(etr)));
            }
            let c = sim.data_plane(id(etr)).unwrap().counters();
            assert_eq!((c.decapsulated, c.dropped.len()), (1, 0), "{etr}");
        }
        for want in ["[1]10.2.1.0/24  203.0.113.21 p1/w100", "[2]10.2.1.0/24  203.0.113.22 p1/w100"] {
            assert!(out.tables.contains(want), "{want}: {}", out.tables);
        }
    }
}
