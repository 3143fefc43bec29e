//! Locator choice (RFC 9300 §9, §12): which RLOC of a mapping carries a given flow.
//!
//! The lowest usable priority wins (255 never carries unicast; unreachable locators and
//! families this ITR cannot send on are skipped). Within that priority, a weighted rendezvous
//! (highest-random-weight) hash of the inner 5-tuple picks one locator: every locator scores the
//! flow independently and the best score wins, so a flow always takes the same locator, and
//! when a locator leaves only its own flows move (the others keep their scores and winners).
//!
//! Weights (RFC 9301 §5.4): relative shares of the flows. When every locator of the chosen
//! priority has weight 0 the ITR decides, and they share equally (RFC 9300 §9); when some are
//! non-zero, the weight-0 ones get no flows.
//!
//! Everything here runs per packet on a flow-cache miss: no allocation, no locks.

use std::net::IpAddr;

use loci_wire::Locator;

/// An RLOC of a cached mapping, ready for the per-packet choice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rloc {
    pub addr: IpAddr,
    pub priority: u8,
    pub weight: u8,
    /// R bit of the Map-Reply (RFC 9300 §9: clear means "do not encapsulate to it").
    pub reachable: bool,
    /// This ITR's own verdict: RLOC probing (RFC 9301 §7.1) or locator-status bits (RFC 9300
    /// §10) found the locator down. Set by the map-cache, never from a Map-Reply.
    pub down: bool,
    /// This locator's identity in the rendezvous hash (a hash of its address), so a locator
    /// scores a flow the same whatever the other locators are.
    key: u64,
}

impl Rloc {
    pub fn new(addr: IpAddr, priority: u8, weight: u8, reachable: bool) -> Self {
        let key = match addr {
            IpAddr::V4(a) => mix(u64::from(u32::from(a)), 4),
            IpAddr::V6(a) => {
                let v = u128::from(a);
                mix(v as u64 ^ mix((v >> 64) as u64, 6), 6)
            }
        };
        Rloc { addr, priority, weight, reachable, down: false, key }
    }

    /// The RLOC of a Map-Reply locator record; `None` for addresses that are not IP (LCAFs we
    /// cannot encapsulate to).
    pub fn from_wire(l: &Locator) -> Option<Self> {
        Some(Rloc::new(l.address.ip()?, l.priority, l.weight, l.reachable))
    }
}

/// The address families this ITR can send encapsulated packets on (it has an RLOC of that
/// family and a route).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Families {
    pub v4: bool,
    pub v6: bool,
}

impl Families {
    pub const ALL: Families = Families { v4: true, v6: true };

    /// The families of `addrs`.
    pub fn of(addrs: &[IpAddr]) -> Self {
        Families { v4: addrs.iter().any(IpAddr::is_ipv4), v6: addrs.iter().any(IpAddr::is_ipv6) }
    }

    #[inline]
    pub fn has(self, addr: IpAddr) -> bool {
        if addr.is_ipv4() {
            self.v4
        } else {
            self.v6
        }
    }
}

/// Priority 255: never used for unicast (RFC 9301 §5.4).
pub const UNUSABLE_PRIORITY: u8 = 255;

#[inline]
fn usable(r: &Rloc, families: Families, verdict: bool) -> bool {
    r.priority != UNUSABLE_PRIORITY && r.reachable && !(verdict && r.down) && families.has(r.addr)
}

/// The index in `rlocs` of the locator that carries the flow with hash `flow`, or `None` when
/// no locator is usable.
///
/// Locators found down by probing are skipped; when every locator is down the set is used as
/// if nothing had been probed: sending to a locator that may be dead loses nothing over
/// dropping, and a peer that does not answer probes (a filtered port 4342) is not cut off.
pub fn choose(rlocs: &[Rloc], flow: u32, families: Families) -> Option<usize> {
    choose_among(rlocs, flow, families, true).or_else(|| choose_among(rlocs, flow, families, false))
}

