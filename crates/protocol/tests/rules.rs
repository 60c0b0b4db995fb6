//! Proves individual rules of docs/protocol.md on one replica, with hand-built signed
//! inputs passed through the full `Verifier`:
//! - votes are sets of distinct senders keyed by (view, seq, digest): duplicates, the
//!   primary's prepare and votes for another digest never count;
//! - the primary commits on 2f backup prepares (it does not wait for all backups);
//! - execution waits for every lower sequence number;
//! - pre-prepares are accepted only inside the watermarks `(h, h + L]`, in the current
//!   view, with `d = H(batch)` and valid client signatures; a bad or equivocating
//!   pre-prepare is evidence and replaces the primary at once;
//! - a checkpoint is stable only with q matching messages;
//! - the f+1 join rule goes to the smallest higher view; an invalid new view moves on
//!   to the next view; the new-view timer doubles on each failed attempt;
//! - a new view never re-executes an executed sequence number;
//! - requests are forwarded to the primary (relayed ones too, once) and bounded by the
//!   client window;
//! - the request timer waits for one request and stops only when that one executes;
//! - a request the primary leaves unordered for T/2 of time with room in its pipeline
//!   replaces it, whatever else executes meanwhile; only full batches and the new
//!   view's O take room, and a full pipeline pauses that clock without resetting it;
//! - a batch holding a request of a key that is not a client is evidence against the
//!   primary.

mod common;

use common::*;
use pbft_crypto::Digest;
use pbft_protocol::{
    Action, Batch, ClientRecords, Config, Evidence, Instant, Message, Replica, ReplicaId, Seq,
    Signed, Status,
};
use std::time::Duration;

fn broadcasts(actions: &[Action]) -> Vec<&Message> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Broadcast { msg } => Some(msg),
            _ => None,
        })
        .collect()
}

fn sent_commit(actions: &[Action]) -> bool {
    broadcasts(actions)
        .iter()
        .any(|m| matches!(m, Message::Commit(_)))
}

fn sent_prepare(actions: &[Action]) -> Option<(u64, Seq, Digest)> {
    broadcasts(actions).iter().find_map(|m| match m {
        Message::Prepare(p) => Some((p.body.view, p.body.seq, p.body.digest)),
        _ => None,
    })
}

fn view_change_to(actions: &[Action]) -> Option<u64> {
    broadcasts(actions).iter().find_map(|m| match m {
        Message::ViewChange(vc) => Some(vc.body.new_view),
        _ => None,
    })
}

fn b(i: usize) -> Batch {
    batch_pool()[i].clone()
}

#[test]
fn votes_count_distinct_backups_for_one_digest() {
    let mut p = Probe::new(1);
    let d = b(1).digest();
    let a = p.deliver(0, pre_prepare_msg(0, 1, b(1)));
    assert_eq!(sent_prepare(&a), Some((0, 1, d)));
    // the primary's prepare does not count
    assert!(!sent_commit(
        &p.deliver(0, Message::Prepare(prepare(0, 1, d, 0)))
    ));
    // a prepare for another digest does not count...
    let other = b(2).digest();
    assert!(!sent_commit(
        &p.deliver(3, Message::Prepare(prepare(0, 1, other, 3)))
    ));
    // ...and replica 3's first vote is the one that counts
    assert!(!sent_commit(
        &p.deliver(3, Message::Prepare(prepare(0, 1, d, 3)))
    ));
    // a prepare for another view or seq does not count
    assert!(!sent_commit(
        &p.deliver(2, Message::Prepare(prepare(0, 2, d, 2)))
    ));
    // replica 2's matching prepare completes 2f with our own
    let a = p.deliver(2, Message::Prepare(prepare(0, 1, d, 2)));
    assert!(sent_commit(&a));
    assert_eq!(p.r.prepared_view(1), Some(0));

    // commits: our own + replica 2, repeated, is still two
    for _ in 0..3 {
        assert!(executed(&p.deliver(2, Message::Commit(commit(0, 1, d, 2)))).is_empty());
    }
    assert!(executed(&p.deliver(3, Message::Commit(commit(0, 1, other, 3)))).is_empty());
    assert!(executed(&p.deliver(3, Message::Commit(commit(0, 1, d, 3)))).is_empty());
    // the primary's commit does count: q = 3
    assert_eq!(
        executed(&p.deliver(0, Message::Commit(commit(0, 1, d, 0)))),
        vec![1]
    );
}

#[test]
fn primary_commits_on_two_backup_prepares() {
    let mut p = Probe::new(0);
    let req = request(0, 1, b"x".to_vec());
    let a = p.client(req.clone());
    let pp = broadcasts(&a)
        .into_iter()
        .find_map(|m| match m {
            Message::PrePrepare { pre_prepare, batch } => {
                Some((pre_prepare.clone(), batch.clone()))
            }
            _ => None,
        })
        .expect("an idle primary proposes at once");
    assert_eq!(pp.0.body.seq, 1);
    assert_eq!(pp.1.requests, vec![req]);
    let d = pp.0.body.digest;
    assert!(!sent_commit(
        &p.deliver(1, Message::Prepare(prepare(0, 1, d, 1)))
    ));
    assert!(sent_commit(
        &p.deliver(3, Message::Prepare(prepare(0, 1, d, 3)))
    ));
}

