//! Client connections bound to accounts (issue 23, items 2 and 4): a client proves in
//! its hello that it holds its account keys, and from then on strangers, who hold no
//! account key, can neither keep it out of the client slots nor pass for it. The
//! strangers play another host from 127.0.0.2; honest clients are on 127.0.0.1.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use bytes::Bytes;
use common::{keypair, next, wait_until, within, Cluster};
use pbft_transport::raw::{RawConnection, RawEndpoint};
use pbft_transport::{reason, ClientAccounts, ClientTransport, Inbound, Source, TransportConfig};

const STRANGER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
const LIMIT: Duration = Duration::from_secs(5);

/// Validator 0 with room for `max_clients` and the client accounts of seeds 101, 102.
fn config(cluster: &Cluster, max_clients: usize) -> TransportConfig {
    let mut cfg = cluster.config(0);
    cfg.max_clients = max_clients;
    cfg.max_clients_per_ip = max_clients;
    // idle eviction never applies here: only the binding can make room
    cfg.evict_idle_after = Duration::from_secs(3600);
    cfg.accounts = ClientAccounts::new([keypair(101).public(), keypair(102).public()]);
    cfg
}

/// A client bound to `key` that has sent `frame` to validator 0.
async fn bound_client(
    cluster: &Cluster,
    key: &pbft_crypto::Keypair,
    frame: &'static [u8],
) -> (ClientTransport, tokio::sync::mpsc::Receiver<(u32, Bytes)>) {
    let (client, replies) =
        ClientTransport::connect_bound(cluster.peers.clone(), 1 << 20, [0; 32], vec![key.clone()])
            .await
            .expect("client starts");
    assert!(client.send(0, Bytes::from_static(frame)));
    (client, replies)
}

/// Opens `n` bare connections from the stranger's address, each sending a frame now
/// and then (so none of them is idle).
async fn busy_strangers(cluster: &Cluster, from: &RawEndpoint, n: usize) -> Vec<RawConnection> {
    let mut held = Vec::new();
    for i in 0..n {
        let mut c = from
            .open(&cluster.peers[0], [0; 32], LIMIT)
            .await
            .unwrap_or_else(|e| panic!("stranger connection {i} refused: {e}"));
        c.send_frame(Bytes::from_static(b"chatter"))
            .await
            .expect("stranger sends");
        held.push(c);
    }
    held
}

/// Every slot is held by strangers that keep talking: an anonymous newcomer is
/// refused, but a client bound to its account takes a stranger's slot, and its frames
/// arrive marked with the account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn talking_strangers_cannot_keep_an_account_holder_out() {
    let mut cluster = Cluster::new(1);
    let cfg = config(&cluster, 4);
    let (t0, mut rx0) = cluster.start_with(0, cfg).await;
    let stranger = RawEndpoint::bind(STRANGER).expect("bind 127.0.0.2");
    let held = busy_strangers(&cluster, &stranger, 4).await;
    for _ in 0..4 {
        assert!(matches!(
            next(&mut rx0, "stranger chatter").await,
            Inbound::Client { .. }
        ));
    }
    let anonymous = RawEndpoint::bind(IpAddr::V4(Ipv4Addr::LOCALHOST)).expect("bind");
    assert!(
        anonymous
            .open(&cluster.peers[0], [0; 32], LIMIT)
            .await
            .is_err(),
        "an anonymous newcomer may not evict a talking stranger"
    );
    assert_eq!(
        t0.stats().count(Source::Client, reason::TOO_MANY_CLIENTS),
        1
    );

    let alice = keypair(101);
    let (client, mut replies) = ClientTransport::connect_bound(
        cluster.peers.clone(),
        1 << 20,
        [0; 32],
        vec![alice.clone()],
    )
    .await
    .expect("client starts");
    assert!(client.send(0, Bytes::from_static(b"request")));
    let (conn, bound) = loop {
        match next(&mut rx0, "alice's request").await {
            Inbound::Client {
                conn, bound, frame, ..
            } if frame == Bytes::from_static(b"request") => break (conn, bound),
            _ => continue,
        }
    };
    assert!(
        bound.holds(&alice.public()),
        "the frame carries the binding"
    );
    assert!(!bound.holds(&keypair(102).public()));
    assert_eq!(
        t0.stats().count(Source::Client, reason::EVICTED_ANONYMOUS),
        1
    );
    assert!(t0.reply(conn, Bytes::from_static(b"reply")));
    let (from, frame) = within("the reply", replies.recv())
        .await
        .expect("reply channel open");
    assert_eq!((from, frame), (0, Bytes::from_static(b"reply")));
    wait_until("one stranger connection is evicted", || {
        held.iter().filter(|c| c.close_reason().is_some()).count() == 1
    })
    .await;
    client.shutdown().await;
    stranger.close();
    anonymous.close();
    t0.shutdown().await;
}

