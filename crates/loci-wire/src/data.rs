//! The LISP data-plane header (RFC 9300 §5.3): the 8 bytes after the outer UDP header of every
//! encapsulated packet (UDP port 4341).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |N|L|E|V|I|R|K|K|            Nonce/Map-Version                  |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                 Instance ID/Locator-Status-Bits               |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//!
//! With V set (and N clear) the first word carries two 12-bit map versions:
//! |N|L|E|V|I|R|K|K|  Source Map-Version   |   Dest Map-Version    |
//!
//! With I set the second word is an instance ID and 8 locator-status bits:
//! |                 Instance ID                   |     LSBs      |
//! ```
//!
//! This is the fast path: [`DataHeader`] reads and writes the fields in place, and
//! [`DataHeaderRepr`] is a small `Copy` value decoded from and encoded into a fixed
//! `[u8; 8]`. Nothing here allocates.
//!
//! Tolerated oddities ([`Notes`]): N and V both set (the field is read as a nonce), E without
//! N (E is ignored), the R bit, and bits the flags say are unused but were not zero (a
//! non-zero Nonce/Map-Version with N and V clear, non-zero LSBs with I set and L clear, a
//! non-zero second word with L and I clear). Each is ignored and sent as zero on re-emit.
//!
//! The KK bits are not reserved: RFC 8061 uses them as the key ID of an encrypted packet, so
//! they are kept in [`DataHeaderRepr::key_id`] and re-emitted as received (0 = not encrypted).

use crate::buf::{Reader, Writer};
use crate::error::{Error, Notes, Result};

/// UDP port of LISP-encapsulated data packets.
pub const LISP_DATA_PORT: u16 = 4341;
/// UDP port of LISP control messages.
pub const LISP_CONTROL_PORT: u16 = 4342;
/// Length of the LISP data header.
pub const HEADER_LEN: usize = 8;
/// Bytes an IPv4 outer header adds to a packet: IPv4 (20) + UDP (8) + LISP (8).
pub const ENCAP_OVERHEAD_V4: usize = 36;
/// Bytes an IPv6 outer header adds to a packet: IPv6 (40) + UDP (8) + LISP (8).
pub const ENCAP_OVERHEAD_V6: usize = 56;

/// Bits of the first byte.
pub mod flags {
    /// N: the nonce is present.
    pub const NONCE: u8 = 0x80;
    /// L: the locator-status bits are in use.
    pub const LSB: u8 = 0x40;
    /// E: echo-nonce request (meaningful only with N).
    pub const ECHO_NONCE: u8 = 0x20;
    /// V: map versions are present (only without N).
    pub const MAP_VERSION: u8 = 0x10;
    /// I: the second word carries an instance ID.
    pub const INSTANCE_ID: u8 = 0x08;
    /// R: reserved.
    pub const RESERVED: u8 = 0x04;
    /// KK: RFC 8061 key ID (0 = not encrypted).
    pub const KEY_ID: u8 = 0x03;
}

