//! `loci demo`: seed scenarios on the simulator, printed as a message ladder and final tables.
//!
//! Runs on virtual time without root or network access. Each scenario is one small file that
//! builds a topology and drives it; this module prints what happened.

mod ladder;
mod negative;
mod resolve;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use loci_core::mapping::{encapsulate_request, map_request};
use loci_sim::{Id, Sim};
use loci_wire::{Address, Wire};

pub use ladder::{ladder, Step};

/// A seed scenario.
pub struct Scenario {
    pub name: &'static str,
    pub about: &'static str,
    pub run: fn(seed: u64) -> Outcome,
}

/// What a scenario produced: its network (for the trace and names) and the text of its tables.
pub struct Outcome {
    pub sim: Sim,
    pub topology: Vec<String>,
    pub tables: String,
}

pub const SCENARIOS: &[Scenario] = &[resolve::SCENARIO, negative::SCENARIO];

pub fn find(name: &str) -> Option<&'static Scenario> {
    SCENARIOS.iter().find(|s| s.name == name)
}

/// The port the demo's ITR asks from.
const ITR_PORT: u16 = 61001;

/// Sends an Encapsulated Map-Request for `eid` from `itr` (an endpoint) to the resolver.
pub fn ask(sim: &mut Sim, itr: Id, resolver: IpAddr, eid: &str, nonce: u64) {
    let itr_ip = sim.addrs(itr)[0];
    let req = map_request(nonce, &loci_sim::scenario::prefix(eid), vec![Address::from(itr_ip)]);
    let ecm = encapsulate_request(itr_ip, ITR_PORT, &req);
    sim.send(itr, SocketAddr::new(itr_ip, ITR_PORT), SocketAddr::new(resolver, 4342), ecm.to_bytes());
}

/// Runs `scenario` and renders everything a person reads.
pub fn render(scenario: &Scenario, seed: u64) -> String {
    let out = (scenario.run)(seed);
    let mut s = format!("loci demo {}: {}\n\nTopology\n", scenario.name, scenario.about);
    for line in &out.topology {
        s += &format!("  {line}\n");
    }
    s += "\nMessages (virtual time, from -> to)\n";
    for step in ladder(&out.sim) {
        s += &format!("  {step}\n");
    }
    s += "\n";
    s += &out.tables;
    s
}

/// The trace as JSON, for tools.
pub fn json(scenario: &Scenario, seed: u64) -> serde_json::Value {
    let out = (scenario.run)(seed);
    serde_json::Value::Array(ladder(&out.sim).iter().map(Step::to_json).collect())
}

/// Lets a scenario's network settle for `secs` seconds of virtual time.
pub fn settle(sim: &mut Sim, secs: u64) {
    sim.run_for(Duration::from_secs(secs));
}

/// The final tables: registrations at the Map-Server and the answers `itr` received.
pub fn tables(sim: &Sim, ms: Id, itr: Id) -> String {
    let mut s = String::from("Registrations at the Map-Server\n");
    if let Some(m) = sim.node(ms).map_server() {
        let rows: Vec<Vec<String>> = m
            .registrations()
            .iter()
            .map(|(p, r)| {
                let locs: Vec<String> =
                    r.locators().iter().map(|l| format!("{} p{}/w{}", l.address, l.priority, l.weight)).collect();
                let by = r.latest().map_or_else(String::new, |x| x.source.to_string());
                vec![p.to_string(), m.sites()[r.site].config.name.clone(), locs.join(", "), by]
            })
            .collect();
        s += &indent(&crate::show::table(&["EID-PREFIX", "SITE", "LOCATORS", "LAST REGISTERED BY"], &rows));
    }
    s += &format!("\nMappings {} received (what its map-cache will hold once the data plane runs)\n", sim.name(itr));
    let me = sim.addrs(itr).to_vec();
    let rows: Vec<Vec<String>> = sim
        .trace()
        .iter()
        .filter(|e| me.contains(&e.dst.ip()))
        .filter_map(|e| match loci_wire::message::ControlMessage::parse(&e.data) {
            Ok(loci_wire::message::ControlMessage::MapReply(r)) => Some((sim.name(e.from).to_string(), r)),
            _ => None,
        })
        .flat_map(|(from, r)| r.records.into_iter().map(move |rec| vec![ladder::describe_record(&rec), from.clone()]))
        .collect();
    s += &indent(&crate::show::table(&["MAPPING", "ANSWERED BY"], &rows));
    s
}

fn indent(t: &str) -> String {
    t.lines().map(|l| format!("  {l}\n")).collect()
}
