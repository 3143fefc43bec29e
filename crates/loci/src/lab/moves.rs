//! Host-mobility steps of `loci lab`: wait for a host to become a dynamic EID, and move a host
//! between site bridges while a remote client sends it a numbered UDP stream (iperf3, which
//! numbers its datagrams and counts the lost ones) and keeps a TCP connection to it open.
//!
//! The move re-attaches the switch-side end of the host's veth to the other site's bridge, as
//! a hypervisor moves a guest's port, and the host then sends a gratuitous ARP (`arping -U`,
//! started ahead and released at once) as a hypervisor makes a moved guest do: across subnets that is its first packet at the new site;
//! over a LAN extension (extended subnet) it floods to both sites and counts at neither, and the
//! host's next frame to the gateway MAC (a TCP ACK of the connection held open) is.
//!
//! From the re-attachment three threads poll the daemons' APIs back to back, one request a round
//! (the mean round is reported as the resolution): when the new xTR serves the host
//! (detection), when the old one let it go, and when the client's xTR has the new RLOC in its
//! map-cache. Convergence is detection to that map-cache entry; the client's xTR's counters at
//! that moment say which path updated it: a pushed publication (pub/sub, RFC 9437) or an
//! SMR-invoked Map-Request. Loss is what iperf3 counted, against a budget of the packets sent
//! while the port was detached plus 20 ms (issue 7's target).

use std::io::Write;
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ipnet::IpNet;
use serde::Serialize;
use serde_json::Value;

use super::sys::{self, in_ns, Proc};
use super::topology::Move;
use super::Lab;
use crate::ShowWhat;

/// UDP payload of the stream: small, so the rate counts packets.
const PAYLOAD: u32 = 100;
/// Rate of the TCP connection held open during the move (bits/s): light, always busy.
const TCP_RATE: &str = "2M";
/// How long the move may take to converge.
const CONVERGE_PATIENCE: Duration = Duration::from_secs(10);
/// Pause between polling rounds: short, so a round's duration is the measurement's resolution.
const POLL: Duration = Duration::from_micros(200);
/// The loss budget beyond the packets sent while the port was detached (issue 7).
const LOSS_SLACK: Duration = Duration::from_millis(20);

/// The address of a prefix as the API prints it (`10.1.9.10/32`, `[7]10.1.9.10/32`).
fn prefix_net(v: &Value) -> Option<IpNet> {
    let s = v.as_str()?;
    let s = s.rsplit(']').next()?;
    s.parse().ok()
}

fn rows(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or_default()
}

/// Whether `node` serves `host` as a dynamic EID.
fn serves(lab: &Lab, node: &str, host: IpAddr) -> Result<bool> {
    let v = lab.show(node, ShowWhat::DynamicEids)?;
    Ok(rows(&v).iter().any(|h| prefix_net(&h["prefix"]).is_some_and(|n| n.addr() == host)))
}

/// The locators `node`'s map-cache has for `host` (`away` entries, or the ITR's own).
fn cached(lab: &Lab, node: &str, host: IpAddr, away: bool) -> Result<Vec<IpAddr>> {
    let v = lab.show(node, ShowWhat::MapCache)?;
    let entry = rows(&v)
        .iter()
        .filter(|m| (m["away"] == true) == away && m["negative"] != true)
        .find(|m| prefix_net(&m["prefix"]).is_some_and(|n| n.contains(&host)));
    Ok(entry
        .map(|m| rows(&m["locators"]).iter().filter_map(|l| l["address"].as_str()?.parse().ok()).collect())
        .unwrap_or_default())
}

#[derive(Debug, Serialize)]
pub struct Detected {
    pub node: String,
    pub host: IpAddr,
    pub secs: f64,
}

impl Detected {
    pub fn render(&self) -> String {
        format!("detected     {} serves {} (registered) after {:.1} s\n", self.node, self.host, self.secs)
    }
}

