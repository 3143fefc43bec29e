//! The ITR's EID-to-RLOC map-cache (RFC 9300 §6): mappings learnt from Map-Replies, looked up
//! per packet by longest-prefix match, per instance ID.
//!
//! Two halves:
//!
//! * [`MapCache`], owned by the control plane (the ITR role): inserts, removes, TTL expiry,
//!   refresh scheduling and a bounded size with least-recently-used eviction.
//! * [`Snapshot`], an immutable view the data plane reads without locks. The cache publishes a
//!   new one (through `arc-swap`) after each batch of changes; every snapshot has a generation
//!   number, so per-thread flow caches ([`crate::flow_cache`]) know when to forget.
//!
//! Publishing must not copy a million entries per Map-Reply, so a snapshot is a large shared
//! `base` table plus a small `delta` of the changes since (an entry, or a tombstone for a
//! removal). Both are read-only [`FrozenTable`]s (direct-indexed address ranges, a few cache
//! misses per lookup however large the table) rather than tries. Publishing builds the delta's;
//! when the delta grows past about sqrt(2n) entries the base is rebuilt from the authoritative
//! table, so the cost per change stays near O(sqrt n) amortized and a lookup is one table
//! lookup (two while a delta exists).
//!
//! Use tracking: every [`Mapping`] carries two bits the data plane sets with one relaxed load
//! (and a store only when a bit is still clear, so a hot entry's cache line is not written per
//! packet). Bit 0 is the reference bit of a CLOCK sweep (second-chance eviction, the classic
//! lock-free approximation of LRU); bit 1 says "used since the last refresh checkpoint" and
//! decides whether an entry is refreshed before its TTL runs out or left to expire. No clock
//! and no channel on the packet path: the control plane reads and clears the bits on its own
//! timers.
//!
//! Locator state: the ITR's own verdict on a locator (RLOC probing, [`crate::probing`];
//! locator-status bits) is folded into the published mappings ([`Rloc::down`]), so the data
//! plane skips a dead locator at its next lookup: a verdict republishes the entries that use the
//! locator, keeping their timers. An index from locator to entries makes that, and the list of
//! locators to probe, independent of the cache size.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use loci_wire::Action;

use crate::eid::EidPrefix;
use crate::locator::{choose, Families, Rloc};
use crate::lpm::FrozenTable;
use crate::prefix_table::PrefixTable;

const USED_CLOCK: u8 = 1;
const USED_RECENTLY: u8 = 2;

/// One cached mapping: an EID prefix and its locators, or a negative entry with an action.
/// Immutable once published, except for the use bits.
#[derive(Debug)]
pub struct Mapping {
    pub prefix: EidPrefix,
    /// In Map-Reply order (the ordinals of locator-status bits). Empty for a negative entry.
    pub rlocs: Box<[Rloc]>,
    /// What to do when there are no locators (RFC 9301 §5.4 ACT).
    pub action: Action,
    pub authoritative: bool,
    pub map_version: u16,
    /// The Map-Reply's E bit: the site echoes nonces (RFC 9300 §10.1).
    pub echo_nonce: bool,
    pub ttl: Duration,
    pub installed: Instant,
    pub expires: Instant,
    used: AtomicU8,
    /// Ordinals the locator-status bits last said were down (RFC 9300 §10); reset by a new
    /// Map-Reply.
    lsb_down: u32,
}

impl Mapping {
    /// A mapping installed at `now` for `ttl` (capped at a century, so the expiry is a valid
    /// `Instant`; the cache caps it further).
    pub fn new(prefix: EidPrefix, rlocs: Vec<Rloc>, action: Action, ttl: Duration, now: Instant) -> Self {
        let ttl = ttl.min(Duration::from_secs(100 * 365 * 86_400));
        Mapping {
            prefix,
            rlocs: rlocs.into_boxed_slice(),
            action,
            authoritative: false,
            map_version: 0,
            echo_nonce: false,
            ttl,
            installed: now,
            expires: now + ttl,
            used: AtomicU8::new(0),
            lsb_down: 0,
        }
    }

    pub fn is_negative(&self) -> bool {
        self.rlocs.is_empty()
    }

    /// Records that a packet used this mapping (data plane, any thread, per packet).
    #[inline]
    pub fn mark_used(&self) {
        const BOTH: u8 = USED_CLOCK | USED_RECENTLY;
        if self.used.load(Ordering::Relaxed) != BOTH {
            self.used.fetch_or(BOTH, Ordering::Relaxed);
        }
    }

