//! Sim mode: a scenario and a seed become a [`pbft_sim::SimConfig`]; the simulator's
//! report becomes a [`ScenarioReport`].

use crate::error::RunError;
use crate::model::{FaultKind, Scenario, StorageKind, StrangerBehavior};
use crate::report::{Measured, Mode, ProbeRow, ScenarioReport, StrangerRow, ValidatorRow};
use crate::runner::Runner;
use pbft_sim::{
    Fault, FaultAction, NetworkConfig, SimConfig, Storage, StrangerKind, StrangerReport,
    StrangerSpec, TraitorSpec, Workload,
};

/// Estimated bytes one client request occupies in a validator (signed request, key,
/// operation and bookkeeping), for the memory figure.
pub const REQUEST_BYTES: u64 = 256;
/// Estimated bytes of one signed vote (prepare or commit) in a validator's log.
pub const VOTE_BYTES: u64 = 160;

/// The deterministic simulator as a [`Runner`].
#[derive(Clone, Copy, Debug, Default)]
pub struct SimRunner;

impl Runner for SimRunner {
    fn mode(&self) -> Mode {
        Mode::Sim
    }

    fn observe(&self, scenario: &Scenario, seed: u64) -> Result<ScenarioReport, RunError> {
        if let Some(s) = scenario.unsimulated_stranger() {
            // the simulator delivers requests, not connections: a stranger that works
            // on connections would do nothing here, and the run would pass for nothing
            return Err(RunError::Unsupported {
                mode: "sim",
                reason: format!(
                    "[[stranger]] behavior = {:?} acts on client connections, which the simulator does not model; run it with --mode cluster",
                    s.behavior.name()
                ),
            });
        }
        let cfg = sim_config(scenario, seed);
        let r = pbft_sim::run(cfg);
        Ok(to_report(scenario, &r))
    }
}

/// The simulator configuration of `scenario` with `seed`.
pub fn sim_config(sc: &Scenario, seed: u64) -> SimConfig {
    let c = &sc.cluster;
    let w = &sc.workload;
    SimConfig {
        validators: c.validators,
        checkpoint_interval: c.checkpoint_interval,
        batch_size: c.batch_size,
        view_timeout_ms: c.view_timeout_ms,
        network: NetworkConfig {
            min_delay_ms: sc.network.min_delay_ms,
            max_delay_ms: sc.network.max_delay_ms,
            drop_rate: sc.network.drop_rate,
            duplicate_rate: sc.network.duplicate_rate,
        },
        workload: Workload {
            clients: w.clients,
            requests: w.requests,
            invalid_signatures: w.invalid_signatures,
            replays: w.replays,
            overdrafts: w.overdrafts,
            concurrency: w.concurrency,
            balance: w.balance,
            think_ms: w.think_ms,
            op_bytes: w.op_bytes,
        },
        traitors: sc
            .traitors
            .iter()
            .map(|t| TraitorSpec {
                node: t.node,
                behavior: t.behavior,
                from_ms: t.from_ms,
                until_ms: t.until_ms.unwrap_or(u64::MAX),
            })
            .collect(),
        faults: sc
            .faults
            .iter()
            .map(|f| Fault {
                at_ms: f.at_ms,
                action: match &f.action {
                    FaultKind::Crash {
                        node,
                        mid_checkpoint: false,
                    } => FaultAction::Crash(*node),
                    FaultKind::Crash {
                        node,
                        mid_checkpoint: true,
                    } => FaultAction::CrashMidCheckpoint(*node),
                    FaultKind::Restart { node, wipe } => FaultAction::Restart {
                        node: *node,
                        wipe: *wipe,
                    },
                    FaultKind::Partition { groups } => FaultAction::Partition(groups.clone()),
                    FaultKind::Isolate { node } => FaultAction::Isolate(*node),
                    FaultKind::Heal => FaultAction::Heal,
                },
            })
            .collect(),
        // one simulated stranger per `count`; those sim mode does not play are refused
        // before (`SimRunner::observe`)
        strangers: sc
            .strangers
            .iter()
            .filter(|s| s.behavior == StrangerBehavior::ReuseId)
            .flat_map(|s| {
                (0..s.count).map(|_| StrangerSpec {
                    kind: StrangerKind::ReuseId,
                    from_ms: s.from_ms,
                    until_ms: s.until_ms.unwrap_or(u64::MAX),
                })
            })
            .collect(),
        deadline_ms: sc.expect.deadline_ms,
        seed,
        verify_signatures: true,
        stop_when_done: true,
        storage: match c.storage {
            StorageKind::Memory => Storage::Memory,
            StorageKind::RocksDb => Storage::RocksDb,
        },
        probes_ms: sc.probe_times(),
        ..SimConfig::default()
    }
}

