//! Fault injection, kept out of the production node.
//!
//! A validator's host passes every message in and out, and every crash point, through
//! its fault hooks (`pbft_host::Faults`). A production validator runs the honest hooks;
//! the simulator and the scenario runner's processes run [`Scripted`]:
//!
//! - traitor behaviours (`pbft-traitor`) with time windows, switched on and off;
//! - a crash at a checkpoint, at a given sequence number or at the next one;
//! - blocked peers (partitions and isolation) and message loss and duplication.
//!
//! On a real cluster the scenario runner switches them through a [`Switchboard`] served
//! on a loopback TCP endpoint ([`control`]), with the typed [`Command`]: the runner
//! writes it with `Display`, the endpoint reads it with `FromStr`.
//!
//! `pbft node` accepts fault injection only when the runner's environment variable
//! allows it; the node library itself knows nothing of this crate.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod command;
pub mod control;
mod scripted;

pub use command::{Command, CommandError};
pub use scripted::{Scripted, Switchboard, TraitorWindow};
