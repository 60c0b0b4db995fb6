//! Unit tests: one per behaviour, plus names, pass-through and determinism.

use std::collections::BTreeSet;

use pbft_crypto::{Digest, Keypair};
use pbft_protocol::envelope::{decode, DecodeError, Limits, MAGIC};
use pbft_protocol::{
    Batch, Checkpoint, ClientKeys, Commit, CommittedProof, Config, Duration, Instant, Message,
    NewView, PrePrepare, Prepare, PreparedCert, PreparedProof, Rejection, ReplicaId, Reply,
    Request, Signed, SignedReply, SignedRequest, Verifier, ViewChange,
};

use crate::{Behavior, Dest, Outgoing, Payload, Traitor};

const N: u32 = 4;

fn keys() -> Vec<Keypair> {
    (0..N)
        .map(|i| Keypair::from_seed(&[i as u8 + 1; 32]).expect("test seed gives a valid key"))
        .collect()
}

fn config() -> Config {
    Config::new(keys().iter().map(|k| k.public()).collect())
}

fn verifier() -> Verifier {
    Verifier::new(config().validators)
}

fn traitor(behavior: Behavior, id: ReplicaId) -> Traitor {
    Traitor::new(behavior, id, keys()[id as usize].clone(), config(), 42)
}

fn request(client: u8, request_id: u64) -> SignedRequest {
    let key = Keypair::from_seed(&[100 + client; 32]).expect("valid client key");
    Signed::sign(
        Request {
            client: key.public(),
            request_id,
            op: vec![client, request_id as u8, 7, 7],
        },
        &key,
    )
}

fn batch(len: u8) -> Batch {
    Batch {
        requests: (0..len).map(|i| request(i, u64::from(i) + 1)).collect(),
    }
}

/// A pre-prepare for `batch` in `view`, signed by that view's primary.
fn pre_prepare(view: u64, seq: u64, batch: Batch) -> Message {
    let primary = (view % u64::from(N)) as usize;
    Message::PrePrepare {
        pre_prepare: Signed::sign(
            PrePrepare {
                view,
                seq,
                digest: batch.digest(),
            },
            &keys()[primary],
        ),
        batch,
    }
}

fn prepare(replica: ReplicaId, seq: u64, digest: Digest) -> Message {
    Message::Prepare(Signed::sign(
        Prepare {
            view: 0,
            seq,
            digest,
            replica,
        },
        &keys()[replica as usize],
    ))
}

fn commit(replica: ReplicaId, seq: u64, digest: Digest) -> Message {
    Message::Commit(Signed::sign(
        Commit {
            view: 0,
            seq,
            digest,
            replica,
        },
        &keys()[replica as usize],
    ))
}

fn checkpoint(replica: ReplicaId, seq: u64) -> Message {
    Message::Checkpoint(Signed::sign(
        Checkpoint {
            seq,
            state_digest: Digest::of(b"state"),
            replica,
        },
        &keys()[replica as usize],
    ))
}

fn reply(replica: ReplicaId) -> Message {
    Message::Reply(
        SignedReply::sign_batch(
            vec![Reply {
                view: 0,
                seq: 1,
                client: request(0, 1).body.client,
                request_id: 1,
                request: request(0, 1).body.digest(),
                replica,
                result: b"ok".to_vec(),
            }],
            &keys()[replica as usize],
        )
        .remove(0),
    )
}

fn mutate(t: &mut Traitor, dest: Dest, msg: Message) -> Vec<Outgoing> {
    t.mutate(dest, msg, Instant::ZERO)
}

fn msg_of(o: &Outgoing) -> &Message {
    o.message().expect("a message payload")
}

fn header(m: &Message) -> (PrePrepare, &Batch) {
    match m {
        Message::PrePrepare { pre_prepare, batch } => (pre_prepare.body, batch),
        other => panic!("expected a pre-prepare, got {}", other.kind()),
    }
}

/// Asserts the traitor passes `msg` through untouched.
fn assert_unchanged(t: &mut Traitor, dest: Dest, msg: Message) {
    let out = mutate(t, dest.clone(), msg.clone());
    assert_eq!(out, vec![Outgoing::now(dest, msg)], "{}", t.behavior());
}

#[test]
fn names_round_trip_for_all_behaviours() {
    let names: BTreeSet<&str> = Behavior::ALL.iter().map(|b| b.name()).collect();
    assert_eq!(names.len(), Behavior::ALL.len());
    for b in Behavior::ALL {
        assert_eq!(b.name().parse::<Behavior>(), Ok(b));
        assert_eq!(b.to_string(), b.name());
        assert!(!b.describe().is_empty() && !b.describe().contains('\n'));
        assert!(b.name().chars().all(|c| c.is_ascii_lowercase() || c == '_'));
    }
    assert_eq!("Bad-Digest".parse::<Behavior>(), Ok(Behavior::BadDigest));
    assert_eq!(Behavior::PoisonState.name(), "poison_state");
    assert_eq!(Behavior::ForgeViewChange.name(), "forge_view_change");
}

#[test]
fn unknown_name_lists_valid_names() {
    let err = "byzantine"
        .parse::<Behavior>()
        .expect_err("not a behaviour");
    assert_eq!(err.name, "byzantine");
    let text = err.to_string();
    assert!(text.contains("\"byzantine\""), "{text}");
    for b in Behavior::ALL {
        assert!(text.contains(b.name()), "{text} lacks {}", b.name());
    }
}

