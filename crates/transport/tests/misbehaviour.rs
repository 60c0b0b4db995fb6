//! Strikes and bans for misbehaving peers and clients.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use common::{next, next_peer_frame, wait_for_mesh, wait_until, Cluster};
use pbft_transport::{ClientTransport, Inbound, Origin, Source};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reaching_the_strike_limit_disconnects_and_bans_a_peer() {
    let mut cluster = Cluster::new(3);
    let mut cfg0 = cluster.config(0);
    cfg0.strike_limit = 3;
    cfg0.strike_window = Duration::from_secs(600);
    cfg0.ban_duration = Duration::from_secs(3600);
    let (t0, mut rx0) = cluster.start_with(0, cfg0).await;
    let (t1, mut rx1) = cluster.start(1).await;
    let (t2, _rx2) = cluster.start(2).await;
    wait_for_mesh(&[(0, &t0), (1, &t1), (2, &t2)]).await;

    t0.report(Origin::Peer(1), "bad_signature");
    t0.report(Origin::Peer(1), "undecodable");
    let s = t0.stats();
    assert!(
        s.banned.is_empty() && s.inbound.contains(&1),
        "banned too early: {s:?}"
    );
    t0.report(Origin::Peer(1), "bad_signature");
    let s = t0.stats();
    assert_eq!(s.banned, BTreeSet::from([1]));
    assert!(!s.inbound.contains(&1), "still connected after the ban");
    assert_eq!(s.count(Source::Peer(1), "bad_signature"), 2);
    assert_eq!(s.count(Source::Peer(1), "undecodable"), 1);
    assert_eq!(s.count(Source::Peer(1), "ban_imposed"), 1);

    // Validator 1 notices, and its attempts to come back are refused.
    wait_until("validator 1 sees the disconnection", || {
        !t1.stats().connected.contains(&0)
    })
    .await;
    assert!(t1.send(0, Bytes::from_static(b"let me in")));
    let before = t0.stats().count(Source::Peer(1), "banned");
    wait_until("validator 0 refuses validator 1 again", || {
        t0.stats().count(Source::Peer(1), "banned") >= before + 2
    })
    .await;
    assert!(
        rx0.try_recv().is_err(),
        "a frame from the banned peer arrived"
    );
    assert!(!t1.stats().connected.contains(&0));
    assert_eq!(t1.stats().queued[&0], 1);

    // Others are unaffected, and validator 0 still talks to 1.
    assert!(t2.send(0, Bytes::from_static(b"from 2")));
    assert_eq!(
        next_peer_frame(&mut rx0, "frame from 2").await,
        (2, Bytes::from_static(b"from 2"))
    );
    assert!(t0.send(1, Bytes::from_static(b"still hear me")));
    assert_eq!(
        next_peer_frame(&mut rx1, "frame to banned").await,
        (0, Bytes::from_static(b"still hear me"))
    );
    // Reports about ourselves or unknown ids are counted but ban no one.
    for _ in 0..5 {
        t0.report(Origin::Peer(0), "odd");
        t0.report(Origin::Peer(42), "odd");
    }
    assert_eq!(t0.stats().banned, BTreeSet::from([1]));
    for t in [t0, t1, t2] {
        t.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_expires() {
    let mut cluster = Cluster::new(2);
    let mut cfg0 = cluster.config(0);
    cfg0.strike_limit = 1;
    cfg0.ban_duration = Duration::from_millis(300);
    let (t0, mut rx0) = cluster.start_with(0, cfg0).await;
    let (t1, _rx1) = cluster.start(1).await;
    wait_for_mesh(&[(0, &t0), (1, &t1)]).await;
    t0.report(Origin::Peer(1), "bad_signature");
    assert_eq!(t0.stats().count(Source::Peer(1), "ban_imposed"), 1);
    // Validator 1 must have left the closed connection (it may already be
    // back if the ban expired meanwhile).
    wait_until("validator 1 leaves the closed connection", || {
        let s = t1.stats();
        !s.connected.contains(&0) || s.established.get(&0).is_some_and(|n| *n >= 2)
    })
    .await;
    assert!(t1.send(0, Bytes::from_static(b"after the ban")));
    assert_eq!(
        next_peer_frame(&mut rx0, "frame after the ban").await,
        (1, Bytes::from_static(b"after the ban"))
    );
    let s = t0.stats();
    assert!(s.banned.is_empty() && s.inbound.contains(&1), "{s:?}");
    t0.shutdown().await;
    t1.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misbehaving_client_is_disconnected() {
    let mut cluster = Cluster::new(1);
    let mut cfg0 = cluster.config(0);
    cfg0.strike_limit = 2;
    let (t0, mut rx0) = cluster.start_with(0, cfg0).await;
    let (client, _replies) = ClientTransport::connect(cluster.peers.clone(), 1024, [0; 32])
        .await
        .expect("client");
    assert!(client.send(0, Bytes::from_static(b"garbage")));
    let conn = match next(&mut rx0, "client frame").await {
        Inbound::Client { conn, .. } => conn,
        other => panic!("unexpected {other:?}"),
    };
    t0.report(Origin::Client(conn), "undecodable");
    t0.report(Origin::Client(conn), "undecodable");
    assert_eq!(
        next(&mut rx0, "client closed").await,
        Inbound::ClientClosed(conn)
    );
    assert_eq!(t0.stats().count(Source::Client, "undecodable"), 2);
    client.shutdown().await;
    t0.shutdown().await;
}
