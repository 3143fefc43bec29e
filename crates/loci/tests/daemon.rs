//! End-to-end tests of `loci run` over real sockets on loopback: the daemon in a subprocess,
//! registrations from a second daemon or from the test itself, and `loci lig`, `rig` and
//! `show` against them.
//!
//! Loopback addresses, one set per test so that tests run in parallel (each daemon binds
//! UDP 4342 on its own address):
//!   127.0.0.101-102  mapping_system_end_to_end (MS/MR, ETR), with the tshark check
//!   127.0.0.103-104  proxy_reply_site
//!   127.0.0.105-106  wrong_key_is_refused_and_counted
//!   127.0.0.107-108  replayed_register_refused_after_restart (MS, the test as ETR)
//!   127.0.0.109-110  malformed_datagrams_are_counted (MS, the test as sender)
//!   127.0.0.111      map_server_and_etr_on_one_node
//!   [::1]:4343, [::1]:4342  ipv6_registration_and_lig (MS, ETR)
//!   [::]:4399, 0.0.0.0:4399  wildcard_listen_on_both_families

mod common;

use std::net::{IpAddr, SocketAddr, UdpSocket};

use common::*;
use serde_json::{json, Value};

/// A Map-Server and co-located Map-Resolver with two sites; site-b is answered by proxy.
const MS_ROLES: &str = r#"
[[map-server.site]]
name = "site-a"
auth = { algorithm = "hmac-sha256-128", key = "site-a-secret" }
eid-prefixes = [
    { prefix = "10.1.0.0/16", accept-more-specifics = true },
    { prefix = "2001:db8:a::/48", accept-more-specifics = true },
]

[[map-server.site]]
name = "site-b"
auth = { algorithm = "hmac-sha256-128", key = "site-b-secret" }
proxy-reply = true
eid-prefixes = [{ prefix = "10.2.0.0/16", accept-more-specifics = true }]

[map-resolver]
"#;

/// An ETR registering `prefix` with the Map-Server at `ms`:`port`: its own RLOC `rloc` and one
/// of another ETR of the site (never contacted).
fn etr_roles(ms: &str, port: u16, key: &str, prefix: &str, rloc: &str, other: &str) -> String {
    format!(
        r#"
[xtr]
roles = ["etr"]
map-servers = [{{ address = "{ms}", port = {port}, auth = {{ algorithm = "hmac-sha256-128", key = "{key}" }} }}]

[[xtr.instance]]
database = [{{ prefix = "{prefix}", rlocs = [
    {{ address = "{rloc}", priority = 1, weight = 60 }},
    {{ address = "{other}", priority = 2, weight = 40, local = false }},
] }}]
"#
    )
}

/// The (address, priority, weight) of each locator in a JSON list.
fn locators(v: &Value) -> Vec<(String, u64, u64)> {
    v.as_array()
        .unwrap_or_else(|| panic!("no locator list in {v}"))
        .iter()
        .map(|l| (l["address"].as_str().unwrap_or("?").to_string(), counter(l, &["priority"]), counter(l, &["weight"])))
        .collect()
}

fn expected_locators(rloc: &str, other: &str) -> Vec<(String, u64, u64)> {
    vec![(rloc.to_string(), 1, 60), (other.to_string(), 2, 40)]
}

/// The registration of `prefix` in `show registrations --json`, once there is one.
fn registration<'a>(regs: &'a Value, prefix: &str) -> Option<&'a Value> {
    regs.as_array()?.iter().find(|r| r["prefix"] == prefix)
}

/// Whether the ETR's `show database --json` says its (only) Map-Server acknowledged it.
fn acknowledged(db: &Value) -> bool {
    db["map_servers"][0]["acknowledged_secs_ago"].is_u64()
}

/// Whether a rendered table has a row whose cells are `cells` (column widths ignored).
fn has_row(out: &str, cells: &[&str]) -> bool {
    out.lines().any(|l| l.split_whitespace().eq(cells.iter().copied()))
}

