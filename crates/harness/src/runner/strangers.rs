//! The strangers of a scenario in cluster mode: hostile hosts outside the validator
//! set, each on a loopback address of its own (127.0.0.10 and up, so that limits per
//! address apply to each as to another host), acting on the validators' client ports
//! through bare, anonymous connections ([`pbft_transport::raw`]).
//!
//! `hijack_replies` and `reuse_id` need what the scenario's clients did: the workload
//! records in [`Sightings`] each request as it hands it to the client (the exact signed
//! bytes a validator sees in a batch) and each request the client accepted (f+1
//! replies bound to it: it executed). `reuse_id` also holds the clients' keys, which
//! the runner generated.
//!
//! A bare connection has one stream each way and no split, so a stranger that must
//! both send and read waits for a frame with a deadline; a read cut short in the
//! middle of a frame leaves the stream out of step, the next frame does not decode,
//! and the stranger drops that connection and opens another (counted).

use pbft_client::Accepted;
use pbft_cluster::Cluster;
use pbft_crypto::{Digest, Keypair, PublicKey};
use pbft_executor::{FailReason, Operation, Receipt};
use pbft_protocol::envelope::Limits;
use pbft_protocol::{envelope, Message, Query, Request, Signed, SignedRequest};
use pbft_scenario::model::{Scenario, StrangerBehavior, StrangerEntry};
use pbft_scenario::report::StrangerRow;
use pbft_transport::raw::{RawConnection, RawEndpoint};
use pbft_transport::PeerInfo;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

/// How long a stranger's dial may take.
const DIAL: Duration = Duration::from_secs(2);
/// How long a stranger waits before trying again after a refusal.
const RETRY: Duration = Duration::from_millis(200);
/// Most connections one stranger holds to one validator (above any sane per-address
/// limit; a validator without one would otherwise be dialled for ever).
const MOST_PER_VALIDATOR: usize = 4096;
/// The connections a `hijack_replies` stranger replays on, to each validator: as many
/// as a client's replies are sent to at most (`pbft_node`'s routes), so that it would
/// take them all if the validator let it.
const HIJACK_CONNECTIONS: usize = 4;
/// How often a `hijack_replies` stranger replays the clients' latest requests again
/// when no fresh one came.
const HIJACK_EVERY: Duration = Duration::from_millis(200);
/// How often a `reuse_id` stranger signs another reused id from the accepted ones.
const REUSE_EVERY: Duration = Duration::from_millis(50);
/// The latest requests of each client the sightings keep.
const LATEST_KEPT: usize = 16;

/// What the scenario's clients did, as strangers may know it: the signed requests as
/// the workload hands them to the client (anyone holds them once they are in a
/// batch), and the requests the client accepted. Shared by the workload and the
/// strangers of one run.
pub(crate) struct Sightings {
    seen: Mutex<Seen>,
    /// Bumped whenever requests are sent: strangers replay fresh ones at once.
    fresh: watch::Sender<u64>,
}

#[derive(Default)]
struct Seen {
    /// Each client's latest requests, oldest first.
    latest: BTreeMap<PublicKey, VecDeque<SignedRequest>>,
    /// Each client's accepted requests: id and digest of the request that ran.
    accepted: BTreeMap<PublicKey, BTreeMap<u64, Digest>>,
}

