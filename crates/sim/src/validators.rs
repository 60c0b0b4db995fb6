//! The simulated validators: each is the node's own host (`pbft-host`) on an in-memory
//! or RocksDB ledger and consensus log, with scripted fault hooks (`pbft-faults`). This
//! module opens, crashes and restarts them, feeds them what the network delivers, and
//! carries their effects out to the network, the checkers and the counters.

use crate::network::Addr;
use crate::sim::{Event, Simulation};
use pbft_crypto::{Keypair, PublicKey};
use pbft_executor::{
    ConsensusLog, Executor, MemoryExecutor, MemoryLog, RecordLog, RocksExecutor, RocksOptions,
};
use pbft_faults::{Scripted, TraitorWindow};
use pbft_host::{first_executions, Effect, Host, HostOptions};
use pbft_protocol::{Dest, Instant, ReplicaId, Seq};
use pbft_traitor::Traitor;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// A simulated validator's host.
pub type SimHost = Host<Box<dyn Executor>, Box<dyn RecordLog>, Scripted>;

/// A validator's storage while its process is down.
pub(crate) type Disk = (Box<dyn Executor>, Box<dyn RecordLog>);

/// One simulated validator: a process (its host) that may be down, and its disk.
pub(crate) struct Validator {
    pub key: Keypair,
    /// The running process; `None` while it is down.
    pub host: Option<SimHost>,
    /// In memory mode, the storage of a process that is down (the "disk" survives
    /// a crash). RocksDB mode reopens it from `dir`.
    pub disk: Option<Disk>,
    /// RocksDB mode: this validator's data directory.
    pub dir: Option<PathBuf>,
    /// The seeds of this validator's traitor behaviours, so that a restarted process
    /// starts them afresh the way a restarted `pbft node` does.
    pub traitor_seeds: Vec<u64>,
    pub timer_at: Option<Instant>,
    /// Requests this ledger executed (not as duplicates), with how often.
    pub applications: BTreeMap<(PublicKey, u64), u32>,
    /// Highest checkpoint installed by state transfer (history below it is not local).
    pub installed_at: Seq,
    /// How often the process died.
    pub crashes: u32,
    /// Its storage failed to open: it stays down.
    pub broken: bool,
    /// Its disk was wiped since it last started: its next start recovers.
    pub lost_log: bool,
}

impl Simulation {
    /// The fault hooks of a freshly started process of validator `r`.
    pub(crate) fn hooks(&self, r: ReplicaId) -> Scripted {
        let n = self.cfg.validators as u32;
        let mut hooks = Scripted::new(r, n, u64::from(r) ^ self.cfg.seed);
        let specs = self.cfg.traitors.iter().filter(|t| t.node == r);
        for (spec, seed) in specs.zip(&self.validators[r as usize].traitor_seeds) {
            let accomplices: Vec<ReplicaId> = self
                .cfg
                .traitors
                .iter()
                .map(|o| o.node)
                .filter(|o| *o != r)
                .collect();
            let key = self.validators[r as usize].key.clone();
            let traitor = Traitor::new(spec.behavior, r, key, self.pcfg.clone(), *seed)
                .with_accomplices(accomplices);
            hooks = hooks.with_traitor(TraitorWindow {
                traitor,
                from_ms: spec.from_ms,
                until_ms: spec.until_ms,
            });
        }
        hooks
    }

    /// Validator `r`'s storage: kept from before a crash (memory mode), reopened from
    /// its directory (RocksDB mode), or new.
    pub(crate) fn open_disk(&mut self, r: ReplicaId) -> Option<Disk> {
        let v = &mut self.validators[r as usize];
        let Some(dir) = v.dir.clone() else {
            return Some(v.disk.take().unwrap_or_else(|| {
                (
                    Box::new(MemoryExecutor::genesis(&self.genesis)) as Box<dyn Executor>,
                    Box::new(MemoryLog::new()) as Box<dyn RecordLog>,
                )
            }));
        };
        let opened =
            RocksExecutor::open(&dir.join("ledger"), &self.genesis, RocksOptions::default())
                .and_then(|l| Ok((l, ConsensusLog::open(&dir.join("wal"), false)?)));
        match opened {
            Ok((ledger, log)) => Some((Box::new(ledger), Box::new(log))),
            Err(e) => {
                self.validators[r as usize].broken = true;
                self.checker.on_halt(r, format!("cannot open storage: {e}"));
                None
            }
        }
    }

