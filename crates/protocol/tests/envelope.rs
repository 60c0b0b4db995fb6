//! Proves the wire envelope (`envelope::{encode, decode}`) round-trips every `Message`
//! variant (with real signatures, arbitrary views, sequence numbers, digests, batches
//! and ops) and that decoding is total: random bytes, single-byte mutations,
//! truncations and extensions of valid frames never panic. It also proves each
//! rejection path: frames over `max_frame_bytes` are refused with `TooLarge` before any
//! parsing, wrong magic with `BadMagic`, wrong version with `Version`, trailing bytes
//! with `Trailing`, and structural limits (batch size, op size, certificate sizes,
//! nested batches inside certificates) with `Limit`.

mod common;

use common::*;
use pbft_protocol::envelope::{decode, encode, DecodeError, Limits, MAGIC, WIRE_VERSION};
use pbft_protocol::{
    Batch, CommittedProof, Evidence, Message, NewView, PreparedProof, Signed, ViewChange,
};
use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn limits() -> Limits {
    Limits::default()
}

/// Runs `check` over `cases` messages of every variant.
fn for_every_kind(cases: u32, seed: u64, check: impl Fn(&Message) -> Result<(), TestCaseError>) {
    for kind in 0..MESSAGE_KINDS {
        let mut runner = TestRunner::new(pt_config(cases, seed ^ (kind as u64) << 32));
        runner
            .run(&arb_message_of_kind(kind, Space::Wide), |m| check(&m))
            .unwrap_or_else(|e| panic!("message kind #{kind}: {e}"));
    }
}

#[test]
fn every_variant_is_generated() {
    let names = [
        "request",
        "pre_prepare",
        "prepare",
        "commit",
        "reply",
        "checkpoint",
        "view_change",
        "new_view",
        "evidence",
        "fetch_committed",
        "committed",
        "status",
        "state_request",
        "state_chunk",
        "fetch_batch",
        "batch_reply",
    ];
    assert_eq!(names.len(), MESSAGE_KINDS);
    for (kind, name) in names.iter().enumerate() {
        let mut runner = TestRunner::new(pt_config(1, kind as u64));
        for space in [Space::Wide, Space::Pooled] {
            let m = arb_message_of_kind(kind, space)
                .new_tree(&mut runner)
                .unwrap()
                .current();
            assert_eq!(m.kind(), *name);
        }
    }
    // and the mixed strategy reaches every variant and every evidence kind
    let mut runner = TestRunner::new(pt_config(1, 99));
    let mut seen = std::collections::BTreeSet::new();
    let mut ev = std::collections::BTreeSet::new();
    let strat = arb_message(Space::Pooled);
    for _ in 0..600 {
        let m = strat.new_tree(&mut runner).unwrap().current();
        if let Message::Evidence(e) = &m {
            ev.insert(e.kind());
        }
        seen.insert(m.kind());
    }
    assert_eq!(seen.len(), MESSAGE_KINDS, "{seen:?}");
    assert_eq!(ev.len(), 6, "{ev:?}");
}

#[test]
fn round_trip_every_variant() {
    for_every_kind(96, 1, |m| {
        let bytes = encode(m);
        prop_assert_eq!(&bytes[..4], &MAGIC[..]);
        prop_assert_eq!(bytes[4], WIRE_VERSION);
        let back = decode(&bytes, &limits());
        prop_assert_eq!(back.as_ref(), Ok(m));
        // the encoding is deterministic
        prop_assert_eq!(encode(&back.unwrap()), bytes);
        Ok(())
    });
}

#[test]
fn round_trip_pooled_messages() {
    let mut runner = TestRunner::new(pt_config(400, 2));
    runner
        .run(&arb_message(Space::Pooled), |m| {
            prop_assert_eq!(decode(&encode(&m), &limits()), Ok(m));
            Ok(())
        })
        .unwrap();
}

#[test]
fn random_bytes_never_panic() {
    let mut runner = TestRunner::new(pt_config(5000, 3));
    let frame = prop_oneof![
        // pure noise
        proptest::collection::vec(any::<u8>(), 0..300),
        // noise behind a valid header, so the postcard parser is exercised
        proptest::collection::vec(any::<u8>(), 0..300).prop_map(|tail| {
            let mut v = MAGIC.to_vec();
            v.push(WIRE_VERSION);
            v.extend(tail);
            v
        }),
        // a valid variant tag followed by noise
        (0..14u8, proptest::collection::vec(any::<u8>(), 0..300)).prop_map(|(tag, tail)| {
            let mut v = MAGIC.to_vec();
            v.push(WIRE_VERSION);
            v.push(tag);
            v.extend(tail);
            v
        }),
    ];
    runner
        .run(&frame, |bytes| {
            if let Ok(m) = decode(&bytes, &limits()) {
                // a frame that happens to be valid decodes to a message that
                // re-encodes and decodes to itself
                prop_assert_eq!(decode(&encode(&m), &limits()), Ok(m));
            }
            Ok(())
        })
        .unwrap();
}

