//! Ethernet frames host-mobility detection reads and writes: the source of ARP, ND and IP
//! packets, and ARP replies/requests and Neighbor Advertisements/Solicitations to send.
//! Pure functions, tested on bytes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use loci_wire::ecm::checksum;

pub type Mac = [u8; 6];

pub const BROADCAST: Mac = [0xff; 6];
const ETH_ARP: u16 = 0x0806;
const ETH_IPV4: u16 = 0x0800;
const ETH_IPV6: u16 = 0x86dd;
const ICMPV6: u8 = 58;
const ND_NS: u8 = 135;
const ND_NA: u8 = 136;
const ARP_REQUEST: u16 = 1;
const ARP_REPLY: u16 = 2;

/// What a frame says about its sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    pub dst_mac: Mac,
    pub src_mac: Mac,
    /// The sender's IP address (ARP sender, IP source); unspecified addresses are not senders.
    pub src: IpAddr,
    pub kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An ARP request for `target` (a gratuitous one has target == sender).
    ArpRequest {
        target: Ipv4Addr,
    },
    ArpReply,
    /// A Neighbor Solicitation for `target`.
    NeighborSolicit {
        target: Ipv6Addr,
    },
    /// Any other IPv4 or IPv6 packet.
    Ip,
}

fn u16_at(b: &[u8], i: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(i..i + 2)?.try_into().ok()?))
}

fn mac_at(b: &[u8], i: usize) -> Option<Mac> {
    b.get(i..i + 6)?.try_into().ok()
}

fn v4_at(b: &[u8], i: usize) -> Option<Ipv4Addr> {
    Some(Ipv4Addr::from(<[u8; 4]>::try_from(b.get(i..i + 4)?).ok()?))
}

fn v6_at(b: &[u8], i: usize) -> Option<Ipv6Addr> {
    Some(Ipv6Addr::from(<[u8; 16]>::try_from(b.get(i..i + 16)?).ok()?))
}

/// Parses an Ethernet frame (no VLAN tag); `None` for anything without a sender address.
pub fn parse(f: &[u8]) -> Option<Frame> {
    let dst_mac = mac_at(f, 0)?;
    let src_mac = mac_at(f, 6)?;
    let p = f.get(14..)?;
    let (src, kind) = match u16_at(f, 12)? {
        ETH_ARP => {
            // Ethernet/IPv4 ARP only: htype 1, ptype IPv4, hlen 6, plen 4.
            if u16_at(p, 0)? != 1 || u16_at(p, 2)? != ETH_IPV4 || p.get(4..6)? != [6, 4] {
                return None;
            }
            let kind = match u16_at(p, 6)? {
                ARP_REQUEST => Kind::ArpRequest { target: v4_at(p, 24)? },
                ARP_REPLY => Kind::ArpReply,
                _ => return None,
            };
            (IpAddr::V4(v4_at(p, 14)?), kind)
        }
        ETH_IPV4 if p.first()? >> 4 == 4 => (IpAddr::V4(v4_at(p, 12)?), Kind::Ip),
        ETH_IPV6 if p.first()? >> 4 == 6 => {
            let src = v6_at(p, 8)?;
            let kind = match (p.get(6)?, p.get(40)?) {
                (&ICMPV6, &ND_NS) => Kind::NeighborSolicit { target: v6_at(p, 48)? },
                _ => Kind::Ip,
            };
            (IpAddr::V6(src), kind)
        }
        _ => return None,
    };
    (!src.is_unspecified()).then_some(Frame { dst_mac, src_mac, src, kind })
}

fn ethernet(dst: Mac, src: Mac, ethertype: u16, payload_len: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload_len);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

fn arp(op: u16, dst: Mac, sha: Mac, spa: Ipv4Addr, tha: Mac, tpa: Ipv4Addr) -> Vec<u8> {
    let mut f = ethernet(dst, sha, ETH_ARP, 28);
    f.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4]);
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(&sha);
    f.extend_from_slice(&spa.octets());
    f.extend_from_slice(&tha);
    f.extend_from_slice(&tpa.octets());
    f
}

/// An ARP reply telling `to` (at `to_mac`) that `addr` is at `mac`.
pub fn arp_reply(mac: Mac, addr: Ipv4Addr, to_mac: Mac, to: Ipv4Addr) -> Vec<u8> {
    arp(ARP_REPLY, to_mac, mac, addr, to_mac, to)
}

/// A broadcast ARP request for `target` from `mac` (sender address `from`, or 0.0.0.0: a
/// probe, which the host answers too).
pub fn arp_request(mac: Mac, from: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    arp(ARP_REQUEST, BROADCAST, mac, from, [0; 6], target)
}

