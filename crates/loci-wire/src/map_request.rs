//! Map-Request (type 1): RFC 9301 §5.2, with the pub/sub additions of RFC 9437
//! (draft-ietf-lisp-pubsub-15, "Map-Request PubSub Additions"): the I bit, the per-record N bit,
//! and the trailing xTR-ID and Site-ID.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Type=1 |A|M|P|S|p|s|R|I|  Rsvd   |L|D|   IRC   | Record Count  |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                         Nonce . . .                           |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                         . . . Nonce                           |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |         Source-EID-AFI        |   Source EID Address  ...     |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |         ITR-RLOC-AFI 1        |    ITR-RLOC Address 1  ...    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                              ...                              |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |         ITR-RLOC-AFI n        |    ITR-RLOC Address n  ...    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |N|   Reserved  | EID mask-len  |        EID-Prefix-AFI         | \ Rec
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+  (Record
//! |                       EID-Prefix  ...                         | / Count)
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                   Map-Reply Record  ...    (when M is set)    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                  xTR-ID (128 bits, when I is set)             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                  Site-ID (64 bits, when I is set)             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! IRC is the number of ITR-RLOCs minus one, so a Map-Request always carries 1 to 32 of them.

use crate::address::Address;
use crate::buf::{Reader, Writer};
use crate::error::{Error, Result};
use crate::record::{check_mask, MapRecord};

/// Type code of a Map-Request.
const TYPE: u8 = 1;
/// Fixed header (type, flags, counts) plus nonce.
const HEADER_LEN: usize = 12;

// Bits of the first 32-bit word.
const F_A: u32 = 1 << 27;
const F_M: u32 = 1 << 26;
const F_P: u32 = 1 << 25;
const F_S: u32 = 1 << 24;
const F_PITR: u32 = 1 << 23;
const F_SMR_INVOKED: u32 = 1 << 22;
const F_I: u32 = 1 << 20;
const F_L: u32 = 1 << 14;
const F_D: u32 = 1 << 13;
/// The unassigned R bit and the 5-bit Rsvd field.
const RESERVED: u32 = 1 << 21 | 0x1f << 15;

/// Most ITR-RLOCs a Map-Request can carry (IRC is 5 bits).
pub const MAX_ITR_RLOCS: usize = 32;

/// The identity of an xTR (RFC 9301 §5.6): a 128-bit xTR-ID and the 64-bit Site-ID of its site.
/// Carried at the end of Map-Requests with the I bit (pub/sub) and of Map-Registers with the I bit.
///
/// ```text
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                       xTR-ID (128 bits)                       |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                       Site-ID (64 bits)                       |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct XtrId {
    pub xtr_id: u128,
    pub site_id: u64,
}

impl XtrId {
    /// Encoded length: 16 bytes of xTR-ID and 8 of Site-ID.
    pub const LEN: usize = 24;

    /// Reads the pair, or fails with [`Error::MissingXtrId`] when fewer than 24 bytes are left
    /// (the I bit promised them, RFC 9437 §5: the message is malformed and dropped).
    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self> {
        if r.remaining() < Self::LEN {
            return Err(Error::MissingXtrId { at: r.at() });
        }
        Ok(XtrId { xtr_id: r.u128("xTR-ID")?, site_id: r.u64("Site-ID")? })
    }

    pub(crate) fn write(&self, w: &mut Writer<'_>) {
        w.u128(self.xtr_id);
        w.u64(self.site_id);
    }
}

/// One EID the Map-Request asks about (the `Rec` part of the figure).
///
/// ```text
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |N|   Reserved  | EID mask-len  |        EID-Prefix-AFI         |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                       EID-Prefix  ...                         |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EidRequest {
    /// N: the sender wants to be notified of changes to this prefix (pub/sub, RFC 9437).
    pub notify: bool,
    /// 32 or 128 for a cache miss on one address; the cached prefix's length for a refresh.
    pub eid_mask_len: u8,
    pub eid: Address,
}

impl EidRequest {
    /// The smallest possible encoding: 2 fixed bytes and an AFI-0 EID.
    pub(crate) const MIN_LEN: usize = 4;

    pub fn wire_len(&self) -> usize {
        2 + self.eid.wire_len()
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self> {
        let flags = r.u8("request record flags")?;
        r.reserved(flags.into(), 0x7f);
        let mask_at = r.at();
        let eid_mask_len = r.u8("EID mask-len")?;
        let eid = Address::read(r)?;
        check_mask(&eid, eid_mask_len, mask_at)?;
        Ok(EidRequest { notify: flags & 0x80 != 0, eid_mask_len, eid })
    }

    pub(crate) fn write(&self, w: &mut Writer<'_>) {
        w.u8(u8::from(self.notify) << 7);
        w.u8(self.eid_mask_len);
        self.eid.write(w);
    }
}

/// A Map-Request.
///
/// The M and I bits are not fields: M is set exactly when [`MapRequest::map_reply`] is `Some`,
/// I exactly when [`MapRequest::xtr_id`] is `Some`.
///
/// # Panics
/// Emitting panics when `itr_rlocs` is empty or longer than [`MAX_ITR_RLOCS`], or when there are
/// more than 255 `records`: the header cannot express such a message, so building one is a bug
/// in the caller. A parsed Map-Request always has 1 to 32 ITR-RLOCs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapRequest {
    /// A: the ITR wants the destination site, not the mapping system, to answer.
    pub authoritative: bool,
    /// P: an RLOC-probe; the Map-Reply comes back with P set and the same nonce.
    pub probe: bool,
    /// S: a Solicit-Map-Request (RFC 9301 §6.1).
    pub smr: bool,
    /// p: sent by a PITR.
    pub pitr: bool,
    /// s: sent in response to an SMR.
    pub smr_invoked: bool,
    /// L: the sender is part of the RLOC-set of the receiving xTR's site.
    pub local_xtr: bool,
    /// D: do not send a Map-Reply (used with SMRs).
    pub dont_map_reply: bool,
    pub nonce: u64,
    /// The EID of the host whose packet caused the request; [`Address::None`] for refreshes and
    /// RLOC-probes.
    pub source_eid: Address,
    /// Where the Map-Reply may be sent (1 to 32). A lone AFI-0 entry with an N-bit record asks a
    /// Map-Server to remove a subscription (RFC 9437).
    pub itr_rlocs: Vec<Address>,
    /// The EIDs asked about; senders put exactly one, receivers accept several.
    pub records: Vec<EidRequest>,
    /// The sender's own mapping for the source EID (M bit), piggybacked and not validated.
    pub map_reply: Option<MapRecord>,
    /// The sender's xTR-ID and Site-ID (I bit), mandatory for pub/sub.
    pub xtr_id: Option<XtrId>,
}

impl MapRequest {
    /// M: a Map-Reply record is included.
    pub fn map_data_present(&self) -> bool {
        self.map_reply.is_some()
    }

    /// I: an xTR-ID and Site-ID are included.
    pub fn xtr_id_present(&self) -> bool {
        self.xtr_id.is_some()
    }

    pub fn wire_len(&self) -> usize {
        HEADER_LEN
            + self.source_eid.wire_len()
            + self.itr_rlocs.iter().map(Address::wire_len).sum::<usize>()
            + self.records.iter().map(EidRequest::wire_len).sum::<usize>()
            + self.map_reply.as_ref().map_or(0, MapRecord::wire_len)
            + self.xtr_id.map_or(0, |_| XtrId::LEN)
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self> {
        let h = r.u32("Map-Request header")?;
        check_type((h >> 28) as u8)?;
        r.reserved(h.into(), RESERVED.into());
        let nonce = r.u64("nonce")?;
        let source_eid = Address::read(r)?;
        let irc = ((h >> 8) & 0x1f) as usize + 1;
        let itr_rlocs = r.list("ITR-RLOC", irc, 2, Address::read)?;
        let count = (h & 0xff) as usize;
        let records = r.list("request record", count, EidRequest::MIN_LEN, EidRequest::read)?;
        let map_reply = if h & F_M != 0 { Some(MapRecord::read(r)?) } else { None };
        // The xTR-ID follows the last record, or the Map-Reply record when present.
        let xtr_id = if h & F_I != 0 { Some(XtrId::read(r)?) } else { None };
        Ok(MapRequest {
            authoritative: h & F_A != 0,
            probe: h & F_P != 0,
            smr: h & F_S != 0,
            pitr: h & F_PITR != 0,
            smr_invoked: h & F_SMR_INVOKED != 0,
            local_xtr: h & F_L != 0,
            dont_map_reply: h & F_D != 0,
            nonce,
            source_eid,
            itr_rlocs,
            records,
            map_reply,
            xtr_id,
        })
    }

    pub(crate) fn write(&self, w: &mut Writer<'_>) {
        let n = self.itr_rlocs.len();
        assert!((1..=MAX_ITR_RLOCS).contains(&n), "Map-Request needs 1 to 32 ITR-RLOCs, got {n}");
        assert!(self.records.len() <= 255, "Map-Request holds at most 255 records");
        let flag = |set: bool, bit: u32| if set { bit } else { 0 };
        let h = u32::from(TYPE) << 28
            | flag(self.authoritative, F_A)
            | flag(self.map_reply.is_some(), F_M)
            | flag(self.probe, F_P)
            | flag(self.smr, F_S)
            | flag(self.pitr, F_PITR)
            | flag(self.smr_invoked, F_SMR_INVOKED)
            | flag(self.xtr_id.is_some(), F_I)
            | flag(self.local_xtr, F_L)
            | flag(self.dont_map_reply, F_D)
            | ((n - 1) as u32) << 8
            | self.records.len() as u32;
        w.u32(h);
        w.u64(self.nonce);
        self.source_eid.write(w);
        for a in &self.itr_rlocs {
            a.write(w);
        }
        for rec in &self.records {
            rec.write(w);
        }
        if let Some(m) = &self.map_reply {
            m.write(w);
        }
        if let Some(x) = &self.xtr_id {
            x.write(w);
        }
    }
}

crate::buf::impl_wire!(MapRequest);

fn check_type(found: u8) -> Result<()> {
    Error::expect_type(TYPE, found)
}

/// A zero-copy view of a Map-Request's fixed header (the first 12 bytes), for fast paths that
/// need only the flags, counts and nonce. Nothing past the nonce is checked.
///
/// # Panics
/// Accessors panic when the view was made with [`MapRequestPacket::new_unchecked`] over fewer
/// than 12 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapRequestPacket<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> MapRequestPacket<T> {
    pub fn new_unchecked(buf: T) -> Self {
        MapRequestPacket { buf }
    }

    /// Checks the type field and that the fixed header is present.
    pub fn new_checked(buf: T) -> Result<Self> {
        let b = buf.as_ref();
        if let Some(&first) = b.first() {
            check_type(first >> 4)?;
        }
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated { what: "Map-Request header", at: 0, need: HEADER_LEN - b.len() });
        }
        Ok(MapRequestPacket { buf })
    }

    pub fn into_inner(self) -> T {
        self.buf
    }

    fn header(&self) -> u32 {
        let b = self.buf.as_ref();
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    pub fn authoritative(&self) -> bool {
        self.header() & F_A != 0
    }

    pub fn map_data_present(&self) -> bool {
        self.header() & F_M != 0
    }

    pub fn probe(&self) -> bool {
        self.header() & F_P != 0
    }

    pub fn smr(&self) -> bool {
        self.header() & F_S != 0
    }

    pub fn pitr(&self) -> bool {
        self.header() & F_PITR != 0
    }

    pub fn smr_invoked(&self) -> bool {
        self.header() & F_SMR_INVOKED != 0
    }

    pub fn xtr_id_present(&self) -> bool {
        self.header() & F_I != 0
    }

    pub fn local_xtr(&self) -> bool {
        self.header() & F_L != 0
    }

    pub fn dont_map_reply(&self) -> bool {
        self.header() & F_D != 0
    }

    /// The raw IRC field: the number of ITR-RLOCs minus one.
    pub fn irc(&self) -> u8 {
        ((self.header() >> 8) & 0x1f) as u8
    }

    /// Number of ITR-RLOCs (IRC + 1).
    pub fn itr_rloc_count(&self) -> usize {
        usize::from(self.irc()) + 1
    }

    pub fn record_count(&self) -> u8 {
        self.buf.as_ref()[3]
    }

    pub fn nonce(&self) -> u64 {
        let mut n = [0u8; 8];
        n.copy_from_slice(&self.buf.as_ref()[4..HEADER_LEN]);
        u64::from_be_bytes(n)
    }
}

