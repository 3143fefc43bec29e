//! `loci lab`: the `resolve` scenario end to end (namespaces, real daemons, real traffic), its
//! cleanup after a normal and an interrupted run, and the refusal of a bad scenario file.
//!
//! The scenario runs need root, iproute2, ping, iperf3 and arping. Without root they print "skipped:
//! needs root" and pass, except under CI=true, where they must run.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;

mod common;
use common::{run_within, signal, text};

const LOCI: &str = env!("CARGO_BIN_EXE_loci");
/// A whole lab run takes about 10 s; far more means it hangs.
const LAB_LIMIT: Duration = Duration::from_secs(120);

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Whether the scenario can run here; prints why not and passes unless in CI.
///
/// Labs run one at a time (the guard): their timing figures (failover gaps, convergence) mean
/// something only when a run has the machine's cores to itself.
fn runnable() -> Option<MutexGuard<'static, ()>> {
    static ONE_LAB: Mutex<()> = Mutex::new(());
    let root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    let missing: Vec<&str> = ["ip", "ping", "iperf3", "arping"]
        .into_iter()
        .filter(|t| {
            !Command::new("sh").args(["-c", &format!("command -v {t}")]).output().is_ok_and(|o| o.status.success())
        })
        .collect();
    let why = match (root, missing.is_empty()) {
        (true, true) => return Some(ONE_LAB.lock().unwrap_or_else(|e| e.into_inner())),
        (false, _) => "skipped: needs root".to_string(),
        (true, false) => format!("skipped: needs {}", missing.join(", ")),
    };
    assert!(!in_ci(), "{why} (CI=true: this test must run)");
    println!("{why}");
    None
}

fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().expect("run");
    text(&out.stdout)
}

/// Veth devices in the test's own namespace (the lab makes its devices inside its namespaces,
/// so none should ever appear here).
fn root_veths() -> Vec<String> {
    let mut v: Vec<String> = sh(&["ip", "-o", "link", "show", "type", "veth"])
        .lines()
        .filter_map(|l| l.split(':').nth(1).map(|n| n.trim().split('@').next().unwrap_or("").to_string()))
        .collect();
    v.sort();
    v
}

/// Nothing of run `run` is left: namespace, process or file.
fn assert_gone(run: &str, veths_before: &[String]) {
    let prefix = format!("{run}-");
    let spaces: Vec<String> =
        sh(&["ip", "netns", "list"]).lines().filter(|l| l.starts_with(&prefix)).map(String::from).collect();
    assert!(spaces.is_empty(), "namespaces left: {spaces:?}");
    let dir = std::env::temp_dir().join(format!("loci-lab-{run}"));
    let procs = sh(&["pgrep", "-af", dir.to_str().expect("utf-8")]);
    assert!(procs.trim().is_empty(), "processes left: {procs}");
    assert!(!dir.exists(), "{} left", dir.display());
    let new: Vec<String> = root_veths().into_iter().filter(|v| !veths_before.contains(v)).collect();
    assert!(new.is_empty(), "links left in the root namespace: {new:?}");
}

fn step<'a>(report: &'a Value, kind: &str) -> &'a Value {
    report["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find_map(|s| s.get(kind))
        .unwrap_or_else(|| panic!("no {kind} step in {report:#}"))
}

