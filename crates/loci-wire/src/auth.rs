//! Authentication of Map-Register, Map-Notify and Map-Notify-Ack (RFC 9301 §5.6 steps 1-5, the
//! algorithm table of §12.5).
//!
//! All three messages carry the same authentication header at byte 12:
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  Type |        flags (per message type)       |  Record Count |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                         Nonce . . .                           |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                         . . . Nonce                           |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |    Key ID     | Algorithm ID  |  Authentication Data Length   |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ~                     Authentication Data                       ~
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! [`sign`] and [`verify`] work on encoded bytes, so the MAC covers exactly what goes on the
//! wire whatever produced it. To send: set the header with `prepare_auth` on the message
//! (`MapRegister`, `MapNotify`), encode, then [`sign`] (or use `to_signed_bytes`, which does all
//! three).
//!
//! Interoperability choices, where the RFC and deployed implementations differ:
//! - MAC coverage. RFC 9301 step 5 covers "the LISP message type field through the end of the
//!   last RLOC-Record", which leaves out a trailing xTR-ID/Site-ID; deployed implementations
//!   (lispers.net, OOR) MAC the whole UDP payload, xTR-ID and Site-ID included. [`verify`]
//!   accepts both ([`Coverage`]); [`sign`] uses [`Coverage::WholeMessage`] by default.
//! - MAC length. The algorithms are named "-96"/"-128" (truncated), but deployed implementations
//!   send the full 20- or 32-byte HMAC. [`verify`] accepts both ([`MacLength`]; truncated means
//!   the leftmost bytes of the full HMAC, as RFC 2404/4868 define); [`sign`] sends the full one
//!   by default.
//! - Algorithm 3 (HMAC-SHA256-128+HKDF-SHA256). Step 4 says `per-msg-key = KDF(nonce +
//!   PSK[Key ID], s)` and calls `s` "the salt". No public implementation was found (lispers.net
//!   and OOR implement algorithms 1 and 2 only; Wireshark does not verify), so this follows the
//!   text literally with RFC 5869 HKDF-SHA256: salt = `s` (ASCII, no NUL), IKM = the 8 nonce
//!   bytes as on the wire followed by the PSK, info = empty, L = 32 bytes (the HMAC-SHA-256 key
//!   length of RFC 4868 §2.1.1). `s` is "Map-Register Authentication", "Map-Notify
//!   Authentication" or "Map-Notify-Ack Authentication", chosen from the message type.
//!
//! Verification allocates nothing: the MAC is fed the message in three slices with zeros in
//! place of the authentication data, and compared in constant time.

use std::collections::BTreeMap;

use hkdf::HkdfExtract;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::buf::{Reader, Writer};
use crate::error::{Error, Result};
use crate::map_notify::{self, MapNotify};
use crate::map_register::{self, MapRegister, XtrId};

/// Offset of the Key ID in all three authenticated messages.
pub const KEY_ID_AT: usize = 12;
/// Offset of the Algorithm ID.
pub const ALGORITHM_ID_AT: usize = 13;
/// Offset of the Authentication Data Length.
pub const AUTH_LEN_AT: usize = 14;
/// Offset of the Authentication Data.
pub const AUTH_DATA_AT: usize = 16;

/// Longest MAC any algorithm produces (HMAC-SHA-256).
const MAX_MAC_LEN: usize = 32;
/// Zeros fed to the MAC in place of the authentication data.
const ZEROS: [u8; MAX_MAC_LEN] = [0; MAX_MAC_LEN];

/// An Algorithm ID of RFC 9301 §12.5: which KDF and MAC authenticate the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    /// No authentication; the Authentication Data is empty.
    None = 0,
    /// HMAC-SHA-1-96 (RFC 2404), keyed with the PSK.
    HmacSha1_96 = 1,
    /// HMAC-SHA-256-128 (RFC 4868), keyed with the PSK.
    HmacSha256_128 = 2,
    /// HMAC-SHA-256-128 keyed with a per-message key derived by HKDF-SHA256 (RFC 5869).
    HmacSha256_128Hkdf = 3,
}

impl Algorithm {
    pub const fn id(self) -> u8 {
        self as u8
    }

    pub const fn from_id(id: u8) -> Option<Algorithm> {
        match id {
            0 => Some(Algorithm::None),
            1 => Some(Algorithm::HmacSha1_96),
            2 => Some(Algorithm::HmacSha256_128),
            3 => Some(Algorithm::HmacSha256_128Hkdf),
            _ => None,
        }
    }

