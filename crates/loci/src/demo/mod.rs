//! `loci demo`: seed scenarios on the simulator, printed as a message ladder and final tables.
//!
//! Runs on virtual time without root or network access. Each scenario is one small file that
//! builds a topology, drives it and names its tables; this module prints what happened (text,
//! JSON, SVG). To add one: a file with a `SCENARIO` constant, its `mod` line, and its entry in
//! [`SCENARIOS`].

mod failover;
mod ladder;
mod move_across;
mod move_extended;
mod moving;
mod negative;
mod non_lisp;
mod resolve;
mod svg;
mod vpn;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use loci_sim::{Id, Sim};
use serde_json::json;

pub use ladder::{ladder, Step};

/// A seed scenario.
pub struct Scenario {
    pub name: &'static str,
    pub about: &'static str,
    pub run: fn(seed: u64) -> Outcome,
}

pub const SCENARIOS: &[Scenario] = &[
    resolve::SCENARIO,
    negative::SCENARIO,
    vpn::SCENARIO,
    move_extended::SCENARIO,
    move_across::SCENARIO,
    failover::SCENARIO,
    non_lisp::SCENARIO,
];

pub fn find(name: &str) -> Option<&'static Scenario> {
    SCENARIOS.iter().find(|s| s.name == name)
}

/// What a scenario produced: its network (for the trace and names), the topology lines, the
/// lifelines in display order, and the text of its tables.
pub struct Outcome {
    pub sim: Sim,
    pub topology: Vec<String>,
    pub lanes: Vec<Id>,
    pub tables: String,
    /// Where the story is, for scenarios with long streams or steady probing: when set, data
    /// packets and RLOC probes outside these spans of virtual time are counted, not listed.
    pub windows: Vec<(Duration, Duration)>,
    /// More spans where RLOC probes (not data) are listed too.
    pub probe_windows: Vec<(Duration, Duration)>,
    /// Data packets of this many flows are listed; the others are counted.
    pub shown_flows: usize,
}

impl Outcome {
    pub fn new(sim: Sim, topology: Vec<String>, lanes: Vec<Id>, tables: String) -> Self {
        Outcome {
            sim,
            topology,
            lanes,
            tables,
            windows: Vec::new(),
            probe_windows: Vec::new(),
            shown_flows: SHOWN_FLOWS,
        }
    }

    /// Whether `step` falls in one of the windows (or there are none).
    fn in_window(&self, step: &Step) -> bool {
        let within = |w: &[(Duration, Duration)]| w.iter().any(|(a, b)| (*a..=*b).contains(&step.sent));
        self.windows.is_empty()
            || within(&self.windows)
            || (ladder::is_probe(&step.fields) && within(&self.probe_windows))
    }
}

/// Data packets of this many flows are shown in the ladder by default; the others are counted.
const SHOWN_FLOWS: usize = 2;

/// The ladder steps a person reads: every control message and the packets of the first flows;
/// with windows, only the data packets and probes inside them.
fn shown<'a>(out: &'a Outcome, steps: &'a [Step]) -> impl Iterator<Item = &'a Step> {
    steps.iter().filter(|s| is_shown(out, s))
}

fn is_shown(out: &Outcome, s: &Step) -> bool {
    let routine = s.is_data() || ladder::is_probe(&s.fields);
    s.flow.is_none_or(|f| f < out.shown_flows) && (!routine || out.in_window(s))
}

