//! Shared pieces of the end-to-end tests: daemons in subprocesses that are always stopped,
//! bounded polling of their API, the CLI, hand-built Map-Registers and a tshark capture.
//!
//! Every test uses its own loopback addresses (listed where the tests are), so tests run in
//! parallel without sharing a UDP port.

#![allow(dead_code)] // each test binary uses a different part of this module

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use loci_wire::auth::SendPolicy;
use loci_wire::map_register::{MapRegister, XtrId};
use loci_wire::message::ControlMessage;
use loci_wire::{Action, Address, Locator, MapRecord, Wire};
use serde_json::Value;
use tempfile::TempDir;

pub const LOCI: &str = env!("CARGO_BIN_EXE_loci");
/// How long a daemon may take to come up or a condition to become true.
pub const PATIENCE: Duration = Duration::from_secs(10);
/// How long any one CLI invocation may take before it counts as hung.
const COMMAND_LIMIT: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(50);
/// tshark takes seconds to start (loading its dissectors), more on a busy machine.
const TSHARK_PATIENCE: Duration = Duration::from_secs(40);

/// Runs `cmd` to completion, killing it after [`COMMAND_LIMIT`] so a hung daemon fails the test
/// instead of hanging it.
pub fn run_bounded(cmd: &mut Command) -> Output {
    run_within(cmd, COMMAND_LIMIT)
}

/// Runs `cmd` to completion within `limit`; past it, asks it to stop (SIGTERM, so it can clean
/// up), kills it if it has not within 15 s, and fails the test with what it printed.
pub fn run_within(cmd: &mut Command, limit: Duration) -> Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.unwrap_or_else(|e| panic!("{cmd:?}: {e}")),
        Err(_) => {
            signal(pid, "TERM");
            let out = rx.recv_timeout(Duration::from_secs(15));
            if out.is_err() {
                signal(pid, "KILL");
            }
            let stderr = out.ok().and_then(Result::ok).map(|o| text(&o.stderr));
            panic!("{cmd:?} did not finish within {limit:?}: {stderr:?}");
        }
    }
}

/// Runs the `loci` binary with `args`.
pub fn loci(args: &[&str]) -> Output {
    run_bounded(Command::new(LOCI).args(args))
}

/// Runs `loci` and returns its standard output, failing the test when it fails.
pub fn loci_ok(args: &[&str]) -> String {
    let out = loci(args);
    assert!(out.status.success(), "loci {args:?} failed ({}): {}", out.status, text(&out.stderr));
    text(&out.stdout)
}