#[test]
fn mapping_system_end_to_end() {
    let lab = Lab::new();
    // Started first, so that it sees the first Map-Register; filtered to this test's addresses
    // because other tests send malformed datagrams on purpose.
    let mut capture = Capture::start(lab.dir.path(), "udp port 4342 and (host 127.0.0.101 or host 127.0.0.102)");
    let ms = lab.start("ms", &["127.0.0.101"], MS_ROLES);
    let etr = lab.start(
        "etr",
        &["127.0.0.102"],
        &etr_roles("127.0.0.101", 4342, "site-a-secret", "10.1.1.0/24", "127.0.0.102", "192.0.2.7"),
    );
    let want = expected_locators("127.0.0.102", "192.0.2.7");

    // The ETR registers: the Map-Server holds the prefix with the ETR's RLOCs.
    let regs = ms.wait_for("registrations", "10.1.1.0/24 registered", |v| registration(v, "10.1.1.0/24").is_some());
    let reg = registration(&regs, "10.1.1.0/24").expect("registration");
    assert_eq!(reg["site"], "site-a", "{reg}");
    assert_eq!(locators(&reg["locators"]), want);
    assert_eq!(reg["xtrs"][0]["source"], "127.0.0.102", "{reg}");
    assert_eq!(reg["xtrs"][0]["proxy_reply"], false, "{reg}");
    let table = ms.show_text("registrations");
    assert!(table.contains("10.1.1.0/24") && table.contains("127.0.0.102 (1/60)"), "{table}");
    let filtered = loci_json(&["show", "registrations", "10.2.0.0/16", "--socket", ms.socket.to_str().unwrap()]);
    assert_eq!(filtered, json!([]), "the prefix filter keeps only registrations inside 10.2.0.0/16");

    // lig: Encapsulated Map-Request to the MR, forwarded by the MS to the ETR, which answers.
    let lig = loci_json(&["lig", "10.1.1.5", "--mr", "127.0.0.101"]);
    assert_eq!(lig["from"], "127.0.0.102:4342", "{lig}");
    assert_eq!(lig["message"], "Map-Reply", "{lig}");
    let rec = &lig["records"][0];
    assert_eq!((rec["prefix"].as_str(), rec["ttl_minutes"].as_u64()), (Some("10.1.1.0/24"), Some(1440)), "{lig}");
    assert_eq!((&rec["authoritative"], &rec["action"]), (&json!(true), &json!("no-action")), "{lig}");
    assert_eq!(locators(&rec["locators"]), want);
    let out = loci_ok(&["lig", "10.1.1.6", "--mr", "127.0.0.101"]);
    assert!(out.contains("Received Map-Reply from 127.0.0.102:4342"), "{out}");
    assert!(out.contains("10.1.1.0/24, record ttl: 1440 min, auth-bit: 1"), "{out}");
    assert!(has_row(&out, &["127.0.0.102", "up", "1/60"]) && has_row(&out, &["192.0.2.7", "up", "2/40"]), "{out}");

    // rig: a plain Map-Request to the MS, forwarded the same way.
    let rig = loci_json(&["rig", "10.1.1.7", "--to", "127.0.0.101"]);
    assert_eq!(rig["from"], "127.0.0.102:4342", "{rig}");
    assert_eq!(locators(&rig["records"][0]["locators"]), want);

    // An EID outside every site: the MS answers negatively, for 15 minutes, with the widest
    // prefix that overlaps no site (10.0.0.0/8 holds the sites, so 8.0.0.0/7 for 8.8.8.8).
    let out = loci_ok(&["lig", "8.8.8.8", "--mr", "127.0.0.101"]);
    assert!(out.contains("Received Map-Reply from 127.0.0.101:4342"), "{out}");
    assert!(out.contains("8.0.0.0/7, record ttl: 15 min, negative, action: native-forward"), "{out}");
    let neg = loci_json(&["lig", "192.0.2.1", "--mr", "127.0.0.101"]);
    let rec = &neg["records"][0];
    assert_eq!(neg["from"], "127.0.0.101:4342", "{neg}");
    assert_eq!((rec["prefix"].as_str(), rec["ttl_minutes"].as_u64()), (Some("128.0.0.0/1"), Some(15)), "{neg}");
    assert_eq!((&rec["action"], &rec["locators"]), (&json!("native-forward"), &json!([])), "{neg}");

    // show sites: both sites with their prefixes; only site-a registered.
    let sites = ms.show("sites");
    let summary: Vec<(String, u64)> = sites
        .as_array()
        .expect("site list")
        .iter()
        .map(|s| (s["name"].as_str().unwrap_or("?").to_string(), counter(s, &["registered"])))
        .collect();
    assert_eq!(summary, [("site-a".to_string(), 1), ("site-b".to_string(), 0)], "{sites}");
    assert_eq!(
        sites[0]["eid_prefixes"],
        json!([
            { "prefix": "10.1.0.0/16", "accept_more_specifics": true },
            { "prefix": "2001:db8:a::/48", "accept_more_specifics": true },
        ])
    );

    // show stats: what the exchanges above must have counted, and no drop.
    let stats = ms.show("stats");
    assert_eq!(stats["node"], "ms");
    // The configuration names the socket too (relative to the file's directory).
    let by_config = loci_json(&["show", "stats", "-c", ms.config.to_str().unwrap()]);
    assert_eq!(by_config["node"], "ms", "{by_config}");
    assert_eq!(counter(&stats, &["registrations"]), 1, "{stats}");
    assert!(counter(&stats, &["received", "Map-Register"]) >= 1, "{stats}");
    assert!(counter(&stats, &["sent", "Map-Notify"]) >= 1, "{stats}");
    assert_eq!(counter(&stats, &["forwarded_requests"]), 3, "two ligs and a rig: {stats}");
    assert_eq!(counter(&stats, &["negative_replies"]), 2, "{stats}");
    assert_eq!(counter(&stats, &["sent", "Map-Reply"]), 2, "the negative answers: {stats}");
    assert_eq!(stats["drops"], json!({}), "{stats}");
    let etr_stats = etr.show("stats");
    assert_eq!(counter(&etr_stats, &["sent", "Map-Reply"]), 3, "{etr_stats}");

    // show database on the ETR: its mapping, acknowledged by the Map-Server.
    let db = etr.wait_for("database", "registration acknowledged", acknowledged);
    assert_eq!(db["mappings"][0]["prefix"], "10.1.1.0/24", "{db}");
    assert_eq!(locators(&db["mappings"][0]["locators"]), want);
    assert_eq!(db["map_servers"][0]["address"], "127.0.0.101:4342", "{db}");
    assert_eq!(db["map_servers"][0]["awaiting_notify"], false, "{db}");
    let table = etr.show_text("database");
    assert!(table.contains("127.0.0.101:4342") && table.contains("acknowledged"), "{table}");

    ms.assert_no_send_failures();
    etr.assert_no_send_failures();

    // Wireshark decodes every message on the wire without complaint.
    if let Some(c) = capture.as_mut() {
        // Map-Request, Map-Reply, Map-Register, Map-Notify, Encapsulated Control Message.
        let packets = c.finish(&[1, 2, 3, 4, 8]);
        let bad = c.read(&["-Y", "_ws.malformed || _ws.expert.severity >= 8388608"]);
        assert!(bad.trim().is_empty(), "tshark finds errors:\n{bad}\nin the capture:\n{}", c.read(&[]));
        eprintln!("tshark: {packets} LISP packets, no malformed packet or error");
    }
}

