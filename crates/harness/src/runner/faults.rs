//! What the runner does for each scripted fault, decided without touching a process:
//! which peers each validator blocks ([`Blocked`]), what [`Action`] a fault takes, and
//! the control [`Command`]s a validator is sent when the run starts and when it
//! restarts.

use super::timeline::traitor_on;
use pbft_faults::Command;
use pbft_scenario::model::{FaultKind, Scenario};
use std::collections::BTreeSet;

/// The peers each validator drops traffic to and from, by validator id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Blocked(Vec<BTreeSet<u32>>);

impl Blocked {
    /// Nobody blocks anybody (`n` validators).
    pub(crate) fn none(n: usize) -> Blocked {
        Blocked(vec![BTreeSet::new(); n])
    }

    /// A partition: validators in different groups cannot talk, and a validator in no
    /// group talks to nobody.
    pub(crate) fn partition(n: usize, groups: &[Vec<u32>]) -> Blocked {
        Blocked(
            (0..n as u32)
                .map(|i| {
                    let mine = groups.iter().find(|g| g.contains(&i));
                    (0..n as u32)
                        .filter(|j| *j != i && !mine.is_some_and(|g| g.contains(j)))
                        .collect()
                })
                .collect(),
        )
    }

    /// These sets with `node` also cut off from everyone, both ways.
    pub(crate) fn isolate(&self, node: u32) -> Blocked {
        let n = self.0.len() as u32;
        let mut sets = self.0.clone();
        for (i, set) in sets.iter_mut().enumerate() {
            if i as u32 == node {
                set.extend((0..n).filter(|j| *j != node));
            } else {
                set.insert(node);
            }
        }
        Blocked(sets)
    }

    /// What validator `id` blocks.
    pub(crate) fn of(&self, id: u32) -> &BTreeSet<u32> {
        static EMPTY: BTreeSet<u32> = BTreeSet::new();
        self.0.get(id as usize).unwrap_or(&EMPTY)
    }

    /// The command that makes validator `id` block what it should.
    pub(crate) fn command(&self, id: u32) -> Command {
        Command::Block(self.of(id).clone())
    }
}

/// What carrying out one scripted fault takes.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Action {
    /// SIGKILL the validator's process.
    Kill(u32),
    /// Tell a running validator to crash inside its next checkpoint, and count its exit
    /// as that crash.
    CrashAtCheckpoint(u32),
    /// Stop the validator if it still runs, empty its data directory if `wipe`, start
    /// it again and send it [`restart_commands`].
    Restart {
        /// The validator.
        node: u32,
        /// Whether its disk is wiped first.
        wipe: bool,
    },
    /// From now on every validator blocks these peers; each running one is told.
    Block(Blocked),
}

/// The action of `fault` in a cluster of `n` validators that block `blocked` now.
pub(crate) fn action(fault: &FaultKind, n: usize, blocked: &Blocked) -> Action {
    match fault {
        FaultKind::Crash {
            node,
            mid_checkpoint: false,
        } => Action::Kill(*node),
        FaultKind::Crash {
            node,
            mid_checkpoint: true,
        } => Action::CrashAtCheckpoint(*node),
        FaultKind::Restart { node, wipe } => Action::Restart {
            node: *node,
            wipe: *wipe,
        },
        FaultKind::Partition { groups } => Action::Block(Blocked::partition(n, groups)),
        FaultKind::Isolate { node } => Action::Block(blocked.isolate(*node)),
        FaultKind::Heal => Action::Block(Blocked::none(n)),
    }
}

/// The scenario network's loss and duplication, if it has any.
pub(crate) fn loss_command(sc: &Scenario) -> Option<Command> {
    let (drop, duplicate) = (sc.network.drop_rate, sc.network.duplicate_rate);
    (drop > 0.0 || duplicate > 0.0).then_some(Command::Loss { drop, duplicate })
}

/// The switch of a traitor's behaviour at `t_ms`.
pub(crate) fn traitor_command(sc: &Scenario, node: u32, t_ms: u64) -> Command {
    Command::Traitor(traitor_on(sc, node, t_ms))
}

/// What validator `node` is told before the workload starts: the network's loss, and
/// `traitor off` if it is a traitor whose first window opens later.
pub(crate) fn startup_commands(sc: &Scenario, node: u32, is_traitor: bool) -> Vec<Command> {
    let mut cmds: Vec<Command> = loss_command(sc).into_iter().collect();
    if is_traitor && !traitor_on(sc, node, 0) {
        cmds.push(Command::Traitor(false));
    }
    cmds
}

