//! The system calls the standard library lacks. Batched UDP receive and send (`recvmmsg`,
//! `sendmmsg`): one system call for up to [`BATCH`] datagrams, whatever their peers (on
//! loopback a Map-Server spends most of its time in system calls); on a socket bound to the
//! unspecified address, with each datagram's destination address and the source address of
//! each reply (`IP_PKTINFO` / `IPV6_PKTINFO`). For the load generator, UDP
//! segmentation offload (many same-size datagrams to one peer in one send) and a fine timer
//! slack for its pacing.
//!
//! The only `unsafe` code of the crate; each block says why it is sound.
#![allow(unsafe_code)]

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, BorrowedFd};

/// Datagrams per system call.
pub const BATCH: usize = 64;

/// Room for one `in6_pktinfo` or `in_pktinfo` control message, aligned like `cmsghdr`.
type PktInfoBuf = [u64; 8];

/// Buffers for one `recvmmsg`: [`BATCH`] datagrams of up to `max` bytes each.
pub struct RecvBatch {
    max: usize,
    bufs: Vec<u8>,
    addrs: Vec<libc::sockaddr_storage>,
    lens: Vec<usize>,
    count: usize,
    /// One per datagram when destinations are wanted ([`RecvBatch::with_destinations`]).
    controls: Vec<PktInfoBuf>,
    dsts: Vec<Option<IpAddr>>,
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
            controls: Vec::new(),
            dsts: vec![None; BATCH],
        }
    }

    /// Also takes each datagram's destination address, which a socket bound to the unspecified
    /// address reports once [`want_destinations`] is on.
    pub fn with_destinations(max: usize) -> Self {
        RecvBatch { controls: vec![PktInfoBuf::default(); BATCH], ..RecvBatch::new(max) }
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
        for (h, c) in hdrs.iter_mut().zip(self.controls.iter_mut()) {
            h.msg_hdr.msg_control = c.as_mut_ptr().cast();
            h.msg_hdr.msg_controllen = size_of::<PktInfoBuf>();
        }
        // SAFETY: every header points at an iovec, a buffer, an address and (when asked for) a
        // control buffer that live until the call returns and whose sizes are the ones given;
        // the kernel writes within them only.
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
        for (i, h) in hdrs[..self.count].iter().enumerate() {
            self.lens[i] = (h.msg_len as usize).min(self.max);
            // SAFETY: the kernel filled in this header; with no control buffer its length is 0.
            self.dsts[i] = if self.controls.is_empty() { None } else { unsafe { pktinfo_destination(&h.msg_hdr) } };
        }
        Ok(self.count)
    }

    /// The datagrams of the last [`RecvBatch::recv`] with their sources (`None` for an address
    /// family other than IPv4 and IPv6, which a UDP socket never reports).
    pub fn iter(&self) -> impl Iterator<Item = (Option<SocketAddr>, &[u8])> + '_ {
        self.iter_with_destinations().map(|(src, _, data)| (src, data))
    }

    /// The same with each datagram's destination address, when it was asked for and reported.
    pub fn iter_with_destinations(&self) -> impl Iterator<Item = (Option<SocketAddr>, Option<IpAddr>, &[u8])> + '_ {
        (0..self.count)
            .map(|i| (to_std(&self.addrs[i]), self.dsts[i], &self.bufs[i * self.max..i * self.max + self.lens[i]]))
    }
}

/// Has a socket report each datagram's destination address (`IP_PKTINFO`, or
/// `IPV6_RECVPKTINFO` on an IPv6 socket): what a socket bound to the unspecified address needs
/// to tell which of the host's addresses was asked.
pub fn want_destinations(fd: BorrowedFd<'_>, v6: bool) -> io::Result<()> {
    let (level, name) =
        if v6 { (libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO) } else { (libc::IPPROTO_IP, libc::IP_PKTINFO) };
    loci_dataplane::set_int_option(fd, level, name, 1)
}

