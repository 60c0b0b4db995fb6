//! Criterion benchmarks of the ledger executor (`cargo bench --bench executor`):
//!
//! - `apply/<backend>/<batch size>`: signed-transfer application rate, RocksDB (its
//!   write-ahead log on, no fsync per batch) and in memory, for batches of 1, 64 and 512;
//!   `rocksdb-checkpoint-64` also takes a checkpoint every 64 batches, as a validator
//!   does with the cluster file's default interval;
//! - `checkpoint/rocksdb/<accounts>`: the cost of one checkpoint after a fixed batch of
//!   changes, for states of 10k, 100k and 1M accounts. It must stay flat as the state
//!   grows, because the LtHash is updated per key changed since the last checkpoint and
//!   the RocksDB checkpoint hard-links files.

use criterion::{
    black_box, criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput,
};
use pbft_crypto::{Digest, Keypair, PublicKey};
use pbft_executor::{
    ExecRequest, Executor, MemoryExecutor, Operation, RocksExecutor, RocksOptions,
};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Deterministic accounts (the keys need not sign anything here).
fn accounts(n: usize) -> Vec<PublicKey> {
    (0..n)
        .map(|i| {
            let seed = Digest::of_parts(&[b"bench account", &(i as u64).to_le_bytes()]);
            Keypair::from_seed(&seed.0).map(|k| k.public())
        })
        .collect::<Result<_, _>>()
        .unwrap_or_default()
}

fn genesis(accts: &[PublicKey]) -> BTreeMap<PublicKey, u64> {
    accts.iter().map(|a| (*a, 1_000_000_000)).collect()
}

/// Fresh transfers between pseudo-random accounts, request ids per sender increasing,
/// so that every measured request executes for the first time.
struct Workload {
    accts: Vec<PublicKey>,
    next_id: BTreeMap<PublicKey, u64>,
    x: u64,
}

type Ops = Vec<(PublicKey, u64, Vec<u8>)>;

impl Workload {
    fn new(accts: &[PublicKey], seed: u64) -> Workload {
        Workload {
            accts: accts.to_vec(),
            next_id: BTreeMap::new(),
            x: seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1,
        }
    }

    fn rnd(&mut self) -> u64 {
        self.x ^= self.x << 13;
        self.x ^= self.x >> 7;
        self.x ^= self.x << 17;
        self.x
    }

    fn ops(&mut self, count: usize) -> Ops {
        (0..count)
            .map(|_| {
                let (a, b) = (self.rnd() as usize, self.rnd() as usize);
                let from = self.accts[a % self.accts.len()];
                let to = self.accts[b % self.accts.len()];
                let amount = 1 + self.rnd() % 100;
                let id = self.next_id.entry(from).or_insert(0);
                *id += 1;
                (from, *id, Operation::transfer(to, amount).encode())
            })
            .collect()
    }
}

fn requests(ops: &Ops) -> Vec<ExecRequest<'_>> {
    ops.iter()
        .map(|(c, id, op)| ExecRequest {
            client: c,
            request_id: *id,
            op,
            digest: Digest::of(op),
        })
        .collect()
}

fn apply_next(ex: &mut dyn Executor, ops: &Ops) -> u64 {
    let seq = ex.head().height + 1;
    ex.apply(seq, Digest::ZERO, &requests(ops))
        .map(|a| a.block.height)
        .unwrap_or(0)
}

/// A RocksDB ledger at genesis in a temporary directory, opened on first use, so that
/// a filtered run does not create unused databases (`None` if it cannot be made).
fn open_once<'a>(
    slot: &'a mut Option<(tempfile::TempDir, RocksExecutor)>,
    g: &BTreeMap<PublicKey, u64>,
) -> Option<&'a mut (tempfile::TempDir, RocksExecutor)> {
    if slot.is_none() {
        let dir = tempfile::tempdir().ok()?;
        let ex = RocksExecutor::open(dir.path(), g, RocksOptions::default()).ok()?;
        *slot = Some((dir, ex));
    }
    slot.as_mut()
}

