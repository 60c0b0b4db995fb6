//! The replica's structural invariants, checked from inside the replica.
//!
//! The rule modules keep the replica's state consistent step by step; these checks say
//! what "consistent" means, in one place, and catch the step that breaks it instead of
//! leaving the damage to be seen from outside, long after, by the simulator's checkers.
//!
//! Every invariant here holds after every input *whatever the peers send*: the fuzz
//! tests drive one replica with three peers under the fuzzer's control, so a rule that
//! only holds with at most f faulty replicas (say, that two commit certificates agree)
//! is a property of the protocol for the checkers to test, not an invariant of the code.
//! A broken invariant is a bug in this crate.
//!
//! The switch: checks run when [`Replica::invariant_checks`] is on. It starts on in
//! builds with debug assertions and off otherwise; [`Replica::set_invariant_checks`]
//! turns it on or off at run time (the simulator turns it on in every build). When on,
//! the replica checks itself at the end of every input (`on_message`, `on_request`,
//! `on_timeout`, `on_executed`, `on_state_offer`, `on_state_transferred`) and when it
//! is built (`new`, `restore`), and checks the preconditions of installing a new view,
//! of a checkpoint becoming stable (with the garbage collection that follows) and of
//! handing a batch to the executor. A broken one panics with an
//! [`InvariantViolation`] report. When off, nothing is computed.
//! [`Replica::check_invariants`] runs the checks on demand, whatever the switch.
//!
//! A halted replica is exempt: it stops in the middle of a transition by design (the
//! handler that halts returns at once) and takes no further part.
//!
//! `h <= last_executed` is not among them: a checkpoint becomes stable on the others'
//! votes while the batches up to it are still with the executor, or while the replica
//! is behind and must fetch a snapshot. What holds is [`Invariant::StateTransfer`]: the
//! batches handed to the executor reach `h`, or a transfer of `h` is under way.
//!
//! The check after `restore` also checks what the driver hands it: a log and a ledger
//! kept as [`crate::Action`] demands (a record is durable before any later action is
//! performed) never leave the ledger more than L beyond the log's stable checkpoint.

use crate::message::{NewView, ReplicaId, Seq, Signed, View};
use crate::new_view::OSet;
use crate::quorum::VoteTracker;
use crate::replica::{Replica, Status};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// A rule about the replica's own state, or a precondition of one of its transitions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Invariant {
    /// `last_executed <= last_dispatched <= h + L`.
    ExecutionOrder,
    /// A state transfer is under way exactly while the dispatched batches stop below
    /// `h`, and it fetches the snapshot of `h` itself.
    StateTransfer,
    /// The stable-checkpoint proof held proves `h` and its digest.
    StableProof,
    /// Every log slot is inside the watermarks `(h, h + L]`.
    LogWindow,
    /// A slot's records are about its own sequence number, and a commit was sent only
    /// in the view the slot prepared in.
    SlotRecords,
    /// What the replica accepted, prepared and voted at one (view, seq) names one
    /// digest.
    OneDigestPerView,
    /// The slot after the last dispatched one is not committed, unless a state
    /// transfer holds execution back.
    ExecutionStall,
    /// Prepare and commit votes come from valid replicas, are counted right, lie inside
    /// the watermarks, and no prepare comes from its view's primary.
    Votes,
    /// Checkpoint votes are above `h`, at multiples of K, from valid replicas, within
    /// the per-sender budget.
    CheckpointVotes,
    /// Own checkpoints are at multiples of K from `h` up, signed by this replica, and
    /// the one at `h` has `h`'s digest.
    OwnCheckpoints,
    /// A replica changing views holds its own view change for the view it changes to.
    OwnViewChange,
    /// View changes kept are for the current view or later (later only, in normal
    /// status), filed under their sender and view, own ones only for the view being
    /// changed to, at most two views per other sender.
    ViewChanges,
    /// The new view held is the current view's, and a replica in normal status above
    /// view 0 holds it.
    NewView,
    /// Only the current view's primary queues requests to propose, and only in normal
    /// status does it hold proposed ones.
    Proposals,
    /// `h < next_seq <= h + L + 1`, and a primary in normal status has proposed nothing
    /// at or above `next_seq` in its view.
    NextSeq,
    /// The client table's counts and per-client bounds; only a primary in normal
    /// status defers requests.
    ClientTable,
    /// The request timer runs only at a backup in normal status with an exact client
    /// table, the new-view timer only while changing views.
    Timers,
    /// Only a backup in normal status with an exact client table watches for unordered
    /// requests; each of them is waiting, and each is queued for the deadline; the
    /// queue holds at most twice the live entries (plus a constant).
    OrderWatch,
    /// Peer progress and evidence name valid replica ids; no evidence accuses this
    /// replica; pre-prepares were relayed only to valid peers.
    ReplicaIds,
    /// Precondition of installing a new view: it is for a later view (or the one
    /// being changed to), and its `O` is well formed and matches its pre-prepares.
    InstallNewView,
    /// Precondition of a checkpoint becoming stable, and of collecting the log below
    /// it: a valid proof for that checkpoint and digest.
    StableCheckpoint,
    /// Precondition of handing a batch to the executor: strictly the next sequence
    /// number, inside the watermarks, committed by a valid certificate whose batch
    /// matches its digest.
    Execute,
}

