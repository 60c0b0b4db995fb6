//! Checkpoints, watermarks and garbage collection (PBFT §4.3).
//!
//! After executing `s` with `s mod K == 0` a replica broadcasts `Checkpoint(s, D)`. With q
//! matching messages from distinct replicas the checkpoint is *stable*: `h = s`, and
//! everything at or below `s` is discarded. A stable checkpoint beyond what the replica
//! executed means it is behind, and starts a state transfer.

use crate::action::{Action, WalRecord};
use crate::invariants::Invariant;
use crate::message::{Checkpoint, Evidence, Message, ReplicaId, Seq, Signed};
use crate::replica::Replica;
use pbft_crypto::Digest;
use std::collections::BTreeMap;

impl Replica {
    /// Own checkpoint after executing `seq` (a multiple of K).
    pub(crate) fn make_checkpoint(&mut self, seq: Seq, state_digest: Digest) {
        let c = Signed::sign(
            Checkpoint {
                seq,
                state_digest,
                replica: self.id,
            },
            &self.key,
        );
        // Our own digest at a checkpoint that became stable before we executed it (we
        // had the batches, so no state transfer) is checked against the proof here.
        if seq == self.stable_seq && state_digest != self.stable_digest {
            self.halt(format!(
                "own state digest {state_digest} at seq {seq} contradicts the stable checkpoint {}",
                self.stable_digest
            ));
            return;
        }
        if seq < self.stable_seq {
            // a later checkpoint is stable already (proven while these batches were
            // with the executor): this one proves nothing, and is collected
            return;
        }
        self.persist(WalRecord::Checkpoint(c.clone()));
        self.own_checkpoints.insert(seq, c.clone());
        self.broadcast(Message::Checkpoint(c.clone()));
        if seq > self.stable_seq {
            // at `h` the checkpoint is stable already: a vote there would count for
            // nothing and outlive the collection that dropped the others
            self.add_checkpoint_vote(c);
        }
    }

    pub(crate) fn on_checkpoint(&mut self, c: Signed<Checkpoint>) {
        if !c.body.seq.is_multiple_of(self.cfg.checkpoint_interval) || c.body.seq == 0 {
            return;
        }
        self.note_progress(c.body.replica, c.body.seq);
        if c.body.seq <= self.stable_seq {
            return;
        }
        self.add_checkpoint_vote(c);
        // the window may have moved
        self.try_propose();
    }

    /// Most checkpoint messages kept per sender above `h`: bounds memory against a
    /// sender announcing many sequence numbers, while a lagging replica can still learn
    /// checkpoints far beyond its window.
    pub(crate) fn checkpoint_budget(&self) -> usize {
        (self.cfg.log_window / self.cfg.checkpoint_interval) as usize + 2
    }

    fn add_checkpoint_vote(&mut self, c: Signed<Checkpoint>) {
        let Checkpoint {
            seq,
            state_digest,
            replica,
        } = c.body;
        let votes = self.checkpoint_votes.entry(seq).or_default();
        if votes.contains_key(&replica) {
            return; // first message per sender and seq counts
        }
        votes.insert(replica, c);
        // enforce the per-sender budget by dropping that sender's lowest checkpoints
        let budget = self.checkpoint_budget();
        let mine: Vec<Seq> = self
            .checkpoint_votes
            .iter()
            .filter(|(_, m)| m.contains_key(&replica))
            .map(|(s, _)| *s)
            .collect();
        if mine.len() > budget {
            for s in &mine[..mine.len() - budget] {
                if let Some(m) = self.checkpoint_votes.get_mut(s) {
                    m.remove(&replica);
                    if m.is_empty() {
                        self.checkpoint_votes.remove(s);
                    }
                }
            }
        }
        let Some(votes) = self.checkpoint_votes.get(&seq) else {
            return;
        };
        let matching: Vec<Signed<Checkpoint>> = votes
            .values()
            .filter(|v| v.body.state_digest == state_digest)
            .cloned()
            .collect();
        if matching.len() >= self.cfg.quorum() {
            let proof = matching[..self.cfg.quorum()].to_vec();
            self.on_stable(seq, state_digest, proof);
        }
    }

