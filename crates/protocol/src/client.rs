//! The client's side of the protocol as a pure, sans-IO state machine: which validators
//! a request goes to, when it is sent again, when it is given up, and when a result is
//! final.
//!
//! A driver (the tokio client in `pbft-client`, the simulator's clients) owns a
//! [`ClientCore`] and
//! - hands it signed requests with [`ClientCore::submit`],
//! - hands it every reply with [`ClientCore::on_reply`], naming the validator the reply
//!   came from as the transport knows it (a pinned connection, the simulated network),
//! - calls [`ClientCore::on_timeout`] once [`ClientCore::next_timeout`] has passed,
//! - after each of these calls, sends everything [`ClientCore::poll_transmit`] yields and
//!   reads [`ClientCore::poll_accepted`] and [`ClientCore::poll_expired`].
//!
//! Time is an input ([`Instant`]) and every collection is ordered, so the same inputs
//! give the same outputs: a simulation that drives this core stays deterministic.
//!
//! # The acceptance rule
//!
//! A reply counts for a request only if it binds that request's digest
//! ([`crate::Request::digest`]): a reply to another operation signed under the same
//! (client, request id) says nothing of this one, whatever its result. A validator's
//! *answer* to a request is the pair (result, seq) of its reply. A request is accepted
//! once f+1 distinct validators gave the same answer: at most f validators are
//! traitors, so at least one honest validator vouches for both the result and the
//! sequence number the client reports, and that result is the outcome of executing
//! exactly the operation the client signed (or the refusal of it). Each validator
//! counts once per request, with its latest answer; the client keeps one bounded
//! [`Claim`] per validator and request (see [`ClientCore::on_reply`] for why).
//!
//! The client believes in a view only from an accepted request's matching replies:
//! the highest view that f+1 of them report reaching, so at least one honest validator
//! was in it or beyond, and a traitor cannot pin the client to a primary of its
//! choosing. The view never goes back.
//!
//! # Where requests go
//!
//! A new request goes to the primary of the view the client believes in, and to every
//! validator that has not yet replied to this client key: a validator answers a client
//! on the connection the client's requests came in on, so until it has replied once it
//! may not know where to answer, and the request itself teaches it. A request not
//! accepted within the retransmission interval goes to every validator, again every
//! interval, so that backups learn of a request the primary sits on.
//!
//! # Limits
//!
//! Requests wait in a queue until both limits leave room: the most requests in flight
//! overall, and the client window per client key, counted as the validators count it
//! (the ids of one key in flight span at most `window` consecutive ids; see
//! [`crate::client_table`]). A request sent beyond the validators' window would only be
//! ignored by them until a retransmission.

use crate::envelope;
use crate::message::{Message, ReplicaId, Reply, RequestId, Seq, SignedRequest, View};
use crate::time::{Duration, Instant};
use pbft_crypto::{Digest, PublicKey};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

/// A request's identity: (client, request id).
type Key = (PublicKey, RequestId);

/// The shortest retransmission interval: a zero interval would re-send at the same
/// instant forever.
const MIN_RETRANSMIT: Duration = Duration::from_micros(1);

/// How a [`ClientCore`] behaves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientConfig {
    /// Number of validators n; they are numbered 0..n.
    pub validators: usize,
    /// Most traitors tolerated; f+1 matching answers accept a result.
    pub f: usize,
    /// The client window of one client key: the ids of its requests in flight span at
    /// most this many consecutive ids (the validators' `client_window`). At least 1.
    pub window: u64,
    /// Most requests in flight overall, across client keys. At least 1.
    pub max_in_flight: usize,
    /// How long a request waits for acceptance before it is sent to every validator,
    /// and again after each further interval.
    pub retransmit: Duration,
    /// How long after its first send a request is given up; `None` never.
    pub deadline: Option<Duration>,
}

impl ClientConfig {
    /// A configuration for `validators` validators with f = (n-1)/3, one request in
    /// flight, a window of one and no deadline; set the other fields as needed.
    pub fn new(validators: usize, retransmit: Duration) -> ClientConfig {
        ClientConfig {
            validators,
            f: validators.saturating_sub(1) / 3,
            window: 1,
            max_in_flight: 1,
            retransmit,
            deadline: None,
        }
    }
}