/// The destination address an `IP_PKTINFO` / `IPV6_PKTINFO` control message of `msg` carries.
///
/// # Safety
/// `msg` is a header the kernel filled in, whose control pointer and length describe a live
/// buffer (or whose control length is 0).
unsafe fn pktinfo_destination(msg: &libc::msghdr) -> Option<IpAddr> {
    let mut c = libc::CMSG_FIRSTHDR(msg);
    while !c.is_null() {
        let h = &*c;
        let data = libc::CMSG_DATA(c);
        let fits = |n: usize| h.cmsg_len as usize >= libc::CMSG_LEN(n as libc::c_uint) as usize;
        match (h.cmsg_level, h.cmsg_type) {
            (libc::IPPROTO_IP, libc::IP_PKTINFO) if fits(size_of::<libc::in_pktinfo>()) => {
                let p = data.cast::<libc::in_pktinfo>().read_unaligned();
                return Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(p.ipi_addr.s_addr))));
            }
            (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) if fits(size_of::<libc::in6_pktinfo>()) => {
                let p = data.cast::<libc::in6_pktinfo>().read_unaligned();
                return Some(IpAddr::V6(Ipv6Addr::from(p.ipi6_addr.s6_addr)));
            }
            _ => {}
        }
        c = libc::CMSG_NXTHDR(msg, c);
    }
    None
}

/// Writes into `buf` the control message that makes a datagram from a socket bound to the
/// unspecified address leave from `src`; returns its length.
fn pktinfo_source(src: IpAddr, buf: &mut PktInfoBuf) -> usize {
    match src {
        IpAddr::V4(a) => {
            // SAFETY: all-zero is a valid value of this plain C struct.
            let mut p: libc::in_pktinfo = unsafe { zeroed() };
            p.ipi_spec_dst.s_addr = u32::from(a).to_be();
            write_cmsg(buf, libc::IPPROTO_IP, libc::IP_PKTINFO, p)
        }
        IpAddr::V6(a) => {
            // SAFETY: as above.
            let mut p: libc::in6_pktinfo = unsafe { zeroed() };
            p.ipi6_addr.s6_addr = a.octets();
            write_cmsg(buf, libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, p)
        }
    }
}

/// Writes one control message carrying `value` at the start of `buf`; returns its length.
fn write_cmsg<T: Copy>(buf: &mut PktInfoBuf, level: libc::c_int, ty: libc::c_int, value: T) -> usize {
    let n = size_of::<T>() as libc::c_uint;
    // SAFETY: CMSG_SPACE and CMSG_LEN only compute sizes.
    let (space, len, head) =
        unsafe { (libc::CMSG_SPACE(n) as usize, libc::CMSG_LEN(n) as usize, libc::CMSG_LEN(0) as usize) };
    assert!(space <= size_of::<PktInfoBuf>(), "control buffer too small");
    // SAFETY: all-zero is a valid value of this plain C struct.
    let mut hdr: libc::cmsghdr = unsafe { zeroed() };
    hdr.cmsg_len = len as _;
    hdr.cmsg_level = level;
    hdr.cmsg_type = ty;
    let base = buf.as_mut_ptr().cast::<u8>();
    // SAFETY: `space` bytes fit in the buffer (checked above) and cover the header and the
    // value; unaligned writes need no alignment.
    unsafe {
        std::ptr::write_unaligned(base.cast::<libc::cmsghdr>(), hdr);
        std::ptr::write_unaligned(base.add(head).cast::<T>(), value);
    }
    space
}

/// Sends each `(destination, payload)` without blocking, [`BATCH`] to a system call. A datagram
/// the kernel refuses (a full socket buffer included) is skipped and reported to `failed` with
/// its index in `msgs`; the rest still go.
pub fn send_batch(fd: BorrowedFd<'_>, msgs: &[(SocketAddr, &[u8])], failed: impl FnMut(usize, io::Error)) {
    send_each(fd, msgs.len(), |i| (None, msgs[i].0, msgs[i].1), failed);
}

/// [`send_batch`] from a socket bound to the unspecified address, each datagram leaving from
/// its source address when it has one of its destination's family (a local address, or the
/// kernel refuses the datagram).
pub fn send_batch_from(
    fd: BorrowedFd<'_>,
    msgs: &[(Option<IpAddr>, SocketAddr, &[u8])],
    failed: impl FnMut(usize, io::Error),
) {
    send_each(fd, msgs.len(), |i| msgs[i], failed);
}

