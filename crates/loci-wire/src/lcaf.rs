//! LISP Canonical Address Format (RFC 8060): addresses that carry structure (an instance ID, a
//! source/destination pair, a list of addresses, ...) under AFI 16387.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |           AFI = 16387         |     Rsvd1     |     Flags     |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |    Type       |     Rsvd2     |            Length             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! `Length` counts the bytes after the Length field. A typed body must use exactly `Length`
//! bytes, otherwise decoding fails with [`Error::LcafLength`]. Rsvd1 and Flags are reserved in
//! every type decoded here, and Rsvd2 too except where a type gives it a meaning (Instance ID:
//! the IID mask-len; JSON: the B bit). Unknown types are kept as opaque bytes and re-emitted
//! unchanged. Addresses inside an LCAF may themselves be LCAFs, up to
//! [`crate::address::MAX_DEPTH`] levels.
//!
//! Encoding assumes each body fits the 16-bit Length (any LCAF that fits a UDP datagram does).

use crate::address::Address;
use crate::buf::{Reader, Writer};
use crate::error::{Error, Result};
use crate::record::check_mask;

/// LCAF type numbers (RFC 8060 §3 and the IANA registry).
pub mod lcaf_type {
    pub const AFI_LIST: u8 = 1;
    pub const INSTANCE_ID: u8 = 2;
    pub const NAT_TRAVERSAL: u8 = 7;
    pub const EXPLICIT_LOCATOR_PATH: u8 = 10;
    pub const SECURITY_KEY: u8 = 11;
    pub const SOURCE_DEST: u8 = 12;
    pub const REPLICATION_LIST: u8 = 13;
    pub const JSON: u8 = 14;
}

/// Instance IDs are 32 bits, so an IID mask-len cannot exceed 32.
const IID_BITS: u8 = 32;

/// The LCAF header fields after the AFI, as read.
struct Header {
    rsvd1: u8,
    flags: u8,
    lcaf_type: u8,
    rsvd2: u8,
    /// Offset of Rsvd2, for errors about the IID mask-len it carries.
    rsvd2_at: usize,
}

/// One re-encapsulation hop of an Explicit Locator Path (RFC 8060 §4.6).
///
/// ```text
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |           Rsvd3         |L|P|S|           AFI = x             |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                         Reencap Hop 1  ...                    |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ElpHop {
    /// L: look the address up in the mapping system rather than encapsulate to it.
    pub lookup: bool,
    /// P: RLOC-probes may be sent to this hop.
    pub probe: bool,
    /// S: the hop must be used (it may not be skipped).
    pub strict: bool,
    pub address: Address,
}

impl ElpHop {
    fn wire_len(&self) -> usize {
        2 + self.address.wire_len()
    }
}

/// One entry of a Replication List (RFC 8060 §4.9).
///
/// ```text
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |              Rsvd3            |     Rsvd4     |  Level Value  |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |              AFI = x          |           RTR/ETR #1 ...      |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RleEntry {
    /// Level in the distribution tree; 0 is closest to the ITR.
    pub level: u8,
    pub address: Address,
}

impl RleEntry {
    fn wire_len(&self) -> usize {
        4 + self.address.wire_len()
    }
}

/// A decoded LCAF. The diagrams below show each body (after the 8 bytes of AFI and header).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Lcaf {
    /// Type 1, AFI List (RFC 8060 §4.10): any number of addresses, each with its own AFI.
    ///
    /// ```text
    /// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    /// |            AFI = 1            |       IPv4 Address ...        |
    /// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    /// |     ...  IPv4 Address         |            AFI = 2            |
    /// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    /// |                          IPv6 Address ...                     |
    /// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    /// ```
    AfiList(Vec<Address>),
    /// Type 2, Instance ID (RFC 8060 §4.1). Rsvd2 carries the IID mask-len, which only means
    /// something (an IID range) when the address is AFI 0; senders use 0 otherwise.
    ///
    /// ```text
    /// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    /// |   Type = 2    | IID mask-len  |            Length             |
    /// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    /// |                         Instance ID                           |
    /// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    /// |              AFI = x          |         Address  ...          |
    /// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    /// ```
    InstanceId { iid: u32, iid_mask_len: u8, address: Address },
    /// Type 7, NAT Traversal (RFC 8060 §4.4), used in Info-Reply. The RTR list may be empty
    /// or hold AFI-0 entries (both mean "no RTR"); entries are kept as sent.
    ///
    /// ```text
    /// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    /// |       MS UDP Port Number      |      ETR UDP Port Number      |
    /// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    /// |              AFI = x          |  Global ETR RLOC Address  ... |
    /// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    /// |              AFI = x          |       MS RLOC Address  ...    |
    /// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    /// |              AFI = x          | Private ETR RLOC Address  ... |
    /// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    /// |              AFI = x          |      RTR RLOC Address 1 ...   |
    /// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    /// |              AFI = x          |      RTR RLOC Address k ...   |
    /// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    /// ```
    NatTraversal {
        ms_port: u16,
        etr_port: u16,
        global_etr_rloc: Address,
        ms_rloc: Address,
        private_etr_rloc: Address,
        rtr_rlocs: Vec<Address>,
    },
    /// Type 10, Explicit Locator Path (RFC 8060 §4.6): the re-encapsulation hops in order,
    /// each laid out as shown on [`ElpHop`].
    ExplicitLocatorPath(Vec<ElpHop>),
    /// Type 11, Security Key (RFC 8060 §4.7, RFC 8061 §6): `keys.len()` is the Key Count.
    /// RFC 8061 calls the Key Algorithm the Cipher Suite.
    ///
    /// ```text
    /// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    /// |   Key Count   |      Rsvd3    | Key Algorithm |   Rsvd4     |R|
    /// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    /// |           Key Length          |       Key Material ...        |
    /// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    /// |                        ... Key Material                       |
    /// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    /// |              AFI = x          |       Locator Address ...     |
    /// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    /// ```
    SecurityKey {
        key_algorithm: u8,
        /// R: the key is being revoked.
        revoke: bool,
        /// Key Material of each key section, in order (at most 255, each under 64 KiB).
        keys: Vec<Vec<u8>>,
        locator: Address,
    },
    /// Type 12, Source/Dest Key (RFC 8060 §4.8). Each mask length bounds its own address; the
    /// EID-record mask-len does not apply to this LCAF.
    ///
    /// ```text
    /// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    /// |            Reserved           |   Source-ML   |    Dest-ML    |
    /// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    /// |              AFI = x          |         Source-Prefix ...     |
    /// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    /// |              AFI = y          |     Destination-Prefix ...    |
    /// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    /// ```
    SourceDest { source_mask_len: u8, dest_mask_len: u8, source: Address, dest: Address },
    /// Type 13, Replication List Entry (RFC 8060 §4.9): entries laid out as shown on
    /// [`RleEntry`].
    ReplicationList(Vec<RleEntry>),
    /// Type 14, JSON Data Model (RFC 8060 §5.4). The B bit is the low bit of Rsvd2. The JSON
    /// is kept as bytes; its syntax is not checked. The address may be AFI 0.
    ///
    /// ```text
    /// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    /// |   Type = 14   |    Rsvd2    |B|            Length             |
    /// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    /// |           JSON length         | JSON binary/text encoding ... |
    /// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    /// |              AFI = x          |       Optional Address ...    |
    /// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    /// ```
    Json {
        /// B: binary-encoded JSON rather than text.
        binary: bool,
        json: Vec<u8>,
        address: Address,
    },
    /// A type this codec does not interpret: header fields and body kept verbatim.
    Unknown { lcaf_type: u8, rsvd1: u8, flags: u8, rsvd2: u8, body: Vec<u8> },
}

