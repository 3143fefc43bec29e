//! The packets of RFC 9300 §7.1's stateless MTU handling: an ICMP / ICMPv6 too-big for an
//! inner packet that may not be fragmented, and the fragments of one that may.

use std::net::IpAddr;

use loci_core::packet;

/// Largest ICMPv4 error (RFC 1812 §4.3.2.3: at most 576 bytes).
const ICMP4_MAX: usize = 576;
/// Largest ICMPv6 error (RFC 4443 §2.4(c): no more than the minimum IPv6 MTU).
const ICMP6_MAX: usize = 1280;
/// IPv4 flags: don't fragment, more fragments.
const DF: u16 = 0x4000;
const MF: u16 = 0x2000;

/// Whether `p` is an IPv4 packet without DF: it may be fragmented on the way.
pub fn may_fragment(p: &[u8]) -> bool {
    p.len() >= 20 && p[0] >> 4 == 4 && u16::from_be_bytes([p[6], p[7]]) & DF == 0
}

/// Writes into `out` the ICMP error telling the source of `orig` that packets of more than
/// `mtu` bytes do not get through: Fragmentation Needed (type 3, code 4) for IPv4, Packet Too
/// Big (type 2) for IPv6. Its source is `orig`'s destination: the packet goes into the TUN
/// device, where the kernel drops one from a local address as a martian, and the host's path
/// MTU cache needs only the quoted header to match. Returns false, writing nothing, where no
/// ICMP error may be sent (RFC 1122 §3.2.2, RFC 4443 §2.4(e)): about an ICMP error, a
/// non-first fragment, a source that is not unicast, or a malformed packet.
pub fn too_big(orig: &[u8], mtu: u16, out: &mut Vec<u8>) -> bool {
    let Some((src, dst)) = packet::addresses(orig) else { return false };
    if !unicast(src) {
        return false;
    }
    out.clear();
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let ihl = usize::from(orig[0] & 0x0f) * 4;
            let frag = u16::from_be_bytes([orig[6], orig[7]]);
            if frag & 0x1fff != 0 || (orig[9] == 1 && orig.get(ihl).is_some_and(|&t| icmp4_error(t))) {
                return false;
            }
            let quote = &orig[..orig.len().min(ICMP4_MAX - 28)];
            let total = (28 + quote.len()) as u16;
            out.extend_from_slice(&[0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0]);
            out[2..4].copy_from_slice(&total.to_be_bytes());
            out.extend_from_slice(&d.octets());
            out.extend_from_slice(&s.octets());
            let c = checksum(0, &out[..20]);
            out[10..12].copy_from_slice(&c.to_be_bytes());
            out.extend_from_slice(&[3, 4, 0, 0, 0, 0]);
            out.extend_from_slice(&mtu.to_be_bytes());
            out.extend_from_slice(quote);
            let c = checksum(0, &out[20..]);
            out[22..24].copy_from_slice(&c.to_be_bytes());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            // Only the first next header is looked at: an ICMPv6 error behind extension headers
            // is rare enough to be answered.
            if orig[6] == 58 && orig.get(40).is_some_and(|&t| t < 128) {
                return false;
            }
            let quote = &orig[..orig.len().min(ICMP6_MAX - 48)];
            let len = (8 + quote.len()) as u16;
            out.extend_from_slice(&[0x60, 0, 0, 0]);
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(&[58, 64]);
            out.extend_from_slice(&d.octets());
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&[2, 0, 0, 0]);
            out.extend_from_slice(&u32::from(mtu).to_be_bytes());
            out.extend_from_slice(quote);
            // Pseudo-header: addresses, upper-layer length, next header.
            let mut sum = checksum_sum(0, &out[8..40]);
            sum += u32::from(len) + 58;
            let c = fold(checksum_sum(sum, &out[40..]));
            out[42..44].copy_from_slice(&c.to_be_bytes());
        }
        _ => return false,
    }
    true
}

