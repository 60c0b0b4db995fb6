//! The client side: connections from clients and tools to validators.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use quinn::{Connection, Endpoint, RecvStream, SendStream, VarInt};
use tokio::sync::mpsc::{self, error::TrySendError};

use pbft_crypto::Keypair;

use crate::config::PeerInfo;
use crate::error::TransportError;
use crate::frame::{self, Backoff, DialError, ReadError};
use crate::registry::code;
use crate::stats::{reason, ClientStats};
use crate::tasks::{self, Tasks};
use crate::tls::{self, PinnedServer};

/// Frames that may wait per validator.
pub const CLIENT_SEND_QUEUE: usize = 1024;
/// Capacity of the channel of frames received from validators.
pub const CLIENT_INBOUND_QUEUE: usize = 4096;
const RECONNECT_MIN: Duration = Duration::from_millis(50);
const RECONNECT_MAX: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// A client's connections to the validators. The client presents no
/// certificate; each validator is authenticated by its pinned key, and each
/// connection may be bound to the client's accounts in the hello
/// ([`ClientTransport::connect_bound`]). A
/// validator is dialed when the first frame for it is queued, and redialed
/// with exponential back-off whenever the connection is lost.
#[derive(Clone)]
pub struct ClientTransport {
    handle: Arc<ClientHandle>,
}

struct ClientHandle {
    shared: Arc<ClientShared>,
}

impl Drop for ClientHandle {
    fn drop(&mut self) {
        let endpoint = self
            .shared
            .endpoint
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(endpoint) = endpoint {
            endpoint.close(VarInt::from_u32(code::SHUTDOWN), b"shutdown");
        }
        drop(self.shared.tasks.take());
    }
}

#[derive(Default)]
struct ClientState {
    connected: BTreeSet<u32>,
    established: BTreeMap<u32, u64>,
    counters: BTreeMap<(u32, &'static str), u64>,
}

struct ClientShared {
    local_addr: SocketAddr,
    max_frame: usize,
    genesis: [u8; 32],
    /// The accounts every connection is bound to (see `bind.rs`).
    accounts: Vec<Keypair>,
    queues: BTreeMap<u32, mpsc::Sender<Bytes>>,
    state: Arc<Mutex<ClientState>>,
    frames_sent: AtomicU64,
    frames_received: AtomicU64,
    endpoint: Mutex<Option<Endpoint>>,
    tasks: Tasks,
}

impl ClientShared {
    fn lock(&self) -> MutexGuard<'_, ClientState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn count(&self, id: u32, why: &'static str) {
        *self.lock().counters.entry((id, why)).or_default() += 1;
    }

    fn set_connected(&self, id: u32, up: bool) {
        let mut st = self.lock();
        if up {
            st.connected.insert(id);
            *st.established.entry(id).or_default() += 1;
        } else {
            st.connected.remove(&id);
        }
    }
}

/// How a connection ended.
#[derive(PartialEq, Eq)]
enum End {
    Lost,
    Stop,
}

/// The local address to bind for reaching `validators`: loopback if they
/// are all on loopback, otherwise the unspecified address of their family.
fn bind_addr(validators: &[PeerInfo]) -> SocketAddr {
    if validators.iter().any(|v| v.addr.is_ipv6()) {
        let ip = if validators.iter().all(|v| v.addr.ip().is_loopback()) {
            Ipv6Addr::LOCALHOST
        } else {
            Ipv6Addr::UNSPECIFIED
        };
        SocketAddr::from((ip, 0))
    } else if validators.iter().all(|v| v.addr.ip().is_loopback()) {
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
    } else {
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))
    }
}

