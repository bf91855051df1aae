//! A running cluster: shuckle, the shard process(es) and the CDC as child processes.

use crate::error::RunError;
use crate::layout::{self, DirLock};
use crate::proc::{describe_status, log_tail, Proc, Spec};
use eggs_client::{Client, ClientOptions, ShuckleClient};
use eggs_protocol::conv::{millis_of, nanos_of};
use eggs_protocol::shuckle::{BlockServicesReq, CdcReq, ShardsReq};
use eggs_protocol::{Addr, EggsTime};
use nix::sys::signal::Signal;
use std::ffi::OsString;
use std::fmt;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// What to run and where.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// Data directory: `shuckle/`, `shard-K/`, `cdc/` and `logs/` go under it.
    pub dir: PathBuf,
    /// Where `eggsshuckle`, `eggsshard` and `eggscdc` are.
    pub bin_dir: PathBuf,
    /// Port shuckle listens on, on 127.0.0.1; 0 picks a free one.
    pub shuckle_port: u16,
    /// How many `eggsshard` processes share the 256 shards (1..=256).
    pub shard_processes: usize,
    /// Block services to run (none by default).
    pub block_services: BlockServicesLayout,
    /// Run `eggsgc` (named `gc`, status in `gc/status`) with these intervals (none by default).
    pub gc: Option<GcIntervals>,
    /// How long shards keep a transient file without changes before GC may destroy it
    /// (`None`: the shards' default, an hour).
    pub transient_deadline_ms: Option<u64>,
}

/// Pauses between the passes of `eggsgc`'s loops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GcIntervals {
    pub collect_ms: u64,
    pub destroy_ms: u64,
    /// Between scrub passes (each reads every block once, rate-limited); 0: no scrubbing.
    pub scrub_ms: u64,
    /// Between looks for decommissioned block services to empty; 0: no migration.
    pub migrate_ms: u64,
}

impl GcIntervals {
    /// Short, for a local cluster: deleted data goes within seconds of its policy allowing it.
    pub const LOCAL: GcIntervals = GcIntervals {
        collect_ms: 5_000,
        destroy_ms: 5_000,
        // A local cluster's disks are small: one full scrub an hour costs little.
        scrub_ms: 3_600_000,
        migrate_ms: 10_000,
    };
}

/// Block services: `flash` and `hdd` services (one storage directory each) spread round-robin
/// over `failure_domains` `eggsblocks` processes, one process per failure domain.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockServicesLayout {
    pub failure_domains: usize,
    pub flash: usize,
    pub hdd: usize,
}

impl BlockServicesLayout {
    /// Enough for the default policies: RS(10,4) needs 14 failure domains, on flash and hdd.
    pub const RS_10_4: BlockServicesLayout = BlockServicesLayout {
        failure_domains: 14,
        flash: 14,
        hdd: 14,
    };

    pub fn total(&self) -> usize {
        if self.failure_domains == 0 {
            0
        } else {
            self.flash + self.hdd
        }
    }

    /// The storage directories of failure domain `fd`: `(name, class)` pairs.
    pub fn services_of(&self, fd: usize) -> Vec<(String, &'static str)> {
        let n = self.failure_domains.max(1);
        let flash = (0..self.flash)
            .filter(|i| i % n == fd)
            .map(|i| (format!("flash-{i}"), "flash"));
        let hdd = (0..self.hdd)
            .filter(|i| i % n == fd)
            .map(|i| (format!("hdd-{i}"), "hdd"));
        flash.chain(hdd).collect()
    }
}

impl ClusterConfig {
    /// One shard process, a free shuckle port, binaries from [`default_bin_dir`](crate::default_bin_dir).
    pub fn new(dir: impl Into<PathBuf>) -> ClusterConfig {
        ClusterConfig {
            dir: dir.into(),
            bin_dir: layout::default_bin_dir(),
            shuckle_port: 0,
            shard_processes: 1,
            block_services: BlockServicesLayout::default(),
            gc: None,
            transient_deadline_ms: None,
        }
    }
}