    /// Length of the truncated MAC the algorithm is named after (0, 12, 16, 16).
    pub const fn truncated_len(self) -> usize {
        match self {
            Algorithm::None => 0,
            Algorithm::HmacSha1_96 => 12,
            Algorithm::HmacSha256_128 | Algorithm::HmacSha256_128Hkdf => 16,
        }
    }

    /// Length of the untruncated HMAC, as deployed implementations send it (0, 20, 32, 32).
    pub const fn full_len(self) -> usize {
        match self {
            Algorithm::None => 0,
            Algorithm::HmacSha1_96 => 20,
            Algorithm::HmacSha256_128 | Algorithm::HmacSha256_128Hkdf => 32,
        }
    }

    /// Authentication Data length for `length`.
    pub const fn mac_len(self, length: MacLength) -> usize {
        match length {
            MacLength::Full => self.full_len(),
            MacLength::Truncated => self.truncated_len(),
        }
    }

    /// Which [`MacLength`] an Authentication Data length is, if it is valid for the algorithm.
    /// For [`Algorithm::None`] only 0 is valid (reported as [`MacLength::Full`]).
    pub const fn length_of(self, len: usize) -> Option<MacLength> {
        if len == self.full_len() {
            Some(MacLength::Full)
        } else if len == self.truncated_len() {
            Some(MacLength::Truncated)
        } else {
            None
        }
    }

    /// The IANA name.
    pub const fn name(self) -> &'static str {
        match self {
            Algorithm::None => "None",
            Algorithm::HmacSha1_96 => "HMAC-SHA-1-96-None",
            Algorithm::HmacSha256_128 => "HMAC-SHA-256-128-None",
            Algorithm::HmacSha256_128Hkdf => "HMAC-SHA256-128+HKDF-SHA256",
        }
    }
}

impl core::fmt::Display for Algorithm {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// Which bytes the MAC covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Coverage {
    /// From the type field to the end of the message, xTR-ID and Site-ID included: what deployed
    /// implementations compute.
    #[default]
    WholeMessage,
    /// From the type field to the end of the last record (RFC 9301 §5.6 step 5): a trailing
    /// xTR-ID and Site-ID are left out, so they are not authenticated. The same as
    /// `WholeMessage` when the I bit is clear.
    ThroughLastRecord,
}

/// How many MAC bytes are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum MacLength {
    /// The whole HMAC output (20 or 32 bytes), as deployed implementations send it.
    #[default]
    Full,
    /// The leftmost 12 or 16 bytes, as the algorithm names say.
    Truncated,
}

/// How to authenticate messages we send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SendPolicy {
    pub algorithm: Algorithm,
    pub coverage: Coverage,
    pub length: MacLength,
}

impl Default for SendPolicy {
    /// HMAC-SHA-256-128 over the whole message with the full 32-byte MAC: what every deployed
    /// implementation accepts.
    fn default() -> Self {
        SendPolicy { algorithm: Algorithm::HmacSha256_128, coverage: Coverage::WholeMessage, length: MacLength::Full }
    }
}

impl SendPolicy {
    /// Length of the Authentication Data the policy produces.
    pub const fn mac_len(&self) -> usize {
        self.algorithm.mac_len(self.length)
    }
}

/// The Key ID, Algorithm ID and Authentication Data of a Map-Register, Map-Notify or
/// Map-Notify-Ack (the Authentication Data Length is `auth_data.len()`). The messages keep these
/// as their own `key_id`, `algorithm_id` and `auth_data` fields; this is the shared code that
/// reads and writes them.
///
/// ```text
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |    Key ID     | Algorithm ID  |  Authentication Data Length   |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// ~                     Authentication Data                       ~
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// ```
///
/// Decoding refuses unknown Algorithm IDs ([`Error::UnknownAlgorithm`]: the RFC leaves no way to
/// check such a message) and lengths that fit neither the truncated nor the full MAC of the
/// algorithm ([`Error::AuthLength`]). Encoding writes the fields as they are.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct AuthHeader {
    /// Selects the pre-shared secret (several may be configured, for rotation).
    pub key_id: u8,
    /// An [`Algorithm`] id.
    pub algorithm_id: u8,
    /// The MAC, or zeros before [`sign`].
    pub auth_data: Vec<u8>,
}

impl AuthHeader {
    /// The header to encode before [`sign`]: the policy's algorithm and zeroed Authentication
    /// Data of the policy's length.
    pub fn prepared(key_id: u8, policy: &SendPolicy) -> AuthHeader {
        AuthHeader { key_id, algorithm_id: policy.algorithm.id(), auth_data: vec![0; policy.mac_len()] }
    }

