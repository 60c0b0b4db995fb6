//! The client library.
//!
//! - [`Client::submit`] sends signed requests to the primary, keeps many in flight
//!   (within each client's window), and accepts a result once f+1 distinct validators
//!   sent the same one; a request not accepted in time is re-sent to every validator.
//! - [`Client::account`] and [`Client::status`] ask validators directly (queries are not
//!   ordered: an account answer is accepted once f+1 validators give the same one).
//!
//! Replies arrive on QUIC connections whose server key is pinned to the validator's
//! key in the cluster file, so the client knows which validator sent each reply; it
//! checks that the reply names that validator and does not re-verify its signature.

use bytes::Bytes;
use pbft_cluster::Cluster;
use pbft_crypto::{Keypair, PublicKey};
use pbft_protocol::envelope::{self, Limits};
use pbft_protocol::{Answer, Message, NodeStatus, Query, Request, SignedRequest};
use pbft_transport::{ClientTransport, PeerInfo, TransportError};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The transport could not start.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// Not enough validators agreed in time.
    #[error("no f+1 = {needed} validators agreed within {waited:?} ({detail})")]
    Timeout {
        /// f+1.
        needed: usize,
        /// How long it waited.
        waited: Duration,
        /// What was missing.
        detail: String,
    },
    /// Every validator connection is gone.
    #[error("the connections to the validators closed")]
    Closed,
}

/// A request whose result f+1 validators agreed on.
#[derive(Clone, Debug)]
pub struct Accepted {
    /// The client.
    pub client: PublicKey,
    /// Its request id.
    pub request_id: u64,
    /// The agreed result (an encoded receipt).
    pub result: Vec<u8>,
    /// The sequence number that carried it (from the replies).
    pub seq: u64,
    /// From the first send to acceptance.
    pub latency: Duration,
}

/// An account as f+1 validators report it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AccountInfo {
    /// Balance; `None` if the account does not exist.
    pub balance: Option<u64>,
    /// The request id its client should use next.
    pub next_request_id: u64,
}

/// Progress of a submission, for live displays.
#[derive(Clone, Copy, Debug, Default)]
pub struct Progress {
    /// Accepted so far.
    pub accepted: usize,
    /// Sent and not yet accepted.
    pub in_flight: usize,
    /// Re-sent to every validator after a timeout.
    pub retransmitted: usize,
    /// The view most recently seen in replies.
    pub view: u64,
}

/// Signs requests for one client key with consecutive request ids.
pub struct Signer {
    key: Keypair,
    next_id: u64,
}

impl Signer {
    /// A signer whose next request id is `next_id` (see [`Client::account`]).
    pub fn new(key: Keypair, next_id: u64) -> Signer {
        Signer {
            key,
            next_id: next_id.max(1),
        }
    }

    /// The client's account.
    pub fn public(&self) -> PublicKey {
        self.key.public()
    }

    /// Signs an operation with the next request id.
    pub fn sign(&mut self, op: Vec<u8>) -> SignedRequest {
        let body = Request {
            client: self.key.public(),
            request_id: self.next_id,
            op,
        };
        self.next_id += 1;
        pbft_protocol::Signed::sign(body, &self.key)
    }
}

struct InFlight {
    request: SignedRequest,
    bytes: Bytes,
    first_sent: Instant,
    last_sent: Instant,
    /// result -> validators that sent it, and the seq they reported
    votes: HashMap<Vec<u8>, (BTreeSet<u32>, u64)>,
}

/// A connection to every validator of a cluster.
pub struct Client {
    transport: ClientTransport,
    rx: mpsc::Receiver<(u32, Bytes)>,
    limits: Limits,
    n: usize,
    f: usize,
    /// Most outstanding requests per client.
    client_window: usize,
    view: u64,
    next_query: u64,
    /// Per client key, the validators that have replied to it on this connection.
    repliers: HashMap<PublicKey, BTreeSet<u32>>,
    /// How long before a request is re-sent to every validator. Defaults to a quarter
    /// of the cluster's view timeout T: backups learn of a request the primary sits on
    /// in time for their ordering deadline (T/2 later) to replace that primary before
    /// T has passed (`docs/protocol.md`, "The ordering deadline").
    pub retransmit: Duration,
    /// How long to wait for agreement before giving up.
    pub deadline: Duration,
}

/// The client's default retransmission delay for a cluster whose view timeout is
/// `view_timeout_ms`: T/4, at least 10 ms.
pub fn default_retransmit(view_timeout_ms: u64) -> Duration {
    Duration::from_millis((view_timeout_ms / 4).max(10))
}

impl Client {
    /// Connects (lazily) to every validator of `cluster`.
    pub async fn connect(cluster: &Cluster) -> Result<Client, ClientError> {
        let peers = cluster
            .validators
            .iter()
            .map(|v| PeerInfo {
                id: v.id,
                key: v.key,
                addr: v.addr,
            })
            .collect();
        let limits = Limits::default();
        let (transport, rx) = ClientTransport::connect(peers, limits.max_frame_bytes).await?;
        Ok(Client {
            transport,
            rx,
            limits,
            n: cluster.n(),
            f: cluster.f(),
            client_window: cluster.params.client_window.max(1) as usize,
            view: 0,
            next_query: 1,
            repliers: HashMap::new(),
            retransmit: default_retransmit(cluster.params.view_timeout_ms),
            deadline: Duration::from_secs(30),
        })
    }

