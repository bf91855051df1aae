//! Runs [`CdcCore`] on tokio: UDP in and out, RocksDB on a commit thread, shard steps as
//! tasks through the shard client, and the shuckle heartbeat.
//!
//! The main loop handles a burst of events (everything already waiting, up to a bound) and
//! queues the burst's output for the commit thread, then goes on with the next burst. The
//! commit thread writes every queued burst's records as one batch (one sync), then sends
//! those bursts' shard requests and replies, in queue order. So nothing leaves before the
//! records it follows from are durable, as when the loop waited for each write itself, but
//! the loop keeps handling events while a sync is in flight: the group commit of the shards.

use crate::cdc_core::{
    encode_reply, retry_delay_ms, Admission, CdcCore, CoreConfig, Output, ShardSend, StepReply,
};
use crate::store::Store;
use crate::{CdcConfig, CdcError};
use eggs_client::{Client, ClientError, ClientOptions, RetryPolicy, ShuckleClient};
use eggs_protocol::cdc::{CdcRequest, CdcResponse};
use eggs_protocol::codec::{self, peek_request_id, RequestBody};
use eggs_protocol::shard::{ShardReq, ShardResp};
use eggs_protocol::shuckle::RegisterCdcReq;
use eggs_protocol::{Addr, EggsError, EggsTime};
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Requests decoded but not yet handled; more are dropped (clients retry).
const REQUEST_QUEUE: usize = 4096;
/// Step outcomes waiting for the main loop; senders wait when it is full.
const STEP_QUEUE: usize = 8192;
/// Most events handled before persisting, so that a flood cannot delay replies forever.
const MAX_BURST_EVENTS: usize = 2048;
/// Bursts waiting for the commit thread; the main loop waits when it is full.
const COMMIT_QUEUE: usize = 64;
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(1);
/// A shard may be down for a restart; the core sends a step again forever anyway, this only
/// bounds one client call so that its failure gets reported (and logged) now and then.
const SHARD_CALL_DEADLINE_MS: u64 = 10 * 60 * 1000;

/// The CDC's request socket, registered for reading only (see the type's comment): replies
/// never wait for buffer space; a dropped one is asked for again.
type UdpSocket = eggs_common::udp::ReadRegisteredUdp;

/// A CDC with its state loaded and its socket bound, ready to [`Cdc::run`].
pub struct Cdc {
    cfg: CdcConfig,
    socket: Arc<UdpSocket>,
    store: Arc<Store>,
    core: CdcCore,
}

impl Cdc {
    /// Opens (or creates) the database, loads unfinished transactions and binds the socket.
    pub async fn bind(cfg: CdcConfig) -> Result<Cdc, CdcError> {
        if !cfg.bind.is_ipv4() {
            return Err(CdcError::Config(format!(
                "{} is not an IPv4 address",
                cfg.bind
            )));
        }
        let dir = cfg.dir.clone();
        let (store, loaded) = blocking(move || {
            let store = Store::open(&dir)?;
            let loaded = store.load()?;
            Ok((store, loaded))
        })
        .await?;
        let unfinished = loaded.records.len();
        let core = CdcCore::new(CoreConfig::default(), loaded, EggsTime::now());
        tracing::info!(
            "loaded {unfinished} transaction records ({} unfinished) from {}",
            core.live_txns(),
            cfg.dir.display()
        );
        let socket = bind_udp(cfg.bind).map_err(|source| CdcError::Io {
            what: format!("binding {}", cfg.bind),
            source,
        })?;
        Ok(Cdc {
            cfg,
            socket: Arc::new(socket),
            store: Arc::new(store),
            core,
        })
    }

    pub fn local_addr(&self) -> Result<SocketAddr, CdcError> {
        self.socket
            .get_ref()
            .local_addr()
            .map_err(|source| CdcError::Io {
                what: "reading the socket's address".into(),
                source,
            })
    }

