//! Robustness of the replica core against arbitrary input sequences. One replica of a
//! 4-replica cluster is driven by random sequences of up to 200 inputs: arbitrary
//! messages from the shared strategies (validator keys 0..4, views 0..6, seqs 0..80,
//! pooled digests so that votes collide), client requests, timeouts at increasing
//! times, execution results, state-transfer answers, plus "coherent" inputs built from
//! what the replica itself sent (matching votes, pre-prepares from the current primary,
//! view changes and new views) so that sequences reach deep into every rule. The other
//! three validators are all under the fuzzer's control, so only local properties can
//! hold; the tests prove that, whatever the inputs:
//! - the replica never panics;
//! - its log never exceeds the log window L (`log_len() <= L`);
//! - `Execute` actions come out with consecutive sequence numbers (a state transfer to
//!   checkpoint S resumes at S+1);
//! - it never broadcasts two prepares, or two commits, for one (view, seq) with
//!   different digests, and as a backup never commits a digest it did not prepare;
//! - after a halt it performs no further action.

mod common;

use common::*;
use pbft_crypto::Digest;
use pbft_protocol::verify::Verifier;
use pbft_protocol::{
    Action, Batch, ClientRecords, Config, ExecutedRequest, ExecutionResult, Instant, Message,
    NewView, Replica, ReplicaId, Seq, Signed, Status, View, ViewChange,
};
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use std::collections::{BTreeMap, VecDeque};
use std::sync::OnceLock;

/// Messages generated once from the pooled strategies (signing is the costly part).
fn pool() -> &'static [Message] {
    static POOL: OnceLock<Vec<Message>> = OnceLock::new();
    POOL.get_or_init(|| {
        let mut runner = TestRunner::new(pt_config(1, 0xf022));
        let strat = arb_message(Space::Pooled);
        (0..POOL_SIZE)
            .map(|_| strat.new_tree(&mut runner).expect("strategy").current())
            .collect()
    })
}

const POOL_SIZE: usize = 2500;

#[derive(Clone, Debug)]
enum Step {
    /// A message from the pool, sent by the replica it names (or by `sender`).
    Pool {
        idx: usize,
        sender: ReplicaId,
        as_claimed: bool,
    },
    /// Time passes.
    Timeout { ms: u64 },
    /// The executor finishes the oldest pending batch.
    Execute,
    /// A client request, directly or forwarded by a validator.
    Request { idx: usize, via: Option<ReplicaId> },
    /// The current view's primary (relayed by `relay`) proposes a pool batch, at the
    /// next sequence number to execute plus `seq_off` (or above the watermark `h`).
    Propose {
        next: bool,
        seq_off: u64,
        batch: usize,
        relay: Option<ReplicaId>,
    },
    /// A peer votes on one of the slots the replica has seen.
    Vote {
        pick: usize,
        voter: ReplicaId,
        commit: bool,
        same_digest: bool,
    },
    /// Every peer votes for one of the slots the replica has seen, as a healthy
    /// cluster would: prepares from the backups, then commits from everyone.
    Agree { pick: usize },
    /// A peer sends a checkpoint for one of the replica's own checkpoints.
    CheckpointVote {
        pick: usize,
        voter: ReplicaId,
        honest: bool,
    },
    /// A peer asks to move to the next view (or to the view being changed to).
    ViewChange { voter: ReplicaId },
    /// The primary of the view the replica is changing to sends a new view.
    NewView { honest: bool, skip: ReplicaId },
    /// The driver reports the digest of a fetched snapshot.
    StateOffer { good: bool, peer: ReplicaId },
}

