//! New view (PBFT §4.4): the new primary computes `O` from q view changes `V`; backups
//! accept the new view only if `O` is exactly what they compute from `V` themselves.

use crate::action::WalRecord;
use crate::message::{
    Batch, Checkpoint, Evidence, Message, NewView, PrePrepare, PreparedCert, ReplicaId, Seq,
    Signed, ViewChange,
};
use crate::replica::{Replica, Status};
use crate::view_change::Invalid;
use pbft_crypto::Digest;
use std::collections::BTreeSet;

/// One entry of `O`: the batch to re-propose at `seq` in the new view, named by its
/// digest (view changes carry no batches; a replica that lacks the batch fetches it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OEntry {
    /// Sequence number.
    pub seq: Seq,
    /// Digest of the batch: prepared in the highest view, or the null batch.
    pub digest: Digest,
}

/// `O` as computed from a set of view changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OSet {
    /// `min_s`: the largest stable checkpoint in `V`.
    pub min_s: Seq,
    /// `max_s`: the largest prepared sequence number in `V` (at least `min_s`).
    pub max_s: Seq,
    /// One entry per sequence number in `(min_s, max_s]`, in order.
    pub entries: Vec<OEntry>,
}

/// Computes `O` from view changes (assumed individually valid): for every `s` in
/// `(min_s, max_s]`, the batch of the prepared certificate with the highest view among
/// `V`'s certificates for `s`, or a null batch if none. Ties between certificates of the
/// same view with different digests cannot happen with at most f faulty replicas; they
/// are broken by the smaller digest so that the computation stays deterministic.
pub fn compute_o(view_changes: &[&ViewChange]) -> OSet {
    let min_s = view_changes
        .iter()
        .map(|vc| vc.stable_seq)
        .max()
        .unwrap_or(0);
    let max_s = view_changes
        .iter()
        .flat_map(|vc| vc.prepared.iter().map(|p| p.pre_prepare.body.seq))
        .max()
        .unwrap_or(0)
        .max(min_s);
    let mut entries = Vec::new();
    for seq in min_s + 1..=max_s {
        let mut best: Option<&PreparedCert> = None;
        for p in view_changes
            .iter()
            .flat_map(|vc| vc.prepared.iter())
            .filter(|p| p.pre_prepare.body.seq == seq)
        {
            let better = match best {
                None => true,
                Some(b) => {
                    let (pv, bv) = (p.pre_prepare.body.view, b.pre_prepare.body.view);
                    pv > bv || (pv == bv && p.pre_prepare.body.digest < b.pre_prepare.body.digest)
                }
            };
            if better {
                best = Some(p);
            }
        }
        entries.push(OEntry {
            seq,
            digest: best.map_or_else(Batch::null_digest, |p| p.pre_prepare.body.digest),
        });
    }
    OSet {
        min_s,
        max_s,
        entries,
    }
}

impl Replica {
    /// As the primary of the new view with q view changes: broadcast `NewView(v, V, O)`.
    /// The primary sends it only once it holds every batch `O` names above its stable
    /// checkpoint, fetching the ones it lacks first, so that it can always supply them
    /// to the backups.
    pub(crate) fn send_new_view(&mut self) {
        if self.recovery.is_some() {
            return;
        }
        if self.new_view.is_some() || self.status != Status::ViewChange || !self.is_primary() {
            return;
        }
        let Some(all) = self.view_changes.get(&self.view) else {
            return;
        };
        // V: our own view change first, then others by id, q in all
        let mut v: Vec<Signed<ViewChange>> = all.get(&self.id).cloned().into_iter().collect();
        v.extend(
            all.iter()
                .filter(|(r, _)| **r != self.id)
                .map(|(_, vc)| vc.clone()),
        );
        v.truncate(self.cfg.quorum());
        if v.len() < self.cfg.quorum() {
            return;
        }
        let o = compute_o(&v.iter().map(|s| &s.body).collect::<Vec<_>>());
        let lacking: Vec<(Seq, Digest)> = o
            .entries
            .iter()
            .filter(|e| e.seq > self.stable_seq && self.find_batch(e.seq, &e.digest).is_none())
            .map(|e| (e.seq, e.digest))
            .collect();
        if !lacking.is_empty() {
            for (seq, digest) in lacking {
                // first ask the senders of V whose certificate names this batch
                let holders: Vec<ReplicaId> = v
                    .iter()
                    .filter(|vc| {
                        vc.body.prepared.iter().any(|c| {
                            c.pre_prepare.body.seq == seq && c.pre_prepare.body.digest == digest
                        })
                    })
                    .map(|vc| vc.body.replica)
                    .collect();
                self.want_batch(seq, digest, None, &holders);
            }
            tracing::info!(
                replica = self.id,
                view = self.view,
                missing = self.wanted.len(),
                "new view waits for batches"
            );
            return;
        }
        self.signed = true;
        let pre_prepares: Vec<Signed<PrePrepare>> = o
            .entries
            .iter()
            .map(|e| {
                Signed::sign(
                    PrePrepare {
                        view: self.view,
                        seq: e.seq,
                        digest: e.digest,
                    },
                    &self.key,
                )
            })
            .collect();
        let nv = Signed::sign(
            NewView {
                view: self.view,
                view_changes: v,
                pre_prepares,
            },
            &self.key,
        );
        tracing::info!(
            replica = self.id,
            view = self.view,
            slots = o.entries.len(),
            "sending new view"
        );
        self.persist(WalRecord::NewView(Box::new(nv.clone())));
        // The new view names its batches by digest only: log the batches with their
        // pre-prepares, so that a restarted primary still holds what it proposed.
        for pp in &nv.body.pre_prepares {
            if pp.body.seq <= self.stable_seq {
                continue;
            }
            if let Some(batch) = self.find_batch(pp.body.seq, &pp.body.digest) {
                self.persist(WalRecord::Proposed {
                    pre_prepare: pp.clone(),
                    batch,
                });
            }
        }
        self.broadcast(Message::NewView(Box::new(nv.clone())));
        self.install_new_view(nv, o);
    }

