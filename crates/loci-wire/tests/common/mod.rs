//! Sample messages shared by the integration tests, the fuzz seed corpus and the benches: one of
//! every control message kind, every LCAF type, every address family and the data-header
//! variants, built with loci-wire itself.
#![allow(dead_code)] // each test crate uses a different part

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use self::Tshark::{Full, Partial, Skip};
use loci_wire::auth::SendPolicy;
use loci_wire::data::DataHeaderRepr;
use loci_wire::ecm::{Ecm, EcmAuth, EidAd};
use loci_wire::info::InfoMessage;
use loci_wire::lcaf::{ElpHop, RleEntry};
use loci_wire::map_notify::MapNotify;
use loci_wire::map_referral::{sig_algorithm, MapReferral, ReferralAction, ReferralRecord, Signature};
use loci_wire::map_register::{MapRegister, XtrId};
use loci_wire::map_reply::MapReply;
use loci_wire::map_request::{EidRequest, MapRequest};
use loci_wire::message::ControlMessage;
use loci_wire::shared_ext::SharedExtension;
use loci_wire::{Action, Address, Lcaf, Locator, MacAfi, MapRecord, Wire};

/// The pre-shared key the signed samples use (key ID 1).
pub const SECRET: &[u8] = b"loci-sample-secret";
pub const KEY_ID: u8 = 1;

/// A control message sample.
pub struct Control {
    pub name: &'static str,
    pub msg: ControlMessage,
    pub tshark: Tshark,
}

