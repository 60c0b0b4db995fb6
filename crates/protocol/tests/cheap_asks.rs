//! Cheap messages that would cost a lot: a peer's request for a snapshot, for committed
//! proofs, or a status naming an old view costs its sender a few bytes, and the answer
//! (a whole state export, up to a window of batches, a new view of megabytes) costs the
//! replica far more. A flood of them from one peer gets at most one answer per interval
//! (docs/protocol.md, "Answering peers"), while an honest asker, who asks each peer at
//! most once per retransmission tick, is answered every time.

mod common;

use common::*;
use pbft_protocol::{Action, Batch, Message, ReplicaId, Seq, Status};
use std::time::Duration;

impl Probe {
    /// Time passes by `ms` (no timer is fired: only the clock the inputs carry moves).
    fn wait(&mut self, ms: u64) {
        self.now = self.now.plus(Duration::from_millis(ms));
    }

    fn retransmit_ms(&self) -> u64 {
        self.r.config().retransmit_interval.as_millis() as u64
    }

    /// Orders, commits and executes `1..=to` in view 0 (this replica a backup).
    fn execute_up_to(&mut self, to: Seq) {
        for seq in self.r.last_executed() + 1..=to {
            let batch = Batch {
                requests: vec![request(1, seq, vec![])],
            };
            let d = batch.digest();
            self.deliver(0, pre_prepare_msg(0, seq, batch.clone()));
            self.deliver(3, Message::Prepare(prepare(0, seq, d, 3)));
            self.deliver(0, Message::Commit(commit(0, seq, d, 0)));
            self.deliver(3, Message::Commit(commit(0, seq, d, 3)));
            let replies = batch
                .requests
                .iter()
                .map(|r| pbft_protocol::ExecutedRequest {
                    client: r.body.client,
                    request_id: r.body.request_id,
                    request: r.body.digest(),
                    result: vec![1],
                })
                .collect();
            let state_digest = seq.is_multiple_of(K).then(|| state_digest(seq));
            self.r.on_executed(
                seq,
                pbft_protocol::ExecutionResult {
                    replies,
                    state_digest,
                },
                self.now,
            );
            std::iter::from_fn(|| self.r.poll_action()).for_each(drop);
        }
        assert_eq!(self.r.last_executed(), to);
    }
}

fn serves(actions: &[Action]) -> Vec<(ReplicaId, Seq)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::ServeState { to, seq } => Some((*to, *seq)),
            _ => None,
        })
        .collect()
}

fn sent_to(actions: &[Action], kind: &str) -> Vec<ReplicaId> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send { to, msg } if msg.kind() == kind => Some(*to),
            _ => None,
        })
        .collect()
}

/// A thousand requests for one snapshot from one peer make the replica export it once;
/// the same peer is served again after the asker's own retry interval, and at once for
/// a newer checkpoint; another peer is served meanwhile.
#[test]
fn a_flood_of_state_requests_is_served_once_per_fetch_interval() {
    let mut p = Probe::new(2);
    p.execute_up_to(K);
    let mut served = Vec::new();
    for _ in 0..1000 {
        served.extend(serves(&p.deliver(1, Message::StateRequest { seq: K })));
    }
    assert_eq!(served, vec![(1, K)], "one export for a thousand requests");

    // another asker is not held back by the first one's flood
    let a = p.deliver(3, Message::StateRequest { seq: K });
    assert_eq!(serves(&a), vec![(3, K)]);

    // an honest asker asks one peer again only after its fetch deadline (4 ticks)
    let fetch_ms = 4 * p.retransmit_ms();
    p.wait(fetch_ms - 1);
    let a = p.deliver(1, Message::StateRequest { seq: K });
    assert_eq!(serves(&a), vec![], "still within the interval");
    p.wait(1);
    let a = p.deliver(1, Message::StateRequest { seq: K });
    assert_eq!(serves(&a), vec![(1, K)], "served again after the interval");

    // a newer checkpoint is served at once: an honest asker moved on
    p.execute_up_to(2 * K);
    let a = p.deliver(1, Message::StateRequest { seq: 2 * K });
    assert_eq!(serves(&a), vec![(1, 2 * K)]);
    // but going back and forth between two checkpoints gains nothing
    let mut again = Vec::new();
    for i in 0..100 {
        let seq = if i % 2 == 0 { K } else { 2 * K };
        again.extend(serves(&p.deliver(1, Message::StateRequest { seq })));
    }
    assert_eq!(again, vec![], "alternating checkpoints is not a newer one");
}

