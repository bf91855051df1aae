//! Batched UDP I/O for servers: `recvmmsg`/`sendmmsg` move many datagrams per system call,
//! which matters when a request costs a few microseconds and a syscall costs one or two.
//! IPv4 only, like the protocol.

use std::io;
use std::mem::MaybeUninit;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;

/// Receives up to `bufs.len()` datagrams, blocking (up to the socket's read timeout) only for
/// the first. Fills `got` with `(length, sender)` for `bufs[0..got.len()]`. A datagram longer
/// than its buffer is reported with its full length so that the caller can reject it.
pub fn recv_batch(
    sock: &impl AsRawFd,
    bufs: &mut [Vec<u8>],
    got: &mut Vec<(usize, SocketAddr)>,
) -> io::Result<()> {
    recv_batch_flags(sock, bufs, got, libc::MSG_WAITFORONE)
}

/// Like [`recv_batch`] but never blocks: `WouldBlock` when nothing is waiting.
pub fn try_recv_batch(
    sock: &impl AsRawFd,
    bufs: &mut [Vec<u8>],
    got: &mut Vec<(usize, SocketAddr)>,
) -> io::Result<()> {
    recv_batch_flags(sock, bufs, got, libc::MSG_DONTWAIT)
}

fn recv_batch_flags(
    sock: &impl AsRawFd,
    bufs: &mut [Vec<u8>],
    got: &mut Vec<(usize, SocketAddr)>,
    flags: libc::c_int,
) -> io::Result<()> {
    got.clear();
    let n = bufs.len().min(MAX_BATCH);
    let mut addrs: [MaybeUninit<libc::sockaddr_in>; MAX_BATCH] = [MaybeUninit::uninit(); MAX_BATCH];
    let mut iovs: Vec<libc::iovec> = bufs[..n]
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: b.len(),
        })
        .collect();
    let mut hdrs: Vec<libc::mmsghdr> = (0..n)
        .map(|i| {
            // SAFETY: an all-zero msghdr is valid; the pointers set below outlive the call.
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_name = addrs[i].as_mut_ptr().cast();
            h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
            h.msg_hdr.msg_iov = &mut iovs[i];
            h.msg_hdr.msg_iovlen = 1;
            h
        })
        .collect();
    // SAFETY: every header points at a live buffer and address of the right size.
    let r = unsafe {
        libc::recvmmsg(
            sock.as_raw_fd(),
            hdrs.as_mut_ptr(),
            n as u32,
            flags,
            std::ptr::null_mut(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    for (i, h) in hdrs.iter().take(r as usize).enumerate() {
        let truncated = h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
        let len = if truncated {
            bufs[i].len() + 1
        } else {
            h.msg_len as usize
        };
        // SAFETY: the kernel wrote a sockaddr_in for each received datagram on an IPv4 socket.
        let sa = unsafe { addrs[i].assume_init() };
        got.push((len, from_sockaddr(&sa)));
    }
    Ok(())
}

/// A UDP socket registered with the tokio reactor for reading only. Registered for writing
/// too (as `tokio::net::UdpSocket` is), every datagram the kernel frees would wake the
/// reactor with a write-space event: on loopback an extra wake-up of a parked worker per
/// request, about a fifth of a lookup's client CPU time. Sends on it therefore never wait
/// for buffer space: a full buffer is an overload, and the dropped datagram is resent by
/// whoever waits for its answer.
pub type ReadRegisteredUdp = tokio::io::unix::AsyncFd<std::net::UdpSocket>;

/// Binds a non-blocking IPv4 UDP socket at `addr` with kernel buffers of `buffer_bytes` each
/// way (bursts of thousands of datagrams), registered as a [`ReadRegisteredUdp`]. Must be
/// called inside a tokio runtime.
pub fn bind_read_registered(
    addr: SocketAddr,
    buffer_bytes: usize,
) -> io::Result<ReadRegisteredUdp> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    let _ = s.set_recv_buffer_size(buffer_bytes);
    let _ = s.set_send_buffer_size(buffer_bytes);
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    let socket: std::net::UdpSocket = s.into();
    // SAFETY: the std socket owns its descriptor and keeps it open, unchanged, for as long
    // as the AsyncFd holds it (nothing takes it out).
    unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(socket, tokio::io::Interest::READABLE)
    }
    .map_err(|e| e.into())
}

