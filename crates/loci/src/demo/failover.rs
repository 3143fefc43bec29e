//! `failover`: D1's prefix is reachable over two locators, xtr-d1 at priority 1 and xtr-d2 at
//! priority 2. The branch ITR probes both with the fast-failover profile (a probe every 200 ms,
//! down after 3 misses) while C1 streams to D1. The primary's link is cut: its probes go
//! unanswered, the ITR marks it down and its next packets go to the backup; the link returns,
//! the next probe is answered and traffic returns. The gaps are measured in virtual time.

use std::time::Duration;

use loci_core::itr::ItrConfig;
use loci_core::probing::{FastFailover, ProbingConfig};
use loci_sim::packet::udp;
use loci_sim::scenario::{etr, ip, map_server, rloc, site, xtr};
use loci_sim::{Id, Sim};

use super::{data_plane, map_cache, registrations, table, Outcome, Scenario};

pub const SCENARIO: Scenario = Scenario {
    name: "failover",
    about: "RLOC probing (fast-failover profile): the primary locator's link is cut, then returns",
    run,
};

const KEY: &[u8] = b"demo-secret";
const MS: &str = "192.0.2.10";
const P1: &str = "203.0.113.11";
const P2: &str = "203.0.113.12";
const ITR: &str = "198.51.100.1";
const C1: &str = "10.1.1.10";
const D1: &str = "10.2.1.5";
/// One packet every 10 ms (100 packets/s): the gaps are measured to 10 ms.
const EVERY: Duration = Duration::from_millis(10);
const WAN: Duration = Duration::from_millis(10);
/// When the primary's link is cut and when it returns, after the stream starts.
const CUT_AT: Duration = Duration::from_secs(1);
const REPAIR_AT: Duration = Duration::from_secs(3);
const STREAM_FOR: Duration = Duration::from_secs(5);

/// What the cut and the repair cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Measured {
    pub cut: Duration,
    pub repaired: Duration,
    /// From the cut to the first packet the ITR sent to the backup.
    pub failover: Option<Duration>,
    /// From the repair to the first packet the ITR sent to the primary again.
    pub back: Option<Duration>,
    /// Longest time D1 went without a packet around the cut.
    pub gap: Duration,
    pub sent: u32,
    pub delivered: u32,
}

pub struct FailedOver {
    pub outcome: Outcome,
    /// Read by the tests (the tables print it).
    #[cfg_attr(not(test), allow(dead_code))]
    pub measured: Measured,
}

fn run(seed: u64) -> Outcome {
    failover(seed).outcome
}

