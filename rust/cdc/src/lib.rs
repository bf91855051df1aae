//! The cross-directory coordinator (CDC).
//!
//! Operations that touch two directories (mkdir, cross-directory renames, rmdir) cannot be
//! done by one metadata shard, so clients send them to the CDC, which runs each one as a
//! durable transaction of idempotent steps on the shards involved (see [`txn`] for the steps
//! and their rollbacks).
//!
//! [`CdcCore`] holds all the logic and does no I/O, so that it can run under a
//! deterministic simulator; [`Cdc`] drives it with tokio, UDP, RocksDB ([`store`]) and the
//! shard client.
//!
//! # Concurrency
//!
//! Each transaction takes exclusive locks on the directories it touches (plus one global lock
//! for directory renames, so that loop checks never race) before its first step, queueing
//! FIFO per lock ([`locks`]). Disjoint transactions run concurrently; at most
//! [`CoreConfig::max_txns`] run or wait, and requests beyond that are dropped unanswered
//! (clients retry).
//!
//! # Records and durability
//!
//! One [`record::TxnRecord`] per transaction: its id (arrival order), the client's request
//! header, the request, and either its progress (the step to send next, the directory id a
//! MakeDirectory chose, the new edge's creation time, the error being rolled back) or its
//! final result. The key layout is in [`store`].
//!
//! - A new transaction's record is written with a synced write before its first step is sent
//!   (queued transactions are recorded as they arrive, too).
//! - Its result is written with a synced write before the client gets it.
//! - Progress is written without sync, except the write that leaves the fallible part (the
//!   commit point, or the start of a rollback): before it, resending any earlier step is
//!   harmless; after it, it would not be (locking an edge that was already moved away), so that
//!   write must not be lost even if the machine loses power.
//! - Everything written while handling one burst of events goes in one batch with one sync;
//!   bursts handled while an earlier one was being synced are written together.
//!
//! Retries carry the same `(client id, request id)` header: they join the running
//! transaction or get the stored result. Finished records are deleted after
//! [`CoreConfig::finished_ttl_ns`] (10 minutes).
//!
//! # Recovery
//!
//! At start every record is loaded; unfinished transactions queue for their locks again in id
//! order (reproducing the queues they were in) and those that get them resend their recorded
//! step. Shard steps are idempotent, so resending a step that already took effect is safe. The
//! client addresses waiting for a reply are not persisted: clients retry and get the result.

pub mod cdc_core;
mod driver;
pub mod locks;
pub mod record;
pub mod store;
pub mod txn;

pub use cdc_core::{Admission, CdcCore, CoreConfig, Output, ShardSend, StepReply};
pub use driver::Cdc;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Where the CDC keeps its state, listens, and finds shuckle.
#[derive(Clone, Debug)]
pub struct CdcConfig {
    /// RocksDB directory (created if missing).
    pub dir: PathBuf,
    /// UDP address for client requests; IPv4 only, since shuckle stores IPv4 addresses.
    pub bind: SocketAddr,
    pub shuckle: SocketAddr,
}

#[derive(Debug, thiserror::Error)]
pub enum CdcError {
    #[error("RocksDB: {0}")]
    Db(#[from] rocksdb::Error),
    #[error("corrupt value at key {key}: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Format(#[from] eggs_common::format_version::FormatError),
    #[error("bad configuration: {0}")]
    Config(String),
    #[error("background task failed: {0}")]
    Task(String),
}

/// Opens the state in `cfg.dir`, binds `cfg.bind` and serves until `shutdown` resolves.
pub async fn run(cfg: CdcConfig, shutdown: impl Future<Output = ()>) -> Result<(), CdcError> {
    Cdc::bind(cfg).await?.run(shutdown).await
}
