//! `loci lab [SCENARIO]`: a scenario's topology built from network namespaces, veth pairs and
//! bridges, with real `loci run` daemons and real traffic (ping, iperf3), reported with what
//! `loci show` says on each node; then everything the run made is removed, also when a step
//! fails or the run is interrupted (SIGINT, SIGTERM). `--keep` leaves it up; `--down RUN-ID`
//! removes a kept run.
//!
//! A scenario is one file under `lab/` (see [`topology`]); this module knows no scenario.
//! Names: a run is `lXXXX` (four hex digits), its namespaces `lXXXX-NODE`, its files
//! `$TMPDIR/loci-lab-lXXXX/` (configurations, API sockets, logs).

mod moves;
mod outage;
mod sys;
mod topology;
mod traffic;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use serde_json::Value;

use crate::ShowWhat;
use sys::{Netns, Proc, RunDir};
use topology::{Step, Topology};

/// A scenario shipped with loci: its file, built into the binary so that `loci lab` runs
/// anywhere. Adding one is a file under `lab/` and a line here.
pub struct Scenario {
    pub name: &'static str,
    pub file: &'static str,
    pub text: &'static str,
}

pub const SCENARIOS: &[Scenario] = &[
    Scenario { name: "resolve", file: "lab/resolve.toml", text: include_str!("../../../../lab/resolve.toml") },
    Scenario {
        name: "move-extended",
        file: "lab/move-extended.toml",
        text: include_str!("../../../../lab/move-extended.toml"),
    },
    Scenario {
        name: "move-across",
        file: "lab/move-across.toml",
        text: include_str!("../../../../lab/move-across.toml"),
    },
    Scenario { name: "non-lisp", file: "lab/non-lisp.toml", text: include_str!("../../../../lab/non-lisp.toml") },
    Scenario { name: "mtu", file: "lab/mtu.toml", text: include_str!("../../../../lab/mtu.toml") },
    Scenario { name: "failover", file: "lab/failover.toml", text: include_str!("../../../../lab/failover.toml") },
    Scenario { name: "anycast", file: "lab/anycast.toml", text: include_str!("../../../../lab/anycast.toml") },
];

/// How long a daemon may take to open its API socket.
const START_PATIENCE: Duration = Duration::from_secs(10);
/// iperf3 servers of successive steps use successive ports from here.
const FIRST_PORT: u16 = 5201;

pub struct Options {
    pub scenario: String,
    pub list: bool,
    pub keep: bool,
    pub down: Option<String>,
    pub json: bool,
}

pub fn main(o: Options) -> Result<()> {
    if o.list {
        for s in SCENARIOS {
            let t = topology::parse(s.name, Path::new(s.file), s.text)?;
            println!("{:<14} {}", s.name, t.about);
        }
        return Ok(());
    }
    if let Some(run) = &o.down {
        return down(run);
    }
    let topo = load(&o.scenario)?;
    needs(&topo)?;
    sys::catch_signals()?;
    let mut lab = Lab::create(&topo)?;
    eprintln!(
        "loci lab {}: run {} (namespaces {}-*, files in {}; if this process is killed: loci lab --down {})",
        topo.name,
        lab.run,
        lab.run,
        lab.dir.path.display(),
        lab.run
    );
    let result = lab.build().and_then(|()| lab.steps());
    let interrupted = sys::check_interrupt().is_err();
    match result {
        Ok(report) => {
            if o.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.render(&topo));
            }
            if o.keep {
                lab.keep();
            } else {
                eprintln!("removing run {} ...", lab.run);
            }
            Ok(())
        }
        Err(e) => {
            if interrupted {
                // Whatever the step saw (its tools got the terminal's SIGINT too), this is why.
                bail!("interrupted");
            }
            eprint!("{}", lab.logs());
            if o.keep {
                lab.keep();
            }
            Err(e)
        }
    }
}

/// A scenario by name, or a scenario file by path.
fn load(scenario: &str) -> Result<Topology> {
    if let Some(s) = SCENARIOS.iter().find(|s| s.name == scenario) {
        return Ok(topology::parse(s.name, Path::new(s.file), s.text)?);
    }
    let path = Path::new(scenario);
    if scenario.ends_with(".toml") || path.exists() {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let name = path.file_stem().map_or(scenario.into(), |s| s.to_string_lossy().into_owned());
        return Ok(topology::parse(&name, path, &text)?);
    }
    let names: Vec<&str> = SCENARIOS.iter().map(|s| s.name).collect();
    bail!("no scenario {scenario:?}; scenarios: {} (or give a scenario file)", names.join(", "))
}

