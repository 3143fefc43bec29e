//! `loci bench`: Map-Register or Map-Request load against a running Map-Server.
//!
//! One thread drives several UDP sockets with a window of outstanding messages (optionally
//! paced to a rate), matches answers by nonce and records each round-trip time. Nonces are
//! `base + sequence number`, so an answer finds its send time in a ring indexed by sequence
//! without a map, and per-socket nonces only increase (a Map-Server's replay check passes).
//!
//! Targets are loopback only, or lab addresses with `--lab`; every run is bounded in count
//! and time. `--baseline` first runs the same load against a trivial UDP echo in this process:
//! the generator's own ceiling, printed next to the real figures.
//!
//! The generator sends in batches (`sendmmsg`), Map-Requests as segmented sends (UDP GSO: one
//! trip down the stack for a batch of same-size datagrams, which the Map-Server still receives
//! one by one), and receives with `recvmmsg`, so that it costs less per message than the
//! Map-Server it measures.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use ipnet::IpNet;
use loci_core::eid::EidPrefix;
use loci_core::mapping::{self, encapsulate_request, record};
use loci_wire::auth::{Algorithm, SendPolicy};
use loci_wire::map_register::{MapRegister, XtrId};
use loci_wire::map_request::MapRequest;
use loci_wire::{Action, Address, Locator, Wire};
use mio::{Events, Interest, Poll, Token};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::sys;

