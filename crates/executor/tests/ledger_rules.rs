//! The ledger's rules, on the in-memory executor (the RocksDB executor runs the same
//! transition; `parity.rs` proves they agree): atomic multi-transfer requests, failed
//! receipts that change nothing, checked arithmetic, exactly-once, the hash chain.

use pbft_crypto::{Digest, Keypair, PublicKey};
use pbft_executor::types::{checkpoint_digest, state_digest_after, EXEC_WINDOW};
use pbft_executor::{
    Entry, ExecRequest, Executor, FailReason, MemoryExecutor, Operation, Receipt, Transfer,
};
use std::collections::BTreeMap;

fn key(i: u8) -> PublicKey {
    Keypair::from_seed(&[i; 32]).unwrap().public()
}

fn ledger(balances: &[(u8, u64)]) -> MemoryExecutor {
    let g: BTreeMap<PublicKey, u64> = balances.iter().map(|(i, b)| (key(*i), *b)).collect();
    MemoryExecutor::genesis(&g)
}

fn op(transfers: &[(u8, u64)]) -> Vec<u8> {
    Operation {
        transfers: transfers
            .iter()
            .map(|(to, amount)| Transfer {
                to: key(*to),
                amount: *amount,
            })
            .collect(),
    }
    .encode()
}

/// Applies one request from `from` as the next batch; returns its entry and reply.
fn run(l: &mut MemoryExecutor, from: u8, rid: u64, op: &[u8]) -> (Entry, Receipt) {
    let client = key(from);
    let seq = l.head().height + 1;
    let req = [ExecRequest {
        client: &client,
        request_id: rid,
        op,
        digest: Digest::of(op),
    }];
    let a = l.apply(seq, Digest::of(&seq.to_le_bytes()), &req).unwrap();
    (
        a.entries[0].clone(),
        Receipt::decode(&a.replies[0]).unwrap(),
    )
}

fn balance(l: &MemoryExecutor, i: u8) -> Option<u64> {
    l.balance(&key(i)).unwrap()
}

fn failed(reason: FailReason) -> Receipt {
    Receipt::Failed { reason }
}

#[test]
fn a_transfer_moves_money() {
    let mut l = ledger(&[(1, 100), (2, 0)]);
    let (e, r) = run(&mut l, 1, 1, &op(&[(2, 30)]));
    assert_eq!(r, Receipt::Applied { balance: 70 });
    assert_eq!(e, Entry::Executed(r));
    assert_eq!(balance(&l, 1), Some(70));
    assert_eq!(balance(&l, 2), Some(30));
}

#[test]
fn a_request_is_all_or_nothing() {
    let mut l = ledger(&[(1, 100), (2, 0), (3, 0)]);
    let before = l.head().state_digest;
    // the second transfer overdraws: the first must not be applied either
    let (_, r) = run(&mut l, 1, 1, &op(&[(2, 60), (3, 60)]));
    assert_eq!(r, failed(FailReason::InsufficientFunds));
    assert_eq!(balance(&l, 1), Some(100));
    assert_eq!(balance(&l, 2), Some(0));
    assert_eq!(balance(&l, 3), Some(0));
    // the state changed only by the client's window and the chain position
    assert_ne!(l.head().state_digest, before);
    // an unknown receiver anywhere in the request fails it all
    let (_, r) = run(&mut l, 1, 2, &op(&[(2, 10), (9, 10)]));
    assert_eq!(r, failed(FailReason::UnknownAccount));
    assert_eq!(balance(&l, 2), Some(0));
}

#[test]
fn failures_have_reasons_and_change_no_balance() {
    let mut l = ledger(&[(1, 100), (2, u64::MAX - 5)]);
    assert_eq!(
        run(&mut l, 1, 1, &op(&[(2, 0)])).1,
        failed(FailReason::BadAmount)
    );
    assert_eq!(run(&mut l, 1, 2, &op(&[])).1, failed(FailReason::BadAmount));
    assert_eq!(
        run(&mut l, 1, 3, &op(&[(2, 10)])).1,
        failed(FailReason::Overflow)
    );
    assert_eq!(
        run(&mut l, 1, 4, b"\xff\xff garbage").1,
        failed(FailReason::Malformed)
    );
    assert_eq!(
        run(&mut l, 7, 1, &op(&[(2, 1)])).1,
        failed(FailReason::UnknownAccount)
    );
    let many: Vec<(u8, u64)> = (0..17).map(|_| (2, 1)).collect();
    assert_eq!(
        run(&mut l, 1, 5, &op(&many)).1,
        failed(FailReason::BadAmount)
    );
    assert_eq!(balance(&l, 1), Some(100));
    assert_eq!(balance(&l, 2), Some(u64::MAX - 5));
}