/// Everything a person reads about a run of `scenario`: topology, ladder, tables.
pub fn render(scenario: &Scenario, seed: u64, out: &Outcome) -> String {
    let mut s = format!("loci demo {} (seed {seed}): {}\n\nTopology\n", scenario.name, scenario.about);
    for line in &out.topology {
        s += &format!("  {line}\n");
    }
    s += "\nMessages (virtual time, from -> to; => what the receiving xTR did)\n";
    let steps = ladder(&out.sim);
    let mut skipped = 0;
    for step in &steps {
        if is_shown(out, step) {
            if skipped > 0 {
                s += &format!("  ... {skipped} more data packets or probes (--json has them all)\n");
                skipped = 0;
            }
            s += &format!("  {step}\n");
        } else if step.flow.is_none_or(|f| f < out.shown_flows) {
            skipped += 1;
        }
    }
    if skipped > 0 {
        s += &format!("  ... {skipped} more data packets or probes (--json has them all)\n");
    }
    let hidden: Vec<&Step> = steps.iter().filter(|x| x.flow.is_some_and(|f| f >= out.shown_flows)).collect();
    if !hidden.is_empty() {
        let flows = hidden.iter().filter_map(|x| x.flow).collect::<BTreeSet<_>>().len();
        s += &format!(
            "  ... and {} data packets of {flows} more flows (see the tables; --json has them all)\n",
            hidden.len()
        );
    }
    s += "\n";
    s += &out.tables;
    s
}

/// The whole trace as JSON, for tools.
pub fn json(scenario: &Scenario, seed: u64, out: &Outcome) -> serde_json::Value {
    json!({
        "scenario": scenario.name,
        "seed": seed,
        "topology": out.topology,
        "trace": ladder(&out.sim).iter().map(Step::to_json).collect::<Vec<_>>(),
    })
}

/// The ladder as an SVG sequence diagram.
pub fn svg(scenario: &Scenario, seed: u64, out: &Outcome) -> String {
    let steps = ladder(&out.sim);
    let shown: Vec<&Step> = shown(out, &steps).collect();
    let mut lanes: Vec<String> = out.lanes.iter().map(|&id| out.sim.name(id).to_string()).collect();
    for s in &shown {
        for n in [&s.from, &s.to] {
            if !lanes.contains(n) {
                lanes.push(n.clone());
            }
        }
    }
    svg::render(&format!("loci demo {} (seed {seed}): {}", scenario.name, scenario.about), &lanes, &shown)
}

fn indent(t: &str) -> String {
    t.lines().map(|l| format!("  {l}\n")).collect()
}

fn table(title: &str, headers: &[&str], rows: &[Vec<String>]) -> String {
    format!("{title}\n{}\n", indent(&crate::show::table(headers, rows)))
}

/// Registrations at the Map-Server `ms`.
pub fn registrations(sim: &Sim, ms: Id) -> String {
    let Some(m) = sim.node(ms).map_server() else { return String::new() };
    let rows: Vec<Vec<String>> = m
        .registrations()
        .iter()
        .map(|(p, r)| {
            let locs: Vec<String> =
                r.locators().iter().map(|l| ladder::locator(&l.address, l.priority, l.weight)).collect();
            let by = r.latest().map_or_else(String::new, |x| x.source.to_string());
            vec![p.to_string(), m.sites()[r.site].config.name.clone(), locs.join(", "), by]
        })
        .collect();
    table(
        &format!("Registrations at {}", sim.name(ms)),
        &["EID-PREFIX", "SITE", "LOCATORS", "LAST REGISTERED BY"],
        &rows,
    )
}

/// The map-cache of xTR `xtr`'s ITR.
pub fn map_cache(sim: &Sim, xtr: Id) -> String {
    let Some(itr) = sim.node(xtr).itr() else { return String::new() };
    let rows: Vec<Vec<String>> = itr
        .map_cache()
        .iter()
        .map(|m| {
            let what = if m.is_negative() {
                format!("negative, {}", m.action)
            } else {
                m.rlocs.iter().map(|r| ladder::locator(r.addr, r.priority, r.weight)).collect::<Vec<_>>().join(", ")
            };
            vec![m.prefix.to_string(), what, format!("{} min", m.ttl.as_secs() / 60)]
        })
        .collect();
    let s = itr.stats();
    let title = format!(
        "Map-cache of {} (misses {}, Map-Requests {}, Map-Replies accepted {})",
        sim.name(xtr),
        s.misses,
        s.requests,
        s.replies_accepted
    );
    table(&title, &["EID-PREFIX", "LOCATORS / ACTION", "TTL"], &rows)
}

