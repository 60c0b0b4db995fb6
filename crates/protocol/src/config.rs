//! Cluster parameters: n, f, q, the checkpoint interval K, the log window L, batching
//! and timeouts. Quorum sizes derive from the configured `n`, never from who is alive.

use crate::bounds::FrameBounds;
use crate::envelope::Limits;
use crate::message::{ReplicaId, View};
use crate::time::Duration;
use pbft_crypto::PublicKey;
use std::sync::Arc;
use thiserror::Error;

/// Which keys may submit requests: the one rule every path applies, whether a request
/// comes from a client connection, is relayed by a validator, or sits in a primary's
/// batch (see [`crate::Verifier`], which applies it before any signature is checked).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientKeys {
    /// Any key: for tests and benchmarks of the protocol alone, with no ledger whose
    /// accounts would decide.
    Any,
    /// Only these keys (the cluster's client accounts).
    Listed {
        /// The keys, sorted and without duplicates (for lookups).
        sorted: Arc<[PublicKey]>,
        /// Where in `sorted` the first key as listed is (client 0 of the cluster
        /// file).
        first: usize,
    },
}

impl ClientKeys {
    /// Only `keys` may submit, in the order the cluster lists them.
    pub fn listed(keys: impl IntoIterator<Item = PublicKey>) -> ClientKeys {
        let mut v: Vec<PublicKey> = keys.into_iter().collect();
        let listed_first = v.first().copied();
        v.sort_unstable();
        v.dedup();
        let first = listed_first
            .and_then(|k| v.binary_search(&k).ok())
            .unwrap_or(0);
        ClientKeys::Listed {
            sorted: v.into(),
            first,
        }
    }

    /// True if `client` may submit requests. A binary search: cheap enough to run on
    /// every request before its signature is checked.
    pub fn admits(&self, client: &PublicKey) -> bool {
        match self {
            ClientKeys::Any => true,
            ClientKeys::Listed { sorted, .. } => sorted.binary_search(client).is_ok(),
        }
    }

    /// The client with the lowest index (the first listed), if the keys are listed.
    pub fn first(&self) -> Option<PublicKey> {
        match self {
            ClientKeys::Any => None,
            ClientKeys::Listed { sorted, first } => sorted.get(*first).copied(),
        }
    }
}

/// Everything a replica needs to know about its cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Validator public keys, indexed by replica id. `n = validators.len()`.
    pub validators: Vec<PublicKey>,
    /// K: a checkpoint every K sequence numbers.
    pub checkpoint_interval: u64,
    /// L: sequence numbers accepted are `(h, h + L]`. A multiple of K, at least 2K.
    pub log_window: u64,
    /// Most requests per batch.
    pub max_batch: usize,
    /// Most sequence numbers the primary keeps in flight (proposed, not executed).
    pub pipeline_depth: u64,
    /// Base view-change timeout T (doubles on consecutive failed view changes).
    pub view_timeout: Duration,
    /// How often a replica with unfinished work re-sends its latest messages and
    /// checks whether it is behind.
    pub retransmit_interval: Duration,
    /// Most requests a client may have outstanding beyond its highest executed one.
    pub client_window: u64,
    /// The keys that may submit requests (the cluster file's client accounts).
    pub clients: ClientKeys,
}

/// Why a configuration is unusable.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// Fewer than 4 validators: PBFT needs n >= 3f+1 with f >= 1.
    #[error("{0} validators cannot tolerate a fault: PBFT needs n >= 3f+1 = 4 for f = 1")]
    TooFewValidators(usize),
    /// The same key listed twice.
    #[error("validator {a} and validator {b} have the same public key")]
    DuplicateKey {
        /// First id.
        a: usize,
        /// Second id.
        b: usize,
    },
    /// A parameter out of range.
    #[error("invalid parameter {field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
}

