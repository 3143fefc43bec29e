//! Map-Referral (type 6, LISP-DDT, RFC 8111 §6.4): a DDT node's answer to a DDT Map-Request,
//! naming the nodes (or Map-Servers) to ask next.
//!
//! ```text
//!      0                   1                   2                   3
//!      0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//!     +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//!     |Type=6 |                Reserved               | Record Count  |
//!     +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//!     |                         Nonce . . .                           |
//!     +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//!     |                         . . . Nonce                           |
//! +-> +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |   |                         Record TTL                            |
//! |   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! R   | Referral Count| EID mask-len  | ACT |A|I|     Reserved        |
//! e   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! c   |SigCnt |   Map Version Number  |            EID-AFI            |
//! o   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! r   |                          EID-prefix ...                       |
//! d   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  /|    Priority   |    Weight     |  M Priority   |   M Weight    |
//! | R +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! | e |       Unused Flags      |L|p|R|            Loc-AFI            |
//! | f +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  \|                             Locator ...                       |
//! |   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |   ~                          Sig section                          ~
//! +-> +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! The referral locators ("Ref") have the RLOC-record layout of [`crate::record::Locator`].
//! Signature sections (RFC 8111 §6.4.1) carry their own length and are decoded exactly.

use crate::address::Address;
use crate::buf::{Reader, Writer};
use crate::error::{Error, Result};
use crate::message::message_type::MAP_REFERRAL;
use crate::record::{check_mask, Locator};

/// Length of the fixed header (type word and nonce).
pub const HEADER_LEN: usize = 12;

/// The 3-bit ACT field of a referral record (RFC 8111 §6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ReferralAction(u8);

impl ReferralAction {
    /// The prefix is delegated to other DDT nodes (the referral set).
    pub const NODE_REFERRAL: ReferralAction = ReferralAction(0);
    /// The prefix is delegated to DDT Map-Servers (the referral set).
    pub const MS_REFERRAL: ReferralAction = ReferralAction(1);
    /// A DDT Map-Server forwarded the request to a registered ETR.
    pub const MS_ACK: ReferralAction = ReferralAction(2);
    /// A DDT Map-Server has no ETR registered for the prefix.
    pub const MS_NOT_REGISTERED: ReferralAction = ReferralAction(3);
    /// The EID is in a sub-prefix that was never delegated.
    pub const DELEGATION_HOLE: ReferralAction = ReferralAction(4);
    /// The node is not authoritative for the EID.
    pub const NOT_AUTHORITATIVE: ReferralAction = ReferralAction(5);

    /// An action from its 3-bit code (higher bits are dropped).
    pub const fn from_bits(v: u8) -> ReferralAction {
        ReferralAction(v & 0x7)
    }

    pub const fn bits(self) -> u8 {
        self.0
    }

    pub fn name(self) -> &'static str {
        match self.0 {
            0 => "node-referral",
            1 => "ms-referral",
            2 => "ms-ack",
            3 => "ms-not-registered",
            4 => "delegation-hole",
            5 => "not-authoritative",
            _ => "unassigned",
        }
    }
}

impl core::fmt::Display for ReferralAction {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// Sig-Algorithm values (RFC 8111 Table 1).
pub mod sig_algorithm {
    /// RSA-SHA1 (deprecated).
    pub const RSA_SHA1: u8 = 1;
    /// RSA-SHA256 (mandatory to implement).
    pub const RSA_SHA256: u8 = 2;
}

/// One signature section (RFC 8111 §6.4.1).
///
/// ```text
///  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
///  |                      Original Record TTL                      |
///  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
///  |                      Signature Expiration                     |
///  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
///  |                      Signature Inception                      |
///  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
///  |            Key Tag            |           Sig Length          |
///  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
///  | Sig-Algorithm |    Reserved   |            Reserved           |
///  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
///  ~                             Signature                         ~
///  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Signature {
    /// The record TTL (minutes) the signature covers.
    pub original_ttl: u32,
    /// Seconds since 1970-01-01 UTC after which the signature is not valid.
    pub expiration: u32,
    /// Seconds since 1970-01-01 UTC before which the signature is not valid.
    pub inception: u32,
    /// Which of the signer's keys was used.
    pub key_tag: u16,
    /// See [`sig_algorithm`].
    pub algorithm: u8,
    pub signature: Vec<u8>,
}

impl Signature {
    /// The fixed part; the signature itself may be empty.
    pub(crate) const MIN_LEN: usize = 20;

