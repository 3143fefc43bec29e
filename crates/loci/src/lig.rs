//! `loci lig` and `loci rig`: ask the mapping system for an EID like RFC 6835's lig.
//!
//! lig sends an Encapsulated Map-Request to a Map-Resolver; rig sends a plain Map-Request
//! straight to one Map-Server. Either way the answer (from the Map-Server by proxy, from the
//! ETR, or negative) comes back to our socket, matched by nonce.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use loci_core::eid::EidPrefix;
use loci_core::mapping::{eid_from_wire, encapsulate_request, map_request};
use loci_wire::message::ControlMessage;
use loci_wire::{Address, MapRecord, Wire};
use serde_json::{json, Value};
use tokio::net::UdpSocket;

/// What came back for one query.
pub struct Answer {
    pub from: SocketAddr,
    pub rtt: Duration,
    pub records: Vec<MapRecord>,
    pub kind: &'static str,
}

/// Sends a Map-Request for `eid` to `server` (encapsulated when `encapsulate`) and waits for
/// the matching answer. Replies whose nonce does not match are ignored.
pub async fn query(server: SocketAddr, eid: EidPrefix, encapsulate: bool, timeout: Duration) -> anyhow::Result<Answer> {
    let bind: SocketAddr = if server.is_ipv4() { "0.0.0.0:0".parse()? } else { "[::]:0".parse()? };
    // A connected probe socket tells which local address routes to the server; the real
    // socket is unconnected because the answer may come from an ETR rather than the server.
    let probe = UdpSocket::bind(bind).await?;
    probe.connect(server).await.with_context(|| format!("no route to {server}"))?;
    let socket = UdpSocket::bind(SocketAddr::new(probe.local_addr()?.ip(), 0)).await?;
    let local = socket.local_addr()?;
    let nonce: u64 = rand::random();
    let req = map_request(nonce, &eid, vec![Address::from(local.ip())]);
    let bytes =
        if encapsulate { encapsulate_request(local.ip(), local.port(), &req).to_bytes() } else { req.to_bytes() };
    let start = Instant::now();
    socket.send_to(&bytes, server).await?;
    let mut buf = vec![0u8; 9216];
    let deadline = start + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let (n, from) = match tokio::time::timeout(left, socket.recv_from(&mut buf)).await {
            Ok(r) => r?,
            Err(_) => bail!("no answer from {server} within {timeout:?}"),
        };
        let (kind, records, got) = match ControlMessage::parse(&buf[..n]) {
            Ok(ControlMessage::MapReply(r)) => ("Map-Reply", r.records, r.nonce),
            Ok(ControlMessage::MapNotify(r)) => ("Map-Notify", r.records, r.nonce),
            _ => continue,
        };
        if got == nonce {
            return Ok(Answer { from, rtt: start.elapsed(), records, kind });
        }
    }
}

/// Human-readable rendering of an answer, like lig's.
pub fn render(eid: &EidPrefix, a: &Answer) -> String {
    let mut out = format!("Received {} from {} with rtt {:.3} ms\n", a.kind, a.from, a.rtt.as_secs_f64() * 1e3);
    for r in &a.records {
        let prefix = eid_from_wire(&r.eid, r.eid_mask_len)
            .map_or_else(|| format!("{}/{}", r.eid, r.eid_mask_len), |p| p.to_string());
        out += &format!("Mapping entry for EID {}:\n", eid.net.addr());
        if r.locators.is_empty() {
            out += &format!("{prefix}, record ttl: {} min, negative, action: {}\n", r.ttl, r.action);
            continue;
        }
        out += &format!(
            "{prefix}, record ttl: {} min, auth-bit: {}, action: {}, version: {}\n",
            r.ttl,
            u8::from(r.authoritative),
            r.action,
            r.map_version
        );
        out += "  Locator                                  State  Priority/Weight\n";
        for l in &r.locators {
            let state = if l.reachable { "up" } else { "down" };
            out += &format!("  {:<40} {:<6} {}/{}\n", l.address.to_string(), state, l.priority, l.weight);
        }
    }
    out
}

pub fn to_json(a: &Answer) -> Value {
    json!({
        "from": a.from.to_string(),
        "message": a.kind,
        "rtt_ms": a.rtt.as_secs_f64() * 1e3,
        "records": a.records.iter().map(|r| json!({
            "prefix": eid_from_wire(&r.eid, r.eid_mask_len).map(|p| p.to_string()),
            "ttl_minutes": r.ttl,
            "action": r.action.name(),
            "authoritative": r.authoritative,
            "locators": r.locators.iter().map(|l| json!({
                "address": l.address.to_string(), "priority": l.priority, "weight": l.weight, "reachable": l.reachable,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

/// Parses an EID argument: an address (host prefix) or a prefix, in instance `iid`.
pub fn parse_eid(s: &str, iid: u32) -> anyhow::Result<EidPrefix> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        let len = if ip.is_ipv4() { 32 } else { 128 };
        return Ok(EidPrefix::new(iid, ipnet::IpNet::new(ip, len)?));
    }
    let net: ipnet::IpNet = s.parse().with_context(|| format!("{s:?} is neither an address nor a prefix"))?;
    Ok(EidPrefix::new(iid, net))
}
