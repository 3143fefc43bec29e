//! EID-records and RLOC-records (RFC 9301 §5.4), shared by Map-Reply, Map-Register, Map-Notify
//! and Map-Notify-Ack.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                          Record TTL                           |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! | Locator Count | EID mask-len  | ACT |A|      Reserved         |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! | Rsvd  |  Map-Version Number   |       EID-Prefix-AFI          |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                          EID-Prefix                           |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |    Priority   |    Weight     |  M Priority   |   M Weight    |  \
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+   Loc
//! |        Unused Flags     |L|p|R|           Loc-AFI             |   (Locator
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+    Count
//! |                             Locator                           |   times)
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+  /
//! ```

use crate::address::Address;
use crate::buf::{Reader, Writer};
use crate::error::{Error, Result};

/// The 3-bit ACT field of an EID-record: what to do with packets for a negative mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Action(u8);

impl Action {
    pub const NO_ACTION: Action = Action(0);
    pub const NATIVE_FORWARD: Action = Action(1);
    pub const SEND_MAP_REQUEST: Action = Action(2);
    pub const DROP_NO_REASON: Action = Action(3);
    pub const DROP_POLICY_DENIED: Action = Action(4);
    pub const DROP_AUTH_FAILURE: Action = Action(5);

    /// An action from its 3-bit code (higher bits are dropped).
    pub const fn from_bits(v: u8) -> Action {
        Action(v & 0x7)
    }

    pub const fn bits(self) -> u8 {
        self.0
    }

    pub fn name(self) -> &'static str {
        match self.0 {
            0 => "no-action",
            1 => "native-forward",
            2 => "send-map-request",
            3 => "drop",
            4 => "drop-policy-denied",
            5 => "drop-auth-failure",
            _ => "unassigned",
        }
    }
}

impl core::fmt::Display for Action {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// One RLOC-record.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Locator {
    /// Unicast priority; lower is preferred and 255 means "do not use for unicast".
    pub priority: u8,
    pub weight: u8,
    pub m_priority: u8,
    pub m_weight: u8,
    /// L: the locator is local to the sender of the message.
    pub local: bool,
    /// p: the locator is the one the RLOC-probe reply came from.
    pub probed: bool,
    /// R: the locator is reachable from the sender's point of view.
    pub reachable: bool,
    pub address: Address,
}

impl Locator {
    /// A local, reachable unicast locator with the usual defaults: priority 1, weight 100, no
    /// multicast (priority 255).
    pub fn new(address: impl Into<Address>) -> Self {
        Locator {
            priority: 1,
            weight: 100,
            m_priority: 255,
            m_weight: 0,
            local: true,
            probed: false,
            reachable: true,
            address: address.into(),
        }
    }

    /// The smallest possible encoding: 6 fixed bytes and an AFI-0 address.
    pub(crate) const MIN_LEN: usize = 8;

    pub fn wire_len(&self) -> usize {
        6 + self.address.wire_len()
    }

    // The fixed fields are read and written as one array: one bounds check instead of five.
    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self> {
        let [priority, weight, m_priority, m_weight, f0, f1] = r.array("locator priority/weight/flags")?;
        let flags = u16::from_be_bytes([f0, f1]);
        r.reserved(flags.into(), 0xfff8);
        let address = Address::read(r)?;
        Ok(Locator {
            priority,
            weight,
            m_priority,
            m_weight,
            local: flags & 0x4 != 0,
            probed: flags & 0x2 != 0,
            reachable: flags & 0x1 != 0,
            address,
        })
    }

    pub(crate) fn write(&self, w: &mut Writer<'_>) {
        let flags = u8::from(self.local) << 2 | u8::from(self.probed) << 1 | u8::from(self.reachable);
        w.bytes(&[self.priority, self.weight, self.m_priority, self.m_weight, 0, flags]);
        self.address.write(w);
    }
}

/// One EID-record with its RLOC-records (a mapping, or a negative mapping when it has none).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MapRecord {
    /// Minutes the mapping may be cached; `0xffffffff` means forever.
    pub ttl: u32,
    pub eid_mask_len: u8,
    pub action: Action,
    /// A: set by the ETR or Map-Server authoritative for the mapping.
    pub authoritative: bool,
    /// 12-bit map version (RFC 9302); 0 when versioning is not used.
    pub map_version: u16,
    pub eid: Address,
    pub locators: Vec<Locator>,
}

impl MapRecord {
    /// The smallest possible encoding: 10 fixed bytes and an AFI-0 EID.
    pub(crate) const MIN_LEN: usize = 12;

    pub fn wire_len(&self) -> usize {
        10 + self.eid.wire_len() + self.locators.iter().map(Locator::wire_len).sum::<usize>()
    }

    // The 10 fixed bytes are read and written as one array (see `Locator::read`).
    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self> {
        let mask_at = r.at() + 5;
        let [t0, t1, t2, t3, loc_count, eid_mask_len, a0, a1, v0, v1] = r.array("EID-record header")?;
        let ttl = u32::from_be_bytes([t0, t1, t2, t3]);
        let act = u16::from_be_bytes([a0, a1]);
        r.reserved(act.into(), 0x0fff);
        let version = u16::from_be_bytes([v0, v1]);
        r.reserved(version.into(), 0xf000);
        let eid = Address::read(r)?;
        check_mask(&eid, eid_mask_len, mask_at)?;
        let locators = r.list("locator", loc_count.into(), Locator::MIN_LEN, Locator::read)?;
        Ok(MapRecord {
            ttl,
            eid_mask_len,
            action: Action::from_bits((act >> 13) as u8),
            authoritative: act & 0x1000 != 0,
            map_version: version & 0x0fff,
            eid,
            locators,
        })
    }

