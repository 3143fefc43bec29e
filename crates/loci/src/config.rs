//! The daemon's TOML configuration (DESIGN §6): one file per node, parsed into the core's
//! validated [`NodeConfig`] plus the settings only the daemon uses.
//!
//! Every error names the file, the line, the dotted field and the reason:
//! `ms1.toml:12: map-server.site[0].auth.key: key must not be empty`. Syntax and type errors come
//! from `toml` with a byte span; semantic errors carry a field path. An index of where each key
//! and value sits in the text turns one into the other.
//!
//! Keys are kebab-case and unknown keys are refused (a typo must not silently drop a setting).
//! A role runs when its section is present: `[map-server]`, `[map-resolver]`, `[xtr]`.
//!
//! Defaults, where a key is omitted:
//! - `node.listen`: `0.0.0.0` and `::` (the daemon must bind the IPv6 socket `IPV6_V6ONLY`);
//!   `node.control-port`: 4342; `node.api-socket`: `/run/loci/<name>.sock`; `node.state-dir`:
//!   `/var/lib/loci/<name>`. Relative paths (these two, key files) are taken from the directory
//!   of the configuration file, so a lab directory can be moved as a whole.
//! - `[limits]`: the core's [`Limits::default`] (RFC values).
//! - `map-server.max-registrations`: 2 000 000; `max-subscriptions`: 100 000.
//! - auth: Key ID 0 for a single `key`/`key-file`; MAC of full length over the whole message
//!   (what deployed implementations send). Key files: the bytes of the file, trailing CR/LF
//!   removed (editors add one).
//! - `xtr.xtr-id`: FNV-1a-128 of the node name, so it stays the same across restarts without
//!   state; `site-id`: 0; `record-ttl`: 1440 minutes (RFC 9301 §8.2's day).
//! - RLOC: priority 1, weight 100, m-priority 255 (not for multicast), m-weight 0, `local` true
//!   (set it to false for locators of the site's other ETRs).
//! - `EtrConfig::first_nonce` is 0: the daemon replaces it with the nonce saved in `state-dir`.
//! - `xtr.rlocs` (our RLOCs: the ETR data plane listens on them, the ITR sends from them and
//!   names them as ITR-RLOCs): the `local` locators of the database.
//! - `[[xtr.instance.dynamic-eid]]`: `mode` extended-subnet, no map-notify-group, `max-hosts`
//!   4096; hosts are registered with our RLOCs (`xtr.rlocs`), priority 1, weight 100.
//!   `xtr.pubsub` (the key Map-Servers sign publications with) makes the ITR subscribe.
//! - `[xtr.data-plane]`: `underlay-mtu` 1500 (the TUN devices get 36 or 56 bytes less),
//!   `mtu-method` "stateless" (RFC 9300 §7.1: IPv4 packets without DF too big for a narrower
//!   path to a locator are fragmented; "stateful", §7.2: they get an ICMP too-big like the rest),
//!   `flow-cache` 4096 slots per ITR worker; `xtr.map-cache-size`: 100 000 entries.
//! - `[xtr.probing]` (ITR role): on, `interval-ms` 1000 and `misses-to-down` 2 (RFC 9301 §5.3's
//!   one Map-Request per second; shorter intervals only through `[xtr.probing.fast-failover]`,
//!   which names its peers: `interval-ms` 200, `misses-to-down` 3); `locator-status-bits` off
//!   (RFC 9300 §10: private underlays only).
//! - `[xtr.echo-nonce]` (RFC 9300 §10.1; private underlays only, and needs the itr and etr
//!   roles and probing): off; `enabled = true` sets the E bit in our Map-Replies and requests
//!   echoes from locators that set it, `interval-ms` 1000 between requests, `timeout-ms` 500.
//! - `node.metrics`: off; an `address:port` serves Prometheus metrics on `/metrics`.
//! - Proxies (RFC 6832): `xtr.petr` (itr and pitr roles) lists Proxy-ETRs; traffic whose
//!   map-cache entry says native-forward is encapsulated to one of them (by flow) instead.
//!   The `pitr` role is an ITR for non-LISP sources (instance `routes` are the EID prefixes it
//!   draws traffic for; Map-Requests carry the P bit). The `petr` role decapsulates on
//!   `xtr.rlocs` and relays only packets whose inner source is in an instance's `relay-for`
//!   prefixes (required; never an open relay), through its TUN device and the kernel's routing.
//!
//! - `[[xtr.instance.dynamic-eid]]` (host mobility, DESIGN §5): `max-hosts` 1000, `rlocs` the
//!   node's RLOCs (priority 1, weight 100); `[xtr.mobility]`: `idle-timeout-secs` 300,
//!   `probe-interval-secs` 5, `probe-count` 3, `away-secs` 300, `smr-interval-secs` 3,
//!   `max-away` 100 000. `map-notify-group`: a multicast group (sent to and joined on the
//!   range's interface, TTL 1) and/or the site's other xTRs (unicast).
//!
//! The data plane (TUN devices, encapsulation, decapsulation) runs for the instances that name
//! a `tun`; an ETR without any keeps only its control plane (registration, Map-Replies).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use loci_core::config::{
    DatabaseMapping, DynamicEidRange, EtrConfig, Gateway, Limits, MapResolverConfig, MapServerConfig, MapServerPeer,
    MobilityConfig, MobilityMode, NodeConfig, PubSubPolicy, RegisterPeer, SiteConfig, SiteEidPrefix,
};
use loci_core::echo_nonce::EchoConfig;
use loci_core::eid::EidPrefix;
use loci_core::probing::{FastFailover, ProbingConfig};
use loci_wire::auth::{Algorithm, Coverage, KeyRing, MacLength, SendPolicy};
use loci_wire::{Address, Locator};
use serde::Deserialize;

/// The LISP control port (RFC 9301 §5.1).
pub const DEFAULT_CONTROL_PORT: u16 = 4342;
pub const DEFAULT_MAX_REGISTRATIONS: usize = 2_000_000;
pub const DEFAULT_MAX_SUBSCRIPTIONS: usize = 100_000;
/// One day, in minutes (RFC 9301 §8.2).
pub const DEFAULT_RECORD_TTL: u32 = 1440;
/// A key file larger than this is not a secret but a wrong path (and `/dev/zero` must not hang us).
const MAX_KEY_FILE: u64 = 4096;
/// Upper bound of every `*-secs` limit: one day.
const MAX_LIMIT_SECS: u64 = 86_400;
/// Upper bound of `xtr.probing.max-probes-per-second` (the pace is kept to the microsecond).
const MAX_PROBES_PER_SECOND: u32 = 1_000_000;

/// A parsed and validated configuration.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub node: NodeSettings,
    /// What the protocol code runs.
    pub core: NodeConfig,
    /// `xtr.map-resolvers` (the ITR asks them; `loci lig --config` too).
    pub map_resolvers: Vec<IpAddr>,
    /// The data plane, when an xTR role runs and some instance names a TUN device.
    pub data_plane: Option<loci_dataplane::Config>,
}

/// `[node]`: what the daemon itself needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSettings {
    pub name: String,
    /// Control-plane addresses; the daemon binds `control_port` on each.
    pub listen: Vec<IpAddr>,
    pub control_port: u16,
    pub api_socket: PathBuf,
    /// Where the last Map-Register nonce is kept across restarts.
    pub state_dir: PathBuf,
    /// Prometheus metrics listener (TCP), off when `None`.
    pub metrics: Option<SocketAddr>,
}

/// Why a configuration was refused. Displays as `file:line: field: reason`; line and field are
/// left out when unknown (an unreadable file, a missing role).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based.
    pub line: Option<usize>,
    /// Dotted path such as `map-server.site[0].auth.key`; empty for the whole file.
    pub field: String,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.reason)
    }
}

impl std::error::Error for ConfigError {}

type Result<T> = std::result::Result<T, ConfigError>;

/// Reads and validates the configuration file at `path`.
pub fn load(path: &Path) -> Result<DaemonConfig> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_owned(),
        line: None,
        field: String::new(),
        reason: format!("cannot read: {e}"),
    })?;
    parse(path, &text)
}

/// Validates `text`. `path` names the file in messages, and key files are read relative to its
/// directory.
/// One line saying which roles a valid configuration enables.
pub fn summary(cfg: &DaemonConfig) -> String {
    let c = &cfg.core;
    let mut roles = Vec::new();
    if let Some(ms) = &c.map_server {
        roles.push(format!("map-server with {} site(s)", ms.sites.len()));
    }
    if let Some(mr) = &c.map_resolver {
        roles.push(if mr.map_servers.is_empty() {
            "map-resolver (co-located)".to_string()
        } else {
            format!("map-resolver forwarding to {} map-server(s)", mr.map_servers.len())
        });
    }
    if let Some(etr) = &c.etr {
        roles.push(format!("etr with {} EID-prefix(es), {} map-server(s)", etr.database.len(), etr.map_servers.len()));
        for r in &etr.mobility.ranges {
            let mode = match r.mode {
                MobilityMode::ExtendedSubnet => "extended subnet",
                MobilityMode::AcrossSubnet => "across subnet",
            };
            roles.push(format!("dynamic EIDs {} on {} ({mode})", r.prefix, r.interface));
        }
    }
    if !cfg.map_resolvers.is_empty() {
        roles.push(format!("{} map-resolver(s) for lookups", cfg.map_resolvers.len()));
    }
    if let Some(itr) = &c.itr {
        roles.push(format!("itr with RLOC(s) {}", list(&itr.rlocs)));
        roles.push(match &itr.probing {
            None => "no RLOC probing".to_string(),
            Some(p) => {
                let mut s = format!("RLOC probing every {} ms", p.interval.as_millis());
                if let Some(f) = &p.fast {
                    s += &format!(" ({} ms to {})", f.interval.as_millis(), list(&f.peers));
                }
                s
            }
        });
    }
    if let Some(dp) = &cfg.data_plane {
        let tuns: Vec<String> = dp.instances.iter().map(|i| format!("{} (iid {})", i.tun, i.iid)).collect();
        roles.push(format!("data plane on {}, MTU {}", tuns.join(" "), dp.tun_mtu()));
    }
    if let Some(m) = cfg.node.metrics {
        roles.push(format!("metrics on {m}"));
    }
    format!("node {}: {}", cfg.node.name, roles.join(", "))
}

fn list(a: &[IpAddr]) -> String {
    a.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(" ")
}

pub fn parse(path: &Path, text: &str) -> Result<DaemonConfig> {
    let ctx = Ctx::new(path, text);
    let raw: RawConfig = toml::from_str(text).map_err(|e| ctx.toml_error(&e))?;
    ctx.build(raw)
}

/// Deserializes another TOML file format (the lab's topology files) with errors that name file,
/// line and field the way configuration errors do.
pub fn from_toml<T: serde::de::DeserializeOwned>(path: &Path, text: &str) -> Result<T> {
    toml::from_str(text).map_err(|e| Ctx::new(path, text).toml_error(&e))
}

/// An error about `field` (a dotted path) of the TOML `text` read from `path`, with its line.
pub fn field_error(path: &Path, text: &str, field: &str, reason: impl Into<String>) -> ConfigError {
    Ctx::new(path, text).err(field, reason)
}

