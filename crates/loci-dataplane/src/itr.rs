//! The ITR worker: reads packets from one instance's TUN device, finds their RLOC in the
//! map-cache snapshot, encapsulates and sends them.
//!
//! Batched both ways. The TUN device has virtio-net header offload on: one read returns a
//! whole TCP super-segment (up to 64 KiB), which tun-rs splits into MTU-sized packets, each
//! already in its own buffer behind room for the LISP header. Packets are encapsulated in
//! place and collected into messages: consecutive packets of one size to one RLOC from one
//! source port with the same outer TTL and TOS become one UDP GSO message, which the kernel
//! cuts into datagrams; messages on one socket leave together in one `sendmmsg`. The batch is
//! sent when the ring of buffers runs low or the TUN device has nothing more to read.

use std::io::{self, IoSlice};
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use loci_core::echo_nonce::EchoTable;
use loci_core::encap::{encapsulate_payload, Payload};
use loci_core::flow_cache::FlowCache;
use loci_core::locator::{flow_hash, Families};
use loci_core::map_cache::{Forward, MapCacheReader};
use loci_core::miss_filter::RecentMisses;
use loci_core::miss_queue::{self, MissQueue, POLL as MISS_POLL, SWEEP};
use loci_core::packet;
use loci_core::petr::Petrs;
use loci_wire::data::{HEADER_LEN, LISP_DATA_PORT};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tun_rs::{InterruptEvent, SyncDevice, VIRTIO_NET_HDR_LEN};

use crate::counters::{Counters, Drop};
use crate::mtu::{self, PathMtus};
use crate::senders::Senders;
use crate::sys::{self, SendMsg};
use crate::{Config, DataPlane, Error, Miss, MissSink, MAX_MTU};

/// Room in front of each inner packet: the LISP header (the kernel writes IP and UDP).
const HEADROOM: usize = HEADER_LEN;

/// Buffers one TUN read may fill: a 64 KiB super-segment cut at the smallest MSS we accept.
const READ_MAX: usize = tun_rs::IDEAL_BATCH_SIZE;

/// Buffers of a worker; the batch goes out when fewer than [`READ_MAX`] are left.
const RING: usize = 2 * READ_MAX;

/// Datagrams per UDP GSO message (the kernel's UDP_MAX_SEGMENTS, at its oldest) and their
/// total size (one IP packet's worth).
const GSO_SEGMENTS: usize = 64;
const GSO_BYTES: usize = 65_000;

pub struct Worker {
    iid: u32,
    tun: Arc<SyncDevice>,
    mtu: usize,
    reader: MapCacheReader,
    flows: Option<FlowCache>,
    families: Families,
    petrs: Petrs,
    pmtu: PathMtus,
    senders: Arc<Senders>,
    /// Raw sockets for native forwarding (the packet goes out as it is).
    raw_v4: Option<Socket>,
    raw_v6: Option<Socket>,
    misses: MissSink,
    recent: RecentMisses,
    waiting: MissQueue,
    /// Snapshot generation the waiting packets were last tried against.
    tried: u64,
    batch: Batch,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    wake: Arc<InterruptEvent>,
    /// Echo-nonce, when configured: the nonce each packet to a locator carries.
    pub echo: Option<EchoTable>,
}

/// A raw socket that sends whole IP packets (headers included) of one family.
pub(crate) fn raw_socket(domain: Domain) -> io::Result<Socket> {
    let s = Socket::new(domain, Type::RAW, Some(Protocol::from(libc::IPPROTO_RAW)))?;
    if domain == Domain::IPV6 {
        s.set_header_included_v6(true)?;
    } else {
        s.set_header_included_v4(true)?;
    }
    Ok(s)
}

impl Worker {
    pub fn new(
        iid: u32,
        tun: Arc<SyncDevice>,
        config: &Config,
        reader: MapCacheReader,
        senders: Arc<Senders>,
        misses: MissSink,
        dp: &DataPlane,
    ) -> Result<Self, Error> {
        let families = Families::of(&config.rlocs);
        Ok(Worker {
            iid,
            tun,
            mtu: usize::from(config.tun_mtu()),
            reader,
            flows: (config.flow_cache_slots > 0).then(|| FlowCache::new(config.flow_cache_slots, families)),
            families,
            petrs: config.proxy.petrs.clone(),
            pmtu: PathMtus::new(usize::from(config.tun_mtu()), config.mtu_method),
            senders,
            raw_v4: raw_socket(Domain::IPV4).ok(),
            raw_v6: raw_socket(Domain::IPV6).ok(),
            misses,
            recent: RecentMisses::default(),
            waiting: MissQueue::new(miss_queue::TOTAL, miss_queue::PER_DESTINATION),
            tried: u64::MAX,
            batch: Batch::default(),
            counters: Arc::default(),
            stop: dp.stop.clone(),
            wake: dp.wake.clone(),
            echo: None,
        })
    }

