//! The replica's side of state transfer and catch-up.
//!
//! - Behind a stable checkpoint: fetch its snapshot from a peer that signed the proof,
//!   and install it only if its digest equals the proven one. A lying peer is skipped
//!   and the next one asked; nothing is installed until the digest matches.
//! - Behind by committed batches above the last stable checkpoint: ask a peer for
//!   them with their commit certificates (q signed commits), which prove them committed
//!   whatever view they were committed in.
//! - Answering peers that ask: a snapshot, committed proofs, or (to a peer that names an
//!   old view) our new view. Each answer costs far more than the few bytes of the ask,
//!   so each peer gets at most one answer of each kind per interval ([`Answered`]).
//! - Missing a batch that a new view names by its digest: ask the primary, then the
//!   others in turn, and take the first answer whose digest matches. A peer answering
//!   with another batch is ignored.

use crate::action::Action;
use crate::client_table::ClientRecords;
use crate::message::{
    Batch, Checkpoint, CommittedProof, Message, PrePrepare, ReplicaId, Seq, Signed, View,
};
use crate::replica::{Fetch, Replica, Status, WantedBatch};
use crate::time::{Duration, Instant};
use pbft_crypto::Digest;
use std::collections::{BTreeMap, BTreeSet};

/// Most batches kept per sequence number besides the ones its slot holds.
pub(crate) const SPARE_BATCHES: usize = 2;

/// Most batch replies sent to one peer in one view, in log windows: an honest replica
/// asks for at most the L batches of one new view, and again for those whose answer
/// was lost.
pub(crate) const BATCHES_SERVED_PER_VIEW: u64 = 2;

/// Most committed proofs in one catch-up answer (fewer when large batches would not fit
/// one frame: `Replica::proofs_per_answer`).
pub(crate) const MAX_PROOFS_PER_ANSWER: u64 = 32;

/// When each peer was last given an answer that costs far more than its ask: a whole
/// state export, a frame of batches with their certificates, or a new view (q view
/// changes). A peer is answered again once the interval has passed since its last
/// answer of that kind, or at once when it asks for something newer than it was last
/// given (a later checkpoint, a later new view): an honest asker moves forward, and
/// there are only so many later ones. One entry per peer and kind, so the limiter is
/// bounded by n.
#[derive(Debug, Default)]
pub(crate) struct Answered {
    /// The checkpoint whose snapshot each peer was last served, and when.
    snapshots: BTreeMap<ReplicaId, (Seq, Instant)>,
    /// The view of the new view last re-sent to each peer, and when.
    new_views: BTreeMap<ReplicaId, (View, Instant)>,
    /// When each peer was last sent committed proofs or our stable checkpoint's proof.
    committed: BTreeMap<ReplicaId, ((), Instant)>,
    /// When each recovering peer was last answered.
    recovery: BTreeMap<ReplicaId, ((), Instant)>,
}

impl Answered {
    /// Whether a recovering `peer` may be answered now, recording the answer if so.
    pub(crate) fn allow_recovery(
        &mut self,
        peer: ReplicaId,
        now: Instant,
        interval: Duration,
    ) -> bool {
        allow(&mut self.recovery, peer, (), now, interval)
    }
}

/// Whether `peer` may be answered now for `key`, recording the answer if so.
fn allow<K: Ord + Copy>(
    last: &mut BTreeMap<ReplicaId, (K, Instant)>,
    peer: ReplicaId,
    key: K,
    now: Instant,
    interval: Duration,
) -> bool {
    let ok = match last.get(&peer) {
        None => true,
        Some((k, at)) => key > *k || now >= at.plus(interval),
    };
    if ok {
        last.insert(peer, (key, now));
    }
    ok
}

impl Replica {
    /// How long a peer waits between two snapshots of one checkpoint: the asker's own
    /// fetch retry interval, after which an honest asker moves on to another peer (it
    /// comes back to this one only after asking the others).
    fn snapshot_interval(&self) -> Duration {
        self.cfg.retransmit_interval * 4
    }

    /// How long a peer waits between two catch-up answers or new-view resends: half a
    /// tick. An honest laggard asks once per tick of its own clock, and arrival jitter
    /// must not cost it a round.
    fn answer_interval(&self) -> Duration {
        self.cfg.retransmit_interval / 2
    }

    /// Sends our new view to a peer that shows it is behind (a status or a view change
    /// naming an older view), at most once per half tick per peer.
    pub(crate) fn resend_new_view(&mut self, to: ReplicaId) {
        let Some(nv) = self.new_view.as_ref() else {
            return;
        };
        let (view, now, interval) = (nv.body.view, self.now, self.answer_interval());
        if !allow(&mut self.answered.new_views, to, view, now, interval) {
            tracing::trace!(
                replica = self.id,
                to,
                "new view re-sent recently: not again"
            );
            return;
        }
        let nv = nv.clone();
        self.send(to, Message::NewView(Box::new(nv)));
    }