impl Lcaf {
    /// An Instance-ID LCAF around `address`, with IID mask-len 0 as senders use for prefixes.
    pub fn instance_id(iid: u32, address: impl Into<Address>) -> Lcaf {
        Lcaf::InstanceId { iid, iid_mask_len: 0, address: address.into() }
    }

    /// An Instance-ID range: the top `iid_mask_len` bits of `iid`, with an AFI-0 address.
    pub fn iid_range(iid: u32, iid_mask_len: u8) -> Lcaf {
        Lcaf::InstanceId { iid, iid_mask_len, address: Address::None }
    }

    /// A Source/Dest LCAF.
    pub fn source_dest(
        source: impl Into<Address>,
        source_mask_len: u8,
        dest: impl Into<Address>,
        dest_mask_len: u8,
    ) -> Lcaf {
        Lcaf::SourceDest { source_mask_len, dest_mask_len, source: source.into(), dest: dest.into() }
    }

    /// The LCAF type number.
    pub fn lcaf_type(&self) -> u8 {
        match self {
            Lcaf::AfiList(_) => lcaf_type::AFI_LIST,
            Lcaf::InstanceId { .. } => lcaf_type::INSTANCE_ID,
            Lcaf::NatTraversal { .. } => lcaf_type::NAT_TRAVERSAL,
            Lcaf::ExplicitLocatorPath(_) => lcaf_type::EXPLICIT_LOCATOR_PATH,
            Lcaf::SecurityKey { .. } => lcaf_type::SECURITY_KEY,
            Lcaf::SourceDest { .. } => lcaf_type::SOURCE_DEST,
            Lcaf::ReplicationList(_) => lcaf_type::REPLICATION_LIST,
            Lcaf::Json { .. } => lcaf_type::JSON,
            Lcaf::Unknown { lcaf_type, .. } => *lcaf_type,
        }
    }

    /// See [`crate::Address::max_mask_len`]. An Instance-ID LCAF is bounded by its address
    /// (an EID-record mask-len refers to the address inside); other types have no bound.
    pub fn max_mask_len(&self) -> Option<u8> {
        match self {
            Lcaf::InstanceId { address, .. } => address.max_mask_len(),
            _ => None,
        }
    }

    /// Encoded length after the AFI (header of 6 bytes plus body).
    pub(crate) fn wire_len_after_afi(&self) -> usize {
        6 + self.body_len()
    }

    fn body_len(&self) -> usize {
        fn sum(list: &[Address]) -> usize {
            list.iter().map(Address::wire_len).sum()
        }
        match self {
            Lcaf::AfiList(list) => sum(list),
            Lcaf::InstanceId { address, .. } => 4 + address.wire_len(),
            Lcaf::NatTraversal { global_etr_rloc, ms_rloc, private_etr_rloc, rtr_rlocs, .. } => {
                4 + global_etr_rloc.wire_len() + ms_rloc.wire_len() + private_etr_rloc.wire_len() + sum(rtr_rlocs)
            }
            Lcaf::ExplicitLocatorPath(hops) => hops.iter().map(ElpHop::wire_len).sum(),
            Lcaf::SecurityKey { keys, locator, .. } => {
                4 + keys.iter().map(|k| 2 + k.len()).sum::<usize>() + locator.wire_len()
            }
            Lcaf::SourceDest { source, dest, .. } => 4 + source.wire_len() + dest.wire_len(),
            Lcaf::ReplicationList(entries) => entries.iter().map(RleEntry::wire_len).sum(),
            Lcaf::Json { json, address, .. } => 2 + json.len() + address.wire_len(),
            Lcaf::Unknown { body, .. } => body.len(),
        }
    }