#[test]
fn execution_waits_for_lower_sequence_numbers() {
    let mut p = Probe::new(1);
    let (d1, d2) = (b(1).digest(), b(2).digest());
    p.deliver(0, pre_prepare_msg(0, 1, b(1)));
    p.deliver(0, pre_prepare_msg(0, 2, b(2)));
    let mut all = Vec::new();
    for r in [2, 3] {
        all.extend(p.deliver(r, Message::Prepare(prepare(0, 2, d2, r))));
    }
    for r in [0, 2, 3] {
        all.extend(p.deliver(r, Message::Commit(commit(0, 2, d2, r))));
    }
    assert!(executed(&all).is_empty(), "seq 2 executed before seq 1");
    let mut all = Vec::new();
    for r in [2, 3] {
        all.extend(p.deliver(r, Message::Prepare(prepare(0, 1, d1, r))));
    }
    for r in [0, 2] {
        all.extend(p.deliver(r, Message::Commit(commit(0, 1, d1, r))));
    }
    assert_eq!(executed(&all), vec![1, 2]);
}

#[test]
fn pre_prepares_only_inside_the_watermarks() {
    let mut p = Probe::new(1);
    assert_eq!(
        sent_prepare(&p.deliver(0, pre_prepare_msg(0, 0, b(1)))),
        None
    );
    assert_eq!(
        sent_prepare(&p.deliver(0, pre_prepare_msg(0, L + 1, b(1)))),
        None
    );
    assert_eq!(
        sent_prepare(&p.deliver(0, pre_prepare_msg(0, L, b(1)))),
        Some((0, L, b(1).digest()))
    );
    assert!(p.r.log_len() <= L as usize);
}

#[test]
fn pre_prepares_for_another_view_are_ignored() {
    let mut p = Probe::new(1);
    // view 4's primary is 0 too, but we are in view 0
    let a = p.deliver(0, pre_prepare_msg(4, 1, b(1)));
    assert_eq!(sent_prepare(&a), None);
    assert!(evidence_kinds(&a).is_empty());
    assert_eq!(p.r.view(), 0);
}

#[test]
fn pre_prepare_with_a_wrong_digest_is_dropped_and_proves_nothing() {
    // the primary signs the header only: a batch that does not match it could have
    // been paired with it by anyone, so it is no proof (tests/framing.rs)
    let mut p = Probe::new(1);
    let msg = Message::PrePrepare {
        pre_prepare: signed_pp(0, 1, b(2).digest()),
        batch: b(1),
    };
    let a = p.deliver(0, msg);
    assert_eq!(sent_prepare(&a), None);
    assert!(evidence_kinds(&a).is_empty());
    assert_eq!(view_change_to(&a), None);
    assert_eq!((p.r.view(), p.r.status()), (0, Status::Normal));
}

#[test]
fn pre_prepare_with_a_bad_client_signature_is_evidence_and_replaces_the_primary() {
    let mut p = Probe::new(2);
    let mut bad = request(0, 1, b"x".to_vec());
    bad.body.op = b"y".to_vec();
    let batch = Batch {
        requests: vec![request(1, 1, vec![]), bad],
    };
    let a = p.deliver(0, pre_prepare_msg(0, 1, batch));
    assert_eq!(sent_prepare(&a), None);
    assert_eq!(evidence_kinds(&a), vec!["bad_pre_prepare"]);
    assert_eq!(view_change_to(&a), Some(1));
}

#[test]
fn equivocation_is_evidence_and_replaces_the_primary() {
    let mut p = Probe::new(1);
    assert!(sent_prepare(&p.deliver(0, pre_prepare_msg(0, 1, b(1)))).is_some());
    // the second proposal, relayed by replica 3
    let a = p.deliver(3, pre_prepare_msg(0, 1, b(2)));
    assert_eq!(sent_prepare(&a), None);
    assert_eq!(evidence_kinds(&a), vec!["equivocation"]);
    assert_eq!(view_change_to(&a), Some(1));
    assert!(matches!(
        p.r.evidence().get(&0),
        Some(Evidence::Equivocation { .. })
    ));
}

#[test]
fn checkpoint_needs_q_matching_messages() {
    let mut p = Probe::new(1);
    p.deliver(0, Message::Checkpoint(checkpoint(16, state_digest(16), 0)));
    p.deliver(2, Message::Checkpoint(checkpoint(16, state_digest(16), 2)));
    p.deliver(3, Message::Checkpoint(checkpoint(16, Digest::of(b"x"), 3)));
    assert_eq!(
        p.r.stable_checkpoint(),
        0,
        "2 matching of 3 is not a quorum"
    );
    // a repeat from the same sender does not make a quorum either
    p.deliver(2, Message::Checkpoint(checkpoint(16, state_digest(16), 2)));
    assert_eq!(p.r.stable_checkpoint(), 0);
    // checkpoints off the interval are ignored
    for r in [0, 2, 3] {
        p.deliver(r, Message::Checkpoint(checkpoint(8, state_digest(8), r)));
    }
    assert_eq!(p.r.stable_checkpoint(), 0);
    // q matching checkpoints for 32 make it stable; we are behind, so we fetch it
    let mut a = Vec::new();
    for r in [0, 2, 3] {
        a.extend(p.deliver(r, Message::Checkpoint(checkpoint(32, state_digest(32), r))));
    }
    assert_eq!(p.r.stable_checkpoint(), 32);
    assert!(a.iter().any(|x| matches!(
        x,
        Action::StableCheckpoint { seq: 32, digest } if *digest == state_digest(32)
    )));
    assert!(a
        .iter()
        .any(|x| matches!(x, Action::FetchState { seq: 32, .. })));
    assert!(p.r.is_fetching_state());
}

