//! Map-Notify (type 4) and Map-Notify-Ack (type 5): RFC 9301 §5.7.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Typ=4/5|I|               Reserved              |  Record Count |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                         Nonce . . .                           |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                         . . . Nonce                           |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |    Key ID     | Algorithm ID  |  Authentication Data Length   |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ~                     Authentication Data                       ~
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                 EID-records ([`MapRecord`])                   |
//! ~                  (Record Count times)                         ~
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                  xTR-ID (128 bits, when I is set)             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                  Site-ID (64 bits, when I is set)             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! RFC 9301 leaves all 20 bits after the type reserved. The I bit (bit 4, the first after the
//! type, unlike bit 6 in the Map-Register) and the trailing xTR-ID/Site-ID are the LISP NAT
//! traversal layout that Wireshark's dissector and OOR use; it is supported the same way. The
//! NAT-traversal R bit (bit 5, MS-RTR authentication data after the Site-ID) is not: it is
//! treated as reserved, so such a message fails with trailing bytes.
//!
//! The body is a Map-Register's; the shared code is in [`crate::map_register`].

use crate::auth::{self, AuthError, AuthHeader, SendPolicy};
use crate::buf::{Reader, Writer};
use crate::error::{Error, Result};
use crate::map_register::{self, fixed, Body, BodyRef, MapRegister, XtrId};
use crate::record::MapRecord;

/// The I bit: an xTR-ID and Site-ID follow the records.
pub(crate) const F_I: u32 = 1 << 27;
/// The other 19 bits between the type and the Record Count.
const RESERVED: u32 = 0x07ff_ff00;

/// A Map-Notify, or (with `ack`) a Map-Notify-Ack; the two have the same contents.
///
/// The I bit is not a field: it is set exactly when [`MapNotify::xtr_id`] is `Some`.
///
/// # Panics
/// Emitting panics with more than 255 `records` (the header cannot count them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapNotify {
    /// Type 5 (Map-Notify-Ack) rather than 4 (Map-Notify).
    pub ack: bool,
    /// The acknowledged Map-Register's or Map-Notify's nonce; for unsolicited Map-Notifies, one
    /// the Map-Server increments per publication (pub/sub).
    pub nonce: u64,
    /// Selects the pre-shared secret the MAC was made with.
    pub key_id: u8,
    /// An [`auth::Algorithm`] id.
    pub algorithm_id: u8,
    /// The MAC (its length is the Authentication Data Length), or zeros before signing.
    pub auth_data: Vec<u8>,
    pub records: Vec<MapRecord>,
    /// xTR-ID and Site-ID (I bit, NAT-traversal layout).
    pub xtr_id: Option<XtrId>,
}

impl MapNotify {
    pub const TYPE: u8 = 4;
    pub const TYPE_ACK: u8 = 5;

    /// A Map-Notify (not an Ack) carrying `records`, unsigned and without an xTR-ID.
    pub fn new(nonce: u64, records: Vec<MapRecord>) -> Self {
        MapNotify { ack: false, nonce, key_id: 0, algorithm_id: 0, auth_data: Vec::new(), records, xtr_id: None }
    }

    /// The Map-Notify acknowledging `reg` (sent when its M bit is set): its nonce, records and
    /// Key ID/Algorithm ID, with zeroed Authentication Data of the same length to [`auth::sign`]
    /// (or use [`MapNotify::to_signed_bytes`]). The xTR-ID is not echoed, as RFC 9301 defines no
    /// I bit here; set `xtr_id` to echo it.
    pub fn acknowledging(reg: &MapRegister) -> MapNotify {
        MapNotify {
            ack: false,
            nonce: reg.nonce,
            key_id: reg.key_id,
            algorithm_id: reg.algorithm_id,
            auth_data: vec![0; reg.auth_data.len()],
            records: reg.records.clone(),
            xtr_id: None,
        }
    }

