//! The client library.
//!
//! - [`Client::submit`] keeps many signed requests in flight (within each client key's
//!   window) and returns them once f+1 distinct validators gave the same answer; a
//!   request not accepted in time is re-sent to every validator.
//! - [`Client::account`] and [`Client::status`] ask validators directly (queries are not
//!   ordered: an account answer is accepted once f+1 validators give the same one).
//! - [`NextIdFile`] keeps a client key's next request id beside its key file, so a
//!   client never signs a new operation under an id it used before.
//!
//! Every decision of `submit` (where a request goes, when it is re-sent, when it is
//! final, when it is given up) is made by the sans-IO [`ClientCore`] of the protocol
//! crate, the same core the simulator's clients run; this crate adds the QUIC
//! transport, the clock and the progress reports around it.
//!
//! Replies arrive on QUIC connections whose server key is pinned to the validator's
//! key in the cluster file, so the client knows which validator sent each reply; the
//! core checks that the reply names that validator, and the client does not re-verify
//! its signature.

mod next_id;

pub use next_id::{NextIdError, NextIdFile};

use bytes::Bytes;
use pbft_cluster::Cluster;
use pbft_crypto::{Keypair, PublicKey};
use pbft_protocol::client::{
    ClientConfig, ClientConfigError, ClientCore, Expired, Recipients, SubmitError,
};
use pbft_protocol::envelope::{self, Limits};
use pbft_protocol::{Answer, Message, NodeStatus, Query, Request, SignedRequest};
use pbft_transport::{ClientTransport, PeerInfo, TransportError};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// How often [`Client::submit`] reports progress while it waits.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// Most replies taken off the channel before the client sends what they caused.
const REPLIES_PER_WAKE: usize = 256;

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
        /// Which request, and what the validators had answered.
        detail: String,
    },
    /// Every validator connection is gone.
    #[error("the connections to the validators closed")]
    Closed,
    /// The cluster file describes no usable validator set.
    #[error(transparent)]
    Config(#[from] ClientConfigError),
    /// One submission held the same request twice (boxed: it names the client key,
    /// and the error type stays small for the callers that pass it along).
    #[error(transparent)]
    Submit(Box<SubmitError>),
}

impl From<SubmitError> for ClientError {
    fn from(e: SubmitError) -> ClientError {
        ClientError::Submit(Box::new(e))
    }
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
    /// The sequence number that carried it, as the f+1 validators reported it.
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
    /// The view the client believes the cluster is in (from accepted replies).
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

/// A connection to every validator of a cluster.
pub struct Client {
    transport: ClientTransport,
    rx: mpsc::Receiver<(u32, Bytes)>,
    limits: Limits,
    n: usize,
    f: usize,
    /// The client's decisions; it outlives each `submit`, so what it learnt (the view,
    /// which validators answer which key) carries over to the next one.
    core: ClientCore,
    /// The origin of the core's time.
    epoch: Instant,
    next_query: u64,
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
    /// Connects (lazily) to every validator of `cluster`, anonymously: enough for
    /// queries. A client that submits requests should bind its accounts
    /// ([`Client::connect_bound`]).
    pub async fn connect(cluster: &Cluster) -> Result<Client, ClientError> {
        Self::connect_bound(cluster, Vec::new()).await
    }

    /// Connects (lazily) to every validator of `cluster`, each connection bound to
    /// `accounts` (the keys this client signs requests with, at most
    /// [`pbft_transport::MAX_BINDS`]). The validators then send those accounts' replies
    /// to this client's connections whatever strangers replay, and keep its
    /// connections when they evict anonymous ones to make room.
    pub async fn connect_bound(
        cluster: &Cluster,
        accounts: Vec<Keypair>,
    ) -> Result<Client, ClientError> {
        let peers = PeerInfo::list(cluster.validators.iter().map(|v| (v.id, v.key, v.addr)));
        let retransmit = default_retransmit(cluster.params.view_timeout_ms);
        let deadline = Duration::from_secs(30);
        let mut config = ClientConfig::new(cluster.n(), retransmit);
        config.f = cluster.f();
        config.window = cluster.params.client_window;
        config.deadline = Some(deadline);
        let core = ClientCore::new(config)?;
        let limits = Limits::default();
        let (transport, rx) = ClientTransport::connect_bound(
            peers,
            limits.max_frame_bytes,
            *cluster.genesis_digest().as_bytes(),
            accounts,
        )
        .await?;
        Ok(Client {
            transport,
            rx,
            limits,
            n: cluster.n(),
            f: cluster.f(),
            core,
            epoch: Instant::now(),
            next_query: 1,
            retransmit,
            deadline,
        })
    }

    /// f + 1.
    pub fn weak_quorum(&self) -> usize {
        self.f + 1
    }