/// Sends the `count` datagrams `msg(i)` gives: (source, destination, payload).
fn send_each<'a>(
    fd: BorrowedFd<'_>,
    count: usize,
    msg: impl Fn(usize) -> (Option<IpAddr>, SocketAddr, &'a [u8]),
    mut failed: impl FnMut(usize, io::Error),
) {
    let mut at = 0;
    while at < count {
        let chunk: Vec<(Option<IpAddr>, SocketAddr, &[u8])> = (at..count.min(at + BATCH)).map(&msg).collect();
        let mut addrs: Vec<(libc::sockaddr_storage, libc::socklen_t)> =
            chunk.iter().map(|(_, a, _)| from_std(a)).collect();
        let mut iovs: Vec<libc::iovec> = chunk
            .iter()
            // The kernel only reads through iov_base on send; the pointer is mutable by type only.
            .map(|(_, _, d)| libc::iovec { iov_base: d.as_ptr() as *mut libc::c_void, iov_len: d.len() })
            .collect();
        let sourced = chunk.iter().any(|(src, _, _)| src.is_some());
        let mut controls = vec![PktInfoBuf::default(); if sourced { chunk.len() } else { 0 }];
        let mut hdrs: Vec<libc::mmsghdr> = Vec::with_capacity(chunk.len());
        for (k, (iov, (addr, len))) in iovs.iter_mut().zip(addrs.iter_mut()).enumerate() {
            // SAFETY: all-zero is a valid value of this plain C struct.
            let mut h: libc::mmsghdr = unsafe { zeroed() };
            h.msg_hdr.msg_name = (addr as *mut libc::sockaddr_storage).cast();
            h.msg_hdr.msg_namelen = *len;
            h.msg_hdr.msg_iov = iov;
            h.msg_hdr.msg_iovlen = 1;
            let (src, dst, _) = chunk[k];
            if let Some(src) = src.filter(|s| s.is_ipv4() == dst.is_ipv4()) {
                h.msg_hdr.msg_controllen = pktinfo_source(src, &mut controls[k]);
                h.msg_hdr.msg_control = controls[k].as_mut_ptr().cast();
            }
            hdrs.push(h);
        }
        // SAFETY: every header points at an iovec, a payload, an address and (with a source) a
        // control message that live until the call returns and whose sizes are the ones given;
        // the kernel only reads them.
        let n = unsafe {
            libc::sendmmsg(fd.as_raw_fd(), hdrs.as_mut_ptr(), chunk.len() as libc::c_uint, libc::MSG_DONTWAIT)
        };
        match n {
            n if n > 0 => at += n as usize,
            _ => {
                // The first datagram of the chunk failed: report it and go on with the next.
                let e = if n == 0 { io::Error::from(io::ErrorKind::WriteZero) } else { io::Error::last_os_error() };
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                failed(at, e);
                at += 1;
            }
        }
    }
}

/// `UDP_SEGMENT` (include/uapi/linux/udp.h), absent from the libc crate for glibc.
const UDP_SEGMENT: libc::c_int = 103;
/// Most datagrams in one segmented send (the kernel's UDP_MAX_SEGMENTS before Linux 6.x).
pub const GSO_MAX_SEGMENTS: usize = 64;

