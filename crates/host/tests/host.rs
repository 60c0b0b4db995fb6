//! The host's decisions, each tested once here: four hosts exchange their effects
//! through a FIFO loop (no simulator), with in-memory ledgers and logs.
//!
//! - a cluster of hosts commits and agrees;
//! - a batch whose application fails is retried after a backoff and applied once;
//!   one that keeps failing halts the validator, and the others go on;
//! - the persists of several inputs fed before one `process` reach the log in one
//!   write when only sends lie between them;
//! - a snapshot the replica approved is installed even when the replica asked another
//!   peer in the same pass (the timer and the last chunk fed before one `process`);
//! - a crash point makes the host emit `Crashed` and stop, with the checkpoint on disk;
//! - a restarted host recovers from its log and ledger and catches up;
//! - a backup host that restarted, or installed a snapshot, knows from its ledger which
//!   requests executed: a replayed old request is not watched, so two such backups never
//!   replace the honest primary over it, while a new request is still watched; a
//!   ledger whose windows cannot be read stops the validator (at open, or after the
//!   install) rather than leave its table guessing;
//! - a flood of snapshot requests from every peer costs one export, and each peer gets
//!   the snapshot once;
//! - a request id that executed, signed again with another operation, is refused by
//!   every validator with a reply bound to the new request, from the reply cache's
//!   place as from the ledger after a restart: never the receipt of the other one.

use pbft_crypto::{Digest, Keypair, PublicKey};
use pbft_executor::{
    Applied, Block, ClientWindow, ExecError, ExecRequest, Executor, FailReason, Head,
    MemoryExecutor, MemoryLog, Operation, Receipt, Record, RecordLog, SnapshotSource,
    StoredReceipt, Transfer,
};
use pbft_host::{CrashPoint, Effect, Faults, Honest, Host, HostError, HostOptions};
use pbft_protocol::envelope::{self, Limits};
use pbft_protocol::{
    ClientKeys, Config, Dest, Duration, Instant, Message, ReplicaId, Reply, Request, Signed,
    SignedRequest, Verifier,
};
use std::cell::Cell;
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;

/// An in-memory ledger whose `apply` fails on demand (the test keeps a handle on the
/// counters).
struct Flaky {
    inner: MemoryExecutor,
    /// How many of the next applies fail.
    fail_next: Rc<Cell<u32>>,
    applies: Rc<Cell<u32>>,
    exports: Rc<Cell<u32>>,
    /// Reading a client window fails while set.
    unreadable_windows: bool,
}

