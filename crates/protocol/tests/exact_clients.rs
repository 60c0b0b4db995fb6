//! A replica that restarted or installed a snapshot did not see every execution, yet it
//! must not take a long-executed request for a new one: it would forward it to the
//! primary, watch it and time it, and the honest primary (which drops it as executed)
//! would be blamed for leaving it out. A traitor adding its own view change makes that
//! f+1, and the view changes, in every view, with old signed requests as the supply.
//!
//! - restored from its log with the ledger's client windows, a backup's table is exact:
//!   an old request, from a client or relayed by a validator, is not watched, not
//!   timed and never starts a view change;
//! - after a snapshot install with the snapshot's windows, likewise;
//! - without the windows (the cluster does not list its client keys) the table is
//!   inexact, and an inexact table forwards what it cannot classify but never watches
//!   or times it;
//! - a request beyond its client's window that a traitor primary put in a batch is not
//!   kept, so it is never watched against the honest primaries of later views.

mod common;

use common::*;
use pbft_protocol::{
    Action, Batch, ClientRecords, Instant, Message, Replica, Seq, SignedRequest, WalRecord,
};

fn view_changes(actions: &[Action]) -> usize {
    actions
        .iter()
        .filter(|a| {
            matches!(
                a,
                Action::Broadcast {
                    msg: Message::ViewChange(_)
                }
            )
        })
        .count()
}

/// How many answers read from the ledger `actions` hold.
fn ledger_answers(actions: &[Action]) -> usize {
    actions
        .iter()
        .filter(|a| matches!(a, Action::ReplyFromLedger { .. }))
        .count()
}

fn forwarded_to_primary(actions: &[Action], req: &SignedRequest) -> bool {
    actions
        .iter()
        .any(|a| matches!(a, Action::Send { to: 0, msg: Message::Request(r) } if r == req))
}

/// Backup 1 of view 0 orders and executes `batches` (one per sequence number from 1),
/// and returns its log records.
fn run_backup(p: &mut Probe, batches: &[Batch]) -> Vec<WalRecord> {
    let mut wal = Vec::new();
    for (i, batch) in batches.iter().enumerate() {
        let seq = i as Seq + 1;
        let d = batch.digest();
        let mut a = p.deliver(0, pre_prepare_msg(0, seq, batch.clone()));
        for r in [2, 3] {
            a.extend(p.deliver(r, Message::Prepare(prepare(0, seq, d, r))));
        }
        for r in [0, 2, 3] {
            a.extend(p.deliver(r, Message::Commit(commit(0, seq, d, r))));
        }
        assert_eq!(executed(&a), vec![seq], "seq {seq} executes");
        a.extend(p.execute(seq, batch));
        wal.extend(a.into_iter().filter_map(|a| match a {
            Action::Persist(r) => Some(r),
            _ => None,
        }));
    }
    wal
}

/// Feeds `old` to the probe from a client and relayed by validator 2, then lets ten
/// view-change timeouts pass; returns every action.
fn replay_and_wait(p: &mut Probe, old: &SignedRequest) -> Vec<Action> {
    let start = p.now;
    let mut a = p.client(old.clone());
    a.extend(p.deliver(2, Message::Request(old.clone())));
    let t = p.r.config().view_timeout.as_millis() as u64;
    let start_ms = start.as_millis();
    for step in 1..=40 {
        a.extend(p.at(start_ms + step * t / 4));
    }
    a
}

#[test]
fn a_restored_backup_does_not_take_an_executed_request_for_a_new_one() {
    let mut p = Probe::new(1);
    let batches: Vec<Batch> = (1..=3)
        .map(|rid| Batch {
            requests: vec![request(0, rid, vec![rid as u8])],
        })
        .collect();
    let wal = run_backup(&mut p, &batches);
    let cfg = p.r.config().clone();
    // the ledger executed client 0's requests 1..=3
    let records = ledger_records(batches.iter().flat_map(|b| b.requests.iter()));
    let r =
        Replica::restore(cfg, 1, replica_key(1).clone(), &wal, 3, records, p.now).expect("restore");
    let mut p = Probe {
        r,
        verifier: p.verifier,
        now: p.now,
    };
    p.actions();
    let old = request(0, 2, vec![2]);
    let a = replay_and_wait(&mut p, &old);
    assert_eq!(
        view_changes(&a),
        0,
        "a restored backup started a view change against an honest primary over a request \
         that executed before its restart"
    );
    assert_eq!(
        p.r.unordered_requests(),
        0,
        "an executed request is not watched"
    );
    assert_eq!(
        p.r.waiting_requests(),
        0,
        "an executed request does not wait"
    );
    assert!(
        !forwarded_to_primary(&a, &old),
        "an exact table knows the request executed: nothing to forward"
    );
    // the client, which may have lost its replies with the restart, is answered from
    // the ledger (the relayed copy is not answered)
    let from_ledger: Vec<_> = a
        .iter()
        .filter_map(|a| match a {
            Action::ReplyFromLedger {
                client, request_id, ..
            } => Some((*client, *request_id)),
            _ => None,
        })
        .collect();
    assert_eq!(from_ledger, vec![(client_key(0).public(), 2)]);
}