/// Something [`Cluster::supervise`] noticed or did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChildEvent {
    Exited {
        name: String,
        pid: u32,
        status: String,
        restart_in: Duration,
        log: PathBuf,
    },
    Restarted {
        name: String,
        pid: u32,
    },
    RestartFailed {
        name: String,
        error: String,
        retry_in: Duration,
    },
}

impl fmt::Display for ChildEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChildEvent::Exited {
                name,
                pid,
                status,
                restart_in,
                log,
            } => write!(
                f,
                "{name} (pid {pid}) exited unexpectedly ({status}); restarting in {:.1}s; see {}",
                restart_in.as_secs_f64(),
                log.display()
            ),
            ChildEvent::Restarted { name, pid } => write!(f, "{name} restarted (pid {pid})"),
            ChildEvent::RestartFailed {
                name,
                error,
                retry_in,
            } => write!(
                f,
                "restarting {name} failed: {error}; retrying in {:.1}s",
                retry_in.as_secs_f64()
            ),
        }
    }
}

/// How long a child gets to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shuckle gets to start listening.
const SHUCKLE_START_TIMEOUT: Duration = Duration::from_secs(15);
/// How often eggsrun's shards heartbeat and refresh their block-service lists.
const SHARD_HEARTBEAT_MS: u64 = 100;

/// Progress of `wait_registered`'s check that every shard's block-service list is complete.
struct ShardListsSince {
    /// When every block service was first seen registered.
    since: Option<EggsTime>,
    /// Per shard, its first registration seen after `since` (0: none yet).
    first_seen_after: Vec<EggsTime>,
}

impl Default for ShardListsSince {
    fn default() -> Self {
        ShardListsSince {
            since: None,
            first_seen_after: vec![EggsTime(0); eggs_protocol::NUM_SHARDS],
        }
    }
}

/// A registration older than this is not "registered": the process stopped heartbeating.
const MAX_REGISTRATION_AGE: Duration = Duration::from_secs(10);

/// A cluster of child processes. Dropping it kills them (SIGKILL); [`Cluster::stop`] stops
/// them cleanly.
pub struct Cluster {
    cfg: ClusterConfig,
    shuckle_addr: SocketAddr,
    shard_ranges: Vec<RangeInclusive<u8>>,
    /// Shuckle first, then the shard processes in range order, then the CDC. Behind a mutex
    /// only so that `&self` methods can reap exited children.
    procs: Mutex<Vec<Proc>>,
    _lock: DirLock,
}

impl Cluster {
    /// Starts shuckle, waits until it listens, then starts the shard process(es) and the CDC.
    /// Does not wait for them to register: see [`Cluster::wait_registered`].
    pub async fn start(cfg: ClusterConfig) -> Result<Cluster, RunError> {
        let shard_ranges = layout::split_shards(cfg.shard_processes)?;
        let mut bins = vec!["eggsshuckle", "eggsshard", "eggscdc"];
        if cfg.block_services.total() > 0 {
            bins.push("eggsblocks");
        }
        if cfg.gc.is_some() {
            bins.push("eggsgc");
        }
        for bin in bins {
            let path = cfg.bin_dir.join(bin);
            if !path.is_file() {
                return Err(RunError::MissingBinary(path));
            }
        }
        let mut cfg = cfg;
        cfg.dir = std::path::absolute(&cfg.dir)
            .map_err(|e| RunError::io(format!("resolving {}", cfg.dir.display()), e))?;
        create_dir(&cfg.dir.join("logs"))?;
        let lock = DirLock::acquire(&cfg.dir)?;
        layout::check_layout(&cfg.dir, cfg.shard_processes)?;
        let port = match cfg.shuckle_port {
            0 => layout::free_port()?,
            p => p,
        };
        layout::check_port_free(port)?;
        cfg.shuckle_port = port;
        let shuckle_addr = SocketAddr::from(([127, 0, 0, 1], port));
        let procs = specs(&cfg, shuckle_addr, &shard_ranges)?
            .into_iter()
            .map(Proc::new)
            .collect();
        // Built before anything runs, so that an early error drops it and kills what started.
        let cluster = Cluster {
            cfg,
            shuckle_addr,
            shard_ranges,
            procs: Mutex::new(procs),
            _lock: lock,
        };
        cluster.spawn_all().await?;
        Ok(cluster)
    }

