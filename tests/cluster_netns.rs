//! A cluster line A-B-C across network namespaces: three "hosts" joined by
//! veth pairs, each link delayed 20 ms and losing 1 % of its packets each
//! way (`tc netem`), a qumo relay on each. A moq-clock publisher on A is
//! heard by a moq-clock subscriber on C through B; killing B ends C's
//! subscription cleanly, and once B is back subscribing works again.
//!
//! Needs root, `ip` with network namespace support and `tc` with sch_netem.
//! Where any is missing the test prints `SKIP` and what is missing, and
//! passes. `QUMO_NETNS_UNIMPAIRED=1` runs it without netem (a kernel
//! without sch_netem): the namespaces and veth links alone.

mod support;

use std::process::Command;
use std::time::Duration;

use support::{moq_clock_in_netns, Relay};

/// Generous: 1 % loss means retransmissions, and CI is a busy 2-core box.
const DEADLINE: Duration = Duration::from_secs(60);
/// The impairment on every link, each way.
const NETEM: [&str; 6] = ["delay", "20ms", "loss", "1%", "limit", "10000"];
const PORT: u16 = 4443;
/// Link A-B is 10.201.1.0/24, link B-C 10.201.2.0/24. Each namespace has
/// its own addresses, so parallel runs do not collide.
const A: &str = "10.201.1.1";
const B_TOWARDS_A: &str = "10.201.1.2";
const B_TOWARDS_C: &str = "10.201.2.1";
const C: &str = "10.201.2.2";

/// What moq-clock prints when the relay ends its subscription (see
/// interop.rs, `a_subscriber_hears_the_end_when_the_publisher_leaves`).
const ENDS: [&str; 4] = [
    "broadcast is offline",
    "subscribe complete",
    "broadcast closed",
    "remote error: code=3",
];

