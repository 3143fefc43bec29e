//! Interoperability check against Wireshark's LISP dissectors: every sample message built with
//! loci-wire is written to a pcap (Ethernet/IP/UDP around it, correct lengths and checksums),
//! tshark decodes it, and the test asserts that tshark finds nothing malformed, raises no expert
//! error, and reads the same type, nonce, record count, EID-prefixes and LCAF fields as we wrote.
//!
//! Samples Wireshark 4.0 cannot dissect (`Tshark::Skip` in `common`, which says why) stay out of
//! the capture (`LOCI_TSHARK_ALL=1` puts them in, to try a newer Wireshark); for those it
//! dissects only in part (`Tshark::Partial`) the rest must show as data. `LOCI_TSHARK_KEEP=FILE`
//! keeps a copy of the capture. Without tshark the test is skipped, except under CI
//! (`CI=true`), where it fails.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use etherparse::PacketBuilder;
use loci_wire::data::{DataHeader, DataHeaderRepr, HEADER_LEN, LISP_CONTROL_PORT, LISP_DATA_PORT};
use loci_wire::message::ControlMessage;
use loci_wire::{Address, Lcaf, Locator, Wire};
use pcap_file::pcap::{PcapPacket, PcapWriter};

/// The fields compared per frame; tshark prints them in this order.
const FIELDS: &[&str] = &[
    "frame.protocols",
    "lisp.type",
    "lisp.nonce",
    "lisp.records",
    "lisp.mreq.record.prefix.length",
    "lisp.mreq.record.prefix.ipv4",
    "lisp.mreq.record.prefix.ipv6",
    "lisp.mapping.eid.masklen",
    "lisp.mapping.eid.ipv4",
    "lisp.mapping.eid.ipv6",
    "lisp.mapping.eid.mac",
    "lisp.mapping.eid.dn",
    "lisp.info.prefix.masklen",
    "lisp.info.prefix.ipv4",
    "lisp.lcaf.iid",
    "lisp.lcaf.iid.ipv4",
    "lisp.lcaf.srcdst.src.masklen",
    "lisp.lcaf.srcdst.src.ipv4",
    "lisp.lcaf.srcdst.dst.masklen",
    "lisp.lcaf.srcdst.dst.ipv4",
    "lisp.lcaf.afi_list.ipv4",
    "lisp.lcaf.elp_hop.ipv4",
    "lisp.lcaf.rle_entry.ipv4",
    "lisp.lcaf.natt.msport",
    "lisp.lcaf.natt.etrport",
    "lisp.lcaf.natt.rloc.ipv4",
    "lisp.loc.locator",
    "lisp-data.flags",
    "lisp-data.nonce",
    "lisp-data.srcmapver",
    "lisp-data.dstmapver",
    "lisp-data.iid",
    "lisp-data.lsb",
    "lisp-data.lsb8",
];

/// Expected values by tshark field name.
type Fields = BTreeMap<String, String>;

/// One frame of the capture and what tshark must read in it (fields not listed must be empty).
struct Frame {
    name: &'static str,
    bytes: Vec<u8>,
    expect: Fields,
}

/// Removes the temporary directory even when an assertion fails.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tshark_installed() -> bool {
    Command::new("tshark").arg("--version").output().is_ok_and(|o| o.status.success())
}

