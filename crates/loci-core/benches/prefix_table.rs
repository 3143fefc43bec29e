//! Longest-prefix match and negative-reply cost on tables of 1,000,000 EID prefixes: the
//! mutable trie-based `PrefixTable` and the read-only `FrozenTable` snapshots are built from,
//! on the same tables and addresses.
//!
//! Every lookup address falls inside an entry (so each lookup walks to a real match), and the
//! addresses are shuffled over 64 Ki entries so caches see a realistic spread. Memory per entry
//! (from `mem_size`) and the time to build the frozen table are printed once per table.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use ipnet::IpNet;
use loci_core::eid::EidPrefix;
use loci_core::lpm::FrozenTable;
use loci_core::negative;
use loci_core::prefix_table::PrefixTable;

const ENTRIES: usize = 1_000_000;
const PROBES: usize = 1 << 16;

/// splitmix64: deterministic and dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn u128(&mut self) -> u128 {
        (u128::from(self.next()) << 64) | u128::from(self.next())
    }
}

/// Builds a table of `ENTRIES` distinct prefixes from `gen` and returns it with lookup addresses,
/// each a random host inside a random entry.
fn build(name: &str, rng: &mut Rng, mut gen: impl FnMut(&mut Rng) -> IpNet) -> (PrefixTable<u32>, Vec<IpAddr>) {
    let start = Instant::now();
    let mut table = PrefixTable::new();
    let mut keys = Vec::with_capacity(ENTRIES);
    while table.len() < ENTRIES {
        let p = EidPrefix::new(0, gen(rng));
        if table.insert(p, keys.len() as u32).is_none() {
            keys.push(p);
        }
    }
    let built = start.elapsed();
    let probes = (0..PROBES)
        .map(|_| {
            let p = keys[rng.below(keys.len() as u64) as usize];
            let host_bits = u32::from(p.net.max_prefix_len() - p.prefix_len());
            match p.net.network() {
                IpAddr::V4(a) => {
                    let mask = if host_bits == 0 { 0 } else { u32::MAX >> (32 - host_bits) };
                    IpAddr::V4(Ipv4Addr::from(u32::from(a) | (rng.next() as u32 & mask)))
                }
                IpAddr::V6(a) => {
                    let mask = if host_bits == 0 { 0 } else { u128::MAX >> (128 - host_bits) };
                    IpAddr::V6(Ipv6Addr::from(u128::from(a) | (rng.u128() & mask)))
                }
            }
        })
        .collect();
    eprintln!(
        "{name}: {} entries built in {:.2?}, trie memory {:.1} MiB = {:.1} bytes/entry (value u32)",
        table.len(),
        built,
        table.mem_size() as f64 / (1 << 20) as f64,
        table.mem_size() as f64 / table.len() as f64
    );
    (table, probes)
}

fn v4(bits: u32, len: u8) -> IpNet {
    IpNet::new(IpAddr::V4(Ipv4Addr::from(bits)), len).map(|n| n.trunc()).expect("length <= 32")
}

fn v6(bits: u128, len: u8) -> IpNet {
    IpNet::new(IpAddr::V6(Ipv6Addr::from(bits)), len).map(|n| n.trunc()).expect("length <= 128")
}

fn lookups(c: &mut Criterion, name: &str, table: &PrefixTable<u32>, probes: &[IpAddr]) {
    let mut i = 0;
    c.bench_function(&format!("lpm/{name}"), |b| {
        b.iter(|| {
            i = (i + 1) & (PROBES - 1);
            let hit = table.longest_match(0, black_box(probes[i]));
            debug_assert!(hit.is_some());
            black_box(hit)
        })
    });
}

