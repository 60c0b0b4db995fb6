//! Crash safety by fault injection: a scripted workload (batches, checkpoints, stable
//! marks, two rollbacks, a state import) is "crashed" at every durable step in turn. After
//! each crash the directory is reopened: the ledger must verify, be exactly where the
//! script was before or after the interrupted operation (no batch half or twice), match
//! the in-memory reference at that height, and then finish the script identically.

mod common;

use common::{Batch, People, Workload};
use pbft_crypto::Digest;
use pbft_executor::snapshot::verify_chunks;
use pbft_executor::types::checkpoint_digest;
use pbft_executor::{
    verify_ledger, ExecError, Executor, FaultPlan, Head, MemoryExecutor, RocksExecutor,
    RocksOptions,
};
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Apply(u64),
    Checkpoint,
    Stable(u64),
    Rollback,
    Import(u64),
}

/// Where the ledger is before and after an operation.
#[derive(Clone, Copy, Debug)]
struct Pos {
    head: Head,
    stable: u64,
}

struct Script {
    people: People,
    batches: Vec<Batch>, // batches[seq - 1]
    ops: Vec<Op>,
    /// The snapshot imported by `Op::Import`.
    import: (u64, Digest, Vec<Vec<u8>>),
    /// Per op: position before and after it (from the in-memory reference).
    pre: Vec<Pos>,
    post: Vec<Pos>,
    /// Reference head at every height, and checkpoint digests.
    heads: BTreeMap<u64, Head>,
    digests: BTreeMap<u64, Digest>,
}

const EVERY: u64 = 8;
const IMPORT_AT: u64 = 48;

fn advance(ops: &mut Vec<Op>, from: u64, to: u64) {
    for s in from..=to {
        ops.push(Op::Apply(s));
        if s.is_multiple_of(EVERY) {
            ops.push(Op::Checkpoint);
        }
        if s % EVERY == 1 && s > 1 {
            ops.push(Op::Stable(s - 1));
        }
    }
}

fn script() -> Script {
    let people = People::new(12, 2, 31);
    let mut w = Workload::new(&people, 32);
    let batches: Vec<Batch> = (0..64).map(|_| w.batch()).collect();
    let mut ops = Vec::new();
    advance(&mut ops, 1, 21);
    ops.push(Op::Rollback); // to 16
    advance(&mut ops, 17, 34);
    ops.push(Op::Import(IMPORT_AT)); // from behind (34) to 48
    advance(&mut ops, 49, 59);
    ops.push(Op::Rollback); // to 56
    advance(&mut ops, 57, 64);

    // the snapshot to import, from a reference that ran the same batches
    let mut src = MemoryExecutor::genesis(&people.genesis);
    for s in 1..=IMPORT_AT {
        let b = &batches[s as usize - 1];
        src.apply(s, b.digest, &b.requests()).expect("source apply");
    }
    let digest = src.checkpoint().expect("source checkpoint");
    let chunks = src.export(IMPORT_AT, 200).expect("source export");
    let import = (IMPORT_AT, digest, chunks);

    let mut s = Script {
        people,
        batches,
        ops,
        import,
        pre: Vec::new(),
        post: Vec::new(),
        heads: BTreeMap::new(),
        digests: BTreeMap::new(),
    };
    let mut reference = MemoryExecutor::genesis(&s.people.genesis);
    s.heads.insert(0, reference.head());
    s.digests.insert(
        0,
        checkpoint_digest(0, &Digest::ZERO, &reference.lthash().digest()),
    );
    for i in 0..s.ops.len() {
        let pos = |e: &MemoryExecutor| Pos {
            head: e.head(),
            stable: e.stable_seq(),
        };
        s.pre.push(pos(&reference));
        run_op(&s, &mut reference, i).expect("reference");
        let h = reference.head();
        if let Some(old) = s.heads.insert(h.height, h) {
            assert_eq!(old, h, "the script is deterministic per height");
        }
        if matches!(s.ops[i], Op::Checkpoint | Op::Import(_)) {
            let d = checkpoint_digest(h.height, &h.hash, &reference.lthash().digest());
            s.digests.insert(h.height, d);
        }
        s.post.push(pos(&reference));
    }
    s
}

/// Runs op `i` of the script; a re-run after a crash skips a batch already applied.
fn run_op<E: Executor>(s: &Script, e: &mut E, i: usize) -> Result<(), ExecError> {
    match s.ops[i] {
        Op::Apply(seq) => {
            if e.head().height == seq {
                return Ok(());
            }
            let b = &s.batches[seq as usize - 1];
            e.apply(seq, b.digest, &b.requests())?;
        }
        Op::Checkpoint => {
            let d = e.checkpoint()?;
            // the reference's, once the script is built
            if let Some(want) = s.digests.get(&e.head().height) {
                assert_eq!(d, *want);
            }
        }
        Op::Stable(seq) => e.stable(seq)?,
        Op::Rollback => {
            e.rollback()?;
        }
        Op::Import(seq) => {
            let (at, digest, chunks) = &s.import;
            assert_eq!(*at, seq);
            e.import(seq, *digest, chunks)?;
        }
    }
    Ok(())
}