/// The scenario report of a simulator run (without verdicts).
pub fn to_report(sc: &Scenario, r: &pbft_sim::Report) -> ScenarioReport {
    let validators: Vec<ValidatorRow> = r
        .replicas
        .iter()
        .map(|x| {
            let traitor = x.traitor.map(|b| b.name().to_string());
            ValidatorRow {
                id: x.id,
                role: ValidatorRow::role_for(traitor.as_deref(), x.crashed, x.crashes, x.wiped),
                traitor,
                crashed: x.crashed,
                crashes: x.crashes,
                wiped: x.wiped,
                view: x.view,
                last_executed: x.last_executed,
                stable_checkpoint: x.stable_checkpoint,
                head: x.head.to_string(),
                evidence_against: x.evidence_against.clone(),
                halted: x.halted.clone(),
            }
        })
        .collect();
    let mut violations: Vec<String> = r.violations.iter().map(|v| v.to_string()).collect();
    for a in r.falsely_accused() {
        violations.push(format!(
            "honest validator {a} is accused by signed evidence"
        ));
    }
    for (id, why) in &r.halts {
        if r.replicas
            .get(*id as usize)
            .is_some_and(|x| x.traitor.is_none())
        {
            violations.push(format!("honest validator {id} halted: {why}"));
        }
    }
    let strangers: Vec<StrangerRow> = r
        .strangers
        .iter()
        .map(|x| stranger_row(x, r.f, r.stats.other_request_replies))
        .collect();
    for x in &r.strangers {
        violations.extend(x.executed.iter().cloned());
    }
    let t_ms = r.all_committed_ms.unwrap_or(r.end_ms).max(1);
    let throughput = r.accepted as f64 * 1000.0 / t_ms as f64;
    let ms = |us: Option<u64>| us.map(|u| u as f64 / 1000.0);
    let s = &r.stats;
    let per_slot = sc.cluster.batch_size as u64 * REQUEST_BYTES
        + 2 * sc.cluster.validators as u64 * VOTE_BYTES;
    let memory = s.peak_log_slots * per_slot
        + s.peak_waiting_requests * REQUEST_BYTES
        + s.peak_snapshot_buffer_bytes;
    ScenarioReport {
        scenario: sc.name.clone(),
        mode: Mode::Sim,
        seed: r.seed,
        n: r.replicas.len(),
        f: r.f,
        validators,
        measured: Measured {
            valid_requests: r.valid_requests as u64,
            committed: r.accepted as u64,
            all_committed_ms: r.all_committed_ms,
            end_ms: r.end_ms,
            throughput_rps: (throughput * 10.0).round() / 10.0,
            baseline_throughput_rps: None,
            latency_p50_ms: ms(r.latency_percentile(50)),
            latency_p99_ms: ms(r.latency_percentile(99)),
            messages: s.messages,
            dropped: s.dropped,
            rejected: s.rejected.values().sum(),
            peak_memory_kb: Some(memory.div_ceil(1024)),
            peak_rss_kb: None,
            trace: Some(r.trace_digest.to_string()),
        },
        probes: r
            .probes
            .iter()
            .map(|p| ProbeRow {
                at_ms: p.at_ms,
                min_view: p.min_view,
                max_view: p.max_view,
                min_executed: p.min_executed,
                max_executed: p.max_executed,
            })
            .collect(),
        violations,
        strangers,
        expectations: Vec::new(),
        passed: false,
    }
}

/// The row of a simulated stranger: what it did, and what it must have done and not
/// got.
/// `ignored`: the replies the clients did not count because they bind another
/// request than theirs (the run's, not this stranger's alone).
fn stranger_row(x: &StrangerReport, f: usize, ignored: u64) -> StrangerRow {
    let StrangerKind::ReuseId = x.kind;
    let mut problems = Vec::new();
    if x.sent == 0 {
        problems.push(
            "it never sent a reused id: no client had a request accepted in its window".into(),
        );
    } else if x.refused_by_quorum == 0 {
        problems.push(format!(
            "none of its {} reused ids was refused as one by f+1 = {} validators",
            x.sent,
            f + 1
        ));
    }
    if x.other_answers > 0 {
        problems.push(format!(
            "{} answers to its reused ids were not the refusal of a reused id",
            x.other_answers
        ));
    }
    problems.extend(x.executed.iter().cloned());
    StrangerRow {
        behavior: StrangerBehavior::ReuseId.name().into(),
        from: "sim".into(),
        summary: format!(
            "{} requests signed under {} executed request ids ({} while their client still waited for them) and sent to every validator; {} answers refused them as reused ids ({} refused by f+1), {} other answers; executed by {} honest ledgers; {} replies to the clients' own requests received; the clients ignored {ignored} replies bound to another request than theirs",
            x.sent,
            x.distinct_ids,
            x.in_flight,
            x.reused_id_answers,
            x.refused_by_quorum,
            x.other_answers,
            x.executed.len(),
            x.client_replies
        ),
        problems,
    }
}
