//! Strangers on the client port (issue 23, items 2 and 3): anyone can reach it, so no
//! one host may hold the client slots, a silent or half-sent connection is closed, and
//! a kicked sender's address is refused for a while. The stranger plays another host
//! from 127.0.0.2 (all of 127.0.0.0/8 is loopback on Linux); the honest client is on
//! 127.0.0.1.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use bytes::Bytes;
use common::{next, wait_until, within, Cluster};
use pbft_transport::raw::{RawConnection, RawEndpoint};
use pbft_transport::{reason, ClientTransport, Inbound, Origin, Source, Transport};

const STRANGER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
const LIMIT: Duration = Duration::from_secs(5);

/// Opens `n` bare connections from `from` to validator 0; all must be accepted.
async fn hog(cluster: &Cluster, from: &RawEndpoint, n: usize) -> Vec<RawConnection> {
    let mut held = Vec::new();
    for i in 0..n {
        let c = from
            .open(&cluster.peers[0], [0; 32], LIMIT)
            .await
            .unwrap_or_else(|e| panic!("connection {i} refused: {e}"));
        held.push(c);
    }
    held
}

/// An honest client's frame reaches validator 0 and its reply comes back.
async fn honest_client_is_served(
    cluster: &Cluster,
    t0: &Transport,
    rx0: &mut tokio::sync::mpsc::Receiver<Inbound>,
) {
    let (client, mut replies) = ClientTransport::connect(cluster.peers.clone(), 1 << 20, [0; 32])
        .await
        .expect("client starts");
    assert!(client.send(0, Bytes::from_static(b"request")));
    let conn = loop {
        match next(rx0, "the honest request").await {
            Inbound::Client { conn, frame, .. } if frame == Bytes::from_static(b"request") => {
                break conn
            }
            _ => continue,
        }
    };
    assert!(t0.reply(conn, Bytes::from_static(b"reply")));
    let (from, frame) = within("the reply", replies.recv())
        .await
        .expect("reply channel open");
    assert_eq!((from, frame), (0, Bytes::from_static(b"reply")));
    client.shutdown().await;
}

/// One host holding its share of connections cannot lock others out: its next
/// connection is refused, and an honest client from another address is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_holds_at_most_its_share_of_client_slots() {
    let mut cluster = Cluster::new(1);
    let mut cfg = cluster.config(0);
    cfg.max_clients = 8;
    cfg.max_clients_per_ip = 4;
    let (t0, mut rx0) = cluster.start_with(0, cfg).await;
    let stranger = RawEndpoint::bind(STRANGER).expect("bind 127.0.0.2");
    let held = hog(&cluster, &stranger, 4).await;
    let refused = stranger.open(&cluster.peers[0], [0; 32], LIMIT).await;
    assert!(refused.is_err(), "a fifth connection from one address");
    assert_eq!(
        t0.stats()
            .count(Source::Client, reason::TOO_MANY_FROM_ADDRESS),
        1
    );
    honest_client_is_served(&cluster, &t0, &mut rx0).await;
    drop(held);
    stranger.close();
    t0.shutdown().await;
}

/// With every slot taken by silent connections, a new client gets the slot of the
/// one idle the longest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_evicted_when_the_slots_run_out() {
    let mut cluster = Cluster::new(1);
    let mut cfg = cluster.config(0);
    cfg.max_clients = 4;
    cfg.max_clients_per_ip = 4;
    cfg.evict_idle_after = Duration::ZERO;
    let (t0, mut rx0) = cluster.start_with(0, cfg).await;
    let stranger = RawEndpoint::bind(STRANGER).expect("bind 127.0.0.2");
    let held = hog(&cluster, &stranger, 4).await;
    honest_client_is_served(&cluster, &t0, &mut rx0).await;
    assert_eq!(t0.stats().count(Source::Client, reason::EVICTED_IDLE), 1);
    wait_until("one held connection is evicted", || {
        held.iter().any(|c| c.close_reason().is_some())
    })
    .await;
    let closed: Vec<String> = held.iter().filter_map(|c| c.close_reason()).collect();
    assert_eq!(closed.len(), 1, "{closed:?}");
    assert!(closed[0].contains("evicted"), "{closed:?}");
    stranger.close();
    t0.shutdown().await;
}

