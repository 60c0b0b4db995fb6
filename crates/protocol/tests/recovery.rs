//! Recovery rules for a validator that comes back: a primary whose view comes round
//! again (issue 20, item 7), a backup restored between logging a new view and logging
//! its pre-prepares (item 6).

mod common;

use common::*;
use pbft_protocol::verify::Verifier;
use pbft_protocol::{Action, Config, Instant, Message, Replica, Seq, Status, WalRecord};

/// The (view, seq) of every pre-prepare broadcast in `actions`.
fn proposals(actions: &[Action]) -> Vec<(u64, Seq)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Broadcast {
                msg: Message::PrePrepare { pre_prepare, .. },
            } => Some((pre_prepare.body.view, pre_prepare.body.seq)),
            _ => None,
        })
        .collect()
}

/// Replica 0 proposes at seq 1..=3 in view 0, none of it prepares, and the views come
/// round to it again (view 4 in n = 4) with an empty `O`. It must propose right after
/// `O` (seq 1), not where it stopped in view 0: slots 1..=3 are in no one's `O`, so a
/// proposal at seq 4 would leave a gap nobody fills and waste the view.
#[test]
fn a_returning_primary_proposes_right_after_o() {
    let mut p = Probe::new(0);
    let mut sent = Vec::new();
    for client in 0..3 {
        sent.extend(proposals(&p.client(request(client, 1, vec![]))));
    }
    assert_eq!(sent, vec![(0, 1), (0, 2), (0, 3)]);
    let mut a = Vec::new();
    for r in 1..=3 {
        a.extend(p.deliver(
            r,
            Message::ViewChange(Box::new(view_change(4, 0, vec![], r))),
        ));
    }
    assert_eq!((p.r.view(), p.r.status()), (4, Status::Normal), "{a:?}");
    let in_view_4: Vec<Seq> = proposals(&a)
        .into_iter()
        .filter(|(v, _)| *v == 4)
        .map(|(_, s)| s)
        .collect();
    assert_eq!(in_view_4.first(), Some(&1), "proposed at {in_view_4:?}");
}

/// Backup 2 installs view 1's new view, whose `O` re-proposes b(1) at seq 1, and
/// crashes after logging the new view but before logging its pre-prepares of `O`. The
/// restored backup must still hold them (issue 20, item 6): a traitor primary of view 1
/// offering another batch at seq 1 is then caught equivocating, and never gets a
/// prepare for it.
#[test]
fn a_restored_backup_keeps_the_new_views_o() {
    let mut p = Probe::new(2);
    let b1 = batch_pool()[1].clone();
    let vcs = vec![
        view_change(1, 0, vec![prepared_cert(0, 1, b1.clone(), &[2, 3])], 0),
        view_change(1, 0, vec![], 1),
        view_change(1, 0, vec![prepared_cert(0, 1, b1.clone(), &[2, 3])], 3),
    ];
    let a = p.deliver(1, Message::NewView(Box::new(honest_new_view(1, vcs))));
    assert_eq!((p.r.view(), p.r.status()), (1, Status::Normal));
    // the log up to and including the new view's record: the crash comes before the
    // pre-prepares of O are logged
    let mut log = Vec::new();
    for x in &a {
        if let Action::Persist(rec) = x {
            log.push(rec.clone());
            if matches!(rec, WalRecord::NewView(_)) {
                break;
            }
        }
    }
    assert!(matches!(log.last(), Some(WalRecord::NewView(_))), "{log:?}");
    let mut q = Probe {
        r: Replica::restore(
            Config::new(pubkeys()),
            2,
            replica_key(2).clone(),
            &log,
            0,
            pbft_protocol::ClientRecords::Complete(Vec::new()),
            Instant::ZERO,
        )
        .expect("restores"),
        verifier: Verifier::new(pubkeys()),
        now: Instant::ZERO,
    };
    assert_eq!((q.r.view(), q.r.status()), (1, Status::Normal));
    let other = batch_pool()[2].clone();
    let a = q.deliver(1, pre_prepare_msg(1, 1, other.clone()));
    let prepared_other = a.iter().any(|x| {
        matches!(x, Action::Broadcast { msg: Message::Prepare(pr) } if pr.body.digest == other.digest())
    });
    assert!(
        !prepared_other,
        "the restored backup prepared another batch at O's slot"
    );
    assert!(
        a.iter()
            .any(|x| matches!(x, Action::Evidence { against: 1, .. })),
        "{a:?}"
    );
}
