//! The ordering deadline: a backup's defence against a primary that orders requests
//! late on purpose, or leaves some out.
//!
//! The request timer (PBFT §4.4) waits for one request at a time and gives the primary
//! a whole timeout `T` for it, so a primary that delays every pre-prepare to just under
//! `T` keeps its post while throughput collapses (Aardvark: Clement et al., "Making
//! Byzantine Fault Tolerant Systems Tolerate Byzantine Faults", NSDI 2009, §3). This rule
//! adds a second, stricter clock:
//!
//! - A backup remembers each request that it knows and has not yet seen in a
//!   pre-prepare of the current view (clients send to the primary, and to everyone
//!   when they retransmit; backups forward what they learn to the primary at once;
//!   backups also learn requests when a new view starts).
//! - An honest primary orders a request it holds as soon as its pipeline has room, and
//!   proposes a batch with room to spare only when nothing else waits. So the only
//!   excuse for leaving a request out is a pipeline full of *full* batches (at
//!   `pipeline_depth` of them, or at the log window's end): a pipeline kept busy with
//!   null or half-empty batches is no excuse, since the request would have fitted.
//! - The backup's clock runs while the primary has no excuse, and adds up: a full
//!   pipeline pauses it, never resets it. When the oldest such request has had `T/2`
//!   of it (half the current view-change timeout, doubling with it), the backup starts
//!   a view change.
//!
//! The bound it gives: a primary that keeps its post cannot add more than the
//! forwarding delay plus `T/2` of time with room to any request, whatever else it
//! orders meanwhile.

use crate::message::RequestId;
use crate::replica::{Replica, Status};
use crate::time::{Duration, Instant};
use pbft_crypto::PublicKey;
use std::collections::{BTreeMap, VecDeque};

type Key = (PublicKey, RequestId);

/// Stale entries the queue may hold beyond twice the live ones before it is compacted.
const QUEUE_SLACK: usize = 64;

