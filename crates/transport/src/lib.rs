//! QUIC transport for the pbft validators and their clients.
//!
//! # Identities
//!
//! Every validator's TLS certificate is self-signed and made from its
//! ed25519 key: the certificate's key pair is the validator key itself. A
//! connection between validators is mutual TLS 1.3 (ALPN `pbft/1`) in which
//! each end checks that the other's certificate carries exactly the key the
//! cluster lists for it, and that the handshake signature verifies with that
//! key. A process whose key is not in the cluster cannot complete a
//! handshake: its connection is refused and counted (`unpinned_key`), and
//! nothing it sends reaches the node. Clients present no certificate; they
//! authenticate each validator by its pinned key, and validators see them as
//! client connections ([`ClientId`]). Right after the hello a client may bind
//! its connection to the accounts it acts for, each with a signature by the
//! account key over keying material exported from that TLS session ([`Bound`]):
//! bound connections keep their slots when anonymous ones are evicted, and the
//! node routes an account's replies to the connections bound to it.
//!
//! # Connection layout
//!
//! - Each validator *dials* every other validator and uses that connection
//!   only for its own outgoing frames; it *accepts* the other validators'
//!   connections for their frames to it. Two validators therefore share two
//!   connections, one per direction, and no tie-breaking is needed when both
//!   dial at once.
//! - A connection carries one bidirectional stream opened by the dialer. The
//!   dialer writes a hello (4 magic bytes and its genesis digest; a client
//!   follows it with its bind section); the server answers with one byte once it
//!   has accepted the connection (pinned key, not banned, room for another
//!   client). Only then does the dialer count as connected and start taking
//!   frames from its send queue. On a validator connection the server sends
//!   nothing more; on a client connection requests go up and replies come
//!   down the same stream.
//! - Frames are a `u32` big-endian length followed by that many bytes, in
//!   order on the stream. A frame over `max_frame` is counted (`oversize`)
//!   and closes the connection; the dialer reconnects and carries on.
//! - Each peer has a bounded send queue ([`TransportConfig::send_queue`]
//!   frames). [`Transport::send`] never blocks: a full queue drops the frame,
//!   counts `queue_full` and returns `false`. Frames leave the queue only
//!   over an accepted connection, so the bound is the whole backlog for a
//!   peer that is down. A frame already written when a connection dies is
//!   lost (the protocol above tolerates loss); frames still queued go out
//!   over the next connection.
//! - A lost connection is redialed after an exponential back-off
//!   (`reconnect_min` doubling to `reconnect_max`; reset once a connection
//!   stayed up for `reconnect_max`). A restarted validator dials anew, and
//!   its new connection replaces the old one on the receiving side.
//! - The inbound channel to the node is bounded: when the node is slow, the
//!   readers wait and QUIC flow control pushes back on the senders.
//! - [`Transport::broadcast`] hands one [`bytes::Bytes`] to every queue: the
//!   frame is encoded once and shared, never copied per peer.
//!
//! # Misbehaviour and fault injection
//!
//! The transport does not decode frames; the node does, and reports bad
//! ones with [`Transport::report`]. Reports are counted per source and
//! reason; a validator with `strike_limit` reports within `strike_window`
//! is disconnected and its connections are refused for `ban_duration`
//! (counted `banned`). Our own outgoing connection to it stays up: it can
//! still hear us, we just stop listening to it. A client connection's reports
//! count against its address (an anonymous connection) or the accounts it is
//! bound to: at the limit the striking connection is closed and the address
//! (or the accounts) refused new connections for `ban_duration`.
//!
//! # Client connections
//!
//! Anyone may reach the client port, so client connections are limited:
//! connections still in their handshake, hello or binding are counted per
//! address and in total (a QUIC Retry first when anything is tight, the
//! oldest evicted to make room for a proven newcomer); admitted ones per
//! address (anonymous) or per account (bound) and in total, with eviction of
//! anonymous, over-served or idle connections; frames by size, deadline and
//! a byte budget until the node drops them; and connections from addresses
//! that are no validator's get small flow-control windows.
//! docs/operations.md, "Client connections", lists each limit and what it
//! protects against.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod bind;
mod client;
mod config;
mod error;
mod frame;
pub mod raw;
mod registry;
mod stats;
mod tasks;
mod tls;
mod validator;

use bytes::Bytes;

pub use bind::{Bound, ClientAccounts, MAX_BINDS};
pub use client::{ClientTransport, CLIENT_INBOUND_QUEUE, CLIENT_SEND_QUEUE};
pub use config::{PeerInfo, TransportConfig, DEFAULT_MAX_CLIENT_FRAME, DEFAULT_MAX_FRAME};
pub use error::TransportError;
pub use stats::{reason, ClientStats, Source, TransportStats};
pub use validator::{Inbounds, Transport};

/// Bytes of client frames held on the node's behalf: returned to the transport's
/// budget (`TransportConfig::client_inbound_bytes`) when the last clone is dropped.
/// Two charges always compare equal: a charge is not part of a frame's identity.
#[derive(Clone, Debug, Default)]
pub struct Charge(Option<std::sync::Arc<tokio::sync::OwnedSemaphorePermit>>);

impl Charge {
    pub(crate) fn new(permit: tokio::sync::OwnedSemaphorePermit) -> Charge {
        Charge(Some(std::sync::Arc::new(permit)))
    }

    /// The bytes charged.
    pub fn bytes(&self) -> usize {
        self.0.as_ref().map_or(0, |p| p.num_permits())
    }
}

impl PartialEq for Charge {
    fn eq(&self, _: &Charge) -> bool {
        true
    }
}

impl Eq for Charge {}

/// One accepted client connection, numbered from 0 in order of acceptance
/// by one transport. A client that reconnects gets a new id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct ClientId(pub u64);

/// Where a frame came from, for [`Transport::report`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Origin {
    /// A validator.
    Peer(u32),
    /// A client connection.
    Client(ClientId),
}

/// What the transport hands to the node.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Inbound {
    /// A frame from validator `from` (authenticated by its pinned key).
    Peer {
        /// The sending validator.
        from: u32,
        /// The frame, as received.
        frame: Bytes,
    },
    /// A frame from a client connection.
    Client {
        /// The connection; replies go back with [`Transport::reply`].
        conn: ClientId,
        /// The accounts the connection proved it acts for (empty if anonymous).
        bound: Bound,
        /// The frame, as received.
        frame: Bytes,
        /// The frame's bytes, charged against the clients' inbound budget until this
        /// is dropped (drop the frame with it once it is decoded).
        charge: Charge,
    },
    /// A client connection bound to accounts was admitted (anonymous ones are not
    /// announced); its frames follow.
    ClientOpened {
        /// The connection.
        conn: ClientId,
        /// The accounts it proved it acts for.
        bound: Bound,
    },
    /// The client connection is closed; its id is not used again.
    ClientClosed(ClientId),
}
