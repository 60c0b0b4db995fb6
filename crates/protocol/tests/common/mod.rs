//! Shared helpers for the integration tests: fixed keys, builders for signed messages
//! and proptest strategies that generate every [`Message`] variant with real signatures.
//!
//! Two generation spaces:
//! - [`Space::Wide`]: arbitrary views, sequence numbers, digests, request ops (for the
//!   wire-format tests);
//! - [`Space::Pooled`]: views `0..6`, sequence numbers `0..80`, digests and batches from a
//!   small pool, and certificates that are structurally valid most of the time, so that
//!   generated messages collide with each other and reach deep into the replica.
#![allow(dead_code)]

use pbft_crypto::{Digest, Keypair, PublicKey};
use pbft_protocol::new_view::compute_o;
use pbft_protocol::{
    Batch, Checkpoint, ClientRecord, ClientRecords, Commit, CommittedProof, Evidence, Message,
    NewView, PrePrepare, Prepare, PreparedCert, PreparedProof, ReplicaId, Reply, Request, Seq,
    Signed, SignedReply, SignedRequest, View, ViewChange,
};
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{Config as ProptestConfig, RngAlgorithm, RngSeed};
use std::sync::OnceLock;

mod probe;
#[allow(unused_imports)] // not every test file drives a probe
pub use probe::{evidence_kinds, executed, Probe};

/// Cluster size used by every test.
pub const N: u32 = 4;
/// Checkpoint interval K of `Config::new`.
pub const K: u64 = 16;
/// Log window L of `Config::new`.
pub const L: u64 = 32;

/// A deterministic proptest configuration: fixed seed, no persistence files.
pub fn pt_config(cases: u32, seed: u64) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        rng_algorithm: RngAlgorithm::ChaCha,
        rng_seed: RngSeed::Fixed(seed),
        max_shrink_iters: 2048,
        ..ProptestConfig::default()
    }
}

/// Validator key `i`: `Keypair::from_seed(&[i; 32])`.
pub fn replica_key(i: u32) -> &'static Keypair {
    static KEYS: OnceLock<Vec<Keypair>> = OnceLock::new();
    &KEYS.get_or_init(|| {
        (0..N)
            .map(|i| Keypair::from_seed(&[i as u8; 32]).expect("valid seed"))
            .collect()
    })[i as usize]
}

/// The validators' public keys, by id.
pub fn pubkeys() -> Vec<PublicKey> {
    (0..N).map(|i| replica_key(i).public()).collect()
}

/// Client key `i` (seeds disjoint from the validators').
pub fn client_key(i: u8) -> &'static Keypair {
    static KEYS: OnceLock<Vec<Keypair>> = OnceLock::new();
    &KEYS.get_or_init(|| {
        (0..4u8)
            .map(|i| Keypair::from_seed(&[100 + i; 32]).expect("valid seed"))
            .collect()
    })[i as usize]
}

/// `primary(v) = v mod n`.
pub fn primary(view: View) -> ReplicaId {
    (view % u64::from(N)) as ReplicaId
}

/// The state digest a trivial executor reports after `seq`.
pub fn state_digest(seq: Seq) -> Digest {
    Digest::of(&seq.to_le_bytes())
}

// ---------------------------------------------------------------- builders

/// A request signed by client `client`.
pub fn request(client: u8, request_id: u64, op: Vec<u8>) -> SignedRequest {
    let key = client_key(client);
    Signed::sign(
        Request {
            client: key.public(),
            request_id,
            op,
        },
        key,
    )
}

/// A pre-prepare header signed by `primary(view)`.
pub fn signed_pp(view: View, seq: Seq, digest: Digest) -> Signed<PrePrepare> {
    Signed::sign(PrePrepare { view, seq, digest }, replica_key(primary(view)))
}

