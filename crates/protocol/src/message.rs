//! The wire messages (docs/protocol.md, "Messages, signatures and decoding").
//!
//! Every protocol message is signed by its sender over a domain tag naming its kind plus
//! the canonical postcard encoding of its body ([`Signed`]). Replies are the exception:
//! a replica signs the Merkle root of a whole batch's replies once, and each reply
//! carries its path to that root ([`SignedReply`]). Nested certificates (view
//! changes, new views, commit proofs) carry the original signed messages, so any
//! replica can re-check them.

use pbft_crypto::{CryptoError, Digest, Domain, Keypair, PublicKey, Signature};
use serde::{Deserialize, Serialize};

/// Index of a validator in the cluster file, `0..n`.
pub type ReplicaId = u32;
/// A view number; `primary(v) = v mod n`.
pub type View = u64;
/// A sequence number assigned by the primary; 0 is the genesis checkpoint.
pub type Seq = u64;
/// A client's request counter; exactly-once is per `(client, request_id)`.
pub type RequestId = u64;

/// A body that can be signed: its kind selects the signature domain.
pub trait Signable: Serialize {
    /// The signature domain of this message kind.
    const DOMAIN: Domain;

    /// The canonical bytes that are signed (postcard encoding of the body).
    fn signing_bytes(&self) -> Vec<u8> {
        // Encoding a plain in-memory struct into a Vec cannot fail.
        postcard::to_allocvec(self).unwrap_or_default()
    }
}

/// A message body with its sender's signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signed<T> {
    /// The signed content.
    pub body: T,
    /// ed25519 signature over `T::DOMAIN` tag + `body` encoding.
    pub sig: Signature,
}

impl<T: Signable> Signed<T> {
    /// Signs `body` with `key`.
    pub fn sign(body: T, key: &Keypair) -> Self {
        let sig = key.sign(T::DOMAIN, &body.signing_bytes());
        Signed { body, sig }
    }
}

/// A client's operation on the ledger. The protocol treats `op` as opaque bytes; the
/// executor decodes it (a malformed op gets a failed receipt, identically everywhere).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// The client's account and identity.
    pub client: PublicKey,
    /// Per-client counter, starting at 1.
    pub request_id: RequestId,
    /// The encoded operation.
    pub op: Vec<u8>,
}

impl Signable for Request {
    const DOMAIN: Domain = Domain::Request;
}

impl Request {
    /// The request's digest: SHA-256 over exactly what the client's signature covers
    /// (the request domain's tag and the body's encoding). A reply carries it, so a
    /// client matches a reply to the very request it signed, not only to its
    /// (client, request id); the executor records it with the receipt, so a request id
    /// reused for another operation is told apart from a retransmission.
    pub fn digest(&self) -> Digest {
        Digest::of_parts(&[Domain::Request.tag(), &self.signing_bytes()])
    }
}

/// A client request with the client's signature.
pub type SignedRequest = Signed<Request>;

impl Signed<Request> {
    /// The key that identifies this request for exactly-once: `(client, request_id)`.
    pub fn key(&self) -> (PublicKey, RequestId) {
        (self.body.client, self.body.request_id)
    }
}

/// An ordered list of client requests; the unit the primary assigns a sequence number to.
/// The empty batch is the null batch used to fill gaps in a new view.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    /// The requests, in execution order.
    pub requests: Vec<SignedRequest>,
}

impl Batch {
    /// The null batch.
    pub fn null() -> Batch {
        Batch::default()
    }

    /// `H(batch)`: SHA-256 of the canonical encoding.
    pub fn digest(&self) -> Digest {
        Digest::of(&postcard::to_allocvec(self).unwrap_or_default())
    }

    /// The digest of the null batch.
    pub fn null_digest() -> Digest {
        Batch::null().digest()
    }
}

/// `PrePrepare{view, seq, digest}`: the primary's proposal. The batch travels beside the
/// signed header so certificates can carry the header alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrePrepare {
    /// View in which the batch is proposed.
    pub view: View,
    /// Sequence number assigned to the batch.
    pub seq: Seq,
    /// `H(batch)`.
    pub digest: Digest,
}

impl Signable for PrePrepare {
    const DOMAIN: Domain = Domain::PrePrepare;
}