#[test]
fn join_the_smallest_view_on_f_plus_1_view_changes() {
    let mut p = Probe::new(1);
    let a = p.deliver(
        2,
        Message::ViewChange(Box::new(view_change(3, 0, vec![], 2))),
    );
    assert_eq!(view_change_to(&a), None, "one view change is not f+1");
    assert_eq!(p.r.view(), 0);
    // a repeat from the same replica does not count twice
    let a = p.deliver(
        2,
        Message::ViewChange(Box::new(view_change(3, 0, vec![], 2))),
    );
    assert_eq!(view_change_to(&a), None);
    let a = p.deliver(
        3,
        Message::ViewChange(Box::new(view_change(2, 0, vec![], 3))),
    );
    assert_eq!(view_change_to(&a), Some(2));
    assert_eq!((p.r.view(), p.r.status()), (2, Status::ViewChange));
}

#[test]
fn invalid_new_view_moves_on_to_the_next_view() {
    let mut p = Probe::new(2);
    p.client(request(0, 1, vec![]));
    // the request timer fires: view change to 1 (primary 1)
    let a = p.at(400);
    assert_eq!(view_change_to(&a), Some(1));
    let mine = match broadcasts(&a)
        .into_iter()
        .find(|m| matches!(m, Message::ViewChange(_)))
    {
        Some(Message::ViewChange(vc)) => (**vc).clone(),
        _ => unreachable!(),
    };
    let vcs = vec![
        view_change(1, 0, vec![prepared_cert(0, 1, b(1), &[2, 3])], 0),
        mine,
        view_change(1, 0, vec![], 3),
    ];
    // O should hold seq 1 with b(1)'s digest; this one re-proposes the null batch
    let mut nv = honest_new_view(1, vcs.clone()).body;
    assert_eq!(nv.pre_prepares.len(), 1);
    nv.pre_prepares[0] = signed_pp(1, 1, Batch::null_digest());
    let nv = Signed::sign(nv, replica_key(1));
    let a = p.deliver(1, Message::NewView(Box::new(nv)));
    assert_eq!(evidence_kinds(&a), vec!["bad_new_view"]);
    assert_eq!(view_change_to(&a), Some(2));
    assert_eq!((p.r.view(), p.r.status()), (2, Status::ViewChange));

    // whereas the honest new view, had it come first, is installed
    let mut p = Probe::new(2);
    p.client(request(0, 1, vec![]));
    p.at(400);
    let a = p.deliver(1, Message::NewView(Box::new(honest_new_view(1, vcs))));
    assert_eq!((p.r.view(), p.r.status()), (1, Status::Normal));
    // O names b(1) by its digest and this backup never saw it: it asks the primary
    assert!(a.iter().any(|x| matches!(
        x,
        Action::Send { to: 1, msg: Message::FetchBatch { seq: 1, digest } }
            if *digest == b(1).digest()
    )));
    assert_eq!(sent_prepare(&a), None);
    let a = p.deliver(
        1,
        Message::BatchReply {
            seq: 1,
            batch: b(1),
        },
    );
    assert_eq!(sent_prepare(&a), Some((1, 1, b(1).digest())));
}

#[test]
fn new_view_timer_doubles_on_each_failed_attempt() {
    let mut p = Probe::new(2);
    let vc =
        |view: u64, r: ReplicaId| Message::ViewChange(Box::new(view_change(view, 0, vec![], r)));
    // a request the primary ordered but that never executes: the request timer, not
    // the ordering deadline, is what fires
    let req = request(0, 1, vec![]);
    p.client(req.clone());
    p.deliver(
        0,
        pre_prepare_msg(
            0,
            1,
            Batch {
                requests: vec![req],
            },
        ),
    );
    assert_eq!(p.r.unordered_requests(), 0);
    p.at(399);
    assert_eq!(p.r.view(), 0);
    assert_eq!(
        view_change_to(&p.at(400)),
        Some(1),
        "request timer T = 400 ms"
    );
    // q view changes for view 1, whose primary (1) never sends the new view: T
    for r in [0, 3] {
        p.deliver(r, vc(1, r));
    }
    p.at(799);
    assert_eq!(p.r.view(), 1);
    p.at(800);
    assert_eq!((p.r.view(), p.r.status()), (2, Status::ViewChange));
    // view 2 is ours to lead; f+1 others want view 3 instead: join it
    for r in [0, 3] {
        p.deliver(r, vc(3, r));
    }
    assert_eq!(p.r.view(), 3);
    p.deliver(1, vc(3, 1));
    // second failed attempt in a row: 2T
    p.at(1599);
    assert_eq!(p.r.view(), 3);
    p.at(1600);
    assert_eq!(p.r.view(), 4);
    for r in [0, 1] {
        p.deliver(r, vc(4, r));
    }
    // third: 4T
    p.at(3199);
    assert_eq!(p.r.view(), 4);
    p.at(3200);
    assert_eq!((p.r.view(), p.r.status()), (5, Status::ViewChange));
}

#[test]
fn new_view_does_not_re_execute_executed_sequence_numbers() {
    let mut p = Probe::new(2);
    let d = b(1).digest();
    p.deliver(0, pre_prepare_msg(0, 1, b(1)));
    p.deliver(3, Message::Prepare(prepare(0, 1, d, 3)));
    let mut a = Vec::new();
    for r in [0, 3] {
        a.extend(p.deliver(r, Message::Commit(commit(0, 1, d, r))));
    }
    assert_eq!(executed(&a), vec![1]);
    p.execute(1, &b(1));
    // a view change whose new view re-proposes seq 1
    let cert = prepared_cert(0, 1, b(1), &[2, 3]);
    let vcs = vec![
        view_change(1, 0, vec![cert.clone()], 0),
        view_change(1, 0, vec![cert.clone()], 1),
        view_change(1, 0, vec![cert], 3),
    ];
    let mut a = p.deliver(1, Message::NewView(Box::new(honest_new_view(1, vcs))));
    assert_eq!(p.r.view(), 1);
    assert_eq!(sent_prepare(&a), Some((1, 1, d)));
    a.extend(p.deliver(3, Message::Prepare(prepare(1, 1, d, 3))));
    for r in [0, 1, 3] {
        a.extend(p.deliver(r, Message::Commit(commit(1, 1, d, r))));
    }
    assert!(executed(&a).is_empty(), "seq 1 executed twice");
    assert_eq!(p.r.last_executed(), 1);
}

