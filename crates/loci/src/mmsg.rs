//! Batched UDP receive and send (`recvmmsg`, `sendmmsg`): one system call for up to [`BATCH`]
//! datagrams, whatever their peers. On loopback a Map-Server spends most of its time in system
//! calls, so this is where its request rate comes from.
//!
//! The only `unsafe` code of the crate; each block says why it is sound.
#![allow(unsafe_code)]

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, BorrowedFd};

/// Datagrams per system call.
pub const BATCH: usize = 64;

/// Buffers for one `recvmmsg`: [`BATCH`] datagrams of up to `max` bytes each.
pub struct RecvBatch {
    max: usize,
    bufs: Vec<u8>,
    addrs: Vec<libc::sockaddr_storage>,
    lens: Vec<usize>,
    count: usize,
}

impl RecvBatch {
    pub fn new(max: usize) -> Self {
        RecvBatch {
            max,
            bufs: vec![0; max * BATCH],
            // SAFETY: all-zero is a valid value of this plain C struct.
            addrs: vec![unsafe { zeroed() }; BATCH],
            lens: vec![0; BATCH],
            count: 0,
        }
    }

    /// Waits for one datagram (as the socket's blocking mode and timeout say), then takes every
    /// other one already queued, up to [`BATCH`]. Returns how many there are. Datagrams longer
    /// than `max` are cut to `max` bytes.
    pub fn recv(&mut self, fd: BorrowedFd<'_>) -> io::Result<usize> {
        self.count = 0;
        let mut iovs: Vec<libc::iovec> = self
            .bufs
            .chunks_exact_mut(self.max)
            .map(|b| libc::iovec { iov_base: b.as_mut_ptr().cast(), iov_len: b.len() })
            .collect();
        let mut hdrs: Vec<libc::mmsghdr> = iovs
            .iter_mut()
            .zip(self.addrs.iter_mut())
            .map(|(iov, addr)| {
                // SAFETY: all-zero is a valid value of this plain C struct.
                let mut h: libc::mmsghdr = unsafe { zeroed() };
                h.msg_hdr.msg_name = (addr as *mut libc::sockaddr_storage).cast();
                h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                h.msg_hdr.msg_iov = iov;
                h.msg_hdr.msg_iovlen = 1;
                h
            })
            .collect();
        // SAFETY: every header points at an iovec, a buffer and an address that live until the
        // call returns and whose sizes are the ones given; the kernel writes within them only.
        let n = unsafe {
            libc::recvmmsg(
                fd.as_raw_fd(),
                hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        self.count = n as usize;
        for (len, h) in self.lens.iter_mut().zip(&hdrs[..self.count]) {
            *len = (h.msg_len as usize).min(self.max);
        }
        Ok(self.count)
    }

    /// The datagrams of the last [`RecvBatch::recv`] with their sources (`None` for an address
    /// family other than IPv4 and IPv6, which a UDP socket never reports).
    pub fn iter(&self) -> impl Iterator<Item = (Option<SocketAddr>, &[u8])> + '_ {
        (0..self.count).map(|i| (to_std(&self.addrs[i]), &self.bufs[i * self.max..i * self.max + self.lens[i]]))
    }
}

/// Sends each `(destination, payload)` without blocking, [`BATCH`] to a system call. A datagram
/// the kernel refuses (a full socket buffer included) is skipped and reported to `failed` with
/// its index in `msgs`; the rest still go.
pub fn send_batch(fd: BorrowedFd<'_>, msgs: &[(SocketAddr, &[u8])], mut failed: impl FnMut(usize, io::Error)) {
    let mut rest = msgs;
    while !rest.is_empty() {
        let at = msgs.len() - rest.len();
        let chunk = &rest[..rest.len().min(BATCH)];
        let mut addrs: Vec<(libc::sockaddr_storage, libc::socklen_t)> =
            chunk.iter().map(|(a, _)| from_std(a)).collect();
        let mut iovs: Vec<libc::iovec> = chunk
            .iter()
            // The kernel only reads through iov_base on send; the pointer is mutable by type only.
            .map(|(_, d)| libc::iovec { iov_base: d.as_ptr() as *mut libc::c_void, iov_len: d.len() })
            .collect();
        let mut hdrs: Vec<libc::mmsghdr> = iovs
            .iter_mut()
            .zip(addrs.iter_mut())
            .map(|(iov, (addr, len))| {
                // SAFETY: all-zero is a valid value of this plain C struct.
                let mut h: libc::mmsghdr = unsafe { zeroed() };
                h.msg_hdr.msg_name = (addr as *mut libc::sockaddr_storage).cast();
                h.msg_hdr.msg_namelen = *len;
                h.msg_hdr.msg_iov = iov;
                h.msg_hdr.msg_iovlen = 1;
                h
            })
            .collect();
        // SAFETY: every header points at an iovec, a payload and an address that live until the
        // call returns and whose sizes are the ones given; the kernel only reads them.
        let n = unsafe {
            libc::sendmmsg(fd.as_raw_fd(), hdrs.as_mut_ptr(), chunk.len() as libc::c_uint, libc::MSG_DONTWAIT)
        };
        match n {
            n if n > 0 => rest = &rest[n as usize..],
            _ => {
                // The first datagram of the chunk failed: report it and go on with the next.
                let e = if n == 0 { io::Error::from(io::ErrorKind::WriteZero) } else { io::Error::last_os_error() };
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                failed(at, e);
                rest = &rest[1..];
            }
        }
    }
}

fn to_std(a: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match libc::c_int::from(a.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in, which it is large and
            // aligned enough for.
            let a = unsafe { &*(a as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(a.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let a = unsafe { &*(a as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(ip, u16::from_be(a.sin6_port), a.sin6_flowinfo, a.sin6_scope_id)))
        }
        _ => None,
    }
}

fn from_std(a: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid value of these plain C structs.
    let mut storage: libc::sockaddr_storage = unsafe { zeroed() };
    let len = match a {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for any sockaddr.
            let sin = unsafe { &mut *(&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr.s_addr = u32::from(*a.ip()).to_be();
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            // SAFETY: as above.
            let sin6 = unsafe { &mut *(&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_addr.s6_addr = a.ip().octets();
            sin6.sin6_scope_id = a.scope_id();
            size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsFd;
    use std::time::Duration;

    #[test]
    fn addresses_round_trip() {
        for s in ["127.0.0.1:4342", "[::1]:9", "[2001:db8::1%3]:65535", "0.0.0.0:0"] {
            let a: SocketAddr = s.parse().unwrap();
            assert_eq!(to_std(&from_std(&a).0), Some(a), "{s}");
        }
        // SAFETY: all-zero is a valid value of this plain C struct.
        let unspec: libc::sockaddr_storage = unsafe { zeroed() };
        assert_eq!(to_std(&unspec), None);
    }

    #[test]
    fn a_batch_goes_and_comes_back_whole() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = rx.local_addr().unwrap();
        // More than one batch, of different sizes, one longer than the receive buffers.
        let payloads: Vec<Vec<u8>> =
            (0..BATCH + 10).map(|i| vec![i as u8; 1 + i % 7 + if i == 3 { 100 } else { 0 }]).collect();
        let msgs: Vec<(SocketAddr, &[u8])> = payloads.iter().map(|p| (to, p.as_slice())).collect();
        let mut failures = 0;
        send_batch(tx.as_fd(), &msgs, |_, _| failures += 1);
        assert_eq!(failures, 0);
        let mut batch = RecvBatch::new(64);
        let mut got = Vec::new();
        while got.len() < payloads.len() {
            assert!(batch.recv(rx.as_fd()).unwrap() > 0);
            got.extend(batch.iter().map(|(from, d)| {
                assert_eq!(from, Some(tx.local_addr().unwrap()));
                d.to_vec()
            }));
        }
        let mut expected = payloads.clone();
        expected[3].truncate(64);
        assert_eq!(got, expected);
    }

    #[test]
    fn refused_datagrams_are_reported_and_skipped() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let (to, v6) = (rx.local_addr().unwrap(), "[::1]:9".parse().unwrap());
        let msgs: Vec<(SocketAddr, &[u8])> = vec![(v6, b"a"), (to, b"b"), (v6, b"c"), (to, b"d")];
        let mut failed = Vec::new();
        send_batch(tx.as_fd(), &msgs, |i, _| failed.push(msgs[i].0));
        assert_eq!(failed, [v6, v6], "an IPv4 socket cannot send to IPv6");
        let mut batch = RecvBatch::new(16);
        let mut got = Vec::new();
        while got.len() < 2 {
            batch.recv(rx.as_fd()).unwrap();
            got.extend(batch.iter().map(|(_, d)| d.to_vec()));
        }
        assert_eq!(got, [b"b".to_vec(), b"d".to_vec()]);
    }
}
