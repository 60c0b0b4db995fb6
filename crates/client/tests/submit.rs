//! `Client::submit` over real QUIC connections to four stand-in validators on loopback
//! that answer requests by a scripted behaviour (honest, lying or silent), so that the
//! wrapper's plumbing is tested end to end: transmissions reach the validators, replies
//! reach the core, the deadline error names the request, and a failed submission leaves
//! the client usable. The acceptance rule itself is tested in the protocol crate.

use bytes::Bytes;
use pbft_client::{Client, ClientError, Progress, Signer};
use pbft_cluster::{Cluster, ProtocolParams, Validator};
use pbft_crypto::Keypair;
use pbft_protocol::envelope::{self, Limits};
use pbft_protocol::{Message, Reply, SignedReply};
use pbft_transport::{Inbound, PeerInfo, Transport, TransportConfig};
use std::net::UdpSocket;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

const HONEST: u8 = 0;
const LIAR: u8 = 1;
const SILENT: u8 = 2;

/// Bound on every wait: only reached when a test fails.
const PATIENCE: Duration = Duration::from_secs(60);

fn key(seed: u8) -> Keypair {
    Keypair::from_seed(&[seed; 32]).expect("valid seed")
}

/// The honest result for request `id`: the same from every honest validator.
fn honest_result(id: u64) -> Vec<u8> {
    format!("ok {id}").into_bytes()
}

/// Four stand-in validators; `behaviour[i]` says how validator i answers.
struct Stand {
    cluster: Cluster,
    behaviour: Vec<Arc<AtomicU8>>,
}

async fn stand(behaviours: [u8; 4]) -> Stand {
    let mut validators = Vec::new();
    let mut sockets = Vec::new();
    for id in 0..4u32 {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind loopback");
        let addr = socket.local_addr().expect("local addr");
        validators.push(Validator {
            id,
            key: key(id as u8 + 1).public(),
            addr,
        });
        sockets.push(socket);
    }
    let params = ProtocolParams {
        client_window: 4,
        ..ProtocolParams::default()
    };
    let cluster = Cluster {
        path: "stand-in".into(),
        params,
        validators: validators.clone(),
        clients: Vec::new(),
        governance: None,
    };
    let mut behaviour = Vec::new();
    for (id, socket) in sockets.into_iter().enumerate() {
        let me = id as u32;
        let k = key(me as u8 + 1);
        let peer = PeerInfo {
            id: me,
            key: k.public(),
            addr: validators[id].addr,
        };
        let mut cfg = TransportConfig::new(me, k.clone(), peer.addr, vec![peer]);
        cfg.genesis = *cluster.genesis_digest().as_bytes();
        let (transport, rx) = Transport::start_with_socket(cfg, socket)
            .await
            .expect("transport starts");
        let b = Arc::new(AtomicU8::new(behaviours[id]));
        behaviour.push(b.clone());
        tokio::spawn(answer(me, k, transport, rx, b));
    }
    Stand { cluster, behaviour }
}

