//! What a simulation run reports.

use crate::checker::Violation;
use crate::sim::Stats;
use pbft_crypto::Digest;
use pbft_protocol::{ReplicaId, Seq, View};
use pbft_traitor::Behavior;
use std::fmt::Write as _;

/// One validator at the end of a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaReport {
    /// The validator.
    pub id: ReplicaId,
    /// Its traitor behaviour, if scripted.
    pub traitor: Option<Behavior>,
    /// True if it was down at the end.
    pub crashed: bool,
    /// How many times its process died during the run.
    pub crashes: u32,
    /// True if it was restarted from an empty disk at some point (it then forgot what
    /// it had signed, and recovers before it votes again).
    pub wiped: bool,
    /// Its view.
    pub view: View,
    /// Its ledger height (last executed sequence number).
    pub last_executed: Seq,
    /// Its last stable checkpoint.
    pub stable_checkpoint: Seq,
    /// Its ledger head hash.
    pub head: Digest,
    /// Validators it holds signed evidence against.
    pub evidence_against: Vec<ReplicaId>,
    /// Why it halted, if it did.
    pub halted: Option<String>,
}

/// The outcome of a run.
#[derive(Clone, Debug)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// Simulated time at the end, ms.
    pub end_ms: u64,
    /// Per validator.
    pub replicas: Vec<ReplicaReport>,
    /// Valid requests in the workload (transfers and overdrafts).
    pub valid_requests: usize,
    /// Requests accepted by clients (f+1 matching replies).
    pub accepted: usize,
    /// Every valid request was accepted.
    pub all_committed: bool,
    /// When the last valid request was accepted, ms.
    pub all_committed_ms: Option<u64>,
    /// Broken invariants.
    pub violations: Vec<Violation>,
    /// Replicas that halted (detected a contradiction they cannot resolve).
    pub halts: Vec<(ReplicaId, String)>,
    /// Digest of the whole event trace: equal for equal runs.
    pub trace_digest: Digest,
    /// Counters.
    pub stats: Stats,
    /// Submit-to-accept latencies, µs.
    pub latencies_us: Vec<u64>,
    /// f of the cluster.
    pub f: usize,
    /// Requests still unaccepted at the end.
    pub stuck: Vec<Stuck>,
    /// The probes asked for by [`crate::SimConfig::probes_ms`], in the order asked; a
    /// probe after the end of the run shows the state at the end.
    pub probes: Vec<Probe>,
    /// One per [`crate::SimConfig::strangers`], in order.
    pub strangers: Vec<StrangerReport>,
}

/// The honest, running validators at one point in simulated time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Probe {
    /// When, ms.
    pub at_ms: u64,
    /// Lowest view among honest, running validators (0 if none runs).
    pub min_view: View,
    /// Highest view among honest, running validators.
    pub max_view: View,
    /// Lowest executed sequence number among honest, running validators.
    pub min_executed: Seq,
    /// Highest executed sequence number among honest, running validators.
    pub max_executed: Seq,
}

/// What one stranger did in a run, and how the validators took it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StrangerReport {
    /// What it does.
    pub kind: crate::StrangerKind,
    /// Requests it signed under request ids that had executed, and sent.
    pub sent: u64,
    /// Of those, requests under an id its client still waited for (it had executed at
    /// an honest validator, and f+1 replies had not reached the client yet).
    pub in_flight: u64,
    /// Distinct (client, request id) among them.
    pub distinct_ids: u64,
    /// Answers to them bound to its request's digest that refuse it as a reused id.
    pub reused_id_answers: u64,
    /// Of its requests, those f+1 validators refused as a reused id.
    pub refused_by_quorum: u64,
    /// Answers to them bound to its request's digest with any other result (none may
    /// come: a reused id is never ordered nor answered with another request's receipt).
    pub other_answers: u64,
    /// Replies it received that answer the clients' own requests.
    pub client_replies: u64,
    /// Honest ledgers that executed one of its requests (each a safety violation).
    pub executed: Vec<String>,
}

impl Default for StrangerReport {
    fn default() -> Self {
        StrangerReport {
            kind: crate::StrangerKind::ReuseId,
            sent: 0,
            in_flight: 0,
            distinct_ids: 0,
            reused_id_answers: 0,
            refused_by_quorum: 0,
            other_answers: 0,
            client_replies: 0,
            executed: Vec::new(),
        }
    }
}

