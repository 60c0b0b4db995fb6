//! Batches fetched by digest (docs/protocol.md, "New view" and "Message sizes"): view
//! changes and new views name batches by digest only, so a replica that lacks one asks
//! for it (`FetchBatch`) and takes an answer (`BatchReply`) only if its digest is the
//! one a signed header names. Against a traitor:
//! - a wrong batch in answer is ignored, and the next peer is asked in time;
//! - batch replies nobody asked for are dropped without keeping anything;
//! - a peer asking again and again is served a bounded number of batches per view;
//! - the new primary does not send its new view before it holds every batch of `O`.

mod common;

use common::*;
use pbft_protocol::verify::Verifier;
use pbft_protocol::{Action, Batch, Config, Message, ReplicaId, Seq, Signed, Status};

fn b(i: usize) -> Batch {
    batch_pool()[i].clone()
}

fn fetches(actions: &[Action]) -> Vec<(ReplicaId, Seq)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send {
                to,
                msg: Message::FetchBatch { seq, .. },
            } => Some((*to, *seq)),
            _ => None,
        })
        .collect()
}

fn batch_replies(actions: &[Action]) -> usize {
    actions
        .iter()
        .filter(|a| {
            matches!(
                a,
                Action::Send {
                    msg: Message::BatchReply { .. },
                    ..
                }
            )
        })
        .count()
}

fn prepared_sent(actions: &[Action]) -> bool {
    actions.iter().any(|a| {
        matches!(
            a,
            Action::Broadcast {
                msg: Message::Prepare(_)
            }
        )
    })
}

/// Replica 2 in view 0 joins the view change to view 1 of replicas 0 and 3 and
/// receives an honest new view whose `O` re-proposes `b(1)` at seq 1, a batch prepared
/// in view 0 that replica 2 never saw. Returns the probe and its actions on the new
/// view.
fn backup_lacking_a_batch() -> (Probe, Vec<Action>) {
    let mut p = Probe::new(2);
    let vc0 = view_change(1, 0, vec![prepared_cert(0, 1, b(1), &[1, 3])], 0);
    let vc3 = view_change(1, 0, vec![], 3);
    p.deliver(0, Message::ViewChange(Box::new(vc0.clone())));
    let a = p.deliver(3, Message::ViewChange(Box::new(vc3.clone())));
    let mine = a
        .iter()
        .find_map(|x| match x {
            Action::Broadcast {
                msg: Message::ViewChange(vc),
            } => Some((**vc).clone()),
            _ => None,
        })
        .expect("f+1 view changes make it join");
    let a = p.deliver(
        1,
        Message::NewView(Box::new(honest_new_view(1, vec![vc0, mine, vc3]))),
    );
    assert_eq!((p.r.view(), p.r.status()), (1, Status::Normal));
    (p, a)
}

#[test]
fn a_backup_fetches_a_missing_batch_ignores_wrong_ones_and_completes_the_view_change() {
    let (mut p, a) = backup_lacking_a_batch();
    // it asks the new primary first, and does not prepare what it does not hold
    assert_eq!(fetches(&a), vec![(1, 1)]);
    assert!(!prepared_sent(&a));
    assert_eq!(p.r.wanted_batches(), 1);

    // the primary answers with another batch: ignored, nothing kept
    let a = p.deliver(
        1,
        Message::BatchReply {
            seq: 1,
            batch: b(2),
        },
    );
    assert!(!prepared_sent(&a), "prepared a batch of the wrong digest");
    assert_eq!((p.r.wanted_batches(), p.r.spare_batches()), (1, 0));

    // no answer that matches: after the retry interval the next peer is asked
    let a = p.at(250);
    let asked = fetches(&a);
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_ne!(asked[0].0, 1, "asked the same peer again");
    assert_eq!(asked[0].1, 1);

    // the right batch, from anyone: prepared at once
    let a = p.deliver(
        asked[0].0,
        Message::BatchReply {
            seq: 1,
            batch: b(1),
        },
    );
    assert!(prepared_sent(&a));
    assert_eq!(p.r.wanted_batches(), 0);
    let d = b(1).digest();
    let mut a = Vec::new();
    for r in [0, 3] {
        a.extend(p.deliver(r, Message::Prepare(prepare(1, 1, d, r))));
    }
    for r in [0, 1, 3] {
        a.extend(p.deliver(r, Message::Commit(commit(1, 1, d, r))));
    }
    assert_eq!(
        executed(&a),
        vec![1],
        "the re-proposed batch executes in view 1"
    );
}

