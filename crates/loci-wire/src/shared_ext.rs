//! The LISP Shared Extension Message (type 15, RFC 9304, which replaced RFC 8113): one message
//! type shared by experimental extensions, told apart by a 12-bit sub-type.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Type=15|        Sub-type       |   extension-specific          |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! //                    extension-specific                       //
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! The extension-specific part is defined by each sub-type's own specification, so it is kept
//! as opaque bytes and re-emitted unchanged. Only the 2-byte type/sub-type header is required:
//! how much follows is the sub-type's business.

use crate::buf::{Reader, Writer};
use crate::error::{Error, Result};
use crate::message::message_type::SHARED_EXTENSION;

/// Length of the type/sub-type header.
pub const HEADER_LEN: usize = 2;

/// A Shared Extension Message.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SharedExtension {
    /// The 12-bit sub-type (IANA "LISP Shared Extension Message Type Sub-types"); higher bits
    /// are dropped on emit.
    pub sub_type: u16,
    /// Everything after the sub-type, starting with the 16-bit extension-specific field of the
    /// first word.
    pub body: Vec<u8>,
}

impl SharedExtension {
    pub fn wire_len(&self) -> usize {
        HEADER_LEN + self.body.len()
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self> {
        let first = r.u16("Shared Extension header")?;
        let found = (first >> 12) as u8;
        Error::expect_type(SHARED_EXTENSION, found)?;
        let body = r.bytes(r.remaining(), "Shared Extension body")?.to_vec();
        Ok(SharedExtension { sub_type: first & 0x0fff, body })
    }

    pub(crate) fn write(&self, w: &mut Writer<'_>) {
        w.u16(u16::from(SHARED_EXTENSION) << 12 | (self.sub_type & 0x0fff));
        w.bytes(&self.body);
    }
}

crate::buf::impl_wire!(SharedExtension);

/// A zero-copy view of a Shared Extension Message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedExtensionPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> SharedExtensionPacket<T> {
    /// Wraps a buffer without checks; accessors panic if it is shorter than [`HEADER_LEN`].
    pub const fn new_unchecked(buffer: T) -> Self {
        SharedExtensionPacket { buffer }
    }

    /// Wraps a buffer, checking the length and the type field.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated { what: "Shared Extension header", at: b.len(), need: HEADER_LEN - b.len() });
        }
        let found = b[0] >> 4;
        Error::expect_type(SHARED_EXTENSION, found)?;
        Ok(SharedExtensionPacket { buffer })
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The 12-bit sub-type.
    pub fn sub_type(&self) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[0], b[1]]) & 0x0fff
    }

    /// The extension-specific bytes.
    pub fn body(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

#[cfg(any(test, feature = "proptest"))]
pub mod strategy {
    //! proptest strategies for Shared Extension Messages.
    use super::*;
    use proptest::prelude::*;

    pub fn shared_extension() -> impl Strategy<Value = SharedExtension> {
        (0u16..0x1000, proptest::collection::vec(any::<u8>(), 0..32))
            .prop_map(|(sub_type, body)| SharedExtension { sub_type, body })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buf::Wire;
    use proptest::prelude::*;

    #[test]
    fn golden() {
        let bytes = [
            0xf4, 0x01, // type 15, sub-type 0x401 (1025, first-come first-served range)
            0xab, 0xcd, // extension-specific 16 bits
            1, 2, 3, 4, // extension-specific words
        ];
        let msg = SharedExtension { sub_type: 0x401, body: vec![0xab, 0xcd, 1, 2, 3, 4] };
        assert_eq!(msg.to_bytes(), bytes);
        assert_eq!(SharedExtension::parse(&bytes), Ok(msg));
        let p = SharedExtensionPacket::new_checked(&bytes[..]).unwrap();
        assert_eq!((p.sub_type(), p.body()), (0x401, &bytes[2..]));
        assert_eq!(SharedExtension::parse(&[0xf0, 0]), Ok(SharedExtension { sub_type: 0, body: vec![] }));
    }

    #[test]
    fn bad_input() {
        assert!(matches!(SharedExtension::parse(&[0xf0]), Err(Error::Truncated { at: 0, need: 1, .. })));
        assert_eq!(SharedExtension::parse(&[0x10, 0]), Err(Error::WrongType { expected: 15, found: 1 }));
        assert!(matches!(
            SharedExtensionPacket::new_checked(&[0xf0][..]),
            Err(Error::Truncated { at: 1, need: 1, .. })
        ));
        assert_eq!(
            SharedExtensionPacket::new_checked(&[0x80, 0][..]),
            Err(Error::WrongType { expected: 15, found: 8 })
        );
    }

    proptest! {
        #[test]
        fn round_trip(msg in strategy::shared_extension()) {
            let bytes = msg.to_bytes();
            prop_assert_eq!(bytes.len(), msg.wire_len());
            prop_assert_eq!(SharedExtension::parse(&bytes).unwrap(), msg);
        }

        #[test]
        fn parse_never_panics_and_reemits(bytes in proptest::collection::vec(any::<u8>(), 0..32)) {
            if let Ok((m, notes)) = SharedExtension::parse_noting(&bytes) {
                prop_assert!(notes.is_clean());
                prop_assert_eq!(m.to_bytes(), bytes);
            }
        }
    }
}