#[test]
fn resolve_delivers_traffic_spreads_flows_by_weight_and_leaves_nothing() {
    let Some(_one_lab) = runnable() else { return };
    let veths = root_veths();
    let (r, run) = lab_json("resolve");

    let ping = step(&r, "ping");
    assert!(ping["sent"].as_u64() >= Some(5), "{ping:#}");
    assert_eq!(ping["received"], ping["sent"], "ping lost packets: {ping:#}");

    let tcp = step(&r, "tcp");
    assert!(tcp["bytes"].as_u64() >= Some(1 << 20), "TCP moved too little: {tcp:#}");

    // 64 flows over two locators of weight 50: each ETR carries a share near half.
    let flows = step(&r, "flows");
    assert!(flows["flows"].as_u64() >= Some(16), "{flows:#}");
    assert_eq!(flows["flows_delivered"], flows["flows"], "every flow reaches D1: {flows:#}");
    let etrs = flows["etrs"].as_array().expect("etrs");
    assert_eq!(etrs.len(), 2, "{flows:#}");
    let decapsulated: u64 = etrs.iter().map(|e| e["decapsulated"].as_u64().expect("count")).sum();
    let delivered = flows["sent"].as_u64().expect("sent") - flows["lost"].as_u64().expect("lost");
    assert!(decapsulated >= delivered, "the DC ETRs decapsulated {decapsulated} of {delivered} delivered: {flows:#}");
    for e in etrs {
        let share = e["share_pct"].as_f64().expect("share");
        assert!((20.0..=80.0).contains(&share), "{} carried {share:.1} % of the flows' packets: {flows:#}", e["node"]);
    }
    // The priority-2 backup locator carries no data while both priority-1 locators are up: the
    // router's link counter towards it sees only xTR-B's RLOC probes (one per second, RFC 9301
    // §5.3 rate), never the thousands of packets a share of the flows would be. The priority-1
    // ones carry the flows.
    let locators = flows["locators"].as_array().expect("locators");
    let count = |a: &str| locators.iter().find(|l| l["address"] == a).and_then(|l| l["packets"].as_u64());
    let probes = flows["secs"].as_u64().expect("secs") + 2;
    let backup = count("203.0.113.9").expect("backup counted");
    assert!(backup <= probes, "the backup locator carried {backup} packets, more than probes: {flows:#}");
    // (The router counts sk_buffs: with UDP GSO one may hold several encapsulated packets, so
    // these counts are not compared with the ETRs' per-packet ones.)
    for a in ["203.0.113.1", "203.0.113.5"] {
        assert!(count(a).expect("counted") > 10 * probes, "{a} carried no flows: {flows:#}");
    }

    // What `loci show` reported: D1's prefix in xTR-B's map-cache with the whole locator set,
    // and C1's prefix in the gateway's (the way back).
    let xb = table(&r, "xb", "map-cache");
    let entry =
        xb.as_array().and_then(|a| a.iter().find(|e| e["prefix"] == "10.2.1.0/24")).expect("D1's mapping at xTR-B");
    assert_eq!(entry["locators"].as_array().map(Vec::len), Some(3), "{entry:#}");
    let xd1 = table(&r, "xd1", "map-cache");
    assert!(xd1.as_array().is_some_and(|a| a.iter().any(|e| e["prefix"] == "10.1.1.0/24")), "{xd1:#}");

    assert_gone(&run, &veths);
}

#[test]
fn interrupted_run_removes_everything() {
    let Some(_one_lab) = runnable() else { return };
    let veths = root_veths();
    let mut child = Command::new(LOCI)
        .args(["lab", "resolve"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start loci lab");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let mut run = None;
    let mut seen = Vec::new();
    // Interrupt once the daemons run: namespaces, links and processes all exist then.
    for line in lines.by_ref() {
        let line = line.expect("read");
        if let Some(rest) = line.strip_prefix("loci lab resolve: run ") {
            run = rest.split_whitespace().next().map(String::from);
        }
        let started = line.starts_with("started loci on");
        seen.push(line);
        if started {
            break;
        }
    }
    let run = run.unwrap_or_else(|| panic!("no run ID printed: {seen:?}"));
    assert!(sh(&["ip", "netns", "list"]).contains(&format!("{run}-xb")), "the lab is not up");
    signal(child.id(), "INT");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().expect("wait");
    assert!(!status.success(), "an interrupted run fails");
    assert!(rest.iter().any(|l| l.contains("interrupted")), "{rest:?}");
    assert_gone(&run, &veths);
}

#[test]
fn bad_scenario_file_is_refused_with_file_line_and_field() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "about = \"x\"\n[[node]]\nname = \"a\"\n[[link]]\na = { node = \"a\", dev = \"e0\" }\nb = { node = \"nope\", dev = \"e0\" }\n",
    )
    .expect("write");
    let out = run_within(Command::new(LOCI).arg("lab").arg(&path), Duration::from_secs(15));
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("bad.toml:6: link[0].b.node: no node \"nope\""), "{err}");
    // Refused before anything was built.
    assert!(!err.contains("building"), "{err}");

    let out = run_within(Command::new(LOCI).args(["lab", "--down", "../etc"]), Duration::from_secs(15));
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("not a run ID"), "{}", text(&out.stderr));
}

