//! The validator runtime: it wires the QUIC transport, the signature-verification
//! workers and the consensus thread, which runs the validator's host (the replica, the
//! RocksDB ledger and the consensus log; `pbft-host`, the same code the simulator runs).
//!
//! ```text
//! transport --frames--> verification workers --verified inputs--> consensus thread
//!     ^                                                              |  host: replica,
//!     +---------------- encoded once, same bytes to every peer <-----+  ledger, log
//! ```
//!
//! - [`boot`]: finds the validator's id, opens its storage and restores its host.
//! - The verification workers (threads) decode frames and check signatures, client
//!   signatures in batches, each signature once (see [`stage`]).
//! - The consensus thread ([`core`]) feeds the host and carries its effects out; a
//!   `Persist` is durable before any later action, and timers come from the host's
//!   `next_timeout`.
//! - A small thread hands free heap memory back to the system every few seconds, so
//!   the resident size stays bounded under load (see [`TRIM_INTERVAL`]).
//! - A restarted validator reloads its log and its ledger: it keeps its view, never
//!   contradicts what it sent, and catches up by state transfer when behind.
//!
//! Fault injection is not part of the node: [`run`] takes the host's fault hooks, and
//! a production validator passes the honest ones.

pub mod boot;
pub mod core;
pub mod metrics;
pub mod stage;
pub mod timed;

use crate::core::Core;
use crate::metrics::Metrics;
use crate::stage::{Input, SigCache, Stage};
use pbft_cluster::Cluster;
use pbft_crypto::Keypair;
use pbft_executor::{ExecError, Executor};
use pbft_host::Faults;
use pbft_protocol::envelope::Limits;
use pbft_protocol::Verifier;
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
}

impl NodeOptions {
    /// Options with defaults: no metrics, no fsync, two workers.
    pub fn new(cluster: Cluster, key: Keypair, data: PathBuf) -> NodeOptions {
        NodeOptions {
            cluster,
            key,
            data,
            metrics: None,
            sync: false,
            workers: 2,
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
///
/// `faults` are the host's fault hooks: [`pbft_host::Honest`] for a production
/// validator; the scenario runner's processes pass scripted ones (`pbft-faults`).
pub async fn run<F: Faults + Send + 'static>(
    opts: NodeOptions,
    faults: F,
    shutdown: impl Future<Output = ()>,
) -> Result<NodeSummary, NodeError> {
    let start = Instant::now();
    let (id, cfg) = boot::identify(&opts)?;
    let metrics = Metrics::new(id);
    let host = boot::open(&opts, id, cfg.clone(), faults, metrics.clone(), start)?;
    let cluster = &opts.cluster;

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
        // 65,536 signatures: several seconds of traffic at the highest rates measured,
        // longer than a request waits for its pre-prepare; an evicted signature is only
        // checked again (decision 0037)
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

    // ends when `trim_stop` is dropped (on return, whichever way)
    let (trim_stop, trim_rx) = crossbeam_channel::bounded::<()>(0);
    let trimmer = std::thread::Builder::new()
        .name(format!("pbft-{id}-trim"))
        .spawn(move || release_free_memory(trim_rx))
        .map_err(|e| NodeError::Internal(e.to_string()))?;
    let core = Core::new(host, transport.clone(), metrics.clone(), start);
    tracing::info!(
        id,
        %listen,
        view = core.host.replica().view(),
        executed = core.host.replica().last_executed(),
        "validator started"
    );
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
    let host = core.into_host();
    let summary = NodeSummary {
        id,
        view: host.replica().view(),
        last_executed: host.replica().last_executed(),
        head_hash: host.ledger().head().hash.to_hex(),
    };
    drop(host);
    transport.shutdown().await;
    if let Some(t) = metrics_task {
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
/// evicted cache blocks), so without this a validator's resident size creeps up for
/// minutes under steady load while its heap stays flat (decision 0040). A call takes
/// 1-20 ms under load (median about 2 ms), so it runs on its own
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
