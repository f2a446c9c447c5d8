//! `GET /certificate.sha256` over plain HTTP/1.1 on TCP, at the port number
//! of the QUIC listener.
//!
//! Browsers only accept a self-signed certificate for WebTransport when the
//! page pins its SHA-256 (`serverCertificateHashes`). MoQ clients given an
//! `http://host:port/` URL (moq-native, the moq-dev web player) first fetch
//! `http://host:port/certificate.sha256`, read the body as hex (they trim
//! whitespace), then connect to `https://host:port/` pinning that hash. The
//! body here is exactly what moq-relay serves: 64 lowercase hex digits, no
//! newline, `text/plain; charset=utf-8`, with `Access-Control-Allow-Origin: *`
//! so that pages from other origins may read it.
//!
//! A small blocking server: one accept thread and a fixed pool of worker
//! threads behind a bounded queue, so slow or idle clients never hold up the
//! accept loop; when the queue is full a connection gets a best-effort 503.
//! Requests are read with a 5 s timeout and an 8 KiB cap on the head; bodies
//! are never read (every answer closes the connection).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

/// The one resource served.
pub const CERTIFICATE_PATH: &str = "/certificate.sha256";
/// Largest request head (request line and headers) accepted.
pub const MAX_HEAD: usize = 8 * 1024;
/// How long a client may take to send its request, or to take the answer.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once, and waiting for a worker.
const WORKERS: usize = 4;
const QUEUE: usize = 64;
/// How often the accept loop looks at the stop flag if nothing wakes it.
const ACCEPT_POLL: Duration = Duration::from_secs(1);

/// A running certificate-hash server; stops when dropped.
#[derive(Debug)]
pub struct CertServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl CertServer {
    /// The address the TCP listener is bound to (its own port when asked
    /// for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stop accepting and wait for the accept thread. Requests in progress
    /// finish on their own, within [`IO_TIMEOUT`].
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let Some(accept) = self.accept.take() else {
            return;
        };
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept with a connection of our own.
        let mut wake = self.addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(match wake {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        let _ = TcpStream::connect_timeout(&wake, Duration::from_millis(200));
        let _ = accept.join();
    }
}

impl Drop for CertServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Serve `hex` at `GET /certificate.sha256` on TCP `addr` (dual-stack when
/// `addr` is `[::]`). Port 0 binds an ephemeral port of its own, which cannot
/// be the QUIC listener's: see [`CertServer::local_addr`].
pub fn serve_certificate_hash(addr: SocketAddr, hex: String) -> std::io::Result<CertServer> {
    let listener = bind(addr)?;
    let addr = listener.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let body: Arc<str> = hex.into();

    let (queue, jobs) = sync_channel::<TcpStream>(QUEUE);
    let jobs = Arc::new(Mutex::new(jobs));
    for i in 0..WORKERS {
        let jobs = jobs.clone();
        let body = body.clone();
        std::thread::Builder::new()
            .name(format!("http-{i}"))
            .spawn(move || work(&jobs, &body))?;
    }
    let accept = {
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("http-accept".into())
            .spawn(move || accept_loop(&listener, &queue, &stop))?
    };
    tracing::info!(%addr, path = CERTIFICATE_PATH, "serving the certificate hash over HTTP");
    Ok(CertServer {
        addr,
        stop,
        accept: Some(accept),
    })
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        // `[::]` also takes IPv4, as the QUIC socket does.
        socket.set_only_v6(false)?;
    }
    // A restart must not wait for the last run's TIME_WAIT connections.
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(128)?;
    // Lets the accept loop look at the stop flag even if the wake-up
    // connection cannot get through.
    socket.set_read_timeout(Some(ACCEPT_POLL))?;
    Ok(socket.into())
}

fn accept_loop(listener: &TcpListener, queue: &SyncSender<TcpStream>, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) => {
                if !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                        | std::io::ErrorKind::ConnectionAborted
                ) {
                    tracing::debug!(error = %e, "HTTP accept failed");
                    // Out of descriptors and the like: do not spin.
                    std::thread::sleep(Duration::from_millis(50));
                }
                continue;
            }
        };
        if let Err(TrySendError::Full(mut stream)) = queue.try_send(stream) {
            // Every worker busy and the queue full: answer without waiting.
            let _ = stream.set_nonblocking(true);
            let _ = stream.write_all(&response(&Answer::busy(), false));
        }
    }
}

fn work(jobs: &Mutex<Receiver<TcpStream>>, body: &str) {
    loop {
        let next = match jobs.lock() {
            Ok(jobs) => jobs.recv(),
            Err(_) => return,
        };
        match next {
            Ok(stream) => serve(stream, body),
            Err(_) => return, // the accept loop is gone
        }
    }
}

