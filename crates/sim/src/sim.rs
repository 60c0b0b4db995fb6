//! The deterministic simulator: n validators (each the node's own host), clients and a
//! network in one thread, driven by an event queue in simulated time. Every random
//! choice (delays, drops, duplicates, client amounts, traitor choices) comes from one
//! seeded generator, and every map is ordered, so the same configuration and seed give
//! the same run, event for event.
//!
//! The concerns live in their own modules: [`crate::network`] (who reaches whom, and
//! how messages fare), [`crate::validators`] (the hosts: start, crash, restart, inputs
//! and effects), [`crate::clients`] (the workload), [`crate::faults`] (the scripted
//! faults) and [`crate::report`] (the end-of-run report).

use crate::checker::Checker;
use crate::client::SimClient;
use crate::config::{SimConfig, Storage};
use crate::network::{Addr, Network};
use crate::validators::Validator;
use bytes::Bytes;
use pbft_crypto::{Digest, Hasher, Keypair, PublicKey};
use pbft_protocol::envelope::Limits;
use pbft_protocol::{ClientKeys, Config, Duration, Instant, ReplicaId, Verifier};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use std::collections::BTreeMap;

/// Something that happens at a point in simulated time.
#[derive(Clone, Debug)]
pub(crate) enum Event {
    Deliver { from: Addr, to: Addr, bytes: Bytes },
    ReplicaTimer(ReplicaId),
    ClientTimer(usize),
    StrangerTimer(usize),
    Fault(usize),
    Probe(usize),
}

/// The key of validator `i` in simulations (derived, so runs are reproducible).
pub fn validator_key(i: usize) -> Keypair {
    let seed = Digest::of_parts(&[b"pbft-sim validator", &(i as u64).to_le_bytes()]);
    Keypair::from_seed(&seed.0).unwrap_or_else(|_| fallback_key(i as u64 + 1_000))
}

/// The key of client `i` in simulations.
pub fn client_key(i: usize) -> Keypair {
    let seed = Digest::of_parts(&[b"pbft-sim client", &(i as u64).to_le_bytes()]);
    Keypair::from_seed(&seed.0).unwrap_or_else(|_| fallback_key(i as u64 + 2_000))
}

fn fallback_key(n: u64) -> Keypair {
    // A derived seed giving a weak key is practically impossible; try the next one.
    let mut k = n;
    loop {
        let seed = Digest::of_parts(&[b"pbft-sim fallback", &k.to_le_bytes()]);
        if let Ok(kp) = Keypair::from_seed(&seed.0) {
            return kp;
        }
        k += 1;
    }
}

/// Counters of a run.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Events processed.
    pub events: u64,
    /// Messages put on the network.
    pub messages: u64,
    /// Messages dropped by the network (loss, partitions, crashed peers).
    pub dropped: u64,
    /// Messages rejected by decoding, verification or the host, by reason.
    pub rejected: BTreeMap<&'static str, u64>,
    /// Batches executed by honest replicas.
    pub batches: u64,
    /// Requests executed by honest replicas (including duplicates).
    pub requests_executed: u64,
    /// Most log slots any honest replica held at once (bounded by the log window).
    pub peak_log_slots: u64,
    /// Most requests any honest replica held waiting for execution at once.
    pub peak_waiting_requests: u64,
    /// Most bytes of snapshot any honest validator held for state transfer at once.
    pub peak_snapshot_buffer_bytes: u64,
    /// The largest snapshot an honest validator installed by state transfer, bytes.
    pub largest_snapshot_bytes: u64,
    /// Replies clients did not count because they bind another request than the one
    /// they have in flight under that id (the answers to a reused id).
    pub other_request_replies: u64,
}

/// A simulation in progress.
pub struct Simulation {
    pub(crate) cfg: SimConfig,
    pub(crate) pcfg: Config,
    pub(crate) now: Instant,
    pub(crate) rng: ChaCha20Rng,
    queue: BTreeMap<(Instant, u64), Event>,
    counter: u64,
    pub(crate) validators: Vec<Validator>,
    pub(crate) clients: Vec<SimClient>,
    pub(crate) client_index: BTreeMap<PublicKey, usize>,
    pub(crate) strangers: Vec<crate::strangers::SimStranger>,
    pub(crate) verifier: Verifier,
    pub(crate) network: Network,
    pub(crate) checker: Checker,
    pub(crate) trace: Hasher,
    pub(crate) limits: Limits,
    /// Counters.
    pub stats: Stats,
    pub(crate) all_committed_at: Option<Instant>,
    pub(crate) genesis: BTreeMap<PublicKey, u64>,
    _tmp: Option<tempfile::TempDir>,
    pub(crate) faults_applied: usize,
    pub(crate) probes: Vec<Option<crate::report::Probe>>,
}