#[inline]
fn choose_among(rlocs: &[Rloc], flow: u32, families: Families, verdict: bool) -> Option<usize> {
    let usable = |r: &Rloc| usable(r, families, verdict);
    let best = rlocs.iter().filter(|r| usable(r)).map(|r| r.priority).min()?;
    let in_group = |r: &Rloc| r.priority == best && usable(r);
    let weighted = rlocs.iter().any(|r| in_group(r) && r.weight > 0);
    // Candidates: the group's weighted locators, or all of it when every weight is 0.
    let candidate = |r: &Rloc| in_group(r) && (!weighted || r.weight > 0);
    let mut weights = rlocs.iter().filter(|r| candidate(r)).map(|r| r.weight);
    let first = weights.next()?;
    let equal = weights.all(|w| w == first);
    let flow = u64::from(flow);
    if equal {
        // Equal shares: the highest hash wins, integer arithmetic only.
        return rlocs
            .iter()
            .enumerate()
            .filter(|(_, r)| candidate(r))
            .max_by_key(|(i, r)| (mix(flow, r.key), std::cmp::Reverse(*i)))
            .map(|(i, _)| i);
    }
    // Weighted rendezvous: score w / -ln(u), u uniform in (0, 1). The winner is locator i with
    // probability w_i / sum(w) (the scores are exponential variables of rate 1/w).
    let mut winner = None;
    let mut top = f64::NEG_INFINITY;
    for (i, r) in rlocs.iter().enumerate().filter(|(_, r)| candidate(r)) {
        let u = ((mix(flow, r.key) >> 11) as f64 + 0.5) * (1.0 / (1u64 << 53) as f64);
        let score = f64::from(r.weight) / -u.ln();
        if score > top {
            top = score;
            winner = Some(i);
        }
    }
    winner
}

/// A 64-bit mixer (the murmur3/splitmix finalizer over a keyed input): cheap, and every input
/// bit affects every output bit.
#[inline]
fn mix(a: u64, b: u64) -> u64 {
    let mut z = a ^ b.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Protocols whose first 4 bytes are source and destination ports.
fn has_ports(proto: u8) -> bool {
    matches!(proto, 6 | 17 | 132 | 136) // TCP, UDP, SCTP, UDP-Lite
}

/// The hash of an inner IPv4 or IPv6 packet's 5-tuple (addresses, protocol and, for TCP, UDP,
/// SCTP and UDP-Lite, ports; RFC 9300 §12). Fragments hash on addresses and protocol only, so
/// all fragments of a packet take the same locator. A packet too short or of another version
/// hashes whatever it has: the result is a flow identifier, not a verdict.
///
/// Deterministic (no per-process key): the simulator replays byte for byte, and two ITRs of a
/// site spread flows the same way.
pub fn flow_hash(packet: &[u8]) -> u32 {
    let b = packet;
    let (mut h, proto, ports) = match b.first().map(|v| v >> 4) {
        Some(4) if b.len() >= 20 => {
            let ihl = usize::from(b[0] & 0x0f) * 4;
            let frag = u16::from_be_bytes([b[6], b[7]]) & 0x3fff != 0; // MF or an offset
            let addrs = u64::from_be_bytes([b[12], b[13], b[14], b[15], b[16], b[17], b[18], b[19]]);
            let proto = b[9];
            let ports = (!frag && has_ports(proto)).then(|| ports_at(b, ihl)).flatten();
            (mix(addrs, 4), proto, ports)
        }
        Some(6) if b.len() >= 40 => {
            let word = |i: usize| {
                u64::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3], b[i + 4], b[i + 5], b[i + 6], b[i + 7]])
            };
            let h = mix(mix(mix(word(8), word(16)), word(24)), word(32));
            let (proto, l4) = ipv6_upper_layer(b);
            let ports = l4.filter(|_| has_ports(proto)).and_then(|at| ports_at(b, at));
            (h, proto, ports)
        }
        _ => (mix(b.len() as u64, 0), 0, None),
    };
    h = mix(h, u64::from(proto) << 32 | u64::from(ports.unwrap_or(0)));
    (h >> 32) as u32
}

fn ports_at(b: &[u8], at: usize) -> Option<u32> {
    let p = b.get(at..at + 4)?;
    Some(u32::from_be_bytes([p[0], p[1], p[2], p[3]]))
}

