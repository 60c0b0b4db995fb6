//! The workload of a cluster-mode run, as the scenario's clients over QUIC: the valid
//! requests in rounds, and the forged requests and replays sent once half of the valid
//! ones were accepted.

use super::plan::Plan;
use super::strangers::Sightings;
use pbft_client::Client;
use pbft_cluster::Cluster;
use pbft_crypto::Keypair;
use pbft_protocol::SignedRequest;
use pbft_scenario::model::Scenario;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

/// What the workload measured.
#[derive(Debug, Default)]
pub(crate) struct WorkloadOutcome {
    /// Valid requests accepted.
    pub committed: u64,
    /// When the last valid request was accepted, ms after the start, if all were.
    pub all_committed_ms: Option<u64>,
    /// The latency of each accepted request, µs.
    pub latencies_us: Vec<u64>,
    /// Why the workload stopped early, if it did.
    pub error: Option<String>,
}

/// How many requests the next submission takes: a round, cut short so that the
/// submission ends exactly at `half` while the specials are still to be sent.
pub(crate) fn chunk_size(round: usize, half: usize, done: usize, specials_sent: bool) -> usize {
    if !specials_sent && done < half {
        round.min(half - done).max(1)
    } else {
        round
    }
}

/// The indices into the accepted requests that are replayed: spread with a stride of 7.
pub(crate) fn replays(count: usize, accepted: usize) -> impl Iterator<Item = usize> {
    (0..count).filter_map(move |i| (accepted > 0).then_some(i * 7 % accepted.max(1)))
}

/// Runs the workload of `sc`: the valid requests in rounds (one round = every client's
/// `concurrency` requests, with `think_ms` between rounds; without think time, one
/// round per half), the forged requests and the replays sent halfway through.
/// `accepted` counts the accepted valid requests as they come; `sightings` records
/// each request as it is handed to the client and once it is accepted (for the
/// strangers).
pub(crate) async fn workload(
    cluster: Cluster,
    keys: Vec<Keypair>,
    sc: Scenario,
    plan: Plan,
    t0: Instant,
    accepted: Arc<AtomicU64>,
    sightings: Arc<Sightings>,
) -> WorkloadOutcome {
    let mut out = WorkloadOutcome::default();
    // the scenario's clients: their connections are bound to their accounts
    let mut client = match Client::connect_bound(&cluster, crate::workload::bindable(&keys)).await {
        Ok(c) => c,
        Err(e) => {
            out.error = Some(format!("client: {e}"));
            return out;
        }
    };
    // the client's retransmission delay is T/4 of the cluster file, which carries the
    // scenario's view timeout
    client.deadline = Duration::from_millis(sc.expect.deadline_ms);
    let w = &sc.workload;
    let in_flight = (w.clients * w.concurrency).max(1);
    let round = if w.think_ms > 0 {
        in_flight
    } else {
        plan.valid.len().max(1)
    };
    let total = plan.valid.len();
    let half = total / 2;
    let mut done_valid: Vec<SignedRequest> = Vec::new();
    let mut sent_specials = false;
    let mut queue = plan.valid.into_iter().peekable();
    while queue.peek().is_some() {
        let take = chunk_size(round, half, done_valid.len(), sent_specials);
        let chunk: Vec<SignedRequest> = queue.by_ref().take(take).collect();
        let base = accepted.load(Ordering::SeqCst);
        let r = {
            let mut submit = std::pin::pin!(client.submit(chunk.clone(), in_flight, |p| {
                accepted.store(base + p.accepted as u64, Ordering::SeqCst);
            }));
            // the first poll hands the requests to the transport: only then may a
            // stranger know them
            let first = std::future::poll_fn(|cx| Poll::Ready(submit.as_mut().poll(cx))).await;
            sightings.sent(&chunk);
            match first {
                Poll::Ready(r) => r,
                Poll::Pending => submit.await,
            }
        };
        match r {
            Ok(acc) => {
                sightings.accepted(&acc, &chunk);
                out.latencies_us
                    .extend(acc.iter().map(|a| a.latency.as_micros() as u64));
                done_valid.extend(chunk);
            }
            Err(e) => {
                out.error = Some(format!("client: {e}"));
                break;
            }
        }
        if !sent_specials && done_valid.len() >= half {
            sent_specials = true;
            for f in &plan.forged {
                client.send_unacknowledged(f);
            }
            for i in replays(w.replays, done_valid.len()) {
                client.send_unacknowledged(&done_valid[i]);
            }
        }
        if w.think_ms > 0 && queue.peek().is_some() {
            tokio::time::sleep(Duration::from_millis(w.think_ms)).await;
        }
    }
    out.committed = accepted.load(Ordering::SeqCst);
    if out.error.is_none() && done_valid.len() == total {
        out.all_committed_ms = Some(t0.elapsed().as_millis() as u64);
    }
    client.close().await;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Submissions stop exactly at the half while the specials are pending, then go on
    /// in whole rounds.
    #[test]
    fn chunks_end_at_the_half_then_run_in_rounds() {
        let (round, total) = (8, 30);
        let half = total / 2;
        let mut done = 0;
        let mut sent = false;
        let mut chunks = Vec::new();
        while done < total {
            let take = chunk_size(round, half, done, sent).min(total - done);
            chunks.push(take);
            done += take;
            if !sent && done >= half {
                assert_eq!(done, half, "the specials go out exactly at the half");
                sent = true;
            }
        }
        assert_eq!(chunks, [8, 7, 8, 7]);
        // an empty plan still submits (nothing): never a zero-sized round
        assert_eq!(chunk_size(1, 0, 0, false), 1);
    }

    #[test]
    fn replays_pick_accepted_requests_only() {
        assert_eq!(replays(4, 10).collect::<Vec<_>>(), [0, 7, 4, 1]);
        assert!(
            replays(3, 0).next().is_none(),
            "nothing accepted, nothing replayed"
        );
        assert!(replays(100, 5).all(|i| i < 5));
    }
}
