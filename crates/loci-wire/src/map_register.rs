//! Map-Register (type 3): RFC 9301 §5.6.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Type=3 |P|S|I|        Reserved       |E|T|a|R|M| Record Count  |
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
//! Everything after the first 32-bit word (nonce, [`AuthHeader`], records, xTR-ID) is laid out
//! alike in Map-Notify and Map-Notify-Ack; the code for it lives here and both use it.
//! Authentication (computing and checking the MAC) is in [`crate::auth`].

use crate::auth::{self, AuthError, AuthHeader, SendPolicy};
use crate::buf::{Reader, Writer};
use crate::error::{Error, Result};
use crate::record::MapRecord;

/// Type, flags, Record Count, nonce, Key ID, Algorithm ID and Authentication Data Length: the
/// bytes before the Authentication Data, alike in types 3, 4 and 5.
pub(crate) const FIXED_LEN: usize = 16;

// Bits of the first 32-bit word.
const F_P: u32 = 1 << 27;
const F_S: u32 = 1 << 26;
pub(crate) const F_I: u32 = 1 << 25;
const F_E: u32 = 1 << 12;
const F_T: u32 = 1 << 11;
const F_MERGE: u32 = 1 << 10;
const F_M: u32 = 1 << 8;
/// The 12-bit Reserved field and the unassigned R bit.
const RESERVED: u32 = 0x01ff_e000 | 1 << 9;

pub use crate::map_request::XtrId;

/// A Map-Register.
///
/// The I bit is not a field: it is set exactly when [`MapRegister::xtr_id`] is `Some`.
///
/// # Panics
/// Emitting panics with more than 255 `records` (the header cannot count them): building such a
/// message is a bug in the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapRegister {
    /// P: the Map-Server answers Map-Requests for these EIDs on the ETR's behalf.
    pub proxy_reply: bool,
    /// S: the ETR is LISP-SEC capable (RFC 9303).
    pub security: bool,
    /// E: an EID-notify sent by a first-hop router to a same-site xTR (dynamic EIDs).
    pub eid_notify: bool,
    /// T: time the registration out by the Record TTL instead of the default 3 minutes.
    pub use_ttl: bool,
    /// a: merge the RLOC-records of every xTR registering the same EID-record.
    pub merge: bool,
    /// M: acknowledge with a Map-Notify.
    pub want_map_notify: bool,
    /// Increases with every Map-Register sent (replay protection); echoed in the Map-Notify.
    pub nonce: u64,
    /// Selects the pre-shared secret the MAC was made with.
    pub key_id: u8,
    /// An [`auth::Algorithm`] id.
    pub algorithm_id: u8,
    /// The MAC (its length is the Authentication Data Length), or zeros before signing.
    pub auth_data: Vec<u8>,
    pub records: Vec<MapRecord>,
    /// The sender's xTR-ID and Site-ID (I bit).
    pub xtr_id: Option<XtrId>,
}

impl MapRegister {
    pub const TYPE: u8 = 3;

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
        let h = r.u32("Map-Register header")?;
        check_type((h >> 28) as u8)?;
        r.reserved(h.into(), RESERVED.into());
        let Body { nonce, auth: AuthHeader { key_id, algorithm_id, auth_data }, records, xtr_id } =
            Body::read(r, h, F_I)?;
        Ok(MapRegister {
            proxy_reply: h & F_P != 0,
            security: h & F_S != 0,
            eid_notify: h & F_E != 0,
            use_ttl: h & F_T != 0,
            merge: h & F_MERGE != 0,
            want_map_notify: h & F_M != 0,
            nonce,
            key_id,
            algorithm_id,
            auth_data,
            records,
            xtr_id,
        })
    }

    pub(crate) fn write(&self, w: &mut Writer<'_>) {
        let flag = |set: bool, bit: u32| if set { bit } else { 0 };
        let flags = flag(self.proxy_reply, F_P)
            | flag(self.security, F_S)
            | flag(self.eid_notify, F_E)
            | flag(self.use_ttl, F_T)
            | flag(self.merge, F_MERGE)
            | flag(self.want_map_notify, F_M);
        self.body().write(w, u32::from(Self::TYPE) << 28 | flags, F_I);
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
        store_mac(&mut self.auth_data, &bytes);
        Ok(bytes)
    }
}

crate::buf::impl_wire!(MapRegister);

fn check_type(found: u8) -> Result<()> {
    Error::expect_type(MapRegister::TYPE, found)
}

