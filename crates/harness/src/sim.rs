//! `pbft sim`: one deterministic simulation, its summary, and a verdict.

use crate::error::{Error, Outcome, Result};
use pbft_sim::{Fault, FaultAction, SimConfig, TraitorSpec};
use pbft_traitor::Behavior;

/// `pbft sim`.
#[derive(clap::Args, Debug, Clone)]
pub struct SimArgs {
    /// Seed (same seed, same run).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Number of validators (n >= 4).
    #[arg(long, default_value_t = 4)]
    pub validators: usize,
    /// Valid signed transfers to submit.
    #[arg(long, default_value_t = 200)]
    pub requests: usize,
    /// Clients submitting them.
    #[arg(long, default_value_t = 4)]
    pub clients: usize,
    /// A traitor, as NODE:BEHAVIOR (for example 0:equivocate). Repeatable.
    #[arg(long = "traitor", value_name = "NODE:BEHAVIOR")]
    pub traitors: Vec<String>,
    /// Crash a validator at a time, as NODE@MS. Repeatable.
    #[arg(long = "crash", value_name = "NODE@MS")]
    pub crashes: Vec<String>,
    /// Probability that the network loses a message.
    #[arg(long, default_value_t = 0.0)]
    pub drop_rate: f64,
    /// Simulated deadline, ms.
    #[arg(long, default_value_t = 60_000)]
    pub deadline_ms: u64,
}

impl SimArgs {
    /// The simulation these arguments ask for; bad input names the flag and value.
    pub fn config(&self) -> Result<SimConfig> {
        let n = self.validators;
        if n < 4 {
            return Err(Error::bad_value(
                format!("--validators {n}"),
                "PBFT needs n >= 3f+1 = 4 to tolerate one traitor",
            ));
        }
        if self.clients == 0 {
            return Err(Error::bad_value("--clients", "must be at least 1"));
        }
        if !(0.0..=1.0).contains(&self.drop_rate) {
            return Err(Error::bad_value(
                format!("--drop-rate {}", self.drop_rate),
                "must be between 0 and 1",
            ));
        }
        let traitors = self
            .traitors
            .iter()
            .map(|t| parse_traitor(t, n))
            .collect::<Result<Vec<_>>>()?;
        let faults = self
            .crashes
            .iter()
            .map(|c| parse_crash(c, n))
            .collect::<Result<Vec<_>>>()?;
        let mut cfg = SimConfig {
            seed: self.seed,
            validators: n,
            traitors,
            faults,
            deadline_ms: self.deadline_ms,
            ..SimConfig::default()
        };
        cfg.workload.requests = self.requests;
        cfg.workload.clients = self.clients;
        cfg.network.drop_rate = self.drop_rate;
        Ok(cfg)
    }
}

/// A validator id in `0..n`, from `text`; `flag` and `whole` name the argument.
fn validator(flag: &str, whole: &str, text: &str, n: usize) -> Result<u32> {
    let bad = |reason: String| Error::bad_value(format!("{flag} {whole:?}"), reason);
    let id: u32 = text
        .parse()
        .map_err(|_| bad(format!("{text:?} is not a validator id")))?;
    if id as usize >= n {
        return Err(bad(format!(
            "validator {id} does not exist (ids are 0..{n})"
        )));
    }
    Ok(id)
}

/// `NODE:BEHAVIOR`: a traitor for the whole run.
pub fn parse_traitor(s: &str, n: usize) -> Result<TraitorSpec> {
    let (node, behavior) = s.split_once(':').ok_or_else(|| {
        Error::bad_value(
            format!("--traitor {s:?}"),
            "expected NODE:BEHAVIOR, e.g. 0:equivocate",
        )
    })?;
    let node = validator("--traitor", s, node, n)?;
    let behavior: Behavior = behavior
        .parse()
        .map_err(|e| Error::bad_value(format!("--traitor {s:?}"), format!("{e}")))?;
    Ok(TraitorSpec {
        node,
        behavior,
        from_ms: 0,
        until_ms: u64::MAX,
    })
}

