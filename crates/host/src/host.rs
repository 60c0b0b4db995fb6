//! The [`Host`]: a replica with its ledger, its consensus log and its fault hooks,
//! performing every [`Action`] the replica asks for, in order.

use crate::effect::Effect;
use crate::hooks::{CrashPoint, Faults};
use crate::phases::Phases;
use crate::transfer::{Assembly, Chunk, Offer};
use bytes::Bytes;
use pbft_crypto::{Digest, Keypair, PublicKey};
use pbft_executor::{
    Entry, ExecError, ExecRequest, Executor, FailReason, Receipt, Record, RecordLog, SnapshotSource,
};
use pbft_protocol::envelope;
use pbft_protocol::{
    Action, Answer, Batch, ClientKeys, ClientRecord, ClientRecords, Config, ConfigError, Dest,
    Duration, ExecutedRequest, ExecutionResult, Instant, Message, NodeStatus, Outgoing, Payload,
    Query, Replica, ReplicaId, RequestId, Seq, Status, Verified, VerifiedRequest, View, WalRecord,
};
use std::collections::{BinaryHeap, VecDeque};

/// How a host runs: sizes and retry policy. The defaults suit a production validator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostOptions {
    /// Bytes per snapshot chunk this host serves.
    pub chunk_bytes: usize,
    /// Most bytes of one snapshot this host takes while fetching it (staged by the
    /// ledger chunk by chunk: on disk for the RocksDB ledger); a peer that sends more
    /// loses the transfer.
    pub max_snapshot_bytes: usize,
    /// How often applying a batch is tried before the validator halts. The ledger
    /// applies a batch in one atomic write, so a failed try left nothing behind.
    pub apply_attempts: u32,
    /// The wait before the first retry; each further retry waits twice as long.
    pub apply_backoff: Duration,
    /// Check the replica's invariants after every input, in every build (the
    /// simulator does). Off leaves the replica's default: on in builds with debug
    /// assertions, off in release builds.
    pub check_invariants: bool,
    /// The cluster starts for the first time: an empty consensus log on an empty
    /// ledger is a replica that never signed anything, and it starts at genesis (and
    /// writes a first record, so that a restart of it is never taken for a lost log).
    /// Without it an empty log is a lost one, and the replica recovers before it votes
    /// (`pbft_protocol::recovery`).
    pub genesis: bool,
    /// The nonce of the recovery question if the replica recovers: fresh for every
    /// start (the node draws it at random).
    pub recovery_nonce: u64,
}

impl Default for HostOptions {
    fn default() -> Self {
        HostOptions {
            chunk_bytes: 1 << 20,
            max_snapshot_bytes: 1 << 31,
            apply_attempts: 3,
            apply_backoff: Duration::from_millis(40),
            check_invariants: false,
            genesis: false,
            recovery_nonce: 0,
        }
    }
}

/// Why a host could not start.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The ledger or the consensus log failed.
    #[error(transparent)]
    Storage(#[from] ExecError),
    /// The consensus log is empty but the ledger is not: the log was lost, and the
    /// validator must not vote without it.
    #[error(
        "the consensus log is empty but the ledger holds {executed} executed batches: the log \
         was lost, and a validator must not vote without it; move the data directory away \
         and start again, and the validator recovers from the others"
    )]
    LostLog {
        /// The ledger's height.
        executed: u64,
    },
    /// The consensus log holds a record this version cannot read.
    #[error("consensus log record {index} is unreadable ({reason})")]
    CorruptLog {
        /// Position of the record.
        index: usize,
        /// Decoder message.
        reason: String,
    },
    /// The protocol configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// A send held back by a fault hook's delay.
#[derive(Debug)]
struct Delayed {
    due: Instant,
    order: u64,
    out: Outgoing,
}

impl PartialEq for Delayed {
    fn eq(&self, o: &Self) -> bool {
        (self.due, self.order) == (o.due, o.order)
    }
}
impl Eq for Delayed {}
impl PartialOrd for Delayed {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Delayed {
    // a min-heap on (due, order)
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (o.due, o.order).cmp(&(self.due, self.order))
    }
}

