//! Invariant checkers that run during every simulation.
//!
//! - agreement: no two honest replicas execute different batches at one sequence number;
//! - execution is gap-free and in order;
//! - exactly-once: no request is applied twice by one ledger;
//! - no request with an invalid client signature is ever executed;
//! - every request a client accepted is in the ledger of every honest replica that
//!   reached its sequence number, with the accepted result;
//! - liveness is judged by the caller from [`crate::Report::all_committed`].

use pbft_crypto::{verify, Digest, Domain, PublicKey};
use pbft_protocol::{Batch, Instant, ReplicaId, RequestId, Seq, Signable};
use std::collections::BTreeMap;

/// What the end-of-run checks see of one replica's ledger.
pub struct LedgerView<'a> {
    /// The replica.
    pub node: ReplicaId,
    /// Its executor.
    pub ledger: &'a dyn pbft_executor::Executor,
    /// Requests it executed (not as duplicates), with how often.
    pub applications: &'a BTreeMap<(PublicKey, RequestId), u32>,
    /// Highest checkpoint it installed by state transfer.
    pub installed_at: Seq,
}

/// A broken invariant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Simulated time, ms.
    pub at_ms: u64,
    /// Which invariant.
    pub kind: &'static str,
    /// What happened.
    pub detail: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{} ms] {}: {}", self.at_ms, self.kind, self.detail)
    }
}

/// The checker's state across a run.
#[derive(Debug)]
pub struct Checker {
    honest: Vec<bool>,
    /// First honest execution per sequence number.
    executed: BTreeMap<Seq, (Digest, ReplicaId)>,
    /// Last sequence number executed or installed, per replica.
    last: Vec<Seq>,
    /// Signature validity cache, by request digest.
    sig_cache: BTreeMap<Digest, bool>,
    /// Requests accepted by clients: result and sequence number.
    accepted: BTreeMap<(PublicKey, RequestId), (Vec<u8>, Seq)>,
    /// Violations found.
    pub violations: Vec<Violation>,
    /// Replicas that halted, with the reason.
    pub halts: Vec<(ReplicaId, String)>,
    verify_signatures: bool,
}

impl Checker {
    /// A checker for `honest.len()` replicas.
    pub fn new(honest: Vec<bool>, verify_signatures: bool) -> Checker {
        let n = honest.len();
        Checker {
            honest,
            executed: BTreeMap::new(),
            last: vec![0; n],
            sig_cache: BTreeMap::new(),
            accepted: BTreeMap::new(),
            violations: Vec::new(),
            halts: Vec::new(),
            verify_signatures,
        }
    }

    fn violate(&mut self, now: Instant, kind: &'static str, detail: String) {
        self.violations.push(Violation {
            at_ms: now.as_millis(),
            kind,
            detail,
        });
    }

    /// Replica `node` executes `batch` at `seq`.
    pub fn on_execute(
        &mut self,
        now: Instant,
        node: ReplicaId,
        seq: Seq,
        digest: Digest,
        batch: &Batch,
    ) {
        let i = node as usize;
        if seq != self.last[i] + 1 {
            let detail = format!("replica {node} executed seq {seq} after {}", self.last[i]);
            self.violate(now, "gap-free execution", detail);
        }
        self.last[i] = seq;
        if !self.honest[i] {
            return;
        }
        match self.executed.get(&seq) {
            Some((d, other)) if *d != digest => {
                let detail = format!(
                    "seq {seq}: replica {other} executed {} but replica {node} executed {}",
                    d.short(),
                    digest.short()
                );
                self.violate(now, "agreement", detail);
            }
            Some(_) => {}
            None => {
                self.executed.insert(seq, (digest, node));
            }
        }
        if self.verify_signatures {
            for r in &batch.requests {
                let bytes = r.body.signing_bytes();
                let key = Digest::of_parts(&[&bytes, &r.sig.0]);
                let valid = *self.sig_cache.entry(key).or_insert_with(|| {
                    verify(&r.body.client, Domain::Request, &bytes, &r.sig).is_ok()
                });
                if !valid {
                    let detail = format!(
                        "replica {node} executed request {} of client {} with an invalid signature at seq {seq}",
                        r.body.request_id,
                        r.body.client.short()
                    );
                    self.violate(now, "invalid signature executed", detail);
                }
            }
        }
    }

    /// Replica `node` installed a snapshot at `seq`.
    pub fn on_install(&mut self, now: Instant, node: ReplicaId, seq: Seq) {
        let i = node as usize;
        if seq < self.last[i] {
            let detail = format!(
                "replica {node} installed seq {seq} below its executed {}",
                self.last[i]
            );
            self.violate(now, "gap-free execution", detail);
        }
        self.last[i] = seq;
    }

    /// Replica `node` restarted from an empty disk.
    pub fn on_wipe(&mut self, node: ReplicaId) {
        self.last[node as usize] = 0;
    }

    /// A client accepted a result.
    pub fn on_accept(&mut self, client: PublicKey, rid: RequestId, result: Vec<u8>, seq: Seq) {
        self.accepted.insert((client, rid), (result, seq));
    }

    /// A replica halted.
    pub fn on_halt(&mut self, node: ReplicaId, reason: String) {
        self.halts.push((node, reason));
    }

    /// End-of-run checks against each honest replica's ledger.
    pub fn finish(&mut self, now: Instant, ledgers: &[LedgerView<'_>]) {
        let accepted: Vec<_> = self.accepted.iter().map(|(k, v)| (*k, v.clone())).collect();
        // Where each accepted request first executed, by any honest ledger's stored
        // receipt. A client may accept the replies of a later duplicate execution (a
        // replica whose client table became inexact after a restart orders the request
        // again), whose sequence number is above the original one.
        let mut first_height: BTreeMap<(PublicKey, RequestId), Seq> = BTreeMap::new();
        for l in ledgers.iter().filter(|l| self.honest[l.node as usize]) {
            for (key, _) in &accepted {
                if let Ok(Some(r)) = l.ledger.receipt(&key.0, key.1) {
                    let h = first_height.entry(*key).or_insert(r.height);
                    *h = (*h).min(r.height);
                }
            }
        }
        for l in ledgers {
            let node = l.node;
            if !self.honest[node as usize] {
                continue;
            }
            for ((client, rid), times) in l.applications {
                if *times > 1 {
                    let detail = format!(
                        "replica {node} applied request {rid} of {} {times} times",
                        client.short()
                    );
                    self.violate(now, "exactly-once", detail);
                }
            }
            let height = l.ledger.head().height;
            for ((client, rid), (result, seq)) in &accepted {
                if height < *seq {
                    continue;
                }
                match l.ledger.receipt(client, *rid) {
                    Ok(Some(r)) if r.receipt.encode() == *result => {}
                    Ok(Some(_)) => {
                        let detail = format!(
                            "replica {node} holds another result for accepted request {rid} of {}",
                            client.short()
                        );
                        self.violate(now, "accepted request in every ledger", detail);
                    }
                    // history below an installed snapshot is not kept locally
                    Ok(None)
                        if *seq <= l.installed_at
                            || first_height
                                .get(&(*client, *rid))
                                .is_some_and(|h| *h <= l.installed_at) => {}
                    Ok(None) | Err(_) => {
                        let detail = format!(
                            "replica {node} at height {height} lacks accepted request {rid} of {} (seq {seq})",
                            client.short()
                        );
                        self.violate(now, "accepted request in every ledger", detail);
                    }
                }
            }
        }
    }
}
