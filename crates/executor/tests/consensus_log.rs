//! The consensus log: records survive reopening, a group is written all or nothing,
//! compaction drops exactly the tagged records at or below the stable sequence, and the
//! ledger's rollbacks and imports never touch it.

mod common;

use common::{People, Workload};
use pbft_executor::types::checkpoint_digest;
use pbft_executor::{
    ConsensusLog, ExecError, Executor, FaultPlan, MemoryExecutor, RocksExecutor, RocksOptions,
};
use pbft_executor::{Record, RecordLog};

fn rec(tag: Option<u64>, text: &str) -> Record {
    (tag, text.as_bytes().to_vec())
}

#[test]
fn records_survive_reopen_in_order() {
    let tmp = common::tempdir();
    let path = tmp.path().join("wal");
    let g1 = vec![
        rec(Some(1), "pre-prepare 1"),
        rec(Some(1), "prepare 1"),
        rec(None, "view 0"),
    ];
    let g2 = vec![rec(Some(2), "commit 2"), rec(Some(2), &"x".repeat(5000))];
    {
        let mut log = ConsensusLog::open(&path, true).expect("open");
        assert!(log.load().expect("load").is_empty());
        log.append(&g1).expect("append");
        log.append(&[]).expect("empty append");
        log.append(&g2).expect("append");
    }
    let mut log = ConsensusLog::open(&path, false).expect("reopen");
    let mut want: Vec<Record> = g1.iter().chain(&g2).cloned().collect();
    assert_eq!(log.load().expect("load"), want);
    // appends after a reopen go after the old records
    let g3 = vec![rec(Some(3), "checkpoint 3")];
    log.append(&g3).expect("append");
    want.extend(g3);
    drop(log);
    assert_eq!(
        ConsensusLog::open(&path, false)
            .expect("reopen")
            .load()
            .expect("load"),
        want
    );
}

#[test]
fn a_group_is_all_or_nothing() {
    let tmp = common::tempdir();
    let path = tmp.path().join("wal");
    let groups: Vec<Vec<Record>> = (0..4u64)
        .map(|g| {
            (0..5)
                .map(|i| rec(Some(g), &format!("group {g} record {i}")))
                .collect()
        })
        .collect();
    {
        // the third write never happens
        let mut log =
            ConsensusLog::open_with_faults(&path, false, Some(FaultPlan { crash_at_step: 3 }))
                .expect("open");
        log.append(&groups[0]).expect("append 0");
        log.append(&groups[1]).expect("append 1");
        assert!(matches!(
            log.append(&groups[2]),
            Err(ExecError::Injected(3))
        ));
        assert!(matches!(
            log.append(&groups[3]),
            Err(ExecError::Injected(3))
        ));
        assert!(matches!(log.load(), Err(ExecError::Injected(3))));
    }
    let mut log = ConsensusLog::open(&path, false).expect("reopen");
    let want: Vec<Record> = groups[..2].concat();
    assert_eq!(log.load().expect("load"), want);
    // the node retries the lost group after the restart
    log.append(&groups[2]).expect("append 2");
    assert_eq!(log.load().expect("load"), groups[..3].concat());
}

#[test]
fn compaction_keeps_untagged_and_newer_records() {
    let tmp = common::tempdir();
    let path = tmp.path().join("wal");
    let all = vec![
        rec(None, "view change 1"),
        rec(Some(1), "a"),
        rec(Some(5), "b"),
        rec(Some(10), "c"),
        rec(None, "new view 2"),
        rec(Some(3), "d"),
        rec(Some(6), "e"),
    ];
    let mut log = ConsensusLog::open(&path, false).expect("open");
    log.append(&all).expect("append");
    log.compact(5).expect("compact");
    let want = vec![
        rec(None, "view change 1"),
        rec(Some(10), "c"),
        rec(None, "new view 2"),
        rec(Some(6), "e"),
    ];
    assert_eq!(log.load().expect("load"), want);
    log.compact(5).expect("compact again");
    assert_eq!(log.load().expect("load"), want);
    drop(log);
    let mut log = ConsensusLog::open(&path, false).expect("reopen");
    assert_eq!(log.load().expect("load"), want);
    // compacting away the newest records does not reorder later appends
    log.compact(10).expect("compact");
    log.append(&[rec(Some(11), "f")]).expect("append");
    drop(log);
    let log = ConsensusLog::open(&path, false).expect("reopen");
    assert_eq!(
        log.load().expect("load"),
        vec![
            rec(None, "view change 1"),
            rec(None, "new view 2"),
            rec(Some(11), "f")
        ]
    );
}

