//! Bookkeeping of a state transfer in progress.
//!
//! A validator that is behind asks ONE peer for the snapshot of a proven stable
//! checkpoint (`Action::FetchState`). Only that peer's chunks, for that checkpoint, are
//! taken; anything else is refused before it costs anything, so a peer sending
//! unsolicited or conflicting chunks cannot replace the snapshot being staged. A
//! transfer is bounded in chunks and bytes, and abandoned (never half-kept) when its
//! peer breaks a bound or contradicts itself; the replica then asks another peer when
//! its fetch deadline passes. Asking anew always replaces the transfer in progress.
//!
//! The chunks themselves are not kept here: the host hands each accepted chunk to the
//! ledger, which checks it and stages it (`Executor::import_chunk`), so what a transfer
//! holds in memory is a flag per chunk, not the snapshot. A complete snapshot becomes
//! the single [`Offer`], which is installed only if the replica approves exactly that
//! offer's checkpoint and digest.

use pbft_crypto::Digest;
use pbft_protocol::{ReplicaId, Seq};

/// Most chunks a snapshot may have.
pub const MAX_CHUNKS: u32 = pbft_executor::snapshot::MAX_CHUNKS;

/// A transfer in progress.
#[derive(Debug)]
struct Transfer {
    peer: ReplicaId,
    seq: Seq,
    /// Set by the first chunk, one flag per chunk the peer announced: taken yet.
    taken: Option<Vec<bool>>,
    /// Flags still false.
    missing: usize,
    bytes: usize,
}

/// A complete snapshot, staged in the ledger, waiting for the replica's verdict.
#[derive(Debug)]
pub struct Offer {
    /// The peer it came from.
    pub peer: ReplicaId,
    /// The checkpoint.
    pub seq: Seq,
    /// Its digest as the ledger computed it from the chunks.
    pub digest: Digest,
    /// The bytes of its chunks.
    pub bytes: usize,
}

/// What to do with one chunk.
#[derive(Debug, PartialEq, Eq)]
pub enum Chunk {
    /// Stage it in the ledger: `first` if it is the transfer's first (the ledger starts
    /// a new staging), `last` if it completes the snapshot.
    Stage {
        /// The transfer's first chunk.
        first: bool,
        /// The last missing chunk: the snapshot is complete once it is staged.
        last: bool,
    },
    /// A duplicate of a chunk already taken: ignored.
    Duplicate,
    /// Refused (the reason, for counters); nothing was kept.
    Refused(&'static str),
    /// Refused and the transfer abandoned: its peer broke a bound or contradicted
    /// itself. `staged` if chunks of it were staged in the ledger (to be discarded).
    Abandoned {
        /// Why.
        reason: &'static str,
        /// Chunks of it were staged.
        staged: bool,
    },
}

/// The transfer in progress, and the last complete snapshot.
#[derive(Debug)]
pub struct Assembly {
    current: Option<Transfer>,
    /// The complete snapshot offered to the replica, if any.
    offer: Option<Offer>,
    max_bytes: usize,
}

impl Assembly {
    /// An assembly that takes at most `max_bytes` of one snapshot.
    pub fn new(max_bytes: usize) -> Assembly {
        Assembly {
            current: None,
            offer: None,
            max_bytes,
        }
    }

    /// Starts a transfer of checkpoint `seq` from `peer`, abandoning any other transfer
    /// in progress; true if that one had chunks staged (to be discarded). An offer
    /// already made stays: the replica may have approved it before asking anew, and
    /// its installation takes it by checkpoint and digest.
    pub fn begin(&mut self, peer: ReplicaId, seq: Seq) -> bool {
        let replaced = self.current.replace(Transfer {
            peer,
            seq,
            taken: None,
            missing: 0,
            bytes: 0,
        });
        replaced.is_some_and(|t| t.taken.is_some())
    }

    /// Bytes this bookkeeping holds: a flag per chunk of the transfer in progress.
    pub fn held_bytes(&self) -> usize {
        self.current
            .as_ref()
            .and_then(|t| t.taken.as_ref())
            .map_or(0, Vec::capacity)
    }

