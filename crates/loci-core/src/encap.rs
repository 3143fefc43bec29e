//! LISP data-plane encapsulation and decapsulation (RFC 9300 §5), as pure functions over
//! buffers: no allocation, no I/O. The data plane and the simulator call the same code.
//!
//! ```text
//! encapsulate: [ headroom ........ | inner IPv4/IPv6 packet ]
//!           -> [ .. | outer IP | UDP | LISP | inner IPv4/IPv6 packet ]
//! ```
//!
//! The inner packet sits in a buffer with at least [`ENCAP_OVERHEAD_V6`] (or
//! [`ENCAP_OVERHEAD_V4`]) bytes of headroom in front of it; the outer headers are written there.
//! All four combinations of IPv4/IPv6 EIDs over IPv4/IPv6 RLOCs work.
//!
//! Header fields (RFC 9300 §5.3, §7.1, §12; RFC 6040):
//! * outer TTL / hop limit: copied from the inner header;
//! * outer DSCP: copied from the inner header; outer ECN: copied too (RFC 6040 normal mode);
//! * outer IPv4 DF: set unless the caller says otherwise (§7.1: SHOULD be 1);
//! * UDP source port `0xC000 | (flow hash & 0x3FFF)`, destination 4341, checksum 0 (§5.3:
//!   SHOULD be zero over IPv4 and IPv6); IPv6 flow label = 20 bits of the flow hash (RFC 6438);
//! * LISP header: I bit and instance ID, N bit and nonce when given.
//!
//! Decapsulation (an ETR's checks, each failure a [`DecapDrop`] for counters): outer destination
//! is one of our RLOCs, UDP destination port 4341, LISP header sane (not encrypted), instance ID
//! configured, inner packet well formed. Zero UDP checksums are accepted; non-zero ones are not
//! verified (§5.3 allows both). Then the inner header is adjusted: TTL lowered to the outer TTL
//! when that is smaller, DSCP copied from the outer header, ECN combined per RFC 6040 §4.2 (a CE
//! mark on a not-ECT inner packet drops it), and the inner IPv4 checksum updated.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::Range;

use loci_wire::data::{DataHeaderRepr, HEADER_LEN, LISP_DATA_PORT};
use loci_wire::ecm::checksum;

pub use loci_wire::data::{ENCAP_OVERHEAD_V4, ENCAP_OVERHEAD_V6};

const UDP_LEN: usize = 8;
const PROTO_UDP: u8 = 17;

/// What to put in front of an inner packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncapParams {
    /// Our RLOC (outer source) and the chosen remote RLOC (outer destination): same family.
    pub src: IpAddr,
    pub dst: IpAddr,
    pub iid: u32,
    /// N bit and 24-bit nonce, when echo-nonce wants one.
    pub nonce: Option<Nonce>,
    /// The inner packet's flow hash ([`crate::locator::flow_hash`]): UDP source port and IPv6
    /// flow label.
    pub flow: u32,
    /// Outer IPv4 DF bit (RFC 9300 §7.1 recommends 1).
    pub dont_fragment: bool,
    /// Outer IPv4 Identification; only matters when DF is clear (RFC 6864).
    pub ip_id: u16,
}

impl EncapParams {
    pub fn new(src: IpAddr, dst: IpAddr, iid: u32, flow: u32) -> Self {
        EncapParams { src, dst, iid, nonce: None, flow, dont_fragment: true, ip_id: 0 }
    }
}

/// A data packet's nonce (N bit), and whether it asks for an echo (E bit): RFC 9300 §10.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nonce {
    /// 24 bits.
    pub value: u32,
    pub echo_request: bool,
}

/// The outer UDP source port for a flow (RFC 9300 §12: a hash of the inner 5-tuple).
#[inline]
pub fn source_port(flow: u32) -> u16 {
    0xc000 | (flow & 0x3fff) as u16
}

/// Why a packet could not be encapsulated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EncapError {
    #[error("need {need} bytes of headroom, have {have}")]
    NoHeadroom { need: usize, have: usize },
    #[error("outer source and destination RLOCs of different families")]
    MixedFamilies,
    #[error("inner packet is not a well-formed IPv4 or IPv6 packet")]
    BadInner,
    #[error("encapsulated packet would exceed 65535 bytes")]
    TooBig,
    #[error("inner range outside the buffer")]
    BadRange,
}