impl Invariant {
    /// True for the preconditions of a transition, false for the invariants that hold
    /// after every input.
    pub fn is_precondition(self) -> bool {
        matches!(
            self,
            Invariant::InstallNewView | Invariant::StableCheckpoint | Invariant::Execute
        )
    }
}

impl fmt::Display for Invariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A broken invariant: which one, where, and the values involved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvariantViolation {
    /// The rule broken.
    pub invariant: Invariant,
    /// The replica.
    pub replica: ReplicaId,
    /// Its view.
    pub view: View,
    /// Its status.
    pub status: Status,
    /// Its last stable checkpoint `h`.
    pub stable_seq: Seq,
    /// The last sequence number executed.
    pub last_executed: Seq,
    /// The last sequence number handed to the executor.
    pub last_dispatched: Seq,
    /// The sequence number involved, if one is.
    pub seq: Option<Seq>,
    /// What was found.
    pub detail: String,
}

impl fmt::Display for InvariantViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.invariant.is_precondition() {
            "precondition"
        } else {
            "invariant"
        };
        write!(
            f,
            "replica {} broke the {kind} {} in view {} ({:?}; h {}, executed {}, dispatched {})",
            self.replica,
            self.invariant,
            self.view,
            self.status,
            self.stable_seq,
            self.last_executed,
            self.last_dispatched
        )?;
        if let Some(s) = self.seq {
            write!(f, " at seq {s}")?;
        }
        write!(f, ": {}", self.detail)
    }
}

impl std::error::Error for InvariantViolation {}

type Checked = Result<(), InvariantViolation>;

impl Replica {
    /// Turns the invariant checks on or off (see the [module](crate::invariants)
    /// documentation). They start on in builds with debug assertions. Turning them on
    /// checks the current state at once.
    ///
    /// # Panics
    /// When turned on while an invariant is broken: that is a bug in this crate.
    pub fn set_invariant_checks(&mut self, on: bool) {
        self.invariant_checks = on;
        self.assert_invariants("set_invariant_checks");
    }

    /// True if the replica checks its invariants after every input.
    pub fn invariant_checks(&self) -> bool {
        self.invariant_checks
    }

