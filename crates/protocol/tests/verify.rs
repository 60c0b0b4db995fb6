//! Proves the verification stage (`verify::Verifier`) enforces that every message is
//! signed by its sender (docs/protocol.md, "Messages, signatures and decoding"): votes
//! must come from the replica they name and carry its valid signature; pre-prepares and
//! new views must carry the view primary's signature (whoever relays them); nested
//! certificates are checked whole, one forged signature rejects the message; a batch
//! request with a bad client signature does not reject the pre-prepare but is reported
//! through `bad_requests()` (it is evidence against the primary); unknown replica ids and
//! replies are refused.

mod common;

use common::*;
use pbft_protocol::verify::{Rejection, Verifier};
use pbft_protocol::{Batch, CommittedProof, Evidence, Message, NewView, Signed};

fn verifier() -> Verifier {
    Verifier::new(pubkeys())
}

fn forged<T: pbft_protocol::Signable>(mut s: Signed<T>) -> Signed<T> {
    s.sig.0[7] ^= 0x40;
    s
}

#[test]
fn valid_prepare_from_its_replica_is_accepted() {
    let p = prepare(0, 1, batch_pool()[1].digest(), 2);
    let v = verifier()
        .verify(2, Message::Prepare(p.clone()))
        .expect("valid prepare");
    assert_eq!(v.from(), 2);
    assert_eq!(v.message(), &Message::Prepare(p));
    assert!(v.bad_requests().is_empty());
}

#[test]
fn prepare_from_another_peer_is_wrong_sender() {
    let p = prepare(0, 1, batch_pool()[1].digest(), 2);
    for from in [0, 1, 3] {
        assert!(
            matches!(
                verifier().verify(from, Message::Prepare(p.clone())),
                Err(Rejection::WrongSender(_))
            ),
            "from {from}"
        );
    }
    // the same for commits, checkpoints and view changes
    let c = commit(0, 1, batch_pool()[1].digest(), 2);
    assert!(matches!(
        verifier().verify(3, Message::Commit(c)),
        Err(Rejection::WrongSender(_))
    ));
    let cp = checkpoint(16, state_digest(16), 2);
    assert!(matches!(
        verifier().verify(3, Message::Checkpoint(cp)),
        Err(Rejection::WrongSender(_))
    ));
    let vc = view_change(1, 0, vec![], 2);
    assert!(matches!(
        verifier().verify(3, Message::ViewChange(Box::new(vc))),
        Err(Rejection::WrongSender(_))
    ));
}

#[test]
fn prepare_signed_by_another_replica_is_a_bad_signature() {
    let d = batch_pool()[1].digest();
    // replica 1 signs a prepare claiming to be replica 2, and sends it from 2
    let p = Signed::sign(
        pbft_protocol::Prepare {
            view: 0,
            seq: 1,
            digest: d,
            replica: 2,
        },
        replica_key(1),
    );
    assert!(matches!(
        verifier().verify(2, Message::Prepare(p)),
        Err(Rejection::BadSignature(_))
    ));
    // a valid signature over different content does not verify either
    let mut p = prepare(0, 1, d, 2);
    p.body.seq = 2;
    assert!(matches!(
        verifier().verify(2, Message::Prepare(p)),
        Err(Rejection::BadSignature(_))
    ));
    // nor a flipped bit
    assert!(matches!(
        verifier().verify(2, Message::Prepare(forged(prepare(0, 1, d, 2)))),
        Err(Rejection::BadSignature(_))
    ));
    // a prepare signature replayed as a commit (domain separation)
    let p = prepare(0, 1, d, 2);
    let c = Signed {
        body: pbft_protocol::Commit {
            view: 0,
            seq: 1,
            digest: d,
            replica: 2,
        },
        sig: p.sig,
    };
    assert!(matches!(
        verifier().verify(2, Message::Commit(c)),
        Err(Rejection::BadSignature(_))
    ));
}

#[test]
fn bad_client_signature_in_a_batch_is_reported_not_rejected() {
    let good = request(0, 1, b"a".to_vec());
    let mut broken = request(1, 1, b"b".to_vec());
    broken.body.op = b"changed after signing".to_vec();
    let other = request(2, 1, b"c".to_vec());
    let batch = Batch {
        requests: vec![good, broken, other.clone(), forged(other)],
    };
    let msg = pre_prepare_msg(0, 1, batch);
    let v = verifier()
        .verify(0, msg.clone())
        .expect("valid primary signature");
    assert_eq!(v.bad_requests(), &[1, 3]);
    assert_eq!(v.message(), &msg);
    let (from, m, bad) = v.into_parts();
    assert_eq!((from, m, bad), (0, msg, vec![1, 3]));

    // a clean batch reports nothing
    let v = verifier()
        .verify(0, pre_prepare_msg(0, 1, batch_pool()[5].clone()))
        .unwrap();
    assert!(v.bad_requests().is_empty());
}

