//! `move-extended`: VM H moves between the two data centres of one site over a LAN extension
//! while a branch client streams to it. xTR-B sees H's gratuitous ARP, registers H and tells
//! xTR-A on the map-notify-group; the Map-Server moves the registration, notifies xTR-A and
//! publishes the new mapping to the subscribed branch ITR, which follows in one Map-Server to
//! branch delay. Packets already on their way to xTR-A are delivered over the extension until
//! it hears of the move, then re-encapsulated to xTR-B from its away entry, which also solicits
//! the branch ITR (SMR): with pub/sub on, both paths show; pub/sub gets there first.

use loci_core::config::MobilityMode;

use super::moving::{self, Moved};
use super::{Outcome, Scenario};

pub const SCENARIO: Scenario = Scenario {
    name: "move-extended",
    about: "a VM moves between data centres over a LAN extension mid-stream: pub/sub, away entry, SMR",
    run,
};

fn moved(seed: u64) -> Moved {
    moving::run(seed, MobilityMode::ExtendedSubnet, true)
}

fn run(seed: u64) -> Outcome {
    moved(seed).outcome
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::moving::tests::{after, lines};

    #[test]
    fn ladder_order_zero_loss_and_pubsub_convergence() {
        let m = super::moved(1);
        let steps = lines(&m.outcome);
        let garp = steps.iter().rposition(|s| s == "h>xtr-b GARP").expect("H's gratuitous ARP at B");
        // Detection, then at once the map-notify-group announcement and the Map-Register.
        let group = after(&steps, garp, "xtr-b>xtr-a Map-Notify");
        let register = after(&steps, garp, "xtr-b>ms-mr Map-Register");
        // The Map-Server notifies the old registrant and publishes to the subscriber.
        let to_a = after(&steps, register, "ms-mr>xtr-a Map-Notify");
        let publish = after(&steps, register, "ms-mr>xtr-r Map-Notify");
        after(&steps, publish, "xtr-r>ms-mr Map-Notify-Ack");
        // A re-encapsulated packets in flight and solicited the branch ITR.
        let reencap = after(&steps, group, "xtr-a>xtr-b LISP data");
        after(&steps, reencap, "xtr-a>xtr-r Map-Request");
        // A heard over the LAN extension first: it re-encapsulated before the Map-Server spoke.
        assert!(reencap < to_a, "{:?}", &steps[garp..to_a + 1]);
        let mm = m.measured;
        assert_eq!(mm.lost(), 0, "{mm:?}");
        assert!(mm.reencapsulated > 0, "{mm:?}");
        let conv = mm.convergence.expect("converged");
        assert!(conv <= Duration::from_millis(10), "pub/sub convergence {conv:?}");
        for want in ["10.1.9.10/32  dc", "203.0.113.2 p1/w100", "Away entries", "xtr-a  10.1.9.10/32  203.0.113.2"] {
            assert!(m.outcome.tables.contains(want), "{want}: {}", m.outcome.tables);
        }
    }

    #[test]
    fn deterministic() {
        let s = &super::SCENARIO;
        let (a, b) = (super::run(7), super::run(7));
        assert_eq!(super::super::render(s, 7, &a), super::super::render(s, 7, &b));
        assert_eq!(super::super::json(s, 7, &a), super::super::json(s, 7, &b));
    }
}
