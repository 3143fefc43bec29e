//! Packets waiting for a mapping: an ITR keeps the first few packets to a destination it has
//! no mapping for (a TCP SYN, a DNS query) and sends them once the Map-Reply is in, instead of
//! dropping them and leaving the sender to retransmit a second later.
//!
//! Bounded twice, so that a flood of packets to random EIDs costs a fixed amount of memory:
//! at most [`PER_DESTINATION`] packets per (IID, destination) and [`TOTAL`] in all; buffers are
//! allocated on first use and reused. A packet that finds no room is dropped (and counted by
//! the caller); one that waits longer than [`MAX_WAIT`] is dropped as expired.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

pub const PER_DESTINATION: usize = 4;
pub const TOTAL: usize = 1024;
/// A Map-Request is retransmitted after 1 s (RFC 9301 §5.3): this covers the first retry.
pub const MAX_WAIT: Duration = Duration::from_millis(2500);
/// While packets wait for mappings, the ITR looks for new map-cache snapshots this often even
/// when no packet arrives.
pub const POLL: Duration = Duration::from_millis(5);
/// And goes through the waiting packets (for expiry) this often when no new snapshot came.
pub const SWEEP: Duration = Duration::from_millis(100);

type Key = (u32, IpAddr);

struct Waiting {
    since: Instant,
    slots: [u16; PER_DESTINATION],
    n: usize,
}

pub struct MissQueue {
    bufs: Vec<Vec<u8>>,
    free: Vec<u16>,
    waiting: HashMap<Key, Waiting>,
    capacity: usize,
    per_destination: usize,
}

impl MissQueue {
    pub fn new(capacity: usize, per_destination: usize) -> MissQueue {
        let capacity = capacity.min(usize::from(u16::MAX));
        MissQueue {
            bufs: Vec::new(),
            free: Vec::with_capacity(capacity),
            waiting: HashMap::with_capacity(capacity),
            capacity,
            per_destination: per_destination.min(PER_DESTINATION),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Keeps a copy of `packet` for (iid, dst); false when there is no room.
    pub fn push(&mut self, iid: u32, dst: IpAddr, packet: &[u8], now: Instant) -> bool {
        if self.per_destination == 0 {
            return false;
        }
        let at_limit = self.waiting.get(&(iid, dst)).is_some_and(|w| w.n >= self.per_destination);
        if at_limit {
            return false;
        }
        let slot = match self.free.pop() {
            Some(s) => s,
            None if self.bufs.len() < self.capacity => {
                self.bufs.push(Vec::new());
                (self.bufs.len() - 1) as u16
            }
            None => return false,
        };
        let b = &mut self.bufs[usize::from(slot)];
        b.clear();
        b.extend_from_slice(packet);
        let w = self.waiting.entry((iid, dst)).or_insert(Waiting { since: now, slots: [0; PER_DESTINATION], n: 0 });
        w.slots[w.n] = slot;
        w.n += 1;
        true
    }

    /// Takes out the packets of every destination `ready` says has a mapping now (their slot
    /// numbers go to `out`, in arrival order per destination; read them with [`Self::packet`]
    /// and give them back with [`Self::release`]) and drops those that waited too long.
    /// Returns how many expired.
    pub fn take_ready(
        &mut self,
        now: Instant,
        mut ready: impl FnMut(u32, IpAddr) -> bool,
        out: &mut Vec<u16>,
    ) -> usize {
        let mut expired = 0;
        let free = &mut self.free;
        self.waiting.retain(|&(iid, dst), w| {
            let slots = &w.slots[..w.n];
            if ready(iid, dst) {
                out.extend_from_slice(slots);
                false
            } else if now.saturating_duration_since(w.since) > MAX_WAIT {
                expired += slots.len();
                free.extend_from_slice(slots);
                false
            } else {
                true
            }
        });
        expired
    }

    pub fn packet(&self, slot: u16) -> &[u8] {
        &self.bufs[usize::from(slot)]
    }

    pub fn release(&mut self, slot: u16) {
        self.free.push(slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn bounded_per_destination_and_in_total() {
        let t0 = Instant::now();
        let mut q = MissQueue::new(6, 4);
        for i in 0..4u8 {
            assert!(q.push(0, ip("10.0.0.1"), &[i], t0));
        }
        assert!(!q.push(0, ip("10.0.0.1"), &[9], t0), "per destination");
        assert!(q.push(1, ip("10.0.0.1"), &[10], t0), "another instance is another destination");
        assert!(q.push(0, ip("10.0.0.2"), &[20], t0));
        assert!(!q.push(0, ip("10.0.0.3"), &[30], t0), "in total");
        let mut out = Vec::new();
        let expired = q.take_ready(t0, |iid, dst| iid == 0 && dst == ip("10.0.0.1"), &mut out);
        assert_eq!(expired, 0);
        let got: Vec<u8> = out.iter().map(|&s| q.packet(s)[0]).collect();
        assert_eq!(got, [0, 1, 2, 3], "in arrival order");
        for s in out.drain(..) {
            q.release(s);
        }
        assert!(q.push(0, ip("10.0.0.3"), &[30], t0), "room again");
        // The rest expires.
        let expired = q.take_ready(t0 + MAX_WAIT + Duration::from_millis(1), |_, _| false, &mut out);
        assert_eq!((expired, out.len()), (3, 0));
        assert!(q.is_empty());
        assert_eq!(q.bufs.len(), 6, "buffers reused, never more than the capacity");
    }

    #[test]
    fn zero_capacity_queues_nothing() {
        let mut q = MissQueue::new(0, 4);
        assert!(!q.push(0, ip("10.0.0.1"), &[1], Instant::now()));
        let mut q = MissQueue::new(8, 0);
        assert!(!q.push(0, ip("10.0.0.1"), &[1], Instant::now()));
    }
}