fn arb_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        30 => (0..POOL_SIZE, 0..N, proptest::bool::weighted(0.8)).prop_map(
            |(idx, sender, as_claimed)| Step::Pool { idx, sender, as_claimed }
        ),
        8 => prop_oneof![4 => 1..50u64, 1 => 50..1500u64].prop_map(|ms| Step::Timeout { ms }),
        12 => Just(Step::Execute),
        6 => (0..request_pool().len(), prop::option::weighted(0.3, 0..N))
            .prop_map(|(idx, via)| Step::Request { idx, via }),
        10 => (
            proptest::bool::weighted(0.7),
            prop_oneof![4 => 0..3u64, 1 => 0..40u64],
            0..batch_pool().len(),
            prop::option::weighted(0.2, 0..N)
        )
            .prop_map(|(next, seq_off, batch, relay)| Step::Propose {
                next,
                seq_off,
                batch,
                relay
            }),
        22 => (
            prop_oneof![3 => 0..3usize, 1 => any::<usize>()],
            0..N,
            any::<bool>(),
            proptest::bool::weighted(0.9)
        )
            .prop_map(|(pick, voter, commit, same_digest)| Step::Vote {
                pick,
                voter,
                commit,
                same_digest
            }),
        4 => (any::<usize>(), 0..N, proptest::bool::weighted(0.9))
            .prop_map(|(pick, voter, honest)| Step::CheckpointVote { pick, voter, honest }),
        8 => prop_oneof![3 => 0..2usize, 1 => any::<usize>()].prop_map(|pick| Step::Agree { pick }),
        2 => (0..N).prop_map(|voter| Step::ViewChange { voter }),
        3 => (proptest::bool::weighted(0.8), 0..N)
            .prop_map(|(honest, skip)| Step::NewView { honest, skip }),
        2 => (proptest::bool::weighted(0.7), 0..N)
            .prop_map(|(good, peer)| Step::StateOffer { good, peer }),
    ]
}

struct Harness {
    me: ReplicaId,
    cfg: Config,
    r: Replica,
    verifier: Verifier,
    now: Instant,
    pending_exec: VecDeque<(Seq, Batch)>,
    next_exec: Seq,
    prepares: BTreeMap<(View, Seq), Digest>,
    commits: BTreeMap<(View, Seq), Digest>,
    /// Slots seen in the replica's own prepares and pre-prepares.
    slots: Vec<(View, Seq, Digest)>,
    checkpoints: Vec<(Seq, Digest)>,
    view_changes: BTreeMap<View, Signed<ViewChange>>,
    fetch: Option<(Seq, Digest)>,
    halted: bool,
    executed: u64,
    /// Whether peers may send checkpoints with a wrong state digest.
    lies: bool,
}

impl Harness {
    fn new(me: ReplicaId, lies: bool) -> Harness {
        let cfg = Config::new(pubkeys());
        Harness {
            me,
            r: Replica::new(cfg.clone(), me, replica_key(me).clone()).unwrap(),
            cfg,
            verifier: Verifier::signers_only_for_benchmarks(pubkeys()),
            now: Instant::ZERO,
            pending_exec: VecDeque::new(),
            next_exec: 1,
            prepares: BTreeMap::new(),
            commits: BTreeMap::new(),
            slots: Vec::new(),
            checkpoints: Vec::new(),
            view_changes: BTreeMap::new(),
            fetch: None,
            halted: false,
            executed: 0,
            lies,
        }
    }

    fn deliver(&mut self, from: ReplicaId, msg: Message) -> Result<(), TestCaseError> {
        if let Ok(v) = self.verifier.verify(from, msg) {
            self.r.on_message(v, self.now);
        }
        self.drain()
    }

