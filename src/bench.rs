//! `pbft bench cluster`: the standard workload of PERFORMANCE.md on real processes.
//!
//! n validator processes (release build of this binary) over QUIC on loopback, each with
//! a RocksDB ledger in a temporary directory, and a closed-loop load of pre-signed
//! transfers swept over the number of requests in flight. For each point: a warm-up run
//! that also estimates the rate, then a measured run sized to last about `--duration`
//! seconds at that rate; requests are signed before either run starts, so client
//! signing is not charged to the cluster. Reported per point: committed requests per
//! second, p50/p90/p99 latency (submit to f+1 matching replies), the mean batch size
//! (requests over sequence numbers executed in the window) and the CPU each validator
//! process used (user + system time from /proc over the window, in cores).
//!
//! Before the cluster starts, the bench times the signature operations on one thread
//! ([`calibrate`]) and recomputes PERFORMANCE.md's limit from them: the host's speed
//! drifts (the same ed25519 verification has measured 34 µs and 100 µs on this machine
//! on different days), so a throughput figure means little without the costs it was
//! measured against.

use crate::demo::{spawn_nodes, wait_reachable};
use crate::net::{client_keys, presign};
use crate::procfs::{cpu_seconds, status_kb};
use anyhow::{Context, Result};
use pbft_client::{percentiles, Client};
use pbft_cluster::{keygen, Cluster, KeygenSpec, ProtocolParams};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// What `pbft bench cluster` was asked to do.
#[derive(Clone, Debug)]
pub struct BenchArgs {
    /// Validators, n = 3f+1 >= 4.
    pub validators: usize,
    /// Client accounts (at least enough for the largest in-flight count).
    pub clients: usize,
    /// Seconds each point is measured for (approximately: see the module doc).
    pub duration: u64,
    /// Requests in flight, one point each.
    pub inflight: Vec<usize>,
    /// Where the CSV and the plot go.
    pub out: PathBuf,
    /// Most requests per batch.
    pub batch_size: usize,
    /// Most sequence numbers in flight at the primary.
    pub pipeline_depth: u64,
}

/// One measured point of the sweep.
#[derive(Clone, Debug)]
pub struct Point {
    /// Requests in flight.
    pub inflight: usize,
    /// Requests committed in the measured run.
    pub committed: usize,
    /// Length of the measured run, seconds.
    pub seconds: f64,
    /// Committed requests per second.
    pub throughput: f64,
    /// Latency percentiles, ms.
    pub p50: f64,
    /// 90th percentile, ms.
    pub p90: f64,
    /// 99th percentile, ms.
    pub p99: f64,
    /// Requests per executed sequence number (validator 0's view).
    pub mean_batch: f64,
    /// CPU used by each validator process, in cores (1.0 = one core busy).
    pub cpu: Vec<f64>,
    /// Resident memory of the largest validator process at the end of the point, KiB.
    pub rss_kb: u64,
}

/// What signature operations cost on this machine at the time of a run, measured on
/// one thread just before the cluster starts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Calibration {
    /// One ed25519 signature (120-byte message), µs.
    pub sign_us: f64,
    /// One single verification, µs.
    pub verify_us: f64,
    /// Batch verification, per signature, in batches of 64, µs.
    pub batch_verify_us: f64,
    /// Cores available to the processes.
    pub cores: usize,
}

impl Calibration {
    /// PERFORMANCE.md's limit recomputed from these costs: each of `n` validators
    /// batch-verifies every client signature, all of them sharing `cores` cores, and
    /// nothing else costs anything. Requests per second.
    pub fn limit(&self, n: usize) -> f64 {
        self.cores as f64 * 1e6 / (n.max(1) as f64 * self.batch_verify_us.max(1e-3))
    }