/// Root and the tools the lab drives (a moved host announces itself with arping).
fn needs(topo: &Topology) -> Result<()> {
    if !sys::sh(&["id", "-u"]).is_ok_and(|u| u.trim() == "0") {
        bail!("loci lab needs root (network namespaces, TUN devices)");
    }
    let moves = topo.steps.iter().any(|s| matches!(s, Step::Move(_)));
    let tools = ["ip", "ping", "iperf3", "timeout"].into_iter().chain(moves.then_some("arping"));
    let missing: Vec<&str> = tools.filter(|t| sys::tool_missing(t)).collect();
    if !missing.is_empty() {
        bail!(
            "loci lab {} needs {} (apt-get install iproute2 iputils-ping iperf3 iputils-arping)",
            topo.name,
            missing.join(", ")
        );
    }
    Ok(())
}

fn run_dir(run: &str) -> PathBuf {
    std::env::temp_dir().join(format!("loci-lab-{run}"))
}

/// Whether `s` is a run ID (`l` and four hex digits).
fn is_run_id(s: &str) -> bool {
    s.len() == 5 && s.starts_with('l') && s[1..].bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

fn namespaces_of(run: &str) -> Result<Vec<String>> {
    let list = sys::sh(&["ip", "netns", "list"])?;
    let prefix = format!("{run}-");
    Ok(list
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&prefix))
        .map(String::from)
        .collect())
}

/// `loci lab --down RUN-ID`: removes what a kept (or killed) run left.
fn down(run: &str) -> Result<()> {
    if !is_run_id(run) {
        bail!("{run:?} is not a run ID (l and four hex digits, as `loci lab` printed)");
    }
    let spaces = namespaces_of(run)?;
    for ns in &spaces {
        sys::remove_netns(ns);
    }
    let dir = run_dir(run);
    let had_dir = dir.exists();
    if had_dir {
        std::fs::remove_dir_all(&dir).with_context(|| format!("cannot remove {}", dir.display()))?;
    }
    if spaces.is_empty() && !had_dir {
        bail!("nothing left of run {run}");
    }
    println!(
        "removed run {run}: {} namespace(s){}",
        spaces.len(),
        if had_dir { format!(", {}", dir.display()) } else { String::new() }
    );
    Ok(())
}

/// One run. Fields drop in order: processes (stopped), namespaces, files.
struct Lab<'t> {
    topo: &'t Topology,
    run: String,
    exe: PathBuf,
    /// Daemons, by node name.
    daemons: Vec<(String, Proc)>,
    netns: Vec<Netns>,
    dir: RunDir,
}

impl Drop for Lab<'_> {
    fn drop(&mut self) {
        // The xTRs before the Map-Server they talk to.
        while let Some(d) = self.daemons.pop() {
            drop(d);
        }
        self.netns.clear();
    }
}