/// `Prepare{view, seq, digest, replica}`: a backup accepted the pre-prepare.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prepare {
    /// View of the vote.
    pub view: View,
    /// Slot of the vote.
    pub seq: Seq,
    /// Digest voted for.
    pub digest: Digest,
    /// The voter.
    pub replica: ReplicaId,
}

impl Signable for Prepare {
    const DOMAIN: Domain = Domain::Prepare;
}

/// `Commit{view, seq, digest, replica}`: the sender has prepared the slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    /// View of the vote.
    pub view: View,
    /// Slot of the vote.
    pub seq: Seq,
    /// Digest voted for.
    pub digest: Digest,
    /// The voter.
    pub replica: ReplicaId,
}

impl Signable for Commit {
    const DOMAIN: Domain = Domain::Commit;
}

/// `Reply{view, seq, client, request_id, request, replica, result}`: the result of one
/// executed request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    /// The replica's view when it executed the request (informational for the client).
    pub view: View,
    /// Sequence number of the batch that carried the request.
    pub seq: Seq,
    /// The client the reply is for.
    pub client: PublicKey,
    /// The request answered.
    pub request_id: RequestId,
    /// [`Request::digest`] of the request answered: the one the client signed, which
    /// the result is the outcome of.
    pub request: Digest,
    /// The replica that executed it.
    pub replica: ReplicaId,
    /// The executor's encoded receipt; f+1 identical results make it final.
    pub result: Vec<u8>,
}

impl Reply {
    /// The Merkle leaf of this reply: a hash of its canonical encoding under a tag of
    /// its own, so a leaf can never be mistaken for another kind of signed body.
    pub fn leaf(&self) -> Digest {
        // Encoding a plain in-memory struct into a Vec cannot fail.
        let bytes = postcard::to_allocvec(self).unwrap_or_default();
        Digest::of_parts(&[b"pbft/reply-leaf", &bytes])
    }
}

/// What a replica signs once for all the replies of one executed batch: the Merkle root
/// of their [`Reply::leaf`]s. One signature per batch, not one per request: a signature
/// per reply would be the largest single cost on a validator's consensus thread
/// (decision 0031).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyRoot {
    /// The replica that executed the batch.
    pub replica: ReplicaId,
    /// Sequence number of the batch.
    pub seq: Seq,
    /// Number of replies (leaves) under the root.
    pub count: u32,
    /// Merkle root of the replies' leaves, in the executor's order.
    pub root: Digest,
}

impl Signable for ReplyRoot {
    const DOMAIN: Domain = Domain::Reply;
}

/// A reply with its authenticator: the replica's signature on the batch's
/// [`ReplyRoot`] and this reply's Merkle path to that root. Anyone holding the
/// replica's public key can check it alone, as with a plain signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedReply {
    /// The reply.
    pub body: Reply,
    /// Position of this reply among the batch's replies.
    pub index: u32,
    /// Number of replies in the batch.
    pub count: u32,
    /// Sibling hashes from this reply's leaf up to the root.
    pub path: Vec<Digest>,
    /// Signature over the [`ReplyRoot`] `{body.replica, body.seq, count, root}`.
    pub sig: Signature,
}

impl SignedReply {
    /// Signs all the replies of one batch with a single signature. The replies must all
    /// come from this replica and one sequence number; they come back in input order.
    pub fn sign_batch(replies: Vec<Reply>, key: &Keypair) -> Vec<SignedReply> {
        let Some(first) = replies.first() else {
            return Vec::new();
        };
        let (replica, seq) = (first.replica, first.seq);
        assert!(
            replies.iter().all(|r| r.replica == replica && r.seq == seq),
            "one reply root covers one replica's replies for one batch"
        );
        let leaves: Vec<Digest> = replies.iter().map(Reply::leaf).collect();
        let (root, paths) = pbft_crypto::merkle::root_and_paths(&leaves);
        let count = u32::try_from(replies.len()).unwrap_or(u32::MAX);
        let sig = Signed::sign(
            ReplyRoot {
                replica,
                seq,
                count,
                root,
            },
            key,
        )
        .sig;
        replies
            .into_iter()
            .zip(paths)
            .enumerate()
            .map(|(i, (body, path))| SignedReply {
                body,
                index: i as u32,
                count,
                path,
                sig,
            })
            .collect()
    }

