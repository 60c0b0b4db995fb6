//! The validator's threads and their orderly stop: the bridge from the transport's
//! inbound queue to the verification workers, the workers, the consensus thread that
//! runs the host, and the memory trimmer.
//!
//! ```text
//! transport inbound --bridge--> workers (decode, verify) --inputs--> consensus thread
//! ```
//!
//! Validators' frames and clients' frames travel apart all the way (two bridges, two
//! work queues, two input queues), and the workers and the consensus thread take
//! validators' first: a flood of client traffic, which anyone can send, never queues
//! in front of consensus messages.
//!
//! [`Threads::stop`] ends them in the order that loses nothing: the consensus thread
//! finishes its current step and hands the host back; the workers and the bridge end
//! when their channels close; the trimmer at its next wake-up.

use crate::core::{Core, NodeHost};
use crate::metrics::Metrics;
use crate::stage::{Input, SigCache, Stage};
use crate::{NodeError, SIG_CACHE_CAPACITY};
use pbft_host::Faults;
use pbft_protocol::envelope::Limits;
use pbft_protocol::Verifier;
use pbft_transport::{Inbound, Inbounds, Transport};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

/// Frames and verified inputs each queue holds before its producer waits.
const QUEUE: usize = 8192;

/// The running threads of one validator.
pub struct Threads<F: Faults> {
    /// Feeds the consensus thread; `Stop` ends it.
    input: crossbeam_channel::Sender<Input>,
    consensus: JoinHandle<Core<F>>,
    workers: Vec<JoinHandle<()>>,
    bridges: Vec<JoinHandle<()>>,
    /// Dropping it ends the trimmer.
    trim_stop: crossbeam_channel::Sender<()>,
    trimmer: JoinHandle<()>,
}

/// What the threads need from the node.
pub struct Wiring<F: Faults> {
    /// This validator's id (thread names).
    pub id: u32,
    /// The restored host.
    pub host: NodeHost<F>,
    /// The running transport.
    pub transport: Transport,
    /// The transport's inbound frames, validators' and clients' apart.
    pub inbound: Inbounds,
    /// Verifies signatures, and refuses requests from keys that are not the
    /// cluster's clients.
    pub verifier: Verifier,
    /// Verification worker threads (at least one runs).
    pub workers: usize,
    /// The node's metrics.
    pub metrics: Metrics,
    /// The epoch of the protocol's clock.
    pub start: Instant,
    /// Queries answered per second on one client connection.
    pub queries_per_sec: u32,
}

impl<F: Faults + Send + 'static> Threads<F> {
    /// Starts every thread of the validator.
    pub fn spawn(w: Wiring<F>) -> Result<Threads<F>, NodeError> {
        let Wiring {
            id,
            host,
            transport,
            inbound,
            verifier,
            workers,
            metrics,
            start,
            queries_per_sec,
        } = w;
        let (peer_work_tx, peer_work_rx) = crossbeam_channel::bounded(QUEUE);
        let (client_work_tx, client_work_rx) = crossbeam_channel::bounded(QUEUE);
        let (in_tx, in_rx) = crossbeam_channel::bounded::<Input>(QUEUE);
        let (client_in_tx, client_in_rx) = crossbeam_channel::bounded::<Input>(QUEUE);
        let Inbounds { peers, clients } = inbound;
        let bridges = vec![
            spawn(format!("pbft-{id}-inbound"), move || {
                bridge(peers, peer_work_tx)
            })?,
            spawn(format!("pbft-{id}-clients"), move || {
                bridge(clients, client_work_tx)
            })?,
        ];
        let stage = Stage {
            verifier: Arc::new(verifier),
            // 65,536 signatures: several seconds of traffic at the highest rates
            // measured, longer than a request waits for its pre-prepare; an evicted
            // signature is only checked again (decision 0037)
            cache: Arc::new(SigCache::new(SIG_CACHE_CAPACITY)),
            limits: Limits::default(),
            transport: transport.clone(),
            metrics: metrics.clone(),
            out: in_tx.clone(),
            client_out: client_in_tx,
        };
        let mut handles = Vec::new();
        for w in 0..workers.max(1) {
            let (stage, peers, clients) =
                (stage.clone(), peer_work_rx.clone(), client_work_rx.clone());
            handles.push(spawn(format!("pbft-{id}-verify-{w}"), move || {
                stage.run(peers, clients)
            })?);
        }
        drop(stage);
        drop(peer_work_rx);
        drop(client_work_rx);

        let (trim_stop, trim_rx) = crossbeam_channel::bounded::<()>(0);
        let trimmer = spawn(format!("pbft-{id}-trim"), move || {
            release_free_memory(trim_rx)
        })?;
        let core = Core::new(host, transport, metrics, start, queries_per_sec);
        let consensus = spawn(format!("pbft-{id}-consensus"), move || {
            core.run(in_rx, client_in_rx)
        })?;
        Ok(Threads {
            input: in_tx,
            consensus,
            workers: handles,
            bridges,
            trim_stop,
            trimmer,
        })
    }

    /// Stops the consensus thread after its current step and returns its host; the
    /// other threads end on their own once their channels close (none is joined:
    /// the caller may be a tokio worker, and joining the trimmer could hold it for
    /// one trim).
    pub async fn stop(self) -> Result<NodeHost<F>, NodeError> {
        let Threads {
            input,
            consensus,
            workers,
            bridges,
            trim_stop,
            trimmer,
        } = self;
        let _ = input.send(Input::Stop);
        drop(input);
        let core = tokio::task::spawn_blocking(move || consensus.join())
            .await
            .map_err(|e| NodeError::Internal(e.to_string()))?
            .map_err(|_| NodeError::Internal("the consensus thread panicked".into()))?;
        drop(workers);
        drop(bridges);
        drop(trim_stop);
        drop(trimmer);
        Ok(core.into_host())
    }
}

/// Moves frames from a transport channel to a work queue until either closes.
fn bridge(mut from: tokio::sync::mpsc::Receiver<Inbound>, to: crossbeam_channel::Sender<Inbound>) {
    while let Some(frame) = from.blocking_recv() {
        if to.send(frame).is_err() {
            break;
        }
    }
}

fn spawn<T: Send + 'static>(
    name: String,
    body: impl FnOnce() -> T + Send + 'static,
) -> Result<JoinHandle<T>, NodeError> {
    std::thread::Builder::new()
        .name(name)
        .spawn(body)
        .map_err(|e| NodeError::Internal(format!("starting a thread: {e}")))
}

/// How often [`release_free_memory`] hands free memory back to the system.
pub const TRIM_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

/// Hands memory the allocator holds but nobody uses back to the system, every
/// [`TRIM_INTERVAL`], until `stop` disconnects. glibc keeps what a thread frees in that
/// thread's arena, and RocksDB frees megabytes at a time (memtables after a flush,
/// evicted cache blocks), so without this a validator's resident size creeps up for
/// minutes under steady load while its heap stays flat (decision 0040). A call takes
/// 1-20 ms under load (median about 2 ms), so it runs on its own
/// thread rather than on the consensus thread; glibc locks each arena while trimming
/// it, so a thread allocating from that arena at that moment still waits.
fn release_free_memory(stop: crossbeam_channel::Receiver<()>) {
    while let Err(crossbeam_channel::RecvTimeoutError::Timeout) = stop.recv_timeout(TRIM_INTERVAL) {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        {
            // SAFETY: malloc_trim only returns free pages of the allocator's own heaps.
            unsafe { libc::malloc_trim(0) };
        }
    }
}