/// How the client's xTR follows a moved host, and issue 7's convergence target for that path.
#[derive(Clone, Copy, PartialEq)]
enum Path {
    /// The Map-Server pushes the new mapping (RFC 9437): 10 ms.
    PubSub,
    /// The old xTR's SMR, then an SMR-invoked Map-Request: 50 ms.
    Smr,
}

/// Slack on issue 7's timing targets for a loaded CI machine (the polling adds about 1 ms).
const TIMING_SLACK: f64 = 2.0;

/// Runs move scenario `name` and checks the host ended up served at the new site, the client's
/// xTR followed it by `path` within the target, the stream lost no more than the packets sent
/// while the host was detached plus 20 ms, the TCP connection came through, and nothing is left.
fn move_scenario(name: &str, new_rloc: &str, group_notifies: u64, path: Path) {
    let Some(_one_lab) = runnable() else { return };
    let veths = root_veths();
    let out = run_within(Command::new(LOCI).args(["lab", name, "--json"]), LAB_LIMIT);
    assert!(out.status.success(), "loci lab {name} failed: {}", text(&out.stderr));
    let r: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("no JSON ({e}): {}", text(&out.stdout)));
    let run = r["run"].as_str().expect("run ID");
    let m = step(&r, "move");
    println!("{name}: {m:#}");
    assert_eq!(m["new_serves"], true, "the new xTR serves the host: {m:#}");
    assert_eq!(m["old_serves"], false, "the old xTR let it go: {m:#}");
    assert_eq!(m["itr_locators"], serde_json::json!([new_rloc]), "the client's xTR follows: {m:#}");
    assert_eq!(m["away_to"], serde_json::json!([new_rloc]), "the old xTR's away entry: {m:#}");
    let convergence = m["convergence_ms"].as_f64().unwrap_or_else(|| panic!("never converged: {m:#}"));
    let (want, target_ms) = match path {
        Path::PubSub => ("pub/sub", 10.0),
        Path::Smr => ("SMR", 50.0),
    };
    println!(
        "{name}: convergence {convergence:.1} ms by {}, {} of {} lost",
        m["path"].as_str().unwrap_or("?"),
        m["lost"],
        m["sent"]
    );
    assert_eq!(m["path"], want, "what updated the client's xTR: {m:#}");
    assert!(convergence <= target_ms * TIMING_SLACK, "convergence {convergence:.1} ms (target {target_ms} ms): {m:#}");
    match path {
        Path::PubSub => assert!(m["publications_applied"].as_u64() >= Some(1), "{m:#}"),
        Path::Smr => {
            assert_eq!(m["publications_applied"], 0, "no subscription on the SMR path: {m:#}");
            assert!(m["smrs_sent"].as_u64() >= Some(1), "the old xTR solicited the client's xTR: {m:#}");
            assert!(m["smrs_accepted"].as_u64() >= Some(1), "{m:#}");
            // The stream kept reaching the old xTR until the SMR took effect.
            assert!(m["reencapsulated"].as_u64() >= Some(1), "the old xTR re-encapsulated what still came: {m:#}");
        }
    }
    assert_eq!(m["tcp_ok"], true, "the TCP connection survives: {m:#}");
    assert_eq!(m["group_notifies"].as_u64(), Some(group_notifies), "map-notify-group: {m:#}");
    let (sent, lost) = (m["sent"].as_u64().expect("sent"), m["lost"].as_u64().expect("lost"));
    assert!(sent >= 5000, "{m:#}");
    // Issue 7: no more than the packets sent while detached plus 20 ms; the slack again.
    let budget = m["loss_budget"].as_u64().expect("budget") as f64;
    assert!(lost as f64 <= budget * TIMING_SLACK, "{lost} of {sent} lost (budget {budget}): {m:#}");
    // Every ping step came through (across subnet: the moved host and its home neighbour).
    for s in r["steps"].as_array().expect("steps").iter().filter_map(|s| s.get("ping")) {
        assert_eq!(s["received"], s["sent"], "{s:#}");
    }
    assert_gone(run, &veths);
}