    /// The algorithm, when the id is a known one (always, for a decoded header).
    pub fn algorithm(&self) -> Option<Algorithm> {
        Algorithm::from_id(self.algorithm_id)
    }

    pub fn wire_len(&self) -> usize {
        4 + self.auth_data.len()
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self> {
        // The four fixed bytes in one read (one bounds check: this is every Map-Register's path).
        let alg_at = r.at() + 1;
        let len_at = r.at() + 2;
        let [key_id, algorithm_id, l0, l1] = r.array("Key ID/Algorithm ID/Authentication Data Length")?;
        let len = u16::from_be_bytes([l0, l1]);
        let alg = Algorithm::from_id(algorithm_id).ok_or(Error::UnknownAlgorithm { id: algorithm_id, at: alg_at })?;
        if alg.length_of(len.into()).is_none() {
            return Err(Error::AuthLength { alg: algorithm_id, len, at: len_at });
        }
        let auth_data = r.bytes(len.into(), "Authentication Data")?.to_vec();
        Ok(AuthHeader { key_id, algorithm_id, auth_data })
    }

    /// Writes a header from its parts (messages keep them as their own fields).
    ///
    /// # Panics
    /// When `auth_data` is longer than 65535 bytes (no valid header is).
    pub(crate) fn write_parts(w: &mut Writer<'_>, key_id: u8, algorithm_id: u8, auth_data: &[u8]) {
        let len = u16::try_from(auth_data.len()).expect("Authentication Data longer than 65535 bytes");
        let [l0, l1] = len.to_be_bytes();
        w.bytes(&[key_id, algorithm_id, l0, l1]);
        w.bytes(auth_data);
    }
}

/// Pre-shared secrets by Key ID, for one peer (a site, or a Map-Server). Holding several lets
/// keys rotate without disruption: add the new one, move senders to it, then remove the old.
///
/// `Debug` shows the Key IDs only, never the secrets.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct KeyRing {
    keys: BTreeMap<u8, Vec<u8>>,
}

impl KeyRing {
    pub fn new() -> Self {
        KeyRing::default()
    }

    /// A ring holding one key.
    pub fn with_key(key_id: u8, secret: impl Into<Vec<u8>>) -> Self {
        let mut ring = KeyRing::new();
        ring.insert(key_id, secret);
        ring
    }

    /// Adds a key, replacing any with the same Key ID.
    pub fn insert(&mut self, key_id: u8, secret: impl Into<Vec<u8>>) {
        self.keys.insert(key_id, secret.into());
    }

    /// Removes a key; true when it was there.
    pub fn remove(&mut self, key_id: u8) -> bool {
        self.keys.remove(&key_id).is_some()
    }

    pub fn get(&self, key_id: u8) -> Option<&[u8]> {
        self.keys.get(&key_id).map(Vec::as_slice)
    }

    /// The Key IDs held, in increasing order.
    pub fn key_ids(&self) -> impl Iterator<Item = u8> + '_ {
        self.keys.keys().copied()
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

impl core::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("KeyRing").field("key_ids", &self.keys.keys().collect::<Vec<_>>()).finish()
    }
}

/// Why a message could not be signed or was not verified. Any of these on receipt means the
/// message is dropped (RFC 9301 §5.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum AuthError {
    #[error("message type {0} carries no authentication data")]
    NotAuthenticatable(u8),
    #[error("message too short for its authentication fields")]
    Truncated,
    #[error("no key with Key ID {0}")]
    UnknownKeyId(u8),
    #[error("unknown authentication algorithm ID {0}")]
    UnknownAlgorithm(u8),
    #[error("unauthenticated message (algorithm ID 0) not allowed")]
    Unauthenticated,
    #[error("authentication data length {len} does not fit algorithm ID {algorithm}")]
    BadLength { algorithm: u8, len: u16 },
    #[error("authentication data does not match")]
    Mismatch,
}

/// What [`verify`] found: which key and variant authenticated the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Verified {
    pub key_id: u8,
    pub algorithm: Algorithm,
    /// Which coverage matched; [`Coverage::WholeMessage`] when both are the same bytes (no
    /// xTR-ID) and for [`Algorithm::None`].
    pub coverage: Coverage,
    /// [`MacLength::Full`] for [`Algorithm::None`].
    pub length: MacLength,
}