/// The inner header fields encapsulation and decapsulation use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InnerHeader {
    pub v6: bool,
    /// TTL or hop limit.
    pub ttl: u8,
    /// IPv4 TOS / IPv6 Traffic Class: DSCP (6 bits) and ECN (2 bits).
    pub tos: u8,
    /// IPv4 DF bit (always false for IPv6, which routers never fragment).
    pub dont_fragment: bool,
    /// IPv4 header length, or 40.
    pub header_len: usize,
}

impl InnerHeader {
    /// Reads and checks the header of the IPv4 or IPv6 packet that is exactly `p`: version,
    /// header length, and a length field that matches `p` (IPv6 jumbograms are refused).
    #[inline]
    pub fn parse(p: &[u8]) -> Option<Self> {
        match p.first()? >> 4 {
            4 if p.len() >= 20 => {
                let header_len = usize::from(p[0] & 0x0f) * 4;
                let total = usize::from(u16::from_be_bytes([p[2], p[3]]));
                (header_len >= 20 && total >= header_len && total == p.len()).then_some(InnerHeader {
                    v6: false,
                    ttl: p[8],
                    tos: p[1],
                    dont_fragment: p[6] & 0x40 != 0,
                    header_len,
                })
            }
            6 if p.len() >= 40 => {
                let payload = usize::from(u16::from_be_bytes([p[4], p[5]]));
                (40 + payload == p.len()).then_some(InnerHeader {
                    v6: true,
                    ttl: p[7],
                    tos: (p[0] << 4) | (p[1] >> 4),
                    dont_fragment: false,
                    header_len: 40,
                })
            }
            _ => None,
        }
    }
}

/// Writes outer IP, UDP and LISP headers in front of the inner packet at `buf[inner]` and
/// returns the range of the whole encapsulated packet.
pub fn encapsulate(buf: &mut [u8], inner: Range<usize>, p: &EncapParams) -> Result<Range<usize>, EncapError> {
    let body = buf.get(inner.clone()).ok_or(EncapError::BadRange)?;
    let ih = InnerHeader::parse(body).ok_or(EncapError::BadInner)?;
    let inner_len = body.len();
    let overhead = match (p.src, p.dst) {
        (IpAddr::V4(_), IpAddr::V4(_)) => ENCAP_OVERHEAD_V4,
        (IpAddr::V6(_), IpAddr::V6(_)) => ENCAP_OVERHEAD_V6,
        _ => return Err(EncapError::MixedFamilies),
    };
    if inner.start < overhead {
        return Err(EncapError::NoHeadroom { need: overhead, have: inner.start });
    }
    let udp_len = UDP_LEN + HEADER_LEN + inner_len;
    let start = inner.start - overhead;
    let out = &mut buf[start..inner.start];
    let ip_len = match (p.src, p.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let total = u16::try_from(overhead + inner_len).map_err(|_| EncapError::TooBig)?;
            write_ipv4(&mut out[..20], s, d, total, ih.tos, ih.ttl, p.dont_fragment, p.ip_id);
            20
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let payload = u16::try_from(udp_len).map_err(|_| EncapError::TooBig)?;
            write_ipv6(&mut out[..40], s, d, payload, ih.tos, ih.ttl, p.flow);
            40
        }
        _ => unreachable!("families checked above"),
    };
    let udp_len = u16::try_from(udp_len).map_err(|_| EncapError::TooBig)?;
    let udp = &mut out[ip_len..ip_len + UDP_LEN];
    udp[0..2].copy_from_slice(&source_port(p.flow).to_be_bytes());
    udp[2..4].copy_from_slice(&LISP_DATA_PORT.to_be_bytes());
    udp[4..6].copy_from_slice(&udp_len.to_be_bytes());
    udp[6..8].copy_from_slice(&[0, 0]);
    out[ip_len + UDP_LEN..].copy_from_slice(&lisp_header(p.iid, p.nonce));
    Ok(start..inner.end)
}

#[inline]
fn lisp_header(iid: u32, nonce: Option<Nonce>) -> [u8; HEADER_LEN] {
    DataHeaderRepr {
        nonce: nonce.map(|n| n.value),
        echo_nonce_request: nonce.is_some_and(|n| n.echo_request),
        instance_id: Some(iid),
        ..Default::default()
    }
    .to_array()
}

