//! Maintenance of blocks already written, for the scrubber and migration: checking a span's
//! blocks on their services, and moving one block of a span to another service, rebuilt from
//! the rest of the span when it cannot be read.
//!
//! Moving a block is: `ReplaceBlockInitiate` (the shard picks a service in a failure domain
//! the span does not use and records the pending replacement), write the block there,
//! `ReplaceBlockCertify` with the service's proof (the shard swaps the block in the span),
//! then erase the old block and any copy of an abandoned attempt, best-effort. Every step can
//! be interrupted and re-run: the shard's records decide, not the caller's memory.

use crate::blocks::BlockPool;
use crate::client::Client;
use crate::error::{ClientError, Result};
use crate::span::{rebuild, SpanLayout};
use eggs_protocol::blocks::{CheckBlockReq, EraseBlockReq, WriteBlockReq};
use eggs_protocol::conv::fit;
use eggs_protocol::shard::{
    BlockWriteTarget, BlocksSpan, FetchedBlock, FetchedSpan, ReplaceBlockCertifyReq,
    ReplaceBlockInitiateReq, SpanBody,
};
use eggs_protocol::{BlockServiceId, EggsError, InodeId};
use std::sync::Arc;
use tokio::task::JoinSet;

/// Attempts at writing the copy (each on a different service) before giving up.
const MAX_WRITE_ATTEMPTS: usize = 4;

/// What a service said about one block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlockHealth {
    Good,
    /// The service does not have it.
    Missing,
    /// The service has it but a page or the whole block does not match its CRC.
    Corrupt,
    /// No verdict: the service could not be asked (down, timed out, other error).
    Unknown(String),
}

/// How a block was moved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Moved {
    /// Written to a new service; `rebuilt` if it came from the rest of the span rather than
    /// from the old block itself. `erase_failed` old or abandoned blocks could not be erased
    /// (their service is dead or refused) and stay behind as leftovers.
    To {
        block_service_id: BlockServiceId,
        rebuilt: bool,
        erased: usize,
        erase_failed: usize,
    },
    /// The span no longer holds the block (another GC moved it, or the span was removed).
    AlreadyDone,
}

impl Client {
    /// Asks the service of block `i` of `span` to verify it on disk.
    pub async fn check_block_health(&self, span: &BlocksSpan, i: usize) -> BlockHealth {
        let Some(block) = span.blocks.get(i) else {
            return BlockHealth::Unknown(format!("no block {i}"));
        };
        let size = (span.stripes as u32).saturating_mul(span.cell_size);
        let req = CheckBlockReq {
            block_service_id: block.block_service_id,
            block_id: block.block_id,
            size,
            crc: block.crc,
        };
        match self
            .block_pool()
            .check_block(block.addr.to_socket_addr(), &req)
            .await
        {
            Ok(()) => BlockHealth::Good,
            Err(e) => match e.eggs() {
                Some(EggsError::BlockNotFound) => BlockHealth::Missing,
                Some(EggsError::BadBlockCrc) => BlockHealth::Corrupt,
                _ => BlockHealth::Unknown(e.to_string()),
            },
        }
    }

