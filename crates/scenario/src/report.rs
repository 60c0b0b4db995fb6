//! The report model: what one run of a scenario observed, in any mode, and how it is
//! rendered (a summary table, one line per expectation, and JSON).
//!
//! A report holds no wall-clock value: the same file, mode and seed give the same sim
//! report byte for byte.

use serde::Serialize;
use std::fmt::Write as _;

/// Which runner produced a report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The deterministic simulator.
    Sim,
    /// Real `pbft node` processes on loopback.
    Cluster,
}

impl Mode {
    /// `"sim"` or `"cluster"`.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Sim => "sim",
            Mode::Cluster => "cluster",
        }
    }
}

/// One validator at the end of a run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ValidatorRow {
    /// The validator id.
    pub id: u32,
    /// `honest`, `honest (down)`, `honest (restarted)`, `honest (wiped)` or
    /// `traitor:<behaviour>`.
    pub role: String,
    /// The traitor behaviour, if scripted.
    pub traitor: Option<String>,
    /// Down at the end of the run.
    pub crashed: bool,
    /// How many times its process died during the run.
    pub crashes: u32,
    /// Restarted on a wiped disk at some point.
    pub wiped: bool,
    /// Its view.
    pub view: u64,
    /// Last executed sequence number (ledger height).
    pub last_executed: u64,
    /// Last stable checkpoint.
    pub stable_checkpoint: u64,
    /// Ledger head hash, hex.
    pub head: String,
    /// Validators it holds signed evidence against.
    pub evidence_against: Vec<u32>,
    /// Why it halted, if it did.
    pub halted: Option<String>,
}

impl ValidatorRow {
    /// Honest (not a scripted traitor).
    pub fn honest(&self) -> bool {
        self.traitor.is_none()
    }

    /// Honest and running at the end.
    pub fn honest_running(&self) -> bool {
        self.honest() && !self.crashed
    }

    /// The role string for these facts.
    pub fn role_for(traitor: Option<&str>, crashed: bool, crashes: u32, wiped: bool) -> String {
        match (traitor, crashed) {
            (Some(b), _) => format!("traitor:{b}"),
            (None, true) => "honest (down)".to_string(),
            (None, false) if wiped => "honest (wiped)".to_string(),
            (None, false) if crashes > 0 => "honest (restarted)".to_string(),
            (None, false) => "honest".to_string(),
        }
    }
}

/// The honest, running validators at one point in time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ProbeRow {
    /// When, ms since the start of the run.
    pub at_ms: u64,
    /// Lowest view.
    pub min_view: u64,
    /// Highest view.
    pub max_view: u64,
    /// Lowest executed sequence number.
    pub min_executed: u64,
    /// Highest executed sequence number.
    pub max_executed: u64,
}

/// Figures measured during the run. Times are simulated in sim mode.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Measured {
    /// Requests that had to be accepted (valid transfers and overdrafts).
    pub valid_requests: u64,
    /// Requests accepted by their clients (f+1 matching replies).
    pub committed: u64,
    /// When the last valid request was accepted, ms.
    pub all_committed_ms: Option<u64>,
    /// When the run ended, ms.
    pub end_ms: u64,
    /// Accepted requests per second: `committed` over `all_committed_ms` (or `end_ms`).
    pub throughput_rps: f64,
    /// Throughput of the fault-free twin, when an expectation needs it.
    pub baseline_throughput_rps: Option<f64>,
    /// Median submit-to-accept latency, ms.
    pub latency_p50_ms: Option<f64>,
    /// 99th percentile submit-to-accept latency, ms.
    pub latency_p99_ms: Option<f64>,
    /// Messages put on the network.
    pub messages: u64,
    /// Messages lost (drops, partitions, crashed peers).
    pub dropped: u64,
    /// Messages rejected by decoding or signature checks.
    pub rejected: u64,
    /// Peak estimate of what one honest validator holds in memory for the protocol, KiB
    /// (see `docs/scenarios.md`).
    pub peak_memory_kb: Option<u64>,
    /// Cluster mode: the highest peak resident set size (VmHWM) of an honest validator
    /// process, KiB.
    pub peak_rss_kb: Option<u64>,
    /// Sim mode: digest of the whole event trace (equal runs have equal traces).
    pub trace: Option<String>,
}

/// What one stranger did in a run (one per stranger: a table with `count = 2` gives
/// two), and what it found wrong.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StrangerRow {
    /// Its behaviour's name.
    pub behavior: String,
    /// Where it acted from (its address in cluster mode, `sim` in sim mode).
    pub from: String,
    /// What it got done, for people (connections, frames, answers, replies taken).
    pub summary: String,
    /// Why it failed, if it did: it could not do what its behaviour says, or it got
    /// what the validators must never give (a reused id executed, another answer
    /// than the refusal). Any problem fails the `strangers` expectation.
    pub problems: Vec<String>,
}

/// The verdict on one expectation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ExpectationResult {
    /// The expectation's key (`agreement`, `view_at_least`, `at[0]`, ...).
    pub name: String,
    /// Whether it held.
    pub passed: bool,
    /// What was measured against what was expected.
    pub detail: String,
}

