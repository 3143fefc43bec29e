//! System tests in network namespaces: real `loci run` processes as two xTRs and a Map-Server,
//! hosts behind them, traffic through them.
//!
//! ```text
//!  a100 --\                                        /-- b100     (instance 100: IPv4 RLOCs)
//!          xTR-A == underlay router + MS == xTR-B
//!  a200 --/                                        \-- b200     (instance 200: IPv6 RLOCs)
//! ```
//!
//! Both instances use the same EID prefixes (10.1.1.0/24 and 2001:db8:a::/64 at site A,
//! 10.2.2.0/24 and 2001:db8:b::/64 at site B), kept apart on the xTRs by routing tables and
//! `ip rule`s, so every host pair covers two of the four EID/RLOC family combinations and the
//! instances must not leak into each other.
//!
//! Needs root (namespaces, TUN devices), iproute2, ping, iperf3 and tshark. Without root the
//! test prints "skipped: needs root" and passes, except under CI=true, where it must run.
//! Everything it makes (namespaces, processes, files) is removed by guards, also on failure.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

const LOCI: &str = env!("CARGO_BIN_EXE_loci");

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Whether the test can run here; prints why not and passes unless in CI.
fn runnable() -> bool {
    let root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    let missing: Vec<&str> = ["ip", "ping", "iperf3", "tshark"]
        .into_iter()
        .filter(|t| {
            !Command::new("sh").args(["-c", &format!("command -v {t}")]).output().is_ok_and(|o| o.status.success())
        })
        .collect();
    let why = match (root, missing.is_empty()) {
        (true, true) => return true,
        (false, _) => "skipped: needs root".to_string(),
        (true, false) => format!("skipped: needs {}", missing.join(", ")),
    };
    assert!(!in_ci(), "{why} (CI=true: this test must run)");
    println!("{why}");
    false
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    out
}

/// Runs a command and fails the test if it fails.
fn sh(args: &[&str]) -> String {
    let out = run(Command::new(args[0]).args(&args[1..]));
    assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `args` run in namespace `ns`.
fn netns_cmd(ns: &str, args: &[&str]) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]).args(args);
    c
}

/// A network namespace, deleted on drop.
struct Netns(String);

impl Netns {
    fn new(name: String) -> Self {
        sh(&["ip", "netns", "add", &name]);
        let ns = Netns(name);
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns.exec(&[
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
            "net.ipv6.conf.all.forwarding=1",
            "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.default.rp_filter=0",
            "net.ipv6.conf.all.accept_dad=0",
            "net.ipv6.conf.default.accept_dad=0",
        ]);
        ns
    }

    fn cmd(&self, args: &[&str]) -> Command {
        netns_cmd(&self.0, args)
    }

    fn exec(&self, args: &[&str]) -> String {
        let mut full = vec!["ip", "netns", "exec", &self.0];
        full.extend_from_slice(args);
        sh(&full)
    }