#[test]
fn ledger_rollback_and_import_leave_the_log_alone() {
    let people = People::new(8, 1, 71);
    let mut w = Workload::new(&people, 72);
    let tmp = common::tempdir();
    let mut ledger =
        RocksExecutor::open(tmp.path(), &people.genesis, RocksOptions::default()).expect("open");
    let mut log = ConsensusLog::open(&tmp.path().join("wal"), false).expect("open log");
    let mut reference = MemoryExecutor::genesis(&people.genesis);
    let mut want = Vec::new();
    let mut d8 = None;
    for seq in 1..=12 {
        let b = w.batch();
        ledger.apply(seq, b.digest, &b.requests()).expect("apply");
        reference
            .apply(seq, b.digest, &b.requests())
            .expect("apply");
        let r = rec(Some(seq), &format!("commit {seq}"));
        log.append(std::slice::from_ref(&r)).expect("append");
        want.push(r);
        if seq == 8 {
            ledger.checkpoint().expect("checkpoint");
            d8 = Some(reference.checkpoint().expect("checkpoint"));
        }
    }
    let d8 = d8.expect("checkpoint 8");
    ledger.stable(8).expect("stable");
    assert_eq!(ledger.rollback().expect("rollback"), 8);
    let digest_now = |ledger: &RocksExecutor| {
        let (lt, at) = ledger.lthash();
        assert_eq!(at, ledger.head().height);
        checkpoint_digest(at, &ledger.head().hash, &lt.digest())
    };
    assert_eq!(digest_now(&ledger), d8);
    let chunks = reference.export(8, 256).expect("export");
    let head = ledger.import(8, d8, &chunks).expect("import");
    assert_eq!(head.height, 8);
    assert_eq!(digest_now(&ledger), d8);
    drop(ledger);
    drop(
        RocksExecutor::open(tmp.path(), &people.genesis, RocksOptions::default()).expect("reopen"),
    );
    assert_eq!(log.load().expect("load"), want);
    drop(log);
    assert_eq!(
        ConsensusLog::open(&tmp.path().join("wal"), false)
            .expect("reopen")
            .load()
            .expect("load"),
        want
    );
}

/// The records' memtable is capped at 8 MiB (RocksDB's default of 64 MiB made it the
/// largest heap consumer of a validator): RocksDB's own OPTIONS file, written at open,
/// says so for the records column family.
#[test]
fn the_records_memtable_is_capped() {
    let tmp = common::tempdir();
    let path = tmp.path().join("wal");
    let log = ConsensusLog::open(&path, false).expect("open");
    drop(log);
    let section = common::cf_options_file_section(&path, "records");
    assert!(
        section
            .lines()
            .any(|l| l.trim() == format!("write_buffer_size={}", 8 << 20)),
        "{section}"
    );
}

/// `drop_superseded` hands the caller the decoded records (only the untagged ones if
/// asked), drops exactly those it names, in one write that survives reopening, and
/// refuses an answer about a different number of records.
#[test]
fn drop_superseded_drops_what_the_caller_names() {
    let tmp = common::tempdir();
    let path = tmp.path().join("wal");
    let enc = |tag: Option<u64>, v: u32| (tag, postcard::to_allocvec(&v).expect("encode"));
    let mut log = ConsensusLog::open(&path, false).expect("open");
    log.append(&[enc(None, 1), enc(Some(5), 2), enc(None, 3), enc(None, 4)])
        .expect("append");

    // untagged only: 1, 3 and 4 are asked about; 1 and 4 go
    let mut asked = Vec::new();
    let left = log
        .drop_superseded(true, |rs: &[u32]| {
            asked = rs.to_vec();
            rs.iter().map(|v| *v != 3).collect()
        })
        .expect("drop");
    assert_eq!(asked, vec![1, 3, 4]);
    assert_eq!(left, vec![3]);
    drop(log);
    let mut log = ConsensusLog::open(&path, false).expect("reopen");
    assert_eq!(
        log.load().expect("load"),
        vec![enc(Some(5), 2), enc(None, 3)]
    );

    // all records: the tagged one is asked about too
    let left = log
        .drop_superseded(false, |rs: &[u32]| rs.iter().map(|v| *v == 2).collect())
        .expect("drop");
    assert_eq!(left, vec![3]);
    assert_eq!(log.load().expect("load"), vec![enc(None, 3)]);

    // an answer of the wrong length drops nothing
    match log.drop_superseded(false, |_: &[u32]| vec![true, true]) {
        Err(ExecError::Storage(m)) => assert!(m.contains("told about 2"), "{m}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(log.load().expect("load"), vec![enc(None, 3)]);
}