    /// Whether `to` may be sent committed proofs now (recorded if so).
    fn may_send_committed(&mut self, to: ReplicaId) -> bool {
        let (now, interval) = (self.now, self.answer_interval());
        allow(&mut self.answered.committed, to, (), now, interval)
    }
}

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

    pub(crate) fn handle_state_transferred(
        &mut self,
        seq: Seq,
        digest: Digest,
        clients: ClientRecords,
    ) {
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
        // let a timer for an executed request start a needless view change. The table
        // learns those executions from the snapshot's client records.
        self.clients.clear_waiting();
        self.clients.seed(clients);
        self.watch_reset();
        self.clients.clear_early();
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

    /// Called on each tick without progress: asks a peer that is ahead for the
    /// committed batches we miss (or, past its stable checkpoint, for state). One peer
    /// ahead is enough: its answer proves itself (commit certificates and a checkpoint
    /// proof), and with a validator still recovering the one honest replica that
    /// collected a certificate may be the only one that has it. The peers ahead are
    /// asked in turn, each for no more than it claims, so one that lies about its
    /// progress costs a small message on some ticks and keeps no one from the truth.
    pub(crate) fn catch_up(&mut self) {
        if self.fetch.is_some() {
            return;
        }
        let ahead: Vec<(ReplicaId, Seq)> = self
            .peer_progress
            .iter()
            .filter(|(r, s)| **r != self.id && **s > self.last_executed)
            .map(|(r, s)| (*r, *s))
            .collect();
        if ahead.is_empty() {
            return;
        }
        let (peer, claimed) = ahead[(self.catch_up_asks % ahead.len() as u64) as usize];
        self.catch_up_asks += 1;
        let from_seq = self.last_executed + 1;
        let to_seq = claimed.min(from_seq + self.proofs_per_answer.max(1) - 1);
        self.send(peer, Message::FetchCommitted { from_seq, to_seq });
    }

    /// A peer asks for committed batches.
    pub(crate) fn on_fetch_committed(&mut self, from: ReplicaId, from_seq: Seq, to_seq: Seq) {
        // as many certificates as fit one frame (docs/protocol.md, "Message sizes")
        let cap = self.proofs_per_answer.max(1);
        let to_seq = to_seq.min(from_seq.saturating_add(cap - 1));
        // Always include our stable-checkpoint proof: an asker below it needs state
        // transfer, and an asker that executed up to it still needs to learn it is
        // stable, or its window never moves past it and the proofs below fall outside.
        let stable_proof = self.wire_checkpoint_proof();
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
        if !self.may_send_committed(from) {
            return;
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
        // exactly q distinct commits, as an honest replica sends: a certificate we keep
        // and serve again then has the size the configuration bounds
        senders.len() == self.cfg.quorum() && p.commits.len() == senders.len()
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
            let (now, interval) = (self.now, self.snapshot_interval());
            if allow(&mut self.answered.snapshots, from, seq, now, interval) {
                self.push(Action::ServeState { to: from, seq });
            }
        } else if seq < self.stable_seq && self.may_send_committed(from) {
            // we no longer keep that snapshot: point the asker at our newer checkpoint
            self.send(
                from,
                Message::Committed {
                    stable_proof: self.wire_checkpoint_proof(),
                    proofs: Vec::new(),
                },
            );
        }
    }
}

/// Fetching batches by digest (a new view names its batches by digest only).
impl Replica {
    /// The batch with `digest` at `seq`, if this replica holds it: the null batch, the
    /// batch of the slot's pre-prepare, prepared or committed certificate, or a spare.
    pub(crate) fn find_batch(&self, seq: Seq, digest: &Digest) -> Option<Batch> {
        if *digest == Batch::null_digest() {
            return Some(Batch::null());
        }
        if let Some(slot) = self.slots.get(&seq) {
            let held = [
                slot.pre_prepare.as_ref().map(|(p, b)| (p.body.digest, b)),
                slot.prepared
                    .as_ref()
                    .map(|p| (p.pre_prepare.body.digest, &p.batch)),
                slot.committed
                    .as_ref()
                    .map(|p| (p.pre_prepare.body.digest, &p.batch)),
            ];
            if let Some((_, b)) = held.into_iter().flatten().find(|(d, _)| d == digest) {
                return Some(b.clone());
            }
        }
        self.spare_batches
            .get(&seq)
            .and_then(|v| v.iter().find(|(d, _)| d == digest))
            .map(|(_, b)| b.clone())
    }

    /// Keeps a batch for `seq` that no slot holds (most recent last, at most
    /// [`SPARE_BATCHES`]), dropping spares at or below the stable checkpoint.
    pub(crate) fn keep_spare_batch(&mut self, seq: Seq, digest: Digest, batch: Batch) {
        self.spare_batches = self.spare_batches.split_off(&(self.stable_seq + 1));
        if seq <= self.stable_seq || digest == Batch::null_digest() {
            return;
        }
        let v = self.spare_batches.entry(seq).or_default();
        v.retain(|(d, _)| *d != digest);
        v.push((digest, batch));
        if v.len() > SPARE_BATCHES {
            v.remove(0);
        }
    }

