//! State transfer in bounded memory, whatever the ledger's history: a snapshot is read
//! chunk by chunk and staged chunk by chunk, the import writes in bounded batches and
//! leaves receipts and blocks where they are, and an import that fails, is abandoned or
//! crashes leaves the old state as it was.

mod common;

use common::People;
use pbft_crypto::{Digest, PublicKey};
use pbft_executor::{
    verify_ledger, ExecError, ExecRequest, Executor, FaultPlan, MemoryExecutor, Operation,
    RocksExecutor, RocksOptions, Transfer,
};
use std::path::Path;

/// Chunks of this size in every test here.
const CHUNK: usize = 4 << 10;

/// One batch of `per_batch` requests at `seq`: client `i` sends 1 to client `i + 1`,
/// each under its next request id. Deterministic, so two ledgers running it agree.
struct History {
    people: People,
    per_batch: usize,
}

impl History {
    fn new(accounts: u16, per_batch: usize) -> History {
        History {
            people: People::many(accounts, 0, 7),
            per_batch,
        }
    }

    /// The requests of batch `seq` (owned: client, request id, operation).
    fn batch(&self, seq: u64) -> Vec<(PublicKey, u64, Vec<u8>)> {
        let n = self.people.clients.len();
        (0..self.per_batch)
            .map(|j| {
                // a client's request ids go up by one per batch it is in
                let i = (seq as usize * 7 + j) % n;
                let to = self.people.clients[(i + 1) % n];
                let op = Operation {
                    transfers: vec![Transfer { to, amount: 1 }],
                }
                .encode();
                (self.people.clients[i], seq, op)
            })
            .collect()
    }

    /// Applies batches `from..=to`; `salt` changes the batch digests (another history).
    fn apply<E: Executor>(&self, e: &mut E, from: u64, to: u64, salt: u8) {
        for seq in from..=to {
            let owned = self.batch(seq);
            let reqs: Vec<ExecRequest<'_>> = owned
                .iter()
                .map(|(client, request_id, op)| ExecRequest {
                    client,
                    request_id: *request_id,
                    op,
                    digest: Digest::of(op),
                })
                .collect();
            let d = Digest::of_parts(&[&seq.to_le_bytes(), &[salt]]);
            e.apply(seq, d, &reqs).expect("apply");
        }
    }
}

fn open(dir: &Path, h: &History) -> RocksExecutor {
    RocksExecutor::open(dir, &h.people.genesis, RocksOptions::default()).expect("open")
}

/// A reference that ran batches `1..=seq` and took checkpoint `seq`, with its digest.
fn reference(h: &History, seq: u64) -> (MemoryExecutor, Digest) {
    let mut m = MemoryExecutor::genesis(&h.people.genesis);
    h.apply(&mut m, 1, seq, 0);
    let d = m.checkpoint().expect("checkpoint");
    (m, d)
}

/// The bytes of the receipts of batches `1..=to` as RocksDB stores them (key and
/// value), read back from `e`.
fn receipt_bytes(h: &History, e: &RocksExecutor, to: u64) -> usize {
    let mut bytes = 0;
    for seq in 1..=to {
        for (client, rid, _) in h.batch(seq) {
            let r = e.receipt(&client, rid).expect("read").expect("a receipt");
            bytes += 40 + postcard::to_allocvec(&r).expect("encode").len();
        }
    }
    bytes
}

/// A validator with a long history installs a snapshot just above its head: the
/// largest single write of the import is small and does not grow with the history
/// (the receipts and blocks stay where they are instead of being rewritten in one
/// batch), and they are all still there afterwards.
#[test]
fn an_import_writes_in_bounded_batches_whatever_the_history() {
    const SEQ: u64 = 408;
    let h = History::new(64, 32);
    let (m, digest) = reference(&h, SEQ);
    let chunks = m.export(SEQ, CHUNK).expect("export");
    let tmp = common::tempdir();
    let dir = tmp.path();
    {
        let mut e = open(dir, &h);
        h.apply(&mut e, 1, SEQ - 1, 0);
    }
    let mut e = open(dir, &h);
    let history = receipt_bytes(&h, &e, SEQ - 1);
    const BOUND: usize = 64 << 10;
    assert!(
        history >= 8 * BOUND,
        "a history of {history} bytes of receipts"
    );
    let head = e.import(SEQ, digest, &chunks).expect("import");
    assert_eq!(head, m.head());
    assert!(
        e.largest_write_bytes() <= BOUND,
        "the import wrote {} bytes at once, with {history} bytes of receipts in the ledger",
        e.largest_write_bytes()
    );
    // everything local of the snapshot's history is still there
    assert_eq!(receipt_bytes(&h, &e, SEQ - 1), history);
    for height in [1, SEQ / 2, SEQ - 1, SEQ] {
        assert_eq!(
            e.block(height).expect("block"),
            m.block(height).expect("block")
        );
    }
    for c in &h.people.clients {
        assert_eq!(
            e.balance(c).expect("balance"),
            m.balance(c).expect("balance")
        );
        assert_eq!(
            e.client_window(c).expect("w"),
            m.client_window(c).expect("w")
        );
    }
    drop(e);
    let report = verify_ledger(dir).expect("verify");
    assert_eq!(report.height, SEQ);
}

