//! Proves, on a deterministic in-memory cluster of four real replicas (FIFO network,
//! every message through the full signature-checking `Verifier`, a trivial executor),
//! docs/protocol.md's normal case, checkpoints, view change and durability rules end to end:
//! - a request sent to the primary commits and executes at seq 1 everywhere, with one
//!   reply per replica;
//! - after 3K sequence numbers the stable checkpoint reaches at least 2K and the log is
//!   garbage-collected;
//! - a silent primary is replaced: the backups' timers fire, they reach view 1 and the
//!   request executes in view 1;
//! - a replayed request is answered from the reply cache and never executes again;
//! - requests a traitor sends to the backups only reach the primary through them, and
//!   never get the honest primary replaced;
//! - a replica rebuilt from its write-ahead log mid-run keeps up with the cluster and
//!   never sends a prepare that contradicts one it sent before the crash.

mod common;

use common::*;
use pbft_crypto::Digest;
use pbft_protocol::verify::Verifier;
use pbft_protocol::{
    Action, Batch, ClientRecords, Config, Evidence, ExecutedRequest, ExecutionResult, Instant,
    Message, Replica, ReplicaId, Seq, Signed, SignedReply, SignedRequest, Status, View, WalRecord,
};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// One executed batch as seen by a replica's executor.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Executed {
    seq: Seq,
    view: View,
    digest: Digest,
    batch: Batch,
}

struct Cluster {
    cfg: Config,
    verifier: Verifier,
    replicas: Vec<Replica>,
    now: Instant,
    net: VecDeque<(ReplicaId, ReplicaId, Message)>,
    /// Replicas whose outgoing messages are lost.
    mute: BTreeSet<ReplicaId>,
    /// Messages for which this returns true are lost on delivery.
    lose: Option<fn(ReplicaId, ReplicaId, &Message) -> bool>,
    /// Persisted records, per replica.
    wal: Vec<Vec<WalRecord>>,
    executed: Vec<Vec<Executed>>,
    /// Every batch any replica executed, by sequence number (agreement makes it one
    /// history): the ledger a restarted replica, or a snapshot, reads client records from.
    history: BTreeMap<Seq, Batch>,
    replies: Vec<(ReplicaId, SignedReply)>,
    /// Every prepare each replica ever broadcast: (view, seq) -> digest.
    prepares_sent: Vec<BTreeMap<(View, Seq), Digest>>,
    evidence: Vec<Vec<Evidence>>,
    halts: Vec<String>,
}

impl Cluster {
    fn new(cfg: Config) -> Cluster {
        let replicas = (0..N)
            .map(|i| Replica::new(cfg.clone(), i, replica_key(i).clone()).expect("replica"))
            .collect();
        Cluster {
            verifier: Verifier::new(cfg.validators.clone()),
            cfg,
            replicas,
            now: Instant::ZERO,
            net: VecDeque::new(),
            mute: BTreeSet::new(),
            lose: None,
            wal: vec![Vec::new(); N as usize],
            executed: vec![Vec::new(); N as usize],
            history: BTreeMap::new(),
            replies: Vec::new(),
            prepares_sent: vec![BTreeMap::new(); N as usize],
            evidence: vec![Vec::new(); N as usize],
            halts: Vec::new(),
        }
    }

    fn default_cluster() -> Cluster {
        Cluster::new(Config::new(pubkeys()))
    }

    fn last_executed(&self, i: ReplicaId) -> Seq {
        self.executed[i as usize].last().map_or(0, |e| e.seq)
    }

    /// The client records of the ledger after `seq` (what a driver reads from it).
    fn records_at(&self, seq: Seq) -> ClientRecords {
        assert!(
            (1..=seq).all(|s| self.history.contains_key(&s)),
            "a batch up to {seq} that no replica executed"
        );
        ledger_records(
            self.history
                .range(..=seq)
                .flat_map(|(_, b)| b.requests.iter()),
        )
    }

