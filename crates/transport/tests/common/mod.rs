//! Helpers shared by the transport tests: a local cluster on reserved
//! loopback ports, fast settings, and bounded waits for events.

#![allow(dead_code)]

use std::future::Future;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use bytes::Bytes;
use pbft_crypto::Keypair;
use pbft_transport::{Inbound, PeerInfo, Transport, TransportConfig};
use tokio::sync::mpsc;

/// Failure bound for every wait: generous, only reached when a test fails.
pub const PATIENCE: Duration = Duration::from_secs(30);

pub fn keypair(seed: u8) -> Keypair {
    Keypair::from_seed(&[seed; 32]).expect("valid seed")
}

/// `n` validators with keys from seeds 1..=n and loopback sockets bound
/// up front, so every address is known before any validator starts.
pub struct Cluster {
    pub keys: Vec<Keypair>,
    pub peers: Vec<PeerInfo>,
    pub sockets: Vec<Option<UdpSocket>>,
}

impl Cluster {
    pub fn new(n: u32) -> Cluster {
        let mut keys = Vec::new();
        let mut peers = Vec::new();
        let mut sockets = Vec::new();
        for id in 0..n {
            let kp = keypair(id as u8 + 1);
            let socket = UdpSocket::bind("127.0.0.1:0").expect("bind loopback");
            let addr = socket.local_addr().expect("local addr");
            peers.push(PeerInfo {
                id,
                key: kp.public(),
                addr,
            });
            keys.push(kp);
            sockets.push(Some(socket));
        }
        Cluster {
            keys,
            peers,
            sockets,
        }
    }

    pub fn addr(&self, id: u32) -> SocketAddr {
        self.peers[id as usize].addr
    }

    /// Fast settings for loopback tests.
    pub fn config(&self, id: u32) -> TransportConfig {
        let mut cfg = TransportConfig::new(
            id,
            self.keys[id as usize].clone(),
            self.addr(id),
            self.peers.clone(),
        );
        fast(&mut cfg);
        cfg
    }

    /// Starts validator `id` on its reserved socket.
    pub async fn start(&mut self, id: u32) -> (Transport, mpsc::Receiver<Inbound>) {
        let cfg = self.config(id);
        self.start_with(id, cfg).await
    }

    /// Starts validator `id` on its reserved socket with `cfg`.
    pub async fn start_with(
        &mut self,
        id: u32,
        cfg: TransportConfig,
    ) -> (Transport, mpsc::Receiver<Inbound>) {
        let socket = self.sockets[id as usize]
            .take()
            .expect("socket not used yet");
        Transport::start_with_socket(cfg, socket)
            .await
            .expect("transport starts")
    }
}

pub fn fast(cfg: &mut TransportConfig) {
    cfg.reconnect_min = Duration::from_millis(20);
    cfg.reconnect_max = Duration::from_millis(400);
    cfg.connect_timeout = Duration::from_secs(3);
    cfg.idle_timeout = Duration::from_secs(10);
}

/// Polls `cond` until it holds; panics after [`PATIENCE`]. The short sleep
/// between polls only paces the polling; the outcome never depends on it.
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Awaits `fut`, panicking after [`PATIENCE`].
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// The next inbound event.
pub async fn next(rx: &mut mpsc::Receiver<Inbound>, what: &str) -> Inbound {
    within(what, rx.recv())
        .await
        .unwrap_or_else(|| panic!("channel closed waiting for {what}"))
}

/// The next frame from a validator.
pub async fn next_peer_frame(rx: &mut mpsc::Receiver<Inbound>, what: &str) -> (u32, Bytes) {
    match next(rx, what).await {
        Inbound::Peer { from, frame } => (from, frame),
        other => panic!("expected a validator frame for {what}, got {other:?}"),
    }
}

/// Waits until every transport has accepted outgoing and inbound
/// connections with all the others.
pub async fn wait_for_mesh(nodes: &[(u32, &Transport)]) {
    for (id, t) in nodes {
        let others: std::collections::BTreeSet<u32> =
            nodes.iter().map(|(i, _)| *i).filter(|i| i != id).collect();
        wait_until(&format!("validator {id} is meshed"), || {
            let s = t.stats();
            s.connected == others && s.inbound == others
        })
        .await;
    }
}
