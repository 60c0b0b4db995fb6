//! The normal case (PBFT §4.2): requests, pre-prepare, prepare, commit, and execution in
//! sequence order. Rule names follow the paper: `prepared(v, s, d)` and
//! `committed_local(v, s, d)`.

use crate::action::{Action, WalRecord};
use crate::client_table::Admission;
use crate::invariants::Invariant;
use crate::message::{
    Batch, Commit, CommittedProof, Evidence, Message, PrePrepare, Prepare, PreparedProof,
    ReplicaId, Reply, Seq, Signed, SignedReply, SignedRequest, View,
};
use crate::quorum::AddOutcome;
use crate::replica::{ExecutionResult, Replica, Status};
use pbft_crypto::Digest;

impl Replica {
    /// A client request, sent directly (`via = None`) or relayed by a validator.
    ///
    /// A backup that learns a new request forwards it to the primary at once, however
    /// it learnt it (unless from the primary itself): its timers will blame the
    /// primary for leaving the request out, so the primary must have it. A request is
    /// new only once, so it is forwarded once; a client's retransmission of a known
    /// request is forwarded again, since the client saw no reply.
    ///
    /// A request an inexact client table cannot classify (it may have executed before a
    /// restart) is forwarded too, and ordered by a primary (at worst it executes as a
    /// duplicate), but a backup neither keeps, watches nor times it: it would blame a
    /// primary that knows the request executed.
    /// Whether a repeated request of a client may be answered (or forwarded) again
    /// now (resend.rs): anyone can replay a client's requests.
    /// `own` when the request came from its client itself (see [`Replica::on_request`]).
    fn may_answer_again(&mut self, req: &SignedRequest, from_ledger: bool, own: bool) -> bool {
        let (interval, window, cap) = (
            self.cfg.retransmit_interval,
            self.cfg.client_window,
            self.cfg.max_batch,
        );
        self.resends.allow(
            req.body.client,
            req.body.digest(),
            from_ledger,
            own,
            self.now,
            interval,
            window,
            cap,
        )
    }

    /// `own` when the request came straight from its client (not from a connection
    /// that may be anyone's replaying it); it only matters when `via` is `None`.
    pub(crate) fn handle_request(&mut self, req: SignedRequest, via: Option<ReplicaId>, own: bool) {
        match self.clients.admit(&req) {
            Admission::Cached(reply) => {
                if via.is_none() && self.may_answer_again(&req, false, own) {
                    self.push(Action::Reply {
                        client: req.body.client,
                        reply: *reply,
                    });
                }
            }
            Admission::TooOld | Admission::Reused => {
                // a client without its answer asks again: the ledger has the receipt, and
                // the digest of the request it is the outcome of (a reused id is refused)
                if via.is_none()
                    && req.body.request_id != 0
                    && self.may_answer_again(&req, true, own)
                {
                    self.push(Action::ReplyFromLedger {
                        client: req.body.client,
                        request_id: req.body.request_id,
                        request: req.body.digest(),
                    });
                }
            }
            Admission::OutOfWindow => {
                // a backup further ahead may have admitted it: keep it for when the
                // window reaches it (`ClientTable::defer`)
                if self.is_primary() && self.status == Status::Normal {
                    self.clients.defer(req);
                }
            }
            Admission::Known => {
                // a client retransmission: make sure the primary has it
                if !self.is_primary()
                    && via.is_none()
                    && self.status == Status::Normal
                    && self.may_answer_again(&req, false, own)
                {
                    let p = self.primary();
                    self.send(p, Message::Request(req));
                }
                self.arm_request_timer();
            }
            Admission::Unknown if !self.is_primary() => {
                let p = self.primary();
                if via != Some(p) && self.status == Status::Normal {
                    self.send(p, Message::Request(req));
                }
            }
            Admission::New | Admission::Unknown => {
                let key = req.key();
                self.clients.add_waiting(req.clone());
                if self.is_primary() {
                    self.pending.push_back(key);
                    self.try_propose();
                } else {
                    let p = self.primary();
                    if via != Some(p) && self.status == Status::Normal {
                        self.send(p, Message::Request(req));
                    }
                    self.watch_unordered(key);
                    self.arm_request_timer();
                }
            }
        }
    }

