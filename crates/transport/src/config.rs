//! Validator addresses, keys and the transport's tunables.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use pbft_crypto::{Keypair, PublicKey};

use crate::bind::ClientAccounts;
use crate::error::TransportError;

/// Default largest frame: 16 MiB.
pub const DEFAULT_MAX_FRAME: usize = 16 << 20;
/// Default largest client frame: 64 KiB (a request with the largest operation
/// the decoder accepts is under 5 KiB).
pub const DEFAULT_MAX_CLIENT_FRAME: usize = 64 << 10;

/// One validator of the cluster: its id, its pinned ed25519 key and where it
/// listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    /// The validator id (its index in the cluster file).
    pub id: u32,
    /// The validator's ed25519 public key, which is also its TLS key.
    pub key: PublicKey,
    /// The UDP address its QUIC endpoint listens on.
    pub addr: SocketAddr,
}

impl PeerInfo {
    /// The validators of a list of (id, key, address), as a cluster file gives them.
    pub fn list(
        validators: impl IntoIterator<Item = (u32, PublicKey, SocketAddr)>,
    ) -> Vec<PeerInfo> {
        validators
            .into_iter()
            .map(|(id, key, addr)| PeerInfo { id, key, addr })
            .collect()
    }
}

/// Everything a validator's [`Transport`](crate::Transport) needs.
#[derive(Clone, Debug)]
pub struct TransportConfig {
    /// Our validator id.
    pub me: u32,
    /// Our key pair; the TLS certificate is made from it.
    pub keypair: Keypair,
    /// The UDP address to listen on (port 0 picks a free port).
    pub listen: SocketAddr,
    /// All validators of the cluster; our own entry, if present, is skipped
    /// (but its key must be ours).
    pub peers: Vec<PeerInfo>,
    /// Largest frame accepted or sent, in bytes (at most `u32::MAX`).
    pub max_frame: usize,
    /// Frames that may wait in one peer's send queue.
    pub send_queue: usize,
    /// Capacity of the inbound channel of validators' frames handed to the node.
    pub inbound_queue: usize,
    /// Capacity of the inbound channel of clients' frames (kept apart, so that
    /// client traffic never queues in front of validators').
    pub client_inbound_queue: usize,
    /// Bytes of client frames received and not yet dropped by the node (see
    /// [`Charge`](crate::Charge)); when they are all taken, client connections wait
    /// and QUIC flow control holds their senders back. At least `max_client_frame`.
    pub client_inbound_bytes: usize,
    /// First reconnection delay after a failed dial.
    pub reconnect_min: Duration,
    /// Largest reconnection delay (the delay doubles up to it).
    pub reconnect_max: Duration,
    /// Bound on one dial: QUIC handshake plus the transport's hello.
    pub connect_timeout: Duration,
    /// A connection silent for this long is dead (keep-alives are sent at a
    /// quarter of it).
    pub idle_timeout: Duration,
    /// Reports (see [`Transport::report`](crate::Transport::report)) within
    /// `strike_window` that get a peer banned.
    pub strike_limit: u32,
    /// The window in which strikes are counted.
    pub strike_window: Duration,
    /// How long a banned peer is refused.
    pub ban_duration: Duration,
    /// Open client connections accepted at once; beyond it the connection idle
    /// the longest is evicted (if idle for `evict_idle_after`), or the new one
    /// refused.
    pub max_clients: usize,
    /// Open anonymous client connections from one IP address; more are refused.
    /// Connections bound to a client account are counted per account instead.
    pub max_clients_per_ip: usize,
    /// Open client connections bound to one account; more are refused.
    pub max_clients_per_account: usize,
    /// Incoming connections still in their handshake, hello or binding (not yet
    /// admitted or refused) at once; more are refused before any handshake work.
    /// One address may hold `max_clients_per_ip` of them. Past half of this, a
    /// remote whose address QUIC has not validated is sent a Retry first, so that
    /// spoofed sources cost no handshake.
    pub max_pending: usize,
    /// The client accounts connections may bind to (the cluster's clients).
    pub accounts: ClientAccounts,
    /// A client connection idle this long may be evicted to make room.
    pub evict_idle_after: Duration,
    /// A client connection that sends nothing for this long is closed.
    pub client_idle_timeout: Duration,
    /// Largest frame a client may send (requests and queries are a few KiB);
    /// `max_frame` if that is smaller.
    pub max_client_frame: usize,
    /// Replies that may wait for one client connection; more are dropped (the
    /// client retransmits).
    pub client_send_queue: usize,
    /// Once a client frame's length has arrived, its bytes must all arrive
    /// within this time, or the connection is closed.
    pub client_frame_timeout: Duration,
    /// The genesis digest of our cluster file (`Cluster::genesis_digest`): a
    /// validator or client whose hello carries another one is refused, and a
    /// validator that answers with another one is not used. [`TransportConfig::new`]
    /// leaves it all zero, for tests that build transports without a cluster file.
    pub genesis: [u8; 32],
}