/// What a UDP socket needs to send an encapsulated packet: the UDP payload and the outer
/// header fields RFC 9300 §5.3 derives from the inner header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    /// The LISP header and the inner packet.
    pub range: Range<usize>,
    /// Outer TTL / hop limit: the inner one.
    pub ttl: u8,
    /// Outer TOS / traffic class: the inner DSCP and ECN (RFC 6040 normal mode).
    pub tos: u8,
}

/// Writes only the LISP header (I bit, `iid`, N bit and `nonce` when given) in front of the
/// inner packet at `buf[inner]`, for a UDP socket that adds the outer IP and UDP headers itself
/// (with [`Payload::ttl`] and [`Payload::tos`] as per-message options). Needs
/// [`HEADER_LEN`] bytes of headroom.
#[inline]
pub fn encapsulate_payload(
    buf: &mut [u8],
    inner: Range<usize>,
    iid: u32,
    nonce: Option<Nonce>,
) -> Result<Payload, EncapError> {
    let body = buf.get(inner.clone()).ok_or(EncapError::BadRange)?;
    let ih = InnerHeader::parse(body).ok_or(EncapError::BadInner)?;
    if inner.start < HEADER_LEN {
        return Err(EncapError::NoHeadroom { need: HEADER_LEN, have: inner.start });
    }
    if body.len() + HEADER_LEN + UDP_LEN + 40 > usize::from(u16::MAX) {
        return Err(EncapError::TooBig);
    }
    let start = inner.start - HEADER_LEN;
    buf[start..inner.start].copy_from_slice(&lisp_header(iid, nonce));
    Ok(Payload { range: start..inner.end, ttl: ih.ttl, tos: ih.tos })
}

#[allow(clippy::too_many_arguments)]
#[inline]
fn write_ipv4(h: &mut [u8], src: Ipv4Addr, dst: Ipv4Addr, total: u16, tos: u8, ttl: u8, df: bool, id: u16) {
    h[0] = 0x45;
    h[1] = tos;
    h[2..4].copy_from_slice(&total.to_be_bytes());
    h[4..6].copy_from_slice(&id.to_be_bytes());
    h[6..8].copy_from_slice(&(if df { 0x4000u16 } else { 0 }).to_be_bytes());
    h[8] = ttl;
    h[9] = PROTO_UDP;
    h[10..12].copy_from_slice(&[0, 0]);
    h[12..16].copy_from_slice(&src.octets());
    h[16..20].copy_from_slice(&dst.octets());
    let c = header_checksum(h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
}

/// The RFC 1071 checksum of an IPv4 header (a multiple of 4 bytes long), summed in 32-bit
/// words: RFC 1071 §2(C) allows any word size, and this is 4x fewer additions than the
/// general-purpose 16-bit loop of `loci_wire::ecm::checksum`, whose fold it reuses. Per packet,
/// twice (encapsulate and verify), so it counts.
#[inline]
fn header_checksum(h: &[u8]) -> u16 {
    let mut sum = 0u64;
    let mut words = h.chunks_exact(4);
    for w in &mut words {
        sum += u64::from(u32::from_be_bytes([w[0], w[1], w[2], w[3]]));
    }
    // IPv4 header lengths are multiples of 4; anything else is summed the slow, general way.
    let sum = checksum::add(sum, words.remainder());
    checksum::finish((sum & 0xffff_ffff) + (sum >> 32))
}

#[inline]
fn write_ipv6(h: &mut [u8], src: Ipv6Addr, dst: Ipv6Addr, payload: u16, tc: u8, hop: u8, flow: u32) {
    let label = flow & 0x000f_ffff;
    let first = (6u32 << 28) | (u32::from(tc) << 20) | label;
    h[0..4].copy_from_slice(&first.to_be_bytes());
    h[4..6].copy_from_slice(&payload.to_be_bytes());
    h[6] = PROTO_UDP;
    h[7] = hop;
    h[8..24].copy_from_slice(&src.octets());
    h[24..40].copy_from_slice(&dst.octets());
}

/// Why a received packet was not decapsulated (each a counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, thiserror::Error)]
pub enum DecapDrop {
    #[error("outer header truncated or malformed")]
    BadOuter,
    #[error("outer IPv4 header checksum wrong")]
    BadOuterChecksum,
    #[error("outer packet is a fragment")]
    OuterFragment,
    #[error("outer packet is not UDP")]
    NotUdp,
    #[error("UDP destination port is not 4341")]
    WrongPort,
    #[error("outer destination is not one of our RLOCs")]
    NotOurRloc,
    #[error("encrypted packet (KK bits set): not supported")]
    Encrypted,
    #[error("instance ID not configured here")]
    UnknownIid,
    #[error("inner packet malformed")]
    BadInner,
    #[error("CE-marked outer header on a not-ECT inner packet (RFC 6040)")]
    CongestionOnNotEct,
}

impl DecapDrop {
    /// Stable counter name.
    pub fn name(self) -> &'static str {
        match self {
            DecapDrop::BadOuter => "bad-outer-header",
            DecapDrop::BadOuterChecksum => "bad-outer-checksum",
            DecapDrop::OuterFragment => "outer-fragment",
            DecapDrop::NotUdp => "not-udp",
            DecapDrop::WrongPort => "wrong-port",
            DecapDrop::NotOurRloc => "not-our-rloc",
            DecapDrop::Encrypted => "encrypted",
            DecapDrop::UnknownIid => "unknown-iid",
            DecapDrop::BadInner => "bad-inner-packet",
            DecapDrop::CongestionOnNotEct => "ce-on-not-ect",
        }
    }
}

