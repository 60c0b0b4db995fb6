//! One simulation per traitor behaviour, n = 4, with the traitor in the role that hurts
//! most; n = 7 with two different traitors; and the negative control beyond f.

use pbft_sim::*;
use pbft_traitor::Behavior;

fn with_traitor(seed: u64, node: u32, behavior: Behavior) -> SimConfig {
    SimConfig {
        seed,
        traitors: vec![TraitorSpec {
            node,
            behavior,
            from_ms: 0,
            until_ms: u64::MAX,
        }],
        ..SimConfig::default()
    }
}

/// Agreement, every valid request committed, honest ledgers equal.
fn assert_correct(r: &Report) {
    assert!(
        r.safe(),
        "seed {}: invariant broken\n{}",
        r.seed,
        r.summary()
    );
    assert!(
        r.all_committed,
        "seed {}: not all committed\n{}",
        r.seed,
        r.summary()
    );
    assert!(
        r.honest_heads_equal(),
        "seed {}: honest heads differ\n{}",
        r.seed,
        r.summary()
    );
}

fn assert_view_changed(r: &Report) {
    assert!(
        r.min_honest_view() >= 1,
        "seed {}: expected a view change\n{}",
        r.seed,
        r.summary()
    );
}

fn assert_evidence(r: &Report, id: u32) {
    assert!(
        r.evidence_held_against(id),
        "seed {}: no evidence against {id}\n{}",
        r.seed,
        r.summary()
    );
}

#[test]
fn silent_primary_is_replaced() {
    let r = run(with_traitor(11, 0, Behavior::Silent));
    assert_correct(&r);
    assert_view_changed(&r);
}

#[test]
fn silent_backup_does_not_stop_progress() {
    let r = run(with_traitor(12, 2, Behavior::Silent));
    assert_correct(&r);
    assert_eq!(r.max_honest_view(), 0, "{}", r.summary());
}

#[test]
fn equivocating_primary_is_caught() {
    let r = run(with_traitor(13, 0, Behavior::Equivocate));
    assert_correct(&r);
    assert_view_changed(&r);
    assert_evidence(&r, 0);
}

/// The two proposals must meet somewhere, however the network orders messages: votes
/// that overtake the pre-prepare, a view change before any relay arrives. Wide delay
/// spreads and lost messages over many seeds; every honest replica must end up holding
/// the proof against the primary.
#[test]
fn equivocation_is_caught_however_the_network_orders_messages() {
    for seed in 1..=40 {
        let mut c = with_traitor(seed, 0, Behavior::Equivocate);
        c.network.min_delay_ms = 1;
        c.network.max_delay_ms = [10, 60, 150, 300][(seed % 4) as usize];
        c.network.drop_rate = if seed % 3 == 0 { 0.02 } else { 0.0 };
        let r = run(c);
        assert_correct(&r);
        assert_evidence(&r, 0);
    }
}

#[test]
fn bad_digest_primary_is_replaced() {
    // a batch that does not match its signed digest is dropped, not proof: the
    // request timer replaces the primary
    let r = run(with_traitor(14, 0, Behavior::BadDigest));
    assert_correct(&r);
    assert_view_changed(&r);
}

#[test]
fn forged_request_never_executes() {
    let r = run(with_traitor(15, 0, Behavior::ForgeRequest));
    assert_correct(&r);
    assert_view_changed(&r);
    assert_evidence(&r, 0);
}

#[test]
fn double_voting_backup_is_caught() {
    let r = run(with_traitor(16, 1, Behavior::DoubleVote));
    assert_correct(&r);
    assert_evidence(&r, 1);
}

#[test]
fn out_of_window_primary_is_replaced() {
    let r = run(with_traitor(17, 0, Behavior::OutOfWindow));
    assert_correct(&r);
    assert_view_changed(&r);
}

#[test]
fn replaying_primary_causes_no_duplicates() {
    let mut c = with_traitor(18, 0, Behavior::Replay);
    c.workload.requests = 200;
    let r = run(c);
    assert_correct(&r);
}

#[test]
fn checkpoint_liar_does_not_stop_checkpoints() {
    let mut c = with_traitor(19, 1, Behavior::CheckpointLie);
    c.workload.requests = 200;
    let r = run(c);
    assert_correct(&r);
    for x in r.replicas.iter().filter(|x| x.traitor.is_none()) {
        assert!(x.stable_checkpoint >= 16, "{}", r.summary());
    }
    assert_evidence(&r, 1);
}

