//! `pbft demo`: a real local cluster. Four `pbft node` processes over QUIC on
//! loopback with RocksDB in a temporary directory, validator 0 an equivocating
//! primary, a client load with a live progress line, and a summary showing that
//! every honest validator's ledger head agrees. Ctrl-C stops every process it started.

use crate::error::{Error, Outcome, Result};
use crate::ports::check_ports;
use crate::ready::{heads_agree, wait_heads_agree, wait_reachable};
use crate::status::render_table;
use crate::supervise::{keys_dir, private_copy, Launcher};
use crate::workload::{bindable, client_keys, presign};
use pbft_client::{percentiles, Client};
use pbft_cluster::Cluster;
use std::path::Path;
use std::time::{Duration, Instant};

/// The validator that misbehaves in the demo, and how.
pub const TRAITOR: u32 = 0;
/// Its behaviour.
pub const TRAITOR_BEHAVIOR: &str = "equivocate";

/// `pbft demo`.
#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {
    /// Transfers to submit.
    #[arg(long, default_value_t = 3000)]
    pub requests: usize,
    /// Requests in flight.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
}

/// Runs the demo with the development keys; successful if every request committed and
/// the honest ledger heads agree, [`Outcome::Interrupted`] on Ctrl-C (after every
/// process it started is stopped and its directory removed).
pub fn run(args: &DemoArgs) -> Result<Outcome> {
    let keys = keys_dir()?;
    check_ports(&Cluster::load(&keys.join("cluster.toml"))?)?;
    let launcher = Launcher::this_binary()?;
    crate::runtime()?.block_on(async {
        tokio::select! {
            r = demo(&launcher, &keys, args) => r.map(Outcome::from_success),
            _ = tokio::signal::ctrl_c() => {
                // dropping the demo future drops `Children`, which stops every process
                eprintln!("\ninterrupted: stopping every validator the demo started");
                Ok(Outcome::Interrupted)
            }
        }
    })
}

/// The role column of the demo's status table.
pub fn role(id: u32) -> String {
    if id == TRAITOR { "traitor" } else { "honest" }.to_string()
}

async fn demo(launcher: &Launcher, keys: &Path, args: &DemoArgs) -> Result<bool> {
    let tmp = tempfile::Builder::new()
        .prefix("pbft-demo-")
        .tempdir()
        .map_err(|e| Error::io("creating a temporary directory", e))?;
    // git does not keep file modes: copy the development keys with mode 0600
    let keys_copy = tmp.path().join("keys");
    let cluster = &private_copy(keys, &keys_copy)?;
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
    let mut children = launcher.spawn_all(
        cluster,
        &keys_copy,
        tmp.path(),
        &[(TRAITOR, TRAITOR_BEHAVIOR)],
    )?;
    let keys_c = client_keys(cluster, cluster.clients.len())?;
    let mut client = Client::connect_bound(cluster, bindable(&keys_c)).await?;
    client.retransmit = Duration::from_millis(500);
    wait_reachable(&mut client, cluster.n(), Duration::from_secs(30)).await?;
    let reqs = presign(&mut client, &keys_c, args.requests).await?;
    println!(
        "{} clients submit {} signed transfers, {} in flight:",
        keys_c.len(),
        reqs.len(),
        args.concurrency
    );
    let started = Instant::now();
    let accepted = client
        .submit(reqs, args.concurrency, |p| {
            let secs = started.elapsed().as_secs_f64().max(1e-9);
            eprint!(
                "\r  committed {:>6}/{:<6} {:>7.0} req/s   view {}   re-sent {}   ",
                p.accepted,
                args.requests,
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
    let honest = |id: u32| id != TRAITOR;
    let rows = wait_heads_agree(
        &mut client,
        honest,
        Duration::from_secs(15),
        Duration::from_millis(200),
    )
    .await?;
    print!("{}", render_table(&rows, role));
    let agree = heads_agree(&rows, honest);
    let all = accepted.len() == args.requests;
    println!("\n{}", verdict(agree, all));
    client.close().await;
    children.stop(Duration::from_secs(5));
    Ok(agree && all)
}

/// The demo's last line.
pub fn verdict(agree: bool, all: bool) -> String {
    let yes = |b: bool| if b { "yes" } else { "NO" };
    format!(
        "honest ledger heads agree: {}   all requests committed: {}",
        yes(agree),
        yes(all)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The end-to-end test and readers look for this exact line.
    #[test]
    fn the_verdict_line_says_yes_or_no() {
        assert_eq!(
            verdict(true, true),
            "honest ledger heads agree: yes   all requests committed: yes"
        );
        assert_eq!(
            verdict(false, true),
            "honest ledger heads agree: NO   all requests committed: yes"
        );
        assert_eq!(role(TRAITOR), "traitor");
        assert_eq!(role(TRAITOR + 1), "honest");
    }
}