    /// Moves block `index` of `span` (of `file_id`) to another service. With `read_old`, the
    /// old block is copied if it reads back intact; otherwise (or if it does not) it is
    /// rebuilt from `D` other blocks of the span. The new copy is checked against the block's
    /// CRC before it is written anywhere.
    pub async fn move_block(
        &self,
        file_id: InodeId,
        span: &FetchedSpan,
        index: usize,
        read_old: bool,
    ) -> Result<Moved> {
        let what = format!("block {index} of span at {} of {file_id}", span.byte_offset);
        let bad = |why: String| ClientError::BadResponse {
            what: what.clone(),
            why,
        };
        let SpanBody::Blocks(b) = &span.body else {
            return Err(bad("not a block span".into()));
        };
        let layout = SpanLayout::from_fetched(b, span.size).map_err(|e| bad(e.to_string()))?;
        let Some(old) = b.blocks.get(index).cloned() else {
            return Err(bad("no such block".into()));
        };
        let mut copied = None;
        if read_old {
            match fetch_whole(self.block_pool().clone(), old.clone(), layout.block_size()).await {
                Ok(data) => copied = Some(data),
                Err(e) => tracing::info!("{what}: old block unreadable, rebuilding: {e}"),
            }
        }
        let rebuilt = copied.is_none();
        let data = match copied {
            Some(d) => d,
            None => self.rebuild_block(&what, layout, &b.blocks, index).await?,
        };
        let mut blacklist = Vec::new();
        for _ in 0..MAX_WRITE_ATTEMPTS {
            let init = ReplaceBlockInitiateReq {
                file_id,
                byte_offset: span.byte_offset,
                block_index: fit::<u8, usize>(index),
                old_block_id: old.block_id,
                blacklist: blacklist.clone(),
            };
            let r = match self.shard_request(file_id.shard(), init).await {
                Ok(r) => r,
                Err(e) if gone(&e) => return Ok(Moved::AlreadyDone),
                Err(e) => return Err(e),
            };
            if r.size as usize != data.len() || r.crc != old.crc {
                return Err(bad(format!(
                    "shard wants {} bytes with crc {:08x}, have {} with {:08x}",
                    r.size,
                    r.crc,
                    data.len(),
                    old.crc
                )));
            }
            let t = &r.target;
            let write = WriteBlockReq {
                block_service_id: t.block_service_id,
                block_id: t.block_id,
                crc: r.crc,
                size: r.size,
                certificate: t.certificate,
            };
            let proof = match self
                .block_pool()
                .write_block(t.addr.to_socket_addr(), &write, &[&data])
                .await
            {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!("{what}: writing to {}: {e}", t.block_service_id.0);
                    blacklist.push(t.block_service_id);
                    continue;
                }
            };
            let certify = ReplaceBlockCertifyReq {
                file_id,
                byte_offset: span.byte_offset,
                block_index: fit::<u8, usize>(index),
                old_block_id: old.block_id,
                new_block_id: t.block_id,
                proof,
            };
            let done = match self.shard_request(file_id.shard(), certify).await {
                Ok(d) => d,
                Err(e) if gone(&e) => return Ok(Moved::AlreadyDone),
                Err(e) => return Err(e),
            };
            let (erased, erase_failed) = self.erase_all(&done.erase).await;
            return Ok(Moved::To {
                block_service_id: t.block_service_id,
                rebuilt,
                erased,
                erase_failed,
            });
        }
        Err(bad(format!(
            "no service took the copy after {MAX_WRITE_ATTEMPTS} attempts"
        )))
    }

    /// Block `index` rebuilt from `D` other blocks of the span (fetched in parallel, the next
    /// one tried when one fails), checked against its CRC.
    async fn rebuild_block(
        &self,
        what: &str,
        layout: SpanLayout,
        blocks: &[FetchedBlock],
        index: usize,
    ) -> Result<Vec<u8>> {
        let (d, total, size) = (
            layout.data_blocks(),
            layout.total_blocks(),
            layout.block_size(),
        );
        let mut sources = (0..total).filter(|&i| i != index);
        let mut tasks = JoinSet::new();
        let spawn = |tasks: &mut JoinSet<(usize, Result<Vec<u8>>)>, i: usize| {
            let (pool, block) = (self.block_pool().clone(), blocks[i].clone());
            tasks.spawn(async move { (i, fetch_whole(pool, block, size).await) });
        };
        for i in sources.by_ref().take(d) {
            spawn(&mut tasks, i);
        }
        let mut buffers = vec![Vec::new(); total];
        let mut present = vec![false; total];
        let mut failures = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            let (i, r) = joined.map_err(|e| ClientError::BadResponse {
                what: what.into(),
                why: format!("fetch task: {e}"),
            })?;
            match r {
                Ok(buf) => {
                    buffers[i] = buf;
                    present[i] = true;
                }
                Err(e) => {
                    failures.push(format!("block {i}: {e}"));
                    if let Some(next) = sources.next() {
                        spawn(&mut tasks, next);
                    }
                }
            }
        }
        let good = present.iter().filter(|&&p| p).count();
        if good < d {
            return Err(ClientError::BadResponse {
                what: what.into(),
                why: format!(
                    "only {good} other blocks readable, {d} needed: {}",
                    failures.join("; ")
                ),
            });
        }
        for (buf, _) in buffers.iter_mut().zip(&present).filter(|(_, &p)| !p) {
            buf.resize(size, 0);
        }
        let rebuilt = tokio::task::spawn_blocking(move || {
            rebuild(&layout, &mut buffers, &mut present, false).map(|()| buffers)
        })
        .await
        .map_err(|e| ClientError::BadResponse {
            what: what.into(),
            why: format!("rebuild task: {e}"),
        })?
        .map_err(|e| ClientError::BadResponse {
            what: what.into(),
            why: format!("rebuilding: {e}"),
        })?;
        let block = rebuilt.into_iter().nth(index).unwrap_or_default();
        if crc32c::crc32c(&block) != blocks[index].crc {
            return Err(ClientError::BadResponse {
                what: what.into(),
                why: "rebuilt block does not match its CRC".into(),
            });
        }
        Ok(block)
    }

    /// Erases blocks best-effort; returns (erased, failed). A failure leaves the block behind
    /// as a leftover: nothing references it any more, so it only costs space.
    async fn erase_all(&self, targets: &[BlockWriteTarget]) -> (usize, usize) {
        let (mut ok, mut failed) = (0, 0);
        for t in targets {
            let req = EraseBlockReq {
                block_service_id: t.block_service_id,
                block_id: t.block_id,
                certificate: t.certificate,
            };
            match self
                .block_pool()
                .erase_block(t.addr.to_socket_addr(), &req)
                .await
            {
                Ok(_) => ok += 1,
                Err(e) => {
                    tracing::info!("leaving block {} behind: {e}", t.block_id.0);
                    failed += 1;
                }
            }
        }
        (ok, failed)
    }
}

/// One whole block, checked against its CRC.
async fn fetch_whole(pool: Arc<BlockPool>, block: FetchedBlock, size: usize) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; size];
    pool.fetch_block(
        block.addr.to_socket_addr(),
        block.block_service_id,
        block.block_id,
        0,
        &mut buf,
    )
    .await?;
    if crc32c::crc32c(&buf) != block.crc {
        return Err(ClientError::BadResponse {
            what: format!(
                "block {} on block service {}",
                block.block_id.0, block.block_service_id.0
            ),
            why: "contents do not match the block's CRC".into(),
        });
    }
    Ok(buf)
}

/// The span no longer holds the block: someone else finished, or the span is gone.
fn gone(e: &ClientError) -> bool {
    matches!(
        e.eggs(),
        Some(EggsError::BlockNotInSpan | EggsError::BadSpanOffset | EggsError::FileNotFound)
    )
}
