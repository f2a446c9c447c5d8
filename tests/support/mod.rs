//! Shared by the process-level tests: the real `qumo-relay` binary with its
//! log captured, and real third-party clients.
#![allow(dead_code)]

pub mod http;
pub mod lite;
pub mod token;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Lines a child process printed, collected by a reader thread.
#[derive(Clone, Default)]
pub struct Lines(Arc<Mutex<Vec<String>>>);

impl Lines {
    /// Collect the lines of `source` (a child's stdout or stderr) as they
    /// come, on a thread of their own.
    pub fn collect(source: impl Read + Send + 'static) -> Self {
        let lines = Lines::default();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(source).lines().map_while(Result::ok) {
                sink.0.lock().unwrap().push(line);
            }
        });
        lines
    }

    pub fn snapshot(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    /// The `nth` (from 0) line containing `needle`, waiting up to `timeout`.
    pub fn wait_for_nth(&self, needle: &str, nth: usize, timeout: Duration) -> Option<String> {
        self.wait_for_nth_where(|l| l.contains(needle), nth, timeout)
    }

    /// The `nth` (from 0) line that `matches`, waiting up to `timeout`.
    pub fn wait_for_nth_where(
        &self,
        matches: impl Fn(&str) -> bool,
        nth: usize,
        timeout: Duration,
    ) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.snapshot().into_iter().filter(|l| matches(l)).nth(nth) {
                return Some(line);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

pub struct Relay {
    child: Child,
    pub addr: SocketAddr,
    pub fingerprint: String,
    log: Lines,
    _dir: tempfile::TempDir,
}

impl Relay {
    /// The relay on an ephemeral UDP port of 127.0.0.1 with `shards` shards
    /// and debug logs from qumo itself.
    pub fn start(shards: usize) -> Relay {
        Self::start_with(shards, "")
    }

    /// As [`Relay::start`], with extra top-level YAML sections (`quic:`,
    /// `relay:`).
    pub fn start_with(shards: usize, sections: &str) -> Relay {
        Self::start_on("127.0.0.1:0", shards, sections)
    }

    /// As [`Relay::start_with`], listening on `address`.
    /// `QUMO_RELAY_LOG` replaces its log filter when a failure needs more.
    pub fn start_on(address: &str, shards: usize, sections: &str) -> Relay {
        let level = std::env::var("QUMO_RELAY_LOG").unwrap_or_else(|_| "info,qumo=debug".into());
        Self::start_logging(address, shards, sections, &level)
    }

    /// As [`Relay::start_on`], with `level` as `logging.level` (it must
    /// keep info lines: the start-up lines are read from the log).
    pub fn start_logging(address: &str, shards: usize, sections: &str, level: &str) -> Relay {
        Self::start_draining(address, shards, sections, level, "2s")
    }

    /// As [`Relay::start_logging`], with `server.shutdown_timeout` set to
    /// `shutdown_timeout` (how long a SIGTERM waits for sessions).
    pub fn start_draining(
        address: &str,
        shards: usize,
        sections: &str,
        level: &str,
        shutdown_timeout: &str,
    ) -> Relay {
        Self::spawn(&[], address, shards, sections, level, shutdown_timeout)
    }

    /// As [`Relay::start_on`], in network namespace `netns` (`ip netns
    /// exec` execs the relay, so killing the child kills the relay).
    pub fn start_in_netns(netns: &str, address: &str, shards: usize, sections: &str) -> Relay {
        let wrapper = ["ip", "netns", "exec", netns];
        Self::spawn(&wrapper, address, shards, sections, "info,qumo=debug", "2s")
    }

    fn spawn(
        wrapper: &[&str],
        address: &str,
        shards: usize,
        sections: &str,
        level: &str,
        shutdown_timeout: &str,
    ) -> Relay {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("relay.yaml");
        std::fs::write(
            &config,
            format!(
                "server:\n  address: \"{address}\"\n  shards: {shards}\n  shutdown_timeout: {shutdown_timeout}\n\
                 tls:\n  generate: [localhost]\n{sections}logging:\n  level: \"{level}\"\n"
            ),
        )
        .unwrap();
        let binary = env!("CARGO_BIN_EXE_qumo-relay");
        let mut command = match wrapper.split_first() {
            None => Command::new(binary),
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(binary);
                command
            }
        };
        let mut child = command
            .arg("--config")
            .arg(&config)
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let log = Lines::collect(child.stderr.take().unwrap());
        let listening = log
            .wait_for_nth("qumo-relay listening", 0, Duration::from_secs(10))
            .unwrap_or_else(|| panic!("relay did not start: {:#?}", log.snapshot()));
        let addr = field(&listening, "address").parse().unwrap();
        let fingerprint = log
            .snapshot()
            .iter()
            .find(|l| l.contains("sha256="))
            .map(|l| field(l, "sha256"))
            .expect("fingerprint logged");
        Relay {
            child,
            addr,
            fingerprint,
            log,
            _dir: dir,
        }
    }

    pub fn wait_for(&self, needle: &str, timeout: Duration) -> Option<String> {
        self.log.wait_for_nth(needle, 0, timeout)
    }

    pub fn wait_for_nth(&self, needle: &str, nth: usize, timeout: Duration) -> Option<String> {
        self.log.wait_for_nth(needle, nth, timeout)
    }

    /// The `nth` (from 0) log line that contains every one of `needles`,
    /// waiting up to `timeout`.
    pub fn wait_for_nth_all(
        &self,
        needles: &[&str],
        nth: usize,
        timeout: Duration,
    ) -> Option<String> {
        self.log
            .wait_for_nth_where(|l| needles.iter().all(|n| l.contains(n)), nth, timeout)
    }

    /// [`Relay::wait_for`] without blocking the async runtime the test's
    /// own peers run on.
    pub async fn wait_for_async(&self, needle: &str, timeout: Duration) -> Option<String> {
        self.wait_for_nth_all_async(&[needle], 0, timeout).await
    }

    /// [`Relay::wait_for_nth_all`] without blocking the async runtime the
    /// test's own peers run on.
    pub async fn wait_for_nth_all_async(
        &self,
        needles: &[&str],
        nth: usize,
        timeout: Duration,
    ) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self
                .log
                .snapshot()
                .into_iter()
                .filter(|l| needles.iter().all(|n| l.contains(n)))
                .nth(nth)
            {
                return Some(line);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn count(&self, needle: &str) -> usize {
        self.log
            .snapshot()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    pub fn log(&self) -> String {
        self.log.snapshot().join("\n")
    }

    /// Ask the relay to shut down gracefully (SIGTERM).
    pub fn terminate(&self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
    }

    /// Wait up to `timeout` for the relay to exit by itself; `None` if it
    /// is still running (it is killed when dropped).
    pub fn wait_exit(mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Resident memory of the relay process, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap()
    }

    /// CPU time (user + system) the relay process has used so far.
    pub fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        // The command name, in parentheses, may hold spaces: count fields
        // after its closing one. utime and stime are fields 14 and 15.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<u64> = rest
            .split_whitespace()
            .skip(11)
            .take(2)
            .map(|f| f.parse().unwrap())
            .collect();
        // SAFETY: sysconf has no preconditions.
        let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        Duration::from_millis((fields[0] + fields[1]) * 1000 / ticks_per_second)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port free for both UDP and TCP on 127.0.0.1 (the relay serves the
/// certificate hash over TCP on its QUIC port number).
pub fn free_port() -> u16 {
    loop {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// `key=value` from a log line.
pub fn field(line: &str, key: &str) -> String {
    let rest = line
        .split(&format!("{key}="))
        .nth(1)
        .unwrap_or_else(|| panic!("no {key}= in {line}"));
    rest.split_whitespace().next().unwrap().to_string()
}

/// The shard whose thread wrote a log line (`shard-N`).
pub fn shard_of(line: &str) -> usize {
    let rest = line
        .split("shard-")
        .nth(1)
        .unwrap_or_else(|| panic!("no shard thread in {line}"));
    rest.split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// A third-party client process, killed when dropped.
pub struct Client {
    child: Child,
    pub stdout: Lines,
    pub stderr: Lines,
}

impl Client {
    /// Wait until `n` lines that look like clock ticks were printed.
    pub fn ticks(&self, n: usize, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let ticks: Vec<String> = self
                .stdout
                .snapshot()
                .into_iter()
                .filter(|l| is_tick(l))
                .collect();
            if ticks.len() >= n || Instant::now() >= deadline {
                return ticks;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn wait_stderr(&self, needle: &str, timeout: Duration) -> Option<String> {
        self.stderr.wait_for_nth(needle, 0, timeout)
    }

    /// The first stderr line that contains any of `needles`, waiting up to
    /// `timeout`.
    pub fn wait_stderr_any(&self, needles: &[&str], timeout: Duration) -> Option<String> {
        self.stderr
            .wait_for_nth_where(|l| needles.iter().any(|n| l.contains(n)), 0, timeout)
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `YYYY-MM-DD HH:MM:SS`, as moq-clock prints a tick.
pub fn is_tick(line: &str) -> bool {
    let b = line.trim().as_bytes();
    b.len() == 19
        && b[4] == b'-'
        && b[10] == b' '
        && b[13] == b':'
        && b[16] == b':'
        && b.iter()
            .enumerate()
            .all(|(i, c)| matches!(i, 4 | 7 | 10 | 13 | 16) || c.is_ascii_digit())
}

/// A pinned third-party client binary, installed by
/// `scripts/install-clients.sh` under `$HOME/.cache/qumo/bin`.
pub fn client_binary(name: &str, env: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env) {
        return PathBuf::from(path);
    }
    let path = PathBuf::from(std::env::var_os("HOME").expect("HOME is set"))
        .join(".cache/qumo/bin")
        .join(name);
    assert!(
        path.exists(),
        "{name} is not installed at {}: run scripts/install-clients.sh (or set {env})",
        path.display()
    );
    path
}

/// `moq-clock --url URL --broadcast NAME publish|subscribe`, trusting any
/// certificate (the relay's is self-signed).
pub fn moq_clock(url: &str, broadcast: &str, mode: &str) -> Client {
    spawn_moq_clock(&[
        "--url",
        url,
        "--broadcast",
        broadcast,
        "--tls-disable-verify",
        mode,
    ])
}

/// A moq-clock subscriber that verifies the certificate (for `http://`
/// URLs, by the hash it fetched).
pub fn moq_clock_strict(url: &str, broadcast: &str) -> Client {
    spawn_moq_clock(&["--url", url, "--broadcast", broadcast, "subscribe"])
}

/// [`moq_clock`] in network namespace `netns`.
pub fn moq_clock_in_netns(netns: &str, url: &str, broadcast: &str, mode: &str) -> Client {
    let clock = client_binary("moq-clock", "QUMO_MOQ_CLOCK");
    let clock = clock.to_str().expect("a UTF-8 path");
    let args = [
        "--url",
        url,
        "--broadcast",
        broadcast,
        "--tls-disable-verify",
        mode,
    ];
    spawn_client(&[&["ip", "netns", "exec", netns, clock][..], &args].concat())
}

pub fn spawn_moq_clock(args: &[&str]) -> Client {
    let clock = client_binary("moq-clock", "QUMO_MOQ_CLOCK");
    let clock = clock.to_str().expect("a UTF-8 path");
    spawn_client(&[&[clock][..], args].concat())
}

/// `command[0]` with the rest as its arguments, as a [`Client`].
fn spawn_client(command: &[&str]) -> Client {
    let mut child = Command::new(command[0])
        .args(&command[1..])
        .env("NO_COLOR", "1")
        // `QUMO_CLIENT_LOG=debug` when a failure needs the clients' side.
        .env(
            "RUST_LOG",
            std::env::var("QUMO_CLIENT_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("moq-clock runs");
    let stdout = Lines::collect(child.stdout.take().unwrap());
    let stderr = Lines::collect(child.stderr.take().unwrap());
    Client {
        child,
        stdout,
        stderr,
    }
}
