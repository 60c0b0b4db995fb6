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

    /// The bytes a request carries, padded with zeros to `len` bytes (no padding if the
    /// encoding is longer). The executor decodes an operation from its first bytes and
    /// ignores the rest, so a padded operation applies exactly as the unpadded one;
    /// workloads pad to run the cluster at its largest messages.
    pub fn encode_padded(&self, len: usize) -> Vec<u8> {
        let mut bytes = self.encode();
        if bytes.len() < len {
            bytes.resize(len, 0);
        }
        bytes
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
    /// The request id executed with another operation: this request is refused, and the
    /// receipt of the operation that ran under the id is not this request's to have.
    ReusedId,
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
            FailReason::ReusedId => "request id reused with a different operation",
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

/// A receipt as stored, with the height of the block that executed it and the digest
/// of the request it is the outcome of.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredReceipt {
    /// Block height (= sequence number).
    pub height: u64,
    /// The digest of the request that executed ([`ExecRequest::digest`]).
    pub request: Digest,
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
    /// State digest after the batch: [`state_digest_after`] of the previous block's
    /// state digest and this batch's exact state changes. It chains back to the
    /// genesis state's LtHash, so it fixes the whole state after the batch; the full
    /// state's LtHash itself is computed at checkpoints ([`checkpoint_digest`]).
    pub state_digest: Digest,
}

/// The state digest after the batch at `height`: the state digest before it, chained
/// with `changes`, the postcard encoding of the batch's state changes (every changed
/// key in increasing order, its value before and after; see
/// [`crate::transition::Changes`]). Equal digests at a height mean equal states, for
/// replicas that started from the same genesis.
pub fn state_digest_after(prev: &Digest, height: u64, changes: &[u8]) -> Digest {
    Digest::of_parts(&[
        b"pbft/state/v2",
        prev.as_bytes(),
        &height.to_le_bytes(),
        changes,
    ])
}

/// The digest replicas sign in checkpoint messages for the state at `height`: the
/// LtHash of the full state and the hash of the block at `height` (zero at genesis).
/// The block chain fixes every block and receipt before it, and the LtHash fixes the
/// state itself, so a snapshot can be checked against it from its entries alone.
pub fn checkpoint_digest(height: u64, block_hash: &Digest, lthash: &Digest) -> Digest {
    Digest::of_parts(&[
        b"pbft/checkpoint/v2",
        &height.to_le_bytes(),
        lthash.as_bytes(),
        block_hash.as_bytes(),
    ])
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
    /// The digest of the signed request (the caller's; the protocol's request digest).
    /// The executor stores it with the receipt and compares it when the request id
    /// comes again: the same digest is a retransmission, another is an id reused for
    /// another operation.
    pub digest: Digest,
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
    /// State digest after it: the last block's, or at genesis the digest of the
    /// genesis state's LtHash.
    pub state_digest: Digest,
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

/// An account's state record: its balance and, since every client is an account, the
/// client's exactly-once window. One record per account means a transfer changes two
/// state keys (sender and receiver), not three.
///
/// Encoding ([`Account::encode`]), deterministic and compact:
///
/// ```text
/// balance u64 LE || window.low u64 LE || for each executed id, ascending: (id - low) u16 LE
/// ```
///
/// An executed id is always above `low` and below `low + EXEC_WINDOW` (ids at or beyond
/// that are refused, and `low` only grows), so its offset fits in 16 bits. An account
/// whose client executes requests in order has an empty list: 16 bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    /// Balance in the ledger's smallest unit.
    pub balance: u64,
    /// The account's exactly-once window as a client.
    pub window: ClientWindow,
}

impl Account {
    /// Size of a record whose window lists no executed ids.
    pub const MIN_LEN: usize = 16;

    /// A new account with this balance that executed nothing yet.
    pub fn fresh(balance: u64) -> Account {
        Account {
            balance,
            window: ClientWindow::fresh(),
        }
    }

    /// The record's bytes, or `None` if the window breaks its invariants (`low` is 0,
    /// or an executed id is not above `low`, not below `low + EXEC_WINDOW`, or not
    /// strictly ascending): such a window has no encoding.
    pub fn encode(&self) -> Option<Vec<u8>> {
        let w = &self.window;
        if w.low == 0 {
            return None;
        }
        let mut out = Vec::with_capacity(Self::MIN_LEN + 2 * w.executed.len());
        out.extend_from_slice(&self.balance.to_le_bytes());
        out.extend_from_slice(&w.low.to_le_bytes());
        let mut prev = 0u64;
        for &id in &w.executed {
            let off = id.checked_sub(w.low)?;
            if off <= prev || off >= EXEC_WINDOW {
                return None;
            }
            prev = off;
            out.extend_from_slice(&u16::try_from(off).ok()?.to_le_bytes());
        }
        Some(out)
    }

