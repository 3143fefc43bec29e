//! Builders for the configurations simulator scenarios and tests use.

use std::net::{IpAddr, SocketAddr};

use loci_core::config::{
    DatabaseMapping, DynamicEidRange, EtrConfig, Limits, MapResolverConfig, MapServerConfig, MobilityConfig,
    MobilityMode, NodeConfig, PubSubPolicy, RegisterPeer, SiteConfig, SiteEidPrefix,
};
use loci_core::eid::EidPrefix;
use loci_core::itr::ItrConfig;
use loci_wire::auth::{Algorithm, KeyRing, SendPolicy};
use loci_wire::{Address, Locator};

/// Parses an EID prefix written like `10.1.0.0/16` or `[1000]10.1.0.0/16`.
pub fn prefix(s: &str) -> EidPrefix {
    s.parse().unwrap_or_else(|e| panic!("bad prefix {s}: {e:?}"))
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or_else(|e| panic!("bad address {s}: {e}"))
}

/// A locator with unicast priority and weight.
pub fn rloc(addr: &str, priority: u8, weight: u8) -> Locator {
    Locator {
        priority,
        weight,
        m_priority: 255,
        m_weight: 0,
        local: false,
        probed: false,
        reachable: true,
        address: Address::from(ip(addr)),
    }
}

/// A site registering `prefixes` (more-specifics accepted) with key 1 = `key`.
pub fn site(name: &str, key: &[u8], prefixes: &[&str]) -> SiteConfig {
    let mut keys = KeyRing::new();
    keys.insert(1, key.to_vec());
    SiteConfig {
        name: name.into(),
        keys,
        notify_policy: SendPolicy::default(),
        allow_unauthenticated: false,
        eid_prefixes: prefixes
            .iter()
            .map(|p| SiteEidPrefix { prefix: prefix(p), accept_more_specifics: true })
            .collect(),
        force_proxy_reply: false,
        pubsub: Some(PubSubPolicy {
            allowed_site_ids: Vec::new(),
            allowed_xtr_ids: Vec::new(),
            key_id: 1,
            key: key.to_vec(),
            algorithm: Algorithm::HmacSha256_128,
        }),
    }
}

/// A combined Map-Server / Map-Resolver for `sites`.
pub fn map_server(name: &str, sites: Vec<SiteConfig>) -> NodeConfig {
    NodeConfig {
        name: name.into(),
        map_server: Some(MapServerConfig { sites, ..Default::default() }),
        map_resolver: Some(MapResolverConfig::default()),
        etr: None,
        itr: None,
        limits: Limits::default(),
    }
}

/// An ETR registering `database` with the Map-Server at `ms` using key 1 = `key`.
pub fn etr(name: &str, ms: &str, key: &[u8], database: Vec<(&str, Vec<Locator>)>, xtr_id: u128) -> NodeConfig {
    NodeConfig {
        name: name.into(),
        map_server: None,
        map_resolver: None,
        etr: Some(EtrConfig {
            database: database
                .into_iter()
                .map(|(p, locators)| DatabaseMapping { prefix: prefix(p), locators })
                .collect(),
            map_servers: vec![RegisterPeer {
                address: SocketAddr::new(ip(ms), 4342),
                key_id: 1,
                key: key.to_vec(),
                policy: SendPolicy::default(),
            }],
            proxy_reply: false,
            merge: false,
            xtr_id,
            site_id: 1,
            record_ttl: 1440,
            first_nonce: 0,
            mobility: Default::default(),
            echo_nonce: false,
        }),
        itr: None,
        limits: Limits::default(),
    }
}

/// An ITR asking the Map-Resolver at `mr`, with RLOC `rloc` (its Map-Requests' ITR-RLOC).
pub fn itr(name: &str, mr: &str, rloc: &str) -> NodeConfig {
    NodeConfig { name: name.into(), itr: Some(itr_role(mr, rloc)), ..Default::default() }
}

/// An xTR: [`etr`] and [`itr`] in one node, with the Map-Server/Map-Resolver at `ms`.
pub fn xtr(
    name: &str,
    ms: &str,
    key: &[u8],
    database: Vec<(&str, Vec<Locator>)>,
    xtr_id: u128,
    rloc: &str,
) -> NodeConfig {
    NodeConfig { itr: Some(itr_role(ms, rloc)), ..etr(name, ms, key, database, xtr_id) }
}

fn itr_role(mr: &str, rloc: &str) -> ItrConfig {
    ItrConfig { map_resolvers: vec![SocketAddr::new(ip(mr), 4342)], rlocs: vec![ip(rloc)], ..Default::default() }
}

/// Makes the ETR `cfg` detect hosts of `range` on site interface `interface` as dynamic EIDs
/// registered with `locator` (its RLOC); in extended-subnet mode it announces them to the
/// site's other xTRs `group`. Returns `cfg` unchanged when it has no ETR role.
pub fn dynamic_eids(
    mut cfg: NodeConfig,
    range: &str,
    interface: &str,
    mode: MobilityMode,
    group: &[&str],
    locator: &str,
) -> NodeConfig {
    if let Some(etr) = cfg.etr.as_mut() {
        let range = DynamicEidRange {
            prefix: prefix(range),
            interface: interface.into(),
            mode,
            map_notify_group: group.iter().map(|g| ip(g)).collect(),
            gateway: None,
            locators: vec![rloc(locator, 1, 100)],
            max_hosts: 1000,
        };
        etr.mobility = MobilityConfig { ranges: vec![range], ..MobilityConfig::default() };
    }
    cfg
}

/// Makes the ITR of `cfg` subscribe (RFC 9437) to what it resolves, as `xtr_id`, with the
/// pub/sub key `key` (key ID 1), and act on SMRs only if `smr`. Returns `cfg` unchanged when it
/// has no ITR role.
pub fn subscriber(mut cfg: NodeConfig, key: &[u8], xtr_id: u128, subscribe: bool, smr: bool) -> NodeConfig {
    if let Some(itr) = cfg.itr.as_mut() {
        itr.subscribe = subscribe;
        itr.smr = smr;
        itr.xtr_id = xtr_id;
        itr.pubsub_key = Some((1, key.to_vec()));
    }
    cfg
}
