//! Crashes, restarts, partitions and lossy networks, within the fault model.

use pbft_executor::RecordLog;
use pbft_sim::*;

fn cfg(seed: u64) -> SimConfig {
    SimConfig {
        seed,
        ..SimConfig::default()
    }
}

fn check(r: &Report) {
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
        "seed {}: heads differ\n{}",
        r.seed,
        r.summary()
    );
}

#[test]
fn baseline_commits_everything_in_view_0() {
    let r = run(cfg(1));
    check(&r);
    assert_eq!(r.max_honest_view(), 0);
    assert!(r.replicas.iter().all(|x| x.stable_checkpoint > 0));
}

#[test]
fn primary_crash_changes_view() {
    let mut c = cfg(2);
    c.faults.push(Fault {
        at_ms: 50,
        action: FaultAction::Crash(0),
    });
    let r = run(c);
    println!("{}", r.summary());
    check(&r);
    assert!(r.min_honest_view() >= 1);
}

#[test]
fn backup_crash_keeps_view_0() {
    let mut c = cfg(3);
    c.faults.push(Fault {
        at_ms: 20,
        action: FaultAction::Crash(2),
    });
    let r = run(c);
    check(&r);
    assert_eq!(r.max_honest_view(), 0);
}

#[test]
fn partition_2_2_then_heal() {
    let mut c = cfg(4);
    c.workload.requests = 200;
    c.faults.push(Fault {
        at_ms: 30,
        action: FaultAction::Partition(vec![vec![0, 1], vec![2, 3]]),
    });
    c.faults.push(Fault {
        at_ms: 2_000,
        action: FaultAction::Heal,
    });
    let r = run(c);
    println!("{}", r.summary());
    check(&r);
}

#[test]
fn restart_keeps_disk() {
    let mut c = cfg(5);
    c.workload.requests = 300;
    c.faults.push(Fault {
        at_ms: 40,
        action: FaultAction::Crash(3),
    });
    c.faults.push(Fault {
        at_ms: 600,
        action: FaultAction::Restart {
            node: 3,
            wipe: false,
        },
    });
    let r = run(c);
    println!("{}", r.summary());
    check(&r);
}

#[test]
fn wiped_replica_catches_up_by_state_transfer() {
    let mut c = cfg(6);
    c.workload.requests = 300;
    c.faults.push(Fault {
        at_ms: 40,
        action: FaultAction::Crash(3),
    });
    c.faults.push(Fault {
        at_ms: 600,
        action: FaultAction::Restart {
            node: 3,
            wipe: true,
        },
    });
    let r = run(c);
    println!("{}", r.summary());
    check(&r);
}

#[test]
fn lossy_network() {
    let mut c = cfg(7);
    c.network.drop_rate = 0.05;
    c.network.duplicate_rate = 0.05;
    c.network.max_delay_ms = 30;
    let r = run(c);
    println!("{}", r.summary());
    check(&r);
}

#[test]
fn same_seed_same_run() {
    let mut c = cfg(8);
    c.network.drop_rate = 0.02;
    c.faults.push(Fault {
        at_ms: 50,
        action: FaultAction::Crash(0),
    });
    let a = run(c.clone());
    let b = run(c.clone());
    assert_eq!(a.trace_digest, b.trace_digest);
    assert_eq!(a.stats.events, b.stats.events);
    assert_eq!(a.replicas, b.replicas);
    c.seed = 9;
    let d = run(c);
    assert_ne!(
        a.trace_digest, d.trace_digest,
        "a different seed must give a different run"
    );
}

/// The primary of view 1 crashes around its new view and restarts on the same disk,
/// at many different moments: it must never contradict what it sent before (an honest
/// validator accused by evidence fails `safe()`). The exact window between a new view
/// and the first fresh proposal is tested precisely in `crates/protocol/tests/restore.rs`.
#[test]
fn restarted_new_primary_does_not_contradict_itself() {
    for (i, t) in (400..1_400).step_by(20).enumerate() {
        let mut c = cfg(30 + i as u64);
        c.workload.requests = 200;
        c.workload.concurrency = 8;
        c.faults.push(Fault {
            at_ms: 40,
            action: FaultAction::Crash(0),
        });
        c.faults.push(Fault {
            at_ms: t,
            action: FaultAction::Crash(1),
        });
        c.faults.push(Fault {
            at_ms: t + 5,
            action: FaultAction::Restart {
                node: 1,
                wipe: false,
            },
        });
        c.faults.push(Fault {
            at_ms: t + 2_000,
            action: FaultAction::Restart {
                node: 0,
                wipe: false,
            },
        });
        let r = run(c);
        check(&r);
    }
}