    /// One line for the report.
    pub fn describe(&self, n: usize) -> String {
        format!(
            "crypto on this machine now (one thread): sign {:.1} µs, verify {:.1} µs, batch verify {:.1} µs per signature (64 per batch); limit for n = {n} on {} cores: {:.0} req/s",
            self.sign_us,
            self.verify_us,
            self.batch_verify_us,
            self.cores,
            self.limit(n)
        )
    }
}

/// Times signing, single and batch verification (the median of three rounds of 256
/// each), on the calling thread.
pub fn calibrate() -> Result<Calibration> {
    use pbft_crypto::{verify, verify_each, Digest, Domain, Keypair, VerifyItem};
    const N: usize = 256;
    let keys: Vec<Keypair> = (0..64u64)
        .map(|i| Keypair::from_seed(&Digest::of_parts(&[b"bench calibration", &i.to_le_bytes()]).0))
        .collect::<Result<_, _>>()
        .context("calibration keys")?;
    let publics: Vec<_> = keys.iter().map(|k| k.public()).collect();
    let msg = [0x5au8; 120];
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (mut sign, mut single, mut batch) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..3 {
        let t = Instant::now();
        let sigs: Vec<_> = (0..N)
            .map(|i| keys[i % keys.len()].sign(Domain::Request, &msg))
            .collect();
        sign.push(t.elapsed().as_secs_f64() * 1e6 / N as f64);
        let t = Instant::now();
        for (i, sig) in sigs.iter().enumerate() {
            verify(&publics[i % publics.len()], Domain::Request, &msg, sig)
                .context("calibration: a fresh signature did not verify")?;
        }
        single.push(t.elapsed().as_secs_f64() * 1e6 / N as f64);
        let items: Vec<VerifyItem<'_>> = sigs
            .iter()
            .enumerate()
            .map(|(i, sig)| VerifyItem {
                key: &publics[i % publics.len()],
                domain: Domain::Request,
                msg: &msg,
                sig,
            })
            .collect();
        let t = Instant::now();
        for chunk in items.chunks(64) {
            if !verify_each(chunk).iter().all(|ok| *ok) {
                anyhow::bail!("calibration: a fresh batch did not verify");
            }
        }
        batch.push(t.elapsed().as_secs_f64() * 1e6 / N as f64);
    }
    Ok(Calibration {
        sign_us: median(sign),
        verify_us: median(single),
        batch_verify_us: median(batch),
        cores: std::thread::available_parallelism().map_or(1, |c| c.get()),
    })
}

/// `pbft bench cluster`.
pub fn cmd_bench_cluster(args: BenchArgs) -> ExitCode {
    if args.validators < 4 {
        return crate::net::bad_input(anyhow::anyhow!(
            "--validators {}: n = 3f+1 must be at least 4",
            args.validators
        ));
    }
    if args.inflight.is_empty() || args.inflight.contains(&0) {
        return crate::net::bad_input(anyhow::anyhow!(
            "--inflight: give one or more counts of at least 1, e.g. 1,4,16,64,256"
        ));
    }
    if args.pipeline_depth == 0 || args.batch_size == 0 {
        return crate::net::bad_input(anyhow::anyhow!(
            "--pipeline-depth and --batch-size must be at least 1"
        ));
    }
    if args.duration == 0 {
        return crate::net::bad_input(anyhow::anyhow!("--duration must be at least 1 second"));
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return crate::net::failed(e.into()),
    };
    match rt.block_on(bench(&args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => crate::net::failed(e),
    }
}

async fn bench(args: &BenchArgs) -> Result<()> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating --out {}", args.out.display()))?;
    let cal = calibrate()?;
    eprintln!("{}", cal.describe(args.validators));
    let tmp = tempfile::Builder::new().prefix("pbft-bench-").tempdir()?;
    let params = ProtocolParams {
        batch_size: args.batch_size,
        pipeline_depth: args.pipeline_depth,
        ..ProtocolParams::default()
    };
    let window = params.client_window.max(1) as usize;
    let most = args.inflight.iter().copied().max().unwrap_or(1);
    let clients = args.clients.max(most.div_ceil(window));
    let base_port = crate::cluster_runner::free_udp_ports(args.validators, 0)?;
    let spec = KeygenSpec {
        validators: args.validators,
        clients,
        host: "127.0.0.1".into(),
        base_port,
        params,
        balance: 1_000_000_000,
        force: true,
    };
    let keys_dir = tmp.path().join("keys");
    let out = keygen(&keys_dir, &spec).context("keygen")?;
    let cluster: Cluster = out.cluster;
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data)?;
    let mut nodes = spawn_nodes(&cluster, &keys_dir, &data, &[])?;
    let keys = client_keys(&cluster, clients)?;
    let mut client = Client::connect(&cluster).await?;
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
    let pids: Vec<u32> = nodes.0.iter().map(|(_, c)| c.id()).collect();
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
        .with_context(|| format!("writing {}", csv.display()))?;
    let svg = args.out.join(format!("cluster-n{}.svg", args.validators));
    plot(&points, args.validators, &svg)?;
    print!("{}", render_table(&points, &cal, args.validators));
    println!("wrote {} and {}", csv.display(), svg.display());
    Ok(())
}

