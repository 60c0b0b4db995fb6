//! The RocksDB executor and the in-memory one, fed the same random batches, agree on
//! everything: replies, entries, blocks, heads, checkpoint digests, snapshots, and the
//! state after rollbacks and imports.

mod common;

use common::{observe, verify_closed, People, Workload};
use pbft_executor::types::checkpoint_digest;
use pbft_executor::{
    verify_ledger, Entry, Executor, MemoryExecutor, Receipt, RocksExecutor, RocksOptions,
};
use std::collections::BTreeSet;

const CHECKPOINT_EVERY: u64 = 8;

/// Applies one batch to both and compares; checkpoints every 8 and marks the previous
/// checkpoint stable one batch later, as the protocol does. Returns what the block
/// recorded.
fn step(mem: &mut MemoryExecutor, rocks: &mut RocksExecutor, w: &mut Workload) -> Vec<Entry> {
    let seq = mem.head().height + 1;
    let batch = w.batch();
    let reqs = batch.requests();
    let a = mem.apply(seq, batch.digest, &reqs).expect("memory apply");
    let b = rocks.apply(seq, batch.digest, &reqs).expect("rocks apply");
    assert_eq!(a, b, "batch {seq}");
    let entries = a.entries;
    assert_eq!(mem.head(), rocks.head(), "head after {seq}");
    if seq.is_multiple_of(CHECKPOINT_EVERY) {
        let da = mem.checkpoint().expect("memory checkpoint");
        let db = rocks.checkpoint().expect("rocks checkpoint");
        assert_eq!(da, db, "checkpoint digest at {seq}");
    }
    if seq % CHECKPOINT_EVERY == 1 && seq > 1 {
        mem.stable(seq - 1).expect("memory stable");
        rocks.stable(seq - 1).expect("rocks stable");
    }
    entries
}

/// A short name for what an entry records, to check the workload covers every case.
fn kind(e: &Entry) -> String {
    match e {
        Entry::Executed(Receipt::Applied { .. }) => "applied".into(),
        Entry::Executed(Receipt::Failed { reason }) => format!("failed: {reason:?}"),
        Entry::Duplicate => "duplicate".into(),
        Entry::Refused(reason) => format!("refused: {reason:?}"),
    }
}

#[test]
fn same_batches_same_ledger() {
    let people = People::new(30, 5, 11);
    let mut w = Workload::new(&people, 12);
    let tmp = common::tempdir();
    let mut mem = MemoryExecutor::genesis(&people.genesis);
    let mut rocks =
        RocksExecutor::open(tmp.path(), &people.genesis, RocksOptions::default()).expect("open");
    assert_eq!(mem.head(), rocks.head(), "genesis");

    let mut seen = BTreeSet::new();
    let mut null_batches = 0;
    for _ in 0..45 {
        let entries = step(&mut mem, &mut rocks, &mut w);
        null_batches += usize::from(entries.is_empty());
        seen.extend(entries.iter().map(kind));
    }
    // the workload reached every outcome
    let want = [
        "applied",
        "duplicate",
        "refused: OutOfWindow",
        "failed: Malformed",
        "failed: BadAmount",
        "failed: UnknownAccount",
        "failed: InsufficientFunds",
        "failed: Overflow",
    ];
    for k in want {
        assert!(seen.contains(k), "no `{k}` in {seen:?}");
    }
    assert!(null_batches > 0, "no null batch");
    assert_eq!(
        observe(&mem, &people, &w.issued),
        observe(&rocks, &people, &w.issued)
    );

    // the same snapshot, byte for byte; older checkpoints are gone from both
    assert_eq!(
        mem.export(40, 300).expect("memory export"),
        rocks.export(40, 300).expect("rocks export"),
    );
    for seq in [0, 32, 44] {
        assert!(mem.export(seq, 300).is_err(), "memory kept {seq}");
        assert!(rocks.export(seq, 300).is_err(), "rocks kept {seq}");
    }
    assert_eq!(rocks.checkpoints().collect::<Vec<_>>(), vec![40]);

    // roll both back to the stable checkpoint (40) and go on with other batches
    assert_eq!(mem.rollback().expect("memory rollback"), 40);
    assert_eq!(rocks.rollback().expect("rocks rollback"), 40);
    assert_eq!(
        observe(&mem, &people, &w.issued),
        observe(&rocks, &people, &w.issued)
    );
    for _ in 0..20 {
        step(&mut mem, &mut rocks, &mut w);
    }
    assert_eq!(mem.head().height, 60);
    assert_eq!(
        observe(&mem, &people, &w.issued),
        observe(&rocks, &people, &w.issued)
    );

    // the RocksDB ledger checks out, and survives a reopen unchanged
    let head = rocks.head();
    let (report, mut rocks) = verify_closed(rocks);
    assert_eq!(report.height, 60);
    assert_eq!(report.head, head.hash);
    assert_eq!(
        observe(&mem, &people, &w.issued),
        observe(&rocks, &people, &w.issued)
    );
    for _ in 0..4 {
        step(&mut mem, &mut rocks, &mut w);
    }
    assert_eq!(
        observe(&mem, &people, &w.issued),
        observe(&rocks, &people, &w.issued)
    );
}