#[cfg(any(test, feature = "proptest"))]
pub mod strategy {
    //! proptest strategies for Map-Requests.
    use super::*;
    use crate::address::strategy::address;
    use crate::record::strategy::{eid_with_mask, map_record};
    use proptest::prelude::*;

    pub fn xtr_id() -> impl Strategy<Value = XtrId> {
        (any::<u128>(), any::<u64>()).prop_map(|(xtr_id, site_id)| XtrId { xtr_id, site_id })
    }

    pub fn eid_request() -> impl Strategy<Value = EidRequest> {
        (any::<bool>(), eid_with_mask()).prop_map(|(notify, (eid, eid_mask_len))| EidRequest {
            notify,
            eid_mask_len,
            eid,
        })
    }

    pub fn map_request() -> impl Strategy<Value = MapRequest> {
        (
            any::<[bool; 7]>(),
            any::<u64>(),
            address(),
            proptest::collection::vec(address(), 1..4),
            proptest::collection::vec(eid_request(), 0..3),
            proptest::option::of(map_record()),
            proptest::option::of(xtr_id()),
        )
            .prop_map(|(f, nonce, source_eid, itr_rlocs, records, map_reply, xtr_id)| MapRequest {
                authoritative: f[0],
                probe: f[1],
                smr: f[2],
                pitr: f[3],
                smr_invoked: f[4],
                local_xtr: f[5],
                dont_map_reply: f[6],
                nonce,
                source_eid,
                itr_rlocs,
                records,
                map_reply,
                xtr_id,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buf::Wire;
    use crate::record::{Action, Locator};
    use proptest::prelude::*;

    fn v4(s: &str) -> Address {
        Address::Ipv4(s.parse().unwrap())
    }

    /// A plain Map-Request for 10.2.2.2 from source EID 10.1.1.10 and one ITR-RLOC.
    fn simple() -> (MapRequest, Vec<u8>) {
        let req = MapRequest {
            authoritative: false,
            probe: false,
            smr: false,
            pitr: false,
            smr_invoked: false,
            local_xtr: false,
            dont_map_reply: false,
            nonce: 0x0102_0304_0506_0708,
            source_eid: v4("10.1.1.10"),
            itr_rlocs: vec![v4("192.0.2.1")],
            records: vec![EidRequest { notify: false, eid_mask_len: 32, eid: v4("10.2.2.2") }],
            map_reply: None,
            xtr_id: None,
        };
        let bytes = vec![
            0x10, 0x00, 0x00, 0x01, // type 1, no flags, IRC 0, 1 record
            1, 2, 3, 4, 5, 6, 7, 8, // nonce
            0, 1, 10, 1, 1, 10, // source EID AFI 1, 10.1.1.10
            0, 1, 192, 0, 2, 1, // ITR-RLOC AFI 1, 192.0.2.1
            0, 32, 0, 1, 10, 2, 2, 2, // record: N=0, /32, AFI 1, 10.2.2.2
        ];
        (req, bytes)
    }

    #[test]
    fn golden_simple() {
        let (req, bytes) = simple();
        assert_eq!(req.to_bytes(), bytes);
        assert_eq!(req.buffer_len(), bytes.len());
        assert_eq!(MapRequest::parse_noting(&bytes).unwrap(), (req, Default::default()));
        let view = MapRequestPacket::new_checked(&bytes[..]).unwrap();
        assert_eq!((view.irc(), view.itr_rloc_count(), view.record_count()), (0, 1, 1));
        assert_eq!(view.nonce(), 0x0102_0304_0506_0708);
        assert!(!view.probe() && !view.map_data_present() && !view.xtr_id_present());
    }

    /// A pub/sub subscription: I bit, N bit, two ITR-RLOCs, no source EID.
    fn subscribe() -> (MapRequest, Vec<u8>) {
        let req = MapRequest {
            authoritative: false,
            probe: false,
            smr: false,
            pitr: false,
            smr_invoked: false,
            local_xtr: false,
            dont_map_reply: false,
            nonce: 0xdead_beef_0000_0001,
            source_eid: Address::None,
            itr_rlocs: vec![v4("192.0.2.1"), Address::Ipv6("2001:db8::1".parse().unwrap())],
            records: vec![EidRequest { notify: true, eid_mask_len: 16, eid: v4("10.1.0.0") }],
            map_reply: None,
            xtr_id: Some(XtrId { xtr_id: 0x0011_2233_4455_6677_8899_aabb_ccdd_eeff, site_id: 7 }),
        };
        let bytes = vec![
            0x10, 0x10, 0x01, 0x01, // type 1, I, IRC 1 (two ITR-RLOCs), 1 record
            0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 1, // nonce
            0, 0, // source EID AFI 0
            0, 1, 192, 0, 2, 1, // ITR-RLOC 192.0.2.1
            0, 2, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, // ITR-RLOC 2001:db8::1
            0x80, 16, 0, 1, 10, 1, 0, 0, // record: N, /16, 10.1.0.0
            0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, // xTR-ID
            0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, //
            0, 0, 0, 0, 0, 0, 0, 7, // Site-ID
        ];
        (req, bytes)
    }

    #[test]
    fn golden_subscribe() {
        let (req, bytes) = subscribe();
        assert_eq!(req.to_bytes(), bytes);
        assert_eq!(MapRequest::parse(&bytes).unwrap(), req);
        let view = MapRequestPacket::new_checked(&bytes[..]).unwrap();
        assert!(view.xtr_id_present());
        assert_eq!(view.itr_rloc_count(), 2);
    }

    #[test]
    fn golden_probe_with_map_data() {
        // P, M, L and D set (byte 0 = 0x16, byte 2 = 0x60), with the sender's own mapping.
        let req = MapRequest {
            authoritative: true,
            probe: true,
            smr: false,
            pitr: false,
            smr_invoked: false,
            local_xtr: true,
            dont_map_reply: true,
            nonce: 9,
            source_eid: v4("10.1.1.10"),
            itr_rlocs: vec![v4("192.0.2.1")],
            records: vec![EidRequest { notify: false, eid_mask_len: 24, eid: v4("10.2.2.0") }],
            map_reply: Some(MapRecord {
                ttl: 1440,
                eid_mask_len: 24,
                action: Action::NO_ACTION,
                authoritative: true,
                map_version: 0,
                eid: v4("10.1.1.0"),
                locators: vec![Locator {
                    priority: 1,
                    weight: 100,
                    m_priority: 255,
                    m_weight: 0,
                    local: true,
                    probed: false,
                    reachable: true,
                    address: v4("192.0.2.1"),
                }],
            }),
            xtr_id: None,
        };
        let bytes = [
            0x1e, 0x00, 0x60, 0x01, // type 1, A M P, L D, IRC 0, 1 record
            0, 0, 0, 0, 0, 0, 0, 9, // nonce
            0, 1, 10, 1, 1, 10, // source EID
            0, 1, 192, 0, 2, 1, // ITR-RLOC
            0, 24, 0, 1, 10, 2, 2, 0, // record 10.2.2.0/24
            0, 0, 0x05, 0xa0, 1, 24, 0x10, 0, // Map-Reply record: TTL 1440, 1 locator, /24, A
            0, 0, 0, 1, 10, 1, 1, 0, // version 0, 10.1.1.0
            1, 100, 255, 0, 0, 5, 0, 1, 192, 0, 2, 1, // locator L R 192.0.2.1
        ];
        assert_eq!(req.to_bytes(), bytes);
        assert_eq!(MapRequest::parse(&bytes).unwrap(), req);
        let view = MapRequestPacket::new_checked(&bytes).unwrap();
        assert!(view.authoritative() && view.probe() && view.map_data_present() && view.local_xtr());
        assert!(view.dont_map_reply() && !view.smr() && !view.pitr() && !view.smr_invoked());
    }

    #[test]
    fn thirty_two_itr_rlocs() {
        let (mut req, _) = simple();
        req.itr_rlocs = (0..32u8).map(|i| Address::Ipv4([192, 0, 2, i].into())).collect();
        req.smr = true;
        req.pitr = true;
        req.smr_invoked = true;
        let bytes = req.to_bytes();
        assert_eq!(&bytes[..4], [0x11, 0xc0, 0x1f, 0x01]);
        assert_eq!(MapRequest::parse(&bytes).unwrap(), req);
        assert_eq!(MapRequestPacket::new_unchecked(&bytes).itr_rloc_count(), 32);
    }

    #[test]
    #[should_panic(expected = "ITR-RLOC")]
    fn no_itr_rloc_is_a_caller_bug() {
        let (mut req, _) = simple();
        req.itr_rlocs.clear();
        req.to_bytes();
    }

    #[test]
    fn reserved_bits_are_noted_and_cleared() {
        let (req, mut bytes) = simple();
        bytes[1] |= 0x2f; // R and the top of Rsvd
        bytes[2] |= 0x80; // bottom of Rsvd
        bytes[24] = 0x7f; // record reserved bits
        let (got, notes) = MapRequest::parse_noting(&bytes).unwrap();
        assert!(notes.reserved_bits);
        assert_eq!(got, req);
        assert_eq!(got.to_bytes(), simple().1);
    }

    #[test]
    fn bad_input() {
        let (_, good) = simple();
        // IRC 31 promises 32 ITR-RLOCs; only 14 bytes follow the source EID (at byte 18).
        let mut b = good.clone();
        b[2] = 0x1f;
        assert_eq!(
            MapRequest::parse(&b),
            Err(Error::CountTooLarge { what: "ITR-RLOC", count: 32, at: 18, remaining: 14 })
        );
        // IRC 1: the record is read as the second ITR-RLOC, and its first bytes are no AFI.
        b[2] = 0x01;
        assert_eq!(MapRequest::parse(&b), Err(Error::UnknownAfi { afi: 32, at: 24 }));
        // Record count 3 with 8 bytes left.
        let mut b = good.clone();
        b[3] = 3;
        assert_eq!(
            MapRequest::parse(&b),
            Err(Error::CountTooLarge { what: "request record", count: 3, at: 24, remaining: 8 })
        );
        // Record count 2 that fits the minimum size but not the bytes.
        b[3] = 2;
        assert!(matches!(MapRequest::parse(&b), Err(Error::Truncated { .. })));
        // Mask longer than the address.
        let mut b = good.clone();
        b[25] = 33;
        assert_eq!(MapRequest::parse(&b), Err(Error::MaskTooLong { len: 33, max: 32, at: 25 }));
        // I bit without xTR-ID and Site-ID, and with only part of them.
        let mut b = good.clone();
        b[1] = 0x10;
        assert_eq!(MapRequest::parse(&b), Err(Error::MissingXtrId { at: 32 }));
        b.extend_from_slice(&[0; 23]);
        assert_eq!(MapRequest::parse(&b), Err(Error::MissingXtrId { at: 32 }));
        b.extend_from_slice(&[0; 2]);
        assert_eq!(MapRequest::parse(&b), Err(Error::TrailingBytes { len: 1, at: 56 }));
        // M bit without a Map-Reply record.
        let mut b = good.clone();
        b[0] |= 0x04;
        assert!(matches!(MapRequest::parse(&b), Err(Error::Truncated { what: "EID-record header", at: 32, .. })));
        // Unknown AFI in the source EID, an ITR-RLOC, a record, and the Map-Reply record.
        for at in [12, 18, 26] {
            let mut b = good.clone();
            b[at + 1] = 99;
            assert_eq!(MapRequest::parse(&b), Err(Error::UnknownAfi { afi: 99, at }));
        }
        let (mut with_reply, _) = subscribe();
        with_reply.map_reply = Some(negative_record());

        let mut b = with_reply.to_bytes();
        let afi_at = b.len() - XtrId::LEN - 6;
        b[afi_at + 1] = 99;
        assert_eq!(MapRequest::parse(&b), Err(Error::UnknownAfi { afi: 99, at: afi_at }));
        // Trailing bytes, wrong type, short header.
        let mut b = good.clone();
        b.push(0);
        assert_eq!(MapRequest::parse(&b), Err(Error::TrailingBytes { len: 1, at: 32 }));
        let mut b = good.clone();
        b[0] = 0x20;
        assert_eq!(MapRequest::parse(&b), Err(Error::WrongType { expected: 1, found: 2 }));
        assert_eq!(MapRequestPacket::new_checked(&b[..]), Err(Error::WrongType { expected: 1, found: 2 }));
        assert_eq!(
            MapRequestPacket::new_checked(&good[..7]),
            Err(Error::Truncated { what: "Map-Request header", at: 0, need: 5 })
        );
        assert!(matches!(MapRequestPacket::new_checked(&[][..]), Err(Error::Truncated { need: 12, .. })));
        assert!(matches!(MapRequest::parse(&good[..10]), Err(Error::Truncated { what: "nonce", at: 4, need: 2 })));
    }

    /// A negative record whose IPv4 EID (AFI included) is its last 6 bytes.
    fn negative_record() -> MapRecord {
        MapRecord {
            ttl: 15,
            eid_mask_len: 8,
            action: Action::DROP_NO_REASON,
            authoritative: false,
            map_version: 0,
            eid: v4("10.0.0.0"),
            locators: vec![],
        }
    }

    /// Checks that `bytes` either fail to parse or, with clean notes, re-emit identically.
    fn check_reemit(bytes: &[u8]) -> std::result::Result<(), TestCaseError> {
        if let Ok((req, notes)) = MapRequest::parse_noting(bytes) {
            prop_assert_eq!(req.wire_len(), bytes.len());
            if notes.is_clean() {
                prop_assert_eq!(req.to_bytes(), bytes);
            }
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn round_trip(req in strategy::map_request()) {
            let bytes = req.to_bytes();
            prop_assert_eq!(bytes.len(), req.wire_len());
            prop_assert_eq!(MapRequest::parse_noting(&bytes).unwrap(), (req.clone(), Default::default()));
            let view = MapRequestPacket::new_checked(&bytes[..]).unwrap();
            prop_assert_eq!(view.nonce(), req.nonce);
            prop_assert_eq!(view.itr_rloc_count(), req.itr_rlocs.len());
            prop_assert_eq!(usize::from(view.record_count()), req.records.len());
            prop_assert_eq!(view.map_data_present(), req.map_data_present());
            prop_assert_eq!(view.xtr_id_present(), req.xtr_id_present());
        }

        #[test]
        fn random_bytes(low in 0u8..16, mut bytes in proptest::collection::vec(any::<u8>(), 0..96)) {
            if let Some(b) = bytes.first_mut() {
                *b = 0x10 | low;
            }
            check_reemit(&bytes)?;
        }

        #[test]
        fn mutated(req in strategy::map_request(), at in any::<usize>(), x in 1u8..=255, cut in any::<bool>()) {
            let mut bytes = req.to_bytes();
            let at = at % bytes.len();
            if cut {
                bytes.truncate(at);
            } else {
                bytes[at] ^= x;
            }
            check_reemit(&bytes)?;
        }
    }
}
