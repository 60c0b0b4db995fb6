//! The state values the executor holds above RocksDB: the values written since the
//! last checkpoint (which the `state` column family does not have yet), and a cache of
//! values it does have, within a memory budget.

use crate::transition::{Changes, NetChanges};
use foldhash::HashMapExt;

/// The default memory budget of the state cache, bytes: about 300,000 account
/// records. The budget is in bytes, not entries, so that the cache's memory stays
/// bounded however large the records are.
pub const STATE_CACHE_BYTES: usize = 64 << 20;

/// What one cached entry costs besides its key and value bytes, estimated: the hash
/// table's slot (two `Vec` headers and a control byte, at most half the slots in use
/// after growth) and the two heap allocations' headers and rounding.
const STATE_CACHE_ENTRY_OVERHEAD: usize = 160;

/// The state values the executor holds above RocksDB: every key written since the
/// LtHash's height with its value then and now, which the `state` column family does
/// not have yet (authoritative, not within any budget: the next checkpoint writes
/// them), and a cache of values the column family does have, within a memory budget (an
/// estimate of its heap use: [`STATE_CACHE_ENTRY_OVERHEAD`] per entry plus keys and
/// values).
#[derive(Debug)]
pub(super) struct StateCache {
    /// Written since the LtHash's height: the value then and the live value (`None` =
    /// absent). The changes log holds the same, durably.
    dirty: NetChanges,
    dirty_bytes: usize,
    /// As in the `state` column family.
    clean: foldhash::HashMap<Vec<u8>, Option<Vec<u8>>>,
    bytes: usize,
    budget: usize,
}

fn entry_bytes(key_len: usize, value: &Option<Vec<u8>>) -> usize {
    key_len + value.as_ref().map_or(0, Vec::len) + STATE_CACHE_ENTRY_OVERHEAD
}

impl StateCache {
    pub(super) fn new(budget: usize) -> StateCache {
        StateCache {
            dirty: NetChanges::new(),
            dirty_bytes: 0,
            clean: foldhash::HashMap::new(),
            bytes: 0,
            budget,
        }
    }

    /// The live value of `key`, if held here (`Some(None)`: deleted).
    pub(super) fn get(&self, key: &[u8]) -> Option<&Option<Vec<u8>>> {
        match self.dirty.get(key) {
            Some((_, new)) => Some(new),
            None => self.clean.get(key),
        }
    }

    /// Forgets everything: for a live state replaced by one whose column family is
    /// complete (a rollback or an import).
    pub(super) fn clear(&mut self) {
        self.dirty.clear();
        self.dirty_bytes = 0;
        self.clear_clean();
    }

    /// The net changes since the LtHash's height: each written key's value then and
    /// now.
    pub(super) fn dirty(&self) -> &NetChanges {
        &self.dirty
    }

    /// The estimated memory of the written values, bytes.
    pub(super) fn dirty_bytes(&self) -> usize {
        self.dirty_bytes
    }

    /// The estimated memory of the cached values, bytes (within the budget).
    pub(super) fn clean_bytes(&self) -> usize {
        self.bytes
    }

    fn clear_clean(&mut self) {
        self.clean.clear();
        self.bytes = 0;
    }

    /// Records the values a batch wrote (they are not in the column family yet).
    pub(super) fn write(&mut self, changes: Changes) {
        for (k, (old, new)) in changes {
            let added = entry_bytes(k.len(), &new);
            match self.dirty.get_mut(&k) {
                Some(entry) => {
                    self.dirty_bytes -= entry_bytes(k.len(), &entry.1);
                    entry.1 = new;
                }
                None => {
                    self.dirty_bytes += old.as_ref().map_or(0, Vec::len);
                    self.dirty.insert(k, (old, new));
                }
            }
            self.dirty_bytes += added;
        }
    }

    /// Takes the net changes of the changes log, read on open, as the dirty values.
    pub(super) fn load(&mut self, logged: NetChanges) {
        self.dirty_bytes = logged
            .iter()
            .map(|(k, (old, new))| entry_bytes(k.len(), new) + old.as_ref().map_or(0, Vec::len))
            .sum();
        self.dirty = logged;
    }

    /// The column family now holds every dirty value: they become cached values. If
    /// they would take the cache past its budget, it starts over with them; if they
    /// alone exceed it, it stays empty.
    pub(super) fn flushed(&mut self) {
        let dirty = std::mem::take(&mut self.dirty);
        let incoming = std::mem::take(&mut self.dirty_bytes);
        if self.bytes.saturating_add(incoming) > self.budget {
            self.clear_clean();
            if incoming > self.budget {
                return;
            }
        }
        for (k, (_, new)) in dirty {
            let key_len = k.len();
            self.bytes += entry_bytes(key_len, &new);
            if let Some(old) = self.clean.insert(k, new) {
                self.bytes -= entry_bytes(key_len, &old);
            }
        }
        debug_assert!(self.bytes <= self.budget);
    }
}
