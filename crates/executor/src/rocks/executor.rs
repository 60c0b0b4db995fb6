//! [`RocksExecutor`]: the ledger on RocksDB, and its [`Executor`] implementation (apply,
//! checkpoint, stable, rollback, export, import, reads). Opening a ledger and swapping
//! its live state are in `layout.rs`; the values held above RocksDB in `cache.rs`.

use super::cache::StateCache;
use super::db::{load_log, make_checkpoint, open_db, open_read_only, read_block, write};
use super::faults::Faults;
use super::layout::{copy_db_files, remove_dir, rename, IMPORT_STAGING, STATE_NEW, STATE_TMP};
use super::options::{sst_options, total_order};
use super::{
    block_key, cf, corrupt, decode, encode, io, receipt_key, CF_BLOCKS, CF_CHANGES, CF_META,
    CF_RECEIPTS, CF_STATE, COLUMN_FAMILIES, META_APPLIED, META_HEAD, META_LTHASH, META_LTHASH_AT,
    META_STABLE,
};
use crate::error::ExecError;
use crate::lthash::LtHash;
use crate::snapshot::{keys_bytes, Checked, ChunkPlanner, ChunkVerifier, SnapshotChunk};
use crate::transition::{changes_delta, decode_account, decode_balance, execute_batch, StateView};
use crate::types::{
    checkpoint_digest, keys, Applied, Block, ClientWindow, ExecRequest, Head, StoredReceipt,
};
use crate::{Executor, SnapshotSource};
use pbft_crypto::{Digest, PublicKey};
use rocksdb::{
    ColumnFamily, IngestExternalFileOptions, IteratorMode, SstFileWriter, WriteBatch, DB,
};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

struct DbView<'a> {
    db: &'a DB,
    state: &'a ColumnFamily,
    receipts: &'a ColumnFamily,
    cache: &'a StateCache,
}

impl StateView for DbView<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ExecError> {
        if let Some(v) = self.cache.get(key) {
            return Ok(v.clone());
        }
        Ok(self.db.get_cf(self.state, key)?)
    }

    fn receipt(&self, client: &PublicKey, rid: u64) -> Result<Option<StoredReceipt>, ExecError> {
        self.db
            .get_cf(self.receipts, receipt_key(client, rid))?
            .map(|v| decode(&v, "a stored receipt"))
            .transpose()
    }
}

/// A ledger on RocksDB. See the [module documentation](crate::rocks) for the layout and
/// crash safety. Its fields are shared with `layout.rs`, which opens the ledger and swaps
/// its live state.
pub struct RocksExecutor {
    pub(super) dir: PathBuf,
    /// `None` only after a failure in the middle of swapping the live state, or when
    /// the state cache could not be reloaded after a failed write.
    pub(super) db: Option<DB>,
    pub(super) head: Head,
    /// The LtHash of the state at height `lthash_at`; the batches above it are in the
    /// changes log.
    pub(super) lthash: LtHash,
    pub(super) lthash_at: u64,
    pub(super) stable: u64,
    pub(super) checkpoints: BTreeSet<u64>,
    pub(super) sync: bool,
    pub(super) faults: Faults,
    /// The values written since the LtHash's height (the `state` column family is the
    /// state at that height; the next checkpoint writes them), and a budgeted cache of
    /// the column family's values. Reads go through it.
    pub(super) cache: StateCache,
    /// A snapshot being imported, chunk by chunk.
    pub(super) staging: Option<Staging>,
}

/// A snapshot being imported: its verifier, and the chunks staged as table files.
#[derive(Debug)]
pub(super) struct Staging {
    verifier: ChunkVerifier,
    /// The chunks with entries, each staged as one table file.
    files: Vec<u32>,
    /// Set once every chunk is in and the whole checks out.
    checked: Option<Checked>,
}

/// The staging of checkpoint `seq`, or an error if none is in progress.
fn staging(staging: &mut Option<Staging>, seq: u64) -> Result<&mut Staging, ExecError> {
    staging
        .as_mut()
        .filter(|st| st.verifier.seq() == seq)
        .ok_or_else(|| ExecError::BadSnapshot(format!("no import of checkpoint {seq} begun")))
}

