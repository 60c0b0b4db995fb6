//! Cluster mode of `pbft scenario run`: the scenario on real `pbft node` processes.
//!
//! Each run gets a fresh directory with a new cluster file and keys (n consecutive free
//! UDP ports on loopback), one RocksDB data directory per validator, and one process
//! per validator started from this same binary. Then, on the real clock from the moment
//! every validator answers (t = 0):
//!
//! * the workload runs as the scenario's clients, over QUIC like `pbft client`;
//! * traitors are the same [`pbft_traitor`] code as in the simulator, switched on a node
//!   by `--traitor` (with `--accomplices` and `--traitor-seed`) and in time by the
//!   node's control endpoint (`traitor on|off`);
//! * a crash is a SIGKILL; `mid_checkpoint` asks the node to abort inside its next
//!   checkpoint (`crash-at-checkpoint`); a restart is a new process on the same data
//!   directory, or on an emptied one for `disk = "wipe"`;
//! * partitions and isolation are the transport's fault-injection layer: each node is
//!   told which peers to drop frames to and from (`block ...`), so they act on real
//!   traffic, in both directions; clients reach every validator.
//!
//! At the end the runner asks every validator for its status, reads each one's peak
//! resident memory (VmHWM) while it still runs, stops them, verifies every honest
//! ledger offline (hash chain and state digest) and compares the honest ledgers block
//! by block at their common height. A difference, a ledger that does not verify, a
//! halted honest validator, an honest process that died on its own, or signed evidence
//! against an honest validator is reported as a violation.
//!
//! `drop_rate` and `duplicate_rate` are applied by the same layer to the frames each
//! node sends to other validators (`loss D P`). Message delays are the real network's,
//! so `min_delay_ms`/`max_delay_ms` are ignored. A scenario that gives one validator two
//! different behaviours is refused: a node process runs one.

use crate::demo::Children;
use crate::net::{load_key, TRAITOR_ENV};
use crate::procfs::status_kb;
use pbft_client::{Client, Signer};
use pbft_cluster::{keygen, Cluster, KeygenSpec, ProtocolParams};
use pbft_crypto::Keypair;
use pbft_executor::Operation;
use pbft_protocol::{NodeStatus, SignedRequest};
use pbft_scenario::model::{FaultKind, Scenario};
use pbft_scenario::report::{Measured, Mode, ProbeRow, ScenarioReport, ValidatorRow};
use pbft_scenario::{RunError, Runner};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// Set to `1` to keep each run's directory (cluster file, keys, data, node logs); its
/// path is printed on stderr.
pub const KEEP_DIR_ENV: &str = "PBFT_SCENARIO_KEEP_DIR";

/// How long the validators get to come up before a run starts.
const STARTUP: Duration = Duration::from_secs(30);
/// How long, after the workload is done, the runner waits for the honest validators
/// to reach the same height (bounded by the deadline, and at least this).
const SETTLE_MIN: Duration = Duration::from_secs(5);

/// Real validator processes on loopback as a [`Runner`].
#[derive(Clone, Copy, Debug, Default)]
pub struct ClusterRunner;

fn failed(reason: impl std::fmt::Display) -> RunError {
    RunError::Failed {
        mode: "cluster",
        reason: reason.to_string(),
    }
}

fn unsupported(reason: impl Into<String>) -> RunError {
    RunError::Unsupported {
        mode: "cluster",
        reason: reason.into(),
    }
}

impl Runner for ClusterRunner {
    fn mode(&self) -> Mode {
        Mode::Cluster
    }

    fn observe(&self, sc: &Scenario, seed: u64) -> Result<ScenarioReport, RunError> {
        check_supported(sc)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(failed)?;
        let dir = tempfile::Builder::new()
            .prefix(&format!("pbft-scenario-{}-", sc.name))
            .tempdir()
            .map_err(|e| failed(format!("creating a run directory: {e}")))?;
        let result = rt.block_on(run(sc, seed, dir.path()));
        if std::env::var(KEEP_DIR_ENV).as_deref() == Ok("1") {
            let kept = dir.keep();
            eprintln!("{}: run directory kept at {}", sc.name, kept.display());
        }
        result
    }
}

