//! The deterministic state transition shared by both executors: one batch in, the
//! exact set of key changes, receipts and the block out. Both executors read through a
//! [`StateView`] and write what [`Transition`] lists, so they cannot disagree.

use crate::error::ExecError;
use crate::lthash::LtHash;
use crate::types::{
    keys, merkle_root, Applied, Block, ChainPos, ClientWindow, Entry, ExecRequest, FailReason,
    Operation, Receipt, StoredReceipt, EXEC_WINDOW, MAX_TRANSFERS,
};
use pbft_crypto::{Digest, PublicKey};
use std::collections::BTreeMap;

/// Read access to the state before a batch.
pub trait StateView {
    /// A state value (account balance, client window, chain position).
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ExecError>;
    /// A stored receipt.
    fn receipt(&self, client: &PublicKey, rid: u64) -> Result<Option<StoredReceipt>, ExecError>;
}

/// Changed state keys: the value before the batch and after it (`None` = absent).
pub type Changes = BTreeMap<Vec<u8>, (Option<Vec<u8>>, Option<Vec<u8>>)>;

/// Everything one batch changes.
#[derive(Clone, Debug)]
pub struct Transition {
    /// Changed state keys: the value before the batch and after it (`None` = absent).
    pub changes: Changes,
    /// Receipts to store.
    pub receipts: Vec<((PublicKey, u64), StoredReceipt)>,
    /// The LtHash after the batch.
    pub lthash: LtHash,
    /// The block, its hash, replies and entries.
    pub applied: Applied,
}

/// Balance value encoding.
pub fn encode_balance(b: u64) -> Vec<u8> {
    b.to_le_bytes().to_vec()
}

/// Balance value decoding.
pub fn decode_balance(v: &[u8]) -> Result<u64, ExecError> {
    let arr: [u8; 8] = v
        .try_into()
        .map_err(|_| ExecError::Corrupt("account balance is not 8 bytes".into()))?;
    Ok(u64::from_le_bytes(arr))
}

fn decode<T: serde::de::DeserializeOwned>(v: &[u8], what: &str) -> Result<T, ExecError> {
    postcard::from_bytes(v).map_err(|e| ExecError::Corrupt(format!("{what}: {e}")))
}

fn encode<T: serde::Serialize>(v: &T) -> Vec<u8> {
    postcard::to_allocvec(v).unwrap_or_default()
}

/// Reads through the batch's own writes.
struct Overlay<'a, V: StateView> {
    view: &'a V,
    changes: Changes,
}

impl<V: StateView> Overlay<'_, V> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ExecError> {
        match self.changes.get(key) {
            Some((_, new)) => Ok(new.clone()),
            None => self.view.get(key),
        }
    }

    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) -> Result<(), ExecError> {
        match self.changes.get_mut(&key) {
            Some((_, new)) => *new = Some(value),
            None => {
                let old = self.view.get(&key)?;
                self.changes.insert(key, (old, Some(value)));
            }
        }
        Ok(())
    }

    fn balance(&self, pk: &PublicKey) -> Result<Option<u64>, ExecError> {
        self.get(&keys::account(pk))?
            .map(|v| decode_balance(&v))
            .transpose()
    }
}

/// Applies the transfers of one request, all or none.
fn apply_op<V: StateView>(
    o: &mut Overlay<'_, V>,
    client: &PublicKey,
    op: &[u8],
) -> Result<Receipt, ExecError> {
    let fail = |reason| Ok(Receipt::Failed { reason });
    let Ok(op) = postcard::from_bytes::<Operation>(op) else {
        return fail(FailReason::Malformed);
    };
    if op.transfers.is_empty()
        || op.transfers.len() > MAX_TRANSFERS
        || op.transfers.iter().any(|t| t.amount == 0)
    {
        return fail(FailReason::BadAmount);
    }
    let mut touched: BTreeMap<PublicKey, u64> = BTreeMap::new();
    let Some(start) = o.balance(client)? else {
        return fail(FailReason::UnknownAccount);
    };
    touched.insert(*client, start);
    for t in &op.transfers {
        let to_before = match touched.get(&t.to) {
            Some(b) => *b,
            None => match o.balance(&t.to)? {
                Some(b) => b,
                None => return fail(FailReason::UnknownAccount),
            },
        };
        touched.insert(t.to, to_before);
        let from = touched[client];
        let Some(from_after) = from.checked_sub(t.amount) else {
            return fail(FailReason::InsufficientFunds);
        };
        touched.insert(*client, from_after);
        let to_now = touched[&t.to];
        let Some(to_after) = to_now.checked_add(t.amount) else {
            return fail(FailReason::Overflow);
        };
        touched.insert(t.to, to_after);
    }
    let balance = touched[client];
    for (pk, b) in touched {
        o.put(keys::account(&pk), encode_balance(b))?;
    }
    Ok(Receipt::Applied { balance })
}