impl Sightings {
    pub(crate) fn new() -> Arc<Sightings> {
        Arc::new(Sightings {
            seen: Mutex::new(Seen::default()),
            fresh: watch::channel(0).0,
        })
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The workload hands `requests` to its client.
    pub(crate) fn sent(&self, requests: &[SignedRequest]) {
        let mut seen = self.seen();
        for r in requests {
            let q = seen.latest.entry(r.body.client).or_default();
            q.push_back(r.clone());
            while q.len() > LATEST_KEPT {
                q.pop_front();
            }
        }
        drop(seen);
        self.fresh.send_modify(|g| *g += 1);
    }

    /// The client accepted `accepted`, requests of `sent`.
    pub(crate) fn accepted(&self, accepted: &[Accepted], sent: &[SignedRequest]) {
        let digests: BTreeMap<(PublicKey, u64), Digest> =
            sent.iter().map(|r| (r.key(), r.body.digest())).collect();
        let mut seen = self.seen();
        for a in accepted {
            if let Some(d) = digests.get(&(a.client, a.request_id)) {
                seen.accepted
                    .entry(a.client)
                    .or_default()
                    .insert(a.request_id, *d);
            }
        }
    }

    /// Each client's latest `per_client` requests.
    fn latest(&self, per_client: usize) -> Vec<SignedRequest> {
        self.seen()
            .latest
            .values()
            .flat_map(|q| q.iter().rev().take(per_client).cloned())
            .collect()
    }

    /// The accepted requests of `client`: id and digest, latest first.
    fn accepted_of(&self, client: &PublicKey) -> Vec<(u64, Digest)> {
        self.seen()
            .accepted
            .get(client)
            .map(|m| m.iter().rev().map(|(id, d)| (*id, *d)).collect())
            .unwrap_or_default()
    }
}

/// A request a `reuse_id` stranger signed under an executed request id, and the
/// validators' answers bound to it.
#[derive(Clone, Debug)]
pub(crate) struct Reused {
    /// The stranger's index (its row in the report).
    pub stranger: usize,
    /// The client whose key signed it.
    pub client: PublicKey,
    /// The request id, executed before with the client's own request.
    pub request_id: u64,
    /// The digest of the stranger's request.
    pub digest: Digest,
    /// Each validator's answer (an encoded receipt).
    answers: BTreeMap<u32, Vec<u8>>,
}

/// What one stranger got done: connections accepted and refused (and dropped out of
/// step), frames sent, and what `hijack_replies` and `reuse_id` got back.
#[derive(Default)]
pub(crate) struct Tally {
    opened: AtomicU64,
    refused: AtomicU64,
    frames: AtomicU64,
    /// Connections dropped because a frame did not decode (a cut read).
    out_of_step: AtomicU64,
    /// Its connections a validator closed to make room for another.
    evicted: AtomicU64,
    /// Its connections refused because its address was banned.
    banned: AtomicU64,
    /// `hijack_replies`: replies received for the clients' requests.
    replies: AtomicU64,
    /// `hijack_replies`: the distinct (client, request id) those replies answer.
    answered: Mutex<BTreeSet<(PublicKey, u64)>>,
    /// `reuse_id`: its requests and their answers.
    reused: Mutex<Vec<Reused>>,
    /// `reuse_id`: replies it received for the clients' own requests.
    client_replies: AtomicU64,
    /// `reuse_id`: (client, id, digest) of the clients' requests those replies show
    /// executed, not reused yet.
    executed_seen: Mutex<VecDeque<(PublicKey, u64, Digest)>>,
    /// Wakes the signer when `executed_seen` grows.
    executed_notify: tokio::sync::Notify,
    /// `reuse_id`: requests it signed as soon as a reply showed their id executed.
    prompt: AtomicU64,
}

impl Tally {
    fn reused(&self) -> std::sync::MutexGuard<'_, Vec<Reused>> {
        self.reused.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The running strangers; dropping them stops them.
pub(crate) struct Strangers {
    tasks: Vec<JoinHandle<()>>,
    tallies: Vec<(StrangerBehavior, IpAddr, Arc<Tally>)>,
    /// f of the cluster: a reused id is refused once f+1 validators refuse it.
    f: usize,
    /// What the scenario's `[node]` limits make strangers run into.
    limits: Reach,
}

/// What a scenario's `[node]` limits make its strangers run into: with the client slots
/// limited, connection hogs must see evictions; with a short client frame deadline,
/// slow frames must get their address banned.
#[derive(Clone, Copy, Default)]
struct Reach {
    eviction: bool,
    ban: bool,
}

impl Strangers {
    /// One line per stranger: what it did (for the run's notes).
    pub(crate) fn summary(&self) -> Vec<String> {
        self.tallies
            .iter()
            .map(|(b, ip, t)| format!("stranger {} from {ip}: {}", b.name(), describe(t, self.f)))
            .collect()
    }

    /// One row per stranger for the report, with what it found wrong.
    pub(crate) fn rows(&self) -> Vec<StrangerRow> {
        self.tallies
            .iter()
            .map(|(b, ip, t)| StrangerRow {
                behavior: b.name().to_string(),
                from: ip.to_string(),
                summary: describe(t, self.f),
                problems: problems(*b, t, self.f, self.limits),
            })
            .collect()
    }

