//! IP packets of simulated hosts: builders for what a scenario sends and a one-line summary of
//! any IPv4/IPv6 packet for traces.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use loci_wire::ecm::checksum;

const TCP: u8 = 6;
const UDP: u8 = 17;
const TTL: u8 = 64;

/// A UDP datagram from `src`:`sport` to `dst`:`dport` (addresses of one family).
pub fn udp(src: IpAddr, sport: u16, dst: IpAddr, dport: u16, payload: &[u8]) -> Vec<u8> {
    udp_datagram(src, sport, dst, dport, payload, TTL, 0)
}

/// What a UDP socket sends for `payload`: the IP and UDP headers a kernel writes, with TTL (hop
/// limit) `ttl`, TOS (traffic class) `tos`, DF set on IPv4 and the UDP checksum.
pub fn udp_datagram(src: IpAddr, sport: u16, dst: IpAddr, dport: u16, payload: &[u8], ttl: u8, tos: u8) -> Vec<u8> {
    let len = 8 + payload.len();
    let mut seg = Vec::with_capacity(len);
    seg.extend_from_slice(&sport.to_be_bytes());
    seg.extend_from_slice(&dport.to_be_bytes());
    seg.extend_from_slice(&(len as u16).to_be_bytes());
    seg.extend_from_slice(&[0, 0]);
    seg.extend_from_slice(payload);
    let c = checksum::udp(src, dst, &seg);
    seg[6..8].copy_from_slice(&c.to_be_bytes());
    ip(src, dst, UDP, ttl, tos, seg)
}

/// A TCP SYN from `src`:`sport` to `dst`:`dport` (the first packet of a connection).
pub fn tcp_syn(src: IpAddr, sport: u16, dst: IpAddr, dport: u16) -> Vec<u8> {
    let mut seg = vec![0u8; 20];
    seg[0..2].copy_from_slice(&sport.to_be_bytes());
    seg[2..4].copy_from_slice(&dport.to_be_bytes());
    seg[4..8].copy_from_slice(&0x1000_0000u32.to_be_bytes());
    seg[12] = 5 << 4;
    seg[13] = 0x02;
    seg[14..16].copy_from_slice(&65535u16.to_be_bytes());
    let c = checksum::finish(checksum::add(checksum::pseudo_header(src, dst, TCP, 20), &seg));
    seg[16..18].copy_from_slice(&c.to_be_bytes());
    ip(src, dst, TCP, TTL, 0, seg)
}

/// An IP header in front of `l4`. Mixed families are a scenario's programming error.
fn ip(src: IpAddr, dst: IpAddr, proto: u8, ttl: u8, tos: u8, l4: Vec<u8>) -> Vec<u8> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut p = vec![0x45, tos, 0, 0, 0, 0, 0x40, 0, ttl, proto, 0, 0];
            p[2..4].copy_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
            let c = checksum::checksum(&p);
            p[10..12].copy_from_slice(&c.to_be_bytes());
            p.extend(l4);
            p
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut p = vec![0x60 | (tos >> 4), tos << 4, 0, 0];
            p.extend_from_slice(&(l4.len() as u16).to_be_bytes());
            p.extend_from_slice(&[proto, ttl]);
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
            p.extend(l4);
            p
        }
        _ => panic!("packet from {src} to {dst}: addresses of different families"),
    }
}

/// The fields of an IP packet a trace shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Summary {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    pub ttl: u8,
    /// IPv4 TOS / IPv6 traffic class.
    pub tos: u8,
    /// Where the transport header starts.
    pub l4: usize,
    /// Source and destination ports (TCP and UDP).
    pub ports: Option<(u16, u16)>,
    /// TCP flags.
    pub tcp_flags: Option<u8>,
}