#[test]
fn proxy_reply_site() {
    let lab = Lab::new();
    let ms = lab.start("ms", &["127.0.0.103"], MS_ROLES);
    let etr_config = etr_roles("127.0.0.103", 4342, "site-b-secret", "10.2.5.0/24", "127.0.0.104", "192.0.2.8");
    let mut etr = lab.start("etr", &["127.0.0.104"], &etr_config);
    ms.wait_for("registrations", "10.2.5.0/24 registered", |v| registration(v, "10.2.5.0/24").is_some());

    // site-b is answered by the Map-Server itself: not authoritative, the ETR's RLOCs.
    let lig = loci_json(&["lig", "10.2.5.1", "--mr", "127.0.0.103"]);
    assert_eq!(lig["from"], "127.0.0.103:4342", "{lig}");
    let rec = &lig["records"][0];
    assert_eq!((rec["prefix"].as_str(), &rec["authoritative"]), (Some("10.2.5.0/24"), &json!(false)), "{lig}");
    assert_eq!(locators(&rec["locators"]), expected_locators("127.0.0.104", "192.0.2.8"));
    let stats = ms.show("stats");
    assert_eq!(counter(&stats, &["proxy_replies"]), 1, "{stats}");
    assert_eq!(counter(&stats, &["forwarded_requests"]), 0, "{stats}");
    assert_eq!(counter(&etr.show("stats"), &["received", "Map-Request"]), 0, "the ETR was not asked");

    // A restarted ETR registers again: its nonces go on increasing, so none is a replay.
    assert!(etr.stop().success());
    let etr = lab.start("etr", &["127.0.0.104"], &etr_config);
    etr.wait_for("database", "registration acknowledged after the restart", acknowledged);
    let stats = ms.show("stats");
    assert_eq!(counter(&stats, &["received", "Map-Register"]), 2, "{stats}");
    assert_eq!(stats["drops"], json!({}), "{stats}");
}

