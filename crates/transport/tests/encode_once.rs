//! Encode once: [`Transport::broadcast`] takes one encoded frame and sends that same
//! buffer to the n-1 other validators.
//!
//! What is shown:
//! - every peer of a broadcast receives exactly one frame, byte-identical to the one
//!   buffer passed in (a frame large enough to span many QUIC packets), and nothing else;
//! - each peer's send queue keeps a reference to the caller's allocation rather than a
//!   copy. The queues are private, so this is observed through the allocation's
//!   lifetime: the frame is a [`Bytes`] over an owner whose drop the test can see
//!   ([`Bytes::from_owner`]); once the caller has dropped its handle, the allocation
//!   stays alive exactly as long as a queue holds it (the peers are down, so nothing is
//!   dequeued), and it is freed when the transport shuts down. A per-peer copy would
//!   free it as soon as `broadcast` returned. Each peer's queue is checked on its own
//!   with `send`, then all three at once with `broadcast`.
//!
//! What is not shown: pointer equality of the queued frames with each other (the
//! queues are not visible from outside, and no test hook was added to production
//! code), nor that QUIC writes the buffer without copying it; and encoding once in the
//! host (`Host::emit` encodes before the node calls `broadcast`) is not tested here.

mod common;

use std::sync::{Arc, Weak};

use bytes::Bytes;
use common::{next_peer_frame, wait_for_mesh, wait_until, Cluster};
use pbft_transport::{Inbound, Transport};
use tokio::sync::mpsc;

/// A deterministic payload of `len` bytes (xorshift from a fixed seed).
fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// An allocation whose lifetime the test can watch.
struct Tracked {
    data: Vec<u8>,
    _alive: Arc<()>,
}

impl AsRef<[u8]> for Tracked {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

/// A frame over a tracked allocation, and a way to tell whether the allocation is
/// still alive.
fn tracked(data: Vec<u8>) -> (Bytes, Weak<()>) {
    let alive = Arc::new(());
    let watch = Arc::downgrade(&alive);
    let frame = Bytes::from_owner(Tracked {
        data,
        _alive: alive,
    });
    (frame, watch)
}

fn is_alive(w: &Weak<()>) -> bool {
    w.strong_count() > 0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_peer_receives_the_broadcast_buffer_byte_for_byte() {
    let mut cluster = Cluster::new(4);
    let mut nodes: Vec<(Transport, mpsc::Receiver<Inbound>)> = Vec::new();
    for id in 0..4 {
        nodes.push(cluster.start(id).await);
    }
    let handles: Vec<(u32, &Transport)> = nodes
        .iter()
        .enumerate()
        .map(|(i, (t, _))| (i as u32, t))
        .collect();
    wait_for_mesh(&handles).await;

    let frame = Bytes::from(payload(100_000, 0x5eed));
    nodes[0].0.broadcast(frame.clone());

    for (me, (_, rx)) in nodes.iter_mut().enumerate().skip(1) {
        let (from, got) = next_peer_frame(rx, &format!("the broadcast at {me}")).await;
        assert_eq!(from, 0);
        assert_eq!(got.len(), frame.len(), "length at {me}");
        assert!(
            got == frame,
            "the frame at {me} differs from the buffer passed in"
        );
    }
    let sender = &nodes[0].0;
    wait_until("the broadcast is written to every peer", || {
        sender.stats().frames_sent == 3
    })
    .await;
    // one frame per peer, nothing else anywhere
    for (me, (t, rx)) in nodes.iter_mut().enumerate() {
        assert!(rx.try_recv().is_err(), "an extra frame arrived at {me}");
        let expected = if me == 0 { 0 } else { 1 };
        assert_eq!(t.stats().frames_received, expected, "frames at {me}");
    }
    assert_eq!(nodes[0].0.stats().frames_sent, 3);
    for (t, _) in nodes {
        t.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_peer_queue_holds_the_callers_allocation_not_a_copy() {
    // Only validator 0 runs: it can never connect to 1..3, so whatever is queued for
    // them stays queued until shutdown.
    let mut cluster = Cluster::new(4);
    let (t, _rx) = cluster.start(0).await;

    // The tracker sees a release: a frame the transport refuses is gone as soon as the
    // caller drops it.
    let (frame, refused) = tracked(payload(64, 1));
    assert!(!t.send(9, frame));
    assert!(!is_alive(&refused));

    // One peer at a time: its queue keeps the caller's allocation alive.
    let mut watches = Vec::new();
    for k in 1..4u32 {
        let (frame, watch) = tracked(payload(4096, u64::from(k)));
        assert!(t.send(k, frame)); // the caller's last handle goes with it
        assert!(
            is_alive(&watch),
            "peer {k}'s queue holds a copy, not the buffer"
        );
        let queued = t.stats().queued;
        assert_eq!(queued.get(&k), Some(&1), "queued for {k}: {queued:?}");
        watches.push(watch);
    }

    // All peers at once: one buffer, shared by the three queues.
    let (frame, shared) = tracked(payload(4096, 9));
    t.broadcast(frame);
    assert!(is_alive(&shared));
    let queued = t.stats().queued;
    assert!(
        (1..4u32).all(|k| queued.get(&k) == Some(&2)),
        "queued: {queued:?}"
    );
    watches.push(shared);

    // Shutting down drops the queues, and with them the last references.
    t.shutdown().await;
    for (i, w) in watches.iter().enumerate() {
        assert!(!is_alive(w), "allocation {i} outlived the transport");
    }
}
