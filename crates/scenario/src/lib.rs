//! Scenario files, format v1 (`docs/scenarios.md`).
//!
//! - [`load`] / [`parse`] read and validate a file into a mode-independent [`Scenario`];
//!   an invalid file is a [`ScenarioError`] naming the file, the line and the reason.
//! - A [`Runner`] runs a scenario in one mode and fills a [`ScenarioReport`]; the sim
//!   runner is [`SimRunner`], the cluster runner plugs in through the same trait.
//! - [`run_scenario`] evaluates the expectations against the report model only, so
//!   every mode gets the same verdicts; [`ScenarioReport::render_text`] and
//!   [`ScenarioReport::render_json`] render it.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod error;
pub mod expect;
pub mod model;
pub mod parse;
pub mod report;
pub mod runner;
pub mod sim;

pub use error::{RunError, ScenarioError};
pub use model::Scenario;
pub use parse::{load, parse};
pub use report::{render_json_all, ExpectationResult, Mode, ScenarioReport, ValidatorRow};
pub use runner::{run_scenario, Runner};
pub use sim::SimRunner;

/// The scenario files (`*.toml`) directly in `dir`, sorted by file name.
pub fn list_dir(dir: &std::path::Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
        .collect();
    files.sort();
    Ok(files)
}