/// A binding for a key that is no client account is refused and counted, and the
/// connection is not admitted; a stranger's anonymous connection carries no binding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bindings_are_only_for_client_accounts() {
    let mut cluster = Cluster::new(1);
    let cfg = config(&cluster, 16);
    let (t0, mut rx0) = cluster.start_with(0, cfg).await;
    let eve = keypair(103);
    let (client, _replies) =
        ClientTransport::connect_bound(cluster.peers.clone(), 1 << 20, [0; 32], vec![eve])
            .await
            .expect("client starts");
    assert!(client.send(0, Bytes::from_static(b"request")));
    wait_until("the binding is refused", || {
        t0.stats().count(Source::Client, reason::BAD_BIND) >= 1
    })
    .await;
    assert_eq!(t0.stats().clients, 0);
    assert!(client.connected().is_empty());
    client.shutdown().await;

    let stranger = RawEndpoint::bind(STRANGER).expect("bind 127.0.0.2");
    let mut c = stranger
        .open(&cluster.peers[0], [0; 32], LIMIT)
        .await
        .expect("anonymous connections are admitted");
    c.send_frame(Bytes::from_static(b"hello"))
        .await
        .expect("send");
    match next(&mut rx0, "the stranger's frame").await {
        Inbound::Client { bound, .. } => assert!(bound.is_anonymous()),
        other => panic!("unexpected {other:?}"),
    }
    stranger.close();
    t0.shutdown().await;
}

/// One account holds at most `max_clients_per_account` connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_holds_at_most_its_share() {
    let mut cluster = Cluster::new(1);
    let mut cfg = config(&cluster, 16);
    cfg.max_clients_per_account = 2;
    let (t0, _rx0) = cluster.start_with(0, cfg).await;
    let alice = keypair(101);
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(bound_client(&cluster, &alice, b"request").await);
    }
    wait_until("the third is refused", || {
        t0.stats()
            .count(Source::Client, reason::TOO_MANY_FOR_ACCOUNT)
            >= 1
    })
    .await;
    assert_eq!(t0.stats().clients, 2);
    for (client, _) in clients {
        client.shutdown().await;
    }
    t0.shutdown().await;
}

/// Strikes against a bound connection count against its account, not its address: at
/// the strike limit the account's connection is closed and the account refused for the
/// ban, while anonymous neighbours on the same address (behind the same NAT) are not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bound_connections_strikes_ban_its_account_not_its_address() {
    let mut cluster = Cluster::new(1);
    let mut cfg = config(&cluster, 16);
    cfg.strike_limit = 3;
    cfg.ban_duration = Duration::from_secs(3600);
    let (t0, mut rx0) = cluster.start_with(0, cfg).await;
    let alice = keypair(101);
    let (client, _replies) = ClientTransport::connect_bound(
        cluster.peers.clone(),
        1 << 20,
        [0; 32],
        vec![alice.clone()],
    )
    .await
    .expect("client starts");
    assert!(client.send(0, Bytes::from_static(b"garbage")));
    let conn = loop {
        match next(&mut rx0, "alice's frame").await {
            Inbound::Client { conn, .. } => break conn,
            _ => continue,
        }
    };
    for _ in 0..3 {
        t0.report(pbft_transport::Origin::Client(conn), "undecodable");
    }
    wait_until("alice's connection is closed", || !t0.is_open(conn)).await;
    assert_eq!(t0.stats().count(Source::Client, reason::BAN_IMPOSED), 1);
    // an anonymous neighbour on the same address is still admitted
    let neighbour = RawEndpoint::bind(IpAddr::V4(Ipv4Addr::LOCALHOST)).expect("bind");
    neighbour
        .open(&cluster.peers[0], [0; 32], LIMIT)
        .await
        .expect("the address is not banned");
    // alice's account is: her redials are refused
    wait_until("alice's redial is refused as banned", || {
        t0.stats().count(Source::Client, reason::BANNED) >= 1
    })
    .await;
    client.shutdown().await;
    neighbour.close();
    t0.shutdown().await;
}

/// An insider holding many bound connections (here one account holding every slot)
/// cannot keep another account holder out: with every slot bound, the account holding
/// the most gives up its idlest connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_busiest_account_makes_room_when_every_slot_is_bound() {
    let mut cluster = Cluster::new(1);
    let mut cfg = config(&cluster, 3);
    cfg.max_clients_per_account = 3;
    let (t0, mut rx0) = cluster.start_with(0, cfg).await;
    let (alice, bob) = (keypair(101), keypair(102));
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(bound_client(&cluster, &alice, b"alice").await);
    }
    wait_until("alice holds every slot", || t0.stats().clients == 3).await;
    let (client, _replies) =
        ClientTransport::connect_bound(cluster.peers.clone(), 1 << 20, [0; 32], vec![bob.clone()])
            .await
            .expect("client starts");
    assert!(client.send(0, Bytes::from_static(b"bob")));
    loop {
        match next(&mut rx0, "bob's frame").await {
            Inbound::Client { bound, frame, .. } if frame == Bytes::from_static(b"bob") => {
                assert!(bound.holds(&bob.public()));
                break;
            }
            _ => continue,
        }
    }
    assert_eq!(
        t0.stats()
            .count(Source::Client, reason::EVICTED_BUSIEST_ACCOUNT),
        1
    );
    client.shutdown().await;
    for (c, _) in held {
        c.shutdown().await;
    }
    t0.shutdown().await;
}
