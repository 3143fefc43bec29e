//! Path MTU per locator and RFC 9300 §7.1's stateless method for packets that do not fit it.
//!
//! The TUN device's MTU leaves room for the encapsulation over the configured underlay MTU,
//! so the kernel itself answers (or fragments) what is larger. A path to one locator may be
//! narrower: the underlay's ICMP errors lower the kernel's path MTU to that RLOC, and the next
//! send to it fails (`EMSGSIZE`, or `EINVAL` for a UDP GSO message whose segments no longer
//! fit). The ITR then asks the kernel for that path MTU, remembers it here for the locator
//! and from then on handles each inner packet too big for it: an IPv4 packet without DF is
//! fragmented and each fragment encapsulated; any other gets an ICMP too-big back through the
//! TUN device with the inner MTU that fits. The packets of the failed send get the same.
//! With [`MtuMethod::Stateful`] (RFC 9300 §7.2) IPv4 packets without DF get the ICMP too, so
//! that no destination host has to reassemble what the ITR cut.
#![allow(unsafe_code)]

use std::io::{self, IoSlice};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use loci_core::encap::{encapsulate_payload, ENCAP_OVERHEAD_V4, ENCAP_OVERHEAD_V6};
use loci_wire::data::{HEADER_LEN, LISP_DATA_PORT};
use socket2::{Domain, Protocol, Socket, Type};
use tun_rs::{SyncDevice, VIRTIO_NET_HDR_LEN};

use crate::counters::{Counters, Drop};
use crate::icmp;
use crate::senders::Senders;
use crate::sys::{self, SendMsg};

/// Locators whose path MTU is remembered; beyond, the oldest entry goes.
const ENTRIES: usize = 64;
/// A learned path MTU is trusted this long, then the kernel is asked again on the next failure
/// (RFC 1191 §6.3's ten minutes).
const KEEP: Duration = Duration::from_secs(600);
/// Smallest inner MTU announced for IPv4 (RFC 791's 68) and IPv6 (RFC 8200's 1280).
const MIN_V4: usize = 68;
const MIN_V6: usize = 1280;

/// What the ITR does with an IPv4 packet without DF that does not fit the path (RFC 9300 §7).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MtuMethod {
    /// §7.1: fragment it and encapsulate each fragment.
    #[default]
    Stateless,
    /// §7.2: answer it with Fragmentation Needed like any other.
    Stateful,
}

struct Entry {
    rloc: IpAddr,
    /// Largest inner packet that fits after encapsulation.
    inner: usize,
    at: Instant,
}

/// The locators with a path narrower than the TUN MTU assumes, and the buffers used on the
/// (rare) path that handles packets too big for them.
pub struct PathMtus {
    /// Inner packets up to this size always fit (the TUN MTU).
    tun_mtu: usize,
    method: MtuMethod,
    entries: Vec<Entry>,
    icmp: Vec<u8>,
    frag: Vec<u8>,
    encap: Vec<u8>,
}

impl PathMtus {
    pub fn new(tun_mtu: usize, method: MtuMethod) -> Self {
        PathMtus { tun_mtu, method, entries: Vec::new(), icmp: Vec::new(), frag: Vec::new(), encap: Vec::new() }
    }

    /// The largest inner packet to `rloc` when its path is known to be narrower than the TUN
    /// MTU. Costs one branch while no path is.
    #[inline]
    pub fn limit(&self, rloc: IpAddr) -> Option<usize> {
        if self.entries.is_empty() {
            return None;
        }
        self.entries.iter().find(|e| e.rloc == rloc && e.at.elapsed() < KEEP).map(|e| e.inner)
    }

    /// Asks the kernel for the path MTU to `rloc` and remembers it when it is narrower than
    /// the TUN MTU assumes. Returns the inner limit.
    pub fn learn(&mut self, rloc: IpAddr) -> Option<usize> {
        self.entries.retain(|e| e.rloc != rloc && e.at.elapsed() < KEEP);
        let path = kernel_path_mtu(rloc).ok()?;
        let overhead = if rloc.is_ipv6() { ENCAP_OVERHEAD_V6 } else { ENCAP_OVERHEAD_V4 };
        let inner = path.saturating_sub(overhead);
        if inner >= self.tun_mtu {
            return None;
        }
        if self.entries.len() == ENTRIES {
            self.entries.remove(0);
        }
        tracing::info!(%rloc, path_mtu = path, inner_mtu = inner, "narrower path to a locator");
        self.entries.push(Entry { rloc, inner, at: Instant::now() });
        Some(inner)
    }

