//! The daemon's HTTP/JSON API on a Unix socket, and the small client `loci show` uses.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing;
use axum::{Json, Router};
use loci_core::eid::EidPrefix;
use loci_core::node::Node;
use loci_wire::Locator;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::daemon::Shared;

type ApiResult = Result<Json<Value>, (StatusCode, String)>;

pub async fn serve(shared: Arc<Shared>, path: PathBuf) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    // A stale socket from a previous run would make bind fail.
    let _ = std::fs::remove_file(&path);
    let listener =
        tokio::net::UnixListener::bind(&path).with_context(|| format!("cannot bind API socket {}", path.display()))?;
    let app = Router::new()
        .route("/stats", routing::get(stats))
        .route("/sites", routing::get(sites))
        .route("/registrations", routing::get(registrations))
        .route("/subscriptions", routing::get(subscriptions))
        .route("/database", routing::get(database))
        .route("/map-cache", routing::get(map_cache))
        .route("/rlocs", routing::get(rlocs))
        .route("/dynamic-eids", routing::get(dynamic_eids))
        .with_state(shared);
    axum::serve(listener, app).await.context("API server failed")
}

fn with_node<T>(shared: &Shared, f: impl FnOnce(&Node) -> T) -> Result<T, (StatusCode, String)> {
    let node = shared.node.lock().map_err(|_| (StatusCode::INTERNAL_SERVER_ERROR, "node lock poisoned".to_string()))?;
    Ok(f(&node))
}

async fn stats(State(shared): State<Arc<Shared>>) -> ApiResult {
    let uptime = shared.started.elapsed().as_secs();
    let data_plane = match shared.data_plane.lock() {
        Ok(dp) => dp.as_ref().map(|dp| {
            let s = dp.stats();
            json!({
                "encapsulated": s.encapsulated,
                "encapsulated_bytes": s.encapsulated_bytes,
                "decapsulated": s.decapsulated,
                "decapsulated_bytes": s.decapsulated_bytes,
                "native_forwarded": s.native_forwarded,
                "misses_reported": s.misses_reported,
                "misses_suppressed": s.misses_suppressed,
                "drops": s.drops,
            })
        }),
        Err(_) => return Err((StatusCode::INTERNAL_SERVER_ERROR, "data plane lock poisoned".into())),
    };
    with_node(&shared, |n| {
        let s = n.stats();
        let registrations = n.map_server().map(|m| m.registrations().len());
        Json(json!({
            "node": n.name,
            "uptime_secs": uptime,
            "received": s.received,
            "sent": s.sent,
            "drops": s.drops,
            "site_drops": s.site_drops,
            "tolerated": s.tolerated,
            "negative_replies": s.negative_replies,
            "proxy_replies": s.proxy_replies,
            "forwarded_requests": s.forwarded_requests,
            "registrations_expired": s.registrations_expired,
            "registrations": registrations,
            "itr": n.itr().map(itr_stats),
            "data_plane": data_plane,
            "mobility": mobility_stats(&s.mobility, shared.mobility.as_ref()),
        }))
    })
}

/// The node's mobility counters and the data plane's (detection, host routes, away traffic);
/// null on nodes without any.
fn mobility_stats(m: &loci_core::stats::MobilityStats, dp: Option<&crate::mobility::Mobility>) -> Value {
    if dp.is_none() && *m == loci_core::stats::MobilityStats::default() {
        return Value::Null;
    }
    let mut v = json!({
        "hosts_detected": m.hosts_detected,
        "hosts_outside_ranges": m.hosts_outside_ranges,
        "hosts_refused": m.hosts_refused,
        "probes": m.probes,
        "hosts_silent": m.hosts_silent,
        "moves_away": m.moves_away,
        "group_notifies_sent": m.group_notifies_sent,
        "group_notifies_accepted": m.group_notifies_accepted,
        "away_packets": m.away_packets,
        "smrs_sent": m.smrs_sent,
        "smrs_suppressed": m.smrs_suppressed,
        "smrs_received": m.smrs_received,
        "smrs_accepted": m.smrs_accepted,
        "smrs_ignored": m.smrs_ignored,
        "smrs_rate_limited": m.smrs_rate_limited,
        "moves": m.moves,
        "move_notifies": m.move_notifies,
        "stale_registrations": m.stale_registrations,
        "notifies_pushed": m.notifies_pushed,
        "notifies_acked": m.notifies_acked,
        "publications_applied": m.publications_applied,
        "forged_notifies": m.forged_notifies,
        "replayed_notifies": m.replayed_notifies,
    });
    if let (Some(dp), Some(o)) = (dp, v.as_object_mut()) {
        if let Value::Object(d) = dp.stats() {
            o.extend(d);
        }
    }
    v
}

