//! Reading files: spans as `SpanPager` lists them, block spans from block services.
//!
//! A block span is read from its `D` data blocks, fetched in parallel. A block that cannot be
//! read (service down, timeout, bad CRC on the service's disk, short read, or a CRC mismatch
//! here) is replaced by the next parity block, and the missing data blocks are rebuilt; only
//! when fewer than `D` of the `D + P` blocks can be read does the read fail. Whole spans are
//! checked against the span CRC before any byte is handed out.
//!
//! [`Client::read_file_to`] fetches the next span while it writes the current one, so at most
//! two spans are in memory.

use crate::blocks::BlockPool;
use crate::client::Client;
use crate::error::{ClientError, Result};
use crate::span::{logical_pieces, rebuild, SpanLayout};
use crate::span_pager::SpanPager;
use eggs_protocol::conv::{fit, usize_of};
use eggs_protocol::shard::{FetchedBlock, FetchedSpan, SpanBody};
use eggs_protocol::InodeId;
use std::ops::Range;
use std::sync::Arc;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::task::JoinSet;

/// Largest buffer [`Client::read_range`] reserves before it knows how much there is to read.
const MAX_PREALLOCATED: usize = 64 << 20;

/// The readable bytes of one span.
enum Loaded {
    Inline(Vec<u8>),
    Blocks {
        layout: SpanLayout,
        /// The data blocks, holding stripes `first_stripe..` each.
        blocks: Vec<Vec<u8>>,
        first_stripe: usize,
        /// Logical bytes of the span they hold.
        range: Range<usize>,
    },
}

impl Loaded {
    fn pieces(&self) -> Box<dyn Iterator<Item = &[u8]> + Send + '_> {
        match self {
            Loaded::Inline(d) => Box::new(std::iter::once(&d[..])),
            Loaded::Blocks {
                layout,
                blocks,
                first_stripe,
                range,
            } => Box::new(logical_pieces(layout, blocks, *first_stripe, range.clone())),
        }
    }

    fn into_buffers(self) -> Vec<Vec<u8>> {
        match self {
            Loaded::Inline(_) => Vec::new(),
            Loaded::Blocks { blocks, .. } => blocks,
        }
    }
}

