//! The mapping system on the simulator: registration, resolution through MR -> MS -> ETR,
//! proxy and negative replies, expiry, merging, pub/sub, and refusal of bad registrations.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use loci_core::mapping::{eid_from_wire, encapsulate_request, map_request};
use loci_core::stats::Drop;
use loci_sim::scenario::{etr, ip, map_server, prefix, rloc, site};
use loci_sim::{Id, Sim};
use loci_wire::map_notify::MapNotify;
use loci_wire::map_register::XtrId;
use loci_wire::map_reply::MapReply;
use loci_wire::map_request::MapRequest;
use loci_wire::message::ControlMessage;
use loci_wire::{Action, Address, Wire};

const KEY: &[u8] = b"site-a-secret";
const ITR_PORT: u16 = 61000;

struct World {
    sim: Sim,
    ms: Id,
    etr1: Id,
    itr: Id,
}

/// MS/MR at 192.0.2.10 serving sites 10.1.0.0/16 and 10.3.0.0/16; an ETR at 203.0.113.1
/// registering 10.1.1.0/24; an ITR endpoint at 198.51.100.1.
fn world(seed: u64, proxy: bool) -> World {
    let mut sim = Sim::new(seed);
    let ms =
        sim.add_node(map_server("ms", vec![site("site-a", KEY, &["10.1.0.0/16", "10.3.0.0/16"])]), &[ip("192.0.2.10")]);
    let mut cfg = etr(
        "etr1",
        "192.0.2.10",
        KEY,
        vec![("10.1.1.0/24", vec![rloc("203.0.113.1", 1, 50), rloc("203.0.113.2", 2, 50)])],
        0x11,
    );
    cfg.etr.as_mut().unwrap().proxy_reply = proxy;
    let etr1 = sim.add_node(cfg, &[ip("203.0.113.1")]);
    let itr = sim.add_endpoint("itr", &[ip("198.51.100.1")]);
    World { sim, ms, etr1, itr }
}

fn request(eid: &str, nonce: u64) -> MapRequest {
    map_request(nonce, &prefix(eid), vec![Address::from(ip("198.51.100.1"))])
}

/// Sends an encapsulated Map-Request from the ITR endpoint to the Map-Resolver.
fn ask(w: &mut World, req: &MapRequest) {
    let itr = ip("198.51.100.1");
    let ecm = encapsulate_request(itr, ITR_PORT, req);
    w.sim.send(w.itr, SocketAddr::new(itr, ITR_PORT), SocketAddr::new(ip("192.0.2.10"), 4342), ecm.to_bytes());
}

/// Control messages the ITR endpoint received, decoded, with their source.
fn itr_inbox(w: &World) -> Vec<(IpAddr, ControlMessage)> {
    w.sim.received(w.itr).iter().map(|(_, src, _, d)| (src.ip(), ControlMessage::parse(d).expect("decodes"))).collect()
}

fn replies(w: &World) -> Vec<(IpAddr, MapReply)> {
    itr_inbox(w)
        .into_iter()
        .filter_map(|(s, m)| match m {
            ControlMessage::MapReply(r) => Some((s, r)),
            _ => None,
        })
        .collect()
}

/// Message names in trace order, as "from>to:Name".
fn ladder(sim: &Sim) -> Vec<String> {
    sim.trace()
        .iter()
        .map(|e| {
            let name = ControlMessage::parse(&e.data).map(|m| m.name()).unwrap_or("?");
            let to = e.to.map(|t| sim.name(t).to_string()).unwrap_or_default();
            format!("{}>{}:{}", sim.name(e.from), to, name)
        })
        .collect()
}

#[test]
fn etr_registers_and_is_acknowledged() {
    let mut w = world(1, false);
    w.sim.run_for(Duration::from_secs(2));
    let reg = w.sim.node(w.ms).map_server().unwrap().registration(&prefix("10.1.1.0/24")).cloned().expect("registered");
    assert_eq!(reg.locators().len(), 2);
    assert!(w.sim.node(w.etr1).etr().unwrap().registrations()[0].acknowledged.is_some());
    assert_eq!(&ladder(&w.sim)[..2], ["etr1>ms:Map-Register", "ms>etr1:Map-Notify"]);
    // Refreshed every 60 s: after 5 minutes the registration still stands.
    w.sim.run_for(Duration::from_secs(300));
    assert!(w.sim.node(w.ms).map_server().unwrap().registration(&prefix("10.1.1.0/24")).is_some());
    let registers = ladder(&w.sim).iter().filter(|l| l.ends_with("Map-Register")).count();
    assert!((5..=7).contains(&registers), "{registers} registers in 302 s");
}

