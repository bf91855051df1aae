//! Batched UDP I/O for servers: `recvmmsg`/`sendmmsg` move many datagrams per system call,
//! which matters when a request costs a few microseconds and a syscall costs one or two.
//! IPv4 only, like the protocol.

use nix::sys::socket::{recvmmsg, MsgFlags, MultiHeaders, SockaddrIn, SockaddrLike};
use std::io::{self, IoSliceMut};
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
    recv_batch_flags(sock, bufs, got, MsgFlags::MSG_WAITFORONE)
}

/// Like [`recv_batch`] but never blocks: `WouldBlock` when nothing is waiting.
pub fn try_recv_batch(
    sock: &impl AsRawFd,
    bufs: &mut [Vec<u8>],
    got: &mut Vec<(usize, SocketAddr)>,
) -> io::Result<()> {
    recv_batch_flags(sock, bufs, got, MsgFlags::MSG_DONTWAIT)
}

fn recv_batch_flags(
    sock: &impl AsRawFd,
    bufs: &mut [Vec<u8>],
    got: &mut Vec<(usize, SocketAddr)>,
    flags: MsgFlags,
) -> io::Result<()> {
    got.clear();
    let n = bufs.len().min(MAX_BATCH);
    let mut hdrs = MultiHeaders::<SockaddrIn>::preallocate(n, None);
    let mut iovs: Vec<[IoSliceMut; 1]> =
        bufs[..n].iter_mut().map(|b| [IoSliceMut::new(b)]).collect();
    let received = recvmmsg(sock.as_raw_fd(), &mut hdrs, iovs.iter_mut(), flags, None)?;
    for msg in received {
        // A truncated datagram filled its buffer: one more byte than the buffer marks it.
        let truncated = msg.flags.contains(MsgFlags::MSG_TRUNC);
        let len = msg.bytes + usize::from(truncated);
        got.push((len, from_sockaddr(msg.address)));
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

// nix wraps sendmmsg(2) too, but its only count of the datagrams sent is an iterator that
// reads each message's receive-address slot, which a send never fills (uninitialised
// memory): libc directly, with nix's address type.
fn send_chunk(sock: &impl AsRawFd, msgs: &[(SocketAddr, Vec<u8>)]) -> usize {
    let addrs: Vec<SockaddrIn> = msgs.iter().map(|(a, _)| to_sockaddr(a)).collect();
    let mut iovs: Vec<libc::iovec> = msgs
        .iter()
        .map(|(_, b)| libc::iovec {
            iov_base: b.as_ptr() as *mut _,
            iov_len: b.len(),
        })
        .collect();
    let mut hdrs: Vec<libc::mmsghdr> = addrs
        .iter()
        .zip(iovs.iter_mut())
        .map(|(addr, iov)| {
            // SAFETY: an all-zero mmsghdr is valid (null pointers, zero lengths; libc keeps
            // private padding fields on some targets, so no struct literal).
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            // The kernel only reads the name and the data of a message it sends.
            h.msg_hdr.msg_name = addr.as_ptr().cast_mut().cast();
            h.msg_hdr.msg_namelen = addr.len();
            h.msg_hdr.msg_iov = iov;
            h.msg_hdr.msg_iovlen = 1;
            h
        })
        .collect();
    let mut done = 0;
    while done < hdrs.len() {
        // SAFETY: every header points at an address in `addrs` and a datagram in `msgs` (through
        // `iovs`), all alive and unmoved until the call returns; the count is that of `hdrs`.
        let r = unsafe {
            libc::sendmmsg(
                sock.as_raw_fd(),
                hdrs[done..].as_mut_ptr(),
                // More than u32::MAX datagrams cannot be queued; the loop sends the rest.
                u32::try_from(hdrs.len() - done).unwrap_or(u32::MAX),
                0,
            )
        };
        if r <= 0 {
            // Skip the datagram the kernel choked on and go on with the rest.
            tracing::debug!("sendmmsg: {}", io::Error::last_os_error());
            done += 1;
            continue;
        }
        // r > 0 here.
        done += r.unsigned_abs() as usize;
    }
    done
}

fn to_sockaddr(a: &SocketAddr) -> SockaddrIn {
    let v4 = match a {
        SocketAddr::V4(v4) => *v4,
        // Not reachable from an IPv4 socket; an unspecified address makes the send fail.
        SocketAddr::V6(_) => SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
    };
    SockaddrIn::from(v4)
}

fn from_sockaddr(sa: Option<SockaddrIn>) -> SocketAddr {
    // recvmmsg always fills in a UDP sender; an unspecified one makes a reply fail.
    let v4 = sa.map_or(
        SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
        SocketAddrV4::from,
    );
    SocketAddr::V4(v4)
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
