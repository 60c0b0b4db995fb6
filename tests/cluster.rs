//! End-to-end tests: real `pbft node` processes over QUIC on loopback with RocksDB,
//! driven through the command line exactly as an operator would.

use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const PBFT: &str = env!("CARGO_BIN_EXE_pbft");

/// Four consecutive free UDP ports on loopback.
fn free_base_port(salt: u16) -> u16 {
    let start = 20_000 + salt * 20_000 + (std::process::id() % 1_000) as u16 * 10;
    for base in (start..60_000).step_by(7) {
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

    fn start(&mut self, i: usize) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("node-{i}.log")))
            .expect("log file");
        let child = Command::new(PBFT)
            .arg("node")
            .arg("--cluster")
            .arg(self.file())
            .arg("--key")
            .arg(self.dir.path().join(format!("validator-{i}.key")))
            .arg("--data")
            .arg(self.data(i))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn node");
        self.nodes[i] = Some(child);
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

    fn load(&self, requests: usize) -> u64 {
        let n = requests.to_string();
        let out = self.client(&[
            "load",
            "--clients",
            "2",
            "--requests",
            &n,
            "--concurrency",
            "16",
            "--json",
        ]);
        assert!(
            out.status.success(),
            "load: {}\nnode logs:\n{}",
            text(&out),
            self.logs()
        );
        let s = String::from_utf8_lossy(&out.stdout).to_string();
        let committed = s
            .split("\"committed\":")
            .nth(1)
            .and_then(|r| r.split(',').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        committed
    }

    /// The last lines of every node's log, for failure messages.
    fn logs(&self) -> String {
        (0..4)
            .map(|i| {
                let t = std::fs::read_to_string(self.dir.path().join(format!("node-{i}.log")))
                    .unwrap_or_default();
                let lines: Vec<&str> = t.lines().collect();
                let tail = lines[lines.len().saturating_sub(15)..].join("\n");
                format!("--- validator {i}\n{tail}\n")
            })
            .collect()
    }

    /// Polls `pbft status --json` until all four validators report the same last
    /// executed sequence and head, or fails after `within`.
    fn wait_converged(&self, within: Duration) -> String {
        let until = Instant::now() + within;
        let file = self.file();
        loop {
            let out = pbft(&[
                "status",
                "--cluster",
                file.to_str().unwrap_or_default(),
                "--json",
            ]);
            let s = String::from_utf8_lossy(&out.stdout).to_string();
            let heads: Vec<String> = s
                .split("{\"validator\":")
                .skip(1)
                .map(|row| {
                    let exec = row
                        .split("\"last_executed\":")
                        .nth(1)
                        .and_then(|r| r.split(',').next());
                    let head = row
                        .split("\"head\":\"")
                        .nth(1)
                        .and_then(|r| r.split('"').next());
                    format!("{exec:?}/{head:?}")
                })
                .collect();
            if out.status.success() && heads.len() == 4 && heads.iter().all(|h| *h == heads[0]) {
                return s;
            }
            assert!(
                Instant::now() < until,
                "no convergence within {within:?}: {}",
                text(&out)
            );
        }
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
    let mut c = Cluster::keygen(2, 0);
    for i in 0..4 {
        c.start(i);
    }
    assert_eq!(c.load(120), 120);

    // a transfer that succeeds, one the ledger refuses, and the balances
    let ok = c.client(&[
        "--key",
        c.dir
            .path()
            .join("client-0.key")
            .to_str()
            .unwrap_or_default(),
        "transfer",
        "--to",
        "client-1",
        "--amount",
        "5",
    ]);
    assert!(ok.status.success(), "transfer: {}", text(&ok));
    let refused = c.client(&[
        "--key",
        c.dir
            .path()
            .join("client-0.key")
            .to_str()
            .unwrap_or_default(),
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
    // genesis 1e9 each; the load moved 1 unit per request round robin (60 each way),
    // then client-0 sent 5 to client-1
    let b0 = c.client(&["balance", "client-0"]);
    assert_eq!(
        String::from_utf8_lossy(&b0.stdout).trim(),
        "999999995",
        "{}",
        text(&b0)
    );

    // SIGKILL a backup, commit without it, restart it on the same data: it catches up
    c.signal(3, libc::SIGKILL);
    assert_eq!(c.load(80), 80);
    c.start(3);
    assert_eq!(c.load(80), 80);
    c.wait_converged(Duration::from_secs(60));

    // clean shutdown on SIGTERM, then every ledger verifies offline
    for i in 0..4 {
        let st = c.signal(i, libc::SIGTERM).expect("node was running");
        assert!(st.success(), "validator {i} did not stop cleanly: {st:?}");
    }
    for i in 0..4 {
        let data = c.data(i);
        let v = pbft(&[
            "ledger",
            "verify",
            "--data",
            data.to_str().unwrap_or_default(),
        ]);
        assert!(v.status.success(), "ledger {i}: {}", text(&v));
        let s = pbft(&[
            "ledger",
            "show",
            "--data",
            data.to_str().unwrap_or_default(),
        ]);
        assert!(s.status.success(), "ledger show {i}: {}", text(&s));
        assert!(
            String::from_utf8_lossy(&s.stdout).contains("head: height"),
            "{}",
            text(&s)
        );
    }
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
        &pbft(&[
            "keygen",
            "--validators",
            "4",
            "--out",
            dir.to_str().unwrap_or_default(),
        ]),
        "already exists",
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