/// The fixed fields [`sign`] and [`verify`] need, read from the encoded bytes.
struct Frame {
    /// The HKDF salt for the message type.
    salt: &'static [u8],
    key_id: u8,
    algorithm_id: u8,
    auth_len: usize,
    /// Where the last record ends: 24 bytes before the end with the I bit, else the end.
    records_end: usize,
}

impl Frame {
    fn read(msg: &[u8]) -> core::result::Result<Frame, AuthError> {
        let first = *msg.first().ok_or(AuthError::Truncated)?;
        // The I bit is in the first byte for all three types, at different places.
        let (salt, i_flag): (&'static [u8], u32) = match first >> 4 {
            MapRegister::TYPE => (b"Map-Register Authentication", map_register::F_I),
            MapNotify::TYPE => (b"Map-Notify Authentication", map_notify::F_I),
            MapNotify::TYPE_ACK => (b"Map-Notify-Ack Authentication", map_notify::F_I),
            t => return Err(AuthError::NotAuthenticatable(t)),
        };
        let i_bit = first & (i_flag >> 24) as u8 != 0;
        if msg.len() < AUTH_DATA_AT {
            return Err(AuthError::Truncated);
        }
        let auth_len = usize::from(u16::from_be_bytes([msg[AUTH_LEN_AT], msg[AUTH_LEN_AT + 1]]));
        if msg.len() < AUTH_DATA_AT + auth_len {
            return Err(AuthError::Truncated);
        }
        // With the I bit the xTR-ID and Site-ID are the last 24 bytes; when they cannot be there
        // the message is malformed and only the whole-message coverage is tried.
        let records_end = match msg.len().checked_sub(XtrId::LEN) {
            Some(end) if i_bit && end >= AUTH_DATA_AT + auth_len => end,
            _ => msg.len(),
        };
        Ok(Frame { salt, key_id: msg[KEY_ID_AT], algorithm_id: msg[ALGORITHM_ID_AT], auth_len, records_end })
    }

    /// Computes the full MAC of `msg[..end]` with the authentication data taken as zeros into
    /// `out`; returns its length. `None` only if the crypto library refuses a key length, which
    /// HMAC never does.
    fn mac(&self, alg: Algorithm, secret: &[u8], msg: &[u8], end: usize, out: &mut [u8; MAX_MAC_LEN]) -> Option<usize> {
        let auth_end = AUTH_DATA_AT + self.auth_len;
        let parts = [&msg[..AUTH_DATA_AT], &ZEROS[..self.auth_len], &msg[auth_end..end]];
        match alg {
            Algorithm::None => Some(0),
            Algorithm::HmacSha1_96 => hmac_parts::<Hmac<Sha1>>(secret, &parts, out),
            Algorithm::HmacSha256_128 => hmac_parts::<Hmac<Sha256>>(secret, &parts, out),
            Algorithm::HmacSha256_128Hkdf => {
                let key = per_message_key(self.salt, &msg[4..KEY_ID_AT], secret)?;
                hmac_parts::<Hmac<Sha256>>(&key, &parts, out)
            }
        }
    }
}

fn hmac_parts<M: Mac + hmac::digest::KeyInit>(key: &[u8], parts: &[&[u8]], out: &mut [u8]) -> Option<usize> {
    let mut m = <M as hmac::digest::KeyInit>::new_from_slice(key).ok()?;
    for p in parts {
        m.update(p);
    }
    let tag = m.finalize().into_bytes();
    out.get_mut(..tag.len())?.copy_from_slice(&tag);
    Some(tag.len())
}

/// RFC 9301 §5.6 step 4 for algorithm 3 (see the module comment for the parameters).
fn per_message_key(salt: &[u8], nonce: &[u8], psk: &[u8]) -> Option<[u8; 32]> {
    let mut extract = HkdfExtract::<Sha256>::new(Some(salt));
    extract.input_ikm(nonce);
    extract.input_ikm(psk);
    let (_, hkdf) = extract.finalize();
    let mut key = [0u8; 32];
    hkdf.expand(&[], &mut key).ok()?;
    Some(key)
}

