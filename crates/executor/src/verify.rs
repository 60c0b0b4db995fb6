//! The ledger check behind `pbft ledger verify`: walks the block hash chain, checks the
//! state digests of the blocks since the last checkpoint against the changes log, and
//! recomputes the LtHash from the stored state, reading the live DB read-only.

use crate::error::ExecError;
use crate::lthash::LtHash;
use crate::rocks::{
    cf, load_log, open_read_only, read_block, read_meta, receipt_key, scan_once, total_order,
    CF_BLOCKS, CF_CHANGES, CF_RECEIPTS, CF_STATE, STATE_DIR,
};
use crate::transition::{decode_balance, fold_changes, net_delta, Changes, NetChanges};
use crate::types::{
    keys, state_digest_after, Account, Block, ChainPos, ClientWindow, StoredReceipt,
};
use pbft_crypto::Digest;
use rocksdb::{IteratorMode, DB};
use std::path::Path;

/// What a successful check found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerReport {
    /// Height of the head.
    pub height: u64,
    /// Hash of the head block (zero at genesis).
    pub head: Digest,
    /// The head's state digest, as recomputed from the changes log (it chains the
    /// digest at the last checkpoint with every batch's changes since).
    pub state_digest: Digest,
    /// The digest of the LtHash of the full state, recomputed by a full scan.
    pub lthash: Digest,
    /// The height of the last checkpoint's LtHash, from which the changes log runs.
    pub lthash_at: u64,
    /// Blocks whose hash links were checked.
    pub blocks_checked: u64,
    /// Accounts in the state.
    pub accounts: u64,
}