#[test]
fn bad_client_signature_is_reported_in_bad_pre_prepare_evidence_too() {
    let mut broken = request(1, 1, b"b".to_vec());
    broken.body.request_id = 2;
    let batch = Batch {
        requests: vec![request(0, 1, vec![]), broken],
    };
    let e = Evidence::BadPrePrepare {
        pre_prepare: signed_pp(0, 1, batch.digest()),
        batch,
    };
    let v = verifier()
        .verify(3, Message::Evidence(Box::new(e)))
        .unwrap();
    assert_eq!(v.bad_requests(), &[1]);
}

#[test]
fn bad_client_signature_inside_a_fetched_batch_or_certificate_rejects_the_message() {
    let mut broken = request(1, 1, b"b".to_vec());
    broken.body.op.push(0);
    let batch = Batch {
        requests: vec![broken],
    };
    // a fetched batch (view changes name batches by digest only)
    let reply = Message::BatchReply {
        seq: 1,
        batch: batch.clone(),
    };
    assert!(matches!(
        verifier().verify(3, reply),
        Err(Rejection::BadSignature(_))
    ));
    let d = batch.digest();
    let m = Message::Committed {
        stable_proof: vec![],
        proofs: vec![CommittedProof {
            pre_prepare: signed_pp(0, 1, d),
            batch,
            commits: (0..3).map(|r| commit(0, 1, d, r)).collect(),
        }],
    };
    assert!(matches!(
        verifier().verify(2, m),
        Err(Rejection::BadSignature(_))
    ));
}

#[test]
fn view_change_with_one_forged_prepare_is_rejected_whole() {
    let b = batch_pool()[3].clone();
    let good = prepared_cert(0, 1, b.clone(), &[1, 2]);
    let vc = view_change(1, 0, vec![good.clone()], 3);
    assert!(verifier()
        .verify(3, Message::ViewChange(Box::new(vc)))
        .is_ok());

    for victim in 0..2 {
        let mut bad = good.clone();
        bad.prepares[victim] = forged(bad.prepares[victim].clone());
        let other = prepared_cert(0, 2, b.clone(), &[1, 2]);
        let vc = view_change(1, 0, vec![other, bad], 3);
        assert!(
            matches!(
                verifier().verify(3, Message::ViewChange(Box::new(vc.clone()))),
                Err(Rejection::BadSignature(_))
            ),
            "forged prepare #{victim}"
        );
        // and inside a new view
        let nv = Signed::sign(
            NewView {
                view: 1,
                view_changes: vec![vc],
                pre_prepares: vec![],
            },
            replica_key(1),
        );
        assert!(matches!(
            verifier().verify(1, Message::NewView(Box::new(nv))),
            Err(Rejection::BadSignature(_))
        ));
    }
    // a forged pre-prepare or checkpoint inside the view change too
    let mut bad = good.clone();
    bad.pre_prepare = forged(bad.pre_prepare);
    let vc = view_change(1, 0, vec![bad], 3);
    assert!(matches!(
        verifier().verify(3, Message::ViewChange(Box::new(vc))),
        Err(Rejection::BadSignature(_))
    ));
    let mut vc = view_change(1, 16, vec![], 3);
    vc.body.checkpoint_proof[1] = forged(vc.body.checkpoint_proof[1].clone());
    let vc = Signed::sign(vc.body, replica_key(3));
    assert!(matches!(
        verifier().verify(3, Message::ViewChange(Box::new(vc))),
        Err(Rejection::BadSignature(_))
    ));
}

#[test]
fn pre_prepare_relayed_by_a_backup_is_accepted() {
    let msg = pre_prepare_msg(4, 9, batch_pool()[2].clone()); // primary(4) = 0
    for from in 0..4 {
        let v = verifier().verify(from, msg.clone()).expect("relayed");
        assert_eq!(v.from(), from);
    }
    // a new view relayed by a backup is accepted as well
    let nv = honest_new_view(1, (0..3).map(|r| view_change(1, 0, vec![], r)).collect());
    assert!(verifier().verify(3, Message::NewView(Box::new(nv))).is_ok());
}

