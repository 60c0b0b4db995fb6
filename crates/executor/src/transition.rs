//! The deterministic state transition shared by both executors: one batch in, the
//! exact set of key changes, receipts and the block out. Both executors read through a
//! [`StateView`] and write what [`Transition`] lists, so they cannot disagree.

use crate::error::ExecError;
use crate::lthash::LtHash;
use crate::types::{
    keys, state_digest_after, Account, Applied, Block, ChainPos, ClientWindow, Entry, ExecRequest,
    FailReason, Receipt, StoredReceipt, EXEC_WINDOW, MAX_TRANSFERS,
};
use foldhash::{HashMap, HashMapExt};
use pbft_crypto::{Digest, PublicKey};
use std::collections::BTreeMap;

/// Read access to the state before a batch.
pub trait StateView {
    /// A state value (account record, window of a client without an account, chain
    /// position).
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ExecError>;
    /// A stored receipt.
    fn receipt(&self, client: &PublicKey, rid: u64) -> Result<Option<StoredReceipt>, ExecError>;
}

/// A state value before a batch and after it (`None` = absent).
pub type Change = (Option<Vec<u8>>, Option<Vec<u8>>);

/// Changed state keys, in increasing key order, each once: the value before the batch
/// and after it. Keys a batch wrote back unchanged are left out.
pub type Changes = Vec<(Vec<u8>, Change)>;

/// Everything one batch changes.
#[derive(Clone, Debug)]
pub struct Transition {
    /// Changed state keys: the value before the batch and after it (`None` = absent).
    pub changes: Changes,
    /// `changes`, postcard-encoded: what the block's state digest chains in, and what
    /// the RocksDB executor logs until the next checkpoint.
    pub changes_encoded: Vec<u8>,
    /// Receipts to store.
    pub receipts: Vec<((PublicKey, u64), StoredReceipt)>,
    /// The block, its hash, replies and entries.
    pub applied: Applied,
}

/// Decodes a stored account record.
pub fn decode_account(v: &[u8]) -> Result<Account, ExecError> {
    Account::decode(v).ok_or_else(|| ExecError::Corrupt("an account record does not decode".into()))
}

/// The balance of a stored account record.
pub fn decode_balance(v: &[u8]) -> Result<u64, ExecError> {
    decode_account(v).map(|a| a.balance)
}

fn decode<T: serde::de::DeserializeOwned>(v: &[u8], what: &str) -> Result<T, ExecError> {
    postcard::from_bytes(v).map_err(|e| ExecError::Corrupt(format!("{what}: {e}")))
}

fn encode<T: serde::Serialize>(v: &T) -> Vec<u8> {
    postcard::to_allocvec(v).unwrap_or_default()
}

/// An account the batch read: its stored bytes and its (possibly changed) record.
struct Slot {
    key: [u8; 32],
    old: Option<Vec<u8>>,
    /// `None`: no such account.
    record: Option<Account>,
    dirty: bool,
}

/// Reads through the batch's own writes. Accounts are held decoded, each read from the
/// view once and encoded once at the end of the batch.
struct Overlay<'a, V: StateView> {
    view: &'a V,
    index: HashMap<[u8; 32], usize>,
    accounts: Vec<Slot>,
    /// Other keys (windows of clients without an account, the chain position).
    other: BTreeMap<Vec<u8>, Change>,
}

