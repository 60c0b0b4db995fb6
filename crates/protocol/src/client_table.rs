//! The client table: exactly-once per `(client, request_id)` with a bounded window per
//! client, and cached replies for retransmissions. A cached reply answers only the
//! request it binds (`Reply::request`): the same id signed with another operation is
//! [`Admission::Reused`].
//!
//! Clients number their requests 1, 2, 3, ... without gaps. For each client the table
//! keeps `low`, below which every request has executed, the executed ids above it, and
//! the replies to the most recent ones. A client may have up to `window` requests in
//! flight: ids from `low` to `low + window - 1`. The window is anchored at the oldest
//! *unexecuted* request, so a request that was lost and retransmitted late is never
//! pushed out of the window by newer ones.
//!
//! The executor is the authority on duplicates: it stores a receipt per request and
//! answers a re-executed request with a deterministic "duplicate" no-op carrying the
//! original receipt. Ordering an executed request again is therefore harmless to the
//! ledger, but not to the primary: a backup that takes an executed request for a new one
//! forwards it, watches it and times it, and the honest primary, which knows it executed,
//! leaves it out and is blamed. Old signed requests are an unlimited supply (every
//! validator sees them in batches; a client can replay its own), so the table must be
//! *exact*: it must know every execution up to the replica's last executed batch.
//!
//! A replica that restarted or installed a snapshot did not see every execution, so its
//! driver reads each client's window from the ledger at that height and hands it over
//! ([`ClientRecords::Complete`], through `Replica::restore` and
//! `Replica::on_state_transferred`); [`ClientTable::seed`] makes the table exact again.
//! Only a driver that cannot list the clients (the cluster admits any key) passes
//! [`ClientRecords::Unknown`], which leaves the table *inexact*: it cannot tell a new
//! request from one executed before, so it answers [`Admission::Unknown`] for any request
//! it has not seen execute. The replica forwards such a request to the primary (and, as
//! primary, orders it: at worst it executes as a duplicate), but an inexact table never
//! has a backup watch or time a request ([`ClientTable::is_exact`]). The number of
//! requests waiting per client is capped in every case, which bounds memory.

use crate::message::{RequestId, SignedReply, SignedRequest};
use pbft_crypto::PublicKey;
use std::collections::{BTreeMap, BTreeSet};

/// What to do with an incoming request.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    /// Executed already; the cached reply is returned.
    Cached(Box<SignedReply>),
    /// Its request id executed with another request (the cached reply binds another
    /// digest): the client signed a new operation under a used id. It is never ordered,
    /// and never answered with the reply of the request that ran; a client asking is
    /// answered from the ledger, whose record of that request refuses this one.
    Reused,
    /// Already known and waiting to execute.
    Known,
    /// New and inside the window.
    New,
    /// Executed, but no reply is cached (long ago, or before a restart or a snapshot
    /// install); a client asking is answered from the ledger's receipt.
    TooOld,
    /// Beyond the client's window, or the client has too many requests waiting; ignored.
    OutOfWindow,
    /// The table is inexact and has not seen this request execute: it may be new, or it
    /// may have executed before the replica restarted or installed a snapshot.
    Unknown,
}

/// One client's executions as the ledger records them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientRecord {
    /// The client.
    pub client: PublicKey,
    /// Every request id below this executed (ids start at 1).
    pub low: RequestId,
    /// The executed ids at or above `low`.
    pub executed: Vec<RequestId>,
}

/// What a driver knows of the executions a replica did not see (before a restart, or
/// inside an installed snapshot), read from the ledger at the height the replica
/// resumes from: its last executed batch, or the snapshot's checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientRecords {
    /// The record of every client that executed anything at that height; a client not
    /// listed executed nothing. The client table is exact.
    Complete(Vec<ClientRecord>),
    /// Not known: the cluster admits any key (`ClientKeys::Any`), so the driver cannot
    /// ask the ledger about each client. The client table is inexact.
    Unknown,
}

