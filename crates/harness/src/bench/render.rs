//! The bench's results: one [`Point`] per in-flight count, written as a CSV and as the
//! table printed at the end.

use super::calibrate::Calibration;
use std::fmt::Write as _;

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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn point(k: usize) -> Point {
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

    pub(crate) const CAL: Calibration = Calibration {
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
    fn a_validator_that_vanished_mid_point_has_nan_cpu() {
        let mut p = point(4);
        p.cpu = vec![0.5, f64::NAN];
        let csv = render_csv(&[p], &CAL, 4);
        assert!(
            csv.lines().nth(1).is_some_and(|l| l.ends_with(",0.50,NaN")),
            "{csv}"
        );
    }

    #[test]
    fn table_states_the_limit_and_the_peak_share_of_it() {
        let t = render_table(&[point(1), point(16)], &CAL, 4);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("in flight  committed/s"), "{t}");
        assert_eq!(
            lines[2],
            "       16          800        1.50        3.25         4.0         32.0  0.50 0.25"
        );
        assert!(t.contains("limit for n = 4 on 2 cores: 31250 req/s"), "{t}");
        assert!(t.contains("peak 800 req/s = 3% of that limit"), "{t}");
    }
}