    pub fn wire_len(&self) -> usize {
        Self::MIN_LEN + self.signature.len()
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self> {
        let original_ttl = r.u32("signature original TTL")?;
        let expiration = r.u32("signature expiration")?;
        let inception = r.u32("signature inception")?;
        let key_tag = r.u16("signature key tag")?;
        let len = r.u16("signature length")?;
        let algorithm = r.u8("signature algorithm")?;
        let rsvd = r.array::<3>("signature reserved")?;
        r.reserved(u64::from(u32::from_be_bytes([0, rsvd[0], rsvd[1], rsvd[2]])), 0xff_ffff);
        let signature = r.bytes(len.into(), "signature")?.to_vec();
        Ok(Signature { original_ttl, expiration, inception, key_tag, algorithm, signature })
    }

    pub(crate) fn write(&self, w: &mut Writer<'_>) {
        w.u32(self.original_ttl);
        w.u32(self.expiration);
        w.u32(self.inception);
        w.u16(self.key_tag);
        w.u16(self.signature.len() as u16);
        w.u8(self.algorithm);
        w.zeros(3);
        w.bytes(&self.signature);
    }
}

/// One referral record: an EID-prefix, what the node did with it, and where to go next.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReferralRecord {
    /// Minutes the referral may be cached.
    pub ttl: u32,
    pub eid_mask_len: u8,
    pub action: ReferralAction,
    /// A: the answer is authoritative.
    pub authoritative: bool,
    /// I: the referral set is incomplete; do not cache.
    pub incomplete: bool,
    /// 12-bit map version.
    pub map_version: u16,
    pub eid: Address,
    /// The referral set: DDT nodes or Map-Servers to ask next.
    pub referrals: Vec<Locator>,
    /// At most 15 (SigCnt is 4 bits).
    pub signatures: Vec<Signature>,
}

impl ReferralRecord {
    /// The smallest possible encoding: 10 fixed bytes and an AFI-0 EID.
    pub(crate) const MIN_LEN: usize = 12;

    pub fn wire_len(&self) -> usize {
        10 + self.eid.wire_len()
            + self.referrals.iter().map(Locator::wire_len).sum::<usize>()
            + self.signatures.iter().map(Signature::wire_len).sum::<usize>()
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self> {
        let ttl = r.u32("record TTL")?;
        let ref_count = r.u8("referral count")?;
        let mask_at = r.at();
        let eid_mask_len = r.u8("EID mask-len")?;
        let act = r.u16("record ACT/A/I/reserved")?;
        r.reserved(act.into(), 0x07ff);
        let sig_version = r.u16("SigCnt/map version")?;
        let eid = Address::read(r)?;
        check_mask(&eid, eid_mask_len, mask_at)?;
        let referrals = r.list("referral", ref_count.into(), Locator::MIN_LEN, Locator::read)?;
        let sig_count = usize::from(sig_version >> 12);
        let signatures = r.list("signature", sig_count, Signature::MIN_LEN, Signature::read)?;
        Ok(ReferralRecord {
            ttl,
            eid_mask_len,
            action: ReferralAction::from_bits((act >> 13) as u8),
            authoritative: act & 0x1000 != 0,
            incomplete: act & 0x0800 != 0,
            map_version: sig_version & 0x0fff,
            eid,
            referrals,
            signatures,
        })
    }

    pub(crate) fn write(&self, w: &mut Writer<'_>) {
        w.u32(self.ttl);
        w.u8(self.referrals.len() as u8);
        w.u8(self.eid_mask_len);
        w.u16(
            u16::from(self.action.bits()) << 13
                | u16::from(self.authoritative) << 12
                | u16::from(self.incomplete) << 11,
        );
        w.u16((self.signatures.len() as u16 & 0xf) << 12 | (self.map_version & 0x0fff));
        self.eid.write(w);
        for l in &self.referrals {
            l.write(w);
        }
        for s in &self.signatures {
            s.write(w);
        }
    }
}

/// A Map-Referral message.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MapReferral {
    /// The nonce of the DDT Map-Request this answers.
    pub nonce: u64,
    pub records: Vec<ReferralRecord>,
}