    /// Serves until `shutdown` resolves. Transactions in flight then are resumed at the next
    /// start; nothing is lost because nothing was acknowledged before being persisted.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<(), CdcError> {
        tokio::pin!(shutdown);
        let addr = self.registered_addr()?;
        tracing::info!(
            "CDC serving on {}, registering as {addr}",
            self.local_addr()?
        );
        let shuckle = ShuckleClient::new(self.cfg.shuckle);
        let _heartbeat = AbortOnDrop(tokio::spawn(heartbeat(shuckle, addr)));
        let Some(client) = connect_client(self.cfg.shuckle, &mut shutdown).await else {
            return Ok(());
        };
        let (req_tx, mut req_rx) = mpsc::channel(REQUEST_QUEUE);
        let _reader = AbortOnDrop(tokio::spawn(read_requests(self.socket.clone(), req_tx)));
        let (step_tx, mut step_rx) = mpsc::channel(STEP_QUEUE);
        let ctx = StepContext {
            client,
            replies: step_tx,
        };
        let committer = Committer::start(self.store.clone(), self.socket.clone(), ctx)?;
        // Resumed transactions' steps.
        let first = self.core.take_output();
        committer.queue(first).await?;
        let mut housekeeping = tokio::time::interval(HOUSEKEEPING_INTERVAL);
        loop {
            tokio::select! {
                biased;
                _ = &mut shutdown => break,
                Some(reply) = step_rx.recv() => self.core.on_shard_reply(EggsTime::now(), reply),
                Some((from, req)) = req_rx.recv() => self.on_request(from, req),
                _ = housekeeping.tick() => self.core.on_tick(EggsTime::now()),
            }
            self.drain(&mut step_rx, &mut req_rx);
            committer.queue(self.core.take_output()).await?;
        }
        tracing::info!(
            "CDC stopping with {} unfinished transactions",
            self.core.live_txns()
        );
        committer.finish().await
    }

    /// Handles whatever else is already waiting, to persist it all in one batch.
    fn drain(
        &mut self,
        steps: &mut mpsc::Receiver<StepReply>,
        reqs: &mut mpsc::Receiver<(SocketAddr, CdcRequest)>,
    ) {
        for _ in 0..MAX_BURST_EVENTS {
            if let Ok(reply) = steps.try_recv() {
                self.core.on_shard_reply(EggsTime::now(), reply);
            } else if let Ok((from, req)) = reqs.try_recv() {
                self.on_request(from, req);
            } else {
                return;
            }
        }
    }

    fn on_request(&mut self, from: SocketAddr, req: CdcRequest) {
        let kind = req.body.kind();
        match self.core.on_request(EggsTime::now(), from, req) {
            Admission::Dropped => {
                tracing::debug!("too many transactions: dropped {kind} from {from}")
            }
            Admission::Rejected(e) => tracing::debug!("refused {kind} from {from}: {e}"),
            _ => {}
        }
    }

    /// The address clients should use: the bound one, or when bound to all interfaces, the
    /// one this host uses to reach shuckle.
    fn registered_addr(&self) -> Result<Addr, CdcError> {
        let mut local = self.local_addr()?;
        if local.ip().is_unspecified() {
            local.set_ip(route_to(self.cfg.shuckle).unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        }
        Addr::from_socket_addr(local)
            .ok_or_else(|| CdcError::Config(format!("{local} is not an IPv4 address")))
    }
}

/// The commit thread and the queue to it.
struct Committer {
    queue: mpsc::Sender<Output>,
    /// Why the commit thread stopped, if it failed.
    failure: Arc<std::sync::Mutex<Option<CdcError>>>,
    thread: std::thread::JoinHandle<()>,
}

impl Committer {
    fn start(
        store: Arc<Store>,
        socket: Arc<UdpSocket>,
        ctx: StepContext,
    ) -> Result<Committer, CdcError> {
        let (queue, rx) = mpsc::channel(COMMIT_QUEUE);
        let failure = Arc::new(std::sync::Mutex::new(None));
        let sink = Sink {
            store,
            socket,
            ctx,
            runtime: tokio::runtime::Handle::current(),
        };
        let failed = failure.clone();
        let thread = std::thread::Builder::new()
            .name("cdc-commit".into())
            .spawn(move || commit_loop(sink, rx, &failed))
            .map_err(|source| CdcError::Io {
                what: "spawning the commit thread".into(),
                source,
            })?;
        Ok(Committer {
            queue,
            failure,
            thread,
        })
    }

