//! `pbft node`: run a validator until SIGINT or SIGTERM.

use anyhow::{anyhow, Result};
use pbft_cluster::Cluster;
use pbft_crypto::{read_key_file, Keypair};
use pbft_faults::{control, Scripted, TraitorWindow};
use pbft_harness::supervise::TRAITOR_ENV;
use pbft_harness::Outcome;
use pbft_node::{ClientLimits, NodeOptions};
use pbft_traitor::{Behavior, Traitor};
use std::net::SocketAddr;
use std::path::PathBuf;

/// `pbft node`.
#[derive(clap::Args, Debug)]
pub struct NodeArgs {
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
    /// The cluster's first start: without a consensus log in the data directory, start
    /// at genesis. Leave it out on every later start: a validator whose log was lost
    /// (a wiped or replaced disk) then recovers before it votes again.
    #[arg(long)]
    genesis: bool,
    /// Most client connections open at once; beyond it the one idle longest is
    /// evicted (if idle for a second), or the new one refused.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..))]
    max_clients: u64,
    /// Most anonymous client connections from one IP address (connections bound to
    /// a client account count against the account instead).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..))]
    max_clients_per_ip: u64,
    /// Most client connections bound to one client account.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..))]
    max_clients_per_account: u64,
    /// Most incoming connections still in their handshake or hello at once (one
    /// address may hold --max-clients-per-ip of them); past half, unvalidated
    /// addresses are sent a QUIC Retry first.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..))]
    max_pending_connections: u64,
    /// A client connection that sends nothing for this long is closed (ms).
    #[arg(long, default_value_t = 60_000, value_parser = clap::value_parser!(u64).range(1..))]
    client_idle_timeout_ms: u64,
    /// Largest frame a client may send (bytes).
    #[arg(long, default_value_t = pbft_node::DEFAULT_MAX_CLIENT_FRAME as u64, value_parser = clap::value_parser!(u64).range(1..))]
    max_client_frame: u64,
    /// Once a client frame has begun, it must be complete within this time (ms).
    #[arg(long, default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(1..))]
    client_frame_timeout_ms: u64,
    /// Queries (status, balances) answered per second on one client connection, after
    /// a burst of as many; more are dropped and count as strikes.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    client_queries_per_sec: u32,
    /// Fault injection (scenario runner and demo only; hidden).
    #[command(flatten)]
    faults: FaultFlags,
}

/// The hidden fault-injection flags of `pbft node`. Each is refused unless the
/// scenario runner or the demo set [`TRAITOR_ENV`]`=1`.
#[derive(clap::Args, Debug, Default)]
pub struct FaultFlags {
    /// Misbehave on purpose with this traitor behaviour.
    #[arg(long, hide = true)]
    traitor: Option<String>,
    /// Serve the fault-injection control endpoint (partitions, traitor windows) here.
    #[arg(long, hide = true)]
    control: Option<SocketAddr>,
    /// Abort the process in the middle of the checkpoint at this sequence number.
    #[arg(long, hide = true)]
    crash_at_checkpoint: Option<u64>,
    /// The other traitors this one colludes with (beyond-f negative controls).
    #[arg(long, hide = true, value_delimiter = ',')]
    accomplices: Vec<u32>,
    /// Seed of the traitor's random choices.
    #[arg(long, hide = true)]
    traitor_seed: Option<u64>,
}

/// Whether an input error (exit 2) or a failure (exit 1) ended the node.
pub enum NodeFailure {
    /// Bad usage or input.
    BadInput(anyhow::Error),
    /// The node ran and failed.
    Failed(anyhow::Error),
}

/// What the fault flags ask for: scripted hooks instead of the honest ones.
struct Injection {
    traitor: Option<Behavior>,
    control: Option<SocketAddr>,
    crash_at_checkpoint: Option<u64>,
    accomplices: Vec<u32>,
    traitor_seed: u64,
}