    /// Checks a new view: q valid view changes for its view from distinct replicas,
    /// and `O` equal to what we compute from them. Returns the computed `O`.
    pub(crate) fn validate_new_view(&self, nv: &NewView) -> Result<OSet, Invalid> {
        let mut senders = BTreeSet::new();
        for vc in &nv.view_changes {
            if vc.body.new_view != nv.view {
                return Err("view change for another view");
            }
            self.validate_view_change(&vc.body)?;
            if !senders.insert(vc.body.replica) {
                return Err("two view changes from one replica");
            }
        }
        if senders.len() < self.cfg.quorum() {
            return Err("fewer than q view changes");
        }
        if nv.view_changes.len() > self.cfg.quorum() {
            // exactly q, so that the new view's size is bounded by the configuration
            return Err("more than q view changes");
        }
        let o = compute_o(&nv.view_changes.iter().map(|s| &s.body).collect::<Vec<_>>());
        if o.entries.len() != nv.pre_prepares.len() {
            return Err("O has the wrong number of pre-prepares");
        }
        for (e, pp) in o.entries.iter().zip(&nv.pre_prepares) {
            if pp.body.view != nv.view || pp.body.seq != e.seq || pp.body.digest != e.digest {
                return Err("O differs from the one computed from V");
            }
        }
        Ok(o)
    }

    pub(crate) fn on_new_view(&mut self, nv: Signed<NewView>) {
        // Headers signed by earlier primaries (in its view changes) and by this view's
        // primary (its pre-prepares, which a second, different new view for a view we
        // are in contradicts), before the new view is installed or refused.
        let headers: Vec<Signed<PrePrepare>> = nv
            .body
            .view_changes
            .iter()
            .flat_map(|vc| vc.body.prepared.iter().map(|p| p.pre_prepare.clone()))
            .chain(nv.body.pre_prepares.iter().cloned())
            .collect();
        self.check_headers(&headers);
        if nv.body.view < self.view || (nv.body.view == self.view && self.status == Status::Normal)
        {
            return;
        }
        match self.validate_new_view(&nv.body) {
            Ok(o) => self.install_new_view(nv, o),
            Err(why) => {
                tracing::warn!(
                    replica = self.id,
                    view = nv.body.view,
                    why,
                    "rejected new view"
                );
                // Only the new view we wait for makes us move on; an invalid new view
                // for some later view is ignored rather than followed.
                if nv.body.view == self.view {
                    let next = nv.body.view + 1;
                    self.record_evidence(Evidence::BadNewView(Box::new(nv)), false);
                    if self.view < next {
                        self.start_view_change(next);
                    }
                }
            }
        }
    }