/// A zero-copy view of a LISP data header at the start of `buffer` (the UDP payload); the
/// inner packet follows it ([`DataHeader::payload`]).
///
/// Accessors panic if the buffer is shorter than [`HEADER_LEN`]; [`DataHeader::new_checked`]
/// rules that out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataHeader<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> DataHeader<T> {
    /// Wraps a buffer without checking its length.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        DataHeader { buffer }
    }

    /// Wraps a buffer, failing with [`Error::Truncated`] when it cannot hold the header.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let len = buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated { what: "LISP data header", at: len, need: HEADER_LEN - len });
        }
        Ok(DataHeader { buffer })
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    fn word(&self, i: usize) -> u32 {
        let b = self.buffer.as_ref();
        u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
    }

    /// The flag byte (N L E V I R K K).
    #[inline]
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[0]
    }

    /// N: a nonce is present.
    #[inline]
    pub fn nonce_present(&self) -> bool {
        self.flags() & flags::NONCE != 0
    }

    /// L: the locator-status bits are in use.
    #[inline]
    pub fn lsb_enabled(&self) -> bool {
        self.flags() & flags::LSB != 0
    }

    /// E: the sender asks for its nonce to be echoed (ignore when N is clear).
    #[inline]
    pub fn echo_nonce_request(&self) -> bool {
        self.flags() & flags::ECHO_NONCE != 0
    }

    /// V: map versions are present (ignore when N is also set).
    #[inline]
    pub fn map_version_present(&self) -> bool {
        self.flags() & flags::MAP_VERSION != 0
    }

    /// I: the second word carries an instance ID.
    #[inline]
    pub fn instance_id_present(&self) -> bool {
        self.flags() & flags::INSTANCE_ID != 0
    }

    /// The 2-bit RFC 8061 key ID (0 when the packet is not encrypted).
    #[inline]
    pub fn key_id(&self) -> u8 {
        self.flags() & flags::KEY_ID
    }

    /// The low 24 bits of the first word, read as a nonce.
    #[inline]
    pub fn nonce(&self) -> u32 {
        self.word(0) & 0x00ff_ffff
    }

    /// The source map version (bits 8..20), meaningful when V is set and N is clear.
    #[inline]
    pub fn source_map_version(&self) -> u16 {
        (self.word(0) >> 12) as u16 & 0x0fff
    }

    /// The destination map version (bits 20..32), meaningful when V is set and N is clear.
    #[inline]
    pub fn dest_map_version(&self) -> u16 {
        self.word(0) as u16 & 0x0fff
    }

    /// The whole second word.
    #[inline]
    pub fn second_word(&self) -> u32 {
        self.word(4)
    }

    /// The 24-bit instance ID, meaningful when I is set.
    #[inline]
    pub fn instance_id(&self) -> u32 {
        self.word(4) >> 8
    }

    /// The locator-status bits: 8 bits when I is set, else 32. Meaningful when L is set.
    #[inline]
    pub fn lsb(&self) -> u32 {
        if self.instance_id_present() {
            self.word(4) & 0xff
        } else {
            self.word(4)
        }
    }

    /// The inner packet after the header.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> DataHeader<T> {
    #[inline]
    fn set_word(&mut self, i: usize, v: u32) {
        self.buffer.as_mut()[i..i + 4].copy_from_slice(&v.to_be_bytes());
    }

    /// Sets the whole flag byte.
    #[inline]
    pub fn set_flags(&mut self, v: u8) {
        self.buffer.as_mut()[0] = v;
    }

    /// Writes a 24-bit nonce (higher bits are dropped); flags are left alone.
    #[inline]
    pub fn set_nonce(&mut self, nonce: u32) {
        self.buffer.as_mut()[1..4].copy_from_slice(&nonce.to_be_bytes()[1..]);
    }

    /// Writes the two 12-bit map versions (higher bits are dropped); flags are left alone.
    #[inline]
    pub fn set_map_versions(&mut self, source: u16, dest: u16) {
        self.set_nonce(u32::from(source & 0x0fff) << 12 | u32::from(dest & 0x0fff));
    }

    /// Writes the whole second word.
    #[inline]
    pub fn set_second_word(&mut self, v: u32) {
        self.set_word(4, v);
    }

    /// Writes a 24-bit instance ID, keeping the 8 LSBs; flags are left alone.
    #[inline]
    pub fn set_instance_id(&mut self, iid: u32) {
        let w = self.word(4);
        self.set_word(4, (iid & 0x00ff_ffff) << 8 | (w & 0xff));
    }

    /// Writes the locator-status bits: the low 8 bits when I is set (the instance ID is kept),
    /// else the whole second word.
    #[inline]
    pub fn set_lsb(&mut self, lsb: u32) {
        if self.instance_id_present() {
            let w = self.word(4);
            self.set_word(4, (w & !0xff) | (lsb & 0xff));
        } else {
            self.set_word(4, lsb);
        }
    }

    /// The inner packet after the header, writable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }
}

/// The decoded data header.
///
/// Legal values (every one round-trips through [`DataHeaderRepr::to_array`] and
/// [`DataHeaderRepr::from_array`]): at most one of `nonce` and `map_version`; `nonce` and
/// `instance_id` below 2^24; map versions below 2^12; `lsb` below 2^8 when `instance_id` is
/// set; `echo_nonce_request` only with a nonce; `key_id` below 4. Encoding drops bits beyond
/// a field's width and, for the illegal combinations, writes what a receiver would read: the
/// nonce wins over map versions, and E is not sent without N.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct DataHeaderRepr {
    /// N: the 24-bit nonce.
    pub nonce: Option<u32>,
    /// E: ask the peer to echo the nonce (only with a nonce).
    pub echo_nonce_request: bool,
    /// V: (source, destination) 12-bit map versions (RFC 9302).
    pub map_version: Option<(u16, u16)>,
    /// L: locator-status bits; 32 bits, or 8 when an instance ID is present.
    pub lsb: Option<u32>,
    /// I: the 24-bit instance ID.
    pub instance_id: Option<u32>,
    /// KK: the RFC 8061 key ID (0 = not encrypted).
    pub key_id: u8,
}

