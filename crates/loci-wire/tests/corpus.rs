//! Runs every decoder over the fuzz seed corpus (`fuzz/corpus/<target>/*`) and over any fuzz
//! artifacts (`fuzz/artifacts/<target>/*`), checking what the fuzz targets check: no panic, and
//! whatever parses re-emits to bytes that parse to the same value. Also keeps the seed corpus in
//! step with the samples in `common`: run with `LOCI_WRITE_CORPUS=1` to (re)write the seeds.

mod common;

use std::fmt::Debug;
use std::path::{Path, PathBuf};

use loci_wire::address::Address;
use loci_wire::data::DataHeaderRepr;
use loci_wire::ecm::Ecm;
use loci_wire::info::InfoMessage;
use loci_wire::map_notify::MapNotify;
use loci_wire::map_referral::MapReferral;
use loci_wire::map_register::MapRegister;
use loci_wire::map_reply::MapReply;
use loci_wire::map_request::MapRequest;
use loci_wire::message::ControlMessage;
use loci_wire::shared_ext::SharedExtension;
use loci_wire::Wire;

/// Decodes `data` as `T`; when it parses, re-emits and re-parses it and checks the two values
/// are equal. Returns whether it parsed and whether the input was reproduced byte for byte
/// (expected for clean input: no tolerated oddities).
fn round_trip<T: Wire + PartialEq + Debug>(data: &[u8]) -> Result<Option<bool>, String> {
    let Ok((v, notes)) = T::parse_noting(data) else { return Ok(None) };
    let bytes = v.to_bytes();
    if bytes.len() != v.buffer_len() {
        return Err(format!("emitted {} bytes, buffer_len says {}", bytes.len(), v.buffer_len()));
    }
    match T::parse(&bytes) {
        Ok(again) if again == v => Ok(Some(!notes.is_clean() || bytes == data)),
        Ok(again) => Err(format!("re-parsed to a different value:\n{v:?}\n{again:?}")),
        Err(e) => Err(format!("re-emitted bytes do not parse: {e}")),
    }
}

type Check = fn(&[u8]) -> Result<Option<bool>, String>;

/// Every fuzz target (by directory name) and the decoder it runs.
const TARGETS: &[(&str, Check)] = &[
    ("address", round_trip::<Address>),
    ("control_message", round_trip::<ControlMessage>),
    ("data_header", round_trip::<DataHeaderRepr>),
    ("ecm", round_trip::<Ecm>),
    ("info", round_trip::<InfoMessage>),
    ("map_notify", round_trip::<MapNotify>),
    ("map_referral", round_trip::<MapReferral>),
    ("map_register", round_trip::<MapRegister>),
    ("map_reply", round_trip::<MapReply>),
    ("map_request", round_trip::<MapRequest>),
    ("shared_ext", round_trip::<SharedExtension>),
];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

/// The files in `dir/<target>/` for every target directory, sorted.
fn files_under(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    let Ok(targets) = std::fs::read_dir(dir) else { return out };
    for t in targets {
        let t = t.unwrap().path();
        if !t.is_dir() {
            continue;
        }
        let target = t.file_name().unwrap().to_string_lossy().into_owned();
        for f in std::fs::read_dir(&t).unwrap() {
            let f = f.unwrap().path();
            if f.is_file() {
                out.push((target.clone(), f));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn every_decoder_survives_every_corpus_and_artifact_file() {
    let mut files = files_under(&fuzz_dir().join("corpus"));
    let seeds = files.len();
    assert!(seeds > 0, "no seed corpus under {}", fuzz_dir().join("corpus").display());
    files.extend(files_under(&fuzz_dir().join("artifacts")));
    let mut failures = Vec::new();
    for (target, path) in &files {
        let data = std::fs::read(path).unwrap();
        for (name, check) in TARGETS {
            let outcome = std::panic::catch_unwind(|| check(&data));
            match outcome {
                Err(_) => failures.push(format!("{name} panicked on {}", path.display())),
                Ok(Err(e)) => failures.push(format!("{name} on {}: {e}", path.display())),
                // A seed is a valid message for its own target and re-emits identically.
                Ok(Ok(parsed)) if name == target && path.starts_with(fuzz_dir().join("corpus")) => {
                    if parsed != Some(true) {
                        failures.push(format!("seed {} does not round-trip exactly ({parsed:?})", path.display()));
                    }
                }
                Ok(Ok(_)) => {}
            }
        }
    }
    assert!(failures.is_empty(), "{} failure(s):\n{}", failures.len(), failures.join("\n"));
    println!("{} corpus files ({seeds} seeds) x {} decoders", files.len(), TARGETS.len());
}

/// The seed files: each sample in the directory of the target that decodes it, control
/// messages also in `control_message`, and the message inside each ECM in its own target's.
fn seeds() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut add = |target: &str, name: &str, bytes: Vec<u8>| out.push((format!("{target}/{name}"), bytes));
    for s in common::controls() {
        let bytes = s.msg.to_bytes();
        let target = match &s.msg {
            ControlMessage::MapRequest(_) => "map_request",
            ControlMessage::MapReply(_) => "map_reply",
            ControlMessage::MapRegister(_) => "map_register",
            ControlMessage::MapNotify(_) => "map_notify",
            ControlMessage::MapReferral(_) => "map_referral",
            ControlMessage::Info(_) => "info",
            ControlMessage::Ecm(_) => "ecm",
            ControlMessage::SharedExtension(_) => "shared_ext",
        };
        add(target, s.name, bytes.clone());
        add("control_message", s.name, bytes);
    }
    for d in common::data_headers() {
        add("data_header", d.name, d.header.to_bytes());
    }
    for (name, a) in common::addresses() {
        add("address", name, a.to_bytes());
    }
    out
}

#[test]
fn seed_corpus_matches_the_samples() {
    let corpus = fuzz_dir().join("corpus");
    let write = std::env::var_os("LOCI_WRITE_CORPUS").is_some();
    let mut stale = Vec::new();
    for (rel, bytes) in seeds() {
        let path = corpus.join(&rel);
        if write {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &bytes).unwrap();
        } else if std::fs::read(&path).ok().as_deref() != Some(&bytes[..]) {
            stale.push(rel);
        }
    }
    assert!(
        stale.is_empty(),
        "seed files missing or out of date (rerun with LOCI_WRITE_CORPUS=1): {}",
        stale.join(", ")
    );
}