    /// True while a transfer is in progress.
    pub fn in_progress(&self) -> bool {
        self.current.is_some()
    }

    /// True while a complete snapshot waits for the replica's verdict.
    pub fn has_offer(&self) -> bool {
        self.offer.is_some()
    }

    /// Makes `offer` the one complete snapshot waiting for the replica's verdict.
    pub fn set_offer(&mut self, offer: Offer) {
        self.offer = Some(offer);
    }

    /// Forgets the offer (the replica refused it, or has no use for it any more); true
    /// if there was one (its staging is to be discarded).
    pub fn drop_offer(&mut self) -> bool {
        self.offer.take().is_some()
    }

    /// Abandons the transfer in progress (its staging failed); true if there was one.
    pub fn abandon(&mut self) -> bool {
        self.current.take().is_some()
    }

    /// Checkpoint `seq` was installed: a transfer of it or of an older one is useless.
    pub fn installed(&mut self, seq: Seq) {
        if self.current.as_ref().is_some_and(|t| t.seq <= seq) {
            self.current = None;
        }
    }

    /// One chunk of `len` bytes from `from`: whether to stage it. A chunk that
    /// completes the snapshot ends the transfer: [`Assembly::complete`] makes its offer
    /// once it is staged.
    pub fn chunk(
        &mut self,
        from: ReplicaId,
        seq: Seq,
        index: u32,
        total: u32,
        len: usize,
    ) -> Chunk {
        const UNSOLICITED: Chunk = Chunk::Refused("unsolicited snapshot chunk");
        let Some(t) = self
            .current
            .as_mut()
            .filter(|t| t.peer == from && t.seq == seq)
        else {
            return UNSOLICITED;
        };
        let staged = t.taken.is_some();
        let abandon = |a: &mut Assembly, reason| {
            a.current = None;
            Chunk::Abandoned { reason, staged }
        };
        if total == 0 || total > MAX_CHUNKS || index >= total {
            return abandon(self, "bad snapshot chunk");
        }
        if t.taken.as_ref().is_some_and(|f| f.len() != total as usize) {
            return abandon(self, "conflicting snapshot chunk");
        }
        if t.taken.as_ref().is_some_and(|f| f[index as usize]) {
            return Chunk::Duplicate;
        }
        if t.bytes.saturating_add(len) > self.max_bytes {
            return abandon(self, "snapshot too large");
        }
        let first = !staged;
        if first {
            // the ledger holds a complete snapshot until the replica's verdict on it:
            // a new transfer waits for it (the replica asks again at its deadline)
            if self.offer.is_some() {
                return Chunk::Refused("a snapshot offer is pending");
            }
            t.missing = total as usize;
        }
        let taken = t.taken.get_or_insert_with(|| vec![false; total as usize]);
        taken[index as usize] = true;
        t.bytes += len;
        t.missing -= 1;
        Chunk::Stage {
            first,
            last: t.missing == 0,
        }
    }

