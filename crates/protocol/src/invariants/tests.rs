//! Each invariant is shown reported when a replica is put in a state that breaks it,
//! starting from states reached by driving the replica with ordinary inputs (which
//! pass). Each precondition is shown to stop its transition.

use super::Invariant;
use crate::action::Action;
use crate::client_table::{ClientRecord, ClientRecords};
use crate::config::Config;
use crate::message::{
    Batch, Checkpoint, Commit, CommittedProof, Message, PrePrepare, Prepare, ReplicaId, Request,
    Seq, Signed, SignedRequest, View, ViewChange,
};
use crate::new_view::compute_o;
use crate::replica::{ExecutedRequest, ExecutionResult, Fetch, Replica, Slot, Status};
use crate::time::Instant;
use crate::verify::Verifier;
use crate::NewView;
use pbft_crypto::{Digest, Keypair};

const ME: ReplicaId = 2;
const K: Seq = 16;

fn key(i: ReplicaId) -> Keypair {
    Keypair::from_seed(&[i as u8 + 1; 32]).expect("valid seed")
}

fn client() -> Keypair {
    Keypair::from_seed(&[77; 32]).expect("valid seed")
}

fn config() -> Config {
    Config::new((0..4).map(|i| key(i).public()).collect())
}

fn primary(view: View) -> ReplicaId {
    (view % 4) as ReplicaId
}

fn req(rid: u64) -> SignedRequest {
    let c = client();
    Signed::sign(
        Request {
            client: c.public(),
            request_id: rid,
            op: rid.to_le_bytes().to_vec(),
        },
        &c,
    )
}

fn batch(seq: Seq) -> Batch {
    Batch {
        requests: vec![req(seq)],
    }
}

fn state(seq: Seq) -> Digest {
    Digest::of(&seq.to_le_bytes())
}

fn signed_pp(view: View, seq: Seq, digest: Digest) -> Signed<PrePrepare> {
    Signed::sign(PrePrepare { view, seq, digest }, &key(primary(view)))
}

fn prepare(view: View, seq: Seq, digest: Digest, r: ReplicaId) -> Signed<Prepare> {
    let replica = r;
    Signed::sign(
        Prepare {
            view,
            seq,
            digest,
            replica,
        },
        &key(r),
    )
}

fn commit(view: View, seq: Seq, digest: Digest, r: ReplicaId) -> Signed<Commit> {
    let replica = r;
    Signed::sign(
        Commit {
            view,
            seq,
            digest,
            replica,
        },
        &key(r),
    )
}

fn checkpoint(seq: Seq, state_digest: Digest, replica: ReplicaId) -> Signed<Checkpoint> {
    Signed::sign(
        Checkpoint {
            seq,
            state_digest,
            replica,
        },
        &key(replica),
    )
}

fn proof(seq: Seq, d: Digest) -> Vec<Signed<Checkpoint>> {
    (0..3).map(|r| checkpoint(seq, d, r)).collect()
}

fn committed(view: View, seq: Seq, b: Batch) -> CommittedProof {
    let d = b.digest();
    CommittedProof {
        pre_prepare: signed_pp(view, seq, d),
        commits: [0, 1, 3].iter().map(|r| commit(view, seq, d, *r)).collect(),
        batch: b,
    }
}

/// Replica 2 of four, driven through the verifier like a real one.
struct Probe {
    r: Replica,
    verifier: Verifier,
    now: Instant,
}

impl Probe {
    fn new() -> Probe {
        let cfg = config();
        let verifier = Verifier::new(cfg.validators.clone());
        Probe {
            r: Replica::new(cfg, ME, key(ME)).expect("valid replica"),
            verifier,
            now: Instant::ZERO,
        }
    }

    fn drain(&mut self) -> Vec<Action> {
        std::iter::from_fn(|| self.r.poll_action()).collect()
    }

    fn deliver(&mut self, from: ReplicaId, msg: Message) -> Vec<Action> {
        let v = self.verifier.verify(from, msg).expect("verifies");
        self.r.on_message(v, self.now);
        self.drain()
    }