/// A request no client accepted by the end of the run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stuck {
    /// The client, by index.
    pub client: usize,
    /// The request id.
    pub request_id: u64,
    /// The replies received so far: validator and digest of the result it sent.
    pub replies: Vec<(ReplicaId, Digest)>,
}

impl Report {
    fn honest(&self) -> impl Iterator<Item = &ReplicaReport> {
        self.replicas.iter().filter(|r| r.traitor.is_none())
    }

    /// True if no invariant was broken, no honest replica halted, and no honest
    /// replica that kept its disk is accused by signed evidence.
    pub fn safe(&self) -> bool {
        self.violations.is_empty()
            && self
                .halts
                .iter()
                .all(|(r, _)| self.replicas[*r as usize].traitor.is_some())
            && self.falsely_accused().is_empty()
    }

    /// Honest validators accused by evidence held by an honest validator: a restarted
    /// replica (on a kept or a wiped disk) contradicted itself, or evidence is forged.
    /// Either is a bug.
    pub fn falsely_accused(&self) -> Vec<ReplicaId> {
        let mut out: Vec<ReplicaId> = self
            .honest()
            .flat_map(|r| r.evidence_against.iter().copied())
            .filter(|a| {
                let x = &self.replicas[*a as usize];
                x.traitor.is_none()
            })
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// True if the run detected a safety violation or an honest replica halted (what a
    /// run beyond the fault model must show).
    pub fn violation_detected(&self) -> bool {
        !self.safe()
    }

    /// The highest view among honest, running validators.
    pub fn max_honest_view(&self) -> View {
        self.honest()
            .filter(|r| !r.crashed)
            .map(|r| r.view)
            .max()
            .unwrap_or(0)
    }

    /// The lowest view among honest, running validators.
    pub fn min_honest_view(&self) -> View {
        self.honest()
            .filter(|r| !r.crashed)
            .map(|r| r.view)
            .min()
            .unwrap_or(0)
    }

    /// True if every honest, running validator ends at the same height and head hash.
    pub fn honest_heads_equal(&self) -> bool {
        let mut it = self
            .honest()
            .filter(|r| !r.crashed)
            .map(|r| (r.last_executed, r.head));
        match it.next() {
            Some(first) => it.all(|x| x == first),
            None => true,
        }
    }

    /// True if every honest, running validator holds evidence against `id`.
    pub fn evidence_held_against(&self, id: ReplicaId) -> bool {
        let mut any = false;
        for r in self.honest().filter(|r| !r.crashed) {
            any = true;
            if !r.evidence_against.contains(&id) {
                return false;
            }
        }
        any
    }

    /// Latency percentile (0..=100), µs.
    pub fn latency_percentile(&self, p: u32) -> Option<u64> {
        let mut v = self.latencies_us.clone();
        if v.is_empty() {
            return None;
        }
        v.sort_unstable();
        let idx = ((v.len() - 1) * p.min(100) as usize) / 100;
        Some(v[idx])
    }

    /// A human-readable summary: a row per validator, then the outcome.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "seed {}  end {} ms  accepted {}/{}",
            self.seed, self.end_ms, self.accepted, self.valid_requests
        );
        let _ = writeln!(
            s,
            "{:>4} {:<18} {:>5} {:>9} {:>7}  {:<16} evidence",
            "id", "role", "view", "executed", "stable", "head"
        );
        for r in &self.replicas {
            let role = match (&r.traitor, r.crashed) {
                (Some(b), _) => format!("traitor:{b}"),
                (None, true) => "honest (down)".to_string(),
                (None, false) => "honest".to_string(),
            };
            let _ = writeln!(
                s,
                "{:>4} {:<18} {:>5} {:>9} {:>7}  {:<16} {:?}",
                r.id,
                role,
                r.view,
                r.last_executed,
                r.stable_checkpoint,
                r.head.short(),
                r.evidence_against
            );
        }
        for Stuck {
            client: c,
            request_id: rid,
            replies,
        } in self.stuck.iter().take(10)
        {
            let replies: Vec<String> = replies
                .iter()
                .map(|(r, d)| format!("{r}:{}", d.short()))
                .collect();
            let _ = writeln!(
                s,
                "UNACCEPTED client {c} request {rid}, replies [{}]",
                replies.join(" ")
            );
        }
        for v in &self.violations {
            let _ = writeln!(s, "VIOLATION {v}");
        }
        for a in self.falsely_accused() {
            let _ = writeln!(
                s,
                "VIOLATION honest validator {a} is accused by signed evidence"
            );
        }
        for (r, why) in &self.halts {
            let _ = writeln!(s, "HALT replica {r}: {why}");
        }
        let _ = writeln!(s, "trace {}", self.trace_digest.short());
        s
    }
}

