//! Proves that the verification stage checks each signature once per validator when it
//! is given a [`SignatureCache`] (`Verifier::verify_cached`,
//! `Verifier::verify_requests_cached`), and that nothing changes without one:
//! - client requests verified on arrival are inserted into the cache, under their
//!   `signature_id`;
//! - a pre-prepare carrying those same requests finds them in the cache and inserts only
//!   the signature it had not seen, the primary's; verifying it again inserts nothing;
//! - a cache hit really replaces the check (a cache that lies about having seen a forged
//!   signature makes the verifier accept it), which is why only valid signatures may be
//!   inserted;
//! - a request with a bad signature (flipped bit, or a valid signature over other
//!   content) is rejected, never inserted, and the pre-prepare carrying it later is still
//!   reported bad and rejected by the core, cache or not; inside a certificate it rejects
//!   the whole message;
//! - with [`NoCache`] (or any disabled cache) nothing is remembered or looked up: every
//!   signature is checked every time and bad ones are rejected as before.

mod common;

use common::*;
use pbft_crypto::{Digest, Domain};
use pbft_protocol::verify::{signature_id, NoCache, Rejection, SignatureCache, Verifier};
use pbft_protocol::{
    Action, Batch, CommittedProof, Config, Message, PrePrepare, Replica, Signable, Signed,
    SignedRequest,
};
use std::cell::RefCell;
use std::collections::HashSet;

/// A cache that remembers like a real one and records every call made to it.
#[derive(Default)]
struct CountingCache {
    seen: RefCell<HashSet<Digest>>,
    /// Every `contains` call: the id and whether it was a hit.
    lookups: RefCell<Vec<(Digest, bool)>>,
    /// Every `insert` call.
    inserts: RefCell<Vec<Digest>>,
}

impl CountingCache {
    fn hits(&self) -> Vec<Digest> {
        self.lookups
            .borrow()
            .iter()
            .filter(|(_, hit)| *hit)
            .map(|(id, _)| *id)
            .collect()
    }

    fn misses(&self) -> Vec<Digest> {
        self.lookups
            .borrow()
            .iter()
            .filter(|(_, hit)| !*hit)
            .map(|(id, _)| *id)
            .collect()
    }

    fn inserted(&self) -> Vec<Digest> {
        self.inserts.borrow().clone()
    }

    /// Forgets the recorded calls (not the cached signatures).
    fn reset_counts(&self) {
        self.lookups.borrow_mut().clear();
        self.inserts.borrow_mut().clear();
    }
}

impl SignatureCache for CountingCache {
    fn contains(&self, id: &Digest) -> bool {
        let hit = self.seen.borrow().contains(id);
        self.lookups.borrow_mut().push((*id, hit));
        hit
    }

    fn insert(&self, id: Digest) {
        self.inserts.borrow_mut().push(id);
        self.seen.borrow_mut().insert(id);
    }
}

/// A cache that claims to have seen every signature (and records nothing).
struct ClaimsEverything {
    enabled: bool,
    calls: RefCell<usize>,
}

impl SignatureCache for ClaimsEverything {
    fn enabled(&self) -> bool {
        self.enabled
    }
    fn contains(&self, _: &Digest) -> bool {
        *self.calls.borrow_mut() += 1;
        true
    }
    fn insert(&self, _: Digest) {
        *self.calls.borrow_mut() += 1;
    }
}

fn verifier() -> Verifier {
    Verifier::new(pubkeys())
}

/// The cache id of a client request's signature, computed independently of the
/// verifier.
fn request_sig(r: &SignedRequest) -> Digest {
    signature_id(
        &r.body.client,
        Domain::Request,
        &r.body.signing_bytes(),
        &r.sig,
    )
}

/// The cache id of a pre-prepare's signature (by the view's primary).
fn pre_prepare_sig(pp: &Signed<PrePrepare>) -> Digest {
    signature_id(
        &replica_key(primary(pp.body.view)).public(),
        Domain::PrePrepare,
        &pp.body.signing_bytes(),
        &pp.sig,
    )
}

fn sorted(mut v: Vec<Digest>) -> Vec<Digest> {
    v.sort();
    v
}

