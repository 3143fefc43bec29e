//! The message ladder: every datagram and packet of a simulated run, decoded into one line
//! with its key fields.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use loci_core::mapping::eid_from_wire;
use loci_sim::packet::Summary;
use loci_sim::xtr::Handling;
use loci_sim::{Carried, Sim, TraceEntry};
use loci_wire::auth::Algorithm;
use loci_wire::data::{DataHeaderRepr, HEADER_LEN};
use loci_wire::message::ControlMessage;
use loci_wire::{MapRecord, Wire};
use serde_json::{json, Map, Value};

/// One message on the ladder.
pub struct Step {
    pub sent: Duration,
    pub from: String,
    pub to: String,
    pub message: String,
    pub detail: String,
    /// The message and its main key field, for diagrams.
    pub label: String,
    /// What the receiving xTR did with a data packet.
    pub handling: Option<Handling>,
    /// Why it was not delivered.
    pub lost: Option<&'static str>,
    /// Data packets: which inner flow (numbered in order of appearance) they belong to.
    pub flow: Option<usize>,
    /// Key fields for tools: nonce, EID prefixes, locators, instance ID, inner and outer
    /// addresses.
    pub fields: Map<String, Value>,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lost = self.lost.map_or_else(String::new, |l| format!("  ({l})"));
        let handling = self.handling.map_or_else(String::new, |h| format!("  => {}", handling_text(h)));
        write!(
            f,
            "{:>9.3} ms  {:<7} -> {:<9} {:<13} {}{handling}{lost}",
            self.sent.as_secs_f64() * 1e3,
            self.from,
            self.to,
            self.message,
            self.detail
        )
    }
}

impl Step {
    pub fn is_data(&self) -> bool {
        self.flow.is_some()
    }

    pub fn to_json(&self) -> Value {
        let mut v = json!({
            // Whole microseconds, divided once: 2000.1, not 2000.1000000000001.
            "time_ms": self.sent.as_micros() as f64 / 1e3,
            "from": self.from, "to": self.to,
            "message": self.message, "detail": self.detail, "lost": self.lost,
            "fields": self.fields,
        });
        if let Some(h) = self.handling {
            v["handling"] = json!(handling_text(h));
        }
        if let Some(f) = self.flow {
            v["flow"] = json!(f);
        }
        v
    }
}

/// A locator as the ladder and the tables show it: `203.0.113.11 p1/w50`.
pub fn locator(addr: impl fmt::Display, priority: u8, weight: u8) -> String {
    format!("{addr} p{priority}/w{weight}")
}

pub fn describe_record(r: &MapRecord) -> String {
    let p = eid_from_wire(&r.eid, r.eid_mask_len).map_or_else(|| r.eid.to_string(), |p| p.to_string());
    if r.locators.is_empty() {
        return format!("{p} negative {} ttl {}m", r.action, r.ttl);
    }
    let locs: Vec<String> = r.locators.iter().map(|l| locator(&l.address, l.priority, l.weight)).collect();
    format!("{p} -> [{}]", locs.join(", "))
}

/// Key fields of map records: their prefixes, locators and instance IDs.
fn record_fields(rs: &[MapRecord], f: &mut Map<String, Value>) {
    let mut eids = Vec::new();
    let mut locators = Vec::new();
    for r in rs {
        match eid_from_wire(&r.eid, r.eid_mask_len) {
            Some(p) => {
                eids.push(json!(p.to_string()));
                f.insert("iid".into(), json!(p.iid));
            }
            None => eids.push(json!(r.eid.to_string())),
        }
        if r.locators.is_empty() {
            f.insert("action".into(), json!(r.action.to_string()));
        }
        locators.extend(r.locators.iter().map(|l| locator(&l.address, l.priority, l.weight)));
    }
    f.insert("eid_prefixes".into(), json!(eids));
    f.insert("locators".into(), json!(locators));
}

fn records(rs: &[MapRecord]) -> String {
    rs.iter().map(describe_record).collect::<Vec<_>>().join("; ")
}