/// Refuses what cluster mode cannot do faithfully.
pub fn check_supported(sc: &Scenario) -> Result<(), RunError> {
    let mut behavior: BTreeMap<u32, &str> = BTreeMap::new();
    for t in &sc.traitors {
        let b = t.behavior.name();
        if let Some(other) = behavior.insert(t.node, b) {
            if other != b {
                return Err(unsupported(format!(
                    "validator {} is given two behaviours ({other} and {b}); a node process runs one",
                    t.node
                )));
            }
        }
    }
    Ok(())
}

/// One validator process and what the runner knows about it.
struct Node {
    id: u32,
    traitor: Option<&'static str>,
    child: Option<Child>,
    control_port: u16,
    crashes: u32,
    wiped: bool,
    /// Asked to abort inside its next checkpoint.
    abort_planned: bool,
    /// Why it stopped on its own, if it did when nobody asked.
    died: Option<String>,
    peak_rss_kb: u64,
    last_status: Option<NodeStatus>,
}

impl Node {
    fn running(&self) -> bool {
        self.child.is_some()
    }

    /// Notices an exit: a planned abort is a crash, anything else is a death.
    fn reap(&mut self) {
        let Some(c) = &mut self.child else { return };
        if let Ok(Some(status)) = c.try_wait() {
            self.child = None;
            self.crashes += 1;
            if self.abort_planned {
                self.abort_planned = false;
            } else {
                self.died = Some(format!("the process exited on its own ({status})"));
            }
        }
    }

    fn sample_rss(&mut self) {
        if let Some(c) = &self.child {
            if let Some(kb) = status_kb(c.id(), "VmHWM") {
                self.peak_rss_kb = self.peak_rss_kb.max(kb);
            }
        }
    }

    /// SIGKILL, as a crash.
    fn kill(&mut self) {
        self.sample_rss();
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            self.crashes += 1;
            self.abort_planned = false;
        }
    }
}

impl Drop for Node {
    /// A run that ends early (an error, a panic) leaves no process behind.
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Everything a run needs to start and restart processes.
struct Setup {
    exe: PathBuf,
    dir: PathBuf,
    cluster: Cluster,
    seed: u64,
    traitor_ids: Vec<u32>,
}

impl Setup {
    fn data(&self, id: u32) -> PathBuf {
        self.dir.join(format!("data-{id}"))
    }

    fn spawn(&self, node: &Node) -> Result<Child, RunError> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("validator-{}.log", node.id)))
            .map_err(|e| failed(format!("creating the log of validator {}: {e}", node.id)))?;
        let mut cmd = Command::new(&self.exe);
        cmd.arg("node")
            .arg("--cluster")
            .arg(&self.cluster.path)
            .arg("--key")
            .arg(
                self.dir
                    .join(pbft_cluster::validator_key_name(node.id as usize)),
            )
            .arg("--data")
            .arg(self.data(node.id))
            .arg("--log-format")
            .arg("json")
            .arg("--control")
            .arg(format!("127.0.0.1:{}", node.control_port))
            .env(TRAITOR_ENV, "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(b) = node.traitor {
            let accomplices: Vec<String> = self
                .traitor_ids
                .iter()
                .filter(|t| **t != node.id)
                .map(|t| t.to_string())
                .collect();
            cmd.arg("--traitor").arg(b).arg("--traitor-seed").arg(
                self.seed
                    .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                    .wrapping_add(node.id as u64)
                    .to_string(),
            );
            if !accomplices.is_empty() {
                cmd.arg("--accomplices").arg(accomplices.join(","));
            }
        }
        cmd.spawn()
            .map_err(|e| failed(format!("starting validator {}: {e}", node.id)))
    }
}