/// The node's options from the command line. The only place that reads the fault
/// flags: bad input if one is given without [`TRAITOR_ENV`]`=1` or names something
/// that does not exist.
fn node_options(
    cluster: Cluster,
    keypair: Keypair,
    data: PathBuf,
    args: NodeArgs,
) -> Result<(NodeOptions, Option<Injection>)> {
    let f = args.faults;
    let allowed = std::env::var(TRAITOR_ENV).as_deref() == Ok("1");
    for (flag, given) in [
        ("--traitor", f.traitor.is_some()),
        ("--control", f.control.is_some()),
        ("--crash-at-checkpoint", f.crash_at_checkpoint.is_some()),
        ("--accomplices", !f.accomplices.is_empty()),
        ("--traitor-seed", f.traitor_seed.is_some()),
    ] {
        if given && !allowed {
            return Err(anyhow!(
                "{flag} is refused: fault injection is for the scenario runner and the demo only (they set {TRAITOR_ENV}=1)"
            ));
        }
    }
    let n = cluster.n();
    if let Some(bad) = f.accomplices.iter().find(|a| **a as usize >= n) {
        return Err(anyhow!(
            "--accomplices: validator {bad} does not exist (n = {n})"
        ));
    }
    let traitor = f
        .traitor
        .map(|b| b.parse().map_err(|e| anyhow!("--traitor {b:?}: {e}")))
        .transpose()?;
    if traitor.is_none() {
        for (flag, given) in [
            ("--accomplices", !f.accomplices.is_empty()),
            ("--traitor-seed", f.traitor_seed.is_some()),
        ] {
            if given {
                return Err(anyhow!("{flag} needs --traitor: it only shapes a traitor"));
            }
        }
    }
    let injected = traitor.is_some() || f.control.is_some() || f.crash_at_checkpoint.is_some();
    let injection = injected.then(|| Injection {
        traitor,
        control: f.control,
        crash_at_checkpoint: f.crash_at_checkpoint,
        accomplices: f.accomplices,
        traitor_seed: f.traitor_seed.unwrap_or(1),
    });
    let mut opts = NodeOptions::new(cluster, keypair, data);
    opts.metrics = args.metrics;
    opts.sync = args.sync;
    opts.genesis = args.genesis;
    opts.client_limits = ClientLimits {
        max_clients: usize::try_from(args.max_clients).unwrap_or(usize::MAX),
        max_clients_per_ip: usize::try_from(args.max_clients_per_ip).unwrap_or(usize::MAX),
        max_clients_per_account: usize::try_from(args.max_clients_per_account)
            .unwrap_or(usize::MAX),
        max_pending: usize::try_from(args.max_pending_connections).unwrap_or(usize::MAX),
        idle_timeout: std::time::Duration::from_millis(args.client_idle_timeout_ms),
        max_frame: usize::try_from(args.max_client_frame).unwrap_or(usize::MAX),
        frame_timeout: std::time::Duration::from_millis(args.client_frame_timeout_ms),
        queries_per_sec: args.client_queries_per_sec,
    };
    Ok((opts, injection))
}

/// Runs a validator with scripted fault hooks; a control endpoint, if asked for, is
/// bound first (a port in use is bad input).
async fn run_injected(
    opts: NodeOptions,
    id: u32,
    inj: Injection,
) -> Result<pbft_node::NodeSummary, NodeFailure> {
    let n = opts.cluster.n() as u32;
    let listener = match inj.control {
        Some(addr) => Some(
            control::bind(addr)
                .await
                .map_err(|e| NodeFailure::BadInput(anyhow!("--control {addr}: {e}")))?,
        ),
        None => None,
    };
    let mut hooks = Scripted::new(id, n, u64::from(id));
    if let Some(b) = inj.traitor {
        tracing::warn!(
            id,
            behavior = b.name(),
            "TRAITOR MODE: this validator misbehaves on purpose"
        );
        let t = Traitor::new(
            b,
            id,
            opts.key.clone(),
            opts.cluster.protocol_config(),
            inj.traitor_seed,
        )
        .with_accomplices(inj.accomplices);
        hooks = hooks.with_traitor(TraitorWindow::always(t));
    }
    if let Some(seq) = inj.crash_at_checkpoint {
        hooks = hooks.crash_at_checkpoint(seq);
    }
    let endpoint = listener.map(|l| {
        tracing::warn!(addr = ?l.local_addr().ok(), "fault-injection control endpoint enabled");
        tokio::spawn(control::serve(l, hooks.switchboard(), n))
    });
    let result = pbft_node::run(opts, hooks, termination()).await;
    if let Some(t) = endpoint {
        t.abort();
    }
    result.map_err(node_failure)
}

fn node_failure(e: pbft_node::NodeError) -> NodeFailure {
    if e.is_bad_input() {
        NodeFailure::BadInput(e.into())
    } else {
        NodeFailure::Failed(e.into())
    }
}

fn init_logs(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        let _ = builder.json().try_init();
    } else {
        let _ = builder.try_init();
    }
}

/// Resolves when SIGINT or SIGTERM arrives.
async fn termination() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

/// Runs the validator until it is asked to stop.
pub fn run(args: NodeArgs) -> Result<Outcome, NodeFailure> {
    let bad = NodeFailure::BadInput;
    let json = match args.log_format.as_str() {
        "pretty" => false,
        "json" => true,
        other => {
            return Err(bad(anyhow!(
                "--log-format {other:?}: expected pretty or json"
            )))
        }
    };
    let cluster = Cluster::load(&args.cluster).map_err(|e| bad(e.into()))?;
    let keypair = read_key_file(&args.key).map_err(|e| bad(e.into()))?;
    let Some(id) = cluster.validator_with_key(&keypair.public()).map(|v| v.id) else {
        return Err(bad(anyhow!(
            "{}: its public key {} is not a validator in {}",
            args.key.display(),
            keypair.public().to_hex(),
            cluster.path.display()
        )));
    };
    let data = args
        .data
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("pbft-data-{id}")));
    let (opts, injection) = node_options(cluster, keypair, data, args).map_err(bad)?;
    init_logs(json);
    let rt = tokio::runtime::Runtime::new().map_err(|e| NodeFailure::Failed(e.into()))?;
    let result = match injection {
        Some(inj) => rt.block_on(run_injected(opts, id, inj)),
        None => rt
            .block_on(pbft_node::run(opts, pbft_host::Honest, termination()))
            .map_err(node_failure),
    };
    match result {
        Ok(s) => {
            eprintln!(
                "validator {} stopped cleanly: view {}, last executed {}, head {}",
                s.id,
                s.view,
                s.last_executed,
                &s.head_hash[..16]
            );
            Ok(Outcome::Success)
        }
        Err(e) => Err(e),
    }
}
