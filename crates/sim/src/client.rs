//! Simulated clients: they sign transfers, send them to the primary they believe in,
//! broadcast to every validator on timeout, and accept a result once f+1 validators
//! sent the same one.

use pbft_crypto::{Keypair, PublicKey};
use pbft_executor::{Operation, Transfer};
use pbft_protocol::{
    Instant, ReplicaId, Reply, Request, RequestId, Seq, Signed, SignedRequest, View,
};
use std::collections::{BTreeMap, VecDeque};

/// What a planned request is meant to exercise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A valid transfer.
    Valid,
    /// A transfer larger than the balance: valid, must fail identically everywhere.
    Overdraft,
    /// A request whose signature does not verify: must never execute.
    InvalidSignature,
}

/// One request a client will send.
#[derive(Clone, Debug)]
pub struct Planned {
    /// The kind.
    pub kind: Kind,
    /// The signed request.
    pub request: SignedRequest,
}

/// A request in flight.
#[derive(Clone, Debug)]
pub struct Outstanding {
    /// The planned request.
    pub planned: Planned,
    /// First send.
    pub first_sent: Instant,
    /// Last (re)send.
    pub last_sent: Instant,
    /// Result claimed by each validator that replied, with the sequence number.
    pub replies: BTreeMap<ReplicaId, (Vec<u8>, Seq)>,
}

/// A request the client accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accepted {
    /// The kind.
    pub kind: Kind,
    /// The result f+1 validators agreed on.
    pub result: Vec<u8>,
    /// The lowest sequence number among the matching replies.
    pub seq: Seq,
    /// When it was accepted.
    pub at: Instant,
    /// Submit-to-accept latency, µs.
    pub latency_us: u64,
    /// The request, for replays.
    pub request: SignedRequest,
}

/// A simulated client.
#[derive(Debug)]
pub struct SimClient {
    /// Index among the clients.
    pub index: usize,
    /// Signing key.
    pub key: Keypair,
    /// The plan, in order.
    pub plan: VecDeque<Planned>,
    /// In flight, by request id.
    pub outstanding: BTreeMap<RequestId, Outstanding>,
    /// Accepted, by request id.
    pub accepted: BTreeMap<RequestId, Accepted>,
    /// The view the client believes the cluster is in.
    pub view: View,
    /// Replays still to send.
    pub replays_left: usize,
    /// Timer event already scheduled at.
    pub timer_at: Option<Instant>,
    /// Earliest time of the next new request (think time).
    pub next_send_at: Instant,
}

impl SimClient {
    /// Builds a client and its plan: `valid` transfers to `targets`, `overdrafts` and
    /// `invalid` requests interleaved deterministically.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        index: usize,
        key: Keypair,
        targets: &[PublicKey],
        valid: usize,
        overdrafts: usize,
        invalid: usize,
        replays: usize,
        balance: u64,
        mut amount: impl FnMut() -> u64,
    ) -> SimClient {
        let me = key.public();
        let mut kinds: Vec<Kind> = Vec::new();
        kinds.extend(std::iter::repeat_n(Kind::Valid, valid));
        // spread the special requests evenly through the plan
        for (i, k) in std::iter::repeat_n(Kind::Overdraft, overdrafts)
            .chain(std::iter::repeat_n(Kind::InvalidSignature, invalid))
            .enumerate()
        {
            let pos = if kinds.is_empty() {
                0
            } else {
                (i * 7 + 3) % (kinds.len() + 1)
            };
            kinds.insert(pos, k);
        }
        let mut plan = VecDeque::new();
        let mut next_id: RequestId = 1;
        for (i, kind) in kinds.into_iter().enumerate() {
            // Clients number their requests without gaps. A forged request reuses an id
            // of this client (as an attacker forging "request 7 of client c" would): it
            // must be rejected without disturbing the real request 7.
            let request_id = if kind == Kind::InvalidSignature {
                next_id.saturating_sub(1).max(1)
            } else {
                next_id += 1;
                next_id - 1
            };
            let to = targets[i % targets.len().max(1)];
            let amount = match kind {
                Kind::Overdraft => balance.saturating_mul(10),
                _ => amount().max(1),
            };
            let op = Operation {
                transfers: vec![Transfer { to, amount }],
            }
            .encode();
            let body = Request {
                client: me,
                request_id,
                op,
            };
            let mut request = Signed::sign(body, &key);
            if kind == Kind::InvalidSignature {
                request.sig.0[5] ^= 0x40;
            }
            plan.push_back(Planned { kind, request });
        }
        SimClient {
            index,
            key,
            plan,
            outstanding: BTreeMap::new(),
            accepted: BTreeMap::new(),
            view: 0,
            replays_left: replays,
            timer_at: None,
            next_send_at: Instant::ZERO,
        }
    }

    /// The client's account.
    pub fn public(&self) -> PublicKey {
        self.key.public()
    }

    /// True when nothing is left to send or wait for.
    pub fn done(&self) -> bool {
        self.plan.is_empty() && self.outstanding.is_empty() && self.replays_left == 0
    }

    /// Records a verified reply; returns the accepted entry if this reply made f+1.
    pub fn on_reply(
        &mut self,
        reply: &Reply,
        f: usize,
        now: Instant,
    ) -> Option<(RequestId, Accepted)> {
        let out = self.outstanding.get_mut(&reply.request_id)?;
        out.replies
            .entry(reply.replica)
            .or_insert_with(|| (reply.result.clone(), reply.seq));
        let result = &reply.result;
        let matching: Vec<Seq> = out
            .replies
            .values()
            .filter(|(r, _)| r == result)
            .map(|(_, s)| *s)
            .collect();
        if matching.len() < f + 1 {
            return None;
        }
        let out = self.outstanding.remove(&reply.request_id)?;
        self.view = self.view.max(reply.view);
        let acc = Accepted {
            kind: out.planned.kind,
            result: result.clone(),
            seq: matching.iter().copied().min().unwrap_or(reply.seq),
            at: now,
            latency_us: now.since(out.first_sent).as_micros() as u64,
            request: out.planned.request.clone(),
        };
        self.accepted.insert(reply.request_id, acc.clone());
        Some((reply.request_id, acc))
    }
}