/// A pre-prepare message for `batch`, signed by `primary(view)`.
pub fn pre_prepare_msg(view: View, seq: Seq, batch: Batch) -> Message {
    Message::PrePrepare {
        pre_prepare: signed_pp(view, seq, batch.digest()),
        batch,
    }
}

/// A prepare signed by `replica`.
pub fn prepare(view: View, seq: Seq, digest: Digest, replica: ReplicaId) -> Signed<Prepare> {
    Signed::sign(
        Prepare {
            view,
            seq,
            digest,
            replica,
        },
        replica_key(replica),
    )
}

/// A commit signed by `replica`.
pub fn commit(view: View, seq: Seq, digest: Digest, replica: ReplicaId) -> Signed<Commit> {
    Signed::sign(
        Commit {
            view,
            seq,
            digest,
            replica,
        },
        replica_key(replica),
    )
}

/// A checkpoint signed by `replica`.
pub fn checkpoint(seq: Seq, state_digest: Digest, replica: ReplicaId) -> Signed<Checkpoint> {
    Signed::sign(
        Checkpoint {
            seq,
            state_digest,
            replica,
        },
        replica_key(replica),
    )
}

/// A prepared certificate for `batch` at `(view, seq)` with prepares from `voters`.
pub fn prepared_cert(view: View, seq: Seq, batch: Batch, voters: &[ReplicaId]) -> PreparedProof {
    let digest = batch.digest();
    PreparedProof {
        pre_prepare: signed_pp(view, seq, digest),
        prepares: voters
            .iter()
            .map(|r| prepare(view, seq, digest, *r))
            .collect(),
        batch,
    }
}

/// The 2f = 2 backups of `view` with the smallest ids: enough prepares for a certificate.
pub fn two_backups(view: View) -> Vec<ReplicaId> {
    (0..N).filter(|r| *r != primary(view)).take(2).collect()
}

/// A valid stable-checkpoint proof for `seq` (empty for genesis).
pub fn checkpoint_proof(seq: Seq) -> Vec<Signed<Checkpoint>> {
    if seq == 0 {
        return Vec::new();
    }
    (0..3)
        .map(|r| checkpoint(seq, state_digest(seq), r))
        .collect()
}

/// A view change signed by `replica`.
pub fn view_change(
    new_view: View,
    stable_seq: Seq,
    prepared: Vec<PreparedProof>,
    replica: ReplicaId,
) -> Signed<ViewChange> {
    Signed::sign(
        ViewChange {
            new_view,
            stable_seq,
            checkpoint_proof: checkpoint_proof(stable_seq),
            prepared: prepared.iter().map(PreparedProof::cert).collect(),
            replica,
        },
        replica_key(replica),
    )
}

/// A new view signed by `primary(view)` whose `O` is computed from `view_changes`.
pub fn honest_new_view(view: View, view_changes: Vec<Signed<ViewChange>>) -> Signed<NewView> {
    let o = compute_o(&view_changes.iter().map(|v| &v.body).collect::<Vec<_>>());
    let pre_prepares = o
        .entries
        .iter()
        .map(|e| signed_pp(view, e.seq, e.digest))
        .collect();
    Signed::sign(
        NewView {
            view,
            view_changes,
            pre_prepares,
        },
        replica_key(primary(view)),
    )
}

/// What a ledger records of its clients after executing `requests` in order, as a
/// driver hands it to a restored replica or one that installed a snapshot: per client,
/// `low` (every id below it executed) and the executed ids above it.
#[allow(dead_code)] // not every test file restores a replica
pub fn ledger_records<'a>(requests: impl IntoIterator<Item = &'a SignedRequest>) -> ClientRecords {
    let mut windows: std::collections::BTreeMap<PublicKey, (u64, Vec<u64>)> =
        std::collections::BTreeMap::new();
    for r in requests {
        let (low, executed) = windows.entry(r.body.client).or_insert((1, Vec::new()));
        let rid = r.body.request_id;
        if rid == 0 || rid < *low || executed.contains(&rid) {
            continue; // refused, or a duplicate
        }
        executed.push(rid);
        executed.sort_unstable();
        while executed.first() == Some(low) {
            executed.remove(0);
            *low += 1;
        }
    }
    ClientRecords::Complete(
        windows
            .into_iter()
            .map(|(client, (low, executed))| ClientRecord {
                client,
                low,
                executed,
            })
            .collect(),
    )
}

