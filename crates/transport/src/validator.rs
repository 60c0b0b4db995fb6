//! The validator's transport: dials every other validator for its own
//! outgoing frames, accepts validators' and clients' connections.

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use quinn::{Connection, Endpoint, SendStream, VarInt};
use tokio::sync::mpsc::{self, error::TrySendError};

use crate::bind::{self, BindError, ClientAccounts};
use crate::config::{PeerInfo, TransportConfig};
use crate::error::TransportError;
use crate::frame::{self, Backoff, DialError, Hello, ReadError, ACK};
use crate::registry::{self, code, Admit, Pending, Registry};
use crate::stats::{reason, Source, TransportStats};
use crate::tasks::{self, Tasks};
use crate::tls::{self, Identity, PeerAuth, PeerCert, PinnedServer};
use crate::{Charge, ClientId, Inbound, Origin};

/// A transport's inbound frames, validators' and clients' apart.
#[derive(Debug)]
pub struct Inbounds {
    /// Frames from validators ([`Inbound::Peer`]).
    pub peers: mpsc::Receiver<Inbound>,
    /// Frames from client connections and their closes ([`Inbound::Client`],
    /// [`Inbound::ClientClosed`]).
    pub clients: mpsc::Receiver<Inbound>,
}

/// A validator's QUIC transport. Cloning gives another handle to the same
/// transport; the last handle dropped without [`Transport::shutdown`] aborts
/// everything at once.
#[derive(Clone)]
pub struct Transport {
    handle: Arc<Handle>,
}

/// Owned by the `Transport` handles only (never by the tasks), so that
/// dropping the last handle stops the tasks.
struct Handle {
    shared: Arc<Shared>,
}

impl Drop for Handle {
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
        // Dropping the JoinSet aborts the tasks.
        drop(self.shared.tasks.take());
        self.shared.registry.clear();
    }
}

struct Shared {
    me: u32,
    local_addr: SocketAddr,
    max_frame: usize,
    max_client_frame: usize,
    /// Replies that may wait per client connection.
    client_send_queue: usize,
    /// The clients' inbound budget in bytes (see `Charge`).
    client_bytes: Arc<tokio::sync::Semaphore>,
    /// The server configuration for connections from addresses that are no
    /// validator's (small flow-control windows).
    client_server_config: Arc<quinn::ServerConfig>,
    /// The other validators' addresses.
    validator_ips: HashSet<IpAddr>,
    client_idle_timeout: Duration,
    client_frame_timeout: Duration,
    reconnect_min: Duration,
    reconnect_max: Duration,
    connect_timeout: Duration,
    genesis: [u8; 32],
    /// The client accounts connections may bind to.
    accounts: ClientAccounts,
    registry: Arc<Registry>,
    /// Send queue of each other validator.
    queues: BTreeMap<u32, mpsc::Sender<Bytes>>,
    /// Frames from validators.
    inbound: mpsc::Sender<Inbound>,
    /// Frames and closes from client connections.
    client_inbound: mpsc::Sender<Inbound>,
    endpoint: Mutex<Option<Endpoint>>,
    tasks: Tasks,
    next_client: AtomicU64,
}

/// How a connection's pump ended.
#[derive(PartialEq, Eq)]
enum End {
    /// The connection is gone; reconnect.
    Lost,
    /// The transport is going away; stop.
    Stop,
}

impl Transport {
    /// Binds `cfg.listen` and starts the transport. Frames from validators
    /// and clients arrive on the returned channel.
    ///
    /// A port already in use is [`TransportError::Bind`].
    pub async fn start(
        cfg: TransportConfig,
    ) -> Result<(Transport, mpsc::Receiver<Inbound>), TransportError> {
        let socket = Self::bind(&cfg)?;
        Self::start_with_socket(cfg, socket).await
    }

    /// Like [`Transport::start`], with validators' frames and clients' frames on
    /// separate channels ([`Inbounds`]), so that the caller can serve validators
    /// first and a flood of client frames never queues in front of them.
    pub async fn start_split(
        cfg: TransportConfig,
    ) -> Result<(Transport, Inbounds), TransportError> {
        let socket = Self::bind(&cfg)?;
        Self::start_split_with_socket(cfg, socket).await
    }