/// A backup's record of requests the primary has not ordered yet.
#[derive(Clone, Debug, Default)]
pub(crate) struct OrderWatch {
    /// Requests known and not seen in a pre-prepare of this view, with the reading of
    /// the room clock when they were first known (or when the view started).
    since: BTreeMap<Key, Duration>,
    /// The same entries in the order they were added (readings never decrease); stale
    /// entries are skipped when they reach the front, and the queue is compacted when
    /// more than half of it is stale, so it holds at most twice the live entries (plus
    /// [`QUEUE_SLACK`]).
    queue: VecDeque<(Duration, Key)>,
    /// The room clock: time the primary's pipeline had room in this view, up to
    /// `room_since` (or up to now, if it has no room now).
    room_total: Duration,
    /// Since when the pipeline has had room, if it has now.
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
        let queued: std::collections::BTreeSet<(Duration, &Key)> =
            self.queue.iter().map(|(t, k)| (*t, k)).collect();
        self.since
            .iter()
            .find(|(k, t)| !queued.contains(&(**t, *k)))
            .map(|(k, _)| k)
    }

    /// The queue's length and the number of live entries, if the queue holds more than
    /// compaction allows (for the replica's invariant checks).
    pub(crate) fn overfull(&self) -> Option<(usize, usize)> {
        (self.queue.len() > 2 * self.since.len() + QUEUE_SLACK)
            .then_some((self.queue.len(), self.since.len()))
    }

    /// The requests watched.
    pub(crate) fn keys(&self) -> impl Iterator<Item = &Key> {
        self.since.keys()
    }

    /// The room clock's reading at `now`.
    fn clock(&self, now: Instant) -> Duration {
        self.room_total + self.room_since.map_or(Duration::ZERO, |s| now.since(s))
    }

    /// The pipeline has room from `now` on, or not.
    fn set_room(&mut self, room: bool, now: Instant) {
        match (room, self.room_since) {
            (true, None) => self.room_since = Some(now),
            (false, Some(s)) => {
                self.room_total += now.since(s);
                self.room_since = None;
            }
            _ => {}
        }
    }

    fn add(&mut self, key: Key, now: Instant) {
        let reading = self.clock(now);
        if let std::collections::btree_map::Entry::Vacant(e) = self.since.entry(key) {
            e.insert(reading);
            self.queue.push_back((reading, key));
        }
    }

    fn remove(&mut self, key: &Key) {
        if self.since.remove(key).is_none() {
            return;
        }
        if self.since.is_empty() {
            self.queue.clear();
        } else if self.queue.len() > 2 * self.since.len() + QUEUE_SLACK {
            // One request left out for long keeps its entry at the front, and `oldest`
            // drops stale entries only from there: without this, every request learnt
            // and ordered meanwhile would leave one behind. Compacting when at least
            // half the queue is stale costs O(1) per removal, amortized.
            let since = &self.since;
            let mut kept = std::collections::BTreeSet::new();
            self.queue
                .retain(|(t, k)| since.get(k) == Some(t) && kept.insert(*k));
        }
    }

    fn clear(&mut self) {
        self.since.clear();
        self.queue.clear();
        self.room_total = Duration::ZERO;
        self.room_since = None;
        self.deadline = None;
    }

    /// The room clock's reading when the oldest live entry was added, dropping stale
    /// ones from the front.
    fn oldest(&mut self) -> Option<Duration> {
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
    /// A backup learnt a request that the current view has not ordered. Only with an
    /// exact client table: an inexact one cannot tell whether the request executed
    /// long ago, and the primary, which knows, would be blamed for leaving it out.
    pub(crate) fn watch_unordered(&mut self, key: Key) {
        if !self.is_primary() && self.status == Status::Normal && self.clients.is_exact() {
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

    /// True if, as far as this backup can tell, the primary has no excuse for
    /// leaving a request out: fewer slots are taken (accepted in this view, not
    /// executed) than the pipeline holds, or than the log window leaves room for. A
    /// slot is taken by a full batch, or by the new view's `O` (which the primary had
    /// to re-propose). A null or under-full batch the primary chose does not take a
    /// slot: an honest primary proposes one only when nothing else waits, so a request
    /// it held would have been in it.
    fn pipeline_has_room(&self) -> bool {
        let o_max = self
            .new_view
            .as_ref()
            .filter(|nv| nv.body.view == self.view)
            .and_then(|nv| nv.body.pre_prepares.last())
            .map_or(0, |pp| pp.body.seq);
        // O's slots not yet executed (whether or not their batches are here yet: a
        // new view names them by digest), and full batches of this view above them
        let o_left = o_max.saturating_sub(self.last_executed);
        let full = o_left
            + self
                .slots
                .range(self.last_executed.max(o_max) + 1..)
                .filter(|(_, s)| {
                    s.pre_prepare.as_ref().is_some_and(|(p, b)| {
                        p.body.view == self.view && b.requests.len() >= self.cfg.max_batch
                    })
                })
                .count() as u64;
        let window_left = self.high_watermark().saturating_sub(self.last_executed);
        full < self.cfg.pipeline_depth.min(window_left)
    }

    /// Recomputes the ordering deadline after an input (called from `finish`).
    pub(crate) fn update_order_deadline(&mut self) {
        let watching = self.status == Status::Normal && !self.is_primary() && self.fetch.is_none();
        let room = watching && self.pipeline_has_room();
        let now = self.now;
        self.order_watch.set_room(room, now);
        let half = self.current_timeout() / 2;
        let w = &mut self.order_watch;
        w.deadline = match (w.oldest(), w.room_since) {
            // the clock reads `room_total + (t - since)` at t: due when it reaches
            // the oldest entry's reading plus T/2
            (Some(oldest), Some(since)) => {
                Some(since.plus((oldest + half).saturating_sub(w.room_total)))
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use pbft_crypto::Keypair;

    #[test]
    fn the_queue_stays_bounded_while_one_request_stays_unordered() {
        // One request is never ordered (the oldest, at the queue's front); the primary
        // orders every other one soon after the backup learns it. The queue must not
        // keep an entry for each of those.
        let client = Keypair::from_seed(&[1; 32]).expect("a key").public();
        let mut w = OrderWatch::default();
        let mut now = Instant::ZERO;
        w.set_room(true, now);
        w.add((client, 1), now);
        for rid in 2..10_000u64 {
            now = now.plus(Duration::from_micros(10));
            w.add((client, rid), now);
            w.remove(&(client, rid));
            assert_eq!(
                w.oldest(),
                Some(Duration::ZERO),
                "request 1 is still the oldest"
            );
            assert!(
                w.queue.len() <= 2 * w.since.len() + QUEUE_SLACK,
                "after {rid} requests the queue holds {} entries for {} live ones",
                w.queue.len(),
                w.since.len()
            );
        }
        assert_eq!(w.unqueued(), None);
    }
}
