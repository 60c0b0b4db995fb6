//! How often a replica answers a client's repeated request again (issue 23). A request
//! the replica has answered or executed is answered again when it comes back (a cached
//! reply, or a receipt read from the ledger and signed afresh), and a waiting request
//! that comes back is forwarded to the primary. Every validator sees every client's
//! signed requests, so anyone can replay them: without a limit, each replay costs a
//! backup a forward, and an old one costs a ledger read and a signature on the
//! consensus thread. A client is answered at most once per request per
//! retransmission interval.
//!
//! Receipts are read from the ledger out of two budgets per interval. Requests from
//! their own client (over a connection bound to its key, see the transport) may read
//! `client_window` receipts per client (an honest client repeats only what its window
//! holds) and `4 × max_batch` over all clients. Requests that may be anyone's replay
//! (from anonymous connections) have a budget of their own, `client_window` per client
//! and `max_batch` over all clients, so whoever holds a client's old requests cannot
//! use up what the client needs to recover its receipts.

use crate::time::{Duration, Instant};
use pbft_crypto::{Digest, PublicKey};
use std::collections::{BTreeMap, BTreeSet};

/// Requests answered again in an interval: digest, and whether from the client itself.
type Answered = BTreeSet<(Digest, bool)>;

/// What was answered again in the current interval.
#[derive(Debug, Default)]
pub(crate) struct Resends {
    /// Per client: when its interval began, the requests (by digest, and whether they
    /// came from the client itself) answered again in it, and how many of its own were
    /// read from the ledger. A replay answered does not use up the answer to the
    /// client's own retransmission of the same request.
    clients: BTreeMap<PublicKey, (Instant, Answered, u64)>,
    /// The same for requests that may be replays: counted apart.
    unproven: BTreeMap<PublicKey, (Instant, u64)>,
    /// When the ledger interval began, and the receipts read in it for requests from
    /// their own clients and for the others.
    ledger: Option<(Instant, usize, usize)>,
}

/// How many times `max_batch` the clients' own requests may read from the ledger per
/// interval.
pub(crate) const OWN_LEDGER_FACTOR: usize = 4;

impl Resends {
    /// Whether `client`'s repeated request `request` (its digest: one id signed with
    /// two operations is two requests) may be answered (or forwarded) again now;
    /// `from_ledger` when answering costs a ledger read and a signature; `own` when the
    /// request came from its client itself. Records the answer if so.
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
        own: bool,
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
        if answered.contains(&(request, own)) {
            return false;
        }
        if from_ledger {
            let (lstart, used_own, used_other) = self.ledger.get_or_insert((now, 0, 0));
            if now >= lstart.plus(interval) {
                *lstart = now;
                *used_own = 0;
                *used_other = 0;
            }
            if own {
                if *used_own >= ledger_cap.saturating_mul(OWN_LEDGER_FACTOR) || *reads >= window {
                    return false;
                }
                *used_own += 1;
                *reads += 1;
            } else {
                let (ustart, ureads) = self.unproven.entry(client).or_insert((now, 0));
                if now >= ustart.plus(interval) {
                    *ustart = now;
                    *ureads = 0;
                }
                if *used_other >= ledger_cap || *ureads >= window {
                    return false;
                }
                *used_other += 1;
                *ureads += 1;
            }
        }
        answered.insert((request, own));
        true
    }
}
