//! The seam between scenarios and modes: a [`Runner`] turns a scenario and a seed into
//! a [`ScenarioReport`] (without verdicts); [`run_scenario`] adds the fault-free twin
//! where an expectation needs it and evaluates the expectations.

use crate::error::RunError;
use crate::expect::evaluate;
use crate::model::Scenario;
use crate::report::{Mode, ScenarioReport};

/// Runs scenarios in one mode. The sim runner is [`crate::sim::SimRunner`]; the cluster
/// runner (real processes on loopback, in the `pbft` binary) implements the same trait
/// and fills the same report model: rows, measured figures, probes at [`Scenario::probe_times`], and the
/// violations it detected (for example by comparing ledgers and scanning evidence).
pub trait Runner {
    /// The mode this runner implements.
    fn mode(&self) -> Mode;

    /// Runs `scenario` once with `seed` and reports what happened. `expectations` is
    /// left empty and `passed` false: [`run_scenario`] evaluates them.
    fn observe(&self, scenario: &Scenario, seed: u64) -> Result<ScenarioReport, RunError>;
}

/// Runs `scenario` with `seed` on `runner`, runs the fault-free twin too if
/// `min_throughput_fraction` needs its throughput, and evaluates every expectation.
pub fn run_scenario(
    runner: &dyn Runner,
    scenario: &Scenario,
    seed: u64,
) -> Result<ScenarioReport, RunError> {
    let mut report = runner.observe(scenario, seed)?;
    if scenario.expect.min_throughput_fraction.is_some() {
        let twin = runner.observe(&scenario.fault_free(), seed)?;
        report.measured.baseline_throughput_rps = Some(twin.measured.throughput_rps);
    }
    evaluate(scenario, &mut report);
    Ok(report)
}
