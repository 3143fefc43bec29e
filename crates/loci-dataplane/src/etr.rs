//! The ETR worker: receives LISP data packets on one of our RLOCs (UDP 4341), checks and
//! strips them, and writes the inner packet to its instance's TUN device.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use loci_core::encap::{decapsulate_payload, LocalRlocs, OuterHeader};
use loci_wire::data::LISP_DATA_PORT;
use socket2::{Domain, Protocol, Socket, Type};
use tun_rs::SyncDevice;

use crate::counters::{Counters, Drop};
use crate::{sys, Config, Error, MAX_MTU};

/// How often a worker blocked in `recvmsg` looks at the stop flag.
const POLL: Duration = Duration::from_millis(200);

pub struct Worker {
    socket: Socket,
    local: SocketAddr,
    filter: LocalRlocs,
    tuns: Vec<(u32, Arc<SyncDevice>)>,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    /// Host mobility: re-encapsulates packets for hosts that moved away.
    pub away: Option<crate::away::AwayForwarder>,
}

/// A UDP socket on `rloc`:4341 that reports each datagram's outer TTL and TOS.
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
        // RFC 9300 §5.3 / RFC 6935: ITRs send zero UDP checksums over IPv6 too.
        sys::set_int_option(s.as_fd(), libc::SOL_UDP, sys::UDP_NO_CHECK6_RX, 1)?;
    }
    // Room for bursts; as root the limit of net.core.rmem_max does not apply.
    if sys::set_int_option(s.as_fd(), libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, 8 << 20).is_err() {
        let _ = s.set_recv_buffer_size(8 << 20);
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
        Ok(Worker { socket, local, filter, tuns, counters: Arc::default(), stop, away: None })
    }

    pub fn counters(&self) -> Arc<Counters> {
        self.counters.clone()
    }

    pub fn run(mut self) {
        let mut buf = vec![0u8; usize::from(MAX_MTU)];
        let mut control = sys::ControlBuf::default();
        while !self.stop.load(Ordering::Relaxed) {
            let meta = match sys::recv_with_meta(self.socket.as_fd(), &mut buf, &mut control) {
                Ok(m) => m,
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
            let payload = &mut buf[..meta.len];
            let d = match decapsulate_payload(payload, &outer, &self.filter) {
                Ok(d) => d,
                Err(reason) => {
                    self.counters.drop_packet(Drop::Decap(reason));
                    continue;
                }
            };
            let Some((_, tun)) = self.tuns.iter().find(|(iid, _)| *iid == d.iid) else {
                self.counters.drop_packet(Drop::Decap(loci_core::encap::DecapDrop::UnknownIid));
                continue;
            };
            let inner = &payload[d.inner];
            if self.away.as_mut().is_some_and(|a| a.redirect(d.iid, inner, outer.src)) {
                continue;
            }
            match tun.send(inner) {
                Ok(_) => {
                    Counters::add(&self.counters.decapsulated, 1);
                    Counters::add(&self.counters.decapsulated_bytes, inner.len() as u64);
                }
                Err(_) => self.counters.drop_packet(Drop::TunWriteFailed),
            }
        }
    }
}