/// The upper-layer protocol of an IPv6 packet and where its header starts, skipping the
/// extension headers a host commonly sends (at most 8). `None` for the offset when the packet
/// is a fragment, the chain is truncated, or it is too long to follow.
fn ipv6_upper_layer(b: &[u8]) -> (u8, Option<usize>) {
    let mut next = b[6];
    let mut at = 40;
    for _ in 0..8 {
        match next {
            // Hop-by-hop, routing, destination options: length in 8-byte units after 8.
            0 | 43 | 60 => {
                let Some(h) = b.get(at..at + 2) else { return (next, None) };
                next = h[0];
                at += 8 + usize::from(h[1]) * 8;
            }
            // Fragment header: no ports, whichever fragment this is.
            44 => return (b.get(at).copied().unwrap_or(next), None),
            _ => return (next, Some(at)),
        }
    }
    (next, None)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal IPv4 or IPv6 packet with a UDP/TCP header (no payload checks are made).
    pub(crate) fn packet(src: IpAddr, dst: IpAddr, proto: u8, sport: u16, dport: u16, payload: usize) -> Vec<u8> {
        let mut p = match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let total = 20 + 8 + payload;
                let mut h = vec![0x45, 0, (total >> 8) as u8, total as u8, 0, 0, 0x40, 0, 64, proto, 0, 0];
                h.extend_from_slice(&s.octets());
                h.extend_from_slice(&d.octets());
                let c = loci_wire::ecm::checksum::checksum(&h);
                h[10..12].copy_from_slice(&c.to_be_bytes());
                h
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let plen = 8 + payload;
                let mut h = vec![0x60, 0, 0, 0, (plen >> 8) as u8, plen as u8, proto, 64];
                h.extend_from_slice(&s.octets());
                h.extend_from_slice(&d.octets());
                h
            }
            _ => panic!("mixed families"),
        };
        p.extend_from_slice(&sport.to_be_bytes());
        p.extend_from_slice(&dport.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 0]);
        p.resize(p.len() + payload, 0xab);
        p
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn r(addr: &str, priority: u8, weight: u8) -> Rloc {
        Rloc::new(ip(addr), priority, weight, true)
    }

    /// 10,000 distinct UDP flows between two /16s.
    fn flows() -> Vec<u32> {
        (0..10_000u32)
            .map(|i| {
                let src = IpAddr::from([10, 1, (i >> 8) as u8, i as u8]);
                let dst = IpAddr::from([10, 2, (i % 7) as u8, (i % 251) as u8]);
                flow_hash(&packet(src, dst, 17, 1024 + (i % 50_000) as u16, 53, 10))
            })
            .collect()
    }

    fn shares(rlocs: &[Rloc], flows: &[u32]) -> Vec<f64> {
        let mut n = vec![0usize; rlocs.len()];
        for &f in flows {
            n[choose(rlocs, f, Families::ALL).expect("a usable locator")] += 1;
        }
        n.into_iter().map(|c| c as f64 / flows.len() as f64).collect()
    }

    #[test]
    fn distribution_follows_weights() {
        let f = flows();
        // RFC 9301 §5.4's example: 30, 20, 20, 10 -> 37.5 %, 25 %, 25 %, 12.5 %.
        let rlocs = [r("192.0.2.1", 1, 30), r("192.0.2.2", 1, 20), r("192.0.2.3", 1, 20), r("2001:db8::4", 1, 10)];
        let got = shares(&rlocs, &f);
        for (g, want) in got.iter().zip([0.375, 0.25, 0.25, 0.125]) {
            // One binomial standard deviation over 10,000 flows is under 0.5 %.
            assert!((g - want).abs() < 0.02, "{got:?}");
        }
        // All-zero weights: equal shares (RFC 9300 §9).
        let zero = [r("192.0.2.1", 1, 0), r("192.0.2.2", 1, 0), r("192.0.2.3", 1, 0)];
        for g in shares(&zero, &f) {
            assert!((g - 1.0 / 3.0).abs() < 0.02, "{g}");
        }
        // Equal non-zero weights take the integer path and are equal too.
        for g in shares(&[r("192.0.2.1", 1, 5), r("192.0.2.2", 1, 5)], &f) {
            assert!((g - 0.5).abs() < 0.02, "{g}");
        }
    }

    #[test]
    fn priority_reachability_and_families() {
        let f = 12345;
        let mut set = [r("192.0.2.1", 2, 50), r("192.0.2.2", 1, 50), r("2001:db8::3", 0, 50), r("192.0.2.4", 255, 50)];
        assert_eq!(choose(&set, f, Families::ALL), Some(2));
        assert_eq!(choose(&set, f, Families { v4: true, v6: false }), Some(1), "no IPv6 RLOC of ours");
        set[1].reachable = false;
        assert_eq!(choose(&set, f, Families { v4: true, v6: false }), Some(0), "R bit clear: skipped");
        set[0].priority = 255;
        assert_eq!(choose(&set, f, Families { v4: true, v6: false }), None, "255 never carries unicast");
        assert_eq!(choose(&[], f, Families::ALL), None);
        // Mixed zero and non-zero weights: the zero ones get nothing.
        let mixed = [r("192.0.2.1", 1, 0), r("192.0.2.2", 1, 10)];
        assert!(flows().iter().all(|&f| choose(&mixed, f, Families::ALL) == Some(1)));
    }

    #[test]
    fn down_locators_are_skipped_unless_all_are_down() {
        let f = flows();
        let mut set = [r("192.0.2.1", 1, 50), r("192.0.2.2", 1, 50), r("192.0.2.3", 1, 50), r("192.0.2.4", 2, 50)];
        let before: Vec<usize> = f.iter().map(|&h| choose(&set, h, Families::ALL).unwrap()).collect();
        set[0].down = true;
        for (&h, &b) in f.iter().zip(&before) {
            let now = choose(&set, h, Families::ALL).unwrap();
            if b == 0 {
                assert!(now == 1 || now == 2, "moved within its priority");
            } else {
                assert_eq!(now, b, "a flow on a surviving locator stayed put");
            }
        }
        set[1].down = true;
        set[2].down = true;
        assert!(f.iter().all(|&h| choose(&set, h, Families::ALL) == Some(3)), "next priority");
        set[3].down = true;
        // All down: used as if unprobed.
        assert!(f.iter().zip(&before).all(|(&h, &b)| choose(&set, h, Families::ALL) == Some(b)));
        // The R bit still rules, even then.
        for r in &mut set[..3] {
            r.reachable = false;
        }
        assert!(f.iter().all(|&h| choose(&set, h, Families::ALL) == Some(3)));
    }

    #[test]
    fn flows_stick_and_move_minimally() {
        let f = flows();
        let full = [r("192.0.2.1", 1, 30), r("192.0.2.2", 1, 20), r("192.0.2.3", 1, 20), r("192.0.2.4", 1, 10)];
        let before: Vec<usize> = f.iter().map(|&h| choose(&full, h, Families::ALL).unwrap()).collect();
        // The same flow, asked again: the same locator.
        assert!(f.iter().zip(&before).all(|(&h, &b)| choose(&full, h, Families::ALL) == Some(b)));
        // Locator 1 leaves (removed, or marked unreachable): only its flows move.
        let mut down = full.clone();
        down[1].reachable = false;
        let removed = [full[0].clone(), full[2].clone(), full[3].clone()];
        let mut moved_to = [0usize; 4];
        for (&h, &b) in f.iter().zip(&before) {
            let now_down = choose(&down, h, Families::ALL).unwrap();
            let now_removed = [0, 2, 3][choose(&removed, h, Families::ALL).unwrap()];
            assert_eq!(now_down, now_removed, "removal and unreachability agree");
            if b != 1 {
                assert_eq!(now_down, b, "a flow not on the lost locator stayed put");
            } else {
                moved_to[now_down] += 1;
            }
        }
        // Its flows spread over the others in proportion to their weights (30:20:10).
        let lost: usize = moved_to.iter().sum();
        assert!(lost > 1500, "{lost}");
        let share = |i: usize| moved_to[i] as f64 / lost as f64;
        assert!((share(0) - 0.5).abs() < 0.05 && (share(2) - 1.0 / 3.0).abs() < 0.05, "{moved_to:?}");
    }

    #[test]
    fn flow_hash_uses_the_five_tuple_only() {
        let (a, b) = (ip("10.0.0.1"), ip("10.0.0.2"));
        let base = flow_hash(&packet(a, b, 6, 1000, 80, 100));
        // Same 5-tuple, other payload size and TTL: same hash.
        let mut other = packet(a, b, 6, 1000, 80, 900);
        other[8] = 3;
        assert_eq!(flow_hash(&other), base);
        assert_ne!(flow_hash(&packet(a, b, 6, 1001, 80, 100)), base);
        assert_ne!(flow_hash(&packet(a, b, 6, 1000, 81, 100)), base);
        assert_ne!(flow_hash(&packet(b, a, 6, 1000, 80, 100)), base);
        assert_ne!(flow_hash(&packet(a, b, 17, 1000, 80, 100)), base);
        // ICMP: no ports, so bytes 20..24 do not matter.
        assert_eq!(flow_hash(&packet(a, b, 1, 1, 2, 10)), flow_hash(&packet(a, b, 1, 3, 4, 10)));
        // Fragments: addresses and protocol only.
        let mut frag = packet(a, b, 17, 5, 6, 10);
        frag[6] = 0x20; // MF
        let mut frag2 = packet(a, b, 17, 7, 8, 10);
        frag2[6] = 0x20;
        assert_eq!(flow_hash(&frag), flow_hash(&frag2));

        let (a6, b6) = (ip("2001:db8::1"), ip("2001:db8::2"));
        let h6 = flow_hash(&packet(a6, b6, 17, 1000, 53, 10));
        assert_eq!(flow_hash(&packet(a6, b6, 17, 1000, 53, 500)), h6);
        assert_ne!(flow_hash(&packet(a6, b6, 17, 1001, 53, 10)), h6);
        // A destination-options header before UDP: ports still found.
        let mut ext = packet(a6, b6, 60, 0, 0, 0);
        ext.truncate(40);
        ext.extend_from_slice(&[17, 0, 0, 0, 0, 0, 0, 0]);
        ext.extend_from_slice(&[0x03, 0xe9, 0, 53, 0, 8, 0, 0]);
        assert_eq!(flow_hash(&ext), flow_hash(&packet(a6, b6, 17, 1001, 53, 0)));
        // Garbage never panics.
        for n in 0..64 {
            let _ = flow_hash(&vec![0x4f; n]);
            let _ = flow_hash(&vec![0x60; n]);
        }
    }
}
