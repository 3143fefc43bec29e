//! Map-Reply (type 2): RFC 9301 §5.4. The records are [`MapRecord`]s; see [`crate::record`] for
//! their layout.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Type=2 |P|E|S|          Reserved               | Record Count  |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                         Nonce . . .                           |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                         . . . Nonce                           |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                 Record  ...  (Record Count times)             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |    AD Type    |  Authentication Data Content . . . (when S)   |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! With S set, LISP-SEC authentication data (RFC 9303 §6.2: MR AD Type, EID-AD, PKT-AD) follows
//! the records. It is kept as opaque bytes here, so the message re-emits byte for byte and the
//! PKT HMAC, which covers the whole message, can be checked by the LISP-SEC layer.

use crate::address::Address;
use crate::buf::{Reader, Writer};
use crate::error::{Error, Result};
use crate::record::{Action, MapRecord};

/// Type code of a Map-Reply.
const TYPE: u8 = 2;
/// Fixed header (type, flags, count) plus nonce.
const HEADER_LEN: usize = 12;

const F_P: u32 = 1 << 27;
const F_E: u32 = 1 << 26;
const F_S: u32 = 1 << 25;
const RESERVED: u32 = 0x01ff_ff00;

/// A Map-Reply.
///
/// A Negative Map-Reply is one whose record has no locators; its [`Action`] says what the ITR does
/// with matching packets. [`MapReply::negative`] builds one. With P set, RFC 9301 §5.4 wants the A
/// bit in every record and the receiver to discard the reply otherwise; that check belongs to the
/// receiver, not to this codec.
///
/// # Panics
/// Emitting panics with more than 255 `records` (the header cannot express it) or with `auth`
/// set but `security` clear (the data would be trailing garbage): both are caller bugs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapReply {
    /// P: the answer to an RLOC-probe (the nonce is the probe's).
    pub probe: bool,
    /// E: the site supports the echo-nonce algorithm (RFC 9300 §10.1).
    pub echo_nonce_capable: bool,
    /// S: LISP-SEC authentication data follows the records (RFC 9303).
    pub security: bool,
    /// The nonce of the Map-Request being answered.
    pub nonce: u64,
    pub records: Vec<MapRecord>,
    /// The LISP-SEC authentication data after the records (RFC 9303 §6.2), verbatim. Only with
    /// `security`; a parsed reply has `None` when S is set but nothing follows the records.
    pub auth: Option<Vec<u8>>,
}

impl MapReply {
    /// A Negative Map-Reply: one record for `eid`/`eid_mask_len` with no locators, telling the
    /// ITR to apply `action` for `ttl` minutes (RFC 9301 §8.3-§8.4 say which prefix and TTL).
    /// Not authoritative, map version 0, no P, E or S.
    pub fn negative(nonce: u64, eid: Address, eid_mask_len: u8, ttl: u32, action: Action) -> MapReply {
        MapReply {
            probe: false,
            echo_nonce_capable: false,
            security: false,
            nonce,
            records: vec![MapRecord {
                ttl,
                eid_mask_len,
                action,
                authoritative: false,
                map_version: 0,
                eid,
                locators: Vec::new(),
            }],
            auth: None,
        }
    }