/// Run `args`; its stderr if it failed.
fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args[0]))?;
    match out.status.success() {
        true => Ok(()),
        false => Err(format!(
            "`{}`: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
}

fn must(args: &[&str]) {
    run(args).unwrap_or_else(|e| panic!("{e}"));
}

fn is_root() -> bool {
    // The effective uid: the second field of /proc/self/status's Uid line.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// Three namespaces and their links, named after this process so that
/// parallel runs do not collide; deleted when dropped, failure included
/// (deleting a namespace deletes the veth ends in it).
struct Hosts {
    names: [String; 3],
    links: [(String, String); 2],
}

impl Hosts {
    fn new() -> Hosts {
        let pid = std::process::id();
        Hosts {
            names: ["a", "b", "c"].map(|h| format!("qumo-{pid}-{h}")),
            // Interface names: at most 15 bytes.
            links: [
                (format!("q{pid}ab0"), format!("q{pid}ab1")),
                (format!("q{pid}bc0"), format!("q{pid}bc1")),
            ],
        }
    }

    fn a(&self) -> &str {
        &self.names[0]
    }
    fn b(&self) -> &str {
        &self.names[1]
    }
    fn c(&self) -> &str {
        &self.names[2]
    }

    /// Namespaces and links up; `Err` names what this machine cannot do.
    fn build(&self, impaired: bool) -> Result<(), String> {
        for name in &self.names {
            run(&["ip", "netns", "add", name])
                .map_err(|e| format!("no network namespaces: {e}"))?;
            must(&["ip", "-n", name, "link", "set", "lo", "up"]);
        }
        let ends = [
            (self.a(), &self.links[0].0, A),
            (self.b(), &self.links[0].1, B_TOWARDS_A),
            (self.b(), &self.links[1].0, B_TOWARDS_C),
            (self.c(), &self.links[1].1, C),
        ];
        for (one, other) in &self.links {
            run(&[
                "ip", "link", "add", one, "type", "veth", "peer", "name", other,
            ])
            .map_err(|e| format!("no veth pairs: {e}"))?;
        }
        for (netns, device, address) in ends {
            must(&["ip", "link", "set", device, "netns", netns]);
            let cidr = format!("{address}/24");
            must(&["ip", "-n", netns, "addr", "add", &cidr, "dev", device]);
            must(&["ip", "-n", netns, "link", "set", device, "up"]);
        }
        if impaired {
            for (netns, device, _) in ends {
                let mut tc = vec!["ip", "netns", "exec", netns, "tc", "qdisc", "add"];
                tc.extend(["dev", device, "root", "netem"]);
                tc.extend(NETEM);
                run(&tc).map_err(|e| format!("no tc netem (sch_netem): {e}"))?;
            }
        }
        Ok(())
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = run(&["ip", "netns", "del", name]);
        }
        // Ends still in this namespace if building stopped half-way.
        for (one, _) in &self.links {
            let _ = run(&["ip", "link", "del", one]);
        }
    }
}

/// A node named `name` listening on `address`, dialling `peer` (host).
fn node(netns: &str, name: &str, address: &str, peer: Option<&str>) -> Relay {
    let peers = peer
        .map(|p| format!("\"http://{p}:{PORT}\""))
        .unwrap_or_default();
    // A killed node sends no CONNECTION_CLOSE: its neighbours notice by
    // the idle timeout, kept short but well above the links' round trip.
    let sections = format!(
        "quic:\n  idle_timeout: 5s\n  keep_alive: 1s\ncluster:\n  node: {name}\n  peers: [{peers}]\n"
    );
    Relay::start_in_netns(netns, &format!("{address}:{PORT}"), 2, &sections)
}

fn announced(relay: &Relay, active: bool, nth: usize) {
    let state = format!("active={active}");
    relay
        .wait_for_nth_all(&["broadcast=clock", &state], nth, DEADLINE)
        .unwrap_or_else(|| panic!("clock not announced {state}:\n{}", relay.log()));
}

#[test]
fn a_line_across_network_namespaces_with_delay_and_loss_survives_a_restart() {
    let impaired = std::env::var_os("QUMO_NETNS_UNIMPAIRED").is_none();
    if !is_root() {
        return eprintln!("SKIP: network namespaces need root (this test runs as a user)");
    }
    if let Err(e) = run(&["ip", "-V"]) {
        return eprintln!("SKIP: no `ip` (iproute2): {e}");
    }
    let hosts = Hosts::new();
    if let Err(missing) = hosts.build(impaired) {
        return eprintln!(
            "SKIP: {missing}{}",
            match impaired {
                true => " (QUMO_NETNS_UNIMPAIRED=1 runs the rest without netem)",
                false => "",
            }
        );
    }
    if !impaired {
        eprintln!("QUMO_NETNS_UNIMPAIRED: links without delay or loss");
    }

    let a = node(hosts.a(), "a", A, None);
    let b = node(hosts.b(), "b", "0.0.0.0", Some(A));
    let c = node(hosts.c(), "c", C, Some(B_TOWARDS_C));
    let _publisher =
        moq_clock_in_netns(hosts.a(), &format!("moql://{A}:{PORT}"), "clock", "publish");
    announced(&a, true, 0);
    announced(&c, true, 0);
    let url_c = format!("moql://{C}:{PORT}");
    let subscriber = moq_clock_in_netns(hosts.c(), &url_c, "clock", "subscribe");
    let ticks = subscriber.ticks(2, DEADLINE);
    assert!(
        ticks.len() >= 2,
        "ticks on C: {ticks:?}\nsubscriber:\n{}\nC:\n{}",
        subscriber.stderr.snapshot().join("\n"),
        c.log()
    );

    // B dies: C's subscriber hears the end the relay sends, not silence.
    drop(b);
    let heard = subscriber.wait_stderr_any(&ENDS, DEADLINE);
    let log = subscriber.stderr.snapshot();
    assert!(
        heard.is_some() && !log.iter().any(|l| l.contains("subscribe error")),
        "the subscriber heard a clean end; its log:\n{}\nC:\n{}",
        log.join("\n"),
        c.log()
    );
    announced(&c, false, 0);
    drop(subscriber);

    // B returns on its addresses: both links come back, and so does the clock.
    let _b = node(hosts.b(), "b", "0.0.0.0", Some(A));
    announced(&c, true, 1);
    let again = moq_clock_in_netns(hosts.c(), &url_c, "clock", "subscribe");
    let ticks = again.ticks(2, DEADLINE);
    assert!(
        ticks.len() >= 2,
        "ticks on C after B's return: {ticks:?}\nsubscriber:\n{}\nC:\n{}",
        again.stderr.snapshot().join("\n"),
        c.log()
    );
}
