//! What the lab makes on the host, each behind a guard that removes it on drop (also when a
//! step fails or the run is interrupted): network namespaces and the processes inside them.
//! Devices live inside the namespaces and go with them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Set by SIGINT or SIGTERM; every wait checks it, so the run unwinds through the guards.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// How long a process gets to stop after SIGTERM before SIGKILL.
const STOP_PATIENCE: Duration = Duration::from_secs(3);

/// Catches SIGINT and SIGTERM from now on (instead of dying with the namespaces left behind).
pub fn catch_signals() -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new().name("loci-lab-signals".into()).spawn(move || {
        rt.block_on(async {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
                let _ = tx.send(false);
                return;
            };
            let _ = tx.send(true);
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            eprintln!("loci lab: interrupted, removing what the run made");
            INTERRUPTED.store(true, Ordering::SeqCst);
        })
    })?;
    match rx.recv() {
        Ok(true) => Ok(()),
        _ => bail!("cannot catch SIGINT/SIGTERM"),
    }
}

/// Fails when the run was interrupted.
pub fn check_interrupt() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

/// Sleeps `d`, or less when interrupted (then fails).
pub fn sleep(d: Duration) -> Result<()> {
    let end = Instant::now() + d;
    while Instant::now() < end {
        check_interrupt()?;
        std::thread::sleep((end - Instant::now()).min(Duration::from_millis(50)));
    }
    check_interrupt()
}

/// Polls `f` every 100 ms until it returns something, for at most `patience`.
pub fn poll<T>(what: &str, patience: Duration, mut f: impl FnMut() -> Result<Option<T>>) -> Result<T> {
    let end = Instant::now() + patience;
    loop {
        if let Some(v) = f()? {
            return Ok(v);
        }
        if Instant::now() >= end {
            bail!("timed out after {patience:?} waiting for {what}");
        }
        sleep(Duration::from_millis(100))?;
    }
}

pub fn output(cmd: &mut Command) -> Result<Output> {
    cmd.stdin(Stdio::null()).output().with_context(|| format!("cannot run {cmd:?}"))
}

/// Runs `args`; fails with its error output when it fails.
pub fn sh(args: &[&str]) -> Result<String> {
    let out = output(Command::new(args[0]).args(&args[1..]))?;
    if !out.status.success() {
        bail!("{} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `args` run in namespace `ns`.
pub fn in_ns(ns: &str, args: &[&str]) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]).args(args);
    c
}

pub fn tool_missing(tool: &str) -> bool {
    !Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A network namespace, deleted (with every process still in it) on drop.
pub struct Netns {
    pub name: String,
    keep: bool,
}

impl Netns {
    pub fn new(name: String) -> Result<Netns> {
        sh(&["ip", "netns", "add", &name])?;
        let ns = Netns { name, keep: false };
        ns.exec(&["ip", "link", "set", "lo", "up"])?;
        // Every node may route; the lab's paths are asymmetric (D1 answers through one of two
        // ETRs), so no reverse-path filter; no duplicate address detection delaying IPv6.
        ns.exec(&[
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
            "net.ipv6.conf.all.forwarding=1",
            "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.default.rp_filter=0",
            "net.ipv6.conf.all.accept_dad=0",
            "net.ipv6.conf.default.accept_dad=0",
        ])?;
        Ok(ns)
    }

    pub fn exec(&self, args: &[&str]) -> Result<String> {
        let mut full = vec!["ip", "netns", "exec", &self.name];
        full.extend_from_slice(args);
        sh(&full)
    }

    /// `ip ARGS` in the namespace.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut full = vec!["ip"];
        full.extend_from_slice(args);
        self.exec(&full)
    }

    pub fn keep(&mut self) {
        self.keep = true;
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if !self.keep {
            remove_netns(&self.name);
        }
    }
}

/// Stops every process in namespace `name` (SIGTERM, then SIGKILL) and deletes it. A namespace
/// whose processes live on would outlast `ip netns del`.
pub fn remove_netns(name: &str) {
    let pids = |sig: Option<&str>| {
        let out = Command::new("ip").args(["netns", "pids", name]).output();
        let pids: Vec<String> = out
            .map(|o| String::from_utf8_lossy(&o.stdout).split_whitespace().map(String::from).collect())
            .unwrap_or_default();
        if let Some(sig) = sig {
            for p in &pids {
                let _ = Command::new("kill").args([sig, p]).stderr(Stdio::null()).status();
            }
        }
        pids.len()
    };
    if pids(Some("-TERM")) > 0 {
        let end = Instant::now() + STOP_PATIENCE;
        while pids(None) > 0 && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(50));
        }
        pids(Some("-KILL"));
    }
    let _ = Command::new("ip").args(["netns", "del", name]).stderr(Stdio::null()).status();
}

/// A background process, stopped (SIGTERM, then SIGKILL) on drop.
pub struct Proc {
    pub name: String,
    child: Child,
    pub log: Option<PathBuf>,
    keep: bool,
}

impl Proc {
    /// Starts `cmd` in its own process group, so that Ctrl-C in the terminal reaches the lab
    /// alone and the lab stops its processes in order.
    pub fn spawn(name: &str, cmd: Command, log: Option<&Path>) -> Result<Proc> {
        Proc::start(name, cmd, log, Stdio::null())
    }

    /// Like [`Proc::spawn`], with its standard input a pipe: a process started ahead that waits
    /// for a line there acts the moment it is written, without the cost of starting it then.
    pub fn spawn_waiting(name: &str, cmd: Command, log: Option<&Path>) -> Result<(Proc, std::process::ChildStdin)> {
        let mut p = Proc::start(name, cmd, log, Stdio::piped())?;
        let stdin = p.child.stdin.take().context("no standard input pipe")?;
        Ok((p, stdin))
    }

    fn start(name: &str, mut cmd: Command, log: Option<&Path>, stdin: Stdio) -> Result<Proc> {
        use std::os::unix::process::CommandExt;
        match log {
            Some(p) => {
                let f = std::fs::File::create(p).with_context(|| format!("cannot create {}", p.display()))?;
                cmd.stdout(f.try_clone()?).stderr(f);
            }
            None => {
                cmd.stdout(Stdio::null()).stderr(Stdio::null());
            }
        }
        cmd.stdin(stdin).process_group(0);
        let child = cmd.spawn().with_context(|| format!("cannot start {name}"))?;
        Ok(Proc { name: name.into(), child, log: log.map(Path::to_owned), keep: false })
    }

    /// Whether it has ended (and how).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Stops the process and waits for it.
    pub fn stop(&mut self) {
        if self.exited().is_some() {
            return;
        }
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).stderr(Stdio::null()).status();
        let end = Instant::now() + STOP_PATIENCE;
        while Instant::now() < end {
            if self.exited().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The last lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        let Some(p) = &self.log else { return String::new() };
        let text = std::fs::read_to_string(p).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        format!("--- {} ({}) ---\n{}\n", self.name, p.display(), all[all.len().saturating_sub(lines)..].join("\n"))
    }

    pub fn keep(&mut self) {
        self.keep = true;
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if !self.keep {
            self.stop();
        }
    }
}

/// The run's directory (configurations, API sockets, logs), removed on drop.
pub struct RunDir {
    pub path: PathBuf,
    keep: bool,
}

impl RunDir {
    pub fn create(path: PathBuf) -> Result<RunDir> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(RunDir { path, keep: false })
    }

    pub fn keep(&mut self) {
        self.keep = true;
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}