    pub fn wire_len(&self) -> usize {
        HEADER_LEN
            + self.records.iter().map(MapRecord::wire_len).sum::<usize>()
            + self.auth.as_ref().map_or(0, Vec::len)
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self> {
        let h = r.u32("Map-Reply header")?;
        check_type((h >> 28) as u8)?;
        r.reserved(h.into(), RESERVED.into());
        let nonce = r.u64("nonce")?;
        let records = MapRecord::read_list(r, (h & 0xff) as usize)?;
        let security = h & F_S != 0;
        // Without S, anything left over is trailing garbage (reported by the caller's finish).
        let auth = if security && !r.is_empty() {
            Some(r.bytes(r.remaining(), "LISP-SEC authentication data")?.to_vec())
        } else {
            None
        };
        Ok(MapReply { probe: h & F_P != 0, echo_nonce_capable: h & F_E != 0, security, nonce, records, auth })
    }

    pub(crate) fn write(&self, w: &mut Writer<'_>) {
        assert!(self.records.len() <= 255, "Map-Reply holds at most 255 records");
        assert!(self.security || self.auth.is_none(), "Map-Reply authentication data needs the S bit");
        let flag = |set: bool, bit: u32| if set { bit } else { 0 };
        w.u32(
            u32::from(TYPE) << 28
                | flag(self.probe, F_P)
                | flag(self.echo_nonce_capable, F_E)
                | flag(self.security, F_S)
                | self.records.len() as u32,
        );
        w.u64(self.nonce);
        for rec in &self.records {
            rec.write(w);
        }
        if let Some(auth) = &self.auth {
            w.bytes(auth);
        }
    }
}

crate::buf::impl_wire!(MapReply);

fn check_type(found: u8) -> Result<()> {
    Error::expect_type(TYPE, found)
}

/// A zero-copy view of a Map-Reply's fixed header (the first 12 bytes): enough to match the
/// nonce against outstanding requests before decoding the records.
///
/// # Panics
/// Accessors panic when the view was made with [`MapReplyPacket::new_unchecked`] over fewer than
/// 12 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapReplyPacket<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> MapReplyPacket<T> {
    pub fn new_unchecked(buf: T) -> Self {
        MapReplyPacket { buf }
    }

    /// Checks the type field and that the fixed header is present.
    pub fn new_checked(buf: T) -> Result<Self> {
        let b = buf.as_ref();
        if let Some(&first) = b.first() {
            check_type(first >> 4)?;
        }
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated { what: "Map-Reply header", at: 0, need: HEADER_LEN - b.len() });
        }
        Ok(MapReplyPacket { buf })
    }

    pub fn into_inner(self) -> T {
        self.buf
    }

    fn first(&self) -> u8 {
        self.buf.as_ref()[0]
    }

    pub fn probe(&self) -> bool {
        self.first() & 0x08 != 0
    }

    pub fn echo_nonce_capable(&self) -> bool {
        self.first() & 0x04 != 0
    }

    pub fn security(&self) -> bool {
        self.first() & 0x02 != 0
    }

    pub fn record_count(&self) -> u8 {
        self.buf.as_ref()[3]
    }

    pub fn nonce(&self) -> u64 {
        let mut n = [0u8; 8];
        n.copy_from_slice(&self.buf.as_ref()[4..HEADER_LEN]);
        u64::from_be_bytes(n)
    }

    /// The records (and any authentication data) after the fixed header, undecoded.
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[HEADER_LEN..]
    }
}

#[cfg(any(test, feature = "proptest"))]
pub mod strategy {
    //! proptest strategies for Map-Replies.
    use super::*;
    use crate::record::strategy::map_record;
    use proptest::prelude::*;

