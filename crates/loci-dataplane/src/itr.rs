//! The ITR worker: reads packets from one instance's TUN device, finds their RLOC in the
//! map-cache snapshot, encapsulates and sends them.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use loci_core::encap::{encapsulate, EncapParams, ENCAP_OVERHEAD_V6};
use loci_core::flow_cache::FlowCache;
use loci_core::locator::{flow_hash, Families};
use loci_core::map_cache::{Forward, MapCacheReader};
use loci_core::packet;
use loci_wire::ecm::checksum;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tun_rs::{InterruptEvent, SyncDevice};

use crate::counters::{Counters, Drop};
use crate::{Config, DataPlane, Error, Miss, MissSink, MAX_MTU};

/// Room in front of the inner packet for the outer headers.
const HEADROOM: usize = ENCAP_OVERHEAD_V6;

/// A destination is reported to the control plane at most once per this interval per worker
/// (the control plane deduplicates too; this keeps a burst from filling the queue).
const MISS_HOLD: Duration = Duration::from_millis(250);

pub struct Worker {
    iid: u32,
    tun: Arc<SyncDevice>,
    reader: MapCacheReader,
    flows: Option<FlowCache>,
    families: Families,
    /// Outer source per family: our first RLOC of that family.
    src_v4: Option<IpAddr>,
    src_v6: Option<IpAddr>,
    raw_v4: Option<Socket>,
    raw_v6: Option<Socket>,
    misses: MissSink,
    recent: RecentMisses,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    wake: Arc<InterruptEvent>,
}

/// A raw socket that sends whole IP packets (headers included) of one family.
pub(crate) fn raw_socket(domain: Domain) -> io::Result<Socket> {
    let s = Socket::new(domain, Type::RAW, Some(Protocol::from(libc::IPPROTO_RAW)))?;
    if domain == Domain::IPV6 {
        s.set_header_included_v6(true)?;
    } else {
        s.set_header_included_v4(true)?;
    }
    // A burst from the TUN device must not find the socket's buffer full.
    let _ = s.set_send_buffer_size(4 << 20);
    Ok(s)
}

impl Worker {
    pub fn new(
        iid: u32,
        tun: Arc<SyncDevice>,
        config: &Config,
        reader: MapCacheReader,
        misses: MissSink,
        dp: &DataPlane,
    ) -> Result<Self, Error> {
        let families = Families::of(&config.rlocs);
        let raw = |d: Domain, what: &str| {
            raw_socket(d).map_err(|e| Error::Socket { what: format!("raw {what} socket for encapsulation"), source: e })
        };
        // A family without RLOCs still gets a socket if it can, for native forwarding.
        let raw_v4 = if families.v4 { Some(raw(Domain::IPV4, "IPv4")?) } else { raw_socket(Domain::IPV4).ok() };
        let raw_v6 = if families.v6 { Some(raw(Domain::IPV6, "IPv6")?) } else { raw_socket(Domain::IPV6).ok() };
        Ok(Worker {
            iid,
            tun,
            reader,
            flows: (config.flow_cache_slots > 0).then(|| FlowCache::new(config.flow_cache_slots, families)),
            families,
            src_v4: config.rlocs.iter().copied().find(IpAddr::is_ipv4),
            src_v6: config.rlocs.iter().copied().find(IpAddr::is_ipv6),
            raw_v4,
            raw_v6,
            misses,
            recent: RecentMisses::new(256),
            counters: Arc::default(),
            stop: dp.stop.clone(),
            wake: dp.wake.clone(),
        })
    }

    pub fn counters(&self) -> Arc<Counters> {
        self.counters.clone()
    }

    pub fn run(mut self) {
        let mut buf = vec![0u8; HEADROOM + usize::from(MAX_MTU)];
        while !self.stop.load(Ordering::Relaxed) {
            // Read first and wait only when nothing is ready: one system call per packet under
            // load instead of a poll and a read.
            let n = match self.tun.recv(&mut buf[HEADROOM..]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let _ = self.tun.wait_readable_intr(&self.wake);
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!(iid = self.iid, error = %e, "TUN read failed");
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            };
            self.forward(&mut buf, HEADROOM..HEADROOM + n);
        }
    }

    /// One packet from the TUN device, at `buf[inner]`.
    fn forward(&mut self, buf: &mut [u8], inner: Range<usize>) {
        let Some((src, dst)) = packet::addresses(&buf[inner.clone()]) else {
            self.counters.drop_packet(Drop::BadPacket);
            return;
        };
        if !packet::routable(dst) {
            self.counters.drop_packet(Drop::NotRoutable);
            return;
        }
        let flow = flow_hash(&buf[inner.clone()]);
        let verdict = {
            let snap = self.reader.load();
            match &mut self.flows {
                Some(fc) => fc.forward(&snap, self.iid, dst, flow),
                None => snap.forward(self.iid, dst, flow, self.families),
            }
        };
        match verdict {
            Forward::Encapsulate(rloc) => self.encapsulate(buf, inner, rloc, flow),
            Forward::Miss => self.miss(dst, src),
            Forward::NativeForward => self.native(&mut buf[inner]),
            Forward::Drop(reason) => self.counters.drop_packet(reason.into()),
        }
    }

