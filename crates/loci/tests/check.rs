//! `loci check` and `loci run` on valid and broken configuration files, through the binary.

mod common;

use std::path::Path;

use common::*;

fn example(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples").join(name).to_str().expect("utf-8 path").to_owned()
}

#[test]
fn examples_pass_check() {
    for name in ["ms.toml", "etr.toml", "proxy.toml"] {
        let path = example(name);
        let out = loci_ok(&["check", "-c", &path]);
        assert!(out.starts_with(&format!("{path}: OK (node ")), "{out}");
    }
}

/// `check` and `run` both refuse `text` with exit status 1 and print exactly
/// `loci: <file>:<line>: <field>: <reason>`.
fn refused(config: &str, line: usize, field: &str, reason: &str) {
    let lab = Lab::new();
    let path = lab.path("broken.toml");
    std::fs::write(&path, config).expect("write config");
    let path = path.to_str().expect("utf-8 path");
    let want = format!("loci: {path}:{line}: {field}: {reason}\n");
    for command in ["check", "run"] {
        let out = loci(&[command, "-c", path]);
        assert_eq!(out.status.code(), Some(1), "loci {command} on a broken config: {}", text(&out.stderr));
        assert_eq!(text(&out.stderr), want, "loci {command}");
        assert_eq!(text(&out.stdout), "", "loci {command}");
    }
}

const ETR: &str = r#"[node]
name = "etr"
listen = ["127.0.0.120"]

[xtr]
roles = ["etr"]
map-servers = [{ address = "127.0.0.121", auth = { algorithm = "hmac-sha256-128", key = "k" } }]

[[xtr.instance]]
database = [{ prefix = "10.1.1.0/24", rlocs = [
    { address = "127.0.0.120", priority = 1 },
] }]
"#;

#[test]
fn out_of_range_value() {
    refused(
        &ETR.replace("priority = 1", "priority = 300"),
        11,
        "xtr.instance[0].database[0].rlocs[0].priority",
        "300 is out of range 0-255",
    );
}

#[test]
fn unknown_key() {
    refused(&ETR.replace("[xtr]\n", "[xtr]\ncolour = \"red\"\n"), 6, "xtr.colour", "unknown field `colour`, expected one of `roles`, `map-servers`, `map-resolvers`, `proxy-reply`, `merge`, `xtr-id`, `site-id`, `record-ttl`, `rlocs`, `map-cache-size`, `pubsub`, `data-plane`, `probing`, `echo-nonce`, `mobility`, `petr`, `instance`");
}

#[test]
fn prefix_with_host_bits() {
    refused(
        &ETR.replace("10.1.1.0/24", "10.1.1.1/24"),
        10,
        "xtr.instance[0].database[0].prefix",
        "10.1.1.1/24 has host bits set; did you mean 10.1.1.0/24?",
    );
}

/// `loci ... | head` is normal use: a reader that goes away ends the output quietly, never in
/// a panic (Rust ignores SIGPIPE, so writes fail with EPIPE instead of killing the process).
#[test]
fn closed_stdout_ends_output_quietly() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    // Enough lines ("malformed: ...") to fill the pipe after the reader left.
    let hex = "0123";
    let mut args = vec!["decode"];
    args.extend(std::iter::repeat_n(hex, 2000));
    let mut child =
        Command::new(LOCI).args(&args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn loci");
    let mut first = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut first).expect("read");
    assert!(!first.is_empty());
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.code().is_some_and(|c| c != 101), "{:?}: {}", out.status, text(&out.stderr));
    assert!(!text(&out.stderr).contains("panicked"), "{}", text(&out.stderr));
}
