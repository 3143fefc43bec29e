//! Counters: every message handled and every drop, by reason, per site where one is known.

use std::collections::BTreeMap;

/// Why a message was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Drop {
    Malformed,
    RateLimited,
    UnknownSite,
    BadAuth,
    Unauthenticated,
    PrefixOutsideSite,
    Replay,
    TableFull,
    Unexpected,
    ProbeToMappingSystem,
    NoMatchingNonce,
    SubscriptionDenied,
}

impl Drop {
    pub fn name(self) -> &'static str {
        match self {
            Drop::Malformed => "malformed",
            Drop::RateLimited => "rate-limited",
            Drop::UnknownSite => "unknown-site",
            Drop::BadAuth => "bad-auth",
            Drop::Unauthenticated => "unauthenticated",
            Drop::PrefixOutsideSite => "prefix-outside-site",
            Drop::Replay => "replayed-nonce",
            Drop::TableFull => "table-full",
            Drop::Unexpected => "unexpected-message",
            Drop::ProbeToMappingSystem => "probe-to-mapping-system",
            Drop::NoMatchingNonce => "no-matching-nonce",
            Drop::SubscriptionDenied => "subscription-denied",
        }
    }
}

/// Counters of one node. Names are stable: they appear in `loci show stats` and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Messages received, by message name.
    pub received: BTreeMap<&'static str, u64>,
    /// Messages sent, by message name.
    pub sent: BTreeMap<&'static str, u64>,
    /// Drops by reason (all sites together).
    pub drops: BTreeMap<&'static str, u64>,
    /// Drops by site and reason, for drops attributable to a configured site.
    pub site_drops: BTreeMap<String, BTreeMap<&'static str, u64>>,
    /// Tolerated oddities (reserved bits set, ...).
    pub tolerated: u64,
    pub negative_replies: u64,
    pub proxy_replies: u64,
    pub forwarded_requests: u64,
    pub registrations_expired: u64,
    pub mobility: MobilityStats,
}

/// Host mobility counters (DESIGN §5), across the roles of one node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MobilityStats {
    /// Hosts that became dynamic EIDs of this xTR.
    pub hosts_detected: u64,
    /// `handle_host_seen` for an address in no dynamic-EID range (or on another interface).
    pub hosts_outside_ranges: u64,
    /// New hosts refused because their range was full.
    pub hosts_refused: u64,
    /// Probes asked of the data plane for hosts gone quiet.
    pub probes: u64,
    /// Hosts removed after their probes went unanswered (registration withdrawn).
    pub hosts_silent: u64,
    /// Our hosts that moved to another xTR (authenticated Map-Notify from the Map-Server or
    /// the site's map-notify-group).
    pub moves_away: u64,
    /// Detection Map-Notifies sent to / accepted from the site's map-notify-group.
    pub group_notifies_sent: u64,
    pub group_notifies_accepted: u64,
    /// Packets the data plane re-encapsulated by an away entry (as reported).
    pub away_packets: u64,
    pub smrs_sent: u64,
    /// SMRs not sent: one went to that ITR for that EID less than `smr_interval` ago.
    pub smrs_suppressed: u64,
    pub smrs_received: u64,
    /// SMRs that started an SMR-invoked Map-Request.
    pub smrs_accepted: u64,
    /// SMRs ignored: no cached mapping for the EID, or a resolution already pending.
    pub smrs_ignored: u64,
    pub smrs_rate_limited: u64,
    /// Map-Server: a host registration moved from one xTR to another.
    pub moves: u64,
    /// Map-Server: Map-Notifies telling a previous registrant its host moved.
    pub move_notifies: u64,
    /// Map-Server: registrations from a displaced xTR sent before it learnt of the move.
    pub stale_registrations: u64,
    /// Map-Server: publications (pub/sub) and move notifies sent, and acknowledged.
    pub notifies_pushed: u64,
    pub notifies_acked: u64,
    /// ITR: publications applied to the map-cache, and Map-Notify-Acks sent for them.
    pub publications_applied: u64,
    /// Map-Notifies refused: failed authentication, or from no one we expect them from.
    pub forged_notifies: u64,
    /// Map-Notifies refused: a nonce not newer than one already accepted.
    pub replayed_notifies: u64,
}

impl MobilityStats {
    /// Every counter with its stable name (for `loci show stats` and metrics).
    pub fn named(&self) -> [(&'static str, u64); 23] {
        [
            ("hosts_detected", self.hosts_detected),
            ("hosts_outside_ranges", self.hosts_outside_ranges),
            ("hosts_refused", self.hosts_refused),
            ("probes", self.probes),
            ("hosts_silent", self.hosts_silent),
            ("moves_away", self.moves_away),
            ("group_notifies_sent", self.group_notifies_sent),
            ("group_notifies_accepted", self.group_notifies_accepted),
            ("away_packets", self.away_packets),
            ("smrs_sent", self.smrs_sent),
            ("smrs_suppressed", self.smrs_suppressed),
            ("smrs_received", self.smrs_received),
            ("smrs_accepted", self.smrs_accepted),
            ("smrs_ignored", self.smrs_ignored),
            ("smrs_rate_limited", self.smrs_rate_limited),
            ("moves", self.moves),
            ("move_notifies", self.move_notifies),
            ("stale_registrations", self.stale_registrations),
            ("notifies_pushed", self.notifies_pushed),
            ("notifies_acked", self.notifies_acked),
            ("publications_applied", self.publications_applied),
            ("forged_notifies", self.forged_notifies),
            ("replayed_notifies", self.replayed_notifies),
        ]
    }
}

impl Stats {
    pub fn received(&mut self, name: &'static str) {
        *self.received.entry(name).or_default() += 1;
    }

    pub fn sent(&mut self, name: &'static str) {
        *self.sent.entry(name).or_default() += 1;
    }

    pub fn drop(&mut self, reason: Drop) {
        *self.drops.entry(reason.name()).or_default() += 1;
    }

    pub fn site_drop(&mut self, site: &str, reason: Drop) {
        self.drop(reason);
        *self.site_drops.entry(site.to_owned()).or_default().entry(reason.name()).or_default() += 1;
    }

    pub fn dropped(&self, reason: Drop) -> u64 {
        self.drops.get(reason.name()).copied().unwrap_or(0)
    }
}