    fn encapsulate(&mut self, buf: &mut [u8], inner: Range<usize>, rloc: IpAddr, flow: u32) {
        let (src, socket) = match rloc {
            IpAddr::V4(_) => (self.src_v4, &self.raw_v4),
            IpAddr::V6(_) => (self.src_v6, &self.raw_v6),
        };
        let (Some(src), Some(socket)) = (src, socket) else {
            self.counters.drop_packet(Drop::EncapFailed);
            return;
        };
        let params = EncapParams::new(src, rloc, self.iid, flow);
        let Ok(range) = encapsulate(buf, inner, &params) else {
            self.counters.drop_packet(Drop::EncapFailed);
            return;
        };
        if rloc.is_ipv6() {
            // RFC 9300 §5.3 allows a zero UDP checksum over IPv6 too, but an IPv6 receiver
            // accepts that only when configured to (RFC 6936 §5), and middleboxes and analysers
            // treat it as an error: one pass over the packet buys interoperability.
            let pkt = &mut buf[range.clone()];
            let c = checksum::udp(src, rloc, &pkt[40..]);
            pkt[46..48].copy_from_slice(&c.to_be_bytes());
        }
        let len = range.len();
        // Raw sockets take no port: the UDP header is in the packet.
        match socket.send_to(&buf[range], &SockAddr::from(SocketAddr::new(rloc, 0))) {
            Ok(_) => {
                Counters::add(&self.counters.encapsulated, 1);
                Counters::add(&self.counters.encapsulated_bytes, len as u64);
            }
            Err(_) => self.counters.drop_packet(Drop::SendFailed),
        }
    }

    fn miss(&mut self, dst: IpAddr, src: IpAddr) {
        self.counters.drop_packet(Drop::MapCacheMiss);
        if !self.recent.should_report(self.iid, dst, Instant::now()) {
            Counters::add(&self.counters.misses_suppressed, 1);
            return;
        }
        if (self.misses)(Miss { iid: self.iid, dst, src }) {
            Counters::add(&self.counters.misses_reported, 1);
        } else {
            Counters::add(&self.counters.misses_suppressed, 1);
        }
    }

    /// Not a LISP destination: forward the packet as it is, through the underlay's routing.
    /// The TTL goes down like at any router, which also ends a loop should the underlay route
    /// the destination back into the TUN device.
    fn native(&mut self, p: &mut [u8]) {
        if !packet::decrement_ttl(p) {
            self.counters.drop_packet(Drop::TtlExceeded);
            return;
        }
        let Some((_, dst)) = packet::addresses(p) else { return };
        let socket = if dst.is_ipv4() { &self.raw_v4 } else { &self.raw_v6 };
        match socket.as_ref().map(|s| s.send_to(p, &SockAddr::from(SocketAddr::new(dst, 0)))) {
            Some(Ok(_)) => Counters::add(&self.counters.native_forwarded, 1),
            _ => self.counters.drop_packet(Drop::SendFailed),
        }
    }
}

/// Destinations reported lately: direct-mapped, a colliding destination takes the slot over
/// (at worst a destination is reported again early).
struct RecentMisses {
    slots: Box<[Option<(u32, IpAddr, Instant)>]>,
}

impl RecentMisses {
    fn new(n: usize) -> Self {
        RecentMisses { slots: vec![None; n.next_power_of_two()].into_boxed_slice() }
    }

    fn should_report(&mut self, iid: u32, dst: IpAddr, now: Instant) -> bool {
        let h = match dst {
            IpAddr::V4(a) => u64::from(u32::from(a)),
            IpAddr::V6(a) => {
                let v = u128::from(a);
                (v as u64) ^ ((v >> 64) as u64)
            }
        } ^ u64::from(iid).rotate_left(32);
        let i = (h.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40) as usize & (self.slots.len() - 1);
        let slot = &mut self.slots[i];
        if let Some((si, sd, at)) = *slot {
            if si == iid && sd == dst && now.saturating_duration_since(at) < MISS_HOLD {
                return false;
            }
        }
        *slot = Some((iid, dst, now));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn misses_are_reported_once_per_hold() {
        let mut r = RecentMisses::new(16);
        let t0 = Instant::now();
        let a: IpAddr = "10.2.0.1".parse().unwrap();
        let b: IpAddr = "2001:db8::1".parse().unwrap();
        assert!(r.should_report(0, a, t0));
        assert!(!r.should_report(0, a, t0 + Duration::from_millis(10)));
        assert!(r.should_report(1, a, t0), "another instance is another destination");
        assert!(r.should_report(0, b, t0));
        assert!(r.should_report(0, a, t0 + MISS_HOLD + Duration::from_millis(1)));
    }
}
