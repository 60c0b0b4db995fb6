//! The ledger directory: opening a ledger (genesis, or recovery of what a crash left),
//! the directory steps (removals, renames, copies of DB files), the checkpoint
//! directories, and the swap of the live state that a rollback or an import makes.
//!
//! [`RocksExecutor::open`] finishes or undoes an interrupted swap (see the module docs
//! of [`crate::rocks`] for the swap itself):
//!
//! | `state` | `state.new` | `state.old` | meaning                           | recovery                                  |
//! |---------|-------------|-------------|-----------------------------------|-------------------------------------------|
//! | any     | any         | any         | `state.tmp` exists: a partial build | remove `state.tmp` (and `import.staging`), then as below |
//! | yes     | no          | no          | normal                            | nothing                                   |
//! | yes     | yes         | any         | crashed before the commit point   | remove `state.new` (and `state.old`): the old state stays |
//! | no      | yes         | any         | crashed after the commit point    | rename `state.new` → `state`, remove `state.old` |
//! | yes     | no          | yes         | crashed before removing the old   | remove `state.old`                        |
//! | no      | no          | yes         | (not produced by this code)       | rename `state.old` → `state`              |
//! | no      | no          | no          | no ledger, or genesis interrupted | remove `checkpoints/`, write genesis      |
//!
//! Then the checkpoints are settled against the live state: a `<seq>.import` whose head
//! is the live head at the live stable sequence replaces `<seq>`, any other is removed;
//! entries that are not a sequence number (RocksDB's `.tmp` staging directories), those
//! below the stable sequence or above the head, and those whose head is not the live
//! chain's block at that height are removed. The stable checkpoint is never removed: if
//! it is missing, does not open or is not the chain's state, the ledger is reported
//! corrupt.

use super::cache::StateCache;
use super::db::{
    check_meta, make_checkpoint, open_db, open_read_only, read_block, read_meta, write,
};
use super::executor::RocksExecutor;
use super::faults::Faults;
use super::options::RocksOptions;
use super::{
    cf, corrupt, encode, io, CF_META, CF_STATE, CHECKPOINTS_DIR, META_APPLIED, META_HEAD,
    META_LTHASH, META_LTHASH_AT, META_STABLE, STATE_DIR,
};
use crate::error::ExecError;
use crate::lthash::LtHash;
use crate::transition::{genesis_entries, lthash_of};
use crate::types::Head;
use pbft_crypto::{Digest, PublicKey};
use rocksdb::WriteBatch;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Where a new live state (genesis, rollback, import) is built.
pub(super) const STATE_TMP: &str = "state.tmp";
/// A complete new live state, waiting for the swap.
pub(super) const STATE_NEW: &str = "state.new";
/// The replaced live state, from the commit point until it is removed.
pub(super) const STATE_OLD: &str = "state.old";
/// Where an import stages the table files of the snapshot's state, one per chunk with
/// entries, until the swap ingests them (removed on open: a staged import does not
/// survive a restart).
pub(super) const IMPORT_STAGING: &str = "import.staging";
/// Suffix of the checkpoint an import makes of its new state before the swap.
const IMPORT_SUFFIX: &str = ".import";

fn sync_dir(path: &Path) -> Result<(), ExecError> {
    fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io("syncing directory", path))
}

fn parent_of(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("."))
}

/// Removes a directory tree if it exists (one durable step). Not synced: a removal
/// that does not survive a power loss leaves a leftover that opening cleans up.
pub(super) fn remove_dir(faults: &mut Faults, path: &Path) -> Result<(), ExecError> {
    if !path.exists() {
        return Ok(());
    }
    faults.step()?;
    fs::remove_dir_all(path).map_err(io("removing", path))
}

/// Renames a directory (one durable step), syncing the parent directory so that the
/// renames of a swap reach the disk in order.
pub(super) fn rename(faults: &mut Faults, from: &Path, to: &Path) -> Result<(), ExecError> {
    faults.step()?;
    fs::rename(from, to).map_err(io("renaming", from))?;
    sync_dir(parent_of(to))
}

