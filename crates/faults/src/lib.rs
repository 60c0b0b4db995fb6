//! Fault injection, kept out of the production node.
//!
//! - [`Command`]: the one typed control command of the scenario runner. The runner
//!   writes it with `Display`, the node's control endpoint reads it with `FromStr`,
//!   so both ends share one grammar.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod command;

pub use command::{Command, CommandError};
