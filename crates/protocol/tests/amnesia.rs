//! A validator that lost its consensus log (a wiped disk) must not vote where it may
//! have voted before (issue 20, item 9): it recovers first (`pbft_protocol::recovery`).

mod common;

use common::*;
use pbft_protocol::{Action, Batch, Message, Replica, Seq, WalRecord};

fn is_vote(a: &Action) -> bool {
    matches!(
        a,
        Action::Broadcast {
            msg: Message::Prepare(_)
                | Message::Commit(_)
                | Message::ViewChange(_)
                | Message::NewView(_)
                | Message::PrePrepare { .. }
        } | Action::Send {
            msg: Message::Prepare(_)
                | Message::Commit(_)
                | Message::ViewChange(_)
                | Message::NewView(_)
                | Message::PrePrepare { .. },
            ..
        }
    )
}

fn votes(actions: &[Action]) -> usize {
    actions.iter().filter(|a| is_vote(a)).count()
}

fn batch(i: u8) -> Batch {
    Batch {
        requests: vec![request(i % 4, 1 + u64::from(i), vec![i])],
    }
}

fn reply(nonce: u64, stable: Seq) -> Message {
    Message::RecoveryReply {
        nonce,
        stable_proof: checkpoint_proof(stable),
        blank: false,
    }
}

fn blank_reply(nonce: u64) -> Message {
    Message::RecoveryReply {
        nonce,
        stable_proof: Vec::new(),
        blank: true,
    }
}

/// Checkpoint messages for `seq` from three replicas other than 2: stable at replica 2.
fn make_stable(p: &mut Probe, seq: Seq) -> Vec<Action> {
    let mut out = Vec::new();
    for r in [0, 1, 3] {
        out.extend(p.deliver(
            r,
            Message::Checkpoint(checkpoint(seq, state_digest(seq), r)),
        ));
    }
    out
}

#[test]
fn a_replica_started_without_its_log_asks_and_logs_that_it_recovers() {
    let mut p = Probe::recovering(2, 77);
    let first = p.actions();
    assert!(
        first.iter().any(|a| matches!(
            a,
            Action::Persist(WalRecord::Recovering {
                nonce: 77,
                bound: None
            })
        )),
        "{first:?}"
    );
    assert!(
        first.iter().any(|a| matches!(
            a,
            Action::Broadcast {
                msg: Message::RecoveryQuery { nonce: 77 }
            }
        )),
        "{first:?}"
    );
    assert!(p.r.is_recovering());
    assert_eq!(p.r.recovery_bound(), None);
    // unanswered, it asks again on its ticks
    let later = p.at(1_000);
    assert!(
        later.iter().any(|a| matches!(
            a,
            Action::Broadcast {
                msg: Message::RecoveryQuery { nonce: 77 }
            }
        )),
        "{later:?}"
    );
}

/// The traitor's move: the primary offers the wiped backup, at a sequence number it may
/// have prepared before, a batch of its choice. Without the rule it prepares it.
#[test]
fn a_recovering_backup_does_not_prepare_a_pre_prepare() {
    let mut p = Probe::recovering(2, 1);
    p.actions();
    for seq in 1..=3u64 {
        let out = p.deliver(0, pre_prepare_msg(0, seq, batch(seq as u8)));
        assert_eq!(votes(&out), 0, "seq {seq}: {out:?}");
    }
    // nor does it commit on the others' votes
    let b = batch(1);
    let mut out = Vec::new();
    for r in [1, 3] {
        out.extend(p.deliver(r, Message::Prepare(prepare(0, 1, b.digest(), r))));
    }
    for r in [0, 1, 3] {
        out.extend(p.deliver(r, Message::Commit(commit(0, 1, b.digest(), r))));
    }
    assert_eq!(votes(&out), 0, "{out:?}");
}

#[test]
fn a_recovering_replica_sends_no_view_change_and_proposes_nothing() {
    // as a backup: its request timer runs out, and f+1 others change views
    let mut p = Probe::recovering(2, 1);
    p.actions();
    let mut out = p.client(request(0, 1, vec![1]));
    // a client request also reaches it relayed, so it is watched for the primary
    out.extend(p.deliver(3, Message::Request(request(1, 1, vec![2]))));
    for ms in (100..=5_000).step_by(100) {
        out.extend(p.at(ms));
        // a timer whose view change is refused stops: it must not fire again at once
        let next = p.r.next_timeout();
        assert!(next.is_none_or(|t| t > p.now), "at {ms} ms: {next:?}");
    }
    for r in [1, 3] {
        out.extend(p.deliver(
            r,
            Message::ViewChange(Box::new(view_change(1, 0, vec![], r))),
        ));
    }
    assert_eq!(votes(&out), 0, "{out:?}");
    assert_eq!(p.r.view(), 0);
    // as the primary of view 0
    let mut p = Probe::recovering(0, 1);
    p.actions();
    let out = p.client(request(1, 1, vec![1]));
    assert_eq!(votes(&out), 0, "{out:?}");
}

