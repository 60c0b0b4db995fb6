//! The timeline of a cluster-mode run: the scenario's faults, the edges of its traitor
//! windows and its probes, in time order.

use pbft_scenario::model::{FaultKind, Scenario};
use std::collections::BTreeSet;

/// What happens at one point of the timeline.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Event {
    /// A scripted fault.
    Fault(FaultKind),
    /// A traitor's behaviour switched on (`true`) or off.
    Traitor(u32, bool),
    /// A probe of the honest validators.
    Probe,
}

/// Whether `node`'s traitor behaviour is on at `t_ms`: inside one of its windows.
pub(crate) fn traitor_on(sc: &Scenario, node: u32, t_ms: u64) -> bool {
    sc.traitors
        .iter()
        .filter(|t| t.node == node)
        .any(|t| t.from_ms <= t_ms && t_ms < t.until_ms.unwrap_or(u64::MAX))
}

/// The timeline, in time order; within one instant, faults first (in file order), then
/// traitor switches, then probes. A window edge at 0 is the start state (see
/// [`super::faults::startup_commands`]); edges after the deadline never come.
pub(crate) fn timeline(sc: &Scenario) -> Vec<(u64, Event)> {
    let mut ev: Vec<(u64, u8, Event)> = Vec::new();
    for f in &sc.faults {
        ev.push((f.at_ms, 0, Event::Fault(f.action.clone())));
    }
    let mut edges: BTreeSet<(u32, u64)> = BTreeSet::new();
    for t in &sc.traitors {
        edges.insert((t.node, t.from_ms));
        if let Some(u) = t.until_ms {
            edges.insert((t.node, u));
        }
    }
    for (node, at) in edges {
        if at > 0 && at <= sc.expect.deadline_ms {
            ev.push((at, 1, Event::Traitor(node, traitor_on(sc, node, at))));
        }
    }
    for p in sc.probe_times() {
        ev.push((p, 2, Event::Probe));
    }
    ev.sort_by_key(|(at, order, _)| (*at, *order));
    ev.into_iter().map(|(at, _, e)| (at, e)).collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::path::Path;

    pub(crate) fn scenario(body: &str) -> Scenario {
        let src = format!("name = \"t\"\n{body}");
        pbft_scenario::parse(Path::new("t.toml"), &src).expect("scenario")
    }

    const WINDOWS: &str = r#"
[cluster]
validators = 7

[[traitor]]
node = 1
behavior = "silent"
from_ms = 100
until_ms = 300

[[traitor]]
node = 1
behavior = "silent"
from_ms = 300
until_ms = 500

[[traitor]]
node = 2
behavior = "equivocate"
until_ms = 40000

[[fault]]
at_ms = 300
action = "isolate"
node = 3

[expect]
deadline_ms = 20000

[[expect.at]]
at_ms = 300
view_at_most = 5
"#;

    #[test]
    fn windows_are_half_open_and_back_to_back_windows_join() {
        let sc = scenario(WINDOWS);
        assert!(!traitor_on(&sc, 1, 99));
        assert!(traitor_on(&sc, 1, 100));
        assert!(
            traitor_on(&sc, 1, 300),
            "the second window opens as the first closes"
        );
        assert!(!traitor_on(&sc, 1, 500));
        assert!(traitor_on(&sc, 2, 0) && traitor_on(&sc, 2, 19_999));
        assert!(!traitor_on(&sc, 0, 200), "not a traitor");
    }

    #[test]
    fn the_timeline_orders_faults_then_switches_then_probes() {
        let sc = scenario(WINDOWS);
        assert_eq!(
            timeline(&sc),
            [
                (100, Event::Traitor(1, true)),
                (300, Event::Fault(FaultKind::Isolate { node: 3 })),
                // the join of two windows is an edge that keeps the behaviour on
                (300, Event::Traitor(1, true)),
                (300, Event::Probe),
                (500, Event::Traitor(1, false)),
                // node 2 starts on (no edge at 0) and its end is past the deadline
            ]
        );
    }

    #[test]
    fn a_scenario_without_faults_or_traitors_has_only_its_probes() {
        let sc = scenario("[[expect.no_progress]]\nfrom_ms = 10\nuntil_ms = 20\n");
        assert_eq!(timeline(&sc), [(10, Event::Probe), (20, Event::Probe)]);
        assert!(timeline(&scenario("")).is_empty());
    }
}