/// Backup 1 installs the snapshot of checkpoint K, in which client 0 executed requests
/// 1..=3.
fn install_snapshot(p: &mut Probe) {
    p.deliver(
        0,
        Message::Committed {
            stable_proof: checkpoint_proof(K),
            proofs: Vec::new(),
        },
    );
    assert!(
        p.r.is_fetching_state(),
        "behind a stable checkpoint: state transfer"
    );
    p.r.on_state_offer(0, K, state_digest(K), p.now);
    let a = p.actions();
    assert!(
        a.iter()
            .any(|a| matches!(a, Action::InstallState { seq, .. } if *seq == K)),
        "the snapshot is approved"
    );
    let executed: Vec<SignedRequest> = (1..=3)
        .map(|rid| request(0, rid, vec![rid as u8]))
        .collect();
    p.r.on_state_transferred(K, state_digest(K), ledger_records(&executed), p.now);
    p.actions();
    assert_eq!(p.r.last_executed(), K);
}

#[test]
fn a_backup_that_installed_a_snapshot_does_not_take_an_executed_request_for_a_new_one() {
    let mut p = Probe::new(1);
    install_snapshot(&mut p);
    let old = request(0, 2, vec![2]);
    let a = replay_and_wait(&mut p, &old);
    assert_eq!(
        view_changes(&a),
        0,
        "after a snapshot install, a backup started a view change against an honest \
         primary over a request the snapshot had executed"
    );
    assert_eq!(
        p.r.unordered_requests(),
        0,
        "an executed request is not watched"
    );
    assert_eq!(
        p.r.waiting_requests(),
        0,
        "an executed request does not wait"
    );
}

#[test]
fn a_restored_backup_still_blames_a_primary_that_leaves_a_new_request_out() {
    // the control: the exact table takes client 0's request 4 for what it is, new
    let mut p = Probe::new(1);
    let batches: Vec<Batch> = (1..=3)
        .map(|rid| Batch {
            requests: vec![request(0, rid, vec![rid as u8])],
        })
        .collect();
    let wal = run_backup(&mut p, &batches);
    let records = ledger_records(batches.iter().flat_map(|b| b.requests.iter()));
    let cfg = p.r.config().clone();
    let r =
        Replica::restore(cfg, 1, replica_key(1).clone(), &wal, 3, records, p.now).expect("restore");
    let mut p = Probe {
        r,
        verifier: p.verifier,
        now: p.now,
    };
    p.actions();
    let fresh = request(0, 4, vec![4]);
    let a = p.client(fresh.clone());
    assert!(forwarded_to_primary(&a, &fresh));
    assert_eq!(p.r.unordered_requests(), 1, "a new request is watched");
    let a = replay_and_wait(&mut p, &fresh);
    assert!(view_changes(&a) > 0, "the primary never ordered it");
}

#[test]
fn an_inexact_table_forwards_what_it_cannot_classify_but_never_watches_or_times_it() {
    let mut p = Probe::new(1);
    let batches: Vec<Batch> = (1..=3)
        .map(|rid| Batch {
            requests: vec![request(0, rid, vec![rid as u8])],
        })
        .collect();
    let wal = run_backup(&mut p, &batches);
    let cfg = p.r.config().clone();
    let r = Replica::restore(
        cfg,
        1,
        replica_key(1).clone(),
        &wal,
        3,
        ClientRecords::Unknown,
        p.now,
    )
    .expect("restore");
    let mut p = Probe {
        r,
        verifier: p.verifier,
        now: p.now,
    };
    p.actions();
    // request 2 executed before the restart; the table cannot know
    let old = request(0, 2, vec![2]);
    let a = replay_and_wait(&mut p, &old);
    assert!(
        forwarded_to_primary(&a, &old),
        "the primary decides: it gets the request"
    );
    assert_eq!(
        view_changes(&a),
        0,
        "an unclassifiable request blamed the primary"
    );
    assert_eq!(p.r.unordered_requests(), 0, "not watched");
    assert_eq!(p.r.waiting_requests(), 0, "not kept");
    assert_eq!(p.r.order_deadline(), None);
}

