//! How the ledger is opened and tuned: [`RocksOptions`], the caller's choices, and the
//! RocksDB options of the ledger DB and of each column family (the shared block cache,
//! the memtable budget, the receipts family's hashed memtable), with the read options
//! of whole-family scans and the write options of batches.

use super::cache::STATE_CACHE_BYTES;
use super::faults::FaultPlan;
use super::{CF_RECEIPTS, COLUMN_FAMILIES};
use rocksdb::{Options, WriteOptions};

/// Options of [`RocksExecutor::open`](super::RocksExecutor::open).
#[derive(Clone, Copy, Debug)]
pub struct RocksOptions {
    /// Fsync each batch's write. Off by default: the RocksDB write-ahead log is on, so a
    /// process crash loses nothing; a power loss may lose the last writes.
    pub sync: bool,
    /// Simulated crash point, for crash tests.
    pub fault: Option<FaultPlan>,
    /// A durable step (counted from 1) that fails once, as a transient storage error
    /// would: it is not performed and returns
    /// [`ExecError::Injected`](crate::ExecError::Injected), and the executor
    /// goes on (tests only).
    pub transient_fault: Option<u64>,
    /// Memory the state cache may use, bytes (an estimate: see
    /// [`STATE_CACHE_BYTES`], the default; 0 turns the cache off).
    pub state_cache_bytes: usize,
}

impl Default for RocksOptions {
    fn default() -> RocksOptions {
        RocksOptions {
            sync: false,
            fault: None,
            transient_fault: None,
            state_cache_bytes: STATE_CACHE_BYTES,
        }
    }
}

pub(super) fn db_options(create: bool) -> Options {
    let mut o = Options::default();
    o.create_if_missing(create);
    o.create_missing_column_families(create);
    o.set_keep_log_file_num(2);
    o.set_log_level(rocksdb::LogLevel::Warn);
    // the ledger has one writer, so there are never concurrent memtable writes to allow
    o.set_allow_concurrent_memtable_write(false);
    // all memtables of the DB together: from about 7/8 of this on, RocksDB flushes
    // (checkpoints flush them all every K sequence numbers anyway; this keeps memory
    // in check when K batches are large)
    o.set_db_write_buffer_size(LEDGER_WRITE_BUFFERS);
    // a checkpoint flushes every column family; flushed together they share one
    // MANIFEST commit and its fsyncs, instead of one round per column family
    // (decision 0043)
    o.set_atomic_flush(true);
    o
}

/// The block cache of one ledger DB, shared by its column families, bytes. Without
/// one, RocksDB gives every column family its own 32 MiB cache: up to 160 MiB for the
/// five, filling for as long as the ledger grows (decision 0039).
pub const LEDGER_BLOCK_CACHE: usize = 16 << 20;

/// The memtables of one ledger DB together, bytes: a flush trigger (RocksDB's
/// `db_write_buffer_size`), not a hard cap; memtables already waiting to flush can
/// take the total past it for a while.
pub const LEDGER_WRITE_BUFFERS: usize = 64 << 20;

/// The options of one column family; `cache` is the DB's block cache.
fn cf_options(name: &str, cache: &rocksdb::Cache) -> Options {
    let mut o = Options::default();
    // point lookups dominate (account records, receipts): a Bloom filter per table
    // file lets a lookup skip the files that cannot hold the key
    let mut table = rocksdb::BlockBasedOptions::default();
    table.set_bloom_filter(10.0, false);
    table.set_cache_index_and_filter_blocks(true);
    table.set_block_cache(cache);
    o.set_block_based_table_factory(&table);
    // The `state` family keeps RocksDB's defaults: it is written only at checkpoints,
    // each changed key once, in key order (batches log their changes in `changes`).
    if name == CF_RECEIPTS {
        // Receipts are inserted once each, at keys (client ‖ request id) spread over
        // the whole key space: in one big skiplist every insert walks it from the top,
        // missing the cache at each level. A hash of skiplists by client (the 32-byte
        // key prefix) makes an insert a bucket lookup plus a short search among that
        // client's receipts. Point lookups by (client, request id) stay exact; a scan
        // across clients must ask for total order (see `total_order`).
        o.set_prefix_extractor(rocksdb::SliceTransform::create_fixed_prefix(32));
        o.set_memtable_factory(rocksdb::MemtableFactory::HashSkipList {
            bucket_count: RECEIPT_BUCKETS,
            height: 12,
            branching_factor: 4,
        });
    }
    o
}

/// The options of the table files an import stages for the `state` family (Bloom
/// filters as the family's own files have; no block cache: the writer reads nothing).
pub(super) fn sst_options() -> Options {
    let mut o = Options::default();
    let mut table = rocksdb::BlockBasedOptions::default();
    table.set_bloom_filter(10.0, false);
    o.set_block_based_table_factory(&table);
    o
}

/// Buckets of the receipts memtable (one pointer each): about the number of clients
/// active within one memtable's worth of receipts, beyond which buckets are shared.
const RECEIPT_BUCKETS: usize = 1 << 17;

/// Read options for a scan of a whole column family: the receipts family has a prefix
/// extractor, and without total order a scan would stay within one prefix (the state
/// scans ask for it too, so that they stay whole whatever the family's options).
pub(crate) fn total_order() -> rocksdb::ReadOptions {
    let mut ro = scan_once();
    ro.set_total_order_seek(true);
    ro
}

/// Read options for a scan that reads each block once (exports, checks, the consensus
/// log's scans): its blocks are not kept in the block cache.
pub(crate) fn scan_once() -> rocksdb::ReadOptions {
    let mut ro = rocksdb::ReadOptions::default();
    ro.fill_cache(false);
    ro
}

/// Every column family with its options, for opening a ledger DB.
pub(super) fn cf_descriptors() -> Vec<rocksdb::ColumnFamilyDescriptor> {
    let cache = rocksdb::Cache::new_lru_cache(LEDGER_BLOCK_CACHE);
    COLUMN_FAMILIES
        .iter()
        .map(|name| rocksdb::ColumnFamilyDescriptor::new(*name, cf_options(name, &cache)))
        .collect()
}

pub(super) fn write_opts(sync: bool) -> WriteOptions {
    let mut wo = WriteOptions::default();
    wo.set_sync(sync);
    wo
}