/// A control message's name, one-line description and key fields.
pub fn describe(m: &ControlMessage) -> (String, String, Map<String, Value>) {
    let mut f = Map::new();
    let name = m.name().to_string();
    let nonce = |n: u64, f: &mut Map<String, Value>| {
        f.insert("nonce".into(), json!(format!("{n:#x}")));
    };
    let auth = |key_id: u8, algorithm: u8, f: &mut Map<String, Value>| {
        let name = Algorithm::from_id(algorithm).map_or_else(|| format!("unknown {algorithm}"), |a| a.name().into());
        f.insert("auth".into(), json!({ "key_id": key_id, "algorithm": name }));
    };
    let detail = match m {
        ControlMessage::MapRegister(r) => {
            nonce(r.nonce, &mut f);
            auth(r.key_id, r.algorithm_id, &mut f);
            record_fields(&r.records, &mut f);
            format!(
                "nonce {:#x}{}{} {}",
                r.nonce,
                if r.want_map_notify { " M" } else { "" },
                if r.proxy_reply { " P" } else { "" },
                records(&r.records)
            )
        }
        ControlMessage::MapNotify(n) => {
            nonce(n.nonce, &mut f);
            auth(n.key_id, n.algorithm_id, &mut f);
            record_fields(&n.records, &mut f);
            format!("nonce {:#x} {}", n.nonce, records(&n.records))
        }
        ControlMessage::MapReply(r) => {
            nonce(r.nonce, &mut f);
            record_fields(&r.records, &mut f);
            flag("probe", r.probe, &mut f);
            format!("{}nonce {:#x} {}", if r.probe { "probe " } else { "" }, r.nonce, records(&r.records))
        }
        ControlMessage::MapRequest(r) => {
            nonce(r.nonce, &mut f);
            let eids: Vec<String> = r
                .records
                .iter()
                .map(|e| match eid_from_wire(&e.eid, e.eid_mask_len) {
                    Some(p) => {
                        f.insert("iid".into(), json!(p.iid));
                        p.to_string()
                    }
                    None => e.eid.to_string(),
                })
                .collect();
            f.insert("eid_prefixes".into(), json!(eids));
            let rlocs: Vec<String> = r.itr_rlocs.iter().map(|a| a.to_string()).collect();
            f.insert("itr_rlocs".into(), json!(rlocs));
            flag("probe", r.probe, &mut f);
            flag("smr", r.smr, &mut f);
            flag("smr_invoked", r.smr_invoked, &mut f);
            let kind = match (r.probe, r.smr, r.smr_invoked) {
                (true, _, _) => "probe ",
                (_, _, true) => "SMR-invoked ",
                (_, true, _) => "SMR ",
                _ => "",
            };
            format!("{kind}nonce {:#x} eid {}", r.nonce, eids.join(","))
        }
        ControlMessage::Ecm(e) => match ControlMessage::parse(&e.payload) {
            Ok(inner) => {
                let (n, d, mut inner_fields) = describe(&inner);
                inner_fields.insert("inner".into(), json!(n));
                return ("ECM".into(), format!("[{n} {d}]"), inner_fields);
            }
            Err(_) => "[undecodable inner message]".into(),
        },
        _ => String::new(),
    };
    (name, detail, f)
}

/// Sets the boolean field `name` when `on` (absent means false).
fn flag(name: &str, on: bool, f: &mut Map<String, Value>) {
    if on {
        f.insert(name.into(), json!(true));
    }
}

/// An RLOC-probe Map-Request or Map-Reply.
pub fn is_probe(f: &Map<String, Value>) -> bool {
    f.get("probe") == Some(&json!(true))
}

/// A control message's name and EID prefixes: `ECM[Map-Request 10.2.1.5/32]`.
fn control_label(name: &str, f: &Map<String, Value>) -> String {
    let eids: Vec<&str> = f
        .get("eid_prefixes")
        .and_then(Value::as_array)
        .map_or_else(Vec::new, |a| a.iter().filter_map(Value::as_str).collect());
    let mut eids = eids.join(",");
    if let Some(action) = f.get("action").and_then(Value::as_str) {
        eids += &format!(" {action}");
    }
    match f.get("inner").and_then(Value::as_str) {
        Some(inner) => format!("{name}[{inner} {eids}]"),
        None if eids.is_empty() => name.to_string(),
        None => format!("{name} {eids}"),
    }
}

