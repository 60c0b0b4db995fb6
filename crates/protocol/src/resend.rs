//! How often a replica answers a client's repeated request again (issue 23). A request
//! the replica has answered or executed is answered again when it comes back (a cached
//! reply, or a receipt read from the ledger and signed afresh), and a waiting request
//! that comes back is forwarded to the primary. Every validator sees every client's
//! signed requests, so anyone can replay them: without a limit, each replay costs a
//! backup a forward, and an old one costs a ledger read and a signature on the
//! consensus thread. A client is answered at most once per request per
//! retransmission interval, for at most `client_window` requests per interval (an
//! honest client repeats only what its window holds), and receipts are read from the
//! ledger for at most `max_batch` requests per interval across all clients.

use crate::time::{Duration, Instant};
use pbft_crypto::{Digest, PublicKey};
use std::collections::{BTreeMap, BTreeSet};

/// What was answered again in the current interval.
#[derive(Debug, Default)]
pub(crate) struct Resends {
    /// Per client: when its interval began, and the requests (by digest) answered in
    /// it.
    clients: BTreeMap<PublicKey, (Instant, BTreeSet<Digest>)>,
    /// When the ledger interval began, and the receipts read in it.
    ledger: Option<(Instant, usize)>,
}

impl Resends {
    /// Whether `client`'s repeated request `request` (its digest: one id signed with
    /// two operations is two requests) may be answered (or forwarded) again now; `from_ledger` when answering costs a ledger read and a signature. Records
    /// the answer if so.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn allow(
        &mut self,
        client: PublicKey,
        request: Digest,
        from_ledger: bool,
        now: Instant,
        interval: Duration,
        window: u64,
        ledger_cap: usize,
    ) -> bool {
        if from_ledger {
            let (start, used) = self.ledger.get_or_insert((now, 0));
            if now >= start.plus(interval) {
                *start = now;
                *used = 0;
            }
            if *used >= ledger_cap {
                return false;
            }
        }
        let (start, ids) = self
            .clients
            .entry(client)
            .or_insert_with(|| (now, BTreeSet::new()));
        if now >= start.plus(interval) {
            *start = now;
            ids.clear();
        }
        let room = u64::try_from(ids.len()).unwrap_or(u64::MAX) < window;
        if ids.contains(&request) || !room {
            return false;
        }
        ids.insert(request);
        if from_ledger {
            if let Some((_, used)) = self.ledger.as_mut() {
                *used += 1;
            }
        }
        true
    }
}
