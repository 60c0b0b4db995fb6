//! Counters and the snapshot returned by `stats()`.

use std::collections::{BTreeMap, BTreeSet};

/// Who a counted event is attributed to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Source {
    /// A validator, known by its pinned key (or the one we dialed / sent to).
    Peer(u32),
    /// Some client connection (clients are anonymous).
    Client,
    /// A remote that could not be identified (for example a key that is not
    /// in the cluster).
    Unknown,
}

/// The reasons the transport itself counts. Reports from the node
/// ([`Transport::report`](crate::Transport::report)) are counted under the
/// reason the node gives.
pub mod reason {
    /// A certificate whose key is not the pinned one (inbound: not in the
    /// cluster at all, counted under `Unknown`; outbound: the server at a
    /// validator's address is not that validator).
    pub const UNPINNED_KEY: &str = "unpinned_key";
    /// A TLS 1.3 handshake signature that does not verify, or uses another
    /// scheme than ed25519.
    pub const BAD_HANDSHAKE_SIGNATURE: &str = "bad_handshake_signature";
    /// A frame longer than `max_frame` was received; the connection was
    /// closed.
    pub const OVERSIZE: &str = "oversize";
    /// The node tried to send a frame longer than `max_frame`; it was not sent.
    pub const OVERSIZE_SEND: &str = "oversize_send";
    /// A send queue was full; the frame was dropped.
    pub const QUEUE_FULL: &str = "queue_full";
    /// A connection from a banned peer was refused.
    pub const BANNED: &str = "banned";
    /// A peer reached the strike limit and was banned.
    pub const BAN_IMPOSED: &str = "ban_imposed";
    /// A connection did not open its stream with the transport's hello in time.
    pub const BAD_HELLO: &str = "bad_hello";
    /// A connection between ends whose cluster files differ (their genesis
    /// digests, compared in the hello) was refused.
    pub const GENESIS_MISMATCH: &str = "genesis_mismatch";
    /// A client connection was refused because its address holds
    /// `max_clients_per_ip` connections already.
    pub const TOO_MANY_FROM_ADDRESS: &str = "too_many_from_address";
    /// An idle client connection was closed to make room for a new one.
    pub const EVICTED_IDLE: &str = "evicted_idle";
    /// An anonymous client connection was closed to make room for a connection
    /// bound to a client account.
    pub const EVICTED_ANONYMOUS: &str = "evicted_anonymous";
    /// A connection bound to the account holding the most connections was closed to
    /// make room for a connection bound to another account (every slot was bound).
    pub const EVICTED_BUSIEST_ACCOUNT: &str = "evicted_busiest_account";
    /// A client connection was refused because one of the accounts it binds
    /// holds `max_clients_per_account` connections already.
    pub const TOO_MANY_FOR_ACCOUNT: &str = "too_many_for_account";
    /// A client's bind section named a key that is not a client account, had a
    /// signature that does not verify, or named too many accounts; the
    /// connection was refused.
    pub const BAD_BIND: &str = "bad_bind";
    /// A client connection sent nothing for `client_idle_timeout` and was closed.
    pub const CLIENT_IDLE: &str = "client_idle";
    /// A client connection began a frame and did not finish it within
    /// `client_frame_timeout`; it was closed.
    pub const SLOW_FRAME: &str = "slow_frame";
    /// An incoming connection was refused before its handshake: no pending
    /// connection could be evicted to make room for it.
    pub const TOO_MANY_PENDING: &str = "too_many_pending";
    /// An incoming connection from an address QUIC had not validated was sent a
    /// Retry (many connections were pending, its address's share was taken, or the
    /// address is banned).
    pub const RETRY_SENT: &str = "retry_sent";
    /// A connection still in its handshake or hello was closed to make room for a
    /// newcomer (its address held the most pending, or its share was taken).
    pub const EVICTED_PENDING: &str = "evicted_pending";
    /// A validator's connection came from another address than the cluster file
    /// lists for it: it has the small flow-control windows of client connections.
    pub const UNLISTED_ADDRESS: &str = "unlisted_address";
    /// A client connection was refused because `max_clients` are open.
    pub const TOO_MANY_CLIENTS: &str = "too_many_clients";
    /// A frame was addressed to an id that is not another validator of the
    /// cluster.
    pub const UNKNOWN_PEER: &str = "unknown_peer";
    /// A dial (handshake and hello) failed or timed out; it will be retried.
    pub const CONNECT_FAILED: &str = "connect_failed";
    /// Writing a frame failed because the connection was lost; the frame is lost.
    pub const SEND_FAILED: &str = "send_failed";
}

/// A snapshot of a validator transport's state and counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// Validators we hold an accepted outgoing connection to.
    pub connected: BTreeSet<u32>,
    /// Validators with an accepted inbound connection to us.
    pub inbound: BTreeSet<u32>,
    /// Open client connections.
    pub clients: usize,
    /// Validators banned right now.
    pub banned: BTreeSet<u32>,
    /// Outgoing connections established so far, per validator.
    pub established: BTreeMap<u32, u64>,
    /// Frames waiting in each validator's send queue.
    pub queued: BTreeMap<u32, usize>,
    /// Counted events (rejections, drops and reports) per source and reason.
    pub rejections: BTreeMap<(Source, &'static str), u64>,
    /// Frames written to validators and clients.
    pub frames_sent: u64,
    /// Frames handed to the node (from validators and clients).
    pub frames_received: u64,
}

impl TransportStats {
    /// How many events of `reason` were counted for `source`.
    pub fn count(&self, source: Source, reason: &str) -> u64 {
        self.rejections
            .iter()
            .filter(|((s, r), _)| *s == source && *r == reason)
            .map(|(_, n)| *n)
            .sum()
    }

    /// How many events of `reason` were counted, whatever the source.
    pub fn total(&self, reason: &str) -> u64 {
        self.rejections
            .iter()
            .filter(|((_, r), _)| *r == reason)
            .map(|(_, n)| *n)
            .sum()
    }
}

/// A snapshot of a [`ClientTransport`](crate::ClientTransport)'s state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Validators with an accepted connection right now.
    pub connected: BTreeSet<u32>,
    /// Connections established so far, per validator.
    pub established: BTreeMap<u32, u64>,
    /// Frames waiting in each validator's send queue.
    pub queued: BTreeMap<u32, usize>,
    /// Counted events per validator and reason (see [`reason`]).
    pub rejections: BTreeMap<(u32, &'static str), u64>,
    /// Frames written to validators.
    pub frames_sent: u64,
    /// Frames received from validators.
    pub frames_received: u64,
}

impl ClientStats {
    /// How many events of `reason` were counted for validator `id`.
    pub fn count(&self, id: u32, reason: &str) -> u64 {
        self.rejections
            .iter()
            .filter(|((i, r), _)| *i == id && *r == reason)
            .map(|(_, n)| *n)
            .sum()
    }
}