    fn drain(&mut self) -> Result<(), TestCaseError> {
        let me = self.me;
        while let Some(a) = self.r.poll_action() {
            prop_assert!(!self.halted, "action after a halt: {:?}", a);
            match a {
                Action::Broadcast { msg } | Action::Send { msg, .. } => match msg {
                    Message::Prepare(p) => {
                        let b = p.body;
                        prop_assert_eq!(b.replica, me);
                        let prev = self.prepares.insert((b.view, b.seq), b.digest);
                        prop_assert!(
                            prev.is_none_or(|d| d == b.digest),
                            "two prepares for view {} seq {}: {:?} then {:?}",
                            b.view,
                            b.seq,
                            prev,
                            b.digest
                        );
                        self.slots.push((b.view, b.seq, b.digest));
                    }
                    Message::Commit(c) => {
                        let b = c.body;
                        prop_assert_eq!(b.replica, me);
                        let prev = self.commits.insert((b.view, b.seq), b.digest);
                        prop_assert!(
                            prev.is_none_or(|d| d == b.digest),
                            "two commits for view {} seq {}: {:?} then {:?}",
                            b.view,
                            b.seq,
                            prev,
                            b.digest
                        );
                        if primary(b.view) != me {
                            prop_assert_eq!(
                                self.prepares.get(&(b.view, b.seq)),
                                Some(&b.digest),
                                "commit at view {} seq {} without a matching own prepare",
                                b.view,
                                b.seq
                            );
                        }
                    }
                    Message::PrePrepare { pre_prepare, .. } => {
                        let b = pre_prepare.body;
                        if primary(b.view) == me {
                            self.slots.push((b.view, b.seq, b.digest));
                        }
                    }
                    Message::NewView(nv) => {
                        for pp in &nv.body.pre_prepares {
                            let b = pp.body;
                            self.slots.push((b.view, b.seq, b.digest));
                        }
                    }
                    Message::Checkpoint(c) if c.body.replica == me => {
                        self.checkpoints.push((c.body.seq, c.body.state_digest));
                    }
                    Message::ViewChange(vc) if vc.body.replica == me => {
                        self.view_changes.insert(vc.body.new_view, *vc);
                    }
                    _ => {}
                },
                Action::Execute {
                    seq, digest, batch, ..
                } => {
                    prop_assert_eq!(seq, self.next_exec, "execute out of order");
                    prop_assert_eq!(batch.digest(), digest);
                    self.next_exec = seq + 1;
                    self.pending_exec.push_back((seq, batch));
                }
                Action::FetchState { seq, digest, .. } => self.fetch = Some((seq, digest)),
                Action::InstallState { seq, digest } => {
                    self.pending_exec.retain(|(s, _)| *s > seq);
                    self.next_exec = self.next_exec.max(seq + 1);
                    self.fetch = None;
                    // the fuzzed history has no ledger to read: both kinds of table
                    let records = if (seq / K).is_multiple_of(2) {
                        ClientRecords::Complete(Vec::new())
                    } else {
                        ClientRecords::Unknown
                    };
                    self.r.on_state_transferred(seq, digest, records, self.now);
                }
                Action::Halt { .. } => self.halted = true,
                Action::Reply { .. }
                | Action::Persist(_)
                | Action::StableCheckpoint { .. }
                | Action::ServeState { .. }
                | Action::ReplyFromLedger { .. }
                | Action::Evidence { .. } => {}
            }
        }
        prop_assert!(
            self.r.log_len() as u64 <= self.cfg.log_window,
            "log of {} slots exceeds the window {} (stable {}, executed {})",
            self.r.log_len(),
            self.cfg.log_window,
            self.r.stable_checkpoint(),
            self.r.last_executed()
        );
        Ok(())
    }

    fn execute_one(&mut self) -> Result<(), TestCaseError> {
        let Some((seq, batch)) = self.pending_exec.pop_front() else {
            return Ok(());
        };
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
        self.r.on_executed(
            seq,
            ExecutionResult {
                replies,
                state_digest,
            },
            self.now,
        );
        self.executed += 1;
        self.drain()
    }

    /// A valid view change from `voter` for `target`, reusing the replica's own
    /// certificates when it sent one for that view.
    fn peer_view_change(&self, target: View, voter: ReplicaId) -> Signed<ViewChange> {
        let body = match self.view_changes.get(&target) {
            Some(mine) => ViewChange {
                replica: voter,
                ..mine.body.clone()
            },
            None => ViewChange {
                new_view: target,
                stable_seq: self.r.stable_checkpoint(),
                checkpoint_proof: checkpoint_proof(self.r.stable_checkpoint()),
                prepared: Vec::new(),
                replica: voter,
            },
        };
        Signed::sign(body, replica_key(voter))
    }

