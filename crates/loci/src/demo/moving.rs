//! What `move-extended` and `move-across` share: a data centre site with two xTRs, a remote
//! branch whose client streams numbered UDP packets to host H, H's move from xTR-A to xTR-B in
//! the middle of the stream, and the measurements (loss, convergence at the remote ITR).

use std::net::IpAddr;
use std::time::Duration;

use loci_core::config::MobilityMode;
use loci_core::locator::Families;
use loci_core::map_cache::Forward;
use loci_sim::packet::{udp, Summary};
use loci_sim::scenario::{dynamic_eids, ip, map_server, rloc, site, subscriber, xtr};
use loci_sim::xtr::Handling;
use loci_sim::{Id, Sim};

use super::{data_plane, map_cache, registrations, table, Outcome};

const KEY: &[u8] = b"demo-secret";
const MS: &str = "192.0.2.10";
pub const A: &str = "203.0.113.1";
pub const B: &str = "203.0.113.2";
const R: &str = "198.51.100.1";
pub const H: &str = "10.1.9.10";
const C: &str = "10.7.1.10";
/// The site interface the hosts sit on.
const SITE_IF: &str = "site0";
/// Packets of the stream, one per millisecond (1,000 packets/s), and the one H moves at.
pub const STREAM: u32 = 300;
const MOVE_AT: u32 = 100;
/// One-way delays: the WAN between the branch and the data centres, the Map-Server, the LAN
/// extension (data-centre interconnect) between the two xTRs.
const WAN: Duration = Duration::from_millis(10);
const TO_MS: Duration = Duration::from_millis(2);
const DCI: Duration = Duration::from_micros(500);

/// What the move cost, as measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Measured {
    /// When H sent its gratuitous ARP at xTR-B.
    pub moved: Duration,
    /// From the move to the first instant the remote ITR's snapshot sends H's packets to B.
    pub convergence: Option<Duration>,
    pub sent: u32,
    pub delivered: u32,
    /// Stream packets xTR-A took for H before it knew H had left (no LAN extension: lost).
    pub lost_before_a_knew: u32,
    /// Stream packets xTR-A re-encapsulated to B from its away entry.
    pub reencapsulated: u32,
}

impl Measured {
    pub fn lost(&self) -> u32 {
        self.sent - self.delivered
    }
}

pub struct Moved {
    pub outcome: Outcome,
    /// Read by the scenarios' tests (the tables print it).
    #[cfg_attr(not(test), allow(dead_code))]
    pub measured: Measured,
}

