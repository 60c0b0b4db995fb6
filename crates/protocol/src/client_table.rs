//! The client table: exactly-once per `(client, request_id)` with a bounded window per
//! client, and cached replies for retransmissions.
//!
//! The executor is the authority on duplicates (it stores a receipt per request and
//! answers a re-executed request with a deterministic "duplicate" no-op). This table is
//! the replica's view of it: it answers retransmissions from the cache, refuses requests
//! outside a client's window, and remembers which requests wait to be executed.

use crate::message::{Reply, RequestId, Signed, SignedRequest};
use pbft_crypto::PublicKey;
use std::collections::BTreeMap;

/// What to do with an incoming request.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    /// Executed already; the cached reply is returned.
    Cached(Box<Signed<Reply>>),
    /// Already known and waiting to execute.
    Known,
    /// New and inside the window.
    New,
    /// Executed so long ago that no reply is cached; ignored.
    TooOld,
    /// Beyond the client's window; ignored.
    OutOfWindow,
}

#[derive(Clone, Debug, Default)]
struct Entry {
    /// Highest request id executed for this client.
    max_executed: RequestId,
    /// Replies to the most recent executed requests.
    replies: BTreeMap<RequestId, Signed<Reply>>,
}

/// Per-client state.
#[derive(Clone, Debug)]
pub struct ClientTable {
    window: u64,
    clients: BTreeMap<PublicKey, Entry>,
    /// Requests seen but not executed, in a deterministic order.
    waiting: BTreeMap<(PublicKey, RequestId), SignedRequest>,
}

impl ClientTable {
    /// An empty table with a per-client window of `window` requests.
    pub fn new(window: u64) -> Self {
        ClientTable {
            window,
            clients: BTreeMap::new(),
            waiting: BTreeMap::new(),
        }
    }

    /// Classifies a request.
    pub fn admit(&self, req: &SignedRequest) -> Admission {
        let (client, rid) = req.key();
        let entry = self.clients.get(&client);
        let max = entry.map_or(0, |e| e.max_executed);
        if let Some(r) = entry.and_then(|e| e.replies.get(&rid)) {
            return Admission::Cached(Box::new(r.clone()));
        }
        if self.waiting.contains_key(&(client, rid)) {
            return Admission::Known;
        }
        if rid == 0 || rid.saturating_add(self.window) <= max {
            return Admission::TooOld;
        }
        if rid > max.saturating_add(self.window) {
            return Admission::OutOfWindow;
        }
        Admission::New
    }

    /// Remembers a request that waits for execution. Returns false if it was known.
    pub fn add_waiting(&mut self, req: SignedRequest) -> bool {
        let key = req.key();
        if self.waiting.contains_key(&key) || self.is_executed(&key) {
            return false;
        }
        self.waiting.insert(key, req);
        true
    }

    fn is_executed(&self, key: &(PublicKey, RequestId)) -> bool {
        self.clients
            .get(&key.0)
            .is_some_and(|e| e.replies.contains_key(&key.1))
    }

    /// Records an executed request and its reply.
    pub fn executed(&mut self, reply: Signed<Reply>) {
        let key = (reply.body.client, reply.body.request_id);
        self.waiting.remove(&key);
        let window = self.window;
        let e = self.clients.entry(key.0).or_default();
        e.max_executed = e.max_executed.max(key.1);
        e.replies.insert(key.1, reply);
        let floor = e.max_executed.saturating_sub(window);
        e.replies.retain(|rid, _| *rid > floor);
        // anything waiting at or below the floor can never be answered from the cache
        // and is treated as too old
        self.waiting
            .retain(|(c, rid), _| *c != key.0 || *rid > floor);
    }

    /// Requests waiting to execute, in a deterministic order.
    pub fn waiting(&self) -> impl Iterator<Item = &SignedRequest> {
        self.waiting.values()
    }

    /// True if the request waits to execute.
    pub fn is_waiting(&self, key: &(PublicKey, RequestId)) -> bool {
        self.waiting.contains_key(key)
    }

    /// A waiting request by key.
    pub fn get_waiting(&self, key: &(PublicKey, RequestId)) -> Option<&SignedRequest> {
        self.waiting.get(key)
    }

    /// Number of requests waiting.
    pub fn waiting_len(&self) -> usize {
        self.waiting.len()
    }
}
