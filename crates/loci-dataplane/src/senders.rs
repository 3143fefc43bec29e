//! The ITR's UDP sockets for encapsulated packets: per family, a small pool bound to our RLOC
//! and to distinct source ports in 0xC000..=0xFFFF. A flow's hash picks its socket, so one flow
//! always leaves from one port (RFC 9300 §5.3: the source port spreads flows over the
//! underlay's ECMP paths) while the kernel writes the outer IP and UDP headers, which is what
//! lets it send a whole batch of equally sized datagrams in one `sendmsg` (UDP GSO) and
//! checksum them in the NIC.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;

use loci_core::encap::source_port;
use socket2::{Domain, Protocol, Socket, Type};

use crate::sys;

/// Sockets per family: enough source ports to spread flows over any realistic ECMP fan-out.
pub const POOL: usize = 16;

/// The senders of both families (a family without a local RLOC has none).
#[derive(Debug, Default)]
pub struct Senders {
    v4: Vec<Socket>,
    v6: Vec<Socket>,
}

impl Senders {
    /// Binds [`POOL`] sockets to the first RLOC of each family in `rlocs`.
    pub fn new(rlocs: &[IpAddr]) -> io::Result<Senders> {
        let pool = |src: Option<IpAddr>| -> io::Result<Vec<Socket>> {
            let Some(src) = src else { return Ok(Vec::new()) };
            (0..POOL).map(|i| bind(src, i)).collect()
        };
        Ok(Senders {
            v4: pool(rlocs.iter().copied().find(IpAddr::is_ipv4))?,
            v6: pool(rlocs.iter().copied().find(IpAddr::is_ipv6))?,
        })
    }

    /// The socket index for a flow toward an RLOC of family `v6` (None: no source RLOC of
    /// that family).
    #[inline]
    pub fn pick(&self, v6: bool, flow: u32) -> Option<usize> {
        let n = if v6 { self.v6.len() } else { self.v4.len() };
        // The same bits as the raw source port would use, folded onto the pool.
        (n > 0).then(|| usize::from(source_port(flow) & 0x3fff) % n)
    }

    pub fn get(&self, v6: bool, i: usize) -> &Socket {
        if v6 {
            &self.v6[i]
        } else {
            &self.v4[i]
        }
    }
}

/// Socket `i` of a pool: port `0xC000 + i` if free, else the next candidates `POOL` apart,
/// else any port the kernel picks (flows then still spread, just not within 0xC000..).
fn bind(src: IpAddr, i: usize) -> io::Result<Socket> {
    let v6 = src.is_ipv6();
    let s = Socket::new(if v6 { Domain::IPV6 } else { Domain::IPV4 }, Type::DGRAM, Some(Protocol::UDP))?;
    if v6 {
        s.set_only_v6(true)?;
        // Never fragment at the source (the TUN MTU leaves room for the headers): DF like
        // the IPv4 outer header (RFC 9300 §7.1).
        sys::set_int_option(s.as_fd(), libc::IPPROTO_IPV6, libc::IPV6_MTU_DISCOVER, libc::IPV6_PMTUDISC_DO)?;
        sys::set_int_option(s.as_fd(), libc::IPPROTO_IPV6, libc::IPV6_DONTFRAG, 1)?;
    } else {
        sys::set_int_option(s.as_fd(), libc::IPPROTO_IP, libc::IP_MTU_DISCOVER, libc::IP_PMTUDISC_DO)?;
    }
    // A burst of GSO batches must not find the buffer full; as root rmem/wmem_max do not apply.
    if sys::set_int_option(s.as_fd(), libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, 4 << 20).is_err() {
        let _ = s.set_send_buffer_size(4 << 20);
    }
    // Nothing is ever read from these sockets: whatever arrives on their ports is dropped soon.
    let _ = s.set_recv_buffer_size(1);
    let candidates = (0..8).map(|k| 0xc000 + (i + k * POOL) as u16).chain([0]);
    let mut last = None;
    for port in candidates {
        match s.bind(&SocketAddr::new(src, port).into()) {
            Ok(()) => return Ok(s),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no port")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flow_keeps_its_socket_and_flows_spread() {
        let s = Senders::new(&["127.0.0.1".parse().unwrap()]).unwrap();
        assert_eq!(s.pick(true, 7), None, "no IPv6 RLOC");
        assert_eq!(s.pick(false, 12345), s.pick(false, 12345));
        let used: std::collections::BTreeSet<usize> = (0..1000u32).filter_map(|f| s.pick(false, f * 7919)).collect();
        assert_eq!(used.len(), POOL);
        let ports: std::collections::BTreeSet<u16> =
            (0..POOL).map(|i| s.get(false, i).local_addr().unwrap().as_socket().unwrap().port()).collect();
        assert_eq!(ports.len(), POOL, "distinct source ports");
    }
}
