//! Reading format v1: TOML with serde (`deny_unknown_fields`), then semantic checks
//! that name the line of the offending key.

use crate::error::ScenarioError;
use crate::model::*;
use pbft_protocol::envelope::Limits;
use pbft_traitor::Behavior;
use serde::Deserialize;
use std::path::Path;
use toml::Spanned;

type S<T> = Option<Spanned<T>>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    name: Spanned<String>,
    #[serde(default)]
    description: Option<String>,
    seed: S<u64>,
    #[serde(default)]
    cluster: RawCluster,
    #[serde(default)]
    network: RawNetwork,
    #[serde(default)]
    workload: RawWorkload,
    #[serde(default)]
    traitor: Vec<Spanned<RawTraitor>>,
    #[serde(default)]
    stranger: Vec<Spanned<RawStranger>>,
    #[serde(default)]
    fault: Vec<Spanned<RawFault>>,
    #[serde(default)]
    node: RawNode,
    #[serde(default)]
    expect: RawExpect,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawNode {
    max_clients: S<u64>,
    max_clients_per_ip: S<u64>,
    client_frame_timeout_ms: S<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    validators: S<u64>,
    checkpoint_interval: S<u64>,
    batch_size: S<u64>,
    view_timeout_ms: S<u64>,
    storage: S<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawNetwork {
    min_delay_ms: S<u64>,
    max_delay_ms: S<u64>,
    drop_rate: S<f64>,
    duplicate_rate: S<f64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawWorkload {
    clients: S<u64>,
    requests: S<u64>,
    invalid_signatures: S<u64>,
    replays: S<u64>,
    overdrafts: S<u64>,
    concurrency: S<u64>,
    think_ms: S<u64>,
    balance: S<u64>,
    op_bytes: S<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTraitor {
    node: S<u64>,
    behavior: S<String>,
    from_ms: S<u64>,
    until_ms: S<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStranger {
    behavior: S<String>,
    from_ms: S<u64>,
    until_ms: S<u64>,
    count: S<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFault {
    at_ms: S<u64>,
    action: S<String>,
    node: S<u64>,
    disk: S<String>,
    groups: S<Vec<Vec<u64>>>,
    mid_checkpoint: S<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawExpect {
    agreement: S<bool>,
    all_committed: S<bool>,
    deadline_ms: S<u64>,
    view_at_least: S<u64>,
    view_at_most: S<u64>,
    evidence_against: S<Vec<u64>>,
    violation: S<bool>,
    checkpoint_at_least: S<u64>,
    min_throughput_fraction: S<f64>,
    or_primary_replaced: S<bool>,
    max_memory_kb: S<u64>,
    max_rss_kb: S<u64>,
    #[serde(default)]
    at: Vec<Spanned<RawAt>>,
    #[serde(default)]
    no_progress: Vec<Spanned<RawWindow>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAt {
    at_ms: S<u64>,
    view_at_least: S<u64>,
    view_at_most: S<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWindow {
    from_ms: S<u64>,
    until_ms: S<u64>,
}

/// Reads and validates a scenario file.
pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
    let src = std::fs::read_to_string(path).map_err(|e| ScenarioError {
        file: path.to_path_buf(),
        line: None,
        reason: format!("cannot read the file: {e}"),
    })?;
    parse(path, &src)
}

/// Parses and validates scenario text; `file` names it in errors.
pub fn parse(file: &Path, src: &str) -> Result<Scenario, ScenarioError> {
    let raw: RawFile = toml::from_str(src)
        .map_err(|e| ScenarioError::at(file, src, e.span().map(|s| s.start), clean(e.message())))?;
    Checker { file, src }.scenario(raw)
}

/// toml's messages end with a newline and sometimes quote serde's type names.
fn clean(msg: &str) -> String {
    msg.trim().replace('\n', "; ")
}

struct Checker<'a> {
    file: &'a Path,
    src: &'a str,
}

impl Checker<'_> {
    fn err<T>(&self, offset: Option<usize>, reason: impl Into<String>) -> Result<T, ScenarioError> {
        Err(ScenarioError::at(
            self.file,
            self.src,
            offset,
            reason.into(),
        ))
    }

    /// The value of an optional key, or its default.
    fn or<T: Clone>(v: &S<T>, default: T) -> T {
        v.as_ref().map_or(default, |s| s.get_ref().clone())
    }

    fn pos<T>(v: &S<T>) -> Option<usize> {
        v.as_ref().map(|s| s.span().start)
    }

    fn at_least(
        &self,
        v: &S<u64>,
        key: &str,
        min: u64,
        default: u64,
    ) -> Result<u64, ScenarioError> {
        let x = Self::or(v, default);
        if x < min {
            return self.err(Self::pos(v), format!("{key} = {x}: must be at least {min}"));
        }
        Ok(x)
    }

    fn rate(&self, v: &S<f64>, key: &str, default: f64) -> Result<f64, ScenarioError> {
        let x = Self::or(v, default);
        if !(0.0..=1.0).contains(&x) {
            return self.err(
                Self::pos(v),
                format!("{key} = {x}: must be between 0 and 1"),
            );
        }
        Ok(x)
    }

    fn node(&self, v: &S<u64>, n: usize, what: &str, table: usize) -> Result<u32, ScenarioError> {
        let Some(s) = v else {
            return self.err(Some(table), format!("{what} needs a `node`"));
        };
        let id = *s.get_ref();
        if id >= n as u64 {
            return self.err(
                Some(s.span().start),
                format!("{what}: node {id} does not exist (validators are 0..{n}, n = {n})"),
            );
        }
        Ok(id as u32)
    }

    fn scenario(&self, raw: RawFile) -> Result<Scenario, ScenarioError> {
        let name = raw.name.get_ref().trim().to_string();
        if name.is_empty() {
            return self.err(Some(raw.name.span().start), "name must not be empty");
        }
        let c = &raw.cluster;
        let validators = self.at_least(&c.validators, "validators", 0, 4)? as usize;
        if validators < 4 {
            return self.err(
                Self::pos(&c.validators),
                format!(
                    "validators = {validators}: PBFT needs n >= 3f+1 = 4 to tolerate even one traitor"
                ),
            );
        }
        let storage = match c.storage.as_ref().map(|s| s.get_ref().as_str()) {
            None | Some("memory") => StorageKind::Memory,
            Some("rocksdb") => StorageKind::RocksDb,
            Some(other) => {
                return self.err(
                    Self::pos(&c.storage),
                    format!("storage = {other:?}: expected \"memory\" or \"rocksdb\""),
                )
            }
        };
        let cluster = Cluster {
            validators,
            checkpoint_interval: self.at_least(
                &c.checkpoint_interval,
                "checkpoint_interval",
                1,
                16,
            )?,
            batch_size: self.at_least(&c.batch_size, "batch_size", 1, 32)? as usize,
            view_timeout_ms: self.at_least(&c.view_timeout_ms, "view_timeout_ms", 1, 400)?,
            storage,
        };
        let n = validators;
        let f = cluster.f();

        let nw = &raw.network;
        let network = Network {
            min_delay_ms: Self::or(&nw.min_delay_ms, 1),
            max_delay_ms: Self::or(&nw.max_delay_ms, 10),
            drop_rate: self.rate(&nw.drop_rate, "drop_rate", 0.0)?,
            duplicate_rate: self.rate(&nw.duplicate_rate, "duplicate_rate", 0.0)?,
        };
        if network.min_delay_ms > network.max_delay_ms {
            let at = Self::pos(&nw.min_delay_ms).or(Self::pos(&nw.max_delay_ms));
            return self.err(
                at,
                format!(
                    "min_delay_ms = {} is greater than max_delay_ms = {}",
                    network.min_delay_ms, network.max_delay_ms
                ),
            );
        }

        let w = &raw.workload;
        let workload = Workload {
            clients: self.at_least(&w.clients, "clients", 1, 4)? as usize,
            requests: Self::or(&w.requests, 100) as usize,
            invalid_signatures: Self::or(&w.invalid_signatures, 0) as usize,
            replays: Self::or(&w.replays, 0) as usize,
            overdrafts: Self::or(&w.overdrafts, 0) as usize,
            concurrency: self.at_least(&w.concurrency, "concurrency", 1, 4)? as usize,
            think_ms: Self::or(&w.think_ms, 0),
            balance: self.at_least(&w.balance, "balance", 1, 1_000_000)?,
            op_bytes: Self::or(&w.op_bytes, 0) as usize,
        };
        let max_op = Limits::default().max_op_bytes;
        if workload.op_bytes > max_op {
            return self.err(
                Self::pos(&w.op_bytes),
                format!(
                    "op_bytes = {}: at most {max_op}, the largest operation a validator decodes",
                    workload.op_bytes
                ),
            );
        }

        let e = &raw.expect;
        let violation = Self::or(&e.violation, false);
        let deadline_ms = self.at_least(&e.deadline_ms, "deadline_ms", 1, 30_000)?;

        let mut traitors = Vec::new();
        for t in &raw.traitor {
            let table = t.span().start;
            let t = t.get_ref();
            let node = self.node(&t.node, n, "[[traitor]]", table)?;
            let Some(b) = &t.behavior else {
                return self.err(Some(table), "[[traitor]] needs a `behavior`");
            };
            let behavior = Behavior::ALL
                .into_iter()
                .find(|x| x.name() == b.get_ref())
                .map_or_else(
                    || {
                        self.err(
                            Some(b.span().start),
                            format!(
                                "unknown behavior {:?}; valid behaviours are: {}",
                                b.get_ref(),
                                Behavior::valid_names()
                            ),
                        )
                    },
                    Ok,
                )?;
            let (from_ms, until_ms) = self.window(&t.from_ms, &t.until_ms)?;
            traitors.push(TraitorEntry {
                node,
                behavior,
                from_ms,
                until_ms,
            });
        }
        let mut ids: Vec<u32> = traitors.iter().map(|t| t.node).collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.len() > f && !violation {
            let at = raw.traitor.last().map(|t| t.span().start);
            return self.err(
                at,
                format!(
                    "{} traitors ({ids:?}) but n = {n} tolerates only f = {f}; a scenario beyond the fault model must say `violation = true` in [expect]",
                    ids.len()
                ),
            );
        }

        let strangers = self.strangers(&raw.stranger)?;
        let faults = self.faults(&raw.fault, n, deadline_ms)?;

        let agreement = Self::or(&e.agreement, !violation);
        if violation && agreement {
            return self.err(
                Self::pos(&e.agreement),
                "agreement = true contradicts violation = true: beyond the fault model agreement is expected to break",
            );
        }
        let mut evidence_against = Vec::new();
        if let Some(list) = &e.evidence_against {
            for id in list.get_ref() {
                if *id >= n as u64 {
                    return self.err(
                        Some(list.span().start),
                        format!(
                            "evidence_against: node {id} does not exist (validators are 0..{n})"
                        ),
                    );
                }
                evidence_against.push(*id as u32);
            }
        }
        let view_at_least = e.view_at_least.as_ref().map(|v| *v.get_ref());
        let view_at_most = e.view_at_most.as_ref().map(|v| *v.get_ref());
        if let (Some(lo), Some(hi)) = (view_at_least, view_at_most) {
            if lo > hi {
                return self.err(
                    Self::pos(&e.view_at_most),
                    format!("view_at_most = {hi} is below view_at_least = {lo}"),
                );
            }
        }
        let min_throughput_fraction = match &e.min_throughput_fraction {
            Some(_) => {
                Some(self.rate(&e.min_throughput_fraction, "min_throughput_fraction", 0.0)?)
            }
            None => None,
        };
        let or_primary_replaced = Self::or(&e.or_primary_replaced, false);
        if or_primary_replaced && min_throughput_fraction.is_none() {
            return self.err(
                Self::pos(&e.or_primary_replaced),
                "or_primary_replaced needs min_throughput_fraction",
            );
        }
        let mut at = Vec::new();
        for a in &e.at {
            let table = a.span().start;
            let a = a.get_ref();
            let Some(t) = &a.at_ms else {
                return self.err(Some(table), "[[expect.at]] needs `at_ms`");
            };
            if *t.get_ref() > deadline_ms {
                return self.err(
                    Some(t.span().start),
                    format!(
                        "at_ms = {} is after deadline_ms = {deadline_ms}",
                        t.get_ref()
                    ),
                );
            }
            at.push(AtCheck {
                at_ms: *t.get_ref(),
                view_at_least: a.view_at_least.as_ref().map(|v| *v.get_ref()),
                view_at_most: a.view_at_most.as_ref().map(|v| *v.get_ref()),
            });
        }
        let mut no_progress = Vec::new();
        for wnd in &e.no_progress {
            let table = wnd.span().start;
            let wnd = wnd.get_ref();
            let (Some(from), Some(until)) = (&wnd.from_ms, &wnd.until_ms) else {
                return self.err(
                    Some(table),
                    "[[expect.no_progress]] needs `from_ms` and `until_ms`",
                );
            };
            let (a, b) = (*from.get_ref(), *until.get_ref());
            if b < a {
                return self.err(
                    Some(until.span().start),
                    format!(
                        "until_ms = {b} is before from_ms = {a}: the window ends before it starts"
                    ),
                );
            }
            if b > deadline_ms {
                return self.err(
                    Some(until.span().start),
                    format!("until_ms = {b} is after deadline_ms = {deadline_ms}"),
                );
            }
            no_progress.push(Window {
                from_ms: a,
                until_ms: b,
            });
        }
        let expect = Expect {
            agreement,
            all_committed: Self::or(&e.all_committed, !violation),
            deadline_ms,
            view_at_least,
            view_at_most,
            evidence_against,
            violation,
            checkpoint_at_least: e.checkpoint_at_least.as_ref().map(|v| *v.get_ref()),
            min_throughput_fraction,
            or_primary_replaced,
            max_memory_kb: e.max_memory_kb.as_ref().map(|v| *v.get_ref()),
            max_rss_kb: e.max_rss_kb.as_ref().map(|v| *v.get_ref()),
            at,
            no_progress,
        };
        let optional = |v: &S<u64>, key: &str| match v {
            Some(_) => self.at_least(v, key, 1, 1).map(Some),
            None => Ok(None),
        };
        let node = NodeLimits {
            max_clients: optional(&raw.node.max_clients, "max_clients")?,
            max_clients_per_ip: optional(&raw.node.max_clients_per_ip, "max_clients_per_ip")?,
            client_frame_timeout_ms: optional(
                &raw.node.client_frame_timeout_ms,
                "client_frame_timeout_ms",
            )?,
        };
        Ok(Scenario {
            file: self.file.to_path_buf(),
            name,
            description: raw.description.unwrap_or_default().trim().to_string(),
            seed: raw.seed.map(|s| s.into_inner()),
            cluster,
            network,
            workload,
            traitors,
            strangers,
            faults,
            node,
            expect,
        })
    }

    /// An active window: `from_ms` (default 0) and `until_ms` (default none), which
    /// must not end before it starts.
    fn window(&self, from: &S<u64>, until: &S<u64>) -> Result<(u64, Option<u64>), ScenarioError> {
        let from_ms = Self::or(from, 0);
        let until_ms = until.as_ref().map(|u| *u.get_ref());
        if let Some(u) = until_ms {
            if u < from_ms {
                return self.err(
                    Self::pos(until),
                    format!(
                        "until_ms = {u} is before from_ms = {from_ms}: the window ends before it starts"
                    ),
                );
            }
        }
        Ok((from_ms, until_ms))
    }

    fn strangers(&self, raw: &[Spanned<RawStranger>]) -> Result<Vec<StrangerEntry>, ScenarioError> {
        let mut out = Vec::new();
        for t in raw {
            let table = t.span().start;
            let t = t.get_ref();
            let Some(b) = &t.behavior else {
                return self.err(Some(table), "[[stranger]] needs a `behavior`");
            };
            let Some(behavior) = StrangerBehavior::ALL
                .into_iter()
                .find(|x| x.name() == b.get_ref())
            else {
                return self.err(
                    Some(b.span().start),
                    format!(
                        "unknown stranger behavior {:?}; valid stranger behaviours are: {}",
                        b.get_ref(),
                        StrangerBehavior::valid_names()
                    ),
                );
            };
            let (from_ms, until_ms) = self.window(&t.from_ms, &t.until_ms)?;
            let count = Self::or(&t.count, 1);
            if !(1..=64).contains(&count) {
                return self.err(
                    Self::pos(&t.count),
                    format!("count = {count}: 1 to 64 strangers per table"),
                );
            }
            out.push(StrangerEntry {
                behavior,
                from_ms,
                until_ms,
                count: count as u32,
            });
        }
        Ok(out)
    }

    fn faults(
        &self,
        raw: &[Spanned<RawFault>],
        n: usize,
        deadline_ms: u64,
    ) -> Result<Vec<FaultEntry>, ScenarioError> {
        let mut out: Vec<(FaultEntry, usize)> = Vec::new();
        for sf in raw {
            let table = sf.span().start;
            let f = sf.get_ref();
            let Some(at) = &f.at_ms else {
                return self.err(Some(table), "[[fault]] needs `at_ms`");
            };
            let at_ms = *at.get_ref();
            if at_ms >= deadline_ms {
                return self.err(
                    Some(at.span().start),
                    format!("at_ms = {at_ms} is not before deadline_ms = {deadline_ms}: the fault would never happen"),
                );
            }
            let Some(action) = &f.action else {
                return self.err(Some(table), "[[fault]] needs an `action`");
            };
            let a = action.get_ref().as_str();
            const ACTIONS: [&str; 5] = ["crash", "restart", "partition", "heal", "isolate"];
            if !ACTIONS.contains(&a) {
                return self.err(
                    Some(action.span().start),
                    format!(
                        "unknown action {a:?}; valid actions are: {}",
                        ACTIONS.join(", ")
                    ),
                );
            }
            // keys that only some actions take
            let only = |key: &str, present: bool, allowed: &[&str]| -> Result<(), ScenarioError> {
                if present && !allowed.contains(&a) {
                    return self.err(
                        Some(table),
                        format!(
                            "[[fault]] action {a:?} takes no `{key}` (only {})",
                            allowed.join(", ")
                        ),
                    );
                }
                Ok(())
            };
            only("node", f.node.is_some(), &["crash", "restart", "isolate"])?;
            only("disk", f.disk.is_some(), &["restart"])?;
            only("groups", f.groups.is_some(), &["partition"])?;
            only("mid_checkpoint", f.mid_checkpoint.is_some(), &["crash"])?;
            let what = format!("[[fault]] {a}");
            let kind = match a {
                "crash" => FaultKind::Crash {
                    node: self.node(&f.node, n, &what, table)?,
                    mid_checkpoint: Self::or(&f.mid_checkpoint, false),
                },
                "restart" => {
                    let wipe = match f.disk.as_ref().map(|d| d.get_ref().as_str()) {
                        None | Some("keep") => false,
                        Some("wipe") => true,
                        Some(other) => {
                            return self.err(
                                Self::pos(&f.disk),
                                format!("disk = {other:?}: expected \"keep\" or \"wipe\""),
                            )
                        }
                    };
                    FaultKind::Restart {
                        node: self.node(&f.node, n, &what, table)?,
                        wipe,
                    }
                }
                "isolate" => FaultKind::Isolate {
                    node: self.node(&f.node, n, &what, table)?,
                },
                "heal" => FaultKind::Heal,
                "partition" => {
                    let Some(g) = &f.groups else {
                        return self.err(Some(table), "[[fault]] partition needs `groups`, e.g. groups = [[0, 1], [2, 3]]");
                    };
                    let mut seen = vec![false; n];
                    let mut groups = Vec::new();
                    for grp in g.get_ref() {
                        let mut ids = Vec::new();
                        for id in grp {
                            let Some(s) = seen.get_mut(*id as usize).filter(|_| *id < n as u64) else {
                                return self.err(
                                    Some(g.span().start),
                                    format!("groups: node {id} does not exist (validators are 0..{n})"),
                                );
                            };
                            if *s {
                                return self.err(Some(g.span().start), format!("groups: node {id} is in two groups"));
                            }
                            *s = true;
                            ids.push(*id as u32);
                        }
                        groups.push(ids);
                    }
                    if groups.len() < 2 {
                        return self.err(Some(g.span().start), "groups: a partition needs at least two groups");
                    }
                    FaultKind::Partition { groups }
                }
                other => {
                    return self.err(
                        Some(action.span().start),
                        format!("unknown action {other:?}; valid actions are: crash, restart, partition, heal, isolate"),
                    )
                }
            };
            out.push((
                FaultEntry {
                    at_ms,
                    action: kind,
                },
                table,
            ));
        }
        out.sort_by_key(|(f, _)| f.at_ms);
        // a restart needs a crashed node; a crash needs a running one
        let mut down = vec![false; n];
        for (f, table) in &out {
            match &f.action {
                FaultKind::Crash { node, .. } => {
                    if down[*node as usize] {
                        return self.err(
                            Some(*table),
                            format!("crash of node {node} at {} ms: it is already down", f.at_ms),
                        );
                    }
                    down[*node as usize] = true;
                }
                FaultKind::Restart { node, .. } => {
                    if !down[*node as usize] {
                        return self.err(
                            Some(*table),
                            format!("restart of node {node} at {} ms: it was never crashed before (add a crash fault first)", f.at_ms),
                        );
                    }
                    down[*node as usize] = false;
                }
                _ => {}
            }
        }
        Ok(out.into_iter().map(|(f, _)| f).collect())
    }
}
