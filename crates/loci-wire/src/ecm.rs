//! Encapsulated Control Message (type 8, RFC 9301 §5.8): a control message (usually a
//! Map-Request) wrapped in an inner IP and UDP header, sent to a Map-Resolver, Map-Server or
//! DDT node, which forwards it or answers the inner source directly.
//!
//! ```text
//!      0                   1                   2                   3
//!      0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//!     +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! LISP|Type=8 |S|D|E|M|            Reserved                           |
//!     +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//!     ~        LISP-SEC Authentication Data (only when S is set)      ~
//!     +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//!   / |                       IPv4 or IPv6 Header                     |
//! IH  |                  (uses RLOC or EID addresses)                 |
//!   \ |                                                               |
//!     +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//!   / |       Source Port = xxxx      |       Dest Port = yyyy        |
//! UDP +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//!   \ |           UDP Length          |        UDP Checksum           |
//!     +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! LCM |                      LISP Control Message                     |
//!     +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! S: LISP-SEC authentication data follows (RFC 9303 §6.1). D: DDT-originated, asks for a
//! Map-Referral (RFC 8111). E: forward to the ETR. M: destined to a Map-Server.
//!
//! The inner control message is kept as bytes ([`Ecm::inner`]); the caller decodes it with
//! [`crate::message::ControlMessage`]. The inner IP header must carry UDP directly (IPv6
//! extension headers and IPv4 fragments are refused). Every inner header field that is not
//! derived from the others is kept so accepted bytes re-emit identically; lengths and
//! checksums are computed on emit and checked on parse: a wrong IPv4 header checksum or a
//! wrong non-zero UDP checksum is [`Error::Invalid`]. A zero UDP checksum (RFC 9301 says it
//! MUST be non-zero, but some senders skip it) is accepted and remembered in
//! [`Ecm::zero_udp_checksum`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::address::Address;
use crate::buf::{Reader, Writer};
use crate::error::{Error, Result};
use crate::message::message_type::ECM;
use crate::record::check_mask;

/// Length of the ECM header word.
pub const HEADER_LEN: usize = 4;
/// IP protocol number of UDP.
const UDP: u8 = 17;
const UDP_HEADER_LEN: usize = 8;
const IPV4_HEADER_LEN: usize = 20;
const IPV6_HEADER_LEN: usize = 40;

const S_BIT: u32 = 0x0800_0000;
const D_BIT: u32 = 0x0400_0000;
const E_BIT: u32 = 0x0200_0000;
const M_BIT: u32 = 0x0100_0000;

pub mod checksum {
    //! The Internet checksum (RFC 1071), for the inner headers of ECMs and for anyone else in
    //! the crate (or above it) who builds IP/UDP headers.
    //!
    //! Sums are kept in a `u64` so any realistic amount of data can be added before folding.

    use std::net::IpAddr;

    /// Adds `data` to a running one's-complement sum as big-endian 16-bit words. An odd final
    /// byte is padded with a zero byte, so only the last piece of a sum may have odd length.
    pub fn add(mut sum: u64, data: &[u8]) -> u64 {
        let mut words = data.chunks_exact(2);
        for w in &mut words {
            sum += u64::from(u16::from_be_bytes([w[0], w[1]]));
        }
        if let [last] = words.remainder() {
            sum += u64::from(*last) << 8;
        }
        sum
    }

    /// Folds a sum to 16 bits and complements it: the value for a checksum field, or 0 when
    /// the summed data already held a correct checksum.
    pub fn finish(mut sum: u64) -> u16 {
        while sum >> 16 != 0 {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    /// The checksum of `data` (e.g. an IPv4 header with its checksum field zeroed). A header
    /// that holds a correct checksum gives 0.
    pub fn checksum(data: &[u8]) -> u16 {
        finish(add(0, data))
    }

    /// The sum of the IPv4 (RFC 768) or IPv6 (RFC 8200 §8.1) pseudo-header for an upper-layer
    /// packet of `len` bytes with protocol `protocol`.
    pub fn pseudo_header(src: IpAddr, dst: IpAddr, protocol: u8, len: u32) -> u64 {
        let mut sum = 0;
        for a in [src, dst] {
            sum = match a {
                IpAddr::V4(a) => add(sum, &a.octets()),
                IpAddr::V6(a) => add(sum, &a.octets()),
            };
        }
        sum + u64::from(protocol) + u64::from(len >> 16) + u64::from(len & 0xffff)
    }

    /// The UDP checksum of `segment` (UDP header with a zero checksum field, then the payload).
    /// A computed 0 is returned as 0xffff, since 0 on the wire means "no checksum".
    pub fn udp(src: IpAddr, dst: IpAddr, segment: &[u8]) -> u16 {
        match finish(add(pseudo_header(src, dst, 17, segment.len() as u32), segment)) {
            0 => 0xffff,
            c => c,
        }
    }

    /// True when a received UDP segment's non-zero checksum is correct.
    pub fn udp_ok(src: IpAddr, dst: IpAddr, segment: &[u8]) -> bool {
        finish(add(pseudo_header(src, dst, 17, segment.len() as u32), segment)) == 0
    }
}

/// ECM authentication data types (RFC 9303 §8.1).
pub mod ad_type {
    /// LISP-SEC-ECM-EXT, the only one defined.
    pub const LISP_SEC: u8 = 1;
}

/// One EID-prefix an EID-AD vouches for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EidAdRecord {
    pub eid_mask_len: u8,
    pub eid: Address,
}

/// The part of an EID-AD a Map-Server fills in (absent in what an ITR sends).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EidAdContent {
    /// E: an ETR authoritative for these prefixes does not support LISP-SEC.
    pub etr_cant_sign: bool,
    /// LISP-SEC HMAC ID of `hmac` (RFC 9303 §8.3).
    pub hmac_id: u16,
    /// At most 255.
    pub records: Vec<EidAdRecord>,
    /// The EID HMAC: the rest of the EID-AD after the records.
    pub hmac: Vec<u8>,
}

