//! The verification stage that runs before the core.
//!
//! It checks every signature in a message, nested certificates included, against the
//! key of the validator (or client) the message claims as its signer, in one
//! `verify_each` batch. The core only accepts [`Verified`] values, which nothing else can
//! construct, so an unverified message can never reach a protocol rule. The core still
//! checks every protocol rule itself (view, window, quorum, digests).
//!
//! Client requests inside a batch are special: a pre-prepare whose primary signature is
//! valid but whose batch holds a request with a bad client signature is *evidence*
//! against the primary, so it is passed on with the bad indices listed, and the core
//! rejects the batch.
//!
//! Which keys may submit requests is one rule, [`ClientKeys`], applied here to every
//! request wherever it comes from: a client connection, a validator relaying it, a
//! primary's batch, a certificate. A key it does not admit is refused before any
//! signature is checked, so made-up keys cost neither a signature check nor a place in
//! the client table or the replicated state.

use crate::config::{ClientKeys, Config};
use crate::message::{
    Batch, Checkpoint, Commit, Evidence, Message, NewView, PrePrepare, Prepare, PreparedCert,
    ReplicaId, Signable, Signed, SignedRequest, View, ViewChange,
};
use pbft_crypto::{verify_each, Digest, Domain, PublicKey, Signature, VerifyItem};
use thiserror::Error;

/// Why the verification stage dropped a message.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// A signature in the message does not verify.
    #[error("bad signature on {0}")]
    BadSignature(&'static str),
    /// The message names a replica id outside `0..n`.
    #[error("unknown replica id {0}")]
    UnknownReplica(ReplicaId),
    /// The message claims a signer other than the peer that sent it, or a pre-prepare or
    /// new view not signed by the view's primary.
    #[error("{0} does not come from the replica it claims")]
    WrongSender(&'static str),
    /// A message kind replicas do not accept (a reply).
    #[error("unexpected {0} message")]
    Unexpected(&'static str),
    /// A request (or a certificate holding one) from a key that may not submit.
    #[error("{0} from a key that is not a client of the cluster")]
    UnknownClient(&'static str),
}

impl Rejection {
    /// A stable short reason, for rejection counters.
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::BadSignature(_) => "bad_signature",
            Rejection::UnknownReplica(_) => "unknown_replica",
            Rejection::WrongSender(_) => "wrong_sender",
            Rejection::Unexpected(_) => "unexpected",
            Rejection::UnknownClient(_) => "unknown_client",
        }
    }
}

/// A message from a validator whose signatures have all been checked.
#[derive(Clone, Debug)]
pub struct Verified {
    from: ReplicaId,
    msg: Message,
    bad_requests: Vec<u32>,
}

impl Verified {
    /// The authenticated sender.
    pub fn from(&self) -> ReplicaId {
        self.from
    }

    /// The message.
    pub fn message(&self) -> &Message {
        &self.msg
    }

    /// Indices of requests with an invalid client signature, or from a key that may
    /// not submit, in the message's batch (a pre-prepare, or bad-pre-prepare
    /// evidence), in increasing order. Empty for every other message.
    pub fn bad_requests(&self) -> &[u32] {
        &self.bad_requests
    }

    /// Takes the message out.
    pub fn into_parts(self) -> (ReplicaId, Message, Vec<u32>) {
        (self.from, self.msg, self.bad_requests)
    }
}

/// A client request whose signature has been checked.
#[derive(Clone, Debug)]
pub struct VerifiedRequest(SignedRequest);

impl VerifiedRequest {
    /// The request.
    pub fn get(&self) -> &SignedRequest {
        &self.0
    }

    /// Takes the request out.
    pub fn into_inner(self) -> SignedRequest {
        self.0
    }
}

/// Whether signatures are checked. Only benchmarks turn checking off, to measure the
/// protocol core alone; every other path uses [`Verifier::new`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Full,
    SignersOnly,
}

/// Signatures a node has already found valid, so that it checks each one once.
///
/// Only valid signatures are ever inserted. Implementations decide how many to keep
/// (a bounded cache that forgets old entries only costs a second check).
pub trait SignatureCache {
    /// Whether lookups are worth computing ids for (false for [`NoCache`]).
    fn enabled(&self) -> bool {
        true
    }
    /// Whether this signature was found valid before.
    fn contains(&self, id: &Digest) -> bool;
    /// Remember a signature just found valid.
    fn insert(&self, id: Digest);
}

/// No cache: every signature is checked.
pub struct NoCache;

impl SignatureCache for NoCache {
    fn enabled(&self) -> bool {
        false
    }
    fn contains(&self, _: &Digest) -> bool {
        false
    }
    fn insert(&self, _: Digest) {}
}