// ---------------------------------------------------------------- pools

/// Small request pool: clients 0..3, request ids 1..=3.
pub fn request_pool() -> &'static [SignedRequest] {
    static POOL: OnceLock<Vec<SignedRequest>> = OnceLock::new();
    POOL.get_or_init(|| {
        let mut v = Vec::new();
        for c in 0..3u8 {
            for rid in 1..=3u64 {
                v.push(request(c, rid, vec![c, rid as u8]));
            }
        }
        v
    })
}

/// Small batch pool; index 0 is the null batch.
pub fn batch_pool() -> &'static [Batch] {
    static POOL: OnceLock<Vec<Batch>> = OnceLock::new();
    POOL.get_or_init(|| {
        let r = request_pool();
        let b = |idx: &[usize]| Batch {
            requests: idx.iter().map(|i| r[*i].clone()).collect(),
        };
        vec![
            Batch::null(),
            b(&[0]),
            b(&[1]),
            b(&[0, 1]),
            b(&[3]),
            b(&[4, 5, 6]),
            b(&[8]),
        ]
    })
}

/// Small digest pool: the pool batches' digests and one digest of no batch.
pub fn digest_pool() -> Vec<Digest> {
    let mut v: Vec<Digest> = batch_pool().iter().map(Batch::digest).collect();
    v.push(Digest::of(b"no such batch"));
    v
}

// ---------------------------------------------------------------- strategies

/// Which values the strategies draw from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Space {
    /// Arbitrary values (wire-format tests).
    Wide,
    /// Small ranges and pools so that messages collide (replica fuzzing).
    Pooled,
}

fn num(space: Space, small: std::ops::Range<u64>) -> BoxedStrategy<u64> {
    match space {
        Space::Wide => prop_oneof![0..8u64, any::<u64>()].boxed(),
        Space::Pooled => small.boxed(),
    }
}

/// A view number.
pub fn arb_view(space: Space) -> BoxedStrategy<View> {
    num(space, 0..6)
}

/// A sequence number.
pub fn arb_seq(space: Space) -> BoxedStrategy<Seq> {
    num(space, 0..80)
}

/// A replica id with a key: `0..4`.
pub fn arb_replica() -> BoxedStrategy<ReplicaId> {
    (0..N).boxed()
}

/// A digest.
pub fn arb_digest(space: Space) -> BoxedStrategy<Digest> {
    match space {
        Space::Wide => any::<[u8; 32]>().prop_map(Digest).boxed(),
        Space::Pooled => select(digest_pool()).boxed(),
    }
}

fn bytes(max: usize) -> BoxedStrategy<Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..max).boxed()
}

/// A signed client request.
pub fn arb_request(space: Space) -> BoxedStrategy<SignedRequest> {
    match space {
        Space::Wide => (0..4u8, num(space, 0..8), bytes(48))
            .prop_map(|(c, rid, op)| request(c, rid, op))
            .boxed(),
        Space::Pooled => select(request_pool().to_vec()).boxed(),
    }
}

/// A batch of 0..5 requests.
pub fn arb_batch(space: Space) -> BoxedStrategy<Batch> {
    match space {
        Space::Wide => proptest::collection::vec(arb_request(space), 0..5)
            .prop_map(|requests| Batch { requests })
            .boxed(),
        Space::Pooled => select(batch_pool().to_vec()).boxed(),
    }
}