    /// Performs every queued action of replica `i`.
    fn drain(&mut self, i: ReplicaId) {
        let iu = i as usize;
        while let Some(a) = self.replicas[iu].poll_action() {
            match a {
                Action::Send { to, msg } => {
                    assert_ne!(to, i, "a replica sent a message to itself");
                    if !self.mute.contains(&i) {
                        self.net.push_back((i, to, msg));
                    }
                }
                Action::Broadcast { msg } => {
                    if let Message::Prepare(p) = &msg {
                        assert_eq!(p.body.replica, i);
                        let prev =
                            self.prepares_sent[iu].insert((p.body.view, p.body.seq), p.body.digest);
                        assert!(
                            prev.is_none_or(|d| d == p.body.digest),
                            "replica {i} prepared two digests at {:?}",
                            (p.body.view, p.body.seq)
                        );
                    }
                    if !self.mute.contains(&i) {
                        for to in (0..N).filter(|t| *t != i) {
                            self.net.push_back((i, to, msg.clone()));
                        }
                    }
                }
                Action::Reply { client, reply } => {
                    assert_eq!(client, reply.body.client);
                    self.replies.push((i, reply));
                }
                Action::Persist(rec) => self.wal[iu].push(rec),
                Action::Execute {
                    seq,
                    view,
                    digest,
                    batch,
                } => {
                    assert_eq!(seq, self.last_executed(i) + 1, "replica {i} out of order");
                    assert_eq!(batch.digest(), digest);
                    let replies = batch
                        .requests
                        .iter()
                        .map(|r| ExecutedRequest {
                            client: r.body.client,
                            request_id: r.body.request_id,
                            request: r.body.digest(),
                            result: r.body.request_id.to_le_bytes().to_vec(),
                        })
                        .collect();
                    let state_digest = seq
                        .is_multiple_of(self.cfg.checkpoint_interval)
                        .then(|| state_digest(seq));
                    self.history.insert(seq, batch.clone());
                    self.executed[iu].push(Executed {
                        seq,
                        view,
                        digest,
                        batch,
                    });
                    let now = self.now;
                    self.replicas[iu].on_executed(
                        seq,
                        ExecutionResult {
                            replies,
                            state_digest,
                        },
                        now,
                    );
                }
                Action::StableCheckpoint { .. } => {}
                Action::FetchState { seq, peer, .. } => {
                    // every honest executor's state at `seq` has the same digest
                    let now = self.now;
                    self.replicas[iu].on_state_offer(peer, seq, state_digest(seq), now);
                }
                Action::InstallState { seq, digest } => {
                    // the executor's history is replaced by the snapshot
                    self.executed[iu].retain(|e| e.seq <= seq);
                    if self.last_executed(i) < seq {
                        self.executed[iu].push(Executed {
                            seq,
                            view: u64::MAX,
                            digest,
                            batch: Batch::null(),
                        });
                    }
                    let now = self.now;
                    let records = self.records_at(seq);
                    self.replicas[iu].on_state_transferred(seq, digest, records, now);
                }
                Action::ServeState { .. } | Action::ReplyFromLedger { .. } => {}
                Action::Evidence { evidence, .. } => self.evidence[iu].push(*evidence),
                Action::Halt { reason } => self.halts.push(format!("replica {i}: {reason}")),
            }
        }
    }

    fn submit_to(&mut self, i: ReplicaId, req: &SignedRequest) {
        let v = self
            .verifier
            .verify_request(req.clone())
            .expect("client sig");
        let now = self.now;
        self.replicas[i as usize].on_request(v, now);
        self.drain(i);
    }

    /// Delivers one message; false if the network is empty.
    fn step(&mut self) -> bool {
        let Some((from, to, msg)) = self.net.pop_front() else {
            return false;
        };
        if self.lose.is_some_and(|lose| lose(from, to, &msg)) {
            return true;
        }
        let v = self
            .verifier
            .verify(from, msg)
            .unwrap_or_else(|e| panic!("an honest message from {from} was rejected: {e}"));
        let now = self.now;
        self.replicas[to as usize].on_message(v, now);
        self.drain(to);
        true
    }

    /// Advances time to the earliest timer and fires every timer due.
    fn advance(&mut self) {
        let next = self
            .replicas
            .iter()
            .filter_map(|r| r.next_timeout())
            .min()
            .expect("some timer is always armed");
        self.now = self.now.max(next);
        for i in 0..N {
            if self.replicas[i as usize]
                .next_timeout()
                .is_some_and(|t| t <= self.now)
            {
                let now = self.now;
                self.replicas[i as usize].on_timeout(now);
                self.drain(i);
            }
        }
    }