/// Cuts the IPv4 packet `p` into fragments of at most `max` bytes and hands each to `emit`
/// (RFC 791; a fragment's payload is a multiple of 8 bytes but the last). Every fragment
/// carries the whole header, options included. Returns false (emitting nothing) for a packet
/// that is not IPv4, is malformed, or whose header leaves no room in `max`.
pub fn fragment_v4(p: &[u8], max: usize, frag: &mut Vec<u8>, mut emit: impl FnMut(&[u8])) -> bool {
    if p.len() < 20 || p[0] >> 4 != 4 {
        return false;
    }
    let ihl = usize::from(p[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([p[2], p[3]]));
    if ihl < 20 || total < ihl || total > p.len() {
        return false;
    }
    let step = max.saturating_sub(ihl) / 8 * 8;
    if step == 0 {
        return false;
    }
    let flags = u16::from_be_bytes([p[6], p[7]]);
    let (first_offset, more_after) = (flags & 0x1fff, flags & MF != 0);
    let payload = &p[ihl..total];
    let mut start = 0;
    while start < payload.len() {
        let end = (start + step).min(payload.len());
        let last = end == payload.len();
        frag.clear();
        frag.extend_from_slice(&p[..ihl]);
        frag.extend_from_slice(&payload[start..end]);
        frag[2..4].copy_from_slice(&((ihl + end - start) as u16).to_be_bytes());
        let offset = first_offset + (start / 8) as u16;
        let flags = (flags & DF) | offset | if last && !more_after { 0 } else { MF };
        frag[6..8].copy_from_slice(&flags.to_be_bytes());
        frag[10..12].copy_from_slice(&[0, 0]);
        let c = checksum(0, &frag[..ihl]);
        frag[10..12].copy_from_slice(&c.to_be_bytes());
        emit(frag);
        start = end;
    }
    true
}

fn unicast(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(a) => !(a.is_unspecified() || a.is_multicast() || a.is_broadcast()),
        IpAddr::V6(a) => !(a.is_unspecified() || a.is_multicast()),
    }
}

/// ICMPv4 error types: destination unreachable, source quench, redirect, time exceeded,
/// parameter problem.
fn icmp4_error(t: u8) -> bool {
    matches!(t, 3 | 4 | 5 | 11 | 12)
}

