//! The network side of a shard process: UDP in, group commit, UDP out.
//!
//! The shards are split between core threads (one per CPU by default). Each core thread owns
//! a [`ShardCore`] with its own RocksDB overlay and its own UDP socket, registered with
//! shuckle as the address of its shards, so a request reaches the thread that serves it with
//! no hand-off. A thread takes everything its socket has queued (up to a batch limit),
//! handles each request and writes the changes unsynced; a commit thread makes them durable
//! with one WAL sync for every group handed over meanwhile, then sends their replies (the
//! rules of which reply may leave after which sync are [`GroupCommit`]'s). Many writes share
//! one fsync, a core thread handles its next group while the previous one is being synced,
//! and while a thread is busy nobody sleeps on its socket, so clients' sends wake nobody.
//! Blocking calls never run on an async executor.
//! Registration with shuckle (every second, doubling as a heartbeat) runs on tokio.

use crate::core::{reply_limit, ShardCore, ShardOptions};
use crate::error::{ServerError, ShardError};
use crate::group_commit::{GroupCommit, MAX_QUEUED_GROUPS};
use crate::kv::{RocksKv, WalSyncer};
use crossbeam_channel::{bounded, Receiver, Sender, TryRecvError};
use eggs_client::ShuckleClient;
use eggs_db::DbConfig;
use eggs_protocol::conv::fit;
use eggs_protocol::shard::{ShardRequest, ShardResponse};
use eggs_protocol::shuckle::{BlockServiceWithKey, RegisterShardsReq, ShardBlockServicesReq};
use eggs_protocol::{codec, Addr, EggsError, EggsTime, ShardId, MAX_UDP_MTU};
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct ShardServerConfig {
    pub dir: PathBuf,
    /// Core thread `i` binds this address with the port plus `i` (port 0: any free port).
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
/// Control messages waiting for a core thread (block-service lists: one per heartbeat).
const CONTROL_QUEUE: usize = 16;
/// Disk kept for deduplication entries; at 20,000 writes/s this still covers minutes, far
/// longer than any client retries.
const DEDUP_BYTES: u64 = 256 << 20;
/// How often deduplication entries are expired.
const DEDUP_EXPIRY_INTERVAL: Duration = Duration::from_secs(5);
/// How long an idle core thread sleeps in `recvmmsg` before looking at its control queue
/// and the stop flag.
const IDLE_WAKE: Duration = Duration::from_millis(100);

/// A fresh list of block services (with keys) from shuckle, for placement and certificates.
struct BlockServices(Vec<BlockServiceWithKey>);

/// One core thread as seen from the outside.
struct CoreThread {
    shards: Vec<ShardId>,
    addr: SocketAddr,
    control: Sender<BlockServices>,
}

pub struct ShardServer {
    cfg: ShardServerConfig,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    cores: Vec<CoreThread>,
}

impl ShardServer {
    /// Opens RocksDB, binds one socket per core thread and starts serving.
    pub fn start(cfg: ShardServerConfig) -> Result<ShardServer, ServerError> {
        let kv = RocksKv::open(&cfg.dir, &cfg.db, DEDUP_BYTES)?;
        let stop = Arc::new(AtomicBool::new(false));
        let n = core_threads(&cfg);
        let mut cores = Vec::with_capacity(n);
        let mut threads = Vec::with_capacity(n + 1);
        let mut sockets = Vec::with_capacity(n);
        let commit = Arc::new(CommitShared::new(n));
        for i in 0..n {
            let (core, socket, thread) = spawn_core(&cfg, &kv, i, n, &stop, &commit)?;
            sockets.push(socket);
            threads.push(thread);
            cores.push(core);
        }
        let wal = kv.wal_syncer();
        let t = std::thread::Builder::new()
            .name("shard-commit".into())
            .spawn(move || commit_loop(wal, sockets, &commit))
            .map_err(|e| io("spawning commit thread", e))?;
        // Last: it exits once every core thread has, after committing what they handed over.
        threads.push(t);
        tracing::info!(
            "serving {} shards from {} with {n} core threads",
            cfg.shards.len(),
            cfg.dir.display()
        );
        Ok(ShardServer {
            cfg,
            stop,
            threads,
            cores,
        })
    }

    /// Registers with shuckle every heartbeat until `shutdown` resolves, then stops.
    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()>) {
        let shuckle = ShuckleClient::new(self.cfg.shuckle);
        let registrations: Vec<RegisterShardsReq> = self
            .cores
            .iter()
            .filter(|c| !c.shards.is_empty())
            .map(|c| {
                let mut addr = c.addr;
                if addr.ip().is_unspecified() {
                    addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
                }
                RegisterShardsReq {
                    shards: c.shards.clone(),
                    addr: Addr::from_socket_addr(addr).unwrap_or_default(),
                }
            })
            .collect();
        let controls: Vec<Sender<BlockServices>> =
            self.cores.iter().map(|c| c.control.clone()).collect();
        // One loop, in this order: the block-service list is fetched (and handed to the
        // cores) before every registration, so a registration shuckle records at time T
        // was preceded by a fetch that started after the previous registration. eggsrun's
        // readiness check relies on that to know the shards' lists are complete.
        let heartbeat = async {
            let mut registered = false;
            loop {
                if !refresh_block_services(&shuckle, &controls).await {
                    return;
                }
                let mut ok = true;
                for register in &registrations {
                    if let Err(e) = shuckle.request(register.clone()).await {
                        tracing::warn!("registering with shuckle: {e}");
                        ok = false;
                    }
                }
                if ok && !registered {
                    tracing::info!("registered with shuckle {}", self.cfg.shuckle);
                    registered = true;
                }
                tokio::time::sleep(Duration::from_millis(self.cfg.heartbeat_ms)).await;
            }
        };
        tokio::select! {
            _ = heartbeat => {}
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

fn io(what: &str, source: std::io::Error) -> ServerError {
    ServerError::Io {
        what: what.into(),
        source,
    }
}

/// Binds core thread `i` of `n`'s socket and starts it on its share of the shards. Returns
/// its outside view, a clone of its socket (for the commit thread) and its handle.
fn spawn_core(
    cfg: &ShardServerConfig,
    kv: &RocksKv,
    i: usize,
    n: usize,
    stop: &Arc<AtomicBool>,
    commit: &Arc<CommitShared>,
) -> Result<(CoreThread, UdpSocket, JoinHandle<()>), ServerError> {
    let shards: Vec<ShardId> = cfg
        .shards
        .iter()
        .copied()
        .filter(|s| s.0 as usize % n == i)
        .collect();
    let socket = bind(thread_addr(cfg.bind, i)?)?;
    let addr = socket
        .local_addr()
        .map_err(|e| io("reading local address", e))?;
    let core = ShardCore::open(kv.sibling(), &shards, cfg.options.clone(), EggsTime::now())?;
    let (control, control_rx) = bounded(CONTROL_QUEUE);
    let commit_socket = socket.try_clone().map_err(|e| io("cloning socket", e))?;
    let worker = CoreWorker {
        index: i,
        core,
        socket,
        control: control_rx,
        commit: commit.clone(),
    };
    let stop = stop.clone();
    let thread = std::thread::Builder::new()
        .name(format!("shard-core-{i}"))
        .spawn(move || {
            // Counted out however the thread ends, so that the commit thread can stop.
            let _running = CoreRunning(worker.commit.clone());
            worker.run(&stop)
        })
        .map_err(|e| io("spawning core thread", e))?;
    tracing::info!("core thread {i}: {} shards on {addr}", shards.len());
    let core = CoreThread {
        shards,
        addr,
        control,
    };
    Ok((core, commit_socket, thread))
}

/// The address core thread `i` binds: the configured one, its port moved up by `i`.
fn thread_addr(base: SocketAddr, i: usize) -> Result<SocketAddr, ServerError> {
    let mut addr = base;
    if base.port() != 0 {
        let port = u16::try_from(base.port() as usize + i).map_err(|_| {
            io(
                &format!("binding core thread {i} above {base}"),
                std::io::ErrorKind::InvalidInput.into(),
            )
        })?;
        addr.set_port(port);
    }
    Ok(addr)
}

fn bind(addr: SocketAddr) -> Result<UdpSocket, ServerError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))
        .map_err(|e| io("creating socket", e))?;
    // Bursts from many clients must not overflow the kernel queue.
    let _ = s.set_recv_buffer_size(16 << 20);
    let _ = s.set_send_buffer_size(16 << 20);
    s.bind(&addr.into())
        .map_err(|e| io(&format!("binding {addr}"), e))?;
    // Wake up regularly to notice shutdown and control messages.
    s.set_read_timeout(Some(IDLE_WAKE))
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

/// Fetches the list of block services (placement and certificates need it) and hands it to
/// every core; false once the cores are gone.
async fn refresh_block_services(
    shuckle: &ShuckleClient,
    controls: &[Sender<BlockServices>],
) -> bool {
    match shuckle.request(ShardBlockServicesReq {}).await {
        // Blocking sends: the list must not be lost to a full queue, and core threads
        // drain their queue at least every IDLE_WAKE. This runs on the current-thread
        // runtime that only does this and heartbeats.
        Ok(r) => {
            for c in controls {
                if c.send(BlockServices(r.services.clone())).is_err() {
                    return false;
                }
            }
        }
        Err(e) => tracing::warn!("fetching block services from shuckle: {e}"),
    }
    true
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
        let _ = socket.send_to(&codec::encode_within(&resp, MAX_UDP_MTU as usize), from);
    }
}

