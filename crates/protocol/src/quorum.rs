//! Quorum tracking: votes are sets of distinct senders keyed by `(view, seq, digest)`.
//!
//! A sender's first vote for a `(view, seq)` is the one that counts. A repeat of the same
//! vote is a no-op; a vote for a different digest is reported as a conflict (evidence of a
//! double vote) and never counted. A list that one sender could fill twice does not exist
//! here.

use crate::message::{ReplicaId, Seq, View};
use pbft_crypto::Digest;
use std::collections::BTreeMap;

/// What adding a vote did.
#[derive(Debug, PartialEq, Eq)]
pub enum AddOutcome<'a, M> {
    /// A new vote: the number of distinct senders now voting for this digest.
    Counted(usize),
    /// The same sender already voted for this digest.
    Duplicate,
    /// The same sender already voted for another digest at this (view, seq); the earlier
    /// vote is returned as evidence. The new vote is not counted.
    Conflict(&'a M),
}

/// Votes of one kind (prepares, or commits), keyed by `(view, seq)`.
#[derive(Clone, Debug)]
pub struct VoteTracker<M> {
    slots: BTreeMap<(View, Seq), Slot<M>>,
}

#[derive(Clone, Debug)]
struct Slot<M> {
    /// The digest each sender voted for first, with its message.
    by_sender: BTreeMap<ReplicaId, (Digest, M)>,
    /// Distinct senders per digest.
    counts: BTreeMap<Digest, usize>,
}

impl<M> Default for VoteTracker<M> {
    fn default() -> Self {
        VoteTracker {
            slots: BTreeMap::new(),
        }
    }
}

