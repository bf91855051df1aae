//! The TCP side: the accept loop and one task per connection, which reads requests one
//! after the other and hands each to [`handlers`]. Anything that leaves the connection out
//! of step (a bad frame, a peer that stops sending or reading, a block found corrupt after
//! part of it was sent) closes that connection and nothing else.

use crate::conn::{Conn, Flow};
use crate::handlers;
use crate::service::Services;
use eggs_protocol::blocks::BlocksRequest;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

/// Connections served at once; further ones wait in the kernel's accept queue.
pub const MAX_CONNECTIONS: usize = 512;
/// How long a connection may sit between requests before it is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Serves until `shutdown` resolves, then drops every connection.
pub(crate) async fn run(
    listener: TcpListener,
    services: Arc<Services>,
    shutdown: impl Future<Output = ()>,
) {
    eggs_common::tcp::accept_loop(&listener, MAX_CONNECTIONS, shutdown, |s, peer| {
        serve_connection(s, peer, services.clone())
    })
    .await;
}

async fn serve_connection(stream: TcpStream, peer: SocketAddr, services: Arc<Services>) {
    let mut conn = Conn::new(stream, peer);
    loop {
        let read = tokio::time::timeout(IDLE_TIMEOUT, conn.read_request()).await;
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
