//! Host-mobility detection (DESIGN §5): one thread per site interface reads its frames on an
//! `AF_PACKET` socket and reports the local hosts it sees inside the dynamic-EID ranges
//! configured there (`Node::handle_host_seen` through a [`HostSink`]). It also sends the probes
//! the node asks for (ARP request / Neighbor Solicitation) and, in across-subnet mode, answers
//! ARP/ND for the hosts' gateway and home-subnet neighbours with the gateway MAC.
//!
//! What counts as "seen here": a frame a host sent on this interface (never one we sent). In
//! extended-subnet mode only frames addressed to the gateway MAC, or ARP/ND for the gateway
//! address, count: the LAN extension filters those, so a frame flooded across it never makes
//! both sites claim the host.
//!
//! Bounds: each host is reported at most once per [`REPORT_HOLD`]; at most
//! [`REPORTS_PER_SEC`] reports per interface per second (a flood of random sources is counted,
//! not passed on: the node bounds its table too); the table of recent hosts is capped.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use loci_core::config::{DynamicEidRange, MobilityMode};
use loci_core::map_cache::MapCacheReader;
use socket2::{Domain, Protocol, Socket, Type};

use crate::frame::{self, Frame, Kind, Mac};
use crate::{link_sys, Error};

/// A host is reported again at most this often (the node wants one report per probe interval).
pub const REPORT_HOLD: Duration = Duration::from_secs(1);
/// Reports per interface per second, at most.
pub const REPORTS_PER_SEC: u32 = 200;
/// Hosts remembered per interface for deduplication; the table starts over when full.
const MAX_RECENT: usize = 4096;
/// How often a thread blocked in `recv` looks at the stop flag.
const POLL: Duration = Duration::from_millis(200);

/// A local host seen on a site interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSeen {
    pub iid: u32,
    pub host: IpAddr,
    pub interface: String,
}

/// Where reports go; false when the queue is full (counted; the host's next frame tries again).
pub type HostSink = Arc<dyn Fn(HostSeen) -> bool + Send + Sync>;

/// Counters of the detection threads.
#[derive(Debug, Default)]
pub struct DetectCounters {
    pub frames: AtomicU64,
    pub hosts_reported: AtomicU64,
    /// Reports not made: over the per-second budget or the queue was full.
    pub reports_suppressed: AtomicU64,
    pub arp_nd_answered: AtomicU64,
    pub probes_sent: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DetectStats {
    pub frames: u64,
    pub hosts_reported: u64,
    pub reports_suppressed: u64,
    pub arp_nd_answered: u64,
    pub probes_sent: u64,
}

/// What one site interface looks for: its ranges and its own MAC.
struct Site {
    interface: String,
    mac: Mac,
    ranges: Vec<DynamicEidRange>,
    recent: HashMap<IpAddr, Instant>,
    window: (Instant, u32),
    /// Hosts that moved away from this xTR (across subnet: we answer for them at home).
    away: Option<MapCacheReader>,
}

/// What a frame made the site do.
#[derive(Debug, Default, PartialEq, Eq)]
struct Outcome {
    report: Option<HostSeen>,
    suppressed: bool,
    reply: Option<Vec<u8>>,
}

impl Site {
    fn new(
        interface: String,
        mac: Mac,
        ranges: Vec<DynamicEidRange>,
        away: Option<MapCacheReader>,
        now: Instant,
    ) -> Self {
        Site { interface, mac, ranges, recent: HashMap::new(), window: (now, 0), away }
    }

    fn range_of(&self, ip: IpAddr) -> Option<&DynamicEidRange> {
        self.ranges.iter().filter(|r| r.prefix.net.contains(&ip)).max_by_key(|r| r.prefix.net.prefix_len())
    }

    fn observe(&mut self, f: &Frame, now: Instant) -> Outcome {
        let mut out = Outcome::default();
        if f.src_mac == self.mac {
            return out;
        }
        let Some(r) = self.range_of(f.src) else { return out };
        let gw = r.gateway;
        if gw.is_some_and(|g| g.address == f.src) {
            return out;
        }
        let for_gateway = gw.is_some_and(|g| {
            f.dst_mac == g.mac
                || match f.kind {
                    Kind::ArpRequest { target } => g.address == IpAddr::V4(target),
                    Kind::NeighborSolicit { target } => g.address == IpAddr::V6(target),
                    _ => false,
                }
        });
        let counts = match r.mode {
            MobilityMode::ExtendedSubnet => for_gateway,
            MobilityMode::AcrossSubnet => true,
        };
        if !counts {
            return out;
        }
        let (iid, mode) = (r.prefix.iid, r.mode);
        if mode == MobilityMode::AcrossSubnet {
            out.reply = self.answer(f);
        }
        let fresh = self.recent.get(&f.src).is_none_or(|&t| now.saturating_duration_since(t) >= REPORT_HOLD);
        if !fresh {
            return out;
        }
        if now.saturating_duration_since(self.window.0) >= Duration::from_secs(1) {
            self.window = (now, 0);
        }
        if self.window.1 >= REPORTS_PER_SEC {
            out.suppressed = true;
            return out;
        }
        self.window.1 += 1;
        if self.recent.len() >= MAX_RECENT {
            self.recent.clear();
        }
        self.recent.insert(f.src, now);
        out.report = Some(HostSeen { iid, host: f.src, interface: self.interface.clone() });
        out
    }