/// EID Authentication Data (RFC 9303 §6.1), shared by the ECM and the Map-Reply AD.
///
/// ```text
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+ <---+
/// |           EID-AD Length       |           KDF ID              |     |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+     |
/// | Record Count  |E| Unassigned  |         EID HMAC ID           |EID-AD
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+\    |
/// |  Unassigned   | EID mask-len  |           EID-AFI             | |   |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+ Rec |
/// ~                          EID-Prefix ...                       ~ |   |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+/    |
/// ~                            EID HMAC                           ~     |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+ <---+
/// ```
///
/// EID-AD Length counts the whole EID-AD, its own field included: RFC 9303 has an ITR send 4
/// (only the KDF ID after the length).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EidAd {
    /// Key derivation function of the MS-OTK (RFC 9303 §8.5).
    pub kdf_id: u16,
    /// Present once a Map-Server has signed the prefixes.
    pub content: Option<EidAdContent>,
}

impl EidAd {
    pub fn wire_len(&self) -> usize {
        4 + self
            .content
            .as_ref()
            .map_or(0, |c| 4 + c.records.iter().map(|r| 2 + r.eid.wire_len()).sum::<usize>() + c.hmac.len())
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self> {
        let len_at = r.at();
        let len = usize::from(r.u16("EID-AD length")?);
        if len < 4 {
            return Err(Error::Invalid { what: "EID-AD length", at: len_at, reason: "shorter than 4" });
        }
        let mut body = r.sub(len - 2, "EID-AD")?;
        let kdf_id = body.u16("KDF ID")?;
        let content = if body.is_empty() {
            None
        } else {
            let count = body.u8("EID-AD record count")?;
            let flags = body.u8("EID-AD flags")?;
            body.reserved(flags.into(), 0x7f);
            let hmac_id = body.u16("EID HMAC ID")?;
            body.check_count("EID-AD record", count.into(), 4)?;
            let mut records = Vec::with_capacity(count.into());
            for _ in 0..count {
                let rsvd = body.u8("EID-AD record reserved")?;
                body.reserved(rsvd.into(), 0xff);
                let mask_at = body.at();
                let eid_mask_len = body.u8("EID mask-len")?;
                let eid = Address::read(&mut body)?;
                check_mask(&eid, eid_mask_len, mask_at)?;
                records.push(EidAdRecord { eid_mask_len, eid });
            }
            let hmac = body.bytes(body.remaining(), "EID HMAC")?.to_vec();
            Some(EidAdContent { etr_cant_sign: flags & 0x80 != 0, hmac_id, records, hmac })
        };
        r.absorb(&body);
        Ok(EidAd { kdf_id, content })
    }

    pub(crate) fn write(&self, w: &mut Writer<'_>) {
        w.u16(self.wire_len() as u16);
        w.u16(self.kdf_id);
        if let Some(c) = &self.content {
            w.u8(c.records.len() as u8);
            w.u8(u8::from(c.etr_cant_sign) << 7);
            w.u16(c.hmac_id);
            for rec in &c.records {
                w.u8(0);
                w.u8(rec.eid_mask_len);
                rec.eid.write(w);
            }
            w.bytes(&c.hmac);
        }
    }
}

/// LISP-SEC ECM authentication data (RFC 9303 §6.1), present when S is set.
///
/// ```text
///  0                   1                   2                   3
///  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |  ECM AD Type  |   Unassigned  |        Requested HMAC ID      |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+\
/// |              OTK Length       |     Key ID    | OTK Wrap. ID  | |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+ |
/// |                       One-Time-Key Preamble ...               | |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+OTK-AD
/// |                   ... One-Time-Key Preamble                   | |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+ |
/// ~                      One-Time Key (128 bits)                  ~/
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+ <---+
/// |           EID-AD Length       |           KDF ID              |     |
/// ~                              ...                              ~ EID-AD
/// ```
///
/// OTK Length is read, like EID-AD Length, as the length of the whole OTK-AD including its own
/// 4-byte row (28 for an 8-byte preamble and a 128-bit key); the preamble and key are kept
/// together in `otk`. Only AD type 1 is defined; any other type has no known length and is
/// refused with [`Error::Invalid`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EcmAuth {
    /// The HMAC the ITR wants the mappings protected with (RFC 9303 §8.3).
    pub requested_hmac_id: u16,
    /// Which pre-shared secret protects the OTK.
    pub key_id: u8,
    /// Key wrap / KDF of the OTK (RFC 9303 §8.4).
    pub otk_wrap_id: u8,
    /// One-Time-Key Preamble followed by the (possibly wrapped) One-Time Key.
    pub otk: Vec<u8>,
    pub eid_ad: EidAd,
}

