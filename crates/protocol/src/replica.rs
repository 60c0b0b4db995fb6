//! The replica: state, input dispatch, timers and the action queue. The protocol rules
//! live in one file per concern, each an `impl Replica` block:
//! [`crate::normal_case`], [`crate::checkpoint`], [`crate::view_change`],
//! [`crate::new_view`], [`crate::state_transfer`], [`crate::evidence`].

use crate::action::{Action, WalRecord};
use crate::bounds::FrameBounds;
use crate::client_table::{ClientRecords, ClientTable};
use crate::config::{Config, ConfigError};
use crate::envelope::Limits;
use crate::message::{
    Batch, Checkpoint, Commit, CommittedProof, Evidence, Message, NewView, PrePrepare, Prepare,
    PreparedProof, ReplicaId, Reply, RequestId, Seq, Signed, SignedReply, View, ViewChange,
};
use crate::order_watch::OrderWatch;
use crate::quorum::VoteTracker;
use crate::state_transfer::MAX_PROOFS_PER_ANSWER;
use crate::time::{Duration, Instant};
use crate::verify::{Verified, VerifiedRequest};
use pbft_crypto::{Digest, Keypair, PublicKey};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Whether the replica takes normal-case messages or is changing views.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Processing pre-prepares, prepares and commits of the current view.
    Normal,
    /// Sent a view change for the current view and waits for its new view.
    ViewChange,
}

/// The executor's answer to [`Action::Execute`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecutionResult {
    /// One entry per request in the batch, in order.
    pub replies: Vec<ExecutedRequest>,
    /// The state digest after the batch. Required when `seq` is a multiple of K.
    pub state_digest: Option<Digest>,
}

/// The outcome of one executed request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecutedRequest {
    /// The client.
    pub client: PublicKey,
    /// The request.
    pub request_id: RequestId,
    /// [`crate::Request::digest`] of the request in the batch: the reply binds it.
    pub request: Digest,
    /// The encoded receipt sent to the client (identical on every honest replica).
    pub result: Vec<u8>,
}

/// One sequence number's log entry.
#[derive(Clone, Debug, Default)]
pub(crate) struct Slot {
    /// The pre-prepare accepted (or, at the primary, sent) in `pre_prepare.body.view`.
    pub pre_prepare: Option<(Signed<PrePrepare>, Batch)>,
    /// The prepared certificate from the highest view in which this slot prepared.
    pub prepared: Option<PreparedProof>,
    /// The view in which this replica sent its commit.
    pub commit_sent: Option<View>,
    /// Set once committed-local (or proven committed by a certificate).
    pub committed: Option<CommittedProof>,
    /// Peers already sent our pre-prepare because they voted for another digest.
    pub relayed_to: BTreeSet<ReplicaId>,
}

/// An ongoing state transfer.
#[derive(Clone, Debug)]
pub(crate) struct Fetch {
    pub seq: Seq,
    pub digest: Digest,
    pub peers: Vec<ReplicaId>,
    pub next_peer: usize,
    pub installing: bool,
    pub deadline: Instant,
}

/// A batch this replica needs and is fetching by its digest (see
/// [`crate::state_transfer`]).
#[derive(Clone, Debug)]
pub(crate) struct WantedBatch {
    /// The digest the batch must have.
    pub digest: Digest,
    /// The view the batch is wanted for; dropped once the replica is in another.
    pub view: View,
    /// The new view's pre-prepare to take once the batch is here; `None` for the new
    /// primary, which wants it before it sends its new view.
    pub pre_prepare: Option<Signed<PrePrepare>>,
    /// Who to ask, in order, round robin.
    pub peers: Vec<ReplicaId>,
    /// Index of the next peer to ask.
    pub next_peer: usize,
    /// When to ask the next peer if no matching batch came.
    pub deadline: Instant,
}

/// The PBFT replica as a pure state machine: feed it inputs, drain [`Action`]s.
#[derive(Debug)]
pub struct Replica {
    pub(crate) cfg: Config,
    pub(crate) id: ReplicaId,
    pub(crate) key: Keypair,
    pub(crate) now: Instant,

