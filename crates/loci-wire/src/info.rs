//! Info-Request and Info-Reply (type 7): LISP NAT traversal (draft-ermagan-lisp-nat-traversal,
//! now draft-ietf-lisp-nat-traversal). An xTR sends an Info-Request to its Map-Server to learn
//! whether it is behind a NAT; the Info-Reply carries the translated address and port and the
//! RTRs to use, in a NAT-Traversal LCAF (type 7).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Type=7 |R|               Reserved                              |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                         Nonce . . .                           |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                      . . . Nonce                              |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |    Key ID     | Algorithm ID  |  Authentication Data Length   |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ~                     Authentication Data                       ~
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                              TTL                              |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |   Reserved    | EID mask-len  |        EID-Prefix-AFI         |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                          EID-Prefix                           |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |             AFI = 0           |   <Nothing Follows AFI=0>     |   Info-Request
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |         AFI = 16387           |  NAT-Traversal LCAF ...       |   Info-Reply
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! Early drafts show a 16-bit Key ID where RFC 9301 messages have an 8-bit Key ID and an 8-bit
//! Algorithm ID; the values those drafts used (1 = HMAC-SHA-1-96, 2 = HMAC-SHA-256-128) decode
//! identically as key ID 0 with that algorithm ID, so the RFC 9301 split is used here.
//!
//! The address after the EID-prefix is kept as any [`Address`], whatever R says: AFI 0 and the
//! NAT-Traversal LCAF are the documented values, but some implementations put a distinguished
//! name (the xTR's hostname) in Info-Requests.

use crate::address::Address;
use crate::buf::{Reader, Writer};
use crate::error::{Error, Result};
use crate::message::message_type::INFO;
use crate::record::check_mask;

/// Length of the fixed header up to the authentication data.
pub const HEADER_LEN: usize = 16;
/// Offset of the authentication data: what an authenticator zeroes before computing the MAC.
pub const AUTH_DATA_OFFSET: usize = HEADER_LEN;
/// The smallest message: the header with no authentication data, TTL, reserved, mask-len and
/// two AFI-0 addresses.
pub const MIN_LEN: usize = HEADER_LEN + 4 + 2 + 2 + 2;

/// R: the message is an Info-Reply.
const REPLY_BIT: u32 = 0x0800_0000;

/// Checks an authentication data length against an RFC 9301 §12.5 algorithm ID: 0 (none)
/// takes no data; 1 (HMAC-SHA-1-96) 12 bytes, or 20 from senders that do not truncate; 2 and 3
/// (HMAC-SHA-256-128, with or without HKDF) 16 bytes, or 32 untruncated.
fn check_auth_len(alg: u8, alg_at: usize, len: u16, len_at: usize) -> Result<()> {
    let ok = match alg {
        0 => len == 0,
        1 => len == 12 || len == 20,
        2 | 3 => len == 16 || len == 32,
        _ => return Err(Error::UnknownAlgorithm { id: alg, at: alg_at }),
    };
    if ok {
        Ok(())
    } else {
        Err(Error::AuthLength { alg, len, at: len_at })
    }
}

/// An Info-Request (`reply` false) or Info-Reply (`reply` true).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InfoMessage {
    /// R: this is an Info-Reply.
    pub reply: bool,
    /// Chosen by the requester and echoed in the reply.
    pub nonce: u64,
    pub key_id: u8,
    /// RFC 9301 §12.5 algorithm ID; 0 means no authentication.
    pub algorithm_id: u8,
    /// The MAC; its length must suit `algorithm_id`.
    pub auth_data: Vec<u8>,
    /// Info-Reply: minutes the RTR information may be kept. Info-Request: 0 in practice.
    pub ttl: u32,
    pub eid_mask_len: u8,
    /// The requester's EID-prefix (possibly an instance-ID LCAF).
    pub eid: Address,
    /// Info-Reply: the NAT-Traversal LCAF. Info-Request: normally [`Address::None`].
    pub reply_address: Address,
}