/// Options every mode shares.
#[derive(clap::Args, Debug, Clone)]
pub struct Common {
    /// Map-Server address: loopback (127.0.0.0/8, ::1), or with --lab 198.18.0.0/15 or TEST-NET
    #[arg(long)]
    pub to: Option<IpAddr>,
    #[arg(long, default_value_t = 4342)]
    pub port: u16,
    /// Messages to send (register: EIDs to register)
    #[arg(long)]
    pub count: u64,
    /// Messages per second; 0 sends as fast as the window of outstanding messages allows
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Stop sending after this many seconds even if --count is not reached
    #[arg(long, default_value_t = 60.0)]
    pub duration: f64,
    /// Most messages awaiting an answer at once
    #[arg(long, default_value_t = 256)]
    pub window: usize,
    /// UDP sockets to spread the load over
    #[arg(long, default_value_t = 4)]
    pub sockets: usize,
    /// Seconds after which an unanswered message counts as lost
    #[arg(long, default_value_t = 1.0)]
    pub timeout: f64,
    /// First IPv4 EID (EIDs alternate IPv4 /32 and IPv6 /128 from the two bases)
    #[arg(long, default_value = "10.0.0.0")]
    pub eid_base: Ipv4Addr,
    /// First IPv6 EID
    #[arg(long, default_value = "2001:db8::")]
    pub v6_base: Ipv6Addr,
    /// Local address to send from, one more per socket (default: 127.0.0.2 for register
    /// loads on loopback, else the host's choice)
    #[arg(long)]
    pub source: Option<IpAddr>,
    /// Allow lab targets (198.18.0.0/15, 192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24)
    #[arg(long)]
    pub lab: bool,
    /// First measure the same load against a UDP echo in this process (the generator's
    /// ceiling); without --to, measure only that
    #[arg(long)]
    pub baseline: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum Mode {
    /// Map-Registers (M, P and I bits, increasing nonces) of distinct /32 and /128 EIDs,
    /// answered by Map-Notify
    Register {
        #[command(flatten)]
        common: Common,
        /// The site's key
        #[arg(long)]
        key: String,
        #[arg(long, default_value_t = 0)]
        key_id: u8,
        /// hmac-sha1-96, hmac-sha256-128 or hmac-sha256-128-hkdf
        #[arg(long, default_value = "hmac-sha256-128")]
        algorithm: String,
        /// EID-records per Map-Register
        #[arg(long, default_value_t = 1)]
        per_register: u8,
    },
    /// Map-Requests for random EIDs among those `bench register` made, answered by Map-Reply
    Request {
        #[command(flatten)]
        common: Common,
        /// How many EIDs to pick from (as registered from --eid-base and --v6-base)
        #[arg(long, default_value_t = 1_000_000)]
        eids: u64,
        /// Send Encapsulated Map-Requests (as a Map-Resolver would) instead of plain ones
        #[arg(long)]
        encapsulated: bool,
    },
    /// Print a Map-Server configuration for benchmarks: one site accepting more-specifics of
    /// 10.0.0.0/8 and 2001:db8::/32, proxy reply, per-source rate limits raised out of the way
    Config {
        #[arg(long)]
        key: String,
        #[arg(long, default_value = "127.0.0.1")]
        listen: IpAddr,
        #[arg(long, default_value_t = 4342)]
        port: u16,
        /// Directory for the API socket and the state file
        #[arg(long)]
        dir: std::path::PathBuf,
    },
    /// Register and ask in this process, without sockets, with the bench configuration: what
    /// the Map-Server core costs per message (and per EID, in RSS) apart from the kernel
    Core {
        /// EIDs to register (half IPv4 /32, half IPv6 /128)
        #[arg(long, default_value_t = 1_000_000)]
        count: u64,
        /// Map-Requests for random registered EIDs
        #[arg(long, default_value_t = 1_000_000)]
        requests: u64,
        #[arg(long)]
        json: bool,
    },
    /// Offer UDP datagrams at a paced rate, each carrying a sequence number (for `udp-recv`):
    /// a data-plane load that costs the sender less per packet than iperf3
    UdpSend {
        /// Destination: loopback, or with --lab the lab ranges and the lab's EID ranges
        /// (10.0.0.0/8, 2001:db8::/32)
        #[arg(long)]
        to: SocketAddr,
        /// UDP payload bytes (at least 8: the sequence number)
        #[arg(long, default_value_t = 64)]
        size: usize,
        /// Datagrams per second
        #[arg(long)]
        pps: u64,
        /// Seconds to send for
        #[arg(long)]
        secs: f64,
        /// Flows: sockets with distinct source ports, taking batches in turn
        #[arg(long, default_value_t = 1)]
        flows: usize,
        #[arg(long)]
        lab: bool,
        #[arg(long)]
        json: bool,
    },
    /// Count the datagrams of `udp-send`: received, lost by sequence gaps, packets per second
    UdpRecv {
        #[arg(long)]
        listen: SocketAddr,
        /// Give up this many seconds after starting; ends earlier 1 s after traffic stops
        #[arg(long)]
        secs: f64,
        #[arg(long)]
        json: bool,
    },
}

/// Ring of send times: must hold every message sent within one --timeout at the highest rate.
const RING: usize = 1 << 18;
const RING_MASK: u64 = RING as u64 - 1;
const UNUSED: u64 = u64::MAX;
/// Upper bound of --timeout: latencies are kept as u32 nanoseconds.
const MAX_TIMEOUT_SECS: f64 = 4.0;
/// RLOC the benchmark registers for every EID (TEST-NET-1: never sent to).
const BENCH_RLOC: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

pub fn run(mode: Mode) -> anyhow::Result<()> {
    let (common, mut workload): (Common, Box<dyn Workload>) = match mode {
        Mode::Config { key, listen, port, dir } => {
            print!("{}", config(&key, listen, port, &dir));
            return Ok(());
        }
        Mode::Core { count, requests, json } => return core(count, requests, json),
        Mode::UdpSend { to, size, pps, secs, flows, lab, json } => {
            let r = udp_send(UdpLoad { to, size, pps, secs, flows, lab })?;
            return print_udp(&r, json);
        }
        Mode::UdpRecv { listen, secs, json } => return print_udp(&udp_recv(listen, secs)?, json),
        Mode::Register { common, key, key_id, algorithm, per_register } => {
            let algorithm = parse_algorithm(&algorithm)?;
            let reg = Register::new(&common, key.into_bytes(), key_id, algorithm, per_register)?;
            (common, Box::new(reg))
        }
        Mode::Request { common, eids, encapsulated } => {
            let req = Request::new(&common, eids, encapsulated)?;
            (common, Box::new(req))
        }
    };
    let limits = Bounds::check(&common)?;
    let target = match common.to {
        Some(ip) => {
            check_target(ip, common.lab)?;
            Some(SocketAddr::new(ip, common.port))
        }
        None if common.baseline => None,
        None => bail!("give --to ADDRESS (or --baseline alone to measure the generator)"),
    };
    let baseline = if common.baseline {
        let echo = Echo::start(target.map_or(IpAddr::V4(Ipv4Addr::LOCALHOST), |t| loopback_of(t.ip())))?;
        let r = generate(echo.addr, &limits, workload.as_mut());
        echo.stop();
        Some(r?)
    } else {
        None
    };
    let result = match target {
        Some(t) => Some(generate(t, &limits, workload.as_mut())?),
        None => None,
    };
    let name = workload.name();
    if common.json {
        let mut v = json!({ "mode": name });
        if let (Some(t), Some(r)) = (target, &result) {
            v["target"] = json!(t.to_string());
            v["result"] = r.json();
        }
        if let Some(b) = &baseline {
            v["baseline"] = b.json();
        }
        if let (Some(r), Some(b)) = (&result, &baseline) {
            v["ratio"] = json!(r.rate() / b.rate().max(f64::MIN_POSITIVE));
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        if let Some(b) = &baseline {
            print!("{}", b.render(&format!("{name} -> UDP echo (generator ceiling)")));
        }
        if let (Some(t), Some(r)) = (target, &result) {
            print!("{}", r.render(&format!("{name} -> {t}")));
            if let Some(b) = &baseline {
                println!("  {:.0}% of the generator ceiling", 100.0 * r.rate() / b.rate().max(f64::MIN_POSITIVE));
            }
        }
    }
    Ok(())
}

/// The bench Map-Server configuration (see [`Mode::Config`]).
pub fn config(key: &str, listen: IpAddr, port: u16, dir: &std::path::Path) -> String {
    let key = toml_string(key);
    let dir = dir.display().to_string();
    format!(
        r#"# loci bench: one site accepting 10.0.0.0/8 and 2001:db8::/32 more-specifics, proxy reply.
# Per-source rate limits are raised so that the load generator is not rate limited, and the
# RFC 9301 section 5.4 Map-Reply repeat limit is off (the generator asks for random EIDs).
[node]
name = "bench-ms"
listen = ["{listen}"]
control-port = {port}
api-socket = {api}
state-dir = {state}

[limits]
map-requests-per-source = 4000000000
map-registers-per-source = 4000000000
map-reply-repeat-secs = 0
registration-timeout-secs = 86400
register-interval-secs = 60

[map-server]
max-registrations = 2000000

[[map-server.site]]
name = "bench"
auth = {{ algorithm = "hmac-sha256-128", key = {key} }}
proxy-reply = true
eid-prefixes = [
    {{ prefix = "10.0.0.0/8", accept-more-specifics = true }},
    {{ prefix = "2001:db8::/32", accept-more-specifics = true }},
]
"#,
        api = toml_string(&format!("{dir}/bench-ms.sock")),
        state = toml_string(&format!("{dir}/state")),
    )
}

/// Messages handed to the core per timed round: encoded beforehand, so encoding is not timed.
const CORE_CHUNK: u64 = 4096;

/// [`Mode::Core`].
fn core(count: u64, requests: u64, json: bool) -> anyhow::Result<()> {
    if count == 0 || requests == 0 {
        bail!("--count and --requests must be at least 1");
    }
    const KEY: &str = "bench-key";
    let dir = std::path::Path::new("/nonexistent/loci-bench-core");
    let cfg = crate::config::parse(&dir.join("bench.toml"), &config(KEY, IpAddr::V4(Ipv4Addr::LOCALHOST), 4342, dir))?;
    let local = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 4342);
    let remote = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), 4342);
    let c = Common { count, ..Common::for_core() };
    let mut node = loci_core::node::Node::new(cfg.core, 1, Instant::now());
    let rss0 = rss()?;
    let mut reg = Register::new(&c, KEY.as_bytes().to_vec(), 0, Algorithm::HmacSha256_128, 1)?;
    let reg_time = time_core(&mut node, &mut reg, count, local, remote);
    let rss1 = rss()?;
    let mut req = Request::new(&c, count, false)?;
    let req_time = time_core(&mut node, &mut req, requests, local, remote);
    let held = node.map_server().map_or(0, |ms| ms.registrations().len());
    if held as u64 != count {
        bail!("the core holds {held} registrations after {count} Map-Registers");
    }
    let stats = node.stats();
    if stats.proxy_replies != requests {
        bail!("{} proxy replies to {requests} Map-Requests", stats.proxy_replies);
    }
    let (reg_us, req_us) =
        (reg_time.as_secs_f64() * 1e6 / count as f64, req_time.as_secs_f64() * 1e6 / requests as f64);
    let per_eid = rss1.saturating_sub(rss0) as f64 / count as f64;
    if json {
        let v = json!({
            "registrations": held,
            "map_register_us": reg_us,
            "map_request_us": req_us,
            "rss_bytes_per_eid": per_eid,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("Map-Server core, no sockets, {held} EIDs registered:");
        println!("  Map-Register -> Map-Notify: {reg_us:.2} us ({:.0}/s on one core)", 1e6 / reg_us);
        println!("  Map-Request -> Map-Reply:   {req_us:.2} us ({:.0}/s on one core)", 1e6 / req_us);
        println!("  RSS: {per_eid:.0} bytes per EID");
    }
    Ok(())
}

/// Time the core takes to handle `n` messages of `work` (and to queue what it sends).
fn time_core(
    node: &mut loci_core::node::Node,
    work: &mut dyn Workload,
    n: u64,
    local: SocketAddr,
    remote: SocketAddr,
) -> Duration {
    let total = work.messages(n);
    let mut spent = Duration::ZERO;
    let mut msgs: Vec<Vec<u8>> = Vec::new();
    for first in (0..total).step_by(CORE_CHUNK as usize) {
        let last = (first + CORE_CHUNK).min(total);
        msgs.resize_with((last - first) as usize, Vec::new);
        for (seq, m) in (first..last).zip(msgs.iter_mut()) {
            work.encode(seq, seq + 1, 0, remote, m);
        }
        let t = Instant::now();
        for m in &msgs {
            node.handle_datagram(t, local, remote, m);
            while node.poll_transmit().is_some() {}
            while node.poll_event().is_some() {}
        }
        spent += t.elapsed();
    }
    spent
}

/// This process's resident set, in bytes.
fn rss() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status").context("cannot read /proc/self/status")?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .context("no VmRSS in /proc/self/status")?;
    Ok(kb * 1024)
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn parse_algorithm(s: &str) -> anyhow::Result<Algorithm> {
    Ok(match s {
        "hmac-sha1-96" => Algorithm::HmacSha1_96,
        "hmac-sha256-128" => Algorithm::HmacSha256_128,
        "hmac-sha256-128-hkdf" => Algorithm::HmacSha256_128Hkdf,
        _ => bail!("unknown --algorithm {s:?}: hmac-sha1-96, hmac-sha256-128 or hmac-sha256-128-hkdf"),
    })
}

/// Refuses any target but loopback, or with `lab` the benchmark and documentation ranges.
pub fn check_target(ip: IpAddr, lab: bool) -> anyhow::Result<()> {
    if ip.is_loopback() {
        return Ok(());
    }
    const LAB: [&str; 4] = ["198.18.0.0/15", "192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24"];
    let in_lab = LAB.iter().any(|n| n.parse::<IpNet>().is_ok_and(|n| n.contains(&ip)));
    match (in_lab, lab) {
        (true, true) => Ok(()),
        (true, false) => bail!("refusing to load {ip}: lab addresses need --lab"),
        (false, _) => bail!(
            "refusing to load {ip}: loci bench targets only loopback (127.0.0.0/8, ::1), or with --lab \
             198.18.0.0/15 and the TEST-NET ranges"
        ),
    }
}

/// The lab's EID ranges (lab/*.sh, examples/): with `--lab`, `udp-send` may load them too,
/// since a data-plane benchmark sends from EID to EID. Within these ranges only.
const LAB_EIDS: [&str; 2] = ["10.0.0.0/8", "2001:db8::/32"];

/// [`check_target`], plus with `lab` the lab's EID ranges.
pub fn check_data_target(ip: IpAddr, lab: bool) -> anyhow::Result<()> {
    if lab && LAB_EIDS.iter().any(|n| n.parse::<IpNet>().is_ok_and(|n| n.contains(&ip))) {
        return Ok(());
    }
    check_target(ip, lab).map_err(|e| anyhow::anyhow!("{e}, or with --lab the lab EIDs {}", LAB_EIDS.join(", ")))
}

/// The loopback address of `ip`'s family (where the baseline echo listens).
fn loopback_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
    }
}

