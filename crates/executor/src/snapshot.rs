//! The state-transfer snapshot format shared by both executors, and its verification.
//!
//! A snapshot of checkpoint `seq` is a list of chunks, each a postcard-encoded
//! [`SnapshotChunk`]. Chunk 0 carries the head block. Entries are the digest-covered
//! state (account records, windows of clients without an account, chain position) in
//! strictly increasing key order, across chunks too. Receipts and blocks below the head
//! are not part of a snapshot (decision 0061): its size grows with the state, not with
//! the ledger's history.
//!
//! Both directions work one chunk at a time, so that neither side holds a whole
//! snapshot:
//!
//! * export: a [`ChunkPlanner`] makes one pass over the checkpoint's entries and keeps
//!   only the first key of each chunk; a chunk is then read on demand from its first
//!   key to the next chunk's ([`crate::SnapshotSource`]).
//! * import: a [`ChunkVerifier`] checks each chunk as it arrives (it decodes, is in
//!   place, its keys are known and increasing) and adds its entries to the LtHash
//!   (which does not depend on order), keeping only each chunk's first and last key,
//!   the chain position and the head block. [`ChunkVerifier::finish`] checks the order
//!   across chunks and the chain, and computes the checkpoint digest of the LtHash and
//!   the head block's hash ([`crate::types::checkpoint_digest`]): a lying peer's
//!   snapshot is rejected before anything live is touched.

use crate::error::ExecError;
use crate::lthash::LtHash;
use crate::types::{checkpoint_digest, keys, Block, ChainPos, Head};
use pbft_crypto::Digest;
use serde::{Deserialize, Serialize};

/// Most chunks a snapshot may have: what the verifier keeps per chunk (two keys) stays
/// a few MiB at most.
pub const MAX_CHUNKS: u32 = 1 << 16;

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

impl SnapshotChunk {
    /// The chunk's bytes.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }
}

/// A snapshot whose digest matched the proof (or was computed, for
/// [`inspect_chunks`]).
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

/// Where the chunks of a snapshot begin, found in one pass over its entries in key
/// order: only the first key of each chunk is kept. A chunk closes before the entry
/// that would take it over about `max_bytes` (counting each entry as its key, its
/// value and 8 bytes), and holds at least one entry.
#[derive(Clone, Debug)]
pub struct ChunkPlanner {
    max_bytes: usize,
    size: usize,
    /// The first key of each chunk after chunk 0 (which starts at the first entry).
    starts: Vec<Vec<u8>>,
    /// Whether the current chunk holds an entry yet.
    nonempty: bool,
}

impl ChunkPlanner {
    /// A planner for chunks of about `max_bytes` (at least 64).
    pub fn new(max_bytes: usize) -> ChunkPlanner {
        ChunkPlanner {
            max_bytes: max_bytes.max(64),
            size: 0,
            starts: Vec::new(),
            nonempty: false,
        }
    }

    /// The next entry, in key order. Fails if the snapshot would need more than
    /// [`MAX_CHUNKS`] chunks.
    pub fn push(&mut self, key: &[u8], value_len: usize) -> Result<(), ExecError> {
        let len = key.len() + value_len + 8;
        if self.nonempty && self.size + len > self.max_bytes {
            if self.starts.len() + 1 >= MAX_CHUNKS as usize {
                return Err(ExecError::Storage(format!(
                    "the snapshot needs more than {MAX_CHUNKS} chunks of {} bytes",
                    self.max_bytes
                )));
            }
            self.starts.push(key.to_vec());
            self.size = 0;
        }
        self.size += len;
        self.nonempty = true;
        Ok(())
    }

    /// The first key of each chunk after chunk 0; their number plus one is the number
    /// of chunks.
    pub fn finish(self) -> Vec<Vec<u8>> {
        self.starts
    }
}

/// Bytes held for a list of keys (their contents and their vectors).
pub fn keys_bytes(keys: &[Vec<u8>]) -> usize {
    keys.iter()
        .map(|k| k.capacity() + std::mem::size_of::<Vec<u8>>())
        .sum()
}