    /// Starts validator `r`'s process on its disk.
    pub(crate) fn start(&mut self, r: ReplicaId) {
        let Some((ledger, log)) = self.open_disk(r) else {
            return;
        };
        let hooks = self.hooks(r);
        let v = &mut self.validators[r as usize];
        // an empty log that was not wiped never signed anything (every vote is logged
        // before it is sent); a wiped one recovers, with a nonce of its own per start
        let genesis = !std::mem::take(&mut v.lost_log);
        let recovery_nonce = self.cfg.seed ^ (u64::from(v.crashes) << 32) ^ u64::from(r);
        let opts = HostOptions {
            chunk_bytes: self.cfg.snapshot_chunk_bytes.max(1),
            check_invariants: self.cfg.check_invariants,
            genesis,
            recovery_nonce,
            ..HostOptions::default()
        };
        let key = self.validators[r as usize].key.clone();
        match Host::open(
            self.pcfg.clone(),
            r,
            key,
            ledger,
            log,
            hooks,
            opts,
            self.now,
        ) {
            Ok(host) => {
                self.validators[r as usize].host = Some(host);
                self.after_input(r);
            }
            Err(e) => {
                self.validators[r as usize].broken = true;
                self.checker.on_halt(r, format!("cannot restore: {e}"));
            }
        }
    }

    /// The process of validator `r` dies: volatile state is lost, the disk stays.
    pub(crate) fn crash(&mut self, r: ReplicaId) {
        let v = &mut self.validators[r as usize];
        let Some(host) = v.host.take() else {
            return;
        };
        v.crashes += 1;
        v.timer_at = None;
        let (ledger, log, _) = host.into_parts();
        // RocksDB mode: the process's database handles close with it
        if v.dir.is_none() {
            v.disk = Some((ledger, log));
        }
    }

    /// Validator `r` loses its disk (it must be down).
    pub(crate) fn wipe(&mut self, r: ReplicaId) {
        let v = &mut self.validators[r as usize];
        v.disk = None;
        if let Some(dir) = &v.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
        v.applications.clear();
        v.installed_at = 0;
        v.lost_log = true;
        self.checker.on_wipe(r);
    }

    /// After an input to validator `r`: its host performs the replica's actions, its
    /// effects go out, and its timer is re-armed.
    pub(crate) fn after_input(&mut self, r: ReplicaId) {
        let now = self.now;
        // as the node does: process, send what is queued, and go on while the host
        // paused before an expensive action
        loop {
            let Some(host) = self.validators[r as usize].host.as_mut() else {
                return;
            };
            host.process(now);
            let mut crashed = false;
            while let Some(effect) = self.validators[r as usize]
                .host
                .as_mut()
                .and_then(|h| h.poll_effect())
            {
                crashed |= matches!(effect, Effect::Crashed);
                self.effect(r, effect);
            }
            if crashed {
                tracing::info!(replica = r, "crash in the middle of a checkpoint");
                self.crash(r);
                return;
            }
            if !self.validators[r as usize]
                .host
                .as_ref()
                .is_some_and(|h| h.wants_process())
            {
                break;
            }
        }
        self.arm_replica_timer(r);
        self.sample_memory(r);
    }