    fn bind(cfg: &TransportConfig) -> Result<std::net::UdpSocket, TransportError> {
        cfg.validate()?;
        std::net::UdpSocket::bind(cfg.listen).map_err(|source| TransportError::Bind {
            addr: cfg.listen,
            source,
        })
    }

    /// Starts the transport on an already bound UDP socket (`cfg.listen` is
    /// ignored), with every frame on one channel: validators' frames are taken
    /// first whenever both wait.
    pub async fn start_with_socket(
        cfg: TransportConfig,
        socket: std::net::UdpSocket,
    ) -> Result<(Transport, mpsc::Receiver<Inbound>), TransportError> {
        let queue = cfg.inbound_queue;
        let (t, mut inbounds) = Self::start_split_with_socket(cfg, socket).await?;
        let (tx, rx) = mpsc::channel(queue);
        t.shared().tasks.spawn(async move {
            loop {
                let next = tokio::select! {
                    biased;
                    Some(f) = inbounds.peers.recv() => f,
                    Some(f) = inbounds.clients.recv() => f,
                    else => return,
                };
                if tx.send(next).await.is_err() {
                    return;
                }
            }
        });
        Ok((t, rx))
    }

    /// Starts the transport on an already bound UDP socket (`cfg.listen` is
    /// ignored), with validators' and clients' frames apart ([`Inbounds`]). Lets
    /// a caller reserve every address of a cluster before any validator starts.
    pub async fn start_split_with_socket(
        cfg: TransportConfig,
        socket: std::net::UdpSocket,
    ) -> Result<(Transport, Inbounds), TransportError> {
        cfg.validate()?;
        let local_addr = socket.local_addr().map_err(TransportError::Endpoint)?;
        socket
            .set_nonblocking(true)
            .map_err(TransportError::Endpoint)?;

        let provider = tls::provider();
        let identity = Identity::new(&cfg.keypair)?;
        let registry = Arc::new(Registry::new(&cfg));
        let quic = tls::quic_transport(cfg.idle_timeout)?;
        let verifier = Arc::new(PeerAuth::new(registry.clone(), provider.clone()));
        let server =
            tls::server_config(&identity, verifier.clone(), provider.clone(), quic.clone())?;
        // connections from other addresses than the validators' get small windows:
        // twice the largest client frame (at least 64 KiB)
        let max_client_frame = cfg.max_client_frame.min(cfg.max_frame);
        let window =
            u32::try_from(max_client_frame.saturating_mul(2).max(64 << 10)).unwrap_or(u32::MAX);
        let for_clients = Arc::new(tls::server_config(
            &identity,
            verifier,
            provider.clone(),
            tls::quic_transport_for_clients(cfg.idle_timeout, window)?,
        )?);
        let validator_ips = cfg
            .peers
            .iter()
            .filter(|p| p.id != cfg.me)
            .map(|p| p.addr.ip())
            .collect();
        let endpoint = Endpoint::new(
            tls::endpoint_config(&cfg.keypair),
            Some(server),
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(TransportError::Endpoint)?;

        let mut queues = BTreeMap::new();
        let mut links = Vec::new();
        for peer in cfg.peers.iter().filter(|p| p.id != cfg.me) {
            let (tx, rx) = mpsc::channel(cfg.send_queue);
            let counter = registry.clone();
            let id = peer.id;
            let pin = PinnedServer::new(
                *peer.key.as_bytes(),
                provider.clone(),
                Arc::new(move |why: &'static str| counter.count(Source::Peer(id), why)),
            );
            let dial = tls::client_config(
                Some(&identity),
                Arc::new(pin),
                provider.clone(),
                quic.clone(),
            )?;
            queues.insert(peer.id, tx);
            links.push((peer.clone(), dial, rx));
        }

        let (inbound_tx, inbound_rx) = mpsc::channel(cfg.inbound_queue);
        let (client_tx, client_rx) = mpsc::channel(cfg.client_inbound_queue);
        let shared = Arc::new(Shared {
            me: cfg.me,
            local_addr,
            max_frame: cfg.max_frame,
            max_client_frame,
            client_send_queue: cfg.client_send_queue,
            client_bytes: Arc::new(tokio::sync::Semaphore::new(cfg.client_inbound_bytes)),
            client_server_config: for_clients,
            validator_ips,
            client_idle_timeout: cfg.client_idle_timeout,
            client_frame_timeout: cfg.client_frame_timeout,
            reconnect_min: cfg.reconnect_min,
            reconnect_max: cfg.reconnect_max,
            connect_timeout: cfg.connect_timeout,
            genesis: cfg.genesis,
            accounts: cfg.accounts.clone(),
            registry,
            queues,
            inbound: inbound_tx,
            client_inbound: client_tx,
            endpoint: Mutex::new(Some(endpoint.clone())),
            tasks: Tasks::new(),
            next_client: AtomicU64::new(0),
        });
        shared
            .tasks
            .spawn(accept_loop(shared.clone(), endpoint.clone()));
        for (peer, dial, rx) in links {
            shared
                .tasks
                .spawn(peer_link(shared.clone(), endpoint.clone(), peer, dial, rx));
        }
        tracing::info!(me = cfg.me, addr = %local_addr, "transport listening");
        Ok((
            Transport {
                handle: Arc::new(Handle { shared }),
            },
            Inbounds {
                peers: inbound_rx,
                clients: client_rx,
            },
        ))
    }

    fn shared(&self) -> &Shared {
        &self.handle.shared
    }

    /// The address the endpoint is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared().local_addr
    }

    /// Queues `frame` for validator `to`. Never blocks: `false` (and a
    /// count) when the peer's queue is full, the id is not another
    /// validator, or the frame is over `max_frame`.
    pub fn send(&self, to: u32, frame: Bytes) -> bool {
        let s = self.shared();
        let Some(queue) = s.queues.get(&to) else {
            s.registry.count(Source::Peer(to), reason::UNKNOWN_PEER);
            return false;
        };
        if frame.len() > s.max_frame {
            s.registry.count(Source::Peer(to), reason::OVERSIZE_SEND);
            return false;
        }
        match queue.try_send(frame) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                s.registry.count(Source::Peer(to), reason::QUEUE_FULL);
                false
            }
            Err(TrySendError::Closed(_)) => false,
        }
    }

    /// Queues the same `frame` for every other validator: one buffer,
    /// shared by all queues (a reference-count increment per peer).
    pub fn broadcast(&self, frame: Bytes) {
        for &to in self.shared().queues.keys() {
            self.send(to, frame.clone());
        }
    }

    /// Queues a reply on client connection `client`. `false` if the
    /// connection is gone, its queue is full (counted) or the frame is over
    /// `max_frame` (counted).
    pub fn reply(&self, client: ClientId, frame: Bytes) -> bool {
        let s = self.shared();
        if frame.len() > s.max_frame {
            s.registry.count(Source::Client, reason::OVERSIZE_SEND);
            return false;
        }
        let Some(queue) = s.registry.client_queue(client) else {
            return false;
        };
        match queue.try_send(frame) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                s.registry.count(Source::Client, reason::QUEUE_FULL);
                false
            }
            Err(TrySendError::Closed(_)) => false,
        }
    }

    /// Whether client connection `client` is still open.
    pub fn is_open(&self, client: ClientId) -> bool {
        self.shared().registry.client_queue(client).is_some()
    }

    /// Reports that `origin` sent something bad (a frame that does not
    /// decode, a bad signature...). Counted per source and reason; a
    /// validator reaching `strike_limit` reports within `strike_window` is
    /// disconnected and its connections refused for `ban_duration`; a
    /// client connection reaching it is closed.
    pub fn report(&self, origin: Origin, reason: &'static str) {
        self.shared().registry.report(origin, reason);
    }

    /// A snapshot of connections and counters.
    pub fn stats(&self) -> TransportStats {
        let s = self.shared();
        let mut stats = s.registry.snapshot();
        stats.queued = s
            .queues
            .iter()
            .map(|(id, q)| (*id, q.max_capacity() - q.capacity()))
            .collect();
        stats
    }

    /// Closes every connection (peers see a close, not a timeout), stops
    /// all tasks, and returns once the UDP port is released (bounded wait),
    /// so the same address can be bound again. Affects every handle.
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
        shared.registry.clear();
        if let Some(endpoint) = endpoint {
            tasks::finish_endpoint(endpoint, shared.local_addr).await;
        }
        tracing::info!(me = shared.me, "transport shut down");
    }
}

