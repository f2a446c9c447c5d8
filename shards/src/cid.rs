//! Connection ids that name their shard, and reading that name back off a
//! packet.
//!
//! Invariant: every connection id a shard issues has the shard index in its
//! first byte. The BPF steering program and [`owning_shard`] rely on it; the
//! rest of the id is random so ids stay unlinkable across paths.
//!
//! The id a shard picks for a connection it dials is also *marked*: its last
//! 4 bytes are a keyed hash ([`DialKey`], secret to this process) of the
//! first 5. The server's Initial answering the dial carries that id, and it
//! is the only Initial steered by its id; any other Initial (a client picks
//! its id, and may pick 9 bytes that name a shard) goes where the kernel's
//! 4-tuple hash puts it, so no client can aim its handshakes at one shard.

use std::hash::Hasher;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use quinn_proto::{ConnectionId, ConnectionIdGenerator, InvalidCid};

/// Length of every server-issued connection id: the shard byte plus 8 random
/// bytes, as unguessable as quinn's default 8-byte ids.
pub const CID_LEN: usize = 9;

/// Where a dialled id's mark starts: the shard byte and 4 random bytes
/// come before it.
const MARK_AT: usize = 5;

/// The secret that marks the ids of connections this runtime dialled; one
/// per runtime, shared by its shards.
#[derive(Clone)]
pub struct DialKey([u8; 16]);

impl std::fmt::Debug for DialKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DialKey(..)")
    }
}

impl DialKey {
    pub fn random() -> Self {
        let mut key = [0u8; 16];
        fill_random(&mut key);
        DialKey(key)
    }

    /// The mark for an id's first [`MARK_AT`] bytes: SipHash over the key
    /// and them (a fixed-length input, so the key prefix makes it a MAC).
    fn mark(&self, head: &[u8]) -> [u8; CID_LEN - MARK_AT] {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        hasher.write(&self.0);
        hasher.write(head);
        let hash = hasher.finish().to_le_bytes();
        let mut mark = [0u8; CID_LEN - MARK_AT];
        mark.copy_from_slice(&hash[..CID_LEN - MARK_AT]);
        mark
    }

    /// Whether `cid` is one this runtime picked for a dial.
    pub fn marks(&self, cid: &[u8]) -> bool {
        cid.len() == CID_LEN && cid[MARK_AT..] == self.mark(&cid[..MARK_AT])
    }
}

/// Issues connection ids for one shard.
#[derive(Debug)]
pub struct ShardCidGenerator {
    shard: u8,
    lifetime: Option<Duration>,
    key: DialKey,
    /// Set by the shard just before it dials: the next id is for that
    /// connection and carries the mark.
    dialling: Arc<AtomicBool>,
}

impl ShardCidGenerator {
    pub fn new(shard: u8, key: DialKey, dialling: Arc<AtomicBool>) -> Self {
        Self {
            shard,
            lifetime: None,
            key,
            dialling,
        }
    }
}

