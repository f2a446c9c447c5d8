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

/// moq-clock 0.10.21's draft-14 subscriber (moq-net 0.1.3) has two races
/// of its own, and a busy machine loses them often:
/// - `ietf::Subscriber::start_announce` publishes an announced broadcast to
///   its origin before the task that serves its track requests has started;
///   a clock that sees the announcement first fails `subscribe_track` with
///   "Error: not found" and exits, no SUBSCRIBE ever sent.
/// - Its control-stream adapter writes a message's type and its body as two
///   chunks, and a SUBSCRIBE sent from another task can land between them
///   (seen as "wrote 1 bytes", "wrote 31 bytes", "wrote 3 bytes" in its
///   quinn trace): the PUBLISH_NAMESPACE_OK answering our announcement then
///   reads as a 768-byte message, so the relay never sees the SUBSCRIBE.
///
/// A subscriber that hits either is replaced until one gets through or the
/// deadline passes. The relay is still held to the rest: a SUBSCRIBE it
/// parsed must bring ticks.
fn ietf_ticks(
    relay: &Relay,
    publisher: &support::Client,
    url: &str,
    broadcast: &str,
) -> Vec<String> {
    const SUBSCRIBE_PARSED: &str = "ietf subscribe session=";
    let overall = Instant::now() + Duration::from_secs(120);
    let (mut lost_races, mut garbled) = (0, 0);
    while Instant::now() < overall {
        let parsed_before = relay.count(SUBSCRIBE_PARSED);
        let subscriber = ietf_clock(url, broadcast, "subscribe");
        let deadline = Instant::now() + Duration::from_secs(30);
        // When the clock said it sent SUBSCRIBE.
        let mut sent_at = None;
        loop {
            let ticks = subscriber.ticks(3, Duration::ZERO);
            if ticks.len() >= 3 {
                eprintln!("replaced {lost_races} racing and {garbled} garbling subscribers");
                return ticks;
            }
            let log = subscriber.stderr.snapshot();
            if log.iter().any(|l| l.contains("Error: not found")) {
                lost_races += 1;
                break;
            }
            if sent_at.is_none() && log.iter().any(|l| l.contains("subscribe started")) {
                sent_at = Some(Instant::now());
            }
            let parsed = relay.count(SUBSCRIBE_PARSED) > parsed_before;
            if !parsed && sent_at.is_some_and(|t| t.elapsed() > Duration::from_secs(10)) {
                garbled += 1;
                break;
            }
            assert!(
                Instant::now() < deadline,
                "got {ticks:?}; client log:\n{log:#?}\npublisher log:\n{:#?}\nrelay log:\n{}",
                publisher.stderr.snapshot(),
                relay.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    panic!(
        "{lost_races} draft-14 subscribers lost moq-net's announce race and \
         {garbled} garbled their SUBSCRIBE:\n{}",
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

/// Draft 14 over WebTransport: moq-native offers `moq-00` as the CONNECT's
/// protocol (the ALPN of the drafts that negotiate in CLIENT_SETUP), and the
/// relay runs its draft-14 session on that WebTransport session.
fn served_over_webtransport(relay: &Relay) {
    let opened = "transport=\"webtransport\" version=moq-transport-14";
    assert!(
        relay.wait_for(opened, Duration::from_secs(5)).is_some(),
        "no draft-14 WebTransport session:\n{}",
        relay.log()
    );
}

#[test]
fn a_draft_14_clock_over_webtransport_reaches_a_lite_subscriber() {
    let relay = Relay::start(2);
    let _publisher = ietf_clock(
        &format!("https://{}", relay.addr),
        "wt-ietf-to-lite",
        "publish",
    );
    relay
        .wait_for(
            "broadcast=wt-ietf-to-lite active=true",
            Duration::from_secs(10),
        )
        .unwrap_or_else(|| {
            panic!(
                "no draft-14 PUBLISH_NAMESPACE over WebTransport:\n{}",
                relay.log()
            )
        });
    served_over_webtransport(&relay);
    let subscriber = moq_clock(
        &format!("moql://{}", relay.addr),
        "wt-ietf-to-lite",
        "subscribe",
    );
    let ticks = subscriber.ticks(3, Duration::from_secs(15));
    assert!(
        ticks.len() >= 3,
        "got {ticks:?}; client log:\n{:#?}\nrelay log:\n{}",
        subscriber.stderr.snapshot(),
        relay.log()
    );
}

#[test]
fn a_lite_clock_reaches_a_draft_14_subscriber_over_webtransport() {
    let relay = Relay::start(2);
    let publisher = moq_clock(
        &format!("moql://{}", relay.addr),
        "lite-to-wt-ietf",
        "publish",
    );
    relay
        .wait_for(
            "broadcast=lite-to-wt-ietf active=true",
            Duration::from_secs(10),
        )
        .expect("the relay saw the clock's announcement");
    ietf_ticks(
        &relay,
        &publisher,
        &format!("https://{}", relay.addr),
        "lite-to-wt-ietf",
    );
    served_over_webtransport(&relay);
}
