//! The RocksDB executor: the same transition as [`crate::memory::MemoryExecutor`], made
//! durable, atomic per batch, and crash safe.
//!
//! # Layout
//!
//! Under the ledger directory `dir`:
//!
//! * `dir/state/`: the live RocksDB, with column families
//!   * [`CF_STATE`] (`state`): the state as it was at the last checkpoint (height
//!     [`META_LTHASH_AT`]), keys from [`crate::types::keys`] (account records `a‖pk`
//!     holding the balance and the client's exactly-once window, windows `c‖pk` of
//!     clients without an account, the chain position `m/chain`), values exactly as the
//!     transition encodes them;
//!   * [`CF_CHANGES`] (`changes`): key = height (u64 big-endian), value = that batch's
//!     state changes, for every batch since the last checkpoint. The live state is the
//!     `state` family with them applied; the executor holds their net effect in memory
//!     (loaded from this log on open), and the next checkpoint writes it to `state`;
//!   * [`CF_RECEIPTS`] (`receipts`): key = client public key (32 bytes) ‖ request id (u64
//!     big-endian), value = postcard([`StoredReceipt`]); its memtable is hashed by the
//!     32-byte client prefix, so a scan across clients reads in total order;
//!   * [`CF_BLOCKS`] (`blocks`): key = height (u64 big-endian), value = postcard([`Block`]);
//!   * [`CF_META`] (`meta`): [`META_APPLIED`] (u64 BE, the applied-sequence marker),
//!     [`META_LTHASH`] (the 2048-byte LtHash of `state`), [`META_LTHASH_AT`] (u64 BE,
//!     its height), [`META_HEAD`] (postcard([`Head`])) and [`META_STABLE`] (u64 BE, the
//!     last stable checkpoint).
//! * `dir/checkpoints/<seq>/`: RocksDB checkpoints (hard-linked copies) of the live DB,
//!   one per kept checkpoint. Checkpoint 0 is made at genesis; [`Executor::stable`]
//!   deletes those below the stable one.
//!
//! # Atomicity
//!
//! [`Executor::apply`] writes the whole effect of a batch (its state changes, logged in
//! `changes`; receipts, the block, `applied`, `head`) in ONE `WriteBatch`: after a crash
//! either all of it is there or none of it. [`Executor::checkpoint`] writes, in one
//! `WriteBatch`, the net state changes since the last checkpoint into `state`, the
//! LtHash moved by them, `lthash_at`, and the deletion of the logged batches; then it
//! makes the RocksDB checkpoint. Genesis is built in `dir/state.tmp` and renamed to
//! `dir/state` only once complete (with checkpoint 0 already made).
//!
//! # Replacing the live state (rollback, import)
//!
//! A new live state is built in `dir/state.tmp`, which is renamed to `dir/state.new`
//! only once it is complete. A rollback copies the stable checkpoint's files (SST files
//! hard-linked) and records the stable sequence in the copy's meta (the checkpoint holds
//! the one of its time). An import first stages the snapshot chunk by chunk, each
//! checked chunk's entries as one table file in `dir/import.staging/` (removed on open:
//! a staged import does not survive a restart). Its commit makes `state.tmp` a RocksDB
//! checkpoint of the live DB (hard links: receipts and blocks are not copied),
//! range-deletes its `state` and `changes`, its blocks above the snapshot (and below it
//! unless the block under the snapshot's head is its parent), writes the snapshot's
//! head block and meta with `applied` = `stable` = the snapshot's sequence, deletes the
//! receipts of heights above the snapshot in bounded writes (only if the ledger was
//! ahead of it), and ingests the staged files into `state`. Then `dir/state` is renamed
//! to `dir/state.old` (the commit point), `dir/state.new` to `dir/state`, and
//! `dir/state.old` is removed. An import also makes the checkpoint of its new state,
//! before the swap, as `dir/checkpoints/<seq>.import`, renamed to
//! `dir/checkpoints/<seq>` after it.
//!
//! Just before the commit point, the executor forgets the kept checkpoints that the new
//! state disowns (for a rollback those above the stable one, for an import all of
//! them), and removes their directories only after the swap: whichever step fails, it
//! never trusts a directory of the discarded history as a checkpoint of the new one (a
//! later checkpoint at that height replaces the directory; opening removes it).
//!
//! [`RocksExecutor::open`] finishes or undoes an interrupted swap and settles the
//! checkpoint directories against the live state (the rules are in `rocks/layout.rs`).
//!
//! # Fault injection
//!
//! [`FaultPlan`] makes the executor "crash" at its n-th durable step (a `WriteBatch`
//! write, a checkpoint creation, a DB creation or open, a directory rename or removal, a
//! file copy): the step is not performed, `ExecError::Injected` is returned, and so is
//! every later call. Dropping the executor and reopening the directory then shows what a
//! crash at that point would leave. [`RocksOptions::transient_fault`] makes one step fail
//! once instead, as a transient storage error would, and the executor goes on.
//!
//! # Where things are
//!
//! * `options.rs`: [`RocksOptions`], and the RocksDB options of the ledger DB and its
//!   column families (block cache, memtables, read options for scans);
//! * `faults.rs`: [`FaultPlan`] and the counter of durable steps that injects faults;
//! * `db.rs`: one ledger DB: opening it, its durable writes and checkpoints, and
//!   reading and checking its meta, blocks and changes log;
//! * `layout.rs`: the ledger directory: opening a ledger, genesis, recovery of an
//!   interrupted swap, the checkpoint directories and the swap of the live state;
//! * `cache.rs`: the state values held above RocksDB (unflushed and cached);
//! * `executor.rs`: [`RocksExecutor`] and its [`Executor`] implementation.
//!
//! [`StoredReceipt`]: crate::StoredReceipt
//! [`Block`]: crate::Block
//! [`Head`]: crate::Head
//! [`Executor::stable`]: crate::Executor::stable
//! [`Executor::apply`]: crate::Executor::apply
//! [`Executor::checkpoint`]: crate::Executor::checkpoint
//! [`Executor`]: crate::Executor