/// An IPv6 ND message (`icmp`: type, code, zero checksum, body) from `src` to `dst`, hop
/// limit 255 as RFC 4861 §7.1 requires.
fn nd(dst_mac: Mac, src_mac: Mac, src: Ipv6Addr, dst: Ipv6Addr, mut icmp: Vec<u8>) -> Vec<u8> {
    let sum = checksum::pseudo_header(src.into(), dst.into(), ICMPV6, icmp.len() as u32);
    let c = checksum::finish(checksum::add(sum, &icmp));
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let mut f = ethernet(dst_mac, src_mac, ETH_IPV6, 40 + icmp.len());
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
    f.extend_from_slice(&[ICMPV6, 255]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(&icmp);
    f
}

/// A solicited Neighbor Advertisement: `target` is at `mac` (R flag when it is a router).
pub fn neighbor_advert(mac: Mac, target: Ipv6Addr, router: bool, to_mac: Mac, to: Ipv6Addr) -> Vec<u8> {
    let flags = 0x60 | if router { 0x80 } else { 0 };
    let mut icmp = vec![ND_NA, 0, 0, 0, flags, 0, 0, 0];
    icmp.extend_from_slice(&target.octets());
    icmp.extend_from_slice(&[2, 1]);
    icmp.extend_from_slice(&mac);
    nd(to_mac, mac, target, to, icmp)
}

/// A Neighbor Solicitation for `target` from `from`, to its solicited-node multicast group.
pub fn neighbor_solicit(mac: Mac, from: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
    let t = target.octets();
    let group = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff00 | u16::from(t[13]), u16::from_be_bytes([t[14], t[15]]));
    let group_mac = [0x33, 0x33, 0xff, t[13], t[14], t[15]];
    let mut icmp = vec![ND_NS, 0, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(&t);
    icmp.extend_from_slice(&[1, 1]);
    icmp.extend_from_slice(&mac);
    nd(group_mac, mac, from, group, icmp)
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<Mac> {
    let mut mac = [0u8; 6];
    let mut parts = s.trim().split(':');
    for b in &mut mac {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GW: Mac = [0, 0, 0x5e, 0, 1, 1];
    const H: Mac = [2, 0, 0, 0, 0, 0x10];

    #[test]
    fn arp_round_trip() {
        let req = arp_request(H, "10.1.9.10".parse().unwrap(), "10.1.9.1".parse().unwrap());
        let f = parse(&req).unwrap();
        assert_eq!(f.src, "10.1.9.10".parse::<IpAddr>().unwrap());
        assert_eq!(f.dst_mac, BROADCAST);
        assert_eq!(f.kind, Kind::ArpRequest { target: "10.1.9.1".parse().unwrap() });
        let rep = arp_reply(GW, "10.1.9.1".parse().unwrap(), H, "10.1.9.10".parse().unwrap());
        let f = parse(&rep).unwrap();
        assert_eq!((f.src_mac, f.dst_mac, f.kind), (GW, H, Kind::ArpReply));
        assert_eq!(f.src, "10.1.9.1".parse::<IpAddr>().unwrap());
        // A probe (sender 0.0.0.0) names no sender; truncated frames parse to nothing.
        assert!(parse(&arp_request(H, Ipv4Addr::UNSPECIFIED, "10.1.9.1".parse().unwrap())).is_none());
        assert!(parse(&req[..30]).is_none());
    }

    #[test]
    fn nd_round_trip_and_checksum() {
        let from: Ipv6Addr = "2001:db8:9::10".parse().unwrap();
        let target: Ipv6Addr = "2001:db8:9::1".parse().unwrap();
        let ns = neighbor_solicit(H, from, target);
        assert_eq!(&ns[0..6], &[0x33, 0x33, 0xff, 0, 0, 1]);
        let f = parse(&ns).unwrap();
        assert_eq!(f.kind, Kind::NeighborSolicit { target });
        assert_eq!(f.src, IpAddr::V6(from));
        // The checksum over the pseudo-header and message sums to zero.
        let icmp = &ns[54..];
        let sum = checksum::pseudo_header(from.into(), ns_dst(&ns).into(), ICMPV6, icmp.len() as u32);
        assert_eq!(checksum::finish(checksum::add(sum, icmp)), 0);
        let na = neighbor_advert(GW, target, true, H, from);
        let f = parse(&na).unwrap();
        assert_eq!((f.kind, f.src, f.dst_mac), (Kind::Ip, IpAddr::V6(target), H));
    }

    fn ns_dst(f: &[u8]) -> Ipv6Addr {
        v6_at(f, 14 + 24).unwrap()
    }

    #[test]
    fn ip_sources_and_macs() {
        let mut f = ethernet(GW, H, ETH_IPV4, 20);
        f.extend_from_slice(&[0x45, 0, 0, 20, 0, 0, 0, 0, 64, 17, 0, 0, 10, 1, 9, 10, 10, 2, 1, 5]);
        assert_eq!(parse(&f).unwrap().src, "10.1.9.10".parse::<IpAddr>().unwrap());
        assert_eq!(parse_mac("00:00:5e:00:01:01"), Some(GW));
        for bad in ["00:00:5e:00:01", "00:00:5e:00:01:01:02", "0:00:5e:00:01:01", "zz:00:5e:00:01:01"] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
    }
}
