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
    /// A verified client request, the connection it came on, and whether that
    /// connection is bound to the request's client (it proved it holds the key).
    Request(VerifiedRequest, ClientId, bool),
    /// A read-only query from a client connection.
    Query {
        /// The connection.
        conn: ClientId,
        /// Echoed id.
        id: u64,
        /// The question.
        query: Query,
    },
    /// A client connection closed (its replies can no longer go there).
    ClientClosed(ClientId),
    /// A client connection bound to these accounts was admitted.
    ClientOpened(ClientId, pbft_transport::Bound),
    /// Stop the node.
    Stop,
}

/// A bounded set of signatures found valid (oldest forgotten first).
pub struct SigCache {
    inner: Mutex<(HashSet<Digest>, VecDeque<Digest>)>,
    capacity: usize,
}

impl SigCache {
    /// A cache holding at most `capacity` signatures. Its memory is taken up front, so
    /// a validator's footprint does not creep up while the cache fills: the set gets
    /// room for twice the capacity, because a full set that keeps forgetting and
    /// inserting would otherwise grow to that size anyway (a hash table full of removed
    /// entries is rebuilt larger unless it is at most half full).
    pub fn new(capacity: usize) -> SigCache {
        SigCache {
            inner: Mutex::new((
                HashSet::with_capacity(capacity.saturating_mul(2)),
                VecDeque::with_capacity(capacity.saturating_add(1)),
            )),
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
    /// The consensus thread's queue of validators' inputs.
    pub out: Sender<Input>,
    /// The consensus thread's queue of clients' inputs.
    pub client_out: Sender<Input>,
}

/// Puts a client's input on the consensus thread's clients' queue without waiting;
/// a full queue drops it (counted as `client_queue_full`). False once the queue is gone.
fn offer(queue: &Sender<Input>, input: Input, metrics: &Metrics) -> bool {
    match queue.try_send(input) {
        Ok(()) => true,
        Err(crossbeam_channel::TrySendError::Full(_)) => {
            metrics.rejected("client_queue_full");
            true
        }
        Err(crossbeam_channel::TrySendError::Disconnected(_)) => false,
    }
}

/// Most frames a worker takes at once (client signatures among them are checked as one
/// batch).
const GULP: usize = 128;
/// Of each gulp, the places kept for clients' frames when they wait.
const CLIENT_SHARE: usize = 32;

impl Stage {
    /// Hands a client's input to the consensus thread without waiting: when the
    /// clients' queue is full the input is dropped and counted, so that a worker never
    /// blocks on client work while validators' frames wait (the client retransmits).
    /// False once the consensus thread is gone.
    fn to_core(&self, input: Input) -> bool {
        offer(&self.client_out, input, &self.metrics)
    }

    fn reject(&self, origin: Origin, reason: &'static str) {
        self.metrics.rejected(reason);
        self.transport.report(origin, reason);
    }

    /// The next frames to work on: validators' first, up to [`GULP`] less the
    /// clients' share; then clients' up to [`CLIENT_SHARE`]; then either to fill up to
    /// [`GULP`]. Waits for either when both are empty. `None` once both are closed.
    /// The share keeps clients served while a traitor validator keeps the validators'
    /// queue full.
    pub(crate) fn next_frames(
        peers: &Receiver<Inbound>,
        clients: &Receiver<Inbound>,
    ) -> Option<Vec<Inbound>> {
        let first = match peers.try_recv() {
            Ok(f) => f,
            Err(_) => {
                crossbeam_channel::select! {
                    recv(peers) -> f => match f {
                        Ok(f) => f,
                        Err(_) => clients.recv().ok()?,
                    },
                    recv(clients) -> f => match f {
                        Ok(f) => f,
                        Err(_) => peers.recv().ok()?,
                    },
                }
            }
        };
        let mut frames = vec![first];
        let take = |frames: &mut Vec<Inbound>, rx: &Receiver<Inbound>, upto: usize| {
            while frames.len() < upto {
                match rx.try_recv() {
                    Ok(f) => frames.push(f),
                    Err(_) => break,
                }
            }
        };
        take(&mut frames, peers, GULP - CLIENT_SHARE);
        let upto = frames.len() + CLIENT_SHARE;
        take(&mut frames, clients, upto);
        take(&mut frames, peers, GULP);
        take(&mut frames, clients, GULP);
        Some(frames)
    }

    /// Runs one worker until both input channels close.
    pub fn run(self, peers: Receiver<Inbound>, clients: Receiver<Inbound>) {
        while let Some(frames) = Self::next_frames(&peers, &clients) {
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
                                self.metrics.received(v.message().kind());
                                if self.out.send(Input::Peer(v)).is_err() {
                                    return;
                                }
                            }
                            Err(e) => self.reject(Origin::Peer(from), e.reason()),
                        }
                    }
                    Inbound::Client {
                        conn, bound, frame, ..
                    } => match envelope::decode_client(&frame, &self.limits) {
                        Ok(Message::Request(r)) => {
                            conns.push((conn, bound.holds(&r.body.client)));
                            requests.push(r);
                        }
                        Ok(Message::Query { id, query }) => {
                            if !self.to_core(Input::Query { conn, id, query }) {
                                return;
                            }
                        }
                        Ok(_) => self.reject(Origin::Client(conn), "client sent a non-request"),
                        Err(e) => self.reject(Origin::Client(conn), e.reason()),
                    },
                    Inbound::ClientOpened { conn, bound } => {
                        // like a close, it must arrive: it may wait
                        if self
                            .client_out
                            .send(Input::ClientOpened(conn, bound))
                            .is_err()
                        {
                            return;
                        }
                    }
                    Inbound::ClientClosed(conn) => {
                        // a close must arrive (routes and budgets are dropped on
                        // it): it may wait
                        if self.client_out.send(Input::ClientClosed(conn)).is_err() {
                            return;
                        }
                    }
                }
            }
            if requests.is_empty() {
                continue;
            }
            let results = self
                .verifier
                .verify_requests_cached(requests, self.cache.as_ref());
            for (result, (conn, bound)) in results.into_iter().zip(conns) {
                match result {
                    Ok(v) => {
                        self.metrics.received("request");
                        if !self.to_core(Input::Request(v, conn, bound)) {
                            return;
                        }
                    }
                    Err(e) => self.reject(Origin::Client(conn), e.reason()),
                }
            }
        }
    }
}