#[derive(Clone, Debug)]
struct Entry {
    /// Every request id below `low` has executed.
    low: RequestId,
    /// Executed ids at or above `low`.
    executed: BTreeSet<RequestId>,
    /// Replies to the most recent executed requests (at most `window`).
    replies: BTreeMap<RequestId, SignedReply>,
    /// Requests of this client waiting to execute.
    waiting: usize,
}

impl Entry {
    /// True if request `rid` executed, as far as this entry knows.
    fn has_executed(&self, rid: RequestId) -> bool {
        rid < self.low || self.executed.contains(&rid)
    }

    /// Moves `low` over the executed ids that reach it, and keeps at most `window`
    /// executed ids above it (dropping the oldest, which moves `low` past them: the
    /// ids skipped are then refused as too old, which bounds the set whatever order a
    /// client's executions come in).
    fn settle(&mut self, window: u64) {
        while self.executed.remove(&self.low) {
            self.low += 1;
        }
        while self.executed.len() as u64 > window {
            if let Some(first) = self.executed.pop_first() {
                self.low = first + 1;
            }
            while self.executed.remove(&self.low) {
                self.low += 1;
            }
        }
    }
}

impl Default for Entry {
    fn default() -> Self {
        Entry {
            low: 1,
            executed: BTreeSet::new(),
            replies: BTreeMap::new(),
            waiting: 0,
        }
    }
}

/// Per-client state.
#[derive(Clone, Debug)]
pub struct ClientTable {
    window: u64,
    exact: bool,
    clients: BTreeMap<PublicKey, Entry>,
    /// Requests seen but not executed, in a deterministic order, with when each
    /// started waiting (a counter: `arrivals` orders them).
    waiting: BTreeMap<(PublicKey, RequestId), (SignedRequest, u64)>,
    /// The waiting requests by arrival, oldest first (the request timer follows the
    /// oldest).
    arrivals: BTreeMap<u64, (PublicKey, RequestId)>,
    /// The next arrival number.
    next_arrival: u64,
    /// Requests the primary could not admit yet although a backup may have (see
    /// [`ClientTable::defer`]), at most `window` per client.
    early: BTreeMap<(PublicKey, RequestId), SignedRequest>,
}

impl ClientTable {
    /// An empty, exact table (a replica starting from genesis) with a per-client window
    /// of `window` requests.
    pub fn new(window: u64) -> Self {
        ClientTable {
            window: window.max(1),
            exact: true,
            clients: BTreeMap::new(),
            waiting: BTreeMap::new(),
            arrivals: BTreeMap::new(),
            next_arrival: 0,
            early: BTreeMap::new(),
        }
    }

    /// True if the table knows every execution up to the replica's last executed batch
    /// (see the module documentation). Only an exact table lets a backup watch or time
    /// a request.
    pub fn is_exact(&self) -> bool {
        self.exact
    }

    /// Takes in what the ledger records of the executions the replica did not see: the
    /// replica restarted, or installed a snapshot. With [`ClientRecords::Complete`] the
    /// table becomes exact: each client's `low` and executed ids are the ledger's (a
    /// client not listed executed nothing), trimmed to the window as
    /// [`ClientTable::executed`] trims them, and a waiting request the ledger executed
    /// stops waiting. Cached replies of requests the ledger executed are kept. With
    /// [`ClientRecords::Unknown`] the table becomes inexact.
    pub fn seed(&mut self, records: ClientRecords) {
        self.early.clear();
        let ClientRecords::Complete(records) = records else {
            self.exact = false;
            return;
        };
        for e in self.clients.values_mut() {
            e.low = 1;
            e.executed.clear();
        }
        for r in records {
            let e = self.clients.entry(r.client).or_default();
            e.low = r.low.max(1);
            e.executed = r.executed.into_iter().filter(|id| *id >= e.low).collect();
            e.settle(self.window);
        }
        for e in self.clients.values_mut() {
            let (low, executed) = (e.low, &e.executed);
            e.replies
                .retain(|rid, _| *rid < low || executed.contains(rid));
        }
        let done: Vec<(PublicKey, RequestId)> = self
            .waiting
            .keys()
            .filter(|(c, rid)| self.clients.get(c).is_some_and(|e| e.has_executed(*rid)))
            .copied()
            .collect();
        for key in done {
            self.stop_waiting(&key);
        }
        self.clients.retain(|_, e| {
            e.low > 1 || !e.executed.is_empty() || e.waiting > 0 || !e.replies.is_empty()
        });
        self.exact = true;
    }

