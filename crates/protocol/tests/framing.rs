//! Proves on one replica, with hand-built signed inputs passed through the full
//! `Verifier`, that evidence is self-certifying (docs/protocol.md, "Evidence"):
//! - a genuine pre-prepare header paired with another batch, relayed or sent as
//!   evidence, accuses no one, whatever that batch holds; the genuine proposal is still
//!   accepted afterwards;
//! - a batch that matches the signed header and holds a forged request, or more than
//!   `max_batch` requests, is proof against the primary, however it arrives;
//! - two digests signed by one primary for one (view, seq) are proof wherever they meet:
//!   a relayed pre-prepare, a prepared certificate inside a view change or a new view,
//!   or two new views; and a replica that accepts a pre-prepare after votes for another
//!   digest sends those voters its pre-prepare.

mod common;

use common::*;
use pbft_protocol::{
    Action, Batch, Config, Evidence, Message, PrePrepare, ReplicaId, Signed, SignedRequest, Status,
};

fn b(i: usize) -> Batch {
    batch_pool()[i].clone()
}

/// A request whose client signature does not verify.
fn forged_request() -> SignedRequest {
    let mut r = request(2, 9, b"pay me".to_vec());
    r.body.op = b"pay me more".to_vec();
    r
}

/// `batch` with a forged request appended.
fn tainted(batch: &Batch) -> Batch {
    let mut t = batch.clone();
    t.requests.push(forged_request());
    t
}

fn broadcasts(actions: &[Action]) -> impl Iterator<Item = &Message> {
    actions.iter().filter_map(|a| match a {
        Action::Broadcast { msg } => Some(msg),
        _ => None,
    })
}

fn sent_prepare(actions: &[Action]) -> bool {
    broadcasts(actions).any(|m| matches!(m, Message::Prepare(_)))
}

fn gossiped(actions: &[Action]) -> Vec<&'static str> {
    broadcasts(actions)
        .filter_map(|m| match m {
            Message::Evidence(e) => Some(e.kind()),
            _ => None,
        })
        .collect()
}

fn view_change_to(actions: &[Action]) -> Option<u64> {
    broadcasts(actions).find_map(|m| match m {
        Message::ViewChange(vc) => Some(vc.body.new_view),
        _ => None,
    })
}

/// Asserts the probe accuses no one and stays in view 0 with its primary.
fn assert_no_one_accused(p: &Probe, a: &[Action], what: &str) {
    assert_eq!(evidence_kinds(a), Vec::<&str>::new(), "{what}");
    assert!(p.r.evidence().is_empty(), "{what}: {:?}", p.r.evidence());
    assert_eq!(view_change_to(a), None, "{what}");
    assert_eq!((p.r.view(), p.r.status()), (0, Status::Normal), "{what}");
}

/// The genuine header of primary 0 for `b(1)` at seq 1, with another batch.
fn framed(batch: Batch) -> (Signed<PrePrepare>, Batch) {
    (signed_pp(0, 1, b(1).digest()), batch)
}

#[test]
fn a_relayed_header_with_another_batch_accuses_no_one() {
    for (name, other) in [
        ("another valid batch", b(2)),
        ("the null batch", Batch::null()),
        ("a batch with a forged request", tainted(&b(1))),
    ] {
        let mut p = Probe::new(2);
        let (pre_prepare, batch) = framed(other);
        let a = p.deliver(3, Message::PrePrepare { pre_prepare, batch });
        assert!(!sent_prepare(&a), "{name}: prepared a mismatched batch");
        assert_no_one_accused(&p, &a, name);
        // the honest primary's proposal is still accepted
        let a = p.deliver(0, pre_prepare_msg(0, 1, b(1)));
        assert!(sent_prepare(&a), "{name}: the genuine proposal was refused");
        assert_no_one_accused(&p, &a, name);
    }
}