/// Splits entries (in key order) into chunks of at most about `max_bytes` each, as a
/// [`ChunkPlanner`] places them.
pub fn make_chunks(
    seq: u64,
    head: Option<Block>,
    entries: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>,
    max_bytes: usize,
) -> Vec<Vec<u8>> {
    let entries: Vec<(Vec<u8>, Vec<u8>)> = entries.into_iter().collect();
    let mut planner = ChunkPlanner::new(max_bytes);
    for (k, v) in &entries {
        if planner.push(k, v.len()).is_err() {
            return Vec::new();
        }
    }
    let starts = planner.finish();
    let total = starts.len() as u32 + 1;
    let mut groups: Vec<Vec<(Vec<u8>, Vec<u8>)>> = vec![Vec::new()];
    let mut next = starts.iter().peekable();
    for (k, v) in entries {
        if next.peek().is_some_and(|s| **s == k) {
            next.next();
            groups.push(Vec::new());
        }
        if let Some(g) = groups.last_mut() {
            g.push((k, v));
        }
    }
    groups
        .into_iter()
        .enumerate()
        .map(|(i, entries)| {
            SnapshotChunk {
                seq,
                index: i as u32,
                total,
                head: if i == 0 { head.clone() } else { None },
                entries,
            }
            .encode()
        })
        .collect()
}

fn bad(why: impl Into<String>) -> ExecError {
    ExecError::BadSnapshot(why.into())
}

/// The first and last key of a chunk's entries.
type KeyRange = (Vec<u8>, Vec<u8>);

/// Checks a snapshot chunk by chunk, in any order, and computes its digest, holding
/// only a few keys per chunk (see the [module documentation](self)).
#[derive(Clone, Debug)]
pub struct ChunkVerifier {
    seq: u64,
    /// Set by the first chunk: one slot per chunk, `Some` once it arrived (with its key
    /// range, `None` inside if it has no entries).
    ranges: Vec<Option<Option<KeyRange>>>,
    missing: usize,
    lthash: LtHash,
    chain: Option<ChainPos>,
    /// Set by chunk 0.
    head_block: Option<Option<Block>>,
    entries: u64,
}

/// What [`ChunkVerifier::finish`] found: the snapshot checks out, with this head and
/// LtHash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checked {
    /// The ledger head the snapshot installs.
    pub head: Head,
    /// The block at the head (none at genesis).
    pub head_block: Option<Block>,
    /// The LtHash of its entries.
    pub lthash: LtHash,
    /// Its checkpoint digest: height, head block hash and LtHash.
    pub checkpoint_digest: Digest,
    /// How many entries it has.
    pub entries: u64,
}

impl ChunkVerifier {
    /// A verifier of a snapshot of checkpoint `seq`.
    pub fn new(seq: u64) -> ChunkVerifier {
        ChunkVerifier {
            seq,
            ranges: Vec::new(),
            missing: 0,
            lthash: LtHash::new(),
            chain: None,
            head_block: None,
            entries: 0,
        }
    }

    /// The checkpoint.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// True once every chunk arrived.
    pub fn complete(&self) -> bool {
        !self.ranges.is_empty() && self.missing == 0
    }

    /// Bytes this verifier holds: the key range of each chunk that arrived, a slot per
    /// chunk, the LtHash and the head block.
    pub fn held_bytes(&self) -> usize {
        let slot = std::mem::size_of::<Option<Option<KeyRange>>>();
        let keys: usize = self
            .ranges
            .iter()
            .flatten()
            .flatten()
            .map(|(a, b)| a.capacity() + b.capacity())
            .sum();
        std::mem::size_of::<Self>() + self.ranges.capacity() * slot + keys + 2048
    }

