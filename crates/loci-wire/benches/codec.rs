//! Codec hot paths, each next to a `memcpy` of the same bytes measured in the same run, so
//! results can be read as ratios that hold across machines.
//!
//! Run: `cargo bench -p loci-wire --bench codec -- --warm-up-time 1 --measurement-time 3`.
//! Targets (the codec issue): Map-Register decode+encode <= 300 ns, data header encap+decap
//! <= 20 ns.
//!
//! Times are this thread's CPU time, not wall time: on a small machine shared with builds and
//! fuzzers, other processes stretch wall time several-fold but not the CPU time spent here.

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{criterion_group, criterion_main, Criterion};
use loci_wire::auth::{self, KeyRing, SendPolicy};
use loci_wire::data::{DataHeader, DataHeaderRepr, HEADER_LEN};
use loci_wire::map_register::MapRegister;
use loci_wire::map_reply::MapReply;
use loci_wire::map_request::MapRequest;
use loci_wire::Wire;

/// CPU time of the calling thread (`CLOCK_THREAD_CPUTIME_ID`), in nanoseconds.
struct CpuTime;

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant Linux supports.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl Measurement for CpuTime {
    type Intermediate = u64;
    type Value = u64;

    fn start(&self) -> u64 {
        thread_cpu_ns()
    }
    fn end(&self, start: u64) -> u64 {
        thread_cpu_ns() - start
    }
    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }
    fn zero(&self) -> u64 {
        0
    }
    fn to_f64(&self, v: &u64) -> f64 {
        *v as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        // Nanoseconds, like wall time: reuse its formatting.
        static WALL: WallTime = WallTime;
        WALL.formatter()
    }
}

type Bench = Criterion<CpuTime>;

/// Copies `src` into a buffer of its size: the floor any codec operation on it is compared to.
fn memcpy(c: &mut Bench, name: &str, src: &[u8]) {
    let mut dst = vec![0u8; src.len()];
    c.bench_function(&format!("baseline/memcpy {} bytes ({name})", src.len()), |b| {
        b.iter(|| {
            dst.copy_from_slice(black_box(src));
            black_box(&mut dst);
        })
    });
}

fn map_register(c: &mut Bench) {
    // One record, two locators, signed with the full 32-byte HMAC-SHA-256: what an ETR sends.
    let reg = common::signed(common::map_register_1rec_2loc());
    let bytes = reg.to_bytes();
    memcpy(c, "Map-Register", &bytes);
    let mut out = vec![0u8; bytes.len()];
    c.bench_function(&format!("map_register/decode+encode ({} bytes)", bytes.len()), |b| {
        b.iter(|| {
            let m = MapRegister::parse(black_box(&bytes)).unwrap();
            m.emit(&mut out);
            black_box(&mut out);
        })
    });

    // HMAC-SHA-256 sign and verify of the same message.
    let keys = KeyRing::with_key(common::KEY_ID, common::SECRET);
    let policy = SendPolicy::default();
    let mut msg = bytes.clone();
    c.bench_function(&format!("map_register/hmac-sha256 sign+verify ({} bytes)", msg.len()), |b| {
        b.iter(|| {
            auth::sign(black_box(&mut msg), common::KEY_ID, common::SECRET, &policy).unwrap();
            black_box(auth::verify(black_box(&msg), &keys, false).unwrap());
        })
    });
}

fn data_header(c: &mut Bench) {
    let repr = DataHeaderRepr { nonce: Some(0xabcdef), instance_id: Some(1000), lsb: Some(1), ..Default::default() };
    // A packet buffer with room for the header before a 64-byte inner packet, which neither
    // encapsulation nor decapsulation copies.
    let mut packet = [0u8; HEADER_LEN + 64];
    memcpy(c, "data header", &repr.to_array());
    c.bench_function("data_header/encap+decap (8-byte header, payload in place)", |b| {
        b.iter(|| {
            let mut view = DataHeader::new_unchecked(&mut packet[..]);
            black_box(&repr).emit_header(&mut view);
            let view = DataHeader::new_checked(black_box(&packet[..])).unwrap();
            let (parsed, notes) = DataHeaderRepr::from_header(&view);
            black_box((parsed, notes, view.payload().len()));
        })
    });
}

fn request_reply(c: &mut Bench) {
    let req = common::map_request_plain().to_bytes();
    memcpy(c, "Map-Request", &req);
    c.bench_function(&format!("map_request/parse ({} bytes)", req.len()), |b| {
        b.iter(|| black_box(MapRequest::parse(black_box(&req)).unwrap()))
    });

    let reply = common::map_reply_positive();
    let mut out = vec![0u8; reply.buffer_len()];
    memcpy(c, "Map-Reply", &reply.to_bytes());
    c.bench_function(&format!("map_reply/emit ({} bytes)", out.len()), |b| {
        b.iter(|| {
            black_box(&reply).emit(&mut out);
            black_box(&mut out);
        })
    });
    // Parsing is needed on the reply side too; kept for comparison with the request.
    let bytes = reply.to_bytes();
    c.bench_function(&format!("map_reply/parse ({} bytes)", bytes.len()), |b| {
        b.iter(|| black_box(MapReply::parse(black_box(&bytes)).unwrap()))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().with_measurement(CpuTime);
    targets = map_register, data_header, request_reply
}
criterion_main!(benches);