/// The locator each distinct flow `host` sent took at its ITR, in order of appearance:
/// (source, destination, locator), from the encapsulated packets its xTR sent.
pub fn flow_locators(sim: &Sim, host: Id) -> Vec<(SocketAddr, SocketAddr, IpAddr)> {
    let Some(site) = sim.site(host) else { return Vec::new() };
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for e in sim.trace().iter().filter(|e| e.is_encapsulated() && Some(&e.from) == site.xtrs.first()) {
        let Some((iid, inner)) = ladder::decapsulated_view(&e.data) else { continue };
        let Some(s) = loci_sim::packet::Summary::parse(inner) else { continue };
        if iid != site.iid || !sim.addrs(host).contains(&s.src) {
            continue;
        }
        let (sp, dp) = s.ports.unwrap_or((0, 0));
        let (src, dst) = (SocketAddr::new(s.src, sp), SocketAddr::new(s.dst, dp));
        if seen.insert((src, dst)) {
            out.push((src, dst, e.dst.ip()));
        }
    }
    out
}

/// How many flows each locator carried.
pub fn per_locator(flows: &[(SocketAddr, SocketAddr, IpAddr)]) -> BTreeMap<IpAddr, usize> {
    let mut count = BTreeMap::new();
    for (_, _, r) in flows {
        *count.entry(*r).or_default() += 1;
    }
    count
}

/// Which locator the flows `host` sent took: the first few one by one, then per locator.
pub fn flows(sim: &Sim, host: Id) -> String {
    const LISTED: usize = 5;
    let flows = flow_locators(sim, host);
    let rows: Vec<Vec<String>> =
        flows.iter().take(LISTED).map(|(src, dst, rloc)| vec![format!("{src} > {dst}"), rloc.to_string()]).collect();
    let first = if flows.len() > LISTED { format!(" (first {LISTED} of {})", flows.len()) } else { String::new() };
    let mut out =
        table(&format!("Flows from {} and their locators{first}", sim.name(host)), &["FLOW", "LOCATOR"], &rows);
    let total = flows.len().max(1) as f64;
    let rows: Vec<Vec<String>> = per_locator(&flows)
        .iter()
        .map(|(r, n)| vec![r.to_string(), n.to_string(), format!("{:.1} %", *n as f64 * 100.0 / total)])
        .collect();
    out += &table(&format!("Flows per locator ({} flows)", flows.len()), &["LOCATOR", "FLOWS", "SHARE"], &rows);
    out
}

/// The data-plane counters of `xtrs` and what `hosts` received.
pub fn data_plane(sim: &Sim, xtrs: &[Id], hosts: &[Id]) -> String {
    let rows: Vec<Vec<String>> = xtrs
        .iter()
        .filter_map(|&x| {
            let c = sim.data_plane(x)?.counters();
            let drops: Vec<String> = c.dropped.iter().map(|(r, n)| format!("{r} {n}")).collect();
            Some(vec![
                sim.name(x).to_string(),
                c.encapsulated.to_string(),
                c.decapsulated.to_string(),
                c.native_forwarded.to_string(),
                c.sent_after_miss.to_string(),
                drops.join(", "),
            ])
        })
        .collect();
    let mut out =
        table("Data plane", &["XTR", "ENCAPSULATED", "DECAPSULATED", "NATIVE", "SENT AFTER WAITING", "DROPPED"], &rows);
    let rows: Vec<Vec<String>> = hosts
        .iter()
        .map(|&h| {
            let iid = sim.site(h).map_or_else(|| "-".into(), |s| s.iid.to_string());
            vec![sim.name(h).to_string(), sim.addrs(h)[0].to_string(), iid, sim.received(h).len().to_string()]
        })
        .collect();
    out += &table("Hosts", &["HOST", "ADDRESS", "IID", "PACKETS RECEIVED"], &rows);
    out
}

