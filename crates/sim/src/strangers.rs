//! Simulated strangers: hostile parties outside the validator set that act through
//! signed requests, which is all the simulated network carries from clients.
//!
//! The `reuse_id` stranger holds the clients' keys (the simulator has them). Every
//! [`LOOK_EVERY`] of its window it takes the next client with an executed request id
//! it has not reused yet: one an honest validator's ledger shows executed while the
//! client still waits for f+1 replies to it, else the latest the client accepted (f+1
//! validators' replies bound to that request); with none, every [`AGAIN_EVERY`] the
//! latest accepted id again, with another operation. It signs a new operation under that id
//! with the client's key and sends it to every validator over the simulated network,
//! where it takes the path of any client's request: decoded, verified, handed to the
//! validator's host. It keeps each reused id's answers.
//!
//! A validator answers a client's key wherever that key's requests come from, so the
//! stranger, which speaks for the key from the moment it signs with it, receives the
//! key's replies as the client does (the node sends them to every connection the key's
//! requests arrived on). The real client gets the answers to the reused id too, and
//! its client rule must not count them: they bind another request's digest.
//!
//! At the end of the run ([`Simulation::stranger_reports`]) every honest ledger is
//! read: a receipt for a reused id recording the stranger's request means it executed.

use crate::config::{StrangerKind, StrangerSpec};
use crate::network::Addr;
use crate::report::StrangerReport;
use crate::sim::{Event, Simulation};
use bytes::Bytes;
use pbft_crypto::{Digest, PublicKey};
use pbft_executor::{FailReason, Operation, Receipt};
use pbft_protocol::{envelope, Duration, Instant, Message, ReplicaId, Request, RequestId, Signed};
use std::collections::{BTreeMap, BTreeSet};

/// How often a `reuse_id` stranger looks for an executed id it has not reused yet
/// (often, to catch ids that executed while their client still waits for them).
pub(crate) const LOOK_EVERY: Duration = Duration::from_millis(5);
/// When it finds none, how often it signs the latest again with another operation.
pub(crate) const AGAIN_EVERY: Duration = Duration::from_millis(50);

/// One reused id: what the stranger signed, and what the validators answered.
#[derive(Clone, Debug)]
pub(crate) struct Attempt {
    /// The client whose key signed it.
    pub client: PublicKey,
    /// The request id, executed before with the client's own request.
    pub request_id: RequestId,
    /// The digest of the stranger's request.
    pub digest: Digest,
    /// The client still waited for f+1 replies to its own request with that id.
    pub in_flight: bool,
    /// Each validator's last answer bound to that digest (an encoded receipt).
    pub answers: BTreeMap<ReplicaId, Vec<u8>>,
}

/// A stranger in a simulation.
#[derive(Debug)]
pub(crate) struct SimStranger {
    pub spec: StrangerSpec,
    /// Client keys it has signed with: their replies reach it.
    pub speaks_for: BTreeSet<PublicKey>,
    /// The next client it considers (round robin).
    next_client: usize,
    /// Its reused ids, in the order sent.
    pub attempts: Vec<Attempt>,
    /// When it last sent one.
    last_sent: Option<Instant>,
    /// Replies it received that answer the clients' own requests.
    pub client_replies: u64,
}

impl SimStranger {
    pub(crate) fn new(spec: StrangerSpec) -> SimStranger {
        SimStranger {
            spec,
            speaks_for: BTreeSet::new(),
            next_client: 0,
            attempts: Vec::new(),
            last_sent: None,
            client_replies: 0,
        }
    }
}

impl Simulation {
    /// Schedules each stranger's first action at the start of its window.
    pub(crate) fn start_strangers(&mut self) {
        for k in 0..self.strangers.len() {
            let from = Instant(self.strangers[k].spec.from_ms.saturating_mul(1000));
            self.schedule(from, Event::StrangerTimer(k));
        }
    }

    /// Stranger `k`'s timer fired: it acts, and wakes again while its window lasts.
    pub(crate) fn stranger_tick(&mut self, k: usize) {
        let spec = self.strangers[k].spec.clone();
        if self.now.as_millis() >= spec.until_ms {
            return;
        }
        match spec.kind {
            StrangerKind::ReuseId => self.reuse_id(k),
        }
        let next = self.now.plus(LOOK_EVERY);
        if next.as_millis() < spec.until_ms {
            self.schedule(next, Event::StrangerTimer(k));
        }
    }

