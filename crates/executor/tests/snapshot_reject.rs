//! A bad snapshot (a corrupted byte, a wrong proven digest, reordered or missing chunks,
//! the wrong sequence number) is rejected before anything local is touched: the live
//! ledger stays exactly as it was.

mod common;

use common::{People, Workload};
use pbft_crypto::Digest;
use pbft_executor::rocks::{COLUMN_FAMILIES, STATE_DIR};
use pbft_executor::snapshot::SnapshotChunk;
use pbft_executor::{
    verify_ledger, ExecError, Executor, LedgerReport, MemoryExecutor, RocksExecutor, RocksOptions,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::path::Path;

type Dump = BTreeMap<&'static str, Vec<(Vec<u8>, Vec<u8>)>>;

/// Every key and value of every column family of the live DB, and the directory layout.
fn dump(dir: &Path) -> (Dump, Vec<String>) {
    let db = rocksdb::DB::open_cf_for_read_only(
        &rocksdb::Options::default(),
        dir.join(STATE_DIR),
        COLUMN_FAMILIES,
        false,
    )
    .expect("open read-only");
    let mut out = BTreeMap::new();
    for name in COLUMN_FAMILIES {
        let cf = db.cf_handle(name).expect("column family");
        let kv = db
            .iterator_cf(cf, rocksdb::IteratorMode::Start)
            .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())).expect("iterate"))
            .collect();
        out.insert(name, kv);
    }
    let mut layout = Vec::new();
    for sub in [dir.to_path_buf(), dir.join("checkpoints")] {
        for e in std::fs::read_dir(&sub).expect("list") {
            layout.push(format!(
                "{}/{}",
                sub.display(),
                e.expect("entry").file_name().to_string_lossy()
            ));
        }
    }
    layout.sort();
    (out, layout)
}

struct Live {
    head: pbft_executor::Head,
    stable: u64,
    balances: Vec<Option<u64>>,
    report: LedgerReport,
    dump: (Dump, Vec<String>),
}

fn live(dir: &Path, people: &People) -> Live {
    let e = RocksExecutor::open(dir, &people.genesis, RocksOptions::default()).expect("open");
    let head = e.head();
    let stable = e.stable_seq();
    let balances = people
        .everyone()
        .map(|pk| e.balance(pk).expect("balance"))
        .collect();
    drop(e);
    Live {
        head,
        stable,
        balances,
        report: verify_ledger(dir).expect("verify"),
        dump: dump(dir),
    }
}

fn assert_untouched(before: &Live, after: &Live, what: &str) {
    assert_eq!(before.head, after.head, "{what}: head");
    assert_eq!(before.stable, after.stable, "{what}: stable");
    assert_eq!(before.balances, after.balances, "{what}: balances");
    assert_eq!(before.report, after.report, "{what}: verify");
    assert!(
        before.dump == after.dump,
        "{what}: the live DB or the layout changed"
    );
}

#[test]
fn bad_snapshots_change_nothing() {
    let people = People::new(20, 2, 51);
    let mut w = Workload::new(&people, 52);
    let batches: Vec<_> = (0..24).map(|_| w.batch()).collect();

    // the proven snapshot: checkpoint 24 of a reference
    let mut reference = MemoryExecutor::genesis(&people.genesis);
    let mut d16 = Digest::ZERO;
    for (i, b) in batches.iter().enumerate() {
        reference
            .apply(i as u64 + 1, b.digest, &b.requests())
            .expect("reference");
        if i + 1 == 16 {
            d16 = reference.checkpoint().expect("checkpoint 16");
        }
    }
    let digest = reference.checkpoint().expect("checkpoint");
    let chunks = reference.export(24, 200).expect("export");
    assert!(chunks.len() >= 4, "{} chunks", chunks.len());

    // the local ledger is behind, at 13 with checkpoint 8 stable
    let tmp = common::tempdir();
    let dir = tmp.path();
    {
        let mut e =
            RocksExecutor::open(dir, &people.genesis, RocksOptions::default()).expect("open");
        for (i, b) in batches.iter().take(13).enumerate() {
            let seq = i as u64 + 1;
            e.apply(seq, b.digest, &b.requests()).expect("apply");
            if seq == 8 {
                e.checkpoint().expect("checkpoint");
            }
        }
        e.stable(8).expect("stable");
    }
    let before = live(dir, &people);

    let mut bad: Vec<(String, u64, Digest, Vec<Vec<u8>>)> = Vec::new();
    let mut rng = ChaCha8Rng::seed_from_u64(53);
    for i in 0..chunks.len() {
        for _ in 0..3 {
            let mut c = chunks.clone();
            let pos = rng.gen_range(0..c[i].len());
            c[i][pos] ^= rng.gen_range(1..=255u8);
            bad.push((format!("byte {pos} of chunk {i} corrupted"), 24, digest, c));
        }
    }
    bad.push((
        "a wrong digest".into(),
        24,
        Digest::of(b"not the checkpoint"),
        chunks.clone(),
    ));
    bad.push((
        "the digest of another checkpoint".into(),
        24,
        d16,
        chunks.clone(),
    ));
    bad.push((
        "the wrong sequence number".into(),
        16,
        digest,
        chunks.clone(),
    ));
    // chunks name their place, so chunks arriving in another order are the same
    // snapshot; a chunk that claims another place is not
    for (i, j) in [(0, 1), (chunks.len() - 2, chunks.len() - 1)] {
        let mut c = chunks.clone();
        let (mut a, mut b): (SnapshotChunk, SnapshotChunk) = (
            postcard::from_bytes(&c[i]).expect("decodes"),
            postcard::from_bytes(&c[j]).expect("decodes"),
        );
        std::mem::swap(&mut a.index, &mut b.index);
        std::mem::swap(&mut a.head, &mut b.head);
        c[i] = a.encode();
        c[j] = b.encode();
        bad.push((
            format!("chunks {i} and {j} claim each other's place"),
            24,
            digest,
            c,
        ));
    }
    for i in [0, 1, chunks.len() - 1] {
        let mut c = chunks.clone();
        c.remove(i);
        bad.push((format!("chunk {i} missing"), 24, digest, c));
    }
    bad.push(("no chunks".into(), 24, digest, Vec::new()));
    let mut c = chunks.clone();
    c.push(chunks[1].clone());
    bad.push(("a chunk repeated".into(), 24, digest, c));

    let mut e = RocksExecutor::open(dir, &people.genesis, RocksOptions::default()).expect("open");
    for (what, seq, d, c) in &bad {
        match e.import(*seq, *d, c) {
            Err(ExecError::BadSnapshot(_)) => {}
            other => panic!("{what}: expected a rejection, got {other:?}"),
        }
        // the executor goes on working
        assert_eq!(e.head(), before.head, "{what}");
    }
    drop(e);
    assert_untouched(&before, &live(dir, &people), "after every bad snapshot");

    // the good one is accepted, its chunks in any order
    let mut e = RocksExecutor::open(dir, &people.genesis, RocksOptions::default()).expect("open");
    let mut reversed = chunks.clone();
    reversed.reverse();
    let head = e.import(24, digest, &reversed).expect("import");
    assert_eq!(head, reference.head());
    assert_eq!(e.stable_seq(), 24);
    drop(e);
    let report = verify_ledger(dir).expect("verify");
    assert_eq!(report.height, 24);
}