#[test]
fn move_extended_follows_the_host_and_leaves_nothing() {
    // The new xTR's announcement on the map-notify-group (multicast over the extension); the
    // client's xTR subscribed, and the Map-Server's publication moves it.
    move_scenario("move-extended", "203.0.113.5", 1, Path::PubSub);
}

#[test]
fn move_across_follows_the_host_and_leaves_nothing() {
    // Its last step: the moved host pings its home-subnet neighbour (proxy ARP at both sites).
    // No pub/sub: the client's xTR follows the old xTR's SMR.
    move_scenario("move-across", "203.0.113.5", 0, Path::Smr);
}

/// The `shows` table `what` of `node` in a lab report.
fn table(report: &Value, node: &str, what: &str) -> Value {
    report["shows"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["node"] == node))
        .map(|s| s["tables"][what].clone())
        .unwrap_or(Value::Null)
}

/// Runs a shipped scenario with `--json` and returns its report and run ID.
fn lab_json(scenario: &str) -> (Value, String) {
    let out = run_within(Command::new(LOCI).args(["lab", scenario, "--json"]), LAB_LIMIT);
    assert!(out.status.success(), "loci lab {scenario} failed: {}", text(&out.stderr));
    let r: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("no JSON ({e}): {}", text(&out.stdout)));
    let run = r["run"].as_str().expect("run ID").to_string();
    (r, run)
}

#[test]
fn non_lisp_host_and_lisp_site_reach_each_other_through_pitr_and_petr() {
    let Some(_one_lab) = runnable() else { return };
    let veths = root_veths();
    let (r, run) = lab_json("non-lisp");
    let steps = r["steps"].as_array().expect("steps");
    let pings: Vec<&Value> = steps.iter().filter_map(|s| s.get("ping")).collect();
    let tcps: Vec<&Value> = steps.iter().filter_map(|s| s.get("tcp")).collect();
    assert_eq!((pings.len(), tcps.len()), (2, 2), "{r:#}");
    for p in pings {
        assert!(p["sent"].as_u64() >= Some(5), "{p:#}");
        assert_eq!(p["received"], p["sent"], "ping lost packets: {p:#}");
    }
    for t in tcps {
        assert!(t["bytes"].as_u64() >= Some(1 << 20), "TCP moved too little: {t:#}");
    }
    // The way out: xTR-A holds N1's negative native-forward entry and the PETR decapsulated
    // (and refused nothing); the way in: the PITR resolved C1's prefix and encapsulated.
    let xa = table(&r, "xa", "map-cache");
    let neg = xa.as_array().and_then(|a| a.iter().find(|e| e["negative"] == true)).expect("negative entry at xTR-A");
    assert_eq!(neg["action"], "native-forward", "{xa:#}");
    let petr = &table(&r, "petr", "stats")["data_plane"];
    assert!(petr["decapsulated"].as_u64() > Some(1000), "{petr:#}");
    assert!(petr["drops"].get("relay-refused").is_none(), "{petr:#}");
    let pitr_cache = table(&r, "pitr", "map-cache");
    assert!(pitr_cache.as_array().is_some_and(|a| a.iter().any(|e| e["prefix"] == "10.1.1.0/24")), "{pitr_cache:#}");
    let pitr = &table(&r, "pitr", "stats")["data_plane"];
    assert!(pitr["encapsulated"].as_u64() > Some(1000), "{pitr:#}");
    assert_gone(&run, &veths);
}