#[test]
fn backups_forward_requests_and_respect_the_client_window() {
    let mut p = Probe::new(1);
    let a = p.client(request(0, 1, vec![]));
    assert!(a.iter().any(|x| matches!(
        x,
        Action::Send { to: 0, msg: Message::Request(r) } if r.body.request_id == 1
    )));
    assert_eq!(p.r.waiting_requests(), 1);
    // request id 0 and ids beyond the window are ignored
    let window = Config::new(pubkeys()).client_window;
    for rid in [0, window + 1, u64::MAX] {
        let a = p.client(request(1, rid, vec![]));
        assert!(
            !a.iter().any(|x| matches!(x, Action::Send { .. })),
            "request id {rid} forwarded"
        );
    }
    assert_eq!(p.r.waiting_requests(), 1);
    let a = p.client(request(1, window, vec![]));
    assert!(a.iter().any(|x| matches!(x, Action::Send { to: 0, .. })));
}

/// Replica 1 becomes the primary of view 1 and sends a new view whose `O` re-proposes
/// seq 1; returns the replica, its persisted records and the new view's `O` headers.
fn new_primary_with_o() -> (Probe, Vec<pbft_protocol::WalRecord>, Vec<(Seq, Digest)>) {
    let mut p = Probe::new(1);
    let cert = prepared_cert(0, 1, b(1), &[2, 3]);
    let mut a = Vec::new();
    a.extend(p.deliver(
        2,
        Message::ViewChange(Box::new(view_change(1, 0, vec![cert.clone()], 2))),
    ));
    a.extend(p.deliver(
        3,
        Message::ViewChange(Box::new(view_change(1, 0, vec![cert], 3))),
    ));
    // the view changes name b(1) by digest: the new primary fetches it from one of
    // their senders before it sends its new view
    assert_eq!((p.r.view(), p.r.status()), (1, Status::ViewChange));
    let asked = a.iter().find_map(|x| match x {
        Action::Send {
            to,
            msg: Message::FetchBatch { seq: 1, digest },
        } if *digest == b(1).digest() => Some(*to),
        _ => None,
    });
    let asked = asked.expect("the new primary asks for the batch");
    assert!([2, 3].contains(&asked), "asked {asked}");
    a.extend(p.deliver(
        asked,
        Message::BatchReply {
            seq: 1,
            batch: b(1),
        },
    ));
    assert_eq!((p.r.view(), p.r.status()), (1, Status::Normal));
    assert!(p.r.is_primary());
    let o: Vec<(Seq, Digest)> = broadcasts(&a)
        .iter()
        .find_map(|m| match m {
            Message::NewView(nv) => Some(
                nv.body
                    .pre_prepares
                    .iter()
                    .map(|pp| (pp.body.seq, pp.body.digest))
                    .collect(),
            ),
            _ => None,
        })
        .expect("the new primary sent its new view");
    assert_eq!(o, vec![(1, b(1).digest())]);
    let wal = a
        .into_iter()
        .filter_map(|x| match x {
            Action::Persist(r) => Some(r),
            _ => None,
        })
        .collect();
    (p, wal, o)
}