    /// The same mapping with other locator states (use bits and timers kept).
    fn with_state(&self, rlocs: Box<[Rloc]>, lsb_down: u32) -> Mapping {
        Mapping {
            prefix: self.prefix,
            rlocs,
            action: self.action,
            authoritative: self.authoritative,
            map_version: self.map_version,
            echo_nonce: self.echo_nonce,
            ttl: self.ttl,
            installed: self.installed,
            expires: self.expires,
            used: AtomicU8::new(self.used.load(Ordering::Relaxed)),
            lsb_down,
        }
    }

    /// The ordinals (bit i: the i-th locator) the locator-status bits last said were down.
    pub fn status_bits_down(&self) -> u32 {
        self.lsb_down
    }

    /// Whether a packet used this mapping since the last refresh checkpoint.
    pub fn used_recently(&self) -> bool {
        self.used.load(Ordering::Relaxed) & USED_RECENTLY != 0
    }

    /// What to do with a packet of the flow with hash `flow`.
    #[inline]
    pub fn forward(&self, flow: u32, families: Families) -> Forward {
        if self.rlocs.is_empty() {
            return match self.action {
                Action::NATIVE_FORWARD => Forward::NativeForward,
                Action::SEND_MAP_REQUEST => Forward::Miss,
                // No-Action: "no packet encapsulation occurs"; the drop codes say why.
                _ => Forward::Drop(DropReason::NegativeAction),
            };
        }
        match choose(&self.rlocs, flow, families) {
            Some(i) => Forward::Encapsulate(self.rlocs[i].addr),
            None => Forward::Drop(DropReason::NoUsableLocator),
        }
    }
}

/// The per-packet verdict of the map-cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forward {
    /// Encapsulate to this RLOC.
    Encapsulate(IpAddr),
    /// Not a LISP destination: forward natively (or to a PETR when one is configured).
    NativeForward,
    /// No mapping, or one that asks for a Map-Request: tell the control plane
    /// (`Node::handle_miss`) and drop or queue the packet.
    Miss,
    Drop(DropReason),
}

/// Why the map-cache says to drop a packet (for counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// A negative entry whose action is drop (or no-action).
    NegativeAction,
    /// A mapping whose locators are all unreachable, priority 255 or of a family we lack.
    NoUsableLocator,
}

impl DropReason {
    pub fn name(self) -> &'static str {
        match self {
            DropReason::NegativeAction => "negative-action-drop",
            DropReason::NoUsableLocator => "no-usable-locator",
        }
    }
}

/// An immutable view of the map-cache for the data plane.
#[derive(Debug, Default)]
pub struct Snapshot {
    generation: u64,
    base: Arc<FrozenTable<Arc<Mapping>>>,
    /// Changes since `base`: a newer mapping, or `None` where the base entry was removed.
    delta: FrozenTable<Option<Arc<Mapping>>>,
}

impl Snapshot {
    /// Changes with every publication; a flow-cache entry made from an older generation is stale.
    #[inline]
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The most specific mapping covering `dst` in instance `iid`.
    #[inline]
    pub fn lookup(&self, iid: u32, dst: IpAddr) -> Option<&Arc<Mapping>> {
        overlay_lookup(&self.base, &self.delta, iid, dst)
    }

    /// What to do with a packet to `dst` of the flow with hash `flow`, marking the mapping used.
    #[inline]
    pub fn forward(&self, iid: u32, dst: IpAddr, flow: u32, families: Families) -> Forward {
        match self.lookup(iid, dst) {
            Some(m) => {
                m.mark_used();
                m.forward(flow, families)
            }
            None => Forward::Miss,
        }
    }
}

/// Longest match in `base` overridden by `delta`: the covering entries of both, most specific
/// first, where a delta entry replaces the base entry of its prefix and a tombstone hides it.
/// Usually the first step decides (the delta has nothing covering `dst`, or its most specific
/// entry is a mapping at least as long as the base's).
fn overlay_lookup<'a>(
    base: &'a FrozenTable<Arc<Mapping>>,
    delta: &'a FrozenTable<Option<Arc<Mapping>>>,
    iid: u32,
    dst: IpAddr,
) -> Option<&'a Arc<Mapping>> {
    let mut d = delta.chain(iid, dst).peekable();
    if d.peek().is_none() {
        return base.lookup(iid, dst);
    }
    let mut b = base.chain(iid, dst).peekable();
    loop {
        let dlen = d.peek().map(|(len, _)| *len);
        let blen = b.peek().map(|(len, _)| *len);
        match (dlen, blen) {
            (None, _) => return b.next().map(|(_, m)| m),
            (Some(dl), Some(bl)) if bl > dl => return b.next().map(|(_, m)| m),
            (Some(dl), bl) => {
                if bl == Some(dl) {
                    // The delta's version of this prefix stands in for the base's.
                    b.next();
                }
                if let Some((_, Some(m))) = d.next() {
                    return Some(m);
                }
            }
        }
    }
}