#[test]
fn sending_to_oneself_keeps_the_balance() {
    let mut l = ledger(&[(1, 100)]);
    assert_eq!(
        run(&mut l, 1, 1, &op(&[(1, 40)])).1,
        Receipt::Applied { balance: 100 }
    );
    assert_eq!(
        run(&mut l, 1, 2, &op(&[(1, 101)])).1,
        failed(FailReason::InsufficientFunds)
    );
}

#[test]
fn a_request_executes_once_and_a_duplicate_gets_the_original_receipt() {
    let mut l = ledger(&[(1, 100), (2, 0)]);
    let (_, first) = run(&mut l, 1, 1, &op(&[(2, 30)]));
    let (e, again) = run(&mut l, 1, 1, &op(&[(2, 30)]));
    assert_eq!(e, Entry::Duplicate);
    assert_eq!(
        again, first,
        "the duplicate answers with the original receipt"
    );
    assert_eq!(balance(&l, 1), Some(70), "nothing applied twice");
    // a different operation under the same request id is still a duplicate
    let (e, _) = run(&mut l, 1, 1, &op(&[(2, 50)]));
    assert_eq!(e, Entry::Duplicate);
    assert_eq!(balance(&l, 2), Some(30));
    // request ids may execute out of order, each once
    run(&mut l, 1, 3, &op(&[(2, 1)]));
    run(&mut l, 1, 2, &op(&[(2, 1)]));
    assert_eq!(run(&mut l, 1, 3, &op(&[(2, 1)])).0, Entry::Duplicate);
    assert_eq!(balance(&l, 2), Some(32));
    // request id 0 is never valid
    assert_eq!(run(&mut l, 1, 0, &op(&[(2, 1)])).0, Entry::Duplicate);
}

#[test]
fn duplicates_inside_one_batch() {
    let mut l = ledger(&[(1, 100), (2, 0)]);
    let c = key(1);
    let o = op(&[(2, 10)]);
    let reqs = [
        ExecRequest {
            client: &c,
            request_id: 1,
            op: &o,
            digest: Digest::of(&o),
        },
        ExecRequest {
            client: &c,
            request_id: 1,
            op: &o,
            digest: Digest::of(&o),
        },
    ];
    let a = l.apply(1, Digest::ZERO, &reqs).unwrap();
    assert!(matches!(a.entries[0], Entry::Executed(_)));
    assert_eq!(a.entries[1], Entry::Duplicate);
    assert_eq!(a.replies[0], a.replies[1]);
    assert_eq!(balance(&l, 2), Some(10));
}

/// A request id that executed, signed again with another operation (a client that
/// lost count, or a hostile one): the block records a duplicate as for any executed id,
/// but the reply must not be the receipt of the operation that ran under that id, or
/// the client would read "applied" for an operation that never ran.
#[test]
fn a_request_id_reused_for_another_operation_is_refused_not_given_the_original_receipt() {
    let mut l = ledger(&[(1, 100), (2, 0), (3, 0)]);
    let first = op(&[(2, 30)]);
    let (_, applied) = run(&mut l, 1, 1, &first);
    assert_eq!(applied, Receipt::Applied { balance: 70 });
    let other = op(&[(3, 50)]);
    let (e, r) = run(&mut l, 1, 1, &other);
    assert_eq!(
        e,
        Entry::Duplicate,
        "the block records a duplicate either way"
    );
    assert_ne!(r, applied, "another operation got the receipt of request 1");
    assert_eq!(r, failed(FailReason::ReusedId));
    assert_eq!((balance(&l, 1), balance(&l, 3)), (Some(70), Some(0)));
    // the operation that ran is still answered with its receipt
    assert_eq!(run(&mut l, 1, 1, &first).1, applied);
    let stored = l.receipt(&key(1), 1).unwrap().unwrap();
    assert_eq!(stored.request, Digest::of(&first));
    // within one batch too
    let c = key(1);
    let (a, b) = (op(&[(2, 5)]), op(&[(3, 5)]));
    let reqs = [
        ExecRequest {
            client: &c,
            request_id: 2,
            op: &a,
            digest: Digest::of(&a),
        },
        ExecRequest {
            client: &c,
            request_id: 2,
            op: &b,
            digest: Digest::of(&b),
        },
    ];
    let seq = l.head().height + 1;
    let x = l.apply(seq, Digest::of(&seq.to_le_bytes()), &reqs).unwrap();
    assert_eq!(x.entries[1], Entry::Duplicate);
    let (ra, rb) = (
        Receipt::decode(&x.replies[0]).unwrap(),
        Receipt::decode(&x.replies[1]).unwrap(),
    );
    assert_eq!(ra, Receipt::Applied { balance: 65 });
    assert_ne!(rb, ra, "the second operation got the first one's receipt");
    assert_eq!(rb, failed(FailReason::ReusedId));
    assert_eq!(balance(&l, 3), Some(0));
}