impl InfoMessage {
    pub fn wire_len(&self) -> usize {
        HEADER_LEN + self.auth_data.len() + 6 + self.eid.wire_len() + self.reply_address.wire_len()
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self> {
        let first = r.u32("Info header")?;
        let found = (first >> 28) as u8;
        Error::expect_type(INFO, found)?;
        r.reserved(first.into(), 0x07ff_ffff);
        let nonce = r.u64("nonce")?;
        let key_id = r.u8("key ID")?;
        let alg_at = r.at();
        let algorithm_id = r.u8("algorithm ID")?;
        let len_at = r.at();
        let auth_len = r.u16("authentication data length")?;
        check_auth_len(algorithm_id, alg_at, auth_len, len_at)?;
        let auth_data = r.bytes(auth_len.into(), "authentication data")?.to_vec();
        let ttl = r.u32("TTL")?;
        let rsvd = r.u8("reserved")?;
        r.reserved(rsvd.into(), 0xff);
        let mask_at = r.at();
        let eid_mask_len = r.u8("EID mask-len")?;
        let eid = Address::read(r)?;
        check_mask(&eid, eid_mask_len, mask_at)?;
        let reply_address = Address::read(r)?;
        Ok(InfoMessage {
            reply: first & REPLY_BIT != 0,
            nonce,
            key_id,
            algorithm_id,
            auth_data,
            ttl,
            eid_mask_len,
            eid,
            reply_address,
        })
    }

    pub(crate) fn write(&self, w: &mut Writer<'_>) {
        w.u32(u32::from(INFO) << 28 | if self.reply { REPLY_BIT } else { 0 });
        w.u64(self.nonce);
        w.u8(self.key_id);
        w.u8(self.algorithm_id);
        w.u16(self.auth_data.len() as u16);
        w.bytes(&self.auth_data);
        w.u32(self.ttl);
        w.u8(0);
        w.u8(self.eid_mask_len);
        self.eid.write(w);
        self.reply_address.write(w);
    }
}

crate::buf::impl_wire!(InfoMessage);

/// A zero-copy view of an Info-Request/Info-Reply's fixed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InfoPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> InfoPacket<T> {
    /// Wraps a buffer without checks; accessors panic if it is shorter than [`HEADER_LEN`].
    pub const fn new_unchecked(buffer: T) -> Self {
        InfoPacket { buffer }
    }

    /// Wraps a buffer, checking the fixed-header length and the type field.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated { what: "Info header", at: b.len(), need: HEADER_LEN - b.len() });
        }
        let found = b[0] >> 4;
        Error::expect_type(INFO, found)?;
        Ok(InfoPacket { buffer })
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// R: this is an Info-Reply.
    pub fn reply(&self) -> bool {
        self.buffer.as_ref()[0] & 0x08 != 0
    }

    pub fn nonce(&self) -> u64 {
        let b = self.buffer.as_ref();
        u64::from_be_bytes([b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11]])
    }

    pub fn key_id(&self) -> u8 {
        self.buffer.as_ref()[12]
    }

    pub fn algorithm_id(&self) -> u8 {
        self.buffer.as_ref()[13]
    }

    pub fn auth_data_len(&self) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[14], b[15]])
    }
}

#[cfg(any(test, feature = "proptest"))]
pub mod strategy {
    //! proptest strategies for Info messages.
    use super::*;
    use crate::address::strategy::address;
    use crate::record::strategy::eid_with_mask;
    use proptest::prelude::*;

    /// An algorithm ID with authentication data of a length that suits it.
    pub fn auth() -> impl Strategy<Value = (u8, Vec<u8>)> {
        prop_oneof![
            Just((0u8, vec![])),
            (prop_oneof![Just(12usize), Just(20)])
                .prop_flat_map(|n| (Just(1u8), proptest::collection::vec(any::<u8>(), n))),
            (2u8..=3, prop_oneof![Just(16usize), Just(32)])
                .prop_flat_map(|(a, n)| (Just(a), proptest::collection::vec(any::<u8>(), n))),
        ]
    }