    /// Runs until `done` holds, delivering every message before advancing time.
    /// Panics if `done` does not hold within `max_ms` of simulated time.
    fn run_until(&mut self, max_ms: u64, done: impl Fn(&Cluster) -> bool) {
        let deadline = self.now.plus(std::time::Duration::from_millis(max_ms));
        let mut steps = 0u64;
        while !done(self) {
            assert!(self.halts.is_empty(), "halted: {:?}", self.halts);
            if !self.step() {
                assert!(
                    self.now < deadline,
                    "condition not reached by {} ms",
                    self.now.as_millis()
                );
                self.advance();
            }
            steps += 1;
            assert!(steps < 2_000_000, "livelock");
        }
        assert!(self.halts.is_empty(), "halted: {:?}", self.halts);
    }

    fn all_executed(&self, seq: Seq, who: &[ReplicaId]) -> bool {
        who.iter().all(|i| self.last_executed(*i) >= seq)
    }

    /// Every pair of replicas executed the same batch at every common sequence number.
    fn assert_agreement(&self) {
        for a in 0..N as usize {
            for b in a + 1..N as usize {
                let ea: BTreeMap<Seq, Digest> = self.executed[a]
                    .iter()
                    .filter(|e| e.view != u64::MAX)
                    .map(|e| (e.seq, e.digest))
                    .collect();
                for e in self.executed[b].iter().filter(|e| e.view != u64::MAX) {
                    if let Some(d) = ea.get(&e.seq) {
                        assert_eq!(*d, e.digest, "replicas {a} and {b} diverge at {}", e.seq);
                    }
                }
            }
        }
    }
}

fn req(rid: u64) -> SignedRequest {
    request(0, rid, format!("op {rid}").into_bytes())
}

const ALL: [ReplicaId; 4] = [0, 1, 2, 3];

#[test]
fn one_request_commits_and_executes_at_seq_1_everywhere() {
    let mut c = Cluster::default_cluster();
    let r = req(1);
    c.submit_to(0, &r);
    c.run_until(1_000, |c| c.all_executed(1, &ALL));
    for i in 0..N as usize {
        assert_eq!(c.executed[i].len(), 1, "replica {i}");
        let e = &c.executed[i][0];
        assert_eq!((e.seq, e.view), (1, 0));
        assert_eq!(e.batch.requests, vec![r.clone()]);
        assert_eq!(c.replicas[i].last_executed(), 1);
        assert_eq!(c.replicas[i].view(), 0);
        assert_eq!(c.replicas[i].status(), Status::Normal);
    }
    c.assert_agreement();
    assert_eq!(c.replies.len(), 4, "{:?}", c.replies);
    let from: BTreeSet<ReplicaId> = c.replies.iter().map(|(i, _)| *i).collect();
    assert_eq!(from.len(), 4);
    for (i, rep) in &c.replies {
        assert_eq!(rep.body.replica, *i);
        assert_eq!(rep.body.seq, 1);
        assert_eq!(rep.body.request_id, 1);
        assert_eq!(rep.body.client, client_key(0).public());
        assert_eq!(rep.body.result, 1u64.to_le_bytes().to_vec());
        rep.verify(&replica_key(*i).public())
            .expect("a reply verifies under its replica's key");
        assert!(rep.verify(&replica_key((*i + 1) % N).public()).is_err());
    }
    assert!(c.evidence.iter().all(|e| e.is_empty()), "{:?}", c.evidence);
    // nothing more happens: the cluster stays idle and nothing executes again
    let t = c.now.plus(std::time::Duration::from_secs(3));
    c.run_until(5_000, |c| c.now >= t);
    assert!(c.executed.iter().all(|e| e.len() == 1));
    assert_eq!(c.replies.len(), 4);
}

