//! A map from EID prefixes to values with longest-prefix match: per instance ID, one IPv4 and
//! one IPv6 trie (`prefix-trie`, a tree-bitmap: lookups cost a handful of node visits whatever
//! the number of entries), and beside them the host prefixes (/32, /128) in hash maps.
//!
//! Hosts are most of a large Map-Server's registrations. In the trie an IPv6 /128 costs about
//! 270 bytes and a lookup some hundreds of nanoseconds of cache misses; a hash map finds it in
//! one or two. Order still matters (iteration is in address order, and `within`, which
//! negative replies use, is a range query), so an ordered set of the host addresses sits next
//! to each map. Host prefixes live only there, never in the trie.
//!
//! Every query is scoped to one instance ID; entries of different IIDs never match each other.

use std::cmp::Ordering;
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::Hash;
use std::iter::Peekable;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::RangeInclusive;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use prefix_trie::PrefixMap;

use crate::eid::EidPrefix;

/// EID prefix -> `V`, with exact and longest-prefix lookups. Iteration is deterministic: by IID,
/// IPv4 before IPv6, then in address order with a prefix before its more-specifics.
#[derive(Debug, Clone)]
pub struct PrefixTable<V> {
    // A BTreeMap keeps iteration order stable (the simulator must replay byte for byte); there
    // are few instances, so its lookup cost is noise next to the trie walk.
    instances: BTreeMap<u32, Instance<V>>,
    len: usize,
}

#[derive(Debug, Clone)]
struct Instance<V> {
    v4: PrefixMap<Ipv4Net, V>,
    v6: PrefixMap<Ipv6Net, V>,
    /// /32 entries by address.
    h4: Hosts<u32, V>,
    /// /128 entries by address.
    h6: Hosts<u128, V>,
}

impl<V> Default for Instance<V> {
    fn default() -> Self {
        Self { v4: PrefixMap::new(), v6: PrefixMap::new(), h4: Hosts::default(), h6: Hosts::default() }
    }
}

/// Host entries by address: a hash map for lookups, an ordered set of the same addresses for
/// iteration and range queries.
#[derive(Debug, Clone)]
struct Hosts<K, V> {
    map: HashMap<K, V>,
    order: BTreeSet<K>,
}

impl<K, V> Default for Hosts<K, V> {
    fn default() -> Self {
        Self { map: HashMap::new(), order: BTreeSet::new() }
    }
}

impl<K: Hash + Ord + Copy, V> Hosts<K, V> {
    fn len(&self) -> usize {
        self.map.len()
    }

    fn get(&self, k: &K) -> Option<&V> {
        self.map.get(k)
    }

    fn get_mut(&mut self, k: &K) -> Option<&mut V> {
        self.map.get_mut(k)
    }

    fn insert(&mut self, k: K, v: V) -> Option<V> {
        let old = self.map.insert(k, v);
        if old.is_none() {
            self.order.insert(k);
        }
        old
    }

    fn remove(&mut self, k: &K) -> Option<V> {
        let v = self.map.remove(k)?;
        self.order.remove(k);
        Some(v)
    }

    fn get_or_insert_with(&mut self, k: K, make: impl FnOnce() -> V) -> &mut V {
        match self.map.entry(k) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                self.order.insert(k);
                e.insert(make())
            }
        }
    }

    /// Entries with addresses in `range`, in order.
    fn range(&self, range: RangeInclusive<K>) -> impl Iterator<Item = (K, &V)> + '_ {
        self.order.range(range).filter_map(|k| self.map.get(k).map(|v| (*k, v)))
    }

    fn iter(&self) -> impl Iterator<Item = (K, &V)> + '_ {
        self.order.iter().filter_map(|k| self.map.get(k).map(|v| (*k, v)))
    }

    /// In order too, at the cost of a sort: the map lends its values mutably only in its own
    /// order.
    fn iter_mut(&mut self) -> impl Iterator<Item = (K, &mut V)> + '_ {
        let mut all: Vec<(K, &mut V)> = self.map.iter_mut().map(|(k, v)| (*k, v)).collect();
        all.sort_unstable_by_key(|(k, _)| *k);
        all.into_iter()
    }
}

