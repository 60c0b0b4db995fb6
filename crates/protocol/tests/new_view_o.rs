//! Proves that `new_view::compute_o` computes the `O` set (docs/protocol.md, "New view"):
//! `min_s` is the largest stable checkpoint in `V`, `max_s` the largest prepared
//! sequence number (at least `min_s`), and for every `s` in `(min_s, max_s]` the entry
//! names (by digest) the batch prepared in the highest view among `V`'s certificates for `s`, or
//! the null batch if there is none. Certificates at or below `min_s` are ignored, and
//! the result does not depend on the order of `V`.

mod common;

use common::*;
use pbft_crypto::Digest;
use pbft_protocol::new_view::{compute_o, OEntry, OSet};
use pbft_protocol::{Batch, PreparedCert, PreparedProof, Seq, View, ViewChange};
use proptest::prelude::*;
use proptest::test_runner::TestRunner;

fn batch_of(tag: u8) -> Batch {
    Batch {
        requests: vec![request(tag % 4, u64::from(tag) + 1, vec![tag])],
    }
}

fn cert(view: View, seq: Seq, batch: &Batch) -> PreparedProof {
    prepared_cert(view, seq, batch.clone(), &two_backups(view))
}

fn vc(new_view: View, stable_seq: Seq, prepared: Vec<PreparedProof>, replica: u32) -> ViewChange {
    view_change(new_view, stable_seq, prepared, replica).body
}

fn o_of(vcs: &[ViewChange]) -> OSet {
    compute_o(&vcs.iter().collect::<Vec<_>>())
}

fn null_entry(seq: Seq) -> OEntry {
    OEntry {
        seq,
        digest: Batch::null_digest(),
    }
}

fn entry(seq: Seq, batch: &Batch) -> OEntry {
    OEntry {
        seq,
        digest: batch.digest(),
    }
}

#[test]
fn empty_v_gives_empty_o_at_genesis() {
    let o = compute_o(&[]);
    assert_eq!(
        o,
        OSet {
            min_s: 0,
            max_s: 0,
            entries: vec![]
        }
    );
}

#[test]
fn no_prepared_certificates_give_empty_o_at_max_stable() {
    let vcs = vec![
        vc(3, 16, vec![], 0),
        vc(3, 32, vec![], 1),
        vc(3, 0, vec![], 2),
    ];
    let o = o_of(&vcs);
    assert_eq!(o.min_s, 32);
    assert_eq!(o.max_s, 32);
    assert!(o.entries.is_empty(), "{:?}", o.entries);
}

#[test]
fn min_s_is_the_largest_stable_checkpoint() {
    let a = batch_of(1);
    // the sender with the lowest checkpoint holds certificates above every checkpoint
    let vcs = vec![
        vc(2, 0, vec![cert(1, 20, &a)], 0),
        vc(2, 16, vec![], 2),
        vc(2, 0, vec![], 3),
    ];
    let o = o_of(&vcs);
    assert_eq!(o.min_s, 16);
    assert_eq!(o.max_s, 20);
    let seqs: Vec<Seq> = o.entries.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (17..=20).collect::<Vec<_>>());
}

#[test]
fn highest_view_wins_regardless_of_order() {
    let old = batch_of(1);
    let new = batch_of(2);
    let vcs = [
        vc(4, 0, vec![cert(1, 1, &old)], 0),
        vc(4, 0, vec![cert(3, 1, &new)], 2),
        vc(4, 0, vec![cert(2, 1, &old)], 3),
    ];
    // every permutation of V gives the same O, with the view-3 digest at seq 1
    let perms: [[usize; 3]; 6] = [
        [0, 1, 2],
        [0, 2, 1],
        [1, 0, 2],
        [1, 2, 0],
        [2, 0, 1],
        [2, 1, 0],
    ];
    for p in perms {
        let v: Vec<ViewChange> = p.iter().map(|i| vcs[*i].clone()).collect();
        let o = o_of(&v);
        assert_eq!(o.min_s, 0);
        assert_eq!(o.max_s, 1);
        assert_eq!(o.entries, vec![entry(1, &new)], "order {p:?}");
    }
}

#[test]
fn lower_view_certificate_does_not_override_even_if_listed_last() {
    let a = batch_of(5);
    let b = batch_of(6);
    // the same replica's V entry is irrelevant: only the certificates' views matter
    let vcs = vec![
        vc(6, 0, vec![cert(5, 2, &a), cert(0, 3, &a)], 1),
        vc(6, 0, vec![cert(4, 2, &b), cert(2, 3, &b)], 2),
        vc(6, 0, vec![cert(1, 2, &b)], 3),
    ];
    let o = o_of(&vcs);
    assert_eq!(o.max_s, 3);
    assert_eq!(o.entries, vec![null_entry(1), entry(2, &a), entry(3, &b)]);
}