/// A QUIC endpoint that only dials (no server side), bound to `addr`, and the
/// address it got.
pub(crate) fn dialing_endpoint(addr: SocketAddr) -> Result<(Endpoint, SocketAddr), TransportError> {
    let socket =
        std::net::UdpSocket::bind(addr).map_err(|source| TransportError::Bind { addr, source })?;
    let local_addr = socket.local_addr().map_err(TransportError::Endpoint)?;
    socket
        .set_nonblocking(true)
        .map_err(TransportError::Endpoint)?;
    let endpoint = Endpoint::new(
        quinn::EndpointConfig::default(),
        None,
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(TransportError::Endpoint)?;
    Ok((endpoint, local_addr))
}

impl ClientTransport {
    /// Binds an ephemeral local port and prepares one lazy connection per
    /// validator. Frames received from validator `i` arrive as `(i, frame)`.
    /// Frames over `max_frame` are neither sent nor accepted (a received one
    /// closes that connection).
    ///
    /// `genesis` is the genesis digest of the client's cluster file
    /// (`Cluster::genesis_digest`): a validator with another one refuses the
    /// connection, which is counted as `genesis_mismatch` and logged as an error.
    pub async fn connect(
        validators: Vec<PeerInfo>,
        max_frame: usize,
        genesis: [u8; 32],
    ) -> Result<(ClientTransport, mpsc::Receiver<(u32, Bytes)>), TransportError> {
        Self::connect_bound(validators, max_frame, genesis, Vec::new()).await
    }

    /// Like [`ClientTransport::connect`], with every connection bound to `accounts`
    /// (at most [`MAX_BINDS`](crate::MAX_BINDS)): each validator then sends those
    /// accounts' replies to this client's connection first, and keeps it when it
    /// evicts anonymous connections to make room.
    pub async fn connect_bound(
        validators: Vec<PeerInfo>,
        max_frame: usize,
        genesis: [u8; 32],
        accounts: Vec<Keypair>,
    ) -> Result<(ClientTransport, mpsc::Receiver<(u32, Bytes)>), TransportError> {
        if accounts.len() > crate::MAX_BINDS {
            return Err(TransportError::Config(format!(
                "{} accounts to bind; at most {} may share a connection",
                accounts.len(),
                crate::MAX_BINDS
            )));
        }
        if max_frame == 0 || max_frame > u32::MAX as usize {
            return Err(TransportError::Config(format!(
                "max_frame {max_frame} is not in 1..=u32::MAX"
            )));
        }
        let mut ids = BTreeSet::new();
        if let Some(dup) = validators.iter().find(|v| !ids.insert(v.id)) {
            return Err(TransportError::Config(format!(
                "validator id {} is listed twice",
                dup.id
            )));
        }
        let (endpoint, local_addr) = dialing_endpoint(bind_addr(&validators))?;

        let provider = tls::provider();
        let quic = tls::quic_transport(IDLE_TIMEOUT)?;
        let (out_tx, out_rx) = mpsc::channel(CLIENT_INBOUND_QUEUE);
        let mut queues = BTreeMap::new();
        let mut links = Vec::new();
        // The pinned-key verifiers count refusals into the shared state.
        let state = Arc::new(Mutex::new(ClientState::default()));
        for v in &validators {
            let (tx, rx) = mpsc::channel(CLIENT_SEND_QUEUE);
            let id = v.id;
            let counters = state.clone();
            let pin = PinnedServer::new(
                *v.key.as_bytes(),
                provider.clone(),
                Arc::new(move |why: &'static str| {
                    let mut st = counters.lock().unwrap_or_else(PoisonError::into_inner);
                    *st.counters.entry((id, why)).or_default() += 1;
                }),
            );
            let dial = tls::client_config(None, Arc::new(pin), provider.clone(), quic.clone())?;
            queues.insert(v.id, tx);
            links.push((v.clone(), dial, rx));
        }
        let shared = Arc::new(ClientShared {
            local_addr,
            max_frame,
            genesis,
            accounts,
            queues,
            state,
            frames_sent: AtomicU64::new(0),
            frames_received: AtomicU64::new(0),
            endpoint: Mutex::new(Some(endpoint.clone())),
            tasks: Tasks::new(),
        });
        for (v, dial, rx) in links {
            shared.tasks.spawn(link(
                shared.clone(),
                endpoint.clone(),
                v,
                dial,
                rx,
                out_tx.clone(),
            ));
        }
        Ok((
            ClientTransport {
                handle: Arc::new(ClientHandle { shared }),
            },
            out_rx,
        ))
    }

    fn shared(&self) -> &ClientShared {
        &self.handle.shared
    }

    /// The local address of the client's endpoint.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared().local_addr
    }

    /// Queues `frame` for validator `to`; never blocks. `false` if `to` is
    /// unknown, the frame is over `max_frame` or the queue is full (the
    /// last two counted).
    pub fn send(&self, to: u32, frame: Bytes) -> bool {
        let s = self.shared();
        let Some(queue) = s.queues.get(&to) else {
            return false;
        };
        if frame.len() > s.max_frame {
            s.count(to, reason::OVERSIZE_SEND);
            return false;
        }
        match queue.try_send(frame) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                s.count(to, reason::QUEUE_FULL);
                false
            }
            Err(TrySendError::Closed(_)) => false,
        }
    }

    /// Queues the same `frame` for every validator.
    pub fn broadcast(&self, frame: Bytes) {
        for &to in self.shared().queues.keys() {
            self.send(to, frame.clone());
        }
    }

    /// The validators with an accepted connection right now.
    pub fn connected(&self) -> Vec<u32> {
        self.shared().lock().connected.iter().copied().collect()
    }

    /// A snapshot of connections and counters.
    pub fn stats(&self) -> ClientStats {
        let s = self.shared();
        let st = s.lock();
        ClientStats {
            connected: st.connected.clone(),
            established: st.established.clone(),
            queued: s
                .queues
                .iter()
                .map(|(id, q)| (*id, q.max_capacity() - q.capacity()))
                .collect(),
            rejections: st.counters.clone(),
            frames_sent: s.frames_sent.load(Ordering::Relaxed),
            frames_received: s.frames_received.load(Ordering::Relaxed),
        }
    }

    /// Closes every connection, stops all tasks and releases the UDP port.
    pub async fn shutdown(self) {
        let shared = self.handle.shared.clone();
        let endpoint = shared
            .endpoint
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(endpoint) = &endpoint {
            endpoint.close(VarInt::from_u32(code::SHUTDOWN), b"shutdown");
        }
        tasks::stop(shared.tasks.take()).await;
        shared.lock().connected.clear();
        if let Some(endpoint) = endpoint {
            tasks::finish_endpoint(endpoint, shared.local_addr).await;
        }
    }
}

