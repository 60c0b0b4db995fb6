//! End-to-end tests: real `pbft node` processes over QUIC on loopback with RocksDB,
//! driven through the command line exactly as an operator would.

use serde_json::Value;
use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

const PBFT: &str = env!("CARGO_BIN_EXE_pbft");

/// Each test runs a cluster of four processes; on a 2-core machine they run one at a
/// time, so that CPU starvation does not turn into view changes nobody asked for.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// A free TCP port on loopback (for a metrics endpoint).
fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free TCP port")
}

/// Four consecutive free UDP ports on loopback.
fn free_base_port(salt: u16) -> u16 {
    // a different range per test (salt) and per run (pid), so that concurrent runs
    // rarely probe the same ports
    let start = 20_000 + salt * 4_000 + (std::process::id() % 500) as u16 * 7;
    for base in (start..65_000).step_by(7) {
        let socks: Vec<_> = (0..4)
            .map(|i| UdpSocket::bind(("127.0.0.1", base + i)))
            .collect();
        if socks.iter().all(|s| s.is_ok()) {
            return base;
        }
    }
    panic!("no four consecutive free UDP ports");
}

fn pbft(args: &[&str]) -> Output {
    Command::new(PBFT)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run pbft")
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

struct Cluster {
    dir: tempfile::TempDir,
    nodes: Vec<Option<Child>>,
}

impl Cluster {
    fn keygen(clients: usize, salt: u16) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_base_port(salt).to_string();
        let out = pbft(&[
            "keygen",
            "--validators",
            "4",
            "--clients",
            &clients.to_string(),
            "--out",
            dir.path().to_str().unwrap_or_default(),
            "--base-port",
            &port,
            "--checkpoint-interval",
            "8",
            "--batch-size",
            "32",
        ]);
        assert!(out.status.success(), "keygen: {}", text(&out));
        Cluster {
            dir,
            nodes: (0..4).map(|_| None).collect(),
        }
    }

    fn file(&self) -> PathBuf {
        self.dir.path().join("cluster.toml")
    }

    fn data(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("data-{i}"))
    }

    fn key(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Starts all four validators with their own keys.
    fn start_all(&mut self) {
        for i in 0..4 {
            self.start(i);
        }
    }

    fn start(&mut self, i: usize) {
        self.start_with(
            i,
            &self.file(),
            &self.key(&format!("validator-{i}.key")),
            &[],
        );
    }

    /// Starts validator `i` from `cluster` with `key` and extra flags; its log goes to
    /// node-<i>.log in the cluster directory.
    fn start_with(&mut self, i: usize, cluster: &PathBuf, key: &PathBuf, extra: &[&str]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(i))
            .expect("log file");
        let child = Command::new(PBFT)
            .arg("node")
            .arg("--cluster")
            .arg(cluster)
            .arg("--key")
            .arg(key)
            .arg("--data")
            .arg(self.data(i))
            .args(extra)
            // the scenario runner's permission for the hidden fault-injection flags
            .env("PBFT_ALLOW_TRAITOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn node");
        self.nodes[i] = Some(child);
    }

    fn log_path(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("node-{i}.log"))
    }

    /// The view validator `i` started in, each time it started (from its log's
    /// "validator started" lines).
    fn started_views(&self, i: usize) -> Vec<u64> {
        let text = std::fs::read_to_string(self.log_path(i)).expect("node log");
        // without the terminal colour codes
        let mut plain = String::with_capacity(text.len());
        let mut chars = text.chars();
        while let Some(ch) = chars.next() {
            if ch == '\u{1b}' {
                for c in chars.by_ref() {
                    if c == 'm' {
                        break;
                    }
                }
            } else {
                plain.push(ch);
            }
        }
        plain
            .lines()
            .filter(|l| l.contains("validator started"))
            .filter_map(|l| {
                let rest = &l[l.find(" view=")? + " view=".len()..];
                rest.split_whitespace().next()?.parse().ok()
            })
            .collect()
    }

    fn signal(&mut self, i: usize, sig: i32) -> Option<std::process::ExitStatus> {
        let mut c = self.nodes[i].take()?;
        // SAFETY: kill(2) on our own child.
        unsafe {
            libc::kill(c.id() as i32, sig);
        }
        c.wait().ok()
    }

    fn client(&self, args: &[&str]) -> Output {
        let file = self.file();
        let mut all = vec!["client", "--cluster", file.to_str().unwrap_or_default()];
        all.extend_from_slice(args);
        pbft(&all)
    }

    fn load_args(&self, requests: usize) -> Vec<String> {
        [
            "client",
            "--cluster",
            self.file().to_str().unwrap_or_default(),
            "load",
            "--clients",
            "2",
            "--requests",
            &requests.to_string(),
            "--concurrency",
            "16",
            "--json",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// Runs `pbft client load` (2 clients sending each other 1 unit per request) and
    /// returns how many requests committed.
    fn load(&self, requests: usize) -> u64 {
        let out = Command::new(PBFT)
            .args(self.load_args(requests))
            .stdin(Stdio::null())
            .output()
            .expect("run pbft client load");
        self.committed(&out)
    }

    /// Starts a load in the background; [`Cluster::committed`] reads its result.
    fn spawn_load(&self, requests: usize) -> Child {
        Command::new(PBFT)
            .args(self.load_args(requests))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn pbft client load")
    }

    fn committed(&self, out: &Output) -> u64 {
        assert!(
            out.status.success(),
            "load: {}\nnode logs:\n{}",
            text(out),
            self.logs()
        );
        let v: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("load output is not JSON ({e}): {}", text(out)));
        v["committed"].as_u64().unwrap_or(0)
    }

    /// `pbft status --json`: one object per validator.
    fn status(&self) -> Vec<Value> {
        let out = pbft(&[
            "status",
            "--cluster",
            self.file().to_str().unwrap_or_default(),
            "--json",
        ]);
        match serde_json::from_slice::<Value>(&out.stdout) {
            Ok(Value::Array(rows)) => rows,
            _ => panic!("status output is not a JSON array: {}", text(&out)),
        }
    }

    /// Polls the status until `done` holds, or fails after `within` naming `what`.
    fn wait_for(
        &self,
        within: Duration,
        what: &str,
        done: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let until = Instant::now() + within;
        loop {
            let rows = self.status();
            if done(&rows) {
                return rows;
            }
            assert!(
                Instant::now() < until,
                "{what}: not reached within {within:?}; last status {rows:?}\nnode logs:\n{}",
                self.logs()
            );
        }
    }

    /// A client's public key (hex) from the cluster file.
    fn client_hex(&self, name: &str) -> String {
        let toml = std::fs::read_to_string(self.file()).expect("read cluster file");
        toml.split(&format!("name = \"{name}\""))
            .nth(1)
            .and_then(|r| r.split("key = \"").nth(1))
            .and_then(|r| r.split('"').next())
            .unwrap_or_else(|| panic!("no client {name} in the cluster file"))
            .to_string()
    }

    /// The balance of a client in validator `i`'s ledger, read offline.
    fn ledger_balance(&self, i: usize, client: &str) -> u64 {
        let data = self.data(i);
        let out = pbft(&[
            "ledger",
            "show",
            "--data",
            data.to_str().unwrap_or_default(),
            "--account",
            &self.client_hex(client),
        ]);
        assert!(out.status.success(), "ledger show {i}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout)
            .split("balance ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no balance in {}", text(&out)))
    }

    /// The last lines of every node's log, for failure messages.
    fn logs(&self) -> String {
        (0..4)
            .map(|i| {
                let t = std::fs::read_to_string(self.log_path(i)).unwrap_or_default();
                let lines: Vec<&str> = t.lines().collect();
                let tail = lines[lines.len().saturating_sub(15)..].join("\n");
                format!("--- validator {i}\n{tail}\n")
            })
            .collect()
    }

    /// Stops every validator with SIGTERM (each must exit cleanly), then checks
    /// offline that each ledger verifies and holds exactly `balances`. The loads'
    /// transfers cancel out, so a request executed twice would show in a balance.
    fn stop_and_verify(&mut self, balances: &[(&str, u64)]) {
        for i in 0..4 {
            let st = self.signal(i, libc::SIGTERM).expect("node was running");
            assert!(st.success(), "validator {i} did not stop cleanly: {st:?}");
        }
        for i in 0..4 {
            let data = self.data(i);
            let v = pbft(&[
                "ledger",
                "verify",
                "--data",
                data.to_str().unwrap_or_default(),
            ]);
            assert!(v.status.success(), "ledger {i}: {}", text(&v));
            for (client, balance) in balances {
                assert_eq!(
                    self.ledger_balance(i, client),
                    *balance,
                    "validator {i}, {client}"
                );
            }
        }
    }

    /// Polls the status until all four validators report the same last executed
    /// sequence and head, or fails after `within`.
    fn wait_converged(&self, within: Duration) -> Vec<Value> {
        self.wait_for(within, "all four validators at one head", |rows| {
            rows.len() == 4
                && rows.iter().all(|r| r["reachable"] == Value::Bool(true))
                && rows.iter().all(|r| {
                    (&r["last_executed"], &r["head"])
                        == (&rows[0]["last_executed"], &rows[0]["head"])
                })
        })
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in self.nodes.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn cluster_commits_survives_sigkill_and_ledgers_verify() {
    let _serial = serial();
    let mut c = Cluster::keygen(2, 0);
    c.start_all();
    assert_eq!(c.load(100), 100);

    // a transfer that succeeds, one the ledger refuses, and the balances
    let key0 = c.key("client-0.key");
    let key0 = key0.to_str().unwrap_or_default();
    let ok = c.client(&[
        "--key", key0, "transfer", "--to", "client-1", "--amount", "5",
    ]);
    assert!(ok.status.success(), "transfer: {}", text(&ok));
    let refused = c.client(&[
        "--key",
        key0,
        "transfer",
        "--to",
        "client-1",
        "--amount",
        "999999999999",
    ]);
    assert_eq!(
        refused.status.code(),
        Some(1),
        "overdraft: {}",
        text(&refused)
    );
    assert!(
        text(&refused).contains("InsufficientFunds"),
        "{}",
        text(&refused)
    );
    // genesis 1e9 each; the load moved 1 unit per request each way (50 each), then
    // client-0 sent 5 to client-1
    let b0 = c.client(&["balance", "client-0"]);
    assert_eq!(
        String::from_utf8_lossy(&b0.stdout).trim(),
        "999999995",
        "{}",
        text(&b0)
    );

    // SIGKILL a backup in the middle of a load: the load still commits in full
    let load = c.spawn_load(300);
    let before = c.status()[3]["last_executed"].as_u64().unwrap_or(0);
    c.wait_for(
        Duration::from_secs(60),
        "backup 3 executing the load",
        |rows| {
            rows.get(3)
                .and_then(|r| r["last_executed"].as_u64())
                .is_some_and(|e| e >= before + 2)
        },
    );
    c.signal(3, libc::SIGKILL);
    let out = load.wait_with_output().expect("load finished");
    assert_eq!(c.committed(&out), 300);
    // restarted on the same data directory, it catches up while more commits
    c.start(3);
    assert_eq!(c.load(80), 80);
    c.wait_converged(Duration::from_secs(60));

    // clean shutdown on SIGTERM, then every ledger verifies offline with exactly
    // genesis -/+ 5 (the restarted validator included)
    c.stop_and_verify(&[("client-0", 999_999_995), ("client-1", 1_000_000_005)]);
    for i in 0..4 {
        let data = c.data(i);
        let s = pbft(&[
            "ledger",
            "show",
            "--data",
            data.to_str().unwrap_or_default(),
            "--height",
            "1",
        ]);
        if i < 3 {
            // these executed every batch themselves, so they hold the whole chain
            assert!(s.status.success(), "ledger show {i}: {}", text(&s));
            assert!(
                String::from_utf8_lossy(&s.stdout).contains("block 1: hash"),
                "{}",
                text(&s)
            );
        } else if !s.status.success() {
            // the restarted one may have caught up by state transfer, which brings the
            // state of a checkpoint but not the blocks below it; it says so
            assert!(text(&s).contains("state transfer"), "{}", text(&s));
        }
    }
}

#[test]
fn primary_crash_causes_a_view_change_and_the_old_primary_catches_up() {
    let _serial = serial();
    let mut c = Cluster::keygen(2, 2);
    c.start_all();
    assert_eq!(c.load(60), 60);
    assert_eq!(
        c.status()[0]["view"],
        0,
        "validator 0 is the primary of view 0"
    );

    // SIGKILL the primary: the others change view and keep committing
    c.signal(0, libc::SIGKILL);
    assert_eq!(c.load(60), 60);
    let rows = c.status();
    for r in &rows[1..] {
        assert!(
            r["view"].as_u64().unwrap_or(0) >= 1,
            "no view change after the primary died: {rows:?}"
        );
    }

    // the old primary restarts on its data directory and reaches the same head
    c.start(0);
    assert_eq!(c.load(60), 60);
    let rows = c.wait_converged(Duration::from_secs(60));
    assert!(rows[0]["view"].as_u64().unwrap_or(0) >= 1, "{rows:?}");
    assert!(
        rows[0]["last_executed"].as_u64().unwrap_or(0) > 0,
        "{rows:?}"
    );

    // backup 2 went through the view change, and its stable checkpoints since have
    // dropped the log records the view change made obsolete: killed and restarted, it
    // comes back in the view it was in (read from its log at start, before it could
    // learn the view from anyone)
    let view = rows[2]["view"].as_u64().unwrap_or(0);
    assert!(view >= 1, "{rows:?}");
    c.signal(2, libc::SIGKILL);
    c.start(2);
    c.wait_converged(Duration::from_secs(60));
    assert_eq!(
        c.started_views(2),
        vec![0, view],
        "validator 2's starts, by the view its log gave it"
    );
    assert_eq!(c.load(20), 20);
}

#[test]
fn wiped_backup_catches_up_by_state_transfer() {
    let _serial = serial();
    let mut c = Cluster::keygen(2, 3);
    c.start_all();
    assert_eq!(c.load(100), 100);
    c.signal(3, libc::SIGKILL);
    assert_eq!(c.load(100), 100);
    // its disk is lost: it comes back empty and must fetch a checkpoint's state
    std::fs::remove_dir_all(c.data(3)).expect("wipe data-3");
    std::fs::remove_file(c.log_path(3)).expect("remove old log");
    let (file, key) = (c.file(), c.key("validator-3.key"));
    c.start_with(3, &file, &key, &["--log-format", "json"]);
    assert_eq!(c.load(60), 60);
    c.wait_converged(Duration::from_secs(60));

    // the JSON log says it installed a snapshot, in a span naming the validator and view
    let log = std::fs::read_to_string(c.log_path(3)).expect("log of validator 3");
    let line = log
        .lines()
        .find(|l| l.contains("installed a snapshot by state transfer"))
        .unwrap_or_else(|| panic!("no state transfer in the log:\n{log}"));
    let v: Value = serde_json::from_str(line).expect("a JSON log line");
    assert!(v["fields"]["seq"].as_u64().unwrap_or(0) > 0, "{line}");
    assert_eq!(v["span"]["id"], 3, "{line}");
    assert!(v["span"]["view"].is_u64(), "{line}");
}

/// A forged request, a request from a key that is no account, and a client's key
/// re-signing another operation under a request id that executed: none executes, and
/// the reused id is refused as such while the request that used it keeps its receipt.
#[test]
fn forged_unknown_and_reused_requests_are_never_executed() {
    use pbft_client::{Client, Signer};
    use pbft_executor::{FailReason, Operation, Receipt};

    let _serial = serial();
    let mut c = Cluster::keygen(2, 4);
    c.start_all();
    let cluster = pbft_cluster::Cluster::load(&c.file()).expect("cluster file");
    let key = pbft_crypto::read_key_file(&c.key("client-0.key")).expect("client key");
    let me = key.public();
    let to = cluster.resolve_account("client-1").expect("client-1");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut client = Client::connect(&cluster).await.expect("connect");
        let before = client.account(me).await.expect("account");
        assert_eq!(before.balance, Some(1_000_000_000));

        // a valid signature over other content: the signature does not match the body
        let mut signer = Signer::new(key.clone(), before.next_request_id);
        let mut forged = signer.sign(Operation::transfer(to, 1).encode());
        forged.body.op = Operation::transfer(to, 700).encode();
        client.deadline = Duration::from_secs(4);
        let res = client.submit(vec![forged], 1, |_| {}).await;
        assert!(res.is_err(), "a forged request was accepted: {res:?}");

        // a key that is no account of the cluster: dropped on arrival, so no
        // validator answers at all (it is not even executed as a failed request)
        let stranger = pbft_crypto::Keypair::from_seed(&[77; 32]).expect("seed");
        let mut signer = Signer::new(stranger, 1);
        let unknown = signer.sign(Operation::transfer(to, 1).encode());
        let res = client.submit(vec![unknown], 1, |_| {}).await;
        assert!(res.is_err(), "an unknown client got replies: {res:?}");

        // nothing moved, and the request id was not used up
        let after = client.account(me).await.expect("account");
        assert_eq!(after.balance, Some(1_000_000_000));
        assert_eq!(after.next_request_id, before.next_request_id);

        // the honest request with that same id executes, and without any re-send:
        // f+1 validators reply to a request sent once (each validator learns the
        // client's connection from the request itself)
        client.retransmit = Duration::from_secs(3600);
        client.deadline = Duration::from_secs(60);
        let mut signer = Signer::new(key.clone(), before.next_request_id);
        let honest = signer.sign(Operation::transfer(to, 7).encode());
        let done = client
            .submit(vec![honest.clone()], 1, |_| {})
            .await
            .expect("honest");
        assert_eq!(done.len(), 1);
        let after = client.account(me).await.expect("account");
        assert_eq!(after.balance, Some(1_000_000_000 - 7));

        // the client's key re-signs another operation under the id that executed: f+1
        // validators refuse it as a reused id, and nothing moves (issue 23, item 1)
        client.retransmit = Duration::from_millis(500);
        let mut again = Signer::new(key, before.next_request_id);
        let reused = again.sign(Operation::transfer(to, 500).encode());
        let done = client
            .submit(vec![reused], 1, |_| {})
            .await
            .expect("a reply");
        assert_eq!(
            Receipt::decode(&done[0].result),
            Some(Receipt::Failed {
                reason: FailReason::ReusedId
            }),
            "{done:?}"
        );
        // the request that did execute is still answered with its own receipt
        let replay = client
            .submit(vec![honest], 1, |_| {})
            .await
            .expect("a reply");
        assert_eq!(
            Receipt::decode(&replay[0].result),
            Some(Receipt::Applied {
                balance: 1_000_000_000 - 7
            })
        );
        let after = client.account(me).await.expect("account");
        assert_eq!(after.balance, Some(1_000_000_000 - 7));
        client.close().await;
    });
}

