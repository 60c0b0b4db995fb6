//! The deterministic simulator: n replicas, clients and ledgers in one thread, driven by
//! an event queue in simulated time. Every random choice (delays, drops, duplicates,
//! client amounts, traitor choices) comes from one seeded generator, and every map is
//! ordered, so the same configuration and seed give the same run, event for event.

use crate::checker::Checker;
use crate::client::{Kind, Outstanding, SimClient};
use crate::config::{FaultAction, SimConfig, Storage};
use crate::report::{ReplicaReport, Report};
use pbft_crypto::{Digest, Hasher, Keypair, PublicKey};
use pbft_executor::snapshot::inspect_chunks;
use pbft_executor::{
    ConsensusLog, ExecRequest, Executor, MemoryExecutor, RocksExecutor, RocksOptions,
};
use pbft_protocol::envelope::{self, Limits};
use pbft_protocol::{
    Action, Config, Duration, Instant, Message, Replica, ReplicaId, Verifier, WalRecord,
};
use pbft_traitor::{Dest, Payload, Traitor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::rc::Rc;

/// A network address in the simulation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Addr {
    /// A validator.
    Replica(ReplicaId),
    /// A client, by index.
    Client(usize),
}

#[derive(Clone, Debug)]
enum Event {
    Deliver {
        from: Addr,
        to: Addr,
        bytes: Rc<Vec<u8>>,
    },
    ReplicaTimer(ReplicaId),
    ClientTimer(usize),
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

/// Largest snapshot accepted from a peer, in chunks.
const MAX_CHUNKS: u32 = 1 << 16;
/// Snapshot chunk size, bytes.
const CHUNK_BYTES: usize = 64 << 10;

struct Host {
    key: Keypair,
    replica: Option<Replica>,
    /// The consensus log (in memory), or its RocksDB store.
    wal: Vec<WalRecord>,
    log: Option<ConsensusLog>,
    /// None while a RocksDB-backed validator is down.
    ledger: Option<Box<dyn Executor>>,
    /// RocksDB mode: this validator's data directory.
    dir: Option<PathBuf>,
    traitors: Vec<(Traitor, u64, u64)>,
    timer_at: Option<Instant>,
    /// Snapshot chunks being received, by (sender, checkpoint).
    incoming: BTreeMap<(ReplicaId, u64), Vec<Option<Vec<u8>>>>,
    /// The last complete snapshot offered to the replica, installed if it approves.
    offered: Option<(u64, Vec<Vec<u8>>)>,
    /// Requests this ledger executed (not as duplicates), with how often.
    applications: BTreeMap<(PublicKey, u64), u32>,
    /// Highest checkpoint installed by state transfer (history below it is not local).
    installed_at: u64,
    /// A crash is armed for the middle of this validator's next checkpoint.
    crash_at_checkpoint: bool,
    /// How often the process died.
    crashes: u32,
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
    /// Messages rejected by decoding or verification, by reason.
    pub rejected: BTreeMap<&'static str, u64>,
    /// Batches executed by honest replicas.
    pub batches: u64,
    /// Requests executed by honest replicas (including duplicates).
    pub requests_executed: u64,
    /// Most log slots any honest replica held at once (bounded by the log window).
    pub peak_log_slots: u64,
    /// Most requests any honest replica held waiting for execution at once.
    pub peak_waiting_requests: u64,
    /// Most bytes of incomplete snapshot transfers any honest validator buffered at once.
    pub peak_snapshot_buffer_bytes: u64,
}

/// A simulation in progress.
pub struct Simulation {
    cfg: SimConfig,
    pcfg: Config,
    now: Instant,
    rng: ChaCha20Rng,
    queue: BTreeMap<(Instant, u64), Event>,
    counter: u64,
    hosts: Vec<Host>,
    clients: Vec<SimClient>,
    client_index: BTreeMap<PublicKey, usize>,
    verifier: Verifier,
    groups: Option<Vec<usize>>,
    isolated: BTreeSet<ReplicaId>,
    checker: Checker,
    trace: Hasher,
    limits: Limits,
    /// Counters.
    pub stats: Stats,
    all_committed_at: Option<Instant>,
    genesis: BTreeMap<PublicKey, u64>,
    _tmp: Option<tempfile::TempDir>,
    faults_applied: usize,
    probes: Vec<Option<crate::report::Probe>>,
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
        let share = |total: usize, i: usize| {
            total / w.clients.max(1) + usize::from(i < total % w.clients.max(1))
        };
        let mut clients = Vec::new();
        for (i, key) in client_keys.into_iter().enumerate() {
            let targets: Vec<PublicKey> = (1..w.clients.max(2))
                .map(|d| accounts[(i + d) % accounts.len()])
                .collect();
            let mut amount_rng = ChaCha20Rng::seed_from_u64(cfg.seed ^ (0x9e37_79b9 + i as u64));
            clients.push(SimClient::new(
                i,
                key,
                &targets,
                share(w.requests, i),
                share(w.overdrafts, i),
                share(w.invalid_signatures, i),
                share(w.replays, i),
                w.balance,
                move || amount_rng.gen_range(1..=100),
            ));
        }
        let client_index = clients.iter().map(|c| (c.public(), c.index)).collect();