impl Simulation {
    /// Builds a simulation from its configuration.
    pub fn new(cfg: SimConfig) -> Simulation {
        let n = cfg.validators;
        let keys: Vec<Keypair> = (0..n).map(validator_key).collect();
        let publics: Vec<PublicKey> = keys.iter().map(|k| k.public()).collect();
        let mut pcfg = Config::new(publics.clone());
        pcfg.checkpoint_interval = cfg.checkpoint_interval.max(1);
        pcfg.log_window = 2 * pcfg.checkpoint_interval;
        pcfg.max_batch = cfg.batch_size.max(1);
        pcfg.pipeline_depth = pcfg.log_window.min(8);
        pcfg.view_timeout = Duration::from_millis(cfg.view_timeout_ms.max(1));
        pcfg.retransmit_interval = Duration::from_millis((cfg.view_timeout_ms / 4).max(1));
        let mut rng = ChaCha20Rng::seed_from_u64(cfg.seed);

        let w = &cfg.workload;
        let client_keys: Vec<Keypair> = (0..w.clients).map(client_key).collect();
        let accounts: Vec<PublicKey> = client_keys.iter().map(|k| k.public()).collect();
        let genesis: BTreeMap<PublicKey, u64> = accounts.iter().map(|a| (*a, w.balance)).collect();
        // only the accounts may submit, as in a cluster file
        pcfg.clients = ClientKeys::listed(accounts.iter().copied());
        let share = |total: usize, i: usize| {
            total / w.clients.max(1) + usize::from(i < total % w.clients.max(1))
        };
        let mut clients = Vec::new();
        for (i, key) in client_keys.into_iter().enumerate() {
            let core = match Simulation::client_core(&cfg, &pcfg) {
                Ok(core) => core,
                Err(e) => {
                    // only a cluster without validators gets here: no client can run,
                    // and the report shows nothing committed
                    tracing::error!(error = %e, "the simulated clients cannot run");
                    break;
                }
            };
            let targets: Vec<PublicKey> = (1..w.clients.max(2))
                .map(|d| accounts[(i + d) % accounts.len()])
                .collect();
            let mut amount_rng = ChaCha20Rng::seed_from_u64(cfg.seed ^ (0x9e37_79b9 + i as u64));
            clients.push(SimClient::new(
                i,
                key,
                core,
                &targets,
                share(w.requests, i),
                share(w.overdrafts, i),
                share(w.invalid_signatures, i),
                share(w.replays, i),
                w.balance,
                w.op_bytes,
                move || amount_rng.gen_range(1..=100),
            ));
        }
        let client_index = clients.iter().map(|c| (c.public(), c.index)).collect();

        let tmp = match cfg.storage {
            Storage::Memory => None,
            Storage::RocksDb => tempfile::Builder::new().prefix("pbft-sim-").tempdir().ok(),
        };
        let validators = keys
            .into_iter()
            .enumerate()
            .map(|(i, key)| Validator {
                key,
                host: None,
                disk: None,
                dir: tmp
                    .as_ref()
                    .map(|t| t.path().join(format!("validator-{i}"))),
                traitor_seeds: cfg
                    .traitors
                    .iter()
                    .filter(|t| t.node as usize == i)
                    .map(|_| rng.gen::<u64>())
                    .collect(),
                timer_at: None,
                applications: BTreeMap::new(),
                installed_at: 0,
                crashes: 0,
                broken: false,
                lost_log: false,
            })
            .collect();
        let honest = (0..n).map(|i| !cfg.is_traitor(i as ReplicaId)).collect();
        let verifier = if cfg.verify_signatures {
            Verifier::for_config(&pcfg)
        } else {
            Verifier::signers_only_for_benchmarks(publics).with_clients(pcfg.clients.clone())
        };
        let checker = Checker::new(honest, cfg.verify_signatures);
        let mut sim = Simulation {
            pcfg,
            now: Instant::ZERO,
            rng,
            queue: BTreeMap::new(),
            counter: 0,
            validators,
            clients,
            client_index,
            strangers: Vec::new(),
            verifier,
            network: Network::new(cfg.network.clone()),
            checker,
            trace: Hasher::new(),
            limits: Limits::default(),
            stats: Stats::default(),
            all_committed_at: None,
            genesis,
            _tmp: tmp,
            faults_applied: 0,
            probes: Vec::new(),
            cfg,
        };
        sim.probes = vec![None; sim.cfg.probes_ms.len()];
        for i in 0..n {
            sim.start(i as ReplicaId);
        }
        for (i, f) in sim.cfg.faults.clone().iter().enumerate() {
            sim.schedule(Instant(f.at_ms * 1000), Event::Fault(i));
        }
        for (i, at) in sim.cfg.probes_ms.clone().iter().enumerate() {
            sim.schedule(Instant(at * 1000), Event::Probe(i));
        }
        for c in 0..sim.clients.len() {
            let start = Instant(sim.rng.gen_range(0..5_000));
            sim.schedule(start, Event::ClientTimer(c));
        }
        sim.strangers = sim
            .cfg
            .strangers
            .iter()
            .cloned()
            .map(crate::strangers::SimStranger::new)
            .collect();
        sim.start_strangers();
        sim
    }

