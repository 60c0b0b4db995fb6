//! Starting a validator: which validator the key is, and its host on its storage (the
//! RocksDB ledger in `DATA/ledger`, the consensus log in `DATA/wal`), restored from
//! what it persisted before a restart.

use crate::core::NodeHost;
use crate::metrics::Metrics;
use crate::timed::Timed;
use crate::{NodeError, NodeOptions};
use pbft_executor::{ConsensusLog, RocksExecutor, RocksOptions};
use pbft_host::{Faults, Host, HostError, HostOptions};
use pbft_protocol::Config;
use std::path::PathBuf;
use std::time::Instant;

/// The validator's id (its key matched in the cluster file) and the protocol
/// configuration, checked.
pub fn identify(opts: &NodeOptions) -> Result<(u32, Config), NodeError> {
    let cluster = &opts.cluster;
    let me = opts.key.public();
    let id = cluster
        .validator_with_key(&me)
        .map(|v| v.id)
        .ok_or_else(|| NodeError::NotAValidator {
            key: me.to_hex(),
            cluster: cluster.path.clone(),
        })?;
    let cfg = cluster.protocol_config();
    cfg.validate().map_err(|error| NodeError::Config {
        error,
        path: cluster.path.clone(),
    })?;
    Ok((id, cfg))
}

/// Opens the ledger and the consensus log of validator `id` and restores its host.
/// `start` is the epoch of the protocol's clock.
pub fn open<F: Faults>(
    opts: &NodeOptions,
    id: u32,
    cfg: Config,
    faults: F,
    metrics: Metrics,
    start: Instant,
) -> Result<NodeHost<F>, NodeError> {
    let storage = |dir: &PathBuf| {
        let dir = dir.clone();
        move |source| NodeError::Storage { dir, source }
    };
    let ledger_dir = opts.data.join("ledger");
    let wal_dir = opts.data.join("wal");
    let ledger = RocksExecutor::open(
        &ledger_dir,
        &opts.cluster.genesis(),
        RocksOptions {
            sync: opts.sync,
            ..RocksOptions::default()
        },
    )
    .map_err(storage(&ledger_dir))?;
    let log = ConsensusLog::open(&wal_dir, opts.sync).map_err(storage(&wal_dir))?;
    let now = pbft_protocol::Instant(start.elapsed().as_micros() as u64);
    let host_opts = HostOptions {
        genesis: opts.genesis,
        // fresh at every start, so that an answer to an earlier recovery never counts
        recovery_nonce: rand::random(),
        ..HostOptions::default()
    };
    Host::open(
        cfg,
        id,
        opts.key.clone(),
        Timed::new(ledger, metrics),
        log,
        faults,
        host_opts,
        now,
    )
    .map_err(|e| match e {
        e @ HostError::LostLog { .. } => NodeError::LostLog {
            dir: wal_dir,
            source: e,
        },
        HostError::Storage(source) => NodeError::Storage {
            dir: opts.data.clone(),
            source,
        },
        HostError::CorruptLog { index, reason } => NodeError::CorruptLog {
            dir: wal_dir,
            index,
            reason,
        },
        HostError::Config(error) => NodeError::Config {
            error,
            path: opts.cluster.path.clone(),
        },
    })
}
