//! Tests for signing and verification, including the consistency of the
//! single and batch paths on adversarial (torsion, non-canonical) inputs.

use super::*;
use curve25519_dalek::scalar::clamp_integer;
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, RngSeed};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

fn rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

fn keys(n: usize, seed: u64) -> Vec<Keypair> {
    let mut r = rng(seed);
    (0..n).map(|_| Keypair::generate(&mut r)).collect()
}

/// An owned signature-check case.
#[derive(Clone, Debug)]
struct Case {
    key: PublicKey,
    domain: Domain,
    msg: Vec<u8>,
    sig: Signature,
}

impl Case {
    fn item(&self) -> VerifyItem<'_> {
        VerifyItem {
            key: &self.key,
            domain: self.domain,
            msg: &self.msg,
            sig: &self.sig,
        }
    }
    fn verify(&self) -> bool {
        verify(&self.key, self.domain, &self.msg, &self.sig).is_ok()
    }
}

fn items(cases: &[Case]) -> Vec<VerifyItem<'_>> {
    cases.iter().map(Case::item).collect()
}

/// `n` valid signatures from a pool of 5 signers (so keys repeat).
fn valid_cases(n: usize, seed: u64) -> Vec<Case> {
    let pool = keys(5, seed);
    let mut r = rng(seed ^ 0x5eed);
    (0..n)
        .map(|i| {
            let kp = &pool[r.gen_range(0..pool.len())];
            let domain = Domain::ALL[r.gen_range(0..Domain::ALL.len())];
            let mut msg = vec![0u8; r.gen_range(0..100)];
            r.fill_bytes(&mut msg);
            msg.extend_from_slice(&(i as u64).to_le_bytes());
            Case {
                key: kp.public(),
                domain,
                msg: msg.clone(),
                sig: kp.sign(domain, &msg),
            }
        })
        .collect()
}

/// Makes a valid case invalid in one of several ways chosen by `how`.
fn corrupt(case: &mut Case, how: u64, other_key: PublicKey) {
    match how % 5 {
        0 => case.msg.push(1),
        1 => {
            case.domain = if case.domain == Domain::Commit {
                Domain::Prepare
            } else {
                Domain::Commit
            }
        }
        2 => case.sig.0[3] ^= 0x10,  // R
        3 => case.sig.0[40] ^= 0x01, // s (stays canonical: top byte untouched)
        _ => case.key = other_key,
    }
}

fn outsider() -> PublicKey {
    keys(1, 999)[0].public()
}

// ---------------------------------------------------------------- basics

#[test]
fn sign_verify_round_trip() {
    let kp = &keys(1, 1)[0];
    let sig = kp.sign(Domain::Prepare, b"hello");
    assert_eq!(
        verify(&kp.public(), Domain::Prepare, b"hello", &sig),
        Ok(())
    );
    // Deterministic signatures (RFC 8032).
    assert_eq!(sig, kp.sign(Domain::Prepare, b"hello"));
    // Empty message works too.
    let sig = kp.sign(Domain::Request, b"");
    assert_eq!(verify(&kp.public(), Domain::Request, b"", &sig), Ok(()));
}

#[test]
fn wrong_domain_fails_for_every_pair() {
    let kp = &keys(1, 2)[0];
    for signed in Domain::ALL {
        let sig = kp.sign(signed, b"msg");
        for checked in Domain::ALL {
            let res = verify(&kp.public(), checked, b"msg", &sig);
            if signed == checked {
                assert_eq!(res, Ok(()));
            } else {
                assert_eq!(
                    res,
                    Err(CryptoError::BadSignature),
                    "{signed:?} as {checked:?}"
                );
            }
        }
    }
}

