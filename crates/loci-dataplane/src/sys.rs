//! The system calls that neither the standard library nor socket2 offer: integer socket
//! options by number, `recvmmsg` with the ancillary data that carries the outer header's TTL and
//! TOS and the UDP GRO segment size, and `sendmmsg` with per-message outer TTL, TOS and UDP GSO
//! segment size. The only `unsafe` code of the crate; each block says why it is sound.
#![allow(unsafe_code)]

use std::io::{self, IoSlice};
use std::mem::{size_of, zeroed};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Range;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr;

/// Linux UDP socket options (include/uapi/linux/udp.h), absent from the libc crate for glibc.
pub const UDP_NO_CHECK6_RX: libc::c_int = 102;
/// Send: segment size of a UDP GSO batch (also a control message). Receive: see [`UDP_GRO`].
pub const UDP_SEGMENT: libc::c_int = 103;
/// Receive coalesced datagrams; each `recvmsg` says their segment size in a control message.
pub const UDP_GRO: libc::c_int = 104;

/// Most datagrams one [`recv_batch`] or [`send_batch`] call moves.
pub const BATCH: usize = 16;

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
    /// With [`UDP_GRO`]: the buffer holds datagrams of this size back to back (the last may be
    /// shorter). They share source, TTL and TOS: GRO coalesces only such datagrams.
    pub segment: Option<usize>,
    /// The datagram was longer than the buffer (`MSG_TRUNC`).
    pub truncated: bool,
}

impl Default for RecvMeta {
    fn default() -> Self {
        RecvMeta {
            len: 0,
            src: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
            ttl: None,
            tos: None,
            segment: None,
            truncated: false,
        }
    }
}

/// Room for the control messages we ask for or send (a few `int`s), aligned like `cmsghdr`.
pub type ControlBuf = [u64; 16];

/// Receives up to [`BATCH`] datagrams, one into each of `bufs`, with their metadata in `metas`;
/// blocks (up to the socket's receive timeout) for the first only. Returns how many arrived.
pub fn recv_batch<B: AsMut<[u8]>>(fd: BorrowedFd<'_>, bufs: &mut [B], metas: &mut [RecvMeta]) -> io::Result<usize> {
    let n = bufs.len().min(metas.len()).min(BATCH);
    // SAFETY: all-zero is a valid value of these plain C structs (null pointers, zero lengths).
    let mut addrs: [libc::sockaddr_storage; BATCH] = unsafe { zeroed() };
    let mut controls = [ControlBuf::default(); BATCH];
    // SAFETY: as above.
    let mut iovs: [libc::iovec; BATCH] = unsafe { zeroed() };
    // SAFETY: as above.
    let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
    for i in 0..n {
        let buf = bufs[i].as_mut();
        iovs[i] = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
        let m = &mut hdrs[i].msg_hdr;
        m.msg_name = (&mut addrs[i] as *mut libc::sockaddr_storage).cast();
        m.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        m.msg_iov = &mut iovs[i];
        m.msg_iovlen = 1;
        m.msg_control = controls[i].as_mut_ptr().cast();
        m.msg_controllen = size_of::<ControlBuf>() as _;
    }
    // SAFETY: the first `n` headers point at live, exclusively borrowed buffers (`bufs[i]`,
    // `addrs[i]`, `controls[i]`) with their true lengths; the kernel writes at most that much
    // into each and nothing else. No timeout pointer.
    let got = unsafe {
        libc::recvmmsg(fd.as_raw_fd(), hdrs.as_mut_ptr(), n as libc::c_uint, libc::MSG_WAITFORONE, ptr::null_mut())
    };
    if got < 0 {
        return Err(io::Error::last_os_error());
    }
    let got = got as usize;
    for i in 0..got {
        let msg = &hdrs[i].msg_hdr;
        let src =
            sockaddr_to_std(&addrs[i]).ok_or_else(|| io::Error::other("datagram without an IP source address"))?;
        let mut meta = RecvMeta {
            len: hdrs[i].msg_len as usize,
            src,
            truncated: msg.msg_flags & libc::MSG_TRUNC != 0,
            ..RecvMeta::default()
        };
        // SAFETY: `msg` is a header the kernel just filled in; its control pointer and length
        // describe `controls[i]`, and the CMSG_* macros stay within that length.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(msg);
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
                    (libc::SOL_UDP, UDP_GRO) => meta.segment = usize::try_from(int()).ok().filter(|&s| s > 0),
                    _ => {}
                }
                c = libc::CMSG_NXTHDR(msg, c);
            }
        }
        metas[i] = meta;
    }
    Ok(got)
}

