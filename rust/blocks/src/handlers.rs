//! What each request does. File I/O runs on tokio's blocking pool, a bounded window at a
//! time, so async workers never wait on a disk and no request holds a whole block in memory.

use crate::conn::{Conn, Flow};
use crate::service::{Service, Services};
use crate::store::{self, BlockFile, BlockWriter, StoreError, WINDOW_BYTES};
use eggs_common::crypto;
use eggs_protocol::blocks::{
    BlockServiceStatsReq, BlockServiceStatsResp, BlocksReq, BlocksResp, CheckBlockReq,
    CheckBlockResp, EraseBlockReq, EraseBlockResp, FetchBlockReq, FetchBlockResp, WriteBlockReq,
    WriteBlockResp,
};
use eggs_protocol::conv::usize_of;
use eggs_protocol::{BlockId, BlockServiceId, EggsError};
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use tokio::task::JoinHandle;

pub(crate) async fn handle(services: &Services, conn: &mut Conn, req: BlocksReq) -> Flow {
    let peer = conn.peer;
    match req {
        BlocksReq::WriteBlock(r) => write_block(services, conn, r).await,
        BlocksReq::FetchBlock(r) => fetch_block(services, conn, r).await,
        BlocksReq::EraseBlock(r) => {
            let result = erase_block(services, r, peer).await;
            conn.reply(result.map(BlocksResp::EraseBlock)).await
        }
        BlocksReq::CheckBlock(r) => {
            let result = check_block(services, r).await;
            conn.reply(result.map(BlocksResp::CheckBlock)).await
        }
        BlocksReq::BlockServiceStats(r) => {
            let result = stats(services, r).await;
            conn.reply(result.map(BlocksResp::BlockServiceStats)).await
        }
    }
}

fn service(services: &Services, id: BlockServiceId) -> Result<Arc<Service>, EggsError> {
    services
        .get(id)
        .cloned()
        .ok_or(EggsError::BlockServiceNotFound)
}

/// Runs blocking file work off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(StoreError::Io(std::io::Error::other(e.to_string()))))
}

/// Turns a store error into the client's error, logging what operators should know about.
fn reported(e: StoreError, what: &str, block: BlockId, service: &Service) -> EggsError {
    let (block, id) = (block.0, service.id().0);
    match &e {
        StoreError::NotFound => tracing::debug!("{what} {block:016x} on {id:016x}: {e}"),
        StoreError::CrcMismatch => tracing::info!("{what} {block:016x} on {id:016x}: {e}"),
        StoreError::Corrupt(_) => tracing::error!("{what} {block:016x} on {id:016x}: {e}"),
        StoreError::Io(_) => tracing::error!("{what} {block:016x} on {id:016x}: {e}"),
    }
    e.to_eggs()
}

/// A write that passed every check, being streamed to disk.
struct Upload {
    service: Arc<Service>,
    writer: BlockWriter,
}

/// Where the data of a write request goes: to disk, with at most one chunk being written
/// while the next one is received, or nowhere once the write is refused.
enum Sink {
    Ready(Upload),
    /// A chunk on its way to disk; hands back the upload (or why it failed) and the buffer.
    Busy(JoinHandle<(Result<Upload, EggsError>, Vec<u8>)>),
    Refused(EggsError),
}

impl Sink {
    /// Waits for the chunk in flight, then starts writing `buf[..n]`. Returns a buffer for
    /// the next chunk: the previous chunk's, or `buf` itself when nothing is written.
    async fn push(self, buf: Vec<u8>, n: usize) -> (Sink, Option<Vec<u8>>) {
        let (sink, spare) = self.settle().await;
        match sink {
            Sink::Ready(u) => (Sink::Busy(spawn_append(u, buf, n)), spare),
            other => (other, Some(buf)),
        }
    }

    /// Waits for the last chunk; the upload if every chunk was written.
    async fn finish(self) -> Result<Upload, EggsError> {
        match self.settle().await.0 {
            Sink::Ready(u) => Ok(u),
            Sink::Refused(e) => Err(e),
            Sink::Busy(_) => Err(EggsError::InternalError),
        }
    }

    /// Never returns `Busy`.
    async fn settle(self) -> (Sink, Option<Vec<u8>>) {
        let Sink::Busy(handle) = self else {
            return (self, None);
        };
        match handle.await {
            Ok((Ok(u), buf)) => (Sink::Ready(u), Some(buf)),
            Ok((Err(e), buf)) => (Sink::Refused(e), Some(buf)),
            Err(e) => {
                tracing::error!("block write task failed: {e}");
                (Sink::Refused(EggsError::InternalError), None)
            }
        }
    }
}