impl Executor for Flaky {
    fn apply(
        &mut self,
        seq: u64,
        digest: Digest,
        requests: &[ExecRequest<'_>],
    ) -> Result<Applied, ExecError> {
        self.applies.set(self.applies.get() + 1);
        if self.fail_next.get() > 0 {
            self.fail_next.set(self.fail_next.get() - 1);
            return Err(ExecError::Storage("injected write failure".into()));
        }
        self.inner.apply(seq, digest, requests)
    }
    fn head(&self) -> Head {
        self.inner.head()
    }
    fn checkpoint(&mut self) -> Result<Digest, ExecError> {
        self.inner.checkpoint()
    }
    fn stable(&mut self, seq: u64) -> Result<(), ExecError> {
        self.inner.stable(seq)
    }
    fn stable_seq(&self) -> u64 {
        self.inner.stable_seq()
    }
    fn rollback(&mut self) -> Result<u64, ExecError> {
        self.inner.rollback()
    }
    fn export_source(
        &self,
        seq: u64,
        max_chunk: usize,
    ) -> Result<Box<dyn SnapshotSource>, ExecError> {
        self.exports.set(self.exports.get() + 1);
        self.inner.export_source(seq, max_chunk)
    }
    fn import_begin(&mut self, seq: u64) -> Result<(), ExecError> {
        self.inner.import_begin(seq)
    }
    fn import_chunk(&mut self, seq: u64, chunk: &[u8]) -> Result<(), ExecError> {
        self.inner.import_chunk(seq, chunk)
    }
    fn import_finish(&mut self, seq: u64) -> Result<Digest, ExecError> {
        self.inner.import_finish(seq)
    }
    fn import_commit(&mut self, seq: u64, expected: Digest) -> Result<Head, ExecError> {
        self.inner.import_commit(seq, expected)
    }
    fn import_abort(&mut self) {
        self.inner.import_abort()
    }
    fn import_held_bytes(&self) -> usize {
        self.inner.import_held_bytes()
    }
    fn balance(&self, account: &PublicKey) -> Result<Option<u64>, ExecError> {
        self.inner.balance(account)
    }
    fn client_window(&self, client: &PublicKey) -> Result<ClientWindow, ExecError> {
        if self.unreadable_windows {
            return Err(ExecError::Storage("injected read failure".into()));
        }
        self.inner.client_window(client)
    }
    fn receipt(&self, c: &PublicKey, id: u64) -> Result<Option<StoredReceipt>, ExecError> {
        self.inner.receipt(c, id)
    }
    fn block(&self, height: u64) -> Result<Option<Block>, ExecError> {
        self.inner.block(height)
    }
}

/// A log that counts its writes.
#[derive(Default)]
struct Counting {
    inner: MemoryLog,
    appends: Rc<Cell<u32>>,
}

impl RecordLog for Counting {
    fn append(&mut self, records: &[Record]) -> Result<(), ExecError> {
        self.appends.set(self.appends.get() + 1);
        self.inner.append(records)
    }
    fn load_keyed(&self) -> Result<Vec<(u64, Record)>, ExecError> {
        self.inner.load_keyed()
    }
    fn remove(&mut self, keys: &[u64]) -> Result<(), ExecError> {
        self.inner.remove(keys)
    }
    fn compact(&mut self, stable: u64) -> Result<(), ExecError> {
        self.inner.compact(stable)
    }
}

/// Hooks that crash at one checkpoint.
struct CrashAt(u64);

impl Faults for CrashAt {
    fn crash(&mut self, point: CrashPoint) -> bool {
        point == CrashPoint::CheckpointTaken { seq: self.0 }
    }
}

/// Either hook, so one cluster can mix them.
enum Hooks {
    Honest,
    CrashAt(CrashAt),
}

impl Faults for Hooks {
    fn crash(&mut self, point: CrashPoint) -> bool {
        match self {
            Hooks::Honest => Honest.crash(point),
            Hooks::CrashAt(c) => c.crash(point),
        }
    }
}

type TestHost = Host<Flaky, Counting, Hooks>;

fn key(tag: &str, i: u64) -> Keypair {
    let seed = Digest::of_parts(&[tag.as_bytes(), &i.to_le_bytes()]);
    Keypair::from_seed(&seed.0).expect("a derived key")
}

struct Cluster {
    cfg: Config,
    keys: Vec<Keypair>,
    client: Keypair,
    genesis: BTreeMap<PublicKey, u64>,
    hosts: Vec<Option<TestHost>>,
    verifier: Verifier,
    now: Instant,
    /// (from, dest, frame) in flight, delivered in order.
    wire: VecDeque<(ReplicaId, Dest, bytes::Bytes)>,
    /// Replies each validator sent to the client: (validator, request id, result).
    replies: Vec<(ReplicaId, u64, Vec<u8>)>,
    /// The same replies, whole.
    reply_bodies: Vec<(ReplicaId, Reply)>,
    executed: Vec<Vec<u64>>,
    halted: Vec<Option<String>>,
    crashed: Vec<bool>,
    next_id: u64,
    /// Per host: its ledger's failure switch and apply counter, its log's write counter.
    fail_next: Vec<Rc<Cell<u32>>>,
    applies: Vec<Rc<Cell<u32>>>,
    exports: Vec<Rc<Cell<u32>>>,
    appends: Vec<Rc<Cell<u32>>>,
    /// Bytes per snapshot chunk the hosts serve.
    chunk_bytes: usize,
    /// Per host: the most bytes it held for state transfer, seen after any input.
    peak_snapshot_bytes: Vec<usize>,
    /// Per host: the size of the last snapshot it installed.
    installed_bytes: Vec<usize>,
}

impl Cluster {
    fn new() -> Cluster {
        // small chunks: every snapshot spans several
        Cluster::with(0, 48)
    }

    /// A cluster whose genesis also has `accounts` more accounts, serving snapshots in
    /// chunks of `chunk_bytes`.
    fn with(accounts: u64, chunk_bytes: usize) -> Cluster {
        let keys: Vec<Keypair> = (0..4).map(|i| key("host-test validator", i)).collect();
        let client = key("host-test client", 0);
        let mut cfg = Config::new(keys.iter().map(|k| k.public()).collect());
        cfg.checkpoint_interval = 4;
        cfg.log_window = 8;
        cfg.max_batch = 2;
        cfg.pipeline_depth = 1;
        cfg.view_timeout = Duration::from_millis(1000);
        cfg.retransmit_interval = Duration::from_millis(100);
        cfg.clients = ClientKeys::listed([client.public()]);
        let mut genesis = BTreeMap::from([(client.public(), 1_000_000)]);
        for j in 0..accounts {
            genesis.insert(key("host-test account", j).public(), j);
        }
        let verifier = Verifier::for_config(&cfg);
        let mut c = Cluster {
            cfg,
            keys,
            client,
            genesis,
            hosts: Vec::new(),
            verifier,
            now: Instant::ZERO,
            wire: VecDeque::new(),
            replies: Vec::new(),
            reply_bodies: Vec::new(),
            executed: vec![Vec::new(); 4],
            halted: vec![None; 4],
            crashed: vec![false; 4],
            next_id: 1,
            fail_next: Vec::new(),
            applies: Vec::new(),
            exports: Vec::new(),
            appends: Vec::new(),
            chunk_bytes,
            peak_snapshot_bytes: vec![0; 4],
            installed_bytes: vec![0; 4],
        };
        for i in 0..4 {
            let ledger = Flaky {
                inner: MemoryExecutor::genesis(&c.genesis),
                fail_next: Rc::default(),
                applies: Rc::default(),
                exports: Rc::default(),
                unreadable_windows: false,
            };
            let log = Counting::default();
            c.fail_next.push(ledger.fail_next.clone());
            c.applies.push(ledger.applies.clone());
            c.exports.push(ledger.exports.clone());
            c.appends.push(log.appends.clone());
            let h = c.open(i, ledger, log, Hooks::Honest);
            c.hosts.push(Some(h));
        }
        c
    }