impl crate::sim::Simulation {
    /// Ends the run: the end-of-run checks against every ledger, and the report.
    pub(crate) fn finish(mut self) -> Report {
        let now = self.now;
        // a validator that is down is judged by its disk
        let mut disks = Vec::new();
        for i in 0..self.validators.len() {
            let down = self.validators[i].host.is_none() && !self.validators[i].broken;
            disks.push(if down {
                self.open_disk(i as ReplicaId)
            } else {
                None
            });
        }
        let ledgers: Vec<crate::checker::LedgerView<'_>> = self
            .validators
            .iter()
            .zip(&disks)
            .enumerate()
            .filter_map(|(i, (v, disk))| {
                let ledger: &dyn pbft_executor::Executor = match (&v.host, disk) {
                    (Some(h), _) => h.ledger().as_ref(),
                    (None, Some((l, _))) => l.as_ref(),
                    (None, None) => return None,
                };
                Some(crate::checker::LedgerView {
                    node: i as ReplicaId,
                    ledger,
                    applications: &v.applications,
                    installed_at: v.installed_at,
                })
            })
            .collect();
        self.checker.finish(now, &ledgers);
        let strangers = self.stranger_reports(&ledgers);
        drop(ledgers);
        let replicas = self
            .validators
            .iter()
            .zip(&disks)
            .enumerate()
            .map(|(i, (v, disk))| {
                let id = i as ReplicaId;
                let traitor = self
                    .cfg
                    .traitors
                    .iter()
                    .find(|t| t.node == id)
                    .map(|t| t.behavior);
                let head = match (&v.host, disk) {
                    (Some(h), _) => Some(h.ledger().head()),
                    (None, Some((l, _))) => Some(l.head()),
                    (None, None) => None,
                };
                let rep = v.host.as_ref().map(|h| h.replica());
                ReplicaReport {
                    id,
                    traitor,
                    crashed: rep.is_none(),
                    crashes: v.crashes,
                    wiped: self.cfg.faults.iter().any(|f| {
                        matches!(f.action, crate::config::FaultAction::Restart { node, wipe: true } if node == id)
                    }),
                    view: rep.map_or(0, |r| r.view()),
                    last_executed: head.as_ref().map_or(0, |h| h.height),
                    stable_checkpoint: rep.map_or(0, |r| r.stable_checkpoint()),
                    head: head.map_or(Digest::ZERO, |h| h.hash),
                    evidence_against: rep
                        .map_or_else(Vec::new, |r| r.evidence().keys().copied().collect()),
                    halted: v
                        .host
                        .as_ref()
                        .and_then(|h| h.halted().map(str::to_string)),
                }
            })
            .collect();
        let latencies: Vec<u64> = self
            .clients
            .iter()
            .flat_map(|c| c.accepted.values().map(|a| a.latency_us))
            .collect();
        let accepted = self.accepted_count();
        let stuck = self
            .clients
            .iter()
            .flat_map(|c| {
                c.core
                    .in_flight_claims()
                    .map(move |(_, request_id, claims)| Stuck {
                        client: c.index,
                        request_id,
                        replies: claims
                            .iter()
                            .map(|(r, claim)| (*r, claim.result_digest))
                            .collect(),
                    })
            })
            .collect();
        let end_probe = self.probe();
        let probes = self
            .probes
            .iter()
            .zip(&self.cfg.probes_ms)
            .map(|(p, at)| {
                p.unwrap_or(Probe {
                    at_ms: *at,
                    ..end_probe
                })
            })
            .collect();
        let mut trace = self.trace.clone();
        trace.update(&self.stats.events.to_le_bytes());
        Report {
            seed: self.cfg.seed,
            end_ms: now.as_millis(),
            replicas,
            valid_requests: self.valid_requests(),
            accepted,
            all_committed: accepted >= self.valid_requests(),
            all_committed_ms: self.all_committed_at.map(|t| t.as_millis()),
            violations: self.checker.violations.clone(),
            halts: self.checker.halts.clone(),
            trace_digest: trace.finalize(),
            stats: self.stats.clone(),
            latencies_us: latencies,
            f: self.pcfg.f() as usize,
            stuck,
            probes,
            strangers,
        }
    }
}