impl<'t> Lab<'t> {
    /// Claims a fresh run ID (its directory); builds nothing yet.
    fn create(topo: &'t Topology) -> Result<Lab<'t>> {
        let exe = std::env::current_exe().context("cannot find the loci binary")?;
        let seed =
            std::process::id() ^ std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.subsec_nanos();
        for i in 0..16u32 {
            let run = format!("l{:04x}", (seed.wrapping_add(i.wrapping_mul(0x9e37))) & 0xffff);
            if !namespaces_of(&run)?.is_empty() {
                continue;
            }
            // Creating the directory (not there before) is what claims the ID.
            if let Ok(dir) = RunDir::create(run_dir(&run)) {
                return Ok(Lab { topo, run, exe, daemons: Vec::new(), netns: Vec::new(), dir });
            }
        }
        bail!("no free run ID (many runs kept? see `ip netns list` and loci lab --down)")
    }

    fn ns(&self, node: &str) -> String {
        format!("{}-{node}", self.run)
    }

    fn netns(&self, node: &str) -> &Netns {
        let name = self.ns(node);
        self.netns.iter().find(|n| n.name == name).expect("built")
    }

    fn socket(&self, node: &str) -> PathBuf {
        self.dir.path.join(format!("{node}.sock"))
    }

    fn build(&mut self) -> Result<()> {
        let topo = self.topo;
        eprintln!("building {} namespaces, {} links ...", topo.nodes.len(), topo.links.len());
        for n in &topo.nodes {
            sys::check_interrupt()?;
            self.netns.push(Netns::new(self.ns(&n.name))?);
            let ns = self.netns(&n.name);
            for b in &n.bridges {
                ns.ip(&["link", "add", b, "type", "bridge"])?;
                ns.ip(&["link", "set", b, "up"])?;
            }
            for (dev, a) in &n.addresses {
                ns.ip(&["addr", "add", &a.to_string(), "dev", dev])?;
            }
        }
        for l in &topo.links {
            let [a, b] = &l.ends;
            let (na, nb) = (self.ns(&a.node), self.ns(&b.node));
            sys::sh(&[
                "ip", "link", "add", &a.dev, "netns", &na, "type", "veth", "peer", "name", &b.dev, "netns", &nb,
            ])?;
            for e in [a, b] {
                let ns = self.netns(&e.node);
                for addr in &e.addresses {
                    ns.ip(&["addr", "add", &addr.to_string(), "dev", &e.dev])?;
                }
                if let Some(mac) = &e.mac {
                    ns.ip(&["link", "set", &e.dev, "address", mac])?;
                }
                if let Some(br) = &e.bridge {
                    ns.ip(&["link", "set", &e.dev, "master", br])?;
                }
                ns.ip(&["link", "set", &e.dev, "up"])?;
            }
        }
        for n in &topo.nodes {
            for r in &n.routes {
                let mut args = vec!["route", "add"];
                args.extend(r.iter().map(String::as_str));
                self.netns(&n.name).ip(&args).with_context(|| format!("node {}", n.name))?;
            }
        }
        for n in &topo.nodes {
            for c in &n.setup {
                let words: Vec<&str> = c.iter().map(String::as_str).collect();
                self.netns(&n.name).exec(&words).with_context(|| format!("node {}", n.name))?;
            }
        }
        self.wait_links_ready()?;
        for n in topo.nodes.iter().filter(|n| n.daemon.is_some()) {
            sys::check_interrupt()?;
            let cfg = self.dir.path.join(format!("{}.toml", n.name));
            let text = topology::daemon_config(n.daemon.as_ref().expect("filtered"), &n.name, &self.dir.path);
            std::fs::write(&cfg, text).with_context(|| format!("cannot write {}", cfg.display()))?;
            let ns = self.ns(&n.name);
            let mut cmd = sys::in_ns(&ns, &[]);
            cmd.arg(&self.exe).arg("run").arg("-c").arg(&cfg).env("LOCI_LOG", "info").env("NO_COLOR", "1");
            let log = self.dir.path.join(format!("{}.log", n.name));
            let p = Proc::spawn(&format!("loci run on {}", n.name), cmd, Some(&log))?;
            self.daemons.push((n.name.clone(), p));
        }
        let names: Vec<&str> = self.daemons.iter().map(|d| d.0.as_str()).collect();
        eprintln!("started loci on {}", names.join(", "));
        for i in 0..self.daemons.len() {
            let sock = self.socket(&self.daemons[i].0);
            let what = format!("the API of {}", self.daemons[i].1.name);
            sys::poll(&what, START_PATIENCE, || {
                if let Some(s) = self.daemons[i].1.exited() {
                    bail!("{} exited ({s})", self.daemons[i].1.name);
                }
                Ok(sock.exists().then_some(()))
            })?;
        }
        Ok(())
    }

    /// Waits until every link end has its carrier and every bridge port forwards. The kernel
    /// reports carrier changes in batches up to a second apart (linkwatch) when many links
    /// change at once, as here; until then a bridge port drops what enters it, and the first
    /// ARP request over it would be lost (a second's retry, not a loci delay, in the figures).
    fn wait_links_ready(&self) -> Result<()> {
        let topo = self.topo;
        sys::poll("the lab's links to come up", START_PATIENCE, || {
            for n in &topo.nodes {
                let ns = self.netns(&n.name);
                let ends: Vec<&str> = topo
                    .links
                    .iter()
                    .flat_map(|l| &l.ends)
                    .filter(|e| e.node == n.name)
                    .map(|e| e.dev.as_str())
                    .collect();
                let links: Value = serde_json::from_str(&ns.ip(&["-j", "link", "show"])?)?;
                let up = |dev: &str| {
                    links.as_array().into_iter().flatten().any(|l| l["ifname"] == dev && l["operstate"] == "UP")
                };
                if !ends.iter().all(|d| up(d)) {
                    return Ok(None);
                }
                if !n.bridges.is_empty() {
                    let ports: Value = serde_json::from_str(&ns.exec(&["bridge", "-j", "link", "show"])?)?;
                    if ports.as_array().into_iter().flatten().any(|p| p["state"] != "forwarding") {
                        return Ok(None);
                    }
                }
            }
            Ok(Some(()))
        })
    }

    /// `loci show` on the daemon of `node`, as JSON.
    fn show(&self, node: &str, what: ShowWhat) -> Result<Value> {
        let path = what.api_path(None, None);
        crate::runtime()?.block_on(crate::api::get(&self.socket(node), &path))
    }

    fn decapsulated(&self, node: &str) -> Result<u64> {
        let v = self.show(node, ShowWhat::Stats)?;
        Ok(v["data_plane"]["decapsulated"].as_u64().unwrap_or(0))
    }

    fn steps(&mut self) -> Result<Report> {
        let topo = self.topo;
        let mut steps = Vec::new();
        for (i, step) in topo.steps.iter().enumerate() {
            sys::check_interrupt()?;
            let port = FIRST_PORT + i as u16;
            let log = self.dir.path.join(format!("iperf3-{i}.log"));
            let r = match step {
                Step::Wait { registered, secs } => {
                    eprintln!("waiting for {} to register ...", registered.join(", "));
                    let start = Instant::now();
                    for node in registered {
                        sys::poll(&format!("{node} to register"), Duration::from_secs(*secs), || {
                            let db = self.show(node, ShowWhat::Database)?;
                            let ms = db["map_servers"].as_array().cloned().unwrap_or_default();
                            Ok((!ms.is_empty() && ms.iter().all(|m| !m["acknowledged_secs_ago"].is_null()))
                                .then_some(()))
                        })?;
                    }
                    StepResult::Wait { registered: registered.clone(), secs: start.elapsed().as_secs_f64() }
                }
                Step::Detected { node, host, secs } => {
                    eprintln!("waiting for {node} to serve {host} ...");
                    StepResult::Detected(moves::detected(self, node, *host, *secs)?)
                }
                Step::Move(m) => {
                    eprintln!("moving {} from {} to {} during a stream from {} ...", m.host, m.from, m.to, m.client);
                    StepResult::Move(moves::run(self, m, port, &self.dir.path.join(format!("move-{i}")))?)
                }
                Step::Ping { from, address, count } => {
                    eprintln!("ping {from} -> {address} ...");
                    StepResult::Ping(traffic::ping(&self.ns(from), from, *address, *count)?)
                }
                Step::Outage(o) => {
                    eprintln!(
                        "{} down for {} s, up for {} s, {} stream(s) ...",
                        o.dev,
                        o.down_secs,
                        o.up_secs,
                        o.streams.len()
                    );
                    StepResult::Outage(outage::run(o, &*self, &self.dir.path, i)?)
                }
                Step::Stop { node } => {
                    eprintln!("stopping loci on {node} ...");
                    if let Some(k) = self.daemons.iter().position(|d| &d.0 == node) {
                        self.daemons.remove(k).1.stop();
                    }
                    StepResult::Stop { node: node.clone() }
                }
                Step::Link { node, dev, up } => {
                    let state = if *up { "up" } else { "down" };
                    eprintln!("{dev} of {node} {state} ...");
                    outage::Env::set_link(&*self, node, dev, *up)?;
                    StepResult::Link { node: node.clone(), dev: dev.clone(), up: *up }
                }
                Step::Show { nodes, table } => {
                    let w = topology::show_what(table).map_err(anyhow::Error::msg)?;
                    let shows = nodes.iter().map(|n| self.node_show(n, &[w])).collect::<Result<_>>()?;
                    StepResult::Show(shows)
                }
                Step::Mtu { from, address, size, count } => {
                    eprintln!("{size}-byte pings {from} -> {address}, with and without DF ...");
                    StepResult::Mtu(traffic::mtu(&self.ns(from), from, *address, *size, *count)?)
                }
                Step::Tcp { from, to, address, secs } => {
                    eprintln!("TCP {from} -> {to} ({address}) for {secs} s ...");
                    let (fns, tns) = (self.ns(from), self.ns(to));
                    StepResult::Tcp(traffic::tcp((&fns, from), (&tns, to), *address, *secs, port, &log)?)
                }
                Step::Flows(f) => {
                    eprintln!("{} UDP flows {} -> {} ({}) for {} s ...", f.flows, f.from, f.to, f.address, f.secs);
                    let etrs_before = self.counts(&f.etrs, |n| self.decapsulated(n))?;
                    let router = f.router.as_deref().map(|r| self.ns(r));
                    let towards = |a: &IpAddr| traffic::tx_towards(router.as_deref().expect("validated"), *a);
                    let loc_before = self.counts(&f.locators, towards)?;
                    let counts = traffic::udp_flows(
                        &self.ns(&f.from),
                        &self.ns(&f.to),
                        f.address,
                        (f.flows, f.secs, f.pps),
                        port,
                        &log,
                    )?;
                    let etrs = delta(&etrs_before, &self.counts(&f.etrs, |n| self.decapsulated(n))?);
                    let locators = delta(&loc_before, &self.counts(&f.locators, towards)?);
                    let total: u64 = etrs.iter().map(|e| e.1).sum();
                    StepResult::Flows(FlowsResult {
                        from: f.from.clone(),
                        to: f.to.clone(),
                        address: f.address,
                        secs: f.secs,
                        counts,
                        etrs: etrs
                            .into_iter()
                            .map(|(node, decapsulated)| EtrShare {
                                node,
                                decapsulated,
                                share_pct: 100.0 * decapsulated as f64 / total.max(1) as f64,
                            })
                            .collect(),
                        router: f.router.clone(),
                        locators: locators
                            .into_iter()
                            .map(|(address, packets)| LocatorCount { address, packets })
                            .collect(),
                    })
                }
            };
            steps.push(r);
        }
        let shows = topo
            .nodes
            .iter()
            .filter(|n| !n.show.is_empty())
            .map(|n| self.node_show(&n.name, &n.show))
            .collect::<Result<_>>()?;
        Ok(Report {
            scenario: topo.name.clone(),
            about: topo.about.clone(),
            run: self.run.clone(),
            namespaces: self.netns.iter().map(|n| n.name.clone()).collect(),
            dir: self.dir.path.clone(),
            steps,
            shows,
        })
    }

    /// The tables `what` of `node`'s daemon, now.
    fn node_show(&self, node: &str, what: &[ShowWhat]) -> Result<NodeShow> {
        let tables = what.iter().map(|&w| Ok((w, self.show(node, w)?))).collect::<Result<_>>()?;
        Ok(NodeShow { node: node.to_string(), namespace: self.ns(node), socket: self.socket(node), tables })
    }

    fn counts<K: Clone>(&self, keys: &[K], f: impl Fn(&K) -> Result<u64>) -> Result<Vec<(K, u64)>> {
        keys.iter().map(|k| Ok((k.clone(), f(k)?))).collect()
    }

    /// The daemons' last log lines, for a failed run.
    fn logs(&self) -> String {
        self.daemons.iter().map(|(_, p)| p.log_tail(15)).collect()
    }

    /// Leaves everything up and says how to use and remove it.
    fn keep(&mut self) {
        for (_, p) in &mut self.daemons {
            p.keep();
        }
        for n in &mut self.netns {
            n.keep();
        }
        self.dir.keep();
        let mut rows = Vec::new();
        for n in &self.topo.nodes {
            let show = if n.daemon.is_some() {
                format!("loci show stats --socket {}", self.socket(&n.name).display())
            } else {
                String::new()
            };
            rows.push(vec![n.name.clone(), n.about.clone(), format!("ip netns exec {} bash", self.ns(&n.name)), show]);
        }
        eprint!(
            "\nleft up (--keep): run {}\n{}remove it with: loci lab --down {}\n",
            self.run,
            crate::show::table(&["NODE", "WHAT", "ENTER", "ASK ITS DAEMON"], &rows),
            self.run
        );
    }
}

impl outage::Env for Lab<'_> {
    fn ns(&self, node: &str) -> String {
        Lab::ns(self, node)
    }

