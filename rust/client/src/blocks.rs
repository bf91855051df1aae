//! Block-service client: writes, fetches and erases blocks over TCP.
//!
//! Block data never travels inside a frame: it follows a `WriteBlock` request frame and a
//! `FetchBlock` response frame on the connection (`docs/PROTOCOL.md`, section 1.2), so it is
//! sent from and received into the caller's buffers without copies.
//!
//! Connections are kept in a small pool per address, since a file's spans go to the same few
//! services over and over. A connection is dropped after any error (its stream position is no
//! longer known); a pooled connection the server has meanwhile closed is retried once on a
//! fresh one. Every read and write is bounded by a stall timeout rather than an overall one,
//! so a large block on a slow link is fine but a silent peer is not.

use crate::error::{ClientError, Result};
use eggs_common::frame::{read_frame, write_frame, FrameError};
use eggs_protocol::blocks::{
    BlocksReq, BlocksRequest, BlocksResp, BlocksResponse, CheckBlockReq, EraseBlockReq,
    FetchBlockReq, WriteBlockReq,
};
use eggs_protocol::{BlockId, BlockServiceId};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Clone, Debug)]
pub struct BlockClientOptions {
    pub connect_timeout: Duration,
    /// Longest wait for any progress of a read or a write on a connection.
    pub io_timeout: Duration,
    /// Idle connections kept per block-service address.
    pub max_idle_per_addr: usize,
}

impl Default for BlockClientOptions {
    fn default() -> Self {
        BlockClientOptions {
            connect_timeout: Duration::from_secs(2),
            io_timeout: Duration::from_secs(10),
            max_idle_per_addr: 8,
        }
    }
}

/// Data moves in pieces of at most this much, each under its own stall timeout.
const IO_CHUNK: usize = 1 << 20;

/// Connections to block services, shared by every request of a client.
pub struct BlockPool {
    opts: BlockClientOptions,
    idle: Mutex<HashMap<SocketAddr, Vec<TcpStream>>>,
    /// Services that recently did not answer (time-out, refused or broken connection), and
    /// when. Readers try other blocks of a span first instead of waiting for a time-out
    /// again on every read.
    unreachable: Mutex<HashMap<SocketAddr, std::time::Instant>>,
}

/// How long a service that did not answer is tried last.
const UNREACHABLE_MEMORY: std::time::Duration = std::time::Duration::from_secs(30);

/// Why one attempt on one connection failed.
struct AttemptError {
    err: ClientError,
    /// The peer had closed the connection before answering: worth retrying on a fresh one if
    /// this one came from the pool.
    stale: bool,
    /// The connection can carry further requests (an error answer with nothing after it).
    reusable: bool,
}

type Attempt<T> = std::result::Result<T, AttemptError>;

/// Block data that travels outside the frames of a request.
enum Data<'a> {
    None,
    /// Follows the request frame (a write), in pieces.
    Send(&'a [&'a [u8]]),
    /// Follows the response frame (a fetch), into the caller's buffer.
    Receive(&'a mut [u8]),
}

fn fatal(err: ClientError) -> AttemptError {
    AttemptError {
        err,
        stale: false,
        reusable: false,
    }
}

