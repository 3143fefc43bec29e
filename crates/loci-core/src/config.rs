//! Validated configuration of a node, as the protocol code uses it.
//!
//! The daemon builds these from its TOML file (reporting file, line, field and reason); the
//! simulator and tests build them directly. Secrets are already resolved (key files read).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use loci_wire::auth::{Algorithm, KeyRing, SendPolicy};
use loci_wire::Locator;

use crate::eid::EidPrefix;

/// Everything one node runs. A role is enabled when its section is present.
#[derive(Debug, Clone, Default)]
pub struct NodeConfig {
    pub name: String,
    pub map_server: Option<MapServerConfig>,
    pub map_resolver: Option<MapResolverConfig>,
    pub etr: Option<EtrConfig>,
    pub itr: Option<crate::itr::ItrConfig>,
    pub limits: Limits,
}

/// One site a Map-Server accepts registrations from.
#[derive(Debug, Clone)]
pub struct SiteConfig {
    pub name: String,
    /// Keys by Key ID; a Map-Register must verify with one of them.
    pub keys: KeyRing,
    /// Algorithm and MAC shape of the Map-Notify messages sent to this site's ETRs.
    pub notify_policy: SendPolicy,
    /// Accept Map-Registers with algorithm 0 (no authentication). Off unless configured.
    pub allow_unauthenticated: bool,
    pub eid_prefixes: Vec<SiteEidPrefix>,
    /// Answer Map-Requests for this site's EIDs even if the ETR did not set the P bit.
    pub force_proxy_reply: bool,
    /// Pub/sub (RFC 9437): who may subscribe to this site's EIDs and the key that signs
    /// publications. `None` disables subscriptions to this site's prefixes.
    pub pubsub: Option<PubSubPolicy>,
}

/// A prefix a site may register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SiteEidPrefix {
    pub prefix: EidPrefix,
    /// Also accept registrations of prefixes inside `prefix` (hosts, subnets).
    pub accept_more_specifics: bool,
}

/// Who may subscribe and how publications are signed.
#[derive(Debug, Clone)]
pub struct PubSubPolicy {
    /// Subscribers must present one of these Site-IDs; empty means any.
    pub allowed_site_ids: Vec<u64>,
    /// Subscribers must present one of these xTR-IDs; empty means any.
    pub allowed_xtr_ids: Vec<u128>,
    pub key_id: u8,
    pub key: Vec<u8>,
    pub algorithm: Algorithm,
}

#[derive(Debug, Clone, Default)]
pub struct MapServerConfig {
    pub sites: Vec<SiteConfig>,
    /// Largest number of (IID, prefix) registrations held; more are refused and counted.
    pub max_registrations: usize,
    /// Largest number of subscriptions held across all prefixes.
    pub max_subscriptions: usize,
}

/// A Map-Server a standalone Map-Resolver forwards to, with the prefixes it serves.
#[derive(Debug, Clone)]
pub struct MapServerPeer {
    pub address: IpAddr,
    pub eid_prefixes: Vec<EidPrefix>,
}

#[derive(Debug, Clone, Default)]
pub struct MapResolverConfig {
    /// Empty when the Map-Server is co-located (same node).
    pub map_servers: Vec<MapServerPeer>,
}

/// An EID prefix this node is authoritative for, with its locator set.
#[derive(Debug, Clone)]
pub struct DatabaseMapping {
    pub prefix: EidPrefix,
    pub locators: Vec<Locator>,
}

/// A Map-Server an ETR registers with.
#[derive(Debug, Clone)]
pub struct RegisterPeer {
    pub address: SocketAddr,
    pub key_id: u8,
    pub key: Vec<u8>,
    pub policy: SendPolicy,
}

#[derive(Debug, Clone)]
pub struct EtrConfig {
    pub database: Vec<DatabaseMapping>,
    pub map_servers: Vec<RegisterPeer>,
    /// Ask the Map-Server to answer Map-Requests for us (P bit).
    pub proxy_reply: bool,
    /// Ask the Map-Server to merge our RLOCs with those of the site's other xTRs (a bit).
    pub merge: bool,
    /// xTR-ID and Site-ID sent with every Map-Register (I bit).
    pub xtr_id: u128,
    pub site_id: u64,
    /// Record TTL of our mappings, in minutes.
    pub record_ttl: u32,
    /// First nonce to use (the daemon restores the last one sent, so nonces only increase).
    pub first_nonce: u64,
    /// Host mobility: dynamic-EID ranges and their timers (DESIGN §5).
    pub mobility: MobilityConfig,
    /// Our Map-Replies set the E bit: our ITR echoes nonces (RFC 9300 §10.1).
    pub echo_nonce: bool,
}