#[test]
fn a_relayed_header_with_another_batch_after_the_genuine_one_accuses_no_one() {
    let mut p = Probe::new(2);
    assert!(sent_prepare(&p.deliver(0, pre_prepare_msg(0, 1, b(1)))));
    for other in [b(2), tainted(&b(1))] {
        let (pre_prepare, batch) = framed(other);
        let a = p.deliver(3, Message::PrePrepare { pre_prepare, batch });
        assert_no_one_accused(&p, &a, "relayed after acceptance");
    }
}

#[test]
fn forged_bad_pre_prepare_evidence_accuses_no_one() {
    for (name, other) in [
        ("another valid batch", b(2)),
        ("a batch with a forged request", tainted(&b(3))),
    ] {
        let mut p = Probe::new(2);
        let (pre_prepare, batch) = framed(other);
        let e = Evidence::BadPrePrepare { pre_prepare, batch };
        let a = p.deliver(3, Message::Evidence(Box::new(e)));
        assert_no_one_accused(&p, &a, name);
        let a = p.deliver(0, pre_prepare_msg(0, 1, b(1)));
        assert!(sent_prepare(&a), "{name}: the genuine proposal was refused");
    }
}

#[test]
fn a_signed_batch_with_a_forged_request_is_proof_however_it_arrives() {
    let batch = tainted(&b(1));
    let pre_prepare = signed_pp(0, 1, batch.digest());
    // relayed by a backup
    let mut p = Probe::new(2);
    let a = p.deliver(
        3,
        Message::PrePrepare {
            pre_prepare: pre_prepare.clone(),
            batch: batch.clone(),
        },
    );
    assert!(!sent_prepare(&a));
    assert_eq!(evidence_kinds(&a), vec!["bad_pre_prepare"]);
    assert_eq!(gossiped(&a), vec!["bad_pre_prepare"]);
    assert_eq!(view_change_to(&a), Some(1));
    // as evidence
    let mut p = Probe::new(2);
    let e = Evidence::BadPrePrepare { pre_prepare, batch };
    let a = p.deliver(3, Message::Evidence(Box::new(e)));
    assert_eq!(evidence_kinds(&a), vec!["bad_pre_prepare"]);
    assert_eq!(view_change_to(&a), Some(1));
}

#[test]
fn a_signed_batch_over_max_batch_is_proof_at_every_replica() {
    let max = Config::new(pubkeys()).max_batch;
    let requests: Vec<SignedRequest> = (0..=max as u64)
        .map(|i| request((i % 3) as u8, 1 + i / 3, vec![i as u8]))
        .collect();
    let batch = Batch { requests };
    let pre_prepare = signed_pp(0, 1, batch.digest());
    let mut p = Probe::new(2);
    let a = p.deliver(
        0,
        Message::PrePrepare {
            pre_prepare: pre_prepare.clone(),
            batch: batch.clone(),
        },
    );
    assert!(!sent_prepare(&a));
    assert_eq!(gossiped(&a), vec!["bad_pre_prepare"]);
    // whoever receives that gossip holds the same proof
    let mut q = Probe::new(3);
    let e = Evidence::BadPrePrepare { pre_prepare, batch };
    let a = q.deliver(2, Message::Evidence(Box::new(e)));
    assert_eq!(evidence_kinds(&a), vec!["bad_pre_prepare"]);
    assert_eq!(view_change_to(&a), Some(1));
}

#[test]
fn equivocation_inside_a_view_change_is_proof() {
    let mut p = Probe::new(2);
    assert!(sent_prepare(&p.deliver(0, pre_prepare_msg(0, 1, b(1)))));
    // replicas 1 and 3 prepared another proposal of primary 0 for the same slot
    let vc = view_change(1, 0, vec![prepared_cert(0, 1, b(2), &[1, 3])], 3);
    let a = p.deliver(3, Message::ViewChange(Box::new(vc)));
    assert_eq!(evidence_kinds(&a), vec!["equivocation"]);
    assert_eq!(gossiped(&a), vec!["equivocation"]);
    assert!(matches!(
        p.r.evidence().get(&0),
        Some(Evidence::Equivocation { .. })
    ));
    assert_eq!(view_change_to(&a), Some(1));
}

