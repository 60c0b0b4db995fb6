//! The harness: local clusters of real `pbft node` processes, and the commands of the
//! `pbft` binary that are not the node itself.
//!
//! Building blocks, each testable without the binary:
//!
//! - [`supervise`]: starting `pbft node` processes and stopping them whatever happens;
//!   the development keys.
//! - [`ports`]: free ports on loopback, and a check that a cluster's ports are free.
//! - [`ready`]: waiting until validators answer, and until their heads agree.
//! - [`workload`]: client keys and pre-signed transfers.
//! - [`control`]: the runner's side of a node's fault-injection control endpoint.
//! - [`procfs`]: CPU and memory of a process from `/proc`.
//! - [`json`]: numbers in JSON output.
//!
//! Commands, one module per command family, each with its `clap` arguments next to the
//! function that takes them whole: [`demo`], [`keygen`], [`status`], [`client`] (with
//! [`load`], the load generator), [`ledger`], [`scenario`] (with [`runner`], the
//! cluster-mode scenario runner), [`bench`] and [`sim`]. Each returns an [`Outcome`] or
//! an [`Error`]; [`Error::is_bad_input`] tells the caller's mistakes from failures.

#![warn(missing_docs)]

pub mod bench;
pub mod client;
pub mod control;
pub mod demo;
pub mod error;
pub mod json;
pub mod keygen;
pub mod ledger;
pub mod load;
pub mod ports;
pub mod procfs;
pub mod ready;
pub mod runner;
pub mod scenario;
pub mod sim;
pub mod status;
pub mod supervise;
pub mod workload;

pub use error::{Error, Outcome, Result};

/// The async runtime of a command that talks to a cluster.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Runtime::new().map_err(|e| Error::io("starting the async runtime", e))
}
