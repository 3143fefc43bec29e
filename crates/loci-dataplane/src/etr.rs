//! The ETR worker: receives LISP data packets on one of our RLOCs (UDP 4341), checks and
//! strips them, and writes the inner packets to their instance's TUN device.
//!
//! Batched both ways: one `recvmmsg` takes up to [`sys::BATCH`] buffers, each of which (with
//! UDP GRO) holds many datagrams of one flow back to back; the inner packets are collected per
//! TUN device and written with tun-rs's `send_multiple`, whose GRO table coalesces the segments
//! of a TCP (or UDP) flow into one super-packet with a virtio-net header: a TCP stream costs a
//! few system calls per 64 KiB instead of two per packet.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use loci_core::echo_nonce::EchoTable;
use loci_core::encap::{decapsulate_payload, DecapDrop, LocalRlocs, OuterHeader};
use loci_core::petr::RelayPolicy;

use crate::status::StatusWatch;
use loci_wire::data::LISP_DATA_PORT;
use socket2::{Domain, Protocol, Socket, Type};
use tun_rs::{GROTable, SyncDevice, VIRTIO_NET_HDR_LEN};

use crate::counters::{Counters, Drop};
use crate::{sys, Config, Error};

/// How often a worker blocked in `recvmmsg` looks at the stop flag.
const POLL: Duration = Duration::from_millis(200);

/// A receive buffer: one datagram, or with GRO up to 64 KiB of coalesced datagrams.
const RECV_BUF: usize = 1 << 16;

/// Inner packets collected for one TUN device before they are written.
const TUN_BATCH: usize = 128;

/// What a coalesced packet may grow to, with the room tun-rs wants around it.
const GRO_CAPACITY: usize = (1 << 16) + 2 * VIRTIO_NET_HDR_LEN;

pub struct Worker {
    socket: Socket,
    local: SocketAddr,
    filter: LocalRlocs,
    relay: RelayPolicy,
    /// Locator-status bits, when honoured.
    pub status: Option<StatusWatch>,
    tuns: Vec<TunOut>,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    /// Host mobility: re-encapsulates packets for hosts that moved away.
    pub away: Option<crate::away::AwayForwarder>,
    /// Echo-nonce, when configured: notes the nonces peers send.
    pub echo: Option<EchoTable>,
}

/// One instance's TUN device and the inner packets waiting for it, each at
/// `VIRTIO_NET_HDR_LEN` in its own buffer (the GRO table needs room for the header and grows
/// the first packet of a flow with the payload of the others). Buffers are reused.
struct TunOut {
    iid: u32,
    dev: Arc<SyncDevice>,
    bufs: Vec<Vec<u8>>,
    used: usize,
    bytes: u64,
    gro: GROTable,
}

impl TunOut {
    fn push(&mut self, inner: &[u8]) {
        let b = &mut self.bufs[self.used];
        b.clear();
        b.resize(VIRTIO_NET_HDR_LEN, 0);
        b.extend_from_slice(inner);
        self.used += 1;
        self.bytes += inner.len() as u64;
    }

    fn flush(&mut self, counters: &Counters) {
        if self.used == 0 {
            return;
        }
        match self.dev.send_multiple(&mut self.gro, &mut self.bufs[..self.used], VIRTIO_NET_HDR_LEN) {
            Ok(_) => {
                Counters::add(&counters.decapsulated, self.used as u64);
                Counters::add(&counters.decapsulated_bytes, self.bytes);
            }
            // The error of one write fails the batch: counted as if none went out (an upper
            // bound; the device refuses packets only when it is down or misconfigured).
            Err(_) => counters.drop_packets(Drop::TunWriteFailed, self.used as u64),
        }
        self.used = 0;
        self.bytes = 0;
    }
}

/// A UDP socket on `rloc`:4341 that reports each datagram's outer TTL and TOS and, where the
/// kernel can, coalesces datagrams (UDP GRO).
fn socket(rloc: IpAddr) -> io::Result<Socket> {
    let domain = if rloc.is_ipv4() { Domain::IPV4 } else { Domain::IPV6 };
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    if rloc.is_ipv4() {
        sys::set_int_option(s.as_fd(), libc::IPPROTO_IP, libc::IP_RECVTTL, 1)?;
        s.set_recv_tos_v4(true)?;
    } else {
        s.set_only_v6(true)?;
        s.set_recv_hoplimit_v6(true)?;
        s.set_recv_tclass_v6(true)?;
        // RFC 9300 §5.3 / RFC 6935: ITRs may send zero UDP checksums over IPv6 too.
        sys::set_int_option(s.as_fd(), libc::SOL_UDP, sys::UDP_NO_CHECK6_RX, 1)?;
    }
    // Without GRO (old kernel) every datagram is received on its own: slower, still correct.
    let _ = sys::set_int_option(s.as_fd(), libc::SOL_UDP, sys::UDP_GRO, 1);
    // Room for bursts; as root the limit of net.core.rmem_max does not apply.
    if sys::set_int_option(s.as_fd(), libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, 16 << 20).is_err() {
        let _ = s.set_recv_buffer_size(16 << 20);
    }
    s.set_read_timeout(Some(POLL))?;
    s.bind(&SocketAddr::new(rloc, LISP_DATA_PORT).into())?;
    Ok(s)
}

