//! The RocksDB executor's own behaviour: reopening, the stored genesis, ordering and
//! snapshot errors, recovery of interrupted swaps and stray checkpoint directories, and
//! the kept checkpoints after a step of a rollback or import fails.

mod common;

use common::{observe, People, Workload};
use pbft_executor::snapshot::verify_chunks;
use pbft_executor::{
    verify_ledger, ExecError, Executor, MemoryExecutor, RocksExecutor, RocksOptions,
};
use std::fs;
use std::path::Path;

fn build(dir: &Path, people: &People, n: u64, sync: bool) -> (RocksExecutor, MemoryExecutor) {
    let mut w = Workload::new(people, 82);
    let mut e = RocksExecutor::open(
        dir,
        &people.genesis,
        RocksOptions {
            sync,
            fault: None,
            ..RocksOptions::default()
        },
    )
    .expect("open");
    let mut m = MemoryExecutor::genesis(&people.genesis);
    for seq in 1..=n {
        let b = w.batch();
        assert_eq!(
            e.apply(seq, b.digest, &b.requests()).expect("apply"),
            m.apply(seq, b.digest, &b.requests()).expect("apply")
        );
        if seq.is_multiple_of(4) {
            assert_eq!(
                e.checkpoint().expect("checkpoint"),
                m.checkpoint().expect("checkpoint")
            );
        }
    }
    (e, m)
}

#[test]
fn reopen_keeps_everything_and_ignores_the_genesis_argument() {
    let people = People::new(10, 1, 81);
    let tmp = common::tempdir();
    let (e, m) = build(tmp.path(), &people, 10, true);
    let head = e.head();
    assert_eq!(e.checkpoints().collect::<Vec<_>>(), vec![0, 4, 8]);
    drop(e);
    let other = People::new(3, 0, 99);
    let e =
        RocksExecutor::open(tmp.path(), &other.genesis, RocksOptions::default()).expect("reopen");
    assert_eq!(e.head(), head);
    assert_eq!(e.head(), m.head());
    assert_eq!(e.checkpoints().collect::<Vec<_>>(), vec![0, 4, 8]);
    for pk in people.everyone().chain(other.everyone()) {
        assert_eq!(
            e.balance(pk).expect("balance"),
            m.balance(pk).expect("balance")
        );
    }
    for h in 0..=11 {
        assert_eq!(e.block(h).expect("block"), m.block(h).expect("block"));
    }
}

#[test]
fn ordering_and_snapshot_errors() {
    let people = People::new(6, 1, 83);
    let tmp = common::tempdir();
    let (mut e, _) = build(tmp.path(), &people, 5, false);
    let head = e.head();
    match e.apply(7, Default::default(), &[]) {
        Err(ExecError::OutOfOrder { applied: 5, got: 7 }) => {}
        other => panic!("expected out of order, got {other:?}"),
    }
    assert!(matches!(
        e.apply(5, Default::default(), &[]),
        Err(ExecError::OutOfOrder { .. })
    ));
    assert_eq!(e.head(), head);
    assert!(matches!(e.stable(3), Err(ExecError::NoSnapshot(3))));
    assert!(matches!(e.export(5, 100), Err(ExecError::NoSnapshot(5))));
    e.stable(4).expect("stable");
    assert!(matches!(e.export(0, 100), Err(ExecError::NoSnapshot(0))));
    assert!(matches!(e.stable(0), Err(ExecError::NoSnapshot(0))));
    assert_eq!(e.stable_seq(), 4);
    assert_eq!(e.rollback().expect("rollback"), 4);
    assert_eq!(e.rollback().expect("rollback again"), 4);
    assert_eq!(e.head().height, 4);
    drop(e);
    verify_ledger(tmp.path()).expect("verify");
}