/// Signs an encoded Map-Register, Map-Notify or Map-Notify-Ack in place: writes `key_id` and the
/// policy's Algorithm ID at bytes 12-13 and the MAC into the Authentication Data.
///
/// The message must have been encoded with an Authentication Data field of the policy's length
/// (`prepare_auth` on the message does that); its content is ignored (taken as zeros).
pub fn sign(msg: &mut [u8], key_id: u8, secret: &[u8], policy: &SendPolicy) -> core::result::Result<(), AuthError> {
    let frame = Frame::read(msg)?;
    let alg = policy.algorithm;
    if frame.auth_len != policy.mac_len() {
        return Err(AuthError::BadLength { algorithm: alg.id(), len: frame.auth_len as u16 });
    }
    let end = match policy.coverage {
        Coverage::WholeMessage => msg.len(),
        Coverage::ThroughLastRecord => frame.records_end,
    };
    msg[KEY_ID_AT] = key_id;
    msg[ALGORITHM_ID_AT] = alg.id();
    let mut mac = [0u8; MAX_MAC_LEN];
    frame.mac(alg, secret, msg, end, &mut mac).ok_or(AuthError::Mismatch)?;
    msg[AUTH_DATA_AT..AUTH_DATA_AT + frame.auth_len].copy_from_slice(&mac[..frame.auth_len]);
    Ok(())
}

/// Verifies an encoded Map-Register, Map-Notify or Map-Notify-Ack against the keys of its
/// sender. Accepts both coverages and both MAC lengths; `allow_none` accepts Algorithm ID 0
/// (no authentication; refuse it unless the peer is configured for it). Never panics.
pub fn verify(msg: &[u8], keyring: &KeyRing, allow_none: bool) -> core::result::Result<Verified, AuthError> {
    let frame = Frame::read(msg)?;
    let key_id = frame.key_id;
    let alg = Algorithm::from_id(frame.algorithm_id).ok_or(AuthError::UnknownAlgorithm(frame.algorithm_id))?;
    if alg == Algorithm::None && !allow_none {
        return Err(AuthError::Unauthenticated);
    }
    let length = alg
        .length_of(frame.auth_len)
        .ok_or(AuthError::BadLength { algorithm: alg.id(), len: frame.auth_len as u16 })?;
    if alg == Algorithm::None {
        return Ok(Verified { key_id, algorithm: alg, coverage: Coverage::WholeMessage, length });
    }
    let secret = keyring.get(key_id).ok_or(AuthError::UnknownKeyId(key_id))?;
    let received = &msg[AUTH_DATA_AT..AUTH_DATA_AT + frame.auth_len];
    let matches = |end: usize| -> bool {
        let mut mac = [0u8; MAX_MAC_LEN];
        frame.mac(alg, secret, msg, end, &mut mac).is_some() && bool::from(mac[..frame.auth_len].ct_eq(received))
    };
    let coverage = if matches(msg.len()) {
        Coverage::WholeMessage
    } else if frame.records_end != msg.len() && matches(frame.records_end) {
        Coverage::ThroughLastRecord
    } else {
        return Err(AuthError::Mismatch);
    };
    Ok(Verified { key_id, algorithm: alg, coverage, length })
}

#[cfg(any(test, feature = "proptest"))]
pub mod strategy {
    //! proptest strategies for authentication headers and policies.
    use super::*;
    use proptest::prelude::*;

    /// An algorithm that authenticates (1-3).
    pub fn mac_algorithm() -> impl Strategy<Value = Algorithm> {
        prop_oneof![Just(Algorithm::HmacSha1_96), Just(Algorithm::HmacSha256_128), Just(Algorithm::HmacSha256_128Hkdf),]
    }

    pub fn algorithm() -> impl Strategy<Value = Algorithm> {
        prop_oneof![Just(Algorithm::None), mac_algorithm()]
    }

    pub fn send_policy() -> impl Strategy<Value = SendPolicy> {
        (mac_algorithm(), any::<bool>(), any::<bool>()).prop_map(|(algorithm, whole, full)| SendPolicy {
            algorithm,
            coverage: if whole { Coverage::WholeMessage } else { Coverage::ThroughLastRecord },
            length: if full { MacLength::Full } else { MacLength::Truncated },
        })
    }

