//! How often a replica answers a client's repeated request again (issue 23). A request
//! the replica has answered or executed is answered again when it comes back (a cached
//! reply, or a receipt read from the ledger and signed afresh), and a waiting request
//! that comes back is forwarded to the primary. Every validator sees every client's
//! signed requests, so anyone can replay them: without a limit, each replay costs a
//! backup a forward, and an old one costs a ledger read and a signature on the
//! consensus thread. A client is answered at most once per request per
//! retransmission interval; receipts are read from the ledger for at most
//! `client_window` requests of one client (an honest client repeats only what its
//! window holds) and `max_batch` requests of all clients per interval. The ledger caps
//! can still be used up by whoever holds a client's old requests: charging them to
//! the connection that asks is the fix (issue 23, open).

use crate::time::{Duration, Instant};
use pbft_crypto::{Digest, PublicKey};
use std::collections::{BTreeMap, BTreeSet};

/// What was answered again in the current interval.
#[derive(Debug, Default)]
pub(crate) struct Resends {
    /// Per client: when its interval began, the requests (by digest) answered again in
    /// it, and how many of those were read from the ledger.
    clients: BTreeMap<PublicKey, (Instant, BTreeSet<Digest>, u64)>,
    /// When the ledger interval began, and the receipts read in it.
    ledger: Option<(Instant, usize)>,
}

impl Resends {
    /// Whether `client`'s repeated request `request` (its digest: one id signed with
    /// two operations is two requests) may be answered (or forwarded) again now;
    /// `from_ledger` when answering costs a ledger read and a signature. Records the
    /// answer if so.
    ///
    /// A cached reply or a forward is limited by digest only: a client has at most
    /// `window` of each, so a count per client would add nothing but a way for a
    /// replayer of other requests of the client to use up its allowance. Ledger reads
    /// are counted per client (`window`) and over all clients (`ledger_cap`).
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
        let (start, answered, reads) = self
            .clients
            .entry(client)
            .or_insert_with(|| (now, BTreeSet::new(), 0));
        if now >= start.plus(interval) {
            *start = now;
            answered.clear();
            *reads = 0;
        }
        if answered.contains(&request) {
            return false;
        }
        if from_ledger {
            let (lstart, used) = self.ledger.get_or_insert((now, 0));
            if now >= lstart.plus(interval) {
                *lstart = now;
                *used = 0;
            }
            if *used >= ledger_cap || *reads >= window {
                return false;
            }
            *used += 1;
            *reads += 1;
        }
        answered.insert(request);
        true
    }
}
