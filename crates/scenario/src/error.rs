//! The error of an invalid scenario file: which file, which line, and why.

use std::fmt;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// A scenario file that cannot be read or is not valid format v1.
///
/// Displays as `FILE:LINE: REASON` (or `FILE: REASON` when no line applies, for example
/// when the file cannot be read).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub struct ScenarioError {
    /// The file.
    pub file: PathBuf,
    /// The 1-based line of the offending key or value, if one applies.
    pub line: Option<usize>,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.file.display(), line, self.reason),
            None => write!(f, "{}: {}", self.file.display(), self.reason),
        }
    }
}

impl ScenarioError {
    /// An error at byte `offset` of `src` (converted to a line), or at no line.
    pub(crate) fn at(file: &Path, src: &str, offset: Option<usize>, reason: String) -> Self {
        ScenarioError {
            file: file.to_path_buf(),
            line: offset.map(|o| line_of(src, o)),
            reason,
        }
    }
}

/// The 1-based line of byte `offset` in `src`.
pub(crate) fn line_of(src: &str, offset: usize) -> usize {
    let end = offset.min(src.len());
    src.as_bytes()[..end]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// Why a run could not produce a report (as opposed to a run whose expectations fail).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum RunError {
    /// The scenario asks for something this mode cannot do.
    #[error("the scenario cannot run in {mode} mode: {reason}")]
    Unsupported {
        /// The mode.
        mode: &'static str,
        /// Why.
        reason: String,
    },
    /// The runner itself failed (a process would not start, a port was taken, ...).
    #[error("the {mode} runner failed: {reason}")]
    Failed {
        /// The mode.
        mode: &'static str,
        /// Why.
        reason: String,
    },
}
