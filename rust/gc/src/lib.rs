//! eggsgc: garbage collection for EggsFS.
//!
//! Loops, each a pass over all 256 shards (several shards at once), run independently by the
//! daemon ([`daemon`]) at their own intervals:
//!
//! - [`collect`]: directory collection. Visits every directory, resolves its effective
//!   snapshot policy, and asks its shard to expire the snapshot edges past it
//!   (`CollectDirectory`); completes file releases across shards; deletes removed
//!   directories with no edges left once their policy's age has passed.
//! - [`destroy`]: file destruction. Every transient file past its deadline (released files,
//!   abandoned writes) has each block erased on its block service, with the shard's erase
//!   certificate, and the proofs handed back before its metadata goes.
//!
//! The GC keeps no state of its own: every decision is taken by a shard request on the
//! shard's data and clock, every request is idempotent, so passes can be interrupted at any
//! point (kill -9) and rerun, and two GC processes can run at once.

pub mod collect;
pub mod daemon;
pub mod destroy;
mod error;
pub mod migrate;
pub mod scrub;

pub use error::GcError;

use eggs_client::Client;
use eggs_protocol::ShardId;
use std::future::Future;
use std::sync::Arc;

/// How much a pass does at once.
#[derive(Clone, Debug)]
pub struct GcOptions {
    /// Shards worked on at the same time.
    pub shard_parallelism: usize,
    /// Files (or directories) of one shard worked on at the same time.
    pub item_parallelism: usize,
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions {
            shard_parallelism: 16,
            item_parallelism: 32,
        }
    }
}

/// What one pass of both loops did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PassReport {
    pub collect: collect::CollectStats,
    pub destroy: destroy::DestroyStats,
}

/// One pass of directory collection then one of file destruction, so that what the
/// collection releases is destroyed at once (tests, `eggsgc --once`, the benchmark).
pub async fn run_once(client: &Arc<Client>, opts: &GcOptions) -> PassReport {
    let collect = collect::collect_pass(client, opts).await;
    let destroy = destroy::destroy_pass(client, opts).await;
    PassReport { collect, destroy }
}

/// Runs `f` on every shard, at most `parallel` at once, and merges the results.
pub(crate) async fn for_each_shard<T, F, Fut>(parallel: usize, f: F) -> T
where
    T: Default + Send + 'static + std::ops::AddAssign,
    F: Fn(ShardId) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
{
    for_each(parallel, (0..=255u8).map(ShardId), f).await
}

/// Runs `f` on every item, at most `parallel` at once, and merges the results.
pub(crate) async fn for_each<I, T, F, Fut>(
    parallel: usize,
    items: impl IntoIterator<Item = I>,
    f: F,
) -> T
where
    T: Default + Send + 'static + std::ops::AddAssign,
    F: Fn(I) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
{
    let mut set = tokio::task::JoinSet::new();
    let mut total = T::default();
    for item in items {
        while set.len() >= parallel.max(1) {
            if let Some(r) = set.join_next().await {
                merge(&mut total, r);
            }
        }
        set.spawn(f(item));
    }
    while let Some(r) = set.join_next().await {
        merge(&mut total, r);
    }
    total
}

fn merge<T: std::ops::AddAssign>(total: &mut T, r: Result<T, tokio::task::JoinError>) {
    match r {
        Ok(t) => *total += t,
        Err(e) => tracing::error!("GC task failed: {e}"),
    }
}
