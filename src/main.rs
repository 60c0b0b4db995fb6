//! `pbft`: the command line of the ledger node. Commands, flags and exit codes follow
//! the CLI contract (0 success, 1 the operation failed, 2 bad usage or input).
//!
//! Every command but `node` is implemented in the harness crate, which takes its
//! arguments whole; this file only dispatches and maps outcomes to exit codes.

mod node;

use clap::{Parser, Subcommand};
use pbft_harness::bench::BenchArgs;
use pbft_harness::client::ClientArgs;
use pbft_harness::demo::DemoArgs;
use pbft_harness::keygen::KeygenArgs;
use pbft_harness::ledger::LedgerArgs;
use pbft_harness::scenario::ScenarioArgs;
use pbft_harness::sim::SimArgs;
use pbft_harness::status::StatusArgs;
use pbft_harness::{Error, Outcome};
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
    /// Run a local 4-validator cluster (real processes over QUIC, RocksDB in a temporary
    /// directory) with the development keys in keys/, one traitor, a client load and a
    /// summary showing that the honest ledgers agree. Ctrl-C stops everything.
    Demo(DemoArgs),
    /// Write a cluster file and key files (mode 0600) for a new cluster.
    Keygen(KeygenArgs),
    /// Run a validator.
    Node(Box<node::NodeArgs>),
    /// Where every validator stands.
    Status(StatusArgs),
    /// Submit transfers, read balances, generate load.
    Client(ClientArgs),
    /// Offline ledger tools.
    Ledger(LedgerArgs),
    /// Run scenario files (format v1) and check their expectations; list them.
    Scenario(ScenarioArgs),
    /// Benchmarks on real processes.
    Bench(BenchArgs),
    /// Run one deterministic simulation and report; exit 1 if an invariant broke or not
    /// every valid request committed.
    Sim(SimArgs),
}

/// Exit code 2 with a message (bad usage or input).
fn bad_input(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(2)
}

/// Exit code 1 with a message (the operation ran and failed).
fn failed(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("failed: {e}");
    ExitCode::from(1)
}

fn exit(result: Result<Outcome, Error>) -> ExitCode {
    match result {
        Ok(outcome) => ExitCode::from(outcome.exit_code()),
        Err(e) if e.is_bad_input() => bad_input(e),
        Err(e) => failed(e),
    }
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Demo(a) => exit(pbft_harness::demo::run(&a)),
        Command::Keygen(a) => exit(pbft_harness::keygen::run(&a)),
        Command::Node(a) => match node::run(*a) {
            Ok(outcome) => ExitCode::from(outcome.exit_code()),
            Err(node::NodeFailure::BadInput(e)) => bad_input(format!("{e:#}")),
            Err(node::NodeFailure::Failed(e)) => failed(format!("{e:#}")),
        },
        Command::Status(a) => exit(pbft_harness::status::run(&a)),
        Command::Client(a) => exit(pbft_harness::client::run(&a)),
        Command::Ledger(a) => exit(pbft_harness::ledger::run(&a)),
        Command::Scenario(a) => exit(pbft_harness::scenario::run(&a)),
        Command::Bench(a) => exit(pbft_harness::bench::run(&a)),
        Command::Sim(a) => exit(pbft_harness::sim::run(&a)),
    }
}
