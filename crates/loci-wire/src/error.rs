//! Decode errors and the tolerated oddities that decoders note instead of rejecting.

/// Why a buffer could not be decoded. Every variant says where (`at`: byte offset from the
/// start of the buffer handed to `parse`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("truncated {what} at byte {at}: {need} more byte(s) needed")]
    Truncated { what: &'static str, at: usize, need: usize },
    #[error("unknown AFI {afi} at byte {at} (its length is unknown, so the message is dropped)")]
    UnknownAfi { afi: u16, at: usize },
    #[error("{what} count {count} at byte {at} is larger than the {remaining} remaining byte(s) can hold")]
    CountTooLarge { what: &'static str, count: usize, at: usize, remaining: usize },
    #[error("LCAF length {len} at byte {at} is inconsistent: {reason}")]
    LcafLength { len: u16, at: usize, reason: &'static str },
    #[error("mask length {len} at byte {at} is larger than the {max} bits of the address")]
    MaskTooLong { len: u8, max: u8, at: usize },
    #[error("unknown authentication algorithm ID {id} at byte {at}")]
    UnknownAlgorithm { id: u8, at: usize },
    #[error("authentication data length {len} at byte {at} does not fit algorithm ID {alg}")]
    AuthLength { alg: u8, len: u16, at: usize },
    #[error("{len} trailing byte(s) at byte {at}")]
    TrailingBytes { len: usize, at: usize },
    #[error("I bit set but the xTR-ID and Site-ID are missing at byte {at}")]
    MissingXtrId { at: usize },
    #[error("unknown LISP control message type {found}")]
    UnknownType { found: u8 },
    #[error("message type {found} where type {expected} was expected")]
    WrongType { expected: u8, found: u8 },
    #[error("addresses nested too deeply at byte {at}")]
    TooDeep { at: usize },
    #[error("invalid {what} at byte {at}: {reason}")]
    Invalid { what: &'static str, at: usize, reason: &'static str },
}

pub type Result<T> = core::result::Result<T, Error>;

impl Error {
    /// Succeeds when a message's type field holds the type the decoder expects.
    pub(crate) fn expect_type(expected: u8, found: u8) -> Result<()> {
        if found == expected {
            Ok(())
        } else {
            Err(Error::WrongType { expected, found })
        }
    }
}

/// Oddities the RFCs tell a receiver to tolerate rather than drop. Decoders record them here so
/// the caller can count them; the message itself is accepted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Notes {
    /// A reserved or unassigned bit was set; it is ignored (and sent as zero on re-emit).
    pub reserved_bits: bool,
    /// Data header with both N and V set: the field is treated as a nonce (RFC 9300 §5.3).
    pub nonce_and_version: bool,
    /// Data header with E set but not N: E is ignored (RFC 9300 §5.3).
    pub echo_without_nonce: bool,
}

impl Notes {
    /// True when nothing odd was seen.
    pub fn is_clean(&self) -> bool {
        *self == Notes::default()
    }
}