    /// Checks a stable-checkpoint proof: q checkpoints for `seq` with one digest, from
    /// distinct replicas. Genesis (`seq == 0`) needs no proof.
    pub(crate) fn valid_checkpoint_proof(
        &self,
        seq: Seq,
        proof: &[Signed<Checkpoint>],
    ) -> Option<Digest> {
        if seq == 0 {
            return proof.is_empty().then_some(Digest::ZERO);
        }
        if !seq.is_multiple_of(self.cfg.checkpoint_interval) {
            return None;
        }
        let first = proof.first()?;
        let digest = first.body.state_digest;
        let mut senders = std::collections::BTreeSet::new();
        for c in proof {
            if c.body.seq != seq || c.body.state_digest != digest {
                return None;
            }
            if c.body.replica >= self.cfg.n() {
                return None;
            }
            senders.insert(c.body.replica);
        }
        (senders.len() >= self.cfg.quorum()).then_some(digest)
    }

    /// A checkpoint became stable (from q messages, or a proof in a view change, new
    /// view or catch-up answer).
    pub(crate) fn on_stable(&mut self, seq: Seq, digest: Digest, proof: Vec<Signed<Checkpoint>>) {
        if seq <= self.stable_seq {
            return;
        }
        self.require(Invariant::StableCheckpoint, Some(seq), || {
            // every caller checked the proof: from q votes, a view change, a new view
            // or a catch-up answer
            match self.valid_checkpoint_proof(seq, &proof) {
                Some(d) if d == digest => Ok(()),
                proven => Err(format!(
                    "becoming stable with digest {digest} on a proof of {} messages that \
                     proves {proven:?}",
                    proof.len()
                )),
            }
        });
        if let Some(mine) = self.own_checkpoints.get(&seq) {
            if mine.body.state_digest != digest {
                self.halt(format!(
                    "own state digest {} at seq {seq} contradicts the stable checkpoint {}",
                    mine.body.state_digest, digest
                ));
                return;
            }
        }
        tracing::debug!(
            replica = self.id,
            view = self.view,
            seq,
            "checkpoint stable"
        );
        self.stable_seq = seq;
        self.stable_digest = digest;
        self.stable_proof = proof.clone();
        self.persist(WalRecord::StableCheckpoint(proof.clone()));
        self.push(Action::StableCheckpoint { seq, digest });
        // evidence against replicas that announced another digest for this checkpoint
        let liars: Vec<Signed<Checkpoint>> = self
            .checkpoint_votes
            .get(&seq)
            .map(|m| {
                m.values()
                    .filter(|c| c.body.state_digest != digest)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        for lie in liars {
            let ev = Evidence::CheckpointLie {
                lie,
                proof: proof.clone(),
            };
            self.record_evidence(ev, false);
        }
        self.collect_garbage();
        // Batches already handed to the executor up to `seq` will bring the state
        // there; a snapshot installed after them would move the ledger back under them.
        if self.last_dispatched < seq {
            self.begin_state_transfer(seq, digest);
        }
        self.next_seq = self.next_seq.max(seq + 1);
        // last: a replica that votes again from here on proposes above `seq` only
        self.check_recovered();
        // No proposing here: a caller in the middle of a transition (installing a new
        // view) must finish it first. Callers propose once they are done.
    }

    /// Discards log entries, votes and checkpoint messages at or below `h`.
    pub(crate) fn collect_garbage(&mut self) {
        let h = self.stable_seq;
        self.require(Invariant::StableCheckpoint, Some(h), || {
            // what is dropped below h can be restored only from the proven snapshot
            match self.valid_checkpoint_proof(h, &self.stable_proof) {
                Some(d) if d == self.stable_digest => Ok(()),
                proven => Err(format!(
                    "collecting the log below h, whose proof proves {proven:?}, not {}",
                    self.stable_digest
                )),
            }
        });
        self.slots = self.slots.split_off(&(h + 1));
        self.wanted = self.wanted.split_off(&(h + 1));
        self.prepares.retain_above(h, self.view.saturating_sub(1));
        self.commits.retain_above(h, self.view.saturating_sub(1));
        self.checkpoint_votes = self.checkpoint_votes.split_off(&(h + 1));
        let mine: BTreeMap<Seq, Signed<Checkpoint>> = self.own_checkpoints.split_off(&h);
        self.own_checkpoints = mine;
        let n = self.cfg.n();
        self.peer_progress.retain(|r: &ReplicaId, _| *r < n);
    }
}