/// A stranger on another address (127.0.0.2) takes every client connection it may
/// have to validator 0 and idles; one more is refused; an honest client is served
/// normally meanwhile, by validator 0 too.
#[test]
fn an_honest_client_is_served_while_a_stranger_holds_its_connections() {
    use pbft_client::{Client, Signer};
    use pbft_executor::Operation;
    use pbft_transport::raw::RawEndpoint;
    use pbft_transport::PeerInfo;

    let _serial = serial();
    let mut c = Cluster::keygen(2, 9);
    let per_ip = 8;
    for i in 0..4 {
        let (file, key) = (c.file(), c.key(&format!("validator-{i}.key")));
        c.start_with(i, &file, &key, &["--max-clients-per-ip", "8"]);
    }
    let cluster = pbft_cluster::Cluster::load(&c.file()).expect("cluster file");
    let genesis = *cluster.genesis_digest().as_bytes();
    let v0 = PeerInfo {
        id: 0,
        key: cluster.validators[0].key,
        addr: cluster.validators[0].addr,
    };
    let key = pbft_crypto::read_key_file(&c.key("client-0.key")).expect("client key");
    let to = cluster.resolve_account("client-1").expect("client-1");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let stranger = RawEndpoint::bind("127.0.0.2".parse().expect("ip")).expect("bind");
        let mut held = Vec::new();
        for i in 0..per_ip {
            let conn = stranger
                .open(&v0, genesis, Duration::from_secs(10))
                .await
                .unwrap_or_else(|e| panic!("stranger connection {i} refused: {e}"));
            held.push(conn);
        }
        let more = stranger.open(&v0, genesis, Duration::from_secs(10)).await;
        assert!(more.is_err(), "a connection beyond the per-address limit");

        let mut client = Client::connect(&cluster).await.expect("connect");
        let before = client.account(key.public()).await.expect("account");
        client.deadline = Duration::from_secs(60);
        let mut signer = Signer::new(key.clone(), before.next_request_id);
        let reqs = (0..5)
            .map(|_| signer.sign(Operation::transfer(to, 3).encode()))
            .collect();
        let done = client.submit(reqs, 5, |_| {}).await.expect("served");
        assert_eq!(done.len(), 5);
        let after = client.account(key.public()).await.expect("account");
        assert_eq!(after.balance, Some(1_000_000_000 - 15));
        // validator 0 itself answered the honest client
        let rows = client.status(Duration::from_secs(5)).await.expect("status");
        assert!(
            rows.iter().any(|(id, s)| *id == 0 && s.is_some()),
            "{rows:?}"
        );
        assert!(
            held.iter().all(|h| h.close_reason().is_none()),
            "the stranger's connections were left alone (the honest client needed no eviction)"
        );
        client.close().await;
        stranger.close();
    });
}

