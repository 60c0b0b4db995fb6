//! View change (PBFT §4.4): leaving a view whose primary is suspected, the `C` and `P`
//! sets, joining on f+1, and the timeout back-off.

use crate::action::WalRecord;
use crate::message::{Checkpoint, Message, PreparedCert, ReplicaId, Seq, Signed, View, ViewChange};
use crate::replica::{Replica, Status};
use std::collections::BTreeSet;

/// Why a view-change message is invalid.
pub(crate) type Invalid = &'static str;

impl Replica {
    /// Stops taking normal-case messages for the current view and broadcasts
    /// `ViewChange(target, h, C, P)`.
    pub(crate) fn start_view_change(&mut self, target: View) {
        assert!(
            target > self.view,
            "a view change must move to a higher view"
        );
        if self.recovery.is_some() {
            // it forgot what it prepared: a view change from it could drop a committed
            // request from the new view. It follows the others' new view instead, and
            // the timers that brought it here stop (they would fire again at once).
            self.stop_request_timer();
            self.watch_reset();
            self.view_change_deadline = None;
            return;
        }
        self.signed = true;
        tracing::info!(
            replica = self.id,
            from = self.view,
            to = target,
            "view change"
        );
        self.view = target;
        self.status = Status::ViewChange;
        self.new_view = None;
        self.stop_request_timer();
        self.view_change_deadline = None;
        self.watch_reset();
        self.clients.clear_early();
        self.pending.clear();
        self.proposed.clear();
        self.wanted.clear();
        // certificates without their batches: the view change's size depends on n and
        // L only (docs/protocol.md, "Message sizes")
        let prepared: Vec<PreparedCert> = self
            .slots
            .range(self.stable_seq + 1..)
            .filter_map(|(_, s)| s.prepared.as_ref().map(|p| p.cert()))
            .collect();
        let vc = Signed::sign(
            ViewChange {
                new_view: target,
                stable_seq: self.stable_seq,
                checkpoint_proof: self.wire_checkpoint_proof(),
                prepared,
                replica: self.id,
            },
            &self.key,
        );
        self.persist(WalRecord::View {
            view: target,
            changing: true,
        });
        self.persist(WalRecord::ViewChange(Box::new(vc.clone())));
        self.broadcast(Message::ViewChange(Box::new(vc.clone())));
        self.view_changes
            .entry(target)
            .or_default()
            .insert(self.id, vc);
        self.view_changes = self.view_changes.split_off(&target);
        self.progress_view_change();
    }

    /// Our stable-checkpoint proof as a view change carries it: q checkpoints from
    /// distinct replicas (a proof adopted from a peer may hold more, or repeats).
    pub(crate) fn wire_checkpoint_proof(&self) -> Vec<Signed<Checkpoint>> {
        let mut seen = BTreeSet::new();
        self.stable_proof
            .iter()
            .filter(|c| seen.insert(c.body.replica))
            .take(self.cfg.quorum())
            .cloned()
            .collect()
    }

    /// Checks a view change for `target`: its checkpoint proof and every prepared
    /// certificate (signatures were checked by the verification stage). The counts are
    /// exact (q checkpoints, at most L certificates of exactly 2f prepares), so that a
    /// valid view change, and a new view made of q of them, has a size bounded by the
    /// configuration (docs/protocol.md, "Message sizes").
    pub(crate) fn validate_view_change(&self, vc: &ViewChange) -> Result<(), Invalid> {
        if vc.replica >= self.cfg.n() {
            return Err("unknown replica");
        }
        if vc.checkpoint_proof.len() > self.cfg.quorum() {
            return Err("checkpoint proof with more than q checkpoints");
        }
        if self
            .valid_checkpoint_proof(vc.stable_seq, &vc.checkpoint_proof)
            .is_none()
        {
            return Err("invalid checkpoint proof");
        }
        let mut seqs = BTreeSet::new();
        for p in &vc.prepared {
            let pp = p.pre_prepare.body;
            if pp.view >= vc.new_view {
                return Err("prepared certificate from a view not below the new view");
            }
            if pp.seq <= vc.stable_seq || pp.seq > vc.stable_seq.saturating_add(self.cfg.log_window)
            {
                return Err("prepared certificate outside the sender's window");
            }
            if !seqs.insert(pp.seq) {
                return Err("two prepared certificates for one sequence number");
            }
            let primary = self.cfg.primary(pp.view);
            let mut senders = BTreeSet::new();
            for pr in &p.prepares {
                let b = pr.body;
                if b.view != pp.view || b.seq != pp.seq || b.digest != pp.digest {
                    return Err("prepare in a certificate does not match its pre-prepare");
                }
                if b.replica == primary || b.replica >= self.cfg.n() {
                    return Err("prepare in a certificate from the primary or an unknown id");
                }
                senders.insert(b.replica);
            }
            if senders.len() != self.cfg.quorum() - 1 || p.prepares.len() != senders.len() {
                return Err("prepared certificate without exactly 2f distinct prepares");
            }
        }
        Ok(())
    }

