//! Proxy tunnel routers (RFC 6832): the per-packet decisions of an ITR that sends non-LISP
//! traffic through Proxy-ETRs, and of a Proxy-ETR that relays it. Pure functions, so that the
//! data plane and the simulator decide alike.

use std::net::IpAddr;

use crate::eid::EidPrefix;
use crate::locator::Families;
use crate::map_cache::Forward;

/// The proxy settings of an xTR's data plane.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Proxy {
    /// Where the ITR sends non-LISP traffic.
    pub petrs: Petrs,
    /// Whether (and for whom) the ETR relays as a Proxy-ETR.
    pub relay: RelayPolicy,
}

/// The Proxy-ETRs an ITR sends non-LISP traffic to (`petr = [...]` under `[xtr]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Petrs {
    addrs: Vec<IpAddr>,
}

impl Petrs {
    pub fn new(addrs: Vec<IpAddr>) -> Self {
        Petrs { addrs }
    }

    pub fn is_empty(&self) -> bool {
        self.addrs.is_empty()
    }

    /// The map-cache's verdict with the Proxy-ETRs applied: native-forward becomes
    /// encapsulation to a PETR of a family we have, chosen by flow hash so that a flow keeps
    /// its PETR (RFC 6832 §6: traffic to non-LISP sites goes through the PETR). Without a
    /// usable PETR the packet goes out natively as before.
    #[inline]
    pub fn apply(&self, verdict: Forward, flow: u32, families: Families) -> Forward {
        if verdict != Forward::NativeForward || self.addrs.is_empty() {
            return verdict;
        }
        let n = self.addrs.iter().filter(|a| families.has(**a)).count();
        if n == 0 {
            return verdict;
        }
        let k = flow as usize % n;
        match self.addrs.iter().filter(|a| families.has(**a)).nth(k) {
            Some(&a) => Forward::Encapsulate(a),
            None => verdict,
        }
    }
}

/// What a Proxy-ETR does with a decapsulated packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relay {
    /// For one of our own EIDs (or relaying is off): deliver as any ETR does.
    Deliver,
    /// Not for us, from a site we serve: forward natively.
    Forward,
    /// Not for us, and the source is no EID of a site we serve: drop (RFC 6832 §6.1, never an
    /// open relay).
    Refuse,
}

/// The relay policy of a Proxy-ETR: our own EID prefixes and those of the sites we relay for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelayPolicy {
    /// Off: every packet is delivered (a plain ETR).
    pub enabled: bool,
    /// Our database's EID prefixes.
    pub local: Vec<EidPrefix>,
    /// The EID prefixes of the sites we relay for.
    pub sources: Vec<EidPrefix>,
}

impl RelayPolicy {
    /// The verdict for an inner packet from `src` to `dst` in instance `iid`.
    pub fn check(&self, iid: u32, src: IpAddr, dst: IpAddr) -> Relay {
        let within = |list: &[EidPrefix], a: IpAddr| list.iter().any(|p| p.iid == iid && p.contains(a));
        if !self.enabled || within(&self.local, dst) {
            Relay::Deliver
        } else if within(&self.sources, src) {
            Relay::Forward
        } else {
            Relay::Refuse
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::map_cache::DropReason;

    fn pfx(iid: u32, s: &str) -> EidPrefix {
        EidPrefix::new(iid, s.parse().unwrap())
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn native_forward_goes_to_a_petr_of_our_family_by_flow() {
        let petrs = Petrs::new(vec![ip("192.0.2.20"), ip("2001:db8::20"), ip("192.0.2.21")]);
        let v4 = Families { v4: true, v6: false };
        let chosen: Vec<Forward> = (0..4).map(|f| petrs.apply(Forward::NativeForward, f, v4)).collect();
        assert_eq!(
            chosen,
            [ip("192.0.2.20"), ip("192.0.2.21"), ip("192.0.2.20"), ip("192.0.2.21")].map(Forward::Encapsulate)
        );
        let v6 = Families { v4: false, v6: true };
        assert_eq!(petrs.apply(Forward::NativeForward, 7, v6), Forward::Encapsulate(ip("2001:db8::20")));
        // Other verdicts stand; without PETRs (or of our family) native forwarding stays.
        for v in [Forward::Miss, Forward::Encapsulate(ip("203.0.113.1")), Forward::Drop(DropReason::NegativeAction)] {
            assert_eq!(petrs.apply(v, 1, Families::ALL), v);
        }
        assert_eq!(Petrs::default().apply(Forward::NativeForward, 1, v4), Forward::NativeForward);
        let only_v6 = Petrs::new(vec![ip("2001:db8::20")]);
        assert_eq!(only_v6.apply(Forward::NativeForward, 1, v4), Forward::NativeForward);
    }

    #[test]
    fn a_petr_relays_only_for_the_sites_it_serves() {
        let policy = RelayPolicy {
            enabled: true,
            local: vec![pfx(0, "10.9.0.0/24")],
            sources: vec![pfx(0, "10.1.0.0/16"), pfx(7, "10.2.0.0/16")],
        };
        assert_eq!(policy.check(0, ip("10.1.1.10"), ip("198.51.100.5")), Relay::Forward);
        assert_eq!(policy.check(7, ip("10.2.1.10"), ip("198.51.100.5")), Relay::Forward);
        // Open relay attempts: a source outside every served site, or served in another instance.
        assert_eq!(policy.check(0, ip("203.0.113.66"), ip("198.51.100.5")), Relay::Refuse);
        assert_eq!(policy.check(0, ip("10.2.1.10"), ip("198.51.100.5")), Relay::Refuse);
        // Our own EIDs are delivered whatever the source.
        assert_eq!(policy.check(0, ip("203.0.113.66"), ip("10.9.0.1")), Relay::Deliver);
        let off = RelayPolicy { enabled: false, ..policy };
        assert_eq!(off.check(0, ip("203.0.113.66"), ip("198.51.100.5")), Relay::Deliver);
    }
}
