//! Format v1 validation: every rejection names the file, the line and the reason.

use pbft_scenario::{parse, ScenarioError};
use std::path::Path;

const OK: &str = r#"name = "t"
description = "a test"

[cluster]
validators = 4

[network]
min_delay_ms = 1
max_delay_ms = 10

[workload]
requests = 10

[[traitor]]
node = 0
behavior = "equivocate"

[[fault]]
at_ms = 100
action = "crash"
node = 2

[[fault]]
at_ms = 300
action = "restart"
node = 2

[expect]
deadline_ms = 5000
"#;

fn err(src: &str) -> ScenarioError {
    match parse(Path::new("x.toml"), src) {
        Ok(_) => panic!("accepted:\n{src}"),
        Err(e) => e,
    }
}

/// `src` with the first occurrence of `from` replaced by `to`.
fn with(from: &str, to: &str) -> String {
    assert!(OK.contains(from), "{from}");
    OK.replacen(from, to, 1)
}

/// Asserts the error names the file, the line and contains `reason`.
fn rejects(src: &str, line: usize, reason: &str) {
    let e = err(src);
    assert_eq!(e.file, Path::new("x.toml"));
    assert_eq!(e.line, Some(line), "{e}");
    assert!(e.reason.contains(reason), "{e} (wanted {reason:?})");
    assert!(
        e.to_string().starts_with(&format!("x.toml:{line}: ")),
        "{e}"
    );
}

#[test]
fn the_example_parses_with_defaults() {
    let sc = parse(Path::new("x.toml"), OK).unwrap();
    assert_eq!(sc.cluster.validators, 4);
    assert_eq!(sc.cluster.checkpoint_interval, 16);
    assert_eq!(sc.cluster.batch_size, 32);
    assert_eq!(sc.cluster.view_timeout_ms, 400);
    assert_eq!(sc.network.drop_rate, 0.0);
    assert_eq!(sc.workload.clients, 4);
    assert_eq!(sc.traitors[0].until_ms, None);
    assert!(sc.expect.agreement && sc.expect.all_committed && !sc.expect.violation);
    assert_eq!(sc.seed, None);
    assert_eq!(sc.seed_or_default(None), 1);
    assert_eq!(sc.seed_or_default(Some(9)), 9);
}

#[test]
fn unknown_keys_are_rejected() {
    rejects(
        &with("requests = 10", "requests = 10\nrequets = 3"),
        13,
        "unknown field `requets`",
    );
    rejects(
        &with("name = \"t\"", "name = \"t\"\ncolour = 1"),
        2,
        "unknown field `colour`",
    );
    rejects(
        &with("node = 0\n", "node = 0\nspeed = 2\n"),
        16,
        "unknown field `speed`",
    );
}

#[test]
fn fewer_than_four_validators_are_rejected() {
    rejects(&with("validators = 4", "validators = 3"), 5, "3f+1");
}

#[test]
fn node_ids_out_of_range_are_rejected() {
    rejects(&with("node = 0", "node = 4"), 15, "node 4 does not exist");
    rejects(
        &with("node = 2\n\n", "node = 9\n\n"),
        21,
        "node 9 does not exist",
    );
}

#[test]
fn more_traitors_than_f_need_violation() {
    let src = with(
        "[[fault]]",
        "[[traitor]]\nnode = 1\nbehavior = \"silent\"\n\n[[fault]]",
    );
    rejects(&src, 18, "violation = true");
    let ok = src.replace("deadline_ms = 5000", "deadline_ms = 5000\nviolation = true");
    let sc = parse(Path::new("x.toml"), &ok).unwrap();
    assert!(sc.expect.violation && !sc.expect.agreement && !sc.expect.all_committed);
}

#[test]
fn windows_that_end_before_they_start_are_rejected() {
    rejects(
        &with(
            "behavior = \"equivocate\"",
            "behavior = \"equivocate\"\nfrom_ms = 500\nuntil_ms = 100",
        ),
        18,
        "ends before it starts",
    );
}

#[test]
fn unknown_behaviours_actions_and_disks_are_rejected() {
    rejects(
        &with("\"equivocate\"", "\"lie_a_lot\""),
        16,
        "unknown behavior \"lie_a_lot\"",
    );
    rejects(
        &with("action = \"crash\"", "action = \"explode\""),
        20,
        "unknown action \"explode\"",
    );
    rejects(
        &with(
            "node = 2\n\n[expect]",
            "node = 2\ndisk = \"shred\"\n\n[expect]",
        ),
        27,
        "disk = \"shred\"",
    );
}