/// A signed pre-prepare header (signed by the view's primary).
pub fn arb_signed_pp(space: Space) -> BoxedStrategy<Signed<PrePrepare>> {
    (arb_view(space), arb_seq(space), arb_digest(space))
        .prop_map(|(v, s, d)| signed_pp(v, s, d))
        .boxed()
}

/// A pre-prepare with its batch; the digest matches the batch most of the time.
pub fn arb_pre_prepare(space: Space) -> BoxedStrategy<(Signed<PrePrepare>, Batch)> {
    (
        arb_view(space),
        arb_seq(space),
        arb_batch(space),
        proptest::bool::weighted(0.8),
        arb_digest(space),
    )
        .prop_map(|(v, s, batch, matching, other)| {
            let d = if matching { batch.digest() } else { other };
            (signed_pp(v, s, d), batch)
        })
        .boxed()
}

/// A signed prepare.
pub fn arb_prepare(space: Space) -> BoxedStrategy<Signed<Prepare>> {
    (
        arb_view(space),
        arb_seq(space),
        arb_digest(space),
        arb_replica(),
    )
        .prop_map(|(v, s, d, r)| prepare(v, s, d, r))
        .boxed()
}

/// A signed commit.
pub fn arb_commit(space: Space) -> BoxedStrategy<Signed<Commit>> {
    (
        arb_view(space),
        arb_seq(space),
        arb_digest(space),
        arb_replica(),
    )
        .prop_map(|(v, s, d, r)| commit(v, s, d, r))
        .boxed()
}

/// Replica `replica`'s reply to request 1 of client 0, at seq 1, alone in its batch.
pub fn signed_reply(replica: ReplicaId, result: Vec<u8>) -> SignedReply {
    let body = Reply {
        view: 0,
        seq: 1,
        client: client_key(0).public(),
        request_id: 1,
        request: request(0, 1, vec![]).body.digest(),
        replica,
        result,
    };
    SignedReply::sign_batch(vec![body], replica_key(replica)).remove(0)
}

/// A signed reply, taken from a batch of one to five replies signed together.
pub fn arb_reply(space: Space) -> BoxedStrategy<SignedReply> {
    (
        arb_view(space),
        arb_seq(space),
        0..4u8,
        num(space, 0..8),
        arb_replica(),
        bytes(32),
        1..6usize,
        0..6usize,
    )
        .prop_map(|(view, seq, c, request_id, replica, result, batch, pick)| {
            let bodies = (0..batch as u64)
                .map(|k| Reply {
                    view,
                    seq,
                    client: client_key(c).public(),
                    request_id: request_id + k,
                    request: Digest::of(&(request_id + k).to_le_bytes()),
                    replica,
                    result: result.clone(),
                })
                .collect();
            let mut all = SignedReply::sign_batch(bodies, replica_key(replica));
            all.swap_remove(pick % batch)
        })
        .boxed()
}

/// A signed checkpoint. Pooled: mostly multiples of K with the executor's digest.
pub fn arb_checkpoint(space: Space) -> BoxedStrategy<Signed<Checkpoint>> {
    match space {
        Space::Wide => (num(space, 0..8), arb_digest(space), arb_replica())
            .prop_map(|(s, d, r)| checkpoint(s, d, r))
            .boxed(),
        Space::Pooled => (
            prop_oneof![4 => (0..6u64).prop_map(|i| i * K), 1 => 0..80u64],
            proptest::bool::weighted(0.8),
            arb_replica(),
        )
            .prop_map(|(s, honest, r)| {
                let d = if honest {
                    state_digest(s)
                } else {
                    Digest::of(b"lie")
                };
                checkpoint(s, d, r)
            })
            .boxed(),
    }
}

fn bits(mask: u8, of: &[ReplicaId]) -> Vec<ReplicaId> {
    of.iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, r)| *r)
        .collect()
}

fn backups(view: View) -> Vec<ReplicaId> {
    (0..N).filter(|r| *r != primary(view)).collect()
}

