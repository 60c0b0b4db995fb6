//! A simple in-memory ledger for the simulator: accounts, atomic multi-transfer requests,
//! exactly-once receipts, and one hash-chained block per executed batch.
//!
//! Deterministic by construction: ordered maps, integer balances with checked
//! arithmetic, and receipts that depend only on the batch and the state.

use pbft_crypto::{Digest, PublicKey};
use pbft_protocol::{Batch, ExecutedRequest, ExecutionResult, RequestId, Seq};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One transfer inside a request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    /// Receiving account.
    pub to: PublicKey,
    /// Amount, in the ledger's smallest unit.
    pub amount: u64,
}

/// The operation a request carries: transfers from the signing client, applied atomically.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    /// The transfers, all or none.
    pub transfers: Vec<Transfer>,
}

impl Operation {
    /// Encodes the operation as request bytes.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }
}

/// The outcome of one request, identical on every honest replica.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Receipt {
    /// Applied; the sender's balance afterwards.
    Applied {
        /// Balance of the sender after the request.
        balance: u64,
    },
    /// Not applied; nothing changed.
    Failed {
        /// Why.
        reason: FailReason,
    },
}

/// Why a request failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailReason {
    /// The operation bytes do not decode.
    Malformed,
    /// No transfers, or a zero amount.
    ZeroAmount,
    /// The sender or a receiver has no account.
    UnknownAccount,
    /// The sender's balance does not cover the transfers.
    InsufficientFunds,
    /// A balance would overflow.
    Overflow,
}

impl Receipt {
    /// The receipt's canonical encoding (what replicas reply and clients compare).
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }
}

/// What a block records for one request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BlockEntry {
    /// First execution of the request.
    Executed(Receipt),
    /// The request had executed before: a no-op.
    Duplicate,
}

/// A block header in the hash chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    /// Height = sequence number.
    pub height: Seq,
    /// Hash of the previous block (zero at height 1).
    pub prev: Digest,
    /// Digest of the executed batch.
    pub batch_digest: Digest,
    /// Hash of the block's entries.
    pub receipts_root: Digest,
    /// State digest after the batch.
    pub state_digest: Digest,
}

impl Block {
    /// The block hash.
    pub fn hash(&self) -> Digest {
        Digest::of(&postcard::to_allocvec(self).unwrap_or_default())
    }
}

/// The replicated state: balances and receipts (receipts make exactly-once part of the
/// state, so a replica that installs a snapshot knows what already executed).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Balances by account.
    pub balances: BTreeMap<PublicKey, u64>,
    /// First-execution receipt of every request.
    pub receipts: BTreeMap<(PublicKey, RequestId), Receipt>,
    /// Height of the last block.
    pub height: Seq,
    /// Hash of the last block.
    pub head: Digest,
}

impl State {
    /// Digest of the whole state. (The simulator hashes everything; the RocksDB executor
    /// will keep an incremental digest.)
    pub fn digest(&self) -> Digest {
        Digest::of(&postcard::to_allocvec(self).unwrap_or_default())
    }
}

/// The in-memory ledger of one simulated replica.
#[derive(Clone, Debug, Default)]
pub struct Ledger {
    state: State,
    blocks: Vec<Block>,
    /// Snapshots kept at checkpoints, by sequence number.
    snapshots: BTreeMap<Seq, State>,
    /// How many times each request was applied (checked by the exactly-once invariant).
    applications: BTreeMap<(PublicKey, RequestId), u32>,
}

impl Ledger {
    /// A ledger at genesis with the given balances.
    pub fn genesis(balances: BTreeMap<PublicKey, u64>) -> Ledger {
        Ledger {
            state: State {
                balances,
                ..State::default()
            },
            ..Ledger::default()
        }
    }

    /// The current state.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// Height of the last executed block.
    pub fn height(&self) -> Seq {
        self.state.height
    }

    /// Hash of the last block.
    pub fn head(&self) -> Digest {
        self.state.head
    }

    /// Blocks executed locally (not those skipped by a state transfer).
    pub fn blocks(&self) -> &[Block] {
        &self.blocks
    }

    /// Applications per request since this ledger was created.
    pub fn applications(&self) -> &BTreeMap<(PublicKey, RequestId), u32> {
        &self.applications
    }