#[test]
fn rates_outside_0_1_are_rejected() {
    rejects(
        &with("max_delay_ms = 10", "max_delay_ms = 10\ndrop_rate = 1.5"),
        10,
        "drop_rate = 1.5",
    );
    rejects(
        &with(
            "max_delay_ms = 10",
            "max_delay_ms = 10\nduplicate_rate = -0.1",
        ),
        10,
        "between 0 and 1",
    );
}

#[test]
fn min_delay_above_max_delay_is_rejected() {
    rejects(
        &with("min_delay_ms = 1", "min_delay_ms = 50"),
        8,
        "greater than max_delay_ms",
    );
}

#[test]
fn restart_of_a_node_never_crashed_is_rejected() {
    let src = OK.replacen(
        "node = 2\n\n[[fault]]\nat_ms = 300\naction = \"restart\"\nnode = 2",
        "node = 2\n\n[[fault]]\nat_ms = 300\naction = \"restart\"\nnode = 3",
        1,
    );
    rejects(&src, 23, "never crashed");
}

#[test]
fn type_errors_and_syntax_errors_name_the_line() {
    rejects(
        &with("requests = 10", "requests = \"ten\""),
        12,
        "invalid type",
    );
    rejects(&with("requests = 10", "requests = -1"), 12, "");
    rejects(&with("[workload]", "[workload"), 11, "");
}

#[test]
fn op_bytes_pads_up_to_the_decoders_limit() {
    let sc = parse(Path::new("x.toml"), OK).unwrap();
    assert_eq!(sc.workload.op_bytes, 0);
    let src = with("requests = 10", "requests = 10\nop_bytes = 4096");
    let sc = parse(Path::new("x.toml"), &src).unwrap();
    assert_eq!(sc.workload.op_bytes, 4096);
    rejects(
        &with("requests = 10", "requests = 10\nop_bytes = 4097"),
        13,
        "op_bytes = 4097: at most 4096",
    );
}

#[test]
fn a_missing_file_is_an_error_naming_it() {
    let e = pbft_scenario::load(Path::new("/nonexistent/x.toml")).unwrap_err();
    assert!(e.to_string().contains("/nonexistent/x.toml"), "{e}");
}

/// `[[stranger]]` tables: the vocabulary, the window, the count; every mistake named
/// with its line.
#[test]
fn strangers_are_parsed_and_checked() {
    use pbft_scenario::model::StrangerBehavior;
    let table = "[[stranger]]\nbehavior = \"hog_connections\"\nfrom_ms = 100\nuntil_ms = 900\ncount = 3\n\n[expect]";
    let sc = parse(Path::new("x.toml"), &with("[expect]", table)).expect("parses");
    assert_eq!(sc.strangers.len(), 1);
    let s = &sc.strangers[0];
    assert_eq!(
        (s.behavior, s.from_ms, s.until_ms, s.count),
        (StrangerBehavior::HogConnections, 100, Some(900), 3)
    );
    assert!(
        sc.fault_free().strangers.is_empty(),
        "the twin has no strangers"
    );
    for b in StrangerBehavior::ALL {
        let t = format!("[[stranger]]\nbehavior = \"{}\"\n\n[expect]", b.name());
        let sc = parse(Path::new("x.toml"), &with("[expect]", &t))
            .unwrap_or_else(|e| panic!("{}: {e}", b.name()));
        assert_eq!((sc.strangers[0].behavior, sc.strangers[0].count), (b, 1));
    }
    // the [expect] line of OK is line 28: the table starts there
    rejects(
        &with("[expect]", "[[stranger]]\nbehavior = \"knock\"\n\n[expect]"),
        29,
        "unknown stranger behavior \"knock\"",
    );
    rejects(
        &with(
            "[expect]",
            "[[stranger]]\nbehavior = \"slow_frame\"\ncount = 65\n\n[expect]",
        ),
        30,
        "count = 65",
    );
    rejects(
        &with(
            "[expect]",
            "[[stranger]]\nbehavior = \"query_flood\"\nfrom_ms = 9\nuntil_ms = 3\n\n[expect]",
        ),
        31,
        "ends before it starts",
    );
    rejects(
        &with("[expect]", "[[stranger]]\nfrom_ms = 9\n\n[expect]"),
        28,
        "needs a `behavior`",
    );
}