    pub fn counters(&self) -> Arc<Counters> {
        self.counters.clone()
    }

    pub fn run(mut self) {
        let mut original = vec![0u8; VIRTIO_NET_HDR_LEN + usize::from(MAX_MTU)];
        let mut bufs = vec![vec![0u8; HEADROOM + self.mtu]; RING];
        let mut sizes = [0usize; RING];
        let mut used = 0;
        let mut ready = Vec::new();
        let mut last_sweep = Instant::now();
        while !self.stop.load(Ordering::Relaxed) {
            if !self.waiting.is_empty() {
                used = self.send_waiting(&mut bufs, used, &mut ready, &mut last_sweep);
            }
            let (b, s) = (&mut bufs[used..used + READ_MAX], &mut sizes[used..used + READ_MAX]);
            match self.tun.recv_multiple(&mut original, b, s, HEADROOM) {
                Ok(n) => {
                    for (i, &size) in sizes.iter().enumerate().skip(used).take(n) {
                        self.forward(&mut bufs, i, HEADROOM..HEADROOM + size);
                    }
                    used += n;
                    // A super-segment fills GSO messages by itself: send it at once, so that the
                    // ETR works on it while we read the next. Single packets gather up.
                    if n > 1 || used + READ_MAX > RING {
                        self.send_batch(&bufs);
                        used = 0;
                    }
                }
                // Nothing more to read: send what we have, then wait.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if used > 0 {
                        self.send_batch(&bufs);
                        used = 0;
                        continue;
                    }
                    let timeout = (!self.waiting.is_empty()).then_some(MISS_POLL);
                    let _ = self.tun.wait_readable_intr_timeout(&self.wake, timeout);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.raw_os_error().is_some() => {
                    tracing::warn!(iid = self.iid, error = %e, "TUN read failed");
                    std::thread::sleep(Duration::from_millis(100));
                }
                // tun-rs could not make packets of what it read (bad virtio-net header or
                // segment): that read is lost.
                Err(_) => self.counters.drop_packet(Drop::BadPacket),
            }
        }
    }

    /// One packet, at `bufs[i][inner]`.
    fn forward(&mut self, bufs: &mut [Vec<u8>], i: usize, inner: Range<usize>) {
        let p = &bufs[i][inner.clone()];
        let Some((src, dst)) = packet::addresses(p) else {
            self.counters.drop_packet(Drop::BadPacket);
            return;
        };
        if !packet::routable(dst) {
            self.counters.drop_packet(Drop::NotRoutable);
            return;
        }
        let flow = flow_hash(p);
        let verdict = {
            let snap = self.reader.load();
            match &mut self.flows {
                Some(fc) => fc.forward(&snap, self.iid, dst, flow),
                None => snap.forward(self.iid, dst, flow, self.families),
            }
        };
        let verdict = self.petrs.apply(verdict, flow, self.families);
        match verdict {
            Forward::Encapsulate(rloc) => self.encapsulate(&mut bufs[i], i, inner, rloc, flow),
            Forward::Miss => self.miss(dst, src, &bufs[i][inner]),
            Forward::NativeForward => self.native(&mut bufs[i][inner]),
            Forward::Drop(reason) => self.counters.drop_packet(reason.into()),
        }
    }

    fn encapsulate(&mut self, buf: &mut [u8], i: usize, inner: Range<usize>, rloc: IpAddr, flow: u32) {
        if let Some(limit) = self.pmtu.limit(rloc).filter(|&l| inner.len() > l) {
            let (tun, senders, counters) = (&self.tun, &self.senders, &self.counters);
            self.pmtu.oversize(&buf[inner], rloc, limit, self.iid, tun, senders, counters);
            return;
        }
        let Some(socket) = self.senders.pick(rloc.is_ipv6(), flow) else {
            self.counters.drop_packet(Drop::EncapFailed);
            return;
        };
        let nonce = self.echo.as_ref().and_then(|e| e.outgoing(rloc));
        match encapsulate_payload(buf, inner, self.iid, nonce) {
            Ok(p) => self.batch.push(i, p, SocketAddr::new(rloc, LISP_DATA_PORT), socket),
            Err(_) => self.counters.drop_packet(Drop::EncapFailed),
        }
    }

    /// Sends the batch; what was too big for its path is handled by [`PathMtus`].
    fn send_batch(&mut self, bufs: &[Vec<u8>]) {
        self.batch.send(&self.senders, bufs, &self.counters);
        for (rloc, b, r) in self.batch.oversize.drain(..) {
            let inner = &bufs[b][r.start + HEADER_LEN..r.end];
            match self.pmtu.learn(rloc) {
                Some(limit) => {
                    self.pmtu.oversize(inner, rloc, limit, self.iid, &self.tun, &self.senders, &self.counters)
                }
                None => self.counters.drop_packet(Drop::SendFailed),
            }
        }
    }

    /// No mapping yet: keep the packet for when the Map-Reply is in, and tell the control
    /// plane.
    fn miss(&mut self, dst: IpAddr, src: IpAddr, packet: &[u8]) {
        let now = Instant::now();
        if !self.waiting.push(self.iid, dst, packet, now) {
            self.counters.drop_packet(Drop::MapCacheMiss);
        }
        if !self.recent.should_report(self.iid, dst, now) {
            Counters::add(&self.counters.misses_suppressed, 1);
            return;
        }
        if (self.misses)(Miss { iid: self.iid, dst, src }) {
            Counters::add(&self.counters.misses_reported, 1);
        } else {
            Counters::add(&self.counters.misses_suppressed, 1);
        }
    }

    /// Forwards the waiting packets whose destination has a mapping in a new snapshot, and
    /// drops those that waited too long. Returns the buffers in use, at most `RING - READ_MAX`.
    fn send_waiting(
        &mut self,
        bufs: &mut [Vec<u8>],
        mut used: usize,
        ready: &mut Vec<u16>,
        last_sweep: &mut Instant,
    ) -> usize {
        let snap = self.reader.load_full();
        let now = Instant::now();
        let generation = snap.generation();
        if generation == self.tried && now.saturating_duration_since(*last_sweep) < SWEEP {
            return used;
        }
        self.tried = generation;
        *last_sweep = now;
        let families = self.families;
        let expired =
            self.waiting.take_ready(now, |iid, dst| snap.forward(iid, dst, 0, families) != Forward::Miss, ready);
        self.counters.drop_packets(Drop::MissQueueExpired, expired as u64);
        for slot in ready.drain(..) {
            // Leave room for the next TUN read.
            if used == RING - READ_MAX {
                self.send_batch(bufs);
                used = 0;
            }
            let p = self.waiting.packet(slot);
            let n = p.len();
            bufs[used][HEADROOM..HEADROOM + n].copy_from_slice(p);
            self.waiting.release(slot);
            self.forward(bufs, used, HEADROOM..HEADROOM + n);
            used += 1;
        }
        used
    }

    /// Not a LISP destination: forward the packet as it is, through the underlay's routing.
    /// The TTL goes down like at any router, which also ends a loop should the underlay route
    /// the destination back into the TUN device.
    fn native(&mut self, p: &mut [u8]) {
        if !packet::decrement_ttl(p) {
            self.counters.drop_packet(Drop::TtlExceeded);
            return;
        }
        let Some((_, dst)) = packet::addresses(p) else { return };
        let socket = if dst.is_ipv4() { &self.raw_v4 } else { &self.raw_v6 };
        match socket.as_ref().map(|s| s.send_to(p, &SockAddr::from(SocketAddr::new(dst, 0)))) {
            Some(Ok(_)) => Counters::add(&self.counters.native_forwarded, 1),
            _ => self.counters.drop_packet(Drop::SendFailed),
        }
    }
}