    /// Across subnet: the host asks for its gateway, or for a home-subnet neighbour that is
    /// not here (never seen on this interface, or moved away): we are both, at the gateway
    /// MAC.
    fn answer(&self, f: &Frame) -> Option<Vec<u8>> {
        let r = self.range_of(f.src)?;
        let mac = r.gateway.map_or(self.mac, |g| g.mac);
        let target = match f.kind {
            Kind::ArpRequest { target } => IpAddr::V4(target),
            Kind::NeighborSolicit { target } => IpAddr::V6(target),
            _ => return None,
        };
        let is_gateway = r.gateway.is_some_and(|g| g.address == target);
        let moved = || self.away.as_ref().is_some_and(|a| a.load().lookup(r.prefix.iid, target).is_some());
        let neighbour =
            r.prefix.net.contains(&target) && target != f.src && (!self.recent.contains_key(&target) || moved());
        if !is_gateway && !neighbour {
            return None;
        }
        match (f.src, target) {
            (IpAddr::V4(src), IpAddr::V4(t)) => Some(frame::arp_reply(mac, t, f.src_mac, src)),
            (IpAddr::V6(src), IpAddr::V6(t)) => Some(frame::neighbor_advert(mac, t, is_gateway, f.src_mac, src)),
            _ => None,
        }
    }
}

/// The MAC address of interface `name` (from sysfs).
pub fn interface_mac(name: &str) -> io::Result<Mac> {
    let s = std::fs::read_to_string(format!("/sys/class/net/{name}/address"))?;
    frame::parse_mac(&s).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("MAC {s:?}")))
}

pub fn interface_index(name: &str) -> io::Result<u32> {
    let s = std::fs::read_to_string(format!("/sys/class/net/{name}/ifindex"))?;
    s.trim().parse().map_err(|_| io::Error::new(io::ErrorKind::InvalidData, format!("ifindex {s:?}")))
}

fn packet_socket(name: &str) -> io::Result<Socket> {
    let s = Socket::new(Domain::PACKET, Type::RAW, Some(Protocol::from(i32::from(link_sys::eth_p_all()))))?;
    link_sys::bind_packet(s.as_fd(), interface_index(name)?)?;
    s.set_read_timeout(Some(POLL))?;
    Ok(s)
}

struct Port {
    interface: String,
    mac: Mac,
    socket: Arc<Socket>,
    ranges: Vec<DynamicEidRange>,
}

/// The running detection threads.
pub struct Detector {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    ports: Vec<Port>,
    counters: Arc<DetectCounters>,
}

impl Detector {
    /// Opens a packet socket on each interface of `ranges` and starts its thread. `away` are
    /// the hosts that moved away (answered for in across-subnet mode).
    pub fn start(ranges: &[DynamicEidRange], sink: HostSink, away: Option<MapCacheReader>) -> Result<Detector, Error> {
        let mut d = Detector { stop: Arc::default(), threads: Vec::new(), ports: Vec::new(), counters: Arc::default() };
        for r in ranges {
            if let Some(p) = d.ports.iter_mut().find(|p| p.interface == r.interface) {
                p.ranges.push(r.clone());
                continue;
            }
            let err = |e| Error::Socket { what: format!("packet socket on {}", r.interface), source: e };
            let mac = interface_mac(&r.interface).map_err(err)?;
            let socket = Arc::new(packet_socket(&r.interface).map_err(err)?);
            if let Some(g) = r.gateway.filter(|g| g.mac != mac) {
                // Hosts send to the gateway MAC: unless the interface carries it, the kernel
                // drops their packets as addressed to another host.
                tracing::warn!(interface = %r.interface, gateway_mac = ?g.mac, "the site interface does not carry the gateway MAC");
            }
            d.ports.push(Port { interface: r.interface.clone(), mac, socket, ranges: vec![r.clone()] });
        }
        for p in &d.ports {
            let site = Site::new(p.interface.clone(), p.mac, p.ranges.clone(), away.clone(), Instant::now());
            let (socket, stop, counters, sink) = (p.socket.clone(), d.stop.clone(), d.counters.clone(), sink.clone());
            let h = std::thread::Builder::new()
                .name(format!("loci-det-{}", p.interface).chars().take(15).collect())
                .spawn(move || run(site, &socket, &stop, &counters, &sink))
                .map_err(|e| Error::Socket { what: "detection thread".into(), source: e })?;
            d.threads.push(h);
        }
        tracing::info!(interfaces = ?d.ports.iter().map(|p| &p.interface).collect::<Vec<_>>(), "host detection running");
        Ok(d)
    }