/// A connection that never sends is closed after the idle timeout; one that announces
/// a frame and never finishes it is closed after the frame deadline; a frame over the
/// client limit closes the connection at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_half_sent_and_oversize_client_frames_close_the_connection() {
    let mut cluster = Cluster::new(1);
    let mut cfg = cluster.config(0);
    cfg.client_idle_timeout = Duration::from_millis(300);
    cfg.client_frame_timeout = Duration::from_millis(300);
    cfg.max_client_frame = 1024;
    let (t0, _rx0) = cluster.start_with(0, cfg).await;
    let stranger = RawEndpoint::bind(STRANGER).expect("bind 127.0.0.2");

    let silent = hog(&cluster, &stranger, 1).await.remove(0);
    let why = within("the silent connection is closed", silent.closed()).await;
    assert!(why.contains("idle"), "{why}");
    assert_eq!(t0.stats().count(Source::Client, reason::CLIENT_IDLE), 1);

    let mut slow = hog(&cluster, &stranger, 1).await.remove(0);
    slow.write(&1000u32.to_be_bytes()).await.expect("header");
    slow.write(&[0u8; 10]).await.expect("ten bytes");
    let why = within("the half-sent frame's connection is closed", slow.closed()).await;
    assert!(why.contains("in time"), "{why}");
    assert_eq!(t0.stats().count(Source::Client, reason::SLOW_FRAME), 1);

    let mut big = hog(&cluster, &stranger, 1).await.remove(0);
    big.write(&2048u32.to_be_bytes()).await.expect("header");
    let why = within("the oversize frame's connection is closed", big.closed()).await;
    assert!(why.contains("too large"), "{why}");
    assert_eq!(t0.stats().count(Source::Client, reason::OVERSIZE), 1);
    stranger.close();
    t0.shutdown().await;
}

/// A client kicked for misbehaving cannot just reconnect: its address is refused
/// until the ban ends, while other addresses are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kicked_clients_address_is_banned() {
    let mut cluster = Cluster::new(1);
    let mut cfg = cluster.config(0);
    cfg.strike_limit = 2;
    cfg.ban_duration = Duration::from_secs(3600);
    let (t0, mut rx0) = cluster.start_with(0, cfg).await;
    let stranger = RawEndpoint::bind(STRANGER).expect("bind 127.0.0.2");
    let mut bad = hog(&cluster, &stranger, 1).await.remove(0);
    bad.send_frame(Bytes::from_static(b"garbage"))
        .await
        .expect("send");
    let conn = loop {
        if let Inbound::Client { conn, .. } = next(&mut rx0, "the garbage").await {
            break conn;
        }
    };
    t0.report(Origin::Client(conn), "undecodable");
    t0.report(Origin::Client(conn), "undecodable");
    within("the kicked connection closes", bad.closed()).await;
    // it comes back from a fresh port of the same address
    let back = RawEndpoint::bind(STRANGER).expect("bind 127.0.0.2");
    let again = back.open(&cluster.peers[0], [0; 32], LIMIT).await;
    assert!(again.is_err(), "the kicked address reconnected");
    wait_until("the refusal is counted", || {
        t0.stats().count(Source::Client, reason::BANNED) >= 1
    })
    .await;
    honest_client_is_served(&cluster, &t0, &mut rx0).await;
    stranger.close();
    back.close();
    t0.shutdown().await;
}