    /// The Map-Notify-Ack for this (unsolicited) Map-Notify: the same contents as type 5, with
    /// zeroed Authentication Data to sign.
    pub fn to_ack(&self) -> MapNotify {
        MapNotify { ack: true, auth_data: vec![0; self.auth_data.len()], ..self.clone() }
    }

    /// 4 or 5.
    pub fn message_type(&self) -> u8 {
        if self.ack {
            Self::TYPE_ACK
        } else {
            Self::TYPE
        }
    }

    /// I: an xTR-ID and Site-ID are included.
    pub fn xtr_id_present(&self) -> bool {
        self.xtr_id.is_some()
    }

    pub fn wire_len(&self) -> usize {
        4 + self.body().wire_len()
    }

    fn body(&self) -> BodyRef<'_> {
        BodyRef {
            nonce: self.nonce,
            key_id: self.key_id,
            algorithm_id: self.algorithm_id,
            auth_data: &self.auth_data,
            records: &self.records,
            xtr_id: self.xtr_id,
        }
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self> {
        let h = r.u32("Map-Notify header")?;
        let ack = check_type((h >> 28) as u8)?;
        r.reserved(h.into(), RESERVED.into());
        let Body { nonce, auth: AuthHeader { key_id, algorithm_id, auth_data }, records, xtr_id } =
            Body::read(r, h, F_I)?;
        Ok(MapNotify { ack, nonce, key_id, algorithm_id, auth_data, records, xtr_id })
    }

    pub(crate) fn write(&self, w: &mut Writer<'_>) {
        self.body().write(w, u32::from(self.message_type()) << 28, F_I);
    }

    /// Sets the authentication fields for `policy` (Key ID, Algorithm ID, zeroed Authentication
    /// Data of the right length), ready to encode and [`auth::sign`].
    pub fn prepare_auth(&mut self, key_id: u8, policy: &SendPolicy) {
        let h = AuthHeader::prepared(key_id, policy);
        (self.key_id, self.algorithm_id, self.auth_data) = (h.key_id, h.algorithm_id, h.auth_data);
    }

    /// Prepares, encodes and signs: the bytes to send. The MAC is also stored in
    /// `self.auth_data`, so `self` describes the bytes exactly.
    pub fn to_signed_bytes(
        &mut self,
        key_id: u8,
        secret: &[u8],
        policy: &SendPolicy,
    ) -> core::result::Result<Vec<u8>, AuthError> {
        self.prepare_auth(key_id, policy);
        let mut bytes = crate::buf::Wire::to_bytes(self);
        auth::sign(&mut bytes, key_id, secret, policy)?;
        map_register::store_mac(&mut self.auth_data, &bytes);
        Ok(bytes)
    }
}

crate::buf::impl_wire!(MapNotify);

/// Accepts types 4 and 5; true for 5.
fn check_type(found: u8) -> Result<bool> {
    match found {
        MapNotify::TYPE => Ok(false),
        MapNotify::TYPE_ACK => Ok(true),
        _ => Err(Error::WrongType { expected: MapNotify::TYPE, found }),
    }
}

