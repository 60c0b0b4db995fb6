//! Restart from the write-ahead log: a replica rebuilt with `Replica::restore` never
//! contradicts what it sent before the crash.

use pbft_crypto::Keypair;
use pbft_protocol::new_view::compute_o;
use pbft_protocol::{
    Action, Batch, Checkpoint, ClientRecords, Config, Instant, Message, NewView, PrePrepare,
    Prepare, PreparedCert, PreparedProof, Replica, Request, Signed, Status, Verifier, ViewChange,
    WalRecord,
};

fn keys() -> Vec<Keypair> {
    (1..=4u8)
        .map(|i| Keypair::from_seed(&[i; 32]).unwrap())
        .collect()
}

fn drain(r: &mut Replica) -> Vec<Action> {
    std::iter::from_fn(|| r.poll_action()).collect()
}

/// Replica 1 becomes primary of view 1 with a new view whose O re-proposes seq 1. It
/// crashes before proposing anything else and restarts from its log. A fresh request must
/// then go to seq 2: proposing another batch at seq 1 would be equivocation.
#[test]
fn restored_new_primary_does_not_reuse_a_sequence_number_of_its_new_view() {
    let keys = keys();
    let cfg = Config::new(keys.iter().map(|k| k.public()).collect());
    let verifier = Verifier::new(cfg.validators.clone());
    let client = Keypair::from_seed(&[9; 32]).unwrap();
    let request = |id| {
        Signed::sign(
            Request {
                client: client.public(),
                request_id: id,
                op: vec![id as u8],
            },
            &client,
        )
    };
    // a batch prepared in view 0 at seq 1 (primary 0, prepares from 2 and 3)
    let batch = Batch {
        requests: vec![request(1)],
    };
    let digest = batch.digest();
    let pp = Signed::sign(
        PrePrepare {
            view: 0,
            seq: 1,
            digest,
        },
        &keys[0],
    );
    let prepares = [2u32, 3]
        .iter()
        .map(|r| {
            Signed::sign(
                Prepare {
                    view: 0,
                    seq: 1,
                    digest,
                    replica: *r,
                },
                &keys[*r as usize],
            )
        })
        .collect();
    let proof = PreparedProof {
        pre_prepare: pp,
        batch: batch.clone(),
        prepares,
    };
    let vc = |r: u32, prepared: Vec<PreparedCert>| {
        Message::ViewChange(Box::new(Signed::sign(
            ViewChange {
                new_view: 1,
                stable_seq: 0,
                checkpoint_proof: vec![],
                prepared,
                replica: r,
            },
            &keys[r as usize],
        )))
    };

    let mut primary = Replica::new(cfg.clone(), 1, keys[1].clone()).unwrap();
    let now = Instant(1_000);
    let mut wal = Vec::new();
    // the view changes name the batch by digest: the new primary, which lacks it,
    // fetches it from a sender of one of them before it sends its new view
    let reply = Message::BatchReply {
        seq: 1,
        batch: batch.clone(),
    };
    for (from, msg) in [
        (2, vc(2, vec![proof.cert()])),
        (3, vc(3, vec![proof.cert()])),
        (2, reply),
    ] {
        primary.on_message(verifier.verify(from, msg).unwrap(), now);
        for a in drain(&mut primary) {
            if let Action::Persist(rec) = a {
                wal.push(rec);
            }
        }
    }
    assert_eq!(
        primary.view(),
        1,
        "f+1 view changes make replica 1 join view 1"
    );
    assert!(
        wal.iter()
            .any(|r| matches!(r, WalRecord::NewView(nv) if nv.body.pre_prepares.len() == 1)),
        "the new primary sent a new view re-proposing seq 1"
    );

    // the log as a stable checkpoint leaves it: the view change to 1 and the record of
    // changing to 1 are superseded, the new view is not
    let superseded = WalRecord::superseded(&wal);
    assert!(superseded.iter().any(|s| *s), "{wal:?}");
    let wal: Vec<WalRecord> = wal
        .into_iter()
        .zip(superseded)
        .filter(|(_, s)| !s)
        .map(|(r, _)| r)
        .collect();
    assert!(wal.iter().any(|r| matches!(r, WalRecord::NewView(_))));

    // crash, restart from the log, and receive a fresh request
    let cfg_for_restart = cfg.clone();
    let mut restarted = Replica::restore(
        cfg,
        1,
        keys[1].clone(),
        &wal,
        0,
        ClientRecords::Complete(Vec::new()),
        Instant(2_000),
    )
    .unwrap();
    assert_eq!(restarted.view(), 1);
    let fresh = verifier.verify_request(request(2)).unwrap();
    restarted.on_request(fresh, Instant(2_001));
    let proposals: Vec<u64> = drain(&mut restarted)
        .into_iter()
        .filter_map(|a| match a {
            Action::Broadcast {
                msg: Message::PrePrepare { pre_prepare, .. },
            } => Some(pre_prepare.body.seq),
            _ => None,
        })
        .collect();
    assert_eq!(
        proposals,
        vec![2],
        "the fresh request must take seq 2, never seq 1 again"
    );

    // a crash between the new view's record and the record of its batch: the restarted
    // primary still never proposes at seq 1, and fetches the batch its new view names
    let lost: Vec<WalRecord> = wal
        .iter()
        .filter(|r| !matches!(r, WalRecord::Proposed { .. }))
        .cloned()
        .collect();
    assert!(lost.len() < wal.len(), "the batch was logged: {wal:?}");
    let mut restarted = Replica::restore(
        cfg_for_restart,
        1,
        keys[1].clone(),
        &lost,
        0,
        ClientRecords::Complete(Vec::new()),
        Instant(2_000),
    )
    .unwrap();
    let asked: Vec<u32> = drain(&mut restarted)
        .into_iter()
        .filter_map(|a| match a {
            Action::Send {
                to,
                msg: Message::FetchBatch { seq: 1, digest: d },
            } if d == digest => Some(to),
            _ => None,
        })
        .collect();
    assert_eq!(asked.len(), 1, "the lost batch is fetched");
    assert_eq!(restarted.wanted_batches(), 1);
    let reply = Message::BatchReply {
        seq: 1,
        batch: batch.clone(),
    };
    restarted.on_message(verifier.verify(asked[0], reply).unwrap(), Instant(2_001));
    drain(&mut restarted);
    assert_eq!(
        restarted.wanted_batches(),
        0,
        "the batch is back in its slot"
    );
    let fresh = verifier.verify_request(request(2)).unwrap();
    restarted.on_request(fresh, Instant(2_002));
    let proposals: Vec<u64> = drain(&mut restarted)
        .into_iter()
        .filter_map(|a| match a {
            Action::Broadcast {
                msg: Message::PrePrepare { pre_prepare, .. },
            } => Some(pre_prepare.body.seq),
            _ => None,
        })
        .collect();
    assert_eq!(
        proposals,
        vec![2],
        "seq 1 is the new view's, fetched or not"
    );
}

