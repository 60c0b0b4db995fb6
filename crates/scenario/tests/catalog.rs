//! The shipped catalog (`scenarios/*.toml`) in sim mode: every scenario passes over 20
//! seeds (those with strangers that act on connections are cluster only, and sim mode
//! must refuse them), `beyond-f` is reported as a violation, every behaviour is used,
//! and a report is byte-identical for the same file and seed.
//!
//! A failing run prints its seed and the command that reruns it. A longer sweep outside
//! CI: `PBFT_SCENARIO_SEEDS=1..500 cargo test -p pbft-scenario --test catalog`
//! (inclusive range), optionally with `PBFT_SCENARIO=<name>` to run one scenario only.

use pbft_scenario::{load, run_scenario, Scenario, ScenarioReport, SimRunner};
use pbft_traitor::Behavior;
use std::collections::BTreeSet;
use std::path::PathBuf;

/// The catalog of docs/scenarios.md ("The catalog"), in its order.
const CATALOG: [&str; 34] = [
    "baseline",
    "backup-crash",
    "primary-crash",
    "silent-primary",
    "equivocating-primary",
    "bad-digest",
    "forged-request",
    "out-of-window",
    "double-voting-backup",
    "replay",
    "checkpoint-liar",
    "forged-view-change",
    "bad-new-view",
    "slow-primary",
    "flood",
    "wiped-replica-catches-up",
    "state-spam",
    "partition-heal",
    "crash-mid-checkpoint",
    "bad-clients",
    "seven-validators-two-traitors",
    "frame",
    "status-spam",
    "large-view-change",
    "censor",
    "inject",
    "exploit-wipe",
    "beyond-f",
    "hog-connections",
    "slow-frame",
    "query-flood",
    "bad-signatures",
    "reuse-id",
    "hijack-replies",
];

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scenarios")
}

fn scenario(name: &str) -> Scenario {
    let path = dir().join(format!("{name}.toml"));
    load(&path).unwrap_or_else(|e| panic!("{e}"))
}

fn seeds() -> Vec<u64> {
    if let Some((a, b)) = std::env::var("PBFT_SCENARIO_SEEDS").ok().and_then(|r| {
        let (a, b) = r.split_once("..")?;
        Some((a.trim().parse::<u64>().ok()?, b.trim().parse::<u64>().ok()?))
    }) {
        (a..=b).collect()
    } else {
        (1..=20).collect()
    }
}

fn selected(name: &str) -> bool {
    std::env::var("PBFT_SCENARIO").map_or(true, |s| s == name)
}

fn run(sc: &Scenario, seed: u64) -> ScenarioReport {
    run_scenario(&SimRunner, sc, seed).unwrap_or_else(|e| panic!("{}: {e}", sc.name))
}

/// Runs `name` over the seeds; every expectation must pass.
fn sweep(name: &str) {
    if !selected(name) {
        return;
    }
    let sc = scenario(name);
    if sc.unsimulated_stranger().is_some() {
        // cluster only (tests/cluster.rs): sim mode must refuse it, not pass it
        let r = run_scenario(&SimRunner, &sc, 1);
        assert!(
            matches!(r, Err(pbft_scenario::RunError::Unsupported { .. })),
            "{name}: a scenario with strangers must be refused in sim mode, got {r:?}"
        );
        return;
    }
    let mut failures = Vec::new();
    for seed in seeds() {
        let r = run(&sc, seed);
        let failed: Vec<_> = r.expectations.iter().filter(|e| !e.passed).collect();
        if !failed.is_empty() {
            failures.push(format!(
                "{name} seed {seed} failed (rerun: pbft scenario run scenarios/{name}.toml --seed {seed})\n{}",
                r.render_text()
            ));
        }
        if sc.expect.violation {
            // never pass silently beyond the fault model
            assert!(
                r.violation_detected(),
                "{name} seed {seed}: beyond the fault model and no violation detected\n{}",
                r.render_text()
            );
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} seeds failed:\n{}",
        failures.len(),
        seeds().len(),
        failures.join("\n")
    );
}