    pub(crate) fn write(&self, w: &mut Writer<'_>) {
        let [t0, t1, t2, t3] = self.ttl.to_be_bytes();
        let act = self.action.bits() << 5 | u8::from(self.authoritative) << 4;
        let [v0, v1] = (self.map_version & 0x0fff).to_be_bytes();
        w.bytes(&[t0, t1, t2, t3, self.locators.len() as u8, self.eid_mask_len, act, 0, v0, v1]);
        self.eid.write(w);
        for l in &self.locators {
            l.write(w);
        }
    }

    /// Reads `count` records, refusing counts the remaining bytes cannot hold.
    pub(crate) fn read_list(r: &mut Reader<'_>, count: usize) -> Result<Vec<Self>> {
        r.list("record", count, Self::MIN_LEN, Self::read)
    }
}

/// Fails when `mask_len` exceeds the address's bits. `at` is the mask-len field's offset.
pub(crate) fn check_mask(addr: &Address, mask_len: u8, at: usize) -> Result<()> {
    match addr.max_mask_len() {
        Some(max) if mask_len > max => Err(Error::MaskTooLong { len: mask_len, max, at }),
        _ => Ok(()),
    }
}

#[cfg(any(test, feature = "proptest"))]
pub mod strategy {
    //! proptest strategies for records.
    use super::*;
    use crate::address::strategy::address;
    use proptest::prelude::*;

    pub fn locator() -> impl Strategy<Value = Locator> {
        (any::<[u8; 4]>(), any::<[bool; 3]>(), address()).prop_map(|(p, f, address)| Locator {
            priority: p[0],
            weight: p[1],
            m_priority: p[2],
            m_weight: p[3],
            local: f[0],
            probed: f[1],
            reachable: f[2],
            address,
        })
    }

    /// An EID address with a mask length valid for it.
    pub fn eid_with_mask() -> impl Strategy<Value = (Address, u8)> {
        address().prop_flat_map(|eid| {
            let max = eid.max_mask_len().unwrap_or(255);
            (Just(eid), 0..=max)
        })
    }

    pub fn map_record() -> impl Strategy<Value = MapRecord> {
        (any::<u32>(), eid_with_mask(), 0u8..8, any::<bool>(), 0u16..0x1000, proptest::collection::vec(locator(), 0..4))
            .prop_map(|(ttl, (eid, eid_mask_len), act, authoritative, map_version, locators)| MapRecord {
                ttl,
                eid_mask_len,
                action: Action::from_bits(act),
                authoritative,
                map_version,
                eid,
                locators,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buf::{Reader, Writer};
    use proptest::prelude::*;

    fn emit(rec: &MapRecord) -> Vec<u8> {
        let mut v = vec![0; rec.wire_len()];
        rec.write(&mut Writer::new(&mut v));
        v
    }

    #[test]
    fn golden() {
        let rec = MapRecord {
            ttl: 1440,
            eid_mask_len: 24,
            action: Action::NO_ACTION,
            authoritative: true,
            map_version: 0,
            eid: Address::Ipv4("10.1.1.0".parse().unwrap()),
            locators: vec![Locator {
                priority: 1,
                weight: 50,
                m_priority: 255,
                m_weight: 0,
                local: true,
                probed: false,
                reachable: true,
                address: Address::Ipv4("203.0.113.1".parse().unwrap()),
            }],
        };
        let expect = [
            0, 0, 0x05, 0xa0, // TTL 1440
            1, 24, 0x10, 0, // 1 locator, /24, A
            0, 0, 0, 1, 10, 1, 1, 0, // version 0, AFI 1, 10.1.1.0
            1, 50, 255, 0, 0, 5, 0, 1, 203, 0, 113, 1,
        ];
        assert_eq!(emit(&rec), expect);
        assert_eq!(MapRecord::read(&mut Reader::new(&expect)).unwrap(), rec);
    }

    #[test]
    fn bad_counts_and_masks() {
        let mut b = [0u8, 0, 0, 1, 200, 24, 0, 0, 0, 0, 0, 1, 10, 1, 1, 0];
        assert!(matches!(MapRecord::read(&mut Reader::new(&b)), Err(Error::CountTooLarge { count: 200, .. })));
        b[4] = 0;
        b[5] = 33;
        assert_eq!(MapRecord::read(&mut Reader::new(&b)), Err(Error::MaskTooLong { len: 33, max: 32, at: 5 }));
    }

    proptest! {
        #[test]
        fn round_trip(rec in strategy::map_record()) {
            let bytes = emit(&rec);
            let mut r = Reader::new(&bytes);
            prop_assert_eq!(MapRecord::read(&mut r).unwrap(), rec);
            prop_assert!(r.is_empty());
        }
    }
}