    /// Checks every invariant now, whatever the switch, and reports the first broken
    /// one. A halted replica passes (it no longer maintains its state).
    pub fn check_invariants(&self) -> Result<(), InvariantViolation> {
        if self.halted.is_some() {
            return Ok(());
        }
        self.check_execution()?;
        self.check_stable_proof()?;
        self.check_log()?;
        self.check_votes()?;
        self.check_checkpoints()?;
        self.check_views()?;
        self.check_proposals()?;
        self.check_timers()?;
        self.check_ids()?;
        // only a primary in normal status defers requests for when its window moves:
        // the deferred ones are forgotten at every view change and state transfer
        if self.clients.early_len() > 0 && !(self.is_primary() && self.status == Status::Normal) {
            return Err(self.broken(
                Invariant::ClientTable,
                None,
                format!(
                    "{} requests deferred outside a primary in normal status",
                    self.clients.early_len()
                ),
            ));
        }
        self.clients
            .check()
            .map_err(|d| self.broken(Invariant::ClientTable, None, d))
    }

    /// If checks are on, panics with the report of the first broken invariant. `after`
    /// names the input just handled.
    pub(crate) fn assert_invariants(&self, after: &'static str) {
        if !self.invariant_checks {
            return;
        }
        if let Err(v) = self.check_invariants() {
            panic!("{v} (after {after})");
        }
    }

    /// If checks are on and the replica has not halted, runs `check`, the precondition
    /// `invariant` of a transition, and panics with its report if it fails.
    pub(crate) fn require(
        &self,
        invariant: Invariant,
        seq: Option<Seq>,
        check: impl FnOnce() -> Result<(), String>,
    ) {
        if !self.invariant_checks || self.halted.is_some() {
            return;
        }
        if let Err(detail) = check() {
            panic!("{}", self.broken(invariant, seq, detail));
        }
    }

    fn broken(&self, invariant: Invariant, seq: Option<Seq>, detail: String) -> InvariantViolation {
        InvariantViolation {
            invariant,
            replica: self.id,
            view: self.view,
            status: self.status,
            stable_seq: self.stable_seq,
            last_executed: self.last_executed,
            last_dispatched: self.last_dispatched,
            seq,
            detail,
        }
    }

    fn valid_id(&self, r: ReplicaId) -> bool {
        r < self.cfg.n()
    }

    fn check_execution(&self) -> Checked {
        // the executor reports only batches it was handed, in order
        if self.last_executed > self.last_dispatched {
            return Err(self.broken(
                Invariant::ExecutionOrder,
                Some(self.last_executed),
                format!(
                    "executed {} but dispatched only up to {}",
                    self.last_executed, self.last_dispatched
                ),
            ));
        }
        // a batch is dispatched from a committed slot, and slots exist only inside the
        // window, which never moves down
        if self.last_dispatched > self.high_watermark() {
            return Err(self.broken(
                Invariant::ExecutionOrder,
                Some(self.last_dispatched),
                format!(
                    "dispatched up to {} beyond the high watermark {}",
                    self.last_dispatched,
                    self.high_watermark()
                ),
            ));
        }
        match &self.fetch {
            Some(f) => {
                // the replica fetches its stable checkpoint; a newer one replaces the
                // transfer, so an older one is never pursued
                if f.seq != self.stable_seq || f.digest != self.stable_digest {
                    return Err(self.broken(
                        Invariant::StateTransfer,
                        Some(f.seq),
                        format!(
                            "fetching checkpoint {} ({}) while h is {} ({})",
                            f.seq, f.digest, self.stable_seq, self.stable_digest
                        ),
                    ));
                }
                // a transfer starts only below what was dispatched, and nothing is
                // dispatched while it runs; otherwise installing the snapshot would move
                // the ledger back under batches the executor has
                if self.last_dispatched >= f.seq {
                    return Err(self.broken(
                        Invariant::StateTransfer,
                        Some(f.seq),
                        format!(
                            "fetching checkpoint {} though batches up to {} were dispatched",
                            f.seq, self.last_dispatched
                        ),
                    ));
                }
                // a snapshot is asked of another validator
                if let Some(p) = f
                    .peers
                    .iter()
                    .find(|p| !self.valid_id(**p) || **p == self.id)
                {
                    return Err(self.broken(
                        Invariant::StateTransfer,
                        Some(f.seq),
                        format!("would fetch the snapshot from replica {p}"),
                    ));
                }
            }
            None => {
                // without a transfer, the batches dispatched reach h: otherwise nothing
                // would ever bring the executor to the stable checkpoint
                if self.last_dispatched < self.stable_seq {
                    return Err(self.broken(
                        Invariant::StateTransfer,
                        Some(self.stable_seq),
                        format!(
                            "dispatched only up to {} below h {} with no state transfer",
                            self.last_dispatched, self.stable_seq
                        ),
                    ));
                }
                // the executor waits for the next slot only while it is not committed:
                // every path that commits a slot or ends a transfer calls `try_execute`
                let next = self.last_dispatched + 1;
                if self.slots.get(&next).is_some_and(|s| s.committed.is_some()) {
                    return Err(self.broken(
                        Invariant::ExecutionStall,
                        Some(next),
                        "committed but not handed to the executor".to_string(),
                    ));
                }
            }
        }
        Ok(())
    }

