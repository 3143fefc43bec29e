//! The Prometheus listener of `loci run`, scraped over TCP on loopback, and `loci show rlocs`.
//!
//! Addresses: 127.0.0.130 (MS/MR, metrics on TCP 127.0.0.130:9130), 127.0.0.131 (ETR).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;
use serde_json::json;

const MS: &str = r#"metrics = "127.0.0.130:9130"

[[map-server.site]]
name = "site-a"
auth = { algorithm = "hmac-sha256-128", key = "site-a-secret" }
eid-prefixes = [{ prefix = "10.1.0.0/16", accept-more-specifics = true }]

[map-resolver]
"#;

const ETR: &str = r#"
[xtr]
roles = ["etr"]
map-servers = [{ address = "127.0.0.130", auth = { algorithm = "hmac-sha256-128", key = "site-a-secret" } }]

[[xtr.instance]]
database = [{ prefix = "10.1.1.0/24", rlocs = [{ address = "127.0.0.131" }] }]
"#;

/// GET /metrics: the status line and the body.
fn scrape(addr: &str) -> Option<(String, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: loci\r\nConnection: close\r\n\r\n").ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    Some((head.lines().next()?.to_string(), body.to_string()))
}

/// The value of the sample `name` (with its labels, exactly) in a scrape.
fn sample(body: &str, name: &str) -> Option<f64> {
    body.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[test]
fn metrics_are_scraped_over_tcp() {
    let lab = Lab::new();
    let ms = lab.start("ms", &["127.0.0.130"], MS);
    let _etr = lab.start("etr", &["127.0.0.131"], ETR);
    ms.wait_for("registrations", "10.1.1.0/24 registered", |v| {
        v.as_array().is_some_and(|a| a.iter().any(|r| r["prefix"] == "10.1.1.0/24"))
    });
    // A stray datagram, counted as a drop.
    std::net::UdpSocket::bind("127.0.0.1:0").unwrap().send_to(&[0xff], "127.0.0.130:4342").unwrap();
    let body = poll("a scrape showing the registration and the drop", || {
        let (status, body) = scrape("127.0.0.130:9130")?;
        assert!(status.ends_with("200 OK"), "{status}");
        let drop = sample(&body, "loci_control_drops_total{reason=\"unexpected-message\"}")?;
        (sample(&body, "loci_registrations") == Some(1.0) && drop >= 1.0).then_some(body)
    });
    // The same numbers as `loci show stats`: read from the node's counters, not counted again.
    let stats = ms.show("stats");
    let registers = counter(&stats, &["received", "Map-Register"]);
    let scraped = sample(&body, "loci_messages_received_total{type=\"Map-Register\"}").expect("registers");
    assert!(registers >= 1 && scraped >= 1.0 && scraped <= registers as f64, "{scraped} vs {registers}");
    assert!(sample(&body, "loci_messages_sent_total{type=\"Map-Notify\"}").is_some_and(|n| n >= 1.0), "{body}");
    assert!(sample(&body, "loci_uptime_seconds").is_some(), "{body}");
    assert!(body.contains("# TYPE loci_messages_received_total counter"), "{body}");
    // Other paths are not served.
    let mut s = TcpStream::connect("127.0.0.130:9130").unwrap();
    s.write_all(b"GET /other HTTP/1.1\r\nHost: loci\r\nConnection: close\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    assert!(raw.starts_with("HTTP/1.1 404"), "{raw}");

    // No ITR on this node: no locators to show, but the command works.
    assert_eq!(ms.show("rlocs"), json!([]));
    let table = ms.show_text("rlocs");
    assert!(table.starts_with("LOCATOR  STATE  LAST PROBE RTT  SINCE"), "{table}");
}

#[test]
fn check_names_the_metrics_listener() {
    let lab = Lab::new();
    let text = MS.replace("metrics = \"127.0.0.130:9130\"", "").replace("127.0.0.130", "127.0.0.132");
    let cfg = lab.config("quiet", &["127.0.0.132"], &text);
    let out = loci_ok(&["check", "-c", cfg.to_str().unwrap()]);
    assert!(!out.contains("metrics"), "{out}");
    let cfg = lab.config("loud", &["127.0.0.132"], &format!("metrics = \"127.0.0.132:9132\"\n{text}"));
    let out = loci_ok(&["check", "-c", cfg.to_str().unwrap()]);
    assert!(out.contains("metrics on 127.0.0.132:9132"), "{out}");
}