/// The exporter holds the first key of each chunk and the importer a few keys per
/// chunk: both stay within a small bound while the snapshot is many times larger, and
/// the chunks may arrive in any order. The same holds for a ledger with twenty times
/// the history (and the same state).
#[test]
fn export_and_import_hold_bounded_bytes_whatever_the_size() {
    let h = History::new(3000, 8);
    let mut held = Vec::new();
    for history in [16u64, 320] {
        let src_dir = common::tempdir();
        let mut src = open(src_dir.path(), &h);
        h.apply(&mut src, 1, history, 0);
        let digest = src.checkpoint().expect("checkpoint");

        let mut source = src.export_source(history, CHUNK).expect("export source");
        let total = source.total();
        let mut chunks = Vec::new();
        let mut snapshot = 0;
        let mut peak_export = 0;
        for i in 0..total {
            let c = source.chunk(i).expect("chunk");
            peak_export = peak_export.max(source.held_bytes() + c.len());
            snapshot += c.len();
            chunks.push(c);
        }
        assert_eq!(chunks, src.export(history, CHUNK).expect("export"));

        let dst_dir = common::tempdir();
        let mut dst = open(dst_dir.path(), &h);
        dst.import_begin(history).expect("begin");
        let mut peak_import = dst.import_held_bytes();
        // the last chunk first, then the others
        for c in chunks.iter().rev() {
            dst.import_chunk(history, c).expect("chunk");
            peak_import = peak_import.max(dst.import_held_bytes());
        }
        assert_eq!(dst.import_finish(history).expect("finish"), digest);
        let head = dst.import_commit(history, digest).expect("commit");
        assert_eq!(head, src.head());
        assert_eq!(dst.import_held_bytes(), 0);

        const BOUND: usize = 16 << 10;
        assert!(
            snapshot >= 8 * BOUND && total >= 32,
            "a snapshot of {snapshot} bytes in {total} chunks"
        );
        assert!(
            peak_export <= BOUND,
            "the exporter held {peak_export} bytes for a snapshot of {snapshot}"
        );
        assert!(
            peak_import <= BOUND,
            "the importer held {peak_import} bytes for a snapshot of {snapshot}"
        );
        held.push((peak_export, peak_import));
    }
    // twenty times the history adds a few bytes to the state's client windows, and
    // nothing else
    assert!(
        held[1].0 <= held[0].0 + 1024 && held[1].1 <= held[0].1 + 1024,
        "what is held follows the history: {held:?}"
    );
}

/// What a ledger shows of itself, to compare before and after a failed import.
fn seen(h: &History, e: &RocksExecutor, upto: u64) -> (pbft_executor::Head, u64, Vec<u64>, usize) {
    let balances = h
        .people
        .clients
        .iter()
        .map(|c| e.balance(c).expect("balance").unwrap_or(0))
        .collect();
    (
        e.head(),
        e.stable_seq(),
        balances,
        receipt_bytes(h, e, upto),
    )
}

