//! Ledger types shared by both executors: operations, receipts, blocks, keys.

use pbft_crypto::{Digest, PublicKey};
use serde::{Deserialize, Serialize};

/// Most transfers in one request.
pub const MAX_TRANSFERS: usize = 16;

/// How far above a client's oldest unexecuted request id a request may be. Bounds the
/// per-client record of executed ids.
pub const EXEC_WINDOW: u64 = 1024;

/// One transfer inside a request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    /// Receiving account.
    pub to: PublicKey,
    /// Amount in the ledger's smallest unit; zero is refused.
    pub amount: u64,
}

/// A request's operation: transfers from the signing client, applied all or none.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    /// The transfers.
    pub transfers: Vec<Transfer>,
}

impl Operation {
    /// A single transfer.
    pub fn transfer(to: PublicKey, amount: u64) -> Operation {
        Operation {
            transfers: vec![Transfer { to, amount }],
        }
    }

    /// The bytes a request carries.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }
}

/// Why a request failed. Nothing of a failed request is applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailReason {
    /// The operation bytes do not decode.
    Malformed,
    /// No transfers, more than [`MAX_TRANSFERS`], or a zero amount.
    BadAmount,
    /// The sender or a receiver has no account.
    UnknownAccount,
    /// The sender's balance does not cover the transfers.
    InsufficientFunds,
    /// A balance would overflow `u64`.
    Overflow,
    /// The request id is too far above the client's oldest unexecuted one.
    OutOfWindow,
    /// The request executed before and its original receipt is no longer held here.
    Duplicate,
}

impl std::fmt::Display for FailReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FailReason::Malformed => "malformed operation",
            FailReason::BadAmount => "no transfers, too many, or a zero amount",
            FailReason::UnknownAccount => "unknown account",
            FailReason::InsufficientFunds => "insufficient funds",
            FailReason::Overflow => "balance overflow",
            FailReason::OutOfWindow => "request id outside the client's window",
            FailReason::Duplicate => "duplicate request",
        })
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

impl Receipt {
    /// The canonical encoding replicas send to clients.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Decodes a receipt from a reply.
    pub fn decode(bytes: &[u8]) -> Option<Receipt> {
        postcard::from_bytes(bytes).ok()
    }
}

/// What a block records for one request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Entry {
    /// First execution.
    Executed(Receipt),
    /// Executed before: a deterministic no-op.
    Duplicate,
    /// Refused without being recorded (outside the client's window).
    Refused(FailReason),
}

/// A receipt as stored, with the height of the block that executed it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredReceipt {
    /// Block height (= sequence number).
    pub height: u64,
    /// The receipt.
    pub receipt: Receipt,
}

/// A block header: one per executed batch, null batches included.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    /// Height = the batch's sequence number.
    pub height: u64,
    /// Hash of the previous block (zero for the first).
    pub prev: Digest,
    /// Digest of the executed batch.
    pub batch_digest: Digest,
    /// Merkle root of the block's entries.
    pub receipts_root: Digest,
    /// State digest after the batch (LtHash of accounts, client windows, chain).
    pub state_digest: Digest,
}

impl Block {
    /// The block hash.
    pub fn hash(&self) -> Digest {
        Digest::of_parts(&[
            b"pbft/block/v1",
            &postcard::to_allocvec(self).unwrap_or_default(),
        ])
    }
}

/// One request handed to the executor (borrowed from the committed batch).
#[derive(Clone, Copy, Debug)]
pub struct ExecRequest<'a> {
    /// The signing client (its account).
    pub client: &'a PublicKey,
    /// The client's request id.
    pub request_id: u64,
    /// The encoded [`Operation`].
    pub op: &'a [u8],
}

/// The result of applying one batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    /// The new block.
    pub block: Block,
    /// Its hash (the new head).
    pub block_hash: Digest,
    /// Per request, in order: the encoded receipt to reply with.
    pub replies: Vec<Vec<u8>>,
    /// Per request: what the block records.
    pub entries: Vec<Entry>,
}

