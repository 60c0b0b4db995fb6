//! The ledger as the node runs it: every call goes to the RocksDB executor, and the
//! two that take real time, applying a batch and taking a checkpoint, are timed into
//! the metrics (the host reads no clock, so the node measures around it).

use crate::metrics::Metrics;
use pbft_crypto::{Digest, PublicKey};
use pbft_executor::{
    Applied, Block, ClientWindow, ExecError, ExecRequest, Executor, Head, SnapshotSource,
    StoredReceipt,
};
use std::time::Instant;

/// An executor whose batch application and checkpoints are timed.
pub struct Timed<E> {
    inner: E,
    metrics: Metrics,
}

impl<E> Timed<E> {
    /// Wraps `inner`.
    pub fn new(inner: E, metrics: Metrics) -> Timed<E> {
        Timed { inner, metrics }
    }

    /// The executor itself (for its memory figures).
    pub fn inner(&self) -> &E {
        &self.inner
    }
}

impl<E: Executor> Executor for Timed<E> {
    fn apply(
        &mut self,
        seq: u64,
        batch_digest: Digest,
        requests: &[ExecRequest<'_>],
    ) -> Result<Applied, ExecError> {
        let started = Instant::now();
        let r = self.inner.apply(seq, batch_digest, requests);
        if r.is_ok() {
            self.metrics
                .phase("execute", started.elapsed().as_secs_f64());
        }
        r
    }
    fn head(&self) -> Head {
        self.inner.head()
    }
    fn checkpoint(&mut self) -> Result<Digest, ExecError> {
        let started = Instant::now();
        let r = self.inner.checkpoint();
        if r.is_ok() {
            self.metrics
                .phase("checkpoint", started.elapsed().as_secs_f64());
        }
        r
    }
    fn stable(&mut self, seq: u64) -> Result<(), ExecError> {
        self.inner.stable(seq)
    }
    fn stable_seq(&self) -> u64 {
        self.inner.stable_seq()
    }
    fn rollback(&mut self) -> Result<u64, ExecError> {
        self.inner.rollback()
    }
    fn export_source(
        &self,
        seq: u64,
        max_chunk: usize,
    ) -> Result<Box<dyn SnapshotSource>, ExecError> {
        self.inner.export_source(seq, max_chunk)
    }
    fn import_begin(&mut self, seq: u64) -> Result<(), ExecError> {
        self.inner.import_begin(seq)
    }
    fn import_chunk(&mut self, seq: u64, chunk: &[u8]) -> Result<(), ExecError> {
        self.inner.import_chunk(seq, chunk)
    }
    fn import_finish(&mut self, seq: u64) -> Result<Digest, ExecError> {
        self.inner.import_finish(seq)
    }
    fn import_commit(&mut self, seq: u64, expected: Digest) -> Result<Head, ExecError> {
        self.inner.import_commit(seq, expected)
    }
    fn import_abort(&mut self) {
        self.inner.import_abort()
    }
    fn import_held_bytes(&self) -> usize {
        self.inner.import_held_bytes()
    }
    fn balance(&self, account: &PublicKey) -> Result<Option<u64>, ExecError> {
        self.inner.balance(account)
    }
    fn client_window(&self, client: &PublicKey) -> Result<ClientWindow, ExecError> {
        self.inner.client_window(client)
    }
    fn receipt(
        &self,
        client: &PublicKey,
        request_id: u64,
    ) -> Result<Option<StoredReceipt>, ExecError> {
        self.inner.receipt(client, request_id)
    }
    fn block(&self, height: u64) -> Result<Option<Block>, ExecError> {
        self.inner.block(height)
    }
}