impl TransportConfig {
    /// A configuration with defaults: 16 MiB frames, 4096-frame send
    /// queues, reconnection after 50 ms doubling up to 2 s, 5 s dial
    /// timeout, 10 s idle timeout, a ban of 10 s after 100 strikes within
    /// 10 s, at most 1024 clients, 32 anonymous ones per address and 16 per
    /// bound account (an idle one evicted after 1 s when all are taken, an
    /// anonymous one at once for a bound newcomer), no client accounts, client connections closed after 60 s
    /// of silence, client frames of at most 64 KiB finished within 5 s.
    pub fn new(me: u32, keypair: Keypair, listen: SocketAddr, peers: Vec<PeerInfo>) -> Self {
        TransportConfig {
            me,
            keypair,
            listen,
            peers,
            max_frame: DEFAULT_MAX_FRAME,
            send_queue: 4096,
            inbound_queue: 4096,
            client_inbound_queue: 4096,
            client_inbound_bytes: 16 << 20,
            reconnect_min: Duration::from_millis(50),
            reconnect_max: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(10),
            strike_limit: 100,
            strike_window: Duration::from_secs(10),
            ban_duration: Duration::from_secs(10),
            max_clients: 1024,
            max_clients_per_ip: 32,
            max_clients_per_account: 16,
            max_pending: 256,
            accounts: ClientAccounts::default(),
            evict_idle_after: Duration::from_secs(1),
            client_idle_timeout: Duration::from_secs(60),
            max_client_frame: DEFAULT_MAX_CLIENT_FRAME,
            client_send_queue: 256,
            client_frame_timeout: Duration::from_secs(5),
            genesis: [0; 32],
        }
    }

    /// Checks the configuration for contradictions.
    pub(crate) fn validate(&self) -> Result<(), TransportError> {
        let bad = |msg: String| Err(TransportError::Config(msg));
        if self.max_frame == 0 || self.max_frame > u32::MAX as usize {
            return bad(format!(
                "max_frame {} is not in 1..=u32::MAX",
                self.max_frame
            ));
        }
        if self.send_queue == 0 || self.inbound_queue == 0 || self.client_inbound_queue == 0 {
            return bad(
                "send_queue, inbound_queue and client_inbound_queue must be at least 1".into(),
            );
        }
        if self.reconnect_min.is_zero() || self.reconnect_min > self.reconnect_max {
            return bad("reconnect_min must be positive and at most reconnect_max".into());
        }
        if self.connect_timeout.is_zero() {
            return bad("connect_timeout must be positive".into());
        }
        if self.idle_timeout < Duration::from_millis(100) {
            return bad("idle_timeout must be at least 100 ms".into());
        }
        if self.max_clients == 0
            || self.max_clients_per_ip == 0
            || self.max_clients_per_account == 0
            || self.max_pending == 0
        {
            return bad(
                "max_clients, max_clients_per_ip, max_clients_per_account and max_pending must be at least 1"
                    .into(),
            );
        }
        if self.max_client_frame == 0 || self.client_send_queue == 0 {
            return bad("max_client_frame and client_send_queue must be at least 1".into());
        }
        if self.client_inbound_bytes < self.max_client_frame.min(self.max_frame)
            || self.client_inbound_bytes > u32::MAX as usize
        {
            return bad(format!(
                "client_inbound_bytes {} must be at least max_client_frame and at most u32::MAX",
                self.client_inbound_bytes
            ));
        }
        if self.client_idle_timeout.is_zero() || self.client_frame_timeout.is_zero() {
            return bad("client_idle_timeout and client_frame_timeout must be positive".into());
        }
        if self.strike_limit == 0 {
            return bad("strike_limit must be at least 1".into());
        }
        let mut ids = BTreeSet::new();
        let mut keys = BTreeSet::new();
        for p in &self.peers {
            if !ids.insert(p.id) {
                return bad(format!("validator id {} is listed twice", p.id));
            }
            if !keys.insert(*p.key.as_bytes()) {
                return bad(format!(
                    "key {} is listed for two validators",
                    p.key.short()
                ));
            }
            if p.id == self.me && p.key != self.keypair.public() {
                return bad(format!(
                    "validator {} is listed with key {} but our key pair is {}",
                    p.id,
                    p.key.short(),
                    self.keypair.public().short()
                ));
            }
        }
        if self
            .peers
            .iter()
            .any(|p| p.id != self.me && p.key == self.keypair.public())
        {
            return bad("our key is listed for another validator id".into());
        }
        Ok(())
    }
}