    /// Queues a burst's output; fails if the commit thread could not persist an earlier one.
    async fn queue(&self, out: Output) -> Result<(), CdcError> {
        if out.is_empty() {
            return Ok(());
        }
        if self.queue.send(out).await.is_ok() {
            return Ok(());
        }
        Err(self.take_failure())
    }

    fn take_failure(&self) -> CdcError {
        take(&self.failure).unwrap_or_else(|| CdcError::Task("the commit thread stopped".into()))
    }

    /// Persists and sends everything queued, then stops the thread.
    async fn finish(self) -> Result<(), CdcError> {
        let Committer {
            queue,
            failure,
            thread,
        } = self;
        drop(queue);
        blocking(move || {
            thread
                .join()
                .map_err(|_| CdcError::Task("the commit thread panicked".into()))
        })
        .await?;
        take(&failure).map_or(Ok(()), Err)
    }
}

/// The commit thread's failure, if any (a poisoned lock still holds it).
fn take(failure: &std::sync::Mutex<Option<CdcError>>) -> Option<CdcError> {
    failure.lock().unwrap_or_else(|e| e.into_inner()).take()
}

/// Where the commit thread's output goes once persisted.
struct Sink {
    store: Arc<Store>,
    socket: Arc<UdpSocket>,
    ctx: StepContext,
    runtime: tokio::runtime::Handle,
}

/// Persists every burst waiting (one batch, one sync), then sends their steps and replies
/// in order; until the queue closes or a write fails (then nothing more is sent: what was
/// not persisted must not be acknowledged, and the CDC stops).
fn commit_loop(
    sink: Sink,
    mut queue: mpsc::Receiver<Output>,
    failure: &std::sync::Mutex<Option<CdcError>>,
) {
    let mut group = Vec::with_capacity(COMMIT_QUEUE);
    while let Some(first) = queue.blocking_recv() {
        group.push(first);
        while group.len() < COMMIT_QUEUE {
            match queue.try_recv() {
                Ok(out) => group.push(out),
                Err(_) => break,
            }
        }
        if let Err(e) = sink.store.persist_all(&group) {
            tracing::error!("persisting transaction records failed: {e}");
            *failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
            return;
        }
        for out in group.drain(..) {
            for send in out.sends {
                sink.runtime.spawn(perform_step(sink.ctx.clone(), send));
            }
            for reply in out.replies {
                send_reply(&sink.socket, reply.to, &reply.resp);
            }
        }
    }
}

/// Runs RocksDB work on the blocking pool: syncs take milliseconds and must not stall the
/// async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, CdcError> + Send + 'static,
) -> Result<T, CdcError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| CdcError::Task(e.to_string()))?
}

fn route_to(peer: SocketAddr) -> Option<IpAddr> {
    let s = std::net::UdpSocket::bind(("0.0.0.0", 0)).ok()?;
    s.connect(peer).ok()?;
    Some(s.local_addr().ok()?.ip())
}