#[test]
fn equivocation_inside_a_new_view_is_proof_before_it_is_installed() {
    let mut p = Probe::new(2);
    assert!(sent_prepare(&p.deliver(0, pre_prepare_msg(0, 1, b(1)))));
    let vcs = vec![
        view_change(1, 0, vec![prepared_cert(0, 1, b(2), &[1, 3])], 1),
        view_change(1, 0, vec![], 0),
        view_change(1, 0, vec![prepared_cert(0, 1, b(2), &[1, 3])], 3),
    ];
    let a = p.deliver(1, Message::NewView(Box::new(honest_new_view(1, vcs))));
    assert_eq!(evidence_kinds(&a), vec!["equivocation"]);
    assert_eq!(gossiped(&a), vec!["equivocation"]);
    assert!(matches!(
        p.r.evidence().get(&0),
        Some(Evidence::Equivocation { .. })
    ));
    // the new view itself is valid and installed: its primary did nothing wrong
    assert_eq!((p.r.view(), p.r.status()), (1, Status::Normal));
    assert!(!p.r.evidence().contains_key(&1));
}

#[test]
fn two_new_views_with_different_proposals_are_proof_against_their_primary() {
    let mut p = Probe::new(2);
    // it holds b(1) (new views name batches by digest only)
    assert!(sent_prepare(&p.deliver(0, pre_prepare_msg(0, 1, b(1)))));
    let with_seq_1 = vec![
        view_change(1, 0, vec![prepared_cert(0, 1, b(1), &[2, 3])], 0),
        view_change(1, 0, vec![], 1),
        view_change(1, 0, vec![prepared_cert(0, 1, b(1), &[2, 3])], 3),
    ];
    let a = p.deliver(
        1,
        Message::NewView(Box::new(honest_new_view(1, with_seq_1))),
    );
    assert!(sent_prepare(&a));
    assert_eq!((p.r.view(), p.r.status()), (1, Status::Normal));
    // another valid new view for view 1, from the same primary, whose O holds the null
    // batch at seq 1 and b(2) at seq 2
    let other = vec![
        view_change(1, 0, vec![prepared_cert(0, 2, b(2), &[2, 3])], 0),
        view_change(1, 0, vec![], 1),
        view_change(1, 0, vec![], 3),
    ];
    let a = p.deliver(3, Message::NewView(Box::new(honest_new_view(1, other))));
    assert_eq!(evidence_kinds(&a), vec!["equivocation"]);
    assert!(matches!(
        p.r.evidence().get(&1),
        Some(Evidence::Equivocation { .. })
    ));
    assert_eq!(view_change_to(&a), Some(2));
}

#[test]
fn votes_that_overtake_the_pre_prepare_still_expose_an_equivocation() {
    // replicas 1 and 3 got b(2) from primary 0 and voted before b(1) reached replica 2
    let mut p = Probe::new(2);
    let d2 = b(2).digest();
    p.deliver(1, Message::Prepare(prepare(0, 1, d2, 1)));
    p.deliver(3, Message::Prepare(prepare(0, 1, d2, 3)));
    let a = p.deliver(0, pre_prepare_msg(0, 1, b(1)));
    assert!(sent_prepare(&a));
    let mut relayed: Vec<ReplicaId> = a
        .iter()
        .filter_map(|x| match x {
            Action::Send {
                to,
                msg: Message::PrePrepare { pre_prepare, .. },
            } if pre_prepare.body.digest == b(1).digest() => Some(*to),
            _ => None,
        })
        .collect();
    relayed.sort_unstable();
    assert_eq!(relayed, vec![1, 3], "{a:?}");
}

#[test]
fn a_relayed_signed_header_is_checked_before_its_batch() {
    // two digests signed by primary 0 for (0, 1): proof, whatever batch came with the
    // second header
    let mut p = Probe::new(2);
    assert!(sent_prepare(&p.deliver(0, pre_prepare_msg(0, 1, b(1)))));
    let a = p.deliver(
        3,
        Message::PrePrepare {
            pre_prepare: signed_pp(0, 1, b(2).digest()),
            batch: b(4),
        },
    );
    assert_eq!(evidence_kinds(&a), vec!["equivocation"]);
}