#[test]
fn request_ids_far_beyond_the_window_are_refused_without_being_recorded() {
    let mut l = ledger(&[(1, 100), (2, 0)]);
    let (e, r) = run(&mut l, 1, 1 + EXEC_WINDOW, &op(&[(2, 1)]));
    assert_eq!(e, Entry::Refused(FailReason::OutOfWindow));
    assert_eq!(r, failed(FailReason::OutOfWindow));
    assert_eq!(balance(&l, 2), Some(0));
    // once the window moves, the same id executes
    for rid in 1..=EXEC_WINDOW {
        run(&mut l, 1, rid, &op(&[(2, 0)]));
    }
    let (e, _) = run(&mut l, 1, 1 + EXEC_WINDOW, &op(&[(2, 1)]));
    assert!(matches!(e, Entry::Executed(_)));
}

#[test]
fn blocks_form_a_hash_chain_including_null_batches() {
    let mut l = ledger(&[(1, 100), (2, 0)]);
    run(&mut l, 1, 1, &op(&[(2, 1)]));
    l.apply(2, Digest::of(b"null"), &[]).unwrap();
    run(&mut l, 1, 2, &op(&[(2, 1)]));
    let mut prev = Digest::ZERO;
    for h in 1..=3 {
        let b = l.block(h).unwrap().unwrap();
        assert_eq!(b.height, h);
        assert_eq!(b.prev, prev, "block {h} links to its predecessor");
        prev = b.hash();
    }
    assert_eq!(l.head().hash, prev);
    assert_eq!(l.head().height, 3);
    assert_eq!(
        l.block(3).unwrap().unwrap().state_digest,
        l.head().state_digest
    );
    // a receipt can be found by (client, request id), with its height
    let r = l.receipt(&key(1), 2).unwrap().unwrap();
    assert_eq!(r.height, 3);
}

#[test]
fn batches_apply_strictly_in_order() {
    let mut l = ledger(&[(1, 100)]);
    assert!(l.apply(2, Digest::ZERO, &[]).is_err());
    assert!(l.apply(1, Digest::ZERO, &[]).is_ok());
    assert!(l.apply(1, Digest::ZERO, &[]).is_err());
}

/// The LtHash, kept up to date only for the keys changed since the last checkpoint,
/// is the LtHash of the whole state; the checkpoint digest binds it with the head.
#[test]
fn the_checkpoint_digest_binds_the_lthash_of_the_whole_state() {
    let mut l = ledger(&[(1, 100), (2, 5), (3, 7)]);
    let lthash_of_state = |l: &MemoryExecutor| {
        pbft_executor::transition::lthash_of(l.entries().map(|(k, v)| (k.as_slice(), v.as_slice())))
    };
    for rid in 1..=20 {
        run(&mut l, 1, rid, &op(&[((rid % 2 + 2) as u8, 1)]));
        if rid % 7 == 0 {
            let d = l.checkpoint().unwrap();
            let full = lthash_of_state(&l);
            let head = l.head();
            assert_eq!(
                d,
                checkpoint_digest(head.height, &head.hash, &full.digest())
            );
        }
    }
    let full = lthash_of_state(&l);
    assert_eq!(full, l.lthash());
    let head = l.head();
    assert_eq!(
        l.checkpoint().unwrap(),
        checkpoint_digest(head.height, &head.hash, &full.digest())
    );
}