/// A batch whose application failed and waits for its retry.
#[derive(Debug)]
struct Retry {
    seq: Seq,
    view: View,
    digest: Digest,
    batch: Batch,
    /// Tries made so far.
    attempts: u32,
    due: Instant,
}

/// Whether performing an action lets the host go on with the next one.
#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Next,
    Stop,
}

/// One validator's replica, ledger and consensus log, with its fault hooks.
///
/// Inputs ([`Host::handle_message`], [`Host::handle_request`], [`Host::handle_timeout`])
/// feed the replica; [`Host::process`] performs what the replica asked for, grouping
/// persists into as few log writes as the order of its actions allows, and queues
/// [`Effect`]s for [`Host::poll_effect`]. An embedder may feed several inputs before one `process`
/// (the node does, to group their persists); the simulator processes after each input.
/// [`Host::next_timeout`] says when to call `handle_timeout` next.
pub struct Host<E, L, F> {
    id: ReplicaId,
    replica: Replica,
    ledger: E,
    log: L,
    faults: F,
    opts: HostOptions,
    assembly: Assembly,
    /// The snapshot being served to peers, read chunk by chunk: every peer that asks
    /// for that checkpoint is served from it, so one export serves them all. Dropped
    /// when a later checkpoint becomes stable (none is served below the stable one).
    serving: Option<Serving>,
    delayed: BinaryHeap<Delayed>,
    delay_order: u64,
    retry: Option<Retry>,
    phases: Phases,
    effects: VecDeque<Effect>,
    /// `Transmit` effects queued and not yet polled.
    queued_transmits: usize,
    /// An expensive action that `process` left for its next call, so that the sends
    /// queued before it go out first (with the time it was due).
    paused: Option<(Action, Instant)>,
    /// Reused buffer for what the fault hook sends.
    outgoing: Vec<Outgoing>,
    halted: Option<String>,
    crashed: bool,
    /// A view record was logged since superseded records were last dropped (true at
    /// start: the log may hold some from before a restart).
    view_records_written: bool,
}