/// Batches that change hundreds of keys, with checkpoints between them: the RocksDB
/// executor then fills its state cache on a second thread beside RocksDB's write (from
/// 256 changed keys) and the checkpoint's LtHash update runs on both cores (from 128).
/// Both give the ledger the in-memory executor does, and so does the reopened ledger.
#[test]
fn large_batches_same_ledger() {
    let people = People::many(400, 60, 31);
    let mut w = Workload::new(&people, 32);
    let tmp = common::tempdir();
    let mut mem = MemoryExecutor::genesis(&people.genesis);
    let mut rocks =
        RocksExecutor::open(tmp.path(), &people.genesis, RocksOptions::default()).expect("open");
    let mut most_changed = 0;
    for seq in 1..=10u64 {
        let before: Vec<(Vec<u8>, Vec<u8>)> =
            mem.entries().map(|(k, v)| (k.clone(), v.clone())).collect();
        let b = w.batch_of(1200);
        let reqs = b.requests();
        let a = mem.apply(seq, b.digest, &reqs).expect("memory apply");
        assert_eq!(
            a,
            rocks.apply(seq, b.digest, &reqs).expect("rocks apply"),
            "batch {seq}"
        );
        let after: BTreeSet<(Vec<u8>, Vec<u8>)> =
            mem.entries().map(|(k, v)| (k.clone(), v.clone())).collect();
        let changed = after.len() - before.iter().filter(|e| after.contains(*e)).count();
        most_changed = most_changed.max(changed);
        if seq.is_multiple_of(3) {
            assert_eq!(
                mem.checkpoint().expect("memory"),
                rocks.checkpoint().expect("rocks")
            );
            mem.stable(seq).expect("memory stable");
            rocks.stable(seq).expect("rocks stable");
        }
    }
    assert!(
        most_changed >= 256,
        "at most {most_changed} keys changed in a batch"
    );
    assert_eq!(
        observe(&mem, &people, &w.issued),
        observe(&rocks, &people, &w.issued)
    );
    drop(rocks);
    verify_ledger(tmp.path()).expect("verify");
    let rocks =
        RocksExecutor::open(tmp.path(), &people.genesis, RocksOptions::default()).expect("reopen");
    assert_eq!(
        observe(&mem, &people, &w.issued),
        observe(&rocks, &people, &w.issued)
    );
}