    /// Reads the LCAF header and body; the AFI has been read. `depth` counts enclosing LCAFs,
    /// this one included, and is handed on to nested addresses.
    pub(crate) fn read_after_afi(r: &mut Reader<'_>, depth: usize) -> Result<Self> {
        use lcaf_type::*;
        let rsvd1 = r.u8("LCAF Rsvd1")?;
        let flags = r.u8("LCAF flags")?;
        let lcaf_type = r.u8("LCAF type")?;
        let rsvd2_at = r.at();
        let rsvd2 = r.u8("LCAF Rsvd2")?;
        let len_at = r.at();
        let len = r.u16("LCAF length")?;
        let mut body = r.sub(len.into(), "LCAF body")?;
        // Which Rsvd2 bits are reserved; `None` for the types kept verbatim.
        let rsvd2_mask = match lcaf_type {
            AFI_LIST | NAT_TRAVERSAL | EXPLICIT_LOCATOR_PATH | SECURITY_KEY | SOURCE_DEST | REPLICATION_LIST => {
                Some(0xff)
            }
            INSTANCE_ID => Some(0x00),
            JSON => Some(0xfe),
            _ => None,
        };
        if let Some(mask) = rsvd2_mask {
            r.reserved(rsvd1.into(), 0xff);
            r.reserved(flags.into(), 0xff);
            r.reserved(rsvd2.into(), mask);
        }
        let header = Header { rsvd1, flags, lcaf_type, rsvd2, rsvd2_at };
        let out = Self::read_body(&mut body, &header, depth)
            .and_then(|l| body.finish().map(|()| l))
            .map_err(|e| length_error(e, len, len_at))?;
        r.absorb(&body);
        Ok(out)
    }

    /// Reads the body from `b`, which holds exactly `Length` bytes.
    fn read_body(b: &mut Reader<'_>, h: &Header, depth: usize) -> Result<Self> {
        // Lists run to the end of the body; each entry uses at least 2 bytes, so their growth
        // is bounded by Length.
        let list = |b: &mut Reader<'_>| {
            let mut out = Vec::new();
            while !b.is_empty() {
                out.push(Address::read_nested(b, depth)?);
            }
            Ok::<_, Error>(out)
        };
        let rsvd2 = h.rsvd2;
        Ok(match h.lcaf_type {
            lcaf_type::AFI_LIST => Lcaf::AfiList(list(b)?),
            lcaf_type::INSTANCE_ID => {
                if rsvd2 > IID_BITS {
                    return Err(Error::MaskTooLong { len: rsvd2, max: IID_BITS, at: h.rsvd2_at });
                }
                let iid = b.u32("instance ID")?;
                Lcaf::InstanceId { iid, iid_mask_len: rsvd2, address: Address::read_nested(b, depth)? }
            }
            lcaf_type::NAT_TRAVERSAL => Lcaf::NatTraversal {
                ms_port: b.u16("MS UDP port")?,
                etr_port: b.u16("ETR UDP port")?,
                global_etr_rloc: Address::read_nested(b, depth)?,
                ms_rloc: Address::read_nested(b, depth)?,
                private_etr_rloc: Address::read_nested(b, depth)?,
                rtr_rlocs: list(b)?,
            },
            lcaf_type::EXPLICIT_LOCATOR_PATH => {
                let mut hops = Vec::new();
                while !b.is_empty() {
                    let f = b.u16("ELP hop flags")?;
                    b.reserved(f.into(), 0xfff8);
                    let address = Address::read_nested(b, depth)?;
                    hops.push(ElpHop { lookup: f & 0x4 != 0, probe: f & 0x2 != 0, strict: f & 0x1 != 0, address });
                }
                Lcaf::ExplicitLocatorPath(hops)
            }
            lcaf_type::SECURITY_KEY => {
                let count = b.u8("key count")?;
                let rsvd3 = b.u8("security key Rsvd3")?;
                b.reserved(rsvd3.into(), 0xff);
                let key_algorithm = b.u8("key algorithm")?;
                let rsvd4 = b.u8("security key Rsvd4/R")?;
                b.reserved(rsvd4.into(), 0xfe);
                b.check_count("security key", count.into(), 2)?;
                let mut keys = Vec::with_capacity(count.into());
                for _ in 0..count {
                    let key_len = b.u16("key length")?;
                    keys.push(b.bytes(key_len.into(), "key material")?.to_vec());
                }
                Lcaf::SecurityKey {
                    key_algorithm,
                    revoke: rsvd4 & 1 != 0,
                    keys,
                    locator: Address::read_nested(b, depth)?,
                }
            }
            lcaf_type::SOURCE_DEST => {
                let rsvd = b.u16("source/dest reserved")?;
                b.reserved(rsvd.into(), 0xffff);
                let source_ml_at = b.at();
                let source_mask_len = b.u8("source mask-len")?;
                let dest_mask_len = b.u8("dest mask-len")?;
                let source = Address::read_nested(b, depth)?;
                let dest = Address::read_nested(b, depth)?;
                check_mask(&source, source_mask_len, source_ml_at)?;
                check_mask(&dest, dest_mask_len, source_ml_at + 1)?;
                Lcaf::SourceDest { source_mask_len, dest_mask_len, source, dest }
            }
            lcaf_type::REPLICATION_LIST => {
                let mut entries = Vec::new();
                while !b.is_empty() {
                    let rsvd3 = b.u16("RLE Rsvd3")?;
                    let rsvd4 = b.u8("RLE Rsvd4")?;
                    b.reserved(rsvd3.into(), 0xffff);
                    b.reserved(rsvd4.into(), 0xff);
                    let level = b.u8("RLE level")?;
                    entries.push(RleEntry { level, address: Address::read_nested(b, depth)? });
                }
                Lcaf::ReplicationList(entries)
            }
            lcaf_type::JSON => {
                let json_len = b.u16("JSON length")?;
                let json = b.bytes(json_len.into(), "JSON")?.to_vec();
                Lcaf::Json { binary: rsvd2 & 1 != 0, json, address: Address::read_nested(b, depth)? }
            }
            lcaf_type => Lcaf::Unknown {
                lcaf_type,
                rsvd1: h.rsvd1,
                flags: h.flags,
                rsvd2,
                body: b.bytes(b.remaining(), "LCAF body")?.to_vec(),
            },
        })
    }

    pub(crate) fn write_after_afi(&self, w: &mut Writer<'_>) {
        // Reserved fields go out as zero; only unknown types keep what they came with.
        let (rsvd1, flags, rsvd2) = match self {
            Lcaf::InstanceId { iid_mask_len, .. } => (0, 0, *iid_mask_len),
            Lcaf::Json { binary, .. } => (0, 0, u8::from(*binary)),
            Lcaf::Unknown { rsvd1, flags, rsvd2, .. } => (*rsvd1, *flags, *rsvd2),
            _ => (0, 0, 0),
        };
        w.u8(rsvd1);
        w.u8(flags);
        w.u8(self.lcaf_type());
        w.u8(rsvd2);
        let len_at = w.pos();
        w.u16(0); // patched below, once the body is written
        let start = w.pos();
        self.write_body(w);
        debug_assert!(w.pos() - start <= usize::from(u16::MAX), "LCAF body does not fit its Length field");
        w.patch_u16(len_at, (w.pos() - start) as u16);
    }

    fn write_body(&self, w: &mut Writer<'_>) {
        match self {
            Lcaf::AfiList(list) => list.iter().for_each(|a| a.write(w)),
            Lcaf::InstanceId { iid, address, .. } => {
                w.u32(*iid);
                address.write(w);
            }
            Lcaf::NatTraversal { ms_port, etr_port, global_etr_rloc, ms_rloc, private_etr_rloc, rtr_rlocs } => {
                w.u16(*ms_port);
                w.u16(*etr_port);
                global_etr_rloc.write(w);
                ms_rloc.write(w);
                private_etr_rloc.write(w);
                rtr_rlocs.iter().for_each(|a| a.write(w));
            }
            Lcaf::ExplicitLocatorPath(hops) => {
                for h in hops {
                    w.u16(u16::from(h.lookup) << 2 | u16::from(h.probe) << 1 | u16::from(h.strict));
                    h.address.write(w);
                }
            }
            Lcaf::SecurityKey { key_algorithm, revoke, keys, locator } => {
                debug_assert!(keys.len() <= 255, "more keys than the Key Count can say");
                w.u8(keys.len() as u8);
                w.u8(0);
                w.u8(*key_algorithm);
                w.u8(u8::from(*revoke));
                for k in keys {
                    w.u16(k.len() as u16);
                    w.bytes(k);
                }
                locator.write(w);
            }
            Lcaf::SourceDest { source_mask_len, dest_mask_len, source, dest } => {
                w.u16(0);
                w.u8(*source_mask_len);
                w.u8(*dest_mask_len);
                source.write(w);
                dest.write(w);
            }
            Lcaf::ReplicationList(entries) => {
                for e in entries {
                    w.zeros(3);
                    w.u8(e.level);
                    e.address.write(w);
                }
            }
            Lcaf::Json { json, address, .. } => {
                w.u16(json.len() as u16);
                w.bytes(json);
                address.write(w);
            }
            Lcaf::Unknown { body, .. } => w.bytes(body),
        }
    }
}

