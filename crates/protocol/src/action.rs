//! What the core asks its driver to do. The driver performs actions in the order they
//! are polled: a [`Action::Persist`] must be durable before any later action is
//! performed, because later sends may depend on it.

use crate::message::{
    Batch, Checkpoint, Evidence, Message, NewView, PrePrepare, PreparedProof, ReplicaId, RequestId,
    Seq, Signed, SignedReply, View, ViewChange,
};
use pbft_crypto::{Digest, PublicKey};
use serde::{Deserialize, Serialize};

/// An output of the replica state machine.
// Actions live briefly in a queue; boxing the larger variants would cost an allocation
// per action on the hot path for no memory win.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send a message to one validator.
    Send {
        /// Destination.
        to: ReplicaId,
        /// The message.
        msg: Message,
    },
    /// Send a message to every other validator (encode once).
    Broadcast {
        /// The message.
        msg: Message,
    },
    /// Send a reply to a client.
    Reply {
        /// The client.
        client: PublicKey,
        /// The signed reply.
        reply: SignedReply,
    },
    /// Make a record durable before performing any later action.
    Persist(WalRecord),
    /// Execute a committed batch. Batches are handed out strictly in sequence order;
    /// the driver answers with [`crate::Replica::on_executed`] in the same order.
    Execute {
        /// Sequence number.
        seq: Seq,
        /// View in which it committed.
        view: View,
        /// `H(batch)`.
        digest: Digest,
        /// The batch.
        batch: Batch,
    },
    /// A checkpoint became stable: the executor keeps this snapshot and may drop older
    /// ones; the write-ahead log may drop records at or below `seq`.
    StableCheckpoint {
        /// The checkpoint.
        seq: Seq,
        /// Its state digest.
        digest: Digest,
    },
    /// The replica is behind: fetch the snapshot of checkpoint `seq` from `peer`, compute
    /// its digest without installing it, and report with
    /// [`crate::Replica::on_state_offer`].
    FetchState {
        /// The stable checkpoint wanted.
        seq: Seq,
        /// Its proven digest.
        digest: Digest,
        /// Who to ask.
        peer: ReplicaId,
    },
    /// The fetched snapshot matches the proof: install it, then call
    /// [`crate::Replica::on_state_transferred`].
    InstallState {
        /// The checkpoint.
        seq: Seq,
        /// Its proven digest.
        digest: Digest,
    },
    /// A client asked again for a request that executed but whose reply is not cached
    /// (the replica restarted or installed a snapshot since, or the reply left the
    /// cache), or signed a new request under an id that executed: read the receipt of
    /// that id from the ledger and, if there is one, send the client the reply
    /// [`crate::Replica::sign_reply`] signs for `request`. If the receipt records this
    /// request, its answer (result, seq) is the one every validator gave when the
    /// request executed; if it records another request, the result is the executor's
    /// refusal of a reused id, at the sequence number the id executed at.
    ReplyFromLedger {
        /// The client.
        client: PublicKey,
        /// The request.
        request_id: RequestId,
        /// [`crate::Request::digest`] of the request the client sent: the reply binds it.
        request: Digest,
    },
    /// A peer asked for the snapshot of our stable checkpoint `seq`: send it.
    ServeState {
        /// The asker.
        to: ReplicaId,
        /// The checkpoint.
        seq: Seq,
    },
    /// New signed proof that a validator is faulty (for logs, metrics and tests).
    Evidence {
        /// The accused validator.
        against: ReplicaId,
        /// The proof.
        evidence: Box<Evidence>,
    },
    /// The replica found its own state contradicting a stable checkpoint, or a broken
    /// driver contract; it stops taking part. Only possible beyond the fault model or
    /// with a faulty executor.
    Halt {
        /// Why.
        reason: String,
    },
}