#[test]
fn silent_sends_nothing() {
    let mut t = traitor(Behavior::Silent, 0);
    let d = batch(2).digest();
    for m in [
        pre_prepare(0, 1, batch(2)),
        prepare(0, 1, d),
        commit(0, 1, d),
        checkpoint(0, 16),
        reply(0),
    ] {
        assert!(mutate(&mut t, Dest::AllReplicas, m).is_empty());
    }
    assert_eq!((t.calls(), t.altered()), (5, 5));
}

#[test]
fn other_messages_pass_through_unchanged() {
    for b in Behavior::ALL {
        // (a censoring primary adds its own pre-prepares to whatever goes out)
        if matches!(
            b,
            Behavior::Silent
                | Behavior::Replay
                | Behavior::Flood
                | Behavior::StatusSpam
                | Behavior::Censor
        ) {
            continue;
        }
        let mut t = traitor(b, 0);
        let client = Dest::Client(request(0, 1).body.client);
        assert_unchanged(&mut t, client, reply(0));
        assert_unchanged(&mut t, Dest::Replica(1), Message::StateRequest { seq: 16 });
        // A pre-prepare from a view this traitor is not primary of.
        assert_unchanged(&mut t, Dest::AllReplicas, pre_prepare(1, 1, batch(3)));
        assert_eq!(t.altered(), 0, "{b}");
    }
}

#[test]
fn equivocate_splits_two_signed_proposals() {
    let mut t = traitor(Behavior::Equivocate, 0);
    let honest = pre_prepare(0, 5, batch(3));
    let out = mutate(&mut t, Dest::AllReplicas, honest.clone());
    let dests: Vec<Dest> = out.iter().map(|o| o.dest.clone()).collect();
    assert_eq!(
        dests,
        vec![Dest::Replica(1), Dest::Replica(2), Dest::Replica(3)]
    );
    let digests: Vec<Digest> = out.iter().map(|o| header(msg_of(o)).0.digest).collect();
    let original = header(&honest).0.digest;
    assert_eq!(digests[1], original, "even replica gets the original");
    assert_ne!(digests[0], original, "odd replicas get the alternative");
    assert_eq!(digests[0], digests[2]);
    let (alt, alt_batch) = header(msg_of(&out[0]));
    assert_eq!((alt.view, alt.seq), (0, 5));
    assert_eq!(alt.digest, alt_batch.digest());
    let mut reversed = batch(3);
    reversed.requests.reverse();
    assert_eq!(alt_batch, &reversed);
    let v = verifier();
    for o in &out {
        let verified = v
            .verify(0, msg_of(o).clone())
            .expect("signed by the primary");
        assert!(verified.bad_requests().is_empty());
    }

    // One request: the alternative is the null batch. Null batch: nothing to swap.
    let out = mutate(&mut t, Dest::AllReplicas, pre_prepare(0, 6, batch(1)));
    assert_eq!(header(msg_of(&out[0])).0.digest, Batch::null_digest());
    assert_ne!(header(msg_of(&out[1])).0.digest, Batch::null_digest());
    assert_unchanged(&mut t, Dest::AllReplicas, pre_prepare(0, 7, Batch::null()));
    // A retransmission to one replica follows the same split.
    let out = mutate(&mut t, Dest::Replica(3), honest.clone());
    assert_eq!(out.len(), 1);
    assert_eq!(header(msg_of(&out[0])).0.digest, digests[2]);
    assert_unchanged(&mut t, Dest::Replica(2), honest);
    assert_unchanged(&mut t, Dest::AllReplicas, prepare(0, 5, original));
}

#[test]
fn bad_digest_signs_a_mismatching_digest() {
    let mut t = traitor(Behavior::BadDigest, 0);
    let out = mutate(&mut t, Dest::AllReplicas, pre_prepare(0, 1, batch(2)));
    assert_eq!(out.len(), 1);
    let (h, b) = header(msg_of(&out[0]));
    assert_eq!(b, &batch(2), "batch kept");
    assert_ne!(h.digest, b.digest());
    assert_eq!(h.digest, Digest::of(b.digest().as_bytes()));
    let v = verifier();
    v.verify(0, msg_of(&out[0]).clone())
        .expect("the primary's signature is valid");

    let d = batch(2).digest();
    for honest in [prepare(0, 1, d), commit(0, 1, d)] {
        let out = mutate(&mut t, Dest::AllReplicas, honest.clone());
        assert_eq!(out.len(), 1);
        let voted = match msg_of(&out[0]) {
            Message::Prepare(p) => p.body.digest,
            Message::Commit(c) => c.body.digest,
            other => panic!("unexpected {}", other.kind()),
        };
        assert_ne!(voted, d);
        v.verify(0, msg_of(&out[0]).clone()).expect("re-signed");
    }
}

#[test]
fn forge_request_breaks_the_client_signature() {
    let mut t = traitor(Behavior::ForgeRequest, 0);
    let out = mutate(&mut t, Dest::AllReplicas, pre_prepare(0, 1, batch(3)));
    assert_eq!(out.len(), 1);
    let (h, b) = header(msg_of(&out[0]));
    assert_eq!(h.digest, b.digest(), "digest matches the altered batch");
    assert_ne!(b, &batch(3));
    let v = verifier();
    assert!(v.verify_request(b.requests[0].clone()).is_err());
    assert!(v.verify_request(b.requests[1].clone()).is_ok());
    let verified = v
        .verify(0, msg_of(&out[0]).clone())
        .expect("primary sig ok");
    assert_eq!(verified.bad_requests(), &[0]);
    assert_unchanged(&mut t, Dest::AllReplicas, pre_prepare(0, 2, Batch::null()));
}

