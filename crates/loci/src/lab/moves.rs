//! Host-mobility steps of `loci lab`: wait for a host to become a dynamic EID, and move a host
//! between site bridges while a remote client sends it a numbered UDP stream (iperf3, which
//! numbers its datagrams and counts the lost ones) and keeps a TCP connection to it open.
//!
//! The move re-attaches the switch-side end of the host's veth to the other site's bridge, as
//! a hypervisor moves a guest's port, and the host then pings its gateway (its first packet at
//! the new site, standing in for the hypervisor's gratuitous ARP: that one floods over a LAN
//! extension and counts at neither site in extended-subnet mode). From that moment the step
//! polls every 5 ms: when the new xTR serves the host, when the old one let it go, and when the
//! client's xTR has the new RLOC in its map-cache (convergence). Loss is what iperf3 counted.

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
const POLL: Duration = Duration::from_millis(5);

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
    /// From the re-attachment (the host's first packet follows at once) to: the new xTR serving
    /// the host, the old one no longer serving it, the client's xTR caching the new RLOC.
    pub detected_ms: Option<f64>,
    pub withdrawn_ms: Option<f64>,
    pub converged_ms: Option<f64>,
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
            "move         {} ({}) from {} to {}: stream of {} pkt/s, {} sent, {} lost (~{:.0} ms at that rate; port detached for {:.0} ms)\n",
            self.host, self.address, self.old, self.new, self.pps, self.sent, self.lost, self.outage_ms, self.detached_ms
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
    let old_before = lab.show(&m.old, ShowWhat::Stats)?;
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
    sys::sleep(Duration::from_millis(m.at_ms))?;

    let detach = Instant::now();
    lab.netns(&m.from).ip(&["link", "set", &m.port, "netns", &lab.ns(&m.to)])?;
    let to = lab.netns(&m.to);
    to.ip(&["link", "set", &m.port, "master", &m.bridge])?;
    to.ip(&["link", "set", &m.port, "up"])?;
    let t0 = Instant::now();
    let detached_ms = (t0 - detach).as_secs_f64() * 1000.0;
    let gw = m.gateway.to_string();
    let _announce = Proc::spawn(
        "ping the gateway",
        in_ns(&hns, &["ping", "-n", "-q", "-c", "3", "-i", "0.2", "-W", "1", &gw]),
        None,
    )?;

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
        detected_ms: None,
        withdrawn_ms: None,
        converged_ms: None,
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
    let since = |t0: Instant| Some(t0.elapsed().as_secs_f64() * 1000.0);
    while t0.elapsed() < CONVERGE_PATIENCE {
        sys::check_interrupt()?;
        if r.detected_ms.is_none() && serves(lab, &m.new, m.address)? {
            r.detected_ms = since(t0);
        }
        if r.withdrawn_ms.is_none() && !serves(lab, &m.old, m.address)? {
            r.withdrawn_ms = since(t0);
        }
        if r.converged_ms.is_none() && cached(lab, &m.itr, m.address, false)?.contains(&m.new_rloc) {
            r.converged_ms = since(t0);
        }
        if r.detected_ms.is_some() && r.withdrawn_ms.is_some() && r.converged_ms.is_some() {
            break;
        }
        std::thread::sleep(POLL);
    }

    let end = Instant::now() + Duration::from_secs(u64::from(m.secs) + 20);
    while clients.iter_mut().any(|c| c.exited().is_none()) {
        if Instant::now() > end {
            bail!("the iperf3 clients did not finish");
        }
        sys::sleep(Duration::from_millis(100))?;
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
    r.away_to = cached(lab, &m.old, m.address, true)?;
    r.new_serves = serves(lab, &m.new, m.address)?;
    r.old_serves = serves(lab, &m.old, m.address)?;
    r.itr_locators = cached(lab, &m.itr, m.address, false)?;
    Ok(r)
}
