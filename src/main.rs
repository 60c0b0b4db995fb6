//! `pbft`: the command line of the ledger node.
//!
//! This build has the deterministic simulator: `pbft sim` runs one simulation and
//! `pbft demo` runs the built-in simulated demonstration. The networked commands of
//! `docs/cli.md` (keygen, node, client, ledger, status, scenario, bench) arrive with
//! the node.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use pbft_sim::{Fault, FaultAction, SimConfig, TraitorSpec};
use pbft_traitor::Behavior;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "pbft",
    version,
    about = "A Byzantine-fault-tolerant ledger node (PBFT)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the built-in demonstration: 4 simulated validators, one of them an
    /// equivocating primary, a client load, and a summary showing that the honest
    /// ledgers agree.
    Demo {
        /// Seed of the simulation.
        #[arg(long, default_value_t = 7)]
        seed: u64,
    },
    /// Run one deterministic simulation and report; exit 1 if an invariant broke or not
    /// every valid request committed.
    Sim {
        /// Seed (same seed, same run).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Number of validators (n >= 4).
        #[arg(long, default_value_t = 4)]
        validators: usize,
        /// Valid signed transfers to submit.
        #[arg(long, default_value_t = 200)]
        requests: usize,
        /// Clients submitting them.
        #[arg(long, default_value_t = 4)]
        clients: usize,
        /// A traitor, as NODE:BEHAVIOR (for example 0:equivocate). Repeatable.
        #[arg(long = "traitor", value_name = "NODE:BEHAVIOR")]
        traitors: Vec<String>,
        /// Crash a validator at a time, as NODE@MS. Repeatable.
        #[arg(long = "crash", value_name = "NODE@MS")]
        crashes: Vec<String>,
        /// Probability that the network loses a message.
        #[arg(long, default_value_t = 0.0)]
        drop_rate: f64,
        /// Simulated deadline, ms.
        #[arg(long, default_value_t = 60_000)]
        deadline_ms: u64,
    },
}

fn parse_traitor(s: &str, n: usize) -> Result<TraitorSpec> {
    let (node, behavior) = s
        .split_once(':')
        .with_context(|| format!("--traitor {s:?}: expected NODE:BEHAVIOR, e.g. 0:equivocate"))?;
    let node: u32 = node
        .parse()
        .with_context(|| format!("--traitor {s:?}: {node:?} is not a validator id"))?;
    if node as usize >= n {
        bail!("--traitor {s:?}: validator {node} does not exist (ids are 0..{n})");
    }
    let behavior: Behavior = behavior
        .parse()
        .map_err(|e| anyhow::anyhow!("--traitor {s:?}: {e}"))?;
    Ok(TraitorSpec {
        node,
        behavior,
        from_ms: 0,
        until_ms: u64::MAX,
    })
}

fn parse_crash(s: &str, n: usize) -> Result<Fault> {
    let (node, at) = s
        .split_once('@')
        .with_context(|| format!("--crash {s:?}: expected NODE@MS, e.g. 0@500"))?;
    let node: u32 = node
        .parse()
        .with_context(|| format!("--crash {s:?}: {node:?} is not a validator id"))?;
    if node as usize >= n {
        bail!("--crash {s:?}: validator {node} does not exist (ids are 0..{n})");
    }
    let at_ms: u64 = at
        .parse()
        .with_context(|| format!("--crash {s:?}: {at:?} is not a time in ms"))?;
    Ok(Fault {
        at_ms,
        action: FaultAction::Crash(node),
    })
}

/// Runs a simulation, prints its summary, and maps the outcome to an exit code.
fn simulate(cfg: SimConfig) -> ExitCode {
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
    if report.safe() && report.all_committed && heads {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn run() -> Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Command::Demo { seed } => {
            println!("pbft demo: 4 simulated validators; validator 0 is a traitor that sends");
            println!("different batches to different backups (equivocation). The honest");
            println!("validators must catch it, change view, and agree on one ledger.");
            println!(
                "(This is the deterministic simulator; the networked demo comes with the node.)\n"
            );
            let cfg = SimConfig {
                seed,
                traitors: vec![TraitorSpec {
                    node: 0,
                    behavior: Behavior::Equivocate,
                    from_ms: 0,
                    until_ms: u64::MAX,
                }],
                workload: pbft_sim::Workload {
                    requests: 400,
                    invalid_signatures: 10,
                    replays: 10,
                    overdrafts: 5,
                    ..Default::default()
                },
                ..SimConfig::default()
            };
            Ok(simulate(cfg))
        }
        Command::Sim {
            seed,
            validators,
            requests,
            clients,
            traitors,
            crashes,
            drop_rate,
            deadline_ms,
        } => {
            if validators < 4 {
                bail!(
                    "--validators {validators}: PBFT needs n >= 3f+1 = 4 to tolerate one traitor"
                );
            }
            if clients == 0 {
                bail!("--clients must be at least 1");
            }
            if !(0.0..=1.0).contains(&drop_rate) {
                bail!("--drop-rate {drop_rate}: must be between 0 and 1");
            }
            let traitors = traitors
                .iter()
                .map(|t| parse_traitor(t, validators))
                .collect::<Result<Vec<_>>>()?;
            let faults = crashes
                .iter()
                .map(|c| parse_crash(c, validators))
                .collect::<Result<Vec<_>>>()?;
            let mut cfg = SimConfig {
                seed,
                validators,
                traitors,
                faults,
                deadline_ms,
                ..SimConfig::default()
            };
            cfg.workload.requests = requests;
            cfg.workload.clients = clients;
            cfg.network.drop_rate = drop_rate;
            Ok(simulate(cfg))
        }
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