// ---------------------------------------------------------------------------------------------
// The file as written. Strings are kept raw where validation gives a better message than serde.

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawConfig {
    /// Optional here to report its absence ourselves: serde's span for a missing top-level field
    /// is the whole document, which the index cannot tell from a table that fills the file.
    node: Option<RawNode>,
    limits: Option<RawLimits>,
    map_server: Option<RawMapServer>,
    map_resolver: Option<RawMapResolver>,
    xtr: Option<RawXtr>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawNode {
    name: String,
    listen: Option<Vec<String>>,
    control_port: Option<u16>,
    api_socket: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    metrics: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawLimits {
    map_requests_per_source: Option<u32>,
    map_registers_per_source: Option<u32>,
    map_reply_repeat_secs: Option<u64>,
    registration_timeout_secs: Option<u64>,
    register_interval_secs: Option<u64>,
    max_rate_limited_sources: Option<usize>,
    etr_replies_per_source: Option<u32>,
    etr_replies_per_second: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawMapServer {
    max_registrations: Option<usize>,
    max_subscriptions: Option<usize>,
    #[serde(default)]
    site: Vec<RawSite>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawSite {
    name: String,
    auth: RawAuth,
    #[serde(default)]
    allow_unauthenticated: bool,
    #[serde(default)]
    proxy_reply: bool,
    #[serde(default)]
    eid_prefixes: Vec<RawSitePrefix>,
    pubsub: Option<RawPubSub>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawAuth {
    algorithm: AlgorithmName,
    key: Option<String>,
    key_file: Option<PathBuf>,
    key_id: Option<u8>,
    keys: Option<Vec<RawKey>>,
    mac_length: Option<MacLengthName>,
    mac_coverage: Option<CoverageName>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawKey {
    id: u8,
    key: Option<String>,
    key_file: Option<PathBuf>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
enum AlgorithmName {
    #[serde(rename = "none")]
    None,
    #[serde(rename = "hmac-sha1-96")]
    HmacSha1_96,
    #[serde(rename = "hmac-sha256-128")]
    HmacSha256_128,
    #[serde(rename = "hmac-sha256-128-hkdf")]
    HmacSha256_128Hkdf,
}

impl From<AlgorithmName> for Algorithm {
    fn from(a: AlgorithmName) -> Self {
        match a {
            AlgorithmName::None => Algorithm::None,
            AlgorithmName::HmacSha1_96 => Algorithm::HmacSha1_96,
            AlgorithmName::HmacSha256_128 => Algorithm::HmacSha256_128,
            AlgorithmName::HmacSha256_128Hkdf => Algorithm::HmacSha256_128Hkdf,
        }
    }
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "kebab-case")]
enum MacLengthName {
    Full,
    Truncated,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "kebab-case")]
enum CoverageName {
    WholeMessage,
    ThroughLastRecord,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawSitePrefix {
    prefix: String,
    iid: Option<u32>,
    #[serde(default)]
    accept_more_specifics: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawPubSub {
    /// The section's presence enables pub/sub; `allow = false` turns it off and keeps the rest.
    #[serde(default = "yes")]
    allow: bool,
    #[serde(default)]
    site_ids: Vec<u64>,
    #[serde(default)]
    xtr_ids: Vec<String>,
    key: Option<String>,
    key_file: Option<PathBuf>,
    #[serde(default)]
    key_id: u8,
    algorithm: Option<AlgorithmName>,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawMapResolver {
    #[serde(default)]
    map_servers: Vec<RawMapServerPeer>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawMapServerPeer {
    address: String,
    #[serde(default)]
    eid_prefixes: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawXtr {
    #[serde(default)]
    roles: Vec<Role>,
    #[serde(default)]
    map_servers: Vec<RawRegisterPeer>,
    #[serde(default)]
    map_resolvers: Vec<String>,
    #[serde(default)]
    proxy_reply: bool,
    #[serde(default)]
    merge: bool,
    xtr_id: Option<String>,
    #[serde(default)]
    site_id: u64,
    record_ttl: Option<u32>,
    rlocs: Option<Vec<String>>,
    map_cache_size: Option<usize>,
    /// The key Map-Servers sign publications with (RFC 9437); the ITR subscribes when given.
    pubsub: Option<RawAuth>,
    data_plane: Option<RawDataPlane>,
    probing: Option<RawProbing>,
    echo_nonce: Option<RawEchoNonce>,
    mobility: Option<RawMobility>,
    /// Proxy-ETRs for non-LISP destinations (RFC 6832).
    #[serde(default)]
    petr: Vec<String>,
    #[serde(default)]
    instance: Vec<RawInstance>,
}

/// `[xtr.mobility]`: the timers of every dynamic-EID range.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawMobility {
    idle_timeout_secs: Option<u64>,
    probe_interval_secs: Option<u64>,
    probe_count: Option<u32>,
    away_secs: Option<u64>,
    smr_interval_secs: Option<u64>,
    max_away: Option<usize>,
}

/// `[[xtr.instance.dynamic-eid]]`: a host-mobility range.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawDynamicEid {
    prefix: String,
    interface: String,
    mode: RawMobilityMode,
    map_notify_group: Option<OneOrMany>,
    gateway: Option<RawGateway>,
    max_hosts: Option<usize>,
    rlocs: Option<Vec<RawRloc>>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "kebab-case")]
enum RawMobilityMode {
    ExtendedSubnet,
    AcrossSubnet,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawGateway {
    address: String,
    mac: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawDataPlane {
    underlay_mtu: Option<u32>,
    mtu_method: Option<MtuMethodName>,
    flow_cache: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawProbing {
    #[serde(default = "yes")]
    enabled: bool,
    interval_ms: Option<u64>,
    misses_to_down: Option<u32>,
    #[serde(default)]
    locator_status_bits: bool,
    max_probes_per_second: Option<u32>,
    fast_failover: Option<RawFastFailover>,
}

/// `[xtr.echo-nonce]` (RFC 9300 §10.1).
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawEchoNonce {
    #[serde(default)]
    enabled: bool,
    interval_ms: Option<u64>,
    timeout_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawFastFailover {
    interval_ms: Option<u64>,
    misses_to_down: Option<u32>,
    #[serde(default)]
    peers: Vec<String>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
enum MtuMethodName {
    Stateless,
    Stateful,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
enum Role {
    Itr,
    Etr,
    Pitr,
    Petr,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawRegisterPeer {
    address: String,
    port: Option<u16>,
    auth: RawAuth,
    #[serde(default)]
    allow_unauthenticated: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawInstance {
    #[serde(default)]
    iid: u32,
    tun: Option<String>,
    #[serde(default)]
    routes: Vec<String>,
    table: Option<u32>,
    #[serde(default)]
    database: Vec<RawMapping>,
    #[serde(default)]
    dynamic_eid: Vec<RawDynamicEid>,
    /// Proxy-ETR role: the EID prefixes of the sites it relays for.
    #[serde(default)]
    relay_for: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawMapping {
    prefix: String,
    #[serde(default)]
    rlocs: Vec<RawRloc>,
}

/// Priorities and weights are read wide so that 300 gets "out of range 0-255", not a serde type error.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawRloc {
    address: String,
    priority: Option<i64>,
    weight: Option<i64>,
    m_priority: Option<i64>,
    m_weight: Option<i64>,
    local: Option<bool>,
}

// ---------------------------------------------------------------------------------------------
// Where things are in the text.

/// Every key and value of the document by field path (`a.b[0].c`), with their byte spans.
struct Index {
    entries: Vec<Entry>,
}

struct Entry {
    path: String,
    key: Option<Range<usize>>,
    /// `None` for implicit tables (`a` in `[a.b]`).
    value: Option<Range<usize>>,
}

impl Index {
    /// An empty index when the text does not parse: the typed parse then reports the syntax error.
    fn build(text: &str) -> Index {
        let mut entries = Vec::new();
        if let Ok(doc) = toml_edit::ImDocument::parse(text) {
            walk_table(&mut entries, "", doc.as_table());
        }
        Index { entries }
    }

    /// Where `path` starts (its value, else its key), or its nearest ancestor when it is absent
    /// (a missing field is reported at the table that lacks it).
    fn offset_of(&self, path: &str) -> Option<usize> {
        let mut p = path;
        loop {
            let found = self.entries.iter().find(|e| e.path == p);
            if let Some(r) = found.and_then(|e| e.value.as_ref().or(e.key.as_ref())) {
                return Some(r.start);
            }
            p = parent(p)?;
        }
    }

    /// The deepest field whose key or value holds `span`.
    fn path_at(&self, span: &Range<usize>) -> Option<&str> {
        self.entries
            .iter()
            .flat_map(|e| [&e.key, &e.value].into_iter().flatten().map(move |r| (e, r)))
            .filter(|(_, r)| r.start <= span.start && span.end <= r.end)
            .min_by_key(|(e, r)| (std::cmp::Reverse(depth(&e.path)), r.len()))
            .map(|(e, _)| e.path.as_str())
    }
}

fn walk_table(out: &mut Vec<Entry>, path: &str, table: &dyn toml_edit::TableLike) {
    for (name, item) in table.iter() {
        let key = table.key(name).and_then(|k| k.span());
        walk_item(out, join(path, name), key, item);
    }
}

fn walk_item(out: &mut Vec<Entry>, path: String, key: Option<Range<usize>>, item: &toml_edit::Item) {
    use toml_edit::Item;
    match item {
        Item::None => {}
        Item::Value(v) => walk_value(out, path, key, v),
        Item::Table(t) => {
            out.push(Entry { path: path.clone(), key, value: t.span() });
            walk_table(out, &path, t);
        }
        Item::ArrayOfTables(a) => {
            out.push(Entry { path: path.clone(), key, value: a.span() });
            for (i, t) in a.iter().enumerate() {
                let p = format!("{path}[{i}]");
                out.push(Entry { path: p.clone(), key: None, value: t.span() });
                walk_table(out, &p, t);
            }
        }
    }
}

fn walk_value(out: &mut Vec<Entry>, path: String, key: Option<Range<usize>>, value: &toml_edit::Value) {
    out.push(Entry { path: path.clone(), key, value: value.span() });
    match value {
        toml_edit::Value::InlineTable(t) => walk_table(out, &path, t),
        toml_edit::Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                walk_value(out, format!("{path}[{i}]"), None, v);
            }
        }
        _ => {}
    }
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

/// `a.b[0]` -> `a.b` -> `a` -> `` -> none.
fn parent(path: &str) -> Option<&str> {
    if path.is_empty() {
        return None;
    }
    let cut = if path.ends_with(']') { path.rfind('[') } else { path.rfind('.') };
    Some(cut.map_or("", |i| &path[..i]))
}

fn depth(path: &str) -> usize {
    path.bytes().filter(|b| matches!(b, b'.' | b'[')).count() + usize::from(!path.is_empty())
}

fn line_at(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())].iter().filter(|&&b| b == b'\n').count() + 1
}

// ---------------------------------------------------------------------------------------------
// Validation.

struct Ctx<'a> {
    file: &'a Path,
    /// Relative paths in the file are relative to this.
    dir: &'a Path,
    text: &'a str,
    index: Index,
}

impl<'a> Ctx<'a> {
    fn new(file: &'a Path, text: &'a str) -> Self {
        Ctx { file, dir: file.parent().unwrap_or(Path::new("")), text, index: Index::build(text) }
    }

    fn err(&self, field: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_owned(),
            line: self.index.offset_of(field).map(|o| line_at(self.text, o)),
            field: field.to_owned(),
            reason: reason.into(),
        }
    }

    /// Same as [`Ctx::err`] without a line: the error is about the file as a whole.
    fn whole_file(&self, reason: impl Into<String>) -> ConfigError {
        ConfigError { file: self.file.to_owned(), line: None, field: String::new(), reason: reason.into() }
    }

    fn toml_error(&self, e: &toml::de::Error) -> ConfigError {
        let reason = e.message().trim().replace('\n', "; ");
        let (line, mut field) = match e.span() {
            Some(span) => {
                (Some(line_at(self.text, span.start)), self.index.path_at(&span).unwrap_or_default().to_owned())
            }
            None => (None, String::new()),
        };
        // serde names a missing field only in its message; the span is the table lacking it.
        if let Some(name) = reason.strip_prefix("missing field `").and_then(|r| r.split('`').next()) {
            field = join(&field, name);
        }
        ConfigError { file: self.file.to_owned(), line, field, reason }
    }

    fn build(&self, raw: RawConfig) -> Result<DaemonConfig> {
        let Some(raw_node) = &raw.node else {
            return Err(ConfigError { field: "node".into(), ..self.whole_file("missing [node] section") });
        };
        let node = self.node(raw_node)?;
        let limits = self.limits(raw.limits.as_ref())?;
        if raw.map_server.is_none() && raw.map_resolver.is_none() && raw.xtr.is_none() {
            return Err(self.whole_file("nothing to do: configure [map-server], [map-resolver] or [xtr]"));
        }
        let map_server = raw.map_server.as_ref().map(|ms| self.map_server(ms)).transpose()?;
        let map_resolver =
            raw.map_resolver.as_ref().map(|mr| self.map_resolver(mr, map_server.is_some())).transpose()?;
        let x = match &raw.xtr {
            Some(x) => self.xtr(x, &node)?,
            None => Xtr::default(),
        };
        let core = NodeConfig { name: node.name.clone(), map_server, map_resolver, etr: x.etr, itr: x.itr, limits };
        Ok(DaemonConfig { node, core, map_resolvers: x.map_resolvers, data_plane: x.data_plane })
    }

    fn node(&self, raw: &RawNode) -> Result<NodeSettings> {
        let name = raw.name.clone();
        // The name is part of file paths (socket, state directory): keep it to a safe alphabet.
        if name.is_empty() {
            return Err(self.err("node.name", "name must not be empty"));
        }
        if name.starts_with('.') || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) {
            return Err(self.err(
                "node.name",
                format!("{name:?}: use letters, digits, '.', '_' and '-', not starting with '.' (it names files)"),
            ));
        }
        let listen = match &raw.listen {
            None => vec![IpAddr::V4(Ipv4Addr::UNSPECIFIED), IpAddr::V6(Ipv6Addr::UNSPECIFIED)],
            Some(list) if list.is_empty() => return Err(self.err("node.listen", "no address to listen on")),
            Some(list) => {
                let mut out = Vec::new();
                for (i, s) in list.iter().enumerate() {
                    let field = format!("node.listen[{i}]");
                    let ip = self.ip(&field, s)?;
                    if out.contains(&ip) {
                        return Err(self.err(&field, format!("{ip} is listed twice")));
                    }
                    out.push(ip);
                }
                out
            }
        };
        let control_port = raw.control_port.unwrap_or(DEFAULT_CONTROL_PORT);
        if control_port == 0 {
            return Err(self.err("node.control-port", "port must not be 0"));
        }
        let api_socket = match &raw.api_socket {
            Some(p) => self.path("node.api-socket", p)?,
            None => PathBuf::from(format!("/run/loci/{name}.sock")),
        };
        let state_dir = match &raw.state_dir {
            Some(p) => self.path("node.state-dir", p)?,
            None => PathBuf::from(format!("/var/lib/loci/{name}")),
        };
        let metrics = match &raw.metrics {
            None => None,
            Some(s) => Some(s.parse::<SocketAddr>().map_err(|_| {
                self.err("node.metrics", format!("{s:?} is not an address:port (such as \"127.0.0.1:9100\")"))
            })?),
        };
        if metrics.is_some_and(|m| m.port() == 0) {
            return Err(self.err("node.metrics", "port must not be 0"));
        }
        Ok(NodeSettings { name, listen, control_port, api_socket, state_dir, metrics })
    }

    fn limits(&self, raw: Option<&RawLimits>) -> Result<Limits> {
        let mut l = Limits::default();
        let Some(raw) = raw else { return Ok(l) };
        // Every value is bounded: 0 would stop a role, and a huge duration would overflow
        // `Instant + d` in the core.
        let check = |field: &str, v: u64, min: u64, max: u64| {
            if (min..=max).contains(&v) {
                Ok(v)
            } else {
                Err(self.err(&format!("limits.{field}"), format!("{v} is out of range {min}-{max}")))
            }
        };
        let secs = |field: &str, v: u64, min: u64| check(field, v, min, MAX_LIMIT_SECS).map(Duration::from_secs);
        // A rate: 1 or more per second.
        let rate = |field: &str, v: Option<u32>, into: &mut u32| -> Result<()> {
            if let Some(v) = v {
                *into = check(field, v.into(), 1, u32::MAX.into())? as u32;
            }
            Ok(())
        };
        rate("map-requests-per-source", raw.map_requests_per_source, &mut l.map_requests_per_source)?;
        rate("map-registers-per-source", raw.map_registers_per_source, &mut l.map_registers_per_source)?;
        rate("etr-replies-per-source", raw.etr_replies_per_source, &mut l.etr_replies_per_source)?;
        rate("etr-replies-per-second", raw.etr_replies_per_second, &mut l.etr_replies_per_second)?;
        if let Some(v) = raw.map_reply_repeat_secs {
            // 0 disables the RFC 9301 §5.4 repeat limit.
            l.map_reply_repeat = secs("map-reply-repeat-secs", v, 0)?;
        }
        if let Some(v) = raw.registration_timeout_secs {
            l.registration_timeout = secs("registration-timeout-secs", v, 1)?;
        }
        if let Some(v) = raw.register_interval_secs {
            l.register_interval = secs("register-interval-secs", v, 1)?;
        }
        if let Some(v) = raw.max_rate_limited_sources {
            check("max-rate-limited-sources", v as u64, 1, u64::MAX)?;
            l.max_rate_limited_sources = v;
        }
        if l.register_interval >= l.registration_timeout {
            let field = if raw.register_interval_secs.is_some() {
                "limits.register-interval-secs"
            } else {
                "limits.registration-timeout-secs"
            };
            return Err(self.err(
                field,
                format!(
                    "register interval ({} s) must be shorter than the registration timeout ({} s), \
                     or registrations expire between refreshes",
                    l.register_interval.as_secs(),
                    l.registration_timeout.as_secs()
                ),
            ));
        }
        Ok(l)
    }

    fn map_server(&self, raw: &RawMapServer) -> Result<MapServerConfig> {
        let max_registrations = raw.max_registrations.unwrap_or(DEFAULT_MAX_REGISTRATIONS);
        if max_registrations == 0 {
            return Err(self.err("map-server.max-registrations", "must be at least 1"));
        }
        let max_subscriptions = raw.max_subscriptions.unwrap_or(DEFAULT_MAX_SUBSCRIPTIONS);
        if raw.site.is_empty() {
            return Err(self.err(
                "map-server",
                "no site: add [[map-server.site]] sections, or a Map-Server accepts no registration",
            ));
        }
        let mut sites: Vec<SiteConfig> = Vec::with_capacity(raw.site.len());
        let mut names: HashMap<&str, usize> = HashMap::new();
        for (i, s) in raw.site.iter().enumerate() {
            if let Some(first) = names.insert(&s.name, i) {
                return Err(self.err(
                    &format!("map-server.site[{i}].name"),
                    format!("site {:?} is already defined as map-server.site[{first}]", s.name),
                ));
            }
            sites.push(self.site(i, s)?);
        }
        self.check_site_overlaps(&sites)?;
        Ok(MapServerConfig { sites, max_registrations, max_subscriptions })
    }

    fn site(&self, i: usize, raw: &RawSite) -> Result<SiteConfig> {
        let at = format!("map-server.site[{i}]");
        if raw.name.is_empty() {
            return Err(self.err(&format!("{at}.name"), "name must not be empty"));
        }
        let auth = self.auth(&format!("{at}.auth"), &raw.auth, raw.allow_unauthenticated)?;
        let mut keys = KeyRing::new();
        for (id, secret) in auth.keys {
            keys.insert(id, secret);
        }
        if raw.eid_prefixes.is_empty() {
            return Err(self.err(&format!("{at}.eid-prefixes"), "no EID prefix: the site could register nothing"));
        }
        let mut eid_prefixes: Vec<SiteEidPrefix> = Vec::new();
        for (j, p) in raw.eid_prefixes.iter().enumerate() {
            let field = format!("{at}.eid-prefixes[{j}]");
            let prefix = self.eid_prefix(&format!("{field}.prefix"), &p.prefix, p.iid)?;
            if eid_prefixes.iter().any(|e| e.prefix == prefix) {
                return Err(self.err(&format!("{field}.prefix"), format!("{prefix} is listed twice")));
            }
            eid_prefixes.push(SiteEidPrefix { prefix, accept_more_specifics: p.accept_more_specifics });
        }
        let pubsub = match &raw.pubsub {
            Some(p) if p.allow => Some(self.pubsub(&format!("{at}.pubsub"), p)?),
            _ => None,
        };
        Ok(SiteConfig {
            name: raw.name.clone(),
            keys,
            notify_policy: auth.policy,
            allow_unauthenticated: raw.allow_unauthenticated,
            eid_prefixes,
            force_proxy_reply: raw.proxy_reply,
            pubsub,
        })
    }

    /// Two sites claiming overlapping prefixes would make the owner of an EID ambiguous.
    /// Shorter prefixes go first, so each prefix only needs to look up its own supernets.
    fn check_site_overlaps(&self, sites: &[SiteConfig]) -> Result<()> {
        let mut all: Vec<(EidPrefix, usize, usize)> = Vec::new();
        for (i, s) in sites.iter().enumerate() {
            all.extend(s.eid_prefixes.iter().enumerate().map(|(j, p)| (p.prefix, i, j)));
        }
        all.sort_by_key(|(p, i, j)| (p.net.prefix_len(), *i, *j));
        let mut owner: HashMap<(u32, IpNet), (usize, usize)> = HashMap::new();
        for (p, i, j) in all {
            for len in 0..=p.net.prefix_len() {
                let Ok(sup) = IpNet::new(p.net.addr(), len) else { continue };
                if let Some(&(oi, oj)) = owner.get(&(p.iid, sup.trunc())) {
                    if oi != i {
                        let other = format!("map-server.site[{oi}].eid-prefixes[{oj}].prefix");
                        let line = self.index.offset_of(&other).map(|o| format!(" (line {})", line_at(self.text, o)));
                        return Err(self.err(
                            &format!("map-server.site[{i}].eid-prefixes[{j}].prefix"),
                            format!(
                                "{} overlaps {} of site {:?}{}: each EID must belong to one site",
                                p,
                                sites[oi].eid_prefixes[oj].prefix,
                                sites[oi].name,
                                line.unwrap_or_default()
                            ),
                        ));
                    }
                }
            }
            owner.entry((p.iid, p.net)).or_insert((i, j));
        }
        Ok(())
    }

    fn pubsub(&self, at: &str, raw: &RawPubSub) -> Result<PubSubPolicy> {
        let algorithm = raw.algorithm.unwrap_or(AlgorithmName::HmacSha256_128);
        if algorithm == AlgorithmName::None {
            return Err(self.err(&format!("{at}.algorithm"), "publications must be authenticated (RFC 9437)"));
        }
        let key = self.secret(at, raw.key.as_deref(), raw.key_file.as_deref())?;
        let mut allowed_xtr_ids = Vec::new();
        for (i, s) in raw.xtr_ids.iter().enumerate() {
            allowed_xtr_ids.push(self.xtr_id(&format!("{at}.xtr-ids[{i}]"), s)?);
        }
        Ok(PubSubPolicy {
            allowed_site_ids: raw.site_ids.clone(),
            allowed_xtr_ids,
            key_id: raw.key_id,
            key,
            algorithm: algorithm.into(),
        })
    }

    fn auth(&self, at: &str, raw: &RawAuth, allow_unauthenticated: bool) -> Result<Auth> {
        let has_single = raw.key.is_some() || raw.key_file.is_some() || raw.key_id.is_some();
        let mut policy = SendPolicy { algorithm: raw.algorithm.into(), ..SendPolicy::default() };
        if let Some(l) = raw.mac_length {
            policy.length = match l {
                MacLengthName::Full => MacLength::Full,
                MacLengthName::Truncated => MacLength::Truncated,
            };
        }
        if let Some(c) = raw.mac_coverage {
            policy.coverage = match c {
                CoverageName::WholeMessage => Coverage::WholeMessage,
                CoverageName::ThroughLastRecord => Coverage::ThroughLastRecord,
            };
        }
        if raw.algorithm == AlgorithmName::None {
            if !allow_unauthenticated {
                return Err(self.err(
                    &format!("{at}.algorithm"),
                    "\"none\" means unauthenticated messages: set allow-unauthenticated = true to mean it",
                ));
            }
            if has_single || raw.keys.is_some() {
                return Err(self.err(&format!("{at}.algorithm"), "algorithm \"none\" takes no key"));
            }
            return Ok(Auth { policy, keys: Vec::new() });
        }
        let keys = match &raw.keys {
            Some(_) if has_single => {
                return Err(self.err(&format!("{at}.keys"), "give either key/key-file/key-id or keys, not both"))
            }
            None if !has_single => {
                return Err(self.err(at, "no key: give key, key-file or keys"));
            }
            None => {
                vec![(raw.key_id.unwrap_or(0), self.secret(at, raw.key.as_deref(), raw.key_file.as_deref())?)]
            }
            Some(list) if list.is_empty() => return Err(self.err(&format!("{at}.keys"), "no key in keys")),
            Some(list) => {
                let mut out: Vec<(u8, Vec<u8>)> = Vec::new();
                for (i, k) in list.iter().enumerate() {
                    let field = format!("{at}.keys[{i}]");
                    if out.iter().any(|(id, _)| *id == k.id) {
                        return Err(self.err(&format!("{field}.id"), format!("key id {} is given twice", k.id)));
                    }
                    out.push((k.id, self.secret(&field, k.key.as_deref(), k.key_file.as_deref())?));
                }
                out
            }
        };
        Ok(Auth { policy, keys })
    }

    /// A secret from `key` or `key-file` in the table at `at`.
    fn secret(&self, at: &str, key: Option<&str>, key_file: Option<&Path>) -> Result<Vec<u8>> {
        match (key, key_file) {
            (Some(_), Some(_)) => Err(self.err(&format!("{at}.key-file"), "give key or key-file, not both")),
            (None, None) => Err(self.err(at, "no key: give key or key-file")),
            (Some(""), None) => Err(self.err(&format!("{at}.key"), "key must not be empty")),
            (Some(k), None) => Ok(k.as_bytes().to_vec()),
            (None, Some(p)) => {
                let field = format!("{at}.key-file");
                let path = self.path(&field, p)?;
                let mut bytes = Vec::new();
                let read = std::fs::File::open(&path).and_then(|f| f.take(MAX_KEY_FILE + 1).read_to_end(&mut bytes));
                if let Err(e) = read {
                    return Err(self.err(&field, format!("cannot read {}: {e}", path.display())));
                }
                if bytes.len() as u64 > MAX_KEY_FILE {
                    return Err(self.err(&field, format!("{} is larger than {MAX_KEY_FILE} bytes", path.display())));
                }
                while matches!(bytes.last(), Some(b'\n' | b'\r')) {
                    bytes.pop();
                }
                if bytes.is_empty() {
                    return Err(self.err(&field, format!("{} holds an empty key", path.display())));
                }
                Ok(bytes)
            }
        }
    }

    fn map_resolver(&self, raw: &RawMapResolver, has_map_server: bool) -> Result<MapResolverConfig> {
        if raw.map_servers.is_empty() && !has_map_server {
            return Err(self.err(
                "map-resolver",
                "no map-servers, which means a co-located Map-Server, but there is no [map-server]",
            ));
        }
        let mut map_servers: Vec<MapServerPeer> = Vec::new();
        for (i, p) in raw.map_servers.iter().enumerate() {
            let at = format!("map-resolver.map-servers[{i}]");
            let address = self.ip(&format!("{at}.address"), &p.address)?;
            if map_servers.iter().any(|m| m.address == address) {
                return Err(self.err(&format!("{at}.address"), format!("{address} is listed twice")));
            }
            if p.eid_prefixes.is_empty() {
                return Err(self.err(&format!("{at}.eid-prefixes"), "no EID prefix: which EIDs does it serve?"));
            }
            let mut eid_prefixes = Vec::new();
            for (j, s) in p.eid_prefixes.iter().enumerate() {
                eid_prefixes.push(self.eid_prefix(&format!("{at}.eid-prefixes[{j}]"), s, None)?);
            }
            map_servers.push(MapServerPeer { address, eid_prefixes });
        }
        Ok(MapResolverConfig { map_servers })
    }

    fn xtr(&self, raw: &RawXtr, node: &NodeSettings) -> Result<Xtr> {
        if raw.roles.is_empty() {
            return Err(self.err("xtr.roles", "no role: say roles = [\"itr\", \"etr\"]"));
        }
        for (i, r) in raw.roles.iter().enumerate() {
            let field = format!("xtr.roles[{i}]");
            let name = match r {
                Role::Etr => "etr",
                Role::Itr => "itr",
                Role::Pitr => "pitr",
                Role::Petr => "petr",
            };
            if *r == Role::Pitr && raw.roles.contains(&Role::Itr) {
                return Err(self.err(&field, "a pitr is an itr without a site: give one of \"itr\" and \"pitr\""));
            }
            if raw.roles[..i].contains(r) {
                return Err(self.err(&field, format!("role \"{name}\" is listed twice")));
            }
        }
        let is_etr = raw.roles.contains(&Role::Etr);
        // A Proxy-ITR is an ITR for others' traffic: the same machinery, with the P bit.
        let is_pitr = raw.roles.contains(&Role::Pitr);
        let is_itr = raw.roles.contains(&Role::Itr) || is_pitr;
        let is_petr = raw.roles.contains(&Role::Petr);

        let mut map_servers: Vec<RegisterPeer> = Vec::new();
        for (i, p) in raw.map_servers.iter().enumerate() {
            let at = format!("xtr.map-servers[{i}]");
            let ip = self.ip(&format!("{at}.address"), &p.address)?;
            let port = p.port.unwrap_or(DEFAULT_CONTROL_PORT);
            if port == 0 {
                return Err(self.err(&format!("{at}.port"), "port must not be 0"));
            }
            let address = SocketAddr::new(ip, port);
            if map_servers.iter().any(|m| m.address == address) {
                return Err(self.err(&format!("{at}.address"), format!("{address} is listed twice")));
            }
            let auth = self.auth(&format!("{at}.auth"), &p.auth, p.allow_unauthenticated)?;
            // An ETR signs each Map-Register with one key; a ring is for the receiving side.
            if auth.keys.len() > 1 {
                return Err(self.err(&format!("{at}.auth.keys"), "an ETR signs with one key: give exactly one"));
            }
            let (key_id, key) = auth.keys.into_iter().next().unwrap_or_default();
            map_servers.push(RegisterPeer { address, key_id, key, policy: auth.policy });
        }
        if is_etr && map_servers.is_empty() {
            return Err(self.err("xtr.map-servers", "the etr role needs at least one map-server to register with"));
        }

        let mut map_resolvers = Vec::new();
        for (i, s) in raw.map_resolvers.iter().enumerate() {
            let field = format!("xtr.map-resolvers[{i}]");
            let ip = self.ip(&field, s)?;
            if map_resolvers.contains(&ip) {
                return Err(self.err(&field, format!("{ip} is listed twice")));
            }
            map_resolvers.push(ip);
        }
        if is_itr && map_resolvers.is_empty() {
            return Err(self.err("xtr.map-resolvers", "the itr role needs at least one map-resolver to ask"));
        }

        let mut database: Vec<DatabaseMapping> = Vec::new();
        let mut instances: Vec<loci_dataplane::Instance> = Vec::new();
        // Whether an instance with a TUN device carries IPv6 EIDs (its MTU must then be >= 1280).
        let mut v6_eids: Option<String> = None;
        let mut iids: HashSet<u32> = HashSet::new();
        let mut tun_names: HashSet<&str> = HashSet::new();
        let mut ranges: Vec<DynamicEidRange> = Vec::new();
        let mut relay_for: Vec<EidPrefix> = Vec::new();
        for (i, inst) in raw.instance.iter().enumerate() {
            let at = format!("xtr.instance[{i}]");
            for (j, r) in inst.relay_for.iter().enumerate() {
                let field = format!("{at}.relay-for[{j}]");
                if !is_petr {
                    return Err(self.err(&field, "only the petr role relays"));
                }
                if inst.tun.is_none() {
                    return Err(
                        self.err(&field, "relayed packets leave through a TUN device: give this instance a tun")
                    );
                }
                let p = self.eid_prefix(&field, r, Some(inst.iid))?;
                if relay_for.contains(&p) {
                    return Err(self.err(&field, format!("{r} is listed twice")));
                }
                relay_for.push(p);
            }
            if !iids.insert(inst.iid) {
                return Err(self.err(&format!("{at}.iid"), format!("instance {} is defined twice", inst.iid)));
            }
            let mut routes = Vec::new();
            for (j, r) in inst.routes.iter().enumerate() {
                let field = format!("{at}.routes[{j}]");
                let p = self.eid_prefix(&field, r, Some(inst.iid))?;
                if routes.contains(&p.net) {
                    return Err(self.err(&field, format!("{r} is listed twice")));
                }
                routes.push(p.net);
            }
            let db_start = database.len();
            for (j, m) in inst.database.iter().enumerate() {
                let mat = format!("{at}.database[{j}]");
                let prefix = self.eid_prefix(&format!("{mat}.prefix"), &m.prefix, Some(inst.iid))?;
                if database.iter().any(|d| d.prefix == prefix) {
                    return Err(self.err(&format!("{mat}.prefix"), format!("{prefix} is listed twice")));
                }
                if m.rlocs.is_empty() {
                    return Err(self.err(&format!("{mat}.rlocs"), "no RLOC: a mapping needs at least one"));
                }
                let mut locators: Vec<Locator> = Vec::new();
                for (k, r) in m.rlocs.iter().enumerate() {
                    let loc = self.locator(&format!("{mat}.rlocs[{k}]"), r)?;
                    if locators.iter().any(|l| l.address == loc.address) {
                        return Err(
                            self.err(&format!("{mat}.rlocs[{k}].address"), format!("{} is listed twice", r.address))
                        );
                    }
                    locators.push(loc);
                }
                database.push(DatabaseMapping { prefix, locators });
            }
            for (j, d) in inst.dynamic_eid.iter().enumerate() {
                ranges.push(self.dynamic_eid(&format!("{at}.dynamic-eid[{j}]"), d, inst.iid, &ranges)?);
            }
            match &inst.tun {
                Some(tun) => {
                    check_interface(tun).map_err(|r| self.err(&format!("{at}.tun"), r))?;
                    if !tun_names.insert(tun) {
                        return Err(self.err(&format!("{at}.tun"), format!("{tun} serves another instance already")));
                    }
                    let v6 = routes.iter().any(|r| matches!(r, IpNet::V6(_)))
                        || database[db_start..].iter().any(|d| matches!(d.prefix.net, IpNet::V6(_)));
                    if v6 && v6_eids.is_none() {
                        v6_eids = Some(at.clone());
                    }
                    if inst.table == Some(0) {
                        return Err(self.err(&format!("{at}.table"), "routing table 0 does not exist (main is 254)"));
                    }
                    instances.push(loci_dataplane::Instance {
                        iid: inst.iid,
                        tun: tun.clone(),
                        routes,
                        table: inst.table,
                    });
                }
                None if !routes.is_empty() || inst.table.is_some() => {
                    return Err(
                        self.err(&format!("{at}.routes"), "routes go into a TUN device: give this instance a tun")
                    );
                }
                None => {}
            }
        }
        if !ranges.is_empty() && !is_etr {
            return Err(self.err("xtr.roles", "dynamic EIDs are registered: the etr role is needed"));
        }
        if is_etr && database.is_empty() && ranges.is_empty() {
            return Err(self.err(
                "xtr.instance",
                "the etr role needs a database: add [[xtr.instance]] with database = [{ prefix = ..., rlocs = [...] }]",
            ));
        }
        if is_itr && instances.is_empty() {
            return Err(
                self.err("xtr.instance", "the itr role reads packets from a TUN device: give an instance a tun")
            );
        }

        // Ranges with their own locators count as database entries for the default RLOCs.
        let with_ranges: Vec<DatabaseMapping> = database
            .iter()
            .cloned()
            .chain(ranges.iter().map(|r| DatabaseMapping { prefix: r.prefix, locators: r.locators.clone() }))
            .collect();
        let rlocs = self.rlocs(raw, &with_ranges)?;
        if ranges.iter().any(|r| r.locators.is_empty()) && rlocs.is_empty() {
            return Err(self.err("xtr.rlocs", "dynamic EIDs are registered with our RLOCs: list xtr.rlocs"));
        }
        for r in ranges.iter_mut().filter(|r| r.locators.is_empty()) {
            r.locators = rlocs.iter().map(|&a| default_locator(a)).collect();
        }
        let mobility = self.mobility(raw.mobility.as_ref(), ranges)?;
        if is_itr {
            self.itr_rlocs(&rlocs, &map_resolvers, node)?;
        }
        if is_etr && !instances.is_empty() && rlocs.is_empty() {
            return Err(self.err(
                "xtr.instance",
                "the etr data plane receives on our RLOCs, and no database locator is local: list xtr.rlocs",
            ));
        }
        let proxy = self.proxy(raw, is_itr, is_petr, &instances, &rlocs, &database, relay_for)?;

        let dp = raw.data_plane.as_ref();
        let underlay_mtu = match dp.and_then(|d| d.underlay_mtu) {
            None => 1500,
            Some(m) => u16::try_from(m)
                .ok()
                .filter(|&m| m >= 1280)
                .ok_or_else(|| self.err("xtr.data-plane.underlay-mtu", format!("{m} is out of range 1280-65535")))?,
        };
        let flow_cache_slots = dp.and_then(|d| d.flow_cache).unwrap_or(4096);
        if flow_cache_slots > 1 << 24 {
            return Err(self.err("xtr.data-plane.flow-cache", format!("{flow_cache_slots} slots: at most 16777216")));
        }
        let data_plane = (!instances.is_empty()).then(|| loci_dataplane::Config {
            instances,
            rlocs: rlocs.clone(),
            itr: is_itr,
            etr: is_etr || is_petr,
            underlay_mtu,
            flow_cache_slots,
            proxy,
            mtu_method: match dp.and_then(|d| d.mtu_method) {
                Some(MtuMethodName::Stateful) => loci_dataplane::MtuMethod::Stateful,
                Some(MtuMethodName::Stateless) | None => loci_dataplane::MtuMethod::Stateless,
            },
        });
        if let (Some(dp), Some(at)) = (&data_plane, &v6_eids) {
            if dp.tun_mtu() < 1280 {
                return Err(self.err(
                    "xtr.data-plane.underlay-mtu",
                    format!(
                        "{underlay_mtu} leaves {} bytes after encapsulation, but IPv6 EIDs ({at}) need 1280",
                        dp.tun_mtu()
                    ),
                ));
            }
        }

        let mut itr = None;
        if is_itr {
            let mut c = loci_core::itr::ItrConfig {
                map_resolvers: map_resolvers.iter().map(|&a| SocketAddr::new(a, DEFAULT_CONTROL_PORT)).collect(),
                rlocs: rlocs.clone(),
                pitr: is_pitr,
                ..Default::default()
            };
            if let Some(p) = &raw.pubsub {
                let auth = self.auth("xtr.pubsub", p, false)?;
                if auth.keys.len() > 1 {
                    return Err(self.err("xtr.pubsub.keys", "give exactly one pub/sub key"));
                }
                c.pubsub_key = auth.keys.into_iter().next();
            }
            if let Some(n) = raw.map_cache_size {
                if n == 0 || n > 10_000_000 {
                    return Err(self.err("xtr.map-cache-size", format!("{n} is out of range 1-10000000")));
                }
                c.cache.max_entries = n;
            }
            c.probing = self.probing(raw.probing.as_ref())?;
            c.echo_nonce = self.echo_nonce(raw.echo_nonce.as_ref(), is_etr, c.probing.is_some())?;
            itr = Some(c);
        } else if raw.pubsub.is_some() {
            return Err(self.err("xtr.pubsub", "only the itr role subscribes"));
        } else if raw.map_cache_size.is_some() {
            return Err(self.err("xtr.map-cache-size", "only the itr role has a map-cache"));
        } else if raw.probing.is_some() {
            return Err(self.err("xtr.probing", "only the itr role probes locators"));
        } else if raw.echo_nonce.as_ref().is_some_and(|e| e.enabled) {
            return Err(self.err("xtr.echo-nonce", "echo-nonce needs the itr and etr roles on one node"));
        }

        let xtr_id = match &raw.xtr_id {
            Some(s) => self.xtr_id("xtr.xtr-id", s)?,
            None => fnv1a_128(node.name.as_bytes()),
        };
        let record_ttl = raw.record_ttl.unwrap_or(DEFAULT_RECORD_TTL);
        if record_ttl == 0 {
            return Err(self.err("xtr.record-ttl", "a TTL of 0 would make every cache drop our mappings at once"));
        }
        if let Some(itr) = &mut itr {
            (itr.xtr_id, itr.site_id) = (xtr_id, raw.site_id);
        }
        let etr = is_etr.then_some(EtrConfig {
            database,
            map_servers,
            proxy_reply: raw.proxy_reply,
            merge: raw.merge,
            xtr_id,
            site_id: raw.site_id,
            record_ttl,
            first_nonce: 0,
            mobility,
            echo_nonce: itr.as_ref().is_some_and(|i| i.echo_nonce.is_some()),
        });
        Ok(Xtr { etr, itr, map_resolvers, data_plane })
    }

    /// One `[[xtr.instance.dynamic-eid]]` of instance `iid` at `at`; `before` are the ranges
    /// read so far.
    fn dynamic_eid(
        &self,
        at: &str,
        d: &RawDynamicEid,
        iid: u32,
        before: &[DynamicEidRange],
    ) -> Result<DynamicEidRange> {
        let prefix = self.eid_prefix(&format!("{at}.prefix"), &d.prefix, Some(iid))?;
        if before.iter().any(|r| r.prefix == prefix) {
            return Err(self.err(&format!("{at}.prefix"), format!("{prefix} is listed twice")));
        }
        check_interface(&d.interface).map_err(|r| self.err(&format!("{at}.interface"), r))?;
        let mode = match d.mode {
            RawMobilityMode::ExtendedSubnet => MobilityMode::ExtendedSubnet,
            RawMobilityMode::AcrossSubnet => MobilityMode::AcrossSubnet,
        };
        let gateway = match &d.gateway {
            Some(g) => {
                let address = self.ip(&format!("{at}.gateway.address"), &g.address)?;
                if !prefix.net.contains(&address) {
                    return Err(self.err(
                        &format!("{at}.gateway.address"),
                        format!("{address} is not in {}: the hosts' gateway is in their subnet", prefix.net),
                    ));
                }
                let mac = loci_dataplane::parse_mac(&g.mac).ok_or_else(|| {
                    self.err(
                        &format!("{at}.gateway.mac"),
                        format!("{:?} is not a MAC address (00:00:5e:00:01:01)", g.mac),
                    )
                })?;
                if mac[0] & 1 != 0 {
                    return Err(self.err(&format!("{at}.gateway.mac"), format!("{} is a group address", g.mac)));
                }
                Some(Gateway { address, mac })
            }
            None if mode == MobilityMode::ExtendedSubnet => {
                return Err(self.err(
                    &format!("{at}.gateway"),
                    "extended subnet needs the shared gateway (address and MAC): only frames to it count",
                ));
            }
            None => None,
        };
        let mut map_notify_group = Vec::new();
        let group: Vec<&String> = match &d.map_notify_group {
            None => Vec::new(),
            Some(OneOrMany::One(s)) => vec![s],
            Some(OneOrMany::Many(v)) => v.iter().collect(),
        };
        for (k, s) in group.into_iter().enumerate() {
            let field = match &d.map_notify_group {
                Some(OneOrMany::Many(_)) => format!("{at}.map-notify-group[{k}]"),
                _ => format!("{at}.map-notify-group"),
            };
            if mode == MobilityMode::AcrossSubnet {
                return Err(self.err(&field, "only extended subnet announces hosts to the site's other xTRs"));
            }
            let ip = self.ip(&field, s)?;
            if ip.is_unspecified() {
                return Err(self.err(&field, format!("{ip}: give a multicast group or the site's other xTRs")));
            }
            if map_notify_group.contains(&ip) {
                return Err(self.err(&field, format!("{ip} is listed twice")));
            }
            map_notify_group.push(ip);
        }
        let max_hosts = d.max_hosts.unwrap_or(1000);
        if max_hosts == 0 || max_hosts > 1_000_000 {
            return Err(self.err(&format!("{at}.max-hosts"), format!("{max_hosts} is out of range 1-1000000")));
        }
        let mut locators: Vec<Locator> = Vec::new();
        for (k, r) in d.rlocs.iter().flatten().enumerate() {
            let loc = self.locator(&format!("{at}.rlocs[{k}]"), r)?;
            if locators.iter().any(|l| l.address == loc.address) {
                return Err(self.err(&format!("{at}.rlocs[{k}].address"), format!("{} is listed twice", r.address)));
            }
            locators.push(loc);
        }
        if d.rlocs.as_ref().is_some_and(Vec::is_empty) {
            return Err(self.err(&format!("{at}.rlocs"), "no RLOC: leave rlocs out for the node's RLOCs"));
        }
        Ok(DynamicEidRange {
            prefix,
            interface: d.interface.clone(),
            mode,
            map_notify_group,
            gateway,
            locators,
            max_hosts,
        })
    }

    /// `[xtr.mobility]`, around the dynamic-EID `ranges`.
    fn mobility(&self, raw: Option<&RawMobility>, ranges: Vec<DynamicEidRange>) -> Result<MobilityConfig> {
        let mut c = MobilityConfig { ranges, ..MobilityConfig::default() };
        let Some(raw) = raw else { return Ok(c) };
        let secs =
            |name: &str, v: Option<u64>, min: u64, into: &mut Duration| -> Result<()> {
                match v {
                    Some(v) if v < min || v > MAX_LIMIT_SECS => Err(self
                        .err(&format!("xtr.mobility.{name}"), format!("{v} is out of range {min}-{MAX_LIMIT_SECS}"))),
                    Some(v) => {
                        *into = Duration::from_secs(v);
                        Ok(())
                    }
                    None => Ok(()),
                }
            };
        secs("idle-timeout-secs", raw.idle_timeout_secs, 1, &mut c.idle_timeout)?;
        secs("probe-interval-secs", raw.probe_interval_secs, 1, &mut c.probe_interval)?;
        secs("away-secs", raw.away_secs, 1, &mut c.away_time)?;
        // RFC 9301 §6.1: SMRs to one ITR at most once per 3 s by default; never more than 1/s.
        secs("smr-interval-secs", raw.smr_interval_secs, 1, &mut c.smr_interval)?;
        if let Some(n) = raw.probe_count {
            if n > 100 {
                return Err(self.err("xtr.mobility.probe-count", format!("{n} is out of range 0-100")));
            }
            c.probe_count = n;
        }
        if let Some(n) = raw.max_away {
            if n == 0 || n > 10_000_000 {
                return Err(self.err("xtr.mobility.max-away", format!("{n} is out of range 1-10000000")));
            }
            c.max_away = n;
        }
        Ok(c)
    }

    /// `[xtr.probing]`: RLOC probing is on unless `enabled = false`.
    fn probing(&self, raw: Option<&RawProbing>) -> Result<Option<ProbingConfig>> {
        let mut c = ProbingConfig::default();
        let Some(raw) = raw else { return Ok(Some(c)) };
        if !raw.enabled {
            return Ok(None);
        }
        let misses = |field: &str, v: u32| {
            if (1..=100).contains(&v) {
                Ok(v)
            } else {
                Err(self.err(field, format!("{v} is out of range 1-100")))
            }
        };
        if let Some(ms) = raw.interval_ms {
            if ms < 1000 {
                return Err(self.err(
                    "xtr.probing.interval-ms",
                    format!(
                        "{ms} ms probes faster than RFC 9301 §5.3's one Map-Request per second;                          name the peers that need it in [xtr.probing.fast-failover]"
                    ),
                ));
            }
            if ms > MAX_LIMIT_SECS * 1000 {
                return Err(self.err("xtr.probing.interval-ms", format!("{ms} is out of range 1000-86400000")));
            }
            c.interval = Duration::from_millis(ms);
        }
        if let Some(v) = raw.misses_to_down {
            c.misses_to_down = misses("xtr.probing.misses-to-down", v)?;
        }
        c.status_bits = raw.locator_status_bits;
        if let Some(v) = raw.max_probes_per_second {
            if !(1..=MAX_PROBES_PER_SECOND).contains(&v) {
                return Err(self.err(
                    "xtr.probing.max-probes-per-second",
                    format!("{v} is out of range 1-{MAX_PROBES_PER_SECOND}"),
                ));
            }
            c.max_probes_per_second = v;
        }
        if let Some(f) = &raw.fast_failover {
            let at = "xtr.probing.fast-failover";
            let mut fast = FastFailover::new(Vec::new());
            if let Some(ms) = f.interval_ms {
                if !(10..=c.interval.as_millis() as u64).contains(&ms) {
                    return Err(self.err(
                        &format!("{at}.interval-ms"),
                        format!("{ms} is out of range 10-{} (the default interval)", c.interval.as_millis()),
                    ));
                }
                fast.interval = Duration::from_millis(ms);
            }
            if let Some(v) = f.misses_to_down {
                fast.misses_to_down = misses(&format!("{at}.misses-to-down"), v)?;
            }
            if f.peers.is_empty() {
                return Err(self.err(
                    &format!("{at}.peers"),
                    "no peer: fast failover probes only the locators it names (peers = [\"203.0.113.1\"])",
                ));
            }
            for (i, p) in f.peers.iter().enumerate() {
                let field = format!("{at}.peers[{i}]");
                let ip = self.ip(&field, p)?;
                if fast.peers.contains(&ip) {
                    return Err(self.err(&field, format!("{ip} is listed twice")));
                }
                fast.peers.push(ip);
            }
            c.fast = Some(fast);
        }
        Ok(Some(c))
    }

    /// `[xtr.echo-nonce]`: off unless `enabled = true`; needs both xTR roles (the peer's nonce
    /// comes back on our own traffic) and probing (which brings back what it marks down).
    fn echo_nonce(&self, raw: Option<&RawEchoNonce>, xtr: bool, probing: bool) -> Result<Option<EchoConfig>> {
        let Some(raw) = raw.filter(|r| r.enabled) else { return Ok(None) };
        if !xtr {
            return Err(self.err("xtr.echo-nonce", "echo-nonce needs the itr and etr roles on one node"));
        }
        if !probing {
            return Err(self.err(
                "xtr.echo-nonce",
                "echo-nonce needs [xtr.probing] on: probes bring back the locators it marks down",
            ));
        }
        let mut c = EchoConfig::default();
        let ms = |field: &str, v: u64, min: u64| {
            if (min..=MAX_LIMIT_SECS * 1000).contains(&v) {
                Ok(Duration::from_millis(v))
            } else {
                Err(self.err(field, format!("{v} is out of range {min}-{}", MAX_LIMIT_SECS * 1000)))
            }
        };
        if let Some(v) = raw.interval_ms {
            c.interval = ms("xtr.echo-nonce.interval-ms", v, 100)?;
        }
        if let Some(v) = raw.timeout_ms {
            c.timeout = ms("xtr.echo-nonce.timeout-ms", v, 20)?;
        }
        Ok(Some(c))
    }

    /// `xtr.rlocs`, or the local locators of the database.
    fn rlocs(&self, raw: &RawXtr, database: &[DatabaseMapping]) -> Result<Vec<IpAddr>> {
        let mut out = Vec::new();
        match &raw.rlocs {
            Some(list) => {
                for (i, s) in list.iter().enumerate() {
                    let field = format!("xtr.rlocs[{i}]");
                    let ip = self.ip(&field, s)?;
                    if out.contains(&ip) {
                        return Err(self.err(&field, format!("{ip} is listed twice")));
                    }
                    if ip.is_unspecified() || ip.is_multicast() {
                        return Err(self.err(&field, format!("{ip} cannot be an RLOC")));
                    }
                    out.push(ip);
                }
                if out.is_empty() {
                    return Err(self.err("xtr.rlocs", "no RLOC"));
                }
            }
            None => {
                for l in database.iter().flat_map(|d| &d.locators).filter(|l| l.local) {
                    if let Some(ip) = l.address.ip() {
                        if !out.contains(&ip) {
                            out.push(ip);
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// The ITR needs an RLOC to send Map-Requests from, and Map-Replies come back to it on the
    /// control port, so the daemon must listen there.
    /// The PETRs an ITR sends non-LISP traffic to, and the relay policy of the petr role.
    #[allow(clippy::too_many_arguments)]
    fn proxy(
        &self,
        raw: &RawXtr,
        is_itr: bool,
        is_petr: bool,
        instances: &[loci_dataplane::Instance],
        rlocs: &[IpAddr],
        database: &[DatabaseMapping],
        relay_for: Vec<EidPrefix>,
    ) -> Result<loci_core::petr::Proxy> {
        let mut petrs = Vec::new();
        for (i, s) in raw.petr.iter().enumerate() {
            let field = format!("xtr.petr[{i}]");
            if !is_itr {
                return Err(self.err(&field, "only the itr and pitr roles send through a PETR"));
            }
            let ip = self.ip(&field, s)?;
            if petrs.contains(&ip) {
                return Err(self.err(&field, format!("{ip} is listed twice")));
            }
            if !rlocs.iter().any(|r| r.is_ipv4() == ip.is_ipv4()) {
                return Err(self.err(&field, format!("no RLOC of {ip}'s address family to send to it from")));
            }
            petrs.push(ip);
        }
        if is_petr {
            if instances.is_empty() {
                return Err(
                    self.err("xtr.instance", "the petr role forwards through a TUN device: give an instance a tun")
                );
            }
            if rlocs.is_empty() {
                return Err(self.err("xtr.rlocs", "the petr role receives on its RLOCs: list xtr.rlocs"));
            }
            if relay_for.is_empty() {
                return Err(self.err(
                    "xtr.instance",
                    "a petr relays only for the sites it serves (RFC 6832 §6.1): give an instance relay-for = [EID prefixes]",
                ));
            }
        }
        Ok(loci_core::petr::Proxy {
            petrs: loci_core::petr::Petrs::new(petrs),
            relay: loci_core::petr::RelayPolicy {
                enabled: is_petr,
                local: database.iter().map(|d| d.prefix).collect(),
                sources: relay_for,
            },
        })
    }

    fn itr_rlocs(&self, rlocs: &[IpAddr], map_resolvers: &[IpAddr], node: &NodeSettings) -> Result<()> {
        if rlocs.is_empty() {
            return Err(
                self.err("xtr.rlocs", "the itr role needs an RLOC: list xtr.rlocs or give the database local locators")
            );
        }
        if !map_resolvers.iter().any(|m| rlocs.iter().any(|r| r.is_ipv4() == m.is_ipv4())) {
            return Err(self.err("xtr.map-resolvers", "no map-resolver of the same address family as an RLOC"));
        }
        for r in rlocs {
            let heard = node.listen.iter().any(|l| l == r || (l.is_unspecified() && l.is_ipv4() == r.is_ipv4()));
            if !heard {
                return Err(self.err(
                    "node.listen",
                    format!("Map-Replies come back to RLOC {r}: listen on it (or on the unspecified address)"),
                ));
            }
        }
        Ok(())
    }

    fn locator(&self, at: &str, raw: &RawRloc) -> Result<Locator> {
        let address = self.ip(&format!("{at}.address"), &raw.address)?;
        let byte = |name: &str, v: Option<i64>, default: u8| match v {
            None => Ok(default),
            Some(v) => {
                u8::try_from(v).map_err(|_| self.err(&format!("{at}.{name}"), format!("{v} is out of range 0-255")))
            }
        };
        Ok(Locator {
            priority: byte("priority", raw.priority, 1)?,
            weight: byte("weight", raw.weight, 100)?,
            m_priority: byte("m-priority", raw.m_priority, 255)?,
            m_weight: byte("m-weight", raw.m_weight, 0)?,
            local: raw.local.unwrap_or(true),
            probed: false,
            reachable: true,
            address: Address::from(address),
        })
    }

    fn ip(&self, field: &str, s: &str) -> Result<IpAddr> {
        s.parse().map_err(|_| self.err(field, format!("{s:?} is not an IP address")))
    }

    /// `10.1.0.0/16`, `[1000]10.1.0.0/16`, or a bare address for its host prefix. `iid` is the
    /// instance the context gives (an `iid` key), which a `[n]` in the text must agree with.
    fn eid_prefix(&self, field: &str, s: &str, iid: Option<u32>) -> Result<EidPrefix> {
        let (bracketed, rest) = match s.strip_prefix('[') {
            Some(tail) => {
                let (n, rest) =
                    tail.split_once(']').ok_or_else(|| self.err(field, format!("{s:?}: '[' without ']'")))?;
                let n: u32 = n
                    .trim()
                    .parse()
                    .map_err(|_| self.err(field, format!("{s:?}: instance ID must be a number in 0-4294967295")))?;
                (Some(n), rest.trim_start())
            }
            None => (None, s),
        };
        let iid = match (bracketed, iid) {
            (Some(b), Some(i)) if b != i => {
                return Err(self.err(field, format!("{s:?} is in instance {b} but iid is {i}")));
            }
            (b, i) => b.or(i).unwrap_or(0),
        };
        let net = match rest.parse::<IpNet>() {
            Ok(net) => net,
            Err(_) => match rest.parse::<IpAddr>() {
                Ok(ip) => IpNet::from(ip),
                Err(_) => {
                    return Err(
                        self.err(field, format!("{s:?} is not an IP prefix such as 10.1.0.0/16 or 2001:db8::/32"))
                    )
                }
            },
        };
        if net.trunc() != net {
            let tag = bracketed.map(|b| format!("[{b}]")).unwrap_or_default();
            return Err(self.err(field, format!("{s} has host bits set; did you mean {tag}{}?", net.trunc())));
        }
        Ok(EidPrefix::new(iid, net))
    }

    /// An xTR-ID: up to 32 hex digits, `0x` optional.
    fn xtr_id(&self, field: &str, s: &str) -> Result<u128> {
        let digits = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")).unwrap_or(s);
        if digits.is_empty() || digits.len() > 32 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(self.err(field, format!("{s:?} is not an xTR-ID (up to 32 hex digits, such as 0x0123abcd)")));
        }
        u128::from_str_radix(digits, 16).map_err(|e| self.err(field, format!("{s:?}: {e}")))
    }

    /// A path from the file, relative to the file's directory.
    fn path(&self, field: &str, p: &Path) -> Result<PathBuf> {
        if p.as_os_str().is_empty() {
            return Err(self.err(field, "path must not be empty"));
        }
        Ok(self.dir.join(p))
    }
}

/// A locator with the defaults of a `rlocs` entry that gives only the address.
fn default_locator(address: IpAddr) -> Locator {
    Locator::new(address)
}

/// Linux interface names: 1-15 bytes, no '/', whitespace or NUL.
fn check_interface(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() || name.len() > 15 || name.bytes().any(|b| b == b'/' || b.is_ascii_whitespace() || b == 0) {
        return Err(format!("{name:?} is not an interface name (1-15 bytes, no '/' or space)"));
    }
    Ok(())
}

/// What `[xtr]` configures.
#[derive(Default)]
struct Xtr {
    etr: Option<EtrConfig>,
    itr: Option<loci_core::itr::ItrConfig>,
    map_resolvers: Vec<IpAddr>,
    data_plane: Option<loci_dataplane::Config>,
}

struct Auth {
    policy: SendPolicy,
    keys: Vec<(u8, Vec<u8>)>,
}

/// FNV-1a, 128-bit: a stable (documented, version-independent) hash for the default xTR-ID.
fn fnv1a_128(data: &[u8]) -> u128 {
    const OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
    data.iter().fold(OFFSET, |h, &b| (h ^ u128::from(b)).wrapping_mul(PRIME))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Result<DaemonConfig> {
        parse(Path::new("t.toml"), text)
    }

    /// Refused at `line`, naming `field`, with `reason` in the message.
    #[track_caller]
    fn fails(text: &str, line: usize, field: &str, reason: &str) {
        let e = match check(text) {
            Ok(_) => panic!("accepted, expected {field} at line {line}: {reason}"),
            Err(e) => e,
        };
        assert_eq!((e.line, e.field.as_str()), (Some(line), field), "{e}");
        assert!(e.reason.contains(reason), "{e}");
        assert!(e.to_string().starts_with(&format!("t.toml:{line}: {field}: ")), "{e}");
    }

    fn eid(s: &str) -> EidPrefix {
        let (iid, net) = match s.strip_prefix('[').and_then(|t| t.split_once(']')) {
            Some((iid, net)) => (iid.parse().expect("iid"), net),
            None => (0, s),
        };
        EidPrefix::new(iid, net.parse().expect("prefix"))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    /// A minimal valid Map-Server; tests replace one line of it.
    const MS: &str = r#"[node]
name = "ms1"
[[map-server.site]]
name = "a"
auth = { algorithm = "hmac-sha256-128", key = "k" }
eid-prefixes = [{ prefix = "10.1.0.0/16" }]
"#;

    /// A minimal valid ETR.
    const ETR: &str = r#"[node]
name = "xtr-a"
[xtr]
roles = ["etr"]
map-servers = [{ address = "192.0.2.10", auth = { algorithm = "hmac-sha256-128", key = "k" } }]
[[xtr.instance]]
database = [{ prefix = "10.1.1.0/24", rlocs = [{ address = "203.0.113.1" }] }]
"#;

    #[test]
    fn dynamic_eids_with_pubsub_only_etr() {
        let text = r#"
[node]
name = "xtr-a"
[xtr]
roles = ["itr", "etr"]
map-servers = [{ address = "192.0.2.10", auth = { algorithm = "hmac-sha256-128", key = "k" } }]
map-resolvers = ["192.0.2.10"]
rlocs = ["203.0.113.1"]
site-id = 3
pubsub = { algorithm = "hmac-sha256-128", key = "p", key-id = 2 }
[[xtr.instance]]
iid = 0
tun = "loci0"
[[xtr.instance.dynamic-eid]]
prefix = "10.1.9.0/24"
interface = "site0"
mode = "extended-subnet"
map-notify-group = "239.1.1.1"
gateway = { address = "10.1.9.1", mac = "00:00:5e:00:01:01" }
[[xtr.instance.dynamic-eid]]
prefix = "2001:db8:9::/64"
interface = "site0"
mode = "across-subnet"
max-hosts = 10
"#;
        let c = check(text).expect("valid");
        let etr = c.core.etr.expect("an etr with only dynamic EIDs");
        assert!(etr.database.is_empty());
        let [r4, r6] = &etr.mobility.ranges[..] else { panic!("two ranges") };
        assert_eq!((r4.prefix, r4.mode, r4.max_hosts), (eid("10.1.9.0/24"), MobilityMode::ExtendedSubnet, 1000));
        assert_eq!(r4.map_notify_group, [ip("239.1.1.1")]);
        assert_eq!(r4.gateway, Some(Gateway { address: ip("10.1.9.1"), mac: [0, 0, 0x5e, 0, 1, 1] }));
        assert_eq!(r4.locators[0].address, Address::from(ip("203.0.113.1")));
        assert_eq!((r6.mode, r6.max_hosts, r6.gateway), (MobilityMode::AcrossSubnet, 10, None));
        let itr = c.core.itr.expect("itr");
        assert_eq!(itr.pubsub_key, Some((2, b"p".to_vec())));
        assert_eq!((itr.xtr_id, itr.site_id), (fnv1a_128(b"xtr-a"), 3));

        // The range keys' errors are tested in `dynamic_eids` below.
    }

    #[test]
    fn minimal_configs_are_valid() {
        let ms = check(MS).expect("MS");
        assert_eq!(ms.node.listen, vec![ip("0.0.0.0"), ip("::")]);
        assert_eq!(ms.node.control_port, 4342);
        assert_eq!(ms.node.api_socket, Path::new("/run/loci/ms1.sock"));
        assert_eq!(ms.node.state_dir, Path::new("/var/lib/loci/ms1"));
        let etr = check(ETR).expect("ETR").core.etr.expect("etr");
        let loc = &etr.database[0].locators[0];
        assert_eq!((loc.priority, loc.weight, loc.m_priority, loc.m_weight), (1, 100, 255, 0));
        assert!(loc.local && loc.reachable && !loc.probed);
        assert_eq!(etr.xtr_id, fnv1a_128(b"xtr-a"));
        assert_eq!(etr.record_ttl, 1440);
    }

    #[test]
    fn full_map_server_example() {
        let text = r#"
[node]
name = "ms1"
listen = ["127.0.0.1", "::1"]
control-port = 4343
api-socket = "ms1.sock"
state-dir = "/tmp/ms1"

[limits]
map-requests-per-source = 10
map-registers-per-source = 20
map-reply-repeat-secs = 0
registration-timeout-secs = 90
register-interval-secs = 30
max-rate-limited-sources = 7
etr-replies-per-source = 8
etr-replies-per-second = 9

[map-server]
max-registrations = 5
max-subscriptions = 6

[[map-server.site]]
name = "site-a"
auth = { algorithm = "hmac-sha1-96", keys = [{ id = 1, key = "one" }, { id = 2, key = "two" }], mac-length = "truncated", mac-coverage = "through-last-record" }
proxy-reply = true
eid-prefixes = [{ prefix = "10.1.0.0/16", accept-more-specifics = true }, { prefix = "[1000]10.1.0.0/16" }]
pubsub = { allow = true, site-ids = [7], xtr-ids = ["0x0102"], key = "ps", key-id = 3, algorithm = "hmac-sha256-128-hkdf" }

[[map-server.site]]
name = "site-b"
auth = { algorithm = "none" }
allow-unauthenticated = true
eid-prefixes = [{ prefix = "10.2.0.0/16", iid = 5 }, { prefix = "2001:db8::/32" }]
pubsub = { allow = false }

[map-resolver]
map-servers = [{ address = "192.0.2.10", eid-prefixes = ["10.0.0.0/8", "[1000]10.0.0.0/8"] }]
"#;
        let c = parse(Path::new("/etc/loci/ms1.toml"), text).expect("valid");
        assert_eq!(
            c.node,
            NodeSettings {
                name: "ms1".into(),
                listen: vec![ip("127.0.0.1"), ip("::1")],
                control_port: 4343,
                api_socket: "/etc/loci/ms1.sock".into(),
                state_dir: "/tmp/ms1".into(),
                metrics: None,
            }
        );
        let l = &c.core.limits;
        assert_eq!((l.map_requests_per_source, l.map_registers_per_source, l.max_rate_limited_sources), (10, 20, 7));
        assert_eq!((l.etr_replies_per_source, l.etr_replies_per_second), (8, 9));
        assert_eq!(
            (l.map_reply_repeat, l.registration_timeout, l.register_interval),
            (Duration::ZERO, Duration::from_secs(90), Duration::from_secs(30))
        );
        assert_eq!(c.core.name, "ms1");
        assert!(c.core.etr.is_none());
        assert!(c.map_resolvers.is_empty());

        let ms = c.core.map_server.expect("map server");
        assert_eq!((ms.max_registrations, ms.max_subscriptions), (5, 6));
        let [a, b] = &ms.sites[..] else { panic!("two sites: {:?}", ms.sites) };
        assert_eq!(a.name, "site-a");
        assert_eq!((a.keys.get(1), a.keys.get(2), a.keys.len()), (Some(&b"one"[..]), Some(&b"two"[..]), 2));
        assert_eq!(
            a.notify_policy,
            SendPolicy {
                algorithm: Algorithm::HmacSha1_96,
                coverage: Coverage::ThroughLastRecord,
                length: MacLength::Truncated
            }
        );
        assert!(!a.allow_unauthenticated && a.force_proxy_reply);
        assert_eq!(
            a.eid_prefixes,
            vec![
                SiteEidPrefix { prefix: eid("10.1.0.0/16"), accept_more_specifics: true },
                SiteEidPrefix { prefix: eid("[1000]10.1.0.0/16"), accept_more_specifics: false },
            ]
        );
        let ps = a.pubsub.as_ref().expect("pubsub");
        assert_eq!((&ps.allowed_site_ids[..], &ps.allowed_xtr_ids[..]), (&[7u64][..], &[0x0102u128][..]));
        assert_eq!((ps.key_id, &ps.key[..], ps.algorithm), (3, &b"ps"[..], Algorithm::HmacSha256_128Hkdf));

        assert_eq!(b.name, "site-b");
        assert!(b.keys.is_empty() && b.allow_unauthenticated && !b.force_proxy_reply && b.pubsub.is_none());
        assert_eq!(b.notify_policy.algorithm, Algorithm::None);
        let prefixes: Vec<_> = b.eid_prefixes.iter().map(|p| p.prefix).collect();
        assert_eq!(prefixes, vec![eid("[5]10.2.0.0/16"), eid("2001:db8::/32")]);

        let mr = c.core.map_resolver.expect("map resolver");
        assert_eq!(mr.map_servers.len(), 1);
        assert_eq!(mr.map_servers[0].address, ip("192.0.2.10"));
        assert_eq!(mr.map_servers[0].eid_prefixes, vec![eid("10.0.0.0/8"), eid("[1000]10.0.0.0/8")]);
    }

    #[test]
    fn full_etr_example() {
        let text = r#"
[node]
name = "xtr-a"
[xtr]
roles = ["etr"]
map-servers = [
  { address = "192.0.2.10", port = 4000, auth = { algorithm = "hmac-sha256-128", key = "k", key-id = 4 } },
  { address = "2001:db8::10", auth = { algorithm = "hmac-sha256-128", keys = [{ id = 9, key = "k9" }], mac-length = "truncated" } },
]
map-resolvers = ["192.0.2.10", "2001:db8::10"]
proxy-reply = true
merge = true
xtr-id = "0x0123456789abcdef0123456789ABCDEF"
site-id = 7
record-ttl = 60
[[xtr.instance]]
iid = 0
tun = "loci0"
database = [{ prefix = "10.1.1.0/24", rlocs = [{ address = "203.0.113.1", priority = 1, weight = 50 }, { address = "2001:db8:1::1", priority = 2, weight = 0, m-priority = 1, m-weight = 7, local = false }] }]
[[xtr.instance]]
iid = 1000
database = [{ prefix = "10.1.1.0/24", rlocs = [{ address = "203.0.113.1" }] }, { prefix = "[1000]10.9.9.9", rlocs = [{ address = "203.0.113.1" }] }]
"#;
        let c = check(text).expect("valid");
        assert_eq!(c.map_resolvers, vec![ip("192.0.2.10"), ip("2001:db8::10")]);
        let dp = c.data_plane.expect("a TUN device is named: the data plane runs");
        assert_eq!(
            dp.instances,
            vec![loci_dataplane::Instance { iid: 0, tun: "loci0".into(), routes: vec![], table: None }]
        );
        assert!(dp.etr && !dp.itr);
        assert_eq!(dp.rlocs, vec![ip("203.0.113.1")], "the local locators; not the site's other ETR");
        assert_eq!((dp.underlay_mtu, dp.tun_mtu(), dp.flow_cache_slots), (1500, 1464, 4096));
        assert!(c.core.itr.is_none());
        let etr = c.core.etr.expect("etr");
        assert!(etr.proxy_reply && etr.merge);
        assert_eq!(
            (etr.xtr_id, etr.site_id, etr.record_ttl, etr.first_nonce),
            (0x0123456789abcdef0123456789abcdef, 7, 60, 0)
        );

        let [m1, m2] = &etr.map_servers[..] else { panic!("two map servers") };
        assert_eq!((m1.address, m1.key_id, &m1.key[..]), ("192.0.2.10:4000".parse().expect("sa"), 4, &b"k"[..]));
        assert_eq!(m1.policy, SendPolicy::default());
        assert_eq!((m2.address, m2.key_id, &m2.key[..]), ("[2001:db8::10]:4342".parse().expect("sa"), 9, &b"k9"[..]));
        assert_eq!(m2.policy.length, MacLength::Truncated);

        let prefixes: Vec<_> = etr.database.iter().map(|d| d.prefix).collect();
        assert_eq!(prefixes, vec![eid("10.1.1.0/24"), eid("[1000]10.1.1.0/24"), eid("[1000]10.9.9.9/32")]);
        assert_eq!(
            etr.database[0].locators,
            vec![
                Locator {
                    priority: 1,
                    weight: 50,
                    m_priority: 255,
                    m_weight: 0,
                    local: true,
                    probed: false,
                    reachable: true,
                    address: Address::from(ip("203.0.113.1")),
                },
                Locator {
                    priority: 2,
                    weight: 0,
                    m_priority: 1,
                    m_weight: 7,
                    local: false,
                    probed: false,
                    reachable: true,
                    address: Address::from(ip("2001:db8:1::1")),
                },
            ]
        );
    }

    /// The shipped examples stay valid.
    #[test]
    fn examples_are_valid() {
        let ms = check(include_str!("../../../examples/ms.toml")).expect("ms.toml");
        let server = ms.core.map_server.expect("map server");
        assert_eq!(server.sites.len(), 2);
        assert!(ms.core.map_resolver.expect("map resolver").map_servers.is_empty());
        let etr = check(include_str!("../../../examples/etr.toml")).expect("etr.toml");
        let e = etr.core.etr.expect("etr");
        assert_eq!((e.map_servers[0].key_id, e.database.len()), (2, 2));
        // The ETR's key is one the Map-Server's site-a accepts.
        assert_eq!(server.sites[0].keys.get(2), Some(&e.map_servers[0].key[..]));
        let mobile = check(include_str!("../../../examples/xtr-mobility.toml")).expect("xtr-mobility.toml");
        let m = mobile.core.etr.expect("etr").mobility;
        assert_eq!((m.ranges.len(), m.ranges[0].map_notify_group.clone()), (1, vec![ip("239.1.1.1")]));
    }

    #[test]
    fn missing_node_name() {
        fails("[node]\nlisten = [\"::1\"]\n[map-resolver]\n", 1, "node.name", "missing field `name`");
        fails(&MS.replace("name = \"ms1\"", "name = \"\""), 2, "node.name", "must not be empty");
        fails(&MS.replace("name = \"ms1\"", "name = \"../x\""), 2, "node.name", "names files");
    }

    #[test]
    fn missing_node_section() {
        let e = check("[map-resolver]\n").expect_err("no node");
        assert_eq!(e.to_string(), "t.toml: node: missing [node] section");
    }

    #[test]
    fn unknown_keys() {
        fails(
            &MS.replace("name = \"a\"", "name = \"a\"\nbogus = 1"),
            5,
            "map-server.site[0].bogus",
            "unknown field `bogus`",
        );
        fails(
            &MS.replace("key = \"k\"", "key = \"k\", colour = \"red\""),
            5,
            "map-server.site[0].auth.colour",
            "unknown field",
        );
        fails(&format!("{MS}[xtra]\n"), 7, "xtra", "unknown field `xtra`");
    }

    #[test]
    fn syntax_and_type_errors() {
        let e = check("[node]\nname = \"ms1\"\nlisten = [\n").expect_err("syntax");
        assert_eq!(e.line, Some(4), "{e}");
        fails(
            &MS.replace("name = \"ms1\"", "name = \"ms1\"\ncontrol-port = \"x\""),
            3,
            "node.control-port",
            "invalid type",
        );
        fails(&MS.replace("name = \"ms1\"", "name = \"ms1\"\ncontrol-port = 70000"), 3, "node.control-port", "u16");
    }

    #[test]
    fn bad_ip() {
        fails(
            &MS.replace("name = \"ms1\"", "name = \"ms1\"\nlisten = [\"::1\", \"10.0.0.300\"]"),
            3,
            "node.listen[1]",
            "\"10.0.0.300\" is not an IP address",
        );
        fails(
            &MS.replace("name = \"ms1\"", "name = \"ms1\"\nlisten = [\"::1\", \"::1\"]"),
            3,
            "node.listen[1]",
            "twice",
        );
    }

    #[test]
    fn bad_prefix() {
        fails(
            &MS.replace("10.1.0.0/16", "10.1.0.0/33"),
            6,
            "map-server.site[0].eid-prefixes[0].prefix",
            "not an IP prefix",
        );
        fails(
            &MS.replace("10.1.0.0/16", "[x]10.1.0.0/16"),
            6,
            "map-server.site[0].eid-prefixes[0].prefix",
            "instance ID",
        );
        fails(
            &MS.replace("\"10.1.0.0/16\"", "\"[5]10.1.0.0/16\", iid = 6"),
            6,
            "map-server.site[0].eid-prefixes[0].prefix",
            "is in instance 5 but iid is 6",
        );
    }

    #[test]
    fn prefix_with_host_bits() {
        fails(
            &MS.replace("10.1.0.0/16", "10.1.1.1/16"),
            6,
            "map-server.site[0].eid-prefixes[0].prefix",
            "10.1.1.1/16 has host bits set; did you mean 10.1.0.0/16?",
        );
        fails(
            &ETR.replace("10.1.1.0/24", "2001:db8::1/64"),
            7,
            "xtr.instance[0].database[0].prefix",
            "did you mean 2001:db8::/64?",
        );
    }

    #[test]
    fn unknown_algorithm() {
        fails(
            &MS.replace("hmac-sha256-128", "hmac-md5"),
            5,
            "map-server.site[0].auth.algorithm",
            "unknown variant `hmac-md5`",
        );
    }

    #[test]
    fn algorithm_none_needs_allow_unauthenticated() {
        let none = MS.replace("algorithm = \"hmac-sha256-128\", key = \"k\"", "algorithm = \"none\"");
        fails(&none, 5, "map-server.site[0].auth.algorithm", "allow-unauthenticated = true");
        let allowed = none.replace("name = \"a\"", "name = \"a\"\nallow-unauthenticated = true");
        let site = &check(&allowed).expect("allowed").core.map_server.expect("ms").sites[0];
        assert!(site.allow_unauthenticated && site.keys.is_empty());
        let keyed = MS
            .replace("\"hmac-sha256-128\"", "\"none\"")
            .replace("name = \"a\"", "name = \"a\"\nallow-unauthenticated = true");
        fails(&keyed, 6, "map-server.site[0].auth.algorithm", "takes no key");
    }

    #[test]
    fn empty_or_missing_key() {
        fails(&MS.replace("key = \"k\"", "key = \"\""), 5, "map-server.site[0].auth.key", "key must not be empty");
        fails(&MS.replace(", key = \"k\"", ""), 5, "map-server.site[0].auth", "no key");
        fails(
            &MS.replace("key = \"k\"", "keys = [{ id = 1, key = \"\" }]"),
            5,
            "map-server.site[0].auth.keys[0].key",
            "key must not be empty",
        );
        fails(
            &MS.replace("key = \"k\"", "key = \"k\", keys = [{ id = 1, key = \"j\" }]"),
            5,
            "map-server.site[0].auth.keys",
            "not both",
        );
    }

    #[test]
    fn key_files() {
        let dir = std::env::temp_dir().join(format!("loci-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(dir.join("k2"), "secret two\r\n").expect("key file");
        std::fs::write(dir.join("empty"), "\n").expect("key file");
        let file = dir.join("ms1.toml");
        let text = MS.replace("key = \"k\"", "keys = [{ id = 1, key = \"one\" }, { id = 2, key-file = \"k2\" }]");
        let c = parse(&file, &text).expect("valid");
        let keys = &c.core.map_server.expect("ms").sites[0].keys;
        assert_eq!(keys.get(2), Some(&b"secret two"[..]));

        let e = parse(&file, &text.replace("\"k2\"", "\"missing\"")).expect_err("unreadable");
        assert_eq!((e.line, e.field.as_str()), (Some(5), "map-server.site[0].auth.keys[1].key-file"));
        assert!(e.reason.contains(&dir.join("missing").display().to_string()), "{e}");
        let e = parse(&file, &text.replace("\"k2\"", "\"empty\"")).expect_err("empty");
        assert!(e.reason.contains("empty key"), "{e}");
        std::fs::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn duplicate_key_ids() {
        fails(
            &MS.replace("key = \"k\"", "keys = [{ id = 1, key = \"a\" },\n  { id = 1, key = \"b\" }]"),
            6,
            "map-server.site[0].auth.keys[1].id",
            "key id 1 is given twice",
        );
    }

    #[test]
    fn duplicate_site_names() {
        let text = format!("{MS}[[map-server.site]]\nname = \"a\"\nauth = {{ algorithm = \"hmac-sha256-128\", key = \"k\" }}\neid-prefixes = [{{ prefix = \"10.2.0.0/16\" }}]\n");
        fails(&text, 8, "map-server.site[1].name", "already defined as map-server.site[0]");
    }

    #[test]
    fn overlapping_site_prefixes() {
        let second = |prefix: &str| {
            format!("{MS}[[map-server.site]]\nname = \"b\"\nauth = {{ algorithm = \"hmac-sha256-128\", key = \"k\" }}\neid-prefixes = [{{ prefix = \"{prefix}\" }}]\n")
        };
        fails(
            &second("10.1.2.0/24"),
            10,
            "map-server.site[1].eid-prefixes[0].prefix",
            "overlaps 10.1.0.0/16 of site \"a\" (line 6)",
        );
        // The longer prefix is the one reported, even when it comes first.
        fails(
            &second("10.0.0.0/8"),
            6,
            "map-server.site[0].eid-prefixes[0].prefix",
            "overlaps 10.0.0.0/8 of site \"b\" (line 10)",
        );
        fails(&second("10.1.0.0/16"), 10, "map-server.site[1].eid-prefixes[0].prefix", "overlaps");
        // Another instance is another address space.
        check(&second("[1]10.1.0.0/16")).expect("other IID");
        check(&second("10.2.0.0/16")).expect("disjoint");
    }

    #[test]
    fn locator_ranges() {
        let rloc =
            |kv: &str| ETR.replace("{ address = \"203.0.113.1\" }", &format!("{{ address = \"203.0.113.1\", {kv} }}"));
        let at = "xtr.instance[0].database[0].rlocs[0]";
        fails(&rloc("priority = 256"), 7, &format!("{at}.priority"), "256 is out of range 0-255");
        fails(&rloc("weight = -1"), 7, &format!("{at}.weight"), "-1 is out of range 0-255");
        fails(&rloc("m-weight = 1000"), 7, &format!("{at}.m-weight"), "out of range");
        check(&rloc("priority = 255, weight = 0")).expect("bounds are valid");
    }

    #[test]
    fn rloc_not_an_ip() {
        fails(
            &ETR.replace("\"203.0.113.1\"", "\"xtr-a.example\""),
            7,
            "xtr.instance[0].database[0].rlocs[0].address",
            "\"xtr-a.example\" is not an IP address",
        );
        fails(&ETR.replace("[{ address = \"203.0.113.1\" }]", "[]"), 7, "xtr.instance[0].database[0].rlocs", "no RLOC");
    }

    #[test]
    fn nothing_to_do() {
        let e = check("[node]\nname = \"n\"\n").expect_err("no role");
        assert_eq!(e.to_string(), "t.toml: nothing to do: configure [map-server], [map-resolver] or [xtr]");
    }

    #[test]
    fn etr_needs_map_servers_and_database() {
        let no_ms = ETR.replace(
            "map-servers = [{ address = \"192.0.2.10\", auth = { algorithm = \"hmac-sha256-128\", key = \"k\" } }]\n",
            "",
        );
        fails(&no_ms, 3, "xtr.map-servers", "at least one map-server");
        let no_db = ETR.replace(
            "[[xtr.instance]]\ndatabase = [{ prefix = \"10.1.1.0/24\", rlocs = [{ address = \"203.0.113.1\" }] }]\n",
            "",
        );
        fails(&no_db, 3, "xtr.instance", "needs a database");
        fails(&ETR.replace("database = [{", "tun = \"loci0\"\n#database = [{"), 6, "xtr.instance", "needs a database");
    }

    const MOBILE: &str = r#"[node]
name = "xtr-a"
[xtr]
roles = ["itr", "etr"]
map-servers = [{ address = "192.0.2.10", auth = { algorithm = "hmac-sha256-128", key = "k" } }]
map-resolvers = ["192.0.2.10"]
rlocs = ["203.0.113.1"]
[xtr.mobility]
away-secs = 60
[[xtr.instance]]
tun = "lisp0"
[[xtr.instance.dynamic-eid]]
prefix = "10.1.9.0/24"
interface = "site0"
mode = "extended-subnet"
map-notify-group = ["203.0.113.5"]
gateway = { address = "10.1.9.1", mac = "00:00:5e:00:01:01" }
"#;

    #[test]
    fn dynamic_eids() {
        let c = check(MOBILE).expect("valid");
        let m = &c.core.etr.expect("etr").mobility;
        assert_eq!(m.away_time, Duration::from_secs(60));
        let [r] = &m.ranges[..] else { panic!("one range") };
        assert_eq!(
            (r.prefix, r.interface.as_str(), r.mode),
            (eid("10.1.9.0/24"), "site0", MobilityMode::ExtendedSubnet)
        );
        assert_eq!(r.map_notify_group, vec![ip("203.0.113.5")]);
        assert_eq!(r.gateway, Some(Gateway { address: ip("10.1.9.1"), mac: [0, 0, 0x5e, 0, 1, 1] }));
        assert_eq!(r.locators, vec![default_locator(ip("203.0.113.1"))], "the node's RLOCs");
        assert_eq!(r.max_hosts, 1000);

        fails(
            &MOBILE.replace("extended-subnet", "sideways"),
            15,
            "xtr.instance[0].dynamic-eid[0].mode",
            "unknown variant",
        );
        fails(
            &MOBILE.replace("00:00:5e:00:01:01", "00:00:5e"),
            17,
            "xtr.instance[0].dynamic-eid[0].gateway.mac",
            "not a MAC",
        );
        fails(
            &MOBILE.replace("address = \"10.1.9.1\"", "address = \"10.2.9.1\""),
            17,
            "xtr.instance[0].dynamic-eid[0].gateway.address",
            "not in 10.1.9.0/24",
        );
        fails(
            &MOBILE.replace("gateway = {", "#gateway = {"),
            12,
            "xtr.instance[0].dynamic-eid[0].gateway",
            "extended subnet needs",
        );
        let group = check(&MOBILE.replace("[\"203.0.113.5\"]", "\"239.1.1.1\"")).expect("a multicast group");
        assert_eq!(group.core.etr.expect("etr").mobility.ranges[0].map_notify_group, vec![ip("239.1.1.1")]);
        fails(
            &MOBILE.replace("[\"203.0.113.5\"]", "\"0.0.0.0\""),
            16,
            "xtr.instance[0].dynamic-eid[0].map-notify-group",
            "give a multicast group",
        );
        fails(
            &MOBILE.replace("mode = \"extended-subnet\"", "mode = \"across-subnet\""),
            16,
            "xtr.instance[0].dynamic-eid[0].map-notify-group[0]",
            "only extended subnet",
        );
        fails(
            &MOBILE.replace("interface = \"site0\"", "interface = \"a/b\""),
            14,
            "xtr.instance[0].dynamic-eid[0].interface",
            "not an interface name",
        );
        fails(&MOBILE.replace("away-secs = 60", "away-secs = 0"), 9, "xtr.mobility.away-secs", "out of range");
        fails(&MOBILE.replace("roles = [\"itr\", \"etr\"]", "roles = [\"itr\"]"), 4, "xtr.roles", "etr role is needed");
        fails(&MOBILE.replace("rlocs = [\"203.0.113.1\"]\n", ""), 3, "xtr.rlocs", "list xtr.rlocs");
        let twice = format!("{MOBILE}[[xtr.instance.dynamic-eid]]\nprefix = \"10.1.9.0/24\"\ninterface = \"x\"\nmode = \"across-subnet\"\n");
        fails(&twice, 19, "xtr.instance[0].dynamic-eid[1].prefix", "listed twice");
    }

    #[test]
    fn proxy_roles_and_petrs() {
        // A PITR: an ITR without a site, whose Map-Requests carry the P bit.
        let pitr = "[node]\nname = \"pitr\"\n[xtr]\nroles = [\"pitr\"]\nmap-resolvers = [\"192.0.2.10\"]\n\
                    rlocs = [\"203.0.113.1\"]\n[[xtr.instance]]\ntun = \"lisp0\"\nroutes = [\"10.1.0.0/16\"]\n";
        let c = check(pitr).expect("pitr");
        assert!(c.core.itr.expect("itr").pitr && c.core.etr.is_none());
        let dp = c.data_plane.expect("data plane");
        assert!(dp.itr && !dp.etr && !dp.proxy.relay.enabled);
        fails(&pitr.replace("[\"pitr\"]", "[\"pitr\", \"itr\"]"), 4, "xtr.roles[0]", "one of \"itr\" and \"pitr\"");
        fails(&pitr.replace("map-resolvers = [\"192.0.2.10\"]", ""), 3, "xtr.map-resolvers", "needs at least one");

        // An ITR with PETRs: native-forward becomes encapsulation to them.
        let with_petr = XTR.replace("map-resolvers", "petr = [\"203.0.113.5\"]\nmap-resolvers");
        let dp = check(&with_petr).expect("petr").data_plane.expect("data plane");
        assert_eq!(dp.proxy.petrs, loci_core::petr::Petrs::new(vec![ip("203.0.113.5")]));
        fails(&XTR.replace("map-resolvers", "petr = [\"2001:db8::5\"]\nmap-resolvers"), 6, "xtr.petr[0]", "no RLOC");
        fails(&XTR.replace("map-resolvers", "petr = [\"x\"]\nmap-resolvers"), 6, "xtr.petr[0]", "x");
        fails(&ETR.replace("map-servers", "petr = [\"203.0.113.5\"]\nmap-servers"), 5, "xtr.petr[0]", "only the itr");

        // A PETR relays for the sites it names, never for anyone.
        let petr = "[node]\nname = \"petr\"\n[xtr]\nroles = [\"petr\"]\nrlocs = [\"203.0.113.5\"]\n\
                    [[xtr.instance]]\ntun = \"lisp0\"\nrelay-for = [\"10.1.0.0/16\"]\n";
        let dp = check(petr).expect("petr").data_plane.expect("data plane");
        assert!(dp.etr && !dp.itr && dp.proxy.relay.enabled);
        assert_eq!(dp.proxy.relay.sources, vec![EidPrefix::new(0, "10.1.0.0/16".parse().expect("net"))]);
        fails(&petr.replace("relay-for = [\"10.1.0.0/16\"]", ""), 6, "xtr.instance", "RFC 6832");
        fails(&petr.replace("rlocs = [\"203.0.113.5\"]\n", ""), 3, "xtr.rlocs", "list xtr.rlocs");
        fails(&petr.replace("tun = \"lisp0\"\n", ""), 7, "xtr.instance[0].relay-for[0]", "give this instance a tun");
        fails(
            &petr.replace("\"10.1.0.0/16\"]", "\"10.1.0.0/16\", \"10.1.0.0/16\"]"),
            8,
            "xtr.instance[0].relay-for[1]",
            "twice",
        );
        fails(
            &XTR.replace("routes =", "relay-for = [\"10.1.0.0/16\"]\nroutes ="),
            10,
            "xtr.instance[0].relay-for[0]",
            "only the petr",
        );
    }

    #[test]
    fn unsupported_roles() {
        fails(&ETR.replace("[\"etr\"]", "[\"xtr\"]"), 4, "xtr.roles[0]", "unknown variant `xtr`");
        fails(&ETR.replace("[\"etr\"]", "[]"), 4, "xtr.roles", "no role");
    }

    /// A minimal xTR with both roles and the data plane.
    const XTR: &str = r#"[node]
name = "xtr-a"
[xtr]
roles = ["itr", "etr"]
map-servers = [{ address = "192.0.2.10", auth = { algorithm = "hmac-sha256-128", key = "k" } }]
map-resolvers = ["192.0.2.10"]
[[xtr.instance]]
iid = 7
tun = "lisp7"
routes = ["10.2.0.0/16", "2001:db8:2::/48"]
database = [{ prefix = "10.1.1.0/24", rlocs = [{ address = "203.0.113.1" }] }]
"#;

    #[test]
    fn itr_and_data_plane() {
        let c = check(XTR).expect("valid");
        let itr = c.core.itr.expect("itr");
        assert_eq!(itr.map_resolvers, vec!["192.0.2.10:4342".parse::<SocketAddr>().expect("sa")]);
        assert_eq!(itr.rlocs, vec![ip("203.0.113.1")]);
        assert_eq!(itr.cache.max_entries, 100_000);
        let dp = c.data_plane.expect("data plane");
        assert!(dp.itr && dp.etr);
        let routes: Vec<IpNet> = vec!["10.2.0.0/16".parse().expect("net"), "2001:db8:2::/48".parse().expect("net")];
        assert_eq!(dp.instances, vec![loci_dataplane::Instance { iid: 7, tun: "lisp7".into(), routes, table: None }]);
        // ITR only: no map-servers or database needed, explicit RLOCs and knobs.
        let itr_only = XTR
            .replace("[\"itr\", \"etr\"]", "[\"itr\"]")
            .replace("database = [{ prefix = \"10.1.1.0/24\", rlocs = [{ address = \"203.0.113.1\" }] }]", "")
            .replace("[[xtr.instance]]", "rlocs = [\"192.0.2.1\", \"2001:db8::1\"]\nmap-cache-size = 50\n[xtr.data-plane]\nunderlay-mtu = 9000\nflow-cache = 0\nmtu-method = \"stateful\"\n[[xtr.instance]]");
        let c = check(&itr_only).expect("itr only");
        assert!(c.core.etr.is_none());
        assert_eq!(c.core.itr.expect("itr").cache.max_entries, 50);
        let dp = c.data_plane.expect("data plane");
        assert_eq!((dp.rlocs.len(), dp.tun_mtu(), dp.flow_cache_slots), (2, 9000 - 56, 0));
        assert_eq!(dp.mtu_method, loci_dataplane::MtuMethod::Stateful);
        assert_eq!(check(XTR).expect("valid").data_plane.expect("dp").mtu_method, loci_dataplane::MtuMethod::Stateless);
    }

    #[test]
    fn probing_and_metrics() {
        let itr = |text: &str| check(text).expect("valid").core.itr.expect("itr");
        // On by default for the ITR, at RFC rates.
        assert_eq!(itr(XTR).probing, Some(ProbingConfig::default()));
        let text = format!(
            "{XTR}[xtr.probing]\ninterval-ms = 2000\nmisses-to-down = 4\nlocator-status-bits = true\n\
             max-probes-per-second = 300\n[xtr.probing.fast-failover]\npeers = [\"203.0.113.2\", \"2001:db8::2\"]\nmisses-to-down = 5\n"
        );
        let p = itr(&text).probing.expect("probing");
        assert_eq!((p.interval, p.misses_to_down, p.status_bits), (Duration::from_secs(2), 4, true));
        assert_eq!(p.max_probes_per_second, 300);
        let fast = p.fast.expect("fast");
        assert_eq!((fast.interval, fast.misses_to_down), (Duration::from_millis(200), 5));
        assert_eq!(fast.peers, [ip("203.0.113.2"), ip("2001:db8::2")]);
        assert_eq!(itr(&format!("{XTR}[xtr.probing]\nenabled = false\n")).probing, None);
        let probing = |body: &str| format!("{XTR}[xtr.probing]\n{body}\n");
        fails(&probing("interval-ms = 200"), 13, "xtr.probing.interval-ms", "fast-failover");
        fails(&probing("misses-to-down = 0"), 13, "xtr.probing.misses-to-down", "out of range 1-100");
        for v in ["0", "1000001"] {
            let field = "xtr.probing.max-probes-per-second";
            fails(&probing(&format!("max-probes-per-second = {v}")), 13, field, "out of range 1-1000000");
        }
        fails(&probing("intervall-ms = 2000"), 13, "xtr.probing.intervall-ms", "unknown field");
        let fast = |body: &str| probing(&format!("[xtr.probing.fast-failover]\n{body}"));
        fails(&fast("interval-ms = 200"), 13, "xtr.probing.fast-failover.peers", "no peer");
        fails(
            &fast("peers = [\"203.0.113.2\"]\ninterval-ms = 5"),
            15,
            "xtr.probing.fast-failover.interval-ms",
            "10-1000",
        );
        fails(&fast("peers = [\"203.0.113.2\", \"203.0.113.2\"]"), 14, "xtr.probing.fast-failover.peers[1]", "twice");
        fails(&fast("peers = [\"bogus\"]"), 14, "xtr.probing.fast-failover.peers[0]", "bogus");
        let etr_only = format!("{ETR}[xtr.probing]\n");
        fails(&etr_only, 8, "xtr.probing", "only the itr role");
        // Metrics: off by default, an address:port when set.
        assert_eq!(check(MS).expect("MS").node.metrics, None);
        let with = |m: &str| MS.replace("name = \"ms1\"", &format!("name = \"ms1\"\nmetrics = \"{m}\""));
        assert_eq!(check(&with("127.0.0.1:9100")).expect("valid").node.metrics, "127.0.0.1:9100".parse().ok());
        fails(&with("127.0.0.1"), 3, "node.metrics", "not an address:port");
        fails(&with("[::1]:0"), 3, "node.metrics", "port must not be 0");
    }

    #[test]
    fn echo_nonce() {
        let parsed = |text: &str| check(text).expect("valid").core;
        // Off by default: no E bit in our Map-Replies, no requests.
        let c = parsed(XTR);
        assert!(c.itr.expect("itr").echo_nonce.is_none() && !c.etr.expect("etr").echo_nonce);
        let echo = |body: &str| format!("{XTR}[xtr.echo-nonce]\n{body}\n");
        let c = parsed(&echo("enabled = true\ninterval-ms = 2000\ntimeout-ms = 300"));
        let e = c.itr.expect("itr").echo_nonce.expect("echo-nonce");
        assert_eq!((e.interval, e.timeout), (Duration::from_secs(2), Duration::from_millis(300)));
        assert!(c.etr.expect("etr").echo_nonce, "the E bit in our Map-Replies");
        assert!(parsed(&echo("enabled = false")).itr.expect("itr").echo_nonce.is_none());
        fails(&echo("enabled = true\ninterval-ms = 10"), 14, "xtr.echo-nonce.interval-ms", "out of range 100-");
        fails(&echo("enabled = true\ntimeout-ms = 0"), 14, "xtr.echo-nonce.timeout-ms", "out of range 20-");
        fails(&echo("enabled = true\ntimeout = 3"), 14, "xtr.echo-nonce.timeout", "unknown field");
        let no_probing = format!("{XTR}[xtr.probing]\nenabled = false\n[xtr.echo-nonce]\nenabled = true\n");
        fails(&no_probing, 14, "xtr.echo-nonce", "needs [xtr.probing] on");
        let itr_only = XTR
            .replace("[\"itr\", \"etr\"]", "[\"itr\"]")
            .replace("database = [{ prefix = \"10.1.1.0/24\", rlocs = [{ address = \"203.0.113.1\" }] }]", "")
            .replace("[[xtr.instance]]", "rlocs = [\"192.0.2.1\"]\n[[xtr.instance]]");
        fails(&format!("{itr_only}[xtr.echo-nonce]\nenabled = true\n"), 13, "xtr.echo-nonce", "itr and etr roles");
    }

    #[test]
    fn itr_errors() {
        fails(
            &XTR.replace("map-resolvers = [\"192.0.2.10\"]\n", ""),
            3,
            "xtr.map-resolvers",
            "at least one map-resolver",
        );
        fails(&XTR.replace("tun = \"lisp7\"\n", ""), 9, "xtr.instance[0].routes", "give this instance a tun");
        fails(
            &XTR.replace("tun = \"lisp7\"\nroutes = [\"10.2.0.0/16\", \"2001:db8:2::/48\"]\n", ""),
            7,
            "xtr.instance",
            "reads packets from a TUN",
        );
        fails(&XTR.replace("10.2.0.0/16", "10.2.0.1/16"), 10, "xtr.instance[0].routes[0]", "host bits");
        fails(&XTR.replace("\"2001:db8:2::/48\"", "\"10.2.0.0/16\""), 10, "xtr.instance[0].routes[1]", "listed twice");
        fails(
            &XTR.replace("[node]\n", "[node]\nlisten = [\"127.0.0.1\"]\n"),
            2,
            "node.listen",
            "Map-Replies come back to RLOC 203.0.113.1",
        );
        fails(&XTR.replace("roles", "rlocs = [\"2001:db8::1\"]\nroles"), 7, "xtr.map-resolvers", "same address family");
        fails(&XTR.replace("roles", "rlocs = []\nroles"), 4, "xtr.rlocs", "no RLOC");
        let with_mtu = |m: u32| {
            XTR.replace("[[xtr.instance]]", &format!("[xtr.data-plane]\nunderlay-mtu = {m}\n[[xtr.instance]]"))
        };
        fails(&with_mtu(1300), 8, "xtr.data-plane.underlay-mtu", "IPv6 EIDs (xtr.instance[0]) need 1280");
        fails(&with_mtu(70000), 8, "xtr.data-plane.underlay-mtu", "out of range");
        assert!(check(&with_mtu(1300).replace(", \"2001:db8:2::/48\"", "")).is_ok(), "IPv4 EIDs only: 1264 will do");
        let etr_only = XTR.replace("[\"itr\", \"etr\"]", "[\"etr\"]").replace("roles", "map-cache-size = 9\nroles");
        fails(&etr_only, 4, "xtr.map-cache-size", "only the itr role");
        let no_local =
            XTR.replace("[\"itr\", \"etr\"]", "[\"etr\"]").replace("203.0.113.1\" }", "203.0.113.1\", local = false }");
        fails(&no_local, 7, "xtr.instance", "no database locator is local");
        fails(&XTR.replace("iid = 7", "iid = 7\ntable = 0"), 9, "xtr.instance[0].table", "table 0");
        let tabled = check(&XTR.replace("iid = 7", "iid = 7\ntable = 107")).expect("valid");
        assert_eq!(tabled.data_plane.expect("dp").instances[0].table, Some(107));
        let two = format!("{XTR}[[xtr.instance]]\niid = 8\ntun = \"lisp7\"\n");
        fails(&two, 14, "xtr.instance[1].tun", "serves another instance");
    }

    #[test]
    fn etr_key_and_ids() {
        let two = ETR.replace("key = \"k\"", "keys = [{ id = 1, key = \"a\" }, { id = 2, key = \"b\" }]");
        fails(&two, 5, "xtr.map-servers[0].auth.keys", "one key");
        fails(&ETR.replace("[xtr]", "[xtr]\nxtr-id = \"0xzz\""), 4, "xtr.xtr-id", "not an xTR-ID");
        fails(&ETR.replace("[xtr]", "[xtr]\nrecord-ttl = 0"), 4, "xtr.record-ttl", "TTL of 0");
        fails(
            &ETR.replace("tun", "x").replace("[[xtr.instance]]", "[[xtr.instance]]\ntun = \"a/b\""),
            7,
            "xtr.instance[0].tun",
            "interface name",
        );
        let dup = format!("{ETR}[[xtr.instance]]\niid = 0\n");
        fails(&dup, 9, "xtr.instance[1].iid", "instance 0 is defined twice");
        // The default xTR-ID is a function of the name only.
        let a = check(ETR).expect("a").core.etr.expect("etr").xtr_id;
        let b = check(&ETR.replace("xtr-a", "xtr-b")).expect("b").core.etr.expect("etr").xtr_id;
        assert_ne!(a, b);
        assert_eq!(a, check(ETR).expect("a").core.etr.expect("etr").xtr_id);
    }

    #[test]
    fn limits_are_checked() {
        fails(
            &format!("{MS}[limits]\nregister-interval-secs = 180\n"),
            8,
            "limits.register-interval-secs",
            "shorter than",
        );
        fails(
            &format!("{MS}[limits]\nmap-requests-per-source = 0\n"),
            8,
            "limits.map-requests-per-source",
            "0 is out of range 1-",
        );
        for field in ["etr-replies-per-source", "etr-replies-per-second"] {
            fails(&format!("{MS}[limits]\n{field} = 0\n"), 8, &format!("limits.{field}"), "0 is out of range 1-");
        }
        fails(
            &format!("{MS}[limits]\nregistration-timeout-secs = 100000000000\n"),
            8,
            "limits.registration-timeout-secs",
            "out of range 1-86400",
        );
        let l = check(&format!("{MS}[limits]\nmap-reply-repeat-secs = 0\n")).expect("0 disables").core.limits;
        assert_eq!((l.map_reply_repeat, l.register_interval), (Duration::ZERO, Limits::default().register_interval));
    }

    #[test]
    fn map_resolver_checks() {
        fails("[node]\nname = \"mr\"\n[map-resolver]\n", 3, "map-resolver", "no [map-server]");
        let mr = |servers: &str| format!("[node]\nname = \"mr\"\n[map-resolver]\nmap-servers = [{servers}]\n");
        fails(&mr("{ address = \"192.0.2.1\" }"), 4, "map-resolver.map-servers[0].eid-prefixes", "which EIDs");
        fails(
            &mr("{ address = \"192.0.2.1\", eid-prefixes = [\"10.0.0.1/8\"] }"),
            4,
            "map-resolver.map-servers[0].eid-prefixes[0]",
            "did you mean 10.0.0.0/8?",
        );
        fails(
            &mr("{ address = \"ms\", eid-prefixes = [\"10.0.0.0/8\"] }"),
            4,
            "map-resolver.map-servers[0].address",
            "not an IP",
        );
    }

    #[test]
    fn map_server_without_sites() {
        fails("[node]\nname = \"ms\"\n[map-server]\nmax-registrations = 10\n", 3, "map-server", "no site");
    }

    #[test]
    fn load_reports_unreadable_file() {
        let e = load(Path::new("/nonexistent/loci.toml")).expect_err("missing");
        assert_eq!((e.line, e.field.as_str()), (None, ""));
        assert!(e.to_string().starts_with("/nonexistent/loci.toml: cannot read: "), "{e}");
    }

    #[test]
    fn index_paths() {
        assert_eq!(parent("a.b[0].c"), Some("a.b[0]"));
        assert_eq!(parent("a.b[0]"), Some("a.b"));
        assert_eq!(parent("a"), Some(""));
        assert_eq!(parent(""), None);
        // Header tables, implicit tables and dotted keys all locate.
        let text = "[node]\nname = \"n\"\n\n[[map-server.site]]\nname = \"s\"\nauth.algorithm = \"none\"\n";
        let index = Index::build(text);
        let line = |p: &str| index.offset_of(p).map(|o| line_at(text, o));
        assert_eq!(line("node.name"), Some(2));
        assert_eq!(line("map-server.site[0]"), Some(4));
        assert_eq!(line("map-server.site[0].auth.algorithm"), Some(6));
        assert_eq!(line("map-server.site[0].eid-prefixes"), Some(4));
        assert_eq!(line("map-server"), Some(4));
    }
}