/// Positions to mutate in a frame of `len` bytes: all of them for small frames, the
/// header plus a seeded sample for large ones.
fn positions(len: usize, rng: &mut ChaCha8Rng) -> Vec<usize> {
    if len <= 160 {
        return (0..len).collect();
    }
    let mut v: Vec<usize> = (0..16).collect();
    v.extend((0..144).map(|_| rng.gen_range(0..len)));
    v
}

#[test]
fn mutations_truncations_and_extensions_never_panic() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let rng = std::cell::RefCell::new(&mut rng);
    for_every_kind(24, 4, |m| {
        let mut rng = rng.borrow_mut();
        let bytes = encode(m);
        let lim = limits();
        // single-byte mutations
        for i in positions(bytes.len(), &mut rng) {
            let random: u8 = rng.gen_range(1..=255);
            for x in [0x01u8, 0x80, 0xff, random] {
                let mut b = bytes.clone();
                b[i] ^= x;
                if let Ok(back) = decode(&b, &lim) {
                    prop_assert_eq!(decode(&encode(&back), &lim), Ok(back));
                }
            }
        }
        // every truncation (sampled for large frames) is an error
        let cuts: Vec<usize> = if bytes.len() <= 400 {
            (0..bytes.len()).collect()
        } else {
            (0..200).map(|_| rng.gen_range(0..bytes.len())).collect()
        };
        for cut in cuts {
            prop_assert!(
                decode(&bytes[..cut], &lim).is_err(),
                "truncation to {} of {} bytes decoded",
                cut,
                bytes.len()
            );
        }
        // extensions: exactly the extra bytes are reported
        for extra in 1..6usize {
            let mut b = bytes.clone();
            b.extend((0..extra).map(|_| rng.gen::<u8>()));
            prop_assert_eq!(decode(&b, &lim), Err(DecodeError::Trailing(extra)));
        }
        Ok(())
    });
}

#[test]
fn frame_over_the_limit_is_too_large_before_parsing() {
    let m = Message::PrePrepare {
        pre_prepare: signed_pp(0, 1, batch_pool()[5].digest()),
        batch: batch_pool()[5].clone(),
    };
    let bytes = encode(&m);
    let exact = Limits {
        max_frame_bytes: bytes.len(),
        ..limits()
    };
    assert_eq!(decode(&bytes, &exact), Ok(m));
    let small = Limits {
        max_frame_bytes: bytes.len() - 1,
        ..limits()
    };
    assert_eq!(
        decode(&bytes, &small),
        Err(DecodeError::TooLarge {
            len: bytes.len(),
            max: bytes.len() - 1
        })
    );
    // garbage that would fail every later check still reports TooLarge: the size is
    // checked first
    let garbage = vec![0xffu8; 1000];
    let lim = Limits {
        max_frame_bytes: 999,
        ..limits()
    };
    assert_eq!(
        decode(&garbage, &lim),
        Err(DecodeError::TooLarge {
            len: 1000,
            max: 999
        })
    );
    // the default limit: one byte over 16 MiB
    let huge = vec![0u8; (16 << 20) + 1];
    assert!(matches!(
        decode(&huge, &limits()),
        Err(DecodeError::TooLarge { .. })
    ));
}

#[test]
fn bad_magic_version_and_trailing() {
    let m = Message::Status {
        view: 3,
        last_executed: 9,
    };
    let good = encode(&m);
    for i in 0..4 {
        let mut b = good.clone();
        b[i] ^= 0x20;
        assert_eq!(
            decode(&b, &limits()),
            Err(DecodeError::BadMagic),
            "byte {i}"
        );
    }
    for short in [&b""[..], b"P", b"PBF", b"PBFT"] {
        assert_eq!(decode(short, &limits()), Err(DecodeError::BadMagic));
    }
    for v in [0u8, 1, WIRE_VERSION + 1, 0xff] {
        let mut b = good.clone();
        b[4] = v;
        assert_eq!(decode(&b, &limits()), Err(DecodeError::Version(v)));
    }
    let mut b = good.clone();
    b.extend_from_slice(&[0, 0, 7]);
    assert_eq!(decode(&b, &limits()), Err(DecodeError::Trailing(3)));
    // header alone: a malformed (empty) body
    assert!(matches!(
        decode(&good[..5], &limits()),
        Err(DecodeError::Malformed(_))
    ));
    // an unknown variant tag (`Query` and `Answer` are the two variants not counted)
    let mut b = good[..5].to_vec();
    b.push(MESSAGE_KINDS as u8 + 2);
    assert!(matches!(
        decode(&b, &limits()),
        Err(DecodeError::Malformed(_))
    ));
}

