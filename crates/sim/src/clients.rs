//! The simulated clients' side of the run: sending their plans, retransmitting,
//! receiving replies and accepting results.

use crate::client::{Kind, Outstanding};
use crate::network::Addr;
use crate::sim::{Event, Simulation};
use bytes::Bytes;
use pbft_protocol::envelope;
use pbft_protocol::{Duration, Message, ReplicaId};
use rand::Rng;
use std::collections::BTreeMap;

fn encode(msg: &Message) -> Bytes {
    Bytes::from(envelope::encode(msg))
}

impl Simulation {
    /// A client waits T/4 before it sends a request to every validator: soon enough
    /// that backups learn of a request the primary sits on while their ordering
    /// deadline (T/2) can still replace it before T.
    fn client_retry(&self) -> Duration {
        Duration::from_millis((self.cfg.view_timeout_ms / 4).max(1))
    }

    /// Client `c`'s timer fired.
    pub(crate) fn client_tick(&mut self, c: usize) {
        self.clients[c].timer_at = None;
        let now = self.now;
        let retry = self.client_retry();
        let n = self.validators.len() as ReplicaId;
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
            let bytes = encode(&Message::Request(req));
            for r in 0..n {
                self.transmit(Addr::Client(c), Addr::Replica(r), bytes.clone());
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
        let n = self.validators.len();
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
            let bytes = encode(&Message::Request(planned.request.clone()));
            if planned.kind == Kind::InvalidSignature {
                // sent to every validator once; it must never execute
                for r in 0..n as ReplicaId {
                    self.transmit(Addr::Client(c), Addr::Replica(r), bytes.clone());
                }
                continue;
            }
            let primary = (self.clients[c].view % n as u64) as ReplicaId;
            self.transmit(Addr::Client(c), Addr::Replica(primary), bytes);
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
        let bytes = encode(&Message::Request(req));
        for r in 0..self.validators.len() as ReplicaId {
            self.transmit(Addr::Client(c), Addr::Replica(r), bytes.clone());
        }
    }

    pub(crate) fn valid_requests(&self) -> usize {
        self.cfg.workload.requests + self.cfg.workload.overdrafts
    }

    pub(crate) fn accepted_count(&self) -> usize {
        self.clients.iter().map(|c| c.accepted.len()).sum()
    }

    fn check_all_committed(&mut self) {
        if self.all_committed_at.is_none() && self.accepted_count() >= self.valid_requests() {
            self.all_committed_at = Some(self.now);
        }
    }

    /// A message from the network for client `c`.
    pub(crate) fn deliver_to_client(&mut self, from: Addr, c: usize, bytes: &[u8]) {
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
}