/// How a dynamic-EID range reaches its hosts when they move (the seed's two deployment modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MobilityMode {
    /// The subnet is stretched over a LAN extension between the sites of one LISP site: the
    /// detecting xTR tells the others over the map-notify-group.
    #[default]
    ExtendedSubnet,
    /// No LAN extension: the host lands in another subnet; the xTR answers ARP/ND for its
    /// gateway and home-subnet neighbours.
    AcrossSubnet,
}

/// The default gateway both sites present to mobile hosts (same address and MAC everywhere).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gateway {
    pub address: IpAddr,
    pub mac: [u8; 6],
}

/// One dynamic-EID range: hosts seen on `interface` with a source inside `prefix` become
/// dynamic EIDs of this xTR, registered as host prefixes with `locators`.
#[derive(Debug, Clone)]
pub struct DynamicEidRange {
    /// The range, with its instance ID.
    pub prefix: EidPrefix,
    /// The site interface the hosts are seen on (the data plane installs host routes there).
    pub interface: String,
    pub mode: MobilityMode,
    /// Where the Map-Notify announcing a detection goes (extended subnet): the multicast group
    /// in a deployment, the other xTRs' addresses in the simulator. Empty: no announcement.
    pub map_notify_group: Vec<IpAddr>,
    pub gateway: Option<Gateway>,
    /// The RLOC set the hosts are registered with (this xTR's locators).
    pub locators: Vec<Locator>,
    /// Most hosts held in this range; more are refused and counted.
    pub max_hosts: usize,
}

/// Dynamic-EID ranges and the timers of host mobility.
#[derive(Debug, Clone)]
pub struct MobilityConfig {
    pub ranges: Vec<DynamicEidRange>,
    /// A host not seen for this long is probed (ARP/ND, by the data plane).
    pub idle_timeout: Duration,
    /// Probes sent, this far apart, before a silent host is removed.
    pub probe_interval: Duration,
    pub probe_count: u32,
    /// How long an away entry (a host that moved to another xTR) re-encapsulates to its new RLOC.
    pub away_time: Duration,
    /// Least time between two SMRs to one ITR for one EID (RFC 9301 §6.1: 3 s).
    pub smr_interval: Duration,
    /// Most away entries held.
    pub max_away: usize,
}

impl Default for MobilityConfig {
    fn default() -> Self {
        MobilityConfig {
            ranges: Vec::new(),
            idle_timeout: Duration::from_secs(300),
            probe_interval: Duration::from_secs(5),
            probe_count: 3,
            away_time: Duration::from_secs(300),
            smr_interval: Duration::from_secs(3),
            max_away: 100_000,
        }
    }
}

/// Protocol timers and bounds. Defaults follow the RFCs.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Registrations expire this long after their last refresh (RFC 9301 §8.2: 3 minutes).
    pub registration_timeout: Duration,
    /// ETR Map-Register interval (RFC 9301 §8.2: 1 minute).
    pub register_interval: Duration,
    /// Map-Requests accepted per second from one source at a Map-Server or Map-Resolver.
    pub map_requests_per_source: u32,
    /// Map-Registers accepted per second from one source.
    pub map_registers_per_source: u32,
    /// Identical Map-Replies (same destination RLOC and EID-prefix) at most once per this
    /// interval (RFC 9301 §5.4: 3 seconds; 0 disables).
    pub map_reply_repeat: Duration,
    /// Bound on the per-source rate-limiter tables.
    pub max_rate_limited_sources: usize,
    /// Map-Replies per second (burst the same) an ETR sends one requester address for
    /// Map-Requests sent straight to it (RLOC probes, direct queries): what a stranger can make
    /// it answer. A prober probes each of our locators at most every 200 ms (the fast-failover
    /// profile; 1 s by default), all from one address: 5 replies per second per locator, so 50
    /// serves 10 locators at the fast pace (50 at the default one) with room for direct queries.
    pub etr_replies_per_source: u32,
    /// The same, for all requesters together.
    pub etr_replies_per_second: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            registration_timeout: Duration::from_secs(180),
            register_interval: Duration::from_secs(60),
            map_requests_per_source: 1000,
            map_registers_per_source: 1000,
            map_reply_repeat: Duration::from_secs(3),
            max_rate_limited_sources: 100_000,
            etr_replies_per_source: 50,
            etr_replies_per_second: 1000,
        }
    }
}
