//! Signature domains, signing, and single and batch verification.
//!
//! # The validity rule
//!
//! Every validator must reach the same verdict on every signature, however
//! signatures happen to be grouped into batches. ed25519 implementations do
//! not agree on this by default: ed25519-dalek 2.x's `verify`/`verify_strict`
//! use the *cofactorless* equation `s·B = R + k·A`, while its `verify_batch`
//! checks a random linear combination of those equations *without*
//! multiplying by the cofactor. For a signature whose residual
//! `s·B − R − k·A` is a non-zero small-order (torsion) point, the batch
//! result then depends on the batch coefficients mod 8, i.e. on what else is
//! in the batch, and can differ from the single verdict.
//!
//! This crate therefore defines validity by one rule and implements both
//! paths on it directly with curve25519-dalek. A signature `(R, s)` (the 64
//! bytes `R || s`) on message `msg` under [`Domain`] `d` and key `A` is valid
//! iff all of:
//!
//! 1. `A` is a [`PublicKey`]: a canonical encoding of a point that is not of
//!    small order (checked once, when the key is constructed or deserialized).
//! 2. `s` (the last 32 bytes, little-endian) is a canonical scalar, `s < ℓ`.
//! 3. `R` (the first 32 bytes) is the canonical encoding of a curve point.
//! 4. The *cofactored* equation holds: `[8]·(s·B − R − k·A) = 𝒪`, where
//!    `k = SHA-512(R || A || tag(d) || msg) mod ℓ`.
//!
//! [`verify`] checks (4) directly. [`verify_batch`] checks
//! `[8]·Σ zᵢ·(sᵢ·B − Rᵢ − kᵢ·Aᵢ) = 𝒪` with non-zero 128-bit coefficients
//! `zᵢ` derived deterministically from a SHA-512 transcript of the whole
//! batch (no RNG). Because of the cofactor, a batch of signatures that are
//! each valid *always* passes, and a batch containing an invalid one fails
//! except with probability about 2⁻¹²⁷ (the coefficients are fixed only after
//! every input is, so they cannot be ground against). A one-element batch is
//! exactly the single equation since `z ≠ 0`. [`verify_each`] uses batches
//! to find the good items and always decides a failing item with the single
//! check, so its verdict for each item equals [`verify`]'s.
//!
//! Honest ed25519 signatures (RFC 8032, as produced by ed25519-dalek or any
//! other conforming signer) satisfy the cofactorless equation and hence this
//! rule, so the choice only affects maliciously crafted signatures.

use std::collections::HashMap;

use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
use ed25519_dalek::Signer;
use serde::de::{Error as _, SeqAccess, Visitor};
use serde::ser::SerializeTuple;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha512};
use std::fmt;

use crate::error::{decode_hex_array, CryptoError};
use crate::keys::{is_canonical_point_encoding, Keypair, PublicKey};

/// What a signature is for: every message kind signs under its own tag so a signature for one kind can never be replayed as another.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Domain {
    /// A client request.
    Request,
    /// The primary's pre-prepare.
    PrePrepare,
    /// A replica's prepare.
    Prepare,
    /// A replica's commit.
    Commit,
    /// A replica's reply to a client.
    Reply,
    /// A checkpoint announcement.
    Checkpoint,
    /// A view-change message.
    ViewChange,
    /// A new-view message.
    NewView,
    /// State-transfer messages.
    StateTransfer,
    /// Evidence of misbehaviour.
    Evidence,
    /// A client binding its account key to a connection (the transport's hello).
    ClientBind,
}

impl Domain {
    /// Every domain, in declaration order.
    pub const ALL: [Domain; 11] = [
        Domain::Request,
        Domain::PrePrepare,
        Domain::Prepare,
        Domain::Commit,
        Domain::Reply,
        Domain::Checkpoint,
        Domain::ViewChange,
        Domain::NewView,
        Domain::StateTransfer,
        Domain::Evidence,
        Domain::ClientBind,
    ];

    /// The bytes prepended to the message before signing. Tags are distinct,
    /// end in a NUL and contain no other NUL, so none is a prefix of another.
    pub fn tag(self) -> &'static [u8] {
        match self {
            Domain::Request => b"pbft/v1/request\0",
            Domain::PrePrepare => b"pbft/v1/pre-prepare\0",
            Domain::Prepare => b"pbft/v1/prepare\0",
            Domain::Commit => b"pbft/v1/commit\0",
            Domain::Reply => b"pbft/v1/reply\0",
            Domain::Checkpoint => b"pbft/v1/checkpoint\0",
            Domain::ViewChange => b"pbft/v1/view-change\0",
            Domain::NewView => b"pbft/v1/new-view\0",
            Domain::StateTransfer => b"pbft/v1/state-transfer\0",
            Domain::Evidence => b"pbft/v1/evidence\0",
            Domain::ClientBind => b"pbft/v1/client-bind\0",
        }
    }
}