    /// The primary of `view` proposes `b` at `seq`; the other backups prepare; with
    /// `commit`, everyone commits.
    fn order(&mut self, view: View, seq: Seq, b: Batch, commit_too: bool) {
        let d = b.digest();
        let p = primary(view);
        self.deliver(
            p,
            Message::PrePrepare {
                pre_prepare: signed_pp(view, seq, d),
                batch: b,
            },
        );
        if !commit_too {
            return;
        }
        for r in (0..4).filter(|r| *r != p && *r != ME) {
            self.deliver(r, Message::Prepare(prepare(view, seq, d, r)));
        }
        for r in (0..4).filter(|r| *r != ME) {
            self.deliver(r, Message::Commit(commit(view, seq, d, r)));
        }
    }

    fn execute(&mut self, seq: Seq) {
        let b = batch(seq);
        let replies = b
            .requests
            .iter()
            .map(|q| ExecutedRequest {
                client: q.body.client,
                request_id: q.body.request_id,
                request: q.body.digest(),
                result: vec![1],
            })
            .collect();
        let state_digest = seq.is_multiple_of(K).then(|| state(seq));
        self.r.on_executed(
            seq,
            ExecutionResult {
                replies,
                state_digest,
            },
            self.now,
        );
        self.drain();
    }

    fn view_change(&self, view: View, replica: ReplicaId) -> Signed<ViewChange> {
        let stable_seq = self.r.stable_seq;
        Signed::sign(
            ViewChange {
                new_view: view,
                stable_seq,
                checkpoint_proof: proof(stable_seq, state(stable_seq)),
                prepared: Vec::new(),
                replica,
            },
            &key(replica),
        )
    }

    fn broken(&self) -> Invariant {
        match self.r.check_invariants() {
            Ok(()) => panic!("no invariant reported broken"),
            Err(v) => {
                // the report names the replica and where it stands
                assert_eq!(
                    (v.replica, v.view, v.status),
                    (ME, self.r.view, self.r.status)
                );
                assert!(
                    v.to_string().contains(&format!("replica {ME} broke")),
                    "{v}"
                );
                v.invariant
            }
        }
    }
}

/// A backup in view 0 with `h = 16`: 1..=17 executed, 18 dispatched, 19 accepted
/// only, and request 50 from the client waiting for the primary to order it.
fn running() -> Probe {
    let mut p = Probe::new();
    for seq in 1..=18 {
        p.order(0, seq, batch(seq), true);
    }
    for seq in 1..=16 {
        p.execute(seq);
    }
    for r in [0, 1] {
        p.deliver(r, Message::Checkpoint(checkpoint(16, state(16), r)));
    }
    p.execute(17);
    p.order(0, 19, batch(19), false);
    let v = p
        .verifier
        .verify_request(req(50))
        .expect("client signature");
    p.r.on_request(v, p.now);
    p.drain();
    let r = &p.r;
    assert_eq!(
        (r.stable_seq, r.last_executed, r.last_dispatched),
        (16, 17, 18)
    );
    assert_eq!(
        r.slots.keys().copied().collect::<Vec<_>>(),
        vec![17, 18, 19]
    );
    assert_eq!(r.unordered_requests(), 1);
    assert!(r.request_deadline.is_some());
    assert_eq!(r.check_invariants(), Ok(()));
    p
}

/// `running`, then changing to view 1 on f+1 view changes.
fn changing() -> Probe {
    let mut p = running();
    for r in [0, 1] {
        let vc = p.view_change(1, r);
        p.deliver(r, Message::ViewChange(Box::new(vc)));
    }
    assert_eq!((p.r.view, p.r.status), (1, Status::ViewChange));
    assert_eq!(p.r.check_invariants(), Ok(()));
    p
}

/// `changing`, then in view 1 by its new view, which re-proposes 17 and 18.
fn installed() -> Probe {
    let mut p = changing();
    let own = p.r.view_changes[&1][&ME].clone();
    let vcs = vec![own, p.view_change(1, 0), p.view_change(1, 3)];
    let o = compute_o(&vcs.iter().map(|v| &v.body).collect::<Vec<_>>());
    let pre_prepares = o
        .entries
        .iter()
        .map(|e| signed_pp(1, e.seq, e.digest))
        .collect();
    let nv = Signed::sign(
        NewView {
            view: 1,
            view_changes: vcs,
            pre_prepares,
        },
        &key(1),
    );
    p.deliver(1, Message::NewView(Box::new(nv)));
    assert_eq!((p.r.view, p.r.status), (1, Status::Normal));
    assert!(p.r.new_view.is_some());
    assert_eq!(p.r.check_invariants(), Ok(()));
    p
}

