//! Conversions between EID prefixes and their wire form (a plain address, or an Instance-ID
//! LCAF around it when the instance ID is not 0), and the reply helpers every role shares.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use loci_wire::ecm::Ecm;
use loci_wire::map_request::{EidRequest, MapRequest};
use loci_wire::{Action, Address, Lcaf, Locator, MapRecord};

use crate::eid::EidPrefix;

/// The EID prefix an address and mask length denote, if they are an IP prefix (possibly inside
/// an Instance-ID LCAF). Other address kinds (MAC, names) are not EID prefixes we route.
pub fn eid_from_wire(addr: &Address, mask_len: u8) -> Option<EidPrefix> {
    let (iid, inner) = match addr {
        Address::Lcaf(l) => match l.as_ref() {
            Lcaf::InstanceId { iid, address, .. } => (*iid, address),
            _ => return None,
        },
        a => (0, a),
    };
    let net = IpNet::new(inner.ip()?, mask_len).ok()?;
    Some(EidPrefix::new(iid, net))
}

/// The wire form of an EID prefix: address and mask length.
pub fn eid_to_wire(prefix: &EidPrefix) -> (Address, u8) {
    let addr = Address::from(prefix.net.network());
    let addr = if prefix.iid == 0 { addr } else { Address::from(Lcaf::instance_id(prefix.iid, addr)) };
    (addr, prefix.net.prefix_len())
}

/// An EID-record for `prefix` (map version 0).
pub fn record(prefix: &EidPrefix, ttl: u32, action: Action, authoritative: bool, locators: Vec<Locator>) -> MapRecord {
    let (eid, eid_mask_len) = eid_to_wire(prefix);
    MapRecord { ttl, eid_mask_len, action, authoritative, map_version: 0, eid, locators }
}

/// A plain Map-Request for one EID prefix, as an ITR (or lig) sends it.
pub fn map_request(nonce: u64, prefix: &EidPrefix, itr_rlocs: Vec<Address>) -> MapRequest {
    let (eid, eid_mask_len) = eid_to_wire(prefix);
    MapRequest {
        authoritative: false,
        probe: false,
        smr: false,
        pitr: false,
        smr_invoked: false,
        local_xtr: false,
        dont_map_reply: false,
        nonce,
        source_eid: Address::None,
        itr_rlocs,
        records: vec![EidRequest { notify: false, eid_mask_len, eid }],
        map_reply: None,
        xtr_id: None,
    }
}

/// Where the answer to a Map-Request goes: the first ITR-RLOC of the same family as the
/// requester's address (else the first IP ITR-RLOC), at the port the request came from.
pub fn reply_destination(req: &MapRequest, requester: IpAddr, port: u16) -> Option<SocketAddr> {
    let ips = || req.itr_rlocs.iter().filter_map(Address::ip);
    let ip = ips().find(|ip| ip.is_ipv4() == requester.is_ipv4()).or_else(|| ips().next())?;
    Some(SocketAddr::new(ip, port))
}

/// Encapsulates a Map-Request as an ITR sends it to a Map-Resolver (RFC 9301 §5.8): the inner
/// header goes from the ITR's address and port to the EID asked for (or, across address
/// families, back to the ITR's own address) at port 4342.
pub fn encapsulate_request(itr: IpAddr, port: u16, req: &MapRequest) -> Ecm {
    let eid = req.records.first().and_then(|r| eid_from_wire(&r.eid, r.eid_mask_len)).map(|p| p.net.network());
    let dst = eid.filter(|e| e.is_ipv4() == itr.is_ipv4()).unwrap_or(itr);
    Ecm::new(itr, port, dst, crate::node::CONTROL_PORT, loci_wire::Wire::to_bytes(req))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_and_without_iid() {
        for s in ["10.1.0.0/16", "[1000]10.1.0.0/16", "[7]2001:db8::/32"] {
            let p: EidPrefix = s.parse().unwrap();
            let (a, m) = eid_to_wire(&p);
            assert_eq!(eid_from_wire(&a, m), Some(p));
        }
        assert_eq!(eid_from_wire(&Address::None, 0), None);
    }
}