/// The instance ID and inner packet of a LISP-encapsulated packet.
pub fn decapsulated_view(p: &[u8]) -> Option<(u32, &[u8])> {
    let ip_len = match p.first()? >> 4 {
        4 => usize::from(p[0] & 0x0f) * 4,
        6 => 40,
        _ => return None,
    };
    let lisp = p.get(ip_len + 8..)?;
    let (h, _) = DataHeaderRepr::from_array(lisp.first_chunk::<HEADER_LEN>()?);
    Some((h.instance_id.unwrap_or(0), &lisp[HEADER_LEN..]))
}

pub fn handling_text(h: Handling) -> String {
    match h {
        Handling::Encapsulated { rloc, .. } => format!("encapsulated to {rloc}"),
        Handling::Miss { queued: true } => "no mapping: queued, resolving".into(),
        Handling::Miss { queued: false } => "no mapping, queue full: dropped, resolving".into(),
        Handling::NativeForwarded => "forwarded natively".into(),
        Handling::Decapsulated { iid } => format!("decapsulated (iid {iid})"),
        Handling::Reencapsulated { rloc, .. } => format!("host moved away: re-encapsulated to {rloc}"),
        Handling::HostAnnounced => "host seen on the site interface".into(),
        Handling::Relayed { iid } => format!("decapsulated by the PETR, forwarded natively (iid {iid})"),
        Handling::Dropped(r) => format!("dropped: {r}"),
    }
}

/// [`handling_text`] in a few words, for diagrams.
pub fn handling_short(h: Handling) -> String {
    match h {
        Handling::Encapsulated { rloc, .. } => format!("encap to {rloc}"),
        Handling::Miss { queued: true } => "miss: queued".into(),
        Handling::Miss { queued: false } => "miss: dropped".into(),
        Handling::NativeForwarded => "native forward".into(),
        Handling::Decapsulated { iid } => format!("decap, iid {iid}"),
        Handling::Reencapsulated { rloc, .. } => format!("away: re-encap to {rloc}"),
        Handling::HostAnnounced => "host seen".into(),
        Handling::Relayed { iid } => format!("PETR relay, iid {iid}"),
        Handling::Dropped(r) => format!("dropped: {r}"),
    }
}

fn summary_fields(s: &Summary) -> Value {
    let mut v = json!({ "src": s.src.to_string(), "dst": s.dst.to_string(), "protocol": s.kind(), "ttl": s.ttl });
    if let Some((sp, dp)) = s.ports {
        v["src_port"] = json!(sp);
        v["dst_port"] = json!(dp);
    }
    v
}

/// What a diagram says about an inner packet: `TCP SYN > 10.2.1.5:80`.
fn short(s: &Summary) -> String {
    format!("{} > {}", s.kind(), endpoint(s.dst, s.ports.map(|p| p.1)))
}

/// A flow: the inner packet's addresses, protocol and ports, and its instance.
type FlowKey = (IpAddr, IpAddr, u8, Option<(u16, u16)>, u32);

/// What the ladder says about a data packet.
struct Described {
    message: String,
    detail: String,
    label: String,
    fields: Map<String, Value>,
    flow: Option<FlowKey>,
    /// Not data: shown like a control message (a gratuitous ARP).
    signal: bool,
}

impl Described {
    fn undecodable(message: &str) -> Self {
        let (message, detail, label) = (message.into(), "undecodable".into(), message.into());
        Described { message, detail, label, fields: Map::new(), flow: None, signal: false }
    }
}

fn flow_key(s: &Summary, iid: u32) -> FlowKey {
    (s.src, s.dst, s.proto, s.ports, iid)
}