/// The name of the table file staging chunk `index`.
fn staged_file(index: u32) -> String {
    format!("{index:08}.sst")
}

/// A key above every key of the ledger's column families (state keys are at most 33
/// bytes, heights 8), as the end of a range deletion.
const KEYS_END: [u8; 64] = [0xff; 64];

/// Receipts deleted per write while dropping those above an imported snapshot.
const RECEIPT_DELETES_PER_WRITE: usize = 4096;

/// Deletes from `db` (a new live state being built) the receipts of heights above `seq`
/// and those that do not decode, in writes of a bounded number of deletions.
fn drop_receipts_above(
    faults: &mut Faults,
    db: &DB,
    seq: u64,
    sync: bool,
) -> Result<(), ExecError> {
    let receipts = cf(db, CF_RECEIPTS)?;
    let mut wb = WriteBatch::default();
    for item in db.iterator_cf_opt(receipts, total_order(), IteratorMode::Start) {
        let (k, val) = item?;
        // receipts are not covered by the digest: an unreadable one is not kept
        let keep = decode::<StoredReceipt>(&val, "a stored receipt").is_ok_and(|r| r.height <= seq);
        if !keep {
            wb.delete_cf(receipts, k);
            if wb.len() >= RECEIPT_DELETES_PER_WRITE {
                write(faults, db, std::mem::take(&mut wb), sync)?;
            }
        }
    }
    if !wb.is_empty() {
        write(faults, db, wb, sync)?;
    }
    Ok(())
}

/// The snapshot of a RocksDB checkpoint, read chunk by chunk from the checkpoint opened
/// read-only; it holds the first key of each chunk.
struct RocksSource {
    seq: u64,
    db: DB,
    head_block: Option<Block>,
    /// The first key of each chunk after chunk 0.
    starts: Vec<Vec<u8>>,
}

impl SnapshotSource for RocksSource {
    fn seq(&self) -> u64 {
        self.seq
    }

    fn total(&self) -> u32 {
        self.starts.len() as u32 + 1
    }

    fn chunk(&mut self, index: u32) -> Result<Vec<u8>, ExecError> {
        let i = index as usize;
        if i > self.starts.len() {
            return Err(ExecError::NoSnapshot(self.seq));
        }
        let from = match i {
            0 => IteratorMode::Start,
            _ => IteratorMode::From(&self.starts[i - 1], rocksdb::Direction::Forward),
        };
        let to = self.starts.get(i);
        let mut entries = Vec::new();
        for item in self
            .db
            .iterator_cf_opt(cf(&self.db, CF_STATE)?, total_order(), from)
        {
            let (k, v) = item?;
            if to.is_some_and(|t| *k >= **t) {
                break;
            }
            entries.push((k.into_vec(), v.into_vec()));
        }
        Ok(SnapshotChunk {
            seq: self.seq,
            index,
            total: self.total(),
            head: if i == 0 {
                self.head_block.clone()
            } else {
                None
            },
            entries,
        }
        .encode())
    }

    fn held_bytes(&self) -> usize {
        keys_bytes(&self.starts)
    }
}

/// What RocksDB holds in memory for one column family of the live ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CfMemory {
    /// The column family.
    pub name: &'static str,
    /// The capacity of its block cache, bytes (the DB's one cache: the same for all).
    pub block_cache_capacity: u64,
    /// What that block cache holds now, bytes.
    pub block_cache_usage: u64,
    /// Its memtables, live and waiting to flush, bytes.
    pub memtables: u64,
}

/// Changed keys from which a batch's values go into the state cache on a second
/// thread, beside RocksDB's write: spawning it costs tens of microseconds, a cached
/// value a fraction of one.
const PARALLEL_CACHE_MIN_CHANGES: usize = 256;

impl std::fmt::Debug for RocksExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksExecutor")
            .field("dir", &self.dir)
            .field("head", &self.head)
            .field("stable", &self.stable)
            .field("checkpoints", &self.checkpoints)
            .finish_non_exhaustive()
    }
}

fn closed() -> ExecError {
    ExecError::Storage(
        "the ledger was closed by a failed state swap or cache reload; reopen the directory".into(),
    )
}