    /// Sends an ARP request (IPv4) or Neighbor Solicitation (IPv6) for `host` on `interface`,
    /// from the range's gateway address (a probe from 0.0.0.0 without one).
    pub fn probe(&self, interface: &str, host: IpAddr) -> io::Result<()> {
        let p = self.ports.iter().find(|p| p.interface == interface).ok_or(io::ErrorKind::NotFound)?;
        let r = p.ranges.iter().find(|r| r.prefix.net.contains(&host)).ok_or(io::ErrorKind::NotFound)?;
        let (mac, from) = r.gateway.map_or((p.mac, None), |g| (g.mac, Some(g.address)));
        let f = match (host, from) {
            (IpAddr::V4(h), Some(IpAddr::V4(g))) => frame::arp_request(mac, g, h),
            (IpAddr::V4(h), _) => frame::arp_request(mac, std::net::Ipv4Addr::UNSPECIFIED, h),
            (IpAddr::V6(h), Some(IpAddr::V6(g))) => frame::neighbor_solicit(mac, g, h),
            (IpAddr::V6(_), _) => return Err(io::Error::other("IPv6 probes need the range's gateway address")),
        };
        p.socket.send(&f)?;
        self.counters.probes_sent.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    pub fn stats(&self) -> DetectStats {
        let c = &self.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        DetectStats {
            frames: l(&c.frames),
            hosts_reported: l(&c.hosts_reported),
            reports_suppressed: l(&c.reports_suppressed),
            arp_nd_answered: l(&c.arp_nd_answered),
            probes_sent: l(&c.probes_sent),
        }
    }
}

impl Drop for Detector {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for h in self.threads.drain(..) {
            let _ = h.join();
        }
    }
}