/// Connections that break the framing rules are closed at once, so strikes against
/// the connection would never add up: they count against the address, which is
/// banned at the strike limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_whose_connections_keep_breaking_frames_is_banned() {
    let mut cluster = Cluster::new(1);
    let mut cfg = cluster.config(0);
    cfg.strike_limit = 3;
    cfg.ban_duration = Duration::from_secs(3600);
    cfg.max_client_frame = 1024;
    let (t0, mut rx0) = cluster.start_with(0, cfg).await;
    let stranger = RawEndpoint::bind(STRANGER).expect("bind 127.0.0.2");
    for i in 0..3 {
        let mut c = hog(&cluster, &stranger, 1).await.remove(0);
        c.write(&4096u32.to_be_bytes()).await.expect("header");
        let why = within("the oversize frame's connection is closed", c.closed()).await;
        assert!(why.contains("too large"), "connection {i}: {why}");
    }
    wait_until("the address is banned", || {
        t0.stats().count(Source::Client, reason::BAN_IMPOSED) == 1
    })
    .await;
    let again = stranger.open(&cluster.peers[0], [0; 32], LIMIT).await;
    assert!(again.is_err(), "the banned address reconnected");
    honest_client_is_served(&cluster, &t0, &mut rx0).await;
    stranger.close();
    t0.shutdown().await;
}

/// Strikes count against the address: spreading reports over several connections of
/// one address (each would stay under a per-connection limit) still bans it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strikes_spread_over_connections_add_up_for_their_address() {
    let mut cluster = Cluster::new(1);
    let mut cfg = cluster.config(0);
    cfg.strike_limit = 4;
    cfg.ban_duration = Duration::from_secs(3600);
    let (t0, mut rx0) = cluster.start_with(0, cfg).await;
    let stranger = RawEndpoint::bind(STRANGER).expect("bind 127.0.0.2");
    let mut held = hog(&cluster, &stranger, 4).await;
    let mut conns = Vec::new();
    for c in &mut held {
        c.send_frame(Bytes::from_static(b"garbage"))
            .await
            .expect("send");
        loop {
            if let Inbound::Client { conn, .. } = next(&mut rx0, "the garbage").await {
                if !conns.contains(&conn) {
                    conns.push(conn);
                    break;
                }
            }
        }
    }
    // one report per connection: each is under the limit of 4, the address reaches it
    for conn in &conns {
        t0.report(Origin::Client(*conn), "undecodable");
    }
    // the fourth report reached the limit: that connection is closed, the address is
    // refused new ones, and its other connections (honest clients may share the
    // address) are left alone
    within("the striking connection is closed", held[3].closed()).await;
    assert_eq!(t0.stats().count(Source::Client, reason::BAN_IMPOSED), 1);
    assert!(held[..3].iter().all(|c| c.close_reason().is_none()));
    let again = stranger.open(&cluster.peers[0], [0; 32], LIMIT).await;
    assert!(again.is_err(), "the banned address opened a new connection");
    honest_client_is_served(&cluster, &t0, &mut rx0).await;
    stranger.close();
    t0.shutdown().await;
}