        let mut hosts = Vec::new();
        for (i, key) in keys.into_iter().enumerate() {
            let traitors = cfg
                .traitors
                .iter()
                .filter(|t| t.node as usize == i)
                .map(|t| {
                    let seed = rng.gen::<u64>();
                    let accomplices: Vec<ReplicaId> = cfg
                        .traitors
                        .iter()
                        .map(|o| o.node)
                        .filter(|o| *o != t.node)
                        .collect();
                    (
                        Traitor::new(t.behavior, i as ReplicaId, key.clone(), pcfg.clone(), seed)
                            .with_accomplices(accomplices),
                        t.from_ms,
                        t.until_ms,
                    )
                })
                .collect();
            let replica = Replica::new(pcfg.clone(), i as ReplicaId, key.clone()).ok();
            hosts.push(Host {
                key,
                replica,
                wal: Vec::new(),
                log: None,
                ledger: None,
                dir: None,
                traitors,
                timer_at: None,
                incoming: BTreeMap::new(),
                offered: None,
                applications: BTreeMap::new(),
                installed_at: 0,
                crash_at_checkpoint: false,
                crashes: 0,
            });
        }
        let tmp = match cfg.storage {
            Storage::Memory => None,
            Storage::RocksDb => tempfile::Builder::new().prefix("pbft-sim-").tempdir().ok(),
        };
        for (i, h) in hosts.iter_mut().enumerate() {
            h.dir = tmp
                .as_ref()
                .map(|t| t.path().join(format!("validator-{i}")));
        }
        let honest = (0..n).map(|i| !cfg.is_traitor(i as ReplicaId)).collect();
        let verifier = if cfg.verify_signatures {
            Verifier::new(publics)
        } else {
            Verifier::signers_only_for_benchmarks(publics)
        };
        let checker = Checker::new(honest, cfg.verify_signatures);
        let mut sim = Simulation {
            pcfg,
            now: Instant::ZERO,
            rng,
            queue: BTreeMap::new(),
            counter: 0,
            hosts,
            clients,
            client_index,
            verifier,
            groups: None,
            isolated: BTreeSet::new(),
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
            sim.open_storage(i as ReplicaId);
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
        for i in 0..n {
            sim.arm_replica_timer(i as ReplicaId);
        }
        sim
    }

    /// Opens (or creates) validator `r`'s ledger and consensus log; in RocksDB mode this
    /// reloads what the validator persisted before a crash.
    fn open_storage(&mut self, r: ReplicaId) {
        let i = r as usize;
        let Some(dir) = self.hosts[i].dir.clone() else {
            let h = &mut self.hosts[i];
            if h.ledger.is_none() {
                h.ledger = Some(Box::new(MemoryExecutor::genesis(&self.genesis)));
            }
            return;
        };
        let opened =
            RocksExecutor::open(&dir.join("ledger"), &self.genesis, RocksOptions::default())
                .and_then(|l| Ok((l, ConsensusLog::open(&dir.join("wal"), false)?)))
                .and_then(|(l, log)| Ok((l, log.load()?, log)));
        match opened {
            Ok((ledger, records, log)) => {
                let h = &mut self.hosts[i];
                h.wal = records
                    .iter()
                    .filter_map(|(_, bytes)| postcard::from_bytes::<WalRecord>(bytes).ok())
                    .collect();
                h.ledger = Some(Box::new(ledger));
                h.log = Some(log);
            }
            Err(e) => self.checker.on_halt(r, format!("cannot open storage: {e}")),
        }
    }

    fn schedule(&mut self, at: Instant, e: Event) {
        self.counter += 1;
        self.queue.insert((at.max(self.now), self.counter), e);
    }

