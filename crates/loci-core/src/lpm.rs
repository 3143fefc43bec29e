//! A read-only longest-prefix-match table for the data plane's map-cache snapshots: built once
//! from a sorted list of prefixes, then only read.
//!
//! The layout follows DXR (Zec, Rizzo, Mikuc, "DXR: towards a billion routing lookups per
//! second in software", 2012): the prefixes are flattened into disjoint address ranges, each
//! owned by the most specific prefix covering it, and a direct-indexed table on the leading
//! address bits points at the few ranges that start inside each slice of the address space.
//! A lookup is one read of the direct index, a binary search over a handful of range starts
//! (usually one cache line) and one read of the value: three or four cache misses where a trie
//! walk over a million prefixes takes ten or more. The same layout serves IPv4 and IPv6; the
//! direct index skips the leading bits every prefix shares (e.g. 2000::/3), so it spends its
//! bits where the prefixes differ.
//!
//! Building is linear in the number of prefixes (after a sort, which is linear for the sorted
//! input tables give), so it suits snapshots that are rebuilt now and then, not per change.
//! [`FrozenTable`] puts one table per IID and family behind the same queries as
//! [`crate::prefix_table::PrefixTable`].

use std::fmt::Debug;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::eid::EidPrefix;

/// An address as an unsigned integer (`u32` for IPv4, `u128` for IPv6).
pub trait Key: Copy + Ord + Debug + Default {
    const BITS: u32;
    /// The last address of the prefix `self/len` (`self` has no host bits).
    fn last(self, len: u8) -> Self;
    /// The first address after `self`, unless `self` is the highest.
    fn succ(self) -> Option<Self>;
    /// `width` bits of `self` starting `skip` bits from the top (`skip + width <= BITS`).
    fn bits(self, skip: u32, width: u32) -> usize;
    /// The address whose bits below the top `skip` are zero, then `bucket` in the next `width`.
    fn with_bits(self, skip: u32, width: u32, bucket: usize) -> Self;
    /// Leading bits `self` and `other` share.
    fn common(self, other: Self) -> u32;
}

macro_rules! key_impl {
    ($t:ty) => {
        impl Key for $t {
            const BITS: u32 = <$t>::BITS;

            #[inline]
            fn last(self, len: u8) -> Self {
                self | <$t>::MAX.checked_shr(u32::from(len)).unwrap_or(0)
            }

            #[inline]
            fn succ(self) -> Option<Self> {
                self.checked_add(1)
            }

            #[inline]
            fn bits(self, skip: u32, width: u32) -> usize {
                if width == 0 {
                    return 0;
                }
                ((self << skip) >> (Self::BITS - width)) as usize
            }

            fn with_bits(self, skip: u32, width: u32, bucket: usize) -> Self {
                let top = self & !<$t>::MAX.checked_shr(skip).unwrap_or(0);
                let shift = Self::BITS - skip - width;
                top | ((bucket as $t).checked_shl(shift).unwrap_or(0))
            }

            fn common(self, other: Self) -> u32 {
                (self ^ other).leading_zeros()
            }
        }
    };
}
key_impl!(u32);
key_impl!(u128);

/// No prefix owns the range.
const NONE: u32 = u32::MAX;
/// At most 2^22 direct-index slots (16 MiB of `u32`), reached from about 8 M ranges.
const MAX_DIRECT_BITS: u32 = 22;

/// Addresses from `start` up to the next range's start, and the prefix that owns them.
#[derive(Debug, Clone)]
struct Range<K, V> {
    start: K,
    /// Index of the owning prefix, or `NONE`.
    owner: u32,
    /// A copy of the owner's value, in the same cache line: a lookup reads nothing else.
    value: Option<V>,
}

