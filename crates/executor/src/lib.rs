//! The ledger executor: turns committed batches into a durable, verifiable ledger.
//!
//! Accounts are clients' ed25519 public keys with `u64` balances. A request carries one
//! or more transfers applied all or none; a failed request gets a failed receipt with the
//! reason, identical on every replica. Exactly-once is per `(client, request_id)`: a
//! request that reaches execution again is a deterministic "duplicate" no-op. Every
//! executed batch, null batches included, produces a block in a hash chain.
//!
//! One trait, [`Executor`], with two implementations that must agree exactly: in memory
//! ([`memory::MemoryExecutor`], for the simulator) and on RocksDB (`RocksExecutor`, with
//! the `rocksdb` feature). Both run the same pure [`transition::execute_batch`]. A
//! block's state digest chains the batch's exact state changes onto the previous one
//! ([`types::state_digest_after`]); the digest of the whole state is an LtHash
//! ([`lthash`]), updated at each checkpoint for the keys changed since the previous
//! one, so its cost does not grow with the state.
//!
//! # Features
//!
//! * `rocksdb` (on by default): the RocksDB executor (module `rocks`), the consensus
//!   log (`wal`) and the ledger check (`verify`). Without it the crate has no native
//!   dependency and offers the [`Executor`] trait, the types, the transition, the
//!   in-memory executor, snapshot encoding and checking, and the LtHash: what a sans-IO
//!   driver or the simulator needs.

// One `unsafe` call in the whole crate: `xof8` runs its AVX2 build after checking for
// AVX2 at run time.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod error;
pub mod lthash;
pub mod memory;
pub mod record_log;
#[cfg(feature = "rocksdb")]
pub mod rocks;
pub mod snapshot;
pub mod transition;
pub mod types;
#[cfg(feature = "rocksdb")]
pub mod verify;
#[cfg(feature = "rocksdb")]
pub mod wal;
mod xof8;

pub use error::ExecError;
pub use memory::MemoryExecutor;
pub use record_log::{MemoryLog, Record, RecordLog};
#[cfg(feature = "rocksdb")]
pub use rocks::{CfMemory, FaultPlan, RocksExecutor, RocksOptions};
pub use types::{
    Applied, Block, ClientWindow, Entry, ExecRequest, FailReason, Head, Operation, Receipt,
    StoredReceipt, Transfer,
};
#[cfg(feature = "rocksdb")]
pub use verify::{read_receipts, show_ledger, verify_ledger, LedgerReport, LedgerShow};
#[cfg(feature = "rocksdb")]
pub use wal::ConsensusLog;

use pbft_crypto::{Digest, PublicKey};

/// The snapshot of one checkpoint, read chunk by chunk ([`Executor::export_source`]).
/// It owns what it reads from (a RocksDB checkpoint opened read-only, or a copy of the
/// in-memory state), so it outlives the call that made it; a checkpoint removed while it
/// is read may make a later chunk fail.
pub trait SnapshotSource: Send {
    /// The checkpoint.
    fn seq(&self) -> u64;
    /// How many chunks the snapshot has.
    fn total(&self) -> u32;
    /// Chunk `index` (from 0), encoded ([`snapshot::SnapshotChunk`]).
    fn chunk(&mut self, index: u32) -> Result<Vec<u8>, ExecError>;
    /// Bytes this reader holds besides the chunk it returns (the first key of each
    /// chunk).
    fn held_bytes(&self) -> usize;
}