#[cfg(test)]
mod priority {
    use super::*;
    use bytes::Bytes;

    /// A full clients' queue drops a client's input rather than block the worker (a
    /// blocked worker would keep validators' frames waiting behind client work).
    #[test]
    fn a_full_client_queue_drops_rather_than_blocks() {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let metrics = Metrics::new(0);
        assert!(offer(&tx, Input::ClientClosed(ClientId(1)), &metrics));
        // the queue is full: this returns at once, the input dropped and counted
        assert!(offer(&tx, Input::ClientClosed(ClientId(2)), &metrics));
        assert!(metrics.render().contains("client_queue_full"));
        assert!(matches!(
            rx.try_recv(),
            Ok(Input::ClientClosed(ClientId(1)))
        ));
        assert!(rx.try_recv().is_err());
        drop(rx);
        assert!(!offer(&tx, Input::ClientClosed(ClientId(3)), &metrics));
    }

    /// Validators' frames are worked on first, whatever waited longer.
    #[test]
    fn validators_frames_come_first_in_a_workers_gulp() {
        let (ptx, prx) = crossbeam_channel::unbounded();
        let (ctx, crx) = crossbeam_channel::unbounded();
        for c in 0..200 {
            ctx.send(Inbound::ClientClosed(ClientId(c))).expect("send");
        }
        for from in 0..5 {
            ptx.send(Inbound::Peer {
                from,
                frame: Bytes::from_static(b"x"),
            })
            .expect("send");
        }
        let frames = Stage::next_frames(&prx, &crx).expect("open");
        assert_eq!(frames.len(), GULP);
        assert!(frames[..5]
            .iter()
            .all(|f| matches!(f, Inbound::Peer { .. })));
        assert!(frames[5..]
            .iter()
            .all(|f| matches!(f, Inbound::ClientClosed(_))));
    }

    /// A validator that keeps the validators' queue full does not starve clients: a
    /// share of every gulp is theirs (issue 23, item 5).
    #[test]
    fn clients_keep_a_share_of_each_gulp_under_a_validator_flood() {
        let (ptx, prx) = crossbeam_channel::unbounded();
        let (ctx, crx) = crossbeam_channel::unbounded();
        for c in 0..100 {
            ctx.send(Inbound::ClientClosed(ClientId(c))).expect("send");
        }
        for _ in 0..1000 {
            ptx.send(Inbound::Peer {
                from: 3,
                frame: Bytes::from_static(b"x"),
            })
            .expect("send");
        }
        let frames = Stage::next_frames(&prx, &crx).expect("open");
        assert_eq!(frames.len(), GULP);
        let clients = frames
            .iter()
            .filter(|f| matches!(f, Inbound::ClientClosed(_)))
            .count();
        assert_eq!(clients, CLIENT_SHARE);
        // with no clients waiting, validators fill the whole gulp
        while crx.try_recv().is_ok() {}
        let frames = Stage::next_frames(&prx, &crx).expect("open");
        assert_eq!(frames.len(), GULP);
    }
}

#[cfg(test)]
mod tests {
    //! `SigCache`: contains what was inserted, inserts are idempotent, and it holds at
    //! most `capacity` signatures, forgetting the oldest first; a forgotten signature
    //! is only checked again by the verifier, never trusted or refused.

