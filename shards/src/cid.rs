//! Connection ids that name their shard, and reading that name back off a
//! packet.
//!
//! Invariant: every connection id a shard issues has the shard index in its
//! first byte. The BPF steering program and [`owning_shard`] rely on it; the
//! rest of the id is random so ids stay unlinkable across paths.

use std::time::Duration;

use quinn_proto::{ConnectionId, ConnectionIdGenerator, InvalidCid};

/// Length of every server-issued connection id: the shard byte plus 8 random
/// bytes, as unguessable as quinn's default 8-byte ids.
pub const CID_LEN: usize = 9;

/// Issues connection ids for one shard.
#[derive(Debug)]
pub struct ShardCidGenerator {
    shard: u8,
    lifetime: Option<Duration>,
}

impl ShardCidGenerator {
    pub fn new(shard: u8) -> Self {
        Self {
            shard,
            lifetime: None,
        }
    }
}

impl ConnectionIdGenerator for ShardCidGenerator {
    fn generate_cid(&mut self) -> ConnectionId {
        let mut bytes = [0u8; CID_LEN];
        bytes[0] = self.shard;
        fill_random(&mut bytes[1..]);
        ConnectionId::new(&bytes)
    }

    fn validate(&self, cid: &ConnectionId) -> Result<(), InvalidCid> {
        if cid.len() == CID_LEN && cid[0] == self.shard {
            Ok(())
        } else {
            Err(InvalidCid)
        }
    }

    fn cid_len(&self) -> usize {
        CID_LEN
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        self.lifetime
    }
}

fn fill_random(out: &mut [u8]) {
    // The ring provider's RNG is the same one that keys TLS; failure means the
    // OS RNG is gone, and then no connection could be secured anyway.
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(out)
        .expect("operating system random number generator failed");
}

const LONG_HEADER: u8 = 0x80;
/// Long-header packet type bits (RFC 9000 17.2) for Initial in QUIC v1.
const LONG_TYPE_MASK: u8 = 0x30;

/// The shard that owns the connection a datagram belongs to, if the datagram
/// names one.
///
/// - Short header: the first byte of the destination connection id.
/// - Long header, not Initial (Handshake, 0-RTT, Retry): the same, when the
///   destination id has our length. 0-RTT carries the client's random id, but
///   it arrives on the same 4-tuple as the Initial, so the kernel hash already
///   put it with its Initial on this shard; forwarding it would be wrong only
///   if its random first byte names another shard, so 0-RTT is left local.
/// - Initial with a destination id of our length: the same. A server's
///   Initial answering a connection this runtime dialled names the dialling
///   shard's id (the kernel's hash of the 4-tuple would pick any shard). A
///   client's random id of this unusual length names a shard at random,
///   the same one for every Initial with that id, which is as good as the
///   hash.
/// - Any other Initial: `None`. The client picked the destination id at
///   random, so it names nothing; the receiving shard accepts the connection.
pub fn owning_shard(datagram: &[u8]) -> Option<u8> {
    let first = *datagram.first()?;
    if first & LONG_HEADER == 0 {
        return datagram.get(1).copied();
    }
    let packet_type = first & LONG_TYPE_MASK;
    // 0x10 is 0-RTT in QUIC v1: see the doc comment for why it stays local.
    if packet_type == 0x10 {
        return None;
    }
    // flags(1) version(4) dcid_len(1) dcid
    let dcid_len = *datagram.get(5)? as usize;
    if dcid_len != CID_LEN {
        return None;
    }
    datagram.get(6).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_generated_id_starts_with_the_shard_index() {
        let mut generator = ShardCidGenerator::new(7);
        for _ in 0..100 {
            let cid = generator.generate_cid();
            assert_eq!(cid.len(), CID_LEN);
            assert_eq!(cid[0], 7);
            assert!(generator.validate(&cid).is_ok());
        }
    }

    #[test]
    fn generated_ids_are_not_repeated() {
        let mut generator = ShardCidGenerator::new(0);
        let a = generator.generate_cid();
        let b = generator.generate_cid();
        assert_ne!(a, b);
    }

    #[test]
    fn another_shards_id_does_not_validate() {
        let mut other = ShardCidGenerator::new(3);
        let ours = ShardCidGenerator::new(4);
        assert!(ours.validate(&other.generate_cid()).is_err());
    }

    #[test]
    fn short_header_packets_name_their_shard() {
        let packet = [0x41, 5, 1, 2, 3, 4, 5, 6, 7, 8, 0xaa, 0xbb];
        assert_eq!(owning_shard(&packet), Some(5));
    }

    #[test]
    fn handshake_packets_name_their_shard() {
        let mut packet = vec![0xe0, 0, 0, 0, 1, CID_LEN as u8, 2];
        packet.extend_from_slice(&[0; CID_LEN - 1]);
        assert_eq!(owning_shard(&packet), Some(2));
    }

    #[test]
    fn initials_with_our_id_length_name_their_shard_and_others_stay() {
        // A server answering a connection shard 2 dialled.
        let mut ours = vec![0xc0, 0, 0, 0, 1, CID_LEN as u8, 2];
        ours.extend_from_slice(&[0; CID_LEN - 1]);
        assert_eq!(owning_shard(&ours), Some(2));
        // A client's random 8- or 20-byte id names nothing.
        let mut theirs = vec![0xc0, 0, 0, 0, 1, 8, 2];
        theirs.extend_from_slice(&[0; 7]);
        assert_eq!(owning_shard(&theirs), None);
    }

    #[test]
    fn foreign_length_ids_and_truncated_packets_name_nothing() {
        assert_eq!(owning_shard(&[]), None);
        assert_eq!(owning_shard(&[0x41]), None);
        assert_eq!(owning_shard(&[0xe0, 0, 0, 0, 1, 8, 2]), None);
        assert_eq!(owning_shard(&[0xe0, 0, 0]), None);
    }
}
