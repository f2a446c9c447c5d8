//! What the kernel says about this process, read at each `/metrics` scrape
//! (never on the shards' path): the standard `process_*` figures that
//! Prometheus client libraries export, and each shard socket's UDP receive
//! drops. Linux only; elsewhere every read is `None` and nothing is shown.

use std::collections::HashMap;

/// The standard process figures (names as Prometheus' own clients use).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessStats {
    /// User plus system CPU time.
    pub cpu_seconds: f64,
    pub resident_memory_bytes: u64,
    pub virtual_memory_bytes: u64,
    pub threads: u64,
    /// Since the Unix epoch.
    pub start_time_seconds: f64,
    pub open_fds: u64,
    pub max_fds: u64,
}

/// The fields of `/proc/self/stat` used here, parsed from its text.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Stat {
    cpu_ticks: u64,
    threads: u64,
    start_ticks_after_boot: u64,
    virtual_bytes: u64,
    resident_pages: u64,
}

/// Parse `/proc/PID/stat`. The command name (field 2) may hold spaces and
/// parentheses, so fields are counted after its last `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state); field N is fields[N - 3].
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        cpu_ticks: field(14)? + field(15)?,
        threads: field(20)?,
        start_ticks_after_boot: field(22)?,
        virtual_bytes: field(23)?,
        resident_pages: field(24)?,
    })
}

/// Boot time (seconds since the epoch) from the `btime` line of `/proc/stat`.
fn parse_boot_time(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("btime "))
        .and_then(|value| value.trim().parse().ok())
}

fn sysconf(name: libc::c_int) -> Option<u64> {
    // SAFETY: sysconf only reads a system constant.
    let value = unsafe { libc::sysconf(name) };
    u64::try_from(value).ok().filter(|v| *v > 0)
}

/// The soft limit on open files.
fn max_fds() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    ok.then_some(limit.rlim_cur)
}

/// This process's figures now; `None` where `/proc` is missing.
pub fn read() -> Option<ProcessStats> {
    let stat = parse_stat(&std::fs::read_to_string("/proc/self/stat").ok()?)?;
    let boot = parse_boot_time(&std::fs::read_to_string("/proc/stat").ok()?)?;
    let ticks = sysconf(libc::_SC_CLK_TCK)? as f64;
    let page = sysconf(libc::_SC_PAGESIZE)?;
    let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    Some(ProcessStats {
        cpu_seconds: stat.cpu_ticks as f64 / ticks,
        resident_memory_bytes: stat.resident_pages * page,
        virtual_memory_bytes: stat.virtual_bytes,
        threads: stat.threads,
        start_time_seconds: boot as f64 + stat.start_ticks_after_boot as f64 / ticks,
        // The listing's own descriptor is gone by now; `read_dir` counted it.
        open_fds: open_fds.saturating_sub(1),
        max_fds: max_fds()?,
    })
}

/// Receive drops by socket inode from the text of `/proc/net/udp` or
/// `/proc/net/udp6`: datagrams the kernel discarded for a full receive
/// buffer (or a failed checksum), per socket.
fn parse_udp_drops(text: &str) -> HashMap<u64, u64> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            // sl local rem st tx:rx tr:when retrnsmt uid timeout inode ref pointer drops
            let fields: Vec<&str> = line.split_whitespace().collect();
            let inode = fields.get(9)?.parse().ok()?;
            let drops = fields.get(12)?.parse().ok()?;
            Some((inode, drops))
        })
        .collect()
}

/// Receive drops of each socket in `inodes` (shard K's at index K), from
/// this process's network namespace; `None` for a socket not found.
pub fn udp_drops(inodes: &[Option<u64>]) -> Vec<Option<u64>> {
    let mut drops = HashMap::new();
    for table in ["/proc/self/net/udp", "/proc/self/net/udp6"] {
        if let Ok(text) = std::fs::read_to_string(table) {
            drops.extend(parse_udp_drops(&text));
        }
    }
    inodes
        .iter()
        .map(|inode| drops.get(&(*inode)?).copied())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        // A command name with a space and a parenthesis must not shift them.
        let text = "4242 (qumo (relay)) S 1 4242 4242 0 -1 4194560 100 0 0 0 \
                    250 50 0 0 20 0 7 0 123456 987654321 2048 18446744073709551615";
        let stat = parse_stat(text).unwrap();
        assert_eq!(
            stat,
            Stat {
                cpu_ticks: 300,
                threads: 7,
                start_ticks_after_boot: 123456,
                virtual_bytes: 987654321,
                resident_pages: 2048,
            }
        );
        assert_eq!(parse_stat("4242 (truncated) S 1 2"), None);
        assert_eq!(parse_stat("no parenthesis"), None);
    }

    #[test]
    fn boot_time_is_the_btime_line() {
        let text = "cpu  1 2 3\nintr 5\nbtime 1764600000\nprocesses 9\n";
        assert_eq!(parse_boot_time(text), Some(1_764_600_000));
        assert_eq!(parse_boot_time("cpu 1 2 3\n"), None);
    }

    #[test]
    fn udp_drops_are_read_by_inode() {
        let text = "\
   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  123: 0100007F:3039 00000000:0000 07 00000000:00000000 00:00000000 00000000  1000        0 555 2 0000000000000000 17
  124: 00000000:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 777 2 0000000000000000 0
";
        let drops = parse_udp_drops(text);
        assert_eq!(drops.get(&555), Some(&17));
        assert_eq!(drops.get(&777), Some(&0));
        assert_eq!(drops.len(), 2);
    }

    #[test]
    fn this_process_reads_sensibly() {
        let before = read().expect("/proc is there on Linux");
        assert!(before.resident_memory_bytes > 0);
        assert!(before.threads >= 1);
        assert!(before.open_fds >= 3, "stdin, stdout, stderr");
        assert!(before.max_fds >= before.open_fds);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(before.start_time_seconds <= now + 1.0);
        assert!(before.start_time_seconds > now - 86_400.0 * 365.0);
        // CPU time only grows.
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_add(std::hint::black_box(i));
        }
        std::hint::black_box(x);
        assert!(read().unwrap().cpu_seconds >= before.cpu_seconds);
    }

    #[test]
    fn a_bound_socket_is_found_with_its_drops() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let inode = qumo_shards::socket::socket_inode(&socket);
        assert!(inode.is_some());
        assert_eq!(udp_drops(&[inode, None]), vec![Some(0), None]);
    }
}
