//! `verify_ledger`: a good ledger verifies; a flipped balance byte, a block deleted from
//! the middle, a tampered marker or head are found and named.

mod common;

use common::{People, Workload};
use pbft_crypto::PublicKey;
use pbft_executor::rocks::{
    block_key, CF_BLOCKS, CF_CHANGES, CF_META, CF_STATE, COLUMN_FAMILIES, META_APPLIED, META_HEAD,
    META_LTHASH, STATE_DIR,
};
use pbft_executor::types::keys;
use pbft_executor::{verify_ledger, ExecError, Executor, RocksExecutor, RocksOptions};
use std::path::Path;

/// A ledger at height 20 (checkpoint 16 stable), closed.
fn ledger(dir: &Path, people: &People) -> pbft_executor::Head {
    let mut w = Workload::new(people, 62);
    let mut e = RocksExecutor::open(dir, &people.genesis, RocksOptions::default()).expect("open");
    for seq in 1..=20 {
        let b = w.batch();
        e.apply(seq, b.digest, &b.requests()).expect("apply");
        if seq.is_multiple_of(8) {
            e.checkpoint().expect("checkpoint");
        }
        if seq == 17 {
            e.stable(16).expect("stable");
        }
    }
    e.head()
}

/// Changes the live DB directly.
fn tamper(dir: &Path, f: impl FnOnce(&rocksdb::DB)) {
    let db = rocksdb::DB::open_cf(
        &rocksdb::Options::default(),
        dir.join(STATE_DIR),
        COLUMN_FAMILIES,
    )
    .expect("open");
    f(&db);
}