#[test]
fn checkpoints_become_stable_and_the_log_is_collected() {
    let mut c = Cluster::default_cluster();
    let k = c.cfg.checkpoint_interval;
    for rid in 1..=3 * k {
        c.submit_to(0, &req(rid));
        // one request at a time, so that every request gets its own sequence number
        c.run_until(2_000, |c| c.all_executed(rid, &ALL));
    }
    c.run_until(2_000, |c| {
        c.replicas.iter().all(|r| r.stable_checkpoint() >= 2 * k)
    });
    for i in 0..N as usize {
        let r = &c.replicas[i];
        assert_eq!(r.last_executed(), 3 * k);
        assert!(r.stable_checkpoint() >= 2 * k, "replica {i}");
        assert!(
            (r.log_len() as u64) < r.last_executed(),
            "replica {i}: log {} for {} executed",
            r.log_len(),
            r.last_executed()
        );
        assert!(
            r.log_len() as u64 <= r.last_executed() - r.stable_checkpoint(),
            "replica {i} keeps slots at or below its stable checkpoint"
        );
        // every request executed exactly once, in order
        let rids: Vec<u64> = c.executed[i]
            .iter()
            .flat_map(|e| e.batch.requests.iter().map(|r| r.body.request_id))
            .collect();
        assert_eq!(rids, (1..=3 * k).collect::<Vec<_>>());
    }
    c.assert_agreement();
    // the persisted stable checkpoint proofs are q matching checkpoints
    for i in 0..N as usize {
        let proofs: Vec<&Vec<Signed<pbft_protocol::Checkpoint>>> = c.wal[i]
            .iter()
            .filter_map(|r| match r {
                WalRecord::StableCheckpoint(p) => Some(p),
                _ => None,
            })
            .collect();
        assert!(proofs.len() >= 2, "replica {i} persisted {}", proofs.len());
        for p in proofs {
            let seqs: BTreeSet<Seq> = p.iter().map(|c| c.body.seq).collect();
            let senders: BTreeSet<ReplicaId> = p.iter().map(|c| c.body.replica).collect();
            assert_eq!(seqs.len(), 1);
            assert!(senders.len() >= 3);
            assert!(p
                .iter()
                .all(|x| x.body.state_digest == state_digest(x.body.seq)));
        }
    }
}

#[test]
fn silent_primary_is_replaced_and_the_request_executes_in_view_1() {
    let mut c = Cluster::default_cluster();
    c.mute.insert(0);
    let r = req(1);
    // the client times out on the primary and sends to every validator
    for i in 0..N {
        c.submit_to(i, &r);
    }
    assert!(c.replicas[1..].iter().all(|r| r.next_timeout().is_some()));
    c.run_until(5_000, |c| c.all_executed(1, &[1, 2, 3]));
    for i in 1..N as usize {
        assert_eq!(c.replicas[i].view(), 1, "replica {i}");
        assert_eq!(c.replicas[i].status(), Status::Normal);
        assert_eq!(c.executed[i].len(), 1);
        let e = &c.executed[i][0];
        assert_eq!((e.seq, e.view), (1, 1), "replica {i}");
        assert_eq!(e.batch.requests, vec![r.clone()]);
        // it got there by a view change of its own
        assert!(c.wal[i].iter().any(|w| matches!(
            w,
            WalRecord::ViewChange(vc) if vc.body.new_view == 1
        )));
    }
    assert!(c.replicas[1].is_primary());
    // the primary never ordered the request: the backups' ordering deadline (T/2
    // after they learnt it) started the view change, not the request timer (T)
    assert!(c.now >= Instant::ZERO.plus(c.cfg.view_timeout / 2));
    c.assert_agreement();
    // f+1 = 2 matching replies reach the client from the new view
    let good: BTreeSet<ReplicaId> = c
        .replies
        .iter()
        .filter(|(_, r)| r.body.request_id == 1 && r.body.seq == 1)
        .map(|(i, _)| *i)
        .collect();
    assert!(good.len() >= 2, "{good:?}");
}

/// Requests a traitor (replica 3) injects to the backups only, never to the primary,
/// while a client keeps the primary busy: the backups forward each to the primary at
/// once, so the primary orders it in time and no replica ever starts a view change
/// against it. (Were the backups to wait for a stalled tick to forward, none would
/// come while batches execute, and their timers would blame the primary for requests
/// it never saw.)
#[test]
fn requests_injected_to_the_backups_only_do_not_replace_an_honest_primary() {
    let mut c = Cluster::default_cluster();
    let step = std::time::Duration::from_millis(25);
    let rounds = 80u64; // 2 s: five view timeouts
    for i in 1..=rounds {
        // the client sends to the primary; the traitor sends a fresh request of
        // another client to backups 1 and 2 only
        c.submit_to(0, &req(i));
        let injected = request(1, i, format!("injected {i}").into_bytes());
        for to in [1, 2] {
            c.net.push_back((3, to, Message::Request(injected.clone())));
        }
        let until = c.now.plus(step);
        c.run_until(1_000, |c| c.net.is_empty());
        while c
            .replicas
            .iter()
            .filter_map(|r| r.next_timeout())
            .min()
            .is_some_and(|t| t <= until)
        {
            c.advance();
            c.run_until(1_000, |c| c.net.is_empty());
        }
        c.now = until;
    }
    c.run_until(1_000, |c| c.net.is_empty());
    for i in 0..N as usize {
        assert_eq!(c.replicas[i].view(), 0, "replica {i}");
        assert_eq!(c.replicas[i].status(), Status::Normal, "replica {i}");
        assert!(
            !c.wal[i]
                .iter()
                .any(|w| matches!(w, WalRecord::ViewChange(_))),
            "replica {i} started a view change"
        );
        // every request, the client's and the injected ones, executed
        let executed: usize = c.executed[i].iter().map(|e| e.batch.requests.len()).sum();
        assert_eq!(executed as u64, 2 * rounds, "replica {i}");
    }
    c.assert_agreement();
}