#[test]
fn wrong_key_is_refused_and_counted() {
    let lab = Lab::new();
    let ms = lab.start("ms", &["127.0.0.105"], MS_ROLES);
    let etr = lab.start(
        "etr",
        &["127.0.0.106"],
        &etr_roles("127.0.0.105", 4342, "not-the-site-key", "10.1.6.0/24", "127.0.0.106", "192.0.2.9"),
    );
    let stats =
        ms.wait_for("stats", "a bad-auth drop for site-a", |s| counter(s, &["site_drops", "site-a", "bad-auth"]) >= 1);
    assert_eq!(counter(&stats, &["registrations"]), 0, "{stats}");
    assert_eq!(counter(&stats, &["sent", "Map-Notify"]), 0, "{stats}");
    assert_eq!(ms.show("registrations"), json!([]));
    let sites = ms.show("sites");
    assert!(counter(&sites[0]["drops"], &["bad-auth"]) >= 1, "{sites}");
    let table = ms.show_text("stats");
    assert!(has_row(&table, &["dropped", "bad-auth", &counter(&stats, &["drops", "bad-auth"]).to_string()]), "{table}");

    let db = etr.show("database");
    assert!(!acknowledged(&db), "{db}");
    assert_eq!(db["map_servers"][0]["awaiting_notify"], true, "{db}");
    let table = etr.show_text("database");
    assert!(table.contains("not yet acknowledged"), "{table}");
}

#[test]
fn ipv6_registration_and_lig() {
    if !has_ipv6_loopback() && skip("no IPv6 loopback (::1)") {
        return;
    }
    let lab = Lab::new();
    // Both on ::1, so the Map-Server takes another port: a Map-Server sends its Map-Notify
    // and forwarded requests to the ETR's port 4342 (RFC 9301 §8.2).
    let ms = lab.start("ms", &["::1"], &format!("control-port = 4343\n{MS_ROLES}"));
    let etr = lab.start(
        "etr",
        &["::1"],
        &etr_roles("::1", 4343, "site-a-secret", "2001:db8:a:1::/64", "::1", "2001:db8:ffff::7"),
    );
    let want = expected_locators("::1", "2001:db8:ffff::7");
    let regs = ms
        .wait_for("registrations", "2001:db8:a:1::/64 registered", |v| registration(v, "2001:db8:a:1::/64").is_some());
    let reg = registration(&regs, "2001:db8:a:1::/64").expect("registration");
    assert_eq!(locators(&reg["locators"]), want);
    assert_eq!(reg["xtrs"][0]["source"], "::1", "{reg}");
    etr.wait_for("database", "registration acknowledged", acknowledged);

    let lig = loci_json(&["lig", "2001:db8:a:1::5", "--mr", "::1", "--port", "4343"]);
    assert_eq!(lig["from"], "[::1]:4342", "answered by the ETR: {lig}");
    assert_eq!(lig["records"][0]["prefix"], "2001:db8:a:1::/64", "{lig}");
    assert_eq!(locators(&lig["records"][0]["locators"]), want);
    // With -c, lig asks the node of that configuration, at its control port.
    let neg = loci_json(&["lig", "2001:db8:b::1", "-c", ms.config.to_str().unwrap()]);
    assert_eq!((&neg["from"], &neg["records"][0]["ttl_minutes"]), (&json!("[::1]:4343"), &json!(15)), "{neg}");
    ms.assert_no_send_failures();
    etr.assert_no_send_failures();
}

#[test]
fn replayed_register_refused_after_restart() {
    let lab = Lab::new();
    let ms_addr: SocketAddr = "127.0.0.107:4342".parse().unwrap();
    let etr_ip: IpAddr = "127.0.0.108".parse().unwrap();
    let prefix: ipnet::IpNet = "10.1.7.0/24".parse().unwrap();
    let xtr_id = 0xfeed;
    let etr = fake_etr(etr_ip);
    let mut ms = lab.start("ms", &["127.0.0.107"], MS_ROLES);

    let captured = signed_register(prefix, etr_ip, "site-a-secret", 1000, xtr_id);
    etr.send_to(&captured, ms_addr).expect("send");
    expect_notify(&etr, 1000);

    // SIGTERM: a clean exit that removes the API socket and leaves the nonces on disk.
    assert!(ms.stop().success(), "loci run exits 0 on SIGTERM");
    assert!(!ms.socket.exists(), "the API socket is removed");
    let state = std::fs::read_to_string(lab.path("ms-state/nonces.json")).expect("state file");
    let state: Value = serde_json::from_str(&state).expect("state is JSON");
    assert_eq!(
        state["map_server_nonces"],
        json!([["site-a", format!("xtr:{xtr_id:032x}:0"), 1000]]),
        "the Map-Server's nonces are saved"
    );

    let ms = lab.start("ms", &["127.0.0.107"], MS_ROLES);
    assert_eq!(ms.show("registrations"), json!([]));
    etr.send_to(&captured, ms_addr).expect("send");
    let stats = ms.wait_for("stats", "the replay counted", |s| counter(s, &["drops", "replayed-nonce"]) == 1);
    assert_eq!(counter(&stats, &["site_drops", "site-a", "replayed-nonce"]), 1, "{stats}");
    assert_eq!(ms.show("registrations"), json!([]), "the replayed register registered nothing");

    // A fresh nonce is accepted: the next datagram back is its Map-Notify (none for the replay).
    let fresh = signed_register(prefix, etr_ip, "site-a-secret", 1001, xtr_id);
    etr.send_to(&fresh, ms_addr).expect("send");
    expect_notify(&etr, 1001);
    let regs = ms.show("registrations");
    assert!(registration(&regs, "10.1.7.0/24").is_some(), "{regs}");
}

