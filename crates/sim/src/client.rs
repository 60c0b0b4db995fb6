//! Simulated clients: each signs its plan of transfers and hands them to the client
//! core every real client runs (`pbft_protocol::ClientCore`), which decides where a
//! request goes, when it is re-sent to every validator, and when f+1 validators agree
//! on its result.

use pbft_crypto::{Keypair, PublicKey};
use pbft_executor::{Operation, Transfer};
use pbft_protocol::{ClientCore, Instant, Request, RequestId, Seq, Signed, SignedRequest};
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

/// A request the client accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accepted {
    /// The kind.
    pub kind: Kind,
    /// The result f+1 validators agreed on.
    pub result: Vec<u8>,
    /// The sequence number f+1 validators agreed on with the result.
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
    /// The client core: in-flight requests, retransmission, the acceptance rule.
    pub core: ClientCore,
    /// What each request handed to the core is meant to exercise, until accepted.
    pub kinds: BTreeMap<RequestId, Kind>,
    /// Accepted, by request id.
    pub accepted: BTreeMap<RequestId, Accepted>,
    /// Replays still to send.
    pub replays_left: usize,
    /// Timer event already scheduled at.
    pub timer_at: Option<Instant>,
    /// Earliest time of the next new request (think time).
    pub next_send_at: Instant,
}

impl SimClient {
    /// Builds a client, with its core, and its plan: `valid` transfers to `targets`,
    /// `overdrafts` and `invalid` requests interleaved deterministically, each operation
    /// padded to `op_bytes`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        index: usize,
        key: Keypair,
        core: ClientCore,
        targets: &[PublicKey],
        valid: usize,
        overdrafts: usize,
        invalid: usize,
        replays: usize,
        balance: u64,
        op_bytes: usize,
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
            .encode_padded(op_bytes);
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
            core,
            kinds: BTreeMap::new(),
            accepted: BTreeMap::new(),
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
        self.plan.is_empty() && self.core.is_idle() && self.replays_left == 0
    }

    /// Records a request the core accepted.
    pub fn accept(&mut self, a: pbft_protocol::client::Accepted) -> Accepted {
        let kind = self.kinds.remove(&a.request_id).unwrap_or(Kind::Valid);
        let acc = Accepted {
            kind,
            result: a.result,
            seq: a.seq,
            at: a.at,
            latency_us: a.latency.as_micros() as u64,
            request: a.request,
        };
        self.accepted.insert(a.request_id, acc.clone());
        acc
    }
}