/// One run of one scenario.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ScenarioReport {
    /// The scenario's name.
    pub scenario: String,
    /// The runner.
    pub mode: Mode,
    /// The seed.
    pub seed: u64,
    /// n.
    pub n: usize,
    /// f.
    pub f: usize,
    /// One row per validator, by id.
    pub validators: Vec<ValidatorRow>,
    /// Measured figures.
    pub measured: Measured,
    /// Probes taken at the times the expectations name.
    pub probes: Vec<ProbeRow>,
    /// Safety violations the run detected: broken invariants, honest validators that
    /// halted, honest validators accused by signed evidence.
    pub violations: Vec<String>,
    /// What each stranger did (empty without strangers).
    pub strangers: Vec<StrangerRow>,
    /// One result per expectation (empty until evaluated).
    pub expectations: Vec<ExpectationResult>,
    /// Every expectation held.
    pub passed: bool,
}

impl ScenarioReport {
    /// Honest validators running at the end.
    pub fn honest_running(&self) -> impl Iterator<Item = &ValidatorRow> {
        self.validators.iter().filter(|r| r.honest_running())
    }

    /// True if the run detected a safety violation.
    pub fn violation_detected(&self) -> bool {
        !self.violations.is_empty()
    }

    /// The probe taken at `at_ms`, if any.
    pub fn probe(&self, at_ms: u64) -> Option<&ProbeRow> {
        self.probes.iter().find(|p| p.at_ms == at_ms)
    }

    /// The summary: a header, the validator table, the figures, detected violations,
    /// and one `PASS name` / `FAIL name: reason` line per expectation.
    pub fn render_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "scenario {}  mode {}  seed {}  n {}  f {}",
            self.scenario,
            self.mode.name(),
            self.seed,
            self.n,
            self.f
        );
        let _ = writeln!(
            s,
            "{:>4}  {:<26} {:>5} {:>9} {:>7}  {:<16}  evidence",
            "id", "role", "view", "executed", "stable", "head"
        );
        for r in &self.validators {
            let head: String = r.head.chars().take(16).collect();
            let _ = writeln!(
                s,
                "{:>4}  {:<26} {:>5} {:>9} {:>7}  {:<16}  {:?}",
                r.id,
                r.role,
                r.view,
                r.last_executed,
                r.stable_checkpoint,
                head,
                r.evidence_against
            );
        }
        let m = &self.measured;
        let committed_at = m
            .all_committed_ms
            .map_or_else(|| "not all".to_string(), |t| format!("all by {t} ms"));
        let _ = writeln!(
            s,
            "committed {}/{} ({committed_at}); run ended at {} ms; throughput {:.1} req/s",
            m.committed, m.valid_requests, m.end_ms, m.throughput_rps
        );
        let lat = |x: Option<f64>| x.map_or_else(|| "-".to_string(), |v| format!("{v:.1} ms"));
        let _ = writeln!(
            s,
            "latency p50 {} p99 {}; messages {} dropped {} rejected {}",
            lat(m.latency_p50_ms),
            lat(m.latency_p99_ms),
            m.messages,
            m.dropped,
            m.rejected
        );
        if let Some(b) = m.baseline_throughput_rps {
            let frac = if b > 0.0 { m.throughput_rps / b } else { 0.0 };
            let _ = writeln!(
                s,
                "fault-free twin throughput {b:.1} req/s (this run: {:.0}% of it)",
                frac * 100.0
            );
        }
        if let Some(kb) = m.peak_memory_kb {
            let _ = writeln!(s, "peak protocol memory (estimate) {kb} KiB per validator");
        }
        if let Some(kb) = m.peak_rss_kb {
            let _ = writeln!(
                s,
                "peak resident memory {kb} KiB (largest honest validator process)"
            );
        }
        if let Some(t) = &m.trace {
            let _ = writeln!(s, "trace {t}");
        }
        for x in &self.strangers {
            let _ = writeln!(s, "stranger {} from {}: {}", x.behavior, x.from, x.summary);
            for p in &x.problems {
                let _ = writeln!(s, "STRANGER {} from {}: {p}", x.behavior, x.from);
            }
        }
        for r in &self.validators {
            if let Some(h) = &r.halted {
                let _ = writeln!(s, "HALT validator {}: {h}", r.id);
            }
        }
        for v in self.violations.iter().take(20) {
            let _ = writeln!(s, "VIOLATION {v}");
        }
        if self.violations.len() > 20 {
            let _ = writeln!(s, "... and {} more violations", self.violations.len() - 20);
        }
        for e in &self.expectations {
            if e.passed {
                let _ = writeln!(s, "PASS {}", e.name);
            } else {
                let _ = writeln!(s, "FAIL {}: {}", e.name, e.detail);
            }
        }
        let verdict = match (self.passed, self.violation_detected()) {
            (true, true) => "PASSED (violation detected, as expected beyond the fault model)",
            (true, false) => "PASSED",
            (false, _) => "FAILED",
        };
        let _ = writeln!(s, "{} seed {}: {verdict}", self.scenario, self.seed);
        s
    }

    /// The report as pretty JSON.
    pub fn render_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }
}

/// Several reports as one JSON document: `{"passed": bool, "runs": [...]}`.
pub fn render_json_all(reports: &[ScenarioReport]) -> String {
    #[derive(Serialize)]
    struct All<'a> {
        passed: bool,
        runs: &'a [ScenarioReport],
    }
    let all = All {
        passed: reports.iter().all(|r| r.passed),
        runs: reports,
    };
    serde_json::to_string_pretty(&all).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}