impl<V> Instance<V> {
    fn len(&self) -> usize {
        self.v4.len() + self.v6.len() + self.h4.len() + self.h6.len()
    }

    /// Every entry, IPv4 then IPv6, each in address order.
    fn iter(&self, iid: u32) -> impl Iterator<Item = (EidPrefix, &V)> + '_ {
        let v4 = merge4(iid, self.v4.iter(), self.h4.iter());
        let v6 = merge6(iid, self.v6.iter(), self.h6.iter());
        v4.chain(v6)
    }

    fn iter_mut(&mut self, iid: u32) -> impl Iterator<Item = (EidPrefix, &mut V)> + '_ {
        let v4 = merge4(iid, self.v4.iter_mut(), self.h4.iter_mut());
        let v6 = merge6(iid, self.v6.iter_mut(), self.h6.iter_mut());
        v4.chain(v6)
    }
}

impl<V> Default for PrefixTable<V> {
    fn default() -> Self {
        Self { instances: BTreeMap::new(), len: 0 }
    }
}

fn eid4(iid: u32) -> impl Fn(Ipv4Net) -> EidPrefix {
    move |net| EidPrefix { iid, net: IpNet::V4(net) }
}

fn eid6(iid: u32) -> impl Fn(Ipv6Net) -> EidPrefix {
    move |net| EidPrefix { iid, net: IpNet::V6(net) }
}

fn host4(iid: u32, a: u32) -> EidPrefix {
    EidPrefix::host(iid, IpAddr::V4(Ipv4Addr::from(a)))
}

fn host6(iid: u32, a: u128) -> EidPrefix {
    EidPrefix::host(iid, IpAddr::V6(Ipv6Addr::from(a)))
}

/// A prefix as the key the host maps use, when it is a host prefix.
enum Key {
    Net(IpNet),
    H4(u32),
    H6(u128),
}

fn key(prefix: &EidPrefix) -> Key {
    match prefix.net {
        IpNet::V4(n) if n.prefix_len() == 32 => Key::H4(n.addr().into()),
        IpNet::V6(n) if n.prefix_len() == 128 => Key::H6(n.addr().into()),
        net => Key::Net(net.trunc()),
    }
}

/// Two iterators sorted by key, merged into one sorted iterator (the trie's lexicographic order
/// is (network address, length), so a host sorts after every trie prefix covering it).
struct Merge<A: Iterator, B: Iterator> {
    a: Peekable<A>,
    b: Peekable<B>,
}

impl<K: Ord, T, A: Iterator<Item = (K, T)>, B: Iterator<Item = (K, T)>> Iterator for Merge<A, B> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        let from_a = match (self.a.peek(), self.b.peek()) {
            (Some((ka, _)), Some((kb, _))) => ka.cmp(kb) != Ordering::Greater,
            (a, _) => a.is_some(),
        };
        let next = if from_a { self.a.next() } else { self.b.next() };
        next.map(|(_, t)| t)
    }
}

/// IPv4 trie entries and hosts, merged in address order.
fn merge4<T>(
    iid: u32,
    trie: impl Iterator<Item = (Ipv4Net, T)>,
    hosts: impl Iterator<Item = (u32, T)>,
) -> impl Iterator<Item = (EidPrefix, T)> {
    let trie = trie.map(move |(n, v)| ((u32::from(n.network()), n.prefix_len()), (eid4(iid)(n), v)));
    let hosts = hosts.map(move |(a, v)| ((a, 32), (host4(iid, a), v)));
    Merge { a: trie.peekable(), b: hosts.peekable() }
}