/// A zero-copy view of a Map-Notify's or Map-Notify-Ack's fixed header and Authentication Data.
/// Nothing past the Authentication Data is checked.
///
/// # Panics
/// Accessors panic when the view was made with [`MapNotifyPacket::new_unchecked`] over fewer
/// bytes than the fixed 16 and the Authentication Data they announce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapNotifyPacket<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> MapNotifyPacket<T> {
    pub fn new_unchecked(buf: T) -> Self {
        MapNotifyPacket { buf }
    }

    /// Checks the type field (4 or 5) and that the fixed header and the Authentication Data
    /// are present.
    pub fn new_checked(buf: T) -> Result<Self> {
        let b = buf.as_ref();
        if let Some(&first) = b.first() {
            check_type(first >> 4)?;
        }
        map_register::check_view(b, "Map-Notify header")?;
        Ok(MapNotifyPacket { buf })
    }

    pub fn into_inner(self) -> T {
        self.buf
    }

    /// Type 5 (Map-Notify-Ack).
    pub fn is_ack(&self) -> bool {
        self.buf.as_ref()[0] >> 4 == MapNotify::TYPE_ACK
    }

    pub fn xtr_id_present(&self) -> bool {
        fixed::header(self.buf.as_ref()) & F_I != 0
    }

    pub fn record_count(&self) -> u8 {
        self.buf.as_ref()[3]
    }

    pub fn nonce(&self) -> u64 {
        fixed::nonce(self.buf.as_ref())
    }

    pub fn key_id(&self) -> u8 {
        fixed::key_id(self.buf.as_ref())
    }

    pub fn algorithm_id(&self) -> u8 {
        fixed::algorithm_id(self.buf.as_ref())
    }

    pub fn auth_data_len(&self) -> u16 {
        fixed::auth_data_len(self.buf.as_ref())
    }

    pub fn auth_data(&self) -> &[u8] {
        fixed::auth_data(self.buf.as_ref())
    }
}

#[cfg(any(test, feature = "proptest"))]
pub mod strategy {
    //! proptest strategies for Map-Notifies and Map-Notify-Acks.
    use super::*;
    use crate::auth::strategy::auth_header;
    use crate::auth::AuthHeader;
    use crate::map_register::strategy::xtr_id;
    use crate::record::strategy::map_record;
    use proptest::prelude::*;