    /// Enters the new view: adopt its checkpoint, process `O` as ordinary pre-prepares.
    pub(crate) fn install_new_view(&mut self, nv: Signed<NewView>, o: OSet) {
        self.require_new_view(&nv, &o);
        let view = nv.body.view;
        tracing::info!(replica = self.id, view, "new view installed");
        self.view = view;
        self.status = Status::Normal;
        self.view_change_deadline = None;
        self.stop_request_timer();
        // A replica that learns the new view while still in normal status in an older
        // view (a laggard) did not pass through `start_view_change`: what it watched
        // there is not the new primary's to answer for.
        self.watch_reset();
        self.clients.clear_early();
        self.persist(WalRecord::View {
            view,
            changing: false,
        });
        if !self.is_primary() {
            self.persist(WalRecord::NewView(Box::new(nv.clone())));
        }
        // the checkpoint at min_s, proven inside V
        if o.min_s > self.stable_seq {
            let proof: Option<Vec<Signed<Checkpoint>>> = nv
                .body
                .view_changes
                .iter()
                .find(|vc| vc.body.stable_seq == o.min_s)
                .map(|vc| vc.body.checkpoint_proof.clone());
            if let Some(proof) = proof {
                if let Some(d) = self.valid_checkpoint_proof(o.min_s, &proof) {
                    self.on_stable(o.min_s, d, proof);
                }
            }
        }
        let primary = self.is_primary();
        // batches still wanted for an older view, or by the primary before it sent
        // this new view, are of no more use
        self.wanted
            .retain(|_, w| w.view == view && w.pre_prepare.is_some());
        for (e, pp) in o.entries.into_iter().zip(nv.body.pre_prepares.iter()) {
            if e.seq <= self.stable_seq {
                continue;
            }
            if let Some(c) = self.slots.get(&e.seq).and_then(|s| s.committed.as_ref()) {
                if c.pre_prepare.body.digest != e.digest {
                    let reason = format!(
                        "new view {view} re-proposes {} at seq {} where {} committed",
                        e.digest, e.seq, c.pre_prepare.body.digest
                    );
                    self.halt(reason);
                    return;
                }
            }
            self.enter_o_entry(pp, primary);
        }
        self.new_view = Some(nv);
        self.view_changes = self.view_changes.split_off(&(view + 1));
        self.prepares.retain_above(self.stable_seq, view);
        self.commits.retain_above(self.stable_seq, view);
        // The first free slot of this view is right after O: nothing above it holds a
        // pre-prepare of this view. Where this replica stopped proposing in an earlier
        // view of its own does not count: slots there that are in no one's O would be
        // a gap nobody fills.
        self.next_seq = (o.max_s + 1)
            .max(self.stable_seq + 1)
            .max(self.last_executed + 1);
        if primary {
            // everything known and not in O is proposed again
            let keys: Vec<_> = self
                .clients
                .waiting()
                .map(|r| r.key())
                .filter(|k| !self.proposed.contains(k))
                .collect();
            self.pending = keys.into_iter().collect();
            self.proposed.clear();
            for seq in self
                .slots
                .range(self.stable_seq + 1..)
                .map(|(s, _)| *s)
                .collect::<Vec<_>>()
            {
                if let Some((_, b)) = self.slots.get(&seq).and_then(|s| s.pre_prepare.as_ref()) {
                    let keys: Vec<_> = b.requests.iter().map(|r| r.key()).collect();
                    if self.slots[&seq]
                        .pre_prepare
                        .as_ref()
                        .is_some_and(|(p, _)| p.body.view == view)
                    {
                        self.proposed.extend(keys);
                    }
                }
            }
        } else {
            self.pending.clear();
            let p = self.primary();
            let limit = self.cfg.max_batch * self.cfg.pipeline_depth as usize;
            let reqs: Vec<_> = self
                .clients
                .waiting()
                .filter(|r| !self.proposed.contains(&r.key()))
                .take(limit)
                .cloned()
                .collect();
            // the new primary must order these (`order_watch`), from now on
            for r in reqs {
                self.watch_unordered(r.key());
                self.send(p, Message::Request(r));
            }
            self.proposed.clear();
            self.arm_request_timer();
        }
        let seqs: Vec<Seq> = self
            .slots
            .range(self.stable_seq + 1..)
            .map(|(s, _)| *s)
            .collect();
        for s in seqs {
            self.check_prepared(s);
        }
        self.try_execute();
        self.try_propose();
    }
}

impl Replica {
    /// Takes the pre-prepare of one `O` entry (above the stable checkpoint, consistent
    /// with what committed here): as the primary, as its own proposal; as a backup,
    /// accepted like any pre-prepare. If the batch it names is not at hand, it is
    /// fetched first, from the primary and then the others.
    fn enter_o_entry(&mut self, pp: &Signed<PrePrepare>, primary: bool) {
        let PrePrepare { seq, digest, .. } = pp.body;
        self.spare_replaced_batch(seq, &digest);
        let Some(batch) = self.find_batch(seq, &digest) else {
            let p = self.primary();
            self.want_batch(seq, digest, Some(pp.clone()), &[p]);
            return;
        };
        for r in &batch.requests {
            self.proposed.insert(r.key());
        }
        if primary {
            self.slot_mut(seq).pre_prepare = Some((pp.clone(), batch));
        } else {
            self.accept_pre_prepare(pp.clone(), batch);
        }
    }
}

impl Replica {
    /// After a restart in an installed view: fetches the batches of `O` that the log
    /// lost (their `Proposed` or `Accepted` records follow the new view's record).
    pub(crate) fn want_lost_o_batches(&mut self) {
        if self.status != Status::Normal {
            return;
        }
        let Some(nv) = self.new_view.clone() else {
            return;
        };
        for pp in &nv.body.pre_prepares {
            let seq = pp.body.seq;
            let held = self.slots.get(&seq).is_some_and(|s| {
                s.pre_prepare
                    .as_ref()
                    .is_some_and(|(p, _)| p.body.view == self.view)
            });
            if seq > self.stable_seq && !held {
                self.want_batch(seq, pp.body.digest, Some(pp.clone()), &[]);
            }
        }
    }
}
