//! Signed proof of misbehaviour: recorded, gossiped once, and acted on (a provably
//! faulty primary is replaced at once, without waiting for a timer).

use crate::action::{Action, WalRecord};
use crate::message::{Evidence, Message};
use crate::replica::{Replica, Status};
use std::collections::BTreeSet;

impl Replica {
    /// True if `e` proves its accused validator faulty (signatures were checked by the
    /// verification stage; `bad_requests` are the batch's invalid client signatures).
    pub(crate) fn evidence_holds(&self, e: &Evidence, bad_requests: &[u32]) -> bool {
        match e {
            Evidence::Equivocation { a, b } => {
                a.body.view == b.body.view
                    && a.body.seq == b.body.seq
                    && a.body.digest != b.body.digest
            }
            // Self-certifying only if the primary signed this very batch: a batch that
            // does not match the signed digest was paired with it by someone else.
            Evidence::BadPrePrepare { pre_prepare, batch } => {
                batch.digest() == pre_prepare.body.digest
                    && (!bad_requests.is_empty() || batch.requests.len() > self.cfg.max_batch)
            }
            Evidence::DoublePrepare { a, b } => {
                a.body.replica == b.body.replica
                    && a.body.view == b.body.view
                    && a.body.seq == b.body.seq
                    && a.body.digest != b.body.digest
            }
            Evidence::DoubleCommit { a, b } => {
                a.body.replica == b.body.replica
                    && a.body.view == b.body.view
                    && a.body.seq == b.body.seq
                    && a.body.digest != b.body.digest
            }
            Evidence::CheckpointLie { lie, proof } => {
                let signers: BTreeSet<_> = proof.iter().map(|c| c.body.replica).collect();
                match self.valid_checkpoint_proof(lie.body.seq, proof) {
                    Some(d) => d != lie.body.state_digest && !signers.contains(&lie.body.replica),
                    None => false,
                }
            }
            Evidence::BadNewView(nv) => self.validate_new_view(&nv.body).is_err(),
        }
    }

    /// Records evidence found locally (or received and checked). The first piece against
    /// each validator is kept, persisted and, if `gossip`, sent to everyone.
    pub(crate) fn record_evidence(&mut self, e: Evidence, gossip: bool) {
        let accused = e.accused(self.cfg.n());
        if accused == self.id || self.evidence.contains_key(&accused) {
            return;
        }
        tracing::warn!(
            replica = self.id,
            view = self.view,
            accused,
            kind = e.kind(),
            "evidence"
        );
        self.evidence.insert(accused, e.clone());
        self.persist(WalRecord::Evidence(Box::new(e.clone())));
        self.push(Action::Evidence {
            against: accused,
            evidence: Box::new(e.clone()),
        });
        if gossip {
            self.broadcast(Message::Evidence(Box::new(e)));
        }
    }

    /// A provably faulty primary is replaced at once. Called at the end of every input,
    /// never in the middle of a transition (such as installing a new view), so that
    /// evidence found halfway through one cannot leave the replica half in two views.
    pub(crate) fn replace_faulty_primary(&mut self) {
        let p = self.primary();
        if self.status == Status::Normal && p != self.id && self.evidence.contains_key(&p) {
            tracing::info!(
                replica = self.id,
                view = self.view,
                primary = p,
                "replacing a provably faulty primary"
            );
            self.start_view_change(self.view + 1);
        }
    }

    pub(crate) fn on_evidence(&mut self, e: Evidence, bad_requests: &[u32]) {
        if self.evidence_holds(&e, bad_requests) {
            self.record_evidence(e, false);
        }
    }
}