    /// Removes a waiting request.
    fn stop_waiting(&mut self, key: &(PublicKey, RequestId)) {
        if let Some((_, arrival)) = self.waiting.remove(key) {
            self.arrivals.remove(&arrival);
            if let Some(e) = self.clients.get_mut(&key.0) {
                e.waiting = e.waiting.saturating_sub(1);
            }
        }
    }

    /// Classifies a request.
    pub fn admit(&self, req: &SignedRequest) -> Admission {
        let (client, rid) = req.key();
        let default = Entry::default();
        let e = self.clients.get(&client).unwrap_or(&default);
        if let Some(r) = e.replies.get(&rid) {
            if r.body.request != req.body.digest() {
                return Admission::Reused;
            }
            return Admission::Cached(Box::new(r.clone()));
        }
        if self.waiting.contains_key(&(client, rid)) {
            return Admission::Known;
        }
        if rid == 0 || e.executed.contains(&rid) || (self.exact && rid < e.low) {
            // executed (or invalid); an inexact table's `low` may have moved past ids
            // it never saw execute
            return Admission::TooOld;
        }
        if e.waiting as u64 >= self.window {
            return Admission::OutOfWindow;
        }
        if !self.exact {
            return Admission::Unknown;
        }
        if rid >= e.low.saturating_add(self.window) {
            return Admission::OutOfWindow;
        }
        Admission::New
    }

    /// Keeps, at a primary, a request it cannot admit yet because its client's window
    /// (or its count of waiting requests) is full, when the next executions of that
    /// client can make room: its id is below `low + 2 * window`. A backup that
    /// executed one of those requests before the primary did admits the request,
    /// forwards it and watches it; dropped here, the primary would be blamed for it
    /// after T/2, and a hostile client can time its requests for that. Only with an
    /// exact table, and at most `window` per client (the ids from `low + window` on
    /// are that many; the cap holds whatever `low` did meanwhile). One request per
    /// id: a backup watches by `(client, id)`, so the one deferred stands for any
    /// other signed with its id. Returns true if kept.
    pub fn defer(&mut self, req: SignedRequest) -> bool {
        let key = req.key();
        if !self.exact || self.waiting.contains_key(&key) || self.early.contains_key(&key) {
            return false;
        }
        let e = self.clients.get(&key.0);
        let low = e.map_or(1, |e| e.low);
        if key.1 == 0
            || key.1 < low
            || e.is_some_and(|e| e.executed.contains(&key.1))
            || key.1 >= low.saturating_add(self.window.saturating_mul(2))
        {
            return false;
        }
        if self.early_of(&key.0).count() as u64 >= self.window {
            return false;
        }
        self.early.insert(key, req);
        true
    }

    fn early_of(
        &self,
        client: &PublicKey,
    ) -> impl Iterator<Item = (&(PublicKey, RequestId), &SignedRequest)> {
        self.early.range((*client, 0)..=(*client, RequestId::MAX))
    }

    /// Takes out the deferred requests of `client` that its window now reaches (to be
    /// admitted again; one the count still keeps out is deferred again).
    pub fn take_ready(&mut self, client: &PublicKey) -> Vec<SignedRequest> {
        let end = self
            .clients
            .get(client)
            .map_or(1, |e| e.low)
            .saturating_add(self.window);
        let keys: Vec<(PublicKey, RequestId)> = self
            .early_of(client)
            .map(|(k, _)| *k)
            .take_while(|k| k.1 < end)
            .collect();
        keys.iter().filter_map(|k| self.early.remove(k)).collect()
    }