impl Config {
    /// A configuration with the defaults used by tests and the simulator.
    pub fn new(validators: Vec<PublicKey>) -> Config {
        Config {
            validators,
            checkpoint_interval: 16,
            log_window: 32,
            max_batch: 32,
            pipeline_depth: 8,
            view_timeout: Duration::from_millis(400),
            retransmit_interval: Duration::from_millis(100),
            client_window: 64,
            clients: ClientKeys::Any,
        }
    }

    /// Checks the parameters; a replica refuses to start on an invalid configuration.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let n = self.validators.len();
        if n < 4 {
            return Err(ConfigError::TooFewValidators(n));
        }
        for a in 0..n {
            for b in a + 1..n {
                if self.validators[a] == self.validators[b] {
                    return Err(ConfigError::DuplicateKey { a, b });
                }
            }
        }
        let invalid = |field, reason| Err(ConfigError::Invalid { field, reason });
        if self.checkpoint_interval == 0 {
            return invalid("checkpoint_interval", "must be at least 1");
        }
        if self.log_window < 2 * self.checkpoint_interval
            || !self.log_window.is_multiple_of(self.checkpoint_interval)
        {
            return invalid(
                "log_window",
                "must be a multiple of checkpoint_interval, at least twice it",
            );
        }
        if self.max_batch == 0 {
            return invalid("max_batch", "must be at least 1");
        }
        if self.pipeline_depth == 0 || self.pipeline_depth > self.log_window {
            return invalid("pipeline_depth", "must be between 1 and log_window");
        }
        if self.view_timeout.is_zero() || self.retransmit_interval.is_zero() {
            return invalid("view_timeout", "timeouts must be positive");
        }
        if self.client_window == 0 {
            return invalid("client_window", "must be at least 1");
        }
        self.validate_sizes(&Limits::default())
    }

    /// Checks that every message a replica of this configuration sends fits the
    /// decoder's `limits` (docs/protocol.md, "Message sizes"): a message that does not is
    /// never delivered, and a view change that is never delivered never completes.
    pub fn validate_sizes(&self, limits: &Limits) -> Result<(), ConfigError> {
        let invalid = |field, reason| Err(ConfigError::Invalid { field, reason });
        if self.validators.len() > limits.max_certificate {
            return invalid(
                "validators",
                "more validators than a certificate may hold on the wire",
            );
        }
        if self.log_window > limits.max_slots as u64 {
            return invalid(
                "log_window",
                "larger than the number of slots a view change may carry on the wire",
            );
        }
        if self.max_batch > limits.max_batch_requests {
            return invalid(
                "max_batch",
                "larger than the number of requests a batch may hold on the wire",
            );
        }
        let b = FrameBounds::of(self, limits);
        let max = limits.max_frame_bytes;
        if b.pre_prepare > max || b.proofs_per_answer(limits, 1) == 0 {
            return invalid(
                "max_batch",
                "a full batch of requests with operations at the size limit would exceed the frame limit",
            );
        }
        if b.view_change > max || b.new_view > max {
            return invalid(
                "log_window",
                "a new view of q view changes, each with a certificate for every slot of the window, would exceed the frame limit with this many validators",
            );
        }
        Ok(())
    }

    /// n, the number of validators.
    pub fn n(&self) -> u32 {
        self.validators.len() as u32
    }

    /// f = (n - 1) / 3, the number of traitors tolerated.
    pub fn f(&self) -> u32 {
        (self.n().saturating_sub(1)) / 3
    }

    /// q = n - f, the quorum size (2f+1 when n = 3f+1).
    pub fn quorum(&self) -> usize {
        (self.n() - self.f()) as usize
    }

    /// f + 1: enough that at least one is honest.
    pub fn weak_quorum(&self) -> usize {
        self.f() as usize + 1
    }

    /// `primary(v) = v mod n`.
    pub fn primary(&self, view: View) -> ReplicaId {
        (view % u64::from(self.n())) as ReplicaId
    }
}
