//! Snapshot assembly for state transfer.
//!
//! A validator that is behind asks ONE peer for the snapshot of a proven stable
//! checkpoint (`Action::FetchState`). Only that peer's chunks, for that checkpoint, are
//! kept; anything else is refused before it costs memory, so a peer sending
//! unsolicited or conflicting chunks cannot grow the buffer or replace the snapshot
//! being assembled. A transfer is bounded in chunks and bytes, and abandoned (never
//! half-kept) when its peer breaks a bound or contradicts itself; the replica then asks
//! another peer when its fetch deadline passes. Asking anew always replaces the
//! transfer in progress.
//!
//! A complete snapshot becomes the single [`Offer`], which is installed only if the
//! replica approves exactly that offer's checkpoint and digest.

use pbft_crypto::Digest;
use pbft_protocol::{ReplicaId, Seq};

/// Most chunks a snapshot may have.
pub const MAX_CHUNKS: u32 = 1 << 16;

/// A transfer in progress.
#[derive(Debug)]
struct Transfer {
    peer: ReplicaId,
    seq: Seq,
    /// Set by the first chunk, as many slots as the peer announced chunks.
    parts: Option<Vec<Option<Vec<u8>>>>,
    /// Slots still empty.
    missing: usize,
    bytes: usize,
}

/// A complete snapshot waiting for the replica's verdict.
#[derive(Debug)]
pub struct Offer {
    /// The peer it came from.
    pub peer: ReplicaId,
    /// The checkpoint.
    pub seq: Seq,
    /// Its digest as computed from the chunks.
    pub digest: Digest,
    /// The chunks, in order.
    pub chunks: Vec<Vec<u8>>,
}

