//! `loci run`: drives a sans-IO [`Node`] from UDP sockets, a timer and the API.
//!
//! One thread per control socket takes every datagram that is ready in one `recvmmsg`, hands
//! them to the node and sends what the node emits with `sendmmsg`; a timer task fires the
//! node's timers; the API reads snapshots. The node sits behind a mutex that is never held
//! across an await or a blocking wait.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use loci_core::node::{Event, Node, Transmit};
use tokio::sync::Notify;

use crate::config::DaemonConfig;
use crate::{api, metrics, mobility, state, sys, underlay, xtr};

/// Largest datagram we accept (a LISP control message is far smaller).
const MAX_DATAGRAM: usize = 9216;
/// Receive buffer asked for on each control socket.
const RECV_BUFFER: usize = 4 << 20;

/// One bound control address. The socket blocks: its receive thread waits in `recvmmsg`. Sends
/// never wait (`MSG_DONTWAIT`): they only fail when the socket buffer is full, so the first
/// datagram after binding goes out (tokio's `try_send_to` lost it until its reactor had seen
/// the socket writable).
pub struct ControlSocket {
    pub local: SocketAddr,
    socket: std::net::UdpSocket,
}

impl ControlSocket {
    /// Binds `addr`. IPv6 sockets are IPv6-only, so `0.0.0.0` and `::` can share the port
    /// (Linux makes `::` dual-stack by default, and then the second bind fails). Bound to the
    /// unspecified address, the socket reports each datagram's destination: which of our
    /// addresses was asked (an RLOC probe names the locator probed by it).
    fn bind(addr: SocketAddr) -> std::io::Result<Self> {
        let s = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::DGRAM, None)?;
        if addr.is_ipv6() {
            s.set_only_v6(true)?;
        }
        if addr.ip().is_unspecified() {
            sys::want_destinations(s.as_fd(), addr.is_ipv6())?;
        }
        // Room for bursts (many ETRs registering at once): the default ~200 datagrams overflow
        // while a batch is handled. The kernel caps it at net.core.rmem_max.
        if let Err(e) = s.set_recv_buffer_size(RECV_BUFFER) {
            tracing::debug!(%addr, error = %e, "cannot enlarge the receive buffer");
        }
        s.bind(&addr.into())?;
        let socket: std::net::UdpSocket = s.into();
        Ok(ControlSocket { local: socket.local_addr()?, socket })
    }

    fn wildcard(&self) -> bool {
        self.local.ip().is_unspecified()
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
    /// Host mobility (detection, host routes), when dynamic-EID ranges are configured.
    pub mobility: Option<mobility::Mobility>,
    /// When the timer task looks at the node next, in nanoseconds since `started`; written and
    /// read under the node lock, so a receive thread wakes the task only when it must.
    timer_at: AtomicU64,
}

impl Shared {
    /// Sends everything the node has queued, from the socket bound to the requested source (or
    /// the first of the destination's family), in batches per socket.
    pub fn flush(&self, node: &mut Node) {
        let mut queued: Vec<(usize, Transmit)> = Vec::new();
        while let Some(t) = node.poll_transmit() {
            if t.dst.ip().is_multicast() {
                // A map-notify-group: out of the site interfaces that joined it.
                if !self.mobility.as_ref().is_some_and(|m| m.send_group(&t)) {
                    tracing::debug!(dst = %t.dst, "no interface joined this group");
                }
                continue;
            }
            let socket = self
                .sockets
                .iter()
                .position(|s| Some(s.local.ip()) == t.src)
                .or_else(|| self.sockets.iter().position(|s| s.local.is_ipv4() == t.dst.is_ipv4()));
            match socket {
                Some(i) => queued.push((i, t)),
                None => tracing::debug!(dst = %t.dst, "no socket of that address family"),
            }
        }
        for (i, s) in self.sockets.iter().enumerate() {
            // From a wildcard socket, each reply leaves from the address its request came to
            // (the node's `src`), not from whichever the kernel would pick.
            let wildcard = s.wildcard();
            let msgs: Vec<(Option<IpAddr>, SocketAddr, &[u8])> = queued
                .iter()
                .filter(|(j, _)| *j == i)
                .map(|(_, t)| (t.src.filter(|a| wildcard && !a.is_unspecified()), t.dst, t.data.as_slice()))
                .collect();
            let mut refused = Vec::new();
            sys::send_batch_from(s.socket.as_fd(), &msgs, |j, e| {
                tracing::debug!(dst = %msgs[j].1, src = ?msgs[j].0, error = %e, "send failed");
                refused.push(j);
            });
            // A source that is not (or no longer) ours: sent as before, from the kernel's choice.
            let again: Vec<(SocketAddr, &[u8])> =
                refused.iter().filter(|&&j| msgs[j].0.is_some()).map(|&j| (msgs[j].1, msgs[j].2)).collect();
            sys::send_batch(
                s.socket.as_fd(),
                &again,
                |j, e| tracing::debug!(dst = %again[j].0, error = %e, "send failed"),
            );
        }
    }