/// Longest-prefix match over one family's prefixes, read-only.
#[derive(Debug, Clone)]
pub struct Lpm<K, V> {
    /// The prefixes (network address, length) in (address, length) order, a prefix before
    /// its more-specifics.
    prefixes: Box<[(K, u8)]>,
    values: Box<[V]>,
    /// For each prefix, the index of the most specific other prefix covering it, or `NONE`.
    parents: Box<[u32]>,
    /// Disjoint ranges covering the whole address space in order. Adjacent ranges have
    /// different owners.
    ranges: Box<[Range<K, V>]>,
    /// Slot `b` holds the index of the range containing the first address of slice `b`; the
    /// ranges starting inside slice `b` run up to slot `b + 1`.
    direct: Box<[u32]>,
    /// Leading bits every prefix shares (so every match shares them with `lo`), and the bits
    /// after them the direct index uses.
    skip: u32,
    width: u32,
    /// The first and last address any prefix covers.
    lo: K,
    hi: K,
}

impl<K: Key, V: Clone> Default for Lpm<K, V> {
    fn default() -> Self {
        Self::build(Vec::new())
    }
}

impl<K: Key, V: Clone> Lpm<K, V> {
    /// Builds the table from (network address without host bits, length, value), in any order.
    /// Lengths beyond the address width are dropped; of equal prefixes the last one stays.
    pub fn build(mut entries: Vec<(K, u8, V)>) -> Self {
        entries.retain(|e| u32::from(e.1) <= K::BITS);
        // Tables iterate sorted and without duplicates: then this is one pass.
        if !entries.is_sorted_by(|a, b| (a.0, a.1) < (b.0, b.1)) {
            entries.sort_by_key(|a| (a.0, a.1));
            entries.reverse();
            entries.dedup_by_key(|a| (a.0, a.1));
            entries.reverse();
        }
        let n = entries.len();
        let mut prefixes = Vec::with_capacity(n);
        let mut values = Vec::with_capacity(n);
        for (k, len, v) in entries {
            prefixes.push((k, len));
            values.push(v);
        }
        assert!(n < NONE as usize, "too many prefixes");

        // Sweep in order with the stack of prefixes still open (each covers the next).
        let mut parents = vec![NONE; n];
        let mut ranges: Vec<(K, u32)> = vec![(K::default(), NONE)];
        let mut stack: Vec<u32> = Vec::new();
        // Closes open prefixes that end before `upto` (all of them for `None`): past each
        // one's end the range belongs to the prefix below it.
        let close = |stack: &mut Vec<u32>, ranges: &mut Vec<(K, u32)>, upto: Option<K>| {
            while let Some(&top) = stack.last() {
                let (k, len) = prefixes[top as usize];
                let end = k.last(len);
                if upto.is_some_and(|s| end >= s) {
                    break;
                }
                stack.pop();
                if let Some(next) = end.succ() {
                    push_range(ranges, next, stack.last().copied().unwrap_or(NONE));
                }
            }
        };
        for (i, &(k, _)) in prefixes.iter().enumerate() {
            close(&mut stack, &mut ranges, Some(k));
            parents[i] = stack.last().copied().unwrap_or(NONE);
            push_range(&mut ranges, k, i as u32);
            stack.push(i as u32);
        }
        close(&mut stack, &mut ranges, None);

        let (lo, hi) = match (prefixes.first(), prefixes.iter().map(|&(k, l)| k.last(l)).max()) {
            (Some(&(lo, _)), Some(hi)) => (lo, hi),
            _ => (K::default(), K::default()),
        };
        // About two ranges per slice, in the bits where the prefixes differ.
        let skip = if n == 0 { 0 } else { lo.common(hi) };
        let width =
            (usize::BITS - ranges.len().leading_zeros()).saturating_sub(1).min(MAX_DIRECT_BITS).min(K::BITS - skip);
        let slices = 1usize << width;
        let mut direct = Vec::with_capacity(slices + 1);
        let mut r = 0;
        for b in 0..slices {
            let first = lo.with_bits(skip, width, b);
            while r + 1 < ranges.len() && ranges[r + 1].0 <= first {
                r += 1;
            }
            direct.push(r as u32);
        }
        direct.push((ranges.len() - 1) as u32);
        let ranges = ranges
            .into_iter()
            .map(|(start, owner)| Range {
                start,
                owner,
                value: (owner != NONE).then(|| values[owner as usize].clone()),
            })
            .collect();

        Lpm {
            prefixes: prefixes.into(),
            values: values.into(),
            parents: parents.into(),
            ranges,
            direct: direct.into(),
            skip,
            width,
            lo,
            hi,
        }
    }
}

