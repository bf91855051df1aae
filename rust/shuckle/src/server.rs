//! The network layer: a TCP listener, one task per connection, and a single core thread that
//! owns the registry and the database.
//!
//! All requests go through the core thread over a channel, one at a time. That serialises
//! them without a lock held across a disk write, and keeps the synced RocksDB writes (which
//! can block for milliseconds) off the async worker threads.

use crate::registry::Registry;
use crate::store::Store;
use crate::ShuckleError;
use eggs_common::frame::{read_frame, write_frame, FrameError};
use eggs_protocol::codec::DecodeError;
use eggs_protocol::shuckle::{ShuckleReq, ShuckleRequest, ShuckleResp, ShuckleResponse};
use eggs_protocol::{EggsError, EggsTime};
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::BufReader;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

/// Requests waiting for the core thread; connection tasks wait when it is full.
const QUEUE_LEN: usize = 1024;

/// Connection limits.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub max_connections: usize,
    /// Longest wait for a whole request frame, or to hand a response to the kernel.
    pub idle_timeout: Duration,
}

/// A request for the core thread and where to send its answer.
struct Job {
    req: ShuckleReq,
    reply: oneshot::Sender<Result<ShuckleResp, EggsError>>,
}

/// What connection tasks hold to reach the core thread.
#[derive(Clone)]
struct CoreHandle(mpsc::Sender<Job>);

impl CoreHandle {
    async fn call(&self, req: ShuckleReq) -> Result<ShuckleResp, EggsError> {
        let (reply, answer) = oneshot::channel();
        if self.0.send(Job { req, reply }).await.is_err() {
            return Err(EggsError::InternalError);
        }
        // A dropped reply means the core thread died mid-request.
        answer.await.unwrap_or(Err(EggsError::InternalError))
    }
}

/// The registry and its database, driven by one thread.
pub(crate) struct Core {
    pub registry: Registry,
    pub store: Store,
}

impl Core {
    /// Opens the database and rebuilds the registry from it.
    pub(crate) fn load(dir: &std::path::Path, stale_after: Duration) -> Result<Core, ShuckleError> {
        let store = Store::open(dir)?;
        let registry = Registry::restore(stale_after, store.load()?);
        let (shards, cdc, block_services) = registry.counts();
        tracing::info!(
            "loaded {shards} shards, {} CDC, {block_services} block services from {}",
            usize::from(cdc),
            dir.display()
        );
        Ok(Core { registry, store })
    }

    /// Answers one request, making its changes durable before they become visible.
    fn step(&mut self, req: ShuckleReq, now: EggsTime) -> Result<ShuckleResp, EggsError> {
        tracing::trace!("request {}", req.kind());
        let outcome = self.registry.handle(req, now);
        if !outcome.changes.is_empty() {
            if let Err(e) = self.store.write(&outcome.changes) {
                tracing::error!("cannot persist registry changes: {e}");
                return Err(EggsError::InternalError);
            }
            self.registry.apply(outcome.changes);
        }
        outcome.result
    }

    fn run(mut self, mut jobs: mpsc::Receiver<Job>) {
        // Ends when every CoreHandle is gone, after answering what was already queued.
        while let Some(job) = jobs.blocking_recv() {
            let result = self.step(job.req, EggsTime::now());
            // The connection may have closed meanwhile; the change stands all the same.
            let _ = job.reply.send(result);
        }
    }

    fn spawn(self) -> Result<(CoreHandle, std::thread::JoinHandle<()>), ShuckleError> {
        let (tx, rx) = mpsc::channel(QUEUE_LEN);
        let thread = std::thread::Builder::new()
            .name("shuckle-core".into())
            .spawn(move || self.run(rx))?;
        Ok((CoreHandle(tx), thread))
    }
}

/// Serves until `shutdown` resolves, then waits for the core thread so that the database is
/// closed (and can be reopened) when this returns.
pub(crate) async fn run(
    listener: TcpListener,
    core: Core,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ShuckleError> {
    let (handle, thread) = core.spawn()?;
    accept_loop(&listener, handle, limits, shutdown).await;
    drop(listener);
    let joined = tokio::task::spawn_blocking(move || thread.join()).await;
    match joined {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(ShuckleError::Background("the core thread panicked".into())),
        Err(e) => Err(ShuckleError::Background(e.to_string())),
    }
}

/// Accepts connections while fewer than `max_connections` are open; takes `core` by value
/// so that the last handle is dropped, stopping the core thread, once all tasks are gone.
async fn accept_loop(
    listener: &TcpListener,
    core: CoreHandle,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    eggs_common::tcp::accept_loop(listener, limits.max_connections, shutdown, |s, peer| {
        serve_connection(s, peer, core.clone(), limits)
    })
    .await;
}

/// Answers requests on one connection, in order, until it closes, idles, or misbehaves.
async fn serve_connection(stream: TcpStream, peer: SocketAddr, core: CoreHandle, limits: Limits) {
    // Responses are single writes; waiting to coalesce them only adds latency.
    let _ = stream.set_nodelay(true);
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    loop {
        let read_result = tokio::time::timeout(limits.idle_timeout, read_frame(&mut read)).await;
        let req: ShuckleRequest = match read_result {
            Ok(Ok(Some(req))) => req,
            Ok(Ok(None)) => return,
            Ok(Err(e)) => return reject(&mut write, peer, e, limits).await,
            Err(_) => {
                tracing::debug!("{peer}: idle for {:?}, closing", limits.idle_timeout);
                return;
            }
        };
        let result = core.call(req.body).await;
        if !respond(&mut write, peer, ShuckleResponse { result }, limits).await {
            return;
        }
    }
}

/// Logs a bad frame and, when it was meant for us but does not decode (say, a request kind
/// from a newer client), says so before the connection closes.
async fn reject(write: &mut OwnedWriteHalf, peer: SocketAddr, e: FrameError, limits: Limits) {
    match e {
        FrameError::Decode(DecodeError::Malformed(_) | DecodeError::Trailing(_)) => {
            tracing::warn!("{peer}: malformed request ({e}), closing");
            let answer = ShuckleResponse {
                result: Err(EggsError::MalformedRequest),
            };
            respond(write, peer, answer, limits).await;
        }
        FrameError::Io(io) if io.kind() != std::io::ErrorKind::UnexpectedEof => {
            tracing::debug!("{peer}: {io}, closing");
        }
        FrameError::Io(_) => tracing::warn!("{peer}: truncated frame, closing"),
        other => tracing::warn!("{peer}: bad frame ({other}), closing"),
    }
}

/// Sends one response; false when the connection is no longer usable.
async fn respond(
    write: &mut OwnedWriteHalf,
    peer: SocketAddr,
    resp: ShuckleResponse,
    limits: Limits,
) -> bool {
    // Bounded too: a peer that never reads would otherwise hold its task forever.
    match tokio::time::timeout(limits.idle_timeout, write_frame(write, &resp)).await {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            tracing::debug!("{peer}: cannot send response: {e}");
            false
        }
        Err(_) => {
            tracing::debug!("{peer}: not reading responses, closing");
            false
        }
    }
}
