//! A deterministic simulator of a validator set: n validators, each running the node's
//! own host (`pbft-host`: the replica, its ledger and consensus log, in memory or on
//! RocksDB), clients, and a network, in one thread, with simulated time, a seeded
//! network (delay, loss, duplication, reordering, partitions), crashes and restarts,
//! traitors and crash points through the host's fault hooks (`pbft-faults`), and
//! invariant checkers that run during every simulation.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod checker;
pub mod client;
mod clients;
pub mod config;
mod faults;
pub mod network;
pub mod report;
pub mod sim;
mod strangers;
mod validators;

pub use config::{
    Fault, FaultAction, NetworkConfig, SimConfig, Storage, StrangerKind, StrangerSpec, TraitorSpec,
    Workload,
};
pub use report::{Probe, ReplicaReport, Report, StrangerReport};
pub use sim::{client_key, validator_key, Simulation, Stats};
pub use validators::SimHost;

/// Runs one simulation to its end.
pub fn run(cfg: SimConfig) -> Report {
    Simulation::new(cfg).run()
}