/// Why a [`ClientConfig`] is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientConfigError {
    /// No validators.
    #[error("a client needs at least one validator")]
    NoValidators,
    /// More matching answers needed than there are validators.
    #[error("f+1 = {needed} matching replies can never come from {validators} validators")]
    QuorumTooLarge {
        /// f+1.
        needed: usize,
        /// n.
        validators: usize,
    },
}

/// Why a request was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// A request with this (client, request id) is already queued or in flight.
    #[error("request {request_id} of client {} is already queued or in flight", client.short())]
    Duplicate {
        /// The client.
        client: PublicKey,
        /// The request id.
        request_id: RequestId,
    },
}

/// Who a transmission goes to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recipients {
    /// Every validator.
    All,
    /// These validators, in ascending order (never all of them: that is [`Self::All`]).
    Only(Vec<ReplicaId>),
}

impl Recipients {
    /// True if `v` is among the recipients.
    pub fn includes(&self, v: ReplicaId) -> bool {
        match self {
            Recipients::All => true,
            Recipients::Only(vs) => vs.contains(&v),
        }
    }
}

/// A request to send: its frame, encoded once per request and shared by every
/// (re)transmission.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Where it goes.
    pub to: Recipients,
    /// The client of the request.
    pub client: PublicKey,
    /// Its request id.
    pub request_id: RequestId,
    /// True for a retransmission.
    pub retransmission: bool,
    /// The encoded `Message::Request` frame ([`envelope::encode`]).
    pub bytes: Arc<[u8]>,
}

/// Most bytes of a result a [`Claim`] keeps for reports.
pub const CLAIM_PREVIEW_BYTES: usize = 32;

/// What one validator answered to one request, as the client keeps it: the result's
/// digest and its first bytes, never the whole result, so a claim is small whatever a
/// validator sends (a reply frame may be megabytes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    /// SHA-256 of the result it reported: answers are compared by it.
    pub result_digest: Digest,
    /// The result's first bytes (at most [`CLAIM_PREVIEW_BYTES`]), for reports.
    pub preview: Vec<u8>,
    /// The result's length in bytes.
    pub result_len: usize,
    /// The sequence number it reported.
    pub seq: Seq,
    /// The view it reported.
    pub view: View,
}

impl Claim {
    /// The claim a reply makes.
    pub fn of(reply: &Reply) -> Claim {
        Claim {
            result_digest: Digest::of(&reply.result),
            preview: reply.result[..reply.result.len().min(CLAIM_PREVIEW_BYTES)].to_vec(),
            result_len: reply.result.len(),
            seq: reply.seq,
            view: reply.view,
        }
    }
}

/// A request whose answer f+1 validators agreed on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accepted {
    /// The client.
    pub client: PublicKey,
    /// Its request id.
    pub request_id: RequestId,
    /// The request itself.
    pub request: SignedRequest,
    /// The agreed result (an encoded receipt).
    pub result: Vec<u8>,
    /// The agreed sequence number of the batch that carried the request.
    pub seq: Seq,
    /// When it was accepted.
    pub at: Instant,
    /// From its first send to its acceptance.
    pub latency: Duration,
}

/// A request given up at its deadline, with what the validators had answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expired {
    /// The client.
    pub client: PublicKey,
    /// Its request id.
    pub request_id: RequestId,
    /// The request itself.
    pub request: SignedRequest,
    /// From its first send until it was given up.
    pub waited: Duration,
    /// The answer each validator that replied gave (its latest reply).
    pub replies: BTreeMap<ReplicaId, Claim>,
}

impl Expired {
    /// The most validators that gave one answer (less than f+1, or it would have been
    /// accepted).
    pub fn largest_agreement(&self) -> usize {
        let mut tally: BTreeMap<(Digest, Seq), usize> = BTreeMap::new();
        for c in self.replies.values() {
            *tally.entry((c.result_digest, c.seq)).or_insert(0) += 1;
        }
        tally.values().copied().max().unwrap_or(0)
    }
}