/// The ledger's position: height, head hash and state digest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    /// Last executed sequence number.
    pub height: u64,
    /// Hash of the last block (zero at genesis).
    pub hash: Digest,
    /// State digest after it.
    pub state_digest: Digest,
}

impl Head {
    /// The digest replicas sign in checkpoint messages: the state and the chain head,
    /// so a stable checkpoint also fixes every block and receipt before it.
    pub fn checkpoint_digest(&self) -> Digest {
        Digest::of_parts(&[
            b"pbft/checkpoint/v1",
            &self.height.to_le_bytes(),
            self.state_digest.as_bytes(),
            self.hash.as_bytes(),
        ])
    }
}

/// The per-client record that makes execution exactly-once: every request id below
/// `low` executed, and the executed ids at or above it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientWindow {
    /// Every id below this executed (ids start at 1).
    pub low: u64,
    /// Executed ids at or above `low`, ascending.
    pub executed: Vec<u64>,
}

impl ClientWindow {
    /// A client that executed nothing yet.
    pub fn fresh() -> ClientWindow {
        ClientWindow {
            low: 1,
            executed: Vec::new(),
        }
    }

    /// True if `rid` executed.
    pub fn has_executed(&self, rid: u64) -> bool {
        rid < self.low || self.executed.binary_search(&rid).is_ok()
    }

    /// One more than the highest id executed: where a restarted client continues.
    pub fn next_request_id(&self) -> u64 {
        self.executed.last().map_or(self.low, |&top| top + 1)
    }

    /// Records `rid` as executed.
    pub fn mark(&mut self, rid: u64) {
        if let Err(pos) = self.executed.binary_search(&rid) {
            self.executed.insert(pos, rid);
        }
        while self.executed.first() == Some(&self.low) {
            self.executed.remove(0);
            self.low += 1;
        }
    }
}

/// Keys of the state covered by the state digest.
pub mod keys {
    use pbft_crypto::PublicKey;

    /// Prefix of account keys.
    pub const ACCOUNT: u8 = b'a';
    /// Prefix of client-window keys.
    pub const CLIENT: u8 = b'c';
    /// The chain position key.
    pub const CHAIN: &[u8] = b"m/chain";

    /// The key of an account's balance.
    pub fn account(pk: &PublicKey) -> Vec<u8> {
        account_raw(pk.as_bytes())
    }

    /// The key of an account's balance, from the key's 32 bytes.
    pub fn account_raw(pk: &[u8; 32]) -> Vec<u8> {
        let mut k = Vec::with_capacity(33);
        k.push(ACCOUNT);
        k.extend_from_slice(pk);
        k
    }

    /// The key of a client's exactly-once window.
    pub fn client(pk: &PublicKey) -> Vec<u8> {
        let mut k = Vec::with_capacity(33);
        k.push(CLIENT);
        k.extend_from_slice(pk.as_bytes());
        k
    }
}

/// The chain position stored in the state: height and the hash of the block at it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainPos {
    /// Height.
    pub height: u64,
    /// Hash of the block at `height - 1` (the previous block of the block at `height`).
    pub prev: Digest,
}

/// Merkle root of a list of leaves (RFC 6962 style: 0x00 prefix for leaves, 0x01 for
/// nodes; the empty list has its own root).
pub fn merkle_root(leaves: &[Digest]) -> Digest {
    if leaves.is_empty() {
        return Digest::of(b"pbft/merkle/empty");
    }
    let mut level: Vec<Digest> = leaves
        .iter()
        .map(|l| Digest::of_parts(&[&[0u8], l.as_bytes()]))
        .collect();
    while level.len() > 1 {
        level = level
            .chunks(2)
            .map(|pair| match pair {
                [a, b] => Digest::of_parts(&[&[1u8], a.as_bytes(), b.as_bytes()]),
                [a] => *a,
                _ => Digest::ZERO,
            })
            .collect();
    }
    level[0]
}
