//! The accept loop shared by the TCP servers (shuckle, block services).

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// Pause after a failed accept (e.g. out of file descriptors) so as not to spin on it.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Runs `serve(stream, peer)` as a task for every accepted connection, accepting only while
/// fewer than `max_connections` are open (the rest wait in the kernel's backlog), until
/// `shutdown` resolves; then aborts the open connections. `serve` is dropped on return, so a
/// handle it captures is released then.
pub async fn accept_loop<F, Fut>(
    listener: &TcpListener,
    max_connections: usize,
    shutdown: impl Future<Output = ()>,
    mut serve: F,
) where
    F: FnMut(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::pin!(shutdown);
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(ended) = conns.join_next() => {
                if let Err(e) = ended {
                    tracing::error!("connection task failed: {e}");
                }
            }
            accepted = listener.accept(), if conns.len() < max_connections => {
                match accepted {
                    Ok((stream, peer)) => {
                        conns.spawn(serve(stream, peer));
                    }
                    Err(e) => {
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    }
                }
            }
        }
    }
    tracing::info!("shutting down, closing {} connections", conns.len());
    conns.shutdown().await;
}