#[test]
fn big_pings_over_a_narrower_underlay_get_an_answer_or_a_correct_too_big() {
    let Some(_one_lab) = runnable() else { return };
    let veths = root_veths();
    let (r, run) = lab_json("mtu");
    let steps: Vec<&Value> = r["steps"].as_array().expect("steps").iter().filter_map(|s| s.get("mtu")).collect();
    assert_eq!(steps.len(), 4, "{r:#}");
    // 1500 bytes do not fit xTR-A's TUN device (1464); 1450 do, but not the 1400-byte path to
    // xTR-B (1364 after encapsulation). IPv4 EIDs, then IPv6.
    for (step, mtu) in steps.iter().zip([1464, 1364, 1464, 1364]) {
        let df = &step["df"];
        assert_eq!(df["silent"], 0, "a DF ping went unanswered: {step:#}");
        assert_eq!(df["too_big"], df["sent"], "{step:#}");
        assert_eq!(df["mtu"], mtu, "{step:#}");
        // Fragmented instead (IPv6: by the host, after a too-big), and answered once the
        // paths are learnt: the first packets over the narrow hop, and replies while D1 learns
        // its path MTU from the too-bigs it gets (which C1 does not see), may be lost.
        assert!(step["fragmentable"]["received"].as_u64() >= Some(1), "{step:#}");
    }
    // Once every path MTU is known, everything that may be fragmented is answered.
    for s in [steps[1], steps[3]] {
        assert_eq!(s["fragmentable"]["received"], s["fragmentable"]["sent"], "{s:#}");
    }
    assert_gone(&run, &veths);
}

#[test]
fn locator_and_map_resolver_failover_within_targets() {
    let Some(_one_lab) = runnable() else { return };
    let veths = root_veths();
    let (r, run) = lab_json("failover");
    let steps = r["steps"].as_array().expect("steps");
    // The first resolution of the run: both sides resolve within tens of ms, once the lab's
    // links are up (a bridge port still coming up used to cost the first ARP request, 1 s).
    let first = step(&r, "ping");
    assert!(first["first_reply_ms"].as_f64() < Some(500.0), "first resolution: {first:#}");
    let outage = step(&r, "outage");
    let streams = outage["streams"].as_array().expect("streams");
    let by_itr = |itr: &str| streams.iter().find(|s| s["itr"] == itr).unwrap_or_else(|| panic!("{outage:#}"));
    // Targets (issue 8): on the backup within 1 s with the fast-failover profile, 3 s with the
    // default timers; a little slack for a loaded test machine.
    for (itr, limit_ms) in [("xf", 1200.0), ("xs", 3500.0)] {
        let s = by_itr(itr);
        let gap = s["failover_ms"].as_f64().unwrap_or_else(|| panic!("no reply while the primary was down: {s:#}"));
        assert!(gap <= limit_ms, "{itr}: failover took {gap:.0} ms: {s:#}");
        // Back on the primary once it answers probes, without another silence.
        assert!(s["back_ms"].as_f64().is_some(), "{itr} never saw the primary up again: {s:#}");
        assert!(s["back_gap_ms"].as_f64() < Some(500.0), "{s:#}");
    }
    // Cutting the link also withdraws the router's route and draws ICMP unreachables: those
    // hints take both ITRs off the primary within tens of ms, whatever their probe timers
    // (probe-only failover is measured in loci-sim's resilience tests). Coming back needs
    // answered probes, so there the fast profile is ahead.
    let (fast, default) = (by_itr("xf")["back_ms"].as_f64(), by_itr("xs")["back_ms"].as_f64());
    assert!(fast < default, "the fast profile sees the primary back sooner: {outage:#}");
    // Map-Resolver failover: after MR1 stops, a new EID resolves through MR2.
    let last = steps.last().and_then(|s| s.get("ping")).expect("the last step pings D9");
    assert_eq!(last["received"], last["sent"], "{last:#}");
    assert!(last["first_reply_ms"].as_f64() <= Some(3000.0), "MR failover too slow: {last:#}");
    assert_gone(&run, &veths);
}