    use super::*;
    use pbft_crypto::Domain;
    use pbft_crypto::Keypair;
    use pbft_protocol::{signature_id, Batch, PrePrepare, Request, Signable, Signed};

    fn id(i: u32) -> Digest {
        Digest::of(&i.to_le_bytes())
    }

    /// (set size, queue size): the two views of the cache must agree.
    fn sizes(c: &SigCache) -> (usize, usize) {
        c.with(|(set, order)| (set.len(), order.len()))
    }

    #[test]
    fn contains_exactly_what_was_inserted() {
        let c = SigCache::new(8);
        assert!(c.enabled());
        assert!(!c.contains(&id(1)));
        c.insert(id(1));
        c.insert(id(2));
        assert!(c.contains(&id(1)));
        assert!(c.contains(&id(2)));
        assert!(!c.contains(&id(3)));
        assert_eq!(sizes(&c), (2, 2));
    }

    #[test]
    fn insert_is_idempotent() {
        let c = SigCache::new(3);
        c.insert(id(1));
        c.insert(id(1));
        c.insert(id(1));
        assert_eq!(sizes(&c), (1, 1));
        // a repeated insert took no second slot: two more still fit beside it
        c.insert(id(2));
        c.insert(id(3));
        assert!((1..=3).all(|i| c.contains(&id(i))));
        assert_eq!(sizes(&c), (3, 3));
    }

    #[test]
    fn bounded_and_oldest_evicted_first() {
        let c = SigCache::new(3);
        for i in 0..3 {
            c.insert(id(i));
        }
        assert!((0..3).all(|i| c.contains(&id(i))));
        c.insert(id(3));
        assert!(!c.contains(&id(0)), "the oldest goes first");
        assert!((1..=3).all(|i| c.contains(&id(i))));
        for i in 4..100 {
            c.insert(id(i));
            assert_eq!(sizes(&c), (3, 3));
        }
        assert!((97..100).all(|i| c.contains(&id(i))));
        assert!((0..97).all(|i| !c.contains(&id(i))));
    }

    /// The memory is taken at construction: filling the cache and churning through
    /// many times its capacity never grows the set or the queue.
    #[test]
    fn memory_is_taken_up_front_and_never_grows() {
        let c = SigCache::new(1000);
        let caps = |c: &SigCache| c.with(|(set, order)| (set.capacity(), order.capacity()));
        let before = caps(&c);
        assert!(before.0 >= 2000 && before.1 > 1000, "{before:?}");
        // (the set's reported capacity may dip as removals leave tombstones, which an
        // in-place rebuild clears; a regrown table would report about twice as much)
        for i in 0..50_000 {
            c.insert(id(i));
            let now = caps(&c);
            assert!(
                now.0 <= before.0 && now.1 == before.1,
                "{now:?} after {before:?}"
            );
        }
        assert_eq!(sizes(&c), (1000, 1000));
    }

    #[test]
    fn bounded_under_concurrent_inserts() {
        let c = Arc::new(SigCache::new(100));
        let workers: Vec<_> = (0..4u32)
            .map(|w| {
                let c = c.clone();
                std::thread::spawn(move || {
                    for i in 0..1000 {
                        c.insert(id(w * 1000 + i));
                        c.insert(id(i)); // shared by all workers
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().expect("worker");
        }
        assert_eq!(sizes(&c), (100, 100));
    }

    #[test]
    fn an_evicted_signature_is_checked_again() {
        let client = Keypair::from_seed(&[200; 32]).expect("seed");
        let primary = Keypair::from_seed(&[201; 32]).expect("seed");
        let verifier = Verifier::new(vec![primary.public()]);
        let req = |n: u64| {
            Signed::sign(
                Request {
                    client: client.public(),
                    request_id: n,
                    op: vec![n as u8],
                },
                &client,
            )
        };
        let cache = SigCache::new(1);
        let (a, b) = (req(1), req(2));
        let a_id = signature_id(
            &client.public(),
            Domain::Request,
            &a.body.signing_bytes(),
            &a.sig,
        );
        let results = verifier.verify_requests_cached(vec![a.clone(), b], &cache);
        assert!(results.iter().all(|r| r.is_ok()));
        assert_eq!(sizes(&cache), (1, 1));
        assert!(!cache.contains(&a_id), "`a` was forgotten");
        let batch = Batch { requests: vec![a] };
        let pp = Signed::sign(
            PrePrepare {
                view: 0,
                seq: 1,
                digest: batch.digest(),
            },
            &primary,
        );
        let v = verifier
            .verify_cached(
                0,
                Message::PrePrepare {
                    pre_prepare: pp,
                    batch,
                },
                &cache,
            )
            .expect("valid pre-prepare");
        assert!(v.bad_requests().is_empty());
        // checked again (a miss) and, being valid, remembered again
        assert!(cache.contains(&a_id));
    }
}
