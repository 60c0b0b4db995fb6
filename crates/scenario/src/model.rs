//! The scenario model: a validated scenario file, independent of the mode it runs in.
//!
//! Every default below is the value used when the key is absent from the file; the
//! same defaults are listed in `docs/scenarios.md`.

use pbft_traitor::Behavior;
use std::path::PathBuf;

/// Seed used when neither the file nor the command line gives one.
pub const DEFAULT_SEED: u64 = 1;

/// A validated scenario.
#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    /// The file it was read from (empty for scenarios built in code).
    pub file: PathBuf,
    /// `name` (required).
    pub name: String,
    /// `description`: what the scenario attacks and why its expectations must hold.
    /// Default: empty.
    pub description: String,
    /// `seed`: the seed of the run unless the command line overrides it. Default: none
    /// (the runner then uses [`DEFAULT_SEED`]).
    pub seed: Option<u64>,
    /// `[cluster]`.
    pub cluster: Cluster,
    /// `[network]`.
    pub network: Network,
    /// `[workload]`.
    pub workload: Workload,
    /// `[[traitor]]` entries, in file order.
    pub traitors: Vec<TraitorEntry>,
    /// `[[stranger]]` entries (hostile clients and hosts outside the validator set),
    /// in file order.
    pub strangers: Vec<StrangerEntry>,
    /// `[[fault]]` entries, sorted by time (stable: file order within one instant).
    pub faults: Vec<FaultEntry>,
    /// `[node]` (extension): limits the cluster runner gives every `pbft node`.
    pub node: NodeLimits,
    /// `[expect]`.
    pub expect: Expect,
}

/// `[node]` (extension, cluster mode): the validators' limits on client connections,
/// as `pbft node` flags; a key left out keeps the node's default. The simulator models
/// no connections and ignores them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeLimits {
    /// `max_clients`: `--max-clients`, at least 1.
    pub max_clients: Option<u64>,
    /// `max_clients_per_ip`: `--max-clients-per-ip`, at least 1.
    pub max_clients_per_ip: Option<u64>,
    /// `client_frame_timeout_ms`: `--client-frame-timeout-ms`, at least 1.
    pub client_frame_timeout_ms: Option<u64>,
}

impl NodeLimits {
    /// The `pbft node` flags these limits set.
    pub fn flags(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(n) = self.max_clients {
            out.extend(["--max-clients".to_string(), n.to_string()]);
        }
        if let Some(n) = self.max_clients_per_ip {
            out.extend(["--max-clients-per-ip".to_string(), n.to_string()]);
        }
        if let Some(n) = self.client_frame_timeout_ms {
            out.extend(["--client-frame-timeout-ms".to_string(), n.to_string()]);
        }
        out
    }
}

/// `[cluster]`: the validator set and protocol parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cluster {
    /// `validators`: n, at least 4. Default 4.
    pub validators: usize,
    /// `checkpoint_interval`: K, at least 1. Default 16.
    pub checkpoint_interval: u64,
    /// `batch_size`: most requests per batch, at least 1. Default 32.
    pub batch_size: usize,
    /// `view_timeout_ms`: base view-change timeout, at least 1. Default 400.
    pub view_timeout_ms: u64,
    /// `storage` (extension, sim mode): `"memory"` or `"rocksdb"`. Default `"memory"`.
    /// Cluster mode always uses RocksDB.
    pub storage: StorageKind,
}

/// Where the simulated validators keep their ledgers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StorageKind {
    /// In memory.
    #[default]
    Memory,
    /// RocksDB in temporary directories.
    RocksDb,
}

impl Cluster {
    /// f = (n - 1) / 3.
    pub fn f(&self) -> usize {
        self.validators.saturating_sub(1) / 3
    }
}

impl Default for Cluster {
    fn default() -> Self {
        Cluster {
            validators: 4,
            checkpoint_interval: 16,
            batch_size: 32,
            view_timeout_ms: 400,
            storage: StorageKind::Memory,
        }
    }
}