/// Waits until `node` serves `host` and a Map-Server acknowledged a registration.
pub fn detected(lab: &Lab, node: &str, host: IpAddr, secs: u64) -> Result<Detected> {
    let start = Instant::now();
    sys::poll(&format!("{node} to serve {host}"), Duration::from_secs(secs), || {
        if !serves(lab, node, host)? {
            return Ok(None);
        }
        // Its Map-Register was acknowledged (the Map-Notify that answers it).
        let stats = lab.show(node, ShowWhat::Stats)?;
        Ok((stats["received"]["Map-Notify"].as_u64() > Some(0)).then_some(()))
    })?;
    Ok(Detected { node: node.into(), host, secs: start.elapsed().as_secs_f64() })
}

#[derive(Debug, Serialize)]
pub struct MoveResult {
    pub host: String,
    pub address: IpAddr,
    pub old: String,
    pub new: String,
    pub pps: u32,
    /// Datagrams of the stream sent, and lost (iperf3's count).
    pub sent: u64,
    pub lost: u64,
    /// The loss as time at the stream's rate.
    pub outage_ms: f64,
    /// How long the host's port was off both bridges (the re-attachment's commands).
    pub detached_ms: f64,
    /// Packets the stream sent while the port was detached, plus 20 ms of them: the most the
    /// move may lose.
    pub loss_budget: u64,
    /// From the re-attachment (the host's first packet follows at once) to: the new xTR serving
    /// the host, the old one no longer serving it, the client's xTR caching the new RLOC.
    pub detected_ms: Option<f64>,
    pub withdrawn_ms: Option<f64>,
    pub converged_ms: Option<f64>,
    /// From detection at the new xTR to the client's xTR caching the new RLOC.
    pub convergence_ms: Option<f64>,
    /// The mean polling round: how precise the three times above are.
    pub resolution_ms: f64,
    /// What updated the client's xTR first: "pub/sub" (a publication applied), "SMR" (an
    /// SMR-invoked Map-Request) or "none" (it never followed, or by neither).
    pub path: String,
    /// The client's xTR's counters over the move: publications applied, SMRs accepted.
    pub publications_applied: u64,
    pub smrs_accepted: u64,
    /// The TCP connection held open across the move.
    pub tcp_ok: bool,
    pub tcp_error: Option<String>,
    pub tcp_bytes: u64,
    pub tcp_retransmits: u64,
    /// Where the old xTR's away entry sends the host's packets, and how many it re-encapsulated
    /// and SMRs it sent meanwhile.
    pub away_to: Vec<IpAddr>,
    pub reencapsulated: u64,
    pub smrs_sent: u64,
    /// Announcements the old xTR accepted from the new one on the map-notify-group.
    pub group_notifies: u64,
    /// Afterwards: who serves the host.
    pub new_serves: bool,
    pub old_serves: bool,
    /// The client's xTR's locators for the host afterwards.
    pub itr_locators: Vec<IpAddr>,
}

impl MoveResult {
    pub fn render(&self) -> String {
        let ms = |v: Option<f64>| v.map_or("never".to_string(), |v| format!("{v:.0} ms"));
        let mut s = format!(
            "move         {} ({}) from {} to {}: stream of {} pkt/s, {} sent, {} lost (~{:.0} ms at that rate; port detached for {:.0} ms, budget {} packets)\n",
            self.host, self.address, self.old, self.new, self.pps, self.sent, self.lost, self.outage_ms, self.detached_ms, self.loss_budget
        );
        s += &format!(
            "             after re-attachment: {} serves it at {}, {} let go at {}, remote ITR converged at {}\n",
            self.new,
            ms(self.detected_ms),
            self.old,
            ms(self.withdrawn_ms),
            ms(self.converged_ms)
        );
        s += &format!(
            "             convergence (detection at {} to the remote ITR's new entry): {} by {} (±{:.1} ms; {} publications applied, {} SMRs accepted)\n",
            self.new,
            self.convergence_ms.map_or("never".to_string(), |v| format!("{v:.1} ms")),
            self.path,
            self.resolution_ms,
            self.publications_applied,
            self.smrs_accepted
        );
        s += &format!(
            "             TCP connection {} ({:.1} MB, {} retransmits); {} away -> {:?}: {} re-encapsulated, {} SMRs sent, {} map-notify-group announcements accepted\n",
            if self.tcp_ok { "survived".to_string() } else { format!("failed: {}", self.tcp_error.as_deref().unwrap_or("?")) },
            self.tcp_bytes as f64 / 1e6,
            self.tcp_retransmits,
            self.old,
            self.away_to,
            self.reencapsulated,
            self.smrs_sent,
            self.group_notifies
        );
        s
    }
}

