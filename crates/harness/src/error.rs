//! How a command ends: an [`Outcome`] when it ran to its end, an [`Error`] when it could
//! not. [`Error::is_bad_input`] separates the caller's mistakes (exit 2) from failures of
//! the operation itself (exit 1).

use pbft_client::ClientError;
use pbft_cluster::ClusterError;
use pbft_crypto::KeyFileError;
use pbft_scenario::{RunError, ScenarioError};
use std::path::PathBuf;
use std::time::Duration;

/// Why a command could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A flag or argument has a value the command cannot use (bad input).
    #[error("{flag}: {reason}")]
    BadValue {
        /// The flag or argument, with its value where that helps (`--requests 0`).
        flag: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A cluster file that cannot be read or is invalid, or keys that cannot be
    /// generated where asked (bad input).
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// A key file that cannot be read or is unsafe (bad input).
    #[error(transparent)]
    Key(#[from] KeyFileError),
    /// A scenario file that cannot be read or is invalid (bad input).
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    /// A scenario run that could not produce a report: bad input when the mode cannot
    /// run the scenario, a failure when the runner broke.
    #[error("{}: {source}", file.display())]
    Run {
        /// The scenario file.
        file: PathBuf,
        /// Why.
        source: RunError,
    },
    /// A validator's address is taken on this machine (bad input: the cluster cannot
    /// start here).
    #[error("validator {validator} needs UDP port {port} ({}), which is in use: stop whatever uses it (another demo?): {source}", cluster.display())]
    PortInUse {
        /// The validator.
        validator: u32,
        /// Its port.
        port: u16,
        /// The cluster file that gives the address.
        cluster: PathBuf,
        /// What binding it said.
        source: std::io::Error,
    },
    /// No development cluster to run the demo with (bad input).
    #[error(
        "no development cluster found (looked for keys/cluster.toml here and in the source tree)"
    )]
    NoDevelopmentKeys,
    /// Not every validator answered in time (failure).
    #[error("validators did not all come up within {within:?}; reachable: {reachable:?}")]
    NotReachable {
        /// How long it waited.
        within: Duration,
        /// The validators that did answer.
        reachable: Vec<u32>,
    },
    /// A client operation failed (failure).
    #[error(transparent)]
    Client(#[from] ClientError),
    /// A file or process operation failed (failure).
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The system's reason.
        source: std::io::Error,
    },
    /// The operation ran and failed for the reason given (failure).
    #[error("{0}")]
    Failed(String),
}

impl Error {
    /// True when the caller's input is at fault (exit 2), false when the operation
    /// itself failed (exit 1).
    pub fn is_bad_input(&self) -> bool {
        match self {
            Error::BadValue { .. }
            | Error::Cluster(_)
            | Error::Key(_)
            | Error::Scenario(_)
            | Error::PortInUse { .. }
            | Error::NoDevelopmentKeys => true,
            Error::Run { source, .. } => matches!(source, RunError::Unsupported { .. }),
            Error::NotReachable { .. } | Error::Client(_) | Error::Io { .. } | Error::Failed(_) => {
                false
            }
        }
    }

    /// A [`Error::BadValue`].
    pub fn bad_value(flag: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::BadValue {
            flag: flag.into(),
            reason: reason.into(),
        }
    }

    /// An [`Error::Io`] with what was being done.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            what: what.into(),
            source,
        }
    }
}

/// How a command that ran to its end came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It did what it was asked (exit 0).
    Success,
    /// It ran and its result is negative, already reported on the output: a rejected
    /// transfer, an expectation that did not hold, a validator that did not answer
    /// (exit 1).
    Unsuccessful,
    /// Ctrl-C stopped it after it cleaned up (exit 130).
    Interrupted,
}

impl Outcome {
    /// [`Outcome::Success`] if `ok`, else [`Outcome::Unsuccessful`].
    pub fn from_success(ok: bool) -> Outcome {
        if ok {
            Outcome::Success
        } else {
            Outcome::Unsuccessful
        }
    }

    /// The process exit code of this outcome.
    pub fn exit_code(self) -> u8 {
        match self {
            Outcome::Success => 0,
            Outcome::Unsuccessful => 1,
            Outcome::Interrupted => 130,
        }
    }
}

/// The result of a command.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_errors_and_failures_are_told_apart() {
        assert!(Error::bad_value("--requests 0", "must be at least 1").is_bad_input());
        assert!(Error::NoDevelopmentKeys.is_bad_input());
        let unsupported = Error::Run {
            file: "x.toml".into(),
            source: RunError::Unsupported {
                mode: "cluster",
                reason: "two behaviours".into(),
            },
        };
        assert!(unsupported.is_bad_input());
        let broken = Error::Run {
            file: "x.toml".into(),
            source: RunError::Failed {
                mode: "cluster",
                reason: "no port".into(),
            },
        };
        assert!(!broken.is_bad_input());
        assert!(!Error::Failed("x".into()).is_bad_input());
        assert!(!Error::io("writing x", std::io::Error::other("disk full")).is_bad_input());
    }

    #[test]
    fn messages_name_the_flag_the_file_and_the_value() {
        assert_eq!(
            Error::bad_value("--inflight", "give one or more counts").to_string(),
            "--inflight: give one or more counts"
        );
        let e = Error::Run {
            file: "scenarios/two.toml".into(),
            source: RunError::Unsupported {
                mode: "cluster",
                reason: "validator 0 is given two behaviours".into(),
            },
        };
        assert_eq!(
            e.to_string(),
            "scenarios/two.toml: the scenario cannot run in cluster mode: validator 0 is given two behaviours"
        );
        let e = Error::NotReachable {
            within: Duration::from_secs(30),
            reachable: vec![0, 2],
        };
        assert_eq!(
            e.to_string(),
            "validators did not all come up within 30s; reachable: [0, 2]"
        );
    }

    #[test]
    fn outcomes_map_to_exit_codes() {
        assert_eq!(Outcome::from_success(true).exit_code(), 0);
        assert_eq!(Outcome::from_success(false).exit_code(), 1);
        assert_eq!(Outcome::Interrupted.exit_code(), 130);
    }
}