impl ConnectionIdGenerator for ShardCidGenerator {
    fn generate_cid(&mut self) -> ConnectionId {
        let mut bytes = [0u8; CID_LEN];
        bytes[0] = self.shard;
        if self.dialling.swap(false, Ordering::Relaxed) {
            fill_random(&mut bytes[1..MARK_AT]);
            let mark = self.key.mark(&bytes[..MARK_AT]);
            bytes[MARK_AT..].copy_from_slice(&mark);
        } else {
            fill_random(&mut bytes[1..]);
        }
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
/// Long-header packet type bits (RFC 9000 17.2) in QUIC v1.
const LONG_TYPE_MASK: u8 = 0x30;
const INITIAL: u8 = 0x00;

/// The shard that owns the connection a datagram belongs to, if the datagram
/// names one.
///
/// - Short header: the first byte of the destination connection id.
/// - Long header, not Initial (Handshake, 0-RTT, Retry): the same, when the
///   destination id has our length. 0-RTT carries the client's random id, but
///   it arrives on the same 4-tuple as the Initial, so the kernel hash already
///   put it with its Initial on this shard; forwarding it would be wrong only
///   if its random first byte names another shard, so 0-RTT is left local.
/// - Initial whose destination id carries `key`'s mark: the same. It is a
///   server's Initial answering a connection this runtime dialled, and it
///   names the dialling shard (the kernel's hash of the 4-tuple would pick
///   any shard).
/// - Any other Initial: `None`. The client picked the destination id, so it
///   names nothing it may be trusted with; the receiving shard accepts the
///   connection.
pub fn owning_shard(datagram: &[u8], key: &DialKey) -> Option<u8> {
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
    if packet_type == INITIAL {
        let dcid = datagram.get(6..6 + CID_LEN)?;
        return key.marks(dcid).then_some(dcid[0]);
    }
    datagram.get(6).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generator(shard: u8) -> ShardCidGenerator {
        ShardCidGenerator::new(shard, DialKey::random(), Arc::default())
    }

    #[test]
    fn every_generated_id_starts_with_the_shard_index() {
        let mut generator = generator(7);
        for _ in 0..100 {
            let cid = generator.generate_cid();
            assert_eq!(cid.len(), CID_LEN);
            assert_eq!(cid[0], 7);
            assert!(generator.validate(&cid).is_ok());
        }
    }

    #[test]
    fn generated_ids_are_not_repeated() {
        let mut generator = generator(0);
        let a = generator.generate_cid();
        let b = generator.generate_cid();
        assert_ne!(a, b);
    }

    #[test]
    fn another_shards_id_does_not_validate() {
        let mut other = generator(3);
        let ours = generator(4);
        assert!(ours.validate(&other.generate_cid()).is_err());
    }

    #[test]
    fn short_header_packets_name_their_shard() {
        let packet = [0x41, 5, 1, 2, 3, 4, 5, 6, 7, 8, 0xaa, 0xbb];
        assert_eq!(owning_shard(&packet, &DialKey::random()), Some(5));
    }

    #[test]
    fn handshake_packets_name_their_shard() {
        let mut packet = vec![0xe0, 0, 0, 0, 1, CID_LEN as u8, 2];
        packet.extend_from_slice(&[0; CID_LEN - 1]);
        assert_eq!(owning_shard(&packet, &DialKey::random()), Some(2));
    }

    /// An Initial addressed to `dcid`.
    fn initial_to(dcid: &[u8]) -> Vec<u8> {
        let mut packet = vec![0xc0, 0, 0, 0, 1, dcid.len() as u8];
        packet.extend_from_slice(dcid);
        packet.extend_from_slice(&[0; 32]);
        packet
    }

    #[test]
    fn only_initials_answering_our_dials_name_their_shard() {
        let key = DialKey::random();
        let dialling = Arc::new(AtomicBool::new(false));
        let mut shard_2 = ShardCidGenerator::new(2, key.clone(), dialling.clone());

        // The id shard 2 picked for a dial: the server's Initial routes back.
        dialling.store(true, Ordering::Relaxed);
        let dialled = shard_2.generate_cid();
        assert!(!dialling.load(Ordering::Relaxed), "one id per dial");
        assert_eq!(owning_shard(&initial_to(&dialled), &key), Some(2));
        // Under another runtime's key it names nothing.
        assert_eq!(
            owning_shard(&initial_to(&dialled), &DialKey::random()),
            None
        );

        // A client choosing 9-byte ids to aim at shard 2: whatever else it
        // puts in them (here every value of every byte it controls, one at a
        // time), its Initials are left to the kernel's hash. A fixed key, so
        // the 2^-32 chance of hitting a mark cannot make this flake.
        let key = DialKey([7; 16]);
        let mut aimed = 0;
        for position in 1..CID_LEN {
            for value in 0..=255u8 {
                let mut dcid = [0u8; CID_LEN];
                dcid[0] = 2;
                dcid[position] = value;
                if owning_shard(&initial_to(&dcid), &key).is_some() {
                    aimed += 1;
                }
            }
        }
        assert_eq!(aimed, 0, "a client-chosen id steered its Initial");
        // Other lengths never name a shard.
        assert_eq!(owning_shard(&initial_to(&[2; 8]), &key), None);
    }

    #[test]
    fn foreign_length_ids_and_truncated_packets_name_nothing() {
        let key = DialKey::random();
        assert_eq!(owning_shard(&[], &key), None);
        assert_eq!(owning_shard(&[0x41], &key), None);
        assert_eq!(owning_shard(&[0xe0, 0, 0, 0, 1, 8, 2], &key), None);
        assert_eq!(owning_shard(&[0xe0, 0, 0], &key), None);
        assert_eq!(owning_shard(&[0xc0, 0, 0, 0, 1, 9, 2, 0], &key), None);
    }
}