/// An import abandoned half-way, one whose snapshot does not check out, one whose
/// digest is not the proven one, and one that crashes at any durable step of its
/// commit: each leaves the ledger exactly as it was (or, past the commit point, as the
/// snapshot says), and a later import installs. The ledger here is ahead of the
/// snapshot, on another history, so the commit also drops the receipts above it.
#[test]
fn a_failed_or_interrupted_import_leaves_the_old_state() {
    const SEQ: u64 = 24;
    let h = History::new(64, 8);
    let (m, digest) = reference(&h, SEQ);
    let chunks = m.export(SEQ, 1024).expect("export");
    assert!(chunks.len() >= 3, "{} chunks", chunks.len());

    let tmp = common::tempdir();
    let dir = tmp.path();
    {
        // 1..=16 shared, then 17..=30 of another history
        let mut e = open(dir, &h);
        h.apply(&mut e, 1, 16, 0);
        e.checkpoint().expect("checkpoint 16");
        e.stable(16).expect("stable 16");
        h.apply(&mut e, 17, 30, 1);
    }
    let mut e = open(dir, &h);
    let before = seen(&h, &e, 30);

    // abandoned half-way
    e.import_begin(SEQ).expect("begin");
    e.import_chunk(SEQ, &chunks[0]).expect("chunk");
    e.import_abort();
    assert_eq!(seen(&h, &e, 30), before, "abandoned");
    assert!(
        matches!(e.import_commit(SEQ, digest), Err(ExecError::BadSnapshot(_))),
        "nothing staged is left to commit"
    );
    // a chunk that does not decode, then the whole staging is refused
    e.import_begin(SEQ).expect("begin");
    e.import_chunk(SEQ, &chunks[0]).expect("chunk");
    let mut broken = chunks[1].clone();
    broken.truncate(broken.len() / 2);
    assert!(matches!(
        e.import_chunk(SEQ, &broken),
        Err(ExecError::BadSnapshot(_))
    ));
    assert!(e.import_finish(SEQ).is_err(), "a chunk is missing");
    assert!(e.import_commit(SEQ, digest).is_err());
    e.import_abort();
    assert_eq!(seen(&h, &e, 30), before, "a broken chunk");
    // the whole snapshot, but not the proven digest
    assert!(matches!(
        e.import(SEQ, Digest::of(b"another checkpoint"), &chunks),
        Err(ExecError::BadSnapshot(_))
    ));
    assert_eq!(seen(&h, &e, 30), before, "another digest");
    drop(e);

    // crashes: at each durable step of a full import, until one completes
    let base = {
        let e = open(dir, &h);
        e.durable_steps()
    };
    let mut step = base + 1;
    loop {
        let copy = common::tempdir();
        copy_tree(dir, copy.path());
        let opts = RocksOptions {
            fault: Some(FaultPlan {
                crash_at_step: step,
            }),
            ..RocksOptions::default()
        };
        let mut e = RocksExecutor::open(copy.path(), &h.people.genesis, opts).expect("open");
        let done = e.import(SEQ, digest, &chunks).is_ok();
        drop(e);
        let e = open(copy.path(), &h);
        assert!(
            !copy.path().join("import.staging").exists(),
            "step {step}: the staging is gone after a reopen"
        );
        if e.head() == before.0 {
            assert!(!done, "step {step}");
            assert_eq!(seen(&h, &e, 30), before, "crash at step {step}");
        } else {
            assert_eq!(e.head(), m.head(), "crash at step {step}");
            // the other history's receipts above the snapshot are gone
            for seq in SEQ + 1..=30 {
                for (client, rid, _) in h.batch(seq) {
                    assert!(
                        e.receipt(&client, rid)
                            .expect("read")
                            .is_none_or(|r| r.height <= SEQ),
                        "crash at step {step}: a receipt above the snapshot"
                    );
                }
            }
            assert_eq!(
                e.receipt(&h.batch(3)[0].0, 3).expect("read"),
                m.receipt(&h.batch(3)[0].0, 3).expect("read"),
                "crash at step {step}: the shared history's receipts stay"
            );
        }
        drop(e);
        verify_ledger(copy.path()).unwrap_or_else(|err| panic!("crash at step {step}: {err}"));
        if done {
            break;
        }
        step += 1;
        assert!(step < base + 200, "the import never completes");
    }
    assert!(
        step > base + chunks.len() as u64 + 5,
        "the import was crashed at every step"
    );
}

/// Copies a directory tree (a ledger directory, to crash a copy of it).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("list") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else if entry.file_name() != "LOCK" {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// The in-memory executor stages and installs a snapshot as the RocksDB one does:
/// chunks in reverse order after an abandoned attempt, over a ledger that was ahead on
/// another history, leave the same head, blocks, receipts, windows and snapshot.
#[test]
fn both_executors_install_a_streamed_snapshot_alike() {
    const SEQ: u64 = 24;
    let h = History::new(64, 8);
    let (m, digest) = reference(&h, SEQ);
    let chunks = m.export(SEQ, 1024).expect("export");
    let tmp = common::tempdir();
    let mut rocks = open(tmp.path(), &h);
    let mut mem = MemoryExecutor::genesis(&h.people.genesis);
    fn drive<E: Executor>(e: &mut E, h: &History, chunks: &[Vec<u8>], digest: Digest) {
        h.apply(e, 1, 16, 0);
        e.checkpoint().expect("checkpoint 16");
        e.stable(16).expect("stable 16");
        h.apply(e, 17, 30, 1);
        e.import_begin(SEQ).expect("begin");
        e.import_chunk(SEQ, &chunks[1]).expect("chunk");
        e.import_abort();
        e.import_begin(SEQ).expect("begin");
        for c in chunks.iter().rev() {
            e.import_chunk(SEQ, c).expect("chunk");
        }
        assert_eq!(e.import_finish(SEQ).expect("finish"), digest);
        e.import_commit(SEQ, digest).expect("commit");
    }
    drive(&mut rocks, &h, &chunks, digest);
    drive(&mut mem, &h, &chunks, digest);
    assert_eq!(rocks.head(), mem.head());
    assert_eq!(rocks.head(), m.head());
    assert_eq!(rocks.stable_seq(), mem.stable_seq());
    for height in 0..=31 {
        assert_eq!(
            rocks.block(height).expect("block"),
            mem.block(height).expect("block"),
            "block {height}"
        );
    }
    for seq in 1..=30 {
        for (client, rid, _) in h.batch(seq) {
            assert_eq!(
                rocks.receipt(&client, rid).expect("receipt"),
                mem.receipt(&client, rid).expect("receipt"),
                "the receipt of batch {seq}"
            );
        }
    }
    for c in &h.people.clients {
        assert_eq!(
            rocks.client_window(c).expect("w"),
            mem.client_window(c).expect("w")
        );
        assert_eq!(rocks.balance(c).expect("b"), mem.balance(c).expect("b"));
    }
    assert_eq!(
        rocks.export(SEQ, 1024).expect("rocks export"),
        mem.export(SEQ, 1024).expect("memory export")
    );
}
