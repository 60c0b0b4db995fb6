//! The largest frame each kind of protocol message can take in a configuration.
//!
//! Every message a replica sends must fit the decoder's frame limit, whatever the
//! clients put in their operations, or the message is neither sent nor decoded. The
//! messages whose size grows with the configuration are the ones that carry batches
//! (pre-prepare, batch reply, a catch-up answer's commit certificates) and the view
//! change and new view, which carry up to L prepared certificates (headers and votes,
//! never batches) and, for the new view, q view changes. [`FrameBounds::of`] computes
//! their worst-case encoded size from n, L and `max_batch` with every integer at its
//! largest encoding and every operation at the decoder's limit; `Config::validate`
//! refuses a configuration in which one of them would exceed the frame limit.

use crate::config::Config;
use crate::envelope::Limits;
use crate::message::{
    Batch, Checkpoint, Commit, CommittedProof, Message, NewView, PrePrepare, Prepare, PreparedCert,
    Request, Signed, ViewChange,
};
use pbft_crypto::{Digest, Signature};
use serde::Serialize;

/// Worst-case frame sizes, in bytes, for one configuration (envelope included).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameBounds {
    /// A pre-prepare with a full batch of largest requests (a batch reply or a
    /// bad-pre-prepare evidence is no larger).
    pub pre_prepare: usize,
    /// A valid view change: q checkpoints and L certificates of q - 1 prepares.
    pub view_change: usize,
    /// A valid new view: q such view changes and L pre-prepare headers.
    pub new_view: usize,
    /// One commit certificate (header, full batch, q commits) inside a catch-up answer.
    pub committed_proof: usize,
    /// A catch-up answer with a stable-checkpoint proof of q checkpoints and no
    /// certificates.
    pub committed_answer_base: usize,
}

/// Bytes of the postcard varint encoding of `v`.
fn varint_len(v: u64) -> usize {
    let bits = 64 - v.leading_zeros() as usize;
    bits.div_ceil(7).max(1)
}

/// Bytes of the postcard encoding of `v`.
fn len_of<T: Serialize>(v: &T) -> usize {
    postcard::to_allocvec(v).map(|b| b.len()).unwrap_or(0)
}

/// The size of an encoding that held an empty vector, once that vector holds `count`
/// elements of `elem` bytes each.
fn with_vec(empty: usize, count: usize, elem: usize) -> usize {
    empty - varint_len(0) + varint_len(count as u64) + count.saturating_mul(elem)
}

fn signed<T>(body: T) -> Signed<T> {
    Signed {
        body,
        sig: Signature([0xFF; 64]),
    }
}

impl FrameBounds {
    /// The worst-case frame sizes of `cfg` under the decoder's `limits`.
    pub fn of(cfg: &Config, limits: &Limits) -> FrameBounds {
        let q = cfg.quorum();
        let window = cfg.log_window as usize;
        let big = u64::MAX;
        let digest = Digest([0xFF; 32]);
        let frame = |m: &Message| crate::envelope::encode(m).len();
        let request = match cfg.validators.first() {
            Some(client) => len_of(&signed(Request {
                client: *client,
                request_id: big,
                op: vec![0xFF; limits.max_op_bytes],
            })),
            None => 0,
        };
        let batch = with_vec(len_of(&Batch::null()), cfg.max_batch, request);
        let header = signed(PrePrepare {
            view: big,
            seq: big,
            digest,
        });
        let header_len = len_of(&header);
        let prepare = len_of(&signed(Prepare {
            view: big,
            seq: big,
            digest,
            replica: u32::MAX,
        }));
        let commit = len_of(&signed(Commit {
            view: big,
            seq: big,
            digest,
            replica: u32::MAX,
        }));
        let checkpoint = len_of(&signed(Checkpoint {
            seq: big,
            state_digest: digest,
            replica: u32::MAX,
        }));

        // pre-prepare: the frame of an empty batch, grown to a full one
        let empty_pp = frame(&Message::PrePrepare {
            pre_prepare: header.clone(),
            batch: Batch::null(),
        });
        let pre_prepare = empty_pp - len_of(&Batch::null()) + batch;

        // view change: q checkpoints, L certificates of q - 1 prepares
        let cert = with_vec(
            len_of(&PreparedCert {
                pre_prepare: header.clone(),
                prepares: Vec::new(),
            }),
            q - 1,
            prepare,
        );
        let empty_vc = signed(ViewChange {
            new_view: big,
            stable_seq: big,
            checkpoint_proof: Vec::new(),
            prepared: Vec::new(),
            replica: u32::MAX,
        });
        let empty_vc_len = len_of(&empty_vc);
        let vc_len = with_vec(with_vec(empty_vc_len, q, checkpoint), window, cert);
        let view_change = frame(&Message::ViewChange(Box::new(empty_vc))) - empty_vc_len + vc_len;

        // new view: q view changes, L headers
        let empty_nv = Message::NewView(Box::new(signed(NewView {
            view: big,
            view_changes: Vec::new(),
            pre_prepares: Vec::new(),
        })));
        let new_view = with_vec(with_vec(frame(&empty_nv), q, vc_len), window, header_len);

        // catch-up answer: q checkpoints, then commit certificates
        let committed_proof = with_vec(
            len_of(&CommittedProof {
                pre_prepare: header,
                batch: Batch::null(),
                commits: Vec::new(),
            }) - len_of(&Batch::null())
                + batch,
            q,
            commit,
        );
        let empty_answer = Message::Committed {
            stable_proof: Vec::new(),
            proofs: Vec::new(),
        };
        let committed_answer_base = with_vec(frame(&empty_answer), q, checkpoint);
        FrameBounds {
            pre_prepare,
            view_change,
            new_view,
            committed_proof,
            committed_answer_base,
        }
    }

    /// The most commit certificates one catch-up answer holds without exceeding the
    /// frame limit (at most `cap`; 0 if not even one fits).
    pub fn proofs_per_answer(&self, limits: &Limits, cap: usize) -> usize {
        // the length prefix of the proofs grows by at most 4 bytes
        let room = limits
            .max_frame_bytes
            .saturating_sub(self.committed_answer_base + 4);
        (room / self.committed_proof.max(1)).min(cap)
    }

    /// The largest of the bounds, with the name of its message.
    pub fn largest(&self) -> (&'static str, usize) {
        [
            ("pre-prepare", self.pre_prepare),
            ("view change", self.view_change),
            ("new view", self.new_view),
            (
                "catch-up answer",
                self.committed_answer_base + self.committed_proof,
            ),
        ]
        .into_iter()
        .max_by_key(|(_, b)| *b)
        .unwrap_or(("none", 0))
    }
}