/// The EID of index `i`: even indexes are IPv4 /32s from `v4`, odd ones IPv6 /128s from `v6`.
fn eid_of(v4: Ipv4Addr, v6: Ipv6Addr, i: u64) -> EidPrefix {
    let ip = if i & 1 == 0 {
        IpAddr::V4(Ipv4Addr::from(u32::from(v4).wrapping_add((i / 2) as u32)))
    } else {
        IpAddr::V6(Ipv6Addr::from(u128::from(v6).wrapping_add(u128::from(i / 2))))
    };
    EidPrefix::host(0, ip)
}

/// Refuses EID ranges that would wrap around the IPv4 address space.
fn check_eid_range(v4: Ipv4Addr, n: u64) -> anyhow::Result<()> {
    if u64::from(u32::from(v4)) + n.div_ceil(2) > 1 << 32 {
        bail!("{n} EIDs from {v4} run past 255.255.255.255: use a lower --eid-base or a smaller count");
    }
    Ok(())
}

impl Common {
    /// The defaults, for loads that do not come from the command line.
    fn for_core() -> Common {
        Common {
            to: None,
            port: 4342,
            count: 1,
            rate: 0.0,
            duration: 60.0,
            window: 256,
            sockets: 1,
            timeout: 1.0,
            eid_base: Ipv4Addr::new(10, 0, 0, 0),
            v6_base: Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0),
            source: None,
            lab: false,
            baseline: false,
            json: false,
        }
    }
}

/// Validated limits of one run.
#[derive(Debug, Clone)]
struct Bounds {
    count: u64,
    /// Seconds between sends; 0 when unpaced.
    interval_ns: f64,
    duration: Duration,
    window: usize,
    sockets: usize,
    timeout: Duration,
    source: Option<IpAddr>,
}

impl Bounds {
    fn check(c: &Common) -> anyhow::Result<Bounds> {
        if c.count == 0 {
            bail!("--count must be at least 1");
        }
        if !(c.rate >= 0.0 && c.rate.is_finite()) {
            bail!("--rate must be a positive number of messages per second (0: unpaced)");
        }
        if !(c.duration > 0.0 && c.duration <= 3600.0) {
            bail!("--duration must be within (0, 3600] seconds");
        }
        if !(c.timeout > 0.0 && c.timeout <= MAX_TIMEOUT_SECS) {
            bail!("--timeout must be within (0, {MAX_TIMEOUT_SECS}] seconds");
        }
        if !(1..=RING / 4).contains(&c.window) {
            bail!("--window must be within 1-{}", RING / 4);
        }
        if !(1..=64).contains(&c.sockets) {
            bail!("--sockets must be within 1-64");
        }
        Ok(Bounds {
            count: c.count,
            interval_ns: if c.rate > 0.0 { 1e9 / c.rate } else { 0.0 },
            duration: Duration::from_secs_f64(c.duration),
            window: c.window,
            sockets: c.sockets,
            timeout: Duration::from_secs_f64(c.timeout),
            source: c.source,
        })
    }
}

/// What the load is made of.
trait Workload {
    fn name(&self) -> &'static str;
    /// Messages to send for `count` (register: EIDs are grouped several to a message).
    fn messages(&self, count: u64) -> u64;
    /// The local port answers come to, when it is not the one we send from.
    fn answer_port(&self) -> Option<u16> {
        None
    }
    /// Whether a batch may go out in another order than encoded (grouped by size, so that the
    /// kernel segments each group from one send).
    fn reorderable(&self) -> bool {
        false
    }
    /// Encodes message `seq` with `nonce`, sent from socket `socket` bound to `local`.
    fn encode(&mut self, seq: u64, nonce: u64, socket: usize, local: SocketAddr, out: &mut Vec<u8>);
}

struct Register {
    key: Vec<u8>,
    key_id: u8,
    policy: SendPolicy,
    per_register: u64,
    count: u64,
    v4: Ipv4Addr,
    v6: Ipv6Addr,
    /// One xTR-ID per socket: each socket's nonces increase on their own.
    xtr_base: u128,
}

impl Register {
    fn new(c: &Common, key: Vec<u8>, key_id: u8, algorithm: Algorithm, per_register: u8) -> anyhow::Result<Self> {
        if per_register == 0 {
            bail!("--per-register must be within 1-255");
        }
        if key.is_empty() {
            bail!("--key must not be empty");
        }
        check_eid_range(c.eid_base, c.count)?;
        Ok(Register {
            key,
            key_id,
            policy: SendPolicy { algorithm, ..SendPolicy::default() },
            per_register: per_register.into(),
            count: c.count,
            v4: c.eid_base,
            v6: c.v6_base,
            xtr_base: rand::random::<u128>() & !0xff,
        })
    }
}

impl Workload for Register {
    fn name(&self) -> &'static str {
        "Map-Register"
    }

    fn messages(&self, count: u64) -> u64 {
        count.div_ceil(self.per_register)
    }

    /// The Map-Server sends Map-Notify to port 4342 (RFC 9301 §3).
    fn answer_port(&self) -> Option<u16> {
        Some(loci_core::node::CONTROL_PORT)
    }

    fn encode(&mut self, seq: u64, nonce: u64, socket: usize, _local: SocketAddr, out: &mut Vec<u8>) {
        let first = seq * self.per_register;
        let records = (first..(first + self.per_register).min(self.count))
            .map(|i| {
                let locators = vec![Locator::new(Address::Ipv4(BENCH_RLOC))];
                record(&eid_of(self.v4, self.v6, i), 1440, Action::NO_ACTION, true, locators)
            })
            .collect();
        let mut reg = MapRegister {
            proxy_reply: true,
            security: false,
            eid_notify: false,
            use_ttl: false,
            merge: false,
            want_map_notify: true,
            nonce,
            key_id: 0,
            algorithm_id: 0,
            auth_data: Vec::new(),
            records,
            xtr_id: Some(XtrId { xtr_id: self.xtr_base | socket as u128, site_id: 1 }),
        };
        // Signing only fails for a message type without authentication, which this is not.
        match reg.to_signed_bytes(self.key_id, &self.key, &self.policy) {
            Ok(bytes) => *out = bytes,
            Err(e) => unreachable!("a Map-Register is always signable: {e}"),
        }
    }
}