    /// f + 1.
    pub fn weak_quorum(&self) -> usize {
        self.f + 1
    }

    fn primary(&self) -> u32 {
        (self.view % self.n as u64) as u32
    }

    /// Submits signed requests, at most `concurrency` in flight (and at most the
    /// cluster's client window per client), and returns them as they were accepted.
    /// `progress` is called whenever something changes.
    pub async fn submit(
        &mut self,
        requests: Vec<SignedRequest>,
        concurrency: usize,
        mut progress: impl FnMut(&Progress),
    ) -> Result<Vec<Accepted>, ClientError> {
        let mut queue: VecDeque<SignedRequest> = requests.into();
        let mut flight: HashMap<(PublicKey, u64), InFlight> = HashMap::new();
        let mut per_client: HashMap<PublicKey, usize> = HashMap::new();
        let mut done = Vec::new();
        let mut prog = Progress::default();
        let mut last_progress_at = Instant::now();
        // wake up often enough to notice re-send times, the deadline and progress
        let tick =
            (self.retransmit / 4).clamp(Duration::from_millis(10), Duration::from_millis(100));
        loop {
            // fill the window
            let mut skipped = VecDeque::new();
            while flight.len() < concurrency.max(1) {
                let Some(req) = queue.pop_front() else { break };
                let c = per_client.entry(req.body.client).or_insert(0);
                if *c >= self.client_window {
                    skipped.push_back(req);
                    if skipped.len() > concurrency {
                        break;
                    }
                    continue;
                }
                *c += 1;
                let bytes = Bytes::from(envelope::encode(&Message::Request(req.clone())));
                // A validator replies to a client on the connection the client's
                // requests came in on. Until a validator has replied to this client
                // key, it gets the requests too (not only the primary), so that it
                // learns the connection and its reply counts towards the f+1 at once
                // instead of after a re-send.
                let primary = self.primary();
                let heard = self.repliers.get(&req.body.client);
                for v in 0..self.n as u32 {
                    if v == primary || !heard.is_some_and(|h| h.contains(&v)) {
                        self.transport.send(v, bytes.clone());
                    }
                }
                let now = Instant::now();
                flight.insert(
                    req.key(),
                    InFlight {
                        request: req,
                        bytes,
                        first_sent: now,
                        last_sent: now,
                        votes: HashMap::new(),
                    },
                );
            }
            while let Some(r) = skipped.pop_back() {
                queue.push_front(r);
            }
            prog.in_flight = flight.len();
            if flight.is_empty() && queue.is_empty() {
                progress(&prog);
                return Ok(done);
            }
            let got = tokio::time::timeout(tick, self.rx.recv()).await;
            match got {
                Ok(None) => return Err(ClientError::Closed),
                Ok(Some((from, frame))) => {
                    let Ok(Message::Reply(reply)) = envelope::decode(&frame, &self.limits) else {
                        continue;
                    };
                    let r = &reply.body;
                    if r.replica != from {
                        continue;
                    }
                    self.repliers.entry(r.client).or_default().insert(from);
                    let key = (r.client, r.request_id);
                    let Some(inf) = flight.get_mut(&key) else {
                        continue;
                    };
                    let entry = inf
                        .votes
                        .entry(r.result.clone())
                        .or_insert((BTreeSet::new(), r.seq));
                    entry.0.insert(from);
                    if entry.0.len() > self.f {
                        let seq = entry.1;
                        let result = r.result.clone();
                        self.view = self.view.max(r.view);
                        if let Some(inf) = flight.remove(&key) {
                            if let Some(c) = per_client.get_mut(&key.0) {
                                *c = c.saturating_sub(1);
                            }
                            done.push(Accepted {
                                client: key.0,
                                request_id: key.1,
                                result,
                                seq,
                                latency: inf.first_sent.elapsed(),
                            });
                            prog.accepted += 1;
                            prog.view = self.view;
                        }
                    }
                }
                Err(_) => {}
            }
            // re-send what waited too long, to everyone
            let now = Instant::now();
            for inf in flight.values_mut() {
                if now.duration_since(inf.last_sent) >= self.retransmit {
                    self.transport.broadcast(inf.bytes.clone());
                    inf.last_sent = now;
                    prog.retransmitted += 1;
                }
                if now.duration_since(inf.first_sent) > self.deadline {
                    let votes: Vec<usize> = inf.votes.values().map(|v| v.0.len()).collect();
                    return Err(ClientError::Timeout {
                        needed: self.f + 1,
                        waited: self.deadline,
                        detail: format!(
                            "request {} of client {}: matching replies so far {:?}",
                            inf.request.body.request_id,
                            inf.request.body.client.short(),
                            votes
                        ),
                    });
                }
            }
            if now.duration_since(last_progress_at) >= Duration::from_millis(100) {
                last_progress_at = now;
                progress(&prog);
            }
        }
    }