    /// The record of a new account with this balance ([`Account::fresh`], encoded).
    pub fn fresh_record(balance: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::MIN_LEN);
        out.extend_from_slice(&balance.to_le_bytes());
        out.extend_from_slice(&ClientWindow::fresh().low.to_le_bytes());
        out
    }

    /// Decodes a record; `None` unless `bytes` is exactly the encoding of a valid
    /// record (so every record has one encoding).
    pub fn decode(bytes: &[u8]) -> Option<Account> {
        if bytes.len() < Self::MIN_LEN || !bytes.len().is_multiple_of(2) {
            return None;
        }
        let balance = u64::from_le_bytes(bytes[..8].try_into().ok()?);
        let low = u64::from_le_bytes(bytes[8..16].try_into().ok()?);
        if low == 0 {
            return None;
        }
        let mut executed = Vec::with_capacity((bytes.len() - Self::MIN_LEN) / 2);
        let mut prev = 0u64;
        for pair in bytes[Self::MIN_LEN..].chunks_exact(2) {
            let off = u64::from(u16::from_le_bytes([pair[0], pair[1]]));
            if off <= prev || off >= EXEC_WINDOW {
                return None;
            }
            prev = off;
            executed.push(low.checked_add(off)?);
        }
        Some(Account {
            balance,
            window: ClientWindow { low, executed },
        })
    }

    /// The balance of an encoded record, without decoding its window; `None` if the
    /// bytes are too short to be a record.
    pub fn balance_of(bytes: &[u8]) -> Option<u64> {
        if bytes.len() < Self::MIN_LEN {
            return None;
        }
        Some(u64::from_le_bytes(bytes[..8].try_into().ok()?))
    }
}

/// Keys of the state covered by the state digest.
pub mod keys {
    use pbft_crypto::PublicKey;

    /// Prefix of account keys.
    pub const ACCOUNT: u8 = b'a';
    /// Prefix of the window keys of clients that have no account (an account holds its
    /// client's window in its record, see [`crate::types::Account`]).
    pub const CLIENT: u8 = b'c';
    /// The chain position key.
    pub const CHAIN: &[u8] = b"m/chain";

    /// The key of an account's record.
    pub fn account(pk: &PublicKey) -> Vec<u8> {
        account_raw(pk.as_bytes())
    }

    /// The key of an account's record, from the key's 32 bytes.
    pub fn account_raw(pk: &[u8; 32]) -> Vec<u8> {
        let mut k = Vec::with_capacity(33);
        k.push(ACCOUNT);
        k.extend_from_slice(pk);
        k
    }

    /// The key of the exactly-once window of a client that has no account.
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The record layout, byte for byte: balance, `low`, then the executed ids as
    /// 16-bit offsets from `low`.
    #[test]
    fn account_record_layout() {
        let a = Account {
            balance: 0x0102_0304_0506_0708,
            window: ClientWindow {
                low: 2,
                executed: vec![3, 5, 2 + EXEC_WINDOW - 1],
            },
        };
        let bytes = a.encode().expect("valid");
        let mut want = vec![8, 7, 6, 5, 4, 3, 2, 1, 2, 0, 0, 0, 0, 0, 0, 0, 1, 0, 3, 0];
        want.extend_from_slice(&((EXEC_WINDOW - 1) as u16).to_le_bytes());
        assert_eq!(bytes, want);
        assert_eq!(Account::decode(&bytes), Some(a));
        assert_eq!(Account::balance_of(&bytes), Some(0x0102_0304_0506_0708));

        let fresh = Account::fresh(500);
        assert_eq!(fresh.encode(), Some(Account::fresh_record(500)));
        assert_eq!(
            Account::fresh_record(500),
            [244, 1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]
        );
    }

    /// The window kept in the record behaves as before: marking ids out of order moves
    /// `low` over every contiguous executed id, and the record round-trips each step.
    #[test]
    fn account_record_follows_the_window() {
        let mut a = Account::fresh(7);
        for rid in [3, 1, 5, 2, 4, 9] {
            a.window.mark(rid);
            let bytes = a.encode().expect("valid");
            assert_eq!(bytes.len(), Account::MIN_LEN + 2 * a.window.executed.len());
            assert_eq!(Account::decode(&bytes).as_ref(), Some(&a));
        }
        assert_eq!(a.window.low, 6);
        assert_eq!(a.window.executed, vec![9]);
        assert_eq!(a.window.next_request_id(), 10);
    }

    /// Every record has exactly one encoding: anything else is refused.
    #[test]
    fn account_record_rejects_non_canonical_bytes() {
        let good = Account {
            balance: 1,
            window: ClientWindow {
                low: 4,
                executed: vec![6, 8],
            },
        }
        .encode()
        .expect("valid");
        assert!(Account::decode(&good).is_some());
        // too short, odd length
        assert_eq!(Account::decode(&good[..15]), None);
        assert_eq!(Account::decode(&good[..17]), None);
        // low = 0
        let mut b = good.clone();
        b[8..16].copy_from_slice(&0u64.to_le_bytes());
        assert_eq!(Account::decode(&b), None);
        // offsets: zero, repeated, descending, beyond the window
        for bad in [[0u16, 4], [2, 2], [4, 2], [2, EXEC_WINDOW as u16]] {
            let mut b = good[..16].to_vec();
            for off in bad {
                b.extend_from_slice(&off.to_le_bytes());
            }
            assert_eq!(Account::decode(&b), None, "{bad:?}");
        }
        // windows that break the invariants have no encoding
        for executed in [
            vec![4],
            vec![5, 5],
            vec![6, 5],
            vec![4 + EXEC_WINDOW],
            vec![3],
        ] {
            let a = Account {
                balance: 1,
                window: ClientWindow { low: 4, executed },
            };
            assert_eq!(a.encode(), None, "{:?}", a.window.executed);
        }
        let zero_low = Account {
            balance: 1,
            window: ClientWindow::default(),
        };
        assert_eq!(zero_low.encode(), None);
    }
}