struct Request {
    eids: u64,
    v4: Ipv4Addr,
    v6: Ipv6Addr,
    encapsulated: bool,
    rng: rand::rngs::StdRng,
}

impl Request {
    fn new(c: &Common, eids: u64, encapsulated: bool) -> anyhow::Result<Self> {
        if eids == 0 {
            bail!("--eids must be at least 1");
        }
        check_eid_range(c.eid_base, eids)?;
        Ok(Request { eids, v4: c.eid_base, v6: c.v6_base, encapsulated, rng: rand::rngs::StdRng::from_entropy() })
    }
}

/// A Map-Request for `eid` from an ITR at `local`.
fn map_request(eid: &EidPrefix, nonce: u64, local: IpAddr) -> MapRequest {
    mapping::map_request(nonce, eid, vec![Address::from(local)])
}

impl Workload for Request {
    fn name(&self) -> &'static str {
        if self.encapsulated {
            "Encapsulated Map-Request"
        } else {
            "Map-Request"
        }
    }

    fn messages(&self, count: u64) -> u64 {
        count
    }

    /// Requests are independent: only registers need their nonces in order.
    fn reorderable(&self) -> bool {
        true
    }

    fn encode(&mut self, _seq: u64, nonce: u64, _socket: usize, local: SocketAddr, out: &mut Vec<u8>) {
        let eid = eid_of(self.v4, self.v6, self.rng.gen_range(0..self.eids));
        let req = map_request(&eid, nonce, local.ip());
        out.clear();
        if self.encapsulated {
            out.extend_from_slice(&encapsulate_request(local.ip(), local.port(), &req).to_bytes());
        } else {
            out.extend_from_slice(&req.to_bytes());
        }
    }
}

/// What an answer datagram is, as far as the generator cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Map-Reply whose first record has locators.
    Positive,
    /// Map-Reply without locators.
    Negative,
    Notify,
    /// Our own message, sent back by the baseline echo.
    Echo,
}

/// The nonce and kind of an answer, read straight from the fixed header fields (parsing every
/// answer in full would make the generator measure itself).
fn answer_of(d: &[u8]) -> Option<(u64, Kind)> {
    let nonce_at = |at: usize| d.get(at..at + 8).map(|b| u64::from_be_bytes(b.try_into().unwrap_or_default()));
    match d.first()? >> 4 {
        // Map-Reply: record count in byte 3, nonce, then the first record's locator count at
        // byte 4 of the record.
        2 => {
            let positive = d.get(3).is_some_and(|&n| n > 0) && d.get(16).is_some_and(|&n| n > 0);
            Some((nonce_at(4)?, if positive { Kind::Positive } else { Kind::Negative }))
        }
        4 => Some((nonce_at(4)?, Kind::Notify)),
        1 | 3 => Some((nonce_at(4)?, Kind::Echo)),
        // An echoed ECM: 4-byte LISP header, inner IP and UDP headers, then the Map-Request.
        8 => {
            let ip_len = match d.get(4)? >> 4 {
                4 => usize::from(d[4] & 0x0f) * 4,
                6 => 40,
                _ => return None,
            };
            Some((nonce_at(4 + ip_len + 8 + 4)?, Kind::Echo))
        }
        _ => None,
    }
}

/// The figures of one run.
#[derive(Default, Clone)]
pub struct Report {
    pub sent: u64,
    pub answered: u64,
    pub positive: u64,
    pub negative: u64,
    pub notify: u64,
    pub echo: u64,
    pub lost: u64,
    pub unmatched: u64,
    pub send_errors: u64,
    /// First send to last answer (or to the end of the run when nothing came back).
    pub elapsed: Duration,
    /// First send to last send.
    pub send_time: Duration,
    /// Sorted round-trip times in nanoseconds.
    latencies: Vec<u32>,
    pub stopped_by_duration: bool,
}

impl Report {
    /// Answers per second.
    pub fn rate(&self) -> f64 {
        self.answered as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn send_rate(&self) -> f64 {
        self.sent as f64 / self.send_time.as_secs_f64().max(1e-9)
    }

    /// The `q`-quantile round-trip time (nearest rank), if anything was answered.
    pub fn percentile(&self, q: f64) -> Option<Duration> {
        percentile(&self.latencies, q).map(|ns| Duration::from_nanos(ns.into()))
    }

    fn json(&self) -> Value {
        let ms = |q: f64| self.percentile(q).map(|d| d.as_secs_f64() * 1e3);
        json!({
            "sent": self.sent,
            "answered": self.answered,
            "positive_replies": self.positive,
            "negative_replies": self.negative,
            "map_notifies": self.notify,
            "echoes": self.echo,
            "lost": self.lost,
            "unmatched": self.unmatched,
            "send_errors": self.send_errors,
            "elapsed_s": self.elapsed.as_secs_f64(),
            "rate_per_s": self.rate(),
            "send_rate_per_s": self.send_rate(),
            "stopped_by_duration": self.stopped_by_duration,
            "latency_ms": { "p50": ms(0.5), "p99": ms(0.99), "p99.9": ms(0.999), "max": ms(1.0) },
        })
    }

    fn render(&self, title: &str) -> String {
        let ms = |q: f64| self.percentile(q).map_or("-".into(), |d| format!("{:.3}", d.as_secs_f64() * 1e3));
        let mut kinds = Vec::new();
        for (n, what) in
            [(self.positive, "positive"), (self.negative, "negative"), (self.notify, "Map-Notify"), (self.echo, "echo")]
        {
            if n > 0 {
                kinds.push(format!("{n} {what}"));
            }
        }
        let mut out = format!(
            "{title}\n  sent {} in {:.2} s ({:.0}/s), answered {} ({}), lost {}, unmatched {}, send errors {}{}\n",
            self.sent,
            self.send_time.as_secs_f64(),
            self.send_rate(),
            self.answered,
            if kinds.is_empty() { "none".into() } else { kinds.join(", ") },
            self.lost,
            self.unmatched,
            self.send_errors,
            if self.stopped_by_duration { " (stopped by --duration)" } else { "" },
        );
        out += &format!(
            "  rate {:.0} answers/s; latency ms p50 {}  p99 {}  p99.9 {}  max {}\n",
            self.rate(),
            ms(0.5),
            ms(0.99),
            ms(0.999),
            ms(1.0)
        );
        out
    }
}

impl std::fmt::Debug for Report {
    /// The JSON figures: the latencies themselves are too many to print.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.json())
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[u32], q: f64) -> Option<u32> {
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    let rank = (q.clamp(0.0, 1.0) * n as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, n) - 1])
}

