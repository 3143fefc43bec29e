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
