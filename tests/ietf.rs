//! Interop over IETF moq-transport draft 14 (ALPN `moq-00`): moq-dev's
//! `moq-clock` 0.10.21 with `--client-version moq-transport-14` meets
//! moq-lite clients through one `qumo-relay`.

mod support;

use std::time::{Duration, Instant};

use support::{moq_clock, spawn_moq_clock, Relay};

/// A moq-clock speaking only draft 14, trusting any certificate.
fn ietf_clock(url: &str, broadcast: &str, mode: &str) -> support::Client {
    spawn_moq_clock(&[
        "--url",
        url,
        "--broadcast",
        broadcast,
        "--tls-disable-verify",
        "--client-version",
        "moq-transport-14",
        mode,
    ])
}

/// moq-clock 0.10.21's draft-14 subscriber (moq-net 0.1.3,
/// `ietf::Subscriber::start_announce`) publishes an announced broadcast to
/// its origin before the task that serves its track requests has started;
/// a clock that sees the announcement first fails `subscribe_track` with
/// "Error: not found" and exits, no SUBSCRIBE ever sent. That race is the
/// client's and a busy machine loses it often, so a subscriber that hits it
/// is replaced until one gets through or the deadline passes. Only a
/// subscriber that did SUBSCRIBE and then got no ticks fails the test.
fn ietf_ticks(
    relay: &Relay,
    publisher: &support::Client,
    url: &str,
    broadcast: &str,
) -> Vec<String> {
    let overall = Instant::now() + Duration::from_secs(90);
    let mut lost_races = 0;
    while Instant::now() < overall {
        let subscriber = ietf_clock(url, broadcast, "subscribe");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let ticks = subscriber.ticks(3, Duration::ZERO);
            if ticks.len() >= 3 {
                return ticks;
            }
            let lost_race = subscriber
                .stderr
                .snapshot()
                .iter()
                .any(|l| l.contains("Error: not found"));
            if lost_race {
                lost_races += 1;
                break;
            }
            assert!(
                Instant::now() < deadline,
                "got {ticks:?}; client log:\n{:#?}\npublisher log:\n{:#?}\nrelay log:\n{}",
                subscriber.stderr.snapshot(),
                publisher.stderr.snapshot(),
                relay.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    panic!(
        "{lost_races} draft-14 subscribers lost moq-net's announce race:\n{}",
        relay.log()
    );
}

#[test]
fn a_lite_clock_reaches_a_draft_14_subscriber() {
    let relay = Relay::start(1);
    let url = format!("moql://{}", relay.addr);
    let publisher = moq_clock(&url, "lite-to-ietf", "publish");
    relay
        .wait_for(
            "broadcast=lite-to-ietf active=true",
            Duration::from_secs(10),
        )
        .expect("the relay saw the clock's announcement");
    ietf_ticks(&relay, &publisher, &url, "lite-to-ietf");
    // It went through the draft-14 session, not a lite one.
    assert!(
        relay
            .wait_for("ietf subscribe", Duration::from_secs(1))
            .is_some(),
        "{}",
        relay.log()
    );
}

#[test]
fn a_draft_14_clock_reaches_a_lite_subscriber() {
    let relay = Relay::start(1);
    let url = format!("moql://{}", relay.addr);
    let _publisher = ietf_clock(&url, "ietf-to-lite", "publish");
    relay
        .wait_for(
            "broadcast=ietf-to-lite active=true",
            Duration::from_secs(10),
        )
        .expect("the relay saw the draft-14 PUBLISH_NAMESPACE");
    let subscriber = moq_clock(&url, "ietf-to-lite", "subscribe");
    let ticks = subscriber.ticks(3, Duration::from_secs(15));
    assert!(
        ticks.len() >= 3,
        "got {ticks:?}; client log:\n{:#?}\nrelay log:\n{}",
        subscriber.stderr.snapshot(),
        relay.log()
    );
    assert!(
        relay.count("ietf subscribing upstream") >= 1,
        "{}",
        relay.log()
    );
}

#[test]
fn a_draft_14_clock_reaches_a_draft_14_subscriber() {
    let relay = Relay::start(2);
    let url = format!("moql://{}", relay.addr);
    let publisher = ietf_clock(&url, "ietf-to-ietf", "publish");
    relay
        .wait_for(
            "broadcast=ietf-to-ietf active=true",
            Duration::from_secs(10),
        )
        .expect("the relay saw the draft-14 PUBLISH_NAMESPACE");
    ietf_ticks(&relay, &publisher, &url, "ietf-to-ietf");
}
