//! Away re-encapsulation (DESIGN §5 step 4): a packet the ETR decapsulates for a host that
//! moved to another xTR (an away entry, `Etr::away_reader`) is encapsulated again to the
//! host's new RLOC instead of being written to the TUN device, so nothing in flight is lost,
//! and the sending ITR is reported to the control plane (`Node::handle_away_packet`), which
//! solicits a Map-Request from it (rate limited there).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use loci_core::encap::{encapsulate, EncapParams, ENCAP_OVERHEAD_V6};
use loci_core::locator::{flow_hash, Families};
use loci_core::map_cache::{Forward, MapCacheReader};
use loci_core::packet;
use loci_wire::ecm::checksum;
use socket2::{Domain, SockAddr, Socket};

use crate::{itr, Error, MAX_MTU};

/// A packet re-encapsulated by an away entry: `itr` (its outer source) sent it for `eid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AwayPacket {
    pub iid: u32,
    pub eid: IpAddr,
    pub itr: IpAddr,
}

/// Where reports go (must not block; false when the queue is full).
pub type AwaySink = Arc<dyn Fn(AwayPacket) -> bool + Send + Sync>;

/// What the ETR workers need to re-encapsulate.
#[derive(Clone)]
pub struct Away {
    pub reader: MapCacheReader,
    pub sink: AwaySink,
}

/// Counters shared by every ETR worker's forwarder.
#[derive(Debug, Default)]
pub struct AwayCounters {
    pub reencapsulated: AtomicU64,
    pub failed: AtomicU64,
}

/// One ETR worker's re-encapsulation state.
pub struct AwayForwarder {
    away: Away,
    families: Families,
    src_v4: Option<IpAddr>,
    src_v6: Option<IpAddr>,
    raw_v4: Option<Socket>,
    raw_v6: Option<Socket>,
    buf: Vec<u8>,
    counters: Arc<AwayCounters>,
}

impl AwayForwarder {
    pub fn new(away: Away, rlocs: &[IpAddr], counters: Arc<AwayCounters>) -> Result<Self, Error> {
        let families = Families::of(rlocs);
        let raw = |d: Domain| {
            itr::raw_socket(d)
                .map_err(|e| Error::Socket { what: "raw socket for away re-encapsulation".into(), source: e })
        };
        Ok(AwayForwarder {
            away,
            families,
            src_v4: rlocs.iter().copied().find(IpAddr::is_ipv4),
            src_v6: rlocs.iter().copied().find(IpAddr::is_ipv6),
            raw_v4: if families.v4 { Some(raw(Domain::IPV4)?) } else { None },
            raw_v6: if families.v6 { Some(raw(Domain::IPV6)?) } else { None },
            buf: vec![0; ENCAP_OVERHEAD_V6 + usize::from(MAX_MTU)],
            counters,
        })
    }

    /// Re-encapsulates `inner` (decapsulated in instance `iid`, from ITR `itr`) when its
    /// destination has an away entry; false when it has none (the packet goes to the TUN).
    pub fn redirect(&mut self, iid: u32, inner: &[u8], itr: IpAddr) -> bool {
        let Some((_, dst)) = packet::addresses(inner) else { return false };
        let snap = self.away.reader.load();
        if snap.lookup(iid, dst).is_none() {
            return false;
        }
        let flow = flow_hash(inner);
        let rloc = match snap.forward(iid, dst, flow, self.families) {
            Forward::Encapsulate(rloc) => rloc,
            Forward::Miss => return false,
            // An away entry without a usable locator: the packet has nowhere to go.
            Forward::NativeForward | Forward::Drop(_) => {
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
                return true;
            }
        };
        drop(snap);
        if self.send(iid, inner, rloc, flow) {
            self.counters.reencapsulated.fetch_add(1, Ordering::Relaxed);
        } else {
            self.counters.failed.fetch_add(1, Ordering::Relaxed);
        }
        let _ = (self.away.sink)(AwayPacket { iid, eid: dst, itr });
        true
    }

    fn send(&mut self, iid: u32, inner: &[u8], rloc: IpAddr, flow: u32) -> bool {
        let (src, socket) = match rloc {
            IpAddr::V4(_) => (self.src_v4, &self.raw_v4),
            IpAddr::V6(_) => (self.src_v6, &self.raw_v6),
        };
        let (Some(src), Some(socket)) = (src, socket) else { return false };
        let start = ENCAP_OVERHEAD_V6;
        let Some(slot) = self.buf.get_mut(start..start + inner.len()) else { return false };
        slot.copy_from_slice(inner);
        // One more hop, like a router's: should two xTRs briefly point away entries at each
        // other, the packet dies instead of circling.
        if !packet::decrement_ttl(slot) {
            return false;
        }
        let Ok(range) = encapsulate(&mut self.buf, start..start + inner.len(), &EncapParams::new(src, rloc, iid, flow))
        else {
            return false;
        };
        let pkt = &mut self.buf[range];
        if rloc.is_ipv6() {
            let c = checksum::udp(src, rloc, &pkt[40..]);
            pkt[46..48].copy_from_slice(&c.to_be_bytes());
        }
        socket.send_to(pkt, &SockAddr::from(SocketAddr::new(rloc, 0))).is_ok()
    }
}