/// What [`ClientCore::on_reply`] made of a reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyOutcome {
    /// It completed f+1 matching answers: the request is accepted.
    Accepted,
    /// Its validator's first answer to this request was recorded; not yet f+1.
    Counted,
    /// Its validator's answer changed: the new one replaced the old; not yet f+1.
    Replaced,
    /// Its validator gave this very answer already; nothing changed.
    AlreadyCounted,
    /// No such request is in flight (never sent, accepted already, or given up).
    NotInFlight,
    /// It answers another request signed under the same (client, request id): its
    /// request digest is not the one of the request in flight, so its result is not
    /// this request's outcome. Not counted.
    OtherRequest,
    /// The reply names another validator than the one it came from.
    WrongReplica,
    /// It came from a validator id outside 0..n.
    UnknownValidator,
}

/// One request in flight.
#[derive(Debug)]
struct InFlight {
    request: SignedRequest,
    /// [`crate::Request::digest`] of `request`: a reply counts only if it binds it.
    digest: Digest,
    bytes: Arc<[u8]>,
    first_sent: Instant,
    last_sent: Instant,
    /// The latest answer of each validator that replied: one per validator.
    claims: BTreeMap<ReplicaId, Claim>,
}

/// What the core keeps per client key.
#[derive(Debug, Default)]
struct PerClient {
    /// Waiting requests of this key, in submission order, with their global order.
    queue: VecDeque<(u64, SignedRequest)>,
    /// Ids of this key in flight.
    in_flight: BTreeSet<RequestId>,
    /// Validators that replied to this key: they know where to answer it.
    repliers: BTreeSet<ReplicaId>,
    /// The order of the queue's head while it is in `ClientCore::ready`.
    ready: Option<u64>,
}

/// The client's decisions as a sans-IO state machine; see the module documentation.
#[derive(Debug)]
pub struct ClientCore {
    config: ClientConfig,
    /// The view the client believes the cluster is in.
    view: View,
    clients: BTreeMap<PublicKey, PerClient>,
    /// Client keys whose queue head may go in flight now, by the head's submission
    /// order: filling takes requests oldest first across keys.
    ready: BTreeSet<(u64, PublicKey)>,
    next_order: u64,
    queued: BTreeSet<Key>,
    flight: BTreeMap<Key, InFlight>,
    /// In-flight requests by last send (retransmission timers).
    by_last_sent: BTreeSet<(Instant, Key)>,
    /// In-flight requests by first send (deadlines).
    by_first_sent: BTreeSet<(Instant, Key)>,
    transmits: VecDeque<Transmit>,
    accepted: VecDeque<Accepted>,
    expired: VecDeque<Expired>,
    retransmitted: u64,
    accepted_count: u64,
    expired_count: u64,
}

impl ClientCore {
    /// A client core with nothing in flight, believing in view 0.
    pub fn new(mut config: ClientConfig) -> Result<ClientCore, ClientConfigError> {
        if config.validators == 0 {
            return Err(ClientConfigError::NoValidators);
        }
        if config.f.saturating_add(1) > config.validators {
            return Err(ClientConfigError::QuorumTooLarge {
                needed: config.f.saturating_add(1),
                validators: config.validators,
            });
        }
        config.window = config.window.max(1);
        config.max_in_flight = config.max_in_flight.max(1);
        config.retransmit = config.retransmit.max(MIN_RETRANSMIT);
        Ok(ClientCore {
            config,
            view: 0,
            clients: BTreeMap::new(),
            ready: BTreeSet::new(),
            next_order: 0,
            queued: BTreeSet::new(),
            flight: BTreeMap::new(),
            by_last_sent: BTreeSet::new(),
            by_first_sent: BTreeSet::new(),
            transmits: VecDeque::new(),
            accepted: VecDeque::new(),
            expired: VecDeque::new(),
            retransmitted: 0,
            accepted_count: 0,
            expired_count: 0,
        })
    }

    // ------------------------------------------------------------------ settings

    /// The configuration in force.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// Changes the most requests in flight overall (at least 1). Queued requests take
    /// new room at the next `submit`, `on_reply` or `on_timeout`.
    pub fn set_max_in_flight(&mut self, max_in_flight: usize) {
        self.config.max_in_flight = max_in_flight.max(1);
    }

