//! Every protocol message fits the frame limit by design (docs/protocol.md, "Message
//! sizes"). The view change and the new view are the messages that grow with the log
//! window, and a catch-up answer grows with its batches: these tests drive replicas of
//! the node's default configuration (K = 64, L = 256, 256 requests per batch) until
//! their logs are full of batches of operations padded to the decoder's limit, then
//! measure what they really send against the frame limit and against the bound
//! `FrameBounds` computes; and they check that `Config::validate` (which the cluster
//! file goes through) refuses configurations whose messages would not fit.

mod common;

use common::*;
use pbft_crypto::Digest;
use pbft_protocol::bounds::FrameBounds;
use pbft_protocol::envelope::{self, Limits};
use pbft_protocol::verify::{SignatureCache, Verifier};
use pbft_protocol::{Action, Batch, Config, ConfigError, Instant, Message, Replica, View};
use std::cell::RefCell;
use std::collections::HashSet;

/// A signature cache, so that the client requests of a batch reused at every slot are
/// checked once.
#[derive(Default)]
struct Cache(RefCell<HashSet<Digest>>);

impl SignatureCache for Cache {
    fn contains(&self, id: &Digest) -> bool {
        self.0.borrow().contains(id)
    }
    fn insert(&self, id: Digest) {
        self.0.borrow_mut().insert(id);
    }
}

/// The node's defaults (crates/cluster, `ProtocolParams::default`): K = 64, L = 256,
/// 256 requests per batch, a pipeline of 1.
fn node_config() -> Config {
    let mut cfg = Config::new(pubkeys());
    cfg.checkpoint_interval = 64;
    cfg.log_window = 256;
    cfg.max_batch = 256;
    cfg.pipeline_depth = 1;
    cfg.validate()
        .expect("a configuration the cluster file accepts");
    cfg
}

/// A full batch of requests whose operations are padded to the decoder's limit.
fn padded_batch(size: usize) -> Batch {
    let op_bytes = Limits::default().max_op_bytes;
    Batch {
        requests: (0..size)
            .map(|i| request((i % 4) as u8, 1 + (i / 4) as u64, vec![0xAB; op_bytes]))
            .collect(),
    }
}

fn feed(r: &mut Replica, v: &Verifier, cache: &Cache, from: u32, msg: Message) {
    let verified = v.verify_cached(from, msg, cache).expect("valid message");
    r.on_message(verified, Instant::ZERO);
}

fn sent(r: &mut Replica) -> Vec<Message> {
    let mut out = Vec::new();
    while let Some(a) = r.poll_action() {
        match a {
            Action::Broadcast { msg } | Action::Send { msg, .. } => out.push(msg),
            _ => {}
        }
    }
    out
}

/// Backups 1, 2 and 3 of view 0, each holding a prepared certificate for every slot of
/// the log window (the primary 0 proposed `batch` at each of them).
fn prepared_backups(cfg: &Config, batch: &Batch) -> Vec<Replica> {
    let v = Verifier::new(pubkeys());
    let cache = Cache::default();
    let digest = batch.digest();
    let mut backups: Vec<Replica> = (1..4)
        .map(|i| Replica::new(cfg.clone(), i, replica_key(i).clone()).expect("replica"))
        .collect();
    for seq in 1..=cfg.log_window {
        let pp = pre_prepare_msg(0, seq, batch.clone());
        let prepares: Vec<_> = (1..4).map(|i| prepare(0, seq, digest, i)).collect();
        for r in backups.iter_mut() {
            feed(r, &v, &cache, 0, pp.clone());
            for p in &prepares {
                if p.body.replica != r.id() {
                    feed(r, &v, &cache, p.body.replica, Message::Prepare(p.clone()));
                }
            }
            sent(r);
        }
    }
    for r in &backups {
        for seq in 1..=cfg.log_window {
            assert_eq!(
                r.prepared_view(seq),
                Some(0),
                "replica {} seq {seq}",
                r.id()
            );
        }
    }
    backups
}

/// Each backup's view change to view 1 (they join on f+1 = 2 view changes from the
/// others, so each is fed the two view changes of the other backups).
fn view_changes(backups: &mut [Replica], view: View) -> Vec<Message> {
    let mut out = Vec::new();
    for r in backups.iter_mut() {
        // the request timer is armed by the waiting requests: firing it starts a view
        // change to view 1
        r.on_timeout(Instant::ZERO.plus(pbft_protocol::Duration::from_secs(3600)));
        let vc = sent(r)
            .into_iter()
            .find(|m| matches!(m, Message::ViewChange(vc) if vc.body.new_view == view))
            .expect("a view change");
        out.push(vc);
    }
    out
}

fn assert_fits(what: &str, msg: &Message) -> usize {
    let len = envelope::encode(msg).len();
    let max = Limits::default().max_frame_bytes;
    assert!(
        len <= max,
        "{what} of {len} bytes exceeds the frame limit of {max} bytes"
    );
    len
}

