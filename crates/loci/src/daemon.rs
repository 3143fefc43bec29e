//! `loci run`: drives a sans-IO [`Node`] from UDP sockets, a timer and the API.
//!
//! One task per control socket drains every datagram that is ready, hands it to the node and
//! sends what the node emits; a timer task fires the node's timers; the API reads snapshots.
//! The node sits behind a mutex that is never held across an await.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use loci_core::node::{Event, Node};
use tokio::net::UdpSocket;
use tokio::sync::Notify;

use crate::config::DaemonConfig;
use crate::{api, state, xtr};

/// Largest datagram we accept (a LISP control message is far smaller).
const MAX_DATAGRAM: usize = 9216;

/// One bound control address: the async socket the receive task waits on, and a clone of it
/// that sends. Sending goes through the clone because tokio's `try_send_to` reports
/// `WouldBlock` until its reactor has seen the socket writable, which loses a datagram sent
/// right after binding (the ETR's first Map-Register); a plain non-blocking send only fails
/// when the socket buffer is full.
pub struct ControlSocket {
    pub local: SocketAddr,
    pub recv: Arc<UdpSocket>,
    send: std::net::UdpSocket,
}

impl ControlSocket {
    /// Binds `addr`. IPv6 sockets are IPv6-only, so `0.0.0.0` and `::` can share the port
    /// (Linux makes `::` dual-stack by default, and then the second bind fails).
    fn bind(addr: SocketAddr) -> std::io::Result<Self> {
        let s = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::DGRAM, None)?;
        if addr.is_ipv6() {
            s.set_only_v6(true)?;
        }
        s.set_nonblocking(true)?;
        s.bind(&addr.into())?;
        let s: std::net::UdpSocket = s.into();
        let send = s.try_clone()?;
        let recv = Arc::new(UdpSocket::from_std(s)?);
        Ok(ControlSocket { local: recv.local_addr()?, recv, send })
    }
}

pub struct Shared {
    pub node: Mutex<Node>,
    pub sockets: Vec<ControlSocket>,
    /// Woken when the node may want its timer earlier.
    pub timer: Notify,
    pub started: Instant,
    /// The xTR data plane, when one runs (taken out to stop it).
    pub data_plane: Mutex<Option<loci_dataplane::DataPlane>>,
}

impl Shared {
    /// Sends everything the node has queued, from the socket bound to the requested source (or
    /// the first of the destination's family).
    pub fn flush(&self, node: &mut Node) {
        while let Some(t) = node.poll_transmit() {
            let socket = self
                .sockets
                .iter()
                .find(|s| Some(s.local.ip()) == t.src)
                .or_else(|| self.sockets.iter().find(|s| s.local.is_ipv4() == t.dst.is_ipv4()));
            match socket {
                Some(s) => {
                    if let Err(e) = s.send.send_to(&t.data, t.dst) {
                        tracing::debug!(dst = %t.dst, error = %e, "send failed");
                    }
                }
                None => tracing::debug!(dst = %t.dst, "no socket of that address family"),
            }
        }
    }
}

pub async fn run(cfg: DaemonConfig) -> anyhow::Result<()> {
    let saved = state::load(&cfg.node.state_dir)?;
    let mut core = cfg.core.clone();
    if let Some(etr) = &mut core.etr {
        // Nonces only increase, across restarts too: the saved one, or the clock if it is ahead.
        let clock =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
        etr.first_nonce = saved.etr_last_nonce.max(clock);
    }
    let mut sockets = Vec::new();
    for ip in &cfg.node.listen {
        let addr = SocketAddr::new(*ip, cfg.node.control_port);
        sockets.push(ControlSocket::bind(addr).with_context(|| format!("cannot bind UDP {addr}"))?);
    }
    let mut node = Node::new(core, rand::random(), Instant::now());
    state::restore(&mut node, &saved);
    let (data_plane, misses) = match &cfg.data_plane {
        Some(dp) => {
            let (dp, rx) = xtr::start(dp, &node)?;
            (Some(dp), Some(rx))
        }
        None => (None, None),
    };
    let shared = Arc::new(Shared {
        node: Mutex::new(node),
        sockets,
        timer: Notify::new(),
        started: Instant::now(),
        data_plane: Mutex::new(data_plane),
    });
    tracing::info!(name = %cfg.node.name, listen = ?cfg.node.listen, port = cfg.node.control_port, "loci running");

    for socket in &shared.sockets {
        tokio::spawn(receive(shared.clone(), socket.recv.clone(), socket.local));
    }
    tokio::spawn(timers(shared.clone()));
    if let Some(rx) = misses {
        tokio::spawn(xtr::misses(shared.clone(), rx));
    }
    tokio::spawn(persist(shared.clone(), cfg.node.state_dir.clone()));
    let api = tokio::spawn(api::serve(shared.clone(), cfg.node.api_socket.clone()));

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted: stopping"),
        r = api => { r??; }
    }
    let snapshot = {
        let node = shared.node.lock().map_err(|_| anyhow::anyhow!("node lock poisoned"))?;
        state::capture(&node)
    };
    state::save(&cfg.node.state_dir, &snapshot)?;
    let _ = std::fs::remove_file(&cfg.node.api_socket);
    let dp = shared.data_plane.lock().ok().and_then(|mut d| d.take());
    if let Some(dp) = dp {
        dp.stop();
    }
    Ok(())
}

async fn receive(shared: Arc<Shared>, socket: Arc<UdpSocket>, local: SocketAddr) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        if socket.readable().await.is_err() {
            return;
        }
        let Ok(mut node) = shared.node.lock() else { return };
        // Drain what is ready in one go: one lock and one timer check per burst.
        for _ in 0..256 {
            match socket.try_recv_from(&mut buf) {
                Ok((n, remote)) => node.handle_datagram(Instant::now(), local, remote, &buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    tracing::debug!(error = %e, "receive error");
                    break;
                }
            }
        }
        shared.flush(&mut node);
        drop(node);
        shared.timer.notify_one();
    }
}

async fn timers(shared: Arc<Shared>) {
    loop {
        let next = {
            let Ok(mut node) = shared.node.lock() else { return };
            let now = Instant::now();
            if node.poll_timeout().is_some_and(|t| t <= now) {
                node.handle_timeout(now);
                shared.flush(&mut node);
            }
            while let Some(e) = node.poll_event() {
                if !matches!(e, Event::NoncesChanged) {
                    tracing::debug!(event = ?e);
                }
            }
            node.poll_timeout().unwrap_or(now + Duration::from_secs(1)).min(now + Duration::from_secs(1))
        };
        tokio::select! {
            _ = tokio::time::sleep_until(next.into()) => {}
            _ = shared.timer.notified() => {}
        }
    }
}

/// Writes the replay-protection state when it changed, at most once a second.
async fn persist(shared: Arc<Shared>, dir: std::path::PathBuf) {
    let mut etr_nonce = None;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let snapshot = match shared.node.lock() {
            Ok(mut node) => {
                let ms_dirty = node.map_server_mut().is_some_and(|ms| ms.take_nonces_dirty());
                let etr = node.etr().map(|e| e.last_nonce());
                if !ms_dirty && etr == etr_nonce {
                    continue;
                }
                etr_nonce = etr;
                state::capture(&node)
            }
            Err(_) => return,
        };
        if let Err(e) = state::save(&dir, &snapshot) {
            tracing::warn!(error = %e, "cannot persist nonces");
        }
    }
}