/// `n` consecutive free UDP ports on loopback.
pub(crate) fn free_udp_ports(n: usize, salt: u64) -> Result<u16, RunError> {
    let span = 40_000u64 - n as u64;
    let start = 20_000 + (salt.wrapping_mul(7919) + std::process::id() as u64 * 131) % span;
    for i in 0..2_000u64 {
        let base = (20_000 + (start - 20_000 + i * (n as u64 + 3)) % span) as u16;
        let socks: Vec<_> = (0..n as u16)
            .map(|k| std::net::UdpSocket::bind(("127.0.0.1", base + k)))
            .collect();
        if socks.iter().all(|s| s.is_ok()) {
            return Ok(base);
        }
    }
    Err(failed(format!("found no {n} consecutive free UDP ports")))
}

/// A free TCP port on loopback.
fn free_tcp_port() -> Result<u16, RunError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| failed(format!("no free TCP port: {e}")))
}

/// Sends one control command and checks the answer.
async fn control(port: u16, command: &str) -> Result<(), String> {
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| e.to_string())?;
        s.write_all(format!("{command}\n").as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut line = String::new();
        BufReader::new(s)
            .read_line(&mut line)
            .await
            .map_err(|e| e.to_string())?;
        match line.trim() {
            "ok" => Ok(()),
            other => Err(format!("answered {other:?}")),
        }
    };
    tokio::time::timeout(Duration::from_secs(3), exchange)
        .await
        .map_err(|_| "no answer within 3 s".to_string())?
}