/// The identity of one signature check: the key, the domain, the signed bytes and
/// the signature, hashed together.
pub fn signature_id(key: &PublicKey, domain: Domain, msg: &[u8], sig: &Signature) -> Digest {
    Digest::of_parts(&[key.as_bytes(), domain.tag(), msg, &sig.to_bytes()])
}

/// The verification stage for one cluster.
#[derive(Clone, Debug)]
pub struct Verifier {
    validators: Vec<PublicKey>,
    clients: ClientKeys,
    mode: Mode,
}

/// What a collected signature is for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Must be valid or the whole message is dropped.
    Strict(&'static str),
    /// A client request inside the message's own batch: invalid ones are reported.
    BatchRequest(u32),
}

struct Collector<'a> {
    validators: &'a [PublicKey],
    clients: &'a ClientKeys,
    items: Vec<(PublicKey, Domain, Vec<u8>, Signature, Role)>,
    /// Indices of requests in the message's own batch from keys that may not submit
    /// (refused without a signature check).
    unknown: Vec<u32>,
}

impl<'a> Collector<'a> {
    fn key(&self, id: ReplicaId) -> Result<PublicKey, Rejection> {
        self.validators
            .get(id as usize)
            .copied()
            .ok_or(Rejection::UnknownReplica(id))
    }

    fn primary(&self, view: View) -> ReplicaId {
        (view % self.validators.len() as u64) as ReplicaId
    }

    fn signed<T: Signable>(&mut self, key: PublicKey, m: &Signed<T>, role: Role) {
        self.items
            .push((key, T::DOMAIN, m.body.signing_bytes(), m.sig, role));
    }

    fn by_replica<T: Signable>(
        &mut self,
        id: ReplicaId,
        m: &Signed<T>,
        what: &'static str,
    ) -> Result<(), Rejection> {
        let key = self.key(id)?;
        self.signed(key, m, Role::Strict(what));
        Ok(())
    }

    fn pre_prepare(&mut self, pp: &Signed<PrePrepare>) -> Result<(), Rejection> {
        let p = self.primary(pp.body.view);
        self.by_replica(p, pp, "pre-prepare")
    }

    /// A client request on its own: refused outright if its key may not submit.
    fn request(&mut self, r: &SignedRequest) -> Result<(), Rejection> {
        if !self.clients.admits(&r.body.client) {
            return Err(Rejection::UnknownClient("client request"));
        }
        self.signed(r.body.client, r, Role::Strict("client request"));
        Ok(())
    }

    /// The requests of a batch. In a certificate (`strict`) every request must be
    /// admitted and validly signed, since honest replicas prepared it. In a message's
    /// own batch a request that is not is reported by index, as evidence against the
    /// primary that signed the batch's digest; a key that may not submit is reported
    /// without checking its signature.
    fn batch(&mut self, batch: &Batch, strict: bool) -> Result<(), Rejection> {
        for (i, r) in batch.requests.iter().enumerate() {
            if !self.clients.admits(&r.body.client) {
                if strict {
                    return Err(Rejection::UnknownClient("client request in a certificate"));
                }
                self.unknown.push(i as u32);
                continue;
            }
            let role = if strict {
                Role::Strict("client request in a certificate")
            } else {
                Role::BatchRequest(i as u32)
            };
            self.signed(r.body.client, r, role);
        }
        Ok(())
    }

    fn checkpoint(&mut self, c: &Signed<Checkpoint>) -> Result<(), Rejection> {
        self.by_replica(c.body.replica, c, "checkpoint")
    }

    fn prepared(&mut self, p: &PreparedCert) -> Result<(), Rejection> {
        self.pre_prepare(&p.pre_prepare)?;
        for pr in &p.prepares {
            self.by_replica(pr.body.replica, pr, "prepare in a certificate")?;
        }
        Ok(())
    }

    fn view_change(&mut self, vc: &Signed<ViewChange>) -> Result<(), Rejection> {
        self.by_replica(vc.body.replica, vc, "view change")?;
        for c in &vc.body.checkpoint_proof {
            self.checkpoint(c)?;
        }
        for p in &vc.body.prepared {
            self.prepared(p)?;
        }
        Ok(())
    }

    fn new_view(&mut self, nv: &Signed<NewView>) -> Result<(), Rejection> {
        let p = self.primary(nv.body.view);
        self.by_replica(p, nv, "new view")?;
        for vc in &nv.body.view_changes {
            self.view_change(vc)?;
        }
        for pp in &nv.body.pre_prepares {
            if pp.body.view != nv.body.view {
                return Err(Rejection::WrongSender("pre-prepare in a new view"));
            }
            self.pre_prepare(pp)?;
        }
        Ok(())
    }

