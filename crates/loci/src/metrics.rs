//! Prometheus metrics on an optional TCP listener (`[node] metrics = "127.0.0.1:9100"`).
//!
//! Nothing is counted twice: each scrape reads the counters the node and the data plane keep
//! anyway (`loci show stats` shows the same numbers) into a fresh `metrics` recorder and renders
//! it in the Prometheus text format. A fresh recorder per scrape also means that series of
//! things that went away (a locator that left the map-cache) disappear with them.
//!
//! Metrics (all prefixed `loci_`):
//! - `packets_total`, `bytes_total` {direction = encapsulated | decapsulated | native_forwarded}
//! - `data_plane_drops_total` {reason}, `control_drops_total` {reason}
//! - `messages_received_total`, `messages_sent_total` {type = Map-Request, Map-Reply, ...}
//! - `map_cache_entries`, `map_cache_misses_total`, `map_requests_timed_out_total`
//! - `rloc_up` {rloc} (1 up, 0 down), `rloc_rtt_seconds` {rloc}, `rloc_state_seconds` {rloc}
//!   (time in the current state), `rloc_probes_total` {rloc}
//! - `rloc_failovers_total` (locators marked down), `rloc_recoveries_total`,
//!   `probe_replies_refused_total` {reason}
//! - `registrations`, `uptime_seconds`

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing;
use axum::Router;
use loci_core::node::Node;
use metrics::{counter, gauge};
use metrics_exporter_prometheus::PrometheusBuilder;

use crate::daemon::Shared;

/// At most this many locators get per-locator series (the map-cache bounds them anyway).
const MAX_RLOC_SERIES: usize = 10_000;

/// Binds the metrics listener (so a taken port fails the start, not later).
pub async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot bind the metrics listener {addr}"))
}

/// Serves `GET /metrics` until the process ends.
pub async fn serve(shared: Arc<Shared>, listener: tokio::net::TcpListener) -> anyhow::Result<()> {
    let app = Router::new().route("/metrics", routing::get(scrape)).with_state(shared);
    axum::serve(listener, app).await.context("metrics server failed")
}

async fn scrape(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let data_plane = match shared.data_plane.lock() {
        Ok(dp) => dp.as_ref().map(|d| d.stats()),
        Err(_) => return (StatusCode::INTERNAL_SERVER_ERROR, "data plane lock poisoned").into_response(),
    };
    let uptime = shared.started.elapsed();
    let body = match shared.node.lock() {
        Ok(node) => render(&node, data_plane.as_ref(), uptime, Instant::now()),
        Err(_) => return (StatusCode::INTERNAL_SERVER_ERROR, "node lock poisoned").into_response(),
    };
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

/// The Prometheus text of everything `node` and the data plane count, as of `now`.
pub fn render(node: &Node, data_plane: Option<&loci_dataplane::Stats>, uptime: Duration, now: Instant) -> String {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || record(node, data_plane, uptime, now));
    handle.render()
}

