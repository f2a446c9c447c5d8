//! A publisher connection: announces its broadcasts when the relay asks,
//! answers SUBSCRIBE with the next group, and writes every group on its own
//! unidirectional stream, one frame at a time on the track's clock.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Instant;

use qumo::lite::{
    BidiType, GroupHeader, Role, Subscribe, SubscribeOk, SubscribeReply, SubscribeUpdate,
    Timestamps, TrackInfo, TrackRequest, UniType, Version,
};
use qumo_shards::ShardContext;

use crate::transport::{BenchConn as Connection, BenchRecv as RecvStream, BenchSend as SendStream};

use crate::payload::{frame_head, now_us, padding, STAMP_LEN};
use crate::plan::{Plan, Shard};
use crate::session::{
    enc, encode_all, read_bidi_type, read_uni_type, refuse, send_setup, serve_announce, MsgReader,
    CODE_CANCEL,
};

/// Timescale the publisher stamps frame headers in (microseconds).
pub const TIMESCALE: u64 = 1_000_000;

/// What one publisher connection publishes.
struct Catalog {
    /// Full broadcast paths, for announcements.
    paths: Vec<String>,
    /// (broadcast path, track name, global track index).
    tracks: Vec<(String, String, usize)>,
}

impl Catalog {
    fn new(plan: &Plan, publisher: usize) -> Self {
        let l = &plan.cfg.load;
        let mut paths = Vec::new();
        let mut tracks = Vec::new();
        for b in 0..l.broadcasts {
            let path = plan.broadcast_path(publisher, b);
            for t in 0..l.tracks {
                tracks.push((
                    path.clone(),
                    Plan::track_name(t),
                    plan.track_index(publisher, b, t),
                ));
            }
            paths.push(path);
        }
        Self { paths, tracks }
    }

    fn find(&self, broadcast: &str, track: &str) -> Option<usize> {
        let broadcast = broadcast.trim_matches('/');
        self.tracks
            .iter()
            .find(|(b, t, _)| b == broadcast && t == track)
            .map(|(_, _, i)| *i)
    }
}

async fn sleep_until(t: Instant) {
    monoio::time::sleep_until(monoio::time::Instant::from_std(t)).await;
}

pub async fn run_publisher(shard: Rc<Shard>, ctx: ShardContext<()>, publisher: usize) {
    let plan = shard.plan.clone();
    shard.c.borrow_mut().pub_attempted += 1;
    let conn = match Connection::connect(&plan, &ctx, plan.addr, &plan.cfg.url.path).await {
        Ok(conn) => conn,
        Err(e) => {
            shard.c.borrow_mut().pub_failed += 1;
            shard.warn_once("publisher connect failed", e);
            return;
        }
    };
    shard.c.borrow_mut().pub_connected += 1;
    shard.conns.borrow_mut().push(conn.clone());
    let version = plan.cfg.version;
    let catalog = Rc::new(Catalog::new(&plan, publisher));

    {
        let conn = conn.clone();
        let path = plan.cfg.url.path.clone();
        monoio::spawn(async move {
            let _ = send_setup(&conn, version, Role::Publisher, &path).await;
        });
    }
    {
        // The relay's SETUP; nothing else should come this way.
        let conn = conn.clone();
        monoio::spawn(async move {
            while let Ok(recv) = conn.accept_uni().await {
                monoio::spawn(async move {
                    if let Some((_, mut reader)) = read_uni_type(recv, version).await {
                        let _ = reader.recv.stop(CODE_CANCEL);
                    }
                });
            }
        });
    }
    while let Ok((send, recv)) = conn.accept_bi().await {
        monoio::spawn(handle_bidi(
            shard.clone(),
            conn.clone(),
            catalog.clone(),
            send,
            recv,
        ));
    }
    if !shard.stopping() {
        shard.c.borrow_mut().pub_failed += 1;
        shard.warn_once(
            "publisher connection closed",
            conn.close_reason()
                .map(|e| e.to_string())
                .unwrap_or_default(),
        );
    }
}

async fn handle_bidi(
    shard: Rc<Shard>,
    conn: Connection,
    catalog: Rc<Catalog>,
    mut send: SendStream,
    recv: RecvStream,
) {
    let version = shard.plan.cfg.version;
    let Some((ty, mut reader)) = read_bidi_type(recv, version).await else {
        return;
    };
    match ty {
        BidiType::Announce => serve_announce(send, reader, version, &catalog.paths).await,
        BidiType::Subscribe => serve_subscribe(shard, conn, catalog, send, reader).await,
        BidiType::Track => {
            let Ok(Some(req)) = reader.next::<TrackRequest>().await else {
                return;
            };
            if catalog.find(&req.broadcast, &req.track).is_none() {
                refuse(&mut send, &mut reader);
                return;
            }
            let info = TrackInfo {
                priority: 0,
                max_latency: crate::plan::group_duration(&shard.plan.cfg).as_millis() as u64,
                timescale: TIMESCALE,
            };
            let bytes = encode_all(version, |out, v| enc(out, &info, v));
            if send.write_chunk(bytes).await.is_ok() {
                let _ = send.finish();
            }
        }
        BidiType::Goaway => {
            let _ = reader.drain().await;
        }
        _ => refuse(&mut send, &mut reader),
    }
}

