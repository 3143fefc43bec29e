//! loci-dataplane: the LISP packet path of an xTR (DESIGN §3).
//!
//! ```text
//! host --> TUN(iid) --> ITR worker: flow hash, flow cache / map-cache snapshot,
//!                         hit:  LISP header in place, UDP (GSO) to RLOC:4341 from a source
//!                               port of the flow
//!                         miss: hand (iid, dst, src) to the control plane, keep the packet
//!                               until the mapping is in (a few per destination)
//! underlay UDP 4341 --> ETR worker: decapsulate (our RLOC? sane header? known IID?),
//!                         write the inner packets to TUN(iid), coalesced (GRO)
//! ```
//!
//! The per-packet decisions are loci-core's pure functions ([`loci_core::encap`],
//! [`loci_core::map_cache::Snapshot`], [`loci_core::flow_cache`]); this crate owns the devices,
//! sockets and threads around them. Workers are plain threads doing blocking I/O (one per TUN
//! device for the ITR, one per RLOC for the ETR), each with its own buffers and counters: no
//! allocation, lock or shared write on the per-packet path.
//!
//! Throughput comes from batching and offload (DESIGN §3): TUN devices with virtio-net
//! headers (TSO/GSO in, GRO out), UDP GSO and GRO on the underlay, `sendmmsg`/`recvmmsg`.
//! Encapsulated packets leave through UDP sockets, so that the kernel can segment a batch; the
//! outer header then follows RFC 9300 §5.3 as far as a socket allows:
//! * TTL / hop limit and TOS / traffic class (DSCP and ECN) copied from the inner header, per
//!   message (`IP_TTL`/`IP_TOS`, `IPV6_HOPLIMIT`/`IPV6_TCLASS` control messages; a GSO
//!   message only joins packets that agree on both);
//! * DF set over IPv4, no source fragmentation over IPv6;
//! * source port per flow: the flow hash picks one of [`senders::POOL`] sockets bound to
//!   0xC000 + i, instead of `0xC000 | (hash & 0x3FFF)` on a raw socket;
//! * the UDP checksum is filled in (by the NIC where it can): UDP GSO requires it; RFC 9300
//!   §5.3 allows it (its SHOULD is zero) and ETRs must accept both;
//! * the IPv6 flow label is the kernel's per-socket one instead of 20 bits of the flow hash.
#![deny(unsafe_code)]

mod away;
mod counters;
pub mod detect;
mod etr;
mod frame;
mod icmp;
mod itr;
mod link_sys;
mod mtu;
mod petr;
mod senders;
mod status;
mod sys;
mod tun;
pub mod underlay_watch;

use std::io;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use ipnet::IpNet;
use loci_core::echo_nonce::EchoTable;
use loci_core::map_cache::MapCacheReader;

pub use away::{Away, AwayCounters, AwayPacket, AwaySink};
pub use counters::{Drop, Stats};
pub use frame::parse_mac;
pub use loci_core::encap::{ENCAP_OVERHEAD_V4, ENCAP_OVERHEAD_V6};
pub use mtu::MtuMethod;
pub use status::StatusSink;
pub use sys::set_int_option;
pub use tun::add_route;

/// One instance ID's TUN device and the EID prefixes routed into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub iid: u32,
    /// Interface name (created if missing).
    pub tun: String,
    /// Destinations the ITR serves: routed into the TUN device when the data plane starts.
    pub routes: Vec<IpNet>,
    /// Routing table for `routes` (the main table when `None`). With `ip rule`s that send the
    /// site's traffic and the TUN's own (`iif`) to it, instances with overlapping EIDs stay
    /// apart on one host.
    pub table: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub instances: Vec<Instance>,
    /// Our RLOCs: the ETR listens on them, the ITR sends from the first of each family.
    pub rlocs: Vec<IpAddr>,
    pub itr: bool,
    pub etr: bool,
    /// MTU of the underlay; the TUN devices get this minus the encapsulation overhead.
    pub underlay_mtu: u16,
    /// Slots of each ITR worker's flow cache (0: no flow cache).
    pub flow_cache_slots: usize,
    /// PETRs for the ITR, relaying for the ETR (RFC 6832).
    pub proxy: loci_core::petr::Proxy,
    /// Packets too big for the path to a locator (RFC 9300 §7).
    pub mtu_method: MtuMethod,
}

/// Largest underlay MTU accepted (the largest IP packet).
pub const MAX_MTU: u16 = 65535;

impl Config {
    /// The MTU of the TUN devices: what fits in one underlay packet after encapsulation over
    /// the largest header any of our RLOC families needs (RFC 9300 §7: nothing dropped
    /// silently; the kernel answers larger packets with ICMP too-big or fragments them).
    pub fn tun_mtu(&self) -> u16 {
        let overhead = if self.rlocs.iter().any(IpAddr::is_ipv6) { ENCAP_OVERHEAD_V6 } else { ENCAP_OVERHEAD_V4 };
        self.underlay_mtu.saturating_sub(overhead as u16)
    }
}

/// A destination the ITR had no mapping for, for the control plane (`Node::handle_miss`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Miss {
    pub iid: u32,
    pub dst: IpAddr,
    pub src: IpAddr,
}

/// Where misses go: returns false when the queue is full (the miss is then counted as
/// suppressed; the next packet to that destination tries again). Called from worker threads;
/// must not block. The packet itself waits in the worker (a few per destination) until the
/// map-cache has a mapping for it.
pub type MissSink = Arc<dyn Fn(Miss) -> bool + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("TUN device {name}: {source}")]
    Tun { name: String, source: io::Error },
    #[error("route {route} into {tun}: {reason}")]
    Route { route: IpNet, tun: String, reason: String },
    #[error("{what}: {source}")]
    Socket { what: String, source: io::Error },
    #[error("{0}")]
    Config(String),
}

