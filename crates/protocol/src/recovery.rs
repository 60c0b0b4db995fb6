//! Recovery after a wiped disk (amnesia).
//!
//! A validator that starts without its consensus log remembers nothing it signed: it
//! may have prepared or committed `(view, seq, d)` before, and a traitor primary can
//! offer it `(view, seq, d')` now. Voting on it would contradict its own signature, and
//! could let a second certificate form where one committed. So a replica that starts
//! without its log is *recovering*: it signs no pre-prepare, prepare, commit, view change
//! or new view until it holds a stable checkpoint at or above a bound `H` on every
//! sequence number it may have signed at before. Checkpoint messages, catch-up and
//! state transfer go on as usual (a checkpoint message states a deterministic fact, and
//! fetched state is checked against a proof).
//!
//! The bound (the argument is in docs/protocol.md, "Recovery after a wiped disk"):
//!
//! - An honest replica signs at `seq` only within its window, `seq <= h + L`, where `h`
//!   is a stable checkpoint it holds a proof of.
//! - A proof of `h` holds q = 2f+1 checkpoint messages, at most f of traitors and one of
//!   the recovering replica itself, so at least f honest others executed `h`.
//! - An honest replica never executes beyond its own window: its stable checkpoint `c`
//!   is at least `h - L`.
//! - The recovering replica asks everyone and waits for q answers from others, each
//!   with a proven stable checkpoint. At least f+1 of them are honest; of the 2f honest
//!   others, at least f executed `h`, so at least one answer comes from one of those and
//!   proves `c >= h - L`. With `C` the highest proven answer, every sequence number the
//!   replica may have signed at is at most `C + 2L = H`.
//!
//! A traitor cannot raise `C` beyond a real stable checkpoint (answers carry proofs), nor
//! lower it (the highest answer counts). Until q others answer, the replica waits, and
//! counts towards f: a wipe while f traitors are active is one fault more than the
//! cluster tolerates, and the cluster then regains liveness when the answers come.

use crate::action::WalRecord;
use crate::config::ConfigError;
use crate::message::{Checkpoint, Message, ReplicaId, Seq, Signed};
use crate::replica::Replica;
use crate::time::Instant;
use crate::Config;
use pbft_crypto::Keypair;
use std::collections::{BTreeMap, BTreeSet};

/// The state of a recovering replica.
#[derive(Clone, Debug)]
pub(crate) struct Recovery {
    /// Chosen by the driver at the start that lost the log, echoed in answers.
    pub nonce: u64,
    /// The proven stable checkpoint each peer answered with.
    pub answers: BTreeMap<ReplicaId, Seq>,
    /// Peers that answered they are at genesis (signed nothing, executed nothing).
    pub blank: BTreeSet<ReplicaId>,
    /// `H`, once q others answered: every sequence number this replica may have signed
    /// at before the wipe is at or below it.
    pub bound: Option<Seq>,
}

impl Recovery {
    pub(crate) fn new(nonce: u64, bound: Option<Seq>) -> Recovery {
        Recovery {
            nonce,
            answers: BTreeMap::new(),
            blank: BTreeSet::new(),
            bound,
        }
    }
}

impl Replica {
    /// A replica that starts without its consensus log, on a ledger at genesis: it may
    /// have signed anything before, so it signs no vote until it has caught up past a
    /// bound learnt from q other replicas (see [`crate::recovery`]). `nonce` must be
    /// fresh for every such start (the node draws it at random).
    pub fn recover(
        cfg: Config,
        id: ReplicaId,
        key: Keypair,
        nonce: u64,
        now: Instant,
    ) -> Result<Replica, ConfigError> {
        let mut r = Replica::new(cfg, id, key)?;
        r.now = now;
        // the ledger is at genesis (a ledger without its log is refused), so the new,
        // empty client table is the ledger's; a snapshot install seeds it later
        r.recovery = Some(Recovery::new(nonce, None));
        tracing::info!(
            replica = id,
            "started without a consensus log: recovering, no votes until caught up"
        );
        r.persist(WalRecord::Recovering { nonce, bound: None });
        r.broadcast(Message::RecoveryQuery { nonce });
        r.tick_deadline = Some(now.plus(r.cfg.retransmit_interval));
        r.assert_invariants("recover");
        Ok(r)
    }

    /// True while this replica recovers from a lost log and signs no votes.
    pub fn is_recovering(&self) -> bool {
        self.recovery.is_some()
    }

    /// The recovering replica's bound `H`, once known: it votes again once its stable
    /// checkpoint reaches it.
    pub fn recovery_bound(&self) -> Option<Seq> {
        self.recovery.as_ref().and_then(|r| r.bound)
    }

