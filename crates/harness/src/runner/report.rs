//! What a cluster-mode run reports: the validator rows, the measured figures, the
//! probes, and the violations the runner detects itself (halted or accused honest
//! validators, honest ledgers that do not verify or differ).

use super::node::{Node, Setup};
use super::workload::WorkloadOutcome;
use pbft_crypto::Digest;
use pbft_protocol::NodeStatus;
use pbft_scenario::model::Scenario;
use pbft_scenario::report::{Measured, Mode, ProbeRow, ScenarioReport, ValidatorRow};
use std::collections::BTreeSet;

/// Keeps the latest status of every running validator (a crashed one keeps its last).
pub(crate) fn remember(nodes: &mut [Node], s: &[Option<NodeStatus>]) {
    for (node, s) in nodes.iter_mut().zip(s) {
        if let (true, Some(s)) = (node.running(), s) {
            node.last_status = Some(s.clone());
        }
    }
}

/// True when every running honest validator answered and all stand at the same height
/// and head, outside a view change.
pub(crate) fn settled(nodes: &[Node], s: &[Option<NodeStatus>]) -> bool {
    let mut heads = BTreeSet::new();
    for node in nodes.iter().filter(|x| x.traitor.is_none() && x.running()) {
        match s.get(node.id as usize).and_then(|x| x.as_ref()) {
            Some(st) if !st.changing_view => {
                heads.insert((st.last_executed, st.head_hash));
            }
            _ => return false,
        }
    }
    heads.len() <= 1
}

/// The probe at `at_ms`: the range of views and heights of the running honest
/// validators that answered.
pub(crate) fn probe_row(at_ms: u64, nodes: &[Node], s: &[Option<NodeStatus>]) -> ProbeRow {
    let honest: Vec<&NodeStatus> = nodes
        .iter()
        .filter(|x| x.traitor.is_none() && x.running())
        .filter_map(|x| s.get(x.id as usize).and_then(|st| st.as_ref()))
        .collect();
    ProbeRow {
        at_ms,
        min_view: honest.iter().map(|x| x.view).min().unwrap_or(0),
        max_view: honest.iter().map(|x| x.view).max().unwrap_or(0),
        min_executed: honest.iter().map(|x| x.last_executed).min().unwrap_or(0),
        max_executed: honest.iter().map(|x| x.last_executed).max().unwrap_or(0),
    }
}

/// The report of a run, without the ledger checks ([`check_ledgers`]) and without
/// verdicts (the scenario crate evaluates the expectations).
pub(crate) fn report(
    sc: &Scenario,
    seed: u64,
    nodes: &[Node],
    valid_requests: u64,
    w: &WorkloadOutcome,
    end_ms: u64,
    probes: Vec<ProbeRow>,
) -> ScenarioReport {
    let validators: Vec<ValidatorRow> = nodes.iter().map(validator_row).collect();
    let mut violations = Vec::new();
    for r in validators.iter().filter(|r| r.traitor.is_none()) {
        if let Some(why) = &r.halted {
            violations.push(format!("honest validator {} halted: {why}", r.id));
        }
        for accused in &r.evidence_against {
            if !sc.traitor_ids().contains(accused) {
                violations.push(format!(
                    "honest validator {accused} is accused by signed evidence (held by {})",
                    r.id
                ));
            }
        }
    }
    let t_ms = w.all_committed_ms.unwrap_or(end_ms).max(1);
    let throughput = w.committed as f64 * 1000.0 / t_ms as f64;
    let mut lat = w.latencies_us.clone();
    lat.sort_unstable();
    let pct = |p: usize| {
        (!lat.is_empty()).then(|| lat[(lat.len() * p / 100).min(lat.len() - 1)] as f64 / 1000.0)
    };
    let peak = nodes
        .iter()
        .filter(|x| x.traitor.is_none())
        .map(|x| x.peak_rss_kb)
        .max();
    ScenarioReport {
        scenario: sc.name.clone(),
        mode: Mode::Cluster,
        seed,
        n: nodes.len(),
        f: sc.cluster.f(),
        validators,
        measured: Measured {
            valid_requests,
            committed: w.committed.min(valid_requests),
            all_committed_ms: w.all_committed_ms,
            end_ms,
            throughput_rps: (throughput * 10.0).round() / 10.0,
            baseline_throughput_rps: None,
            latency_p50_ms: pct(50),
            latency_p99_ms: pct(99),
            messages: 0,
            dropped: 0,
            rejected: 0,
            peak_memory_kb: None,
            peak_rss_kb: peak,
            trace: None,
        },
        probes,
        violations,
        strangers: Vec::new(),
        expectations: Vec::new(),
        passed: false,
    }
}