#[test]
fn replayed_request_gets_the_cached_reply_and_no_new_execution() {
    let mut c = Cluster::default_cluster();
    let r = req(1);
    c.submit_to(0, &r);
    c.run_until(1_000, |c| c.all_executed(1, &ALL));
    let replies_before = c.replies.len();
    for i in 0..N {
        c.submit_to(i, &r);
    }
    // each replica answered from its cache at once
    let new: Vec<&(ReplicaId, SignedReply)> = c.replies[replies_before..].iter().collect();
    assert_eq!(new.len(), 4, "{new:?}");
    for (i, rep) in &new {
        let first = c.replies[..replies_before]
            .iter()
            .find(|(j, _)| j == i)
            .expect("first reply");
        assert_eq!(&first.1, rep, "replica {i} cached reply differs");
    }
    let t = c.now.plus(std::time::Duration::from_secs(3));
    c.run_until(5_000, |c| c.now >= t);
    for i in 0..N as usize {
        assert_eq!(c.executed[i].len(), 1, "replica {i} executed again");
    }
    // a fresh request still goes through, at seq 2
    c.submit_to(0, &req(2));
    c.run_until(1_000, |c| c.all_executed(2, &ALL));
    assert!(c.executed.iter().all(|e| e.len() == 2));
    c.assert_agreement();
}

/// Delivers messages one at a time until replica 2 has persisted an accepted
/// pre-prepare it has not executed yet.
fn run_until_replica_2_has_an_open_slot(c: &mut Cluster) -> Seq {
    loop {
        let open = c.wal[2].iter().rev().find_map(|w| match w {
            WalRecord::Accepted { pre_prepare, .. }
                if pre_prepare.body.seq > c.last_executed(2) =>
            {
                Some(pre_prepare.body.seq)
            }
            _ => None,
        });
        if let Some(s) = open {
            return s;
        }
        if !c.step() {
            c.advance();
        }
    }
}

#[test]
fn replica_restored_from_its_wal_continues_without_contradicting_itself() {
    let mut c = Cluster::default_cluster();
    for rid in 1..=5 {
        c.submit_to(0, &req(rid));
        c.run_until(2_000, |c| c.all_executed(rid, &ALL));
    }
    c.submit_to(0, &req(6));
    let open = run_until_replica_2_has_an_open_slot(&mut c);
    let before: BTreeMap<(View, Seq), Digest> = c.prepares_sent[2].clone();
    assert!(before.contains_key(&(0, open)));

    // crash: messages in flight to replica 2 are lost; restart from its WAL
    c.net.retain(|(_, to, _)| *to != 2);
    let last = c.last_executed(2);
    let wal = c.wal[2].clone();
    let now = c.now;
    let records = c.records_at(last);
    c.replicas[2] = Replica::restore(
        c.cfg.clone(),
        2,
        replica_key(2).clone(),
        &wal,
        last,
        records.clone(),
        now,
    )
    .unwrap();
    c.drain(2);
    assert_eq!(c.replicas[2].last_executed(), last);
    assert_eq!(c.replicas[2].view(), 0);

    // an equivocating primary re-proposes another batch at the open slot: the restored
    // replica must not prepare it, and holds proof of the equivocation
    let other = Batch {
        requests: vec![req(99)],
    };
    let v = c
        .verifier
        .verify(0, pre_prepare_msg(0, open, other.clone()))
        .unwrap();
    let mut probe = Replica::restore(
        c.cfg.clone(),
        2,
        replica_key(2).clone(),
        &wal,
        last,
        records,
        now,
    )
    .unwrap();
    probe.on_message(v, now);
    let mut probe_prepares = Vec::new();
    while let Some(a) = probe.poll_action() {
        if let Action::Broadcast {
            msg: Message::Prepare(p),
        } = a
        {
            probe_prepares.push(p.body);
        }
    }
    assert!(
        probe_prepares
            .iter()
            .all(|p| before.get(&(p.view, p.seq)).is_none_or(|d| *d == p.digest)),
        "restored replica prepared a conflicting digest: {probe_prepares:?}"
    );
    assert!(
        matches!(
            probe.evidence().get(&0),
            Some(Evidence::Equivocation { .. })
        ),
        "no equivocation evidence: {:?}",
        probe.evidence()
    );

    // the cluster, with the restored replica, finishes the open request and more
    c.run_until(3_000, |c| c.all_executed(6, &ALL));
    for rid in 7..=10 {
        c.submit_to(c.replicas[1].view() as u32 % N, &req(rid));
        c.run_until(3_000, |c| c.all_executed(rid, &ALL));
    }
    c.assert_agreement();
    // `drain` asserted on every broadcast that no replica, across the restart, ever
    // prepared two digests for one (view, seq); check the pre-crash ones survived
    for (k, d) in &before {
        assert_eq!(c.prepares_sent[2].get(k), Some(d));
    }
    for i in 0..N as usize {
        let rids: Vec<u64> = c.executed[i]
            .iter()
            .flat_map(|e| e.batch.requests.iter().map(|r| r.body.request_id))
            .collect();
        assert_eq!(rids, (1..=10).collect::<Vec<_>>(), "replica {i}");
    }
}

