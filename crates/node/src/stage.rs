//! The verification stage: worker threads decode frames and check signatures off the
//! consensus thread. Client requests that arrive together are checked as one batch,
//! and every valid signature is remembered, so a request verified on arrival is not
//! verified again inside the pre-prepare that carries it.

use crate::metrics::Metrics;
use crossbeam_channel::{Receiver, Sender};
use pbft_crypto::Digest;
use pbft_protocol::envelope::{self, Limits};
use pbft_protocol::{Message, Query, SignatureCache, Verified, VerifiedRequest, Verifier};
use pbft_transport::{ClientId, Inbound, Origin, Transport};
use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};

/// What the consensus thread receives.
// Inputs pass through a channel once; boxing would add an allocation per message.
#[allow(clippy::large_enum_variant)]
pub enum Input {
    /// A verified message from a validator.
    Peer(Verified),
    /// A verified client request, and the connection it came on.
    Request(VerifiedRequest, ClientId),
    /// A read-only query from a client connection.
    Query {
        /// The connection.
        conn: ClientId,
        /// Echoed id.
        id: u64,
        /// The question.
        query: Query,
    },
    /// Stop the node.
    Stop,
}

/// A bounded set of signatures found valid (oldest forgotten first).
pub struct SigCache {
    inner: Mutex<(HashSet<Digest>, VecDeque<Digest>)>,
    capacity: usize,
}

impl SigCache {
    /// A cache holding at most `capacity` signatures.
    pub fn new(capacity: usize) -> SigCache {
        SigCache {
            inner: Mutex::new((HashSet::new(), VecDeque::new())),
            capacity,
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut (HashSet<Digest>, VecDeque<Digest>)) -> R) -> R {
        let mut g = match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        f(&mut g)
    }
}

impl SignatureCache for SigCache {
    fn contains(&self, id: &Digest) -> bool {
        self.with(|(set, _)| set.contains(id))
    }

    fn insert(&self, id: Digest) {
        let cap = self.capacity;
        self.with(|(set, order)| {
            if set.insert(id) {
                order.push_back(id);
                while order.len() > cap {
                    if let Some(old) = order.pop_front() {
                        set.remove(&old);
                    }
                }
            }
        })
    }
}

/// Everything a worker needs.
#[derive(Clone)]
pub struct Stage {
    /// Signature checks.
    pub verifier: Arc<Verifier>,
    /// Signatures already checked.
    pub cache: Arc<SigCache>,
    /// Decoding limits.
    pub limits: Limits,
    /// Where misbehaviour is reported.
    pub transport: Transport,
    /// Where rejections are counted.
    pub metrics: Metrics,
    /// The consensus thread.
    pub out: Sender<Input>,
}

/// Most frames a worker takes at once (client signatures among them are checked as one
/// batch).
const GULP: usize = 128;

impl Stage {
    fn reject(&self, origin: Origin, reason: &'static str) {
        self.metrics.rejected(reason);
        self.transport.report(origin, reason);
    }

    /// Runs one worker until the input channel closes.
    pub fn run(self, rx: Receiver<Inbound>) {
        while let Ok(first) = rx.recv() {
            let mut frames = vec![first];
            while frames.len() < GULP {
                match rx.try_recv() {
                    Ok(f) => frames.push(f),
                    Err(_) => break,
                }
            }
            let mut requests = Vec::new();
            let mut conns = Vec::new();
            for frame in frames {
                match frame {
                    Inbound::Peer { from, frame } => {
                        let msg = match envelope::decode(&frame, &self.limits) {
                            Ok(m) => m,
                            Err(e) => {
                                self.reject(Origin::Peer(from), e.reason());
                                continue;
                            }
                        };
                        match self.verifier.verify_cached(from, msg, self.cache.as_ref()) {
                            Ok(v) => {
                                if self.out.send(Input::Peer(v)).is_err() {
                                    return;
                                }
                            }
                            Err(e) => self.reject(Origin::Peer(from), e.reason()),
                        }
                    }
                    Inbound::Client { conn, frame } => {
                        match envelope::decode(&frame, &self.limits) {
                            Ok(Message::Request(r)) => {
                                requests.push(r);
                                conns.push(conn);
                            }
                            Ok(Message::Query { id, query }) => {
                                if self.out.send(Input::Query { conn, id, query }).is_err() {
                                    return;
                                }
                            }
                            Ok(_) => self.reject(Origin::Client(conn), "client sent a non-request"),
                            Err(e) => self.reject(Origin::Client(conn), e.reason()),
                        }
                    }
                    Inbound::ClientClosed(_) => {}
                }
            }
            if requests.is_empty() {
                continue;
            }
            let results = self
                .verifier
                .verify_requests_cached(requests, self.cache.as_ref());
            for (result, conn) in results.into_iter().zip(conns) {
                match result {
                    Ok(v) => {
                        if self.out.send(Input::Request(v, conn)).is_err() {
                            return;
                        }
                    }
                    Err(e) => self.reject(Origin::Client(conn), e.reason()),
                }
            }
        }
    }
}