    /// Every request the `reuse_id` strangers signed under an executed id (to look
    /// for in the ledgers once the validators stopped).
    pub(crate) fn reused(&self) -> Vec<Reused> {
        self.tallies
            .iter()
            .flat_map(|(_, _, t)| t.reused().clone())
            .collect()
    }
}

/// Of `reused`, those f+1 validators refused as reused ids.
fn refused_by_quorum(reused: &[Reused], f: usize) -> usize {
    let refusal = reused_id_refusal();
    reused
        .iter()
        .filter(|r| r.answers.values().filter(|a| **a == refusal).count() > f)
        .count()
}

/// What a stranger got done, for people.
fn describe(t: &Tally, f: usize) -> String {
    let mut s = format!(
        "{} connections accepted, {} refused, {} frames sent",
        t.opened.load(Ordering::Relaxed),
        t.refused.load(Ordering::Relaxed),
        t.frames.load(Ordering::Relaxed)
    );
    let evicted = t.evicted.load(Ordering::Relaxed);
    if evicted > 0 {
        s += &format!(", {evicted} evicted to make room");
    }
    let banned = t.banned.load(Ordering::Relaxed);
    if banned > 0 {
        s += &format!(", {banned} refused as banned");
    }
    let out_of_step = t.out_of_step.load(Ordering::Relaxed);
    if out_of_step > 0 {
        s += &format!(", {out_of_step} dropped out of step");
    }
    let replies = t.replies.load(Ordering::Relaxed);
    let answered = t
        .answered
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .len();
    if replies > 0 || answered > 0 {
        s += &format!(
            "; {replies} replies for the clients' requests received, answering {answered} distinct requests"
        );
    }
    let reused = t.reused();
    if !reused.is_empty() {
        let (refusals, others) = answers(&reused);
        let ids: BTreeSet<(PublicKey, u64)> =
            reused.iter().map(|r| (r.client, r.request_id)).collect();
        s += &format!(
            "; {} requests signed under {} executed request ids ({} as soon as a validator's reply to the client showed the id executed); {refusals} answers refused them as reused ids ({} refused by f+1), {others} other answers; {} replies to the clients' own requests received",
            reused.len(),
            ids.len(),
            t.prompt.load(Ordering::Relaxed),
            refused_by_quorum(&reused, f),
            t.client_replies.load(Ordering::Relaxed)
        );
    }
    s
}

/// The encoded refusal of a reused request id.
fn reused_id_refusal() -> Vec<u8> {
    Receipt::Failed {
        reason: FailReason::ReusedId,
    }
    .encode()
}

/// Answers refusing reused ids, and other answers, over `reused`.
fn answers(reused: &[Reused]) -> (usize, usize) {
    let refusal = reused_id_refusal();
    let all: usize = reused.iter().map(|r| r.answers.len()).sum();
    let refusals: usize = reused
        .iter()
        .map(|r| r.answers.values().filter(|a| **a == refusal).count())
        .sum();
    (refusals, all - refusals)
}

/// What a stranger of behaviour `b` did wrong or could not do.
/// With the scenario's limits (`reach`), a connection hog must have seen a connection
/// of its evicted and a slow-frame stranger its address banned (else the scenario did
/// not reach what it is for).
fn problems(b: StrangerBehavior, t: &Tally, f: usize, reach: Reach) -> Vec<String> {
    let mut out = Vec::new();
    let (opened, frames) = (
        t.opened.load(Ordering::Relaxed),
        t.frames.load(Ordering::Relaxed),
    );
    match b {
        StrangerBehavior::HijackReplies if frames == 0 => {
            out.push("it never replayed a client's request".to_string());
        }
        StrangerBehavior::HogConnections if opened == 0 => {
            out.push("it never got a connection to hold".to_string());
        }
        StrangerBehavior::SlowFrame if reach.ban && t.banned.load(Ordering::Relaxed) == 0 => {
            out.push(
                "the client frame deadline is short, yet its address was never banned".to_string(),
            );
        }
        StrangerBehavior::HogConnections
            if reach.eviction && t.evicted.load(Ordering::Relaxed) == 0 =>
        {
            out.push(
                "the client slots are limited, yet none of its connections was evicted".to_string(),
            );
        }
        StrangerBehavior::SlowFrame if opened == 0 || frames == 0 => {
            out.push("it never announced a frame on a connection".to_string());
        }
        StrangerBehavior::QueryFlood if frames == 0 => {
            out.push("it never sent a query".to_string());
        }
        StrangerBehavior::BadSignatures if frames == 0 => {
            out.push("it never sent a request".to_string());
        }
        StrangerBehavior::ReuseId => {
            let reused = t.reused();
            let (_, others) = answers(&reused);
            let refused = refused_by_quorum(&reused, f);
            let answered = reused.iter().any(|r| !r.answers.is_empty());
            if reused.is_empty() {
                out.push(
                    "it never sent a reused id: no client had a request accepted in its window"
                        .to_string(),
                );
            } else if !answered {
                // the validators may send a key's answers to its client's own
                // connections only: the refusal cannot be seen from here
                out.push(format!(
                    "no answer to any of its {} reused ids reached its connections",
                    reused.len()
                ));
            } else if refused == 0 {
                out.push(format!(
                    "none of its {} reused ids was refused as one by f+1 = {} validators",
                    reused.len(),
                    f + 1
                ));
            }
            if others > 0 {
                out.push(format!(
                    "{others} answers to its reused ids were not the refusal of a reused id"
                ));
            }
        }
        _ => {}
    }
    out
}

impl Drop for Strangers {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// What the strangers may use of the run besides the cluster file: the clients' keys
/// and what the clients did.
#[derive(Clone)]
pub(crate) struct Knowledge {
    /// The scenario's client keys, in the cluster file's order.
    pub keys: Arc<Vec<Keypair>>,
    /// What the workload's client sent and had accepted.
    pub sightings: Arc<Sightings>,
    /// The genesis balance of every client.
    pub balance: u64,
}

/// Starts every stranger of `sc`, timed from `t0`.
pub(crate) fn start(
    sc: &Scenario,
    cluster: &Cluster,
    knowledge: &Knowledge,
    t0: Instant,
) -> Strangers {
    let validators: Vec<PeerInfo> =
        PeerInfo::list(cluster.validators.iter().map(|v| (v.id, v.key, v.addr)));
    let genesis = *cluster.genesis_digest().as_bytes();
    let clients: Vec<pbft_crypto::PublicKey> = cluster.clients.iter().map(|c| c.key).collect();
    let mut tasks = Vec::new();
    let mut tallies = Vec::new();
    let mut index = 0u8;
    for entry in &sc.strangers {
        for _ in 0..entry.count {
            let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 10u8.saturating_add(index)));
            index = index.saturating_add(1);
            let (entry, validators, clients) = (entry.clone(), validators.clone(), clients.clone());
            let tally = Arc::new(Tally::default());
            let me = tallies.len();
            tallies.push((entry.behavior, ip, tally.clone()));
            let knowledge = knowledge.clone();
            tasks.push(tokio::spawn(async move {
                let from = t0 + Duration::from_millis(entry.from_ms);
                tokio::time::sleep_until(tokio::time::Instant::from_std(from)).await;
                let until = entry
                    .until_ms
                    .map(|u| tokio::time::Instant::from_std(t0 + Duration::from_millis(u)));
                let act = act(
                    &entry, me, ip, validators, genesis, clients, knowledge, tally,
                );
                match until {
                    Some(u) => {
                        let _ = tokio::time::timeout_at(u, act).await;
                    }
                    None => act.await,
                }
            }));
        }
    }
    Strangers {
        tasks,
        tallies,
        f: cluster.f(),
        limits: Reach {
            eviction: sc.node.max_clients.is_some(),
            ban: sc.node.client_frame_timeout_ms.is_some(),
        },
    }
}

/// One stranger's behaviour, until it is stopped (dropping the future stops the
/// tasks it started). `me` is its index among the run's strangers.
#[allow(clippy::too_many_arguments)]
async fn act(
    entry: &StrangerEntry,
    me: usize,
    ip: IpAddr,
    validators: Vec<PeerInfo>,
    genesis: [u8; 32],
    clients: Vec<pbft_crypto::PublicKey>,
    knowledge: Knowledge,
    tally: Arc<Tally>,
) {
    let Ok(endpoint) = RawEndpoint::bind(ip) else {
        tracing::warn!(%ip, "a stranger could not bind its address");
        return;
    };
    let endpoint = Arc::new(endpoint);
    let clients = Arc::new(clients);
    let mut tasks = tokio::task::JoinSet::new();
    // reuse_id: one task signs, the connection to each validator sends and listens
    let (reuse_tx, _) = broadcast::channel::<Arc<(Digest, bytes::Bytes)>>(256);
    if entry.behavior == StrangerBehavior::ReuseId {
        let (tx, k, t) = (reuse_tx.clone(), knowledge.clone(), tally.clone());
        tasks.spawn(async move { sign_reused(me, &k, &tx, &t).await });
    }
    for v in validators {
        let (endpoint, clients, tally) = (endpoint.clone(), clients.clone(), tally.clone());
        let behavior = entry.behavior;
        let sightings = knowledge.sightings.clone();
        let reused = reuse_tx.subscribe();
        let connections = if behavior == StrangerBehavior::HijackReplies {
            HIJACK_CONNECTIONS
        } else {
            1
        };
        for _ in 0..connections {
            let (endpoint, clients, tally, v) =
                (endpoint.clone(), clients.clone(), tally.clone(), v.clone());
            let sightings = sightings.clone();
            let mut reused = reused.resubscribe();
            tasks.spawn(async move {
                let (e, t) = (endpoint.as_ref(), tally.as_ref());
                match behavior {
                    StrangerBehavior::HogConnections => hog(e, &v, genesis, false, t).await,
                    StrangerBehavior::SlowFrame => hog(e, &v, genesis, true, t).await,
                    StrangerBehavior::QueryFlood => flood(e, &v, genesis, None, t).await,
                    StrangerBehavior::BadSignatures => {
                        flood(e, &v, genesis, Some(clients.as_slice()), t).await
                    }
                    StrangerBehavior::HijackReplies => hijack(e, &v, genesis, &sightings, t).await,
                    StrangerBehavior::ReuseId => reuse(e, &v, genesis, &mut reused, t).await,
                }
            });
        }
    }
    while tasks.join_next().await.is_some() {}
}

/// Holds as many connections to `v` as it is let, re-taking any it loses; with
/// `half_frames`, each announces the largest frame a validator accepts from a client
/// and sends a few bytes of it.
async fn hog(
    endpoint: &RawEndpoint,
    v: &PeerInfo,
    genesis: [u8; 32],
    half_frames: bool,
    tally: &Tally,
) {
    let mut held: Vec<RawConnection> = Vec::new();
    loop {
        held.retain(|c| match c.close_reason() {
            None => true,
            Some(why) => {
                if why.contains("evicted") {
                    tally.evicted.fetch_add(1, Ordering::Relaxed);
                }
                false
            }
        });
        if held.len() < MOST_PER_VALIDATOR {
            match endpoint.open(v, genesis, DIAL).await {
                Ok(mut c) => {
                    tally.opened.fetch_add(1, Ordering::Relaxed);
                    if half_frames {
                        // the largest frame a validator takes from a client by
                        // default: a larger one is refused at once
                        let largest = pbft_transport::DEFAULT_MAX_CLIENT_FRAME as u32;
                        let _ = c.write(&largest.to_be_bytes()).await;
                        let _ = c.write(&[0u8; 16]).await;
                        tally.frames.fetch_add(1, Ordering::Relaxed);
                    }
                    held.push(c);
                    continue;
                }
                Err(why) => {
                    if why.contains("banned") {
                        tally.banned.fetch_add(1, Ordering::Relaxed);
                    }
                    tally.refused.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(RETRY).await
                }
            }
        } else {
            tokio::time::sleep(RETRY).await;
        }
    }
}

/// Sends frames to `v` as fast as the connection takes them, reconnecting whenever it
/// is cut off: unsigned status queries, or (with `clients`) requests bearing those
/// genesis keys under signatures of another key.
async fn flood(
    endpoint: &RawEndpoint,
    v: &PeerInfo,
    genesis: [u8; 32],
    clients: Option<&[pbft_crypto::PublicKey]>,
    tally: &Tally,
) {
    let forger = Keypair::from_seed(&[0x5a; 32]).ok();
    let mut n: u64 = 0;
    loop {
        let Ok(mut c) = endpoint.open(v, genesis, DIAL).await else {
            tally.refused.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(RETRY).await;
            continue;
        };
        tally.opened.fetch_add(1, Ordering::Relaxed);
        loop {
            n += 1;
            let msg = match (clients, &forger) {
                (Some(keys), Some(forger)) if !keys.is_empty() => {
                    let victim = keys[(n as usize) % keys.len()];
                    let body = Request {
                        client: victim,
                        request_id: n,
                        op: Operation::transfer(victim, 1).encode(),
                    };
                    // signed by the forger's key: the signature does not verify
                    // against the victim's
                    let signed = Signed::sign(body, forger);
                    Message::Request(signed)
                }
                _ => Message::Query {
                    id: n,
                    query: Query::Status,
                },
            };
            let frame = bytes::Bytes::from(envelope::encode(&msg));
            if c.send_frame(frame).await.is_err() || c.close_reason().is_some() {
                break;
            }
            tally.frames.fetch_add(1, Ordering::Relaxed);
            if n.is_multiple_of(64) {
                // let the runtime breathe: the validators run on the same host
                tokio::task::yield_now().await;
            }
        }
    }
}

/// Opens a connection to `v`, retrying after each refusal (counted).
async fn connect(
    endpoint: &RawEndpoint,
    v: &PeerInfo,
    genesis: [u8; 32],
    tally: &Tally,
) -> RawConnection {
    loop {
        match endpoint.open(v, genesis, DIAL).await {
            Ok(c) => {
                tally.opened.fetch_add(1, Ordering::Relaxed);
                return c;
            }
            Err(_) => {
                tally.refused.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

/// What a stranger read from a validator.
enum Read {
    /// A reply (its body: the validator is the one the connection is pinned to).
    Reply(Box<pbft_protocol::Reply>),
    /// Another message.
    Other,
    /// Nothing before the deadline.
    Nothing,
    /// The connection ended, or a frame did not decode (a read cut in a frame).
    Lost,
}

/// The next frame from `c` before `until`.
async fn read_until(c: &mut RawConnection, until: tokio::time::Instant, tally: &Tally) -> Read {
    let limits = Limits::default();
    match tokio::time::timeout_at(until, c.next_frame(limits.max_frame_bytes)).await {
        Err(_) => Read::Nothing,
        Ok(None) => Read::Lost,
        Ok(Some(frame)) => match envelope::decode(&frame, &limits) {
            Ok(Message::Reply(r)) => Read::Reply(Box::new(r.body)),
            Ok(_) => Read::Other,
            Err(_) => {
                tally.out_of_step.fetch_add(1, Ordering::Relaxed);
                Read::Lost
            }
        },
    }
}

/// Replays, on one connection of its own to `v`, each client's latest requests as
/// soon as the client sends them and again every [`HIJACK_EVERY`], and counts the
/// replies it receives for them.
async fn hijack(
    endpoint: &RawEndpoint,
    v: &PeerInfo,
    genesis: [u8; 32],
    sightings: &Sightings,
    tally: &Tally,
) {
    let mut fresh = sightings.fresh.subscribe();
    'connection: loop {
        let mut c = connect(endpoint, v, genesis, tally).await;
        loop {
            // the requests each client has in flight at most: its latest round
            for r in sightings.latest(LATEST_KEPT) {
                let frame = bytes::Bytes::from(envelope::encode(&Message::Request(r)));
                if c.send_frame(frame).await.is_err() {
                    continue 'connection;
                }
                tally.frames.fetch_add(1, Ordering::Relaxed);
            }
            let until = tokio::time::Instant::now() + HIJACK_EVERY;
            loop {
                tokio::select! {
                    biased;
                    changed = fresh.changed() => {
                        if changed.is_err() {
                            // the run is over
                            return;
                        }
                        break;
                    }
                    read = read_until(&mut c, until, tally) => match read {
                        Read::Reply(r) => {
                            tally.replies.fetch_add(1, Ordering::Relaxed);
                            tally
                                .answered
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .insert((r.client, r.request_id));
                        }
                        Read::Other => {}
                        Read::Nothing => break,
                        Read::Lost => continue 'connection,
                    },
                }
            }
        }
    }
}

/// Signs with clients' keys new operations under request ids that executed, and hands
/// them to the connections. Each id once: as soon as a validator's reply to the
/// client's own request shows it executed (the stranger's connections receive the
/// key's replies once it has used the key), the client possibly still waiting for f+1
/// of them; and every [`REUSE_EVERY`], for the next client in turn, its latest
/// accepted id not reused yet (once all are, the latest again with yet another
/// operation).
async fn sign_reused(
    me: usize,
    knowledge: &Knowledge,
    to_send: &broadcast::Sender<Arc<(Digest, bytes::Bytes)>>,
    tally: &Tally,
) {
    let keys = &knowledge.keys;
    let mut next = 0usize;
    let mut tick = tokio::time::interval(REUSE_EVERY);
    let done = |client: &PublicKey| -> BTreeSet<u64> {
        tally
            .reused()
            .iter()
            .filter(|r| r.client == *client)
            .map(|r| r.request_id)
            .collect()
    };
    loop {
        tokio::select! {
            _ = tally.executed_notify.notified() => {
                let seen: Vec<(PublicKey, u64, Digest)> = tally
                    .executed_seen
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .drain(..)
                    .collect();
                for (client, id, original) in seen {
                    let Some(c) = keys.iter().position(|k| k.public() == client) else {
                        continue;
                    };
                    if !done(&client).contains(&id) {
                        send_reused(me, knowledge, to_send, tally, c, id, original, true);
                    }
                }
            }
            _ = tick.tick() => {
                for step in 0..keys.len() {
                    let c = (next + step) % keys.len();
                    let client = keys[c].public();
                    let accepted = knowledge.sightings.accepted_of(&client);
                    let done = done(&client);
                    let Some(&(id, original)) = accepted
                        .iter()
                        .find(|(id, _)| !done.contains(id))
                        .or_else(|| accepted.first())
                    else {
                        continue;
                    };
                    send_reused(me, knowledge, to_send, tally, c, id, original, false);
                    next = (c + 1) % keys.len();
                    break;
                }
            }
        }
    }
}

/// Signs with client `c`'s key a new operation under `id`, which executed with the
/// request of digest `original`, records it and hands it to the connections.
/// `prompt`: chosen on a validator's reply to the client's request.
#[allow(clippy::too_many_arguments)]
fn send_reused(
    me: usize,
    knowledge: &Knowledge,
    to_send: &broadcast::Sender<Arc<(Digest, bytes::Bytes)>>,
    tally: &Tally,
    c: usize,
    id: u64,
    original: Digest,
    prompt: bool,
) {
    let keys = &knowledge.keys;
    let key = &keys[c];
    let client = key.public();
    // half the genesis balance to the next client, another amount each time: a new
    // operation
    let to = keys[(c + 1) % keys.len()].public();
    let mut amount = (knowledge.balance / 2).max(1) + tally.reused().len() as u64;
    let mut body = Request {
        client,
        request_id: id,
        op: Operation::transfer(to, amount).encode(),
    };
    while body.digest() == original {
        amount += 1;
        body.op = Operation::transfer(to, amount).encode();
    }
    let digest = body.digest();
    let signed = Signed::sign(body, key);
    tally.reused().push(Reused {
        stranger: me,
        client,
        request_id: id,
        digest,
        answers: BTreeMap::new(),
    });
    if prompt {
        tally.prompt.fetch_add(1, Ordering::Relaxed);
    }
    let frame = bytes::Bytes::from(envelope::encode(&Message::Request(signed)));
    let _ = to_send.send(Arc::new((digest, frame)));
}

/// Sends to `v` the requests [`sign_reused`] signs, on a connection of its own, and
/// records the answers bound to them; replies to the clients' own requests, which a
/// validator sends to every connection a client's key was used on, are counted.
async fn reuse(
    endpoint: &RawEndpoint,
    v: &PeerInfo,
    genesis: [u8; 32],
    to_send: &mut broadcast::Receiver<Arc<(Digest, bytes::Bytes)>>,
    tally: &Tally,
) {
    'connection: loop {
        let mut c = connect(endpoint, v, genesis, tally).await;
        loop {
            let far = tokio::time::Instant::now() + Duration::from_secs(3600);
            tokio::select! {
                biased;
                next = to_send.recv() => match next {
                    Ok(x) => {
                        if c.send_frame(x.1.clone()).await.is_err() {
                            continue 'connection;
                        }
                        tally.frames.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                read = read_until(&mut c, far, tally) => match read {
                    Read::Reply(body) => {
                        let mut reused = tally.reused();
                        match reused.iter_mut().rev().find(|x| {
                            x.digest == body.request
                                && x.client == body.client
                                && x.request_id == body.request_id
                        }) {
                            Some(x) if body.replica == v.id => {
                                x.answers.insert(v.id, body.result);
                            }
                            Some(_) => {}
                            None => {
                                tally.client_replies.fetch_add(1, Ordering::Relaxed);
                                if body.replica == v.id {
                                    // that id executed here: reuse it at once
                                    drop(reused);
                                    tally
                                        .executed_seen
                                        .lock()
                                        .unwrap_or_else(PoisonError::into_inner)
                                        .push_back((body.client, body.request_id, body.request));
                                    tally.executed_notify.notify_one();
                                }
                            }
                        }
                    }
                    Read::Other | Read::Nothing => {}
                    Read::Lost => continue 'connection,
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u8) -> Keypair {
        Keypair::from_seed(&[i; 32]).expect("a key")
    }

    fn request(k: &Keypair, id: u64) -> SignedRequest {
        let body = Request {
            client: k.public(),
            request_id: id,
            op: Operation::transfer(k.public(), id).encode(),
        };
        Signed::sign(body, k)
    }

    fn accepted(r: &SignedRequest) -> Accepted {
        Accepted {
            client: r.body.client,
            request_id: r.body.request_id,
            result: Vec::new(),
            seq: 1,
            latency: Duration::ZERO,
        }
    }

    /// The sightings keep each client's latest requests, exactly as signed, and the
    /// accepted ones with the digest of the request that ran, latest first.
    #[test]
    fn sightings_keep_the_latest_requests_and_the_accepted_ids() {
        let s = Sightings::new();
        let (a, b) = (key(1), key(2));
        let sent: Vec<SignedRequest> = (1..=20).map(|i| request(&a, i)).collect();
        s.sent(&sent);
        s.sent(&[request(&b, 1)]);
        assert_eq!(*s.fresh.borrow(), 2, "every submission is fresh news");
        let latest = s.latest(2);
        assert_eq!(latest.len(), 3);
        assert!(latest.contains(&sent[19]) && latest.contains(&sent[18]));
        assert_eq!(s.latest(100).len(), LATEST_KEPT + 1);
        // only requests the client sent count as accepted
        s.accepted(
            &[
                accepted(&sent[3]),
                accepted(&sent[1]),
                accepted(&request(&b, 9)),
            ],
            &sent,
        );
        assert_eq!(
            s.accepted_of(&a.public()),
            [(4, sent[3].body.digest()), (2, sent[1].body.digest())]
        );
        assert!(s.accepted_of(&b.public()).is_empty());
    }

    /// A reuse_id stranger fails when it never sent a reused id, when f+1 validators
    /// refused none, and when any answer is not the refusal.
    #[test]
    fn reuse_id_problems() {
        let t = Tally::default();
        let never = problems(StrangerBehavior::ReuseId, &t, 1, Reach::default());
        assert!(never[0].contains("never sent a reused id"), "{never:?}");
        let mut r = Reused {
            stranger: 0,
            client: key(1).public(),
            request_id: 3,
            digest: Digest::of(b"x"),
            answers: BTreeMap::new(),
        };
        t.reused().push(r.clone());
        let none = problems(StrangerBehavior::ReuseId, &t, 1, Reach::default());
        assert!(
            none[0].contains("no answer to any of its 1 reused ids"),
            "{none:?}"
        );
        r.answers.insert(0, reused_id_refusal());
        t.reused()[0] = r;
        let one = problems(StrangerBehavior::ReuseId, &t, 1, Reach::default());
        assert!(one[0].contains("refused as one by f+1 = 2"), "{one:?}");
        t.reused()[0].answers.insert(1, reused_id_refusal());
        assert!(problems(StrangerBehavior::ReuseId, &t, 1, Reach::default()).is_empty());
        let applied = Receipt::Applied { balance: 5 }.encode();
        t.reused()[0].answers.insert(2, applied);
        let other = problems(StrangerBehavior::ReuseId, &t, 1, Reach::default());
        assert_eq!(other.len(), 1);
        assert!(
            other[0].starts_with("1 answers to its reused ids were not"),
            "{other:?}"
        );
        assert!(describe(&t, 1)
            .contains("2 answers refused them as reused ids (1 refused by f+1), 1 other answers"));
        // a hijacker that never replayed anything did not do what its name says
        assert!(
            problems(StrangerBehavior::HijackReplies, &t, 1, Reach::default())[0]
                .contains("never replayed")
        );
        t.frames.fetch_add(1, Ordering::Relaxed);
        assert!(problems(StrangerBehavior::HijackReplies, &t, 1, Reach::default()).is_empty());
    }

    /// A stranger on connections that got nothing done fails the run: one that cannot
    /// do what its name says proves nothing (for example, 127.0.0.1x not bindable).
    #[test]
    fn connection_strangers_that_did_nothing_are_problems() {
        let idle = Tally::default();
        for b in [
            StrangerBehavior::HogConnections,
            StrangerBehavior::SlowFrame,
            StrangerBehavior::QueryFlood,
            StrangerBehavior::BadSignatures,
        ] {
            assert_eq!(problems(b, &idle, 1, Reach::default()).len(), 1, "{b:?}");
        }
        let busy = Tally::default();
        busy.opened.fetch_add(1, Ordering::Relaxed);
        busy.frames.fetch_add(1, Ordering::Relaxed);
        for b in [
            StrangerBehavior::HogConnections,
            StrangerBehavior::SlowFrame,
            StrangerBehavior::QueryFlood,
            StrangerBehavior::BadSignatures,
        ] {
            assert!(problems(b, &busy, 1, Reach::default()).is_empty(), "{b:?}");
        }
        // with the slots limited, a hog none of whose connections was evicted did not
        // reach what its scenario is for
        let hog = StrangerBehavior::HogConnections;
        let reach = Reach {
            eviction: true,
            ban: true,
        };
        assert_eq!(problems(hog, &busy, 1, reach).len(), 1);
        busy.evicted.fetch_add(1, Ordering::Relaxed);
        assert!(problems(hog, &busy, 1, reach).is_empty());
        // and a slow-frame stranger whose address was never banned
        let slow = StrangerBehavior::SlowFrame;
        assert_eq!(problems(slow, &busy, 1, reach).len(), 1);
        busy.banned.fetch_add(1, Ordering::Relaxed);
        assert!(problems(slow, &busy, 1, reach).is_empty());
    }
}
