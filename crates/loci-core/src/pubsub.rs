//! Publish/subscribe at the Map-Server (RFC 9437): subscribers of an EID-prefix get every
//! change of its mapping pushed as an authenticated Map-Notify, retransmitted until a
//! Map-Notify-Ack arrives (RFC 9301 §5.7).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use loci_wire::auth::{self, MacLength, SendPolicy};
use loci_wire::map_notify::MapNotify;
use loci_wire::map_register::XtrId;
use loci_wire::{Action, MapRecord, Wire};

use crate::mapping::record;

use crate::config::PubSubPolicy;
use crate::eid::EidPrefix;
use crate::node::{Io, CONTROL_PORT};
use crate::prefix_table::PrefixTable;

/// Waits before each retransmission of an unacknowledged publication: 3 at 3 s, then 3 more
/// backing off exponentially (RFC 9301 §5.7); after the last, the subscriber is dropped.
pub(crate) const RETRANSMIT: [Duration; 7] = [
    Duration::from_secs(3),
    Duration::from_secs(3),
    Duration::from_secs(3),
    Duration::from_secs(6),
    Duration::from_secs(12),
    Duration::from_secs(24),
    Duration::from_secs(48),
];

/// A publication awaiting its Map-Notify-Ack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub nonce: u64,
    pub bytes: Vec<u8>,
    /// Transmissions so far.
    pub sent: usize,
    pub next: Instant,
}

/// One subscribed xTR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscriber {
    pub xtr: XtrId,
    pub itr_rlocs: Vec<IpAddr>,
    /// Nonce of the last accepted subscription request (replay protection).
    pub request_nonce: u64,
    /// Nonce of the last Map-Notify sent to it for this prefix (incremented per publication).
    pub notify_nonce: u64,
    pub pending: Option<Pending>,
    pub since: Instant,
}

impl Subscriber {
    fn destination(&self) -> Option<SocketAddr> {
        self.itr_rlocs.first().map(|ip| SocketAddr::new(*ip, CONTROL_PORT))
    }
}

/// The outcome of a subscription request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribeResult {
    Subscribed,
    Unsubscribed,
    /// Nonce not newer than the last one seen: drop the request silently.
    Replay,
    /// Policy or table bound refuses it: answer as if no subscription was asked for.
    Denied,
}

#[derive(Debug, Default)]
pub struct Subscriptions {
    by_prefix: PrefixTable<Vec<Subscriber>>,
    count: usize,
    max: usize,
    /// (retransmission time, prefix, xTR) of pending publications; stale entries are skipped.
    timers: BinaryHeap<Reverse<(Instant, EidPrefix, u128)>>,
    /// Publication nonce -> (subscribed prefix, xTR-ID).
    by_nonce: HashMap<u64, (EidPrefix, u128)>,
}

