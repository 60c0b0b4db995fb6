//! Expectation evaluation, written against the report model only: any runner that
//! fills a [`ScenarioReport`] gets the same verdicts.

use crate::model::Scenario;
use crate::report::{ExpectationResult, ScenarioReport};

fn result(name: impl Into<String>, passed: bool, detail: impl Into<String>) -> ExpectationResult {
    ExpectationResult {
        name: name.into(),
        passed,
        detail: detail.into(),
    }
}

/// Evaluates every expectation of `sc` against `report`, fills
/// `report.expectations` (in a fixed order) and `report.passed`.
pub fn evaluate(sc: &Scenario, report: &mut ScenarioReport) {
    let e = &sc.expect;
    let mut out = Vec::new();
    let running: Vec<_> = report.honest_running().cloned().collect();
    let views: Vec<u64> = running.iter().map(|r| r.view).collect();
    let min_view = views.iter().copied().min().unwrap_or(0);
    let max_view = views.iter().copied().max().unwrap_or(0);

    // violation: always evaluated, so that a broken invariant never passes silently
    let detected = report.violation_detected();
    if e.violation {
        out.push(result(
            "violation",
            detected,
            if detected {
                format!("detected as expected: {}", report.violations[0])
            } else {
                "beyond the fault model, yet no violation or halt was detected: the run passed silently".to_string()
            },
        ));
    } else {
        out.push(result(
            "no_violation",
            !detected,
            if detected {
                format!(
                    "{} violation(s), first: {}",
                    report.violations.len(),
                    report.violations[0]
                )
            } else {
                "no invariant broken, no honest validator halted".to_string()
            },
        ));
    }

    if e.agreement {
        let mut heads: Vec<(u64, &str)> = running
            .iter()
            .map(|r| (r.last_executed, r.head.as_str()))
            .collect();
        heads.sort_unstable();
        heads.dedup();
        let broken: Vec<&String> = report
            .violations
            .iter()
            .filter(|v| v.contains("agreement"))
            .collect();
        let passed = heads.len() <= 1 && broken.is_empty();
        let detail = if let Some(b) = broken.first() {
            format!("honest ledgers diverged: {b}")
        } else if heads.len() > 1 {
            let rows: Vec<String> = running
                .iter()
                .map(|r| {
                    format!(
                        "{}@{}:{}",
                        r.id,
                        r.last_executed,
                        r.head.chars().take(8).collect::<String>()
                    )
                })
                .collect();
            format!("honest ledgers end differently: {}", rows.join(" "))
        } else {
            match heads.first() {
                Some((h, d)) => format!(
                    "{} honest validators at height {h}, head {}",
                    running.len(),
                    d.chars().take(16).collect::<String>()
                ),
                None => "no honest validator running".to_string(),
            }
        };
        out.push(result("agreement", passed, detail));
    }

    if e.all_committed {
        let m = &report.measured;
        let in_time = m.all_committed_ms.is_some_and(|t| t <= e.deadline_ms);
        let passed = m.committed >= m.valid_requests && in_time;
        let detail = match m.all_committed_ms {
            Some(t) if passed => format!(
                "{}/{} accepted by {t} ms (deadline {} ms)",
                m.committed, m.valid_requests, e.deadline_ms
            ),
            _ => format!(
                "{}/{} accepted by the deadline of {} ms",
                m.committed, m.valid_requests, e.deadline_ms
            ),
        };
        out.push(result("all_committed", passed, detail));
    }

    if let Some(x) = e.view_at_least {
        out.push(result(
            "view_at_least",
            !running.is_empty() && min_view >= x,
            format!("lowest honest view {min_view}, expected >= {x}"),
        ));
    }
    if let Some(x) = e.view_at_most {
        out.push(result(
            "view_at_most",
            max_view <= x,
            format!("highest honest view {max_view}, expected <= {x}"),
        ));
    }

    for id in &e.evidence_against {
        // a validator that crashed lost what it held in memory; judge those that ran
        // the whole time
        let judges: Vec<_> = running.iter().filter(|r| r.crashes == 0).collect();
        let missing: Vec<u32> = judges
            .iter()
            .filter(|r| !r.evidence_against.contains(id))
            .map(|r| r.id)
            .collect();
        let passed = !judges.is_empty() && missing.is_empty();
        let detail = if judges.is_empty() {
            "no honest validator ran the whole time".to_string()
        } else if missing.is_empty() {
            format!(
                "all {} honest validators that never crashed hold it",
                judges.len()
            )
        } else {
            format!("honest validators {missing:?} hold no evidence against {id}")
        };
        out.push(result(format!("evidence_against[{id}]"), passed, detail));
    }

    if let Some(x) = e.checkpoint_at_least {
        let low = running
            .iter()
            .map(|r| r.stable_checkpoint)
            .min()
            .unwrap_or(0);
        out.push(result(
            "checkpoint_at_least",
            !running.is_empty() && low >= x,
            format!("lowest honest stable checkpoint {low}, expected >= {x}"),
        ));
    }

    if let Some(frac) = e.min_throughput_fraction {
        let m = &report.measured;
        let base = m.baseline_throughput_rps.unwrap_or(0.0);
        let ratio = if base > 0.0 {
            m.throughput_rps / base
        } else {
            0.0
        };
        let floor_held = base > 0.0 && ratio >= frac;
        let replaced = e.or_primary_replaced && !running.is_empty() && min_view >= 1;
        let detail = format!(
            "{:.1} req/s = {:.0}% of the fault-free twin's {base:.1} req/s (floor {:.0}%){}",
            m.throughput_rps,
            ratio * 100.0,
            frac * 100.0,
            if e.or_primary_replaced {
                format!(
                    "; primary replaced: {}",
                    if replaced { "yes" } else { "no" }
                )
            } else {
                String::new()
            }
        );
        out.push(result(
            "min_throughput_fraction",
            floor_held || replaced,
            detail,
        ));
    }

    // Each memory bound is checked in the mode that measures its figure (the protocol
    // estimate in sim mode, process RSS in cluster mode) and left out in the other.
    if let (Some(max), Some(kb)) = (e.max_memory_kb, report.measured.peak_memory_kb) {
        out.push(result(
            "max_memory_kb",
            kb <= max,
            format!("peak protocol memory {kb} KiB per validator, bound {max} KiB"),
        ));
    }
    if let (Some(max), Some(kb)) = (e.max_rss_kb, report.measured.peak_rss_kb) {
        out.push(result(
            "max_rss_kb",
            kb <= max,
            format!("peak resident memory {kb} KiB (largest honest validator), bound {max} KiB"),
        ));
    }

    if !sc.strangers.is_empty() {
        // a stranger that could not do what its behaviour says would let the run pass
        // for nothing
        let want = sc.stranger_count();
        let problems: Vec<String> = report
            .strangers
            .iter()
            .flat_map(|x| {
                x.problems
                    .iter()
                    .map(move |p| format!("{} from {}: {p}", x.behavior, x.from))
            })
            .collect();
        let passed = report.strangers.len() == want && problems.is_empty();
        let detail = if report.strangers.len() != want {
            format!(
                "the runner reported {} of the {want} strangers",
                report.strangers.len()
            )
        } else if let Some(p) = problems.first() {
            format!("{} problem(s), first: {p}", problems.len())
        } else {
            format!(
                "{want} stranger(s) did what their behaviour says, and got nothing they must not"
            )
        };
        out.push(result("strangers", passed, detail));
    }

    for (i, a) in e.at.iter().enumerate() {
        let name = format!("at[{i}] ({} ms)", a.at_ms);
        let Some(p) = report.probe(a.at_ms) else {
            out.push(result(
                name,
                false,
                "the runner recorded no probe at this time",
            ));
            continue;
        };
        let mut ok = true;
        let mut parts = Vec::new();
        if let Some(x) = a.view_at_least {
            ok &= p.min_view >= x;
            parts.push(format!(
                "lowest honest view {} (expected >= {x})",
                p.min_view
            ));
        }
        if let Some(x) = a.view_at_most {
            ok &= p.max_view <= x;
            parts.push(format!(
                "highest honest view {} (expected <= {x})",
                p.max_view
            ));
        }
        out.push(result(name, ok, parts.join(", ")));
    }

    for (i, w) in e.no_progress.iter().enumerate() {
        let name = format!("no_progress[{i}] ({}..{} ms)", w.from_ms, w.until_ms);
        match (report.probe(w.from_ms), report.probe(w.until_ms)) {
            (Some(a), Some(b)) => out.push(result(
                name,
                b.max_executed <= a.max_executed,
                format!(
                    "highest honest executed sequence {} at {} ms, {} at {} ms",
                    a.max_executed, w.from_ms, b.max_executed, w.until_ms
                ),
            )),
            _ => out.push(result(
                name,
                false,
                "the runner recorded no probe at these times",
            )),
        }
    }

    report.passed = out.iter().all(|r| r.passed);
    report.expectations = out;
}