/// How much of a sample Wireshark 4.0 dissects (the tshark test checks what it can).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tshark {
    Full,
    /// Dissected up to a trailing part Wireshark does not know (said why), shown as data.
    Partial(&'static str),
    /// Not dissected at all (said why): left out of the capture.
    Skip(&'static str),
}

pub fn v4(s: &str) -> Address {
    Address::Ipv4(s.parse().unwrap())
}

pub fn v6(s: &str) -> Address {
    Address::Ipv6(s.parse().unwrap())
}

pub fn locator(priority: u8, weight: u8, address: Address) -> Locator {
    Locator { priority, weight, m_priority: 255, m_weight: 0, local: false, probed: false, reachable: true, address }
}

pub fn record(eid: Address, eid_mask_len: u8, locators: Vec<Locator>) -> MapRecord {
    MapRecord { ttl: 1440, eid_mask_len, action: Action::NO_ACTION, authoritative: true, map_version: 0, eid, locators }
}

pub fn xtr_id() -> XtrId {
    XtrId { xtr_id: 0x0011_2233_4455_6677_8899_aabb_ccdd_eeff, site_id: 0x5151_5151_0000_0001 }
}

/// The Map-Register the benches time: one IPv4 record with two locators, unsigned.
pub fn map_register_1rec_2loc() -> MapRegister {
    MapRegister {
        proxy_reply: false,
        security: false,
        eid_notify: false,
        use_ttl: false,
        merge: false,
        want_map_notify: true,
        nonce: 0x0102_0304_0506_0708,
        key_id: 0,
        algorithm_id: 0,
        auth_data: Vec::new(),
        records: vec![record(
            v4("10.1.0.0"),
            16,
            vec![locator(1, 50, v4("192.0.2.1")), locator(1, 50, v4("198.51.100.1"))],
        )],
        xtr_id: None,
    }
}

/// Signs `reg` with [`SECRET`] and the default policy (HMAC-SHA-256, full 32-byte MAC).
pub fn signed(mut reg: MapRegister) -> MapRegister {
    reg.to_signed_bytes(KEY_ID, SECRET, &SendPolicy::default()).unwrap();
    reg
}

fn signed_notify(mut n: MapNotify) -> MapNotify {
    n.to_signed_bytes(KEY_ID, SECRET, &SendPolicy::default()).unwrap();
    n
}

pub fn map_request_plain() -> MapRequest {
    MapRequest {
        authoritative: false,
        probe: false,
        smr: false,
        pitr: false,
        smr_invoked: false,
        local_xtr: false,
        dont_map_reply: false,
        nonce: 0x1111_2222_3333_4444,
        source_eid: v4("10.1.1.1"),
        itr_rlocs: vec![v4("192.0.2.1")],
        records: vec![EidRequest { notify: false, eid_mask_len: 32, eid: v4("10.2.2.2") }],
        map_reply: None,
        xtr_id: None,
    }
}

pub fn map_reply_positive() -> MapReply {
    MapReply {
        probe: false,
        echo_nonce_capable: true,
        security: false,
        nonce: 0x1111_2222_3333_4444,
        records: vec![
            record(
                v4("10.2.0.0"),
                16,
                vec![locator(1, 50, v4("198.51.100.1")), locator(2, 50, v6("2001:db8:ffff::1"))],
            ),
            record(v6("2001:db8:2::"), 48, vec![locator(1, 100, v6("2001:db8:ffff::2"))]),
        ],
        auth: None,
    }
}

fn lcaf(l: Lcaf) -> Address {
    l.into()
}

fn rle() -> Address {
    lcaf(Lcaf::ReplicationList(vec![
        RleEntry { level: 0, address: v4("203.0.113.1") },
        RleEntry { level: 1, address: v6("2001:db8:ffff::3") },
    ]))
}

fn elp() -> Address {
    lcaf(Lcaf::ExplicitLocatorPath(vec![
        ElpHop { lookup: true, probe: false, strict: false, address: v4("203.0.113.10") },
        ElpHop { lookup: false, probe: true, strict: true, address: v4("203.0.113.11") },
    ]))
}

fn nat_lcaf() -> Address {
    lcaf(Lcaf::NatTraversal {
        ms_port: 4342,
        etr_port: 61001,
        global_etr_rloc: v4("198.51.100.7"),
        ms_rloc: v4("192.0.2.10"),
        private_etr_rloc: v4("10.0.0.2"),
        rtr_rlocs: vec![v4("203.0.113.5"), v4("203.0.113.6")],
    })
}

/// Every control message sample.
pub fn controls() -> Vec<Control> {
    let c = |name, msg, tshark| Control { name, msg, tshark };
    let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
    let mut out = Vec::new();

    // Map-Requests.
    let plain = map_request_plain();
    out.push(c("map_request_plain", ControlMessage::MapRequest(plain.clone()), Full));
    let pubsub = MapRequest {
        nonce: 0x2222_3333_4444_5555,
        itr_rlocs: vec![v4("192.0.2.1"), v6("2001:db8:ffff::1")],
        records: vec![EidRequest {
            notify: true,
            eid_mask_len: 16,
            eid: Address::with_iid(1000, Ipv4Addr::new(10, 3, 0, 0)),
        }],
        xtr_id: Some(xtr_id()),
        ..plain.clone()
    };
    out.push(c(
        "map_request_pubsub",
        ControlMessage::MapRequest(pubsub),
        Partial("Wireshark 4.0 predates RFC 9437: it ignores the I bit and shows the xTR-ID and Site-ID as data"),
    ));
    let with_reply = MapRequest {
        smr_invoked: true,
        nonce: 0x3333_4444_5555_6666,
        source_eid: v6("2001:db8:1::1"),
        itr_rlocs: vec![v6("2001:db8:ffff::1")],
        records: vec![EidRequest { notify: false, eid_mask_len: 128, eid: v6("2001:db8:2::2") }],
        map_reply: Some(record(
            v6("2001:db8:1::"),
            48,
            vec![locator(1, 50, v6("2001:db8:ffff::1")), locator(1, 50, v4("192.0.2.1"))],
        )),
        ..plain.clone()
    };
    out.push(c("map_request_with_map_reply", ControlMessage::MapRequest(with_reply), Full));

    // Map-Replies.
    out.push(c("map_reply_positive", ControlMessage::MapReply(map_reply_positive()), Full));
    let negative = MapReply::negative(0x4444_5555_6666_7777, v4("10.9.0.0"), 16, 15, Action::NATIVE_FORWARD);
    out.push(c("map_reply_negative", ControlMessage::MapReply(negative), Full));
    let lcaf_locators = MapReply {
        nonce: 0x5555_6666_7777_8888,
        records: vec![record(
            Address::with_iid(7, Ipv4Addr::new(10, 7, 0, 0)),
            16,
            vec![
                locator(1, 0, lcaf(Lcaf::AfiList(vec![v4("192.0.2.7"), v6("2001:db8:ffff::7")]))),
                locator(2, 0, elp()),
                locator(3, 0, rle()),
            ],
        )],
        ..map_reply_positive()
    };
    out.push(c("map_reply_lcaf_locators", ControlMessage::MapReply(lcaf_locators), Full));
    let source_dest = MapReply {
        nonce: 0x6666_7777_8888_9999,
        records: vec![record(
            lcaf(Lcaf::source_dest(Ipv4Addr::new(10, 1, 0, 0), 16, Ipv4Addr::new(10, 2, 0, 0), 16)),
            0,
            vec![locator(1, 100, v4("198.51.100.1"))],
        )],
        ..map_reply_positive()
    };
    out.push(c("map_reply_source_dest", ControlMessage::MapReply(source_dest), Full));
    let mac = Address::Mac { addr: [0x00, 0x00, 0x5e, 0x00, 0x53, 0x01], afi: MacAfi::Ieee802 };
    let mac_dn = MapReply {
        nonce: 0x7777_8888_9999_aaaa,
        records: vec![
            record(mac, 48, vec![locator(1, 100, v4("198.51.100.1"))]),
            record(Address::DistinguishedName(b"host.example".to_vec()), 0, vec![locator(1, 100, v4("198.51.100.2"))]),
        ],
        ..map_reply_positive()
    };
    out.push(c("map_reply_mac_and_dn", ControlMessage::MapReply(mac_dn), Full));
    let eui48 = MapReply {
        nonce: 0x8888_9999_aaaa_bbbb,
        records: vec![record(
            Address::Mac { addr: [0x00, 0x00, 0x5e, 0x00, 0x53, 0x02], afi: MacAfi::Mac48 },
            48,
            vec![locator(1, 100, v4("198.51.100.1"))],
        )],
        ..map_reply_positive()
    };
    out.push(c("map_reply_mac48_afi", ControlMessage::MapReply(eui48), Full));
    let key_json = MapReply {
        nonce: 0x9999_aaaa_bbbb_cccc,
        records: vec![record(
            lcaf(Lcaf::Json { binary: false, json: br#"{"site":"a"}"#.to_vec(), address: v4("10.5.0.0") }),
            0,
            vec![locator(
                1,
                100,
                lcaf(Lcaf::SecurityKey {
                    key_algorithm: 1,
                    revoke: false,
                    keys: vec![vec![0xab; 16]],
                    locator: v4("198.51.100.1"),
                }),
            )],
        )],
        ..map_reply_positive()
    };
    // Wireshark 4.0 steps over the JSON (14) and Security Key (11) LCAF bodies by their length
    // ("Not dissected yet", a warning) and checks the rest.
    out.push(c("map_reply_json_security_key", ControlMessage::MapReply(key_json), Full));

    // Map-Registers (signed with HMAC-SHA-256, full 32-byte MAC).
    let reg = signed(MapRegister { xtr_id: Some(xtr_id()), ..map_register_1rec_2loc() });
    out.push(c("map_register_signed_xtr_id", ControlMessage::MapRegister(reg.clone()), Full));
    let reg_iid = signed(MapRegister {
        nonce: 0x0102_0304_0506_0709,
        merge: true,
        records: vec![record(
            Address::with_iid(1000, Ipv4Addr::new(10, 3, 0, 0)),
            16,
            vec![locator(1, 100, v4("192.0.2.1"))],
        )],
        ..map_register_1rec_2loc()
    });
    out.push(c("map_register_iid", ControlMessage::MapRegister(reg_iid), Full));

    // Map-Notify answering the Map-Register, and an unsolicited one with its ack.
    out.push(c("map_notify", ControlMessage::MapNotify(signed_notify(MapNotify::acknowledging(&reg))), Full));
    let unsolicited =
        MapNotify { nonce: 0x0000_0000_0000_0042, xtr_id: Some(xtr_id()), ..MapNotify::acknowledging(&reg) };
    out.push(c("map_notify_xtr_id", ControlMessage::MapNotify(signed_notify(unsolicited.clone())), Full));
    out.push(c(
        "map_notify_ack",
        ControlMessage::MapNotify(signed_notify(unsolicited.to_ack())),
        Skip("Wireshark 4.0 does not know type 5 (Map-Notify-Ack, RFC 9301 §5.7): 'Unknown LISP Control Packet'"),
    ));

    // ECMs carrying the plain Map-Request over IPv4 and the pub/sub one over IPv6.
    let ecm4 = Ecm::new(ip("10.1.1.1"), 61000, ip("10.2.2.2"), 4342, plain.to_bytes());
    out.push(c("ecm_ipv4", ControlMessage::Ecm(ecm4), Full));
    let inner6 = MapRequest { source_eid: v6("2001:db8:1::1"), ..map_request_plain() };
    let ecm6 =
        Ecm { to_ms: true, ..Ecm::new(ip("2001:db8:1::1"), 61000, ip("2001:db8:2::2"), 4342, inner6.to_bytes()) };
    out.push(c("ecm_ipv6", ControlMessage::Ecm(ecm6), Full));
    let ecm_sec = Ecm {
        auth: Some(EcmAuth {
            requested_hmac_id: 2,
            key_id: 1,
            otk_wrap_id: 1,
            otk: [[0u8; 8], [0x11; 8], [0x22; 8]].concat(),
            eid_ad: EidAd { kdf_id: 2, content: None },
        }),
        ..Ecm::new(ip("10.1.1.1"), 61000, ip("10.2.2.2"), 4342, plain.to_bytes())
    };
    out.push(c(
        "ecm_lisp_sec",
        ControlMessage::Ecm(ecm_sec),
        Skip("Wireshark 4.0 does not dissect LISP-SEC authentication data in an ECM"),
    ));

    // Map-Referral.
    let referral = MapReferral {
        nonce: 0xaaaa_bbbb_cccc_dddd,
        records: vec![ReferralRecord {
            ttl: 1440,
            eid_mask_len: 8,
            action: ReferralAction::MS_REFERRAL,
            authoritative: true,
            incomplete: false,
            map_version: 0,
            eid: v4("10.0.0.0"),
            referrals: vec![locator(1, 50, v4("192.0.2.20")), locator(1, 50, v6("2001:db8:ffff::20"))],
            signatures: Vec::new(),
        }],
    };
    out.push(c("map_referral", ControlMessage::MapReferral(referral.clone()), Full));
    let mut signed_referral = referral;
    signed_referral.records[0].signatures.push(Signature {
        original_ttl: 1440,
        expiration: 1_900_000_000,
        inception: 1_700_000_000,
        key_tag: 7,
        algorithm: sig_algorithm::RSA_SHA256,
        signature: vec![0x5a; 32],
    });
    out.push(c(
        "map_referral_signed",
        ControlMessage::MapReferral(signed_referral),
        Partial("Wireshark 4.0 does not dissect Map-Referral signature sections (RFC 8111 §6.4.1)"),
    ));

    // Info-Request and Info-Reply (NAT traversal).
    let info_request = InfoMessage {
        reply: false,
        nonce: 0xbbbb_cccc_dddd_eeee,
        key_id: 0,
        algorithm_id: 2,
        auth_data: vec![0x77; 16],
        ttl: 0,
        eid_mask_len: 24,
        eid: v4("10.4.4.0"),
        reply_address: Address::None,
    };
    out.push(c("info_request", ControlMessage::Info(info_request.clone()), Full));
    let info_reply = InfoMessage { reply: true, ttl: 1440, reply_address: nat_lcaf(), ..info_request };
    out.push(c("info_reply_nat", ControlMessage::Info(info_reply), Full));

    // Shared Extension Message (RFC 9304).
    let shared = SharedExtension { sub_type: 1, body: vec![0, 0, 0xde, 0xad, 0xbe, 0xef] };
    out.push(c(
        "shared_extension",
        ControlMessage::SharedExtension(shared),
        Skip("Wireshark 4.0 does not know type 15 (RFC 9304): 'Unknown LISP Control Packet'"),
    ));

    out
}

/// A data-header sample; the tshark test puts an inner packet of the given family after it.
pub struct Data {
    pub name: &'static str,
    pub header: DataHeaderRepr,
    pub inner_ipv6: bool,
}

pub fn data_headers() -> Vec<Data> {
    let d = |name, header, inner_ipv6| Data { name, header, inner_ipv6 };
    vec![
        d(
            "data_nonce_iid",
            DataHeaderRepr { nonce: Some(0xabcdef), instance_id: Some(1000), ..Default::default() },
            false,
        ),
        d("data_lsb", DataHeaderRepr { nonce: Some(0x123456), lsb: Some(0b11), ..Default::default() }, false),
        d("data_map_version", DataHeaderRepr { map_version: Some((1, 2)), ..Default::default() }, false),
        d(
            "data_echo_iid_lsb8_ipv6",
            DataHeaderRepr {
                nonce: Some(0x010203),
                echo_nonce_request: true,
                instance_id: Some(0xfffffe),
                lsb: Some(0x81),
                ..Default::default()
            },
            true,
        ),
    ]
}

/// Every address used in the samples (seeds for the address fuzz target), LCAFs included.
pub fn addresses() -> Vec<(&'static str, Address)> {
    vec![
        ("none", Address::None),
        ("ipv4", v4("10.1.1.1")),
        ("ipv6", v6("2001:db8::1")),
        ("mac_ieee802", Address::Mac { addr: [0, 0, 0x5e, 0, 0x53, 1], afi: MacAfi::Ieee802 }),
        ("mac48", Address::Mac { addr: [0, 0, 0x5e, 0, 0x53, 2], afi: MacAfi::Mac48 }),
        ("distinguished_name", Address::DistinguishedName(b"host.example".to_vec())),
        ("lcaf_iid", Address::with_iid(1000, Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1))),
        ("lcaf_iid_range", lcaf(Lcaf::iid_range(0x0500_0000, 8))),
        ("lcaf_afi_list", lcaf(Lcaf::AfiList(vec![v4("192.0.2.1"), v6("2001:db8::1")]))),
        ("lcaf_nat", nat_lcaf()),
        ("lcaf_elp", elp()),
        ("lcaf_rle", rle()),
        (
            "lcaf_iid_source_dest",
            Address::with_iid(5, Lcaf::source_dest(Ipv4Addr::new(10, 0, 0, 0), 8, Ipv4Addr::new(20, 1, 0, 0), 16)),
        ),
        ("lcaf_unknown", lcaf(Lcaf::Unknown { lcaf_type: 99, rsvd1: 1, flags: 2, rsvd2: 3, body: vec![1, 2, 3] })),
    ]
}