#[test]
fn states_reached_by_driving_the_replica_pass() {
    running();
    changing();
    let mut p = installed();
    // and onwards: the new view's slots commit and execute, a state transfer runs
    for seq in [17, 18] {
        for r in [0, 3] {
            p.deliver(r, Message::Prepare(prepare(1, seq, batch(seq).digest(), r)));
        }
        for r in [0, 1, 3] {
            p.deliver(r, Message::Commit(commit(1, seq, batch(seq).digest(), r)));
        }
    }
    p.execute(18);
    assert_eq!(p.r.last_executed, 18);
    let s = 3 * K;
    p.deliver(
        0,
        Message::Committed {
            stable_proof: proof(s, state(s)),
            proofs: Vec::new(),
        },
    );
    assert!(p.r.is_fetching_state());
    assert_eq!(p.r.check_invariants(), Ok(()));
    p.r.on_state_offer(0, s, state(s), p.now);
    p.drain();
    // the snapshot's ledger executed the client's requests 1..=s, one per batch
    let records = ClientRecords::Complete(vec![ClientRecord {
        client: client().public(),
        low: s + 1,
        executed: Vec::new(),
    }]);
    p.r.on_state_transferred(s, state(s), records, p.now);
    p.drain();
    assert_eq!((p.r.last_executed, p.r.stable_seq), (s, s));
    assert_eq!(p.r.check_invariants(), Ok(()));
}

#[test]
fn checks_start_on_with_debug_assertions_and_follow_the_switch() {
    let mut p = running();
    assert_eq!(p.r.invariant_checks(), cfg!(debug_assertions));
    // off: a broken state goes unnoticed through an input
    p.r.set_invariant_checks(false);
    p.r.peer_progress.insert(9, 1);
    p.r.on_timeout(p.now);
    assert_eq!(p.broken(), Invariant::ReplicaIds);
    // on: the next input reports it
    p.r.invariant_checks = true;
    let now = p.now;
    let report = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| p.r.on_timeout(now)))
        .expect_err("the check panics");
    let msg = report
        .downcast_ref::<String>()
        .expect("a formatted panic message");
    assert!(
        msg.contains("ReplicaIds") && msg.contains("after on_timeout"),
        "{msg}"
    );
}

#[test]
#[should_panic(expected = "broke the invariant ReplicaIds")]
fn turning_checks_on_checks_at_once() {
    let mut p = running();
    p.r.set_invariant_checks(false);
    p.r.peer_progress.insert(9, 1);
    p.r.set_invariant_checks(true);
}

#[test]
fn a_halted_replica_is_exempt() {
    let mut p = running();
    p.r.peer_progress.insert(9, 1);
    p.r.halted = Some("test".into());
    assert_eq!(p.r.check_invariants(), Ok(()));
}

#[test]
fn execution_order() {
    let mut p = running();
    p.r.last_executed = 19;
    assert_eq!(p.broken(), Invariant::ExecutionOrder);
    let mut p = running();
    p.r.last_dispatched = 16 + 32 + 1;
    assert_eq!(p.broken(), Invariant::ExecutionOrder);
}

#[test]
fn state_transfer() {
    // a transfer of something other than h
    let mut p = running();
    p.r.fetch = Some(Fetch {
        seq: 32,
        digest: state(32),
        peers: vec![0],
        next_peer: 0,
        installing: false,
        deadline: p.now,
    });
    assert_eq!(p.broken(), Invariant::StateTransfer);
    // a transfer of h, though the batches up to h are with the executor
    let mut p = running();
    p.r.fetch = Some(Fetch {
        seq: 16,
        digest: state(16),
        peers: vec![0],
        next_peer: 0,
        installing: false,
        deadline: p.now,
    });
    assert_eq!(p.broken(), Invariant::StateTransfer);
    // no transfer, and the executor can never reach h
    let mut p = running();
    p.r.last_executed = 15;
    p.r.last_dispatched = 15;
    assert_eq!(p.broken(), Invariant::StateTransfer);
}

#[test]
fn stable_proof() {
    let mut p = running();
    p.r.stable_proof.pop();
    assert_eq!(p.broken(), Invariant::StableProof);
    let mut p = running();
    p.r.stable_digest = state(99);
    assert_eq!(p.broken(), Invariant::StableProof);
}

#[test]
fn log_window() {
    let mut p = running();
    p.r.slots.insert(16 + 32 + 1, Slot::default());
    assert_eq!(p.broken(), Invariant::LogWindow);
    let mut p = running();
    p.r.slots.insert(16, Slot::default());
    assert_eq!(p.broken(), Invariant::LogWindow);
}

