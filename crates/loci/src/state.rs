//! Replay-protection state kept across restarts: the Map-Server's last nonce per registrant
//! and the ETR's last Map-Register nonce (RFC 9301 §5.6: nonces only increase).
//!
//! Written in batches (at most once a second) to a temporary file renamed into place, so a
//! crash leaves the previous state and no register costs a disk sync.

use std::path::{Path, PathBuf};

use anyhow::Context;
use loci_core::map_server::Registrant;
use loci_core::node::Node;
use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct State {
    /// (site, registrant, last nonce); registrant is "xtr:<hex>:<site-id>" or "addr:<ip>".
    #[serde(default)]
    pub map_server_nonces: Vec<(String, String, u64)>,
    #[serde(default)]
    pub etr_last_nonce: u64,
}

pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join("nonces.json")
}

pub fn load(state_dir: &Path) -> anyhow::Result<State> {
    let p = path(state_dir);
    match std::fs::read(&p) {
        Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| format!("{}: corrupt state file", p.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", p.display())),
    }
}

pub fn save(state_dir: &Path, state: &State) -> anyhow::Result<()> {
    std::fs::create_dir_all(state_dir).with_context(|| format!("cannot create {}", state_dir.display()))?;
    let p = path(state_dir);
    let tmp = p.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec(state)?).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &p).with_context(|| format!("cannot replace {}", p.display()))
}

fn registrant_key(r: &Registrant) -> String {
    match r {
        Registrant::XtrId(x, s) => format!("xtr:{x:032x}:{s}"),
        Registrant::Address(a) => format!("addr:{a}"),
    }
}

fn parse_registrant(s: &str) -> Option<Registrant> {
    if let Some(rest) = s.strip_prefix("xtr:") {
        let (x, site) = rest.split_once(':')?;
        return Some(Registrant::XtrId(u128::from_str_radix(x, 16).ok()?, site.parse().ok()?));
    }
    Some(Registrant::Address(s.strip_prefix("addr:")?.parse().ok()?))
}

/// Snapshot of what a node must not forget.
pub fn capture(node: &Node) -> State {
    let mut map_server_nonces: Vec<_> = node
        .map_server()
        .map(|ms| ms.nonces().map(|(site, r, n)| (site.to_string(), registrant_key(&r), n)).collect())
        .unwrap_or_default();
    map_server_nonces.sort();
    State { map_server_nonces, etr_last_nonce: node.etr().map_or(0, |e| e.last_nonce()) }
}

/// Puts persisted Map-Server nonces back into a freshly built node.
pub fn restore(node: &mut Node, state: &State) {
    if let Some(ms) = node.map_server_mut() {
        for (site, r, n) in &state.map_server_nonces {
            if let Some(r) = parse_registrant(r) {
                ms.restore_nonce(site, r, *n);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registrant_keys_round_trip() {
        for r in [Registrant::XtrId(0xdead_beef, 7), Registrant::Address("2001:db8::1".parse().unwrap())] {
            assert_eq!(parse_registrant(&registrant_key(&r)), Some(r));
        }
        assert_eq!(parse_registrant("bogus"), None);
    }

    #[test]
    fn save_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let s = State { map_server_nonces: vec![("a".into(), "addr:10.0.0.1".into(), 9)], etr_last_nonce: 4 };
        save(dir.path(), &s).unwrap();
        assert_eq!(load(dir.path()).unwrap(), s);
        assert_eq!(load(&dir.path().join("missing")).unwrap(), State::default());
    }
}
