//! The network side of a shard process: UDP in, group commit, UDP out.
//!
//! One thread receives datagrams and decodes them into a bounded queue. One thread owns the
//! [`ShardCore`] and RocksDB: it takes everything queued (up to a batch limit), handles each
//! request, makes the batch durable with a single WAL sync, then sends the replies. Blocking
//! calls therefore never run on an async executor, and many writes share one fsync.
//! Registration with shuckle (every second, doubling as a heartbeat) runs on tokio.

use crate::core::{ShardCore, ShardOptions};
use crate::error::ShardError;
use crate::kv::{Kv, RocksKv};
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};
use eggs_client::ShuckleClient;
use eggs_common::db::DbConfig;
use eggs_protocol::shard::{ShardRequest, ShardResponse};
use eggs_protocol::shuckle::{BlockServiceWithKey, RegisterShardsReq, ShardBlockServicesReq};
use eggs_protocol::{codec, Addr, EggsError, EggsTime, ShardId, MAX_UDP_MTU};
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct ShardServerConfig {
    pub dir: PathBuf,
    pub bind: SocketAddr,
    pub shuckle: SocketAddr,
    pub shards: Vec<ShardId>,
    pub options: ShardOptions,
    pub db: DbConfig,
    pub heartbeat_ms: u64,
    /// Threads running shard cores, each serving the shards `s` with `s % threads == i`;
    /// 0 picks one per CPU (at most 4).
    pub core_threads: usize,
}

/// Most datagrams taken from the kernel per system call.
const RECV_BATCH: usize = 64;
/// Most requests handled between two WAL syncs.
const MAX_BATCH: usize = 1024;
/// Requests waiting for the worker; beyond this, datagrams are dropped and clients retry.
const QUEUE_LEN: usize = 16 * 1024;
/// Disk kept for deduplication entries; at 20,000 writes/s this still covers minutes, far
/// longer than any client retries.
const DEDUP_BYTES: u64 = 256 << 20;
/// How often deduplication entries are expired.
const DEDUP_EXPIRY_INTERVAL: Duration = Duration::from_secs(5);

/// What the core thread works on, in arrival order.
enum Work {
    Request {
        from: SocketAddr,
        req: ShardRequest,
    },
    /// A fresh list of block services (with keys) from shuckle.
    BlockServices(Vec<BlockServiceWithKey>),
}

pub struct ShardServer {
    cfg: ShardServerConfig,
    local_addr: SocketAddr,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    /// One queue per core thread.
    work: Vec<Sender<Work>>,
}