    pub(crate) view: View,
    pub(crate) status: Status,

    // --- log and watermarks (checkpoint.rs) ---
    /// h: the last stable checkpoint.
    pub(crate) stable_seq: Seq,
    pub(crate) stable_digest: Digest,
    pub(crate) stable_proof: Vec<Signed<Checkpoint>>,
    pub(crate) slots: BTreeMap<Seq, Slot>,
    pub(crate) prepares: VoteTracker<Signed<Prepare>>,
    pub(crate) commits: VoteTracker<Signed<Commit>>,
    pub(crate) checkpoint_votes: BTreeMap<Seq, BTreeMap<ReplicaId, Signed<Checkpoint>>>,
    /// Digests this replica computed at its own checkpoints, with its signed message.
    pub(crate) own_checkpoints: BTreeMap<Seq, Signed<Checkpoint>>,

    // --- execution ---
    pub(crate) last_executed: Seq,
    pub(crate) last_dispatched: Seq,

    // --- primary ---
    pub(crate) next_seq: Seq,
    pub(crate) pending: VecDeque<(PublicKey, RequestId)>,
    pub(crate) proposed: BTreeSet<(PublicKey, RequestId)>,

    // --- clients ---
    pub(crate) clients: ClientTable,

    // --- view change ---
    pub(crate) view_changes: BTreeMap<View, BTreeMap<ReplicaId, Signed<ViewChange>>>,
    pub(crate) new_view: Option<Signed<NewView>>,
    pub(crate) backoff: u32,
    pub(crate) view_change_deadline: Option<Instant>,
    pub(crate) request_deadline: Option<Instant>,
    /// The request the request timer waits for (PBFT §4.4: it stops when that request
    /// executes, and restarts for another waiting one).
    pub(crate) timed_request: Option<(PublicKey, RequestId)>,
    /// Requests the primary has not ordered yet, and the ordering deadline.
    pub(crate) order_watch: OrderWatch,

    // --- retransmission and catch-up ---
    pub(crate) tick_deadline: Option<Instant>,
    pub(crate) executed_at_last_tick: Seq,
    /// Catch-up requests sent: the peers ahead are asked in turn by this count, so that
    /// each gets its turn however the stalled ticks fall.
    pub(crate) catch_up_asks: u64,
    pub(crate) peer_progress: BTreeMap<ReplicaId, Seq>,
    pub(crate) fetch: Option<Fetch>,
    pub(crate) bad_state_peers: BTreeSet<ReplicaId>,
    /// When each peer was last answered a costly ask (state_transfer.rs).
    pub(crate) answered: crate::state_transfer::Answered,
    /// What repeated client requests were answered again lately (resend.rs).
    pub(crate) resends: crate::resend::Resends,
    /// Batches named by digest in a new view (or its view changes) that this replica
    /// lacks, by sequence number.
    pub(crate) wanted: BTreeMap<Seq, WantedBatch>,
    /// Batches known for a sequence number besides the ones its slot holds: fetched
    /// ones, and ones a new view's pre-prepare replaced. At most
    /// [`crate::state_transfer::SPARE_BATCHES`] per sequence number, inside the window.
    pub(crate) spare_batches: BTreeMap<Seq, Vec<(Digest, Batch)>>,
    /// Batch replies sent to each peer in the current view: at most
    /// [`crate::state_transfer::BATCHES_SERVED_PER_VIEW`] log windows' worth, so that a
    /// peer asking again and again costs a bounded amount.
    pub(crate) batches_served: BTreeMap<ReplicaId, (View, u64)>,
    /// Most commit certificates in one catch-up answer, so that it fits one frame.
    pub(crate) proofs_per_answer: u64,

    // --- evidence ---
    pub(crate) evidence: BTreeMap<ReplicaId, Evidence>,

