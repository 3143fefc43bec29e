//! `move-across`: VM H moves to a data centre whose subnet differs (no LAN extension); the
//! branch ITR does not subscribe, so it learns of the move the RFC 9301 §6 way: xTR-A, told by
//! the Map-Server, re-encapsulates the packets still arriving for H to xTR-B and sends the
//! branch ITR a Solicit-Map-Request; the ITR does not trust it but asks the mapping system
//! again (SMR-invoked Map-Request) and installs the answer. Packets that reached xTR-A before
//! the Map-Server's Map-Notify have nowhere to go: the only loss.

use loci_core::config::MobilityMode;

use super::moving::{self, Moved};
use super::{Outcome, Scenario};

pub const SCENARIO: Scenario = Scenario {
    name: "move-across",
    about: "a VM moves to another subnet mid-stream: away entry, SMR, SMR-invoked Map-Request",
    run,
};

fn moved(seed: u64) -> Moved {
    moving::run(seed, MobilityMode::AcrossSubnet, false)
}

fn run(seed: u64) -> Outcome {
    moved(seed).outcome
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::moving::tests::{after, lines};

    #[test]
    fn ladder_order_smr_path_and_bounded_loss() {
        let m = super::moved(1);
        let steps = lines(&m.outcome);
        let garp = steps.iter().rposition(|s| s == "h>xtr-b GARP").expect("H's gratuitous ARP at B");
        assert!(!steps[garp..].iter().any(|s| s == "xtr-b>xtr-a Map-Notify"), "no LAN extension, no group");
        let register = after(&steps, garp, "xtr-b>ms-mr Map-Register");
        let to_a = after(&steps, register, "ms-mr>xtr-a Map-Notify");
        assert!(!steps[garp..].iter().any(|s| s == "ms-mr>xtr-r Map-Notify"), "the branch ITR does not subscribe");
        let reencap = after(&steps, to_a, "xtr-a>xtr-b LISP data");
        let smr = after(&steps, reencap, "xtr-a>xtr-r Map-Request");
        let invoked = after(&steps, smr, "xtr-r>ms-mr ECM");
        let forwarded = after(&steps, invoked, "ms-mr>xtr-b ECM");
        after(&steps, forwarded, "xtr-b>xtr-r Map-Reply");
        let trace = super::super::json(&super::SCENARIO, 1, &m.outcome);
        let ecm = &trace["trace"].as_array().unwrap()[invoked];
        assert_eq!(ecm["fields"]["smr_invoked"], true, "{ecm}");
        let mm = m.measured;
        assert_eq!(mm.lost(), mm.lost_before_a_knew, "none lost once xtr-a had the away entry: {mm:?}");
        // The window is one Map-Server round trip from B and to A (2 ms each way).
        assert!(mm.lost() <= 5, "{mm:?}");
        let conv = mm.convergence.expect("converged");
        assert!(conv <= Duration::from_millis(50), "SMR convergence {conv:?}");
    }

    #[test]
    fn deterministic() {
        let s = &super::SCENARIO;
        let (a, b) = (super::run(7), super::run(7));
        assert_eq!(super::super::render(s, 7, &a), super::super::render(s, 7, &b));
    }
}