impl<M> VoteTracker<M> {
    /// An empty tracker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `sender`'s vote for `digest` at `(view, seq)`.
    pub fn add(
        &mut self,
        view: View,
        seq: Seq,
        digest: Digest,
        sender: ReplicaId,
        msg: M,
    ) -> AddOutcome<'_, M> {
        let slot = self.slots.entry((view, seq)).or_insert_with(|| Slot {
            by_sender: BTreeMap::new(),
            counts: BTreeMap::new(),
        });
        if let Some((d, _)) = slot.by_sender.get(&sender) {
            if *d == digest {
                return AddOutcome::Duplicate;
            }
            let (_, first) = &slot.by_sender[&sender];
            return AddOutcome::Conflict(first);
        }
        slot.by_sender.insert(sender, (digest, msg));
        let c = slot.counts.entry(digest).or_insert(0);
        *c += 1;
        AddOutcome::Counted(*c)
    }

    /// Number of distinct senders that voted for `digest` at `(view, seq)`.
    pub fn count(&self, view: View, seq: Seq, digest: &Digest) -> usize {
        self.slots
            .get(&(view, seq))
            .and_then(|s| s.counts.get(digest).copied())
            .unwrap_or(0)
    }

    /// Number of distinct senders for `digest`, not counting `excluded` (used to leave
    /// the primary out of the prepare count).
    pub fn count_excluding(
        &self,
        view: View,
        seq: Seq,
        digest: &Digest,
        excluded: ReplicaId,
    ) -> usize {
        let Some(slot) = self.slots.get(&(view, seq)) else {
            return 0;
        };
        let total = slot.counts.get(digest).copied().unwrap_or(0);
        match slot.by_sender.get(&excluded) {
            Some((d, _)) if d == digest => total - 1,
            _ => total,
        }
    }

    /// The votes for `digest` at `(view, seq)`, by sender id, excluding `excluded`.
    pub fn votes_for(
        &self,
        view: View,
        seq: Seq,
        digest: &Digest,
        excluded: Option<ReplicaId>,
    ) -> impl Iterator<Item = (ReplicaId, &M)> + '_ {
        let digest = *digest;
        self.slots
            .get(&(view, seq))
            .into_iter()
            .flat_map(|s| s.by_sender.iter())
            .filter(move |(r, (d, _))| *d == digest && Some(**r) != excluded)
            .map(|(r, (_, m))| (*r, m))
    }

    /// The senders whose vote at `(view, seq)` is for another digest than `digest`,
    /// with the digest each voted for.
    pub fn votes_against(
        &self,
        view: View,
        seq: Seq,
        digest: &Digest,
    ) -> impl Iterator<Item = (ReplicaId, Digest)> + '_ {
        let digest = *digest;
        self.slots
            .get(&(view, seq))
            .into_iter()
            .flat_map(|s| s.by_sender.iter())
            .filter(move |(_, (d, _))| *d != digest)
            .map(|(r, (d, _))| (*r, *d))
    }

    /// The digests with at least `threshold` distinct senders at `(view, seq)`.
    pub fn digests_with(&self, view: View, seq: Seq, threshold: usize) -> Vec<Digest> {
        self.slots
            .get(&(view, seq))
            .map(|s| {
                s.counts
                    .iter()
                    .filter(|(_, c)| **c >= threshold)
                    .map(|(d, _)| *d)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Highest sequence number with any vote.
    pub fn highest_seq(&self) -> Option<Seq> {
        self.slots.keys().map(|(_, s)| *s).max()
    }

    /// Drops every slot with `seq <= stable` or `view < min_view`.
    pub fn retain_above(&mut self, stable: Seq, min_view: View) {
        self.slots.retain(|(v, s), _| *s > stable && *v >= min_view);
    }

    /// Calls `each` on every vote held, as `(view, seq, sender, digest)` in key order,
    /// and checks that each `(view, seq)` counts exactly the senders that voted for each
    /// digest (for the replica's invariant checks). Stops at the first error: `each`'s,
    /// or `miscount(view, seq, digest, counted, senders)`.
    pub(crate) fn check<E>(
        &self,
        mut each: impl FnMut(View, Seq, ReplicaId, &Digest) -> Result<(), E>,
        miscount: impl Fn(View, Seq, Digest, usize, usize) -> E,
    ) -> Result<(), E> {
        // a slot holds a few senders and one or two digests: a short list beats a map
        let mut tally: Vec<(Digest, usize)> = Vec::new();
        for ((v, s), slot) in &self.slots {
            tally.clear();
            for (r, (d, _)) in &slot.by_sender {
                each(*v, *s, *r, d)?;
                match tally.iter_mut().find(|(x, _)| x == d) {
                    Some((_, c)) => *c += 1,
                    None => tally.push((*d, 1)),
                }
            }
            if let Some((d, n)) = tally
                .iter()
                .find(|(d, n)| slot.counts.get(d) != Some(n))
                .copied()
            {
                let counted = slot.counts.get(&d).copied().unwrap_or(0);
                return Err(miscount(*v, *s, d, counted, n));
            }
            // every digest voted for is counted right: any other count is one too many
            if let Some((d, c)) = slot
                .counts
                .iter()
                .find(|(d, _)| !tally.iter().any(|(x, _)| x == *d))
            {
                return Err(miscount(*v, *s, *d, *c, 0));
            }
        }
        Ok(())
    }

    /// Sets the count of `digest` at `(view, seq)` (for tests of the invariant checks).
    #[cfg(test)]
    pub(crate) fn force_count(&mut self, view: View, seq: Seq, digest: Digest, count: usize) {
        if let Some(slot) = self.slots.get_mut(&(view, seq)) {
            slot.counts.insert(digest, count);
        }
    }

    /// Number of tracked (view, seq) slots, for bounds checks in tests.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True if nothing is tracked.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(b: u8) -> Digest {
        Digest([b; 32])
    }

    #[test]
    fn distinct_senders_only() {
        let mut t = VoteTracker::new();
        assert_eq!(t.add(0, 1, d(1), 1, "a"), AddOutcome::Counted(1));
        assert_eq!(t.add(0, 1, d(1), 1, "a"), AddOutcome::Duplicate);
        assert_eq!(t.add(0, 1, d(1), 1, "a again"), AddOutcome::Duplicate);
        assert_eq!(t.count(0, 1, &d(1)), 1);
        assert_eq!(t.add(0, 1, d(1), 2, "b"), AddOutcome::Counted(2));
        assert_eq!(t.count(0, 1, &d(1)), 2);
    }

    #[test]
    fn wrong_digest_never_counts_and_is_a_conflict() {
        let mut t = VoteTracker::new();
        t.add(0, 1, d(1), 1, "first");
        assert_eq!(
            t.add(0, 1, d(2), 1, "second"),
            AddOutcome::Conflict(&"first")
        );
        assert_eq!(t.count(0, 1, &d(1)), 1);
        assert_eq!(t.count(0, 1, &d(2)), 0);
        // other senders for the other digest count separately
        assert_eq!(t.add(0, 1, d(2), 2, "x"), AddOutcome::Counted(1));
        assert_eq!(t.count(0, 1, &d(1)), 1);
        assert_eq!(t.digests_with(0, 1, 1), vec![d(1), d(2)]);
        assert_eq!(t.digests_with(0, 1, 2), Vec::<Digest>::new());
    }

    #[test]
    fn views_and_seqs_are_separate() {
        let mut t = VoteTracker::new();
        t.add(0, 1, d(1), 1, ());
        t.add(1, 1, d(1), 2, ());
        t.add(0, 2, d(1), 3, ());
        assert_eq!(t.count(0, 1, &d(1)), 1);
        assert_eq!(t.count(1, 1, &d(1)), 1);
        assert_eq!(t.count(0, 2, &d(1)), 1);
        // a sender may vote in two views for different digests: not a conflict
        assert_eq!(t.add(1, 1, d(9), 1, ()), AddOutcome::Counted(1));
    }

    #[test]
    fn excluding_the_primary() {
        let mut t = VoteTracker::new();
        t.add(4, 1, d(1), 0, ()); // primary of view 4 with n=4
        t.add(4, 1, d(1), 1, ());
        t.add(4, 1, d(1), 2, ());
        assert_eq!(t.count(4, 1, &d(1)), 3);
        assert_eq!(t.count_excluding(4, 1, &d(1), 0), 2);
        assert_eq!(t.count_excluding(4, 1, &d(1), 3), 3);
        let voters: Vec<_> = t.votes_for(4, 1, &d(1), Some(0)).map(|(r, _)| r).collect();
        assert_eq!(voters, vec![1, 2]);
    }

    #[test]
    fn garbage_collection() {
        let mut t = VoteTracker::new();
        for s in 1..=10 {
            t.add(0, s, d(1), 1, ());
            t.add(1, s, d(1), 1, ());
        }
        t.retain_above(5, 1);
        assert_eq!(t.len(), 5);
        assert_eq!(t.count(0, 7, &d(1)), 0);
        assert_eq!(t.count(1, 7, &d(1)), 1);
        assert_eq!(t.count(1, 5, &d(1)), 0);
        assert_eq!(t.highest_seq(), Some(10));
    }

    /// Exhaustive over small inputs: the count always equals the number of distinct
    /// senders whose first vote was for that digest.
    #[test]
    fn exhaustive_small_sequences() {
        let digests = [d(1), d(2)];
        // every sequence of 4 votes from senders 0..3 over 2 digests
        for code in 0..(6u32.pow(4)) {
            let mut t = VoteTracker::new();
            let mut first: BTreeMap<ReplicaId, Digest> = BTreeMap::new();
            let mut c = code;
            for _ in 0..4 {
                let x = c % 6;
                c /= 6;
                let sender = x / 2;
                let digest = digests[(x % 2) as usize];
                t.add(0, 1, digest, sender, ());
                first.entry(sender).or_insert(digest);
            }
            for dg in &digests {
                let expect = first.values().filter(|x| *x == dg).count();
                assert_eq!(t.count(0, 1, dg), expect, "code {code}");
            }
        }
    }
}