    /// Answers a recovering peer with our stable checkpoint and its proof, at most once
    /// per half tick per peer (the asker repeats its question once per tick).
    pub(crate) fn on_recovery_query(&mut self, from: ReplicaId, nonce: u64) {
        // blank as of the moment this start's question first arrived: a replica that
        // signs later, meanwhile, does not turn a genesis start into a recovery
        let now_blank = self.is_blank();
        let blank = match self.blank_for.get(&from) {
            Some((n, b)) if *n == nonce => *b,
            _ => {
                self.blank_for.insert(from, (nonce, now_blank));
                now_blank
            }
        };
        let interval = self.cfg.retransmit_interval / 2;
        if !self.answered.allow_recovery(from, self.now, interval) {
            return;
        }
        let stable_proof = self.wire_checkpoint_proof();
        self.send(
            from,
            Message::RecoveryReply {
                nonce,
                stable_proof,
                blank,
            },
        );
    }

    /// True while this replica has signed nothing and executed nothing: it is at
    /// genesis, whether the cluster starts for the first time or it lost its disk.
    pub fn is_blank(&self) -> bool {
        !self.signed && self.last_executed == 0 && self.stable_seq == 0
    }

    /// An answer to our recovery question: once q others answered, the bound is the
    /// highest proven stable checkpoint plus two log windows.
    pub(crate) fn on_recovery_reply(
        &mut self,
        from: ReplicaId,
        nonce: u64,
        stable_proof: Vec<Signed<Checkpoint>>,
        blank: bool,
    ) {
        let Some(rec) = self.recovery.as_ref() else {
            return;
        };
        if rec.nonce != nonce {
            return;
        }
        if blank && stable_proof.is_empty() {
            self.note_blank_answer(from);
            if self.recovery.is_none() {
                return;
            }
        }
        if self.recovery.as_ref().is_some_and(|r| r.bound.is_some()) {
            return;
        }
        let seq = stable_proof.first().map_or(0, |c| c.body.seq);
        if self.valid_checkpoint_proof(seq, &stable_proof).is_none() {
            tracing::debug!(
                replica = self.id,
                from,
                seq,
                "recovery answer without a valid proof: ignored"
            );
            return;
        }
        let quorum = self.cfg.quorum();
        let window = self.cfg.log_window;
        let Some(rec) = self.recovery.as_mut() else {
            return;
        };
        let e = rec.answers.entry(from).or_insert(seq);
        *e = (*e).max(seq);
        if rec.answers.len() < quorum {
            return;
        }
        let highest = rec.answers.values().copied().max().unwrap_or(0);
        let bound = highest.saturating_add(window.saturating_mul(2));
        rec.bound = Some(bound);
        let nonce = rec.nonce;
        tracing::info!(
            replica = self.id,
            highest,
            bound,
            "recovery: no votes until the stable checkpoint reaches the bound"
        );
        self.persist(WalRecord::Recovering {
            nonce,
            bound: Some(bound),
        });
        self.check_recovered();
    }

    /// A peer answered that it had signed nothing when this start's question reached
    /// it. When every other validator says so and this replica executed nothing
    /// either, the cluster is starting: nothing was signed that this replica could
    /// contradict (the argument is in docs/protocol.md), and it votes at once. (An
    /// operator who starts a new cluster with a validator missing says so instead,
    /// with `--genesis`.)
    fn note_blank_answer(&mut self, from: ReplicaId) {
        let others = self.cfg.n() as usize - 1;
        let blank_self = self.last_executed == 0 && self.stable_seq == 0;
        let Some(rec) = self.recovery.as_mut() else {
            return;
        };
        rec.blank.insert(from);
        if rec.blank.len() < others || !blank_self {
            return;
        }
        tracing::info!(
            replica = self.id,
            "every other validator is at genesis too: the cluster is starting, voting"
        );
        self.end_recovery();
        self.try_propose();
    }

    /// Ends recovery once the stable checkpoint reached the bound: every sequence
    /// number this replica may have signed at before is now below its window.
    pub(crate) fn check_recovered(&mut self) {
        let Some(bound) = self.recovery_bound() else {
            return;
        };
        if self.stable_seq < bound {
            return;
        }
        tracing::info!(
            replica = self.id,
            view = self.view,
            stable = self.stable_seq,
            bound,
            "recovered: voting again"
        );
        self.end_recovery();
    }

    /// Votes again: logs it, and times the oldest waiting request. A primary proposes
    /// what it holds once the input that ended recovery is done (never in the middle
    /// of a stable checkpoint, whose state transfer and `next_seq` come first).
    fn end_recovery(&mut self) {
        self.recovery = None;
        self.persist(WalRecord::Recovered);
        self.arm_request_timer();
    }

    /// On each tick while recovering: ask again (answers may be lost, peers may come
    /// up later, and at a cluster's first start the last blank answer may come after
    /// the bound is known).
    pub(crate) fn retry_recovery_query(&mut self) {
        if let Some(rec) = self.recovery.as_ref() {
            let nonce = rec.nonce;
            self.broadcast(Message::RecoveryQuery { nonce });
        }
    }
}