fn checksum_sum(mut sum: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [b] = chunks.remainder() {
        sum += u32::from(*b) << 8;
    }
    sum
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The Internet checksum (RFC 1071) of `data`, on top of `sum`.
fn checksum(sum: u32, data: &[u8]) -> u16 {
    fold(checksum_sum(sum, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An IPv4 UDP packet of `len` bytes with the flags given, payload bytes counting up.
    fn v4(len: usize, flags: u16) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 0, 0, 0x2a, 0, 0, 64, 17, 0, 0, 10, 1, 1, 10, 10, 2, 1, 5];
        p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        p[6..8].copy_from_slice(&flags.to_be_bytes());
        let c = checksum(0, &p);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        p.extend((20..len).map(|i| i as u8));
        p
    }

    fn v6(len: usize, next: u8, first: u8) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0, 0, 0, next, 64];
        p[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
        p.extend_from_slice(&"2001:db8:a::10".parse::<std::net::Ipv6Addr>().unwrap().octets());
        p.extend_from_slice(&"2001:db8:b::5".parse::<std::net::Ipv6Addr>().unwrap().octets());
        p.push(first);
        p.resize(len, 0xab);
        p
    }

    #[test]
    fn icmpv4_fragmentation_needed_quotes_the_packet_and_checks_out() {
        let orig = v4(1500, DF);
        assert!(!may_fragment(&orig));
        let mut out = Vec::new();
        assert!(too_big(&orig, 1364, &mut out));
        assert_eq!(out.len(), ICMP4_MAX);
        assert_eq!(packet::addresses(&out), Some(("10.2.1.5".parse().unwrap(), "10.1.1.10".parse().unwrap())));
        assert_eq!(usize::from(u16::from_be_bytes([out[2], out[3]])), out.len());
        assert_eq!((out[9], out[20], out[21]), (1, 3, 4));
        assert_eq!(u16::from_be_bytes([out[26], out[27]]), 1364);
        assert_eq!(&out[28..48], &orig[..20]);
        assert_eq!(checksum(0, &out[..20]), 0, "IP header checksum");
        assert_eq!(checksum(0, &out[20..]), 0, "ICMP checksum");
        // Never about an ICMP error, a later fragment or from a broadcast source.
        let mut err = v4(600, DF);
        err[9] = 1;
        err[20] = 3;
        assert!(!too_big(&err, 1364, &mut out));
        err[20] = 8; // an echo request is answered
        assert!(too_big(&err, 1364, &mut out));
        assert!(!too_big(&v4(600, DF | 10), 1364, &mut out));
        let mut bcast = v4(600, DF);
        bcast[12..16].copy_from_slice(&[255; 4]);
        assert!(!too_big(&bcast, 1364, &mut out));
        assert!(!too_big(&[0x45, 0], 1364, &mut out));
    }

    #[test]
    fn icmpv6_packet_too_big_checks_out() {
        let orig = v6(1500, 17, 0);
        let mut out = Vec::new();
        assert!(too_big(&orig, 1400, &mut out));
        assert_eq!(out.len(), ICMP6_MAX);
        assert_eq!((out[6], out[40], out[41]), (58, 2, 0));
        assert_eq!(u32::from_be_bytes([out[44], out[45], out[46], out[47]]), 1400);
        assert_eq!(&out[8..24], &orig[24..40], "from the original destination");
        let mut sum = checksum_sum(0, &out[8..40]) + (out.len() as u32 - 40) + 58;
        sum = checksum_sum(sum, &out[40..]);
        assert_eq!(fold(sum), 0, "ICMPv6 checksum");
        assert!(!too_big(&v6(1500, 58, 1), 1400, &mut out), "about an ICMPv6 error");
        assert!(too_big(&v6(1500, 58, 128), 1400, &mut out), "an echo request is answered");
    }

    #[test]
    fn fragments_reassemble_to_the_original() {
        let orig = v4(1500, 0);
        assert!(may_fragment(&orig));
        let mut frags: Vec<Vec<u8>> = Vec::new();
        let mut buf = Vec::new();
        assert!(fragment_v4(&orig, 1364, &mut buf, |f| frags.push(f.to_vec())));
        assert_eq!(frags.len(), 2);
        let mut payload = Vec::new();
        for (i, f) in frags.iter().enumerate() {
            assert!(f.len() <= 1364);
            assert_eq!(checksum(0, &f[..20]), 0);
            assert_eq!(usize::from(u16::from_be_bytes([f[2], f[3]])), f.len());
            let flags = u16::from_be_bytes([f[6], f[7]]);
            assert_eq!(usize::from(flags & 0x1fff) * 8, payload.len());
            assert_eq!(flags & MF != 0, i + 1 < frags.len());
            payload.extend_from_slice(&f[20..]);
        }
        assert_eq!(payload, orig[20..]);
        // A fragment cut again keeps its offset and its MF.
        let mut again = Vec::new();
        assert!(fragment_v4(&frags[0], 600, &mut buf, |f| again.push(f.to_vec())));
        assert_eq!(again.len(), 3);
        let last = again.last().unwrap();
        let flags = u16::from_be_bytes([last[6], last[7]]);
        assert!(flags & MF != 0, "more fragments follow the first one's pieces");
        assert!(!fragment_v4(&orig, 24, &mut buf, |_| panic!("no room")));
        assert!(!fragment_v4(&v6(1500, 17, 0), 1364, &mut buf, |_| panic!("not IPv4")));
    }
}