#[test]
fn altered_message_fails() {
    let kp = &keys(1, 3)[0];
    let msg = b"transfer 10 to bob".to_vec();
    let sig = kp.sign(Domain::Request, &msg);
    for i in 0..msg.len() {
        let mut m = msg.clone();
        m[i] ^= 1;
        assert!(verify(&kp.public(), Domain::Request, &m, &sig).is_err());
    }
    let mut longer = msg.clone();
    longer.push(0);
    assert!(verify(&kp.public(), Domain::Request, &longer, &sig).is_err());
    assert!(verify(&kp.public(), Domain::Request, &msg[..msg.len() - 1], &sig).is_err());
}

#[test]
fn altered_signature_fails_at_every_byte() {
    let kp = &keys(1, 4)[0];
    let sig = kp.sign(Domain::Commit, b"block 7");
    for i in 0..64 {
        for bit in [0x01u8, 0x80] {
            let mut bad = sig;
            bad.0[i] ^= bit;
            assert!(
                verify(&kp.public(), Domain::Commit, b"block 7", &bad).is_err(),
                "byte {i} bit {bit:#x}"
            );
        }
    }
}

#[test]
fn other_key_fails() {
    let ks = keys(2, 5);
    let sig = ks[0].sign(Domain::Reply, b"r");
    assert!(verify(&ks[1].public(), Domain::Reply, b"r", &sig).is_err());
}

#[test]
fn domain_tags_are_distinct_and_prefix_free() {
    for (i, a) in Domain::ALL.iter().enumerate() {
        let ta = a.tag();
        assert!(ta.starts_with(b"pbft/v1/"));
        assert_eq!(ta.last(), Some(&0u8));
        assert_eq!(ta.iter().filter(|&&b| b == 0).count(), 1);
        for (j, b) in Domain::ALL.iter().enumerate() {
            if i != j {
                assert!(!b.tag().starts_with(ta), "{a:?} is a prefix of {b:?}");
            }
        }
    }
}

#[test]
fn agrees_with_dalek_on_honest_and_corrupted_signatures() {
    // For signatures without torsion components the rule coincides with
    // ed25519-dalek's strict verification of `tag || msg`.
    let mut cases = valid_cases(40, 6);
    let other = outsider();
    for (i, c) in cases.iter_mut().enumerate() {
        if i % 2 == 1 {
            corrupt(c, i as u64 / 2, other);
        }
    }
    for c in &cases {
        let mut tagged = c.domain.tag().to_vec();
        tagged.extend_from_slice(&c.msg);
        let dalek_sig = ed25519_dalek::Signature::from_bytes(&c.sig.0);
        let dalek = c
            .key
            .verifying_key()
            .verify_strict(&tagged, &dalek_sig)
            .is_ok();
        assert_eq!(c.verify(), dalek, "{c:?}");
    }
}