impl<E: Executor, L: RecordLog, F: Faults> Host<E, L, F> {
    /// Opens a validator on its storage: a replica restored from the consensus log, the
    /// ledger's height and the ledger's record of each listed client, or a new one on
    /// empty storage. Fails if the storage cannot be read.
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        cfg: Config,
        id: ReplicaId,
        key: Keypair,
        ledger: E,
        mut log: L,
        faults: F,
        opts: HostOptions,
        now: Instant,
    ) -> Result<Self, HostError> {
        let raw = log.load()?;
        let mut records = Vec::with_capacity(raw.len());
        for (index, (_, bytes)) in raw.iter().enumerate() {
            let rec: WalRecord =
                postcard::from_bytes(bytes).map_err(|e| HostError::CorruptLog {
                    index,
                    reason: e.to_string(),
                })?;
            records.push(rec);
        }
        let executed = ledger.head().height;
        let mut replica = if records.is_empty() && executed > 0 {
            return Err(HostError::LostLog { executed });
        } else if records.is_empty() && opts.genesis {
            let first = WalRecord::View {
                view: 0,
                changing: false,
            };
            let bytes = postcard::to_allocvec(&first)
                .map_err(|e| ExecError::Storage(format!("encoding the first log record: {e}")))?;
            log.append(&[(None, bytes)])?;
            Replica::new(cfg, id, key)?
        } else if records.is_empty() {
            tracing::info!(
                id,
                "no consensus log: recovering, no votes until the others show the cluster \
                 is new or this validator has caught up past what it may have signed"
            );
            Replica::recover(cfg, id, key, opts.recovery_nonce, now)?
        } else {
            tracing::info!(
                id,
                records = records.len(),
                executed,
                "restarting from the consensus log and the ledger"
            );
            // read at the height the replica resumes from, before anything executes
            let clients = client_records(&ledger, &cfg.clients)?;
            Replica::restore(cfg, id, key, &records, executed, clients, now)?
        };
        if opts.check_invariants {
            replica.set_invariant_checks(true);
        }
        let assembly = Assembly::new(opts.max_snapshot_bytes);
        Ok(Host {
            id,
            replica,
            ledger,
            log,
            faults,
            opts,
            assembly,
            serving: None,
            delayed: BinaryHeap::new(),
            delay_order: 0,
            retry: None,
            phases: Phases::default(),
            effects: VecDeque::new(),
            queued_transmits: 0,
            paused: None,
            outgoing: Vec::new(),
            halted: None,
            crashed: false,
            view_records_written: true,
        })
    }

    /// The validator's id.
    pub fn id(&self) -> ReplicaId {
        self.id
    }

    /// The replica (read-only: every input goes through the host).
    pub fn replica(&self) -> &Replica {
        &self.replica
    }

    /// The ledger (read-only).
    pub fn ledger(&self) -> &E {
        &self.ledger
    }

    /// The fault hooks, to switch them (scenario control commands).
    pub fn faults_mut(&mut self) -> &mut F {
        &mut self.faults
    }

    /// Why the validator stopped taking part, if it did (the host's reason or the
    /// replica's).
    pub fn halted(&self) -> Option<&str> {
        self.halted.as_deref().or_else(|| self.replica.halted())
    }

    /// True once a fault hook crashed the validator.
    pub fn crashed(&self) -> bool {
        self.crashed
    }

    /// Bytes held in memory for state transfer: the bookkeeping of the snapshot being
    /// fetched, what the ledger holds to stage it, and the reader of the snapshot being
    /// served with the chunk it last read. The snapshots themselves are never held
    /// whole: fetched chunks go to the ledger as they arrive, served ones are read one
    /// at a time.
    pub fn snapshot_buffer_bytes(&self) -> usize {
        self.assembly.held_bytes()
            + self.ledger.import_held_bytes()
            + self.serving.as_ref().map_or(0, Serving::held_bytes)
    }

    /// Gives back the storage and the hooks (a simulated crash keeps the "disk").
    pub fn into_parts(self) -> (E, L, F) {
        (self.ledger, self.log, self.faults)
    }

    fn inert(&self) -> bool {
        self.crashed || self.halted.is_some()
    }

    /// A verified message from validator `msg.from()`.
    pub fn handle_message(&mut self, msg: Verified, now: Instant) {
        if self.inert() {
            return;
        }
        let from = msg.from();
        let incoming = self.faults.incoming(from, msg.message(), now);
        for o in incoming.sends {
            self.release(o, now);
        }
        if !incoming.deliver {
            return;
        }
        if matches!(msg.message(), Message::StateChunk { .. }) {
            if let (
                _,
                Message::StateChunk {
                    seq,
                    index,
                    total,
                    data,
                },
                _,
            ) = msg.into_parts()
            {
                self.on_chunk(from, seq, index, total, data, now);
            }
            return;
        }
        self.replica.on_message(msg, now);
    }

    /// A verified client request, straight from its client
    /// ([`Replica::on_request`](pbft_protocol::Replica::on_request)).
    pub fn handle_request(&mut self, req: VerifiedRequest, now: Instant) {
        if self.inert() {
            return;
        }
        self.replica.on_request(req, now);
    }

    /// A verified client request from a connection that did not prove it holds the
    /// client's key ([`Replica::on_unproven_request`](pbft_protocol::Replica::on_unproven_request)).
    pub fn handle_unproven_request(&mut self, req: VerifiedRequest, now: Instant) {
        if self.inert() {
            return;
        }
        self.replica.on_unproven_request(req, now);
    }

    /// Time passed: sends held back until now go out, and the replica's timer fires if
    /// it is due. (A batch waiting for its retry is retried by the next
    /// [`Host::process`].)
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.inert() {
            return;
        }
        while self.delayed.peek().is_some_and(|d| d.due <= now) {
            if let Some(d) = self.delayed.pop() {
                self.emit(d.out);
            }
        }
        if self.replica.next_timeout().is_some_and(|at| at <= now) {
            self.replica.on_timeout(now);
        }
    }

    /// When [`Host::handle_timeout`] (then [`Host::process`]) should run next.
    pub fn next_timeout(&self) -> Option<Instant> {
        if self.inert() {
            return None;
        }
        [
            self.replica.next_timeout(),
            self.delayed.peek().map(|d| d.due),
            self.retry.as_ref().map(|r| r.due),
            self.paused.as_ref().map(|p| p.1),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The next effect, in order.
    pub fn poll_effect(&mut self) -> Option<Effect> {
        let e = self.effects.pop_front();
        if matches!(e, Some(Effect::Transmit { .. })) {
            self.queued_transmits -= 1;
        }
        e
    }

    /// True when [`Host::process`] stopped before an expensive action (execution,
    /// installing or serving state, a stable checkpoint) to let the messages queued
    /// before it go out first, or while it serves a snapshot, one chunk per pass: drain
    /// the effects and call `process` again. (The paused action is also due at once by
    /// [`Host::next_timeout`].)
    pub fn wants_process(&self) -> bool {
        (self.paused.is_some() || self.serving.as_ref().is_some_and(Serving::busy)) && !self.inert()
    }

    /// Performs the actions the replica has queued, in order. The persists go to the
    /// log in as few writes as the order allows: a send waits for the persists queued
    /// before it (it may promise what they record), so sends are held back while
    /// persists are pending, and the pending persists are written, then the held sends
    /// released, before any other action and at the end of the pass. A pass in which
    /// the replica only persists and sends is one log write. Before an expensive
    /// action with sends already queued, the pass stops (see [`Host::wants_process`]).
    /// While a failed batch waits for its retry, nothing is performed.
    pub fn process(&mut self, now: Instant) {
        if self.inert() {
            return;
        }
        if let Some(r) = self.retry.take() {
            if r.due > now {
                self.retry = Some(r);
                // nothing else is performed meanwhile, but a snapshot being served
                // goes on (an embedder loops while `wants_process`)
                self.serve_next(now);
                return;
            }
            if self.execute(r.seq, r.view, r.digest, r.batch, r.attempts, now) == Flow::Stop {
                return;
            }
        }
        let mut pending: Vec<Record> = Vec::new();
        let mut held: Vec<Action> = Vec::new();
        let mut next = self.paused.take().map(|p| p.0);
        while let Some(action) = next.take().or_else(|| self.replica.poll_action()) {
            match action {
                Action::Persist(rec) => {
                    // only a new View record can supersede older records
                    if matches!(rec, WalRecord::View { .. }) {
                        self.view_records_written = true;
                    }
                    match postcard::to_allocvec(&rec) {
                        Ok(bytes) => pending.push((rec.obsolete_at(), bytes)),
                        Err(e) => return self.halt(format!("cannot encode a log record: {e}")),
                    }
                }
                Action::Send { .. } | Action::Broadcast { .. } | Action::Reply { .. }
                    if !pending.is_empty() =>
                {
                    held.push(action);
                }
                action => {
                    if !self.release_held(&mut pending, &mut held, now) {
                        return;
                    }
                    if self.queued_transmits > 0 && is_slow(&action) {
                        // the peers' next step should not wait for this one
                        self.paused = Some((action, now));
                        return;
                    }
                    if self.perform(action, now) == Flow::Stop {
                        return;
                    }
                }
            }
        }
        if self.release_held(&mut pending, &mut held, now) {
            // The replica approves a snapshot in `on_state_offer` by queueing its
            // installation, which this pass performed: an offer still here was refused.
            if self.assembly.drop_offer() {
                self.ledger.import_abort();
            }
            self.serve_next(now);
        }
    }

    /// Writes the pending persists, then performs the sends held back behind them.
    /// False if the validator stopped.
    fn release_held(
        &mut self,
        pending: &mut Vec<Record>,
        held: &mut Vec<Action>,
        now: Instant,
    ) -> bool {
        if !self.flush(pending) {
            return false;
        }
        for action in held.drain(..) {
            if self.perform(action, now) == Flow::Stop {
                return false;
            }
        }
        true
    }

    fn flush(&mut self, pending: &mut Vec<Record>) -> bool {
        if pending.is_empty() {
            return true;
        }
        match self.log.append(pending) {
            Ok(()) => {
                pending.clear();
                true
            }
            Err(e) => {
                self.halt(format!("consensus log write failed: {e}"));
                false
            }
        }
    }

    fn halt(&mut self, reason: String) {
        if self.halted.is_some() {
            return;
        }
        tracing::error!(id = self.id, %reason, "validator halted: it stops taking part");
        self.halted = Some(reason.clone());
        self.effects.push_back(Effect::Halted { reason });
    }

    fn crash(&mut self) {
        self.crashed = true;
        self.effects.push_back(Effect::Crashed);
    }

    fn perform(&mut self, action: Action, now: Instant) -> Flow {
        match action {
            Action::Send { to, msg } => self.send(Dest::Replica(to), msg, now),
            Action::Broadcast { msg } => self.send(Dest::AllReplicas, msg, now),
            Action::Reply { client, reply } => {
                self.send(Dest::Client(client), Message::Reply(reply), now)
            }
            Action::Persist(_) => {}
            Action::Execute {
                seq,
                view,
                digest,
                batch,
            } => return self.execute(seq, view, digest, batch, 0, now),
            Action::StableCheckpoint { seq, .. } => self.stable_checkpoint(seq),
            Action::FetchState { seq, peer, .. } => {
                if self.assembly.begin(peer, seq) {
                    // the replaced transfer's chunks
                    self.ledger.import_abort();
                }
                self.send(Dest::Replica(peer), Message::StateRequest { seq }, now);
            }
            Action::InstallState { seq, digest } => self.install(seq, digest, now),
            Action::ServeState { to, seq } => self.serve(to, seq, now),
            Action::ReplyFromLedger {
                client,
                request_id,
                request,
            } => self.reply_from_ledger(client, request_id, request, now),
            Action::Evidence { against, evidence } => {
                tracing::warn!(
                    id = self.id,
                    against,
                    kind = evidence.kind(),
                    "signed evidence of a faulty validator"
                );
                self.effects.push_back(Effect::Evidence {
                    against,
                    kind: evidence.kind(),
                });
            }
            Action::Halt { reason } => self.halt(reason),
        }
        if self.inert() {
            Flow::Stop
        } else {
            Flow::Next
        }
    }

    /// Applies a committed batch (try number `attempts + 1`), takes the checkpoint if
    /// `seq` is a multiple of K, and reports the results to the replica.
    fn execute(
        &mut self,
        seq: Seq,
        view: View,
        digest: Digest,
        batch: Batch,
        attempts: u32,
        now: Instant,
    ) -> Flow {
        let span = tracing::debug_span!("execute", id = self.id, view, seq);
        let _g = span.enter();
        // each request's digest, once: the executor records it, the reply binds it
        let digests: Vec<Digest> = batch.requests.iter().map(|q| q.body.digest()).collect();
        let requests: Vec<ExecRequest<'_>> = batch
            .requests
            .iter()
            .zip(&digests)
            .map(|(q, d)| ExecRequest {
                client: &q.body.client,
                request_id: q.body.request_id,
                op: &q.body.op,
                digest: *d,
            })
            .collect();
        let applied = match self.ledger.apply(seq, digest, &requests) {
            Ok(a) => a,
            Err(e) => {
                let attempts = attempts + 1;
                if attempts >= self.opts.apply_attempts {
                    self.halt(format!(
                        "the ledger failed to apply batch {seq} {attempts} times: {e}"
                    ));
                } else {
                    let wait = self.opts.apply_backoff * (1 << (attempts - 1).min(16));
                    tracing::warn!(error = %e, attempts, ?wait, "applying the batch failed; retrying");
                    self.retry = Some(Retry {
                        seq,
                        view,
                        digest,
                        batch,
                        attempts,
                        due: now.plus(wait),
                    });
                }
                return Flow::Stop;
            }
        };
        let replies: Vec<ExecutedRequest> = batch
            .requests
            .iter()
            .zip(digests)
            .zip(applied.replies)
            .map(|((q, request), result)| ExecutedRequest {
                client: q.body.client,
                request_id: q.body.request_id,
                request,
                result,
            })
            .collect();
        let (prepare, commit) = self.phases.executed(seq, now);
        self.effects.push_back(Effect::Executed {
            seq,
            view,
            digest,
            batch,
            entries: applied.entries,
            prepare,
            commit,
        });
        let state_digest = if seq.is_multiple_of(self.replica.config().checkpoint_interval) {
            match self.ledger.checkpoint() {
                Ok(d) => {
                    if self.faults.crash(CrashPoint::CheckpointTaken { seq }) {
                        tracing::error!(seq, "fault injection: crashing mid-checkpoint");
                        self.crash();
                        return Flow::Stop;
                    }
                    Some(d)
                }
                Err(e) => {
                    self.halt(format!("checkpoint {seq} failed: {e}"));
                    return Flow::Stop;
                }
            }
        } else {
            None
        };
        self.replica.on_executed(
            seq,
            ExecutionResult {
                replies,
                state_digest,
            },
            now,
        );
        Flow::Next
    }

    fn stable_checkpoint(&mut self, seq: Seq) {
        if self.serving.as_ref().is_some_and(|s| s.source.seq() < seq) {
            self.serving = None;
        }
        // a replica behind this checkpoint has no snapshot of it yet: it will install
        // one by state transfer
        if let Err(e) = self.ledger.stable(seq) {
            tracing::debug!(seq, error = %e, "no local snapshot for this stable checkpoint");
        }
        if let Err(e) = self.log.compact(seq) {
            return self.halt(format!("consensus log compaction failed: {e}"));
        }
        if self.view_records_written {
            // the records of old views (only untagged records can be superseded)
            match self.log.drop_superseded(true, WalRecord::superseded) {
                Ok(_) => self.view_records_written = false,
                Err(e) => self.halt(format!("consensus log pruning failed: {e}")),
            }
        }
    }

    fn install(&mut self, seq: Seq, digest: Digest, now: Instant) {
        let Some(Offer { bytes, .. }) = self.assembly.take_offer(seq, digest) else {
            return self.halt(format!(
                "asked to install checkpoint {seq} with digest {digest}, but no such snapshot was offered"
            ));
        };
        match self.ledger.import_commit(seq, digest) {
            // the installed state's checkpoint digest is the proven one
            Ok(_) => {
                tracing::info!(
                    id = self.id,
                    seq,
                    bytes,
                    "installed a snapshot by state transfer"
                );
                self.assembly.installed(seq);
                self.effects.push_back(Effect::Installed { seq, bytes });
                // read at the snapshot's height: nothing executes above it before the
                // replica learns it is installed
                match client_records(&self.ledger, &self.replica.config().clients) {
                    Ok(clients) => self.replica.on_state_transferred(seq, digest, clients, now),
                    Err(e) => self.halt(format!(
                        "cannot read the client windows of installed snapshot {seq}: {e}"
                    )),
                }
            }
            Err(e) => self.halt(format!("approved snapshot {seq} failed to install: {e}")),
        }
    }

    /// Answers a client's request whose id executed, from the id's receipt in the
    /// ledger: with that receipt if it records this very request (`request`, its
    /// digest), with the refusal of a reused id otherwise. An id the ledger has no
    /// receipt for is not answered (it never executed here: the client table moved past
    /// it), nor is one whose receipt cannot be read (the client asks again).
    fn reply_from_ledger(
        &mut self,
        client: PublicKey,
        request_id: RequestId,
        request: Digest,
        now: Instant,
    ) {
        match self.ledger.receipt(&client, request_id) {
            Ok(Some(stored)) => {
                // the receipt answers only the request it is the outcome of
                let result = if stored.request == request {
                    stored.receipt
                } else {
                    Receipt::Failed {
                        reason: FailReason::ReusedId,
                    }
                };
                let reply = self.replica.sign_reply(
                    stored.height,
                    client,
                    request_id,
                    request,
                    result.encode(),
                );
                if let Some(reply) = reply {
                    self.send(Dest::Client(client), Message::Reply(reply), now);
                }
            }
            Ok(None) => {}
            Err(e) => tracing::debug!(request_id, error = %e, "cannot read a receipt"),
        }
    }

    /// Starts serving peer `to` the snapshot of checkpoint `seq`, exporting it only if
    /// it is not the one being served. (The replica decides who is served how often.)
    /// The chunks go out one per pass of [`Host::process`].
    fn serve(&mut self, to: ReplicaId, seq: Seq, now: Instant) {
        if self.serving.as_ref().is_none_or(|s| s.source.seq() != seq) {
            match self.ledger.export_source(seq, self.opts.chunk_bytes) {
                Ok(source) => {
                    self.serving = Some(Serving {
                        source,
                        queue: VecDeque::new(),
                        last_chunk: 0,
                    })
                }
                Err(e) => {
                    tracing::debug!(seq, error = %e, "cannot serve this snapshot");
                    return;
                }
            }
        }
        if let Some(s) = self.serving.as_mut() {
            if !s.queue.iter().any(|(peer, _)| *peer == to) {
                s.queue.push_back((to, 0));
            }
        }
        self.serve_next(now);
    }

    /// Sends the next chunk of the snapshot being served, to the peer first in line
    /// (peers take turns). A chunk that cannot be read ends the serving: the peers ask
    /// again.
    fn serve_next(&mut self, now: Instant) {
        let Some(s) = self.serving.as_mut() else {
            return;
        };
        let Some((to, index)) = s.queue.pop_front() else {
            return;
        };
        let (seq, total) = (s.source.seq(), s.source.total());
        let data = match s.source.chunk(index) {
            Ok(data) => data,
            Err(e) => {
                tracing::warn!(seq, index, error = %e, "cannot read a snapshot chunk to serve");
                self.serving = None;
                return;
            }
        };
        s.last_chunk = data.len();
        if index + 1 < total {
            s.queue.push_back((to, index + 1));
        }
        let msg = Message::StateChunk {
            seq,
            index,
            total,
            data,
        };
        self.send(Dest::Replica(to), msg, now);
    }

    fn on_chunk(
        &mut self,
        from: ReplicaId,
        seq: Seq,
        index: u32,
        total: u32,
        data: Vec<u8>,
        now: Instant,
    ) {
        let (first, last) = match self.assembly.chunk(from, seq, index, total, data.len()) {
            Chunk::Duplicate => return,
            Chunk::Refused(reason) => {
                return self.effects.push_back(Effect::Refused { from, reason })
            }
            Chunk::Abandoned { reason, staged } => {
                if staged {
                    self.ledger.import_abort();
                }
                return self.spoiled(from, seq, reason, now);
            }
            Chunk::Stage { first, last } => (first, last),
        };
        let staged = if first {
            self.ledger.import_begin(seq)
        } else {
            Ok(())
        }
        .and_then(|()| self.ledger.import_chunk(seq, &data));
        match staged {
            Ok(()) => {}
            Err(ExecError::BadSnapshot(why)) => {
                tracing::debug!(id = self.id, from, seq, %why, "a snapshot chunk does not check out");
                self.assembly.abandon();
                self.ledger.import_abort();
                return self.spoiled(from, seq, "bad snapshot chunk", now);
            }
            Err(e) => {
                // not the peer's doing: the replica asks again at its deadline
                tracing::warn!(id = self.id, from, seq, error = %e, "cannot stage a snapshot chunk");
                self.assembly.abandon();
                self.ledger.import_abort();
                return;
            }
        }
        if !last {
            return;
        }
        let Some((peer, seq, bytes)) = self.assembly.complete() else {
            return;
        };
        // a snapshot that does not check out as a whole gets a digest no proof can match
        let digest = match self.ledger.import_finish(seq) {
            Ok(d) => d,
            Err(e) => {
                tracing::debug!(id = self.id, from, seq, error = %e, "a snapshot does not check out");
                Digest::of_parts(&[b"undecodable snapshot", &seq.to_le_bytes()])
            }
        };
        self.assembly.set_offer(Offer {
            peer,
            seq,
            digest,
            bytes,
        });
        self.replica.on_state_offer(peer, seq, digest, now);
    }

    /// A transfer its peer spoiled: to the replica, a snapshot that does not match the
    /// proof, so it marks the peer and asks the next one at once.
    fn spoiled(&mut self, from: ReplicaId, seq: Seq, reason: &'static str, now: Instant) {
        tracing::warn!(id = self.id, from, seq, reason, "state transfer abandoned");
        self.effects.push_back(Effect::Refused { from, reason });
        let spoiled = Digest::of_parts(&[b"abandoned snapshot", &seq.to_le_bytes()]);
        self.replica.on_state_offer(from, seq, spoiled, now);
    }

    /// Sends a message of the replica through the fault hooks.
    fn send(&mut self, dest: Dest, msg: Message, now: Instant) {
        self.phases.sent(&msg, now);
        let mut out = std::mem::take(&mut self.outgoing);
        self.faults
            .outgoing(Outgoing::now(dest, msg), now, &mut out);
        for o in out.drain(..) {
            self.release(o, now);
        }
        self.outgoing = out;
    }

    /// Sends now, or holds back until its delay has passed.
    fn release(&mut self, o: Outgoing, now: Instant) {
        if o.delay.is_zero() {
            self.emit(o);
        } else {
            self.delay_order += 1;
            self.delayed.push(Delayed {
                due: now.plus(o.delay),
                order: self.delay_order,
                out: o,
            });
        }
    }

    /// Encodes once and queues the bytes for the embedder to put on the wire.
    fn emit(&mut self, o: Outgoing) {
        let bytes = match o.payload {
            Payload::Message(m) => envelope::encode(&m),
            Payload::Raw(b) => b,
        };
        self.effects.push_back(Effect::Transmit {
            dest: o.dest,
            bytes: Bytes::from(bytes),
        });
        self.queued_transmits += 1;
    }

    /// Answers a read-only query from local state (not ordered: the asker compares the
    /// answers of several validators).
    pub fn answer(&self, query: Query) -> Result<Answer, ExecError> {
        let head = self.ledger.head();
        Ok(match query {
            Query::Status => Answer::Status(NodeStatus {
                replica: self.id,
                view: self.replica.view(),
                changing_view: self.replica.status() == Status::ViewChange,
                last_executed: self.replica.last_executed(),
                stable_checkpoint: self.replica.stable_checkpoint(),
                head_hash: head.hash,
                halted: self.halted().map(str::to_string),
                evidence_against: self.replica.evidence().keys().copied().collect(),
            }),
            Query::Account(account) => Answer::Account {
                account,
                balance: self.ledger.balance(&account)?,
                next_request_id: self.ledger.client_window(&account)?.next_request_id(),
                height: head.height,
            },
        })
    }
}

/// A snapshot being served: its reader, and the peers waiting for chunks of it with
/// the next chunk each is sent.
struct Serving {
    source: Box<dyn SnapshotSource>,
    queue: VecDeque<(ReplicaId, u32)>,
    /// Bytes of the chunk read last (handed on to the wire, counted as held).
    last_chunk: usize,
}

impl Serving {
    /// True while a peer waits for a chunk.
    fn busy(&self) -> bool {
        !self.queue.is_empty()
    }

    /// Bytes the reader holds, and the chunk read last.
    fn held_bytes(&self) -> usize {
        self.source.held_bytes() + self.last_chunk
    }
}

impl<E, L, F> std::fmt::Debug for Host<E, L, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("id", &self.id)
            .field("halted", &self.halted)
            .field("crashed", &self.crashed)
            .finish_non_exhaustive()
    }
}