    fn check_stable_proof(&self) -> Checked {
        // view changes carry this proof, and peers behind are sent it: it must prove h
        match self.valid_checkpoint_proof(self.stable_seq, &self.stable_proof) {
            Some(d) if d == self.stable_digest => Ok(()),
            proven => Err(self.broken(
                Invariant::StableProof,
                Some(self.stable_seq),
                format!(
                    "a proof of {} messages proves {proven:?}, but h's digest is {}",
                    self.stable_proof.len(),
                    self.stable_digest
                ),
            )),
        }
    }

    fn check_log(&self) -> Checked {
        for (seq, slot) in &self.slots {
            let seq = *seq;
            // the log is bounded by L: nothing is accepted outside the watermarks, and
            // garbage collection drops everything at or below h
            if !self.in_window(seq) {
                return Err(self.broken(
                    Invariant::LogWindow,
                    Some(seq),
                    format!(
                        "a slot outside the watermarks ({}, {}]",
                        self.stable_seq,
                        self.high_watermark()
                    ),
                ));
            }
            // certificates are looked up by slot: one filed under another seq would be
            // re-proposed or executed at the wrong place
            let seqs = [
                slot.pre_prepare.as_ref().map(|(p, _)| p.body.seq),
                slot.prepared.as_ref().map(|p| p.pre_prepare.body.seq),
                slot.committed.as_ref().map(|c| c.pre_prepare.body.seq),
            ];
            if let Some(other) = seqs.into_iter().flatten().find(|s| *s != seq) {
                return Err(self.broken(
                    Invariant::SlotRecords,
                    Some(seq),
                    format!("the slot holds a certificate for seq {other}"),
                ));
            }
            // a commit is sent on becoming prepared, in that view
            if let Some(v) = slot.commit_sent {
                let prepared_view = slot.prepared.as_ref().map(|p| p.pre_prepare.body.view);
                if prepared_view != Some(v) {
                    return Err(self.broken(
                        Invariant::SlotRecords,
                        Some(seq),
                        format!("commit sent in view {v}, prepared in {prepared_view:?}"),
                    ));
                }
            }
            // the prepared certificate is built from the accepted pre-prepare, and a
            // conflicting pre-prepare in one view is evidence, never accepted
            if let (Some((pp, _)), Some(p)) = (&slot.pre_prepare, &slot.prepared) {
                let (a, b) = (pp.body, p.pre_prepare.body);
                if a.view == b.view && a.digest != b.digest {
                    return Err(self.broken(
                        Invariant::OneDigestPerView,
                        Some(seq),
                        format!(
                            "view {}: pre-prepare for {} but prepared {}",
                            a.view, a.digest, b.digest
                        ),
                    ));
                }
            }
            // pre-prepares are relayed to peers that voted otherwise
            if let Some(r) = slot
                .relayed_to
                .iter()
                .find(|r| !self.valid_id(**r) || **r == self.id)
            {
                return Err(self.broken(
                    Invariant::ReplicaIds,
                    Some(seq),
                    format!("pre-prepare relayed to replica {r}"),
                ));
            }
        }
        Ok(())
    }

