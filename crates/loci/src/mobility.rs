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
//! Host routes are installed with `ip route` (as the TUN routes are): one command per move is
//! cheap next to the Map-Register round trip, and it keeps the daemon free of a netlink stack.
//! The actions run on their own thread so that no command ever runs under the node lock.

use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use std::time::Instant;

use anyhow::Context;
use ipnet::IpNet;
use loci_core::config::DynamicEidRange;
use loci_core::eid::EidPrefix;
use loci_core::node::{Event, Node};
use loci_dataplane::detect::{Detector, HostSeen};
use loci_dataplane::{Away, AwayCounters, AwayPacket};
use serde_json::{json, Value};
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
}

/// Receivers the tasks take once the daemon's shared state exists.
pub struct Queues {
    hosts: mpsc::Receiver<HostSeen>,
    away: mpsc::Receiver<AwayPacket>,
}

/// Host routes this daemon installed (removed again when it stops).
#[derive(Default)]
struct Routes {
    /// Routing table per instance (`None`: main).
    tables: HashMap<u32, Option<u32>>,
    installed: Mutex<HashSet<(EidPrefix, String)>>,
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
                    set.insert((prefix, dev.to_string()));
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
            set.remove(&(prefix, dev.to_string()));
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

    fn remove_all(&self) {
        let all: Vec<(EidPrefix, String)> =
            self.installed.lock().map(|s| s.iter().cloned().collect()).unwrap_or_default();
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
    let detector = Detector::start(ranges, Arc::new(move |h| host_tx.try_send(h).is_ok()))
        .context("cannot start host detection (needs CAP_NET_RAW on the site interfaces)")?;
    let detector = Arc::new(detector);
    let (away_tx, away) = mpsc::channel(QUEUE);
    let away_handle = Away { reader: etr.away_reader(), sink: Arc::new(move |p| away_tx.try_send(p).is_ok()) };
    let tables = cfg.data_plane.iter().flat_map(|d| &d.instances).map(|i| (i.iid, i.table)).collect();
    let routes = Arc::new(Routes { tables, ..Routes::default() });
    let (actions, rx) = std_mpsc::sync_channel(ACTIONS);
    let (d, r) = (detector.clone(), routes.clone());
    std::thread::Builder::new()
        .name("loci-mobility".into())
        .spawn(move || act(&rx, &d, &r))
        .context("cannot start the mobility thread")?;
    let away_counters: Arc<AwayCounters> = Arc::default();
    let m = Mobility { detector, actions, away_counters: away_counters.clone(), routes };
    Ok(Some((m, Queues { hosts, away }, (away_handle, away_counters))))
}

/// Carries out route and probe actions until the daemon drops its sender.
fn act(rx: &std_mpsc::Receiver<Event>, detector: &Detector, routes: &Routes) {
    while let Ok(e) = rx.recv() {
        match e {
            Event::HostDetected { prefix, interface, .. } => routes.add(prefix, &interface),
            Event::HostRemoved { prefix, interface, .. } => routes.remove(prefix, &interface),
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
        })
    }
}

/// Starts the tasks that hand reports to the node.
pub fn spawn(shared: &Arc<Shared>, q: Queues) {
    tokio::spawn(hosts(shared.clone(), q.hosts));
    tokio::spawn(away(shared.clone(), q.away));
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