#[test]
fn double_vote_sends_two_conflicting_votes() {
    let mut t = traitor(Behavior::DoubleVote, 2);
    let d = batch(2).digest();
    let v = verifier();
    for honest in [prepare(2, 3, d), commit(2, 3, d)] {
        let out = mutate(&mut t, Dest::AllReplicas, honest.clone());
        assert_eq!(out.len(), 2);
        assert_eq!(out[0], Outgoing::now(Dest::AllReplicas, honest));
        assert_eq!(out[1].dest, Dest::AllReplicas);
        let second = match msg_of(&out[1]) {
            Message::Prepare(p) => (p.body.seq, p.body.digest),
            Message::Commit(c) => (c.body.seq, c.body.digest),
            other => panic!("unexpected {}", other.kind()),
        };
        assert_eq!(second.0, 3);
        assert_ne!(second.1, d);
        for o in &out {
            v.verify(2, msg_of(o).clone())
                .expect("both votes are validly signed");
        }
    }
    assert_unchanged(&mut t, Dest::AllReplicas, checkpoint(2, 16));
}

#[test]
fn out_of_window_alternates_beyond_window_and_gap() {
    let mut t = traitor(Behavior::OutOfWindow, 0);
    let l = config().log_window;
    let v = verifier();
    let mut seqs = Vec::new();
    for seq in [1, 2, 3] {
        let out = mutate(&mut t, Dest::AllReplicas, pre_prepare(0, seq, batch(1)));
        assert_eq!(out.len(), 1);
        let (h, b) = header(msg_of(&out[0]));
        assert_eq!(b, &batch(1));
        assert_eq!(h.digest, b.digest());
        v.verify(0, msg_of(&out[0]).clone()).expect("re-signed");
        seqs.push(h.seq);
    }
    assert_eq!(seqs, vec![1 + 4 * l, 3, 3 + 4 * l]);
}

#[test]
fn replay_resends_old_messages() {
    let mut t = traitor(Behavior::Replay, 1);
    let d = batch(1).digest();
    let sent: Vec<Message> = (1..=6).map(|s| prepare(1, s, d)).collect();
    let mut outs = Vec::new();
    for m in &sent {
        outs.push(mutate(&mut t, Dest::AllReplicas, m.clone()));
    }
    assert_eq!(outs[0].len(), 1, "nothing to replay yet");
    assert_eq!(outs[1].len(), 2, "only one old message");
    for (k, out) in outs.iter().enumerate() {
        assert_eq!(out[0], Outgoing::now(Dest::AllReplicas, sent[k].clone()));
        let old: Vec<&Message> = out[1..].iter().map(msg_of).collect();
        for m in &old {
            assert!(sent[..k].contains(m), "replayed a message not sent before");
        }
        if old.len() == 2 {
            assert_ne!(old[0], old[1]);
        }
    }
    assert_eq!(outs[5].len(), 3);
}

#[test]
fn checkpoint_lie_signs_a_false_state_digest() {
    let mut t = traitor(Behavior::CheckpointLie, 3);
    let out = mutate(&mut t, Dest::AllReplicas, checkpoint(3, 16));
    assert_eq!(out.len(), 1);
    let Message::Checkpoint(c) = msg_of(&out[0]) else {
        panic!("expected a checkpoint")
    };
    assert_eq!(c.body.seq, 16);
    assert_eq!(
        c.body.state_digest,
        Digest::of(Digest::of(b"state").as_bytes())
    );
    verifier()
        .verify(3, msg_of(&out[0]).clone())
        .expect("validly signed lie");
    // Someone else's checkpoint (inside a forwarded proof) is not touched.
    assert_unchanged(&mut t, Dest::AllReplicas, checkpoint(1, 16));
}

/// A real prepared certificate for `seq` in view 0.
fn prepared_proof(seq: u64) -> PreparedCert {
    let b = batch(1);
    let digest = b.digest();
    let Message::PrePrepare { pre_prepare, batch } = pre_prepare(0, seq, b) else {
        unreachable!()
    };
    let prepares = [1, 2]
        .into_iter()
        .map(|r| match prepare(r, seq, digest) {
            Message::Prepare(p) => p,
            _ => unreachable!(),
        })
        .collect();
    PreparedProof {
        pre_prepare,
        batch,
        prepares,
    }
    .cert()
}

fn view_change(
    replica: ReplicaId,
    new_view: u64,
    stable_seq: u64,
    prepared: Vec<PreparedCert>,
) -> Message {
    Message::ViewChange(Box::new(Signed::sign(
        ViewChange {
            new_view,
            stable_seq,
            checkpoint_proof: vec![],
            prepared,
            replica,
        },
        &keys()[replica as usize],
    )))
}