fn bench_apply(c: &mut Criterion) {
    let accts = accounts(10_000);
    let g = genesis(&accts);
    let mut group = c.benchmark_group("apply");
    group.sample_size(10);
    for size in [1usize, 64, 512] {
        group.throughput(Throughput::Elements(size as u64));
        // each executor gets its own copy of the workload, so that every one sees each
        // client's request ids from 1 in order (a workload shared between them gave the
        // later ones ids far ahead of their clients' windows: out of order, recorded as
        // offsets, and growing the account records)
        let mut work = Workload::new(&accts, size as u64);
        let mut mem = MemoryExecutor::genesis(&g);
        group.bench_with_input(BenchmarkId::new("memory", size), &size, |b, &size| {
            b.iter_batched(
                || work.ops(size),
                |ops| apply_next(&mut mem, &ops),
                BatchSize::SmallInput,
            )
        });
        let mut work = Workload::new(&accts, size as u64);
        let mut rocks: Option<(tempfile::TempDir, RocksExecutor)> = None;
        group.bench_with_input(BenchmarkId::new("rocksdb", size), &size, |b, &size| {
            let Some((_, ex)) = open_once(&mut rocks, &g) else {
                return;
            };
            b.iter_batched(
                || work.ops(size),
                |ops| apply_next(ex, &ops),
                BatchSize::SmallInput,
            )
        });
        // as a validator runs it: a checkpoint every 64 sequence numbers (the cluster
        // file's default K), made stable at once; the checkpoints' cost is spread over
        // the batches between them
        let mut work = Workload::new(&accts, size as u64);
        let mut rocks: Option<(tempfile::TempDir, RocksExecutor)> = None;
        group.bench_with_input(
            BenchmarkId::new("rocksdb-checkpoint-64", size),
            &size,
            |b, &size| {
                let Some((_, ex)) = open_once(&mut rocks, &g) else {
                    return;
                };
                b.iter_batched(
                    || work.ops(size),
                    |ops| {
                        let h = apply_next(ex, &ops);
                        if h > 0 && h.is_multiple_of(64) {
                            let _ = ex.checkpoint();
                            let _ = ex.stable(h);
                        }
                        h
                    },
                    BatchSize::SmallInput,
                )
            },
        );
    }
    group.finish();
}

fn bench_checkpoint(c: &mut Criterion) {
    let mut group = c.benchmark_group("checkpoint");
    group.sample_size(10);
    for n in [10_000usize, 100_000, 1_000_000] {
        // set up on first use only: criterion runs the closure only for benchmarks its
        // filter selects, so `-- apply` never pays for a million keypairs
        let mut setup: Option<(tempfile::TempDir, RocksExecutor, Workload)> = None;
        group.bench_with_input(BenchmarkId::new("rocksdb", n), &n, |b, &n| {
            if setup.is_none() {
                let accts = accounts(n);
                let g = genesis(&accts);
                let Ok(dir) = tempfile::tempdir() else {
                    return;
                };
                let Ok(ex) = RocksExecutor::open(dir.path(), &g, RocksOptions::default()) else {
                    return;
                };
                setup = Some((dir, ex, Workload::new(&accts, n as u64)));
            }
            let Some((_, ex, work)) = setup.as_mut() else {
                return;
            };
            // a fixed number of changes per checkpoint: one batch of 512 transfers,
            // applied outside the measurement
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let ops = work.ops(512);
                    apply_next(ex, &ops);
                    let started = Instant::now();
                    let d = ex.checkpoint().unwrap_or(Digest::ZERO);
                    let h = ex.head().height;
                    let _ = ex.stable(h);
                    total += started.elapsed();
                    black_box(d);
                }
                total
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_apply, bench_checkpoint);
criterion_main!(benches);