/// Copies the files of the DB at `src` to a new directory `dst` (SST files are
/// immutable and hard-linked; one durable step per file).
pub(super) fn copy_db_files(
    faults: &mut Faults,
    src: &Path,
    dst: &Path,
    sync: bool,
) -> Result<(), ExecError> {
    faults.step()?;
    fs::create_dir(dst).map_err(io("creating", dst))?;
    let mut names = Vec::new();
    for entry in fs::read_dir(src).map_err(io("listing", src))? {
        let entry = entry.map_err(io("listing", src))?;
        let is_file = entry
            .file_type()
            .map_err(io("inspecting", &entry.path()))?
            .is_file();
        let name = entry.file_name().to_string_lossy().into_owned();
        // the info log and lock file are per-open, not part of the data
        if is_file && name != "LOCK" && !name.starts_with("LOG") {
            names.push(name);
        }
    }
    names.sort();
    for name in names {
        let (from, to) = (src.join(&name), dst.join(&name));
        faults.step()?;
        let linked = name.ends_with(".sst") && fs::hard_link(&from, &to).is_ok();
        if !linked {
            fs::copy(&from, &to).map_err(io("copying", &from))?;
            if sync {
                fs::File::open(&to)
                    .and_then(|f| f.sync_all())
                    .map_err(io("syncing", &to))?;
            }
        }
    }
    sync_dir(dst)
}

/// The head and LtHash recorded in a checkpoint directory, which must hold the LtHash
/// of its own state.
fn checkpoint_head(path: &Path) -> Result<(Head, LtHash), ExecError> {
    let db = open_read_only(path)?;
    let meta = read_meta(&db)?;
    if meta.lthash_at != meta.head.height {
        return Err(corrupt(format!(
            "the checkpoint at height {} holds the LtHash of height {}",
            meta.head.height, meta.lthash_at
        )));
    }
    Ok((meta.head, meta.lthash))
}

/// Finishes or undoes an interrupted swap of the live state (see the module docs).
/// Returns true if there is no live state at all (a genesis is needed).
fn recover_layout(faults: &mut Faults, dir: &Path) -> Result<bool, ExecError> {
    let state = dir.join(STATE_DIR);
    let new = dir.join(STATE_NEW);
    let old = dir.join(STATE_OLD);
    remove_dir(faults, &dir.join(STATE_TMP))?;
    remove_dir(faults, &dir.join(IMPORT_STAGING))?;
    match (state.exists(), new.exists(), old.exists()) {
        (true, true, _) => {
            remove_dir(faults, &new)?;
            remove_dir(faults, &old)?;
        }
        (true, false, true) => remove_dir(faults, &old)?,
        (true, false, false) => {}
        (false, true, _) => {
            rename(faults, &new, &state)?;
            remove_dir(faults, &old)?;
        }
        (false, false, true) => rename(faults, &old, &state)?,
        (false, false, false) => return Ok(true),
    }
    Ok(false)
}

/// Writes the genesis ledger: built in `state.tmp` with checkpoint 0, then renamed.
fn create_genesis(
    faults: &mut Faults,
    dir: &Path,
    genesis: &BTreeMap<PublicKey, u64>,
    sync: bool,
) -> Result<(), ExecError> {
    let tmp = dir.join(STATE_TMP);
    let checkpoints = dir.join(CHECKPOINTS_DIR);
    remove_dir(faults, &checkpoints)?;
    remove_dir(faults, &tmp)?;
    let entries = genesis_entries(genesis);
    let lthash = lthash_of(entries.iter().map(|(k, v)| (k.as_slice(), v.as_slice())));
    let head = Head {
        height: 0,
        hash: Digest::ZERO,
        state_digest: lthash.digest(),
    };
    let db = open_db(faults, &tmp, true)?;
    let mut wb = WriteBatch::default();
    let state_cf = cf(&db, CF_STATE)?;
    for (k, v) in &entries {
        wb.put_cf(state_cf, k, v);
    }
    let meta = cf(&db, CF_META)?;
    wb.put_cf(meta, META_APPLIED, 0u64.to_be_bytes());
    wb.put_cf(meta, META_LTHASH, lthash.to_bytes());
    wb.put_cf(meta, META_LTHASH_AT, 0u64.to_be_bytes());
    wb.put_cf(meta, META_HEAD, encode(&head, "head")?);
    wb.put_cf(meta, META_STABLE, 0u64.to_be_bytes());
    write(faults, &db, wb, sync)?;
    fs::create_dir_all(&checkpoints).map_err(io("creating", &checkpoints))?;
    make_checkpoint(faults, &db, &checkpoints.join("0"))?;
    drop(db);
    rename(faults, &tmp, &dir.join(STATE_DIR))
}