    pub(crate) fn schedule(&mut self, at: Instant, e: Event) {
        self.counter += 1;
        self.queue.insert((at.max(self.now), self.counter), e);
    }

    /// Runs to the deadline (or until done, if configured) and reports.
    pub fn run(mut self) -> crate::Report {
        let deadline = Instant(self.cfg.deadline_ms * 1000);
        while let Some(((at, _), event)) = self.queue.pop_first() {
            if at > deadline {
                break;
            }
            self.now = at;
            if let Event::Probe(i) = event {
                // an observation, not part of the run: not counted, not traced
                let p = self.probe();
                if let Some(slot) = self.probes.get_mut(i) {
                    *slot = Some(p);
                }
                continue;
            }
            self.stats.events += 1;
            self.step(event);
            if self.cfg.stop_when_done && self.done() {
                break;
            }
        }
        self.finish()
    }

    /// The honest validators whose process is up.
    pub(crate) fn live_honest(&self) -> impl Iterator<Item = &pbft_protocol::Replica> {
        self.validators
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.cfg.is_traitor(*i as ReplicaId))
            .filter_map(|(_, v)| v.host.as_ref())
            .map(|h| h.replica())
    }

    fn done(&self) -> bool {
        // never before every scripted fault has happened
        if self.faults_applied < self.cfg.faults.len() || !self.clients.iter().all(|c| c.done()) {
            return false;
        }
        // and every live honest replica has caught up with the others
        let live: Vec<_> = self
            .live_honest()
            .filter(|r| r.halted().is_none())
            .collect();
        let Some(max) = live.iter().map(|r| r.last_executed()).max() else {
            return true;
        };
        live.iter()
            .all(|r| r.last_executed() == max && !r.is_fetching_state())
    }

    fn trace_event(&mut self, tag: &[u8], a: u64, b: u64, bytes: &[u8]) {
        self.trace.update(&self.now.0.to_le_bytes());
        self.trace.update(tag);
        self.trace.update(&a.to_le_bytes());
        self.trace.update(&b.to_le_bytes());
        self.trace.update(Digest::of(bytes).as_bytes());
    }

    fn step(&mut self, event: Event) {
        match event {
            Event::Deliver { from, to, bytes } => {
                self.trace_event(b"deliver", from.code(), to.code(), &bytes);
                match to {
                    Addr::Replica(r) => self.deliver_to_replica(from, r, &bytes),
                    Addr::Client(c) => self.deliver_to_client(from, c, &bytes),
                    Addr::Stranger(k) => self.deliver_to_stranger(from, k, &bytes),
                }
            }
            Event::ReplicaTimer(r) => {
                self.trace_event(b"timer", u64::from(r), 0, &[]);
                self.replica_timer(r);
            }
            Event::ClientTimer(c) => {
                self.trace_event(b"client", c as u64, 0, &[]);
                self.client_tick(c);
            }
            Event::StrangerTimer(k) => {
                self.trace_event(b"stranger", k as u64, 0, &[]);
                self.stranger_tick(k);
            }
            Event::Fault(i) => {
                self.trace_event(b"fault", i as u64, 0, &[]);
                self.apply_fault(i);
            }
            Event::Probe(_) => {}
        }
    }

    /// The honest, running validators now.
    pub(crate) fn probe(&self) -> crate::report::Probe {
        let live: Vec<_> = self.live_honest().collect();
        crate::report::Probe {
            at_ms: self.now.as_millis(),
            min_view: live.iter().map(|r| r.view()).min().unwrap_or(0),
            max_view: live.iter().map(|r| r.view()).max().unwrap_or(0),
            min_executed: live.iter().map(|r| r.last_executed()).min().unwrap_or(0),
            max_executed: live.iter().map(|r| r.last_executed()).max().unwrap_or(0),
        }
    }

    /// Puts a message on the network.
    pub(crate) fn transmit(&mut self, from: Addr, to: Addr, bytes: Bytes) {
        if from == to {
            return;
        }
        self.stats.messages += 1;
        let up = |x: Addr| match x {
            Addr::Replica(r) => self.validators[r as usize].host.is_some(),
            Addr::Client(_) | Addr::Stranger(_) => true,
        };
        if !up(from) || !up(to) || !self.network.reachable(from, to) {
            self.stats.dropped += 1;
            return;
        }
        let arrivals = self.network.fate(&mut self.rng, self.now);
        if arrivals.is_empty() {
            self.stats.dropped += 1;
        }
        for at in arrivals {
            let bytes = bytes.clone();
            self.schedule(at, Event::Deliver { from, to, bytes });
        }
    }

    pub(crate) fn reject(&mut self, reason: &'static str) {
        *self.stats.rejected.entry(reason).or_insert(0) += 1;
    }
}
