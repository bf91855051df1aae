//! Migration: every block on a block service (flagged decommissioned, or declared dead) is
//! moved to another service, copied if it still reads back intact and rebuilt from the rest
//! of its span otherwise, until the shards' index (`BlockServiceFiles`) lists no file for the
//! service any more. After that the service holds nothing anybody refers to: its directory
//! can be wiped and the service forgotten.
//!
//! Like scrubbing, migration keeps no state of its own: it re-reads the shards' index on
//! every pass, so it can be killed at any point and run again, and two migrations of the
//! same service at once each move some blocks and agree on the result (the shard's
//! replacement records decide which copy wins).

use eggs_client::repair::Moved;
use eggs_client::{Client, ClientError, SpanPager};
use eggs_protocol::shard::{BlockServiceFilesReq, FetchedSpan, SpanBody};
use eggs_protocol::shuckle::{flags, BlockServicesReq};
use eggs_protocol::{BlockServiceId, EggsError, InodeId, ShardId, MAX_UDP_MTU};
use std::sync::Arc;
use tokio::task::JoinSet;

/// Passes over the index before giving up on blocks that will not move (their spans are not
/// certified yet, or no service can take them).
const MAX_PASSES: u32 = 5;
/// Blocks moved at once.
const PARALLEL_MOVES: usize = 4;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MigrateStats {
    pub passes: u32,
    /// Files found holding blocks on the service (counted once per pass).
    pub files: u64,
    pub blocks_moved: u64,
    /// Of the moved blocks, how many were rebuilt from parity (the old one was unreadable).
    pub blocks_rebuilt: u64,
    /// Blocks another migration or a scrub had moved already.
    pub already_moved: u64,
    pub failed: u64,
    /// Old blocks that could not be erased (a dead service): they stay on its disk.
    pub leftovers: u64,
    /// Files still listed for the service when migration stopped: 0 when it is empty.
    pub remaining_files: u64,
}

/// Moves every block off `service`, pass after pass, until the index is empty or a pass
/// moves nothing. `progress` is called after every file.
pub async fn migrate_block_service(
    client: &Arc<Client>,
    service: BlockServiceId,
    progress: &mut (dyn FnMut(&MigrateStats) + Send),
) -> Result<MigrateStats, ClientError> {
    // A service that must not be read, or that shuckle has not heard from, is not asked for
    // its blocks: they are rebuilt from their spans straight away.
    let services = client
        .shuckle()
        .request(BlockServicesReq {})
        .await?
        .services;
    let read_old = services
        .iter()
        .find(|s| s.id == service)
        .is_some_and(|s| s.flags & (flags::NO_READ | flags::STALE) == 0);
    let mut stats = MigrateStats::default();
    loop {
        stats.passes += 1;
        let moved_before = stats.blocks_moved + stats.already_moved;
        let found = pass(client, service, read_old, &mut stats, progress).await?;
        if found == 0 {
            stats.remaining_files = 0;
            return Ok(stats);
        }
        let progressed = stats.blocks_moved + stats.already_moved > moved_before;
        if !progressed || stats.passes >= MAX_PASSES {
            stats.remaining_files = count_files(client, service).await?;
            return Ok(stats);
        }
    }
}

/// Migrates every service flagged decommissioned (the daemon's loop): returns what each
/// migration did. Services already empty cost one listing pass each.
pub async fn migrate_decommissioned(
    client: &Arc<Client>,
) -> Result<Vec<(BlockServiceId, MigrateStats)>, ClientError> {
    let services = client
        .shuckle()
        .request(BlockServicesReq {})
        .await?
        .services;
    let mut out = Vec::new();
    for s in services
        .iter()
        .filter(|s| s.flags & flags::DECOMMISSIONED != 0)
    {
        let stats = migrate_block_service(client, s.id, &mut |_| {}).await?;
        out.push((s.id, stats));
    }
    Ok(out)
}

/// Files with blocks on `service`, over all shards.
pub async fn count_files(client: &Client, service: BlockServiceId) -> Result<u64, ClientError> {
    let mut n = 0;
    for shard in ShardId::all() {
        n += files_on(client, shard, service).await?.len() as u64;
    }
    Ok(n)
}

/// Every file of `shard` with blocks on `service`, all pages.
async fn files_on(
    client: &Client,
    shard: ShardId,
    service: BlockServiceId,
) -> Result<Vec<InodeId>, ClientError> {
    let mut out = Vec::new();
    let mut start = InodeId(0);
    loop {
        let req = BlockServiceFilesReq {
            block_service_id: service,
            start_file_id: start,
            mtu: MAX_UDP_MTU,
        };
        let page = client.shard_request(shard, req).await?;
        out.extend(page.file_ids);
        match page.next_file_id {
            Some(n) => start = n,
            None => return Ok(out),
        }
    }
}

/// One pass over the index; returns how many files it listed.
async fn pass(
    client: &Arc<Client>,
    service: BlockServiceId,
    read_old: bool,
    stats: &mut MigrateStats,
    progress: &mut (dyn FnMut(&MigrateStats) + Send),
) -> Result<u64, ClientError> {
    let mut found = 0;
    let mut tasks: JoinSet<Result<Moved, ClientError>> = JoinSet::new();
    for shard in ShardId::all() {
        let files = files_on(client, shard, service).await?;
        for file in files {
            found += 1;
            stats.files += 1;
            for (span, index) in blocks_of(client, file, service).await? {
                while tasks.len() >= PARALLEL_MOVES {
                    join_one(&mut tasks, stats).await;
                }
                let client = client.clone();
                tasks.spawn(async move { client.move_block(file, &span, index, read_old).await });
            }
            progress(stats);
        }
    }
    while !tasks.is_empty() {
        join_one(&mut tasks, stats).await;
    }
    progress(stats);
    Ok(found)
}

async fn join_one(tasks: &mut JoinSet<Result<Moved, ClientError>>, stats: &mut MigrateStats) {
    match tasks.join_next().await {
        Some(Ok(Ok(Moved::To {
            rebuilt,
            erase_failed,
            ..
        }))) => {
            stats.blocks_moved += 1;
            stats.blocks_rebuilt += rebuilt as u64;
            stats.leftovers += erase_failed as u64;
        }
        Some(Ok(Ok(Moved::AlreadyDone))) => stats.already_moved += 1,
        Some(Ok(Err(e))) => {
            tracing::warn!("migration: {e}");
            stats.failed += 1;
        }
        Some(Err(e)) => {
            tracing::error!("migration task failed: {e}");
            stats.failed += 1;
        }
        None => {}
    }
}

/// The spans of `file` with a block on `service`, with that block's index.
async fn blocks_of(
    client: &Client,
    file: InodeId,
    service: BlockServiceId,
) -> Result<Vec<(FetchedSpan, usize)>, ClientError> {
    let mut out = Vec::new();
    let mut pager = SpanPager::new(file, 0);
    loop {
        let span = match pager.next(client).await {
            Ok(Some(span)) => span,
            Ok(None) => return Ok(out),
            // Destroyed meanwhile: nothing left to move.
            Err(e) if e.eggs() == Some(EggsError::FileNotFound) => return Ok(out),
            Err(e) => return Err(e),
        };
        let SpanBody::Blocks(b) = &span.body else {
            continue;
        };
        let hits: Vec<usize> = (0..b.blocks.len())
            .filter(|&i| b.blocks[i].block_service_id == service)
            .collect();
        for i in hits {
            out.push((span.clone(), i));
        }
    }
}
