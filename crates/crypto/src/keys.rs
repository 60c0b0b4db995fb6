//! Public keys and key pairs.
//!
//! A [`PublicKey`] can only be built from bytes that are the *canonical*
//! encoding of a curve point that is *not* of small order, so every key that
//! reaches signature verification is already validated (see `sign.rs` for
//! the validity rule).

use std::cmp::Ordering;
use std::fmt;
use std::hash::Hash;

use curve25519_dalek::edwards::EdwardsPoint;
use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{decode_hex_array, CryptoError};

/// Whether 32 bytes are the canonical encoding of a point, *assuming* they
/// decompress at all.
///
/// An Edwards point is encoded as its y coordinate (255 bits, little-endian)
/// plus the sign bit of x. An encoding is non-canonical when y >= p
/// (p = 2^255 - 19), or when the sign bit is set although x = 0 (which only
/// happens for y = 1 and y = p - 1). curve25519-dalek accepts both forms when
/// decompressing, so we reject them explicitly: every point then has exactly
/// one accepted encoding.
pub(crate) fn is_canonical_point_encoding(bytes: &[u8; 32]) -> bool {
    let sign_set = bytes[31] & 0x80 != 0;
    let top = bytes[31] & 0x7f;
    let middle_all_ff = bytes[1..31].iter().all(|&b| b == 0xff);
    // y >= p  <=>  y in [2^255 - 19, 2^255 - 1]
    if top == 0x7f && middle_all_ff && bytes[0] >= 0xed {
        return false;
    }
    if sign_set {
        let y_is_one = bytes[0] == 1 && top == 0 && bytes[1..31].iter().all(|&b| b == 0);
        let y_is_p_minus_one = top == 0x7f && middle_all_ff && bytes[0] == 0xec;
        if y_is_one || y_is_p_minus_one {
            return false;
        }
    }
    true
}

/// A validated ed25519 public key: it decompresses to a curve point and is NOT weak (small order).
///
/// Equality, ordering and hashing are by the 32 encoded bytes. Serializes as
/// a 32-byte array; deserialization validates like [`PublicKey::from_bytes`].
/// `Debug` prints `PublicKey(<first 8 hex>)`, `Display` the full hex.
#[derive(Clone, Copy)]
pub struct PublicKey {
    bytes: [u8; 32],
    key: VerifyingKey,
}

/// Most keys [`PublicKey::from_bytes`] remembers per thread (about 200 bytes each).
const KNOWN_KEYS_MAX: usize = 1 << 14;

thread_local! {
    /// Keys that passed [`PublicKey::from_bytes`] on this thread, decompressed.
    static KNOWN_KEYS: std::cell::RefCell<std::collections::HashMap<[u8; 32], VerifyingKey>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

impl PublicKey {
    /// Validates and wraps an encoded key: rejects non-canonical or invalid
    /// encodings ([`CryptoError::BadKeyEncoding`]) and small-order points
    /// ([`CryptoError::WeakKey`]).
    ///
    /// Decompressing the point costs about 4 µs, and decoding does it for every key a
    /// message carries: the same few keys (the cluster's validators and accounts) over
    /// and over. Keys that passed are remembered per thread (a bounded memo, so the
    /// result never depends on it), and a key seen before costs a hash lookup.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<PublicKey, CryptoError> {
        if let Some(key) = KNOWN_KEYS.with(|k| k.borrow().get(bytes).copied()) {
            return Ok(PublicKey { bytes: *bytes, key });
        }
        let key = Self::validate(bytes)?;
        KNOWN_KEYS.with(|k| {
            let mut k = k.borrow_mut();
            if k.len() >= KNOWN_KEYS_MAX {
                // bounded: forget everything rather than grow (made-up keys cannot
                // fill memory; the cluster's keys come back on their next use)
                k.clear();
            }
            k.insert(*bytes, key);
        });
        Ok(PublicKey { bytes: *bytes, key })
    }

    /// The checks of [`PublicKey::from_bytes`], without the memo.
    fn validate(bytes: &[u8; 32]) -> Result<VerifyingKey, CryptoError> {
        if !is_canonical_point_encoding(bytes) {
            return Err(CryptoError::BadKeyEncoding);
        }
        let key = VerifyingKey::from_bytes(bytes).map_err(|_| CryptoError::BadKeyEncoding)?;
        if key.is_weak() {
            return Err(CryptoError::WeakKey);
        }
        Ok(key)
    }

    /// The 32 encoded bytes.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.bytes
    }

    /// The 32 encoded bytes, by reference.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.bytes
    }

    /// 64 lowercase hex characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.bytes)
    }

    /// Parses 64 hex characters and validates like [`PublicKey::from_bytes`].
    pub fn from_hex(s: &str) -> Result<PublicKey, CryptoError> {
        let bytes = decode_hex_array::<32>(s, "public key")?;
        PublicKey::from_bytes(&bytes)
    }

    /// The first 8 hex characters, for logs.
    pub fn short(&self) -> String {
        hex::encode(&self.bytes[..4])
    }

    /// The underlying ed25519-dalek key, for interoperability.
    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.key
    }

    /// The decompressed curve point (used by verification).
    pub(crate) fn point(&self) -> EdwardsPoint {
        self.key.to_edwards()
    }
}

