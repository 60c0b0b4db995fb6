//! Every protocol message fits the frame limit by design (docs/protocol.md, "Message
//! sizes"). The view change and the new view are the messages that grow with the log
//! window: these tests drive replicas of a configuration the cluster file accepts until
//! their prepared sets are full of batches of padded operations, then measure the view
//! change and the new view they really send.

mod common;

use common::*;
use pbft_crypto::Digest;
use pbft_protocol::envelope::{self, Limits};
use pbft_protocol::verify::{SignatureCache, Verifier};
use pbft_protocol::{Action, Batch, Config, Instant, Message, Replica, View};
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

/// The node's checkpoint interval and log window, with batches of `max_batch` requests.
fn node_config(max_batch: usize) -> Config {
    let mut cfg = Config::new(pubkeys());
    cfg.checkpoint_interval = 64;
    cfg.log_window = 256;
    cfg.max_batch = max_batch;
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

#[test]
fn a_full_view_change_and_its_new_view_fit_the_frame_limit() {
    let cfg = node_config(16);
    let batch = padded_batch(cfg.max_batch);
    let mut backups = prepared_backups(&cfg, &batch);
    let vcs = view_changes(&mut backups, 1);
    for (i, vc) in vcs.iter().enumerate() {
        assert_fits(&format!("the view change of replica {}", i + 1), vc);
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
    assert_fits("the new view", &nv);
}
