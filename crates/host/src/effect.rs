//! What the host asks its embedder to do, or tells it: drained with
//! [`crate::Host::poll_effect`], in order.

use bytes::Bytes;
use pbft_crypto::Digest;
use pbft_executor::Entry;
use pbft_protocol::{Batch, Dest, Duration, ReplicaId, Seq, View};

/// One effect of the host.
#[derive(Debug)]
pub enum Effect {
    /// Put these bytes on the wire to `dest` (encoded once: a broadcast is the same
    /// bytes for every other validator). A client is addressed by its key; the embedder
    /// knows where it is.
    Transmit {
        /// Where.
        dest: Dest,
        /// The frame.
        bytes: Bytes,
    },
    /// A committed batch was applied to the ledger (as the first execution of its
    /// requests, or as duplicates).
    Executed {
        /// Sequence number.
        seq: Seq,
        /// The view it committed in.
        view: View,
        /// The batch digest.
        digest: Digest,
        /// The batch.
        batch: Batch,
        /// What the ledger recorded for each request, in batch order.
        entries: Vec<Entry>,
        /// From the first pre-prepare or prepare sent for `seq` to the commit sent
        /// (how long the slot took to prepare), if this host saw both.
        prepare: Option<Duration>,
        /// From the commit sent to the execution, if this host saw both the slot's
        /// start and its commit (as for `prepare`).
        commit: Option<Duration>,
    },
    /// A snapshot was installed by state transfer: the ledger is now at checkpoint `seq`.
    Installed {
        /// The checkpoint.
        seq: Seq,
        /// The snapshot's size, bytes.
        bytes: usize,
    },
    /// New signed evidence that a validator is faulty.
    Evidence {
        /// The accused.
        against: ReplicaId,
        /// What kind of proof.
        kind: &'static str,
    },
    /// Something from a peer was refused by the host (a counter's reason).
    Refused {
        /// The peer.
        from: ReplicaId,
        /// Why.
        reason: &'static str,
    },
    /// The validator stopped taking part: its storage failed, or its state contradicts
    /// a stable checkpoint. It answers queries but takes no more inputs.
    Halted {
        /// Why.
        reason: String,
    },
    /// A fault hook made the validator crash here: the embedder ends the process (or,
    /// in the simulator, drops the host) without performing anything more.
    Crashed,
}
