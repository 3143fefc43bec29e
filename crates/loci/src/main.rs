//! `loci`: the LISP daemon and its tools.

mod api;
mod bench;
mod config;
mod daemon;
mod decode;
mod demo;
mod lab;
mod lig;
mod metrics;
mod mobility;
mod show;
mod state;
mod sys;
mod underlay;
mod xtr;

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(name = "loci", version, about = "LISP (Locator/ID Separation Protocol): Map-Server, Map-Resolver and ETR")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon with the roles its configuration enables
    Run {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Validate a configuration file and report every problem with file, line and field
    Check {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Show a running daemon's state
    Show {
        what: ShowWhat,
        /// The daemon's API socket (default: from --config, else the only socket in /run/loci)
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Read the API socket path from this configuration
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// Only this instance ID (registrations, map-cache)
        #[arg(long)]
        iid: Option<u32>,
        /// Only registrations inside this prefix
        prefix: Option<String>,
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Ask a Map-Resolver for an EID's mapping (an Encapsulated Map-Request, like lig)
    Lig {
        /// EID address or prefix
        eid: String,
        /// Map-Resolver address (default: the first map-resolver of --config, or the node
        /// itself when it is a Map-Resolver)
        #[arg(long)]
        mr: Option<IpAddr>,
        /// Configuration to take the Map-Resolver from
        #[arg(short, long)]
        config: Option<PathBuf>,
        #[arg(long, default_value_t = 0)]
        iid: u32,
        /// The Map-Resolver's UDP port (default: 4342, or the node's control-port when the
        /// Map-Resolver is the node of --config)
        #[arg(long)]
        port: Option<u16>,
        /// Seconds to wait for the answer
        #[arg(long, default_value_t = 2.0)]
        timeout: f64,
        #[arg(long)]
        json: bool,
    },
    /// Ask one Map-Server directly for an EID's mapping (a plain Map-Request)
    Rig {
        eid: String,
        /// Map-Server address
        #[arg(long)]
        to: IpAddr,
        #[arg(long, default_value_t = 0)]
        iid: u32,
        #[arg(long, default_value_t = 4342)]
        port: u16,
        #[arg(long, default_value_t = 2.0)]
        timeout: f64,
        #[arg(long)]
        json: bool,
    },
    /// Run a seed scenario on the simulator (no root, no network) and print the message ladder
    Demo {
        /// Scenario name (see --list)
        #[arg(default_value = "resolve")]
        scenario: String,
        /// List the scenarios
        #[arg(long)]
        list: bool,
        /// Print the whole trace as JSON (time, from, to, message, key fields) instead
        #[arg(long)]
        json: bool,
        /// Also write the ladder as an SVG sequence diagram to FILE
        #[arg(long, value_name = "FILE")]
        svg: Option<std::path::PathBuf>,
        /// Simulator seed (same seed, same run)
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Build a scenario in network namespaces with real daemons and traffic, report, clean up (root)
    Lab {
        /// Scenario name (see --list) or a scenario file
        #[arg(default_value = "resolve")]
        scenario: String,
        /// List the scenarios
        #[arg(long)]
        list: bool,
        /// Leave the namespaces and daemons up, and say how to enter them
        #[arg(long)]
        keep: bool,
        /// Remove what a kept run left (its ID, as printed)
        #[arg(long, value_name = "RUN-ID")]
        down: Option<String>,
        /// Print the report as JSON (progress goes to standard error)
        #[arg(long)]
        json: bool,
    },
    /// Load a Map-Server with Map-Registers or Map-Requests and print rate and latency, or
    /// offer and count paced UDP datagrams (udp-send, udp-recv) for data-plane benchmarks
    Bench {
        #[command(subcommand)]
        mode: bench::Mode,
    },
    /// Decode LISP control messages given as hex (arguments or standard input)
    Decode {
        /// Hex strings; whitespace and colons are ignored
        hex: Vec<String>,
        /// Decode as a data-plane header (UDP 4341 payload) instead of a control message
        #[arg(long)]
        data: bool,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ShowWhat {
    Sites,
    Registrations,
    Subscriptions,
    Database,
    MapCache,
    /// Each locator of the map-cache: probe state, last RTT, since when
    Rlocs,
    DynamicEids,
    Stats,
}

impl ShowWhat {
    /// Where the daemon's API serves this table.
    fn api_path(self, iid: Option<u32>, prefix: Option<&str>) -> String {
        match self {
            ShowWhat::Sites => "/sites".to_string(),
            ShowWhat::Registrations => {
                let mut q = Vec::new();
                if let Some(i) = iid {
                    q.push(format!("iid={i}"));
                }
                if let Some(p) = prefix {
                    q.push(format!("prefix={}", p.replace('/', "%2F").replace('[', "%5B").replace(']', "%5D")));
                }
                format!("/registrations?{}", q.join("&"))
            }
            ShowWhat::Subscriptions => "/subscriptions".into(),
            ShowWhat::Database => "/database".into(),
            ShowWhat::MapCache => match iid {
                Some(i) => format!("/map-cache?iid={i}"),
                None => "/map-cache".into(),
            },
            ShowWhat::Rlocs => "/rlocs".into(),
            ShowWhat::DynamicEids => "/dynamic-eids".into(),
            ShowWhat::Stats => "/stats".into(),
        }
    }

    /// The table people read.
    fn render(self, v: &serde_json::Value) -> String {
        match self {
            ShowWhat::Sites => show::sites(v),
            ShowWhat::Registrations => show::registrations(v),
            ShowWhat::Subscriptions => show::subscriptions(v),
            ShowWhat::Database => show::database(v),
            ShowWhat::MapCache => show::map_cache(v),
            ShowWhat::Rlocs => show::rlocs(v),
            ShowWhat::DynamicEids => show::dynamic_eids(v),
            ShowWhat::Stats => show::stats(v),
        }
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // The daemon logs state changes; the tools print their results and log only problems.
    let default = if matches!(cli.command, Command::Run { .. }) { "info" } else { "warn" };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LOCI_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default)),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // Not eprintln!: a closed stderr must not turn the error into a panic.
            let _ = writeln!(std::io::stderr(), "loci: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run { config } => {
            let cfg = config::load(&config)?;
            runtime()?.block_on(daemon::run(cfg))
        }
        Command::Check { config } => {
            let cfg = config::load(&config)?;
            out(&format!("{}: OK ({})\n", config.display(), config::summary(&cfg)))
        }
        Command::Show { what, socket, config, iid, prefix, json } => {
            let socket = api_socket(socket, config.as_deref())?;
            let v = runtime()?.block_on(api::get(&socket, &what.api_path(iid, prefix.as_deref())))?;
            if json {
                out(&(serde_json::to_string_pretty(&v)? + "\n"))
            } else {
                out(&what.render(&v))
            }
        }
        Command::Lig { eid, mr, config, iid, port, timeout, json } => {
            // The node itself listens on its control port, other Map-Resolvers on 4342.
            let (mr, mr_port) = match (mr, config) {
                (Some(mr), _) => (mr, config::DEFAULT_CONTROL_PORT),
                (None, Some(c)) => {
                    let cfg = config::load(&c)?;
                    let own = cfg.core.map_resolver.as_ref().and_then(|_| cfg.node.listen.first().copied());
                    match (cfg.map_resolvers.first(), own) {
                        (Some(&mr), _) => (mr, config::DEFAULT_CONTROL_PORT),
                        (None, Some(IpAddr::V4(a))) if a.is_unspecified() => {
                            (IpAddr::from([127, 0, 0, 1]), cfg.node.control_port)
                        }
                        (None, Some(IpAddr::V6(a))) if a.is_unspecified() => {
                            (IpAddr::V6(std::net::Ipv6Addr::LOCALHOST), cfg.node.control_port)
                        }
                        (None, Some(a)) => (a, cfg.node.control_port),
                        (None, None) => bail!("the configuration names no map-resolver"),
                    }
                }
                (None, None) => bail!("give --mr ADDRESS or --config FILE"),
            };
            ask(&eid, iid, SocketAddr::new(mr, port.unwrap_or(mr_port)), true, timeout, json)
        }
        Command::Rig { eid, to, iid, port, timeout, json } => {
            ask(&eid, iid, SocketAddr::new(to, port), false, timeout, json)
        }
        Command::Decode { hex, data } => decode::run(&hex, data),
        Command::Bench { mode } => bench::run(mode),
        Command::Lab { scenario, list, keep, down, json } => {
            lab::main(lab::Options { scenario, list, keep, down, json })
        }
        Command::Demo { scenario, list, json, svg, seed } => {
            if list {
                let width = demo::SCENARIOS.iter().map(|s| s.name.len()).max().unwrap_or(0);
                let lines: String =
                    demo::SCENARIOS.iter().map(|s| format!("{:<width$}  {}\n", s.name, s.about)).collect();
                return out(&lines);
            }
            let names: Vec<&str> = demo::SCENARIOS.iter().map(|s| s.name).collect();
            let s = demo::find(&scenario)
                .with_context(|| format!("no scenario {scenario:?}; scenarios: {}", names.join(", ")))?;
            let outcome = (s.run)(seed);
            if let Some(path) = svg {
                std::fs::write(&path, demo::svg(s, seed, &outcome))
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            let text = if json {
                serde_json::to_string_pretty(&demo::json(s, seed, &outcome))? + "\n"
            } else {
                demo::render(s, seed, &outcome)
            };
            out(&text)
        }
    }
}

/// Writes `text` to standard output. `loci ... | head` is normal use: a closed pipe ends the
/// output quietly (Rust ignores SIGPIPE, and `println!` would panic).
pub fn out(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r.context("cannot write to stdout"),
    }
}

fn ask(eid: &str, iid: u32, server: SocketAddr, encapsulate: bool, timeout: f64, json: bool) -> anyhow::Result<()> {
    let eid = lig::parse_eid(eid, iid)?;
    let timeout = Duration::try_from_secs_f64(timeout).context("bad --timeout")?;
    let kind = if encapsulate { "Encapsulated Map-Request" } else { "Map-Request" };
    if !json {
        out(&format!("Send {kind} to {server} for {eid} ...\n"))?;
    }
    let answer = runtime()?.block_on(lig::query(server, eid, encapsulate, timeout))?;
    if json {
        out(&(serde_json::to_string_pretty(&lig::to_json(&answer))? + "\n"))
    } else {
        out(&lig::render(&eid, &answer))
    }
}

/// The API socket to talk to: given, from a config file, or the only one in /run/loci.
fn api_socket(socket: Option<PathBuf>, config: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(s) = socket {
        return Ok(s);
    }
    if let Some(c) = config {
        return Ok(config::load(c)?.node.api_socket);
    }
    let dir = Path::new("/run/loci");
    let socks: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == "sock")).collect()
        })
        .unwrap_or_default();
    match socks.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!("no daemon API socket in {}: give --socket or --config", dir.display()),
        many => bail!("several daemons in {} ({}): give --socket or --config", dir.display(), many.len()),
    }
}
