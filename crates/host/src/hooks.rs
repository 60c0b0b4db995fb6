//! The fault-hook seam: everything a fault injector may change about a validator goes
//! through [`Faults`]. A production validator runs [`Honest`], which changes nothing;
//! the scripted hooks of tests and scenarios live in the `pbft-faults` crate.

use pbft_protocol::{Instant, Message, Outgoing, ReplicaId, Seq};

/// A point where a fault hook may make the validator crash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashPoint {
    /// The ledger has applied batch `seq` (a multiple of K) and written the checkpoint
    /// snapshot; the checkpoint is not yet announced. A crash here leaves a checkpoint
    /// on disk that no other validator has heard of.
    CheckpointTaken {
        /// The checkpoint's sequence number.
        seq: Seq,
    },
}

/// What a fault hook decided about an incoming message.
#[derive(Debug, Default)]
pub struct Incoming {
    /// Whether the replica gets the message.
    pub deliver: bool,
    /// Messages to send in reaction (they do not pass through [`Faults::outgoing`]).
    pub sends: Vec<Outgoing>,
}

impl Incoming {
    /// Deliver the message, send nothing else.
    pub fn deliver() -> Incoming {
        Incoming {
            deliver: true,
            sends: Vec::new(),
        }
    }
}

/// The fault-injection seam of the host.
pub trait Faults {
    /// Every message the replica sends passes here, before it is encoded: push what
    /// really goes out (the message unchanged, nothing, mutated copies, raw bytes,
    /// delayed messages) onto `out`.
    fn outgoing(&mut self, msg: Outgoing, now: Instant, out: &mut Vec<Outgoing>) {
        let _ = now;
        out.push(msg);
    }

    /// Every verified message from a validator passes here before the replica sees it.
    fn incoming(&mut self, from: ReplicaId, msg: &Message, now: Instant) -> Incoming {
        let _ = (from, msg, now);
        Incoming::deliver()
    }

    /// Called at each crash point: `true` makes the validator crash right there (the
    /// host emits [`crate::Effect::Crashed`] and does nothing more).
    fn crash(&mut self, point: CrashPoint) -> bool {
        let _ = point;
        false
    }
}

/// The hooks of a production validator: nothing is changed.
#[derive(Clone, Copy, Debug, Default)]
pub struct Honest;

impl Faults for Honest {}
