//! CPU time and resident memory of a process on this host, from /proc.

use std::path::Path;

/// CPU seconds (user + system) from the text of `/proc/PID/stat`.
pub fn cpu_seconds_from_stat(stat: &str, ticks_per_second: f64) -> Option<f64> {
    // The command name is in parentheses and may hold spaces or ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of the whole line; `after` starts at field 3.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / ticks_per_second)
}

/// Resident set size in KiB from the text of `/proc/PID/status`.
pub fn rss_kb_from_status(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// CPU seconds used so far by `pid` (`None`: no such process, or no /proc).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat =
        std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("stat")).ok()?;
    cpu_seconds_from_stat(&stat, ticks_per_second())
}

/// Resident memory of `pid` in KiB.
pub fn rss_kb(pid: u32) -> Option<u64> {
    let status =
        std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("status")).ok()?;
    rss_kb_from_status(&status)
}

/// `RcvbufErrors` from the text of `/proc/net/snmp`: UDP datagrams the
/// kernel dropped because a socket's receive buffer was full.
pub fn udp_rcvbuf_errors_from_snmp(snmp: &str) -> Option<u64> {
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let names: Vec<&str> = udp.next()?.split_whitespace().collect();
    let values: Vec<&str> = udp.next()?.split_whitespace().collect();
    let i = names.iter().position(|n| *n == "RcvbufErrors")?;
    values.get(i)?.parse().ok()
}

/// UDP receive-buffer drops on this host so far (every socket).
pub fn udp_rcvbuf_errors() -> Option<u64> {
    udp_rcvbuf_errors_from_snmp(&std::fs::read_to_string("/proc/net/snmp").ok()?)
}

/// CPU seconds used so far by this process.
pub fn own_cpu_seconds() -> Option<f64> {
    cpu_seconds(std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_user_plus_system_even_with_odd_command_names() {
        let stat =
            "4242 (qumo) relay) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 1 1 1";
        assert_eq!(cpu_seconds_from_stat(stat, 100.0), Some(3.0));
        assert_eq!(cpu_seconds_from_stat("garbage", 100.0), None);
    }

    #[test]
    fn rss_is_read_from_the_vmrss_line() {
        let status = "Name:\tqumo-relay\nVmPeak:\t  9000 kB\nVmRSS:\t   51234 kB\nThreads:\t3\n";
        assert_eq!(rss_kb_from_status(status), Some(51234));
        assert_eq!(rss_kb_from_status("Name: x\n"), None);
    }

    #[test]
    fn udp_buffer_drops_are_read_by_column_name() {
        let snmp = "Ip: Forwarding\nIp: 1\nUdp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\nUdp: 10 0 7 12 7 0\nUdpLite: InDatagrams\nUdpLite: 0\n";
        assert_eq!(udp_rcvbuf_errors_from_snmp(snmp), Some(7));
        assert_eq!(udp_rcvbuf_errors_from_snmp("Ip: 1\n"), None);
    }

    #[test]
    fn this_process_can_be_sampled() {
        assert!(own_cpu_seconds().is_some());
        assert!(rss_kb(std::process::id()).is_some_and(|kb| kb > 0));
        assert_eq!(cpu_seconds(u32::MAX), None);
    }
}