#[test]
fn rollback_returns_to_the_stable_checkpoint() {
    let mut l = ledger(&[(1, 100), (2, 0)]);
    run(&mut l, 1, 1, &op(&[(2, 10)]));
    let d = l.checkpoint().unwrap();
    l.stable(1).unwrap();
    let head = l.head();
    assert_eq!(checkpoint_digest(1, &head.hash, &l.lthash().digest()), d);
    run(&mut l, 1, 2, &op(&[(2, 10)]));
    run(&mut l, 1, 3, &op(&[(2, 10)]));
    assert_eq!(l.rollback().unwrap(), 1);
    assert_eq!(l.head(), head);
    assert_eq!(balance(&l, 2), Some(10));
    assert!(l.block(2).unwrap().is_none());
    assert!(l.receipt(&key(1), 2).unwrap().is_none());
    // and the same batches apply again to the same result
    run(&mut l, 1, 2, &op(&[(2, 10)]));
    assert_eq!(balance(&l, 2), Some(20));
}

#[test]
fn state_transfer_installs_only_a_matching_snapshot() {
    let mut a = ledger(&[(1, 100), (2, 0)]);
    for rid in 1..=8 {
        run(&mut a, 1, rid, &op(&[(2, 1)]));
    }
    let d = a.checkpoint().unwrap();
    let chunks = a.export(8, 64).unwrap();
    assert!(chunks.len() > 1, "small chunks split the snapshot");
    let mut b = ledger(&[(1, 100), (2, 0)]);
    let before = b.head();
    // wrong digest, corrupted chunk, missing chunk: rejected, nothing changes
    assert!(b.import(8, Digest::of(b"lie"), &chunks).is_err());
    let mut bad = chunks.clone();
    let last = bad[0].len() - 1;
    bad[0][last] ^= 1;
    assert!(b.import(8, d, &bad).is_err());
    assert!(b.import(8, d, &chunks[1..]).is_err());
    assert_eq!(b.head(), before);
    assert_eq!(balance(&b, 2), Some(0));
    // the real one installs
    let head = b.import(8, d, &chunks).unwrap();
    assert_eq!(head, a.head());
    assert_eq!(balance(&b, 2), Some(8));
    // and execution continues identically on both
    let (_, ra) = run(&mut a, 1, 9, &op(&[(2, 1)]));
    let (_, rb) = run(&mut b, 1, 9, &op(&[(2, 1)]));
    assert_eq!(ra, rb);
    assert_eq!(a.head(), b.head());
}