    /// The signed root this reply claims, or `None` if its path does not fit its index
    /// and count.
    pub fn claimed_root(&self) -> Option<ReplyRoot> {
        let root = pbft_crypto::merkle::root_from_path(
            &self.body.leaf(),
            u64::from(self.index),
            u64::from(self.count),
            &self.path,
        )?;
        Some(ReplyRoot {
            replica: self.body.replica,
            seq: self.body.seq,
            count: self.count,
            root,
        })
    }

    /// Checks the reply against the key of the replica it names.
    pub fn verify(&self, key: &PublicKey) -> Result<(), CryptoError> {
        let root = self.claimed_root().ok_or(CryptoError::BadSignature)?;
        pbft_crypto::verify(key, Domain::Reply, &root.signing_bytes(), &self.sig)
    }
}

/// `Checkpoint{seq, state_digest, replica}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// A multiple of the checkpoint interval K.
    pub seq: Seq,
    /// Digest of the whole ledger state after executing `seq`.
    pub state_digest: Digest,
    /// The sender.
    pub replica: ReplicaId,
}

impl Signable for Checkpoint {
    const DOMAIN: Domain = Domain::Checkpoint;
}

/// Proof that a slot prepared, as a replica keeps it: the primary's pre-prepare, the
/// batch, and 2f matching prepares from distinct backups. On the wire (in a view change)
/// it travels without its batch, as a [`PreparedCert`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreparedProof {
    /// The pre-prepare, signed by `primary(view)`.
    pub pre_prepare: Signed<PrePrepare>,
    /// The batch whose digest the pre-prepare names.
    pub batch: Batch,
    /// 2f prepares for the same (view, seq, digest) from distinct backups.
    pub prepares: Vec<Signed<Prepare>>,
}

impl PreparedProof {
    /// The certificate without its batch, as a view change carries it.
    pub fn cert(&self) -> PreparedCert {
        PreparedCert {
            pre_prepare: self.pre_prepare.clone(),
            prepares: self.prepares.clone(),
        }
    }
}

/// Proof that a slot prepared, without the batch: the primary's signed pre-prepare
/// (which names the batch by its digest) and 2f matching prepares from distinct backups.
/// A view change carries these, so that its size does not depend on the batches; a
/// replica that needs a batch named here fetches it ([`Message::FetchBatch`]) and checks
/// it against the digest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreparedCert {
    /// The pre-prepare, signed by `primary(view)`.
    pub pre_prepare: Signed<PrePrepare>,
    /// Exactly 2f prepares for the same (view, seq, digest) from distinct backups.
    pub prepares: Vec<Signed<Prepare>>,
}

/// Proof that a slot committed: the pre-prepare, the batch and q matching commits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedProof {
    /// The pre-prepare, signed by `primary(view)`.
    pub pre_prepare: Signed<PrePrepare>,
    /// The batch whose digest the pre-prepare names.
    pub batch: Batch,
    /// q commits for the same (view, seq, digest) from distinct replicas.
    pub commits: Vec<Signed<Commit>>,
}

/// `ViewChange{new_view, stable_seq, C, P, replica}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewChange {
    /// The view the sender moves to.
    pub new_view: View,
    /// The sender's last stable checkpoint `h`.
    pub stable_seq: Seq,
    /// `C`: q matching checkpoint messages for `stable_seq` (empty for genesis).
    pub checkpoint_proof: Vec<Signed<Checkpoint>>,
    /// `P`: for every prepared slot above `h`, the certificate from the highest view
    /// (headers and votes only: batches are fetched by digest when needed).
    pub prepared: Vec<PreparedCert>,
    /// The sender.
    pub replica: ReplicaId,
}

impl Signable for ViewChange {
    const DOMAIN: Domain = Domain::ViewChange;
}

/// `NewView{view, V, O}` from the new primary.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewView {
    /// The view being started.
    pub view: View,
    /// `V`: q view changes for `view` from distinct replicas.
    pub view_changes: Vec<Signed<ViewChange>>,
    /// `O`: pre-prepares in `view` for every slot in `(min_s, max_s]`.
    pub pre_prepares: Vec<Signed<PrePrepare>>,
}