#[test]
fn forge_view_change_hides_then_invents_certificates() {
    let mut t = traitor(Behavior::ForgeViewChange, 2);
    let v = verifier();
    let honest = view_change(2, 2, 0, vec![prepared_proof(2)]);
    v.verify(2, honest.clone())
        .expect("honest view change verifies");

    // (a) all certificates dropped, validly signed.
    let out = mutate(&mut t, Dest::AllReplicas, honest.clone());
    assert_eq!(out.len(), 1);
    let Message::ViewChange(vc) = msg_of(&out[0]) else {
        panic!("expected a view change")
    };
    assert!(vc.body.prepared.is_empty());
    assert_eq!((vc.body.new_view, vc.body.stable_seq), (2, 0));
    v.verify(2, msg_of(&out[0]).clone())
        .expect("valid signature");

    // (b) an invented certificate for seq 1, signed by the traitor: rejected.
    let out = mutate(&mut t, Dest::AllReplicas, honest);
    let Message::ViewChange(vc) = msg_of(&out[0]) else {
        panic!("expected a view change")
    };
    assert_eq!(vc.body.prepared.len(), 2);
    let fake = &vc.body.prepared[0];
    assert_eq!(fake.pre_prepare.body.seq, 1);
    assert_eq!(fake.pre_prepare.body.view, 1);
    assert_eq!(fake.pre_prepare.body.digest, Batch::null_digest());
    assert_eq!(fake.prepares.len(), 2);
    let claimed: BTreeSet<ReplicaId> = fake.prepares.iter().map(|p| p.body.replica).collect();
    assert_eq!(claimed, BTreeSet::from([0, 3]));
    assert_eq!(vc.body.prepared[1], prepared_proof(2));
    assert!(matches!(
        v.verify(2, msg_of(&out[0]).clone()),
        Err(Rejection::BadSignature(_))
    ));

    // The traitor is primary of new_view - 1: it uses new_view - 2 instead.
    let mut t = traitor(Behavior::ForgeViewChange, 1);
    mutate(&mut t, Dest::AllReplicas, view_change(1, 2, 0, vec![]));
    let out = mutate(&mut t, Dest::AllReplicas, view_change(1, 2, 0, vec![]));
    let Message::ViewChange(vc) = msg_of(&out[0]) else {
        panic!("expected a view change")
    };
    assert_eq!(vc.body.prepared[0].pre_prepare.body.view, 0);
    assert!(v.verify(1, msg_of(&out[0]).clone()).is_err());
}

fn new_view(view: u64, stables: &[u64], o: Vec<PrePrepare>) -> Message {
    let primary = (view % u64::from(N)) as usize;
    let view_changes = stables
        .iter()
        .enumerate()
        .map(
            |(r, s)| match view_change(r as ReplicaId, view, *s, vec![]) {
                Message::ViewChange(vc) => *vc,
                _ => unreachable!(),
            },
        )
        .collect();
    let pre_prepares = o
        .into_iter()
        .map(|pp| Signed::sign(pp, &keys()[primary]))
        .collect();
    Message::NewView(Box::new(Signed::sign(
        NewView {
            view,
            view_changes,
            pre_prepares,
        },
        &keys()[primary],
    )))
}

fn o_set(m: &Message) -> Vec<PrePrepare> {
    match m {
        Message::NewView(nv) => nv.body.pre_prepares.iter().map(|pp| pp.body).collect(),
        other => panic!("expected a new view, got {}", other.kind()),
    }
}

#[test]
fn bad_new_view_corrupts_o() {
    let mut t = traitor(Behavior::BadNewView, 1);
    let v = verifier();
    let null = Batch::null_digest();
    let pp = |seq, digest| PrePrepare {
        view: 1,
        seq,
        digest,
    };
    let real = batch(2).digest();

    // Last entry non-null: replaced by the null digest.
    let honest = new_view(1, &[0, 16, 16], vec![pp(17, real), pp(18, real)]);
    let out = mutate(&mut t, Dest::AllReplicas, honest.clone());
    assert_eq!(o_set(msg_of(&out[0])), vec![pp(17, real), pp(18, null)]);
    v.verify(1, msg_of(&out[0]).clone())
        .expect("validly signed");

    // Last entry null: dropped.
    let out = mutate(
        &mut t,
        Dest::AllReplicas,
        new_view(1, &[16], vec![pp(17, real), pp(18, null)]),
    );
    assert_eq!(o_set(msg_of(&out[0])), vec![pp(17, real)]);

    // Empty O: a bogus pre-prepare after the highest stable checkpoint.
    let out = mutate(&mut t, Dest::AllReplicas, new_view(1, &[0, 16, 0], vec![]));
    assert_eq!(o_set(msg_of(&out[0])), vec![pp(17, Digest::of(b"bogus"))]);
    v.verify(1, msg_of(&out[0]).clone())
        .expect("validly signed");

    // Not this traitor's view: unchanged.
    assert_unchanged(&mut t, Dest::AllReplicas, new_view(2, &[0], vec![]));
}

#[test]
fn slow_primary_delays_pre_prepares_only() {
    let mut t = traitor(Behavior::SlowPrimary, 0);
    let out = mutate(&mut t, Dest::AllReplicas, pre_prepare(0, 1, batch(1)));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].delay, Duration::from_millis(360));
    assert_eq!(msg_of(&out[0]), &pre_prepare(0, 1, batch(1)));
    assert_unchanged(&mut t, Dest::AllReplicas, commit(0, 1, batch(1).digest()));
}

#[test]
fn impersonate_copies_are_rejected() {
    let mut t = traitor(Behavior::Impersonate, 3);
    let v = verifier();
    let d = batch(1).digest();
    for honest in [prepare(3, 1, d), commit(3, 1, d), checkpoint(3, 16)] {
        let out = mutate(&mut t, Dest::AllReplicas, honest.clone());
        assert_eq!(out.len(), 2);
        assert_eq!(out[0], Outgoing::now(Dest::AllReplicas, honest));
        v.verify(3, msg_of(&out[0]).clone())
            .expect("original is fine");
        let copy = msg_of(&out[1]).clone();
        let claimed = match &copy {
            Message::Prepare(p) => p.body.replica,
            Message::Commit(c) => c.body.replica,
            Message::Checkpoint(c) => c.body.replica,
            other => panic!("unexpected {}", other.kind()),
        };
        assert_eq!(claimed, 0, "(3 + 1) % 4");
        assert!(matches!(
            v.verify(claimed, copy.clone()),
            Err(Rejection::BadSignature(_))
        ));
        assert!(matches!(v.verify(3, copy), Err(Rejection::WrongSender(_))));
    }
}