    fn effect(&mut self, r: ReplicaId, effect: Effect) {
        let now = self.now;
        let honest = !self.cfg.is_traitor(r);
        match effect {
            Effect::Transmit { dest, bytes } => {
                let from = Addr::Replica(r);
                match dest {
                    Dest::Replica(to) => self.transmit(from, Addr::Replica(to), bytes),
                    Dest::AllReplicas => {
                        for to in 0..self.validators.len() as ReplicaId {
                            if to != r {
                                self.transmit(from, Addr::Replica(to), bytes.clone());
                            }
                        }
                    }
                    Dest::Client(pk) => {
                        // a stranger that signed with the key gets its replies too, as
                        // the connection its requests came on would
                        let strangers: Vec<usize> = (0..self.strangers.len())
                            .filter(|k| self.strangers[*k].speaks_for.contains(&pk))
                            .collect();
                        for k in strangers {
                            self.transmit(from, Addr::Stranger(k), bytes.clone());
                        }
                        if let Some(c) = self.client_index.get(&pk).copied() {
                            self.transmit(from, Addr::Client(c), bytes);
                        }
                    }
                }
            }
            Effect::Executed {
                seq,
                digest,
                batch,
                entries,
                ..
            } => {
                self.checker.on_execute(now, r, seq, digest, &batch);
                if honest {
                    self.stats.batches += 1;
                    self.stats.requests_executed += batch.requests.len() as u64;
                }
                let v = &mut self.validators[r as usize];
                for i in first_executions(&entries) {
                    if let Some(q) = batch.requests.get(i) {
                        *v.applications.entry(q.key()).or_insert(0) += 1;
                    }
                }
            }
            Effect::Installed { seq, bytes } => {
                if honest {
                    let st = &mut self.stats;
                    st.largest_snapshot_bytes = st.largest_snapshot_bytes.max(bytes as u64);
                }
                let v = &mut self.validators[r as usize];
                v.installed_at = v.installed_at.max(seq);
                self.checker.on_install(now, r, seq);
            }
            Effect::Evidence { .. } => {}
            Effect::Refused { reason, .. } => self.reject(reason),
            Effect::Halted { reason } => self.checker.on_halt(r, reason),
            Effect::Crashed => {}
        }
    }

    pub(crate) fn arm_replica_timer(&mut self, r: ReplicaId) {
        let v = &self.validators[r as usize];
        let Some(t) = v.host.as_ref().and_then(|h| h.next_timeout()) else {
            return;
        };
        if v.timer_at.is_some_and(|at| at <= t) {
            return;
        }
        self.validators[r as usize].timer_at = Some(t);
        self.schedule(t, Event::ReplicaTimer(r));
    }

    /// Validator `r`'s timer fired.
    pub(crate) fn replica_timer(&mut self, r: ReplicaId) {
        let now = self.now;
        let v = &mut self.validators[r as usize];
        v.timer_at = None;
        let Some(host) = v.host.as_mut() else {
            return;
        };
        if host.next_timeout().is_some_and(|t| t <= now) {
            host.handle_timeout(now);
            self.after_input(r);
        } else {
            self.arm_replica_timer(r);
        }
    }

    /// Records the peak of what an honest validator holds in memory.
    fn sample_memory(&mut self, r: ReplicaId) {
        if self.cfg.is_traitor(r) {
            return;
        }
        let Some(host) = self.validators[r as usize].host.as_ref() else {
            return;
        };
        let rep = host.replica();
        let st = &mut self.stats;
        st.peak_log_slots = st.peak_log_slots.max(rep.log_len() as u64);
        st.peak_waiting_requests = st.peak_waiting_requests.max(rep.waiting_requests() as u64);
        st.peak_snapshot_buffer_bytes = st
            .peak_snapshot_buffer_bytes
            .max(host.snapshot_buffer_bytes() as u64);
    }

    /// A message from the network for validator `r`.
    pub(crate) fn deliver_to_replica(&mut self, from: Addr, r: ReplicaId, bytes: &[u8]) {
        if self.validators[r as usize].host.is_none() {
            return;
        }
        let msg = match pbft_protocol::envelope::decode(bytes, &self.limits) {
            Ok(m) => m,
            Err(e) => return self.reject(e.reason()),
        };
        let now = self.now;
        match from {
            Addr::Client(_) | Addr::Stranger(_) => {
                let pbft_protocol::Message::Request(req) = msg else {
                    return self.reject("client sent a non-request");
                };
                match self.verifier.verify_request(req) {
                    Ok(v) => {
                        if let Some(h) = self.validators[r as usize].host.as_mut() {
                            // as on the node: a client's connections are bound to its
                            // account, a stranger's are anonymous
                            if matches!(from, Addr::Stranger(_)) {
                                h.handle_unproven_request(v, now);
                            } else {
                                h.handle_request(v, now);
                            }
                        }
                    }
                    Err(e) => return self.reject(e.reason()),
                }
            }
            Addr::Replica(sender) => {
                let verified = match self.verifier.verify(sender, msg) {
                    Ok(v) => v,
                    Err(e) => return self.reject(e.reason()),
                };
                if let Some(h) = self.validators[r as usize].host.as_mut() {
                    h.handle_message(verified, now);
                }
            }
        }
        self.after_input(r);
    }
}