fn describe_packet(sim: &Sim, e: &TraceEntry) -> Described {
    let mut f = Map::new();
    if e.is_encapsulated() {
        let Some((iid, inner)) = decapsulated_view(&e.data) else { return Described::undecodable("LISP data") };
        let s = Summary::parse(inner);
        f.insert("iid".into(), json!(iid));
        f.insert("outer".into(), json!({ "src": e.src.to_string(), "dst": e.dst.to_string() }));
        if let Some(s) = &s {
            f.insert("inner".into(), summary_fields(s));
        }
        let inner_text = s.map_or_else(|| "?".into(), |s| s.to_string());
        let detail = format!("iid {iid}, sport {:#06x} [{inner_text}]", e.src.port());
        let label = format!("LISP iid {iid} [{}]", s.as_ref().map_or_else(|| "?".into(), short));
        let flow = s.map(|s| flow_key(&s, iid));
        return Described { message: "LISP data".into(), detail, label, fields: f, flow, signal: false };
    }
    let Some(s) = Summary::parse(&e.data) else { return Described::undecodable("IP") };
    if s.src == s.dst && sim.site(e.from).is_some() {
        // A host announcing its own address: the simulator's gratuitous ARP.
        f.insert("inner".into(), summary_fields(&s));
        let (message, label) = ("GARP".to_string(), format!("GARP {}", s.src));
        let detail = format!("gratuitous ARP: {} is-at (the host's MAC)", s.src);
        return Described { message, detail, label, fields: f, flow: None, signal: true };
    }
    // A host's packet belongs to its site's instance; a natively forwarded one to none.
    let iid = [e.from, e.to.unwrap_or(e.from)].iter().find_map(|&m| sim.site(m).map(|site| site.iid));
    if let Some(iid) = iid {
        f.insert("iid".into(), json!(iid));
    }
    f.insert("inner".into(), summary_fields(&s));
    let mut detail = format!("{} > {}", endpoint(s.src, s.ports.map(|p| p.0)), endpoint(s.dst, s.ports.map(|p| p.1)));
    if iid.is_none() {
        // Outside the sites: the TTL shows the hop a native forward costs.
        detail += &format!(" ttl {}", s.ttl);
    }
    let flow = Some(flow_key(&s, iid.unwrap_or(0)));
    Described { message: s.kind(), detail, label: short(&s), fields: f, flow, signal: false }
}

fn endpoint(a: IpAddr, port: Option<u16>) -> String {
    match (a, port) {
        (IpAddr::V6(a), Some(p)) => format!("[{a}]:{p}"),
        (a, Some(p)) => format!("{a}:{p}"),
        (a, None) => a.to_string(),
    }
}

/// Every datagram and packet of the run, in order.
pub fn ladder(sim: &Sim) -> Vec<Step> {
    let mut flows: HashMap<FlowKey, usize> = HashMap::new();
    sim.trace()
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let (message, detail, label, fields, flow) = match e.carried {
                Carried::Datagram => {
                    let (m, d, f) = match ControlMessage::parse(&e.data) {
                        Ok(m) => describe(&m),
                        Err(err) => ("?".into(), format!("undecodable: {err}"), Map::new()),
                    };
                    let label = control_label(&m, &f);
                    (m, d, label, f, None)
                }
                Carried::Packet => {
                    let d = describe_packet(sim, e);
                    let flow = d.flow.map(|k| {
                        let n = flows.len();
                        *flows.entry(k).or_insert(n)
                    });
                    let flow = (!d.signal).then(|| flow.unwrap_or(usize::MAX));
                    (d.message, d.detail, d.label, d.fields, flow)
                }
            };
            let lost = match (e.delivered, e.to) {
                (Some(_), _) => None,
                (None, None) => Some("nobody has that address"),
                (None, Some(_)) => Some("lost"),
            };
            Step {
                sent: e.sent,
                from: sim.name(e.from).to_string(),
                to: e.to.map_or_else(|| e.dst.ip().to_string(), |t| sim.name(t).to_string()),
                message,
                detail,
                label,
                handling: sim.handling(i),
                lost,
                flow,
                fields,
            }
        })
        .collect()
}