    /// Changes the retransmission interval; it applies to requests already in flight
    /// too, counted from their last send.
    pub fn set_retransmit(&mut self, retransmit: Duration) {
        self.config.retransmit = retransmit.max(MIN_RETRANSMIT);
    }

    /// Changes the deadline; it applies to requests already in flight too, counted
    /// from their first send.
    pub fn set_deadline(&mut self, deadline: Option<Duration>) {
        self.config.deadline = deadline;
    }

    // ------------------------------------------------------------------ inputs

    /// Takes a request: it goes in flight at once if both limits leave room, and waits
    /// in the queue otherwise (requests leave the queue in submission order, except
    /// that a key at its window does not hold up other keys).
    // The error names the request by its client key, inline as everywhere else; it is
    // rare and the success path carries nothing.
    #[allow(clippy::result_large_err)]
    pub fn submit(&mut self, request: SignedRequest, now: Instant) -> Result<(), SubmitError> {
        let key = request.key();
        if self.flight.contains_key(&key) || self.queued.contains(&key) {
            return Err(SubmitError::Duplicate {
                client: key.0,
                request_id: key.1,
            });
        }
        let order = self.next_order;
        self.next_order += 1;
        self.queued.insert(key);
        self.clients
            .entry(key.0)
            .or_default()
            .queue
            .push_back((order, request));
        self.refresh(key.0);
        self.fill(now);
        Ok(())
    }

    /// Takes a reply that arrived from validator `from`.
    ///
    /// A validator's latest answer to a request is the one that counts: a different
    /// answer replaces its earlier one, it never adds to it, so the client keeps at most
    /// one answer per validator and request, however many replies a traitor sends, and
    /// each kept answer is a [`Claim`] of bounded size. An honest validator's answer
    /// can change (a request ordered again as a duplicate is answered at the later
    /// sequence number, and the reply cache keeps that answer), and with the first
    /// answer counting for ever such a validator could never join the others'. A
    /// traitor that takes back support it gave delays nothing: acceptance never needs a
    /// traitor, as the f+1 honest answers arrive with retransmissions.
    pub fn on_reply(&mut self, from: ReplicaId, reply: &Reply, now: Instant) -> ReplyOutcome {
        if reply.replica != from {
            return ReplyOutcome::WrongReplica;
        }
        if from as usize >= self.config.validators {
            return ReplyOutcome::UnknownValidator;
        }
        // Any reply to a key of ours shows that the validator knows where to answer it.
        if let Some(c) = self.clients.get_mut(&reply.client) {
            c.repliers.insert(from);
        }
        let key = (reply.client, reply.request_id);
        let Some(inf) = self.flight.get_mut(&key) else {
            return ReplyOutcome::NotInFlight;
        };
        if reply.request != inf.digest {
            return ReplyOutcome::OtherRequest;
        }
        let claim = Claim::of(reply);
        if inf.claims.get(&from) == Some(&claim) {
            return ReplyOutcome::AlreadyCounted;
        }
        let (result_digest, seq) = (claim.result_digest, claim.seq);
        let replaced = inf.claims.insert(from, claim).is_some();
        let Some(view) = agreed_view(&inf.claims, &result_digest, seq, self.config.f) else {
            return if replaced {
                ReplyOutcome::Replaced
            } else {
                ReplyOutcome::Counted
            };
        };
        self.view = self.view.max(view);
        if let Some(inf) = self.remove_in_flight(key) {
            self.accepted_count += 1;
            self.accepted.push_back(Accepted {
                client: key.0,
                request_id: key.1,
                request: inf.request,
                result: reply.result.clone(),
                seq: reply.seq,
                at: now,
                latency: now.since(inf.first_sent),
            });
        }
        self.fill(now);
        ReplyOutcome::Accepted
    }

