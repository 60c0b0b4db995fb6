//! Cryptography for the pbft ledger node: SHA-256 [`Digest`]s, ed25519
//! [`PublicKey`]s and [`Keypair`]s, domain-separated [`Signature`]s with
//! single and batch verification under one consistent validity rule (see
//! [`sign`] module docs, re-exported here), and private key files.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod digest;
pub mod error;
pub mod keyfile;
pub mod keys;
pub mod merkle;
pub mod sign;

pub use digest::{Digest, Hasher};
pub use error::CryptoError;
pub use keyfile::{read_key_file, read_public_key_hex, write_key_file, KeyFileError};
pub use keys::{Keypair, PublicKey};
pub use sign::{verify, verify_batch, verify_each, Domain, Signature, VerifyItem};