    /// Before the slot at `seq` takes a pre-prepare for `digest`: keeps the batch of the
    /// pre-prepare it held (from an older view) as a spare, since a later new view may
    /// name it again by digest and this replica may be one of the few holding it.
    pub(crate) fn spare_replaced_batch(&mut self, seq: Seq, digest: &Digest) {
        let replaced = self
            .slots
            .get(&seq)
            .and_then(|s| s.pre_prepare.as_ref())
            .filter(|(p, _)| p.body.digest != *digest)
            .map(|(p, b)| (p.body.digest, b.clone()));
        if let Some((d, b)) = replaced {
            self.keep_spare_batch(seq, d, b);
        }
    }

    /// Starts fetching the batch with `digest` at `seq`, asking `first` before the
    /// other peers. `pre_prepare` is the new view's header to take once it is here.
    pub(crate) fn want_batch(
        &mut self,
        seq: Seq,
        digest: Digest,
        pre_prepare: Option<Signed<PrePrepare>>,
        first: &[ReplicaId],
    ) {
        if let Some(w) = self.wanted.get_mut(&seq) {
            if w.digest == digest && w.view == self.view {
                if pre_prepare.is_some() {
                    w.pre_prepare = pre_prepare;
                }
                return;
            }
        }
        let mut peers: Vec<ReplicaId> = Vec::new();
        for r in first.iter().copied().chain(0..self.cfg.n()) {
            if r != self.id && !peers.contains(&r) {
                peers.push(r);
            }
        }
        self.wanted.insert(
            seq,
            WantedBatch {
                digest,
                view: self.view,
                pre_prepare,
                peers,
                next_peer: 0,
                deadline: self.now,
            },
        );
        self.ask_for_batch(seq);
    }

    /// Asks the next peer for a wanted batch.
    fn ask_for_batch(&mut self, seq: Seq) {
        let due = self.now.plus(self.cfg.retransmit_interval * 2);
        let Some(w) = self.wanted.get_mut(&seq) else {
            return;
        };
        if w.peers.is_empty() {
            return;
        }
        let peer = w.peers[w.next_peer % w.peers.len()];
        w.next_peer += 1;
        w.deadline = due;
        let digest = w.digest;
        self.send(peer, Message::FetchBatch { seq, digest });
    }

    /// On each tick: forgets wanted batches for another view or below the stable
    /// checkpoint, and asks the next peer for those not answered in time.
    pub(crate) fn retry_batch_fetch(&mut self) {
        let (view, h, now) = (self.view, self.stable_seq, self.now);
        self.wanted.retain(|s, w| w.view == view && *s > h);
        self.spare_batches = self.spare_batches.split_off(&(h + 1));
        let due: Vec<Seq> = self
            .wanted
            .iter()
            .filter(|(_, w)| w.deadline <= now)
            .map(|(s, _)| *s)
            .collect();
        for seq in due {
            self.ask_for_batch(seq);
        }
    }

    /// A peer asks for a batch by digest: answer if we hold it.
    pub(crate) fn on_fetch_batch(&mut self, from: ReplicaId, seq: Seq, digest: Digest) {
        if seq <= self.stable_seq || digest == Batch::null_digest() {
            return;
        }
        let Some(batch) = self.find_batch(seq, &digest) else {
            return;
        };
        let budget = BATCHES_SERVED_PER_VIEW * self.cfg.log_window;
        let view = self.view;
        let served = self.batches_served.entry(from).or_insert((view, 0));
        if served.0 != view {
            *served = (view, 0);
        }
        if served.1 >= budget {
            tracing::debug!(replica = self.id, from, seq, "batch requests over budget");
            return;
        }
        served.1 += 1;
        self.send(from, Message::BatchReply { seq, batch });
    }

    /// A batch we may have asked for: used only if its digest is the one wanted.
    pub(crate) fn on_batch_reply(&mut self, from: ReplicaId, seq: Seq, batch: Batch) {
        if seq <= self.stable_seq {
            // the slot is behind the stable checkpoint now: nothing to take there
            self.wanted.remove(&seq);
            return;
        }
        let Some(w) = self.wanted.get(&seq) else {
            return;
        };
        let digest = batch.digest();
        if digest != w.digest || w.view != self.view {
            tracing::debug!(
                replica = self.id,
                from,
                seq,
                "fetched batch does not match the wanted digest"
            );
            return;
        }
        let Some(w) = self.wanted.remove(&seq) else {
            return;
        };
        self.keep_spare_batch(seq, digest, batch.clone());
        match w.pre_prepare {
            Some(pp) if self.status == Status::Normal && pp.body.view == self.view => {
                let taken = self.slots.get(&seq).is_some_and(|s| {
                    s.pre_prepare
                        .as_ref()
                        .is_some_and(|(p, _)| p.body.view == self.view)
                });
                if taken {
                    return;
                }
                if self.is_primary() {
                    self.slot_mut(seq).pre_prepare = Some((pp, batch));
                    self.check_prepared(seq);
                } else {
                    self.accept_pre_prepare(pp, batch);
                }
                self.try_execute();
            }
            Some(_) => {}
            None => self.send_new_view(),
        }
    }
}
