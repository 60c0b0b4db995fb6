//! The validator runtime: it wires the QUIC transport, the signature-verification
//! workers, the PBFT replica core, the RocksDB ledger and the consensus log.
//!
//! ```text
//! transport --frames--> verification workers --verified inputs--> consensus thread
//!     ^                                                              |  replica core
//!     +---------------- encoded once, same bytes to every peer <-----+  ledger + log
//! ```
//!
//! - The verification workers (threads) decode frames and check signatures, client
//!   signatures in batches, each signature once (see [`stage`]).
//! - The consensus thread owns the replica, the ledger and the consensus log; a
//!   `Persist` is durable before any later action (see [`core`]).
//! - Timers come from the replica's `next_timeout`.
//! - A small thread hands free heap memory back to the system every few seconds, so
//!   the resident size stays bounded under load (see [`TRIM_INTERVAL`]).
//! - A restarted validator reloads its log and its ledger: it keeps its view, never
//!   contradicts what it sent, and catches up by state transfer when behind.

pub mod control;
pub mod core;
pub mod metrics;
pub mod stage;

use crate::core::Core;
use crate::metrics::Metrics;
use crate::stage::{Input, SigCache, Stage};
use pbft_cluster::Cluster;
use pbft_crypto::Keypair;
use pbft_executor::{ConsensusLog, ExecError, Executor, RocksExecutor, RocksOptions};
use pbft_protocol::envelope::Limits;
use pbft_protocol::{Replica, Verifier, WalRecord};
use pbft_traitor::{Behavior, Traitor};
use pbft_transport::{PeerInfo, Transport, TransportConfig, TransportError};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Instant;

/// Signatures the verification stage remembers as checked (see [`SigCache`]).
pub const SIG_CACHE_CAPACITY: usize = 1 << 16;

/// How a validator is started.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    /// The cluster.
    pub cluster: Cluster,
    /// This validator's key (its id is found by matching it in the cluster).
    pub key: Keypair,
    /// Data directory: `ledger/` (RocksDB ledger) and `wal/` (consensus log).
    pub data: PathBuf,
    /// Where to serve Prometheus metrics, if anywhere.
    pub metrics: Option<SocketAddr>,
    /// Fsync every ledger and log write (off: the RocksDB WAL still survives a killed
    /// process; only a power loss could lose the last writes).
    pub sync: bool,
    /// Verification worker threads.
    pub workers: usize,
    /// A traitor behaviour, for tests and scenarios only.
    pub traitor: Option<Behavior>,
    /// Accomplice validators of the traitor (beyond-f negative controls only).
    pub accomplices: Vec<u32>,
    /// Seed of the traitor's choices.
    pub traitor_seed: u64,
    /// Serve the fault-injection control endpoint here (scenario runner only; see
    /// [`control`]).
    pub control: Option<SocketAddr>,
    /// Abort the process mid-checkpoint at this sequence (scenario runner only).
    pub crash_at_checkpoint: Option<u64>,
}

impl NodeOptions {
    /// Options with defaults: no metrics, no fsync, two workers, honest.
    pub fn new(cluster: Cluster, key: Keypair, data: PathBuf) -> NodeOptions {
        NodeOptions {
            cluster,
            key,
            data,
            metrics: None,
            sync: false,
            workers: 2,
            traitor: None,
            accomplices: Vec::new(),
            traitor_seed: 1,
            control: None,
            crash_at_checkpoint: None,
        }
    }
}

/// Why a validator could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The key is not one of the cluster's validators.
    #[error("the key {key} is not a validator of cluster {}: its public key is not listed there", cluster.display())]
    NotAValidator {
        /// The public key (hex).
        key: String,
        /// The cluster file.
        cluster: PathBuf,
    },
    /// The cluster file's parameters are unusable.
    #[error("cluster {}: {error}", path.display())]
    Config {
        /// What is wrong.
        error: pbft_protocol::ConfigError,
        /// The cluster file.
        path: PathBuf,
    },
    /// The ledger or the consensus log could not be opened or read.
    #[error("storage in {}: {source}", dir.display())]
    Storage {
        /// The directory.
        dir: PathBuf,
        /// The error.
        source: ExecError,
    },
    /// The consensus log holds a record this version cannot read.
    #[error("consensus log in {}: record {index} is unreadable ({reason})", dir.display())]
    CorruptLog {
        /// The directory.
        dir: PathBuf,
        /// Position of the record.
        index: usize,
        /// Decoder message.
        reason: String,
    },
    /// The transport could not start (a port in use, for one).
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The metrics address could not be bound.
    #[error("metrics address {addr}: {source}")]
    Metrics {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// The control address could not be bound.
    #[error("control address {addr}: {source}")]
    Control {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// A thread of the node failed.
    #[error("internal error: {0}")]
    Internal(String),
}

impl NodeError {
    /// True for errors the operator causes (bad files, busy ports): exit code 2.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            NodeError::NotAValidator { .. }
                | NodeError::Config { .. }
                | NodeError::Transport(TransportError::Bind { .. })
                | NodeError::Metrics { .. }
                | NodeError::Control { .. }
        )
    }
}