#[test]
fn restored_replica_keeps_its_view_change() {
    // replica 2 sends a view change, crashes, restarts: it is still changing views and
    // re-sends the same view change, not a new one for the old view
    let mut c = Cluster::default_cluster();
    c.mute.insert(0);
    let r = req(1);
    c.submit_to(2, &r);
    c.run_until(5_000, |c| c.replicas[2].status() == Status::ViewChange);
    let wal = c.wal[2].clone();
    let vc_before = wal
        .iter()
        .rev()
        .find_map(|w| match w {
            WalRecord::ViewChange(vc) => Some((**vc).clone()),
            _ => None,
        })
        .expect("view change persisted");
    let now = c.now;
    let mut r2 = Replica::restore(
        c.cfg.clone(),
        2,
        replica_key(2).clone(),
        &wal,
        0,
        c.records_at(0),
        now,
    )
    .unwrap();
    assert_eq!(r2.view(), 1);
    assert_eq!(r2.status(), Status::ViewChange);
    let t = r2.next_timeout().expect("retransmission armed");
    r2.on_timeout(t);
    let mut resent = Vec::new();
    while let Some(a) = r2.poll_action() {
        if let Action::Broadcast {
            msg: Message::ViewChange(vc),
        } = a
        {
            resent.push(*vc);
        }
    }
    assert_eq!(resent, vec![vc_before]);
}

#[test]
fn replica_caught_up_by_state_transfer_stays_in_the_view() {
    // Replica 3 sees the pre-prepares (so it learns of every request) but loses every
    // prepare and commit, so it cannot commit anything itself; it catches up when the
    // others' checkpoints become stable, by state transfer.
    let mut c = Cluster::default_cluster();
    c.lose = Some(|_, to, m| to == 3 && matches!(m, Message::Prepare(_) | Message::Commit(_)));
    let k = c.cfg.checkpoint_interval;
    for rid in 1..=2 * k {
        c.submit_to(0, &req(rid));
        c.run_until(1_000, |c| c.all_executed(rid, &[0, 1, 2]));
    }
    c.run_until(1_000, |c| c.replicas[3].last_executed() >= 2 * k);
    assert_eq!(c.replicas[3].stable_checkpoint(), 2 * k);
    assert_eq!(c.replicas[3].view(), 0);
    c.lose = None;
    // every request replica 3 learned of is inside the state it installed
    assert_eq!(
        c.replicas[3].waiting_requests(),
        0,
        "replica 3 still waits for requests executed before its checkpoint"
    );
    // time passes with nothing to do: nobody suspects the primary
    let t = c.now.plus(std::time::Duration::from_secs(3));
    c.run_until(5_000, |c| c.now >= t);
    for i in 0..N as usize {
        assert_eq!(
            (c.replicas[i].view(), c.replicas[i].status()),
            (0, Status::Normal),
            "replica {i}"
        );
    }
    // and replica 3 takes part in the next request
    c.submit_to(0, &req(2 * k + 1));
    c.run_until(1_000, |c| c.all_executed(2 * k + 1, &ALL));
}