#[test]
fn pre_prepare_or_new_view_not_signed_by_the_primary_is_rejected() {
    let b = batch_pool()[2].clone();
    // replica 1 signs a pre-prepare for view 0, whose primary is 0
    let pp = Signed::sign(
        pbft_protocol::PrePrepare {
            view: 0,
            seq: 1,
            digest: b.digest(),
        },
        replica_key(1),
    );
    assert!(matches!(
        verifier().verify(
            1,
            Message::PrePrepare {
                pre_prepare: pp,
                batch: b
            }
        ),
        Err(Rejection::BadSignature(_))
    ));
    let nv = Signed::sign(
        NewView {
            view: 1,
            view_changes: vec![],
            pre_prepares: vec![],
        },
        replica_key(2),
    );
    assert!(matches!(
        verifier().verify(2, Message::NewView(Box::new(nv))),
        Err(Rejection::BadSignature(_))
    ));
    // a new view carrying a pre-prepare for another view
    let mut nv = honest_new_view(1, vec![]);
    nv.body.pre_prepares = vec![signed_pp(5, 1, Batch::null_digest())];
    let nv = Signed::sign(nv.body, replica_key(1));
    assert!(verifier()
        .verify(1, Message::NewView(Box::new(nv)))
        .is_err());
}

#[test]
fn unknown_replica_ids_are_rejected() {
    let d = batch_pool()[1].digest();
    for from in [4, 7, u32::MAX] {
        assert_eq!(
            verifier()
                .verify(
                    from,
                    Message::Status {
                        view: 0,
                        last_executed: 0
                    }
                )
                .unwrap_err(),
            Rejection::UnknownReplica(from)
        );
    }
    // a prepare that names replica 9 (signed by some key), sent "from" 9
    let p = Signed::sign(
        pbft_protocol::Prepare {
            view: 0,
            seq: 1,
            digest: d,
            replica: 9,
        },
        replica_key(1),
    );
    assert_eq!(
        verifier()
            .verify(9, Message::Prepare(p.clone()))
            .unwrap_err(),
        Rejection::UnknownReplica(9)
    );
    // the same prepare nested in a certificate
    let mut cert = prepared_cert(0, 1, batch_pool()[1].clone(), &[1, 2]);
    cert.prepares.push(p);
    let vc = view_change(1, 0, vec![cert], 3);
    assert_eq!(
        verifier()
            .verify(3, Message::ViewChange(Box::new(vc)))
            .unwrap_err(),
        Rejection::UnknownReplica(9)
    );
    // a checkpoint proof naming an unknown replica
    let mut vc = view_change(1, 16, vec![], 3);
    vc.body.checkpoint_proof.push(Signed::sign(
        pbft_protocol::Checkpoint {
            seq: 16,
            state_digest: state_digest(16),
            replica: 4,
        },
        replica_key(3),
    ));
    let vc = Signed::sign(vc.body, replica_key(3));
    assert_eq!(
        verifier()
            .verify(3, Message::ViewChange(Box::new(vc)))
            .unwrap_err(),
        Rejection::UnknownReplica(4)
    );
}

#[test]
fn replies_are_unexpected_and_requests_are_checked() {
    let r = signed_reply(2, vec![]);
    assert!(matches!(
        verifier().verify(2, Message::Reply(r)),
        Err(Rejection::Unexpected(_))
    ));
    let good = request(0, 1, vec![1]);
    assert!(verifier().verify(1, Message::Request(good.clone())).is_ok());
    assert!(matches!(
        verifier().verify(1, Message::Request(forged(good.clone()))),
        Err(Rejection::BadSignature(_))
    ));
    assert!(verifier().verify_request(good.clone()).is_ok());
    assert!(verifier().verify_request(forged(good.clone())).is_err());
    let res = verifier().verify_requests(vec![good.clone(), forged(good.clone()), good]);
    let ok: Vec<bool> = res.iter().map(|r| r.is_ok()).collect();
    assert_eq!(ok, vec![true, false, true]);
}

#[test]
fn evidence_signatures_are_checked() {
    let d1 = batch_pool()[1].digest();
    let d2 = batch_pool()[2].digest();
    let ok = Evidence::DoublePrepare {
        a: prepare(0, 1, d1, 2),
        b: prepare(0, 1, d2, 2),
    };
    assert!(verifier()
        .verify(3, Message::Evidence(Box::new(ok)))
        .is_ok());
    let bad = Evidence::DoublePrepare {
        a: prepare(0, 1, d1, 2),
        b: forged(prepare(0, 1, d2, 2)),
    };
    assert!(matches!(
        verifier().verify(3, Message::Evidence(Box::new(bad))),
        Err(Rejection::BadSignature(_))
    ));
    let bad = Evidence::Equivocation {
        a: signed_pp(0, 1, d1),
        b: forged(signed_pp(0, 1, d2)),
    };
    assert!(matches!(
        verifier().verify(3, Message::Evidence(Box::new(bad))),
        Err(Rejection::BadSignature(_))
    ));
}