fn serve(mut stream: TcpStream, body: &str) {
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    let answer = loop {
        match parse_head(&buf) {
            Ok(Some(head)) => break answer(&head, body),
            Ok(None) => {}
            Err(error) => break Answer::error(error),
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return, // gone or too slow: nothing to answer
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head_only = answer.head_only;
    let _ = stream.write_all(&response(&answer, head_only));
    let _ = stream.flush();
    let _ = stream.shutdown(std::net::Shutdown::Write);
}

/// A parsed request line; headers are checked for shape but not kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    /// The path, without the query.
    pub path: String,
}

/// Why a request head was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// Not HTTP/1.x, or a line that does not parse.
    Malformed,
    /// No end of head within [`MAX_HEAD`] bytes.
    TooLarge,
}

/// The request head at the start of `buf`: `Ok(None)` while it is
/// incomplete. Bare LF line ends are accepted (RFC 9112, section 2.2).
pub fn parse_head(buf: &[u8]) -> Result<Option<RequestHead>, HeadError> {
    let end = find_end(buf);
    let Some(end) = end.filter(|&end| end <= MAX_HEAD) else {
        return if buf.len() >= MAX_HEAD {
            Err(HeadError::TooLarge)
        } else {
            Ok(None)
        };
    };
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| HeadError::Malformed)?;
    let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let request_line = lines.next().ok_or(HeadError::Malformed)?;
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HeadError::Malformed);
    };
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    if !token(method)
        || !matches!(version, "HTTP/1.0" | "HTTP/1.1")
        || !target.starts_with('/')
        || target.bytes().any(|b| b <= b' ' || b == 0x7f)
    {
        return Err(HeadError::Malformed);
    }
    for line in lines.filter(|l| !l.is_empty()) {
        // Field lines are `name: value`; obsolete line folding is refused.
        match line.split_once(':') {
            Some((name, _)) if token(name) => {}
            _ => return Err(HeadError::Malformed),
        }
    }
    let path = target.split(['?', '#']).next().unwrap_or(target);
    Ok(Some(RequestHead {
        method: method.to_string(),
        path: path.to_string(),
    }))
}

/// Index just past the blank line that ends the head.
fn find_end(buf: &[u8]) -> Option<usize> {
    let mut prev_newline = false;
    for (i, &b) in buf.iter().enumerate() {
        match b {
            b'\n' if prev_newline => return Some(i + 1),
            b'\n' => prev_newline = true,
            b'\r' => {}
            _ => prev_newline = false,
        }
    }
    None
}

/// What to send back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub reason: &'static str,
    pub body: String,
    /// Extra header lines.
    pub headers: Vec<(&'static str, &'static str)>,
    /// HEAD: the head of the GET answer, without its body.
    pub head_only: bool,
}

impl Answer {
    fn new(status: u16, reason: &'static str, body: impl Into<String>) -> Self {
        Self {
            status,
            reason,
            body: body.into(),
            headers: Vec::new(),
            head_only: false,
        }
    }

    fn error(error: HeadError) -> Self {
        match error {
            HeadError::Malformed => Self::new(400, "Bad Request", "bad request\n"),
            HeadError::TooLarge => Self::new(
                431,
                "Request Header Fields Too Large",
                "request head too large\n",
            ),
        }
    }

    fn busy() -> Self {
        Self::new(503, "Service Unavailable", "busy\n")
    }
}

/// The answer to a well-formed request.
pub fn answer(head: &RequestHead, hex: &str) -> Answer {
    const ALLOW: (&str, &str) = ("Allow", "GET, HEAD, OPTIONS");
    let found = head.path == CERTIFICATE_PATH;
    match head.method.as_str() {
        "GET" | "HEAD" if found => {
            let mut answer = Answer::new(200, "OK", hex);
            answer.headers.push(("Cache-Control", "no-store"));
            answer.head_only = head.method == "HEAD";
            answer
        }
        "GET" | "HEAD" => Answer::new(404, "Not Found", "not found\n"),
        // A CORS preflight, for pages that fetch with extra headers.
        "OPTIONS" => {
            let mut answer = Answer::new(204, "No Content", "");
            answer.headers.push(ALLOW);
            answer
                .headers
                .push(("Access-Control-Allow-Methods", "GET, HEAD, OPTIONS"));
            answer.headers.push(("Access-Control-Allow-Headers", "*"));
            answer.headers.push(("Access-Control-Max-Age", "86400"));
            answer
        }
        _ => {
            let mut answer = Answer::new(405, "Method Not Allowed", "method not allowed\n");
            answer.headers.push(ALLOW);
            answer
        }
    }
}

