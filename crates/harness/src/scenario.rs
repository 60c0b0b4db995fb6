//! `pbft scenario run` and `pbft scenario list`: scenario files (format v1) run in sim
//! mode (the deterministic simulator) or cluster mode (real processes, see
//! [`crate::runner`]).

use crate::error::{Error, Outcome, Result};
use crate::runner::ClusterRunner;
use crate::supervise::Launcher;
use pbft_scenario::{
    load, render_json_all, run_scenario, Runner, Scenario, ScenarioReport, SimRunner,
};
use std::path::{Path, PathBuf};

/// `pbft scenario`.
#[derive(clap::Args, Debug)]
pub struct ScenarioArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: ScenarioCommand,
}

/// The scenario commands.
#[derive(clap::Subcommand, Debug)]
pub enum ScenarioCommand {
    /// Run scenario files; exit 0 if every expectation of every run holds, 1 if one
    /// fails, 2 if a file is invalid.
    Run(RunArgs),
    /// Print the name and description of every scenario file in DIR.
    List {
        /// The directory.
        #[arg(default_value = "scenarios")]
        dir: PathBuf,
    },
}

/// Which runner `pbft scenario run` uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ModeArg {
    /// The deterministic simulator.
    Sim,
    /// Real validator processes on loopback.
    Cluster,
}

/// `pbft scenario run`.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Scenario files.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// sim: the deterministic simulator; cluster: real `pbft node` processes on loopback.
    #[arg(long, value_enum, default_value = "sim")]
    pub mode: ModeArg,
    /// Seed for every file (overrides the file's `seed`).
    #[arg(long, conflicts_with = "seeds")]
    pub seed: Option<u64>,
    /// Sweep the seeds A..B (inclusive).
    #[arg(long, value_name = "A..B")]
    pub seeds: Option<String>,
    /// Write every report as JSON to this file.
    #[arg(long, value_name = "OUT")]
    pub json: Option<PathBuf>,
}

/// Runs a `pbft scenario` command.
pub fn run(args: &ScenarioArgs) -> Result<Outcome> {
    match &args.command {
        ScenarioCommand::Run(r) => run_files(r),
        ScenarioCommand::List { dir } => list(dir),
    }
}

/// Parses `A..B` (inclusive; `A..=B` too) into the seeds it names.
pub fn parse_seeds(s: &str) -> Result<Vec<u64>> {
    let bad = |reason: String| Error::bad_value(format!("--seeds {s:?}"), reason);
    let (a, b) = s
        .split_once("..")
        .ok_or_else(|| bad("expected A..B, e.g. 1..100".into()))?;
    let a: u64 = a
        .trim()
        .parse()
        .map_err(|_| bad(format!("{a:?} is not a seed")))?;
    let b: u64 = b
        .trim()
        .trim_start_matches('=')
        .trim()
        .parse()
        .map_err(|_| bad(format!("{b:?} is not a seed")))?;
    if b < a {
        return Err(bad(format!("the range is empty ({b} < {a})")));
    }
    Ok((a..=b).collect())
}

/// The runs, in order: each scenario (by index) with each seed of the sweep, or with
/// its own seed (`--seed`, else the file's, else the default).
pub fn plan(scenarios: &[Scenario], seed: Option<u64>, sweep: Option<&[u64]>) -> Vec<(usize, u64)> {
    scenarios
        .iter()
        .enumerate()
        .flat_map(|(i, sc)| {
            let seeds = sweep.map_or_else(|| vec![sc.seed_or_default(seed)], <[u64]>::to_vec);
            seeds.into_iter().map(move |s| (i, s))
        })
        .collect()
}

/// The closing line of several runs: how many passed, and which failed.
pub fn summary(reports: &[ScenarioReport]) -> String {
    let failed: Vec<String> = reports
        .iter()
        .filter(|r| !r.passed)
        .map(|r| format!("{} seed {}", r.scenario, r.seed))
        .collect();
    format!(
        "{} of {} runs passed{}",
        reports.len() - failed.len(),
        reports.len(),
        if failed.is_empty() {
            String::new()
        } else {
            format!("; failed: {}", failed.join(", "))
        }
    )
}

/// Writes to stdout, ignoring a closed pipe (`pbft scenario run ... | head`).
fn out(s: &str) {
    use std::io::Write as _;
    let _ = std::io::stdout().lock().write_all(s.as_bytes());
}

