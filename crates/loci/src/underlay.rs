//! Reachability hints from the underlay for the ITR's locators (RFC 9300 §10): ICMP
//! destination-unreachable about our encapsulated packets, and routes to a locator withdrawn
//! (route notifications from the kernel, then a route lookup per probed locator). Each is handed to the node
//! (`Node::handle_rloc_unreachable`), which marks the locator down until the next answered
//! probe. Runs only on an ITR with RLOC probing: without probing nothing would bring a locator
//! back. See `loci_dataplane::underlay_watch`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use loci_core::probing::Unreachable;
use loci_dataplane::underlay_watch::{has_route, watch_icmp, watch_routes};
use tokio::sync::mpsc;

use crate::daemon::Shared;

/// Hints waiting for the control plane; more are dropped (a dead locator keeps causing them).
const QUEUE: usize = 256;

enum Hint {
    Icmp(IpAddr),
    RoutesChanged,
}

/// Starts the watchers when the node is an ITR that probes its locators. A watcher that cannot
/// start (no `CAP_NET_RAW`) is logged and left out: probing still finds dead locators.
pub fn start(shared: &Arc<Shared>) {
    let ours = {
        let Ok(node) = shared.node.lock() else { return };
        let Some(itr) = node.itr().filter(|i| i.prober().is_some()) else { return };
        itr.config().rlocs.clone()
    };
    let (tx, rx) = mpsc::channel(QUEUE);
    let icmp = tx.clone();
    // A full queue drops the hint (a dead locator keeps causing them); a closed one stops.
    let icmp_sink = move |rloc| {
        let _ = icmp.try_send(Hint::Icmp(rloc));
        !icmp.is_closed()
    };
    if let Err(e) = watch_icmp(ours, Arc::new(icmp_sink)) {
        tracing::warn!(error = %e, "no ICMP unreachable hints (needs CAP_NET_RAW)");
    }
    let routes_sink = move || {
        let _ = tx.try_send(Hint::RoutesChanged);
        !tx.is_closed()
    };
    if let Err(e) = watch_routes(Arc::new(routes_sink)) {
        tracing::warn!(error = %e, "no route-withdrawal hints (no route notifications)");
    }
    tokio::spawn(run(shared.clone(), rx));
}

/// Hands the hints to the node, a burst at a time.
async fn run(shared: Arc<Shared>, mut rx: mpsc::Receiver<Hint>) {
    while let Some(first) = rx.recv().await {
        let (mut icmp, mut routes) = (Vec::new(), false);
        let mut next = Some(first);
        while let Some(h) = next {
            match h {
                Hint::Icmp(a) => icmp.push(a),
                Hint::RoutesChanged => routes = true,
            }
            next = rx.try_recv().ok();
        }
        let withdrawn: Vec<IpAddr> = if routes {
            let probed: Vec<IpAddr> = {
                let Ok(node) = shared.node.lock() else { return };
                let prober = node.itr().and_then(|i| i.prober());
                prober.map(|p| p.locators().filter(|(_, s)| s.up).map(|(a, _)| a).collect()).unwrap_or_default()
            };
            // Route lookups outside the lock: the data plane's misses need it too.
            probed.into_iter().filter(|a| !has_route(*a)).collect()
        } else {
            Vec::new()
        };
        let Ok(mut node) = shared.node.lock() else { return };
        let now = Instant::now();
        let hints = icmp.into_iter().map(|a| (a, Unreachable::Icmp));
        for (rloc, reason) in hints.chain(withdrawn.into_iter().map(|a| (a, Unreachable::RouteWithdrawn))) {
            node.handle_rloc_unreachable(now, rloc, reason);
        }
        shared.flush(&mut node);
        shared.wake_timer_for(&node);
    }
}