fn big_batch(n: usize) -> Batch {
    Batch {
        requests: (0..n)
            .map(|i| request((i % 4) as u8, i as u64 + 1, vec![i as u8]))
            .collect(),
    }
}

fn vc_with(prepared: Vec<PreparedProof>) -> Signed<ViewChange> {
    view_change(2, 0, prepared, 1)
}

fn nv_with(vcs: Vec<Signed<ViewChange>>) -> Signed<NewView> {
    Signed::sign(
        NewView {
            view: 2,
            view_changes: vcs,
            pre_prepares: vec![],
        },
        replica_key(2),
    )
}

/// Every place a batch travels, holding `batch` (view changes and new views name batches
/// by digest only).
fn batch_carriers(batch: Batch) -> Vec<Message> {
    let d = batch.digest();
    vec![
        Message::PrePrepare {
            pre_prepare: signed_pp(0, 1, d),
            batch: batch.clone(),
        },
        Message::BatchReply {
            seq: 1,
            batch: batch.clone(),
        },
        Message::Evidence(Box::new(Evidence::BadPrePrepare {
            pre_prepare: signed_pp(0, 1, d),
            batch: batch.clone(),
        })),
        Message::Committed {
            stable_proof: vec![],
            proofs: vec![CommittedProof {
                pre_prepare: signed_pp(0, 1, d),
                batch,
                commits: vec![commit(0, 1, d, 1)],
            }],
        },
    ]
}

#[test]
fn batch_over_the_limit_is_rejected_wherever_it_travels() {
    let lim = Limits {
        max_batch_requests: 3,
        ..limits()
    };
    for m in batch_carriers(big_batch(3)) {
        assert_eq!(decode(&encode(&m), &lim), Ok(m.clone()), "{}", m.kind());
    }
    for m in batch_carriers(big_batch(4)) {
        assert!(
            matches!(decode(&encode(&m), &lim), Err(DecodeError::Limit(_))),
            "{} with 4 requests: {:?}",
            m.kind(),
            decode(&encode(&m), &lim)
        );
    }
}

#[test]
fn op_over_the_limit_is_rejected() {
    let lim = Limits {
        max_op_bytes: 8,
        ..limits()
    };
    let ok = request(0, 1, vec![7; 8]);
    let big = request(0, 1, vec![7; 9]);
    let m = Message::Request(ok.clone());
    assert_eq!(decode(&encode(&m), &lim), Ok(m));
    assert!(matches!(
        decode(&encode(&Message::Request(big.clone())), &lim),
        Err(DecodeError::Limit(_))
    ));
    for m in batch_carriers(Batch {
        requests: vec![ok.clone(), big],
    }) {
        assert!(
            matches!(decode(&encode(&m), &lim), Err(DecodeError::Limit(_))),
            "{} with a 9-byte op",
            m.kind()
        );
    }
}