/// The part after the first 32-bit word, shared by Map-Register, Map-Notify and
/// Map-Notify-Ack (RFC 9301 §5.7: "the same contents"), as decoded; [`BodyRef`] encodes it.
pub(crate) struct Body {
    pub(crate) nonce: u64,
    pub(crate) auth: AuthHeader,
    pub(crate) records: Vec<MapRecord>,
    pub(crate) xtr_id: Option<XtrId>,
}

impl Body {
    /// Reads it given the first word `h` (for the Record Count) and where that message type
    /// keeps its I bit.
    pub(crate) fn read(r: &mut Reader<'_>, h: u32, i_flag: u32) -> Result<Self> {
        let nonce = r.u64("nonce")?;
        let auth = AuthHeader::read(r)?;
        let records = MapRecord::read_list(r, (h & 0xff) as usize)?;
        // The xTR-ID follows the last record.
        let xtr_id = if h & i_flag != 0 { Some(XtrId::read(r)?) } else { None };
        Ok(Body { nonce, auth, records, xtr_id })
    }
}

/// The body of a message to encode, borrowed from its fields.
pub(crate) struct BodyRef<'a> {
    pub(crate) nonce: u64,
    pub(crate) key_id: u8,
    pub(crate) algorithm_id: u8,
    pub(crate) auth_data: &'a [u8],
    pub(crate) records: &'a [MapRecord],
    pub(crate) xtr_id: Option<XtrId>,
}

impl BodyRef<'_> {
    /// Writes the first word (`type_and_flags`, plus the I bit and the Record Count) and the
    /// body.
    pub(crate) fn write(&self, w: &mut Writer<'_>, type_and_flags: u32, i_flag: u32) {
        assert!(self.records.len() <= 255, "a Map-Register or Map-Notify holds at most 255 records");
        let i = if self.xtr_id.is_some() { i_flag } else { 0 };
        w.u32(type_and_flags | i | self.records.len() as u32);
        w.u64(self.nonce);
        AuthHeader::write_parts(w, self.key_id, self.algorithm_id, self.auth_data);
        for rec in self.records {
            rec.write(w);
        }
        if let Some(x) = &self.xtr_id {
            x.write(w);
        }
    }

    /// Length of everything after the first word.
    pub(crate) fn wire_len(&self) -> usize {
        8 + 4
            + self.auth_data.len()
            + self.records.iter().map(MapRecord::wire_len).sum::<usize>()
            + self.xtr_id.map_or(0, |_| XtrId::LEN)
    }
}

/// Copies the MAC of signed `bytes` into `auth_data` (of the MAC's length).
pub(crate) fn store_mac(auth_data: &mut [u8], bytes: &[u8]) {
    auth_data.copy_from_slice(&bytes[auth::AUTH_DATA_AT..auth::AUTH_DATA_AT + auth_data.len()]);
}

/// Checks shared by the Map-Register and Map-Notify views: the fixed 16 bytes, and the
/// Authentication Data they announce, are present.
pub(crate) fn check_view(b: &[u8], what: &'static str) -> Result<()> {
    if b.len() < FIXED_LEN {
        return Err(Error::Truncated { what, at: 0, need: FIXED_LEN - b.len() });
    }
    let end = FIXED_LEN + usize::from(u16::from_be_bytes([b[auth::AUTH_LEN_AT], b[auth::AUTH_LEN_AT + 1]]));
    if b.len() < end {
        return Err(Error::Truncated { what: "Authentication Data", at: FIXED_LEN, need: end - b.len() });
    }
    Ok(())
}

/// Fixed-field accessors shared by the Map-Register and Map-Notify views.
pub(crate) mod fixed {
    use super::FIXED_LEN;
    use crate::auth::{ALGORITHM_ID_AT, AUTH_DATA_AT, AUTH_LEN_AT, KEY_ID_AT};