/// An interrupted swap the code never produces on its own (only `state.old` left) and
/// leftovers of every kind are recovered on open.
#[test]
fn open_recovers_odd_layouts() {
    let people = People::new(6, 1, 84);
    let tmp = common::tempdir();
    let dir = tmp.path();
    let (e, m) = build(dir, &people, 9, false);
    drop(e);
    fs::rename(dir.join("state"), dir.join("state.old")).expect("rename");
    fs::create_dir(dir.join("state.tmp")).expect("mkdir");
    fs::write(dir.join("state.tmp").join("junk"), b"junk").expect("write");
    fs::create_dir(dir.join("checkpoints").join("7.tmp")).expect("mkdir");
    fs::create_dir(dir.join("checkpoints").join("99")).expect("mkdir");
    fs::create_dir(dir.join("checkpoints").join("8.import")).expect("mkdir");
    fs::create_dir(dir.join("checkpoints").join("junk")).expect("mkdir");
    let e = RocksExecutor::open(dir, &people.genesis, RocksOptions::default()).expect("reopen");
    assert_eq!(e.head(), m.head());
    assert_eq!(e.checkpoints().collect::<Vec<_>>(), vec![0, 4, 8]);
    drop(e);
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("list")
        .map(|d| d.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, vec!["checkpoints", "state"]);
    let mut ckpts: Vec<String> = fs::read_dir(dir.join("checkpoints"))
        .expect("list")
        .map(|d| d.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    ckpts.sort();
    assert_eq!(ckpts, vec!["0", "4", "8"]);
    verify_ledger(dir).expect("verify");
}

/// A checkpoint directory whose content is not the live chain's (here: another
/// ledger's) is dropped on open, and a missing stable checkpoint is reported.
#[test]
fn foreign_checkpoints_are_dropped() {
    let people = People::new(6, 1, 85);
    let tmp = common::tempdir();
    let (a, _) = build(&tmp.path().join("a"), &people, 9, false);
    drop(a);
    let other = People::new(6, 1, 86);
    let (b, _) = build(&tmp.path().join("b"), &other, 9, false);
    drop(b);
    let ca = tmp.path().join("a").join("checkpoints");
    fs::remove_dir_all(ca.join("8")).expect("remove");
    fs::rename(
        tmp.path().join("b").join("checkpoints").join("8"),
        ca.join("8"),
    )
    .expect("move");
    let e = RocksExecutor::open(
        &tmp.path().join("a"),
        &people.genesis,
        RocksOptions::default(),
    )
    .expect("open");
    assert_eq!(e.checkpoints().collect::<Vec<_>>(), vec![0, 4]);
    drop(e);
    fs::remove_dir_all(ca.join("0")).expect("remove");
    match RocksExecutor::open(
        &tmp.path().join("a"),
        &people.genesis,
        RocksOptions::default(),
    ) {
        Err(ExecError::Corrupt(m)) => assert!(m.contains("stable sequence 0"), "{m}"),
        other => panic!("expected corruption, got {other:?}"),
    }
}

/// The executor and the log can move to another thread (the node and the simulator run
/// them off the protocol's thread).
#[test]
fn executor_and_log_are_send() {
    fn send<T: Send>() {}
    send::<RocksExecutor>();
    send::<pbft_executor::ConsensusLog>();
}

/// The ledger's column families share one bounded block cache (RocksDB's default is a
/// separate 32 MiB cache for each, which fills for as long as the ledger grows; decision
/// 0039): every family reports the same capacity and the same usage, and reading
/// stored blocks back fills it.
#[test]
fn the_column_families_share_one_bounded_block_cache() {
    let people = People::new(10, 1, 83);
    let tmp = common::tempdir();
    // checkpoints flush the memtables, so later reads come from table files
    let (e, m) = build(tmp.path(), &people, 12, false);
    for h in 0..=12 {
        assert_eq!(e.block(h).expect("block"), m.block(h).expect("block"));
    }
    // a compaction finishing between two of the property reads below would load its
    // new table files' index and filter blocks into the cache in between
    e.wait_for_background_work(std::time::Duration::from_secs(60))
        .expect("background work");
    let mem = e.memory().expect("memory");
    assert_eq!(
        mem.iter().map(|c| c.name).collect::<Vec<_>>(),
        pbft_executor::rocks::COLUMN_FAMILIES.to_vec()
    );
    let cap = pbft_executor::rocks::LEDGER_BLOCK_CACHE as u64;
    assert!(mem.iter().all(|c| c.block_cache_capacity == cap), "{mem:?}");
    let usage = mem[0].block_cache_usage;
    assert!(usage > 0 && usage <= cap, "{mem:?}");
    assert!(mem.iter().all(|c| c.block_cache_usage == usage), "{mem:?}");
}

/// The state cache stays within its memory budget, starts over when a checkpoint's
/// values would take it past it, and never serves a stale value: with budgets from
/// "a checkpoint's values never fit" to "everything fits", every batch's result, every
/// balance and the head match the in-memory executor, and the estimate never passes
/// the budget. The values written since the last checkpoint are held outside the
/// budget until the checkpoint writes them.
#[test]
fn the_state_cache_stays_within_its_budget_and_is_never_stale() {
    let people = People::new(40, 2, 84);
    for budget in [0, 700, 12 << 10, 1 << 20] {
        let tmp = common::tempdir();
        let opts = RocksOptions {
            state_cache_bytes: budget,
            ..RocksOptions::default()
        };
        let mut e = RocksExecutor::open(tmp.path(), &people.genesis, opts).expect("open");
        let mut m = MemoryExecutor::genesis(&people.genesis);
        let mut w = Workload::new(&people, 85);
        let (mut largest, mut emptied) = (0, false);
        for seq in 1..=200 {
            let b = w.batch();
            assert_eq!(
                e.apply(seq, b.digest, &b.requests()).expect("apply"),
                m.apply(seq, b.digest, &b.requests()).expect("apply"),
                "budget {budget}, seq {seq}"
            );
            assert!(e.unflushed_state_bytes() > 0, "seq {seq} wrote values");
            if seq % 10 == 0 {
                let before = e.state_cache_bytes();
                assert_eq!(
                    e.checkpoint().expect("checkpoint"),
                    m.checkpoint().expect("checkpoint")
                );
                e.stable(seq).expect("stable");
                m.stable(seq).expect("stable");
                assert_eq!(e.unflushed_state_bytes(), 0, "the checkpoint wrote them");
                let now = e.state_cache_bytes();
                assert!(now <= budget, "budget {budget}: {now} bytes at seq {seq}");
                emptied |= now < before;
                largest = largest.max(now);
            }
            for pk in people.everyone().take(5) {
                assert_eq!(
                    e.balance(pk).expect("balance"),
                    m.balance(pk).expect("balance")
                );
            }
        }
        for pk in people.everyone() {
            assert_eq!(
                e.balance(pk).expect("balance"),
                m.balance(pk).expect("balance")
            );
        }
        assert_eq!(e.head(), m.head());
        match budget {
            // the records of 42 accounts, as one checkpoint writes them, do not fit in
            // 700 bytes: the cache stays empty
            0 | 700 => assert_eq!(largest, 0, "budget {budget}: nothing fits"),
            // they fit in 12 KiB, but not twice: the cache holds one checkpoint's worth
            // and starts over at the next
            12288 => assert!(largest > 0, "budget {budget}: {largest}"),
            // they all fit in 1 MiB: it only grew
            _ => assert!(largest > 4096 && !emptied, "budget {budget}: {largest}"),
        }
    }
}

/// A write that fails once (a transient storage error) leaves nothing of its batch:
/// the batch can be applied again, and the ledger goes on exactly as the in-memory one.
/// Both ways the state cache takes a batch's values are covered: after the write (small
/// batches) and beside it, on a second thread (from 256 changed keys), where the failed
/// batch's values must be taken back.
#[test]
fn a_failed_write_leaves_nothing_of_its_batch() {
    for (people, size) in [
        (People::new(30, 5, 91), 6),
        (People::many(400, 60, 92), 1200),
    ] {
        let mut w = Workload::new(&people, 93);
        let batches: Vec<_> = (0..6).map(|_| w.batch_of(size)).collect();
        // the durable step of batch 4's write, counted on a ledger without faults
        let step = {
            let tmp = common::tempdir();
            let mut e = RocksExecutor::open(tmp.path(), &people.genesis, RocksOptions::default())
                .expect("open");
            for (i, b) in batches.iter().take(3).enumerate() {
                e.apply(i as u64 + 1, b.digest, &b.requests())
                    .expect("apply");
            }
            e.durable_steps() + 1
        };
        let tmp = common::tempdir();
        let opts = RocksOptions {
            transient_fault: Some(step),
            ..RocksOptions::default()
        };
        let mut e = RocksExecutor::open(tmp.path(), &people.genesis, opts).expect("open");
        let mut m = MemoryExecutor::genesis(&people.genesis);
        for (i, b) in batches.iter().enumerate() {
            let seq = i as u64 + 1;
            let want = m.apply(seq, b.digest, &b.requests()).expect("memory apply");
            if seq == 4 {
                let head = e.head();
                match e.apply(seq, b.digest, &b.requests()) {
                    Err(ExecError::Injected(s)) => assert_eq!(s, step),
                    other => panic!(
                        "batch {seq} of {size}: expected the injected failure, got {other:?}"
                    ),
                }
                assert_eq!(e.head(), head, "the failed batch moved the head");
                assert_eq!(
                    observe(&e, &people, &w.issued).balances,
                    observe(&m_before(&people, &batches[..3]), &people, &w.issued).balances,
                    "the failed batch's values are visible"
                );
            }
            let got = e.apply(seq, b.digest, &b.requests()).expect("rocks apply");
            assert_eq!(got, want, "batch {seq} of {size}");
        }
        assert_eq!(
            e.checkpoint().expect("rocks"),
            m.checkpoint().expect("memory")
        );
        assert_eq!(
            observe(&e, &people, &w.issued),
            observe(&m, &people, &w.issued)
        );
    }
}

/// The in-memory ledger after `batches`.
fn m_before(people: &People, batches: &[common::Batch]) -> MemoryExecutor {
    let mut m = MemoryExecutor::genesis(&people.genesis);
    for (i, b) in batches.iter().enumerate() {
        m.apply(i as u64 + 1, b.digest, &b.requests())
            .expect("apply");
    }
    m
}

/// Applies `batches` as the heights `from`, `from + 1`, ...
fn apply_from<E: Executor>(e: &mut E, from: u64, batches: &[common::Batch]) {
    for (i, b) in batches.iter().enumerate() {
        let seq = from + i as u64;
        e.apply(seq, b.digest, &b.requests())
            .unwrap_or_else(|err| panic!("apply {seq}: {err}"));
    }
}

/// Copies a closed ledger directory, file by file.
fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("create the copy");
    for entry in fs::read_dir(from).expect("list") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// Three runs of batches from one workload: heights 1..=4 (shared), then two
/// alternative histories for heights 5..=8: `a` (discarded) and `b` (kept).
struct Histories {
    shared: Vec<common::Batch>,
    a: Vec<common::Batch>,
    b: Vec<common::Batch>,
    /// A batch for height 9, after history `b`.
    next: common::Batch,
    issued: Vec<(pbft_crypto::PublicKey, u64)>,
}

fn histories(people: &People, seed: u64) -> Histories {
    let mut w = Workload::new(people, seed);
    let four = |w: &mut Workload| (0..4).map(|_| w.batch_of(4)).collect::<Vec<_>>();
    let (shared, a, b) = (four(&mut w), four(&mut w), four(&mut w));
    let next = w.batch_of(4);
    Histories {
        shared,
        a,
        b,
        next,
        issued: w.issued,
    }
}

/// A ledger at height 8 on history `a`, with checkpoints 4 (stable) and 8.
fn ledger_on_a(dir: &Path, people: &People, h: &Histories) {
    let mut e = RocksExecutor::open(dir, &people.genesis, RocksOptions::default()).expect("open");
    apply_from(&mut e, 1, &h.shared);
    e.checkpoint().expect("checkpoint 4");
    e.stable(4).expect("stable 4");
    apply_from(&mut e, 5, &h.a);
    e.checkpoint().expect("checkpoint 8");
    assert_eq!(e.checkpoints().collect::<Vec<_>>(), vec![4, 8]);
}

/// The in-memory ledger at height 8 on history `b`, with checkpoint 4 stable and
/// checkpoint 8 taken; returns it with checkpoint 8's digest.
fn memory_on_b(people: &People, h: &Histories) -> (MemoryExecutor, pbft_crypto::Digest) {
    let mut m = MemoryExecutor::genesis(&people.genesis);
    apply_from(&mut m, 1, &h.shared);
    m.checkpoint().expect("checkpoint 4");
    m.stable(4).expect("stable 4");
    apply_from(&mut m, 5, &h.b);
    let digest = m.checkpoint().expect("checkpoint 8");
    (m, digest)
}

/// After a rollback or an import that failed once a step past its swap: the ledger on
/// history `b` at height 8 takes checkpoint 8 afresh (its snapshot is history `b`'s, not
/// that of the discarded directory), keeps it through `stable`, and rolls back to it.
/// Returns the in-memory ledger it was compared with.
fn checkpoint_8_is_history_b(
    e: &mut RocksExecutor,
    people: &People,
    h: &Histories,
) -> MemoryExecutor {
    let (mut m, digest) = memory_on_b(people, h);
    assert_eq!(e.head(), m.head(), "the ledger is not on history b at 8");
    assert_eq!(e.checkpoint().expect("checkpoint 8"), digest);
    let chunks = e.export(8, 300).expect("export 8");
    // (compared whole, not printed: a snapshot is thousands of bytes)
    assert!(
        chunks == m.export(8, 300).expect("memory export 8"),
        "checkpoint 8 holds another history's state"
    );
    verify_chunks(8, digest, &chunks).expect("checkpoint 8's snapshot checks out");
    e.stable(8).expect("stable 8");
    m.stable(8).expect("memory stable 8");
    apply_from(e, 9, std::slice::from_ref(&h.next));
    apply_from(&mut m, 9, std::slice::from_ref(&h.next));
    assert_eq!(e.rollback().expect("rollback to 8"), 8);
    assert_eq!(m.rollback().expect("memory rollback to 8"), 8);
    // the state: receipts and blocks below a snapshot are the ledger's own, not
    // installed by an import
    let (got, want) = (
        observe(&*e, people, &h.issued),
        observe(&m, people, &h.issued),
    );
    assert_eq!(
        (got.head, got.stable, got.balances),
        (want.head, want.stable, want.balances)
    );
    m
}

/// A rollback whose last step, the removal of the directory of a checkpoint above the
/// stable one, fails once: the live state is the stable checkpoint's already, and the
/// checkpoint of the discarded history is forgotten although its directory is still
/// there, so that when the next history reaches that height its checkpoint is taken
/// afresh rather than the stale directory trusted.
#[test]
fn a_rollback_failing_after_its_swap_keeps_no_checkpoint_of_the_discarded_history() {
    let people = People::new(12, 2, 95);
    let h = histories(&people, 96);
    let tmp = common::tempdir();
    let (counted, faulted) = (tmp.path().join("counted"), tmp.path().join("faulted"));
    ledger_on_a(&counted, &people, &h);
    copy_dir(&counted, &faulted);
    // on one of two identical ledgers, the rollback's durable steps: the last removes
    // checkpoint 8
    let step = {
        let mut e =
            RocksExecutor::open(&counted, &people.genesis, RocksOptions::default()).expect("open");
        assert_eq!(e.rollback().expect("rollback"), 4);
        assert!(!counted.join("checkpoints").join("8").exists());
        e.durable_steps()
    };
    let opts = RocksOptions {
        transient_fault: Some(step),
        ..RocksOptions::default()
    };
    let mut e = RocksExecutor::open(&faulted, &people.genesis, opts).expect("open");
    match e.rollback() {
        Err(ExecError::Injected(s)) => assert_eq!(s, step),
        other => panic!("expected the injected failure at step {step}, got {other:?}"),
    }
    assert_eq!(e.head().height, 4, "the swap is not done");
    assert!(
        faulted.join("checkpoints").join("8").is_dir(),
        "the failed step is not the removal of checkpoint 8"
    );
    assert_eq!(e.checkpoints().collect::<Vec<_>>(), vec![4]);
    apply_from(&mut e, 5, &h.b);
    let m = checkpoint_8_is_history_b(&mut e, &people, &h);
    // history b was executed here: its receipts and blocks too
    assert_eq!(
        observe(&e, &people, &h.issued),
        observe(&m, &people, &h.issued)
    );
    drop(e);
    verify_ledger(&faulted).expect("verify");
}

/// An import whose first step after the swap, the removal of the directory of the
/// replaced history's checkpoint at the snapshot's height, fails once: the live state
/// is the snapshot's, no checkpoint of the replaced history is kept, and the
/// checkpoint at the snapshot's height is taken afresh rather than the stale directory
/// trusted.
#[test]
fn an_import_failing_after_its_swap_keeps_no_checkpoint_of_the_replaced_history() {
    let people = People::new(12, 2, 97);
    let h = histories(&people, 98);
    let (m, digest) = memory_on_b(&people, &h);
    let chunks = m.export(8, 300).expect("memory export 8");
    let tmp = common::tempdir();
    let dir = tmp.path();
    ledger_on_a(dir, &people, &h);
    let opened = RocksExecutor::open(dir, &people.genesis, RocksOptions::default())
        .expect("open")
        .durable_steps();
    // the import's durable steps: stage each chunk as a table file, make `state.tmp`
    // as a checkpoint of the live state, open it, write the snapshot's bookkeeping,
    // ingest the staged files, make `checkpoints/8.import`, rename `state.tmp` to
    // `state.new`, then the swap (two renames, opening the new state, removing
    // `state.old`); the next removes the replaced history's `checkpoints/8`
    let step = opened + chunks.len() as u64 + 11;
    let opts = RocksOptions {
        transient_fault: Some(step),
        ..RocksOptions::default()
    };
    let mut e = RocksExecutor::open(dir, &people.genesis, opts).expect("open");
    assert_eq!(e.durable_steps(), opened);
    match e.import(8, digest, &chunks) {
        Err(ExecError::Injected(s)) => assert_eq!(s, step),
        other => panic!("expected the injected failure at step {step}, got {other:?}"),
    }
    assert_eq!(e.head(), m.head(), "the swap is not done");
    let ckpts = dir.join("checkpoints");
    assert!(
        ckpts.join("8").is_dir() && ckpts.join("8.import").is_dir(),
        "the failed step is not the removal of the replaced checkpoint 8"
    );
    assert_eq!(e.checkpoints().count(), 0);
    checkpoint_8_is_history_b(&mut e, &people, &h);
    drop(e);
    verify_ledger(dir).expect("verify");
}