/// The bound is the highest proven stable checkpoint among q = 2f+1 answers from others,
/// plus two log windows. Answers to another nonce, or without a valid proof, do not
/// count.
#[test]
fn the_bound_is_the_highest_proven_answer_plus_two_windows() {
    let mut p = Probe::recovering(2, 5);
    p.actions();
    p.deliver(0, reply(6, 10 * K)); // another start's question
    p.deliver(
        1,
        Message::RecoveryReply {
            nonce: 5,
            // two checkpoints only: no proof
            stable_proof: checkpoint_proof(3 * K).into_iter().take(2).collect(),
            blank: false,
        },
    );
    p.deliver(0, reply(5, 0));
    p.deliver(3, reply(5, 2 * K));
    assert_eq!(p.r.recovery_bound(), None, "two valid answers only");
    p.deliver(1, reply(5, K));
    assert_eq!(p.r.recovery_bound(), Some(2 * K + 2 * L));
    // later answers change nothing
    p.deliver(0, reply(5, 4 * K));
    assert_eq!(p.r.recovery_bound(), Some(2 * K + 2 * L));
}

/// Once its stable checkpoint reaches the bound, it votes again: at sequence numbers
/// above the bound only, which it cannot have voted on before.
#[test]
fn it_votes_again_once_its_stable_checkpoint_reaches_the_bound() {
    let mut p = Probe::recovering(2, 5);
    p.actions();
    for r in [0, 1, 3] {
        p.deliver(r, reply(5, 0));
    }
    let bound = 2 * L;
    assert_eq!(p.r.recovery_bound(), Some(bound));
    // stable below the bound: still recovering
    make_stable(&mut p, bound - K);
    assert!(p.r.is_recovering());
    let out = p.deliver(0, pre_prepare_msg(0, bound, batch(1)));
    assert_eq!(votes(&out), 0, "{out:?}");
    let out = make_stable(&mut p, bound);
    assert!(!p.r.is_recovering());
    assert!(
        out.iter()
            .any(|a| matches!(a, Action::Persist(WalRecord::Recovered))),
        "{out:?}"
    );
    let out = p.deliver(0, pre_prepare_msg(0, bound + 1, batch(2)));
    assert!(
        out.iter().any(|a| matches!(
            a,
            Action::Broadcast {
                msg: Message::Prepare(p)
            } if p.body.seq == bound + 1
        )),
        "{out:?}"
    );
}

#[test]
fn a_replica_answers_a_recovering_peer_with_its_proven_stable_checkpoint() {
    let mut p = Probe::new(1);
    let out = p.deliver(2, Message::RecoveryQuery { nonce: 9 });
    assert!(
        out.iter().any(|a| matches!(
            a,
            Action::Send {
                to: 2,
                msg: Message::RecoveryReply { nonce: 9, stable_proof, blank: true }
            } if stable_proof.is_empty()
        )),
        "{out:?}"
    );
    // at most once per half tick per peer
    let again = p.deliver(2, Message::RecoveryQuery { nonce: 9 });
    assert!(
        !again.iter().any(|a| matches!(
            a,
            Action::Send {
                msg: Message::RecoveryReply { .. },
                ..
            }
        )),
        "{again:?}"
    );
    p.at(60);
    let later = p.deliver(2, Message::RecoveryQuery { nonce: 9 });
    assert!(
        later.iter().any(|a| matches!(
            a,
            Action::Send {
                msg: Message::RecoveryReply { .. },
                ..
            }
        )),
        "{later:?}"
    );
}