#[test]
fn slot_records() {
    // a slot filed under another seq
    let mut p = running();
    let slot = p.r.slots.remove(&19).expect("slot 19");
    p.r.slots.insert(20, slot);
    assert_eq!(p.broken(), Invariant::SlotRecords);
    // a commit sent where nothing prepared
    let mut p = running();
    p.r.slots.get_mut(&19).expect("slot 19").commit_sent = Some(0);
    assert_eq!(p.broken(), Invariant::SlotRecords);
}

#[test]
fn one_digest_per_view() {
    // the accepted pre-prepare against the prepared certificate
    let mut p = running();
    let other = batch(1000);
    p.r.slots.get_mut(&18).expect("slot 18").pre_prepare =
        Some((signed_pp(0, 18, other.digest()), other.clone()));
    assert_eq!(p.broken(), Invariant::OneDigestPerView);
    // the accepted pre-prepare against the replica's own prepare
    let mut p = running();
    p.r.slots.get_mut(&19).expect("slot 19").pre_prepare =
        Some((signed_pp(0, 19, other.digest()), other));
    assert_eq!(p.broken(), Invariant::OneDigestPerView);
}

#[test]
fn execution_stall() {
    let mut p = running();
    p.r.slots.get_mut(&19).expect("slot 19").committed = Some(committed(0, 19, batch(19)));
    assert_eq!(p.broken(), Invariant::ExecutionStall);
}

#[test]
fn votes() {
    let d = batch(19).digest();
    // a prepare from the primary
    let mut p = running();
    let _ = p.r.prepares.add(0, 19, d, 0, prepare(0, 19, d, 0));
    assert_eq!(p.broken(), Invariant::Votes);
    // a vote from no validator
    let mut p = running();
    let _ = p.r.commits.add(0, 19, d, 7, commit(0, 19, d, 3));
    assert_eq!(p.broken(), Invariant::Votes);
    // a vote outside the watermarks
    let mut p = running();
    let _ = p.r.commits.add(0, 60, d, 3, commit(0, 60, d, 3));
    assert_eq!(p.broken(), Invariant::Votes);
    // a count that is not the number of senders
    let mut p = running();
    p.r.prepares.force_count(0, 19, d, 3);
    assert_eq!(p.broken(), Invariant::Votes);
}

#[test]
fn checkpoint_votes() {
    // a vote at h
    let mut p = running();
    p.r.checkpoint_votes
        .entry(16)
        .or_default()
        .insert(3, checkpoint(16, state(16), 3));
    assert_eq!(p.broken(), Invariant::CheckpointVotes);
    // a vote filed under another sender
    let mut p = running();
    p.r.checkpoint_votes
        .entry(32)
        .or_default()
        .insert(1, checkpoint(32, state(32), 3));
    assert_eq!(p.broken(), Invariant::CheckpointVotes);
    // one sender beyond its budget
    let mut p = running();
    let budget = p.r.checkpoint_budget() as u64;
    for i in 2..=budget + 2 {
        p.r.checkpoint_votes
            .entry(i * K)
            .or_default()
            .insert(3, checkpoint(i * K, state(i * K), 3));
    }
    assert_eq!(p.broken(), Invariant::CheckpointVotes);
}

#[test]
fn own_checkpoints() {
    // own digest at h against the proven one
    let mut p = running();
    p.r.own_checkpoints
        .insert(16, checkpoint(16, state(99), ME));
    assert_eq!(p.broken(), Invariant::OwnCheckpoints);
    // below h
    let mut p = running();
    p.r.own_checkpoints.insert(0, checkpoint(0, state(0), ME));
    assert_eq!(p.broken(), Invariant::OwnCheckpoints);
    // signed by another replica
    let mut p = running();
    p.r.own_checkpoints.insert(32, checkpoint(32, state(32), 1));
    assert_eq!(p.broken(), Invariant::OwnCheckpoints);
}

#[test]
fn own_view_change() {
    let mut p = changing();
    p.r.view_changes
        .get_mut(&1)
        .expect("view changes for view 1")
        .remove(&ME);
    assert_eq!(p.broken(), Invariant::OwnViewChange);
}