/// Executes one batch against `view` at `seq`, given the LtHash and head before it.
pub fn execute_batch<V: StateView>(
    view: &V,
    lthash: &LtHash,
    head: Digest,
    seq: u64,
    batch_digest: Digest,
    requests: &[ExecRequest<'_>],
) -> Result<Transition, ExecError> {
    let mut o = Overlay {
        view,
        changes: BTreeMap::new(),
    };
    let mut receipts: Vec<((PublicKey, u64), StoredReceipt)> = Vec::new();
    let mut replies = Vec::with_capacity(requests.len());
    let mut entries = Vec::with_capacity(requests.len());
    for r in requests {
        let ckey = keys::client(r.client);
        let mut window: ClientWindow = match o.get(&ckey)? {
            Some(v) => decode(&v, "client window")?,
            None => ClientWindow::fresh(),
        };
        let (entry, reply) = if r.request_id == 0 || window.has_executed(r.request_id) {
            // the original receipt: from this batch, or from the store
            let here = receipts
                .iter()
                .rev()
                .find(|((c, id), _)| c == r.client && *id == r.request_id)
                .map(|(_, s)| s.receipt.clone());
            let original = match here {
                Some(x) => Some(x),
                None => view.receipt(r.client, r.request_id)?.map(|s| s.receipt),
            };
            let reply = original.unwrap_or(Receipt::Failed {
                reason: FailReason::Duplicate,
            });
            (Entry::Duplicate, reply)
        } else if r.request_id >= window.low.saturating_add(EXEC_WINDOW) {
            let receipt = Receipt::Failed {
                reason: FailReason::OutOfWindow,
            };
            (Entry::Refused(FailReason::OutOfWindow), receipt)
        } else {
            let receipt = apply_op(&mut o, r.client, r.op)?;
            window.mark(r.request_id);
            o.put(ckey, encode(&window))?;
            receipts.push((
                (*r.client, r.request_id),
                StoredReceipt {
                    height: seq,
                    receipt: receipt.clone(),
                },
            ));
            (Entry::Executed(receipt.clone()), receipt)
        };
        replies.push(reply.encode());
        entries.push(entry);
    }
    // the chain position moves even for a null batch
    let chain = ChainPos {
        height: seq,
        prev: head,
    };
    o.put(keys::CHAIN.to_vec(), encode(&chain))?;

    let leaves: Vec<Digest> = requests
        .iter()
        .zip(&entries)
        .map(|(r, e)| Digest::of(&encode(&(r.client, r.request_id, e))))
        .collect();
    let receipts_root = merkle_root(&leaves);
    let mut lt = lthash.clone();
    for (k, (old, new)) in &o.changes {
        if old != new {
            lt.update(k, old.as_deref(), new.as_deref());
        }
    }
    let block = Block {
        height: seq,
        prev: head,
        batch_digest,
        receipts_root,
        state_digest: lt.digest(),
    };
    let block_hash = block.hash();
    Ok(Transition {
        changes: o.changes,
        receipts,
        lthash: lt,
        applied: Applied {
            block,
            block_hash,
            replies,
            entries,
        },
    })
}

/// The genesis state entries for the given balances (chain at height 0).
pub fn genesis_entries(balances: &BTreeMap<PublicKey, u64>) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out: Vec<(Vec<u8>, Vec<u8>)> = balances
        .iter()
        .map(|(pk, b)| (keys::account(pk), encode_balance(*b)))
        .collect();
    out.push((keys::CHAIN.to_vec(), encode(&ChainPos::default())));
    out.sort();
    out
}

/// The LtHash of a full list of state entries.
pub fn lthash_of<'a>(entries: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> LtHash {
    let mut lt = LtHash::new();
    for (k, v) in entries {
        lt.insert(k, v);
    }
    lt
}
