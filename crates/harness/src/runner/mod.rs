//! Cluster mode of `pbft scenario run`: the scenario on real `pbft node` processes.
//!
//! Each run gets a fresh directory with a new cluster file and keys (n consecutive free
//! UDP ports on loopback), one RocksDB data directory per validator, and one process
//! per validator started from the `pbft` binary. Then, on the real clock from the moment
//! every validator answers (t = 0):
//!
//! * the workload runs as the scenario's clients, over QUIC like `pbft client`
//!   ([`workload`], [`plan`]);
//! * traitors are the same [`pbft_traitor`] code as in the simulator, switched on a node
//!   by `--traitor` (with `--accomplices` and `--traitor-seed`) and in time by the
//!   node's control endpoint ([`timeline`]);
//! * a crash is a SIGKILL; `mid_checkpoint` asks the node to abort inside its next
//!   checkpoint; a restart is a new process on the same data directory, or on an
//!   emptied one for `disk = "wipe"` ([`faults`]);
//! * partitions and isolation are the transport's fault-injection layer: each node is
//!   told which peers to drop frames to and from, so they act on real traffic, in both
//!   directions; clients reach every validator.
//!
//! Every control command is a typed [`pbft_faults::Command`] ([`crate::control`]).
//!
//! At the end the runner asks every validator for its status, reads each one's peak
//! resident memory (VmHWM) while it still runs, stops them, verifies every honest
//! ledger offline (hash chain and state digest) and compares the honest ledgers block
//! by block at their common height ([`report`]). A difference, a ledger that does not
//! verify, a halted honest validator, an honest process that died on its own, or signed
//! evidence against an honest validator is reported as a violation.
//!
//! `drop_rate` and `duplicate_rate` are applied by the same layer to the frames each
//! node sends to other validators. Message delays are the real network's, so
//! `min_delay_ms`/`max_delay_ms` are ignored. A scenario that gives one validator two
//! different behaviours is refused: a node process runs one.

mod faults;
mod node;
mod plan;
mod report;
mod strangers;
mod timeline;
mod workload;

use crate::control::{send, send_retry};
use crate::ports::{free_tcp_port, free_udp_ports};
use crate::ready::{wait_reachable, StatusSource};
use crate::supervise::{Children, Launcher};
use faults::{Action, Blocked};
use node::{Node, Setup};
use pbft_client::Client;
use pbft_cluster::{keygen, KeygenSpec, ProtocolParams};
use pbft_crypto::{read_key_file, Keypair};
use pbft_faults::Command;
use pbft_protocol::NodeStatus;
use pbft_scenario::model::{FaultKind, Scenario};
use pbft_scenario::report::{Mode, ProbeRow, ScenarioReport};
use pbft_scenario::{RunError, Runner};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use timeline::{timeline, Event};
use workload::{workload, WorkloadOutcome};

/// Set to `1` to keep each run's directory (cluster file, keys, data, node logs); its
/// path is printed on stderr.
pub const KEEP_DIR_ENV: &str = "PBFT_SCENARIO_KEEP_DIR";

/// How long the validators get to come up before a run starts.
const STARTUP: Duration = Duration::from_secs(30);
/// How long, after the workload is done, the runner waits for the honest validators
/// to reach the same height (bounded by the deadline, and at least this).
const SETTLE_MIN: Duration = Duration::from_secs(5);

/// Real validator processes on loopback as a [`Runner`].
#[derive(Clone, Debug)]
pub struct ClusterRunner {
    launcher: Launcher,
}

impl ClusterRunner {
    /// A runner whose validators are started by `launcher`.
    pub fn new(launcher: Launcher) -> ClusterRunner {
        ClusterRunner { launcher }
    }
}

fn failed(reason: impl std::fmt::Display) -> RunError {
    RunError::Failed {
        mode: "cluster",
        reason: reason.to_string(),
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
        let result = rt.block_on(run(&self.launcher, sc, seed, dir.path()));
        if std::env::var(KEEP_DIR_ENV).as_deref() == Ok("1") {
            let kept = dir.keep();
            eprintln!("{}: run directory kept at {}", sc.name, kept.display());
        }
        result
    }
}

/// Refuses what cluster mode cannot do faithfully: two behaviours for one validator.
/// (Every stranger behaviour is played.)
pub fn check_supported(sc: &Scenario) -> Result<(), RunError> {
    let mut behavior: BTreeMap<u32, &str> = BTreeMap::new();
    for t in &sc.traitors {
        let b = t.behavior.name();
        if let Some(other) = behavior.insert(t.node, b) {
            if other != b {
                return Err(RunError::Unsupported {
                    mode: "cluster",
                    reason: format!(
                        "validator {} is given two behaviours ({other} and {b}); a node process runs one",
                        t.node
                    ),
                });
            }
        }
    }
    Ok(())
}