fn forged(mut r: SignedRequest) -> SignedRequest {
    r.sig.0[7] ^= 0x40;
    r
}

/// Three requests from different clients, all validly signed.
fn arrivals() -> Vec<SignedRequest> {
    vec![
        request(0, 1, b"pay 5".to_vec()),
        request(1, 1, b"pay 7".to_vec()),
        request(2, 4, b"pay 9".to_vec()),
    ]
}

/// What a backup (replica 1) does with a verified pre-prepare in view 0: whether it
/// sends a prepare, and the kinds of evidence it records.
fn backup_reaction(v: pbft_protocol::Verified) -> (bool, Vec<&'static str>) {
    let mut r = Replica::new(Config::new(pubkeys()), 1, replica_key(1).clone()).expect("replica");
    r.on_message(v, pbft_protocol::Instant::ZERO);
    let actions: Vec<Action> = std::iter::from_fn(|| r.poll_action()).collect();
    let prepared = actions.iter().any(|a| {
        matches!(
            a,
            Action::Broadcast {
                msg: Message::Prepare(_)
            }
        )
    });
    let evidence = actions
        .iter()
        .filter_map(|a| match a {
            Action::Evidence { evidence, .. } => Some(evidence.kind()),
            _ => None,
        })
        .collect();
    (prepared, evidence)
}

#[test]
fn requests_verified_on_arrival_are_inserted() {
    let cache = CountingCache::default();
    let reqs = arrivals();
    let results = verifier().verify_requests_cached(reqs.clone(), &cache);
    assert_eq!(results.len(), 3);
    for (res, req) in results.iter().zip(&reqs) {
        assert_eq!(res.as_ref().expect("valid request").get(), req);
    }
    let expected: Vec<Digest> = reqs.iter().map(request_sig).collect();
    // each was looked up once, missed, was checked, and was inserted once
    assert_eq!(cache.misses(), expected);
    assert!(cache.hits().is_empty());
    assert_eq!(cache.inserted(), expected);

    // the same requests arriving again (a client retransmitting) are all hits
    cache.reset_counts();
    let again = verifier().verify_requests_cached(reqs.clone(), &cache);
    assert!(again.iter().all(|r| r.is_ok()));
    assert_eq!(cache.hits(), expected);
    assert!(cache.misses().is_empty());
    assert!(cache.inserted().is_empty());

    // a request forwarded by a validator goes through `verify_cached`: a hit too
    cache.reset_counts();
    let v = verifier()
        .verify_cached(2, Message::Request(reqs[1].clone()), &cache)
        .expect("forwarded request");
    assert_eq!(v.message(), &Message::Request(reqs[1].clone()));
    assert_eq!(cache.hits(), vec![expected[1]]);
    assert!(cache.inserted().is_empty());
}

