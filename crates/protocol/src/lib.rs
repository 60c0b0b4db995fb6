//! The PBFT replica as a pure, sans-IO state machine (Castro and Liskov, OSDI 1999, in
//! the variant where every protocol message is signed).
//!
//! Inputs are verified messages, client requests, timeouts and execution results, each
//! with the current time; outputs are [`Action`]s. Nothing here reads a clock, draws a
//! random number, touches a socket or a disk: that is what makes the deterministic
//! simulator and the traitors possible.
//!
//! One module per concern, named as in the paper:
//! - [`quorum`]: distinct-sender vote counting per (view, seq, digest);
//! - `normal_case`: pre-prepare, prepare, commit, `prepared`, `committed_local`, execution;
//! - `order_watch`: the ordering deadline that replaces a primary that orders late;
//! - `checkpoint`: checkpoints, watermarks, garbage collection;
//! - `view_change` and [`new_view`]: view change, the `O` set computation and check;
//! - `state_transfer`: catching up by snapshot or by committed batches;
//! - [`client_table`]: exactly-once and cached replies;
//! - [`client`]: the client's side: where requests go, retransmission, and the f+1
//!   acceptance rule, as a sans-IO state machine of its own;
//! - `evidence`: signed proof of misbehaviour;
//! - `wal`: restart from the write-ahead log;
//! - [`invariants`]: the replica's structural invariants, checked from inside;
//! - [`verify`]: the signature-verification stage that runs *before* the core;
//! - [`bounds`]: the largest frame each message can take in a configuration.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod action;
pub mod bounds;
mod checkpoint;
pub mod client;
pub mod client_table;
pub mod config;
pub mod envelope;
mod evidence;
pub mod invariants;
pub mod message;
pub mod new_view;
mod normal_case;
mod order_watch;
pub mod outgoing;
pub mod quorum;
pub mod recovery;
pub mod replica;
mod resend;
mod state_transfer;
pub mod time;
pub mod verify;
mod view_change;
mod wal;

pub use action::{Action, WalRecord};
pub use client::{ClientConfig, ClientCore};
pub use client_table::{ClientRecord, ClientRecords};
pub use config::{ClientKeys, Config, ConfigError};
pub use invariants::{Invariant, InvariantViolation};
pub use message::*;
pub use outgoing::{Dest, Outgoing, Payload};
pub use replica::{ExecutedRequest, ExecutionResult, Replica, Status};
pub use time::{Duration, Instant};
pub use verify::{
    signature_id, NoCache, Rejection, SignatureCache, Verified, VerifiedRequest, Verifier,
};