    /// A header that decodes: a known algorithm with a valid length and any data.
    pub fn auth_header() -> impl Strategy<Value = AuthHeader> {
        (any::<u8>(), algorithm(), any::<bool>()).prop_flat_map(|(key_id, alg, full)| {
            let len = alg.mac_len(if full { MacLength::Full } else { MacLength::Truncated });
            proptest::collection::vec(any::<u8>(), len).prop_map(move |auth_data| AuthHeader {
                key_id,
                algorithm_id: alg.id(),
                auth_data,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PSK: &[u8] = b"loci-test-key";

    /// A Map-Register with P, I and M set, nonce 0x0102030405060708, Key ID 1, one record
    /// (10.1.1.0/24 -> 192.0.2.1), xTR-ID 0x00112233..eeff and Site-ID 7, with `len` zero bytes
    /// of Authentication Data for algorithm `alg`.
    fn register(alg: u8, len: u16) -> Vec<u8> {
        let mut m = vec![0x3a, 0x00, 0x01, 0x01, 1, 2, 3, 4, 5, 6, 7, 8, 1, alg];
        m.extend_from_slice(&len.to_be_bytes());
        m.extend(std::iter::repeat_n(0, len.into()));
        m.extend_from_slice(&[
            0, 0, 0x05, 0xa0, 1, 24, 0x10, 0, 0, 0, 0, 1, 10, 1, 1, 0, // record 10.1.1.0/24, A
            1, 100, 255, 0, 0, 5, 0, 1, 192, 0, 2, 1, // locator L R 192.0.2.1
            0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, // xTR-ID
            0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, //
            0, 0, 0, 0, 0, 0, 0, 7, // Site-ID
        ]);
        m
    }

    // Known answers, computed independently with Python's hmac/hashlib (re-run to check):
    //
    // import hmac, hashlib
    // def hkdf(salt, ikm, n):  # RFC 5869 with SHA-256, empty info
    //     prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    //     okm, t, i = b"", b"", 1
    //     while len(okm) < n:
    //         t = hmac.new(prk, t + bytes([i]), hashlib.sha256).digest(); okm += t; i += 1
    //     return okm[:n]
    // def reg(alg, alen):  # Map-Register: P, I, M; nonce 0x0102030405060708; key 1; one record
    //     return (bytes.fromhex("3a000101" "0102030405060708") + bytes([1, alg]) + alen.to_bytes(2, "big")
    //             + bytes(alen) + bytes.fromhex("000005a0" "01181000" "00000001" "0a010100"
    //             "0164ff00" "00050001" "c0000201") + bytes.fromhex("00112233445566778899aabbccddeeff")
    //             + (7).to_bytes(8, "big"))
    // psk, salt = b"loci-test-key", b"Map-Register Authentication"
    // for alg, h, lens in [(1, hashlib.sha1, (12, 20)), (2, hashlib.sha256, (16, 32)), (3, hashlib.sha256, (16, 32))]:
    //     for alen in lens:
    //         m = reg(alg, alen)
    //         key = hkdf(salt, m[4:12] + psk, 32) if alg == 3 else psk
    //         for cov, end in (("whole", len(m)), ("records", len(m) - 24)):
    //             print(alg, alen, cov, hmac.new(key, m[:end], h).hexdigest()[: 2 * alen])
    // (Algorithm ID, length, coverage, MAC): W = whole message, R = through the last record.
    const KAT: [(u8, MacLength, Coverage, &str); 12] = [
        (1, TRUNC, W, "3dc0ba3bc2e68fdd96b6652a"),
        (1, TRUNC, R, "f26c19066c3c632b48d27ab9"),
        (1, FULL, W, "1ddd637a8bb2245d59b1e77c6d9db21d709b5456"),
        (1, FULL, R, "c812891576da236ad9939370fe19cb98a5024766"),
        (2, TRUNC, W, "c7877355dca70f384e056addffa53c49"),
        (2, TRUNC, R, "0b2ce4a44ed80c4cd1197b99c6c8f099"),
        (2, FULL, W, "643e9e39d43959a0ad1439784e8f64f0530f877218e9e6fba8c1029157613643"),
        (2, FULL, R, "0d62b6c2c9275c5e2fc50e3407064dae11496183443e2471056a844d0913a6cb"),
        (3, TRUNC, W, "b89a80750f2e082927bafbaa30efb353"),
        (3, TRUNC, R, "95baffab79732570a12393008657ff11"),
        (3, FULL, W, "2deaf7af362a0000096f8ab9fa85dc87432eccf094c021b2e55afad129c75ae4"),
        (3, FULL, R, "e55d1f2887043ed532dd8a35d6eeeb043d75abeabf0163fdb188382922858043"),
    ];
    const W: Coverage = Coverage::WholeMessage;
    const R: Coverage = Coverage::ThroughLastRecord;
    const FULL: MacLength = MacLength::Full;
    const TRUNC: MacLength = MacLength::Truncated;

    fn signed(policy: SendPolicy) -> Vec<u8> {
        let mut m = register(policy.algorithm.id(), policy.mac_len() as u16);
        sign(&mut m, 1, PSK, &policy).unwrap();
        m
    }

    #[test]
    fn known_answers() {
        let ring = KeyRing::with_key(1, PSK);
        for (id, length, coverage, hex_mac) in KAT {
            let algorithm = Algorithm::from_id(id).unwrap();
            let policy = SendPolicy { algorithm, coverage, length };
            let m = signed(policy);
            let mac = &m[AUTH_DATA_AT..AUTH_DATA_AT + policy.mac_len()];
            assert_eq!(hex::encode(mac), hex_mac, "{policy:?}");
            assert_eq!(verify(&m, &ring, false), Ok(Verified { key_id: 1, algorithm, coverage, length }));
        }
    }

    #[test]
    fn the_three_salts_differ() {
        let policy = SendPolicy { algorithm: Algorithm::HmacSha256_128Hkdf, ..SendPolicy::default() };
        let macs: Vec<Vec<u8>> = [0x3a, 0x4a, 0x5a]
            .iter()
            .map(|&b0| {
                let mut m = register(3, 32);
                m[0] = b0;
                sign(&mut m, 1, PSK, &policy).unwrap();
                assert!(verify(&m, &KeyRing::with_key(1, PSK), false).is_ok());
                m[AUTH_DATA_AT..AUTH_DATA_AT + 32].to_vec()
            })
            .collect();
        assert!(macs[0] != macs[1] && macs[1] != macs[2] && macs[0] != macs[2]);
    }

    #[test]
    fn rejections() {
        let ring = KeyRing::with_key(1, PSK);
        let good = signed(SendPolicy::default());
        // Wrong key.
        assert_eq!(verify(&good, &KeyRing::with_key(1, b"other".to_vec()), false), Err(AuthError::Mismatch));
        // Any flipped bit: in the header, the auth data, a record, the xTR-ID.
        for at in [1, 5, AUTH_DATA_AT, AUTH_DATA_AT + 31, 60, good.len() - 1] {
            let mut m = good.clone();
            m[at] ^= 0x01;
            assert_eq!(verify(&m, &ring, false), Err(AuthError::Mismatch), "byte {at}");
        }
        // Key ID not in the ring.
        let mut m = good.clone();
        m[KEY_ID_AT] = 9;
        assert_eq!(verify(&m, &ring, false), Err(AuthError::UnknownKeyId(9)));
        // Algorithm 0: refused unless allowed, and then only with no data.
        let none = register(0, 0);
        assert_eq!(verify(&none, &ring, false), Err(AuthError::Unauthenticated));
        let ok = Verified {
            key_id: 1,
            algorithm: Algorithm::None,
            coverage: Coverage::WholeMessage,
            length: MacLength::Full,
        };
        assert_eq!(verify(&none, &KeyRing::new(), true), Ok(ok));
        let m = register(0, 12);
        assert_eq!(verify(&m, &ring, true), Err(AuthError::BadLength { algorithm: 0, len: 12 }));
        // Unknown algorithm; length that fits neither MAC.
        let mut m = good.clone();
        m[ALGORITHM_ID_AT] = 4;
        assert_eq!(verify(&m, &ring, true), Err(AuthError::UnknownAlgorithm(4)));
        let m = register(2, 20);
        assert_eq!(verify(&m, &ring, false), Err(AuthError::BadLength { algorithm: 2, len: 20 }));
        // Not an authenticated message type; short messages.
        let mut m = good.clone();
        m[0] = 0x10;
        assert_eq!(verify(&m, &ring, false), Err(AuthError::NotAuthenticatable(1)));
        assert_eq!(verify(&[], &ring, false), Err(AuthError::Truncated));
        assert_eq!(verify(&good[..15], &ring, false), Err(AuthError::Truncated));
        assert_eq!(verify(&good[..47], &ring, false), Err(AuthError::Truncated));
        // Signing refuses a field of the wrong length, or a message it cannot hold.
        let mut m = register(2, 16);
        assert_eq!(sign(&mut m, 1, PSK, &SendPolicy::default()), Err(AuthError::BadLength { algorithm: 2, len: 16 }));
        assert_eq!(sign(&mut good.clone()[..20], 1, PSK, &SendPolicy::default()), Err(AuthError::Truncated));
    }

    #[test]
    fn key_rotation() {
        let mut ring = KeyRing::new();
        ring.insert(1, PSK);
        ring.insert(2, b"next-key".to_vec());
        assert_eq!(ring.key_ids().collect::<Vec<_>>(), [1, 2]);
        assert_eq!(format!("{ring:?}"), "KeyRing { key_ids: [1, 2] }");
        let old = signed(SendPolicy::default());
        let mut new = register(2, 32);
        sign(&mut new, 2, b"next-key", &SendPolicy::default()).unwrap();
        assert_eq!(new[KEY_ID_AT], 2);
        assert_eq!(verify(&old, &ring, false).unwrap().key_id, 1);
        assert_eq!(verify(&new, &ring, false).unwrap().key_id, 2);
        // Retiring the old key ends its acceptance only.
        assert!(ring.remove(1));
        assert_eq!(verify(&old, &ring, false), Err(AuthError::UnknownKeyId(1)));
        assert!(verify(&new, &ring, false).is_ok());
        // A signature made with key 2's secret but labelled key 1 fails.
        ring.insert(1, PSK);
        new[KEY_ID_AT] = 1;
        assert_eq!(verify(&new, &ring, false), Err(AuthError::Mismatch));
    }

    #[test]
    fn without_xtr_id_the_coverages_agree() {
        let ring = KeyRing::with_key(1, PSK);
        let mut m = register(2, 32);
        m[0] = 0x38; // I bit clear; the last 24 bytes are now trailing garbage, but MAC-able
        let whole = SendPolicy::default();
        let records = SendPolicy { coverage: Coverage::ThroughLastRecord, ..whole };
        let mut a = m.clone();
        sign(&mut a, 1, PSK, &whole).unwrap();
        sign(&mut m, 1, PSK, &records).unwrap();
        assert_eq!(a, m);
        assert_eq!(verify(&m, &ring, false).unwrap().coverage, Coverage::WholeMessage);
    }

    #[test]
    fn header_reads_and_refuses() {
        let bytes = [7, 1, 0, 12, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
        let h = AuthHeader::read(&mut Reader::new(&bytes)).unwrap();
        assert_eq!((h.key_id, h.algorithm(), h.wire_len()), (7, Some(Algorithm::HmacSha1_96), 16));
        let mut out = [0u8; 16];
        AuthHeader::write_parts(&mut Writer::new(&mut out), h.key_id, h.algorithm_id, &h.auth_data);
        assert_eq!(out, bytes);
        let mut r = Reader::new(&[7, 9, 0, 0]);
        assert_eq!(AuthHeader::read(&mut r), Err(Error::UnknownAlgorithm { id: 9, at: 1 }));
        let mut r = Reader::new(&[7, 3, 0, 20]);
        assert_eq!(AuthHeader::read(&mut r), Err(Error::AuthLength { alg: 3, len: 20, at: 2 }));
        let mut r = Reader::new(&[7, 2, 0, 32, 0]);
        assert!(matches!(AuthHeader::read(&mut r), Err(Error::Truncated { need: 31, .. })));
        let p = AuthHeader::prepared(5, &SendPolicy { length: MacLength::Truncated, ..SendPolicy::default() });
        assert_eq!(p, AuthHeader { key_id: 5, algorithm_id: 2, auth_data: vec![0; 16] });
    }

    proptest! {
        #[test]
        fn verify_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..120), b0 in 0x30u8..0x60,
                               allow in any::<bool>()) {
            let mut bytes = bytes;
            if let Some(b) = bytes.first_mut() {
                *b = b0;
            }
            let ring = KeyRing::with_key(bytes.get(KEY_ID_AT).copied().unwrap_or(0), PSK);
            let _ = verify(&bytes, &ring, allow);
        }

        #[test]
        fn sign_then_verify(policy in strategy::send_policy(), key_id in any::<u8>(), at in any::<usize>(),
                            x in 1u8..=255) {
            let mut m = register(policy.algorithm.id(), policy.mac_len() as u16);
            sign(&mut m, key_id, PSK, &policy).unwrap();
            let ring = KeyRing::with_key(key_id, PSK);
            let v = verify(&m, &ring, false).unwrap();
            prop_assert_eq!((v.algorithm, v.length, v.coverage), (policy.algorithm, policy.length, policy.coverage));
            // Through-last-record leaves the xTR-ID and Site-ID unprotected, as RFC 9301 says.
            let covered = if policy.coverage == Coverage::WholeMessage { m.len() } else { m.len() - XtrId::LEN };
            let at = at % covered;
            for cut in [at, m.len() - 1] {
                prop_assert!(verify(&m[..cut], &ring, true).is_err());
            }
            m[at] ^= x;
            prop_assert!(verify(&m, &ring, true).is_err());
        }
    }
}