impl EcmAuth {
    pub fn wire_len(&self) -> usize {
        4 + 4 + self.otk.len() + self.eid_ad.wire_len()
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self> {
        let type_at = r.at();
        let ty = r.u8("ECM AD type")?;
        if ty != ad_type::LISP_SEC {
            return Err(Error::Invalid {
                what: "ECM AD type",
                at: type_at,
                reason: "unknown authentication data type",
            });
        }
        let unassigned = r.u8("ECM AD unassigned")?;
        r.reserved(unassigned.into(), 0xff);
        let requested_hmac_id = r.u16("requested HMAC ID")?;
        let len_at = r.at();
        let otk_len = usize::from(r.u16("OTK length")?);
        if otk_len < 4 {
            return Err(Error::Invalid { what: "OTK length", at: len_at, reason: "shorter than 4" });
        }
        let key_id = r.u8("OTK key ID")?;
        let otk_wrap_id = r.u8("OTK wrap ID")?;
        let otk = r.bytes(otk_len - 4, "one-time key")?.to_vec();
        let eid_ad = EidAd::read(r)?;
        Ok(EcmAuth { requested_hmac_id, key_id, otk_wrap_id, otk, eid_ad })
    }

    pub(crate) fn write(&self, w: &mut Writer<'_>) {
        w.u8(ad_type::LISP_SEC);
        w.u8(0);
        w.u16(self.requested_hmac_id);
        w.u16((4 + self.otk.len()) as u16);
        w.u8(self.key_id);
        w.u8(self.otk_wrap_id);
        w.bytes(&self.otk);
        self.eid_ad.write(w);
    }
}

/// The inner IP header of an ECM. Total/payload length, protocol (always UDP) and the IPv4
/// header checksum are not stored: they are computed on emit and checked on parse.
///
/// The family is that of `src`; `dst` must be of the same family (emit otherwise writes its
/// IPv4-mapped form, or the unspecified address). Fields of the other family are zero/empty
/// after parsing and ignored on emit.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InnerIp {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// TTL (IPv4) or hop limit (IPv6).
    pub ttl: u8,
    /// DSCP and ECN (IPv4 TOS) or the IPv6 traffic class.
    pub tos: u8,
    /// IPv4 identification.
    pub identification: u16,
    /// IPv4 DF.
    pub dont_fragment: bool,
    /// IPv6 flow label (20 bits).
    pub flow_label: u32,
    /// IPv4 header options, a multiple of 4 bytes and at most 40.
    pub options: Vec<u8>,
}

impl InnerIp {
    /// A header from `src` to `dst` with TTL/hop limit 64 and every other field zero.
    pub fn new(src: IpAddr, dst: IpAddr) -> InnerIp {
        InnerIp {
            src,
            dst,
            ttl: 64,
            tos: 0,
            identification: 0,
            dont_fragment: false,
            flow_label: 0,
            options: Vec::new(),
        }
    }

    /// Encoded header length.
    pub fn header_len(&self) -> usize {
        match self.src {
            IpAddr::V4(_) => IPV4_HEADER_LEN + self.options.len(),
            IpAddr::V6(_) => IPV6_HEADER_LEN,
        }
    }

    /// Reads the IP header; returns it with the length of the UDP datagram it says follows.
    fn read(r: &mut Reader<'_>) -> Result<(Self, usize)> {
        let at = r.at();
        let Some(&first) = r.rest().first() else {
            return Err(Error::Truncated { what: "inner IP header", at, need: 1 });
        };
        match first >> 4 {
            4 => {
                let h = r.array::<IPV4_HEADER_LEN>("inner IPv4 header")?;
                let ihl = usize::from(h[0] & 0x0f) * 4;
                if ihl < IPV4_HEADER_LEN {
                    return Err(Error::Invalid { what: "inner IPv4 IHL", at, reason: "shorter than 20 bytes" });
                }
                let options = r.bytes(ihl - IPV4_HEADER_LEN, "inner IPv4 options")?;
                if checksum::finish(checksum::add(checksum::add(0, &h), options)) != 0 {
                    return Err(Error::Invalid {
                        what: "inner IPv4 header checksum",
                        at: at + 10,
                        reason: "checksum mismatch",
                    });
                }
                let total = usize::from(u16::from_be_bytes([h[2], h[3]]));
                let frag = u16::from_be_bytes([h[6], h[7]]);
                r.reserved(frag.into(), 0x8000);
                if frag & 0x3fff != 0 {
                    return Err(Error::Invalid {
                        what: "inner IPv4 fragment",
                        at: at + 6,
                        reason: "inner packet is a fragment",
                    });
                }
                if h[9] != UDP {
                    return Err(Error::Invalid { what: "inner IP protocol", at: at + 9, reason: "not UDP" });
                }
                if total < ihl + UDP_HEADER_LEN {
                    return Err(Error::Invalid {
                        what: "inner IPv4 total length",
                        at: at + 2,
                        reason: "too short for the IP and UDP headers",
                    });
                }
                let ip = InnerIp {
                    src: Ipv4Addr::new(h[12], h[13], h[14], h[15]).into(),
                    dst: Ipv4Addr::new(h[16], h[17], h[18], h[19]).into(),
                    ttl: h[8],
                    tos: h[1],
                    identification: u16::from_be_bytes([h[4], h[5]]),
                    dont_fragment: frag & 0x4000 != 0,
                    flow_label: 0,
                    options: options.to_vec(),
                };
                Ok((ip, total - ihl))
            }
            6 => {
                let h = r.array::<IPV6_HEADER_LEN>("inner IPv6 header")?;
                let vtf = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
                let payload = usize::from(u16::from_be_bytes([h[4], h[5]]));
                if h[6] != UDP {
                    return Err(Error::Invalid { what: "inner IP next header", at: at + 6, reason: "not UDP" });
                }
                if payload < UDP_HEADER_LEN {
                    return Err(Error::Invalid {
                        what: "inner IPv6 payload length",
                        at: at + 4,
                        reason: "too short for the UDP header",
                    });
                }
                let mut src = [0u8; 16];
                src.copy_from_slice(&h[8..24]);
                let mut dst = [0u8; 16];
                dst.copy_from_slice(&h[24..40]);
                let ip = InnerIp {
                    src: Ipv6Addr::from(src).into(),
                    dst: Ipv6Addr::from(dst).into(),
                    ttl: h[7],
                    tos: (vtf >> 20) as u8,
                    identification: 0,
                    dont_fragment: false,
                    flow_label: vtf & 0x000f_ffff,
                    options: Vec::new(),
                };
                Ok((ip, payload))
            }
            _ => Err(Error::Invalid { what: "inner IP version", at, reason: "neither 4 nor 6" }),
        }
    }

