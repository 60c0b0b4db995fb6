//! `pbft bench cluster`: the standard workload on real processes.
//!
//! n validator processes (a release build of `pbft`) over QUIC on loopback, each with
//! a RocksDB ledger in a temporary directory, and a closed-loop load of pre-signed
//! transfers swept over the number of requests in flight. For each point: a warm-up run
//! that also estimates the rate, then a measured run sized to last about `--duration`
//! seconds at that rate; requests are signed before either run starts, so client
//! signing is not charged to the cluster. Reported per point ([`Point`]): committed
//! requests per second, p50/p90/p99 latency (submit to f+1 matching replies), the mean
//! batch size (requests over sequence numbers executed in the window) and the CPU each
//! validator process used (user + system time from /proc over the window, in cores).
//!
//! Before the cluster starts, the bench times the signature operations on one thread
//! ([`calibrate()`]) and states the throughput limit they imply next to the results.

mod calibrate;
mod plot;
mod render;

pub use calibrate::{calibrate, Calibration};
pub use plot::plot;
pub use render::{render_csv, render_table, Point};

use crate::error::{Error, Outcome, Result};
use crate::procfs::{cpu_seconds, status_kb};
use crate::ready::{wait_reachable, StatusSource};
use crate::supervise::Launcher;
use crate::workload::{bindable, client_keys, presign};
use pbft_client::{percentiles, Client};
use pbft_cluster::{keygen, KeygenSpec, ProtocolParams};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// `pbft bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Which benchmark.
    #[command(subcommand)]
    pub command: BenchCommand,
}

/// The benchmarks on real processes.
#[derive(clap::Subcommand, Debug)]
pub enum BenchCommand {
    /// The standard workload (docs/performance.md): n validator processes over QUIC with
    /// RocksDB, a pre-signed closed-loop load swept over requests in flight; writes a
    /// CSV and an SVG plot to --out and prints a table.
    Cluster(ClusterBenchArgs),
}

/// `pbft bench cluster`.
#[derive(clap::Args, Debug, Clone)]
pub struct ClusterBenchArgs {
    /// Number of validators (n >= 4).
    #[arg(long, default_value_t = 4)]
    pub validators: usize,
    /// Client accounts (raised to what the largest in-flight count needs).
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Seconds each point is measured for, after its warm-up.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Output directory for cluster-n<N>.csv and cluster-n<N>.svg.
    #[arg(long, default_value = "bench-out")]
    pub out: PathBuf,
    /// Requests in flight, one point each.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16,64,256,512")]
    pub inflight: Vec<usize>,
    /// Most requests per batch.
    #[arg(long, default_value_t = 256)]
    pub batch_size: usize,
    /// Most sequence numbers in flight at the primary (the cluster file's default).
    #[arg(long, default_value_t = 1)]
    pub pipeline_depth: u64,
}

impl ClusterBenchArgs {
    /// Refuses settings the bench cannot run with.
    pub fn check(&self) -> Result<()> {
        if self.validators < 4 {
            return Err(Error::bad_value(
                format!("--validators {}", self.validators),
                "n = 3f+1 must be at least 4",
            ));
        }
        if self.inflight.is_empty() || self.inflight.contains(&0) {
            return Err(Error::bad_value(
                "--inflight",
                "give one or more counts of at least 1, e.g. 1,4,16,64,256",
            ));
        }
        if self.pipeline_depth == 0 || self.batch_size == 0 {
            return Err(Error::bad_value(
                "--pipeline-depth and --batch-size",
                "must be at least 1",
            ));
        }
        if self.duration == 0 {
            return Err(Error::bad_value("--duration", "must be at least 1 second"));
        }
        Ok(())
    }

    /// Client accounts: as asked, and at least enough that the largest in-flight count
    /// fits in the clients' windows.
    pub fn client_accounts(&self, client_window: u64) -> usize {
        let most = self.inflight.iter().copied().max().unwrap_or(1);
        self.clients
            .max(most.div_ceil(client_window.max(1) as usize))
    }
}

/// Runs a `pbft bench` command.
pub fn run(args: &BenchArgs) -> Result<Outcome> {
    match &args.command {
        BenchCommand::Cluster(c) => {
            c.check()?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .map_err(|e| Error::io("starting the async runtime", e))?;
            rt.block_on(bench(c))?;
            Ok(Outcome::Success)
        }
    }
}