    /// Submits signed requests, at most `concurrency` in flight (and at most the
    /// cluster's client window per client), and returns them as they were accepted.
    /// `progress` is called whenever something changes.
    ///
    /// Fails with [`ClientError::Timeout`] at the first request not accepted within
    /// [`Client::deadline`] of its first send, naming it and the answers it got; the
    /// other requests of this call are then abandoned.
    pub async fn submit(
        &mut self,
        requests: Vec<SignedRequest>,
        concurrency: usize,
        mut progress: impl FnMut(&Progress),
    ) -> Result<Vec<Accepted>, ClientError> {
        self.core.set_max_in_flight(concurrency);
        self.core.set_retransmit(self.retransmit);
        self.core.set_deadline(Some(self.deadline));
        let result = self.drive(requests, &mut progress).await;
        if result.is_err() {
            self.core.cancel_all();
        }
        result
    }

    async fn drive(
        &mut self,
        requests: Vec<SignedRequest>,
        progress: &mut impl FnMut(&Progress),
    ) -> Result<Vec<Accepted>, ClientError> {
        let accepted_before = self.core.accepted_count();
        let retransmitted_before = self.core.retransmitted();
        let now = self.now();
        for request in requests {
            self.core.submit(request, now)?;
        }
        let mut done = Vec::new();
        let mut last_progress = Instant::now();
        loop {
            self.send_transmits();
            while let Some(a) = self.core.poll_accepted() {
                done.push(Accepted {
                    client: a.client,
                    request_id: a.request_id,
                    result: a.result,
                    seq: a.seq,
                    latency: a.latency,
                });
            }
            if let Some(e) = self.core.poll_expired() {
                return Err(self.timeout_error(&e));
            }
            let report = Progress {
                accepted: (self.core.accepted_count() - accepted_before) as usize,
                in_flight: self.core.in_flight(),
                retransmitted: (self.core.retransmitted() - retransmitted_before) as usize,
                view: self.core.view(),
            };
            if self.core.is_idle() {
                progress(&report);
                return Ok(done);
            }
            if last_progress.elapsed() >= PROGRESS_EVERY {
                last_progress = Instant::now();
                progress(&report);
            }
            // sleep until a reply, the core's next timer or the next progress report
            let mut wake = last_progress + PROGRESS_EVERY;
            if let Some(t) = self.core.next_timeout() {
                wake = wake.min(self.epoch + Duration::from_micros(t.as_micros()));
            }
            match tokio::time::timeout_at(wake.into(), self.rx.recv()).await {
                Ok(None) => return Err(ClientError::Closed),
                Ok(Some((from, frame))) => {
                    self.on_frame(from, &frame);
                    for _ in 1..REPLIES_PER_WAKE {
                        let Ok((from, frame)) = self.rx.try_recv() else {
                            break;
                        };
                        self.on_frame(from, &frame);
                    }
                }
                Err(_) => {}
            }
            // a steady stream of replies must not starve the timers
            let now = self.now();
            if self.core.next_timeout().is_some_and(|t| t <= now) {
                self.core.on_timeout(now);
            }
        }
    }

    /// The core's time: microseconds since the client connected.
    fn now(&self) -> pbft_protocol::Instant {
        pbft_protocol::Instant(self.epoch.elapsed().as_micros().min(u128::from(u64::MAX)) as u64)
    }

    fn on_frame(&mut self, from: u32, frame: &[u8]) {
        if let Ok(Message::Reply(reply)) = envelope::decode(frame, &self.limits) {
            let now = self.now();
            self.core.on_reply(from, &reply.body, now);
        }
    }

    fn send_transmits(&mut self) {
        while let Some(t) = self.core.poll_transmit() {
            let bytes = Bytes::from_owner(t.bytes);
            match t.to {
                Recipients::All => self.transport.broadcast(bytes),
                Recipients::Only(validators) => {
                    for v in validators {
                        self.transport.send(v, bytes.clone());
                    }
                }
            }
        }
    }

    fn timeout_error(&self, e: &Expired) -> ClientError {
        let answers: Vec<String> = e
            .replies
            .iter()
            .map(|(v, c)| {
                format!(
                    "{v}: seq {} result {} ({} bytes)",
                    c.seq,
                    short_hex(&c.preview),
                    c.result_len
                )
            })
            .collect();
        ClientError::Timeout {
            needed: self.core.needed(),
            waited: e.waited,
            detail: format!(
                "request {} of client {}: {} replies, at most {} with one answer [{}]",
                e.request_id,
                e.client.short(),
                e.replies.len(),
                e.largest_agreement(),
                answers.join(", ")
            ),
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

/// The first bytes of a result in hex, for error messages.
fn short_hex(bytes: &[u8]) -> String {
    let hex: String = bytes.iter().take(8).map(|b| format!("{b:02x}")).collect();
    if bytes.len() > 8 {
        format!("{hex}..")
    } else {
        hex
    }
}
