//! Criterion benchmarks of quorum tracking (`cargo bench --bench quorum`): the cost
//! of counting prepares or commits from distinct validators per (view, seq, digest),
//! as the replica does for every vote, for n = 4, 7 and 10 validators and a window
//! of 128 sequence numbers in flight; plus garbage collection of the window.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pbft_crypto::Digest;
use pbft_protocol::quorum::VoteTracker;

const WINDOW: u64 = 128;

fn bench_votes(c: &mut Criterion) {
    let mut group = c.benchmark_group("quorum_add");
    for n in [4u32, 7, 10] {
        let digests: Vec<Digest> = (0..WINDOW).map(|s| Digest::of(&s.to_le_bytes())).collect();
        group.throughput(Throughput::Elements(WINDOW * u64::from(n)));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            b.iter(|| {
                // every validator votes once for every slot of the window
                let mut t: VoteTracker<()> = VoteTracker::new();
                let mut quorums = 0usize;
                for seq in 1..=WINDOW {
                    let d = digests[(seq - 1) as usize];
                    for sender in 0..n {
                        if let pbft_protocol::quorum::AddOutcome::Counted(c) =
                            t.add(0, seq, d, sender, ())
                        {
                            quorums += usize::from(c == (n - (n - 1) / 3) as usize);
                        }
                    }
                }
                black_box((quorums, t.count(0, WINDOW, &digests[0])))
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("quorum_gc");
    let digest = Digest::of(b"slot");
    group.bench_function("retain_above_half_of_1024_slots", |b| {
        b.iter_batched(
            || {
                let mut t: VoteTracker<()> = VoteTracker::new();
                for seq in 1..=1024u64 {
                    for sender in 0..4 {
                        t.add(0, seq, digest, sender, ());
                    }
                }
                t
            },
            |mut t| {
                t.retain_above(512, 0);
                black_box(t.len())
            },
            criterion::BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, bench_votes);
criterion_main!(benches);