fn corrupt_message(r: Result<pbft_executor::LedgerReport, ExecError>) -> String {
    match r {
        Err(ExecError::Corrupt(m)) => m,
        other => panic!("expected a corruption report, got {other:?}"),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn people() -> People {
    People::new(12, 2, 61)
}

#[test]
fn a_good_ledger_verifies() {
    let people = people();
    let tmp = common::tempdir();
    let head = ledger(tmp.path(), &people);
    let r = verify_ledger(tmp.path()).expect("verify");
    assert_eq!(r.height, 20);
    assert_eq!(r.head, head.hash);
    assert_eq!(r.state_digest, head.state_digest);
    assert_eq!(r.lthash_at, 16, "the LtHash is the last checkpoint's");
    assert_eq!(r.blocks_checked, 20);
    assert_eq!(r.accounts, 12);

    // a fresh genesis ledger verifies too
    let tmp = common::tempdir();
    drop(RocksExecutor::open(tmp.path(), &people.genesis, RocksOptions::default()).expect("open"));
    let r = verify_ledger(tmp.path()).expect("verify genesis");
    assert_eq!((r.height, r.blocks_checked, r.accounts), (0, 0, 12));
}

/// `read_receipts` reads from a closed ledger the receipts the executor returned while
/// it ran, and none for a request that never executed.
#[test]
fn receipts_are_read_from_a_closed_ledger() {
    let people = people();
    let tmp = common::tempdir();
    let mut w = Workload::new(&people, 62);
    let mut e =
        RocksExecutor::open(tmp.path(), &people.genesis, RocksOptions::default()).expect("open");
    for seq in 1..=5 {
        let b = w.batch();
        e.apply(seq, b.digest, &b.requests()).expect("apply");
    }
    let mut asked = w.issued.clone();
    asked.push((people.clients[0], 1_000_000));
    let live = common::observe(&e, &people, &asked).receipts;
    drop(e);
    // (the workload also issues requests that never execute)
    assert!(live.iter().filter(|r| r.is_some()).count() > 10, "{live:?}");
    let read = pbft_executor::read_receipts(tmp.path(), &asked).expect("read");
    assert_eq!(read, live);
    assert_eq!(read.last(), Some(&None), "a request that never executed");
}

#[test]
fn a_flipped_balance_byte_is_found() {
    let people = people();
    let tmp = common::tempdir();
    ledger(tmp.path(), &people);
    let victim: PublicKey = people.clients[3];
    tamper(tmp.path(), |db| {
        let cf = db.cf_handle(CF_STATE).expect("cf");
        let k = keys::account(&victim);
        let mut v = db.get_cf(cf, &k).expect("get").expect("account");
        v[0] ^= 0x01;
        db.put_cf(cf, &k, v).expect("put");
    });
    let m = corrupt_message(verify_ledger(tmp.path()));
    assert!(
        m.contains(&format!("state key 61{}", hex(victim.as_bytes())))
            && m.contains("is not the state's at height 16"),
        "{m}"
    );
}

#[test]
fn a_missing_block_is_found() {
    let people = people();
    let tmp = common::tempdir();
    ledger(tmp.path(), &people);
    tamper(tmp.path(), |db| {
        db.delete_cf(db.cf_handle(CF_BLOCKS).expect("cf"), block_key(10))
            .expect("delete");
    });
    let m = corrupt_message(verify_ledger(tmp.path()));
    assert!(m.contains("block 10 is missing"), "{m}");
}

#[test]
fn a_replaced_block_breaks_the_chain() {
    let people = people();
    let tmp = common::tempdir();
    ledger(tmp.path(), &people);
    tamper(tmp.path(), |db| {
        let cf = db.cf_handle(CF_BLOCKS).expect("cf");
        let v = db.get_cf(cf, block_key(7)).expect("get").expect("block 7");
        let mut b: pbft_executor::Block = postcard::from_bytes(&v).expect("decode");
        b.batch_digest = pbft_crypto::Digest::of(b"another batch");
        db.put_cf(cf, block_key(7), postcard::to_allocvec(&b).expect("encode"))
            .expect("put");
    });
    let m = corrupt_message(verify_ledger(tmp.path()));
    assert!(m.contains("block 8's previous hash"), "{m}");
}

#[test]
fn tampered_meta_is_found_by_verify_and_by_open() {
    let people = people();
    for (what, key, value, expect) in [
        (
            "applied",
            META_APPLIED,
            19u64.to_be_bytes().to_vec(),
            "applied marker",
        ),
        ("short lthash", META_LTHASH, vec![0u8; 100], "lthash"),
        ("zero lthash", META_LTHASH, vec![0u8; 2048], "LtHash"),
        ("head", META_HEAD, vec![0xff; 3], "head"),
    ] {
        let tmp = common::tempdir();
        ledger(tmp.path(), &people);
        tamper(tmp.path(), |db| {
            db.put_cf(db.cf_handle(CF_META).expect("cf"), key, &value)
                .expect("put");
        });
        let m = corrupt_message(verify_ledger(tmp.path()));
        assert!(m.contains(expect), "{what}: {m}");
        match RocksExecutor::open(tmp.path(), &people.genesis, RocksOptions::default()) {
            Err(ExecError::Corrupt(m)) => assert!(m.contains(expect), "{what}: {m}"),
            other => panic!("{what}: open should report corruption, got {other:?}"),
        }
    }
}

/// The batches since the last checkpoint are logged: a logged batch that was altered
/// no longer gives its block's state digest, and one that is missing leaves a gap.
#[test]
fn a_tampered_changes_log_is_found() {
    let people = people();
    let tmp = common::tempdir();
    ledger(tmp.path(), &people);
    tamper(tmp.path(), |db| {
        let cf = db.cf_handle(CF_CHANGES).expect("cf");
        let mut v = db
            .get_cf(cf, block_key(18))
            .expect("get")
            .expect("batch 18");
        let last = v.len() - 1;
        v[last] ^= 1;
        db.put_cf(cf, block_key(18), v).expect("put");
    });
    let m = corrupt_message(verify_ledger(tmp.path()));
    assert!(m.contains("block 18's state digest"), "{m}");

    for (gone, verify_says) in [
        (17, "holds batch 18 where batch 17 was expected"),
        (19, "holds batch 20 where batch 19 was expected"),
        (20, "ends at batch 19"),
    ] {
        let tmp = common::tempdir();
        ledger(tmp.path(), &people);
        tamper(tmp.path(), |db| {
            db.delete_cf(db.cf_handle(CF_CHANGES).expect("cf"), block_key(gone))
                .expect("delete");
        });
        let m = corrupt_message(verify_ledger(tmp.path()));
        assert!(m.contains(verify_says), "batch {gone} gone: {m}");
        // open reads the whole log
        match RocksExecutor::open(tmp.path(), &people.genesis, RocksOptions::default()) {
            Err(ExecError::Corrupt(m)) => assert!(m.contains(verify_says), "batch {gone}: {m}"),
            other => panic!("batch {gone} gone: open should report it, got {other:?}"),
        }
    }
}

/// A ledger of the format before the changes log (no `changes` column family) is
/// refused by name, by verify and by open, and left as it was.
#[test]
fn a_ledger_of_the_older_format_is_named() {
    let people = people();
    let tmp = common::tempdir();
    ledger(tmp.path(), &people);
    {
        let mut db = rocksdb::DB::open_cf(
            &rocksdb::Options::default(),
            tmp.path().join(STATE_DIR),
            COLUMN_FAMILIES,
        )
        .expect("open");
        db.drop_cf(CF_CHANGES).expect("drop the changes family");
    }
    let m = corrupt_message(verify_ledger(tmp.path()));
    assert!(m.contains("older build"), "{m}");
    match RocksExecutor::open(tmp.path(), &people.genesis, RocksOptions::default()) {
        Err(ExecError::Corrupt(m)) => assert!(m.contains("older build"), "{m}"),
        other => panic!("open should name the older format, got {other:?}"),
    }
    assert!(
        tmp.path().join(STATE_DIR).is_dir(),
        "the ledger is left in place"
    );
}

#[test]
fn no_ledger_is_reported() {
    let tmp = common::tempdir();
    assert!(matches!(
        verify_ledger(tmp.path()),
        Err(ExecError::Corrupt(_))
    ));
}
