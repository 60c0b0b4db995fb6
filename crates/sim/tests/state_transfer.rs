//! State transfer against a peer that sends unsolicited and conflicting snapshot
//! chunks while a multi-chunk transfer is in progress: the transfer completes and the
//! memory it takes stays bounded by one snapshot.

use pbft_sim::*;
use pbft_traitor::Behavior;

/// Validator 3 crashes and restarts on a wiped disk, so it must fetch a snapshot in
/// many small chunks; validator `spammer` sends every peer unsolicited 16 KiB chunks of
/// its latest checkpoint, each announcing a different chunk count.
fn spam_during_transfer(seed: u64, spammer: u32) -> SimConfig {
    SimConfig {
        seed,
        checkpoint_interval: 8,
        snapshot_chunk_bytes: 32,
        workload: Workload {
            requests: 240,
            ..Workload::default()
        },
        traitors: vec![TraitorSpec {
            node: spammer,
            behavior: Behavior::StateSpam,
            from_ms: 0,
            until_ms: u64::MAX,
        }],
        faults: vec![
            Fault {
                at_ms: 30,
                action: FaultAction::Crash(3),
            },
            Fault {
                at_ms: 1500,
                action: FaultAction::Restart {
                    node: 3,
                    wipe: true,
                },
            },
        ],
        ..SimConfig::default()
    }
}

#[test]
fn a_transfer_completes_while_a_traitor_spams_conflicting_chunks() {
    for (seed, spammer) in [(1, 1), (2, 0), (3, 2), (4, 1), (5, 0)] {
        let r = pbft_sim::run(spam_during_transfer(seed, spammer));
        let ctx = format!("seed {seed}, spammer {spammer}\n{}", r.summary());
        assert!(r.safe(), "invariant broken: {ctx}");
        assert!(r.all_committed, "not all committed: {ctx}");
        assert!(r.honest_heads_equal(), "honest heads differ: {ctx}");
        let wiped = &r.replicas[3];
        assert!(wiped.wiped && wiped.halted.is_none(), "{ctx}");
        let snapshot = r.stats.largest_snapshot_bytes;
        assert!(
            snapshot >= 8 * 32,
            "the wiped replica installed a snapshot of many chunks ({snapshot} bytes): {ctx}"
        );
        // Chunks go to the ledger as they arrive: the hosts hold bookkeeping per
        // chunk (a flag, the chunk's first and last key), never more than one snapshot
        // and one of the spammer's 16 KiB chunks.
        let bound = snapshot + (16 << 10);
        assert!(
            r.stats.peak_snapshot_buffer_bytes <= bound,
            "snapshot buffer peaked at {} bytes, over {bound}: {ctx}",
            r.stats.peak_snapshot_buffer_bytes
        );
        let refused = r
            .stats
            .rejected
            .get("unsolicited snapshot chunk")
            .copied()
            .unwrap_or(0);
        assert!(refused > 0, "the traitor spammed chunks: {ctx}");
    }
}