    /// Set while the replica recovers from a lost log and signs no votes.
    pub(crate) recovery: Option<crate::recovery::Recovery>,
    /// True once this replica signed a pre-prepare, prepare, commit, checkpoint, view
    /// change or new view (in this run or, after a restart, before it).
    pub(crate) signed: bool,
    /// Per recovering peer: the nonce of its question, and whether this replica had
    /// signed nothing when that question first arrived (what it answers it).
    pub(crate) blank_for: BTreeMap<ReplicaId, (u64, bool)>,

    pub(crate) actions: VecDeque<Action>,
    pub(crate) halted: Option<String>,
    /// Whether the invariants are checked after every input (see [`crate::invariants`]).
    pub(crate) invariant_checks: bool,
}

impl Replica {
    /// A fresh replica at genesis. `id` is found by the caller by matching `key` in the
    /// cluster configuration.
    pub fn new(cfg: Config, id: ReplicaId, key: Keypair) -> Result<Replica, ConfigError> {
        cfg.validate()?;
        if cfg.validators.get(id as usize) != Some(&key.public()) {
            return Err(ConfigError::Invalid {
                field: "key",
                reason: "the key does not belong to this replica id",
            });
        }
        let window = cfg.client_window;
        let limits = Limits::default();
        let proofs_per_answer = FrameBounds::of(&cfg, &limits)
            .proofs_per_answer(&limits, MAX_PROOFS_PER_ANSWER as usize)
            .max(1) as u64;
        let r = Replica {
            cfg,
            id,
            key,
            now: Instant::ZERO,
            view: 0,
            status: Status::Normal,
            stable_seq: 0,
            stable_digest: Digest::ZERO,
            stable_proof: Vec::new(),
            slots: BTreeMap::new(),
            prepares: VoteTracker::new(),
            commits: VoteTracker::new(),
            checkpoint_votes: BTreeMap::new(),
            own_checkpoints: BTreeMap::new(),
            last_executed: 0,
            last_dispatched: 0,
            next_seq: 1,
            pending: VecDeque::new(),
            proposed: BTreeSet::new(),
            clients: ClientTable::new(window),
            view_changes: BTreeMap::new(),
            new_view: None,
            backoff: 0,
            view_change_deadline: None,
            request_deadline: None,
            timed_request: None,
            order_watch: OrderWatch::default(),
            tick_deadline: None,
            executed_at_last_tick: 0,
            catch_up_asks: 0,
            peer_progress: BTreeMap::new(),
            fetch: None,
            bad_state_peers: BTreeSet::new(),
            answered: Default::default(),
            resends: Default::default(),
            wanted: BTreeMap::new(),
            spare_batches: BTreeMap::new(),
            batches_served: BTreeMap::new(),
            proofs_per_answer,
            evidence: BTreeMap::new(),
            recovery: None,
            signed: false,
            blank_for: BTreeMap::new(),
            actions: VecDeque::new(),
            halted: None,
            invariant_checks: cfg!(debug_assertions),
        };
        r.assert_invariants("new");
        Ok(r)
    }

    // ------------------------------------------------------------------ accessors

    /// How many views this replica holds view changes for: at most two per sender,
    /// whatever targets a traitor names.
    pub fn view_change_views(&self) -> usize {
        self.view_changes.len()
    }

    /// Batches this replica is fetching by digest (named by a new view it installs or,
    /// as the new primary, is about to send). At most one per sequence number of `O`.
    pub fn wanted_batches(&self) -> usize {
        self.wanted.len()
    }

    /// Batches kept besides those in the log's slots (fetched ones, and ones a later
    /// pre-prepare replaced), in all sequence numbers.
    pub fn spare_batches(&self) -> usize {
        self.spare_batches.values().map(Vec::len).sum()
    }

