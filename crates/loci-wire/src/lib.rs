//! loci-wire: the LISP wire codec.
//!
//! Every control message of RFC 9301 §5 (plus Map-Referral, Info-Request/Reply and the Shared
//! Extension Message), the data-plane header of RFC 9300 §5.3, LISP addresses and LCAFs
//! (RFC 8060), and message authentication (RFC 9301 §5.6).
//!
//! Each message has an owned `Repr` with `parse`/`emit`/`buffer_len` (the [`Wire`] trait) and,
//! where a fast path reads only fixed fields, a zero-copy view over a byte buffer. Decoders never
//! panic and never read past their buffer; malformed input yields an [`Error`] that says what and
//! where. Oddities the RFCs tell receivers to tolerate are reported in [`Notes`].
#![forbid(unsafe_code)]

pub mod address;
pub mod auth;
mod buf;
pub mod data;
pub mod ecm;
pub mod error;
pub mod info;
pub mod lcaf;
pub mod map_notify;
pub mod map_referral;
pub mod map_register;
pub mod map_reply;
pub mod map_request;
pub mod message;
pub mod record;
pub mod shared_ext;

pub use address::{Address, MacAfi};
pub use buf::Wire;
pub use error::{Error, Notes, Result};
pub use lcaf::Lcaf;
pub use record::{Action, Locator, MapRecord};
