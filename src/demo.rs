//! `pbft demo`: a real local cluster. Four `pbft node` processes over QUIC on
//! loopback with RocksDB in a temporary directory, validator 0 an equivocating
//! primary, a client load with a live progress line, and a summary showing that
//! every honest validator's ledger head agrees. Ctrl-C stops every process it started.

use crate::net::{client_keys, presign, status_table, TRAITOR_ENV};
use anyhow::{anyhow, bail, Context, Result};
use pbft_client::{percentiles, Client};
use pbft_cluster::Cluster;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

/// The validator that misbehaves in the demo, and how.
const TRAITOR: u32 = 0;
const TRAITOR_BEHAVIOR: &str = "equivocate";

/// Child processes, stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Children(pub Vec<(u32, Child)>);

impl Children {
    /// Asks every child to stop, waits up to `grace`, then kills what is left.
    pub fn stop(&mut self, grace: Duration) {
        for (_, c) in &self.0 {
            // SAFETY: kill(2) on our own child's pid has no memory effects.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
        }
        let until = Instant::now() + grace;
        for (_, c) in &mut self.0 {
            loop {
                match c.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() >= until => {
                        let _ = c.kill();
                        let _ = c.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
        self.0.clear();
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(3));
    }
}

/// Where the development keys are: `./keys`, or the source tree's `keys/`.
pub fn keys_dir() -> Result<PathBuf> {
    let candidates = [
        PathBuf::from("keys"),
        Path::new(env!("CARGO_MANIFEST_DIR")).join("keys"),
    ];
    candidates
        .iter()
        .find(|d| d.join("cluster.toml").is_file())
        .cloned()
        .ok_or_else(|| {
            anyhow!("no development cluster found (looked for keys/cluster.toml here and in the source tree)")
        })
}

/// Copies a cluster directory (cluster file and key files) to `to`, key files with
/// mode 0600, and loads the copied cluster file.
pub fn private_copy(from: &Path, to: &Path) -> Result<Cluster> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let name = entry.file_name();
        let is_key = name.to_string_lossy().ends_with(".key");
        if !is_key && name != "cluster.toml" {
            continue;
        }
        let dst = to.join(&name);
        std::fs::copy(entry.path(), &dst)
            .with_context(|| format!("copying {}", entry.path().display()))?;
        if is_key {
            std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    Ok(Cluster::load(&to.join("cluster.toml"))?)
}

/// Checks that every validator address of `cluster` is free on this machine.
pub fn check_ports(cluster: &Cluster) -> Result<()> {
    for v in &cluster.validators {
        std::net::UdpSocket::bind(v.addr).with_context(|| {
            format!(
                "validator {} needs UDP port {} ({}), which is in use: stop whatever uses it (another demo?)",
                v.id,
                v.addr.port(),
                cluster.path.display()
            )
        })?;
    }
    Ok(())
}

/// Starts one `pbft node` process per validator; `traitors` maps ids to behaviours.
pub fn spawn_nodes(
    cluster: &Cluster,
    keys: &Path,
    data: &Path,
    traitors: &[(u32, &str)],
) -> Result<Children> {
    let exe = std::env::current_exe().context("locating the pbft binary")?;
    let mut children = Children(Vec::new());
    for v in &cluster.validators {
        let log = std::fs::File::create(data.join(format!("validator-{}.log", v.id)))
            .context("creating a log file")?;
        let mut cmd = Command::new(&exe);
        cmd.arg("node")
            .arg("--cluster")
            .arg(&cluster.path)
            .arg("--key")
            .arg(keys.join(pbft_cluster::validator_key_name(v.id as usize)))
            .arg("--data")
            .arg(data.join(format!("validator-{}", v.id)))
            .arg("--log-format")
            .arg("json")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if let Some((_, b)) = traitors.iter().find(|(id, _)| *id == v.id) {
            cmd.arg("--traitor").arg(b).env(TRAITOR_ENV, "1");
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting validator {}", v.id))?;
        children.0.push((v.id, child));
    }
    Ok(children)
}

/// Waits until every validator answers a status query.
pub async fn wait_reachable(client: &mut Client, n: usize, within: Duration) -> Result<()> {
    let until = Instant::now() + within;
    loop {
        let s = client.status(Duration::from_millis(500)).await?;
        if s.iter().filter(|(_, x)| x.is_some()).count() == n {
            return Ok(());
        }
        if Instant::now() >= until {
            bail!(
                "validators did not all come up within {within:?}; reachable: {:?}",
                s.iter()
                    .filter(|(_, x)| x.is_some())
                    .map(|(i, _)| i)
                    .collect::<Vec<_>>()
            );
        }
    }
}

/// `pbft demo`.
pub fn cmd_demo(requests: usize, concurrency: usize) -> ExitCode {
    let setup = (|| {
        let keys = keys_dir()?;
        let cluster = Cluster::load(&keys.join("cluster.toml"))?;
        check_ports(&cluster)?;
        Ok::<_, anyhow::Error>((keys, cluster))
    })();
    let (keys, _) = match setup {
        Ok(x) => x,
        Err(e) => return crate::net::bad_input(e),
    };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => return crate::net::failed(e.into()),
    };
    rt.block_on(async {
        tokio::select! {
            r = demo(&keys, requests, concurrency) => match r {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::from(1),
                Err(e) => crate::net::failed(e),
            },
            _ = tokio::signal::ctrl_c() => {
                // dropping the demo future drops `Children`, which stops every process
                eprintln!("\ninterrupted: stopping every validator the demo started");
                ExitCode::from(130)
            }
        }
    })
}

async fn demo(keys: &Path, requests: usize, concurrency: usize) -> Result<bool> {
    let tmp = tempfile::Builder::new().prefix("pbft-demo-").tempdir()?;
    // git does not keep file modes: copy the development keys with mode 0600
    let keys_copy = tmp.path().join("keys");
    let cluster = &private_copy(keys, &keys_copy)?;
    let keys = keys_copy.as_path();
    println!(
        "pbft demo: {} validators (f = {}) as separate processes over QUIC on loopback,",
        cluster.n(),
        cluster.f()
    );
    println!("RocksDB ledgers under {}.", tmp.path().display());
    println!(
        "Validator {TRAITOR} is a traitor: as primary it sends different batches to different backups"
    );
    println!("(equivocation). The honest validators must expose it, change view, and agree.\n");
    let mut children = spawn_nodes(cluster, keys, tmp.path(), &[(TRAITOR, TRAITOR_BEHAVIOR)])?;
    let mut client = Client::connect(cluster).await?;
    client.retransmit = Duration::from_millis(500);
    wait_reachable(&mut client, cluster.n(), Duration::from_secs(30)).await?;
    let keys_c = client_keys(cluster, cluster.clients.len())?;
    let reqs = presign(&mut client, &keys_c, requests).await?;
    println!(
        "{} clients submit {} signed transfers, {} in flight:",
        keys_c.len(),
        reqs.len(),
        concurrency
    );
    let started = Instant::now();
    let accepted = client
        .submit(reqs, concurrency, |p| {
            let secs = started.elapsed().as_secs_f64().max(1e-9);
            eprint!(
                "\r  committed {:>6}/{:<6} {:>7.0} req/s   view {}   re-sent {}   ",
                p.accepted,
                requests,
                p.accepted as f64 / secs,
                p.view,
                p.retransmitted
            );
        })
        .await?;
    let elapsed = started.elapsed();
    eprintln!();
    let (p50, _, p99, _) = percentiles(&accepted);
    println!(
        "committed {} requests in {:.2} s ({:.0} req/s), latency p50 {:.1} ms, p99 {:.1} ms\n",
        accepted.len(),
        elapsed.as_secs_f64(),
        accepted.len() as f64 / elapsed.as_secs_f64().max(1e-9),
        p50,
        p99
    );

    // let the honest validators settle on the same head
    let honest: Vec<u32> = (0..cluster.n() as u32).filter(|i| *i != TRAITOR).collect();
    let until = Instant::now() + Duration::from_secs(15);
    let rows = loop {
        let rows = client.status(Duration::from_secs(2)).await?;
        let heads: Vec<_> = rows
            .iter()
            .filter(|(id, _)| honest.contains(id))
            .map(|(_, s)| s.as_ref().map(|s| (s.last_executed, s.head_hash)))
            .collect();
        let settled = heads.iter().all(|h| h.is_some() && *h == heads[0]);
        if settled || Instant::now() >= until {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    print!(
        "{}",
        status_table(&rows, false, |id| if id == TRAITOR {
            "traitor".to_string()
        } else {
            "honest".into()
        })
    );
    let honest_heads: Vec<_> = rows
        .iter()
        .filter(|(id, _)| honest.contains(id))
        .map(|(_, s)| s.as_ref().map(|s| (s.last_executed, s.head_hash)))
        .collect();
    let agree = !honest_heads.is_empty()
        && honest_heads
            .iter()
            .all(|h| h.is_some() && *h == honest_heads[0]);
    let all = accepted.len() == requests;
    println!(
        "\nhonest ledger heads agree: {}   all requests committed: {}",
        if agree { "yes" } else { "NO" },
        if all { "yes" } else { "NO" }
    );
    client.close().await;
    children.stop(Duration::from_secs(5));
    Ok(agree && all)
}
