//! The consensus thread: a loop around the validator's [`Host`]. It feeds the host the
//! verified inputs of the workers and the timer, lets it perform the replica's actions
//! (taking the inputs already waiting first, so that their persists share log writes),
//! and carries the host's effects out: frames to the transport, figures to the metrics.

use crate::budget::QueryBudget;
use crate::metrics::Metrics;
use crate::routes::Routes;
use crate::stage::Input;
use crate::timed::Timed;
use crossbeam_channel::Receiver;
use pbft_executor::{ConsensusLog, Entry, RocksExecutor};
use pbft_host::{Effect, Faults, Host};
use pbft_protocol::{envelope, Dest, Message};
use pbft_transport::{Origin, Transport};
use std::time::{Duration, Instant};

/// How often the transport's counters are copied into the metrics.
const STATS_EVERY: Duration = Duration::from_millis(250);
/// The reason a query over its connection's budget is dropped and reported.
const QUERY_RATE: &str = "query_rate";

/// Most waiting inputs fed to the host before it performs their actions.
const GULP: usize = 256;

/// The host as the node runs it.
pub type NodeHost<F> = Host<Timed<RocksExecutor>, ConsensusLog, F>;

/// The consensus thread's state.
pub struct Core<F> {
    pub(crate) host: NodeHost<F>,
    transport: Transport,
    metrics: Metrics,
    /// The protocol's clock: microseconds since this instant.
    start: Instant,
    /// Where each client's replies go.
    routes: Routes,
    /// What queries each client connection may still have answered.
    queries: QueryBudget,
}

impl<F: Faults> Core<F> {
    /// A core around an opened host.
    /// `queries_per_sec` is each client connection's query budget (a burst of as many,
    /// then that rate).
    pub fn new(
        host: NodeHost<F>,
        transport: Transport,
        metrics: Metrics,
        start: Instant,
        queries_per_sec: u32,
    ) -> Self {
        Core {
            host,
            transport,
            metrics,
            start,
            routes: Routes::default(),
            queries: QueryBudget::new(queries_per_sec, queries_per_sec),
        }
    }

    fn now(&self) -> pbft_protocol::Instant {
        pbft_protocol::Instant(self.start.elapsed().as_micros() as u64)
    }

    fn to_wall(&self, t: pbft_protocol::Instant) -> Instant {
        self.start + Duration::from_micros(t.0)
    }

    /// Waits until `deadline` for an input from either queue, validators' first.
    /// `Err` once both queues are closed.
    pub(crate) fn wait(
        peers: &Receiver<Input>,
        clients: &Receiver<Input>,
        deadline: Instant,
    ) -> Result<Option<Input>, ()> {
        if let Ok(i) = peers.try_recv() {
            return Ok(Some(i));
        }
        let timeout = crossbeam_channel::at(deadline);
        crossbeam_channel::select! {
            recv(peers) -> i => match i {
                Ok(i) => Ok(Some(i)),
                // stopping: the validators' queue closes with the node
                Err(_) => Err(()),
            },
            recv(clients) -> i => match i {
                Ok(i) => Ok(Some(i)),
                // the clients' queue closed first: wait on the validators' alone
                Err(_) => match peers.recv_deadline(deadline) {
                    Ok(i) => Ok(Some(i)),
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => Ok(None),
                    Err(crossbeam_channel::RecvTimeoutError::Disconnected) => Err(()),
                },
            },
            recv(timeout) -> _ => Ok(None),
        }
    }

    /// Runs until [`Input::Stop`] or until the validators' queue is gone. Each round
    /// takes up to [`GULP`] validators' inputs before up to [`GULP`] clients', so
    /// client traffic never delays consensus messages by more than one round.
    pub fn run(mut self, rx: Receiver<Input>, clients: Receiver<Input>) -> Self {
        // every log line of this thread carries the validator id and the current view;
        // lines about one sequence number carry it in a nested span or field
        let span = tracing::info_span!(
            "validator",
            id = self.host.id(),
            view = self.host.replica().view()
        );
        let _g = span.enter();
        let mut view = self.host.replica().view();
        self.step(self.now());
        let mut last_stats = Instant::now() - STATS_EVERY;
        loop {
            // wake up for the metrics refresh too, so they stay current when idle
            let refresh = last_stats + STATS_EVERY;
            let deadline = self
                .host
                .next_timeout()
                .map_or(refresh, |t| self.to_wall(t).min(refresh));
            let first = match Self::wait(&rx, &clients, deadline) {
                Ok(i) => i,
                Err(()) => break,
            };
            let mut stop = false;
            if let Some(input) = first {
                stop |= self.input(input);
                for queue in [&rx, &clients] {
                    for _ in 0..GULP {
                        match queue.try_recv() {
                            Ok(i) => stop |= self.input(i),
                            Err(_) => break,
                        }
                    }
                }
            }
            if stop {
                break;
            }
            let now = self.now();
            if self.host.next_timeout().is_some_and(|t| t <= now) {
                self.host.handle_timeout(now);
            }
            self.step(now);
            let replica = self.host.replica();
            self.metrics.set_progress(
                replica.view(),
                replica.last_executed(),
                replica.stable_checkpoint(),
            );
            if replica.view() != view {
                view = replica.view();
                span.record("view", view);
            }
            // the transport's counters are copied, so not on every pass
            if last_stats.elapsed() >= STATS_EVERY {
                last_stats = Instant::now();
                self.refresh_stats();
            }
        }
        self
    }