/// Accepts connections until the endpoint closes; each one is handled by
/// its own task.
async fn accept_loop(shared: Arc<Shared>, endpoint: Endpoint) {
    while let Some(incoming) = endpoint.accept().await {
        let s = shared.clone();
        shared
            .tasks
            .spawn(async move { handle_incoming(s, incoming).await });
    }
}

async fn handle_incoming(shared: Arc<Shared>, incoming: quinn::Incoming) {
    let remote = incoming.remote_address();
    // counted from the first packet until admitted or refused: a stranger that opens
    // connections and never finishes their handshake or hello holds only its share,
    // and makes room for anyone else's
    let validator = shared.validator_ips.contains(&remote.ip());
    let pending = match shared.registry.begin_pending(
        registry::address_key(remote.ip()),
        incoming.remote_address_validated(),
        validator,
    ) {
        Admit::Go(pending) => pending,
        Admit::Retry if incoming.may_retry() => {
            // the Retry costs the remote a round trip, and us no handshake: a spoofed
            // source never answers it
            if let Err(e) = incoming.retry() {
                tracing::debug!(%remote, error = %e, "retry failed");
            }
            return;
        }
        Admit::Retry | Admit::Refuse => {
            incoming.refuse();
            return;
        }
    };
    let accepted = if validator {
        incoming.accept()
    } else {
        incoming.accept_with(shared.client_server_config.clone())
    };
    let connecting = match accepted {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(%remote, error = %e, "incoming connection failed");
            return;
        }
    };
    let handshake = tokio::select! {
        h = tokio::time::timeout(shared.connect_timeout, connecting) => h,
        // evicted to make room: the handshake is dropped
        _ = pending.kicked() => return,
    };
    let conn = match handshake {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            // Unpinned keys and bans are counted by the certificate verifier.
            tracing::debug!(%remote, error = %e, "handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%remote, "handshake timed out");
            return;
        }
    };
    match tls::peer_cert(&conn) {
        PeerCert::None => serve_client(shared, conn, pending).await,
        PeerCert::Key(key) => match shared.registry.peer_of_key(&key) {
            Some(id) => {
                if !validator {
                    // it dialed from another address than the cluster file lists: its
                    // connection has the small client windows, which slow large frames
                    shared
                        .registry
                        .count(Source::Peer(id), reason::UNLISTED_ADDRESS);
                    tracing::debug!(peer = id, %remote, "validator dialed from an unlisted address");
                }
                serve_peer(shared, conn, id, pending).await
            }
            None => {
                shared.registry.count(Source::Unknown, reason::UNPINNED_KEY);
                conn.close(VarInt::from_u32(code::DONE), b"unknown key");
            }
        },
        PeerCert::Unreadable => {
            shared.registry.count(Source::Unknown, reason::UNPINNED_KEY);
            conn.close(VarInt::from_u32(code::DONE), b"unreadable certificate");
        }
    }
}