impl RocksExecutor {
    /// The ledger directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Durable steps performed so far (for choosing crash points in tests).
    pub fn durable_steps(&self) -> u64 {
        self.faults.steps()
    }

    /// The largest single write (`WriteBatch`) to the ledger since it was opened, bytes:
    /// what one durable step held in memory at once (for tests that bound it).
    pub fn largest_write_bytes(&self) -> usize {
        self.faults.largest_write()
    }

    /// The sequence numbers of the kept checkpoints.
    pub fn checkpoints(&self) -> impl Iterator<Item = u64> + '_ {
        self.checkpoints.iter().copied()
    }

    /// The LtHash of the state at the last checkpoint (or genesis, or imported
    /// snapshot), and that state's height.
    pub fn lthash(&self) -> (&LtHash, u64) {
        (&self.lthash, self.lthash_at)
    }

    /// The estimated memory of the state cache's entries, bytes (at most
    /// [`RocksOptions::state_cache_bytes`]). After the cache starts over, the hash
    /// table it had grown stays allocated for reuse and is not counted here (at the
    /// default budget, by an estimate of its slots, about 25 MiB at most).
    ///
    /// [`RocksOptions::state_cache_bytes`]: super::RocksOptions::state_cache_bytes
    pub fn state_cache_bytes(&self) -> usize {
        self.cache.clean_bytes()
    }

    /// The estimated memory of the state values written since the last checkpoint,
    /// bytes, held until the next checkpoint writes them to the `state` column family
    /// (outside the cache's budget: it grows with the distinct keys changed between two
    /// checkpoints).
    pub fn unflushed_state_bytes(&self) -> usize {
        self.cache.dirty_bytes()
    }

    /// A live state value: from the values held above RocksDB, else from the `state`
    /// column family.
    fn state_value(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ExecError> {
        let db = self.db()?;
        if let Some(v) = self.cache.get(key) {
            return Ok(v.clone());
        }
        Ok(db.get_cf(cf(db, CF_STATE)?, key)?)
    }

    /// Waits until RocksDB's background flushes and compactions have finished, or
    /// `timeout` has passed (an error): for tests and measurements that read RocksDB's
    /// own figures (as [`Self::memory`] does) and need them to hold still.
    pub fn wait_for_background_work(&self, timeout: std::time::Duration) -> Result<(), ExecError> {
        let db = self.db()?;
        let mut opts = rocksdb::WaitForCompactOptions::default();
        opts.set_timeout(
            u64::try_from(timeout.as_micros())
                .unwrap_or(u64::MAX)
                .max(1),
        );
        db.wait_for_compact(&opts)?;
        Ok(())
    }

    /// What RocksDB holds in memory for the live ledger, per column family, as RocksDB
    /// reports it.
    pub fn memory(&self) -> Result<Vec<CfMemory>, ExecError> {
        let db = self.db()?;
        let prop = |cf: &ColumnFamily, name: &str| -> Result<u64, ExecError> {
            Ok(db.property_int_value_cf(cf, name)?.unwrap_or(0))
        };
        COLUMN_FAMILIES
            .iter()
            .map(|name| {
                let h = cf(db, name)?;
                Ok(CfMemory {
                    name,
                    block_cache_capacity: prop(h, "rocksdb.block-cache-capacity")?,
                    block_cache_usage: prop(h, "rocksdb.block-cache-usage")?,
                    memtables: prop(h, "rocksdb.cur-size-all-mem-tables")?,
                })
            })
            .collect()
    }

    /// The live DB, if the executor is alive and open.
    pub(super) fn db(&self) -> Result<&DB, ExecError> {
        self.faults.alive()?;
        self.db.as_ref().ok_or_else(closed)
    }

    /// After a failed write: the state cache again holds exactly what the changes log
    /// does (the values of a batch that was not written are dropped). If even that
    /// read fails, the executor is closed, so that no later call reads a state that is
    /// not the durable one.
    fn restore_cache(&mut self) {
        self.cache.clear();
        let logged = self
            .db
            .as_ref()
            .ok_or_else(closed)
            .and_then(|db| load_log(db, self.lthash_at, self.head.height));
        match logged {
            Ok(net) => self.cache.load(net),
            Err(_) => self.db = None,
        }
    }

    /// Moves the LtHash up to the head and brings the `state` column family with it:
    /// from the net change of each key since the LtHash's height (its value then and
    /// now, which the state cache holds as the changes log does), updates the LtHash by
    /// those keys alone, and in one write stores the keys' new values, the LtHash and
    /// its height, and empties the log. The cost grows with the distinct keys changed,
    /// not with the size of the state.
    fn advance_lthash(&mut self) -> Result<(), ExecError> {
        let db = self.db.as_ref().ok_or_else(closed)?;
        let seq = self.head.height;
        // the net changes since the LtHash's height, as the cache holds them (the same
        // as the log's: the cache is loaded from the log on open)
        let changed: Vec<_> = self
            .cache
            .dirty()
            .iter()
            .filter(|(_, (old, new))| old != new)
            .collect();
        let mut lthash = self.lthash.clone();
        lthash.add(&changes_delta(
            changed.iter().map(|(k, c)| (k.as_slice(), *c)),
        ));
        let state = cf(db, CF_STATE)?;
        let meta = cf(db, CF_META)?;
        let mut wb = WriteBatch::default();
        for (k, (_, new)) in &changed {
            match new {
                Some(v) => wb.put_cf(state, k, v),
                None => wb.delete_cf(state, k),
            }
        }
        wb.put_cf(meta, META_LTHASH, lthash.to_bytes());
        wb.put_cf(meta, META_LTHASH_AT, seq.to_be_bytes());
        wb.delete_range_cf(
            cf(db, CF_CHANGES)?,
            block_key(0),
            block_key(seq.saturating_add(1)),
        );
        write(&mut self.faults, db, wb, self.sync)?;
        self.cache.flushed();
        self.lthash = lthash;
        self.lthash_at = seq;
        Ok(())
    }
}