    fn refresh_stats(&self) {
        self.metrics.set_transport(&self.transport.stats());
        let ledger = self.host.ledger().inner();
        if let Ok(mem) = ledger.memory() {
            // one cache: every column family reports the same usage
            let cache = mem.iter().map(|c| c.block_cache_usage).max().unwrap_or(0);
            let memtables = mem.iter().map(|c| c.memtables).sum();
            let state = (ledger.state_cache_bytes() + ledger.unflushed_state_bytes()) as u64;
            self.metrics.set_ledger_memory(cache, memtables, state);
        }
    }

    /// Feeds one input; true means stop.
    fn input(&mut self, input: Input) -> bool {
        let now = self.now();
        match input {
            Input::Stop => return true,
            Input::Query { conn, id, query } => {
                // a close can overtake a connection's last frames (they pass through
                // different workers): a closed connection gets no budget entry
                if !self.transport.is_open(conn) {
                    return false;
                }
                if !self.queries.allow(conn, Instant::now()) {
                    self.metrics.rejected(QUERY_RATE);
                    self.transport.report(Origin::Client(conn), QUERY_RATE);
                    return false;
                }
                match self.host.answer(query) {
                    Ok(answer) => {
                        let bytes = envelope::encode(&Message::Answer { id, answer });
                        self.transport.reply(conn, bytes.into());
                    }
                    Err(e) => tracing::error!(error = %e, "answering a query failed"),
                }
            }
            Input::Request(req, conn, bound) => {
                let body = &req.get().body;
                if self.transport.is_open(conn) {
                    self.routes
                        .request(body.client, body.request_id, conn, bound);
                }
                if bound {
                    self.host.handle_request(req, now);
                } else {
                    self.host.handle_unproven_request(req, now);
                }
            }
            Input::ClientOpened(conn, bound) => {
                if self.transport.is_open(conn) {
                    for key in bound.keys() {
                        if let Ok(client) = pbft_crypto::PublicKey::from_bytes(key) {
                            self.routes.opened(client, conn);
                        }
                    }
                }
            }
            Input::ClientClosed(conn) => {
                self.routes.closed(conn);
                self.queries.closed(conn);
            }
            Input::Peer(v) => self.host.handle_message(v, now),
        }
        false
    }

    /// Lets the host perform what its inputs asked for, and carries its effects out.
    fn step(&mut self, now: pbft_protocol::Instant) {
        loop {
            self.host.process(now);
            while let Some(effect) = self.host.poll_effect() {
                self.effect(effect);
            }
            if !self.host.wants_process() {
                break;
            }
        }
    }

    fn effect(&mut self, effect: Effect) {
        match effect {
            Effect::Transmit { dest, bytes } => match dest {
                Dest::Replica(to) => {
                    self.transport.send(to, bytes);
                }
                Dest::AllReplicas => self.transport.broadcast(bytes),
                Dest::Client(pk) => {
                    let mut gone = Vec::new();
                    for conn in self.routes.of(&pk) {
                        if !self.transport.reply(conn, bytes.clone())
                            && !self.transport.is_open(conn)
                        {
                            gone.push(conn);
                        }
                    }
                    // a close that overtook the connection's last request (they pass
                    // through different verification workers)
                    for conn in gone {
                        self.routes.closed(conn);
                    }
                }
            },
            Effect::Executed {
                entries,
                prepare,
                commit,
                ..
            } => {
                if let Some(d) = prepare {
                    self.metrics.phase("prepare", d.as_secs_f64());
                }
                if let Some(d) = commit {
                    self.metrics.phase("commit", d.as_secs_f64());
                }
                let executed = entries
                    .iter()
                    .filter(|e| matches!(e, Entry::Executed(_)))
                    .count();
                self.metrics.executed_batch(executed);
            }
            Effect::Installed { .. } => {}
            Effect::Evidence { .. } => self.metrics.evidence(),
            Effect::Refused { reason, .. } => self.metrics.rejected(reason),
            Effect::Halted { .. } => self.metrics.set_halted(),
            Effect::Crashed => {
                // Only scripted fault hooks ask for this (the honest ones never do): die
                // as abruptly as SIGKILL, with no destructor and no flush.
                std::process::abort();
            }
        }
    }

    /// The host, once the thread has stopped.
    pub fn into_host(self) -> NodeHost<F> {
        self.host
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stage::Input;
    use pbft_transport::ClientId;

    /// With inputs waiting in both queues, the validators' come first.
    #[test]
    fn validators_inputs_are_taken_before_clients() {
        let (ptx, prx) = crossbeam_channel::unbounded();
        let (ctx, crx) = crossbeam_channel::unbounded();
        for c in 0..100 {
            ctx.send(Input::ClientClosed(ClientId(c))).expect("send");
        }
        ptx.send(Input::Stop).expect("send");
        let far = Instant::now() + Duration::from_secs(60);
        let first = Core::<pbft_host::Honest>::wait(&prx, &crx, far).expect("open");
        assert!(
            matches!(first, Some(Input::Stop)),
            "the validators' input first"
        );
        let next = Core::<pbft_host::Honest>::wait(&prx, &crx, far).expect("open");
        assert!(matches!(next, Some(Input::ClientClosed(ClientId(0)))));
        // the clients' queue closing leaves the validators' one served
        drop(ctx);
        while crx.try_recv().is_ok() {}
        ptx.send(Input::Stop).expect("send");
        let again = Core::<pbft_host::Honest>::wait(&prx, &crx, far).expect("open");
        assert!(matches!(again, Some(Input::Stop)));
        drop(ptx);
        assert!(Core::<pbft_host::Honest>::wait(&prx, &crx, far).is_err());
    }
}