/// One datagram (or UDP GSO batch of datagrams) to send: its payload is the concatenation of
/// `iov`, the outer header gets `ttl` and `tos`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendMsg {
    pub dst: SocketAddr,
    /// Which slices of the caller's `IoSlice` list make up the payload.
    pub iov: Range<usize>,
    pub ttl: u8,
    pub tos: u8,
    /// UDP GSO: the kernel cuts the payload into datagrams of this size (the last may be
    /// shorter).
    pub segment: Option<u16>,
}

/// Sends up to [`BATCH`] of `msgs` in one `sendmmsg`; returns how many were sent (at least
/// one), or the error of the first.
pub fn send_batch(fd: BorrowedFd<'_>, msgs: &[SendMsg], iov: &[IoSlice<'_>]) -> io::Result<usize> {
    let n = msgs.len().min(BATCH);
    // SAFETY: all-zero is a valid value of these plain C structs.
    let mut addrs: [libc::sockaddr_storage; BATCH] = unsafe { zeroed() };
    let mut controls = [ControlBuf::default(); BATCH];
    // SAFETY: as above.
    let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
    for (i, m) in msgs[..n].iter().enumerate() {
        let slices = iov.get(m.iov.clone()).ok_or_else(|| io::Error::other("message outside the I/O vector"))?;
        let h = &mut hdrs[i].msg_hdr;
        h.msg_namelen = std_to_sockaddr(m.dst, &mut addrs[i]);
        h.msg_name = (&mut addrs[i] as *mut libc::sockaddr_storage).cast();
        // `IoSlice` is ABI-compatible with `iovec` on Unix (documented); the kernel only reads.
        h.msg_iov = slices.as_ptr() as *mut libc::iovec;
        h.msg_iovlen = slices.len() as _;
        let v6 = m.dst.is_ipv6();
        let ttl = libc::c_int::from(m.ttl.max(1));
        let tos = libc::c_int::from(m.tos);
        let mut cmsgs = ControlWriter::new(&mut controls[i]);
        if v6 {
            cmsgs.push(libc::IPPROTO_IPV6, libc::IPV6_HOPLIMIT, &ttl.to_ne_bytes());
            cmsgs.push(libc::IPPROTO_IPV6, libc::IPV6_TCLASS, &tos.to_ne_bytes());
        } else {
            cmsgs.push(libc::IPPROTO_IP, libc::IP_TTL, &ttl.to_ne_bytes());
            cmsgs.push(libc::IPPROTO_IP, libc::IP_TOS, &tos.to_ne_bytes());
        }
        if let Some(seg) = m.segment {
            cmsgs.push(libc::SOL_UDP, UDP_SEGMENT, &seg.to_ne_bytes());
        }
        let used = cmsgs.len;
        h.msg_control = controls[i].as_mut_ptr().cast();
        h.msg_controllen = used as _;
    }
    // SAFETY: the first `n` headers point at live buffers with their true lengths: `addrs[i]`,
    // `controls[i]` (filled up to `msg_controllen`) and the caller's slices, which the kernel
    // only reads.
    let sent = unsafe { libc::sendmmsg(fd.as_raw_fd(), hdrs.as_mut_ptr(), n as libc::c_uint, 0) };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(sent as usize)
}

/// Appends control messages to a [`ControlBuf`].
struct ControlWriter<'a> {
    buf: &'a mut ControlBuf,
    len: usize,
}

impl<'a> ControlWriter<'a> {
    fn new(buf: &'a mut ControlBuf) -> Self {
        ControlWriter { buf, len: 0 }
    }

    /// Three small messages fit in a [`ControlBuf`]; anything beyond its size is a bug.
    fn push(&mut self, level: libc::c_int, ty: libc::c_int, data: &[u8]) {
        let data_len = data.len() as libc::c_uint;
        // SAFETY: CMSG_SPACE and CMSG_LEN are pure arithmetic.
        let (space, len, head) = unsafe {
            (libc::CMSG_SPACE(data_len) as usize, libc::CMSG_LEN(data_len) as usize, libc::CMSG_LEN(0) as usize)
        };
        assert!(self.len + space <= size_of::<ControlBuf>(), "control buffer too small");
        // SAFETY: all-zero is a valid cmsghdr.
        let mut hdr: libc::cmsghdr = unsafe { zeroed() };
        hdr.cmsg_len = len as _;
        hdr.cmsg_level = level;
        hdr.cmsg_type = ty;
        let base = self.buf.as_mut_ptr().cast::<u8>();
        // SAFETY: `self.len + space` bytes fit in the buffer (checked above), and `space`
        // covers the header and the data; unaligned writes need no alignment.
        unsafe {
            ptr::write_unaligned(base.add(self.len).cast::<libc::cmsghdr>(), hdr);
            ptr::copy_nonoverlapping(data.as_ptr(), base.add(self.len + head), data.len());
        }
        self.len += space;
    }
}