impl RocksExecutor {
    /// Opens the ledger in `dir`, creating it with these genesis balances if there is
    /// none. On reopen the stored genesis is used (`genesis` is ignored), an interrupted
    /// rollback or import is finished or undone, and the stored meta, head block and
    /// chain position are checked ([`ExecError::Corrupt`] if they disagree).
    pub fn open(
        dir: &Path,
        genesis: &BTreeMap<PublicKey, u64>,
        opts: RocksOptions,
    ) -> Result<RocksExecutor, ExecError> {
        let mut faults = Faults::new(opts.fault).with_transient(opts.transient_fault);
        fs::create_dir_all(dir).map_err(io("creating", dir))?;
        if recover_layout(&mut faults, dir)? {
            create_genesis(&mut faults, dir, genesis, opts.sync)?;
        }
        let db = open_db(&mut faults, &dir.join(STATE_DIR), false)?;
        let meta = read_meta(&db)?;
        let logged = check_meta(&db, &meta)?;
        let mut cache = StateCache::new(opts.state_cache_bytes);
        cache.load(logged);
        let mut ex = RocksExecutor {
            dir: dir.to_path_buf(),
            db: Some(db),
            head: meta.head,
            lthash: meta.lthash,
            lthash_at: meta.lthash_at,
            stable: meta.stable,
            checkpoints: BTreeSet::new(),
            sync: opts.sync,
            faults,
            cache,
            staging: None,
        };
        ex.settle_checkpoints()?;
        Ok(ex)
    }

    /// The directory of checkpoint `seq`.
    pub(super) fn checkpoint_path(&self, seq: u64) -> PathBuf {
        self.dir.join(CHECKPOINTS_DIR).join(seq.to_string())
    }

    /// Where an import makes the checkpoint `seq` of its new state before the swap.
    pub(super) fn import_path(&self, seq: u64) -> PathBuf {
        self.dir
            .join(CHECKPOINTS_DIR)
            .join(format!("{seq}{IMPORT_SUFFIX}"))
    }

    /// Whether a checkpoint with head `ckpt` belongs to the live chain at `seq`.
    fn belongs(&self, seq: u64, ckpt: &Head) -> Result<bool, ExecError> {
        if seq == self.head.height {
            return Ok(*ckpt == self.head);
        }
        if seq == 0 {
            return Ok(ckpt.height == 0 && ckpt.hash == Digest::ZERO);
        }
        let db = self.db()?;
        Ok(match read_block(db, seq)? {
            Some(b) => {
                *ckpt
                    == Head {
                        height: seq,
                        hash: b.hash(),
                        state_digest: b.state_digest,
                    }
            }
            None => false,
        })
    }

