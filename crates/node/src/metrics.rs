//! Node metrics in the Prometheus text format, served over plain HTTP
//! (`pbft node --metrics ADDR`, any path; `GET /metrics` is the usual one).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A cumulative histogram with fixed bucket bounds.
#[derive(Clone, Debug)]
struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, v: f64) {
        for (b, c) in self.bounds.iter().zip(self.counts.iter_mut()) {
            if v <= *b {
                *c += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {c}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

const BATCH_BOUNDS: &[f64] = &[1.0, 4.0, 16.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0];
const SECONDS_BOUNDS: &[f64] = &[
    0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// The phases whose latency is measured, per sequence number.
pub const PHASES: &[(&str, &str)] = &[
    ("prepare", "pre-prepare accepted (or sent) until prepared"),
    ("commit", "prepared until committed"),
    ("execute", "applying the batch to the ledger"),
    (
        "checkpoint",
        "taking the ledger's checkpoint (a RocksDB flush and checkpoint), every K sequences",
    ),
];

#[derive(Debug)]
struct Inner {
    id: u32,
    view: u64,
    last_executed: u64,
    stable_checkpoint: u64,
    committed_requests: u64,
    batches: u64,
    batch_size: Histogram,
    phases: BTreeMap<&'static str, Histogram>,
    view_changes: u64,
    rejected: BTreeMap<String, u64>,
    /// Messages that passed decoding and signature checks, by kind.
    received: BTreeMap<&'static str, u64>,
    connected_peers: usize,
    /// Transport events (handshakes refused, frames dropped...) by (source, reason).
    transport: BTreeMap<(String, String), u64>,
    halted: bool,
    evidence: u64,
    /// What RocksDB holds in memory for the ledger: block cache, memtables (bytes).
    ledger_block_cache: u64,
    ledger_memtables: u64,
    /// The executor's state values above RocksDB (estimated bytes).
    ledger_state_cache: u64,
}

/// Shared metrics of one validator.
#[derive(Clone, Debug)]
pub struct Metrics {
    inner: Arc<Mutex<Inner>>,
}

impl Metrics {
    /// Empty metrics for validator `id`.
    pub fn new(id: u32) -> Metrics {
        Metrics {
            inner: Arc::new(Mutex::new(Inner {
                id,
                view: 0,
                last_executed: 0,
                stable_checkpoint: 0,
                committed_requests: 0,
                batches: 0,
                batch_size: Histogram::new(BATCH_BOUNDS),
                phases: PHASES
                    .iter()
                    .map(|(p, _)| (*p, Histogram::new(SECONDS_BOUNDS)))
                    .collect(),
                view_changes: 0,
                rejected: BTreeMap::new(),
                received: BTreeMap::new(),
                connected_peers: 0,
                transport: BTreeMap::new(),
                halted: false,
                evidence: 0,
                ledger_block_cache: 0,
                ledger_memtables: 0,
                ledger_state_cache: 0,
            })),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        let mut g = match self.inner.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut g)
    }

    /// The replica's position.
    pub fn set_progress(&self, view: u64, last_executed: u64, stable_checkpoint: u64) {
        self.with(|m| {
            if view > m.view {
                m.view_changes += 1;
            }
            m.view = view;
            m.last_executed = last_executed;
            m.stable_checkpoint = stable_checkpoint;
        })
    }

    /// A batch of `requests` requests was executed.
    pub fn executed_batch(&self, requests: usize) {
        self.with(|m| {
            m.batches += 1;
            m.committed_requests += requests as u64;
            m.batch_size.observe(requests as f64);
        })
    }

    /// One phase of one sequence number took `seconds`.
    pub fn phase(&self, phase: &'static str, seconds: f64) {
        self.with(|m| {
            if let Some(h) = m.phases.get_mut(phase) {
                h.observe(seconds);
            }
        })
    }

    /// A message was rejected for `reason`.
    pub fn rejected(&self, reason: &str) {
        self.with(|m| *m.rejected.entry(reason.to_string()).or_insert(0) += 1)
    }

    /// A message of `kind` (see `Message::kind`) passed decoding and its signature
    /// checks.
    pub fn received(&self, kind: &'static str) {
        self.with(|m| *m.received.entry(kind).or_insert(0) += 1)
    }

    /// The number of validators currently connected.
    pub fn set_connected_peers(&self, n: usize) {
        self.with(|m| m.connected_peers = n)
    }

    /// The transport's view: connected validators and its counted events (refused
    /// handshakes, dropped frames, bans...), as totals per (source, reason).
    pub fn set_transport(&self, stats: &pbft_transport::TransportStats) {
        let events = stats
            .rejections
            .iter()
            .map(|((source, reason), n)| {
                let source = match source {
                    pbft_transport::Source::Peer(id) => format!("validator-{id}"),
                    pbft_transport::Source::Client => "client".to_string(),
                    pbft_transport::Source::Unknown => "unknown".to_string(),
                };
                ((source, reason.to_string()), *n)
            })
            .collect();
        self.with(|m| {
            m.connected_peers = stats.connected.len();
            m.transport = events;
        })
    }

    /// What the ledger holds in memory, bytes: the shared block cache's usage and all
    /// memtables as `RocksExecutor::memory` reports them, and the executor's state
    /// values (`RocksExecutor::state_cache_bytes` and `unflushed_state_bytes`).
    pub fn set_ledger_memory(&self, block_cache: u64, memtables: u64, state_cache: u64) {
        self.with(|m| {
            m.ledger_block_cache = block_cache;
            m.ledger_memtables = memtables;
            m.ledger_state_cache = state_cache;
        })
    }

    /// The replica stopped taking part.
    pub fn set_halted(&self) {
        self.with(|m| m.halted = true)
    }

    /// New evidence against some validator.
    pub fn evidence(&self) {
        self.with(|m| m.evidence += 1)
    }

    /// Committed requests so far.
    pub fn committed_requests(&self) -> u64 {
        self.with(|m| m.committed_requests)
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        self.with(|m| {
            let mut o = String::new();
            let id = m.id;
            let gauge = |o: &mut String, name: &str, help: &str, v: u64| {
                let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} gauge");
                let _ = writeln!(o, "{name}{{validator=\"{id}\"}} {v}");
            };
            let counter = |o: &mut String, name: &str, help: &str, v: u64| {
                let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter");
                let _ = writeln!(o, "{name}{{validator=\"{id}\"}} {v}");
            };
            gauge(&mut o, "pbft_view", "Current view.", m.view);
            gauge(
                &mut o,
                "pbft_last_executed",
                "Last executed sequence number.",
                m.last_executed,
            );
            gauge(
                &mut o,
                "pbft_stable_checkpoint",
                "Last stable checkpoint.",
                m.stable_checkpoint,
            );
            counter(
                &mut o,
                "pbft_committed_requests_total",
                "Requests executed.",
                m.committed_requests,
            );
            counter(&mut o, "pbft_batches_total", "Batches executed.", m.batches);
            counter(
                &mut o,
                "pbft_view_changes_total",
                "View changes completed.",
                m.view_changes,
            );
            counter(
                &mut o,
                "pbft_evidence_total",
                "Signed proofs of misbehaviour collected.",
                m.evidence,
            );
            gauge(
                &mut o,
                "pbft_connected_peers",
                "Validators connected.",
                m.connected_peers as u64,
            );
            gauge(
                &mut o,
                "pbft_ledger_block_cache_bytes",
                "RocksDB block cache of the ledger in use (one cache for all column families).",
                m.ledger_block_cache,
            );
            gauge(
                &mut o,
                "pbft_ledger_memtable_bytes",
                "RocksDB memtables of the ledger, live and waiting to flush.",
                m.ledger_memtables,
            );
            gauge(
                &mut o,
                "pbft_ledger_state_cache_bytes",
                "The executor's state values above RocksDB, estimated: those written since the last checkpoint and the cache.",
                m.ledger_state_cache,
            );
            gauge(
                &mut o,
                "pbft_halted",
                "1 if the validator stopped taking part.",
                u64::from(m.halted),
            );
            let _ = writeln!(
                o,
                "# HELP pbft_batch_size Requests per executed batch.\n# TYPE pbft_batch_size histogram"
            );
            m.batch_size
                .render(&mut o, "pbft_batch_size", &format!("validator=\"{id}\""));
            let _ = writeln!(
                o,
                "# HELP pbft_phase_seconds Latency of the protocol phases (prepare, commit, execute) and of the ledger checkpoints.\n# TYPE pbft_phase_seconds histogram"
            );
            for (phase, h) in &m.phases {
                h.render(
                    &mut o,
                    "pbft_phase_seconds",
                    &format!("validator=\"{id}\",phase=\"{phase}\""),
                );
            }
            let _ = writeln!(
                o,
                "# HELP pbft_messages_rejected_total Messages dropped, by reason.\n# TYPE pbft_messages_rejected_total counter"
            );
            for (reason, n) in &m.rejected {
                let reason = reason.replace(['"', '\\', '\n'], "_");
                let _ = writeln!(
                    o,
                    "pbft_messages_rejected_total{{validator=\"{id}\",reason=\"{reason}\"}} {n}"
                );
            }
            let _ = writeln!(
                o,
                "# HELP pbft_messages_received_total Messages that passed decoding and signature checks, by kind.\n# TYPE pbft_messages_received_total counter"
            );
            for (kind, n) in &m.received {
                let _ = writeln!(
                    o,
                    "pbft_messages_received_total{{validator=\"{id}\",kind=\"{kind}\"}} {n}"
                );
            }
            let _ = writeln!(
                o,
                "# HELP pbft_transport_events_total Connections refused and frames dropped by the transport, by source and reason.\n# TYPE pbft_transport_events_total counter"
            );
            for ((source, reason), n) in &m.transport {
                let _ = writeln!(
                    o,
                    "pbft_transport_events_total{{validator=\"{id}\",source=\"{source}\",reason=\"{reason}\"}} {n}"
                );
            }
            o
        })
    }
}

/// Binds the metrics endpoint (so a port in use is reported before the node starts).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves `metrics` on `listener` until the task is dropped. Each connection gets
/// one response and is closed.
pub async fn serve(listener: TcpListener, metrics: Metrics) {
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            // read the request head (bounded); the path decides 200 or 404
            let mut buf = vec![0u8; 4096];
            let mut len = 0;
            while len < buf.len() {
                match sock.read(&mut buf[len..]).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => len += n,
                }
                if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            let head = String::from_utf8_lossy(&buf[..len]);
            let path = head.split_whitespace().nth(1).unwrap_or("/");
            let (status, body) = if path == "/" || path.starts_with("/metrics") {
                ("200 OK", metrics.render())
            } else {
                ("404 Not Found", "not found; try /metrics\n".to_string())
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
            let _ = sock.shutdown().await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_required_series() {
        let m = Metrics::new(2);
        m.set_progress(3, 40, 32);
        m.executed_batch(10);
        m.executed_batch(300);
        m.phase("prepare", 0.003);
        m.rejected("bad_signature");
        m.received("commit");
        m.received("commit");
        m.set_connected_peers(3);
        let mut stats = pbft_transport::TransportStats::default();
        stats.connected.extend([0, 1, 3]);
        stats.rejections.insert(
            (
                pbft_transport::Source::Unknown,
                pbft_transport::reason::UNPINNED_KEY,
            ),
            4,
        );
        m.set_transport(&stats);
        m.set_ledger_memory(4096, 8192, 1024);
        let text = m.render();
        for line in [
            "pbft_view{validator=\"2\"} 3",
            "pbft_last_executed{validator=\"2\"} 40",
            "pbft_stable_checkpoint{validator=\"2\"} 32",
            "pbft_committed_requests_total{validator=\"2\"} 310",
            "pbft_batches_total{validator=\"2\"} 2",
            "pbft_view_changes_total{validator=\"2\"} 1",
            "pbft_connected_peers{validator=\"2\"} 3",
            "pbft_ledger_block_cache_bytes{validator=\"2\"} 4096",
            "pbft_ledger_memtable_bytes{validator=\"2\"} 8192",
            "pbft_ledger_state_cache_bytes{validator=\"2\"} 1024",
            "pbft_batch_size_bucket{validator=\"2\",le=\"16\"} 1",
            "pbft_batch_size_bucket{validator=\"2\",le=\"+Inf\"} 2",
            "pbft_phase_seconds_count{validator=\"2\",phase=\"prepare\"} 1",
            "pbft_messages_rejected_total{validator=\"2\",reason=\"bad_signature\"} 1",
            "pbft_messages_received_total{validator=\"2\",kind=\"commit\"} 2",
            "pbft_transport_events_total{validator=\"2\",source=\"unknown\",reason=\"unpinned_key\"} 4",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }
}
