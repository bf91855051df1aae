//! Request/response over one UDP socket shared by all of a client's concurrent requests.
//!
//! A background task receives every datagram and hands it to the request waiting for its id.
//! A request is resent with the same id after each time-out, so a server that already applied
//! it answers from its deduplication table instead of applying it twice; when to resend and
//! when to give up is [`Retry`]'s decision.

use crate::error::{ClientError, Result};
use crate::retry::Retry;
pub use crate::retry::RetryPolicy;
use eggs_protocol::codec::{self, peek_request_id};
use eggs_protocol::{Message, RequestHeader, MAX_UDP_MTU};
use foldhash::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// The client's socket: registered for reading only (see the type's comment).
type Socket = eggs_common::udp::ReadRegisteredUdp;

type Waiters = Arc<Mutex<HashMap<u64, oneshot::Sender<Vec<u8>>>>>;

pub struct UdpRpc {
    /// Datagrams to send, drained in batches by the sender task.
    outbox: tokio::sync::mpsc::UnboundedSender<(SocketAddr, Vec<u8>)>,
    waiters: Waiters,
    next_request_id: AtomicU64,
    client_id: u64,
    receiver: tokio::task::JoinHandle<()>,
    sender: tokio::task::JoinHandle<()>,
}

impl Drop for UdpRpc {
    fn drop(&mut self) {
        self.receiver.abort();
        self.sender.abort();
    }
}

impl UdpRpc {
    /// Binds an ephemeral port on all interfaces. Must be called inside a tokio runtime.
    pub fn new() -> Result<UdpRpc> {
        let socket = bind_udp().map_err(|e| ClientError::io("binding client UDP socket", e))?;
        let socket = Arc::new(socket);
        let waiters: Waiters = Arc::default();
        let receiver = tokio::spawn(receive_loop(socket.clone(), waiters.clone()));
        let (outbox, queued) = tokio::sync::mpsc::unbounded_channel();
        let sender = tokio::spawn(send_loop(socket, queued));
        Ok(UdpRpc {
            outbox,
            sender,
            waiters,
            // Random starting points keep ids of successive client processes apart.
            next_request_id: AtomicU64::new(rand::random::<u64>() >> 1),
            client_id: rand::random(),
            receiver,
        })
    }

    pub fn client_id(&self) -> u64 {
        self.client_id
    }

    pub fn new_header(&self) -> RequestHeader {
        RequestHeader {
            request_id: self.next_request_id.fetch_add(1, Ordering::Relaxed),
            client_id: self.client_id,
        }
    }

    /// Sends `req` to the address `addr_of` yields (asked again before every attempt, so a
    /// restarted server's new address is picked up) until a response arrives or the policy's
    /// deadline passes.
    pub async fn call<Req, Resp, F, Fut>(
        &self,
        what: &(dyn std::fmt::Display + Sync),
        request_id: u64,
        req: &Req,
        policy: RetryPolicy,
        mut addr_of: F,
    ) -> Result<Resp>
    where
        Req: Message,
        Resp: Message,
        F: FnMut(u32) -> Fut,
        Fut: std::future::Future<Output = Result<SocketAddr>>,
    {
        let bytes = codec::encode(req);
        if bytes.len() > MAX_UDP_MTU as usize {
            return Err(ClientError::Eggs {
                what: what.to_string(),
                err: eggs_protocol::EggsError::TooLarge,
            });
        }
        let (tx, mut rx) = oneshot::channel();
        let _guard = WaiterGuard::register(&self.waiters, request_id, tx);
        let start = Instant::now();
        let mut retry = Retry::new(policy);
        loop {
            let attempt = retry.next_attempt();
            let addr = addr_of(attempt.index).await?;
            if self.outbox.send((addr, bytes.clone())).is_err() {
                tracing::debug!("{what}: the sender task has stopped");
            }
            let timeout = Duration::from_millis(attempt.timeout_ms);
            match tokio::time::timeout(timeout, &mut rx).await {
                Ok(Ok(resp)) => {
                    return codec::decode::<Resp>(&resp).map_err(|e| ClientError::BadResponse {
                        what: what.to_string(),
                        why: e.to_string(),
                    })
                }
                Ok(Err(_)) => {
                    return Err(ClientError::BadResponse {
                        what: what.to_string(),
                        why: "receiver stopped".into(),
                    })
                }
                Err(_) => {
                    let elapsed_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
                    if retry.gives_up(elapsed_ms) {
                        return Err(ClientError::Timeout {
                            what: what.to_string(),
                            attempts: retry.attempts(),
                            elapsed_ms,
                        });
                    }
                    tracing::debug!(
                        "{what}: no answer from {addr} in {} ms, retrying",
                        attempt.timeout_ms
                    );
                }
            }
        }
    }
}

/// Removes the waiter when the call ends, however it ends (including cancellation).
struct WaiterGuard<'a> {
    waiters: &'a Waiters,
    id: u64,
}

impl<'a> WaiterGuard<'a> {
    fn register(waiters: &'a Waiters, id: u64, tx: oneshot::Sender<Vec<u8>>) -> Self {
        lock(waiters).insert(id, tx);
        WaiterGuard { waiters, id }
    }
}

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        lock(self.waiters).remove(&self.id);
    }
}

fn lock(w: &Waiters) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<Vec<u8>>>> {
    // A panic while holding this lock cannot leave the map inconsistent.
    w.lock().unwrap_or_else(|p| p.into_inner())
}

/// Sends queued datagrams, as many per system call as are waiting: under load, requests are
/// made in bursts (each batch of replies wakes many callers at once), and one `sendmmsg`
/// also wakes the server's receiver once instead of once per datagram.
async fn send_loop(
    socket: Arc<Socket>,
    mut queued: tokio::sync::mpsc::UnboundedReceiver<(SocketAddr, Vec<u8>)>,
) {
    const MAX_BATCH: usize = 64;
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = queued.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match queued.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        // Datagrams the kernel refuses are dropped: the callers' retries cover them.
        eggs_common::udp::send_batch(socket.get_ref(), &batch);
        batch.clear();
    }
}

async fn receive_loop(socket: Arc<Socket>, waiters: Waiters) {
    // Replies come in bursts (servers send them in batches): take many per system call.
    let mut bufs = vec![vec![0u8; MAX_UDP_MTU as usize + 1]; 32];
    let mut got = Vec::with_capacity(bufs.len());
    loop {
        let Ok(mut ready) = socket.readable().await else {
            continue;
        };
        let r =
            ready.try_io(|s| eggs_common::udp::try_recv_batch(s.get_ref(), &mut bufs, &mut got));
        let Ok(r) = r else {
            continue; // would block: readiness cleared, wait again
        };
        if let Err(e) = r {
            // WouldBlock: spurious wake-up. Others (ICMP port unreachable surfaces here on
            // Linux) are handled by the retry loop.
            if e.kind() != std::io::ErrorKind::WouldBlock {
                tracing::trace!("client UDP receive: {e}");
            }
            continue;
        }
        let mut waiters = lock(&waiters);
        for (&(n, _), buf) in got.iter().zip(&bufs) {
            let Some(bytes) = buf.get(..n) else {
                continue; // longer than any valid response
            };
            let Some(id) = peek_request_id(bytes) else {
                continue;
            };
            if let Some(tx) = waiters.remove(&id) {
                let _ = tx.send(bytes.to_vec());
            }
        }
    }
}

fn bind_udp() -> std::io::Result<Socket> {
    // Large buffers absorb bursts of thousands of concurrent replies.
    eggs_common::udp::bind_read_registered(SocketAddr::from(([0, 0, 0, 0], 0)), 8 << 20)
}