impl DataHeaderRepr {
    #[inline]
    pub const fn wire_len(&self) -> usize {
        HEADER_LEN
    }

    /// Decodes a header from its 8 bytes. Never fails: every bit pattern means something.
    #[inline]
    pub fn from_array(b: &[u8; HEADER_LEN]) -> (Self, Notes) {
        let f = b[0];
        let first = u32::from_be_bytes([0, b[1], b[2], b[3]]);
        let second = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
        let (n, l, e, v, i) = (
            f & flags::NONCE != 0,
            f & flags::LSB != 0,
            f & flags::ECHO_NONCE != 0,
            f & flags::MAP_VERSION != 0,
            f & flags::INSTANCE_ID != 0,
        );
        let mut notes = Notes {
            reserved_bits: f & flags::RESERVED != 0,
            // RFC 9300 §5.3: both set -> the field holds a nonce.
            nonce_and_version: n && v,
            // RFC 9300 §5.3: E without N is ignored.
            echo_without_nonce: e && !n,
        };
        // Unused fields must be zero; anything else is ignored (and sent as zero).
        if (!n && !v && first != 0) || (!l && second & if i { 0xff } else { u32::MAX } != 0) {
            notes.reserved_bits = true;
        }
        let repr = DataHeaderRepr {
            nonce: n.then_some(first),
            echo_nonce_request: n && e,
            map_version: (v && !n).then_some(((first >> 12) as u16, first as u16 & 0x0fff)),
            lsb: l.then_some(if i { second & 0xff } else { second }),
            instance_id: i.then_some(second >> 8),
            key_id: f & flags::KEY_ID,
        };
        (repr, notes)
    }

    /// Encodes the header into its 8 bytes.
    #[inline]
    pub fn to_array(&self) -> [u8; HEADER_LEN] {
        let mut f = self.key_id & flags::KEY_ID;
        let first = match (self.nonce, self.map_version) {
            (Some(nonce), _) => {
                f |= flags::NONCE;
                if self.echo_nonce_request {
                    f |= flags::ECHO_NONCE;
                }
                nonce & 0x00ff_ffff
            }
            (None, Some((src, dst))) => {
                f |= flags::MAP_VERSION;
                u32::from(src & 0x0fff) << 12 | u32::from(dst & 0x0fff)
            }
            (None, None) => 0,
        };
        let lsb = self.lsb.unwrap_or(0);
        if self.lsb.is_some() {
            f |= flags::LSB;
        }
        let second = match self.instance_id {
            Some(iid) => {
                f |= flags::INSTANCE_ID;
                (iid & 0x00ff_ffff) << 8 | (lsb & 0xff)
            }
            None => lsb,
        };
        let [_, a, b, c] = first.to_be_bytes();
        let [d, e, g, h] = second.to_be_bytes();
        [f, a, b, c, d, e, g, h]
    }