/// What every executor does. Batches apply strictly in sequence order, each atomically.
pub trait Executor {
    /// Applies the committed batch `seq` (which must be `head().height + 1`).
    fn apply(
        &mut self,
        seq: u64,
        batch_digest: Digest,
        requests: &[ExecRequest<'_>],
    ) -> Result<Applied, ExecError>;

    /// The ledger head: height, block hash, state digest.
    fn head(&self) -> Head;

    /// Keeps a snapshot of the current state as checkpoint `head().height` and returns
    /// its checkpoint digest. The snapshot is kept until a later checkpoint is stable.
    fn checkpoint(&mut self) -> Result<Digest, ExecError>;

    /// Checkpoint `seq` is stable: drop every older snapshot.
    fn stable(&mut self, seq: u64) -> Result<(), ExecError>;

    /// The last stable checkpoint (0 = genesis).
    fn stable_seq(&self) -> u64;

    /// Rolls the state back to the last stable checkpoint, discarding every batch
    /// executed after it. Returns the checkpoint's sequence number.
    fn rollback(&mut self) -> Result<u64, ExecError>;

    /// A reader of the snapshot of kept checkpoint `seq`, in chunks of about
    /// `max_chunk` bytes, each produced on demand. The RocksDB executor's reader holds
    /// the first key of each chunk (one pass places them) and reads each chunk from the
    /// checkpoint; the in-memory executor's holds a sorted copy of the checkpoint's
    /// state, which that executor holds in memory anyway.
    fn export_source(
        &self,
        seq: u64,
        max_chunk: usize,
    ) -> Result<Box<dyn SnapshotSource>, ExecError>;

    /// The whole snapshot of kept checkpoint `seq` at once, in chunks of about
    /// `max_chunk` bytes (for tests and tools: state transfer reads chunks one at a
    /// time from [`Executor::export_source`]).
    fn export(&self, seq: u64, max_chunk: usize) -> Result<Vec<Vec<u8>>, ExecError> {
        let mut source = self.export_source(seq, max_chunk)?;
        (0..source.total()).map(|i| source.chunk(i)).collect()
    }

    /// Starts staging a snapshot of checkpoint `seq`, discarding any staged before.
    /// The live state is not touched until [`Executor::import_commit`].
    fn import_begin(&mut self, seq: u64) -> Result<(), ExecError>;

    /// Checks one chunk of the snapshot being staged and stages its entries, in any
    /// order of chunks. A chunk that does not check out is
    /// [`ExecError::BadSnapshot`]; the staged snapshot is then of no use.
    fn import_chunk(&mut self, seq: u64, chunk: &[u8]) -> Result<(), ExecError>;

    /// Once every chunk is staged: checks the snapshot as a whole and returns its
    /// checkpoint digest, for the caller to compare with the proven one.
    fn import_finish(&mut self, seq: u64) -> Result<Digest, ExecError>;

    /// Replaces the local state with the staged snapshot of checkpoint `seq`, if it is
    /// complete and its digest is `expected`; the switch is atomic (a crash before it
    /// leaves the old state, after it the new). A staged snapshot that does not match
    /// changes nothing.
    fn import_commit(&mut self, seq: u64, expected: Digest) -> Result<Head, ExecError>;

    /// Discards the staged snapshot, if any.
    fn import_abort(&mut self);

    /// Bytes the executor holds in memory for a snapshot being staged (the verifier's
    /// keys per chunk and the like; the staged entries themselves are on disk for the
    /// RocksDB executor).
    fn import_held_bytes(&self) -> usize;

    /// Verifies a snapshot of checkpoint `seq` against its proven digest and, only if it
    /// matches, replaces the local state with it. A bad snapshot changes nothing.
    /// (Stages it chunk by chunk: see [`Executor::import_begin`].)
    fn import(
        &mut self,
        seq: u64,
        expected: Digest,
        chunks: &[Vec<u8>],
    ) -> Result<Head, ExecError> {
        let staged = (|| {
            self.import_begin(seq)?;
            if chunks.is_empty() {
                return Err(ExecError::BadSnapshot("no chunks".into()));
            }
            for c in chunks {
                self.import_chunk(seq, c)?;
            }
            if self.import_finish(seq)? != expected {
                return Err(ExecError::BadSnapshot(
                    "its digest does not match the stable checkpoint".into(),
                ));
            }
            Ok(())
        })();
        if let Err(e) = staged {
            self.import_abort();
            return Err(e);
        }
        self.import_commit(seq, expected)
    }

    /// An account's balance.
    fn balance(&self, account: &PublicKey) -> Result<Option<u64>, ExecError>;

    /// A client's exactly-once window (fresh if it executed nothing).
    fn client_window(&self, client: &PublicKey) -> Result<ClientWindow, ExecError>;

    /// A request's receipt.
    fn receipt(
        &self,
        client: &PublicKey,
        request_id: u64,
    ) -> Result<Option<StoredReceipt>, ExecError>;

    /// A block by height.
    fn block(&self, height: u64) -> Result<Option<Block>, ExecError>;
}

/// A boxed executor is an executor: a driver generic over `E: Executor` can own a
/// `Box<dyn Executor>` chosen at run time (in memory or on RocksDB).
impl<E: Executor + ?Sized> Executor for Box<E> {
    fn apply(
        &mut self,
        seq: u64,
        batch_digest: Digest,
        requests: &[ExecRequest<'_>],
    ) -> Result<Applied, ExecError> {
        (**self).apply(seq, batch_digest, requests)
    }

    fn head(&self) -> Head {
        (**self).head()
    }

    fn checkpoint(&mut self) -> Result<Digest, ExecError> {
        (**self).checkpoint()
    }

    fn stable(&mut self, seq: u64) -> Result<(), ExecError> {
        (**self).stable(seq)
    }

    fn stable_seq(&self) -> u64 {
        (**self).stable_seq()
    }

    fn rollback(&mut self) -> Result<u64, ExecError> {
        (**self).rollback()
    }

    fn export_source(
        &self,
        seq: u64,
        max_chunk: usize,
    ) -> Result<Box<dyn SnapshotSource>, ExecError> {
        (**self).export_source(seq, max_chunk)
    }

    fn import_begin(&mut self, seq: u64) -> Result<(), ExecError> {
        (**self).import_begin(seq)
    }

    fn import_chunk(&mut self, seq: u64, chunk: &[u8]) -> Result<(), ExecError> {
        (**self).import_chunk(seq, chunk)
    }

    fn import_finish(&mut self, seq: u64) -> Result<Digest, ExecError> {
        (**self).import_finish(seq)
    }

    fn import_commit(&mut self, seq: u64, expected: Digest) -> Result<Head, ExecError> {
        (**self).import_commit(seq, expected)
    }

    fn import_abort(&mut self) {
        (**self).import_abort()
    }

    fn import_held_bytes(&self) -> usize {
        (**self).import_held_bytes()
    }

    fn balance(&self, account: &PublicKey) -> Result<Option<u64>, ExecError> {
        (**self).balance(account)
    }

    fn client_window(&self, client: &PublicKey) -> Result<ClientWindow, ExecError> {
        (**self).client_window(client)
    }

    fn receipt(
        &self,
        client: &PublicKey,
        request_id: u64,
    ) -> Result<Option<StoredReceipt>, ExecError> {
        (**self).receipt(client, request_id)
    }

    fn block(&self, height: u64) -> Result<Option<Block>, ExecError> {
        (**self).block(height)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pbft_crypto::Keypair;
    use std::collections::BTreeMap;

    fn key(i: u8) -> PublicKey {
        Keypair::from_seed(&[i; 32]).expect("test key").public()
    }

    /// What a driver generic over its executor sees of a short history: three batches
    /// (one transfer each, client 1 to client 2), checkpoints at 2 and 3, 2 stable, a
    /// rollback to it, and the snapshot of checkpoint 2.
    #[derive(Debug, PartialEq, Eq)]
    struct Seen {
        applied: Vec<Applied>,
        checkpoints: Vec<Digest>,
        head_before_rollback: Head,
        stable_seq: u64,
        rolled_back_to: u64,
        head: Head,
        balances: Vec<Option<u64>>,
        window: ClientWindow,
        receipt: Option<StoredReceipt>,
        block: Option<Block>,
        snapshot: Vec<Vec<u8>>,
    }

    fn drive<E: Executor>(e: &mut E) -> Seen {
        let client = key(1);
        let op = Operation {
            transfers: vec![Transfer {
                to: key(2),
                amount: 5,
            }],
        }
        .encode();
        let mut applied = Vec::new();
        let mut checkpoints = Vec::new();
        for seq in 1..=3u64 {
            let req = [ExecRequest {
                client: &client,
                request_id: seq,
                op: &op,
                digest: Digest::of(&seq.to_le_bytes()),
            }];
            applied.push(
                e.apply(seq, Digest::of(&seq.to_le_bytes()), &req)
                    .expect("apply"),
            );
            if seq >= 2 {
                checkpoints.push(e.checkpoint().expect("checkpoint"));
            }
        }
        e.stable(2).expect("stable");
        let head_before_rollback = e.head();
        let stable_seq = e.stable_seq();
        let rolled_back_to = e.rollback().expect("rollback");
        Seen {
            applied,
            checkpoints,
            head_before_rollback,
            stable_seq,
            rolled_back_to,
            head: e.head(),
            balances: [1, 2, 3]
                .iter()
                .map(|i| e.balance(&key(*i)).expect("balance"))
                .collect(),
            window: e.client_window(&client).expect("window"),
            receipt: e.receipt(&client, 2).expect("receipt"),
            block: e.block(2).expect("block"),
            snapshot: e.export(2, 64).expect("export"),
        }
    }

    #[test]
    fn a_boxed_executor_forwards_every_call() {
        let genesis = BTreeMap::from([(key(1), 100), (key(2), 0)]);
        let direct = drive(&mut MemoryExecutor::genesis(&genesis));
        let mut boxed: Box<dyn Executor> = Box::new(MemoryExecutor::genesis(&genesis));
        let through_box = drive(&mut boxed);
        assert_eq!(through_box, direct);
        // the history is one in which each call's answer tells it apart
        assert_eq!(direct.head_before_rollback.height, 3);
        assert_eq!((direct.stable_seq, direct.rolled_back_to), (2, 2));
        assert_eq!(direct.head.height, 2);
        assert_eq!(direct.balances, vec![Some(90), Some(10), None]);
        assert!(direct.receipt.is_some() && direct.block.is_some());

        // and the snapshot installs through the box
        let digest = direct.checkpoints[0];
        let mut fresh: Box<dyn Executor> = Box::new(MemoryExecutor::genesis(&genesis));
        let head = fresh.import(2, digest, &direct.snapshot).expect("import");
        assert_eq!(head, direct.head);
        assert_eq!(fresh.balance(&key(2)).expect("balance"), Some(10));
    }
}
