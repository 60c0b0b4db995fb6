//! How long each slot spends preparing and committing, as this host sees it: from
//! the first pre-prepare or prepare it sends for a sequence number, to its commit, to
//! the execution. Timed with the `now` the embedder passes in, so the node reports
//! wall-clock phases and the simulator simulated ones.

use pbft_protocol::{Duration, Instant, Message, Seq};
use std::collections::BTreeMap;

/// Start and prepared times per sequence number not yet executed.
#[derive(Debug, Default)]
pub struct Phases {
    slots: BTreeMap<Seq, (Instant, Option<Instant>)>,
}

impl Phases {
    /// Notes a message this host sends.
    pub fn sent(&mut self, msg: &Message, now: Instant) {
        match msg {
            Message::PrePrepare { pre_prepare, .. } => {
                self.slots
                    .entry(pre_prepare.body.seq)
                    .or_insert((now, None));
            }
            Message::Prepare(p) => {
                self.slots.entry(p.body.seq).or_insert((now, None));
            }
            Message::Commit(c) => {
                if let Some((_, prepared)) = self.slots.get_mut(&c.body.seq) {
                    prepared.get_or_insert(now);
                }
            }
            _ => {}
        }
    }

    /// `seq` executes: its (prepare, commit) durations, and everything up to it is
    /// forgotten.
    pub fn executed(&mut self, seq: Seq, now: Instant) -> (Option<Duration>, Option<Duration>) {
        let times = self.slots.get(&seq).copied();
        self.slots = self.slots.split_off(&(seq + 1));
        match times {
            Some((start, Some(prepared))) => {
                (Some(prepared.since(start)), Some(now.since(prepared)))
            }
            _ => (None, None),
        }
    }
}