/// Sends the workload to `target` within `limits` and collects the answers.
fn generate(target: SocketAddr, limits: &Bounds, work: &mut dyn Workload) -> anyhow::Result<Report> {
    let binds = local_addresses(target.ip(), limits, work.answer_port())?;
    if limits.interval_ns > 0.0 {
        // Coarse sleeps would send in bursts; without it pacing is only less even.
        let _ = sys::fine_timer_slack();
    }
    let mut poll = Poll::new().context("cannot create a poller")?;
    let mut sockets = Vec::with_capacity(binds.len());
    for (i, bind) in binds.into_iter().enumerate() {
        let mut s = mio::net::UdpSocket::bind(bind).with_context(|| match work.answer_port() {
            Some(p) => format!("cannot bind UDP {bind} (Map-Notify comes to port {p}: give --source a free address)"),
            None => format!("cannot bind UDP {bind}"),
        })?;
        // Connecting picks the source address that routes to the target (and filters
        // strays); answers come from the port we sent to.
        s.connect(target).with_context(|| format!("no route to {target}"))?;
        // Answers to a whole window must fit while we are busy sending.
        let _ = socket2::SockRef::from(&s).set_recv_buffer_size(4 << 20);
        poll.registry().register(&mut s, Token(i), Interest::READABLE)?;
        let local = s.local_addr()?;
        sockets.push((s, local));
    }
    let total = work.messages(limits.count);
    let mut run = Flight {
        base: rand::thread_rng().gen_range(1..1 << 62),
        ring: vec![UNUSED; RING],
        sent: 0,
        oldest: 0,
        in_flight: 0,
        report: Report::default(),
        latencies: Vec::with_capacity(total.min(10_000_000) as usize),
        last_answer: 0,
    };
    let mut events = Events::with_capacity(256);
    let mut batch = sys::RecvBatch::new(2048);
    let mut msgs: Vec<Vec<u8>> = (0..sys::BATCH).map(|_| Vec::with_capacity(1500)).collect();
    let start = Instant::now();
    let ns = |t: Instant| t.duration_since(start).as_nanos() as u64;
    let (timeout_ns, duration_ns) = (limits.timeout.as_nanos() as u64, limits.duration.as_nanos() as u64);
    let mut last_send = 0u64;
    // Segmented sends make the generator cheaper; the Map-Server still receives datagrams one
    // by one. Off after the first refusal (a kernel without UDP GSO).
    let mut segment = work.reorderable();
    for turn in 0usize.. {
        let now = ns(Instant::now());
        let sending = run.sent < total && now < duration_ns;
        if !sending && run.sent < total {
            run.report.stopped_by_duration = true;
        }
        // Send, from one socket per turn, what the window, the pace and the ring allow.
        let (first, mut n, mut paced_wait) = (run.sent, 0, None);
        let i = turn % sockets.len();
        while sending && n < sys::BATCH && first + (n as u64) < total && run.may_send(limits.window) {
            let seq = first + n as u64;
            let due = (seq as f64 * limits.interval_ns) as u64;
            if due > now {
                paced_wait = Some(due - now);
                break;
            }
            work.encode(seq, run.base.wrapping_add(seq), i, sockets[i].1, &mut msgs[n]);
            run.launch(now);
            n += 1;
        }
        if n > 0 {
            let fd = sockets[i].0.as_fd();
            segment = segment && send_grouped(fd, target, &msgs[..n], |k| run.fail(first + k as u64));
            if !segment {
                let batch: Vec<(SocketAddr, &[u8])> = msgs[..n].iter().map(|m| (target, m.as_slice())).collect();
                sys::send_batch(fd, &batch, |k, _| run.fail(first + k as u64));
            }
            last_send = now;
        }
        run.retire(now, timeout_ns);
        if !sending && run.in_flight == 0 {
            break;
        }
        // Wait for answers: not at all while there is more to send now, else until the next
        // send is due. The poller counts in milliseconds, so shorter waits sleep (answers that
        // come meanwhile are read, and timed, up to one send interval late) rather than spin:
        // a spinning generator takes the CPU the Map-Server needs.
        let can_send_now = sending && run.may_send(limits.window) && paced_wait.is_none();
        let wait = match paced_wait {
            _ if can_send_now => Duration::ZERO,
            Some(w) if w < 1_000_000 => {
                std::thread::sleep(Duration::from_nanos(w));
                Duration::ZERO
            }
            Some(w) => Duration::from_nanos(w - 500_000),
            None => Duration::from_millis(1),
        };
        poll.poll(&mut events, Some(wait)).context("poll failed")?;
        for ev in events.iter() {
            // Drain the socket (the poller reports edges). An error is reported once and
            // cleared, such as ICMP port unreachable when nothing listens: those messages time
            // out. A few in a row end the turn.
            let mut errors = 0;
            loop {
                match batch.recv(sockets[ev.token().0].0.as_fd()) {
                    Ok(0) => break,
                    Ok(_) => {
                        let at = ns(Instant::now());
                        for (_, d) in batch.iter() {
                            run.answer(d, at);
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(_) if errors < 8 => errors += 1,
                    Err(e) => return Err(e).context("cannot receive"),
                }
            }
        }
    }
    let mut report = run.report;
    report.sent = run.sent;
    report.send_time = Duration::from_nanos(last_send);
    report.elapsed = Duration::from_nanos(if report.answered > 0 { run.last_answer } else { ns(Instant::now()) });
    run.latencies.sort_unstable();
    report.latencies = run.latencies;
    Ok(report)
}

/// Sends `msgs` to `dst` as segmented sends of same-size groups. Returns false, having sent
/// nothing, when the kernel refuses segmentation (the caller sends them plainly then); reports
/// other failures per message to `failed`.
fn send_grouped(
    fd: std::os::fd::BorrowedFd<'_>,
    dst: SocketAddr,
    msgs: &[Vec<u8>],
    mut failed: impl FnMut(usize),
) -> bool {
    let mut order: Vec<usize> = (0..msgs.len()).collect();
    order.sort_by_key(|&k| msgs[k].len());
    let mut tried = false;
    for group in order.chunk_by(|a, b| msgs[*a].len() == msgs[*b].len()) {
        for chunk in group.chunks(sys::GSO_MAX_SEGMENTS) {
            let payloads: Vec<&[u8]> = chunk.iter().map(|&k| msgs[k].as_slice()).collect();
            match sys::send_segmented(fd, dst, &payloads) {
                Ok(()) => {}
                // EINVAL, EIO or ENOPROTOOPT on the first send: no UDP GSO here.
                Err(e) if !tried && matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EIO | libc::ENOPROTOOPT)) => {
                    return false
                }
                Err(_) => chunk.iter().for_each(|&k| failed(k)),
            }
            tried = true;
        }
    }
    true
}

/// The messages of a run in flight: send times in a ring indexed by sequence number (the nonce
/// less `base`), the oldest that may still be unanswered, and the counts.
struct Flight {
    base: u64,
    ring: Vec<u64>,
    sent: u64,
    /// Every message before this one is answered, lost or failed.
    oldest: u64,
    in_flight: usize,
    report: Report,
    latencies: Vec<u32>,
    last_answer: u64,
}

impl Flight {
    /// Whether the window and the ring have room for one more.
    fn may_send(&self, window: usize) -> bool {
        self.in_flight < window && self.sent - self.oldest < RING as u64
    }

    /// Records message `sent` as sent at `now`.
    fn launch(&mut self, now: u64) {
        self.ring[(self.sent & RING_MASK) as usize] = now;
        self.sent += 1;
        self.in_flight += 1;
    }

