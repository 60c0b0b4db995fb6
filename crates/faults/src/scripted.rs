//! The scripted fault hooks.

use crate::command::Command;
use pbft_host::{CrashPoint, Faults, Incoming};
use pbft_protocol::{Dest, Instant, Message, Outgoing, ReplicaId, Seq};
use pbft_traitor::Traitor;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};

/// A traitor behaviour active from `from_ms` (inclusive) to `until_ms` (exclusive), in
/// the host's time.
#[derive(Clone, Debug)]
pub struct TraitorWindow {
    /// The behaviour.
    pub traitor: Traitor,
    /// Start, ms.
    pub from_ms: u64,
    /// End, ms; `u64::MAX` for ever.
    pub until_ms: u64,
}

impl TraitorWindow {
    /// A traitor active for the whole run.
    pub fn always(traitor: Traitor) -> TraitorWindow {
        TraitorWindow {
            traitor,
            from_ms: 0,
            until_ms: u64::MAX,
        }
    }

    fn active(&self, now: Instant) -> bool {
        let ms = now.as_millis();
        self.from_ms <= ms && ms < self.until_ms
    }
}

/// A well-mixed, non-zero xorshift state from any seed (SplitMix64's finaliser), so
/// that nearby seeds such as validator ids give unrelated loss streams.
fn spread(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) | 1
}

/// What the control commands switch.
#[derive(Debug)]
struct Switches {
    traitor_on: bool,
    blocked: BTreeSet<u32>,
    drop: f64,
    duplicate: f64,
    crash_next_checkpoint: bool,
    /// xorshift64 state of the loss stream (fault injection needs no cryptographic
    /// randomness, only a reproducible one).
    rng: u64,
}

impl Switches {
    /// A uniform number in [0, 1).
    fn unit(&mut self) -> f64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }

    /// How many copies of a message to validator `to` go out: 0, 1 or 2.
    fn copies(&mut self, to: ReplicaId) -> usize {
        if self.blocked.contains(&to) {
            return 0;
        }
        if self.drop > 0.0 && self.unit() < self.drop {
            return 0;
        }
        if self.duplicate > 0.0 && self.unit() < self.duplicate {
            return 2;
        }
        1
    }

    fn filters(&self) -> bool {
        !self.blocked.is_empty() || self.drop > 0.0 || self.duplicate > 0.0
    }
}

/// A handle on a validator's switches, for its control endpoint (or a test): it can be
/// cloned and used from another thread.
#[derive(Clone, Debug)]
pub struct Switchboard(Arc<Mutex<Switches>>);

impl Switchboard {
    fn lock(&self) -> MutexGuard<'_, Switches> {
        match self.0.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Applies a control command (`Ping` changes nothing).
    pub fn apply(&self, cmd: &Command) {
        let mut s = self.lock();
        match cmd {
            Command::Ping => {}
            Command::Block(set) => {
                tracing::warn!(blocked = ?set, "fault injection: traffic with these validators is dropped");
                s.blocked = set.clone();
            }
            Command::Traitor(on) => {
                tracing::warn!(on, "fault injection: traitor behaviour switched");
                s.traitor_on = *on;
            }
            Command::Loss { drop, duplicate } => {
                tracing::warn!(
                    drop,
                    duplicate,
                    "fault injection: messages to validators are lost and duplicated at these rates"
                );
                s.drop = *drop;
                s.duplicate = *duplicate;
            }
            Command::CrashAtCheckpoint => {
                tracing::warn!("fault injection: the validator crashes inside its next checkpoint");
                s.crash_next_checkpoint = true;
            }
        }
    }
}

/// Scripted fault hooks for one validator.
#[derive(Debug)]
pub struct Scripted {
    id: ReplicaId,
    n: u32,
    traitors: Vec<TraitorWindow>,
    crash_at: Option<Seq>,
    switches: Switchboard,
}

impl Scripted {
    /// Hooks for validator `id` of `n` that change nothing until told to. `seed` seeds
    /// the loss stream.
    pub fn new(id: ReplicaId, n: u32, seed: u64) -> Scripted {
        Scripted {
            id,
            n,
            traitors: Vec::new(),
            crash_at: None,
            switches: Switchboard(Arc::new(Mutex::new(Switches {
                traitor_on: true,
                blocked: BTreeSet::new(),
                drop: 0.0,
                duplicate: 0.0,
                crash_next_checkpoint: false,
                rng: spread(seed),
            }))),
        }
    }

