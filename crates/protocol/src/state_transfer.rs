//! The replica's side of state transfer and catch-up.
//!
//! - Behind a stable checkpoint: fetch its snapshot from a peer that signed the proof,
//!   and install it only if its digest equals the proven one. A lying peer is skipped
//!   and the next one asked; nothing is installed until the digest matches.
//! - Behind by committed batches above the last stable checkpoint: ask a peer for
//!   them with their commit certificates (q signed commits), which prove them committed
//!   whatever view they were committed in.

use crate::action::Action;
use crate::message::{Checkpoint, CommittedProof, Message, ReplicaId, Seq, Signed};
use crate::replica::{Fetch, Replica};
use pbft_crypto::Digest;
use std::collections::BTreeSet;

/// Most committed proofs in one catch-up answer.
const MAX_PROOFS_PER_ANSWER: u64 = 32;

impl Replica {
    /// Starts fetching the snapshot of stable checkpoint `seq` (digest proven).
    pub(crate) fn begin_state_transfer(&mut self, seq: Seq, digest: Digest) {
        if self.fetch.as_ref().is_some_and(|f| f.seq >= seq) {
            return;
        }
        let mut peers: Vec<ReplicaId> = self
            .stable_proof
            .iter()
            .map(|c| c.body.replica)
            .filter(|r| *r != self.id)
            .collect();
        // any other replica may have it too; proof signers first
        for r in 0..self.cfg.n() {
            if r != self.id && !peers.contains(&r) {
                peers.push(r);
            }
        }
        // known liars last
        peers.sort_by_key(|r| self.bad_state_peers.contains(r));
        tracing::info!(replica = self.id, view = self.view, seq, "state transfer");
        self.fetch = Some(Fetch {
            seq,
            digest,
            peers,
            next_peer: 0,
            installing: false,
            deadline: self.now,
        });
        self.ask_next_peer();
    }

    fn ask_next_peer(&mut self) {
        let interval = self.cfg.retransmit_interval * 4;
        let now = self.now;
        let Some(f) = self.fetch.as_mut() else {
            return;
        };
        if f.installing || f.peers.is_empty() {
            return;
        }
        let peer = f.peers[f.next_peer % f.peers.len()];
        f.next_peer += 1;
        f.deadline = now.plus(interval);
        let (seq, digest) = (f.seq, f.digest);
        self.push(Action::FetchState { seq, digest, peer });
    }

    /// Asks another peer if the current one did not answer in time.
    pub(crate) fn retry_fetch(&mut self) {
        if self
            .fetch
            .as_ref()
            .is_some_and(|f| !f.installing && f.deadline <= self.now)
        {
            self.ask_next_peer();
        }
    }

    pub(crate) fn handle_state_offer(&mut self, peer: ReplicaId, seq: Seq, digest: Digest) {
        let last_dispatched = self.last_dispatched;
        let Some(f) = self.fetch.as_mut() else {
            return;
        };
        if f.seq != seq || f.installing {
            return;
        }
        if last_dispatched >= seq {
            // the executor has (or will have) the batches up to `seq` anyway: installing
            // the snapshot now would move the ledger back under them
            self.fetch = None;
            self.try_execute();
            return;
        }
        if digest == f.digest {
            f.installing = true;
            self.push(Action::InstallState { seq, digest });
        } else {
            tracing::warn!(
                replica = self.id,
                peer,
                seq,
                "snapshot digest does not match the stable checkpoint"
            );
            self.bad_state_peers.insert(peer);
            self.ask_next_peer();
        }
    }

    pub(crate) fn handle_state_transferred(&mut self, seq: Seq, digest: Digest) {
        let Some(f) = self.fetch.as_ref() else {
            return;
        };
        if !f.installing || f.seq != seq {
            return;
        }
        if digest != f.digest {
            self.halt(format!(
                "driver installed state {digest} at seq {seq}, but {} was approved",
                f.digest
            ));
            return;
        }
        self.fetch = None;
        // The snapshot holds executions this replica never saw: any waiting request may
        // be among them. Forget them (clients retransmit what is still open) rather than
        // let a timer for an executed request start a needless view change.
        self.clients.mark_inexact();
        self.clients.clear_waiting();
        self.watch_reset();
        self.pending.clear();
        self.proposed.clear();
        self.stop_request_timer();
        self.last_executed = self.last_executed.max(seq);
        self.last_dispatched = self.last_dispatched.max(seq);
        self.executed_at_last_tick = self.last_executed;
        tracing::info!(replica = self.id, view = self.view, seq, "state installed");
        self.try_execute();
        self.try_propose();
    }