#[test]
fn gaps_are_filled_with_the_null_batch() {
    let a = batch_of(1);
    let b = batch_of(2);
    let vcs = vec![
        vc(1, 16, vec![cert(0, 18, &a)], 0),
        vc(1, 16, vec![cert(0, 21, &b)], 1),
        vc(1, 16, vec![], 2),
    ];
    let o = o_of(&vcs);
    assert_eq!(o.min_s, 16);
    assert_eq!(o.max_s, 21);
    assert_eq!(
        o.entries,
        vec![
            null_entry(17),
            entry(18, &a),
            null_entry(19),
            null_entry(20),
            entry(21, &b),
        ]
    );
    assert_eq!(Batch::null().digest(), Batch::null_digest());
    assert_ne!(Batch::null_digest(), a.digest());
}

#[test]
fn certificates_at_or_below_min_s_are_ignored() {
    let a = batch_of(1);
    let b = batch_of(2);
    let vcs = vec![
        // a lagging sender still holds certificates for 10 and 16
        vc(
            1,
            0,
            vec![cert(0, 10, &a), cert(0, 16, &a), cert(0, 17, &b)],
            0,
        ),
        vc(1, 16, vec![], 1),
        vc(1, 16, vec![], 2),
    ];
    let o = o_of(&vcs);
    assert_eq!(o.min_s, 16);
    assert_eq!(o.max_s, 17);
    assert_eq!(o.entries, vec![entry(17, &b)]);

    // certificates only at or below min_s: O is empty and max_s == min_s
    let vcs = vec![
        vc(1, 0, vec![cert(0, 5, &a), cert(0, 16, &b)], 0),
        vc(1, 16, vec![], 1),
        vc(1, 16, vec![], 2),
    ];
    let o = o_of(&vcs);
    assert_eq!((o.min_s, o.max_s), (16, 16));
    assert!(o.entries.is_empty());
}

#[test]
fn entries_name_the_winning_certificates_batch() {
    let a = batch_of(3);
    let vcs = vec![vc(2, 0, vec![cert(1, 2, &a)], 0), vc(2, 0, vec![], 1)];
    let o = o_of(&vcs);
    assert_eq!(o.entries.len(), 2);
    assert_eq!(o.entries[0], null_entry(1));
    assert_eq!(o.entries[1].digest, a.digest());
}

/// One randomly generated certificate: (view, seq, batch tag).
type CertSpec = (View, Seq, u8);

fn arb_v() -> impl Strategy<Value = Vec<(Seq, Vec<CertSpec>)>> {
    proptest::collection::vec(
        (
            prop_oneof![Just(0u64), Just(16), Just(32), 0..40u64],
            proptest::collection::vec((0..6u64, 0..60u64, 0..4u8), 0..6),
        ),
        0..5,
    )
}

fn build(spec: &[(Seq, Vec<CertSpec>)]) -> Vec<ViewChange> {
    spec.iter()
        .enumerate()
        .map(|(i, (stable, certs))| ViewChange {
            new_view: 7,
            stable_seq: *stable,
            checkpoint_proof: Vec::new(),
            prepared: certs
                .iter()
                .map(|(v, s, t)| {
                    // batches from a small pool so that digests collide across views
                    PreparedCert {
                        pre_prepare: signed_pp(*v, *s, batch_of(*t).digest()),
                        prepares: Vec::new(),
                    }
                })
                .collect(),
            replica: (i % 4) as u32,
        })
        .collect()
}

#[test]
fn random_v_matches_the_specification() {
    let mut runner = TestRunner::new(pt_config(256, 0x0_5e7));
    runner
        .run(&(arb_v(), any::<u64>()), |(spec, shuffle)| {
            let vcs = build(&spec);
            let o = o_of(&vcs);
            let min_s = spec.iter().map(|(s, _)| *s).max().unwrap_or(0);
            let max_s = spec
                .iter()
                .flat_map(|(_, c)| c.iter().map(|(_, s, _)| *s))
                .max()
                .unwrap_or(0)
                .max(min_s);
            prop_assert_eq!(o.min_s, min_s);
            prop_assert_eq!(o.max_s, max_s);
            let seqs: Vec<Seq> = o.entries.iter().map(|e| e.seq).collect();
            prop_assert_eq!(seqs, (min_s + 1..=max_s).collect::<Vec<_>>());
            for e in &o.entries {
                let certs: Vec<&CertSpec> = spec
                    .iter()
                    .flat_map(|(_, c)| c.iter())
                    .filter(|(_, s, _)| *s == e.seq)
                    .collect();
                match certs.iter().map(|(v, _, _)| *v).max() {
                    None => {
                        prop_assert_eq!(e.digest, Batch::null_digest());
                    }
                    Some(top) => {
                        let allowed: Vec<Digest> = certs
                            .iter()
                            .filter(|(v, _, _)| *v == top)
                            .map(|(_, _, t)| batch_of(*t).digest())
                            .collect();
                        prop_assert!(
                            allowed.contains(&e.digest),
                            "seq {}: {:?} is not from a view-{} certificate {:?}",
                            e.seq,
                            e.digest,
                            top,
                            allowed
                        );
                    }
                }
            }
            // the order of V does not matter
            let mut shuffled = vcs.clone();
            if !shuffled.is_empty() {
                let len = shuffled.len();
                shuffled.rotate_left((shuffle as usize) % len);
                if shuffle & 1 == 1 {
                    shuffled.reverse();
                }
            }
            prop_assert_eq!(o_of(&shuffled), o);
            Ok(())
        })
        .unwrap();
}