/// What a restarted validator is told once it answers `ping`: the network's loss, the
/// peers it blocks (if any), and whether its traitor behaviour is on at `now_ms`.
pub(crate) fn restart_commands(
    sc: &Scenario,
    node: u32,
    is_traitor: bool,
    blocked: &BTreeSet<u32>,
    now_ms: u64,
) -> Vec<Command> {
    let mut cmds: Vec<Command> = loss_command(sc).into_iter().collect();
    if !blocked.is_empty() {
        cmds.push(Command::Block(blocked.clone()));
    }
    if is_traitor {
        cmds.push(traitor_command(sc, node, now_ms));
    }
    cmds
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::timeline::tests::scenario;

    fn lines(cmds: &[Command]) -> Vec<String> {
        cmds.iter().map(Command::to_string).collect()
    }

    fn block_lines(b: &Blocked, n: u32) -> Vec<String> {
        (0..n).map(|i| b.command(i).to_string()).collect()
    }

    #[test]
    fn a_partition_blocks_the_other_groups_and_strands_the_unlisted() {
        let b = Blocked::partition(4, &[vec![0, 1], vec![2, 3]]);
        assert_eq!(
            block_lines(&b, 4),
            ["block 2 3", "block 2 3", "block 0 1", "block 0 1"]
        );
        let b = Blocked::partition(5, &[vec![0, 1, 2], vec![3]]);
        assert_eq!(
            block_lines(&b, 5),
            [
                "block 3 4",
                "block 3 4",
                "block 3 4",
                "block 0 1 2 4",
                "block 0 1 2 3"
            ]
        );
    }

    #[test]
    fn isolation_adds_to_what_is_blocked_and_heal_clears_everything() {
        let split = Blocked::partition(4, &[vec![0, 1], vec![2, 3]]);
        let b = match action(&FaultKind::Isolate { node: 1 }, 4, &split) {
            Action::Block(b) => b,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            block_lines(&b, 4),
            ["block 1 2 3", "block 0 2 3", "block 0 1", "block 0 1"]
        );
        let healed = action(&FaultKind::Heal, 4, &b);
        assert_eq!(healed, Action::Block(Blocked::none(4)));
        assert_eq!(block_lines(&Blocked::none(4), 4), ["block"; 4]);
    }

    #[test]
    fn crashes_and_restarts_map_to_their_actions() {
        let none = Blocked::none(4);
        let crash = |mid| FaultKind::Crash {
            node: 2,
            mid_checkpoint: mid,
        };
        assert_eq!(action(&crash(false), 4, &none), Action::Kill(2));
        assert_eq!(action(&crash(true), 4, &none), Action::CrashAtCheckpoint(2));
        assert_eq!(
            action(
                &FaultKind::Restart {
                    node: 2,
                    wipe: true
                },
                4,
                &none
            ),
            Action::Restart {
                node: 2,
                wipe: true
            }
        );
    }

    #[test]
    fn startup_sets_the_loss_and_closes_windows_that_open_later() {
        let sc = scenario(
            "[cluster]\nvalidators = 7\n\n[network]\ndrop_rate = 0.05\n\n[[traitor]]\nnode = 0\nbehavior = \"silent\"\nfrom_ms = 500\n\n[[traitor]]\nnode = 1\nbehavior = \"silent\"\n",
        );
        assert_eq!(
            lines(&startup_commands(&sc, 0, true)),
            ["loss 0.05 0.0", "traitor off"]
        );
        assert_eq!(lines(&startup_commands(&sc, 1, true)), ["loss 0.05 0.0"]);
        assert_eq!(lines(&startup_commands(&sc, 2, false)), ["loss 0.05 0.0"]);
        let quiet = scenario("");
        assert!(startup_commands(&quiet, 0, false).is_empty());
        assert_eq!(loss_command(&quiet), None);
    }

    #[test]
    fn a_restarted_node_gets_back_its_loss_partition_and_traitor_state() {
        let sc = scenario(
            "[network]\nduplicate_rate = 0.5\n\n[[traitor]]\nnode = 3\nbehavior = \"silent\"\nfrom_ms = 100\nuntil_ms = 200\n",
        );
        let blocked = BTreeSet::from([0, 1]);
        assert_eq!(
            lines(&restart_commands(&sc, 3, true, &blocked, 150)),
            ["loss 0.0 0.5", "block 0 1", "traitor on"]
        );
        assert_eq!(
            lines(&restart_commands(&sc, 3, true, &BTreeSet::new(), 250)),
            ["loss 0.0 0.5", "traitor off"]
        );
        assert!(restart_commands(&scenario(""), 1, false, &BTreeSet::new(), 0).is_empty());
    }
}
