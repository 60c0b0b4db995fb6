//! The consensus thread: it owns the replica, the ledger and the consensus log, feeds
//! the replica its inputs and performs its actions in order. A `Persist` is made
//! durable before any later action; consecutive persists share one write.

use crate::metrics::Metrics;
use crate::stage::Input;
use bytes::Bytes;
use crossbeam_channel::{Receiver, RecvTimeoutError};
use pbft_crypto::Digest;
use pbft_executor::snapshot::inspect_chunks;
use pbft_executor::{ConsensusLog, Entry, ExecRequest, Executor, RocksExecutor};
use pbft_protocol::envelope;
use pbft_protocol::{
    Action, Answer, ExecutedRequest, ExecutionResult, Message, NodeStatus, Query, Replica,
    ReplicaId, Seq, Status, Verified, WalRecord,
};
use pbft_traitor::{Dest, Outgoing, Payload, Traitor};
use pbft_transport::{ClientId, Transport};
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Snapshot chunk size for state transfer.
const CHUNK_BYTES: usize = 1 << 20;
/// Most chunks a snapshot may have.
const MAX_CHUNKS: u32 = 1 << 16;
/// How often the transport's counters are copied into the metrics.
const STATS_EVERY: Duration = Duration::from_millis(250);
/// How often an executor failure is retried before the node halts.
const APPLY_ATTEMPTS: u32 = 3;

/// A send held back by a traitor's delay.
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

/// The consensus thread's state.
pub struct Core {
    pub(crate) id: ReplicaId,
    pub(crate) replica: Replica,
    pub(crate) ledger: RocksExecutor,
    pub(crate) log: ConsensusLog,
    pub(crate) transport: Transport,
    pub(crate) metrics: Metrics,
    pub(crate) traitor: Option<Traitor>,
    pub(crate) start: Instant,
    pub(crate) k: u64,
    /// Which connection each client last sent a request on.
    clients: HashMap<pbft_crypto::PublicKey, ClientId>,
    /// Snapshot chunks being assembled, by (sender, seq).
    incoming: BTreeMap<(ReplicaId, Seq), Vec<Option<Vec<u8>>>>,
    /// A complete snapshot offered to the replica, waiting for its verdict.
    offered: Option<(Seq, Vec<Vec<u8>>)>,
    delayed: BinaryHeap<Delayed>,
    delay_order: u64,
    /// Per sequence number: when it was accepted (or proposed), and when it prepared.
    phase_start: BTreeMap<Seq, (Instant, Option<Instant>)>,
    halted: Option<String>,
    /// Whether the traitor behaviour is on (switched by the scenario runner).
    pub(crate) traitor_active: Arc<AtomicBool>,
    /// Fault injection for scenarios: abort the process at this checkpoint sequence,
    /// after the ledger wrote its snapshot and before the checkpoint is announced.
    pub(crate) crash_at_checkpoint: Option<Seq>,
    /// Fault injection for scenarios: abort at the next checkpoint, wherever it is
    /// (switched on by the runner's `crash-at-checkpoint` control command).
    pub(crate) crash_next_checkpoint: Arc<AtomicBool>,
    /// A view record was logged since superseded records were last dropped (true at
    /// start: the log may hold some from before a restart).
    view_records_written: bool,
}