fn open(dir: &Path, s: &Script, fault: Option<FaultPlan>) -> Result<RocksExecutor, ExecError> {
    RocksExecutor::open(
        dir,
        &s.people.genesis,
        RocksOptions {
            sync: false,
            fault,
            ..RocksOptions::default()
        },
    )
}

/// The reopened ledger is sound and where the reference says. (The ledger is verified
/// while no executor has it open: a read-only open next to a writer may race with its
/// compactions.)
fn check_reopened(s: &Script, dir: &Path, k: u64) -> RocksExecutor {
    let e = open(dir, s, None).unwrap_or_else(|err| panic!("crash point {k}: reopen: {err}"));
    let head = e.head();
    drop(e);
    let report = verify_ledger(dir).unwrap_or_else(|err| panic!("crash point {k}: verify: {err}"));
    let e = open(dir, s, None).unwrap_or_else(|err| panic!("crash point {k}: reopen: {err}"));
    assert_eq!(
        e.head(),
        head,
        "crash point {k}: a second reopen moved the head"
    );
    let head = e.head();
    assert_eq!(report.height, head.height, "crash point {k}");
    assert_eq!(report.head, head.hash, "crash point {k}");
    assert_eq!(report.state_digest, head.state_digest, "crash point {k}");
    // the stored LtHash is the reference's checkpoint state's
    let (lt, at) = e.lthash();
    let at_hash = s.heads.get(&at).map(|h| h.hash);
    assert_eq!(
        at_hash.map(|h| checkpoint_digest(at, &h, &lt.digest())),
        s.digests.get(&at).copied(),
        "crash point {k}: the LtHash of height {at}"
    );
    assert_eq!(
        s.heads.get(&head.height),
        Some(&head),
        "crash point {k}: head off the reference"
    );
    // the stable checkpoint is there and is the reference's
    let stable = e.stable_seq();
    let chunks = e
        .export(stable, 512)
        .unwrap_or_else(|err| panic!("crash point {k}: export {stable}: {err}"));
    let d = s
        .digests
        .get(&stable)
        .copied()
        .unwrap_or_else(|| panic!("no reference digest at {stable}"));
    verify_chunks(stable, d, &chunks)
        .unwrap_or_else(|err| panic!("crash point {k}: checkpoint {stable}: {err}"));
    // the block at the head and the balances are readable
    if head.height > 0 {
        let b = e.block(head.height).expect("block").expect("head block");
        assert_eq!(b.hash(), head.hash, "crash point {k}");
    }
    for pk in s.people.everyone() {
        e.balance(pk).expect("balance");
    }
    e
}

/// Total durable steps of the script (the number of crash points).
fn count_steps(s: &Script) -> u64 {
    let tmp = common::tempdir();
    let mut e = open(
        tmp.path(),
        s,
        Some(FaultPlan {
            crash_at_step: u64::MAX,
        }),
    )
    .expect("open");
    for i in 0..s.ops.len() {
        run_op(s, &mut e, i).expect("uncrashed run");
    }
    assert_eq!(e.head(), s.post[s.ops.len() - 1].head);
    e.durable_steps()
}

fn crash_at(s: &Script, k: u64) {
    let tmp = common::tempdir();
    let dir = tmp.path();
    // run until the injected crash
    let crashed_op: Option<usize> = match open(dir, s, Some(FaultPlan { crash_at_step: k })) {
        Err(ExecError::Injected(step)) => {
            assert_eq!(step, k);
            None
        }
        Err(e) => panic!("crash point {k}: open: {e}"),
        Ok(mut e) => {
            let mut crashed = None;
            for i in 0..s.ops.len() {
                match run_op(s, &mut e, i) {
                    Ok(()) => {}
                    Err(ExecError::Injected(step)) => {
                        assert_eq!(step, k);
                        // the process is dead: everything fails now
                        assert!(matches!(e.checkpoint(), Err(ExecError::Injected(_))));
                        assert!(matches!(
                            e.balance(&s.people.clients[0]),
                            Err(ExecError::Injected(_))
                        ));
                        crashed = Some(i);
                        break;
                    }
                    Err(err) => panic!("crash point {k}: op {i} {:?}: {err}", s.ops[i]),
                }
            }
            match crashed {
                Some(i) => Some(i),
                None => {
                    // A rollback copies its checkpoint's files one durable step each,
                    // and how many files RocksDB's background compactions left (after
                    // an import, the new state starts from the live state's files)
                    // differs from run to run: this run took fewer steps than the one
                    // counted. It must have finished where the script ends.
                    let last = s.post[s.ops.len() - 1];
                    assert_eq!(e.head(), last.head, "crash point {k}: not reached");
                    assert_eq!(e.stable_seq(), last.stable, "crash point {k}");
                    return;
                }
            }
        }
    };

    // reopen without faults
    let mut e = check_reopened(s, dir, k);
    let start = match crashed_op {
        None => {
            assert_eq!(e.head(), s.heads[&0], "crash point {k}: genesis");
            0
        }
        Some(i) => {
            let (pre, post) = (s.pre[i], s.post[i]);
            let head = e.head();
            assert!(
                head == pre.head || head == post.head,
                "crash point {k} in op {i} {:?}: head {} is neither {} nor {}",
                s.ops[i],
                head.height,
                pre.head.height,
                post.head.height
            );
            let stable = e.stable_seq();
            assert!(
                stable == pre.stable || stable == post.stable,
                "crash point {k} in op {i} {:?}: stable {stable}",
                s.ops[i]
            );
            i
        }
    };
    // finish the script
    for i in start..s.ops.len() {
        run_op(s, &mut e, i)
            .unwrap_or_else(|err| panic!("crash point {k}: resumed op {i} {:?}: {err}", s.ops[i]));
    }
    let last = s.post[s.ops.len() - 1];
    assert_eq!(e.head(), last.head, "crash point {k}: final head");
    assert_eq!(e.stable_seq(), last.stable, "crash point {k}: final stable");
    drop(e);
    let report =
        verify_ledger(dir).unwrap_or_else(|err| panic!("crash point {k}: final verify: {err}"));
    assert_eq!(report.head, last.head.hash);
}

