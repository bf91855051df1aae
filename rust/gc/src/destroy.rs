//! File destruction: every transient file past its deadline loses its blocks (erased on
//! their block services, proofs handed to the shard) and then its metadata.

use crate::{for_each, for_each_shard, GcOptions};
use eggs_client::Client;
use eggs_protocol::blocks::EraseBlockReq;
use eggs_protocol::shard::*;
use eggs_protocol::{EggsError, EggsTime, InodeId, ShardId, MAX_UDP_MTU};
use std::sync::Arc;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DestroyStats {
    /// Transient files seen.
    pub transient_files: u64,
    /// Transient files whose deadline has not passed (writes in progress, mostly).
    pub not_expired: u64,
    pub destroyed_files: u64,
    pub erased_blocks: u64,
    pub removed_spans: u64,
    pub errors: u64,
}

impl std::ops::AddAssign for DestroyStats {
    fn add_assign(&mut self, o: DestroyStats) {
        self.transient_files += o.transient_files;
        self.not_expired += o.not_expired;
        self.destroyed_files += o.destroyed_files;
        self.erased_blocks += o.erased_blocks;
        self.removed_spans += o.removed_spans;
        self.errors += o.errors;
    }
}

impl std::fmt::Display for DestroyStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "transient_files={} not_expired={} destroyed_files={} removed_spans={} erased_blocks={} errors={}",
            self.transient_files,
            self.not_expired,
            self.destroyed_files,
            self.removed_spans,
            self.erased_blocks,
            self.errors
        )
    }
}

/// One pass over the transient files of every shard.
pub async fn destroy_pass(client: &Arc<Client>, opts: &GcOptions) -> DestroyStats {
    let per_file = opts.item_parallelism;
    for_each_shard(opts.shard_parallelism, |shard| {
        let client = client.clone();
        async move { destroy_shard(&client, shard, per_file).await }
    })
    .await
}

async fn destroy_shard(client: &Arc<Client>, shard: ShardId, parallel: usize) -> DestroyStats {
    let mut s = DestroyStats::default();
    let mut start = InodeId::NULL;
    loop {
        let req = VisitTransientFilesReq {
            start_id: start,
            mtu: MAX_UDP_MTU,
        };
        let page = match client.shard_request(shard, req).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!("visiting the transient files of shard {shard}: {e}");
                s.errors += 1;
                return s;
            }
        };
        // The shard's clock decides; ours only avoids asking about files clearly not due.
        let now = EggsTime::now();
        s.transient_files += page.files.len() as u64;
        let due: Vec<InodeId> = page
            .files
            .iter()
            .filter(|f| f.deadline <= now)
            .map(|f| f.id)
            .collect();
        s.not_expired += (page.files.len() - due.len()) as u64;
        s += for_each(parallel, due, |file| {
            let client = client.clone();
            async move { destroy_file(&client, file).await }
        })
        .await;
        match page.next_id {
            Some(n) => start = n,
            None => return s,
        }
    }
}

/// Destroys one transient file: span by span, blocks erased first, then the file.
pub async fn destroy_file(client: &Arc<Client>, file: InodeId) -> DestroyStats {
    let mut s = DestroyStats::default();
    let shard = file.shard();
    loop {
        let prep = match client
            .shard_request(shard, PrepareSpanErasureReq { file_id: file })
            .await
        {
            Ok(p) => p,
            Err(e) => return failed(s, file, e),
        };
        let Some(byte_offset) = prep.byte_offset else {
            break;
        };
        let (proofs, erased) = erase_blocks(client, &prep.blocks).await;
        s.erased_blocks += erased;
        let req = RemoveErasedSpanReq {
            file_id: file,
            byte_offset,
            proofs,
        };
        if let Err(e) = client.shard_request(shard, req).await {
            return failed(s, file, e);
        }
        s.removed_spans += 1;
        // Most files have one span: try to finish now rather than ask for the next span.
        let done = client
            .shard_request(shard, RemoveTransientFileReq { file_id: file })
            .await;
        match done {
            Ok(_) => {
                s.destroyed_files += 1;
                return s;
            }
            Err(e) if e.eggs() == Some(EggsError::FileHasSpans) => {}
            Err(e) => return failed(s, file, e),
        }
    }
    match client
        .shard_request(shard, RemoveTransientFileReq { file_id: file })
        .await
    {
        Ok(_) => s.destroyed_files += 1,
        Err(e) => return failed(s, file, e),
    }
    s
}

fn failed(mut s: DestroyStats, file: InodeId, e: eggs_client::ClientError) -> DestroyStats {
    if e.eggs() == Some(EggsError::NotExpiredYet) {
        // Extended meanwhile by its writer: not abandoned after all.
        s.not_expired += 1;
    } else {
        tracing::warn!("destroying transient file {file}: {e}");
        s.errors += 1;
    }
    s
}

/// Erases every block in parallel; returns one proof per block (zeros where the erasure
/// failed: the shard accepts that only for decommissioned services) and how many succeeded.
async fn erase_blocks(client: &Arc<Client>, blocks: &[BlockWriteTarget]) -> (Vec<[u8; 8]>, u64) {
    let mut set = tokio::task::JoinSet::new();
    for (i, b) in blocks.iter().enumerate() {
        let client = client.clone();
        let b = b.clone();
        set.spawn(async move {
            let req = EraseBlockReq {
                block_service_id: b.block_service_id,
                block_id: b.block_id,
                certificate: b.certificate,
            };
            let r = client
                .block_pool()
                .erase_block(b.addr.to_socket_addr(), &req)
                .await;
            (i, b, r)
        });
    }
    let mut proofs = vec![[0u8; 8]; blocks.len()];
    let mut erased = 0;
    while let Some(r) = set.join_next().await {
        match r {
            Ok((i, _, Ok(proof))) => {
                proofs[i] = proof;
                erased += 1;
            }
            Ok((_, b, Err(e))) => tracing::info!(
                "erasing block {} on block service {}: {e}",
                b.block_id.0,
                b.block_service_id.0
            ),
            Err(e) => tracing::error!("erase task failed: {e}"),
        }
    }
    (proofs, erased)
}
