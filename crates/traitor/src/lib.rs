//! Traitor behaviours: pure mutators of a replica's outgoing messages.
//!
//! A [`Traitor`] sits between an (honest) replica and the network. The driver (the
//! simulator or the node) hands it every message the replica wants to send; the traitor
//! decides what really goes out: nothing, the message unchanged, a mutated and re-signed
//! copy, extra messages, raw garbage, or a delayed message. Like the protocol core it is
//! pure: no clock, no I/O, and randomness only from the seed given to [`Traitor::new`].
//!
//! The scenario vocabulary is [`Behavior`]; [`Behavior::ALL`] lists every
//! behaviour and [`Behavior::name`] their snake_case names.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod behavior;
mod rng;
mod traitor;

#[cfg(test)]
mod tests;

pub use behavior::{Behavior, UnknownBehavior};
pub use pbft_protocol::{Dest, Outgoing, Payload};
pub use traitor::Traitor;