    async fn spawn_all(&self) -> Result<(), RunError> {
        self.procs()[0].spawn()?;
        self.wait_shuckle_listening().await?;
        for p in self.procs().iter_mut().skip(1) {
            p.spawn()?;
        }
        Ok(())
    }

    fn procs(&self) -> MutexGuard<'_, Vec<Proc>> {
        self.procs.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn shuckle_addr(&self) -> SocketAddr {
        self.shuckle_addr
    }

    pub fn config(&self) -> &ClusterConfig {
        &self.cfg
    }

    /// The absolute data directory.
    pub fn dir(&self) -> &Path {
        &self.cfg.dir
    }

    /// The shards each shard process serves, in order (`shard-0` first).
    pub fn shard_ranges(&self) -> &[RangeInclusive<u8>] {
        &self.shard_ranges
    }

    /// Where a child's stdout and stderr go.
    pub fn log_path(&self, name: &str) -> PathBuf {
        self.cfg.dir.join("logs").join(format!("{name}.log"))
    }

    /// Every running child: `("shuckle", pid)`, `("shard-0", pid)`, ..., `("cdc", pid)`.
    pub fn processes(&self) -> Vec<(String, u32)> {
        self.procs()
            .iter()
            .filter_map(|p| Some((p.name().to_string(), p.pid()?)))
            .collect()
    }

    /// Every child's name, running or not.
    pub fn names(&self) -> Vec<String> {
        self.procs().iter().map(|p| p.name().to_string()).collect()
    }

    /// A client of this cluster.
    pub async fn client(&self) -> Result<Client, RunError> {
        Ok(Client::new(self.shuckle_addr, ClientOptions::default()).await?)
    }