    /// Down or up; up also puts back the node's routes through the device, which the kernel
    /// removed with it.
    fn set_link(&self, node: &str, dev: &str, up: bool) -> Result<()> {
        let ns = self.netns(node);
        ns.ip(&["link", "set", dev, if up { "up" } else { "down" }])?;
        if up {
            let n = self.topo.nodes.iter().find(|n| n.name == node).expect("validated");
            for r in &n.routes {
                let mut args = vec!["route", "replace"];
                args.extend(r.iter().map(String::as_str));
                // Routes through other devices are still there; replace leaves them as they are.
                let _ = ns.ip(&args);
            }
        }
        Ok(())
    }

    fn rlocs(&self, node: &str) -> Result<Value> {
        self.show(node, ShowWhat::Rlocs)
    }
}

fn delta<K: Clone>(before: &[(K, u64)], after: &[(K, u64)]) -> Vec<(K, u64)> {
    before.iter().zip(after).map(|((k, b), (_, a))| (k.clone(), a.saturating_sub(*b))).collect()
}

#[derive(Serialize)]
struct Report {
    scenario: String,
    about: String,
    run: String,
    namespaces: Vec<String>,
    dir: PathBuf,
    steps: Vec<StepResult>,
    shows: Vec<NodeShow>,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
enum StepResult {
    Wait { registered: Vec<String>, secs: f64 },
    Ping(traffic::Ping),
    Tcp(traffic::Tcp),
    Flows(FlowsResult),
    Detected(moves::Detected),
    Move(moves::MoveResult),
    Mtu(traffic::Mtu),
    Outage(outage::OutageResult),
    Stop { node: String },
    Link { node: String, dev: String, up: bool },
    Show(Vec<NodeShow>),
}

#[derive(Serialize)]
struct FlowsResult {
    from: String,
    to: String,
    address: IpAddr,
    secs: u32,
    #[serde(flatten)]
    counts: traffic::FlowCounts,
    etrs: Vec<EtrShare>,
    router: Option<String>,
    locators: Vec<LocatorCount>,
}

#[derive(Serialize)]
struct EtrShare {
    node: String,
    decapsulated: u64,
    share_pct: f64,
}

#[derive(Serialize)]
struct LocatorCount {
    address: IpAddr,
    packets: u64,
}

struct NodeShow {
    node: String,
    namespace: String,
    socket: PathBuf,
    tables: Vec<(ShowWhat, Value)>,
}

impl Serialize for NodeShow {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let tables: serde_json::Map<String, Value> =
            self.tables.iter().map(|(w, v)| (show_name(*w), v.clone())).collect();
        serde_json::json!({ "node": self.node, "namespace": self.namespace, "socket": self.socket, "tables": tables })
            .serialize(s)
    }
}

