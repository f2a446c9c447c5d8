//! UDP sockets: binding one `SO_REUSEPORT` socket per shard, and moving
//! batches of datagrams through quinn-udp (recvmmsg + GRO, sendmsg + GSO).
//!
//! monoio's own UDP ops carry no control messages, so GSO/GRO/ECN cannot go
//! through them. Instead the fd stays nonblocking, quinn-udp does the
//! syscalls, and monoio is asked for readiness only after `WouldBlock`: each
//! readiness wait costs a poll op, so never wait before every call.

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd};

use quinn_udp::{RecvMeta, Transmit, UdpSockRef, UdpSocketState};
use socket2::{Domain, Protocol, Socket, Type};

/// Bind `count` sockets to `addr` with `SO_REUSEPORT`. If `addr` has port 0,
/// the first socket picks the port and the rest join it. The order of the
/// returned sockets is their order in the kernel's reuseport group.
pub fn bind_group(
    addr: SocketAddr,
    count: usize,
    buffer_bytes: usize,
) -> io::Result<Vec<std::net::UdpSocket>> {
    let mut addr = addr;
    let mut sockets = Vec::with_capacity(count);
    for _ in 0..count {
        let socket = bind_one(addr, buffer_bytes)?;
        addr = socket.local_addr()?;
        sockets.push(socket);
    }
    Ok(sockets)
}

/// The inode of `socket`, by which `/proc/net/udp` lists it (with its
/// receive drops); `None` without a Linux `/proc`.
pub fn socket_inode(socket: &std::net::UdpSocket) -> Option<u64> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;
    let link = format!("/proc/self/fd/{}", socket.as_raw_fd());
    std::fs::metadata(link).ok().map(|m| m.ino())
}

fn bind_one(addr: SocketAddr, buffer_bytes: usize) -> io::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        // `[::]` serves IPv4 clients too; browsers resolve localhost to ::1
        // while CLI clients often use 127.0.0.1.
        socket.set_only_v6(false)?;
    }
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    // Ask for large buffers; the kernel caps them at net.core.[rw]mem_max and
    // a smaller buffer only costs drops under bursts, so failure is not fatal.
    if let Err(e) = socket.set_recv_buffer_size(buffer_bytes) {
        tracing::debug!(error = %e, "SO_RCVBUF refused");
    }
    if let Err(e) = socket.set_send_buffer_size(buffer_bytes) {
        tracing::debug!(error = %e, "SO_SNDBUF refused");
    }
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// How many datagrams one receive call may return.
pub const RECV_BATCH: usize = 32;

/// Most datagrams in one GSO send. The kernel takes up to 64 segments, but
/// the whole send must fit one 64 KiB UDP datagram: 40 segments of quinn's
/// largest payload (1472 bytes) is 58,880 bytes, safely under. A larger
/// batch fails with EMSGSIZE and would be lost whole.
pub const MAX_GSO_SEGMENTS: usize = 40;

/// One shard's socket, driven through quinn-udp.
pub struct UdpIo {
    socket: monoio::net::udp::UdpSocket,
    state: UdpSocketState,
    gso: bool,
}

impl UdpIo {
    /// Take over a bound, nonblocking socket. Must run inside the shard's
    /// monoio runtime.
    pub fn new(socket: std::net::UdpSocket, gso: bool) -> io::Result<Self> {
        let state = UdpSocketState::new(UdpSockRef::from(&socket))?;
        let socket = monoio::net::udp::UdpSocket::from_std(socket)?;
        Ok(Self { socket, state, gso })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Datagrams that one send may carry (1 when GSO is off or unsupported).
    pub fn max_segments(&self) -> usize {
        if self.gso {
            self.state.max_gso_segments().clamp(1, MAX_GSO_SEGMENTS)
        } else {
            1
        }
    }

    /// Whether outgoing datagrams may be fragmented; path MTU discovery
    /// needs them not to be.
    pub fn may_fragment(&self) -> bool {
        self.state.may_fragment()
    }

    /// Largest number of segments the kernel may coalesce into one received
    /// buffer (GRO); receive buffers must be sized for it.
    pub fn gro_segments(&self) -> usize {
        self.state.gro_segments().max(1)
    }

    /// Receive a batch without waiting. `Ok(0)` never happens; `WouldBlock`
    /// means the socket is drained.
    pub fn try_recv(
        &self,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> io::Result<usize> {
        self.state.recv(UdpSockRef::from(&self.fd()), bufs, meta)
    }

    /// Send one transmit (possibly several GSO segments) without waiting.
    pub fn try_send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        self.state.try_send(UdpSockRef::from(&self.fd()), transmit)
    }

    fn fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the fd belongs to `self.socket`, which outlives the borrow.
        unsafe { BorrowedFd::borrow_raw(self.socket.as_raw_fd()) }
    }

    /// Wait until the socket may have datagrams to read.
    pub async fn readable(&self) -> io::Result<()> {
        // relaxed = false: we do the I/O ourselves, so the legacy driver's
        // cached readiness could be stale; ask the kernel.
        self.socket.readable(false).await
    }

    /// Wait until the socket may accept a send.
    pub async fn writable(&self) -> io::Result<()> {
        self.socket.writable(false).await
    }
}

/// Whether a send error is transient for this datagram only (the peer or
/// route is gone, the packet was too large for a probe) rather than a problem
/// with the socket. Such datagrams are dropped; QUIC recovers as from loss.
pub fn is_per_datagram_error(error: &io::Error) -> bool {
    quinn_udp::is_msg_size_err(error)
        || matches!(
            error.raw_os_error(),
            Some(libc::ENETUNREACH)
                | Some(libc::EHOSTUNREACH)
                | Some(libc::ECONNREFUSED)
                | Some(libc::EACCES)
                | Some(libc::EPERM)
                | Some(libc::EADDRNOTAVAIL)
                | Some(libc::EAFNOSUPPORT)
                | Some(libc::EINVAL)
                | Some(libc::EIO)
        )
}