/// A prepared certificate. Pooled: prepares match the pre-prepare and come from
/// distinct backups (2 or 3 of them most of the time).
pub fn arb_prepared(space: Space) -> BoxedStrategy<PreparedProof> {
    match space {
        Space::Wide => (
            arb_pre_prepare(space),
            proptest::collection::vec(arb_prepare(space), 0..4),
        )
            .prop_map(|((pre_prepare, batch), prepares)| PreparedProof {
                pre_prepare,
                batch,
                prepares,
            })
            .boxed(),
        Space::Pooled => (
            arb_view(space),
            arb_seq(space),
            arb_batch(space),
            voter_mask(),
        )
            .prop_map(|(v, s, b, mask)| prepared_cert(v, s, b, &bits(mask, &backups(v))))
            .boxed(),
    }
}

fn voter_mask() -> BoxedStrategy<u8> {
    prop_oneof![3 => Just(0b011u8), 2 => Just(0b111u8), 2 => 0..8u8].boxed()
}

/// A commit certificate. Pooled: q matching commits from distinct replicas, mostly.
pub fn arb_committed(space: Space) -> BoxedStrategy<CommittedProof> {
    match space {
        Space::Wide => (
            arb_pre_prepare(space),
            proptest::collection::vec(arb_commit(space), 0..4),
        )
            .prop_map(|((pre_prepare, batch), commits)| CommittedProof {
                pre_prepare,
                batch,
                commits,
            })
            .boxed(),
        Space::Pooled => (
            arb_view(space),
            arb_seq(space),
            arb_batch(space),
            prop_oneof![3 => Just(0b0111u8), 1 => 0..16u8],
        )
            .prop_map(|(v, s, batch, mask)| {
                let d = batch.digest();
                CommittedProof {
                    pre_prepare: signed_pp(v, s, d),
                    commits: bits(mask, &[0, 1, 2, 3])
                        .into_iter()
                        .map(|r| commit(v, s, d, r))
                        .collect(),
                    batch,
                }
            })
            .boxed(),
    }
}

/// A stable-checkpoint proof: `(stable_seq, proof)`. Pooled: valid most of the time.
fn arb_stable(space: Space) -> BoxedStrategy<(Seq, Vec<Signed<Checkpoint>>)> {
    match space {
        Space::Wide => (
            num(space, 0..8),
            proptest::collection::vec(arb_checkpoint(space), 0..4),
        )
            .boxed(),
        Space::Pooled => (
            prop_oneof![3 => Just(0u64), 2 => (1..4u64).prop_map(|i| i * K)],
            proptest::bool::weighted(0.9),
            prop_oneof![3 => Just(0b0111u8), 1 => 0..16u8],
        )
            .prop_map(|(s, honest, mask)| {
                if s == 0 {
                    return (0, Vec::new());
                }
                let d = if honest {
                    state_digest(s)
                } else {
                    Digest::of(b"lie")
                };
                let proof = bits(mask, &[0, 1, 2, 3])
                    .into_iter()
                    .map(|r| checkpoint(s, d, r))
                    .collect();
                (s, proof)
            })
            .boxed(),
    }
}

/// A pooled view change from `replica` for `new_view`, valid most of the time: its
/// certificates are from lower views and inside the sender's window.
pub fn pooled_view_change_for(new_view: View, replica: ReplicaId) -> BoxedStrategy<ViewChange> {
    (
        arb_stable(Space::Pooled),
        proptest::collection::vec(
            (0..6u64, 0..34u64, arb_batch(Space::Pooled), voter_mask()),
            0..3,
        ),
    )
        .prop_map(move |((stable_seq, checkpoint_proof), certs)| {
            let mut prepared: Vec<PreparedCert> = Vec::new();
            for (view_raw, off, batch, mask) in certs {
                let view = view_raw % new_view.max(1);
                let seq = stable_seq + 1 + off;
                prepared.push(prepared_cert(view, seq, batch, &bits(mask, &backups(view))).cert());
            }
            ViewChange {
                new_view,
                stable_seq,
                checkpoint_proof,
                prepared,
                replica,
            }
        })
        .boxed()
}

