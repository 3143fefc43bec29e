//! The system calls that neither the standard library nor socket2 offer: integer socket
//! options by number, and `recvmsg` with the ancillary data that carries the outer header's TTL
//! and TOS. The only `unsafe` code of the crate; each block says why it is sound.
#![allow(unsafe_code)]

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, BorrowedFd};

/// Linux UDP socket options (include/uapi/linux/udp.h), absent from the libc crate for glibc.
pub const UDP_NO_CHECK6_RX: libc::c_int = 102;

/// Sets an integer socket option.
pub fn set_int_option(fd: BorrowedFd<'_>, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: `value` lives across the call and its exact size is passed; the kernel only reads it.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// What `recvmsg` says about one datagram besides its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecvMeta {
    pub len: usize,
    pub src: SocketAddr,
    /// Outer TTL / hop limit (`IP_RECVTTL` / `IPV6_RECVHOPLIMIT` must be on).
    pub ttl: Option<u8>,
    /// Outer TOS / traffic class (`IP_RECVTOS` / `IPV6_RECVTCLASS` must be on).
    pub tos: Option<u8>,
    /// The datagram was longer than the buffer (`MSG_TRUNC`).
    pub truncated: bool,
}

/// Room for the control messages we ask for (a few `int`s), aligned like `cmsghdr`.
pub type ControlBuf = [u64; 16];

/// Receives one datagram into `buf` with its source address and outer TTL and TOS.
pub fn recv_with_meta(fd: BorrowedFd<'_>, buf: &mut [u8], control: &mut ControlBuf) -> io::Result<RecvMeta> {
    // SAFETY: all-zero is a valid value of these plain C structs.
    let mut addr: libc::sockaddr_storage = unsafe { zeroed() };
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    // SAFETY: as above.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_name = (&mut addr as *mut libc::sockaddr_storage).cast();
    msg.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = size_of::<ControlBuf>() as _;
    // SAFETY: every pointer in `msg` refers to a live, exclusively borrowed buffer whose length is
    // the one given; the kernel writes at most that many bytes into each.
    let n = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut msg, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let src = sockaddr_to_std(&addr).ok_or_else(|| io::Error::other("datagram without an IP source address"))?;
    let mut meta =
        RecvMeta { len: n as usize, src, ttl: None, tos: None, truncated: msg.msg_flags & libc::MSG_TRUNC != 0 };
    // SAFETY: `msg` is the header the kernel just filled in; its control pointer and length
    // describe `control`, and the CMSG_* macros stay within that length.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            let h = &*c;
            let data = libc::CMSG_DATA(c);
            let int = || (data as *const libc::c_int).read_unaligned();
            match (h.cmsg_level, h.cmsg_type) {
                (libc::IPPROTO_IP, libc::IP_TTL) => meta.ttl = Some(int() as u8),
                // IP_TOS comes as one byte, the IPv6 values as ints.
                (libc::IPPROTO_IP, libc::IP_TOS) => meta.tos = Some(*data),
                (libc::IPPROTO_IPV6, libc::IPV6_HOPLIMIT) => meta.ttl = Some(int() as u8),
                (libc::IPPROTO_IPV6, libc::IPV6_TCLASS) => meta.tos = Some(int() as u8),
                _ => {}
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok(meta)
}

fn sockaddr_to_std(a: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match libc::c_int::from(a.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in, which it is large and
            // aligned enough for.
            let s = unsafe { &*(a as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(s.sin_addr.s_addr));
            Some(SocketAddr::new(IpAddr::V4(ip), u16::from_be(s.sin_port)))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let s = unsafe { &*(a as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(s.sin6_addr.s6_addr);
            Some(SocketAddr::new(IpAddr::V6(ip), u16::from_be(s.sin6_port)))
        }
        _ => None,
    }
}