impl Client {
    /// Reads a whole file, checking every span's CRC (see [`Client::read_file_to`]).
    pub async fn read_file(&self, file_id: InodeId) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.read_file_to(file_id, &mut out).await?;
        Ok(out)
    }

    /// Writes the whole file to `writer`; returns its size.
    pub async fn read_file_to(
        &self,
        file_id: InodeId,
        mut writer: impl AsyncWrite + Unpin,
    ) -> Result<u64> {
        let mut pager = SpanPager::new(file_id, 0);
        let Some(first) = pager.next(self).await? else {
            return Ok(0);
        };
        let mut size = first.size as u64;
        let mut spare = Vec::new();
        let mut current = self.load_whole(file_id, first, Vec::new()).await?;
        loop {
            let Some(next) = pager.next(self).await? else {
                write_out(&mut writer, &current).await?;
                break;
            };
            size += next.size as u64;
            // Readahead: the next span is fetched while this one is written.
            let buffers = std::mem::take(&mut spare);
            let (_, loaded) = tokio::try_join!(
                write_out(&mut writer, &current),
                self.load_whole(file_id, next, buffers)
            )?;
            spare = std::mem::replace(&mut current, loaded).into_buffers();
        }
        writer
            .flush()
            .await
            .map_err(|e| ClientError::io(format!("writing out {file_id}"), e))?;
        Ok(size)
    }

    /// Up to `len` bytes of the file from `offset` (fewer at the end of the file). Only the
    /// stripes holding them are fetched.
    pub async fn read_range(&self, file_id: InodeId, offset: u64, len: usize) -> Result<Vec<u8>> {
        let end = offset.saturating_add(len as u64);
        // Not more than the file could hold: `len` may be a caller's "everything".
        let mut out = Vec::with_capacity(len.min(MAX_PREALLOCATED));
        let mut pager = SpanPager::new(file_id, offset);
        while (out.len() as u64) < len as u64 {
            let Some(span) = pager.next(self).await? else {
                break;
            };
            let start = span.byte_offset;
            // `SpanPager` checked that spans follow each other; the first must hold `offset`.
            if start > offset.saturating_add(out.len() as u64) {
                return Err(corrupt(file_id, start, "hole before the span".into()));
            }
            let from = usize_of(offset.max(start) - start);
            let to = usize_of(end.min(start.saturating_add(u64::from(span.size))) - start);
            if from >= to {
                return Err(corrupt(
                    file_id,
                    start,
                    "span before the offset asked for".into(),
                ));
            }
            let loaded = self.load(file_id, span, from..to, Vec::new()).await?;
            for piece in loaded.pieces() {
                out.extend_from_slice(piece);
            }
        }
        Ok(out)
    }

    /// Logical bytes `range` of one span of the file (from [`Client::file_spans`]): only the
    /// stripes holding them are fetched, unreadable blocks are rebuilt from parity, and the
    /// span CRC is checked when the range covers all of its stripes.
    pub async fn read_span_range(
        &self,
        file_id: InodeId,
        span: &FetchedSpan,
        range: Range<usize>,
    ) -> Result<Vec<u8>> {
        if range.start > range.end || range.end > span.size as usize {
            return Err(corrupt(
                file_id,
                span.byte_offset,
                format!("range {range:?} outside a span of {}", span.size),
            ));
        }
        let mut out = Vec::with_capacity(range.len());
        let loaded = self.load(file_id, span.clone(), range, Vec::new()).await?;
        for piece in loaded.pieces() {
            out.extend_from_slice(piece);
        }
        Ok(out)
    }

    async fn load_whole(
        &self,
        file_id: InodeId,
        span: FetchedSpan,
        buffers: Vec<Vec<u8>>,
    ) -> Result<Loaded> {
        let size = span.size as usize;
        self.load(file_id, span, 0..size, buffers).await
    }

    /// Fetches logical bytes `range` of a span, checking its CRC when the range is all of it.
    async fn load(
        &self,
        file_id: InodeId,
        span: FetchedSpan,
        range: Range<usize>,
        buffers: Vec<Vec<u8>>,
    ) -> Result<Loaded> {
        let at = span.byte_offset;
        match span.body {
            SpanBody::Inline(mut data) => {
                if data.len() != span.size as usize || crc32c::crc32c(&data) != span.crc {
                    return Err(corrupt(
                        file_id,
                        at,
                        "inline span does not match its CRC".into(),
                    ));
                }
                data.truncate(range.end);
                data.drain(..range.start);
                Ok(Loaded::Inline(data))
            }
            SpanBody::Blocks(b) => {
                let layout = SpanLayout::from_fetched(&b, span.size)
                    .map_err(|e| corrupt(file_id, at, e.to_string()))?;
                let stripes = layout.stripes_of(&range);
                let whole = stripes == (0..layout.stripes as usize);
                let what = format!("span at {at} of {file_id}");
                let blocks = fetch_stripes(
                    self.block_pool(),
                    &what,
                    &layout,
                    &b.blocks,
                    stripes.clone(),
                    whole,
                    buffers,
                )
                .await?;
                let loaded = Loaded::Blocks {
                    layout,
                    blocks,
                    first_stripe: stripes.start,
                    range,
                };
                if whole && span_crc(&layout, &loaded, span.size as usize) != span.crc {
                    return Err(corrupt(file_id, at, "span does not match its CRC".into()));
                }
                Ok(loaded)
            }
        }
    }
}

fn span_crc(layout: &SpanLayout, loaded: &Loaded, size: usize) -> u32 {
    let Loaded::Blocks { blocks, .. } = loaded else {
        return 0;
    };
    logical_pieces(layout, blocks, 0, 0..size).fold(0, crc32c::crc32c_append)
}

async fn write_out(writer: &mut (impl AsyncWrite + Unpin), span: &Loaded) -> Result<()> {
    for piece in span.pieces() {
        writer
            .write_all(piece)
            .await
            .map_err(|e| ClientError::io("writing out a file", e))?;
    }
    Ok(())
}

/// What one block fetch came back with: its index, its buffer, and whether it is good.
type Fetched = (usize, Vec<u8>, Result<()>);