    /// Message `seq` could not be sent.
    fn fail(&mut self, seq: u64) {
        self.ring[(seq & RING_MASK) as usize] = UNUSED;
        self.in_flight -= 1;
        self.report.send_errors += 1;
    }

    /// Retires what timed out, oldest first, so the window and the ring move on.
    fn retire(&mut self, now: u64, timeout_ns: u64) {
        while self.oldest < self.sent {
            let slot = &mut self.ring[(self.oldest & RING_MASK) as usize];
            if *slot != UNUSED {
                if now.saturating_sub(*slot) < timeout_ns {
                    break;
                }
                *slot = UNUSED;
                self.report.lost += 1;
                self.in_flight -= 1;
            }
            self.oldest += 1;
        }
    }

    /// Matches an answer that arrived at `at` to its message.
    fn answer(&mut self, d: &[u8], at: u64) {
        let Some((nonce, kind)) = answer_of(d) else {
            self.report.unmatched += 1;
            return;
        };
        let seq = nonce.wrapping_sub(self.base);
        let slot = (seq & RING_MASK) as usize;
        if seq < self.oldest || seq >= self.sent || self.ring[slot] == UNUSED {
            self.report.unmatched += 1;
            return;
        }
        self.latencies.push(at.saturating_sub(self.ring[slot]).min(u64::from(u32::MAX)) as u32);
        self.ring[slot] = UNUSED;
        self.in_flight -= 1;
        self.report.answered += 1;
        self.last_answer = at;
        match kind {
            Kind::Positive => self.report.positive += 1,
            Kind::Negative => self.report.negative += 1,
            Kind::Notify => self.report.notify += 1,
            Kind::Echo => self.report.echo += 1,
        }
    }
}

/// Where the sockets bind. With a fixed answer port each socket needs its own address: the
/// consecutive loopback addresses from --source (default 127.0.0.2), skipping the target's, or
/// the one --source / routed address for other targets (one socket).
fn local_addresses(target: IpAddr, limits: &Bounds, port: Option<u16>) -> anyhow::Result<Vec<SocketAddr>> {
    let Some(port) = port else {
        // Loopback when the target is, so nothing leaves the host by mistake.
        let ip = limits.source.unwrap_or(match target {
            ip if ip.is_loopback() => ip,
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        });
        return Ok(vec![SocketAddr::new(ip, 0); limits.sockets]);
    };
    let first = match (limits.source, target) {
        (Some(ip), _) => ip,
        (None, IpAddr::V4(t)) if t.is_loopback() => IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)),
        (None, IpAddr::V6(t)) if t.is_loopback() => bail!(
            "answers come to port {port} and ::1 is the only IPv6 loopback address, which the Map-Server \
             holds: run the Map-Server on 127.0.0.1 or give --source"
        ),
        (None, t) => {
            let any = if t.is_ipv4() { IpAddr::V4(Ipv4Addr::UNSPECIFIED) } else { IpAddr::V6(Ipv6Addr::UNSPECIFIED) };
            let probe = UdpSocket::bind(SocketAddr::new(any, 0))
                .and_then(|s| s.connect(SocketAddr::new(t, port)).and(s.local_addr()));
            probe.with_context(|| format!("no route to {t}"))?.ip()
        }
    };
    match first {
        IpAddr::V4(a) if a.is_loopback() => {
            let addrs = (u32::from(a)..u32::from(Ipv4Addr::new(127, 255, 255, 255)))
                .map(|n| IpAddr::V4(Ipv4Addr::from(n)))
                .filter(|ip| *ip != target)
                .take(limits.sockets);
            Ok(addrs.map(|ip| SocketAddr::new(ip, port)).collect())
        }
        ip => Ok(vec![SocketAddr::new(ip, port)]),
    }
}

/// What `udp-send` offers (see [`Mode::UdpSend`]).
#[derive(Debug, Clone)]
pub struct UdpLoad {
    pub to: SocketAddr,
    pub size: usize,
    pub pps: u64,
    pub secs: f64,
    pub flows: usize,
    pub lab: bool,
}

/// The figures of `udp-send` or `udp-recv`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UdpReport {
    /// Datagrams handed to (sender) or received from (receiver) the kernel
    pub packets: u64,
    /// Sender: datagrams the kernel refused (full buffers). Receiver: sequence numbers
    /// skipped before the highest one seen (losses at the very end are not visible here:
    /// compare with the sender's count)
    pub lost: u64,
    /// Receiver: datagrams whose sequence number was not above the highest seen so far
    pub reordered: u64,
    /// From the first to the last datagram
    pub secs: f64,
}

impl UdpReport {
    pub fn pps(&self) -> f64 {
        if self.secs > 0.0 {
            self.packets as f64 / self.secs
        } else {
            0.0
        }
    }
}

fn print_udp(r: &UdpReport, json: bool) -> anyhow::Result<()> {
    if json {
        let v = json!({ "packets": r.packets, "lost": r.lost, "reordered": r.reordered, "secs": r.secs, "pps": r.pps().round() });
        println!("{}", serde_json::to_string(&v)?);
    } else {
        println!(
            "{} packets in {:.3} s: {:.0} pps, {} lost, {} reordered",
            r.packets,
            r.secs,
            r.pps(),
            r.lost,
            r.reordered
        );
    }
    Ok(())
}