    /// As primary: order pending requests into batches while the pipeline and the
    /// window have room. No timer: under load requests accumulate while the pipeline is
    /// full, so batches grow by themselves; when idle a lone request goes out at once.
    pub(crate) fn try_propose(&mut self) {
        if !self.is_primary()
            || self.status != Status::Normal
            || self.fetch.is_some()
            || self.recovery.is_some()
        {
            return;
        }
        self.next_seq = self
            .next_seq
            .max(self.last_executed + 1)
            .max(self.stable_seq + 1);
        while !self.pending.is_empty()
            && self.next_seq <= self.high_watermark()
            && self.next_seq - 1 - self.last_executed < self.cfg.pipeline_depth
        {
            let mut requests = Vec::new();
            while requests.len() < self.cfg.max_batch {
                let Some(key) = self.pending.pop_front() else {
                    break;
                };
                if self.proposed.contains(&key) {
                    continue;
                }
                if let Some(r) = self.clients.get_waiting(&key) {
                    requests.push(r.clone());
                    self.proposed.insert(key);
                }
            }
            if requests.is_empty() {
                break;
            }
            let batch = Batch { requests };
            let seq = self.next_seq;
            self.next_seq += 1;
            // An honest primary proposes once per (view, seq): anything else is
            // equivocation, so a bug here must stop the replica, not sign.
            let taken = self
                .slots
                .get(&seq)
                .and_then(|s| s.pre_prepare.as_ref())
                .is_some_and(|(p, _)| p.body.view == self.view);
            assert!(
                !taken,
                "replica {} would propose twice at view {} seq {seq}",
                self.id, self.view
            );
            self.signed = true;
            let pp = Signed::sign(
                PrePrepare {
                    view: self.view,
                    seq,
                    digest: batch.digest(),
                },
                &self.key,
            );
            tracing::debug!(
                replica = self.id,
                view = self.view,
                seq,
                size = batch.requests.len(),
                "propose"
            );
            self.persist(WalRecord::Proposed {
                pre_prepare: pp.clone(),
                batch: batch.clone(),
            });
            self.broadcast(Message::PrePrepare {
                pre_prepare: pp.clone(),
                batch: batch.clone(),
            });
            self.spare_replaced_batch(seq, &pp.body.digest);
            self.slot_mut(seq).pre_prepare = Some((pp, batch));
        }
    }

    /// A pre-prepare, from the primary or relayed by a backup (it is signed by the
    /// primary either way; a relay is how equivocation is discovered).
    pub(crate) fn on_pre_prepare(
        &mut self,
        from: ReplicaId,
        pp: Signed<PrePrepare>,
        batch: Batch,
        bad_requests: &[u32],
    ) {
        let PrePrepare { view, seq, digest } = pp.body;
        // A pre-prepare that conflicts with one we hold is proof of equivocation,
        // whatever view we are in now: both headers are signed by the primary, so the
        // batch that came with this one does not matter.
        // A new view's pre-prepare whose batch is still being fetched counts as held.
        let held = self
            .slots
            .get(&seq)
            .and_then(|s| s.pre_prepare.as_ref().map(|(p, _)| p))
            .or_else(|| self.wanted.get(&seq).and_then(|w| w.pre_prepare.as_ref()));
        if let Some(mine) = held {
            if mine.body.view == view && mine.body.digest != digest {
                let ev = Evidence::Equivocation {
                    a: mine.clone(),
                    b: pp.clone(),
                };
                self.record_evidence(ev, true);
                return;
            }
        }
        // The primary signs (view, seq, digest), not the batch: a batch that does not
        // match the signed digest was paired with the header by whoever sent it, so it
        // proves nothing against the primary. It is dropped.
        if batch.digest() != digest {
            tracing::debug!(
                replica = self.id,
                view,
                seq,
                from,
                "pre-prepare with a batch that does not match its digest: dropped"
            );
            return;
        }
        if view != self.view || self.status != Status::Normal || self.is_primary() {
            return;
        }
        if !self.in_window(seq) {
            tracing::debug!(
                replica = self.id,
                view,
                seq,
                "pre-prepare outside the watermarks"
            );
            return;
        }
        // d = H(batch) (checked above), so the primary signed this very batch: a
        // request without a valid client signature, or more requests than a batch
        // holds, is its fault
        if !bad_requests.is_empty() || batch.requests.len() > self.cfg.max_batch {
            self.record_evidence(
                Evidence::BadPrePrepare {
                    pre_prepare: pp,
                    batch,
                },
                true,
            );
            return;
        }
        if self.slots.get(&seq).is_some_and(|s| {
            s.pre_prepare
                .as_ref()
                .is_some_and(|(p, _)| p.body.view == view)
        }) {
            return; // duplicate of the one we accepted
        }
        self.accept_pre_prepare(pp, batch);
    }

