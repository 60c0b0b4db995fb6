//! Frame size limit, send queue bound and back-pressure, bind errors and
//! configuration checks.

mod common;

use bytes::Bytes;
use common::{keypair, next, next_peer_frame, wait_for_mesh, wait_until, within, Cluster};
use pbft_transport::{
    ClientTransport, Inbound, Source, Transport, TransportConfig, TransportError,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_frame_closes_the_connection_and_a_fresh_one_works() {
    let mut cluster = Cluster::new(2);
    let mut cfg0 = cluster.config(0);
    cfg0.max_frame = 1024;
    let (t0, mut rx0) = cluster.start_with(0, cfg0).await;
    let mut cfg1 = cluster.config(1);
    cfg1.max_frame = 64 * 1024;
    let (t1, _rx1) = cluster.start_with(1, cfg1).await;
    wait_for_mesh(&[(0, &t0), (1, &t1)]).await;
    assert_eq!(t1.stats().established.get(&0), Some(&1));

    // Validator 0 never sends over its own limit.
    assert!(!t0.send(1, Bytes::from(vec![0u8; 1025])));
    assert_eq!(t0.stats().count(Source::Peer(1), "oversize_send"), 1);

    // Validator 1 (larger limit) sends 0 a frame over 0's limit.
    assert!(t1.send(0, Bytes::from(vec![7u8; 2000])));
    wait_until("validator 0 counts the oversize frame", || {
        t0.stats().count(Source::Peer(1), "oversize") == 1
    })
    .await;
    wait_until("validator 1 reconnects", || {
        let s = t1.stats();
        s.established.get(&0) == Some(&2) && s.connected.contains(&0)
    })
    .await;
    let ok = Bytes::from(vec![9u8; 1024]);
    assert!(t1.send(0, ok.clone()));
    assert_eq!(
        next_peer_frame(&mut rx0, "well-formed frame").await,
        (1, ok)
    );
    assert!(rx0.try_recv().is_err(), "the oversize frame was delivered");

    // The same for a client connection.
    let (client, mut replies) = ClientTransport::connect(cluster.peers.clone(), 64 * 1024, [0; 32])
        .await
        .expect("client starts");
    assert!(client.send(0, Bytes::from(vec![1u8; 4096])));
    let first = match next(&mut rx0, "client closed after oversize").await {
        Inbound::ClientClosed(c) => c,
        other => panic!("unexpected {other:?}"),
    };
    assert_eq!(t0.stats().count(Source::Client, "oversize"), 1);
    wait_until("the client reconnects", || {
        let s = client.stats();
        s.established.get(&0) == Some(&2) && s.connected.contains(&0)
    })
    .await;
    assert!(client.send(0, Bytes::from_static(b"small request")));
    let conn = match next(&mut rx0, "client request").await {
        Inbound::Client { conn, frame, .. } => {
            assert_eq!(frame, Bytes::from_static(b"small request"));
            conn
        }
        other => panic!("unexpected {other:?}"),
    };
    assert_ne!(conn, first, "a fresh connection has a fresh id");
    assert!(t0.reply(conn, Bytes::from_static(b"small reply")));
    assert_eq!(
        within("reply", replies.recv()).await,
        Some((0, Bytes::from_static(b"small reply")))
    );
    client.shutdown().await;
    t0.shutdown().await;
    t1.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_send_queue_is_bounded_while_a_peer_is_down() {
    let mut cluster = Cluster::new(2);
    let mut cfg0 = cluster.config(0);
    cfg0.send_queue = 8;
    let (t0, _rx0) = cluster.start_with(0, cfg0).await;
    // Validator 1's socket is bound but nobody serves it: 1 is down.
    let mut accepted = 0;
    for k in 0..20u8 {
        if t0.send(1, Bytes::from(vec![k])) {
            accepted += 1;
        }
        assert!(t0.stats().queued[&1] <= 8, "the queue grew past its bound");
    }
    assert_eq!(accepted, 8);
    let s = t0.stats();
    assert_eq!(s.queued[&1], 8);
    assert_eq!(s.count(Source::Peer(1), "queue_full"), 12);
    t0.broadcast(Bytes::from_static(b"one more"));
    assert_eq!(t0.stats().count(Source::Peer(1), "queue_full"), 13);

    // When validator 1 comes up, the queued frames arrive, in order.
    let (t1, mut rx1) = cluster.start(1).await;
    for k in 0..8u8 {
        assert_eq!(
            next_peer_frame(&mut rx1, "queued frame").await,
            (0, Bytes::from(vec![k]))
        );
    }
    wait_until("the queue drains", || t0.stats().queued[&1] == 0).await;
    assert!(t0.send(1, Bytes::from_static(b"fresh")));
    assert_eq!(
        next_peer_frame(&mut rx1, "fresh frame").await,
        (0, Bytes::from_static(b"fresh"))
    );
    t0.shutdown().await;
    t1.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binding_a_port_in_use_is_a_bind_error() {
    let cluster = Cluster::new(2);
    let mut cfg = cluster.config(0);
    cfg.listen = "127.0.0.1:0".parse().expect("addr");
    let (t0, _rx) = Transport::start(cfg).await.expect("first bind");
    let taken = t0.local_addr();

    let mut cfg = cluster.config(0);
    cfg.listen = taken;
    match Transport::start(cfg).await {
        Err(TransportError::Bind { addr, source }) => {
            assert_eq!(addr, taken);
            assert_eq!(source.kind(), std::io::ErrorKind::AddrInUse);
        }
        Err(other) => panic!("expected a bind error, got {other}"),
        Ok(_) => panic!("bound a port that is in use"),
    }
    // Validator 1's address is held by the test's reserved socket.
    let held = cluster.addr(1);
    let err = Transport::start(cluster.config(1))
        .await
        .err()
        .expect("port held");
    assert!(
        matches!(err, TransportError::Bind { addr, .. } if addr == held),
        "{err}"
    );
    assert!(err.to_string().contains(&held.to_string()), "{err}");
    t0.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inconsistent_configurations_are_rejected() {
    let cluster = Cluster::new(3);
    let check = |cfg: TransportConfig| async move {
        match Transport::start(cfg).await {
            Err(TransportError::Config(_)) => {}
            Err(other) => panic!("expected a configuration error, got {other}"),
            Ok(_) => panic!("an inconsistent configuration was accepted"),
        }
    };
    let mut cfg = cluster.config(0);
    cfg.keypair = keypair(50);
    check(cfg).await; // our entry lists another key
    let mut cfg = cluster.config(0);
    cfg.peers[2].id = 1;
    check(cfg).await; // duplicate id
    let mut cfg = cluster.config(0);
    cfg.peers[2].key = cfg.peers[1].key;
    check(cfg).await; // duplicate key
    let mut cfg = cluster.config(0);
    cfg.max_frame = 0;
    check(cfg).await;
    let mut cfg = cluster.config(0);
    cfg.send_queue = 0;
    check(cfg).await;
}
