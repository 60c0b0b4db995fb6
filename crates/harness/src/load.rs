//! `pbft client load`: the load generator. Signs every request first (see
//! [`crate::workload`]), submits them with a number in flight, and reports committed
//! requests, throughput and latency, as a line or as JSON.

use crate::client::describe;
use crate::error::{Error, Outcome, Result};
use crate::json::Fixed;
use crate::workload::{bindable, client_keys, presign};
use pbft_client::{percentiles, Accepted, Client};
use pbft_cluster::Cluster;
use serde::Serialize;
use std::time::{Duration, Instant};

/// Most requests one load signs up front: about 1 GiB of signed requests and under two
/// minutes of signing on this project's machine; far more would not fit in memory.
pub const MAX_LOAD_REQUESTS: usize = 3_000_000;

/// `pbft client load`.
#[derive(clap::Args, Debug, Clone)]
pub struct LoadArgs {
    /// Client accounts to use (client-0.key ...).
    #[arg(long, default_value_t = 4)]
    pub clients: usize,
    /// Requests to submit.
    #[arg(long)]
    pub requests: usize,
    /// Requests in flight.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
    /// Give up (exit 1) when a request is not accepted within this many seconds.
    #[arg(long, default_value_t = 30)]
    pub timeout: u64,
}

impl LoadArgs {
    /// Refuses counts the generator cannot run with.
    pub fn check(&self) -> Result<()> {
        if self.requests > MAX_LOAD_REQUESTS {
            return Err(Error::bad_value(
                format!("--requests {}", self.requests),
                format!(
                    "at most {MAX_LOAD_REQUESTS}; the load generator signs every request before it \
                     starts and holds them all in memory (about 0.3 KiB each); run it several \
                     times for a longer load"
                ),
            ));
        }
        if self.concurrency == 0 {
            return Err(Error::bad_value("--concurrency", "must be at least 1"));
        }
        Ok(())
    }
}

/// What a load measured. Its JSON (`--json`) is one object with these fields, in this
/// order, with fixed decimals.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LoadReport {
    /// Requests accepted (f+1 matching replies).
    pub committed: usize,
    /// Of those, requests the ledger refused (a failed receipt).
    pub rejected: usize,
    /// Length of the run.
    pub seconds: Fixed<3>,
    /// Accepted requests per second.
    pub throughput: Fixed<1>,
    /// Median latency.
    pub p50_ms: Fixed<2>,
    /// 90th percentile latency.
    pub p90_ms: Fixed<2>,
    /// 99th percentile latency.
    pub p99_ms: Fixed<2>,
    /// Highest latency.
    pub max_ms: Fixed<2>,
}

impl LoadReport {
    /// The report of `accepted`, submitted over `elapsed`.
    pub fn new(accepted: &[Accepted], elapsed: Duration) -> LoadReport {
        let (p50, p90, p99, max) = percentiles(accepted);
        let secs = elapsed.as_secs_f64();
        LoadReport {
            committed: accepted.len(),
            rejected: accepted.iter().filter(|a| !describe(&a.result).0).count(),
            seconds: Fixed(secs),
            throughput: Fixed(accepted.len() as f64 / secs.max(1e-9)),
            p50_ms: Fixed(p50),
            p90_ms: Fixed(p90),
            p99_ms: Fixed(p99),
            max_ms: Fixed(max),
        }
    }

    /// The one-line JSON object.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The line for people.
    pub fn to_text(&self) -> String {
        format!(
            "committed {} requests ({} rejected by the ledger) in {:.2} s: {:.0} req/s; latency p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            self.committed,
            self.rejected,
            self.seconds.0,
            self.throughput.0,
            self.p50_ms.0,
            self.p90_ms.0,
            self.p99_ms.0,
            self.max_ms.0
        )
    }
}

/// Runs the load against `cluster` and prints its report.
pub fn run(cluster: &Cluster, args: &LoadArgs) -> Result<Outcome> {
    args.check()?;
    let keys = client_keys(cluster, args.clients)?;
    let report = crate::runtime()?.block_on(async {
        let mut client = Client::connect_bound(cluster, bindable(&keys)).await?;
        if !args.json {
            eprintln!(
                "signing {} requests with {} client keys",
                args.requests,
                keys.len()
            );
        }
        let reqs = presign(&mut client, &keys, args.requests).await?;
        client.deadline = Duration::from_secs(args.timeout.max(1));
        eprintln!(
            "signed {} requests; submitting with {} in flight",
            reqs.len(),
            args.concurrency
        );
        let started = Instant::now();
        let accepted = client
            .submit(reqs, args.concurrency, |p| {
                if !args.json {
                    let secs = started.elapsed().as_secs_f64().max(1e-9);
                    eprint!(
                        "\r  committed {:>8}  in flight {:>5}  {:>9.0} req/s  view {}   ",
                        p.accepted,
                        p.in_flight,
                        p.accepted as f64 / secs,
                        p.view
                    );
                }
            })
            .await;
        let elapsed = started.elapsed();
        client.close().await;
        Ok::<_, Error>(LoadReport::new(&accepted?, elapsed))
    })?;
    if args.json {
        println!("{}", report.to_json());
    } else {
        eprintln!();
        println!("{}", report.to_text());
    }
    Ok(Outcome::Success)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pbft_crypto::{Digest, Keypair};
    use pbft_executor::{FailReason, Receipt};

    fn accepted(ms: u64, ok: bool) -> Accepted {
        let client = Keypair::from_seed(&Digest::of_parts(&[b"load test"]).0)
            .expect("key")
            .public();
        let receipt = if ok {
            Receipt::Applied { balance: 1 }
        } else {
            Receipt::Failed {
                reason: FailReason::InsufficientFunds,
            }
        };
        Accepted {
            client,
            request_id: ms,
            result: receipt.encode(),
            seq: 1,
            latency: Duration::from_millis(ms),
        }
    }

    /// The JSON of `pbft client load --json`: these keys in this order, these decimals
    /// (scripts and the end-to-end tests read it).
    #[test]
    fn json_has_the_documented_fields_and_decimals() {
        let acc = [accepted(2, true), accepted(4, true), accepted(10, false)];
        let r = LoadReport::new(&acc, Duration::from_millis(1500));
        assert_eq!(
            r.to_json(),
            "{\"committed\":3,\"rejected\":1,\"seconds\":1.500,\"throughput\":2.0,\"p50_ms\":4.00,\"p90_ms\":10.00,\"p99_ms\":10.00,\"max_ms\":10.00}"
        );
        assert_eq!(
            r.to_text(),
            "committed 3 requests (1 rejected by the ledger) in 1.50 s: 2 req/s; latency p50 4.0 ms, p90 10.0 ms, p99 10.0 ms, max 10.0 ms"
        );
        let empty = LoadReport::new(&[], Duration::ZERO);
        let v: serde_json::Value = serde_json::from_str(&empty.to_json()).expect("valid JSON");
        assert_eq!(v["committed"], 0);
    }

    #[test]
    fn oversized_and_empty_loads_are_refused_as_bad_input() {
        let args = |requests, concurrency| LoadArgs {
            clients: 1,
            requests,
            concurrency,
            json: false,
            timeout: 30,
        };
        let e = args(100_000_000, 4).check().expect_err("too many");
        assert!(e.is_bad_input());
        assert!(
            e.to_string().starts_with("--requests 100000000: at most"),
            "{e}"
        );
        let e = args(10, 0).check().expect_err("none in flight");
        assert!(
            e.is_bad_input() && e.to_string().contains("--concurrency"),
            "{e}"
        );
        args(10, 4).check().expect("fine");
    }
}