    /// Accepts a valid pre-prepare in the current view: log it, persist, send prepare.
    pub(crate) fn accept_pre_prepare(&mut self, pp: Signed<PrePrepare>, batch: Batch) {
        let PrePrepare { view, seq, digest } = pp.body;
        debug_assert_eq!(view, self.view);
        if self.recovery.is_some() {
            // it may have prepared another batch here before its log was lost
            tracing::debug!(
                replica = self.id,
                view,
                seq,
                "recovering: pre-prepare not accepted"
            );
            return;
        }
        for r in &batch.requests {
            self.watch_ordered(&r.key());
            self.clients.add_waiting(r.clone());
        }
        self.persist(WalRecord::Accepted {
            pre_prepare: pp.clone(),
            batch: batch.clone(),
        });
        self.spare_replaced_batch(seq, &digest);
        self.slot_mut(seq).pre_prepare = Some((pp, batch));
        let prepare = self.sign_prepare(view, seq, digest);
        self.broadcast(Message::Prepare(prepare));
        // Votes for another digest that came before this pre-prepare: if the primary
        // equivocated, its voters must see this header too to prove it.
        let against: Vec<(ReplicaId, Digest)> = self
            .prepares
            .votes_against(view, seq, &digest)
            .chain(self.commits.votes_against(view, seq, &digest))
            .collect();
        for (voter, theirs) in against {
            self.relay_on_conflict(voter, view, seq, theirs);
        }
        self.arm_request_timer();
        self.check_prepared(seq);
    }

