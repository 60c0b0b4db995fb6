//! Criterion benchmark of the protocol core in the simulator: committed requests per
//! second of wall-clock time, with and without client and replica signature checks, so
//! later changes to the core can be compared. Each validator is the node's own host on
//! an in-memory ledger and log; the replicas' invariant checks, which every simulated
//! test runs, are off here so the figure is the core's own cost. Run with
//! `cargo bench --bench sim`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pbft_sim::SimConfig;

const REQUESTS: usize = 200;

fn config(verify: bool) -> SimConfig {
    let mut c = SimConfig {
        seed: 42,
        verify_signatures: verify,
        check_invariants: false,
        ..SimConfig::default()
    };
    c.workload.requests = REQUESTS;
    c.workload.clients = 8;
    c.workload.concurrency = 8;
    c
}

fn bench_sim(c: &mut Criterion) {
    let mut g = c.benchmark_group("sim_n4");
    g.throughput(Throughput::Elements(REQUESTS as u64));
    g.sample_size(10);
    for (name, verify) in [("signatures_checked", true), ("signatures_skipped", false)] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let r = pbft_sim::run(config(verify));
                assert!(r.all_committed && r.safe());
                r.accepted
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench_sim);
criterion_main!(benches);