/// Encapsulated packets waiting to be sent: `sends[k]` covers `pkts[sends[k].iov]`.
#[derive(Default)]
struct Batch {
    /// (buffer, UDP payload range) of each packet.
    pkts: Vec<(usize, Range<usize>)>,
    sends: Vec<SendMsg>,
    info: Vec<MsgInfo>,
    /// UDP GSO failed once (no checksum offload on the way out, old kernel): off for good.
    no_gso: bool,
    /// Packets refused as too big for the path to their RLOC: (RLOC, buffer, UDP payload).
    oversize: Vec<(IpAddr, usize, Range<usize>)>,
}

struct MsgInfo {
    /// Index of the socket in the family's pool.
    socket: usize,
    /// Size of the first datagram, which all but the last must have.
    segment: usize,
    /// A shorter datagram came last: nothing more joins.
    closed: bool,
    bytes: usize,
}

impl Batch {
    fn push(&mut self, buf: usize, p: Payload, dst: SocketAddr, socket: usize) {
        let len = p.range.len();
        let k = self.pkts.len();
        self.pkts.push((buf, p.range));
        if let (Some(s), Some(m)) = (self.sends.last_mut(), self.info.last_mut()) {
            let joins = !self.no_gso
                && !m.closed
                && m.socket == socket
                && s.dst == dst
                && (s.ttl, s.tos) == (p.ttl, p.tos)
                && len <= m.segment
                && s.iov.len() < GSO_SEGMENTS
                && m.bytes + len <= GSO_BYTES;
            if joins {
                s.iov.end = k + 1;
                s.segment = Some(m.segment as u16);
                m.closed = len < m.segment;
                m.bytes += len;
                return;
            }
        }
        self.sends.push(SendMsg { dst, iov: k..k + 1, ttl: p.ttl, tos: p.tos, segment: None });
        self.info.push(MsgInfo { socket, segment: len, closed: false, bytes: len });
    }