    fn check_votes(&self) -> Checked {
        self.check_tracker(true, &self.prepares)?;
        self.check_tracker(false, &self.commits)
    }

    /// The votes of `tracker`, which holds prepares if `is_prepare`, else commits.
    fn check_tracker<M>(&self, is_prepare: bool, tracker: &VoteTracker<M>) -> Checked {
        let n = self.cfg.n();
        let kind = if is_prepare { "prepare" } else { "commit" };
        let each = |view: View, seq: Seq, r: ReplicaId, digest: &pbft_crypto::Digest| {
            // quorums count distinct validators; any other id inflates them
            if r >= n {
                return Err(self.broken(
                    Invariant::Votes,
                    Some(seq),
                    format!("a {kind} of view {view} from replica {r} of {n}"),
                ));
            }
            // votes are taken only inside the watermarks and collected below h
            if !self.in_window(seq) {
                return Err(self.broken(
                    Invariant::Votes,
                    Some(seq),
                    format!("a {kind} of view {view} from {r} outside the watermarks"),
                ));
            }
            // prepared certificates are built from these votes, and one that holds the
            // primary's prepare is invalid (its pre-prepare stands for it)
            if is_prepare && r == self.cfg.primary(view) {
                return Err(self.broken(
                    Invariant::Votes,
                    Some(seq),
                    format!("a prepare of view {view} from its primary {r}"),
                ));
            }
            if r != self.id {
                return Ok(());
            }
            // own votes: a prepare is sent for the accepted pre-prepare, a commit for the
            // prepared certificate, and never a second digest
            let slot = self.slots.get(&seq);
            let held = if is_prepare {
                slot.and_then(|s| s.pre_prepare.as_ref())
                    .filter(|(p, _)| p.body.view == view)
                    .map(|(p, _)| p.body.digest)
            } else {
                slot.and_then(|s| s.prepared.as_ref())
                    .filter(|p| p.pre_prepare.body.view == view)
                    .map(|p| p.pre_prepare.body.digest)
            };
            match held {
                Some(d) if d != *digest => Err(self.broken(
                    Invariant::OneDigestPerView,
                    Some(seq),
                    format!("view {view}: own {kind} for {digest} but the slot holds {d}"),
                )),
                _ => Ok(()),
            }
        };
        // counts decide quorums
        let miscount = |view, seq, d, counted, senders| {
            self.broken(
                Invariant::Votes,
                Some(seq),
                format!(
                    "{kind}s of view {view} for {d}: counted {counted}, from {senders} senders"
                ),
            )
        };
        tracker.check(each, miscount)
    }