impl Summary {
    /// Reads an IPv4 or IPv6 packet (no IPv6 extension headers); `None` when it is neither.
    pub fn parse(p: &[u8]) -> Option<Summary> {
        let (src, dst, proto, ttl, tos, at) = match p.first()? >> 4 {
            4 if p.len() >= 20 => {
                let ihl = usize::from(p[0] & 0x0f) * 4;
                let a = |i: usize| IpAddr::V4(Ipv4Addr::new(p[i], p[i + 1], p[i + 2], p[i + 3]));
                (a(12), a(16), p[9], p[8], p[1], ihl)
            }
            6 if p.len() >= 40 => {
                let a = |i: usize| IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&p[i..i + 16]).unwrap_or_default()));
                (a(8), a(24), p[6], p[7], (p[0] << 4) | (p[1] >> 4), 40)
            }
            _ => return None,
        };
        let l4 = p.get(at..)?;
        let ports = matches!(proto, TCP | UDP)
            .then(|| l4.get(..4).map(|b| (u16::from_be_bytes([b[0], b[1]]), u16::from_be_bytes([b[2], b[3]]))))
            .flatten();
        let tcp_flags = if proto == TCP { l4.get(13).copied() } else { None };
        Some(Summary { src, dst, proto, ttl, tos, l4: at, ports, tcp_flags })
    }

    /// "TCP SYN", "UDP", "ICMP", "proto 47".
    pub fn kind(&self) -> String {
        match (self.proto, self.tcp_flags) {
            (TCP, Some(f)) => {
                let names = [(0x02, "SYN"), (0x10, "ACK"), (0x01, "FIN"), (0x04, "RST")];
                let set: Vec<&str> = names.iter().filter(|(b, _)| f & b != 0).map(|(_, n)| *n).collect();
                format!("TCP {}", set.join("+")).trim_end().to_string()
            }
            (UDP, _) => "UDP".into(),
            (1 | 58, _) => "ICMP".into(),
            (p, _) => format!("proto {p}"),
        }
    }
}

impl fmt::Display for Summary {
    /// `TCP SYN 10.1.1.10:40000 > 10.2.1.5:80`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ep = |a: IpAddr, port: Option<u16>| match (a, port) {
            (IpAddr::V6(a), Some(p)) => format!("[{a}]:{p}"),
            (a, Some(p)) => format!("{a}:{p}"),
            (a, None) => a.to_string(),
        };
        let (sp, dp) = self.ports.map_or((None, None), |(s, d)| (Some(s), Some(d)));
        write!(f, "{} {} > {}", self.kind(), ep(self.src, sp), ep(self.dst, dp))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use loci_core::encap::InnerHeader;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn built_packets_are_well_formed_and_summarised() {
        let syn = tcp_syn(ip("10.1.1.10"), 40000, ip("10.2.1.5"), 80);
        assert!(InnerHeader::parse(&syn).is_some());
        assert_eq!(checksum::checksum(&syn[..20]), 0, "IPv4 header checksum");
        assert_eq!(
            checksum::finish(checksum::add(
                checksum::pseudo_header(ip("10.1.1.10"), ip("10.2.1.5"), TCP, 20),
                &syn[20..]
            )),
            0
        );
        assert_eq!(Summary::parse(&syn).unwrap().to_string(), "TCP SYN 10.1.1.10:40000 > 10.2.1.5:80");
        let u = udp(ip("2001:db8::1"), 5, ip("2001:db8::2"), 6, b"hi");
        assert!(InnerHeader::parse(&u).is_some());
        assert!(checksum::udp_ok(ip("2001:db8::1"), ip("2001:db8::2"), &u[40..]));
        let s = Summary::parse(&u).unwrap();
        assert_eq!((s.to_string(), s.ttl, s.l4), ("UDP [2001:db8::1]:5 > [2001:db8::2]:6".to_string(), 64, 40));
        let d = udp_datagram(ip("10.0.0.1"), 1, ip("10.0.0.2"), 2, b"x", 9, 0xb8);
        let s = Summary::parse(&d).unwrap();
        assert_eq!((s.ttl, s.tos, s.l4), (9, 0xb8, 20));
        assert_eq!(checksum::checksum(&d[..20]), 0);
        let d6 = udp_datagram(ip("2001:db8::1"), 1, ip("2001:db8::2"), 2, b"x", 9, 0xb8);
        assert_eq!(Summary::parse(&d6).map(|s| (s.ttl, s.tos)), Some((9, 0xb8)));
        assert_eq!(Summary::parse(&[0x45, 0]), None);
    }
}
