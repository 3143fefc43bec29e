//! Locator-status bits on the ETR's decapsulation path (RFC 9300 §10), when configured for a
//! private underlay: [`loci_core::probing::status_bits_change`] decides per packet, the control
//! plane applies what it reports (`Node::handle_status_bits`) and publishes a new map-cache.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use loci_core::map_cache::MapCacheReader;
use loci_core::packet;
use loci_core::probing::{status_bits_change, StatusBits};

/// Where status-bit changes go: returns false when the queue is full (the next packet with the
/// same bits reports them again). Called from worker threads; must not block.
pub type StatusSink = Arc<dyn Fn(StatusBits) -> bool + Send + Sync>;

/// The same change is reported again at most this often while the control plane has not
/// applied it yet (every packet of a stream carries it).
const HOLD: Duration = Duration::from_millis(100);

/// One ETR worker's watch on the locator-status bits.
pub struct StatusWatch {
    reader: MapCacheReader,
    sink: StatusSink,
    last: Option<(StatusBits, Instant)>,
}

impl StatusWatch {
    pub fn new(reader: MapCacheReader, sink: StatusSink) -> Self {
        StatusWatch { reader, sink, last: None }
    }

    /// A decapsulated packet of instance `iid` from `outer_src` with locator-status bits `lsb`
    /// (when its L bit was set). Only bits from a locator of the mapping cached for the inner
    /// source, and different from what that mapping shows, are reported.
    #[inline]
    pub fn check(&mut self, iid: u32, inner: &[u8], outer_src: IpAddr, lsb: Option<u32>) {
        if lsb.is_none() {
            return;
        }
        let Some((src, _)) = packet::addresses(inner) else { return };
        let change = status_bits_change(true, &self.reader.load(), iid, src, outer_src, lsb);
        let Some(c) = change else { return };
        let now = Instant::now();
        if self.last.is_some_and(|(l, at)| l == c && now.saturating_duration_since(at) < HOLD) {
            return;
        }
        if (self.sink)(c) {
            self.last = Some((c, now));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use loci_core::eid::EidPrefix;
    use loci_core::locator::Rloc;
    use loci_core::map_cache::{MapCache, MapCacheConfig, Mapping};
    use loci_wire::Action;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// An IPv4 header from `src`.
    fn inner(src: &str) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 20, 0, 0, 0, 0, 64, 17, 0, 0, 0, 0, 0, 0, 10, 1, 1, 10];
        p[12..16].copy_from_slice(&src.parse::<std::net::Ipv4Addr>().unwrap().octets());
        p
    }

    #[test]
    fn reports_changes_from_the_sites_locators_once_per_hold() {
        let now = Instant::now();
        let mut cache = MapCache::new(MapCacheConfig::default());
        let prefix = EidPrefix::new(0, "10.2.1.0/24".parse().unwrap());
        let rlocs = vec![Rloc::new(ip("203.0.113.1"), 1, 100, true), Rloc::new(ip("203.0.113.5"), 1, 100, true)];
        cache.insert(Mapping::new(prefix, rlocs, Action::NO_ACTION, Duration::from_secs(60), now), ip("10.2.1.5"));
        cache.publish();
        let seen: Arc<Mutex<Vec<StatusBits>>> = Arc::default();
        let s = seen.clone();
        let mut w = StatusWatch::new(
            cache.reader(),
            Arc::new(move |c| {
                s.lock().unwrap().push(c);
                true
            }),
        );
        let from_d1 = inner("10.2.1.5");
        // Both up, as cached: nothing to say. No L bit: nothing to look at.
        w.check(0, &from_d1, ip("203.0.113.1"), Some(0b11));
        w.check(0, &from_d1, ip("203.0.113.1"), None);
        // The second locator down, said by a stranger: ignored; by the first locator: reported,
        // once while the control plane has not applied it.
        w.check(0, &from_d1, ip("198.51.100.66"), Some(0b01));
        w.check(0, &from_d1, ip("203.0.113.1"), Some(0b01));
        w.check(0, &from_d1, ip("203.0.113.1"), Some(0b01));
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert_eq!((seen[0].prefix, seen[0].from, seen[0].bits), (prefix, ip("203.0.113.1"), 0b01));
    }
}
