//! The simulated clients' side of the run. Each client hands its plan to its client
//! core (the same `ClientCore` the real client wraps), puts what the core transmits on
//! the simulated network, feeds it the replies, and wakes it at its timeouts. Forged
//! requests and replays are sent by the simulation itself: no client would track them.

use crate::client::Kind;
use crate::network::Addr;
use crate::sim::{Event, Simulation};
use bytes::Bytes;
use pbft_protocol::client::ClientConfigError;
use pbft_protocol::client::Recipients;
use pbft_protocol::envelope;
use pbft_protocol::{ClientConfig, ClientCore, Duration, Message, ReplicaId, RequestId};
use rand::Rng;

impl Simulation {
    /// A client core for this simulation: it re-sends a request to every validator
    /// after T/4, soon enough that backups learn of a request the primary sits on
    /// while their ordering deadline (T/2) can still replace it before T; and it never
    /// gives a request up.
    pub(crate) fn client_core(
        cfg: &crate::SimConfig,
        pcfg: &pbft_protocol::Config,
    ) -> Result<ClientCore, ClientConfigError> {
        ClientCore::new(ClientConfig {
            validators: cfg.validators,
            f: pcfg.f() as usize,
            window: pcfg.client_window,
            max_in_flight: cfg.workload.concurrency.max(1),
            retransmit: Duration::from_millis((cfg.view_timeout_ms / 4).max(1)),
            deadline: None,
        })
    }

    /// Client `c`'s timer fired.
    pub(crate) fn client_tick(&mut self, c: usize) {
        self.clients[c].timer_at = None;
        let now = self.now;
        if self.clients[c]
            .core
            .next_timeout()
            .is_some_and(|t| t <= now)
        {
            self.clients[c].core.on_timeout(now);
        }
        self.client_send_more(c);
        self.client_outputs(c);
    }

    /// Hands the core more of the plan while it has room, a request at a time after
    /// the think time.
    fn client_send_more(&mut self, c: usize) {
        let now = self.now;
        let n = self.validators.len() as ReplicaId;
        let concurrency = self.cfg.workload.concurrency.max(1);
        let think = Duration::from_millis(self.cfg.workload.think_ms);
        loop {
            let client = &mut self.clients[c];
            if client.core.in_flight() + client.core.queued() >= concurrency
                || now < client.next_send_at
            {
                break;
            }
            let Some(planned) = client.plan.pop_front() else {
                break;
            };
            // a client pauses between requests, so that load continues through time
            // (its timer wakes it at `next_send_at`)
            client.next_send_at = now.plus(think);
            if planned.kind == Kind::InvalidSignature {
                // sent to every validator once; it must never execute
                let bytes = Bytes::from(envelope::encode(&Message::Request(planned.request)));
                for r in 0..n {
                    self.transmit(Addr::Client(c), Addr::Replica(r), bytes.clone());
                }
                continue;
            }
            let id = planned.request.body.request_id;
            if client.core.submit(planned.request, now).is_ok() {
                client.kinds.insert(id, planned.kind);
            }
        }
    }

    /// Carries out what client `c`'s core decided: transmissions, then acceptances
    /// (which make room for more of the plan), then its next wake-up.
    fn client_outputs(&mut self, c: usize) {
        let n = self.validators.len() as ReplicaId;
        loop {
            while let Some(t) = self.clients[c].core.poll_transmit() {
                let bytes = Bytes::copy_from_slice(&t.bytes);
                let to: Vec<ReplicaId> = match t.to {
                    Recipients::All => (0..n).collect(),
                    Recipients::Only(list) => list,
                };
                for r in to {
                    self.transmit(Addr::Client(c), Addr::Replica(r), bytes.clone());
                }
            }
            let mut accepted_any = false;
            while let Some(a) = self.clients[c].core.poll_accepted() {
                accepted_any = true;
                let id: RequestId = a.request_id;
                let acc = self.clients[c].accept(a);
                let pk = self.clients[c].public();
                self.checker.on_accept(pk, id, acc.result, acc.seq);
                self.maybe_replay(c);
                self.check_all_committed();
            }
            if !accepted_any {
                break;
            }
            self.client_send_more(c);
        }
        self.arm_client_timer(c);
    }

    /// One timer per client, at the earliest of its core's next timeout and, if it has
    /// room for another request, its next send.
    fn arm_client_timer(&mut self, c: usize) {
        let concurrency = self.cfg.workload.concurrency.max(1);
        let client = &self.clients[c];
        let room = client.core.in_flight() + client.core.queued() < concurrency;
        let send_at = (!client.plan.is_empty() && room).then(|| client.next_send_at.max(self.now));
        let next = [client.core.next_timeout(), send_at]
            .into_iter()
            .flatten()
            .min();
        if let Some(t) = next {
            if self.clients[c].timer_at.is_none_or(|at| at > t) {
                self.clients[c].timer_at = Some(t);
                self.schedule(t, Event::ClientTimer(c));
            }
        }
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
        let bytes = Bytes::from(envelope::encode(&Message::Request(req)));
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
        if reply.body.client != self.clients[c].public() {
            return self.reject("reply from the wrong sender");
        }
        if self.cfg.verify_signatures {
            let Some(key) = self.pcfg.validators.get(sender as usize) else {
                return self.reject("reply from the wrong sender");
            };
            if reply.verify(key).is_err() {
                return self.reject("bad reply signature");
            }
        }
        let now = self.now;
        let outcome = self.clients[c].core.on_reply(sender, &reply.body, now);
        match outcome {
            pbft_protocol::client::ReplyOutcome::WrongReplica => {
                return self.reject("reply from the wrong sender");
            }
            pbft_protocol::client::ReplyOutcome::OtherRequest => {
                self.stats.other_request_replies += 1;
            }
            _ => {}
        }
        self.client_outputs(c);
    }
}