impl MapReferral {
    pub fn wire_len(&self) -> usize {
        HEADER_LEN + self.records.iter().map(ReferralRecord::wire_len).sum::<usize>()
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self> {
        let first = r.u32("Map-Referral header")?;
        let found = (first >> 28) as u8;
        Error::expect_type(MAP_REFERRAL, found)?;
        r.reserved(first.into(), 0x0fff_ff00);
        let nonce = r.u64("nonce")?;
        let count = (first & 0xff) as usize;
        let records = r.list("referral record", count, ReferralRecord::MIN_LEN, ReferralRecord::read)?;
        Ok(MapReferral { nonce, records })
    }

    pub(crate) fn write(&self, w: &mut Writer<'_>) {
        w.u32(u32::from(MAP_REFERRAL) << 28 | self.records.len() as u32 & 0xff);
        w.u64(self.nonce);
        for rec in &self.records {
            rec.write(w);
        }
    }
}

crate::buf::impl_wire!(MapReferral);

/// A zero-copy view of a Map-Referral's fixed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapReferralPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> MapReferralPacket<T> {
    /// Wraps a buffer without checks; accessors panic if it is shorter than [`HEADER_LEN`].
    pub const fn new_unchecked(buffer: T) -> Self {
        MapReferralPacket { buffer }
    }

    /// Wraps a buffer, checking the fixed-header length and the type field.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated { what: "Map-Referral header", at: b.len(), need: HEADER_LEN - b.len() });
        }
        let found = b[0] >> 4;
        Error::expect_type(MAP_REFERRAL, found)?;
        Ok(MapReferralPacket { buffer })
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn record_count(&self) -> u8 {
        self.buffer.as_ref()[3]
    }

    pub fn nonce(&self) -> u64 {
        let b = self.buffer.as_ref();
        u64::from_be_bytes([b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11]])
    }
}

#[cfg(any(test, feature = "proptest"))]
pub mod strategy {
    //! proptest strategies for Map-Referrals.
    use super::*;
    use crate::record::strategy::{eid_with_mask, locator};
    use proptest::collection::vec;
    use proptest::prelude::*;

    pub fn signature() -> impl Strategy<Value = Signature> {
        (any::<[u32; 3]>(), any::<u16>(), any::<u8>(), vec(any::<u8>(), 0..40)).prop_map(
            |([original_ttl, expiration, inception], key_tag, algorithm, signature)| Signature {
                original_ttl,
                expiration,
                inception,
                key_tag,
                algorithm,
                signature,
            },
        )
    }

    pub fn referral_record() -> impl Strategy<Value = ReferralRecord> {
        (
            any::<u32>(),
            eid_with_mask(),
            (0u8..8, any::<bool>(), any::<bool>()),
            0u16..0x1000,
            vec(locator(), 0..4),
            vec(signature(), 0..3),
        )
            .prop_map(
                |(ttl, (eid, eid_mask_len), (act, authoritative, incomplete), map_version, referrals, signatures)| {
                    ReferralRecord {
                        ttl,
                        eid_mask_len,
                        action: ReferralAction::from_bits(act),
                        authoritative,
                        incomplete,
                        map_version,
                        eid,
                        referrals,
                        signatures,
                    }
                },
            )
    }