/// A 64-byte ed25519 signature.
///
/// Serializes as a fixed 64-element tuple (exactly 64 bytes in postcard, no
/// length prefix). Any 64 bytes form a `Signature`; validity is decided only
/// by [`verify`]. `Debug` prints the first 8 hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature(pub [u8; 64]);

impl Signature {
    /// The 64 bytes `R || s`.
    pub fn to_bytes(&self) -> [u8; 64] {
        self.0
    }

    /// Wraps 64 bytes (no validation; see [`verify`]).
    pub fn from_bytes(b: [u8; 64]) -> Self {
        Signature(b)
    }

    /// 128 lowercase hex characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses exactly 128 hex characters.
    pub fn from_hex(s: &str) -> Result<Signature, CryptoError> {
        decode_hex_array::<64>(s, "signature").map(Signature)
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({})", hex::encode(&self.0[..4]))
    }
}

impl Serialize for Signature {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut tup = serializer.serialize_tuple(64)?;
        for b in &self.0 {
            tup.serialize_element(b)?;
        }
        tup.end()
    }
}

impl<'de> Deserialize<'de> for Signature {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SigVisitor;

        impl<'de> Visitor<'de> for SigVisitor {
            type Value = Signature;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("64 signature bytes")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Signature, A::Error> {
                let mut out = [0u8; 64];
                for (i, slot) in out.iter_mut().enumerate() {
                    *slot = seq
                        .next_element()?
                        .ok_or_else(|| A::Error::invalid_length(i, &self))?;
                }
                Ok(Signature(out))
            }
        }

        deserializer.deserialize_tuple(64, SigVisitor)
    }
}

impl Keypair {
    /// Signs `domain.tag() || msg`.
    pub fn sign(&self, domain: Domain, msg: &[u8]) -> Signature {
        let tag = domain.tag();
        let mut tagged = Vec::with_capacity(tag.len() + msg.len());
        tagged.extend_from_slice(tag);
        tagged.extend_from_slice(msg);
        Signature(self.signing.sign(&tagged).to_bytes())
    }
}

/// One signature to check.
#[derive(Clone, Copy, Debug)]
pub struct VerifyItem<'a> {
    /// The claimed signer.
    pub key: &'a PublicKey,
    /// The domain the signature must have been made under.
    pub domain: Domain,
    /// The message (without the domain tag).
    pub msg: &'a [u8],
    /// The signature.
    pub sig: &'a Signature,
}

/// A signature that passed the format checks (rules 1–3), ready for the equation.
struct Prepared {
    /// Encoded key, used to merge terms that share a key.
    key_bytes: [u8; 32],
    key: EdwardsPoint,
    r_bytes: [u8; 32],
    r: EdwardsPoint,
    s: Scalar,
    /// k = SHA-512(R || A || tag || msg) mod ℓ.
    k: Scalar,
}

fn prepare(item: &VerifyItem<'_>) -> Result<Prepared, CryptoError> {
    let mut r_bytes = [0u8; 32];
    let mut s_bytes = [0u8; 32];
    r_bytes.copy_from_slice(&item.sig.0[..32]);
    s_bytes.copy_from_slice(&item.sig.0[32..]);

    let s: Scalar =
        Option::from(Scalar::from_canonical_bytes(s_bytes)).ok_or(CryptoError::BadSignature)?;
    if !is_canonical_point_encoding(&r_bytes) {
        return Err(CryptoError::BadSignature);
    }
    let r = CompressedEdwardsY(r_bytes)
        .decompress()
        .ok_or(CryptoError::BadSignature)?;

    let mut h = Sha512::new();
    h.update(r_bytes);
    h.update(item.key.as_bytes());
    h.update(item.domain.tag());
    h.update(item.msg);
    let k = Scalar::from_bytes_mod_order_wide(&h.finalize().into());

    Ok(Prepared {
        key_bytes: item.key.to_bytes(),
        key: item.key.point(),
        r_bytes,
        r,
        s,
        k,
    })
}

/// `[8]·(s·B − R − k·A) = 𝒪`.
fn check_single(p: &Prepared) -> bool {
    let sb_minus_ka = EdwardsPoint::vartime_double_scalar_mul_basepoint(&(-p.k), &p.key, &p.s);
    (sb_minus_ka - p.r).mul_by_cofactor().is_identity()
}

/// Domain separator for the batch-coefficient transcript.
const BATCH_TRANSCRIPT_TAG: &[u8] = b"pbft/v1/batch-verify-coefficients\0";

/// Non-zero 128-bit coefficients derived from every input of the batch.
fn batch_coefficients(items: &[&Prepared]) -> Vec<Scalar> {
    let mut t = Sha512::new();
    t.update(BATCH_TRANSCRIPT_TAG);
    t.update((items.len() as u64).to_le_bytes());
    for p in items {
        t.update(p.key_bytes);
        t.update(p.r_bytes);
        t.update(p.s.as_bytes());
        t.update(p.k.as_bytes());
    }
    let seed = t.finalize();
    (0..items.len() as u64)
        .map(|i| {
            let mut h = Sha512::new();
            h.update(seed);
            h.update(i.to_le_bytes());
            let out = h.finalize();
            let mut z = [0u8; 16];
            z.copy_from_slice(&out[..16]);
            Scalar::from(u128::from_le_bytes(z) | 1)
        })
        .collect()
}