/// A durable record of something the replica promised. Reloaded on restart so that a
/// restarted replica never contradicts what it sent before.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WalRecord {
    /// The current view, and whether a view change is under way.
    View {
        /// The view.
        view: View,
        /// True while changing to `view`.
        changing: bool,
    },
    /// As primary, proposed this batch (implies the pre-prepare was sent).
    Proposed {
        /// The signed pre-prepare.
        pre_prepare: Signed<PrePrepare>,
        /// The batch.
        batch: Batch,
    },
    /// As backup, accepted this pre-prepare (implies a prepare was sent).
    Accepted {
        /// The signed pre-prepare.
        pre_prepare: Signed<PrePrepare>,
        /// The batch.
        batch: Batch,
    },
    /// The slot prepared with this certificate (implies a commit was sent).
    Prepared(PreparedProof),
    /// Own checkpoint message.
    Checkpoint(Signed<Checkpoint>),
    /// A stable checkpoint proof.
    StableCheckpoint(Vec<Signed<Checkpoint>>),
    /// Own view-change message.
    ViewChange(Box<Signed<ViewChange>>),
    /// A new view this replica sent or accepted.
    NewView(Box<Signed<NewView>>),
    /// Evidence held against a validator.
    Evidence(Box<Evidence>),
    /// The replica started without its log and recovers (see [`crate::recovery`]):
    /// with the nonce of its question and, once learnt, the bound it must catch up to.
    Recovering {
        /// The nonce its recovery question carries.
        nonce: u64,
        /// The bound `H`, once q others answered.
        bound: Option<Seq>,
    },
    /// Recovery ended: the replica votes again.
    Recovered,
}

impl WalRecord {
    /// The stable checkpoint from which on the record is no longer needed, if there is
    /// one: a log keeps the records this is `None` for or above its latest stable
    /// checkpoint.
    ///
    /// - A record about one slot (a proposal, an accepted pre-prepare, a prepared
    ///   certificate, an own checkpoint message): its sequence number.
    /// - A stable-checkpoint proof: the sequence number after it, so that the latest
    ///   proof stays and each later stable checkpoint drops the one before. (Without
    ///   it a log would keep one proof per K sequence numbers for as long as the
    ///   validator runs, each read at restart and scanned at compaction: decision 0046.)
    /// - View and view-change records, evidence and recovery records: none, they are
    ///   kept.
    pub fn obsolete_at(&self) -> Option<Seq> {
        match self {
            WalRecord::Proposed { pre_prepare, .. } | WalRecord::Accepted { pre_prepare, .. } => {
                Some(pre_prepare.body.seq)
            }
            WalRecord::Prepared(p) => Some(p.pre_prepare.body.seq),
            WalRecord::Checkpoint(c) => Some(c.body.seq),
            WalRecord::StableCheckpoint(proof) => {
                proof.first().map(|c| c.body.seq.saturating_add(1))
            }
            _ => None,
        }
    }

    /// Which of `records` (a consensus log, in append order) later records of the same
    /// log have made useless, whatever the stable checkpoint:
    ///
    /// - every `View` record but the one a restart goes by (the last of those with the
    ///   highest view, as in `Replica::restore`; views only grow, so it is the last);
    /// - this replica's view change for view `w`, once the last `View` record is past
    ///   `w`, or is `w` and not changing (it is only retransmitted while changing to
    ///   `w`, and a later view change builds a new one);
    /// - a new view for `w`, once the last `View` record is past `w` (a replica clears
    ///   its new view when it starts a view change).
    ///
    /// Deciding from the log itself, not from the replica's state, means a record is only
    /// ever dropped after the record that replaces it is durable. Without this, every view
    /// change would leave its records in the log for good, and a view-change record
    /// carries prepared certificates with their batches (decision 0047).
    pub fn superseded(records: &[WalRecord]) -> Vec<bool> {
        // the View record restore ends up with: the last one at the highest view
        let mut current: Option<(usize, View, bool)> = None;
        for (i, r) in records.iter().enumerate() {
            if let WalRecord::View { view, changing } = r {
                if current.is_none_or(|(_, v, _)| *view >= v) {
                    current = Some((i, *view, *changing));
                }
            }
        }
        let Some((last, view, changing)) = current else {
            return vec![false; records.len()];
        };
        records
            .iter()
            .enumerate()
            .map(|(i, r)| match r {
                WalRecord::View { .. } => i != last,
                WalRecord::ViewChange(vc) => {
                    let w = vc.body.new_view;
                    view > w || (view == w && !changing)
                }
                WalRecord::NewView(nv) => view > nv.body.view,
                _ => false,
            })
            .collect()
    }
}