#[test]
fn anycast_map_resolvers_answer_from_the_nearer_then_from_the_other() {
    let Some(_one_lab) = runnable() else { return };
    let veths = root_veths();
    let (r, run) = lab_json("anycast");
    let steps = r["steps"].as_array().expect("steps");
    let pings: Vec<&Value> = steps.iter().filter_map(|s| s.get("ping")).collect();
    assert_eq!(pings.len(), 3, "{r:#}");
    for p in &pings {
        assert_eq!(p["received"], p["sent"], "ping lost packets: {p:#}");
    }
    let requests = |stats: &Value| stats["received"]["Map-Request"].as_u64().unwrap_or(0);
    // Before the withdrawal both ways of C1 <-> D1 resolved through the anycast address, and
    // the metric-10 route took every Map-Request to MR1.
    let shown = step(&r, "show").as_array().expect("show step");
    let before = |node: &str| {
        let s = shown.iter().find(|s| s["node"] == node).unwrap_or_else(|| panic!("{node} not shown: {r:#}"));
        requests(&s["tables"]["stats"])
    };
    let (mr1_before, mr2_before) = (before("mr1"), before("mr2"));
    assert!(mr1_before >= 2, "MR1 resolved C1 -> D1 and back: {shown:#?}");
    assert_eq!(mr2_before, 0, "MR2 saw no Map-Request while MR1's route was up: {shown:#?}");
    // After it: MR1 is out of reach (nothing more), and the same address reached MR2: D9's
    // prefix (forwarded to xTR-D) and N1 (answered negatively by MR2 itself).
    let (mr1, mr2) = (table(&r, "mr1", "stats"), table(&r, "mr2", "stats"));
    assert_eq!(requests(&mr1), mr1_before, "{mr1:#}");
    assert!(requests(&mr2) >= 2, "{mr2:#}");
    assert!(mr2["forwarded_requests"].as_u64() >= Some(1), "{mr2:#}");
    assert!(mr2["negative_replies"].as_u64() >= Some(1), "{mr2:#}");
    // Issue 8: a new EID resolves within 3 s of the preferred resolver's loss.
    let d9 = pings[1];
    assert_eq!(d9["address"], "10.2.9.5", "{d9:#}");
    let first = d9["first_reply_ms"].as_f64().expect("first reply");
    println!("anycast: D9 answered {first:.0} ms after MR1's route was withdrawn (through MR2)");
    assert!(first <= 3000.0, "resolution through MR2 took {first:.0} ms: {d9:#}");
    // xTR-A took both answers (nonce-checked): D9's prefix, and a negative native-forward
    // entry covering N1, whose pings were then forwarded natively and answered.
    let cache = table(&r, "xa", "map-cache");
    let entries = cache.as_array().expect("xTR-A's map-cache");
    assert!(entries.iter().any(|e| e["prefix"] == "10.2.9.0/24" && e["negative"] == false), "{cache:#}");
    let n1: std::net::IpAddr = "100.64.0.10".parse().expect("address");
    let covers =
        |e: &&Value| e["prefix"].as_str().and_then(|p| p.parse::<ipnet::IpNet>().ok()).is_some_and(|p| p.contains(&n1));
    let neg = entries.iter().find(covers).unwrap_or_else(|| panic!("no entry for N1: {cache:#}"));
    assert_eq!((&neg["negative"], &neg["action"]), (&Value::Bool(true), &Value::from("native-forward")), "{neg:#}");
    assert_gone(&run, &veths);
}