/// Sends `payloads` to `dst` in one system call and one trip down the stack: the kernel cuts
/// the send into one datagram per payload (UDP GSO, Linux 4.18+), and the receiver gets them
/// one by one. All payloads but the last must have the same length, the last no longer; at
/// most [`GSO_MAX_SEGMENTS`].
pub fn send_segmented(fd: BorrowedFd<'_>, dst: SocketAddr, payloads: &[&[u8]]) -> io::Result<()> {
    let seg = payloads.first().map_or(0, |p| p.len());
    let (body, last) = payloads.split_at(payloads.len().saturating_sub(1));
    let uniform = body.iter().all(|p| p.len() == seg) && last.iter().all(|p| p.len() <= seg);
    if !uniform || payloads.len() > GSO_MAX_SEGMENTS || seg == 0 || seg > usize::from(u16::MAX) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "payloads unfit for one segmented send"));
    }
    let mut iovs: Vec<libc::iovec> = payloads
        .iter()
        // The kernel only reads through iov_base on send; the pointer is mutable by type only.
        .map(|p| libc::iovec { iov_base: p.as_ptr() as *mut libc::c_void, iov_len: p.len() })
        .collect();
    let (mut addr, addr_len) = from_std(&dst);
    // Room for one control message with a u16, aligned like cmsghdr.
    let mut control = [0u64; 4];
    // SAFETY: all-zero is a valid value of this plain C struct.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_name = (&mut addr as *mut libc::sockaddr_storage).cast();
    msg.msg_namelen = addr_len;
    msg.msg_iov = iovs.as_mut_ptr();
    msg.msg_iovlen = iovs.len();
    msg.msg_control = control.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE only computes a size.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(size_of::<u16>() as libc::c_uint) } as usize;
    // SAFETY: `control` is aligned and large enough for one cmsghdr with a u16 (CMSG_SPACE(2) is
    // 24 bytes on 64-bit Linux, 32 are there), so the header and its data are within it.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_UDP;
        (*cmsg).cmsg_type = UDP_SEGMENT;
        (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as libc::c_uint) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<u16>(), seg as u16);
    }
    // SAFETY: the header points at iovecs, payloads, an address and a control buffer that live
    // until the call returns, with their sizes; the kernel only reads them.
    let r = unsafe { libc::sendmsg(fd.as_raw_fd(), &msg, libc::MSG_DONTWAIT) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Lets this thread's sleeps end within a microsecond of their deadline instead of the default
/// 50: the load generator paces sends tens of microseconds apart.
pub fn fine_timer_slack() -> io::Result<()> {
    // SAFETY: PR_SET_TIMERSLACK takes one integer argument and touches no memory of ours.
    let r = unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
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
    fn a_segmented_send_arrives_as_separate_datagrams() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = rx.local_addr().unwrap();
        let payloads: [&[u8]; 3] = [b"abcd", b"efgh", b"ij"];
        send_segmented(tx.as_fd(), to, &payloads).unwrap();
        let mut batch = RecvBatch::new(64);
        let mut got = Vec::new();
        while got.len() < 3 {
            batch.recv(rx.as_fd()).unwrap();
            got.extend(batch.iter().map(|(_, d)| d.to_vec()));
        }
        assert_eq!(got, [b"abcd".to_vec(), b"efgh".to_vec(), b"ij".to_vec()]);
        for bad in [&[b"ab".as_slice(), b"abc"][..], &[b"".as_slice()][..], &[][..]] {
            assert_eq!(send_segmented(tx.as_fd(), to, bad).unwrap_err().kind(), io::ErrorKind::InvalidInput);
        }
    }

    #[test]
    fn a_wildcard_socket_learns_the_address_asked_and_answers_from_it() {
        let rx = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
        want_destinations(rx.as_fd(), false).unwrap();
        rx.bind(&SocketAddr::from(([0, 0, 0, 0], 0)).into()).unwrap();
        let rx: UdpSocket = rx.into();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let port = rx.local_addr().unwrap().port();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        // All of 127.0.0.0/8 is ours on loopback: two addresses of one host.
        let asked: Vec<IpAddr> = vec!["127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap()];
        for a in &asked {
            tx.send_to(b"q", SocketAddr::new(*a, port)).unwrap();
        }
        let mut batch = RecvBatch::with_destinations(64);
        let mut got = Vec::new();
        while got.len() < 2 {
            batch.recv(rx.as_fd()).unwrap();
            got.extend(batch.iter_with_destinations().map(|(from, dst, _)| (from, dst)));
        }
        let from = Some(tx.local_addr().unwrap());
        assert_eq!(got, asked.iter().map(|a| (from, Some(*a))).collect::<Vec<_>>());
        // Answers from the address asked, in reverse order; one from an address that is not
        // ours is refused and reported.
        let to = tx.local_addr().unwrap();
        let foreign: IpAddr = "192.0.2.1".parse().unwrap();
        let msgs: Vec<(Option<IpAddr>, SocketAddr, &[u8])> =
            vec![(Some(asked[1]), to, b"a"), (Some(foreign), to, b"x"), (Some(asked[0]), to, b"b"), (None, to, b"c")];
        let mut refused = Vec::new();
        send_batch_from(rx.as_fd(), &msgs, |i, _| refused.push(i));
        assert_eq!(refused, [1]);
        let mut buf = [0u8; 16];
        let mut replies = Vec::new();
        for _ in 0..3 {
            let (n, from) = tx.recv_from(&mut buf).unwrap();
            replies.push((buf[..n].to_vec(), from.ip()));
        }
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(replies, [(b"a".to_vec(), asked[1]), (b"b".to_vec(), asked[0]), (b"c".to_vec(), local)]);
        // A socket bound to one address says nothing of destinations.
        let mut plain = RecvBatch::new(64);
        let bound = UdpSocket::bind("127.0.0.1:0").unwrap();
        bound.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        tx.send_to(b"q", bound.local_addr().unwrap()).unwrap();
        plain.recv(bound.as_fd()).unwrap();
        assert_eq!(plain.iter_with_destinations().next().map(|(_, d, _)| d), Some(None));
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