/// Runs the move in `mode`; the remote ITR subscribes when `pubsub` (and always acts on SMRs).
pub fn run(seed: u64, mode: MobilityMode, pubsub: bool) -> Moved {
    let mut sim = Sim::new(seed);
    let ms = sim.add_node(
        map_server("ms-mr", vec![site("dc", KEY, &["10.1.0.0/16"]), site("branch", KEY, &["10.7.0.0/16"])]),
        &[ip(MS)],
    );
    let extended = mode == MobilityMode::ExtendedSubnet;
    // Extended subnet: both xTRs serve H's subnet and tell each other (map-notify-group).
    // Across subnet: B's own subnet is another one; H's range is enabled there for roaming.
    let mobile = |name, addr, local, id, peer| {
        let group: &[&str] = if extended { &[peer] } else { &[] };
        let cfg = xtr(name, MS, KEY, vec![(local, vec![rloc(addr, 1, 100)])], id, addr);
        dynamic_eids(cfg, "10.1.9.0/24", SITE_IF, mode, group, addr)
    };
    let a = sim.add_node(mobile("xtr-a", A, "10.1.1.0/24", 0xa, B), &[ip(A)]);
    let b = sim.add_node(mobile("xtr-b", B, "10.1.2.0/24", 0xb, A), &[ip(B)]);
    let branch = xtr("xtr-r", MS, KEY, vec![("10.7.1.0/24", vec![rloc(R, 1, 100)])], 0x99, R);
    let r = sim.add_node(subscriber(branch, KEY, 0x99, pubsub, true), &[ip(R)]);
    // With a LAN extension the other xTR still reaches H (and H's gateway is the local one).
    let at_a: &[Id] = if extended { &[a, b] } else { &[a] };
    let at_b: &[Id] = if extended { &[b, a] } else { &[b] };
    let h = sim.add_host("h", ip(H), 0, at_a).expect("xtr-a is a node");
    let c = sim.add_host("c", ip(C), 0, &[r]).expect("xtr-r is a node");
    for x in [a, b] {
        sim.set_link_delay(r, x, WAN);
        sim.set_link_delay(ms, x, TO_MS);
    }
    sim.set_link_delay(a, b, DCI);
    sim.set_link_delay(r, ms, Duration::from_millis(5));
    for (host, x) in [(h, a), (h, b), (c, r)] {
        sim.set_link_delay(host, x, Duration::from_micros(100));
    }
    sim.run_for(Duration::from_secs(2));
    // H boots at A: its gratuitous ARP makes it a dynamic EID there.
    sim.move_host(h, at_a, SITE_IF);
    sim.run_for(Duration::from_millis(50));

    let packet = |seq: u32| udp(ip(C), 40000, ip(H), 5001, &seq.to_be_bytes());
    let to_b = |s: &Sim| {
        let snap = s.node(r).itr().expect("xtr-r is an ITR").reader().load_full();
        snap.forward(0, ip(H), 0, Families::ALL) == Forward::Encapsulate(ip(B))
    };
    // The first packet resolves H (it waits in the miss queue); then one packet per ms.
    sim.send_packet(c, packet(0));
    sim.run_for(Duration::from_millis(100));
    let (mut moved, mut convergence) = (Duration::ZERO, None);
    for seq in 1..STREAM {
        if seq == MOVE_AT {
            moved = sim.elapsed();
            sim.move_host(h, at_b, SITE_IF);
        }
        sim.send_packet(c, packet(seq));
        let tick = sim.elapsed() + Duration::from_millis(1);
        if seq >= MOVE_AT && convergence.is_none() && sim.run_until(Duration::from_millis(1), to_b) {
            convergence = Some(sim.elapsed() - moved);
        }
        sim.run_for(tick.saturating_sub(sim.elapsed()));
    }
    sim.run_for(Duration::from_millis(100));

    let measured = measure(&sim, a, h, moved, convergence);
    let mut tables = registrations(&sim, ms) + &map_cache(&sim, r) + &hosts_tables(&sim, &[a, b]);
    tables += &data_plane(&sim, &[r, a, b], &[c, h]);
    tables += &stream_table(&sim, &measured, a);
    let mode_text = if extended { "extended subnet (LAN extension A <-> B)" } else { "across subnets" };
    let topology = vec![
        "ms-mr   192.0.2.10    Map-Server + Map-Resolver, sites dc 10.1.0.0/16 and branch 10.7.0.0/16".into(),
        format!("xtr-a   {A}   data centre 1, 10.1.1.0/24; dynamic EIDs 10.1.9.0/24 on {SITE_IF}, {mode_text}"),
        format!("xtr-b   {B}   data centre 2, 10.1.2.0/24; dynamic EIDs 10.1.9.0/24 on {SITE_IF}"),
        format!(
            "xtr-r   {R}  branch xTR, pub/sub {}, acts on SMRs; {} ms from the data centres",
            if pubsub { "on" } else { "off" },
            WAN.as_millis()
        ),
        format!("h       {H}     the VM that moves from xtr-a to xtr-b at packet {MOVE_AT}"),
        format!("c       {C}     client behind xtr-r: {STREAM} numbered UDP packets to H, 1 per ms"),
    ];
    let mut outcome = Outcome::new(sim, topology, vec![c, r, ms, a, b, h], tables);
    // The story: the packets around the move, and those around the remote ITR's switch.
    let around = |t: Duration| (t.saturating_sub(Duration::from_millis(1)), t + Duration::from_millis(2));
    outcome.windows = vec![around(moved)];
    if let Some(conv) = convergence {
        outcome.windows.push(around(moved + conv));
    }
    Moved { outcome, measured }
}

/// The stream's sequence number in a packet H received.
fn seq(p: &[u8]) -> Option<u32> {
    let s = Summary::parse(p)?;
    Some(u32::from_be_bytes(p.get(s.l4 + 8..s.l4 + 12)?.try_into().ok()?))
}

