//! The `outage` step: ping streams run while one device is taken down and brought back; each
//! stream reports the longest time without replies (the failover gap) and how long after the
//! device returns its ITR sees the primary locator up again (and moves traffic back to it).

use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::sys::{self, in_ns, Proc};

/// Echo requests per second of each stream.
const STREAM_PPS: u32 = 100;
/// Steady traffic before the cut, and after the way back.
const SETTLE: Duration = Duration::from_secs(1);
/// How often the ITRs' locator state is read while the device is back up.
const STATE_POLL: Duration = Duration::from_millis(50);

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Outage {
    /// The device to take down, and the node it is in.
    pub node: String,
    pub dev: String,
    #[serde(default = "default_down_secs")]
    pub down_secs: u32,
    #[serde(default = "default_up_secs")]
    pub up_secs: u32,
    pub streams: Vec<Stream>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Stream {
    pub from: String,
    pub address: IpAddr,
    /// The node whose ITR carries the stream, and the locator the outage takes away from it.
    pub itr: String,
    pub locator: IpAddr,
}

fn default_down_secs() -> u32 {
    5
}
fn default_up_secs() -> u32 {
    5
}

#[derive(Debug, Serialize)]
pub struct OutageResult {
    pub node: String,
    pub dev: String,
    pub down_secs: u32,
    pub up_secs: u32,
    pub streams: Vec<StreamResult>,
}

#[derive(Debug, Serialize)]
pub struct StreamResult {
    pub from: String,
    pub address: IpAddr,
    pub itr: String,
    pub locator: IpAddr,
    pub sent: u32,
    pub received: u32,
    /// The longest time without a reply once the device went down: until traffic flowed over
    /// the next locator (none: no reply came back while it was down).
    pub failover_ms: Option<f64>,
    /// From the device coming back until the ITR had the locator up again (none: not within
    /// `up_secs`).
    pub back_ms: Option<f64>,
    /// The longest time without a reply after the device came back.
    pub back_gap_ms: f64,
}

/// What the lab lends the step: namespaces by node, device up/down, the ITR's locator state.
pub trait Env {
    fn ns(&self, node: &str) -> String;
    fn set_link(&self, node: &str, dev: &str, up: bool) -> Result<()>;
    fn rlocs(&self, node: &str) -> Result<Value>;
}

pub fn run(o: &Outage, env: &impl Env, dir: &Path, tag: usize) -> Result<OutageResult> {
    let secs = SETTLE.as_secs() as u32 * 2 + o.down_secs + o.up_secs + 1;
    let interval = format!("{}", 1.0 / f64::from(STREAM_PPS));
    let mut procs = Vec::new();
    let mut logs = Vec::new();
    for (i, s) in o.streams.iter().enumerate() {
        let log = dir.join(format!("outage-{tag}-{i}.log"));
        let (w, dst) = (secs.to_string(), s.address.to_string());
        let cmd = in_ns(&env.ns(&s.from), &["ping", "-D", "-n", "-i", &interval, "-W", "1", "-w", &w, &dst]);
        procs.push(Proc::spawn(&format!("ping {} -> {dst}", s.from), cmd, Some(&log))?);
        logs.push(log);
    }
    sys::sleep(SETTLE)?;
    let cut = unix_now();
    env.set_link(&o.node, &o.dev, false)?;
    sys::sleep(Duration::from_secs(o.down_secs.into()))?;
    let back = unix_now();
    let back_at = Instant::now();
    env.set_link(&o.node, &o.dev, true)?;
    let mut back_ms: Vec<Option<f64>> = vec![None; o.streams.len()];
    let until = back_at + Duration::from_secs(o.up_secs.into());
    while Instant::now() < until {
        for (s, b) in o.streams.iter().zip(&mut back_ms) {
            if b.is_none() && locator_up(&env.rlocs(&s.itr)?, s.locator) {
                *b = Some(back_at.elapsed().as_secs_f64() * 1000.0);
            }
        }
        sys::sleep(STATE_POLL)?;
    }
    // The pings end by themselves (-w); wait for their summaries.
    for p in &mut procs {
        sys::poll(&p.name.clone(), Duration::from_secs(u64::from(secs) + 5), || Ok(p.exited().map(|_| ())))?;
    }
    let mut streams = Vec::new();
    for ((s, log), back_ms) in o.streams.iter().zip(&logs).zip(back_ms) {
        let text = std::fs::read_to_string(log).with_context(|| format!("cannot read {}", log.display()))?;
        let replies = reply_times(&text);
        let (sent, received) = super::traffic::ping_counts(&text).unwrap_or((0, replies.len() as u32));
        streams.push(StreamResult {
            from: s.from.clone(),
            address: s.address,
            itr: s.itr.clone(),
            locator: s.locator,
            sent,
            received,
            failover_ms: longest_gap(&replies, cut, back),
            back_ms,
            back_gap_ms: longest_gap(&replies, back, f64::MAX).unwrap_or(0.0),
        });
    }
    Ok(OutageResult { node: o.node.clone(), dev: o.dev.clone(), down_secs: o.down_secs, up_secs: o.up_secs, streams })
}

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// Whether `loci show rlocs` lists `locator` as up.
fn locator_up(v: &Value, locator: IpAddr) -> bool {
    let want = locator.to_string();
    v.as_array().is_some_and(|a| a.iter().any(|l| l["locator"] == want.as_str() && l["state"] == "up"))
}

/// The times (`ping -D`) of the replies: "[1700000000.123456] 64 bytes from ...".
fn reply_times(text: &str) -> Vec<f64> {
    text.lines()
        .filter(|l| l.contains("bytes from"))
        .filter_map(|l| l.strip_prefix('[')?.split(']').next()?.parse().ok())
        .collect()
}

/// The longest time without a reply from `from` on, counting only silences that began before
/// `until`, in ms; `None` when no reply came after `from` at all.
fn longest_gap(replies: &[f64], from: f64, until: f64) -> Option<f64> {
    let mut last = replies.iter().rev().find(|&&t| t <= from).copied().unwrap_or(from);
    let mut best: Option<f64> = None;
    for &t in replies.iter().filter(|&&t| t > from) {
        if last < until {
            best = Some(best.unwrap_or(0.0).max(t - last));
        }
        last = t;
    }
    best.map(|g| g * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_and_reply_times() {
        let text = "PING 10.2.1.5 (10.2.1.5) 56(84) bytes of data.\n\
                    [100.000000] 64 bytes from 10.2.1.5: icmp_seq=1 ttl=62 time=0.3 ms\n\
                    [100.010000] 64 bytes from 10.2.1.5: icmp_seq=2 ttl=62 time=0.3 ms\n\
                    From 198.51.100.2 icmp_seq=3 Destination Net Unreachable\n\
                    [100.750000] 64 bytes from 10.2.1.5: icmp_seq=76 ttl=62 time=0.3 ms\n\
                    [100.760000] 64 bytes from 10.2.1.5: icmp_seq=77 ttl=62 time=0.3 ms\n";
        let r = reply_times(text);
        assert_eq!(r, vec![100.0, 100.01, 100.75, 100.76]);
        // Cut at 100.005: silent from 100.01 to 100.75 ...
        let g = longest_gap(&r, 100.005, 101.0).unwrap();
        assert!((g - 740.0).abs() < 0.01, "{g}");
        // ... and after the way back, nothing longer than the stream's spacing (the silence
        // around the moment counts from the reply before it).
        let g = longest_gap(&r, 100.755, f64::MAX).unwrap();
        assert!((g - 10.0).abs() < 0.01, "{g}");
        assert_eq!(longest_gap(&r, 101.0, f64::MAX), None, "no reply after the cut");
        let up = serde_json::json!([{ "locator": "203.0.113.1", "state": "up" }, { "locator": "203.0.113.5", "state": "down" }]);
        assert!(locator_up(&up, "203.0.113.1".parse().unwrap()));
        assert!(!locator_up(&up, "203.0.113.5".parse().unwrap()));
    }
}