#[test]
fn flood_garbage_is_rejected() {
    let mut t = traitor(Behavior::Flood, 1);
    let v = verifier();
    let mut reasons = BTreeSet::new();
    for call in 0..20u64 {
        let honest = prepare(1, call + 1, batch(1).digest());
        let out = mutate(&mut t, Dest::Replica(2), honest.clone());
        assert_eq!(out.len(), 9);
        assert_eq!(out[0], Outgoing::now(Dest::Replica(2), honest));
        for o in &out[1..] {
            assert_eq!(o.dest, Dest::AllReplicas);
            let Payload::Raw(bytes) = &o.payload else {
                panic!("expected raw bytes")
            };
            assert!(!bytes.is_empty() && bytes.len() < 2048 + 5);
            match decode(bytes, &Limits::default()) {
                Err(e) => {
                    if e == DecodeError::BadMagic {
                        assert_ne!(bytes.get(..4), Some(&MAGIC[..]));
                    }
                    reasons.insert(e.reason());
                }
                Ok(msg) => {
                    // Decodes: must fail verification whichever id it is pinned on.
                    for from in 0..N {
                        assert!(v.verify(from, msg.clone()).is_err(), "accepted from {from}");
                    }
                    reasons.insert("verifier");
                }
            }
        }
    }
    assert!(reasons.contains("bad_magic"), "{reasons:?}");
    assert!(reasons.contains("malformed"), "{reasons:?}");
    assert!(reasons.contains("verifier"), "{reasons:?}");
}

#[test]
fn poison_state_corrupts_chunks_and_proofs() {
    let mut t = traitor(Behavior::PoisonState, 0);
    let data = b"snapshot bytes".to_vec();
    let out = mutate(
        &mut t,
        Dest::Replica(1),
        Message::StateChunk {
            seq: 16,
            index: 0,
            total: 1,
            data: data.clone(),
        },
    );
    let Message::StateChunk {
        seq,
        index,
        total,
        data: poisoned,
    } = msg_of(&out[0])
    else {
        panic!("expected a chunk")
    };
    assert_eq!((*seq, *index, *total), (16, 0, 1));
    assert_eq!(poisoned.len(), data.len());
    assert_ne!(Digest::of(poisoned), Digest::of(&data));

    let proof = |len| {
        let b = batch(len);
        let (pp, b) = match pre_prepare(0, 1, b) {
            Message::PrePrepare { pre_prepare, batch } => (pre_prepare, batch),
            _ => unreachable!(),
        };
        CommittedProof {
            pre_prepare: pp,
            batch: b,
            commits: vec![],
        }
    };
    let out = mutate(
        &mut t,
        Dest::Replica(1),
        Message::Committed {
            stable_proof: vec![],
            proofs: vec![proof(2), proof(0)],
        },
    );
    let Message::Committed { proofs, .. } = msg_of(&out[0]) else {
        panic!("expected committed proofs")
    };
    assert_eq!(proofs.len(), 2);
    assert_eq!(proofs[0].batch.requests.len(), 1);
    for p in proofs {
        assert_ne!(p.pre_prepare.body.digest, p.batch.digest());
    }
    assert_unchanged(&mut t, Dest::AllReplicas, checkpoint(0, 16));
}

/// A cluster whose client accounts are clients 0, 1 and 2 of [`request`], in order.
fn three_clients() -> Config {
    let mut cfg = config();
    cfg.clients = ClientKeys::listed((0..3).map(|c| request(c, 1).body.client));
    cfg
}

/// The pre-prepares in `out`, as (seq, batch), checking that each goes to every
/// replica, verifies as the view-0 primary's, and is followed by the primary's commit
/// for it.
fn proposals(out: &[Outgoing]) -> Vec<(u64, Batch)> {
    assert_eq!(out.len() % 2, 0, "{out:?}");
    out.chunks(2)
        .map(|pair| {
            for o in pair {
                assert_eq!(o.dest, Dest::AllReplicas);
                verifier()
                    .verify(0, msg_of(o).clone())
                    .expect("signed by the primary");
            }
            let (h, b) = header(msg_of(&pair[0]));
            assert_eq!((h.view, h.digest), (0, b.digest()));
            let Message::Commit(c) = msg_of(&pair[1]) else {
                panic!("expected its commit, got {}", msg_of(&pair[1]).kind());
            };
            assert_eq!(
                (c.body.view, c.body.seq, c.body.digest, c.body.replica),
                (0, h.seq, h.digest, 0)
            );
            (h.seq, b.clone())
        })
        .collect()
}

