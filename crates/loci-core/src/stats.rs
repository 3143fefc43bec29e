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
