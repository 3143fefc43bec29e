//! Host mobility in the daemon (DESIGN §5): the data plane's detection threads report hosts to
//! the node, the node's events become host routes and probes, and packets the ETR
//! re-encapsulated for hosts that moved away become SMRs.
//!
//! ```text
//! detect (AF_PACKET per site interface) --HostSeen--> hosts task --> Node::handle_host_seen
//! ETR worker (away entry hit) --AwayPacket--> away task --> Node::handle_away_packet (SMR)
//! Node events HostDetected / HostRemoved / ProbeHost --> actions thread:
//!     `ip route replace HOST/32 dev SITE` / `ip route del ...` / ARP request or NS
//! ```
//!
//! Across subnet, a host that moved away keeps a host route into the TUN device at its home
//! xTR, which also answers ARP/ND for it there: its home-subnet neighbours still reach it,
//! through the ITR, at its new RLOC.
//!
//! In extended-subnet mode the Map-Notify announcing a detection goes to the range's
//! map-notify-group: a multicast group is sent to and received on the site interface (the LAN
//! extension carries it to the other site's xTRs), unicast addresses go out like any control
//! message.
//!
//! Host routes are installed with `ip route` (as the TUN routes are): one command per move is
//! cheap next to the Map-Register round trip, and it keeps the daemon free of a netlink stack.
//! The actions run on their own thread so that no command ever runs under the node lock.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use std::time::Instant;

use anyhow::Context;
use ipnet::IpNet;
use loci_core::config::DynamicEidRange;
use loci_core::config::MobilityMode;
use loci_core::eid::EidPrefix;
use loci_core::node::{Event, HostRemoval, Node, Transmit, CONTROL_PORT};
use loci_dataplane::detect::{Detector, HostSeen};
use loci_dataplane::{Away, AwayCounters, AwayPacket};
use serde_json::{json, Value};
use socket2::{Domain, InterfaceIndexOrAddress, Protocol, Socket, Type};
use tokio::sync::mpsc;

use crate::config::DaemonConfig;
use crate::daemon::Shared;

/// Reports waiting for the node; more are dropped (and counted by the detector or ignored:
/// the next packet of the host or to it reports it again).
const QUEUE: usize = 1024;

/// Route and probe actions waiting for the actions thread.
const ACTIONS: usize = 4096;

/// What the daemon runs for host mobility.
pub struct Mobility {
    detector: Arc<Detector>,
    actions: std_mpsc::SyncSender<Event>,
    pub away_counters: Arc<AwayCounters>,
    routes: Arc<Routes>,
    groups: Vec<Group>,
}

/// A map-notify-group (multicast) on one site interface: a socket that sends to it out of
/// that interface, and one that receives it there.
struct Group {
    group: IpAddr,
    interface: String,
    send: Socket,
    recv: Arc<std::net::UdpSocket>,
    sent: AtomicU64,
}

impl Group {
    /// Joins `group` on `interface`; announcements leave from `source` (our RLOC, so that the
    /// receiving xTR, which may share our site address, does not take them for its own).
    fn open(group: IpAddr, interface: &str, source: Option<IpAddr>) -> std::io::Result<Group> {
        let ifindex = loci_dataplane::detect::interface_index(interface)?;
        let domain = Domain::for_address(SocketAddr::new(group, 0));
        let recv = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
        recv.set_reuse_address(true)?;
        recv.bind_device(Some(interface.as_bytes()))?;
        let send = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
        send.bind_device(Some(interface.as_bytes()))?;
        match group {
            IpAddr::V4(g) => {
                recv.join_multicast_v4_n(&g, &InterfaceIndexOrAddress::Index(ifindex))?;
                send.set_multicast_loop_v4(false)?;
                send.set_multicast_ttl_v4(1)?;
            }
            IpAddr::V6(g) => {
                recv.set_only_v6(true)?;
                recv.join_multicast_v6(&g, ifindex)?;
                send.set_multicast_loop_v6(false)?;
                send.set_multicast_hops_v6(1)?;
                send.set_multicast_if_v6(ifindex)?;
            }
        }
        recv.bind(&SocketAddr::new(group, CONTROL_PORT).into())?;
        if let Some(src) = source.filter(|s| s.is_ipv4() == group.is_ipv4()) {
            send.bind(&SocketAddr::new(src, 0).into())?;
        }
        let recv = Arc::new(std::net::UdpSocket::from(recv));
        Ok(Group { group, interface: interface.into(), send, recv, sent: AtomicU64::new(0) })
    }
}

