//! Pinned keys: an impostor validator is refused, clients reach validators
//! and get replies, and a client refuses a server with the wrong key.

mod common;

use bytes::Bytes;
use common::{keypair, next, next_peer_frame, wait_for_mesh, wait_until, within, Cluster};
use pbft_transport::{reason, ClientTransport, Inbound, PeerInfo, Source, Transport};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_impostor_with_an_unlisted_key_is_refused_and_counted() {
    let mut cluster = Cluster::new(2);
    let (t0, mut rx0) = cluster.start(0).await;

    // The impostor claims to be validator 1 and sits on validator 1's
    // address, but holds a key the cluster does not list.
    let mut impostor_cfg = cluster.config(1);
    impostor_cfg.keypair = keypair(99);
    impostor_cfg.peers[1].key = impostor_cfg.keypair.public();
    let socket = cluster.sockets[1].take().expect("validator 1's socket");
    let (impostor, mut impostor_rx) = Transport::start_with_socket(impostor_cfg, socket)
        .await
        .expect("impostor starts");
    assert!(impostor.send(0, Bytes::from_static(b"forged frame")));

    // Its connections to validator 0 are refused and counted; validator 0
    // also refuses to treat the server at validator 1's address as 1.
    wait_until("validator 0 refused the impostor twice", || {
        t0.stats().count(Source::Unknown, "unpinned_key") >= 2
    })
    .await;
    wait_until("validator 0 rejected the impostor's server key", || {
        t0.stats().count(Source::Peer(1), "unpinned_key") >= 1
    })
    .await;
    let s0 = t0.stats();
    assert!(s0.connected.is_empty() && s0.inbound.is_empty(), "{s0:?}");
    assert_eq!(s0.frames_received, 0);
    assert!(
        rx0.try_recv().is_err(),
        "a frame from the impostor reached the node"
    );
    let si = impostor.stats();
    assert!(si.connected.is_empty(), "{si:?}");
    assert_eq!(
        si.queued.get(&0),
        Some(&1),
        "the forged frame never left the impostor"
    );
    assert!(impostor_rx.try_recv().is_err());

    // The real validator 1 takes its address back and is accepted.
    let addr1 = impostor.local_addr();
    impostor.shutdown().await;
    let (t1, mut rx1) = Transport::start(cluster.config(1))
        .await
        .expect("validator 1 starts");
    assert_eq!(t1.local_addr(), addr1);
    wait_for_mesh(&[(0, &t0), (1, &t1)]).await;
    assert!(t1.send(0, Bytes::from_static(b"genuine")));
    assert!(t0.send(1, Bytes::from_static(b"welcome")));
    assert_eq!(
        next_peer_frame(&mut rx0, "genuine frame").await,
        (1, Bytes::from_static(b"genuine"))
    );
    assert_eq!(
        next_peer_frame(&mut rx1, "reply").await,
        (0, Bytes::from_static(b"welcome"))
    );
    t0.shutdown().await;
    t1.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_send_requests_and_receive_replies() {
    let mut cluster = Cluster::new(4);
    let mut nodes = Vec::new();
    for id in 0..4 {
        nodes.push(cluster.start(id).await);
    }
    let (client, mut replies) = ClientTransport::connect(cluster.peers.clone(), 1 << 20, [0; 32])
        .await
        .expect("client starts");
    assert!(client.connected().is_empty(), "connections are made lazily");
    client.broadcast(Bytes::from_static(b"request 1"));
    assert!(client.send(2, Bytes::from_static(b"request 2")));

    let mut conns = Vec::new();
    for (id, (t, rx)) in nodes.iter_mut().enumerate() {
        let conn = match next(rx, "client request").await {
            Inbound::Client { conn, frame, .. } => {
                assert_eq!(frame, Bytes::from_static(b"request 1"));
                conn
            }
            other => panic!("expected a client frame, got {other:?}"),
        };
        if id == 2 {
            assert_eq!(
                next(rx, "second request").await,
                Inbound::Client {
                    conn,
                    bound: Default::default(),
                    frame: Bytes::from_static(b"request 2"),
                    charge: Default::default(),
                }
            );
        }
        assert!(t.reply(conn, Bytes::from(format!("reply from {id}"))));
        conns.push(conn);
    }
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(
            within("reply", replies.recv())
                .await
                .expect("reply channel open"),
        );
    }
    got.sort();
    let expected: Vec<(u32, Bytes)> = (0..4)
        .map(|i| (i, Bytes::from(format!("reply from {i}"))))
        .collect();
    assert_eq!(got, expected);
    assert_eq!(client.connected(), vec![0, 1, 2, 3]);
    assert_eq!(nodes[0].0.stats().clients, 1);

    // Closing the client tells every validator.
    client.shutdown().await;
    for ((_, rx), conn) in nodes.iter_mut().zip(conns) {
        assert_eq!(next(rx, "client closed").await, Inbound::ClientClosed(conn));
    }
    for (t, _) in nodes {
        assert!(!t.reply(pbft_transport::ClientId(0), Bytes::from_static(b"late")));
        t.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_refuses_a_server_whose_key_is_not_pinned() {
    let mut cluster = Cluster::new(1);
    let (t0, mut rx0) = cluster.start(0).await;
    // The client believes validator 0 holds another key.
    let wrong = vec![PeerInfo {
        id: 0,
        key: keypair(77).public(),
        addr: cluster.addr(0),
    }];
    let (client, mut replies) = ClientTransport::connect(wrong, 1 << 20, [0; 32])
        .await
        .expect("client starts");
    assert!(client.send(0, Bytes::from_static(b"hello?")));
    wait_until("the client refused the server twice", || {
        client.stats().count(0, "unpinned_key") >= 2
    })
    .await;
    assert!(client.connected().is_empty());
    assert_eq!(client.stats().frames_sent, 0);
    assert!(replies.try_recv().is_err());
    // The handshake never completed, so the validator saw no client.
    assert!(rx0.try_recv().is_err());
    assert_eq!(t0.stats().clients, 0);
    client.shutdown().await;
    t0.shutdown().await;
}

/// Validators whose cluster files differ (another genesis digest) never exchange a
/// frame: the dialer is refused in the hello with the server's digest, and both ends
/// count it. A client with another cluster file is refused the same way, and one with
/// the same file is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ends_with_another_genesis_are_refused_in_the_hello() {
    let mut cluster = Cluster::new(2);
    let mut c0 = cluster.config(0);
    c0.genesis = [7; 32];
    let mut c1 = cluster.config(1);
    c1.genesis = [8; 32];
    let (t0, mut rx0) = cluster.start_with(0, c0).await;
    let (t1, mut rx1) = cluster.start_with(1, c1).await;
    assert!(t0.send(1, Bytes::from_static(b"from 0")));
    assert!(t1.send(0, Bytes::from_static(b"from 1")));
    // each side dials, is refused and counts it; each server counts the refusal too
    wait_until("both dialers are refused and both servers refuse", || {
        let (s0, s1) = (t0.stats(), t1.stats());
        s0.count(Source::Peer(1), reason::GENESIS_MISMATCH) >= 2
            && s1.count(Source::Peer(0), reason::GENESIS_MISMATCH) >= 2
    })
    .await;
    assert!(t0.stats().connected.is_empty() && t1.stats().connected.is_empty());
    assert!(rx0.try_recv().is_err(), "no frame crossed");
    assert!(rx1.try_recv().is_err(), "no frame crossed");

    let (stranger, _r) = ClientTransport::connect(cluster.peers.clone(), 1 << 20, [9; 32])
        .await
        .expect("client starts");
    assert!(stranger.send(0, Bytes::from_static(b"request")));
    wait_until("the client with another genesis is refused", || {
        stranger.stats().count(0, reason::GENESIS_MISMATCH) >= 1
            && t0.stats().count(Source::Client, reason::GENESIS_MISMATCH) >= 1
    })
    .await;
    assert!(stranger.connected().is_empty());

    let (member, _r) = ClientTransport::connect(cluster.peers.clone(), 1 << 20, [7; 32])
        .await
        .expect("client starts");
    assert!(member.send(0, Bytes::from_static(b"request")));
    match next(&mut rx0, "the member's request").await {
        Inbound::Client { frame, .. } => assert_eq!(frame, Bytes::from_static(b"request")),
        other => panic!("expected the member's request, got {other:?}"),
    }
    stranger.shutdown().await;
    member.shutdown().await;
    t0.shutdown().await;
    t1.shutdown().await;
}