impl<V: StateView> Overlay<'_, V> {
    /// The slot of an account, read from the view on first use.
    fn slot(&mut self, pk: &[u8; 32]) -> Result<usize, ExecError> {
        if let Some(&i) = self.index.get(pk) {
            return Ok(i);
        }
        let old = self.view.get(&keys::account_raw(pk))?;
        let record = old.as_deref().map(decode_account).transpose()?;
        let i = self.accounts.len();
        self.accounts.push(Slot {
            key: *pk,
            old,
            record,
            dirty: false,
        });
        self.index.insert(*pk, i);
        Ok(i)
    }

    fn get_other(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ExecError> {
        match self.other.get(key) {
            Some((_, new)) => Ok(new.clone()),
            None => self.view.get(key),
        }
    }

    fn put_other(&mut self, key: Vec<u8>, value: Vec<u8>) -> Result<(), ExecError> {
        match self.other.get_mut(&key) {
            Some((_, new)) => *new = Some(value),
            None => {
                let old = self.view.get(&key)?;
                self.other.insert(key, (old, Some(value)));
            }
        }
        Ok(())
    }

    /// Takes the window of the client of slot `i` out of the overlay (give it back with
    /// [`Overlay::put_window`]).
    fn take_window(&mut self, i: usize, client: &PublicKey) -> Result<ClientWindow, ExecError> {
        if let Some(a) = &mut self.accounts[i].record {
            return Ok(std::mem::take(&mut a.window));
        }
        Ok(match self.get_other(&keys::client(client))? {
            Some(v) => decode(&v, "client window")?,
            None => ClientWindow::fresh(),
        })
    }

    /// Returns a window taken with [`Overlay::take_window`]; `changed` if it must be
    /// written.
    fn put_window(
        &mut self,
        i: usize,
        client: &PublicKey,
        window: ClientWindow,
        changed: bool,
    ) -> Result<(), ExecError> {
        let slot = &mut self.accounts[i];
        if let Some(a) = &mut slot.record {
            a.window = window;
            slot.dirty |= changed;
            return Ok(());
        }
        if changed {
            self.put_other(keys::client(client), encode(&window))?;
        }
        Ok(())
    }

    /// The changes, in key order, without the keys written back unchanged.
    fn into_changes(self) -> Result<Changes, ExecError> {
        let mut changes: Changes = Vec::with_capacity(self.accounts.len() + self.other.len());
        for slot in self.accounts {
            let Some(record) = slot.record.filter(|_| slot.dirty) else {
                continue;
            };
            let new = record.encode().ok_or_else(|| {
                ExecError::Corrupt("an account's window broke its invariants".into())
            })?;
            if slot.old.as_deref() != Some(new.as_slice()) {
                changes.push((keys::account_raw(&slot.key), (slot.old, Some(new))));
            }
        }
        changes.extend(self.other.into_iter().filter(|(_, (old, new))| old != new));
        changes.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Ok(changes)
    }
}

/// The wire form of [`crate::Operation`] with accounts as raw key bytes: the ledger
/// only compares and looks up accounts, so it never pays for decoding a curve point.
/// Accounts exist only from genesis (validated keys), so a receiving key that is not
/// a valid point is simply an unknown account.
#[derive(serde::Deserialize)]
struct RawOperation {
    transfers: Vec<RawTransfer>,
}

#[derive(serde::Deserialize)]
struct RawTransfer {
    to: [u8; 32],
    amount: u64,
}

/// Applies the transfers of one request by the client of slot `me`, all or none.
fn apply_op<V: StateView>(
    o: &mut Overlay<'_, V>,
    me: usize,
    op: &[u8],
) -> Result<Receipt, ExecError> {
    let fail = |reason| Ok(Receipt::Failed { reason });
    let Ok(op) = postcard::from_bytes::<RawOperation>(op) else {
        return fail(FailReason::Malformed);
    };
    if op.transfers.is_empty()
        || op.transfers.len() > MAX_TRANSFERS
        || op.transfers.iter().any(|t| t.amount == 0)
    {
        return fail(FailReason::BadAmount);
    }
    let Some(start) = o.accounts[me].record.as_ref().map(|a| a.balance) else {
        return fail(FailReason::UnknownAccount);
    };
    // at most 17 accounts: a small vector beats a map
    let mut touched: Vec<(usize, u64)> = Vec::with_capacity(op.transfers.len() + 1);
    touched.push((me, start));
    for t in &op.transfers {
        let i = o.slot(&t.to)?;
        let to = match touched.iter().position(|(s, _)| *s == i) {
            Some(pos) => pos,
            None => match o.accounts[i].record.as_ref() {
                Some(a) => {
                    touched.push((i, a.balance));
                    touched.len() - 1
                }
                None => return fail(FailReason::UnknownAccount),
            },
        };
        let Some(from_after) = touched[0].1.checked_sub(t.amount) else {
            return fail(FailReason::InsufficientFunds);
        };
        touched[0].1 = from_after;
        let Some(to_after) = touched[to].1.checked_add(t.amount) else {
            return fail(FailReason::Overflow);
        };
        touched[to].1 = to_after;
    }
    let balance = touched[0].1;
    for (i, b) in touched {
        let slot = &mut o.accounts[i];
        if let Some(a) = &mut slot.record {
            a.balance = b;
            slot.dirty = true;
        }
    }
    Ok(Receipt::Applied { balance })
}