    pub(crate) fn on_view_change(&mut self, vc: Signed<ViewChange>) {
        let target = vc.body.new_view;
        let sender = vc.body.replica;
        // its prepared certificates carry headers signed by earlier primaries, however
        // late or invalid the view change itself
        self.check_headers(vc.body.prepared.iter().map(|p| &p.pre_prepare));
        if target < self.view {
            return;
        }
        if target == self.view && self.status == Status::Normal {
            // a replica still changing to the view we are in: help it with the new view
            if self.is_primary() {
                self.resend_new_view(sender);
            }
            return;
        }
        if let Err(why) = self.validate_view_change(&vc.body) {
            tracing::debug!(
                replica = self.id,
                view = self.view,
                sender,
                why,
                "invalid view change"
            );
            return;
        }
        let entry = self.view_changes.entry(target).or_default();
        if entry.contains_key(&sender) {
            return;
        }
        entry.insert(sender, vc);
        // bound memory: one sender keeps view changes for at most two future views
        let views: Vec<View> = self
            .view_changes
            .iter()
            .filter(|(_, m)| m.contains_key(&sender))
            .map(|(v, _)| *v)
            .collect();
        if views.len() > 2 {
            for v in &views[..views.len() - 2] {
                if let Some(m) = self.view_changes.get_mut(v) {
                    m.remove(&sender);
                }
            }
        }
        // and a view nobody holds a view change for any more is dropped with it, so the
        // map stays within two views per sender
        self.view_changes.retain(|_, m| !m.is_empty());
        self.progress_view_change();
    }

    /// Applies the join rule, arms the new-view timer, and lets the new primary act.
    pub(crate) fn progress_view_change(&mut self) {
        // Join: f+1 valid view changes for views above ours (at least one honest replica
        // wants to move): go to the smallest of those views.
        let mut senders: Vec<(ReplicaId, View)> = Vec::new();
        for (v, m) in self.view_changes.range(self.view + 1..) {
            for r in m.keys() {
                if *r != self.id && !senders.iter().any(|(s, _)| s == r) {
                    senders.push((*r, *v));
                }
            }
        }
        if senders.len() >= self.cfg.weak_quorum() {
            let smallest = senders
                .iter()
                .map(|(_, v)| *v)
                .min()
                .unwrap_or(self.view + 1);
            self.start_view_change(smallest);
            return;
        }
        if self.status != Status::ViewChange {
            return;
        }
        let have = self.view_changes.get(&self.view).map_or(0, |m| m.len());
        if have >= self.cfg.quorum() {
            if self.view_change_deadline.is_none() {
                self.view_change_deadline = Some(self.now.plus(self.current_timeout()));
            }
            if self.is_primary() {
                self.send_new_view();
            }
        }
    }

    /// A peer's heartbeat. A peer in an older view missed our new view: send it the
    /// signed new view, which it can check by itself.
    pub(crate) fn on_status(&mut self, from: ReplicaId, view: View, last_executed: Seq) {
        self.note_progress(from, last_executed);
        if view < self.view && self.status == Status::Normal {
            self.resend_new_view(from);
        }
    }

    /// The prepared certificate for `seq` with the highest view, if any (used by tests).
    pub fn prepared_view(&self, seq: Seq) -> Option<View> {
        self.slots
            .get(&seq)
            .and_then(|s| s.prepared.as_ref())
            .map(|p| p.pre_prepare.body.view)
    }
}