impl NodeShow {
    fn render(&self) -> String {
        let mut out = String::new();
        for (w, v) in &self.tables {
            out += &format!("\n{} ({}): loci show {}\n", self.node, self.namespace, show_name(*w));
            out += &indent(&w.render(v));
        }
        out
    }
}

fn show_name(w: ShowWhat) -> String {
    use clap::ValueEnum;
    w.to_possible_value().map_or_else(String::new, |v| v.get_name().to_string())
}

impl Report {
    fn render(&self, topo: &Topology) -> String {
        let mut out = format!("loci lab {}: {}\n", self.scenario, self.about);
        if !topo.diagram.is_empty() {
            out += &format!("\n{}\n", topo.diagram.trim_end());
        }
        out += "\n";
        for s in &self.steps {
            out += &match s {
                StepResult::Wait { registered, secs } => {
                    format!("registered   {} (Map-Notify received) after {secs:.1} s\n", registered.join(", "))
                }
                StepResult::Ping(p) => format!(
                    "ping         {} -> {}: first reply after {:.0} ms ({} lost while both sides resolved); then {}/{} answered ({:.0} % loss), rtt min/avg/max {:.3}/{:.3}/{:.3} ms\n",
                    p.from, p.address, p.first_reply_ms, p.lost_resolving, p.received, p.sent, p.loss_pct, p.rtt_min_ms, p.rtt_avg_ms, p.rtt_max_ms
                ),
                StepResult::Outage(o) => {
                    let mut s = format!("outage       {} of {} down {} s, then up {} s:\n", o.dev, o.node, o.down_secs, o.up_secs);
                    for st in &o.streams {
                        let ms = |v: Option<f64>| v.map_or("never".to_string(), |v| format!("{v:.0} ms"));
                        s += &format!(
                            "             {} -> {} (ITR {}, locator {}): failover gap {}, locator up again after {}, longest gap after {:.0} ms; {}/{} answered\n",
                            st.from, st.address, st.itr, st.locator, ms(st.failover_ms), ms(st.back_ms), st.back_gap_ms, st.received, st.sent
                        );
                    }
                    s
                }
                StepResult::Stop { node } => format!("stop         loci on {node}\n"),
                StepResult::Link { node, dev, up } => {
                    let what = if *up { "up, its routes back" } else { "down, its routes withdrawn" };
                    format!("link         {dev} of {node} {what}\n")
                }
                StepResult::Show(shows) => {
                    let names: Vec<&str> = shows.iter().map(|n| n.node.as_str()).collect();
                    format!("show         {}:\n", names.join(", ")) + &shows.iter().map(NodeShow::render).collect::<String>()
                        + "\n"
                }
                StepResult::Mtu(m) => format!(
                    "mtu          {} -> {}, {} bytes: DF set {}/{} answered, {} too-big (mtu {}), {} silent; DF clear {}/{} answered\n",
                    m.from, m.address, m.size, m.df.received, m.df.sent, m.df.too_big,
                    m.df.mtu.map_or("-".into(), |v| v.to_string()), m.df.silent, m.fragmentable.received, m.fragmentable.sent
                ),
                StepResult::Tcp(t) => format!(
                    "tcp          {} -> {} ({}): {:.2} Gbit/s over {} s ({:.1} MB, {} retransmits)\n",
                    t.from, t.to, t.address, t.gbit_per_s, t.secs, t.bytes as f64 / 1e6, t.retransmits
                ),
                StepResult::Detected(d) => d.render(),
                StepResult::Move(m) => m.render(),
                StepResult::Flows(f) => {
                    let c = &f.counts;
                    let mut s = format!(
                        "flows        {} -> {} ({}): {} UDP flows for {} s, {} datagrams sent, {} lost; {}/{} flows delivered\n",
                        f.from, f.to, f.address, c.flows, f.secs, c.sent, c.lost, c.flows_delivered, c.flows
                    );
                    if !f.etrs.is_empty() {
                        let rows: Vec<Vec<String>> = f
                            .etrs
                            .iter()
                            .map(|e| vec![e.node.clone(), e.decapsulated.to_string(), format!("{:.1} %", e.share_pct)])
                            .collect();
                        s += &indent(&crate::show::table(&["ETR", "DECAPSULATED", "SHARE"], &rows));
                    }
                    if let (Some(r), false) = (&f.router, f.locators.is_empty()) {
                        let rows: Vec<Vec<String>> =
                            f.locators.iter().map(|l| vec![l.address.to_string(), l.packets.to_string()]).collect();
                        s += &indent(&crate::show::table(&["LOCATOR", &format!("PACKETS FROM {}", r.to_uppercase())], &rows));
                    }
                    s
                }
            };
        }
        for n in &self.shows {
            out += &n.render();
        }
        out
    }
}

fn indent(text: &str) -> String {
    text.lines().map(|l| if l.trim().is_empty() { "\n".to_string() } else { format!("             {l}\n") }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids() {
        assert!(is_run_id("l0a9f"));
        for bad in ["l0a9", "x0a9f", "l0A9F", "l0a9f0", "../..", ""] {
            assert!(!is_run_id(bad), "{bad}");
        }
    }

    #[test]
    fn unknown_scenario_lists_the_known_ones() {
        let e = load("nope").expect_err("unknown").to_string();
        assert!(e.contains("no scenario \"nope\"") && e.contains("resolve"), "{e}");
    }
}