#[cfg(test)]
mod tests {
    use quick_xml::events::Event;
    use quick_xml::Reader;

    use super::*;

    /// Parses `svg` as XML (well-formed: nesting, quoting, entities, attributes) and counts the
    /// message arrows.
    fn arrows(svg: &str) -> usize {
        let mut reader = Reader::from_str(svg);
        let (mut depth, mut roots, mut arrows) = (0usize, 0, 0);
        loop {
            let event = reader.read_event().unwrap_or_else(|e| panic!("not XML at {}: {e}", reader.buffer_position()));
            let element = match &event {
                Event::Start(e) | Event::Empty(e) => Some(e.clone()),
                _ => None,
            };
            if let Some(e) = element {
                if depth == 0 {
                    roots += 1;
                    assert_eq!(e.name().as_ref(), "svg");
                }
                for a in e.attributes() {
                    let a = a.expect("well-formed attribute");
                    a.normalized_value(quick_xml::XmlVersion::Implicit1_0).expect("attribute escaped");
                    if a.key.as_ref() == "marker-end" {
                        arrows += 1;
                    }
                }
            }
            match event {
                Event::Start(_) => depth += 1,
                Event::End(_) => depth = depth.checked_sub(1).expect("balanced"),
                Event::GeneralRef(r) => {
                    assert!(["amp", "lt", "gt", "quot", "apos"].contains(&&*r) || r.starts_with('#'), "entity {r:?}")
                }
                Event::Eof => break,
                _ => {}
            }
        }
        assert_eq!((depth, roots), (0, 1), "one root, every element closed");
        arrows
    }

    #[test]
    fn every_scenario_renders_svg_json_and_text() {
        for s in SCENARIOS {
            let out = (s.run)(3);
            let steps = ladder(&out.sim);
            let shown = shown(&out, &steps).count();
            assert_eq!(arrows(&svg(s, 3, &out)), shown, "{}: one arrow per message shown", s.name);
            let j = json(s, 3, &out);
            let trace = j["trace"].as_array().unwrap();
            assert_eq!(trace.len(), out.sim.trace().len(), "{}: the whole trace", s.name);
            for t in trace {
                assert!(
                    t["time_ms"].is_f64() && t["from"].is_string() && t["to"].is_string() && t["message"].is_string()
                );
            }
            let register = trace.iter().find(|t| t["message"] == "Map-Register").expect("a Map-Register");
            assert_eq!(register["fields"]["auth"]["key_id"], 1, "authenticated: {register}");
            let request = trace.iter().find(|t| t["message"] == "ECM").expect("a Map-Request");
            assert!(request["fields"]["nonce"].as_str().is_some_and(|n| n.starts_with("0x")), "{request}");
            assert!(request["fields"]["eid_prefixes"][0].is_string(), "{request}");
            let data = trace.iter().find(|t| t["message"] == "LISP data" || t["handling"].is_string()).expect("data");
            assert!(data["fields"]["inner"]["dst"].is_string(), "{data}");
            let text = render(s, 3, &out);
            assert!(text.contains("Topology") && text.contains("Messages") && text.contains("Map-cache of"), "{text}");
        }
    }

    #[test]
    fn committed_picture_is_current() {
        let s = find("resolve").unwrap();
        let svg = svg(s, 1, &(s.run)(1));
        assert!(
            include_str!("../../../../docs/demo-resolve.svg") == svg,
            "docs/demo-resolve.svg is stale: run `cargo run --release -- demo --svg docs/demo-resolve.svg`"
        );
    }

    #[test]
    fn escapes_and_fits_labels() {
        assert_eq!(svg::esc(r#"a<b & "c">"#), "a&lt;b &amp; &quot;c&quot;&gt;");
        assert_eq!(svg::fit("abcdef", 4), "abc…");
        assert_eq!(svg::fit("abc", 4), "abc");
        assert_eq!(arrows(r#"<svg><line marker-end="x"/><text>&lt;</text></svg>"#), 1);
    }
}