    /// Stops host `i`'s process; its storage and hooks come back.
    fn stop(&mut self, i: usize) -> (Flaky, Counting, Hooks) {
        self.hosts[i].take().expect("the host is up").into_parts()
    }

    fn open(&self, i: ReplicaId, ledger: Flaky, log: Counting, hooks: Hooks) -> TestHost {
        Host::open(
            self.cfg.clone(),
            i,
            self.keys[i as usize].clone(),
            ledger,
            log,
            hooks,
            HostOptions {
                chunk_bytes: self.chunk_bytes,
                // an empty log here is the cluster's first start
                genesis: true,
                ..HostOptions::default()
            },
            self.now,
        )
        .expect("open a host")
    }

    fn host(&mut self, i: usize) -> &mut TestHost {
        self.hosts[i].as_mut().expect("the host is up")
    }

    fn request(&mut self) -> SignedRequest {
        let op = Operation {
            transfers: vec![Transfer {
                to: self.keys[0].public(),
                amount: 1,
            }],
        }
        .encode();
        let body = Request {
            client: self.client.public(),
            request_id: self.next_id,
            op,
        };
        self.next_id += 1;
        Signed::sign(body, &self.client)
    }

    /// The client sends a request to every validator.
    /// `req` reaches host `i` only, from a client connection and relayed by validator
    /// `relay`; host `i` performs what it decides (its sends go on the wire).
    fn replay(&mut self, i: usize, relay: ReplicaId, req: &SignedRequest) {
        let v = self
            .verifier
            .verify_request(req.clone())
            .expect("a valid request");
        let now = self.now;
        self.host(i).handle_request(v, now);
        let v = self
            .verifier
            .verify(relay, Message::Request(req.clone()))
            .expect("verifies");
        self.host(i).handle_message(v, now);
        self.pump(i);
    }

    fn submit(&mut self) {
        let req = self.request();
        for i in 0..4 {
            let v = self
                .verifier
                .verify_request(req.clone())
                .expect("a valid request");
            let now = self.now;
            if let Some(h) = self.hosts[i].as_mut() {
                h.handle_request(v, now);
            }
        }
        for i in 0..4 {
            self.pump(i);
        }
    }

    /// Host `i` performs its actions; its effects go on the wire or into the record.
    fn pump(&mut self, i: usize) {
        let now = self.now;
        let Some(h) = self.hosts[i].as_mut() else {
            return;
        };
        loop {
            let held = h.snapshot_buffer_bytes();
            h.process(now);
            let held = held.max(h.snapshot_buffer_bytes());
            self.peak_snapshot_bytes[i] = self.peak_snapshot_bytes[i].max(held);
            while let Some(e) = h.poll_effect() {
                match e {
                    Effect::Installed { bytes, .. } => self.installed_bytes[i] = bytes,
                    Effect::Transmit { dest, bytes } => {
                        self.wire.push_back((i as u32, dest, bytes))
                    }
                    Effect::Executed { seq, .. } => self.executed[i].push(seq),
                    Effect::Halted { reason } => self.halted[i] = Some(reason),
                    Effect::Crashed => self.crashed[i] = true,
                    _ => {}
                }
            }
            if !h.wants_process() {
                break;
            }
        }
    }

    /// Delivers everything on the wire (and what it causes) in order.
    fn settle(&mut self) {
        let held = self.settle_holding(|_, _| false);
        assert!(held.is_empty());
    }

    /// Like [`Cluster::settle`], but keeps back the messages `hold` picks, returning
    /// them with their senders.
    fn settle_holding(
        &mut self,
        hold: impl Fn(&Dest, &bytes::Bytes) -> bool,
    ) -> Vec<(ReplicaId, bytes::Bytes)> {
        let mut held = Vec::new();
        while let Some((from, dest, bytes)) = self.wire.pop_front() {
            if hold(&dest, &bytes) {
                held.push((from, bytes));
                continue;
            }
            let to: Vec<usize> = match dest {
                Dest::Replica(r) => vec![r as usize],
                Dest::AllReplicas => (0..4).filter(|r| *r != from as usize).collect(),
                Dest::Client(_) => {
                    if let Ok(Message::Reply(r)) = envelope::decode(&bytes, &Limits::default()) {
                        self.replies
                            .push((from, r.body.request_id, r.body.result.clone()));
                        self.reply_bodies.push((from, r.body));
                    }
                    continue;
                }
            };
            for r in to {
                let msg = envelope::decode(&bytes, &Limits::default()).expect("decodes");
                let v = self.verifier.verify(from, msg).expect("verifies");
                let now = self.now;
                if let Some(h) = self.hosts[r].as_mut() {
                    h.handle_message(v, now);
                }
                self.pump(r);
            }
        }
        held
    }

    /// Time passes by `ms`: due timers fire everywhere, then the wire settles.
    fn advance(&mut self, ms: u64) {
        self.now = self.now.plus(Duration::from_millis(ms));
        for i in 0..4 {
            let now = self.now;
            if let Some(h) = self.hosts[i].as_mut() {
                if h.next_timeout().is_some_and(|t| t <= now) {
                    h.handle_timeout(now);
                }
            }
            self.pump(i);
        }
        self.settle();
    }