/// A TUN device the data plane runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunInfo {
    pub iid: u32,
    pub name: String,
    pub mtu: u16,
}

/// What the data plane does besides forwarding, when the node asks for it.
#[derive(Default)]
pub struct Hooks {
    /// The ETR re-encapsulates packets for hosts that moved away (host mobility, [`away`]).
    pub away: Option<(Away, Arc<AwayCounters>)>,
    /// The ETR reports locator-status bits here (private underlays only, RFC 9300 §10; needs
    /// the ITR's map-cache).
    pub status: Option<StatusSink>,
    /// Echo-nonce (RFC 9300 §10.1): the ITR puts nonces in its packets, the ETR notes those
    /// it receives.
    pub echo: Option<EchoTable>,
}

/// The running data plane. Dropping it stops the workers (and closes the TUN devices, which
/// takes their routes with them).
pub struct DataPlane {
    stop: Arc<AtomicBool>,
    wake: Arc<tun_rs::InterruptEvent>,
    threads: Vec<JoinHandle<()>>,
    counters: Vec<Arc<counters::Counters>>,
    tuns: Vec<TunInfo>,
}

impl DataPlane {
    /// Creates the TUN devices, routes and sockets and starts the workers. The ITR needs the
    /// map-cache `reader` and the `misses` sink.
    pub fn start(config: &Config, reader: Option<MapCacheReader>, misses: MissSink) -> Result<DataPlane, Error> {
        Self::start_with(config, reader, misses, Hooks::default())
    }

    /// [`DataPlane::start`], with the optional parts of [`Hooks`].
    pub fn start_with(
        config: &Config,
        reader: Option<MapCacheReader>,
        misses: MissSink,
        hooks: Hooks,
    ) -> Result<DataPlane, Error> {
        let Hooks { away, status, echo } = hooks;
        if config.itr && reader.is_none() {
            return Err(Error::Config("the ITR data plane needs the map-cache".into()));
        }
        let mtu = config.tun_mtu();
        if mtu < 576 {
            return Err(Error::Config(format!(
                "underlay MTU {} leaves {mtu} bytes for EID packets; at least 576 are needed",
                config.underlay_mtu
            )));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let wake =
            Arc::new(tun_rs::InterruptEvent::new().map_err(|e| Error::Socket { what: "eventfd".into(), source: e })?);
        let mut devices = Vec::new();
        for inst in &config.instances {
            let dev = tun::open(&inst.tun, mtu)?;
            devices.push((inst, Arc::new(dev)));
        }
        // Routes only once every device exists, so a failure leaves no half-routed instance.
        for (inst, _) in &devices {
            for r in &inst.routes {
                tun::add_route(&inst.tun, r, inst.table)?;
            }
        }
        let mut dp = DataPlane {
            stop,
            wake,
            threads: Vec::new(),
            counters: Vec::new(),
            tuns: config.instances.iter().map(|i| TunInfo { iid: i.iid, name: i.tun.clone(), mtu }).collect(),
        };
        if config.etr {
            let tuns: Vec<(u32, Arc<tun_rs::SyncDevice>)> = devices.iter().map(|(i, d)| (i.iid, d.clone())).collect();
            for &rloc in &config.rlocs {
                let mut w = etr::Worker::new(rloc, config, tuns.clone(), dp.stop.clone())?;
                if let Some((a, c)) = &away {
                    w.away = Some(away::AwayForwarder::new(a.clone(), &config.rlocs, c.clone())?);
                }
                w.status = status.clone().zip(reader.clone()).map(|(s, r)| status::StatusWatch::new(r, s));
                w.echo = echo.clone();
                dp.spawn(format!("loci-etr-{rloc}"), w.counters(), move || w.run())?;
            }
        }
        if let (true, Some(reader)) = (config.itr, reader) {
            let senders = Arc::new(
                senders::Senders::new(&config.rlocs)
                    .map_err(|e| Error::Socket { what: "UDP sockets for encapsulation".into(), source: e })?,
            );
            for (inst, dev) in &devices {
                let mut w = itr::Worker::new(
                    inst.iid,
                    dev.clone(),
                    config,
                    reader.clone(),
                    senders.clone(),
                    misses.clone(),
                    &dp,
                )?;
                w.echo = echo.clone();
                dp.spawn(format!("loci-itr-{}", inst.tun), w.counters(), move || w.run())?;
            }
        }
        tracing::info!(
            tuns = ?dp.tuns.iter().map(|t| &t.name).collect::<Vec<_>>(),
            mtu,
            rlocs = ?config.rlocs,
            itr = config.itr,
            etr = config.etr,
            "data plane running"
        );
        Ok(dp)
    }

    fn spawn(
        &mut self,
        name: String,
        counters: Arc<counters::Counters>,
        f: impl FnOnce() + Send + 'static,
    ) -> Result<(), Error> {
        let h = std::thread::Builder::new()
            .name(name.chars().take(15).collect())
            .spawn(f)
            .map_err(|e| Error::Socket { what: format!("thread {name}"), source: e })?;
        self.threads.push(h);
        self.counters.push(counters);
        Ok(())
    }

    /// The counters of every worker, added up.
    pub fn stats(&self) -> Stats {
        Stats::sum(self.counters.iter().map(|c| &**c))
    }

    pub fn tuns(&self) -> &[TunInfo] {
        &self.tuns
    }

    /// Stops the workers and waits for them.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.wake.trigger();
        for h in self.threads.drain(..) {
            let _ = h.join();
        }
    }
}

impl std::ops::Drop for DataPlane {
    fn drop(&mut self) {
        self.shutdown();
    }
}