#[test]
fn view_changes() {
    // a view already left
    let mut p = installed();
    let vc = p.view_change(1, 0);
    p.r.view_changes.entry(1).or_default().insert(0, vc);
    assert_eq!(p.broken(), Invariant::ViewChanges);
    // own, for a view it is not changing to
    let mut p = changing();
    let vc = p.view_change(3, ME);
    p.r.view_changes.entry(3).or_default().insert(ME, vc);
    assert_eq!(p.broken(), Invariant::ViewChanges);
    // one sender in three views
    let mut p = changing();
    for v in 2..=4 {
        let vc = p.view_change(v, 3);
        p.r.view_changes.entry(v).or_default().insert(3, vc);
    }
    assert_eq!(p.broken(), Invariant::ViewChanges);
    // filed under another view
    let mut p = changing();
    let vc = p.view_change(5, 3);
    p.r.view_changes.entry(2).or_default().insert(3, vc);
    assert_eq!(p.broken(), Invariant::ViewChanges);
}

#[test]
fn new_view() {
    let mut p = installed();
    p.r.new_view = None;
    assert_eq!(p.broken(), Invariant::NewView);
    let p = installed();
    let nv = p.r.new_view.clone();
    let mut p = changing();
    p.r.view = 2;
    p.r.status = Status::Normal;
    p.r.view_changes.clear();
    p.r.new_view = nv;
    assert_eq!(p.broken(), Invariant::NewView);
}

#[test]
fn proposals() {
    let mut p = running();
    p.r.pending.push_back(req(50).key());
    assert_eq!(p.broken(), Invariant::Proposals);
    let mut p = running();
    p.r.proposed.insert(req(50).key());
    assert_eq!(p.broken(), Invariant::Proposals);
}

#[test]
fn next_seq() {
    let mut p = running();
    p.r.next_seq = 16;
    assert_eq!(p.broken(), Invariant::NextSeq);
    let mut p = running();
    p.r.next_seq = 16 + 32 + 2;
    assert_eq!(p.broken(), Invariant::NextSeq);
    // a primary that would propose over its own pre-prepare
    let mut p = installed();
    let mut nv = p.r.new_view.clone().expect("new view").body;
    nv.view = 2;
    p.r.view = 2; // this replica is the primary of view 2
    p.r.new_view = Some(Signed::sign(nv, &key(ME)));
    p.r.stop_request_timer();
    p.r.watch_reset();
    assert_eq!(p.r.check_invariants(), Ok(()));
    let b = batch(30);
    p.r.slots.insert(
        30,
        Slot {
            pre_prepare: Some((signed_pp(2, 30, b.digest()), b)),
            ..Slot::default()
        },
    );
    p.r.next_seq = 30;
    assert_eq!(p.broken(), Invariant::NextSeq);
}

#[test]
fn client_table() {
    let mut p = running();
    let window = p.r.cfg.client_window;
    for rid in 200..200 + window + 1 {
        p.r.clients.add_waiting_unchecked(req(rid));
    }
    assert_eq!(p.broken(), Invariant::ClientTable);
    // a backup holding a request deferred for when the window moves
    let mut p = running();
    let window = p.r.cfg.client_window;
    assert!(p.r.clients.defer(req(18 + window)));
    assert_eq!(p.broken(), Invariant::ClientTable);
}

#[test]
fn timers() {
    let mut p = changing();
    p.r.request_deadline = Some(p.now);
    assert_eq!(p.broken(), Invariant::Timers);
    let mut p = running();
    p.r.view_change_deadline = Some(p.now);
    assert_eq!(p.broken(), Invariant::Timers);
    // a request timer that names no request
    let mut p = running();
    p.r.timed_request = None;
    assert_eq!(p.broken(), Invariant::Timers);
    // a request timed by a table that cannot tell it from one executed long ago
    let mut p = running();
    assert!(p.r.request_deadline.is_some());
    p.r.clients.seed(ClientRecords::Unknown);
    assert_eq!(p.broken(), Invariant::Timers);
}

#[test]
fn order_watch() {
    // a request watched that is not waiting
    let mut p = running();
    p.r.watch_unordered(req(5000).key());
    assert_eq!(p.broken(), Invariant::OrderWatch);
    // watched while changing views
    let mut p = running();
    p.r.status = Status::ViewChange;
    p.r.stop_request_timer();
    let own = p.view_change(0, ME);
    p.r.view_changes.entry(0).or_default().insert(ME, own);
    assert_eq!(p.broken(), Invariant::OrderWatch);
    // watched by a table that cannot tell it from one executed long ago
    let mut p = running();
    p.r.stop_request_timer();
    assert!(p.r.clients.add_waiting(req(60)));
    p.r.watch_unordered(req(60).key());
    assert_eq!(p.r.check_invariants(), Ok(()));
    p.r.clients.seed(ClientRecords::Unknown);
    assert_eq!(p.broken(), Invariant::OrderWatch);
}