    fn apply(&mut self, step: &Step) -> Result<(), TestCaseError> {
        let me = self.me;
        match *step {
            Step::Pool {
                idx,
                sender,
                as_claimed,
            } => {
                let msg = pool()[idx].clone();
                if !self.lies {
                    if let Message::Checkpoint(c) = &msg {
                        if c.body.state_digest != state_digest(c.body.seq) {
                            return Ok(());
                        }
                    }
                }
                let from = if as_claimed {
                    claimed_sender(&msg).unwrap_or(sender)
                } else {
                    sender
                };
                self.deliver(from, msg)?;
            }
            Step::Timeout { ms } => {
                self.now = self.now.plus(std::time::Duration::from_millis(ms));
                self.r.on_timeout(self.now);
                self.drain()?;
            }
            Step::Execute => self.execute_one()?,
            Step::Request { idx, via } => {
                let req = request_pool()[idx].clone();
                match via {
                    None => {
                        let v = self.verifier.verify_request(req).unwrap();
                        self.r.on_request(v, self.now);
                        self.drain()?;
                    }
                    Some(from) => self.deliver(from, Message::Request(req))?,
                }
            }
            Step::Propose {
                next,
                seq_off,
                batch,
                relay,
            } => {
                let view = self.r.view();
                // `next`: the first sequence number this view has not used yet (what an
                // honest primary does); otherwise anywhere above `h`, equivocating when
                // the slot is taken
                let seq = if next {
                    self.slots
                        .iter()
                        .filter(|(v, _, _)| *v == view)
                        .map(|(_, s, _)| *s)
                        .max()
                        .unwrap_or(0)
                        .max(self.r.last_executed())
                        + 1
                } else {
                    self.r.stable_checkpoint() + 1 + seq_off
                };
                let msg = pre_prepare_msg(view, seq, batch_pool()[batch].clone());
                self.deliver(relay.unwrap_or(primary(view)), msg)?;
            }
            Step::Vote {
                pick,
                voter,
                commit: is_commit,
                same_digest,
            } => {
                if self.slots.is_empty() {
                    return Ok(());
                }
                // mostly one of the latest slots
                let (view, seq, d) = self.slots[self.slots.len() - 1 - pick % self.slots.len()];
                // prepares come from backups, commits from anyone; never from `me`
                let voters: Vec<ReplicaId> = (0..N)
                    .filter(|r| *r != me && (is_commit || *r != primary(view)))
                    .collect();
                let voter = voters[voter as usize % voters.len()];
                let digest = if same_digest {
                    d
                } else {
                    batch_pool()[pick % batch_pool().len()].digest()
                };
                let msg = if is_commit {
                    Message::Commit(commit(view, seq, digest, voter))
                } else {
                    Message::Prepare(prepare(view, seq, digest, voter))
                };
                self.deliver(voter, msg)?;
            }
            Step::Agree { pick } => {
                if self.slots.is_empty() {
                    return Ok(());
                }
                let (view, seq, d) = self.slots[self.slots.len() - 1 - pick % self.slots.len()];
                for voter in (0..N).filter(|r| *r != me && *r != primary(view)) {
                    self.deliver(voter, Message::Prepare(prepare(view, seq, d, voter)))?;
                }
                for voter in (0..N).filter(|r| *r != me) {
                    self.deliver(voter, Message::Commit(commit(view, seq, d, voter)))?;
                }
            }
            Step::CheckpointVote {
                pick,
                voter,
                honest,
            } => {
                if self.checkpoints.is_empty() || voter == me {
                    return Ok(());
                }
                let (seq, d) = self.checkpoints[pick % self.checkpoints.len()];
                let d = if honest || !self.lies {
                    d
                } else {
                    Digest::of(b"lie")
                };
                self.deliver(voter, Message::Checkpoint(checkpoint(seq, d, voter)))?;
            }
            Step::ViewChange { voter } => {
                if voter == me {
                    return Ok(());
                }
                let target = match self.r.status() {
                    Status::Normal => self.r.view() + 1,
                    Status::ViewChange => self.r.view(),
                };
                let vc = self.peer_view_change(target, voter);
                self.deliver(voter, Message::ViewChange(Box::new(vc)))?;
            }
            Step::NewView { honest, skip } => {
                let view = self.r.view();
                let p = primary(view);
                if self.r.status() != Status::ViewChange || p == me {
                    return Ok(());
                }
                let Some(mine) = self.view_changes.get(&view).cloned() else {
                    return Ok(());
                };
                let mut vcs = vec![mine];
                for voter in (0..N).filter(|r| *r != me && *r != skip).take(2) {
                    vcs.push(self.peer_view_change(view, voter));
                }
                let nv = if honest {
                    honest_new_view(view, vcs)
                } else {
                    let mut nv = honest_new_view(view, vcs).body;
                    nv.pre_prepares.push(signed_pp(
                        view,
                        nv.pre_prepares.len() as u64 + 1,
                        Digest::ZERO,
                    ));
                    Signed::sign(nv, replica_key(p))
                };
                let nv: Signed<NewView> = nv;
                self.deliver(p, Message::NewView(Box::new(nv)))?;
            }
            Step::StateOffer { good, peer } => {
                if let Some((seq, digest)) = self.fetch {
                    let d = if good { digest } else { Digest::of(b"bad") };
                    self.r.on_state_offer(peer, seq, d, self.now);
                    self.drain()?;
                }
            }
        }
        Ok(())
    }
}