/// One reply: where it goes and its bytes.
type Reply = (SocketAddr, Vec<u8>);

/// The group commit shared by the core threads and the commit thread.
struct CommitShared {
    state: Mutex<CommitState>,
    /// Signalled when a group is queued, a sync starts or ends, or a core thread stops.
    changed: Condvar,
}

struct CommitState {
    commit: GroupCommit<Reply>,
    /// Core threads still running: the commit thread stops once none is and nothing waits.
    running: usize,
}

impl CommitShared {
    fn new(threads: usize) -> CommitShared {
        CommitShared {
            state: Mutex::new(CommitState {
                commit: GroupCommit::new(threads, MAX_QUEUED_GROUPS),
                running: threads,
            }),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, CommitState> {
        // A thread that panicked holding the lock may have left the state half changed;
        // replying on from it could acknowledge writes that are not durable.
        self.state
            .lock()
            .unwrap_or_else(|_| panic!("group commit state poisoned by a panicked thread"))
    }

    fn wait<'a>(&self, guard: MutexGuard<'a, CommitState>) -> MutexGuard<'a, CommitState> {
        self.changed
            .wait(guard)
            .unwrap_or_else(|_| panic!("group commit state poisoned by a panicked thread"))
    }
}

/// Counts a core thread out of the group commit when dropped.
struct CoreRunning(Arc<CommitShared>);