/// What an ETR accepts: its RLOCs and its instance IDs.
pub trait DecapFilter {
    fn is_local_rloc(&self, addr: IpAddr) -> bool;
    fn accepts_iid(&self, iid: u32) -> bool;
}

/// A [`DecapFilter`] over two short lists (an xTR has a handful of RLOCs and IIDs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalRlocs {
    pub rlocs: Vec<IpAddr>,
    pub iids: Vec<u32>,
}

impl DecapFilter for LocalRlocs {
    #[inline]
    fn is_local_rloc(&self, addr: IpAddr) -> bool {
        self.rlocs.contains(&addr)
    }

    #[inline]
    fn accepts_iid(&self, iid: u32) -> bool {
        self.iids.contains(&iid)
    }
}

/// The outer header fields decapsulation needs. From the packet itself ([`decapsulate`]) or,
/// when a UDP socket already stripped it, from the socket's ancillary data
/// ([`decapsulate_payload`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OuterHeader {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub ttl: u8,
    pub tos: u8,
    pub src_port: u16,
    pub dst_port: u16,
}

/// A decapsulated packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decapsulated {
    pub iid: u32,
    /// Where the inner packet is in the buffer.
    pub inner: Range<usize>,
    pub outer: OuterHeader,
    /// The whole LISP header (nonce, locator-status bits) for echo-nonce and gleaning.
    pub lisp: DataHeaderRepr,
}

/// Parses and checks a whole received packet (outer IP, UDP, LISP, inner) and fixes up the
/// inner header in place.
pub fn decapsulate(buf: &mut [u8], filter: &impl DecapFilter) -> Result<Decapsulated, DecapDrop> {
    let (outer, udp_at, end) = parse_outer(buf)?;
    let udp = &buf[udp_at..end];
    if udp.len() < UDP_LEN {
        return Err(DecapDrop::BadOuter);
    }
    let udp_len = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
    if udp_len < UDP_LEN || udp_len > udp.len() {
        return Err(DecapDrop::BadOuter);
    }
    let outer = OuterHeader {
        src_port: u16::from_be_bytes([udp[0], udp[1]]),
        dst_port: u16::from_be_bytes([udp[2], udp[3]]),
        ..outer
    };
    let payload = udp_at + UDP_LEN..udp_at + udp_len;
    let mut d = decapsulate_payload(&mut buf[payload.clone()], &outer, filter)?;
    d.inner = d.inner.start + payload.start..d.inner.end + payload.start;
    Ok(d)
}