fn run_files(args: &RunArgs) -> Result<Outcome> {
    // every file is read and validated before anything runs
    let mut scenarios = args
        .files
        .iter()
        .map(|f| load(f))
        .collect::<Result<Vec<Scenario>, _>>()?;
    if args.mode == ModeArg::Sim
        && scenarios
            .iter()
            .any(|sc| sc.unsimulated_stranger().is_some())
    {
        // most strangers act on client connections, which the simulator does not
        // model: among several files they are skipped, said so; alone, refused
        let (cluster_only, rest): (Vec<Scenario>, Vec<Scenario>) = scenarios
            .into_iter()
            .partition(|sc| sc.unsimulated_stranger().is_some());
        if rest.is_empty() {
            let sc = &cluster_only[0];
            return Err(Error::Run {
                file: sc.file.clone(),
                source: pbft_scenario::RunError::Unsupported {
                    mode: "sim",
                    reason: "its [[stranger]] tables act on client connections, which the simulator does not model; run it with --mode cluster".into(),
                },
            });
        }
        for sc in &cluster_only {
            eprintln!(
                "skipped {} in sim mode: its strangers act on client connections, which the simulator does not model (run it with --mode cluster)",
                sc.name
            );
        }
        scenarios = rest;
    }
    if args.mode == ModeArg::Cluster {
        for sc in &scenarios {
            crate::runner::check_supported(sc).map_err(|source| Error::Run {
                file: sc.file.clone(),
                source,
            })?;
        }
    }
    let sweep = args.seeds.as_deref().map(parse_seeds).transpose()?;
    let runner: Box<dyn Runner> = match args.mode {
        ModeArg::Sim => Box::new(SimRunner),
        ModeArg::Cluster => Box::new(ClusterRunner::new(Launcher::this_binary()?)),
    };
    let plan = plan(&scenarios, args.seed, sweep.as_deref());
    let several_seeds = plan.len() > scenarios.len();

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
        let report = run_scenario(runner.as_ref(), sc, s).map_err(|source| {
            bar.finish_and_clear();
            Error::Run {
                file: sc.file.clone(),
                source,
            }
        })?;
        bar.suspend(|| {
            if !several_seeds || !report.passed {
                out(&format!("{}\n", report.render_text()));
            } else {
                out(&format!("PASS {} seed {}\n", report.scenario, report.seed));
            }
        });
        bar.inc(1);
        reports.push(report);
    }
    bar.finish_and_clear();
    if reports.len() > 1 {
        out(&format!("{}\n", summary(&reports)));
    }
    if let Some(path) = &args.json {
        std::fs::write(path, render_json_all(&reports) + "\n")
            .map_err(|e| Error::io(format!("cannot write {}", path.display()), e))?;
    }
    Ok(Outcome::from_success(reports.iter().all(|r| r.passed)))
}

/// Prints the name and the first line of the description of every scenario in `dir`;
/// every invalid file is reported, and makes the whole listing bad input.
fn list(dir: &Path) -> Result<Outcome> {
    let files = pbft_scenario::list_dir(dir)
        .map_err(|e| Error::bad_value(dir.display().to_string(), format!("cannot read it: {e}")))?;
    let mut invalid = 0;
    for f in files {
        match load(&f) {
            Ok(sc) => {
                let first = sc.description.lines().next().unwrap_or("");
                out(&format!("{:<32} {first}\n", sc.name));
            }
            Err(e) => {
                eprintln!("error: {e}");
                invalid += 1;
            }
        }
    }
    if invalid > 0 {
        return Err(Error::bad_value(
            dir.display().to_string(),
            format!("{invalid} invalid scenario file(s), each reported above"),
        ));
    }
    Ok(Outcome::Success)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_ranges_are_inclusive_and_refused_with_the_value_when_bad() {
        assert_eq!(parse_seeds("1..3").expect("range"), [1, 2, 3]);
        assert_eq!(parse_seeds(" 4 ..= 5").expect("range"), [4, 5]);
        assert_eq!(parse_seeds("7..7").expect("range"), [7]);
        for (bad, needle) in [
            ("5..1", "the range is empty (1 < 5)"),
            ("1-3", "expected A..B"),
            ("x..3", "\"x\" is not a seed"),
            ("1..y", "\"y\" is not a seed"),
        ] {
            let e = parse_seeds(bad).expect_err(bad);
            assert!(e.is_bad_input(), "{e}");
            let text = e.to_string();
            assert!(
                text.starts_with(&format!("--seeds {bad:?}")) && text.contains(needle),
                "{text}"
            );
        }
    }

    fn scenario(name: &str, seed: Option<u64>) -> Scenario {
        let mut src = format!("name = \"{name}\"\n");
        if let Some(s) = seed {
            src.push_str(&format!("seed = {s}\n"));
        }
        pbft_scenario::parse(Path::new("t.toml"), &src).expect("scenario")
    }

    #[test]
    fn the_plan_runs_each_file_with_each_seed_of_a_sweep() {
        let scs = [scenario("a", Some(9)), scenario("b", None)];
        assert_eq!(plan(&scs, None, None), [(0, 9), (1, 1)]);
        assert_eq!(plan(&scs, Some(4), None), [(0, 4), (1, 4)]);
        assert_eq!(
            plan(&scs, None, Some(&[2, 3])),
            [(0, 2), (0, 3), (1, 2), (1, 3)]
        );
    }

    #[test]
    fn the_summary_names_the_failed_runs() {
        let sc = scenario("a", None);
        let report = |seed, passed| {
            let mut r = run_scenario(&SimRunner, &sc, seed).expect("run");
            r.passed = passed;
            r
        };
        let rs = [report(1, true), report(2, false)];
        assert_eq!(summary(&rs), "1 of 2 runs passed; failed: a seed 2");
        assert_eq!(summary(&rs[..1]), "1 of 1 runs passed");
    }
}