impl Core {
    /// A core around an opened replica and its storage.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: ReplicaId,
        replica: Replica,
        ledger: RocksExecutor,
        log: ConsensusLog,
        transport: Transport,
        metrics: Metrics,
        traitor: Option<Traitor>,
        start: Instant,
    ) -> Core {
        let k = replica.config().checkpoint_interval;
        Core {
            id,
            replica,
            ledger,
            log,
            transport,
            metrics,
            traitor,
            start,
            k,
            clients: HashMap::new(),
            incoming: BTreeMap::new(),
            offered: None,
            delayed: BinaryHeap::new(),
            delay_order: 0,
            phase_start: BTreeMap::new(),
            halted: None,
            traitor_active: Arc::new(AtomicBool::new(true)),
            crash_at_checkpoint: None,
            crash_next_checkpoint: Arc::new(AtomicBool::new(false)),
            view_records_written: true,
        }
    }

    fn now(&self) -> pbft_protocol::Instant {
        pbft_protocol::Instant(self.start.elapsed().as_micros() as u64)
    }

    fn to_wall(&self, t: pbft_protocol::Instant) -> Instant {
        self.start + Duration::from_micros(t.0)
    }

    /// Runs until [`Input::Stop`] or until every sender is gone.
    pub fn run(mut self, rx: Receiver<Input>) -> Core {
        // every log line of this thread carries the validator id and the current view;
        // lines about one sequence number carry it in a nested span or field
        let span = tracing::info_span!("validator", id = self.id, view = self.replica.view());
        let _g = span.enter();
        let mut view = self.replica.view();
        self.drain();
        let mut last_stats = Instant::now() - STATS_EVERY;
        loop {
            // wake up for the metrics refresh too, so they stay current when idle
            let refresh = last_stats + STATS_EVERY;
            let deadline = self.deadline().map_or(refresh, |d| d.min(refresh));
            let wait = deadline.saturating_duration_since(Instant::now());
            let first = match rx.recv_timeout(wait) {
                Ok(i) => Some(i),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let mut stop = false;
            if let Some(input) = first {
                stop |= self.input(input);
                // take what else is already waiting, then perform the actions once
                for _ in 0..256 {
                    match rx.try_recv() {
                        Ok(i) => stop |= self.input(i),
                        Err(_) => break,
                    }
                }
            }
            if stop {
                break;
            }
            self.timers();
            self.drain();
            self.metrics.set_progress(
                self.replica.view(),
                self.replica.last_executed(),
                self.replica.stable_checkpoint(),
            );
            if self.replica.view() != view {
                view = self.replica.view();
                span.record("view", view);
            }
            // the transport's counters are copied, so not on every pass
            if last_stats.elapsed() >= STATS_EVERY {
                last_stats = Instant::now();
                self.metrics.set_transport(&self.transport.stats());
                if let Ok(mem) = self.ledger.memory() {
                    // one cache: every column family reports the same usage
                    let cache = mem.iter().map(|c| c.block_cache_usage).max().unwrap_or(0);
                    let memtables = mem.iter().map(|c| c.memtables).sum();
                    let state = (self.ledger.state_cache_bytes()
                        + self.ledger.unflushed_state_bytes())
                        as u64;
                    self.metrics.set_ledger_memory(cache, memtables, state);
                }
            }
        }
        self
    }

    fn deadline(&self) -> Option<Instant> {
        let replica = self
            .replica
            .next_timeout()
            .filter(|_| self.halted.is_none())
            .map(|t| self.to_wall(t));
        let delayed = self.delayed.peek().map(|d| d.due);
        match (replica, delayed) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn timers(&mut self) {
        let now = Instant::now();
        while self.delayed.peek().is_some_and(|d| d.due <= now) {
            if let Some(d) = self.delayed.pop() {
                self.send_out(d.out);
            }
        }
        if self.halted.is_some() {
            return;
        }
        let t = self.now();
        if self.replica.next_timeout().is_some_and(|at| at <= t) {
            self.replica.on_timeout(t);
        }
    }

    /// Feeds one input; true means stop.
    fn input(&mut self, input: Input) -> bool {
        let now = self.now();
        match input {
            Input::Stop => return true,
            Input::Query { conn, id, query } => self.answer(conn, id, query),
            _ if self.halted.is_some() => {}
            Input::Request(req, conn) => {
                self.clients.insert(req.get().body.client, conn);
                self.replica.on_request(req, now);
            }
            Input::Peer(v) => self.on_peer(v),
        }
        false
    }

    fn on_peer(&mut self, v: Verified) {
        let now = self.now();
        let from = v.from();
        let active = self.traitor_active.load(Ordering::Relaxed);
        if let Some(t) = self.traitor.as_mut().filter(|_| active) {
            let (outs, deliver) = t.observe(from, v.message(), now);
            for o in outs {
                self.send_out(o);
            }
            if !deliver {
                return;
            }
        }
        if let Message::StateChunk {
            seq,
            index,
            total,
            data,
        } = v.message()
        {
            let (seq, index, total) = (*seq, *index, *total);
            let data = data.clone();
            self.on_chunk(from, seq, index, total, data);
            return;
        }
        self.replica.on_message(v, now);
    }

    fn on_chunk(&mut self, sender: ReplicaId, seq: Seq, index: u32, total: u32, data: Vec<u8>) {
        if total == 0 || total > MAX_CHUNKS || index >= total {
            self.metrics.rejected("bad snapshot chunk");
            return;
        }
        // only one transfer at a time is kept: a new one replaces older partial ones
        self.incoming.retain(|k, _| *k == (sender, seq));
        let parts = self
            .incoming
            .entry((sender, seq))
            .or_insert_with(|| vec![None; total as usize]);
        if parts.len() != total as usize {
            self.incoming.remove(&(sender, seq));
            self.metrics.rejected("bad snapshot chunk");
            return;
        }
        parts[index as usize] = Some(data);
        if parts.iter().any(|p| p.is_none()) {
            return;
        }
        let chunks: Vec<Vec<u8>> = self
            .incoming
            .remove(&(sender, seq))
            .unwrap_or_default()
            .into_iter()
            .flatten()
            .collect();
        let digest = match inspect_chunks(seq, &chunks) {
            Ok(v) => v.checkpoint_digest,
            Err(_) => Digest::of_parts(&[b"undecodable snapshot", &seq.to_le_bytes()]),
        };
        self.offered = Some((seq, chunks));
        let now = self.now();
        self.replica.on_state_offer(sender, seq, digest, now);
    }

    fn answer(&mut self, conn: ClientId, id: u64, query: Query) {
        let head = self.ledger.head();
        let answer = match query {
            Query::Status => Answer::Status(NodeStatus {
                replica: self.id,
                view: self.replica.view(),
                changing_view: self.replica.status() == Status::ViewChange,
                last_executed: self.replica.last_executed(),
                stable_checkpoint: self.replica.stable_checkpoint(),
                head_hash: head.hash,
                halted: self
                    .halted
                    .clone()
                    .or_else(|| self.replica.halted().map(str::to_string)),
                evidence_against: self.replica.evidence().keys().copied().collect(),
            }),
            Query::Account(account) => {
                let balance = self.ledger.balance(&account);
                let window = self.ledger.client_window(&account);
                match (balance, window) {
                    (Ok(balance), Ok(w)) => Answer::Account {
                        account,
                        balance,
                        next_request_id: w.next_request_id(),
                        height: head.height,
                    },
                    (Err(e), _) | (_, Err(e)) => {
                        tracing::error!(error = %e, "reading an account failed");
                        return;
                    }
                }
            }
        };
        let bytes = Bytes::from(envelope::encode(&Message::Answer { id, answer }));
        self.transport.reply(conn, bytes);
    }

    /// Performs every queued action, grouping consecutive persists into one write.
    fn drain(&mut self) {
        let mut pending: Vec<(Option<u64>, Vec<u8>)> = Vec::new();
        loop {
            if self.halted.is_some() {
                return;
            }
            let Some(action) = self.replica.poll_action() else {
                break;
            };
            if let Action::Persist(rec) = action {
                // only a new View record can supersede older records
                if matches!(rec, WalRecord::View { .. }) {
                    self.view_records_written = true;
                }
                match postcard::to_allocvec(&rec) {
                    Ok(bytes) => pending.push((rec.obsolete_at(), bytes)),
                    Err(e) => self.halt(format!("cannot encode a log record: {e}")),
                }
                continue;
            }
            if !self.flush(&mut pending) {
                return;
            }
            self.perform(action);
        }
        self.flush(&mut pending);
    }

    fn flush(&mut self, pending: &mut Vec<(Option<u64>, Vec<u8>)>) -> bool {
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
        tracing::error!(%reason, "validator halted: it stops taking part");
        self.metrics.set_halted();
        self.halted = Some(reason);
    }

    fn note_phase(&mut self, msg: &Message) {
        let now = Instant::now();
        match msg {
            Message::PrePrepare { pre_prepare, .. } => {
                self.phase_start
                    .entry(pre_prepare.body.seq)
                    .or_insert((now, None));
            }
            Message::Prepare(p) => {
                self.phase_start.entry(p.body.seq).or_insert((now, None));
            }
            Message::Commit(c) => {
                if let Some((start, prepared)) = self.phase_start.get_mut(&c.body.seq) {
                    if prepared.is_none() {
                        *prepared = Some(now);
                        let secs = now.duration_since(*start).as_secs_f64();
                        self.metrics.phase("prepare", secs);
                    }
                }
            }
            _ => {}
        }
    }

    fn perform(&mut self, action: Action) {
        let now = self.now();
        match action {
            Action::Send { to, msg } => {
                self.note_phase(&msg);
                self.outgoing(Dest::Replica(to), msg)
            }
            Action::Broadcast { msg } => {
                self.note_phase(&msg);
                self.outgoing(Dest::AllReplicas, msg)
            }
            Action::Reply { client, reply } => {
                self.outgoing(Dest::Client(client), Message::Reply(reply))
            }
            Action::Persist(_) => {}
            Action::Execute {
                seq,
                view,
                digest,
                batch,
            } => {
                let span = tracing::debug_span!("execute", view, seq);
                let _g = span.enter();
                if let Some((_, Some(prepared))) = self.phase_start.get(&seq) {
                    let secs = Instant::now().duration_since(*prepared).as_secs_f64();
                    self.metrics.phase("commit", secs);
                }
                self.phase_start = self.phase_start.split_off(&(seq + 1));
                let requests: Vec<ExecRequest<'_>> = batch
                    .requests
                    .iter()
                    .map(|q| ExecRequest {
                        client: &q.body.client,
                        request_id: q.body.request_id,
                        op: &q.body.op,
                    })
                    .collect();
                let started = Instant::now();
                let mut attempt = 0;
                let applied = loop {
                    attempt += 1;
                    match self.ledger.apply(seq, digest, &requests) {
                        Ok(a) => break a,
                        Err(e) if attempt < APPLY_ATTEMPTS => {
                            // a failed apply left nothing behind (one WriteBatch): retry
                            tracing::warn!(error = %e, attempt, "applying the batch failed; retrying");
                            std::thread::sleep(Duration::from_millis(20 << attempt));
                        }
                        Err(e) => {
                            return self.halt(format!(
                                "the ledger failed to apply batch {seq} {APPLY_ATTEMPTS} times: {e}"
                            ));
                        }
                    }
                };
                let executed = applied
                    .entries
                    .iter()
                    .filter(|e| matches!(e, Entry::Executed(_)))
                    .count();
                self.metrics
                    .phase("execute", started.elapsed().as_secs_f64());
                self.metrics.executed_batch(executed);
                let state_digest = if seq % self.k == 0 {
                    let started = Instant::now();
                    match self.ledger.checkpoint() {
                        Ok(d) => {
                            self.metrics
                                .phase("checkpoint", started.elapsed().as_secs_f64());
                            if self.crash_at_checkpoint == Some(seq)
                                || self.crash_next_checkpoint.load(Ordering::SeqCst)
                            {
                                // as abrupt as SIGKILL: no destructor, no flush
                                tracing::error!(seq, "fault injection: crashing mid-checkpoint");
                                std::process::abort();
                            }
                            Some(d)
                        }
                        Err(e) => return self.halt(format!("checkpoint {seq} failed: {e}")),
                    }
                } else {
                    None
                };
                let replies = batch
                    .requests
                    .iter()
                    .zip(applied.replies)
                    .map(|(q, result)| ExecutedRequest {
                        client: q.body.client,
                        request_id: q.body.request_id,
                        result,
                    })
                    .collect();
                self.replica.on_executed(
                    seq,
                    ExecutionResult {
                        replies,
                        state_digest,
                    },
                    now,
                );
            }
            Action::StableCheckpoint { seq, .. } => {
                // a replica behind this checkpoint has no snapshot of it yet: it will
                // install one by state transfer
                if let Err(e) = self.ledger.stable(seq) {
                    tracing::debug!(seq, error = %e, "no local snapshot for this stable checkpoint");
                }
                if let Err(e) = self.log.compact(seq) {
                    self.halt(format!("consensus log compaction failed: {e}"));
                    return;
                }
                if self.view_records_written {
                    // the records of old views (only untagged records can be superseded)
                    match self.log.drop_superseded(true, WalRecord::superseded) {
                        Ok(_) => self.view_records_written = false,
                        Err(e) => self.halt(format!("consensus log pruning failed: {e}")),
                    }
                }
            }
            Action::FetchState { seq, peer, .. } => {
                let bytes = Bytes::from(envelope::encode(&Message::StateRequest { seq }));
                self.transport.send(peer, bytes);
            }
            Action::InstallState { seq, digest } => {
                let Some((s, chunks)) = self.offered.take() else {
                    return;
                };
                if s != seq {
                    return;
                }
                match self.ledger.import(seq, digest, &chunks) {
                    // the installed state's checkpoint digest is the proven one
                    Ok(_) => {
                        tracing::info!(seq, "installed a snapshot by state transfer");
                        self.replica.on_state_transferred(seq, digest, now)
                    }
                    Err(e) => self.halt(format!("approved snapshot {seq} failed to install: {e}")),
                }
            }
            Action::ServeState { to, seq } => match self.ledger.export(seq, CHUNK_BYTES) {
                Ok(chunks) => {
                    let total = chunks.len() as u32;
                    for (index, data) in chunks.into_iter().enumerate() {
                        let msg = Message::StateChunk {
                            seq,
                            index: index as u32,
                            total,
                            data,
                        };
                        self.outgoing(Dest::Replica(to), msg);
                    }
                }
                Err(e) => tracing::debug!(seq, error = %e, "cannot serve this snapshot"),
            },
            Action::Evidence { against, evidence } => {
                tracing::warn!(
                    against,
                    kind = evidence.kind(),
                    "signed evidence of a faulty validator"
                );
                self.metrics.evidence();
            }
            Action::Halt { reason } => self.halt(reason),
        }
    }

    /// Sends through the traitor when one is active.
    fn outgoing(&mut self, dest: Dest, msg: Message) {
        let now = self.now();
        let active = self.traitor_active.load(Ordering::Relaxed);
        let outs = match self.traitor.as_mut().filter(|_| active) {
            Some(t) => t.mutate(dest, msg, now),
            None => vec![Outgoing::now(dest, msg)],
        };
        for o in outs {
            if o.delay.is_zero() {
                self.send_out(o);
            } else {
                self.delay_order += 1;
                self.delayed.push(Delayed {
                    due: Instant::now() + o.delay,
                    order: self.delay_order,
                    out: o,
                });
            }
        }
    }

    /// Encodes once and hands the same bytes to every destination.
    fn send_out(&mut self, o: Outgoing) {
        let bytes = Bytes::from(match o.payload {
            Payload::Message(m) => envelope::encode(&m),
            Payload::Raw(b) => b,
        });
        match o.dest {
            Dest::Replica(to) => {
                self.transport.send(to, bytes);
            }
            Dest::AllReplicas => self.transport.broadcast(bytes),
            Dest::Client(pk) => {
                if let Some(conn) = self.clients.get(&pk) {
                    self.transport.reply(*conn, bytes);
                }
            }
        }
    }
}