fn record(node: &Node, data_plane: Option<&loci_dataplane::Stats>, uptime: Duration, now: Instant) {
    gauge!("loci_uptime_seconds").set(uptime.as_secs_f64());
    let s = node.stats();
    for (name, n) in &s.received {
        counter!("loci_messages_received_total", "type" => *name).absolute(*n);
    }
    for (name, n) in &s.sent {
        counter!("loci_messages_sent_total", "type" => *name).absolute(*n);
    }
    for (reason, n) in &s.drops {
        counter!("loci_control_drops_total", "reason" => *reason).absolute(*n);
    }
    if let Some(ms) = node.map_server() {
        gauge!("loci_registrations").set(ms.registrations().len() as f64);
    }
    if let Some(d) = data_plane {
        for (dir, packets, bytes) in [
            ("encapsulated", d.encapsulated, Some(d.encapsulated_bytes)),
            ("decapsulated", d.decapsulated, Some(d.decapsulated_bytes)),
            ("native_forwarded", d.native_forwarded, None),
        ] {
            counter!("loci_packets_total", "direction" => dir).absolute(packets);
            if let Some(b) = bytes {
                counter!("loci_bytes_total", "direction" => dir).absolute(b);
            }
        }
        for (reason, n) in &d.drops {
            counter!("loci_data_plane_drops_total", "reason" => *reason).absolute(*n);
        }
    }
    let Some(itr) = node.itr() else { return };
    let st = itr.stats();
    gauge!("loci_map_cache_entries").set(itr.map_cache().len() as f64);
    counter!("loci_map_cache_misses_total").absolute(st.misses);
    counter!("loci_map_requests_timed_out_total").absolute(st.timeouts);
    if let Some(e) = itr.echo_nonce() {
        let es = e.stats();
        for (outcome, n) in [("echoed", es.echoed), ("failed", es.failed), ("inconclusive", es.inconclusive)] {
            counter!("loci_echo_nonce_requests_total", "outcome" => outcome).absolute(n);
        }
    }
    let Some(prober) = itr.prober() else { return };
    let ps = prober.stats();
    counter!("loci_probes_deferred_total").absolute(ps.probes_deferred);
    counter!("loci_rloc_failovers_total").absolute(ps.downs);
    counter!("loci_rloc_recoveries_total").absolute(ps.ups);
    counter!("loci_probe_replies_refused_total", "reason" => "no-matching-nonce").absolute(ps.replies_unmatched);
    counter!("loci_probe_replies_refused_total", "reason" => "wrong-source").absolute(ps.replies_wrong_source);
    counter!("loci_unreachable_hints_total", "outcome" => "applied").absolute(ps.hints_applied);
    counter!("loci_unreachable_hints_total", "outcome" => "unknown").absolute(ps.hints_unknown);
    counter!("loci_unreachable_hints_total", "outcome" => "ignored").absolute(ps.hints_ignored);
    for (addr, l) in prober.locators().take(MAX_RLOC_SERIES) {
        let rloc = addr.to_string();
        gauge!("loci_rloc_up", "rloc" => rloc.clone()).set(if l.up { 1.0 } else { 0.0 });
        gauge!("loci_rloc_state_seconds", "rloc" => rloc.clone())
            .set(now.saturating_duration_since(l.since).as_secs_f64());
        counter!("loci_rloc_probes_total", "rloc" => rloc.clone()).absolute(l.probes);
        if let Some(rtt) = l.rtt {
            gauge!("loci_rloc_rtt_seconds", "rloc" => rloc).set(rtt.as_secs_f64());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use loci_core::config::NodeConfig;
    use loci_core::itr::ItrConfig;
    use loci_core::probing::ProbingConfig;

    #[test]
    fn renders_node_and_data_plane_counters() {
        let t0 = Instant::now();
        let config = NodeConfig {
            name: "x".into(),
            itr: Some(ItrConfig {
                map_resolvers: vec!["192.0.2.10:4342".parse().unwrap()],
                rlocs: vec!["198.51.100.1".parse().unwrap()],
                probing: Some(ProbingConfig::default()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut node = Node::new(config, 1, t0);
        node.handle_miss(t0, 0, "10.1.1.1".parse().unwrap(), "10.9.9.9".parse().unwrap());
        node.handle_datagram(t0, "198.51.100.1:4342".parse().unwrap(), "192.0.2.66:4342".parse().unwrap(), &[]);
        let mut dp = loci_dataplane::Stats { encapsulated: 7, encapsulated_bytes: 700, ..Default::default() };
        dp.drops.insert("no-usable-locator", 2);
        let text = render(&node, Some(&dp), Duration::from_secs(5), t0);
        for line in [
            "loci_messages_sent_total{type=\"Encapsulated-Control-Message\"} 1",
            "loci_control_drops_total{reason=\"malformed\"} 1",
            "loci_packets_total{direction=\"encapsulated\"} 7",
            "loci_bytes_total{direction=\"encapsulated\"} 700",
            "loci_data_plane_drops_total{reason=\"no-usable-locator\"} 2",
            "loci_map_cache_entries 0",
            "loci_map_cache_misses_total 1",
            "loci_rloc_failovers_total 0",
            "loci_probes_deferred_total 0",
            "loci_uptime_seconds 5",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
        }
    }
}