impl Signable for NewView {
    const DOMAIN: Domain = Domain::NewView;
}

/// Signed proof that a validator misbehaved. Anyone can re-check it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Evidence {
    /// Two pre-prepares from the primary for one (view, seq) with different digests.
    Equivocation {
        /// One proposal.
        a: Signed<PrePrepare>,
        /// A conflicting proposal.
        b: Signed<PrePrepare>,
    },
    /// A pre-prepare whose digest does not match its batch, or whose batch holds a
    /// request without a valid client signature.
    BadPrePrepare {
        /// The signed header.
        pre_prepare: Signed<PrePrepare>,
        /// The batch it came with.
        batch: Batch,
    },
    /// Two prepares from one replica for one (view, seq) with different digests.
    DoublePrepare {
        /// One vote.
        a: Signed<Prepare>,
        /// A conflicting vote.
        b: Signed<Prepare>,
    },
    /// Two commits from one replica for one (view, seq) with different digests.
    DoubleCommit {
        /// One vote.
        a: Signed<Commit>,
        /// A conflicting vote.
        b: Signed<Commit>,
    },
    /// A checkpoint whose digest contradicts a stable checkpoint proof.
    CheckpointLie {
        /// The lie.
        lie: Signed<Checkpoint>,
        /// q matching checkpoints for the same seq with another digest.
        proof: Vec<Signed<Checkpoint>>,
    },
    /// A new view whose `O` differs from the one computed from its `V`.
    BadNewView(Box<Signed<NewView>>),
}

/// Everything validators send to each other and to clients.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// A client request (from a client, or forwarded by a backup to the primary).
    Request(SignedRequest),
    /// A proposal with its batch.
    PrePrepare {
        /// The signed header.
        pre_prepare: Signed<PrePrepare>,
        /// The batch.
        batch: Batch,
    },
    /// A prepare vote.
    Prepare(Signed<Prepare>),
    /// A commit vote.
    Commit(Signed<Commit>),
    /// A reply to a client.
    Reply(SignedReply),
    /// A checkpoint vote.
    Checkpoint(Signed<Checkpoint>),
    /// A view change.
    ViewChange(Box<Signed<ViewChange>>),
    /// A new view.
    NewView(Box<Signed<NewView>>),
    /// Proof of misbehaviour, gossiped so every honest validator holds it.
    Evidence(Box<Evidence>),
    /// A lagging replica asks for committed batches `from_seq..=to_seq`.
    FetchCommitted {
        /// First sequence number wanted.
        from_seq: Seq,
        /// Last sequence number wanted.
        to_seq: Seq,
    },
    /// Answer to [`Message::FetchCommitted`]: proofs of committed slots, and the stable
    /// checkpoint proof when the asker is below it.
    Committed {
        /// The sender's stable checkpoint proof, if the asker needs state transfer.
        stable_proof: Vec<Signed<Checkpoint>>,
        /// Committed slots, in order.
        proofs: Vec<CommittedProof>,
    },
    /// A heartbeat: how far the sender has got. Unsigned (the transport authenticates
    /// the sender); it only prompts a catch-up request, whose answer carries proofs.
    Status {
        /// The sender's view.
        view: View,
        /// The sender's last executed sequence number.
        last_executed: Seq,
    },
    /// Ask for the snapshot of the stable checkpoint at `seq`.
    StateRequest {
        /// The checkpoint wanted.
        seq: Seq,
    },
    /// One chunk of a snapshot. It is checked against the stable-checkpoint digest
    /// before anything is installed, so it needs no signature.
    StateChunk {
        /// The checkpoint this chunk belongs to.
        seq: Seq,
        /// Chunk index, from 0.
        index: u32,
        /// Number of chunks in the snapshot.
        total: u32,
        /// Snapshot bytes.
        data: Vec<u8>,
    },
    /// A read-only question from a client or an operator tool to one validator. The
    /// node answers it from local state; it never reaches the replica core and is not
    /// ordered, so the asker compares answers from several validators.
    Query {
        /// Chosen by the asker, echoed in the answer.
        id: u64,
        /// The question.
        query: Query,
    },
    /// A validator's answer to a [`Message::Query`]. Unsigned: the transport
    /// authenticates the validator by its pinned key.
    Answer {
        /// The query's id.
        id: u64,
        /// The answer.
        answer: Answer,
    },
    /// Ask for the batch with `digest` at `seq`: a replica that installs a new view, or
    /// the new primary about to send one, and lacks a batch `O` names by its digest.
    FetchBatch {
        /// The sequence number the batch is proposed at.
        seq: Seq,
        /// Its digest, from a signed pre-prepare header.
        digest: Digest,
    },
    /// Answer to [`Message::FetchBatch`]. Unsigned: the asker uses it only if its digest
    /// is the one it asked for.
    BatchReply {
        /// The sequence number asked about.
        seq: Seq,
        /// The batch.
        batch: Batch,
    },
    /// A validator that started without its consensus log (a wiped disk) asks how far
    /// the others got, to learn below which sequence number it may have voted before
    /// (see [`crate::recovery`]).
    RecoveryQuery {
        /// Chosen afresh at each recovering start, echoed in the answers: an answer
        /// to an earlier start's question does not count.
        nonce: u64,
    },
    /// Answer to [`Message::RecoveryQuery`]: the sender's stable checkpoint with its
    /// proof (empty at genesis). Unsigned: the transport authenticates the sender, and
    /// the proof carries its own signatures.
    RecoveryReply {
        /// The query's nonce.
        nonce: u64,
        /// q checkpoint messages proving the sender's stable checkpoint.
        stable_proof: Vec<Signed<Checkpoint>>,
        /// The sender has signed nothing yet and executed nothing: it is at genesis
        /// (started on an empty disk, or the cluster's first start).
        blank: bool,
    },
}

