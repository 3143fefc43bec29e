//! LISP addresses: an AFI (Address Family Identifier, IANA numbers) followed by the address.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |              AFI              |       Address  ...            |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! AFI 0 carries no address, 1 is IPv4, 2 is IPv6, 6 (RFC 8060) and 16389 (as some
//! deployments send) are a 48-bit MAC, 17 is a NUL-terminated distinguished name and 16387 is an
//! LCAF ([`crate::lcaf`]). Any other AFI has no known length, so RFC 9301 §5.1 has the whole
//! message dropped: decoding fails with [`Error::UnknownAfi`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::buf::{Reader, Writer};
use crate::error::{Error, Result};
use crate::lcaf::Lcaf;

/// IANA address family numbers used by LISP.
pub mod afi {
    pub const NONE: u16 = 0;
    pub const IPV4: u16 = 1;
    pub const IPV6: u16 = 2;
    pub const MAC: u16 = 6;
    pub const DISTINGUISHED_NAME: u16 = 17;
    pub const LCAF: u16 = 16387;
    pub const MAC48: u16 = 16389;
}

/// Nested LCAFs deeper than this are refused, so crafted input cannot exhaust the stack.
pub const MAX_DEPTH: usize = 8;

/// Which AFI a MAC address was (or will be) encoded with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MacAfi {
    /// AFI 6 (IEEE 802), as RFC 8060 shows.
    Ieee802,
    /// AFI 16389 (48-bit MAC), as some deployments send.
    Mac48,
}

/// One LISP address of any supported family.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Address {
    /// AFI 0: no address (e.g. a Map-Request source EID when refreshing).
    None,
    Ipv4(Ipv4Addr),
    Ipv6(Ipv6Addr),
    Mac {
        addr: [u8; 6],
        afi: MacAfi,
    },
    /// AFI 17: an ASCII name without its terminating NUL (which is added on the wire).
    DistinguishedName(Vec<u8>),
    Lcaf(Box<Lcaf>),
}

impl From<IpAddr> for Address {
    fn from(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(a) => Address::Ipv4(a),
            IpAddr::V6(a) => Address::Ipv6(a),
        }
    }
}

impl From<Ipv4Addr> for Address {
    fn from(a: Ipv4Addr) -> Self {
        Address::Ipv4(a)
    }
}

impl From<Ipv6Addr> for Address {
    fn from(a: Ipv6Addr) -> Self {
        Address::Ipv6(a)
    }
}

impl From<Lcaf> for Address {
    fn from(l: Lcaf) -> Self {
        Address::Lcaf(Box::new(l))
    }
}

impl Address {
    /// The AFI this address is encoded with.
    pub fn afi(&self) -> u16 {
        match self {
            Address::None => afi::NONE,
            Address::Ipv4(_) => afi::IPV4,
            Address::Ipv6(_) => afi::IPV6,
            Address::Mac { afi: MacAfi::Ieee802, .. } => afi::MAC,
            Address::Mac { afi: MacAfi::Mac48, .. } => afi::MAC48,
            Address::DistinguishedName(_) => afi::DISTINGUISHED_NAME,
            Address::Lcaf(_) => afi::LCAF,
        }
    }

    /// The IP address, if this is a plain IPv4 or IPv6 address.
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Address::Ipv4(a) => Some(IpAddr::V4(*a)),
            Address::Ipv6(a) => Some(IpAddr::V6(*a)),
            _ => None,
        }
    }

    /// The longest mask length that makes sense for this address in an EID-record, or `None`
    /// where a mask length has no defined bound (most LCAFs).
    pub fn max_mask_len(&self) -> Option<u8> {
        match self {
            Address::None => Some(0),
            Address::Ipv4(_) => Some(32),
            Address::Ipv6(_) => Some(128),
            Address::Mac { .. } => Some(48),
            Address::DistinguishedName(_) => None,
            Address::Lcaf(l) => l.max_mask_len(),
        }
    }

    /// Encoded length including the AFI.
    pub fn wire_len(&self) -> usize {
        2 + match self {
            Address::None => 0,
            Address::Ipv4(_) => 4,
            Address::Ipv6(_) => 16,
            Address::Mac { .. } => 6,
            Address::DistinguishedName(n) => n.len() + 1,
            Address::Lcaf(l) => l.wire_len_after_afi(),
        }
    }

    #[inline]
    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self> {
        Self::read_nested(r, 0)
    }

    /// Reads an address inside `depth` enclosing LCAFs. The fixed-size families are decoded
    /// here, inline in every caller (they are nearly every locator); the rest out of line.
    #[inline]
    pub(crate) fn read_nested(r: &mut Reader<'_>, depth: usize) -> Result<Self> {
        let at = r.at();
        let afi = r.u16("AFI")?;
        Ok(match afi {
            afi::NONE => Address::None,
            afi::IPV4 => Address::Ipv4(Ipv4Addr::from(r.array::<4>("IPv4 address")?)),
            afi::IPV6 => Address::Ipv6(Ipv6Addr::from(r.array::<16>("IPv6 address")?)),
            _ => Self::read_variable(r, afi, at, depth)?,
        })
    }

    /// The families [`Address::read_nested`] does not decode inline, after their AFI.
    fn read_variable(r: &mut Reader<'_>, afi: u16, at: usize, depth: usize) -> Result<Self> {
        Ok(match afi {
            afi::MAC => Address::Mac { addr: r.array("MAC address")?, afi: MacAfi::Ieee802 },
            afi::MAC48 => Address::Mac { addr: r.array("MAC address")?, afi: MacAfi::Mac48 },
            afi::DISTINGUISHED_NAME => {
                let rest = r.rest();
                let Some(len) = rest.iter().position(|&b| b == 0) else {
                    return Err(Error::Truncated { what: "distinguished name terminator", at: r.at(), need: 1 });
                };
                let name = r.bytes(len, "distinguished name")?.to_vec();
                r.u8("distinguished name terminator")?;
                Address::DistinguishedName(name)
            }
            afi::LCAF => {
                if depth >= MAX_DEPTH {
                    return Err(Error::TooDeep { at });
                }
                Address::Lcaf(Box::new(Lcaf::read_after_afi(r, depth + 1)?))
            }
            _ => return Err(Error::UnknownAfi { afi, at }),
        })
    }

    /// Writes the address; IPv4 (nearly every RLOC) inline, AFI and address in one access.
    #[inline]
    pub(crate) fn write(&self, w: &mut Writer<'_>) {
        match self {
            Address::Ipv4(a) => {
                let [a0, a1, a2, a3] = a.octets();
                let [f0, f1] = afi::IPV4.to_be_bytes();
                w.bytes(&[f0, f1, a0, a1, a2, a3]);
            }
            _ => self.write_other(w),
        }
    }

    fn write_other(&self, w: &mut Writer<'_>) {
        w.u16(self.afi());
        match self {
            Address::None => {}
            Address::Ipv4(a) => w.bytes(&a.octets()),
            Address::Ipv6(a) => w.bytes(&a.octets()),
            Address::Mac { addr, .. } => w.bytes(addr),
            Address::DistinguishedName(n) => {
                w.bytes(n);
                w.u8(0);
            }
            Address::Lcaf(l) => l.write_after_afi(w),
        }
    }
}