/// `[8]·Σ zᵢ·(sᵢ·B − Rᵢ − kᵢ·Aᵢ) = 𝒪`; a single item uses [`check_single`].
fn check_batch(items: &[&Prepared]) -> bool {
    match items {
        [] => true,
        [one] => check_single(one),
        _ => {
            #[cfg(test)]
            tests::BATCH_CHECKS.with(|c| c.set(c.get() + 1));
            let zs = batch_coefficients(items);
            let mut b_coeff = Scalar::ZERO;
            let mut scalars: Vec<Scalar> = Vec::with_capacity(2 * items.len() + 1);
            let mut points: Vec<EdwardsPoint> = Vec::with_capacity(2 * items.len() + 1);
            // Terms for the same key are merged: Σ (−zᵢkᵢ)·A over the items signed by A.
            let mut key_slot: HashMap<[u8; 32], usize> = HashMap::new();
            let mut key_coeffs: Vec<Scalar> = Vec::new();
            let mut key_points: Vec<EdwardsPoint> = Vec::new();
            for (p, z) in items.iter().zip(&zs) {
                b_coeff += z * p.s;
                scalars.push(-z);
                points.push(p.r);
                let slot = *key_slot.entry(p.key_bytes).or_insert_with(|| {
                    key_coeffs.push(Scalar::ZERO);
                    key_points.push(p.key);
                    key_coeffs.len() - 1
                });
                key_coeffs[slot] -= z * p.k;
            }
            scalars.push(b_coeff);
            points.push(ED25519_BASEPOINT_POINT);
            scalars.extend(key_coeffs);
            points.extend(key_points);
            EdwardsPoint::vartime_multiscalar_mul(&scalars, &points)
                .mul_by_cofactor()
                .is_identity()
        }
    }
}

/// Verifies one signature under the rule in the module documentation.
pub fn verify(
    key: &PublicKey,
    domain: Domain,
    msg: &[u8],
    sig: &Signature,
) -> Result<(), CryptoError> {
    let p = prepare(&VerifyItem {
        key,
        domain,
        msg,
        sig,
    })?;
    if check_single(&p) {
        Ok(())
    } else {
        Err(CryptoError::BadSignature)
    }
}

/// Verifies many signatures at once. Ok only if every signature is valid. Empty = Ok.
///
/// Same rule as [`verify`]; it does not say which signature failed (use
/// [`verify_each`] for that).
pub fn verify_batch(items: &[VerifyItem<'_>]) -> Result<(), CryptoError> {
    let prepared = items.iter().map(prepare).collect::<Result<Vec<_>, _>>()?;
    let refs: Vec<&Prepared> = prepared.iter().collect();
    if check_batch(&refs) {
        Ok(())
    } else {
        Err(CryptoError::BadSignature)
    }
}

/// Per-item validity, equal to [`verify`] for each item.
///
/// Tries one batch; if it fails, bisects (recursively batch-verifying
/// halves) down to single items, so a few bad signatures among many good ones
/// cost O(bad · log n) batches. Items failing the format checks are marked
/// invalid up front without a batch.
pub fn verify_each(items: &[VerifyItem<'_>]) -> Vec<bool> {
    let mut out = vec![false; items.len()];
    let mut idx = Vec::with_capacity(items.len());
    let mut prepared = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        if let Ok(p) = prepare(item) {
            idx.push(i);
            prepared.push(p);
        }
    }
    let refs: Vec<&Prepared> = prepared.iter().collect();
    let mut flags = vec![false; refs.len()];
    bisect(&refs, &mut flags, false);
    for (i, ok) in idx.into_iter().zip(flags) {
        out[i] = ok;
    }
    out
}

/// Fills `flags` for `items`; returns whether all are valid. `known_bad`
/// means the caller already knows the group holds an invalid item, so its
/// own batch check is skipped. Single items are always decided by the
/// single check.
fn bisect(items: &[&Prepared], flags: &mut [bool], known_bad: bool) -> bool {
    match items {
        [] => true,
        [one] => {
            flags[0] = check_single(one);
            flags[0]
        }
        _ => {
            if !known_bad && check_batch(items) {
                flags.fill(true);
                return true;
            }
            let mid = items.len() / 2;
            let (left, right) = items.split_at(mid);
            let (left_flags, right_flags) = flags.split_at_mut(mid);
            let left_ok = bisect(left, left_flags, false);
            // The whole group is bad; if the left half is fine, the right is bad.
            bisect(right, right_flags, left_ok);
            false
        }
    }
}

#[cfg(test)]
mod tests;
