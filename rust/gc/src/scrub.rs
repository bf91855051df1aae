//! Scrubbing: every block of every span is verified on its block service (`CheckBlock`:
//! every page CRC and the whole block's CRC) at a bounded rate, and a block found missing or
//! corrupt is rebuilt from the rest of its span onto another service (`Client::move_block`).
//!
//! A pass walks the shards in order, each shard's files in id order (`VisitFiles`), each
//! file's spans in order. It keeps no state outside the shard: a pass interrupted at any
//! point is simply started again, and a repair interrupted half way is finished or redone by
//! the next one (see `eggs_client::repair`).

use eggs_client::repair::{BlockHealth, Moved};
use eggs_client::{Client, ClientError, SpanPager};
use eggs_protocol::shard::{FetchedSpan, SpanBody, VisitFilesReq};
use eggs_protocol::{EggsError, InodeId, ShardId, MAX_UDP_MTU};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::Instant;

#[derive(Clone, Debug)]
pub struct ScrubOptions {
    /// Block bytes verified per second, over all services (0: no limit).
    pub rate_bytes_per_s: u64,
    /// Spans checked at once (each checks all its blocks at once).
    pub parallel_spans: usize,
    /// Rebuild the missing and corrupt blocks found (otherwise only count them).
    pub repair: bool,
}

impl Default for ScrubOptions {
    fn default() -> Self {
        ScrubOptions {
            rate_bytes_per_s: 50 << 20,
            parallel_spans: 4,
            repair: true,
        }
    }
}

/// What a pass saw and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScrubStats {
    pub files: u64,
    pub spans: u64,
    pub blocks_checked: u64,
    pub bytes_checked: u64,
    pub missing: u64,
    pub corrupt: u64,
    /// Blocks whose service could not give a verdict (down, timed out).
    pub unknown: u64,
    pub repaired: u64,
    /// Blocks another GC had already moved by the time this one tried.
    pub already_repaired: u64,
    pub repair_failed: u64,
    /// Bad blocks of spans still being written (not certified): left to their writer.
    pub in_flight: u64,
    /// Old blocks that could not be erased after a repair (left behind on their service).
    pub leftovers: u64,
}

impl ScrubStats {
    fn add(&mut self, o: &ScrubStats) {
        self.files += o.files;
        self.spans += o.spans;
        self.blocks_checked += o.blocks_checked;
        self.bytes_checked += o.bytes_checked;
        self.missing += o.missing;
        self.corrupt += o.corrupt;
        self.unknown += o.unknown;
        self.repaired += o.repaired;
        self.already_repaired += o.already_repaired;
        self.repair_failed += o.repair_failed;
        self.in_flight += o.in_flight;
        self.leftovers += o.leftovers;
    }
}

/// One scrub pass over every shard. Returns once every block was checked (and the bad ones
/// repaired, if asked). Only listing failures end it early; block-level failures are counted.
pub async fn scrub_pass(
    client: &Arc<Client>,
    opts: &ScrubOptions,
) -> Result<ScrubStats, ClientError> {
    let mut run = Run::new(client.clone(), opts.clone());
    for shard in ShardId::all() {
        let mut start = InodeId(0);
        loop {
            let page = client
                .shard_request(
                    shard,
                    VisitFilesReq {
                        start_file_id: start,
                        mtu: MAX_UDP_MTU,
                    },
                )
                .await?;
            for file in page.file_ids {
                run.file(file).await?;
            }
            match page.next_file_id {
                Some(next) => start = next,
                None => break,
            }
        }
    }
    Ok(run.finish().await)
}

/// Scrubs the spans of one file (for tests and `eggscli scrub --file`).
pub async fn scrub_file(
    client: &Arc<Client>,
    file: InodeId,
    opts: &ScrubOptions,
) -> Result<ScrubStats, ClientError> {
    let mut run = Run::new(client.clone(), opts.clone());
    run.file(file).await?;
    Ok(run.finish().await)
}

/// A pass in progress: the spans being checked and the rate limit.
struct Run {
    client: Arc<Client>,
    opts: ScrubOptions,
    tasks: JoinSet<ScrubStats>,
    stats: ScrubStats,
    limiter: RateLimiter,
}

impl Run {
    fn new(client: Arc<Client>, opts: ScrubOptions) -> Run {
        Run {
            limiter: RateLimiter::new(opts.rate_bytes_per_s),
            client,
            opts,
            tasks: JoinSet::new(),
            stats: ScrubStats::default(),
        }
    }

