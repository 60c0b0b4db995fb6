//! The versioned wire envelope: `b"PBFT"`, a version byte, then the postcard encoding of
//! a [`Message`]. Decoding checks the frame size first, rejects trailing bytes and then
//! structural limits (batch sizes, certificate sizes), and never panics.

use crate::message::{Batch, Message, PreparedCert};
use thiserror::Error;

/// Magic bytes that start every frame.
pub const MAGIC: [u8; 4] = *b"PBFT";
/// The envelope version this build speaks. Version 2: view changes carry prepared
/// certificates without batches, and batches are fetched by digest. Version 3: the
/// recovery question and answer. Version 4: a reply binds the digest of the request it
/// answers.
pub const WIRE_VERSION: u8 = 4;

/// Structural limits enforced when decoding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest frame accepted, in bytes.
    pub max_frame_bytes: usize,
    /// Most requests in one batch.
    pub max_batch_requests: usize,
    /// Largest operation in one request, in bytes.
    pub max_op_bytes: usize,
    /// Most signed messages in one certificate (checkpoint proof, prepares, commits,
    /// view changes): the cluster size is a natural bound.
    pub max_certificate: usize,
    /// Most prepared proofs in a view change / pre-prepares in a new view / committed
    /// proofs in one answer: the log window is a natural bound.
    pub max_slots: usize,
    /// Largest snapshot chunk, in bytes.
    pub max_chunk_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_bytes: 16 << 20,
            max_batch_requests: 4096,
            max_op_bytes: 4096,
            max_certificate: 256,
            max_slots: 1024,
            max_chunk_bytes: 4 << 20,
        }
    }
}

/// Why a frame was rejected.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The frame is larger than the limit.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Frame length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The frame does not start with the magic bytes.
    #[error("frame does not start with the PBFT magic")]
    BadMagic,
    /// The frame is from an incompatible wire version.
    #[error("unsupported wire version {0} (this build speaks {WIRE_VERSION})")]
    Version(u8),
    /// The body is not a valid postcard encoding of a message.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// Bytes left after the message.
    #[error("{0} trailing bytes after the message")]
    Trailing(usize),
    /// The message decodes but breaks a structural limit.
    #[error("message exceeds a limit: {0}")]
    Limit(&'static str),
    /// A client connection sent a kind of message only validators send.
    #[error("a client may send only requests and queries")]
    NotFromClients,
}

impl DecodeError {
    /// A stable short reason, for rejection counters.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::TooLarge { .. } => "too_large",
            DecodeError::BadMagic => "bad_magic",
            DecodeError::Version(_) => "bad_version",
            DecodeError::Malformed(_) => "malformed",
            DecodeError::Trailing(_) => "trailing_bytes",
            DecodeError::Limit(_) => "limit",
            DecodeError::NotFromClients => "client_sent_a_non_request",
        }
    }
}

/// Encodes a message into a frame.
pub fn encode(msg: &Message) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(&MAGIC);
    out.push(WIRE_VERSION);
    // Serialising an in-memory message into a Vec cannot fail.
    match postcard::to_extend(msg, out) {
        Ok(v) => v,
        Err(_) => unreachable_encode(),
    }
}

#[cold]
fn unreachable_encode() -> Vec<u8> {
    // postcard only fails on writer errors (none for Vec) or unsupported serde
    // features (none used by Message). Keep the invariant loud in debug builds.
    debug_assert!(false, "postcard failed to encode a Message");
    Vec::new()
}

/// Decodes and checks a frame.
pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Message, DecodeError> {
    if bytes.len() > limits.max_frame_bytes {
        return Err(DecodeError::TooLarge {
            len: bytes.len(),
            max: limits.max_frame_bytes,
        });
    }
    if bytes.len() < 5 || bytes[..4] != MAGIC {
        return Err(DecodeError::BadMagic);
    }
    if bytes[4] != WIRE_VERSION {
        return Err(DecodeError::Version(bytes[4]));
    }
    let (msg, rest): (Message, &[u8]) = postcard::take_from_bytes(&bytes[5..])
        .map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(DecodeError::Trailing(rest.len()));
    }
    check_limits(&msg, limits)?;
    Ok(msg)
}

/// postcard's tag (the variant index, one byte below 128) of [`Message::Request`].
pub const REQUEST_TAG: u8 = 0;
/// postcard's tag of [`Message::Query`].
pub const QUERY_TAG: u8 = 14;

/// Decodes a frame from a client connection, which may hold only a request or a
/// query. The kind is read from the tag byte after the header before anything else
/// is decoded, so that a client cannot make a verification worker decode a batch or
/// a view change only to throw it away.
pub fn decode_client(bytes: &[u8], limits: &Limits) -> Result<Message, DecodeError> {
    if bytes.len() > 5
        && bytes[..4] == MAGIC
        && bytes[4] == WIRE_VERSION
        && !matches!(bytes[5], REQUEST_TAG | QUERY_TAG)
    {
        return Err(DecodeError::NotFromClients);
    }
    match decode(bytes, limits)? {
        m @ (Message::Request(_) | Message::Query { .. }) => Ok(m),
        _ => Err(DecodeError::NotFromClients),
    }
}