fn bind_udp(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    // Bursts of client requests arrive while a batch is being synced.
    eggs_common::udp::bind_read_registered(addr, 8 << 20)
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Registers with shuckle now and then every second, so that clients find this CDC.
async fn heartbeat(shuckle: ShuckleClient, addr: Addr) {
    let mut tick = tokio::time::interval(HEARTBEAT_INTERVAL);
    let mut ok = false;
    loop {
        tick.tick().await;
        match shuckle.request(RegisterCdcReq { addr }).await {
            Ok(_) if !ok => {
                tracing::info!("registered with shuckle {} as {addr}", shuckle.addr());
                ok = true;
            }
            Ok(_) => {}
            // Warn once per outage rather than every second.
            Err(e) if ok => {
                tracing::warn!("heartbeat to shuckle failed: {e}");
                ok = false;
            }
            Err(e) => tracing::debug!("heartbeat to shuckle failed: {e}"),
        }
    }
}

/// Builds the shard client, waiting for shuckle to answer; `None` if asked to stop first.
async fn connect_client(
    shuckle: SocketAddr,
    shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
) -> Option<Arc<Client>> {
    let opts = ClientOptions {
        retry: RetryPolicy {
            deadline_ms: SHARD_CALL_DEADLINE_MS,
            ..RetryPolicy::default()
        },
        ..ClientOptions::default()
    };
    let mut attempt = 0u32;
    loop {
        let connect = Client::new(shuckle, opts.clone());
        let result = tokio::select! {
            _ = shutdown.as_mut() => return None,
            r = connect => r,
        };
        match result {
            Ok(c) => return Some(Arc::new(c)),
            Err(e) => {
                attempt += 1;
                let delay_ms = retry_delay_ms(attempt);
                tracing::warn!("cannot reach shuckle {shuckle}: {e}; retrying in {delay_ms} ms");
                tokio::select! {
                    _ = shutdown.as_mut() => return None,
                    _ = tokio::time::sleep(Duration::from_millis(delay_ms)) => {}
                }
            }
        }
    }
}

/// Reads datagrams, answers undecodable ones and queues the rest for the main loop.
async fn read_requests(socket: Arc<UdpSocket>, queue: mpsc::Sender<(SocketAddr, CdcRequest)>) {
    let mut buf = vec![0u8; 65536];
    loop {
        let Ok(mut ready) = socket.readable().await else {
            continue;
        };
        let (n, from) = match ready.try_io(|s| s.get_ref().recv_from(&mut buf)) {
            Ok(Ok(x)) => x,
            Ok(Err(e)) => {
                tracing::debug!("UDP receive: {e}");
                continue;
            }
            Err(_) => continue, // would block: readiness cleared, wait again
        };
        let bytes = &buf[..n];
        match codec::decode::<CdcRequest>(bytes) {
            Ok(req) => match queue.try_send((from, req)) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::debug!("request queue full: dropped a request from {from}")
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return,
            },
            Err(e) => {
                tracing::debug!("undecodable datagram from {from}: {e}");
                if let Some(request_id) = peek_request_id(bytes) {
                    let resp = CdcResponse {
                        request_id,
                        result: Err(EggsError::MalformedRequest),
                    };
                    send_reply(&socket, from, &resp);
                }
            }
        }
    }
}

fn send_reply(socket: &UdpSocket, to: SocketAddr, resp: &CdcResponse) {
    if let Err(e) = socket.get_ref().send_to(&encode_reply(resp), to) {
        // The client retries and gets the stored result.
        tracing::debug!("reply to {to} failed: {e}");
    }
}

#[derive(Clone)]
struct StepContext {
    client: Arc<Client>,
    replies: mpsc::Sender<StepReply>,
}

/// Any shard request, answered by whatever response comes back: the core checks that the
/// response kind fits the step.
struct AnyShardReq(ShardReq);

impl RequestBody for AnyShardReq {
    type Req = ShardReq;
    type Resp = ShardResp;
    type RespBody = ShardResp;
    fn into_req(self) -> ShardReq {
        self.0
    }
    fn from_resp(resp: ShardResp) -> Option<ShardResp> {
        Some(resp)
    }
}

/// Performs one send of a step (after its delay) and reports the outcome; the core decides
/// whether to send it again. Stops early if the main loop is gone (shutdown).
async fn perform_step(ctx: StepContext, send: ShardSend) {
    let work = async {
        if send.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(send.delay_ms)).await;
        }
        call_shard(&ctx.client, &send).await
    };
    let result = tokio::select! {
        r = work => r,
        _ = ctx.replies.closed() => return,
    };
    let reply = StepReply {
        txn: send.txn,
        step: send.step,
        result,
    };
    // Fails only at shutdown, when the outcome no longer matters: the step is resent later.
    let _ = ctx.replies.send(reply).await;
}

/// One call of a step: the shard's answer, or `Timeout` when the call failed without one
/// (the client library gave up retransmitting, or the shard could not be found).
async fn call_shard(client: &Client, send: &ShardSend) -> Result<ShardResp, EggsError> {
    match client
        .shard_request_with_header(send.shard, send.header, AnyShardReq(send.req.clone()))
        .await
    {
        Ok(resp) => Ok(resp),
        Err(ClientError::Eggs { err, .. }) => Err(err),
        Err(e) => {
            tracing::debug!(txn = send.txn, "{} failed: {e}", send.req.kind());
            Err(EggsError::Timeout)
        }
    }
}