    pub(crate) fn header(b: &[u8]) -> u32 {
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    pub(crate) fn nonce(b: &[u8]) -> u64 {
        let mut n = [0u8; 8];
        n.copy_from_slice(&b[4..KEY_ID_AT]);
        u64::from_be_bytes(n)
    }

    pub(crate) fn key_id(b: &[u8]) -> u8 {
        b[KEY_ID_AT]
    }

    pub(crate) fn algorithm_id(b: &[u8]) -> u8 {
        b[ALGORITHM_ID_AT]
    }

    pub(crate) fn auth_data_len(b: &[u8]) -> u16 {
        u16::from_be_bytes([b[AUTH_LEN_AT], b[AUTH_LEN_AT + 1]])
    }

    pub(crate) fn auth_data(b: &[u8]) -> &[u8] {
        &b[AUTH_DATA_AT..FIXED_LEN + usize::from(auth_data_len(b))]
    }
}

/// A zero-copy view of a Map-Register's fixed header and Authentication Data, for fast paths
/// (a Map-Server checking the MAC and nonce before decoding the records). Nothing past the
/// Authentication Data is checked.
///
/// # Panics
/// Accessors panic when the view was made with [`MapRegisterPacket::new_unchecked`] over fewer
/// bytes than the fixed 16 and the Authentication Data they announce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapRegisterPacket<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> MapRegisterPacket<T> {
    pub fn new_unchecked(buf: T) -> Self {
        MapRegisterPacket { buf }
    }

    /// Checks the type field and that the fixed header and the Authentication Data are present.
    pub fn new_checked(buf: T) -> Result<Self> {
        let b = buf.as_ref();
        if let Some(&first) = b.first() {
            check_type(first >> 4)?;
        }
        check_view(b, "Map-Register header")?;
        Ok(MapRegisterPacket { buf })
    }

    pub fn into_inner(self) -> T {
        self.buf
    }

    fn header(&self) -> u32 {
        fixed::header(self.buf.as_ref())
    }

    pub fn proxy_reply(&self) -> bool {
        self.header() & F_P != 0
    }

    pub fn security(&self) -> bool {
        self.header() & F_S != 0
    }

    pub fn xtr_id_present(&self) -> bool {
        self.header() & F_I != 0
    }

    pub fn eid_notify(&self) -> bool {
        self.header() & F_E != 0
    }

    pub fn use_ttl(&self) -> bool {
        self.header() & F_T != 0
    }

    pub fn merge(&self) -> bool {
        self.header() & F_MERGE != 0
    }