#[test]
fn malformed_datagrams_are_counted() {
    let lab = Lab::new();
    let ms = lab.start("ms", &["127.0.0.109"], MS_ROLES);
    let register =
        signed_register("10.1.9.0/24".parse().unwrap(), "127.0.0.110".parse().unwrap(), "site-a-secret", 1, 1);
    // Fixed pseudo-random bytes after a type nibble, so a failure reproduces.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut noise = |first: u8, len: usize| -> Vec<u8> {
        let mut v = vec![first];
        v.extend((1..len).map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        }));
        v
    };
    let datagrams: Vec<Vec<u8>> = vec![
        Vec::new(),
        vec![0x30],
        register[..20].to_vec(),
        register[..register.len() - 7].to_vec(),
        noise(0x30, 64),
        noise(0x10, 48),
        noise(0x80, 48),
    ];
    let sender = UdpSocket::bind("127.0.0.110:0").expect("bind");
    for d in &datagrams {
        sender.send_to(d, "127.0.0.109:4342").expect("send");
    }
    let n = datagrams.len() as u64;
    let stats = ms.wait_for("stats", "every datagram counted malformed", |s| counter(s, &["drops", "malformed"]) >= n);
    assert_eq!(counter(&stats, &["drops", "malformed"]), n, "{stats}");

    // Still answering: an EID inside site-a that nobody registered gets the 1-minute negative.
    let lig = loci_json(&["lig", "10.1.200.1", "--mr", "127.0.0.109"]);
    assert_eq!(lig["from"], "127.0.0.109:4342", "{lig}");
    assert_eq!(lig["records"][0]["ttl_minutes"], 1, "{lig}");
}

#[test]
fn wildcard_listen_on_both_families() {
    if !has_ipv6_loopback() && skip("no IPv6 loopback (::1)") {
        return;
    }
    let lab = Lab::new();
    // The default listen set (here in the other order): `::` must be IPv6-only or it takes the
    // IPv4 port too.
    let ms = lab.start("ms", &["::", "0.0.0.0"], &format!("control-port = 4399\n{MS_ROLES}"));
    let rig = loci_json(&["rig", "8.8.8.8", "--to", "127.0.0.1", "--port", "4399"]);
    assert_eq!(rig["records"][0]["prefix"], "8.0.0.0/7", "{rig}");
    // lig -c asks the node itself: `::` stands for ::1.
    let lig = loci_json(&["lig", "2001:db8:b::1", "-c", ms.config.to_str().unwrap()]);
    assert_eq!((&lig["from"], &lig["records"][0]["ttl_minutes"]), (&json!("[::1]:4399"), &json!(15)), "{lig}");
    ms.assert_no_send_failures();
}

#[test]
fn map_server_and_etr_on_one_node() {
    let lab = Lab::new();
    let roles = format!(
        "{MS_ROLES}{}",
        etr_roles("127.0.0.111", 4342, "site-a-secret", "10.1.11.0/24", "127.0.0.111", "192.0.2.11")
    );
    let node = lab.start("node", &["127.0.0.111"], &roles);
    node.wait_for("database", "registration acknowledged", acknowledged);

    // The registration is the node's own: answered at once, authoritatively, not forwarded
    // to its own address (which sent the request back to the Map-Server, over and over).
    let lig = loci_json(&["lig", "10.1.11.1", "--mr", "127.0.0.111"]);
    assert_eq!(lig["from"], "127.0.0.111:4342", "{lig}");
    assert_eq!(lig["records"][0]["authoritative"], true, "{lig}");
    assert_eq!(locators(&lig["records"][0]["locators"]), expected_locators("127.0.0.111", "192.0.2.11"));
    let stats = node.show("stats");
    assert_eq!(counter(&stats, &["forwarded_requests"]), 0, "{stats}");
    assert_eq!(counter(&stats, &["received", "Encapsulated-Control-Message"]), 1, "{stats}");
}