#[test]
fn keypair_from_seed_and_debug_hides_secret() {
    // RFC 8032 test vector 1.
    let seed: [u8; 32] =
        hex::decode("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
            .unwrap()
            .try_into()
            .unwrap();
    let kp = Keypair::from_seed(&seed).unwrap();
    assert_eq!(
        kp.public().to_hex(),
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
    );
    assert_eq!(kp.seed(), seed);
    let dbg = format!("{kp:?}");
    assert_eq!(dbg, "Keypair(d75a9801)");
    assert!(!dbg.contains(&hex::encode(seed)[..8]));
    let cloned = kp.clone();
    assert_eq!(cloned.public(), kp.public());
}

#[test]
fn generate_is_deterministic_for_a_seeded_rng() {
    let a = Keypair::generate(&mut rng(7));
    let b = Keypair::generate(&mut rng(7));
    let c = Keypair::generate(&mut rng(8));
    assert_eq!(a.seed(), b.seed());
    assert_ne!(a.public(), c.public());
}

// ------------------------------------------------------ encodings / serde

#[test]
fn signature_postcard_is_exactly_64_bytes() {
    let kp = &keys(1, 9)[0];
    let sig = kp.sign(Domain::Checkpoint, b"cp");
    let bytes = postcard::to_allocvec(&sig).unwrap();
    assert_eq!(bytes.len(), 64);
    assert_eq!(bytes, sig.0.to_vec());
    assert_eq!(postcard::from_bytes::<Signature>(&bytes).unwrap(), sig);
    assert!(postcard::from_bytes::<Signature>(&bytes[..63]).is_err());
    assert_eq!(Signature::from_bytes(sig.to_bytes()), sig);
    assert_eq!(Signature::from_hex(&sig.to_hex()), Ok(sig));
    assert_eq!(
        format!("{sig:?}"),
        format!("Signature({})", &sig.to_hex()[..8])
    );
}

#[test]
fn public_key_postcard_round_trip_and_formatting() {
    let pk = keys(1, 10)[0].public();
    let bytes = postcard::to_allocvec(&pk).unwrap();
    assert_eq!(bytes, pk.to_bytes().to_vec());
    assert_eq!(postcard::from_bytes::<PublicKey>(&bytes).unwrap(), pk);
    assert_eq!(PublicKey::from_hex(&pk.to_hex()), Ok(pk));
    assert_eq!(PublicKey::from_bytes(pk.as_bytes()), Ok(pk));
    assert_eq!(format!("{pk}"), pk.to_hex());
    assert_eq!(format!("{pk:?}"), format!("PublicKey({})", pk.short()));
    assert_eq!(pk.short().len(), 8);
}

#[test]
fn public_key_order_is_by_bytes() {
    let mut pks: Vec<PublicKey> = keys(10, 11).iter().map(Keypair::public).collect();
    pks.sort();
    let bytes: Vec<[u8; 32]> = pks.iter().map(PublicKey::to_bytes).collect();
    let mut sorted = bytes.clone();
    sorted.sort();
    assert_eq!(bytes, sorted);
}

/// Encodings of small-order points (from the well-known list of ed25519's
/// eight torsion points), each checked to be small order below.
const SMALL_ORDER_ENCODINGS: [&str; 6] = [
    "0100000000000000000000000000000000000000000000000000000000000000", // identity
    "0000000000000000000000000000000000000000000000000000000000000000", // order 4
    "0000000000000000000000000000000000000000000000000000000000000080", // order 4
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // order 2
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a", // order 8
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05", // order 8
];

fn hex32(s: &str) -> [u8; 32] {
    hex::decode(s).unwrap().try_into().unwrap()
}

#[test]
fn weak_keys_are_rejected_by_from_bytes_and_serde() {
    for enc in SMALL_ORDER_ENCODINGS {
        let bytes = hex32(enc);
        let point = CompressedEdwardsY(bytes).decompress().unwrap();
        assert!(point.is_small_order(), "{enc}");
        assert_eq!(
            PublicKey::from_bytes(&bytes),
            Err(CryptoError::WeakKey),
            "{enc}"
        );
        assert_eq!(PublicKey::from_hex(enc), Err(CryptoError::WeakKey));
        let wire = postcard::to_allocvec(&bytes).unwrap();
        assert!(postcard::from_bytes::<PublicKey>(&wire).is_err(), "{enc}");
    }
}

#[test]
fn invalid_key_encodings_are_rejected() {
    // y = 2 is not on the curve.
    let mut not_on_curve = [0u8; 32];
    not_on_curve[0] = 2;
    assert!(CompressedEdwardsY(not_on_curve).decompress().is_none());
    assert_eq!(
        PublicKey::from_bytes(&not_on_curve),
        Err(CryptoError::BadKeyEncoding)
    );
    let wire = postcard::to_allocvec(&not_on_curve).unwrap();
    assert!(postcard::from_bytes::<PublicKey>(&wire).is_err());
    // Hex errors.
    assert!(matches!(
        PublicKey::from_hex("abcd"),
        Err(CryptoError::BadHex {
            what: "public key",
            ..
        })
    ));
}

#[test]
fn non_canonical_key_encodings_are_rejected() {
    // Each y in [p, 2^255) is a second encoding of y - p. Any that decode to
    // a non-small-order point would be accepted by dalek; we refuse them.
    let mut tested_large_order = 0;
    for low in 0xedu8..=0xff {
        for sign in [0u8, 0x80] {
            let mut b = [0xffu8; 32];
            b[0] = low;
            b[31] = 0x7f | sign;
            assert!(!is_canonical_point_encoding(&b));
            if let Some(p) = CompressedEdwardsY(b).decompress() {
                assert_ne!(p.compress().0, b);
                if !p.is_small_order() {
                    tested_large_order += 1;
                    assert_eq!(PublicKey::from_bytes(&b), Err(CryptoError::BadKeyEncoding));
                }
            }
        }
    }
    assert!(
        tested_large_order > 0,
        "no non-canonical large-order encoding exercised"
    );
}

#[test]
fn canonical_encoding_check_matches_decompress_compress_round_trip() {
    let mut r = rng(12);
    let mut candidates: Vec<[u8; 32]> = SMALL_ORDER_ENCODINGS.iter().map(|s| hex32(s)).collect();
    // Edge encodings near p and with the sign bit set on x = 0 points.
    for low in 0xe0u8..=0xff {
        for sign in [0u8, 0x80] {
            let mut b = [0xffu8; 32];
            b[0] = low;
            b[31] = 0x7f | sign;
            candidates.push(b);
        }
    }
    for small in 0u8..32 {
        for sign in [0u8, 0x80] {
            let mut b = [0u8; 32];
            b[0] = small;
            b[31] = sign;
            candidates.push(b);
        }
    }
    for _ in 0..2000 {
        let mut b = [0u8; 32];
        r.fill_bytes(&mut b);
        candidates.push(b);
    }
    for kp in keys(20, 13) {
        candidates.push(kp.public().to_bytes());
    }
    let mut decompressed = 0;
    for b in candidates {
        if let Some(p) = CompressedEdwardsY(b).decompress() {
            decompressed += 1;
            assert_eq!(
                is_canonical_point_encoding(&b),
                p.compress().0 == b,
                "{}",
                hex::encode(b)
            );
        }
    }
    assert!(decompressed > 500);
}

// ------------------------------------------------------- batches

#[test]
fn batch_of_0_1_64_valid_is_ok() {
    assert_eq!(verify_batch(&[]), Ok(()));
    assert!(verify_each(&[]).is_empty());
    for n in [1, 2, 3, 64] {
        let cases = valid_cases(n, 14 + n as u64);
        assert_eq!(verify_batch(&items(&cases)), Ok(()), "n = {n}");
        assert_eq!(verify_each(&items(&cases)), vec![true; n]);
    }
}

#[test]
fn one_bad_at_random_index_is_found() {
    let mut r = rng(15);
    let other = outsider();
    for round in 0..10u64 {
        let mut cases = valid_cases(64, 100 + round);
        let bad = r.gen_range(0..cases.len());
        corrupt(&mut cases[bad], round, other);
        assert_eq!(verify_batch(&items(&cases)), Err(CryptoError::BadSignature));
        let flags = verify_each(&items(&cases));
        let expected: Vec<bool> = (0..cases.len()).map(|i| i != bad).collect();
        assert_eq!(flags, expected, "round {round}, bad {bad}");
    }
}

#[test]
fn non_canonical_s_is_rejected_everywhere() {
    let kp = &keys(1, 16)[0];
    let msg = b"pre-prepare";
    let sig = kp.sign(Domain::PrePrepare, msg);
    // s' = s + l: the same scalar mod l, but a non-canonical encoding.
    // l = 2^252 + 27742317777372353535851937790883648493, little-endian.
    let l = hex32("edd3f55c1a631258d69cf7a2def9de1400000000000000000000000000000010");
    assert_eq!(Scalar::from_bytes_mod_order(l), Scalar::ZERO);
    let mut s_plus_l = [0u8; 32];
    let mut carry = 0u16;
    for i in 0..32 {
        let v = u16::from(sig.0[32 + i]) + u16::from(l[i]) + carry;
        s_plus_l[i] = v as u8;
        carry = v >> 8;
    }
    assert_eq!(carry, 0);
    // It really is the same scalar mod l, so only the canonicity check rejects it.
    assert_eq!(
        Scalar::from_bytes_mod_order(s_plus_l).to_bytes(),
        sig.0[32..]
    );
    let mut bad = sig;
    bad.0[32..].copy_from_slice(&s_plus_l);
    let pk = kp.public();
    assert_eq!(
        verify(&pk, Domain::PrePrepare, msg, &bad),
        Err(CryptoError::BadSignature)
    );
    let mut cases = valid_cases(7, 17);
    cases.push(Case {
        key: pk,
        domain: Domain::PrePrepare,
        msg: msg.to_vec(),
        sig: bad,
    });
    assert_eq!(verify_batch(&items(&cases)), Err(CryptoError::BadSignature));
    let flags = verify_each(&items(&cases));
    assert_eq!(flags, [vec![true; 7], vec![false]].concat());
}

#[test]
fn non_canonical_r_is_rejected() {
    // An R that decompresses but is not canonically encoded. No one can make
    // such a signature verify anyway, but the format check must reject it in
    // both paths before the equation.
    let kp = &keys(1, 18)[0];
    let mut sig = kp.sign(Domain::Prepare, b"m");
    let mut r_bytes = [0u8; 32];
    r_bytes[0] = 1;
    r_bytes[31] = 0x80; // identity with the x sign bit set
    assert!(CompressedEdwardsY(r_bytes).decompress().is_some());
    sig.0[..32].copy_from_slice(&r_bytes);
    let pk = kp.public();
    let item = VerifyItem {
        key: &pk,
        domain: Domain::Prepare,
        msg: b"m",
        sig: &sig,
    };
    assert!(prepare(&item).is_err());
    assert!(verify_batch(&[item]).is_err());
}

#[test]
fn bisection_uses_few_batches() {
    let other = outsider();
    let mut cases = valid_cases(256, 19);
    corrupt(&mut cases[77], 0, other);
    BATCH_CHECKS.with(|c| c.set(0));
    let flags = verify_each(&items(&cases));
    let batches = BATCH_CHECKS.with(|c| c.get());
    assert_eq!(flags.iter().filter(|f| !**f).count(), 1);
    assert!(!flags[77]);
    // One bad item among 256: one batch for the whole set, then per level of
    // the bisection (halves of 128 down to 2): if the bad item is in the left
    // half, both halves are batch-checked (2); if it is in the right half,
    // the left passes and the right is known bad without a batch (1).
    // 77 = 0b0100_1101; bits 7..1 = 0,1,0,0,1,1,0 -> 2+1+2+2+1+1+2 = 11.
    assert_eq!(batches, 1 + 11);
    assert!(batches <= 1 + 2 * 7);
}

thread_local! {
    /// Multi-item batch equations evaluated on this thread (test builds only).
    pub(super) static BATCH_CHECKS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

fn several_bad_config() -> ProptestConfig {
    ProptestConfig {
        cases: 32,
        rng_seed: RngSeed::Fixed(0x7062_6674),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(several_bad_config())]

    #[test]
    fn several_bad_are_flagged_exactly(
        n in 1usize..48,
        seed in any::<u64>(),
        picks in proptest::collection::vec((any::<prop::sample::Index>(), 0u64..5), 0..8),
    ) {
        let other = outsider();
        let mut cases = valid_cases(n, seed);
        let mut expected = vec![true; n];
        for (idx, how) in picks {
            let i = idx.index(n);
            if expected[i] {
                corrupt(&mut cases[i], how, other);
                expected[i] = false;
            }
        }
        let its = items(&cases);
        let flags = verify_each(&its);
        prop_assert_eq!(&flags, &expected);
        prop_assert_eq!(verify_batch(&its).is_ok(), expected.iter().all(|&b| b));
        // Consistency with the single path, item by item.
        for (c, f) in cases.iter().zip(&flags) {
            prop_assert_eq!(c.verify(), *f);
        }
    }
}

// ------------------------------------------- torsion / consistency of rule

/// The expanded secret scalar `a` (with A = a·B) for a key pair.
fn secret_scalar(kp: &Keypair) -> Scalar {
    let h = Sha512::digest(kp.seed());
    let mut lower = [0u8; 32];
    lower.copy_from_slice(&h[..32]);
    Scalar::from_bytes_mod_order(clamp_integer(lower))
}

fn order8_point() -> EdwardsPoint {
    let t = CompressedEdwardsY(hex32(SMALL_ORDER_ENCODINGS[4]))
        .decompress()
        .unwrap();
    assert!(t.is_small_order());
    let two_t = t + t;
    assert!(!(two_t + two_t).is_identity(), "not of order 8");
    t
}

/// A signature with R = r·B + T: satisfies the cofactored equation but not
/// the cofactorless one (residual −T).
fn torsion_signature(
    kp: &Keypair,
    domain: Domain,
    msg: &[u8],
    t: EdwardsPoint,
    r: &mut ChaCha20Rng,
) -> Signature {
    let a = secret_scalar(kp);
    assert_eq!(
        EdwardsPoint::mul_base(&a).compress().0,
        kp.public().to_bytes()
    );
    let mut wide = [0u8; 64];
    r.fill_bytes(&mut wide);
    let nonce = Scalar::from_bytes_mod_order_wide(&wide);
    let big_r = EdwardsPoint::mul_base(&nonce) + t;
    let r_bytes = big_r.compress().0;
    let mut h = Sha512::new();
    h.update(r_bytes);
    h.update(kp.public().as_bytes());
    h.update(domain.tag());
    h.update(msg);
    let k = Scalar::from_bytes_mod_order_wide(&h.finalize().into());
    let s = nonce + k * a;
    let mut sig = [0u8; 64];
    sig[..32].copy_from_slice(&r_bytes);
    sig[32..].copy_from_slice(s.as_bytes());
    Signature(sig)
}

fn dalek_single(c: &Case) -> bool {
    let mut tagged = c.domain.tag().to_vec();
    tagged.extend_from_slice(&c.msg);
    let sig = ed25519_dalek::Signature::from_bytes(&c.sig.0);
    use ed25519_dalek::Verifier;
    c.key.verifying_key().verify(&tagged, &sig).is_ok()
}

fn dalek_batch(cases: &[Case]) -> bool {
    let tagged: Vec<Vec<u8>> = cases
        .iter()
        .map(|c| [c.domain.tag(), &c.msg[..]].concat())
        .collect();
    let msgs: Vec<&[u8]> = tagged.iter().map(Vec::as_slice).collect();
    let sigs: Vec<ed25519_dalek::Signature> = cases
        .iter()
        .map(|c| ed25519_dalek::Signature::from_bytes(&c.sig.0))
        .collect();
    let vks: Vec<ed25519_dalek::VerifyingKey> =
        cases.iter().map(|c| *c.key.verifying_key()).collect();
    ed25519_dalek::verify_batch(&msgs, &sigs, &vks).is_ok()
}

#[test]
fn dalek_single_and_batch_disagree_on_torsion_signatures() {
    // Documents why this crate does not use ed25519-dalek's verify/verify_batch:
    // on a signature with a torsion residual, dalek's single verify rejects,
    // and its (cofactorless) batch accepts or rejects depending on the batch.
    let kp = &keys(1, 20)[0];
    let t = order8_point();
    let mut r = rng(21);
    let mut batch_accepted = 0;
    let mut batch_rejected = 0;
    for i in 0..200u32 {
        let msg = i.to_le_bytes().to_vec();
        let c = Case {
            key: kp.public(),
            domain: Domain::Commit,
            sig: torsion_signature(kp, Domain::Commit, &msg, t, &mut r),
            msg,
        };
        assert!(!dalek_single(&c));
        if dalek_batch(std::slice::from_ref(&c)) {
            batch_accepted += 1;
        } else {
            batch_rejected += 1;
        }
        // Our rule: valid, whichever way it is checked.
        assert!(c.verify());
    }
    assert!(
        batch_accepted > 0 && batch_rejected > 0,
        "{batch_accepted} / {batch_rejected}"
    );
}

#[test]
fn torsion_signatures_get_one_verdict_in_every_grouping() {
    let ks = keys(3, 22);
    let t = order8_point();
    let mut r = rng(23);
    let other = outsider();
    // Mix: honest, torsion-valid (R + T with T of order 8, 4, 2), and invalid.
    let mut cases = valid_cases(12, 24);
    let small: Vec<EdwardsPoint> = [4usize, 1, 2, 3, 5]
        .iter()
        .map(|&i| {
            CompressedEdwardsY(hex32(SMALL_ORDER_ENCODINGS[i]))
                .decompress()
                .unwrap()
        })
        .chain([t, t + t, -t])
        .collect();
    for (i, tp) in small.iter().enumerate() {
        let kp = &ks[i % ks.len()];
        let msg = format!("torsion {i}").into_bytes();
        cases.push(Case {
            key: kp.public(),
            domain: Domain::ViewChange,
            sig: torsion_signature(kp, Domain::ViewChange, &msg, *tp, &mut r),
            msg,
        });
    }
    for i in [0usize, 5, 13] {
        corrupt(&mut cases[i], i as u64, other);
    }
    // Shuffle deterministically.
    for i in (1..cases.len()).rev() {
        let j = r.gen_range(0..=i);
        cases.swap(i, j);
    }
    let singles: Vec<bool> = cases.iter().map(Case::verify).collect();
    assert_eq!(singles.iter().filter(|v| !**v).count(), 3);

    // Every contiguous window, as a batch and through verify_each.
    for start in 0..cases.len() {
        for end in start + 1..=cases.len() {
            let window = &cases[start..end];
            let its = items(window);
            let want = &singles[start..end];
            assert_eq!(verify_each(&its), want, "window {start}..{end}");
            assert_eq!(
                verify_batch(&its).is_ok(),
                want.iter().all(|&v| v),
                "window {start}..{end}"
            );
        }
    }
    // And all-valid subsets in shuffled orders always pass as one batch.
    let valid: Vec<Case> = cases
        .iter()
        .zip(&singles)
        .filter(|(_, v)| **v)
        .map(|(c, _)| c.clone())
        .collect();
    for round in 0..20 {
        let mut v = valid.clone();
        for i in (1..v.len()).rev() {
            let j = r.gen_range(0..=i);
            v.swap(i, j);
        }
        v.truncate(1 + round % v.len());
        assert_eq!(verify_batch(&items(&v)), Ok(()));
    }
}

#[test]
fn batch_coefficients_are_deterministic_and_nonzero() {
    let cases = valid_cases(10, 25);
    let prepared: Vec<Prepared> = items(&cases).iter().map(|i| prepare(i).unwrap()).collect();
    let refs: Vec<&Prepared> = prepared.iter().collect();
    let a = batch_coefficients(&refs);
    let b = batch_coefficients(&refs);
    assert_eq!(a, b);
    assert!(a.iter().all(|z| *z != Scalar::ZERO));
    // Depends on the inputs.
    let c = batch_coefficients(&refs[1..]);
    assert_ne!(a[1..], c[..]);
}
