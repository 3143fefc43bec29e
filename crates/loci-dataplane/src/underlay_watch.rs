//! Reachability hints from the underlay (RFC 9300 §10, besides RLOC probing): ICMP
//! destination-unreachable messages about packets we encapsulated to a locator, and the
//! underlay losing its route to a locator. Both are only hints: the control plane marks the
//! locator down (`Node::handle_rloc_unreachable`) and the next answered probe brings it back.
//!
//! * ICMP: one raw ICMP socket per family (needs `CAP_NET_RAW`). A message counts only if it is
//!   a destination-unreachable whose quoted packet is ours: sent from one of our RLOCs, UDP to
//!   port 4341. Anyone can send us ICMP; quoting our packet at least takes knowing our RLOC and
//!   the locator, and the control plane rate-limits what it accepts.
//! * Routes: the kernel's route notifications (netlink) say that something changed; after each
//!   burst the caller asks the kernel, for each locator, whether a route to it is left
//!   ([`has_route`]: a UDP `connect`, which does the route lookup and sends nothing).

use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::Arc;

use loci_wire::data::LISP_DATA_PORT;
use netlink_sys::protocols::NETLINK_ROUTE;
use socket2::{Domain, Protocol, Socket, Type};

/// Called with the locator an ICMP unreachable was about; false stops the watcher.
pub type UnreachableSink = Arc<dyn Fn(IpAddr) -> bool + Send + Sync>;
/// Called after route changes; false stops the watcher.
pub type RoutesChangedSink = Arc<dyn Fn() -> bool + Send + Sync>;

const UDP: u8 = 17;

/// The locator an ICMPv4 message is about, if it is a destination-unreachable (type 3) quoting
/// a UDP datagram to port 4341 sent from one of `ours`. `packet` starts with the IPv4 header,
/// as a raw IPv4 socket reads it. Code 4 (fragmentation needed) is path MTU discovery, not
/// unreachability: ignored here.
pub fn icmpv4_unreachable(packet: &[u8], ours: &[IpAddr]) -> Option<IpAddr> {
    let outer = usize::from(packet.first()? & 0x0f) * 4;
    let icmp = packet.get(outer..)?;
    if *icmp.first()? != 3 || *icmp.get(1)? == 4 {
        return None;
    }
    let quoted = icmp.get(8..)?;
    if quoted.first()? >> 4 != 4 || *quoted.get(9)? != UDP {
        return None;
    }
    let ihl = usize::from(quoted[0] & 0x0f) * 4;
    let src = IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(quoted.get(12..16)?).ok()?));
    let dst = IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(quoted.get(16..20)?).ok()?));
    ours_to_lisp(src, dst, quoted.get(ihl..)?, ours)
}

/// The locator an ICMPv6 message is about, if it is a destination-unreachable (type 1) quoting
/// a UDP datagram to port 4341 sent from one of `ours`. `packet` starts with the ICMPv6 header,
/// as a raw ICMPv6 socket reads it.
pub fn icmpv6_unreachable(packet: &[u8], ours: &[IpAddr]) -> Option<IpAddr> {
    if *packet.first()? != 1 {
        return None;
    }
    let quoted = packet.get(8..)?;
    if quoted.first()? >> 4 != 6 || *quoted.get(6)? != UDP {
        return None;
    }
    let src = IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(quoted.get(8..24)?).ok()?));
    let dst = IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(quoted.get(24..40)?).ok()?));
    ours_to_lisp(src, dst, quoted.get(40..)?, ours)
}

/// `dst` when the quoted datagram went from one of `ours` to UDP port 4341.
fn ours_to_lisp(src: IpAddr, dst: IpAddr, udp: &[u8], ours: &[IpAddr]) -> Option<IpAddr> {
    let port = u16::from_be_bytes(udp.get(2..4)?.try_into().ok()?);
    (port == LISP_DATA_PORT && ours.contains(&src)).then_some(dst)
}

/// Whether the kernel has a usable route to `addr` (no route, or an unreachable, prohibit or
/// blackhole route, make `connect` fail). When no socket of the family can be made at all (IPv6
/// disabled) it cannot tell, and says yes: a hint must come from a lost route, nothing else.
pub fn has_route(addr: IpAddr) -> bool {
    let any: SocketAddr =
        if addr.is_ipv4() { (Ipv4Addr::UNSPECIFIED, 0).into() } else { (Ipv6Addr::UNSPECIFIED, 0).into() };
    match UdpSocket::bind(any) {
        Ok(s) => s.connect((addr, LISP_DATA_PORT)).is_ok(),
        Err(_) => true,
    }
}

/// Starts a thread per family of `ours` reading ICMP unreachables about our encapsulated
/// packets. Fails when a raw socket cannot be opened (no `CAP_NET_RAW`).
pub fn watch_icmp(ours: Vec<IpAddr>, sink: UnreachableSink) -> io::Result<()> {
    for v6 in [false, true] {
        if !ours.iter().any(|a| a.is_ipv6() == v6) {
            continue;
        }
        let socket = if v6 {
            Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))?
        } else {
            Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))?
        };
        let (ours, sink) = (ours.clone(), sink.clone());
        std::thread::Builder::new().name(format!("loci-icmp{}", if v6 { "6" } else { "4" })).spawn(move || {
            let mut buf = [0u8; 1500];
            let mut socket = socket;
            loop {
                let n = match socket.read(&mut buf) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, "ICMP watcher stopped");
                        return;
                    }
                };
                let p = &buf[..n];
                let rloc = if v6 { icmpv6_unreachable(p, &ours) } else { icmpv4_unreachable(p, &ours) };
                if let Some(rloc) = rloc {
                    if !sink(rloc) {
                        return;
                    }
                }
            }
        })?;
    }
    Ok(())
}