    pub fn info_message() -> impl Strategy<Value = InfoMessage> {
        (any::<bool>(), any::<u64>(), any::<u8>(), auth(), any::<u32>(), eid_with_mask(), address()).prop_map(
            |(reply, nonce, key_id, (algorithm_id, auth_data), ttl, (eid, eid_mask_len), reply_address)| InfoMessage {
                reply,
                nonce,
                key_id,
                algorithm_id,
                auth_data,
                ttl,
                eid_mask_len,
                eid,
                reply_address,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buf::Wire;
    use crate::error::Notes;
    use proptest::prelude::*;

    const REQUEST: [u8; 46] = [
        0x70, 0, 0, 0, // type 7, Info-Request
        0, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef, // nonce
        1, 2, 0, 16, // key ID 1, HMAC-SHA-256-128, 16 bytes
        0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, // authentication data
        0, 0, 0, 0, // TTL
        0, 24, 0, 1, // reserved, /24, AFI 1
        10, 2, 3, 0, // EID-prefix
        0, 0, // AFI 0
    ];

    fn request() -> InfoMessage {
        InfoMessage {
            reply: false,
            nonce: 0xdead_beef,
            key_id: 1,
            algorithm_id: 2,
            auth_data: (0..16).collect(),
            ttl: 0,
            eid_mask_len: 24,
            eid: Address::Ipv4("10.2.3.0".parse().unwrap()),
            reply_address: Address::None,
        }
    }

    #[test]
    fn golden_request() {
        assert_eq!(request().to_bytes(), REQUEST);
        assert_eq!(InfoMessage::parse_noting(&REQUEST), Ok((request(), Notes::default())));
        let p = InfoPacket::new_checked(&REQUEST[..]).unwrap();
        assert_eq!(
            (p.reply(), p.nonce(), p.key_id(), p.algorithm_id(), p.auth_data_len()),
            (false, 0xdead_beef, 1, 2, 16)
        );
    }

    #[test]
    fn golden_reply() {
        // NAT-Traversal LCAF body: MS UDP port, ETR UDP port, global ETR RLOC, MS RLOC,
        // private ETR RLOC, RTR RLOC (RFC 8060 §4.6), kept opaque here.
        let nat_body: Vec<u8> = [
            &[0x10, 0xf6, 0xc0, 0x01][..], // MS port 4342, ETR port 49153
            &[0, 1, 198, 51, 100, 7],      // global ETR RLOC
            &[0, 1, 203, 0, 113, 1],       // MS RLOC
            &[0, 1, 192, 168, 1, 2],       // private ETR RLOC
            &[0, 1, 203, 0, 113, 9],       // RTR RLOC
        ]
        .concat();
        let lcaf = [&[0x40, 0x03, 0, 0, 7, 0, 0, 28][..], &nat_body].concat(); // LCAF type 7, length 28
        let bytes = [
            &[
                0x78, 0, 0, 0, // type 7, R
                0, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef, // nonce
                0, 0, 0, 0, // no authentication
                0, 0, 0x05, 0xa0, // TTL 1440
                0, 24, 0, 1, 10, 2, 3, 0, // /24 10.2.3.0
            ][..],
            &lcaf,
        ]
        .concat();
        let msg = InfoMessage {
            reply: true,
            algorithm_id: 0,
            key_id: 0,
            auth_data: vec![],
            ttl: 1440,
            // lcaf.rs decides how a NAT-Traversal LCAF is represented.
            reply_address: Address::parse(&lcaf).unwrap(),
            ..request()
        };
        assert_eq!(msg.to_bytes(), bytes);
        assert_eq!(InfoMessage::parse_noting(&bytes), Ok((msg, Notes::default())));
    }

    #[test]
    fn bad_input() {
        assert_eq!(InfoMessage::parse(&[0x60; 28]), Err(Error::WrongType { expected: 7, found: 6 }));
        let mut b = REQUEST;
        b[13] = 9;
        assert_eq!(InfoMessage::parse(&b), Err(Error::UnknownAlgorithm { id: 9, at: 13 }));
        let mut b = REQUEST;
        b[15] = 20;
        assert_eq!(InfoMessage::parse(&b), Err(Error::AuthLength { alg: 2, len: 20, at: 14 }));
        let mut b = REQUEST;
        b[13] = 0;
        assert_eq!(InfoMessage::parse(&b), Err(Error::AuthLength { alg: 0, len: 16, at: 14 }));
        let mut b = REQUEST;
        b[37] = 33;
        assert_eq!(InfoMessage::parse(&b), Err(Error::MaskTooLong { len: 33, max: 32, at: 37 }));
        assert!(matches!(InfoMessage::parse(&REQUEST[..45]), Err(Error::Truncated { what: "AFI", at: 44, need: 1 })));
        assert!(matches!(
            InfoMessage::parse(&REQUEST[..20]),
            Err(Error::Truncated { what: "authentication data", .. })
        ));
        let mut v = REQUEST.to_vec();
        v.push(0);
        assert_eq!(InfoMessage::parse(&v), Err(Error::TrailingBytes { len: 1, at: 46 }));
        assert!(matches!(InfoPacket::new_checked(&REQUEST[..15]), Err(Error::Truncated { at: 15, need: 1, .. })));
        assert_eq!(InfoPacket::new_checked(&[0x80; 16][..]), Err(Error::WrongType { expected: 7, found: 8 }));
    }

    #[test]
    fn reserved_bits_are_noted() {
        let mut b = REQUEST;
        b[1] = 1;
        b[36] = 0x80;
        let (msg, notes) = InfoMessage::parse_noting(&b).unwrap();
        assert_eq!((msg.clone(), notes.reserved_bits), (request(), true));
        assert_eq!(msg.to_bytes(), REQUEST);
    }

    proptest! {
        #[test]
        fn round_trip(msg in strategy::info_message()) {
            let bytes = msg.to_bytes();
            prop_assert_eq!(bytes.len(), msg.wire_len());
            prop_assert_eq!(InfoMessage::parse_noting(&bytes), Ok((msg, Notes::default())));
        }

        #[test]
        fn parse_never_panics_and_reemits(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let mut bytes = bytes;
            if bytes.len() > 15 {
                bytes[0] = 0x70 | (bytes[0] & 0x0f);
                bytes[13] &= 3;
                bytes[14] = 0;
                bytes[15] = [0, 12, 16, 16][usize::from(bytes[13])];
            }
            if let Ok((m, notes)) = InfoMessage::parse_noting(&bytes) {
                if notes.is_clean() {
                    prop_assert_eq!(m.to_bytes(), bytes);
                }
            }
        }

        #[test]
        fn mutated_never_panics(msg in strategy::info_message(), at in any::<prop::sample::Index>(), x in any::<u8>(), cut in any::<prop::sample::Index>()) {
            let mut bytes = msg.to_bytes();
            let i = at.index(bytes.len());
            bytes[i] ^= x;
            for b in [&bytes[..], &bytes[..cut.index(bytes.len() + 1)]] {
                if let Ok((m, notes)) = InfoMessage::parse_noting(b) {
                    if notes.is_clean() {
                        prop_assert_eq!(m.to_bytes(), b);
                    }
                }
            }
        }
    }
}