/// The data plane's read handle: cheap to clone, one per worker.
#[derive(Debug, Clone)]
pub struct MapCacheReader {
    current: Arc<ArcSwap<Snapshot>>,
}

impl MapCacheReader {
    /// The current snapshot. Hold the guard for a batch of packets, not longer (it pins that
    /// snapshot in memory).
    #[inline]
    pub fn load(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.current.load()
    }

    /// The current snapshot as an owned `Arc`.
    pub fn load_full(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }
}

/// Map-cache bounds and timers.
#[derive(Debug, Clone)]
pub struct MapCacheConfig {
    /// Most entries held; inserting more evicts the least recently used.
    pub max_entries: usize,
    /// Cap on any TTL (a Record TTL of 0xffffffff means "decide locally": this).
    pub max_ttl: Duration,
    /// An entry used within this long before its refresh point is refreshed.
    pub use_window: Duration,
}

impl Default for MapCacheConfig {
    fn default() -> Self {
        MapCacheConfig {
            max_entries: 100_000,
            max_ttl: Duration::from_secs(24 * 3600),
            use_window: Duration::from_secs(60),
        }
    }
}

/// What a map-cache timer found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheEvent {
    /// The entry was used recently and its TTL runs out soon: send a Map-Request for `eid`.
    RefreshDue { prefix: EidPrefix, eid: IpAddr },
    /// The entry's TTL ran out and it was removed.
    Expired(EidPrefix),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKind {
    ClearUse,
    Refresh,
    Expire,
}

/// Control-plane state of one entry next to its published mapping.
#[derive(Debug)]
struct Entry {
    mapping: Arc<Mapping>,
    /// The EID whose Map-Request brought the entry (a refresh asks for it again).
    eid: IpAddr,
    /// Slot in the CLOCK ring.
    slot: usize,
    /// Distinguishes this installation's timers from those of an older one.
    stamp: u64,
}

/// The ordinals among the first `n` that locator-status bits `bits` say are down.
pub fn status_bits_down(bits: u32, n: usize) -> u32 {
    let mask = if n >= 32 { u32::MAX } else { (1u32 << n) - 1 };
    !bits & mask
}

/// Whether the locator is one the data plane may choose, and so worth probing.
fn candidate(r: &Rloc) -> bool {
    r.reachable && r.priority != crate::locator::UNUSABLE_PRIORITY
}

/// Why locator-status bits were not applied (RFC 9300 §10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusBitsRefused {
    /// No cached mapping at that prefix (it expired or changed since).
    NoMapping,
    /// The packet did not come from one of the mapping's locators: spoofed or stale.
    NotALocator,
}

/// When, in a TTL, an entry in use is refreshed: `margin` before expiry, leaving time for
/// retransmissions (a tenth of the TTL, between 1 s and 1 min).
pub fn refresh_margin(ttl: Duration) -> Duration {
    (ttl / 10).clamp(Duration::from_secs(1), Duration::from_secs(60)).min(ttl)
}

/// The authoritative map-cache (control plane).
pub struct MapCache {
    config: MapCacheConfig,
    entries: PrefixTable<Entry>,
    /// What the snapshots share; rebuilt from `entries` when the delta grows large.
    base: Arc<FrozenTable<Arc<Mapping>>>,
    delta: PrefixTable<Option<Arc<Mapping>>>,
    current: Arc<ArcSwap<Snapshot>>,
    generation: u64,
    dirty: bool,
    /// CLOCK ring of prefixes; `None` marks a free slot.
    ring: Vec<Option<EidPrefix>>,
    free: Vec<usize>,
    hand: usize,
    timers: BinaryHeap<Reverse<(Instant, TimerKind, u64, EidPrefix)>>,
    next_stamp: u64,
    evictions: u64,
    /// Locators probing found down.
    probe_down: HashSet<IpAddr>,
    /// Candidate locator -> the entries using it.
    by_rloc: HashMap<IpAddr, BTreeSet<EidPrefix>>,
    /// Locators that appeared in (`true`) or left (`false`) the cache since the last
    /// [`MapCache::take_locator_changes`], when someone reads them.
    rloc_changes: Vec<(IpAddr, bool)>,
    track_locators: bool,
}

impl MapCache {
    pub fn new(config: MapCacheConfig) -> Self {
        MapCache {
            config,
            entries: PrefixTable::new(),
            base: Arc::default(),
            delta: PrefixTable::new(),
            current: Arc::new(ArcSwap::from_pointee(Snapshot::default())),
            generation: 0,
            dirty: false,
            ring: Vec::new(),
            free: Vec::new(),
            hand: 0,
            timers: BinaryHeap::new(),
            next_stamp: 0,
            evictions: 0,
            probe_down: HashSet::new(),
            by_rloc: HashMap::new(),
            rloc_changes: Vec::new(),
            track_locators: false,
        }
    }