/// Fetches `stripes` of the span's data blocks, replacing unreadable ones with parity blocks
/// and rebuilding them. With `whole`, each block is checked against its CRC. Returns the `D`
/// data-block buffers.
async fn fetch_stripes(
    pool: &Arc<BlockPool>,
    what: &str,
    layout: &SpanLayout,
    blocks: &[FetchedBlock],
    stripes: Range<usize>,
    whole: bool,
    mut buffers: Vec<Vec<u8>>,
) -> Result<Vec<Vec<u8>>> {
    let (d, total) = (layout.data_blocks(), layout.total_blocks());
    let len = stripes.len() * layout.cell();
    let offset = fit::<u32, usize>(stripes.start * layout.cell());
    buffers.resize_with(total, Vec::new);
    let mut tasks = JoinSet::new();
    let spawn = |tasks: &mut JoinSet<Fetched>, i: usize, buf: Vec<u8>| {
        let (pool, block) = (pool.clone(), blocks[i].clone());
        let crc = whole.then_some(block.crc);
        tasks.spawn(fetch_one(pool, i, block, offset, len, crc, buf));
    };
    // Data blocks first (no decoding needed), but blocks on services that recently did not
    // answer last: a partitioned service then costs one time-out, not one per read.
    let order = fetch_order(blocks, d, |a| pool.recently_unreachable(a));
    for &i in order.iter().take(d) {
        spawn(&mut tasks, i, std::mem::take(&mut buffers[i]));
    }
    let mut next_spare = d;
    let mut good = vec![false; total];
    let mut failures = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (i, buf, r) = match joined {
            Ok(f) => f,
            Err(e) => {
                // A panicked task: we do not know its block, so no fallback is possible.
                return Err(ClientError::BadResponse {
                    what: what.into(),
                    why: format!("fetch task: {e}"),
                });
            }
        };
        buffers[i] = buf;
        match r {
            Ok(()) => good[i] = true,
            Err(e) => {
                tracing::warn!("{what}: block {i} of {total} unreadable, using parity: {e}");
                failures.push(format!("block {i}: {e}"));
                if let Some(&spare) = order.get(next_spare) {
                    spawn(&mut tasks, spare, std::mem::take(&mut buffers[spare]));
                    next_spare += 1;
                }
            }
        }
    }
    let readable = good.iter().filter(|&&g| g).count();
    if readable < d {
        return Err(ClientError::BadResponse {
            what: what.into(),
            why: format!(
                "only {readable} of {total} blocks readable, {d} needed: {}",
                failures.join("; ")
            ),
        });
    }
    if good[..d].iter().any(|g| !g) {
        buffers = rebuild_data(what, *layout, buffers, good, len).await?;
    }
    buffers.truncate(d);
    Ok(buffers)
}

/// The order in which to try a span's blocks: the `d` data blocks, then the parity blocks,
/// except that blocks whose service `suspect` names go after all the others.
fn fetch_order(
    blocks: &[FetchedBlock],
    d: usize,
    suspect: impl Fn(std::net::SocketAddr) -> bool,
) -> Vec<usize> {
    let (mut order, mut last): (Vec<usize>, Vec<usize>) =
        (0..blocks.len()).partition(|&i| !suspect(blocks[i].addr.to_socket_addr()));
    order.append(&mut last);
    debug_assert!(order.len() == blocks.len() && blocks.len() >= d);
    order
}

/// Rebuilds the missing data blocks from the good ones, off the async workers.
async fn rebuild_data(
    what: &str,
    layout: SpanLayout,
    mut buffers: Vec<Vec<u8>>,
    mut good: Vec<bool>,
    len: usize,
) -> Result<Vec<Vec<u8>>> {
    let missing: Vec<usize> = (0..layout.data_blocks()).filter(|&i| !good[i]).collect();
    for &i in &missing {
        buffers[i].resize(len, 0);
    }
    let rebuilt = tokio::task::spawn_blocking(move || {
        rebuild(&layout, &mut buffers, &mut good, true).map(|()| buffers)
    })
    .await;
    let bad = |why: String| ClientError::BadResponse {
        what: what.into(),
        why,
    };
    let buffers = rebuilt
        .map_err(|e| bad(format!("rebuild task: {e}")))?
        .map_err(|e| bad(format!("rebuilding from parity: {e}")))?;
    tracing::warn!("{what}: rebuilt data blocks {missing:?} from parity");
    Ok(buffers)
}

/// Fetches `len` bytes at `offset` of one block into `buf` and checks them against `crc`
/// (when the whole block was fetched).
async fn fetch_one(
    pool: Arc<BlockPool>,
    i: usize,
    block: FetchedBlock,
    offset: u32,
    len: usize,
    crc: Option<u32>,
    mut buf: Vec<u8>,
) -> Fetched {
    buf.resize(len, 0);
    let r = pool
        .fetch_block(
            block.addr.to_socket_addr(),
            block.block_service_id,
            block.block_id,
            offset,
            &mut buf,
        )
        .await;
    let r = r.and_then(|()| match crc {
        Some(expected) if crc32c::crc32c(&buf) != expected => Err(ClientError::BadResponse {
            what: format!(
                "block {} on block service {}",
                block.block_id.0, block.block_service_id.0
            ),
            why: "contents do not match the block's CRC".into(),
        }),
        _ => Ok(()),
    });
    (i, buf, r)
}