impl<K: Key, V> Lpm<K, V> {
    pub fn len(&self) -> usize {
        self.prefixes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.prefixes.is_empty()
    }

    /// The index of the most specific prefix containing `addr`.
    #[inline]
    pub fn longest(&self, addr: K) -> Option<usize> {
        let owner = self.range(addr)?.owner;
        (owner != NONE).then_some(owner as usize)
    }

    /// The value of the most specific prefix containing `addr`.
    #[inline]
    pub fn lookup(&self, addr: K) -> Option<&V> {
        self.range(addr)?.value.as_ref()
    }

    #[inline]
    fn range(&self, addr: K) -> Option<&Range<K, V>> {
        if addr < self.lo || addr > self.hi {
            return None;
        }
        let b = addr.bits(self.skip, self.width);
        let (first, last) = (self.direct[b] as usize, self.direct[b + 1] as usize);
        // `ranges[first]` starts at or before `addr`; the last range starting at or before it
        // is ours. `last` may be the range holding the next slice's first address: still a
        // candidate, as it may start inside this slice.
        let slice = &self.ranges[first + 1..=last];
        Some(&self.ranges[first + slice.partition_point(|r| r.start <= addr)])
    }

    /// The prefix and value at index `i`.
    #[inline]
    pub fn entry(&self, i: usize) -> (K, u8, &V) {
        let (k, len) = self.prefixes[i];
        (k, len, &self.values[i])
    }

    #[inline]
    pub fn value(&self, i: usize) -> &V {
        &self.values[i]
    }

    /// The index of the most specific other prefix covering prefix `i`.
    pub fn parent(&self, i: usize) -> Option<usize> {
        let p = self.parents[i];
        (p != NONE).then_some(p as usize)
    }

    /// Prefixes containing `addr`, most specific first.
    pub fn chain(&self, addr: K) -> impl Iterator<Item = usize> + '_ {
        std::iter::successors(self.longest(addr), |&i| self.parent(i))
    }

    /// Lengths and values of the prefixes containing `addr`, most specific first.
    fn chain_values(&self, addr: K) -> impl Iterator<Item = (u8, &V)> + '_ {
        // The first value from the range itself, a cache miss saved.
        let first = self.range(addr).and_then(|r| Some((r.owner as usize, r.value.as_ref()?)));
        std::iter::successors(first, |&(i, _)| self.parent(i).map(|p| (p, &self.values[p])))
            .map(|(i, v)| (self.prefixes[i].1, v))
    }

    /// The index of exactly `addr/len` (`addr` without host bits).
    pub fn find(&self, addr: K, len: u8) -> Option<usize> {
        self.prefixes.binary_search(&(addr, len)).ok()
    }

    /// Every entry in (address, length) order.
    pub fn iter(&self) -> impl Iterator<Item = (K, u8, &V)> + '_ {
        (0..self.len()).map(|i| self.entry(i))
    }

    /// Bytes held, not counting heap memory owned by the values.
    pub fn mem_size(&self) -> usize {
        std::mem::size_of::<Self>()
            + std::mem::size_of_val(&*self.prefixes)
            + std::mem::size_of_val(&*self.values)
            + std::mem::size_of_val(&*self.parents)
            + std::mem::size_of_val(&*self.ranges)
            + std::mem::size_of_val(&*self.direct)
    }
}