#[test]
fn pre_prepare_hits_the_cached_requests_and_inserts_only_the_primary_signature() {
    let cache = CountingCache::default();
    let reqs = arrivals();
    assert!(verifier()
        .verify_requests_cached(reqs.clone(), &cache)
        .iter()
        .all(|r| r.is_ok()));
    let request_ids: Vec<Digest> = reqs.iter().map(request_sig).collect();

    // the primary (0) proposes a batch of exactly those requests (in its own order)
    let batch = Batch {
        requests: vec![reqs[2].clone(), reqs[0].clone(), reqs[1].clone()],
    };
    let pre_prepare = signed_pp(0, 1, batch.digest());
    let pp_id = pre_prepare_sig(&pre_prepare);
    let msg = Message::PrePrepare { pre_prepare, batch };

    cache.reset_counts();
    let v = verifier()
        .verify_cached(0, msg.clone(), &cache)
        .expect("valid pre-prepare");
    assert!(v.bad_requests().is_empty());
    assert_eq!(v.message(), &msg);
    assert_eq!(
        sorted(cache.hits()),
        sorted(request_ids.clone()),
        "the requests verified on arrival are found in the cache"
    );
    assert_eq!(cache.misses(), vec![pp_id]);
    assert_eq!(
        cache.inserted(),
        vec![pp_id],
        "only the primary's signature, not seen before, is inserted"
    );
    // the verified pre-prepare is accepted by the core as usual
    assert_eq!(backup_reaction(v), (true, vec![]));

    // the same pre-prepare relayed by another backup: every signature is a hit
    cache.reset_counts();
    let v = verifier()
        .verify_cached(3, msg, &cache)
        .expect("relayed pre-prepare");
    assert!(v.bad_requests().is_empty());
    assert_eq!(
        sorted(cache.hits()),
        sorted([request_ids.clone(), vec![pp_id]].concat())
    );
    assert!(cache.misses().is_empty());
    assert!(cache.inserted().is_empty());

    // a batch mixing a cached request with one this backup never saw: exactly the
    // unseen signatures (the new pre-prepare's and that request's) are inserted
    let unseen = request(3, 2, b"pay 11".to_vec());
    let batch = Batch {
        requests: vec![unseen.clone(), reqs[1].clone()],
    };
    let pre_prepare = signed_pp(0, 2, batch.digest());
    let pp2_id = pre_prepare_sig(&pre_prepare);
    cache.reset_counts();
    let v = verifier()
        .verify_cached(0, Message::PrePrepare { pre_prepare, batch }, &cache)
        .expect("valid pre-prepare");
    assert!(v.bad_requests().is_empty());
    assert_eq!(cache.hits(), vec![request_ids[1]]);
    let fresh = sorted(vec![pp2_id, request_sig(&unseen)]);
    assert_eq!(sorted(cache.misses()), fresh);
    assert_eq!(sorted(cache.inserted()), fresh);
}

#[test]
fn a_cache_hit_replaces_the_check() {
    // The premise of checking once: a signature found in the cache is not checked
    // again. A cache that claims to have seen a forged signature therefore gets it
    // accepted, which is why only valid signatures may ever be inserted.
    let liar = ClaimsEverything {
        enabled: true,
        calls: RefCell::new(0),
    };
    let bad = forged(request(0, 1, b"pay 5".to_vec()));
    assert!(verifier().verify_request(bad.clone()).is_err());
    let res = verifier().verify_requests_cached(vec![bad.clone()], &liar);
    assert!(res[0].is_ok(), "a hit is not checked again");
    let msg = pre_prepare_msg(
        0,
        1,
        Batch {
            requests: vec![bad],
        },
    );
    let v = verifier()
        .verify_cached(0, msg, &liar)
        .expect("every signature was a hit");
    assert!(v.bad_requests().is_empty());
    assert!(*liar.calls.borrow() > 0);
}

#[test]
fn bad_request_is_never_inserted_and_its_pre_prepare_is_still_rejected() {
    let cache = CountingCache::default();
    let good = request(0, 1, b"pay 5".to_vec());
    // a flipped bit in the signature of an otherwise valid request
    let flipped = forged(request(1, 1, b"pay 7".to_vec()));
    // the good request's valid signature, over changed content
    let mut altered = good.clone();
    altered.body.op = b"pay 500".to_vec();
    let bad_ids = [request_sig(&flipped), request_sig(&altered)];
    assert_ne!(bad_ids[1], request_sig(&good));

    let results = verifier()
        .verify_requests_cached(vec![good.clone(), flipped.clone(), altered.clone()], &cache);
    let ok: Vec<bool> = results.iter().map(|r| r.is_ok()).collect();
    assert_eq!(ok, vec![true, false, false]);
    assert_eq!(
        results[1].as_ref().err(),
        Some(&Rejection::BadSignature("client request"))
    );
    assert_eq!(cache.inserted(), vec![request_sig(&good)]);

    // arriving again, they are checked again (misses) and rejected again
    cache.reset_counts();
    let results = verifier().verify_requests_cached(vec![flipped.clone(), altered.clone()], &cache);
    assert!(results.iter().all(|r| r.is_err()));
    assert_eq!(cache.misses(), bad_ids.to_vec());
    assert!(cache.inserted().is_empty());

    // a pre-prepare carrying the good request (a hit) and the bad ones: the primary's
    // signature is valid, the bad requests are reported, and the core rejects the batch
    // (evidence against the primary) even though part of it came from the cache
    cache.reset_counts();
    let batch = Batch {
        requests: vec![good.clone(), flipped.clone(), altered.clone()],
    };
    let msg = pre_prepare_msg(0, 1, batch.clone());
    let v = verifier()
        .verify_cached(0, msg, &cache)
        .expect("the primary's signature is valid");
    assert_eq!(v.bad_requests(), &[1, 2]);
    assert_eq!(cache.hits(), vec![request_sig(&good)]);
    for id in bad_ids {
        assert!(cache.misses().contains(&id), "a bad signature is checked");
        assert!(
            !cache.inserted().contains(&id),
            "a bad signature is never inserted"
        );
    }
    assert_eq!(backup_reaction(v), (false, vec!["bad_pre_prepare"]));

    // inside a certificate a bad request rejects the whole message
    let d = batch.digest();
    let committed = Message::Committed {
        stable_proof: vec![],
        proofs: vec![CommittedProof {
            pre_prepare: signed_pp(0, 1, d),
            batch,
            commits: (0..3).map(|r| commit(0, 1, d, r)).collect(),
        }],
    };
    assert!(matches!(
        verifier().verify_cached(2, committed, &cache),
        Err(Rejection::BadSignature(_))
    ));
    let seen = cache.seen.borrow();
    assert!(bad_ids.iter().all(|id| !seen.contains(id)));
    assert!(seen.contains(&request_sig(&good)));
}