/// One validator's connection: waits for the first frame, then keeps a
/// connection up (reconnecting with back-off), writing queued frames and
/// forwarding what the validator sends.
async fn link(
    shared: Arc<ClientShared>,
    endpoint: Endpoint,
    peer: PeerInfo,
    dial: quinn::ClientConfig,
    mut queue: mpsc::Receiver<Bytes>,
    out: mpsc::Sender<(u32, Bytes)>,
) {
    let Some(first) = queue.recv().await else {
        return;
    };
    let mut pending = Some(first);
    let mut backoff = Backoff::new(RECONNECT_MIN, RECONNECT_MAX);
    loop {
        match frame::dial(
            &endpoint,
            &dial,
            peer.addr,
            &shared.genesis,
            Some(&shared.accounts),
            CONNECT_TIMEOUT,
        )
        .await
        {
            Ok((conn, mut send, mut recv)) => {
                let since = Instant::now();
                shared.set_connected(peer.id, true);
                let end = serve(
                    &shared,
                    peer.id,
                    &conn,
                    &mut send,
                    &mut recv,
                    &mut queue,
                    &mut pending,
                    &out,
                )
                .await;
                shared.set_connected(peer.id, false);
                conn.close(VarInt::from_u32(code::DONE), b"");
                if end == End::Stop {
                    return;
                }
                if since.elapsed() >= backoff.max() {
                    backoff.reset();
                }
            }
            Err(DialError::Genesis(theirs)) => {
                shared.count(peer.id, reason::GENESIS_MISMATCH);
                tracing::error!(
                    validator = peer.id,
                    addr = %peer.addr,
                    ours = %frame::hex_short(&shared.genesis),
                    theirs = %frame::hex_short(&theirs),
                    "validator {} runs another cluster file than ours (genesis digests differ)",
                    peer.id
                );
            }
            Err(e) => {
                shared.count(peer.id, reason::CONNECT_FAILED);
                tracing::debug!(validator = peer.id, error = %e, "client dial failed");
            }
        }
        tokio::time::sleep(backoff.step()).await;
    }
}

#[allow(clippy::too_many_arguments)]
async fn serve(
    shared: &ClientShared,
    id: u32,
    conn: &Connection,
    send: &mut SendStream,
    recv: &mut RecvStream,
    queue: &mut mpsc::Receiver<Bytes>,
    pending: &mut Option<Bytes>,
    out: &mpsc::Sender<(u32, Bytes)>,
) -> End {
    let writer = async {
        if let Some(frame) = pending.take() {
            if frame::write(send, &frame).await.is_err() {
                shared.count(id, reason::SEND_FAILED);
                return End::Lost;
            }
            shared.frames_sent.fetch_add(1, Ordering::Relaxed);
        }
        while let Some(frame) = queue.recv().await {
            let frames = frame::gulp(frame, queue);
            if frame::write_many(send, &frames).await.is_err() {
                shared.count(id, reason::SEND_FAILED);
                return End::Lost;
            }
            shared
                .frames_sent
                .fetch_add(frames.len() as u64, Ordering::Relaxed);
        }
        End::Stop
    };
    let reader = async {
        loop {
            match frame::read(recv, shared.max_frame).await {
                Ok(Some(frame)) => {
                    shared.frames_received.fetch_add(1, Ordering::Relaxed);
                    if out.send((id, frame)).await.is_err() {
                        return End::Stop;
                    }
                }
                Ok(None) | Err(ReadError::Closed | ReadError::Idle | ReadError::Slow) => {
                    return End::Lost
                }
                Err(ReadError::Oversize(len)) => {
                    shared.count(id, reason::OVERSIZE);
                    tracing::warn!(
                        validator = id,
                        len,
                        "oversize frame from validator: closing"
                    );
                    conn.close(VarInt::from_u32(code::OVERSIZE), b"frame too large");
                    return End::Lost;
                }
            }
        }
    };
    tokio::select! {
        end = writer => end,
        end = reader => end,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(addr: &str) -> PeerInfo {
        let key = Keypair::from_seed(&[9; 32]).expect("seed").public();
        PeerInfo {
            id: 0,
            key,
            addr: addr.parse().expect("addr"),
        }
    }

    #[test]
    fn bind_address_follows_the_validators() {
        assert_eq!(
            bind_addr(&[info("127.0.0.1:9000")]),
            "127.0.0.1:0".parse().expect("addr")
        );
        assert_eq!(
            bind_addr(&[info("10.0.0.1:9000")]),
            "0.0.0.0:0".parse().expect("addr")
        );
        assert_eq!(
            bind_addr(&[info("[::1]:9000")]),
            "[::1]:0".parse().expect("addr")
        );
        assert_eq!(
            bind_addr(&[info("[2001:db8::1]:9000")]),
            "[::]:0".parse().expect("addr")
        );
    }
}
