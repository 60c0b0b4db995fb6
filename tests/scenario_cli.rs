//! `pbft scenario run` and `pbft scenario list` through the binary: exit codes 0 (every
//! expectation holds), 1 (one fails), 2 (invalid file or unsupported mode).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn pbft(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pbft"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run pbft")
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p
}

const SMALL: &str = r#"name = "small"
description = "four honest validators, a few requests"
[workload]
requests = 20
[expect]
deadline_ms = 5000
view_at_most = 0
"#;

#[test]
fn a_passing_scenario_exits_0_with_a_table_and_one_line_per_expectation() {
    let o = pbft(&["scenario", "run", "scenarios/baseline.toml", "--seed", "3"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("scenario baseline  mode sim  seed 3"), "{out}");
    assert!(out.contains("PASS agreement"), "{out}");
    assert!(out.contains("PASS all_committed"), "{out}");
    assert!(out.contains("PASS view_at_most"), "{out}");
    assert!(out.contains("honest"), "{out}");
}

#[test]
fn a_failing_expectation_exits_1_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    // everything commits in view 0: expecting a view change must fail
    let f = write(
        dir.path(),
        "fails.toml",
        &SMALL.replace("view_at_most = 0", "view_at_least = 1"),
    );
    let o = pbft(&["scenario", "run", f.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("FAIL view_at_least: lowest honest view 0"),
        "{out}"
    );
}

#[test]
fn an_invalid_file_exits_2_naming_file_line_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "bad.toml",
        &SMALL.replace("requests = 20", "requests = 20\nbogus = 1"),
    );
    let o = pbft(&["scenario", "run", f.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&format!("{}:5:", f.display())), "{err}");
    assert!(err.contains("unknown field `bogus`"), "{err}");
    // nothing ran: an invalid file among valid ones stops the whole command
    let o = pbft(&[
        "scenario",
        "run",
        "scenarios/baseline.toml",
        f.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(o.stdout.is_empty(), "{}", text(&o));
}

/// Cluster mode refuses, before starting anything, what a node process cannot do: two
/// different behaviours for one validator.
#[test]
fn cluster_mode_refuses_two_behaviours_for_one_validator_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "two.toml",
        "name = \"two\"\n[[traitor]]\nnode = 0\nbehavior = \"silent\"\nuntil_ms = 100\n\n[[traitor]]\nnode = 0\nbehavior = \"equivocate\"\nfrom_ms = 100\n",
    );
    let o = pbft(&["scenario", "run", f.to_str().unwrap(), "--mode", "cluster"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("two.toml")
            && err.contains("cannot run in cluster mode")
            && err.contains("two behaviours"),
        "{}",
        text(&o)
    );
}

#[test]
fn seeds_sweep_and_json_output() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "small.toml", SMALL);
    let json = dir.path().join("out.json");
    let o = pbft(&[
        "scenario",
        "run",
        f.to_str().unwrap(),
        "--seeds",
        "1..3",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("3 of 3 runs passed"));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(v["passed"], true);
    let runs = v["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 3);
    assert_eq!(runs[2]["seed"], 3);
    assert_eq!(runs[0]["mode"], "sim");
    assert_eq!(runs[0]["validators"].as_array().unwrap().len(), 4);
    assert!(runs[0]["expectations"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["passed"] == true));
    // same file, same seed: byte-identical JSON from another process
    let json2 = dir.path().join("again.json");
    let o = pbft(&[
        "scenario",
        "run",
        f.to_str().unwrap(),
        "--seeds",
        "1..3",
        "--json",
        json2.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(
        std::fs::read(&json).unwrap(),
        std::fs::read(&json2).unwrap()
    );
    // a bad range is bad usage
    let o = pbft(&["scenario", "run", f.to_str().unwrap(), "--seeds", "5..1"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

#[test]
fn beyond_f_is_reported_as_a_detected_violation() {
    let o = pbft(&["scenario", "run", "scenarios/beyond-f.toml", "--seed", "2"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("VIOLATION"), "{out}");
    assert!(out.contains("PASS violation"), "{out}");
    assert!(out.contains("violation detected"), "{out}");
}

#[test]
fn list_prints_every_catalog_scenario_and_rejects_invalid_files() {
    let o = pbft(&["scenario", "list"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(out.lines().count(), 34, "{out}");
    for name in [
        "baseline",
        "beyond-f",
        "slow-primary",
        "flood",
        "crash-mid-checkpoint",
        "state-spam",
    ] {
        assert!(out.lines().any(|l| l.starts_with(name)), "{name}: {out}");
    }
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.toml", SMALL);
    write(
        dir.path(),
        "b.toml",
        "name = \"b\"\n[cluster]\nvalidators = 2\n",
    );
    let o = pbft(&["scenario", "list", dir.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("small"));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("b.toml:3:"),
        "{}",
        text(&o)
    );
}

/// Sim mode and strangers: among several files a stranger scenario is skipped, said
/// so on stderr, and the others run; alone it is refused with exit 2, never passed.
#[test]
fn sim_mode_skips_or_refuses_stranger_scenarios() {
    let o = pbft(&[
        "scenario",
        "run",
        "scenarios/baseline.toml",
        "scenarios/hog-connections.toml",
        "--seed",
        "1",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("skipped hog-connections in sim mode"),
        "{}",
        text(&o)
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("baseline seed 1: PASSED"), "{}", text(&o));
    assert!(!out.contains("hog-connections seed"), "{}", text(&o));

    let o = pbft(&["scenario", "run", "scenarios/hog-connections.toml"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--mode cluster"), "{}", text(&o));
}
