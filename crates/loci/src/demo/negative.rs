//! `negative`: C1 talks to a non-LISP server and to an unregistered part of a LISP site. The
//! Map-Server answers each miss with a Negative Map-Reply for the least-specific safe prefix,
//! xTR-B installs it with its native-forward action and forwards the packets natively.

use std::time::Duration;

use loci_sim::packet::{tcp_syn, udp};
use loci_sim::scenario::{ip, map_server, rloc, site, xtr};
use loci_sim::Sim;

use super::{data_plane, map_cache, registrations, Outcome, Scenario};

pub const SCENARIO: Scenario = Scenario {
    name: "negative",
    about: "Negative Map-Replies: least-specific prefix, native forward (15 min outside sites, 1 min inside)",
    run,
};

const KEY: &[u8] = b"demo-secret";
const C1: &str = "10.1.1.10";
const WEB: &str = "10.200.0.1";
const HOLE: &str = "10.1.77.1";

fn run(seed: u64) -> Outcome {
    let mut sim = Sim::new(seed);
    let ms = sim.add_node(
        map_server("ms-mr", vec![site("a", KEY, &["10.1.0.0/16"]), site("c", KEY, &["10.3.0.0/16"])]),
        &[ip("192.0.2.10")],
    );
    let own = vec![("10.1.1.0/24", vec![rloc("198.51.100.1", 1, 100)])];
    let b = sim.add_node(xtr("xtr-b", "192.0.2.10", KEY, own, 0xb, "198.51.100.1"), &[ip("198.51.100.1")]);
    let c1 = sim.add_host("c1", ip(C1), 0, &[b]).expect("xtr-b is a node");
    let web = sim.add_endpoint("web", &[ip(WEB)]);
    sim.set_link_delay(c1, b, Duration::from_micros(100));
    sim.run_for(Duration::from_secs(2));
    // Both packets miss and wait in xtr-b's miss queue for the (negative) Map-Replies.
    sim.send_packet(c1, tcp_syn(ip(C1), 40000, ip(WEB), 443));
    sim.run_for(Duration::from_millis(1));
    sim.send_packet(c1, udp(ip(C1), 40001, ip(HOLE), 53, b"query"));
    sim.run_for(Duration::from_millis(100));
    let topology = vec![
        "ms-mr   192.0.2.10    Map-Server + Map-Resolver, sites a 10.1.0.0/16 and c 10.3.0.0/16".into(),
        "xtr-b   198.51.100.1  branch xTR (ITR + ETR), registers 10.1.1.0/24".into(),
        format!("c1      {C1}     client behind xtr-b: TCP to {WEB} (not LISP), UDP to {HOLE} (unregistered)"),
        format!("web     {WEB}    a server outside LISP, reached through the underlay"),
    ];
    let tables = registrations(&sim, ms) + &map_cache(&sim, b) + &data_plane(&sim, &[b], &[c1, web]);
    Outcome::new(sim, topology, vec![c1, b, ms, web], tables)
}

#[cfg(test)]
mod tests {
    use super::super::{ladder, Step};
    use loci_sim::xtr::Handling;

    #[test]
    fn least_specific_negative_prefixes_and_native_forward() {
        let out = super::run(1);
        assert!(out.tables.contains("10.128.0.0/9  negative, native-forward  15 min"), "{}", out.tables);
        assert!(out.tables.contains("10.1.64.0/18  negative, native-forward  1 min"), "{}", out.tables);
        let steps = ladder(&out.sim);
        let replies: Vec<&Step> = steps.iter().filter(|s| s.message == "Map-Reply").collect();
        assert_eq!(replies.len(), 2, "one per miss");
        assert!(
            replies.iter().all(|s| (s.from.as_str(), s.to.as_str()) == ("ms-mr", "xtr-b")),
            "from the Map-Server itself"
        );
        let syns: Vec<&Step> = steps.iter().filter(|s| s.message == "TCP SYN").collect();
        assert_eq!(syns.iter().map(|s| s.handling).collect::<Vec<_>>(), [Some(Handling::Miss { queued: true }), None]);
        // The web server got the SYN through the underlay, one hop older.
        let web = out.sim.received(out.sim.id("web").unwrap());
        assert_eq!(web.len(), 1);
        assert_eq!(loci_sim::packet::Summary::parse(&web[0].3).map(|s| s.ttl), Some(63));
        assert_eq!(
            (syns[1].from.as_str(), syns[1].to.as_str(), syns[1].fields["inner"]["ttl"].as_u64()),
            ("xtr-b", "web", Some(63))
        );
    }
}