fn corrupt(why: String) -> ExecError {
    ExecError::Corrupt(why)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks the ledger in `dir` (the directory given to
/// [`crate::rocks::RocksExecutor::open`]), opening its live DB read-only:
///
/// * the blocks, from the lowest stored one to the last, have consecutive heights and
///   each one's `prev` is the hash of the one before (zero before block 1);
/// * the head in meta is the last block (height, hash, state digest), and the applied
///   marker is its height;
/// * the changes log holds every batch above the stored LtHash's height (the last
///   checkpoint), each decodes, and chaining them onto the state digest at that height
///   gives every later block's state digest;
/// * the `state` column family is the state at that height: the LtHash recomputed by
///   a full scan of it equals the stored one, and the log's first value of every key it
///   changed is the column family's;
/// * the chain position entry names the head height and the head block's parent.
///
/// The state digests of blocks at or below the last checkpoint are not rechecked: their
/// changes are no longer kept (the hash links still cover them).
///
/// The first problem found is reported as [`ExecError::Corrupt`], naming the height and
/// what mismatched. Run it on a ledger no executor has open: a read-only open next to a
/// writer can race with the writer's compactions (reported as a storage error).
pub fn verify_ledger(dir: &Path) -> Result<LedgerReport, ExecError> {
    let state = dir.join(STATE_DIR);
    if !state.is_dir() {
        let pending = ["state.new", "state.old"]
            .iter()
            .any(|d| dir.join(d).exists());
        return Err(corrupt(if pending {
            format!(
                "no live state in {}: a rollback or import was interrupted; open the ledger once to finish it",
                dir.display()
            )
        } else {
            format!("no live state in {}", dir.display())
        }));
    }
    let db = open_read_only(&state)?;
    verify_db(&db)
}

fn verify_db(db: &DB) -> Result<LedgerReport, ExecError> {
    let meta = read_meta(db)?;
    let head = meta.head;

    // the hash chain
    let mut last: Option<(Block, Digest)> = None;
    let mut blocks_checked = 0u64;
    for item in db.iterator_cf_opt(cf(db, CF_BLOCKS)?, scan_once(), IteratorMode::Start) {
        let (k, v) = item?;
        let arr: [u8; 8] = k
            .as_ref()
            .try_into()
            .map_err(|_| corrupt(format!("a block key of {} bytes ({})", k.len(), hex(&k))))?;
        let h = u64::from_be_bytes(arr);
        let block: Block = postcard::from_bytes(&v)
            .map_err(|e| corrupt(format!("block {h} does not decode: {e}")))?;
        if block.height != h {
            return Err(corrupt(format!(
                "the block stored at height {h} says height {}",
                block.height
            )));
        }
        match &last {
            Some((p, p_hash)) => {
                if h != p.height + 1 {
                    return Err(corrupt(format!(
                        "block {} is missing: the stored blocks jump from height {} to {h}",
                        p.height + 1,
                        p.height
                    )));
                }
                if block.prev != *p_hash {
                    return Err(corrupt(format!(
                        "block {h}'s previous hash {} is not the hash {} of block {}",
                        block.prev.short(),
                        p_hash.short(),
                        p.height
                    )));
                }
            }
            None => {
                if h == 1 && block.prev != Digest::ZERO {
                    return Err(corrupt("block 1's previous hash is not zero".into()));
                }
            }
        }
        blocks_checked += 1;
        let hash = block.hash();
        last = Some((block, hash));
    }

    // the head is the last block
    let head_prev = match &last {
        Some((b, hash)) => {
            if head.height != b.height {
                return Err(corrupt(format!(
                    "the head is at height {} but the last stored block is {}",
                    head.height, b.height
                )));
            }
            if head.hash != *hash {
                return Err(corrupt(format!(
                    "the head hash {} at height {} is not the hash {} of block {}",
                    head.hash.short(),
                    head.height,
                    hash.short(),
                    b.height
                )));
            }
            if head.state_digest != b.state_digest {
                return Err(corrupt(format!(
                    "the head's state digest at height {} is not block {}'s",
                    head.height, b.height
                )));
            }
            b.prev
        }
        None => {
            if head.height != 0 || head.hash != Digest::ZERO {
                return Err(corrupt(format!(
                    "the head is at height {} but no block is stored",
                    head.height
                )));
            }
            Digest::ZERO
        }
    };
    if meta.applied != head.height {
        return Err(corrupt(format!(
            "the applied marker is {} but the head is at height {}",
            meta.applied, head.height
        )));
    }
    if meta.stable > head.height {
        return Err(corrupt(format!(
            "the stable checkpoint {} is above the head at height {}",
            meta.stable, head.height
        )));
    }

    // the changes log since the LtHash's height, against the blocks' state digests
    let at = meta.lthash_at;
    if at > head.height {
        return Err(corrupt(format!(
            "the LtHash is of height {at}, above the head at height {}",
            head.height
        )));
    }
    let mut digest = if at == 0 {
        meta.lthash.digest()
    } else {
        read_block(db, at)?
            .ok_or_else(|| corrupt(format!("block {at}, of the last checkpoint, is missing")))?
            .state_digest
    };
    let mut net = NetChanges::default();
    let mut next = at + 1;
    for item in db.iterator_cf_opt(cf(db, CF_CHANGES)?, scan_once(), IteratorMode::Start) {
        let (k, v) = item?;
        let h = <[u8; 8]>::try_from(k.as_ref())
            .map(u64::from_be_bytes)
            .map_err(|_| corrupt(format!("a changes log key of {} bytes", k.len())))?;
        if h != next || h > head.height {
            return Err(corrupt(format!(
                "the changes log holds batch {h} where batch {next} was expected (the LtHash is of height {at}, the head at {})",
                head.height
            )));
        }
        let block = read_block(db, h)?.ok_or_else(|| corrupt(format!("block {h} is missing")))?;
        digest = state_digest_after(&digest, h, &v);
        if digest != block.state_digest {
            return Err(corrupt(format!(
                "block {h}'s state digest {} is not the one its logged changes give, {}",
                block.state_digest.short(),
                digest.short()
            )));
        }
        let batch: Changes = postcard::from_bytes(&v).map_err(|e| {
            corrupt(format!(
                "the logged changes of batch {h} do not decode: {e}"
            ))
        })?;
        // each batch's keys are strictly increasing, and a key's value before a batch is
        // its value after the last logged batch that changed it
        for (i, (k, (old, _))) in batch.iter().enumerate() {
            if i > 0 && batch[i - 1].0 >= *k {
                return Err(corrupt(format!(
                    "the logged changes of batch {h} are not in strictly increasing key order"
                )));
            }
            if net.get(k).is_some_and(|(_, last)| last != old) {
                return Err(corrupt(format!(
                    "batch {h}'s logged value before it of state key {} is not the one an earlier logged batch left",
                    hex(k)
                )));
            }
        }
        fold_changes(&mut net, batch);
        next += 1;
    }
    if next != head.height + 1 {
        return Err(corrupt(format!(
            "the changes log ends at batch {} but the head is at height {}",
            next - 1,
            head.height
        )));
    }
    if digest != head.state_digest {
        return Err(corrupt(format!(
            "at height {}: the head's state digest is {}, the chain of digests gives {}",
            head.height,
            head.state_digest.short(),
            digest.short()
        )));
    }

    // the `state` column family, scanned in full, is the state at the LtHash's height;
    // the log's net changes take it to the head
    let check_entry = |k: &[u8], v: &[u8]| -> Result<(), ExecError> {
        if k.len() == 33 && k[0] == keys::ACCOUNT {
            Account::decode(v).map(|_| ()).ok_or_else(|| {
                corrupt(format!(
                    "the record of account {} ({} bytes) does not decode",
                    hex(&k[1..]),
                    v.len()
                ))
            })
        } else if k.len() == 33 && k[0] == keys::CLIENT {
            postcard::from_bytes::<ClientWindow>(v)
                .map(|_| ())
                .map_err(|e| {
                    corrupt(format!(
                        "the window of client {} does not decode: {e}",
                        hex(&k[1..])
                    ))
                })
        } else if k == keys::CHAIN {
            postcard::from_bytes::<ChainPos>(v)
                .map(|_| ())
                .map_err(|e| corrupt(format!("the chain position entry does not decode: {e}")))
        } else {
            Err(corrupt(format!("an unknown state key {}", hex(k))))
        }
    };
    let mismatch = |k: &[u8]| {
        corrupt(format!(
            "the changes log's first value of state key {} is not the state's at height {at}",
            hex(k)
        ))
    };
    let mut lt = LtHash::new();
    let mut accounts = 0u64;
    let mut chain: Option<ChainPos> = None;
    let mut matched = 0usize;
    for item in db.iterator_cf_opt(cf(db, CF_STATE)?, total_order(), IteratorMode::Start) {
        let (k, v) = item?;
        check_entry(&k, &v)?;
        if k.len() == 33 && k[0] == keys::ACCOUNT {
            accounts += 1;
        }
        if k.as_ref() == keys::CHAIN {
            chain = postcard::from_bytes(&v).ok();
        }
        if let Some((old, _)) = net.get(k.as_ref()) {
            if old.as_deref() != Some(v.as_ref()) {
                return Err(mismatch(&k));
            }
            matched += 1;
        }
        lt.insert(&k, &v);
    }
    // every logged key that had a value then must be in the column family
    if matched != net.values().filter(|(old, _)| old.is_some()).count() {
        let state = cf(db, CF_STATE)?;
        for (k, (old, _)) in &net {
            if old.is_some() && db.get_cf(state, k)?.is_none() {
                return Err(mismatch(k));
            }
        }
    }
    if lt != meta.lthash {
        return Err(corrupt(format!(
            "the LtHash recomputed from the state (of height {at}) is {}, the stored one is {}",
            lt.digest().short(),
            meta.lthash.digest().short()
        )));
    }
    for (k, (old, new)) in &net {
        if let Some(v) = new {
            check_entry(k, v)?;
        }
        if k.as_slice() == keys::CHAIN {
            let v = new
                .as_deref()
                .ok_or_else(|| corrupt("the changes log deletes the chain position".into()))?;
            chain = postcard::from_bytes(v).ok();
        }
        // accounts come from the genesis only, and are never deleted
        if k.len() == 33 && k[0] == keys::ACCOUNT && (old.is_none() || new.is_none()) {
            return Err(corrupt(format!(
                "the changes log creates or deletes account {}",
                hex(&k[1..])
            )));
        }
    }
    let mut live = meta.lthash.clone();
    live.add(&net_delta(&net));
    let chain = chain.ok_or_else(|| corrupt("the chain position entry is missing".into()))?;
    if chain.height != head.height || chain.prev != head_prev {
        return Err(corrupt(format!(
            "the chain position (height {}, prev {}) does not match the head at height {} (prev {})",
            chain.height,
            chain.prev.short(),
            head.height,
            head_prev.short()
        )));
    }
    Ok(LedgerReport {
        height: head.height,
        head: head.hash,
        state_digest: digest,
        lthash: live.digest(),
        lthash_at: at,
        blocks_checked,
        accounts,
    })
}

/// What `pbft ledger show` prints: the head, and optionally one block and one account.
#[derive(Clone, Debug)]
pub struct LedgerShow {
    /// The head.
    pub head: crate::types::Head,
    /// The last stable checkpoint recorded.
    pub stable: u64,
    /// The block asked for (`None` if there is no block at that height).
    pub block: Option<(Block, Digest)>,
    /// The account asked for: its balance (`None` if it does not exist).
    pub balance: Option<Option<u64>>,
}

/// Reads a closed ledger: its head, the block at `height` and the balance of `account`
/// when asked for.
pub fn show_ledger(
    dir: &Path,
    height: Option<u64>,
    account: Option<&pbft_crypto::PublicKey>,
) -> Result<LedgerShow, ExecError> {
    let state = dir.join(STATE_DIR);
    if !state.is_dir() {
        return Err(corrupt(format!("no ledger in {}", dir.display())));
    }
    let db = open_read_only(&state)?;
    let meta = read_meta(&db)?;
    let block = match height {
        Some(h) => crate::rocks::read_block(&db, h)?.map(|b| {
            let hash = b.hash();
            (b, hash)
        }),
        None => None,
    };
    let balance = match account {
        Some(a) => {
            // the live value: logged since the last checkpoint, or in the state
            let key = keys::account(a);
            let logged = load_log(&db, meta.lthash_at, meta.head.height)?;
            let value = match logged.get(&key) {
                Some((_, new)) => new.clone(),
                None => db.get_cf(cf(&db, CF_STATE)?, &key)?,
            };
            Some(value.map(|v| decode_balance(&v)).transpose()?)
        }
        None => None,
    };
    Ok(LedgerShow {
        head: meta.head,
        stable: meta.stable,
        block,
        balance,
    })
}

/// Reads the receipts a closed ledger holds for `keys` (client, request id), in their
/// order: `None` where it holds none. For checks after a run, such as whether a
/// request signed under a reused id ever executed (its receipt would record its
/// digest).
pub fn read_receipts(
    dir: &Path,
    keys: &[(pbft_crypto::PublicKey, u64)],
) -> Result<Vec<Option<StoredReceipt>>, ExecError> {
    let state = dir.join(STATE_DIR);
    if !state.is_dir() {
        return Err(corrupt(format!("no ledger in {}", dir.display())));
    }
    let db = open_read_only(&state)?;
    let receipts = cf(&db, CF_RECEIPTS)?;
    keys.iter()
        .map(|(client, id)| {
            db.get_cf(receipts, receipt_key(client, *id))?
                .map(|v| {
                    postcard::from_bytes(&v)
                        .map_err(|e| corrupt(format!("a stored receipt does not decode: {e}")))
                })
                .transpose()
        })
        .collect()
}
