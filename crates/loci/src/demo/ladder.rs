//! The message ladder: every datagram of a simulated run, decoded into one line.

use std::fmt;
use std::time::Duration;

use loci_core::mapping::eid_from_wire;
use loci_sim::Sim;
use loci_wire::message::ControlMessage;
use loci_wire::{MapRecord, Wire};
use serde_json::json;

/// One message on the ladder.
pub struct Step {
    pub sent: Duration,
    pub from: String,
    pub to: String,
    pub message: String,
    pub detail: String,
    pub lost: bool,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lost = if self.lost { "  (lost)" } else { "" };
        write!(
            f,
            "{:>9.3} ms  {:<8} -> {:<8}  {:<16} {}{lost}",
            self.sent.as_secs_f64() * 1e3,
            self.from,
            self.to,
            self.message,
            self.detail
        )
    }
}

impl Step {
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "time_ms": self.sent.as_secs_f64() * 1e3,
            "from": self.from, "to": self.to,
            "message": self.message, "detail": self.detail, "lost": self.lost,
        })
    }
}

pub fn describe_record(r: &MapRecord) -> String {
    let p = eid_from_wire(&r.eid, r.eid_mask_len).map_or_else(|| r.eid.to_string(), |p| p.to_string());
    if r.locators.is_empty() {
        return format!("{p} negative {} ttl {}m", r.action, r.ttl);
    }
    let locs: Vec<String> = r.locators.iter().map(|l| format!("{} p{}/w{}", l.address, l.priority, l.weight)).collect();
    format!("{p} -> [{}]", locs.join(", "))
}

fn records(rs: &[MapRecord]) -> String {
    rs.iter().map(describe_record).collect::<Vec<_>>().join("; ")
}

/// A one-line description of a control message's key fields.
pub fn describe(m: &ControlMessage) -> (String, String) {
    let name = m.name().to_string();
    let detail = match m {
        ControlMessage::MapRegister(r) => format!(
            "nonce {:#x}{}{} {}",
            r.nonce,
            if r.want_map_notify { " M" } else { "" },
            if r.proxy_reply { " P" } else { "" },
            records(&r.records)
        ),
        ControlMessage::MapNotify(n) => format!("nonce {:#x} {}", n.nonce, records(&n.records)),
        ControlMessage::MapReply(r) => format!("nonce {:#x} {}", r.nonce, records(&r.records)),
        ControlMessage::MapRequest(r) => {
            let eids: Vec<String> = r
                .records
                .iter()
                .map(|e| eid_from_wire(&e.eid, e.eid_mask_len).map_or_else(|| e.eid.to_string(), |p| p.to_string()))
                .collect();
            format!("nonce {:#x} eid {}", r.nonce, eids.join(","))
        }
        ControlMessage::Ecm(e) => match ControlMessage::parse(&e.payload) {
            Ok(inner) => {
                let (n, d) = describe(&inner);
                return ("ECM".into(), format!("[{n} {d}]"));
            }
            Err(_) => "[undecodable inner message]".into(),
        },
        _ => String::new(),
    };
    (name, detail)
}

/// Every datagram of the run, in order.
pub fn ladder(sim: &Sim) -> Vec<Step> {
    sim.trace()
        .iter()
        .map(|e| {
            let (message, detail) = match ControlMessage::parse(&e.data) {
                Ok(m) => describe(&m),
                Err(err) => ("?".into(), format!("undecodable: {err}")),
            };
            Step {
                sent: e.sent,
                from: sim.name(e.from).to_string(),
                to: e.to.map_or_else(|| e.dst.to_string(), |t| sim.name(t).to_string()),
                message,
                detail,
                lost: e.delivered.is_none(),
            }
        })
        .collect()
}
