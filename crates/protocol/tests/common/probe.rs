//! One replica driven by hand: the protocol tests' probe. Inputs pass through the full
//! [`Verifier`], so what reaches the replica is what a node would hand it.

use super::{pubkeys, replica_key, state_digest, K};
use pbft_crypto::Digest;
use pbft_protocol::verify::Verifier;
use pbft_protocol::{
    Action, Batch, Config, ExecutedRequest, ExecutionResult, Instant, Message, Replica, ReplicaId,
    Seq, SignedRequest,
};
use std::time::Duration;

/// A replica, the verifier in front of it, and the time its inputs carry.
pub struct Probe {
    pub r: Replica,
    pub verifier: Verifier,
    pub now: Instant,
}

impl Probe {
    /// Replica `id` of the four test validators, with the default configuration.
    pub fn new(id: ReplicaId) -> Probe {
        Probe::with_config(id, Config::new(pubkeys()))
    }

    /// A probe for replica `id` of a cluster configured as `cfg`, whose verifier
    /// admits the clients `cfg` admits.
    pub fn with_config(id: ReplicaId, cfg: Config) -> Probe {
        Probe {
            verifier: Verifier::for_config(&cfg),
            r: Replica::new(cfg, id, replica_key(id).clone()).expect("a valid configuration"),
            now: Instant::ZERO,
        }
    }

    /// Replica `id` of the four test validators started without its log: it recovers
    /// (its first actions, the logged start and the question, are left to read).
    pub fn recovering(id: ReplicaId, nonce: u64) -> Probe {
        let cfg = Config::new(pubkeys());
        Probe {
            verifier: Verifier::for_config(&cfg),
            r: Replica::recover(cfg, id, replica_key(id).clone(), nonce, Instant::ZERO)
                .expect("a valid configuration"),
            now: Instant::ZERO,
        }
    }

    /// The actions the last input produced.
    pub fn actions(&mut self) -> Vec<Action> {
        std::iter::from_fn(|| self.r.poll_action()).collect()
    }

    /// `msg` from validator `from`, verified and handed to the replica.
    pub fn deliver(&mut self, from: ReplicaId, msg: Message) -> Vec<Action> {
        let v = self.verifier.verify(from, msg).expect("verifies");
        self.r.on_message(v, self.now);
        self.actions()
    }

    /// A request from a client connection.
    pub fn client(&mut self, req: SignedRequest) -> Vec<Action> {
        let v = self.verifier.verify_request(req).expect("client signature");
        self.r.on_request(v, self.now);
        self.actions()
    }

    /// `req` from a connection that did not prove it holds the client's key.
    pub fn stranger(&mut self, req: SignedRequest) -> Vec<Action> {
        let v = self.verifier.verify_request(req).expect("client signature");
        self.r.on_unproven_request(v, self.now);
        self.actions()
    }

    /// Time moves to `ms` after the start and the replica's timers run.
    pub fn at(&mut self, ms: u64) -> Vec<Action> {
        self.now = Instant::ZERO.plus(Duration::from_millis(ms));
        self.r.on_timeout(self.now);
        self.actions()
    }

    /// Reports `batch` executed at `seq`, with a state digest at checkpoints.
    pub fn execute(&mut self, seq: Seq, batch: &Batch) -> Vec<Action> {
        let digest = seq.is_multiple_of(K).then(|| state_digest(seq));
        self.execute_with_digest(seq, batch, digest)
    }

    /// Reports `batch` executed at `seq` with the given state digest.
    pub fn execute_with_digest(
        &mut self,
        seq: Seq,
        batch: &Batch,
        state_digest: Option<Digest>,
    ) -> Vec<Action> {
        let replies = batch
            .requests
            .iter()
            .map(|r| ExecutedRequest {
                client: r.body.client,
                request_id: r.body.request_id,
                request: r.body.digest(),
                result: vec![1],
            })
            .collect();
        self.r.on_executed(
            seq,
            ExecutionResult {
                replies,
                state_digest,
            },
            self.now,
        );
        self.actions()
    }
}

/// The sequence numbers handed out for execution in `actions`.
pub fn executed(actions: &[Action]) -> Vec<Seq> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Execute { seq, .. } => Some(*seq),
            _ => None,
        })
        .collect()
}

/// The kinds of evidence recorded in `actions`.
pub fn evidence_kinds(actions: &[Action]) -> Vec<&'static str> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Evidence { evidence, .. } => Some(evidence.kind()),
            _ => None,
        })
        .collect()
}