/// Executes one batch against `view` at `seq`, given the state digest and head block
/// hash before it.
pub fn execute_batch<V: StateView>(
    view: &V,
    state_digest: Digest,
    head: Digest,
    seq: u64,
    batch_digest: Digest,
    requests: &[ExecRequest<'_>],
) -> Result<Transition, ExecError> {
    let mut o = Overlay {
        view,
        index: HashMap::with_capacity(2 * requests.len()),
        accounts: Vec::with_capacity(2 * requests.len()),
        other: BTreeMap::new(),
    };
    let mut receipts: Vec<((PublicKey, u64), StoredReceipt)> = Vec::with_capacity(requests.len());
    let mut replies = Vec::with_capacity(requests.len());
    let mut entries = Vec::with_capacity(requests.len());
    for r in requests {
        let me = o.slot(r.client.as_bytes())?;
        let mut window = o.take_window(me, r.client)?;
        let (entry, reply) = if r.request_id == 0 || window.has_executed(r.request_id) {
            o.put_window(me, r.client, window, false)?;
            // the original receipt: from this batch, or from the store; it answers only
            // the request it is the outcome of. (The block's entry is a duplicate either
            // way: receipts are not part of the replicated state, and a replica that
            // installed a snapshot may lack this one.)
            let here = receipts
                .iter()
                .rev()
                .find(|((c, id), _)| c == r.client && *id == r.request_id)
                .map(|(_, s)| s.clone());
            let original = match here {
                Some(x) => Some(x),
                None => view.receipt(r.client, r.request_id)?,
            };
            let reply = match original {
                Some(s) if s.request == r.digest => s.receipt,
                Some(_) => Receipt::Failed {
                    reason: FailReason::ReusedId,
                },
                None => Receipt::Failed {
                    reason: FailReason::Duplicate,
                },
            };
            (Entry::Duplicate, reply)
        } else if r.request_id >= window.low.saturating_add(EXEC_WINDOW) {
            o.put_window(me, r.client, window, false)?;
            let receipt = Receipt::Failed {
                reason: FailReason::OutOfWindow,
            };
            (Entry::Refused(FailReason::OutOfWindow), receipt)
        } else {
            let receipt = apply_op(&mut o, me, r.op)?;
            window.mark(r.request_id);
            o.put_window(me, r.client, window, true)?;
            receipts.push((
                (*r.client, r.request_id),
                StoredReceipt {
                    height: seq,
                    request: r.digest,
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
    o.put_other(keys::CHAIN.to_vec(), encode(&chain))?;
    let changes = o.into_changes()?;

    let leaves: Vec<Digest> = requests
        .iter()
        .zip(&entries)
        .map(|(r, e)| Digest::of(&encode(&(r.client, r.request_id, e))))
        .collect();
    let receipts_root = pbft_crypto::merkle::root(&leaves);
    let changes_encoded = encode_changes(&changes);
    let block = Block {
        height: seq,
        prev: head,
        batch_digest,
        receipts_root,
        state_digest: state_digest_after(&state_digest, seq, &changes_encoded),
    };
    let block_hash = block.hash();
    Ok(Transition {
        changes,
        changes_encoded,
        receipts,
        applied: Applied {
            block,
            block_hash,
            replies,
            entries,
        },
    })
}

/// The postcard encoding of `changes`, written out directly: serde hands a `Vec<u8>` to
/// postcard one byte at a time, which for a batch's ~70 KB of changes costs about a
/// tenth of the batch's CPU (decision 0054). The bytes are exactly
/// `postcard::to_allocvec(changes)`'s (a LEB128 length before each sequence and byte
/// string, a 0 or 1 tag before each option); a test holds them to it.
pub fn encode_changes(changes: &Changes) -> Vec<u8> {
    fn varint(out: &mut Vec<u8>, mut n: usize) {
        while n >= 0x80 {
            out.push((n as u8) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
    }
    fn bytes(out: &mut Vec<u8>, b: &[u8]) {
        varint(out, b.len());
        out.extend_from_slice(b);
    }
    fn option(out: &mut Vec<u8>, v: &Option<Vec<u8>>) {
        match v {
            None => out.push(0),
            Some(b) => {
                out.push(1);
                bytes(out, b);
            }
        }
    }
    let size: usize = changes
        .iter()
        .map(|(k, (old, new))| {
            k.len() + old.as_ref().map_or(0, Vec::len) + new.as_ref().map_or(0, Vec::len) + 32
        })
        .sum();
    let mut out = Vec::with_capacity(size + 10);
    varint(&mut out, changes.len());
    for (k, (old, new)) in changes {
        bytes(&mut out, k);
        option(&mut out, old);
        option(&mut out, new);
    }
    out
}

/// Changed keys below which the digest update stays on the calling thread: spawning
/// a thread costs tens of microseconds, one element hash about half of one.
const PARALLEL_MIN_CHANGES: usize = 128;

/// The cores available to this process, asked once: the answer takes system calls
/// (the standard library reads the cgroup quota), too slow to ask per batch.
fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// One changed key, borrowed: the key, its value before and after.
type ChangeRef<'a> = (&'a [u8], &'a Change);

/// The LtHash difference that `changes` (keys with their values before and after)
/// make: each changed key's old element out, its new element in. Keys whose value is
/// unchanged contribute nothing.
///
/// The sum is commutative, so large change sets are split across the machine's
/// cores and the partial sums added; the result is the same however it is split.
pub fn changes_delta<'a>(changes: impl IntoIterator<Item = ChangeRef<'a>>) -> LtHash {
    let changed: Vec<ChangeRef<'a>> = changes
        .into_iter()
        .filter(|(_, (old, new))| old != new)
        .collect();
    let partial = |part: &[ChangeRef<'_>]| {
        let mut lt = LtHash::new();
        for (k, (old, new)) in part.iter().copied() {
            lt.update(k, old.as_deref(), new.as_deref());
        }
        lt
    };
    if changed.len() < PARALLEL_MIN_CHANGES {
        return partial(&changed);
    }
    let threads = cores();
    if threads < 2 {
        return partial(&changed);
    }
    let chunk = changed.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let mut parts = changed.chunks(chunk);
        let first = parts.next().unwrap_or_default();
        let handles: Vec<_> = parts.map(|p| scope.spawn(move || partial(p))).collect();
        let mut total = partial(first);
        for h in handles {
            match h.join() {
                Ok(lt) => total.add(&lt),
                // `partial` does not panic; if it ever did, re-raise it here
                Err(e) => std::panic::resume_unwind(e),
            }
        }
        total
    })
}

/// The net changes of several batches, by key ([`fold_changes`]). (A hash map with a
/// fast hash seeded per process, as are all the executor's maps keyed by state keys
/// or account keys: SipHash was a tenth of a batch's CPU, and a fixed hash would let
/// a client pick colliding keys.)
pub type NetChanges = HashMap<Vec<u8>, Change>;

/// Adds one batch's changes to `net`, the changes of the batches since some earlier
/// point: a key keeps its value from before the first of them and takes its value after
/// this one.
pub fn fold_changes(net: &mut NetChanges, batch: Changes) {
    for (k, (old, new)) in batch {
        match net.get_mut(&k) {
            Some(c) => c.1 = new,
            None => {
                net.insert(k, (old, new));
            }
        }
    }
}

/// The LtHash difference of net changes ([`fold_changes`]): how the LtHash of the
/// state moves across the batches they cover.
pub fn net_delta(net: &NetChanges) -> LtHash {
    changes_delta(net.iter().map(|(k, c)| (k.as_slice(), c)))
}

/// The genesis state entries for the given balances (chain at height 0).
pub fn genesis_entries(balances: &BTreeMap<PublicKey, u64>) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out: Vec<(Vec<u8>, Vec<u8>)> = balances
        .iter()
        .map(|(pk, b)| (keys::account(pk), Account::fresh_record(*b)))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// An operation padded with zeros (the scenario workload's `op_bytes`) decodes to
    /// the same transfers as the unpadded one, so it applies the same way.
    #[test]
    fn a_padded_operation_decodes_as_the_unpadded_one() {
        let to = pbft_crypto::Keypair::from_seed(&[7; 32])
            .expect("key")
            .public();
        let op = crate::types::Operation::transfer(to, 42);
        let plain = op.encode();
        for len in [0, plain.len(), plain.len() + 1, 4096] {
            let padded = op.encode_padded(len);
            assert_eq!(padded.len(), len.max(plain.len()));
            assert_eq!(&padded[..plain.len()], &plain[..]);
            let raw: RawOperation = postcard::from_bytes(&padded).expect("decodes");
            assert_eq!(raw.transfers.len(), 1);
            assert_eq!(
                (raw.transfers[0].to, raw.transfers[0].amount),
                (*to.as_bytes(), 42)
            );
        }
    }

    /// The hand-written encoding of changes is postcard's, byte for byte: lengths of
    /// one and several LEB128 bytes, absent and present values, no changes at all.
    #[test]
    fn encode_changes_is_postcard() {
        for n in [0usize, 1, 3, 200] {
            let changes: Changes = (0..n)
                .map(|i| {
                    let key = vec![i as u8; 1 + i % 40];
                    let old = (i % 3 != 0).then(|| vec![7u8; (i * 37) % 300]);
                    let new = (i % 4 != 1).then(|| vec![9u8; (i * 53) % 20_000]);
                    (key, (old, new))
                })
                .collect();
            assert_eq!(
                encode_changes(&changes),
                postcard::to_allocvec(&changes).unwrap(),
                "{n} changes"
            );
        }
    }

    /// The parallel digest update gives the same result as one element at a time,
    /// below and above the threshold, with insertions, updates, deletions and
    /// unchanged keys mixed in.
    #[test]
    fn changes_delta_matches_sequential() {
        for n in [0, 1, PARALLEL_MIN_CHANGES - 1, PARALLEL_MIN_CHANGES, 1000] {
            let mut changes = Changes::new();
            for i in 0..n as u64 {
                let key = i.to_le_bytes().to_vec();
                let old = (i % 3 != 0).then(|| (i * 7).to_le_bytes().to_vec());
                let new = match i % 5 {
                    0 => None,
                    1 => old.clone(),
                    _ => Some((i * 11).to_le_bytes().to_vec()),
                };
                changes.push((key, (old, new)));
            }
            let mut expected = LtHash::new();
            for (k, (old, new)) in &changes {
                if old != new {
                    expected.update(k, old.as_deref(), new.as_deref());
                }
            }
            let delta = changes_delta(changes.iter().map(|(k, c)| (k.as_slice(), c)));
            assert_eq!(delta, expected, "{n} changes");
        }
    }
}
