//! Executor errors.

use thiserror::Error;

/// Why the executor could not do what was asked. A failed request is not an error (it
/// gets a failed receipt); these are failures of the executor itself.
#[derive(Debug, Error)]
pub enum ExecError {
    /// A batch arrived out of order.
    #[error("batch {got} cannot follow {applied}: batches apply strictly in order")]
    OutOfOrder {
        /// What was applied last.
        applied: u64,
        /// What arrived.
        got: u64,
    },
    /// Stored data does not decode or is inconsistent.
    #[error("corrupt ledger data: {0}")]
    Corrupt(String),
    /// A snapshot offered for state transfer does not check out. Nothing was changed.
    #[error("snapshot rejected: {0}")]
    BadSnapshot(String),
    /// No snapshot is kept for that sequence number.
    #[error("no snapshot kept for checkpoint {0}")]
    NoSnapshot(u64),
    /// RocksDB failed.
    #[error("storage error: {0}")]
    Storage(String),
    /// A file-system operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On what.
        path: std::path::PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A fault injected by a test (simulated crash point).
    #[error("injected fault at step {0}")]
    Injected(u64),
}

#[cfg(feature = "rocksdb")]
impl From<rocksdb::Error> for ExecError {
    fn from(e: rocksdb::Error) -> Self {
        ExecError::Storage(e.into_string())
    }
}