/// Strangers on another address (127.0.0.2) take every client slot of every
/// validator and keep each connection talking (a status query every 200 ms, within the
/// query budget), so idle eviction never frees one. An anonymous client is refused
/// everywhere; a client bound to its account takes a stranger's slot and is served.
#[test]
fn a_bound_client_is_served_while_strangers_keep_every_slot_busy() {
    use pbft_client::{Client, Signer};
    use pbft_executor::Operation;
    use pbft_protocol::{envelope, Message, Query};
    use pbft_transport::raw::RawEndpoint;
    use pbft_transport::PeerInfo;

    let _serial = serial();
    let mut c = Cluster::keygen(2, 10);
    let slots = 6;
    for i in 0..4 {
        let (file, key) = (c.file(), c.key(&format!("validator-{i}.key")));
        c.start_with(
            i,
            &file,
            &key,
            &["--max-clients", "6", "--max-clients-per-ip", "6"],
        );
    }
    let cluster = pbft_cluster::Cluster::load(&c.file()).expect("cluster file");
    let genesis = *cluster.genesis_digest().as_bytes();
    let key = pbft_crypto::read_key_file(&c.key("client-0.key")).expect("client key");
    let to = cluster.resolve_account("client-1").expect("client-1");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let stranger = RawEndpoint::bind("127.0.0.2".parse().expect("ip")).expect("bind");
        let mut held = Vec::new();
        for v in &cluster.validators {
            let info = PeerInfo {
                id: v.id,
                key: v.key,
                addr: v.addr,
            };
            for i in 0..slots {
                let conn = stranger
                    .open(&info, genesis, Duration::from_secs(10))
                    .await
                    .unwrap_or_else(|e| panic!("validator {}: stranger slot {i}: {e}", v.id));
                held.push(conn);
            }
        }
        let query = bytes::Bytes::from(envelope::encode(&Message::Query {
            id: 1,
            query: Query::Status,
        }));
        let closed = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut chatter = tokio::task::JoinSet::new();
        for mut conn in held {
            let (query, closed) = (query.clone(), closed.clone());
            chatter.spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(200));
                loop {
                    tick.tick().await;
                    if conn.send_frame(query.clone()).await.is_err()
                        || conn.close_reason().is_some()
                    {
                        closed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        return;
                    }
                }
            });
        }

        // anonymous: every slot is taken by connections that talk
        let mut anonymous = Client::connect(&cluster).await.expect("connect");
        anonymous.deadline = Duration::from_secs(3);
        assert!(
            anonymous.account(key.public()).await.is_err(),
            "an anonymous client found a free slot"
        );
        anonymous.close().await;

        let mut client = Client::connect_bound(&cluster, vec![key.clone()])
            .await
            .expect("connect");
        client.deadline = Duration::from_secs(60);
        let before = client.account(key.public()).await.expect("account");
        let mut signer = Signer::new(key.clone(), before.next_request_id);
        let reqs = (0..5)
            .map(|_| signer.sign(Operation::transfer(to, 3).encode()))
            .collect();
        let done = client.submit(reqs, 5, |_| {}).await.expect("served");
        assert_eq!(done.len(), 5);
        let after = client.account(key.public()).await.expect("account");
        assert_eq!(after.balance, Some(1_000_000_000 - 15));
        // the stranger notices at its next query that a connection of its made room
        let noticed = tokio::time::timeout(Duration::from_secs(10), async {
            while closed.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        assert!(noticed.is_ok(), "no stranger connection made room");
        client.close().await;
        chatter.abort_all();
        stranger.close();
    });
}

