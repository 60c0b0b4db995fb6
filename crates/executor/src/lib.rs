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
#[cfg(feature = "rocksdb")]
pub use rocks::{CfMemory, FaultPlan, RocksExecutor, RocksOptions};
pub use types::{
    Applied, Block, ClientWindow, Entry, ExecRequest, FailReason, Head, Operation, Receipt,
    StoredReceipt, Transfer,
};
#[cfg(feature = "rocksdb")]
pub use verify::{show_ledger, verify_ledger, LedgerReport, LedgerShow};
#[cfg(feature = "rocksdb")]
pub use wal::ConsensusLog;

use pbft_crypto::{Digest, PublicKey};

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

    /// The snapshot of kept checkpoint `seq`, in chunks of about `max_chunk` bytes.
    fn export(&self, seq: u64, max_chunk: usize) -> Result<Vec<Vec<u8>>, ExecError>;

    /// Verifies a snapshot of checkpoint `seq` against its proven digest and, only if it
    /// matches, replaces the local state with it. A bad snapshot changes nothing.
    fn import(&mut self, seq: u64, expected: Digest, chunks: &[Vec<u8>])
        -> Result<Head, ExecError>;

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