/// Connections that finish their handshake and never say the hello are pending: one
/// address holds at most `max_clients_per_ip` of them, a newer one (once its address
/// is proven by a QUIC Retry) taking the place of the oldest; past half of
/// `max_pending`, unvalidated addresses get a Retry first (which a real client answers
/// without noticing). An honest client is served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_never_say_hello_hold_only_their_share() {
    let mut cluster = Cluster::new(1);
    let mut cfg = cluster.config(0);
    cfg.max_clients_per_ip = 2;
    cfg.max_pending = 5;
    cfg.connect_timeout = Duration::from_secs(30);
    let (t0, mut rx0) = cluster.start_with(0, cfg).await;
    let stranger = RawEndpoint::bind(STRANGER).expect("bind 127.0.0.2");
    let mut silent = Vec::new();
    for i in 0..2 {
        let c = stranger
            .handshake_only(&cluster.peers[0], LIMIT)
            .await
            .unwrap_or_else(|e| panic!("silent connection {i}: {e}"));
        silent.push(c);
    }
    // a third from the address must first prove it (a Retry), then takes the place of
    // the address's oldest
    let third = stranger
        .handshake_only(&cluster.peers[0], LIMIT)
        .await
        .expect("the third completes its handshake");
    assert_eq!(t0.stats().count(Source::Unknown, reason::RETRY_SENT), 1);
    assert_eq!(
        t0.stats().count(Source::Unknown, reason::EVICTED_PENDING),
        1
    );
    wait_until("the oldest is closed", || {
        silent[0].close_reason().is_some()
    })
    .await;
    assert!(silent[1].close_reason().is_none());
    // a second address's silent connection takes pending past half of max_pending
    let other = RawEndpoint::bind(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3))).expect("bind");
    let retried = other
        .handshake_only(&cluster.peers[0], LIMIT)
        .await
        .expect("a second address completes its handshake");
    assert_eq!(t0.stats().count(Source::Unknown, reason::RETRY_SENT), 1);
    // from now on an address must prove itself first: the honest client is sent a
    // Retry, answers it without noticing, and is served
    honest_client_is_served(&cluster, &t0, &mut rx0).await;
    assert_eq!(t0.stats().count(Source::Unknown, reason::RETRY_SENT), 2);
    assert!(silent[1].close_reason().is_none() && third.close_reason().is_none());
    drop(retried);
    stranger.close();
    other.close();
    t0.shutdown().await;
}

/// A stranger that sends as fast as it can while the node is busy gets no more than a
/// small flow-control window ahead: its connection is not given QUIC's default window
/// of over a megabyte (1,024 such connections would be a gigabyte held in buffers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_cannot_make_a_validator_buffer_more_than_a_small_window() {
    let mut cluster = Cluster::new(1);
    let mut cfg = cluster.config(0);
    // the node takes nothing: the first frames fill the (one-frame) channels
    cfg.client_inbound_queue = 1;
    cfg.inbound_queue = 1;
    cfg.max_client_frame = 64 << 10;
    let (t0, _rx0) = cluster.start_with(0, cfg).await;
    let stranger = RawEndpoint::bind(STRANGER).expect("bind 127.0.0.2");
    let mut c = stranger
        .open(&cluster.peers[0], [0; 32], LIMIT)
        .await
        .expect("admitted");
    // 16 frames of 60 KiB: 960 KiB, well within QUIC's default window
    let mut bytes = Vec::new();
    for _ in 0..16 {
        bytes.extend_from_slice(&(60u32 << 10).to_be_bytes());
        bytes.extend_from_slice(&[0u8; 60 << 10]);
    }
    let written = tokio::time::timeout(Duration::from_secs(3), c.write(&bytes)).await;
    assert!(
        written.is_err(),
        "960 KiB were taken while the node read nothing: {written:?}"
    );
    stranger.close();
    t0.shutdown().await;
}

/// Client frames are bounded in bytes, not only in number, until the node drops them:
/// with the budget taken by frames the node still holds, the next frame waits (and QUIC
/// flow control holds its sender back) until one of them is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_frames_held_by_the_node_are_bounded_in_bytes() {
    let mut cluster = Cluster::new(1);
    let mut cfg = cluster.config(0);
    cfg.max_client_frame = 64 << 10;
    cfg.client_inbound_bytes = 128 << 10;
    let (t0, mut rx0) = cluster.start_with(0, cfg).await;
    let stranger = RawEndpoint::bind(STRANGER).expect("bind 127.0.0.2");
    let mut c = stranger
        .open(&cluster.peers[0], [0; 32], LIMIT)
        .await
        .expect("admitted");
    for _ in 0..3 {
        c.send_frame(Bytes::from(vec![0u8; 60 << 10]))
            .await
            .expect("sent");
    }
    let first = next(&mut rx0, "the first frame").await;
    let second = next(&mut rx0, "the second frame").await;
    for f in [&first, &second] {
        match f {
            Inbound::Client { charge, .. } => assert_eq!(charge.bytes(), 60 << 10),
            other => panic!("unexpected {other:?}"),
        }
    }
    let third = tokio::time::timeout(Duration::from_secs(1), rx0.recv()).await;
    assert!(
        third.is_err(),
        "a third 60 KiB frame while 120 KiB of 128 are held: {third:?}"
    );
    drop(first);
    assert!(matches!(
        next(&mut rx0, "the third frame").await,
        Inbound::Client { .. }
    ));
    drop(second);
    stranger.close();
    t0.shutdown().await;
}

