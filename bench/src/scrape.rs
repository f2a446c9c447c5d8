//! The relay's CPU, memory and UDP drops from its `/metrics` (the admin
//! listener), for a relay on another host where `/proc` cannot be read:
//! the standard `process_cpu_seconds_total` and
//! `process_resident_memory_bytes`, and qumo's own
//! `qumo_udp_receive_drops_total` summed over shards.
//!
//! Plain HTTP/1.1 over a fresh TCP connection, `http://` only: the admin
//! listener speaks nothing else, and a text format this small needs no
//! HTTP or Prometheus client crate.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// How long one scrape may take, connect and answer together per step.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);
/// A scrape larger than this is not a qumo relay's `/metrics`.
const MAX_BODY: usize = 16 << 20;

/// An `http://HOST:PORT/PATH` URL, split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsUrl {
    /// `HOST:PORT` as given (the `Host` header and what is resolved).
    pub authority: String,
    pub path: String,
}

impl MetricsUrl {
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("{url}: the metrics URL must start with http://"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/metrics"),
        };
        if authority.is_empty() {
            return Err(format!("{url}: no host"));
        }
        let authority = match authority.rsplit_once(':') {
            Some((_, port)) if !port.is_empty() && !port.ends_with(']') => authority.to_string(),
            _ => format!("{authority}:80"),
        };
        Ok(Self {
            authority,
            path: path.to_string(),
        })
    }
}

/// What one scrape says about the relay process.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RelayFigures {
    pub cpu_seconds: Option<f64>,
    pub rss_kb: Option<u64>,
    /// Datagrams dropped on its shard sockets so far.
    pub udp_drops: Option<u64>,
}

/// The sum of every sample of `name` (any labels), if there is one.
fn sum(text: &str, name: &str) -> Option<f64> {
    let mut total = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let metric = series.split('{').next().unwrap_or(series);
        if metric != name {
            continue;
        }
        if let Ok(value) = value.parse::<f64>() {
            *total.get_or_insert(0.0) += value;
        }
    }
    total
}

/// The figures in a `/metrics` text.
pub fn figures(text: &str) -> RelayFigures {
    RelayFigures {
        cpu_seconds: sum(text, "process_cpu_seconds_total"),
        rss_kb: sum(text, "process_resident_memory_bytes").map(|b| (b / 1024.0) as u64),
        udp_drops: sum(text, "qumo_udp_receive_drops_total").map(|d| d as u64),
    }
}

/// GET `url` and return the body of a 200 answer.
pub fn get(url: &MetricsUrl) -> Result<String, String> {
    let addr = url
        .authority
        .to_socket_addrs()
        .map_err(|e| format!("{}: {e}", url.authority))?
        .next()
        .ok_or_else(|| format!("{}: no address", url.authority))?;
    let mut stream = TcpStream::connect_timeout(&addr, SCRAPE_TIMEOUT)
        .map_err(|e| format!("{}: {e}", url.authority))?;
    stream
        .set_read_timeout(Some(SCRAPE_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(SCRAPE_TIMEOUT)))
        .map_err(|e| e.to_string())?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        url.path, url.authority
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("{}: {e}", url.authority))?;
    let mut answer = Vec::new();
    stream
        .take(MAX_BODY as u64)
        .read_to_end(&mut answer)
        .map_err(|e| format!("{}: {e}", url.authority))?;
    let answer = String::from_utf8_lossy(&answer);
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{}: no HTTP answer", url.authority))?;
    let status = head.lines().next().unwrap_or("");
    if status.split(' ').nth(1) != Some("200") {
        return Err(format!("{}{}: {status}", url.authority, url.path));
    }
    if head
        .lines()
        .any(|l| l.eq_ignore_ascii_case("transfer-encoding: chunked"))
    {
        return Err(format!("{}: chunked answers are not read", url.authority));
    }
    Ok(body.to_string())
}

/// Scrape `url` once.
pub fn scrape(url: &MetricsUrl) -> Result<RelayFigures, String> {
    get(url).map(|text| figures(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_default_the_port_and_path() {
        let url = MetricsUrl::parse("http://relay.example:9090/metrics").unwrap();
        assert_eq!(url.authority, "relay.example:9090");
        assert_eq!(url.path, "/metrics");
        let url = MetricsUrl::parse("http://10.0.0.5").unwrap();
        assert_eq!(
            (url.authority.as_str(), url.path.as_str()),
            ("10.0.0.5:80", "/metrics")
        );
        let url = MetricsUrl::parse("http://[::1]:9090/x").unwrap();
        assert_eq!(url.authority, "[::1]:9090");
        assert_eq!(
            MetricsUrl::parse("http://[::1]").unwrap().authority,
            "[::1]:80"
        );
        assert!(MetricsUrl::parse("https://relay:9090/metrics").is_err());
        assert!(MetricsUrl::parse("http:///metrics").is_err());
    }

    #[test]
    fn figures_are_summed_over_labels_and_converted() {
        let text = "\
# HELP process_cpu_seconds Total user and system CPU time spent in seconds.
# TYPE process_cpu_seconds counter
process_cpu_seconds_total 12.5
process_resident_memory_bytes 2097152
# TYPE qumo_udp_receive_drops counter
qumo_udp_receive_drops_total{shard=\"0\"} 3
qumo_udp_receive_drops_total{shard=\"1\"} 4
qumo_udp_receive_drops_totally_else 100
# EOF
";
        assert_eq!(
            figures(text),
            RelayFigures {
                cpu_seconds: Some(12.5),
                rss_kb: Some(2048),
                udp_drops: Some(7),
            }
        );
        assert_eq!(figures("# EOF\n"), RelayFigures::default());
    }

    #[test]
    fn a_scrape_reads_a_200_and_refuses_anything_else() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            for answer in [
                "HTTP/1.1 200 OK\r\nContent-Length: 30\r\n\r\nprocess_cpu_seconds_total 1.5\n",
                "HTTP/1.1 404 Not Found\r\n\r\nnot found\n",
            ] {
                let (mut conn, _) = listener.accept().unwrap();
                let mut request = [0u8; 1024];
                let n = conn.read(&mut request).unwrap();
                assert!(String::from_utf8_lossy(&request[..n]).starts_with("GET /metrics "));
                conn.write_all(answer.as_bytes()).unwrap();
            }
        });
        let url = MetricsUrl::parse(&format!("http://{addr}/metrics")).unwrap();
        assert_eq!(scrape(&url).unwrap().cpu_seconds, Some(1.5));
        let refused = scrape(&url).unwrap_err();
        assert!(refused.contains("404"), "{refused}");
        server.join().unwrap();
    }
}