/// The bytes of an HTTP/1.1 response that closes the connection.
pub fn response(answer: &Answer, head_only: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nAccess-Control-Allow-Origin: *\r\nConnection: close\r\n",
        answer.status,
        answer.reason,
        answer.body.len()
    );
    for (name, value) in &answer.headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    if !head_only {
        out.push_str(&answer.body);
    }
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff";

    fn head(text: &str) -> Result<Option<RequestHead>, HeadError> {
        parse_head(text.as_bytes())
    }

    #[test]
    fn a_get_of_the_certificate_hash_parses_with_crlf_or_bare_lf() {
        for text in [
            "GET /certificate.sha256 HTTP/1.1\r\nHost: localhost:4433\r\nAccept: */*\r\n\r\n",
            "GET /certificate.sha256?x=1 HTTP/1.0\n\n",
        ] {
            let parsed = head(text).unwrap().unwrap();
            assert_eq!(parsed.method, "GET");
            assert_eq!(parsed.path, CERTIFICATE_PATH);
        }
    }

    #[test]
    fn an_incomplete_head_asks_for_more() {
        let full = "GET /certificate.sha256 HTTP/1.1\r\nHost: a\r\n\r\n";
        for cut in 0..full.len() {
            assert_eq!(head(&full[..cut]), Ok(None), "cut {cut}");
        }
    }

    #[test]
    fn malformed_request_lines_and_headers_are_bad_requests() {
        for text in [
            "GET\r\n\r\n",
            "GET /certificate.sha256\r\n\r\n",
            "GET /certificate.sha256 HTTP/2.0\r\n\r\n",
            "GET  /certificate.sha256 HTTP/1.1\r\n\r\n",
            "GET certificate.sha256 HTTP/1.1\r\n\r\n",
            "GET /a b HTTP/1.1\r\n\r\n",
            "G(T / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1 extra\r\n\r\n",
            "GET / HTTP/1.1\r\nno colon here\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
            "\r\n\r\n",
        ] {
            assert_eq!(head(text), Err(HeadError::Malformed), "{text:?}");
        }
        assert_eq!(
            parse_head(b"GET /\xff HTTP/1.1\r\n\r\n"),
            Err(HeadError::Malformed)
        );
    }

    #[test]
    fn a_head_over_8_kib_is_refused_without_waiting_for_its_end() {
        let mut text = "GET / HTTP/1.1\r\n".to_string();
        while text.len() < MAX_HEAD {
            text.push_str("X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        assert_eq!(head(&text), Err(HeadError::TooLarge));
        text.push_str("\r\n");
        assert_eq!(head(&text), Err(HeadError::TooLarge));
        assert_eq!(Answer::error(HeadError::TooLarge).status, 431);
    }

    #[test]
    fn the_certificate_path_answers_the_bare_hex_with_cors() {
        let get = RequestHead {
            method: "GET".into(),
            path: CERTIFICATE_PATH.into(),
        };
        let answer = answer(&get, HEX);
        assert_eq!((answer.status, answer.body.as_str()), (200, HEX));
        let text = String::from_utf8(response(&answer, false)).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.contains("\r\nAccess-Control-Allow-Origin: *\r\n"));
        assert!(text.contains("\r\nContent-Type: text/plain; charset=utf-8\r\n"));
        assert!(text.contains("\r\nContent-Length: 64\r\n"));
        assert!(text.ends_with(&format!("\r\n\r\n{HEX}")));
    }

    #[test]
    fn head_answers_without_a_body() {
        let request = RequestHead {
            method: "HEAD".into(),
            path: CERTIFICATE_PATH.into(),
        };
        let answer = answer(&request, HEX);
        let text = String::from_utf8(response(&answer, answer.head_only)).unwrap();
        assert!(text.contains("Content-Length: 64\r\n"));
        assert!(text.ends_with("\r\n\r\n"));
    }

    #[test]
    fn wrong_paths_are_404_and_wrong_methods_405() {
        let other = RequestHead {
            method: "GET".into(),
            path: "/".into(),
        };
        assert_eq!(answer(&other, HEX).status, 404);
        for method in ["POST", "PUT", "DELETE", "CONNECT"] {
            let request = RequestHead {
                method: method.into(),
                path: CERTIFICATE_PATH.into(),
            };
            let answer = answer(&request, HEX);
            assert_eq!(answer.status, 405, "{method}");
            assert!(answer.headers.contains(&("Allow", "GET, HEAD, OPTIONS")));
        }
        let preflight = RequestHead {
            method: "OPTIONS".into(),
            path: CERTIFICATE_PATH.into(),
        };
        assert_eq!(answer(&preflight, HEX).status, 204);
    }

    #[test]
    fn the_server_answers_over_tcp_and_stops() {
        let server = serve_certificate_hash("127.0.0.1:0".parse().unwrap(), HEX.into()).unwrap();
        let addr = server.local_addr();
        let fetch = |request: &[u8]| {
            let mut stream = TcpStream::connect(addr).unwrap();
            stream.write_all(request).unwrap();
            let mut text = String::new();
            stream.read_to_string(&mut text).unwrap();
            text
        };
        let ok = fetch(b"GET /certificate.sha256 HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(
            ok.starts_with("HTTP/1.1 200 OK\r\n") && ok.ends_with(HEX),
            "{ok}"
        );
        assert!(fetch(b"GET /nope HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404 "));
        assert!(fetch(b"garbage\r\n\r\n").starts_with("HTTP/1.1 400 "));
        server.stop();
        assert!(TcpStream::connect(addr).is_err(), "still listening");
    }
}