/// `loci show dynamic-eids`: the hosts this xTR serves as dynamic EIDs.
async fn dynamic_eids(State(shared): State<Arc<Shared>>) -> ApiResult {
    let now = Instant::now();
    with_node(&shared, |n| {
        Json(Value::Array(
            n.dynamic_eids()
                .iter()
                .take(10_000)
                .map(|h| {
                    json!({
                        "prefix": h.prefix.to_string(),
                        "iid": h.prefix.iid,
                        "interface": h.interface,
                        "mode": match h.mode {
                            loci_core::config::MobilityMode::ExtendedSubnet => "extended-subnet",
                            loci_core::config::MobilityMode::AcrossSubnet => "across-subnet",
                        },
                        "since_secs_ago": now.saturating_duration_since(h.since).as_secs(),
                        "last_seen_secs_ago": now.saturating_duration_since(h.last_seen).as_secs(),
                        "state": h.state.name(),
                    })
                })
                .collect(),
        ))
    })
}

fn itr_stats(itr: &loci_core::itr::Itr) -> Value {
    let s = itr.stats();
    let mut v = json!({
        "map_cache_entries": itr.map_cache().len(),
        "pending": itr.pending_len(),
        "misses": s.misses,
        "misses_cached": s.misses_cached,
        "misses_pending": s.misses_pending,
        "misses_dropped": s.misses_dropped,
        "requests": s.requests,
        "timeouts": s.timeouts,
        "hold_downs": s.hold_downs,
        "requests_delayed": s.requests_delayed,
        "replies_accepted": s.replies_accepted,
        "replies_unmatched": s.replies_unmatched,
        "records_refused": s.records_refused,
        "installed": s.installed,
        "negative_installed": s.negative_installed,
        "refreshes": s.refreshes,
        "expired": s.expired,
        "evicted": s.evicted,
    });
    let mut counters: Vec<(&str, u64)> = Vec::new();
    if let Some(p) = itr.prober() {
        let p = p.stats();
        counters.extend([
            ("probes_sent", p.probes_sent),
            ("probes_deferred", p.probes_deferred),
            ("probe_replies", p.replies),
            ("probe_replies_unmatched", p.replies_unmatched),
            ("probe_replies_wrong_source", p.replies_wrong_source),
            ("probes_missed", p.misses),
            ("rloc_failovers", p.downs),
            ("rloc_recoveries", p.ups),
            ("status_bits_applied", p.status_bits_applied),
            ("status_bits_refused", p.status_bits_refused),
            ("status_bits_rate_limited", p.status_bits_rate_limited),
            ("unreachable_hints_applied", p.hints_applied),
            ("unreachable_hints_unknown", p.hints_unknown),
            ("unreachable_hints_ignored", p.hints_ignored),
        ]);
    }
    if let Some(e) = itr.echo_nonce() {
        let e = e.stats();
        counters.extend([
            ("echo_requests", e.requests),
            ("echo_echoed", e.echoed),
            ("echo_failed", e.failed),
            ("echo_inconclusive", e.inconclusive),
        ]);
    }
    if let Some(m) = v.as_object_mut() {
        m.extend(counters.into_iter().map(|(k, n)| (k.to_string(), n.into())));
    }
    v
}

async fn sites(State(shared): State<Arc<Shared>>) -> ApiResult {
    with_node(&shared, |n| {
        let Some(ms) = n.map_server() else { return Json(json!([])) };
        let mut counts = vec![0usize; ms.sites().len()];
        for (_, r) in ms.registrations().iter() {
            counts[r.site] += 1;
        }
        let drops = &n.stats().site_drops;
        Json(Value::Array(
            ms.sites()
                .iter()
                .zip(counts)
                .map(|(s, registered)| {
                    json!({
                        "name": s.config.name,
                        "eid_prefixes": s.config.eid_prefixes.iter().map(|p| json!({
                            "prefix": p.prefix.to_string(),
                            "accept_more_specifics": p.accept_more_specifics,
                        })).collect::<Vec<_>>(),
                        "registered": registered,
                        "pubsub": s.config.pubsub.is_some(),
                        "drops": drops.get(&s.config.name),
                    })
                })
                .collect(),
        ))
    })
}