/// What became of one chunk.
#[derive(Debug, PartialEq, Eq)]
pub enum Chunk {
    /// Kept; more are missing.
    Partial,
    /// A duplicate of a chunk already kept: ignored.
    Duplicate,
    /// The last missing chunk: the snapshot is complete.
    Complete {
        /// The peer.
        peer: ReplicaId,
        /// The checkpoint.
        seq: Seq,
        /// The chunks, in order.
        chunks: Vec<Vec<u8>>,
    },
    /// Refused (the reason, for counters); nothing was kept.
    Refused(&'static str),
    /// Refused and the transfer abandoned: its peer broke a bound or contradicted
    /// itself.
    Abandoned(&'static str),
}

/// The snapshot being assembled, and the last complete one.
#[derive(Debug)]
pub struct Assembly {
    current: Option<Transfer>,
    /// The complete snapshot offered to the replica, if any.
    offer: Option<Offer>,
    max_bytes: usize,
}

impl Assembly {
    /// An assembly that buffers at most `max_bytes` of one snapshot.
    pub fn new(max_bytes: usize) -> Assembly {
        Assembly {
            current: None,
            offer: None,
            max_bytes,
        }
    }

    /// Starts a transfer of checkpoint `seq` from `peer`, abandoning any other transfer
    /// in progress. An offer already made stays: the replica may have approved it
    /// before asking anew, and its installation takes it by checkpoint and digest.
    pub fn begin(&mut self, peer: ReplicaId, seq: Seq) {
        self.current = Some(Transfer {
            peer,
            seq,
            parts: None,
            missing: 0,
            bytes: 0,
        });
    }

    /// Bytes buffered for the transfer in progress and the offer.
    pub fn buffered_bytes(&self) -> usize {
        self.current.as_ref().map_or(0, |t| t.bytes)
            + self
                .offer
                .as_ref()
                .map_or(0, |o| o.chunks.iter().map(Vec::len).sum())
    }

    /// True while a transfer is in progress.
    pub fn in_progress(&self) -> bool {
        self.current.is_some()
    }

    /// Makes `offer` the one complete snapshot waiting for the replica's verdict.
    pub fn set_offer(&mut self, offer: Offer) {
        self.offer = Some(offer);
    }

    /// Forgets the offer (the replica refused it, or has no use for it any more).
    pub fn drop_offer(&mut self) {
        self.offer = None;
    }

    /// Checkpoint `seq` was installed: a transfer of it or of an older one is useless.
    pub fn installed(&mut self, seq: Seq) {
        if self.current.as_ref().is_some_and(|t| t.seq <= seq) {
            self.current = None;
        }
    }

    /// One chunk from `from`.
    pub fn chunk(
        &mut self,
        from: ReplicaId,
        seq: Seq,
        index: u32,
        total: u32,
        data: Vec<u8>,
    ) -> Chunk {
        const UNSOLICITED: Chunk = Chunk::Refused("unsolicited snapshot chunk");
        let Some(t) = self
            .current
            .as_mut()
            .filter(|t| t.peer == from && t.seq == seq)
        else {
            return UNSOLICITED;
        };
        if total == 0 || total > MAX_CHUNKS || index >= total {
            self.current = None;
            return Chunk::Abandoned("bad snapshot chunk");
        }
        if t.parts.is_none() {
            t.missing = total as usize;
        }
        let parts = t.parts.get_or_insert_with(|| vec![None; total as usize]);
        if parts.len() != total as usize {
            self.current = None;
            return Chunk::Abandoned("conflicting snapshot chunk");
        }
        let slot = &mut parts[index as usize];
        if slot.is_some() {
            return Chunk::Duplicate;
        }
        if t.bytes.saturating_add(data.len()) > self.max_bytes {
            self.current = None;
            return Chunk::Abandoned("snapshot too large");
        }
        t.bytes += data.len();
        *slot = Some(data);
        t.missing -= 1;
        if t.missing > 0 {
            return Chunk::Partial;
        }
        match self.current.take() {
            Some(Transfer {
                peer,
                seq,
                parts: Some(parts),
                ..
            }) => Chunk::Complete {
                peer,
                seq,
                chunks: parts.into_iter().flatten().collect(),
            },
            _ => UNSOLICITED,
        }
    }

    /// Takes the offer if it is exactly checkpoint `seq` with `digest`.
    pub fn take_offer(&mut self, seq: Seq, digest: Digest) -> Option<Offer> {
        match &self.offer {
            Some(o) if o.seq == seq && o.digest == digest => self.offer.take(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(c: Chunk) -> Vec<Vec<u8>> {
        match c {
            Chunk::Complete { chunks, .. } => chunks,
            other => panic!("expected a complete snapshot, got {other:?}"),
        }
    }

    #[test]
    fn assembles_in_any_order_from_the_peer_asked() {
        let mut a = Assembly::new(1 << 20);
        a.begin(2, 16);
        assert_eq!(a.chunk(2, 16, 2, 3, vec![3]), Chunk::Partial);
        assert_eq!(a.chunk(2, 16, 0, 3, vec![1]), Chunk::Partial);
        assert_eq!(a.chunk(2, 16, 0, 3, vec![9]), Chunk::Duplicate);
        assert_eq!(a.buffered_bytes(), 2);
        let chunks = complete(a.chunk(2, 16, 1, 3, vec![2]));
        assert_eq!(chunks, vec![vec![1], vec![2], vec![3]]);
        assert!(!a.in_progress());
        // the transfer is over: more chunks are unsolicited
        assert_eq!(
            a.chunk(2, 16, 0, 3, vec![1]),
            Chunk::Refused("unsolicited snapshot chunk")
        );
    }

    #[test]
    fn refuses_chunks_nobody_asked_for_without_keeping_them() {
        let mut a = Assembly::new(1 << 20);
        assert_eq!(
            a.chunk(1, 16, 0, 2, vec![0; 100]),
            Chunk::Refused("unsolicited snapshot chunk")
        );
        a.begin(2, 16);
        for (from, seq) in [(1, 16), (3, 16), (2, 32), (2, 8)] {
            assert_eq!(
                a.chunk(from, seq, 0, 2, vec![0; 100]),
                Chunk::Refused("unsolicited snapshot chunk")
            );
        }
        assert_eq!(a.buffered_bytes(), 0);
        assert!(a.in_progress(), "the real transfer goes on");
        assert_eq!(a.chunk(2, 16, 0, 2, vec![1]), Chunk::Partial);
        assert_eq!(
            complete(a.chunk(2, 16, 1, 2, vec![2])),
            vec![vec![1], vec![2]]
        );
    }

    #[test]
    fn a_peer_that_contradicts_itself_or_breaks_a_bound_loses_the_transfer() {
        let mut a = Assembly::new(10);
        a.begin(2, 16);
        assert_eq!(a.chunk(2, 16, 0, 3, vec![1]), Chunk::Partial);
        assert_eq!(
            a.chunk(2, 16, 1, 4, vec![1]),
            Chunk::Abandoned("conflicting snapshot chunk")
        );
        assert!(!a.in_progress());
        assert_eq!(a.buffered_bytes(), 0);

        a.begin(2, 16);
        assert_eq!(a.chunk(2, 16, 0, 3, vec![0; 6]), Chunk::Partial);
        assert_eq!(
            a.chunk(2, 16, 1, 3, vec![0; 6]),
            Chunk::Abandoned("snapshot too large")
        );
        assert_eq!(a.buffered_bytes(), 0);

        for (index, total) in [(0, 0), (3, 3), (0, MAX_CHUNKS + 1)] {
            a.begin(2, 16);
            assert_eq!(
                a.chunk(2, 16, index, total, vec![1]),
                Chunk::Abandoned("bad snapshot chunk")
            );
        }
    }

    #[test]
    fn asking_anew_replaces_the_transfer_and_keeps_the_offer() {
        let mut a = Assembly::new(1 << 20);
        a.begin(2, 16);
        assert_eq!(a.chunk(2, 16, 0, 2, vec![1]), Chunk::Partial);
        a.begin(3, 16);
        assert_eq!(a.buffered_bytes(), 0);
        assert_eq!(
            a.chunk(2, 16, 1, 2, vec![2]),
            Chunk::Refused("unsolicited snapshot chunk")
        );
        let chunks = complete(a.chunk(3, 16, 0, 1, vec![7]));
        let digest = Digest::of(&[7]);
        a.set_offer(Offer {
            peer: 3,
            seq: 16,
            digest,
            chunks,
        });
        assert!(
            a.take_offer(16, Digest::of(&[8])).is_none(),
            "another digest"
        );
        assert!(a.take_offer(32, digest).is_none(), "another checkpoint");
        // the replica may have approved the offer before asking anew
        a.begin(1, 32);
        assert!(a.take_offer(16, digest).is_some(), "the offer stays");
        assert_eq!(a.buffered_bytes(), 0);
    }
}