pub fn failover(seed: u64) -> FailedOver {
    let mut sim = Sim::new(seed);
    let ms = sim.add_node(
        map_server("ms-mr", vec![site("branch", KEY, &["10.1.0.0/16"]), site("dc", KEY, &["10.2.0.0/16"])]),
        &[ip(MS)],
    );
    let set = || vec![("10.2.1.0/24", vec![rloc(P1, 1, 100), rloc(P2, 2, 100)])];
    let x1 = sim.add_node(etr("xtr-d1", MS, KEY, set(), 0xd1), &[ip(P1)]);
    let x2 = sim.add_node(etr("xtr-d2", MS, KEY, set(), 0xd2), &[ip(P2)]);
    let mut branch = xtr("xtr-b", MS, KEY, vec![("10.1.1.0/24", vec![rloc(ITR, 1, 100)])], 0xb, ITR);
    let probing = ProbingConfig { fast: Some(FastFailover::new(vec![ip(P1), ip(P2)])), ..Default::default() };
    branch.itr = branch.itr.map(|i| ItrConfig { probing: Some(probing), ..i });
    let b = sim.add_node(branch, &[ip(ITR)]);
    let c1 = sim.add_host("c1", ip(C1), 0, &[b]).expect("xtr-b is a node");
    let d1 = sim.add_host("d1", ip(D1), 0, &[x1, x2]).expect("the DC xTRs are nodes");
    for x in [x1, x2] {
        sim.set_link_delay(b, x, WAN);
    }
    for (h, x) in [(c1, b), (d1, x1), (d1, x2)] {
        sim.set_link_delay(h, x, Duration::from_micros(100));
    }
    sim.run_for(Duration::from_secs(2));

    let start = sim.elapsed();
    let (cut, repaired) = (start + CUT_AT, start + REPAIR_AT);
    let mut seq: u32 = 0;
    while sim.elapsed() < start + STREAM_FOR {
        if sim.elapsed() == cut {
            sim.partition(b, x1, true);
        }
        if sim.elapsed() == repaired {
            sim.partition(b, x1, false);
        }
        sim.send_packet(c1, udp(ip(C1), 40000, ip(D1), 5001, &seq.to_be_bytes()));
        seq += 1;
        sim.run_for(EVERY);
    }
    sim.run_for(Duration::from_millis(100));

    let measured = measure(&sim, b, d1, cut, repaired, seq);
    let tables = registrations(&sim, ms)
        + &map_cache(&sim, b)
        + &locators(&sim, b)
        + &data_plane(&sim, &[b, x1, x2], &[c1, d1])
        + &measured_table(&measured);
    let topology = vec![
        "ms-mr   192.0.2.10    Map-Server + Map-Resolver, sites branch 10.1.0.0/16 and dc 10.2.0.0/16".into(),
        format!("xtr-d1  {P1}  ETR for 10.2.1.0/24, the primary locator (priority 1)"),
        format!("xtr-d2  {P2}  ETR for the same prefix, the backup (priority 2)"),
        format!(
            "xtr-b   {ITR}  branch xTR, probes both locators every 200 ms, down after 3 misses; {} ms away",
            WAN.as_millis()
        ),
        format!("c1      {C1}     client: one UDP packet to D1 every {} ms", EVERY.as_millis()),
        format!("d1      {D1}      server behind both ETRs; xtr-b <-> xtr-d1 cut at +1 s, back at +3 s"),
    ];
    let mut outcome = Outcome::new(sim, topology, vec![c1, b, ms, x1, x2, d1], tables);
    // The story: the cut, the switch to the backup, the repair and the switch back.
    let around = |t: Duration| (t.saturating_sub(Duration::from_millis(15)), t + Duration::from_millis(25));
    outcome.windows =
        [Some(cut), measured.failover.map(|f| cut + f), Some(repaired), measured.back.map(|b| repaired + b)]
            .into_iter()
            .flatten()
            .map(around)
            .collect();
    // And every probe from the cut until traffic is back: the misses, the replies.
    let end = measured.back.map_or(repaired, |b| repaired + b);
    outcome.probe_windows = vec![(cut, end)];
    FailedOver { outcome, measured }
}

fn measure(sim: &Sim, b: Id, d1: Id, cut: Duration, repaired: Duration, sent: u32) -> Measured {
    let from_itr = || sim.trace().iter().filter(|e| e.from == b && e.is_encapsulated());
    let first_to = |rloc: &str, after: Duration| from_itr().find(|e| e.sent >= after && e.dst.ip() == ip(rloc));
    let failover = first_to(P2, cut).map(|e| e.sent - cut);
    let back = first_to(P1, repaired).map(|e| e.sent - repaired);
    let got: Vec<Duration> = sim.received(d1).iter().map(|r| r.0).collect();
    let gap = got.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default();
    Measured { cut, repaired, failover, back, gap, sent, delivered: got.len() as u32 }
}