#[test]
fn an_inexact_primary_orders_what_it_cannot_classify() {
    // a restarted primary that cannot tell proposes the request: at worst it executes
    // as a duplicate
    let cfg = Probe::new(0).r.config().clone();
    let r = Replica::restore(
        cfg,
        0,
        replica_key(0).clone(),
        &[],
        0,
        ClientRecords::Unknown,
        Instant::ZERO,
    )
    .expect("restore");
    let mut p = Probe {
        r,
        verifier: Probe::new(0).verifier,
        now: Instant::ZERO,
    };
    p.actions();
    let a = p.client(request(0, 7, vec![7]));
    assert!(
        a.iter().any(|a| matches!(
            a,
            Action::Broadcast {
                msg: Message::PrePrepare { batch, .. }
            } if batch.requests.len() == 1
        )),
        "{a:?}"
    );
}

/// A traitor primary puts a request beyond its client's window (a hostile client signs
/// any id) in a batch that it lets go no further. The backups keep what a pre-prepare
/// carries; had they kept this one, they would forward it to every later primary and
/// watch it, and every honest primary, which refuses it as beyond the window, would be
/// blamed: two backups hold it, so that is f+1 view changes in every view, for ever.
#[test]
fn a_request_beyond_the_window_in_a_traitors_batch_is_never_watched_in_later_views() {
    let mut p = Probe::new(2);
    let window = p.r.config().client_window;
    let beyond = request(0, 1 + window, vec![]);
    // the honest primary of view 1 refuses it
    let mut primary = Probe::new(1);
    let vcs: Vec<_> = [0, 2, 3].map(|r| view_change(1, 0, Vec::new(), r)).into();
    primary.deliver(
        2,
        Message::NewView(Box::new(honest_new_view(1, vcs.clone()))),
    );
    let a = primary.client(beyond.clone());
    assert!(
        !a.iter().any(|a| matches!(
            a,
            Action::Broadcast {
                msg: Message::PrePrepare { .. }
            }
        )),
        "an honest primary does not order a request beyond the window"
    );
    // the traitor primary of view 0 sends backup 2 a batch holding it
    p.deliver(
        0,
        pre_prepare_msg(
            0,
            1,
            Batch {
                requests: vec![beyond.clone()],
            },
        ),
    );
    // view 1 starts with an empty O: nothing prepared
    p.deliver(1, Message::NewView(Box::new(honest_new_view(1, vcs))));
    assert_eq!(
        (p.r.view(), p.r.status()),
        (1, pbft_protocol::Status::Normal)
    );
    let start = p.now.as_millis();
    let t = p.r.config().view_timeout.as_millis() as u64;
    let mut a = Vec::new();
    for step in 1..=40 {
        a.extend(p.at(start + step * t / 4));
    }
    assert_eq!(
        view_changes(&a),
        0,
        "backup 2 blamed the honest primary of view 1 for a request beyond the window"
    );
    assert_eq!(p.r.unordered_requests(), 0);
}