    /// Called on each tick without progress: if f+1 peers are ahead, ask one of them for
    /// the committed batches we miss (or, past its stable checkpoint, for state).
    pub(crate) fn catch_up(&mut self) {
        if self.fetch.is_some() {
            return;
        }
        let Some(target) = self.behind_peers() else {
            return;
        };
        let ahead: Vec<ReplicaId> = self
            .peer_progress
            .iter()
            .filter(|(r, s)| **r != self.id && **s >= target)
            .map(|(r, _)| *r)
            .collect();
        if ahead.is_empty() {
            return;
        }
        let peer = ahead[(self.ticks as usize) % ahead.len()];
        let from_seq = self.last_executed + 1;
        let to_seq = target.min(from_seq + MAX_PROOFS_PER_ANSWER - 1);
        self.send(peer, Message::FetchCommitted { from_seq, to_seq });
    }

    /// A peer asks for committed batches.
    pub(crate) fn on_fetch_committed(&mut self, from: ReplicaId, from_seq: Seq, to_seq: Seq) {
        let to_seq = to_seq.min(from_seq.saturating_add(MAX_PROOFS_PER_ANSWER - 1));
        // Always include our stable-checkpoint proof: an asker below it needs state
        // transfer, and an asker that executed up to it still needs to learn it is
        // stable, or its window never moves past it and the proofs below fall outside.
        let stable_proof = self.stable_proof.clone();
        // the range comes from a peer: clamp it, never trust it to be ordered
        let lo = from_seq.max(self.stable_seq + 1);
        let proofs: Vec<CommittedProof> = if lo <= to_seq {
            self.slots
                .range(lo..=to_seq)
                .filter_map(|(_, s)| s.committed.clone())
                .collect()
        } else {
            Vec::new()
        };
        if self.stable_seq < from_seq.saturating_sub(1) && proofs.is_empty() {
            return; // nothing the asker can use
        }
        self.send(
            from,
            Message::Committed {
                stable_proof,
                proofs,
            },
        );
    }

    /// Checks a commit certificate: q commits for the pre-prepare's (view, seq, digest)
    /// from distinct replicas, and a batch matching the digest.
    pub(crate) fn valid_committed_proof(&self, p: &CommittedProof) -> bool {
        let pp = p.pre_prepare.body;
        if p.batch.digest() != pp.digest {
            return false;
        }
        let mut senders = BTreeSet::new();
        for c in &p.commits {
            let b = c.body;
            if b.view != pp.view
                || b.seq != pp.seq
                || b.digest != pp.digest
                || b.replica >= self.cfg.n()
            {
                return false;
            }
            senders.insert(b.replica);
        }
        senders.len() >= self.cfg.quorum()
    }

    /// An answer to our catch-up request.
    pub(crate) fn on_committed(
        &mut self,
        stable_proof: Vec<Signed<Checkpoint>>,
        proofs: Vec<CommittedProof>,
    ) {
        if let Some(first) = stable_proof.first() {
            let seq = first.body.seq;
            if seq > self.stable_seq {
                if let Some(d) = self.valid_checkpoint_proof(seq, &stable_proof) {
                    self.on_stable(seq, d, stable_proof);
                }
            }
        }
        for p in proofs {
            let seq = p.pre_prepare.body.seq;
            if seq <= self.last_executed || !self.in_window(seq) || !self.valid_committed_proof(&p)
            {
                continue;
            }
            // an equivocating primary shows itself when our pre-prepare differs
            if let Some((mine, _)) = self.slots.get(&seq).and_then(|s| s.pre_prepare.as_ref()) {
                if mine.body.view == p.pre_prepare.body.view
                    && mine.body.digest != p.pre_prepare.body.digest
                {
                    let ev = crate::message::Evidence::Equivocation {
                        a: mine.clone(),
                        b: p.pre_prepare.clone(),
                    };
                    self.record_evidence(ev, true);
                }
            }
            self.mark_committed(seq, p);
        }
        self.try_propose();
    }

    /// A peer asks for the snapshot of a stable checkpoint.
    pub(crate) fn on_state_request(&mut self, from: ReplicaId, seq: Seq) {
        // Our own checkpoint at `seq` is served even before we hold its stability proof:
        // the asker got the proof first (from the others' checkpoint messages) and checks
        // the snapshot's digest against it. Staying silent here cost the asker a whole
        // fetch retry interval.
        let own = seq >= self.stable_seq && self.own_checkpoints.contains_key(&seq);
        if seq > 0 && self.last_executed >= seq && (seq == self.stable_seq || own) {
            self.push(Action::ServeState { to: from, seq });
        } else if seq < self.stable_seq {
            // we no longer keep that snapshot: point the asker at our newer checkpoint
            self.send(
                from,
                Message::Committed {
                    stable_proof: self.stable_proof.clone(),
                    proofs: Vec::new(),
                },
            );
        }
    }
}
