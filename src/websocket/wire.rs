//! A WebSocket's TCP socket as QMux's [`Wire`]: the bytes the driver moved
//! through it, and the path's estimate from the kernel's `TCP_INFO`, read
//! when asked (a PROBE sample, at most every 100 ms while a peer probes).
//! The kernel moves its figures on ACKs, which come with traffic, so the
//! estimate's epoch moves whenever the driver reads or writes: an idle
//! socket's probe sleeps, a busy one's samples.

use std::cell::Cell;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::time::Duration;

use qumo_shards::WaitList;

use crate::metrics::Traffic;
use crate::qmux::Wire;
use crate::session::transport::Estimate;

#[derive(Debug)]
pub struct SocketWire {
    /// The socket's descriptor while the driver holds it; `None` after,
    /// when the number may already be another socket's.
    fd: Cell<Option<RawFd>>,
    sent: Cell<u64>,
    received: Cell<u64>,
    epoch: Cell<u64>,
    waiters: WaitList,
}

impl SocketWire {
    pub fn new(fd: RawFd) -> Rc<SocketWire> {
        Rc::new(SocketWire {
            fd: Cell::new(Some(fd)),
            sent: Cell::new(0),
            received: Cell::new(0),
            epoch: Cell::new(0),
            waiters: WaitList::default(),
        })
    }

    /// `n` bytes written to the socket.
    pub fn sent(&self, n: usize) {
        self.sent.set(self.sent.get().saturating_add(n as u64));
        self.moved();
    }

    /// `n` bytes read from the socket.
    pub fn received(&self, n: usize) {
        self.received
            .set(self.received.get().saturating_add(n as u64));
        self.moved();
    }

    /// The driver is letting the socket go: no more `TCP_INFO` reads (the
    /// counts stay, for the session's last sample).
    pub fn detach(&self) {
        self.fd.set(None);
        self.moved();
    }

    fn moved(&self) {
        self.epoch.set(self.epoch.get().wrapping_add(1));
        self.waiters.wake_all();
    }
}

impl Wire for SocketWire {
    fn traffic(&self) -> Traffic {
        Traffic {
            sent: self.sent.get(),
            received: self.received.get(),
        }
    }

    fn estimate(&self) -> Estimate {
        self.fd
            .get()
            .and_then(path_figures)
            .map_or_else(Estimate::default, |figures| figures.estimate())
    }

    fn estimate_epoch(&self) -> u64 {
        self.epoch.get()
    }

    fn estimate_waiters(&self) -> &WaitList {
        &self.waiters
    }
}

/// What `TCP_INFO` says of the path: smoothed RTT, congestion window and
/// segment size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathFigures {
    pub rtt: Duration,
    pub cwnd_segments: u32,
    pub mss: u32,
}

impl PathFigures {
    /// The congestion window once per round trip, in bits per second, as
    /// QUIC's estimate is taken ([`Estimate::from_quic`]): what the sender
    /// may put through. Not the kernel's delivery rate, which on a media
    /// stream is limited by the application and would report the bitrate
    /// of the rendition being sent, never room for a better one.
    pub fn estimate(self) -> Estimate {
        let rtt = (!self.rtt.is_zero()).then_some(self.rtt);
        let window = u64::from(self.cwnd_segments) * u64::from(self.mss);
        let send_rate = rtt
            .filter(|_| window > 0)
            .map(|rtt| (window as f64 * 8.0 / rtt.as_secs_f64()) as u64);
        Estimate { send_rate, rtt }
    }
}

/// The socket's `TCP_INFO`, or `None` if the kernel gave less than the
/// fields read (they are all in Linux's since 2.6).
#[cfg(target_os = "linux")]
pub fn path_figures(fd: RawFd) -> Option<PathFigures> {
    // SAFETY: tcp_info is plain integers, for which all zeros is valid.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `info`, which is
    // that large, and sets `len` to what it wrote.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    let needed = std::mem::offset_of!(libc::tcp_info, tcpi_snd_cwnd) + 4;
    (rc == 0 && len as usize >= needed).then_some(PathFigures {
        rtt: Duration::from_micros(u64::from(info.tcpi_rtt)),
        cwnd_segments: info.tcpi_snd_cwnd,
        mss: info.tcpi_snd_mss,
    })
}

#[cfg(not(target_os = "linux"))]
pub fn path_figures(_fd: RawFd) -> Option<PathFigures> {
    None
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;

    use super::*;

    #[test]
    fn the_rate_is_the_window_once_per_round_trip() {
        let figures = PathFigures {
            rtt: Duration::from_millis(20),
            cwnd_segments: 10,
            mss: 1448,
        };
        // 14480 bytes per 20 ms: 5.792 Mbit/s.
        assert_eq!(
            figures.estimate(),
            Estimate {
                send_rate: Some(5_792_000),
                rtt: Some(Duration::from_millis(20)),
            }
        );
        let unmeasured = PathFigures {
            rtt: Duration::ZERO,
            ..figures
        };
        assert!(!unmeasured.estimate().is_known());
    }

    #[test]
    fn a_connected_socket_has_figures_and_a_detached_one_none() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        // A round trip of data, so the RTT is measured on both ends.
        client.write_all(b"ping").unwrap();
        let mut buf = [0u8; 4];
        server.read_exact(&mut buf).unwrap();
        server.write_all(b"pong").unwrap();
        client.read_exact(&mut buf).unwrap();

        let figures = path_figures(server.as_raw_fd()).expect("TCP_INFO on a connected socket");
        assert!(figures.mss > 0 && figures.cwnd_segments > 0, "{figures:?}");
        let wire = SocketWire::new(server.as_raw_fd());
        let estimate = wire.estimate();
        assert!(estimate.send_rate.is_some_and(|r| r > 0), "{estimate:?}");
        let epoch = wire.estimate_epoch();
        wire.sent(10);
        assert_ne!(wire.estimate_epoch(), epoch, "traffic moves the epoch");
        let epoch = wire.estimate_epoch();
        wire.received(4);
        assert_ne!(wire.estimate_epoch(), epoch);
        let epoch = wire.estimate_epoch();
        wire.detach();
        assert_ne!(wire.estimate_epoch(), epoch, "so does the end");
        assert!(!wire.estimate().is_known());
        assert_eq!(
            wire.traffic(),
            Traffic {
                sent: 10,
                received: 4
            }
        );
        // Not a TCP socket: no figures.
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert_eq!(path_figures(udp.as_raw_fd()), None);
    }
}