    async fn wait_shuckle_listening(&self) -> Result<(), RunError> {
        let deadline = Instant::now() + SHUCKLE_START_TIMEOUT;
        loop {
            if tokio::net::TcpStream::connect(self.shuckle_addr)
                .await
                .is_ok()
            {
                return Ok(());
            }
            self.check_alive()?;
            if Instant::now() >= deadline {
                return Err(RunError::NotRegistered {
                    waited_ms: millis_of(SHUCKLE_START_TIMEOUT),
                    missing: format!("shuckle is not listening on {}", self.shuckle_addr),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Fails with the child's status and the end of its log if any child has exited.
    fn check_alive(&self) -> Result<(), RunError> {
        let mut procs = self.procs();
        for p in procs.iter_mut() {
            p.reap();
            if let Some((_, status)) = p.take_unreported_exit() {
                let log = self.log_path(p.name());
                return Err(RunError::ChildExited {
                    name: p.name().to_string(),
                    status: describe_status(status),
                    tail: log_tail(&log, 15),
                    log,
                });
            }
        }
        Ok(())
    }

    /// Waits until every shard and the CDC have registered with shuckle since their process
    /// last started, and every shard has a complete list of block services. Fails early if
    /// a child exits meanwhile.
    pub async fn wait_registered(&self, timeout: Duration) -> Result<(), RunError> {
        let start = Instant::now();
        let shuckle = ShuckleClient::new(self.shuckle_addr);
        let mut lists = ShardListsSince::default();
        loop {
            self.check_alive()?;
            let missing = match self.missing_registrations(&shuckle).await {
                Ok(m) if m.is_empty() => match self.shards_without_list(&shuckle, &mut lists).await
                {
                    Ok(0) => return Ok(()),
                    Ok(n) => format!("{n} shards' block-service lists"),
                    Err(e) => format!("cannot ask shuckle: {e}"),
                },
                Ok(m) => m,
                Err(e) => format!("cannot ask shuckle: {e}"),
            };
            if start.elapsed() >= timeout {
                return Err(RunError::NotRegistered {
                    waited_ms: millis_of(start.elapsed()),
                    missing: format!(
                        "{missing} (logs in {})",
                        self.cfg.dir.join("logs").display()
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// How many shards may still hold a block-service list fetched before every block
    /// service had registered. A shard fetches the list before each registration, so a
    /// registration following one seen after `lists.since` proves a fetch after it.
    async fn shards_without_list(
        &self,
        shuckle: &ShuckleClient,
        lists: &mut ShardListsSince,
    ) -> Result<usize, RunError> {
        if self.cfg.block_services.total() == 0 {
            return Ok(0);
        }
        let since = *lists.since.get_or_insert_with(EggsTime::now);
        let shards = shuckle.request(ShardsReq {}).await?;
        let mut waiting = 0;
        for s in self.shard_ranges.iter().flat_map(|r| r.clone()) {
            let seen = shards
                .shards
                .get(s as usize)
                .map_or(EggsTime(0), |i| i.last_seen);
            let first = lists.first_seen_after[s as usize];
            if first.0 == 0 {
                if seen > since {
                    lists.first_seen_after[s as usize] = seen;
                }
                waiting += 1;
            } else if seen <= first {
                waiting += 1;
            }
        }
        Ok(waiting)
    }

    /// Describes what has not registered freshly yet; empty when everything has.
    async fn missing_registrations(&self, shuckle: &ShuckleClient) -> Result<String, RunError> {
        let shards = shuckle.request(ShardsReq {}).await?;
        let cdc = shuckle.request(CdcReq {}).await?;
        let (shard_starts, cdc_start) = self.start_times();
        let now = EggsTime::now();
        let mut missing = Vec::new();
        for (i, range) in self.shard_ranges.iter().enumerate() {
            let stale: Vec<u8> = range
                .clone()
                .filter(|&s| {
                    let info = shards.shards.get(s as usize);
                    !info.is_some_and(|info| {
                        is_fresh(info.addr, info.last_seen, shard_starts[i], now)
                    })
                })
                .collect();
            if !stale.is_empty() {
                let n = stale.len();
                missing.push(format!(
                    "shard-{i}: {n} of its shards ({})",
                    eggs_protocol::ids::compact_shard_ranges(&stale)
                ));
            }
        }
        if !is_fresh(cdc.addr, cdc.last_seen, cdc_start, now) {
            missing.push("cdc".to_string());
        }
        let blocks = self.missing_block_services(shuckle).await?;
        if blocks > 0 {
            missing.push(format!("{blocks} block services"));
        }
        Ok(missing.join(", "))
    }

    /// When each shard process and the CDC last started.
    fn start_times(&self) -> (Vec<EggsTime>, EggsTime) {
        let procs = self.procs();
        let shards = procs[1..=self.shard_ranges.len()]
            .iter()
            .map(|p| p.started_at)
            .collect();
        let cdc = procs
            .iter()
            .find(|p| p.name() == "cdc")
            .map_or(EggsTime(0), |p| p.started_at);
        (shards, cdc)
    }

    /// How many block services have not registered since the latest start of a block
    /// process (they all heartbeat every second).
    async fn missing_block_services(&self, shuckle: &ShuckleClient) -> Result<usize, RunError> {
        let want = self.cfg.block_services.total();
        if want == 0 {
            return Ok(0);
        }
        let since = self
            .procs()
            .iter()
            .filter(|p| p.name().starts_with("blocks-"))
            .map(|p| p.started_at)
            .max()
            .unwrap_or(EggsTime(0));
        let now = EggsTime::now();
        let services = shuckle.request(BlockServicesReq {}).await?.services;
        let fresh = services
            .iter()
            .filter(|s| is_fresh(s.addr, s.last_seen, since, now))
            .count();
        Ok(want.saturating_sub(fresh))
    }

    fn with_proc<T>(
        &self,
        name: &str,
        f: impl FnOnce(&mut Proc) -> Result<T, RunError>,
    ) -> Result<T, RunError> {
        let mut procs = self.procs();
        let p = procs
            .iter_mut()
            .find(|p| p.name() == name)
            .ok_or_else(|| RunError::UnknownProcess(name.to_string()))?;
        f(p)
    }

    /// Sends `signal` (e.g. [`Signal::SIGKILL`]) to the named child; does nothing if it is not
    /// running. It is not restarted unless [`Cluster::restart`] (or [`Cluster::supervise`])
    /// does it.
    pub fn kill(&mut self, name: &str, signal: Signal) -> Result<(), RunError> {
        self.with_proc(name, |p| p.signal(signal))
    }

    /// Stops the named child if it runs (SIGTERM, then SIGKILL after a timeout) and starts it
    /// again with the same arguments; for shuckle, also waits until it listens again.
    pub async fn restart(&mut self, name: &str) -> Result<(), RunError> {
        let mut p = {
            let mut procs = self.procs();
            let i = procs
                .iter()
                .position(|p| p.name() == name)
                .ok_or_else(|| RunError::UnknownProcess(name.to_string()))?;
            // Taken out so that the lock is not held across the await below.
            let placeholder = Proc::new(procs[i].spec.clone());
            std::mem::replace(&mut procs[i], placeholder)
        };
        p.stop(STOP_TIMEOUT).await;
        let spawned = p.spawn();
        self.with_proc(name, |slot| {
            *slot = p;
            Ok(())
        })?;
        spawned?;
        if name == "shuckle" {
            self.wait_shuckle_listening().await?;
        }
        Ok(())
    }

    /// Reaps children that exited and restarts them after a backoff (which doubles with each
    /// crash in a row). Call it every ~100 ms to keep the cluster up; it never blocks.
    pub fn supervise(&mut self) -> Vec<ChildEvent> {
        let logs = self.cfg.dir.join("logs");
        let mut events = Vec::new();
        for p in self.procs.get_mut().unwrap_or_else(|e| e.into_inner()) {
            p.reap();
            if let Some((pid, status)) = p.take_unreported_exit() {
                let restart_in = p.schedule_restart();
                events.push(ChildEvent::Exited {
                    name: p.name().to_string(),
                    pid,
                    status: describe_status(status),
                    restart_in,
                    log: logs.join(format!("{}.log", p.name())),
                });
            }
            if p.restart_due() {
                events.push(match p.spawn() {
                    Ok(pid) => ChildEvent::Restarted {
                        name: p.name().to_string(),
                        pid,
                    },
                    Err(e) => ChildEvent::RestartFailed {
                        name: p.name().to_string(),
                        error: e.to_string(),
                        retry_in: p.schedule_restart(),
                    },
                });
            }
        }
        events
    }

    /// Stops every child cleanly: the shard processes and the CDC first, then shuckle. Fails
    /// (after stopping everything) if a child had to be killed or exited with an error.
    pub async fn stop(self) -> Result<(), RunError> {
        let mut procs = std::mem::take(&mut *self.procs());
        let (shuckle, others) = procs.split_at_mut(1);
        let mut unclean = stop_all(others).await;
        unclean.extend(stop_all(shuckle).await);
        if unclean.is_empty() {
            Ok(())
        } else {
            Err(RunError::Unclean(unclean))
        }
    }
}

/// Stops the given children concurrently; describes those that did not exit cleanly.
async fn stop_all(procs: &mut [Proc]) -> Vec<String> {
    for p in procs.iter() {
        let _ = p.signal(Signal::SIGTERM);
    }
    let mut unclean = Vec::new();
    for p in procs.iter_mut() {
        let name = p.name().to_string();
        match p.wait_exit(STOP_TIMEOUT).await {
            Some(s) if s.killed => unclean.push(format!("{name} killed after {STOP_TIMEOUT:?}")),
            Some(s) if !s.status.success() => {
                unclean.push(format!("{name} {}", describe_status(s.status)))
            }
            _ => {}
        }
    }
    unclean
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for p in self.procs.get_mut().unwrap_or_else(|e| e.into_inner()) {
            p.kill_now();
        }
    }
}

fn create_dir(path: &Path) -> Result<(), RunError> {
    std::fs::create_dir_all(path)
        .map_err(|e| RunError::io(format!("creating {}", path.display()), e))
}

/// The children in start order: shuckle, the shard processes, the CDC.
fn specs(
    cfg: &ClusterConfig,
    shuckle_addr: SocketAddr,
    shard_ranges: &[RangeInclusive<u8>],
) -> Result<Vec<Spec>, RunError> {
    let spec = |name: &str, bin: &str, data: &str, args: Vec<String>| -> Result<Spec, RunError> {
        let data_dir = cfg.dir.join(data);
        create_dir(&data_dir)?;
        let mut all: Vec<OsString> = vec!["--dir".into(), data_dir.into_os_string()];
        all.extend(args.into_iter().map(OsString::from));
        Ok(Spec {
            name: name.to_string(),
            program: cfg.bin_dir.join(bin),
            args: all,
            log: cfg.dir.join("logs").join(format!("{name}.log")),
        })
    };
    let shuckle = shuckle_addr.to_string();
    let mut out = vec![spec(
        "shuckle",
        "eggsshuckle",
        "shuckle",
        vec!["--addr".into(), shuckle.clone()],
    )?];
    for (i, r) in shard_ranges.iter().enumerate() {
        let name = format!("shard-{i}");
        let args = vec![
            "--shuckle".into(),
            shuckle.clone(),
            "--shards".into(),
            layout::shards_arg(r),
            "--bind".into(),
            "127.0.0.1:0".into(),
            // A quick heartbeat (it also refreshes the shards' block-service lists) makes
            // start-up and block-service changes take effect sooner; it is cheap locally.
            "--heartbeat-ms".into(),
            SHARD_HEARTBEAT_MS.to_string(),
        ];
        let mut args = args;
        if let Some(ms) = cfg.transient_deadline_ms {
            args.extend(["--transient-deadline-ms".into(), ms.to_string()]);
        }
        out.push(spec(&name, "eggsshard", &name, args)?);
    }
    let cdc_args = vec![
        "--shuckle".into(),
        shuckle,
        "--bind".into(),
        "127.0.0.1:0".into(),
    ];
    out.push(spec("cdc", "eggscdc", "cdc", cdc_args)?);
    for fd in 0..cfg.block_services.failure_domains {
        if let Some(s) = blocks_spec(cfg, &shuckle_addr.to_string(), fd)? {
            out.push(s);
        }
    }
    if let Some(gc) = cfg.gc {
        out.push(gc_spec(cfg, &shuckle_addr.to_string(), gc)?);
    }
    Ok(out)
}

/// One `eggsblocks` process for failure domain `fd`, serving its share of the directories.
fn blocks_spec(cfg: &ClusterConfig, shuckle: &str, fd: usize) -> Result<Option<Spec>, RunError> {
    let services = cfg.block_services.services_of(fd);
    if services.is_empty() {
        return Ok(None);
    }
    let name = format!("blocks-{fd}");
    let mut args: Vec<OsString> = Vec::new();
    for (dir, class) in services {
        let path = cfg.dir.join(&name).join(dir);
        create_dir(&path)?;
        let mut arg = path.into_os_string();
        arg.push(format!(":{class}"));
        args.push("--dir".into());
        args.push(arg);
    }
    for a in [
        "--failure-domain",
        &format!("fd{fd}"),
        "--shuckle",
        shuckle,
        "--bind",
        "127.0.0.1:0",
    ] {
        args.push(a.into());
    }
    Ok(Some(Spec {
        program: cfg.bin_dir.join("eggsblocks"),
        args,
        log: cfg.dir.join("logs").join(format!("{name}.log")),
        name,
    }))
}

/// `eggsgc`, writing its status to `gc/status` under the data directory.
fn gc_spec(cfg: &ClusterConfig, shuckle: &str, gc: GcIntervals) -> Result<Spec, RunError> {
    let dir = cfg.dir.join("gc");
    create_dir(&dir)?;
    let mut args: Vec<OsString> = vec!["--status-file".into(), dir.join("status").into()];
    for a in [
        "--shuckle".to_string(),
        shuckle.to_string(),
        "--collect-interval-ms".into(),
        gc.collect_ms.to_string(),
        "--destroy-interval-ms".into(),
        gc.destroy_ms.to_string(),
        "--scrub-interval-ms".into(),
        gc.scrub_ms.to_string(),
        "--migrate-interval-ms".into(),
        gc.migrate_ms.to_string(),
    ] {
        args.push(a.into());
    }
    Ok(Spec {
        name: "gc".into(),
        program: cfg.bin_dir.join("eggsgc"),
        args,
        log: cfg.dir.join("logs").join("gc.log"),
    })
}

/// Whether a registration comes from the process started at `since` and is still heartbeating.
fn is_fresh(addr: Addr, seen: EggsTime, since: EggsTime, now: EggsTime) -> bool {
    addr.port != 0
        && seen >= since
        && now.0.saturating_sub(seen.0) <= nanos_of(MAX_REGISTRATION_AGE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freshness() {
        let a = Addr {
            ip: [127, 0, 0, 1],
            port: 5000,
        };
        let s = |n: u64| EggsTime(n * 1_000_000_000);
        assert!(is_fresh(a, s(101), s(100), s(102)));
        assert!(
            !is_fresh(Addr::default(), s(101), s(100), s(102)),
            "never registered"
        );
        assert!(
            !is_fresh(a, s(99), s(100), s(102)),
            "from before the restart"
        );
        assert!(!is_fresh(a, s(101), s(100), s(120)), "stopped heartbeating");
    }

    #[test]
    fn child_specs() {
        let cfg = ClusterConfig {
            dir: std::env::temp_dir().join(format!("eggs-specs-{}", std::process::id())),
            bin_dir: "/bin".into(),
            shuckle_port: 10001,
            shard_processes: 2,
            block_services: BlockServicesLayout {
                failure_domains: 3,
                flash: 4,
                hdd: 2,
            },
            gc: None,
            transient_deadline_ms: None,
        };
        let ranges = layout::split_shards(2).unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], 10001));
        let s = specs(&cfg, addr, &ranges).unwrap();
        let names: Vec<&str> = s.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            ["shuckle", "shard-0", "shard-1", "cdc", "blocks-0", "blocks-1", "blocks-2"]
        );
        // Round-robin: fd0 gets flash-0, flash-3 and hdd-0; fd2 gets flash-2 only.
        let blocks0: Vec<String> = s[4]
            .args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let d0 = cfg.dir.join("blocks-0");
        assert_eq!(
            blocks0,
            [
                "--dir".to_string(),
                format!("{}/flash-0:flash", d0.display()),
                "--dir".into(),
                format!("{}/flash-3:flash", d0.display()),
                "--dir".into(),
                format!("{}/hdd-0:hdd", d0.display()),
                "--failure-domain".into(),
                "fd0".into(),
                "--shuckle".into(),
                "127.0.0.1:10001".into(),
                "--bind".into(),
                "127.0.0.1:0".into(),
            ]
        );
        assert_eq!(s[6].args.iter().filter(|a| *a == "--dir").count(), 1);
        let args = |i: usize| -> Vec<String> {
            s[i].args
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect()
        };
        let d = cfg.dir.display();
        assert_eq!(
            args(0),
            [
                "--dir".to_string(),
                format!("{d}/shuckle"),
                "--addr".into(),
                "127.0.0.1:10001".into()
            ]
        );
        assert_eq!(
            args(2),
            [
                "--dir".to_string(),
                format!("{d}/shard-1"),
                "--shuckle".into(),
                "127.0.0.1:10001".into(),
                "--shards".into(),
                "128..=255".into(),
                "--bind".into(),
                "127.0.0.1:0".into(),
                "--heartbeat-ms".into(),
                "100".into()
            ]
        );
        assert_eq!(s[3].program, Path::new("/bin/eggscdc"));
        assert_eq!(s[3].log, cfg.dir.join("logs/cdc.log"));
        std::fs::remove_dir_all(&cfg.dir).unwrap();
    }

    #[tokio::test]
    async fn missing_binaries_are_reported() {
        let mut cfg = ClusterConfig::new(std::env::temp_dir().join("eggs-never-created"));
        cfg.bin_dir = "/nonexistent-eggs-bin".into();
        match Cluster::start(cfg).await {
            Err(RunError::MissingBinary(p)) => assert!(p.ends_with("eggsshuckle")),
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("started without binaries"),
        }
    }
}