    /// Compares pre-prepare headers signed by a primary (found in a view change, a new
    /// view or its view changes) with the ones this replica holds: two digests for one
    /// (view, seq) prove that primary equivocated, wherever the two met.
    pub(crate) fn check_headers<'a>(
        &mut self,
        headers: impl IntoIterator<Item = &'a Signed<PrePrepare>>,
    ) {
        for h in headers {
            let Some(slot) = self.slots.get(&h.body.seq) else {
                continue;
            };
            let held = [
                slot.pre_prepare.as_ref().map(|(p, _)| p),
                slot.prepared.as_ref().map(|p| &p.pre_prepare),
                slot.committed.as_ref().map(|p| &p.pre_prepare),
            ];
            let conflict = held
                .into_iter()
                .flatten()
                .find(|p| p.body.view == h.body.view && p.body.digest != h.body.digest)
                .cloned();
            if let Some(mine) = conflict {
                let ev = Evidence::Equivocation {
                    a: mine,
                    b: h.clone(),
                };
                self.record_evidence(ev, true);
            }
        }
    }

    /// The digest we hold a pre-prepare for at `(view, seq)`, if any.
    fn accepted_digest(&self, view: View, seq: Seq) -> Option<Digest> {
        self.slots
            .get(&seq)
            .and_then(|s| s.pre_prepare.as_ref())
            .filter(|(p, _)| p.body.view == view)
            .map(|(p, _)| p.body.digest)
    }

    /// A vote for another digest than the one we accepted: send the voter our
    /// pre-prepare, so that if the primary equivocated, the voter can prove it.
    fn relay_on_conflict(&mut self, voter: ReplicaId, view: View, seq: Seq, digest: Digest) {
        let Some(mine) = self.accepted_digest(view, seq) else {
            return;
        };
        if mine == digest || voter == self.cfg.primary(view) {
            return;
        }
        let slot = self.slot_mut(seq);
        if !slot.relayed_to.insert(voter) {
            return;
        }
        if let Some((pp, batch)) = slot.pre_prepare.clone() {
            self.send(
                voter,
                Message::PrePrepare {
                    pre_prepare: pp,
                    batch,
                },
            );
        }
    }

    pub(crate) fn on_prepare(&mut self, p: Signed<Prepare>) {
        let Prepare {
            view,
            seq,
            digest,
            replica,
        } = p.body;
        if view != self.view || self.status != Status::Normal || !self.in_window(seq) {
            return;
        }
        if replica == self.cfg.primary(view) {
            return; // the primary's pre-prepare stands for its prepare
        }
        let conflict = match self.prepares.add(view, seq, digest, replica, p.clone()) {
            AddOutcome::Conflict(first) => Some(first.clone()),
            AddOutcome::Duplicate => return,
            AddOutcome::Counted(_) => None,
        };
        if let Some(first) = conflict {
            self.record_evidence(Evidence::DoublePrepare { a: first, b: p }, false);
            return;
        }
        self.relay_on_conflict(replica, view, seq, digest);
        self.check_prepared(seq);
    }

    pub(crate) fn on_commit(&mut self, c: Signed<Commit>) {
        let Commit {
            view,
            seq,
            digest,
            replica,
        } = c.body;
        self.note_progress(replica, seq.saturating_sub(1));
        if view != self.view || self.status != Status::Normal || !self.in_window(seq) {
            return;
        }
        let conflict = match self.commits.add(view, seq, digest, replica, c.clone()) {
            AddOutcome::Conflict(first) => Some(first.clone()),
            AddOutcome::Duplicate => return,
            AddOutcome::Counted(_) => None,
        };
        if let Some(first) = conflict {
            self.record_evidence(Evidence::DoubleCommit { a: first, b: c }, false);
            return;
        }
        self.relay_on_conflict(replica, view, seq, digest);
        self.check_committed(seq);
    }

    /// `prepared(v, s, d)`: the accepted pre-prepare plus q-1 (= 2f) matching prepares from
    /// distinct backups. On becoming prepared: persist the certificate, send commit.
    pub(crate) fn check_prepared(&mut self, seq: Seq) {
        if self.recovery.is_some() {
            return; // it would sign a commit
        }
        let view = self.view;
        let Some(digest) = self.accepted_digest(view, seq) else {
            return;
        };
        let slot = &self.slots[&seq];
        if slot
            .prepared
            .as_ref()
            .is_some_and(|p| p.pre_prepare.body.view >= view)
        {
            return;
        }
        let primary = self.cfg.primary(view);
        let needed = self.cfg.quorum() - 1;
        if self.prepares.count_excluding(view, seq, &digest, primary) < needed {
            return;
        }
        let prepares: Vec<Signed<Prepare>> = self
            .prepares
            .votes_for(view, seq, &digest, Some(primary))
            .take(needed)
            .map(|(_, p)| p.clone())
            .collect();
        let Some((pp, batch)) = slot.pre_prepare.clone() else {
            return;
        };
        let proof = PreparedProof {
            pre_prepare: pp,
            batch,
            prepares,
        };
        tracing::debug!(replica = self.id, view, seq, "prepared");
        self.persist(WalRecord::Prepared(proof.clone()));
        let slot = self.slot_mut(seq);
        slot.prepared = Some(proof);
        slot.commit_sent = Some(view);
        let commit = self.sign_commit(view, seq, digest);
        self.broadcast(Message::Commit(commit));
        self.check_committed(seq);
    }

    /// `committed_local(v, s, d)`: prepared in v, plus q matching commits from distinct
    /// replicas (our own included).
    pub(crate) fn check_committed(&mut self, seq: Seq) {
        let view = self.view;
        let Some(slot) = self.slots.get(&seq) else {
            return;
        };
        if slot.committed.is_some() {
            return;
        }
        let Some(prepared) = slot
            .prepared
            .as_ref()
            .filter(|p| p.pre_prepare.body.view == view)
        else {
            return;
        };
        let digest = prepared.pre_prepare.body.digest;
        if self.commits.count(view, seq, &digest) < self.cfg.quorum() {
            return;
        }
        let commits: Vec<Signed<Commit>> = self
            .commits
            .votes_for(view, seq, &digest, None)
            .take(self.cfg.quorum())
            .map(|(_, c)| c.clone())
            .collect();
        let proof = CommittedProof {
            pre_prepare: prepared.pre_prepare.clone(),
            batch: prepared.batch.clone(),
            commits,
        };
        tracing::debug!(replica = self.id, view, seq, "committed");
        self.mark_committed(seq, proof);
    }

    /// Records a committed slot (locally, or from a certificate) and executes what can be.
    pub(crate) fn mark_committed(&mut self, seq: Seq, proof: CommittedProof) {
        let slot = self.slot_mut(seq);
        if let Some(existing) = &slot.committed {
            if existing.pre_prepare.body.digest != proof.pre_prepare.body.digest {
                // Two commit certificates for different batches at one sequence number:
                // impossible with at most f faulty replicas.
                let reason = format!(
                    "two different batches committed at seq {seq}: {} and {}",
                    existing.pre_prepare.body.digest, proof.pre_prepare.body.digest
                );
                self.halt(reason);
            }
            return;
        }
        slot.committed = Some(proof);
        self.try_execute();
    }

    /// Hands committed batches to the executor strictly in sequence order.
    pub(crate) fn try_execute(&mut self) {
        if self.fetch.is_some() || self.halted.is_some() {
            return;
        }
        loop {
            let seq = self.last_dispatched + 1;
            let Some(proof) = self.slots.get(&seq).and_then(|s| s.committed.as_ref()) else {
                return;
            };
            self.require(Invariant::Execute, Some(seq), || {
                // the next batch after the last dispatched, which reaches h when no state
                // transfer runs: so strictly above h, and inside the window like its slot
                if seq <= self.stable_seq || seq > self.high_watermark() {
                    return Err(format!(
                        "outside the watermarks ({}, {}]",
                        self.stable_seq,
                        self.high_watermark()
                    ));
                }
                if proof.pre_prepare.body.seq != seq {
                    return Err(format!(
                        "the certificate is for seq {}",
                        proof.pre_prepare.body.seq
                    ));
                }
                // q commits for the pre-prepare, and the batch it names
                if !self.valid_committed_proof(proof) {
                    return Err(format!(
                        "the certificate for {} in view {} does not prove its batch committed",
                        proof.pre_prepare.body.digest, proof.pre_prepare.body.view
                    ));
                }
                Ok(())
            });
            let action = Action::Execute {
                seq,
                view: proof.pre_prepare.body.view,
                digest: proof.pre_prepare.body.digest,
                batch: proof.batch.clone(),
            };
            self.last_dispatched = seq;
            self.push(action);
        }
    }

    /// The executor's result for `seq`: cache and send replies, checkpoint if due.
    pub(crate) fn handle_executed(&mut self, seq: Seq, result: ExecutionResult) {
        if seq <= self.last_executed {
            return; // superseded by a state transfer
        }
        if seq != self.last_executed + 1 || seq > self.last_dispatched {
            self.halt(format!(
                "executor reported seq {seq} but {} was expected (dispatched up to {})",
                self.last_executed + 1,
                self.last_dispatched
            ));
            return;
        }
        self.last_executed = seq;
        let bodies = result
            .replies
            .into_iter()
            .map(|r| Reply {
                view: self.view,
                seq,
                client: r.client,
                request_id: r.request_id,
                request: r.request,
                replica: self.id,
                result: r.result,
            })
            .collect();
        let mut clients = Vec::new();
        for reply in SignedReply::sign_batch(bodies, &self.key) {
            let r = &reply.body;
            let key = (r.client, r.request_id);
            let client = r.client;
            self.clients.executed(reply.clone());
            self.proposed.remove(&key);
            self.watch_ordered(&key);
            self.push(Action::Reply { client, reply });
            clients.push(client);
        }
        // a primary admits the requests it deferred that these executions made room for
        if self.is_primary() && self.status == Status::Normal {
            clients.sort_unstable();
            clients.dedup();
            for client in clients {
                for req in self.clients.take_ready(&client) {
                    self.handle_request(req, Some(self.id), false);
                }
            }
        }
        // the request timer stops only if the request it waits for executed
        if self.status == Status::Normal {
            self.backoff = 0;
        }
        self.rearm_request_timer();
        if seq.is_multiple_of(self.cfg.checkpoint_interval) {
            match result.state_digest {
                Some(d) => self.make_checkpoint(seq, d),
                None => {
                    self.halt(format!("executor gave no state digest at checkpoint {seq}"));
                    return;
                }
            }
        }
        self.try_propose();
    }

    /// Re-sends this replica's messages for slots that are not yet committed.
    pub(crate) fn retransmit_normal_case(&mut self) {
        let view = self.view;
        let primary = self.is_primary();
        let mut msgs = Vec::new();
        for (seq, slot) in self.slots.range(self.last_executed + 1..) {
            if slot.committed.is_some() {
                continue;
            }
            let Some((pp, batch)) = &slot.pre_prepare else {
                continue;
            };
            if pp.body.view != view {
                continue;
            }
            if primary {
                msgs.push(Message::PrePrepare {
                    pre_prepare: pp.clone(),
                    batch: batch.clone(),
                });
            } else if let Some((_, p)) = self
                .prepares
                .votes_for(view, *seq, &pp.body.digest, None)
                .find(|(r, _)| *r == self.id)
            {
                msgs.push(Message::Prepare(p.clone()));
            }
            if slot.commit_sent == Some(view) {
                if let Some((_, c)) = self
                    .commits
                    .votes_for(view, *seq, &pp.body.digest, None)
                    .find(|(r, _)| *r == self.id)
                {
                    msgs.push(Message::Commit(c.clone()));
                }
            }
        }
        for m in msgs {
            self.broadcast(m);
        }
        // a backup with waiting requests makes sure the primary has them
        if !primary {
            let p = self.primary();
            let reqs: Vec<SignedRequest> = self
                .clients
                .waiting()
                .take(self.cfg.max_batch)
                .cloned()
                .collect();
            for r in reqs {
                self.send(p, Message::Request(r));
            }
        }
    }
}
