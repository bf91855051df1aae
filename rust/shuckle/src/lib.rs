//! Shuckle, the registry of the cluster: where each shard, the CDC and every block service
//! can be reached, when each was last heard from, and the operator-set block service flags.
//!
//! Layers, from the inside out:
//! - [`registry`]: the I/O-free core (state + request handling, time passed in);
//! - `store`: RocksDB persistence, one key per shard / CDC / block service;
//! - `server`: TCP (framed with [`eggs_common::frame`]) and the core thread.
//!
//! ```no_run
//! # async fn example() -> Result<(), eggs_shuckle::ShuckleError> {
//! let addr = "127.0.0.1:0".parse().expect("a valid address");
//! let cfg = eggs_shuckle::ShuckleConfig::new(addr, "/tmp/shuckle".into());
//! let shuckle = eggs_shuckle::Shuckle::bind(cfg).await?;
//! println!("listening on {}", shuckle.local_addr());
//! shuckle.run(eggs_common::shutdown_signal()).await
//! # }
//! ```

pub mod registry;
mod server;
mod store;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Block services silent for longer than this are reported STALE.
pub const DEFAULT_STALE_AFTER_MS: u64 = 60_000;
/// Connections served at once; more wait in the kernel's accept queue.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// How long a connection may take to send a whole request before it is closed.
pub const DEFAULT_IDLE_TIMEOUT_MS: u64 = 30_000;

#[derive(Clone, Debug)]
pub struct ShuckleConfig {
    /// Where to listen (port 0 picks a free port; see [`Shuckle::local_addr`]).
    pub addr: SocketAddr,
    /// The RocksDB directory, created if missing.
    pub dir: PathBuf,
    pub stale_after_ms: u64,
    /// At least 1.
    pub max_connections: usize,
    /// At least 1.
    pub idle_timeout_ms: u64,
}

impl ShuckleConfig {
    /// A configuration with the default limits.
    pub fn new(addr: SocketAddr, dir: PathBuf) -> ShuckleConfig {
        ShuckleConfig {
            addr,
            dir,
            stale_after_ms: DEFAULT_STALE_AFTER_MS,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            idle_timeout_ms: DEFAULT_IDLE_TIMEOUT_MS,
        }
    }

    fn limits(&self) -> Result<server::Limits, ShuckleError> {
        if self.max_connections == 0 {
            return Err(ShuckleError::BadConfig(
                "max_connections must be at least 1",
            ));
        }
        if self.idle_timeout_ms == 0 {
            return Err(ShuckleError::BadConfig(
                "idle_timeout_ms must be at least 1",
            ));
        }
        Ok(server::Limits {
            max_connections: self.max_connections,
            idle_timeout: Duration::from_millis(self.idle_timeout_ms),
        })
    }
}

/// Everything that can stop shuckle from starting or running. Problems with single requests
/// or connections are answered or logged instead, and never end the server.
#[derive(Debug, thiserror::Error)]
pub enum ShuckleError {
    #[error("bad configuration: {0}")]
    BadConfig(&'static str),
    #[error("cannot open database {}: {source}", path.display())]
    OpenDb {
        path: PathBuf,
        source: rocksdb::Error,
    },
    #[error("database: {0}")]
    Db(#[from] rocksdb::Error),
    #[error(transparent)]
    Format(#[from] eggs_common::format_version::FormatError),
    #[error("corrupt database record under key {key:02x?}: {why}")]
    Corrupt { key: Vec<u8>, why: String },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("background task failed: {0}")]
    Background(String),
}

/// A shuckle with its database loaded and its socket bound, not yet serving.
pub struct Shuckle {
    listener: tokio::net::TcpListener,
    local_addr: SocketAddr,
    core: server::Core,
    limits: server::Limits,
}

impl Shuckle {
    /// Opens (or creates) the database, loads the registry and binds the listening socket.
    pub async fn bind(cfg: ShuckleConfig) -> Result<Shuckle, ShuckleError> {
        let limits = cfg.limits()?;
        let stale_after = Duration::from_millis(cfg.stale_after_ms);
        let dir = cfg.dir.clone();
        // Opening RocksDB replays its WAL: blocking work that has no place on a worker thread.
        let core = tokio::task::spawn_blocking(move || server::Core::load(&dir, stale_after))
            .await
            .map_err(|e| ShuckleError::Background(e.to_string()))??;
        let listener = tokio::net::TcpListener::bind(cfg.addr)
            .await
            .map_err(|source| ShuckleError::Bind {
                addr: cfg.addr,
                source,
            })?;
        let local_addr = listener.local_addr()?;
        tracing::info!("listening on {local_addr}");
        Ok(Shuckle {
            listener,
            local_addr,
            core,
            limits,
        })
    }

    /// The address actually bound, which tells the port when the configuration said 0.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` resolves. When this returns the database is closed, so the
    /// same directory can be opened again at once.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ShuckleError> {
        server::run(self.listener, self.core, self.limits, shutdown).await
    }
}

/// [`Shuckle::bind`] then [`Shuckle::run`].
pub async fn serve(
    cfg: ShuckleConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ShuckleError> {
    Shuckle::bind(cfg).await?.run(shutdown).await
}