fn fuzz(me: ReplicaId, lies: bool, cases: u32, seed: u64) {
    // build the pool outside the timed cases
    let _ = pool();
    let mut runner = TestRunner::new(pt_config(cases, seed));
    let steps = proptest::collection::vec(arb_step(), 0..200);
    let mut stats = (0u64, 0u64, 0u64); // executed batches, view changes seen, halts
    let stats_ref = std::cell::RefCell::new(&mut stats);
    runner
        .run(&steps, |steps| {
            let mut h = Harness::new(me, lies);
            for s in &steps {
                h.apply(s)?;
            }
            // let the executor finish
            while !h.pending_exec.is_empty() {
                h.execute_one()?;
            }
            let mut st = stats_ref.borrow_mut();
            st.0 += h.executed;
            st.1 += u64::from(h.r.view() > 0);
            st.2 += u64::from(h.halted);
            Ok(())
        })
        .unwrap();
    // the sequences reach execution and view changes, not just early rejections
    let (executed, view_changes, halts) = stats;
    eprintln!(
        "replica {me}: {executed} batches executed, {view_changes} runs left view 0, {halts} halts"
    );
    assert!(
        executed > u64::from(cases) / 2,
        "only {executed} batches executed"
    );
    assert!(
        view_changes > u64::from(cases) / 4,
        "only {view_changes} view changes"
    );
}

#[test]
fn backup_survives_arbitrary_inputs() {
    fuzz(1, false, 500, 0xbac0);
}

#[test]
fn primary_survives_arbitrary_inputs() {
    fuzz(0, false, 500, 0x9e1);
}

/// The same with peers that also lie in checkpoint messages. With these seeds the
/// fuzzer found the bug (since fixed) pinned down by
/// `checkpoint_lie_by_the_new_primary_during_install_new_view` below.
#[test]
fn backup_survives_arbitrary_inputs_with_checkpoint_lies() {
    fuzz(1, true, 300, 0x11e0);
}

#[test]
fn primary_survives_arbitrary_inputs_with_checkpoint_lies() {
    fuzz(0, true, 300, 0x11e3);
}

#[test]
fn checkpoint_lie_by_the_new_primary_during_install_new_view() {
    // Replica 1, in view 0. Replica 2 (the primary of view 2) lies about checkpoint 48,
    // then sends a valid new view for view 2 whose V proves checkpoint 48 stable and
    // whose O re-proposes seq 49. Installing the new view makes checkpoint 48 stable,
    // which turns the lie into evidence against the new primary, which starts a view
    // change to view 3 in the middle of `install_new_view`; the rest of O must then not
    // be processed as view-2 pre-prepares.
    let mut h = Harness::new(1, true);
    h.deliver(
        2,
        Message::Checkpoint(checkpoint(48, Digest::of(b"lie"), 2)),
    )
    .unwrap();
    let batch = batch_pool()[1].clone();
    let vcs = vec![
        view_change(2, 48, vec![prepared_cert(0, 49, batch, &[2, 3])], 0),
        view_change(2, 0, vec![], 2),
        view_change(2, 0, vec![], 3),
    ];
    let nv = honest_new_view(2, vcs);
    assert_eq!(nv.body.pre_prepares.len(), 1);
    let v = h
        .verifier
        .verify(2, Message::NewView(Box::new(nv)))
        .unwrap();
    // in a debug build this panics in accept_pre_prepare (`debug_assert_eq!(view, self.view)`)
    h.r.on_message(v, h.now);
    let mut vc_sent: Option<u64> = None;
    while let Some(a) = h.r.poll_action() {
        if let Action::Broadcast { msg } = a {
            match msg {
                Message::ViewChange(vc) => vc_sent = Some(vc.body.new_view),
                Message::Prepare(p) => {
                    if let Some(v) = vc_sent {
                        assert!(
                            p.body.view >= v,
                            "prepare for view {} after a view change to {v}",
                            p.body.view
                        );
                    }
                }
                _ => {}
            }
        }
    }
    assert!(h.r.evidence().contains_key(&2));
    // a replica in view 3 is changing views, or running view 3 with its new view
    assert!(h.r.view() >= 2);
    if h.r.view() > 2 {
        assert_eq!(h.r.status(), Status::ViewChange);
    }
}
