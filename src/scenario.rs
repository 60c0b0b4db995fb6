//! `pbft scenario run` and `pbft scenario list`: scenario files (format v1) run in sim
//! mode (the deterministic simulator) or cluster mode (real processes, see
//! [`crate::cluster_runner`]).

use anyhow::{bail, Context, Result};
use pbft_scenario::{
    load, render_json_all, run_scenario, RunError, Runner, Scenario, ScenarioReport, SimRunner,
};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Which runner `pbft scenario run` uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ModeArg {
    /// The deterministic simulator.
    Sim,
    /// Real validator processes on loopback.
    Cluster,
}

/// Parses `A..B` (inclusive) into the seeds it names.
pub fn parse_seeds(s: &str) -> Result<Vec<u64>> {
    let (a, b) = s
        .split_once("..")
        .with_context(|| format!("--seeds {s:?}: expected A..B, e.g. 1..100"))?;
    let a: u64 = a
        .trim()
        .parse()
        .with_context(|| format!("--seeds {s:?}: {a:?} is not a seed"))?;
    let b: u64 = b
        .trim()
        .trim_start_matches('=')
        .parse()
        .with_context(|| format!("--seeds {s:?}: {b:?} is not a seed"))?;
    if b < a {
        bail!("--seeds {s:?}: the range is empty ({b} < {a})");
    }
    Ok((a..=b).collect())
}

/// Writes to stdout, ignoring a closed pipe (`pbft scenario run ... | head`).
fn out(s: &str) {
    use std::io::Write as _;
    let _ = std::io::stdout().lock().write_all(s.as_bytes());
}

fn bad_input(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(2)
}

/// `pbft scenario run FILE... [--mode sim|cluster] [--seed S | --seeds A..B] [--json OUT]`.
pub fn cmd_run(
    files: &[PathBuf],
    mode: ModeArg,
    seed: Option<u64>,
    seeds: Option<&str>,
    json: Option<&Path>,
) -> ExitCode {
    // every file is read and validated before anything runs
    let mut scenarios: Vec<Scenario> = Vec::new();
    for f in files {
        match load(f) {
            Ok(s) => scenarios.push(s),
            Err(e) => return bad_input(e),
        }
    }
    if mode == ModeArg::Cluster {
        for sc in &scenarios {
            if let Err(e) = crate::cluster_runner::check_supported(sc) {
                return bad_input(format!("{}: {e}", sc.file.display()));
            }
        }
    }
    let seed_list: Option<Vec<u64>> = match seeds.map(parse_seeds).transpose() {
        Ok(s) => s,
        Err(e) => return bad_input(format!("{e:#}")),
    };
    let runner: Box<dyn Runner> = match mode {
        ModeArg::Sim => Box::new(SimRunner),
        ModeArg::Cluster => Box::new(crate::cluster_runner::ClusterRunner),
    };
    let plan: Vec<(usize, u64)> = scenarios
        .iter()
        .enumerate()
        .flat_map(|(i, sc)| {
            let list = seed_list
                .clone()
                .unwrap_or_else(|| vec![sc.seed_or_default(seed)]);
            list.into_iter().map(move |s| (i, s))
        })
        .collect();
    let sweep = plan.len() > scenarios.len();

    let bar = indicatif::ProgressBar::with_draw_target(
        Some(plan.len() as u64),
        indicatif::ProgressDrawTarget::stderr(),
    );
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} runs  {elapsed}  {msg}")
    {
        bar.set_style(style);
    }
    let mut reports: Vec<ScenarioReport> = Vec::new();
    for (i, s) in plan {
        let sc = &scenarios[i];
        bar.set_message(format!("{} seed {s}", sc.name));
        let report = match run_scenario(runner.as_ref(), sc, s) {
            Ok(r) => r,
            Err(e @ RunError::Unsupported { .. }) => {
                bar.finish_and_clear();
                return bad_input(format!("{}: {e}", sc.file.display()));
            }
            Err(e) => {
                bar.finish_and_clear();
                eprintln!("error: {}: {e}", sc.file.display());
                return ExitCode::from(1);
            }
        };
        bar.suspend(|| {
            if !sweep || !report.passed {
                out(&format!("{}\n", report.render_text()));
            } else {
                out(&format!("PASS {} seed {}\n", report.scenario, report.seed));
            }
        });
        bar.inc(1);
        reports.push(report);
    }
    bar.finish_and_clear();

    let failed: Vec<&ScenarioReport> = reports.iter().filter(|r| !r.passed).collect();
    if reports.len() > 1 {
        out(&format!(
            "{} of {} runs passed{}\n",
            reports.len() - failed.len(),
            reports.len(),
            if failed.is_empty() {
                String::new()
            } else {
                let names: Vec<String> = failed
                    .iter()
                    .map(|r| format!("{} seed {}", r.scenario, r.seed))
                    .collect();
                format!("; failed: {}", names.join(", "))
            }
        ));
    }
    if let Some(out) = json {
        if let Err(e) = std::fs::write(out, render_json_all(&reports) + "\n") {
            eprintln!("error: cannot write {}: {e}", out.display());
            return ExitCode::from(1);
        }
    }
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// `pbft scenario list [DIR]`: the name and description of every scenario file.
pub fn cmd_list(dir: &Path) -> ExitCode {
    let files = match pbft_scenario::list_dir(dir) {
        Ok(f) => f,
        Err(e) => return bad_input(format!("cannot read {}: {e}", dir.display())),
    };
    let mut invalid = false;
    for f in files {
        match load(&f) {
            Ok(sc) => {
                let first = sc.description.lines().next().unwrap_or("");
                out(&format!("{:<32} {first}\n", sc.name));
            }
            Err(e) => {
                invalid = true;
                eprintln!("error: {e}");
            }
        }
    }
    if invalid {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}