macro_rules! catalog_tests {
    ($($test:ident => $name:literal),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                sweep($name);
            }
        )*
    };
}

catalog_tests! {
    baseline => "baseline",
    backup_crash => "backup-crash",
    primary_crash => "primary-crash",
    silent_primary => "silent-primary",
    equivocating_primary => "equivocating-primary",
    bad_digest => "bad-digest",
    forged_request => "forged-request",
    out_of_window => "out-of-window",
    double_voting_backup => "double-voting-backup",
    replay => "replay",
    checkpoint_liar => "checkpoint-liar",
    forged_view_change => "forged-view-change",
    bad_new_view => "bad-new-view",
    slow_primary => "slow-primary",
    flood => "flood",
    wiped_replica_catches_up => "wiped-replica-catches-up",
    state_spam => "state-spam",
    partition_heal => "partition-heal",
    crash_mid_checkpoint => "crash-mid-checkpoint",
    bad_clients => "bad-clients",
    seven_validators_two_traitors => "seven-validators-two-traitors",
    frame => "frame",
    status_spam => "status-spam",
    censor => "censor",
    inject => "inject",
    exploit_wipe => "exploit-wipe",
    beyond_f => "beyond-f",
    large_view_change => "large-view-change",
    hog_connections => "hog-connections",
    slow_frame => "slow-frame",
    query_flood => "query-flood",
    bad_signatures => "bad-signatures",
    reuse_id => "reuse-id",
    hijack_replies => "hijack-replies",
}

#[test]
fn beyond_f_is_reported_as_a_violation() {
    let sc = scenario("beyond-f");
    let r = run(&sc, 1);
    assert!(r.violation_detected(), "{}", r.render_text());
    assert!(r.passed, "{}", r.render_text());
    let text = r.render_text();
    assert!(text.contains("VIOLATION"), "{text}");
    assert!(text.contains("PASS violation"), "{text}");
}

#[test]
fn the_catalog_is_complete_and_named_after_its_files() {
    let mut files: Vec<String> = pbft_scenario::list_dir(&dir())
        .unwrap()
        .iter()
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    files.sort();
    let mut want: Vec<String> = CATALOG.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(files, want);
    for name in CATALOG {
        let sc = scenario(name);
        assert_eq!(sc.name, name);
        assert!(
            sc.description.len() > 80,
            "{name}: the description must say what it attacks and why it holds"
        );
    }
}

#[test]
fn every_behaviour_is_used_by_the_catalog() {
    let used: BTreeSet<Behavior> = CATALOG
        .iter()
        .flat_map(|n| scenario(n).traitors.into_iter().map(|t| t.behavior))
        .collect();
    let missing: Vec<&str> = Behavior::ALL
        .iter()
        .filter(|b| !used.contains(b))
        .map(|b| b.name())
        .collect();
    assert!(
        missing.is_empty(),
        "behaviours no scenario uses: {missing:?}"
    );
}

#[test]
fn same_file_and_seed_give_byte_identical_reports() {
    for name in [
        "equivocating-primary",
        "partition-heal",
        "crash-mid-checkpoint",
        "flood",
    ] {
        let sc = scenario(name);
        let a = run(&sc, 7);
        let b = run(&sc, 7);
        assert_eq!(a.render_text(), b.render_text(), "{name}");
        assert_eq!(a.render_json(), b.render_json(), "{name}");
        let c = run(&sc, 8);
        assert_ne!(
            a.measured.trace, c.measured.trace,
            "{name}: another seed must give another run"
        );
    }
}

/// The crash-mid-checkpoint script on RocksDB (one seed: opening databases is slow).
#[test]
fn crash_mid_checkpoint_on_rocksdb() {
    let mut sc = scenario("crash-mid-checkpoint");
    sc.cluster.storage = pbft_scenario::model::StorageKind::RocksDb;
    let r = run(&sc, 3);
    assert!(r.passed, "{}", r.render_text());
    assert_eq!(r.validators[2].crashes, 1, "{}", r.render_text());
}