    fn heads(&self) -> Vec<Option<Head>> {
        self.hosts
            .iter()
            .map(|h| h.as_ref().map(|h| h.ledger().head()))
            .collect()
    }
}

#[test]
fn four_hosts_commit_and_agree() {
    let mut c = Cluster::new();
    for _ in 0..6 {
        c.submit();
        c.settle();
    }
    let heads = c.heads();
    assert!(
        heads[0].as_ref().is_some_and(|h| h.height >= 3),
        "{heads:?}"
    );
    assert!(heads.windows(2).all(|w| w[0] == w[1]), "{heads:?}");
    // every request got a reply from every validator
    for id in 1..=6 {
        let n = c.replies.iter().filter(|(_, rid, _)| *rid == id).count();
        assert_eq!(n, 4, "request {id}");
    }
    assert!(c.halted.iter().all(Option::is_none));
}

#[test]
fn a_failed_apply_is_retried_after_a_backoff_and_applied_once() {
    let mut c = Cluster::new();
    c.fail_next[1].set(2);
    c.submit();
    c.settle();
    assert!(c.executed[1].is_empty(), "host 1 waits for its retry");
    assert!(!c.executed[0].is_empty());
    let due = c.host(1).next_timeout().expect("a retry is due");
    assert_eq!(
        due.since(c.now),
        Duration::from_millis(40),
        "first retry after 40 ms"
    );
    c.advance(40);
    assert!(c.executed[1].is_empty(), "the second try failed too");
    c.advance(80);
    assert_eq!(
        c.executed[1], c.executed[0],
        "applied on the third try, once"
    );
    assert_eq!(c.applies[1].get(), 3);
    assert!(c.halted[1].is_none());
    let heads = c.heads();
    assert!(heads.windows(2).all(|w| w[0] == w[1]), "{heads:?}");
}

#[test]
fn a_ledger_that_keeps_failing_halts_its_validator_and_the_others_go_on() {
    let mut c = Cluster::new();
    c.fail_next[2].set(u32::MAX);
    c.submit();
    c.settle();
    c.advance(40);
    c.advance(80);
    let reason = c.halted[2].clone().expect("host 2 halted");
    assert!(reason.contains("3 times"), "{reason}");
    assert_eq!(c.applies[2].get(), 3);
    assert!(c.host(2).halted().is_some());
    assert_eq!(
        c.host(2).next_timeout(),
        None,
        "a halted host has no timers"
    );
    // the other three still form a quorum
    for _ in 0..3 {
        c.submit();
        c.settle();
    }
    assert!(c.executed[0].len() >= 2, "{:?}", c.executed);
    assert_eq!(c.executed[0], c.executed[1]);
    assert_eq!(c.executed[0], c.executed[3]);
}

#[test]
fn the_persists_of_several_inputs_share_one_log_write() {
    let mut c = Cluster::new();
    c.cfg.pipeline_depth = 4;
    for i in 0..4 {
        let (ledger, log, hooks) = c.stop(i);
        c.hosts[i] = Some(c.open(i as u32, ledger, log, hooks));
    }
    // the primary proposes four batches at once
    for _ in 0..4 {
        let req = c.request();
        let v = c.verifier.verify_request(req).expect("valid");
        let now = c.now;
        c.host(0).handle_request(v, now);
    }
    c.pump(0);
    // host 1 takes all four pre-prepares before one `process`: each is a persist and a
    // broadcast of its prepare
    let mut fed = 0;
    while let Some((from, dest, bytes)) = c.wire.pop_front() {
        let msg = envelope::decode(&bytes, &Limits::default()).expect("decodes");
        if matches!(dest, Dest::Replica(1) | Dest::AllReplicas)
            && matches!(msg, Message::PrePrepare { .. })
        {
            let v = c.verifier.verify(from, msg).expect("verifies");
            let now = c.now;
            c.host(1).handle_message(v, now);
            fed += 1;
        }
    }
    assert_eq!(fed, 4, "four pre-prepares");
    let before = c.appends[1].get();
    c.pump(1);
    assert_eq!(
        c.appends[1].get() - before,
        1,
        "one write for everything persisted in the pass"
    );
    let prepares = c
        .wire
        .iter()
        .filter(|(from, _, bytes)| {
            *from == 1
                && matches!(
                    envelope::decode(bytes, &Limits::default()),
                    Ok(Message::Prepare(_))
                )
        })
        .count();
    assert_eq!(prepares, 4, "every prepare went out, after the write");
}

/// Host 1 takes a whole round (the request, the pre-prepare, the prepares and the
/// commits) before one `process`: the prepare and commit it owes the others go out
/// before it writes the batch to its ledger.
#[test]
fn frames_queued_before_an_execution_are_handed_out_before_it() {
    let mut c = Cluster::new();
    let req = c.request();
    for i in 0..4 {
        let v = c.verifier.verify_request(req.clone()).expect("valid");
        let now = c.now;
        c.host(i).handle_request(v, now);
        if i != 1 {
            c.pump(i);
        }
    }
    // everyone but host 1 runs the round; host 1 only takes its inputs
    while let Some((from, dest, bytes)) = c.wire.pop_front() {
        let to: Vec<usize> = match dest {
            Dest::Replica(r) => vec![r as usize],
            Dest::AllReplicas => (0..4).filter(|r| *r != from as usize).collect(),
            Dest::Client(_) => continue,
        };
        for r in to {
            let msg = envelope::decode(&bytes, &Limits::default()).expect("decodes");
            let v = c.verifier.verify(from, msg).expect("verifies");
            let now = c.now;
            c.host(r).handle_message(v, now);
            if r != 1 {
                c.pump(r);
            }
        }
    }
    let applied = c.applies[1].get();
    let now = c.now;
    let h = c.host(1);
    h.process(now);
    assert!(h.wants_process(), "paused before the execution");
    assert_eq!(c.applies[1].get(), applied, "nothing applied yet");
    let h = c.host(1);
    let mut kinds = Vec::new();
    while let Some(e) = h.poll_effect() {
        if let Effect::Transmit { bytes, .. } = e {
            if let Ok(m) = envelope::decode(&bytes, &Limits::default()) {
                kinds.push(m.kind());
            }
        }
    }
    assert!(
        kinds.contains(&"prepare") && kinds.contains(&"commit"),
        "its prepare and commit are handed out first: {kinds:?}"
    );
    h.process(now);
    assert!(!h.wants_process());
    assert_eq!(c.applies[1].get(), applied + 1, "then the batch is applied");
}

/// Host 3 restarts on an empty disk and fetches a snapshot of several chunks. Its
/// fetch deadline passes just before the last chunk arrives, and the node feeds both
/// (the timer that asks another peer, and the last chunk) before one `process`: the
/// snapshot the replica approved must still be installed.
#[test]
fn an_approved_snapshot_is_installed_when_another_peer_was_asked_in_the_same_pass() {
    for process_between in [false, true] {
        let mut c = Cluster::new();
        let _ = c.stop(3);
        for _ in 0..24 {
            c.submit();
            c.settle();
        }
        let ledger = Flaky {
            inner: MemoryExecutor::genesis(&c.genesis),
            fail_next: c.fail_next[3].clone(),
            applies: c.applies[3].clone(),
            exports: c.exports[3].clone(),
            unreadable_windows: false,
        };
        let log = Counting {
            inner: MemoryLog::new(),
            appends: c.appends[3].clone(),
        };
        c.hosts[3] = Some(c.open(3, ledger, log, Hooks::Honest));
        c.pump(3);
        // run until the chunks for host 3 are on the wire, holding them back
        let is_chunk_to_3 = |dest: &Dest, bytes: &bytes::Bytes| {
            matches!(dest, Dest::Replica(3))
                && matches!(
                    envelope::decode(bytes, &Limits::default()),
                    Ok(Message::StateChunk { .. })
                )
        };
        let mut held = Vec::new();
        for _ in 0..100 {
            // new checkpoints tell host 3 how far behind it is
            c.submit();
            c.now = c.now.plus(Duration::from_millis(50));
            for i in 0..4 {
                let now = c.now;
                if let Some(h) = c.hosts[i].as_mut() {
                    if h.next_timeout().is_some_and(|t| t <= now) {
                        h.handle_timeout(now);
                    }
                }
                c.pump(i);
            }
            held = c.settle_holding(is_chunk_to_3);
            if !held.is_empty() {
                break;
            }
        }
        assert!(
            held.len() >= 2,
            "a snapshot of several chunks: {}",
            held.len()
        );
        let (last_from, last) = held.pop().expect("the last chunk");
        for (from, bytes) in held {
            let msg = envelope::decode(&bytes, &Limits::default()).expect("decodes");
            let v = c.verifier.verify(from, msg).expect("verifies");
            let now = c.now;
            c.host(3).handle_message(v, now);
            c.pump(3);
        }
        // the fetch deadline (4 x 100 ms) passes before the last chunk arrives
        c.now = c.now.plus(Duration::from_millis(450));
        let now = c.now;
        assert!(c.host(3).next_timeout().is_some_and(|t| t <= now));
        c.host(3).handle_timeout(now);
        if process_between {
            c.pump(3);
        }
        let msg = envelope::decode(&last, &Limits::default()).expect("decodes");
        let v = c.verifier.verify(last_from, msg).expect("verifies");
        c.host(3).handle_message(v, now);
        c.pump(3);
        assert_eq!(c.halted[3], None, "process between: {process_between}");
        if !process_between {
            // the same pass asked another peer and installed the approved snapshot
            let h = c.host(3);
            assert!(h.ledger().head().height > 0, "installed");
            assert_eq!(h.replica().last_executed(), h.ledger().head().height);
        }
        // and the cluster goes on together
        for _ in 0..20 {
            c.advance(100);
        }
        let heads = c.heads();
        assert!(heads.windows(2).all(|w| w[0] == w[1]), "{heads:?}");
    }
}

#[test]
fn a_crash_point_stops_the_host_with_the_checkpoint_on_disk() {
    let mut c = Cluster::new();
    let (ledger, log, _) = c.stop(3);
    c.hosts[3] = Some(c.open(3, ledger, log, Hooks::CrashAt(CrashAt(4))));
    for _ in 0..8 {
        c.submit();
        c.settle();
    }
    assert!(c.crashed[3], "host 3 crashed at its checkpoint");
    let h = c.host(3);
    assert!(h.crashed());
    assert_eq!(
        h.ledger().head().height,
        4,
        "the batch and the checkpoint are on disk"
    );
    assert_eq!(h.next_timeout(), None);
    assert!(h.poll_effect().is_none(), "nothing after Crashed");
    // the others went on past the checkpoint
    assert!(c.executed[0].len() > 4, "{:?}", c.executed[0]);
}

#[test]
fn a_restarted_host_recovers_from_its_disk_and_catches_up() {
    let mut c = Cluster::new();
    for _ in 0..3 {
        c.submit();
        c.settle();
    }
    let (ledger, log, hooks) = c.stop(2);
    let height = ledger.head().height;
    assert!(!log.inner.is_empty(), "host 2 persisted its promises");
    for _ in 0..8 {
        c.submit();
        c.settle();
    }
    c.hosts[2] = Some(c.open(2, ledger, log, hooks));
    assert_eq!(c.host(2).replica().last_executed(), height);
    for _ in 0..20 {
        c.advance(100);
    }
    let heads = c.heads();
    assert!(heads.windows(2).all(|w| w[0] == w[1]), "{heads:?}");
}

/// Every other validator asks host 0 a hundred times for the snapshot of its stable
/// checkpoint, all at once: the replica serves each of them once (per fetch interval),
/// and the host exports the snapshot once for all three.
#[test]
fn a_flood_of_snapshot_requests_costs_one_export() {
    let mut c = Cluster::new();
    for _ in 0..8 {
        c.submit();
        c.settle();
    }
    let seq = c.host(0).replica().stable_checkpoint();
    assert!(seq >= 4, "a stable checkpoint to serve: {seq}");
    let before = c.exports[0].get();
    for from in 1..4 {
        for _ in 0..100 {
            let v = c
                .verifier
                .verify(from, Message::StateRequest { seq })
                .expect("verifies");
            let now = c.now;
            c.host(0).handle_message(v, now);
            c.pump(0);
        }
    }
    let mut chunks = BTreeMap::<ReplicaId, u32>::new();
    let mut total = 0;
    for (from, dest, bytes) in &c.wire {
        if let (0, Dest::Replica(to), Ok(Message::StateChunk { total: t, .. })) =
            (*from, dest, envelope::decode(bytes, &Limits::default()))
        {
            *chunks.entry(*to).or_default() += 1;
            total = t;
        }
    }
    assert!(total >= 2, "a snapshot of several chunks: {total}");
    assert_eq!(
        chunks,
        BTreeMap::from([(1, total), (2, total), (3, total)]),
        "each asker got the snapshot once"
    );
    assert_eq!(
        c.exports[0].get() - before,
        1,
        "one export served all three askers"
    );
    // the unsolicited chunks are refused where they land, and the cluster goes on
    c.settle();
    for _ in 0..4 {
        c.submit();
        c.settle();
    }
    let heads = c.heads();
    assert!(heads.windows(2).all(|w| w[0] == w[1]), "{heads:?}");
    assert!(c.halted.iter().all(Option::is_none));
}

/// Host 3 restarts on an empty disk and fetches a snapshot of many chunks: neither it
/// nor the host serving it ever holds the snapshot whole. The fetching host hands each
/// chunk to its ledger as it arrives; the serving host reads one chunk at a time.
#[test]
fn a_snapshot_in_transfer_is_never_held_whole() {
    let mut c = Cluster::with(1500, 4 << 10);
    let _ = c.stop(3);
    for _ in 0..12 {
        c.submit();
        c.settle();
    }
    let ledger = Flaky {
        inner: MemoryExecutor::genesis(&c.genesis),
        fail_next: c.fail_next[3].clone(),
        applies: c.applies[3].clone(),
        exports: c.exports[3].clone(),
        unreadable_windows: false,
    };
    let log = Counting {
        inner: MemoryLog::new(),
        appends: c.appends[3].clone(),
    };
    c.hosts[3] = Some(c.open(3, ledger, log, Hooks::Honest));
    c.pump(3);
    for _ in 0..50 {
        if c.host(3).ledger().head().height > 0 {
            break;
        }
        c.submit();
        c.advance(100);
    }
    assert!(
        c.host(3).ledger().head().height >= 4,
        "host 3 installed a snapshot"
    );
    let snapshot = c.installed_bytes[3];
    const BOUND: usize = 16 << 10;
    assert!(snapshot >= 4 * BOUND, "a snapshot of {snapshot} bytes");
    for (i, peak) in c.peak_snapshot_bytes.iter().enumerate() {
        assert!(
            *peak <= BOUND,
            "host {i} held {peak} bytes for a snapshot of {snapshot}"
        );
    }
    for _ in 0..10 {
        c.advance(100);
    }
    let heads = c.heads();
    assert!(heads.windows(2).all(|w| w[0] == w[1]), "{heads:?}");
    assert!(c.halted.iter().all(Option::is_none));
}

/// Signs request `request_id` of the cluster's client (as `Cluster::request` does).
fn old_request(c: &Cluster, request_id: u64) -> SignedRequest {
    let op = Operation {
        transfers: vec![Transfer {
            to: c.keys[0].public(),
            amount: 1,
        }],
    }
    .encode();
    let body = Request {
        client: c.client.public(),
        request_id,
        op,
    };
    Signed::sign(body, &c.client)
}

/// Backups 2 and 3 restart after requests 1..=3 executed. A client (or a traitor
/// relaying what it saw in batches) replays request 2 to both: had their tables
/// forgotten that it executed, each would watch it and blame the honest primary, which
/// leaves it out, and the two view changes would replace it.
#[test]
fn restarted_backup_hosts_know_which_requests_executed() {
    let mut c = Cluster::new();
    for _ in 0..3 {
        c.submit();
        c.settle();
    }
    for i in [2, 3] {
        let (ledger, log, hooks) = c.stop(i);
        c.hosts[i] = Some(c.open(i as ReplicaId, ledger, log, hooks));
        c.pump(i);
    }
    c.settle();
    let old = old_request(&c, 2);
    for _ in 0..30 {
        c.replay(2, 1, &old);
        c.replay(3, 1, &old);
        for i in [2, 3] {
            assert_eq!(c.host(i).replica().unordered_requests(), 0, "host {i}");
            assert_eq!(c.host(i).replica().waiting_requests(), 0, "host {i}");
        }
        c.advance(200);
    }
    let views: Vec<u64> = (0..4).map(|i| c.host(i).replica().view()).collect();
    assert_eq!(views, vec![0; 4], "the honest primary was replaced");
    // a new request is still watched (the table is exact, not merely silent)
    let fresh = c.request();
    c.replay(2, 1, &fresh);
    assert_eq!(c.host(2).replica().unordered_requests(), 1);
    c.settle();
    let heads = c.heads();
    assert!(heads.windows(2).all(|w| w[0] == w[1]), "{heads:?}");
    assert_eq!(heads[0].as_ref().map(|h| h.height), Some(4));
}

/// Host 3 comes back on an empty disk and installs a snapshot: what the snapshot
/// executed is not taken for new.
#[test]
fn a_backup_host_that_installed_a_snapshot_knows_which_requests_executed() {
    let mut c = Cluster::new();
    let _ = c.stop(3);
    for _ in 0..12 {
        c.submit();
        c.settle();
    }
    let ledger = Flaky {
        inner: MemoryExecutor::genesis(&c.genesis),
        fail_next: c.fail_next[3].clone(),
        applies: c.applies[3].clone(),
        exports: c.exports[3].clone(),
        unreadable_windows: false,
    };
    let log = Counting {
        inner: MemoryLog::new(),
        appends: c.appends[3].clone(),
    };
    c.hosts[3] = Some(c.open(3, ledger, log, Hooks::Honest));
    c.pump(3);
    for _ in 0..50 {
        if c.host(3).ledger().head().height > 0 {
            break;
        }
        c.submit();
        c.advance(100);
    }
    let installed = c.host(3).ledger().head().height;
    assert!(installed >= 4, "host 3 installed a snapshot: {installed}");
    for _ in 0..10 {
        c.advance(100);
    }
    assert_eq!(c.halted[3], None);
    let old = old_request(&c, 1);
    for _ in 0..30 {
        c.replay(3, 1, &old);
        assert_eq!(c.host(3).replica().unordered_requests(), 0);
        c.advance(200);
    }
    // one backup alone cannot change the view: it would have sent a view change
    assert_eq!(c.host(3).replica().view(), 0, "host 3 blamed the primary");
    assert_eq!(
        c.host(3).replica().status(),
        pbft_protocol::Status::Normal,
        "host 3 blamed the primary"
    );
    let fresh = c.request();
    c.replay(3, 1, &fresh);
    assert_eq!(c.host(3).replica().unordered_requests(), 1);
}

/// A ledger whose client windows cannot be read leaves the host nothing exact to hand
/// the replica: a restarted validator does not start, and one that installed a
/// snapshot halts, rather than guess.
#[test]
fn unreadable_client_windows_stop_the_validator() {
    let mut c = Cluster::new();
    for _ in 0..3 {
        c.submit();
        c.settle();
    }
    let (mut ledger, log, hooks) = c.stop(2);
    ledger.unreadable_windows = true;
    let opened = Host::open(
        c.cfg.clone(),
        2,
        c.keys[2].clone(),
        ledger,
        log,
        hooks,
        HostOptions::default(),
        c.now,
    );
    match opened {
        Err(HostError::Storage(e)) => assert!(e.to_string().contains("injected"), "{e}"),
        Err(e) => panic!("another error: {e}"),
        Ok(_) => panic!("a restarted host opened without its client windows"),
    }
    // host 3 comes back on an empty disk (nothing to read at open) and installs a
    // snapshot whose windows it cannot read
    let mut c = Cluster::new();
    let _ = c.stop(3);
    for _ in 0..12 {
        c.submit();
        c.settle();
    }
    let ledger = Flaky {
        inner: MemoryExecutor::genesis(&c.genesis),
        fail_next: c.fail_next[3].clone(),
        applies: c.applies[3].clone(),
        exports: c.exports[3].clone(),
        unreadable_windows: true,
    };
    let log = Counting {
        inner: MemoryLog::new(),
        appends: c.appends[3].clone(),
    };
    c.hosts[3] = Some(c.open(3, ledger, log, Hooks::Honest));
    c.pump(3);
    for _ in 0..50 {
        if c.halted[3].is_some() {
            break;
        }
        c.submit();
        c.advance(100);
    }
    let reason = c.halted[3].clone().expect("host 3 halted");
    assert!(reason.contains("client windows"), "{reason}");
    assert!(c.host(3).ledger().head().height > 0, "after the install");
}

/// Every validator restarts (an upgrade, a power cut) before the client got its
/// replies to request 3. The restarted tables know request 3 executed, so it is never
/// ordered again; the client's retransmission is answered from the ledger's receipt,
/// with the answer the validators gave when it executed.
#[test]
fn after_every_validator_restarted_an_executed_request_is_answered_from_the_ledger() {
    let mut c = Cluster::new();
    for _ in 0..3 {
        c.submit();
        c.settle();
    }
    let original: Vec<(ReplicaId, Vec<u8>)> = c
        .replies
        .iter()
        .filter(|(_, rid, _)| *rid == 3)
        .map(|(from, _, result)| (*from, result.clone()))
        .collect();
    assert_eq!(original.len(), 4, "every validator answered request 3 once");
    // the replies are lost with the crash
    c.replies.clear();
    for i in 0..4 {
        let (ledger, log, hooks) = c.stop(i);
        c.hosts[i] = Some(c.open(i as ReplicaId, ledger, log, hooks));
        c.pump(i);
    }
    c.settle();
    let heights: Vec<u64> = (0..4).map(|i| c.host(i).ledger().head().height).collect();
    let retransmission = old_request(&c, 3);
    for i in 0..4 {
        let v = c
            .verifier
            .verify_request(retransmission.clone())
            .expect("a valid request");
        let now = c.now;
        c.host(i).handle_request(v, now);
        c.pump(i);
    }
    c.settle();
    let mut answered: Vec<(ReplicaId, Vec<u8>)> = c
        .replies
        .iter()
        .filter(|(_, rid, _)| *rid == 3)
        .map(|(from, _, result)| (*from, result.clone()))
        .collect();
    answered.sort();
    assert_eq!(
        answered, original,
        "the client gets the original answers again"
    );
    let after: Vec<u64> = (0..4).map(|i| c.host(i).ledger().head().height).collect();
    assert_eq!(after, heights, "nothing was ordered again");
}

/// Signs request `request_id` of the cluster's client paying `amount` (the cluster's
/// own requests pay 1).
fn request_paying(c: &Cluster, request_id: u64, amount: u64) -> SignedRequest {
    let op = Operation {
        transfers: vec![Transfer {
            to: c.keys[0].public(),
            amount,
        }],
    }
    .encode();
    let body = Request {
        client: c.client.public(),
        request_id,
        op,
    };
    Signed::sign(body, &c.client)
}

/// The client signs request ids 2 and 3 again with another operation (it lost count).
/// Every validator refuses them, in replies bound to the new requests: the one that
/// answers from its reply cache, and after a restart of every validator the ones that
/// answer from the ledger. None sends the receipt of the operation that ran.
#[test]
fn a_request_id_reused_for_another_operation_is_refused_by_every_validator() {
    let mut c = Cluster::new();
    for _ in 0..3 {
        c.submit();
        c.settle();
    }
    let ran: Vec<Receipt> = c
        .reply_bodies
        .iter()
        .filter(|(_, r)| r.request_id == 2)
        .map(|(_, r)| Receipt::decode(&r.result).expect("a receipt"))
        .collect();
    assert_eq!(ran.len(), 4);
    let ran = ran[0].clone();
    let heights: Vec<u64> = (0..4).map(|i| c.host(i).ledger().head().height).collect();
    let check = |c: &mut Cluster, rid: u64| {
        c.reply_bodies.clear();
        let reused = request_paying(c, rid, 7);
        for i in 0..4 {
            let v = c
                .verifier
                .verify_request(reused.clone())
                .expect("a valid request");
            let now = c.now;
            c.host(i).handle_request(v, now);
            c.pump(i);
        }
        c.settle();
        let answers: Vec<(ReplicaId, Reply)> = c
            .reply_bodies
            .iter()
            .filter(|(_, r)| r.request_id == rid)
            .cloned()
            .collect();
        assert_eq!(answers.len(), 4, "request {rid}: every validator answers");
        for (from, r) in answers {
            let receipt = Receipt::decode(&r.result).expect("a receipt");
            assert_ne!(
                receipt, ran,
                "validator {from} answered the reused request {rid} with the receipt of the \
                 operation that ran"
            );
            assert_eq!(
                receipt,
                Receipt::Failed {
                    reason: FailReason::ReusedId
                }
            );
            assert_eq!(
                r.request,
                reused.body.digest(),
                "validator {from}'s refusal binds the reused request"
            );
        }
    };
    // request 2's reply is still cached everywhere
    check(&mut c, 2);
    // every validator restarts: request 3 is answered from the ledger
    for i in 0..4 {
        let (ledger, log, hooks) = c.stop(i);
        c.hosts[i] = Some(c.open(i as ReplicaId, ledger, log, hooks));
        c.pump(i);
    }
    c.settle();
    check(&mut c, 3);
    let after: Vec<u64> = (0..4).map(|i| c.host(i).ledger().head().height).collect();
    assert_eq!(after, heights, "nothing was ordered");
}