impl Subscriptions {
    pub fn new(max: usize) -> Self {
        Subscriptions { max: if max == 0 { 100_000 } else { max }, ..Default::default() }
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = (EidPrefix, &Subscriber)> {
        self.by_prefix.iter().flat_map(|(p, v)| v.iter().map(move |s| (p, s)))
    }

    /// Whether the policy allows this xTR to subscribe.
    pub fn allowed(policy: &PubSubPolicy, xtr: &XtrId) -> bool {
        (policy.allowed_site_ids.is_empty() || policy.allowed_site_ids.contains(&xtr.site_id))
            && (policy.allowed_xtr_ids.is_empty() || policy.allowed_xtr_ids.contains(&xtr.xtr_id))
    }

    /// Adds, refreshes or (with no usable ITR-RLOC) removes a subscription to `prefix`.
    pub fn subscribe(
        &mut self,
        now: Instant,
        prefix: EidPrefix,
        xtr: XtrId,
        nonce: u64,
        itr_rlocs: Vec<IpAddr>,
    ) -> SubscribeResult {
        let subs = self.by_prefix.get_mut(&prefix);
        let existing = subs.as_ref().and_then(|v| v.iter().position(|s| s.xtr.xtr_id == xtr.xtr_id));
        if let (Some(v), Some(i)) = (&subs, existing) {
            if nonce <= v[i].request_nonce {
                return SubscribeResult::Replay;
            }
        }
        if itr_rlocs.is_empty() {
            // An ITR-RLOC of AFI 0 unsubscribes (RFC 9437 §5).
            if let (Some(v), Some(i)) = (subs, existing) {
                let gone = v.remove(i);
                if let Some(p) = gone.pending {
                    self.by_nonce.remove(&p.nonce);
                }
                self.count -= 1;
                if v.is_empty() {
                    self.by_prefix.remove(&prefix);
                }
            }
            return SubscribeResult::Unsubscribed;
        }
        match (subs, existing) {
            (Some(v), Some(i)) => {
                let s = &mut v[i];
                s.request_nonce = nonce;
                s.notify_nonce = nonce;
                s.itr_rlocs = itr_rlocs;
                s.xtr = xtr;
            }
            _ => {
                if self.count >= self.max {
                    return SubscribeResult::Denied;
                }
                let s =
                    Subscriber { xtr, itr_rlocs, request_nonce: nonce, notify_nonce: nonce, pending: None, since: now };
                self.by_prefix.get_or_insert_with(prefix, Vec::new).push(s);
                self.count += 1;
            }
        }
        SubscribeResult::Subscribed
    }

    /// Pushes `record` (the new mapping of `changed`, or a TTL-0 record when withdrawn) to
    /// every subscriber of `changed` or of a less-specific prefix covering it.
    pub fn publish(&mut self, now: Instant, changed: EidPrefix, record: &MapRecord, key: &PubSubPolicy, io: &mut Io) {
        let mut covering = Vec::new();
        for len in (0..=changed.net.prefix_len()).rev() {
            let Ok(net) = ipnet::IpNet::new(changed.net.network(), len) else { continue };
            let p = EidPrefix::new(changed.iid, net);
            if self.by_prefix.get(&p).is_some() {
                covering.push(p);
            }
        }
        for p in covering {
            let Some(subs) = self.by_prefix.get_mut(&p) else { continue };
            for s in subs.iter_mut() {
                s.notify_nonce = s.notify_nonce.wrapping_add(1);
                let Some(bytes) = signed_notify(s.notify_nonce, record.clone(), key) else { continue };
                let Some(dst) = s.destination() else { continue };
                if let Some(old) = s.pending.take() {
                    self.by_nonce.remove(&old.nonce);
                }
                io.send("Map-Notify", None, dst, bytes.clone());
                io.stats.mobility.notifies_pushed += 1;
                let next = now + RETRANSMIT[0];
                s.pending = Some(Pending { nonce: s.notify_nonce, bytes, sent: 1, next });
                self.by_nonce.insert(s.notify_nonce, (p, s.xtr.xtr_id));
                self.timers.push(Reverse((next, p, s.xtr.xtr_id)));
            }
        }
    }

    /// A Map-Notify-Ack: verifies it with `key_of(subscribed prefix)` and stops retransmitting.
    /// Returns false when it matches nothing or fails authentication.
    pub fn acknowledge(
        &mut self,
        data: &[u8],
        nonce: u64,
        key_of: impl Fn(&EidPrefix) -> Option<PubSubPolicy>,
    ) -> bool {
        let Some(&(prefix, xtr)) = self.by_nonce.get(&nonce) else { return false };
        let Some(policy) = key_of(&prefix) else { return false };
        let mut ring = auth::KeyRing::new();
        ring.insert(policy.key_id, policy.key.clone());
        if auth::verify(data, &ring, false).is_err() {
            return false;
        }
        self.by_nonce.remove(&nonce);
        if let Some(s) = self.by_prefix.get_mut(&prefix).and_then(|v| v.iter_mut().find(|s| s.xtr.xtr_id == xtr)) {
            s.pending = None;
        }
        true
    }

    /// A Map-Notify-Ack of a subscription's confirmation (RFC 9437 §5: its nonce is the
    /// request's). Confirmations are not retransmitted, so this only checks that the ack is
    /// genuine; true when it is.
    pub fn acknowledge_confirmation(&self, data: &[u8], nonce: u64, prefix: &EidPrefix, policy: &PubSubPolicy) -> bool {
        let Some(subs) = self.by_prefix.get(prefix) else { return false };
        if !subs.iter().any(|s| s.request_nonce == nonce) {
            return false;
        }
        auth::verify(data, &auth::KeyRing::with_key(policy.key_id, policy.key.clone()), false).is_ok()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((t, _, _))| *t)
    }

    /// Retransmits due publications; drops subscribers that never acknowledged, telling them
    /// once with a Map-Notify with no locators and action drop/auth-failure (RFC 9437 §5).
    pub fn handle_timeout(&mut self, now: Instant, key_of: impl Fn(&EidPrefix) -> Option<PubSubPolicy>, io: &mut Io) {
        while let Some(Reverse((t, prefix, xtr))) = self.timers.peek().copied() {
            if t > now {
                break;
            }
            self.timers.pop();
            let Some(subs) = self.by_prefix.get_mut(&prefix) else { continue };
            let Some(i) = subs.iter().position(|s| s.xtr.xtr_id == xtr) else { continue };
            let s = &mut subs[i];
            let Some(dst) = s.destination() else { continue };
            let Some(p) = s.pending.as_mut().filter(|p| p.next <= now) else { continue };
            if p.sent < RETRANSMIT.len() {
                io.send("Map-Notify", None, dst, p.bytes.clone());
                p.next = now + RETRANSMIT[p.sent];
                p.sent += 1;
                self.timers.push(Reverse((p.next, prefix, xtr)));
                continue;
            }
            let gone = subs.remove(i);
            self.count -= 1;
            if subs.is_empty() {
                self.by_prefix.remove(&prefix);
            }
            let nonce = gone.pending.as_ref().map_or(gone.notify_nonce, |p| p.nonce);
            self.by_nonce.remove(&nonce);
            tracing::info!(%prefix, xtr = format!("{xtr:032x}"), "subscriber never acknowledged; subscription removed");
            if let Some(policy) = key_of(&prefix) {
                let record = record(&prefix, 0, Action::DROP_AUTH_FAILURE, false, Vec::new());
                if let Some(bytes) = signed_notify(nonce, record, &policy) {
                    io.send("Map-Notify", None, dst, bytes);
                }
            }
        }
    }
}

/// A Map-Notify carrying `record`, signed with the pub/sub key.
pub fn signed_notify(nonce: u64, record: MapRecord, key: &PubSubPolicy) -> Option<Vec<u8>> {
    let policy = SendPolicy { algorithm: key.algorithm, length: MacLength::Full, ..SendPolicy::default() };
    let mut n = MapNotify::new(nonce, vec![record]);
    n.prepare_auth(key.key_id, &policy);
    let mut bytes = n.to_bytes();
    auth::sign(&mut bytes, key.key_id, &key.key, &policy).ok()?;
    Some(bytes)
}