impl core::fmt::Display for Address {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Address::None => f.write_str("(none)"),
            Address::Ipv4(a) => write!(f, "{a}"),
            Address::Ipv6(a) => write!(f, "{a}"),
            Address::Mac { addr: m, .. } => {
                write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
            }
            Address::DistinguishedName(n) => write!(f, "'{}'", String::from_utf8_lossy(n)),
            Address::Lcaf(l) => write!(f, "{l}"),
        }
    }
}

crate::buf::impl_wire!(Address);

#[cfg(any(test, feature = "proptest"))]
pub mod strategy {
    //! proptest strategies for addresses.
    use super::*;
    use proptest::prelude::*;

    /// A plain (non-LCAF) address of any family.
    pub fn plain_address() -> impl Strategy<Value = Address> {
        prop_oneof![
            Just(Address::None),
            any::<[u8; 4]>().prop_map(|a| Address::Ipv4(a.into())),
            any::<[u8; 16]>().prop_map(|a| Address::Ipv6(a.into())),
            (any::<[u8; 6]>(), prop_oneof![Just(MacAfi::Ieee802), Just(MacAfi::Mac48)])
                .prop_map(|(addr, afi)| Address::Mac { addr, afi }),
            proptest::collection::vec(1u8..=255, 0..24).prop_map(Address::DistinguishedName),
        ]
    }

    /// An IPv4 or IPv6 address.
    pub fn ip_address() -> impl Strategy<Value = Address> {
        prop_oneof![
            any::<[u8; 4]>().prop_map(|a| Address::Ipv4(a.into())),
            any::<[u8; 16]>().prop_map(|a| Address::Ipv6(a.into())),
        ]
    }

    /// Any address, LCAFs included (nested a few levels).
    pub fn address() -> impl Strategy<Value = Address> {
        plain_address().prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                2 => plain_address(),
                1 => crate::lcaf::strategy::lcaf(inner).prop_map(Address::from),
            ]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buf::Wire;
    use proptest::prelude::*;

    #[test]
    fn golden_plain() {
        assert_eq!(Address::Ipv4("10.1.2.3".parse().unwrap()).to_bytes(), [0, 1, 10, 1, 2, 3]);
        assert_eq!(Address::None.to_bytes(), [0, 0]);
        let mac = Address::Mac { addr: [0, 0, 0x5e, 0, 1, 1], afi: MacAfi::Mac48 };
        assert_eq!(mac.to_bytes(), [0x40, 0x05, 0, 0, 0x5e, 0, 1, 1]);
        assert_eq!(Address::DistinguishedName(b"ab".to_vec()).to_bytes(), [0, 17, b'a', b'b', 0]);
        assert_eq!(
            Address::parse(&[0, 6, 1, 2, 3, 4, 5, 6]).unwrap(),
            Address::Mac { addr: [1, 2, 3, 4, 5, 6], afi: MacAfi::Ieee802 }
        );
    }

    #[test]
    fn bad_input() {
        assert_eq!(Address::parse(&[0, 99, 1]), Err(Error::UnknownAfi { afi: 99, at: 0 }));
        assert!(matches!(Address::parse(&[0, 1, 1, 2]), Err(Error::Truncated { at: 2, need: 2, .. })));
        assert!(matches!(Address::parse(&[0, 17, b'a']), Err(Error::Truncated { .. })));
        assert!(matches!(Address::parse(&[0, 1, 1, 2, 3, 4, 5]), Err(Error::TrailingBytes { len: 1, at: 6 })));
    }

    proptest! {
        #[test]
        fn round_trip(a in strategy::address()) {
            let bytes = a.to_bytes();
            prop_assert_eq!(bytes.len(), a.wire_len());
            prop_assert_eq!(Address::parse(&bytes).unwrap(), a);
        }

        #[test]
        fn parse_never_panics_and_reemits(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok((a, notes)) = Address::parse_noting(&bytes) {
                if notes.is_clean() {
                    prop_assert_eq!(a.to_bytes(), bytes);
                }
            }
        }
    }
}
