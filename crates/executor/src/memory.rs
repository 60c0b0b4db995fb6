//! The in-memory executor, for the simulator. It runs the same transition as the
//! RocksDB executor and must produce identical receipts, blocks and digests.

use crate::error::ExecError;
use crate::lthash::LtHash;
use crate::snapshot::{make_chunks, verify_chunks};
use crate::transition::{changes_delta, execute_batch, genesis_entries, Changes, StateView};
use crate::types::{
    checkpoint_digest, keys, Applied, Block, ClientWindow, ExecRequest, Head, StoredReceipt,
};
use crate::Executor;
use pbft_crypto::{Digest, PublicKey};
use std::collections::{BTreeMap, HashMap};

/// The state entries, by key. A hash map: the transition only looks keys up, and the
/// few callers that need key order (snapshots, [`MemoryExecutor::entries`]) sort.
type State = foldhash::HashMap<Vec<u8>, Vec<u8>>;

#[derive(Clone, Debug)]
struct Snap {
    state: State,
    lthash: LtHash,
    head: Head,
}

/// A ledger held in memory.
#[derive(Clone, Debug)]
pub struct MemoryExecutor {
    state: State,
    receipts: HashMap<(PublicKey, u64), StoredReceipt>,
    blocks: BTreeMap<u64, Block>,
    /// The LtHash of the state at the last checkpoint (or genesis, or import).
    lthash: LtHash,
    /// The keys changed since then, with their values then (`None` = absent).
    pending: foldhash::HashMap<Vec<u8>, Option<Vec<u8>>>,
    head: Head,
    snapshots: BTreeMap<u64, Snap>,
    stable: u64,
}

/// The entries of a state, in key order.
fn sorted(state: &State) -> Vec<(&Vec<u8>, &Vec<u8>)> {
    let mut entries: Vec<_> = state.iter().collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
    entries
}

struct View<'a>(&'a MemoryExecutor);

impl StateView for View<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ExecError> {
        Ok(self.0.state.get(key).cloned())
    }
    fn receipt(&self, client: &PublicKey, rid: u64) -> Result<Option<StoredReceipt>, ExecError> {
        Ok(self.0.receipts.get(&(*client, rid)).cloned())
    }
}

impl MemoryExecutor {
    /// A ledger at genesis with these balances.
    pub fn genesis(balances: &BTreeMap<PublicKey, u64>) -> MemoryExecutor {
        let state: State = genesis_entries(balances).into_iter().collect();
        let mut lthash = LtHash::new();
        for (k, v) in &state {
            lthash.insert(k, v);
        }
        let head = Head {
            height: 0,
            hash: Digest::ZERO,
            state_digest: lthash.digest(),
        };
        let snap = Snap {
            state: state.clone(),
            lthash: lthash.clone(),
            head,
        };
        MemoryExecutor {
            state,
            receipts: HashMap::new(),
            blocks: BTreeMap::new(),
            lthash,
            pending: foldhash::HashMap::default(),
            head,
            snapshots: BTreeMap::from([(0, snap)]),
            stable: 0,
        }
    }

    /// Every state entry, in key order (for checks and tests).
    pub fn entries(&self) -> impl Iterator<Item = (&Vec<u8>, &Vec<u8>)> {
        sorted(&self.state).into_iter()
    }

    /// The LtHash of the current state: the one of the last checkpoint, moved by the
    /// keys changed since.
    pub fn lthash(&self) -> LtHash {
        let mut lt = self.lthash.clone();
        let pending = self.pending_changes();
        lt.add(&changes_delta(
            pending.iter().map(|(k, c)| (k.as_slice(), c)),
        ));
        lt
    }

    /// The keys changed since the last checkpoint: their values then and now.
    fn pending_changes(&self) -> Changes {
        self.pending
            .iter()
            .map(|(k, old)| (k.clone(), (old.clone(), self.state.get(k).cloned())))
            .collect()
    }
}