/// The same cluster with RocksDB ledgers and consensus logs in temporary directories:
/// a crash drops the database handles, a restart reopens them (one restart on a wiped
/// disk catches up by state transfer into a fresh RocksDB ledger).
#[test]
fn rocksdb_storage_survives_crashes_and_restarts() {
    let mut c = cfg(41);
    c.storage = Storage::RocksDb;
    c.workload.requests = 200;
    c.workload.think_ms = 60; // load runs through every fault
    c.faults.push(Fault {
        at_ms: 40,
        action: FaultAction::Crash(3),
    });
    c.faults.push(Fault {
        at_ms: 500,
        action: FaultAction::Restart {
            node: 3,
            wipe: false,
        },
    });
    c.faults.push(Fault {
        at_ms: 900,
        action: FaultAction::Crash(0),
    });
    c.faults.push(Fault {
        at_ms: 1_700,
        action: FaultAction::Restart {
            node: 0,
            wipe: false,
        },
    });
    c.faults.push(Fault {
        at_ms: 2_000,
        action: FaultAction::Crash(2),
    });
    c.faults.push(Fault {
        at_ms: 2_600,
        action: FaultAction::Restart {
            node: 2,
            wipe: true,
        },
    });
    let r = run(c.clone());
    println!("{}", r.summary());
    check(&r);
    assert!(
        r.min_honest_view() >= 1,
        "the primary's crash forced a view change"
    );
    // the same run on in-memory storage reaches the same ledger: storage does not
    // change what is executed
    c.storage = Storage::Memory;
    let m = run(c);
    check(&m);
    assert_eq!(
        r.trace_digest, m.trace_digest,
        "RocksDB and memory runs are the same run"
    );
}

/// The consensus log on RocksDB, compacted at every stable checkpoint the way the node
/// and the simulator do it (records tagged with `WalRecord::obsolete_at`): after five
/// stable checkpoints it holds only the latest stable-checkpoint proof (decision 0046),
/// and a replica restored from it starts from that checkpoint.
#[test]
fn the_compacted_consensus_log_keeps_only_the_latest_stable_checkpoint_proof() {
    use pbft_protocol::{Checkpoint, ClientRecords, Config, Instant, Replica, Signed, WalRecord};
    let keys: Vec<pbft_crypto::Keypair> = (1..=4u8)
        .map(|i| pbft_crypto::Keypair::from_seed(&[i; 32]).expect("seed"))
        .collect();
    let cfg = Config::new(keys.iter().map(|k| k.public()).collect());
    let k = cfg.checkpoint_interval;
    let checkpoint = |seq: u64, replica: u32| {
        let body = Checkpoint {
            seq,
            state_digest: pbft_crypto::Digest::of(&seq.to_le_bytes()),
            replica,
        };
        Signed::sign(body, &keys[replica as usize])
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = pbft_executor::ConsensusLog::open(dir.path(), false).expect("open log");
    let tagged = |rec: WalRecord| {
        (
            rec.obsolete_at(),
            postcard::to_allocvec(&rec).expect("encode"),
        )
    };
    log.append(&[tagged(WalRecord::View {
        view: 0,
        changing: false,
    })])
    .expect("append");
    for i in 1..=5 {
        let s = i * k;
        log.append(&[
            tagged(WalRecord::Checkpoint(checkpoint(s, 1))),
            tagged(WalRecord::StableCheckpoint(
                (0..3).map(|r| checkpoint(s, r)).collect(),
            )),
        ])
        .expect("append");
        log.compact(s).expect("compact");
    }
    drop(log);
    let log = pbft_executor::ConsensusLog::open(dir.path(), false).expect("reopen log");
    let records: Vec<WalRecord> = log
        .load()
        .expect("load")
        .iter()
        .map(|(_, bytes)| postcard::from_bytes(bytes).expect("decode"))
        .collect();
    assert_eq!(records.len(), 2, "{records:?}");
    assert!(
        matches!(records[0], WalRecord::View { view: 0, .. }),
        "{records:?}"
    );
    assert!(
        matches!(&records[1], WalRecord::StableCheckpoint(p) if p[0].body.seq == 5 * k),
        "{records:?}"
    );
    // the log holds only checkpoints: no client executed anything
    let r = Replica::restore(
        cfg,
        1,
        keys[1].clone(),
        &records,
        5 * k,
        ClientRecords::Complete(Vec::new()),
        Instant::ZERO,
    )
    .expect("restore");
    assert_eq!(r.stable_checkpoint(), 5 * k);
}

/// Backups 1 and 2 restart (one after the other; backup 2's disk kept, or wiped so
/// that it installs a snapshot) while clients replay old accepted requests to every
/// validator and a traitor (`inject`) replays requests it saw in batches to the
/// backups. The restarted backups know from their ledgers which of those executed, so
/// none is watched or timed and the honest primary keeps its view.
#[test]
fn restarted_backups_do_not_blame_the_primary_for_replayed_requests() {
    for (seed, wipe) in [(31, false), (32, true), (33, false), (34, true)] {
        let mut c = cfg(seed);
        c.workload.requests = 300;
        c.workload.replays = 60;
        c.traitors.push(TraitorSpec {
            node: 3,
            behavior: pbft_traitor::Behavior::Inject,
            from_ms: 0,
            until_ms: u64::MAX,
        });
        for (node, down, up, wipe) in [(1, 40, 300, false), (2, 500, 800, wipe)] {
            c.faults.push(Fault {
                at_ms: down,
                action: FaultAction::Crash(node),
            });
            c.faults.push(Fault {
                at_ms: up,
                action: FaultAction::Restart { node, wipe },
            });
        }
        let r = run(c);
        check(&r);
        assert_eq!(
            r.max_honest_view(),
            0,
            "seed {seed} (wipe {wipe}): the honest primary was replaced\n{}",
            r.summary()
        );
        assert!(r.falsely_accused().is_empty(), "{}", r.summary());
        if wipe {
            assert!(
                r.stats.largest_snapshot_bytes > 0,
                "seed {seed}: the wiped backup installed a snapshot\n{}",
                r.summary()
            );
        }
    }
}