    /// The destination in the family of the source (see the type's documentation).
    fn dst_v4(&self) -> Ipv4Addr {
        match self.dst {
            IpAddr::V4(a) => a,
            IpAddr::V6(a) => a.to_ipv4_mapped().unwrap_or(Ipv4Addr::UNSPECIFIED),
        }
    }

    fn dst_v6(&self) -> Ipv6Addr {
        match self.dst {
            IpAddr::V4(a) => a.to_ipv6_mapped(),
            IpAddr::V6(a) => a,
        }
    }

    /// The addresses as written on the wire, for the UDP pseudo-header.
    fn wire_addrs(&self) -> (IpAddr, IpAddr) {
        match self.src {
            IpAddr::V4(_) => (self.src, self.dst_v4().into()),
            IpAddr::V6(_) => (self.src, self.dst_v6().into()),
        }
    }

    /// Writes the header for a UDP datagram of `udp_len` bytes.
    fn write(&self, w: &mut Writer<'_>, udp_len: usize) {
        match self.src {
            IpAddr::V4(src) => {
                let ihl = IPV4_HEADER_LEN + self.options.len();
                let total = (ihl + udp_len) as u16;
                let mut h = [0u8; IPV4_HEADER_LEN];
                h[0] = 0x40 | (ihl / 4) as u8 & 0x0f;
                h[1] = self.tos;
                h[2..4].copy_from_slice(&total.to_be_bytes());
                h[4..6].copy_from_slice(&self.identification.to_be_bytes());
                h[6] = if self.dont_fragment { 0x40 } else { 0 };
                h[8] = self.ttl;
                h[9] = UDP;
                h[12..16].copy_from_slice(&src.octets());
                h[16..20].copy_from_slice(&self.dst_v4().octets());
                let sum = checksum::finish(checksum::add(checksum::add(0, &h), &self.options));
                h[10..12].copy_from_slice(&sum.to_be_bytes());
                w.bytes(&h);
                w.bytes(&self.options);
            }
            IpAddr::V6(src) => {
                w.u32(6 << 28 | u32::from(self.tos) << 20 | (self.flow_label & 0x000f_ffff));
                w.u16(udp_len as u16);
                w.u8(UDP);
                w.u8(self.ttl);
                w.bytes(&src.octets());
                w.bytes(&self.dst_v6().octets());
            }
        }
    }
}

/// An Encapsulated Control Message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ecm {
    /// D: DDT-originated; the sender wants Map-Referrals (RFC 8111).
    pub ddt: bool,
    /// E: forward to the ETR.
    pub to_etr: bool,
    /// M: destined to a Map-Server.
    pub to_ms: bool,
    /// LISP-SEC data; the S bit is set exactly when this is present ([`Ecm::security`]).
    pub auth: Option<EcmAuth>,
    pub inner_ip: InnerIp,
    pub src_port: u16,
    pub dst_port: u16,
    /// The inner UDP checksum was (or is to be) sent as zero instead of computed.
    pub zero_udp_checksum: bool,
    /// The encapsulated control message.
    pub payload: Vec<u8>,
}

impl Ecm {
    /// An ECM without flags or LISP-SEC data, carrying `payload` from `src`:`src_port` to
    /// `dst`:`dst_port` (TTL 64, UDP checksum computed).
    pub fn new(src: IpAddr, src_port: u16, dst: IpAddr, dst_port: u16, payload: Vec<u8>) -> Ecm {
        Ecm {
            ddt: false,
            to_etr: false,
            to_ms: false,
            auth: None,
            inner_ip: InnerIp::new(src, dst),
            src_port,
            dst_port,
            zero_udp_checksum: false,
            payload,
        }
    }

    /// S: LISP-SEC authentication data is present.
    pub fn security(&self) -> bool {
        self.auth.is_some()
    }

    /// The encapsulated control message, for [`crate::message::ControlMessage`] to decode.
    pub fn inner(&self) -> &[u8] {
        &self.payload
    }