fn proposed(actions: &[Action]) -> Vec<Vec<(u8, u64)>> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Broadcast {
                msg: Message::PrePrepare { batch, .. },
            } => Some(
                batch
                    .requests
                    .iter()
                    .map(|r| {
                        let c = (0..4)
                            .find(|c| client_key(*c).public() == r.body.client)
                            .expect("a test client");
                        (c, r.body.request_id)
                    })
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

/// A backup that executed one of a client's requests before the primary did admits
/// the next id of that client's window, which the primary (its window not moved yet)
/// cannot admit. Had the primary dropped the forwarded request, the backup would watch
/// it and blame the primary after T/2 (a hostile client times its request for this,
/// and a traitor's view change makes it f+1). The primary orders it once its window
/// reaches it.
#[test]
fn a_primary_orders_a_forwarded_request_once_its_window_reaches_it() {
    let mut cfg = pbft_protocol::Config::new(pubkeys());
    cfg.client_window = 2;
    let mut backup = Probe::with_config(1, cfg.clone());
    let mut primary = Probe::with_config(0, cfg);
    let (r1, r2, r3) = (
        request(0, 1, vec![1]),
        request(0, 2, vec![2]),
        request(0, 3, vec![3]),
    );
    let mut a = primary.client(r1.clone());
    a.extend(primary.client(r2.clone()));
    assert_eq!(proposed(&a), vec![vec![(0, 1)], vec![(0, 2)]]);
    // seq 1 commits; the backup executes it first
    let b1 = Batch {
        requests: vec![r1.clone()],
    };
    let d = b1.digest();
    backup.deliver(0, pre_prepare_msg(0, 1, b1.clone()));
    for r in [2, 3] {
        backup.deliver(r, Message::Prepare(prepare(0, 1, d, r)));
    }
    let mut a = Vec::new();
    for r in [0, 2, 3] {
        a.extend(backup.deliver(r, Message::Commit(commit(0, 1, d, r))));
    }
    assert_eq!(executed(&a), vec![1]);
    backup.execute(1, &b1);
    // request 3 reaches the backup now: inside its window [2, 4), so it is forwarded
    // and watched
    let a = backup.client(r3.clone());
    assert!(forwarded_to_primary(&a, &r3));
    assert_eq!(backup.r.unordered_requests(), 1);
    // the primary, which has not executed seq 1, gets the forwarded request 3
    let a = primary.deliver(1, Message::Request(r3.clone()));
    assert!(
        proposed(&a).is_empty(),
        "beyond the primary's window [1, 3) for now"
    );
    // then seq 1 executes at the primary too: request 3 is ordered
    for r in [1, 2] {
        primary.deliver(r, Message::Prepare(prepare(0, 1, d, r)));
    }
    let mut a = Vec::new();
    for r in [1, 2] {
        a.extend(primary.deliver(r, Message::Commit(commit(0, 1, d, r))));
    }
    assert_eq!(executed(&a), vec![1]);
    let a = primary.execute(1, &b1);
    assert_eq!(
        proposed(&a),
        vec![vec![(0, 3)]],
        "the primary dropped the request the backup watches"
    );
}

/// A stranger replays a client's old request a thousand times: the receipt is read
/// from the ledger and signed once per retransmission interval, not once per replay.
#[test]
fn replays_of_an_old_request_are_answered_from_the_ledger_once_per_interval() {
    let mut p = Probe::new(1);
    install_snapshot(&mut p);
    let old = request(0, 2, vec![2]);
    let mut answered = 0;
    for _ in 0..1000 {
        answered += ledger_answers(&p.client(old.clone()));
    }
    assert_eq!(answered, 1, "one ledger answer for a thousand replays");
    // another executed request of the client is answered too
    assert_eq!(ledger_answers(&p.client(request(0, 1, vec![1]))), 1);
    // an honest client's retransmission a retransmission interval later is answered
    p.now = p.now.plus(p.r.config().retransmit_interval);
    assert_eq!(ledger_answers(&p.client(old.clone())), 1);
    assert_eq!(ledger_answers(&p.client(old)), 0);
}

/// Whoever holds a client's old signed requests replays them from connections of its
/// own, enough to use up every ledger answer of the interval: the client itself, asking
/// for one of its receipts over its own connection, is still answered (issue 23).
#[test]
fn replays_cannot_use_up_the_ledger_answers_a_client_asks_for() {
    let mut p = Probe::new(1);
    install_snapshot(&mut p);
    let cap = p.r.config().max_batch;
    // distinct signed requests under executed ids: each would cost a ledger read
    let mut answered = 0;
    for k in 0..(2 * cap) {
        answered += ledger_answers(&p.stranger(request(0, 1, vec![100 + k as u8])));
    }
    assert_eq!(
        answered, cap,
        "the replays' own budget is max_batch per interval"
    );
    // the client retransmits one of its requests over its own connection
    assert_eq!(
        ledger_answers(&p.client(request(0, 2, vec![2]))),
        1,
        "the client's own request was refused a ledger answer"
    );
}

/// A stranger's replay of the very request a client is about to ask for again is
/// answered (to the client's connections) without using up the answer to the client's
/// own retransmission in the same interval.
#[test]
fn a_replay_does_not_use_up_the_answer_to_the_clients_own_retransmission() {
    let mut p = Probe::new(1);
    install_snapshot(&mut p);
    let old = request(0, 2, vec![2]);
    assert_eq!(ledger_answers(&p.stranger(old.clone())), 1);
    assert_eq!(
        ledger_answers(&p.stranger(old.clone())),
        0,
        "once per interval"
    );
    assert_eq!(
        ledger_answers(&p.client(old.clone())),
        1,
        "the client's own is answered"
    );
    assert_eq!(ledger_answers(&p.client(old)), 0, "once per interval");
}