impl PartialEq for PublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

impl Eq for PublicKey {}

impl Hash for PublicKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.bytes.hash(state);
    }
}

impl PartialOrd for PublicKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for PublicKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.bytes.cmp(&other.bytes)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.short())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl Serialize for PublicKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.bytes.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bytes = <[u8; 32]>::deserialize(deserializer)?;
        PublicKey::from_bytes(&bytes).map_err(serde::de::Error::custom)
    }
}

impl TryFrom<[u8; 32]> for PublicKey {
    type Error = CryptoError;

    fn try_from(bytes: [u8; 32]) -> Result<Self, Self::Error> {
        PublicKey::from_bytes(&bytes)
    }
}

impl std::str::FromStr for PublicKey {
    type Err = CryptoError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PublicKey::from_hex(s)
    }
}

/// A secret signing key with its public key.
///
/// `Debug` shows only the public key; the secret is zeroized on drop by
/// ed25519-dalek. Sign with [`Keypair::sign`].
#[derive(Clone)]
pub struct Keypair {
    pub(crate) signing: SigningKey,
    public: PublicKey,
}

impl Keypair {
    /// A fresh random key pair (retries in the practically impossible case
    /// that the public key is weak).
    pub fn generate<R: rand_core::RngCore + rand_core::CryptoRng>(rng: &mut R) -> Keypair {
        loop {
            let mut seed = [0u8; 32];
            rng.fill_bytes(&mut seed);
            if let Ok(kp) = Keypair::from_seed(&seed) {
                return kp;
            }
        }
    }

    /// The key pair for a 32-byte ed25519 seed (the RFC 8032 secret key).
    /// Errors only if the derived public key were weak.
    pub fn from_seed(seed: &[u8; 32]) -> Result<Keypair, CryptoError> {
        let signing = SigningKey::from_bytes(seed);
        let public = PublicKey::from_bytes(signing.verifying_key().as_bytes())?;
        Ok(Keypair { signing, public })
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        self.public
    }

    /// The 32-byte secret seed. Handle with care.
    pub fn seed(&self) -> [u8; 32] {
        self.signing.to_bytes()
    }
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keypair({})", self.public.short())
    }
}

#[cfg(test)]
mod memo_tests {
    use super::*;

    /// A deterministic stream of 32-byte strings (xorshift), so failures replay.
    fn strings(seed: u64, n: usize) -> Vec<[u8; 32]> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                let mut b = [0u8; 32];
                for chunk in b.chunks_mut(8) {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    chunk.copy_from_slice(&x.to_le_bytes());
                }
                b
            })
            .collect()
    }

    #[test]
    fn the_memo_never_changes_a_verdict() {
        let seed = 0x5eed_u64;
        let mut valid = 0;
        for bytes in strings(seed, 400) {
            let direct = PublicKey::validate(&bytes).map(|k| k.to_bytes());
            // first call fills the memo, second is served from it
            for _ in 0..2 {
                let got = PublicKey::from_bytes(&bytes).map(|k| k.to_bytes());
                assert_eq!(got, direct, "seed {seed:#x}, key {}", hex::encode(bytes));
            }
            valid += usize::from(direct.is_ok());
        }
        // about half of random strings decode to a point: both paths were exercised
        assert!(valid > 50 && valid < 350, "{valid}");
        // small-order points stay rejected however often they are seen
        let identity = {
            let mut b = [0u8; 32];
            b[0] = 1;
            b
        };
        for _ in 0..2 {
            assert_eq!(PublicKey::from_bytes(&identity), Err(CryptoError::WeakKey));
        }
    }

    #[test]
    fn the_memo_is_bounded() {
        // more distinct valid keys than the memo holds (about half of random strings
        // are valid points), and the memo never exceeds its bound
        let mut stored = 0;
        let mut peak = 0;
        for bytes in strings(0xb0_0d, 3 * KNOWN_KEYS_MAX) {
            if PublicKey::from_bytes(&bytes).is_ok() {
                stored += 1;
            }
            peak = peak.max(KNOWN_KEYS.with(|m| m.borrow().len()));
        }
        assert!(stored > KNOWN_KEYS_MAX, "only {stored} valid keys");
        assert_eq!(peak, KNOWN_KEYS_MAX);
    }
}