impl Drop for CoreRunning {
    fn drop(&mut self) {
        let mut st = self.0.lock();
        assert!(st.running > 0, "more core threads stopped than started");
        st.running -= 1;
        self.0.changed.notify_all();
    }
}

/// One core thread: receive a group, handle it, write it, hand its replies over; until stop.
struct CoreWorker {
    index: usize,
    core: ShardCore<RocksKv>,
    socket: UdpSocket,
    control: Receiver<BlockServices>,
    commit: Arc<CommitShared>,
}

impl CoreWorker {
    fn run(mut self, stop: &AtomicBool) {
        // One byte more than the largest valid datagram, so that oversized ones are noticed.
        let mut group = Group {
            bufs: vec![vec![0u8; MAX_UDP_MTU as usize + 1]; RECV_BATCH],
            got: Vec::with_capacity(RECV_BATCH),
            replies: Vec::with_capacity(MAX_BATCH),
        };
        let mut last_expiry = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            if !apply_control(&mut self.core, &self.control) {
                return;
            }
            match group.run(&mut self.core, &self.socket, &self.control) {
                Ok(wrote) => self.reply(wrote, &mut group.replies),
                Err(e) => {
                    // The store is failing (disk full, I/O error): reply nothing, since
                    // nothing in this group is known to be durable, and keep trying; clients
                    // retry.
                    tracing::error!("shard store failure: {e}");
                    group.replies.clear();
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            if last_expiry.elapsed() > DEDUP_EXPIRY_INTERVAL {
                last_expiry = Instant::now();
                match self.core.expire_dedup(EggsTime::now()) {
                    Ok(n) if n > 0 => tracing::debug!("expired {n} dedup entries"),
                    Ok(_) => {}
                    Err(e) => tracing::error!("expiring dedup entries: {e}"),
                }
            }
        }
    }

    /// Hands a group's replies to the group commit; sends those it lets out at once (a
    /// read-only group with nothing of this thread waiting for a sync).
    fn reply(&self, wrote: bool, replies: &mut Vec<Reply>) {
        let group = std::mem::take(replies);
        let now = {
            let mut st = self.commit.lock();
            // Back-pressure: a thread this far ahead of the disk waits for a sync to start.
            while (wrote || st.commit.is_waiting(self.index)) && st.commit.is_full() {
                st = self.commit.wait(st);
            }
            let now = st.commit.handled(self.index, wrote, group);
            if st.commit.has_queued() {
                self.commit.changed.notify_all();
            }
            now
        };
        if !now.is_empty() {
            eggs_common::udp::send_batch(&self.socket, &now);
        }
        // A group sent at once (or empty) gives its buffer back for the next group; a queued
        // one keeps it until its sync.
        *replies = if now.capacity() == 0 {
            Vec::with_capacity(MAX_BATCH)
        } else {
            let mut buf = now;
            buf.clear();
            buf
        };
    }
}

/// The commit thread: one WAL sync for all groups handed over since the previous sync, then
/// their replies, in the order they were handed over. Returns once every core thread has
/// stopped and what they handed over is committed.
fn commit_loop(wal: WalSyncer, sockets: Vec<UdpSocket>, shared: &CommitShared) {
    loop {
        let groups = {
            let mut st = shared.lock();
            loop {
                if let Some(n) = st.commit.start_sync() {
                    // Core threads waiting for room may go on.
                    shared.changed.notify_all();
                    break n;
                }
                if st.running == 0 {
                    return;
                }
                st = shared.wait(st);
            }
        };
        let started = Instant::now();
        let synced = wal.sync();
        tracing::trace!(
            "WAL sync for {groups} groups in {} µs",
            started.elapsed().as_micros()
        );
        if let Err(e) = &synced {
            // Nothing in these groups is known to be durable: reply nothing; clients retry,
            // and a retry is answered once a later sync has succeeded.
            tracing::error!("WAL sync failed, dropping the replies of {groups} groups: {e}");
        }
        let released = {
            let mut st = shared.lock();
            let released = st.commit.synced(synced.is_ok());
            shared.changed.notify_all();
            released
        };
        for (thread, replies) in released {
            if let Some(socket) = sockets.get(thread) {
                eggs_common::udp::send_batch(socket, &replies);
            }
        }
    }
}

/// Applies the control messages waiting; false once the server is shutting down.
fn apply_control(core: &mut ShardCore<RocksKv>, control: &Receiver<BlockServices>) -> bool {
    loop {
        match control.try_recv() {
            Ok(BlockServices(list)) => core.set_block_services(list),
            Err(TryRecvError::Empty) => return true,
            Err(TryRecvError::Disconnected) => return false,
        }
    }
}

/// The buffers of one group.
struct Group {
    bufs: Vec<Vec<u8>>,
    got: Vec<(usize, SocketAddr)>,
    replies: Vec<(SocketAddr, Vec<u8>)>,
}

impl Group {
    /// Waits (up to [`IDLE_WAKE`]) for requests, handles everything queued up to
    /// [`MAX_BATCH`], and writes the changes to RocksDB (not yet synced). Returns whether
    /// anything was written; the replies are left in `self.replies`.
    fn run(
        &mut self,
        core: &mut ShardCore<RocksKv>,
        socket: &UdpSocket,
        control: &Receiver<BlockServices>,
    ) -> Result<bool, ShardError> {
        let mut wrote = false;
        let mut handled = 0;
        let mut first = true;
        while handled < MAX_BATCH {
            let r = if first {
                eggs_common::udp::recv_batch(socket, &mut self.bufs, &mut self.got)
            } else {
                eggs_common::udp::try_recv_batch(socket, &mut self.bufs, &mut self.got)
            };
            first = false;
            if let Err(e) = r {
                if !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) {
                    tracing::debug!("receive: {e}");
                }
                break;
            }
            handled += self.got.len();
            // A block-service list that came while this thread slept in `recvmmsg` goes
            // before the requests that woke it (the first writes after start-up need it).
            apply_control(core, control);
            for (&(n, from), buf) in self.got.iter().zip(&self.bufs) {
                let bytes = &buf[..n.min(buf.len())];
                let req = match codec::decode::<ShardRequest>(bytes) {
                    Ok(req) if n <= MAX_UDP_MTU as usize => req,
                    Ok(_) | Err(_) => {
                        reject_malformed(socket, bytes, from);
                        continue;
                    }
                };
                wrote |= req.body.is_write();
                let resp = core.handle(&req, EggsTime::now())?;
                if let Err(e) = &resp.result {
                    tracing::debug!("{} failed: {e}", req.body.kind());
                }
                // The core built the reply for this limit: larger would be its bug.
                let bytes = codec::encode_within(&resp, reply_limit(&req.body));
                self.replies.push((from, bytes));
            }
        }
        if wrote {
            core.kv().write_unsynced()?;
        }
        Ok(wrote)
    }
}

/// Parses `A..=B`, `A..B`, `N` or a comma list of those into shard ids.
pub fn parse_shard_set(s: &str) -> Result<Vec<ShardId>, ServerError> {
    let bad = || ServerError::BadShardSet(s.to_string());
    let num = |x: &str| x.trim().parse::<u8>().map_err(|_| bad());
    let mut out = Vec::new();
    for part in s.split(',') {
        if let Some((a, b)) = part.split_once("..=") {
            out.extend((num(a)?..=num(b)?).map(ShardId));
        } else if let Some((a, b)) = part.split_once("..") {
            // The exclusive end may be 256.
            let end = b.trim().parse::<u16>().map_err(|_| bad())?.min(256);
            // Below 256, so every x fits a shard id.
            out.extend((u16::from(num(a)?)..end).map(|x| ShardId(fit(x))));
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