/// Sets the run up, drives it, and stops every process whatever happened.
async fn run(
    launcher: &Launcher,
    sc: &Scenario,
    seed: u64,
    dir: &Path,
) -> Result<ScenarioReport, RunError> {
    let n = sc.cluster.validators;
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
        base_port: free_udp_ports(n, seed).map_err(failed)?,
        params,
        balance: sc.workload.balance,
        governance: 1,
        threshold: 1,
        force: true,
    };
    let out = keygen(dir, &spec).map_err(|e| failed(format!("keygen: {e}")))?;
    let client_keys: Vec<Keypair> = out
        .client_keys
        .iter()
        .map(|p| read_key_file(p))
        .collect::<Result<_, _>>()
        .map_err(failed)?;
    let setup = Setup {
        launcher: launcher.clone(),
        dir: dir.to_path_buf(),
        cluster: out.cluster,
        seed,
        traitor_ids: sc.traitor_ids(),
        node_flags: sc.node.flags(),
    };
    let mut nodes: Vec<Node> = Vec::new();
    for id in 0..n as u32 {
        let traitor = sc
            .traitors
            .iter()
            .find(|t| t.node == id)
            .map(|t| t.behavior.name());
        nodes.push(Node::new(id, traitor, free_tcp_port().map_err(failed)?));
    }
    for node in &mut nodes {
        node.child = Some(setup.spawn(node).map_err(failed)?);
    }
    let mut driver = Driver {
        sc,
        setup: &setup,
        nodes,
        blocked: Blocked::none(n),
        notes: Vec::new(),
        reused: Vec::new(),
    };
    let result = driver.drive(seed, &client_keys).await;
    // whatever happened, no process outlives the run: SIGTERM to all, then SIGKILL
    // what is left after 10 s
    let mut children = Children::new();
    for node in &mut driver.nodes {
        node.sample_rss();
        if let Some(c) = node.child.take() {
            children.push(node.id, c);
        }
    }
    children.stop(Duration::from_secs(10));
    let mut report = result?;
    report::check_ledgers(&setup, &driver.nodes, &mut report);
    report::check_reused(&setup, &driver.nodes, &driver.reused, &mut report);
    Ok(report)
}

/// A run in progress.
struct Driver<'a> {
    sc: &'a Scenario,
    setup: &'a Setup,
    nodes: Vec<Node>,
    /// What each validator blocks now.
    blocked: Blocked,
    /// What went wrong without stopping the run, printed at its end.
    notes: Vec<String>,
    /// The requests `reuse_id` strangers signed under executed ids, looked for in the
    /// ledgers once the validators stopped.
    reused: Vec<strangers::Reused>,
}

