//! The prefix a Negative Map-Reply carries (RFC 9301 §8.3-§8.4, DESIGN.md §4).
//!
//! An ITR caches a negative answer for the whole prefix it names, so the prefix must be as wide
//! as possible (fewer Map-Requests, fewer cache entries) yet never overlap space that is, or may
//! soon be, reachable through LISP:
//!
//! - EID outside every configured site prefix: the widest prefix around it that overlaps no
//!   configured and no registered prefix, cached for 15 minutes (a non-LISP "hole").
//! - EID inside a configured site prefix that no ETR has registered: the widest prefix around it
//!   inside the (least specific) site prefix that overlaps no registration, cached for 1 minute,
//!   since an ETR may register it at any moment.
//!
//! Cost: a binary search over prefix lengths, each step one walk down a trie, so about
//! log2(width) * trie depth node visits whatever the size of the tables.

use std::net::IpAddr;

use crate::eid::EidPrefix;
use crate::prefix_table::PrefixTable;

/// TTL of a negative answer for space no site is configured for (RFC 9301 §8.3).
pub const OUTSIDE_SITE_TTL_MINUTES: u32 = 15;
/// TTL of a negative answer for a configured but unregistered site prefix (RFC 9301 §8.3).
pub const INSIDE_SITE_TTL_MINUTES: u32 = 1;

/// A negative answer: no ETR serves `prefix`; forward natively for `ttl_minutes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Negative {
    pub prefix: EidPrefix,
    pub ttl_minutes: u32,
    /// The EID is inside a configured site prefix (nothing registered there yet).
    pub inside_site: bool,
}

/// The negative answer for `eid` in instance `iid`.
///
/// `sites` holds the configured site prefixes and `registered` the registered ones; their values
/// are not looked at. A Map-Resolver that knows no sites passes its table of served prefixes as
/// `sites` and an empty `registered`. With nothing configured or registered in the EID's instance
/// and family, the answer is the whole space (`0.0.0.0/0` or `::/0`).
///
/// Call it once no usable registration covers `eid` (a covered EID is answered or forwarded, not
/// denied). If a registration covers it anyway, say one whose ETRs are all gone, there is no
/// prefix around the EID that avoids registered space, so the answer is the EID's host prefix
/// with the 1-minute TTL: it hides nothing else and is asked again soon.
pub fn compute<S, R>(sites: &PrefixTable<S>, registered: &PrefixTable<R>, iid: u32, eid: IpAddr) -> Negative {
    let host = EidPrefix::host(iid, eid);
    let site = sites.shortest_covering(&host).map(|(site, _)| site);
    if registered.longest_covering(&host).is_some() {
        return Negative { prefix: host, ttl_minutes: INSIDE_SITE_TTL_MINUTES, inside_site: site.is_some() };
    }
    match site {
        Some(site) => Negative {
            prefix: widest_empty(host, site.prefix_len(), |p| registered.any_within(p)),
            ttl_minutes: INSIDE_SITE_TTL_MINUTES,
            inside_site: true,
        },
        None => Negative {
            prefix: widest_empty(host, 0, |p| sites.any_within(p) || registered.any_within(p)),
            ttl_minutes: OUTSIDE_SITE_TTL_MINUTES,
            inside_site: false,
        },
    }
}