/// The validators close a client connection that stays quiet for a second; the
/// client redials. Its next request, sent once (no retransmission) to the primary
/// alone, is answered by f+1 validators: a bound connection is its account's route
/// from admission, not from its next request.
#[test]
fn a_quiet_bound_client_gets_its_replies_after_its_connections_were_closed() {
    use pbft_client::{Client, Signer};
    use pbft_executor::Operation;

    let _serial = serial();
    let mut c = Cluster::keygen(2, 1);
    for i in 0..4 {
        let (file, key) = (c.file(), c.key(&format!("validator-{i}.key")));
        c.start_with(i, &file, &key, &["--client-idle-timeout-ms", "1000"]);
    }
    let cluster = pbft_cluster::Cluster::load(&c.file()).expect("cluster file");
    let key = pbft_crypto::read_key_file(&c.key("client-0.key")).expect("client key");
    let to = cluster.resolve_account("client-1").expect("client-1");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut client = Client::connect_bound(&cluster, vec![key.clone()])
            .await
            .expect("connect");
        client.deadline = Duration::from_secs(60);
        let before = client.account(key.public()).await.expect("account");
        let mut signer = Signer::new(key.clone(), before.next_request_id);
        // one at a time, so that every validator has replied to the key at least once
        // (the client then sends new requests to the primary alone)
        for _ in 0..4 {
            let first = signer.sign(Operation::transfer(to, 1).encode());
            client.submit(vec![first], 1, |_| {}).await.expect("first");
        }
        // quiet for longer than the validators' idle timeout: every connection is
        // closed and redialed
        tokio::time::sleep(Duration::from_millis(2500)).await;
        client.retransmit = Duration::from_secs(3600);
        client.deadline = Duration::from_secs(20);
        let second = signer.sign(Operation::transfer(to, 2).encode());
        let done = client
            .submit(vec![second], 1, |_| {})
            .await
            .expect("answered by f+1 without a retransmission");
        assert_eq!(done.len(), 1);
        client.close().await;
    });
}

