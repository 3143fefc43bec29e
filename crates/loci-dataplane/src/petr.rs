//! The Proxy-ETR's check on the decapsulation path (RFC 6832 §6.1); the policy itself is
//! [`loci_core::petr::RelayPolicy`]. Relayed packets are written to the TUN device like any
//! decapsulated packet and the kernel routes them on natively (the node forwards IP), so the
//! TTL goes down and the node's routing and filters apply as to any routed packet.

use loci_core::packet;
use loci_core::petr::{Relay, RelayPolicy};

/// Whether the inner packet of instance `iid` must be dropped: relaying is on, it is not for
/// one of our EIDs, and its source is no EID of a site we serve (or it has no IP header).
#[inline]
pub fn refused(policy: &RelayPolicy, iid: u32, inner: &[u8]) -> bool {
    if !policy.enabled {
        return false;
    }
    match packet::addresses(inner) {
        Some((src, dst)) => policy.check(iid, src, dst) == Relay::Refuse,
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use loci_core::eid::EidPrefix;

    use super::*;

    fn v4(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 20, 0, 0, 0, 0, 64, 17, 0, 0];
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        p
    }

    #[test]
    fn refuses_strangers_and_garbage_only_when_relaying() {
        let served = EidPrefix::new(0, "10.1.0.0/16".parse().unwrap());
        let policy = RelayPolicy { enabled: true, local: vec![], sources: vec![served] };
        assert!(!refused(&policy, 0, &v4([10, 1, 1, 10], [100, 64, 0, 10])));
        assert!(refused(&policy, 0, &v4([192, 0, 2, 66], [100, 64, 0, 10])));
        assert!(refused(&policy, 0, &[0x45, 0, 0]), "no IP header: nothing to check, dropped");
        let plain = RelayPolicy::default();
        assert!(!refused(&plain, 0, &v4([192, 0, 2, 66], [100, 64, 0, 10])));
    }
}