    /// Checks one chunk and takes it into account; returns its entries, for the caller
    /// to stage. A chunk that fails a check changes nothing here.
    pub fn add(&mut self, bytes: &[u8]) -> Result<SnapshotChunk, ExecError> {
        let c: SnapshotChunk = postcard::from_bytes(bytes)
            .map_err(|e| bad(format!("a chunk does not decode: {e}")))?;
        let i = c.index as usize;
        let total_ok = if self.ranges.is_empty() {
            c.total > 0 && c.total <= MAX_CHUNKS
        } else {
            c.total as usize == self.ranges.len()
        };
        if c.seq != self.seq || !total_ok || c.index >= c.total {
            return Err(bad(format!(
                "chunk {i} is out of place (seq {}, {}/{})",
                c.seq, c.index, c.total
            )));
        }
        if self.ranges.get(i).is_some_and(Option::is_some) {
            return Err(bad(format!("chunk {i} arrived twice")));
        }
        if i != 0 && c.head.is_some() {
            return Err(bad("a head block outside chunk 0"));
        }
        let mut chain = None;
        for (n, (k, v)) in c.entries.iter().enumerate() {
            if n > 0 && c.entries[n - 1].0 >= *k {
                return Err(bad("entries are not in strictly increasing key order"));
            }
            let known = (k.len() == 33 && (k[0] == keys::ACCOUNT || k[0] == keys::CLIENT))
                || k == keys::CHAIN;
            if !known {
                return Err(bad("an entry with an unknown key"));
            }
            if k == keys::CHAIN {
                chain = Some(
                    postcard::from_bytes::<ChainPos>(v)
                        .map_err(|_| bad("the chain position does not decode"))?,
                );
            }
        }
        // every check passed: take the chunk in
        if self.ranges.is_empty() {
            self.ranges = vec![None; c.total as usize];
            self.missing = c.total as usize;
        }
        let range = match (c.entries.first(), c.entries.last()) {
            (Some((a, _)), Some((b, _))) => Some((a.clone(), b.clone())),
            _ => None,
        };
        self.ranges[i] = Some(range);
        self.missing -= 1;
        if chain.is_some() {
            self.chain = chain;
        }
        if i == 0 {
            self.head_block = Some(c.head.clone());
        }
        for (k, v) in &c.entries {
            self.lthash.insert(k, v);
        }
        self.entries += c.entries.len() as u64;
        Ok(c)
    }

    /// Once every chunk arrived: checks the key order across chunks, the chain position
    /// and the head block, and computes the snapshot's checkpoint digest.
    pub fn finish(&self) -> Result<Checked, ExecError> {
        if !self.complete() {
            return Err(bad(format!("{} chunks are missing", self.missing.max(1))));
        }
        let mut last: Option<&Vec<u8>> = None;
        for (first, end) in self.ranges.iter().flatten().flatten() {
            if last.is_some_and(|l| l >= first) {
                return Err(bad("entries are not in strictly increasing key order"));
            }
            last = Some(end);
        }
        let seq = self.seq;
        let chain = self.chain.ok_or_else(|| bad("no chain position"))?;
        if chain.height != seq {
            return Err(bad(format!(
                "chain position {} is not the checkpoint {seq}",
                chain.height
            )));
        }
        let head_block = self.head_block.clone().flatten();
        // the genesis state's digest is its LtHash's; a later one is its block's, which
        // the block hash (in the checkpoint digest) covers
        let (hash, state_digest) = match &head_block {
            None if seq == 0 => (Digest::ZERO, self.lthash.digest()),
            None => return Err(bad("no head block")),
            Some(b) => {
                if b.height != seq || b.prev != chain.prev {
                    return Err(bad("the head block does not match the state"));
                }
                (b.hash(), b.state_digest)
            }
        };
        Ok(Checked {
            head: Head {
                height: seq,
                hash,
                state_digest,
            },
            head_block,
            checkpoint_digest: checkpoint_digest(seq, &hash, &self.lthash.digest()),
            lthash: self.lthash.clone(),
            entries: self.entries,
        })
    }
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

/// Decodes a whole snapshot of checkpoint `seq` held in memory, checks that it is well
/// formed and self-consistent, and computes its checkpoint digest, without comparing it
/// to anything (for tests and tools; state transfer checks chunk by chunk with a
/// [`ChunkVerifier`]).
pub fn inspect_chunks(seq: u64, chunks: &[Vec<u8>]) -> Result<VerifiedSnapshot, ExecError> {
    if chunks.is_empty() {
        return Err(bad("no chunks"));
    }
    let mut verifier = ChunkVerifier::new(seq);
    let mut entries = Vec::new();
    for (i, bytes) in chunks.iter().enumerate() {
        let c = verifier.add(bytes)?;
        if c.index as usize != i || c.total as usize != chunks.len() {
            return Err(bad(format!(
                "chunk {i} is out of place (seq {}, {}/{})",
                c.seq, c.index, c.total
            )));
        }
        entries.extend(c.entries);
    }
    let checked = verifier.finish()?;
    Ok(VerifiedSnapshot {
        head: checked.head,
        head_block: checked.head_block,
        entries,
        lthash: checked.lthash,
        checkpoint_digest: checked.checkpoint_digest,
    })
}