/// What the ledger records of each client the cluster lists, at its head: the client
/// table of a replica that restarts or installs a snapshot learns from it the
/// executions it did not see (`pbft_protocol::client_table`). Clients that executed
/// nothing are left out. A cluster that admits any key has no list to read, and its
/// replica's table stays inexact.
fn client_records<E: Executor>(
    ledger: &E,
    clients: &ClientKeys,
) -> Result<ClientRecords, ExecError> {
    let ClientKeys::Listed { sorted, .. } = clients else {
        return Ok(ClientRecords::Unknown);
    };
    let mut records = Vec::new();
    for client in sorted.iter() {
        let w = ledger.client_window(client)?;
        if w.low > 1 || !w.executed.is_empty() {
            records.push(ClientRecord {
                client: *client,
                low: w.low,
                executed: w.executed,
            });
        }
    }
    Ok(ClientRecords::Complete(records))
}

/// The entries that were first executions (not duplicates or refusals), for checkers.
pub fn first_executions(entries: &[Entry]) -> impl Iterator<Item = usize> + '_ {
    entries
        .iter()
        .enumerate()
        .filter(|(_, e)| matches!(e, Entry::Executed(_)))
        .map(|(i, _)| i)
}

/// Actions that take long enough (a ledger write, a snapshot, compaction) that the
/// messages queued before them should be sent first.
fn is_slow(action: &Action) -> bool {
    matches!(
        action,
        Action::Execute { .. }
            | Action::InstallState { .. }
            | Action::ServeState { .. }
            | Action::StableCheckpoint { .. }
    )
}
