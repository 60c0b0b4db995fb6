//! A deterministic simulator for the PBFT core: n replicas, clients and in-memory
//! ledgers in one thread, with simulated time, a seeded network (delay, loss,
//! duplication, reordering, partitions), crashes and restarts, traitors, and invariant
//! checkers that run during every simulation.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod checker;
pub mod client;
pub mod config;
pub mod report;
pub mod sim;

pub use config::{Fault, FaultAction, NetworkConfig, SimConfig, Storage, TraitorSpec, Workload};
pub use report::{Probe, ReplicaReport, Report};
pub use sim::{client_key, validator_key, Simulation, Stats};

/// Runs one simulation to its end.
pub fn run(cfg: SimConfig) -> Report {
    Simulation::new(cfg).run()
}