#[test]
fn junk_and_unasked_batch_replies_keep_nothing_and_do_not_stall_the_fetch() {
    let (mut p, _) = backup_lacking_a_batch();
    let window = Config::new(pubkeys()).log_window;
    // a traitor floods batch replies: for the wanted seq with other batches, and for
    // every other seq of the window, unasked
    for round in 0..20 {
        for seq in 1..=window {
            let batch = b((round + seq as usize) % 5 + 2);
            let a = p.deliver(3, Message::BatchReply { seq, batch });
            assert!(a.is_empty(), "a junk batch reply caused {a:?}");
        }
    }
    assert_eq!((p.r.wanted_batches(), p.r.spare_batches()), (1, 0));
    // the fetch goes on: asked again at the deadline, and the right batch is taken
    let asked = fetches(&p.at(250));
    assert_eq!(asked.len(), 1, "{asked:?}");
    let a = p.deliver(
        asked[0].0,
        Message::BatchReply {
            seq: 1,
            batch: b(1),
        },
    );
    assert!(prepared_sent(&a));
    assert_eq!(p.r.wanted_batches(), 0);
    assert!(p.r.spare_batches() <= 1);
}

#[test]
fn a_replica_that_is_asked_again_and_again_serves_a_bounded_number_of_batches() {
    let mut p = Probe::new(3);
    p.deliver(0, pre_prepare_msg(0, 1, b(1)));
    let window = Config::new(pubkeys()).log_window as usize;
    let d = b(1).digest();
    let mut served = 0;
    for _ in 0..10 * window {
        served += batch_replies(&p.deliver(2, Message::FetchBatch { seq: 1, digest: d }));
    }
    assert_eq!(served, 2 * window, "batches served to one peer in one view");
    // a batch it does not hold, or the null batch, is never answered
    let a = p.deliver(
        1,
        Message::FetchBatch {
            seq: 1,
            digest: b(2).digest(),
        },
    );
    assert_eq!(batch_replies(&a), 0);
    let a = p.deliver(
        1,
        Message::FetchBatch {
            seq: 1,
            digest: Batch::null_digest(),
        },
    );
    assert_eq!(batch_replies(&a), 0);
    // another peer still gets its answer
    let a = p.deliver(1, Message::FetchBatch { seq: 1, digest: d });
    assert_eq!(batch_replies(&a), 1);
}

#[test]
fn the_new_primary_sends_its_new_view_only_with_every_batch_of_o() {
    let mut p = Probe::new(1);
    let cert = prepared_cert(0, 1, b(1), &[2, 3]);
    let mut a = Vec::new();
    for r in [2, 3] {
        a.extend(p.deliver(
            r,
            Message::ViewChange(Box::new(view_change(1, 0, vec![cert.clone()], r))),
        ));
    }
    let asked = fetches(&a);
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert!(
        [2, 3].contains(&asked[0].0),
        "asks a holder of the certificate first"
    );
    // a wrong batch does not make it send a new view
    let a = p.deliver(
        asked[0].0,
        Message::BatchReply {
            seq: 1,
            batch: b(4),
        },
    );
    assert!(!a.iter().any(|x| matches!(
        x,
        Action::Broadcast {
            msg: Message::NewView(_)
        }
    )));
    assert_eq!(p.r.status(), Status::ViewChange);
    // the right one does; the new view names the batch by digest
    let a = p.deliver(
        3,
        Message::BatchReply {
            seq: 1,
            batch: b(1),
        },
    );
    let nv: &Signed<pbft_protocol::NewView> = a
        .iter()
        .find_map(|x| match x {
            Action::Broadcast {
                msg: Message::NewView(nv),
            } => Some(&**nv),
            _ => None,
        })
        .expect("the new view goes out once the batch is here");
    assert_eq!(nv.body.pre_prepares.len(), 1);
    assert_eq!(nv.body.pre_prepares[0].body.digest, b(1).digest());
    assert_eq!((p.r.view(), p.r.status()), (1, Status::Normal));
}

/// A replica keeps the batch a later pre-prepare replaced, so that it can still serve
/// it when a new view names it again: replica 3 accepted `b(1)` at seq 1 in view 0,
/// then the new view 1 put the null batch there.
#[test]
fn a_batch_replaced_by_a_new_view_is_still_served() {
    let mut p = Probe::new(3);
    p.deliver(0, pre_prepare_msg(0, 1, b(1)));
    let v = Verifier::new(pubkeys());
    let req = v
        .verify_request(request(0, 1, vec![]))
        .expect("client signature");
    p.r.on_request(req, p.now);
    p.actions();
    p.at(400);
    // V holds a certificate for seq 2 only: O puts the null batch at seq 1
    let vcs = vec![
        view_change(1, 0, vec![prepared_cert(0, 2, b(2), &[2, 3])], 0),
        view_change(1, 0, vec![], 2),
        view_change(1, 0, vec![], 3),
    ];
    p.deliver(1, Message::NewView(Box::new(honest_new_view(1, vcs))));
    assert_eq!((p.r.view(), p.r.status()), (1, Status::Normal));
    let a = p.deliver(
        2,
        Message::FetchBatch {
            seq: 1,
            digest: b(1).digest(),
        },
    );
    assert_eq!(batch_replies(&a), 1, "the replaced batch is served");
    assert!(p.r.spare_batches() >= 1);
}