/// Sends a command to a node, retrying while it comes up.
async fn control_retry(port: u16, command: &str, within: Duration) -> Result<(), String> {
    let until = Instant::now() + within;
    loop {
        match control(port, command).await {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() >= until => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// What happens at one point of the timeline.
#[derive(Clone, Debug)]
enum Event {
    Fault(FaultKind),
    /// A traitor's behaviour switched on or off.
    Traitor(u32, bool),
    Probe,
}

/// Whether `node`'s traitor behaviour is on at `t_ms`.
fn traitor_on(sc: &Scenario, node: u32, t_ms: u64) -> bool {
    sc.traitors
        .iter()
        .filter(|t| t.node == node)
        .any(|t| t.from_ms <= t_ms && t_ms < t.until_ms.unwrap_or(u64::MAX))
}

/// The timeline: faults, traitor window edges and probes, in time order (faults first
/// within an instant, then traitor switches, then probes).
fn timeline(sc: &Scenario) -> Vec<(u64, Event)> {
    let mut ev: Vec<(u64, u8, Event)> = Vec::new();
    for f in &sc.faults {
        ev.push((f.at_ms, 0, Event::Fault(f.action.clone())));
    }
    let mut edges: BTreeSet<(u32, u64)> = BTreeSet::new();
    for t in &sc.traitors {
        edges.insert((t.node, t.from_ms));
        if let Some(u) = t.until_ms {
            edges.insert((t.node, u));
        }
    }
    for (node, at) in edges {
        if at > 0 && at <= sc.expect.deadline_ms {
            ev.push((at, 1, Event::Traitor(node, traitor_on(sc, node, at))));
        }
    }
    for p in sc.probe_times() {
        ev.push((p, 2, Event::Probe));
    }
    ev.sort_by_key(|(at, order, _)| (*at, *order));
    ev.into_iter().map(|(at, _, e)| (at, e)).collect()
}

/// The peers each node must drop, from the current partition.
fn blocked_sets(n: usize, groups: Option<&[Vec<u32>]>) -> Vec<BTreeSet<u32>> {
    (0..n as u32)
        .map(|i| match groups {
            None => BTreeSet::new(),
            Some(groups) => {
                let mine = groups.iter().find(|g| g.contains(&i));
                (0..n as u32)
                    .filter(|j| *j != i && !mine.is_some_and(|g| g.contains(j)))
                    .collect()
            }
        })
        .collect()
}

/// The `loss` command of the scenario's network, if it loses or duplicates anything.
fn loss_command(sc: &Scenario) -> Option<String> {
    let (d, p) = (sc.network.drop_rate, sc.network.duplicate_rate);
    (d > 0.0 || p > 0.0).then(|| format!("loss {d} {p}"))
}

fn block_command(set: &BTreeSet<u32>) -> String {
    let ids: Vec<String> = set.iter().map(|i| i.to_string()).collect();
    format!("block {}", ids.join(" ")).trim_end().to_string()
}

/// What the workload measured.
#[derive(Default)]
struct WorkloadOutcome {
    committed: u64,
    all_committed_ms: Option<u64>,
    latencies_us: Vec<u64>,
    error: Option<String>,
}

/// The scenario's client requests, signed: the valid transfers and overdrafts (which
/// must each be accepted) in submission order, and the forged ones.
struct Plan {
    valid: Vec<SignedRequest>,
    forged: Vec<SignedRequest>,
}

/// The share of `total` that client `i` of `k` gets.
fn share(total: usize, i: usize, k: usize) -> usize {
    total / k + usize::from(i < total % k)
}

fn plan(sc: &Scenario, keys: &[Keypair], seed: u64) -> Plan {
    let w = &sc.workload;
    let k = keys.len();
    let publics: Vec<_> = keys.iter().map(|k| k.public()).collect();
    let mut x = seed | 1;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut per_client: Vec<Vec<SignedRequest>> = Vec::new();
    let mut forged = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let mut signer = Signer::new(key.clone(), 1);
        let valid = share(w.requests, i, k);
        let over = share(w.overdrafts, i, k);
        let mut mine = Vec::new();
        let all = valid + over;
        for j in 0..all {
            let to = publics[(i + 1 + j) % k.max(1)];
            // exactly `over` overdrafts, spread evenly among the valid transfers
            let is_over = (j + 1) * over / all > j * over / all;
            let amount = if is_over {
                w.balance.saturating_mul(10)
            } else {
                1 + rnd() % 100
            };
            mine.push(signer.sign(Operation::transfer(to, amount).encode()));
        }
        // a forged request reuses a real request id of this client, as an attacker
        // forging "request 7 of client c" would
        for j in 0..share(w.invalid_signatures, i, k) {
            let body = match mine.get(j % mine.len().max(1)) {
                Some(r) => r.body.clone(),
                None => {
                    signer
                        .sign(Operation::transfer(publics[0], 1).encode())
                        .body
                }
            };
            let mut r = pbft_protocol::Signed::sign(body, key);
            r.sig.0[5] ^= 0x40;
            forged.push(r);
        }
        per_client.push(mine);
    }
    // round robin across clients, so that every client has requests in flight
    let mut valid = Vec::new();
    let longest = per_client.iter().map(Vec::len).max().unwrap_or(0);
    for j in 0..longest {
        for c in &per_client {
            if let Some(r) = c.get(j) {
                valid.push(r.clone());
            }
        }
    }
    Plan { valid, forged }
}

/// Runs the workload: the valid requests in rounds (one round = every client's
/// `concurrency` requests; `think_ms` between rounds), the forged requests and the
/// replays sent halfway through.
async fn workload(
    cluster: Cluster,
    sc: Scenario,
    plan: Plan,
    t0: Instant,
    accepted: Arc<AtomicU64>,
) -> WorkloadOutcome {
    let mut out = WorkloadOutcome::default();
    let mut client = match Client::connect(&cluster).await {
        Ok(c) => c,
        Err(e) => {
            out.error = Some(format!("client: {e}"));
            return out;
        }
    };
    let deadline = Duration::from_millis(sc.expect.deadline_ms);
    client.deadline = deadline;
    // (the client's retransmission delay is T/4 of the cluster file, which carries the
    // scenario's view timeout)
    let w = &sc.workload;
    let in_flight = (w.clients * w.concurrency).max(1);
    let round = if w.think_ms > 0 {
        in_flight
    } else {
        plan.valid.len().max(1)
    };
    let total = plan.valid.len();
    let half = total / 2;
    let mut done_valid: Vec<SignedRequest> = Vec::new();
    let mut sent_specials = false;
    let mut queue = plan.valid.into_iter().peekable();
    while queue.peek().is_some() {
        // the specials go out once half of the valid requests were accepted
        let take = if !sent_specials && done_valid.len() < half {
            round.min(half - done_valid.len()).max(1)
        } else {
            round
        };
        let chunk: Vec<SignedRequest> = queue.by_ref().take(take).collect();
        let base = accepted.load(Ordering::SeqCst);
        let r = client
            .submit(chunk.clone(), in_flight, |p| {
                accepted.store(base + p.accepted as u64, Ordering::SeqCst);
            })
            .await;
        match r {
            Ok(acc) => {
                out.latencies_us
                    .extend(acc.iter().map(|a| a.latency.as_micros() as u64));
                done_valid.extend(chunk);
            }
            Err(e) => {
                out.error = Some(format!("client: {e}"));
                break;
            }
        }
        if !sent_specials && done_valid.len() >= half {
            sent_specials = true;
            for f in &plan.forged {
                client.send_unacknowledged(f);
            }
            for i in 0..w.replays {
                if let Some(r) = done_valid.get(i * 7 % done_valid.len().max(1)) {
                    client.send_unacknowledged(r);
                }
            }
        }
        if w.think_ms > 0 && queue.peek().is_some() {
            tokio::time::sleep(Duration::from_millis(w.think_ms)).await;
        }
    }
    out.committed = accepted.load(Ordering::SeqCst);
    if out.error.is_none() && done_valid.len() == total {
        out.all_committed_ms = Some(t0.elapsed().as_millis() as u64);
    }
    client.close().await;
    out
}

/// The status of every validator (`None` where none came within `wait`).
async fn statuses(client: &mut Client, wait: Duration) -> Vec<Option<NodeStatus>> {
    match client.status(wait).await {
        Ok(s) => s.into_iter().map(|(_, x)| x).collect(),
        Err(_) => Vec::new(),
    }
}

async fn run(sc: &Scenario, seed: u64, dir: &Path) -> Result<ScenarioReport, RunError> {
    let n = sc.cluster.validators;
    let exe = std::env::current_exe().map_err(|e| failed(format!("locating pbft: {e}")))?;
    let base_port = free_udp_ports(n, seed)?;
    let params = ProtocolParams {
        checkpoint_interval: sc.cluster.checkpoint_interval,
        log_window: sc.cluster.checkpoint_interval * 4,
        batch_size: sc.cluster.batch_size,
        view_timeout_ms: sc.cluster.view_timeout_ms,
        // Pinned, not the keygen default (a throughput setting for one shared host):
        // scenario files are written for a pipelined primary, and their expectations
        // (checkpoints reached, the twins they are compared with) were set with 2.
        pipeline_depth: 2,
        ..ProtocolParams::default()
    };
    let spec = KeygenSpec {
        validators: n,
        clients: sc.workload.clients,
        host: "127.0.0.1".into(),
        base_port,
        params,
        balance: sc.workload.balance,
        force: true,
    };
    let out = keygen(dir, &spec).map_err(|e| failed(format!("keygen: {e}")))?;
    let client_keys: Vec<Keypair> = out
        .client_keys
        .iter()
        .map(|p| load_key(p))
        .collect::<Result<_, _>>()
        .map_err(|e| failed(format!("{e:#}")))?;
    let traitor_ids = sc.traitor_ids();
    let setup = Setup {
        exe,
        dir: dir.to_path_buf(),
        cluster: out.cluster,
        seed,
        traitor_ids: traitor_ids.clone(),
    };
    let mut nodes: Vec<Node> = Vec::new();
    for id in 0..n as u32 {
        let traitor = sc
            .traitors
            .iter()
            .find(|t| t.node == id)
            .map(|t| t.behavior.name());
        nodes.push(Node {
            id,
            traitor,
            child: None,
            control_port: free_tcp_port()?,
            crashes: 0,
            wiped: false,
            abort_planned: false,
            died: None,
            peak_rss_kb: 0,
            last_status: None,
        });
    }
    for node in &mut nodes {
        node.child = Some(setup.spawn(node)?);
    }
    let result = drive(sc, seed, &setup, &mut nodes, &client_keys).await;
    // whatever happened, no process outlives the run: SIGTERM to all, then SIGKILL
    // what is left after 10 s
    let mut children = Children(Vec::new());
    for node in &mut nodes {
        node.sample_rss();
        if let Some(c) = node.child.take() {
            children.0.push((node.id, c));
        }
    }
    children.stop(Duration::from_secs(10));
    let mut report = result?;
    check_ledgers(&setup, &nodes, &mut report);
    Ok(report)
}

async fn drive(
    sc: &Scenario,
    seed: u64,
    setup: &Setup,
    nodes: &mut [Node],
    client_keys: &[Keypair],
) -> Result<ScenarioReport, RunError> {
    let n = nodes.len();
    let mut probe_client = Client::connect(&setup.cluster)
        .await
        .map_err(|e| failed(format!("client: {e}")))?;
    crate::demo::wait_reachable(&mut probe_client, n, STARTUP)
        .await
        .map_err(|e| failed(format!("{e:#} (logs in {})", setup.dir.display())))?;
    // the background loss rate, and traitor windows that open later start closed
    let loss = loss_command(sc);
    for node in nodes.iter() {
        if let Some(cmd) = &loss {
            control_retry(node.control_port, cmd, STARTUP)
                .await
                .map_err(|e| failed(format!("validator {}: {e}", node.id)))?;
        }
        if node.traitor.is_some() && !traitor_on(sc, node.id, 0) {
            control_retry(node.control_port, "traitor off", STARTUP)
                .await
                .map_err(|e| failed(format!("validator {}: {e}", node.id)))?;
        }
    }
    let plan = plan(sc, client_keys, seed);
    let valid_requests = plan.valid.len() as u64;
    let accepted = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_millis(sc.expect.deadline_ms);
    let mut load = tokio::spawn(workload(
        setup.cluster.clone(),
        sc.clone(),
        plan,
        t0,
        accepted.clone(),
    ));
    let mut blocked: Vec<BTreeSet<u32>> = vec![BTreeSet::new(); n];
    let mut probes: Vec<ProbeRow> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    let mut outcome: Option<WorkloadOutcome> = None;
    let events = timeline(sc);
    let last_fault = events
        .iter()
        .rposition(|(_, e)| matches!(e, Event::Fault(_)));
    for (idx, (at, event)) in events.iter().enumerate() {
        let when = tokio::time::Instant::from_std(t0 + Duration::from_millis(*at));
        let faults_left = last_fault.is_some_and(|l| idx <= l);
        if !faults_left && outcome.is_none() {
            // as in the simulator, only faults hold a run open: switches and probes
            // wait only while the workload runs (later probes see the final state)
            tokio::select! {
                _ = tokio::time::sleep_until(when) => {}
                r = &mut load => outcome = Some(joined(r)),
            }
        }
        if !faults_left && outcome.is_some() {
            break;
        }
        tokio::time::sleep_until(when).await;
        for node in nodes.iter_mut() {
            node.reap();
        }
        match event {
            Event::Fault(f) => {
                apply_fault(sc, setup, nodes, &mut blocked, f, *at, &mut notes).await?;
            }
            Event::Traitor(id, on) => {
                let node = &nodes[*id as usize];
                if node.running() {
                    let cmd = if *on { "traitor on" } else { "traitor off" };
                    if let Err(e) = control(node.control_port, cmd).await {
                        notes.push(format!("validator {id}: `{cmd}` failed: {e}"));
                    }
                }
            }
            Event::Probe => {
                let s = statuses(&mut probe_client, Duration::from_millis(300)).await;
                remember(nodes, &s);
                probes.push(probe_row(*at, nodes, &s));
            }
        }
    }
    // the workload, then the honest validators settle at one height
    if outcome.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        outcome = match tokio::time::timeout(left, &mut load).await {
            Ok(r) => Some(joined(r)),
            Err(_) => {
                load.abort();
                None
            }
        };
    }
    let settle_until = deadline.max(Instant::now() + SETTLE_MIN);
    let mut last: Vec<Option<NodeStatus>>;
    loop {
        for node in nodes.iter_mut() {
            node.reap();
            node.sample_rss();
        }
        last = statuses(&mut probe_client, Duration::from_millis(500)).await;
        remember(nodes, &last);
        if settled(nodes, &last) || Instant::now() >= settle_until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // probes the run ended before see the final state
    for (at, e) in &events {
        if matches!(e, Event::Probe) && !probes.iter().any(|p| p.at_ms == *at) {
            probes.push(probe_row(*at, nodes, &last));
        }
    }
    let end_ms = t0.elapsed().as_millis() as u64;
    probe_client.close().await;
    let outcome = outcome.unwrap_or_else(|| WorkloadOutcome {
        committed: accepted.load(Ordering::SeqCst),
        ..WorkloadOutcome::default()
    });
    if let Some(e) = &outcome.error {
        notes.push(e.clone());
    }
    for note in &notes {
        eprintln!("note: {} (cluster, seed {seed}): {note}", sc.name);
    }
    Ok(report(
        sc,
        seed,
        nodes,
        valid_requests,
        &outcome,
        end_ms,
        probes,
    ))
}

/// The workload task's result.
fn joined(r: Result<WorkloadOutcome, tokio::task::JoinError>) -> WorkloadOutcome {
    r.unwrap_or_else(|e| WorkloadOutcome {
        error: Some(format!("workload task: {e}")),
        ..WorkloadOutcome::default()
    })
}

/// Keeps the latest status of every running validator (a crashed one keeps its last).
fn remember(nodes: &mut [Node], s: &[Option<NodeStatus>]) {
    for (node, s) in nodes.iter_mut().zip(s) {
        if let (true, Some(s)) = (node.running(), s) {
            node.last_status = Some(s.clone());
        }
    }
}

/// True when every running honest validator answered and all stand at the same height
/// and head, outside a view change.
fn settled(nodes: &[Node], s: &[Option<NodeStatus>]) -> bool {
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

fn probe_row(at_ms: u64, nodes: &[Node], s: &[Option<NodeStatus>]) -> ProbeRow {
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

async fn apply_fault(
    sc: &Scenario,
    setup: &Setup,
    nodes: &mut [Node],
    blocked: &mut [BTreeSet<u32>],
    fault: &FaultKind,
    now_ms: u64,
    notes: &mut Vec<String>,
) -> Result<(), RunError> {
    let n = nodes.len();
    match fault {
        FaultKind::Crash {
            node,
            mid_checkpoint: false,
        } => nodes[*node as usize].kill(),
        FaultKind::Crash {
            node,
            mid_checkpoint: true,
        } => {
            let x = &mut nodes[*node as usize];
            if x.running() {
                x.abort_planned = true;
                if let Err(e) = control(x.control_port, "crash-at-checkpoint").await {
                    notes.push(format!("validator {node}: crash-at-checkpoint failed: {e}"));
                }
            }
        }
        FaultKind::Restart { node, wipe } => {
            let x = &mut nodes[*node as usize];
            // a mid-checkpoint crash that found no checkpoint yet becomes a plain one
            x.kill();
            if *wipe {
                let data = setup.data(x.id);
                if data.exists() {
                    std::fs::remove_dir_all(&data)
                        .map_err(|e| failed(format!("wiping {}: {e}", data.display())))?;
                }
                x.wiped = true;
            }
            x.child = Some(setup.spawn(x)?);
            let port = x.control_port;
            let id = x.id;
            control_retry(port, "ping", STARTUP)
                .await
                .map_err(|e| failed(format!("restarted validator {id} did not come up: {e}")))?;
            if let Some(cmd) = loss_command(sc) {
                let _ = control(port, &cmd).await;
            }
            let set = &blocked[id as usize];
            if !set.is_empty() {
                let _ = control(port, &block_command(set)).await;
            }
            if x.traitor.is_some() {
                let on = traitor_on(sc, id, now_ms);
                let _ = control(port, if on { "traitor on" } else { "traitor off" }).await;
            }
        }
        FaultKind::Partition { groups } => {
            let sets = blocked_sets(n, Some(groups));
            set_blocked(nodes, blocked, sets, notes).await;
        }
        FaultKind::Isolate { node } => {
            let mut sets = blocked.to_vec();
            for (i, set) in sets.iter_mut().enumerate() {
                if i as u32 == *node {
                    set.extend((0..n as u32).filter(|j| j != node));
                } else {
                    set.insert(*node);
                }
            }
            set_blocked(nodes, blocked, sets, notes).await;
        }
        FaultKind::Heal => {
            let sets = blocked_sets(n, None);
            set_blocked(nodes, blocked, sets, notes).await;
        }
    }
    Ok(())
}

async fn set_blocked(
    nodes: &[Node],
    blocked: &mut [BTreeSet<u32>],
    sets: Vec<BTreeSet<u32>>,
    notes: &mut Vec<String>,
) {
    for (node, set) in nodes.iter().zip(&sets) {
        if node.running() {
            let cmd = block_command(set);
            if let Err(e) = control(node.control_port, &cmd).await {
                notes.push(format!("validator {}: `{cmd}` failed: {e}", node.id));
            }
        }
    }
    blocked.clone_from_slice(&sets);
}

fn report(
    sc: &Scenario,
    seed: u64,
    nodes: &[Node],
    valid_requests: u64,
    w: &WorkloadOutcome,
    end_ms: u64,
    probes: Vec<ProbeRow>,
) -> ScenarioReport {
    let validators: Vec<ValidatorRow> = nodes
        .iter()
        .map(|x| {
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
        })
        .collect();
    let mut violations = Vec::new();
    let honest: Vec<&ValidatorRow> = validators.iter().filter(|r| r.traitor.is_none()).collect();
    for r in &honest {
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
        expectations: Vec::new(),
        passed: false,
    }
}

/// Verifies every honest ledger offline and compares them at their common heights.
fn check_ledgers(setup: &Setup, nodes: &[Node], report: &mut ScenarioReport) {
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
    for (i, (a, ha)) in heads.iter().enumerate() {
        for (b, hb) in &heads[i + 1..] {
            let h = (*ha).min(*hb);
            if h == 0 {
                continue;
            }
            let block = |id: u32| {
                pbft_executor::show_ledger(&setup.data(id).join("ledger"), Some(h), None)
                    .ok()
                    .and_then(|s| s.block.map(|(_, hash)| hash))
            };
            // a ledger restored from a snapshot keeps no blocks below it
            if let (Some(x), Some(y)) = (block(*a), block(*b)) {
                if x == y {
                    continue;
                }
                report.violations.push(format!(
                    "agreement broken: honest validators {a} and {b} hold different blocks at height {h}"
                ));
            }
        }
    }
}
