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

impl PublicKey {
    /// Validates and wraps an encoded key: rejects non-canonical or invalid
    /// encodings ([`CryptoError::BadKeyEncoding`]) and small-order points
    /// ([`CryptoError::WeakKey`]).
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<PublicKey, CryptoError> {
        if !is_canonical_point_encoding(bytes) {
            return Err(CryptoError::BadKeyEncoding);
        }
        let key = VerifyingKey::from_bytes(bytes).map_err(|_| CryptoError::BadKeyEncoding)?;
        if key.is_weak() {
            return Err(CryptoError::WeakKey);
        }
        Ok(PublicKey { bytes: *bytes, key })
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
