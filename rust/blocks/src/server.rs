//! The TCP side: the accept loop, one task per connection, and the framing of requests,
//! responses and the block data that travels after them.
//!
//! A connection carries requests one after the other, each answered in order. Anything that
//! leaves the connection out of step (a bad frame, a peer that stops sending or reading, a
//! block found corrupt after part of it was sent) closes that connection and nothing else.

use crate::handlers;
use crate::service::Services;
use eggs_common::frame::{read_frame, write_frame, FrameError};
use eggs_protocol::blocks::{BlocksRequest, BlocksResp, BlocksResponse};
use eggs_protocol::codec::DecodeError;
use eggs_protocol::EggsError;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

/// How long a connection may sit between requests before it is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest wait for any one read or write within a request (a frame, a chunk of data).
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether a connection can carry another request.
#[must_use]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flow {
    Continue,
    Close,
}

/// Serves until `shutdown` resolves, then drops every connection.
pub(crate) async fn run(
    listener: TcpListener,
    services: Arc<Services>,
    shutdown: impl Future<Output = ()>,
) {
    eggs_common::tcp::accept_loop(&listener, crate::MAX_CONNECTIONS, shutdown, |s, peer| {
        serve_connection(s, peer, services.clone())
    })
    .await;
}

async fn serve_connection(stream: TcpStream, peer: SocketAddr, services: Arc<Services>) {
    // Responses are written whole; waiting to coalesce them only adds latency.
    let _ = stream.set_nodelay(true);
    let (read, write) = stream.into_split();
    let mut conn = Conn {
        read: BufReader::new(read),
        write,
        peer,
    };
    loop {
        let read = tokio::time::timeout(IDLE_TIMEOUT, read_frame(&mut conn.read)).await;
        let req: BlocksRequest = match read {
            Ok(Ok(Some(req))) => req,
            Ok(Ok(None)) => return,
            Ok(Err(e)) => return conn.reject(e).await,
            Err(_) => {
                tracing::debug!("{peer}: idle for {IDLE_TIMEOUT:?}, closing");
                return;
            }
        };
        tracing::trace!("{peer}: {}", req.body.kind());
        if handlers::handle(&services, &mut conn, req.body).await == Flow::Close {
            return;
        }
    }
}

/// One client connection.
pub(crate) struct Conn {
    read: BufReader<OwnedReadHalf>,
    write: OwnedWriteHalf,
    pub peer: SocketAddr,
}

impl Conn {
    /// Sends one response frame.
    pub async fn reply(&mut self, result: Result<BlocksResp, EggsError>) -> Flow {
        let resp = BlocksResponse { result };
        match tokio::time::timeout(IO_TIMEOUT, write_frame(&mut self.write, &resp)).await {
            Ok(Ok(())) => Flow::Continue,
            Ok(Err(e)) => {
                tracing::debug!("{}: cannot send response: {e}", self.peer);
                Flow::Close
            }
            Err(_) => {
                tracing::debug!("{}: not reading responses, closing", self.peer);
                Flow::Close
            }
        }
    }

    /// Sends block data after a response frame.
    pub async fn send_data(&mut self, data: &[u8]) -> Flow {
        match tokio::time::timeout(IO_TIMEOUT, self.write.write_all(data)).await {
            Ok(Ok(())) => Flow::Continue,
            Ok(Err(e)) => {
                tracing::debug!("{}: cannot send data: {e}", self.peer);
                Flow::Close
            }
            Err(_) => {
                tracing::debug!("{}: not reading data, closing", self.peer);
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
    async fn reject(&mut self, e: FrameError) {
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