#[test]
fn resolves_through_resolver_server_and_etr() {
    let mut w = world(2, false);
    w.sim.run_for(Duration::from_secs(2));
    ask(&mut w, &request("10.1.1.7/32", 0xabc));
    w.sim.run_for(Duration::from_secs(1));
    let r = replies(&w);
    assert_eq!(r.len(), 1);
    let (from, reply) = &r[0];
    assert_eq!(*from, ip("203.0.113.1"), "the ETR answers the ITR directly");
    assert_eq!(reply.nonce, 0xabc);
    let rec = &reply.records[0];
    assert!(rec.authoritative);
    assert_eq!(eid_from_wire(&rec.eid, rec.eid_mask_len), Some(prefix("10.1.1.0/24")));
    assert_eq!(rec.locators.len(), 2);
    let l = ladder(&w.sim);
    let tail: Vec<&str> = l[l.len() - 3..].iter().map(String::as_str).collect();
    assert_eq!(
        tail,
        ["itr>ms:Encapsulated-Control-Message", "ms>etr1:Encapsulated-Control-Message", "etr1>itr:Map-Reply"]
    );
}

#[test]
fn proxy_reply_comes_from_the_map_server() {
    let mut w = world(3, true);
    w.sim.run_for(Duration::from_secs(2));
    ask(&mut w, &request("10.1.1.7/32", 7));
    w.sim.run_for(Duration::from_secs(1));
    let r = replies(&w);
    assert_eq!(r[0].0, ip("192.0.2.10"));
    assert!(!r[0].1.records[0].authoritative);
    assert_eq!(r[0].1.records[0].locators.len(), 2);
    assert_eq!(w.sim.node(w.ms).stats().proxy_replies, 1);
}

#[test]
fn negative_replies_use_the_least_specific_safe_prefix() {
    let mut w = world(4, false);
    w.sim.run_for(Duration::from_secs(2));
    ask(&mut w, &request("10.200.0.1/32", 1));
    ask(&mut w, &request("10.1.77.1/32", 2));
    w.sim.run_for(Duration::from_secs(1));
    let mut got: Vec<(u64, String, u32, Action)> = replies(&w)
        .into_iter()
        .map(|(_, r)| {
            let rec = &r.records[0];
            assert!(rec.locators.is_empty());
            (r.nonce, eid_from_wire(&rec.eid, rec.eid_mask_len).unwrap().to_string(), rec.ttl, rec.action)
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            (1, "10.128.0.0/9".to_string(), 15, Action::NATIVE_FORWARD),
            (2, "10.1.64.0/18".to_string(), 1, Action::NATIVE_FORWARD)
        ]
    );
}

#[test]
fn registrations_expire_three_minutes_after_the_last_refresh() {
    let mut w = world(5, false);
    w.sim.run_for(Duration::from_secs(2));
    w.sim.partition(w.ms, w.etr1, true);
    w.sim.run_for(Duration::from_secs(170));
    assert!(w.sim.node(w.ms).map_server().unwrap().registration(&prefix("10.1.1.0/24")).is_some());
    w.sim.run_for(Duration::from_secs(15));
    assert!(w.sim.node(w.ms).map_server().unwrap().registration(&prefix("10.1.1.0/24")).is_none());
    assert_eq!(w.sim.node(w.ms).stats().registrations_expired, 1);
    // The partitioned ETR kept retransmitting with backoff, at most once a minute.
    let retries = ladder(&w.sim).iter().filter(|l| l.starts_with("etr1>ms")).count();
    assert!((5..=12).contains(&retries), "{retries}");
    // Healed: the next registration round restores it without operator action.
    w.sim.partition(w.ms, w.etr1, false);
    w.sim.run_for(Duration::from_secs(61));
    assert!(w.sim.node(w.ms).map_server().unwrap().registration(&prefix("10.1.1.0/24")).is_some());
}

#[test]
fn merge_bit_unites_the_sites_rloc_sets() {
    let mut sim = Sim::new(6);
    let ms = sim.add_node(map_server("ms", vec![site("dc", KEY, &["10.2.0.0/16"])]), &[ip("192.0.2.10")]);
    for (i, addr) in ["203.0.113.11", "203.0.113.12"].iter().enumerate() {
        let mut cfg =
            etr(&format!("etr{i}"), "192.0.2.10", KEY, vec![("10.2.2.0/24", vec![rloc(addr, 1, 50)])], 100 + i as u128);
        cfg.etr.as_mut().unwrap().merge = true;
        sim.add_node(cfg, &[ip(addr)]);
    }
    sim.run_for(Duration::from_secs(3));
    let reg = sim.node(ms).map_server().unwrap().registration(&prefix("10.2.2.0/24")).cloned().unwrap();
    assert_eq!(reg.xtrs.len(), 2);
    assert_eq!(reg.locators().len(), 2, "merged RLOC set");
}