/// The highest executed sequence number among the validators that answer.
async fn executed(client: &mut Client) -> u64 {
    match client.status(Duration::from_millis(500)).await {
        Ok(s) => s
            .iter()
            .filter_map(|(_, x)| x.as_ref().map(|x| x.last_executed))
            .max()
            .unwrap_or(0),
        Err(_) => 0,
    }
}

/// The CSV: one row per point, one CPU column per validator, and the calibration
/// (the same on every row) with the limit and each point's share of it.
pub fn render_csv(points: &[Point], cal: &Calibration, validators: usize) -> String {
    let n = points.first().map_or(0, |p| p.cpu.len());
    let limit = cal.limit(validators);
    let mut s = String::from(
        "inflight,committed,seconds,throughput_rps,p50_ms,p90_ms,p99_ms,mean_batch,max_rss_kb,sign_us,verify_us,batch_verify_us,limit_rps,share_of_limit",
    );
    for i in 0..n {
        let _ = write!(s, ",cpu_validator_{i}");
    }
    s.push('\n');
    for p in points {
        let _ = write!(
            s,
            "{},{},{:.3},{:.1},{:.3},{:.3},{:.3},{:.1},{}",
            p.inflight,
            p.committed,
            p.seconds,
            p.throughput,
            p.p50,
            p.p90,
            p.p99,
            p.mean_batch,
            p.rss_kb
        );
        let _ = write!(
            s,
            ",{:.1},{:.1},{:.1},{:.0},{:.3}",
            cal.sign_us,
            cal.verify_us,
            cal.batch_verify_us,
            limit,
            p.throughput / limit.max(1e-9)
        );
        for c in &p.cpu {
            let _ = write!(s, ",{c:.2}");
        }
        s.push('\n');
    }
    s
}

/// The table printed at the end, with the calibration and the peak's share of the
/// limit under it.
pub fn render_table(points: &[Point], cal: &Calibration, validators: usize) -> String {
    let mut s = String::from(
        "in flight  committed/s      p50 ms      p99 ms  mean batch  max RSS MiB  CPU per validator (cores)\n",
    );
    for p in points {
        let cpu: Vec<String> = p.cpu.iter().map(|c| format!("{c:.2}")).collect();
        let _ = writeln!(
            s,
            "{:>9}  {:>11.0}  {:>10.2}  {:>10.2}  {:>10.1}  {:>11.1}  {}",
            p.inflight,
            p.throughput,
            p.p50,
            p.p99,
            p.mean_batch,
            p.rss_kb as f64 / 1024.0,
            cpu.join(" ")
        );
    }
    let peak = points.iter().map(|p| p.throughput).fold(0.0, f64::max);
    let limit = cal.limit(validators);
    let _ = writeln!(
        s,
        "{}\npeak {peak:.0} req/s = {:.0}% of that limit",
        cal.describe(validators),
        100.0 * peak / limit.max(1e-9)
    );
    s
}