/// Export from one kind, import into a fresh one of the other kind (both directions),
/// then both go on identically; imports into ledgers that are behind (another history)
/// or ahead (the same history) keep the same blocks and receipts in both kinds.
#[test]
fn snapshot_transfer_between_kinds() {
    let people = People::new(30, 5, 21);
    let mut w = Workload::new(&people, 22);
    let tmp = common::tempdir();
    let mut mem = MemoryExecutor::genesis(&people.genesis);
    let mut rocks = RocksExecutor::open(
        &tmp.path().join("a"),
        &people.genesis,
        RocksOptions::default(),
    )
    .expect("open");
    for _ in 0..25 {
        step(&mut mem, &mut rocks, &mut w);
    }
    assert_eq!(mem.stable_seq(), 24);
    let block24 = mem.block(24).expect("block").expect("block 24");
    let (lt24, at) = rocks.lthash();
    assert_eq!(at, 24, "the LtHash is of the last checkpoint");
    let d24 = checkpoint_digest(24, &block24.hash(), &lt24.digest());

    // memory -> fresh rocks
    let chunks = mem.export(24, 256).expect("memory export");
    assert!(chunks.len() > 2, "several chunks");
    let mut rocks2 = RocksExecutor::open(
        &tmp.path().join("b"),
        &people.genesis,
        RocksOptions::default(),
    )
    .expect("open b");
    let h = rocks2.import(24, d24, &chunks).expect("rocks import");
    assert_eq!(h.hash, block24.hash());
    assert_eq!(rocks2.stable_seq(), 24);
    let (_, mut rocks2) = verify_closed(rocks2);

    // rocks -> fresh memory
    let chunks = rocks.export(24, 256).expect("rocks export");
    let mut mem2 = MemoryExecutor::genesis(&people.genesis);
    assert_eq!(mem2.import(24, d24, &chunks).expect("memory import"), h);
    assert_eq!(
        observe(&mem2, &people, &w.issued),
        observe(&rocks2, &people, &w.issued)
    );

    // the imported pair goes on identically, and rolls back identically
    let mut w2 = Workload::new(&people, 23);
    for _ in 0..12 {
        step(&mut mem2, &mut rocks2, &mut w2);
    }
    assert_eq!(
        observe(&mem2, &people, &w2.issued),
        observe(&rocks2, &people, &w2.issued)
    );
    assert_eq!(mem2.rollback().expect("rollback"), 32);
    assert_eq!(rocks2.rollback().expect("rollback"), 32);
    assert_eq!(
        observe(&mem2, &people, &w2.issued),
        observe(&rocks2, &people, &w2.issued)
    );

    // import into ledgers that are behind, on another history (25 from `w`, not `w2`)
    let chunks = rocks2.export(32, 256).expect("export 32");
    let d32 = checkpoint_digest(32, &mem2.head().hash, &mem2.lthash().digest());
    assert_eq!(
        mem.import(32, d32, &chunks).expect("memory import"),
        mem2.head()
    );
    assert_eq!(
        rocks.import(32, d32, &chunks).expect("rocks import"),
        mem2.head()
    );
    let mut issued = w.issued.clone();
    issued.extend(w2.issued.iter().copied());
    assert_eq!(
        observe(&mem, &people, &issued),
        observe(&rocks, &people, &issued)
    );
    let (_, rocks) = verify_closed(rocks);
    drop(rocks);

    // import into ledgers that are ahead on the same history: the blocks below the
    // checkpoint that chain up to it (24..31 here, 24 being the first import's head) are
    // kept, those above it are dropped
    for _ in 0..2 {
        step(&mut mem2, &mut rocks2, &mut w2);
    }
    let hm = mem2.import(32, d32, &chunks).expect("memory import");
    let hr = rocks2.import(32, d32, &chunks).expect("rocks import");
    assert_eq!(hm, hr);
    assert_eq!(
        observe(&mem2, &people, &issued),
        observe(&rocks2, &people, &issued)
    );
    for h in 24..=32 {
        assert!(rocks2.block(h).expect("block").is_some(), "block {h} kept");
    }
    assert!(rocks2.block(23).expect("block").is_none());
    assert!(rocks2.block(33).expect("block").is_none());
    let (report, _) = verify_closed(rocks2);
    assert_eq!(report.blocks_checked, 9);
}