    fn apply(&mut self, client: &PublicKey, op: &[u8]) -> Receipt {
        let fail = |reason| Receipt::Failed { reason };
        let Ok(op) = postcard::from_bytes::<Operation>(op) else {
            return fail(FailReason::Malformed);
        };
        if op.transfers.is_empty() || op.transfers.iter().any(|t| t.amount == 0) {
            return fail(FailReason::ZeroAmount);
        }
        // work on a copy of the touched balances; commit only if all succeed
        let mut touched: BTreeMap<PublicKey, u64> = BTreeMap::new();
        let Some(&start) = self.state.balances.get(client) else {
            return fail(FailReason::UnknownAccount);
        };
        touched.insert(*client, start);
        for t in &op.transfers {
            let Some(&to_bal) = touched
                .get(&t.to)
                .or_else(|| self.state.balances.get(&t.to))
            else {
                return fail(FailReason::UnknownAccount);
            };
            touched.insert(t.to, to_bal);
            let from = touched[client];
            let Some(new_from) = from.checked_sub(t.amount) else {
                return fail(FailReason::InsufficientFunds);
            };
            touched.insert(*client, new_from);
            let to_now = touched[&t.to];
            let Some(new_to) = to_now.checked_add(t.amount) else {
                return fail(FailReason::Overflow);
            };
            touched.insert(t.to, new_to);
        }
        let balance = touched[client];
        self.state.balances.extend(touched);
        Receipt::Applied { balance }
    }

    /// Executes a committed batch at `seq` and returns the replies; `checkpoint` asks
    /// for the state digest (and keeps a snapshot).
    pub fn execute(
        &mut self,
        seq: Seq,
        digest: Digest,
        batch: &Batch,
        checkpoint: bool,
    ) -> ExecutionResult {
        assert_eq!(
            seq,
            self.state.height + 1,
            "ledger executes in sequence order"
        );
        let mut entries = Vec::with_capacity(batch.requests.len());
        let mut replies = Vec::with_capacity(batch.requests.len());
        for r in &batch.requests {
            let key = r.key();
            let (entry, receipt) = match self.state.receipts.get(&key) {
                Some(first) => (BlockEntry::Duplicate, first.clone()),
                None => {
                    let receipt = self.apply(&r.body.client, &r.body.op);
                    self.state.receipts.insert(key, receipt.clone());
                    *self.applications.entry(key).or_insert(0) += 1;
                    (BlockEntry::Executed(receipt.clone()), receipt)
                }
            };
            entries.push(entry);
            replies.push(ExecutedRequest {
                client: key.0,
                request_id: key.1,
                result: receipt.encode(),
            });
        }
        let receipts_root = Digest::of(&postcard::to_allocvec(&entries).unwrap_or_default());
        self.state.height = seq;
        let state_digest = self.state_digest_for_block();
        let block = Block {
            height: seq,
            prev: self.state.head,
            batch_digest: digest,
            receipts_root,
            state_digest,
        };
        self.state.head = block.hash();
        self.blocks.push(block);
        let state_digest = checkpoint.then(|| {
            let d = self.state.digest();
            self.snapshots.insert(seq, self.state.clone());
            d
        });
        ExecutionResult {
            replies,
            state_digest,
        }
    }

    fn state_digest_for_block(&self) -> Digest {
        Digest::of(
            &postcard::to_allocvec(&(&self.state.balances, &self.state.receipts))
                .unwrap_or_default(),
        )
    }

    /// A checkpoint became stable: drop older snapshots.
    pub fn stable(&mut self, seq: Seq) {
        self.snapshots = self.snapshots.split_off(&seq);
    }

    /// The encoded snapshot of checkpoint `seq`, if kept.
    pub fn export(&self, seq: Seq) -> Option<Vec<u8>> {
        self.snapshots
            .get(&seq)
            .map(|s| postcard::to_allocvec(s).unwrap_or_default())
    }

    /// Decodes a snapshot and returns its digest, without installing it.
    pub fn inspect(bytes: &[u8]) -> Option<(State, Digest)> {
        let s: State = postcard::from_bytes(bytes).ok()?;
        let d = s.digest();
        Some((s, d))
    }

    /// Replaces the state by a verified snapshot.
    pub fn install(&mut self, state: State) {
        let seq = state.height;
        self.snapshots.insert(seq, state.clone());
        self.state = state;
    }
}