/// The shortest prefix around `host`, no shorter than `floor`, that `occupied` says holds no
/// entry. Occupancy only shrinks as the prefix lengthens (a prefix holds all entries of its
/// sub-prefixes), so binary search applies. The caller guarantees the host prefix itself is
/// empty; it is the fallback.
fn widest_empty(host: EidPrefix, floor: u8, occupied: impl Fn(&EidPrefix) -> bool) -> EidPrefix {
    let ip = host.net.addr();
    let (mut lo, mut hi) = (floor, host.prefix_len());
    // Invariant: every length below `lo` is occupied, and the answer is at most `hi`.
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match EidPrefix::around(host.iid, ip, mid) {
            Some(p) if occupied(&p) => lo = mid + 1,
            _ => hi = mid,
        }
    }
    EidPrefix::around(host.iid, ip, hi).unwrap_or(host)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipnet::IpNet;
    use proptest::prelude::*;

    fn p(s: &str) -> EidPrefix {
        s.parse().expect("test prefix")
    }

    fn table(entries: &[&str]) -> PrefixTable<()> {
        entries.iter().map(|s| (p(s), ())).collect()
    }

    fn ask(sites: &PrefixTable<()>, regs: &PrefixTable<()>, iid: u32, eid: &str) -> (String, u32, bool) {
        let n = compute(sites, regs, iid, eid.parse().expect("test address"));
        (n.prefix.to_string(), n.ttl_minutes, n.inside_site)
    }

    fn neg(prefix: &str, ttl: u32, inside: bool) -> (String, u32, bool) {
        (prefix.to_string(), ttl, inside)
    }

    #[test]
    fn worked_example() {
        let sites = table(&["10.1.0.0/16", "10.3.0.0/16"]);
        let regs = table(&["10.1.1.0/24"]);
        assert_eq!(ask(&sites, &regs, 0, "10.200.0.1"), neg("10.128.0.0/9", 15, false));
        assert_eq!(ask(&sites, &regs, 0, "10.1.77.1"), neg("10.1.64.0/18", 1, true));
        // Registered: not negative; a caller that asks anyway gets the host alone, briefly.
        assert_eq!(ask(&sites, &regs, 0, "10.1.1.9"), neg("10.1.1.9/32", 1, true));
        // Between the two sites: 10.2.0.0/15 would hold 10.3.0.0/16.
        assert_eq!(ask(&sites, &regs, 0, "10.2.0.1"), neg("10.2.0.0/16", 15, false));
        // A site with nothing registered is negative as a whole.
        assert_eq!(ask(&sites, &regs, 0, "10.3.200.1"), neg("10.3.0.0/16", 1, true));
        // Far from everything: half the address space.
        assert_eq!(ask(&sites, &regs, 0, "192.0.2.1"), neg("128.0.0.0/1", 15, false));
        assert_eq!(ask(&sites, &regs, 0, "11.0.0.1"), neg("11.0.0.0/8", 15, false));
    }

    #[test]
    fn instances_are_separate() {
        let sites = table(&["[1]10.1.0.0/16"]);
        let regs = table(&["[1]10.1.1.0/24", "[2]10.9.0.0/16"]);
        assert_eq!(ask(&sites, &regs, 1, "10.1.77.1"), neg("[1]10.1.64.0/18", 1, true));
        assert_eq!(ask(&sites, &regs, 2, "10.1.77.1"), neg("[2]10.0.0.0/13", 15, false));
        assert_eq!(ask(&sites, &regs, 2, "10.9.0.1"), neg("[2]10.9.0.1/32", 1, false));
        assert_eq!(ask(&sites, &regs, 3, "10.1.77.1"), neg("[3]0.0.0.0/0", 15, false));
        assert_eq!(ask(&sites, &regs, 0, "10.1.1.1"), neg("0.0.0.0/0", 15, false));
    }

    #[test]
    fn nothing_configured_is_the_whole_family() {
        let empty = table(&[]);
        assert_eq!(ask(&empty, &empty, 0, "198.51.100.7"), neg("0.0.0.0/0", 15, false));
        assert_eq!(ask(&empty, &empty, 0, "2001:db8::1"), neg("::/0", 15, false));
        // The other family's entries do not matter.
        let v6 = table(&["2001:db8::/32"]);
        assert_eq!(ask(&v6, &v6, 0, "10.0.0.1"), neg("0.0.0.0/0", 15, false));
    }

    #[test]
    fn ipv6() {
        let sites = table(&["2001:db8:1::/48", "2001:db8:3::/48"]);
        let regs = table(&["2001:db8:1:1::/64", "2001:db8:1:2::5/128"]);
        assert_eq!(ask(&sites, &regs, 0, "2001:db8:1:1::77"), neg("2001:db8:1:1::77/128", 1, true));
        assert_eq!(ask(&sites, &regs, 0, "2001:db8:1:8000::1"), neg("2001:db8:1:8000::/49", 1, true));
        assert_eq!(ask(&sites, &regs, 0, "2001:db8:1:2::6"), neg("2001:db8:1:2::6/127", 1, true));
        assert_eq!(ask(&sites, &regs, 0, "2001:db8:1:2::4"), neg("2001:db8:1:2::4/128", 1, true));
        assert_eq!(ask(&sites, &regs, 0, "2001:db8:1:2::5"), neg("2001:db8:1:2::5/128", 1, true));
        assert_eq!(ask(&sites, &regs, 0, "2001:db8:3::1"), neg("2001:db8:3::/48", 1, true));
        assert_eq!(ask(&sites, &regs, 0, "2001:db8:2::1"), neg("2001:db8:2::/48", 15, false));
        assert_eq!(ask(&sites, &regs, 0, "3000::1"), neg("3000::/4", 15, false));
    }

    #[test]
    fn host_prefix_edges() {
        // Registered neighbours on both sides leave only the host itself.
        let sites = table(&["10.0.0.0/8", "2001:db8::/32"]);
        let regs = table(&["10.0.0.0/32", "10.0.0.3/32", "10.0.0.2/32", "2001:db8::/128", "2001:db8::3/128"]);
        assert_eq!(ask(&sites, &regs, 0, "10.0.0.1"), neg("10.0.0.1/32", 1, true));
        assert_eq!(ask(&sites, &regs, 0, "2001:db8::1"), neg("2001:db8::1/128", 1, true));
        assert_eq!(ask(&sites, &regs, 0, "2001:db8::2"), neg("2001:db8::2/128", 1, true));
        // A /32 site.
        let sites = table(&["192.0.2.1/32", "2001:db8::1/128"]);
        let none = table(&[]);
        assert_eq!(ask(&sites, &none, 0, "192.0.2.1"), neg("192.0.2.1/32", 1, true));
        assert_eq!(ask(&sites, &none, 0, "192.0.2.0"), neg("192.0.2.0/32", 15, false));
        assert_eq!(ask(&sites, &none, 0, "2001:db8::1"), neg("2001:db8::1/128", 1, true));
        assert_eq!(ask(&sites, &none, 0, "2001:db8::"), neg("2001:db8::/128", 15, false));
        // Registered space outside any site is still avoided.
        let regs = table(&["192.0.2.128/25"]);
        assert_eq!(ask(&none, &regs, 0, "192.0.2.1"), neg("192.0.2.0/25", 15, false));
        // A /0 site makes everything "inside".
        let all = table(&["0.0.0.0/0"]);
        assert_eq!(ask(&all, &none, 0, "192.0.2.1"), neg("0.0.0.0/0", 1, true));
    }

    #[test]
    fn nested_sites_use_the_widest() {
        let sites = table(&["10.0.0.0/8", "10.1.0.0/16"]);
        let regs = table(&["10.2.0.0/16"]);
        assert_eq!(ask(&sites, &regs, 0, "10.1.0.1"), neg("10.0.0.0/15", 1, true));
    }

    /// The definition, by brute force: try every length from the widest.
    fn reference(sites: &[EidPrefix], regs: &[EidPrefix], iid: u32, eid: IpAddr) -> Negative {
        let host = EidPrefix::host(iid, eid);
        let site = sites.iter().filter(|s| s.covers(&host)).min_by_key(|s| s.prefix_len());
        if regs.iter().any(|r| r.covers(&host)) {
            return Negative { prefix: host, ttl_minutes: 1, inside_site: site.is_some() };
        }
        let (floor, avoid, ttl): (u8, Vec<EidPrefix>, u32) = match site {
            Some(s) => (s.prefix_len(), regs.to_vec(), 1),
            None => (0, sites.iter().chain(regs).copied().collect(), 15),
        };
        (floor..=host.prefix_len())
            .filter_map(|len| EidPrefix::around(iid, eid, len))
            .find(|p| !avoid.iter().any(|a| a.overlaps(p)))
            .map(|prefix| Negative { prefix, ttl_minutes: ttl, inside_site: site.is_some() })
            .expect("the host prefix overlaps nothing but what covers it")
    }

    /// Prefixes and EIDs crowded into 10.0.0.0/7 and 2001:db8::/31 so they nest and collide.
    fn arb_net() -> impl Strategy<Value = IpNet> {
        prop_oneof![
            (any::<u32>(), 6u8..=32)
                .prop_map(|(a, l)| IpNet::new(IpAddr::from((0x0a00_0000 | (a & 0x01ff_ffff)).to_be_bytes()), l)),
            (any::<u128>(), 28u8..=128).prop_map(|(a, l)| {
                let a = (0x2001_0db8u128 << 96) | (a & ((1 << 97) - 1));
                IpNet::new(IpAddr::from(a.to_be_bytes()), l)
            }),
        ]
        .prop_map(|n| n.expect("length within range"))
    }

    fn arb_prefixes(max: usize) -> impl Strategy<Value = Vec<EidPrefix>> {
        prop::collection::vec((0u32..2, arb_net()).prop_map(|(iid, net)| EidPrefix::new(iid, net)), 0..max)
    }

    /// EIDs near the entries (one bit flipped) as well as anywhere.
    fn eids(entries: &[EidPrefix], picks: &[(usize, u8, IpNet)]) -> Vec<(u32, IpAddr)> {
        picks
            .iter()
            .map(|&(i, bit, any)| match entries.get(i % entries.len().max(1)) {
                Some(e) if i % 3 != 0 => {
                    let ip = match e.net.addr() {
                        IpAddr::V4(a) => IpAddr::from(std::net::Ipv4Addr::from(u32::from(a) ^ (1u32 << (bit % 32)))),
                        IpAddr::V6(a) => IpAddr::from(std::net::Ipv6Addr::from(u128::from(a) ^ (1u128 << (bit % 128)))),
                    };
                    (e.iid, ip)
                }
                _ => ((i % 2) as u32, any.addr()),
            })
            .collect()
    }

    proptest! {
        #[test]
        fn matches_brute_force(
            sites in arb_prefixes(6),
            regs in arb_prefixes(24),
            picks in prop::collection::vec((any::<usize>(), any::<u8>(), arb_net()), 1..24),
        ) {
            let site_table: PrefixTable<()> = sites.iter().map(|p| (*p, ())).collect();
            let reg_table: PrefixTable<()> = regs.iter().map(|p| (*p, ())).collect();
            let all: Vec<EidPrefix> = sites.iter().chain(&regs).copied().collect();
            for (iid, eid) in eids(&all, &picks) {
                let got = compute(&site_table, &reg_table, iid, eid);
                prop_assert_eq!(got, reference(&sites, &regs, iid, eid), "iid {} eid {}", iid, eid);
                prop_assert!(got.prefix.contains(eid));
                let covered = regs.iter().any(|r| r.covers(&EidPrefix::host(iid, eid)));
                prop_assert!(covered || !regs.iter().any(|r| r.overlaps(&got.prefix)));
            }
        }
    }
}