/// Runs `loci ... --json` and parses what it prints.
pub fn loci_json(args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.push("--json");
    let out = loci_ok(&args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("loci {args:?} printed no JSON ({e}): {out}"))
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Sends `sig` (a name such as TERM) to `pid` with the shell's builtin kill, which every
/// system has.
pub fn signal(pid: u32, sig: &str) {
    let _ = Command::new("sh")
        .args(["-c", &format!("kill -{sig} {pid}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Stops `child` with SIGTERM, and SIGKILL if it is still running 3 s later. SIGTERM first also
/// for tshark: it then stops its dumpcap child, which SIGKILL would leave running.
fn terminate(child: &mut Child) {
    signal(child.id(), "TERM");
    let deadline = Instant::now() + Duration::from_secs(3);
    while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
        std::thread::sleep(POLL);
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Polls `f` until it returns something, for at most [`PATIENCE`]; panics naming `what`.
pub fn poll<T>(what: &str, f: impl FnMut() -> Option<T>) -> T {
    poll_for(what, PATIENCE, f)
}

pub fn poll_for<T>(what: &str, patience: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + patience;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {patience:?} waiting for {what}");
        std::thread::sleep(POLL);
    }
}

/// A directory holding the configurations, API sockets and state of one test's daemons.
/// Declare it before the daemons so they are stopped before it is removed.
pub struct Lab {
    pub dir: TempDir,
}

impl Lab {
    pub fn new() -> Lab {
        Lab { dir: tempfile::Builder::new().prefix("loci-e2e").tempdir().expect("temp dir") }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `<name>.toml` with a `[node]` section for `listen` (API socket and state in this
    /// directory) followed by `rest`.
    pub fn config(&self, name: &str, listen: &[&str], rest: &str) -> PathBuf {
        let listen: Vec<String> = listen.iter().map(|a| format!("{a:?}")).collect();
        let text = format!(
            "[node]\nname = \"{name}\"\nlisten = [{}]\napi-socket = \"{name}.sock\"\nstate-dir = \"{name}-state\"\n{rest}",
            listen.join(", ")
        );
        let path = self.path(&format!("{name}.toml"));
        std::fs::write(&path, text).expect("write config");
        path
    }

    /// Writes the configuration and starts `loci run` on it, waiting until its API answers.
    pub fn start(&self, name: &str, listen: &[&str], rest: &str) -> Daemon {
        let config = self.config(name, listen, rest);
        Daemon::start(name, &config, &self.path(&format!("{name}.sock")), &self.path(&format!("{name}.log")))
    }
}

/// A `loci run` subprocess. Dropping it stops it (SIGTERM, then SIGKILL), also when the test
/// panics, and then prints its log.
pub struct Daemon {
    pub name: String,
    pub config: PathBuf,
    pub socket: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Daemon {
    pub fn start(name: &str, config: &Path, socket: &Path, log: &Path) -> Daemon {
        let out = File::options().create(true).append(true).open(log).expect("log file");
        let child = Command::new(LOCI)
            .args(["run", "-c"])
            .arg(config)
            // The daemon's own debug lines say when a send fails.
            .env("LOCI_LOG", "info,loci::daemon=debug")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log file"))
            .stderr(out)
            .spawn()
            .expect("spawn loci run");
        let mut d = Daemon {
            name: name.into(),
            config: config.into(),
            socket: socket.into(),
            log: log.into(),
            child: Some(child),
        };
        d.wait_ready();
        d
    }

    /// Polls the API socket until `show stats` answers; fails early when the daemon exits.
    fn wait_ready(&mut self) {
        let name = self.name.clone();
        poll(&format!("{name}'s API"), || {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("{name} exited during start-up ({status}):\n{}", self.log());
            }
            let out = loci(&["show", "stats", "--json", "--socket", self.socket.to_str()?]);
            out.status.success().then_some(())
        })
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `loci show <what> --json` against this daemon.
    pub fn show(&self, what: &str) -> Value {
        loci_json(&["show", what, "--socket", self.socket.to_str().expect("utf-8 path")])
    }

    /// `loci show <what>` as a table.
    pub fn show_text(&self, what: &str) -> String {
        loci_ok(&["show", what, "--socket", self.socket.to_str().expect("utf-8 path")])
    }

    /// Polls `show <what> --json` until `pred` holds, and returns that answer.
    pub fn wait_for(&self, what: &str, description: &str, pred: impl Fn(&Value) -> bool) -> Value {
        poll(&format!("{}: {description}", self.name), || Some(self.show(what)).filter(|v| pred(v)))
    }

    /// A counter of `show stats --json`: `drops.malformed`, `site_drops.site-a.bad-auth`...
    pub fn counter(&self, path: &[&str]) -> u64 {
        counter(&self.show("stats"), path)
    }

    /// Stops the daemon with SIGTERM and returns how it exited.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("daemon already stopped");
        signal(child.id(), "TERM");
        let status = poll(&format!("{} to exit after SIGTERM", self.name), || child.try_wait().ok().flatten());
        if !status.success() {
            eprintln!("{} log:\n{}", self.name, self.log());
        }
        status
    }

    /// Fails when the daemon could not send some datagram.
    pub fn assert_no_send_failures(&self) {
        let log = self.log();
        assert!(!log.contains("send failed"), "{} failed to send:\n{log}", self.name);
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        terminate(&mut child);
        if std::thread::panicking() {
            eprintln!("---- {} log ----\n{}", self.name, self.log());
        }
    }
}

/// The number at `path` in a stats object, 0 when absent.
pub fn counter(v: &Value, path: &[&str]) -> u64 {
    path.iter().fold(v, |v, k| &v[*k]).as_u64().unwrap_or(0)
}

/// A Map-Register for `prefix` with one locator `rloc`, signed with `key` (Key ID 0,
/// HMAC-SHA-256-128), asking for a Map-Notify; what an ETR with `xtr_id` would send.
pub fn signed_register(prefix: ipnet::IpNet, rloc: IpAddr, key: &str, nonce: u64, xtr_id: u128) -> Vec<u8> {
    let mut reg = MapRegister {
        proxy_reply: false,
        security: false,
        eid_notify: false,
        use_ttl: false,
        merge: false,
        want_map_notify: true,
        nonce,
        key_id: 0,
        algorithm_id: 0,
        auth_data: Vec::new(),
        records: vec![MapRecord {
            ttl: 1440,
            eid_mask_len: prefix.prefix_len(),
            action: Action::NO_ACTION,
            authoritative: true,
            map_version: 0,
            eid: Address::from(prefix.network()),
            locators: vec![Locator::new(rloc)],
        }],
        xtr_id: Some(XtrId { xtr_id, site_id: 0 }),
    };
    reg.to_signed_bytes(0, key.as_bytes(), &SendPolicy::default()).expect("sign Map-Register")
}

/// A UDP socket on `ip`:4342 standing in for an ETR: Map-Notifies come back to this port.
pub fn fake_etr(ip: IpAddr) -> UdpSocket {
    let s = UdpSocket::bind(SocketAddr::new(ip, 4342)).expect("bind the fake ETR's port 4342");
    s.set_read_timeout(Some(PATIENCE)).expect("timeout");
    s
}

/// Receives the next datagram on `socket`, which must be the Map-Notify acknowledging `nonce`.
pub fn expect_notify(socket: &UdpSocket, nonce: u64) {
    let mut buf = [0u8; 2048];
    let (n, from) = socket.recv_from(&mut buf).expect("no Map-Notify came back");
    match ControlMessage::parse(&buf[..n]) {
        Ok(ControlMessage::MapNotify(m)) if m.nonce == nonce => {}
        other => panic!("expected the Map-Notify for nonce {nonce}, got {other:?} from {from}"),
    }
}

/// Whether `::1` is configured (IPv6 may be disabled in a container).
pub fn has_ipv6_loopback() -> bool {
    UdpSocket::bind(SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 0)).is_ok()
}

/// Whether the test may skip a check it cannot run here: yes, after saying why, unless
/// `CI=true`, where every check must run.
pub fn skip(why: &str) -> bool {
    assert!(std::env::var("CI").as_deref() != Ok("true"), "CI=true but {why}");
    eprintln!("SKIPPED: {why}");
    true
}

pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false)
}

/// `tshark -i lo` writing what `filter` selects to a file. Stopped when dropped.
pub struct Capture {
    child: Option<Child>,
    pub file: PathBuf,
    log: PathBuf,
}

impl Capture {
    /// Starts capturing and waits until the capture is on; `None` (after saying why) when
    /// tshark or root is missing, which is an error when `CI=true`.
    pub fn start(dir: &Path, filter: &str) -> Option<Capture> {
        if !is_root() {
            skip("the tshark check captures on lo, which needs root");
            return None;
        }
        if Command::new("tshark").arg("--version").output().map_or(true, |o| !o.status.success()) {
            skip("tshark is not installed");
            return None;
        }
        let file = dir.join("capture.pcapng");
        let log = dir.join("tshark.log");
        let child = Command::new("tshark")
            .args(["-i", "lo", "-f", filter, "-w"])
            .arg(&file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).expect("tshark log"))
            .spawn()
            .expect("spawn tshark");
        let mut c = Capture { child: Some(child), file, log };
        poll_for("tshark to start capturing", TSHARK_PATIENCE, || {
            if let Some(status) = c.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("tshark exited ({status}): {}", std::fs::read_to_string(&c.log).unwrap_or_default());
            }
            // tshark says "Capturing on" before its dumpcap has even started; dumpcap writes the
            // file's header once the interface and filter are set up.
            std::fs::metadata(&c.file).ok().filter(|m| m.len() > 0).map(|_| ())
        });
        Some(c)
    }

    /// Runs tshark on the capture file with `args`, returning its standard output.
    pub fn read(&self, args: &[&str]) -> String {
        let out = run_bounded(Command::new("tshark").arg("-r").arg(&self.file).args(args));
        text(&out.stdout)
    }

    /// Waits until the capture holds a message of each LISP type in `types` (so the packets
    /// to check have been written), then stops tshark. Returns the number of packets.
    pub fn finish(&mut self, types: &[u8]) -> usize {
        let mut listing = String::new();
        let what = format!("the capture to hold LISP types {types:?}");
        let packets = poll_for(&what, TSHARK_PATIENCE, || {
            listing = self.read(&["-T", "fields", "-e", "frame.time_relative", "-e", "lisp.type"]);
            let seen: Vec<u8> = listing
                .lines()
                .filter_map(|l| l.split('\t').nth(1))
                .flat_map(|t| t.split(','))
                .filter_map(|t| t.trim().parse().ok())
                .collect();
            eprintln!("capture so far (time, LISP types):\n{listing}");
            types.iter().all(|t| seen.contains(t)).then(|| listing.lines().count())
        });
        if let Some(mut child) = self.child.take() {
            terminate(&mut child);
        }
        packets
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child);
        }
    }
}

pub fn v4(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, last)
}