fn corrupt(file_id: InodeId, offset: u64, why: String) -> ClientError {
    ClientError::BadResponse {
        what: format!("reading {file_id} at {offset}"),
        why,
    }
}

/// Callers spawn these futures (FUSE, the CLI's copies): they must stay `Send`.
#[cfg(test)]
#[allow(dead_code)]
fn data_path_futures_are_send(c: &Client) {
    fn send<T: Send>(_: T) {}
    send(c.read_file_to(InodeId::ROOT, tokio::io::sink()));
    send(c.read_range(InodeId::ROOT, 0, 1));
    send(c.read_file(InodeId::ROOT));
    send(crate::FileWriter::write_path(c, "/x", &b""[..]));
    send(crate::FileWriter::write_in_with_progress(
        c,
        InodeId::ROOT,
        &eggs_protocol::Name::new("x").unwrap(),
        &b""[..],
        &mut |_| {},
    ));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blocks::BlockClientOptions;
    use crate::span::{assemble, split};
    use eggs_common::frame::{read_frame, write_frame};
    use eggs_protocol::blocks::FetchBlockResp;
    use eggs_protocol::blocks::{BlocksReq, BlocksRequest, BlocksResp, BlocksResponse};
    use eggs_protocol::policy::{Parity, StorageClass};
    use eggs_protocol::{Addr, BlockId, BlockServiceId, EggsError};
    use std::time::Duration;
    use tokio::net::{TcpListener, TcpStream};

    fn block_at(port: u16) -> FetchedBlock {
        FetchedBlock {
            block_service_id: BlockServiceId(port as u64),
            addr: Addr {
                ip: [127, 0, 0, 1],
                port,
            },
            block_id: BlockId(port as u64),
            crc: 0,
        }
    }

    #[test]
    fn blocks_on_unreachable_services_are_tried_last() {
        let blocks: Vec<FetchedBlock> = (1..=6).map(block_at).collect();
        let none = fetch_order(&blocks, 4, |_| false);
        assert_eq!(none, vec![0, 1, 2, 3, 4, 5]);
        let down = [2u16, 5];
        let order = fetch_order(&blocks, 4, |a| down.contains(&a.port()));
        assert_eq!(
            order,
            vec![0, 2, 3, 5, 1, 4],
            "parity replaces the suspects at once"
        );
    }

    #[tokio::test]
    async fn a_service_that_refuses_connections_is_remembered_until_it_answers() {
        // A port nobody listens on: the connection is refused.
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let pool = BlockPool::new(BlockClientOptions::default());
        assert!(!pool.recently_unreachable(addr));
        let mut buf = vec![0u8; 16];
        let r = pool
            .fetch_block(addr, BlockServiceId(1), BlockId(1), 0, &mut buf)
            .await;
        assert!(r.is_err());
        assert!(pool.recently_unreachable(addr));
        // A service that answers, even with an error, is reachable again.
        let listener = TcpListener::bind(addr).await.unwrap();
        let server = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let _req: Option<BlocksRequest> = read_frame(&mut conn).await.unwrap();
            let resp = BlocksResponse {
                result: Err(EggsError::BlockNotFound),
            };
            write_frame(&mut conn, &resp).await.unwrap();
        });
        let r = pool
            .fetch_block(addr, BlockServiceId(1), BlockId(1), 0, &mut buf)
            .await;
        assert!(r.is_err());
        assert!(!pool.recently_unreachable(addr));
        server.await.unwrap();
    }

    #[derive(Clone, Copy, PartialEq, Debug)]
    enum Fault {
        None,
        /// Serves the block with one byte changed: only the client's CRC check sees it.
        FlipByte,
        /// Closes the connection half way through the data.
        Short,
        /// Answers `BadBlockCrc`, as a service that finds a corrupt page on disk does.
        Error,
        /// Accepts and never answers.
        Silent,
        /// Nothing listens.
        Refused,
    }

    async fn serve(block: Vec<u8>, fault: Fault) -> Addr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = Addr::from_socket_addr(listener.local_addr().unwrap()).unwrap();
        if fault == Fault::Refused {
            return addr;
        }
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(serve_conn(conn, block.clone(), fault));
            }
        });
        addr
    }

    async fn serve_conn(mut conn: TcpStream, block: Vec<u8>, fault: Fault) {
        while let Ok(Some(req)) = read_frame::<BlocksRequest, _>(&mut conn).await {
            let BlocksReq::FetchBlock(f) = req.body else {
                return;
            };
            let result = match fault {
                Fault::Error => Err(EggsError::BadBlockCrc),
                Fault::Silent => {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    return;
                }
                _ => Ok(BlocksResp::FetchBlock(FetchBlockResp { count: f.count })),
            };
            let ok = result.is_ok();
            if write_frame(&mut conn, &BlocksResponse { result })
                .await
                .is_err()
                || !ok
            {
                continue;
            }
            let mut data = block[f.offset as usize..(f.offset + f.count) as usize].to_vec();
            if fault == Fault::FlipByte {
                data[0] ^= 1;
            }
            let n = if fault == Fault::Short {
                data.len() / 2
            } else {
                data.len()
            };
            if conn.write_all(&data[..n]).await.is_err() || fault == Fault::Short {
                return;
            }
        }
    }

    struct Setup {
        layout: SpanLayout,
        data: Vec<u8>,
        blocks: Vec<FetchedBlock>,
    }

    /// A RS(4,2) span of 7 stripes of 4 KiB cells whose block `i` is served with `faults[i]`.
    async fn setup(faults: [Fault; 6]) -> Setup {
        let layout = SpanLayout {
            parity: Parity { data: 4, parity: 2 },
            storage_class: StorageClass::Flash,
            stripes: 7,
            cell_size: 4096,
        };
        let data: Vec<u8> = (0..layout.capacity() - 1000)
            .map(|i| u8::try_from(i % 253).unwrap())
            .collect();
        let mut blocks = Vec::new();
        for (i, block) in split(layout, &data).unwrap().into_iter().enumerate() {
            blocks.push(FetchedBlock {
                block_service_id: BlockServiceId(i as u64),
                addr: serve(block.clone(), faults[i]).await,
                block_id: BlockId(100 + i as u64),
                crc: crc32c::crc32c(&block),
            });
        }
        Setup {
            layout,
            data,
            blocks,
        }
    }

    fn pool() -> Arc<BlockPool> {
        Arc::new(BlockPool::new(BlockClientOptions {
            io_timeout: Duration::from_millis(300),
            ..Default::default()
        }))
    }

    async fn read_whole(s: &Setup) -> Result<Vec<u8>> {
        let stripes = 0..s.layout.stripes as usize;
        let got = fetch_stripes(
            &pool(),
            "test",
            &s.layout,
            &s.blocks,
            stripes,
            true,
            Vec::new(),
        )
        .await?;
        Ok(assemble(&s.layout, &got, s.data.len()))
    }

    #[tokio::test]
    async fn every_fault_of_up_to_p_blocks_is_survived() {
        use Fault::*;
        let cases = [
            [None; 6],
            [FlipByte, None, None, None, None, None],
            [None, Short, None, Error, None, None],
            [Refused, None, Silent, None, None, None],
            [None, None, None, FlipByte, None, Refused],
            [None, None, None, None, Error, Short],
        ];
        for faults in cases {
            let s = setup(faults).await;
            let got = read_whole(&s)
                .await
                .unwrap_or_else(|e| panic!("{faults:?}: {e}"));
            assert!(got == s.data, "{faults:?}: wrong data");
        }
    }

    #[tokio::test]
    async fn more_than_p_faults_fail_clearly() {
        use Fault::*;
        let s = setup([FlipByte, None, Refused, None, Error, None]).await;
        let e = read_whole(&s).await.unwrap_err().to_string();
        assert!(e.contains("only 3 of 6 blocks readable, 4 needed"), "{e}");
        assert!(e.contains("CRC") && e.contains("refused"), "{e}");
    }

    #[tokio::test]
    async fn ranges_fetch_only_their_stripes_and_survive_faults() {
        use Fault::*;
        let s = setup([None, Error, None, None, None, Short]).await;
        let stripe = s.layout.stripe_size();
        for range in [
            0..1,
            stripe - 1..stripe + 1,
            3 * stripe + 5..5 * stripe,
            0..s.data.len(),
        ] {
            let stripes = s.layout.stripes_of(&range);
            let got = fetch_stripes(
                &pool(),
                "test",
                &s.layout,
                &s.blocks,
                stripes.clone(),
                false,
                Vec::new(),
            )
            .await
            .unwrap();
            assert!(got
                .iter()
                .all(|b| b.len() == stripes.len() * s.layout.cell()));
            let bytes: Vec<u8> = logical_pieces(&s.layout, &got, stripes.start, range.clone())
                .flatten()
                .copied()
                .collect();
            assert!(bytes == s.data[range.clone()], "range {range:?}");
        }
    }
}