#[test]
fn signers_only_mode_still_checks_who_claims_what() {
    let v = Verifier::signers_only_for_benchmarks(pubkeys());
    let d = batch_pool()[1].digest();
    // signatures are not checked...
    assert!(v
        .verify(2, Message::Prepare(forged(prepare(0, 1, d, 2))))
        .is_ok());
    // ...but sender claims and ids are
    assert!(matches!(
        v.verify(3, Message::Prepare(prepare(0, 1, d, 2))),
        Err(Rejection::WrongSender(_))
    ));
    assert_eq!(
        v.verify(5, Message::StateRequest { seq: 0 }).unwrap_err(),
        Rejection::UnknownReplica(5)
    );
    assert_eq!(v.validators(), &pubkeys()[..]);
}

// ------------------------------------------------------------ who may submit

/// A verifier for a cluster whose client accounts are clients 0 and 1 only.
fn two_clients() -> Verifier {
    Verifier::new(pubkeys()).with_clients(pbft_protocol::ClientKeys::listed([
        client_key(0).public(),
        client_key(1).public(),
    ]))
}

/// A request of client 2 (not a client of the cluster) whose signature does not
/// verify: if the verifier checked the signature first, it would report a bad one.
fn unknown_with_bad_signature() -> pbft_protocol::SignedRequest {
    forged(request(2, 1, b"op".to_vec()))
}

#[test]
fn a_relayed_request_from_an_unknown_key_is_refused_before_its_signature_is_checked() {
    let e = two_clients()
        .verify(3, Message::Request(unknown_with_bad_signature()))
        .expect_err("unknown key");
    assert!(matches!(e, Rejection::UnknownClient(_)), "{e:?}");
    assert_eq!(e.reason(), "unknown_client");
    // a listed client's request is checked as before
    assert!(two_clients()
        .verify(3, Message::Request(request(1, 1, vec![])))
        .is_ok());
    assert!(matches!(
        two_clients().verify(3, Message::Request(forged(request(1, 1, vec![])))),
        Err(Rejection::BadSignature(_))
    ));
}

#[test]
fn a_client_request_from_an_unknown_key_is_refused_before_its_signature_is_checked() {
    let results = two_clients().verify_requests(vec![
        request(0, 1, vec![]),
        unknown_with_bad_signature(),
        request(2, 2, vec![]),
    ]);
    assert!(results[0].is_ok());
    for r in &results[1..] {
        assert!(
            matches!(r, Err(Rejection::UnknownClient(_))),
            "{:?}",
            r.as_ref().err()
        );
    }
}

#[test]
fn a_batch_request_from_an_unknown_key_is_reported_like_a_bad_signature() {
    let batch = Batch {
        requests: vec![
            request(0, 1, vec![]),
            unknown_with_bad_signature(),
            request(1, 1, vec![]),
            request(3, 1, vec![]),
        ],
    };
    let v = two_clients()
        .verify(1, pre_prepare_msg(0, 1, batch))
        .expect("the primary's header is valid");
    assert_eq!(v.bad_requests(), &[1, 3]);
}

#[test]
fn a_fetched_batch_holding_an_unknown_keys_request_is_refused() {
    // view changes name batches by digest; a batch fetched for one must be valid
    let batch = Batch {
        requests: vec![request(2, 1, vec![])],
    };
    let e = two_clients()
        .verify(3, Message::BatchReply { seq: 1, batch })
        .expect_err("no honest replica prepares such a batch");
    assert!(matches!(e, Rejection::UnknownClient(_)), "{e:?}");
}

/// The rule admits exactly the listed keys, whatever their order, and remembers which
/// was listed first (client 0 of the cluster file).
#[test]
fn client_keys_admit_the_listed_keys_and_remember_the_first() {
    let (a, b, c) = (
        client_key(0).public(),
        client_key(1).public(),
        client_key(2).public(),
    );
    let keys = pbft_protocol::ClientKeys::listed([b, a, b]);
    assert!(keys.admits(&a) && keys.admits(&b) && !keys.admits(&c));
    assert_eq!(keys.first(), Some(b));
    assert!(pbft_protocol::ClientKeys::Any.admits(&c));
    assert_eq!(pbft_protocol::ClientKeys::Any.first(), None);
}