#[test]
fn certificate_and_slot_limits() {
    let lim = Limits {
        max_certificate: 2,
        max_slots: 2,
        max_chunk_bytes: 4,
        ..limits()
    };
    let rejected = |m: Message| {
        let r = decode(&encode(&m), &lim);
        assert!(
            matches!(r, Err(DecodeError::Limit(_))),
            "{}: {r:?}",
            m.kind()
        );
    };
    let accepted = |m: Message| {
        assert_eq!(decode(&encode(&m), &lim), Ok(m.clone()), "{}", m.kind());
    };
    let b = batch_pool()[1].clone();
    // prepares in a certificate: 3 > 2
    let cert3 = prepared_cert(0, 1, b.clone(), &[1, 2, 3]);
    rejected(Message::ViewChange(Box::new(vc_with(vec![cert3.clone()]))));
    let cert2 = prepared_cert(0, 1, b.clone(), &[1, 2]);
    accepted(Message::ViewChange(Box::new(vc_with(vec![cert2.clone()]))));
    // prepared proofs in a view change: 3 > 2
    let certs: Vec<PreparedProof> = (1..=3)
        .map(|s| prepared_cert(0, s, b.clone(), &[1, 2]))
        .collect();
    rejected(Message::ViewChange(Box::new(vc_with(certs.clone()))));
    // checkpoint proof in a view change: 3 > 2
    rejected(Message::ViewChange(Box::new(view_change(2, 16, vec![], 1))));
    // view changes in a new view: 3 > 2
    let vcs: Vec<_> = (0..3).map(|r| view_change(2, 0, vec![], r)).collect();
    rejected(Message::NewView(Box::new(nv_with(vcs.clone()))));
    accepted(Message::NewView(Box::new(nv_with(vcs[..2].to_vec()))));
    // a bad view change nested in a new view
    rejected(Message::NewView(Box::new(nv_with(vec![vc_with(vec![
        cert3.clone(),
    ])]))));
    // pre-prepares in a new view: 3 > 2
    let mut nv = nv_with(vec![]);
    nv.body.pre_prepares = (1..=3)
        .map(|s| signed_pp(2, s, Batch::null_digest()))
        .collect();
    rejected(Message::NewView(Box::new(nv)));
    // committed answers
    let d = b.digest();
    let cp = |n: u32| CommittedProof {
        pre_prepare: signed_pp(0, 1, d),
        batch: b.clone(),
        commits: (0..n).map(|r| commit(0, 1, d, r)).collect(),
    };
    rejected(Message::Committed {
        stable_proof: vec![],
        proofs: vec![cp(3)],
    });
    rejected(Message::Committed {
        stable_proof: vec![],
        proofs: vec![cp(1), cp(1), cp(1)],
    });
    rejected(Message::Committed {
        stable_proof: checkpoint_proof(16),
        proofs: vec![],
    });
    accepted(Message::Committed {
        stable_proof: checkpoint_proof(16)[..2].to_vec(),
        proofs: vec![cp(2), cp(2)],
    });
    // checkpoint-lie evidence
    rejected(Message::Evidence(Box::new(Evidence::CheckpointLie {
        lie: checkpoint(16, state_digest(0), 3),
        proof: checkpoint_proof(16),
    })));
    // snapshot chunks
    let chunk = |n: usize| Message::StateChunk {
        seq: 16,
        index: 0,
        total: 1,
        data: vec![1; n],
    };
    accepted(chunk(4));
    rejected(chunk(5));
    // replies (results bounded by the op limit)
    let reply = |n: usize| Message::Reply(signed_reply(0, vec![0; n]));
    let lim_ops = Limits {
        max_op_bytes: 4,
        ..limits()
    };
    assert!(decode(&encode(&reply(4)), &lim_ops).is_ok());
    assert!(matches!(
        decode(&encode(&reply(5)), &lim_ops),
        Err(DecodeError::Limit(_))
    ));
}

#[test]
fn huge_length_prefixes_do_not_allocate_or_panic() {
    // a request whose op claims u64::MAX / 2^35 bytes but has none
    let mut b = MAGIC.to_vec();
    b.push(WIRE_VERSION);
    b.push(0); // Message::Request
    b.extend_from_slice(client_key(0).public().as_bytes());
    b.push(1); // request_id
    b.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x7f]); // op length ~ 2^35
    assert!(matches!(
        decode(&b, &limits()),
        Err(DecodeError::Malformed(_))
    ));
    // a committed answer claiming 2^63 proofs
    let mut b = MAGIC.to_vec();
    b.push(WIRE_VERSION);
    b.push(10);
    b.push(0);
    b.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]);
    assert!(decode(&b, &limits()).is_err());
}

/// A client connection may carry only requests and queries: every other kind is
/// refused on its tag, before its body is decoded, and the tags the check reads are
/// those postcard writes.
#[test]
fn client_frames_are_refused_on_their_tag_unless_requests_or_queries() {
    use pbft_protocol::envelope::{decode_client, QUERY_TAG, REQUEST_TAG};
    let req = Message::Request(request(1, 1, vec![1, 2, 3]));
    let query = Message::Query {
        id: 9,
        query: pbft_protocol::Query::Status,
    };
    assert_eq!(encode(&req)[5], REQUEST_TAG);
    assert_eq!(encode(&query)[5], QUERY_TAG);
    assert_eq!(decode_client(&encode(&req), &limits()), Ok(req));
    assert_eq!(decode_client(&encode(&query), &limits()), Ok(query));
    for_every_kind(4, 23, |m| {
        let b = encode(m);
        if matches!(m, Message::Request(_)) {
            prop_assert!(decode_client(&b, &limits()).is_ok());
        } else {
            prop_assert_eq!(
                decode_client(&b, &limits()),
                Err(DecodeError::NotFromClients)
            );
            // refused on the tag alone: the body after it may be anything
            let mut cut = b[..6].to_vec();
            cut.extend_from_slice(&[0xff; 3]);
            prop_assert_eq!(
                decode_client(&cut, &limits()),
                Err(DecodeError::NotFromClients)
            );
        }
        Ok(())
    });
}