/// `NODE@MS`: a crash at a simulated time.
pub fn parse_crash(s: &str, n: usize) -> Result<Fault> {
    let (node, at) = s.split_once('@').ok_or_else(|| {
        Error::bad_value(format!("--crash {s:?}"), "expected NODE@MS, e.g. 0@500")
    })?;
    let node = validator("--crash", s, node, n)?;
    let at_ms: u64 = at.parse().map_err(|_| {
        Error::bad_value(
            format!("--crash {s:?}"),
            format!("{at:?} is not a time in ms"),
        )
    })?;
    Ok(Fault {
        at_ms,
        action: FaultAction::Crash(node),
    })
}

/// Runs the simulation, prints its summary, and passes if safety held, every request
/// committed and the honest ledger heads are equal.
pub fn run(args: &SimArgs) -> Result<Outcome> {
    let cfg = args.config()?;
    let started = std::time::Instant::now();
    let report = pbft_sim::run(cfg);
    let wall = started.elapsed();
    print!("{}", report.summary());
    let p50 = report.latency_percentile(50).unwrap_or(0);
    let p99 = report.latency_percentile(99).unwrap_or(0);
    println!(
        "simulated {} ms in {:.2} s of real time; latency p50 {:.1} ms, p99 {:.1} ms (simulated)",
        report.end_ms,
        wall.as_secs_f64(),
        p50 as f64 / 1000.0,
        p99 as f64 / 1000.0
    );
    let heads = report.honest_heads_equal();
    println!(
        "safety: {}   all committed: {}   honest ledger heads equal: {}",
        if report.safe() { "held" } else { "BROKEN" },
        report.all_committed,
        heads
    );
    Ok(Outcome::from_success(
        report.safe() && report.all_committed && heads,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traitors_and_crashes_parse_and_name_what_is_wrong() {
        let t = parse_traitor("2:equivocate", 4).expect("traitor");
        assert_eq!((t.node, t.behavior), (2, Behavior::Equivocate));
        let c = parse_crash("1@500", 4).expect("crash");
        assert_eq!(c.at_ms, 500);
        assert!(matches!(c.action, FaultAction::Crash(1)));
        for (bad, needle) in [
            (parse_traitor("2", 4).err(), "expected NODE:BEHAVIOR"),
            (
                parse_traitor("4:silent", 4).err(),
                "validator 4 does not exist",
            ),
            (
                parse_traitor("x:silent", 4).err(),
                "\"x\" is not a validator id",
            ),
            (parse_traitor("0:sneaky", 4).err(), "--traitor \"0:sneaky\""),
            (parse_crash("1", 4).err(), "expected NODE@MS"),
            (
                parse_crash("1@soon", 4).err(),
                "\"soon\" is not a time in ms",
            ),
        ] {
            let e = bad.expect(needle);
            assert!(e.is_bad_input() && e.to_string().contains(needle), "{e}");
        }
    }

    #[test]
    fn the_config_carries_every_flag_and_refuses_small_clusters() {
        let mut a = SimArgs {
            seed: 9,
            validators: 7,
            requests: 10,
            clients: 2,
            traitors: vec!["0:silent".into()],
            crashes: vec!["3@100".into()],
            drop_rate: 0.25,
            deadline_ms: 5000,
        };
        let cfg = a.config().expect("config");
        assert_eq!((cfg.seed, cfg.validators, cfg.deadline_ms), (9, 7, 5000));
        assert_eq!((cfg.workload.requests, cfg.workload.clients), (10, 2));
        assert_eq!(cfg.network.drop_rate, 0.25);
        assert_eq!((cfg.traitors.len(), cfg.faults.len()), (1, 1));
        a.validators = 3;
        let e = a.config().expect_err("n = 3");
        assert!(e.to_string().starts_with("--validators 3:"), "{e}");
        a.validators = 4;
        a.drop_rate = 1.5;
        assert!(a
            .config()
            .expect_err("rate")
            .to_string()
            .contains("--drop-rate"));
    }
}