#[derive(Deserialize)]
struct RegFilter {
    iid: Option<u32>,
    prefix: Option<String>,
}

fn locators(l: &[Locator]) -> Value {
    Value::Array(
        l.iter()
            .map(|l| json!({"address": l.address.to_string(), "priority": l.priority, "weight": l.weight, "reachable": l.reachable}))
            .collect(),
    )
}

fn secs_until(t: Instant, now: Instant) -> u64 {
    t.saturating_duration_since(now).as_secs()
}

async fn registrations(State(shared): State<Arc<Shared>>, Query(f): Query<RegFilter>) -> ApiResult {
    let want: Option<EidPrefix> = match &f.prefix {
        Some(p) => Some(p.parse().map_err(|e| (StatusCode::BAD_REQUEST, format!("bad prefix {p}: {e}")))?),
        None => None,
    };
    let now = Instant::now();
    with_node(&shared, |n| {
        let Some(ms) = n.map_server() else { return Json(json!([])) };
        let mut rows: Vec<_> = ms
            .registrations()
            .iter()
            .filter(|(p, _)| f.iid.is_none_or(|i| p.iid == i))
            .filter(|(p, _)| want.is_none_or(|w| w.covers(p)))
            .take(10_000)
            .map(|(p, r)| {
                json!({
                    "prefix": p.to_string(),
                    "site": ms.sites()[r.site].config.name,
                    "locators": locators(&r.locators()),
                    "xtrs": r.xtrs.iter().map(|x| json!({
                        "registrant": x.registrant.to_string(),
                        "source": x.source.to_string(),
                        "locators": locators(&x.locators),
                        "ttl_minutes": x.ttl,
                        "proxy_reply": x.proxy_reply,
                        "merge": x.merge,
                        "registered_secs_ago": now.saturating_duration_since(x.first_registered).as_secs(),
                        "refreshed_secs_ago": now.saturating_duration_since(x.last_registered).as_secs(),
                        "expires_in_secs": secs_until(x.expires, now),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        rows.sort_by(|a, b| a["prefix"].as_str().cmp(&b["prefix"].as_str()));
        Json(Value::Array(rows))
    })
}

async fn subscriptions(State(shared): State<Arc<Shared>>) -> ApiResult {
    with_node(&shared, |n| {
        let Some(ms) = n.map_server() else { return Json(json!([])) };
        Json(Value::Array(
            ms.subscriptions()
                .iter()
                .take(10_000)
                .map(|(p, s)| {
                    json!({
                        "prefix": p.to_string(),
                        "xtr_id": format!("{:032x}", s.xtr.xtr_id),
                        "site_id": s.xtr.site_id,
                        "itr_rlocs": s.itr_rlocs.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
                        "awaiting_ack": s.pending.is_some(),
                    })
                })
                .collect(),
        ))
    })
}

async fn database(State(shared): State<Arc<Shared>>) -> ApiResult {
    let now = Instant::now();
    with_node(&shared, |n| {
        let Some(etr) = n.etr() else { return Json(json!({"mappings": [], "map_servers": []})) };
        Json(json!({
            "mappings": etr.database().iter().map(|(p, m)| json!({
                "prefix": p.to_string(),
                "locators": locators(&m.locators),
            })).collect::<Vec<_>>(),
            "map_servers": etr.registrations().iter().map(|r| json!({
                "address": r.peer.address.to_string(),
                "acknowledged_secs_ago": r.acknowledged.map(|t| now.saturating_duration_since(t).as_secs()),
                "awaiting_notify": !r.outstanding.is_empty(),
                "next_register_in_secs": secs_until(r.next, now),
            })).collect::<Vec<_>>(),
        }))
    })
}

#[derive(Deserialize)]
struct IidFilter {
    iid: Option<u32>,
}

async fn map_cache(State(shared): State<Arc<Shared>>, Query(f): Query<IidFilter>) -> ApiResult {
    let now = Instant::now();
    with_node(&shared, |n| {
        // Hosts that moved away from this xTR: re-encapsulated to their new RLOCs.
        let away = n.away_entries().into_iter().filter(|a| f.iid.is_none_or(|i| a.prefix.iid == i)).map(|a| {
            json!({
                "prefix": a.prefix.to_string(),
                "iid": a.prefix.iid,
                "locators": a.rlocs.iter().map(|r| json!({ "address": r.to_string() })).collect::<Vec<_>>(),
                "negative": false,
                "away": true,
                "since_secs_ago": now.saturating_duration_since(a.since).as_secs(),
                "expires_in_secs": secs_until(a.expires, now),
            })
        });
        let Some(itr) = n.itr() else { return Json(Value::Array(away.collect())) };
        Json(Value::Array(
            itr.map_cache()
                .iter()
                .filter(|m| f.iid.is_none_or(|i| m.prefix.iid == i))
                .take(10_000)
                .map(|m| {
                    json!({
                        "prefix": m.prefix.to_string(),
                        "iid": m.prefix.iid,
                        "locators": m.rlocs.iter().map(|r| json!({
                            "address": r.addr.to_string(),
                            "priority": r.priority,
                            "weight": r.weight,
                            "reachable": r.reachable,
                            "down": r.down,
                        })).collect::<Vec<_>>(),
                        "negative": m.is_negative(),
                        "action": m.action.to_string(),
                        "authoritative": m.authoritative,
                        "ttl_secs": m.ttl.as_secs(),
                        "expires_in_secs": secs_until(m.expires, now),
                        "used_recently": m.used_recently(),
                        "away": false,
                    })
                })
                .chain(away)
                .collect(),
        ))
    })
}

/// Each locator of the map-cache with its reachability: probed (up or down, last RTT, since
/// when) or, with probing off, "not-probed".
async fn rlocs(State(shared): State<Arc<Shared>>) -> ApiResult {
    let now = Instant::now();
    with_node(&shared, |n| {
        let Some(itr) = n.itr() else { return Json(json!([])) };
        let cache = itr.map_cache();
        let mut rows: Vec<(std::net::IpAddr, Value)> = match itr.prober() {
            Some(p) => p
                .locators()
                .take(10_000)
                .map(|(a, l)| {
                    let row = json!({
                        "locator": a.to_string(),
                        "state": if l.up { "up" } else { "down" },
                        "fast_failover": l.fast,
                        "rtt_ms": l.rtt.map(|d| (d.as_secs_f64() * 1e4).round() / 10.0),
                        "since_secs": now.saturating_duration_since(l.since).as_secs(),
                        "last_reply_secs_ago": l.last_reply.map(|t| now.saturating_duration_since(t).as_secs()),
                        "misses": l.misses,
                        "probes": l.probes,
                        "replies": l.replies,
                        "entries": cache.locator_uses(a),
                        "echo": itr.echo_nonce().and_then(|e| e.locator(a)).map(|e| json!({
                            "state": e.state(),
                            "last_echo_secs_ago": e.last_echo.map(|t| now.saturating_duration_since(t).as_secs()),
                            "failures": e.failures,
                        })),
                    });
                    (a, row)
                })
                .collect(),
            None => cache
                .locators()
                .take(10_000)
                .map(|(a, _)| {
                    let row =
                        json!({"locator": a.to_string(), "state": "not-probed", "entries": cache.locator_uses(a)});
                    (a, row)
                })
                .collect(),
        };
        rows.sort_by_key(|(a, _)| *a);
        Json(Value::Array(rows.into_iter().map(|(_, v)| v).collect()))
    })
}

/// GETs `path` from the API socket and returns the JSON body.
pub async fn get(socket: &Path, path: &str) -> anyhow::Result<Value> {
    let mut s = tokio::net::UnixStream::connect(socket)
        .await
        .with_context(|| format!("cannot reach the daemon's API at {} (is `loci run` running?)", socket.display()))?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: loci\r\nConnection: close\r\n\r\n").as_bytes()).await?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").context("malformed HTTP response")?;
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        bail!("API {path}: HTTP {status}: {body}");
    }
    serde_json::from_str(body).with_context(|| format!("API {path}: invalid JSON"))
}
