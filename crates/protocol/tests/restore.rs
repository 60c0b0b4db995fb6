//! Restart from the write-ahead log: a replica rebuilt with `Replica::restore` never
//! contradicts what it sent before the crash.

use pbft_crypto::Keypair;
use pbft_protocol::{
    Action, Batch, Config, Instant, Message, PrePrepare, Prepare, PreparedProof, Replica, Request,
    Signed, Verifier, ViewChange, WalRecord,
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
    let vc = |r: u32, prepared: Vec<PreparedProof>| {
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
    for (from, msg) in [(2, vc(2, vec![proof.clone()])), (3, vc(3, vec![proof]))] {
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

    // crash, restart from the log, and receive a fresh request
    let mut restarted = Replica::restore(cfg, 1, keys[1].clone(), &wal, 0, Instant(2_000)).unwrap();
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
}