/// A handshake from `end` to validator 0 that then says nothing (up to five tries, the
/// last failure in the panic).
async fn silent_handshake(
    cluster: &Cluster,
    end: &RawEndpoint,
    what: &str,
) -> pbft_transport::raw::SilentConnection {
    let mut last = String::new();
    for _ in 0..5 {
        match end.handshake_only(&cluster.peers[0], LIMIT).await {
            Ok(c) => return c,
            Err(e) => last = e,
        }
    }
    panic!("silent connection {what}: {last}")
}

/// `n` silent handshakes from `end` to validator 0.
async fn hold_silent(
    cluster: &Cluster,
    end: &RawEndpoint,
    n: usize,
) -> Vec<pbft_transport::raw::SilentConnection> {
    let mut silent = Vec::new();
    for i in 0..n {
        silent.push(silent_handshake(cluster, end, &i.to_string()).await);
    }
    silent
}

/// Validator 0 with a pending share of two per address and a connect timeout no test
/// reaches.
fn tight_pending(cluster: &Cluster) -> pbft_transport::TransportConfig {
    let mut cfg = cluster.config(0);
    cfg.max_clients_per_ip = 2;
    cfg.connect_timeout = Duration::from_secs(120);
    cfg
}

/// Waits until validator 0 has admitted validator 1's connection; the failure says how
/// many connections were refused as pending.
async fn validator_1_is_admitted(t0: &Transport) {
    let deadline = tokio::time::Instant::now() + common::PATIENCE;
    while !t0.stats().inbound.contains(&1) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "validator 1 was never admitted ({} connections refused as too_many_pending)",
            t0.stats().count(Source::Unknown, reason::TOO_MANY_PENDING)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Strangers holding every pending place (two addresses, each with its
/// `max_clients_per_ip` share of silent handshakes) do not keep a validator that
/// redials out: a newcomer whose address is proven takes the place of the oldest
/// pending connection of the address holding the most.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_holding_every_pending_place_do_not_keep_a_validator_out() {
    let mut cluster = Cluster::new(2);
    let mut cfg = tight_pending(&cluster);
    cfg.max_pending = 4;
    let (t0, _rx0) = cluster.start_with(0, cfg).await;
    let mut ends = Vec::new();
    let mut silent = Vec::new();
    for host in [2, 3] {
        let end = RawEndpoint::bind(IpAddr::V4(Ipv4Addr::new(127, 0, 0, host))).expect("bind");
        silent.extend(hold_silent(&cluster, &end, 2).await);
        ends.push(end);
    }
    let (t1, _rx1) = cluster.start(1).await;
    validator_1_is_admitted(&t0).await;
    drop(silent);
    for end in ends {
        end.close();
    }
    t1.shutdown().await;
    t0.shutdown().await;
}

/// Anyone on a validator's address (or spoofing it) holding silent handshakes does
/// not keep the validator out: validators' addresses have no pending share.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_neighbour_holding_its_address_pending_share_does_not_keep_a_validator_out() {
    let mut cluster = Cluster::new(2);
    let cfg = tight_pending(&cluster);
    let (t0, _rx0) = cluster.start_with(0, cfg).await;
    let neighbour = RawEndpoint::bind(IpAddr::V4(Ipv4Addr::LOCALHOST)).expect("bind 127.0.0.1");
    let silent = hold_silent(&cluster, &neighbour, 2).await;
    let (t1, _rx1) = cluster.start(1).await;
    validator_1_is_admitted(&t0).await;
    drop(silent);
    neighbour.close();
    t1.shutdown().await;
    t0.shutdown().await;
}