/// A signed view change.
pub fn arb_view_change(space: Space) -> BoxedStrategy<Signed<ViewChange>> {
    match space {
        Space::Wide => (
            arb_view(space),
            arb_stable(space),
            proptest::collection::vec(arb_prepared(space), 0..3),
            arb_replica(),
        )
            .prop_map(
                |(new_view, (stable_seq, checkpoint_proof), prepared, replica)| {
                    Signed::sign(
                        ViewChange {
                            new_view,
                            stable_seq,
                            checkpoint_proof,
                            prepared: prepared.iter().map(PreparedProof::cert).collect(),
                            replica,
                        },
                        replica_key(replica),
                    )
                },
            )
            .boxed(),
        Space::Pooled => (1..7u64, arb_replica())
            .prop_flat_map(|(v, r)| pooled_view_change_for(v, r))
            .prop_map(|vc| {
                let key = replica_key(vc.replica);
                Signed::sign(vc, key)
            })
            .boxed(),
    }
}

/// A signed new view. Pooled: view changes from distinct replicas and, most of the
/// time, `O` computed from them as an honest primary would.
pub fn arb_new_view(space: Space) -> BoxedStrategy<Signed<NewView>> {
    match space {
        Space::Wide => (
            arb_view(space),
            proptest::collection::vec(arb_view_change(space), 0..3),
            proptest::collection::vec(arb_signed_pp(space), 0..4),
        )
            .prop_map(|(view, view_changes, pre_prepares)| {
                Signed::sign(
                    NewView {
                        view,
                        view_changes,
                        pre_prepares,
                    },
                    replica_key(primary(view)),
                )
            })
            .boxed(),
        Space::Pooled => (
            1..7u64,
            prop_oneof![3 => Just(0b0111u8), 3 => Just(0b1110u8), 2 => 0..16u8],
        )
            .prop_flat_map(|(view, mask)| {
                let vcs: Vec<BoxedStrategy<ViewChange>> = bits(mask, &[0, 1, 2, 3])
                    .into_iter()
                    .map(|r| pooled_view_change_for(view, r))
                    .collect();
                (
                    Just(view),
                    vcs,
                    proptest::bool::weighted(0.8),
                    proptest::collection::vec(arb_signed_pp(Space::Pooled), 0..3),
                )
            })
            .prop_map(|(view, vcs, honest, junk)| {
                let vcs: Vec<Signed<ViewChange>> = vcs
                    .into_iter()
                    .map(|vc| {
                        let key = replica_key(vc.replica);
                        Signed::sign(vc, key)
                    })
                    .collect();
                if honest {
                    honest_new_view(view, vcs)
                } else {
                    Signed::sign(
                        NewView {
                            view,
                            view_changes: vcs,
                            pre_prepares: junk,
                        },
                        replica_key(primary(view)),
                    )
                }
            })
            .boxed(),
    }
}

/// Evidence of every kind (the accusation need not hold).
pub fn arb_evidence(space: Space) -> BoxedStrategy<Evidence> {
    prop_oneof![
        (arb_signed_pp(space), arb_signed_pp(space))
            .prop_map(|(a, b)| Evidence::Equivocation { a, b }),
        arb_pre_prepare(space)
            .prop_map(|(pre_prepare, batch)| Evidence::BadPrePrepare { pre_prepare, batch }),
        (arb_prepare(space), arb_prepare(space))
            .prop_map(|(a, b)| Evidence::DoublePrepare { a, b }),
        (arb_commit(space), arb_commit(space)).prop_map(|(a, b)| Evidence::DoubleCommit { a, b }),
        (
            arb_checkpoint(space),
            proptest::collection::vec(arb_checkpoint(space), 0..4)
        )
            .prop_map(|(lie, proof)| Evidence::CheckpointLie { lie, proof }),
        arb_new_view(space).prop_map(|nv| Evidence::BadNewView(Box::new(nv))),
    ]
    .boxed()
}