/// A read-only question to one validator.
// Queries are rare and short-lived; boxing the key would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Query {
    /// Where the validator stands (for `pbft status`).
    Status,
    /// An account in the validator's executed state: its balance, and the request id
    /// its client should use next (so a restarted client continues its sequence).
    Account(PublicKey),
}

/// A validator's answer to a [`Query`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Answer {
    /// Answer to [`Query::Status`].
    Status(NodeStatus),
    /// Answer to [`Query::Account`].
    Account {
        /// The account asked about.
        account: PublicKey,
        /// Its balance; `None` if the account does not exist.
        balance: Option<u64>,
        /// One more than the highest request id of this client executed so far.
        next_request_id: u64,
        /// The last executed sequence number the answer reflects.
        height: Seq,
    },
}

/// A validator's own account of its progress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// Its replica id.
    pub replica: ReplicaId,
    /// Its current view.
    pub view: View,
    /// True while it is changing views.
    pub changing_view: bool,
    /// Last executed sequence number.
    pub last_executed: Seq,
    /// Last stable checkpoint.
    pub stable_checkpoint: Seq,
    /// Hash of its ledger's head block.
    pub head_hash: Digest,
    /// Why it stopped taking part, if it did.
    pub halted: Option<String>,
    /// The validators it holds signed evidence of misbehaviour against.
    pub evidence_against: Vec<ReplicaId>,
}

impl Message {
    /// A short name of the message kind, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Request(_) => "request",
            Message::PrePrepare { .. } => "pre_prepare",
            Message::Prepare(_) => "prepare",
            Message::Commit(_) => "commit",
            Message::Reply(_) => "reply",
            Message::Checkpoint(_) => "checkpoint",
            Message::ViewChange(_) => "view_change",
            Message::NewView(_) => "new_view",
            Message::Evidence(_) => "evidence",
            Message::FetchCommitted { .. } => "fetch_committed",
            Message::Committed { .. } => "committed",
            Message::Status { .. } => "status",
            Message::FetchBatch { .. } => "fetch_batch",
            Message::BatchReply { .. } => "batch_reply",
            Message::RecoveryQuery { .. } => "recovery_query",
            Message::RecoveryReply { .. } => "recovery_reply",
            Message::StateRequest { .. } => "state_request",
            Message::StateChunk { .. } => "state_chunk",
            Message::Query { .. } => "query",
            Message::Answer { .. } => "answer",
        }
    }
}