/// Receivers the tasks take once the daemon's shared state exists.
pub struct Queues {
    hosts: mpsc::Receiver<HostSeen>,
    away: mpsc::Receiver<AwayPacket>,
    /// The map-notify-group receive sockets, with their group addresses.
    groups: Vec<(SocketAddr, Arc<std::net::UdpSocket>)>,
}

/// Host routes this daemon installed (removed again when it stops).
#[derive(Default)]
struct Routes {
    /// Routing table per instance (`None`: main).
    tables: HashMap<u32, Option<u32>>,
    /// TUN device per instance.
    tuns: HashMap<u32, String>,
    /// The across-subnet ranges: their hosts that moved away are routed into the TUN device.
    across: Vec<EidPrefix>,
    /// Host routes installed, by prefix: the device they point to.
    installed: Mutex<HashMap<EidPrefix, String>>,
    added: AtomicU64,
    removed: AtomicU64,
    failed: AtomicU64,
}

impl Routes {
    fn table(&self, iid: u32) -> Option<u32> {
        self.tables.get(&iid).copied().flatten()
    }

    fn add(&self, prefix: EidPrefix, dev: &str) {
        match loci_dataplane::add_route(dev, &prefix.net, self.table(prefix.iid)) {
            Ok(()) => {
                self.added.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut set) = self.installed.lock() {
                    set.insert(prefix, dev.to_string());
                }
            }
            Err(e) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%prefix, dev, error = %e, "cannot install the host route");
            }
        }
    }

    fn remove(&self, prefix: EidPrefix, dev: &str) {
        if let Ok(mut set) = self.installed.lock() {
            set.remove(&prefix);
        }
        match del_route(dev, &prefix.net, self.table(prefix.iid)) {
            Ok(()) => {
                self.removed.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%prefix, dev, error = %e, "cannot remove the host route");
            }
        }
    }

    /// A host left: across subnet, when it moved, route it into the TUN device (replacing the
    /// route towards the site); otherwise remove its route.
    fn left(&self, prefix: EidPrefix, dev: &str, reason: &HostRemoval) {
        let tun = self
            .tuns
            .get(&prefix.iid)
            .filter(|_| matches!(reason, HostRemoval::Moved { .. }) && self.across.iter().any(|r| r.covers(&prefix)));
        match tun {
            Some(tun) => self.add(prefix, tun),
            None => self.remove(prefix, dev),
        }
    }

    fn remove_all(&self) {
        let all: Vec<(EidPrefix, String)> =
            self.installed.lock().map(|s| s.iter().map(|(p, d)| (*p, d.clone())).collect()).unwrap_or_default();
        for (p, dev) in all {
            self.remove(p, &dev);
        }
    }
}