    /// The transfer whose last chunk was staged: ends it and returns (peer, checkpoint,
    /// bytes) for its offer.
    pub fn complete(&mut self) -> Option<(ReplicaId, Seq, usize)> {
        match self.current.take() {
            Some(t) if t.missing == 0 && t.taken.is_some() => Some((t.peer, t.seq, t.bytes)),
            other => {
                self.current = other;
                None
            }
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

    fn stage(first: bool, last: bool) -> Chunk {
        Chunk::Stage { first, last }
    }

    #[test]
    fn takes_chunks_in_any_order_from_the_peer_asked() {
        let mut a = Assembly::new(1 << 20);
        a.begin(2, 16);
        assert_eq!(a.chunk(2, 16, 2, 3, 1), stage(true, false));
        assert_eq!(a.chunk(2, 16, 0, 3, 1), stage(false, false));
        assert_eq!(a.chunk(2, 16, 0, 3, 1), Chunk::Duplicate);
        assert_eq!(a.held_bytes(), 3, "a flag per chunk, not the chunks");
        assert_eq!(a.chunk(2, 16, 1, 3, 1), stage(false, true));
        assert_eq!(a.complete(), Some((2, 16, 3)));
        assert!(!a.in_progress());
        // the transfer is over: more chunks are unsolicited
        assert_eq!(
            a.chunk(2, 16, 0, 3, 1),
            Chunk::Refused("unsolicited snapshot chunk")
        );
    }

    #[test]
    fn refuses_chunks_nobody_asked_for_without_keeping_them() {
        let mut a = Assembly::new(1 << 20);
        assert_eq!(
            a.chunk(1, 16, 0, 2, 100),
            Chunk::Refused("unsolicited snapshot chunk")
        );
        a.begin(2, 16);
        for (from, seq) in [(1, 16), (3, 16), (2, 32), (2, 8)] {
            assert_eq!(
                a.chunk(from, seq, 0, 2, 100),
                Chunk::Refused("unsolicited snapshot chunk")
            );
        }
        assert_eq!(a.held_bytes(), 0);
        assert!(a.in_progress(), "the real transfer goes on");
        assert_eq!(a.chunk(2, 16, 0, 2, 1), stage(true, false));
        assert_eq!(a.chunk(2, 16, 1, 2, 1), stage(false, true));
    }

    #[test]
    fn a_peer_that_contradicts_itself_or_breaks_a_bound_loses_the_transfer() {
        let mut a = Assembly::new(10);
        a.begin(2, 16);
        assert_eq!(a.chunk(2, 16, 0, 3, 1), stage(true, false));
        assert_eq!(
            a.chunk(2, 16, 1, 4, 1),
            Chunk::Abandoned {
                reason: "conflicting snapshot chunk",
                staged: true
            }
        );
        assert!(!a.in_progress());
        assert_eq!(a.held_bytes(), 0);

        a.begin(2, 16);
        assert_eq!(a.chunk(2, 16, 0, 3, 6), stage(true, false));
        assert_eq!(
            a.chunk(2, 16, 1, 3, 6),
            Chunk::Abandoned {
                reason: "snapshot too large",
                staged: true
            }
        );

        for (index, total) in [(0, 0), (3, 3), (0, MAX_CHUNKS + 1)] {
            a.begin(2, 16);
            assert_eq!(
                a.chunk(2, 16, index, total, 1),
                Chunk::Abandoned {
                    reason: "bad snapshot chunk",
                    staged: false
                }
            );
        }
    }

    #[test]
    fn asking_anew_replaces_the_transfer_and_keeps_the_offer() {
        let mut a = Assembly::new(1 << 20);
        a.begin(2, 16);
        assert_eq!(a.chunk(2, 16, 0, 2, 1), stage(true, false));
        assert!(a.begin(3, 16), "the replaced transfer had chunks staged");
        assert_eq!(a.held_bytes(), 0);
        assert_eq!(
            a.chunk(2, 16, 1, 2, 1),
            Chunk::Refused("unsolicited snapshot chunk")
        );
        assert_eq!(a.chunk(3, 16, 0, 1, 7), stage(true, true));
        let (peer, seq, bytes) = a.complete().expect("complete");
        let digest = Digest::of(&[7]);
        a.set_offer(Offer {
            peer,
            seq,
            digest,
            bytes,
        });
        assert!(
            a.take_offer(16, Digest::of(&[8])).is_none(),
            "another digest"
        );
        assert!(a.take_offer(32, digest).is_none(), "another checkpoint");
        // the replica may have approved the offer before asking anew
        assert!(!a.begin(1, 32), "nothing of the new transfer is staged");
        // while the offer waits, the new transfer's chunks wait too
        assert_eq!(
            a.chunk(1, 32, 0, 2, 1),
            Chunk::Refused("a snapshot offer is pending")
        );
        assert!(a.take_offer(16, digest).is_some(), "the offer stays");
        assert_eq!(a.chunk(1, 32, 0, 2, 1), stage(true, false));
    }
}
