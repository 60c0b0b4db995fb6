//! Recovery rules for a validator that comes back: a primary whose view comes round
//! again (issue 20, item 7).

mod common;

use common::*;
use pbft_protocol::verify::Verifier;
use pbft_protocol::{
    Action, Config, Instant, Message, Replica, ReplicaId, Seq, SignedRequest, Status,
};

struct Probe {
    r: Replica,
    verifier: Verifier,
    now: Instant,
}

impl Probe {
    fn new(id: ReplicaId) -> Probe {
        Probe {
            r: Replica::new(Config::new(pubkeys()), id, replica_key(id).clone()).expect("replica"),
            verifier: Verifier::new(pubkeys()),
            now: Instant::ZERO,
        }
    }

    fn actions(&mut self) -> Vec<Action> {
        std::iter::from_fn(|| self.r.poll_action()).collect()
    }

    fn deliver(&mut self, from: ReplicaId, msg: Message) -> Vec<Action> {
        let v = self.verifier.verify(from, msg).expect("verifies");
        self.r.on_message(v, self.now);
        self.actions()
    }

    fn client(&mut self, req: SignedRequest) -> Vec<Action> {
        let v = self.verifier.verify_request(req).expect("client signature");
        self.r.on_request(v, self.now);
        self.actions()
    }
}

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