/// The ITR's view of each locator (`loci show rlocs`).
fn locators(sim: &Sim, b: Id) -> String {
    let Some(p) = sim.node(b).itr().and_then(|i| i.prober()) else { return String::new() };
    // The prober keeps its locators in a hash map: sorted, for a reproducible table.
    let mut states: Vec<_> = p.locators().collect();
    states.sort_by_key(|(addr, _)| *addr);
    let rows: Vec<Vec<String>> = states
        .into_iter()
        .map(|(addr, s)| {
            vec![
                addr.to_string(),
                if s.up { "up" } else { "down" }.into(),
                s.rtt.map_or_else(|| "-".into(), |r| format!("{:.1} ms", r.as_secs_f64() * 1e3)),
                s.probes.to_string(),
                s.replies.to_string(),
            ]
        })
        .collect();
    let st = p.stats();
    let title = format!(
        "Locators probed by {} (probes {}, replies {}, missed {}, down {}, up {})",
        sim.name(b),
        st.probes_sent,
        st.replies,
        st.misses,
        st.downs,
        st.ups
    );
    table(&title, &["LOCATOR", "STATE", "RTT", "PROBES", "REPLIES"], &rows)
}

fn measured_table(m: &Measured) -> String {
    let ms = |d: Option<Duration>| d.map_or_else(|| "never".into(), |d| format!("{:.0} ms", d.as_secs_f64() * 1e3));
    let at = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1e3);
    let rows = vec![
        vec![format!("primary's link cut at {}: first packet on the backup after", at(m.cut)), ms(m.failover)],
        vec![format!("link back at {}: first packet on the primary again after", at(m.repaired)), ms(m.back)],
        vec!["longest time D1 went without a packet".into(), ms(Some(m.gap))],
        vec!["packets sent / delivered".into(), format!("{} / {}", m.sent, m.delivered)],
    ];
    table("Failover (virtual time)", &["MEASURE", "VALUE"], &rows)
}

#[cfg(test)]
mod tests {
    use loci_core::locator::Families;
    use loci_core::map_cache::Forward;

    use super::super::moving::tests::{after, lines};
    use std::net::IpAddr;

    use super::*;

    /// What the ITR's data plane sends D1's packets to now.
    fn locator_now(sim: &Sim, itr: Id) -> Option<IpAddr> {
        let snap = sim.node(itr).itr()?.reader().load_full();
        match snap.forward(0, ip(D1), 0, Families::ALL) {
            Forward::Encapsulate(a) => Some(a),
            _ => None,
        }
    }

    #[test]
    fn fails_over_within_a_second_and_comes_back() {
        let f = super::failover(1);
        let m = f.measured;
        let failover = m.failover.expect("traffic moved to the backup");
        assert!(failover <= Duration::from_secs(1), "{m:?}");
        // Cut at a probe phase: at least the three missed probes (600 ms).
        assert!(failover >= Duration::from_millis(400), "{m:?}");
        let back = m.back.expect("traffic came back");
        assert!(back <= Duration::from_millis(300), "{m:?}");
        assert!(m.gap <= Duration::from_secs(1) + super::EVERY, "{m:?}");
        // Lost: only what went to the primary while it was cut and not yet marked down.
        let lost = m.sent - m.delivered;
        assert!(lost as u128 <= failover.as_millis() / super::EVERY.as_millis() + 2, "{m:?}");
        assert_eq!(locator_now(&f.outcome.sim, f.outcome.sim.id("xtr-b").unwrap()), Some(ip(super::P1)));
        // The ladder: probes to the primary go unanswered, data moves to xtr-d2, then back.
        let steps = lines(&f.outcome);
        let cut = f.outcome.sim.trace().iter().position(|e| e.sent >= m.cut).unwrap();
        let to_backup = after(&steps, cut, "xtr-b>xtr-d2 LISP data");
        after(&steps, to_backup, "xtr-b>xtr-d1 LISP data");
        let stats =
            f.outcome.sim.node(f.outcome.sim.id("xtr-b").unwrap()).itr().unwrap().prober().unwrap().stats().clone();
        assert_eq!((stats.downs, stats.ups), (1, 1));
        assert!(f.outcome.tables.contains("Locators probed by xtr-b"), "{}", f.outcome.tables);
    }

    #[test]
    fn deterministic() {
        let s = &super::SCENARIO;
        let (a, b) = (super::run(7), super::run(7));
        assert_eq!(super::super::render(s, 7, &a), super::super::render(s, 7, &b));
    }
}