#[test]
fn foreign_key_cannot_join_and_is_counted() {
    let _serial = serial();
    let mut c = Cluster::keygen(2, 5);
    let ports: Vec<u16> = (0..3).map(|_| free_tcp_port()).collect();
    for (i, port) in ports.iter().enumerate() {
        let (file, key) = (c.file(), c.key(&format!("validator-{i}.key")));
        // a new cluster started without one of its validators: the operator says so
        let metrics = format!("127.0.0.1:{port}");
        c.start_with(i, &file, &key, &["--metrics", &metrics, "--genesis"]);
    }
    // an intruder at validator 3's address, holding a key of another cluster and a
    // cluster file edited to list that key
    let other = tempfile::tempdir().expect("tempdir");
    let out = pbft(&[
        "keygen",
        "--validators",
        "4",
        "--out",
        other.path().to_str().unwrap_or_default(),
    ]);
    assert!(out.status.success(), "keygen: {}", text(&out));
    let foreign = pbft_crypto::read_key_file(&other.path().join("validator-3.key"))
        .expect("foreign key")
        .public();
    let ours = pbft_cluster::Cluster::load(&c.file()).expect("cluster file");
    let real = ours.validators[3].key;
    let forged = c.dir.path().join("intruder.toml");
    let toml = std::fs::read_to_string(c.file()).expect("read cluster file");
    std::fs::write(&forged, toml.replace(&real.to_hex(), &foreign.to_hex())).expect("write");
    c.start_with(3, &forged, &other.path().join("validator-3.key"), &[]);

    // the three honest validators are a quorum and commit without it
    assert_eq!(c.load(160), 160);
    let rows = c.status();
    assert_eq!(rows[3]["reachable"], false, "{rows:?}");

    // every honest validator refused the intruder's key, and says so in its metrics
    for (i, port) in ports.iter().enumerate() {
        let body = http_get(*port, "/metrics");
        let refused: u64 = body
            .lines()
            .filter(|l| {
                l.starts_with("pbft_transport_events_total")
                    && l.contains("reason=\"unpinned_key\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum();
        assert!(refused > 0, "validator {i} counted no refused key:\n{body}");
        assert!(
            body.lines()
                .any(|l| l.starts_with("pbft_connected_peers{validator=") && l.ends_with(" 2")),
            "validator {i} should see exactly the two other honest validators:\n{body}"
        );
        // the ledger's memory is reported (an open ledger always has memtables)
        let memtables: Option<u64> = body
            .lines()
            .find(|l| l.starts_with("pbft_ledger_memtable_bytes{"))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok());
        assert!(
            memtables.is_some_and(|m| m > 0),
            "validator {i}: no ledger memtables\n{body}"
        );
        // 160 requests, at most 16 in flight, are at least 10 batches: every honest
        // validator commits them all (all three are needed for every quorum), so each
        // executes past the checkpoint at 8 and times it (it may still be executing
        // when the load returns: read again until it is there, within a deadline)
        let timed = |body: &str| -> u64 {
            body.lines()
                .find(|l| {
                    l.starts_with("pbft_phase_seconds_count{") && l.contains("phase=\"checkpoint\"")
                })
                .and_then(|l| l.rsplit(' ').next()?.parse().ok())
                .unwrap_or(0)
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut body = body;
        while timed(&body) == 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(100));
            body = http_get(*port, "/metrics");
        }
        assert!(
            timed(&body) >= 1,
            "validator {i}: no checkpoint timed\n{body}"
        );
    }
}

/// A plain HTTP/1.1 GET on loopback, returning the body.
fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect metrics");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read");
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    resp.split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string()
}

