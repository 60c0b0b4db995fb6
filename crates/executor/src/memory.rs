//! The in-memory executor, for the simulator. It runs the same transition as the
//! RocksDB executor and must produce identical receipts, blocks and digests.

use crate::error::ExecError;
use crate::lthash::LtHash;
use crate::snapshot::{Checked, ChunkPlanner, ChunkVerifier, SnapshotChunk};
use crate::transition::{changes_delta, execute_batch, genesis_entries, Changes, StateView};
use crate::types::{
    checkpoint_digest, keys, Applied, Block, ClientWindow, ExecRequest, Head, StoredReceipt,
};
use crate::{Executor, SnapshotSource};
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
    /// A snapshot being imported, chunk by chunk.
    staging: Option<Staging>,
}

/// A snapshot being imported: its verifier and the entries staged so far.
#[derive(Clone, Debug)]
struct Staging {
    verifier: ChunkVerifier,
    state: State,
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

/// A snapshot of the in-memory executor, read chunk by chunk: the checkpoint's entries
/// in key order (a copy: the simulator's state is in memory anyway) and where each
/// chunk starts.
struct MemorySource {
    seq: u64,
    head_block: Option<Block>,
    entries: Vec<(Vec<u8>, Vec<u8>)>,
    /// The index of the first entry of each chunk.
    starts: Vec<usize>,
}

impl SnapshotSource for MemorySource {
    fn seq(&self) -> u64 {
        self.seq
    }

    fn total(&self) -> u32 {
        self.starts.len() as u32
    }

    fn chunk(&mut self, index: u32) -> Result<Vec<u8>, ExecError> {
        let i = index as usize;
        let from = *self.starts.get(i).ok_or(ExecError::NoSnapshot(self.seq))?;
        let to = self
            .starts
            .get(i + 1)
            .copied()
            .unwrap_or(self.entries.len());
        Ok(SnapshotChunk {
            seq: self.seq,
            index,
            total: self.total(),
            head: if i == 0 {
                self.head_block.clone()
            } else {
                None
            },
            entries: self.entries[from..to].to_vec(),
        }
        .encode())
    }

    fn held_bytes(&self) -> usize {
        self.starts.capacity() * std::mem::size_of::<usize>()
    }
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
            staging: None,
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

    fn export_source(
        &self,
        seq: u64,
        max_chunk: usize,
    ) -> Result<Box<dyn SnapshotSource>, ExecError> {
        let snap = self.snapshots.get(&seq).ok_or(ExecError::NoSnapshot(seq))?;
        let head_block = if seq == 0 {
            None
        } else {
            Some(
                self.blocks
                    .get(&seq)
                    .cloned()
                    .ok_or(ExecError::NoSnapshot(seq))?,
            )
        };
        let entries: Vec<(Vec<u8>, Vec<u8>)> = sorted(&snap.state)
            .into_iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut planner = ChunkPlanner::new(max_chunk);
        for (k, v) in &entries {
            planner.push(k, v.len())?;
        }
        let mut starts = vec![0];
        for key in planner.finish() {
            let at = entries.partition_point(|(k, _)| *k < key);
            starts.push(at);
        }
        Ok(Box::new(MemorySource {
            seq,
            head_block,
            entries,
            starts,
        }))
    }

    fn import_begin(&mut self, seq: u64) -> Result<(), ExecError> {
        self.staging = Some(Staging {
            verifier: ChunkVerifier::new(seq),
            state: State::default(),
            checked: None,
        });
        Ok(())
    }

    fn import_chunk(&mut self, seq: u64, chunk: &[u8]) -> Result<(), ExecError> {
        let st = staging(&mut self.staging, seq)?;
        if st.checked.is_some() {
            return Err(ExecError::BadSnapshot("a chunk after the last".into()));
        }
        let c = st.verifier.add(chunk)?;
        st.state.extend(c.entries);
        Ok(())
    }

    fn import_finish(&mut self, seq: u64) -> Result<Digest, ExecError> {
        let st = staging(&mut self.staging, seq)?;
        let checked = st.verifier.finish()?;
        let digest = checked.checkpoint_digest;
        st.checked = Some(checked);
        Ok(digest)
    }

    fn import_commit(&mut self, seq: u64, expected: Digest) -> Result<Head, ExecError> {
        let st = staging(&mut self.staging, seq)?;
        match &st.checked {
            Some(c) if c.checkpoint_digest == expected => {}
            Some(_) => {
                return Err(ExecError::BadSnapshot(
                    "its digest does not match the stable checkpoint".into(),
                ))
            }
            None => return Err(ExecError::BadSnapshot("it is not complete".into())),
        }
        let Some(Staging {
            state,
            checked: Some(v),
            ..
        }) = self.staging.take()
        else {
            return Err(ExecError::BadSnapshot("it is not complete".into()));
        };
        self.state = state;
        self.lthash = v.lthash;
        self.pending.clear();
        self.head = v.head;
        // The stored blocks are one unbroken chain (apply, rollback and import keep
        // them so): if the block below the snapshot's head is its parent, every stored
        // block below is of the snapshot's history and stays; otherwise none does.
        // Blocks above the snapshot are of a history it replaces.
        let below = seq.saturating_sub(1);
        let linked = v.head_block.as_ref().is_some_and(|b| {
            self.blocks
                .get(&below)
                .is_some_and(|old| old.hash() == b.prev)
        });
        if linked {
            self.blocks.split_off(&seq);
        } else {
            self.blocks.clear();
        }
        if let Some(b) = v.head_block {
            self.blocks.insert(seq, b);
        }
        // receipts stay where they are (decision 0061), but those of heights above the
        // snapshot are of a history it replaces
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

    fn import_abort(&mut self) {
        self.staging = None;
    }

    fn import_held_bytes(&self) -> usize {
        // the staged entries are the state itself, which this executor holds in memory
        // anyway; what staging adds is the verifier
        self.staging
            .as_ref()
            .map_or(0, |st| st.verifier.held_bytes())
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