/// A crash while recovering does not end the recovery: the log says so, with the
/// bound once learnt; a restart after recovery ended votes as usual.
#[test]
fn recovery_survives_a_restart() {
    let cfg = pbft_protocol::Config::new(pubkeys());
    let key = replica_key(2).clone();
    let records = [WalRecord::Recovering {
        nonce: 4,
        bound: Some(3 * K),
    }];
    let r = Replica::restore(
        cfg.clone(),
        2,
        key.clone(),
        &records,
        0,
        pbft_protocol::ClientRecords::Complete(Vec::new()),
        pbft_protocol::Instant::ZERO,
    )
    .expect("restore");
    assert!(r.is_recovering());
    assert_eq!(r.recovery_bound(), Some(3 * K));
    let records = [
        WalRecord::Recovering {
            nonce: 4,
            bound: None,
        },
        WalRecord::Recovering {
            nonce: 4,
            bound: Some(3 * K),
        },
        WalRecord::Recovered,
    ];
    let r = Replica::restore(
        cfg,
        2,
        key,
        &records,
        0,
        pbft_protocol::ClientRecords::Complete(Vec::new()),
        pbft_protocol::Instant::ZERO,
    )
    .expect("restore");
    assert!(!r.is_recovering());
}

/// Every validator starting on an empty disk (the cluster's first start without
/// `--genesis`): when every other validator answers that it had signed nothing when
/// its question reached it, nothing was signed that it could contradict, and it votes
/// at once.
#[test]
fn when_every_other_validator_is_blank_the_cluster_is_starting() {
    let mut p = Probe::recovering(2, 3);
    p.actions();
    p.deliver(0, blank_reply(3));
    p.deliver(1, blank_reply(3));
    assert!(p.r.is_recovering(), "one validator has not answered");
    let out = p.deliver(3, blank_reply(3));
    assert!(!p.r.is_recovering());
    assert!(
        out.iter()
            .any(|a| matches!(a, Action::Persist(WalRecord::Recovered))),
        "{out:?}"
    );
    let out = p.deliver(0, pre_prepare_msg(0, 1, batch(1)));
    assert_eq!(votes(&out), 1, "{out:?}");
}

/// One validator that had signed something (it answers not blank) means the cluster is
/// past genesis: the replica waits for its bound like any recovering one.
#[test]
fn a_validator_past_genesis_means_a_bound_is_needed() {
    let mut p = Probe::recovering(2, 3);
    p.actions();
    p.deliver(0, blank_reply(3));
    p.deliver(1, blank_reply(3));
    p.deliver(3, reply(3, 0));
    assert!(p.r.is_recovering());
    assert_eq!(p.r.recovery_bound(), Some(2 * L));
}

/// A replica answers blank only while it has signed nothing and executed nothing.
#[test]
fn a_replica_that_voted_is_not_blank() {
    let mut p = Probe::new(1);
    assert!(p.r.is_blank());
    p.deliver(0, pre_prepare_msg(0, 1, batch(1)));
    assert!(!p.r.is_blank());
    let out = p.deliver(2, Message::RecoveryQuery { nonce: 1 });
    assert!(
        out.iter().any(|a| matches!(
            a,
            Action::Send {
                msg: Message::RecoveryReply { blank: false, .. },
                ..
            }
        )),
        "{out:?}"
    );
    // and after a restart from its log
    let cfg = pbft_protocol::Config::new(pubkeys());
    let logged = [WalRecord::View {
        view: 0,
        changing: false,
    }];
    let fresh = Replica::restore(
        cfg.clone(),
        1,
        replica_key(1).clone(),
        &logged,
        0,
        pbft_protocol::ClientRecords::Complete(Vec::new()),
        pbft_protocol::Instant::ZERO,
    )
    .expect("restore");
    assert!(fresh.is_blank(), "only the first record: signed nothing");
    let b = batch(1);
    let accepted = [WalRecord::Accepted {
        pre_prepare: signed_pp(0, 1, b.digest()),
        batch: b,
    }];
    let voted = Replica::restore(
        cfg,
        1,
        replica_key(1).clone(),
        &accepted,
        0,
        pbft_protocol::ClientRecords::Complete(Vec::new()),
        pbft_protocol::Instant::ZERO,
    )
    .expect("restore");
    assert!(!voted.is_blank(), "it prepared before the restart");
}

/// Requests that reached a recovering primary are proposed as soon as it votes again:
/// otherwise the backups' timers would replace it for what it was not allowed to do.
#[test]
fn a_primary_proposes_what_it_held_once_it_votes_again() {
    let mut p = Probe::recovering(0, 3);
    p.actions();
    let out = p.client(request(1, 1, vec![1]));
    assert_eq!(votes(&out), 0, "{out:?}");
    p.deliver(1, blank_reply(3));
    p.deliver(2, blank_reply(3));
    let out = p.deliver(3, blank_reply(3));
    assert!(!p.r.is_recovering());
    assert!(
        out.iter().any(|a| matches!(
            a,
            Action::Broadcast {
                msg: Message::PrePrepare { .. }
            }
        )),
        "{out:?}"
    );
}