/// Sends `pps` datagrams a second for `secs`, each starting with its sequence number (u64, big
/// endian), in batches of [`sys::BATCH`] by `sendmmsg`, the flows' sockets taking batches in
/// turn. Pacing: before each batch, sleep until it is due, so bursts are at most one batch; a
/// sender that cannot keep up sends back to back and stops at `secs` all the same.
pub fn udp_send(load: UdpLoad) -> anyhow::Result<UdpReport> {
    let UdpLoad { to, size, pps, secs, flows, lab } = load;
    check_data_target(to.ip(), lab)?;
    if !(8..=9000).contains(&size) {
        bail!("--size {size}: 8 to 9000 bytes (the sequence number takes 8)");
    }
    if !(1..=5_000_000).contains(&pps) {
        bail!("--pps {pps}: 1 to 5000000");
    }
    if !(secs > 0.0 && secs <= 60.0) {
        bail!("--secs {secs}: more than 0, at most 60");
    }
    if !(1..=64).contains(&flows) {
        bail!("--flows {flows}: 1 to 64");
    }
    let local =
        SocketAddr::new(if to.is_ipv4() { Ipv4Addr::UNSPECIFIED.into() } else { Ipv6Addr::UNSPECIFIED.into() }, 0);
    let sockets = (0..flows)
        .map(|_| {
            let s = UdpSocket::bind(local).context("cannot bind a sending socket")?;
            // A larger send buffer rides out the scheduler's hiccups instead of refusing.
            let _ = socket2::SockRef::from(&s).set_send_buffer_size(4 << 20);
            Ok(s)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let _ = sys::fine_timer_slack();
    let total = (pps as f64 * secs).round() as u64;
    let mut bufs = vec![vec![0u8; size]; sys::BATCH];
    let mut report = UdpReport::default();
    let start = Instant::now();
    let mut seq = 0u64;
    let mut turn = 0usize;
    let until = start + Duration::from_secs_f64(secs);
    // Bounded in time as well as count: a generator that falls behind stops at --secs.
    while seq < total && Instant::now() < until {
        let n = (total - seq).min(sys::BATCH as u64);
        // The batch is due when its last datagram is.
        let due = start + Duration::from_secs_f64((seq + n) as f64 / pps as f64);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        for (i, b) in bufs.iter_mut().take(n as usize).enumerate() {
            b[..8].copy_from_slice(&(seq + i as u64).to_be_bytes());
        }
        let msgs: Vec<(SocketAddr, &[u8])> = bufs.iter().take(n as usize).map(|b| (to, b.as_slice())).collect();
        let mut refused = 0u64;
        sys::send_batch(sockets[turn].as_fd(), &msgs, |_, _| refused += 1);
        report.packets += n - refused;
        report.lost += refused;
        seq += n;
        turn = (turn + 1) % flows;
    }
    report.secs = start.elapsed().as_secs_f64();
    Ok(report)
}

/// Counts `udp-send`'s datagrams on `listen` until `secs` have passed, or 1 s after the last
/// one once some arrived.
pub fn udp_recv(listen: SocketAddr, secs: f64) -> anyhow::Result<UdpReport> {
    if !(secs > 0.0 && secs <= 120.0) {
        bail!("--secs {secs}: more than 0, at most 120");
    }
    let socket = UdpSocket::bind(listen).with_context(|| format!("cannot bind {listen}"))?;
    // Room for bursts while this thread is off the CPU (capped by net.core.rmem_max).
    let _ = socket2::SockRef::from(&socket).set_recv_buffer_size(8 << 20);
    socket.set_read_timeout(Some(Duration::from_millis(100)))?;
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut batch = sys::RecvBatch::new(64);
    let mut report = UdpReport::default();
    let (mut first, mut last) = (None::<Instant>, None::<Instant>);
    let mut next = 0u64;
    loop {
        if Instant::now() >= deadline {
            break;
        }
        match batch.recv(socket.as_fd()) {
            Ok(_) => {}
            // Idle only when nothing is queued: a receiver kept off the CPU for a while must
            // not stop with datagrams waiting.
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                if last.is_some_and(|l| l.elapsed() >= Duration::from_secs(1)) {
                    break;
                }
                continue;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context("receiving"),
        }
        let at = Instant::now();
        first.get_or_insert(at);
        last = Some(at);
        for (_, d) in batch.iter() {
            let Some(seq) = d.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes) else {
                continue; // not ours: too short to carry a sequence number
            };
            report.packets += 1;
            if seq >= next {
                report.lost += seq - next;
                next = seq + 1;
            } else {
                // Late: it was counted lost when the gap opened.
                report.reordered += 1;
                report.lost = report.lost.saturating_sub(1);
            }
        }
    }
    if let (Some(f), Some(l)) = (first, last) {
        report.secs = (l - f).as_secs_f64();
    }
    Ok(report)
}

/// A trivial UDP echo on a loopback address, on its own thread: the baseline.
struct Echo {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Echo {
    fn start(ip: IpAddr) -> anyhow::Result<Echo> {
        let socket = UdpSocket::bind(SocketAddr::new(ip, 0)).context("cannot bind the echo socket")?;
        socket.set_read_timeout(Some(Duration::from_millis(50)))?;
        let addr = socket.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !flag.load(Ordering::Relaxed) {
                if let Ok((n, from)) = socket.recv_from(&mut buf) {
                    let _ = socket.send_to(&buf[..n], from);
                }
            }
        });
        Ok(Echo { addr, stop, thread })
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use loci_core::node::Node;
    use loci_wire::message::ControlMessage;

    fn common(count: u64) -> Common {
        Common { count, duration: 10.0, window: 32, sockets: 3, ..Common::for_core() }
    }

    #[test]
    fn targets_are_loopback_or_lab() {
        for ok in ["127.0.0.1", "127.9.9.9", "::1"] {
            assert!(check_target(ok.parse().unwrap(), false).is_ok(), "{ok}");
        }
        for lab in ["198.18.0.1", "198.19.255.254", "192.0.2.10", "198.51.100.1", "203.0.113.9"] {
            assert!(check_target(lab.parse().unwrap(), false).is_err(), "{lab} without --lab");
            assert!(check_target(lab.parse().unwrap(), true).is_ok(), "{lab} with --lab");
        }
        for bad in ["10.0.0.1", "192.168.1.1", "8.8.8.8", "198.20.0.1", "2001:db8::1", "0.0.0.0"] {
            let e = check_target(bad.parse().unwrap(), true).unwrap_err().to_string();
            assert!(e.contains("only loopback"), "{bad}: {e}");
        }
    }

    #[test]
    fn eids_alternate_families_and_stay_distinct() {
        let (v4, v6) = ("10.0.0.0".parse().unwrap(), "2001:db8::".parse().unwrap());
        let s: Vec<String> = (0..4).map(|i| eid_of(v4, v6, i).to_string()).collect();
        assert_eq!(s, ["10.0.0.0/32", "2001:db8::/128", "10.0.0.1/32", "2001:db8::1/128"]);
        let all: std::collections::HashSet<_> = (0..10_000).map(|i| eid_of(v4, v6, i)).collect();
        assert_eq!(all.len(), 10_000);
        assert!(check_eid_range("255.255.255.0".parse().unwrap(), 512).is_ok());
        assert!(check_eid_range("255.255.255.0".parse().unwrap(), 514).is_err());
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<u32> = (1..=1000).collect();
        assert_eq!(percentile(&v, 0.5), Some(500));
        assert_eq!(percentile(&v, 0.99), Some(990));
        assert_eq!(percentile(&v, 0.999), Some(999));
        assert_eq!(percentile(&v, 1.0), Some(1000));
        assert_eq!(percentile(&v, 0.0), Some(1));
        assert_eq!(percentile(&[], 0.5), None);
    }

    #[test]
    fn bounds_are_checked() {
        assert!(Bounds::check(&common(1)).is_ok());
        for bad in [
            Common { count: 0, ..common(1) },
            Common { rate: -1.0, ..common(1) },
            Common { rate: f64::NAN, ..common(1) },
            Common { duration: 0.0, ..common(1) },
            Common { duration: 1e9, ..common(1) },
            Common { timeout: 5.0, ..common(1) },
            Common { window: 0, ..common(1) },
            Common { sockets: 0, ..common(1) },
        ] {
            assert!(Bounds::check(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn registers_carry_the_bits_increasing_nonces_and_distinct_eids() {
        let c = common(5);
        let mut w = Register::new(&c, b"k".to_vec(), 3, Algorithm::HmacSha256_128, 2).unwrap();
        assert_eq!(w.messages(5), 3);
        let local: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let mut eids = Vec::new();
        for seq in 0..3 {
            let mut out = Vec::new();
            w.encode(seq, 100 + seq, 1, local, &mut out);
            let keys = loci_wire::auth::KeyRing::with_key(3, b"k".to_vec());
            assert!(loci_wire::auth::verify(&out, &keys, false).is_ok());
            let Ok(ControlMessage::MapRegister(r)) = ControlMessage::parse(&out) else { panic!("not a Map-Register") };
            assert!(r.want_map_notify && r.proxy_reply && !r.merge);
            assert_eq!(r.nonce, 100 + seq);
            assert_eq!(r.xtr_id.map(|x| x.xtr_id & 0xff), Some(1));
            eids.extend(r.records.iter().map(|r| (r.eid.clone(), r.eid_mask_len)));
        }
        assert_eq!(eids.len(), 5, "the last register holds the remainder");
        assert_eq!(eids[4], (Address::Ipv4("10.0.0.2".parse().unwrap()), 32));
        assert_eq!(eids[1], (Address::Ipv6("2001:db8::".parse().unwrap()), 128));
    }

    #[test]
    fn answers_are_read_from_replies_notifies_and_echoes() {
        let local: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let eid = eid_of("10.0.0.0".parse().unwrap(), "2001:db8::".parse().unwrap(), 0);
        let req = map_request(&eid, 42, local.ip());
        assert_eq!(answer_of(&req.to_bytes()), Some((42, Kind::Echo)));
        let ecm = encapsulate_request(local.ip(), local.port(), &req).to_bytes();
        assert_eq!(answer_of(&ecm), Some((42, Kind::Echo)));
        let v6 = map_request(&eid, 43, "::1".parse().unwrap());
        let ecm6 = encapsulate_request("::1".parse().unwrap(), 9, &v6).to_bytes();
        assert_eq!(answer_of(&ecm6), Some((43, Kind::Echo)));
        let record = |locators: Vec<Locator>| record(&eid, 1, Action::NO_ACTION, false, locators);
        let reply = |records| {
            loci_wire::map_reply::MapReply {
                probe: false,
                echo_nonce_capable: false,
                security: false,
                nonce: 7,
                records,
                auth: None,
            }
            .to_bytes()
        };
        let loc = Locator {
            priority: 1,
            weight: 1,
            m_priority: 255,
            m_weight: 0,
            local: false,
            probed: false,
            reachable: true,
            address: Address::Ipv4(BENCH_RLOC),
        };
        assert_eq!(answer_of(&reply(vec![record(vec![loc])])), Some((7, Kind::Positive)));
        assert_eq!(answer_of(&reply(vec![record(vec![])])), Some((7, Kind::Negative)));
        assert_eq!(answer_of(&[0x20, 0, 0]), None, "truncated");
        assert_eq!(answer_of(&[0x70; 20]), None, "not an answer type");
        assert_eq!(answer_of(&[]), None);
    }

    #[test]
    fn generated_config_is_valid_and_out_of_the_way() {
        let dir = std::path::Path::new("/tmp/loci-bench-test");
        let text = config("se\"cret", "127.0.0.1".parse().unwrap(), 14342, dir);
        let cfg = crate::config::parse(&dir.join("bench.toml"), &text).expect("bench config parses");
        let l = &cfg.core.limits;
        assert!(l.map_requests_per_source >= 1_000_000 && l.map_registers_per_source >= 1_000_000);
        assert_eq!(l.map_reply_repeat, Duration::ZERO);
        assert_eq!(cfg.node.control_port, 14342);
        let ms = cfg.core.map_server.expect("a map-server");
        assert_eq!(ms.sites[0].keys.get(0), Some(&b"se\"cret"[..]));
        assert!(ms.sites[0].force_proxy_reply);
        assert!(ms.max_registrations >= 1_000_000);
    }

    /// A Map-Server core behind a loopback socket, as the daemon drives it, for `for_how_long`.
    fn serve(cfg: loci_core::config::NodeConfig) -> (SocketAddr, Arc<AtomicBool>, std::thread::JoinHandle<Node>) {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let addr = socket.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut node = Node::new(cfg, 1, Instant::now());
            let mut buf = vec![0u8; 9216];
            while !flag.load(Ordering::Relaxed) {
                if let Ok((n, from)) = socket.recv_from(&mut buf) {
                    node.handle_datagram(Instant::now(), addr, from, &buf[..n]);
                    while let Some(t) = node.poll_transmit() {
                        let _ = socket.send_to(&t.data, t.dst);
                    }
                }
            }
            node
        });
        (addr, stop, thread)
    }

    #[test]
    fn registers_then_requests_against_a_map_server_core() {
        let dir = std::path::Path::new("/tmp/loci-bench-test");
        let text = config("k", "127.0.0.1".parse().unwrap(), 4342, dir);
        let cfg = crate::config::parse(&dir.join("bench.toml"), &text).unwrap();
        let (addr, stop, thread) = serve(cfg.core);
        // Map-Notify comes to port 4342: send from loopback addresses unlikely to be in use.
        let source = Some(IpAddr::V4(Ipv4Addr::new(127, 77, rand::random(), 1)));
        let c = Common { to: Some(addr.ip()), port: addr.port(), source, ..common(300) };
        let limits = Bounds::check(&c).unwrap();
        let mut reg = Register::new(&c, b"k".to_vec(), 0, Algorithm::HmacSha256_128, 2).unwrap();
        let r = generate(addr, &limits, &mut reg).unwrap();
        assert_eq!((r.sent, r.notify, r.lost, r.unmatched), (150, 150, 0, 0), "{r:?}");
        let mut req = Request::new(&c, 300, false).unwrap();
        req.rng = rand::rngs::StdRng::seed_from_u64(7);
        let q = generate(addr, &limits, &mut req).unwrap();
        assert_eq!((q.sent, q.positive, q.lost), (300, 300, 0), "{q:?}");
        // EIDs past the registered ones get negative replies.
        let (eid_base, v6_base) = ("10.0.1.0".parse().unwrap(), "2001:db8:1::".parse().unwrap());
        let mut outside = Request::new(&Common { eid_base, v6_base, ..c.clone() }, 300, true).unwrap();
        let n = generate(addr, &limits, &mut outside).unwrap();
        assert_eq!((n.sent, n.negative), (300, 300), "{n:?}");
        assert!(q.percentile(0.99).is_some());
        stop.store(true, Ordering::Relaxed);
        let node = thread.join().unwrap();
        assert_eq!(node.map_server().unwrap().registrations().len(), 300);
    }

    #[test]
    fn paced_run_against_the_echo_keeps_its_rate_and_bounds() {
        let echo = Echo::start(IpAddr::V4(Ipv4Addr::LOCALHOST)).unwrap();
        let c = Common { rate: 2000.0, ..common(200) };
        let limits = Bounds::check(&c).unwrap();
        let mut req = Request::new(&c, 10, false).unwrap();
        let t0 = Instant::now();
        let r = generate(echo.addr, &limits, &mut req).unwrap();
        echo.stop();
        assert_eq!((r.sent, r.echo), (200, 200));
        // 200 messages at 2000/s take about 0.1 s.
        assert!(t0.elapsed() >= Duration::from_millis(95), "{:?}", t0.elapsed());
        assert!(r.send_rate() < 2300.0, "{}", r.send_rate());
        // A duration cap stops the run early.
        let c = Common { rate: 100.0, duration: 0.2, ..common(1000) };
        let echo = Echo::start(IpAddr::V4(Ipv4Addr::LOCALHOST)).unwrap();
        let r = generate(echo.addr, &Bounds::check(&c).unwrap(), &mut req).unwrap();
        echo.stop();
        assert!(r.stopped_by_duration && r.sent <= 21, "{r:?}");
    }

    #[test]
    fn the_core_alone_registers_and_answers_everything() {
        // It checks its own results: every EID held, every request answered by proxy.
        core(200, 300, true).unwrap();
        assert!(core(0, 1, true).is_err());
    }

    #[test]
    fn nothing_listening_counts_as_lost() {
        // Bind and drop to find a port nobody listens on.
        let port = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let c = Common { timeout: 0.1, ..common(5) };
        let mut req = Request::new(&c, 10, false).unwrap();
        let r = generate(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port), &Bounds::check(&c).unwrap(), &mut req)
            .unwrap();
        // Each is lost, or refused at sending when an earlier one's ICMP port unreachable came
        // back first (a connected socket reports it on the next send).
        assert_eq!((r.sent, r.answered, r.lost + r.send_errors), (5, 0, 5));
        assert_eq!(r.percentile(0.5), None);
    }
}
