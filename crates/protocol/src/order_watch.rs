//! The ordering deadline: a backup's defence against a primary that orders requests
//! late on purpose.
//!
//! PBFT's request timer restarts whenever anything executes (PBFT §4.4), so a primary
//! that delays every pre-prepare to just under the view timeout keeps making progress,
//! is never replaced, and throughput collapses (Aardvark: Clement et al., "Making
//! Byzantine Fault Tolerant Systems Tolerate Byzantine Faults", NSDI 2009, §3). The
//! request timer stays as it is; this rule adds a second, stricter one that progress
//! does not reset:
//!
//! - A backup remembers when it first learnt each request that it has not yet seen in
//!   a pre-prepare of the current view (clients send to the primary, and to everyone
//!   when they retransmit; backups also learn requests when a new view starts).
//! - An honest primary orders a request it holds as soon as its pipeline has room. The
//!   backup sees the pipeline too: the sequence numbers it accepted in this view above
//!   what it executed, against `pipeline_depth` and the watermark.
//! - If the oldest such request has waited `T/2` (half the current view-change
//!   timeout, doubling with it) and the pipeline had room for all of that time, the
//!   backup starts a view change.
//!
//! While the pipeline is full the primary cannot order anything, so the clock only runs
//! while it has room: an honest primary under load is not blamed for the queue in front
//! of it. The bound it gives: a primary that keeps its post cannot add more than the
//! clients' retransmission delay plus `T/2` to any request, where the request timer
//! alone would let it add just under `T` to every batch.

use crate::message::{RequestId, Seq};
use crate::replica::{Replica, Status};
use crate::time::Instant;
use pbft_crypto::PublicKey;
use std::collections::{BTreeMap, VecDeque};

type Key = (PublicKey, RequestId);

/// A backup's record of requests the primary has not ordered yet.
#[derive(Clone, Debug, Default)]
pub(crate) struct OrderWatch {
    /// Requests known and not seen in a pre-prepare of this view, with when they were
    /// first known (or when the view started).
    since: BTreeMap<Key, Instant>,
    /// The same entries in the order they were added (times never decrease); stale
    /// entries are skipped when they reach the front.
    queue: VecDeque<(Instant, Key)>,
    /// Since when the pipeline has had room without interruption, as this backup sees
    /// it.
    room_since: Option<Instant>,
    /// When the primary will be considered too slow, if nothing changes.
    pub(crate) deadline: Option<Instant>,
}

impl OrderWatch {
    /// Number of requests the primary has not ordered yet (for tests).
    pub(crate) fn len(&self) -> usize {
        self.since.len()
    }

    /// The first live entry that `oldest` could not find in the queue, if any (for the
    /// replica's invariant checks).
    pub(crate) fn unqueued(&self) -> Option<&Key> {
        let queued: std::collections::BTreeSet<(Instant, &Key)> =
            self.queue.iter().map(|(t, k)| (*t, k)).collect();
        self.since
            .iter()
            .find(|(k, t)| !queued.contains(&(**t, *k)))
            .map(|(k, _)| k)
    }

    /// The requests watched.
    pub(crate) fn keys(&self) -> impl Iterator<Item = &Key> {
        self.since.keys()
    }

    fn add(&mut self, key: Key, now: Instant) {
        if let std::collections::btree_map::Entry::Vacant(e) = self.since.entry(key) {
            e.insert(now);
            self.queue.push_back((now, key));
        }
    }

    fn remove(&mut self, key: &Key) {
        self.since.remove(key);
        if self.since.is_empty() {
            self.queue.clear();
        }
    }

    fn clear(&mut self) {
        self.since.clear();
        self.queue.clear();
        self.room_since = None;
        self.deadline = None;
    }

    /// The time the oldest live entry was added, dropping stale ones from the front.
    fn oldest(&mut self) -> Option<Instant> {
        while let Some((t, k)) = self.queue.front() {
            if self.since.get(k) == Some(t) {
                return Some(*t);
            }
            self.queue.pop_front();
        }
        None
    }
}

impl Replica {
    /// A backup learnt a request that the current view has not ordered.
    pub(crate) fn watch_unordered(&mut self, key: Key) {
        if !self.is_primary() && self.status == Status::Normal {
            self.order_watch.add(key, self.now);
        }
    }

    /// The request was ordered in this view (or executed).
    pub(crate) fn watch_ordered(&mut self, key: &Key) {
        self.order_watch.remove(key);
    }

    /// Forgets everything: a view change began, or a state transfer replaced what the
    /// replica knew about waiting requests.
    pub(crate) fn watch_reset(&mut self) {
        self.order_watch.clear();
    }

    /// True if, as far as this backup can tell, the primary may propose now: its
    /// pipeline and the log window have room.
    fn pipeline_has_room(&self) -> bool {
        let highest = self
            .slots
            .range(self.last_executed + 1..)
            .rev()
            .find(|(_, s)| {
                s.pre_prepare
                    .as_ref()
                    .is_some_and(|(p, _)| p.body.view == self.view)
            })
            .map_or(self.last_executed, |(seq, _)| *seq);
        let next: Seq = highest.max(self.last_executed) + 1;
        next - 1 - self.last_executed < self.cfg.pipeline_depth && next <= self.high_watermark()
    }

    /// Recomputes the ordering deadline after an input (called from `finish`).
    pub(crate) fn update_order_deadline(&mut self) {
        let watching = self.status == Status::Normal && !self.is_primary() && self.fetch.is_none();
        if !watching {
            self.order_watch.room_since = None;
            self.order_watch.deadline = None;
            return;
        }
        if self.pipeline_has_room() {
            if self.order_watch.room_since.is_none() {
                self.order_watch.room_since = Some(self.now);
            }
        } else {
            self.order_watch.room_since = None;
        }
        let half = self.current_timeout() / 2;
        self.order_watch.deadline = match (self.order_watch.oldest(), self.order_watch.room_since) {
            (Some(oldest), Some(room)) => Some(oldest.max(room).plus(half)),
            _ => None,
        };
    }

    /// If the ordering deadline passed (the primary held a request back for `T/2`
    /// while its pipeline had room), starts a view change.
    pub(crate) fn check_order_deadline(&mut self, now: Instant) {
        if self.order_watch.deadline.is_none_or(|d| d > now) {
            return;
        }
        self.order_watch.deadline = None;
        if self.status != Status::Normal || self.is_primary() {
            return;
        }
        tracing::info!(
            replica = self.id,
            view = self.view,
            seq = self.last_executed,
            waiting = self.order_watch.len(),
            "the primary left a request unordered for T/2 with room in its pipeline"
        );
        let next = self.view + 1;
        self.start_view_change(next);
    }
}