/// Throughput against p50 and p99 latency, one point per in-flight count, as SVG.
fn plot(points: &[Point], n: usize, path: &Path) -> Result<()> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let max_x = points.iter().map(|p| p.throughput).fold(1.0, f64::max) * 1.1;
    let max_y = points.iter().map(|p| p.p99).fold(1.0, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("pbft, n = {n}: throughput against latency"),
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..max_x, (0.1f64..max_y).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("committed requests per second")
        .y_desc("latency, ms (log scale)")
        .draw()?;
    for (name, color, get) in [
        ("p50", BLUE, (|p: &Point| p.p50) as fn(&Point) -> f64),
        ("p99", RED, |p: &Point| p.p99),
    ] {
        let series: Vec<(f64, f64)> = points
            .iter()
            .map(|p| (p.throughput, get(p).max(0.1)))
            .collect();
        chart
            .draw_series(LineSeries::new(series.clone(), color))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        chart.draw_series(
            series
                .iter()
                .map(|&(x, y)| Circle::new((x, y), 3, color.filled())),
        )?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE)
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(k: usize) -> Point {
        Point {
            inflight: k,
            committed: 100 * k,
            seconds: 2.0,
            throughput: 50.0 * k as f64,
            p50: 1.5,
            p90: 2.0,
            p99: 3.25,
            mean_batch: 4.0,
            cpu: vec![0.5, 0.25],
            rss_kb: 32_768,
        }
    }

    const CAL: Calibration = Calibration {
        sign_us: 15.0,
        verify_us: 35.0,
        batch_verify_us: 16.0,
        cores: 2,
    };

    #[test]
    fn csv_has_one_row_per_point_and_one_cpu_column_per_validator() {
        let csv = render_csv(&[point(1), point(16)], &CAL, 4);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(
            lines[0],
            "inflight,committed,seconds,throughput_rps,p50_ms,p90_ms,p99_ms,mean_batch,max_rss_kb,sign_us,verify_us,batch_verify_us,limit_rps,share_of_limit,cpu_validator_0,cpu_validator_1"
        );
        // 2 cores / (4 x 16 us) = 31,250 req/s; 800 req/s is 2.6% of it
        assert_eq!(
            lines[2],
            "16,1600,2.000,800.0,1.500,2.000,3.250,4.0,32768,15.0,35.0,16.0,31250,0.026,0.50,0.25"
        );
        assert_eq!(lines.len(), 3);
    }

    #[test]
    fn table_states_the_limit_and_the_peak_share_of_it() {
        let t = render_table(&[point(1), point(16)], &CAL, 4);
        assert!(t.contains("limit for n = 4 on 2 cores: 31250 req/s"), "{t}");
        assert!(t.contains("peak 800 req/s = 3% of that limit"), "{t}");
    }

    /// The calibration runs the real operations (a signature that failed to verify
    /// would be an error) and gives positive costs and a finite limit that falls as n
    /// grows. (How fast they are is the bench's business, not a test's.)
    #[test]
    fn calibration_measures_the_signature_operations() {
        let c = calibrate().expect("calibrate");
        assert!(
            c.sign_us > 0.0 && c.verify_us > 0.0 && c.batch_verify_us > 0.0,
            "{c:?}"
        );
        assert!(c.cores >= 1);
        assert!(c.limit(4).is_finite() && c.limit(4) > c.limit(7), "{c:?}");
    }

    #[test]
    fn plot_writes_an_svg_with_both_series() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("p.svg");
        plot(&[point(1), point(4), point(16)], 4, &path).expect("plot");
        let svg = std::fs::read_to_string(&path).expect("svg");
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(80)]);
        assert!(svg.contains("p50") && svg.contains("p99"));
    }
}