    /// Forgets the deferred requests (the replica is no longer the primary, or a state
    /// transfer replaced what it knew).
    pub fn clear_early(&mut self) {
        self.early.clear();
    }

    /// Number of deferred requests.
    pub fn early_len(&self) -> usize {
        self.early.len()
    }

    /// Remembers a request that waits for execution. Returns false if it was known or
    /// executed, if it lies beyond its client's window, or if its client has `window`
    /// requests waiting already. A request a pre-prepare carries did not pass `admit`:
    /// without the cap a primary could make a backup keep any number of one client's
    /// requests, and a request beyond the window, kept, would be forwarded to every
    /// later primary and watched, while every honest primary refuses it. (A request not
    /// kept still executes with its batch; it is only not watched or re-proposed.)
    pub fn add_waiting(&mut self, req: SignedRequest) -> bool {
        let key = req.key();
        if self.waiting.contains_key(&key) {
            return false;
        }
        self.early.remove(&key);
        let e = self.clients.entry(key.0).or_default();
        if e.executed.contains(&key.1)
            || (self.exact && (key.1 < e.low || key.1 >= e.low.saturating_add(self.window)))
            || e.waiting as u64 >= self.window
        {
            return false;
        }
        e.waiting += 1;
        self.insert_waiting(key, req);
        true
    }

    fn insert_waiting(&mut self, key: (PublicKey, RequestId), req: SignedRequest) {
        let arrival = self.next_arrival;
        self.next_arrival += 1;
        self.waiting.insert(key, (req, arrival));
        self.arrivals.insert(arrival, key);
    }

    /// `add_waiting` without its checks (for tests of the invariant checks).
    #[cfg(test)]
    pub(crate) fn add_waiting_unchecked(&mut self, req: SignedRequest) {
        let key = req.key();
        self.clients.entry(key.0).or_default().waiting += 1;
        self.insert_waiting(key, req);
    }

    /// Records an executed request and its reply.
    pub fn executed(&mut self, reply: SignedReply) {
        let key = (reply.body.client, reply.body.request_id);
        self.stop_waiting(&key);
        self.early.remove(&key);
        let e = self.clients.entry(key.0).or_default();
        if key.1 >= e.low {
            e.executed.insert(key.1);
        }
        // a primary may order ids beyond the window, and an inexact table may see a
        // client's executions start anywhere: the set stays bounded either way
        e.settle(self.window);
        let done: Vec<(PublicKey, RequestId)> = self
            .early
            .range((key.0, 0)..=(key.0, RequestId::MAX))
            .map(|(k, _)| *k)
            .filter(|k| e.has_executed(k.1))
            .collect();
        for k in done {
            self.early.remove(&k);
        }
        e.replies.insert(key.1, reply);
        while e.replies.len() as u64 > self.window {
            e.replies.pop_first();
        }
    }

    /// Forgets every waiting request (after a state transfer, which may have executed
    /// any of them; clients retransmit whatever is still open).
    pub fn clear_waiting(&mut self) {
        self.waiting.clear();
        self.arrivals.clear();
        for e in self.clients.values_mut() {
            e.waiting = 0;
        }
    }

    /// Requests waiting to execute, in a deterministic order.
    pub fn waiting(&self) -> impl Iterator<Item = &SignedRequest> {
        self.waiting.values().map(|(r, _)| r)
    }

    /// The request that has waited longest, if any.
    pub fn oldest_waiting(&self) -> Option<(PublicKey, RequestId)> {
        self.arrivals.first_key_value().map(|(_, k)| *k)
    }

    /// True if the request waits to execute.
    pub fn is_waiting(&self, key: &(PublicKey, RequestId)) -> bool {
        self.waiting.contains_key(key)
    }

