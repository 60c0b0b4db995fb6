//! The simulated network: addresses, partitions and isolation, and the fate of each
//! message (lost, delivered once or twice, after a delay drawn from the seed).

use crate::config::NetworkConfig;
use pbft_protocol::{Duration, Instant, ReplicaId};
use rand::Rng;
use rand_chacha::ChaCha20Rng;
use std::collections::BTreeSet;

/// A network address in the simulation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Addr {
    /// A validator.
    Replica(ReplicaId),
    /// A client, by index.
    Client(usize),
    /// A stranger ([`crate::StrangerSpec`]), by index: it reaches the validators as a
    /// client does.
    Stranger(usize),
}

impl Addr {
    /// A number naming the address in the run's trace.
    pub fn code(self) -> u64 {
        match self {
            Addr::Replica(r) => u64::from(r),
            Addr::Client(c) => (1 << 32) + c as u64,
            Addr::Stranger(k) => (2 << 32) + k as u64,
        }
    }
}

/// Who can reach whom, and how messages fare.
#[derive(Debug)]
pub struct Network {
    cfg: NetworkConfig,
    /// The group of each validator while a partition holds.
    groups: Option<Vec<usize>>,
    isolated: BTreeSet<ReplicaId>,
}

impl Network {
    /// A network with these background conditions and no partition.
    pub fn new(cfg: NetworkConfig) -> Network {
        Network {
            cfg,
            groups: None,
            isolated: BTreeSet::new(),
        }
    }

    /// Splits `n` validators into groups that cannot talk to each other (a validator
    /// in no group talks to nobody).
    pub fn partition(&mut self, n: usize, groups: &[Vec<ReplicaId>]) {
        let mut g = vec![usize::MAX; n];
        for (gi, members) in groups.iter().enumerate() {
            for m in members {
                if let Some(x) = g.get_mut(*m as usize) {
                    *x = gi;
                }
            }
        }
        self.groups = Some(g);
    }

    /// Cuts one validator off from everyone, clients included.
    pub fn isolate(&mut self, r: ReplicaId) {
        self.isolated.insert(r);
    }

    /// Undoes every partition and isolation.
    pub fn heal(&mut self) {
        self.groups = None;
        self.isolated.clear();
    }

    /// Whether a message from `a` can reach `b` (both being up).
    pub fn reachable(&self, a: Addr, b: Addr) -> bool {
        let iso = |x: Addr| matches!(x, Addr::Replica(r) if self.isolated.contains(&r));
        if iso(a) || iso(b) {
            return false;
        }
        if let (Some(g), Addr::Replica(x), Addr::Replica(y)) = (&self.groups, a, b) {
            if g.get(x as usize) != g.get(y as usize) {
                return false;
            }
        }
        true
    }

    /// When the copies of one message sent now arrive: none if it is lost, two if it is
    /// duplicated.
    pub fn fate(&self, rng: &mut ChaCha20Rng, now: Instant) -> Vec<Instant> {
        let net = &self.cfg;
        if net.drop_rate > 0.0 && rng.gen_bool(net.drop_rate.min(1.0)) {
            return Vec::new();
        }
        let copies = if net.duplicate_rate > 0.0 && rng.gen_bool(net.duplicate_rate.min(1.0)) {
            2
        } else {
            1
        };
        (0..copies)
            .map(|_| {
                let lo = net.min_delay_ms * 1000;
                let hi = (net.max_delay_ms * 1000).max(lo);
                now.plus(Duration::from_micros(rng.gen_range(lo..=hi)))
            })
            .collect()
    }
}