    pub fn want_map_notify(&self) -> bool {
        self.header() & F_M != 0
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
    //! proptest strategies for Map-Registers.
    use super::*;
    use crate::auth::strategy::auth_header;
    use crate::record::strategy::map_record;
    use proptest::prelude::*;

    pub use crate::map_request::strategy::xtr_id;

    pub fn map_register() -> impl Strategy<Value = MapRegister> {
        (
            any::<[bool; 6]>(),
            any::<u64>(),
            auth_header(),
            proptest::collection::vec(map_record(), 0..3),
            proptest::option::of(xtr_id()),
        )
            .prop_map(|(f, nonce, AuthHeader { key_id, algorithm_id, auth_data }, records, xtr_id)| {
                MapRegister {
                    proxy_reply: f[0],
                    security: f[1],
                    eid_notify: f[2],
                    use_ttl: f[3],
                    merge: f[4],
                    want_map_notify: f[5],
                    nonce,
                    key_id,
                    algorithm_id,
                    auth_data,
                    records,
                    xtr_id,
                }
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

    fn v4(s: &str) -> Address {
        Address::Ipv4(s.parse().unwrap())
    }

    pub(crate) fn record() -> MapRecord {
        MapRecord {
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
        }
    }

    /// The Map-Register of the auth known-answer tests, signed with HMAC-SHA-256 (full MAC,
    /// whole message) under Key ID 1 and the secret "loci-test-key".
    fn golden() -> (MapRegister, Vec<u8>) {
        let mac = hex::decode("643e9e39d43959a0ad1439784e8f64f0530f877218e9e6fba8c1029157613643").unwrap();
        let reg = MapRegister {
            proxy_reply: true,
            security: false,
            eid_notify: false,
            use_ttl: false,
            merge: false,
            want_map_notify: true,
            nonce: 0x0102_0304_0506_0708,
            key_id: 1,
            algorithm_id: 2,
            auth_data: mac.clone(),
            records: vec![record()],
            xtr_id: Some(XtrId { xtr_id: 0x0011_2233_4455_6677_8899_aabb_ccdd_eeff, site_id: 7 }),
        };
        let mut bytes = vec![
            0x3a, 0x00, 0x01, 0x01, // type 3, P, I; M; 1 record
            1, 2, 3, 4, 5, 6, 7, 8, // nonce
            1, 2, 0, 32, // Key ID 1, HMAC-SHA-256-128, 32 bytes of MAC
        ];
        bytes.extend_from_slice(&mac);
        bytes.extend_from_slice(&[
            0, 0, 0x05, 0xa0, 1, 24, 0x10, 0, // TTL 1440, 1 locator, /24, A
            0, 0, 0, 1, 10, 1, 1, 0, // version 0, 10.1.1.0
            1, 100, 255, 0, 0, 5, 0, 1, 192, 0, 2, 1, // locator L R 192.0.2.1
            0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, // xTR-ID
            0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, //
            0, 0, 0, 0, 0, 0, 0, 7, // Site-ID
        ]);
        (reg, bytes)
    }

    #[test]
    fn golden_vector() {
        let (reg, bytes) = golden();
        assert_eq!(reg.to_bytes(), bytes);
        assert_eq!(reg.buffer_len(), bytes.len());
        assert_eq!(MapRegister::parse_noting(&bytes).unwrap(), (reg.clone(), Default::default()));
        let view = MapRegisterPacket::new_checked(&bytes[..]).unwrap();
        assert!(view.proxy_reply() && view.xtr_id_present() && view.want_map_notify());
        assert!(!view.security() && !view.eid_notify() && !view.use_ttl() && !view.merge());
        assert_eq!((view.record_count(), view.nonce()), (1, 0x0102_0304_0506_0708));
        assert_eq!((view.key_id(), view.algorithm_id(), view.auth_data_len()), (1, 2, 32));
        assert_eq!(view.auth_data(), &reg.auth_data[..]);
        let ring = KeyRing::with_key(1, b"loci-test-key".to_vec());
        let ok = Verified {
            key_id: 1,
            algorithm: Algorithm::HmacSha256_128,
            coverage: Coverage::WholeMessage,
            length: MacLength::Full,
        };
        assert_eq!(verify(&bytes, &ring, false), Ok(ok));
        // Building and signing from scratch gives the same bytes.
        let mut fresh = MapRegister { key_id: 0, algorithm_id: 0, auth_data: vec![], ..reg.clone() };
        assert_eq!(fresh.to_signed_bytes(1, b"loci-test-key", &SendPolicy::default()).unwrap(), bytes);
        assert_eq!(fresh, reg);
    }

    #[test]
    fn every_flag() {
        let (mut reg, _) = golden();
        reg.security = true;
        reg.eid_notify = true;
        reg.use_ttl = true;
        reg.merge = true;
        reg.xtr_id = None;
        (reg.key_id, reg.algorithm_id, reg.auth_data) = (0, 0, vec![]);
        let bytes = reg.to_bytes();
        assert_eq!(&bytes[..4], [0x3c, 0x00, 0x1d, 0x01]);
        assert_eq!(&bytes[12..16], [0, 0, 0, 0]);
        assert_eq!(MapRegister::parse(&bytes).unwrap(), reg);
        let view = MapRegisterPacket::new_unchecked(&bytes);
        assert!(view.security() && view.eid_notify() && view.use_ttl() && view.merge() && !view.xtr_id_present());
        assert!(view.auth_data().is_empty());
    }

    #[test]
    fn reserved_bits_are_noted_and_cleared() {
        let (reg, bytes) = golden();
        let mut b = bytes.clone();
        b[0] |= 0x01; // top of Reserved
        b[1] = 0xff;
        b[2] |= 0xe2; // bottom of Reserved and R
        let (got, notes) = MapRegister::parse_noting(&b).unwrap();
        assert!(notes.reserved_bits);
        assert_eq!(got, reg);
        assert_eq!(got.to_bytes(), bytes);
    }

    #[test]
    fn bad_input() {
        let (_, good) = golden();
        // Unknown Algorithm ID.
        let mut b = good.clone();
        b[13] = 7;
        assert_eq!(MapRegister::parse(&b), Err(Error::UnknownAlgorithm { id: 7, at: 13 }));
        // Authentication Data Length that fits neither MAC of the algorithm.
        let mut b = good.clone();
        b[15] = 20;
        assert_eq!(MapRegister::parse(&b), Err(Error::AuthLength { alg: 2, len: 20, at: 14 }));
        b[13] = 0;
        assert_eq!(MapRegister::parse(&b), Err(Error::AuthLength { alg: 0, len: 20, at: 14 }));
        // The truncated MAC length is fine (the data is then read as 16 bytes, the rest is off).
        b[13] = 2;
        b[15] = 16;
        assert!(!matches!(MapRegister::parse(&b), Err(Error::AuthLength { .. })));
        // I bit without xTR-ID and Site-ID, or with part of them.
        let cut = good.len() - XtrId::LEN;
        assert_eq!(MapRegister::parse(&good[..cut]), Err(Error::MissingXtrId { at: cut }));
        assert_eq!(MapRegister::parse(&good[..good.len() - 1]), Err(Error::MissingXtrId { at: cut }));
        // Record count larger than the bytes can hold (12 bytes at least each).
        let mut b = good.clone();
        b[3] = 9;
        assert_eq!(
            MapRegister::parse(&b),
            Err(Error::CountTooLarge { what: "record", count: 9, at: 48, remaining: 52 })
        );
        // A count that fits the minimum size: the second record is read from the xTR-ID.
        b[3] = 2;
        assert!(MapRegister::parse(&b).is_err());
        // Wrong type, short buffers, trailing bytes.
        let mut b = good.clone();
        b[0] = 0x4a;
        assert_eq!(MapRegister::parse(&b), Err(Error::WrongType { expected: 3, found: 4 }));
        assert_eq!(MapRegisterPacket::new_checked(&b[..]), Err(Error::WrongType { expected: 3, found: 4 }));
        assert_eq!(
            MapRegisterPacket::new_checked(&good[..10]),
            Err(Error::Truncated { what: "Map-Register header", at: 0, need: 6 })
        );
        assert_eq!(
            MapRegisterPacket::new_checked(&good[..40]),
            Err(Error::Truncated { what: "Authentication Data", at: 16, need: 8 })
        );
        assert!(matches!(MapRegister::parse(&good[..30]), Err(Error::Truncated { what: "Authentication Data", .. })));
        let mut b = good.clone();
        b.push(0);
        assert_eq!(MapRegister::parse(&b), Err(Error::TrailingBytes { len: 1, at: good.len() }));
    }

    #[test]
    #[should_panic(expected = "255 records")]
    fn too_many_records_is_a_caller_bug() {
        let (mut reg, _) = golden();
        reg.records = vec![record(); 256];
        reg.to_bytes();
    }

    /// Checks that `bytes` either fail to parse or, with clean notes, re-emit identically.
    fn check_reemit(bytes: &[u8]) -> std::result::Result<(), TestCaseError> {
        if let Ok((reg, notes)) = MapRegister::parse_noting(bytes) {
            prop_assert_eq!(reg.wire_len(), bytes.len());
            if notes.is_clean() {
                prop_assert_eq!(reg.to_bytes(), bytes);
            }
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn round_trip(reg in strategy::map_register()) {
            let bytes = reg.to_bytes();
            prop_assert_eq!(bytes.len(), reg.wire_len());
            prop_assert_eq!(MapRegister::parse_noting(&bytes).unwrap(), (reg.clone(), Default::default()));
            let view = MapRegisterPacket::new_checked(&bytes[..]).unwrap();
            prop_assert_eq!(view.nonce(), reg.nonce);
            prop_assert_eq!(usize::from(view.record_count()), reg.records.len());
            prop_assert_eq!(view.xtr_id_present(), reg.xtr_id_present());
            prop_assert_eq!((view.key_id(), view.algorithm_id()), (reg.key_id, reg.algorithm_id));
            prop_assert_eq!(view.auth_data(), &reg.auth_data[..]);
        }

        #[test]
        fn signed_round_trip(reg in strategy::map_register(), policy in crate::auth::strategy::send_policy(),
                             key_id in any::<u8>()) {
            let mut reg = reg;
            let bytes = reg.to_signed_bytes(key_id, b"secret", &policy).unwrap();
            prop_assert_eq!(MapRegister::parse(&bytes).unwrap(), reg);
            let v = verify(&bytes, &KeyRing::with_key(key_id, b"secret".to_vec()), false).unwrap();
            prop_assert_eq!((v.algorithm, v.length), (policy.algorithm, policy.length));
        }

        #[test]
        fn random_bytes(low in 0u8..16, no_auth in any::<bool>(),
                        mut bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            if let Some(b) = bytes.first_mut() {
                *b = 0x30 | low;
            }
            // Half the time a valid empty authentication header, so the records get parsed.
            if no_auth && bytes.len() >= FIXED_LEN {
                bytes[13..16].fill(0);
            }
            check_reemit(&bytes)?;
            if let Ok(view) = MapRegisterPacket::new_checked(&bytes[..]) {
                let _ = (view.nonce(), view.auth_data(), view.record_count());
            }
        }

        #[test]
        fn mutated(reg in strategy::map_register(), at in any::<usize>(), x in 1u8..=255, cut in any::<bool>()) {
            let mut bytes = reg.to_bytes();
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
