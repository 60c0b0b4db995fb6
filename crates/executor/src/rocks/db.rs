//! One ledger DB (the live state, a checkpoint, or a state being built): opening it
//! with the ledger's column families, the durable steps on it (opening read-write,
//! writing a batch, making a checkpoint), and reading and checking what it holds (meta,
//! blocks, the chain position, the changes log).

use super::faults::Faults;
use super::options::{cf_descriptors, db_options, scan_once, write_opts};
use super::{
    block_key, corrupt, decode, decode_u64, CF_BLOCKS, CF_CHANGES, CF_META, CF_STATE, META_APPLIED,
    META_HEAD, META_LTHASH, META_LTHASH_AT, META_STABLE,
};
use crate::error::ExecError;
use crate::lthash::LtHash;
use crate::transition::{fold_changes, Changes, NetChanges};
use crate::types::{keys, Block, ChainPos, Head};
use foldhash::HashMapExt;
use pbft_crypto::Digest;
use rocksdb::checkpoint::Checkpoint;
use rocksdb::{ColumnFamily, IteratorMode, Options, WriteBatch, DB};
use std::path::Path;

/// Opens a ledger DB (live state or checkpoint) read-only.
pub(crate) fn open_read_only(path: &Path) -> Result<DB, ExecError> {
    if !path.is_dir() {
        return Err(corrupt(format!("no ledger database at {}", path.display())));
    }
    check_format(path)?;
    Ok(DB::open_cf_descriptors_read_only(
        &db_options(false),
        path,
        cf_descriptors(),
        false,
    )?)
}

/// Refuses, with a clear message, a ledger DB written by a build that kept an LtHash
/// per block: it has no `changes` column family, and RocksDB would only say that the
/// family is missing.
fn check_format(path: &Path) -> Result<(), ExecError> {
    // a path that is not a DB yet is left to the open, which reports it
    let Ok(families) = DB::list_cf(&Options::default(), path) else {
        return Ok(());
    };
    if families.iter().any(|f| f == CF_META) && !families.iter().any(|f| f == CF_CHANGES) {
        return Err(corrupt(format!(
            "the ledger in {} was written by an older build, which kept an LtHash per block \
             (it has no `{CF_CHANGES}` column family); start a new ledger, or install one by \
             state transfer",
            path.display()
        )));
    }
    Ok(())
}

/// A column family handle, or a corruption error naming it.
pub(crate) fn cf<'a>(db: &'a DB, name: &str) -> Result<&'a ColumnFamily, ExecError> {
    db.cf_handle(name)
        .ok_or_else(|| corrupt(format!("column family `{name}` is missing")))
}

/// The decoded meta column family.
#[derive(Clone, Debug)]
pub(crate) struct Meta {
    pub(crate) applied: u64,
    pub(crate) lthash: LtHash,
    pub(crate) lthash_at: u64,
    pub(crate) head: Head,
    pub(crate) stable: u64,
}

/// Reads and decodes the meta column family.
pub(crate) fn read_meta(db: &DB) -> Result<Meta, ExecError> {
    let meta = cf(db, CF_META)?;
    let get = |key: &[u8], what: &str| -> Result<Vec<u8>, ExecError> {
        db.get_cf(meta, key)?
            .ok_or_else(|| corrupt(format!("meta `{what}` is missing")))
    };
    let applied = decode_u64(&get(META_APPLIED, "applied")?, "meta `applied`")?;
    let lthash = LtHash::from_bytes(&get(META_LTHASH, "lthash")?)
        .map_err(|e| corrupt(format!("meta `lthash`: {e}")))?;
    let lthash_at = match db.get_cf(meta, META_LTHASH_AT)? {
        Some(v) => decode_u64(&v, "meta `lthash_at`")?,
        None => {
            return Err(corrupt(
                "meta `lthash_at` is missing: the ledger was written by an older build, \
                 which kept an LtHash per block; start a new ledger (or install one by \
                 state transfer)",
            ))
        }
    };
    let head: Head = decode(&get(META_HEAD, "head")?, "meta `head`")?;
    let stable = decode_u64(&get(META_STABLE, "stable")?, "meta `stable`")?;
    Ok(Meta {
        applied,
        lthash,
        lthash_at,
        head,
        stable,
    })
}

/// Reads the block at `height`.
pub(crate) fn read_block(db: &DB, height: u64) -> Result<Option<Block>, ExecError> {
    db.get_cf(cf(db, CF_BLOCKS)?, block_key(height))?
        .map(|v| decode(&v, &format!("block {height}")))
        .transpose()
}

