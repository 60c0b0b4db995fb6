//! The networked commands: keygen, node, client, status, ledger.

use anyhow::{anyhow, bail, Context, Result};
use pbft_client::{percentiles, Client, Signer};
use pbft_cluster::{keygen, Cluster, KeygenSpec, ProtocolParams};
use pbft_crypto::{read_key_file, Keypair, PublicKey};
use pbft_executor::{Operation, Receipt};
use pbft_node::{NodeOptions, NodeSummary};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// The environment variable a scenario runner or the demo sets to allow `--traitor`.
pub const TRAITOR_ENV: &str = "PBFT_ALLOW_TRAITOR";

/// Exit code 2 with a message (bad usage or input).
pub fn bad_input(e: anyhow::Error) -> ExitCode {
    eprintln!("error: {e:#}");
    ExitCode::from(2)
}

/// Exit code 1 with a message (the operation ran and failed).
pub fn failed(e: anyhow::Error) -> ExitCode {
    eprintln!("failed: {e:#}");
    ExitCode::from(1)
}

/// `pbft keygen`.
#[allow(clippy::too_many_arguments)]
pub fn cmd_keygen(
    validators: usize,
    clients: usize,
    out: &Path,
    host: String,
    base_port: u16,
    checkpoint_interval: u64,
    batch_size: usize,
    balance: u64,
    force: bool,
) -> ExitCode {
    let params = ProtocolParams {
        checkpoint_interval,
        log_window: checkpoint_interval * 4,
        batch_size,
        ..ProtocolParams::default()
    };
    let spec = KeygenSpec {
        validators,
        clients,
        host,
        base_port,
        params,
        balance,
        force,
    };
    match keygen(out, &spec) {
        Ok(o) => {
            println!(
                "wrote {} ({} validators, f = {}, {} clients)",
                o.cluster_file.display(),
                o.cluster.n(),
                o.cluster.f(),
                o.cluster.clients.len()
            );
            for p in o.validator_keys.iter().chain(&o.client_keys) {
                println!("wrote {} (mode 0600)", p.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => bad_input(e.into()),
    }
}

/// Loads a cluster file (errors are bad input).
pub fn load_cluster(path: &Path) -> Result<Cluster> {
    Ok(Cluster::load(path)?)
}

/// Loads a key file (errors are bad input).
pub fn load_key(path: &Path) -> Result<Keypair> {
    Ok(read_key_file(path)?)
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

/// The hidden fault-injection flags of `pbft node`. Each is refused unless the
/// scenario runner or the demo set [`TRAITOR_ENV`]`=1`.
#[derive(clap::Args, Debug, Default)]
pub struct FaultFlags {
    /// Misbehave on purpose with this traitor behaviour.
    #[arg(long, hide = true)]
    pub traitor: Option<String>,
    /// Serve the fault-injection control endpoint (partitions, traitor windows) here.
    #[arg(long, hide = true)]
    pub control: Option<SocketAddr>,
    /// Abort the process in the middle of the checkpoint at this sequence number.
    #[arg(long, hide = true)]
    pub crash_at_checkpoint: Option<u64>,
    /// The other traitors this one colludes with (beyond-f negative controls).
    #[arg(long, hide = true, value_delimiter = ',')]
    pub accomplices: Vec<u32>,
    /// Seed of the traitor's random choices.
    #[arg(long, hide = true)]
    pub traitor_seed: Option<u64>,
}

/// `pbft node`.
pub fn cmd_node(
    cluster: &Path,
    key: &Path,
    data: Option<PathBuf>,
    metrics: Option<SocketAddr>,
    log_format: &str,
    sync: bool,
    faults: FaultFlags,
) -> ExitCode {
    let json = match log_format {
        "pretty" => false,
        "json" => true,
        other => return bad_input(anyhow!("--log-format {other:?}: expected pretty or json")),
    };
    let cluster = match load_cluster(cluster) {
        Ok(c) => c,
        Err(e) => return bad_input(e),
    };
    let keypair = match load_key(key) {
        Ok(k) => k,
        Err(e) => return bad_input(e),
    };
    let allowed = std::env::var(TRAITOR_ENV).as_deref() == Ok("1");
    for (flag, given) in [
        ("--traitor", faults.traitor.is_some()),
        ("--control", faults.control.is_some()),
        (
            "--crash-at-checkpoint",
            faults.crash_at_checkpoint.is_some(),
        ),
        ("--accomplices", !faults.accomplices.is_empty()),
        ("--traitor-seed", faults.traitor_seed.is_some()),
    ] {
        if given && !allowed {
            return bad_input(anyhow!(
                "{flag} is refused: fault injection is for the scenario runner and the demo only (they set {TRAITOR_ENV}=1)"
            ));
        }
    }
    let traitor = match &faults.traitor {
        None => None,
        Some(b) => match b.parse::<pbft_traitor::Behavior>() {
            Ok(b) => Some(b),
            Err(e) => return bad_input(anyhow!("--traitor {b:?}: {e}")),
        },
    };
    let Some(id) = cluster.validator_with_key(&keypair.public()).map(|v| v.id) else {
        return bad_input(anyhow!(
            "{}: its public key {} is not a validator in {}",
            key.display(),
            keypair.public().to_hex(),
            cluster.path.display()
        ));
    };
    let data = data.unwrap_or_else(|| PathBuf::from(format!("pbft-data-{id}")));
    let cluster_n = cluster.n();
    if let Some(bad) = faults
        .accomplices
        .iter()
        .find(|a| **a as usize >= cluster_n)
    {
        return bad_input(anyhow!(
            "--accomplices: validator {bad} does not exist (n = {cluster_n})"
        ));
    }
    init_logs(json);
    let mut opts = NodeOptions::new(cluster, keypair, data);
    opts.metrics = metrics;
    opts.sync = sync;
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => return failed(e.into()),
    };
    let injected =
        traitor.is_some() || faults.control.is_some() || faults.crash_at_checkpoint.is_some();
    let result: Result<NodeSummary, pbft_node::NodeError> = if injected {
        // a control port in use is bad input, reported before the validator starts
        let control = match faults.control {
            Some(addr) => match rt.block_on(pbft_faults::control::bind(addr)) {
                Ok(l) => Some(l),
                Err(e) => return bad_input(anyhow!("--control {addr}: {e}")),
            },
            None => None,
        };
        rt.block_on(run_with_faults(opts, id, traitor, faults, control))
    } else {
        rt.block_on(pbft_node::run(opts, pbft_host::Honest, termination()))
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
            ExitCode::SUCCESS
        }
        Err(e) if e.is_bad_input() => bad_input(e.into()),
        Err(e) => failed(e.into()),
    }
}

/// Runs a validator with scripted fault hooks (a traitor, a crash point, the control
/// endpoint of the scenario runner).
async fn run_with_faults(
    opts: NodeOptions,
    id: u32,
    traitor: Option<pbft_traitor::Behavior>,
    flags: FaultFlags,
    control: Option<tokio::net::TcpListener>,
) -> Result<NodeSummary, pbft_node::NodeError> {
    use pbft_faults::{control, Scripted, TraitorWindow};
    let n = opts.cluster.n() as u32;
    let mut faults = Scripted::new(id, n, u64::from(id));
    if let Some(b) = traitor {
        eprintln!(
            "warning: TRAITOR MODE: validator {id} misbehaves on purpose ({})",
            b.name()
        );
        let t = pbft_traitor::Traitor::new(
            b,
            id,
            opts.key.clone(),
            opts.cluster.protocol_config(),
            flags.traitor_seed.unwrap_or(1),
        )
        .with_accomplices(flags.accomplices.clone());
        faults = faults.with_traitor(TraitorWindow::always(t));
    }
    if let Some(seq) = flags.crash_at_checkpoint {
        faults = faults.crash_at_checkpoint(seq);
    }
    let control_task = control.map(|listener| {
        if let Ok(addr) = listener.local_addr() {
            eprintln!("warning: fault-injection control endpoint enabled on {addr}");
        }
        tokio::spawn(control::serve(listener, faults.switchboard(), n))
    });
    let result = pbft_node::run(opts, faults, termination()).await;
    if let Some(t) = control_task {
        t.abort();
    }
    result
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Runtime::new()?)
}

/// Describes a receipt for people.
pub fn describe(result: &[u8]) -> (bool, String) {
    match Receipt::decode(result) {
        Some(Receipt::Applied { balance }) => (true, format!("applied; new balance {balance}")),
        Some(Receipt::Failed { reason }) => (false, format!("rejected: {reason:?}")),
        None => (false, "undecodable receipt".into()),
    }
}

/// `pbft client transfer`.
pub fn cmd_transfer(cluster: &Path, key: &Path, to: &str, amount: u64) -> ExitCode {
    let (cluster, keypair) = match load_cluster(cluster).and_then(|c| Ok((c, load_key(key)?))) {
        Ok(x) => x,
        Err(e) => return bad_input(e),
    };
    let Some(to_key) = cluster.resolve_account(to) else {
        return bad_input(anyhow!(
            "--to {to:?}: not a public key (64 hex digits) nor a client name in {}",
            cluster.path.display()
        ));
    };
    if amount == 0 {
        return bad_input(anyhow!("--amount must be at least 1"));
    }
    let run = async {
        let mut client = Client::connect(&cluster).await?;
        let info = client.account(keypair.public()).await?;
        let mut signer = Signer::new(keypair.clone(), info.next_request_id);
        let req = signer.sign(Operation::transfer(to_key, amount).encode());
        let accepted = client.submit(vec![req], 1, |_| {}).await?;
        client.close().await;
        accepted
            .into_iter()
            .next()
            .ok_or_else(|| anyhow!("no result"))
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => return failed(e),
    };
    match rt.block_on(run) {
        Ok(a) => {
            let (ok, text) = describe(&a.result);
            println!(
                "transfer of {amount} to {} (request {}, sequence {}): {text}",
                cluster
                    .client_name(&to_key)
                    .map(str::to_string)
                    .unwrap_or_else(|| to_key.short()),
                a.request_id,
                a.seq
            );
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => failed(e),
    }
}

/// `pbft client balance`.
pub fn cmd_balance(cluster: &Path, key: Option<&Path>, account: Option<&str>) -> ExitCode {
    let cluster = match load_cluster(cluster) {
        Ok(c) => c,
        Err(e) => return bad_input(e),
    };
    let account: PublicKey = match (account, key) {
        (Some(a), _) => match cluster.resolve_account(a) {
            Some(k) => k,
            None => {
                return bad_input(anyhow!(
                    "{a:?}: not a public key (64 hex digits) nor a client name in {}",
                    cluster.path.display()
                ))
            }
        },
        (None, Some(k)) => match load_key(k) {
            Ok(k) => k.public(),
            Err(e) => return bad_input(e),
        },
        (None, None) => return bad_input(anyhow!("give an ACCOUNT or --key")),
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => return failed(e),
    };
    let res = rt.block_on(async {
        let mut client = Client::connect(&cluster).await?;
        let info = client.account(account).await;
        client.close().await;
        Ok::<_, anyhow::Error>(info?)
    });
    match res {
        Ok(info) => match info.balance {
            Some(b) => {
                println!("{b}");
                ExitCode::SUCCESS
            }
            None => failed(anyhow!("account {} does not exist", account.to_hex())),
        },
        Err(e) => failed(e),
    }
}

/// Client keys next to the cluster file: `client-<j>.key`.
pub fn client_keys(cluster: &Cluster, count: usize) -> Result<Vec<Keypair>> {
    let dir = cluster
        .path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    if count == 0 {
        bail!("--clients must be at least 1");
    }
    (0..count)
        .map(|j| {
            let p = dir.join(pbft_cluster::client_key_name(j));
            read_key_file(&p).with_context(|| {
                format!("client {j} of {count}: the load generator signs with the key files next to the cluster file")
            })
        })
        .collect()
}

/// Pre-signs `requests` transfers of 1 unit between the given clients, round robin.
pub async fn presign(
    client: &mut Client,
    keys: &[Keypair],
    requests: usize,
) -> Result<Vec<pbft_protocol::SignedRequest>> {
    let mut signers = Vec::new();
    for k in keys {
        let info = client.account(k.public()).await?;
        if info.balance.is_none() {
            bail!(
                "client {} has no account in the cluster's genesis",
                k.public().short()
            );
        }
        signers.push(Signer::new(k.clone(), info.next_request_id));
    }
    let publics: Vec<PublicKey> = signers.iter().map(|s| s.public()).collect();
    let n = signers.len();
    Ok((0..requests)
        .map(|i| {
            let to = publics[(i + 1) % n];
            signers[i % n].sign(Operation::transfer(to, 1).encode())
        })
        .collect())
}

/// Most requests one `pbft client load` signs up front: about 1 GiB of signed requests
/// and under two minutes of signing on this project's machine. 100 million asked for
/// 32 GB at once and aborted the process.
pub const MAX_LOAD_REQUESTS: usize = 3_000_000;

/// `pbft client load`.
pub fn cmd_load(
    cluster: &Path,
    clients: usize,
    requests: usize,
    concurrency: usize,
    json: bool,
    timeout: Duration,
) -> ExitCode {
    if requests > MAX_LOAD_REQUESTS {
        return bad_input(anyhow!(
            "--requests {requests}: at most {MAX_LOAD_REQUESTS}; the load generator signs \
             every request before it starts and holds them all in memory (about 0.3 KiB \
             each); run it several times for a longer load"
        ));
    }
    if concurrency == 0 {
        return bad_input(anyhow!("--concurrency must be at least 1"));
    }
    let cluster = match load_cluster(cluster) {
        Ok(c) => c,
        Err(e) => return bad_input(e),
    };
    let keys = match client_keys(&cluster, clients) {
        Ok(k) => k,
        Err(e) => return bad_input(e),
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => return failed(e),
    };
    let res = rt.block_on(async {
        let mut client = Client::connect(&cluster).await?;
        if !json {
            eprintln!(
                "signing {requests} requests with {} client keys",
                keys.len()
            );
        }
        let reqs = presign(&mut client, &keys, requests).await?;
        client.deadline = timeout;
        eprintln!(
            "signed {} requests; submitting with {concurrency} in flight",
            reqs.len()
        );
        let started = Instant::now();
        let accepted = client
            .submit(reqs, concurrency, |p| {
                if !json {
                    let secs = started.elapsed().as_secs_f64().max(1e-9);
                    eprint!(
                        "\r  committed {:>8}  in flight {:>5}  {:>9.0} req/s  view {}   ",
                        p.accepted,
                        p.in_flight,
                        p.accepted as f64 / secs,
                        p.view
                    );
                }
            })
            .await?;
        let elapsed = started.elapsed();
        client.close().await;
        Ok::<_, anyhow::Error>((accepted, elapsed))
    });
    let (accepted, elapsed) = match res {
        Ok(x) => x,
        Err(e) => return failed(e),
    };
    let (p50, p90, p99, max) = percentiles(&accepted);
    let rejected = accepted.iter().filter(|a| !describe(&a.result).0).count();
    let tput = accepted.len() as f64 / elapsed.as_secs_f64().max(1e-9);
    if json {
        println!(
            "{{\"committed\":{},\"rejected\":{},\"seconds\":{:.3},\"throughput\":{:.1},\"p50_ms\":{:.2},\"p90_ms\":{:.2},\"p99_ms\":{:.2},\"max_ms\":{:.2}}}",
            accepted.len(),
            rejected,
            elapsed.as_secs_f64(),
            tput,
            p50,
            p90,
            p99,
            max
        );
    } else {
        eprintln!();
        println!(
            "committed {} requests ({} rejected by the ledger) in {:.2} s: {:.0} req/s; latency p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            accepted.len(),
            rejected,
            elapsed.as_secs_f64(),
            tput,
            p50,
            p90,
            p99,
            max
        );
    }
    ExitCode::SUCCESS
}

/// `pbft status`.
pub fn cmd_status(cluster: &Path, json: bool) -> ExitCode {
    let cluster = match load_cluster(cluster) {
        Ok(c) => c,
        Err(e) => return bad_input(e),
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => return failed(e),
    };
    let res = rt.block_on(async {
        let mut client = Client::connect(&cluster).await?;
        let s = client.status(Duration::from_secs(3)).await;
        client.close().await;
        Ok::<_, anyhow::Error>(s?)
    });
    let rows = match res {
        Ok(r) => r,
        Err(e) => return failed(e),
    };
    print!("{}", status_table(&rows, json, |_| String::new()));
    if rows.iter().all(|(_, s)| s.is_some()) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// The status table (or JSON lines) for `rows`; `role` labels a validator.
pub fn status_table(
    rows: &[(u32, Option<pbft_protocol::NodeStatus>)],
    json: bool,
    role: impl Fn(u32) -> String,
) -> String {
    let mut out = String::new();
    if json {
        out.push('[');
        for (i, (id, s)) in rows.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            match s {
                Some(s) => out.push_str(&format!(
                    "{{\"validator\":{id},\"reachable\":true,\"view\":{},\"changing_view\":{},\"last_executed\":{},\"stable_checkpoint\":{},\"head\":\"{}\",\"halted\":{},\"evidence_against\":{:?}}}",
                    s.view,
                    s.changing_view,
                    s.last_executed,
                    s.stable_checkpoint,
                    s.head_hash.to_hex(),
                    s.halted.is_some(),
                    s.evidence_against
                )),
                None => out.push_str(&format!("{{\"validator\":{id},\"reachable\":false}}")),
            }
        }
        out.push_str("]\n");
        return out;
    }
    out.push_str(&format!(
        "{:<10} {:<10} {:<10} {:>6} {:>14} {:>11}  {:<16}\n",
        "validator", "role", "reachable", "view", "last executed", "checkpoint", "ledger head"
    ));
    for (id, s) in rows {
        match s {
            Some(s) => out.push_str(&format!(
                "{:<10} {:<10} {:<10} {:>6} {:>14} {:>11}  {:<16}{}\n",
                id,
                role(*id),
                "yes",
                format!("{}{}", s.view, if s.changing_view { "*" } else { "" }),
                s.last_executed,
                s.stable_checkpoint,
                &s.head_hash.to_hex()[..16],
                s.halted
                    .as_ref()
                    .map(|h| format!("  HALTED: {h}"))
                    .unwrap_or_default()
            )),
            None => out.push_str(&format!("{:<10} {:<10} {:<10}\n", id, role(*id), "no")),
        }
    }
    out
}

/// The ledger directory inside a node data directory, or the directory itself.
fn ledger_dir(data: &Path) -> PathBuf {
    let inner = data.join("ledger");
    if inner.is_dir() {
        inner
    } else {
        data.to_path_buf()
    }
}

/// `pbft ledger verify`.
pub fn cmd_ledger_verify(data: &Path) -> ExitCode {
    if !data.is_dir() {
        return bad_input(anyhow!("--data {}: no such directory", data.display()));
    }
    match pbft_executor::verify_ledger(&ledger_dir(data)) {
        Ok(r) => {
            println!(
                "ledger OK: {} blocks chained, head {} at height {}, state digest {} ({} batches since the checkpoint at {} rechecked), LtHash {} over {} accounts",
                r.blocks_checked,
                r.head.short(),
                r.height,
                r.state_digest.short(),
                r.height - r.lthash_at,
                r.lthash_at,
                r.lthash.short(),
                r.accounts
            );
            ExitCode::SUCCESS
        }
        Err(e) => failed(anyhow!("ledger in {} does not verify: {e}", data.display())),
    }
}

/// `pbft ledger show`.
pub fn cmd_ledger_show(data: &Path, height: Option<u64>, account: Option<&str>) -> ExitCode {
    if !data.is_dir() {
        return bad_input(anyhow!("--data {}: no such directory", data.display()));
    }
    let account = match account {
        None => None,
        Some(a) => match PublicKey::from_hex(a.trim()) {
            Ok(k) => Some(k),
            Err(e) => return bad_input(anyhow!("--account {a:?}: {e}")),
        },
    };
    match pbft_executor::show_ledger(&ledger_dir(data), height, account.as_ref()) {
        Ok(s) => {
            println!(
                "head: height {}, hash {}, state digest {}; stable checkpoint {}",
                s.head.height,
                s.head.hash.to_hex(),
                s.head.state_digest.to_hex(),
                s.stable
            );
            if let Some(h) = height {
                match s.block {
                    Some((b, hash)) => println!(
                        "block {h}: hash {}, prev {}, batch {}, receipts root {}, state digest {}",
                        hash.to_hex(),
                        b.prev.to_hex(),
                        b.batch_digest.to_hex(),
                        b.receipts_root.to_hex(),
                        b.state_digest.to_hex()
                    ),
                    None => {
                        return failed(anyhow!(
                            "no block at height {h} in this ledger (a validator that caught up by state transfer holds the blocks from the installed checkpoint on, not the ones below it)"
                        ))
                    }
                }
            }
            if let (Some(a), Some(bal)) = (account, s.balance) {
                match bal {
                    Some(b) => println!("account {}: balance {b}", a.to_hex()),
                    None => return failed(anyhow!("account {} does not exist", a.to_hex())),
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => failed(anyhow!("{}: {e}", data.display())),
    }
}
