//! The ledger check behind `pbft ledger verify`: walks the block hash chain and
//! recomputes the state digest from the stored state, reading the live DB read-only.

use crate::error::ExecError;
use crate::lthash::LtHash;
use crate::rocks::{cf, open_read_only, read_meta, scan_once, CF_BLOCKS, CF_STATE, STATE_DIR};
use crate::transition::decode_balance;
use crate::types::{keys, Account, Block, ChainPos, ClientWindow};
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
    /// State digest, recomputed from the full state.
    pub state_digest: Digest,
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
/// * the LtHash recomputed by a full scan of the state equals the stored one, and its
///   digest equals the head's state digest;
/// * the chain position entry names the head height and the head block's parent.
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

    // the state, scanned in full
    let mut lt = LtHash::new();
    let mut accounts = 0u64;
    let mut chain: Option<ChainPos> = None;
    for item in db.iterator_cf_opt(cf(db, CF_STATE)?, scan_once(), IteratorMode::Start) {
        let (k, v) = item?;
        if k.len() == 33 && k[0] == keys::ACCOUNT {
            Account::decode(&v).ok_or_else(|| {
                corrupt(format!(
                    "the record of account {} ({} bytes) does not decode",
                    hex(&k[1..]),
                    v.len()
                ))
            })?;
            accounts += 1;
        } else if k.len() == 33 && k[0] == keys::CLIENT {
            postcard::from_bytes::<ClientWindow>(&v).map_err(|e| {
                corrupt(format!(
                    "the window of client {} does not decode: {e}",
                    hex(&k[1..])
                ))
            })?;
        } else if k.as_ref() == keys::CHAIN {
            chain =
                Some(postcard::from_bytes(&v).map_err(|e| {
                    corrupt(format!("the chain position entry does not decode: {e}"))
                })?);
        } else {
            return Err(corrupt(format!("an unknown state key {}", hex(&k))));
        }
        lt.insert(&k, &v);
    }
    let state_digest = lt.digest();
    if lt != meta.lthash {
        return Err(corrupt(format!(
            "at height {}: the state digest recomputed from the state is {}, the stored LtHash gives {}",
            head.height,
            state_digest.short(),
            meta.lthash.digest().short()
        )));
    }
    if state_digest != head.state_digest {
        return Err(corrupt(format!(
            "at height {}: the state digest recomputed from the state is {}, the head says {}",
            head.height,
            state_digest.short(),
            head.state_digest.short()
        )));
    }
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
        state_digest,
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
        Some(a) => Some(
            db.get_cf(cf(&db, CF_STATE)?, keys::account(a))?
                .map(|v| decode_balance(&v))
                .transpose()?,
        ),
        None => None,
    };
    Ok(LedgerShow {
        head: meta.head,
        stable: meta.stable,
        block,
        balance,
    })
}
