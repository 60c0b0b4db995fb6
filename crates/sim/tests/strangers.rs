//! Strangers in the simulator: a `reuse_id` stranger's requests take the path of any
//! client's request, every honest validator refuses them as reused ids, none
//! executes, and the clients' own requests all commit.

use pbft_sim::*;

fn with_reuse_id(seed: u64, from_ms: u64) -> SimConfig {
    let mut cfg = SimConfig {
        seed,
        strangers: vec![StrangerSpec {
            kind: StrangerKind::ReuseId,
            from_ms,
            until_ms: u64::MAX,
        }],
        ..SimConfig::default()
    };
    cfg.workload.clients = 3;
    cfg.workload.requests = 30;
    cfg.workload.think_ms = 20;
    cfg.network.drop_rate = 0.02;
    cfg
}

#[test]
fn reused_ids_are_refused_and_never_executed() {
    for seed in 1..=5 {
        let r = run(with_reuse_id(seed, 0));
        let s = &r.strangers[0];
        let why = format!("seed {seed}: {s:?}\n{}", r.summary());
        assert!(
            r.safe() && r.all_committed && r.honest_heads_equal(),
            "{why}"
        );
        assert!(s.distinct_ids > 0 && s.distinct_ids <= s.sent, "{why}");
        assert!(
            s.in_flight > 0,
            "no id reused while its client waited: {why}"
        );
        assert!(s.refused_by_quorum > 0 && s.reused_id_answers > 0, "{why}");
        assert_eq!((s.other_answers, s.executed.len()), (0, 0), "{why}");
    }
}

#[test]
fn a_run_with_a_stranger_is_repeatable() {
    let a = run(with_reuse_id(9, 0));
    let b = run(with_reuse_id(9, 0));
    assert_eq!(a.trace_digest, b.trace_digest);
    assert_eq!(a.strangers, b.strangers);
    // a stranger whose window opens after the run is over does nothing
    let late = run(with_reuse_id(9, 60_000));
    assert_eq!(late.strangers[0].sent, 0);
}