/// Starts a thread that calls `sink` after route changes: the kernel's route notifications (a
/// netlink socket in the IPv4 and IPv6 route groups) wake it, and the caller asks the kernel
/// about each locator, so the messages themselves are not parsed. A burst of changes larger
/// than the socket buffer loses messages (ENOBUFS), which is one more reason to look.
pub fn watch_routes(sink: RoutesChangedSink) -> io::Result<()> {
    let mut socket = netlink_sys::Socket::new(NETLINK_ROUTE)?;
    let groups = (libc::RTMGRP_IPV4_ROUTE | libc::RTMGRP_IPV6_ROUTE) as u32;
    socket.bind(&netlink_sys::SocketAddr::new(0, groups))?;
    std::thread::Builder::new().name("loci-routes".into()).spawn(move || {
        let mut buf = Vec::with_capacity(1 << 16);
        loop {
            buf.clear();
            match socket.recv(&mut buf, 0) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "route watcher stopped: route withdrawals are no longer noticed");
                    return;
                }
            }
            if !sink() {
                return;
            }
        }
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// An IPv4 ICMP type-`t` message quoting a UDP datagram `src` -> `dst`:`dport`.
    fn icmp4(t: u8, src: &str, dst: &str, dport: u16) -> Vec<u8> {
        icmp4_code(t, 1, src, dst, dport)
    }

    fn icmp4_code(t: u8, code: u8, src: &str, dst: &str, dport: u16) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 56, 0, 0, 0, 0, 64, 1, 0, 0, 192, 0, 2, 254, 198, 51, 100, 1];
        p.extend_from_slice(&[t, code, 0, 0, 0, 0, 0, 0]);
        let mut q = vec![0x45, 0, 0, 60, 0, 0, 0x40, 0, 63, UDP, 0, 0];
        for a in [src, dst] {
            let IpAddr::V4(a) = ip(a) else { panic!() };
            q.extend_from_slice(&a.octets());
        }
        q.extend_from_slice(&0xc001u16.to_be_bytes());
        q.extend_from_slice(&dport.to_be_bytes());
        q.extend_from_slice(&[0, 40, 0, 0]);
        p.extend_from_slice(&q);
        p
    }

    fn icmp6(t: u8, src: &str, dst: &str, dport: u16) -> Vec<u8> {
        let mut p = vec![t, 0, 0, 0, 0, 0, 0, 0];
        p.extend_from_slice(&[0x60, 0, 0, 0, 0, 40, UDP, 63]);
        for a in [src, dst] {
            let IpAddr::V6(a) = ip(a) else { panic!() };
            p.extend_from_slice(&a.octets());
        }
        p.extend_from_slice(&0xc001u16.to_be_bytes());
        p.extend_from_slice(&dport.to_be_bytes());
        p
    }

    #[test]
    fn icmpv4_unreachable_about_our_packet_names_the_locator() {
        let ours = [ip("198.51.100.1")];
        assert_eq!(
            icmpv4_unreachable(&icmp4(3, "198.51.100.1", "203.0.113.11", 4341), &ours),
            Some(ip("203.0.113.11"))
        );
        // Someone else's packet, another port, another ICMP type: not ours to act on.
        assert_eq!(icmpv4_unreachable(&icmp4(3, "192.0.2.66", "203.0.113.11", 4341), &ours), None);
        assert_eq!(icmpv4_unreachable(&icmp4(3, "198.51.100.1", "203.0.113.11", 4342), &ours), None);
        assert_eq!(icmpv4_unreachable(&icmp4(11, "198.51.100.1", "203.0.113.11", 4341), &ours), None);
        // Fragmentation needed is path MTU, not unreachability.
        assert_eq!(icmpv4_unreachable(&icmp4_code(3, 4, "198.51.100.1", "203.0.113.11", 4341), &ours), None);
        assert_eq!(
            icmpv4_unreachable(&icmp4_code(3, 13, "198.51.100.1", "203.0.113.11", 4341), &ours),
            Some(ip("203.0.113.11")),
            "administratively prohibited"
        );
        // Truncated anywhere: no answer, no panic.
        let full = icmp4(3, "198.51.100.1", "203.0.113.11", 4341);
        for n in 0..full.len() - 4 {
            assert_eq!(icmpv4_unreachable(&full[..n], &ours), None, "{n} bytes");
        }
    }

    #[test]
    fn icmpv6_unreachable_about_our_packet_names_the_locator() {
        let ours = [ip("2001:db8::1")];
        assert_eq!(
            icmpv6_unreachable(&icmp6(1, "2001:db8::1", "2001:db8:2::11", 4341), &ours),
            Some(ip("2001:db8:2::11"))
        );
        assert_eq!(icmpv6_unreachable(&icmp6(1, "2001:db8::66", "2001:db8:2::11", 4341), &ours), None);
        assert_eq!(icmpv6_unreachable(&icmp6(2, "2001:db8::1", "2001:db8:2::11", 4341), &ours), None);
        let full = icmp6(1, "2001:db8::1", "2001:db8:2::11", 4341);
        for n in 0..full.len() - 2 {
            assert_eq!(icmpv6_unreachable(&full[..n], &ours), None, "{n} bytes");
        }
    }

    #[test]
    fn loopback_has_a_route() {
        assert!(has_route(ip("127.0.0.1")));
    }
}