    fn ip(&self, args: &str) {
        let mut full = vec!["ip"];
        full.extend(args.split_whitespace());
        self.exec(&full);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

/// A background process, stopped (SIGTERM, then SIGKILL) on drop.
struct Proc {
    name: String,
    child: Child,
    log: Option<PathBuf>,
}

impl Proc {
    fn spawn(name: &str, mut cmd: Command, log: Option<PathBuf>) -> Self {
        match &log {
            Some(p) => {
                let f = std::fs::File::create(p).expect("log file");
                cmd.stdout(f.try_clone().expect("log file")).stderr(f);
            }
            None => {
                cmd.stdout(Stdio::null()).stderr(Stdio::null());
            }
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc { name: name.into(), child, log }
    }

    /// Stops the process (SIGTERM, SIGKILL after 3 s) and waits for it; the exit status when
    /// it ended by itself.
    fn stop(&mut self) -> Option<std::process::ExitStatus> {
        if let Ok(Some(s)) = self.child.try_wait() {
            return Some(s);
        }
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).output();
        let end = Instant::now() + Duration::from_secs(3);
        while Instant::now() < end {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }

    fn log_tail(&self) -> String {
        let Some(p) = &self.log else { return String::new() };
        let text = std::fs::read_to_string(p).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        format!("--- {} ---\n{}\n", self.name, lines[lines.len().saturating_sub(15)..].join("\n"))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The whole topology. Field order is drop order: processes before namespaces before files.
struct Lab {
    procs: Vec<Proc>,
    ul: Netns,
    xa: Netns,
    xb: Netns,
    hosts: Vec<(char, u32, Netns)>,
    dir: tempfile::TempDir,
}

/// Instance IDs and their RLOC family (the database of each uses RLOCs of that family).
const IIDS: [(u32, bool); 2] = [(100, false), (200, true)];

fn unique_prefix() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("lt{}x{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// Site `s` ('a' or 'b'): its EID prefixes, xTR RLOCs (IPv4, IPv6) and underlay neighbour.
struct Site {
    n: u8,
    v6: &'static str,
    rloc4: &'static str,
    rloc6: &'static str,
    ul4: &'static str,
    ul6: &'static str,
}

const SITE_A: Site =
    Site { n: 1, v6: "a", rloc4: "192.0.2.1", rloc6: "2001:db8:1::1", ul4: "192.0.2.254", ul6: "2001:db8:1::ff" };
const SITE_B: Site =
    Site { n: 2, v6: "b", rloc4: "198.51.100.1", rloc6: "2001:db8:2::1", ul4: "198.51.100.254", ul6: "2001:db8:2::ff" };

impl Site {
    fn eid4(&self) -> String {
        format!("10.{0}.{0}.0/24", self.n)
    }
    fn eid6(&self) -> String {
        format!("2001:db8:{}::/64", self.v6)
    }
    fn host4(&self) -> String {
        format!("10.{0}.{0}.2", self.n)
    }
    fn host6(&self) -> String {
        format!("2001:db8:{}::2", self.v6)
    }
}

fn veth(a: &Netns, an: &str, b: &Netns, bn: &str) {
    sh(&["ip", "link", "add", an, "netns", &a.0, "type", "veth", "peer", "name", bn, "netns", &b.0]);
    a.ip(&format!("link set dev {an} up"));
    b.ip(&format!("link set dev {bn} up"));
}

impl Lab {
    fn build() -> Lab {
        let p = unique_prefix();
        let dir = tempfile::tempdir().expect("temp dir");
        let mut lab = Lab {
            procs: Vec::new(),
            ul: Netns::new(format!("{p}ul")),
            xa: Netns::new(format!("{p}xa")),
            xb: Netns::new(format!("{p}xb")),
            hosts: Vec::new(),
            dir,
        };
        lab.ul.ip("addr add 203.0.113.10/32 dev lo");
        lab.ul.ip("addr add 2001:db8:ffff::10/128 dev lo");
        for (site, x, ul_if) in [(&SITE_A, &lab.xa, "to-xa"), (&SITE_B, &lab.xb, "to-xb")] {
            veth(x, "underlay", &lab.ul, ul_if);
            x.ip(&format!("addr add {}/24 dev underlay", site.rloc4));
            x.ip(&format!("addr add {}/64 dev underlay", site.rloc6));
            lab.ul.ip(&format!("addr add {}/24 dev {ul_if}", site.ul4));
            lab.ul.ip(&format!("addr add {}/64 dev {ul_if}", site.ul6));
            x.ip(&format!("route add default via {}", site.ul4));
            x.ip(&format!("-6 route add default via {}", site.ul6));
        }
        for (c, site) in [('a', &SITE_A), ('b', &SITE_B)] {
            for (k, &(iid, _)) in IIDS.iter().enumerate() {
                let host = Netns::new(format!("{p}{c}{iid}"));
                let x = if c == 'a' { &lab.xa } else { &lab.xb };
                let dev = format!("h{iid}");
                veth(x, &dev, &host, "eth0");
                // One gateway address per instance, so the xTR holds no address twice.
                let (gw4, gw6) = (
                    format!("10.{0}.{0}.{1}", site.n, 1 + 253 * k),
                    format!("2001:db8:{}::{:x}", site.v6, 1 + 253 * k),
                );
                host.ip(&format!("addr add {}/24 dev eth0", site.host4()));
                host.ip(&format!("addr add {}/64 dev eth0", site.host6()));
                host.ip(&format!("route add default via {gw4}"));
                host.ip(&format!("-6 route add default via {gw6}"));
                x.ip(&format!("addr add {gw4}/32 dev {dev}"));
                x.ip(&format!("-6 addr add {gw6}/128 dev {dev} nodad"));
                x.ip(&format!("route add {} dev {dev} table {iid}", site.eid4()));
                x.ip(&format!("-6 route add {} dev {dev} table {iid}", site.eid6()));
                if k == 0 {
                    // The xTR's own packets (ICMP too-big when a packet does not fit the TUN
                    // device: RFC 9300 §7.1) follow the main table, which can know one of the
                    // overlapping sites only (a VRF per instance would lift that).
                    x.ip(&format!("route add {} dev {dev}", site.eid4()));
                    x.ip(&format!("-6 route add {} dev {dev}", site.eid6()));
                } else {
                    // The other site's packets must fit the TUN device (1444 bytes) from the start.
                    host.ip("link set dev eth0 mtu 1400");
                    x.ip(&format!("link set dev {dev} mtu 1400"));
                }
                // The site's packets and the decapsulated ones (from the instance's TUN device)
                // are routed in the instance's table.
                for fam in ["-4", "-6"] {
                    for iif in [dev.as_str(), &format!("lisp{iid}")] {
                        x.ip(&format!("{fam} rule add iif {iif} lookup {iid} pref 100"));
                    }
                }
                lab.hosts.push((c, iid, host));
            }
        }
        lab
    }

    fn host(&self, c: char, iid: u32) -> &Netns {
        &self.hosts.iter().find(|h| h.0 == c && h.1 == iid).expect("host").2
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The Map-Server's and both xTRs' configs; `echo_nonce`: the xTRs do echo-nonce.
    fn write_configs(&self, echo_nonce: bool) {
        let site = |name: &str, key: &str, s: &Site| {
            let prefixes: Vec<String> = IIDS
                .iter()
                .flat_map(|(iid, _)| {
                    [
                        format!("{{ prefix = \"{}\", iid = {iid} }}", s.eid4()),
                        format!("{{ prefix = \"{}\", iid = {iid} }}", s.eid6()),
                    ]
                })
                .collect();
            format!(
                "[[map-server.site]]\nname = \"{name}\"\nauth = {{ algorithm = \"hmac-sha256-128\", key = \"{key}\" }}\neid-prefixes = [{}]\n",
                prefixes.join(", ")
            )
        };
        let ms = format!(
            "[node]\nname = \"ms\"\nlisten = [\"203.0.113.10\", \"2001:db8:ffff::10\"]\napi-socket = \"ms.sock\"\nstate-dir = \"ms-state\"\n\
             [map-server]\n{}{}[map-resolver]\n",
            site("a", "ka", &SITE_A),
            site("b", "kb", &SITE_B)
        );
        std::fs::write(self.path("ms.toml"), ms).expect("write");
        for (name, key, local, remote) in [("xa", "ka", &SITE_A, &SITE_B), ("xb", "kb", &SITE_B, &SITE_A)] {
            let mut t = format!(
                "[node]\nname = \"{name}\"\napi-socket = \"{name}.sock\"\nstate-dir = \"{name}-state\"\n\
                 [xtr]\nroles = [\"itr\", \"etr\"]\n\
                 map-servers = [{{ address = \"203.0.113.10\", auth = {{ algorithm = \"hmac-sha256-128\", key = \"{key}\" }} }}]\n\
                 map-resolvers = [\"203.0.113.10\"]\nrlocs = [\"{}\", \"{}\"]\n\
                 [xtr.echo-nonce]\nenabled = {echo_nonce}\n",
                local.rloc4, local.rloc6
            );
            for &(iid, v6) in &IIDS {
                let rloc = if v6 { local.rloc6 } else { local.rloc4 };
                t += &format!(
                    "[[xtr.instance]]\niid = {iid}\ntun = \"lisp{iid}\"\ntable = {iid}\nroutes = [\"{}\", \"{}\"]\n\
                     database = [{{ prefix = \"{}\", rlocs = [{{ address = \"{rloc}\" }}] }}, {{ prefix = \"{}\", rlocs = [{{ address = \"{rloc}\" }}] }}]\n",
                    remote.eid4(),
                    remote.eid6(),
                    local.eid4(),
                    local.eid6()
                );
            }
            std::fs::write(self.path(&format!("{name}.toml")), t).expect("write");
        }
    }

    /// Starts `loci run` with `name`.toml in namespace `ns`, after `loci check` passes on it.
    fn start(&mut self, ns: &str, name: &str) {
        let cfg = self.path(&format!("{name}.toml"));
        let check = run(Command::new(LOCI).args(["check", "-c"]).arg(&cfg));
        assert!(check.status.success(), "loci check {name}: {}", String::from_utf8_lossy(&check.stderr));
        let mut cmd = netns_cmd(ns, &[LOCI, "run", "-c"]);
        cmd.arg(&cfg).env("RUST_LOG", "info");
        let p = Proc::spawn(name, cmd, Some(self.path(&format!("{name}.log"))));
        self.procs.push(p);
    }

    /// Starts the Map-Server, then both xTRs, and waits until both sites are registered
    /// (traffic before would get, and cache, a negative reply).
    fn start_all(&mut self) {
        let (ul, xa, xb) = (self.ul.0.clone(), self.xa.0.clone(), self.xb.0.clone());
        self.start(&ul, "ms");
        self.wait_for("the Map-Server's API", Duration::from_secs(10), || self.path("ms.sock").exists());
        self.start(&xa, "xa");
        self.start(&xb, "xb");
        self.wait_for("8 registrations", Duration::from_secs(15), || {
            self.path("ms.sock").exists()
                && self.show(&ul, "ms", "registrations").as_array().is_some_and(|a| a.len() == 8)
        });
    }

    /// A tshark capture on the underlay router's device `dev` (with capture filter `filter`),
    /// once it writes: the process and the file.
    fn capture(&self, dev: &str, filter: Option<&str>) -> (Proc, String) {
        let pcap = self.path(&format!("{dev}.pcapng"));
        let file = pcap.to_str().expect("utf-8").to_string();
        let mut args = vec!["tshark", "-n", "-q", "-i", dev, "-w", &file];
        if let Some(f) = filter {
            args.extend(["-f", f]);
        }
        let p = Proc::spawn("tshark", self.ul.cmd(&args), Some(self.path("tshark.log")));
        self.wait_for("the capture", Duration::from_secs(10), || std::fs::metadata(&pcap).is_ok_and(|m| m.len() > 0));
        (p, file)
    }

    fn logs(&self) -> String {
        self.procs.iter().map(Proc::log_tail).collect()
    }

    /// `loci show WHAT --json` against the daemon `name` (running in `ns`).
    fn show(&self, ns: &str, name: &str, what: &str) -> Value {
        let sock = self.path(&format!("{name}.sock"));
        let out = run(&mut netns_cmd(ns, &[LOCI, "show", what, "--json", "--socket", sock.to_str().expect("utf-8")]));
        assert!(out.status.success(), "show {what}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("JSON")
    }

    /// Waits until `f` holds, or fails with the daemons' logs.
    fn wait_for(&self, what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if f() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("timed out waiting for {what}\n{}", self.logs());
    }
}

fn ping_ok(ns: &Netns, dst: &str, count: u32) -> bool {
    let c = count.to_string();
    run(&mut ns.cmd(&["ping", "-n", "-q", "-c", &c, "-i", "0.2", "-W", "1", dst])).status.success()
}

/// Echo requests a namespace has received (per-namespace SNMP counters).
fn echos_in(ns: &Netns, v6: bool) -> u64 {
    let (file, key) = if v6 { ("/proc/net/snmp6", "Icmp6InEchos") } else { ("/proc/net/snmp", "Icmp:") };
    let text = ns.exec(&["cat", file]);
    if v6 {
        return text
            .lines()
            .find_map(|l| l.strip_prefix(key).map(|v| v.trim().parse().expect("count")))
            .expect("Icmp6InEchos");
    }
    // Two "Icmp:" lines: the names, then the values.
    let mut lines = text.lines().filter(|l| l.starts_with(key));
    let names: Vec<&str> = lines.next().expect("names").split_whitespace().collect();
    let values: Vec<&str> = lines.next().expect("values").split_whitespace().collect();
    let i = names.iter().position(|n| *n == "InEchos").expect("InEchos");
    values[i].parse().expect("count")
}

/// A one-second iperf3 TCP transfer from `from` to `dst` (served in `to`); returns the bytes the
/// server received.
fn tcp_transfer(from: &Netns, to: &Netns, dst: &str) -> u64 {
    let _server = Proc::spawn("iperf3 -s", to.cmd(&["iperf3", "-s", "-1", "-p", "5201"]), None);
    let mut last = Value::Null;
    // Until the server listens, the client gets "connection refused".
    for _ in 0..30 {
        let out = run(&mut from.cmd(&["timeout", "20", "iperf3", "-c", dst, "-p", "5201", "-t", "1", "-J"]));
        last = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        if !last["error"].as_str().is_some_and(|e| e.contains("refused")) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let got = last["end"]["sum_received"]["bytes"].as_u64().unwrap_or(0);
    if got < 1 << 20 {
        println!("iperf3 to {dst}: {:#}", last["end"]);
    }
    got
}

/// tshark without the Thrift dissector, whose heuristic takes iperf3's control connection for Thrift
/// and reports an error in it.
fn tshark(args: &[&str]) -> String {
    sh(&[&["tshark", "--disable-protocol", "thrift"], args].concat())
}

#[test]
fn xtr_pair_forwards_every_family_combination_and_keeps_instances_apart() {
    if !runnable() {
        return;
    }
    let mut lab = Lab::build();
    lab.write_configs(true);
    // A capture of the underlay between xTR-A and the router, for the whole run.
    let (mut capture, pcap_s) = lab.capture("to-xa", None);
    let (xa, xb) = (lab.xa.0.clone(), lab.xb.0.clone());
    lab.start_all();

    for &(iid, rloc_v6) in &IIDS {
        let other = IIDS.iter().find(|i| i.0 != iid).expect("other").0;
        for eid_v6 in [false, true] {
            let combo = format!(
                "IPv{} EIDs over IPv{} RLOCs (iid {iid})",
                if eid_v6 { 6 } else { 4 },
                if rloc_v6 { 6 } else { 4 }
            );
            let (a, b) = (lab.host('a', iid), lab.host('b', iid));
            let dst = if eid_v6 { SITE_B.host6() } else { SITE_B.host4() };
            // The first packets miss and start the resolution.
            lab.wait_for(&format!("a first ping, {combo}"), Duration::from_secs(10), || ping_ok(a, &dst, 1));
            let before = (echos_in(b, eid_v6), echos_in(lab.host('b', other), eid_v6));
            assert!(ping_ok(a, &dst, 5), "ping lost packets, {combo}\n{}", lab.logs());
            let after = (echos_in(b, eid_v6), echos_in(lab.host('b', other), eid_v6));
            assert!(after.0 >= before.0 + 5, "{combo}: host b{iid} got {} echo requests", after.0 - before.0);
            assert_eq!(after.1, before.1, "{combo}: traffic leaked into instance {other}");
            let got = tcp_transfer(a, b, &dst);
            assert!(got >= 1 << 20, "{combo}: TCP transfer delivered {got} bytes");
        }
    }

    // The xTRs' view: mappings for both instances, packets both ways, no drop but misses.
    let cache = lab.show(&xa, "xa", "map-cache");
    let entries = cache.as_array().expect("array");
    for &(iid, v6) in &IIDS {
        let rloc = if v6 { SITE_B.rloc6 } else { SITE_B.rloc4 };
        for eid in [SITE_B.eid4(), SITE_B.eid6()] {
            let prefix = format!("[{iid}]{eid}");
            let e = entries
                .iter()
                .find(|e| e["prefix"] == prefix.as_str())
                .unwrap_or_else(|| panic!("{prefix} not in {cache:#}"));
            assert_eq!(e["locators"][0]["address"], rloc, "{e:#}");
        }
    }
    // xb encapsulates the echo replies and TCP ACKs, fewer than xa's data segments: the TCP
    // receiver gets the stream coalesced (GRO) and acknowledges many segments at once.
    for (ns, name, sent) in [(&xa, "xa", 4 * 2000), (&xb, "xb", 4 * 100)] {
        let dp = lab.show(ns, name, "stats")["data_plane"].clone();
        assert!(dp["encapsulated"].as_u64() > Some(sent), "{name}: {dp:#}");
        assert!(dp["decapsulated"].as_u64() > Some(4 * 5), "{name}: {dp:#}");
        // Misses (first packets) and the TUN devices' own link-local chatter, nothing else.
        let drops = dp["drops"].as_object().expect("drops");
        assert!(drops.keys().all(|k| k == "map-cache-miss" || k == "not-routable"), "{name} dropped: {dp:#}");
    }

    // RLOC probing is on by default: the peer's locators answer, with an RTT (and the probes are
    // in the capture that tshark checks below).
    let rlocs = lab.show(&xa, "xa", "rlocs");
    for rloc in [SITE_B.rloc4, SITE_B.rloc6] {
        let r = rlocs.as_array().and_then(|a| a.iter().find(|r| r["locator"] == rloc));
        let r = r.unwrap_or_else(|| panic!("{rloc} not in {rlocs:#}"));
        assert!(r["state"] == "up" && r["rtt_ms"].is_f64() && r["replies"].as_u64() >= Some(1), "{r:#}");
    }

    // Echo-nonce (configured on this private underlay): the peer's locators of both families
    // have echoed our nonces.
    for rloc in [SITE_B.rloc4, SITE_B.rloc6] {
        let echoed = || {
            let rlocs = lab.show(&xa, "xa", "rlocs");
            let r = rlocs.as_array().and_then(|a| a.iter().find(|r| r["locator"] == rloc)).cloned();
            r.is_some_and(|r| r["echo"]["last_echo_secs_ago"].is_u64() && r["echo"]["failures"] == 0)
        };
        // Ping keeps traffic flowing both ways while the next request goes out.
        let (a, dst) = (lab.host('a', if rloc.contains(':') { 200 } else { 100 }), SITE_B.host4());
        lab.wait_for(&format!("an echoed nonce from {rloc}"), Duration::from_secs(10), || {
            ping_ok(a, &dst, 3) && echoed()
        });
    }
    let stats = lab.show(&xa, "xa", "stats")["itr"].clone();
    assert!(stats["echo_echoed"].as_u64() >= Some(2) && stats["echo_failed"] == 0, "{stats:#}");

    // Every captured packet decodes cleanly, and LISP data of both families is there.
    capture.stop();
    let bad = tshark(&["-n", "-r", &pcap_s, "-Y", "_ws.malformed || _ws.expert.severity >= 8388608"]);
    if !bad.trim().is_empty() {
        let first: Vec<&str> = bad.lines().take(10).collect();
        let expert = tshark(&["-n", "-r", &pcap_s, "-q", "-z", "expert,error"]);
        panic!("tshark found {} malformed or erroneous packets:\n{}\n{expert}", bad.lines().count(), first.join("\n"));
    }
    let stacks = tshark(&["-n", "-r", &pcap_s, "-Y", "lisp-data", "-T", "fields", "-e", "frame.protocols"]);
    assert!(stacks.lines().count() > 4 * 2000, "only {} LISP data packets captured", stacks.lines().count());
    for outer in ["ip", "ipv6"] {
        for inner in ["ip", "ipv6"] {
            let stack = format!(":{outer}:udp:lisp-data:{inner}:");
            assert!(stacks.lines().any(|l| l.contains(&stack)), "no {stack} in the capture");
        }
    }
    // Echo-nonce on the wire: xTR-A's requests (N and E) and xTR-B's echoes of them (N alone),
    // and the E bit in the probe replies that said both echo.
    let field = |filter: &str| tshark(&["-n", "-r", &pcap_s, "-Y", filter, "-T", "fields", "-e", "lisp-data.nonce"]);
    let asked = field(&format!("lisp-data.flags.enr == 1 && ip.src == {}", SITE_A.rloc4));
    let echoed =
        field(&format!("lisp-data.flags.nonce == 1 && lisp-data.flags.enr == 0 && ip.src == {}", SITE_B.rloc4));
    let asked: std::collections::HashSet<&str> = asked.lines().collect();
    assert!(!asked.is_empty(), "no echo-nonce request in the capture");
    assert!(echoed.lines().any(|n| asked.contains(n)), "no request of xTR-A echoed by xTR-B");
    let enlr = tshark(&["-n", "-r", &pcap_s, "-Y", "lisp.mrep.flags.probe == 1 && lisp.mrep.flags.enlr == 1"]);
    assert!(!enlr.trim().is_empty(), "no probe reply with the E bit");
    // The daemons stop cleanly on SIGTERM (data-plane workers included), and quickly.
    for p in &mut lab.procs {
        let t = Instant::now();
        let status = p.stop();
        assert!(status.is_some_and(|s| s.success()), "{} did not stop cleanly: {status:?}\n{}", p.name, p.log_tail());
        assert!(t.elapsed() < Duration::from_secs(2), "{} took {:?} to stop", p.name, t.elapsed());
    }
    drop(lab);
    assert!(!Path::new(&pcap_s).exists(), "the lab's files are removed");
}

/// RFC 9300 §10's hints besides probing: a route to the peer's locator withdrawn at xTR-A, then
/// an ICMP host-unreachable from the underlay router about xTR-A's encapsulated packets, each
/// mark the locator down in under a second (probing alone needs 2 s at the default timers);
/// the next answered probe brings it back.
#[test]
fn route_withdrawal_and_icmp_unreachable_mark_a_locator_down() {
    if !runnable() {
        return;
    }
    let mut lab = Lab::build();
    lab.write_configs(false);
    let xa = lab.xa.0.clone();
    lab.start_all();
    let (a, dst) = (lab.host('a', 100), SITE_B.host4());
    lab.wait_for("a first ping", Duration::from_secs(10), || ping_ok(a, &dst, 1));
    let peer = SITE_B.rloc4;
    let state = |lab: &Lab| {
        let rlocs = lab.show(&xa, "xa", "rlocs");
        let r = rlocs.as_array().and_then(|a| a.iter().find(|r| r["locator"] == peer).cloned());
        r.map(|r| (r["state"].as_str().unwrap_or("").to_string(), r["replies"].as_u64().unwrap_or(0)))
    };
    let hints = |lab: &Lab| lab.show(&xa, "xa", "stats")["itr"]["unreachable_hints_applied"].as_u64();
    lab.wait_for("an answered probe", Duration::from_secs(5), || state(&lab).is_some_and(|(s, n)| s == "up" && n > 0));

    // The route goes: an unreachable route for the peer's locator at xTR-A.
    let unreachable = format!("route add unreachable {peer}/32");
    let t = Instant::now();
    lab.xa.ip(&unreachable);
    lab.wait_for("down after the route withdrawal", Duration::from_secs(3), || {
        state(&lab).is_some_and(|(s, _)| s == "down")
    });
    let withdrawn = t.elapsed();
    assert_eq!(hints(&lab), Some(1), "a hint, not missed probes");
    lab.xa.ip(&format!("route del unreachable {peer}/32"));
    lab.wait_for("up after the route returned", Duration::from_secs(3), || state(&lab).is_some_and(|(s, _)| s == "up"));

    // The underlay router loses its route: it answers xTR-A's encapsulated packets with ICMP
    // host unreachable (the probes to port 4342 get them too, and do not count).
    lab.ul.ip(&unreachable);
    let t = Instant::now();
    let mut pinging = Proc::spawn("ping", a.cmd(&["ping", "-n", "-q", "-c", "15", "-i", "0.1", &dst]), None);
    lab.wait_for("down after ICMP unreachable", Duration::from_secs(3), || {
        state(&lab).is_some_and(|(s, _)| s == "down")
    });
    let icmp = t.elapsed();
    pinging.stop();
    assert_eq!(hints(&lab), Some(2));
    lab.ul.ip(&format!("route del unreachable {peer}/32"));
    lab.wait_for("up after the router's route returned", Duration::from_secs(3), || {
        state(&lab).is_some_and(|(s, _)| s == "up")
    });
    println!("locator down after: route withdrawal {withdrawn:?}, ICMP unreachable {icmp:?}");
    assert!(withdrawn < Duration::from_secs(1) && icmp < Duration::from_secs(1), "{withdrawn:?} {icmp:?}");
}

/// xTR-B listens on the unspecified address (the default) and has a second RLOC of each family
/// on its underlay interface: xTR-A's probes of each of its four locators are answered from the
/// address probed (or xTR-A would refuse them), with the p bit on that locator.
#[test]
fn a_probe_of_a_second_rloc_is_answered_from_it() {
    if !runnable() {
        return;
    }
    let mut lab = Lab::build();
    lab.write_configs(false);
    let seconds = [(SITE_B.rloc4, "198.51.100.2"), (SITE_B.rloc6, "2001:db8:2::2")];
    lab.xb.ip("addr add 198.51.100.2/24 dev underlay");
    lab.xb.ip("-6 addr add 2001:db8:2::2/64 dev underlay nodad");
    let path = lab.path("xb.toml");
    let mut cfg = std::fs::read_to_string(&path).expect("xb.toml");
    for (first, second) in seconds {
        let one = format!("rlocs = [{{ address = \"{first}\" }}]");
        assert!(cfg.contains(&one), "{cfg}");
        cfg = cfg.replace(&one, &format!("rlocs = [{{ address = \"{first}\" }}, {{ address = \"{second}\" }}]"));
        cfg = cfg.replace(&format!("\"{first}\", "), &format!("\"{first}\", \"{second}\", "));
        cfg = cfg.replace(&format!("\"{first}\"]\n"), &format!("\"{first}\", \"{second}\"]\n"));
    }
    std::fs::write(&path, cfg).expect("xb.toml");
    let (mut capture, pcap_s) = lab.capture("to-xb", Some("udp port 4342"));
    let xa = lab.xa.0.clone();
    lab.start_all();
    // One EID of each instance resolved: xTR-A caches (and probes) all four locators.
    for iid in [100, 200] {
        let (a, dst) = (lab.host('a', iid), SITE_B.host4());
        lab.wait_for(&format!("a first ping in instance {iid}"), Duration::from_secs(10), || ping_ok(a, &dst, 1));
    }
    let all = [SITE_B.rloc4, "198.51.100.2", SITE_B.rloc6, "2001:db8:2::2"];
    lab.wait_for("answered probes of all four locators", Duration::from_secs(10), || {
        let rlocs = lab.show(&xa, "xa", "rlocs");
        all.iter().all(|l| {
            rlocs
                .as_array()
                .and_then(|a| a.iter().find(|r| r["locator"] == *l))
                .is_some_and(|r| r["state"] == "up" && r["replies"].as_u64() >= Some(2))
        })
    });
    let stats = lab.show(&xa, "xa", "stats");
    assert_eq!(stats["itr"]["probe_replies_wrong_source"], 0, "{:#}", stats["itr"]);
    // In the capture: every probe reply names the locator it comes from with the p bit.
    capture.stop();
    let lines = tshark(&[
        "-n",
        "-r",
        &pcap_s,
        "-Y",
        "lisp.mrep.flags.probe == 1",
        "-T",
        "fields",
        "-e",
        "ip.src",
        "-e",
        "ipv6.src",
        "-e",
        "udp.payload",
    ]);
    let mut from = std::collections::BTreeSet::new();
    for line in lines.lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        let [v4, v6, payload] = fields[..] else { panic!("unexpected tshark line {line:?}") };
        let src = if v4.is_empty() { v6 } else { v4 };
        let bytes = hex::decode(payload.replace(':', "")).expect("hex payload");
        let reply = <loci_wire::map_reply::MapReply as loci_wire::Wire>::parse(&bytes).expect("a Map-Reply");
        let probed: Vec<String> =
            reply.records[0].locators.iter().filter(|l| l.probed).map(|l| l.address.to_string()).collect();
        assert_eq!(probed, [src], "a probe reply from {src}");
        from.insert(src.to_string());
    }
    // (xTR-B's probes of xTR-A cross this link too, and their replies are checked as well.)
    assert!(all.iter().all(|a| from.contains(*a)), "probe replies from each of xTR-B's locators: {from:?}");
}