    async fn file(&mut self, file: InodeId) -> Result<(), ClientError> {
        self.stats.files += 1;
        let mut pager = SpanPager::new(file, 0);
        loop {
            match pager.next(&self.client).await {
                Ok(Some(span)) => self.span(file, span).await,
                Ok(None) => return Ok(()),
                // Destroyed meanwhile: nothing left to scrub.
                Err(e) if e.eggs() == Some(EggsError::FileNotFound) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }

    async fn span(&mut self, file: InodeId, span: FetchedSpan) {
        let SpanBody::Blocks(b) = &span.body else {
            return;
        };
        let bytes = b.stripes as u64 * b.cell_size as u64 * b.blocks.len() as u64;
        self.limiter.acquire(bytes).await;
        while self.tasks.len() >= self.opts.parallel_spans.max(1) {
            self.join_one().await;
        }
        let (client, repair) = (self.client.clone(), self.opts.repair);
        self.tasks
            .spawn(async move { scrub_span(&client, file, span, repair).await });
    }

    async fn join_one(&mut self) {
        match self.tasks.join_next().await {
            Some(Ok(s)) => self.stats.add(&s),
            Some(Err(e)) => {
                tracing::error!("scrub task failed: {e}");
                self.stats.repair_failed += 1;
            }
            None => {}
        }
    }

    async fn finish(mut self) -> ScrubStats {
        while !self.tasks.is_empty() {
            self.join_one().await;
        }
        self.stats
    }
}

/// Checks every block of one span at once, then moves the bad ones.
async fn scrub_span(client: &Client, file: InodeId, span: FetchedSpan, repair: bool) -> ScrubStats {
    let mut stats = ScrubStats {
        spans: 1,
        ..Default::default()
    };
    let SpanBody::Blocks(b) = &span.body else {
        return stats;
    };
    let block_bytes = b.stripes as u64 * b.cell_size as u64;
    let checks = (0..b.blocks.len()).map(|i| client.check_block_health(b, i));
    let health = futures_join_all(checks).await;
    let mut bad = Vec::new();
    for (i, h) in health.iter().enumerate() {
        stats.blocks_checked += 1;
        stats.bytes_checked += block_bytes;
        match h {
            BlockHealth::Good => {}
            BlockHealth::Missing => {
                stats.missing += 1;
                bad.push(i);
            }
            BlockHealth::Corrupt => {
                stats.corrupt += 1;
                bad.push(i);
            }
            BlockHealth::Unknown(why) => {
                tracing::warn!(
                    "scrub {file} at {}: block {i} not checked: {why}",
                    span.byte_offset
                );
                stats.unknown += 1;
            }
        }
    }
    if !repair {
        return stats;
    }
    for i in bad {
        tracing::warn!(
            "scrub {file} at {}: block {i} is {:?}, repairing",
            span.byte_offset,
            health[i]
        );
        match client.move_block(file, &span, i, false).await {
            Ok(Moved::To { erase_failed, .. }) => {
                stats.repaired += 1;
                stats.leftovers += erase_failed as u64;
            }
            Ok(Moved::AlreadyDone) => stats.already_repaired += 1,
            Err(e) if e.eggs() == Some(EggsError::SpanNotCertified) => stats.in_flight += 1,
            Err(e) => {
                tracing::error!("scrub {file} at {}: block {i}: {e}", span.byte_offset);
                stats.repair_failed += 1;
            }
        }
    }
    stats
}

/// Runs futures concurrently on this task and returns their outputs in order.
async fn futures_join_all<F: std::future::Future>(futs: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut pinned: Vec<_> = futs.map(|f| Some(Box::pin(f))).collect();
    let mut out: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (slot, fut) in out.iter_mut().zip(pinned.iter_mut()) {
            if let Some(f) = fut {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => {
                        *slot = Some(v);
                        *fut = None;
                    }
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

/// Paces work to `rate` bytes per second on average since the start, so a pass costs the
/// disks a known share of their bandwidth. `acquire` is called before the work it pays for.
struct RateLimiter {
    rate_bytes_per_s: u64,
    start: Instant,
    granted_bytes: u64,
}

impl RateLimiter {
    fn new(rate_bytes_per_s: u64) -> RateLimiter {
        RateLimiter {
            rate_bytes_per_s,
            start: Instant::now(),
            granted_bytes: 0,
        }
    }

    async fn acquire(&mut self, bytes: u64) {
        if self.rate_bytes_per_s == 0 {
            return;
        }
        // The work granted so far may start once its share of time has passed: the first
        // piece goes at once, each later one when the previous ones are paid for.
        let due = Duration::from_secs_f64(self.granted_bytes as f64 / self.rate_bytes_per_s as f64);
        self.granted_bytes += bytes;
        let elapsed = self.start.elapsed();
        if due > elapsed {
            tokio::time::sleep(due - elapsed).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn rate_limiter_paces_to_the_rate() {
        let start = tokio::time::Instant::now();
        let mut l = RateLimiter::new(1000);
        for _ in 0..5 {
            l.acquire(500).await;
        }
        // 2000 bytes were paid for before the fifth piece could start: 2 seconds.
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(1990), "{waited:?}");
        assert!(waited <= Duration::from_millis(2100), "{waited:?}");
    }

    #[tokio::test]
    async fn join_all_keeps_order() {
        let futs = (0..5u64).map(|i| async move {
            tokio::time::sleep(Duration::from_millis(50 - i * 10)).await;
            i
        });
        assert_eq!(futures_join_all(futs).await, vec![0, 1, 2, 3, 4]);
    }
}
