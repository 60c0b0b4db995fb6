//! Restart: rebuild a replica from its write-ahead log, so that it never contradicts a
//! message it sent before the crash.

use crate::action::WalRecord;
use crate::client_table::ClientRecords;
use crate::config::{Config, ConfigError};
use crate::message::{ReplicaId, Seq};
use crate::replica::{Replica, Status};
use crate::time::Instant;
use pbft_crypto::Keypair;

impl Replica {
    /// Rebuilds a replica from its log records (in the order they were persisted), the
    /// last sequence number its executor applied, and the clients' records the ledger
    /// holds at that height (the client table learns the executions before the crash
    /// from them; see [`crate::client_table`]).
    pub fn restore(
        cfg: Config,
        id: ReplicaId,
        key: Keypair,
        records: &[WalRecord],
        last_executed: Seq,
        clients: ClientRecords,
        now: Instant,
    ) -> Result<Replica, ConfigError> {
        let mut r = Replica::new(cfg, id, key)?;
        r.now = now;
        r.clients.seed(clients);
        for rec in records {
            match rec {
                WalRecord::View { view, changing } => {
                    if *view >= r.view {
                        r.view = *view;
                        r.status = if *changing {
                            Status::ViewChange
                        } else {
                            Status::Normal
                        };
                    }
                }
                WalRecord::StableCheckpoint(proof) => {
                    if let Some(first) = proof.first() {
                        let seq = first.body.seq;
                        if seq > r.stable_seq {
                            if let Some(d) = r.valid_checkpoint_proof(seq, proof) {
                                r.stable_seq = seq;
                                r.stable_digest = d;
                                r.stable_proof = proof.clone();
                            }
                        }
                    }
                }
                WalRecord::Proposed { pre_prepare, batch } => {
                    let seq = pre_prepare.body.seq;
                    r.next_seq = r.next_seq.max(seq + 1);
                    r.slot_mut(seq).pre_prepare = Some((pre_prepare.clone(), batch.clone()));
                }
                WalRecord::Accepted { pre_prepare, batch } => {
                    let b = pre_prepare.body;
                    r.slot_mut(b.seq).pre_prepare = Some((pre_prepare.clone(), batch.clone()));
                    r.sign_prepare(b.view, b.seq, b.digest);
                }
                WalRecord::Prepared(proof) => {
                    let b = proof.pre_prepare.body;
                    for p in &proof.prepares {
                        let _ = r
                            .prepares
                            .add(b.view, b.seq, b.digest, p.body.replica, p.clone());
                    }
                    let slot = r.slot_mut(b.seq);
                    if slot
                        .prepared
                        .as_ref()
                        .is_none_or(|p| p.pre_prepare.body.view <= b.view)
                    {
                        slot.prepared = Some(proof.clone());
                    }
                    slot.commit_sent = Some(b.view);
                    r.sign_commit(b.view, b.seq, b.digest);
                }
                WalRecord::Checkpoint(c) => {
                    r.own_checkpoints.insert(c.body.seq, c.clone());
                    r.checkpoint_votes
                        .entry(c.body.seq)
                        .or_default()
                        .insert(r.id, c.clone());
                }
                WalRecord::ViewChange(vc) => {
                    r.view_changes
                        .entry(vc.body.new_view)
                        .or_default()
                        .insert(r.id, (**vc).clone());
                }
                WalRecord::NewView(nv) => {
                    if nv.body.view >= r.view {
                        r.new_view = Some((**nv).clone());
                    }
                    let vcs: Vec<_> = nv.body.view_changes.iter().map(|v| &v.body).collect();
                    let o = crate::new_view::compute_o(&vcs);
                    // Installing the new view made its checkpoint `min_s` stable (proven
                    // inside V). The new primary logs its new view before that record,
                    // with a send in between: after a crash there, O's slots would lie
                    // above the window of an older checkpoint.
                    if o.min_s > r.stable_seq {
                        let proof = vcs
                            .iter()
                            .find(|vc| vc.stable_seq == o.min_s)
                            .map(|vc| vc.checkpoint_proof.clone());
                        if let Some(proof) = proof {
                            if let Some(d) = r.valid_checkpoint_proof(o.min_s, &proof) {
                                r.stable_seq = o.min_s;
                                r.stable_digest = d;
                                r.stable_proof = proof;
                            }
                        }
                    }
                    // O is rebuilt from the new view itself, whatever of it was logged
                    // after: the new view's record goes out before its pre-prepares', and
                    // a crash in between must not leave O's slots empty. As the new
                    // primary, they are ours: never propose another batch at their
                    // sequence numbers. As a backup, they were accepted with the new
                    // view: a different batch offered there later is equivocation, never
                    // a second prepare. Batches follow in `Proposed` and `Accepted`
                    // records (which override these); one the log lost with a crash in
                    // between is fetched again after the restore (`want_lost_o_batches`).
                    let primary = r.cfg.primary(nv.body.view) == r.id;
                    for pp in &nv.body.pre_prepares {
                        let b = pp.body;
                        if b.seq <= r.stable_seq {
                            continue;
                        }
                        if primary {
                            r.next_seq = r.next_seq.max(b.seq + 1);
                        } else if r.recovery.is_none() {
                            r.sign_prepare(b.view, b.seq, b.digest);
                        } else {
                            // recovering, it did not accept O's pre-prepares
                            continue;
                        }
                        if let Some(batch) = r.find_batch(b.seq, &b.digest) {
                            r.slot_mut(b.seq).pre_prepare = Some((pp.clone(), batch));
                        }
                    }
                }
                WalRecord::Evidence(e) => {
                    let accused = e.accused(r.cfg.n());
                    r.evidence.entry(accused).or_insert_with(|| (**e).clone());
                }
                WalRecord::Recovering { nonce, bound } => {
                    r.recovery = Some(crate::recovery::Recovery::new(*nonce, *bound));
                }
                WalRecord::Recovered => r.recovery = None,
            }
        }
        if r.new_view.as_ref().is_some_and(|nv| nv.body.view != r.view) {
            r.new_view = None;
        }
        // Own view changes stay in the log until it is pruned; only the one for the
        // view being changed to is still of use (it is retransmitted), as in a replica
        // that never restarted.
        let floor = match r.status {
            Status::ViewChange => r.view,
            Status::Normal => r.view + 1,
        };
        r.view_changes = r.view_changes.split_off(&floor);
        // signed nothing: a log with nothing but the first record, recovery records and
        // evidence, on a ledger at genesis
        r.signed = last_executed > 0
            || records.iter().any(|rec| {
                !matches!(
                    rec,
                    WalRecord::View {
                        view: 0,
                        changing: false
                    } | WalRecord::Recovering { .. }
                        | WalRecord::Recovered
                        | WalRecord::Evidence(_)
                )
            });
        let h = r.stable_seq;
        r.collect_garbage();
        r.want_lost_o_batches();
        r.last_executed = last_executed;
        r.last_dispatched = last_executed;
        r.executed_at_last_tick = last_executed;
        r.next_seq = r.next_seq.max(last_executed + 1).max(h + 1);
        if last_executed < h {
            let d = r.stable_digest;
            r.begin_state_transfer(h, d);
        }
        // resume: re-send what is unfinished on the first tick
        r.tick_deadline = Some(now.plus(r.cfg.retransmit_interval));
        // a crash between a stable checkpoint and the record that recovery ended
        r.check_recovered();
        r.assert_invariants("restore");
        Ok(r)
    }
}