fn expect_bad_input(out: &Output, needle: &str) {
    assert_eq!(out.status.code(), Some(2), "{}", text(out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(needle),
        "stderr lacks {needle:?}: {}",
        text(out)
    );
}

#[test]
fn bad_input_exits_2_with_a_clear_message() {
    let _serial = serial();
    let c = Cluster::keygen(1, 1);
    let file = c.file();
    let file = file.to_str().unwrap_or_default();
    let dir = c.dir.path();
    let key = |name: &str| dir.join(name).to_str().unwrap_or_default().to_string();

    expect_bad_input(
        &pbft(&[
            "keygen",
            "--validators",
            "3",
            "--out",
            dir.join("x").to_str().unwrap_or_default(),
        ]),
        "3f+1",
    );
    expect_bad_input(
        &pbft(&["bench", "cluster", "--validators", "3"]),
        "--validators 3",
    );
    expect_bad_input(
        &pbft(&["bench", "cluster", "--inflight", "4,0"]),
        "--inflight",
    );
    expect_bad_input(
        &pbft(&[
            "keygen",
            "--validators",
            "4",
            "--out",
            dir.to_str().unwrap_or_default(),
        ]),
        "already exists",
    );
    let load = |extra: &[&str]| {
        let mut args = vec!["client", "--cluster", file, "load", "--clients", "1"];
        args.extend_from_slice(extra);
        pbft(&args)
    };
    expect_bad_input(
        &load(&["--requests", "100000000"]),
        "--requests 100000000: at most",
    );
    expect_bad_input(
        &load(&["--requests", "10", "--concurrency", "0"]),
        "--concurrency",
    );
    expect_bad_input(
        &pbft(&["node", "--cluster", file, "--key", &key("missing.key")]),
        "missing.key",
    );
    expect_bad_input(
        &pbft(&["node", "--cluster", file, "--key", &key("client-0.key")]),
        "not a validator",
    );
    expect_bad_input(
        &pbft(&[
            "node",
            "--cluster",
            file,
            "--key",
            &key("validator-0.key"),
            "--traitor",
            "equivocate",
        ]),
        "refused",
    );
    // allowed fault injection, but a flag that only shapes a traitor without one
    let shaped = Command::new(PBFT)
        .args([
            "node",
            "--cluster",
            file,
            "--key",
            &key("validator-0.key"),
            "--accomplices",
            "1",
        ])
        .env("PBFT_ALLOW_TRAITOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run pbft");
    expect_bad_input(&shaped, "--accomplices needs --traitor");

    // a key file readable by others
    let loose = dir.join("loose.key");
    std::fs::copy(dir.join("validator-1.key"), &loose).expect("copy");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    expect_bad_input(
        &pbft(&[
            "node",
            "--cluster",
            file,
            "--key",
            loose.to_str().unwrap_or_default(),
        ]),
        "permissions",
    );

    // a cluster file with a bad field: the message names the file, the line and the field
    let text_ok = std::fs::read_to_string(c.file()).expect("read");
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        text_ok.replacen(
            "checkpoint_interval = 8",
            "checkpoint_interval = \"eight\"",
            1,
        ),
    )
    .expect("write");
    expect_bad_input(
        &pbft(&["status", "--cluster", bad.to_str().unwrap_or_default()]),
        "line 5",
    );
    std::fs::write(
        &bad,
        text_ok.replacen("batch_size = 32", "batch_size = 0", 1),
    )
    .expect("write");
    expect_bad_input(
        &pbft(&["status", "--cluster", bad.to_str().unwrap_or_default()]),
        "protocol.batch_size",
    );

    // the validator's port is taken
    let addr = text_ok
        .split("addr = \"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or_default()
        .to_string();
    let _hold = UdpSocket::bind(&addr).expect("hold the port");
    expect_bad_input(
        &pbft(&[
            "node",
            "--cluster",
            file,
            "--key",
            &key("validator-0.key"),
            "--data",
            dir.join("d0").to_str().unwrap_or_default(),
        ]),
        &addr,
    );
}

#[test]
fn demo_survives_its_traitor_and_the_honest_heads_agree() {
    let _serial = serial();
    let out = pbft(&["demo", "--requests", "300", "--concurrency", "16"]);
    assert!(out.status.success(), "demo: {}", text(&out));
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains("traitor"), "{}", text(&out));
    assert!(
        s.contains("honest ledger heads agree: yes   all requests committed: yes"),
        "{}",
        text(&out)
    );
}

/// The direct children of process `pid`, from /proc.
fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let Ok(p) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
        // the fields after the parenthesised command: state, then parent pid
        let ppid = stat
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push(p);
        }
    }
    out
}

/// True while `pid` exists and is not a zombie.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit(')').next().map(|r| r.trim_start().to_string()))
        .is_some_and(|rest| !rest.starts_with('Z') && !rest.starts_with('X'))
}