    /// Brings `checkpoints/` in line with the live state (see the module docs).
    fn settle_checkpoints(&mut self) -> Result<(), ExecError> {
        let cdir = self.dir.join(CHECKPOINTS_DIR);
        fs::create_dir_all(&cdir).map_err(io("creating", &cdir))?;
        let list = |cdir: &Path| -> Result<Vec<String>, ExecError> {
            let mut names = Vec::new();
            for e in fs::read_dir(cdir).map_err(io("listing", cdir))? {
                names.push(
                    e.map_err(io("listing", cdir))?
                        .file_name()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
            names.sort();
            Ok(names)
        };
        for name in list(&cdir)? {
            let Some(seq) = name
                .strip_suffix(IMPORT_SUFFIX)
                .and_then(|s| s.parse::<u64>().ok())
            else {
                continue;
            };
            let path = cdir.join(&name);
            let keep = seq == self.stable
                && match checkpoint_head(&path) {
                    Ok((h, _)) => self.belongs(seq, &h)?,
                    Err(_) => false,
                };
            if keep {
                let target = self.checkpoint_path(seq);
                remove_dir(&mut self.faults, &target)?;
                rename(&mut self.faults, &path, &target)?;
            } else {
                remove_dir(&mut self.faults, &path)?;
            }
        }
        let mut kept = BTreeSet::new();
        for name in list(&cdir)? {
            let path = cdir.join(&name);
            let ok = match name.parse::<u64>() {
                Ok(seq) if seq == self.stable && seq.to_string() == name => {
                    // never removed: without it there is no rollback
                    let (h, lt) = checkpoint_head(&path).map_err(|e| {
                        corrupt(format!("the stable checkpoint {seq} does not open: {e}"))
                    })?;
                    if !self.belongs(seq, &h)? {
                        return Err(corrupt(format!(
                            "the stable checkpoint {seq} is not the chain's state at {seq}"
                        )));
                    }
                    self.same_lthash(seq, &lt)?;
                    Some(seq)
                }
                Ok(seq)
                    if seq.to_string() == name
                        && (self.stable..=self.head.height).contains(&seq) =>
                {
                    match checkpoint_head(&path) {
                        Ok((h, lt)) if self.belongs(seq, &h)? => {
                            self.same_lthash(seq, &lt)?;
                            Some(seq)
                        }
                        _ => None,
                    }
                }
                _ => None,
            };
            match ok {
                Some(seq) => {
                    kept.insert(seq);
                }
                None => remove_dir(&mut self.faults, &path)?,
            }
        }
        if !kept.contains(&self.stable) {
            return Err(corrupt(format!(
                "the checkpoint of the stable sequence {} is missing",
                self.stable
            )));
        }
        self.checkpoints = kept;
        Ok(())
    }

    /// A kept checkpoint of the height the live LtHash is of holds that same LtHash: a
    /// cheap check, at open, of the LtHash the next checkpoint builds on.
    fn same_lthash(&self, seq: u64, lt: &LtHash) -> Result<(), ExecError> {
        if seq == self.lthash_at && *lt != self.lthash {
            return Err(corrupt(format!(
                "the stored LtHash of height {seq} is not the one checkpoint {seq} holds"
            )));
        }
        Ok(())
    }

    /// Removes leftovers of a failed earlier swap before starting a new one.
    pub(super) fn clear_staging(&mut self) -> Result<(), ExecError> {
        for d in [STATE_TMP, STATE_NEW, STATE_OLD] {
            remove_dir(&mut self.faults, &self.dir.join(d))?;
        }
        Ok(())
    }

    /// Swaps the complete `state.new` in as the live state and reopens it.
    pub(super) fn swap_live(&mut self) -> Result<(), ExecError> {
        let state = self.dir.join(STATE_DIR);
        let old = self.dir.join(STATE_OLD);
        self.db = None; // close the live DB
        self.cache.clear();
        rename(&mut self.faults, &state, &old)?;
        rename(&mut self.faults, &self.dir.join(STATE_NEW), &state)?;
        let db = open_db(&mut self.faults, &state, false)?;
        let meta = read_meta(&db)?;
        let logged = check_meta(&db, &meta)?;
        self.cache.load(logged);
        self.db = Some(db);
        self.head = meta.head;
        self.lthash = meta.lthash;
        self.lthash_at = meta.lthash_at;
        self.stable = meta.stable;
        remove_dir(&mut self.faults, &old)
    }
}