/// iperf3's JSON report in `path` (the file also holds whatever it wrote to stderr).
fn report(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let start = text.find('{').with_context(|| format!("no iperf3 report in {}: {text}", path.display()))?;
    let mut de = serde_json::Deserializer::from_str(&text[start..]).into_iter::<Value>();
    de.next().context("empty iperf3 report")?.with_context(|| format!("bad iperf3 report in {}", path.display()))
}

/// Waits until every TCP port in `ports` listens in `ns`.
fn listening(ns: &str, ports: &[u16]) -> Result<()> {
    sys::poll("the iperf3 servers", Duration::from_secs(10), || {
        let out = sys::output(&mut in_ns(ns, &["ss", "-Hltn"]))?;
        let text = String::from_utf8_lossy(&out.stdout);
        Ok(ports.iter().all(|p| text.contains(&format!(":{p} "))).then_some(()))
    })
}

/// The host's end of the link whose switch-side end is the moved port.
fn host_dev(lab: &Lab, m: &Move) -> Result<String> {
    lab.topo
        .links
        .iter()
        .find_map(|l| {
            let [a, b] = &l.ends;
            let port = |e: &super::topology::End| e.node == m.from && e.dev == m.port;
            if port(b) && a.node == m.host {
                Some(a.dev.clone())
            } else if port(a) && b.node == m.host {
                Some(b.dev.clone())
            } else {
                None
            }
        })
        .with_context(|| format!("port {} of {} is not linked to host {}", m.port, m.from, m.host))
}

/// When (ms after `t0`) a watched condition first held, what it said then, and the mean
/// polling round (the time's resolution).
struct Seen<T> {
    at_ms: Option<f64>,
    value: Option<T>,
    round_ms: f64,
}

fn joined<T>(h: std::thread::ScopedJoinHandle<'_, Result<Seen<T>>>) -> Result<Seen<T>> {
    h.join().unwrap_or_else(|_| bail!("a watcher panicked"))
}

/// Polls `f` until it returns a value, for at most `CONVERGE_PATIENCE` after `t0`.
fn watch<T>(t0: Instant, mut f: impl FnMut() -> Result<Option<T>>) -> Result<Seen<T>> {
    let mut rounds = 0u32;
    let mut seen = Seen { at_ms: None, value: None, round_ms: 0.0 };
    while t0.elapsed() < CONVERGE_PATIENCE {
        sys::check_interrupt()?;
        rounds += 1;
        if let Some(v) = f()? {
            seen = Seen { at_ms: Some(t0.elapsed().as_secs_f64() * 1000.0), value: Some(v), round_ms: 0.0 };
            break;
        }
        std::thread::sleep(POLL);
    }
    seen.round_ms = t0.elapsed().as_secs_f64() * 1000.0 / f64::from(rounds);
    Ok(seen)
}

fn counter(v: &Value, key: &str) -> u64 {
    v["mobility"][key].as_u64().unwrap_or(0)
}

