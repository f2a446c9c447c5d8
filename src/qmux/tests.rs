//! QMux connections without a socket: frames in by `receive`, out by
//! `poll_outbound`, and two ends joined by a pump.

use std::future::{poll_fn, Future};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;

use super::codec::{Frame, StreamId, TransportCode, TransportParams};
use super::{QmuxLimits, QmuxOrigin, QmuxTransport};
use crate::session::transport::{RecvStream, SendStream, Transport};

fn limits() -> QmuxLimits {
    QmuxLimits {
        max_streams_bidi: 4,
        max_streams_uni: 2,
        stream_window: 10,
        connection_window: 15,
        outbound_bytes: 64 * 1024,
    }
}

fn server(limits: QmuxLimits) -> QmuxTransport {
    QmuxTransport::new(true, limits, QmuxOrigin::default())
}

/// Every frame queued now.
fn drain(t: &QmuxTransport) -> Vec<Frame> {
    let cx = Context::from_waker(Waker::noop());
    let mut frames = Vec::new();
    while let Poll::Ready(Some(bytes)) = t.poll_outbound(&cx) {
        frames.push(Frame::decode(bytes).unwrap());
    }
    frames
}

fn peer_params(stream_data: u64, max_data: u64, streams: u64) -> Frame {
    Frame::TransportParameters(TransportParams {
        max_idle_timeout_ms: 0,
        initial_max_data: max_data,
        initial_max_stream_data_bidi_local: stream_data,
        initial_max_stream_data_bidi_remote: stream_data,
        initial_max_stream_data_uni: stream_data,
        initial_max_streams_bidi: streams,
        initial_max_streams_uni: streams,
    })
}

fn send(t: &QmuxTransport, frame: Frame) -> Result<(), super::QmuxError> {
    t.receive(frame.encode())
}

fn stream(index: u64, data: &'static [u8], fin: bool) -> Frame {
    Frame::Stream {
        id: StreamId::new(false, true, index),
        offset: None,
        data: Bytes::from_static(data),
        fin,
    }
}

/// The connection closed with transport error `code`, its last frame.
fn assert_closed_with(t: &QmuxTransport, code: TransportCode) {
    assert!(t.is_closed());
    let frames = drain(t);
    assert!(
        matches!(frames.last(), Some(Frame::Close { application: false, code: c, .. }) if *c == code.0),
        "{frames:?}"
    );
}

#[test]
fn our_parameters_go_first_and_the_peers_must_come_first() {
    let t = server(limits());
    let frames = drain(&t);
    assert!(matches!(
        frames.first(),
        Some(Frame::TransportParameters(p)) if p.initial_max_streams_uni == 2
            && p.initial_max_stream_data_uni == 10
            && p.initial_max_data == 15
    ));
    let error = send(&t, stream(0, b"x", false)).unwrap_err();
    assert_eq!(error.code, TransportCode::PROTOCOL_VIOLATION);
    assert_closed_with(&t, TransportCode::PROTOCOL_VIOLATION);
}

#[test]
fn a_stream_beyond_max_streams_closes_the_connection() {
    let t = server(limits());
    drain(&t);
    send(&t, peer_params(100, 100, 10)).unwrap();
    send(&t, stream(1, b"", false)).unwrap();
    let error = send(&t, stream(2, b"", false)).unwrap_err();
    assert_eq!(error.code, TransportCode::STREAM_LIMIT_ERROR);
    assert_closed_with(&t, TransportCode::STREAM_LIMIT_ERROR);
}

#[test]
fn data_beyond_a_window_closes_the_connection() {
    // One stream past its own window.
    let t = server(limits());
    drain(&t);
    send(&t, peer_params(100, 100, 10)).unwrap();
    let error = send(&t, stream(0, b"eleven byte", false)).unwrap_err();
    assert_eq!(error.code, TransportCode::FLOW_CONTROL_ERROR);
    assert_closed_with(&t, TransportCode::FLOW_CONTROL_ERROR);

    // Two streams within theirs, past the connection's.
    let t = server(limits());
    drain(&t);
    send(&t, peer_params(100, 100, 10)).unwrap();
    send(&t, stream(0, b"eight by", false)).unwrap();
    let error = send(&t, stream(1, b"eight by", false)).unwrap_err();
    assert_eq!(error.code, TransportCode::FLOW_CONTROL_ERROR);
}

#[test]
fn frames_for_our_unidirectional_streams_are_refused() {
    let t = server(limits());
    drain(&t);
    send(&t, peer_params(100, 100, 10)).unwrap();
    let ours = Frame::Stream {
        id: StreamId::new(true, true, 0),
        offset: None,
        data: Bytes::new(),
        fin: false,
    };
    let error = send(&t, ours).unwrap_err();
    assert_eq!(error.code, TransportCode::STREAM_STATE_ERROR);
}