fn check_batch(batch: &Batch, limits: &Limits) -> Result<(), DecodeError> {
    if batch.requests.len() > limits.max_batch_requests {
        return Err(DecodeError::Limit("batch has too many requests"));
    }
    if batch
        .requests
        .iter()
        .any(|r| r.body.op.len() > limits.max_op_bytes)
    {
        return Err(DecodeError::Limit("operation too large"));
    }
    Ok(())
}

fn check_prepared(p: &PreparedCert, limits: &Limits) -> Result<(), DecodeError> {
    if p.prepares.len() > limits.max_certificate {
        return Err(DecodeError::Limit("too many prepares in a certificate"));
    }
    Ok(())
}

fn check_view_change(vc: &crate::message::ViewChange, limits: &Limits) -> Result<(), DecodeError> {
    if vc.checkpoint_proof.len() > limits.max_certificate {
        return Err(DecodeError::Limit("checkpoint proof too large"));
    }
    if vc.prepared.len() > limits.max_slots {
        return Err(DecodeError::Limit("too many prepared proofs"));
    }
    vc.prepared
        .iter()
        .try_for_each(|p| check_prepared(p, limits))
}

fn check_new_view(nv: &crate::message::NewView, limits: &Limits) -> Result<(), DecodeError> {
    if nv.view_changes.len() > limits.max_certificate {
        return Err(DecodeError::Limit("too many view changes"));
    }
    if nv.pre_prepares.len() > limits.max_slots {
        return Err(DecodeError::Limit("too many pre-prepares in a new view"));
    }
    nv.view_changes
        .iter()
        .try_for_each(|vc| check_view_change(&vc.body, limits))
}

/// Checks the structural limits of a decoded message.
pub fn check_limits(msg: &Message, limits: &Limits) -> Result<(), DecodeError> {
    match msg {
        Message::Request(r) => {
            if r.body.op.len() > limits.max_op_bytes {
                return Err(DecodeError::Limit("operation too large"));
            }
        }
        Message::PrePrepare { batch, .. } | Message::BatchReply { batch, .. } => {
            check_batch(batch, limits)?
        }
        Message::Reply(r) => {
            if r.body.result.len() > limits.max_op_bytes {
                return Err(DecodeError::Limit("reply too large"));
            }
            if r.path.len() > pbft_crypto::merkle::MAX_PATH {
                return Err(DecodeError::Limit("reply path too long"));
            }
        }
        Message::ViewChange(vc) => check_view_change(&vc.body, limits)?,
        Message::NewView(nv) => check_new_view(&nv.body, limits)?,
        Message::Evidence(e) => match e.as_ref() {
            crate::message::Evidence::BadPrePrepare { batch, .. } => check_batch(batch, limits)?,
            crate::message::Evidence::CheckpointLie { proof, .. }
                if proof.len() > limits.max_certificate =>
            {
                return Err(DecodeError::Limit("checkpoint proof too large"));
            }
            crate::message::Evidence::BadNewView(nv) => check_new_view(&nv.body, limits)?,
            _ => {}
        },
        Message::Committed {
            stable_proof,
            proofs,
        } => {
            if stable_proof.len() > limits.max_certificate {
                return Err(DecodeError::Limit("checkpoint proof too large"));
            }
            if proofs.len() > limits.max_slots {
                return Err(DecodeError::Limit("too many committed proofs"));
            }
            for p in proofs {
                check_batch(&p.batch, limits)?;
                if p.commits.len() > limits.max_certificate {
                    return Err(DecodeError::Limit("too many commits in a certificate"));
                }
            }
        }
        Message::RecoveryReply { stable_proof, .. } => {
            if stable_proof.len() > limits.max_certificate {
                return Err(DecodeError::Limit("checkpoint proof too large"));
            }
        }
        Message::StateChunk { data, .. } => {
            if data.len() > limits.max_chunk_bytes {
                return Err(DecodeError::Limit("snapshot chunk too large"));
            }
        }
        Message::Answer {
            answer: crate::message::Answer::Status(s),
            ..
        } => {
            if s.halted
                .as_ref()
                .is_some_and(|h| h.len() > limits.max_op_bytes)
            {
                return Err(DecodeError::Limit("status text too large"));
            }
        }
        Message::Prepare(_)
        | Message::Commit(_)
        | Message::Checkpoint(_)
        | Message::FetchCommitted { .. }
        | Message::FetchBatch { .. }
        | Message::Status { .. }
        | Message::RecoveryQuery { .. }
        | Message::StateRequest { .. }
        | Message::Query { .. }
        | Message::Answer { .. } => {}
    }
    Ok(())
}
