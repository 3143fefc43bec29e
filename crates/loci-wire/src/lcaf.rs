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
//! `Length` counts the bytes after the Length field. Unknown types are kept as opaque bytes and
//! re-emitted unchanged.

use crate::buf::{Reader, Writer};
use crate::error::Result;

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

/// A decoded LCAF.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Lcaf {
    /// A type this codec does not interpret: header fields and body kept verbatim.
    Unknown { lcaf_type: u8, rsvd1: u8, flags: u8, rsvd2: u8, body: Vec<u8> },
}

impl Lcaf {
    /// See [`crate::Address::max_mask_len`].
    pub fn max_mask_len(&self) -> Option<u8> {
        match self {
            Lcaf::Unknown { .. } => None,
        }
    }

    /// Encoded length after the AFI (header of 6 bytes plus body).
    pub(crate) fn wire_len_after_afi(&self) -> usize {
        6 + self.body_len()
    }

    fn body_len(&self) -> usize {
        match self {
            Lcaf::Unknown { body, .. } => body.len(),
        }
    }

    /// Reads the LCAF header and body; the AFI has been read. `depth` counts enclosing LCAFs.
    pub(crate) fn read_after_afi(r: &mut Reader<'_>, _depth: usize) -> Result<Self> {
        let rsvd1 = r.u8("LCAF Rsvd1")?;
        let flags = r.u8("LCAF flags")?;
        let lcaf_type = r.u8("LCAF type")?;
        let rsvd2 = r.u8("LCAF Rsvd2")?;
        let len = r.u16("LCAF length")?;
        let body = r.sub(len as usize, "LCAF body")?;
        let out = Lcaf::Unknown { lcaf_type, rsvd1, flags, rsvd2, body: body.rest().to_vec() };
        r.absorb(&body);
        Ok(out)
    }

    pub(crate) fn write_after_afi(&self, w: &mut Writer<'_>) {
        match self {
            Lcaf::Unknown { lcaf_type, rsvd1, flags, rsvd2, body } => {
                w.u8(*rsvd1);
                w.u8(*flags);
                w.u8(*lcaf_type);
                w.u8(*rsvd2);
                w.u16(body.len() as u16);
                w.bytes(body);
            }
        }
    }
}

impl core::fmt::Display for Lcaf {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Lcaf::Unknown { lcaf_type, body, .. } => write!(f, "lcaf-type-{lcaf_type}({} bytes)", body.len()),
        }
    }
}

#[cfg(any(test, feature = "proptest"))]
pub mod strategy {
    //! proptest strategies for LCAFs.
    use super::*;
    use crate::Address;
    use proptest::prelude::*;

    /// Any LCAF whose nested addresses come from `inner`.
    pub fn lcaf(inner: impl Strategy<Value = Address> + Clone + 'static) -> impl Strategy<Value = Lcaf> {
        let _ = inner;
        (100u8.., any::<u8>(), any::<u8>(), any::<u8>(), proptest::collection::vec(any::<u8>(), 0..16))
            .prop_map(|(lcaf_type, rsvd1, flags, rsvd2, body)| Lcaf::Unknown { lcaf_type, rsvd1, flags, rsvd2, body })
    }
}