    pub fn map_referral() -> impl Strategy<Value = MapReferral> {
        (any::<u64>(), vec(referral_record(), 0..4)).prop_map(|(nonce, records)| MapReferral { nonce, records })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buf::Wire;
    use crate::error::Notes;
    use proptest::prelude::*;

    fn golden_msg() -> MapReferral {
        MapReferral {
            nonce: 0x0102_0304_0506_0708,
            records: vec![ReferralRecord {
                ttl: 1440,
                eid_mask_len: 16,
                action: ReferralAction::MS_REFERRAL,
                authoritative: true,
                incomplete: false,
                map_version: 0,
                eid: Address::Ipv4("10.1.0.0".parse().unwrap()),
                referrals: vec![Locator {
                    priority: 0,
                    weight: 0,
                    m_priority: 0,
                    m_weight: 0,
                    local: false,
                    probed: false,
                    reachable: true,
                    address: Address::Ipv4("192.0.2.1".parse().unwrap()),
                }],
                signatures: vec![Signature {
                    original_ttl: 1440,
                    expiration: 0x6000_0000,
                    inception: 0x5000_0000,
                    key_tag: 7,
                    algorithm: sig_algorithm::RSA_SHA256,
                    signature: vec![0xaa, 0xbb],
                }],
            }],
        }
    }

    const GOLDEN: [u8; 62] = [
        0x60, 0, 0, 1, // type 6, 1 record
        1, 2, 3, 4, 5, 6, 7, 8, // nonce
        0, 0, 0x05, 0xa0, // TTL 1440
        1, 16, 0x30, 0, // 1 referral, /16, ACT=1 (ms-referral), A
        0x10, 0, 0, 1, // SigCnt 1, version 0, AFI 1
        10, 1, 0, 0, // 10.1.0.0
        0, 0, 0, 0, 0, 1, 0, 1, 192, 0, 2, 1, // referral 192.0.2.1, R
        0, 0, 0x05, 0xa0, // original TTL
        0x60, 0, 0, 0, // expiration
        0x50, 0, 0, 0, // inception
        0, 7, 0, 2, // key tag 7, sig length 2
        2, 0, 0, 0, // RSA-SHA256, reserved
        0xaa, 0xbb, // signature
    ];

    #[test]
    fn golden() {
        let msg = golden_msg();
        assert_eq!(msg.to_bytes(), GOLDEN);
        assert_eq!(MapReferral::parse_noting(&GOLDEN), Ok((msg, Notes::default())));
        let p = MapReferralPacket::new_checked(&GOLDEN[..]).unwrap();
        assert_eq!((p.record_count(), p.nonce()), (1, 0x0102_0304_0506_0708));
        assert_eq!(ReferralAction::NOT_AUTHORITATIVE.to_string(), "not-authoritative");
    }

    #[test]
    fn reserved_bits_are_noted() {
        let mut b = GOLDEN;
        b[2] = 0x10; // header reserved
        b[19] = 0x01; // record reserved
        b[57] = 1; // signature reserved
        let (msg, notes) = MapReferral::parse_noting(&b).unwrap();
        assert_eq!(msg, golden_msg());
        assert!(notes.reserved_bits);
        assert_eq!(msg.to_bytes(), GOLDEN);
    }

    #[test]
    fn bad_input() {
        assert_eq!(MapReferral::parse(&[0x10; 12]), Err(Error::WrongType { expected: 6, found: 1 }));
        assert!(matches!(MapReferral::parse(&GOLDEN[..10]), Err(Error::Truncated { at: 4, .. })));
        // Record count larger than the message can hold.
        let mut b = GOLDEN;
        b[3] = 9;
        assert!(matches!(MapReferral::parse(&b), Err(Error::CountTooLarge { what: "referral record", count: 9, .. })));
        // Referral count.
        let mut b = GOLDEN;
        b[16] = 5;
        assert!(matches!(MapReferral::parse(&b), Err(Error::CountTooLarge { what: "referral", count: 5, .. })));
        // SigCnt.
        let mut b = GOLDEN;
        b[20] = 0x30;
        assert!(matches!(MapReferral::parse(&b), Err(Error::CountTooLarge { what: "signature", count: 3, .. })));
        // Signature length past the end.
        let mut b = GOLDEN;
        b[55] = 3;
        assert!(matches!(MapReferral::parse(&b), Err(Error::Truncated { what: "signature", at: 60, need: 1 })));
        // Mask too long.
        let mut b = GOLDEN;
        b[17] = 33;
        assert_eq!(MapReferral::parse(&b), Err(Error::MaskTooLong { len: 33, max: 32, at: 17 }));
        // Trailing bytes.
        let mut v = GOLDEN.to_vec();
        v.push(0);
        assert_eq!(MapReferral::parse(&v), Err(Error::TrailingBytes { len: 1, at: 62 }));
        // View.
        assert!(matches!(MapReferralPacket::new_checked(&GOLDEN[..11]), Err(Error::Truncated { at: 11, need: 1, .. })));
        assert_eq!(MapReferralPacket::new_checked(&[0x80; 12][..]), Err(Error::WrongType { expected: 6, found: 8 }));
    }

    proptest! {
        #[test]
        fn round_trip(msg in strategy::map_referral()) {
            let bytes = msg.to_bytes();
            prop_assert_eq!(bytes.len(), msg.wire_len());
            prop_assert_eq!(MapReferral::parse_noting(&bytes), Ok((msg, Notes::default())));
        }

        #[test]
        fn parse_never_panics_and_reemits(bytes in proptest::collection::vec(any::<u8>(), 0..96)) {
            let mut bytes = bytes;
            if let Some(b) = bytes.first_mut() {
                *b = 0x60 | (*b & 0x0f);
            }
            if let Ok((m, notes)) = MapReferral::parse_noting(&bytes) {
                if notes.is_clean() {
                    prop_assert_eq!(m.to_bytes(), bytes);
                }
            }
        }

        #[test]
        fn mutated_never_panics(msg in strategy::map_referral(), at in any::<prop::sample::Index>(), x in any::<u8>(), cut in any::<prop::sample::Index>()) {
            let mut bytes = msg.to_bytes();
            let i = at.index(bytes.len());
            bytes[i] ^= x;
            for b in [&bytes[..], &bytes[..cut.index(bytes.len() + 1)]] {
                if let Ok((m, notes)) = MapReferral::parse_noting(b) {
                    if notes.is_clean() {
                        prop_assert_eq!(m.to_bytes(), b);
                    }
                }
            }
        }
    }
}
