//! Task bookkeeping and endpoint shutdown shared by both transports.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::task::JoinSet;

/// The tasks of one transport. Once taken at shutdown, nothing new starts.
pub(crate) struct Tasks {
    set: Mutex<Option<JoinSet<()>>>,
}

impl Tasks {
    pub(crate) fn new() -> Tasks {
        Tasks {
            set: Mutex::new(Some(JoinSet::new())),
        }
    }

    /// Spawns `fut` unless the transport is shutting down. Must be called
    /// from within the tokio runtime.
    pub(crate) fn spawn<F>(&self, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let mut guard = self.set.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(set) = guard.as_mut() {
            // Reap finished tasks so the set does not grow with every
            // connection ever accepted.
            while set.try_join_next().is_some() {}
            set.spawn(fut);
        }
    }

    /// Takes the set: no task starts after this.
    pub(crate) fn take(&self) -> Option<JoinSet<()>> {
        self.set
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

/// Aborts `tasks` and waits until they have all stopped.
pub(crate) async fn stop(tasks: Option<JoinSet<()>>) {
    if let Some(mut set) = tasks {
        set.abort_all();
        while set.join_next().await.is_some() {}
    }
}

/// Lets the endpoint's connections finish closing, drops it, and waits
/// (bounded) until its UDP port is free again, so that a new transport can
/// bind the same address right after `shutdown` returns.
///
/// Connections drain for three probe timeouts after the close: a few round
/// trips for established ones, about a second for dials that never
/// completed (see `INITIAL_RTT` in `tls.rs`). quinn's driver keeps the socket
/// until then.
pub(crate) async fn finish_endpoint(endpoint: quinn::Endpoint, addr: SocketAddr) {
    let _ = tokio::time::timeout(Duration::from_secs(3), endpoint.wait_idle()).await;
    drop(endpoint);
    // The driver task owns the socket and lets go of it once it notices the
    // last handle is gone; probe until the port can be bound again.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        if std::net::UdpSocket::bind(addr).is_ok() {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(%addr, "the UDP port was not released within 5 s of shutdown");
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