/// The body reader is bounded by Length, so running out of bytes or having some left over means
/// Length disagrees with the fields: say so, at the Length field (`at`).
fn length_error(e: Error, len: u16, at: usize) -> Error {
    match e {
        Error::Truncated { .. } => Error::LcafLength { len, at, reason: "body shorter than its fields" },
        Error::TrailingBytes { .. } => Error::LcafLength { len, at, reason: "bytes left after the fields" },
        e => e,
    }
}

/// Instance-ID helpers. They live here, next to the LCAF they wrap.
impl Address {
    /// `address` inside an Instance-ID LCAF for `iid` (IID mask-len 0).
    pub fn with_iid(iid: u32, address: impl Into<Address>) -> Address {
        Lcaf::instance_id(iid, address).into()
    }

    /// Splits an Instance-ID LCAF into its IID and the address inside; any other address is
    /// returned as is, with no IID.
    pub fn split_iid(&self) -> (Option<u32>, &Address) {
        match self {
            Address::Lcaf(l) => match &**l {
                Lcaf::InstanceId { iid, address, .. } => (Some(*iid), address),
                _ => (None, self),
            },
            _ => (None, self),
        }
    }
}

/// Writes `items` separated by ", ".
fn join<T>(
    f: &mut core::fmt::Formatter<'_>,
    items: &[T],
    mut each: impl FnMut(&mut core::fmt::Formatter<'_>, &T) -> core::fmt::Result,
) -> core::fmt::Result {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        each(f, item)?;
    }
    Ok(())
}

impl core::fmt::Display for Lcaf {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Lcaf::AfiList(list) => {
                f.write_str("afi-list(")?;
                join(f, list, |f, a| write!(f, "{a}"))?;
                f.write_str(")")
            }
            Lcaf::InstanceId { iid, iid_mask_len: 0, address } => write!(f, "[{iid}]{address}"),
            Lcaf::InstanceId { iid, iid_mask_len, address } => write!(f, "[{iid}/{iid_mask_len}]{address}"),
            Lcaf::NatTraversal { ms_port, etr_port, global_etr_rloc, ms_rloc, private_etr_rloc, rtr_rlocs } => {
                write!(
                    f,
                    "nat(ms {ms_rloc}:{ms_port}, global etr {global_etr_rloc}:{etr_port}, \
                     private etr {private_etr_rloc}, rtrs ["
                )?;
                join(f, rtr_rlocs, |f, a| write!(f, "{a}"))?;
                f.write_str("])")
            }
            Lcaf::ExplicitLocatorPath(hops) => {
                f.write_str("elp(")?;
                join(f, hops, |f, h| {
                    write!(f, "{}", h.address)?;
                    if h.lookup || h.probe || h.strict {
                        let flag = |set: bool, c: &'static str| if set { c } else { "" };
                        write!(f, "[{}{}{}]", flag(h.lookup, "l"), flag(h.probe, "p"), flag(h.strict, "s"))?;
                    }
                    Ok(())
                })?;
                f.write_str(")")
            }
            Lcaf::SecurityKey { key_algorithm, revoke, keys, locator } => {
                let revoked = if *revoke { ", revoked" } else { "" };
                write!(f, "security-key(algorithm {key_algorithm}, {} key(s){revoked}, {locator})", keys.len())
            }
            Lcaf::SourceDest { source_mask_len, dest_mask_len, source, dest } => {
                write!(f, "({source}/{source_mask_len}, {dest}/{dest_mask_len})")
            }
            Lcaf::ReplicationList(entries) => {
                f.write_str("rle(")?;
                join(f, entries, |f, e| write!(f, "{} level {}", e.address, e.level))?;
                f.write_str(")")
            }
            Lcaf::Json { binary: true, json, address } => write!(f, "json({} binary bytes, {address})", json.len()),
            Lcaf::Json { binary: false, json, address } => {
                write!(f, "json({}, {address})", String::from_utf8_lossy(json))
            }
            Lcaf::Unknown { lcaf_type, body, .. } => write!(f, "lcaf-type-{lcaf_type}({} bytes)", body.len()),
        }
    }
}