/// An account's record holds its client's exactly-once window, so a transfer changes
/// exactly the two account records and the chain position, and the state digest is the
/// LtHash of the documented encodings.
#[test]
fn a_transfer_changes_two_account_records_and_the_chain_position() {
    use pbft_executor::lthash::LtHash;
    use pbft_executor::types::keys;
    let mut l = ledger(&[(1, 100), (2, 0)]);
    let before: BTreeMap<Vec<u8>, Vec<u8>> =
        l.entries().map(|(k, v)| (k.clone(), v.clone())).collect();
    assert_eq!(
        run(&mut l, 1, 1, &op(&[(2, 10)])),
        (
            Entry::Executed(Receipt::Applied { balance: 90 }),
            Receipt::Applied { balance: 90 }
        )
    );
    let after: BTreeMap<Vec<u8>, Vec<u8>> =
        l.entries().map(|(k, v)| (k.clone(), v.clone())).collect();
    assert!(before.keys().eq(after.keys()), "no key added or removed");
    let changed: Vec<&Vec<u8>> = after
        .iter()
        .filter(|(k, v)| before.get(*k) != Some(*v))
        .map(|(k, _)| k)
        .collect();
    let mut want = [
        keys::account(&key(1)),
        keys::account(&key(2)),
        keys::CHAIN.to_vec(),
    ];
    want.sort();
    assert_eq!(changed, want.iter().collect::<Vec<_>>());

    // balance u64 LE || low u64 LE (no executed ids above it)
    let record = |balance: u64, low: u64| {
        let mut v = balance.to_le_bytes().to_vec();
        v.extend_from_slice(&low.to_le_bytes());
        v
    };
    assert_eq!(after[&keys::account(&key(1))], record(90, 2));
    assert_eq!(after[&keys::account(&key(2))], record(10, 1));
    assert_eq!(l.client_window(&key(1)).unwrap().next_request_id(), 2);
    assert_eq!(l.client_window(&key(2)).unwrap().next_request_id(), 1);

    // the LtHash, recomputed from the documented encodings
    let mut lt = LtHash::new();
    lt.insert(&keys::account(&key(1)), &record(90, 2));
    lt.insert(&keys::account(&key(2)), &record(10, 1));
    let genesis_chain = pbft_executor::types::ChainPos::default();
    let chain = pbft_executor::types::ChainPos {
        height: 1,
        prev: Digest::ZERO,
    };
    let encoded = |c: &pbft_executor::types::ChainPos| postcard::to_allocvec(c).unwrap();
    lt.insert(keys::CHAIN, &encoded(&chain));
    assert_eq!(lt.digest(), l.lthash().digest());
    // pinned; checked against an independent computation with Python's `blake3`,
    // `hashlib` and `cryptography` (ed25519 keys from the seeds [1; 32] and [2; 32])
    assert_eq!(
        l.lthash().digest().to_hex(),
        "cf7b4daf4492d06ab0cbdd03aab8423430f50b5e19a90cfb8aed911fdad8e825"
    );
    // the block's state digest chains the genesis state's digest with the batch's
    // changes: each changed key in increasing order, its value before and after
    let mut changes: pbft_executor::transition::Changes = [
        (keys::account(&key(1)), record(100, 1), record(90, 2)),
        (keys::account(&key(2)), record(0, 1), record(10, 1)),
        (
            keys::CHAIN.to_vec(),
            encoded(&genesis_chain),
            encoded(&chain),
        ),
    ]
    .into_iter()
    .map(|(k, old, new)| (k, (Some(old), Some(new))))
    .collect();
    changes.sort();
    let genesis_digest = {
        let mut g = LtHash::new();
        g.insert(&keys::account(&key(1)), &record(100, 1));
        g.insert(&keys::account(&key(2)), &record(0, 1));
        g.insert(keys::CHAIN, &encoded(&genesis_chain));
        g.digest()
    };
    assert_eq!(
        l.head().state_digest,
        state_digest_after(
            &genesis_digest,
            1,
            &postcard::to_allocvec(&changes).unwrap()
        )
    );

    // out-of-order ids: the executed ones above `low` follow as 16-bit offsets
    run(&mut l, 1, 3, &op(&[(2, 1)]));
    run(&mut l, 1, 6, &op(&[(2, 1)]));
    let mut want = record(88, 2);
    want.extend_from_slice(&[1, 0, 4, 0]);
    assert_eq!(
        l.entries()
            .find(|(k, _)| **k == keys::account(&key(1)))
            .map(|(_, v)| v.clone()),
        Some(want)
    );
    assert_eq!(l.client_window(&key(1)).unwrap().next_request_id(), 7);
}

/// A client without an account still executes exactly once: its window has its own
/// key, and a repeated request gets the original receipt.
#[test]
fn a_client_without_an_account_keeps_its_own_window() {
    use pbft_executor::types::keys;
    let mut l = ledger(&[(1, 100)]);
    let (e, r) = run(&mut l, 7, 1, &op(&[(1, 5)]));
    assert_eq!(e, Entry::Executed(failed(FailReason::UnknownAccount)));
    assert_eq!(r, failed(FailReason::UnknownAccount));
    assert_eq!(
        run(&mut l, 7, 1, &op(&[(1, 5)])),
        (Entry::Duplicate, failed(FailReason::UnknownAccount))
    );
    assert_eq!(l.client_window(&key(7)).unwrap().next_request_id(), 2);
    assert!(l.entries().any(|(k, _)| *k == keys::client(&key(7))));
    assert!(!l.entries().any(|(k, _)| *k == keys::account(&key(7))));
    assert_eq!(balance(&l, 7), None);
    assert_eq!(balance(&l, 1), Some(100));
}