/// `[network]`: background conditions, drawn from the seed.
#[derive(Clone, Debug, PartialEq)]
pub struct Network {
    /// `min_delay_ms`: smallest one-way delay. Default 1.
    pub min_delay_ms: u64,
    /// `max_delay_ms`: largest one-way delay, at least `min_delay_ms`. Default 10.
    pub max_delay_ms: u64,
    /// `drop_rate`: probability a message is lost, in [0, 1]. Default 0.
    pub drop_rate: f64,
    /// `duplicate_rate`: probability a message is delivered twice, in [0, 1]. Default 0.
    pub duplicate_rate: f64,
}

impl Default for Network {
    fn default() -> Self {
        Network {
            min_delay_ms: 1,
            max_delay_ms: 10,
            drop_rate: 0.0,
            duplicate_rate: 0.0,
        }
    }
}

/// `[workload]`: the clients and what they submit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workload {
    /// `clients`: at least 1. Default 4.
    pub clients: usize,
    /// `requests`: valid signed transfers in total. Default 100.
    pub requests: usize,
    /// `invalid_signatures`: requests whose signature does not verify. Default 0.
    pub invalid_signatures: usize,
    /// `replays`: resubmissions of already executed requests. Default 0.
    pub replays: usize,
    /// `overdrafts`: transfers larger than the sender's balance. Default 0.
    pub overdrafts: usize,
    /// `concurrency` (extension): requests each client keeps in flight, at least 1.
    /// Default 4.
    pub concurrency: usize,
    /// `think_ms` (extension): pause between a client's requests. Default 0.
    pub think_ms: u64,
    /// `balance` (extension): genesis balance of every client. Default 1000000.
    pub balance: u64,
    /// `op_bytes`: each valid request's operation is padded to this many bytes (at
    /// most the decoder's limit, 4096), so that batches, and the messages that carry
    /// them, reach their largest size. Default 0: no padding.
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
            think_ms: 0,
            balance: 1_000_000,
            op_bytes: 0,
        }
    }
}

impl Workload {
    /// Requests that must be accepted: valid transfers and overdrafts (which get a
    /// failed receipt).
    pub fn valid_requests(&self) -> usize {
        self.requests + self.overdrafts
    }
}

/// One `[[traitor]]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraitorEntry {
    /// `node`: the validator id, in `0..n` (required).
    pub node: u32,
    /// `behavior`: a name from the vocabulary (required).
    pub behavior: Behavior,
    /// `from_ms`: start of the active window. Default 0.
    pub from_ms: u64,
    /// `until_ms`: end of the active window (exclusive), not before `from_ms`. Default:
    /// none (active to the end of the run).
    pub until_ms: Option<u64>,
}

/// What a stranger does: a hostile client or host outside the validator set, who can
/// reach the validators' client port (docs/scenarios.md, "Strangers").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StrangerBehavior {
    /// Opens as many client connections as it is let and idles on them.
    HogConnections,
    /// Announces the largest frame on each of its connections and never finishes it.
    SlowFrame,
    /// Replays real clients' signed requests on connections of its own, to take their
    /// replies.
    HijackReplies,
    /// Sends unsigned queries as fast as it can.
    QueryFlood,
    /// Sends requests bearing genesis clients' keys with invalid signatures,
    /// reconnecting whenever it is cut off.
    BadSignatures,
    /// Holds a real client's key and signs a new operation under a request id that
    /// already executed.
    ReuseId,
}

impl StrangerBehavior {
    /// Every behaviour, in vocabulary order.
    pub const ALL: [StrangerBehavior; 6] = [
        StrangerBehavior::HogConnections,
        StrangerBehavior::SlowFrame,
        StrangerBehavior::HijackReplies,
        StrangerBehavior::QueryFlood,
        StrangerBehavior::BadSignatures,
        StrangerBehavior::ReuseId,
    ];