impl Executor for MemoryExecutor {
    fn apply(
        &mut self,
        seq: u64,
        batch_digest: Digest,
        requests: &[ExecRequest<'_>],
    ) -> Result<Applied, ExecError> {
        if seq != self.head.height + 1 {
            return Err(ExecError::OutOfOrder {
                applied: self.head.height,
                got: seq,
            });
        }
        let t = execute_batch(
            &View(self),
            self.head.state_digest,
            self.head.hash,
            seq,
            batch_digest,
            requests,
        )?;
        for (k, (old, new)) in t.changes {
            if !self.pending.contains_key(&k) {
                self.pending.insert(k.clone(), old);
            }
            match new {
                Some(v) => self.state.insert(k, v),
                None => self.state.remove(&k),
            };
        }
        for (k, r) in t.receipts {
            self.receipts.insert(k, r);
        }
        self.blocks.insert(seq, t.applied.block.clone());
        self.head = Head {
            height: seq,
            hash: t.applied.block_hash,
            state_digest: t.applied.block.state_digest,
        };
        Ok(t.applied)
    }

    fn head(&self) -> Head {
        self.head
    }

    fn checkpoint(&mut self) -> Result<Digest, ExecError> {
        self.lthash = self.lthash();
        self.pending.clear();
        let snap = Snap {
            state: self.state.clone(),
            lthash: self.lthash.clone(),
            head: self.head,
        };
        self.snapshots.insert(self.head.height, snap);
        Ok(checkpoint_digest(
            self.head.height,
            &self.head.hash,
            &self.lthash.digest(),
        ))
    }

    fn stable(&mut self, seq: u64) -> Result<(), ExecError> {
        if !self.snapshots.contains_key(&seq) {
            return Err(ExecError::NoSnapshot(seq));
        }
        self.snapshots = self.snapshots.split_off(&seq);
        self.stable = self.stable.max(seq);
        Ok(())
    }

    fn stable_seq(&self) -> u64 {
        self.stable
    }

    fn rollback(&mut self) -> Result<u64, ExecError> {
        let seq = self.stable;
        let snap = self
            .snapshots
            .get(&seq)
            .cloned()
            .ok_or(ExecError::NoSnapshot(seq))?;
        self.state = snap.state;
        self.lthash = snap.lthash;
        self.pending.clear();
        self.head = snap.head;
        self.blocks = self
            .blocks
            .split_off(&0)
            .into_iter()
            .filter(|(h, _)| *h <= seq)
            .collect();
        self.receipts.retain(|_, r| r.height <= seq);
        self.snapshots = self
            .snapshots
            .split_off(&0)
            .into_iter()
            .filter(|(s, _)| *s <= seq)
            .collect();
        Ok(seq)
    }

    fn export(&self, seq: u64, max_chunk: usize) -> Result<Vec<Vec<u8>>, ExecError> {
        let snap = self.snapshots.get(&seq).ok_or(ExecError::NoSnapshot(seq))?;
        let head_block = if seq == 0 {
            None
        } else {
            self.blocks.get(&seq).cloned()
        };
        if seq > 0 && head_block.is_none() {
            return Err(ExecError::NoSnapshot(seq));
        }
        let entries = sorted(&snap.state)
            .into_iter()
            .map(|(k, v)| (k.clone(), v.clone()));
        Ok(make_chunks(seq, head_block, entries, max_chunk))
    }

    fn import(
        &mut self,
        seq: u64,
        expected: Digest,
        chunks: &[Vec<u8>],
    ) -> Result<Head, ExecError> {
        let v = verify_chunks(seq, expected, chunks)?;
        self.state = v.entries.into_iter().collect();
        self.lthash = v.lthash;
        self.pending.clear();
        self.head = v.head;
        // keep only the local blocks that chain up to the imported head block, so the
        // stored blocks stay one unbroken hash chain (a gap or a block of another
        // history below `seq` is dropped, with everything under it)
        let mut kept = BTreeMap::new();
        if let Some(b) = v.head_block {
            let mut prev = b.prev;
            let mut h = b.height;
            while h > 1 {
                h -= 1;
                match self.blocks.remove(&h) {
                    Some(old) if old.hash() == prev => {
                        prev = old.prev;
                        kept.insert(h, old);
                    }
                    _ => break,
                }
            }
            kept.insert(seq, b);
        }
        self.blocks = kept;
        self.receipts.retain(|_, r| r.height <= seq);
        let snap = Snap {
            state: self.state.clone(),
            lthash: self.lthash.clone(),
            head: self.head,
        };
        self.snapshots = BTreeMap::from([(seq, snap)]);
        self.stable = seq;
        Ok(self.head)
    }

    fn balance(&self, account: &PublicKey) -> Result<Option<u64>, ExecError> {
        self.state
            .get(&keys::account(account))
            .map(|v| crate::transition::decode_balance(v))
            .transpose()
    }

    fn client_window(&self, client: &PublicKey) -> Result<ClientWindow, ExecError> {
        if let Some(v) = self.state.get(&keys::account(client)) {
            return crate::transition::decode_account(v).map(|a| a.window);
        }
        match self.state.get(&keys::client(client)) {
            Some(v) => postcard::from_bytes(v)
                .map_err(|e| ExecError::Corrupt(format!("client window: {e}"))),
            None => Ok(ClientWindow::fresh()),
        }
    }

    fn receipt(
        &self,
        client: &PublicKey,
        request_id: u64,
    ) -> Result<Option<StoredReceipt>, ExecError> {
        Ok(self.receipts.get(&(*client, request_id)).cloned())
    }

    fn block(&self, height: u64) -> Result<Option<Block>, ExecError> {
        Ok(self.blocks.get(&height).cloned())
    }
}