impl ShardServer {
    /// Opens RocksDB, binds the socket and starts serving.
    pub fn start(cfg: ShardServerConfig) -> Result<ShardServer, ShardError> {
        let kv = RocksKv::open(&cfg.dir, &cfg.db, DEDUP_BYTES)?;
        let socket = bind(cfg.bind)?;
        let local_addr = socket
            .local_addr()
            .map_err(|e| io("reading local address", e))?;
        let stop = Arc::new(AtomicBool::new(false));
        let n = core_threads(&cfg);
        let mut work = Vec::with_capacity(n);
        let mut threads = Vec::with_capacity(n + 1);
        for i in 0..n {
            let shards: Vec<ShardId> = cfg
                .shards
                .iter()
                .copied()
                .filter(|s| s.0 as usize % n == i)
                .collect();
            let core =
                ShardCore::open(kv.sibling(), &shards, cfg.options.clone(), EggsTime::now())?;
            let (tx, rx) = bounded(QUEUE_LEN);
            work.push(tx);
            let socket = socket.try_clone().map_err(|e| io("cloning socket", e))?;
            let stop = stop.clone();
            let t = std::thread::Builder::new()
                .name(format!("shard-core-{i}"))
                .spawn(move || worker_loop(core, socket, rx, stop))
                .map_err(|e| io("spawning worker", e))?;
            threads.push(t);
        }
        let queues = work.clone();
        let recv_stop = stop.clone();
        let receiver = std::thread::Builder::new()
            .name("shard-recv".into())
            .spawn(move || receive_loop(socket, queues, recv_stop))
            .map_err(|e| io("spawning receiver", e))?;
        threads.push(receiver);
        tracing::info!(
            "serving {} shards on {local_addr} from {} with {n} core threads",
            cfg.shards.len(),
            cfg.dir.display()
        );
        Ok(ShardServer {
            cfg,
            local_addr,
            stop,
            threads,
            work,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Registers with shuckle every heartbeat until `shutdown` resolves, then stops.
    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()>) {
        let shuckle = ShuckleClient::new(self.cfg.shuckle);
        let mut addr = self.local_addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        let register = RegisterShardsReq {
            shards: self.cfg.shards.clone(),
            addr: Addr::from_socket_addr(addr).unwrap_or_default(),
        };
        let heartbeat = async {
            let mut registered = false;
            loop {
                match shuckle.request(register.clone()).await {
                    Ok(_) if !registered => {
                        tracing::info!("registered with shuckle {}", self.cfg.shuckle);
                        registered = true;
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!("registering with shuckle: {e}"),
                }
                tokio::time::sleep(Duration::from_millis(self.cfg.heartbeat_ms)).await;
            }
        };
        let refresh = refresh_block_services(&shuckle, &self.work, self.cfg.heartbeat_ms);
        tokio::select! {
            _ = heartbeat => {}
            _ = refresh => {}
            _ = shutdown => {}
        }
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        tracing::info!("stopped");
    }
}

impl Drop for ShardServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn io(what: &str, source: std::io::Error) -> ShardError {
    ShardError::Io {
        what: what.into(),
        source,
    }
}

fn bind(addr: SocketAddr) -> Result<UdpSocket, ShardError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))
        .map_err(|e| io("creating socket", e))?;
    // Bursts from many clients must not overflow the kernel queue.
    let _ = s.set_recv_buffer_size(16 << 20);
    let _ = s.set_send_buffer_size(16 << 20);
    s.bind(&addr.into())
        .map_err(|e| io(&format!("binding {addr}"), e))?;
    // Wake up regularly to notice shutdown.
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .map_err(|e| io("setting timeout", e))?;
    Ok(s.into())
}

/// How many core threads to run: as configured, else one per CPU (at most 4), never more
/// than there are shards to serve.
fn core_threads(cfg: &ShardServerConfig) -> usize {
    let auto = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    let n = if cfg.core_threads == 0 {
        auto
    } else {
        cfg.core_threads
    };
    n.clamp(1, cfg.shards.len().max(1))
}

/// Keeps the cores' list of block services current (placement and certificates need it).
async fn refresh_block_services(shuckle: &ShuckleClient, work: &[Sender<Work>], interval_ms: u64) {
    loop {
        match shuckle.request(ShardBlockServicesReq {}).await {
            // Blocking sends: the list must not be lost to a full queue, and the queues drain
            // quickly. It runs on the current-thread runtime that only does this and heartbeats.
            Ok(r) => {
                for w in work {
                    if w.send(Work::BlockServices(r.services.clone())).is_err() {
                        return;
                    }
                }
            }
            Err(e) => tracing::warn!("fetching block services from shuckle: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(interval_ms)).await;
    }
}

fn receive_loop(socket: UdpSocket, queues: Vec<Sender<Work>>, stop: Arc<AtomicBool>) {
    // One byte more than the largest valid datagram, so that oversized ones are noticed.
    let mut bufs = vec![vec![0u8; MAX_UDP_MTU as usize + 1]; RECV_BATCH];
    let mut got = Vec::with_capacity(RECV_BATCH);
    while !stop.load(Ordering::Relaxed) {
        if let Err(e) = eggs_common::udp::recv_batch(&socket, &mut bufs, &mut got) {
            if !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) {
                tracing::debug!("receive: {e}");
            }
            continue;
        }
        for (&(n, from), buf) in got.iter().zip(&bufs) {
            let bytes = &buf[..n.min(buf.len())];
            let req = match codec::decode::<ShardRequest>(bytes) {
                Ok(req) if n <= MAX_UDP_MTU as usize => req,
                Ok(_) | Err(_) => {
                    reject_malformed(&socket, bytes, from);
                    continue;
                }
            };
            // Each shard belongs to one core thread (see `ShardServer::start`).
            let q = &queues[req.shard.0 as usize % queues.len()];
            match q.try_send(Work::Request { from, req }) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => tracing::debug!("queue full, dropping request"),
                Err(TrySendError::Disconnected(_)) => return,
            }
        }
    }
}

