//! EID prefixes: an IP prefix inside an instance ID (RFC 9300 §3, RFC 8060 §4.1).
//!
//! The same IP prefix in two instance IDs names two unrelated address spaces, so the IID is part
//! of every comparison: prefixes in different IIDs never contain or overlap each other.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;

/// An IP prefix inside an instance ID, normalized so that its host bits are zero.
///
/// Build it with [`EidPrefix::new`] (or parse it) to keep that invariant: equality, ordering and
/// hashing compare the stored bits, so `10.1.0.1/16` built by hand would differ from
/// `10.1.0.0/16`. Ordered by IID, then IPv4 before IPv6, then address, then length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EidPrefix {
    pub iid: u32,
    pub net: IpNet,
}

impl EidPrefix {
    /// The prefix `net` in instance `iid`, with host bits cleared.
    pub fn new(iid: u32, net: IpNet) -> Self {
        Self { iid, net: net.trunc() }
    }

    /// The host prefix (/32 or /128) of one address.
    pub fn host(iid: u32, ip: IpAddr) -> Self {
        Self { iid, net: IpNet::from(ip) }
    }

    /// The prefix of length `len` around `ip`, or `None` if `len` exceeds the address width.
    pub fn around(iid: u32, ip: IpAddr, len: u8) -> Option<Self> {
        IpNet::new(ip, len).ok().map(|net| Self::new(iid, net))
    }

    pub fn prefix_len(&self) -> u8 {
        self.net.prefix_len()
    }

    pub fn is_ipv4(&self) -> bool {
        matches!(self.net, IpNet::V4(_))
    }

    /// Whether this is a single address (/32 or /128).
    pub fn is_host(&self) -> bool {
        self.net.prefix_len() == self.net.max_prefix_len()
    }

    /// Whether `ip` (taken to be in this prefix's instance) is inside this prefix.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.net.contains(&ip)
    }

    /// Whether `other` is equal to or more specific than `self`, in the same instance.
    pub fn covers(&self, other: &EidPrefix) -> bool {
        self.iid == other.iid && self.net.contains(&other.net)
    }

    /// Whether the two prefixes share any address: for prefixes, one covers the other.
    pub fn overlaps(&self, other: &EidPrefix) -> bool {
        self.covers(other) || other.covers(self)
    }
}

/// `10.1.0.0/16` in instance 0, `[1000]10.1.0.0/16` otherwise.
impl fmt::Display for EidPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.iid != 0 {
            write!(f, "[{}]", self.iid)?;
        }
        write!(f, "{}", self.net)
    }
}

/// Why a string is not an EID prefix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EidParseError {
    #[error("EID prefix {input:?}: '[' without a closing ']' around the instance ID")]
    UnclosedInstanceId { input: String },
    #[error("EID prefix {input:?}: instance ID is not a number in 0..=4294967295")]
    BadInstanceId {
        input: String,
        #[source]
        source: std::num::ParseIntError,
    },
    #[error("EID prefix {input:?}: expected an IP prefix such as 10.1.0.0/16 or 2001:db8::/32")]
    BadPrefix {
        input: String,
        #[source]
        source: ipnet::AddrParseError,
    },
}

/// Accepts `10.1.0.0/16`, `[1000]10.1.0.0/16`, `2001:db8::/32`, and a bare address as its host
/// prefix (`10.1.1.1` is `10.1.1.1/32`). Host bits are cleared, as in [`EidPrefix::new`].
impl FromStr for EidPrefix {
    type Err = EidParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let input = || s.to_owned();
        let (iid, rest) = match s.strip_prefix('[') {
            Some(tail) => {
                let (iid, rest) =
                    tail.split_once(']').ok_or_else(|| EidParseError::UnclosedInstanceId { input: input() })?;
                let iid =
                    iid.trim().parse().map_err(|source| EidParseError::BadInstanceId { input: input(), source })?;
                (iid, rest.trim_start())
            }
            None => (0, s),
        };
        let net = match rest.parse::<IpNet>() {
            Ok(net) => net,
            Err(source) => match rest.parse::<IpAddr>() {
                Ok(ip) => IpNet::from(ip),
                Err(_) => return Err(EidParseError::BadPrefix { input: input(), source }),
            },
        };
        Ok(Self::new(iid, net))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> EidPrefix {
        s.parse().expect("test prefix")
    }