    pub fn map_notify() -> impl Strategy<Value = MapNotify> {
        (
            any::<bool>(),
            any::<u64>(),
            auth_header(),
            proptest::collection::vec(map_record(), 0..3),
            proptest::option::of(xtr_id()),
        )
            .prop_map(|(ack, nonce, AuthHeader { key_id, algorithm_id, auth_data }, records, xtr_id)| {
                MapNotify { ack, nonce, key_id, algorithm_id, auth_data, records, xtr_id }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::Address;
    use crate::auth::{verify, Algorithm, Coverage, KeyRing, MacLength, Verified};
    use crate::buf::Wire;
    use crate::record::{Action, Locator};
    use proptest::prelude::*;

    const PSK: &[u8] = b"loci-test-key";

    // The MACs below were computed independently with Python (re-run to check):
    //
    // import hmac, hashlib
    // def hkdf(salt, ikm, n):  # RFC 5869 with SHA-256, empty info
    //     prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    //     okm, t, i = b"", b"", 1
    //     while len(okm) < n:
    //         t = hmac.new(prk, t + bytes([i]), hashlib.sha256).digest(); okm += t; i += 1
    //     return okm[:n]
    // rec = bytes.fromhex("000005a0" "01181000" "00000001" "0a010100" "0164ff00" "00050001" "c0000201")
    // xtr = bytes.fromhex("00112233445566778899aabbccddeeff") + (7).to_bytes(8, "big")
    // psk = b"loci-test-key"
    // m = bytes.fromhex("40000001" "0102030405060708" "01030020") + bytes(32) + rec
    // key = hkdf(b"Map-Notify Authentication", m[4:12] + psk, 32)
    // print("notify", hmac.new(key, m, hashlib.sha256).hexdigest())
    // m = bytes.fromhex("58000001" "0102030405060708" "01010014") + bytes(20) + rec + xtr
    // print("ack", hmac.new(psk, m, hashlib.sha1).hexdigest())
    const NOTIFY_MAC: &str = "8e1efcdd2267df84d2be3a892a75b21635f35a860dd7d39b5dd93b7f4a71e401";
    const ACK_MAC: &str = "ecbf2648406ed6f749f4e35e34bbdafb7afa119f";

    /// The record 10.1.1.0/24 -> 192.0.2.1 and its 28 bytes.
    fn record() -> (MapRecord, [u8; 28]) {
        let rec = MapRecord {
            ttl: 1440,
            eid_mask_len: 24,
            action: Action::NO_ACTION,
            authoritative: true,
            map_version: 0,
            eid: Address::Ipv4("10.1.1.0".parse().unwrap()),
            locators: vec![Locator {
                priority: 1,
                weight: 100,
                m_priority: 255,
                m_weight: 0,
                local: true,
                probed: false,
                reachable: true,
                address: Address::Ipv4("192.0.2.1".parse().unwrap()),
            }],
        };
        let bytes = [
            0, 0, 0x05, 0xa0, 1, 24, 0x10, 0, // TTL 1440, 1 locator, /24, A
            0, 0, 0, 1, 10, 1, 1, 0, // version 0, 10.1.1.0
            1, 100, 255, 0, 0, 5, 0, 1, 192, 0, 2, 1, // locator L R 192.0.2.1
        ];
        (rec, bytes)
    }

    /// A Map-Notify signed with HMAC-SHA256-128+HKDF-SHA256 (full MAC), Key ID 1.
    fn golden_notify() -> (MapNotify, Vec<u8>) {
        let mac = hex::decode(NOTIFY_MAC).unwrap();
        let (rec, rec_bytes) = record();
        let n = MapNotify {
            ack: false,
            nonce: 0x0102_0304_0506_0708,
            key_id: 1,
            algorithm_id: 3,
            auth_data: mac.clone(),
            records: vec![rec],
            xtr_id: None,
        };
        let mut bytes = vec![
            0x40, 0, 0, 1, // type 4, 1 record
            1, 2, 3, 4, 5, 6, 7, 8, // nonce
            1, 3, 0, 32, // Key ID 1, algorithm 3, 32 bytes of MAC
        ];
        bytes.extend_from_slice(&mac);
        bytes.extend_from_slice(&rec_bytes);
        (n, bytes)
    }

    /// A Map-Notify-Ack with the I bit and xTR-ID, signed with HMAC-SHA-1 (full MAC), Key ID 1.
    fn golden_ack() -> (MapNotify, Vec<u8>) {
        let mac = hex::decode(ACK_MAC).unwrap();
        let (rec, rec_bytes) = record();
        let n = MapNotify {
            ack: true,
            nonce: 0x0102_0304_0506_0708,
            key_id: 1,
            algorithm_id: 1,
            auth_data: mac.clone(),
            records: vec![rec],
            xtr_id: Some(XtrId { xtr_id: 0x0011_2233_4455_6677_8899_aabb_ccdd_eeff, site_id: 7 }),
        };
        let mut bytes = vec![
            0x58, 0, 0, 1, // type 5, I, 1 record
            1, 2, 3, 4, 5, 6, 7, 8, // nonce
            1, 1, 0, 20, // Key ID 1, HMAC-SHA-1-96, 20 bytes of MAC
        ];
        bytes.extend_from_slice(&mac);
        bytes.extend_from_slice(&rec_bytes);
        bytes.extend_from_slice(&[
            0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, // xTR-ID
            0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, //
            0, 0, 0, 0, 0, 0, 0, 7, // Site-ID
        ]);
        (n, bytes)
    }

    fn verified(algorithm: Algorithm) -> Verified {
        Verified { key_id: 1, algorithm, coverage: Coverage::WholeMessage, length: MacLength::Full }
    }

    #[test]
    fn golden_map_notify() {
        let (n, bytes) = golden_notify();
        assert_eq!(n.to_bytes(), bytes);
        assert_eq!(n.buffer_len(), bytes.len());
        assert_eq!(MapNotify::parse_noting(&bytes).unwrap(), (n.clone(), Default::default()));
        let view = MapNotifyPacket::new_checked(&bytes[..]).unwrap();
        assert!(!view.is_ack() && !view.xtr_id_present());
        assert_eq!((view.record_count(), view.nonce()), (1, 0x0102_0304_0506_0708));
        assert_eq!((view.key_id(), view.algorithm_id(), view.auth_data_len()), (1, 3, 32));
        assert_eq!(view.auth_data(), &n.auth_data[..]);
        let ring = KeyRing::with_key(1, PSK);
        assert_eq!(verify(&bytes, &ring, false), Ok(verified(Algorithm::HmacSha256_128Hkdf)));
        // The same as a Map-Notify-Ack fails: the HKDF salt depends on the type.
        let mut b = bytes.clone();
        b[0] = 0x50;
        assert_eq!(verify(&b, &ring, false), Err(AuthError::Mismatch));
    }

    #[test]
    fn golden_map_notify_ack() {
        let (n, bytes) = golden_ack();
        assert_eq!(n.to_bytes(), bytes);
        assert_eq!(MapNotify::parse_noting(&bytes).unwrap(), (n.clone(), Default::default()));
        let view = MapNotifyPacket::new_checked(&bytes[..]).unwrap();
        assert!(view.is_ack() && view.xtr_id_present());
        assert_eq!((view.key_id(), view.algorithm_id(), view.auth_data()), (1, 1, &n.auth_data[..]));
        assert_eq!(verify(&bytes, &KeyRing::with_key(1, PSK), false), Ok(verified(Algorithm::HmacSha1_96)));
    }

    #[test]
    fn built_from_the_register_and_signed() {
        let (notify, bytes) = golden_notify();
        let reg = MapRegister {
            proxy_reply: false,
            security: false,
            eid_notify: false,
            use_ttl: false,
            merge: false,
            want_map_notify: true,
            nonce: notify.nonce,
            key_id: 1,
            algorithm_id: 3,
            auth_data: vec![0xaa; 32],
            records: notify.records.clone(),
            xtr_id: Some(XtrId { xtr_id: 1, site_id: 2 }),
        };
        let mut n = MapNotify::acknowledging(&reg);
        assert_eq!((n.key_id, n.algorithm_id, &n.auth_data[..]), (1, 3, &[0; 32][..]));
        let policy = SendPolicy { algorithm: Algorithm::HmacSha256_128Hkdf, ..SendPolicy::default() };
        assert_eq!(n.to_signed_bytes(1, PSK, &policy).unwrap(), bytes);
        assert_eq!(n, notify);
        // Its Map-Notify-Ack, with the xTR-ID and HMAC-SHA-1, is the other golden vector.
        let (ack, ack_bytes) = golden_ack();
        let mut a = n.to_ack();
        a.xtr_id = ack.xtr_id;
        let policy = SendPolicy { algorithm: Algorithm::HmacSha1_96, ..SendPolicy::default() };
        assert_eq!(a.to_signed_bytes(1, PSK, &policy).unwrap(), ack_bytes);
        assert_eq!(a, ack);
    }

    #[test]
    fn reserved_bits_are_noted_and_cleared() {
        let (n, bytes) = golden_notify();
        let mut b = bytes.clone();
        b[0] |= 0x07; // the NAT-traversal R bit and two reserved bits
        b[1] = 0xff;
        b[2] = 0xff;
        let (got, notes) = MapNotify::parse_noting(&b).unwrap();
        assert!(notes.reserved_bits);
        assert_eq!(got, n);
        assert_eq!(got.to_bytes(), bytes);
    }

    #[test]
    fn bad_input() {
        let (_, good) = golden_notify();
        let mut b = good.clone();
        b[13] = 4;
        assert_eq!(MapNotify::parse(&b), Err(Error::UnknownAlgorithm { id: 4, at: 13 }));
        let mut b = good.clone();
        b[15] = 12;
        assert_eq!(MapNotify::parse(&b), Err(Error::AuthLength { alg: 3, len: 12, at: 14 }));
        // I bit without xTR-ID and Site-ID.
        let mut b = good.clone();
        b[0] |= 0x08;
        assert_eq!(MapNotify::parse(&b), Err(Error::MissingXtrId { at: good.len() }));
        b.extend_from_slice(&[0; 23]);
        assert_eq!(MapNotify::parse(&b), Err(Error::MissingXtrId { at: good.len() }));
        // Record count too large for the bytes.
        let mut b = good.clone();
        b[3] = 3;
        assert_eq!(MapNotify::parse(&b), Err(Error::CountTooLarge { what: "record", count: 3, at: 48, remaining: 28 }));
        // Other types; short buffers; trailing bytes.
        for (t, found) in [(0x30, 3), (0x60, 6)] {
            let mut b = good.clone();
            b[0] = t;
            assert_eq!(MapNotify::parse(&b), Err(Error::WrongType { expected: 4, found }));
            assert_eq!(MapNotifyPacket::new_checked(&b[..]), Err(Error::WrongType { expected: 4, found }));
        }
        assert_eq!(
            MapNotifyPacket::new_checked(&good[..3]),
            Err(Error::Truncated { what: "Map-Notify header", at: 0, need: 13 })
        );
        assert_eq!(
            MapNotifyPacket::new_checked(&good[..47]),
            Err(Error::Truncated { what: "Authentication Data", at: 16, need: 1 })
        );
        let mut b = good.clone();
        b.push(0);
        assert_eq!(MapNotify::parse(&b), Err(Error::TrailingBytes { len: 1, at: good.len() }));
    }

    /// Checks that `bytes` either fail to parse or, with clean notes, re-emit identically.
    fn check_reemit(bytes: &[u8]) -> std::result::Result<(), TestCaseError> {
        if let Ok((n, notes)) = MapNotify::parse_noting(bytes) {
            prop_assert_eq!(n.wire_len(), bytes.len());
            if notes.is_clean() {
                prop_assert_eq!(n.to_bytes(), bytes);
            }
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn round_trip(n in strategy::map_notify()) {
            let bytes = n.to_bytes();
            prop_assert_eq!(bytes.len(), n.wire_len());
            prop_assert_eq!(MapNotify::parse_noting(&bytes).unwrap(), (n.clone(), Default::default()));
            let view = MapNotifyPacket::new_checked(&bytes[..]).unwrap();
            prop_assert_eq!(view.is_ack(), n.ack);
            prop_assert_eq!(view.nonce(), n.nonce);
            prop_assert_eq!(usize::from(view.record_count()), n.records.len());
            prop_assert_eq!(view.xtr_id_present(), n.xtr_id_present());
            prop_assert_eq!(view.auth_data(), &n.auth_data[..]);
        }

        #[test]
        fn signed_round_trip(n in strategy::map_notify(), policy in crate::auth::strategy::send_policy()) {
            let mut n = n;
            let bytes = n.to_signed_bytes(9, PSK, &policy).unwrap();
            prop_assert_eq!(MapNotify::parse(&bytes).unwrap(), n);
            prop_assert!(verify(&bytes, &KeyRing::with_key(9, PSK), false).is_ok());
        }

        #[test]
        fn random_bytes(ack in any::<bool>(), low in 0u8..16, no_auth in any::<bool>(),
                        mut bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            if let Some(b) = bytes.first_mut() {
                *b = if ack { 0x50 } else { 0x40 } | low;
            }
            // Half the time a valid empty authentication header, so the records get parsed.
            if no_auth && bytes.len() >= 16 {
                bytes[13..16].fill(0);
            }
            check_reemit(&bytes)?;
            if let Ok(view) = MapNotifyPacket::new_checked(&bytes[..]) {
                let _ = (view.nonce(), view.auth_data(), view.is_ack(), view.xtr_id_present());
            }
        }

        #[test]
        fn mutated(n in strategy::map_notify(), at in any::<usize>(), x in 1u8..=255, cut in any::<bool>()) {
            let mut bytes = n.to_bytes();
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