/// Answers an undecodable datagram with an error if its request id is readable, so that the
/// client fails fast instead of retrying something that can never work.
fn reject_malformed(socket: &UdpSocket, bytes: &[u8], from: SocketAddr) {
    tracing::debug!("malformed request of {} bytes from {from}", bytes.len());
    if bytes.get(..4) != Some(&<ShardRequest as eggs_protocol::Message>::MAGIC[..]) {
        return;
    }
    if let Some(request_id) = codec::peek_request_id(bytes) {
        let resp = ShardResponse {
            request_id,
            result: Err(EggsError::MalformedRequest),
        };
        let _ = socket.send_to(&codec::encode(&resp), from);
    }
}

fn worker_loop(
    mut core: ShardCore<RocksKv>,
    socket: UdpSocket,
    rx: Receiver<Work>,
    stop: Arc<AtomicBool>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut replies: Vec<(SocketAddr, Vec<u8>)> = Vec::with_capacity(MAX_BATCH);
    let mut last_expiry = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(first) => batch.push(first),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        if let Err(e) = handle_batch(&mut core, &mut batch, &mut replies) {
            // The store is failing (disk full, I/O error): reply nothing, since nothing in
            // this batch is known to be durable, and keep trying; clients retry.
            tracing::error!("shard store failure: {e}");
            replies.clear();
            std::thread::sleep(Duration::from_millis(100));
        }
        eggs_common::udp::send_batch(&socket, &replies);
        replies.clear();
        if last_expiry.elapsed() > DEDUP_EXPIRY_INTERVAL {
            last_expiry = Instant::now();
            match core.expire_dedup(EggsTime::now()) {
                Ok(n) if n > 0 => tracing::debug!("expired {n} dedup entries"),
                Ok(_) => {}
                Err(e) => tracing::error!("expiring dedup entries: {e}"),
            }
        }
    }
}

fn handle_batch(
    core: &mut ShardCore<RocksKv>,
    batch: &mut Vec<Work>,
    replies: &mut Vec<(SocketAddr, Vec<u8>)>,
) -> Result<(), ShardError> {
    let mut wrote = false;
    for m in batch.drain(..) {
        let (from, req) = match m {
            Work::Request { from, req } => (from, req),
            Work::BlockServices(list) => {
                core.set_block_services(list);
                continue;
            }
        };
        let now = EggsTime::now();
        wrote |= req.body.is_write();
        let resp = core.handle(&req, now)?;
        if let Err(e) = &resp.result {
            tracing::debug!("{} failed: {e}", req.body.kind());
        }
        replies.push((from, codec::encode(&resp)));
    }
    // Reads in this batch may have seen this batch's writes: they wait for the sync too.
    if wrote {
        let started = Instant::now();
        core.kv().sync()?;
        tracing::trace!(
            "batch of {} replies, WAL sync {} µs",
            replies.len(),
            started.elapsed().as_micros()
        );
    }
    Ok(())
}

/// Parses `A..=B`, `A..B`, `N` or a comma list of those into shard ids.
pub fn parse_shard_set(s: &str) -> Result<Vec<ShardId>, ShardError> {
    let bad = || ShardError::BadShardSet(s.to_string());
    let num = |x: &str| x.trim().parse::<u8>().map_err(|_| bad());
    let mut out = Vec::new();
    for part in s.split(',') {
        if let Some((a, b)) = part.split_once("..=") {
            out.extend((num(a)?..=num(b)?).map(ShardId));
        } else if let Some((a, b)) = part.split_once("..") {
            // The exclusive end may be 256.
            let end = b.trim().parse::<u16>().map_err(|_| bad())?.min(256);
            out.extend((num(a)? as u16..end).map(|x| ShardId(x as u8)));
        } else {
            out.push(ShardId(num(part)?));
        }
    }
    out.sort();
    out.dedup();
    if out.is_empty() {
        return Err(bad());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_sets() {
        assert_eq!(parse_shard_set("0..=255").unwrap().len(), 256);
        assert_eq!(parse_shard_set("0..256").unwrap().len(), 256);
        assert_eq!(
            parse_shard_set("3,1,2,2").unwrap(),
            vec![ShardId(1), ShardId(2), ShardId(3)]
        );
        assert!(parse_shard_set("0..=256").is_err());
        assert!(parse_shard_set("x").is_err());
        assert!(parse_shard_set("5..5").is_err());
    }
}