#[test]
fn replica_ids() {
    let mut p = running();
    p.r.peer_progress.insert(4, 1);
    assert_eq!(p.broken(), Invariant::ReplicaIds);
    let mut p = running();
    p.r.slots
        .get_mut(&19)
        .expect("slot 19")
        .relayed_to
        .insert(ME);
    assert_eq!(p.broken(), Invariant::ReplicaIds);
}

#[test]
#[should_panic(expected = "broke the precondition InstallNewView")]
fn installing_the_view_it_runs_is_refused() {
    let mut p = installed();
    p.r.invariant_checks = true;
    let nv = p.r.new_view.clone().expect("new view");
    let o = compute_o(
        &nv.body
            .view_changes
            .iter()
            .map(|v| &v.body)
            .collect::<Vec<_>>(),
    );
    p.r.install_new_view(nv, o);
}

#[test]
#[should_panic(expected = "broke the precondition InstallNewView")]
fn installing_an_o_that_differs_from_the_pre_prepares_is_refused() {
    let mut p = changing();
    p.r.invariant_checks = true;
    let own = p.r.view_changes[&1][&ME].clone();
    let vcs = vec![own, p.view_change(1, 0), p.view_change(1, 3)];
    let o = compute_o(&vcs.iter().map(|v| &v.body).collect::<Vec<_>>());
    // the pre-prepares name other digests than O
    let pre_prepares = o
        .entries
        .iter()
        .map(|e| signed_pp(1, e.seq, Digest::ZERO))
        .collect();
    let nv = Signed::sign(
        NewView {
            view: 1,
            view_changes: vcs,
            pre_prepares,
        },
        &key(1),
    );
    p.r.install_new_view(nv, o);
}

#[test]
#[should_panic(expected = "broke the precondition StableCheckpoint")]
fn a_checkpoint_without_its_proof_does_not_become_stable() {
    let mut p = running();
    p.r.invariant_checks = true;
    p.r.on_stable(32, state(32), proof(32, state(99)));
}

#[test]
#[should_panic(expected = "broke the precondition StableCheckpoint")]
fn the_log_is_not_collected_below_an_unproven_checkpoint() {
    let mut p = running();
    p.r.invariant_checks = true;
    p.r.stable_digest = state(99);
    p.r.collect_garbage();
}

#[test]
#[should_panic(expected = "broke the precondition Execute")]
fn a_batch_that_does_not_match_its_certificate_is_not_executed() {
    let mut p = running();
    p.r.invariant_checks = true;
    let mut proof = committed(0, 19, batch(19));
    proof.batch = batch(1000);
    p.r.slots.get_mut(&19).expect("slot 19").committed = Some(proof);
    p.r.try_execute();
}

#[test]
#[should_panic(expected = "broke the precondition Execute")]
fn a_batch_without_q_commits_is_not_executed() {
    let mut p = running();
    p.r.invariant_checks = true;
    let mut proof = committed(0, 19, batch(19));
    proof.commits.pop();
    p.r.slots.get_mut(&19).expect("slot 19").committed = Some(proof);
    p.r.try_execute();
}

#[test]
fn a_checkpoint_executed_below_a_later_stable_one_is_dropped() {
    // batches 1..=32 are dispatched; checkpoint 32 becomes stable on the others' votes
    // before the executor reaches 16
    let mut p = Probe::new();
    for seq in 1..=2 * K {
        p.order(0, seq, batch(seq), true);
    }
    for r in [0, 1, 3] {
        p.deliver(r, Message::Checkpoint(checkpoint(2 * K, state(2 * K), r)));
    }
    assert_eq!((p.r.stable_seq, p.r.last_executed), (2 * K, 0));
    assert!(!p.r.is_fetching_state());
    for seq in 1..=2 * K {
        p.execute(seq);
        assert_eq!(p.r.check_invariants(), Ok(()), "after executing {seq}");
    }
    // only the checkpoint at h is kept, and nothing below it is voted on
    assert_eq!(
        p.r.own_checkpoints.keys().copied().collect::<Vec<_>>(),
        vec![2 * K]
    );
    assert!(p.r.checkpoint_votes.is_empty());
    assert_eq!(p.r.halted(), None);
}
