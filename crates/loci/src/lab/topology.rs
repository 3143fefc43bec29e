//! A scenario file (`lab/NAME.toml`): network namespaces, the veth pairs and bridges between
//! them, addresses and routes, a `loci` configuration per daemon, and the traffic steps.
//!
//! Loading validates everything, daemon configurations included, before anything is built, and
//! every error names the file, line, field and reason (as `loci check` does).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::Deserialize;

use crate::config::{self, ConfigError};
use crate::ShowWhat;

/// Node names become namespace names (`RUN-NAME`) and file names: short and plain.
const MAX_NODE_NAME: usize = 8;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawTopology {
    about: String,
    #[serde(default)]
    diagram: String,
    #[serde(default)]
    node: Vec<RawNode>,
    #[serde(default)]
    link: Vec<RawLink>,
    /// `loci` configurations by node name, as in a configuration file; the lab sets the API
    /// socket and state directory.
    #[serde(default)]
    daemon: BTreeMap<String, toml::Table>,
    #[serde(default)]
    step: Vec<Step>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawNode {
    name: String,
    #[serde(default)]
    about: String,
    /// `"DEV ADDRESS/LEN"`, for devices that are not a link's end (`lo`).
    #[serde(default)]
    addresses: Vec<String>,
    #[serde(default)]
    bridges: Vec<String>,
    /// Arguments of `ip route add`.
    #[serde(default)]
    routes: Vec<String>,
    /// `loci show` tables printed for this node's daemon.
    #[serde(default)]
    show: Vec<String>,
    /// Commands run in the node's namespace once links and routes are up (`tc` filters,
    /// `sysctl`), as words.
    #[serde(default)]
    setup: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawLink {
    a: RawEnd,
    b: RawEnd,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawEnd {
    node: String,
    dev: String,
    #[serde(default)]
    addresses: Vec<String>,
    /// A bridge of the node this end joins.
    bridge: Option<String>,
    /// MAC address of the device (a shared gateway MAC, for example).
    mac: Option<String>,
}

/// One traffic step. Nodes are named by their topology name.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub enum Step {
    /// Wait until the ETRs on `registered` hold a Map-Notify from each of their Map-Servers
    /// (traffic before would get, and cache, a negative Map-Reply).
    Wait {
        registered: Vec<String>,
        #[serde(default = "default_wait_secs")]
        secs: u64,
    },
    /// Ping `address` from `from`: until the first reply (resolution), then `count` times.
    Ping {
        from: String,
        address: IpAddr,
        #[serde(default = "default_ping_count")]
        count: u32,
    },
    /// An iperf3 TCP transfer from `from` to the server on `to` at `address`.
    Tcp {
        from: String,
        to: String,
        address: IpAddr,
        #[serde(default = "default_tcp_secs")]
        secs: u32,
    },
    /// `flows` parallel iperf3 UDP flows (distinct source ports) from `from` to `to`; counts
    /// what each of the `etrs` decapsulated meanwhile and, when `router` is given, the packets
    /// the underlay router sent towards each of `locators`.
    Flows(Flows),
    /// Wait until `node`'s daemon serves `host` as a dynamic EID and its registration is
    /// acknowledged (host mobility).
    Detected {
        node: String,
        host: IpAddr,
        #[serde(default = "default_wait_secs")]
        secs: u64,
    },
    /// Host mobility: move a host between site bridges during a UDP stream and a TCP
    /// connection from a remote client (see [`super::moves`]).
    Move(Move),
    /// Ping streams while a device is down and after it returns (see [`super::outage`]).
    Outage(super::outage::Outage),
    /// Stops the daemon of `node` (a Map-Resolver that fails, say).
    Stop { node: String },
    /// Takes link device `dev` of `node` down (the kernel withdraws the node's routes through
    /// it, as a routing protocol would on losing the neighbour) or back up (its routes return).
    Link { node: String, dev: String, up: bool },
    /// `loci show TABLE` of the daemons on `nodes` at this point of the run.
    Show { nodes: Vec<String>, table: String },
    /// Pings of `size` bytes (the whole IP packet) from `from` to `address`, `count` with DF
    /// set and `count` that may be fragmented: each of the former must get a reply or an ICMP
    /// too-big (RFC 9300 §7), never silence.
    Mtu {
        from: String,
        address: IpAddr,
        size: u32,
        #[serde(default = "default_ping_count")]
        count: u32,
    },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Move {
    /// The host's node and EID.
    pub host: String,
    pub address: IpAddr,
    /// The switch-side end of the host's link: device `port` on node `from`, moved into bridge
    /// `bridge` of node `to`. Once re-attached, the host sends a gratuitous ARP from the other
    /// end, as a hypervisor makes a moved guest announce itself (its first packet there).
    pub port: String,
    pub from: String,
    pub to: String,
    pub bridge: String,
    /// Sends a numbered UDP stream (iperf3) to the host and keeps a TCP connection to it.
    pub client: String,
    /// The client's xTR: its map-cache must follow the host to `new_rloc`.
    pub itr: String,
    /// The xTRs the host leaves and joins.
    pub old: String,
    pub new: String,
    pub new_rloc: IpAddr,
    #[serde(default = "default_move_pps")]
    pub pps: u32,
    #[serde(default = "default_move_secs")]
    pub secs: u32,
    /// When in the stream the host moves.
    #[serde(default = "default_move_at_ms")]
    pub at_ms: u64,
}

fn default_move_pps() -> u32 {
    1000
}
fn default_move_secs() -> u32 {
    6
}
fn default_move_at_ms() -> u64 {
    2000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Flows {
    pub from: String,
    pub to: String,
    pub address: IpAddr,
    #[serde(default = "default_flows")]
    pub flows: u32,
    #[serde(default = "default_flow_secs")]
    pub secs: u32,
    /// Packets per second of each flow.
    #[serde(default = "default_flow_pps")]
    pub pps: u32,
    #[serde(default)]
    pub etrs: Vec<String>,
    pub router: Option<String>,
    #[serde(default)]
    pub locators: Vec<IpAddr>,
}

fn default_wait_secs() -> u64 {
    20
}
fn default_ping_count() -> u32 {
    5
}
fn default_tcp_secs() -> u32 {
    3
}
fn default_flows() -> u32 {
    64
}
fn default_flow_secs() -> u32 {
    2
}
fn default_flow_pps() -> u32 {
    50
}

/// A validated scenario.
#[derive(Debug)]
pub struct Topology {
    pub name: String,
    pub about: String,
    pub diagram: String,
    pub nodes: Vec<Node>,
    pub links: Vec<Link>,
    pub steps: Vec<Step>,
}

#[derive(Debug)]
pub struct Node {
    pub name: String,
    pub about: String,
    pub addresses: Vec<(String, IpNet)>,
    pub bridges: Vec<String>,
    pub routes: Vec<Vec<String>>,
    pub show: Vec<ShowWhat>,
    pub setup: Vec<Vec<String>>,
    /// The `loci` configuration, when a daemon runs here.
    pub daemon: Option<toml::Table>,
}

#[derive(Debug)]
pub struct Link {
    pub ends: [End; 2],
}

#[derive(Debug)]
pub struct End {
    pub node: String,
    pub dev: String,
    pub addresses: Vec<IpNet>,
    pub bridge: Option<String>,
    pub mac: Option<String>,
}

/// The `loci` configuration of a daemon: the scenario's table with the API socket and state
/// directory in `dir`, as TOML text.
pub fn daemon_config(table: &toml::Table, node: &str, dir: &Path) -> String {
    let mut t = table.clone();
    if let Some(toml::Value::Table(n)) = t.get_mut("node") {
        let path = |p: PathBuf| toml::Value::String(p.display().to_string());
        n.insert("api-socket".into(), path(dir.join(format!("{node}.sock"))));
        n.insert("state-dir".into(), path(dir.join(format!("{node}-state"))));
    }
    toml::to_string(&t).expect("a TOML table serializes")
}

/// Reads and validates a scenario; `name` is what the scenario is called in reports.
pub fn parse(name: &str, path: &Path, text: &str) -> Result<Topology, ConfigError> {
    let raw: RawTopology = config::from_toml(path, text)?;
    let err = |field: &str, reason: String| config::field_error(path, text, field, reason);

    let mut nodes: Vec<Node> = Vec::new();
    for (i, n) in raw.node.iter().enumerate() {
        let at = format!("node[{i}]");
        if n.name.is_empty()
            || n.name.len() > MAX_NODE_NAME
            || !n.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            return Err(err(&format!("{at}.name"), format!("{:?}: 1-{MAX_NODE_NAME} of a-z and 0-9", n.name)));
        }
        if nodes.iter().any(|m| m.name == n.name) {
            return Err(err(&format!("{at}.name"), format!("node {:?} is defined twice", n.name)));
        }
        let mut addresses = Vec::new();
        for (j, a) in n.addresses.iter().enumerate() {
            let field = format!("{at}.addresses[{j}]");
            let (dev, addr) =
                a.split_once(' ').ok_or_else(|| err(&field, format!("{a:?}: give \"DEVICE ADDRESS/LENGTH\"")))?;
            check_dev(dev).map_err(|r| err(&field, r))?;
            addresses.push((dev.to_string(), cidr(addr.trim()).map_err(|r| err(&field, r))?));
        }
        for (j, b) in n.bridges.iter().enumerate() {
            check_dev(b).map_err(|r| err(&format!("{at}.bridges[{j}]"), r))?;
        }
        let mut routes = Vec::new();
        for (j, r) in n.routes.iter().enumerate() {
            let words: Vec<String> = r.split_whitespace().map(String::from).collect();
            if words.is_empty() {
                return Err(err(&format!("{at}.routes[{j}]"), "an empty route".into()));
            }
            routes.push(words);
        }
        let mut show = Vec::new();
        for (j, s) in n.show.iter().enumerate() {
            show.push(show_what(s).map_err(|r| err(&format!("{at}.show[{j}]"), r))?);
        }
        let mut setup = Vec::new();
        for (j, c) in n.setup.iter().enumerate() {
            let words: Vec<String> = c.split_whitespace().map(String::from).collect();
            if words.is_empty() {
                return Err(err(&format!("{at}.setup[{j}]"), "an empty command".into()));
            }
            setup.push(words);
        }
        nodes.push(Node {
            name: n.name.clone(),
            about: n.about.clone(),
            addresses,
            bridges: n.bridges.clone(),
            routes,
            show,
            setup,
            daemon: None,
        });
    }
    if nodes.is_empty() {
        return Err(err("node", "no nodes: add [[node]] sections".into()));
    }
    let names: Vec<String> = nodes.iter().map(|n| n.name.clone()).collect();
    let known = |field: &str, name: &str| {
        if names.iter().any(|n| n == name) {
            Ok(name.to_string())
        } else {
            Err(err(field, format!("no node {name:?}")))
        }
    };

    let mut links = Vec::new();
    for (i, l) in raw.link.iter().enumerate() {
        let mut ends = Vec::new();
        for (side, e) in [("a", &l.a), ("b", &l.b)] {
            let at = format!("link[{i}].{side}");
            let node = known(&format!("{at}.node"), &e.node)?;
            check_dev(&e.dev).map_err(|r| err(&format!("{at}.dev"), r))?;
            let taken =
                links.iter().flat_map(|l: &Link| &l.ends).chain(&ends).any(|x: &End| x.node == node && x.dev == e.dev)
                    || nodes.iter().any(|n| n.name == node && n.bridges.contains(&e.dev));
            if taken {
                return Err(err(&format!("{at}.dev"), format!("{} has a device {:?} already", node, e.dev)));
            }
            let mut addresses = Vec::new();
            for (j, a) in e.addresses.iter().enumerate() {
                addresses.push(cidr(a).map_err(|r| err(&format!("{at}.addresses[{j}]"), r))?);
            }
            if let Some(b) = &e.bridge {
                if !nodes.iter().any(|n| n.name == node && n.bridges.contains(b)) {
                    return Err(err(
                        &format!("{at}.bridge"),
                        format!("node {node} has no bridge {b:?} (see its bridges)"),
                    ));
                }
            }
            if let Some(m) = &e.mac {
                if loci_dataplane::parse_mac(m).is_none() {
                    return Err(err(&format!("{at}.mac"), format!("{m:?} is not a MAC address (02:00:00:00:00:01)")));
                }
            }
            ends.push(End { node, dev: e.dev.clone(), addresses, bridge: e.bridge.clone(), mac: e.mac.clone() });
        }
        let Ok(ends) = <[End; 2]>::try_from(ends) else { unreachable!("a link has two ends") };
        links.push(Link { ends });
    }

    for (name, table) in &raw.daemon {
        let at = format!("daemon.{name}");
        let Some(n) = nodes.iter_mut().find(|n| &n.name == name) else {
            return Err(err(&at, format!("no node {name:?} to run it in")));
        };
        match table.get("node") {
            Some(toml::Value::Table(t)) => {
                for k in ["api-socket", "state-dir"] {
                    if t.contains_key(k) {
                        return Err(err(&format!("{at}.node.{k}"), "the lab sets this".into()));
                    }
                }
            }
            _ => return Err(err(&format!("{at}.node"), "missing [node] section (name, listen)".into())),
        }
        // Validated as the daemon will read it; errors point into the scenario file.
        let dir = Path::new("/run/loci-lab");
        let generated = daemon_config(table, name, dir);
        config::parse(&dir.join(format!("{name}.toml")), &generated).map_err(|e| {
            let field = if e.field.is_empty() { at.clone() } else { format!("{at}.{}", e.field) };
            err(&field, e.reason)
        })?;
        n.daemon = Some(table.clone());
    }
    for n in &nodes {
        if !n.show.is_empty() && n.daemon.is_none() {
            let i = nodes.iter().position(|m| m.name == n.name).unwrap_or(0);
            return Err(err(&format!("node[{i}].show"), format!("no daemon runs on {} ([daemon.{}])", n.name, n.name)));
        }
    }

    let daemon_node = |field: &str, name: &str| {
        let name = known(field, name)?;
        if nodes.iter().any(|n| n.name == name && n.daemon.is_some()) {
            Ok(())
        } else {
            Err(err(field, format!("no daemon runs on {name}")))
        }
    };
    // A device that is a link's end, at `at`.node and `at`.dev.
    let link_end = |at: &str, node: &str, dev: &str| {
        known(&format!("{at}.node"), node)?;
        if links.iter().flat_map(|l| &l.ends).any(|e| e.node == node && e.dev == dev) {
            Ok(())
        } else {
            Err(err(&format!("{at}.dev"), format!("{node} has no link device {dev:?}")))
        }
    };
    for (i, s) in raw.step.iter().enumerate() {
        let at = format!("step[{i}]");
        match s {
            Step::Wait { registered, secs } => {
                for (j, n) in registered.iter().enumerate() {
                    daemon_node(&format!("{at}.wait.registered[{j}]"), n)?;
                }
                if *secs == 0 || *secs > 120 {
                    return Err(err(&format!("{at}.wait.secs"), format!("{secs}: 1-120")));
                }
            }
            Step::Ping { from, count, .. } => {
                known(&format!("{at}.ping.from"), from)?;
                if *count == 0 || *count > 100 {
                    return Err(err(&format!("{at}.ping.count"), format!("{count}: 1-100")));
                }
            }
            Step::Outage(o) => {
                let at = format!("{at}.outage");
                link_end(&at, &o.node, &o.dev)?;
                if o.down_secs == 0 || o.down_secs > 30 || o.up_secs == 0 || o.up_secs > 30 {
                    return Err(err(&format!("{at}.down-secs"), "down-secs and up-secs: 1-30".into()));
                }
                if o.streams.is_empty() {
                    return Err(err(&format!("{at}.streams"), "no stream to measure".into()));
                }
                for (j, s) in o.streams.iter().enumerate() {
                    known(&format!("{at}.streams[{j}].from"), &s.from)?;
                    daemon_node(&format!("{at}.streams[{j}].itr"), &s.itr)?;
                }
            }
            Step::Stop { node } => {
                daemon_node(&format!("{at}.stop.node"), node)?;
            }
            Step::Link { node, dev, .. } => link_end(&format!("{at}.link"), node, dev)?,
            Step::Show { nodes, table } => {
                for (j, n) in nodes.iter().enumerate() {
                    daemon_node(&format!("{at}.show.nodes[{j}]"), n)?;
                }
                if nodes.is_empty() {
                    return Err(err(&format!("{at}.show.nodes"), "no node to ask".into()));
                }
                show_what(table).map_err(|r| err(&format!("{at}.show.table"), r))?;
            }
            Step::Mtu { from, address, size, count } => {
                known(&format!("{at}.mtu.from"), from)?;
                if *count == 0 || *count > 100 {
                    return Err(err(&format!("{at}.mtu.count"), format!("{count}: 1-100")));
                }
                let least = if address.is_ipv6() { 48 } else { 28 };
                if *size < least || *size > 65000 {
                    return Err(err(&format!("{at}.mtu.size"), format!("{size}: {least}-65000")));
                }
            }
            Step::Tcp { from, to, secs, .. } => {
                known(&format!("{at}.tcp.from"), from)?;
                known(&format!("{at}.tcp.to"), to)?;
                if *secs == 0 || *secs > 30 {
                    return Err(err(&format!("{at}.tcp.secs"), format!("{secs}: 1-30")));
                }
            }
            Step::Flows(f) => {
                let at = format!("{at}.flows");
                known(&format!("{at}.from"), &f.from)?;
                known(&format!("{at}.to"), &f.to)?;
                // iperf3 runs at most 128 streams.
                if f.flows == 0 || f.flows > 128 {
                    return Err(err(&format!("{at}.flows"), format!("{}: 1-128", f.flows)));
                }
                if f.secs == 0 || f.secs > 30 {
                    return Err(err(&format!("{at}.secs"), format!("{}: 1-30", f.secs)));
                }
                if f.pps == 0 || u64::from(f.pps) * u64::from(f.flows) > 100_000 {
                    return Err(err(&format!("{at}.pps"), format!("{}: 1 to 100000 in all flows", f.pps)));
                }
                for (j, e) in f.etrs.iter().enumerate() {
                    daemon_node(&format!("{at}.etrs[{j}]"), e)?;
                }
                match &f.router {
                    Some(r) => {
                        known(&format!("{at}.router"), r)?;
                    }
                    None if !f.locators.is_empty() => {
                        return Err(err(&format!("{at}.locators"), "locators are counted at a router: name it".into()))
                    }
                    None => {}
                }
            }
            Step::Detected { node, secs, .. } => {
                daemon_node(&format!("{at}.detected.node"), node)?;
                if *secs == 0 || *secs > 120 {
                    return Err(err(&format!("{at}.detected.secs"), format!("{secs}: 1-120")));
                }
            }
            Step::Move(m) => {
                let at = format!("{at}.move");
                known(&format!("{at}.host"), &m.host)?;
                known(&format!("{at}.client"), &m.client)?;
                for (f, n) in [("itr", &m.itr), ("old", &m.old), ("new", &m.new)] {
                    daemon_node(&format!("{at}.{f}"), n)?;
                }
                let from = known(&format!("{at}.from"), &m.from)?;
                let on_bridge =
                    links.iter().flat_map(|l| &l.ends).any(|e| e.node == from && e.dev == m.port && e.bridge.is_some());
                if !on_bridge {
                    return Err(err(&format!("{at}.port"), format!("{from} has no bridged link end {:?}", m.port)));
                }
                // The host announces itself from the other end (gratuitous ARP: IPv4).
                let to_host = links.iter().any(|l| {
                    let [a, b] = &l.ends;
                    (b.node == from && b.dev == m.port && a.node == m.host)
                        || (a.node == from && a.dev == m.port && b.node == m.host)
                });
                if !to_host {
                    return Err(err(
                        &format!("{at}.port"),
                        format!("{from}'s {:?} is not linked to {}", m.port, m.host),
                    ));
                }
                if !m.address.is_ipv4() {
                    return Err(err(
                        &format!("{at}.address"),
                        "the moved host announces itself by gratuitous ARP: IPv4".into(),
                    ));
                }
                let to = known(&format!("{at}.to"), &m.to)?;
                if !nodes.iter().any(|n| n.name == to && n.bridges.contains(&m.bridge)) {
                    return Err(err(&format!("{at}.bridge"), format!("node {to} has no bridge {:?}", m.bridge)));
                }
                if m.pps == 0 || m.pps > 10_000 {
                    return Err(err(&format!("{at}.pps"), format!("{}: 1-10000", m.pps)));
                }
                if m.secs < 2 || m.secs > 30 {
                    return Err(err(&format!("{at}.secs"), format!("{}: 2-30", m.secs)));
                }
                if m.at_ms >= u64::from(m.secs) * 1000 {
                    return Err(err(
                        &format!("{at}.at-ms"),
                        format!("{}: the move must happen during the stream", m.at_ms),
                    ));
                }
            }
        }
    }
    Ok(Topology { name: name.to_string(), about: raw.about, diagram: raw.diagram, nodes, links, steps: raw.step })
}

/// A `loci show` table by name.
pub fn show_what(s: &str) -> Result<ShowWhat, String> {
    use clap::ValueEnum;
    ShowWhat::from_str(s, false).map_err(|_| {
        let names: Vec<String> =
            ShowWhat::value_variants().iter().filter_map(|v| Some(v.to_possible_value()?.get_name().into())).collect();
        format!("{s:?} is not one of {}", names.join(", "))
    })
}

/// Linux interface names: 1-15 bytes, no '/', whitespace or ':'.
fn check_dev(dev: &str) -> Result<(), String> {
    if dev.is_empty() || dev.len() > 15 || dev.bytes().any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace()) {
        return Err(format!("{dev:?} is not an interface name (1-15 bytes, no '/', ':' or space)"));
    }
    Ok(())
}

/// An interface address with its prefix length (host bits allowed: `10.1.1.10/24`).
fn cidr(s: &str) -> Result<IpNet, String> {
    s.parse().map_err(|_| format!("{s:?} is not ADDRESS/LENGTH"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fails(text: &str, want: &str) {
        let e = parse("t", Path::new("t.toml"), text).expect_err("must be refused").to_string();
        assert!(e.contains(want), "{e}\nwanted: {want}");
    }

    const BASE: &str = "about = \"x\"\n[[node]]\nname = \"a\"\n[[node]]\nname = \"b\"\nbridges = [\"br\"]\n";

    #[test]
    fn scenarios_shipped_are_valid() {
        for s in super::super::SCENARIOS {
            let t = parse(s.name, Path::new(s.file), s.text).unwrap_or_else(|e| panic!("{e}"));
            assert!(!t.steps.is_empty(), "{}", s.name);
        }
    }

    #[test]
    fn errors_name_file_line_and_field() {
        fails(
            &format!("{BASE}[[link]]\na = {{ node = \"a\", dev = \"e\" }}\nb = {{ node = \"zz\", dev = \"e\" }}\n"),
            "t.toml:9: link[0].b.node: no node \"zz\"",
        );
        fails(&format!("{BASE}[[node]]\nname = \"A b\"\n"), "t.toml:8: node[2].name");
        fails(&format!("{BASE}[[node]]\nname = \"a\"\n"), "node \"a\" is defined twice");
        fails(&format!("{BASE}colour = 1\n"), "unknown field `colour`");
        fails(
            &format!("{BASE}[[link]]\na = {{ node = \"a\", dev = \"e\", addresses = [\"10.1.1.1\"] }}\nb = {{ node = \"b\", dev = \"e\", bridge = \"nope\" }}\n"),
            "link[0].a.addresses[0]: \"10.1.1.1\" is not ADDRESS/LENGTH",
        );
        fails(&format!("{BASE}[[link]]\na = {{ node = \"a\", dev = \"e\" }}\nb = {{ node = \"b\", dev = \"e\", bridge = \"nope\" }}\n"),
            "link[0].b.bridge: node b has no bridge \"nope\"");
        fails(
            &format!("{BASE}[[step]]\nping = {{ from = \"q\", address = \"10.0.0.1\" }}\n"),
            "t.toml:8: step[0].ping.from: no node \"q\"",
        );
        fails(
            &format!("{BASE}[[step]]\nwait = {{ registered = [\"a\"] }}\n"),
            "step[0].wait.registered[0]: no daemon runs on a",
        );
        fails(
            &format!("{BASE}[[step]]\nflows = {{ from = \"a\", to = \"b\", address = \"10.0.0.1\", flows = 500 }}\n"),
            "step[0].flows.flows: 500: 1-128",
        );
        // A daemon configuration error points into the scenario file.
        fails(
            &format!("{BASE}[daemon.a.node]\nname = \"x\"\n[daemon.a.xtr]\nroles = [\"itr\"]\nmap-resolvers = [\"nonsense\"]\n"),
            "t.toml:11: daemon.a.xtr.map-resolvers[0]: \"nonsense\" is not an IP address",
        );
        fails(
            &format!("{BASE}[daemon.a.node]\nname = \"x\"\napi-socket = \"/x\"\n[daemon.a.map-resolver]\n"),
            "daemon.a.node.api-socket: the lab sets this",
        );
        fails(&format!("{BASE}[daemon.zz.node]\nname = \"x\"\n"), "daemon.zz: no node \"zz\"");
        fails(
            &format!("{BASE}[[step]]\nlink = {{ node = \"a\", dev = \"lo\", up = false }}\n"),
            "t.toml:8: step[0].link.dev: a has no link device \"lo\"",
        );
        fails(
            &format!("{BASE}[[step]]\nshow = {{ nodes = [\"a\"], table = \"stats\" }}\n"),
            "step[0].show.nodes[0]: no daemon runs on a",
        );
    }

    #[test]
    fn a_show_step_names_a_table() {
        let text = include_str!("../../../../lab/anycast.toml");
        let step = "table = \"stats\" }";
        assert!(text.contains(step));
        fails(&text.replace(step, "table = \"routes\" }"), "show.table: \"routes\" is not one of");
    }

    #[test]
    fn a_moved_host_must_own_the_port_and_announce_itself_by_arp() {
        let text = include_str!("../../../../lab/move-extended.toml");
        let step = "move = { host = \"h1\", address = \"10.1.9.10\"";
        assert!(text.contains(step));
        fails(
            &text.replace(step, "move = { host = \"c1\", address = \"10.1.9.10\""),
            "swa's \"h1\" is not linked to c1",
        );
        fails(&text.replace(step, "move = { host = \"h1\", address = \"2001:db8::10\""), "gratuitous ARP: IPv4");
    }
}
