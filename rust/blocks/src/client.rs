//! Sending block-service requests over an established connection, one request at a time.
//! Any stream works (usually a `TcpStream`); after an error other than
//! [`BlockClientError::Eggs`] the connection may be out of step and should be dropped.
//!
//! ```no_run
//! # async fn example(addr: std::net::SocketAddr) -> Result<(), eggs_blocks::client::BlockClientError> {
//! use eggs_protocol::blocks::FetchBlockReq;
//! use eggs_protocol::{BlockId, BlockServiceId};
//! let mut conn = tokio::net::TcpStream::connect(addr).await?;
//! let req = FetchBlockReq {
//!     block_service_id: BlockServiceId(1),
//!     block_id: BlockId(2),
//!     offset: 0,
//!     count: 4096,
//! };
//! let data = eggs_blocks::client::fetch_block(&mut conn, req).await?;
//! # Ok(())
//! # }
//! ```

use eggs_common::frame::{read_frame, write_frame, FrameError};
use eggs_protocol::blocks::{
    BlockServiceStatsReq, BlockServiceStatsResp, BlocksReq, BlocksRequest, BlocksResp,
    BlocksResponse, CheckBlockReq, EraseBlockReq, EraseBlockResp, FetchBlockReq, WriteBlockReq,
    WriteBlockResp,
};
use eggs_protocol::codec::RequestBody;
use eggs_protocol::EggsError;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

#[derive(Debug, thiserror::Error)]
pub enum BlockClientError {
    /// The block service answered with an error; the connection is still usable.
    #[error("block service: {0}")]
    Eggs(EggsError),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("bad response: {0}")]
    BadResponse(String),
}

impl BlockClientError {
    /// The server-side error, if that is what this is.
    pub fn eggs(&self) -> Option<EggsError> {
        match self {
            BlockClientError::Eggs(e) => Some(*e),
            _ => None,
        }
    }
}

impl From<FrameError> for BlockClientError {
    fn from(e: FrameError) -> BlockClientError {
        match e {
            FrameError::Io(io) => BlockClientError::Io(io),
            other => BlockClientError::BadResponse(other.to_string()),
        }
    }
}

pub type Result<T> = std::result::Result<T, BlockClientError>;

/// Writes a block: the request, then exactly `data` (whose length must be `req.size`).
/// Returns the service's proof, which the caller should check against the shard's.
pub async fn write_block<S>(s: &mut S, req: WriteBlockReq, data: &[u8]) -> Result<WriteBlockResp>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if data.len() as u64 != u64::from(req.size) {
        return Err(BlockClientError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} bytes of data for a block of {}", data.len(), req.size),
        )));
    }
    send(s, req.into_req()).await?;
    s.write_all(data).await?;
    s.flush().await?;
    receive::<WriteBlockReq, _>(s).await
}

/// Reads `req.count` bytes at `req.offset`.
pub async fn fetch_block<S>(s: &mut S, req: FetchBlockReq) -> Result<Vec<u8>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let count = req.count;
    request(s, req).await.and_then(|resp| {
        if resp.count == count {
            Ok(())
        } else {
            Err(BlockClientError::BadResponse(format!(
                "{} bytes announced, {count} asked for",
                resp.count
            )))
        }
    })?;
    let mut data = vec![0u8; count as usize];
    s.read_exact(&mut data).await?;
    Ok(data)
}

pub async fn erase_block<S>(s: &mut S, req: EraseBlockReq) -> Result<EraseBlockResp>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    request(s, req).await
}

/// Ok when the stored block is intact and has the request's size and CRC.
pub async fn check_block<S>(s: &mut S, req: CheckBlockReq) -> Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    request(s, req).await.map(|_| ())
}

pub async fn block_service_stats<S>(
    s: &mut S,
    req: BlockServiceStatsReq,
) -> Result<BlockServiceStatsResp>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    request(s, req).await
}

/// Sends a request with no data and reads its response frame.
async fn request<B, S>(s: &mut S, body: B) -> Result<B::RespBody>
where
    B: RequestBody<Req = BlocksReq, Resp = BlocksResp>,
    S: AsyncRead + AsyncWrite + Unpin,
{
    send(s, body.into_req()).await?;
    s.flush().await?;
    receive::<B, _>(s).await
}

async fn send<S: AsyncWrite + Unpin>(s: &mut S, body: BlocksReq) -> Result<()> {
    write_frame(s, &BlocksRequest { body }).await?;
    Ok(())
}

async fn receive<B, S>(s: &mut S) -> Result<B::RespBody>
where
    B: RequestBody<Req = BlocksReq, Resp = BlocksResp>,
    S: AsyncRead + Unpin,
{
    let resp: BlocksResponse = read_frame(s)
        .await?
        .ok_or_else(|| BlockClientError::BadResponse("connection closed".into()))?;
    match resp.result {
        Ok(r) => B::from_resp(r)
            .ok_or_else(|| BlockClientError::BadResponse("response of the wrong kind".into())),
        Err(e) => Err(BlockClientError::Eggs(e)),
    }
}