#[test]
fn censor_leaves_one_client_out_and_fills_its_pipeline_with_null_batches() {
    let cfg = three_clients();
    let censored = request(0, 1).body.client;
    assert_eq!(cfg.clients.first(), Some(censored));
    let depth = cfg.pipeline_depth;
    let mut t = Traitor::new(Behavior::Censor, 0, keys()[0].clone(), cfg, 42);
    let all: Vec<SignedRequest> = (0..3).map(|c| request(c, 1)).collect();
    let others: Vec<SignedRequest> = all
        .iter()
        .filter(|r| r.body.client != censored)
        .cloned()
        .collect();
    assert_eq!(others.len(), 2);
    // its replica proposes all three at seq 1: that proposal is not sent; the other
    // two clients' requests go out at seq 1, and null batches fill the pipeline
    let out = mutate(
        &mut t,
        Dest::AllReplicas,
        pre_prepare(0, 1, Batch { requests: all }),
    );
    let sent = proposals(&out);
    assert_eq!(sent.len() as u64, depth);
    assert_eq!(sent[0], (1, Batch { requests: others }));
    for (i, (seq, b)) in sent.iter().enumerate().skip(1) {
        assert_eq!((*seq, b), (i as u64 + 1, &Batch::null()));
    }
    // the same proposal again (a retransmission) adds nothing, and nothing is
    // re-sent before a retransmission interval passes
    let out = mutate(
        &mut t,
        Dest::AllReplicas,
        pre_prepare(
            0,
            1,
            Batch {
                requests: vec![request(1, 1)],
            },
        ),
    );
    assert!(out.is_empty(), "{out:?}");
    // two peers commit seq 1 (q-1): one more slot, filled with a null batch
    let d = sent[0].1.digest();
    let (out, deliver) = t.observe(1, &commit(1, 1, d), Instant::ZERO);
    assert!(out.is_empty() && deliver);
    let (out, deliver) = t.observe(2, &commit(2, 1, d), Instant::ZERO);
    assert!(deliver);
    assert_eq!(proposals(&out), vec![(depth + 1, Batch::null())]);
    // its replica never sees its pre-prepares relayed back, nor committed proofs
    // (either would show it its own double signing)
    let relayed = pre_prepare(0, 2, Batch::null());
    assert!(!t.observe(1, &relayed, Instant::ZERO).1);
    let committed = Message::Committed {
        stable_proof: vec![],
        proofs: vec![],
    };
    assert!(!t.observe(1, &committed, Instant::ZERO).1);
    // two peers announce one checkpoint: it adds its own, matching theirs
    let cp = |r: ReplicaId| checkpoint(r, 16);
    assert!(t.observe(1, &cp(1), Instant::ZERO).0.is_empty());
    let (out, _) = t.observe(2, &cp(2), Instant::ZERO);
    assert_eq!(out, vec![Outgoing::now(Dest::AllReplicas, cp(0))]);
    // a retransmission interval later, what is in flight goes out again
    let later = Instant::ZERO.plus(t_retransmit());
    let out = t.mutate(Dest::AllReplicas, checkpoint(0, 16), later);
    assert_eq!(msg_of(&out[0]), &checkpoint(0, 16));
    let again: Vec<u64> = proposals(&out[1..]).iter().map(|(s, _)| *s).collect();
    assert_eq!(again, (2..=depth + 1).collect::<Vec<_>>());
    // once its replica moves to view 1 it is an honest backup
    let vc = view_change(0, 1, 0, vec![]);
    assert_eq!(mutate(&mut t, Dest::AllReplicas, vc.clone()).len(), 1);
    let d = batch(2).digest();
    assert_unchanged(&mut t, Dest::AllReplicas, commit(0, 1, d));
    assert_eq!(
        t.observe(1, &pre_prepare(1, 1, batch(2)), Instant::ZERO),
        (vec![], true)
    );
}

fn t_retransmit() -> Duration {
    config().retransmit_interval
}

#[test]
fn censor_as_backup_is_honest() {
    let mut t = Traitor::new(Behavior::Censor, 1, keys()[1].clone(), three_clients(), 42);
    let d = batch(3).digest();
    assert_eq!(
        t.observe(0, &pre_prepare(0, 1, batch(3)), Instant::ZERO),
        (vec![], true)
    );
    assert_unchanged(&mut t, Dest::AllReplicas, prepare(1, 1, d));
    assert_unchanged(&mut t, Dest::AllReplicas, commit(1, 1, d));
    assert_eq!(t.altered(), 0);
}

#[test]
fn inject_sends_made_up_and_replayed_requests_to_the_backups_only() {
    let mut t = Traitor::new(Behavior::Inject, 3, keys()[3].clone(), three_clients(), 42);
    let strict = Verifier::new(config().validators).with_clients(three_clients().clients);
    // it has seen two requests in a pre-prepare
    let seen = batch(2).requests;
    assert_eq!(
        t.observe(0, &pre_prepare(0, 1, batch(2)), Instant::ZERO),
        (vec![], true)
    );
    let d = batch(2).digest();
    let out = mutate(&mut t, Dest::AllReplicas, prepare(3, 1, d));
    assert_eq!(msg_of(&out[0]), &prepare(3, 1, d));
    let extra = &out[1..];
    assert_eq!(extra.len(), 4, "two requests to each of two backups");
    let to: Vec<Dest> = extra.iter().map(|o| o.dest.clone()).collect();
    assert_eq!(
        to,
        vec![
            Dest::Replica(1),
            Dest::Replica(2),
            Dest::Replica(1),
            Dest::Replica(2)
        ],
        "never the primary (0)"
    );
    let requests: Vec<SignedRequest> = extra
        .iter()
        .map(|o| match msg_of(o) {
            Message::Request(r) => r.clone(),
            other => panic!("expected a request, got {}", other.kind()),
        })
        .collect();
    // the first is freshly signed by a key that is no client: its signature holds,
    // and the cluster's rule refuses it before checking it
    let fresh = &requests[0];
    assert!(verifier()
        .verify(3, Message::Request(fresh.clone()))
        .is_ok());
    assert_eq!(
        strict
            .verify(3, Message::Request(fresh.clone()))
            .expect_err("not a client")
            .reason(),
        "unknown_client"
    );
    // the second replays a request it saw
    assert!(seen.contains(&requests[2]), "{:?}", requests[2]);
    // each vote brings a new made-up key
    let out = mutate(&mut t, Dest::AllReplicas, commit(3, 1, d));
    match msg_of(&out[1]) {
        Message::Request(r) => assert_ne!(r.body.client, fresh.body.client),
        other => panic!("expected a request, got {}", other.kind()),
    }
    // a checkpoint is not a trigger
    assert_unchanged(&mut t, Dest::AllReplicas, checkpoint(3, 16));
    // in view 1 the primary is 1: the backups are 0 and 2
    mutate(&mut t, Dest::AllReplicas, view_change(3, 1, 0, vec![]));
    let out = mutate(
        &mut t,
        Dest::AllReplicas,
        Message::Status {
            view: 1,
            last_executed: 0,
        },
    );
    let to: BTreeSet<ReplicaId> = out[1..]
        .iter()
        .map(|o| match o.dest {
            Dest::Replica(r) => r,
            ref d => panic!("{d:?}"),
        })
        .collect();
    assert_eq!(to, BTreeSet::from([0, 2]));
}