/// A flood of catch-up requests is answered once per half tick: an honest laggard asks
/// one peer at most once per tick.
#[test]
fn a_flood_of_fetch_committed_is_answered_once_per_half_tick() {
    let mut p = Probe::new(2);
    p.execute_up_to(8);
    let mut answers = 0;
    for _ in 0..1000 {
        let a = p.deliver(
            1,
            Message::FetchCommitted {
                from_seq: 1,
                to_seq: 8,
            },
        );
        answers += sent_to(&a, "committed").len();
    }
    assert_eq!(answers, 1, "one answer of proofs for a thousand asks");
    let a = p.deliver(
        3,
        Message::FetchCommitted {
            from_seq: 1,
            to_seq: 8,
        },
    );
    assert_eq!(
        sent_to(&a, "committed"),
        vec![3],
        "another asker is answered"
    );
    let half = p.retransmit_ms() / 2;
    p.wait(half);
    let a = p.deliver(
        1,
        Message::FetchCommitted {
            from_seq: 1,
            to_seq: 8,
        },
    );
    assert_eq!(
        sent_to(&a, "committed"),
        vec![1],
        "answered again a half tick on"
    );
}

/// Replica 2 in view 1 (new view from primary 1).
fn in_view_one() -> Probe {
    let mut p = Probe::new(2);
    let vcs = vec![
        view_change(1, 0, vec![], 0),
        view_change(1, 0, vec![], 1),
        view_change(1, 0, vec![], 3),
    ];
    p.deliver(1, Message::NewView(Box::new(honest_new_view(1, vcs))));
    assert_eq!((p.r.view(), p.r.status()), (1, Status::Normal));
    p
}

/// A thousand statuses naming view 0 get the new view of view 1 re-sent once; a
/// laggard whose statuses come a tick apart gets it on every one of them.
#[test]
fn a_flood_of_statuses_naming_an_old_view_gets_the_new_view_once_per_half_tick() {
    let mut p = in_view_one();
    let mut resent = Vec::new();
    for i in 0..1000u64 {
        let a = p.deliver(
            3,
            Message::Status {
                view: 0,
                last_executed: i % 3,
            },
        );
        resent.extend(sent_to(&a, "new_view"));
    }
    assert_eq!(
        resent,
        vec![3],
        "one new view re-sent for a thousand statuses"
    );

    // another laggard is answered meanwhile
    let a = p.deliver(
        0,
        Message::Status {
            view: 0,
            last_executed: 0,
        },
    );
    assert_eq!(sent_to(&a, "new_view"), vec![0]);

    // an honest laggard sends one status per tick, and gets the new view each time
    let tick = p.retransmit_ms();
    for _ in 0..5 {
        p.wait(tick);
        let a = p.deliver(
            3,
            Message::Status {
                view: 0,
                last_executed: 0,
            },
        );
        assert_eq!(sent_to(&a, "new_view"), vec![3]);
    }
}

/// The primary helps a replica still changing to its view with the new view; a flood of
/// that replica's view change gets it once per half tick too.
#[test]
fn a_flood_of_view_changes_for_the_current_view_gets_the_new_view_once_per_half_tick() {
    // replica 1 is the primary of view 1
    let mut p = Probe::new(1);
    let vcs = [
        view_change(1, 0, vec![], 0),
        view_change(1, 0, vec![], 2),
        view_change(1, 0, vec![], 3),
    ];
    // it installs its own new view once it has q view changes (its own included):
    // replica 3's view change comes only after that, in the flood
    for vc in &vcs[..2] {
        p.deliver(vc.body.replica, Message::ViewChange(Box::new(vc.clone())));
    }
    assert_eq!(
        (p.r.view(), p.r.status(), p.r.is_primary()),
        (1, Status::Normal, true)
    );
    let mut resent = Vec::new();
    for _ in 0..1000 {
        let a = p.deliver(3, Message::ViewChange(Box::new(vcs[2].clone())));
        resent.extend(sent_to(&a, "new_view"));
    }
    assert_eq!(
        resent,
        vec![3],
        "one new view re-sent for a thousand view changes"
    );
    p.wait(p.retransmit_ms() / 2);
    let a = p.deliver(3, Message::ViewChange(Box::new(vcs[2].clone())));
    assert_eq!(sent_to(&a, "new_view"), vec![3]);
}

/// A traitor sends valid view changes for ever higher views (each only one signature):
/// the replica keeps at most two views per sender, not one entry per message.
#[test]
fn view_changes_for_ever_higher_views_keep_two_views_per_sender() {
    let mut p = Probe::new(2);
    for target in 1..=200 {
        p.deliver(
            3,
            Message::ViewChange(Box::new(view_change(target, 0, vec![], 3))),
        );
    }
    assert_eq!(p.r.view(), 0, "one sender alone moves no one");
    assert!(
        p.r.view_change_views() <= 2,
        "{} views",
        p.r.view_change_views()
    );
}