#[test]
fn without_a_cache_every_signature_is_checked() {
    // `NoCache` remembers nothing and is never consulted
    let probe = request_sig(&request(0, 1, vec![]));
    assert!(!NoCache.enabled());
    NoCache.insert(probe);
    assert!(!NoCache.contains(&probe));

    // a disabled cache is not asked anything, even one that would claim every
    // signature: each one is checked
    let disabled_liar = ClaimsEverything {
        enabled: false,
        calls: RefCell::new(0),
    };
    let good = request(0, 1, b"pay 5".to_vec());
    let bad = forged(request(1, 1, b"pay 7".to_vec()));
    let batch = Batch {
        requests: vec![good.clone(), bad.clone()],
    };
    let msg = pre_prepare_msg(0, 1, batch.clone());
    for _ in 0..2 {
        let res =
            verifier().verify_requests_cached(vec![good.clone(), bad.clone()], &disabled_liar);
        let ok: Vec<bool> = res.iter().map(|r| r.is_ok()).collect();
        assert_eq!(ok, vec![true, false]);
        let v = verifier()
            .verify_cached(0, msg.clone(), &disabled_liar)
            .expect("valid primary signature");
        assert_eq!(v.bad_requests(), &[1]);
    }
    assert_eq!(*disabled_liar.calls.borrow(), 0);
    let mut bad_pp = pre_prepare_msg(0, 2, Batch::null());
    if let Message::PrePrepare { pre_prepare, .. } = &mut bad_pp {
        pre_prepare.sig.0[3] ^= 1;
    }
    assert!(matches!(
        verifier().verify_cached(1, bad_pp.clone(), &disabled_liar),
        Err(Rejection::BadSignature(_))
    ));

    // the uncached entry points behave the same, every time
    for _ in 0..2 {
        let res = verifier().verify_requests(vec![good.clone(), bad.clone(), good.clone()]);
        let ok: Vec<bool> = res.iter().map(|r| r.is_ok()).collect();
        assert_eq!(ok, vec![true, false, true]);
        assert!(verifier().verify_request(bad.clone()).is_err());
        let v = verifier()
            .verify(0, msg.clone())
            .expect("valid primary signature");
        assert_eq!(v.bad_requests(), &[1]);
        assert_eq!(backup_reaction(v), (false, vec!["bad_pre_prepare"]));
        assert!(matches!(
            verifier().verify(1, bad_pp.clone()),
            Err(Rejection::BadSignature(_))
        ));
        let res = verifier().verify_requests_cached(vec![good.clone(), bad.clone()], &NoCache);
        let ok: Vec<bool> = res.iter().map(|r| r.is_ok()).collect();
        assert_eq!(ok, vec![true, false]);
    }
}