async fn serve_subscribe(
    shard: Rc<Shard>,
    conn: Connection,
    catalog: Rc<Catalog>,
    mut send: SendStream,
    mut reader: MsgReader,
) {
    let plan = shard.plan.clone();
    let version = plan.cfg.version;
    let Ok(Some(sub)) = reader.next::<Subscribe>().await else {
        let _ = send.reset(CODE_CANCEL);
        return;
    };
    let Some(track) = catalog.find(&sub.broadcast, &sub.track) else {
        shard.warn_once(
            "relay subscribed to an unknown track",
            format!("{}/{}", sub.broadcast, sub.track),
        );
        refuse(&mut send, &mut reader);
        return;
    };
    shard.c.borrow_mut().upstream_subscriptions += 1;
    let first = plan.next_group(track, Instant::now());
    let reply = match version.has_track_stream() {
        false => SubscribeReply::Ok(SubscribeOk {
            priority: sub.priority,
            max_latency: 0,
            start_group: None,
            end_group: None,
        }),
        true => SubscribeReply::Start { group: first },
    };
    if send
        .write_chunk(encode_all(version, |out, v| enc(out, &reply, v)))
        .await
        .is_err()
    {
        return;
    }

    // The relay ends the subscription by closing its side of the stream.
    let cancelled = Rc::new(Cell::new(false));
    {
        let cancelled = cancelled.clone();
        monoio::spawn(async move {
            while let Ok(Some(_)) = reader.next::<SubscribeUpdate>().await {}
            cancelled.set(true);
        });
    }

    let mut seq = first;
    loop {
        sleep_until(plan.frame_time(track, seq, 0)).await;
        if cancelled.get() || shard.stopping() || conn.close_reason().is_some() {
            break;
        }
        monoio::spawn(serve_group(
            shard.clone(),
            conn.clone(),
            track,
            sub.id,
            seq,
            cancelled.clone(),
        ));
        seq += 1;
    }
    let _ = send.finish();
}

async fn serve_group(
    shard: Rc<Shard>,
    conn: Connection,
    track: usize,
    subscribe: u64,
    seq: u64,
    cancelled: Rc<Cell<bool>>,
) {
    let plan = shard.plan.clone();
    let version: Version = plan.cfg.version;
    let size = plan.cfg.load.frame_size;
    let Ok(mut stream) = conn.open_uni().await else {
        return;
    };
    let header = GroupHeader {
        subscribe,
        sequence: seq,
        frame_start: 0,
    };
    let head = encode_all(version, |out, v| {
        enc(out, &UniType::Group, v);
        enc(out, &header, v);
    });
    if stream.write_chunk(head).await.is_err() {
        return;
    }
    let mut stamps = Timestamps::default();
    for f in 0..plan.cfg.load.frames_per_group {
        sleep_until(plan.frame_time(track, seq, f)).await;
        if cancelled.get() || shard.stopping() {
            let _ = stream.reset(CODE_CANCEL);
            return;
        }
        let sent = now_us();
        let delta = match version.has_frame_timestamps() {
            true => Some(stamps.delta(sent).unwrap_or(0)),
            false => None,
        };
        if stream
            .write_chunk(frame_head(version, delta, size, sent))
            .await
            .is_err()
            || stream.write_chunk(padding(size - STAMP_LEN)).await.is_err()
        {
            // Stopped by the relay (it gave up on this group) or connection gone.
            return;
        }
        let mut c = shard.c.borrow_mut();
        c.frames_sent += 1;
        c.bytes_sent += size as u64;
    }
    if stream.finish().is_ok() {
        shard.c.borrow_mut().groups_sent += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{parse, Command, TlsCheck};

    #[test]
    fn a_catalog_finds_its_tracks_by_broadcast_and_name() {
        let Ok(Command::Run(cfg)) =
            parse(["--publishers", "2", "--broadcasts", "2", "--tracks", "2"].map(String::from))
        else {
            panic!()
        };
        let tls = crate::tls::client_config(&TlsCheck::Disabled, cfg.version).unwrap();
        let plan = Plan::new(*cfg, 1, "127.0.0.1:1".parse().unwrap(), tls, "x/run".into());
        let c = Catalog::new(&plan, 1);
        assert_eq!(c.paths, vec!["x/run/p1b0", "x/run/p1b1"]);
        assert_eq!(c.find("x/run/p1b1", "t1"), Some(plan.track_index(1, 1, 1)));
        assert_eq!(c.find("/x/run/p1b0", "t0"), Some(plan.track_index(1, 0, 0)));
        assert_eq!(c.find("x/run/p0b0", "t0"), None);
        assert_eq!(c.find("x/run/p1b0", "t9"), None);
    }
}