    fn prepare_pair(&mut self, a: &Signed<Prepare>, b: &Signed<Prepare>) -> Result<(), Rejection> {
        self.by_replica(a.body.replica, a, "prepare")?;
        self.by_replica(b.body.replica, b, "prepare")
    }

    fn commit_pair(&mut self, a: &Signed<Commit>, b: &Signed<Commit>) -> Result<(), Rejection> {
        self.by_replica(a.body.replica, a, "commit")?;
        self.by_replica(b.body.replica, b, "commit")
    }

    fn evidence(&mut self, e: &Evidence) -> Result<(), Rejection> {
        match e {
            Evidence::Equivocation { a, b } => {
                self.pre_prepare(a)?;
                self.pre_prepare(b)
            }
            Evidence::BadPrePrepare { pre_prepare, batch } => {
                self.pre_prepare(pre_prepare)?;
                self.batch(batch, false)
            }
            Evidence::DoublePrepare { a, b } => self.prepare_pair(a, b),
            Evidence::DoubleCommit { a, b } => self.commit_pair(a, b),
            Evidence::CheckpointLie { lie, proof } => {
                self.checkpoint(lie)?;
                proof.iter().try_for_each(|c| self.checkpoint(c))
            }
            Evidence::BadNewView(nv) => self.new_view(nv),
        }
    }
}

impl Verifier {
    /// A verifier that checks every signature.
    pub fn new(validators: Vec<PublicKey>) -> Verifier {
        Verifier {
            validators,
            clients: ClientKeys::Any,
            mode: Mode::Full,
        }
    }

    /// A verifier that checks who signed what but not the signatures themselves.
    /// **For benchmarks of the protocol core only**: with it, any peer can forge anything.
    pub fn signers_only_for_benchmarks(validators: Vec<PublicKey>) -> Verifier {
        Verifier {
            validators,
            clients: ClientKeys::Any,
            mode: Mode::SignersOnly,
        }
    }

    /// The verifier for replicas configured as `cfg`: its validators, and the
    /// client keys it admits. Every node and the simulator build theirs this way, so
    /// that the replicas and the stage in front of them apply the same rule.
    pub fn for_config(cfg: &Config) -> Verifier {
        Verifier::new(cfg.validators.clone()).with_clients(cfg.clients.clone())
    }

    /// This verifier, refusing requests from keys that `clients` does not admit.
    pub fn with_clients(mut self, clients: ClientKeys) -> Verifier {
        self.clients = clients;
        self
    }

    /// The validator keys this verifier checks against.
    pub fn validators(&self) -> &[PublicKey] {
        &self.validators
    }

    /// Verifies a message that arrived from validator `from` (as authenticated by the
    /// transport).
    pub fn verify(&self, from: ReplicaId, msg: Message) -> Result<Verified, Rejection> {
        self.verify_cached(from, msg, &NoCache)
    }

    /// Like [`Verifier::verify`], but signatures `cache` already holds are not checked
    /// again, and the valid ones checked now are added to it. This is how a node checks
    /// each signature once: a client request verified on arrival is not verified again
    /// inside the pre-prepare that carries it.
    pub fn verify_cached(
        &self,
        from: ReplicaId,
        msg: Message,
        cache: &dyn SignatureCache,
    ) -> Result<Verified, Rejection> {
        if from as usize >= self.validators.len() {
            return Err(Rejection::UnknownReplica(from));
        }
        let mut c = Collector {
            validators: &self.validators,
            clients: &self.clients,
            items: Vec::new(),
            unknown: Vec::new(),
        };
        let claims = |claimed: ReplicaId, what| {
            if claimed == from {
                Ok(())
            } else {
                Err(Rejection::WrongSender(what))
            }
        };
        match &msg {
            Message::Request(r) => c.request(r)?,
            // Pre-prepares and new views may be relayed by any validator (that is how
            // equivocation is proven and how a lagging replica learns a new view): the
            // primary's signature, not the sender, proves where they come from.
            Message::PrePrepare { pre_prepare, batch } => {
                c.pre_prepare(pre_prepare)?;
                c.batch(batch, false)?;
            }
            Message::Prepare(p) => {
                claims(p.body.replica, "prepare")?;
                c.by_replica(p.body.replica, p, "prepare")?;
            }
            Message::Commit(p) => {
                claims(p.body.replica, "commit")?;
                c.by_replica(p.body.replica, p, "commit")?;
            }
            Message::Checkpoint(p) => {
                claims(p.body.replica, "checkpoint")?;
                c.checkpoint(p)?;
            }
            Message::ViewChange(vc) => {
                claims(vc.body.replica, "view change")?;
                c.view_change(vc)?;
            }
            Message::NewView(nv) => c.new_view(nv)?,
            Message::Evidence(e) => c.evidence(e)?,
            Message::Committed {
                stable_proof,
                proofs,
            } => {
                for cp in stable_proof {
                    c.checkpoint(cp)?;
                }
                for p in proofs {
                    c.pre_prepare(&p.pre_prepare)?;
                    c.batch(&p.batch, true)?;
                    for cm in &p.commits {
                        c.by_replica(cm.body.replica, cm, "commit in a certificate")?;
                    }
                }
            }
            Message::RecoveryReply { stable_proof, .. } => {
                for cp in stable_proof {
                    c.checkpoint(cp)?;
                }
            }
            // A fetched batch is used only if it has the digest of a signed header, and
            // then every request in it must carry its client's signature.
            Message::BatchReply { batch, .. } => c.batch(batch, true)?,
            Message::Reply(_) => return Err(Rejection::Unexpected("reply")),
            Message::Query { .. } => return Err(Rejection::Unexpected("query")),
            Message::Answer { .. } => return Err(Rejection::Unexpected("answer")),
            Message::FetchCommitted { .. }
            | Message::FetchBatch { .. }
            | Message::Status { .. }
            | Message::RecoveryQuery { .. }
            | Message::StateRequest { .. }
            | Message::StateChunk { .. } => {}
        }
        let mut bad_requests = self.check(&c.items, cache)?;
        if !c.unknown.is_empty() {
            bad_requests.extend(c.unknown);
            bad_requests.sort_unstable();
        }
        Ok(Verified {
            from,
            msg,
            bad_requests,
        })
    }

