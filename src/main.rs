//! `pbft`: the command line of the ledger node. Commands, flags and exit codes follow
//! the CLI contract (0 success, 1 the operation failed, 2 bad usage or input).

mod bench;
mod cluster_runner;
mod demo;
mod net;
mod procfs;
mod scenario;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use pbft_sim::{Fault, FaultAction, SimConfig, TraitorSpec};
use pbft_traitor::Behavior;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

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
    Demo {
        /// Transfers to submit.
        #[arg(long, default_value_t = 3000)]
        requests: usize,
        /// Requests in flight.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
    },
    /// Write a cluster file and key files (mode 0600) for a new cluster.
    Keygen {
        /// Number of validators, n = 3f+1 >= 4.
        #[arg(long)]
        validators: usize,
        /// Number of client accounts.
        #[arg(long, default_value_t = 4)]
        clients: usize,
        /// Output directory.
        #[arg(long, default_value = ".")]
        out: PathBuf,
        /// Host of every validator address.
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// Port of validator 0 (validator i uses base-port + i).
        #[arg(long, default_value_t = 7100)]
        base_port: u16,
        /// A checkpoint every K sequence numbers.
        #[arg(long, default_value_t = 64)]
        checkpoint_interval: u64,
        /// Most requests per batch.
        #[arg(long, default_value_t = 256)]
        batch_size: usize,
        /// Genesis balance of every client account.
        #[arg(long, default_value_t = 1_000_000_000)]
        balance: u64,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
    },
    /// Run a validator.
    Node {
        /// The cluster file.
        #[arg(long)]
        cluster: PathBuf,
        /// This validator's key file.
        #[arg(long)]
        key: PathBuf,
        /// Data directory (ledger and consensus log); default pbft-data-<id>.
        #[arg(long)]
        data: Option<PathBuf>,
        /// Serve Prometheus metrics on this address.
        #[arg(long)]
        metrics: Option<SocketAddr>,
        /// Log format: pretty or json.
        #[arg(long, default_value = "pretty")]
        log_format: String,
        /// Fsync every ledger and log write.
        #[arg(long)]
        sync: bool,
        /// Fault injection (scenario runner and demo only; hidden).
        #[command(flatten)]
        faults: net::FaultFlags,
    },
    /// Where every validator stands.
    Status {
        /// The cluster file.
        #[arg(long)]
        cluster: PathBuf,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Submit transfers, read balances, generate load.
    Client {
        /// The cluster file.
        #[arg(long)]
        cluster: PathBuf,
        /// The client's key file.
        #[arg(long)]
        key: Option<PathBuf>,
        #[command(subcommand)]
        command: ClientCommand,
    },
    /// Offline ledger tools.
    Ledger {
        #[command(subcommand)]
        command: LedgerCommand,
    },
    /// Run scenario files (format v1) and check their expectations; list them.
    Scenario {
        #[command(subcommand)]
        command: ScenarioCommand,
    },
    /// Benchmarks on real processes.
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
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

#[derive(Subcommand)]
enum BenchCommand {
    /// The standard workload (docs/benchmarks.md): n validator processes over QUIC with
    /// RocksDB, a pre-signed closed-loop load swept over requests in flight; writes a
    /// CSV and an SVG plot to --out and prints a table.
    Cluster {
        /// Number of validators (n >= 4).
        #[arg(long, default_value_t = 4)]
        validators: usize,
        /// Client accounts (raised to what the largest in-flight count needs).
        #[arg(long, default_value_t = 64)]
        clients: usize,
        /// Seconds each point is measured for, after its warm-up.
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// Output directory for cluster-n<N>.csv and cluster-n<N>.svg.
        #[arg(long, default_value = "bench-out")]
        out: PathBuf,
        /// Requests in flight, one point each.
        #[arg(long, value_delimiter = ',', default_value = "1,4,16,64,256,512")]
        inflight: Vec<usize>,
        /// Most requests per batch.
        #[arg(long, default_value_t = 256)]
        batch_size: usize,
        /// Most sequence numbers in flight at the primary (the cluster file's default).
        #[arg(long, default_value_t = 1)]
        pipeline_depth: u64,
    },
}

#[derive(Subcommand)]
enum ScenarioCommand {
    /// Run scenario files; exit 0 if every expectation of every run holds, 1 if one
    /// fails, 2 if a file is invalid.
    Run {
        /// Scenario files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// sim: the deterministic simulator; cluster: real `pbft node` processes on loopback.
        #[arg(long, value_enum, default_value = "sim")]
        mode: scenario::ModeArg,
        /// Seed for every file (overrides the file's `seed`).
        #[arg(long, conflicts_with = "seeds")]
        seed: Option<u64>,
        /// Sweep the seeds A..B (inclusive).
        #[arg(long, value_name = "A..B")]
        seeds: Option<String>,
        /// Write every report as JSON to this file.
        #[arg(long, value_name = "OUT")]
        json: Option<PathBuf>,
    },
    /// Print the name and description of every scenario file in DIR.
    List {
        /// The directory.
        #[arg(default_value = "scenarios")]
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum ClientCommand {
    /// Transfer from the --key account; prints the result once f+1 validators agree.
    Transfer {
        /// Receiving account: hex public key or a client name from the cluster file.
        #[arg(long)]
        to: String,
        /// Amount.
        #[arg(long)]
        amount: u64,
    },
    /// The balance of ACCOUNT (or of the --key account).
    Balance {
        /// Hex public key or client name.
        account: Option<String>,
    },
    /// Generate load with the client keys next to the cluster file.
    Load {
        /// Client accounts to use (client-0.key ...).
        #[arg(long, default_value_t = 4)]
        clients: usize,
        /// Requests to submit.
        #[arg(long)]
        requests: usize,
        /// Requests in flight.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// JSON output.
        #[arg(long)]
        json: bool,
        /// Give up (exit 1) when a request is not accepted within this many seconds.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
}

#[derive(Subcommand)]
enum LedgerCommand {
    /// Check the block hash chain and the state digest.
    Verify {
        /// A node data directory (or its ledger/ directory).
        #[arg(long)]
        data: PathBuf,
    },
    /// Show the head, a block, or an account.
    Show {
        /// A node data directory (or its ledger/ directory).
        #[arg(long)]
        data: PathBuf,
        /// A block height.
        #[arg(long)]
        height: Option<u64>,
        /// An account (hex public key).
        #[arg(long)]
        account: Option<String>,
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
        Command::Demo {
            requests,
            concurrency,
        } => Ok(demo::cmd_demo(requests, concurrency)),
        Command::Keygen {
            validators,
            clients,
            out,
            host,
            base_port,
            checkpoint_interval,
            batch_size,
            balance,
            force,
        } => Ok(net::cmd_keygen(
            validators,
            clients,
            &out,
            host,
            base_port,
            checkpoint_interval,
            batch_size,
            balance,
            force,
        )),
        Command::Node {
            cluster,
            key,
            data,
            metrics,
            log_format,
            sync,
            faults,
        } => Ok(net::cmd_node(
            &cluster,
            &key,
            data,
            metrics,
            &log_format,
            sync,
            faults,
        )),
        Command::Status { cluster, json } => Ok(net::cmd_status(&cluster, json)),
        Command::Client {
            cluster,
            key,
            command,
        } => Ok(match command {
            ClientCommand::Transfer { to, amount } => match key {
                Some(k) => net::cmd_transfer(&cluster, &k, &to, amount),
                None => net::bad_input(anyhow::anyhow!("transfer needs --key FILE")),
            },
            ClientCommand::Balance { account } => {
                net::cmd_balance(&cluster, key.as_deref(), account.as_deref())
            }
            ClientCommand::Load {
                clients,
                requests,
                concurrency,
                json,
                timeout,
            } => net::cmd_load(
                &cluster,
                clients,
                requests,
                concurrency,
                json,
                Duration::from_secs(timeout.max(1)),
            ),
        }),
        Command::Ledger { command } => Ok(match command {
            LedgerCommand::Verify { data } => net::cmd_ledger_verify(&data),
            LedgerCommand::Show {
                data,
                height,
                account,
            } => net::cmd_ledger_show(&data, height, account.as_deref()),
        }),
        Command::Bench {
            command:
                BenchCommand::Cluster {
                    validators,
                    clients,
                    duration,
                    out,
                    inflight,
                    batch_size,
                    pipeline_depth,
                },
        } => Ok(bench::cmd_bench_cluster(bench::BenchArgs {
            validators,
            clients,
            duration,
            inflight,
            out,
            batch_size,
            pipeline_depth,
        })),
        Command::Scenario { command } => Ok(match command {
            ScenarioCommand::Run {
                files,
                mode,
                seed,
                seeds,
                json,
            } => scenario::cmd_run(&files, mode, seed, seeds.as_deref(), json.as_deref()),
            ScenarioCommand::List { dir } => scenario::cmd_list(&dir),
        }),
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