/// A mixed script of honest messages exercising every behaviour.
fn script() -> Vec<(Dest, Message)> {
    let d = batch(2).digest();
    let mut out = Vec::new();
    for seq in 1..=5 {
        out.push((Dest::AllReplicas, pre_prepare(0, seq, batch(2))));
        out.push((Dest::AllReplicas, prepare(0, seq, d)));
        out.push((Dest::AllReplicas, commit(0, seq, d)));
    }
    out.push((Dest::AllReplicas, checkpoint(0, 16)));
    out.push((
        Dest::AllReplicas,
        view_change(0, 1, 0, vec![prepared_proof(2)]),
    ));
    out.push((
        Dest::AllReplicas,
        view_change(0, 1, 0, vec![prepared_proof(2)]),
    ));
    out.push((Dest::AllReplicas, new_view(4, &[0], vec![])));
    out.push((
        Dest::Replica(2),
        Message::StateChunk {
            seq: 16,
            index: 0,
            total: 1,
            data: vec![1, 2, 3],
        },
    ));
    out
}

fn run(behavior: Behavior, seed: u64) -> Vec<Vec<Outgoing>> {
    let mut t = Traitor::new(behavior, 0, keys()[0].clone(), config(), seed);
    script()
        .into_iter()
        .map(|(dest, m)| t.mutate(dest, m, Instant(1_000)))
        .collect()
}

#[test]
fn same_seed_same_outputs() {
    for b in Behavior::ALL {
        let first = run(b, 7);
        assert_eq!(first, run(b, 7), "{b} is not deterministic");
        let mut t = traitor(b, 0);
        for (dest, m) in script() {
            mutate(&mut t, dest, m);
        }
        if b != Behavior::Replay && b != Behavior::Frame && b != Behavior::ExploitWipe {
            // Every behaviour but replay alters something in the script (frame and
            // exploit_wipe act on what they receive: see their own tests).
            assert!(t.altered() > 0, "{b} altered nothing");
        }
    }
    assert_ne!(run(Behavior::Flood, 7), run(Behavior::Flood, 8));
    assert_ne!(run(Behavior::Replay, 7), run(Behavior::Replay, 8));
}

#[test]
fn frame_pairs_each_genuine_header_with_another_batch() {
    let mut t = traitor(Behavior::Frame, 2);
    let mut fakes = Vec::new();
    for seq in 1..=2 {
        let genuine = pre_prepare(0, seq, batch(3));
        let (header_in, batch_in) = header(&genuine);
        let (out, deliver) = t.observe(0, &genuine, Instant::ZERO);
        assert!(deliver, "its own replica still gets the genuine proposal");
        // to every peer but itself, a relay and an evidence message
        let dests: BTreeSet<ReplicaId> = out
            .iter()
            .map(|o| match o.dest {
                Dest::Replica(r) => r,
                ref other => panic!("sent to {other:?}"),
            })
            .collect();
        assert_eq!(dests, BTreeSet::from([0, 1, 3]));
        assert_eq!(out.len(), 6);
        for o in &out {
            let (pp, fake) = match msg_of(o) {
                Message::PrePrepare { pre_prepare, batch } => (pre_prepare, batch),
                Message::Evidence(e) => match &**e {
                    pbft_protocol::Evidence::BadPrePrepare { pre_prepare, batch } => {
                        (pre_prepare, batch)
                    }
                    other => panic!("unexpected evidence {}", other.kind()),
                },
                other => panic!("unexpected {}", other.kind()),
            };
            // the primary's genuine signed header, untouched, with another batch
            assert_eq!(pp.body, header_in);
            let v = verifier();
            assert!(
                v.verify(2, msg_of(o).clone()).is_ok(),
                "a genuine signature"
            );
            assert_ne!(fake, batch_in);
            assert_ne!(fake.digest(), pp.body.digest);
            fakes.push(fake.clone());
        }
        // each slot is framed once
        let (again, _) = t.observe(3, &genuine, Instant::ZERO);
        assert!(again.is_empty());
    }
    // the two slots were framed in the two ways: another valid batch, and one with a
    // forged request (a request copied from the batch with its operation altered)
    assert!(fakes.iter().any(|f| f.requests.len() == 3));
    assert!(fakes.iter().any(|f| f.requests.len() == 4));
    // the pre-prepares inside a new view are framed too, each with another batch
    let nv_pps: Vec<Signed<PrePrepare>> = [batch(2), Batch::null()]
        .into_iter()
        .enumerate()
        .map(|(i, b)| {
            Signed::sign(
                PrePrepare {
                    view: 1,
                    seq: 10 + i as u64,
                    digest: b.digest(),
                },
                &keys()[1],
            )
        })
        .collect();
    let nv = Message::NewView(Box::new(Signed::sign(
        NewView {
            view: 1,
            view_changes: Vec::new(),
            pre_prepares: nv_pps.clone(),
        },
        &keys()[1],
    )));
    let (out, deliver) = t.observe(1, &nv, Instant::ZERO);
    assert!(deliver);
    assert_eq!(
        out.len(),
        2 * 2 * 3,
        "two headers, two messages each, three peers"
    );
    for o in &out {
        if let Message::PrePrepare { pre_prepare, batch } = msg_of(o) {
            assert!(nv_pps.contains(pre_prepare));
            assert_ne!(batch.digest(), pre_prepare.body.digest);
        }
    }
    // what it sends itself, and the primary's own pre-prepares, pass unchanged
    assert_unchanged(&mut t, Dest::Replica(1), prepare(2, 1, Digest::of(b"x")));
    let mut own = traitor(Behavior::Frame, 0);
    let (out, deliver) = own.observe(1, &pre_prepare(0, 1, batch(2)), Instant::ZERO);
    assert!(out.is_empty() && deliver);
}