fn std_to_sockaddr(a: SocketAddr, out: &mut libc::sockaddr_storage) -> libc::socklen_t {
    match a {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for any sockaddr, and
            // all-zero is a valid sockaddr_in.
            let s = unsafe { &mut *(out as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            s.sin_family = libc::AF_INET as libc::sa_family_t;
            s.sin_port = a.port().to_be();
            s.sin_addr = libc::in_addr { s_addr: u32::from(*a.ip()).to_be() };
            size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            // SAFETY: as above, for sockaddr_in6.
            let s = unsafe { &mut *(out as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            s.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            s.sin6_port = a.port().to_be();
            s.sin6_addr = libc::in6_addr { s6_addr: a.ip().octets() };
            s.sin6_flowinfo = a.flowinfo();
            s.sin6_scope_id = a.scope_id();
            size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsFd;
    use std::time::Duration;

    /// Over loopback: a GSO batch of three datagrams arrives as three (or, with GRO, one
    /// coalesced buffer of segment-sized pieces), with the TTL and TOS we asked for.
    #[test]
    fn gso_send_and_batch_receive_over_loopback() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        set_int_option(rx.as_fd(), libc::IPPROTO_IP, libc::IP_RECVTTL, 1).unwrap();
        set_int_option(rx.as_fd(), libc::IPPROTO_IP, libc::IP_RECVTOS, 1).unwrap();
        let gro = set_int_option(rx.as_fd(), libc::SOL_UDP, UDP_GRO, 1).is_ok();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let (a, b, c) = ([1u8; 100], [2u8; 100], [3u8; 40]);
        let iov = [IoSlice::new(&a), IoSlice::new(&b), IoSlice::new(&c)];
        let msg = SendMsg { dst: rx.local_addr().unwrap(), iov: 0..3, ttl: 9, tos: 0x2a, segment: Some(100) };
        if send_batch(tx.as_fd(), std::slice::from_ref(&msg), &iov).is_err() {
            eprintln!("no UDP GSO here; skipped");
            return;
        }
        let mut bufs = vec![vec![0u8; 65536]; 4];
        let mut metas = [RecvMeta::default(); 4];
        let mut pieces = Vec::new();
        while pieces.len() < 3 {
            let n = recv_batch(rx.as_fd(), &mut bufs, &mut metas).unwrap();
            for (buf, m) in bufs.iter().zip(&metas).take(n) {
                assert_eq!((m.ttl, m.tos, m.src), (Some(9), Some(0x2a), tx.local_addr().unwrap()));
                assert!(!m.truncated);
                let seg = m.segment.unwrap_or(m.len);
                assert!(gro || m.segment.is_none());
                pieces.extend(buf[..m.len].chunks(seg).map(<[u8]>::to_vec));
            }
        }
        assert_eq!(pieces, [a.to_vec(), b.to_vec(), c.to_vec()]);
    }

    #[test]
    fn batches_of_plain_datagrams_with_ipv6() {
        let Ok(rx) = UdpSocket::bind("[::1]:0") else { return };
        rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        set_int_option(rx.as_fd(), libc::IPPROTO_IPV6, libc::IPV6_RECVHOPLIMIT, 1).unwrap();
        set_int_option(rx.as_fd(), libc::IPPROTO_IPV6, libc::IPV6_RECVTCLASS, 1).unwrap();
        let tx = UdpSocket::bind("[::1]:0").unwrap();
        let data: Vec<[u8; 10]> = (0..5u8).map(|i| [i; 10]).collect();
        let iov: Vec<IoSlice> = data.iter().map(|d| IoSlice::new(d)).collect();
        let msgs: Vec<SendMsg> = (0..5)
            .map(|i| SendMsg { dst: rx.local_addr().unwrap(), iov: i..i + 1, ttl: 3 + i as u8, tos: 4, segment: None })
            .collect();
        assert_eq!(send_batch(tx.as_fd(), &msgs, &iov).unwrap(), 5);
        let mut bufs = vec![vec![0u8; 100]; 8];
        let mut metas = [RecvMeta::default(); 8];
        let mut got = 0;
        while got < 5 {
            let n = recv_batch(rx.as_fd(), &mut bufs[got..], &mut metas[got..]).unwrap();
            got += n;
        }
        for i in 0..5 {
            assert_eq!(&bufs[i][..metas[i].len], &data[i]);
            assert_eq!((metas[i].ttl, metas[i].tos), (Some(3 + i as u8), Some(4)));
        }
        let bad = SendMsg { iov: 4..9, ..msgs[0].clone() };
        assert!(send_batch(tx.as_fd(), &[bad], &iov).is_err());
    }
}