/// Runs `step` of a pending connection's admission; `None`, with the connection closed,
/// if it is evicted to make room for another first.
async fn unless_evicted<T>(
    pending: &Pending,
    conn: &Connection,
    step: impl std::future::Future<Output = T>,
) -> Option<T> {
    tokio::select! {
        out = step => Some(out),
        _ = pending.kicked() => {
            conn.close(VarInt::from_u32(code::BUSY), b"evicted while pending");
            None
        }
    }
}

/// Reads frames from validator `id` and hands them to the node.
async fn serve_peer(shared: Arc<Shared>, conn: Connection, id: u32, pending: Pending) {
    let hello = frame::accept_hello(&conn, &shared.genesis, shared.connect_timeout);
    let Some(hello) = unless_evicted(&pending, &conn, hello).await else {
        return;
    };
    let (mut send, mut recv) = match hello {
        Hello::Ok(send, recv) => (send, recv),
        Hello::Genesis(theirs) => {
            shared
                .registry
                .count(Source::Peer(id), reason::GENESIS_MISMATCH);
            tracing::error!(
                me = shared.me,
                peer = id,
                ours = %frame::hex_short(&shared.genesis),
                theirs = %frame::hex_short(&theirs),
                "validator {id} runs another cluster file (genesis digests differ): refused"
            );
            conn.close(VarInt::from_u32(code::GENESIS), b"another genesis");
            return;
        }
        Hello::Bad => {
            shared.registry.count(Source::Peer(id), reason::BAD_HELLO);
            conn.close(VarInt::from_u32(code::BAD_HELLO), b"bad hello");
            return;
        }
    };
    let admitted = shared.registry.add_inbound(id, conn.clone());
    drop(pending);
    let Some(serial) = admitted else {
        return; // banned: counted and closed by the registry
    };
    if send.write_all(&[ACK]).await.is_ok() {
        tracing::debug!(me = shared.me, peer = id, "inbound connection accepted");
        loop {
            match frame::read(&mut recv, shared.max_frame).await {
                Ok(Some(frame)) => {
                    shared
                        .registry
                        .frames_received
                        .fetch_add(1, Ordering::Relaxed);
                    if shared
                        .inbound
                        .send(Inbound::Peer { from: id, frame })
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
                Ok(None) | Err(ReadError::Closed | ReadError::Idle | ReadError::Slow) => break,
                Err(ReadError::Oversize(len)) => {
                    shared.registry.count(Source::Peer(id), reason::OVERSIZE);
                    tracing::warn!(
                        peer = id,
                        len,
                        max = shared.max_frame,
                        "oversize frame: closing"
                    );
                    conn.close(VarInt::from_u32(code::OVERSIZE), b"frame too large");
                    break;
                }
            }
        }
    }
    shared.registry.remove_inbound(id, serial);
    conn.close(VarInt::from_u32(code::DONE), b"");
}

/// Serves one client connection: requests up, replies down, on the one
/// stream.
async fn serve_client(shared: Arc<Shared>, conn: Connection, pending: Pending) {
    // the address the connection is admitted with, which its strikes count against
    // (QUIC lets a connection move: its current address may be someone else's;
    // IPv6 addresses count by their /64)
    let ip = registry::address_key(conn.remote_address().ip());
    // one deadline for the hello and the bind section together
    let deadline = tokio::time::Instant::now() + shared.connect_timeout;
    let hello = frame::accept_hello(&conn, &shared.genesis, shared.connect_timeout);
    let Some(hello) = unless_evicted(&pending, &conn, hello).await else {
        return;
    };
    let (mut send, mut recv) = match hello {
        Hello::Ok(send, recv) => (send, recv),
        Hello::Genesis(theirs) => {
            // anyone may dial the client port: counted and logged quietly
            shared
                .registry
                .count(Source::Client, reason::GENESIS_MISMATCH);
            tracing::debug!(
                theirs = %frame::hex_short(&theirs),
                "a client with another cluster file: refused"
            );
            conn.close(VarInt::from_u32(code::GENESIS), b"another genesis");
            return;
        }
        Hello::Bad => {
            // a hello not said in time held a handshake's worth of state: a strike
            shared.registry.count(Source::Client, reason::BAD_HELLO);
            conn.close(VarInt::from_u32(code::BAD_HELLO), b"bad hello");
            shared.registry.strike_address(ip);
            return;
        }
    };
    let read = tokio::time::timeout_at(deadline, bind::read(&conn, &mut recv, &shared.accounts));
    let Some(read) = unless_evicted(&pending, &conn, read).await else {
        return;
    };
    let bound = match read {
        Ok(Ok(bound)) => bound,
        Ok(Err(BindError::Read)) | Err(_) => {
            shared.registry.count(Source::Client, reason::BAD_HELLO);
            conn.close(VarInt::from_u32(code::BAD_HELLO), b"bad hello");
            shared.registry.strike_address(ip);
            return;
        }
        Ok(Err(e)) => {
            shared.registry.count(Source::Client, reason::BAD_BIND);
            tracing::debug!(%ip, error = ?e, "a client's account binding was refused");
            conn.close(VarInt::from_u32(code::BAD_BIND), b"bad account binding");
            // a binding that fails costs a verification: it counts as a strike
            shared.registry.strike_address(ip);
            return;
        }
    };
    let id = ClientId(shared.next_client.fetch_add(1, Ordering::Relaxed));
    let (tx, mut rx) = mpsc::channel::<Bytes>(shared.client_send_queue);
    let admitted = shared
        .registry
        .add_client(id, conn.clone(), tx, ip, bound.clone());
    drop(pending);
    let activity = match admitted {
        Ok(a) => a,
        Err(refusal) => {
            let (code, why) = refusal.close();
            conn.close(VarInt::from_u32(code), why);
            return;
        }
    };
    if send.write_all(&[ACK]).await.is_err() {
        shared.registry.remove_client(id);
        return;
    }
    // a bound connection is its accounts' route from now on, before it sends anything
    // (after an idle close, a client's next reply may come before its next request)
    if !bound.is_anonymous()
        && shared
            .client_inbound
            .send(Inbound::ClientOpened {
                conn: id,
                bound: bound.clone(),
            })
            .await
            .is_err()
    {
        shared.registry.remove_client(id);
        return;
    }
    let registry = &shared.registry;
    let reader = async {
        loop {
            let read = frame::read_client(
                &mut recv,
                shared.max_client_frame,
                shared.client_idle_timeout,
                shared.client_frame_timeout,
            )
            .await;
            match read {
                Ok(Some(frame)) => {
                    activity.touch();
                    registry.frames_received.fetch_add(1, Ordering::Relaxed);
                    // frames are at most max_client_frame, which the budget exceeds
                    let len = u32::try_from(frame.len()).unwrap_or(u32::MAX);
                    let Ok(permit) = shared.client_bytes.clone().acquire_many_owned(len).await
                    else {
                        return;
                    };
                    if shared
                        .client_inbound
                        .send(Inbound::Client {
                            conn: id,
                            bound: bound.clone(),
                            frame,
                            charge: Charge::new(permit),
                        })
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Ok(None) | Err(ReadError::Closed) => return,
                Err(ReadError::Oversize(len)) => {
                    registry.count(Source::Client, reason::OVERSIZE);
                    tracing::debug!(client = id.0, len, "oversize frame from client: closing");
                    conn.close(VarInt::from_u32(code::OVERSIZE), b"frame too large");
                    registry.strike_client(ip, &bound);
                    return;
                }
                Err(ReadError::Idle) => {
                    registry.count(Source::Client, reason::CLIENT_IDLE);
                    conn.close(VarInt::from_u32(code::IDLE), b"idle");
                    return;
                }
                Err(ReadError::Slow) => {
                    registry.count(Source::Client, reason::SLOW_FRAME);
                    conn.close(VarInt::from_u32(code::IDLE), b"frame not finished in time");
                    registry.strike_client(ip, &bound);
                    return;
                }
            }
        }
    };
    let writer = async {
        while let Some(frame) = rx.recv().await {
            let frames = frame::gulp(frame, &mut rx);
            if frame::write_many(&mut send, &frames).await.is_err() {
                return;
            }
            registry
                .frames_sent
                .fetch_add(frames.len() as u64, Ordering::Relaxed);
        }
    };
    tokio::select! {
        _ = reader => {}
        _ = writer => {}
    }
    shared.registry.remove_client(id);
    conn.close(VarInt::from_u32(code::DONE), b"");
    let _ = shared.client_inbound.send(Inbound::ClientClosed(id)).await;
}

/// Keeps one outgoing connection to `peer` and drains its send queue into
/// it, reconnecting with exponential back-off. Frames are taken from the
/// queue only while connected, so the queue bound is the whole backlog.
async fn peer_link(
    shared: Arc<Shared>,
    endpoint: Endpoint,
    peer: PeerInfo,
    dial: quinn::ClientConfig,
    mut queue: mpsc::Receiver<Bytes>,
) {
    let mut backoff = Backoff::new(shared.reconnect_min, shared.reconnect_max);
    loop {
        match frame::dial(
            &endpoint,
            &dial,
            peer.addr,
            &shared.genesis,
            None,
            shared.connect_timeout,
        )
        .await
        {
            // The receive half stays open (unused) for the connection's life.
            Ok((conn, mut send, _recv)) => {
                let since = Instant::now();
                shared.registry.set_connected(peer.id, true);
                tracing::debug!(me = shared.me, peer = peer.id, "connected");
                let end = pump(&shared, peer.id, &conn, &mut send, &mut queue).await;
                shared.registry.set_connected(peer.id, false);
                conn.close(VarInt::from_u32(code::DONE), b"");
                if end == End::Stop {
                    return;
                }
                tracing::debug!(me = shared.me, peer = peer.id, "connection lost");
                if since.elapsed() >= backoff.max() {
                    backoff.reset();
                }
            }
            Err(DialError::Genesis(theirs)) => {
                shared
                    .registry
                    .count(Source::Peer(peer.id), reason::GENESIS_MISMATCH);
                tracing::error!(
                    me = shared.me,
                    peer = peer.id,
                    addr = %peer.addr,
                    ours = %frame::hex_short(&shared.genesis),
                    theirs = %frame::hex_short(&theirs),
                    "validator {} runs another cluster file (genesis digests differ): not connected",
                    peer.id
                );
            }
            Err(e) => {
                shared
                    .registry
                    .count(Source::Peer(peer.id), reason::CONNECT_FAILED);
                tracing::debug!(me = shared.me, peer = peer.id, error = %e, "dial failed");
            }
        }
        tokio::time::sleep(backoff.step()).await;
    }
}

/// Writes queued frames to the connection until it is lost.
async fn pump(
    shared: &Shared,
    id: u32,
    conn: &Connection,
    send: &mut SendStream,
    queue: &mut mpsc::Receiver<Bytes>,
) -> End {
    loop {
        tokio::select! {
            frame = queue.recv() => {
                let Some(frame) = frame else { return End::Stop };
                let frames = frame::gulp(frame, queue);
                if frame::write_many(send, &frames).await.is_err() {
                    shared.registry.count(Source::Peer(id), reason::SEND_FAILED);
                    return End::Lost;
                }
                shared
                    .registry
                    .frames_sent
                    .fetch_add(frames.len() as u64, Ordering::Relaxed);
            }
            _ = conn.closed() => return End::Lost,
        }
    }
}

/// Connections between the handshake and admission (tests from a review of the
/// account binding).
#[cfg(test)]
mod admission_tests {
    use super::*;
    use crate::bind::MAX_BINDS;
    use crate::raw::RawEndpoint;
    use crate::tls::SERVER_NAME;
    use pbft_crypto::Keypair;
    use quinn::RecvStream;
    use std::net::{IpAddr, Ipv4Addr};

    const STRANGER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    const PATIENCE: Duration = Duration::from_secs(30);

    /// Dials `validator`, says the hello and announces a full bind section
    /// ([`MAX_BINDS`] entries), then sends nothing more. The streams are returned so
    /// that the send half is not finished by being dropped.
    async fn stall_in_bind(
        endpoint: &Endpoint,
        validator: &PeerInfo,
    ) -> Option<(Connection, SendStream, RecvStream)> {
        let provider = tls::provider();
        let quic = tls::quic_transport(Duration::from_secs(30)).expect("quic config");
        let pin = PinnedServer::new(
            *validator.key.as_bytes(),
            provider.clone(),
            Arc::new(|_| {}),
        );
        let config = tls::client_config(None, Arc::new(pin), provider, quic).expect("tls config");
        // a refused handshake (too many pending from the address) is no connection
        let conn = endpoint
            .connect_with(config, validator.addr, SERVER_NAME)
            .expect("dial")
            .await
            .ok()?;
        let (mut send, recv) = conn.open_bi().await.ok()?;
        let mut hello = frame::HELLO.to_vec();
        hello.extend_from_slice(&[0u8; 32]);
        hello.extend_from_slice(&u16::try_from(MAX_BINDS).expect("fits").to_be_bytes());
        send.write_all(&hello).await.ok()?;
        Some((conn, send, recv))
    }

    /// Validator 0 alone, on a loopback socket, with its default configuration.
    fn one_validator() -> (PeerInfo, std::net::UdpSocket, TransportConfig) {
        let kp = Keypair::from_seed(&[1; 32]).expect("seed");
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind loopback");
        let addr = socket.local_addr().expect("local addr");
        let peer = PeerInfo {
            id: 0,
            key: kp.public(),
            addr,
        };
        let cfg = TransportConfig::new(0, kp, addr, vec![peer.clone()]);
        (peer, socket, cfg)
    }

    fn stranger_endpoint() -> Endpoint {
        crate::client::dialing_endpoint(SocketAddr::new(STRANGER, 0))
            .expect("bind 127.0.0.2")
            .0
    }

    /// A host that stalls inside its bind section is closed at the hello's deadline,
    /// and each stall is a strike: three with a strike limit of three ban the address.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_host_that_stalls_in_its_bind_section_is_struck() {
        let (peer, socket, mut cfg) = one_validator();
        cfg.connect_timeout = Duration::from_millis(300);
        cfg.strike_limit = 3;
        cfg.strike_window = Duration::from_secs(600);
        cfg.ban_duration = Duration::from_secs(600);
        cfg.accounts =
            ClientAccounts::new([Keypair::from_seed(&[101; 32]).expect("seed").public()]);
        let (t, _rx) = Transport::start_with_socket(cfg, socket)
            .await
            .expect("transport starts");
        let endpoint = stranger_endpoint();
        for i in 0..3 {
            let (conn, _send, _recv) = stall_in_bind(&endpoint, &peer)
                .await
                .expect("a stalled connection");
            tokio::time::timeout(PATIENCE, conn.closed())
                .await
                .unwrap_or_else(|_| panic!("stalled connection {i} never closed"));
        }
        assert_eq!(t.stats().count(Source::Client, reason::BAD_HELLO), 3);
        let raw = RawEndpoint::bind(STRANGER).expect("bind 127.0.0.2");
        let admitted = raw.open(&peer, [0; 32], PATIENCE).await;
        assert!(
            admitted.is_err(),
            "three stalled bind sections drew no strike: the address is not banned"
        );
        raw.close();
        endpoint.close(VarInt::from_u32(0), b"");
        t.shutdown().await;
    }

    /// Connections between the handshake and admission (in the hello or the bind
    /// section) count against their address: one allowed two holds at most two
    /// stalled in their bind sections, each newer one taking the oldest one's place.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unadmitted_connections_count_against_their_address() {
        let (peer, socket, mut cfg) = one_validator();
        // long enough that no stalled connection times out during the test
        cfg.connect_timeout = PATIENCE;
        cfg.max_clients = 2;
        cfg.max_clients_per_ip = 2;
        cfg.accounts =
            ClientAccounts::new([Keypair::from_seed(&[101; 32]).expect("seed").public()]);
        let (t, _rx) = Transport::start_with_socket(cfg, socket)
            .await
            .expect("transport starts");
        let endpoint = stranger_endpoint();
        let mut stalled = Vec::new();
        for _ in 0..10 {
            if let Some(s) = stall_in_bind(&endpoint, &peer).await {
                stalled.push(s);
            }
        }
        let open = stalled
            .iter()
            .filter(|(c, _, _)| c.close_reason().is_none())
            .count();
        assert!(
            open <= 2,
            "{open} unadmitted connections from one address are held open (limit 2 per address)"
        );
        // each newcomer beyond the share took the place of the address's oldest
        assert_eq!(t.stats().count(Source::Unknown, reason::EVICTED_PENDING), 8);
        assert_eq!(t.stats().clients, 0, "no stalled connection holds a slot");
        endpoint.close(VarInt::from_u32(0), b"");
        t.shutdown().await;
    }
}