    /// Adds a traitor behaviour (several are applied in order, each to what the
    /// previous one sends).
    pub fn with_traitor(mut self, t: TraitorWindow) -> Scripted {
        self.traitors.push(t);
        self
    }

    /// Crashes inside the checkpoint at `seq`.
    pub fn crash_at_checkpoint(mut self, seq: Seq) -> Scripted {
        self.crash_at = Some(seq);
        self
    }

    /// The handle that switches these hooks.
    pub fn switchboard(&self) -> Switchboard {
        self.switches.clone()
    }

    /// True if any traitor behaviour is configured (switched on or not).
    pub fn has_traitor(&self) -> bool {
        !self.traitors.is_empty()
    }

    /// Applies the network switches (blocked peers, loss) to what goes out.
    fn filter(&self, outs: Vec<Outgoing>, into: &mut Vec<Outgoing>) {
        let mut s = self.switches.lock();
        if !s.filters() {
            into.extend(outs);
            return;
        }
        for o in outs {
            match o.dest {
                Dest::Client(_) => into.push(o),
                Dest::Replica(to) => {
                    for _ in 0..s.copies(to) {
                        into.push(o.clone());
                    }
                }
                Dest::AllReplicas => {
                    for to in (0..self.n).filter(|r| *r != self.id) {
                        for _ in 0..s.copies(to) {
                            into.push(Outgoing {
                                dest: Dest::Replica(to),
                                payload: o.payload.clone(),
                                delay: o.delay,
                            });
                        }
                    }
                }
            }
        }
    }

    fn traitor_on(&self) -> bool {
        !self.traitors.is_empty() && self.switches.lock().traitor_on
    }
}

impl Faults for Scripted {
    fn outgoing(&mut self, msg: Outgoing, now: Instant, out: &mut Vec<Outgoing>) {
        let mut outs = vec![msg];
        if self.traitor_on() {
            for t in self.traitors.iter_mut().filter(|t| t.active(now)) {
                let mut next = Vec::with_capacity(outs.len());
                for o in outs {
                    match o.payload {
                        pbft_protocol::Payload::Message(m) => {
                            for mut x in t.traitor.mutate(o.dest, m, now) {
                                x.delay += o.delay;
                                next.push(x);
                            }
                        }
                        pbft_protocol::Payload::Raw(_) => next.push(o),
                    }
                }
                outs = next;
            }
        }
        self.filter(outs, out);
    }

    fn incoming(&mut self, from: ReplicaId, msg: &Message, now: Instant) -> Incoming {
        if self.switches.lock().blocked.contains(&from) {
            return Incoming {
                deliver: false,
                sends: Vec::new(),
            };
        }
        let mut deliver = true;
        let mut sends = Vec::new();
        if self.traitor_on() {
            for t in self.traitors.iter_mut().filter(|t| t.active(now)) {
                let (outs, d) = t.traitor.observe(from, msg, now);
                deliver &= d;
                sends.extend(outs);
            }
        }
        let mut filtered = Vec::with_capacity(sends.len());
        self.filter(sends, &mut filtered);
        Incoming {
            deliver,
            sends: filtered,
        }
    }