fn proposals(actions: &[Action]) -> Vec<(u64, Seq, Digest)> {
    broadcasts(actions)
        .iter()
        .filter_map(|m| match m {
            Message::PrePrepare { pre_prepare, .. } => {
                let b = pre_prepare.body;
                Some((b.view, b.seq, b.digest))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn new_primary_proposes_after_its_new_view() {
    let (mut p, _, _) = new_primary_with_o();
    let a = p.client(request(3, 1, b"new".to_vec()));
    let props = proposals(&a);
    assert_eq!(props.len(), 1);
    assert_eq!((props[0].0, props[0].1), (1, 2), "seq 1 is taken by O");
}

#[test]
fn restored_new_primary_does_not_reuse_the_sequence_numbers_of_its_new_view() {
    let (p, wal, o) = new_primary_with_o();
    let cfg = p.r.config().clone();
    let r = Replica::restore(
        cfg,
        1,
        replica_key(1).clone(),
        &wal,
        0,
        ClientRecords::Complete(Vec::new()),
        p.now,
    )
    .unwrap();
    assert_eq!((r.view(), r.status()), (1, Status::Normal));
    let mut p = Probe {
        r,
        verifier: p.verifier,
        now: p.now,
    };
    p.actions();
    let a = p.client(request(3, 1, b"new".to_vec()));
    let props = proposals(&a);
    assert_eq!(props.len(), 1, "the restarted primary proposes the request");
    for (view, seq, digest) in props {
        assert_eq!(view, 1);
        for (s, d) in &o {
            assert!(
                seq != *s || digest == *d,
                "restarted primary proposed {digest:?} at view 1 seq {seq}, where its new \
                 view proposed {d:?}"
            );
        }
    }
}

fn ms(t: u64) -> Instant {
    Instant::ZERO.plus(Duration::from_millis(t))
}

/// Delivers the primary's pre-prepare for `(0, seq)` of `batch`, the prepare of
/// replica 3 and the commits of 0 and 3, so that replica 2 executes it.
fn order_and_commit(p: &mut Probe, seq: Seq, batch: &Batch) {
    let d = batch.digest();
    p.deliver(0, pre_prepare_msg(0, seq, batch.clone()));
    p.deliver(3, Message::Prepare(prepare(0, seq, d, 3)));
    p.deliver(0, Message::Commit(commit(0, seq, d, 0)));
    let a = p.deliver(3, Message::Commit(commit(0, seq, d, 3)));
    assert!(executed(&a).contains(&seq), "seq {seq} commits");
}

#[test]
fn a_request_the_primary_leaves_unordered_replaces_it_at_half_the_timeout() {
    let mut p = Probe::new(2);
    p.client(request(0, 1, vec![]));
    assert_eq!(p.r.unordered_requests(), 1);
    assert_eq!(
        p.r.order_deadline(),
        Some(ms(200)),
        "T/2 after it was learnt"
    );
    assert_eq!(view_change_to(&p.at(199)), None);
    assert_eq!(view_change_to(&p.at(200)), Some(1));
    assert_eq!((p.r.view(), p.r.status()), (1, Status::ViewChange));
}

#[test]
fn an_ordered_request_stops_the_ordering_deadline() {
    let mut p = Probe::new(2);
    let req = request(0, 1, vec![]);
    p.client(req.clone());
    p.at(150);
    p.deliver(
        0,
        pre_prepare_msg(
            0,
            1,
            Batch {
                requests: vec![req],
            },
        ),
    );
    assert_eq!(p.r.unordered_requests(), 0);
    assert_eq!(p.r.order_deadline(), None);
    // only the request timer (T) remains, for a request that does not execute
    assert_eq!(view_change_to(&p.at(399)), None);
    assert_eq!(p.r.view(), 0);
}

/// The slow primary: it orders other requests, which execute, so the request timer
/// keeps restarting; the one it sits on still replaces it at T/2.
#[test]
fn progress_on_other_requests_does_not_reset_the_ordering_deadline() {
    let mut p = Probe::new(2);
    p.client(request(0, 1, vec![]));
    for (i, t) in [(1u64, 50u64), (2, 120), (3, 190)] {
        p.at(t);
        let other = request(1, i, vec![]);
        p.client(other.clone());
        let batch = Batch {
            requests: vec![other],
        };
        order_and_commit(&mut p, i, &batch);
        p.execute(i, &batch);
    }
    assert_eq!(p.r.unordered_requests(), 1);
    assert_eq!(view_change_to(&p.at(199)), None);
    assert_eq!(view_change_to(&p.at(200)), Some(1));
}

/// A full pipeline is a reason to wait: the clock runs only while the primary could
/// have proposed.
#[test]
fn the_ordering_deadline_does_not_run_while_the_pipeline_is_full() {
    // full batches of one request each
    let mut cfg = Config::new(pubkeys());
    cfg.max_batch = 1;
    let mut p = Probe::with_config(2, cfg);
    let depth = p.r.config().pipeline_depth;
    let batches: Vec<Batch> = (1..=depth)
        .map(|i| Batch {
            requests: vec![request(1, i, vec![])],
        })
        .collect();
    for (i, batch) in batches.iter().enumerate() {
        p.deliver(0, pre_prepare_msg(0, i as Seq + 1, batch.clone()));
    }
    p.client(request(0, 1, vec![]));
    assert_eq!(p.r.unordered_requests(), 1);
    assert_eq!(p.r.order_deadline(), None, "no room: nothing to blame");
    p.at(300);
    assert_eq!(p.r.view(), 0);
    // seq 1 executes at 300: room from now on, T/2 from here
    order_and_commit(&mut p, 1, &batches[0]);
    p.execute(1, &batches[0]);
    assert_eq!(p.r.order_deadline(), Some(ms(500)));
    assert_eq!(view_change_to(&p.at(499)), None);
    assert_eq!(view_change_to(&p.at(500)), Some(1));
}

/// The primary itself and a backup in a view change keep no ordering deadline.
#[test]
fn the_ordering_deadline_is_a_backup_rule_of_the_normal_case() {
    let mut p = Probe::new(0);
    p.client(request(0, 1, vec![]));
    assert_eq!(p.r.unordered_requests(), 0);
    assert_eq!(p.r.order_deadline(), None);

    let mut p = Probe::new(2);
    p.client(request(0, 1, vec![]));
    for r in [0, 3] {
        p.deliver(
            r,
            Message::ViewChange(Box::new(view_change(1, 0, vec![], r))),
        );
    }
    assert_eq!(p.r.status(), Status::ViewChange, "joined on f+1");
    assert_eq!(p.r.unordered_requests(), 0);
    assert_eq!(p.r.order_deadline(), None);
}

/// A replica serves the snapshot of its own checkpoint as soon as it has one, before it
/// holds the proof that it is stable: the asker already holds that proof (it learnt it
/// from the others' checkpoint messages) and checks the digest against it.
#[test]
fn own_checkpoint_is_served_before_it_is_stable_here() {
    let mut p = Probe::new(2);
    for seq in 1..=K {
        let batch = Batch {
            requests: vec![request(1, seq, vec![])],
        };
        order_and_commit(&mut p, seq, &batch);
        p.execute(seq, &batch);
    }
    assert_eq!(p.r.last_executed(), K);
    assert_eq!(
        p.r.stable_checkpoint(),
        0,
        "only our own checkpoint message so far"
    );
    let serves = |a: &[Action]| {
        a.iter()
            .filter_map(|x| match x {
                Action::ServeState { to, seq } => Some((*to, *seq)),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    let a = p.deliver(1, Message::StateRequest { seq: K });
    assert_eq!(serves(&a), vec![(1, K)]);
    // a checkpoint it has not reached is not served
    let a = p.deliver(1, Message::StateRequest { seq: 2 * K });
    assert_eq!(serves(&a), vec![]);
}

/// A checkpoint that becomes stable while the batches up to it are already with the
/// executor starts no state transfer (a snapshot installed after them would move the
/// ledger back under them), and the replica's own digest is checked against the proof
/// when it gets there.
#[test]
fn a_stable_checkpoint_already_dispatched_is_not_fetched() {
    let run = |own_digest: Digest| {
        let mut p = Probe::new(2);
        let batches: Vec<Batch> = (1..=K)
            .map(|seq| Batch {
                requests: vec![request(1, seq, vec![])],
            })
            .collect();
        for (i, batch) in batches.iter().enumerate() {
            order_and_commit(&mut p, i as Seq + 1, batch);
        }
        assert_eq!(p.r.last_executed(), 0, "dispatched, not executed yet");
        let mut a = Vec::new();
        for r in [0, 1, 3] {
            a.extend(p.deliver(r, Message::Checkpoint(checkpoint(K, state_digest(K), r))));
        }
        assert_eq!(p.r.stable_checkpoint(), K);
        assert!(
            !a.iter().any(|x| matches!(x, Action::FetchState { .. })),
            "{a:?}"
        );
        assert!(!p.r.is_fetching_state());
        for (i, batch) in batches.iter().enumerate().take(K as usize - 1) {
            p.execute(i as Seq + 1, batch);
        }
        // the last batch, with the digest the executor reports
        p.execute_with_digest(K, &batches[K as usize - 1], Some(own_digest));
        (p.r.last_executed(), p.r.halted().map(str::to_string))
    };
    assert_eq!(run(state_digest(K)), (K, None));
    let (_, halted) = run(Digest::of(b"diverged"));
    assert!(
        halted.is_some_and(|h| h.contains("contradicts the stable checkpoint")),
        "a diverged replica must halt"
    );
}

/// Beyond f traitors can sign a second commit certificate for a sequence number this
/// replica already committed. It halts once, and says nothing after its `Halt`, even
/// though the same message carries another such certificate and one that would
/// otherwise produce evidence.
#[test]
fn a_halted_replica_says_nothing_after_its_halt() {
    let mut p = Probe::new(2);
    // both dispatched to the executor, not yet executed
    order_and_commit(&mut p, 1, &b(1));
    order_and_commit(&mut p, 2, &b(4));
    p.deliver(0, pre_prepare_msg(0, 3, b(5)));
    let cert = |seq: Seq, batch: Batch| {
        let d = batch.digest();
        pbft_protocol::CommittedProof {
            pre_prepare: signed_pp(0, seq, d),
            batch,
            commits: [0, 1, 3].iter().map(|&r| commit(0, seq, d, r)).collect(),
        }
    };
    let a = p.deliver(
        1,
        Message::Committed {
            stable_proof: Vec::new(),
            proofs: vec![cert(1, b(2)), cert(2, b(3)), cert(3, b(6))],
        },
    );
    let halt = a
        .iter()
        .position(|x| matches!(x, Action::Halt { .. }))
        .expect("a second commit certificate at seq 1 halts the replica");
    assert_eq!(
        halt,
        a.len() - 1,
        "actions after the halt: {:?}",
        &a[halt..]
    );
    assert!(p
        .r
        .halted()
        .is_some_and(|h| h.contains("two different batches")));
    // and nothing afterwards either
    assert!(p.at(60_000).is_empty());
    assert!(p
        .deliver(3, Message::Commit(commit(0, 3, b(5).digest(), 3)))
        .is_empty());
}

/// A laggard that learns a later view from its new view (it never saw the view change)
/// times the requests it waits for from when that view started: the new primary is
/// not blamed for the delay of the old one.
#[test]
fn a_laggard_joining_a_later_view_gives_its_primary_the_whole_ordering_deadline() {
    let mut p = Probe::new(2);
    p.client(request(0, 1, vec![]));
    assert_eq!(p.r.order_deadline(), Some(ms(200)));
    p.now = ms(150);
    let vcs = [0, 1, 3]
        .iter()
        .map(|r| view_change(3, 0, vec![], *r))
        .collect();
    p.deliver(3, Message::NewView(Box::new(honest_new_view(3, vcs))));
    assert_eq!((p.r.view(), p.r.status()), (3, Status::Normal));
    assert_eq!(p.r.unordered_requests(), 1);
    assert_eq!(
        p.r.order_deadline(),
        Some(ms(350)),
        "T/2 after view 3 began"
    );
}

/// The batches up to 2K are with the executor when checkpoint 2K becomes stable on the
/// others' votes. The replica's own checkpoint at K, below it, proves nothing any more
/// and is not announced; the one at 2K is.
#[test]
fn an_own_checkpoint_below_the_stable_one_is_not_announced() {
    let mut p = Probe::new(2);
    let batches: Vec<Batch> = (1..=2 * K)
        .map(|seq| Batch {
            requests: vec![request(1, seq, vec![])],
        })
        .collect();
    for (i, batch) in batches.iter().enumerate() {
        order_and_commit(&mut p, i as Seq + 1, batch);
    }
    for r in [0, 1, 3] {
        p.deliver(
            r,
            Message::Checkpoint(checkpoint(2 * K, state_digest(2 * K), r)),
        );
    }
    assert_eq!(p.r.stable_checkpoint(), 2 * K);
    let mut announced = Vec::new();
    for (i, batch) in batches.iter().enumerate() {
        let a = p.execute(i as Seq + 1, batch);
        for m in broadcasts(&a) {
            if let Message::Checkpoint(c) = m {
                announced.push(c.body.seq);
            }
        }
    }
    assert_eq!(announced, vec![2 * K]);
    assert_eq!(p.r.halted(), None);
}

/// The requests a pre-prepare carries never passed the client-window check of a
/// direct request: still, a backup keeps no more of one client's requests waiting
/// than the window.
#[test]
fn pre_prepares_cannot_make_a_backup_keep_more_than_a_client_window_of_requests() {
    let mut p = Probe::new(2);
    let window = p.r.config().client_window;
    let per_batch = p.r.config().max_batch as u64;
    let mut rid = 1;
    for seq in 1..=3 {
        let batch = Batch {
            requests: (rid..rid + per_batch)
                .map(|i| request(1, i, vec![]))
                .collect(),
        };
        rid += per_batch;
        p.deliver(0, pre_prepare_msg(0, seq, batch));
    }
    assert!(rid - 1 > window);
    assert_eq!(p.r.waiting_requests() as u64, window);
}

/// The executor reports only what it was handed: a result for a sequence number never
/// dispatched breaks the driver's contract, and halts the replica.
#[test]
fn a_result_for_a_batch_never_dispatched_halts_the_replica() {
    let mut p = Probe::new(2);
    let batch = Batch {
        requests: vec![request(1, 1, vec![])],
    };
    order_and_commit(&mut p, 1, &batch);
    p.execute(1, &batch);
    assert_eq!(p.r.halted(), None);
    p.execute(2, &batch);
    assert!(
        p.r.halted()
            .is_some_and(|h| h.contains("executor reported seq 2")),
        "{:?}",
        p.r.halted()
    );
    assert_eq!(p.r.last_executed(), 1);
}

// ------------------------------------------------------------ timers follow requests

/// Keeps `depth` pre-prepares of `make(seq)` in flight at backup 2 from t = 0: every
/// 50 ms the lowest one commits and executes and the primary proposes the next, until
/// `until_ms` or until the backup leaves view 0 (the others' checkpoints move the
/// window along). Returns when it left, if it did.
fn busy_pipeline(p: &mut Probe, until_ms: u64, make: impl Fn(Seq) -> Batch) -> Option<u64> {
    let depth = p.r.config().pipeline_depth;
    for seq in 1..=depth {
        p.deliver(0, pre_prepare_msg(0, seq, make(seq)));
    }
    let mut next = depth + 1;
    let mut executed_up_to = 0;
    let mut t = 0;
    while t + 50 <= until_ms {
        t += 50;
        if view_change_to(&p.at(t)).is_some() || p.r.status() != Status::Normal {
            return Some(t);
        }
        executed_up_to += 1;
        let batch = make(executed_up_to);
        order_and_commit(p, executed_up_to, &batch);
        let a = p.execute(executed_up_to, &batch);
        if view_change_to(&a).is_some() || p.r.status() != Status::Normal {
            return Some(t);
        }
        if executed_up_to.is_multiple_of(K) {
            for r in [0, 3] {
                let d = state_digest(executed_up_to);
                p.deliver(r, Message::Checkpoint(checkpoint(executed_up_to, d, r)));
            }
        }
        p.deliver(0, pre_prepare_msg(0, next, make(next)));
        next += 1;
    }
    None
}

/// A full batch of client 1's requests for `seq` (`max_batch` of them).
fn full_batch(max_batch: usize, seq: Seq) -> Batch {
    let first = (seq - 1) * max_batch as u64 + 1;
    Batch {
        requests: (first..first + max_batch as u64)
            .map(|rid| request(1, rid, vec![]))
            .collect(),
    }
}

/// PBFT §4.4: the request timer stops when the request it waits for executes, not when
/// anything executes. The primary keeps its pipeline full of full batches of other
/// requests (so the ordering deadline, which excuses a primary busy with full batches,
/// never runs) and leaves out the one request this backup has had from the start: the
/// timer started for it fires T later, however much executes meanwhile.
#[test]
fn the_request_timer_waits_for_its_own_request_not_for_progress() {
    let mut cfg = Config::new(pubkeys());
    cfg.max_batch = 2;
    let mut p = Probe::with_config(2, cfg);
    p.client(request(0, 1, vec![]));
    let left = busy_pipeline(&mut p, 2000, |seq| full_batch(2, seq));
    assert_eq!(left, Some(400), "T after the request arrived");
    assert_eq!((p.r.view(), p.r.status()), (1, Status::ViewChange));
}

/// The timer restarts for the next waiting request when its own executes.
#[test]
fn the_request_timer_restarts_for_the_next_request_when_its_own_executes() {
    let mut p = Probe::new(2);
    let (x, y) = (request(0, 1, vec![]), request(1, 1, vec![]));
    p.client(x.clone());
    p.at(100);
    p.client(y.clone());
    // both ordered (so no ordering deadline runs), y behind x
    let (bx, by) = (Batch { requests: vec![x] }, Batch { requests: vec![y] });
    p.deliver(0, pre_prepare_msg(0, 1, bx.clone()));
    p.deliver(0, pre_prepare_msg(0, 2, by));
    p.at(300);
    order_and_commit(&mut p, 1, &bx);
    p.execute(1, &bx);
    // y waits from 100, but the timer for it starts when x executes, at 300
    assert_eq!(view_change_to(&p.at(699)), None);
    assert_eq!(view_change_to(&p.at(700)), Some(1));
}

/// The censor: a primary that keeps its pipeline full with null batches while leaving
/// out a request the backup has had for T/2. Null batches are no excuse: the backup
/// changes view T/2 after it learnt the request.
#[test]
fn a_pipeline_full_of_null_batches_does_not_excuse_leaving_a_request_out() {
    let mut p = Probe::new(2);
    p.client(request(0, 1, vec![]));
    let left = busy_pipeline(&mut p, 2000, |_| Batch::null());
    assert_eq!(left, Some(200), "T/2 after the request arrived");
}

/// Under-full batches of other requests are no excuse either: an honest primary
/// proposes a batch with room to spare only when it has nothing else waiting.
#[test]
fn a_pipeline_full_of_under_full_batches_does_not_excuse_leaving_a_request_out() {
    let mut p = Probe::new(2);
    p.client(request(0, 1, vec![]));
    let left = busy_pipeline(&mut p, 2000, |seq| Batch {
        requests: vec![request(1, seq, vec![])],
    });
    assert_eq!(left, Some(200), "T/2 after the request arrived");
}

/// The ordering clock adds up the time the primary had room, even when a full
/// pipeline interrupts it: a primary cannot reset it by filling its pipeline now and
/// then.
#[test]
fn the_ordering_clock_is_not_reset_by_a_full_pipeline_now_and_then() {
    let mut cfg = Config::new(pubkeys());
    cfg.max_batch = 1;
    let mut p = Probe::with_config(2, cfg);
    p.client(request(0, 1, vec![]));
    // room from 0 to 150: 150 ms of the 200 used up
    p.at(150);
    // then a pipeline full of full batches (one request each) for 100 ms
    let depth = p.r.config().pipeline_depth;
    let batches: Vec<Batch> = (1..=depth).map(|s| full_batch(1, s)).collect();
    for (i, batch) in batches.iter().enumerate() {
        p.deliver(0, pre_prepare_msg(0, i as Seq + 1, batch.clone()));
    }
    assert_eq!(
        p.r.order_deadline(),
        None,
        "paused while the pipeline is full"
    );
    assert_eq!(view_change_to(&p.at(250)), None);
    // seq 1 executes at 250: room again, 50 ms left
    order_and_commit(&mut p, 1, &batches[0]);
    p.execute(1, &batches[0]);
    assert_eq!(p.r.order_deadline(), Some(ms(300)));
    assert_eq!(view_change_to(&p.at(299)), None);
    assert_eq!(view_change_to(&p.at(300)), Some(1));
}

// ------------------------------------------------------------ requests reach the primary

/// A request another validator relays to a backup is forwarded to the primary at once
/// (once), or the backup would blame the primary for a request it never had.
#[test]
fn a_relayed_request_is_forwarded_to_the_primary_once() {
    let mut p = Probe::new(2);
    let x = request(0, 1, vec![]);
    let forwarded = |a: &[Action]| {
        a.iter()
            .filter(|x| {
                matches!(
                    x,
                    Action::Send {
                        to: 0,
                        msg: Message::Request(_)
                    }
                )
            })
            .count()
    };
    let a = p.deliver(3, Message::Request(x.clone()));
    assert_eq!(forwarded(&a), 1, "forwarded to the primary");
    assert_eq!(p.r.waiting_requests(), 1);
    let a = p.deliver(3, Message::Request(x.clone()));
    assert_eq!(forwarded(&a), 0, "once per request");
    let a = p.deliver(1, Message::Request(x));
    assert_eq!(forwarded(&a), 0, "once per request, whoever relays it");
    // a request the primary itself sent is not sent back to it
    let a = p.deliver(0, Message::Request(request(1, 1, vec![])));
    assert_eq!(forwarded(&a), 0);
}

// ------------------------------------------------------------ who may submit

fn two_clients_config() -> Config {
    let mut cfg = Config::new(pubkeys());
    cfg.clients =
        pbft_protocol::ClientKeys::listed([client_key(0).public(), client_key(1).public()]);
    cfg
}

/// A batch holding a request from a key the cluster does not know is invalid, like
/// one holding a request with a bad signature: the backup does not prepare it, and
/// the primary's signed header over that very batch is evidence against it.
#[test]
fn a_batch_holding_an_unknown_keys_request_is_evidence_against_the_primary() {
    let mut p = Probe::with_config(2, two_clients_config());
    let batch = Batch {
        requests: vec![request(1, 1, vec![]), request(2, 1, vec![])],
    };
    let a = p.deliver(0, pre_prepare_msg(0, 1, batch));
    assert_eq!(sent_prepare(&a), None);
    assert_eq!(evidence_kinds(&a), vec!["bad_pre_prepare"]);
    assert_eq!(view_change_to(&a), Some(1));
}

/// The new view's `O` takes pipeline slots whatever its batches hold: the new primary
/// had to re-propose them, and cannot propose more until they execute. A backup does
/// not blame it for a request that waits behind them, though they are null or
/// under-full.
#[test]
fn a_pipeline_taken_by_the_new_views_o_excuses_the_primary() {
    let mut p = Probe::new(2);
    let depth = p.r.config().pipeline_depth;
    // a certificate at seq `depth`: O is `depth - 1` null batches and one of a request
    let cert = prepared_cert(0, depth, b(1), &[2, 3]);
    let vcs = [0, 1, 3]
        .into_iter()
        .map(|r| view_change(1, 0, vec![cert.clone()], r))
        .collect();
    p.deliver(1, Message::NewView(Box::new(honest_new_view(1, vcs))));
    assert_eq!((p.r.view(), p.r.status()), (1, Status::Normal));
    p.client(request(1, 10, vec![]));
    assert_eq!(p.r.unordered_requests(), 1);
    assert_eq!(p.r.order_deadline(), None, "O fills the pipeline");
    assert_eq!(view_change_to(&p.at(300)), None);
}
