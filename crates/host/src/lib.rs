//! The one driver of the PBFT replica's effects, sans-IO.
//!
//! The replica (`pbft_protocol::Replica`) decides; the [`Host`] does what it decides:
//! it applies committed batches to the ledger and takes checkpoints, makes the
//! replica's promises durable in the consensus log (before the sends that depend on
//! them, in as few writes as the order of the actions allows), compacts and prunes
//! that log at stable checkpoints, stages fetched snapshots in the ledger chunk by
//! chunk and installs the approved one, serves snapshots to peers a chunk at a time, holds back delayed sends, and encodes
//! every outgoing message once. Every message in and out passes through the [`Faults`] hooks; a production
//! validator runs [`Honest`].
//!
//! The host reads no clock and touches no socket: time comes in as `now`, storage
//! through the executor crate's [`pbft_executor::Executor`] and
//! [`pbft_executor::RecordLog`] traits, and what must leave the process comes out as
//! [`Effect`]s. The node (a thread loop around a host, on QUIC and RocksDB) and the
//! simulator (many hosts on a simulated network) run this same code, so every
//! simulated run tests what a validator does in production.
//!
//! ```text
//! handle_message / handle_request / handle_timeout   (inputs, with now)
//!        |
//!      process(now)     performs the replica's actions: execute, checkpoint,
//!        |              persist, state transfer, sends through the fault hooks
//!        v
//!   poll_effect()       Transmit, Executed, Installed, Evidence, Refused, Halted, Crashed
//!   next_timeout()      when to call handle_timeout next
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod effect;
mod hooks;
mod host;
mod phases;
pub mod transfer;

pub use effect::Effect;
pub use hooks::{CrashPoint, Faults, Honest, Incoming};
pub use host::{first_executions, Host, HostError, HostOptions};