/// A validator's row: its role and what it last reported; a process that died on its
/// own counts as halted.
fn validator_row(x: &Node) -> ValidatorRow {
    let traitor = x.traitor.map(str::to_string);
    let crashed = !x.running();
    let s = x.last_status.as_ref();
    let halted = x.died.clone().or_else(|| s.and_then(|s| s.halted.clone()));
    ValidatorRow {
        id: x.id,
        role: ValidatorRow::role_for(traitor.as_deref(), crashed, x.crashes, x.wiped),
        traitor,
        crashed,
        crashes: x.crashes,
        wiped: x.wiped,
        view: s.map_or(0, |s| s.view),
        last_executed: s.map_or(0, |s| s.last_executed),
        stable_checkpoint: s.map_or(0, |s| s.stable_checkpoint),
        head: s.map_or_else(String::new, |s| s.head_hash.to_string()),
        evidence_against: s.map_or_else(Vec::new, |s| s.evidence_against.clone()),
        halted,
    }
}

/// Compares every pair of ledgers (validator, height) at their common height with
/// `block` (the hash of a validator's block at a height, `None` where it keeps none:
/// a ledger restored from a snapshot holds no blocks below it); one violation per pair
/// that differs.
pub(crate) fn disagreements(
    heads: &[(u32, u64)],
    block: impl Fn(u32, u64) -> Option<Digest>,
) -> Vec<String> {
    let mut out = Vec::new();
    for (i, (a, ha)) in heads.iter().enumerate() {
        for (b, hb) in &heads[i + 1..] {
            let h = (*ha).min(*hb);
            if h == 0 {
                continue;
            }
            if let (Some(x), Some(y)) = (block(*a, h), block(*b, h)) {
                if x != y {
                    out.push(format!(
                        "agreement broken: honest validators {a} and {b} hold different blocks at height {h}"
                    ));
                }
            }
        }
    }
    out
}

/// Verifies every honest ledger offline and compares them at their common heights.
pub(crate) fn check_ledgers(setup: &Setup, nodes: &[Node], report: &mut ScenarioReport) {
    let mut heads: Vec<(u32, u64)> = Vec::new();
    for x in nodes.iter().filter(|x| x.traitor.is_none()) {
        let dir = setup.data(x.id).join("ledger");
        if !dir.exists() {
            continue;
        }
        match pbft_executor::verify_ledger(&dir) {
            Ok(r) => heads.push((x.id, r.height)),
            Err(e) => report.violations.push(format!(
                "the ledger of honest validator {} does not verify: {e}",
                x.id
            )),
        }
    }
    let block = |id: u32, h: u64| {
        pbft_executor::show_ledger(&setup.data(id).join("ledger"), Some(h), None)
            .ok()
            .and_then(|s| s.block.map(|(_, hash)| hash))
    };
    report.violations.extend(disagreements(&heads, block));
}