    pub fn wire_len(&self) -> usize {
        HEADER_LEN
            + self.auth.as_ref().map_or(0, EcmAuth::wire_len)
            + self.inner_ip.header_len()
            + UDP_HEADER_LEN
            + self.payload.len()
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self> {
        let first = r.u32("ECM header")?;
        let found = (first >> 28) as u8;
        Error::expect_type(ECM, found)?;
        r.reserved(first.into(), 0x00ff_ffff);
        let auth = if first & S_BIT != 0 { Some(EcmAuth::read(r)?) } else { None };
        let (inner_ip, udp_len) = InnerIp::read(r)?;
        let udp_at = r.at();
        let segment = r.bytes(udp_len, "inner UDP datagram")?;
        let mut u = Reader::new(segment);
        let src_port = u.u16("inner UDP source port")?;
        let dst_port = u.u16("inner UDP destination port")?;
        let len = u.u16("inner UDP length")?;
        let sum = u.u16("inner UDP checksum")?;
        if usize::from(len) != udp_len {
            return Err(Error::Invalid {
                what: "inner UDP length",
                at: udp_at + 4,
                reason: "does not match the IP payload length",
            });
        }
        if sum != 0 && !checksum::udp_ok(inner_ip.src, inner_ip.dst, segment) {
            return Err(Error::Invalid { what: "inner UDP checksum", at: udp_at + 6, reason: "checksum mismatch" });
        }
        Ok(Ecm {
            ddt: first & D_BIT != 0,
            to_etr: first & E_BIT != 0,
            to_ms: first & M_BIT != 0,
            auth,
            inner_ip,
            src_port,
            dst_port,
            zero_udp_checksum: sum == 0,
            payload: u.rest().to_vec(),
        })
    }

    pub(crate) fn write(&self, w: &mut Writer<'_>) {
        let bit = |b: bool, m: u32| if b { m } else { 0 };
        w.u32(
            u32::from(ECM) << 28
                | bit(self.auth.is_some(), S_BIT)
                | bit(self.ddt, D_BIT)
                | bit(self.to_etr, E_BIT)
                | bit(self.to_ms, M_BIT),
        );
        if let Some(a) = &self.auth {
            a.write(w);
        }
        let udp_len = UDP_HEADER_LEN + self.payload.len();
        self.inner_ip.write(w, udp_len);
        let mut udp = [0u8; UDP_HEADER_LEN];
        udp[0..2].copy_from_slice(&self.src_port.to_be_bytes());
        udp[2..4].copy_from_slice(&self.dst_port.to_be_bytes());
        udp[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
        if !self.zero_udp_checksum {
            let (src, dst) = self.inner_ip.wire_addrs();
            let sum = checksum::pseudo_header(src, dst, UDP, udp_len as u32);
            let sum = match checksum::finish(checksum::add(checksum::add(sum, &udp), &self.payload)) {
                0 => 0xffff,
                c => c,
            };
            udp[6..8].copy_from_slice(&sum.to_be_bytes());
        }
        w.bytes(&udp);
        w.bytes(&self.payload);
    }
}

crate::buf::impl_wire!(Ecm);

/// A zero-copy view of an ECM: its flags, and the encapsulated IP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EcmPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EcmPacket<T> {
    /// Wraps a buffer without checks; accessors panic if it is shorter than [`HEADER_LEN`].
    pub const fn new_unchecked(buffer: T) -> Self {
        EcmPacket { buffer }
    }

    /// Wraps a buffer, checking the header length and the type field.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated { what: "ECM header", at: b.len(), need: HEADER_LEN - b.len() });
        }
        let found = b[0] >> 4;
        Error::expect_type(ECM, found)?;
        Ok(EcmPacket { buffer })
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn flag(&self, bit: u8) -> bool {
        self.buffer.as_ref()[0] & bit != 0
    }

    /// S: LISP-SEC authentication data follows the header.
    pub fn security(&self) -> bool {
        self.flag(0x08)
    }

    /// D: DDT-originated.
    pub fn ddt(&self) -> bool {
        self.flag(0x04)
    }

    /// E: forward to the ETR.
    pub fn to_etr(&self) -> bool {
        self.flag(0x02)
    }

    /// M: destined to a Map-Server.
    pub fn to_ms(&self) -> bool {
        self.flag(0x01)
    }

    /// Length of the authentication data (0 without S), from its two length fields.
    pub fn auth_len(&self) -> Result<usize> {
        if !self.security() {
            return Ok(0);
        }
        let b = self.buffer.as_ref();
        let u16_at =
            |at: usize, what| {
                b.get(at..at + 2)
                    .map(|x| usize::from(u16::from_be_bytes([x[0], x[1]])))
                    .ok_or_else(|| Error::Truncated { what, at: at.min(b.len()), need: at + 2 - b.len().min(at + 2) })
            };
        let otk_len = u16_at(HEADER_LEN + 4, "OTK length")?;
        let eid_ad_len = u16_at(HEADER_LEN + 4 + otk_len, "EID-AD length")?;
        Ok(4 + otk_len + eid_ad_len)
    }

    /// The encapsulated IP packet (inner IP header onwards), unchecked beyond its start.
    pub fn inner_packet(&self) -> Result<&[u8]> {
        let at = HEADER_LEN + self.auth_len()?;
        let b = self.buffer.as_ref();
        b.get(at..).ok_or_else(|| Error::Truncated { what: "ECM authentication data", at: b.len(), need: at - b.len() })
    }
}

#[cfg(any(test, feature = "proptest"))]
pub mod strategy {
    //! proptest strategies for ECMs.
    use super::*;
    use crate::record::strategy::eid_with_mask;
    use proptest::collection::vec;
    use proptest::prelude::*;

    pub fn eid_ad() -> impl Strategy<Value = EidAd> {
        let record = eid_with_mask().prop_map(|(eid, eid_mask_len)| EidAdRecord { eid_mask_len, eid });
        let content = (any::<bool>(), any::<u16>(), vec(record, 0..3), vec(any::<u8>(), 0..33))
            .prop_map(|(etr_cant_sign, hmac_id, records, hmac)| EidAdContent { etr_cant_sign, hmac_id, records, hmac });
        (any::<u16>(), proptest::option::of(content)).prop_map(|(kdf_id, content)| EidAd { kdf_id, content })
    }

    pub fn ecm_auth() -> impl Strategy<Value = EcmAuth> {
        (any::<u16>(), any::<u8>(), any::<u8>(), vec(any::<u8>(), 0..33), eid_ad()).prop_map(
            |(requested_hmac_id, key_id, wrap, otk, eid_ad)| EcmAuth {
                requested_hmac_id,
                key_id,
                otk_wrap_id: wrap,
                otk,
                eid_ad,
            },
        )
    }