#[test]
fn forged_view_change_is_rejected() {
    // the primary is cut off for a while, so a view change happens with the forger in it
    let mut c = with_traitor(20, 1, Behavior::ForgeViewChange);
    c.faults.push(Fault {
        at_ms: 30,
        action: FaultAction::Isolate(0),
    });
    c.faults.push(Fault {
        at_ms: 3_000,
        action: FaultAction::Heal,
    });
    let r = run(c);
    assert_correct(&r);
    assert_view_changed(&r);
}

#[test]
fn bad_new_view_is_rejected_and_the_next_view_starts() {
    // primary 0 crashes; the next primary (1) sends a bad new view
    let mut c = with_traitor(21, 1, Behavior::BadNewView);
    c.faults.push(Fault {
        at_ms: 30,
        action: FaultAction::Crash(0),
    });
    c.faults.push(Fault {
        at_ms: 5_000,
        action: FaultAction::Restart {
            node: 0,
            wipe: false,
        },
    });
    let r = run(c);
    assert_correct(&r);
    assert!(r.min_honest_view() >= 2, "{}", r.summary());
    // validators 2 and 3 were up when the bad new view came; 0 was down until 5 s
    for v in [2, 3] {
        assert!(
            r.replicas[v].evidence_against.contains(&1),
            "{}",
            r.summary()
        );
    }
}

#[test]
fn slow_primary_keeps_committing() {
    let r = run(with_traitor(22, 0, Behavior::SlowPrimary));
    assert_correct(&r);
}

#[test]
fn impersonation_is_rejected() {
    let r = run(with_traitor(23, 1, Behavior::Impersonate));
    assert_correct(&r);
    let rejected: u64 = r.stats.rejected.values().sum();
    assert!(
        rejected > 0,
        "impersonated messages must be rejected: {:?}",
        r.stats.rejected
    );
}

#[test]
fn flood_is_rejected_and_progress_continues() {
    let r = run(with_traitor(24, 1, Behavior::Flood));
    assert_correct(&r);
    let rejected: u64 = r.stats.rejected.values().sum();
    assert!(rejected > 100, "{:?}", r.stats.rejected);
}

#[test]
fn poisoned_state_is_refused_and_the_wiped_replica_catches_up() {
    let mut c = with_traitor(25, 1, Behavior::PoisonState);
    c.workload.requests = 300;
    c.faults.push(Fault {
        at_ms: 30,
        action: FaultAction::Crash(3),
    });
    c.faults.push(Fault {
        at_ms: 800,
        action: FaultAction::Restart {
            node: 3,
            wipe: true,
        },
    });
    let r = run(c);
    assert_correct(&r);
    assert!(r.replicas[3].last_executed > 0);
}

#[test]
fn censoring_primary_is_replaced_and_the_censored_client_commits() {
    let r = run(with_traitor(26, 0, Behavior::Censor));
    assert_correct(&r);
    assert_view_changed(&r);
    assert!(r.falsely_accused().is_empty(), "{}", r.summary());
}

#[test]
fn requests_injected_to_the_backups_do_not_replace_an_honest_primary() {
    let r = run(with_traitor(27, 3, Behavior::Inject));
    assert_correct(&r);
    assert_eq!(r.max_honest_view(), 0, "{}", r.summary());
    // the made-up keys were refused by the verifier
    assert!(
        r.stats.rejected.get("unknown_client").copied().unwrap_or(0) > 0,
        "{:?}",
        r.stats.rejected
    );
}

#[test]
fn seven_validators_two_traitors() {
    let mut c = with_traitor(26, 0, Behavior::Equivocate);
    c.validators = 7;
    c.traitors.push(TraitorSpec {
        node: 3,
        behavior: Behavior::DoubleVote,
        from_ms: 0,
        until_ms: u64::MAX,
    });
    let r = run(c);
    assert_correct(&r);
    assert_view_changed(&r);
    assert_evidence(&r, 3);
}

/// Negative control: two colluding equivocators in n = 4 is beyond f = 1. The checker
/// must detect the broken agreement (or an honest replica must halt). If this passes
/// silently, the checker is broken.
#[test]
fn beyond_f_is_detected() {
    for seed in 1..=20 {
        let mut c = with_traitor(seed, 0, Behavior::Equivocate);
        c.traitors.push(TraitorSpec {
            node: 1,
            behavior: Behavior::Equivocate,
            from_ms: 0,
            until_ms: u64::MAX,
        });
        // Fixed delays: the colluders' commit quorum forms in two hops, before the
        // honest replicas' relayed pre-prepares (three hops) expose the equivocation.
        c.network.min_delay_ms = 5;
        c.network.max_delay_ms = 5;
        c.deadline_ms = 3_000;
        let r = run(c);
        if seed == 1 {
            println!("{}", r.summary());
        }
        assert!(
            r.violation_detected(),
            "seed {seed}: two equivocating traitors in n = 4 went undetected\n{}",
            r.summary()
        );
    }
}