impl BlockPool {
    pub fn new(opts: BlockClientOptions) -> BlockPool {
        BlockPool {
            opts,
            idle: Mutex::new(HashMap::new()),
            unreachable: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `addr` failed to answer within the last [`UNREACHABLE_MEMORY`].
    pub fn recently_unreachable(&self, addr: SocketAddr) -> bool {
        let map = self.unreachable.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&addr)
            .is_some_and(|at| at.elapsed() < UNREACHABLE_MEMORY)
    }

    /// Remembers whether `addr` answered: transport failures mark it, anything the service
    /// said (even an error) clears the mark.
    fn note_reachability<T>(&self, addr: SocketAddr, r: &Result<T>) {
        let mut map = self.unreachable.lock().unwrap_or_else(|p| p.into_inner());
        match r {
            Err(ClientError::Io { .. } | ClientError::Timeout { .. }) => {
                map.insert(addr, std::time::Instant::now());
            }
            _ => {
                map.remove(&addr);
            }
        }
    }

    pub fn options(&self) -> &BlockClientOptions {
        &self.opts
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Vec<TcpStream>>> {
        // A panic while holding the lock cannot leave the map inconsistent.
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A pooled connection (`true`) or a new one (`false`).
    async fn checkout(&self, addr: SocketAddr, what: &str) -> Result<(TcpStream, bool)> {
        if let Some(conn) = self.idle().get_mut(&addr).and_then(|v| v.pop()) {
            return Ok((conn, true));
        }
        let conn = tokio::time::timeout(self.opts.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| timeout_error(what, self.opts.connect_timeout))?
            .map_err(|e| ClientError::io(format!("{what}: connecting"), e))?;
        conn.set_nodelay(true).ok();
        Ok((conn, false))
    }

    fn checkin(&self, addr: SocketAddr, conn: TcpStream) {
        let mut idle = self.idle();
        let conns = idle.entry(addr).or_default();
        if conns.len() < self.opts.max_idle_per_addr {
            conns.push(conn);
        }
    }

    /// Forgets every idle connection (e.g. after block services restarted).
    pub fn clear(&self) {
        self.idle().clear();
    }

    /// Writes one block made of `pieces` (sent in order; their lengths add up to `req.size`)
    /// and returns the service's proof.
    pub async fn write_block(
        &self,
        addr: SocketAddr,
        req: &WriteBlockReq,
        pieces: &[&[u8]],
    ) -> Result<[u8; 8]> {
        let what = format!(
            "writing block {} to block service {} at {addr}",
            req.block_id.0, req.block_service_id.0
        );
        let total: usize = pieces.iter().map(|p| p.len()).sum();
        if total != req.size as usize {
            return Err(ClientError::BadResponse {
                what,
                why: format!("{total} bytes of data for a {} byte block", req.size),
            });
        }
        let request = BlocksRequest {
            body: BlocksReq::WriteBlock(req.clone()),
        };
        let expect = |r: &BlocksResp| matches!(r, BlocksResp::WriteBlock(_));
        match self
            .call(addr, &what, &request, expect, Data::Send(pieces))
            .await?
        {
            BlocksResp::WriteBlock(r) => Ok(r.proof),
            _ => Err(wrong_kind(&what)),
        }
    }

    /// Reads `dest.len()` bytes at `offset` of a block into `dest`.
    pub async fn fetch_block(
        &self,
        addr: SocketAddr,
        block_service_id: BlockServiceId,
        block_id: BlockId,
        offset: u32,
        dest: &mut [u8],
    ) -> Result<()> {
        let r = self
            .fetch_block_once(addr, block_service_id, block_id, offset, dest)
            .await;
        self.note_reachability(addr, &r);
        r
    }

    async fn fetch_block_once(
        &self,
        addr: SocketAddr,
        block_service_id: BlockServiceId,
        block_id: BlockId,
        offset: u32,
        dest: &mut [u8],
    ) -> Result<()> {
        let what = format!(
            "fetching block {} from block service {} at {addr}",
            block_id.0, block_service_id.0
        );
        let count = u32::try_from(dest.len()).map_err(|_| ClientError::BadResponse {
            what: what.clone(),
            why: format!("cannot fetch {} bytes at once", dest.len()),
        })?;
        let request = BlocksRequest {
            body: BlocksReq::FetchBlock(FetchBlockReq {
                block_service_id,
                block_id,
                offset,
                count,
            }),
        };
        let expect = |r: &BlocksResp| matches!(r, BlocksResp::FetchBlock(_));
        self.call(addr, &what, &request, expect, Data::Receive(dest))
            .await?;
        Ok(())
    }

    /// Erases a block with a certificate from the shard; returns the service's proof.
    pub async fn erase_block(&self, addr: SocketAddr, req: &EraseBlockReq) -> Result<[u8; 8]> {
        let what = format!(
            "erasing block {} on block service {} at {addr}",
            req.block_id.0, req.block_service_id.0
        );
        let request = BlocksRequest {
            body: BlocksReq::EraseBlock(req.clone()),
        };
        let expect = |r: &BlocksResp| matches!(r, BlocksResp::EraseBlock(_));
        match self.call(addr, &what, &request, expect, Data::None).await? {
            BlocksResp::EraseBlock(e) => Ok(e.proof),
            _ => Err(wrong_kind(&what)),
        }
    }

    /// Asks the service to verify a whole block on its disk (every page CRC and the block's
    /// CRC). `BlockNotFound` and `BadBlockCrc` errors tell a missing block from a corrupt one.
    pub async fn check_block(&self, addr: SocketAddr, req: &CheckBlockReq) -> Result<()> {
        let what = format!(
            "checking block {} on block service {} at {addr}",
            req.block_id.0, req.block_service_id.0
        );
        let request = BlocksRequest {
            body: BlocksReq::CheckBlock(req.clone()),
        };
        let expect = |r: &BlocksResp| matches!(r, BlocksResp::CheckBlock(_));
        self.call(addr, &what, &request, expect, Data::None).await?;
        Ok(())
    }

    /// The one retry loop of every block request: an attempt on a pooled connection that the
    /// service had closed meanwhile is tried again, once, on a fresh connection. `expect`
    /// says whether a response is of the kind asked for (one of another kind fails the
    /// request and drops the connection).
    async fn call(
        &self,
        addr: SocketAddr,
        what: &str,
        request: &BlocksRequest,
        expect: fn(&BlocksResp) -> bool,
        mut data: Data<'_>,
    ) -> Result<BlocksResp> {
        for _ in 0..2 {
            let (mut conn, reused) = self.checkout(addr, what).await?;
            let r = self
                .attempt(&mut conn, what, request, expect, &mut data)
                .await;
            if let Some(resp) = self.finish(addr, conn, reused, r)? {
                return Ok(resp);
            }
        }
        Err(stale_twice(what))
    }

    /// One request on one connection: the frame, the data that follows it (writes), the
    /// response frame and the data that follows that (fetches).
    async fn attempt(
        &self,
        conn: &mut TcpStream,
        what: &str,
        request: &BlocksRequest,
        expect: fn(&BlocksResp) -> bool,
        data: &mut Data<'_>,
    ) -> Attempt<BlocksResp> {
        let t = self.opts.io_timeout;
        with_timeout(t, write_frame(conn, request))
            .await
            .map_err(|e| frame_error(what, e, true))?;
        if let Data::Send(pieces) = data {
            for piece in pieces.iter() {
                for chunk in piece.chunks(IO_CHUNK) {
                    with_timeout(t, conn.write_all(chunk))
                        .await
                        .map_err(|e| frame_error(what, e, true))?;
                }
            }
        }
        let resp = self.read_response(conn, what).await?;
        if !expect(&resp) {
            return Err(fatal(wrong_kind(what)));
        }
        if let (Data::Receive(dest), BlocksResp::FetchBlock(r)) = (data, &resp) {
            if r.count as usize != dest.len() {
                return Err(fatal(ClientError::BadResponse {
                    what: what.into(),
                    why: format!("{} bytes announced, {} asked for", r.count, dest.len()),
                }));
            }
            // A service that finds a corrupt page after streaming earlier ones closes the
            // connection: that shows up here as a short read, and fails the block.
            for chunk in dest.chunks_mut(IO_CHUNK) {
                with_timeout(t, conn.read_exact(chunk))
                    .await
                    .map_err(|e| frame_error(what, e, false))?;
            }
        }
        Ok(resp)
    }

    /// Reads one response frame; a server error is reported with the connection reusable
    /// (nothing follows an error frame).
    async fn read_response(&self, conn: &mut TcpStream, what: &str) -> Attempt<BlocksResp> {
        let frame = with_timeout(self.opts.io_timeout, read_frame(conn))
            .await
            .map_err(|e| frame_error(what, e, false))?;
        let Some(BlocksResponse { result }) = frame else {
            return Err(AttemptError {
                err: ClientError::BadResponse {
                    what: what.into(),
                    why: "connection closed by the block service".into(),
                },
                stale: true,
                reusable: false,
            });
        };
        result.map_err(|err| AttemptError {
            err: ClientError::Eggs {
                what: what.into(),
                err,
            },
            stale: false,
            reusable: true,
        })
    }

    /// Returns the connection to the pool when it is still usable; `Ok(None)` means "retry
    /// on a fresh connection".
    fn finish<T>(
        &self,
        addr: SocketAddr,
        conn: TcpStream,
        reused: bool,
        r: Attempt<T>,
    ) -> Result<Option<T>> {
        match r {
            Ok(v) => {
                self.checkin(addr, conn);
                Ok(Some(v))
            }
            Err(e) if e.stale && reused => {
                tracing::debug!("{}: pooled connection was closed, retrying", e.err);
                Ok(None)
            }
            Err(e) => {
                if e.reusable {
                    self.checkin(addr, conn);
                }
                Err(e.err)
            }
        }
    }
}

/// Runs one I/O step under the stall timeout.
async fn with_timeout<T, E>(
    t: Duration,
    fut: impl std::future::Future<Output = std::result::Result<T, E>>,
) -> std::result::Result<T, FrameError>
where
    FrameError: From<E>,
{
    match tokio::time::timeout(t, fut).await {
        Ok(r) => r.map_err(FrameError::from),
        Err(_) => Err(FrameError::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no progress in {} ms", t.as_millis()),
        ))),
    }
}

/// `sending`: the failure happened while sending the request, so an old pooled connection
/// that the peer closed shows up here as a reset or broken pipe.
fn frame_error(what: &str, e: FrameError, sending: bool) -> AttemptError {
    match e {
        FrameError::Io(io) => {
            use std::io::ErrorKind::*;
            let closed = matches!(io.kind(), BrokenPipe | ConnectionReset | UnexpectedEof);
            AttemptError {
                err: ClientError::io(what, io),
                stale: closed && sending,
                reusable: false,
            }
        }
        other => fatal(ClientError::BadResponse {
            what: what.into(),
            why: other.to_string(),
        }),
    }
}

fn timeout_error(what: &str, t: Duration) -> ClientError {
    ClientError::Timeout {
        what: format!("{what}: connecting"),
        attempts: 1,
        elapsed_ms: eggs_protocol::conv::millis_of(t),
    }
}

fn wrong_kind(what: &str) -> ClientError {
    ClientError::BadResponse {
        what: what.into(),
        why: "response of the wrong kind".into(),
    }
}

fn stale_twice(what: &str) -> ClientError {
    ClientError::BadResponse {
        what: what.into(),
        why: "the block service closed the connection twice without answering".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use eggs_protocol::blocks::{FetchBlockResp, WriteBlockResp};
    use eggs_protocol::conv::low_byte;
    use eggs_protocol::EggsError;
    use tokio::net::TcpListener;

    /// A fake block service: answers writes with a proof and fetches with bytes `i as u8`
    /// (or with `fetch_error`), closing after `close_after` requests per connection.
    async fn fake_service(
        fetch_error: Option<EggsError>,
        close_after: usize,
        short: bool,
    ) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((mut conn, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    for _ in 0..close_after {
                        if serve_one(&mut conn, fetch_error, short).await.is_none() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn serve_one(
        conn: &mut TcpStream,
        fetch_error: Option<EggsError>,
        short: bool,
    ) -> Option<()> {
        let req: BlocksRequest = read_frame(conn).await.ok()??;
        let result = match req.body {
            BlocksReq::WriteBlock(w) => {
                let mut data = vec![0u8; w.size as usize];
                conn.read_exact(&mut data).await.ok()?;
                let proof = crc32c::crc32c(&data).to_le_bytes();
                Ok(BlocksResp::WriteBlock(WriteBlockResp {
                    proof: [proof[0], proof[1], proof[2], proof[3], 0, 0, 0, 0],
                }))
            }
            BlocksReq::FetchBlock(f) => match fetch_error {
                Some(e) => Err(e),
                None => {
                    let resp = BlocksResponse {
                        result: Ok(BlocksResp::FetchBlock(FetchBlockResp { count: f.count })),
                    };
                    write_frame(conn, &resp).await.ok()?;
                    let data: Vec<u8> = (0..f.count)
                        .map(|i| ((i + f.offset) & 0xff) as u8)
                        .collect();
                    let n = if short { data.len() / 2 } else { data.len() };
                    conn.write_all(&data[..n]).await.ok()?;
                    if short {
                        return None;
                    }
                    return Some(());
                }
            },
            _ => Err(EggsError::MalformedRequest),
        };
        write_frame(conn, &BlocksResponse { result }).await.ok()
    }

    fn write_req(data: &[u8]) -> WriteBlockReq {
        WriteBlockReq {
            block_service_id: BlockServiceId(1),
            block_id: BlockId(2),
            crc: crc32c::crc32c(data),
            size: u32::try_from(data.len()).unwrap(),
            certificate: [0; 8],
        }
    }

    #[tokio::test]
    async fn write_and_fetch_reuse_connections() {
        let addr = fake_service(None, usize::MAX, false).await;
        let pool = BlockPool::new(BlockClientOptions::default());
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i & 0xff) as u8).collect();
        let (a, b) = data.split_at(12345);
        let proof = pool
            .write_block(addr, &write_req(&data), &[a, b])
            .await
            .unwrap();
        assert_eq!(proof[..4], crc32c::crc32c(&data).to_le_bytes());
        let mut buf = vec![0u8; 2_000_000];
        pool.fetch_block(addr, BlockServiceId(1), BlockId(2), 7, &mut buf)
            .await
            .unwrap();
        assert!(buf
            .iter()
            .enumerate()
            .all(|(i, &b)| b == low_byte((i + 7) as u64)));
        assert_eq!(pool.idle().get(&addr).map(Vec::len), Some(1));
    }

    #[tokio::test]
    async fn closed_pooled_connections_are_retried() {
        // The service closes every connection after one request.
        let addr = fake_service(None, 1, false).await;
        let pool = BlockPool::new(BlockClientOptions::default());
        for _ in 0..3 {
            let mut buf = vec![0u8; 4096];
            pool.fetch_block(addr, BlockServiceId(1), BlockId(2), 0, &mut buf)
                .await
                .unwrap();
            pool.write_block(addr, &write_req(&buf), &[&buf])
                .await
                .unwrap();
        }
    }

    #[tokio::test]
    async fn errors_short_reads_and_refusals() {
        let pool = BlockPool::new(BlockClientOptions::default());
        let addr = fake_service(Some(EggsError::BadBlockCrc), usize::MAX, false).await;
        let mut buf = vec![0u8; 100];
        let e = pool
            .fetch_block(addr, BlockServiceId(1), BlockId(2), 0, &mut buf)
            .await
            .unwrap_err();
        assert_eq!(e.eggs(), Some(EggsError::BadBlockCrc));
        // An error answer leaves the connection usable.
        assert_eq!(pool.idle().get(&addr).map(Vec::len), Some(1));

        let addr = fake_service(None, usize::MAX, true).await;
        let e = pool
            .fetch_block(addr, BlockServiceId(1), BlockId(2), 0, &mut buf)
            .await
            .unwrap_err();
        assert!(matches!(e, ClientError::Io { .. }), "{e}");
        assert_eq!(pool.idle().get(&addr).map_or(0, Vec::len), 0);

        // Nothing listens there any more.
        let gone = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        assert!(pool
            .fetch_block(gone, BlockServiceId(1), BlockId(2), 0, &mut buf)
            .await
            .is_err());
        assert!(pool
            .write_block(gone, &write_req(&buf), &[&buf[..50]])
            .await
            .is_err());
    }

    #[tokio::test]
    async fn silent_services_time_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _hold = tokio::spawn(async move {
            let conn = listener.accept().await;
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(conn);
        });
        let pool = BlockPool::new(BlockClientOptions {
            io_timeout: Duration::from_millis(200),
            ..Default::default()
        });
        let mut buf = vec![0u8; 10];
        let e = pool
            .fetch_block(addr, BlockServiceId(1), BlockId(2), 0, &mut buf)
            .await
            .unwrap_err();
        assert!(
            matches!(&e, ClientError::Io { source, .. } if source.kind() == std::io::ErrorKind::TimedOut),
            "{e}"
        );
    }
}
