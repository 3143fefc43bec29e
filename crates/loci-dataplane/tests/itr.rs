//! The ITR data plane in a private network namespace (root only; skipped otherwise): packets
//! that miss wait for their mapping and go out once it is published, and a burst of equal
//! packets leaves as LISP datagrams (UDP GSO on the way out) that all arrive, in order.
//!
//! The namespace belongs to the test's thread alone (`unshare`), so nothing is named and
//! nothing is left behind: it goes away with the thread and the devices in it.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use loci_core::eid::EidPrefix;
use loci_core::locator::Rloc;
use loci_core::map_cache::{MapCache, MapCacheConfig, Mapping};
use loci_dataplane::{Config, DataPlane, Instance, MissSink};
use loci_wire::Action;

/// Moves this thread (and what it spawns) into a new network namespace; false if not allowed.
fn private_netns() -> bool {
    // SAFETY: unshare takes no pointers; it only changes this thread's namespace.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return false;
    }
    Command::new("ip").args(["link", "set", "lo", "up"]).status().is_ok_and(|s| s.success())
}

/// One LISP datagram: (instance ID, inner packet).
fn recv_lisp(s: &UdpSocket) -> Option<(u32, Vec<u8>)> {
    let mut buf = [0u8; 2048];
    let (n, _) = s.recv_from(&mut buf).ok()?;
    let h = &buf[..n];
    (n > 8 && h[0] & 0x08 != 0).then(|| (u32::from_be_bytes([0, h[4], h[5], h[6]]), h[8..].to_vec()))
}

#[test]
fn misses_wait_for_their_mapping_and_bursts_arrive_whole() {
    let handle = std::thread::spawn(|| {
        if !private_netns() {
            eprintln!("not root: skipped");
            return;
        }
        // Our RLOC 127.0.0.1, the remote ETR's 127.0.0.2 (a socket here), EIDs 10.99.0.0/24.
        let etr = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
        // Room for the whole burst below.
        etr.set_recv_buffer_size(4 << 20).unwrap();
        etr.bind(&"127.0.0.2:4341".parse::<SocketAddr>().unwrap().into()).expect("ETR socket");
        let etr: UdpSocket = etr.into();
        let eids: ipnet::IpNet = "10.99.0.0/24".parse().unwrap();
        let config = Config {
            instances: vec![Instance { iid: 7, tun: "lt0".into(), routes: vec![eids], table: None }],
            rlocs: vec!["127.0.0.1".parse().unwrap()],
            itr: true,
            etr: false,
            underlay_mtu: 1500,
            flow_cache_slots: 64,
            proxy: Default::default(),
            mtu_method: Default::default(),
        };
        let mut cache = MapCache::new(MapCacheConfig::default());
        let misses = Arc::new(AtomicUsize::new(0));
        let m = misses.clone();
        let sink: MissSink = Arc::new(move |miss| {
            if (miss.iid, miss.dst) == (7, "10.99.0.9".parse::<IpAddr>().unwrap()) {
                m.fetch_add(1, Ordering::Relaxed);
            }
            true
        });
        let dp = DataPlane::start(&config, Some(cache.reader()), sink).expect("data plane");
        // A source address for the host's packets.
        let ok = Command::new("ip").args(["addr", "add", "10.98.0.1/32", "dev", "lt0"]).status();
        assert!(ok.is_ok_and(|s| s.success()));
        let host = UdpSocket::bind("10.98.0.1:0").unwrap();
        let dst = SocketAddr::new("10.99.0.9".parse().unwrap(), 9);

        // No mapping: four packets wait (a few per destination), the fifth is dropped.
        for i in 0..5u8 {
            host.send_to(&[i; 20], dst).unwrap();
        }
        let t = Instant::now();
        while misses.load(Ordering::Relaxed) == 0 && t.elapsed() < Duration::from_secs(2) {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(misses.load(Ordering::Relaxed) >= 1, "the miss was reported");
        etr.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        assert!(recv_lisp(&etr).is_none(), "nothing is sent before the mapping is in");
        let rloc = Rloc::new("127.0.0.2".parse().unwrap(), 1, 100, true);
        let now = Instant::now();
        let prefix = EidPrefix::new(7, eids);
        cache.insert(Mapping::new(prefix, vec![rloc], Action::NO_ACTION, Duration::from_secs(60), now), dst.ip());
        cache.publish();
        etr.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        for i in 0..4u8 {
            let (iid, inner) = recv_lisp(&etr).expect("a waiting packet");
            assert_eq!(iid, 7);
            assert_eq!(&inner[28..], &[i; 20], "in order: IPv4 + UDP headers, then the payload");
        }
        let s = dp.stats();
        assert_eq!((s.encapsulated, s.dropped(loci_dataplane::Drop::MapCacheMiss)), (4, 1), "{s:?}");

        // A burst of equal datagrams: all arrive, in order.
        for i in 0..200u16 {
            host.send_to(&[i.to_be_bytes(), [0xab; 2]].concat().repeat(100), dst).unwrap();
        }
        for i in 0..200u16 {
            let (_, inner) = recv_lisp(&etr).expect("a burst packet");
            assert_eq!(&inner[28..30], i.to_be_bytes(), "packet {i}");
            assert_eq!(inner.len(), 28 + 400);
        }
        assert_eq!(dp.stats().encapsulated, 204);
        dp.stop();
    });
    handle.join().expect("test thread");
}