async fn bench(args: &ClusterBenchArgs) -> Result<()> {
    std::fs::create_dir_all(&args.out)
        .map_err(|e| Error::io(format!("creating --out {}", args.out.display()), e))?;
    let cal = calibrate()?;
    eprintln!("{}", cal.describe(args.validators));
    let tmp = tempfile::Builder::new()
        .prefix("pbft-bench-")
        .tempdir()
        .map_err(|e| Error::io("creating a temporary directory", e))?;
    let params = ProtocolParams {
        batch_size: args.batch_size,
        pipeline_depth: args.pipeline_depth,
        ..ProtocolParams::default()
    };
    let clients = args.client_accounts(params.client_window);
    let spec = KeygenSpec {
        validators: args.validators,
        clients,
        host: "127.0.0.1".into(),
        base_port: crate::ports::free_udp_ports(args.validators, 0)?,
        params,
        balance: 1_000_000_000,
        governance: 1,
        threshold: 1,
        force: true,
    };
    let keys_dir = tmp.path().join("keys");
    let cluster = keygen(&keys_dir, &spec)
        .map_err(|e| Error::Failed(format!("keygen: {e}")))?
        .cluster;
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).map_err(|e| Error::io("creating the data directory", e))?;
    let mut nodes = Launcher::this_binary()?.spawn_all(&cluster, &keys_dir, &data, &[])?;
    let keys = client_keys(&cluster, clients)?;
    let mut client = Client::connect_bound(&cluster, bindable(&keys)).await?;
    client.deadline = Duration::from_secs(60);
    wait_reachable(&mut client, args.validators, Duration::from_secs(60)).await?;
    eprintln!(
        "{} validators (f = {}), {clients} client accounts, batch size {}, pipeline depth {}, release build: {}",
        cluster.n(),
        cluster.f(),
        args.batch_size,
        args.pipeline_depth,
        if cfg!(debug_assertions) {
            "no (debug build: figures are not meaningful)"
        } else {
            "yes"
        }
    );
    let pids = nodes.pids();
    let mut points = Vec::new();
    for &k in &args.inflight {
        // warm up, and learn the rate at this load
        let warm = (k * 20).clamp(200, 20_000);
        let reqs = presign(&mut client, &keys, warm).await?;
        let t = Instant::now();
        client.submit(reqs, k, |_| {}).await?;
        let rate = warm as f64 / t.elapsed().as_secs_f64().max(1e-6);
        let count = ((rate * args.duration as f64) as usize).clamp(k * 10, 2_000_000);
        let reqs = presign(&mut client, &keys, count).await?;
        let before_seq = executed(&mut client).await;
        let cpu_before: Vec<Option<f64>> = pids.iter().map(|p| cpu_seconds(*p)).collect();
        let t = Instant::now();
        let accepted = client.submit(reqs, k, |_| {}).await?;
        let seconds = t.elapsed().as_secs_f64();
        let cpu_after: Vec<Option<f64>> = pids.iter().map(|p| cpu_seconds(*p)).collect();
        let after_seq = executed(&mut client).await;
        let (p50, p90, p99, _) = percentiles(&accepted);
        let batches = after_seq.saturating_sub(before_seq).max(1);
        let p = Point {
            inflight: k,
            committed: accepted.len(),
            seconds,
            throughput: accepted.len() as f64 / seconds.max(1e-6),
            p50,
            p90,
            p99,
            mean_batch: accepted.len() as f64 / batches as f64,
            cpu: cpu_before
                .iter()
                .zip(&cpu_after)
                .map(|(a, b)| match (a, b) {
                    (Some(a), Some(b)) => (b - a) / seconds.max(1e-6),
                    _ => f64::NAN,
                })
                .collect(),
            rss_kb: pids
                .iter()
                .filter_map(|p| status_kb(*p, "VmRSS"))
                .max()
                .unwrap_or(0),
        };
        eprintln!(
            "in flight {:>4}: {:>8.0} req/s  p50 {:>7.2} ms  p99 {:>7.2} ms  batch {:>6.1}",
            p.inflight, p.throughput, p.p50, p.p99, p.mean_batch
        );
        points.push(p);
    }
    client.close().await;
    nodes.stop(Duration::from_secs(10));

    let csv = args.out.join(format!("cluster-n{}.csv", args.validators));
    std::fs::write(&csv, render_csv(&points, &cal, args.validators))
        .map_err(|e| Error::io(format!("writing {}", csv.display()), e))?;
    let svg = args.out.join(format!("cluster-n{}.svg", args.validators));
    plot(&points, args.validators, &svg)?;
    print!("{}", render_table(&points, &cal, args.validators));
    println!("wrote {} and {}", csv.display(), svg.display());
    Ok(())
}

/// The highest executed sequence number among the validators that answer.
async fn executed(client: &mut Client) -> u64 {
    match client.statuses(Duration::from_millis(500)).await {
        Ok(s) => s
            .iter()
            .filter_map(|(_, x)| x.as_ref().map(|x| x.last_executed))
            .max()
            .unwrap_or(0),
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> ClusterBenchArgs {
        ClusterBenchArgs {
            validators: 4,
            clients: 8,
            duration: 10,
            out: "bench-out".into(),
            inflight: vec![1, 4, 64],
            batch_size: 256,
            pipeline_depth: 1,
        }
    }

    #[test]
    fn settings_the_bench_cannot_use_are_bad_input_naming_the_flag() {
        args().check().expect("the defaults run");
        let mut a = args();
        a.validators = 3;
        let e = a.check().expect_err("n = 3");
        assert!(
            e.is_bad_input() && e.to_string().starts_with("--validators 3:"),
            "{e}"
        );
        let mut a = args();
        a.inflight = vec![4, 0];
        assert!(a
            .check()
            .expect_err("zero")
            .to_string()
            .starts_with("--inflight"));
        let mut a = args();
        a.inflight.clear();
        assert!(a.check().is_err());
        let mut a = args();
        a.duration = 0;
        assert!(a
            .check()
            .expect_err("zero")
            .to_string()
            .contains("--duration"));
        let mut a = args();
        a.batch_size = 0;
        assert!(a
            .check()
            .expect_err("zero")
            .to_string()
            .contains("--batch-size"));
    }

    #[test]
    fn enough_clients_for_the_largest_in_flight_count() {
        let mut a = args();
        assert_eq!(a.client_accounts(16), 8, "64 in flight fit 8 windows of 16");
        a.inflight = vec![1, 512];
        assert_eq!(a.client_accounts(16), 32);
        assert_eq!(a.client_accounts(0), 512, "a zero window counts as one");
    }
}