#[cfg(any(test, feature = "proptest"))]
pub mod strategy {
    //! proptest strategies for LCAFs.
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;

    /// A type number this codec does not interpret.
    pub fn unknown_type() -> impl Strategy<Value = u8> {
        prop_oneof![Just(0u8), 3u8..=6, 8u8..=9, 15u8..]
    }

    /// Any LCAF whose nested addresses come from `inner`.
    pub fn lcaf(inner: impl Strategy<Value = Address> + Clone + 'static) -> impl Strategy<Value = Lcaf> {
        let a = inner;
        prop_oneof![
            vec(a.clone(), 0..4).prop_map(Lcaf::AfiList),
            (any::<u32>(), 0..=IID_BITS, a.clone()).prop_map(|(iid, iid_mask_len, address)| Lcaf::InstanceId {
                iid,
                iid_mask_len,
                address
            }),
            (any::<[u16; 2]>(), a.clone(), a.clone(), a.clone(), vec(a.clone(), 0..3)).prop_map(
                |(p, global_etr_rloc, ms_rloc, private_etr_rloc, rtr_rlocs)| Lcaf::NatTraversal {
                    ms_port: p[0],
                    etr_port: p[1],
                    global_etr_rloc,
                    ms_rloc,
                    private_etr_rloc,
                    rtr_rlocs,
                }
            ),
            vec(
                (any::<[bool; 3]>(), a.clone()).prop_map(|(f, address)| ElpHop {
                    lookup: f[0],
                    probe: f[1],
                    strict: f[2],
                    address
                }),
                0..4
            )
            .prop_map(Lcaf::ExplicitLocatorPath),
            (any::<u8>(), any::<bool>(), vec(vec(any::<u8>(), 0..40), 0..4), a.clone()).prop_map(
                |(key_algorithm, revoke, keys, locator)| Lcaf::SecurityKey { key_algorithm, revoke, keys, locator }
            ),
            (a.clone(), a.clone())
                .prop_flat_map(|(s, d)| {
                    let (ms, md) = (s.max_mask_len().unwrap_or(255), d.max_mask_len().unwrap_or(255));
                    (Just(s), Just(d), 0..=ms, 0..=md)
                })
                .prop_map(|(source, dest, source_mask_len, dest_mask_len)| Lcaf::SourceDest {
                    source_mask_len,
                    dest_mask_len,
                    source,
                    dest
                }),
            vec((any::<u8>(), a.clone()).prop_map(|(level, address)| RleEntry { level, address }), 0..4)
                .prop_map(Lcaf::ReplicationList),
            (any::<bool>(), vec(any::<u8>(), 0..32), a.clone()).prop_map(|(binary, json, address)| Lcaf::Json {
                binary,
                json,
                address
            }),
            (unknown_type(), any::<[u8; 3]>(), vec(any::<u8>(), 0..16)).prop_map(|(lcaf_type, h, body)| {
                Lcaf::Unknown { lcaf_type, rsvd1: h[0], flags: h[1], rsvd2: h[2], body }
            }),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::{afi, strategy::address, MAX_DEPTH};
    use crate::buf::Wire;
    use crate::record::MapRecord;
    use proptest::prelude::*;
    use std::net::Ipv4Addr;

    fn v4(s: &str) -> Address {
        Address::Ipv4(s.parse().unwrap())
    }

    fn v6(s: &str) -> Address {
        Address::Ipv6(s.parse().unwrap())
    }

    /// Checks both directions: `lcaf` emits `bytes`, and `bytes` parse cleanly to `lcaf`.
    fn golden(lcaf: Lcaf, bytes: &[u8]) {
        let addr = Address::from(lcaf);
        assert_eq!(addr.to_bytes(), bytes);
        assert_eq!(addr.wire_len(), bytes.len());
        let (parsed, notes) = Address::parse_noting(bytes).unwrap();
        assert_eq!(parsed, addr);
        assert!(notes.is_clean());
    }

    #[test]
    fn golden_instance_id_ipv4() {
        // As seen in Map-Registers: IID 1000, 10.0.0.1. Length = 4 (IID) + 2 (AFI) + 4 = 10.
        let bytes = [
            0x40, 0x03, 0, 0, // AFI 16387, Rsvd1, Flags
            2, 0, 0, 10, // type 2, IID mask-len 0, length 10
            0, 0, 0x03, 0xe8, // IID 1000
            0, 1, 10, 0, 0, 1, // AFI 1, 10.0.0.1
        ];
        golden(Lcaf::instance_id(1000, Ipv4Addr::new(10, 0, 0, 1)), &bytes);
        let a = Address::parse(&bytes).unwrap();
        assert_eq!(a, Address::with_iid(1000, v4("10.0.0.1")));
        assert_eq!(a.split_iid(), (Some(1000), &v4("10.0.0.1")));
        assert_eq!(v4("10.0.0.1").split_iid(), (None, &v4("10.0.0.1")));
        assert_eq!(a.max_mask_len(), Some(32));
        assert_eq!(a.to_string(), "[1000]10.0.0.1");
    }

    #[test]
    fn golden_iid_range() {
        // RFC 8060 §4.1: AFI 0 with IID mask-len 8 is the range of IIDs 0x05000000/8.
        let bytes = [0x40, 0x03, 0, 0, 2, 8, 0, 6, 5, 0, 0, 0, 0, 0];
        golden(Lcaf::iid_range(0x0500_0000, 8), &bytes);
        assert_eq!(Address::parse(&bytes).unwrap().to_string(), "[83886080/8](none)");
    }

    #[test]
    fn golden_afi_list() {
        // RFC 8060 §4.10.1: an IPv4 and an IPv6 address bound together. Length 6 + 18 = 24.
        let bytes = [
            0x40, 0x03, 0, 0, 1, 0, 0, 24, // AFI list, length 24
            0, 1, 192, 0, 2, 1, // AFI 1, 192.0.2.1
            0, 2, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, // AFI 2, 2001:db8::1
        ];
        golden(Lcaf::AfiList(vec![v4("192.0.2.1"), v6("2001:db8::1")]), &bytes);
        assert_eq!(Address::parse(&bytes).unwrap().to_string(), "afi-list(192.0.2.1, 2001:db8::1)");
        // An empty list is a header alone.
        golden(Lcaf::AfiList(vec![]), &[0x40, 0x03, 0, 0, 1, 0, 0, 0]);
    }

    #[test]
    fn golden_nat_traversal() {
        // RFC 8060 §4.4 as in an Info-Reply, with one RTR and an AFI-0 "no RTR" entry.
        let bytes = [
            0x40, 0x03, 0, 0, 7, 0, 0, 30, // NAT traversal, length 4 + 4 * 6 + 2 = 30
            0x10, 0xf6, 0x88, 0xb8, // MS port 4342, ETR port 35000
            0, 1, 198, 51, 100, 7, // global ETR RLOC
            0, 1, 192, 0, 2, 10, // MS RLOC
            0, 1, 10, 0, 0, 2, // private ETR RLOC
            0, 1, 203, 0, 113, 5, // RTR 1
            0, 0, // AFI 0
        ];
        let nat = Lcaf::NatTraversal {
            ms_port: 4342,
            etr_port: 35000,
            global_etr_rloc: v4("198.51.100.7"),
            ms_rloc: v4("192.0.2.10"),
            private_etr_rloc: v4("10.0.0.2"),
            rtr_rlocs: vec![v4("203.0.113.5"), Address::None],
        };
        golden(nat, &bytes);
        // RTRs omitted altogether: length ends after the private ETR RLOC.
        let mut short = bytes[..30].to_vec();
        short[7] = 22;
        let Address::Lcaf(l) = Address::parse(&short).unwrap() else { panic!() };
        assert!(matches!(*l, Lcaf::NatTraversal { ref rtr_rlocs, .. } if rtr_rlocs.is_empty()));
    }

    #[test]
    fn golden_elp() {
        // RFC 8060 §4.6: two hops, the first L and S, the second P.
        let bytes = [
            0x40, 0x03, 0, 0, 10, 0, 0, 16, // ELP, length 2 * 8
            0, 0x05, 0, 1, 192, 0, 2, 1, // L|S, 192.0.2.1
            0, 0x02, 0, 1, 192, 0, 2, 2, // P, 192.0.2.2
        ];
        let elp = Lcaf::ExplicitLocatorPath(vec![
            ElpHop { lookup: true, probe: false, strict: true, address: v4("192.0.2.1") },
            ElpHop { lookup: false, probe: true, strict: false, address: v4("192.0.2.2") },
        ]);
        assert_eq!(elp.to_string(), "elp(192.0.2.1[ls], 192.0.2.2[p])");
        golden(elp, &bytes);
    }

    #[test]
    fn golden_security_key() {
        // RFC 8060 §4.7 / RFC 8061 §6: one key for cipher suite 2, R clear, then the locator.
        let bytes = [
            0x40, 0x03, 0, 0, 11, 0, 0, 16, // security key, length 4 + 6 + 6
            1, 0, 2, 0, // key count 1, Rsvd3, algorithm 2, Rsvd4/R
            0, 4, 0xde, 0xad, 0xbe, 0xef, // key length 4, key material
            0, 1, 203, 0, 113, 1, // locator
        ];
        let key = Lcaf::SecurityKey {
            key_algorithm: 2,
            revoke: false,
            keys: vec![vec![0xde, 0xad, 0xbe, 0xef]],
            locator: v4("203.0.113.1"),
        };
        golden(key, &bytes);
        // Revoked, no key sections.
        let revoked = [0x40, 0x03, 0, 0, 11, 0, 0, 6, 0, 0, 1, 1, 0, 0];
        golden(Lcaf::SecurityKey { key_algorithm: 1, revoke: true, keys: vec![], locator: Address::None }, &revoked);
    }

    #[test]
    fn golden_source_dest() {
        // RFC 8060 §4.8: (10.0.0.0/8, 20.1.0.0/16).
        let bytes = [
            0x40, 0x03, 0, 0, 12, 0, 0, 16, // source/dest, length 4 + 6 + 6
            0, 0, 8, 16, // reserved, source-ML 8, dest-ML 16
            0, 1, 10, 0, 0, 0, // source
            0, 1, 20, 1, 0, 0, // dest
        ];
        golden(Lcaf::source_dest(v4("10.0.0.0"), 8, v4("20.1.0.0"), 16), &bytes);
        let a = Address::parse(&bytes).unwrap();
        assert_eq!(a.max_mask_len(), None);
        assert_eq!(a.to_string(), "(10.0.0.0/8, 20.1.0.0/16)");
    }

    #[test]
    fn golden_iid_around_source_dest() {
        // IID 5 wrapping a source/dest key, as xTRs register per-VPN source/dest EIDs.
        let bytes = [
            0x40, 0x03, 0, 0, 2, 0, 0, 28, // IID, length 4 + 24
            0, 0, 0, 5, // IID 5
            0x40, 0x03, 0, 0, 12, 0, 0, 16, // source/dest, length 16
            0, 0, 24, 32, 0, 1, 10, 1, 1, 0, 0, 1, 10, 2, 2, 2,
        ];
        let sd = Lcaf::source_dest(v4("10.1.1.0"), 24, v4("10.2.2.2"), 32);
        golden(Lcaf::instance_id(5, sd), &bytes);
        assert_eq!(Address::parse(&bytes).unwrap().to_string(), "[5](10.1.1.0/24, 10.2.2.2/32)");
    }

    #[test]
    fn golden_replication_list() {
        // RFC 8060 §4.9: two RTRs at levels 0 and 1.
        let bytes = [
            0x40, 0x03, 0, 0, 13, 0, 0, 20, // RLE, length 2 * 10
            0, 0, 0, 0, 0, 1, 192, 0, 2, 1, // Rsvd3, Rsvd4, level 0, 192.0.2.1
            0, 0, 0, 1, 0, 1, 192, 0, 2, 2, // level 1, 192.0.2.2
        ];
        let rle = Lcaf::ReplicationList(vec![
            RleEntry { level: 0, address: v4("192.0.2.1") },
            RleEntry { level: 1, address: v4("192.0.2.2") },
        ]);
        golden(rle, &bytes);
    }

    #[test]
    fn golden_json() {
        // RFC 8060 §5.4: text JSON with an AFI-0 address; B is the low bit of Rsvd2.
        let bytes = [
            0x40, 0x03, 0, 0, 14, 0, 0, 11, // JSON, B clear, length 2 + 7 + 2
            0, 7, b'{', b'"', b'a', b'"', b':', b'1', b'}', // JSON length 7
            0, 0, // AFI 0
        ];
        let json = Lcaf::Json { binary: false, json: br#"{"a":1}"#.to_vec(), address: Address::None };
        assert_eq!(json.to_string(), r#"json({"a":1}, (none))"#);
        golden(json, &bytes);
        let bin = [0x40, 0x03, 0, 0, 14, 1, 0, 9, 0, 1, 0xff, 0, 1, 192, 0, 2, 1];
        golden(Lcaf::Json { binary: true, json: vec![0xff], address: v4("192.0.2.1") }, &bin);
    }

    #[test]
    fn unknown_type_round_trips_unchanged() {
        // Type 3 (AS number) is not interpreted: every header byte and the body come back.
        let bytes = [0x40, 0x03, 0x12, 0x34, 3, 0x56, 0, 10, 0, 0, 0xfd, 0xe8, 0, 1, 10, 0, 0, 1];
        let a = Address::parse(&bytes).unwrap();
        assert_eq!(
            a,
            Address::from(Lcaf::Unknown {
                lcaf_type: 3,
                rsvd1: 0x12,
                flags: 0x34,
                rsvd2: 0x56,
                body: bytes[8..].to_vec()
            })
        );
        assert_eq!(a.to_bytes(), bytes);
        assert_eq!(a.max_mask_len(), None);
    }

    #[test]
    fn length_inconsistent() {
        // IID + IPv4 with Length 9: the address runs past the body.
        let mut b = vec![0x40, 0x03, 0, 0, 2, 0, 0, 9, 0, 0, 0x03, 0xe8, 0, 1, 10, 0, 0, 1];
        assert_eq!(
            Address::parse(&b),
            Err(Error::LcafLength { len: 9, at: 6, reason: "body shorter than its fields" })
        );
        // Length 11 with one more byte: a byte is left after the address.
        b[7] = 11;
        b.push(0);
        assert_eq!(
            Address::parse(&b),
            Err(Error::LcafLength { len: 11, at: 6, reason: "bytes left after the fields" })
        );
        // Length beyond the buffer: the message itself is truncated.
        b[7] = 20;
        assert!(matches!(Address::parse(&b), Err(Error::Truncated { what: "LCAF body", at: 8, need: 9 })));
        // A JSON length larger than the body.
        let j = [0x40, 0x03, 0, 0, 14, 0, 0, 4, 0, 9, 0, 0];
        assert_eq!(
            Address::parse(&j),
            Err(Error::LcafLength { len: 4, at: 6, reason: "body shorter than its fields" })
        );
        // A key length larger than the body.
        let k = [0x40, 0x03, 0, 0, 11, 0, 0, 8, 1, 0, 2, 0, 0, 9, 0, 0];
        assert_eq!(
            Address::parse(&k),
            Err(Error::LcafLength { len: 8, at: 6, reason: "body shorter than its fields" })
        );
        // A half ELP hop at the end.
        let e = [0x40, 0x03, 0, 0, 10, 0, 0, 9, 0, 0, 0, 1, 1, 2, 3, 4, 0];
        assert_eq!(
            Address::parse(&e),
            Err(Error::LcafLength { len: 9, at: 6, reason: "body shorter than its fields" })
        );
        // A nested LCAF whose own Length overruns the outer body.
        let n = [0x40, 0x03, 0, 0, 1, 0, 0, 8, 0x40, 0x03, 0, 0, 1, 0, 0, 1, 0];
        assert_eq!(
            Address::parse(&n),
            Err(Error::LcafLength { len: 8, at: 6, reason: "body shorter than its fields" })
        );
    }

    #[test]
    fn bad_counts_and_masks() {
        // Key count 200 in an 8-byte body.
        let k = [0x40, 0x03, 0, 0, 11, 0, 0, 8, 200, 0, 2, 0, 0, 0, 0, 0];
        assert!(matches!(
            Address::parse(&k),
            Err(Error::CountTooLarge { what: "security key", count: 200, at: 12, .. })
        ));
        // IID mask-len 33.
        let i = [0x40, 0x03, 0, 0, 2, 33, 0, 6, 0, 0, 0, 0, 0, 0];
        assert_eq!(Address::parse(&i), Err(Error::MaskTooLong { len: 33, max: 32, at: 5 }));
        // Source /33 on IPv4, then dest /129 on IPv6.
        let mut s = vec![0x40, 0x03, 0, 0, 12, 0, 0, 28, 0, 0, 33, 0, 0, 1, 10, 0, 0, 0, 0, 2];
        s.extend([0u8; 16]);
        assert_eq!(Address::parse(&s), Err(Error::MaskTooLong { len: 33, max: 32, at: 10 }));
        s[10] = 32;
        s[11] = 129;
        assert_eq!(Address::parse(&s), Err(Error::MaskTooLong { len: 129, max: 128, at: 11 }));
        s[11] = 128;
        assert!(Address::parse(&s).is_ok());
    }

    #[test]
    fn record_mask_len_uses_inner_address() {
        let record = |eid: Address, eid_mask_len| MapRecord {
            ttl: 1440,
            eid_mask_len,
            action: crate::record::Action::NO_ACTION,
            authoritative: true,
            map_version: 0,
            eid,
            locators: vec![],
        };
        let parse = |rec: &MapRecord| {
            let mut v = vec![0; rec.wire_len()];
            rec.write(&mut Writer::new(&mut v));
            MapRecord::read(&mut Reader::new(&v))
        };
        let iid = Address::with_iid(1000, v4("10.0.0.0"));
        assert!(parse(&record(iid.clone(), 32)).is_ok());
        // The mask-len field of the record is byte 5; 33 is too long for the IPv4 inside.
        assert_eq!(parse(&record(iid, 33)), Err(Error::MaskTooLong { len: 33, max: 32, at: 5 }));
        // Source/dest: the record mask-len is not bounded by it.
        let sd = Address::from(Lcaf::source_dest(v4("10.0.0.0"), 8, v4("20.0.0.0"), 8));
        assert!(parse(&record(sd, 255)).is_ok());
    }

    /// `depth` Instance-ID LCAFs wrapped around 10.0.0.1.
    fn nested(depth: usize) -> Address {
        (0..depth).fold(v4("10.0.0.1"), |a, i| Address::with_iid(i as u32, a))
    }

    #[test]
    fn deep_nesting() {
        let ok = nested(MAX_DEPTH);
        assert_eq!(Address::parse(&ok.to_bytes()).unwrap(), ok);
        let deep = nested(MAX_DEPTH + 1).to_bytes();
        // The innermost LCAF's AFI sits after MAX_DEPTH outer headers of 12 bytes each.
        assert_eq!(Address::parse(&deep), Err(Error::TooDeep { at: MAX_DEPTH * 12 }));
        assert_eq!(u16::from_be_bytes([deep[MAX_DEPTH * 12], deep[MAX_DEPTH * 12 + 1]]), afi::LCAF);
    }

    #[test]
    fn reserved_bits_noted_and_cleared() {
        // Rsvd1, Flags and the high bits of JSON's Rsvd2 set; ELP Rsvd3 bits; RLE Rsvd3/Rsvd4;
        // security key Rsvd3/Rsvd4; source/dest Reserved.
        let cases: [(&[u8], &[u8]); 6] = [
            (&[0x40, 0x03, 1, 0x80, 2, 0, 0, 6, 0, 0, 0, 7, 0, 0], &[0x40, 0x03, 0, 0, 2, 0, 0, 6, 0, 0, 0, 7, 0, 0]),
            (&[0x40, 0x03, 0, 0, 14, 0x81, 0, 4, 0, 0, 0, 0], &[0x40, 0x03, 0, 0, 14, 1, 0, 4, 0, 0, 0, 0]),
            (&[0x40, 0x03, 0, 0, 10, 0, 0, 4, 0x80, 0x01, 0, 0], &[0x40, 0x03, 0, 0, 10, 0, 0, 4, 0, 0x01, 0, 0]),
            (&[0x40, 0x03, 0, 0, 13, 0, 0, 6, 1, 2, 3, 4, 0, 0], &[0x40, 0x03, 0, 0, 13, 0, 0, 6, 0, 0, 0, 4, 0, 0]),
            (&[0x40, 0x03, 0, 0, 11, 0, 0, 6, 0, 9, 1, 0x83, 0, 0], &[0x40, 0x03, 0, 0, 11, 0, 0, 6, 0, 0, 1, 1, 0, 0]),
            (
                &[0x40, 0x03, 0, 0, 12, 7, 0, 8, 1, 1, 0, 0, 0, 0, 0, 0],
                &[0x40, 0x03, 0, 0, 12, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0],
            ),
        ];
        for (sent, clean) in cases {
            let (a, notes) = Address::parse_noting(sent).unwrap();
            assert!(notes.reserved_bits, "{sent:?}");
            assert_eq!(a.to_bytes(), clean);
            assert_eq!(Address::parse_noting(clean).unwrap(), (a, crate::Notes::default()));
        }
    }

    /// Parsing must never panic, and a clean parse must re-emit the input exactly.
    fn check_reemit(bytes: &[u8]) -> core::result::Result<(), TestCaseError> {
        if let Ok((a, notes)) = Address::parse_noting(bytes) {
            if notes.is_clean() {
                prop_assert_eq!(a.to_bytes(), bytes);
            }
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn round_trip(l in strategy::lcaf(address().boxed())) {
            let a = Address::from(l);
            let bytes = a.to_bytes();
            prop_assert_eq!(bytes.len(), a.wire_len());
            let (parsed, notes) = Address::parse_noting(&bytes).unwrap();
            prop_assert_eq!(parsed, a);
            prop_assert!(notes.is_clean());
        }

        #[test]
        fn random_lcaf_bytes(ty in 0u8..20, rsvd2 in prop_oneof![Just(0u8), any::<u8>()],
                             body in proptest::collection::vec(any::<u8>(), 0..64)) {
            // AFI 16387 and a header whose Length matches the body, so typed decoders run.
            let mut bytes = vec![0x40, 0x03, 0, 0, ty, rsvd2];
            bytes.extend((body.len() as u16).to_be_bytes());
            bytes.extend(&body);
            check_reemit(&bytes)?;
        }

        #[test]
        fn mutated_encodings(l in strategy::lcaf(address().boxed()), at in any::<usize>(), x in 1u8.., cut in any::<usize>()) {
            let bytes = Address::from(l).to_bytes();
            let mut flipped = bytes.clone();
            let i = at % flipped.len();
            flipped[i] ^= x;
            check_reemit(&flipped)?;
            check_reemit(&bytes[..cut % bytes.len()])?;
        }
    }
}
