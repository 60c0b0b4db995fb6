//! A fixed workload for profiling batch application (not a benchmark: see
//! `benches/executor.rs`). `cargo run --release -p pbft-executor --example apply_profile
//! -- <memory|rocksdb> <batch size> <batches> [K]` applies that many batches of fresh
//! single-transfer requests between 10,000 accounts and prints the rate. With `K`, it
//! also takes a checkpoint every `K` batches (and marks it stable), as a validator does,
//! and the rate includes them.

use pbft_crypto::{Digest, Keypair, PublicKey};
use pbft_executor::{
    ExecRequest, Executor, MemoryExecutor, Operation, RocksExecutor, RocksOptions,
};
use std::collections::BTreeMap;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let backend = args.get(1).map_or("rocksdb", |s| s.as_str()).to_string();
    let size: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(512);
    let batches: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(200);
    let every: Option<u64> = args.get(4).and_then(|s| s.parse().ok()).filter(|k| *k > 0);
    let accts: Vec<PublicKey> = (0..10_000u64)
        .filter_map(|i| {
            let seed = Digest::of_parts(&[b"bench account", &i.to_le_bytes()]);
            Keypair::from_seed(&seed.0).ok().map(|k| k.public())
        })
        .collect();
    let g: BTreeMap<PublicKey, u64> = accts.iter().map(|a| (*a, 1_000_000_000)).collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut ex: Box<dyn Executor> = if backend == "memory" {
        Box::new(MemoryExecutor::genesis(&g))
    } else {
        Box::new(RocksExecutor::open(dir.path(), &g, RocksOptions::default()).expect("open"))
    };
    let mut next_id: BTreeMap<PublicKey, u64> = BTreeMap::new();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let all: Vec<Vec<(PublicKey, u64, Vec<u8>)>> = (0..batches)
        .map(|_| {
            (0..size)
                .map(|_| {
                    let from = accts[rnd() as usize % accts.len()];
                    let to = accts[rnd() as usize % accts.len()];
                    let amount = 1 + rnd() % 100;
                    let id = next_id.entry(from).or_insert(0);
                    *id += 1;
                    (from, *id, Operation::transfer(to, amount).encode())
                })
                .collect()
        })
        .collect();
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    let mut last = Instant::now();
    let mut best = f64::MAX;
    for (i, ops) in all.iter().enumerate() {
        let reqs: Vec<ExecRequest<'_>> = ops
            .iter()
            .map(|(c, id, op)| ExecRequest {
                client: c,
                request_id: *id,
                op,
                digest: Digest::of(op),
            })
            .collect();
        let seq = ex.head().height + 1;
        ex.apply(seq, Digest::ZERO, &reqs).expect("apply");
        if every.is_some_and(|k| seq.is_multiple_of(k)) {
            let t0 = Instant::now();
            ex.checkpoint().expect("checkpoint");
            let t1 = Instant::now();
            ex.stable(seq).expect("stable");
            if std::env::var_os("VERBOSE").is_some() {
                eprintln!(
                    "checkpoint {seq}: {:.1} ms, stable {:.1} ms",
                    (t1 - t0).as_secs_f64() * 1e3,
                    t1.elapsed().as_secs_f64() * 1e3
                );
            }
        }
        if (i + 1) % 20 == 0 {
            let per = last.elapsed().as_secs_f64() / (20 * size) as f64;
            best = best.min(per);
            if std::env::var_os("VERBOSE").is_some() {
                eprint!("{:.0} ", 1.0 / per);
            }
            last = Instant::now();
        }
    }
    let total = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu_before;
    println!(
        "{backend}/{size}{}: {batches} batches, {:.0} transfers/s overall, best 20-batch window {:.0}/s, CPU {:.2} us/transfer (all threads), head {}",
        every.map_or(String::new(), |k| format!(" (checkpoint every {k})")),
        (batches * size) as f64 / total,
        1.0 / best,
        cpu * 1e6 / (batches * size) as f64,
        ex.head().state_digest.short()
    );
}

/// User plus system CPU time of the whole process (all threads), from /proc (Linux).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // the fields after the parenthesised command name; utime and stime are 14 and 15
    let rest = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}