    /// Time has come to `now`: gives up requests past the deadline, re-sends to every
    /// validator the requests that waited a retransmission interval since their last
    /// send, and sends queued requests that the given-up ones made room for.
    pub fn on_timeout(&mut self, now: Instant) {
        if let Some(deadline) = self.config.deadline {
            while let Some(&(first, key)) = self.by_first_sent.first() {
                if first.plus(deadline) > now {
                    break;
                }
                let Some(inf) = self.remove_in_flight(key) else {
                    // the indices and the map are updated together; drop a stale entry
                    self.by_first_sent.remove(&(first, key));
                    continue;
                };
                self.expired_count += 1;
                self.expired.push_back(Expired {
                    client: key.0,
                    request_id: key.1,
                    request: inf.request,
                    waited: now.since(inf.first_sent),
                    replies: inf.claims,
                });
            }
        }
        let retransmit = self.config.retransmit;
        let due: Vec<(Instant, Key)> = self
            .by_last_sent
            .iter()
            .take_while(|(last, _)| last.plus(retransmit) <= now)
            .copied()
            .collect();
        for (last, key) in due {
            self.by_last_sent.remove(&(last, key));
            let Some(inf) = self.flight.get_mut(&key) else {
                continue;
            };
            inf.last_sent = now;
            self.by_last_sent.insert((now, key));
            self.retransmitted += 1;
            self.transmits.push_back(Transmit {
                to: Recipients::All,
                client: key.0,
                request_id: key.1,
                retransmission: true,
                bytes: inf.bytes.clone(),
            });
        }
        self.fill(now);
    }

    /// Drops every queued and in-flight request and every output not yet polled. What
    /// the client learnt stays: the view, and which validators replied to which key.
    /// The counters stay too.
    pub fn cancel_all(&mut self) {
        self.flight.clear();
        self.by_last_sent.clear();
        self.by_first_sent.clear();
        self.queued.clear();
        self.ready.clear();
        for c in self.clients.values_mut() {
            c.queue.clear();
            c.in_flight.clear();
            c.ready = None;
        }
        self.transmits.clear();
        self.accepted.clear();
        self.expired.clear();
    }

    // ------------------------------------------------------------------ outputs

