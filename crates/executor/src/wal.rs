//! The consensus log: the protocol's `Persist` records, kept across restarts.
//!
//! It is its own RocksDB (normally `DATA/wal/`), separate from the ledger's, so a
//! rollback or a state import of the ledger never touches it. The executor crate does
//! not know the protocol's types: a record is opaque bytes with an optional sequence tag
//! used by [`ConsensusLog::compact`].
//!
//! One column family, [`CF_RECORDS`]: key = a u64 big-endian counter (append order),
//! value = postcard of `(Option<u64> /* seq tag */, Vec<u8> /* record */)`.

use crate::error::ExecError;
use crate::record_log::{Record, RecordLog};
use crate::rocks::{scan_once, FaultPlan, Faults};
use rocksdb::{IteratorMode, Options, WriteBatch, WriteOptions, DB};
use std::path::Path;

/// The column family holding the records.
pub const CF_RECORDS: &str = "records";

/// The memtable size of [`CF_RECORDS`], bytes.
const LOG_WRITE_BUFFER: usize = 8 << 20;

/// The block cache of the log, bytes. The log is read only at start and in
/// [`ConsensusLog::compact`]'s scan, which does not fill the cache; with RocksDB's
/// default (32 MiB per column family) those scans would fill it with blocks never read
/// again, a validator's largest source of memory growth under load (decision 0039).
const LOG_BLOCK_CACHE: usize = 1 << 20;

/// An append-only log of opaque consensus records on RocksDB.
pub struct ConsensusLog {
    db: DB,
    next: u64,
    sync: bool,
    faults: Faults,
}

impl std::fmt::Debug for ConsensusLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsensusLog")
            .field("path", &self.db.path())
            .field("next", &self.next)
            .field("sync", &self.sync)
            .finish_non_exhaustive()
    }
}

fn corrupt(why: String) -> ExecError {
    ExecError::Corrupt(why)
}

/// The log's one column family.
fn records_cf(db: &DB) -> Result<&rocksdb::ColumnFamily, ExecError> {
    db.cf_handle(CF_RECORDS)
        .ok_or_else(|| corrupt(format!("column family `{CF_RECORDS}` is missing")))
}

fn decode_key(k: &[u8]) -> Result<u64, ExecError> {
    let arr: [u8; 8] = k
        .try_into()
        .map_err(|_| corrupt(format!("a consensus log key is {} bytes, not 8", k.len())))?;
    Ok(u64::from_be_bytes(arr))
}

impl ConsensusLog {
    /// Opens (or creates) the log at `dir`. With `sync`, every append is fsynced;
    /// without, RocksDB's write-ahead log still makes it survive a process crash.
    pub fn open(dir: &Path, sync: bool) -> Result<ConsensusLog, ExecError> {
        ConsensusLog::open_with_faults(dir, sync, None)
    }

    /// [`ConsensusLog::open`] with a simulated crash point (tests): each append or
    /// compaction write is one durable step.
    pub fn open_with_faults(
        dir: &Path,
        sync: bool,
        fault: Option<FaultPlan>,
    ) -> Result<ConsensusLog, ExecError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_keep_log_file_num(2);
        opts.set_log_level(rocksdb::LogLevel::Warn);
        // Records are small and deleted soon after they are written (`compact` at each
        // stable checkpoint), so a big memtable holds mostly dead entries: RocksDB's
        // default of 64 MiB would be a validator's largest heap consumer, growing for
        // minutes before its first flush (decision 0029). 8 MiB flushes every few
        // seconds under load, cheaply.
        let mut records = Options::default();
        records.set_write_buffer_size(LOG_WRITE_BUFFER);
        let mut table = rocksdb::BlockBasedOptions::default();
        table.set_block_cache(&rocksdb::Cache::new_lru_cache(LOG_BLOCK_CACHE));
        records.set_block_based_table_factory(&table);
        let db = DB::open_cf_descriptors(
            &opts,
            dir,
            [rocksdb::ColumnFamilyDescriptor::new(CF_RECORDS, records)],
        )?;
        let next = {
            let cf = records_cf(&db)?;
            match db.iterator_cf(cf, IteratorMode::End).next() {
                Some(item) => {
                    let (k, _) = item?;
                    decode_key(&k)?
                        .checked_add(1)
                        .ok_or_else(|| corrupt("the consensus log counter is exhausted".into()))?
                }
                None => 0,
            }
        };
        Ok(ConsensusLog {
            db,
            next,
            sync,
            faults: Faults::new(fault),
        })
    }

    fn write(&mut self, batch: WriteBatch) -> Result<(), ExecError> {
        self.faults.step()?;
        let mut wo = WriteOptions::default();
        wo.set_sync(self.sync);
        Ok(self.db.write_opt(batch, &wo)?)
    }
}

impl RecordLog for ConsensusLog {
    /// Appends many records in ONE write (grouping: the node hands over everything
    /// persisted in one step). After a crash, all of them are there or none.
    fn append(&mut self, records: &[Record]) -> Result<(), ExecError> {
        self.faults.alive()?;
        if records.is_empty() {
            return Ok(());
        }
        let cf = records_cf(&self.db)?;
        let mut wb = WriteBatch::default();
        let mut key = self.next;
        for r in records {
            let value = postcard::to_allocvec(r)
                .map_err(|e| ExecError::Storage(format!("encoding a record: {e}")))?;
            wb.put_cf(cf, key.to_be_bytes(), value);
            key += 1;
        }
        self.write(wb)?;
        self.next = key;
        Ok(())
    }

    /// All records in append order, each with its key.
    fn load_keyed(&self) -> Result<Vec<(u64, Record)>, ExecError> {
        self.faults.alive()?;
        let cf = records_cf(&self.db)?;
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf_opt(cf, scan_once(), IteratorMode::Start)
        {
            let (k, v) = item?;
            let n = decode_key(&k)?;
            let r: Record = postcard::from_bytes(&v)
                .map_err(|e| corrupt(format!("consensus log record {n} does not decode: {e}")))?;
            out.push((n, r));
        }
        Ok(out)
    }

    /// Deletes the records with these keys, in one write.
    fn remove(&mut self, keys: &[u64]) -> Result<(), ExecError> {
        self.faults.alive()?;
        if keys.is_empty() {
            return Ok(());
        }
        let cf = records_cf(&self.db)?;
        let mut wb = WriteBatch::default();
        for k in keys {
            wb.delete_cf(cf, k.to_be_bytes());
        }
        self.write(wb)
    }

    /// Drops records whose seq tag is <= `stable` (records with no tag are kept), in
    /// one write.
    fn compact(&mut self, stable: u64) -> Result<(), ExecError> {
        self.faults.alive()?;
        let cf = records_cf(&self.db)?;
        let mut wb = WriteBatch::default();
        for item in self
            .db
            .iterator_cf_opt(cf, scan_once(), IteratorMode::Start)
        {
            let (k, v) = item?;
            let n = decode_key(&k)?;
            let (tag, _): Record = postcard::from_bytes(&v)
                .map_err(|e| corrupt(format!("consensus log record {n} does not decode: {e}")))?;
            if tag.is_some_and(|t| t <= stable) {
                wb.delete_cf(cf, k);
            }
        }
        if wb.is_empty() {
            return Ok(());
        }
        self.write(wb)
    }
}