    /// Sends everything, one `sendmmsg` per run of messages on the same socket.
    fn send(&mut self, senders: &Senders, bufs: &[Vec<u8>], counters: &Counters) {
        let mut iov = [IoSlice::new(&[]); RING];
        for (slot, (b, r)) in iov.iter_mut().zip(&self.pkts) {
            *slot = IoSlice::new(&bufs[*b][r.clone()]);
        }
        let iov = &iov[..self.pkts.len()];
        let mut i = 0;
        while i < self.sends.len() {
            let v6 = self.sends[i].dst.is_ipv6();
            let socket = self.info[i].socket;
            let run = self.sends[i..]
                .iter()
                .zip(&self.info[i..])
                .take_while(|(s, m)| s.dst.is_ipv6() == v6 && m.socket == socket)
                .count();
            let fd = senders.get(v6, socket).as_fd();
            match sys::send_batch(fd, &self.sends[i..i + run], iov) {
                Ok(n) => {
                    for (s, m) in self.sends[i..i + n].iter().zip(&self.info[i..i + n]) {
                        count_sent(counters, s, m.bytes);
                    }
                    i += n;
                }
                Err(e) => {
                    let s = &self.sends[i];
                    if mtu::refused_for_size(&e, s.dst.ip(), self.info[i].segment, s.segment.is_some()) {
                        self.oversize.extend(self.pkts[s.iov.clone()].iter().map(|(b, r)| (s.dst.ip(), *b, r.clone())));
                        i += 1;
                        continue;
                    }
                    let gso_refused = s.segment.is_some() && matches!(e.raw_os_error(), Some(libc::EIO | libc::EINVAL));
                    if gso_refused {
                        tracing::warn!(error = %e, "UDP GSO refused; sending datagrams one by one from now on");
                        self.no_gso = true;
                        for k in s.iov.clone() {
                            let one = SendMsg { iov: k..k + 1, segment: None, ..s.clone() };
                            match sys::send_batch(fd, std::slice::from_ref(&one), iov) {
                                Ok(_) => count_sent(counters, &one, iov[k].len()),
                                Err(_) => counters.drop_packet(Drop::SendFailed),
                            }
                        }
                    } else {
                        counters.drop_packets(Drop::SendFailed, s.iov.len() as u64);
                    }
                    i += 1;
                }
            }
        }
        self.pkts.clear();
        self.sends.clear();
        self.info.clear();
    }
}

/// Counts the datagrams of a sent message with their outer headers, as on the wire.
fn count_sent(counters: &Counters, s: &SendMsg, payload: usize) {
    let n = s.iov.len();
    let outer = if s.dst.is_ipv6() { 40 + 8 } else { 20 + 8 };
    Counters::add(&counters.encapsulated, n as u64);
    Counters::add(&counters.encapsulated_bytes, (payload + n * outer) as u64);
}
