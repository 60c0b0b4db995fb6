//! The strangers of a scenario in cluster mode: hostile hosts outside the validator
//! set, each on a loopback address of its own (127.0.0.10 and up, so that limits per
//! address apply to each as to another host), acting on the validators' client ports
//! through bare connections ([`pbft_transport::raw`]).

use pbft_cluster::Cluster;
use pbft_crypto::Keypair;
use pbft_executor::Operation;
use pbft_protocol::{envelope, Message, Query, Request, Signed};
use pbft_scenario::model::{Scenario, StrangerBehavior, StrangerEntry};
use pbft_transport::raw::{RawConnection, RawEndpoint};
use pbft_transport::PeerInfo;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// How long a stranger's dial may take.
const DIAL: Duration = Duration::from_secs(2);
/// How long a stranger waits before trying again after a refusal.
const RETRY: Duration = Duration::from_millis(200);
/// Most connections one stranger holds to one validator (above any sane per-address
/// limit; a validator without one would otherwise be dialled for ever).
const MOST_PER_VALIDATOR: usize = 4096;

/// Whether cluster mode runs `b` (the others are refused by `check_supported`).
pub(crate) fn runs(b: StrangerBehavior) -> bool {
    !matches!(
        b,
        StrangerBehavior::HijackReplies | StrangerBehavior::ReuseId
    )
}

/// What one stranger got done: connections accepted and refused, frames sent.
#[derive(Default)]
pub(crate) struct Tally {
    opened: AtomicU64,
    refused: AtomicU64,
    frames: AtomicU64,
}

/// The running strangers; dropping them stops them.
pub(crate) struct Strangers {
    tasks: Vec<JoinHandle<()>>,
    tallies: Vec<(StrangerBehavior, IpAddr, Arc<Tally>)>,
}

impl Strangers {
    /// One line per stranger: what it did (for the run's notes).
    pub(crate) fn summary(&self) -> Vec<String> {
        self.tallies
            .iter()
            .map(|(b, ip, t)| {
                format!(
                    "stranger {} from {ip}: {} connections accepted, {} refused, {} frames sent",
                    b.name(),
                    t.opened.load(Ordering::Relaxed),
                    t.refused.load(Ordering::Relaxed),
                    t.frames.load(Ordering::Relaxed)
                )
            })
            .collect()
    }
}

impl Drop for Strangers {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Starts every stranger of `sc`, timed from `t0`.
pub(crate) fn start(sc: &Scenario, cluster: &Cluster, t0: Instant) -> Strangers {
    let validators: Vec<PeerInfo> = cluster
        .validators
        .iter()
        .map(|v| PeerInfo {
            id: v.id,
            key: v.key,
            addr: v.addr,
        })
        .collect();
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
            tallies.push((entry.behavior, ip, tally.clone()));
            tasks.push(tokio::spawn(async move {
                let from = t0 + Duration::from_millis(entry.from_ms);
                tokio::time::sleep_until(tokio::time::Instant::from_std(from)).await;
                let until = entry
                    .until_ms
                    .map(|u| tokio::time::Instant::from_std(t0 + Duration::from_millis(u)));
                let act = act(&entry, ip, validators, genesis, clients, tally);
                match until {
                    Some(u) => {
                        let _ = tokio::time::timeout_at(u, act).await;
                    }
                    None => act.await,
                }
            }));
        }
    }
    Strangers { tasks, tallies }
}

/// One stranger's behaviour, until it is stopped (dropping the future stops the
/// tasks it started).
async fn act(
    entry: &StrangerEntry,
    ip: IpAddr,
    validators: Vec<PeerInfo>,
    genesis: [u8; 32],
    clients: Vec<pbft_crypto::PublicKey>,
    tally: Arc<Tally>,
) {
    let Ok(endpoint) = RawEndpoint::bind(ip) else {
        tracing::warn!(%ip, "a stranger could not bind its address");
        return;
    };
    let endpoint = Arc::new(endpoint);
    let clients = Arc::new(clients);
    let mut tasks = tokio::task::JoinSet::new();
    for v in validators {
        let (endpoint, clients, tally) = (endpoint.clone(), clients.clone(), tally.clone());
        let behavior = entry.behavior;
        tasks.spawn(async move {
            let (e, t) = (endpoint.as_ref(), tally.as_ref());
            match behavior {
                StrangerBehavior::HogConnections => hog(e, &v, genesis, false, t).await,
                StrangerBehavior::SlowFrame => hog(e, &v, genesis, true, t).await,
                StrangerBehavior::QueryFlood => flood(e, &v, genesis, None, t).await,
                StrangerBehavior::BadSignatures => {
                    flood(e, &v, genesis, Some(clients.as_slice()), t).await
                }
                StrangerBehavior::HijackReplies | StrangerBehavior::ReuseId => {}
            }
        });
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
        held.retain(|c| c.close_reason().is_none());
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
                Err(_) => {
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