/// The answer to one start's question is the state at the moment the question first
/// arrived: a replica that votes meanwhile still answers it blank (so that a genesis
/// start does not turn into a recovery under early load), and a later start's
/// question gets the truth.
#[test]
fn blank_is_judged_when_a_start_first_asks() {
    let mut p = Probe::new(1);
    let blank_of = |out: &[Action]| {
        out.iter().find_map(|a| match a {
            Action::Send {
                msg: Message::RecoveryReply { blank, .. },
                ..
            } => Some(*blank),
            _ => None,
        })
    };
    assert_eq!(
        blank_of(&p.deliver(2, Message::RecoveryQuery { nonce: 9 })),
        Some(true)
    );
    p.deliver(0, pre_prepare_msg(0, 1, batch(1)));
    assert!(!p.r.is_blank());
    p.at(100);
    assert_eq!(
        blank_of(&p.deliver(2, Message::RecoveryQuery { nonce: 9 })),
        Some(true)
    );
    p.at(200);
    assert_eq!(
        blank_of(&p.deliver(2, Message::RecoveryQuery { nonce: 10 })),
        Some(false)
    );
}

/// A recovering primary whose stable checkpoint reaches the bound by a proof (before
/// it executed anything) must not propose at the sequence numbers below it, where it
/// may have proposed before: it fetches the state first and proposes above.
#[test]
fn a_primary_that_recovers_by_a_stable_proof_proposes_above_it_only() {
    let mut p = Probe::recovering(0, 3);
    p.actions();
    p.client(request(1, 1, vec![1]));
    for r in [1, 2, 3] {
        p.deliver(r, reply(3, 0));
    }
    let bound = 2 * L;
    assert_eq!(p.r.recovery_bound(), Some(bound));
    // the first stable checkpoint it learns is at the bound (as from a catch-up answer)
    let mut out = Vec::new();
    for r in [1, 2, 3] {
        out.extend(p.deliver(
            r,
            Message::Checkpoint(checkpoint(bound, state_digest(bound), r)),
        ));
    }
    assert!(!p.r.is_recovering());
    let low: Vec<u64> = out
        .iter()
        .filter_map(|a| match a {
            Action::Broadcast {
                msg: Message::PrePrepare { pre_prepare, .. },
            } => Some(pre_prepare.body.seq),
            _ => None,
        })
        .filter(|s| *s <= bound)
        .collect();
    assert!(low.is_empty(), "proposed at {low:?}, at or below {bound}");
    assert!(p.r.is_fetching_state());
}

/// Restored while recovering, from a log that holds a new view it took (its O's
/// pre-prepares were not accepted): it signs no commit on the others' prepares.
#[test]
fn a_restored_recovering_replica_signs_no_commit_for_its_new_views_o() {
    let b = batch(1);
    let vcs: Vec<_> = [1, 2, 3]
        .iter()
        .map(|r| view_change(1, 0, vec![prepared_cert(0, 2, b.clone(), &[1, 2])], *r))
        .collect();
    let nv = honest_new_view(1, vcs);
    let null = nv.body.pre_prepares[0].body;
    assert_eq!((null.seq, null.digest), (1, Batch::null().digest()));
    let records = [
        WalRecord::Recovering {
            nonce: 1,
            bound: Some(10 * K),
        },
        WalRecord::View {
            view: 1,
            changing: false,
        },
        WalRecord::NewView(Box::new(nv)),
    ];
    let cfg = pbft_protocol::Config::new(pubkeys());
    let mut p = Probe::with_config(2, cfg.clone());
    p.r = Replica::restore(
        cfg,
        2,
        replica_key(2).clone(),
        &records,
        0,
        pbft_protocol::ClientRecords::Complete(Vec::new()),
        pbft_protocol::Instant::ZERO,
    )
    .expect("restore");
    assert!(p.r.is_recovering());
    p.actions();
    let mut out = Vec::new();
    for r in [0, 3] {
        out.extend(p.deliver(r, Message::Prepare(prepare(1, 1, null.digest, r))));
    }
    assert_eq!(votes(&out), 0, "{out:?}");
}
