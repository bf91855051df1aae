//! One client connection: the framing of requests, responses and the block data that
//! travels after them. A connection carries requests one after the other, each answered in
//! order.

use eggs_common::frame::{read_frame, write_frame, FrameError};
use eggs_protocol::blocks::{BlocksRequest, BlocksResp, BlocksResponse};
use eggs_protocol::codec::DecodeError;
use eggs_protocol::EggsError;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// Longest wait for any one read or write within a request (a frame, a chunk of data).
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether a connection can carry another request.
#[must_use]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flow {
    Continue,
    Close,
}

/// One client connection.
pub(crate) struct Conn {
    read: BufReader<OwnedReadHalf>,
    write: OwnedWriteHalf,
    pub peer: SocketAddr,
}

impl Conn {
    pub fn new(stream: TcpStream, peer: SocketAddr) -> Conn {
        // Responses are written whole; waiting to coalesce them only adds latency.
        let _ = stream.set_nodelay(true);
        let (read, write) = stream.into_split();
        Conn {
            read: BufReader::new(read),
            write,
            peer,
        }
    }

    /// The next request frame; `None` when the peer closed the connection between requests.
    pub async fn read_request(&mut self) -> Result<Option<BlocksRequest>, FrameError> {
        read_frame(&mut self.read).await
    }

    /// Sends one response frame.
    pub async fn reply(&mut self, result: Result<BlocksResp, EggsError>) -> Flow {
        let resp = BlocksResponse { result };
        let sent = tokio::time::timeout(IO_TIMEOUT, write_frame(&mut self.write, &resp)).await;
        self.sent(sent, "responses")
    }

    /// Sends block data after a response frame.
    pub async fn send_data(&mut self, data: &[u8]) -> Flow {
        let sent = tokio::time::timeout(IO_TIMEOUT, self.write.write_all(data)).await;
        self.sent(sent, "data")
    }

    /// Whether a timed send of `what` left the connection usable; logs why not.
    fn sent<E: std::fmt::Display>(
        &self,
        sent: Result<Result<(), E>, tokio::time::error::Elapsed>,
        what: &str,
    ) -> Flow {
        match sent {
            Ok(Ok(())) => Flow::Continue,
            Ok(Err(e)) => {
                tracing::debug!("{}: cannot send {what}: {e}", self.peer);
                Flow::Close
            }
            Err(_) => {
                tracing::debug!("{}: not reading {what}, closing", self.peer);
                Flow::Close
            }
        }
    }

    /// Fills `buf` with block data that follows a request frame.
    pub async fn receive_data(&mut self, buf: &mut [u8]) -> io::Result<()> {
        match tokio::time::timeout(IO_TIMEOUT, self.read.read_exact(buf)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "peer stopped sending",
            )),
        }
    }

    /// Logs a bad frame and, when it was meant for us but does not decode (say, a request
    /// kind from a newer client), says so before the connection closes.
    pub async fn reject(&mut self, e: FrameError) {
        let peer = self.peer;
        match e {
            FrameError::Decode(DecodeError::Malformed(_) | DecodeError::Trailing(_)) => {
                tracing::warn!("{peer}: malformed request ({e}), closing");
                let _ = self.reply(Err(EggsError::MalformedRequest)).await;
            }
            FrameError::Io(io) if io.kind() != io::ErrorKind::UnexpectedEof => {
                tracing::debug!("{peer}: {io}, closing");
            }
            FrameError::Io(_) => tracing::warn!("{peer}: truncated frame, closing"),
            other => tracing::warn!("{peer}: bad frame ({other}), closing"),
        }
    }
}