pub fn run(lab: &Lab, m: &Move, port: u16, dir: &Path) -> Result<MoveResult> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let (hns, cns) = (lab.ns(&m.host), lab.ns(&m.client));
    let (udp_port, tcp_port) = (port.to_string(), (port + 100).to_string());
    let addr = m.address.to_string();
    let _servers = [
        Proc::spawn("iperf3 -s (UDP)", in_ns(&hns, &["iperf3", "-s", "-1", "-p", &udp_port]), None)?,
        Proc::spawn("iperf3 -s (TCP)", in_ns(&hns, &["iperf3", "-s", "-1", "-p", &tcp_port]), None)?,
    ];
    listening(&hns, &[port, port + 100])?;
    let host_dev = host_dev(lab, m)?;
    let old_before = lab.show(&m.old, ShowWhat::Stats)?;
    let itr_before = lab.show(&m.itr, ShowWhat::Stats)?;
    let (secs, limit) = (m.secs.to_string(), (m.secs + 15).to_string());
    let rate = (u64::from(m.pps) * u64::from(PAYLOAD) * 8).to_string();
    let len = PAYLOAD.to_string();
    let udp_args =
        ["timeout", &limit, "iperf3", "-c", &addr, "-p", &udp_port, "-u", "-b", &rate, "-l", &len, "-t", &secs, "-J"];
    let tcp_args = ["timeout", &limit, "iperf3", "-c", &addr, "-p", &tcp_port, "-b", TCP_RATE, "-t", &secs, "-J"];
    let (udp_log, tcp_log) = (dir.join("udp.json"), dir.join("tcp.json"));
    let mut clients = [
        Proc::spawn("iperf3 UDP stream", in_ns(&cns, &udp_args), Some(&udp_log))?,
        Proc::spawn("iperf3 TCP connection", in_ns(&cns, &tcp_args), Some(&tcp_log))?,
    ];
    // The host announces itself as soon as it is re-attached: arping starts ahead in its
    // namespace and waits for a line (entering a namespace and starting a program takes
    // milliseconds on a busy machine, which the loss budget would count).
    let announce = "read _ && exec arping -U -c 1 -I \"$0\" \"$1\"";
    let garp_log = dir.join("arping.log");
    let (mut garp, mut go) =
        Proc::spawn_waiting("arping", in_ns(&hns, &["sh", "-c", announce, &host_dev, &addr]), Some(&garp_log))?;
    sys::sleep(Duration::from_millis(m.at_ms))?;
    let detach = Instant::now();
    lab.netns(&m.from).ip(&["link", "set", &m.port, "netns", &lab.ns(&m.to)])?;
    let to = lab.netns(&m.to);
    to.ip(&["link", "set", &m.port, "master", &m.bridge])?;
    to.ip(&["link", "set", &m.port, "up"])?;
    let t0 = Instant::now();
    go.write_all(b"\n").context("cannot start arping")?;
    drop(go);
    let detached_ms = (t0 - detach).as_secs_f64() * 1000.0;

    let mut r = MoveResult {
        host: m.host.clone(),
        address: m.address,
        old: m.old.clone(),
        new: m.new.clone(),
        pps: m.pps,
        sent: 0,
        lost: 0,
        outage_ms: 0.0,
        detached_ms,
        loss_budget: ((detached_ms + LOSS_SLACK.as_secs_f64() * 1000.0) * f64::from(m.pps) / 1000.0).ceil() as u64,
        detected_ms: None,
        withdrawn_ms: None,
        converged_ms: None,
        convergence_ms: None,
        resolution_ms: 0.0,
        path: "none".into(),
        publications_applied: 0,
        smrs_accepted: 0,
        tcp_ok: false,
        tcp_error: None,
        tcp_bytes: 0,
        tcp_retransmits: 0,
        away_to: Vec::new(),
        reencapsulated: 0,
        smrs_sent: 0,
        group_notifies: 0,
        new_serves: false,
        old_serves: false,
        itr_locators: Vec::new(),
    };
    let itr_delta = |after: &Value, k: &str| counter(after, k).saturating_sub(counter(&itr_before, k));
    // One watcher per event, each polling a single API, so each time is precise to one request.
    let (detected, withdrawn, converged) = std::thread::scope(|s| {
        let detected = s.spawn(|| watch(t0, || Ok(serves(lab, &m.new, m.address)?.then_some(()))));
        let withdrawn = s.spawn(|| watch(t0, || Ok((!serves(lab, &m.old, m.address)?).then_some(()))));
        let converged = s.spawn(|| {
            watch(t0, || {
                if !cached(lab, &m.itr, m.address, false)?.contains(&m.new_rloc) {
                    return Ok(None);
                }
                // Read after the entry: whichever counter moved with it is the path that set it.
                let after = lab.show(&m.itr, ShowWhat::Stats)?;
                Ok(Some(if itr_delta(&after, "publications_applied") > 0 {
                    "pub/sub"
                } else if itr_delta(&after, "smrs_accepted") > 0 {
                    "SMR"
                } else {
                    "none"
                }))
            })
        });
        Ok::<_, anyhow::Error>((joined(detected)?, joined(withdrawn)?, joined(converged)?))
    })?;
    r.detected_ms = detected.at_ms;
    r.withdrawn_ms = withdrawn.at_ms;
    r.converged_ms = converged.at_ms;
    r.path = converged.value.unwrap_or("none").into();
    r.resolution_ms = [detected.round_ms, converged.round_ms].into_iter().fold(0.0, f64::max);
    if let (Some(d), Some(c)) = (r.detected_ms, r.converged_ms) {
        // Each time is late by up to one polling round; a negative difference is within that.
        r.convergence_ms = Some((c - d).max(0.0));
    }

    let end = Instant::now() + Duration::from_secs(u64::from(m.secs) + 20);
    while clients.iter_mut().any(|c| c.exited().is_none()) {
        if Instant::now() > end {
            bail!("the iperf3 clients did not finish");
        }
        sys::sleep(Duration::from_millis(100))?;
    }
    // It sent its one announcement long ago; a failure means the move was never announced.
    if let Some(st) = garp.exited().filter(|st| !st.success()) {
        bail!("arping in {} failed ({st}):\n{}", m.host, garp.log_tail(5));
    }
    let udp = report(&udp_log)?;
    if let Some(e) = udp["error"].as_str() {
        bail!("iperf3 UDP stream: {e}");
    }
    for s in rows(&udp["end"]["streams"]) {
        let (p, l) = (s["udp"]["packets"].as_u64().unwrap_or(0), s["udp"]["lost_packets"].as_u64().unwrap_or(0));
        r.sent += p;
        r.lost += l.min(p);
    }
    r.outage_ms = r.lost as f64 * 1000.0 / f64::from(m.pps);
    let tcp = report(&tcp_log)?;
    r.tcp_error = tcp["error"].as_str().map(String::from);
    r.tcp_ok = r.tcp_error.is_none();
    r.tcp_bytes = tcp["end"]["sum_received"]["bytes"].as_u64().unwrap_or(0);
    r.tcp_retransmits = tcp["end"]["sum_sent"]["retransmits"].as_u64().unwrap_or(0);

    let old_after = lab.show(&m.old, ShowWhat::Stats)?;
    let delta = |k: &str| counter(&old_after, k).saturating_sub(counter(&old_before, k));
    r.reencapsulated = delta("away_reencapsulated");
    r.smrs_sent = delta("smrs_sent");
    r.group_notifies = delta("group_notifies_accepted");
    let itr_after = lab.show(&m.itr, ShowWhat::Stats)?;
    r.publications_applied = itr_delta(&itr_after, "publications_applied");
    r.smrs_accepted = itr_delta(&itr_after, "smrs_accepted");
    r.away_to = cached(lab, &m.old, m.address, true)?;
    r.new_serves = serves(lab, &m.new, m.address)?;
    r.old_serves = serves(lab, &m.old, m.address)?;
    r.itr_locators = cached(lab, &m.itr, m.address, false)?;
    Ok(r)
}