/// Before view changes named batches by digest, each backup's view change here held
/// 256 batches of 16 padded requests (about 17 MiB) and could not be sent.
#[test]
fn a_full_view_change_and_its_new_view_fit_the_frame_limit() {
    let cfg = node_config();
    let bounds = FrameBounds::of(&cfg, &Limits::default());
    let batch = padded_batch(16);
    let mut backups = prepared_backups(&cfg, &batch);
    let vcs = view_changes(&mut backups, 1);
    for (i, vc) in vcs.iter().enumerate() {
        let len = assert_fits(&format!("the view change of replica {}", i + 1), vc);
        eprintln!("view change of replica {}: {len} bytes", i + 1);
        assert!(len <= bounds.view_change, "{len} > {}", bounds.view_change);
    }
    // replica 1 is the primary of view 1: it gets the view changes of 2 and 3
    let v = Verifier::new(pubkeys());
    let cache = Cache::default();
    let primary = &mut backups[0];
    for (i, vc) in vcs.iter().enumerate().skip(1) {
        feed(primary, &v, &cache, i as u32 + 1, vc.clone());
    }
    let nv = sent(primary)
        .into_iter()
        .find(|m| matches!(m, Message::NewView(_)))
        .expect("the new primary sends its new view");
    let len = assert_fits("the new view", &nv);
    eprintln!("new view: {len} bytes");
    assert!(len <= bounds.new_view, "{len} > {}", bounds.new_view);
}

/// The bounds of the node's defaults fit one frame with room to spare, and the
/// configuration checks refuse what would not fit.
#[test]
fn the_configuration_bounds_every_message_and_refuses_what_does_not_fit() {
    let limits = Limits::default();
    let max = limits.max_frame_bytes;
    let b = FrameBounds::of(&node_config(), &limits);
    eprintln!("node defaults: {b:?}");
    for (what, len) in [
        ("pre-prepare", b.pre_prepare),
        ("view change", b.view_change),
        ("new view", b.new_view),
        (
            "catch-up answer",
            b.committed_answer_base + b.committed_proof,
        ),
    ] {
        assert!(len <= max, "{what}: {len} > {max}");
    }
    // a view change's bound does not depend on the batches
    let mut small = node_config();
    small.max_batch = 1;
    assert_eq!(FrameBounds::of(&small, &limits).view_change, b.view_change);
    // a catch-up answer holds as many certificates as fit
    let per = b.proofs_per_answer(&limits, usize::MAX);
    assert!(per >= 1 && b.committed_answer_base + per * b.committed_proof <= max);

    let refused = |cfg: &Config, field: &str| match cfg.validate() {
        Err(ConfigError::Invalid { field: f, .. }) => assert_eq!(f, field),
        other => panic!("expected {field} refused, got {other:?}"),
    };
    // 40 validators with L = 256: a new view of q = 27 view changes, each with 256
    // certificates of 26 prepares, is far beyond 16 MiB
    let mut many = node_config();
    many.validators = (0..40u8)
        .map(|i| {
            pbft_crypto::Keypair::from_seed(&[i.wrapping_add(100); 32])
                .expect("key")
                .public()
        })
        .collect();
    assert!(FrameBounds::of(&many, &limits).new_view > max);
    refused(&many, "log_window");
    // ... and accepted with a window small enough
    many.checkpoint_interval = 8;
    many.log_window = 16;
    many.pipeline_depth = 1;
    many.validate().expect("40 validators with L = 16 fit");
    // with the node's other defaults, the largest cluster accepted (the benchmarks run
    // n = 4, 7 and 10)
    let largest = (4..=64u8)
        .take_while(|n| {
            let mut c = node_config();
            c.validators = (0..*n)
                .map(|i| {
                    pbft_crypto::Keypair::from_seed(&[i.wrapping_add(100); 32])
                        .expect("key")
                        .public()
                })
                .collect();
            c.validate().is_ok()
        })
        .last();
    eprintln!("largest n accepted with K = 64, L = 256: {largest:?}");
    assert!(
        largest.is_some_and(|n| (10..40).contains(&n)),
        "{largest:?}"
    );
    // batches whose padded requests overflow a frame
    let mut wide = node_config();
    wide.max_batch = limits.max_batch_requests;
    refused(&wide, "max_batch");
    // more slots than the decoder lets a view change carry
    let mut long = node_config();
    long.log_window = 2 * limits.max_slots as u64;
    refused(&long, "log_window");
}

/// A lagging replica asks for 32 committed batches at once; with 128 padded requests
/// in each, 32 certificates are about 17 MiB. The answer holds only as many as fit.
#[test]
fn a_catch_up_answer_fits_the_frame_limit() {
    let cfg = node_config();
    let batch = padded_batch(128);
    let digest = batch.digest();
    let v = Verifier::new(pubkeys());
    let cache = Cache::default();
    let mut r = Replica::new(cfg, 1, replica_key(1).clone()).expect("replica");
    for seq in 1..=32 {
        feed(
            &mut r,
            &v,
            &cache,
            0,
            pre_prepare_msg(0, seq, batch.clone()),
        );
        for i in [2, 3] {
            feed(
                &mut r,
                &v,
                &cache,
                i,
                Message::Prepare(prepare(0, seq, digest, i)),
            );
        }
        for i in [0, 2, 3] {
            feed(
                &mut r,
                &v,
                &cache,
                i,
                Message::Commit(commit(0, seq, digest, i)),
            );
        }
        sent(&mut r);
    }
    feed(
        &mut r,
        &v,
        &cache,
        2,
        Message::FetchCommitted {
            from_seq: 1,
            to_seq: 32,
        },
    );
    let answer = sent(&mut r)
        .into_iter()
        .find(|m| matches!(m, Message::Committed { .. }))
        .expect("an answer");
    assert_fits("the catch-up answer", &answer);
    let Message::Committed { proofs, .. } = &answer else {
        unreachable!()
    };
    assert!(!proofs.is_empty());
    assert_eq!(
        envelope::decode(&envelope::encode(&answer), &Limits::default()),
        Ok(answer.clone())
    );
}