    fn check_checkpoints(&self) -> Checked {
        let k = self.cfg.checkpoint_interval;
        let mut per_sender: BTreeMap<ReplicaId, usize> = BTreeMap::new();
        for (seq, votes) in &self.checkpoint_votes {
            let seq = *seq;
            // votes at or below h can prove nothing new: collected with the log
            if seq <= self.stable_seq || !seq.is_multiple_of(k) {
                return Err(self.broken(
                    Invariant::CheckpointVotes,
                    Some(seq),
                    format!("checkpoint votes kept at seq {seq} (K = {k})"),
                ));
            }
            for (r, c) in votes {
                // a vote counts for its sender and seq only: a quorum is q distinct ones
                if !self.valid_id(*r) || c.body.replica != *r || c.body.seq != seq {
                    return Err(self.broken(
                        Invariant::CheckpointVotes,
                        Some(seq),
                        format!(
                            "a checkpoint by {} for seq {} filed under replica {r}",
                            c.body.replica, c.body.seq
                        ),
                    ));
                }
                *per_sender.entry(*r).or_insert(0) += 1;
            }
        }
        // the budget bounds what one sender can make this replica keep
        let budget = self.checkpoint_budget();
        if let Some((r, count)) = per_sender.iter().find(|(_, c)| **c > budget) {
            return Err(self.broken(
                Invariant::CheckpointVotes,
                None,
                format!("replica {r} has {count} checkpoint votes kept, budget {budget}"),
            ));
        }
        for (seq, c) in &self.own_checkpoints {
            let seq = *seq;
            // own checkpoints are made after executing a multiple of K, and collected
            // below h (the one at h is kept to serve its snapshot)
            if seq < self.stable_seq
                || seq == 0
                || !seq.is_multiple_of(k)
                || c.body.seq != seq
                || c.body.replica != self.id
            {
                return Err(self.broken(
                    Invariant::OwnCheckpoints,
                    Some(seq),
                    format!(
                        "own checkpoint by {} for seq {} kept under seq {seq} (K = {k})",
                        c.body.replica, c.body.seq
                    ),
                ));
            }
            // a state contradicting a stable checkpoint halts the replica
            if seq == self.stable_seq && c.body.state_digest != self.stable_digest {
                return Err(self.broken(
                    Invariant::OwnCheckpoints,
                    Some(seq),
                    format!(
                        "own digest {} at h, whose proven digest is {}",
                        c.body.state_digest, self.stable_digest
                    ),
                ));
            }
        }
        Ok(())
    }

    fn check_views(&self) -> Checked {
        let changing = self.status == Status::ViewChange;
        // a replica changing views retransmits its own view change, and the new
        // primary puts it first in V
        if changing {
            let own = self
                .view_changes
                .get(&self.view)
                .and_then(|m| m.get(&self.id));
            if own.is_none_or(|vc| vc.body.new_view != self.view || vc.body.replica != self.id) {
                return Err(self.broken(
                    Invariant::OwnViewChange,
                    None,
                    format!(
                        "changing to view {} without its own view change for it",
                        self.view
                    ),
                ));
            }
        }
        // the new view is what a lagging peer is sent to join the current view
        if let Some(nv) = &self.new_view {
            if nv.body.view != self.view {
                return Err(self.broken(
                    Invariant::NewView,
                    None,
                    format!("holds the new view of view {}", nv.body.view),
                ));
            }
        } else if !changing && self.view > 0 {
            return Err(self.broken(
                Invariant::NewView,
                None,
                "in normal status above view 0 without the new view that started it".to_string(),
            ));
        }
        // view changes for views already left are useless; in normal status the
        // current view's were consumed by its new view
        let floor = if changing { self.view } else { self.view + 1 };
        let mut views_per_sender: BTreeMap<ReplicaId, usize> = BTreeMap::new();
        for (v, m) in &self.view_changes {
            if *v < floor {
                return Err(self.broken(
                    Invariant::ViewChanges,
                    None,
                    format!("view changes kept for view {v}"),
                ));
            }
            for (r, vc) in m {
                // the join rule and V count distinct senders for one view
                if !self.valid_id(*r) || vc.body.replica != *r || vc.body.new_view != *v {
                    return Err(self.broken(
                        Invariant::ViewChanges,
                        None,
                        format!(
                            "a view change by {} for view {} filed under replica {r}, view {v}",
                            vc.body.replica, vc.body.new_view
                        ),
                    ));
                }
                // this replica signs a view change only for the view it moves to
                if *r == self.id && !(changing && *v == self.view) {
                    return Err(self.broken(
                        Invariant::ViewChanges,
                        None,
                        format!("own view change for view {v} kept"),
                    ));
                }
                if *r != self.id {
                    *views_per_sender.entry(*r).or_insert(0) += 1;
                }
            }
        }
        // the memory bound of `on_view_change`
        if let Some((r, count)) = views_per_sender.iter().find(|(_, c)| **c > 2) {
            return Err(self.broken(
                Invariant::ViewChanges,
                None,
                format!("view changes from replica {r} kept for {count} views"),
            ));
        }
        Ok(())
    }