/// Appends a range starting at `start`, replacing one that starts there already (a more
/// specific prefix or an outer one resuming) and merging with an equal neighbour.
fn push_range<K: Key>(ranges: &mut Vec<(K, u32)>, start: K, owner: u32) {
    if let Some(last) = ranges.last_mut() {
        if last.0 == start {
            last.1 = owner;
            // Replacing may make it equal to the one before.
            if ranges.len() >= 2 && ranges[ranges.len() - 2].1 == owner {
                ranges.pop();
            }
            return;
        }
        if last.1 == owner {
            return;
        }
    }
    ranges.push((start, owner));
}

#[derive(Debug, Clone)]
struct Instance<V> {
    v4: Lpm<u32, V>,
    v6: Lpm<u128, V>,
}

/// EID prefix -> `V`, read-only: [`Lpm`] tables per instance ID and family, for snapshots.
#[derive(Debug, Clone)]
pub struct FrozenTable<V> {
    /// By IID, for a binary search (there are few).
    instances: Box<[(u32, Instance<V>)]>,
    len: usize,
}

impl<V> Default for FrozenTable<V> {
    fn default() -> Self {
        FrozenTable { instances: Box::new([]), len: 0 }
    }
}

impl<V: Clone> FromIterator<(EidPrefix, V)> for FrozenTable<V> {
    /// From entries in any order (linear for the order tables iterate in); later duplicates
    /// of a prefix replace earlier ones.
    fn from_iter<I: IntoIterator<Item = (EidPrefix, V)>>(iter: I) -> Self {
        let mut all: Vec<(EidPrefix, V)> = iter.into_iter().collect();
        // Tables iterate in this order already, without duplicates.
        if !all.is_sorted_by(|a, b| key_order(&a.0) < key_order(&b.0)) {
            all.sort_by_key(|a| key_order(&a.0));
            // Keep the last of equal prefixes (the sort is stable).
            all.reverse();
            all.dedup_by(|later, earlier| key_order(&later.0) == key_order(&earlier.0));
            all.reverse();
        }
        let len = all.len();
        let mut instances: Vec<(u32, Entries<V>)> = Vec::new();
        for (p, v) in all {
            if instances.last().is_none_or(|(iid, _)| *iid != p.iid) {
                instances.push((p.iid, Default::default()));
            }
            let Some((_, (v4, v6))) = instances.last_mut() else { unreachable!("pushed above") };
            match p.net.trunc() {
                IpNet::V4(n) => v4.push((n.network().into(), n.prefix_len(), v)),
                IpNet::V6(n) => v6.push((n.network().into(), n.prefix_len(), v)),
            }
        }
        let instances =
            instances.into_iter().map(|(iid, (v4, v6))| (iid, Instance { v4: Lpm::build(v4), v6: Lpm::build(v6) }));
        FrozenTable { instances: instances.collect(), len }
    }
}

/// One instance's IPv4 and IPv6 entries, as [`Lpm::build`] takes them.
type Entries<V> = (Vec<(u32, u8, V)>, Vec<(u128, u8, V)>);

/// The order [`Lpm::build`] wants: IID, family, address, length.
fn key_order(p: &EidPrefix) -> (u32, bool, u128, u8) {
    match p.net.trunc() {
        IpNet::V4(n) => (p.iid, false, u32::from(n.network()).into(), n.prefix_len()),
        IpNet::V6(n) => (p.iid, true, n.network().into(), n.prefix_len()),
    }
}

fn prefix4(iid: u32, k: u32, len: u8) -> EidPrefix {
    let net = Ipv4Net::new(Ipv4Addr::from(k), len).expect("lengths come from valid prefixes");
    EidPrefix { iid, net: IpNet::V4(net) }
}

fn prefix6(iid: u32, k: u128, len: u8) -> EidPrefix {
    let net = Ipv6Net::new(Ipv6Addr::from(k), len).expect("lengths come from valid prefixes");
    EidPrefix { iid, net: IpNet::V6(net) }
}