impl Worker {
    pub fn new(
        rloc: IpAddr,
        config: &Config,
        tuns: Vec<(u32, Arc<SyncDevice>)>,
        stop: Arc<AtomicBool>,
    ) -> Result<Self, Error> {
        let local = SocketAddr::new(rloc, LISP_DATA_PORT);
        let socket = socket(rloc).map_err(|e| Error::Socket { what: format!("ETR socket on {local}"), source: e })?;
        let filter = LocalRlocs { rlocs: config.rlocs.clone(), iids: tuns.iter().map(|(i, _)| *i).collect() };
        let tuns = tuns
            .into_iter()
            .map(|(iid, dev)| TunOut {
                iid,
                dev,
                // Room to coalesce a flow's packets into the first one: tun-rs coalesces only
                // into spare capacity (reserved, not touched: memory comes as GRO uses it).
                bufs: (0..TUN_BATCH).map(|_| Vec::with_capacity(GRO_CAPACITY)).collect(),
                used: 0,
                bytes: 0,
                gro: GROTable::default(),
            })
            .collect();
        let relay = config.proxy.relay.clone();
        Ok(Worker {
            socket,
            local,
            filter,
            relay,
            status: None,
            tuns,
            counters: Arc::default(),
            stop,
            away: None,
            echo: None,
        })
    }

    pub fn counters(&self) -> Arc<Counters> {
        self.counters.clone()
    }

    pub fn run(mut self) {
        let mut bufs = vec![vec![0u8; RECV_BUF]; sys::BATCH];
        let mut metas = [sys::RecvMeta::default(); sys::BATCH];
        while !self.stop.load(Ordering::Relaxed) {
            let n = match sys::recv_batch(self.socket.as_fd(), &mut bufs, &mut metas) {
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
                    ) =>
                {
                    continue
                }
                Err(e) => {
                    tracing::warn!(local = %self.local, error = %e, "receive failed");
                    std::thread::sleep(POLL);
                    continue;
                }
            };
            for (buf, meta) in bufs.iter_mut().zip(&metas).take(n) {
                if meta.truncated {
                    self.counters.drop_packet(Drop::Truncated);
                    continue;
                }
                let outer = OuterHeader {
                    src: meta.src.ip(),
                    dst: self.local.ip(),
                    // Without the control message, leave the inner TTL and DSCP as they are.
                    ttl: meta.ttl.unwrap_or(u8::MAX),
                    tos: meta.tos.unwrap_or(0),
                    src_port: meta.src.port(),
                    dst_port: self.local.port(),
                };
                let seg = meta.segment.unwrap_or(meta.len).max(1);
                for datagram in buf[..meta.len].chunks_mut(seg) {
                    self.decapsulate(datagram, &outer);
                }
            }
            for t in &mut self.tuns {
                t.flush(&self.counters);
            }
        }
    }

    /// One datagram's payload: checked, stripped and queued for its TUN device.
    fn decapsulate(&mut self, payload: &mut [u8], outer: &OuterHeader) {
        let d = match decapsulate_payload(payload, outer, &self.filter) {
            Ok(d) => d,
            Err(reason) => {
                self.counters.drop_packet(Drop::Decap(reason));
                return;
            }
        };
        let Some(t) = self.tuns.iter_mut().find(|t| t.iid == d.iid) else {
            self.counters.drop_packet(Drop::Decap(DecapDrop::UnknownIid));
            return;
        };
        if crate::petr::refused(&self.relay, d.iid, &payload[d.inner.clone()]) {
            self.counters.drop_packet(Drop::RelayRefused);
            return;
        }
        if let Some(w) = &mut self.status {
            w.check(d.iid, &payload[d.inner.clone()], d.outer.src, d.lisp.lsb);
        }
        if let Some(e) = &self.echo {
            e.incoming(d.outer.src, &d.lisp);
        }
        let inner = &payload[d.inner];
        if self.away.as_mut().is_some_and(|a| a.redirect(d.iid, inner, outer.src)) {
            return;
        }
        t.push(inner);
        if t.used == TUN_BATCH {
            t.flush(&self.counters);
        }
    }
}
