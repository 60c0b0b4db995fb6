//! What the core asks its driver to do. The driver performs actions in the order they
//! are polled: a [`Action::Persist`] must be durable before any later action is
//! performed, because later sends may depend on it.

use crate::message::{
    Batch, Checkpoint, Evidence, Message, NewView, PrePrepare, PreparedProof, ReplicaId, Seq,
    Signed, SignedReply, View, ViewChange,
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
}

impl WalRecord {
    /// The sequence number the record is about, if any: records with a sequence number
    /// at or below the latest stable checkpoint are obsolete.
    pub fn seq(&self) -> Option<Seq> {
        match self {
            WalRecord::Proposed { pre_prepare, .. } | WalRecord::Accepted { pre_prepare, .. } => {
                Some(pre_prepare.body.seq)
            }
            WalRecord::Prepared(p) => Some(p.pre_prepare.body.seq),
            WalRecord::Checkpoint(c) => Some(c.body.seq),
            _ => None,
        }
    }
}