#[test]
fn ctrl_c_stops_every_process_the_demo_started() {
    use std::io::{BufRead, BufReader};
    let _serial = serial();
    let mut demo = Command::new(PBFT)
        .args(["demo", "--requests", "100000", "--concurrency", "16"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn demo");
    let stdout = demo.stdout.take().expect("demo stdout");
    let mut lines = BufReader::new(stdout).lines();
    // the demo prints its ledger directory, then this line once every validator is up
    let mut ledgers = None;
    let mut up = false;
    for line in lines.by_ref() {
        let line = line.expect("demo output");
        if let Some(rest) = line.strip_prefix("RocksDB ledgers under ") {
            ledgers = Some(PathBuf::from(rest.trim_end_matches('.')));
        }
        if line.contains("signed transfers") {
            up = true;
            break;
        }
    }
    assert!(up, "the demo did not get its validators up");
    let nodes = children_of(demo.id());
    assert_eq!(nodes.len(), 4, "expected 4 validator processes: {nodes:?}");
    assert!(nodes.iter().all(|p| alive(*p)));

    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(demo.id() as i32, libc::SIGINT);
    }
    let status = demo.wait().expect("demo exit");
    assert_eq!(status.code(), Some(130), "{status:?}");
    for p in nodes {
        assert!(!alive(p), "validator process {p} outlived the demo");
    }
    let ledgers = ledgers.expect("the demo named its ledger directory");
    assert!(!ledgers.exists(), "{} was left behind", ledgers.display());
}

/// Sends one command to a node's fault-injection control endpoint; returns its answer.
fn control(port: u16, command: &str) -> String {
    use std::io::{BufRead, BufReader, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect control");
    writeln!(s, "{command}").expect("send");
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).expect("read");
    line.trim().to_string()
}

#[test]
fn partition_commits_nothing_then_heals() {
    let _serial = serial();
    let mut c = Cluster::keygen(2, 6);
    let ports: Vec<u16> = (0..4).map(|_| free_tcp_port()).collect();
    for (i, port) in ports.iter().enumerate() {
        let (file, key) = (c.file(), c.key(&format!("validator-{i}.key")));
        c.start_with(i, &file, &key, &["--control", &format!("127.0.0.1:{port}")]);
    }
    assert_eq!(c.load(40), 40);
    let before = c.wait_converged(Duration::from_secs(60));
    let executed = before[0]["last_executed"].as_u64().unwrap_or(0);

    // split 0,1 | 2,3: no side has a quorum of 3
    for (i, port) in ports.iter().enumerate() {
        let other = if i < 2 { "2 3" } else { "0 1" };
        assert_eq!(control(*port, &format!("block {other}")), "ok");
    }
    assert!(control(ports[0], "block 9").starts_with("error"));
    let out = Command::new(PBFT)
        .args(c.load_args(10))
        .args(["--timeout", "3"])
        .stdin(Stdio::null())
        .output()
        .expect("run load");
    assert!(
        !out.status.success(),
        "a 2|2 split committed: {}",
        text(&out)
    );
    for r in c.status() {
        assert_eq!(
            r["last_executed"].as_u64(),
            Some(executed),
            "executed during the split: {r}"
        );
    }

    // heal: everything commits again and every validator reaches one head
    for port in &ports {
        assert_eq!(control(*port, "block"), "ok");
    }
    assert_eq!(c.load(40), 40);
    let after = c.wait_converged(Duration::from_secs(60));
    assert!(after[0]["last_executed"].as_u64().unwrap_or(0) > executed);
}

#[test]
fn crash_mid_checkpoint_restarts_and_catches_up_without_double_execution() {
    let _serial = serial();
    let mut c = Cluster::keygen(2, 7);
    for i in 0..3 {
        c.start(i);
    }
    // validator 3 aborts inside its first checkpoint (K = 8), after the ledger wrote
    // the snapshot and before the checkpoint is announced
    let (file, key) = (c.file(), c.key("validator-3.key"));
    c.start_with(3, &file, &key, &["--crash-at-checkpoint", "8"]);
    assert_eq!(c.load(200), 200);
    let mut crashed = c.nodes[3].take().expect("validator 3");
    let status = crashed.wait().expect("validator 3 exit");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(libc::SIGABRT),
        "{status:?}\n{}",
        c.logs()
    );

    c.start(3);
    assert_eq!(c.load(60), 60);
    c.wait_converged(Duration::from_secs(60));
    c.stop_and_verify(&[("client-0", 1_000_000_000), ("client-1", 1_000_000_000)]);
}

#[test]
fn equivocating_primary_is_exposed_and_replaced() {
    let _serial = serial();
    let mut c = Cluster::keygen(2, 8);
    let (file, key) = (c.file(), c.key("validator-0.key"));
    c.start_with(0, &file, &key, &["--traitor", "equivocate"]);
    for i in 1..4 {
        c.start(i);
    }
    assert_eq!(c.load(100), 100);
    // the honest validators hold signed evidence against the traitor, moved past its
    // view, and agree
    let rows = c.wait_for(Duration::from_secs(60), "honest validators agree", |rows| {
        let honest = &rows[1..];
        honest.iter().all(|r| {
            (&r["last_executed"], &r["head"]) == (&honest[0]["last_executed"], &honest[0]["head"])
        })
    });
    for r in &rows[1..] {
        assert!(r["view"].as_u64().unwrap_or(0) >= 1, "{rows:?}");
        assert_eq!(r["evidence_against"], serde_json::json!([0]), "{rows:?}");
    }
}