#[monoio::test]
async fn reading_gives_credit_back_and_dropped_streams_give_their_slot_back() {
    let t = server(limits());
    drain(&t);
    send(&t, peer_params(100, 100, 10)).unwrap();
    send(&t, stream(0, b"nine byte", true)).unwrap();
    send(&t, stream(1, b"two", false)).unwrap();
    let (mut first, _) = t.accept_uni().await.unwrap();
    assert_eq!(
        first.read_chunk(100).await.unwrap(),
        Some(Bytes::from_static(b"nine byte"))
    );
    assert_eq!(first.read_chunk(100).await.unwrap(), None);
    // 9 of 15 read: the connection window is raised (15 - 9 < 15 / 2).
    let frames = drain(&t);
    assert!(
        frames.iter().any(|f| matches!(f, Frame::MaxData(24))),
        "{frames:?}"
    );
    drop(first);
    let frames = drain(&t);
    assert!(
        frames
            .iter()
            .any(|f| matches!(f, Frame::MaxStreams { uni: true, max: 3 })),
        "{frames:?}"
    );
    // The slot is usable: stream 2 opens.
    send(&t, stream(2, b"ok", false)).unwrap();
    assert!(!t.is_closed());

    // A stream dropped unread is stopped and its bytes credited.
    let (second, _) = t.accept_uni().await.unwrap();
    drop(second);
    let frames = drain(&t);
    assert!(
        frames
            .iter()
            .any(|f| matches!(f, Frame::StopSending { id, code: 0 } if *id == StreamId::new(false, true, 1))),
        "{frames:?}"
    );
}

#[monoio::test]
async fn writes_wait_for_the_peers_credit() {
    let t = server(limits());
    drain(&t);
    send(&t, peer_params(5, 100, 1)).unwrap();
    let mut out = t.open_uni().await.unwrap();
    let mut chunks = [Bytes::from_static(b"0123456789")];
    let written = poll_fn(|cx| out.poll_write_chunks(cx, &mut chunks))
        .await
        .unwrap();
    assert_eq!(written, 5);
    let mut cx = Context::from_waker(Waker::noop());
    assert!(out.poll_write_chunks(&mut cx, &mut chunks).is_pending());
    let id = StreamId::new(true, true, 0);
    send(&t, Frame::MaxStreamData { id, max: 10 }).unwrap();
    let written = poll_fn(|cx| out.poll_write_chunks(cx, &mut chunks))
        .await
        .unwrap();
    assert_eq!(written, 5);
    out.finish().unwrap();
    let data: Vec<u8> = drain(&t)
        .into_iter()
        .filter_map(|f| match f {
            Frame::Stream { data, .. } => Some(data.to_vec()),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(data, b"0123456789");
    // Only one uni stream allowed: a second open waits.
    let mut second = std::pin::pin!(t.open_uni());
    assert!(second.as_mut().poll(&mut cx).is_pending());
}

/// Move every queued frame from `from` to `to`.
fn pump(from: &QmuxTransport, to: &QmuxTransport) -> usize {
    let cx = Context::from_waker(Waker::noop());
    let mut moved = 0;
    while let Poll::Ready(Some(bytes)) = from.poll_outbound(&cx) {
        to.receive(bytes).unwrap();
        moved += 1;
    }
    moved
}

#[monoio::test(enable_timer = true)]
async fn a_megabyte_crosses_small_windows_between_two_ends() {
    let small = QmuxLimits {
        stream_window: 4096,
        connection_window: 8192,
        ..limits()
    };
    let server = server(small);
    let client = QmuxTransport::new(false, small, QmuxOrigin::default());
    let payload: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    let expected = payload.clone();
    let (a, b) = (server.clone(), client.clone());
    let pumping = monoio::spawn(async move {
        while !(a.is_closed() && b.is_closed()) {
            pump(&a, &b);
            pump(&b, &a);
            monoio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    });
    let writer = monoio::spawn({
        let server = server.clone();
        async move {
            let mut out = server.open_uni().await.unwrap();
            out.write_chunk(Bytes::from(payload)).await.unwrap();
            out.finish().unwrap();
        }
    });
    let (mut input, _) = client.accept_uni().await.unwrap();
    let mut got = Vec::new();
    while let Some(chunk) = input.read_chunk(usize::MAX).await.unwrap() {
        got.extend_from_slice(&chunk);
    }
    writer.await;
    assert_eq!(got.len(), expected.len());
    assert!(got == expected);
    server.close(crate::lite::SessionCode::CANCEL, "");
    client.close(crate::lite::SessionCode::CANCEL, "");
    pumping.await;
}