/// Reads the chain position from the state.
fn read_chain(db: &DB) -> Result<ChainPos, ExecError> {
    let v = db
        .get_cf(cf(db, CF_STATE)?, keys::CHAIN)?
        .ok_or_else(|| corrupt("the chain position entry is missing"))?;
    decode(&v, "the chain position entry")
}

/// The cheap consistency checks of an opened live DB: meta, head block and chain
/// position agree.
pub(super) fn check_meta(db: &DB, m: &Meta) -> Result<NetChanges, ExecError> {
    let h = m.head.height;
    if m.applied != h {
        return Err(corrupt(format!(
            "applied marker {} but head at height {h}",
            m.applied
        )));
    }
    if m.lthash_at > h {
        return Err(corrupt(format!(
            "the LtHash is of height {} but the head is at height {h}",
            m.lthash_at
        )));
    }
    if h == 0 && m.lthash.digest() != m.head.state_digest {
        return Err(corrupt(
            "stored LtHash does not match the genesis state digest",
        ));
    }
    let net = load_log(db, m.lthash_at, h)?;
    if m.stable > h {
        return Err(corrupt(format!(
            "stable checkpoint {} is above the head {h}",
            m.stable
        )));
    }
    // the live chain position: logged since the LtHash's height, or in the state
    let chain = match net.get(keys::CHAIN) {
        Some((_, Some(v))) => decode(v, "the logged chain position")?,
        Some((_, None)) => return Err(corrupt("the changes log deletes the chain position")),
        None => read_chain(db)?,
    };
    if chain.height != h {
        return Err(corrupt(format!(
            "chain position at height {} but head at height {h}",
            chain.height
        )));
    }
    if h == 0 {
        if m.head.hash != Digest::ZERO || chain.prev != Digest::ZERO {
            return Err(corrupt("a non-zero head hash at height 0"));
        }
    } else {
        let block =
            read_block(db, h)?.ok_or_else(|| corrupt(format!("head block {h} is missing")))?;
        if block.hash() != m.head.hash || block.state_digest != m.head.state_digest {
            return Err(corrupt(format!("block {h} does not match the head")));
        }
        if block.prev != chain.prev {
            return Err(corrupt(format!(
                "block {h}'s previous hash does not match the chain position"
            )));
        }
    }
    Ok(net)
}

/// Reads the changes log, which must hold exactly the batches `at + 1 ..= head`, and
/// folds it into each changed key's value at height `at` and at the head.
pub(crate) fn load_log(db: &DB, at: u64, head: u64) -> Result<NetChanges, ExecError> {
    let mut net = NetChanges::new();
    let mut next = at + 1;
    for item in db.iterator_cf_opt(cf(db, CF_CHANGES)?, scan_once(), IteratorMode::Start) {
        let (k, v) = item?;
        let h = decode_u64(&k, "a changes log key")?;
        if h != next || h > head {
            return Err(corrupt(format!(
                "the changes log holds batch {h} where batch {next} was expected (the LtHash is of height {at}, the head at {head})"
            )));
        }
        let batch: Changes = decode(&v, &format!("the logged changes of batch {h}"))?;
        fold_changes(&mut net, batch);
        next += 1;
    }
    if next != head + 1 {
        return Err(corrupt(format!(
            "the changes log ends at batch {} but the head is at height {head} (the LtHash is of height {at})",
            next - 1
        )));
    }
    Ok(net)
}

/// Opens (creating it if `create`) a ledger DB read-write (one durable step).
pub(super) fn open_db(faults: &mut Faults, path: &Path, create: bool) -> Result<DB, ExecError> {
    faults.step()?;
    if !create {
        check_format(path)?;
    }
    Ok(DB::open_cf_descriptors(
        &db_options(create),
        path,
        cf_descriptors(),
    )?)
}

/// Writes a batch (one durable step).
pub(super) fn write(
    faults: &mut Faults,
    db: &DB,
    batch: WriteBatch,
    sync: bool,
) -> Result<(), ExecError> {
    faults.step()?;
    faults.wrote(batch.size_in_bytes());
    Ok(db.write_opt(batch, &write_opts(sync))?)
}

/// Makes a RocksDB checkpoint of `db` at `path` (one durable step).
pub(super) fn make_checkpoint(faults: &mut Faults, db: &DB, path: &Path) -> Result<(), ExecError> {
    faults.step()?;
    Checkpoint::new(db)?.create_checkpoint(path)?;
    Ok(())
}