/// Records of old views are superseded by later records of the same log: every `View`
/// record but the last, an own view change once its view is installed or left, a new
/// view once left. Slot records are not (their stable checkpoint decides). A replica
/// restored from the log without the superseded records behaves as one restored from
/// the whole log: changing to view 2, it retransmits the very view change it logged;
/// as the installed primary of view 2, it answers a late view change with the very new
/// view it logged.
#[test]
fn records_of_old_views_are_superseded_by_later_ones() {
    let keys = keys();
    let cfg = Config::new(keys.iter().map(|k| k.public()).collect());
    let verifier = Verifier::new(cfg.validators.clone());
    let me = 2u32; // the primary of view 2
    let view = |view, changing| WalRecord::View { view, changing };
    let signed_vc = |w: u64, replica: u32| {
        let body = ViewChange {
            new_view: w,
            stable_seq: 0,
            checkpoint_proof: vec![],
            prepared: vec![],
            replica,
        };
        Signed::sign(body, &keys[replica as usize])
    };
    let vc = |w: u64| WalRecord::ViewChange(Box::new(signed_vc(w, me)));
    let signed_nv = |w: u64| {
        let body = NewView {
            view: w,
            view_changes: vec![],
            pre_prepares: vec![],
        };
        Signed::sign(body, &keys[(w % 4) as usize])
    };
    let nv = |w: u64| WalRecord::NewView(Box::new(signed_nv(w)));
    let own_checkpoint = WalRecord::Checkpoint(Signed::sign(
        Checkpoint {
            seq: cfg.checkpoint_interval,
            state_digest: pbft_crypto::Digest::of(b"state"),
            replica: me,
        },
        &keys[me as usize],
    ));
    let restore = |log: &[WalRecord]| {
        Replica::restore(
            cfg.clone(),
            me,
            keys[me as usize].clone(),
            log,
            0,
            ClientRecords::Complete(Vec::new()),
            Instant(1_000),
        )
        .expect("restore")
    };
    let pruned = |log: &[WalRecord]| -> Vec<WalRecord> {
        log.iter()
            .zip(WalRecord::superseded(log))
            .filter(|(_, s)| !s)
            .map(|(r, _)| r.clone())
            .collect()
    };
    // what a restored replica sends while its timers run, for 10 s of its time
    let sends = |mut r: Replica| {
        let mut out = drain(&mut r);
        for _ in 0..50 {
            let Some(t) = r.next_timeout() else { break };
            if t > Instant(11_000_000) {
                break;
            }
            r.on_timeout(t);
            out.extend(drain(&mut r));
        }
        out
    };

    // no view record yet: nothing is superseded
    assert_eq!(WalRecord::superseded(&[nv(1), vc(1)]), vec![false, false]);

    // view 1 installed, then a view change to 2 under way
    let mut log = vec![
        view(1, true),
        vc(1),
        view(1, false),
        nv(1),
        own_checkpoint,
        view(2, true),
        vc(2),
    ];
    assert_eq!(
        WalRecord::superseded(&log),
        vec![true, true, true, true, false, false, false]
    );
    let (full, cut) = (restore(&log), restore(&pruned(&log)));
    assert_eq!((cut.view(), cut.status()), (2, Status::ViewChange));
    let (full, cut) = (sends(full), sends(cut));
    assert_eq!(cut, full);
    let resent = Action::Broadcast {
        msg: Message::ViewChange(Box::new(signed_vc(2, me))),
    };
    assert!(
        cut.contains(&resent),
        "no retransmission of the logged view change: {cut:?}"
    );

    // view 2 installed: its view change and the changing record are superseded too,
    // its new view is not
    log.extend([view(2, false), nv(2)]);
    assert_eq!(
        WalRecord::superseded(&log),
        vec![true, true, true, true, false, true, true, false, false]
    );
    assert_eq!(
        pruned(&log).len(),
        3,
        "the checkpoint, view 2 and its new view"
    );
    let (mut full, mut cut) = (restore(&log), restore(&pruned(&log)));
    assert_eq!((cut.view(), cut.status()), (2, Status::Normal));
    let late = Message::ViewChange(Box::new(signed_vc(2, 0)));
    let mut answers = Vec::new();
    for r in [&mut full, &mut cut] {
        drain(r);
        r.on_message(
            verifier.verify(0, late.clone()).expect("valid"),
            Instant(2_000),
        );
        answers.push(drain(r));
    }
    assert_eq!(answers[0], answers[1]);
    let answer = Action::Send {
        to: 0,
        msg: Message::NewView(Box::new(signed_nv(2))),
    };
    assert!(answers[1].contains(&answer), "{:?}", answers[1]);
}