    /// The name scenario files use.
    pub fn name(self) -> &'static str {
        match self {
            StrangerBehavior::HogConnections => "hog_connections",
            StrangerBehavior::SlowFrame => "slow_frame",
            StrangerBehavior::HijackReplies => "hijack_replies",
            StrangerBehavior::QueryFlood => "query_flood",
            StrangerBehavior::BadSignatures => "bad_signatures",
            StrangerBehavior::ReuseId => "reuse_id",
        }
    }

    /// Whether sim mode plays it. The simulator delivers signed requests, not
    /// connections: only a stranger that acts through signed requests alone
    /// (`reuse_id`) is simulated; the others act on connections and run in cluster
    /// mode only.
    pub fn simulated(self) -> bool {
        matches!(self, StrangerBehavior::ReuseId)
    }

    /// The names, comma-separated (for error messages).
    pub fn valid_names() -> String {
        Self::ALL.map(|b| b.name()).join(", ")
    }
}

/// One `[[stranger]]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StrangerEntry {
    /// `behavior`: a name from the stranger vocabulary (required).
    pub behavior: StrangerBehavior,
    /// `from_ms`: start of the active window. Default 0.
    pub from_ms: u64,
    /// `until_ms`: end of the active window (exclusive), not before `from_ms`. Default:
    /// none (active to the end of the run).
    pub until_ms: Option<u64>,
    /// `count`: how many such strangers, each from an address of its own, 1 to 64.
    /// Default 1.
    pub count: u32,
}

/// One `[[fault]]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultEntry {
    /// `at_ms`: when (required), before `expect.deadline_ms`.
    pub at_ms: u64,
    /// `action` and its keys.
    pub action: FaultKind,
}

/// What a fault does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// `action = "crash"`, `node`: the process dies (SIGKILL in cluster mode).
    Crash {
        /// The validator.
        node: u32,
        /// `mid_checkpoint` (extension, default false): instead of dying at `at_ms`, die
        /// at the first checkpoint the validator writes from `at_ms` on, after the
        /// checkpoint batch is applied and before the checkpoint is taken and announced.
        mid_checkpoint: bool,
    },
    /// `action = "restart"`, `node`, `disk`: the process comes back.
    Restart {
        /// The validator (must be down: crashed by an earlier fault).
        node: u32,
        /// `disk`: `"keep"` (default) or `"wipe"` (forces state transfer).
        wipe: bool,
    },
    /// `action = "partition"`, `groups = [[0, 1], [2, 3]]`: validators in different
    /// groups cannot talk to each other; clients reach every group. A validator in no
    /// group is cut off from all.
    Partition {
        /// The groups.
        groups: Vec<Vec<u32>>,
    },
    /// `action = "isolate"`, `node`: cut one validator off from everyone.
    Isolate {
        /// The validator.
        node: u32,
    },
    /// `action = "heal"`: undo every partition and isolation.
    Heal,
}

/// `[expect]`: what must hold at the end of the run.
#[derive(Clone, Debug, PartialEq)]
pub struct Expect {
    /// `agreement`: honest ledgers are prefixes of one another (no invariant of
    /// agreement broken) and every running honest ledger ends at the same height and
    /// head hash. Default true (false when `violation = true`).
    pub agreement: bool,
    /// `all_committed`: every valid request got f+1 matching replies by the deadline.
    /// Default true (false when `violation = true`).
    pub all_committed: bool,
    /// `deadline_ms`: the run stops here (simulated or real ms). Default 30000.
    pub deadline_ms: u64,
    /// `view_at_least`: every running honest validator ends in this view or higher.
    /// Default: no check.
    pub view_at_least: Option<u64>,
    /// `view_at_most`: no running honest validator ends above this view. Default: no
    /// check.
    pub view_at_most: Option<u64>,
    /// `evidence_against`: every honest validator that ran the whole time (never
    /// crashed) holds signed evidence against each of these ids. Default: empty.
    pub evidence_against: Vec<u32>,
    /// `violation`: false (default): the run must detect no violation of safety (no
    /// invariant broken, no honest validator halted). True, only beyond the fault model:
    /// the run must detect the broken agreement or a halt, and is reported as a
    /// violation; it fails if it passes silently.
    pub violation: bool,
    /// `checkpoint_at_least` (extension): every running honest validator ends with a
    /// stable checkpoint at or above this sequence number. Default: no check.
    pub checkpoint_at_least: Option<u64>,
    /// `min_throughput_fraction` (extension), in [0, 1]: committed requests per second
    /// (simulated time in sim mode) at least this fraction of the same scenario's
    /// fault-free twin (same file and seed without traitors and faults). Default: no
    /// check.
    pub min_throughput_fraction: Option<f64>,
    /// `or_primary_replaced` (extension, with `min_throughput_fraction`): the floor also
    /// holds if every running honest validator ended in a view >= 1 (the slow primary
    /// was replaced). Default false.
    pub or_primary_replaced: bool,
    /// `max_memory_kb` (extension): the peak estimate of what one honest validator holds
    /// in memory for the protocol (see `docs/scenarios.md`) stays at or below this.
    /// Default: no check.
    pub max_memory_kb: Option<u64>,
    /// `max_rss_kb` (extension, cluster mode): the peak resident set size of every
    /// honest validator process stays at or below this. Sim mode has no processes and
    /// does not check it. Default: no check.
    pub max_rss_kb: Option<u64>,
    /// `[[expect.at]]` (extension): views at a point in time.
    pub at: Vec<AtCheck>,
    /// `[[expect.no_progress]]` (extension): windows in which no honest validator
    /// executes a batch.
    pub no_progress: Vec<Window>,
}