/// One family's table of an instance, seen without its key type: a match as (length, value).
enum Family<'a, V> {
    V4(&'a Lpm<u32, V>, u32),
    V6(&'a Lpm<u128, V>, u128),
}

impl<V> FrozenTable<V> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn instance(&self, iid: u32) -> Option<&Instance<V>> {
        let i = self.instances.binary_search_by_key(&iid, |(k, _)| *k).ok()?;
        Some(&self.instances[i].1)
    }

    fn family(&self, iid: u32, ip: IpAddr) -> Option<Family<'_, V>> {
        let inst = self.instance(iid)?;
        Some(match ip {
            IpAddr::V4(a) => Family::V4(&inst.v4, a.into()),
            IpAddr::V6(a) => Family::V6(&inst.v6, a.into()),
        })
    }

    /// The value of the most specific entry containing `ip` in instance `iid`: the data-plane
    /// lookup.
    #[inline]
    pub fn lookup(&self, iid: u32, ip: IpAddr) -> Option<&V> {
        match self.family(iid, ip)? {
            Family::V4(t, k) => t.lookup(k),
            Family::V6(t, k) => t.lookup(k),
        }
    }

    /// The lengths and values of the entries containing `ip` in instance `iid`, most specific
    /// first (`covering_ip` without building the prefixes).
    pub fn chain(&self, iid: u32, ip: IpAddr) -> impl Iterator<Item = (u8, &V)> + '_ {
        let (v4, v6) = match self.family(iid, ip) {
            Some(Family::V4(t, k)) => (Some(t.chain_values(k)), None),
            Some(Family::V6(t, k)) => (None, Some(t.chain_values(k))),
            None => (None, None),
        };
        v4.into_iter().flatten().chain(v6.into_iter().flatten())
    }

    /// The most specific entry containing `ip` in instance `iid`.
    pub fn longest_match(&self, iid: u32, ip: IpAddr) -> Option<(EidPrefix, &V)> {
        self.covering_ip(iid, ip).next()
    }

    /// Every entry containing `ip` in instance `iid`, most specific first.
    pub fn covering_ip(&self, iid: u32, ip: IpAddr) -> impl Iterator<Item = (EidPrefix, &V)> + '_ {
        let (v4, v6) = match self.family(iid, ip) {
            Some(Family::V4(t, k)) => (Some((t, t.chain(k))), None),
            Some(Family::V6(t, k)) => (None, Some((t, t.chain(k)))),
            None => (None, None),
        };
        let v4 = v4.into_iter().flat_map(move |(t, c)| {
            c.map(move |i| {
                let (k, len, v) = t.entry(i);
                (prefix4(iid, k, len), v)
            })
        });
        let v6 = v6.into_iter().flat_map(move |(t, c)| {
            c.map(move |i| {
                let (k, len, v) = t.entry(i);
                (prefix6(iid, k, len), v)
            })
        });
        v4.chain(v6)
    }

    /// The value at exactly `prefix` (host bits ignored).
    pub fn get(&self, prefix: &EidPrefix) -> Option<&V> {
        let inst = self.instance(prefix.iid)?;
        match prefix.net.trunc() {
            IpNet::V4(n) => inst.v4.find(n.network().into(), n.prefix_len()).map(|i| inst.v4.value(i)),
            IpNet::V6(n) => inst.v6.find(n.network().into(), n.prefix_len()).map(|i| inst.v6.value(i)),
        }
    }

    pub fn contains_key(&self, prefix: &EidPrefix) -> bool {
        self.get(prefix).is_some()
    }

    /// All entries: by IID, IPv4 before IPv6, then in address order (as `PrefixTable`).
    pub fn iter(&self) -> impl Iterator<Item = (EidPrefix, &V)> + '_ {
        self.instances.iter().flat_map(|(iid, inst)| {
            let iid = *iid;
            let v4 = inst.v4.iter().map(move |(k, len, v)| (prefix4(iid, k, len), v));
            let v6 = inst.v6.iter().map(move |(k, len, v)| (prefix6(iid, k, len), v));
            v4.chain(v6)
        })
    }

    /// Bytes held, not counting heap memory owned by the values.
    pub fn mem_size(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.instances.iter().map(|(_, i)| 4 + i.v4.mem_size() + i.v6.mem_size()).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prefix_table::PrefixTable;
    use proptest::prelude::*;

    fn p(s: &str) -> EidPrefix {
        s.parse().expect("test prefix")
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn ranges_and_edges() {
        let t: FrozenTable<&str> = ["0.0.0.0/0", "10.0.0.0/8", "10.1.0.0/16", "10.1.0.0/24", "10.255.255.255/32"]
            .into_iter()
            .chain(["255.255.255.255/32", "::/0", "ffff::/16", "[3]::1/128"])
            .map(|s| (p(s), s))
            .collect();
        let lm = |iid, a| t.longest_match(iid, ip(a)).map(|(p, v)| (p.to_string(), *v));
        let want = |s: &'static str| Some((p(s).to_string(), s));
        assert_eq!(lm(0, "10.1.0.255"), want("10.1.0.0/24"));
        assert_eq!(lm(0, "10.1.1.0"), want("10.1.0.0/16"));
        assert_eq!(lm(0, "10.2.0.0"), want("10.0.0.0/8"));
        assert_eq!(lm(0, "10.255.255.255"), want("10.255.255.255/32"));
        assert_eq!(lm(0, "11.0.0.0"), want("0.0.0.0/0"));
        assert_eq!(lm(0, "255.255.255.255"), want("255.255.255.255/32"));
        assert_eq!(lm(0, "255.255.255.254"), want("0.0.0.0/0"));
        assert_eq!(lm(0, "ffff:ffff::"), want("ffff::/16"));
        assert_eq!(lm(0, "fffe::"), want("::/0"));
        assert_eq!(lm(3, "::1"), want("[3]::1/128"));
        assert_eq!(lm(3, "::2"), None);
        assert_eq!(lm(3, "1.2.3.4"), None);
        assert_eq!(lm(4, "1.2.3.4"), None);
        let chain: Vec<String> = t.covering_ip(0, ip("10.1.0.1")).map(|(p, _)| p.to_string()).collect();
        assert_eq!(chain, ["10.1.0.0/24", "10.1.0.0/16", "10.0.0.0/8", "0.0.0.0/0"]);
        assert_eq!(t.get(&p("10.1.0.0/16")), Some(&"10.1.0.0/16"));
        assert_eq!(t.get(&p("10.1.0.0/17")), None);
        assert_eq!(t.len(), 9);
        assert_eq!(t.iter().count(), 9);
        assert!(FrozenTable::<()>::default().lookup(0, ip("1.2.3.4")).is_none());
        let empty: Lpm<u32, ()> = Lpm::build(Vec::new());
        assert_eq!(empty.longest(0), None);
        let odd = Lpm::build(vec![(0x0a00_0000u32, 8, 1), (0x0a00_0000, 8, 2), (0x0a00_0000, 33, 3)]);
        assert_eq!((odd.len(), odd.lookup(0x0a01_0203)), (1, Some(&2)), "last duplicate kept, bad length dropped");
    }

    #[test]
    fn later_duplicates_win() {
        let t: FrozenTable<u8> = [(p("10.0.0.0/8"), 1), (p("10.0.0.0/8"), 2)].into_iter().collect();
        assert_eq!(t.len(), 1);
        assert_eq!(t.lookup(0, ip("10.0.0.1")), Some(&2));
    }

    /// Prefixes that nest and collide often: a few IIDs, a narrow space, and around the edges
    /// of the address space.
    fn arb_prefix() -> impl Strategy<Value = EidPrefix> {
        (0u32..3, 0u8..3, any::<u32>(), 0u8..=32, any::<u128>(), 0u8..=128, 0u8..4).prop_map(
            |(iid, fam, a4, l4, a6, l6, region)| {
                let net = if fam > 0 {
                    let a4 = match region {
                        0 => 0x0a00_0000 | (a4 & 0x0000_ffff),
                        1 => a4 | 0xffff_ff00,
                        2 => a4 & 0xff,
                        _ => a4,
                    };
                    IpNet::new(IpAddr::from(a4.to_be_bytes()), l4)
                } else {
                    let a6 = match region {
                        0 => (0x2001_0db8u128 << 96) | (a6 & 0xffff),
                        1 => a6 | !0xffff,
                        2 => a6 & 0xffff,
                        _ => a6,
                    };
                    IpNet::new(IpAddr::from(a6.to_be_bytes()), l6)
                };
                EidPrefix::new(iid, net.expect("length within range").trunc())
            },
        )
    }

    /// Addresses inside, at the edges of and next to the prefixes.
    fn probes(entries: &[EidPrefix], extra: &[EidPrefix]) -> Vec<(u32, IpAddr)> {
        let mut out = Vec::new();
        for e in entries.iter().chain(extra) {
            let (lo, hi) = (e.net.network(), e.net.broadcast());
            out.extend([lo, hi].map(|a| (e.iid, a)));
            match (lo, hi) {
                (IpAddr::V4(lo), IpAddr::V4(hi)) => {
                    let (lo, hi) = (u32::from(lo), u32::from(hi));
                    out.extend(
                        [lo.wrapping_sub(1), hi.wrapping_add(1)].map(|a| (e.iid, IpAddr::from(a.to_be_bytes()))),
                    );
                }
                (IpAddr::V6(lo), IpAddr::V6(hi)) => {
                    let (lo, hi) = (u128::from(lo), u128::from(hi));
                    out.extend(
                        [lo.wrapping_sub(1), hi.wrapping_add(1)].map(|a| (e.iid, IpAddr::from(a.to_be_bytes()))),
                    );
                }
                _ => unreachable!("one family per prefix"),
            }
        }
        out
    }

    proptest! {
        /// Same answers as the trie-based table, including the whole chain of covering prefixes.
        #[test]
        fn matches_prefix_table(entries in prop::collection::vec(arb_prefix(), 0..200), extra in prop::collection::vec(arb_prefix(), 1..40)) {
            let reference: PrefixTable<EidPrefix> = entries.iter().map(|p| (*p, *p)).collect();
            let t: FrozenTable<EidPrefix> = entries.iter().map(|p| (*p, *p)).collect();
            prop_assert_eq!(t.len(), reference.len());
            prop_assert_eq!(t.iter().map(|(p, v)| (p, *v)).collect::<Vec<_>>(), reference.iter().map(|(p, v)| (p, *v)).collect::<Vec<_>>());
            for (iid, a) in probes(&entries, &extra) {
                let want = reference.longest_match(iid, a).map(|(p, v)| (p, *v));
                prop_assert_eq!(t.longest_match(iid, a).map(|(p, v)| (p, *v)), want);
                prop_assert_eq!(t.lookup(iid, a).copied(), want.map(|(p, _)| p));
                let mut chain: Vec<EidPrefix> = reference.covering(&EidPrefix::host(iid, a)).map(|(p, _)| p).collect();
                chain.reverse();
                prop_assert_eq!(t.chain(iid, a).map(|(len, p)| (len, *p)).collect::<Vec<_>>(), chain.iter().map(|p| (p.prefix_len(), *p)).collect::<Vec<_>>());
                prop_assert_eq!(t.covering_ip(iid, a).map(|(p, _)| p).collect::<Vec<_>>(), chain);
            }
            for q in entries.iter().chain(&extra) {
                prop_assert_eq!(t.get(q), reference.get(q));
            }
        }
    }
}
