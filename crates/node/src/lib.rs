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
//! - A small thread ([`threads`]) hands free heap memory back to the system every few seconds, so
//!   the resident size stays bounded under load (see [`threads::TRIM_INTERVAL`]).
//! - A restarted validator reloads its log and its ledger: it keeps its view, never
//!   contradicts what it sent, and catches up by state transfer when behind.
//!
//! Fault injection is not part of the node: [`run`] takes the host's fault hooks, and
//! a production validator passes the honest ones.

pub mod boot;
pub mod budget;
pub mod core;
pub mod metrics;
pub mod routes;
pub mod stage;
pub mod threads;
pub mod timed;

use crate::metrics::Metrics;
use crate::threads::{Threads, Wiring};
use pbft_cluster::Cluster;
use pbft_crypto::Keypair;
use pbft_executor::{ExecError, Executor};
use pbft_host::Faults;
use pbft_protocol::Verifier;
use pbft_transport::{ClientAccounts, PeerInfo, Transport, TransportConfig, TransportError};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Instant;

/// Signatures the verification stage remembers as checked (see [`stage::SigCache`]).
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
    /// The cluster's first start: a data directory without a consensus log starts at
    /// genesis. Without it, a missing log is a lost one (a wiped or replaced disk) and
    /// the validator recovers: it signs no vote until it has caught up past anything
    /// it may have signed before.
    pub genesis: bool,
    /// Limits on client connections (anyone can reach the client port).
    pub client_limits: ClientLimits,
}

/// Default largest client frame (64 KiB).
pub use pbft_transport::DEFAULT_MAX_CLIENT_FRAME;

/// Limits on client connections, as `pbft node` flags set them; docs/operations.md
/// says what each protects against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientLimits {
    /// Most client connections open at once.
    pub max_clients: usize,
    /// Most anonymous client connections from one IP address.
    pub max_clients_per_ip: usize,
    /// Most client connections bound to one client account.
    pub max_clients_per_account: usize,
    /// Most incoming connections in their handshake or hello at once.
    pub max_pending: usize,
    /// A client connection silent this long is closed.
    pub idle_timeout: std::time::Duration,
    /// Largest client frame.
    pub max_frame: usize,
    /// Time to finish a client frame once begun.
    pub frame_timeout: std::time::Duration,
    /// Queries answered per second on one connection (after a burst of as many).
    pub queries_per_sec: u32,
}

impl Default for ClientLimits {
    fn default() -> Self {
        ClientLimits {
            max_clients: 1024,
            max_clients_per_ip: 32,
            max_clients_per_account: 16,
            max_pending: 256,
            idle_timeout: std::time::Duration::from_secs(60),
            max_frame: pbft_transport::DEFAULT_MAX_CLIENT_FRAME,
            frame_timeout: std::time::Duration::from_secs(5),
            queries_per_sec: 50,
        }
    }
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
            genesis: false,
            client_limits: ClientLimits::default(),
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
    /// The consensus log is empty but the ledger is not.
    #[error("consensus log in {}: {source}", dir.display())]
    LostLog {
        /// The directory.
        dir: PathBuf,
        /// What the host found.
        source: pbft_host::HostError,
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
                | NodeError::LostLog { .. }
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

    let peers: Vec<PeerInfo> =
        PeerInfo::list(cluster.validators.iter().map(|v| (v.id, v.key, v.addr)));
    let listen = cluster.validators[id as usize].addr;
    let mut transport_config = TransportConfig::new(id, opts.key.clone(), listen, peers);
    transport_config.genesis = *cluster.genesis_digest().as_bytes();
    let limits = &opts.client_limits;
    transport_config.max_clients = limits.max_clients;
    transport_config.max_clients_per_ip = limits.max_clients_per_ip;
    transport_config.max_clients_per_account = limits.max_clients_per_account;
    transport_config.max_pending = limits.max_pending;
    // connections may bind the cluster's client accounts (their replies go to them)
    transport_config.accounts = ClientAccounts::new(cluster.clients.iter().map(|c| c.key));
    transport_config.client_idle_timeout = limits.idle_timeout;
    transport_config.max_client_frame = limits.max_frame;
    transport_config.client_frame_timeout = limits.frame_timeout;
    let (transport, inbound) = Transport::start_split(transport_config).await?;

    let metrics_task = match opts.metrics {
        Some(addr) => {
            let listener = metrics::bind(addr)
                .await
                .map_err(|source| NodeError::Metrics { addr, source })?;
            Some(tokio::spawn(metrics::serve(listener, metrics.clone())))
        }
        None => None,
    };

    let (view, executed) = (host.replica().view(), host.replica().last_executed());
    let threads = Threads::spawn(Wiring {
        id,
        host,
        transport: transport.clone(),
        inbound,
        verifier: Verifier::for_config(&cfg),
        workers: opts.workers,
        metrics,
        start,
        queries_per_sec: opts.client_limits.queries_per_sec,
    })?;
    tracing::info!(
        id,
        %listen,
        view,
        executed,
        "validator started"
    );

    shutdown.await;
    tracing::info!(id, "stopping");
    let host = threads.stop().await?;
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
    tracing::info!(id, "stopped");
    Ok(summary)
}