    #[test]
    fn parse_and_display_round_trip() {
        for s in ["10.1.0.0/16", "[1000]10.1.0.0/16", "[7]2001:db8::/32", "0.0.0.0/0", "[4294967295]::/0"] {
            assert_eq!(p(s).to_string(), s);
        }
        assert_eq!(p("[0]10.1.0.0/16"), p("10.1.0.0/16"));
        assert_eq!(p("10.1.1.1"), p("10.1.1.1/32"));
        assert_eq!(p("[3]2001:db8::1"), EidPrefix::host(3, "2001:db8::1".parse().unwrap()));
    }

    #[test]
    fn host_bits_are_cleared() {
        assert_eq!(p("10.1.2.3/16").to_string(), "10.1.0.0/16");
        assert_eq!(EidPrefix::new(5, "2001:db8::1/64".parse().unwrap()).to_string(), "[5]2001:db8::/64");
        assert_eq!(p("[9]10.200.0.1/9"), p("[9]10.128.0.0/9"));
    }

    #[test]
    fn parse_errors_name_the_input() {
        let e = "[12".parse::<EidPrefix>().unwrap_err();
        assert!(matches!(e, EidParseError::UnclosedInstanceId { .. }));
        let e = "[x]10.0.0.0/8".parse::<EidPrefix>().unwrap_err();
        assert!(matches!(e, EidParseError::BadInstanceId { .. }));
        assert!(e.to_string().contains("[x]10.0.0.0/8"));
        let e = "10.0.0.0/33".parse::<EidPrefix>().unwrap_err();
        assert!(matches!(e, EidParseError::BadPrefix { .. }));
        assert!("".parse::<EidPrefix>().is_err());
        assert!("[1]".parse::<EidPrefix>().is_err());
        assert!("[4294967296]10.0.0.0/8".parse::<EidPrefix>().is_err());
    }

    #[test]
    fn containment_respects_instance_and_family() {
        let site = p("[1]10.1.0.0/16");
        assert!(site.contains("10.1.200.3".parse().unwrap()));
        assert!(!site.contains("10.2.0.1".parse().unwrap()));
        assert!(!site.contains("::a01:1".parse().unwrap()));
        assert!(site.covers(&p("[1]10.1.1.0/24")));
        assert!(site.covers(&site));
        assert!(!site.covers(&p("[2]10.1.1.0/24")));
        assert!(!site.covers(&p("[1]10.0.0.0/8")));
        assert!(site.overlaps(&p("[1]10.0.0.0/8")));
        assert!(!site.overlaps(&p("[1]10.2.0.0/16")));
        assert!(!p("0.0.0.0/0").overlaps(&p("::/0")));
        assert!(p("::/0").covers(&p("2001:db8::1/128")));
    }

    #[test]
    fn order_is_iid_then_family_then_address() {
        let mut v = [p("[2]10.0.0.0/8"), p("::/0"), p("10.0.0.0/16"), p("10.0.0.0/8"), p("9.0.0.0/8")];
        v.sort();
        let s: Vec<String> = v.iter().map(ToString::to_string).collect();
        assert_eq!(s, ["9.0.0.0/8", "10.0.0.0/8", "10.0.0.0/16", "::/0", "[2]10.0.0.0/8"]);
    }

    #[test]
    fn around_and_host() {
        let ip: IpAddr = "10.200.0.1".parse().unwrap();
        assert_eq!(EidPrefix::around(0, ip, 9), Some(p("10.128.0.0/9")));
        assert_eq!(EidPrefix::around(0, ip, 33), None);
        assert!(EidPrefix::host(0, ip).is_host());
        assert!(!p("10.0.0.0/8").is_host());
        assert!(p("10.0.0.0/8").is_ipv4());
    }
}