    /// Runs to the deadline (or until done, if configured) and reports.
    pub fn run(mut self) -> Report {
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

    fn done(&self) -> bool {
        // never before every scripted fault has happened
        if self.faults_applied < self.cfg.faults.len() || !self.clients.iter().all(|c| c.done()) {
            return false;
        }
        // and every live honest replica has caught up with the others
        let live: Vec<&Replica> = self
            .hosts
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.cfg.is_traitor(*i as ReplicaId))
            .filter_map(|(_, h)| h.replica.as_ref())
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
                let (fa, ta) = (addr_code(from), addr_code(to));
                self.trace_event(b"deliver", fa, ta, &bytes);
                match to {
                    Addr::Replica(r) => self.deliver_to_replica(from, r, &bytes),
                    Addr::Client(c) => self.deliver_to_client(from, c, &bytes),
                }
            }
            Event::ReplicaTimer(r) => {
                self.trace_event(b"timer", u64::from(r), 0, &[]);
                let h = &mut self.hosts[r as usize];
                h.timer_at = None;
                let now = self.now;
                if let Some(rep) = h.replica.as_mut() {
                    if rep.next_timeout().is_some_and(|t| t <= now) {
                        rep.on_timeout(now);
                        self.drain(r);
                    }
                }
                self.arm_replica_timer(r);
            }
            Event::ClientTimer(c) => {
                self.trace_event(b"client", c as u64, 0, &[]);
                self.clients[c].timer_at = None;
                self.client_tick(c);
            }
            Event::Fault(i) => {
                self.trace_event(b"fault", i as u64, 0, &[]);
                self.apply_fault(i);
            }
            Event::Probe(_) => {}
        }
    }

    /// The honest, running validators now.
    fn probe(&self) -> crate::report::Probe {
        let live: Vec<&Replica> = self
            .hosts
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.cfg.is_traitor(*i as ReplicaId))
            .filter_map(|(_, h)| h.replica.as_ref())
            .collect();
        crate::report::Probe {
            at_ms: self.now.as_millis(),
            min_view: live.iter().map(|r| r.view()).min().unwrap_or(0),
            max_view: live.iter().map(|r| r.view()).max().unwrap_or(0),
            min_executed: live.iter().map(|r| r.last_executed()).min().unwrap_or(0),
            max_executed: live.iter().map(|r| r.last_executed()).max().unwrap_or(0),
        }
    }

    /// Records the peak of what an honest validator holds in memory.
    fn sample_memory(&mut self, r: ReplicaId) {
        if self.cfg.is_traitor(r) {
            return;
        }
        let h = &self.hosts[r as usize];
        if let Some(rep) = h.replica.as_ref() {
            let st = &mut self.stats;
            st.peak_log_slots = st.peak_log_slots.max(rep.log_len() as u64);
            st.peak_waiting_requests = st.peak_waiting_requests.max(rep.waiting_requests() as u64);
        }
        let buffered: usize = h.incoming.values().flatten().flatten().map(Vec::len).sum();
        let st = &mut self.stats;
        st.peak_snapshot_buffer_bytes = st.peak_snapshot_buffer_bytes.max(buffered as u64);
    }

    // ------------------------------------------------------------------ network

    fn reachable(&self, a: Addr, b: Addr) -> bool {
        let alive = |x: Addr| match x {
            Addr::Replica(r) => self.hosts[r as usize].replica.is_some(),
            Addr::Client(_) => true,
        };
        if !alive(a) || !alive(b) {
            return false;
        }
        let iso = |x: Addr| matches!(x, Addr::Replica(r) if self.isolated.contains(&r));
        if iso(a) || iso(b) {
            return false;
        }
        if let (Some(g), Addr::Replica(x), Addr::Replica(y)) = (&self.groups, a, b) {
            if g[x as usize] != g[y as usize] {
                return false;
            }
        }
        true
    }

    fn transmit(&mut self, from: Addr, to: Addr, bytes: Rc<Vec<u8>>, extra: Duration) {
        if from == to {
            return;
        }
        self.stats.messages += 1;
        let net = self.cfg.network.clone();
        if !self.reachable(from, to)
            || (net.drop_rate > 0.0 && self.rng.gen_bool(net.drop_rate.min(1.0)))
        {
            self.stats.dropped += 1;
            return;
        }
        let copies = if net.duplicate_rate > 0.0 && self.rng.gen_bool(net.duplicate_rate.min(1.0)) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let lo = net.min_delay_ms * 1000;
            let hi = (net.max_delay_ms * 1000).max(lo);
            let delay = self.rng.gen_range(lo..=hi);
            let at = self.now.plus(Duration::from_micros(delay)).plus(extra);
            self.schedule(
                at,
                Event::Deliver {
                    from,
                    to,
                    bytes: bytes.clone(),
                },
            );
        }
    }

    /// Sends what replica `r` wants to send, through its traitor if one is active.
    fn outgoing(&mut self, r: ReplicaId, dest: Dest, msg: Message) {
        let now = self.now;
        let now_ms = now.as_millis();
        let host = &mut self.hosts[r as usize];
        let mut outs = vec![pbft_traitor::Outgoing {
            dest,
            payload: Payload::Message(msg),
            delay: Duration::ZERO,
        }];
        for (t, from, until) in host.traitors.iter_mut() {
            if now_ms < *from || now_ms >= *until {
                continue;
            }
            let mut next = Vec::new();
            for o in outs {
                match o.payload {
                    Payload::Message(m) => {
                        for mut x in t.mutate(o.dest, m, now) {
                            x.delay += o.delay;
                            next.push(x);
                        }
                    }
                    Payload::Raw(_) => next.push(o),
                }
            }
            outs = next;
        }
        for o in outs {
            self.send_out(r, o);
        }
    }

    /// Encodes one outgoing message once and puts it on the network.
    fn send_out(&mut self, r: ReplicaId, o: pbft_traitor::Outgoing) {
        let bytes = Rc::new(match o.payload {
            Payload::Message(m) => envelope::encode(&m),
            Payload::Raw(b) => b,
        });
        let from = Addr::Replica(r);
        match o.dest {
            Dest::Replica(to) => self.transmit(from, Addr::Replica(to), bytes, o.delay),
            Dest::AllReplicas => {
                for to in 0..self.hosts.len() as ReplicaId {
                    if to != r {
                        self.transmit(from, Addr::Replica(to), bytes.clone(), o.delay);
                    }
                }
            }
            Dest::Client(pk) => {
                if let Some(c) = self.client_index.get(&pk).copied() {
                    self.transmit(from, Addr::Client(c), bytes, o.delay);
                }
            }
        }
    }

    /// Lets the active traitors of replica `r` see an incoming message (scripted actors
    /// act on what they receive). Returns whether the replica itself gets the message.
    fn observe(&mut self, r: ReplicaId, sender: ReplicaId, msg: &Message) -> bool {
        let now = self.now;
        let now_ms = now.as_millis();
        let mut deliver = true;
        let mut sends = Vec::new();
        for (t, from, until) in self.hosts[r as usize].traitors.iter_mut() {
            if now_ms < *from || now_ms >= *until {
                continue;
            }
            let (outs, d) = t.observe(sender, msg, now);
            deliver &= d;
            sends.extend(outs);
        }
        for o in sends {
            self.send_out(r, o);
        }
        deliver
    }

    fn reject(&mut self, reason: &'static str) {
        *self.stats.rejected.entry(reason).or_insert(0) += 1;
    }

    fn deliver_to_replica(&mut self, from: Addr, r: ReplicaId, bytes: &[u8]) {
        if self.hosts[r as usize].replica.is_none() {
            return;
        }
        let msg = match envelope::decode(bytes, &self.limits) {
            Ok(m) => m,
            Err(e) => return self.reject(e.reason()),
        };
        let now = self.now;
        match from {
            Addr::Client(_) => {
                let Message::Request(req) = msg else {
                    return self.reject("client sent a non-request");
                };
                match self.verifier.verify_request(req) {
                    Ok(v) => {
                        if let Some(rep) = self.hosts[r as usize].replica.as_mut() {
                            rep.on_request(v, now);
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
                if !self.observe(r, sender, verified.message()) {
                    self.drain(r);
                    self.arm_replica_timer(r);
                    return;
                }
                if let Message::StateChunk {
                    seq,
                    index,
                    total,
                    data,
                } = verified.message()
                {
                    self.on_chunk(r, sender, *seq, *index, *total, data);
                } else if let Some(rep) = self.hosts[r as usize].replica.as_mut() {
                    rep.on_message(verified, now);
                }
            }
        }
        self.drain(r);
        self.arm_replica_timer(r);
        self.sample_memory(r);
    }

    /// Assembles snapshot chunks; a complete snapshot's digest is offered to the
    /// replica, which decides whether it matches the stable-checkpoint proof.
    fn on_chunk(
        &mut self,
        r: ReplicaId,
        sender: ReplicaId,
        seq: u64,
        index: u32,
        total: u32,
        data: &[u8],
    ) {
        if total == 0 || total > MAX_CHUNKS || index >= total {
            return self.reject("bad snapshot chunk");
        }
        let h = &mut self.hosts[r as usize];
        let parts = h
            .incoming
            .entry((sender, seq))
            .or_insert_with(|| vec![None; total as usize]);
        if parts.len() != total as usize {
            h.incoming.remove(&(sender, seq));
            return self.reject("bad snapshot chunk");
        }
        parts[index as usize] = Some(data.to_vec());
        if parts.iter().any(|p| p.is_none()) {
            return;
        }
        let chunks: Vec<Vec<u8>> = h
            .incoming
            .remove(&(sender, seq))
            .unwrap_or_default()
            .into_iter()
            .flatten()
            .collect();
        // a snapshot that does not even decode gets a digest no proof can match
        let digest = match inspect_chunks(seq, &chunks) {
            Ok(v) => v.checkpoint_digest,
            Err(_) => Digest::of_parts(&[b"undecodable snapshot", &seq.to_le_bytes()]),
        };
        h.offered = Some((seq, chunks));
        let now = self.now;
        if let Some(rep) = h.replica.as_mut() {
            rep.on_state_offer(sender, seq, digest, now);
        }
    }

    fn deliver_to_client(&mut self, from: Addr, c: usize, bytes: &[u8]) {
        let Addr::Replica(sender) = from else {
            return;
        };
        let Ok(Message::Reply(reply)) = envelope::decode(bytes, &self.limits) else {
            return self.reject("client got a non-reply");
        };
        if reply.body.replica != sender || reply.body.client != self.clients[c].public() {
            return self.reject("reply from the wrong sender");
        }
        if self.cfg.verify_signatures {
            let key = self.pcfg.validators[sender as usize];
            if reply.verify(&key).is_err() {
                return self.reject("bad reply signature");
            }
        }
        let f = self.pcfg.f() as usize;
        let now = self.now;
        if let Some((rid, acc)) = self.clients[c].on_reply(&reply.body, f, now) {
            let pk = self.clients[c].public();
            self.checker.on_accept(pk, rid, acc.result.clone(), acc.seq);
            self.maybe_replay(c);
            self.client_send_more(c);
            self.check_all_committed();
        }
    }

    // ------------------------------------------------------------------ replicas

    fn arm_replica_timer(&mut self, r: ReplicaId) {
        let h = &self.hosts[r as usize];
        let Some(t) = h.replica.as_ref().and_then(|rep| rep.next_timeout()) else {
            return;
        };
        if h.timer_at.is_some_and(|at| at <= t) {
            return;
        }
        self.hosts[r as usize].timer_at = Some(t);
        self.schedule(t, Event::ReplicaTimer(r));
    }

    /// Performs every action replica `r` has queued, feeding results back in.
    fn drain(&mut self, r: ReplicaId) {
        let i = r as usize;
        let honest = !self.cfg.is_traitor(r);
        while let Some(action) = self.hosts[i]
            .replica
            .as_mut()
            .and_then(|rep| rep.poll_action())
        {
            let now = self.now;
            match action {
                Action::Send { to, msg } => self.outgoing(r, Dest::Replica(to), msg),
                Action::Broadcast { msg } => self.outgoing(r, Dest::AllReplicas, msg),
                Action::Reply { client, reply } => {
                    self.outgoing(r, Dest::Client(client), Message::Reply(reply))
                }
                Action::Persist(rec) => {
                    let h = &mut self.hosts[i];
                    if let Some(log) = h.log.as_mut() {
                        let bytes = postcard::to_allocvec(&rec).unwrap_or_default();
                        if let Err(e) = log.append(&[(rec.obsolete_at(), bytes)]) {
                            self.checker
                                .on_halt(r, format!("consensus log append failed: {e}"));
                        }
                    }
                    self.hosts[i].wal.push(rec);
                }
                Action::Execute {
                    seq, digest, batch, ..
                } => {
                    self.checker.on_execute(now, r, seq, digest, &batch);
                    if honest {
                        self.stats.batches += 1;
                        self.stats.requests_executed += batch.requests.len() as u64;
                    }
                    let k = self.pcfg.checkpoint_interval;
                    let h = &mut self.hosts[i];
                    let Some(ledger) = h.ledger.as_mut() else {
                        continue;
                    };
                    let requests: Vec<ExecRequest<'_>> = batch
                        .requests
                        .iter()
                        .map(|q| ExecRequest {
                            client: &q.body.client,
                            request_id: q.body.request_id,
                            op: &q.body.op,
                        })
                        .collect();
                    let applied = match ledger.apply(seq, digest, &requests) {
                        Ok(a) => a,
                        Err(e) => {
                            self.checker
                                .on_halt(r, format!("executor failed at {seq}: {e}"));
                            continue;
                        }
                    };
                    for (q, entry) in batch.requests.iter().zip(&applied.entries) {
                        if matches!(entry, pbft_executor::Entry::Executed(_)) {
                            *h.applications.entry(q.key()).or_insert(0) += 1;
                        }
                    }
                    if seq.is_multiple_of(k) && h.crash_at_checkpoint {
                        // the batch is on disk, the checkpoint is not: the process dies
                        h.crash_at_checkpoint = false;
                        tracing::info!(seq, replica = r, "crash in the middle of a checkpoint");
                        self.crash(r);
                        return;
                    }
                    let state_digest = if seq.is_multiple_of(k) {
                        match ledger.checkpoint() {
                            Ok(d) => Some(d),
                            Err(e) => {
                                self.checker
                                    .on_halt(r, format!("checkpoint {seq} failed: {e}"));
                                continue;
                            }
                        }
                    } else {
                        None
                    };
                    let replies = batch
                        .requests
                        .iter()
                        .zip(applied.replies)
                        .map(|(q, result)| pbft_protocol::ExecutedRequest {
                            client: q.body.client,
                            request_id: q.body.request_id,
                            result,
                        })
                        .collect();
                    let result = pbft_protocol::ExecutionResult {
                        replies,
                        state_digest,
                    };
                    if let Some(rep) = h.replica.as_mut() {
                        rep.on_executed(seq, result, now);
                    }
                }
                Action::StableCheckpoint { seq, .. } => {
                    let h = &mut self.hosts[i];
                    // a replica behind this checkpoint has no snapshot of it yet: it will
                    // install one by state transfer
                    if let Some(l) = h.ledger.as_mut() {
                        let _ = l.stable(seq);
                    }
                    if let Some(log) = h.log.as_mut() {
                        if let Err(e) = log.compact(seq) {
                            self.checker
                                .on_halt(r, format!("consensus log compaction failed: {e}"));
                        }
                    }
                    h.wal
                        .retain(|rec| rec.obsolete_at().is_none_or(|s| s > seq));
                    // records of old views, dropped as the node drops them; with a
                    // RocksDB log, decided from what the log holds, and `wal` becomes
                    // what is left of it
                    match h.log.as_mut() {
                        Some(log) => match log.drop_superseded(false, WalRecord::superseded) {
                            Ok(kept) => h.wal = kept,
                            Err(e) => self
                                .checker
                                .on_halt(r, format!("consensus log pruning failed: {e}")),
                        },
                        None => {
                            let mut superseded = WalRecord::superseded(&h.wal).into_iter();
                            h.wal.retain(|_| !superseded.next().unwrap_or(false));
                        }
                    }
                }
                Action::FetchState { seq, peer, .. } => {
                    let bytes = Rc::new(envelope::encode(&Message::StateRequest { seq }));
                    self.transmit(Addr::Replica(r), Addr::Replica(peer), bytes, Duration::ZERO);
                }
                Action::InstallState { seq, digest } => {
                    let h = &mut self.hosts[i];
                    let Some((s, chunks)) = h.offered.take() else {
                        continue;
                    };
                    if s != seq {
                        continue;
                    }
                    let Some(ledger) = h.ledger.as_mut() else {
                        continue;
                    };
                    match ledger.import(seq, digest, &chunks) {
                        // the installed state's checkpoint digest is the proven one
                        Ok(_) => {
                            h.installed_at = h.installed_at.max(seq);
                            self.checker.on_install(now, r, seq);
                            if let Some(rep) = self.hosts[i].replica.as_mut() {
                                rep.on_state_transferred(seq, digest, now);
                            }
                        }
                        Err(e) => self
                            .checker
                            .on_halt(r, format!("approved snapshot {seq} failed to install: {e}")),
                    }
                }
                Action::ServeState { to, seq } => {
                    let exported = self.hosts[i]
                        .ledger
                        .as_ref()
                        .map(|l| l.export(seq, CHUNK_BYTES));
                    if let Some(Ok(chunks)) = exported {
                        let total = chunks.len() as u32;
                        for (index, data) in chunks.into_iter().enumerate() {
                            let msg = Message::StateChunk {
                                seq,
                                index: index as u32,
                                total,
                                data,
                            };
                            self.outgoing(r, Dest::Replica(to), msg);
                        }
                    }
                }
                Action::Evidence { .. } => {}
                Action::Halt { reason } => self.checker.on_halt(r, reason),
            }
        }
    }

    fn apply_fault(&mut self, idx: usize) {
        let Some(fault) = self.cfg.faults.get(idx).cloned() else {
            return;
        };
        self.faults_applied += 1;
        tracing::info!(at_ms = self.now.as_millis(), ?fault.action, "fault");
        match fault.action {
            FaultAction::Crash(r) => self.crash(r),
            FaultAction::CrashMidCheckpoint(r) => {
                if let Some(h) = self.hosts.get_mut(r as usize) {
                    h.crash_at_checkpoint = h.replica.is_some();
                }
            }
            FaultAction::Restart { node, wipe } => {
                let i = node as usize;
                if self.hosts[i].replica.is_some() {
                    return;
                }
                if wipe {
                    let h = &mut self.hosts[i];
                    h.wal.clear();
                    h.ledger = None;
                    h.log = None;
                    if let Some(dir) = &h.dir {
                        let _ = std::fs::remove_dir_all(dir);
                    }
                    h.applications.clear();
                    h.installed_at = 0;
                    self.checker.on_wipe(node);
                }
                self.open_storage(node);
                let h = &mut self.hosts[i];
                let Some(executed) = h.ledger.as_ref().map(|l| l.head().height) else {
                    return;
                };
                h.replica = Replica::restore(
                    self.pcfg.clone(),
                    node,
                    h.key.clone(),
                    &h.wal,
                    executed,
                    self.now,
                )
                .ok();
                self.drain(node);
                self.arm_replica_timer(node);
            }
            FaultAction::Partition(groups) => {
                let mut g = vec![usize::MAX; self.hosts.len()];
                for (gi, members) in groups.iter().enumerate() {
                    for m in members {
                        if let Some(x) = g.get_mut(*m as usize) {
                            *x = gi;
                        }
                    }
                }
                self.groups = Some(g);
            }
            FaultAction::Isolate(r) => {
                self.isolated.insert(r);
            }
            FaultAction::Heal => {
                self.groups = None;
                self.isolated.clear();
            }
        }
    }

    /// The process of validator `r` dies: volatile state is lost, the disk stays.
    fn crash(&mut self, r: ReplicaId) {
        let h = &mut self.hosts[r as usize];
        h.crashes += u32::from(h.replica.is_some());
        h.replica = None;
        h.timer_at = None;
        h.incoming.clear();
        h.offered = None;
        h.crash_at_checkpoint = false;
        if h.dir.is_some() {
            // the process dies: its database handles go with it
            h.ledger = None;
            h.log = None;
        }
    }

    // ------------------------------------------------------------------ clients

    /// A client waits T/4 before it sends a request to every validator: soon enough
    /// that backups learn of a request the primary sits on while their ordering
    /// deadline (T/2) can still replace it before T.
    fn client_retry(&self) -> Duration {
        Duration::from_millis((self.cfg.view_timeout_ms / 4).max(1))
    }

    fn client_tick(&mut self, c: usize) {
        let now = self.now;
        let retry = self.client_retry();
        let n = self.hosts.len() as ReplicaId;
        // retransmit to everyone what has waited too long
        let due: Vec<_> = self.clients[c]
            .outstanding
            .values_mut()
            .filter(|o| o.last_sent.plus(retry) <= now)
            .map(|o| {
                o.last_sent = now;
                o.planned.request.clone()
            })
            .collect();
        for req in due {
            let bytes = Rc::new(envelope::encode(&Message::Request(req)));
            for r in 0..n {
                self.transmit(
                    Addr::Client(c),
                    Addr::Replica(r),
                    bytes.clone(),
                    Duration::ZERO,
                );
            }
        }
        self.client_send_more(c);
        self.arm_client_timer(c);
    }

    /// One timer per client, at the earliest of its next retransmission and, if it
    /// has room for another request, its next send.
    fn arm_client_timer(&mut self, c: usize) {
        let retry = self.client_retry();
        let concurrency = self.cfg.workload.concurrency.max(1);
        let client = &self.clients[c];
        let retry_at = client
            .outstanding
            .values()
            .map(|o| o.last_sent.plus(retry))
            .min();
        let send_at = (!client.plan.is_empty() && client.outstanding.len() < concurrency)
            .then(|| client.next_send_at.max(self.now));
        let next = [retry_at, send_at].into_iter().flatten().min();
        if let Some(t) = next {
            if self.clients[c].timer_at.is_none_or(|at| at > t) {
                self.clients[c].timer_at = Some(t);
                self.schedule(t, Event::ClientTimer(c));
            }
        }
    }

    fn client_send_more(&mut self, c: usize) {
        let now = self.now;
        let n = self.hosts.len();
        let concurrency = self.cfg.workload.concurrency.max(1);
        let think = Duration::from_millis(self.cfg.workload.think_ms);
        while self.clients[c].outstanding.len() < concurrency {
            // a client pauses between requests, so that load continues through time
            // (its timer wakes it at `next_send_at`)
            if now < self.clients[c].next_send_at {
                break;
            }
            self.clients[c].next_send_at = now.plus(think);
            let Some(planned) = self.clients[c].plan.pop_front() else {
                break;
            };
            let bytes = Rc::new(envelope::encode(&Message::Request(planned.request.clone())));
            if planned.kind == Kind::InvalidSignature {
                // sent to every validator once; it must never execute
                for r in 0..n as ReplicaId {
                    self.transmit(
                        Addr::Client(c),
                        Addr::Replica(r),
                        bytes.clone(),
                        Duration::ZERO,
                    );
                }
                continue;
            }
            let primary = (self.clients[c].view % n as u64) as ReplicaId;
            self.transmit(
                Addr::Client(c),
                Addr::Replica(primary),
                bytes,
                Duration::ZERO,
            );
            let rid = planned.request.body.request_id;
            self.clients[c].outstanding.insert(
                rid,
                Outstanding {
                    planned,
                    first_sent: now,
                    last_sent: now,
                    replies: BTreeMap::new(),
                },
            );
        }
        self.arm_client_timer(c);
    }

    /// After an acceptance, a client with replays left re-sends an old accepted request.
    fn maybe_replay(&mut self, c: usize) {
        let client = &mut self.clients[c];
        if client.replays_left == 0 || !client.accepted.len().is_multiple_of(2) {
            return;
        }
        if client.accepted.is_empty() {
            return;
        }
        // pick an accepted request deterministically from the rng
        let ids: Vec<u64> = client.accepted.keys().copied().collect();
        let pick = ids[self.rng.gen_range(0..ids.len())];
        let client = &mut self.clients[c];
        client.replays_left -= 1;
        let Some(req) = client.accepted.get(&pick).map(|a| a.request.clone()) else {
            return;
        };
        let bytes = Rc::new(envelope::encode(&Message::Request(req)));
        for r in 0..self.hosts.len() as ReplicaId {
            self.transmit(
                Addr::Client(c),
                Addr::Replica(r),
                bytes.clone(),
                Duration::ZERO,
            );
        }
    }

    fn valid_requests(&self) -> usize {
        self.cfg.workload.requests + self.cfg.workload.overdrafts
    }

    fn accepted_count(&self) -> usize {
        self.clients.iter().map(|c| c.accepted.len()).sum()
    }

    fn check_all_committed(&mut self) {
        if self.all_committed_at.is_none() && self.accepted_count() >= self.valid_requests() {
            self.all_committed_at = Some(self.now);
        }
    }

    // ------------------------------------------------------------------ report

    fn finish(mut self) -> Report {
        let now = self.now;
        for i in 0..self.hosts.len() {
            if self.hosts[i].ledger.is_none() {
                self.open_storage(i as ReplicaId);
            }
        }
        let ledgers: Vec<crate::checker::LedgerView<'_>> = self
            .hosts
            .iter()
            .enumerate()
            .filter_map(|(i, h)| {
                Some(crate::checker::LedgerView {
                    node: i as ReplicaId,
                    ledger: h.ledger.as_deref()?,
                    applications: &h.applications,
                    installed_at: h.installed_at,
                })
            })
            .collect();
        self.checker.finish(now, &ledgers);
        let replicas = self
            .hosts
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let id = i as ReplicaId;
                let traitor = self
                    .cfg
                    .traitors
                    .iter()
                    .find(|t| t.node == id)
                    .map(|t| t.behavior);
                let rep = h.replica.as_ref();
                ReplicaReport {
                    id,
                    traitor,
                    crashed: rep.is_none(),
                    crashes: h.crashes,
                    wiped: self.cfg.faults.iter().any(|f| {
                        matches!(f.action, FaultAction::Restart { node, wipe: true } if node == id)
                    }),
                    view: rep.map_or(0, |r| r.view()),
                    last_executed: h.ledger.as_ref().map_or(0, |l| l.head().height),
                    stable_checkpoint: rep.map_or(0, |r| r.stable_checkpoint()),
                    head: h.ledger.as_ref().map_or(Digest::ZERO, |l| l.head().hash),
                    evidence_against: rep
                        .map_or_else(Vec::new, |r| r.evidence().keys().copied().collect()),
                    halted: rep.and_then(|r| r.halted().map(str::to_string)),
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
                c.outstanding
                    .iter()
                    .map(move |(rid, o)| crate::report::Stuck {
                        client: c.index,
                        request_id: *rid,
                        replies: o
                            .replies
                            .iter()
                            .map(|(r, (res, _))| (*r, Digest::of(res)))
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
                p.unwrap_or(crate::report::Probe {
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
        }
    }
}

fn addr_code(a: Addr) -> u64 {
    match a {
        Addr::Replica(r) => u64::from(r),
        Addr::Client(c) => (1 << 32) + c as u64,
    }
}
