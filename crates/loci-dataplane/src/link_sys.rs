//! `AF_PACKET` sockets bound to one interface: what host-mobility detection reads frames from
//! and sends ARP/ND on. socket2 creates the socket but builds no `sockaddr_ll`, so binding it
//! and reading the link-layer address of a frame are done here (the crate's other `unsafe`
//! module next to `sys`); each block says why it is sound.
#![allow(unsafe_code)]

use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, BorrowedFd};

/// Every protocol (`ETH_P_ALL`), in network byte order as `socket(2)` and `bind(2)` want it.
pub fn eth_p_all() -> u16 {
    (libc::ETH_P_ALL as u16).to_be()
}

/// Binds a packet socket to interface `ifindex`: it then receives that interface's frames
/// only, and `send` goes out there.
pub fn bind_packet(fd: BorrowedFd<'_>, ifindex: u32) -> io::Result<()> {
    // SAFETY: all-zero is a valid `sockaddr_ll`.
    let mut sll: libc::sockaddr_ll = unsafe { zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = eth_p_all();
    sll.sll_ifindex = ifindex as i32;
    // SAFETY: `sll` lives across the call and its exact size is passed; the kernel only reads it.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast(),
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `PACKET_OUTGOING`: a frame this host sent (packet sockets see both directions).
pub const PACKET_OUTGOING: u8 = 4;

/// Receives one frame into `buf`: its length and packet type (`PACKET_HOST`, `_BROADCAST`,
/// `_OTHERHOST`, `_OUTGOING`, ...).
pub fn recv_frame(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<(usize, u8)> {
    // SAFETY: all-zero is a valid `sockaddr_ll`.
    let mut sll: libc::sockaddr_ll = unsafe { zeroed() };
    let mut len = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    // SAFETY: `buf` and `sll` are valid for writes of the lengths passed and outlive the call.
    let n = unsafe {
        libc::recvfrom(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            0,
            (&mut sll as *mut libc::sockaddr_ll).cast(),
            &mut len,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((n as usize, sll.sll_pkttype))
}