    /// Wakes the timer task if the node wants it before it planned to look. Call with the node
    /// locked.
    pub fn wake_timer_for(&self, node: &Node) {
        let due = node.poll_timeout().map_or(u64::MAX, |t| self.nanos(t));
        if due < self.timer_at.load(Ordering::Relaxed) {
            self.timer.notify_one();
        }
    }

    fn nanos(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.started).as_nanos().try_into().unwrap_or(u64::MAX)
    }
}

impl Shared {
    /// Logs what changed (nonce changes are persisted in batches, not logged) and hands host
    /// mobility events to their thread. Call with the node locked.
    pub fn events(&self, node: &mut Node) {
        while let Some(e) = node.poll_event() {
            if let Some(m) = &self.mobility {
                m.on_event(&e);
            }
            if !matches!(e, Event::NoncesChanged) {
                tracing::debug!(event = ?e);
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
    let metrics_listener = match cfg.node.metrics {
        Some(addr) => Some(metrics::bind(addr).await?),
        None => None,
    };
    let mut node = Node::new(core, rand::random(), Instant::now());
    state::restore(&mut node, &saved);
    let (mobility, mobility_queues, away) = match mobility::start(&cfg, &node)? {
        Some((m, q, a)) => (Some(m), Some(q), Some(a)),
        None => (None, None, None),
    };
    let (data_plane, misses, status_bits) = match &cfg.data_plane {
        Some(dp) => {
            let (dp, rx, status) = xtr::start(dp, &node, away)?;
            (Some(dp), Some(rx), status)
        }
        None => (None, None, None),
    };
    let shared = Arc::new(Shared {
        node: Mutex::new(node),
        sockets,
        timer: Notify::new(),
        started: Instant::now(),
        data_plane: Mutex::new(data_plane),
        mobility,
        timer_at: AtomicU64::new(0),
    });
    tracing::info!(name = %cfg.node.name, listen = ?cfg.node.listen, port = cfg.node.control_port, "loci running");

    for (i, socket) in shared.sockets.iter().enumerate() {
        let shared = shared.clone();
        // The threads end with the process: they hold nothing that needs saving.
        std::thread::Builder::new()
            .name(format!("loci-rx {}", socket.local))
            .spawn(move || receive(&shared, i))
            .context("cannot start a receive thread")?;
    }
    tokio::spawn(timers(shared.clone()));
    if let Some(rx) = misses {
        tokio::spawn(xtr::misses(shared.clone(), rx));
    }
    if let Some(q) = mobility_queues {
        mobility::spawn(&shared, q);
    }
    if let Some(rx) = status_bits {
        tokio::spawn(xtr::status_bits(shared.clone(), rx));
    }
    if cfg.data_plane.is_some() {
        underlay::start(&shared);
    }
    tokio::spawn(persist(shared.clone(), cfg.node.state_dir.clone()));
    let api = tokio::spawn(api::serve(shared.clone(), cfg.node.api_socket.clone()));
    if let Some(listener) = metrics_listener {
        tracing::info!(addr = ?listener.local_addr().ok(), "metrics on /metrics");
        let shared = shared.clone();
        tokio::spawn(async move {
            if let Err(e) = metrics::serve(shared, listener).await {
                tracing::warn!(error = %e, "metrics listener stopped");
            }
        });
    }

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
    if let Some(m) = &shared.mobility {
        m.shutdown();
    }
    Ok(())
}

/// Receives on socket `i` until the process ends.
fn receive(shared: &Shared, i: usize) {
    let socket = &shared.sockets[i];
    let mut batch = if socket.wildcard() {
        sys::RecvBatch::with_destinations(MAX_DATAGRAM)
    } else {
        sys::RecvBatch::new(MAX_DATAGRAM)
    };
    loop {
        match batch.recv(socket.socket.as_fd()) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::debug!(error = %e, "receive error");
                // Whatever it is, do not spin on it.
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        }
        let Ok(mut node) = shared.node.lock() else { return };
        // One clock read per batch: its datagrams were queued within microseconds.
        let now = Instant::now();
        for (remote, dst, data) in batch.iter_with_destinations() {
            // The address the datagram was sent to (on a wildcard socket), else the bound one.
            let local = dst.map_or(socket.local, |ip| SocketAddr::new(ip, socket.local.port()));
            if let Some(remote) = remote {
                node.handle_datagram(now, local, remote, data);
            }
        }
        shared.flush(&mut node);
        shared.events(&mut node);
        shared.wake_timer_for(&node);
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
            shared.events(&mut node);
            let next = node.poll_timeout().unwrap_or(now + Duration::from_secs(1)).min(now + Duration::from_secs(1));
            shared.timer_at.store(shared.nanos(next), Ordering::Relaxed);
            next
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