/// The outer IP header's fields (ports left 0), where the UDP header starts and where the IP
/// packet ends (link-layer padding may follow).
fn parse_outer(b: &[u8]) -> Result<(OuterHeader, usize, usize), DecapDrop> {
    let blank = |src, dst, ttl, tos| OuterHeader { src, dst, ttl, tos, src_port: 0, dst_port: 0 };
    match b.first().map(|v| v >> 4) {
        Some(4) if b.len() >= 20 => {
            let ihl = usize::from(b[0] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([b[2], b[3]]));
            if ihl < 20 || total < ihl || total > b.len() {
                return Err(DecapDrop::BadOuter);
            }
            if header_checksum(&b[..ihl]) != 0 {
                return Err(DecapDrop::BadOuterChecksum);
            }
            if u16::from_be_bytes([b[6], b[7]]) & 0x3fff != 0 {
                return Err(DecapDrop::OuterFragment);
            }
            if b[9] != PROTO_UDP {
                return Err(DecapDrop::NotUdp);
            }
            let src = Ipv4Addr::new(b[12], b[13], b[14], b[15]);
            let dst = Ipv4Addr::new(b[16], b[17], b[18], b[19]);
            Ok((blank(src.into(), dst.into(), b[8], b[1]), ihl, total))
        }
        Some(6) if b.len() >= 40 => {
            let end = 40 + usize::from(u16::from_be_bytes([b[4], b[5]]));
            if end > b.len() {
                return Err(DecapDrop::BadOuter);
            }
            // Extension headers (fragments included) are not expected in front of LISP data.
            if b[6] != PROTO_UDP {
                return Err(DecapDrop::NotUdp);
            }
            let addr = |at: usize| {
                let mut a = [0u8; 16];
                a.copy_from_slice(&b[at..at + 16]);
                IpAddr::V6(Ipv6Addr::from(a))
            };
            Ok((blank(addr(8), addr(24), b[7], (b[0] << 4) | (b[1] >> 4)), 40, end))
        }
        _ => Err(DecapDrop::BadOuter),
    }
}

/// Checks a UDP payload (LISP header and inner packet, exactly) received with outer header
/// `outer` and fixes up the inner header in place. `inner` in the result is relative to
/// `payload`.
pub fn decapsulate_payload(
    payload: &mut [u8],
    outer: &OuterHeader,
    filter: &impl DecapFilter,
) -> Result<Decapsulated, DecapDrop> {
    if outer.dst_port != LISP_DATA_PORT {
        return Err(DecapDrop::WrongPort);
    }
    if !filter.is_local_rloc(outer.dst) {
        return Err(DecapDrop::NotOurRloc);
    }
    let Some(h) = payload.first_chunk::<HEADER_LEN>() else { return Err(DecapDrop::BadOuter) };
    let (lisp, _notes) = DataHeaderRepr::from_array(h);
    if lisp.key_id != 0 {
        return Err(DecapDrop::Encrypted);
    }
    // Without the I bit the packet belongs to the default instance (RFC 8060 §4.1).
    let iid = lisp.instance_id.unwrap_or(0);
    if !filter.accepts_iid(iid) {
        return Err(DecapDrop::UnknownIid);
    }
    let inner = &mut payload[HEADER_LEN..];
    let ih = InnerHeader::parse(inner).ok_or(DecapDrop::BadInner)?;
    let ecn = combine_ecn(ih.tos & 3, outer.tos & 3).ok_or(DecapDrop::CongestionOnNotEct)?;
    let tos = (outer.tos & !3) | ecn;
    let ttl = ih.ttl.min(outer.ttl);
    if ih.v6 {
        inner[0] = 0x60 | (tos >> 4);
        inner[1] = (tos << 4) | (inner[1] & 0x0f);
        inner[7] = ttl;
    } else if inner[1] != tos || inner[8] != ttl {
        inner[1] = tos;
        inner[8] = ttl;
        inner[10..12].copy_from_slice(&[0, 0]);
        let c = header_checksum(&inner[..ih.header_len]);
        inner[10..12].copy_from_slice(&c.to_be_bytes());
    }
    Ok(Decapsulated { iid, inner: HEADER_LEN..payload.len(), outer: *outer, lisp })
}