    /// Sends `query` to every validator and collects answers until `enough` says
    /// stop or `wait` passes. Returns the answers by validator.
    async fn ask(
        &mut self,
        query: Query,
        wait: Duration,
        mut enough: impl FnMut(&BTreeMap<u32, Answer>) -> bool,
    ) -> Result<BTreeMap<u32, Answer>, ClientError> {
        let id = self.next_query;
        self.next_query += 1;
        let bytes = Bytes::from(envelope::encode(&Message::Query { id, query }));
        self.transport.broadcast(bytes.clone());
        let mut answers = BTreeMap::new();
        let deadline = Instant::now() + wait;
        let mut resend_at = Instant::now() + Duration::from_millis(500);
        loop {
            if enough(&answers) {
                return Ok(answers);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(answers);
            }
            if now >= resend_at {
                // connections come up lazily: ask the silent ones again
                for v in 0..self.n as u32 {
                    if !answers.contains_key(&v) {
                        self.transport.send(v, bytes.clone());
                    }
                }
                resend_at = now + Duration::from_millis(500);
            }
            let left = deadline.min(resend_at).saturating_duration_since(now);
            match tokio::time::timeout(left, self.rx.recv()).await {
                Ok(None) => return Err(ClientError::Closed),
                Ok(Some((from, frame))) => {
                    if let Ok(Message::Answer { id: got, answer }) =
                        envelope::decode(&frame, &self.limits)
                    {
                        if got == id {
                            answers.insert(from, answer);
                        }
                    }
                }
                Err(_) => {}
            }
        }
    }

    /// Where every validator stands; `None` for those that did not answer in `wait`.
    pub async fn status(
        &mut self,
        wait: Duration,
    ) -> Result<Vec<(u32, Option<NodeStatus>)>, ClientError> {
        let n = self.n;
        let answers = self.ask(Query::Status, wait, |a| a.len() == n).await?;
        Ok((0..n as u32)
            .map(|v| {
                let s = match answers.get(&v) {
                    Some(Answer::Status(s)) if s.replica == v => Some(s.clone()),
                    _ => None,
                };
                (v, s)
            })
            .collect())
    }

    /// An account as f+1 validators report it (same balance, same next request id).
    ///
    /// Validators that lag behind may agree on an older answer, so after the first
    /// f+1 agree the client waits a little for the others and takes the most advanced
    /// answer (highest next request id) that f+1 validators back.
    pub async fn account(&mut self, account: PublicKey) -> Result<AccountInfo, ClientError> {
        let need = self.f + 1;
        let n = self.n;
        let wait = self.deadline;
        let pick = |answers: &BTreeMap<u32, Answer>| {
            let mut tally: HashMap<AccountInfo, usize> = HashMap::new();
            for a in answers.values() {
                if let Answer::Account {
                    account: acc,
                    balance,
                    next_request_id,
                    ..
                } = a
                {
                    if *acc == account {
                        *tally
                            .entry(AccountInfo {
                                balance: *balance,
                                next_request_id: *next_request_id,
                            })
                            .or_insert(0) += 1;
                    }
                }
            }
            tally
                .into_iter()
                .filter(|(_, c)| *c >= need)
                .map(|(i, _)| i)
                .max_by_key(|i| i.next_request_id)
        };
        let mut first_agreement: Option<Instant> = None;
        let grace = Duration::from_millis(300);
        let answers = self
            .ask(Query::Account(account), wait, |a| {
                if a.len() == n {
                    return true;
                }
                if pick(a).is_some() {
                    let t = *first_agreement.get_or_insert_with(Instant::now);
                    return t.elapsed() >= grace;
                }
                false
            })
            .await?;
        pick(&answers).ok_or_else(|| ClientError::Timeout {
            needed: need,
            waited: wait,
            detail: format!("{} answers, none shared by f+1", answers.len()),
        })
    }

    /// Sends a request to every validator and does not wait for replies: for requests
    /// that must never be accepted, such as ones with a forged signature (scenario
    /// workloads).
    pub fn send_unacknowledged(&self, request: &SignedRequest) {
        let bytes = Bytes::from(envelope::encode(&Message::Request(request.clone())));
        self.transport.broadcast(bytes);
    }

    /// Closes the connections.
    pub async fn close(self) {
        self.transport.shutdown().await;
    }
}

/// Latency percentiles of accepted requests, in milliseconds: (p50, p90, p99, max).
pub fn percentiles(accepted: &[Accepted]) -> (f64, f64, f64, f64) {
    let mut ms: Vec<f64> = accepted
        .iter()
        .map(|a| a.latency.as_secs_f64() * 1000.0)
        .collect();
    if ms.is_empty() {
        return (0.0, 0.0, 0.0, 0.0);
    }
    ms.sort_by(|a, b| a.total_cmp(b));
    let at = |p: f64| ms[((ms.len() as f64 - 1.0) * p).round() as usize];
    (at(0.50), at(0.90), at(0.99), ms[ms.len() - 1])
}