/// Writes `buf[..n]` on the blocking pool. A failed write drops the upload there, which
/// deletes the temporary file.
fn spawn_append(
    mut u: Upload,
    buf: Vec<u8>,
    n: usize,
) -> JoinHandle<(Result<Upload, EggsError>, Vec<u8>)> {
    tokio::task::spawn_blocking(move || match u.writer.write(&buf[..n]) {
        Ok(()) => (Ok(u), buf),
        Err(e) => (
            Err(reported(e, "write", u.writer.block_id(), &u.service)),
            buf,
        ),
    })
}

/// Always consumes the request's `size` bytes of data, even when the write is refused, so
/// that the connection stays in step and the client reads the answer after sending.
async fn write_block(services: &Services, conn: &mut Conn, req: WriteBlockReq) -> Flow {
    let mut sink = match start_write(services, &req, conn.peer).await {
        Ok(u) => Sink::Ready(u),
        Err(e) => Sink::Refused(e),
    };
    let mut remaining = req.size as usize;
    let chunk = remaining.min(WINDOW_BYTES);
    let mut buf = vec![0u8; chunk];
    while remaining > 0 {
        let n = remaining.min(WINDOW_BYTES);
        if let Err(e) = conn.receive_data(&mut buf[..n]).await {
            // Dropping the sink deletes the temporary file (once a chunk in flight is done).
            tracing::debug!("{}: block data cut short: {e}", conn.peer);
            return Flow::Close;
        }
        remaining -= n;
        let (next, spare) = sink.push(buf, n).await;
        sink = next;
        buf = spare.unwrap_or_else(|| vec![0u8; chunk]);
    }
    let result = match sink.finish().await {
        Ok(u) => finish_write(u, &req).await,
        Err(e) => Err(e),
    };
    conn.reply(result.map(BlocksResp::WriteBlock)).await
}

async fn start_write(
    services: &Services,
    req: &WriteBlockReq,
    peer: SocketAddr,
) -> Result<Upload, EggsError> {
    let service = service(services, req.block_service_id)?;
    let expected = crypto::write_certificate(
        service.key(),
        req.block_service_id,
        req.block_id,
        req.crc,
        req.size,
    );
    if !crypto::verify(&expected, &req.certificate) {
        tracing::warn!(
            "{peer}: bad write certificate for block {:016x} on {:016x}",
            req.block_id.0,
            req.block_service_id.0
        );
        return Err(EggsError::BadCertificate);
    }
    if service.refuses_writes() {
        return Err(EggsError::BlockServiceReadOnly);
    }
    let s = service.clone();
    let (id, size, crc) = (req.block_id, req.size, req.crc);
    match blocking(move || s.store.begin_write(id, size, crc)).await {
        Ok(writer) => Ok(Upload { service, writer }),
        Err(e) => Err(reported(e, "write", id, &service)),
    }
}

/// Checks the CRC, makes the block durable, and only then signs the proof.
async fn finish_write(u: Upload, req: &WriteBlockReq) -> Result<WriteBlockResp, EggsError> {
    let Upload { service, writer } = u;
    let s = service.clone();
    blocking(move || s.store.commit(writer))
        .await
        .map_err(|e| reported(e, "write", req.block_id, &service))?;
    Ok(WriteBlockResp {
        proof: crypto::write_proof(service.key(), req.block_service_id, req.block_id),
    })
}

/// A window of pages read and verified, with its data.
type Window = (Range<u32>, Vec<u8>);

/// Streams the requested range a window at a time, each window read and verified before any
/// of it is sent (the next window is read while one is sent). Corruption in the first
/// window is reported as `BadBlockCrc` before any data. Corruption found in a later window,
/// after the response frame went out, closes the connection instead: the client then sees a
/// short read, never unverified data.
async fn fetch_block(services: &Services, conn: &mut Conn, req: FetchBlockReq) -> Flow {
    let (service, block, pages) = match open_for_fetch(services, &req).await {
        Ok(x) => x,
        Err(e) => return conn.reply(Err(e)).await,
    };
    let want = u64::from(req.offset)..u64::from(req.offset) + u64::from(req.count);
    let mut windows = store::windows(pages);
    let mut current = match windows.next() {
        None => None,
        Some(w) => match spawn_read(&block, w, Vec::new()).await {
            Ok(window) => Some(window),
            Err(e) => {
                return conn
                    .reply(Err(reported(e, "fetch", req.block_id, &service)))
                    .await
            }
        },
    };
    let resp = BlocksResp::FetchBlock(FetchBlockResp { count: req.count });
    if conn.reply(Ok(resp)).await == Flow::Close {
        return Flow::Close;
    }
    let mut spare = Vec::new();
    while let Some((pages, data)) = current.take() {
        let next = windows
            .next()
            .map(|w| spawn_read(&block, w, std::mem::take(&mut spare)));
        if send_window(conn, &block, &pages, &data, &want).await == Flow::Close {
            return Flow::Close;
        }
        spare = data;
        if let Some(next) = next {
            match next.await {
                Ok(window) => current = Some(window),
                Err(e) => {
                    let _ = reported(e, "fetch", req.block_id, &service);
                    tracing::warn!(
                        "{}: closing mid-fetch, the client sees a short read",
                        conn.peer
                    );
                    return Flow::Close;
                }
            }
        }
    }
    Flow::Continue
}