mod cache;
mod db;
mod executor;
mod faults;
mod layout;
mod options;

pub use cache::STATE_CACHE_BYTES;
pub(crate) use db::{cf, load_log, open_read_only, read_block, read_meta};
pub use executor::{CfMemory, RocksExecutor};
pub use faults::FaultPlan;
pub(crate) use faults::Faults;
pub(crate) use options::{scan_once, total_order};
pub use options::{RocksOptions, LEDGER_BLOCK_CACHE, LEDGER_WRITE_BUFFERS};

use crate::error::ExecError;
use pbft_crypto::PublicKey;
use std::path::Path;

/// Column family of the digest-covered state (account records, windows of clients
/// without an account, chain position).
pub const CF_STATE: &str = "state";
/// Column family of stored receipts.
pub const CF_RECEIPTS: &str = "receipts";
/// Column family of blocks by height.
pub const CF_BLOCKS: &str = "blocks";
/// Column family of the ledger's bookkeeping (applied marker, LtHash, head, stable).
pub const CF_META: &str = "meta";
/// Column family of the state changes of each batch since the LtHash's height: key =
/// height (u64 big-endian), value = the batch's changes as its block's state digest
/// chains them in ([`crate::transition::Transition::changes_encoded`]).
pub const CF_CHANGES: &str = "changes";
/// Every column family of the ledger DB (besides RocksDB's `default`).
pub const COLUMN_FAMILIES: [&str; 5] = [CF_STATE, CF_RECEIPTS, CF_BLOCKS, CF_META, CF_CHANGES];

/// Meta key of the applied-sequence marker (u64 big-endian).
pub const META_APPLIED: &[u8] = b"applied";
/// Meta key of the 2048-byte LtHash of the state at height [`META_LTHASH_AT`].
pub const META_LTHASH: &[u8] = b"lthash";
/// Meta key of the height of the state that [`META_LTHASH`] is the LtHash of (u64
/// big-endian): the last checkpoint, genesis or imported snapshot.
pub const META_LTHASH_AT: &[u8] = b"lthash_at";
/// Meta key of the head (postcard-encoded [`Head`](crate::Head)).
pub const META_HEAD: &[u8] = b"head";
/// Meta key of the last stable checkpoint (u64 big-endian).
pub const META_STABLE: &[u8] = b"stable";

/// Subdirectory of the live DB.
pub const STATE_DIR: &str = "state";
/// Subdirectory of the kept checkpoints.
pub const CHECKPOINTS_DIR: &str = "checkpoints";

/// The receipts column family key of a request.
pub fn receipt_key(client: &PublicKey, request_id: u64) -> [u8; 40] {
    let mut k = [0u8; 40];
    k[..32].copy_from_slice(client.as_bytes());
    k[32..].copy_from_slice(&request_id.to_be_bytes());
    k
}

/// The blocks column family key of a height.
pub fn block_key(height: u64) -> [u8; 8] {
    height.to_be_bytes()
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ExecError {
    let path = path.to_path_buf();
    move |source| ExecError::Io { op, path, source }
}

fn corrupt(why: impl Into<String>) -> ExecError {
    ExecError::Corrupt(why.into())
}

fn encode<T: serde::Serialize>(v: &T, what: &str) -> Result<Vec<u8>, ExecError> {
    postcard::to_allocvec(v).map_err(|e| ExecError::Storage(format!("encoding {what}: {e}")))
}

fn decode<T: serde::de::DeserializeOwned>(v: &[u8], what: &str) -> Result<T, ExecError> {
    postcard::from_bytes(v).map_err(|e| corrupt(format!("{what} does not decode: {e}")))
}

fn decode_u64(v: &[u8], what: &str) -> Result<u64, ExecError> {
    let arr: [u8; 8] = v
        .try_into()
        .map_err(|_| corrupt(format!("{what} is {} bytes, not 8", v.len())))?;
    Ok(u64::from_be_bytes(arr))
}