#[test]
fn without_merge_the_latest_registration_stands() {
    let mut sim = Sim::new(7);
    let ms = sim.add_node(map_server("ms", vec![site("dc", KEY, &["10.2.0.0/16"])]), &[ip("192.0.2.10")]);
    let a = sim.add_node(
        etr("a", "192.0.2.10", KEY, vec![("10.2.2.0/24", vec![rloc("203.0.113.11", 1, 50)])], 1),
        &[ip("203.0.113.11")],
    );
    sim.set_link_delay(a, ms, Duration::from_millis(1));
    let b = sim.add_node(
        etr("b", "192.0.2.10", KEY, vec![("10.2.2.0/24", vec![rloc("203.0.113.12", 1, 50)])], 2),
        &[ip("203.0.113.12")],
    );
    sim.set_link_delay(b, ms, Duration::from_millis(5));
    sim.run_for(Duration::from_secs(1));
    let reg = sim.node(ms).map_server().unwrap().registration(&prefix("10.2.2.0/24")).cloned().unwrap();
    assert_eq!(reg.xtrs.len(), 1);
    assert_eq!(reg.latest().unwrap().source, ip("203.0.113.12"));
}

#[test]
fn wrong_key_unknown_site_and_outside_prefixes_are_refused_and_counted() {
    let mut sim = Sim::new(8);
    let ms = sim.add_node(map_server("ms", vec![site("site-a", KEY, &["10.1.0.0/16"])]), &[ip("192.0.2.10")]);
    sim.add_node(
        etr("bad-key", "192.0.2.10", b"wrong", vec![("10.1.1.0/24", vec![rloc("203.0.113.1", 1, 50)])], 1),
        &[ip("203.0.113.1")],
    );
    sim.add_node(
        etr("stranger", "192.0.2.10", KEY, vec![("172.16.0.0/24", vec![rloc("203.0.113.2", 1, 50)])], 2),
        &[ip("203.0.113.2")],
    );
    let mut both = etr("greedy", "192.0.2.10", KEY, vec![("10.1.2.0/24", vec![rloc("203.0.113.3", 1, 50)])], 3);
    both.etr.as_mut().unwrap().database.push(loci_core::config::DatabaseMapping {
        prefix: prefix("10.9.0.0/16"),
        locators: vec![rloc("203.0.113.3", 1, 50)],
    });
    sim.add_node(both, &[ip("203.0.113.3")]);
    sim.run_for(Duration::from_secs(5));
    let node = sim.node(ms);
    assert!(node.map_server().unwrap().registrations().is_empty());
    let stats = node.stats();
    assert!(stats.dropped(Drop::BadAuth) >= 1);
    assert!(stats.dropped(Drop::UnknownSite) >= 1);
    assert!(stats.dropped(Drop::PrefixOutsideSite) >= 1);
    assert!(stats.site_drops["site-a"]["bad-auth"] >= 1);
    assert_eq!(stats.sent.get("Map-Notify"), None, "never notify a refused registration");
}

#[test]
fn replayed_register_is_refused() {
    let mut w = world(9, false);
    w.sim.run_for(Duration::from_secs(2));
    let first = w.sim.trace().iter().find(|e| e.data[0] >> 4 == 3).unwrap().clone();
    let notifies = w.sim.node(w.ms).stats().sent["Map-Notify"];
    w.sim.send(w.itr, first.src, first.dst, first.data);
    w.sim.run_for(Duration::from_secs(1));
    assert_eq!(w.sim.node(w.ms).stats().dropped(Drop::Replay), 1);
    assert_eq!(w.sim.node(w.ms).stats().sent["Map-Notify"], notifies);
}