/// `ip route del ROUTE dev DEV table T`.
fn del_route(dev: &str, route: &IpNet, table: Option<u32>) -> anyhow::Result<()> {
    let family = if matches!(route, IpNet::V4(_)) { "-4" } else { "-6" };
    let table = table.map_or("main".to_string(), |t| t.to_string());
    let out = Command::new("ip")
        .args([family, "route", "del", &route.to_string(), "dev", dev, "table", &table])
        .output()
        .context("cannot run `ip`")?;
    if !out.status.success() {
        anyhow::bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// The dynamic-EID ranges of a configuration.
fn ranges(cfg: &DaemonConfig) -> &[DynamicEidRange] {
    cfg.core.etr.as_ref().map_or(&[], |e| &e.mobility.ranges[..])
}

/// Starts detection on the site interfaces and the actions thread, when dynamic-EID ranges
/// are configured. Returns what the data plane's ETR needs to re-encapsulate away traffic.
/// The data plane's share: the away entries, where to report hits, and the counters.
pub type AwayHandle = (Away, Arc<AwayCounters>);

pub fn start(cfg: &DaemonConfig, node: &Node) -> anyhow::Result<Option<(Mobility, Queues, AwayHandle)>> {
    let ranges = ranges(cfg);
    if ranges.is_empty() {
        return Ok(None);
    }
    let Some(etr) = node.etr() else { return Ok(None) };
    let (host_tx, hosts) = mpsc::channel(QUEUE);
    let detector = Detector::start(ranges, Arc::new(move |h| host_tx.try_send(h).is_ok()), Some(etr.away_reader()))
        .context("cannot start host detection (needs CAP_NET_RAW on the site interfaces)")?;
    let detector = Arc::new(detector);
    let (away_tx, away) = mpsc::channel(QUEUE);
    let away_handle = Away { reader: etr.away_reader(), sink: Arc::new(move |p| away_tx.try_send(p).is_ok()) };
    let instances = cfg.data_plane.iter().flat_map(|d| &d.instances);
    let tables = instances.clone().map(|i| (i.iid, i.table)).collect();
    let tuns = instances.map(|i| (i.iid, i.tun.clone())).collect();
    let across = ranges.iter().filter(|r| r.mode == MobilityMode::AcrossSubnet).map(|r| r.prefix).collect();
    let routes = Arc::new(Routes { tables, tuns, across, ..Routes::default() });
    let (actions, rx) = std_mpsc::sync_channel(ACTIONS);
    let (d, r) = (detector.clone(), routes.clone());
    std::thread::Builder::new()
        .name("loci-mobility".into())
        .spawn(move || act(&rx, &d, &r))
        .context("cannot start the mobility thread")?;
    let mut groups: Vec<Group> = Vec::new();
    for r in ranges {
        for &g in r.map_notify_group.iter().filter(|g| g.is_multicast()) {
            if groups.iter().any(|x| x.group == g && x.interface == r.interface) {
                continue;
            }
            let source = cfg.node.listen.iter().copied().find(|a| a.is_ipv4() == g.is_ipv4() && !a.is_unspecified());
            let group = Group::open(g, &r.interface, source)
                .with_context(|| format!("cannot join map-notify-group {g} on {}", r.interface))?;
            groups.push(group);
        }
    }
    let receivers = groups.iter().map(|g| (SocketAddr::new(g.group, CONTROL_PORT), g.recv.clone())).collect();
    let away_counters: Arc<AwayCounters> = Arc::default();
    let m = Mobility { detector, actions, away_counters: away_counters.clone(), routes, groups };
    Ok(Some((m, Queues { hosts, away, groups: receivers }, (away_handle, away_counters))))
}

/// Carries out route and probe actions until the daemon drops its sender.
fn act(rx: &std_mpsc::Receiver<Event>, detector: &Detector, routes: &Routes) {
    while let Ok(e) = rx.recv() {
        match e {
            Event::HostDetected { prefix, interface, .. } => routes.add(prefix, &interface),
            Event::HostRemoved { prefix, interface, reason } => routes.left(prefix, &interface, &reason),
            Event::ProbeHost { prefix, interface } => {
                if let Err(e) = detector.probe(&interface, prefix.net.addr()) {
                    tracing::debug!(%prefix, %interface, error = %e, "cannot probe the host");
                }
            }
            _ => {}
        }
    }
}

impl Mobility {
    /// Hands a node event to the actions thread (never blocks: the node lock is held).
    pub fn on_event(&self, e: &Event) {
        if matches!(e, Event::HostDetected { .. } | Event::HostRemoved { .. } | Event::ProbeHost { .. })
            && self.actions.try_send(e.clone()).is_err()
        {
            self.routes.failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(event = ?e, "mobility actions queue full: action dropped");
        }
    }

    /// Sends a datagram for a multicast map-notify-group out of each site interface that
    /// joined it; false when no interface did (the caller then drops it).
    pub fn send_group(&self, t: &Transmit) -> bool {
        let mut any = false;
        for g in self.groups.iter().filter(|g| g.group == t.dst.ip()) {
            any = true;
            match g.send.send_to(&t.data, &t.dst.into()) {
                Ok(_) => {
                    g.sent.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    tracing::debug!(group = %g.group, interface = %g.interface, error = %e, "map-notify-group send failed")
                }
            }
        }
        any
    }

    /// Removes the host routes this daemon installed (at shutdown).
    pub fn shutdown(&self) {
        self.routes.remove_all();
    }

    /// The data-plane side of the mobility counters (`loci show stats`).
    pub fn stats(&self) -> Value {
        let d = self.detector.stats();
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        json!({
            "frames_seen": d.frames,
            "hosts_reported": d.hosts_reported,
            "reports_suppressed": d.reports_suppressed,
            "arp_nd_answered": d.arp_nd_answered,
            "probes_sent": d.probes_sent,
            "away_reencapsulated": l(&self.away_counters.reencapsulated),
            "away_failed": l(&self.away_counters.failed),
            "host_routes_added": l(&self.routes.added),
            "host_routes_removed": l(&self.routes.removed),
            "host_route_failures": l(&self.routes.failed),
            "group_multicasts_sent": self.groups.iter().map(|g| l(&g.sent)).sum::<u64>(),
        })
    }
}

/// Starts the tasks that hand reports to the node.
pub fn spawn(shared: &Arc<Shared>, q: Queues) {
    tokio::spawn(hosts(shared.clone(), q.hosts));
    tokio::spawn(away(shared.clone(), q.away));
    for (group, socket) in q.groups {
        let shared = shared.clone();
        // Like the control sockets' threads: they end with the process.
        let spawned = std::thread::Builder::new()
            .name(format!("loci-grp {group}").chars().take(15).collect())
            .spawn(move || receive_group(&shared, group, &socket));
        if let Err(e) = spawned {
            tracing::warn!(%group, error = %e, "cannot start the map-notify-group receiver");
        }
    }
}

/// Hands announcements received on a map-notify-group to the node (it authenticates them).
fn receive_group(shared: &Shared, group: SocketAddr, socket: &std::net::UdpSocket) {
    let mut buf = vec![0u8; 9216];
    loop {
        let (n, from) = match socket.recv_from(&mut buf) {
            Ok(v) => v,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::debug!(%group, error = %e, "map-notify-group receive error");
                std::thread::sleep(std::time::Duration::from_millis(10));
                continue;
            }
        };
        let Ok(mut node) = shared.node.lock() else { return };
        node.handle_datagram(Instant::now(), group, from, &buf[..n]);
        shared.flush(&mut node);
        shared.events(&mut node);
        shared.wake_timer_for(&node);
    }
}

/// Up to this many queued reports are handed over under one lock.
const BATCH: usize = 256;

async fn hosts(shared: Arc<Shared>, mut rx: mpsc::Receiver<HostSeen>) {
    while let Some(first) = rx.recv().await {
        let Ok(mut node) = shared.node.lock() else { return };
        let now = Instant::now();
        node.handle_host_seen(now, first.iid, first.host, &first.interface);
        for _ in 0..BATCH {
            let Ok(h) = rx.try_recv() else { break };
            node.handle_host_seen(now, h.iid, h.host, &h.interface);
        }
        shared.flush(&mut node);
        shared.events(&mut node);
        shared.wake_timer_for(&node);
    }
}

async fn away(shared: Arc<Shared>, mut rx: mpsc::Receiver<AwayPacket>) {
    while let Some(first) = rx.recv().await {
        let Ok(mut node) = shared.node.lock() else { return };
        let now = Instant::now();
        node.handle_away_packet(now, first.iid, first.eid, first.itr);
        for _ in 0..BATCH {
            let Ok(p) = rx.try_recv() else { break };
            node.handle_away_packet(now, p.iid, p.eid, p.itr);
        }
        shared.flush(&mut node);
        shared.events(&mut node);
    }
}