    /// A waiting request by key.
    pub fn get_waiting(&self, key: &(PublicKey, RequestId)) -> Option<&SignedRequest> {
        self.waiting.get(key).map(|(r, _)| r)
    }

    /// Number of requests waiting.
    pub fn waiting_len(&self) -> usize {
        self.waiting.len()
    }

    /// The first broken rule of the table's own bookkeeping, if any (for the replica's
    /// invariant checks). One pass over the waiting requests, which are ordered by
    /// client, and one over the clients.
    pub(crate) fn check(&self) -> Result<(), String> {
        let mut counted = 0usize;
        let mut it = self.waiting.iter().peekable();
        while let Some((key, _)) = it.peek() {
            let client = key.0;
            // every waiting request's client has an entry that counts it
            let Some(e) = self.clients.get(&client) else {
                return Err(format!(
                    "request {} waits for a client with no entry",
                    key.1
                ));
            };
            let mut n = 0usize;
            while let Some((key, (req, arrival))) = it.next_if(|(k, _)| k.0 == client) {
                // the timer follows the oldest by arrival: every waiting request is
                // listed there under its own arrival
                if self.arrivals.get(arrival) != Some(key) {
                    return Err(format!("request {} is not listed by arrival", key.1));
                }
                // a request is filed under its own key, or lookups by key miss it
                if req.body.request_id != key.1 || req.body.client != key.0 {
                    return Err(format!(
                        "request {} of a client is filed under request {}",
                        req.body.request_id, key.1
                    ));
                }
                // an executed request never waits again: `executed` drops it
                if e.executed.contains(&key.1) {
                    return Err(format!("request {} waits but has executed", key.1));
                }
                n += 1;
            }
            // `admit` caps a client's waiting requests by this count
            if e.waiting != n {
                return Err(format!(
                    "a client's waiting count is {} but {n} of its requests wait",
                    e.waiting
                ));
            }
            counted += n;
        }
        let mut total = 0usize;
        for e in self.clients.values() {
            // the per-client cap is what bounds the memory one client can take
            if e.waiting as u64 > self.window {
                return Err(format!(
                    "a client has {} requests waiting, beyond its window of {}",
                    e.waiting, self.window
                ));
            }
            // the executed set and the reply cache are trimmed to the window
            if e.executed.len() as u64 > self.window || e.replies.len() as u64 > self.window {
                return Err(format!(
                    "a client keeps {} executed ids and {} replies, beyond its window of {}",
                    e.executed.len(),
                    e.replies.len(),
                    self.window
                ));
            }
            // ids below `low` are executed by definition, and `low` itself would have
            // been absorbed into it: the set holds only ids above `low`
            if e.low == 0 || e.executed.first().is_some_and(|first| *first <= e.low) {
                return Err(format!(
                    "a client's executed ids start at {:?} with low {}",
                    e.executed.first(),
                    e.low
                ));
            }
            total += e.waiting;
        }
        // a deferred request is not admitted: it neither waits nor executed, and the
        // deferred ones are capped per client like the waiting ones
        let mut per_client: BTreeMap<&PublicKey, u64> = BTreeMap::new();
        for (key, req) in &self.early {
            if req.key() != *key {
                return Err(format!(
                    "deferred request {} is filed under another key",
                    key.1
                ));
            }
            if self.waiting.contains_key(key) {
                return Err(format!("request {} is both deferred and waiting", key.1));
            }
            if self
                .clients
                .get(&key.0)
                .is_some_and(|e| e.has_executed(key.1))
            {
                return Err(format!("request {} is deferred but executed", key.1));
            }
            let n = per_client.entry(&key.0).or_default();
            *n += 1;
            if *n > self.window {
                return Err(format!(
                    "a client has {n} deferred requests, beyond its window of {}",
                    self.window
                ));
            }
        }
        if self.arrivals.len() != self.waiting.len() {
            return Err(format!(
                "{} requests listed by arrival, but {} wait",
                self.arrivals.len(),
                self.waiting.len()
            ));
        }
        // with every client that has waiting requests counted right above, the totals
        // agree only if no other client counts any
        if total != counted {
            return Err(format!(
                "clients count {total} waiting requests, but {counted} wait"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Reply, Request, Signed};
    use pbft_crypto::Keypair;

    fn req(k: &Keypair, rid: RequestId) -> SignedRequest {
        Signed::sign(
            Request {
                client: k.public(),
                request_id: rid,
                op: vec![],
            },
            k,
        )
    }

    fn reply(k: &Keypair, rid: RequestId) -> SignedReply {
        let mut one = SignedReply::sign_batch(
            vec![Reply {
                view: 0,
                seq: rid,
                client: k.public(),
                request_id: rid,
                request: req(k, rid).body.digest(),
                replica: 0,
                result: vec![rid as u8],
            }],
            k,
        );
        one.remove(0)
    }

    #[test]
    fn window_is_anchored_at_the_oldest_unexecuted_request() {
        let k = Keypair::from_seed(&[3; 32]).unwrap();
        let mut t = ClientTable::new(4);
        // request 1 is lost; 2..=40 execute one by one as the client keeps going
        for rid in 2..=4 {
            assert_eq!(t.admit(&req(&k, rid)), Admission::New);
            t.add_waiting(req(&k, rid));
            t.executed(reply(&k, rid));
        }
        // the window is still [1, 5): 5 is out, the late request 1 is still new
        assert_eq!(t.admit(&req(&k, 5)), Admission::OutOfWindow);
        assert_eq!(t.admit(&req(&k, 1)), Admission::New);
        t.add_waiting(req(&k, 1));
        assert_eq!(t.admit(&req(&k, 1)), Admission::Known);
        t.executed(reply(&k, 1));
        // now everything up to 4 executed: window [5, 9)
        assert_eq!(t.admit(&req(&k, 8)), Admission::New);
        assert_eq!(t.admit(&req(&k, 9)), Admission::OutOfWindow);
        assert!(matches!(t.admit(&req(&k, 3)), Admission::Cached(_)));
    }

    #[test]
    fn an_executed_id_signed_again_with_another_operation_is_not_answered_from_the_cache() {
        let k = Keypair::from_seed(&[13; 32]).unwrap();
        let mut t = ClientTable::new(4);
        assert!(t.add_waiting(req(&k, 1)));
        t.executed(reply(&k, 1));
        // a retransmission of the request that executed gets its reply
        assert!(matches!(t.admit(&req(&k, 1)), Admission::Cached(_)));
        // the same id with another operation is not that request
        let other = Signed::sign(
            Request {
                client: k.public(),
                request_id: 1,
                op: vec![9],
            },
            &k,
        );
        let a = t.admit(&other);
        assert!(
            !matches!(a, Admission::Cached(_)),
            "another operation was answered with the cached reply of request 1: {a:?}"
        );
        assert_eq!(a, Admission::Reused);
        assert_eq!(t.check(), Ok(()));
    }

    #[test]
    fn old_requests_without_a_cached_reply_are_too_old() {
        let k = Keypair::from_seed(&[4; 32]).unwrap();
        let mut t = ClientTable::new(2);
        for rid in 1..=6 {
            t.add_waiting(req(&k, rid));
            t.executed(reply(&k, rid));
        }
        assert_eq!(t.admit(&req(&k, 1)), Admission::TooOld);
        assert!(matches!(t.admit(&req(&k, 6)), Admission::Cached(_)));
        assert_eq!(t.admit(&req(&k, 0)), Admission::TooOld);
    }

    #[test]
    fn add_waiting_keeps_at_most_a_window_of_one_clients_requests() {
        // requests a pre-prepare carries come here without `admit`
        let k = Keypair::from_seed(&[6; 32]).unwrap();
        let mut t = ClientTable::new(2);
        assert!(!t.add_waiting(req(&k, 7)), "beyond the window [1, 3)");
        assert!(!t.add_waiting(req(&k, 0)), "not an id");
        assert!(t.add_waiting(req(&k, 2)));
        assert!(t.add_waiting(req(&k, 1)));
        assert_eq!(t.waiting_len(), 2);
        assert_eq!(t.check(), Ok(()));
        // an inexact table knows no window, but caps the count all the same
        let mut t = ClientTable::new(2);
        t.seed(ClientRecords::Unknown);
        assert!(t.add_waiting(req(&k, 7)));
        assert!(t.add_waiting(req(&k, 100)));
        assert!(
            !t.add_waiting(req(&k, 3)),
            "a third request for a window of 2"
        );
        assert_eq!(t.waiting_len(), 2);
        assert_eq!(t.check(), Ok(()));
    }

    #[test]
    fn an_inexact_table_cannot_classify_what_it_did_not_see_but_stays_bounded() {
        let k = Keypair::from_seed(&[5; 32]).unwrap();
        let mut t = ClientTable::new(3);
        t.seed(ClientRecords::Unknown);
        assert!(!t.is_exact());
        // a restarted replica sees request 100 first: it cannot know whether 100 is new
        assert_eq!(t.admit(&req(&k, 100)), Admission::Unknown);
        t.executed(reply(&k, 100));
        assert!(matches!(t.admit(&req(&k, 100)), Admission::Cached(_)));
        // nor whether an older request it never saw executed
        assert_eq!(t.admit(&req(&k, 50)), Admission::Unknown);
        // but never more than `window` waiting for one client
        for rid in 200..203 {
            assert!(t.add_waiting(req(&k, rid)));
        }
        assert_eq!(t.admit(&req(&k, 300)), Admission::OutOfWindow);
        // and the executed set stays bounded
        for rid in 400..420 {
            t.executed(reply(&k, rid));
        }
        assert!(t.clients[&k.public()].executed.len() <= 3);
        assert!(t.clients[&k.public()].replies.len() <= 3);
        assert_eq!(t.check(), Ok(()));
    }

    #[test]
    fn a_primary_defers_what_the_next_executions_can_make_room_for() {
        let (a, b) = (
            Keypair::from_seed(&[11; 32]).unwrap(),
            Keypair::from_seed(&[12; 32]).unwrap(),
        );
        let mut t = ClientTable::new(2);
        assert!(t.add_waiting(req(&a, 1)));
        assert!(t.add_waiting(req(&a, 2)));
        // the window [1, 3) is full: 3 and 4 may come within reach, 5 cannot yet
        assert_eq!(t.admit(&req(&a, 3)), Admission::OutOfWindow);
        assert!(t.defer(req(&a, 4)));
        assert!(t.defer(req(&a, 3)));
        assert!(!t.defer(req(&a, 3)), "deferred already");
        assert!(!t.defer(req(&a, 5)), "at low + 2 * window");
        assert!(!t.defer(req(&b, 0)), "not an id");
        assert_eq!(t.check(), Ok(()));
        // request 1 executes: the window is [2, 4), 3 is ready, 4 still waits for room
        t.executed(reply(&a, 1));
        let ready: Vec<RequestId> = t
            .take_ready(&a.public())
            .iter()
            .map(|r| r.body.request_id)
            .collect();
        assert_eq!(ready, vec![3]);
        assert_eq!(t.early_len(), 1);
        // 4 executes some other way (it cannot at a primary, but the table stays true)
        t.executed(reply(&a, 4));
        assert_eq!(t.early_len(), 0);
        // the per-client cap, and an inexact table defers nothing
        let mut t = ClientTable::new(2);
        for rid in [1, 2] {
            assert!(t.add_waiting(req(&b, rid)));
        }
        assert!(t.defer(req(&b, 4)) && t.defer(req(&b, 3)));
        // request 1 executes without the deferred ones being taken: still capped
        t.executed(reply(&b, 1));
        assert!(!t.defer(req(&b, 5)), "a window's worth deferred already");
        assert_eq!(t.check(), Ok(()));
        let mut u = ClientTable::new(2);
        u.seed(ClientRecords::Unknown);
        assert!(!u.defer(req(&b, 3)));
        assert_eq!(t.check(), Ok(()));
    }

    fn record(k: &Keypair, low: RequestId, executed: &[RequestId]) -> ClientRecord {
        ClientRecord {
            client: k.public(),
            low,
            executed: executed.to_vec(),
        }
    }

    #[test]
    fn a_seeded_table_is_exact_and_judges_as_the_ledger_records() {
        let (a, b, c) = (
            Keypair::from_seed(&[7; 32]).unwrap(),
            Keypair::from_seed(&[8; 32]).unwrap(),
            Keypair::from_seed(&[9; 32]).unwrap(),
        );
        let mut t = ClientTable::new(4);
        t.seed(ClientRecords::Unknown);
        // waiting before the seed: c's 2 executed meanwhile (in the snapshot), c's 4 not
        assert!(t.add_waiting(req(&c, 2)));
        assert!(t.add_waiting(req(&c, 4)));
        t.seed(ClientRecords::Complete(vec![
            record(&a, 6, &[8]),
            record(&c, 1, &[2]),
        ]));
        assert!(t.is_exact());
        // client a: 1..=5 and 8 executed, 6 and 7 open, the window is [6, 10)
        for rid in [1, 5, 8] {
            assert_eq!(t.admit(&req(&a, rid)), Admission::TooOld, "a's {rid}");
        }
        for rid in [6, 7, 9] {
            assert_eq!(t.admit(&req(&a, rid)), Admission::New, "a's {rid}");
        }
        assert_eq!(t.admit(&req(&a, 10)), Admission::OutOfWindow);
        // client b is not listed: it executed nothing
        assert_eq!(t.admit(&req(&b, 1)), Admission::New);
        assert_eq!(t.admit(&req(&b, 5)), Admission::OutOfWindow);
        // client c's executed request stopped waiting, the other still waits
        assert!(!t.is_waiting(&(c.public(), 2)));
        assert_eq!(t.admit(&req(&c, 2)), Admission::TooOld);
        assert_eq!(t.admit(&req(&c, 4)), Admission::Known);
        assert_eq!(t.waiting_len(), 1);
        assert_eq!(t.check(), Ok(()));
    }

    #[test]
    fn a_seeded_table_matches_one_that_saw_every_execution() {
        // whatever order a client's requests execute in, seeding from the ledger's
        // record gives the table that saw them execute one by one
        let k = Keypair::from_seed(&[10; 32]).unwrap();
        let window = 4;
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        for case in 0..200 {
            let mut seen = ClientTable::new(window);
            let mut ledger_low = 1;
            let mut ledger: Vec<RequestId> = Vec::new();
            for _ in 0..(case % 12) {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let rid = 1 + rng % 16;
                seen.executed(reply(&k, rid));
                if rid >= ledger_low && !ledger.contains(&rid) {
                    ledger.push(rid);
                    ledger.sort_unstable();
                    while ledger.first() == Some(&ledger_low) {
                        ledger.remove(0);
                        ledger_low += 1;
                    }
                }
            }
            let mut seeded = ClientTable::new(window);
            seeded.seed(ClientRecords::Complete(vec![record(
                &k, ledger_low, &ledger,
            )]));
            for rid in 1..24 {
                let judged = |t: &ClientTable| match t.admit(&req(&k, rid)) {
                    Admission::Cached(_) => Admission::TooOld,
                    other => other,
                };
                assert_eq!(
                    judged(&seeded),
                    judged(&seen),
                    "case {case}: request {rid} (ledger low {ledger_low}, executed {ledger:?})"
                );
            }
        }
    }
}