    /// When [`Self::on_timeout`] has something to do: the earliest retransmission or
    /// deadline of a request in flight. `None` with nothing in flight.
    pub fn next_timeout(&self) -> Option<Instant> {
        let retransmit = self
            .by_last_sent
            .first()
            .map(|(last, _)| last.plus(self.config.retransmit));
        let deadline = self
            .config
            .deadline
            .and_then(|d| self.by_first_sent.first().map(|(first, _)| first.plus(d)));
        match (retransmit, deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The next request to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next accepted request, in the order of acceptance.
    pub fn poll_accepted(&mut self) -> Option<Accepted> {
        self.accepted.pop_front()
    }

    /// The next request given up at its deadline.
    pub fn poll_expired(&mut self) -> Option<Expired> {
        self.expired.pop_front()
    }

    // ------------------------------------------------------------------ counters

    /// Requests sent and not yet accepted or given up.
    pub fn in_flight(&self) -> usize {
        self.flight.len()
    }

    /// Requests of one client key in flight.
    pub fn in_flight_for(&self, client: &PublicKey) -> usize {
        self.clients.get(client).map_or(0, |c| c.in_flight.len())
    }

    /// The requests in flight, in (client, request id) order, each with the answer of
    /// every validator that replied so far (for reports on what is stuck).
    pub fn in_flight_claims(
        &self,
    ) -> impl Iterator<Item = (PublicKey, RequestId, &BTreeMap<ReplicaId, Claim>)> {
        self.flight
            .iter()
            .map(|((client, id), inf)| (*client, *id, &inf.claims))
    }

    /// Requests waiting for room.
    pub fn queued(&self) -> usize {
        self.queued.len()
    }

    /// True when nothing is queued or in flight.
    pub fn is_idle(&self) -> bool {
        self.flight.is_empty() && self.queued.is_empty()
    }

    /// Retransmissions so far (one per request re-sent to every validator).
    pub fn retransmitted(&self) -> u64 {
        self.retransmitted
    }

    /// Requests accepted so far.
    pub fn accepted_count(&self) -> u64 {
        self.accepted_count
    }

    /// Requests given up so far.
    pub fn expired_count(&self) -> u64 {
        self.expired_count
    }

    /// The view the client believes the cluster is in.
    pub fn view(&self) -> View {
        self.view
    }

    /// The primary of [`Self::view`], where new requests go first.
    pub fn primary(&self) -> ReplicaId {
        (self.view % self.config.validators as u64) as ReplicaId
    }

    /// f+1: how many validators must give the same answer.
    pub fn needed(&self) -> usize {
        self.config.f + 1
    }

    // ------------------------------------------------------------------ internals

    /// Moves queued requests in flight while both limits leave room.
    fn fill(&mut self, now: Instant) {
        while self.flight.len() < self.config.max_in_flight {
            let Some((_, client)) = self.ready.pop_first() else {
                break;
            };
            let Some(c) = self.clients.get_mut(&client) else {
                continue;
            };
            c.ready = None;
            if let Some((_, request)) = c.queue.pop_front() {
                self.queued.remove(&request.key());
                self.launch(request, now);
            }
            self.refresh(client);
        }
    }

    /// Puts `client` in the ready set if the head of its queue fits its window.
    fn refresh(&mut self, client: PublicKey) {
        let window = self.config.window;
        let Some(c) = self.clients.get_mut(&client) else {
            return;
        };
        if let Some(order) = c.ready.take() {
            self.ready.remove(&(order, client));
        }
        let Some((order, head)) = c.queue.front() else {
            return;
        };
        let id = head.body.request_id;
        let fits = match (c.in_flight.first(), c.in_flight.last()) {
            (Some(&lo), Some(&hi)) => hi.max(id) - lo.min(id) < window,
            _ => true,
        };
        if fits {
            c.ready = Some(*order);
            self.ready.insert((*order, client));
        }
    }

    /// Sends a request for the first time: to the primary and to every validator that
    /// has not replied to its client key yet.
    fn launch(&mut self, request: SignedRequest, now: Instant) {
        let key = request.key();
        let n = self.config.validators as ReplicaId;
        let primary = self.primary();
        let c = self.clients.entry(key.0).or_default();
        let to: Vec<ReplicaId> = (0..n)
            .filter(|v| *v == primary || !c.repliers.contains(v))
            .collect();
        let to = if to.len() == n as usize {
            Recipients::All
        } else {
            Recipients::Only(to)
        };
        c.in_flight.insert(key.1);
        let bytes: Arc<[u8]> = envelope::encode(&Message::Request(request.clone())).into();
        self.transmits.push_back(Transmit {
            to,
            client: key.0,
            request_id: key.1,
            retransmission: false,
            bytes: bytes.clone(),
        });
        self.by_last_sent.insert((now, key));
        self.by_first_sent.insert((now, key));
        self.flight.insert(
            key,
            InFlight {
                digest: request.body.digest(),
                request,
                bytes,
                first_sent: now,
                last_sent: now,
                claims: BTreeMap::new(),
            },
        );
    }

    /// Takes a request out of flight, with its timers and its place in its window.
    fn remove_in_flight(&mut self, key: Key) -> Option<InFlight> {
        let inf = self.flight.remove(&key)?;
        self.by_last_sent.remove(&(inf.last_sent, key));
        self.by_first_sent.remove(&(inf.first_sent, key));
        if let Some(c) = self.clients.get_mut(&key.0) {
            c.in_flight.remove(&key.1);
        }
        self.refresh(key.0);
        Some(inf)
    }
}

/// The acceptance rule, once: if f+1 distinct validators' latest answers are (the
/// result with `result_digest`, `seq`), the view those matching replies establish;
/// `None` otherwise.
///
/// The view is the highest that f+1 of the matching validators report reaching (the
/// (f+1)-th highest of their views), so at least one honest validator was in it or
/// beyond: a traitor cannot steer the client to a primary of its choosing.
fn agreed_view(
    claims: &BTreeMap<ReplicaId, Claim>,
    result_digest: &Digest,
    seq: Seq,
    f: usize,
) -> Option<View> {
    let mut views: Vec<View> = claims
        .values()
        .filter(|c| c.seq == seq && c.result_digest == *result_digest)
        .map(|c| c.view)
        .collect();
    if views.len() <= f {
        return None;
    }
    views.sort_unstable_by(|a, b| b.cmp(a));
    views.get(f).copied()
}