#[test]
fn tshark_agrees_with_our_encodings() {
    if !tshark_installed() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "tshark is not installed, and CI=true requires this test to run (apt-get install tshark)"
        );
        println!("skipped: tshark not installed");
        return;
    }
    let frames = frames();
    let dir = TempDir(std::env::temp_dir().join(format!("loci-wire-tshark-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let pcap = dir.0.join("samples.pcap");
    write_pcap(&pcap, &frames);
    if let Some(keep) = std::env::var_os("LOCI_TSHARK_KEEP") {
        // For debugging a failure with Wireshark's GUI or `tshark -V`.
        std::fs::copy(&pcap, keep).unwrap();
    }

    let bad = flagged(&pcap, &frames);
    assert!(bad.is_empty(), "tshark found malformed frames or expert errors:\n{}", bad.join("\n"));

    // Warnings are not failures, but are shown for whoever reads the test output.
    let warn = tshark(
        &pcap,
        &["-Y", "_ws.expert.severity >= 6291456", "-E", "occurrence=a"],
        &["frame.number", "_ws.expert.message"],
    );
    if !warn.is_empty() {
        println!("tshark expert warnings (frame|messages):\n{warn}");
    }

    let out = tshark(&pcap, &["-E", "occurrence=f"], FIELDS);
    let rows: Vec<&str> = out.lines().collect();
    assert_eq!(rows.len(), frames.len(), "tshark printed one line per frame:\n{out}");
    let mut mismatches = Vec::new();
    for (frame, row) in frames.iter().zip(&rows) {
        let got: Vec<&str> = row.split('|').collect();
        assert_eq!(got.len(), FIELDS.len(), "{}: {row}", frame.name);
        for (field, value) in FIELDS.iter().zip(&got) {
            if *field == "frame.protocols" {
                let want = &frame.expect[*field];
                if !value.ends_with(want.as_str()) {
                    mismatches.push(format!("{}: protocols {value}, expected ...{want}", frame.name));
                }
                continue;
            }
            let want = frame.expect.get(*field).map_or("", String::as_str);
            if !value.eq_ignore_ascii_case(want) {
                mismatches.push(format!("{}: {field} = {value:?}, we wrote {want:?}", frame.name));
            }
        }
    }
    assert!(mismatches.is_empty(), "tshark disagrees:\n{}", mismatches.join("\n"));
    println!("tshark checked {} frames", frames.len());
}

/// The frames tshark finds malformed or raises an expert error on (PI_ERROR = 0x00800000).
fn flagged(pcap: &Path, frames: &[Frame]) -> Vec<String> {
    let out = tshark(
        pcap,
        &["-Y", "_ws.malformed || _ws.expert.severity >= 8388608", "-E", "occurrence=a"],
        &["frame.number", "_ws.expert.message", "_ws.col.Info"],
    );
    out.lines()
        .map(|l| {
            let n: usize = l.split('|').next().unwrap().parse().unwrap();
            format!("frame {n} ({}): {l}", frames[n - 1].name)
        })
        .collect()
}

/// The check above can fail: a Map-Reply cut short inside its record is flagged.
#[test]
fn tshark_flags_a_truncated_message() {
    if !tshark_installed() {
        println!("skipped: tshark not installed");
        return;
    }
    let reply = common::map_reply_positive().to_bytes();
    let cut = &reply[..20];
    let frames = [Frame {
        name: "truncated",
        bytes: udp_frame(false, LISP_CONTROL_PORT, LISP_CONTROL_PORT, cut),
        expect: Fields::new(),
    }];
    let dir = TempDir(std::env::temp_dir().join(format!("loci-wire-tshark-cut-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let pcap = dir.0.join("truncated.pcap");
    write_pcap(&pcap, &frames);
    assert_eq!(flagged(&pcap, &frames).len(), 1);
}

/// Runs tshark over `pcap`, printing `fields` separated by '|', and returns its stdout.
fn tshark(pcap: &Path, args: &[&str], fields: &[&str]) -> String {
    let mut cmd = Command::new("tshark");
    cmd.arg("-n").arg("-r").arg(pcap).args(["-T", "fields", "-E", "separator=|"]).args(args);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = cmd.output().expect("run tshark");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "tshark failed: {stderr}");
    String::from_utf8(out.stdout).expect("tshark output is UTF-8")
}

fn write_pcap(path: &Path, frames: &[Frame]) {
    let file = std::fs::File::create(path).unwrap();
    let mut w = PcapWriter::new(file).unwrap();
    for (i, f) in frames.iter().enumerate() {
        let packet = PcapPacket::new(Duration::from_millis(i as u64), f.bytes.len() as u32, &f.bytes);
        w.write_packet(&packet).unwrap();
    }
}

const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

/// Ethernet, IPv4 or IPv6, and UDP around `payload`, lengths and checksums filled in.
fn udp_frame(ipv6: bool, src_port: u16, dst_port: u16, payload: &[u8]) -> Vec<u8> {
    let eth = PacketBuilder::ethernet2(MAC_A, MAC_B);
    let mut out = Vec::new();
    if ipv6 {
        let src = "2001:db8:ffff::1".parse::<std::net::Ipv6Addr>().unwrap().octets();
        let dst = "2001:db8:ffff::2".parse::<std::net::Ipv6Addr>().unwrap().octets();
        eth.ipv6(src, dst, 64).udp(src_port, dst_port).write(&mut out, payload).unwrap();
    } else {
        eth.ipv4([192, 0, 2, 1], [192, 0, 2, 2], 64).udp(src_port, dst_port).write(&mut out, payload).unwrap();
    }
    out
}

fn frames() -> Vec<Frame> {
    let mut out = Vec::new();
    let all = std::env::var_os("LOCI_TSHARK_ALL").is_some();
    for (i, s) in common::controls().into_iter().enumerate() {
        if matches!(s.tshark, common::Tshark::Skip(_)) && !all {
            continue;
        }
        let bytes = s.msg.to_bytes();
        assert_eq!(ControlMessage::parse(&bytes).as_ref(), Ok(&s.msg), "{} round-trips", s.name);
        // Alternate the outer family so both are exercised.
        let frame = udp_frame(i % 2 == 1, LISP_CONTROL_PORT, LISP_CONTROL_PORT, &bytes);
        let mut expect = control_expectations(&s.msg);
        if let common::Tshark::Partial(_) = s.tshark {
            expect.insert("frame.protocols".into(), "lisp:data".into());
        }
        out.push(Frame { name: s.name, bytes: frame, expect });
    }
    for (seq, s) in common::data_headers().into_iter().enumerate() {
        let inner = inner_packet(s.inner_ipv6, seq as u16);
        // Encapsulate: room for the header, then write it in place through the view.
        let mut payload = vec![0u8; HEADER_LEN + inner.len()];
        payload[HEADER_LEN..].copy_from_slice(&inner);
        let mut view = DataHeader::new_checked(&mut payload[..]).unwrap();
        s.header.emit_header(&mut view);
        // Decapsulate: the view reads back what we wrote and the inner packet, uncopied.
        let view = DataHeader::new_checked(&payload[..]).unwrap();
        assert_eq!(DataHeaderRepr::from_header(&view).0, s.header, "{}", s.name);
        assert_eq!(view.payload(), &inner[..], "{}", s.name);
        let frame = udp_frame(false, 61000, LISP_DATA_PORT, &payload);
        out.push(Frame { name: s.name, bytes: frame, expect: data_expectations(&s.header, s.inner_ipv6) });
    }
    out
}

/// An ICMP echo request from one EID to another, the packet a LISP data header carries.
fn inner_packet(ipv6: bool, seq: u16) -> Vec<u8> {
    let mut out = Vec::new();
    if ipv6 {
        let src = "2001:db8:1::1".parse::<std::net::Ipv6Addr>().unwrap().octets();
        let dst = "2001:db8:2::2".parse::<std::net::Ipv6Addr>().unwrap().octets();
        PacketBuilder::ipv6(src, dst, 64).icmpv6_echo_request(1, seq).write(&mut out, b"loci").unwrap();
    } else {
        PacketBuilder::ipv4([10, 1, 1, 1], [10, 2, 2, 2], 64)
            .icmpv4_echo_request(1, seq)
            .write(&mut out, b"loci")
            .unwrap();
    }
    out
}

fn data_expectations(h: &DataHeaderRepr, ipv6: bool) -> Fields {
    let b = h.to_array();
    let mut e = BTreeMap::new();
    e.insert(
        "frame.protocols".into(),
        if ipv6 { "lisp-data:ipv6:icmpv6:data" } else { "lisp-data:ip:icmp:data" }.to_string(),
    );
    e.insert("lisp-data.flags".into(), format!("0x{:02x}", b[0]));
    if let Some(n) = h.nonce {
        e.insert("lisp-data.nonce".into(), n.to_string());
    }
    if let Some((src, dst)) = h.map_version {
        e.insert("lisp-data.srcmapver".into(), src.to_string());
        e.insert("lisp-data.dstmapver".into(), dst.to_string());
    }
    if let Some(iid) = h.instance_id {
        e.insert("lisp-data.iid".into(), iid.to_string());
    }
    match (h.lsb, h.instance_id) {
        (Some(lsb), Some(_)) => {
            e.insert("lisp-data.lsb8".into(), format!("0x{lsb:02x}"));
        }
        (Some(lsb), None) => {
            e.insert("lisp-data.lsb".into(), format!("0x{lsb:08x}"));
        }
        _ => {}
    }
    e
}

/// What tshark must read in a control message: for an ECM, in the message it carries. Fields
/// are filled in wire order and only once, as tshark shows each field's first occurrence.
fn control_expectations(msg: &ControlMessage) -> Fields {
    let mut e = Fields::new();
    e.insert("frame.protocols".into(), "lisp".into());
    let inner;
    let (ecm_type, msg) = match msg {
        ControlMessage::Ecm(ecm) => {
            inner = ControlMessage::parse(ecm.inner()).expect("ECM carries a control message");
            let ip = if ecm.inner_ip.src.is_ipv4() { "ip" } else { "ipv6" };
            e.insert("frame.protocols".into(), format!("lisp:{ip}:udp:lisp"));
            (Some(8), &inner)
        }
        m => (None, m),
    };
    let (ty, nonce, records) = match msg {
        ControlMessage::MapRequest(m) => (1, Some(m.nonce), Some(m.records.len())),
        ControlMessage::MapReply(m) => (2, Some(m.nonce), Some(m.records.len())),
        ControlMessage::MapRegister(m) => (3, Some(m.nonce), Some(m.records.len())),
        ControlMessage::MapNotify(m) => (m.message_type(), Some(m.nonce), Some(m.records.len())),
        ControlMessage::MapReferral(m) => (6, Some(m.nonce), Some(m.records.len())),
        ControlMessage::Info(m) => (7, Some(m.nonce), None),
        ControlMessage::SharedExtension(_) => (15, None, None),
        ControlMessage::Ecm(_) => unreachable!("an ECM in an ECM is not a sample"),
    };
    e.insert("lisp.type".into(), ecm_type.unwrap_or(ty).to_string());
    if let Some(n) = nonce {
        e.insert("lisp.nonce".into(), format!("0x{n:016x}"));
    }
    if let Some(r) = records {
        e.insert("lisp.records".into(), r.to_string());
    }
    let mapping = |e: &mut Fields, eid: &Address, mask: u8, locators: &[Locator]| {
        eid_fields(e, "lisp.mapping.eid", "lisp.mapping.eid.masklen", eid, mask);
        for l in locators {
            if let Some(ip) = l.address.ip() {
                first(e, "lisp.loc.locator", ip);
            }
            lcaf_fields(e, &l.address);
        }
    };
    match msg {
        ControlMessage::MapRequest(m) => {
            for r in &m.records {
                eid_fields(&mut e, "lisp.mreq.record.prefix", "lisp.mreq.record.prefix.length", &r.eid, r.eid_mask_len);
            }
            if let Some(r) = &m.map_reply {
                mapping(&mut e, &r.eid, r.eid_mask_len, &r.locators);
            }
        }
        ControlMessage::MapReply(m) => {
            m.records.iter().for_each(|r| mapping(&mut e, &r.eid, r.eid_mask_len, &r.locators))
        }
        ControlMessage::MapRegister(m) => {
            m.records.iter().for_each(|r| mapping(&mut e, &r.eid, r.eid_mask_len, &r.locators))
        }
        ControlMessage::MapNotify(m) => {
            m.records.iter().for_each(|r| mapping(&mut e, &r.eid, r.eid_mask_len, &r.locators))
        }
        ControlMessage::MapReferral(m) => {
            m.records.iter().for_each(|r| mapping(&mut e, &r.eid, r.eid_mask_len, &r.referrals))
        }
        ControlMessage::Info(m) => {
            eid_fields(&mut e, "lisp.info.prefix", "lisp.info.prefix.masklen", &m.eid, m.eid_mask_len);
            lcaf_fields(&mut e, &m.reply_address);
        }
        ControlMessage::SharedExtension(_) | ControlMessage::Ecm(_) => {}
    }
    e
}

/// Sets `field` unless an earlier part of the message already did.
fn first(e: &mut Fields, field: impl Into<String>, value: impl ToString) {
    e.entry(field.into()).or_insert_with(|| value.to_string());
}

/// The fields in which tshark shows an EID-prefix: `{prefix}.{ipv4,ipv6,mac,dn}` for a plain
/// address, the LCAF's own fields for an LCAF.
fn eid_fields(e: &mut Fields, prefix: &str, mask_field: &str, eid: &Address, mask: u8) {
    first(e, mask_field, mask);
    match eid {
        Address::Ipv4(a) => first(e, format!("{prefix}.ipv4"), a),
        Address::Ipv6(a) => first(e, format!("{prefix}.ipv6"), a),
        Address::Mac { .. } => first(e, format!("{prefix}.mac"), eid),
        Address::DistinguishedName(n) => first(e, format!("{prefix}.dn"), String::from_utf8_lossy(n)),
        Address::Lcaf(_) => lcaf_fields(e, eid),
        Address::None => {}
    }
}

/// The fields tshark shows for the LCAFs of the samples (IPv4 members only, which is what the
/// samples use where it matters); plain addresses add nothing.
fn lcaf_fields(e: &mut Fields, addr: &Address) {
    let Address::Lcaf(l) = addr else { return };
    let v4 = |a: &Address| matches!(a, Address::Ipv4(_)).then(|| a.to_string());
    match &**l {
        Lcaf::InstanceId { iid, address, .. } => {
            first(e, "lisp.lcaf.iid", iid);
            if let Some(a) = v4(address) {
                first(e, "lisp.lcaf.iid.ipv4", a);
            }
        }
        Lcaf::SourceDest { source_mask_len, dest_mask_len, source, dest } => {
            first(e, "lisp.lcaf.srcdst.src.masklen", source_mask_len);
            first(e, "lisp.lcaf.srcdst.dst.masklen", dest_mask_len);
            if let (Some(s), Some(d)) = (v4(source), v4(dest)) {
                first(e, "lisp.lcaf.srcdst.src.ipv4", s);
                first(e, "lisp.lcaf.srcdst.dst.ipv4", d);
            }
        }
        Lcaf::AfiList(list) => {
            if let Some(a) = list.iter().find_map(v4) {
                first(e, "lisp.lcaf.afi_list.ipv4", a);
            }
        }
        Lcaf::ExplicitLocatorPath(hops) => {
            if let Some(a) = hops.iter().find_map(|h| v4(&h.address)) {
                first(e, "lisp.lcaf.elp_hop.ipv4", a);
            }
        }
        Lcaf::ReplicationList(entries) => {
            if let Some(a) = entries.iter().find_map(|r| v4(&r.address)) {
                first(e, "lisp.lcaf.rle_entry.ipv4", a);
            }
        }
        Lcaf::NatTraversal { ms_port, etr_port, global_etr_rloc, .. } => {
            first(e, "lisp.lcaf.natt.msport", ms_port);
            first(e, "lisp.lcaf.natt.etrport", etr_port);
            if let Some(a) = v4(global_etr_rloc) {
                first(e, "lisp.lcaf.natt.rloc.ipv4", a);
            }
        }
        // Wireshark 4.0 has no fields for these.
        Lcaf::SecurityKey { .. } | Lcaf::Json { .. } | Lcaf::Unknown { .. } => {}
    }
}