    /// An inner packet of instance `iid` too big for the path to `rloc` (at most `limit`
    /// bytes fit): fragmented and sent when IPv4 allows it (and the method is stateless), else
    /// answered with ICMP too-big.
    #[allow(clippy::too_many_arguments)]
    pub fn oversize(
        &mut self,
        inner: &[u8],
        rloc: IpAddr,
        limit: usize,
        iid: u32,
        tun: &SyncDevice,
        senders: &Senders,
        counters: &Counters,
    ) {
        if self.method == MtuMethod::Stateless && icmp::may_fragment(inner) {
            let (frag, encap) = (&mut self.frag, &mut self.encap);
            let ok = icmp::fragment_v4(inner, limit, frag, |f| send_one(f, rloc, iid, senders, counters, encap));
            if !ok {
                counters.drop_packet(Drop::EncapFailed);
            }
            return;
        }
        counters.drop_packet(Drop::TooBig);
        let min = if inner.first().is_some_and(|b| b >> 4 == 6) { MIN_V6 } else { MIN_V4 };
        let mtu = limit.max(min).min(usize::from(u16::MAX)) as u16;
        if icmp::too_big(inner, mtu, &mut self.icmp) {
            // With offload on, every write to the TUN device starts with a virtio-net header
            // (all zero: no segmentation, no checksum to fill).
            if tun.tcp_gso() {
                self.icmp.splice(0..0, [0u8; VIRTIO_NET_HDR_LEN]);
            }
            if tun.send(&self.icmp).is_err() {
                counters.drop_packet(Drop::TunWriteFailed);
            }
        }
    }
}

/// Encapsulates one packet to `rloc` and sends it on its own (the rare path: fragments).
fn send_one(p: &[u8], rloc: IpAddr, iid: u32, senders: &Senders, counters: &Counters, buf: &mut Vec<u8>) {
    buf.clear();
    buf.resize(HEADER_LEN, 0);
    buf.extend_from_slice(p);
    let end = buf.len();
    let (Some(socket), Ok(pl)) =
        (senders.pick(rloc.is_ipv6(), 0), encapsulate_payload(buf, HEADER_LEN..end, iid, None))
    else {
        counters.drop_packet(Drop::EncapFailed);
        return;
    };
    let msg =
        SendMsg { dst: SocketAddr::new(rloc, LISP_DATA_PORT), iov: 0..1, ttl: pl.ttl, tos: pl.tos, segment: None };
    let len = pl.range.len();
    let iov = [IoSlice::new(&buf[pl.range])];
    match sys::send_batch(senders.get(rloc.is_ipv6(), socket).as_fd(), std::slice::from_ref(&msg), &iov) {
        Ok(_) => {
            let outer = if rloc.is_ipv6() { 48 } else { 28 };
            Counters::add(&counters.encapsulated, 1);
            Counters::add(&counters.encapsulated_bytes, (len + outer) as u64);
        }
        Err(_) => counters.drop_packet(Drop::SendFailed),
    }
}

/// Whether a failed send to `dst` of datagrams of `segment` bytes (UDP payload) failed for
/// their size: `EMSGSIZE`, or `EINVAL` for a GSO message when the kernel's path MTU to `dst`
/// is below the segment's datagram.
pub fn refused_for_size(e: &io::Error, dst: IpAddr, segment: usize, gso: bool) -> bool {
    match e.raw_os_error() {
        Some(libc::EMSGSIZE) => true,
        Some(libc::EINVAL) if gso => {
            let ip_udp = if dst.is_ipv6() { 48 } else { 28 };
            kernel_path_mtu(dst).is_ok_and(|m| segment + ip_udp > m)
        }
        _ => false,
    }
}

/// The kernel's path MTU to `rloc` (route MTU, lowered by ICMP errors from the underlay): what
/// a UDP socket connected to it reports.
fn kernel_path_mtu(rloc: IpAddr) -> io::Result<usize> {
    let domain = if rloc.is_ipv6() { Domain::IPV6 } else { Domain::IPV4 };
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    s.connect(&SocketAddr::new(rloc, LISP_DATA_PORT).into())?;
    let (level, name) =
        if rloc.is_ipv6() { (libc::IPPROTO_IPV6, libc::IPV6_MTU) } else { (libc::IPPROTO_IP, libc::IP_MTU) };
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `v` and `len` are valid for writes of the sizes given; the fd is open (owned by `s`).
    let r = unsafe { libc::getsockopt(s.as_raw_fd(), level, name, (&mut v as *mut libc::c_int).cast(), &mut len) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    usize::try_from(v).map_err(|_| io::Error::other("negative MTU"))
}