impl Driver<'_> {
    /// Sends `cmd` to a running validator; a failure becomes a note.
    async fn tell(&mut self, id: u32, cmd: &Command) {
        let node = &self.nodes[id as usize];
        if !node.running() {
            return;
        }
        if let Err(e) = send(node.control_port, cmd).await {
            self.notes
                .push(format!("validator {id}: `{cmd}` failed: {e}"));
        }
    }

    async fn drive(
        &mut self,
        seed: u64,
        client_keys: &[Keypair],
    ) -> Result<ScenarioReport, RunError> {
        let (sc, n) = (self.sc, self.nodes.len());
        // bound like the workload's: with every slot taken by strangers, its probes
        // still get through
        let mut probe_client =
            Client::connect_bound(&self.setup.cluster, crate::workload::bindable(client_keys))
                .await
                .map_err(|e| failed(format!("client: {e}")))?;
        wait_reachable(&mut probe_client, n, STARTUP)
            .await
            .map_err(|e| failed(format!("{e} (logs in {})", self.setup.dir.display())))?;
        // the background loss rate, and traitor windows that open later start closed
        for node in &self.nodes {
            for cmd in faults::startup_commands(sc, node.id, node.traitor.is_some()) {
                send_retry(node.control_port, &cmd, STARTUP)
                    .await
                    .map_err(|e| failed(format!("validator {}: {e}", node.id)))?;
            }
        }
        let plan = plan::plan(sc, client_keys, seed);
        let valid_requests = plan.valid.len() as u64;
        let accepted = Arc::new(AtomicU64::new(0));
        let knowledge = strangers::Knowledge {
            keys: Arc::new(client_keys.to_vec()),
            sightings: strangers::Sightings::new(),
            balance: sc.workload.balance,
        };
        let t0 = Instant::now();
        let deadline = t0 + Duration::from_millis(sc.expect.deadline_ms);
        // hostile hosts on the client ports, stopped when this run ends
        let strangers = strangers::start(sc, &self.setup.cluster, &knowledge, t0);
        let mut load = tokio::spawn(workload(
            self.setup.cluster.clone(),
            client_keys.to_vec(),
            sc.clone(),
            plan,
            t0,
            accepted.clone(),
            knowledge.sightings.clone(),
        ));
        let mut probes: Vec<ProbeRow> = Vec::new();
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
            for node in &mut self.nodes {
                node.reap();
            }
            match event {
                Event::Fault(f) => self.apply(f, *at).await?,
                Event::Traitor(id, on) => self.tell(*id, &Command::Traitor(*on)).await,
                Event::Probe => {
                    let s = statuses(&mut probe_client, Duration::from_millis(300)).await;
                    report::remember(&mut self.nodes, &s);
                    probes.push(report::probe_row(*at, &self.nodes, &s));
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
            for node in &mut self.nodes {
                node.reap();
                node.sample_rss();
            }
            last = statuses(&mut probe_client, Duration::from_millis(500)).await;
            report::remember(&mut self.nodes, &last);
            if report::settled(&self.nodes, &last) || Instant::now() >= settle_until {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // probes the run ended before see the final state
        for (at, e) in &events {
            if matches!(e, Event::Probe) && !probes.iter().any(|p| p.at_ms == *at) {
                probes.push(report::probe_row(*at, &self.nodes, &last));
            }
        }
        let end_ms = t0.elapsed().as_millis() as u64;
        probe_client.close().await;
        let outcome = outcome.unwrap_or_else(|| WorkloadOutcome {
            committed: accepted.load(Ordering::SeqCst),
            ..WorkloadOutcome::default()
        });
        if let Some(e) = &outcome.error {
            self.notes.push(e.clone());
        }
        self.notes.extend(strangers.summary());
        let stranger_rows = strangers.rows();
        self.reused = strangers.reused();
        drop(strangers);
        for note in &self.notes {
            eprintln!("note: {} (cluster, seed {seed}): {note}", sc.name);
        }
        let mut report = report::report(
            sc,
            seed,
            &self.nodes,
            valid_requests,
            &outcome,
            end_ms,
            probes,
        );
        report.strangers = stranger_rows;
        Ok(report)
    }

    /// Carries out one scripted fault at `now_ms`.
    async fn apply(&mut self, fault: &FaultKind, now_ms: u64) -> Result<(), RunError> {
        match faults::action(fault, self.nodes.len(), &self.blocked) {
            Action::Kill(id) => self.nodes[id as usize].kill(),
            Action::CrashAtCheckpoint(id) => {
                let x = &mut self.nodes[id as usize];
                if x.running() {
                    x.abort_planned = true;
                    self.tell(id, &Command::CrashAtCheckpoint).await;
                }
            }
            Action::Restart { node: id, wipe } => {
                let x = &mut self.nodes[id as usize];
                // a mid-checkpoint crash that found no checkpoint yet becomes a plain one
                x.kill();
                if wipe {
                    let data = self.setup.data(id);
                    if data.exists() {
                        std::fs::remove_dir_all(&data)
                            .map_err(|e| failed(format!("wiping {}: {e}", data.display())))?;
                    }
                    x.wiped = true;
                }
                x.child = Some(self.setup.spawn(x).map_err(failed)?);
                send_retry(x.control_port, &Command::Ping, STARTUP)
                    .await
                    .map_err(|e| {
                        failed(format!("restarted validator {id} did not come up: {e}"))
                    })?;
                let is_traitor = x.traitor.is_some();
                let port = x.control_port;
                let cmds =
                    faults::restart_commands(self.sc, id, is_traitor, self.blocked.of(id), now_ms);
                for cmd in cmds {
                    // best effort, as before the restart: a node that does not take
                    // these shows in the run's verdicts
                    let _ = send(port, &cmd).await;
                }
            }
            Action::Block(blocked) => {
                for id in 0..self.nodes.len() as u32 {
                    self.tell(id, &blocked.command(id)).await;
                }
                self.blocked = blocked;
            }
        }
        Ok(())
    }
}

/// The workload task's result.
fn joined(r: Result<WorkloadOutcome, tokio::task::JoinError>) -> WorkloadOutcome {
    r.unwrap_or_else(|e| WorkloadOutcome {
        error: Some(format!("workload task: {e}")),
        ..WorkloadOutcome::default()
    })
}

/// The status of every validator (`None` where none came within `wait`).
async fn statuses(client: &mut Client, wait: Duration) -> Vec<Option<NodeStatus>> {
    match client.statuses(wait).await {
        Ok(s) => s.into_iter().map(|(_, x)| x).collect(),
        Err(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use timeline::tests::scenario;

    #[test]
    fn one_behaviour_per_validator_is_all_a_process_can_run() {
        let twice_same = scenario(
            "[[traitor]]\nnode = 0\nbehavior = \"silent\"\nuntil_ms = 100\n\n[[traitor]]\nnode = 0\nbehavior = \"silent\"\nfrom_ms = 200\n",
        );
        check_supported(&twice_same).expect("one behaviour in two windows");
        let two = scenario(
            "[[traitor]]\nnode = 0\nbehavior = \"silent\"\nuntil_ms = 100\n\n[[traitor]]\nnode = 0\nbehavior = \"equivocate\"\nfrom_ms = 100\n",
        );
        let e = check_supported(&two).expect_err("two behaviours");
        assert!(matches!(e, RunError::Unsupported { .. }));
        assert!(
            e.to_string()
                .contains("two behaviours (silent and equivocate)"),
            "{e}"
        );
    }
}