fn measure(sim: &Sim, a: Id, h: Id, moved: Duration, convergence: Option<Duration>) -> Measured {
    let mut got: Vec<u32> = sim.received(h).iter().filter_map(|r| seq(&r.3)).collect();
    got.sort_unstable();
    got.dedup();
    let (mut lost_before_a_knew, mut reencapsulated) = (0, 0);
    for (i, e) in sim.trace().iter().enumerate() {
        // Packets that reached A after the move, whenever they were sent.
        if e.to != Some(a) || !e.is_encapsulated() || e.delivered.is_none_or(|d| d < moved) {
            continue;
        }
        match sim.handling(i) {
            Some(Handling::Reencapsulated { .. }) => reencapsulated += 1,
            // Decapsulated for H after the move: delivered over the LAN extension if there is
            // one, else lost (counted against `delivered` too).
            Some(Handling::Decapsulated { .. }) if !sim.site(h).is_some_and(|s| s.xtrs.contains(&a)) => {
                lost_before_a_knew += 1
            }
            _ => {}
        }
    }
    Measured { moved, convergence, sent: STREAM, delivered: got.len() as u32, lost_before_a_knew, reencapsulated }
}

/// Virtual time of `t` since the start of the run, in ms.
fn at(sim: &Sim, t: std::time::Instant) -> String {
    let since = sim.elapsed().saturating_sub(sim.now().saturating_duration_since(t));
    format!("{:.3} ms", since.as_secs_f64() * 1e3)
}

/// Dynamic EIDs and away entries of the site's xTRs.
fn hosts_tables(sim: &Sim, xtrs: &[Id]) -> String {
    let mut eids = Vec::new();
    let mut away = Vec::new();
    for &x in xtrs {
        let node = sim.node(x);
        for d in node.dynamic_eids() {
            let mode = format!("{:?}", d.mode);
            let row = [sim.name(x), &d.prefix.to_string(), &d.interface, &mode, d.state.name()];
            let mut row: Vec<String> = row.iter().map(|s| s.to_string()).collect();
            row.extend([at(sim, d.since), at(sim, d.last_seen)]);
            eids.push(row);
        }
        for e in node.away_entries() {
            let rlocs: Vec<String> = e.rlocs.iter().map(IpAddr::to_string).collect();
            let left = e.expires.saturating_duration_since(sim.now());
            away.push(vec![
                sim.name(x).to_string(),
                e.prefix.to_string(),
                rlocs.join(", "),
                at(sim, e.since),
                format!("{} s", left.as_secs()),
            ]);
        }
    }
    table("Dynamic EIDs", &["XTR", "HOST", "INTERFACE", "MODE", "STATE", "SINCE", "LAST SEEN"], &eids)
        + &table(
            "Away entries (hosts that left, re-encapsulated)",
            &["XTR", "HOST", "NOW AT", "SINCE", "EXPIRES IN"],
            &away,
        )
}

fn stream_table(sim: &Sim, m: &Measured, a: Id) -> String {
    let conv = m.convergence.map_or_else(|| "not converged".into(), |c| format!("{:.3} ms", c.as_secs_f64() * 1e3));
    let mob = &sim.node(a).stats().mobility;
    let rows = vec![
        vec!["packets sent (1 per ms)".into(), m.sent.to_string()],
        vec!["packets delivered to H".into(), m.delivered.to_string()],
        vec!["packets lost".into(), m.lost().to_string()],
        vec!["  of them reached xtr-a before it knew H had left".into(), m.lost_before_a_knew.to_string()],
        vec!["re-encapsulated by xtr-a (away entry)".into(), m.reencapsulated.to_string()],
        vec!["SMRs sent by xtr-a (rate limited per ITR and EID)".into(), mob.smrs_sent.to_string()],
        vec!["remote ITR sends to xtr-b, after the move".into(), conv],
    ];
    table(&format!("The stream (H moved at {:.3} ms)", m.moved.as_secs_f64() * 1e3), &["MEASURE", "VALUE"], &rows)
}

#[cfg(test)]
pub mod tests {
    use super::super::ladder;
    use super::Outcome;

    /// The ladder as `from>to message` lines.
    pub fn lines(out: &Outcome) -> Vec<String> {
        ladder(&out.sim).iter().map(|s| format!("{}>{} {}", s.from, s.to, s.message)).collect()
    }

    /// Index of the first step `want` after step `from`; fails the test if there is none.
    pub fn after(steps: &[String], from: usize, want: &str) -> usize {
        let rest = &steps[from..];
        from + rest
            .iter()
            .position(|s| s == want)
            .unwrap_or_else(|| panic!("no {want} after {from}: {:?}", &rest[..rest.len().min(40)]))
    }
}