/// What a node reports when it stops.
#[derive(Clone, Debug)]
pub struct NodeSummary {
    /// Its id.
    pub id: u32,
    /// View at the stop.
    pub view: u64,
    /// Last executed sequence number.
    pub last_executed: u64,
    /// Ledger head hash.
    pub head_hash: String,
}

/// Runs a validator until `shutdown` completes, then stops cleanly: the consensus
/// thread finishes its current step, storage is closed, connections are closed.
pub async fn run(
    opts: NodeOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<NodeSummary, NodeError> {
    let cluster = &opts.cluster;
    let me = opts.key.public();
    let id = cluster
        .validator_with_key(&me)
        .map(|v| v.id)
        .ok_or_else(|| NodeError::NotAValidator {
            key: me.to_hex(),
            cluster: cluster.path.clone(),
        })?;
    let cfg = cluster.protocol_config();
    cfg.validate().map_err(|error| NodeError::Config {
        error,
        path: cluster.path.clone(),
    })?;

    let storage = |dir: &PathBuf| {
        let dir = dir.clone();
        move |source| NodeError::Storage { dir, source }
    };
    let ledger_dir = opts.data.join("ledger");
    let wal_dir = opts.data.join("wal");
    let ledger = RocksExecutor::open(
        &ledger_dir,
        &cluster.genesis(),
        RocksOptions {
            sync: opts.sync,
            ..RocksOptions::default()
        },
    )
    .map_err(storage(&ledger_dir))?;
    let log = ConsensusLog::open(&wal_dir, opts.sync).map_err(storage(&wal_dir))?;
    let raw = log.load().map_err(storage(&wal_dir))?;
    let mut records = Vec::with_capacity(raw.len());
    for (index, (_, bytes)) in raw.iter().enumerate() {
        let rec: WalRecord = postcard::from_bytes(bytes).map_err(|e| NodeError::CorruptLog {
            dir: wal_dir.clone(),
            index,
            reason: e.to_string(),
        })?;
        records.push(rec);
    }
    let executed = ledger.head().height;
    let start = Instant::now();
    let replica = if records.is_empty() && executed == 0 {
        Replica::new(cfg.clone(), id, opts.key.clone())
    } else {
        tracing::info!(
            id,
            records = records.len(),
            executed,
            "restarting from the consensus log and the ledger"
        );
        Replica::restore(
            cfg.clone(),
            id,
            opts.key.clone(),
            &records,
            executed,
            pbft_protocol::Instant::ZERO,
        )
    }
    .map_err(|error| NodeError::Config {
        error,
        path: cluster.path.clone(),
    })?;

    let peers: Vec<PeerInfo> = cluster
        .validators
        .iter()
        .map(|v| PeerInfo {
            id: v.id,
            key: v.key,
            addr: v.addr,
        })
        .collect();
    let listen = cluster.validators[id as usize].addr;
    let (transport, mut inbound) =
        Transport::start(TransportConfig::new(id, opts.key.clone(), listen, peers)).await?;

    let metrics = Metrics::new(id);
    let metrics_task = match opts.metrics {
        Some(addr) => {
            let listener = metrics::bind(addr)
                .await
                .map_err(|source| NodeError::Metrics { addr, source })?;
            Some(tokio::spawn(metrics::serve(listener, metrics.clone())))
        }
        None => None,
    };

    // frames -> workers -> consensus thread
    let (work_tx, work_rx) = crossbeam_channel::bounded(8192);
    let (in_tx, in_rx) = crossbeam_channel::bounded::<Input>(8192);
    let bridge = std::thread::Builder::new()
        .name(format!("pbft-{id}-inbound"))
        .spawn(move || {
            while let Some(frame) = inbound.blocking_recv() {
                if work_tx.send(frame).is_err() {
                    break;
                }
            }
        })
        .map_err(|e| NodeError::Internal(e.to_string()))?;
    let stage = Stage {
        verifier: std::sync::Arc::new(Verifier::new(cfg.validators.clone())),
        // 65,536 signatures (was 262,144: 34 MB at its peak): several seconds of
        // traffic at the highest rates measured (docs/benchmarks.md), longer than a
        // request waits for its pre-prepare; an evicted signature is only checked again
        cache: std::sync::Arc::new(SigCache::new(SIG_CACHE_CAPACITY)),
        limits: Limits::default(),
        transport: transport.clone(),
        metrics: metrics.clone(),
        out: in_tx.clone(),
        clients: std::sync::Arc::new(cluster.clients.iter().map(|c| c.key).collect()),
    };
    let mut workers = Vec::new();
    for w in 0..opts.workers.max(1) {
        let (stage, rx) = (stage.clone(), work_rx.clone());
        let h = std::thread::Builder::new()
            .name(format!("pbft-{id}-verify-{w}"))
            .spawn(move || stage.run(rx))
            .map_err(|e| NodeError::Internal(e.to_string()))?;
        workers.push(h);
    }
    drop(stage);
    drop(work_rx);

    let traitor = opts.traitor.map(|b| {
        tracing::warn!(
            id,
            behavior = b.name(),
            "TRAITOR MODE: this validator misbehaves on purpose"
        );
        Traitor::new(b, id, opts.key.clone(), cfg.clone(), opts.traitor_seed)
            .with_accomplices(opts.accomplices.clone())
    });
    let mut core = Core::new(
        id,
        replica,
        ledger,
        log,
        transport.clone(),
        metrics.clone(),
        traitor,
        start,
    );
    core.crash_at_checkpoint = opts.crash_at_checkpoint;
    let control_task = match opts.control {
        Some(addr) => {
            let listener = control::bind(addr)
                .await
                .map_err(|source| NodeError::Control { addr, source })?;
            let controls = control::Controls {
                transport: transport.clone(),
                traitor_active: core.traitor_active.clone(),
                crash_next_checkpoint: core.crash_next_checkpoint.clone(),
                n: cluster.n() as u32,
                seed: id as u64,
            };
            tracing::warn!(%addr, "fault-injection control endpoint enabled");
            Some(tokio::spawn(control::serve(listener, controls)))
        }
        None => None,
    };
    // ends when `trim_stop` is dropped (on return, whichever way)
    let (trim_stop, trim_rx) = crossbeam_channel::bounded::<()>(0);
    let trimmer = std::thread::Builder::new()
        .name(format!("pbft-{id}-trim"))
        .spawn(move || release_free_memory(trim_rx))
        .map_err(|e| NodeError::Internal(e.to_string()))?;
    tracing::info!(id, %listen, view = core.replica.view(), executed, "validator started");
    let consensus = std::thread::Builder::new()
        .name(format!("pbft-{id}-consensus"))
        .spawn(move || core.run(in_rx))
        .map_err(|e| NodeError::Internal(e.to_string()))?;

    shutdown.await;
    tracing::info!(id, "stopping");
    let _ = in_tx.send(Input::Stop);
    drop(in_tx);
    let core = tokio::task::spawn_blocking(move || consensus.join())
        .await
        .map_err(|e| NodeError::Internal(e.to_string()))?
        .map_err(|_| NodeError::Internal("the consensus thread panicked".into()))?;
    let summary = NodeSummary {
        id,
        view: core.replica.view(),
        last_executed: core.replica.last_executed(),
        head_hash: core.ledger.head().hash.to_hex(),
    };
    drop(core);
    transport.shutdown().await;
    for t in [metrics_task, control_task].into_iter().flatten() {
        t.abort();
    }
    // the workers and the bridge end when their channels close
    drop(workers);
    drop(bridge);
    // the trimmer ends at its next wake-up (not joined: that could hold a tokio
    // worker for one trim)
    drop(trim_stop);
    drop(trimmer);
    tracing::info!(id, "stopped");
    Ok(summary)
}

/// How often [`release_free_memory`] hands free memory back to the system.
pub const TRIM_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

/// Hands memory the allocator holds but nobody uses back to the system, every
/// [`TRIM_INTERVAL`], until `stop` disconnects. glibc keeps what a thread frees in that
/// thread's arena, and RocksDB frees megabytes at a time (memtables after a flush,
/// evicted cache blocks), so without this a validator's resident size crept up for
/// minutes under steady load while its heap stayed flat (docs/benchmarks.md, "Memory
/// flat"). A call took 1-20 ms under load (median about 2 ms), so it runs on its own
/// thread rather than on the consensus thread; glibc locks each arena while trimming
/// it, so a thread allocating from that arena at that moment still waits.
fn release_free_memory(stop: crossbeam_channel::Receiver<()>) {
    while let Err(crossbeam_channel::RecvTimeoutError::Timeout) = stop.recv_timeout(TRIM_INTERVAL) {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        {
            // SAFETY: malloc_trim only returns free pages of the allocator's own heaps.
            unsafe { libc::malloc_trim(0) };
        }
    }
}