/// Sim mode does not model client connections: a scenario with a stranger that acts
/// on them is refused there, never passed for nothing, even beside one it plays.
#[test]
fn sim_mode_refuses_strangers() {
    use pbft_scenario::model::StrangerBehavior;
    use pbft_scenario::{RunError, Runner, SimRunner};
    let simulated: Vec<&str> = StrangerBehavior::ALL
        .iter()
        .filter(|b| b.simulated())
        .map(|b| b.name())
        .collect();
    assert_eq!(
        simulated,
        ["reuse_id"],
        "only reuse_id acts through requests alone"
    );
    for b in StrangerBehavior::ALL.iter().filter(|b| !b.simulated()) {
        let t = format!(
            "[[stranger]]\nbehavior = \"reuse_id\"\n\n[[stranger]]\nbehavior = \"{}\"\n\n[expect]",
            b.name()
        );
        let sc = parse(Path::new("x.toml"), &with("[expect]", &t)).expect("parses");
        assert_eq!(sc.unsimulated_stranger().map(|s| s.behavior), Some(*b));
        match SimRunner.observe(&sc, 1) {
            Err(RunError::Unsupported { mode, reason }) => {
                assert_eq!(mode, "sim");
                assert!(reason.contains(b.name()), "{reason}");
            }
            other => panic!("{}: expected Unsupported, got {other:?}", b.name()),
        }
    }
}

/// A small run (two clients, 24 requests) with the strangers of `stranger`.
fn reuse_id_run(stranger: &str, seed: u64) -> pbft_scenario::ScenarioReport {
    let src = format!(
        "name = \"r\"\n\n[workload]\nclients = 2\nrequests = 24\nthink_ms = 50\n\n{stranger}\n\n[expect]\ndeadline_ms = 10000\n"
    );
    let sc = parse(Path::new("x.toml"), &src).expect("parses");
    assert_eq!(sc.stranger_count(), 2);
    pbft_scenario::run_scenario(&pbft_scenario::SimRunner, &sc, seed).expect("runs")
}

/// Sim mode plays `reuse_id` through the simulated network: each stranger signs new
/// operations under ids its clients had executed, every validator refuses them as
/// reused ids, none executes, and every valid request commits.
#[test]
fn sim_mode_plays_reuse_id() {
    let r = reuse_id_run("[[stranger]]\nbehavior = \"reuse_id\"\ncount = 2", 3);
    let text = r.render_text();
    assert!(r.passed, "{text}");
    assert_eq!(r.strangers.len(), 2, "{text}");
    for s in &r.strangers {
        assert_eq!((s.behavior.as_str(), s.from.as_str()), ("reuse_id", "sim"));
        assert!(s.problems.is_empty(), "{text}");
        assert!(
            s.summary.contains("executed by 0 honest ledgers") && !s.summary.starts_with("0 "),
            "{text}"
        );
    }
    assert!(
        r.expectations
            .iter()
            .any(|e| e.name == "strangers" && e.passed),
        "{text}"
    );
    assert!(text.contains("stranger reuse_id from sim: "), "{text}");
}

/// A stranger that never gets to do what its behaviour says fails the run: here its
/// window opens after every request committed, so no reused id is ever sent.
#[test]
fn a_stranger_that_never_acts_fails_the_run() {
    let r = reuse_id_run(
        "[[stranger]]\nbehavior = \"reuse_id\"\ncount = 2\nfrom_ms = 9000",
        3,
    );
    let text = r.render_text();
    assert!(!r.passed, "{text}");
    let e = r
        .expectations
        .iter()
        .find(|e| e.name == "strangers")
        .expect("a strangers expectation");
    assert!(
        !e.passed && e.detail.contains("never sent a reused id"),
        "{text}"
    );
    assert!(text.contains("FAIL strangers: "), "{text}");
}

/// `[node]` sets the validators' limits on client connections (cluster mode); unset
/// keys keep the node's defaults, zero and unknown keys are refused.
#[test]
fn node_limits_parse_into_flags() {
    let sc = parse(Path::new("x.toml"), OK).unwrap();
    assert!(sc.node.flags().is_empty(), "no [node]: the node's defaults");
    let src = format!("{OK}\n[node]\nmax_clients = 24\n");
    let sc = parse(Path::new("x.toml"), &src).unwrap();
    assert_eq!(sc.node.flags(), vec!["--max-clients", "24"]);
    let src = format!(
        "{OK}\n[node]\nmax_clients = 24\nmax_clients_per_ip = 4\nclient_frame_timeout_ms = 100\n"
    );
    let sc = parse(Path::new("x.toml"), &src).unwrap();
    assert_eq!(
        sc.node.flags(),
        vec![
            "--max-clients",
            "24",
            "--max-clients-per-ip",
            "4",
            "--client-frame-timeout-ms",
            "100"
        ]
    );
    let lines = OK.lines().count();
    rejects(
        &format!("{OK}\n[node]\nmax_clients = 0\n"),
        lines + 3,
        "max_clients = 0: must be at least 1",
    );
    rejects(
        &format!("{OK}\n[node]\nmax_slots = 3\n"),
        lines + 3,
        "unknown field `max_slots`",
    );
}