fn merge6<T>(
    iid: u32,
    trie: impl Iterator<Item = (Ipv6Net, T)>,
    hosts: impl Iterator<Item = (u128, T)>,
) -> impl Iterator<Item = (EidPrefix, T)> {
    let trie = trie.map(move |(n, v)| ((u128::from(n.network()), n.prefix_len()), (eid6(iid)(n), v)));
    let hosts = hosts.map(move |(a, v)| ((a, 128), (host6(iid, a), v)));
    Merge { a: trie.peekable(), b: hosts.peekable() }
}

impl<V> PrefixTable<V> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn clear(&mut self) {
        self.instances.clear();
        self.len = 0;
    }

    /// Inserts or replaces the value at exactly `prefix` (host bits ignored); returns the old one.
    pub fn insert(&mut self, prefix: EidPrefix, value: V) -> Option<V> {
        let inst = self.instances.entry(prefix.iid).or_default();
        let old = match key(&prefix) {
            Key::H4(a) => inst.h4.insert(a, value),
            Key::H6(a) => inst.h6.insert(a, value),
            Key::Net(IpNet::V4(n)) => inst.v4.insert(n, value),
            Key::Net(IpNet::V6(n)) => inst.v6.insert(n, value),
        };
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// Removes the entry at exactly `prefix`, returning its value.
    pub fn remove(&mut self, prefix: &EidPrefix) -> Option<V> {
        let inst = self.instances.get_mut(&prefix.iid)?;
        let old = match key(prefix) {
            Key::H4(a) => inst.h4.remove(&a),
            Key::H6(a) => inst.h6.remove(&a),
            Key::Net(IpNet::V4(n)) => inst.v4.remove(&n),
            Key::Net(IpNet::V6(n)) => inst.v6.remove(&n),
        }?;
        self.len -= 1;
        // Drop empty instances so a churn of IIDs cannot leave tries behind.
        if inst.len() == 0 {
            self.instances.remove(&prefix.iid);
        }
        Some(old)
    }

    /// The value at exactly `prefix`.
    pub fn get(&self, prefix: &EidPrefix) -> Option<&V> {
        let inst = self.instances.get(&prefix.iid)?;
        match key(prefix) {
            Key::H4(a) => inst.h4.get(&a),
            Key::H6(a) => inst.h6.get(&a),
            Key::Net(IpNet::V4(n)) => inst.v4.get(&n),
            Key::Net(IpNet::V6(n)) => inst.v6.get(&n),
        }
    }

    pub fn get_mut(&mut self, prefix: &EidPrefix) -> Option<&mut V> {
        let inst = self.instances.get_mut(&prefix.iid)?;
        match key(prefix) {
            Key::H4(a) => inst.h4.get_mut(&a),
            Key::H6(a) => inst.h6.get_mut(&a),
            Key::Net(IpNet::V4(n)) => inst.v4.get_mut(&n),
            Key::Net(IpNet::V6(n)) => inst.v6.get_mut(&n),
        }
    }

    /// The value at exactly `prefix`, inserting `make()` first if there is none.
    pub fn get_or_insert_with(&mut self, prefix: EidPrefix, make: impl FnOnce() -> V) -> &mut V {
        let inst = self.instances.entry(prefix.iid).or_default();
        let mut inserted = false;
        let make = || {
            inserted = true;
            make()
        };
        let value = match key(&prefix) {
            Key::H4(a) => inst.h4.get_or_insert_with(a, make),
            Key::H6(a) => inst.h6.get_or_insert_with(a, make),
            Key::Net(IpNet::V4(n)) => inst.v4.entry(n).or_insert_with(make),
            Key::Net(IpNet::V6(n)) => inst.v6.entry(n).or_insert_with(make),
        };
        if inserted {
            self.len += 1;
        }
        value
    }

    pub fn contains_key(&self, prefix: &EidPrefix) -> bool {
        self.get(prefix).is_some()
    }

    /// The most specific entry containing `ip` in instance `iid`: the data-plane lookup.
    pub fn longest_match(&self, iid: u32, ip: IpAddr) -> Option<(EidPrefix, &V)> {
        self.longest_covering(&EidPrefix::host(iid, ip))
    }

    pub fn longest_match_mut(&mut self, iid: u32, ip: IpAddr) -> Option<(EidPrefix, &mut V)> {
        let inst = self.instances.get_mut(&iid)?;
        let host = EidPrefix::host(iid, ip);
        match ip {
            IpAddr::V4(a) => match inst.h4.get_mut(&a.into()) {
                Some(v) => Some((host, v)),
                None => inst.v4.get_lpm_mut(&Ipv4Net::from(a)).map(|(n, v)| (eid4(iid)(n), v)),
            },
            IpAddr::V6(a) => match inst.h6.get_mut(&a.into()) {
                Some(v) => Some((host, v)),
                None => inst.v6.get_lpm_mut(&Ipv6Net::from(a)).map(|(n, v)| (eid6(iid)(n), v)),
            },
        }
    }

    /// The most specific entry equal to or covering `prefix`.
    pub fn longest_covering(&self, prefix: &EidPrefix) -> Option<(EidPrefix, &V)> {
        let (iid, inst) = (prefix.iid, self.instances.get(&prefix.iid)?);
        let host = match key(prefix) {
            Key::H4(a) => inst.h4.get(&a),
            Key::H6(a) => inst.h6.get(&a),
            Key::Net(_) => None,
        };
        if let Some(v) = host {
            return Some((*prefix, v));
        }
        match prefix.net.trunc() {
            IpNet::V4(n) => inst.v4.get_lpm(&n).map(|(n, v)| (eid4(iid)(n), v)),
            IpNet::V6(n) => inst.v6.get_lpm(&n).map(|(n, v)| (eid6(iid)(n), v)),
        }
    }

    /// The least specific entry equal to or covering `prefix`.
    pub fn shortest_covering(&self, prefix: &EidPrefix) -> Option<(EidPrefix, &V)> {
        let (iid, inst) = (prefix.iid, self.instances.get(&prefix.iid)?);
        let in_trie = match prefix.net.trunc() {
            IpNet::V4(n) => inst.v4.get_spm(&n).map(|(n, v)| (eid4(iid)(n), v)),
            IpNet::V6(n) => inst.v6.get_spm(&n).map(|(n, v)| (eid6(iid)(n), v)),
        };
        // A host entry covers only itself.
        let host = || if prefix.is_host() { self.get(prefix).map(|v| (*prefix, v)) } else { None };
        in_trie.or_else(host)
    }

    /// Every entry equal to or covering `prefix`, least specific first.
    pub fn covering(&self, prefix: &EidPrefix) -> impl Iterator<Item = (EidPrefix, &V)> + '_ {
        let iid = prefix.iid;
        let inst = self.instances.get(&iid);
        let (v4, v6) = match prefix.net.trunc() {
            IpNet::V4(n) => (inst.map(|i| i.v4.cover(&n)), None),
            IpNet::V6(n) => (None, inst.map(|i| i.v6.cover(&n))),
        };
        let v4 = v4.into_iter().flatten().map(move |(n, v)| (eid4(iid)(n), v));
        let v6 = v6.into_iter().flatten().map(move |(n, v)| (eid6(iid)(n), v));
        // A host entry covers only itself, and is the most specific.
        let host = if prefix.is_host() { self.get(prefix).map(|v| (*prefix, v)) } else { None };
        v4.chain(v6).chain(host)
    }

    /// Every entry equal to or more specific than `prefix`, in address order.
    pub fn within(&self, prefix: &EidPrefix) -> impl Iterator<Item = (EidPrefix, &V)> + '_ {
        let iid = prefix.iid;
        let inst = self.instances.get(&iid);
        let (v4, v6) = match prefix.net.trunc() {
            IpNet::V4(n) => {
                let lo = u32::from(n.network());
                let hosts = inst.map(|i| i.h4.range(lo..=u32::from(n.broadcast())));
                (inst.map(|i| merge4(iid, i.v4.children(&n), hosts.into_iter().flatten())), None)
            }
            IpNet::V6(n) => {
                let lo = u128::from(n.network());
                let hosts = inst.map(|i| i.h6.range(lo..=u128::from(n.broadcast())));
                (None, inst.map(|i| merge6(iid, i.v6.children(&n), hosts.into_iter().flatten())))
            }
        };
        v4.into_iter().flatten().chain(v6.into_iter().flatten())
    }

    /// Whether any entry is equal to or more specific than `prefix`: one walk down the trie
    /// and one probe of the ordered host set.
    pub fn any_within(&self, prefix: &EidPrefix) -> bool {
        self.within(prefix).next().is_some()
    }

    /// All entries: by IID, IPv4 before IPv6, then in address order.
    pub fn iter(&self) -> impl Iterator<Item = (EidPrefix, &V)> + '_ {
        self.instances.iter().flat_map(|(&iid, inst)| inst.iter(iid))
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (EidPrefix, &mut V)> + '_ {
        self.instances.iter_mut().flat_map(|(&iid, inst)| inst.iter_mut(iid))
    }

    /// The instance IDs that hold at least one entry, in order.
    pub fn instance_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.instances.keys().copied()
    }

    /// Keeps only the entries for which `keep` returns true; it may update the values it keeps
    /// (expiry sweeps refresh and drop in one pass).
    pub fn retain(&mut self, mut keep: impl FnMut(&EidPrefix, &mut V) -> bool) {
        // The trie's own retain only lends `&V`, so collect the losers and remove them after.
        let doomed: Vec<EidPrefix> = self.iter_mut().filter_map(|(p, v)| (!keep(&p, v)).then_some(p)).collect();
        for p in &doomed {
            self.remove(p);
        }
    }

    /// Bytes held by the tables themselves, not counting heap memory owned by the values. The
    /// host maps are estimated: a hash bucket per entry of capacity, and the ordered set's B-tree
    /// nodes about 2/3 full.
    pub fn mem_size(&self) -> usize {
        let per_instance = std::mem::size_of::<(u32, Instance<V>)>();
        fn host<K, V>(h: &Hosts<K, V>) -> usize {
            h.map.capacity() * (std::mem::size_of::<(K, V)>() + 1) + h.order.len() * std::mem::size_of::<K>() * 3 / 2
        }
        std::mem::size_of::<Self>()
            + self
                .instances
                .values()
                .map(|i| i.v4.mem_size() + i.v6.mem_size() + host(&i.h4) + host(&i.h6) + per_instance)
                .sum::<usize>()
    }
}