/// Runs a catalog scenario in `mode` (seed 1) with `pbft scenario run`, and returns the
/// exit code, the JSON report of the run and the printed output.
fn scenario_run(name: &str, mode: &str) -> (Option<i32>, Value, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("report.json");
    let file = format!("{}/scenarios/{name}.toml", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(PBFT)
        .args([
            "scenario", "run", &file, "--mode", mode, "--seed", "1", "--json",
        ])
        .arg(&json)
        .stdin(Stdio::null())
        .output()
        .expect("run pbft scenario");
    let report: Value = std::fs::read_to_string(&json)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(Value::Null);
    (out.status.code(), report, text(&out))
}

/// A catalog scenario on real processes: it passes in cluster mode, and the simulator
/// reaches the same verdict on the same file, expectation by expectation. Returns the
/// cluster report and its printed output.
fn scenario_passes_in_both_modes(name: &str) -> (Value, String) {
    let _serial = serial();
    let (code, cluster, out) = scenario_run(name, "cluster");
    assert_eq!(code, Some(0), "{name} in cluster mode:\n{out}");
    let run = &cluster["runs"][0];
    assert_eq!(run["mode"], "cluster", "{out}");
    assert_eq!(run["passed"], true, "{out}");
    assert!(
        run["violations"].as_array().is_some_and(|v| v.is_empty()),
        "{out}"
    );
    // every validator process reported its peak resident memory
    assert!(
        run["measured"]["peak_rss_kb"].as_u64().unwrap_or(0) > 1024,
        "{out}"
    );
    let (code, sim, out_sim) = scenario_run(name, "sim");
    assert_eq!(code, Some(0), "{name} in sim mode:\n{out_sim}");
    let verdicts = |r: &Value| -> Vec<(String, bool)> {
        r["runs"][0]["expectations"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| {
                        (
                            e["name"].as_str().unwrap_or("").to_string(),
                            e["passed"].as_bool().unwrap_or(false),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    // each memory bound is checked only by the mode that measures its figure
    let (mut c, mut s) = (verdicts(&cluster), verdicts(&sim));
    c.retain(|(n, _)| n != "max_rss_kb");
    s.retain(|(n, _)| n != "max_memory_kb");
    assert_eq!(c, s, "the modes disagree on {name}:\n{out}\n{out_sim}");
    (cluster, out)
}

#[test]
fn scenario_baseline_in_cluster_mode() {
    scenario_passes_in_both_modes("baseline");
}

#[test]
fn scenario_primary_crash_in_cluster_mode() {
    scenario_passes_in_both_modes("primary-crash");
}

#[test]
fn scenario_equivocating_primary_in_cluster_mode() {
    scenario_passes_in_both_modes("equivocating-primary");
}

#[test]
fn scenario_wiped_replica_catches_up_in_cluster_mode() {
    scenario_passes_in_both_modes("wiped-replica-catches-up");
}

#[test]
fn scenario_partition_heal_in_cluster_mode() {
    scenario_passes_in_both_modes("partition-heal");
}

#[test]
fn scenario_crash_mid_checkpoint_in_cluster_mode() {
    scenario_passes_in_both_modes("crash-mid-checkpoint");
}

/// The flood traitor on real processes: honest progress, and each honest process's peak
/// resident memory within the scenario's `max_rss_kb` bound.
#[test]
fn scenario_flood_in_cluster_mode_keeps_memory_bounded() {
    let (cluster, out) = scenario_passes_in_both_modes("flood");
    let checked = cluster["runs"][0]["expectations"]
        .as_array()
        .is_some_and(|a| {
            a.iter()
                .any(|e| e["name"] == "max_rss_kb" && e["passed"] == true)
        });
    assert!(checked, "the RSS bound was not checked:\n{out}");
}

/// The slow primary on real processes: it delays every pre-prepare to 90% of the view
/// timeout, and the backups' ordering deadline (T/2 after a client's retransmission
/// told them of a request) replaces it, so every honest validator ends in view >= 1.
#[test]
fn scenario_slow_primary_in_cluster_mode_is_replaced() {
    let (cluster, out) = scenario_passes_in_both_modes("slow-primary");
    let validators = cluster["runs"][0]["validators"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(validators.len(), 4, "{out}");
    for v in validators.iter().filter(|v| v["role"] == "honest") {
        assert!(v["view"].as_u64().unwrap_or(0) >= 1, "{v}\n{out}");
    }
}

/// The stranger scenarios on real processes (cluster only: the simulator models no
/// client connections): each passes, with its throughput floor, RSS bound and
/// strangers checked, and the run's notes show that the strangers that take
/// connections were refused some (they did meet the limits).
#[test]
fn scenario_strangers_in_cluster_mode() {
    let _serial = serial();
    for (name, meets_limits) in [
        ("hog-connections", true),
        ("slow-frame", true),
        ("query-flood", true),
        ("bad-signatures", true),
        ("hijack-replies", false),
    ] {
        let (code, report, out) = scenario_run(name, "cluster");
        assert_eq!(code, Some(0), "{name} in cluster mode:\n{out}");
        let checked = |what: &str| {
            report["runs"][0]["expectations"]
                .as_array()
                .is_some_and(|a| a.iter().any(|e| e["name"] == what && e["passed"] == true))
        };
        assert!(
            checked("max_rss_kb"),
            "{name}: the RSS bound was not checked:\n{out}"
        );
        assert!(
            checked("min_throughput_fraction"),
            "{name}: the throughput floor was not checked:\n{out}"
        );
        assert!(
            checked("strangers"),
            "{name}: the strangers were not checked:\n{out}"
        );
        assert!(out.contains("note: "), "{name}: no stranger notes:\n{out}");
        if meets_limits {
            let refused_some = out
                .lines()
                .filter(|l| l.contains("stranger "))
                .all(|l| !l.contains(" 0 refused"));
            assert!(refused_some, "{name}: a stranger met no limit:\n{out}");
        }
    }
}

/// `reuse_id` on real processes and in the simulator, same verdicts: every stranger
/// sent requests re-signed under executed ids, f+1 validators refused some as reused
/// ids, and no honest ledger executed any.
#[test]
fn scenario_reuse_id_in_cluster_mode() {
    let (cluster, out) = scenario_passes_in_both_modes("reuse-id");
    let rows = cluster["runs"][0]["strangers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(rows.len(), 2, "{out}");
    for row in rows {
        let summary = row["summary"].as_str().unwrap_or("");
        assert!(
            summary.contains(" 0 of its requests executed in the 4 honest ledgers read")
                && !summary.contains("(0 refused by f+1)"),
            "{row}\n{out}"
        );
    }
}