/// Who the evidence accuses.
impl Evidence {
    /// The validator the evidence proves faulty, given the cluster size.
    pub fn accused(&self, n: u32) -> ReplicaId {
        let primary = |v: View| (v % u64::from(n.max(1))) as ReplicaId;
        match self {
            Evidence::Equivocation { a, .. } => primary(a.body.view),
            Evidence::BadPrePrepare { pre_prepare, .. } => primary(pre_prepare.body.view),
            Evidence::DoublePrepare { a, .. } => a.body.replica,
            Evidence::DoubleCommit { a, .. } => a.body.replica,
            Evidence::CheckpointLie { lie, .. } => lie.body.replica,
            Evidence::BadNewView(nv) => primary(nv.body.view),
        }
    }

    /// A short name of the evidence kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Evidence::Equivocation { .. } => "equivocation",
            Evidence::BadPrePrepare { .. } => "bad_pre_prepare",
            Evidence::DoublePrepare { .. } => "double_prepare",
            Evidence::DoubleCommit { .. } => "double_commit",
            Evidence::CheckpointLie { .. } => "checkpoint_lie",
            Evidence::BadNewView(_) => "bad_new_view",
        }
    }
}

/// A holder of a public key for a replica id; used where a signer must be looked up.
pub fn signer_key(validators: &[PublicKey], id: ReplicaId) -> Option<&PublicKey> {
    validators.get(id as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u8) -> Keypair {
        Keypair::from_seed(&[i; 32]).expect("seed")
    }

    fn bodies(n: u64, replica: ReplicaId, seq: Seq) -> Vec<Reply> {
        (0..n)
            .map(|i| Reply {
                view: 0,
                seq,
                client: key(100).public(),
                request_id: i + 1,
                request: Digest::of(&[i as u8]),
                replica,
                result: vec![i as u8; 3],
            })
            .collect()
    }

    #[test]
    fn every_reply_of_a_batch_verifies_with_one_shared_signature() {
        let k = key(1);
        for n in [1, 2, 3, 7, 64] {
            let signed = SignedReply::sign_batch(bodies(n, 2, 9), &k);
            assert_eq!(signed.len() as u64, n);
            for (i, r) in signed.iter().enumerate() {
                assert_eq!(r.body.request_id, i as u64 + 1, "input order kept");
                assert_eq!(r.sig, signed[0].sig, "one signature per batch");
                r.verify(&k.public()).expect("verifies");
                assert!(r.verify(&key(2).public()).is_err(), "another key");
            }
        }
    }

    #[test]
    fn a_changed_reply_or_proof_does_not_verify() {
        let k = key(1);
        let signed = SignedReply::sign_batch(bodies(5, 2, 9), &k);
        let good = &signed[3];
        let tampered: Vec<SignedReply> = vec![
            SignedReply {
                body: Reply {
                    result: vec![9],
                    ..good.body.clone()
                },
                ..good.clone()
            },
            SignedReply {
                body: Reply {
                    seq: 10,
                    ..good.body.clone()
                },
                ..good.clone()
            },
            SignedReply {
                body: Reply {
                    request: Digest::of(b"another request"),
                    ..good.body.clone()
                },
                ..good.clone()
            },
            SignedReply {
                body: Reply {
                    replica: 3,
                    ..good.body.clone()
                },
                ..good.clone()
            },
            // another reply's body with this reply's proof
            SignedReply {
                body: signed[2].body.clone(),
                ..good.clone()
            },
            SignedReply {
                index: 2,
                ..good.clone()
            },
            SignedReply {
                count: 4,
                ..good.clone()
            },
            SignedReply {
                index: 5,
                ..good.clone()
            },
            SignedReply {
                path: good.path[1..].to_vec(),
                ..good.clone()
            },
        ];
        for (i, t) in tampered.iter().enumerate() {
            assert!(t.verify(&k.public()).is_err(), "tampering {i} verified");
        }
    }

    #[test]
    #[should_panic(expected = "one reply root covers")]
    fn replies_of_two_batches_cannot_share_a_root() {
        let mut b = bodies(2, 0, 4);
        b[1].seq = 5;
        SignedReply::sign_batch(b, &key(1));
    }
}
