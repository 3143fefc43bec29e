//! TUN devices and the routes into them.

use std::process::Command;

use ipnet::IpNet;
use tun_rs::{DeviceBuilder, SyncDevice};

use crate::Error;

/// Packets the kernel queues for the ITR worker before it drops (and counts, as TX drops).
const TX_QUEUE_LEN: u32 = 4096;

/// Creates (or reuses) the TUN device `name` with `mtu`, up, without packet information
/// headers, with virtio-net header offload where the kernel has it (TSO/GSO super-packets in
/// both directions: tun-rs's `recv_multiple` splits them, `send_multiple` coalesces),
/// non-blocking (workers wait in `wait_readable_intr`, which a stop can interrupt).
pub fn open(name: &str, mtu: u16) -> Result<SyncDevice, Error> {
    let err = |source| Error::Tun { name: name.to_string(), source };
    // A longer queue than the default 500 rides out bursts while the ITR worker is descheduled.
    let build = |offload: bool| {
        DeviceBuilder::new().name(name).mtu(mtu).tx_queue_len(TX_QUEUE_LEN).offload(offload).enable(true).build_sync()
    };
    let dev = match build(true) {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(tun = name, error = %e, "no TUN offload; one packet per system call");
            build(false).map_err(err)?
        }
    };
    dev.set_nonblocking(true).map_err(err)?;
    Ok(dev)
}

/// Routes `route` into the TUN device `tun` (replacing a route to the same prefix), in `table`
/// or the main table.
pub fn add_route(tun: &str, route: &IpNet, table: Option<u32>) -> Result<(), Error> {
    let family = if matches!(route, IpNet::V4(_)) { "-4" } else { "-6" };
    let table = table.map_or("main".to_string(), |t| t.to_string());
    let out = Command::new("ip")
        .args([family, "route", "replace", &route.to_string(), "dev", tun, "table", &table])
        .output()
        .map_err(|e| Error::Route { route: *route, tun: tun.into(), reason: format!("cannot run `ip`: {e}") })?;
    if !out.status.success() {
        let reason = String::from_utf8_lossy(&out.stderr).trim().to_string();
        return Err(Error::Route { route: *route, tun: tun.into(), reason });
    }
    Ok(())
}
