//! Small reads and edits of inner IPv4/IPv6 headers: the ITR's first look at a packet (the
//! data plane's workers and the simulator call the same functions).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use loci_wire::ecm::checksum;

/// Source and destination of an IPv4 or IPv6 packet.
#[inline]
pub fn addresses(p: &[u8]) -> Option<(IpAddr, IpAddr)> {
    match p.first()? >> 4 {
        4 if p.len() >= 20 => {
            let a = |at: usize| IpAddr::V4(Ipv4Addr::new(p[at], p[at + 1], p[at + 2], p[at + 3]));
            Some((a(12), a(16)))
        }
        6 if p.len() >= 40 => {
            let a = |at: usize| {
                let mut b = [0u8; 16];
                b.copy_from_slice(&p[at..at + 16]);
                IpAddr::V6(Ipv6Addr::from(b))
            };
            Some((a(8), a(24)))
        }
        _ => None,
    }
}

/// Whether `dst` is a destination an ITR may look up: not multicast, broadcast, unspecified or
/// link-local.
#[inline]
pub fn routable(dst: IpAddr) -> bool {
    match dst {
        IpAddr::V4(a) => !(a.is_multicast() || a.is_broadcast() || a.is_unspecified() || a.is_link_local()),
        IpAddr::V6(a) => !(a.is_multicast() || a.is_unspecified() || a.is_unicast_link_local()),
    }
}

/// Lowers the TTL / hop limit by one, as a router forwarding the packet does; false when it
/// would reach 0 (the packet must then be dropped).
pub fn decrement_ttl(p: &mut [u8]) -> bool {
    match p.first().map(|v| v >> 4) {
        Some(4) if p.len() >= 20 => {
            let ihl = usize::from(p[0] & 0x0f) * 4;
            if p[8] <= 1 || ihl < 20 || p.len() < ihl {
                return false;
            }
            p[8] -= 1;
            p[10..12].copy_from_slice(&[0, 0]);
            let c = checksum::checksum(&p[..ihl]);
            p[10..12].copy_from_slice(&c.to_be_bytes());
            true
        }
        Some(6) if p.len() >= 40 => {
            if p[7] <= 1 {
                return false;
            }
            p[7] -= 1;
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(ttl: u8) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 20, 0, 0, 0x40, 0, ttl, 17, 0, 0, 10, 1, 1, 2, 10, 2, 2, 3];
        let c = checksum::checksum(&p);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        p
    }

    #[test]
    fn addresses_of_both_families() {
        assert_eq!(addresses(&v4(64)), Some(("10.1.1.2".parse().unwrap(), "10.2.2.3".parse().unwrap())));
        let mut p6 = vec![0u8; 40];
        p6[0] = 0x60;
        p6[23] = 1;
        p6[39] = 2;
        assert_eq!(addresses(&p6), Some(("::1".parse().unwrap(), "::2".parse().unwrap())));
        assert_eq!(addresses(&[0x45; 19]), None);
        assert_eq!(addresses(&[]), None);
    }

    #[test]
    fn only_unicast_beyond_the_link_is_routable() {
        for a in ["10.2.2.2", "2001:db8::1", "192.0.2.255"] {
            assert!(routable(a.parse().unwrap()), "{a}");
        }
        for a in ["224.0.0.22", "255.255.255.255", "0.0.0.0", "169.254.1.1", "ff02::16", "fe80::1", "::"] {
            assert!(!routable(a.parse().unwrap()), "{a}");
        }
    }

    #[test]
    fn ttl_decrement_keeps_the_checksum_valid() {
        let mut p = v4(64);
        assert!(decrement_ttl(&mut p));
        assert_eq!(p[8], 63);
        assert_eq!(checksum::checksum(&p), 0);
        let mut p = v4(1);
        assert!(!decrement_ttl(&mut p));
        let mut p6 = vec![0u8; 40];
        p6[0] = 0x60;
        p6[7] = 2;
        assert!(decrement_ttl(&mut p6));
        assert!(!decrement_ttl(&mut p6));
    }
}