impl<V> FromIterator<(EidPrefix, V)> for PrefixTable<V> {
    fn from_iter<I: IntoIterator<Item = (EidPrefix, V)>>(iter: I) -> Self {
        let mut t = Self::new();
        t.extend(iter);
        t
    }
}

impl<V> Extend<(EidPrefix, V)> for PrefixTable<V> {
    fn extend<I: IntoIterator<Item = (EidPrefix, V)>>(&mut self, iter: I) {
        for (p, v) in iter {
            self.insert(p, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(s: &str) -> EidPrefix {
        s.parse().expect("test prefix")
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    fn table(entries: &[&str]) -> PrefixTable<String> {
        entries.iter().map(|s| (p(s), s.to_string())).collect()
    }

    #[test]
    fn insert_get_remove() {
        let mut t = PrefixTable::new();
        assert_eq!(t.insert(p("10.1.0.0/16"), 1), None);
        assert_eq!(t.insert(p("10.1.0.0/16"), 2), Some(1));
        assert_eq!(t.insert(p("[5]10.1.0.0/16"), 3), None);
        assert_eq!(t.insert(p("2001:db8::/32"), 4), None);
        assert_eq!(t.len(), 3);
        // Host bits in the query are ignored.
        assert_eq!(t.get(&EidPrefix { iid: 0, net: "10.1.9.9/16".parse().unwrap() }), Some(&2));
        assert_eq!(t.get(&p("10.1.0.0/17")), None);
        assert_eq!(t.get(&p("[6]10.1.0.0/16")), None);
        *t.get_mut(&p("[5]10.1.0.0/16")).unwrap() += 10;
        assert_eq!(t.get(&p("[5]10.1.0.0/16")), Some(&13));
        assert_eq!(t.remove(&p("[5]10.1.0.0/16")), Some(13));
        assert_eq!(t.remove(&p("[5]10.1.0.0/16")), None);
        assert_eq!(t.instance_ids().collect::<Vec<_>>(), [0]);
        assert_eq!(t.len(), 2);
        assert!(t.contains_key(&p("2001:db8::/32")));
        *t.get_or_insert_with(p("2001:db8::/32"), || 100) += 1;
        *t.get_or_insert_with(p("[8]2001:db8::/32"), || 100) += 1;
        assert_eq!(t.len(), 3);
        assert_eq!(t.get(&p("2001:db8::/32")), Some(&5));
        assert_eq!(t.get(&p("[8]2001:db8::/32")), Some(&101));
        t.clear();
        assert!(t.is_empty());
        assert_eq!(t.iter().count(), 0);
    }

    #[test]
    fn longest_match_picks_most_specific_in_the_right_instance() {
        let t = table(&["10.0.0.0/8", "10.1.0.0/16", "10.1.1.0/24", "[1]10.1.1.128/25", "2001:db8::/32", "::/0"]);
        let lm = |iid, a| t.longest_match(iid, ip(a)).map(|(p, _)| p.to_string());
        assert_eq!(lm(0, "10.1.1.200").as_deref(), Some("10.1.1.0/24"));
        assert_eq!(lm(0, "10.1.2.1").as_deref(), Some("10.1.0.0/16"));
        assert_eq!(lm(0, "10.9.0.1").as_deref(), Some("10.0.0.0/8"));
        assert_eq!(lm(0, "11.0.0.1"), None);
        assert_eq!(lm(1, "10.1.1.200").as_deref(), Some("[1]10.1.1.128/25"));
        assert_eq!(lm(1, "10.1.1.1"), None);
        assert_eq!(lm(2, "10.1.1.1"), None);
        assert_eq!(lm(0, "2001:db8::1").as_deref(), Some("2001:db8::/32"));
        assert_eq!(lm(0, "2001:db9::1").as_deref(), Some("::/0"));
    }

    #[test]
    fn longest_match_mut_updates_in_place() {
        let mut t: PrefixTable<u32> = [(p("10.0.0.0/8"), 0), (p("10.1.0.0/16"), 0)].into_iter().collect();
        let (hit, v) = t.longest_match_mut(0, ip("10.1.2.3")).unwrap();
        assert_eq!(hit, p("10.1.0.0/16"));
        *v = 7;
        assert_eq!(t.get(&p("10.1.0.0/16")), Some(&7));
        assert!(t.longest_match_mut(0, ip("::1")).is_none());
    }

    #[test]
    fn covering_and_within() {
        let t = table(&["10.0.0.0/8", "10.1.0.0/16", "10.1.1.0/24", "10.1.1.1/32", "10.2.0.0/16", "[3]10.1.0.0/16"]);
        let keys = |it: Vec<(EidPrefix, &String)>| it.into_iter().map(|(p, _)| p.to_string()).collect::<Vec<_>>();
        assert_eq!(keys(t.covering(&p("10.1.1.0/24")).collect()), ["10.0.0.0/8", "10.1.0.0/16", "10.1.1.0/24"]);
        assert_eq!(t.shortest_covering(&p("10.1.1.0/25")).map(|(p, _)| p), Some(p("10.0.0.0/8")));
        assert_eq!(t.longest_covering(&p("10.1.1.0/25")).map(|(p, _)| p), Some(p("10.1.1.0/24")));
        assert_eq!(keys(t.within(&p("10.1.0.0/16")).collect()), ["10.1.0.0/16", "10.1.1.0/24", "10.1.1.1/32"]);
        assert_eq!(keys(t.within(&p("[3]0.0.0.0/0")).collect()), ["[3]10.1.0.0/16"]);
        assert!(t.any_within(&p("10.1.1.0/31")));
        assert!(!t.any_within(&p("10.1.1.2/31")));
        assert!(!t.any_within(&p("11.0.0.0/8")));
        assert!(!t.any_within(&p("::/0")));
        assert!(!t.any_within(&p("[4]0.0.0.0/0")));
        assert!(t.any_within(&p("0.0.0.0/0")));
    }

    #[test]
    fn iteration_order_and_retain() {
        let mut t: PrefixTable<u32> = ["[2]10.0.0.0/8", "2001:db8::/32", "10.1.0.0/16", "10.0.0.0/8", "[2]::/0"]
            .iter()
            .map(|s| (p(s), 0))
            .collect();
        let order: Vec<String> = t.iter().map(|(p, _)| p.to_string()).collect();
        assert_eq!(order, ["10.0.0.0/8", "10.1.0.0/16", "2001:db8::/32", "[2]10.0.0.0/8", "[2]::/0"]);
        for (p, v) in t.iter_mut() {
            *v = u32::from(p.prefix_len());
        }
        t.retain(|p, v| {
            *v += 1;
            p.iid == 0
        });
        assert_eq!(t.len(), 3);
        assert_eq!(t.instance_ids().collect::<Vec<_>>(), [0]);
        assert_eq!(t.get(&p("10.1.0.0/16")), Some(&17));
        assert!(t.mem_size() > 0);
    }

    #[test]
    fn hosts_sit_beside_the_trie_in_order() {
        let mut t = table(&[
            "10.0.0.1/32",
            "10.0.0.0/24",
            "10.0.0.0/32",
            "9.255.255.255/32",
            "10.0.0.0/8",
            "10.0.1.0/24",
            "2001:db8::1/128",
            "2001:db8::/127",
            "[1]10.0.0.1/32",
        ]);
        let order: Vec<String> = t.iter().map(|(p, _)| p.to_string()).collect();
        assert_eq!(
            order,
            [
                "9.255.255.255/32",
                "10.0.0.0/8",
                "10.0.0.0/24",
                "10.0.0.0/32",
                "10.0.0.1/32",
                "10.0.1.0/24",
                "2001:db8::/127",
                "2001:db8::1/128",
                "[1]10.0.0.1/32"
            ]
        );
        let lm = |t: &PrefixTable<String>, iid, a| t.longest_match(iid, ip(a)).map(|(p, _)| p.to_string());
        assert_eq!(lm(&t, 0, "10.0.0.1").as_deref(), Some("10.0.0.1/32"));
        assert_eq!(lm(&t, 0, "10.0.0.2").as_deref(), Some("10.0.0.0/24"));
        assert_eq!(lm(&t, 1, "10.0.0.2"), None);
        assert_eq!(lm(&t, 0, "2001:db8::1").as_deref(), Some("2001:db8::1/128"));
        assert_eq!(t.shortest_covering(&p("9.255.255.255/32")).map(|(p, _)| p), Some(p("9.255.255.255/32")));
        assert_eq!(t.shortest_covering(&p("10.0.0.1/32")).map(|(p, _)| p), Some(p("10.0.0.0/8")));
        let within: Vec<String> = t.within(&p("10.0.0.0/31")).map(|(p, _)| p.to_string()).collect();
        assert_eq!(within, ["10.0.0.0/32", "10.0.0.1/32"]);
        assert!(!t.any_within(&p("10.0.0.2/31")));
        let (hit, v) = t.longest_match_mut(0, ip("10.0.0.1")).unwrap();
        assert_eq!(hit, p("10.0.0.1/32"));
        v.push('!');
        assert_eq!(t.get(&p("10.0.0.1/32")).map(String::as_str), Some("10.0.0.1/32!"));
        *t.get_or_insert_with(p("2001:db8::1/128"), String::new) += "?";
        assert_eq!(t.len(), 9);
        t.retain(|p, _| !p.is_host());
        assert_eq!(t.len(), 4);
        assert_eq!(t.instance_ids().collect::<Vec<_>>(), [0], "instance 1 held only a host");
        assert_eq!(t.remove(&p("10.0.0.0/24")).as_deref(), Some("10.0.0.0/24"));
    }

    fn arb_prefix() -> impl Strategy<Value = EidPrefix> {
        // Few IIDs and a narrow address space so that prefixes nest and collide often.
        // A third of them hosts, which the table keeps apart from the trie.
        (0u32..2, prop::bool::ANY, any::<u32>(), 0u8..=32, any::<u128>(), 0u8..=128, 0u8..3).prop_map(
            |(iid, v4, a4, l4, a6, l6, host)| {
                let (l4, l6) = if host == 0 { (32, 128) } else { (l4, l6) };
                let net = if v4 {
                    IpNet::new(IpAddr::from((0x0a00_0000 | (a4 & 0x00ff_ffff)).to_be_bytes()), l4)
                } else {
                    let a6 = (0x2001_0db8u128 << 96) | (a6 & ((1 << 96) - 1));
                    IpNet::new(IpAddr::from(a6.to_be_bytes()), l6)
                };
                EidPrefix::new(iid, net.expect("length within range"))
            },
        )
    }

    proptest! {
        #[test]
        fn matches_brute_force(entries in prop::collection::vec(arb_prefix(), 0..40), probes in prop::collection::vec(arb_prefix(), 1..20)) {
            let t: PrefixTable<EidPrefix> = entries.iter().map(|p| (*p, *p)).collect();
            let mut uniq = entries.clone();
            uniq.sort();
            uniq.dedup();
            prop_assert_eq!(t.len(), uniq.len());
            prop_assert_eq!(t.iter().map(|(p, _)| p).collect::<Vec<_>>(), uniq.clone());
            for q in &probes {
                let covering: Vec<EidPrefix> = uniq.iter().filter(|e| e.covers(q)).copied().collect();
                let mut by_len = covering.clone();
                by_len.sort_by_key(|p| p.prefix_len());
                prop_assert_eq!(t.covering(q).map(|(p, v)| { assert_eq!(p, *v); p }).collect::<Vec<_>>(), by_len.clone());
                prop_assert_eq!(t.longest_covering(q).map(|(p, _)| p), by_len.last().copied());
                prop_assert_eq!(t.shortest_covering(q).map(|(p, _)| p), by_len.first().copied());
                let within: Vec<EidPrefix> = uniq.iter().filter(|e| q.covers(e)).copied().collect();
                prop_assert_eq!(t.any_within(q), !within.is_empty());
                // In address order, a prefix before its more-specifics: the sort order.
                prop_assert_eq!(t.within(q).map(|(p, _)| p).collect::<Vec<_>>(), within);
                prop_assert_eq!(t.get(q), uniq.contains(q).then_some(q));
                let addr = q.net.network();
                let lpm = uniq.iter().filter(|e| e.iid == q.iid && e.contains(addr)).max_by_key(|e| e.prefix_len());
                prop_assert_eq!(t.longest_match(q.iid, addr).map(|(p, _)| p), lpm.copied());
            }
            let mut t = t;
            for (i, e) in uniq.iter().enumerate() {
                prop_assert_eq!(t.remove(e), Some(*e));
                prop_assert_eq!(t.len(), uniq.len() - i - 1);
            }
            prop_assert_eq!(t.instance_ids().count(), 0);
        }
    }
}