    /// Decodes the header a view points at.
    #[inline]
    pub fn from_header<T: AsRef<[u8]>>(h: &DataHeader<T>) -> (Self, Notes) {
        let b = h.buffer.as_ref();
        Self::from_array(&[b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
    }

    /// Writes the header into the view's buffer; the payload is left alone.
    #[inline]
    pub fn emit_header<T: AsRef<[u8]> + AsMut<[u8]>>(&self, h: &mut DataHeader<T>) {
        h.buffer.as_mut()[..HEADER_LEN].copy_from_slice(&self.to_array());
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self> {
        let (repr, notes) = Self::from_array(&r.array("LISP data header")?);
        r.notes.reserved_bits |= notes.reserved_bits;
        r.notes.nonce_and_version |= notes.nonce_and_version;
        r.notes.echo_without_nonce |= notes.echo_without_nonce;
        Ok(repr)
    }

    pub(crate) fn write(&self, w: &mut Writer<'_>) {
        w.bytes(&self.to_array());
    }
}

crate::buf::impl_wire!(DataHeaderRepr);

#[cfg(any(test, feature = "proptest"))]
pub mod strategy {
    //! proptest strategies for data headers.
    use super::*;
    use proptest::prelude::*;

    /// Any legal data header.
    pub fn data_header() -> impl Strategy<Value = DataHeaderRepr> {
        let first = prop_oneof![
            Just((None, false, None)),
            (0u32..1 << 24, any::<bool>()).prop_map(|(n, e)| (Some(n), e, None)),
            (0u16..1 << 12, 0u16..1 << 12).prop_map(|v| (None, false, Some(v))),
        ];
        let second = prop_oneof![
            Just((None, None)),
            any::<u32>().prop_map(|l| (Some(l), None)),
            (0u32..1 << 24).prop_map(|i| (None, Some(i))),
            (any::<u8>(), 0u32..1 << 24).prop_map(|(l, i)| (Some(u32::from(l)), Some(i))),
        ];
        (first, second, 0u8..4).prop_map(|((nonce, echo_nonce_request, map_version), (lsb, instance_id), key_id)| {
            DataHeaderRepr { nonce, echo_nonce_request, map_version, lsb, instance_id, key_id }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buf::Wire;
    use proptest::prelude::*;

    #[test]
    fn constants() {
        assert_eq!(ENCAP_OVERHEAD_V4, 20 + 8 + HEADER_LEN);
        assert_eq!(ENCAP_OVERHEAD_V6, 40 + 8 + HEADER_LEN);
    }

    #[test]
    fn golden_nonce_iid_lsb() {
        let bytes = [
            0xc9, // N L . . I . K=01
            0x12, 0x34, 0x56, // nonce 0x123456
            0x00, 0xab, 0xcd, // instance ID 0xabcd
            0x05, // LSBs: locators 0 and 2 up
        ];
        let repr = DataHeaderRepr {
            nonce: Some(0x12_3456),
            lsb: Some(5),
            instance_id: Some(0xabcd),
            key_id: 1,
            ..Default::default()
        };
        assert_eq!(repr.to_bytes(), bytes);
        assert_eq!(DataHeaderRepr::parse_noting(&bytes), Ok((repr, Notes::default())));

        let h = DataHeader::new_checked(&bytes[..]).unwrap();
        assert!(h.nonce_present() && h.lsb_enabled() && h.instance_id_present());
        assert!(!h.echo_nonce_request() && !h.map_version_present());
        assert_eq!((h.nonce(), h.instance_id(), h.lsb(), h.key_id()), (0x12_3456, 0xabcd, 5, 1));
        assert_eq!(DataHeaderRepr::from_header(&h), (repr, Notes::default()));
    }

    #[test]
    fn golden_versions_and_lsb32() {
        let bytes = [
            0x50, // . L . V
            0x00, 0x10, 0x02, // source version 1, destination version 2
            0x80, 0x00, 0x00, 0x01, // 32 LSBs
        ];
        let repr = DataHeaderRepr { map_version: Some((1, 2)), lsb: Some(0x8000_0001), ..Default::default() };
        assert_eq!(repr.to_bytes(), bytes);
        assert_eq!(DataHeaderRepr::parse(&bytes), Ok(repr));
        let h = DataHeader::new_unchecked(&bytes);
        assert_eq!((h.source_map_version(), h.dest_map_version(), h.lsb()), (1, 2, 0x8000_0001));

        // Echo-nonce request.
        let repr = DataHeaderRepr { nonce: Some(7), echo_nonce_request: true, ..Default::default() };
        assert_eq!(repr.to_array(), [0xa0, 0, 0, 7, 0, 0, 0, 0]);
    }

    #[test]
    fn view_setters() {
        let mut buf = [0u8; 12];
        buf[8..].copy_from_slice(b"data");
        let mut h = DataHeader::new_checked(&mut buf[..]).unwrap();
        h.set_flags(flags::NONCE | flags::LSB | flags::INSTANCE_ID);
        h.set_nonce(0xff12_3456);
        h.set_instance_id(0x0102_0304);
        h.set_lsb(0x1ff);
        assert_eq!(h.payload(), b"data");
        h.payload_mut()[0] = b'D';
        let (repr, notes) = DataHeaderRepr::from_header(&h);
        assert!(notes.is_clean());
        assert_eq!(repr.nonce, Some(0x12_3456));
        assert_eq!(repr.instance_id, Some(0x02_0304));
        assert_eq!(repr.lsb, Some(0xff));
        h.set_map_versions(0xfff, 0x123);
        assert_eq!((h.source_map_version(), h.dest_map_version()), (0xfff, 0x123));
        h.set_second_word(0xdead_beef);
        assert_eq!(h.second_word(), 0xdead_beef);

        let mut out = [0u8; 10];
        let mut h = DataHeader::new_unchecked(&mut out[..]);
        DataHeaderRepr { instance_id: Some(9), ..Default::default() }.emit_header(&mut h);
        assert_eq!(out, [0x08, 0, 0, 0, 0, 0, 9, 0, 0, 0]);
    }

    #[test]
    fn tolerated_oddities() {
        // N and V both set: nonce.
        let (repr, notes) = DataHeaderRepr::parse_noting(&[0x90, 0, 0x10, 0x02, 0, 0, 0, 0]).unwrap();
        assert_eq!(repr, DataHeaderRepr { nonce: Some(0x1002), ..Default::default() });
        assert_eq!(notes, Notes { nonce_and_version: true, ..Default::default() });

        // E without N: ignored.
        let (repr, notes) = DataHeaderRepr::parse_noting(&[0x20, 0, 0, 0, 0, 0, 0, 0]).unwrap();
        assert_eq!(repr, DataHeaderRepr::default());
        assert_eq!(notes, Notes { echo_without_nonce: true, ..Default::default() });

        // E with V but not N: still ignored.
        let (repr, notes) = DataHeaderRepr::parse_noting(&[0x30, 0, 0x10, 0x01, 0, 0, 0, 0]).unwrap();
        assert_eq!(repr, DataHeaderRepr { map_version: Some((1, 1)), ..Default::default() });
        assert!(notes.echo_without_nonce && !notes.reserved_bits);

        // R bit.
        let (repr, notes) = DataHeaderRepr::parse_noting(&[0x84, 0, 0, 1, 0, 0, 0, 0]).unwrap();
        assert_eq!(repr, DataHeaderRepr { nonce: Some(1), ..Default::default() });
        assert_eq!(notes, Notes { reserved_bits: true, ..Default::default() });
        assert_eq!(repr.to_array(), [0x80, 0, 0, 1, 0, 0, 0, 0]);

        // KK is a key ID, not reserved.
        let (repr, notes) = DataHeaderRepr::parse_noting(&[0x03, 0, 0, 0, 0, 0, 0, 0]).unwrap();
        assert_eq!((repr.key_id, notes.is_clean()), (3, true));

        // Non-zero fields the flags say are unused.
        for (b, clean) in [
            ([0, 0, 0, 1, 0, 0, 0, 0], [0; 8]),
            ([0, 0, 0, 0, 0, 0, 1, 0], [0; 8]),
            ([0x08, 0, 0, 0, 0, 0, 0, 1], [0x08, 0, 0, 0, 0, 0, 0, 0]),
        ] {
            let (repr, notes) = DataHeaderRepr::parse_noting(&b).unwrap();
            assert_eq!(notes, Notes { reserved_bits: true, ..Default::default() }, "{b:?}");
            assert_eq!(repr.to_array(), clean, "{b:?}");
        }
        // With I set and L clear the LSBs are ignored but the IID is kept.
        let (repr, _) = DataHeaderRepr::parse_noting(&[0x08, 0, 0, 0, 0, 0, 2, 1]).unwrap();
        assert_eq!(repr, DataHeaderRepr { instance_id: Some(2), ..Default::default() });
    }

    #[test]
    fn bad_input() {
        assert_eq!(
            DataHeader::new_checked(&[0u8; 5][..]),
            Err(Error::Truncated { what: "LISP data header", at: 5, need: 3 })
        );
        assert!(matches!(DataHeaderRepr::parse(&[0; 7]), Err(Error::Truncated { at: 0, need: 1, .. })));
        assert_eq!(DataHeaderRepr::parse(&[0; 9]), Err(Error::TrailingBytes { len: 1, at: 8 }));
    }

    proptest! {
        #[test]
        fn round_trip(repr in strategy::data_header()) {
            let bytes = repr.to_bytes();
            prop_assert_eq!(DataHeaderRepr::parse_noting(&bytes), Ok((repr, Notes::default())));
            let h = DataHeader::new_checked(&bytes).unwrap();
            prop_assert_eq!(DataHeaderRepr::from_header(&h).0, repr);
        }

        #[test]
        fn any_bytes(bytes in any::<[u8; 8]>()) {
            let (repr, notes) = DataHeaderRepr::parse_noting(&bytes).unwrap();
            if notes.is_clean() {
                prop_assert_eq!(repr.to_array(), bytes);
            }
            // Re-emitting an odd header yields a clean one that decodes the same.
            prop_assert_eq!(DataHeaderRepr::parse_noting(&repr.to_array()), Ok((repr, Notes::default())));
        }

        #[test]
        fn any_length_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..16)) {
            let _ = DataHeaderRepr::parse_noting(&bytes);
            if let Ok(h) = DataHeader::new_checked(&bytes[..]) {
                let _ = (DataHeaderRepr::from_header(&h), h.payload().len());
            }
        }
    }
}
