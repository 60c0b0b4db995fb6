//! Scripted faults at points in simulated time: crashes (also in the middle of a
//! checkpoint), restarts on a kept or wiped disk, partitions, isolation and healing.

use crate::config::FaultAction;
use crate::sim::Simulation;
use pbft_faults::Command;

impl Simulation {
    /// Applies scripted fault number `idx`.
    pub(crate) fn apply_fault(&mut self, idx: usize) {
        let Some(fault) = self.cfg.faults.get(idx).cloned() else {
            return;
        };
        self.faults_applied += 1;
        tracing::info!(at_ms = self.now.as_millis(), ?fault.action, "fault");
        match fault.action {
            FaultAction::Crash(r) => self.crash(r),
            FaultAction::CrashMidCheckpoint(r) => {
                // the same switch the scenario runner's control command throws
                if let Some(h) = self
                    .validators
                    .get_mut(r as usize)
                    .and_then(|v| v.host.as_mut())
                {
                    h.faults_mut()
                        .switchboard()
                        .apply(&Command::CrashAtCheckpoint);
                }
            }
            FaultAction::Restart { node, wipe } => {
                let Some(v) = self.validators.get(node as usize) else {
                    return;
                };
                if v.host.is_some() || v.broken {
                    return;
                }
                if wipe {
                    self.wipe(node);
                }
                self.start(node);
            }
            FaultAction::Partition(groups) => {
                let n = self.validators.len();
                self.network.partition(n, &groups);
            }
            FaultAction::Isolate(r) => self.network.isolate(r),
            FaultAction::Heal => self.network.heal(),
        }
    }
}