/// Opens the block and works out which pages the request needs.
async fn open_for_fetch(
    services: &Services,
    req: &FetchBlockReq,
) -> Result<(Arc<Service>, Arc<BlockFile>, Range<u32>), EggsError> {
    let service = service(services, req.block_service_id)?;
    let s = service.clone();
    let id = req.block_id;
    let block = blocking(move || s.store.open_block(id))
        .await
        .map_err(|e| reported(e, "fetch", req.block_id, &service))?;
    let end = u64::from(req.offset) + u64::from(req.count);
    if end > u64::from(block.size_bytes()) {
        return Err(EggsError::MalformedRequest);
    }
    let pages = store::page_range(req.offset, req.count);
    Ok((service, Arc::new(block), pages))
}

/// Starts reading and verifying `pages` into `buf` on the blocking pool; the read goes on
/// even before the returned future is polled.
fn spawn_read(
    block: &Arc<BlockFile>,
    pages: Range<u32>,
    mut buf: Vec<u8>,
) -> impl std::future::Future<Output = Result<Window, StoreError>> {
    let block = block.clone();
    let handle = tokio::task::spawn_blocking(move || {
        block.read_pages(pages.clone(), &mut buf)?;
        Ok((pages, buf))
    });
    async move {
        handle
            .await
            .unwrap_or_else(|e| Err(StoreError::Io(std::io::Error::other(e.to_string()))))
    }
}

/// Sends the part of a verified window that lies in the requested range.
async fn send_window(
    conn: &mut Conn,
    block: &BlockFile,
    pages: &Range<u32>,
    data: &[u8],
    want: &Range<u64>,
) -> Flow {
    let have = store::page_bytes(pages, block.size_bytes());
    let from = want.start.max(have.start) - have.start;
    let to = want.end.min(have.end).saturating_sub(have.start);
    match data.get(usize_of(from)..usize_of(to)) {
        Some(part) => conn.send_data(part).await,
        None => {
            tracing::error!("window {pages:?} does not cover {want:?}; closing");
            Flow::Close
        }
    }
}

async fn erase_block(
    services: &Services,
    req: EraseBlockReq,
    peer: SocketAddr,
) -> Result<EraseBlockResp, EggsError> {
    let service = service(services, req.block_service_id)?;
    let expected = crypto::erase_certificate(service.key(), req.block_service_id, req.block_id);
    if !crypto::verify(&expected, &req.certificate) {
        tracing::warn!(
            "{peer}: bad erase certificate for block {:016x} on {:016x}",
            req.block_id.0,
            req.block_service_id.0
        );
        return Err(EggsError::BadCertificate);
    }
    if service.refuses_erasures() {
        return Err(EggsError::BlockServiceReadOnly);
    }
    let s = service.clone();
    let id = req.block_id;
    blocking(move || s.store.erase(id))
        .await
        .map_err(|e| reported(e, "erase", req.block_id, &service))?;
    Ok(EraseBlockResp {
        proof: crypto::erase_proof(service.key(), req.block_service_id, req.block_id),
    })
}

async fn check_block(services: &Services, req: CheckBlockReq) -> Result<CheckBlockResp, EggsError> {
    let service = service(services, req.block_service_id)?;
    let s = service.clone();
    blocking(move || s.store.check(req.block_id, req.size, req.crc))
        .await
        .map_err(|e| reported(e, "check", req.block_id, &service))?;
    Ok(CheckBlockResp {})
}

async fn stats(
    services: &Services,
    req: BlockServiceStatsReq,
) -> Result<BlockServiceStatsResp, EggsError> {
    let service = service(services, req.block_service_id)?;
    let s = service.clone();
    let space = blocking(move || Ok(s.store.space()?)).await.map_err(|e| {
        tracing::error!("{}: cannot read free space: {e}", service.path().display());
        EggsError::BlockIoError
    })?;
    Ok(BlockServiceStatsResp {
        capacity_bytes: space.capacity_bytes,
        available_bytes: space.available_bytes,
        blocks: service.store.block_count(),
    })
}