impl Default for Expect {
    fn default() -> Self {
        Expect {
            agreement: true,
            all_committed: true,
            deadline_ms: 30_000,
            view_at_least: None,
            view_at_most: None,
            evidence_against: Vec::new(),
            violation: false,
            checkpoint_at_least: None,
            min_throughput_fraction: None,
            or_primary_replaced: false,
            max_memory_kb: None,
            max_rss_kb: None,
            at: Vec::new(),
            no_progress: Vec::new(),
        }
    }
}

/// `[[expect.at]]`: at `at_ms`, the running honest validators' views are in bounds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AtCheck {
    /// `at_ms` (required), at most `deadline_ms`.
    pub at_ms: u64,
    /// `view_at_least`: every running honest validator is in this view or higher.
    pub view_at_least: Option<u64>,
    /// `view_at_most`: no running honest validator is above this view.
    pub view_at_most: Option<u64>,
}

/// `[[expect.no_progress]]`: no honest validator executes anything in
/// `(from_ms, until_ms]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    /// `from_ms` (required).
    pub from_ms: u64,
    /// `until_ms` (required), not before `from_ms`, at most `deadline_ms`.
    pub until_ms: u64,
}

impl Scenario {
    /// The seed of a run: the command line's, else the file's, else [`DEFAULT_SEED`].
    pub fn seed_or_default(&self, cli: Option<u64>) -> u64 {
        cli.or(self.seed).unwrap_or(DEFAULT_SEED)
    }

    /// The fault-free twin: the same cluster, network and workload without traitors,
    /// strangers or faults. Its throughput is the baseline of `min_throughput_fraction`.
    pub fn fault_free(&self) -> Scenario {
        let mut twin = self.clone();
        twin.traitors.clear();
        twin.strangers.clear();
        twin.faults.clear();
        twin.expect = Expect {
            deadline_ms: self.expect.deadline_ms,
            ..Expect::default()
        };
        twin
    }

    /// Every time at which the runner must record a probe of the honest validators, in
    /// the order expectations use them.
    pub fn probe_times(&self) -> Vec<u64> {
        let mut t: Vec<u64> = self.expect.at.iter().map(|a| a.at_ms).collect();
        for w in &self.expect.no_progress {
            t.push(w.from_ms);
            t.push(w.until_ms);
        }
        t.sort_unstable();
        t.dedup();
        t
    }

    /// The first stranger sim mode cannot play (see [`StrangerBehavior::simulated`]).
    pub fn unsimulated_stranger(&self) -> Option<&StrangerEntry> {
        self.strangers.iter().find(|s| !s.behavior.simulated())
    }

    /// How many strangers the scenario has (the sum of the tables' `count`).
    pub fn stranger_count(&self) -> usize {
        self.strangers.iter().map(|s| s.count as usize).sum()
    }

    /// The ids of the scripted traitors, sorted and without repeats.
    pub fn traitor_ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = self.traitors.iter().map(|t| t.node).collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }
}