    fn crash(&mut self, point: CrashPoint) -> bool {
        let CrashPoint::CheckpointTaken { seq } = point;
        let mut s = self.switches.lock();
        if self.crash_at == Some(seq) || s.crash_next_checkpoint {
            s.crash_next_checkpoint = false;
            self.crash_at = None;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pbft_crypto::Keypair;
    use pbft_protocol::{Config, Duration, Payload};
    use pbft_traitor::Behavior;

    fn status() -> Message {
        Message::Status {
            view: 3,
            last_executed: 7,
        }
    }

    fn dests(out: &[Outgoing]) -> Vec<Dest> {
        out.iter().map(|o| o.dest.clone()).collect()
    }

    #[test]
    fn honest_until_told_otherwise() {
        let mut s = Scripted::new(1, 4, 7);
        let mut out = Vec::new();
        s.outgoing(
            Outgoing::now(Dest::AllReplicas, status()),
            Instant::ZERO,
            &mut out,
        );
        assert_eq!(dests(&out), vec![Dest::AllReplicas]);
        assert!(s.incoming(0, &status(), Instant::ZERO).deliver);
        assert!(!s.crash(CrashPoint::CheckpointTaken { seq: 16 }));
    }

    #[test]
    fn blocked_peers_neither_send_nor_receive() {
        let mut s = Scripted::new(1, 4, 7);
        s.switchboard()
            .apply(&"block 0 3".parse::<Command>().expect("command"));
        let mut out = Vec::new();
        s.outgoing(
            Outgoing::now(Dest::AllReplicas, status()),
            Instant::ZERO,
            &mut out,
        );
        assert_eq!(
            dests(&out),
            vec![Dest::Replica(2)],
            "a broadcast reaches 2 only"
        );
        out.clear();
        s.outgoing(
            Outgoing::now(Dest::Replica(3), status()),
            Instant::ZERO,
            &mut out,
        );
        assert!(out.is_empty());
        assert!(!s.incoming(3, &status(), Instant::ZERO).deliver);
        assert!(s.incoming(2, &status(), Instant::ZERO).deliver);
        s.switchboard().apply(&Command::Block(BTreeSet::new()));
        out.clear();
        s.outgoing(
            Outgoing::now(Dest::Replica(3), status()),
            Instant::ZERO,
            &mut out,
        );
        assert_eq!(dests(&out), vec![Dest::Replica(3)], "healed");
    }

    #[test]
    fn loss_and_duplication_follow_their_rates() {
        let mut s = Scripted::new(0, 4, 42);
        s.switchboard().apply(&Command::Loss {
            drop: 0.25,
            duplicate: 0.5,
        });
        let mut out = Vec::new();
        for _ in 0..4000 {
            s.outgoing(
                Outgoing::now(Dest::Replica(1), status()),
                Instant::ZERO,
                &mut out,
            );
        }
        // expected copies per message: 0.75 * (1 + 0.5) = 1.125
        let per = out.len() as f64 / 4000.0;
        assert!((1.05..1.2).contains(&per), "{per} copies per message");
    }

    #[test]
    fn crash_points_fire_once() {
        let mut s = Scripted::new(0, 4, 1).crash_at_checkpoint(32);
        assert!(!s.crash(CrashPoint::CheckpointTaken { seq: 16 }));
        assert!(s.crash(CrashPoint::CheckpointTaken { seq: 32 }));
        assert!(!s.crash(CrashPoint::CheckpointTaken { seq: 32 }));
        s.switchboard().apply(&Command::CrashAtCheckpoint);
        assert!(s.crash(CrashPoint::CheckpointTaken { seq: 48 }));
        assert!(!s.crash(CrashPoint::CheckpointTaken { seq: 64 }));
    }

    #[test]
    fn a_traitor_acts_only_in_its_window_and_while_switched_on() {
        let keys: Vec<Keypair> = (0..4u8)
            .map(|i| Keypair::from_seed(&[i + 1; 32]).expect("seed"))
            .collect();
        let cfg = Config::new(keys.iter().map(|k| k.public()).collect());
        let traitor = Traitor::new(Behavior::Silent, 0, keys[0].clone(), cfg, 9);
        let mut s = Scripted::new(0, 4, 1).with_traitor(TraitorWindow {
            traitor,
            from_ms: 100,
            until_ms: 200,
        });
        let sent = |s: &mut Scripted, at_ms: u64| {
            let mut out = Vec::new();
            let now = Instant::ZERO.plus(Duration::from_millis(at_ms));
            s.outgoing(Outgoing::now(Dest::AllReplicas, status()), now, &mut out);
            out.len()
        };
        assert_eq!(sent(&mut s, 50), 1, "before the window");
        assert_eq!(sent(&mut s, 150), 0, "silent in the window");
        assert_eq!(sent(&mut s, 200), 1, "after the window");
        s.switchboard().apply(&Command::Traitor(false));
        assert_eq!(sent(&mut s, 150), 1, "switched off");
        assert!(matches!(
            Outgoing::now(Dest::AllReplicas, status()).payload,
            Payload::Message(_)
        ));
    }
}