    /// Signs a new operation under an executed request id of the next client that has
    /// one it has not reused yet, and sends it to every validator; with none, after
    /// [`AGAIN_EVERY`], a client's latest accepted id again with another operation.
    fn reuse_id(&mut self, k: usize) {
        let count = self.clients.len();
        let again = self.strangers[k]
            .last_sent
            .is_none_or(|t| self.now >= t.plus(AGAIN_EVERY));
        for step in 0..count {
            let c = (self.strangers[k].next_client + step) % count;
            let client = &self.clients[c];
            let me = client.public();
            let done: BTreeSet<RequestId> = self.strangers[k]
                .attempts
                .iter()
                .filter(|a| a.client == me)
                .map(|a| a.request_id)
                .collect();
            // first an id that executed at an honest validator while its client still
            // waits for f+1 replies: the refusals then reach a client that has that
            // id in flight, and must not count for it
            let waiting = client
                .core
                .in_flight_claims()
                .map(|(_, id, _)| id)
                .filter(|id| !done.contains(id))
                .find_map(|id| self.executed_at_an_honest(&me, id).map(|d| (id, d)));
            let accepted = client
                .accepted
                .iter()
                .rev()
                .find(|(id, _)| !done.contains(id))
                .or_else(|| client.accepted.iter().next_back().filter(|_| again))
                .map(|(id, a)| (*id, a.request.body.digest()));
            let Some((id, original)) = waiting.or(accepted) else {
                continue;
            };
            let in_flight = waiting.is_some();
            // a transfer of half the client's genesis balance to the stranger's pick
            // of another client, made different on each try: a new operation
            let tries = self.strangers[k].attempts.len() as u64;
            let to = self.clients[(c + 1) % count].public();
            let mut amount = (self.cfg.workload.balance / 2).max(1) + tries;
            let mut body = Request {
                client: me,
                request_id: id,
                op: Operation::transfer(to, amount).encode(),
            };
            while body.digest() == original {
                amount += 1;
                body.op = Operation::transfer(to, amount).encode();
            }
            let digest = body.digest();
            let signed = Signed::sign(body, &self.clients[c].key);
            let s = &mut self.strangers[k];
            s.next_client = (c + 1) % count;
            s.last_sent = Some(self.now);
            s.speaks_for.insert(me);
            s.attempts.push(Attempt {
                client: me,
                request_id: id,
                digest,
                in_flight,
                answers: BTreeMap::new(),
            });
            let bytes = Bytes::from(envelope::encode(&Message::Request(signed)));
            for r in 0..self.validators.len() as ReplicaId {
                self.transmit(Addr::Stranger(k), Addr::Replica(r), bytes.clone());
            }
            return;
        }
    }

    /// A message from the network for stranger `k`: a reply to one of its reused ids,
    /// or to a request of the client whose key it signed with.
    pub(crate) fn deliver_to_stranger(&mut self, from: Addr, k: usize, bytes: &[u8]) {
        let Addr::Replica(sender) = from else {
            return;
        };
        let Ok(Message::Reply(reply)) = envelope::decode(bytes, &self.limits) else {
            return self.reject("stranger got a non-reply");
        };
        if reply.body.replica != sender {
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
        let s = &mut self.strangers[k];
        let body = reply.body;
        match s.attempts.iter_mut().rev().find(|a| {
            a.digest == body.request && a.client == body.client && a.request_id == body.request_id
        }) {
            Some(a) => {
                a.answers.insert(sender, body.result);
            }
            None => s.client_replies += 1,
        }
    }

    /// What each stranger did, judged: its reused ids, how the validators answered
    /// them, and whether an honest ledger executed one.
    pub(crate) fn stranger_reports(
        &self,
        ledgers: &[crate::checker::LedgerView<'_>],
    ) -> Vec<StrangerReport> {
        let f = self.pcfg.f() as usize;
        let reused = Receipt::Failed {
            reason: FailReason::ReusedId,
        }
        .encode();
        self.strangers
            .iter()
            .map(|s| {
                let mut r = StrangerReport {
                    kind: s.spec.kind,
                    sent: s.attempts.len() as u64,
                    in_flight: s.attempts.iter().filter(|a| a.in_flight).count() as u64,
                    distinct_ids: s
                        .attempts
                        .iter()
                        .map(|a| (a.client, a.request_id))
                        .collect::<BTreeSet<_>>()
                        .len() as u64,
                    ..StrangerReport::default()
                };
                for a in &s.attempts {
                    let refusals = a.answers.values().filter(|x| **x == reused).count();
                    r.reused_id_answers += refusals as u64;
                    r.other_answers += (a.answers.len() - refusals) as u64;
                    if refusals > f {
                        r.refused_by_quorum += 1;
                    }
                    for l in ledgers.iter().filter(|l| self.is_honest(l.node)) {
                        if let Ok(Some(stored)) = l.ledger.receipt(&a.client, a.request_id) {
                            if stored.request == a.digest {
                                r.executed.push(format!(
                                    "validator {} executed request {} of client {} as signed by the stranger (block {})",
                                    l.node,
                                    a.request_id,
                                    a.client.short(),
                                    stored.height
                                ));
                            }
                        }
                    }
                }
                r.client_replies = s.client_replies;
                r
            })
            .collect()
    }

    /// The digest of the request an honest, running validator's ledger records for
    /// `(client, id)`, if one executed it.
    fn executed_at_an_honest(&self, client: &PublicKey, id: RequestId) -> Option<Digest> {
        self.validators
            .iter()
            .enumerate()
            .filter(|(r, _)| self.is_honest(*r as ReplicaId))
            .filter_map(|(_, v)| v.host.as_ref())
            .find_map(|h| h.ledger().receipt(client, id).ok().flatten())
            .map(|stored| stored.request)
    }

    fn is_honest(&self, r: ReplicaId) -> bool {
        !self.cfg.is_traitor(r)
    }
}
