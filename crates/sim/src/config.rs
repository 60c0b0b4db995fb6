//! What a simulation runs: the cluster, the network, the workload, traitors, faults.

use pbft_protocol::ReplicaId;
use pbft_traitor::Behavior;

/// Background network conditions, drawn from the seed.
#[derive(Clone, Debug, PartialEq)]
pub struct NetworkConfig {
    /// Smallest one-way delay, ms.
    pub min_delay_ms: u64,
    /// Largest one-way delay, ms.
    pub max_delay_ms: u64,
    /// Probability that a message is lost.
    pub drop_rate: f64,
    /// Probability that a message is delivered twice.
    pub duplicate_rate: f64,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            min_delay_ms: 1,
            max_delay_ms: 10,
            drop_rate: 0.0,
            duplicate_rate: 0.0,
        }
    }
}

/// The client load.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workload {
    /// Number of clients.
    pub clients: usize,
    /// Valid signed transfers in total.
    pub requests: usize,
    /// Requests whose signature does not verify (never executed, never accepted).
    pub invalid_signatures: usize,
    /// Re-submissions of already accepted requests.
    pub replays: usize,
    /// Transfers larger than the sender's balance (failed receipts).
    pub overdrafts: usize,
    /// Requests a client keeps in flight.
    pub concurrency: usize,
    /// Genesis balance of every client.
    pub balance: u64,
    /// Pause between a client's new requests, ms (0: as fast as its concurrency allows).
    pub think_ms: u64,
    /// Operations of valid requests and overdrafts are padded to this many bytes
    /// (0: not padded).
    pub op_bytes: usize,
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            clients: 4,
            requests: 100,
            invalid_signatures: 0,
            replays: 0,
            overdrafts: 0,
            concurrency: 4,
            balance: 1_000_000,
            think_ms: 0,
            op_bytes: 0,
        }
    }
}

/// A traitor: a validator whose outgoing messages go through a behaviour.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraitorSpec {
    /// The validator.
    pub node: ReplicaId,
    /// What it does.
    pub behavior: Behavior,
    /// Start of the active window, ms.
    pub from_ms: u64,
    /// End of the active window, ms (exclusive); `u64::MAX` for the whole run.
    pub until_ms: u64,
}

/// What a simulated stranger does. The simulator delivers requests, not connections,
/// so only strangers that act through signed requests are simulated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StrangerKind {
    /// Holds the clients' keys: signs a new operation under a request id that a client
    /// has had executed (f+1 validators' replies accepted it), sends it to every
    /// validator as a client would, and watches the answers (crate::strangers).
    ReuseId,
}

/// A stranger: a hostile party outside the validator set, with a window of activity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StrangerSpec {
    /// What it does.
    pub kind: StrangerKind,
    /// Start of the active window, ms.
    pub from_ms: u64,
    /// End of the active window, ms (exclusive); `u64::MAX` for the whole run.
    pub until_ms: u64,
}

/// A scripted fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FaultAction {
    /// The process dies: volatile state is lost, the log and ledger survive.
    Crash(ReplicaId),
    /// The process comes back, on the same disk or on a wiped one.
    Restart {
        /// The validator.
        node: ReplicaId,
        /// True: start from an empty disk (forces state transfer).
        wipe: bool,
    },
    /// Split the validators into groups that cannot talk to each other. Clients reach
    /// every group.
    Partition(Vec<Vec<ReplicaId>>),
    /// Cut one validator off from everyone, clients included.
    Isolate(ReplicaId),
    /// Undo every partition and isolation.
    Heal,
    /// Arms a crash in the middle of a checkpoint: the next time the validator executes
    /// a checkpoint batch (`seq` a multiple of K), the batch is applied to the ledger,
    /// the checkpoint snapshot is written, and the process dies before it announces
    /// the checkpoint (`pbft_host::CrashPoint::CheckpointTaken`, as on a real cluster).
    CrashMidCheckpoint(ReplicaId),
}

/// A fault at a point in simulated time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    /// When, ms.
    pub at_ms: u64,
    /// What.
    pub action: FaultAction,
}

/// Where each simulated validator keeps its ledger and consensus log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Storage {
    /// In memory (fast): a crash keeps the "disk" as it was.
    #[default]
    Memory,
    /// RocksDB in a temporary directory per validator: a crash drops the database
    /// handles and a restart reopens them from disk.
    RocksDb,
}

/// A whole simulation.
#[derive(Clone, Debug, PartialEq)]
pub struct SimConfig {
    /// n.
    pub validators: usize,
    /// K.
    pub checkpoint_interval: u64,
    /// Most requests per batch.
    pub batch_size: usize,
    /// Base view-change timeout, ms.
    pub view_timeout_ms: u64,
    /// Network conditions.
    pub network: NetworkConfig,
    /// Client load.
    pub workload: Workload,
    /// Traitors.
    pub traitors: Vec<TraitorSpec>,
    /// Faults.
    pub faults: Vec<Fault>,
    /// Strangers.
    pub strangers: Vec<StrangerSpec>,
    /// The run stops here (simulated ms).
    pub deadline_ms: u64,
    /// The seed of everything random in the run.
    pub seed: u64,
    /// Check signatures (turn off only to benchmark the core alone).
    pub verify_signatures: bool,
    /// Check every replica's invariants after every input, so that a broken one fails
    /// the run at the step that broke it (turn off only to benchmark the core alone).
    pub check_invariants: bool,
    /// Stop as soon as every valid request is accepted and the cluster is idle.
    pub stop_when_done: bool,
    /// Ledger and consensus-log storage.
    pub storage: Storage,
    /// Bytes per snapshot chunk the validators serve (small values make every state
    /// transfer span many chunks).
    pub snapshot_chunk_bytes: usize,
    /// Points in simulated time (ms) at which the run records a [`crate::report::Probe`]
    /// of the honest validators (views, heights). Probing changes nothing in the run.
    pub probes_ms: Vec<u64>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            validators: 4,
            checkpoint_interval: 16,
            batch_size: 32,
            view_timeout_ms: 400,
            network: NetworkConfig::default(),
            workload: Workload::default(),
            traitors: Vec::new(),
            faults: Vec::new(),
            strangers: Vec::new(),
            deadline_ms: 30_000,
            seed: 1,
            verify_signatures: true,
            check_invariants: true,
            stop_when_done: true,
            storage: Storage::Memory,
            snapshot_chunk_bytes: 64 << 10,
            probes_ms: Vec::new(),
        }
    }
}

impl SimConfig {
    /// f for this cluster.
    pub fn f(&self) -> usize {
        self.validators.saturating_sub(1) / 3
    }

    /// True if the validator is scripted as a traitor.
    pub fn is_traitor(&self, node: ReplicaId) -> bool {
        self.traitors.iter().any(|t| t.node == node)
    }
}