/// Looks in every honest ledger for the requests `reuse_id` strangers signed under
/// executed request ids: a receipt recording one of them means it executed, a
/// violation (and a problem of the stranger that sent it).
pub(crate) fn check_reused(
    setup: &Setup,
    nodes: &[Node],
    reused: &[super::strangers::Reused],
    report: &mut ScenarioReport,
) {
    if reused.is_empty() {
        return;
    }
    let keys: Vec<(pbft_crypto::PublicKey, u64)> =
        reused.iter().map(|r| (r.client, r.request_id)).collect();
    let mut read = 0;
    let mut executed = vec![0usize; report.strangers.len()];
    for x in nodes.iter().filter(|x| x.traitor.is_none()) {
        let dir = setup.data(x.id).join("ledger");
        if !dir.exists() {
            continue;
        }
        let stored = match pbft_executor::read_receipts(&dir, &keys) {
            Ok(s) => s,
            Err(e) => {
                report.violations.push(format!(
                    "the receipts of honest validator {} cannot be read: {e}",
                    x.id
                ));
                continue;
            }
        };
        read += 1;
        for (r, s) in reused.iter().zip(stored) {
            if s.is_some_and(|s| s.request == r.digest) {
                if let Some(n) = executed.get_mut(r.stranger) {
                    *n += 1;
                }
                let what = format!(
                    "honest validator {} executed request {} of client {} as a stranger re-signed it",
                    x.id,
                    r.request_id,
                    r.client.short()
                );
                if let Some(row) = report.strangers.get_mut(r.stranger) {
                    row.problems.push(what.clone());
                }
                report.violations.push(what);
            }
        }
    }
    let senders: BTreeSet<usize> = reused.iter().map(|r| r.stranger).collect();
    for (i, row) in report.strangers.iter_mut().enumerate() {
        if senders.contains(&i) {
            row.summary += &format!(
                "; {} of its requests executed in the {read} honest ledgers read",
                executed[i]
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ready::tests::status;
    use crate::runner::timeline::tests::scenario;

    fn nodes(traitor: u32) -> Vec<Node> {
        (0..4)
            .map(|i| Node::new(i, (i == traitor).then_some("equivocate"), 0))
            .collect()
    }

    #[test]
    fn halted_and_falsely_accused_honest_validators_are_violations() {
        let sc = scenario("[[traitor]]\nnode = 0\nbehavior = \"equivocate\"\n");
        let mut ns = nodes(0);
        let mut s1 = status(1, 10);
        s1.evidence_against = vec![0, 2];
        ns[1].last_status = Some(s1);
        let mut s3 = status(3, 10);
        s3.halted = Some("the log does not decode".into());
        ns[3].last_status = Some(s3);
        ns[2].died = Some("the process exited on its own (signal: 6)".into());
        // the traitor's own halt or accusations are no violation
        let mut s0 = status(0, 3);
        s0.halted = Some("whatever".into());
        s0.evidence_against = vec![1];
        ns[0].last_status = Some(s0);
        let r = report(&sc, 1, &ns, 10, &WorkloadOutcome::default(), 1000, vec![]);
        assert_eq!(
            r.violations,
            [
                "honest validator 2 is accused by signed evidence (held by 1)",
                "honest validator 2 halted: the process exited on its own (signal: 6)",
                "honest validator 3 halted: the log does not decode",
            ]
        );
        assert_eq!(r.validators[1].last_executed, 10);
        assert!(r.validators.iter().all(|v| v.crashed), "none of them runs");
    }

    #[test]
    fn throughput_latency_and_memory_are_measured_over_the_honest() {
        let sc = scenario("");
        let mut ns = nodes(9);
        ns[0].peak_rss_kb = 50_000;
        ns[2].peak_rss_kb = 70_000;
        let w = WorkloadOutcome {
            committed: 120,
            all_committed_ms: Some(400),
            latencies_us: (1..=100).rev().map(|ms| ms * 1000).collect(),
            error: None,
        };
        let r = report(&sc, 1, &ns, 100, &w, 900, vec![]);
        let m = &r.measured;
        assert_eq!(m.committed, 100, "never more than the valid requests");
        assert_eq!(m.throughput_rps, 300.0, "120 in 400 ms");
        assert_eq!(
            (m.latency_p50_ms, m.latency_p99_ms),
            (Some(51.0), Some(100.0))
        );
        assert_eq!(m.peak_rss_kb, Some(70_000));
        // without a finish the run's end is the denominator
        let r = report(
            &sc,
            1,
            &ns,
            100,
            &WorkloadOutcome {
                committed: 45,
                ..WorkloadOutcome::default()
            },
            900,
            vec![],
        );
        assert_eq!(r.measured.throughput_rps, 50.0);
        assert_eq!(r.measured.latency_p50_ms, None);
    }

    /// Nodes 0 (the traitor), 1 and 2 run (as stand-in processes); node 3 is down.
    fn running() -> Vec<Node> {
        let mut ns = nodes(0);
        for n in &mut ns[..3] {
            n.child = Some(
                std::process::Command::new("sleep")
                    .arg("60")
                    .spawn()
                    .expect("spawn a stand-in process"),
            );
        }
        ns
    }

    #[test]
    fn probes_and_settling_look_at_running_honest_validators_only() {
        let mut ns = running();
        let mut s: Vec<Option<NodeStatus>> = vec![
            Some(status(0, 100)),
            Some(status(1, 5)),
            Some(status(2, 5)),
            Some(status(3, 1)),
        ];
        let p = probe_row(700, &ns, &s);
        assert_eq!((p.at_ms, p.min_executed, p.max_executed), (700, 5, 5));
        assert!(
            settled(&ns, &s),
            "the traitor and the stopped node do not count"
        );
        s[2] = Some(status(2, 6));
        assert!(!settled(&ns, &s));
        assert_eq!(probe_row(0, &ns, &s).max_executed, 6);
        s[2] = None;
        assert!(
            !settled(&ns, &s),
            "a running honest node that did not answer"
        );
        let mut changing = status(2, 5);
        changing.changing_view = true;
        s[2] = Some(changing);
        assert!(!settled(&ns, &s), "a view change is not settled");

        ns[3].last_status = Some(status(3, 0));
        remember(&mut ns, &s);
        assert_eq!(ns[1].last_status, s[1]);
        assert_eq!(
            ns[3].last_status,
            Some(status(3, 0)),
            "a stopped node keeps its last"
        );
    }

    #[test]
    fn ledgers_that_differ_at_their_common_height_are_reported() {
        let d = |tag: u8| Digest::of_parts(&[&[tag]]);
        // 0 and 1 agree; 2 differs at height 5; 3 restored from a snapshot keeps no block 5
        let block = |id: u32, h: u64| match (id, h) {
            (3, _) => None,
            (2, 5) => Some(d(9)),
            _ => Some(d(h as u8)),
        };
        let heads = [(0, 8), (1, 9), (2, 5), (3, 8)];
        assert_eq!(
            disagreements(&heads, block),
            [
                "agreement broken: honest validators 0 and 2 hold different blocks at height 5",
                "agreement broken: honest validators 1 and 2 hold different blocks at height 5",
            ]
        );
        assert!(
            disagreements(&[(0, 0), (1, 4)], block).is_empty(),
            "nothing in common"
        );
    }
}
