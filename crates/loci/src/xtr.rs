//! The xTR data plane inside the daemon: loci-dataplane's workers read the node's map-cache
//! snapshots without locks, and the destinations they miss come back here to the node, which
//! sends the Map-Requests.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use loci_core::node::Node;
use loci_core::probing::StatusBits;
use loci_dataplane::{DataPlane, Miss};
use tokio::sync::mpsc;

use crate::daemon::Shared;

/// Misses waiting for the control plane; more are dropped (and counted by the data plane):
/// the next packet to the destination reports it again.
const MISS_QUEUE: usize = 1024;

/// Locator-status bit changes waiting for the control plane; more are dropped (the next packet
/// carrying them reports them again).
const STATUS_QUEUE: usize = 256;

/// Creates the TUN devices and routes and starts the workers; with `away` (host mobility) the
/// ETR re-encapsulates packets for hosts that moved. The second receiver carries locator-status
/// bits when they are honoured (`[xtr.probing] locator-status-bits`).
pub fn start(
    cfg: &loci_dataplane::Config,
    node: &Node,
    away: Option<(loci_dataplane::Away, Arc<loci_dataplane::AwayCounters>)>,
) -> anyhow::Result<(DataPlane, mpsc::Receiver<Miss>, Option<mpsc::Receiver<StatusBits>>)> {
    let (tx, rx) = mpsc::channel(MISS_QUEUE);
    let reader = node.itr().map(|i| i.reader());
    let sink: loci_dataplane::MissSink = Arc::new(move |m| tx.try_send(m).is_ok());
    let honoured = node.itr().and_then(|i| i.config().probing.as_ref()).is_some_and(|p| p.status_bits);
    let (status_sink, status_rx) = if honoured {
        let (tx, rx) = mpsc::channel(STATUS_QUEUE);
        let sink: loci_dataplane::StatusSink = Arc::new(move |c| tx.try_send(c).is_ok());
        (Some(sink), Some(rx))
    } else {
        (None, None)
    };
    let echo = node.itr().and_then(|i| i.echo_nonce()).map(|e| e.table());
    let hooks = loci_dataplane::Hooks { away, status: status_sink, echo };
    let dp =
        DataPlane::start_with(cfg, reader, sink, hooks).context("cannot start the data plane (needs CAP_NET_ADMIN)")?;
    Ok((dp, rx, status_rx))
}

/// Hands locator-status bit changes to the node (which publishes a new map-cache).
pub async fn status_bits(shared: Arc<Shared>, mut rx: mpsc::Receiver<StatusBits>) {
    while let Some(c) = rx.recv().await {
        let Ok(mut node) = shared.node.lock() else { return };
        let now = Instant::now();
        node.handle_status_bits(now, &c);
        while let Ok(c) = rx.try_recv() {
            node.handle_status_bits(now, &c);
        }
    }
}

/// Hands misses to the node, a burst at a time under one lock, and sends its Map-Requests.
pub async fn misses(shared: Arc<Shared>, mut rx: mpsc::Receiver<Miss>) {
    while let Some(first) = rx.recv().await {
        let Ok(mut node) = shared.node.lock() else { return };
        let now = Instant::now();
        node.handle_miss(now, first.iid, first.dst, first.src);
        for _ in 0..256 {
            let Ok(m) = rx.try_recv() else { break };
            node.handle_miss(now, m.iid, m.dst, m.src);
        }
        shared.flush(&mut node);
        // Retransmissions are due a second from now.
        shared.wake_timer_for(&node);
    }
}