    pub fn map_reply() -> impl Strategy<Value = MapReply> {
        (
            any::<[bool; 3]>(),
            any::<u64>(),
            proptest::collection::vec(map_record(), 0..4),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 1..48)),
        )
            // Authentication data only with S; S alone is allowed (nothing follows the records).
            .prop_map(|(f, nonce, records, auth)| MapReply {
                probe: f[0],
                echo_nonce_capable: f[1],
                security: f[2] || auth.is_some(),
                nonce,
                records,
                auth,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buf::Wire;
    use crate::record::Locator;
    use proptest::prelude::*;

    fn v4(s: &str) -> Address {
        Address::Ipv4(s.parse().unwrap())
    }

    /// Negative Map-Reply: 192.168.0.0/16 is not a LISP destination, forward natively, 15 min.
    fn negative() -> (MapReply, Vec<u8>) {
        let reply = MapReply::negative(0x0102_0304_0506_0708, v4("192.168.0.0"), 16, 15, Action::NATIVE_FORWARD);
        let bytes = vec![
            0x20, 0, 0, 1, // type 2, no flags, 1 record
            1, 2, 3, 4, 5, 6, 7, 8, // nonce
            0, 0, 0, 15, // TTL 15 minutes
            0, 16, 0x20, 0, // 0 locators, /16, ACT 1 (native-forward), A=0
            0, 0, 0, 1, 192, 168, 0, 0, // version 0, AFI 1, 192.168.0.0
        ];
        (reply, bytes)
    }

    #[test]
    fn golden_negative() {
        let (reply, bytes) = negative();
        assert_eq!(reply.to_bytes(), bytes);
        assert_eq!(reply.buffer_len(), bytes.len());
        assert_eq!(MapReply::parse_noting(&bytes).unwrap(), (reply, Default::default()));
        let view = MapReplyPacket::new_checked(&bytes[..]).unwrap();
        assert_eq!((view.record_count(), view.nonce()), (1, 0x0102_0304_0506_0708));
        assert!(!view.probe() && !view.echo_nonce_capable() && !view.security());
        assert_eq!(view.payload(), &bytes[12..]);
    }

    /// RLOC-probe reply with E and S set, one authoritative record and LISP-SEC data.
    fn probe_reply() -> (MapReply, Vec<u8>) {
        let reply = MapReply {
            probe: true,
            echo_nonce_capable: true,
            security: true,
            nonce: 0xfeed,
            records: vec![MapRecord {
                ttl: 1440,
                eid_mask_len: 24,
                action: Action::NO_ACTION,
                authoritative: true,
                map_version: 1,
                eid: v4("10.2.2.0"),
                locators: vec![Locator {
                    priority: 1,
                    weight: 100,
                    m_priority: 255,
                    m_weight: 0,
                    local: true,
                    probed: true,
                    reachable: true,
                    address: v4("198.51.100.2"),
                }],
            }],
            auth: Some(vec![1, 0, 0, 0, 0, 4, 0, 2, 0, 0, 0, 0]),
        };
        let bytes = vec![
            0x2e, 0, 0, 1, // type 2, P E S, 1 record
            0, 0, 0, 0, 0, 0, 0xfe, 0xed, // nonce
            0, 0, 0x05, 0xa0, 1, 24, 0x10, 0, // TTL 1440, 1 locator, /24, A
            0, 1, 0, 1, 10, 2, 2, 0, // version 1, AFI 1, 10.2.2.0
            1, 100, 255, 0, 0, 7, 0, 1, 198, 51, 100, 2, // locator L p R 198.51.100.2
            1, 0, 0, 0, // MR AD Type 1 (LISP-SEC), unassigned
            0, 4, 0, 2, // EID-AD length 4, KDF ID 2
            0, 0, 0, 0, // PKT-AD length 0, PKT HMAC ID 0
        ];
        (reply, bytes)
    }

    #[test]
    fn golden_probe_with_auth() {
        let (reply, bytes) = probe_reply();
        assert_eq!(reply.to_bytes(), bytes);
        assert_eq!(MapReply::parse(&bytes).unwrap(), reply);
        assert!(reply.security);
        let view = MapReplyPacket::new_checked(bytes.as_slice()).unwrap();
        assert!(view.probe() && view.echo_nonce_capable() && view.security());
        // S with nothing after the records.
        let mut b = negative().1;
        b[0] |= 0x02;
        let r = MapReply::parse(&b).unwrap();
        assert!(r.security && r.auth.is_none());
        assert_eq!(r.to_bytes(), b);
    }

    #[test]
    #[should_panic(expected = "S bit")]
    fn auth_without_s_is_a_caller_bug() {
        let mut r = negative().0;
        r.auth = Some(vec![1]);
        r.to_bytes();
    }

    #[test]
    fn reserved_bits_are_noted_and_cleared() {
        let (reply, mut bytes) = negative();
        bytes[0] |= 0x01;
        bytes[1] = 0xff;
        bytes[2] = 0xff;
        let (got, notes) = MapReply::parse_noting(&bytes).unwrap();
        assert!(notes.reserved_bits);
        assert_eq!(got, reply);
        assert_eq!(got.to_bytes(), negative().1);
    }

    #[test]
    fn bad_input() {
        let (_, good) = negative();
        // Trailing bytes without S.
        let mut b = good.clone();
        b.extend_from_slice(&[1, 2]);
        assert_eq!(MapReply::parse(&b), Err(Error::TrailingBytes { len: 2, at: 28 }));
        // Record count larger than the payload can hold.
        let mut b = good.clone();
        b[3] = 2;
        assert_eq!(MapReply::parse(&b), Err(Error::CountTooLarge { what: "record", count: 2, at: 12, remaining: 16 }));
        // Mask longer than the address.
        let mut b = good.clone();
        b[17] = 33;
        assert_eq!(MapReply::parse(&b), Err(Error::MaskTooLong { len: 33, max: 32, at: 17 }));
        // Unknown AFI in the EID and in a locator.
        let mut b = good.clone();
        b[23] = 99;
        assert_eq!(MapReply::parse(&b), Err(Error::UnknownAfi { afi: 99, at: 22 }));
        let (_, mut b) = probe_reply();
        b[35] = 99;
        assert_eq!(MapReply::parse(&b), Err(Error::UnknownAfi { afi: 99, at: 34 }));
        // Locator count larger than what is left.
        let (_, mut b) = probe_reply();
        b[16] = 9;
        assert!(matches!(MapReply::parse(&b), Err(Error::CountTooLarge { what: "locator", count: 9, .. })));
        // Truncated record, short header, wrong type.
        assert!(matches!(
            MapReply::parse(&good[..26]),
            Err(Error::Truncated { what: "IPv4 address", at: 24, need: 2 })
        ));
        assert!(matches!(MapReply::parse(&good[..3]), Err(Error::Truncated { what: "Map-Reply header", at: 0, .. })));
        let mut b = good.clone();
        b[0] = 0x10;
        assert_eq!(MapReply::parse(&b), Err(Error::WrongType { expected: 2, found: 1 }));
        assert_eq!(MapReplyPacket::new_checked(&b[..]), Err(Error::WrongType { expected: 2, found: 1 }));
        assert_eq!(
            MapReplyPacket::new_checked(&good[..11]),
            Err(Error::Truncated { what: "Map-Reply header", at: 0, need: 1 })
        );
    }

    /// Checks that `bytes` either fail to parse or, with clean notes, re-emit identically.
    fn check_reemit(bytes: &[u8]) -> std::result::Result<(), TestCaseError> {
        if let Ok((reply, notes)) = MapReply::parse_noting(bytes) {
            prop_assert_eq!(reply.wire_len(), bytes.len());
            if notes.is_clean() {
                prop_assert_eq!(reply.to_bytes(), bytes);
            }
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn round_trip(reply in strategy::map_reply()) {
            let bytes = reply.to_bytes();
            prop_assert_eq!(bytes.len(), reply.wire_len());
            prop_assert_eq!(MapReply::parse_noting(&bytes).unwrap(), (reply.clone(), Default::default()));
            let view = MapReplyPacket::new_checked(&bytes[..]).unwrap();
            prop_assert_eq!(view.nonce(), reply.nonce);
            prop_assert_eq!(usize::from(view.record_count()), reply.records.len());
            prop_assert_eq!(view.security(), reply.security);
            prop_assert_eq!(view.probe(), reply.probe);
        }

        #[test]
        fn random_bytes(low in 0u8..16, mut bytes in proptest::collection::vec(any::<u8>(), 0..96)) {
            if let Some(b) = bytes.first_mut() {
                *b = 0x20 | low;
            }
            check_reemit(&bytes)?;
        }

        #[test]
        fn mutated(reply in strategy::map_reply(), at in any::<usize>(), x in 1u8..=255, cut in any::<bool>()) {
            let mut bytes = reply.to_bytes();
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
