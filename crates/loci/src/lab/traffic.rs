//! Traffic between the lab's namespaces with ping and iperf3, bounded in count and time, and
//! the figures each step measured.

use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use serde_json::Value;

use super::sys::{self, in_ns, Proc};

/// How long the first packets may take to resolve the destination (Map-Request, Map-Reply, and
/// the same for the way back).
const RESOLVE_PATIENCE: Duration = Duration::from_secs(15);
/// UDP payload of the flows: small, so the rate counts packets.
const FLOW_PAYLOAD: u32 = 100;

#[derive(Debug, Serialize)]
pub struct Ping {
    pub from: String,
    pub address: IpAddr,
    /// From the first echo request to the first reply: the resolution on both sides.
    pub first_reply_ms: f64,
    /// Echo requests (one per 100 ms) that went unanswered before the first reply.
    pub lost_resolving: u32,
    pub sent: u32,
    pub received: u32,
    pub loss_pct: f64,
    pub rtt_min_ms: f64,
    pub rtt_avg_ms: f64,
    pub rtt_max_ms: f64,
}

pub fn ping(ns: &str, from: &str, address: IpAddr, count: u32) -> Result<Ping> {
    let dst = address.to_string();
    // An echo request every 100 ms until the first reply (with a deadline, -c counts replies):
    // the first ones are dropped while each side resolves the other.
    let patience = RESOLVE_PATIENCE.as_secs().to_string();
    let start = Instant::now();
    let out = sys::output(&mut in_ns(ns, &["ping", "-n", "-q", "-i", "0.1", "-c", "1", "-w", &patience, &dst]))?;
    let first_reply_ms = start.elapsed().as_secs_f64() * 1000.0;
    sys::check_interrupt()?;
    if !out.status.success() {
        bail!("no reply from {dst} within {patience} s");
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let (sent, _) = ping_counts(&text).with_context(|| format!("unexpected ping output: {text}"))?;
    let lost_resolving = sent.saturating_sub(1);
    let out =
        sys::output(&mut in_ns(ns, &["ping", "-n", "-q", "-c", &count.to_string(), "-i", "0.2", "-W", "1", &dst]))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let (sent, received) = ping_counts(&text).with_context(|| format!("unexpected ping output: {text}"))?;
    let rtt = ping_rtt(&text).unwrap_or([0.0; 3]);
    Ok(Ping {
        from: from.into(),
        address,
        first_reply_ms,
        lost_resolving,
        sent,
        received,
        loss_pct: 100.0 * f64::from(sent - received.min(sent)) / f64::from(sent.max(1)),
        rtt_min_ms: rtt[0],
        rtt_avg_ms: rtt[1],
        rtt_max_ms: rtt[2],
    })
}

#[derive(Debug, Serialize)]
pub struct Mtu {
    pub from: String,
    pub address: IpAddr,
    pub size: u32,
    /// The pings with DF set (always for IPv6).
    pub df: MtuPings,
    /// The pings that may be fragmented (IPv6: by the host, to the path MTU it learnt).
    pub fragmentable: MtuPings,
}

#[derive(Debug, Default, Serialize)]
pub struct MtuPings {
    pub sent: u32,
    pub received: u32,
    /// Echo requests answered with an ICMP too-big (or refused by the host, which had learned
    /// the path MTU from one).
    pub too_big: u32,
    /// The MTU the last too-big named.
    pub mtu: Option<u32>,
    /// Neither answered nor refused.
    pub silent: u32,
}

/// `count` pings of `size` bytes with DF set, then `count` that may be fragmented.
pub fn mtu(ns: &str, from: &str, address: IpAddr, size: u32, count: u32) -> Result<Mtu> {
    let payload = size - if address.is_ipv6() { 48 } else { 28 };
    let run = |df: &str| -> Result<MtuPings> {
        let (c, p, dst) = (count.to_string(), payload.to_string(), address.to_string());
        let out =
            sys::output(&mut in_ns(ns, &["ping", "-n", "-c", &c, "-i", "0.2", "-W", "1", "-M", df, "-s", &p, &dst]))?;
        sys::check_interrupt()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        let (sent, received) = ping_counts(&text).with_context(|| format!("unexpected ping output: {text}"))?;
        let signals: Vec<&str> = text
            .lines()
            .filter(|l| ["Frag needed", "Packet too big", "message too long"].iter().any(|s| l.contains(s)))
            .collect();
        let mtu = signals.last().and_then(|l| {
            let tail = &l[l.rfind("mtu")? + 3..];
            tail.trim_start_matches([' ', '=', ':']).split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
        });
        // ping counts sends the host refused (it had learned the path MTU) as transmitted.
        let too_big = signals.len() as u32;
        Ok(MtuPings { sent, received, too_big, mtu, silent: sent.saturating_sub(received + too_big) })
    };
    let df = run("do")?;
    let fragmentable = run("dont")?;
    Ok(Mtu { from: from.into(), address, size, df, fragmentable })
}

/// "5 packets transmitted, 5 received, ..."
pub fn ping_counts(text: &str) -> Option<(u32, u32)> {
    let line = text.lines().find(|l| l.contains("packets transmitted"))?;
    let mut nums = line.split(',').map(|p| p.split_whitespace().next().and_then(|n| n.parse().ok()));
    Some((nums.next()??, nums.next()??))
}

/// "rtt min/avg/max/mdev = 0.050/0.061/0.080/0.010 ms"
fn ping_rtt(text: &str) -> Option<[f64; 3]> {
    let v = text.lines().find(|l| l.starts_with("rtt") || l.starts_with("round-trip"))?.split('=').nth(1)?;
    let n: Vec<f64> = v.split_whitespace().next()?.split('/').filter_map(|x| x.parse().ok()).collect();
    Some([*n.first()?, *n.get(1)?, *n.get(2)?])
}

/// An iperf3 server on `port` in `ns` for one test, and the client run against it.
fn iperf3(server_ns: &str, client_ns: &str, port: u16, client_args: &[&str], limit: u32, log: &Path) -> Result<Value> {
    let port_s = port.to_string();
    let _server = Proc::spawn("iperf3 -s", in_ns(server_ns, &["iperf3", "-s", "-1", "-p", &port_s]), Some(log))?;
    let limit_s = limit.to_string();
    let mut args = vec!["timeout", &limit_s, "iperf3", "-p", &port_s, "-J"];
    args.extend_from_slice(client_args);
    // Until the server listens, the client gets "connection refused".
    sys::poll("the iperf3 server", Duration::from_secs(10), || {
        let out = sys::output(&mut in_ns(client_ns, &args))?;
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        match v["error"].as_str() {
            Some(e) if e.contains("refused") => Ok(None),
            Some(e) => bail!("iperf3 {}: {e}", client_args.join(" ")),
            None if v.is_null() => {
                bail!("iperf3 {} printed no report: {}", client_args.join(" "), String::from_utf8_lossy(&out.stderr))
            }
            None => Ok(Some(v)),
        }
    })
}

#[derive(Debug, Serialize)]
pub struct Tcp {
    pub from: String,
    pub to: String,
    pub address: IpAddr,
    pub secs: u32,
    pub bytes: u64,
    pub gbit_per_s: f64,
    pub retransmits: u64,
}

pub fn tcp(
    (from_ns, from): (&str, &str),
    (to_ns, to): (&str, &str),
    address: IpAddr,
    secs: u32,
    port: u16,
    log: &Path,
) -> Result<Tcp> {
    let dst = address.to_string();
    let v = iperf3(to_ns, from_ns, port, &["-c", &dst, "-t", &secs.to_string()], secs + 10, log)?;
    let r = &v["end"]["sum_received"];
    Ok(Tcp {
        from: from.into(),
        to: to.into(),
        address,
        secs,
        bytes: r["bytes"].as_u64().unwrap_or(0),
        gbit_per_s: r["bits_per_second"].as_f64().unwrap_or(0.0) / 1e9,
        retransmits: v["end"]["sum_sent"]["retransmits"].as_u64().unwrap_or(0),
    })
}

#[derive(Debug, Serialize)]
pub struct FlowCounts {
    pub flows: u32,
    pub sent: u64,
    pub lost: u64,
    /// Flows of which at least one datagram arrived.
    pub flows_delivered: u32,
}

/// `flows` UDP flows (one iperf3 stream each, so one source port each) of `pps` datagrams per
/// second for `secs`.
pub fn udp_flows(
    from_ns: &str,
    to_ns: &str,
    address: IpAddr,
    (flows, secs, pps): (u32, u32, u32),
    port: u16,
    log: &Path,
) -> Result<FlowCounts> {
    let rate = (u64::from(pps) * u64::from(FLOW_PAYLOAD) * 8).to_string();
    let (dst, n, t, len) = (address.to_string(), flows.to_string(), secs.to_string(), FLOW_PAYLOAD.to_string());
    let args = ["-c", &dst, "-u", "-P", &n, "-t", &t, "-b", &rate, "-l", &len];
    let v = iperf3(to_ns, from_ns, port, &args, secs + 10, log)?;
    let streams = v["end"]["streams"].as_array().cloned().unwrap_or_default();
    let mut c = FlowCounts { flows, sent: 0, lost: 0, flows_delivered: 0 };
    for s in &streams {
        let (p, l) = (s["udp"]["packets"].as_u64().unwrap_or(0), s["udp"]["lost_packets"].as_u64().unwrap_or(0));
        c.sent += p;
        c.lost += l.min(p);
        c.flows_delivered += u32::from(p > l);
    }
    Ok(c)
}

/// Packets the interface `ns` routes `to` over has sent so far.
pub fn tx_towards(ns: &str, to: IpAddr) -> Result<u64> {
    let route: Value =
        serde_json::from_str(&sys::sh(&["ip", "netns", "exec", ns, "ip", "-j", "route", "get", &to.to_string()])?)?;
    let dev = route[0]["dev"].as_str().with_context(|| format!("{ns} has no route to {to}"))?.to_string();
    let link: Value =
        serde_json::from_str(&sys::sh(&["ip", "netns", "exec", ns, "ip", "-j", "-s", "link", "show", "dev", &dev])?)?;
    link[0]["stats64"]["tx"]["packets"].as_u64().with_context(|| format!("no counters for {dev} in {ns}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ping_summary() {
        let text = "PING 10.2.1.5 (10.2.1.5) 56(84) bytes of data.\n\n--- 10.2.1.5 ping statistics ---\n\
                    5 packets transmitted, 4 received, 20% packet loss, time 803ms\n\
                    rtt min/avg/max/mdev = 0.061/0.092/0.151/0.031 ms\n";
        assert_eq!(ping_counts(text), Some((5, 4)));
        assert_eq!(ping_rtt(text), Some([0.061, 0.092, 0.151]));
        assert_eq!(ping_counts("garbage"), None);
        assert_eq!(ping_rtt("5 packets transmitted, 0 received"), None);
    }
}