/// The number of `Message` variants replicas exchange (all but the client's `Query` and
/// `Answer`).
pub const MESSAGE_KINDS: usize = 16;

/// A message of kind `kind` (`0..MESSAGE_KINDS`: the variants in declaration order,
/// skipping `Query` and `Answer`).
pub fn arb_message_of_kind(kind: usize, space: Space) -> BoxedStrategy<Message> {
    match kind {
        0 => arb_request(space).prop_map(Message::Request).boxed(),
        1 => arb_pre_prepare(space)
            .prop_map(|(pre_prepare, batch)| Message::PrePrepare { pre_prepare, batch })
            .boxed(),
        2 => arb_prepare(space).prop_map(Message::Prepare).boxed(),
        3 => arb_commit(space).prop_map(Message::Commit).boxed(),
        4 => arb_reply(space).prop_map(Message::Reply).boxed(),
        5 => arb_checkpoint(space).prop_map(Message::Checkpoint).boxed(),
        6 => arb_view_change(space)
            .prop_map(|vc| Message::ViewChange(Box::new(vc)))
            .boxed(),
        7 => arb_new_view(space)
            .prop_map(|nv| Message::NewView(Box::new(nv)))
            .boxed(),
        8 => arb_evidence(space)
            .prop_map(|e| Message::Evidence(Box::new(e)))
            .boxed(),
        9 => (arb_seq(space), arb_seq(space))
            .prop_map(|(from_seq, to_seq)| Message::FetchCommitted { from_seq, to_seq })
            .boxed(),
        10 => (
            prop_oneof![
                1 => Just(Vec::new()),
                1 => proptest::collection::vec(arb_checkpoint(space), 0..4),
                2 => arb_stable(space).prop_map(|(_, p)| p),
            ],
            proptest::collection::vec(arb_committed(space), 0..3),
        )
            .prop_map(|(stable_proof, proofs)| Message::Committed {
                stable_proof,
                proofs,
            })
            .boxed(),
        11 => (arb_view(space), arb_seq(space))
            .prop_map(|(view, last_executed)| Message::Status {
                view,
                last_executed,
            })
            .boxed(),
        12 => arb_seq(space)
            .prop_map(|seq| Message::StateRequest { seq })
            .boxed(),
        13 => (arb_seq(space), any::<u32>(), any::<u32>(), bytes(64))
            .prop_map(|(seq, index, total, data)| Message::StateChunk {
                seq,
                index,
                total,
                data,
            })
            .boxed(),
        14 => (arb_seq(space), arb_digest(space))
            .prop_map(|(seq, digest)| Message::FetchBatch { seq, digest })
            .boxed(),
        15 => (arb_seq(space), arb_batch(space))
            .prop_map(|(seq, batch)| Message::BatchReply { seq, batch })
            .boxed(),
        _ => panic!("no message kind {kind}"),
    }
}

/// A message of any variant.
pub fn arb_message(space: Space) -> BoxedStrategy<Message> {
    proptest::strategy::Union::new((0..MESSAGE_KINDS).map(|k| arb_message_of_kind(k, space)))
        .boxed()
}

/// The replica a message claims as its sender, if it names one.
pub fn claimed_sender(msg: &Message) -> Option<ReplicaId> {
    match msg {
        Message::Prepare(p) => Some(p.body.replica),
        Message::Commit(c) => Some(c.body.replica),
        Message::Checkpoint(c) => Some(c.body.replica),
        Message::ViewChange(vc) => Some(vc.body.replica),
        Message::PrePrepare { pre_prepare, .. } => Some(primary(pre_prepare.body.view)),
        Message::NewView(nv) => Some(primary(nv.body.view)),
        _ => None,
    }
}