impl Executor for RocksExecutor {
    fn apply(
        &mut self,
        seq: u64,
        batch_digest: Digest,
        requests: &[ExecRequest<'_>],
    ) -> Result<Applied, ExecError> {
        self.faults.alive()?;
        if seq != self.head.height + 1 {
            return Err(ExecError::OutOfOrder {
                applied: self.head.height,
                got: seq,
            });
        }
        let db = self.db.as_ref().ok_or_else(closed)?;
        let (state_cf, receipts_cf) = (cf(db, CF_STATE)?, cf(db, CF_RECEIPTS)?);
        let (blocks_cf, meta_cf) = (cf(db, CF_BLOCKS)?, cf(db, CF_META)?);
        let view = DbView {
            db,
            state: state_cf,
            receipts: receipts_cf,
            cache: &self.cache,
        };
        let t = execute_batch(
            &view,
            self.head.state_digest,
            self.head.hash,
            seq,
            batch_digest,
            requests,
        )?;
        let head = Head {
            height: seq,
            hash: t.applied.block_hash,
            state_digest: t.applied.block.state_digest,
        };
        // the state changes go to the `state` column family at the next checkpoint;
        // until then the changes log below is their durable record
        let mut wb = WriteBatch::default();
        for ((client, rid), r) in &t.receipts {
            wb.put_cf(
                receipts_cf,
                receipt_key(client, *rid),
                encode(r, "receipt")?,
            );
        }
        wb.put_cf(
            blocks_cf,
            block_key(seq),
            encode(&t.applied.block, "block")?,
        );
        wb.put_cf(cf(db, CF_CHANGES)?, block_key(seq), &t.changes_encoded);
        wb.put_cf(meta_cf, META_APPLIED, seq.to_be_bytes());
        wb.put_cf(meta_cf, META_HEAD, encode(&head, "head")?);
        let written = if t.changes.len() < PARALLEL_CACHE_MIN_CHANGES {
            let written = write(&mut self.faults, db, wb, self.sync);
            if written.is_ok() {
                self.cache.write(t.changes);
            }
            written
        } else {
            // the cache takes the batch's values on a second core while RocksDB writes
            // it; if the write fails, the values it took are taken back below
            let (faults, cache, sync) = (&mut self.faults, &mut self.cache, self.sync);
            std::thread::scope(|scope| {
                let taking = scope.spawn(move || cache.write(t.changes));
                let written = write(faults, db, wb, sync);
                if let Err(e) = taking.join() {
                    std::panic::resume_unwind(e);
                }
                written
            })
        };
        if let Err(e) = written {
            self.restore_cache();
            return Err(e);
        }
        self.head = head;
        Ok(t.applied)
    }

    fn head(&self) -> Head {
        self.head
    }

    fn checkpoint(&mut self) -> Result<Digest, ExecError> {
        self.db()?;
        let seq = self.head.height;
        if self.lthash_at < seq {
            self.advance_lthash()?;
        }
        if !self.checkpoints.contains(&seq) {
            let path = self.checkpoint_path(seq);
            // a directory not in the kept set is from a discarded history
            remove_dir(&mut self.faults, &path)?;
            let db = self.db.as_ref().ok_or_else(closed)?;
            make_checkpoint(&mut self.faults, db, &path)?;
            self.checkpoints.insert(seq);
        }
        Ok(checkpoint_digest(
            seq,
            &self.head.hash,
            &self.lthash.digest(),
        ))
    }

    fn stable(&mut self, seq: u64) -> Result<(), ExecError> {
        self.faults.alive()?;
        let db = self.db.as_ref().ok_or_else(closed)?;
        if !self.checkpoints.contains(&seq) {
            return Err(ExecError::NoSnapshot(seq));
        }
        let stable = self.stable.max(seq);
        let mut wb = WriteBatch::default();
        wb.put_cf(cf(db, CF_META)?, META_STABLE, stable.to_be_bytes());
        write(&mut self.faults, db, wb, self.sync)?;
        self.stable = stable;
        let older: Vec<u64> = self.checkpoints.range(..seq).copied().collect();
        for s in older {
            let path = self.checkpoint_path(s);
            remove_dir(&mut self.faults, &path)?;
            self.checkpoints.remove(&s);
        }
        Ok(())
    }

    fn stable_seq(&self) -> u64 {
        self.stable
    }

    fn rollback(&mut self) -> Result<u64, ExecError> {
        self.db()?;
        let seq = self.stable;
        if !self.checkpoints.contains(&seq) {
            return Err(ExecError::NoSnapshot(seq));
        }
        self.clear_staging()?;
        let tmp = self.dir.join(STATE_TMP);
        let source = self.checkpoint_path(seq);
        copy_db_files(&mut self.faults, &source, &tmp, self.sync)?;
        {
            // the checkpoint recorded the stable sequence of its time
            let db = open_db(&mut self.faults, &tmp, false)?;
            let mut wb = WriteBatch::default();
            wb.put_cf(cf(&db, CF_META)?, META_STABLE, seq.to_be_bytes());
            write(&mut self.faults, &db, wb, self.sync)?;
        }
        rename(&mut self.faults, &tmp, &self.dir.join(STATE_NEW))?;
        // the checkpoints above `seq` are of the history being discarded: forgotten
        // before the commit point, so that whichever later step fails, none of them is
        // trusted (a checkpoint at such a height later replaces the directory)
        let discarded = self.checkpoints.split_off(&(seq + 1));
        self.swap_live()?;
        if self.head.height != seq || self.stable != seq {
            return Err(corrupt(format!(
                "checkpoint {seq} holds a ledger at height {}",
                self.head.height
            )));
        }
        for s in discarded {
            let path = self.checkpoint_path(s);
            remove_dir(&mut self.faults, &path)?;
        }
        Ok(seq)
    }

    fn export_source(
        &self,
        seq: u64,
        max_chunk: usize,
    ) -> Result<Box<dyn SnapshotSource>, ExecError> {
        self.faults.alive()?;
        if !self.checkpoints.contains(&seq) {
            return Err(ExecError::NoSnapshot(seq));
        }
        let db = open_read_only(&self.checkpoint_path(seq))?;
        let mut planner = ChunkPlanner::new(max_chunk);
        for item in db.iterator_cf_opt(cf(&db, CF_STATE)?, total_order(), IteratorMode::Start) {
            let (k, v) = item?;
            planner.push(&k, v.len())?;
        }
        let head_block = if seq == 0 {
            None
        } else {
            Some(read_block(&db, seq)?.ok_or(ExecError::NoSnapshot(seq))?)
        };
        Ok(Box::new(RocksSource {
            seq,
            db,
            head_block,
            starts: planner.finish(),
        }))
    }

    fn import_begin(&mut self, seq: u64) -> Result<(), ExecError> {
        self.faults.alive()?;
        self.staging = None;
        let dir = self.dir.join(IMPORT_STAGING);
        remove_dir(&mut self.faults, &dir)?;
        std::fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
        self.staging = Some(Staging {
            verifier: ChunkVerifier::new(seq),
            files: Vec::new(),
            checked: None,
        });
        Ok(())
    }

    fn import_chunk(&mut self, seq: u64, chunk: &[u8]) -> Result<(), ExecError> {
        self.faults.alive()?;
        let dir = self.dir.join(IMPORT_STAGING);
        let st = staging(&mut self.staging, seq)?;
        if st.checked.is_some() {
            return Err(ExecError::BadSnapshot("a chunk after the last".into()));
        }
        let c = st.verifier.add(chunk)?;
        if c.entries.is_empty() {
            return Ok(());
        }
        // one table file per chunk: its entries are in key order, and the files do not
        // overlap (the verifier checks the order across chunks before the swap)
        self.faults.step()?;
        let opts = sst_options();
        let mut writer = SstFileWriter::create(&opts);
        writer.open(dir.join(staged_file(c.index)))?;
        for (k, v) in &c.entries {
            writer.put(k, v)?;
        }
        writer.finish()?;
        st.files.push(c.index);
        Ok(())
    }

    fn import_finish(&mut self, seq: u64) -> Result<Digest, ExecError> {
        self.faults.alive()?;
        let st = staging(&mut self.staging, seq)?;
        let checked = st.verifier.finish()?;
        let digest = checked.checkpoint_digest;
        st.checked = Some(checked);
        Ok(digest)
    }

    fn import_commit(&mut self, seq: u64, expected: Digest) -> Result<Head, ExecError> {
        self.faults.alive()?;
        let st = staging(&mut self.staging, seq)?;
        let v = match &st.checked {
            Some(c) if c.checkpoint_digest == expected => c.clone(),
            Some(_) => {
                return Err(ExecError::BadSnapshot(
                    "its digest does not match the stable checkpoint".into(),
                ))
            }
            None => return Err(ExecError::BadSnapshot("it is not complete".into())),
        };
        let staged = self.dir.join(IMPORT_STAGING);
        let mut files: Vec<PathBuf> = st
            .files
            .iter()
            .map(|i| staged.join(staged_file(*i)))
            .collect();
        files.sort();
        let old_height = self.head.height;
        // from here on the staged files are being used up (ingestion moves them): a
        // failure leaves nothing to commit again, and the next import starts afresh
        self.staging = None;

        self.clear_staging()?;
        let import_ckpt = self.import_path(seq);
        remove_dir(&mut self.faults, &import_ckpt)?;
        let tmp = self.dir.join(STATE_TMP);
        // The new live state starts as a copy of the live one (hard-linked files), so
        // that receipts and blocks stay where they are, whatever their number: its
        // state is replaced by the staged files and its bookkeeping by the snapshot's.
        {
            let live = self.db.as_ref().ok_or_else(closed)?;
            make_checkpoint(&mut self.faults, live, &tmp)?;
        }
        {
            let db = open_db(&mut self.faults, &tmp, false)?;
            let (state_cf, blocks_cf) = (cf(&db, CF_STATE)?, cf(&db, CF_BLOCKS)?);
            let mut wb = WriteBatch::default();
            wb.delete_range_cf(state_cf, [].as_slice(), KEYS_END.as_slice());
            wb.delete_range_cf(cf(&db, CF_CHANGES)?, &block_key(0)[..], &KEYS_END[..]);
            // The stored blocks are one unbroken chain (apply, rollback and import keep
            // them so): if the block below the snapshot's head is its parent, every
            // stored block below is of the snapshot's history and stays; otherwise none
            // does. Blocks above the snapshot are of a history it replaces.
            let linked = match &v.head_block {
                Some(b) if seq > 1 => read_block(&db, seq - 1)
                    .ok()
                    .flatten()
                    .is_some_and(|old| old.hash() == b.prev),
                _ => false,
            };
            if !linked {
                wb.delete_range_cf(blocks_cf, block_key(0), block_key(seq));
            }
            wb.delete_range_cf(
                blocks_cf,
                &block_key(seq.saturating_add(1))[..],
                &KEYS_END[..],
            );
            if let Some(b) = &v.head_block {
                wb.put_cf(blocks_cf, block_key(seq), encode(b, "block")?);
            }
            let meta = cf(&db, CF_META)?;
            wb.put_cf(meta, META_APPLIED, seq.to_be_bytes());
            wb.put_cf(meta, META_LTHASH, v.lthash.to_bytes());
            wb.put_cf(meta, META_LTHASH_AT, seq.to_be_bytes());
            wb.put_cf(meta, META_HEAD, encode(&v.head, "head")?);
            wb.put_cf(meta, META_STABLE, seq.to_be_bytes());
            write(&mut self.faults, &db, wb, self.sync)?;
            // receipts stay where they are (decision 0061); those of heights above the
            // snapshot are of a history it replaces, and exist only if this ledger was
            // ahead of it
            if old_height > seq {
                drop_receipts_above(&mut self.faults, &db, seq, self.sync)?;
            }
            if !files.is_empty() {
                self.faults.step()?;
                let mut opts = IngestExternalFileOptions::default();
                opts.set_move_files(true);
                db.ingest_external_file_cf_opts(state_cf, &opts, files)?;
            }
            make_checkpoint(&mut self.faults, &db, &import_ckpt)?;
        }
        rename(&mut self.faults, &tmp, &self.dir.join(STATE_NEW))?;
        // every kept checkpoint is of the history being replaced: forgotten before the
        // commit point, as in a rollback; the snapshot's own is kept once it is in place
        let replaced = std::mem::take(&mut self.checkpoints);
        self.swap_live()?;
        if self.head != v.head {
            return Err(corrupt(format!(
                "the imported ledger at {seq} does not hold the snapshot's head"
            )));
        }
        let final_ckpt = self.checkpoint_path(seq);
        remove_dir(&mut self.faults, &final_ckpt)?;
        rename(&mut self.faults, &import_ckpt, &final_ckpt)?;
        self.checkpoints.insert(seq);
        for s in replaced.into_iter().filter(|s| *s != seq) {
            let path = self.checkpoint_path(s);
            remove_dir(&mut self.faults, &path)?;
        }
        remove_dir(&mut self.faults, &staged)?;
        Ok(self.head)
    }

    fn import_abort(&mut self) {
        if self.staging.take().is_some() {
            // a leftover is removed by the next import or on open
            let _ = std::fs::remove_dir_all(self.dir.join(IMPORT_STAGING));
        }
    }

    fn import_held_bytes(&self) -> usize {
        self.staging.as_ref().map_or(0, |st| {
            st.verifier.held_bytes() + st.files.capacity() * std::mem::size_of::<u32>()
        })
    }

    fn balance(&self, account: &PublicKey) -> Result<Option<u64>, ExecError> {
        self.state_value(&keys::account(account))?
            .map(|v| decode_balance(&v))
            .transpose()
    }

    fn client_window(&self, client: &PublicKey) -> Result<ClientWindow, ExecError> {
        if let Some(v) = self.state_value(&keys::account(client))? {
            return decode_account(&v).map(|a| a.window);
        }
        match self.state_value(&keys::client(client))? {
            Some(v) => decode(&v, "a client window"),
            None => Ok(ClientWindow::fresh()),
        }
    }

    fn receipt(
        &self,
        client: &PublicKey,
        request_id: u64,
    ) -> Result<Option<StoredReceipt>, ExecError> {
        let db = self.db()?;
        db.get_cf(cf(db, CF_RECEIPTS)?, receipt_key(client, request_id))?
            .map(|v| decode(&v, "a stored receipt"))
            .transpose()
    }

    fn block(&self, height: u64) -> Result<Option<Block>, ExecError> {
        read_block(self.db()?, height)
    }
}