/// Crash points `k` with `k % parts == part` (split so the test harness runs them in
/// parallel).
fn crash_points(part: u64, parts: u64) {
    let s = script();
    let n = count_steps(&s);
    println!("crash points: N = {n} durable steps in the script");
    assert!(n >= 100, "only {n} crash points");
    let mut tried = 0;
    for k in (1..=n).filter(|k| k % parts == part) {
        crash_at(&s, k);
        tried += 1;
    }
    println!("part {part}/{parts}: {tried} crash points passed");
}

#[test]
fn crash_points_0() {
    crash_points(0, 4);
}

#[test]
fn crash_points_1() {
    crash_points(1, 4);
}

#[test]
fn crash_points_2() {
    crash_points(2, 4);
}

#[test]
fn crash_points_3() {
    crash_points(3, 4);
}

/// A fault exactly at the write of batch `s` leaves the ledger at `s - 1`, verified.
#[test]
fn fault_at_a_batch_write_leaves_the_previous_batch() {
    let people = People::new(10, 2, 41);
    let mut w = Workload::new(&people, 42);
    let batches: Vec<Batch> = (0..12).map(|_| w.batch()).collect();
    let mut reference = MemoryExecutor::genesis(&people.genesis);
    let mut heads = vec![reference.head()];
    for (i, b) in batches.iter().enumerate() {
        reference
            .apply(i as u64 + 1, b.digest, &b.requests())
            .expect("reference");
        heads.push(reference.head());
    }
    let genesis_steps = {
        let tmp = common::tempdir();
        let fault = Some(FaultPlan {
            crash_at_step: u64::MAX,
        });
        let e = RocksExecutor::open(
            tmp.path(),
            &people.genesis,
            RocksOptions {
                sync: true,
                fault,
                ..RocksOptions::default()
            },
        )
        .expect("open");
        e.durable_steps()
    };
    for s in [1u64, 2, 7, 12] {
        let tmp = common::tempdir();
        let fault = Some(FaultPlan {
            crash_at_step: genesis_steps + s,
        });
        let mut e = RocksExecutor::open(
            tmp.path(),
            &people.genesis,
            RocksOptions {
                sync: true,
                fault,
                ..RocksOptions::default()
            },
        )
        .expect("open");
        for seq in 1..s {
            let b = &batches[seq as usize - 1];
            e.apply(seq, b.digest, &b.requests())
                .expect("apply before the fault");
        }
        let b = &batches[s as usize - 1];
        match e.apply(s, b.digest, &b.requests()) {
            Err(ExecError::Injected(step)) => assert_eq!(step, genesis_steps + s),
            other => panic!("batch {s}: expected the injected fault, got {other:?}"),
        }
        // nothing of it is visible, even before the "restart"
        assert_eq!(e.head(), heads[s as usize - 1]);
        drop(e);
        let e = RocksExecutor::open(tmp.path(), &people.genesis, RocksOptions::default())
            .expect("reopen");
        assert_eq!(e.head(), heads[s as usize - 1], "batch {s}");
        assert!(e.block(s).expect("block").is_none());
        for r in &b.reqs {
            if let Some(stored) = e.receipt(&r.client, r.rid).expect("receipt") {
                assert!(stored.height < s, "a receipt of the failed batch {s}");
            }
        }
        // verified with no executor open on it (a read-only open beside a writer can race
        // with the writer's compactions)
        drop(e);
        let report = verify_ledger(tmp.path()).expect("verify");
        assert_eq!(report.height, s - 1);
        assert_eq!(report.head, heads[s as usize - 1].hash);
    }
}
