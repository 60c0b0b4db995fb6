//! Error type for keys, signatures, digests and hex parsing.

/// Why a cryptographic operation or a parse of a key, digest or signature failed.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum CryptoError {
    /// A signature did not verify under the validity rule of [`crate::verify`]
    /// (or, for a batch, at least one signature in it did not).
    #[error("invalid signature")]
    BadSignature,
    /// A public key is a small-order ("weak") point, which could make forged
    /// signatures verify; such keys are never accepted.
    #[error("weak (small-order) public key")]
    WeakKey,
    /// 32 bytes that are not the canonical encoding of a curve point.
    #[error("invalid public key encoding")]
    BadKeyEncoding,
    /// A hex string that could not be parsed as the expected value.
    #[error("bad hex for {what}: {reason}")]
    BadHex {
        /// What was being parsed (for example `"digest"` or `"public key"`).
        what: &'static str,
        /// Why it was rejected.
        reason: String,
    },
}

/// Decodes exactly `N` bytes from hex, reporting failures as [`CryptoError::BadHex`].
pub(crate) fn decode_hex_array<const N: usize>(
    s: &str,
    what: &'static str,
) -> Result<[u8; N], CryptoError> {
    if s.len() != 2 * N {
        return Err(CryptoError::BadHex {
            what,
            reason: format!("expected {} hex characters, got {}", 2 * N, s.len()),
        });
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).map_err(|e| CryptoError::BadHex {
        what,
        reason: e.to_string(),
    })?;
    Ok(out)
}
