//! The state-transfer snapshot format shared by both executors, and its verification.
//!
//! A snapshot of checkpoint `seq` is a list of chunks, each a postcard-encoded
//! [`SnapshotChunk`]. Chunk 0 carries the head block. Entries are the digest-covered
//! state (account records, windows of clients without an account, chain position) in
//! strictly increasing key order.
//! [`verify_chunks`] recomputes the LtHash from the entries and accepts the snapshot only
//! if the checkpoint digest of that LtHash and the head block's hash
//! ([`crate::types::checkpoint_digest`]) equals the proven one: a lying peer's snapshot
//! is rejected before anything local is touched.

use crate::error::ExecError;
use crate::lthash::LtHash;
use crate::types::{checkpoint_digest, keys, Block, ChainPos, Head};
use pbft_crypto::Digest;
use serde::{Deserialize, Serialize};

/// One chunk of a snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotChunk {
    /// The checkpoint.
    pub seq: u64,
    /// Chunk index, from 0.
    pub index: u32,
    /// Number of chunks.
    pub total: u32,
    /// The block at `seq` (chunk 0 only; none at genesis).
    pub head: Option<Block>,
    /// State entries, in increasing key order.
    pub entries: Vec<(Vec<u8>, Vec<u8>)>,
}

/// A snapshot whose digest matched the proof.
#[derive(Clone, Debug)]
pub struct VerifiedSnapshot {
    /// The ledger head it installs.
    pub head: Head,
    /// The block at the head (none at genesis).
    pub head_block: Option<Block>,
    /// The state entries.
    pub entries: Vec<(Vec<u8>, Vec<u8>)>,
    /// Their LtHash.
    pub lthash: LtHash,
    /// The checkpoint digest of the snapshot: its height, head block hash and LtHash.
    pub checkpoint_digest: Digest,
}

/// Splits entries into chunks of at most about `max_bytes` each.
pub fn make_chunks(
    seq: u64,
    head: Option<Block>,
    entries: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>,
    max_bytes: usize,
) -> Vec<Vec<u8>> {
    let mut groups: Vec<Vec<(Vec<u8>, Vec<u8>)>> = vec![Vec::new()];
    let mut size = 0usize;
    for (k, v) in entries {
        let len = k.len() + v.len() + 8;
        if size + len > max_bytes.max(64) && !groups.last().is_some_and(|g| g.is_empty()) {
            groups.push(Vec::new());
            size = 0;
        }
        size += len;
        if let Some(g) = groups.last_mut() {
            g.push((k, v));
        }
    }
    let total = groups.len() as u32;
    groups
        .into_iter()
        .enumerate()
        .map(|(i, entries)| {
            let chunk = SnapshotChunk {
                seq,
                index: i as u32,
                total,
                head: if i == 0 { head.clone() } else { None },
                entries,
            };
            postcard::to_allocvec(&chunk).unwrap_or_default()
        })
        .collect()
}

fn bad(why: impl Into<String>) -> ExecError {
    ExecError::BadSnapshot(why.into())
}

/// Decodes and checks a snapshot of checkpoint `seq` against the proven checkpoint
/// digest `expected`.
pub fn verify_chunks(
    seq: u64,
    expected: Digest,
    chunks: &[Vec<u8>],
) -> Result<VerifiedSnapshot, ExecError> {
    let v = inspect_chunks(seq, chunks)?;
    if v.checkpoint_digest != expected {
        return Err(bad("its digest does not match the stable checkpoint"));
    }
    Ok(v)
}

/// Decodes a snapshot of checkpoint `seq`, checks that it is well formed and
/// self-consistent, and computes its checkpoint digest, without comparing it to
/// anything: the replica decides whether that digest is the proven one.
pub fn inspect_chunks(seq: u64, chunks: &[Vec<u8>]) -> Result<VerifiedSnapshot, ExecError> {
    if chunks.is_empty() {
        return Err(bad("no chunks"));
    }
    let mut entries: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut head_block = None;
    let total = chunks.len() as u32;
    for (i, bytes) in chunks.iter().enumerate() {
        let c: SnapshotChunk = postcard::from_bytes(bytes)
            .map_err(|e| bad(format!("chunk {i} does not decode: {e}")))?;
        if c.seq != seq || c.index != i as u32 || c.total != total {
            return Err(bad(format!(
                "chunk {i} is out of place (seq {}, {}/{})",
                c.seq, c.index, c.total
            )));
        }
        if i == 0 {
            head_block = c.head;
        } else if c.head.is_some() {
            return Err(bad("a head block outside chunk 0"));
        }
        for (k, v) in c.entries {
            if entries.last().is_some_and(|(last, _)| *last >= k) {
                return Err(bad("entries are not in strictly increasing key order"));
            }
            let known = (k.len() == 33 && (k[0] == keys::ACCOUNT || k[0] == keys::CLIENT))
                || k == keys::CHAIN;
            if !known {
                return Err(bad("an entry with an unknown key"));
            }
            entries.push((k, v));
        }
    }
    let mut lt = LtHash::new();
    for (k, v) in &entries {
        lt.insert(k, v);
    }
    let chain: ChainPos = entries
        .iter()
        .find(|(k, _)| k.as_slice() == keys::CHAIN)
        .and_then(|(_, v)| postcard::from_bytes(v).ok())
        .ok_or_else(|| bad("no chain position"))?;
    if chain.height != seq {
        return Err(bad(format!(
            "chain position {} is not the checkpoint {seq}",
            chain.height
        )));
    }
    // the genesis state's digest is its LtHash's; a later one is its block's, which
    // the block hash (in the checkpoint digest) covers
    let (hash, state_digest) = match &head_block {
        None if seq == 0 => (Digest::ZERO, lt.digest()),
        None => return Err(bad("no head block")),
        Some(b) => {
            if b.height != seq || b.prev != chain.prev {
                return Err(bad("the head block does not match the state"));
            }
            (b.hash(), b.state_digest)
        }
    };
    let head = Head {
        height: seq,
        hash,
        state_digest,
    };
    Ok(VerifiedSnapshot {
        head,
        head_block,
        entries,
        checkpoint_digest: checkpoint_digest(seq, &hash, &lt.digest()),
        lthash: lt,
    })
}