fn run(mut site: Site, socket: &Socket, stop: &AtomicBool, counters: &DetectCounters, sink: &HostSink) {
    let mut buf = vec![0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        let (n, kind) = match link_sys::recv_frame(socket.as_fd(), &mut buf) {
            Ok(v) => v,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => continue,
            Err(e) => {
                tracing::warn!(interface = %site.interface, error = %e, "packet socket receive failed");
                // Whatever it is, do not spin on it.
                std::thread::sleep(POLL);
                continue;
            }
        };
        if kind == link_sys::PACKET_OUTGOING {
            continue;
        }
        counters.frames.fetch_add(1, Ordering::Relaxed);
        let Some(f) = frame::parse(&buf[..n.min(buf.len())]) else { continue };
        let out = site.observe(&f, Instant::now());
        if let Some(reply) = out.reply {
            if socket.send(&reply).is_ok() {
                counters.arp_nd_answered.fetch_add(1, Ordering::Relaxed);
            }
        }
        if out.suppressed {
            counters.reports_suppressed.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(seen) = out.report {
            if sink(seen) {
                counters.hosts_reported.fetch_add(1, Ordering::Relaxed);
            } else {
                counters.reports_suppressed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use loci_core::config::Gateway;

    const GW: Mac = [0, 0, 0x5e, 0, 1, 1];
    const H: Mac = [2, 0, 0, 0, 0, 0x10];
    const OWN: Mac = [2, 0, 0, 0, 0, 1];

    fn site(mode: MobilityMode) -> Site {
        let r = DynamicEidRange {
            prefix: "10.1.9.0/24".parse().unwrap(),
            interface: "site0".into(),
            mode,
            map_notify_group: Vec::new(),
            gateway: Some(Gateway { address: "10.1.9.1".parse().unwrap(), mac: GW }),
            locators: Vec::new(),
            max_hosts: 10,
        };
        Site::new("site0".into(), OWN, vec![r], None, Instant::now())
    }

    fn ip_frame(dst: Mac, src: &str) -> Frame {
        Frame { dst_mac: dst, src_mac: H, src: src.parse().unwrap(), kind: Kind::Ip }
    }

    #[test]
    fn extended_subnet_counts_only_frames_for_the_gateway() {
        let mut s = site(MobilityMode::ExtendedSubnet);
        let t = Instant::now();
        // Flooded over the extension (to another host, or broadcast): not ours to claim.
        assert_eq!(s.observe(&ip_frame([2, 9, 9, 9, 9, 9], "10.1.9.10"), t), Outcome::default());
        let garp = frame::parse(&frame::arp_request(H, "10.1.9.10".parse().unwrap(), "10.1.9.10".parse().unwrap()));
        assert_eq!(s.observe(&garp.unwrap(), t), Outcome::default());
        // To the gateway MAC, or asking for the gateway: the host is here.
        let seen = s.observe(&ip_frame(GW, "10.1.9.10"), t).report.unwrap();
        assert_eq!((seen.iid, seen.host), (0, "10.1.9.10".parse().unwrap()));
        let ask = frame::parse(&frame::arp_request(H, "10.1.9.11".parse().unwrap(), "10.1.9.1".parse().unwrap()));
        let out = s.observe(&ask.unwrap(), t);
        assert!(out.report.is_some() && out.reply.is_none(), "the kernel answers for its own gateway address");
        // Outside the range, or sent by us: nothing.
        assert_eq!(s.observe(&ip_frame(GW, "10.2.1.5"), t), Outcome::default());
        let mut own = ip_frame(GW, "10.1.9.12");
        own.src_mac = OWN;
        assert_eq!(s.observe(&own, t), Outcome::default());
    }

    #[test]
    fn reports_are_deduplicated_and_rate_limited() {
        let mut s = site(MobilityMode::AcrossSubnet);
        let t = Instant::now();
        assert!(s.observe(&ip_frame(GW, "10.1.9.10"), t).report.is_some());
        assert!(s.observe(&ip_frame(GW, "10.1.9.10"), t + Duration::from_millis(500)).report.is_none());
        assert!(s.observe(&ip_frame(GW, "10.1.9.10"), t + REPORT_HOLD).report.is_some());
        // A flood of random sources: at most REPORTS_PER_SEC reports a second, the rest counted.
        let t = t + Duration::from_secs(5);
        let mut reported = 0;
        let mut suppressed = 0;
        for i in 0..1000u32 {
            let src = format!("10.1.9.{}", i % 250 + 2);
            let o = s.observe(&ip_frame(GW, &src), t + Duration::from_micros(u64::from(i)));
            reported += u32::from(o.report.is_some());
            suppressed += u32::from(o.suppressed);
        }
        assert_eq!(reported, 200.min(REPORTS_PER_SEC));
        assert!(suppressed > 0 && s.recent.len() <= MAX_RECENT);
    }

    #[test]
    fn across_subnet_answers_for_gateway_and_absent_neighbours() {
        let mut s = site(MobilityMode::AcrossSubnet);
        let t = Instant::now();
        let ask = |target: &str| {
            frame::parse(&frame::arp_request(H, "10.1.9.10".parse().unwrap(), target.parse().unwrap())).unwrap()
        };
        let out = s.observe(&ask("10.1.9.1"), t);
        let reply = frame::parse(&out.reply.unwrap()).unwrap();
        assert_eq!((reply.src_mac, reply.dst_mac, reply.kind), (GW, H, Kind::ArpReply));
        assert_eq!(reply.src, "10.1.9.1".parse::<IpAddr>().unwrap());
        // A home-subnet neighbour (not here): proxied. One seen here: left to itself.
        assert!(s.observe(&ask("10.1.9.20"), t).reply.is_some());
        s.observe(&ip_frame(GW, "10.1.9.30"), t);
        assert!(s.observe(&ask("10.1.9.30"), t).reply.is_none());
        assert!(s.observe(&ask("10.2.1.5"), t).reply.is_none(), "not in the home subnet");
        // Once .30 moved away (an away entry), its home site answers for it.
        let mut away = loci_core::map_cache::MapCache::new(Default::default());
        let rloc = loci_core::locator::Rloc::new("203.0.113.5".parse().unwrap(), 1, 100, true);
        let m = loci_core::map_cache::Mapping::new(
            "10.1.9.30/32".parse().unwrap(),
            vec![rloc],
            loci_wire::Action::NO_ACTION,
            Duration::from_secs(60),
            t,
        );
        away.insert(m, "10.1.9.30".parse().unwrap());
        away.publish();
        s.away = Some(away.reader());
        assert!(s.observe(&ask("10.1.9.30"), t).reply.is_some());
    }
}