#[test]
fn status_spam_sends_every_peer_bursts_of_old_views() {
    let mut t = traitor(Behavior::StatusSpam, 2);
    // its own commit in view 3 sets the highest view it has seen
    let c = Message::Commit(Signed::sign(
        Commit {
            view: 3,
            seq: 1,
            digest: Digest::of(b"d"),
            replica: 2,
        },
        &keys()[2],
    ));
    let out = mutate(&mut t, Dest::AllReplicas, c.clone());
    assert_eq!(
        out[0],
        Outgoing::now(Dest::AllReplicas, c),
        "the message itself goes out"
    );
    let mut per_peer = std::collections::BTreeMap::<ReplicaId, u64>::new();
    for o in &out[1..] {
        let Dest::Replica(r) = o.dest else {
            panic!("sent to {:?}", o.dest)
        };
        match msg_of(o) {
            Message::Status { view, .. } => assert!(*view < 3, "an old view: {view}"),
            other => panic!("unexpected {}", other.kind()),
        }
        *per_peer.entry(r).or_default() += 1;
    }
    assert_eq!(
        per_peer,
        std::collections::BTreeMap::from([(0, 32), (1, 32), (3, 32)])
    );
}

#[test]
fn exploit_wipe_reproposes_to_the_wiped_validator_alone_and_exposes_its_contradiction() {
    let mut t = traitor(Behavior::ExploitWipe, 0);
    // as primary of view 0 it proposes seqs 1..=3 (honestly)
    for seq in 1..=3u64 {
        let pp = pre_prepare(0, seq, batch(2));
        assert_eq!(
            mutate(&mut t, Dest::AllReplicas, pp.clone()),
            vec![Outgoing::now(Dest::AllReplicas, pp)]
        );
    }
    let d = batch(2).digest();
    // validator 2 votes for them and reports having executed 2
    for seq in 1..=3u64 {
        assert_eq!(
            t.observe(2, &prepare(2, seq, d), Instant::ZERO),
            (vec![], true)
        );
    }
    let status = |e| Message::Status {
        view: 0,
        last_executed: e,
    };
    assert_eq!(t.observe(2, &status(2), Instant::ZERO), (vec![], true));
    // its progress goes back: it lost its disk
    let (out, deliver) = t.observe(2, &status(0), Instant::ZERO);
    assert!(deliver);
    assert_eq!(out.len(), 2, "seqs 1 and 2, where it had executed: {out:?}");
    let mut offered = Vec::new();
    for o in &out {
        assert_eq!(o.dest, Dest::Replica(2), "to the wiped validator alone");
        match msg_of(o) {
            Message::PrePrepare { pre_prepare, batch } => {
                assert_eq!(pre_prepare.body.view, 0, "in the same view");
                assert_ne!(pre_prepare.body.digest, d, "another batch");
                assert_eq!(batch.digest(), pre_prepare.body.digest);
                assert!(verifier().verify(0, msg_of(o).clone()).is_ok());
                offered.push((pre_prepare.body.seq, pre_prepare.body.digest));
            }
            other => panic!("expected a pre-prepare, got {}", other.kind()),
        }
    }
    assert_eq!(
        offered.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        vec![1, 2]
    );
    // once only
    assert_eq!(t.observe(2, &status(0), Instant::ZERO).0, vec![]);
    // validator 2 prepares the other batch: both its prepares go to every peer
    let (seq, other) = offered[0];
    let (out, _) = t.observe(2, &prepare(2, seq, other), Instant::ZERO);
    let to: Vec<Dest> = out.iter().map(|o| o.dest.clone()).collect();
    assert_eq!(
        to,
        vec![Dest::Replica(1), Dest::Replica(2), Dest::Replica(3)]
    );
    match msg_of(&out[0]) {
        Message::Evidence(e) => {
            assert_eq!(e.accused(N), 2);
            assert!(verifier().verify(0, msg_of(&out[0]).clone()).is_ok());
        }
        other => panic!("expected evidence, got {}", other.kind()),
    }
    // a recovery question is a trigger too (for another validator, here 3)
    assert_eq!(t.observe(3, &status(3), Instant::ZERO), (vec![], true));
    let (out, _) = t.observe(3, &Message::RecoveryQuery { nonce: 1 }, Instant::ZERO);
    assert_eq!(out.len(), 3);
    assert!(out.iter().all(|o| o.dest == Dest::Replica(3)));
}