    fn check_proposals(&self) -> Checked {
        let primary = self.is_primary();
        let normal = self.status == Status::Normal;
        // backups forward requests rather than order them; a view change clears both
        if !self.pending.is_empty() && !primary {
            return Err(self.broken(
                Invariant::Proposals,
                None,
                format!(
                    "a backup with {} requests queued to propose",
                    self.pending.len()
                ),
            ));
        }
        if !(self.proposed.is_empty() || primary && normal) {
            return Err(self.broken(
                Invariant::Proposals,
                None,
                format!(
                    "{} requests marked proposed by a replica that is not a primary in \
                     normal status",
                    self.proposed.len()
                ),
            ));
        }
        // proposals go inside the window, above the stable checkpoint
        if self.next_seq <= self.stable_seq || self.next_seq > self.high_watermark() + 1 {
            return Err(self.broken(
                Invariant::NextSeq,
                Some(self.next_seq),
                format!(
                    "next_seq outside ({}, {}]",
                    self.stable_seq,
                    self.high_watermark() + 1
                ),
            ));
        }
        // a primary proposes once per (view, seq): anything at or above next_seq in its
        // view would be proposed over
        if primary && normal {
            let taken = self.slots.range(self.next_seq..).find(|(_, s)| {
                s.pre_prepare
                    .as_ref()
                    .is_some_and(|(p, _)| p.body.view == self.view)
            });
            if let Some((seq, _)) = taken {
                return Err(self.broken(
                    Invariant::NextSeq,
                    Some(*seq),
                    format!(
                        "a pre-prepare of this view at or above next_seq {}",
                        self.next_seq
                    ),
                ));
            }
        }
        Ok(())
    }

    fn check_timers(&self) -> Checked {
        let backup_in_normal = self.status == Status::Normal && !self.is_primary();
        // the request timer is a backup's suspicion of its primary
        if self.request_deadline.is_some() && !backup_in_normal {
            return Err(self.broken(
                Invariant::Timers,
                None,
                "request timer armed outside a backup in normal status".to_string(),
            ));
        }
        // an inexact client table cannot tell a new request from one executed before
        // the replica restarted: timing one would blame a primary that knows
        if self.request_deadline.is_some() && !self.clients.is_exact() {
            return Err(self.broken(
                Invariant::Timers,
                None,
                "request timer armed with an inexact client table".to_string(),
            ));
        }
        // the request timer waits for one request, named while it runs
        if self.request_deadline.is_some() != self.timed_request.is_some() {
            return Err(self.broken(
                Invariant::Timers,
                None,
                "request timer and the request it waits for disagree".to_string(),
            ));
        }
        // the new-view timer bounds one view-change attempt
        if self.view_change_deadline.is_some() && self.status != Status::ViewChange {
            return Err(self.broken(
                Invariant::Timers,
                None,
                "new-view timer armed in normal status".to_string(),
            ));
        }
        // the ordering deadline is a backup's rule of the normal case, cleared at every
        // view change and state transfer
        if self.order_watch.len() > 0 && !backup_in_normal {
            return Err(self.broken(
                Invariant::OrderWatch,
                None,
                format!(
                    "{} requests watched outside a backup in normal status",
                    self.order_watch.len()
                ),
            ));
        }
        // an inexact client table cannot tell a new request from one executed before
        // the replica restarted: watching one would blame a primary that knows
        if self.order_watch.len() > 0 && !self.clients.is_exact() {
            return Err(self.broken(
                Invariant::OrderWatch,
                None,
                format!(
                    "{} requests watched with an inexact client table",
                    self.order_watch.len()
                ),
            ));
        }
        // a watched request stops being watched when it executes
        if let Some((_, rid)) = self
            .order_watch
            .keys()
            .find(|k| !self.clients.is_waiting(k))
        {
            return Err(self.broken(
                Invariant::OrderWatch,
                None,
                format!("request {rid} of a client watched but not waiting"),
            ));
        }
        // the deadline is computed from the queue: an entry missing from it is never
        // timed
        if let Some((_, rid)) = self.order_watch.unqueued() {
            return Err(self.broken(
                Invariant::OrderWatch,
                None,
                format!("request {rid} of a client watched but not queued"),
            ));
        }
        // stale entries are compacted away: the queue's memory follows the live ones
        if let Some((queued, live)) = self.order_watch.overfull() {
            return Err(self.broken(
                Invariant::OrderWatch,
                None,
                format!("the order watch queues {queued} entries for {live} live ones"),
            ));
        }
        Ok(())
    }