/// Answers every request (first sends and retransmissions alike) as `behaviour` says.
async fn answer(
    me: u32,
    key: Keypair,
    transport: Transport,
    mut rx: tokio::sync::mpsc::Receiver<Inbound>,
    behaviour: Arc<AtomicU8>,
) {
    let limits = Limits::default();
    while let Some(inbound) = rx.recv().await {
        let Inbound::Client { conn, frame, .. } = inbound else {
            continue;
        };
        let Ok(Message::Request(req)) = envelope::decode(&frame, &limits) else {
            continue;
        };
        let id = req.body.request_id;
        let result = match behaviour.load(Ordering::SeqCst) {
            HONEST => honest_result(id),
            LIAR => b"stolen".to_vec(),
            _ => continue,
        };
        let reply = Reply {
            view: 0,
            seq: 10 * id,
            client: req.body.client,
            request_id: id,
            request: req.body.digest(),
            replica: me,
            result,
        };
        for signed in SignedReply::sign_batch(vec![reply], &key) {
            let bytes = envelope::encode(&Message::Reply(signed));
            transport.reply(conn, Bytes::from(bytes));
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn requests_of_several_keys_are_accepted_with_the_honest_result_despite_a_liar() {
    runtime().block_on(async {
        let stand = stand([HONEST, LIAR, HONEST, HONEST]).await;
        let mut client = Client::connect(&stand.cluster).await.expect("connect");
        client.deadline = PATIENCE;
        let mut signers = [Signer::new(key(50), 1), Signer::new(key(51), 1)];
        let mut requests = Vec::new();
        for i in 0..10u8 {
            for s in &mut signers {
                requests.push(s.sign(vec![i]));
            }
        }
        let mut last = Progress::default();
        let accepted = client
            .submit(requests, 3, |p| last = *p)
            .await
            .expect("accepted");
        assert_eq!(accepted.len(), 20);
        for a in &accepted {
            assert_eq!(a.result, honest_result(a.request_id), "a lie was accepted");
            assert_eq!(a.seq, 10 * a.request_id);
        }
        let mut keys: Vec<_> = accepted.iter().map(|a| (a.client, a.request_id)).collect();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), 20, "each request accepted once");
        assert_eq!(last.accepted, 20);
        assert_eq!(last.in_flight, 0);
        client.close().await;
    });
}

#[test]
fn a_request_is_accepted_from_its_first_send_to_validators_that_never_replied() {
    // with no retransmission in sight, only the first send can reach f+1 = 2
    // validators: it must go beyond the primary to those that have not replied yet
    runtime().block_on(async {
        let stand = stand([HONEST, HONEST, HONEST, SILENT]).await;
        let mut client = Client::connect(&stand.cluster).await.expect("connect");
        client.retransmit = Duration::from_secs(3600);
        client.deadline = PATIENCE;
        let mut signer = Signer::new(key(50), 1);
        let mut last = Progress::default();
        let accepted = client
            .submit(vec![signer.sign(vec![1])], 1, |p| last = *p)
            .await
            .expect("accepted");
        assert_eq!(accepted.len(), 1);
        assert_eq!(accepted[0].result, honest_result(1));
        assert_eq!(last.retransmitted, 0);
        client.close().await;
    });
}

#[test]
fn the_deadline_error_names_the_request_and_the_client_stays_usable() {
    runtime().block_on(async {
        // one honest validator and a liar: never f+1 = 2 matching answers
        let stand = stand([HONEST, LIAR, SILENT, SILENT]).await;
        let mut client = Client::connect(&stand.cluster).await.expect("connect");
        client.retransmit = Duration::from_millis(100);
        client.deadline = Duration::from_secs(2);
        let k = key(50);
        let mut signer = Signer::new(k.clone(), 1);
        let first = signer.sign(vec![1]);
        let second = signer.sign(vec![2]);
        let res = client
            .submit(vec![first.clone(), second.clone()], 2, |_| {})
            .await;
        let Err(ClientError::Timeout {
            needed,
            waited,
            detail,
        }) = res
        else {
            panic!("expected a timeout, got {res:?}");
        };
        assert_eq!(needed, 2);
        assert!(waited >= Duration::from_secs(2));
        assert!(
            detail.contains(&format!("of client {}", k.public().short())),
            "{detail}"
        );
        assert!(
            detail.contains("request 1 ") || detail.contains("request 2 "),
            "{detail}"
        );

        // the validators recover; the abandoned requests may be submitted again
        for b in &stand.behaviour[2..] {
            b.store(HONEST, Ordering::SeqCst);
        }
        client.deadline = PATIENCE;
        let accepted = client
            .submit(vec![first, second], 2, |_| {})
            .await
            .expect("accepted after recovery");
        assert_eq!(accepted.len(), 2);
        for a in &accepted {
            assert_eq!(a.result, honest_result(a.request_id));
        }

        // one submission holding the same request twice is refused
        let third = signer.sign(vec![3]);
        let res = client.submit(vec![third.clone(), third], 1, |_| {}).await;
        assert!(matches!(res, Err(ClientError::Submit(_))), "{res:?}");
        client.close().await;
    });
}