    /// Checks the collected signatures: an error if a strict one fails, otherwise the
    /// indices of batch requests whose client signature fails.
    fn check(
        &self,
        items: &[(PublicKey, Domain, Vec<u8>, Signature, Role)],
        cache: &dyn SignatureCache,
    ) -> Result<Vec<u32>, Rejection> {
        if self.mode == Mode::SignersOnly || items.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<Option<Digest>> = items
            .iter()
            .map(|(key, domain, msg, sig, _)| {
                cache
                    .enabled()
                    .then(|| signature_id(key, *domain, msg, sig))
            })
            .collect();
        let todo: Vec<usize> = (0..items.len())
            .filter(|&i| !ids[i].as_ref().is_some_and(|id| cache.contains(id)))
            .collect();
        let refs: Vec<VerifyItem<'_>> = todo
            .iter()
            .map(|&i| {
                let (key, domain, msg, sig, _) = &items[i];
                VerifyItem {
                    key,
                    domain: *domain,
                    msg,
                    sig,
                }
            })
            .collect();
        let ok = verify_each(&refs);
        let mut bad = Vec::new();
        for (valid, &i) in ok.iter().zip(&todo) {
            if *valid {
                if let Some(id) = ids[i] {
                    cache.insert(id);
                }
                continue;
            }
            match items[i].4 {
                Role::Strict(what) => return Err(Rejection::BadSignature(what)),
                Role::BatchRequest(index) => bad.push(index),
            }
        }
        Ok(bad)
    }

    /// Verifies many client requests in one batch; each result says whether that
    /// request's signature is valid.
    pub fn verify_requests(
        &self,
        requests: Vec<SignedRequest>,
    ) -> Vec<Result<VerifiedRequest, Rejection>> {
        self.verify_requests_cached(requests, &NoCache)
    }

    /// Like [`Verifier::verify_requests`], with a cache of signatures already checked
    /// (see [`Verifier::verify_cached`]).
    pub fn verify_requests_cached(
        &self,
        requests: Vec<SignedRequest>,
        cache: &dyn SignatureCache,
    ) -> Vec<Result<VerifiedRequest, Rejection>> {
        // a key that may not submit is refused before any signature is checked
        let items: Vec<(PublicKey, Domain, Vec<u8>, Signature, Role)> = requests
            .iter()
            .enumerate()
            .filter(|(_, r)| self.clients.admits(&r.body.client))
            .map(|(i, r)| {
                (
                    r.body.client,
                    Domain::Request,
                    r.body.signing_bytes(),
                    r.sig,
                    Role::BatchRequest(i as u32),
                )
            })
            .collect();
        let bad = self.check(&items, cache).unwrap_or_default();
        requests
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                if !self.clients.admits(&r.body.client) {
                    Err(Rejection::UnknownClient("client request"))
                } else if bad.contains(&(i as u32)) {
                    Err(Rejection::BadSignature("client request"))
                } else {
                    Ok(VerifiedRequest(r))
                }
            })
            .collect()
    }

    /// Verifies one client request.
    pub fn verify_request(&self, request: SignedRequest) -> Result<VerifiedRequest, Rejection> {
        self.verify_requests(vec![request])
            .pop()
            .unwrap_or(Err(Rejection::BadSignature("client request")))
    }
}
