//! SHA-256 digests of messages, blocks and states.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::error::{decode_hex_array, CryptoError};

/// SHA-256 digest. 32 bytes, never truncated.
///
/// `Debug` prints a short prefix (`Digest(1a2b3c4d)`) for logs; `Display`
/// prints all 64 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// The all-zero digest, used as a placeholder (for example "no previous block").
    pub const ZERO: Digest = Digest([0u8; 32]);

    /// SHA-256 of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        let mut h = Hasher::new();
        h.update(bytes);
        h.finalize()
    }

    /// SHA-256 over several parts, each prefixed with its length as a u64
    /// little-endian, so different splits of the same bytes hash differently.
    pub fn of_parts(parts: &[&[u8]]) -> Digest {
        let mut h = Hasher::new();
        for part in parts {
            h.update_part(part);
        }
        h.finalize()
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// 64 lowercase hex characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses exactly 64 hex characters (either case).
    pub fn from_hex(s: &str) -> Result<Digest, CryptoError> {
        decode_hex_array::<32>(s, "digest").map(Digest)
    }

    /// The first 8 hex characters, for logs.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.short())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl From<[u8; 32]> for Digest {
    fn from(bytes: [u8; 32]) -> Self {
        Digest(bytes)
    }
}

impl AsRef<[u8]> for Digest {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// Incremental hasher producing a Digest.
#[derive(Clone, Default)]
pub struct Hasher {
    inner: Sha256,
}

impl Hasher {
    /// A fresh SHA-256 state.
    pub fn new() -> Self {
        Hasher {
            inner: Sha256::new(),
        }
    }

    /// Feeds raw bytes (no framing).
    pub fn update(&mut self, bytes: &[u8]) {
        self.inner.update(bytes);
    }

    /// Feeds one length-prefixed part exactly as [`Digest::of_parts`] does
    /// (u64 little-endian length, then the bytes).
    pub fn update_part(&mut self, bytes: &[u8]) {
        self.inner.update((bytes.len() as u64).to_le_bytes());
        self.inner.update(bytes);
    }

    /// The digest of everything fed so far.
    pub fn finalize(self) -> Digest {
        Digest(self.inner.finalize().into())
    }
}

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Hasher(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_abc_vector() {
        assert_eq!(
            Digest::of(b"abc").to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            Digest::of(b"").to_hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn hasher_matches_one_shot() {
        let mut h = Hasher::default();
        h.update(b"a");
        h.update(b"bc");
        assert_eq!(h.finalize(), Digest::of(b"abc"));
    }

    #[test]
    fn of_parts_is_unambiguous() {
        assert_ne!(
            Digest::of_parts(&[b"ab", b"c"]),
            Digest::of_parts(&[b"a", b"bc"])
        );
        assert_ne!(Digest::of_parts(&[b"abc"]), Digest::of(b"abc"));
        assert_ne!(Digest::of_parts(&[b"", b"a"]), Digest::of_parts(&[b"a"]));
        assert_ne!(Digest::of_parts(&[]), Digest::of_parts(&[b""]));
    }

    #[test]
    fn of_parts_framing_is_u64_le_length_prefix() {
        let mut framed = Vec::new();
        for part in [&b"ab"[..], &b"c"[..]] {
            framed.extend_from_slice(&(part.len() as u64).to_le_bytes());
            framed.extend_from_slice(part);
        }
        assert_eq!(Digest::of_parts(&[b"ab", b"c"]), Digest::of(&framed));
    }

    #[test]
    fn hex_round_trip_and_formatting() {
        let d = Digest::of(b"abc");
        let hex = d.to_hex();
        assert_eq!(hex.len(), 64);
        assert_eq!(hex, hex.to_lowercase());
        assert_eq!(Digest::from_hex(&hex), Ok(d));
        assert_eq!(Digest::from_hex(&hex.to_uppercase()), Ok(d));
        assert_eq!(d.short(), "ba7816bf");
        assert_eq!(format!("{d:?}"), "Digest(ba7816bf)");
        assert_eq!(format!("{d}"), hex);
        assert_eq!(Digest::ZERO, Digest::default());
    }

    #[test]
    fn from_hex_rejects_bad_input() {
        let good = Digest::of(b"x").to_hex();
        for bad in [
            String::new(),
            good[..62].to_string(),
            format!("{good}00"),
            format!("{}zz", &good[..62]),
            format!(" {}", &good[..63]),
        ] {
            assert!(
                matches!(
                    Digest::from_hex(&bad),
                    Err(CryptoError::BadHex { what: "digest", .. })
                ),
                "accepted {bad:?}"
            );
        }
    }

    #[test]
    fn postcard_round_trip() {
        let d = Digest::of(b"abc");
        let bytes = postcard::to_allocvec(&d).unwrap();
        assert_eq!(bytes.len(), 32);
        assert_eq!(postcard::from_bytes::<Digest>(&bytes).unwrap(), d);
    }
}