/// RFC 6040 §4.2: the inner ECN field after decapsulation, or `None` to drop. Codepoints:
/// 0 not-ECT, 1 ECT(1), 2 ECT(0), 3 CE.
#[inline]
pub fn combine_ecn(inner: u8, outer: u8) -> Option<u8> {
    const NOT_ECT: u8 = 0;
    const ECT1: u8 = 1;
    const CE: u8 = 3;
    match (inner, outer) {
        (NOT_ECT, CE) => None,
        (NOT_ECT, _) | (CE, _) => Some(inner),
        (_, CE) => Some(CE),
        (_, ECT1) => Some(ECT1),
        _ => Some(inner),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::locator::{flow_hash, tests::packet};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// An inner packet placed after `ENCAP_OVERHEAD_V6` bytes of headroom.
    fn framed(inner: &[u8]) -> (Vec<u8>, Range<usize>) {
        let mut buf = vec![0u8; ENCAP_OVERHEAD_V6];
        buf.extend_from_slice(inner);
        let r = ENCAP_OVERHEAD_V6..buf.len();
        (buf, r)
    }

    fn filter(rloc: &str, iid: u32) -> LocalRlocs {
        LocalRlocs { rlocs: vec![ip(rloc)], iids: vec![iid] }
    }

    #[test]
    fn all_four_combinations_round_trip() {
        for (eid_s, eid_d, rloc_s, rloc_d) in [
            ("10.0.0.1", "10.0.0.2", "192.0.2.1", "192.0.2.2"),
            ("10.0.0.1", "10.0.0.2", "2001:db8::1", "2001:db8::2"),
            ("fd00::1", "fd00::2", "192.0.2.1", "192.0.2.2"),
            ("fd00::1", "fd00::2", "2001:db8::1", "2001:db8::2"),
        ] {
            let mut inner = packet(ip(eid_s), ip(eid_d), 17, 4000, 53, 100);
            // DSCP AF41 with ECT(0); TTL 33.
            if inner[0] >> 4 == 4 {
                inner[1] = 0x8a;
                inner[8] = 33;
                inner[10..12].copy_from_slice(&[0, 0]);
                let c = checksum::checksum(&inner[..20]);
                inner[10..12].copy_from_slice(&c.to_be_bytes());
            } else {
                inner[0] = 0x68;
                inner[1] = 0xa0;
                inner[7] = 33;
            }
            let flow = flow_hash(&inner);
            let (mut buf, r) = framed(&inner);
            let mut p = EncapParams::new(ip(rloc_s), ip(rloc_d), 0x00ab_cdef, flow);
            p.nonce = Some(Nonce { value: 0x12_3456, echo_request: true });
            let out = encapsulate(&mut buf, r.clone(), &p).unwrap();
            assert_eq!(out.end, r.end);
            let pkt = &buf[out.clone()];
            let v4 = rloc_s.contains('.');
            let udp_at = if v4 { 20 } else { 40 };
            assert_eq!(pkt.len(), inner.len() + if v4 { 36 } else { 56 });
            if v4 {
                assert_eq!(checksum::checksum(&pkt[..20]), 0, "outer IPv4 checksum");
                assert_eq!((pkt[1], pkt[8], pkt[6] & 0x40), (0x8a, 33, 0x40), "DSCP+ECN, TTL copied; DF");
                assert_eq!(usize::from(u16::from_be_bytes([pkt[2], pkt[3]])), pkt.len());
            } else {
                let tc = (pkt[0] << 4) | (pkt[1] >> 4);
                assert_eq!((tc, pkt[7]), (0x8a, 33));
                let label = u32::from_be_bytes([0, pkt[1] & 0x0f, pkt[2], pkt[3]]);
                assert_eq!(label, flow & 0xfffff);
                assert_eq!(usize::from(u16::from_be_bytes([pkt[4], pkt[5]])), pkt.len() - 40);
            }
            let udp = &pkt[udp_at..udp_at + 8];
            assert_eq!(u16::from_be_bytes([udp[0], udp[1]]), 0xc000 | (flow & 0x3fff) as u16);
            assert_eq!(u16::from_be_bytes([udp[2], udp[3]]), 4341);
            assert_eq!(usize::from(u16::from_be_bytes([udp[4], udp[5]])), pkt.len() - udp_at);
            assert_eq!(&udp[6..8], [0, 0], "zero UDP checksum");
            assert_eq!(&pkt[udp_at + 8..udp_at + 16], [0xa8, 0x12, 0x34, 0x56, 0xab, 0xcd, 0xef, 0], "N, E, I");
            // Decapsulate in place: the inner packet comes back unchanged (same TTL and TOS).
            let mut rx = pkt.to_vec();
            let d = decapsulate(&mut rx, &filter(rloc_d, 0x00ab_cdef)).unwrap();
            assert_eq!(d.iid, 0x00ab_cdef);
            assert_eq!(&rx[d.inner.clone()], &inner[..]);
            assert_eq!(d.outer.src, ip(rloc_s));
            assert_eq!((d.lisp.nonce, d.lisp.echo_nonce_request), (Some(0x12_3456), true));
            // Not ours, wrong IID.
            let mut rx = pkt.to_vec();
            assert_eq!(decapsulate(&mut rx, &filter(rloc_s, 0x00ab_cdef)), Err(DecapDrop::NotOurRloc));
            assert_eq!(decapsulate(&mut rx, &filter(rloc_d, 1)), Err(DecapDrop::UnknownIid));
        }
    }

    #[test]
    fn payload_encapsulation_leaves_the_outer_header_to_the_socket() {
        for (s, d) in [("10.0.0.1", "10.0.0.2"), ("fd00::1", "fd00::2")] {
            let mut inner = packet(ip(s), ip(d), 6, 1000, 80, 200);
            if inner[0] >> 4 == 4 {
                inner[1] = 0xb9;
                inner[8] = 17;
            } else {
                inner[0] = 0x6b;
                inner[1] = 0x90;
                inner[7] = 17;
            }
            let (mut buf, r) = framed(&inner);
            let p = encapsulate_payload(&mut buf, r.clone(), 0x12_3456, None).unwrap();
            assert_eq!(p.range, r.start - HEADER_LEN..r.end);
            assert_eq!((p.ttl, p.tos), (17, 0xb9), "{s}");
            // The ETR's payload path takes it back.
            let outer = OuterHeader { src: ip(s), dst: ip(d), ttl: 64, tos: 0xb9, src_port: 0xc000, dst_port: 4341 };
            let mut rx = buf[p.range.clone()].to_vec();
            let dec = decapsulate_payload(&mut rx, &outer, &filter(d, 0x12_3456)).unwrap();
            assert_eq!(&rx[dec.inner], &inner[..]);
            assert_eq!(encapsulate_payload(&mut buf, 4..r.end, 0, None), Err(EncapError::BadInner));
            let mut tight = inner.clone();
            let n = tight.len();
            assert_eq!(
                encapsulate_payload(&mut tight, 0..n, 0, None),
                Err(EncapError::NoHeadroom { need: HEADER_LEN, have: 0 })
            );
        }
    }

    #[test]
    fn encap_errors() {
        let inner = packet(ip("10.0.0.1"), ip("10.0.0.2"), 6, 1, 2, 10);
        let mut buf = inner.clone();
        let p = EncapParams::new(ip("192.0.2.1"), ip("192.0.2.2"), 0, 1);
        assert_eq!(encapsulate(&mut buf, 0..inner.len(), &p), Err(EncapError::NoHeadroom { need: 36, have: 0 }));
        let (mut buf, r) = framed(&inner);
        let mixed = EncapParams::new(ip("192.0.2.1"), ip("2001:db8::2"), 0, 1);
        assert_eq!(encapsulate(&mut buf, r.clone(), &mixed), Err(EncapError::MixedFamilies));
        assert_eq!(encapsulate(&mut buf, r.start..r.end - 1, &p), Err(EncapError::BadInner), "length mismatch");
        assert_eq!(encapsulate(&mut buf, r.start..r.end + 1, &p), Err(EncapError::BadRange));
        buf[r.start] = 0x55;
        assert_eq!(encapsulate(&mut buf, r, &p), Err(EncapError::BadInner));
    }

    #[test]
    fn decap_adjusts_ttl_dscp_ecn() {
        let inner = packet(ip("10.0.0.1"), ip("10.0.0.2"), 17, 1, 2, 10); // TTL 64, TOS 0
        let (mut buf, r) = framed(&inner);
        let out = encapsulate(&mut buf, r, &EncapParams::new(ip("192.0.2.1"), ip("192.0.2.2"), 0, 9)).unwrap();
        let f = filter("192.0.2.2", 0);
        let rewrite_outer = |pkt: &mut [u8], tos: u8, ttl: u8| {
            pkt[1] = tos;
            pkt[8] = ttl;
            pkt[10..12].copy_from_slice(&[0, 0]);
            let c = checksum::checksum(&pkt[..20]);
            pkt[10..12].copy_from_slice(&c.to_be_bytes());
        };
        // Underlay lowered the TTL and remarked DSCP; inner not-ECT, outer ECT(0).
        let mut pkt = buf[out.clone()].to_vec();
        rewrite_outer(&mut pkt, 0xb8 | 2, 20);
        let d = decapsulate(&mut pkt, &f).unwrap();
        let i = &pkt[d.inner.clone()];
        assert_eq!((i[8], i[1]), (20, 0xb8), "TTL lowered, DSCP copied, ECN stays not-ECT");
        assert_eq!(checksum::checksum(&i[..20]), 0, "inner checksum updated");
        assert!(InnerHeader::parse(i).is_some());
        // CE on the outer of a not-ECT inner packet: drop.
        let mut pkt = buf[out.clone()].to_vec();
        rewrite_outer(&mut pkt, 3, 64);
        assert_eq!(decapsulate(&mut pkt, &f), Err(DecapDrop::CongestionOnNotEct));
        // A higher outer TTL never raises the inner one.
        let mut pkt = buf[out.clone()].to_vec();
        rewrite_outer(&mut pkt, 0, 200);
        let d = decapsulate(&mut pkt, &f).unwrap();
        assert_eq!(pkt[d.inner.start + 8], 64);
        // A corrupted outer checksum.
        let mut pkt = buf[out].to_vec();
        pkt[8] ^= 1;
        assert_eq!(decapsulate(&mut pkt, &f), Err(DecapDrop::BadOuterChecksum));
    }

    proptest::proptest! {
        #[test]
        fn header_checksum_matches_rfc1071(h in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            proptest::prop_assert_eq!(header_checksum(&h), checksum::checksum(&h));
        }
    }

    #[test]
    fn rfc6040_table() {
        // Rows: inner not-ECT, ECT(0), ECT(1), CE; columns: outer not-ECT, ECT(0), ECT(1), CE.
        let (n, e0, e1, ce) = (0u8, 2u8, 1u8, 3u8);
        let table = [
            (n, [Some(n), Some(n), Some(n), None]),
            (e0, [Some(e0), Some(e0), Some(e1), Some(ce)]),
            (e1, [Some(e1), Some(e1), Some(e1), Some(ce)]),
            (ce, [Some(ce), Some(ce), Some(ce), Some(ce)]),
        ];
        for (inner, row) in table {
            for (outer, want) in [n, e0, e1, ce].into_iter().zip(row) {
                assert_eq!(combine_ecn(inner, outer), want, "inner {inner} outer {outer}");
            }
        }
    }

    #[test]
    fn decap_drops_are_typed_and_never_panic() {
        let inner = packet(ip("fd00::1"), ip("fd00::2"), 17, 1, 2, 10);
        let (mut buf, r) = framed(&inner);
        let out = encapsulate(&mut buf, r, &EncapParams::new(ip("2001:db8::1"), ip("2001:db8::2"), 5, 9)).unwrap();
        let good = buf[out].to_vec();
        let f = filter("2001:db8::2", 5);
        let mut p = good.clone();
        p[42..44].copy_from_slice(&4342u16.to_be_bytes());
        assert_eq!(decapsulate(&mut p, &f), Err(DecapDrop::WrongPort));
        let mut p = good.clone();
        p[6] = 6;
        assert_eq!(decapsulate(&mut p, &f), Err(DecapDrop::NotUdp));
        let mut p = good.clone();
        p[48] |= 0x01;
        assert_eq!(decapsulate(&mut p, &f), Err(DecapDrop::Encrypted));
        let mut p = good.clone();
        p[56] = 0x45;
        assert_eq!(decapsulate(&mut p, &f), Err(DecapDrop::BadInner));
        // No I bit: instance 0, which this filter does not accept.
        let mut p = good.clone();
        p[48] &= !0x08;
        assert_eq!(decapsulate(&mut p, &f), Err(DecapDrop::UnknownIid));
        // Every truncation and every single-byte corruption: an answer, never a panic.
        for n in 0..good.len() {
            let mut p = good[..n].to_vec();
            assert!(decapsulate(&mut p, &f).is_err(), "truncated to {n}");
        }
        for i in 0..good.len() {
            for v in [0u8, 0xff, 0x45, 0x60] {
                let mut p = good.clone();
                p[i] = v;
                let _ = decapsulate(&mut p, &f);
            }
        }
        // A UDP socket already stripped the outer headers: the payload path.
        let mut payload = good[48..].to_vec();
        let outer = OuterHeader {
            src: ip("2001:db8::1"),
            dst: ip("2001:db8::2"),
            ttl: 64,
            tos: 0,
            src_port: 0xc001,
            dst_port: 4341,
        };
        let d = decapsulate_payload(&mut payload, &outer, &f).unwrap();
        assert_eq!(&payload[d.inner], &inner[..]);
    }
}