/// A neighbour on a client's address holding that address's pending share does not
/// keep a bound client out: its connection, once its address is proven, takes the
/// place of the address's oldest pending one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_neighbour_holding_its_address_pending_share_does_not_keep_a_bound_client_out() {
    let mut cluster = Cluster::new(1);
    let mut cfg = tight_pending(&cluster);
    let alice = common::keypair(101);
    cfg.accounts = pbft_transport::ClientAccounts::new([alice.public()]);
    let (t0, mut rx0) = cluster.start_with(0, cfg).await;
    let neighbour = RawEndpoint::bind(IpAddr::V4(Ipv4Addr::LOCALHOST)).expect("bind 127.0.0.1");
    let silent = hold_silent(&cluster, &neighbour, 2).await;
    let (client, _replies) =
        ClientTransport::connect_bound(cluster.peers.clone(), 1 << 20, [0; 32], vec![alice])
            .await
            .expect("client starts");
    assert!(client.send(0, Bytes::from_static(b"request")));
    let arrived = tokio::time::timeout(common::PATIENCE, async {
        loop {
            match rx0.recv().await {
                Some(Inbound::Client { frame, .. }) if frame == Bytes::from_static(b"request") => {
                    break
                }
                Some(_) => continue,
                None => panic!("validator 0's channel closed"),
            }
        }
    })
    .await;
    assert!(
        arrived.is_ok(),
        "alice's request never arrived ({} connections refused as too_many_pending)",
        t0.stats().count(Source::Unknown, reason::TOO_MANY_PENDING)
    );
    client.shutdown().await;
    drop(silent);
    neighbour.close();
    t0.shutdown().await;
}

/// A ban applies at the pending stage too, where the address is known before any
/// handshake work: a banned address must prove itself with a Retry before each
/// handshake (so a spoofed one costs nothing), and holds one pending connection at a
/// time (a bound client behind it can still connect; an anonymous one is refused at
/// admission).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_banned_address_costs_no_more_handshakes() {
    let mut cluster = Cluster::new(1);
    let mut cfg = cluster.config(0);
    cfg.strike_limit = 3;
    cfg.ban_duration = Duration::from_secs(3600);
    cfg.max_client_frame = 1024;
    let (t0, _rx0) = cluster.start_with(0, cfg).await;
    let stranger = RawEndpoint::bind(STRANGER).expect("bind 127.0.0.2");
    for i in 0..3 {
        let mut c = hog(&cluster, &stranger, 1).await.remove(0);
        c.write(&4096u32.to_be_bytes()).await.expect("header");
        let why = within("the oversize frame's connection is closed", c.closed()).await;
        assert!(why.contains("too large"), "connection {i}: {why}");
    }
    wait_until("the address is banned", || {
        t0.stats().count(Source::Client, reason::BAN_IMPOSED) == 1
    })
    .await;
    let retries = t0.stats().count(Source::Unknown, reason::RETRY_SENT);
    let first = stranger
        .handshake_only(&cluster.peers[0], LIMIT)
        .await
        .expect("after a Retry");
    let second = stranger
        .handshake_only(&cluster.peers[0], LIMIT)
        .await
        .expect("after a Retry");
    assert_eq!(
        t0.stats().count(Source::Unknown, reason::RETRY_SENT),
        retries + 2,
        "each handshake of the banned address was asked for a Retry first"
    );
    wait_until("one pending connection at a time", || {
        first.close_reason().is_some()
    })
    .await;
    assert!(second.close_reason().is_none());
    stranger.close();
    t0.shutdown().await;
}