    pub fn config(&self) -> &MapCacheConfig {
        &self.config
    }

    /// A handle for the data plane.
    pub fn reader(&self) -> MapCacheReader {
        MapCacheReader { current: self.current.clone() }
    }

    /// The snapshot last published.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// The generation of the last published snapshot.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries evicted to make room, since the start.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// The mapping at exactly `prefix`.
    pub fn get(&self, prefix: &EidPrefix) -> Option<&Arc<Mapping>> {
        self.entries.get(prefix).map(|e| &e.mapping)
    }

    /// The most specific mapping covering `dst` (the authoritative copy, published or not).
    pub fn lookup(&self, iid: u32, dst: IpAddr) -> Option<(EidPrefix, &Arc<Mapping>)> {
        self.entries.longest_match(iid, dst).map(|(p, e)| (p, &e.mapping))
    }

    /// Every mapping, by IID, IPv4 before IPv6, in address order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Mapping>> + '_ {
        self.entries.iter().map(|(_, e)| &e.mapping)
    }

    /// Clamps a Record TTL in minutes to what this cache keeps (0xffffffff: the maximum).
    pub fn ttl_from_minutes(&self, minutes: u32) -> Duration {
        if minutes == u32::MAX {
            return self.config.max_ttl;
        }
        Duration::from_secs(u64::from(minutes) * 60).min(self.config.max_ttl)
    }

    /// Installs `mapping` (replacing any entry at its prefix), learnt by asking for `eid`.
    /// Returns the prefix evicted to make room, if one was. A zero TTL removes instead (RFC 9301
    /// §5.4: "the entry MUST be removed from the cache immediately").
    pub fn insert(&mut self, mut mapping: Mapping, eid: IpAddr) -> Option<EidPrefix> {
        let prefix = mapping.prefix;
        if mapping.ttl.is_zero() {
            self.remove(&prefix);
            return None;
        }
        mapping.ttl = mapping.ttl.min(self.config.max_ttl);
        mapping.expires = mapping.installed + mapping.ttl;
        // RFC 9301 §5.5: a less-specific prefix expires no later than its cached more-specifics,
        // so the set stays whole.
        let inner = self.entries.within(&prefix).filter(|(p, _)| *p != prefix).map(|(_, e)| e.mapping.expires).min();
        if let Some(t) = inner {
            mapping.expires = mapping.expires.min(t);
        }
        let mut evicted = None;
        let (slot, used) = match self.entries.get(&prefix) {
            Some(old) => (old.slot, old.mapping.used.load(Ordering::Relaxed)),
            None => {
                if self.entries.len() >= self.config.max_entries.max(1) {
                    evicted = self.evict_one();
                }
                (self.take_slot(prefix), 0)
            }
        };
        // A replaced mapping keeps its use history (a refresh must not look like disuse).
        mapping.used = AtomicU8::new(used);
        // New locators, new ordinals: earlier status bits no longer apply; probing still does.
        let mut rlocs = std::mem::take(&mut mapping.rlocs);
        mapping.lsb_down = 0;
        self.apply_state(&mut rlocs, 0);
        mapping.rlocs = rlocs;
        if let Some(old) = self.entries.get(&prefix).map(|e| e.mapping.clone()) {
            self.unindex(&old);
        }
        self.index(&mapping);
        let stamp = self.next_stamp;
        self.next_stamp += 1;
        self.schedule(&mapping, stamp);
        let mapping = Arc::new(mapping);
        self.delta.insert(prefix, Some(mapping.clone()));
        self.entries.insert(prefix, Entry { mapping, eid, slot, stamp });
        self.dirty = true;
        evicted
    }

    fn schedule(&mut self, m: &Mapping, stamp: u64) {
        let p = m.prefix;
        let life = m.expires.saturating_duration_since(m.installed);
        let refresh_at = m.expires - refresh_margin(life);
        let clear_at = refresh_at.checked_sub(self.config.use_window).filter(|&t| t > m.installed);
        if let Some(t) = clear_at {
            self.timers.push(Reverse((t, TimerKind::ClearUse, stamp, p)));
        }
        self.timers.push(Reverse((refresh_at, TimerKind::Refresh, stamp, p)));
        self.timers.push(Reverse((m.expires, TimerKind::Expire, stamp, p)));
    }

    fn take_slot(&mut self, prefix: EidPrefix) -> usize {
        match self.free.pop() {
            Some(i) => {
                self.ring[i] = Some(prefix);
                i
            }
            None => {
                self.ring.push(Some(prefix));
                self.ring.len() - 1
            }
        }
    }

    /// Removes the least recently used entry (CLOCK: an entry used since the hand last passed
    /// gets a second chance and loses its reference bit).
    fn evict_one(&mut self) -> Option<EidPrefix> {
        for _ in 0..2 * self.ring.len() + 1 {
            if self.ring.is_empty() {
                return None;
            }
            self.hand %= self.ring.len();
            let slot = self.hand;
            self.hand += 1;
            let Some(prefix) = self.ring[slot] else { continue };
            let Some(e) = self.entries.get(&prefix) else { continue };
            if e.mapping.used.fetch_and(!USED_CLOCK, Ordering::Relaxed) & USED_CLOCK == 0 {
                self.remove(&prefix);
                self.evictions += 1;
                return Some(prefix);
            }
        }
        None
    }

    /// Removes the entry at exactly `prefix`.
    pub fn remove(&mut self, prefix: &EidPrefix) -> Option<Arc<Mapping>> {
        let e = self.entries.remove(prefix)?;
        self.unindex(&e.mapping);
        self.ring[e.slot] = None;
        self.free.push(e.slot);
        if self.base.contains_key(prefix) {
            self.delta.insert(*prefix, None);
        } else {
            self.delta.remove(prefix);
        }
        self.dirty = true;
        // Timers of a removed entry are skipped when they fire (the stamp no longer matches).
        Some(e.mapping)
    }

    /// Sets each locator's `down` from the probing verdicts and the status-bit mask.
    fn apply_state(&self, rlocs: &mut [Rloc], lsb_down: u32) {
        for (i, r) in rlocs.iter_mut().enumerate() {
            let lsb = i < 32 && lsb_down >> i & 1 == 1;
            r.down = lsb || self.probe_down.contains(&r.addr);
        }
    }

    fn index(&mut self, m: &Mapping) {
        for r in m.rlocs.iter().filter(|r| candidate(r)) {
            let set = self.by_rloc.entry(r.addr).or_default();
            if set.is_empty() && self.track_locators {
                self.rloc_changes.push((r.addr, true));
            }
            set.insert(m.prefix);
        }
    }

    fn unindex(&mut self, m: &Mapping) {
        for r in m.rlocs.iter().filter(|r| candidate(r)) {
            if let Some(set) = self.by_rloc.get_mut(&r.addr) {
                set.remove(&m.prefix);
                if set.is_empty() {
                    self.by_rloc.remove(&r.addr);
                    if self.track_locators {
                        self.rloc_changes.push((r.addr, false));
                    }
                }
            }
        }
    }

    /// Republishes the entry at `prefix` with its locator states recomputed (and new status
    /// bits, when given), if anything changed.
    fn restate(&mut self, prefix: &EidPrefix, lsb_down: Option<u32>) -> bool {
        let Some(e) = self.entries.get(prefix) else { return false };
        let lsb_down = lsb_down.unwrap_or(e.mapping.lsb_down);
        let mut rlocs = e.mapping.rlocs.clone();
        self.apply_state(&mut rlocs, lsb_down);
        if rlocs == e.mapping.rlocs && lsb_down == e.mapping.lsb_down {
            return false;
        }
        let m = Arc::new(e.mapping.with_state(rlocs, lsb_down));
        if let Some(e) = self.entries.get_mut(prefix) {
            e.mapping = m.clone();
        }
        self.delta.insert(*prefix, Some(m));
        self.dirty = true;
        true
    }

    /// Marks locator `addr` down (or up again) in every entry that uses it, as RLOC probing
    /// decided. Returns how many entries changed; the caller publishes.
    pub fn set_locator_down(&mut self, addr: IpAddr, down: bool) -> usize {
        let changed = if down { self.probe_down.insert(addr) } else { self.probe_down.remove(&addr) };
        if !changed {
            return 0;
        }
        let prefixes: Vec<EidPrefix> = self.by_rloc.get(&addr).map(|s| s.iter().copied().collect()).unwrap_or_default();
        prefixes.iter().filter(|p| self.restate(p, None)).count()
    }

    /// Whether probing found `addr` down.
    pub fn locator_down(&self, addr: IpAddr) -> bool {
        self.probe_down.contains(&addr)
    }

    /// Applies locator-status bits (RFC 9300 §10) that a packet from `from` carried for the
    /// entry at `prefix`: bit i is the state of the i-th locator of the last Map-Reply. Only the
    /// mapping's own locators may say so. Returns whether anything changed; the caller
    /// publishes.
    pub fn set_status_bits(&mut self, prefix: &EidPrefix, from: IpAddr, bits: u32) -> Result<bool, StatusBitsRefused> {
        let e = self.entries.get(prefix).ok_or(StatusBitsRefused::NoMapping)?;
        if !e.mapping.rlocs.iter().any(|r| r.addr == from) {
            return Err(StatusBitsRefused::NotALocator);
        }
        let down = status_bits_down(bits, e.mapping.rlocs.len());
        Ok(self.restate(prefix, Some(down)))
    }

    /// The locators the data plane may choose, each with one entry that uses it (the EID-record
    /// of its probe), in no particular order.
    pub fn locators(&self) -> impl Iterator<Item = (IpAddr, EidPrefix)> + '_ {
        self.by_rloc.iter().filter_map(|(a, s)| Some((*a, *s.first()?)))
    }

    /// One entry using locator `addr`, if any does.
    pub fn locator_entry(&self, addr: IpAddr) -> Option<EidPrefix> {
        self.by_rloc.get(&addr)?.first().copied()
    }

    /// How many entries use locator `addr`.
    pub fn locator_uses(&self, addr: IpAddr) -> usize {
        self.by_rloc.get(&addr).map_or(0, BTreeSet::len)
    }

    /// Locators that appeared (`true`) or left (`false`) since the last call, in order. The
    /// first call starts the log with every locator present.
    pub fn take_locator_changes(&mut self) -> Vec<(IpAddr, bool)> {
        if !std::mem::replace(&mut self.track_locators, true) {
            return self.by_rloc.keys().map(|&a| (a, true)).collect();
        }
        std::mem::take(&mut self.rloc_changes)
    }

    /// When `handle_timeout` should next run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((t, ..))| *t)
    }

    /// Runs the timers due at `now`: clears use bits at checkpoints, reports entries due for
    /// refresh, removes expired entries.
    pub fn handle_timeout(&mut self, now: Instant, events: &mut Vec<CacheEvent>) {
        while let Some(&Reverse((t, kind, stamp, prefix))) = self.timers.peek() {
            if t > now {
                break;
            }
            self.timers.pop();
            let Some(e) = self.entries.get(&prefix).filter(|e| e.stamp == stamp) else { continue };
            match kind {
                TimerKind::ClearUse => {
                    e.mapping.used.fetch_and(!USED_RECENTLY, Ordering::Relaxed);
                }
                TimerKind::Refresh => {
                    if e.mapping.used_recently() {
                        events.push(CacheEvent::RefreshDue { prefix, eid: e.eid });
                    }
                }
                TimerKind::Expire => {
                    self.remove(&prefix);
                    events.push(CacheEvent::Expired(prefix));
                }
            }
        }
        // Lazy deletion leaves timers of replaced entries behind; rebuild when they dominate.
        if self.timers.len() > 8 * self.entries.len() + 1024 {
            let live: Vec<(Arc<Mapping>, u64)> =
                self.entries.iter().map(|(_, e)| (e.mapping.clone(), e.stamp)).collect();
            self.timers.clear();
            for (m, stamp) in live {
                self.schedule(&m, stamp);
            }
        }
    }

    /// Publishes the changes since the last call as a new snapshot (no-op when nothing
    /// changed). Call once per batch of changes.
    pub fn publish(&mut self) {
        if !self.dirty {
            return;
        }
        self.dirty = false;
        self.generation += 1;
        let threshold = 64usize.max(((2 * self.entries.len()) as f64).sqrt() as usize);
        if self.delta.len() > threshold {
            // Rebuild the base from the authoritative table (the old one stays alive while
            // readers hold it).
            self.base = Arc::new(self.entries.iter().map(|(p, e)| (p, e.mapping.clone())).collect());
            self.delta.clear();
        }
        self.current.store(Arc::new(Snapshot {
            generation: self.generation,
            base: self.base.clone(),
            delta: self.delta.iter().map(|(p, v)| (p, v.clone())).collect(),
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(s: &str) -> EidPrefix {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn mapping(prefix: &str, rloc: &str, ttl: u64, now: Instant) -> Mapping {
        let rlocs = vec![Rloc::new(ip(rloc), 1, 1, true)];
        Mapping::new(p(prefix), rlocs, Action::NO_ACTION, Duration::from_secs(ttl), now)
    }

    fn rloc_of(s: &Snapshot, iid: u32, dst: &str) -> Option<IpAddr> {
        s.lookup(iid, ip(dst)).map(|m| m.rlocs[0].addr)
    }

    #[test]
    fn publish_lookup_and_generations() {
        let t0 = Instant::now();
        let mut c = MapCache::new(MapCacheConfig::default());
        let r = c.reader();
        assert_eq!(r.load().generation(), 0);
        c.insert(mapping("10.1.0.0/16", "192.0.2.1", 60, t0), ip("10.1.1.1"));
        c.insert(mapping("[7]10.1.0.0/16", "192.0.2.7", 60, t0), ip("10.1.1.1"));
        assert!(r.load().lookup(0, ip("10.1.1.1")).is_none(), "not visible before publish");
        c.publish();
        let s = r.load_full();
        assert_eq!(s.generation(), 1);
        assert_eq!(rloc_of(&s, 0, "10.1.200.1"), Some(ip("192.0.2.1")));
        assert_eq!(rloc_of(&s, 7, "10.1.200.1"), Some(ip("192.0.2.7")), "IIDs are separate");
        assert_eq!(rloc_of(&s, 8, "10.1.200.1"), None);
        assert_eq!(s.forward(0, ip("10.2.0.1"), 1, Families::ALL), Forward::Miss);
        c.publish();
        assert_eq!(r.load().generation(), 1, "nothing changed, nothing published");
        c.remove(&p("10.1.0.0/16"));
        c.publish();
        assert_eq!(r.load().generation(), 2);
        assert_eq!(rloc_of(&r.load(), 0, "10.1.200.1"), None);
        assert_eq!(rloc_of(&s, 0, "10.1.200.1"), Some(ip("192.0.2.1")), "old snapshots are immutable");
    }

    #[test]
    fn negative_actions_and_unusable_locators() {
        let t0 = Instant::now();
        let neg = |a| Mapping::new(p("10.0.0.0/8"), vec![], a, Duration::from_secs(60), t0);
        assert_eq!(neg(Action::NATIVE_FORWARD).forward(1, Families::ALL), Forward::NativeForward);
        assert_eq!(neg(Action::SEND_MAP_REQUEST).forward(1, Families::ALL), Forward::Miss);
        assert_eq!(
            neg(Action::DROP_POLICY_DENIED).forward(1, Families::ALL),
            Forward::Drop(DropReason::NegativeAction)
        );
        assert_eq!(neg(Action::NO_ACTION).forward(1, Families::ALL), Forward::Drop(DropReason::NegativeAction));
        let m = mapping("10.0.0.0/8", "2001:db8::1", 60, t0);
        assert_eq!(m.forward(1, Families { v4: true, v6: false }), Forward::Drop(DropReason::NoUsableLocator));
        assert_eq!(m.forward(1, Families::ALL), Forward::Encapsulate(ip("2001:db8::1")));
    }

    #[test]
    fn expiry_refresh_only_when_used() {
        let t0 = Instant::now();
        let mut c = MapCache::new(MapCacheConfig { use_window: Duration::from_secs(60), ..Default::default() });
        c.insert(mapping("10.1.0.0/16", "192.0.2.1", 600, t0), ip("10.1.1.1"));
        c.insert(mapping("10.2.0.0/16", "192.0.2.2", 600, t0), ip("10.2.2.2"));
        c.publish();
        let mut ev = Vec::new();
        // Used early only: the checkpoint at 600 - 60 - 60 s clears that.
        c.snapshot().lookup(0, ip("10.1.1.1")).unwrap().mark_used();
        c.handle_timeout(t0 + Duration::from_secs(500), &mut ev);
        assert!(ev.is_empty());
        // 10.2/16 is used inside the window.
        c.snapshot().lookup(0, ip("10.2.9.9")).unwrap().mark_used();
        c.handle_timeout(t0 + Duration::from_secs(540), &mut ev);
        assert_eq!(ev, [CacheEvent::RefreshDue { prefix: p("10.2.0.0/16"), eid: ip("10.2.2.2") }]);
        ev.clear();
        assert_eq!(c.poll_timeout(), Some(t0 + Duration::from_secs(600)));
        c.handle_timeout(t0 + Duration::from_secs(600), &mut ev);
        assert_eq!(ev, [CacheEvent::Expired(p("10.1.0.0/16")), CacheEvent::Expired(p("10.2.0.0/16"))]);
        assert!(c.is_empty());
        // A refreshed entry's old timers do nothing.
        c.insert(mapping("10.3.0.0/16", "192.0.2.3", 60, t0), ip("10.3.0.1"));
        c.insert(mapping("10.3.0.0/16", "192.0.2.4", 600, t0 + Duration::from_secs(50)), ip("10.3.0.1"));
        ev.clear();
        c.handle_timeout(t0 + Duration::from_secs(100), &mut ev);
        assert!(ev.is_empty() && c.len() == 1);
        // TTL 0 removes.
        c.insert(mapping("10.3.0.0/16", "192.0.2.3", 0, t0), ip("10.3.0.1"));
        assert!(c.is_empty());
    }

    #[test]
    fn less_specific_expires_with_its_more_specifics() {
        let t0 = Instant::now();
        let mut c = MapCache::new(MapCacheConfig::default());
        c.insert(mapping("10.1.1.0/24", "192.0.2.1", 60, t0), ip("10.1.1.1"));
        c.insert(mapping("10.1.0.0/16", "192.0.2.2", 3600, t0), ip("10.1.2.1"));
        assert_eq!(c.get(&p("10.1.0.0/16")).unwrap().expires, t0 + Duration::from_secs(60));
        let m = mapping("10.9.0.0/16", "192.0.2.2", u64::MAX / 4, t0);
        c.insert(m, ip("10.9.0.1"));
        assert_eq!(c.get(&p("10.9.0.0/16")).unwrap().ttl, c.config().max_ttl, "TTL capped");
    }

    #[test]
    fn bounded_with_lru_eviction() {
        let t0 = Instant::now();
        let mut c = MapCache::new(MapCacheConfig { max_entries: 100, ..Default::default() });
        for i in 0..100u32 {
            c.insert(mapping(&format!("10.{}.{}.0/24", i / 256, i % 256), "192.0.2.1", 600, t0), ip("10.0.0.1"));
        }
        c.publish();
        // Entries 0..10 are in use.
        for i in 0..10u32 {
            c.snapshot().lookup(0, IpAddr::from([10, 0, i as u8, 1])).unwrap().mark_used();
        }
        // A flood of 10,000 random EIDs: the cache stays at its bound and the used ones survive.
        for i in 0..10_000u32 {
            let a = 0xac10_0000u32 + i * 256;
            let pfx = EidPrefix::new(0, ipnet::IpNet::new(IpAddr::from(a.to_be_bytes()), 24).unwrap());
            let m = Mapping::new(pfx, vec![], Action::NATIVE_FORWARD, Duration::from_secs(60), t0);
            c.insert(m, IpAddr::from(a.to_be_bytes()));
            if i % 7 == 0 {
                // The hot entries keep being used by traffic.
                for j in 0..10u32 {
                    c.get(&p(&format!("10.0.{j}.0/24"))).unwrap().mark_used();
                }
            }
            assert!(c.len() <= 100);
        }
        assert_eq!(c.len(), 100);
        assert_eq!(c.evictions(), 10_000);
        for j in 0..10u32 {
            assert!(c.get(&p(&format!("10.0.{j}.0/24"))).is_some(), "hot entry {j} evicted");
        }
        assert!(c.ring.len() <= 100, "the ring reuses slots");
        c.publish();
        assert_eq!(c.snapshot().lookup(0, ip("10.0.50.1")).map(|m| m.prefix), None);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u8, u8),
        Remove(u8, u8),
        Publish,
    }

    fn pfx(bits: u8, len: u8) -> EidPrefix {
        // Small space, so prefixes nest and collide.
        let len = len % 9;
        EidPrefix::new(0, ipnet::IpNet::new(IpAddr::from([bits, 0, 0, 0]), len).unwrap())
    }

    proptest! {
        /// The overlay (base + delta with tombstones) always answers like the authoritative table.
        #[test]
        fn snapshot_matches_authoritative(ops in proptest::collection::vec(prop_oneof![
            (any::<u8>(), any::<u8>()).prop_map(|(b, l)| Op::Insert(b, l)),
            (any::<u8>(), any::<u8>()).prop_map(|(b, l)| Op::Remove(b, l)),
            Just(Op::Publish),
        ], 1..400), probes in proptest::collection::vec(any::<u8>(), 32)) {
            let t0 = Instant::now();
            let mut c = MapCache::new(MapCacheConfig::default());
            for (i, op) in ops.iter().enumerate() {
                match *op {
                    Op::Insert(b, l) => {
                        let m = Mapping::new(pfx(b, l), vec![Rloc::new(IpAddr::from([192, 0, 2, i as u8]), 1, 1, true)], Action::NO_ACTION, Duration::from_secs(60), t0);
                        c.insert(m, IpAddr::from([b, 0, 0, 0]));
                    }
                    Op::Remove(b, l) => { c.remove(&pfx(b, l)); }
                    Op::Publish => {
                        c.publish();
                        let s = c.snapshot();
                        for &x in &probes {
                            let dst = IpAddr::from([x, 1, 2, 3]);
                            let want = c.lookup(0, dst).map(|(_, m)| Arc::as_ptr(m));
                            prop_assert_eq!(s.lookup(0, dst).map(Arc::as_ptr), want);
                        }
                    }
                }
            }
        }
    }
}