/// The same lookups in a `FrozenTable` built from `table` (after checking it agrees).
fn frozen_lookups(c: &mut Criterion, name: &str, table: &PrefixTable<u32>, probes: &[IpAddr]) {
    let start = Instant::now();
    let frozen: FrozenTable<u32> = table.iter().map(|(p, v)| (p, *v)).collect();
    let built = start.elapsed();
    eprintln!(
        "{name}: frozen table built in {built:.2?}, memory {:.1} MiB = {:.1} bytes/entry (value u32)",
        frozen.mem_size() as f64 / (1 << 20) as f64,
        frozen.mem_size() as f64 / frozen.len() as f64
    );
    for &a in probes.iter().step_by(64) {
        assert_eq!(frozen.longest_match(0, a).map(|(p, v)| (p, *v)), table.longest_match(0, a).map(|(p, v)| (p, *v)));
    }
    let mut i = 0;
    c.bench_function(&format!("frozen/{name}"), |b| {
        b.iter(|| {
            i = (i + 1) & (PROBES - 1);
            let hit = frozen.lookup(0, black_box(probes[i]));
            debug_assert!(hit.is_some());
            black_box(hit)
        })
    });
}

fn both(c: &mut Criterion, name: &str, table: &PrefixTable<u32>, probes: &[IpAddr]) {
    lookups(c, name, table, probes);
    frozen_lookups(c, name, table, probes);
}

fn lpm(c: &mut Criterion) {
    let mut rng = Rng(0x10c1);
    // Mixed lengths /8../32 anywhere in the space.
    let (t, p) = build("v4 mixed /8-/32", &mut rng, |r| v4(r.next() as u32, 8 + r.below(25) as u8));
    both(c, "v4_mixed_1M", &t, &p);
    // The same table with 256 hot addresses: trie work without DRAM misses (a flow cache's view).
    let hot: Vec<IpAddr> = p.iter().take(256).cycle().take(PROBES).copied().collect();
    both(c, "v4_mixed_1M_hot", &t, &hot);
    drop(t);
    // Hosts packed into one /8: the /32 map-cache or registration table of a large site.
    let (t, p) = build("v4 /32 in 10/8", &mut rng, |r| v4(0x0a00_0000 | (r.next() as u32 & 0x00ff_ffff), 32));
    both(c, "v4_host32_1M", &t, &p);
    drop(t);
    // Mixed lengths /16../128 inside 2000::/3.
    let (t, p) = build("v6 mixed /16-/128", &mut rng, |r| v6((1 << 125) | (r.u128() >> 3), 16 + r.below(113) as u8));
    both(c, "v6_mixed_1M", &t, &p);
    drop(t);
    // Hosts with random interface IDs in 4096 /64s of 2001:db8::/32 (SLAAC-like).
    let (t, p) = build("v6 /128 in 4096 /64s", &mut rng, |r| {
        let net = (0x2001_0db8u128 << 96) | (u128::from(r.below(4096) as u32) << 64);
        v6(net | u128::from(r.next()), 128)
    });
    both(c, "v6_host128_1M", &t, &p);
}

/// Negative replies against 1 M registered /32s in 64 site /16s, for EIDs inside and outside.
fn negative(c: &mut Criterion) {
    let mut rng = Rng(0x9301);
    let sites: PrefixTable<()> = (0..64u32).map(|i| (EidPrefix::new(0, v4(0x0a00_0000 | (i << 16), 16)), ())).collect();
    let mut regs: PrefixTable<()> = PrefixTable::new();
    while regs.len() < ENTRIES {
        let bits = 0x0a00_0000 | (rng.next() as u32 & 0x003f_ffff);
        regs.insert(EidPrefix::new(0, v4(bits, 32)), ());
    }
    let eids: Vec<IpAddr> = (0..PROBES)
        .map(|i| {
            let bits = if i % 2 == 0 { 0x0a00_0000 | (rng.next() as u32 & 0x003f_ffff) } else { rng.next() as u32 };
            IpAddr::V4(Ipv4Addr::from(bits))
        })
        .collect();
    let mut i = 0;
    c.bench_function("negative/v4_1M_registered", |b| {
        b.iter(|| {
            i = (i + 1) & (PROBES - 1);
            black_box(negative::compute(&sites, &regs, 0, black_box(eids[i])))
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = lpm, negative
}
criterion_main!(benches);