    pub fn inner_ip() -> impl Strategy<Value = InnerIp> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<[u8; 4]>(), any::<(u8, u8, u16, bool)>(), 0usize..=10).prop_flat_map(
                |(src, dst, (ttl, tos, identification, dont_fragment), words)| {
                    vec(any::<u8>(), words * 4).prop_map(move |options| InnerIp {
                        src: Ipv4Addr::from(src).into(),
                        dst: Ipv4Addr::from(dst).into(),
                        ttl,
                        tos,
                        identification,
                        dont_fragment,
                        flow_label: 0,
                        options,
                    })
                }
            ),
            (any::<[u8; 16]>(), any::<[u8; 16]>(), any::<(u8, u8)>(), 0u32..1 << 20).prop_map(
                |(src, dst, (ttl, tos), flow_label)| InnerIp {
                    src: Ipv6Addr::from(src).into(),
                    dst: Ipv6Addr::from(dst).into(),
                    ttl,
                    tos,
                    identification: 0,
                    dont_fragment: false,
                    flow_label,
                    options: Vec::new(),
                }
            ),
        ]
    }

    pub fn ecm() -> impl Strategy<Value = Ecm> {
        (any::<[bool; 4]>(), proptest::option::of(ecm_auth()), inner_ip(), any::<(u16, u16)>(), vec(any::<u8>(), 0..64))
            .prop_map(|([ddt, to_etr, to_ms, zero_udp_checksum], auth, inner_ip, (src_port, dst_port), payload)| Ecm {
                ddt,
                to_etr,
                to_ms,
                auth,
                inner_ip,
                src_port,
                dst_port,
                zero_udp_checksum,
                payload,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buf::Wire;
    use crate::error::Notes;
    use proptest::prelude::*;

    /// An ECM carrying a 4-byte stand-in for a Map-Request from 10.0.0.1:4000 to 10.0.0.2:4342.
    const V4: [u8; 36] = [
        0x84, 0, 0, 0, // type 8, D
        0x45, 0x00, 0x00, 0x20, // IPv4, IHL 5, total length 32
        0x12, 0x34, 0x40, 0x00, // ID 0x1234, DF
        0x40, 0x11, 0x14, 0x97, // TTL 64, UDP, header checksum
        10, 0, 0, 1, // source
        10, 0, 0, 2, // destination
        0x0f, 0xa0, 0x10, 0xf6, // ports 4000 -> 4342
        0x00, 0x0c, 0xbb, 0x3c, // UDP length 12, checksum
        0x10, 0x00, 0x00, 0x01, // payload
    ];

    fn v4() -> Ecm {
        Ecm {
            ddt: true,
            to_etr: false,
            to_ms: false,
            auth: None,
            inner_ip: InnerIp {
                identification: 0x1234,
                dont_fragment: true,
                ..InnerIp::new("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap())
            },
            src_port: 4000,
            dst_port: 4342,
            zero_udp_checksum: false,
            payload: vec![0x10, 0, 0, 1],
        }
    }

    #[test]
    fn checksum_rfc1071_example() {
        // RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum to ddf2, so the checksum is 220d.
        assert_eq!(checksum::checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]), 0x220d);
        // The IPv4 header of the golden vector checks out.
        assert_eq!(checksum::checksum(&V4[4..24]), 0);
        assert!(checksum::udp_ok("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap(), &V4[24..]));
        // Odd length: the last byte is padded.
        assert_eq!(checksum::checksum(&[0xff]), 0x00ff);
    }

    #[test]
    fn golden_v4() {
        assert_eq!(v4().to_bytes(), V4);
        assert_eq!(Ecm::parse_noting(&V4), Ok((v4(), Notes::default())));
        assert_eq!(v4().inner(), [0x10, 0, 0, 1]);
        let p = EcmPacket::new_checked(&V4[..]).unwrap();
        assert!(p.ddt() && !p.security() && !p.to_etr() && !p.to_ms());
        assert_eq!(p.inner_packet(), Ok(&V4[4..]));
    }

    #[test]
    fn golden_v6_with_auth() {
        let otk: Vec<u8> = [[0u8; 8], [0x11; 8], [0x22; 8]].concat();
        let msg = Ecm {
            ddt: false,
            to_etr: false,
            to_ms: true,
            auth: Some(EcmAuth {
                requested_hmac_id: 2,
                key_id: 1,
                otk_wrap_id: 1,
                otk: otk.clone(),
                eid_ad: EidAd { kdf_id: 2, content: None },
            }),
            inner_ip: InnerIp {
                ttl: 255,
                flow_label: 0x12345,
                ..InnerIp::new("2001:db8::1".parse().unwrap(), "2001:db8::2".parse().unwrap())
            },
            src_port: 4342,
            dst_port: 4342,
            zero_udp_checksum: false,
            payload: vec![0x10, 0, 0, 0],
        };
        let mut bytes = vec![
            0x89, 0, 0, 0, // type 8, S, M
            1, 0, 0, 2, // AD type 1, requested HMAC ID 2
            0, 28, 1, 1, // OTK length 28, key ID 1, wrap ID 1
        ];
        bytes.extend_from_slice(&otk); // preamble 0, key
        bytes.extend_from_slice(&[0, 4, 0, 2]); // EID-AD length 4, KDF ID 2
        bytes.extend_from_slice(&[0x60, 0x01, 0x23, 0x45, 0, 12, 17, 255]); // IPv6 header
        bytes.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        bytes.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        // UDP: 4342 -> 4342, length 12, checksum computed by hand below.
        bytes.extend_from_slice(&[0x10, 0xf6, 0x10, 0xf6, 0, 12, 0, 0, 0x10, 0, 0, 0]);
        // Pseudo-header: addresses 2*(2001+0db8) + 1 + 2, length 12, next header 17; UDP
        // header: 10f6 + 10f6 + 000c; payload 1000. Sum = 0x8d8a; checksum = !0x8d8a = 0x7275.
        let n = bytes.len();
        bytes[n - 6..n - 4].copy_from_slice(&0x7275u16.to_be_bytes());
        assert_eq!(msg.to_bytes(), bytes);
        assert_eq!(Ecm::parse_noting(&bytes), Ok((msg.clone(), Notes::default())));
        let p = EcmPacket::new_checked(&bytes[..]).unwrap();
        assert!(p.security() && p.to_ms());
        assert_eq!(p.auth_len(), Ok(36));
        assert_eq!(p.inner_packet(), Ok(&bytes[40..]));

        // Zero UDP checksum is accepted and kept.
        bytes[n - 6] = 0;
        bytes[n - 5] = 0;
        let zero = Ecm::parse(&bytes).unwrap();
        assert!(zero.zero_udp_checksum);
        assert_eq!(zero.to_bytes(), bytes);
    }

    #[test]
    fn eid_ad_with_records() {
        let ad = EcmAuth {
            requested_hmac_id: 1,
            key_id: 0,
            otk_wrap_id: 2,
            otk: vec![7; 24],
            eid_ad: EidAd {
                kdf_id: 1,
                content: Some(EidAdContent {
                    etr_cant_sign: true,
                    hmac_id: 2,
                    records: vec![EidAdRecord { eid_mask_len: 8, eid: Address::Ipv4("10.0.0.0".parse().unwrap()) }],
                    hmac: vec![9; 16],
                }),
            },
        };
        let mut bytes = vec![1, 0, 0, 1, 0, 28, 0, 2];
        bytes.extend_from_slice(&[7; 24]);
        bytes.extend_from_slice(&[0, 32, 0, 1, 1, 0x80, 0, 2, 0, 8, 0, 1, 10, 0, 0, 0]);
        bytes.extend_from_slice(&[9; 16]);
        let mut buf = vec![0; ad.wire_len()];
        ad.write(&mut Writer::new(&mut buf));
        assert_eq!(buf, bytes);
        let mut r = Reader::new(&bytes);
        assert_eq!(EcmAuth::read(&mut r), Ok(ad));
        assert!(r.is_empty() && r.notes.is_clean());
    }

    #[test]
    fn new_and_mixed_families() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let e = Ecm::new(ip("10.0.0.1"), 4000, ip("10.0.0.2"), 4342, vec![0x10, 0, 0, 1]);
        assert_eq!(Ecm::parse(&e.to_bytes()).as_ref(), Ok(&e));
        // A destination of the other family is written in the source's family.
        let e = Ecm::new(ip("10.0.0.1"), 4000, ip("::ffff:10.0.0.2"), 4342, vec![]);
        assert_eq!(Ecm::parse(&e.to_bytes()).unwrap().inner_ip.dst, ip("10.0.0.2"));
        let e = Ecm::new(ip("2001:db8::1"), 4000, ip("10.0.0.2"), 4342, vec![]);
        assert_eq!(Ecm::parse(&e.to_bytes()).unwrap().inner_ip.dst, ip("::ffff:10.0.0.2"));
    }

    #[test]
    fn ipv4_options_kept() {
        let mut msg = v4();
        msg.inner_ip.options = vec![0x94, 0x04, 0, 0]; // router alert
        let bytes = msg.to_bytes();
        assert_eq!(bytes[4], 0x46);
        assert_eq!(checksum::checksum(&bytes[4..28]), 0);
        assert_eq!(Ecm::parse(&bytes), Ok(msg));
    }

    #[test]
    fn bad_input() {
        assert_eq!(Ecm::parse(&[0x10, 0, 0, 0]), Err(Error::WrongType { expected: 8, found: 1 }));
        assert!(matches!(Ecm::parse(&V4[..4]), Err(Error::Truncated { what: "inner IP header", at: 4, need: 1 })));
        assert!(matches!(Ecm::parse(&V4[..10]), Err(Error::Truncated { what: "inner IPv4 header", at: 4, .. })));
        // Bad IPv4 header checksum.
        let mut b = V4;
        b[15] ^= 1;
        assert_eq!(
            Ecm::parse(&b),
            Err(Error::Invalid { what: "inner IPv4 header checksum", at: 14, reason: "checksum mismatch" })
        );
        // Bad UDP checksum.
        let mut b = V4;
        b[31] ^= 1;
        assert_eq!(
            Ecm::parse(&b),
            Err(Error::Invalid { what: "inner UDP checksum", at: 30, reason: "checksum mismatch" })
        );
        // Payload corrupted: also caught by the UDP checksum.
        let mut b = V4;
        b[35] ^= 1;
        assert!(matches!(Ecm::parse(&b), Err(Error::Invalid { what: "inner UDP checksum", .. })));
        // IP total length larger than the packet.
        let mut b = v4().to_bytes();
        set_v4_total(&mut b, 33);
        assert!(matches!(Ecm::parse(&b), Err(Error::Truncated { what: "inner UDP datagram", at: 24, need: 1 })));
        // IP total length smaller than the packet: the UDP length no longer fits.
        let mut b = v4().to_bytes();
        set_v4_total(&mut b, 31);
        assert!(matches!(Ecm::parse(&b), Err(Error::Invalid { what: "inner UDP length", at: 28, .. })));
        // Consistent lengths, bytes after the datagram: trailing.
        let mut b = V4.to_vec();
        b.push(0);
        assert_eq!(Ecm::parse(&b), Err(Error::TrailingBytes { len: 1, at: 36 }));
        // IP total length too small for the headers.
        let mut b = v4().to_bytes();
        set_v4_total(&mut b, 27);
        assert!(matches!(Ecm::parse(&b), Err(Error::Invalid { what: "inner IPv4 total length", at: 6, .. })));
        // UDP length disagreeing with IP.
        let mut b = V4;
        b[29] = 13;
        assert!(matches!(Ecm::parse(&b), Err(Error::Invalid { what: "inner UDP length", at: 28, .. })));
        // Not UDP.
        let mut b = v4().to_bytes();
        b[13] = 6;
        fix_v4_checksum(&mut b);
        assert!(matches!(Ecm::parse(&b), Err(Error::Invalid { what: "inner IP protocol", at: 13, .. })));
        // Fragment.
        let mut b = v4().to_bytes();
        b[10] = 0x20;
        fix_v4_checksum(&mut b);
        assert!(matches!(Ecm::parse(&b), Err(Error::Invalid { what: "inner IPv4 fragment", at: 10, .. })));
        // IHL below 5.
        let mut b = v4().to_bytes();
        b[4] = 0x44;
        assert!(matches!(Ecm::parse(&b), Err(Error::Invalid { what: "inner IPv4 IHL", at: 4, .. })));
        // Version.
        let mut b = v4().to_bytes();
        b[4] = 0x55;
        assert!(matches!(Ecm::parse(&b), Err(Error::Invalid { what: "inner IP version", at: 4, .. })));
        // S set but no authentication data / unknown AD type / short lengths.
        let mut b = V4;
        b[0] = 0x88;
        assert!(matches!(Ecm::parse(&b), Err(Error::Invalid { what: "ECM AD type", at: 4, .. })));
        assert!(matches!(
            Ecm::parse(&[0x88, 0, 0, 0, 1, 0, 0, 0, 0, 3]),
            Err(Error::Invalid { what: "OTK length", at: 8, .. })
        ));
        assert!(matches!(
            Ecm::parse(&[0x88, 0, 0, 0, 1, 0, 0, 0, 0, 4, 0, 0, 0, 2]),
            Err(Error::Invalid { what: "EID-AD length", at: 12, .. })
        ));
        assert!(matches!(
            Ecm::parse(&[0x88, 0, 0, 0, 1, 0, 0, 0, 0, 30, 0, 0, 1]),
            Err(Error::Truncated { what: "one-time key", at: 12, need: 25 })
        ));
        let p = EcmPacket::new_checked(&[0x88, 0, 0, 0, 1, 0, 0, 0, 0, 30][..]).unwrap();
        assert!(matches!(p.auth_len(), Err(Error::Truncated { what: "EID-AD length", at: 10, need: 30 })));
        // Views.
        assert!(matches!(EcmPacket::new_checked(&[0x80, 0][..]), Err(Error::Truncated { at: 2, need: 2, .. })));
        assert_eq!(EcmPacket::new_checked(&[0x70, 0, 0, 0][..]), Err(Error::WrongType { expected: 8, found: 7 }));
    }

    #[test]
    fn reserved_bits_are_noted() {
        let mut b = V4;
        b[3] = 1;
        let (msg, notes) = Ecm::parse_noting(&b).unwrap();
        assert_eq!((msg, notes.reserved_bits), (v4(), true));
        // IPv4 reserved flag.
        let mut b = V4;
        b[10] |= 0x80;
        fix_v4_checksum(&mut b);
        let (msg, notes) = Ecm::parse_noting(&b).unwrap();
        assert_eq!((msg.to_bytes(), notes.reserved_bits), (V4.to_vec(), true));
    }

    fn fix_v4_checksum(b: &mut [u8]) {
        b[14] = 0;
        b[15] = 0;
        let c = checksum::checksum(&b[4..24]);
        b[14..16].copy_from_slice(&c.to_be_bytes());
    }

    fn set_v4_total(b: &mut [u8], total: u16) {
        b[6..8].copy_from_slice(&total.to_be_bytes());
        fix_v4_checksum(b);
    }

    proptest! {
        #[test]
        fn round_trip(msg in strategy::ecm()) {
            let bytes = msg.to_bytes();
            prop_assert_eq!(bytes.len(), msg.wire_len());
            prop_assert_eq!(Ecm::parse_noting(&bytes), Ok((msg.clone(), Notes::default())));
            let p = EcmPacket::new_checked(&bytes[..]).unwrap();
            prop_assert_eq!(p.security(), msg.security());
            let inner = p.inner_packet().unwrap();
            prop_assert_eq!(inner.len(), msg.inner_ip.header_len() + 8 + msg.payload.len());
        }

        #[test]
        fn parse_never_panics_and_reemits(bytes in proptest::collection::vec(any::<u8>(), 0..96)) {
            if let Ok((m, notes)) = Ecm::parse_noting(&bytes) {
                if notes.is_clean() {
                    prop_assert_eq!(m.to_bytes(), bytes.clone());
                }
            }
            if let Ok(p) = EcmPacket::new_checked(&bytes[..]) {
                let _ = p.inner_packet();
            }
        }

        #[test]
        fn mutated_never_panics(msg in strategy::ecm(), at in any::<prop::sample::Index>(), x in any::<u8>(), cut in any::<prop::sample::Index>()) {
            let mut bytes = msg.to_bytes();
            let i = at.index(bytes.len());
            bytes[i] ^= x;
            for b in [&bytes[..], &bytes[..cut.index(bytes.len() + 1)]] {
                if let Ok((m, notes)) = Ecm::parse_noting(b) {
                    if notes.is_clean() {
                        prop_assert_eq!(m.to_bytes(), b);
                    }
                }
                if let Ok(p) = EcmPacket::new_checked(b) {
                    let _ = p.inner_packet();
                }
            }
        }
    }
}