#[test]
fn pubsub_pushes_changes_until_acknowledged() {
    let mut w = world(10, false);
    w.sim.run_for(Duration::from_secs(2));
    let mut req = request("10.1.1.7/32", 1000);
    req.records[0].notify = true;
    req.xtr_id = Some(XtrId { xtr_id: 0x77, site_id: 9 });
    ask(&mut w, &req);
    w.sim.run_for(Duration::from_secs(1));
    let inbox = itr_inbox(&w);
    let ControlMessage::MapNotify(confirm) = &inbox[0].1 else {
        panic!("subscription confirmed by Map-Notify: {inbox:?}")
    };
    assert_eq!(confirm.nonce, 1000);
    assert_eq!(confirm.records[0].locators.len(), 2);
    assert_eq!(w.sim.node(w.ms).map_server().unwrap().subscriptions().len(), 1);

    // A replayed subscription (same nonce) is dropped silently.
    ask(&mut w, &req);
    w.sim.run_for(Duration::from_secs(1));
    assert_eq!(itr_inbox(&w).len(), 1);

    // The site's mapping changes: a second ETR registers the prefix (latest stands).
    let etr2 = w.sim.add_node(
        etr("etr2", "192.0.2.10", KEY, vec![("10.1.1.0/24", vec![rloc("203.0.113.9", 1, 100)])], 0x22),
        &[ip("203.0.113.9")],
    );
    w.sim.run_for(Duration::from_secs(1));
    let _ = etr2;
    let pushes: Vec<MapNotify> = itr_inbox(&w)
        .into_iter()
        .skip(1)
        .filter_map(|(_, m)| match m {
            ControlMessage::MapNotify(n) => Some(n),
            _ => None,
        })
        .collect();
    assert_eq!(pushes.len(), 1);
    assert_eq!(pushes[0].nonce, 1001, "publication nonce increments");
    assert_eq!(pushes[0].records[0].locators[0].address, Address::from(ip("203.0.113.9")));

    // Not acknowledged: retransmitted at 3 s intervals.
    w.sim.run_for(Duration::from_secs(7));
    let count = |w: &World| {
        itr_inbox(w).iter().filter(|(_, m)| matches!(m, ControlMessage::MapNotify(n) if n.nonce == 1001)).count()
    };
    assert_eq!(count(&w), 3);

    // Acknowledge: retransmissions stop.
    let mut ack = pushes[0].clone();
    ack.ack = true;
    let policy = loci_wire::auth::SendPolicy::default();
    ack.prepare_auth(1, &policy);
    let mut bytes = ack.to_bytes();
    loci_wire::auth::sign(&mut bytes, 1, KEY, &policy).unwrap();
    let itr = ip("198.51.100.1");
    w.sim.send(w.itr, SocketAddr::new(itr, 4342), SocketAddr::new(ip("192.0.2.10"), 4342), bytes);
    w.sim.run_for(Duration::from_secs(30));
    assert_eq!(count(&w), 3);
}

#[test]
fn unacknowledged_subscriber_is_dropped_with_one_notify() {
    let mut w = world(11, false);
    w.sim.run_for(Duration::from_secs(2));
    let mut req = request("10.1.1.7/32", 5);
    req.records[0].notify = true;
    req.xtr_id = Some(XtrId { xtr_id: 0x78, site_id: 9 });
    ask(&mut w, &req);
    w.sim.run_for(Duration::from_secs(1));
    // One change, then a stable mapping: etr1 is cut off, etr2 takes over.
    w.sim.partition(w.ms, w.etr1, true);
    w.sim.add_node(
        etr("etr2", "192.0.2.10", KEY, vec![("10.1.1.0/24", vec![rloc("203.0.113.9", 1, 100)])], 0x22),
        &[ip("203.0.113.9")],
    );
    w.sim.run_for(Duration::from_secs(200));
    assert_eq!(w.sim.node(w.ms).map_server().unwrap().subscriptions().len(), 0);
    let last = itr_inbox(&w).pop().unwrap().1;
    let ControlMessage::MapNotify(n) = last else { panic!() };
    assert!(n.records[0].locators.is_empty());
    assert_eq!(n.records[0].action, Action::DROP_AUTH_FAILURE);
    // 1 confirmation + 7 transmissions of the publication + 1 farewell.
    assert_eq!(itr_inbox(&w).len(), 9);
}

#[test]
fn same_seed_same_trace() {
    let run = |seed| {
        let mut w = world(seed, false);
        w.sim.run_for(Duration::from_secs(2));
        ask(&mut w, &request("10.1.1.7/32", 3));
        ask(&mut w, &request("10.200.0.1/32", 4));
        w.sim.run_for(Duration::from_secs(120));
        w.sim.trace().to_vec()
    };
    assert_eq!(run(42), run(42));
}

