//! Validators exchanging frames: the full mesh, broadcast, and a restart.

mod common;

use std::collections::BTreeMap;

use bytes::Bytes;
use common::{next_peer_frame, wait_for_mesh, wait_until, Cluster};
use pbft_transport::{Inbound, Transport};
use tokio::sync::mpsc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_validators_exchange_frames_and_broadcast_exactly_once() {
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

    // Every ordered pair.
    for (i, (t, _)) in nodes.iter().enumerate() {
        for j in 0..4u32 {
            if j != i as u32 {
                assert!(t.send(j, Bytes::from(format!("direct {i}->{j}"))));
            }
        }
    }
    // One broadcast per validator, with a payload large enough to span
    // several QUIC packets.
    let payload = |i: usize| {
        let mut v = format!("broadcast from {i}:").into_bytes();
        v.extend((0..20_000u32).map(|k| (k as usize * 31 + i) as u8));
        Bytes::from(v)
    };
    for (i, (t, _)) in nodes.iter().enumerate() {
        t.broadcast(payload(i));
    }

    for (me, (_, rx)) in nodes.iter_mut().enumerate() {
        let mut got: BTreeMap<u32, Vec<Bytes>> = BTreeMap::new();
        for _ in 0..6 {
            let (from, frame) = next_peer_frame(rx, &format!("frames at validator {me}")).await;
            got.entry(from).or_default().push(frame);
        }
        for from in (0..4u32).filter(|f| *f != me as u32) {
            // Frames from one validator arrive in the order it sent them.
            let expected = vec![
                Bytes::from(format!("direct {from}->{me}")),
                payload(from as usize),
            ];
            assert_eq!(
                got.get(&from),
                Some(&expected),
                "frames from {from} at {me}"
            );
        }
    }
    for (t, _) in &nodes {
        wait_until("every frame is written", || t.stats().frames_sent == 6).await;
    }
    // Exactly once: nothing beyond the six frames arrived anywhere.
    for (me, (t, rx)) in nodes.iter_mut().enumerate() {
        assert!(rx.try_recv().is_err(), "an extra frame arrived at {me}");
        let s = t.stats();
        assert_eq!(s.frames_received, 6);
        for reason in ["unpinned_key", "oversize", "queue_full", "send_failed"] {
            assert_eq!(s.total(reason), 0, "{reason} at {me}: {:?}", s.rejections);
        }
    }
    for (t, _) in nodes {
        t.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_resumes_after_a_validator_restarts() {
    let mut cluster = Cluster::new(2);
    let (t0, mut rx0) = cluster.start(0).await;
    let (t1, mut rx1) = cluster.start(1).await;
    wait_for_mesh(&[(0, &t0), (1, &t1)]).await;
    assert!(t0.send(1, Bytes::from_static(b"before")));
    assert_eq!(
        next_peer_frame(&mut rx1, "frame before restart").await,
        (0, Bytes::from_static(b"before"))
    );
    assert_eq!(t0.stats().established.get(&1), Some(&1));

    // Validator 1 goes away and comes back on the same address.
    let addr1 = t1.local_addr();
    t1.shutdown().await;
    drop(rx1);
    wait_until("validator 0 sees validator 1 go", || {
        let s = t0.stats();
        !s.connected.contains(&1) && !s.inbound.contains(&1)
    })
    .await;
    let (t1, mut rx1) = Transport::start(cluster.config(1))
        .await
        .expect("restart on the same address");
    assert_eq!(t1.local_addr(), addr1);

    // Validator 0 redials (with back-off); validator 1 dials 0 afresh.
    wait_until("validator 0 reconnects to 1", || {
        let s = t0.stats();
        s.established.get(&1).is_some_and(|n| *n >= 2)
            && s.connected.contains(&1)
            && s.inbound.contains(&1)
    })
    .await;
    wait_for_mesh(&[(0, &t0), (1, &t1)]).await;
    assert!(t0.send(1, Bytes::from_static(b"after 0->1")));
    assert!(t1.send(0, Bytes::from_static(b"after 1->0")));
    assert_eq!(
        next_peer_frame(&mut rx1, "frame after restart").await,
        (0, Bytes::from_static(b"after 0->1"))
    );
    assert_eq!(
        next_peer_frame(&mut rx0, "frame after restart").await,
        (1, Bytes::from_static(b"after 1->0"))
    );
    t0.shutdown().await;
    t1.shutdown().await;
}