/// Sends every `(address, bytes)` pair, as few system calls as possible. Datagrams that the
/// kernel refuses (a full buffer, an unreachable address) are dropped: clients retry.
/// Returns how many were handed to the kernel.
pub fn send_batch(sock: &impl AsRawFd, msgs: &[(SocketAddr, Vec<u8>)]) -> usize {
    let mut sent = 0;
    for chunk in msgs.chunks(MAX_BATCH) {
        sent += send_chunk(sock, chunk);
    }
    sent
}

const MAX_BATCH: usize = 256;

fn send_chunk(sock: &impl AsRawFd, msgs: &[(SocketAddr, Vec<u8>)]) -> usize {
    let mut addrs: Vec<libc::sockaddr_in> = msgs.iter().map(|(a, _)| to_sockaddr(a)).collect();
    let mut iovs: Vec<libc::iovec> = msgs
        .iter()
        .map(|(_, b)| libc::iovec {
            iov_base: b.as_ptr() as *mut _,
            iov_len: b.len(),
        })
        .collect();
    let mut hdrs: Vec<libc::mmsghdr> = (0..msgs.len())
        .map(|i| {
            // SAFETY: as in recv_batch.
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_name = (&mut addrs[i] as *mut libc::sockaddr_in).cast();
            h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
            h.msg_hdr.msg_iov = &mut iovs[i];
            h.msg_hdr.msg_iovlen = 1;
            h
        })
        .collect();
    let mut done = 0;
    while done < hdrs.len() {
        // SAFETY: headers point at live addresses and buffers of the right sizes.
        let r = unsafe {
            libc::sendmmsg(
                sock.as_raw_fd(),
                hdrs[done..].as_mut_ptr(),
                (hdrs.len() - done) as u32,
                0,
            )
        };
        if r <= 0 {
            // Skip the datagram the kernel choked on and go on with the rest.
            tracing::debug!("sendmmsg: {}", io::Error::last_os_error());
            done += 1;
            continue;
        }
        done += r as usize;
    }
    done
}

fn to_sockaddr(a: &SocketAddr) -> libc::sockaddr_in {
    let v4 = match a {
        SocketAddr::V4(v4) => *v4,
        // Not reachable from an IPv4 socket; an unspecified address makes the send fail.
        SocketAddr::V6(_) => SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
    };
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: v4.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(v4.ip().octets()),
        },
        sin_zero: [0; 8],
    }
}

fn from_sockaddr(sa: &libc::sockaddr_in) -> SocketAddr {
    let ip = Ipv4Addr::from(sa.sin_addr.s_addr.to_ne_bytes());
    SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(sa.sin_port)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    #[test]
    fn batches_round_trip_over_loopback() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
        // Room for all 300 datagrams at once.
        b.set_recv_buffer_size(4 << 20).unwrap();
        b.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .unwrap();
        let b: UdpSocket = b.into();
        b.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let to = b.local_addr().unwrap();
        let msgs: Vec<_> = (0..300u32)
            .map(|i| (to, i.to_le_bytes().repeat(i as usize % 7 + 1)))
            .collect();
        assert_eq!(send_batch(&a, &msgs), 300);
        let mut bufs = vec![vec![0u8; 64]; 64];
        let mut got = Vec::new();
        let mut seen = 0;
        while seen < 300 {
            recv_batch(&b, &mut bufs, &mut got).unwrap();
            for (i, (len, from)) in got.iter().enumerate() {
                assert_eq!(*from, a.local_addr().unwrap());
                assert_eq!(&bufs[i][..*len], &msgs[seen].1[..]);
                seen += 1;
            }
        }
        // An oversized datagram is flagged by a length past its buffer.
        a.send_to(&[7u8; 100], to).unwrap();
        recv_batch(&b, &mut bufs, &mut got).unwrap();
        assert_eq!(got[0].0, 65);
    }
}