/// A Map-Resolver on its own node, forwarding to the Map-Server that serves the EID.
fn resolver(name: &str, ms: &str, prefixes: &[&str]) -> loci_core::config::NodeConfig {
    loci_core::config::NodeConfig {
        name: name.into(),
        map_server: None,
        map_resolver: Some(loci_core::config::MapResolverConfig {
            map_servers: vec![loci_core::config::MapServerPeer {
                address: ip(ms),
                eid_prefixes: prefixes.iter().map(|p| prefix(p)).collect(),
            }],
        }),
        etr: None,
        itr: None,
        limits: Default::default(),
    }
}

#[test]
fn standalone_anycast_resolvers_forward_to_the_map_server_or_answer_negative() {
    let mut sim = Sim::new(12);
    let mut ms_cfg = map_server("ms", vec![site("site-a", KEY, &["10.1.0.0/16"])]);
    ms_cfg.map_resolver = None;
    let ms = sim.add_node(ms_cfg, &[ip("192.0.2.20")]);
    // Two resolvers share the anycast address 192.0.2.53; the ITR reaches the nearer one.
    let far = sim.add_node(resolver("mr-far", "192.0.2.20", &["10.1.0.0/16"]), &[ip("192.0.2.53"), ip("192.0.2.61")]);
    let near = sim.add_node(resolver("mr-near", "192.0.2.20", &["10.1.0.0/16"]), &[ip("192.0.2.53"), ip("192.0.2.62")]);
    sim.add_node(
        etr("etr1", "192.0.2.20", KEY, vec![("10.1.1.0/24", vec![rloc("203.0.113.1", 1, 50)])], 1),
        &[ip("203.0.113.1")],
    );
    let itr = sim.add_endpoint("itr", &[ip("198.51.100.1")]);
    sim.set_link_delay(itr, far, Duration::from_millis(20));
    sim.set_link_delay(itr, near, Duration::from_millis(2));
    sim.run_for(Duration::from_secs(2));
    let mut w = World { sim, ms, etr1: 0, itr };
    let send = |w: &mut World, eid: &str, nonce| {
        let itr_ip = ip("198.51.100.1");
        let ecm = encapsulate_request(itr_ip, ITR_PORT, &request(eid, nonce));
        w.sim.send(w.itr, SocketAddr::new(itr_ip, ITR_PORT), SocketAddr::new(ip("192.0.2.53"), 4342), ecm.to_bytes());
    };
    send(&mut w, "10.1.1.9/32", 1);
    send(&mut w, "172.16.0.1/32", 2);
    w.sim.run_for(Duration::from_secs(1));
    let l = ladder(&w.sim);
    assert!(l.contains(&"itr>mr-near:Encapsulated-Control-Message".to_string()), "{l:?}");
    assert!(!l.iter().any(|s| s.contains("mr-far")), "the far anycast resolver sees nothing: {l:?}");
    assert!(l.contains(&"mr-near>ms:Encapsulated-Control-Message".to_string()));
    assert!(l.contains(&"ms>etr1:Encapsulated-Control-Message".to_string()));
    let r = replies(&w);
    let positive = r.iter().find(|(_, m)| m.nonce == 1).expect("answer for a LISP EID");
    assert_eq!(positive.0, ip("203.0.113.1"));
    let negative = r.iter().find(|(_, m)| m.nonce == 2).expect("answer for a non-LISP EID");
    assert_eq!(negative.0, ip("192.0.2.53"), "negative answer from the resolver's anycast address");
    let rec = &negative.1.records[0];
    assert_eq!((eid_from_wire(&rec.eid, rec.eid_mask_len).unwrap().to_string(), rec.ttl), ("128.0.0.0/1".into(), 15));
    let _ = w.ms;
}

#[test]
fn afi0_itr_rloc_unsubscribes() {
    let mut w = world(13, false);
    w.sim.run_for(Duration::from_secs(2));
    let mut req = request("10.1.1.7/32", 50);
    req.records[0].notify = true;
    req.xtr_id = Some(XtrId { xtr_id: 0x79, site_id: 9 });
    ask(&mut w, &req);
    w.sim.run_for(Duration::from_secs(1));
    assert_eq!(w.sim.node(w.ms).map_server().unwrap().subscriptions().len(), 1);
    req.nonce = 51;
    req.itr_rlocs = vec![Address::None];
    ask(&mut w, &req);
    w.sim.run_for(Duration::from_secs(1));
    assert_eq!(w.sim.node(w.ms).map_server().unwrap().subscriptions().len(), 0);
    let inbox = itr_inbox(&w);
    assert!(
        matches!(&inbox.last().unwrap().1, ControlMessage::MapNotify(n) if n.nonce == 51),
        "unsubscription confirmed to the requester: {inbox:?}"
    );
}