    fn check_ids(&self) -> Checked {
        // catch-up and the tick's pace read peers' progress by their ids
        if let Some(r) = self.peer_progress.keys().find(|r| !self.valid_id(**r)) {
            return Err(self.broken(
                Invariant::ReplicaIds,
                None,
                format!("progress recorded for replica {r}"),
            ));
        }
        // evidence is filed under the validator it accuses, and never accuses us
        for (r, e) in &self.evidence {
            let accused = e.accused(self.cfg.n());
            if *r != accused || !self.valid_id(*r) || *r == self.id {
                return Err(self.broken(
                    Invariant::ReplicaIds,
                    None,
                    format!("evidence against {accused} filed under replica {r}"),
                ));
            }
        }
        Ok(())
    }

    /// Precondition of [`Replica::install_new_view`]: `nv` moves forward, and `o` is a
    /// well-formed `O` that matches its pre-prepares.
    pub(crate) fn require_new_view(&self, nv: &Signed<NewView>, o: &OSet) {
        self.require(Invariant::InstallNewView, None, || {
            let view = nv.body.view;
            // views only grow; the current view is installed only while changing to it
            if view < self.view || (view == self.view && self.status == Status::Normal) {
                return Err(format!(
                    "installing view {view} from view {} ({:?})",
                    self.view, self.status
                ));
            }
            // V: q view changes for this view from distinct validators
            let senders: BTreeSet<ReplicaId> = nv
                .body
                .view_changes
                .iter()
                .filter(|vc| vc.body.new_view == view && self.valid_id(vc.body.replica))
                .map(|vc| vc.body.replica)
                .collect();
            if senders.len() < self.cfg.quorum() || senders.len() != nv.body.view_changes.len() {
                return Err(format!(
                    "V has {} view changes from {} distinct validators for this view",
                    nv.body.view_changes.len(),
                    senders.len()
                ));
            }
            // O covers (min_s, max_s] in order, inside the window of min_s
            if o.max_s < o.min_s
                || o.max_s > o.min_s + self.cfg.log_window
                || o.entries.len() as u64 != o.max_s - o.min_s
            {
                return Err(format!(
                    "O spans ({}, {}] with {} entries",
                    o.min_s,
                    o.max_s,
                    o.entries.len()
                ));
            }
            if o.entries.len() != nv.body.pre_prepares.len() {
                return Err(format!(
                    "O has {} entries but the new view {} pre-prepares",
                    o.entries.len(),
                    nv.body.pre_prepares.len()
                ));
            }
            for ((e, pp), seq) in o
                .entries
                .iter()
                .zip(&nv.body.pre_prepares)
                .zip(o.min_s + 1..)
            {
                let b = pp.body;
                if e.seq != seq || b.view != view || b.seq != seq || b.digest != e.digest {
                    return Err(format!(
                        "O entry at {} ({}) against pre-prepare ({}, {}, {}), expected seq {seq}",
                        e.seq, e.digest, b.view, b.seq, b.digest
                    ));
                }
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests;