    /// This replica's id.
    pub fn id(&self) -> ReplicaId {
        self.id
    }
    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }
    /// The current view.
    pub fn view(&self) -> View {
        self.view
    }
    /// Normal or changing views.
    pub fn status(&self) -> Status {
        self.status
    }
    /// True if this replica is the primary of its current view.
    pub fn is_primary(&self) -> bool {
        self.cfg.primary(self.view) == self.id
    }
    /// The last sequence number executed (or installed by state transfer).
    pub fn last_executed(&self) -> Seq {
        self.last_executed
    }
    /// The last stable checkpoint `h`.
    pub fn stable_checkpoint(&self) -> Seq {
        self.stable_seq
    }
    /// Evidence held, by accused validator.
    pub fn evidence(&self) -> &BTreeMap<ReplicaId, Evidence> {
        &self.evidence
    }
    /// Why the replica halted, if it did.
    pub fn halted(&self) -> Option<&str> {
        self.halted.as_deref()
    }
    /// Number of live log slots (bounded by the log window; for tests).
    pub fn log_len(&self) -> usize {
        self.slots.len()
    }
    /// Requests known and waiting to execute.
    pub fn waiting_requests(&self) -> usize {
        self.clients.waiting_len()
    }
    /// Requests this backup knows of that the primary has not ordered in this view.
    pub fn unordered_requests(&self) -> usize {
        self.order_watch.len()
    }
    /// When this backup will give up on the primary for leaving a request unordered,
    /// if nothing changes before then.
    pub fn order_deadline(&self) -> Option<Instant> {
        self.order_watch.deadline
    }
    /// True while a state transfer is under way.
    pub fn is_fetching_state(&self) -> bool {
        self.fetch.is_some()
    }

    // ------------------------------------------------------------------ inputs

    /// A verified message from another validator.
    pub fn on_message(&mut self, msg: Verified, now: Instant) {
        if !self.begin(now) {
            return;
        }
        let (from, msg, bad_requests) = msg.into_parts();
        if from == self.id {
            return;
        }
        let span = tracing::debug_span!(
            "replica",
            id = self.id,
            view = self.view,
            seq = self.last_executed
        );
        let _g = span.enter();
        match msg {
            Message::Request(r) => self.handle_request(r, Some(from), false),
            Message::PrePrepare { pre_prepare, batch } => {
                self.on_pre_prepare(from, pre_prepare, batch, &bad_requests)
            }
            Message::Prepare(p) => self.on_prepare(p),
            Message::Commit(c) => self.on_commit(c),
            Message::Checkpoint(c) => self.on_checkpoint(c),
            Message::ViewChange(vc) => self.on_view_change(*vc),
            Message::NewView(nv) => self.on_new_view(*nv),
            Message::Evidence(e) => self.on_evidence(*e, &bad_requests),
            Message::FetchCommitted { from_seq, to_seq } => {
                self.on_fetch_committed(from, from_seq, to_seq)
            }
            Message::Committed {
                stable_proof,
                proofs,
            } => self.on_committed(stable_proof, proofs),
            Message::StateRequest { seq } => self.on_state_request(from, seq),
            Message::FetchBatch { seq, digest } => self.on_fetch_batch(from, seq, digest),
            Message::BatchReply { seq, batch } => self.on_batch_reply(from, seq, batch),
            Message::Status {
                view,
                last_executed,
            } => self.on_status(from, view, last_executed),
            Message::RecoveryQuery { nonce } => self.on_recovery_query(from, nonce),
            Message::RecoveryReply {
                nonce,
                stable_proof,
                blank,
            } => self.on_recovery_reply(from, nonce, stable_proof, blank),
            // Snapshot chunks are assembled by the driver, which reports the digest
            // through `on_state_offer`; replies are for clients.
            // Queries are answered by the node, never by the core.
            Message::StateChunk { .. }
            | Message::Reply(_)
            | Message::Query { .. }
            | Message::Answer { .. } => {}
        }
        self.finish("on_message");
    }

    /// A verified request straight from its client: over a connection that proved it
    /// holds the client's key, or (in the simulator) sent by the client itself.
    pub fn on_request(&mut self, req: VerifiedRequest, now: Instant) {
        if !self.begin(now) {
            return;
        }
        self.handle_request(req.into_inner(), None, true);
        self.finish("on_request");
    }

    /// A verified request from a connection that did not prove it holds the client's
    /// key: anyone who saw the request may be replaying it. Answered again (from the
    /// ledger above all) out of a budget of its own, so that replays cannot use up the
    /// client's (resend.rs).
    pub fn on_unproven_request(&mut self, req: VerifiedRequest, now: Instant) {
        if !self.begin(now) {
            return;
        }
        self.handle_request(req.into_inner(), None, false);
        self.finish("on_unproven_request");
    }

    /// Time has reached `now`: fire whatever timers expired.
    pub fn on_timeout(&mut self, now: Instant) {
        if !self.begin(now) {
            return;
        }
        if self.view_change_deadline.is_some_and(|d| d <= now) {
            self.view_change_deadline = None;
            if self.status == Status::ViewChange {
                // the new view did not start in time: next view, longer timeout
                self.backoff = self.backoff.saturating_add(1);
                tracing::info!(replica = self.id, view = self.view, "new view timed out");
                self.start_view_change(self.view + 1);
            }
        }
        if self.request_deadline.is_some_and(|d| d <= now) {
            let waited_for = self.timed_request;
            self.stop_request_timer();
            if self.status == Status::Normal
                && !self.is_primary()
                && waited_for.is_some_and(|k| self.clients.is_waiting(&k))
            {
                tracing::info!(replica = self.id, view = self.view, "request timer expired");
                self.start_view_change(self.view + 1);
            } else {
                self.arm_request_timer();
            }
        }
        self.check_order_deadline(now);
        if self.tick_deadline.is_some_and(|d| d <= now) {
            self.tick_deadline = None;
            self.tick();
        }
        self.finish("on_timeout");
    }

    /// The executor finished `seq` (answering [`Action::Execute`], in order).
    pub fn on_executed(&mut self, seq: Seq, result: ExecutionResult, now: Instant) {
        if !self.begin(now) {
            return;
        }
        self.handle_executed(seq, result);
        self.finish("on_executed");
    }

    /// The snapshot fetched for a state transfer from `peer` has `digest`.
    pub fn on_state_offer(&mut self, peer: ReplicaId, seq: Seq, digest: Digest, now: Instant) {
        if !self.begin(now) {
            return;
        }
        self.handle_state_offer(peer, seq, digest);
        self.finish("on_state_offer");
    }

    /// The snapshot approved by [`Action::InstallState`] is installed; `clients` is what
    /// the installed ledger records of its clients' executions (see
    /// [`crate::client_table`]).
    pub fn on_state_transferred(
        &mut self,
        seq: Seq,
        digest: Digest,
        clients: ClientRecords,
        now: Instant,
    ) {
        if !self.begin(now) {
            return;
        }
        self.handle_state_transferred(seq, digest, clients);
        self.finish("on_state_transferred");
    }

    /// Signs this replica's reply to `client`'s request `request_id` with digest
    /// `request`, answered by `result` at `seq` (for [`Action::ReplyFromLedger`], from
    /// the ledger's receipt).
    pub fn sign_reply(
        &self,
        seq: Seq,
        client: PublicKey,
        request_id: RequestId,
        request: Digest,
        result: Vec<u8>,
    ) -> Option<SignedReply> {
        let body = Reply {
            view: self.view,
            seq,
            client,
            request_id,
            request,
            replica: self.id,
            result,
        };
        SignedReply::sign_batch(vec![body], &self.key).pop()
    }

    /// The next action to perform, if any.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`Replica::on_timeout`] should next be called, if any timer is armed.
    pub fn next_timeout(&self) -> Option<Instant> {
        if self.halted.is_some() {
            return None;
        }
        [
            self.view_change_deadline,
            self.request_deadline,
            self.order_watch.deadline,
            self.tick_deadline,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    // ------------------------------------------------------------------ helpers

    fn begin(&mut self, now: Instant) -> bool {
        if now > self.now {
            self.now = now;
        }
        self.halted.is_none()
    }

    /// Ends an input (named `input`): settles what every input ends with, then checks
    /// the invariants if checks are on.
    fn finish(&mut self, input: &'static str) {
        self.settle();
        self.assert_invariants(input);
    }

    /// Replaces a provably faulty primary, recomputes the ordering deadline, and arms
    /// the retransmission tick whenever there is unfinished work.
    fn settle(&mut self) {
        if self.halted.is_some() {
            return;
        }
        self.replace_faulty_primary();
        self.update_order_deadline();
        let busy = self.status == Status::ViewChange
            || self.recovery.as_ref().is_some_and(|r| r.bound.is_none())
            || self.clients.waiting_len() > 0
            || self.fetch.is_some()
            || !self.wanted.is_empty()
            || self.slots.range(self.last_executed + 1..).next().is_some()
            || self.behind_peers().is_some()
            || self
                .own_checkpoints
                .range(self.stable_seq + 1..)
                .next()
                .is_some();
        let interval = if busy {
            self.cfg.retransmit_interval
        } else {
            self.cfg.view_timeout
        };
        let due = self.now.plus(interval);
        if self.tick_deadline.is_none_or(|d| d > due) {
            self.tick_deadline = Some(due);
        }
    }

    /// The view-change timeout for the current attempt: T, doubled per failed attempt.
    pub(crate) fn current_timeout(&self) -> Duration {
        self.cfg.view_timeout * (1u32 << self.backoff.min(10))
    }

    pub(crate) fn primary(&self) -> ReplicaId {
        self.cfg.primary(self.view)
    }

    pub(crate) fn high_watermark(&self) -> Seq {
        self.stable_seq + self.cfg.log_window
    }

    pub(crate) fn in_window(&self, seq: Seq) -> bool {
        seq > self.stable_seq && seq <= self.high_watermark()
    }

    /// Queues an action. Once halted, a replica says nothing more: a handler that halts
    /// part-way (say, on a second commit certificate inside a batch of them) may go on
    /// to queue sends, and those are dropped here rather than at every call site.
    pub(crate) fn push(&mut self, a: Action) {
        if self.halted.is_some() && !matches!(a, Action::Halt { .. }) {
            tracing::debug!(replica = self.id, action = ?a, "halted: action dropped");
            return;
        }
        self.actions.push_back(a);
    }

    pub(crate) fn persist(&mut self, r: WalRecord) {
        self.push(Action::Persist(r));
    }

    pub(crate) fn broadcast(&mut self, msg: Message) {
        self.push(Action::Broadcast { msg });
    }

    pub(crate) fn send(&mut self, to: ReplicaId, msg: Message) {
        if to != self.id {
            self.push(Action::Send { to, msg });
        }
    }

    pub(crate) fn halt(&mut self, reason: String) {
        if self.halted.is_some() {
            return; // the first reason stands
        }
        tracing::error!(replica = self.id, view = self.view, %reason, "halting");
        self.halted = Some(reason.clone());
        self.push(Action::Halt { reason });
    }

    /// Starts the request timer if requests wait and none is running. It waits for
    /// the request that has waited longest, and only that request's execution stops it
    /// (PBFT §4.4): executing anything else, null batches included, does not. Only with
    /// an exact client table: an inexact one may hold requests that executed before the
    /// replica restarted, which no primary will order again.
    pub(crate) fn arm_request_timer(&mut self) {
        if self.status == Status::Normal
            && !self.is_primary()
            && self.request_deadline.is_none()
            && self.recovery.is_none()
            && self.clients.is_exact()
        {
            if let Some(oldest) = self.clients.oldest_waiting() {
                self.timed_request = Some(oldest);
                self.request_deadline = Some(self.now.plus(self.current_timeout()));
            }
        }
    }

    /// Stops the request timer if the request it waits for no longer waits (it
    /// executed), and starts it again for the next waiting request.
    pub(crate) fn rearm_request_timer(&mut self) {
        if self
            .timed_request
            .is_some_and(|k| !self.clients.is_waiting(&k))
        {
            self.stop_request_timer();
        }
        self.arm_request_timer();
    }

    /// Stops the request timer (a view change began or ended, or a state transfer
    /// replaced what the replica knew about waiting requests).
    pub(crate) fn stop_request_timer(&mut self) {
        self.timed_request = None;
        self.request_deadline = None;
    }

    /// Periodic retransmission and catch-up, while work is unfinished.
    fn tick(&mut self) {
        let stalled = self.last_executed == self.executed_at_last_tick;
        self.executed_at_last_tick = self.last_executed;
        match self.status {
            Status::ViewChange => {
                if let Some(vc) = self
                    .view_changes
                    .get(&self.view)
                    .and_then(|m| m.get(&self.id))
                    .cloned()
                {
                    self.broadcast(Message::ViewChange(Box::new(vc)));
                }
            }
            Status::Normal if stalled => self.retransmit_normal_case(),
            Status::Normal => {}
        }
        // heartbeat, so that an idle laggard learns it is behind
        self.broadcast(Message::Status {
            view: self.view,
            last_executed: self.last_executed,
        });
        if stalled {
            if let Some(c) = self
                .own_checkpoints
                .range(self.stable_seq + 1..)
                .next_back()
            {
                let c = c.1.clone();
                self.broadcast(Message::Checkpoint(c));
            }
            self.catch_up();
        }
        self.retry_fetch();
        self.retry_batch_fetch();
        self.retry_recovery_query();
    }

    /// Records how far a peer has got, from its commits and checkpoints.
    pub(crate) fn note_progress(&mut self, peer: ReplicaId, seq: Seq) {
        let e = self.peer_progress.entry(peer).or_insert(0);
        *e = (*e).max(seq);
    }

    /// If at least f+1 peers (so at least one honest) report progress beyond ours, the
    /// highest sequence number that f+1 of them reached. It keeps an idle replica
    /// ticking at the retransmission pace; catch-up itself asks any one peer ahead.
    pub(crate) fn behind_peers(&self) -> Option<Seq> {
        let mut v: Vec<Seq> = self
            .peer_progress
            .iter()
            .filter(|(r, _)| **r != self.id)
            .map(|(_, s)| *s)
            .collect();
        v.sort_unstable_by(|a, b| b.cmp(a));
        let k = self.cfg.weak_quorum();
        let target = *v.get(k - 1)?;
        (target > self.last_executed).then_some(target)
    }
}

/// Helpers shared by the rule modules.
impl Replica {
    pub(crate) fn slot_mut(&mut self, seq: Seq) -> &mut Slot {
        self.slots.entry(seq).or_default()
    }

    /// Adds our own prepare for a slot, asserting we never vote twice differently.
    pub(crate) fn sign_prepare(&mut self, view: View, seq: Seq, digest: Digest) -> Signed<Prepare> {
        self.signed = true;
        let p = Signed::sign(
            Prepare {
                view,
                seq,
                digest,
                replica: self.id,
            },
            &self.key,
        );
        let outcome = self.prepares.add(view, seq, digest, self.id, p.clone());
        assert!(
            !matches!(outcome, crate::quorum::AddOutcome::Conflict(_)),
            "replica {} would prepare two digests for view {view} seq {seq}",
            self.id
        );
        p
    }

    /// Adds our own commit for a slot, asserting we never vote twice differently.
    pub(crate) fn sign_commit(&mut self, view: View, seq: Seq, digest: Digest) -> Signed<Commit> {
        self.signed = true;
        let c = Signed::sign(
            Commit {
                view,
                seq,
                digest,
                replica: self.id,
            },
            &self.key,
        );
        let outcome = self.commits.add(view, seq, digest, self.id, c.clone());
        assert!(
            !matches!(outcome, crate::quorum::AddOutcome::Conflict(_)),
            "replica {} would commit two digests for view {view} seq {seq}",
            self.id
        );
        c
    }
}
