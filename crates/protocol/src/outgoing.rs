//! What a validator sends, after its replica decided to send it and before it is
//! encoded: a message (or raw bytes) to a destination, possibly after a delay. The host
//! hands every outgoing message to its fault hook as an [`Outgoing`], and the traitors
//! rewrite them in this shape.

use crate::message::{Message, ReplicaId};
use crate::time::Duration;
use pbft_crypto::PublicKey;

/// Where an outgoing message goes.
// The shape is part of the driver API; a client key is inline like everywhere else.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dest {
    /// One replica.
    Replica(ReplicaId),
    /// Every replica but the sender.
    AllReplicas,
    /// A client, by its public key.
    Client(PublicKey),
}

/// What goes on the wire: a message, or raw bytes (garbage, for `flood`).
// The shape is part of the driver API; messages are not boxed anywhere else either.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    /// A protocol message, to be encoded by the driver.
    Message(Message),
    /// Bytes sent as a frame as they are.
    Raw(Vec<u8>),
}

/// One message to send after `delay`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    /// Where it goes.
    pub dest: Dest,
    /// What goes.
    pub payload: Payload,
    /// How long the driver waits before sending it.
    pub delay: Duration,
}

impl Outgoing {
    /// `msg` to `dest`, now.
    pub fn now(dest: Dest, msg: Message) -> Outgoing {
        Outgoing {
            dest,
            payload: Payload::Message(msg),
            delay: Duration::ZERO,
        }
    }

    /// The message, if the payload is one.
    pub fn message(&self) -> Option<&Message> {
        match &self.payload {
            Payload::Message(m) => Some(m),
            Payload::Raw(_) => None,
        }
    }
}
