//! `loci show`: the daemon's state as tables for people or JSON for scripts.

use serde_json::Value;

/// Renders rows of cells as an aligned table under `headers`.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s: String = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}  ")).collect();
        s.truncate(s.trim_end().len());
        s + "\n"
    };
    let mut out = line(headers.to_vec());
    for r in rows {
        out += &line(r.iter().map(String::as_str).collect());
    }
    out
}

/// The elements of a JSON array, or none when it is not one.
fn items(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or_default()
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        v => v.to_string(),
    }
}

fn locators(v: &Value) -> String {
    let list = items(v);
    list.iter()
        .map(|l| {
            format!(
                "{} ({}/{}){}",
                s(&l["address"]),
                l["priority"],
                l["weight"],
                if l["reachable"] == false || l["down"] == true { " down" } else { "" }
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn counters(v: &Value) -> String {
    match v.as_object() {
        Some(m) if !m.is_empty() => m.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" "),
        _ => "-".into(),
    }
}

pub fn sites(v: &Value) -> String {
    let rows: Vec<Vec<String>> = items(v)
        .iter()
        .map(|site| {
            let prefixes = items(&site["eid_prefixes"]);
            let p = prefixes
                .iter()
                .map(|p| format!("{}{}", s(&p["prefix"]), if p["accept_more_specifics"] == true { "+" } else { "" }))
                .collect::<Vec<_>>()
                .join(" ");
            vec![s(&site["name"]), p, s(&site["registered"]), counters(&site["drops"])]
        })
        .collect();
    table(&["SITE", "EID-PREFIXES (+ = more-specifics)", "REGISTERED", "DROPS"], &rows)
}

pub fn registrations(v: &Value) -> String {
    let rows: Vec<Vec<String>> = items(v)
        .iter()
        .map(|r| {
            let xtrs = items(&r["xtrs"]);
            let last = xtrs.last().cloned().unwrap_or(Value::Null);
            vec![
                s(&r["prefix"]),
                s(&r["site"]),
                locators(&r["locators"]),
                xtrs.iter().map(|x| s(&x["source"])).collect::<Vec<_>>().join(","),
                if last["proxy_reply"] == true { "yes".into() } else { "no".into() },
                format!("{}s", s(&last["expires_in_secs"])),
            ]
        })
        .collect();
    table(&["EID-PREFIX", "SITE", "LOCATORS (priority/weight)", "REGISTERED BY", "PROXY", "EXPIRES"], &rows)
}

pub fn stats(v: &Value) -> String {
    let mut out = format!("node {}  up {}s\n", s(&v["node"]), s(&v["uptime_secs"]));
    let mut rows = Vec::new();
    for (section, key) in [("received", "received"), ("sent", "sent"), ("dropped", "drops")] {
        if let Some(m) = v[key].as_object() {
            for (k, n) in m {
                rows.push(vec![section.to_string(), k.clone(), n.to_string()]);
            }
        }
    }
    for k in [
        "negative_replies",
        "proxy_replies",
        "forwarded_requests",
        "registrations_expired",
        "tolerated",
        "registrations",
    ] {
        if !v[k].is_null() {
            rows.push(vec!["counter".into(), k.replace('_', "-"), s(&v[k])]);
        }
    }
    for (section, key) in [("itr", "itr"), ("data-plane", "data_plane"), ("mobility", "mobility")] {
        if let Some(m) = v[key].as_object() {
            for (k, n) in m.iter().filter(|(_, n)| !n.is_object()) {
                rows.push(vec![section.to_string(), k.replace('_', "-"), s(n)]);
            }
        }
    }
    if let Some(m) = v["data_plane"]["drops"].as_object() {
        for (k, n) in m {
            rows.push(vec!["data-plane dropped".to_string(), k.clone(), s(n)]);
        }
    }
    out += &table(&["", "WHAT", "COUNT"], &rows);
    if let Some(m) = v["site_drops"].as_object().filter(|m| !m.is_empty()) {
        out += "\ndrops per site:\n";
        let rows: Vec<Vec<String>> = m.iter().map(|(site, c)| vec![site.clone(), counters(c)]).collect();
        out += &table(&["SITE", "DROPS"], &rows);
    }
    out
}

pub fn map_cache(v: &Value) -> String {
    let rows: Vec<Vec<String>> = items(v)
        .iter()
        .map(|m| {
            vec![
                s(&m["prefix"]),
                if m["negative"] == true {
                    format!("negative: {}", s(&m["action"]))
                } else if m["away"] == true {
                    // A host that moved: what arrives for it is re-encapsulated to it.
                    let to: Vec<String> = items(&m["locators"]).iter().map(|l| s(&l["address"])).collect();
                    format!("away -> {}", to.join(","))
                } else {
                    locators(&m["locators"])
                },
                if m["away"] == true { "-".into() } else { format!("{}s", s(&m["ttl_secs"])) },
                format!("{}s", s(&m["expires_in_secs"])),
                if m["used_recently"] == true { "yes".into() } else { "no".into() },
            ]
        })
        .collect();
    table(&["EID-PREFIX", "LOCATORS (priority/weight) OR ACTION", "TTL", "EXPIRES", "IN USE"], &rows)
}

pub fn rlocs(v: &Value) -> String {
    let rows: Vec<Vec<String>> = items(v)
        .iter()
        .map(|l| {
            let fast = if l["fast_failover"] == true { " (fast)" } else { "" };
            vec![
                s(&l["locator"]),
                format!("{}{fast}", s(&l["state"])),
                l["rtt_ms"].as_f64().map_or("-".into(), |ms| format!("{ms} ms")),
                l["since_secs"].as_u64().map_or("-".into(), |n| format!("{n}s ago")),
                s(&l["probes"]),
                s(&l["entries"]),
                match (l["echo"]["state"].as_str(), l["echo"]["last_echo_secs_ago"].as_u64()) {
                    (Some(st), Some(ago)) => format!("{st} ({ago}s ago)"),
                    (Some(st), None) => st.into(),
                    _ => "-".into(),
                },
            ]
        })
        .collect();
    table(&["LOCATOR", "STATE", "LAST PROBE RTT", "SINCE", "PROBES", "ENTRIES", "ECHO-NONCE"], &rows)
}

pub fn dynamic_eids(v: &Value) -> String {
    let rows: Vec<Vec<String>> = items(v)
        .iter()
        .map(|h| {
            vec![
                s(&h["prefix"]),
                s(&h["interface"]),
                s(&h["mode"]),
                format!("{}s ago", s(&h["since_secs_ago"])),
                format!("{}s ago", s(&h["last_seen_secs_ago"])),
                s(&h["state"]),
            ]
        })
        .collect();
    table(&["HOST", "INTERFACE", "MODE", "SINCE", "LAST SEEN", "STATE"], &rows)
}

pub fn subscriptions(v: &Value) -> String {
    let rows: Vec<Vec<String>> = items(v)
        .iter()
        .map(|r| {
            let rlocs = items(&r["itr_rlocs"]);
            vec![
                s(&r["prefix"]),
                s(&r["xtr_id"]),
                s(&r["site_id"]),
                rlocs.iter().map(s).collect::<Vec<_>>().join(","),
                s(&r["awaiting_ack"]),
            ]
        })
        .collect();
    table(&["EID-PREFIX", "XTR-ID", "SITE-ID", "ITR-RLOCS", "AWAITING-ACK"], &rows)
}

pub fn database(v: &Value) -> String {
    let rows: Vec<Vec<String>> =
        items(&v["mappings"]).iter().map(|m| vec![s(&m["prefix"]), locators(&m["locators"])]).collect();
    let mut out = table(&["EID-PREFIX", "LOCATORS (priority/weight)"], &rows);
    let rows: Vec<Vec<String>> = items(&v["map_servers"])
        .iter()
        .map(|m| {
            vec![
                s(&m["address"]),
                match m["acknowledged_secs_ago"].as_u64() {
                    Some(n) => format!("acknowledged {n}s ago"),
                    None => "not yet acknowledged".into(),
                },
                format!("{}s", s(&m["next_register_in_secs"])),
            ]
        })
        .collect();
    out += "\n";
    out += &table(&["MAP-SERVER", "STATE", "NEXT REGISTER"], &rows);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_cache_rows() {
        let v = serde_json::json!([
            {"prefix": "[7]10.2.0.0/16", "negative": false, "action": "no-action", "ttl_secs": 86400,
             "expires_in_secs": 86399, "used_recently": true,
             "locators": [{"address": "192.0.2.2", "priority": 1, "weight": 100, "reachable": true}]},
            {"prefix": "10.9.0.0/16", "negative": true, "action": "native-forward", "ttl_secs": 900,
             "expires_in_secs": 12, "used_recently": false, "locators": []},
        ]);
        let t = map_cache(&v);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[1].starts_with("[7]10.2.0.0/16  192.0.2.2 (1/100)"), "{t}");
        assert!(lines[1].ends_with("86400s  86399s   yes"), "{t}");
        assert!(lines[2].contains("negative: native-forward") && lines[2].ends_with("no"), "{t}");
    }

    #[test]
    fn stats_include_the_data_plane() {
        let v = serde_json::json!({
            "node": "xa", "uptime_secs": 5, "received": {}, "sent": {}, "drops": {},
            "itr": {"misses": 2, "map_cache_entries": 1},
            "data_plane": {"encapsulated": 10, "drops": {"map-cache-miss": 2}},
        });
        let t = stats(&v);
        assert!(t.contains("itr                 misses             2"), "{t}");
        assert!(t.contains("data-plane          encapsulated       10"), "{t}");
        assert!(t.contains("data-plane dropped  map-cache-miss     2"), "{t}");
    }

    #[test]
    fn rloc_rows() {
        let v = serde_json::json!([
            {"locator": "192.0.2.1", "state": "up", "fast_failover": true, "rtt_ms": 0.4, "since_secs": 12,
             "probes": 60, "entries": 3, "echo": {"state": "verified", "last_echo_secs_ago": 1, "failures": 0}},
            {"locator": "192.0.2.2", "state": "down", "fast_failover": false, "rtt_ms": null, "since_secs": 2,
             "probes": 5, "entries": 1},
            {"locator": "192.0.2.3", "state": "not-probed", "entries": 1},
        ]);
        let t = rlocs(&v);
        let rows: Vec<Vec<&str>> = t.lines().map(|l| l.split_whitespace().collect()).collect();
        let up = ["192.0.2.1", "up", "(fast)", "0.4", "ms", "12s", "ago", "60", "3", "verified", "(1s", "ago)"];
        assert_eq!(rows[1], up, "{t}");
        assert_eq!(rows[2], ["192.0.2.2", "down", "-", "2s", "ago", "5", "1", "-"], "{t}");
        assert_eq!(rows[3], ["192.0.2.3", "not-probed", "-", "-", "-", "1", "-"], "{t}");
    }

    #[test]
    fn aligns_columns() {
        let t = table(&["A", "BB"], &[vec!["xxx".into(), "y".into()]]);
        assert_eq!(t, "A    BB\nxxx  y\n");
    }
}