/// The new primary logs its new view before the stable checkpoint its V proves, with a
/// send in between. Restored from a log cut there, it adopts that checkpoint as
/// installing the new view did, so that O's slots, which reach L beyond it, lie inside
/// its window.
#[test]
fn restored_new_primary_adopts_the_checkpoint_its_new_view_proves() {
    let keys = keys();
    let cfg = Config::new(keys.iter().map(|k| k.public()).collect());
    let (k, l) = (cfg.checkpoint_interval, cfg.log_window);
    let me = 2u32; // the primary of view 2
    let state = pbft_crypto::Digest::of(b"state at K");
    let proof: Vec<Signed<Checkpoint>> = (0..3u32)
        .map(|r| {
            let body = Checkpoint {
                seq: k,
                state_digest: state,
                replica: r,
            };
            Signed::sign(body, &keys[r as usize])
        })
        .collect();
    // a batch prepared in view 0 at the top of the window of checkpoint K
    let client = Keypair::from_seed(&[9; 32]).unwrap();
    let request = Request {
        client: client.public(),
        request_id: 1,
        op: vec![1],
    };
    let batch = Batch {
        requests: vec![Signed::sign(request, &client)],
    };
    let (top, digest) = (k + l, batch.digest());
    let pp = PrePrepare {
        view: 0,
        seq: top,
        digest,
    };
    let cert = PreparedProof {
        pre_prepare: Signed::sign(pp, &keys[0]),
        prepares: [1u32, 3]
            .iter()
            .map(|r| {
                let body = Prepare {
                    view: 0,
                    seq: top,
                    digest,
                    replica: *r,
                };
                Signed::sign(body, &keys[*r as usize])
            })
            .collect(),
        batch,
    };
    let vc = |replica: u32, stable_seq, checkpoint_proof, prepared| {
        let body = ViewChange {
            new_view: 2,
            stable_seq,
            checkpoint_proof,
            prepared,
            replica,
        };
        Signed::sign(body, &keys[replica as usize])
    };
    let own = vc(me, 0, vec![], vec![]);
    let vcs = vec![
        own.clone(),
        vc(0, k, proof, vec![cert.cert()]),
        vc(3, 0, vec![], vec![]),
    ];
    let o = compute_o(&vcs.iter().map(|v| &v.body).collect::<Vec<_>>());
    assert_eq!((o.min_s, o.max_s), (k, top));
    let pre_prepares = o
        .entries
        .iter()
        .map(|e| {
            let body = PrePrepare {
                view: 2,
                seq: e.seq,
                digest: e.digest,
            };
            Signed::sign(body, &keys[me as usize])
        })
        .collect();
    let nv = NewView {
        view: 2,
        view_changes: vcs,
        pre_prepares,
    };
    let log = vec![
        WalRecord::View {
            view: 2,
            changing: true,
        },
        WalRecord::ViewChange(Box::new(own)),
        WalRecord::NewView(Box::new(Signed::sign(nv, &keys[me as usize]))),
    ];
    let r = Replica::restore(
        cfg,
        me,
        keys[me as usize].clone(),
        &log,
        0,
        ClientRecords::Complete(Vec::new()),
        Instant::ZERO,
    )
    .expect("restore");
    assert_eq!(r.stable_checkpoint(), k);
    assert!(r.is_fetching_state(), "behind its new checkpoint");
    assert!(r.log_len() as u64 <= l);
}
