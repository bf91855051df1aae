//! Block services: each stores the blocks (pieces of file data) of one local disk, checks
//! their CRCs, and streams them over TCP. One process serves several disks, one directory
//! and one block service each, behind a single TCP listener (requests name their service).
//!
//! Layers, from the inside out; a module uses only modules above it in this list (never one
//! below, so there is no import loop), and the crate root puts them together:
//! - `error` ([`BlocksError`]) and `sys` (system calls, durable-file helpers);
//! - [`store`]: the on-disk format and all blocking file I/O (documented there);
//! - [`identity`]: the per-directory id, secret key and storage class;
//! - `service`: a directory opened and locked, with the flags shuckle reports for it;
//! - `register`: registration with shuckle and flag refresh, every interval;
//! - `conn`: one TCP connection, the framing of requests, responses and block data;
//! - `handlers`: what each request does, file I/O on tokio's blocking pool;
//! - `server`: the accept loop, one task per connection handing requests to `handlers`;
//! - [`client`]: async helpers to send each request (used by tests and clients); it uses
//!   only the protocol.
//!
//! Writes and erasures are authorised by MACs from [`eggs_common::crypto`].
//!
//! ```no_run
//! # async fn example() -> Result<(), eggs_blocks::BlocksError> {
//! use eggs_protocol::policy::StorageClass;
//! let cfg = eggs_blocks::BlocksConfig {
//!     dirs: vec![("/data/disk1".into(), StorageClass::Hdd)],
//!     failure_domain: eggs_blocks::failure_domain("rack1-host7")?,
//!     bind: "127.0.0.1:0".parse().expect("an address"),
//!     shuckle: "127.0.0.1:10001".parse().expect("an address"),
//!     register_interval_ms: 1000,
//! };
//! let blocks = eggs_blocks::Blocks::bind(cfg).await?;
//! println!("serving {:?} on {}", blocks.service_ids(), blocks.local_addr());
//! blocks.run(eggs_common::shutdown_signal()).await
//! # }
//! ```

pub mod client;
mod conn;
mod error;
mod handlers;
pub mod identity;
mod register;
mod server;
mod service;
pub mod store;
mod sys;

pub use error::BlocksError;
pub use server::MAX_CONNECTIONS;

use eggs_protocol::policy::StorageClass;
use eggs_protocol::{Addr, BlockServiceId};
use service::Services;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Longest wait at shutdown for file work already started (it cannot be cancelled).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// Default time between registrations with shuckle (which also refresh the flags).
pub const DEFAULT_REGISTER_INTERVAL_MS: u64 = 1000;

#[derive(Clone, Debug)]
pub struct BlocksConfig {
    /// One block service per directory (created if missing), with its storage class.
    pub dirs: Vec<(PathBuf, StorageClass)>,
    /// Blocks of one span go to distinct failure domains (usually one per host).
    pub failure_domain: [u8; 16],
    /// Where to listen; must be IPv4 (port 0 picks a free port, see [`Blocks::local_addr`]).
    pub bind: SocketAddr,
    /// Shuckle's address.
    pub shuckle: SocketAddr,
    /// Time between registrations (heartbeats and flag refreshes); at least 1.
    pub register_interval_ms: u64,
}

/// A failure domain from its name: at most 16 bytes, zero-padded.
pub fn failure_domain(name: &str) -> Result<[u8; 16], BlocksError> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() > 16 {
        return Err(BlocksError::BadConfig(format!(
            "failure domain {name:?} must be 1 to 16 bytes"
        )));
    }
    let mut fd = [0u8; 16];
    fd[..bytes.len()].copy_from_slice(bytes);
    Ok(fd)
}

/// The host name (its first 16 bytes), the natural failure domain of a machine's disks.
pub fn default_failure_domain() -> [u8; 16] {
    let name = sys::hostname().unwrap_or_else(|| "localhost".into());
    let mut fd = [0u8; 16];
    let n = name.len().min(16);
    fd[..n].copy_from_slice(&name.as_bytes()[..n]);
    fd
}

/// Parses `PATH[:flash|hdd]` (flash when no class is given; a path may contain `:` itself).
pub fn parse_dir(spec: &str) -> Result<(PathBuf, StorageClass), BlocksError> {
    let (path, class) = match spec.rsplit_once(':') {
        Some((path, "flash")) => (path, StorageClass::Flash),
        Some((path, "hdd")) => (path, StorageClass::Hdd),
        _ => (spec, StorageClass::Flash),
    };
    if path.is_empty() {
        return Err(BlocksError::BadConfig(format!("empty path in {spec:?}")));
    }
    Ok((PathBuf::from(path), class))
}

/// Block services with their directories opened and socket bound, not yet serving.
pub struct Blocks {
    listener: tokio::net::TcpListener,
    local_addr: SocketAddr,
    services: Arc<Services>,
    failure_domain: [u8; 16],
    shuckle: SocketAddr,
    register_interval: Duration,
}

impl Blocks {
    /// Opens (creating if needed) every directory and binds the listening socket.
    pub async fn bind(cfg: BlocksConfig) -> Result<Blocks, BlocksError> {
        check_config(&cfg)?;
        let dirs = cfg.dirs.clone();
        // Opening counts the blocks of every directory: blocking work, possibly long.
        let services = tokio::task::spawn_blocking(move || Services::open(&dirs))
            .await
            .map_err(|e| BlocksError::Background(e.to_string()))??;
        let listener = tokio::net::TcpListener::bind(cfg.bind)
            .await
            .map_err(|source| BlocksError::Bind {
                addr: cfg.bind,
                source,
            })?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| BlocksError::Background(e.to_string()))?;
        tracing::info!("listening on {local_addr}");
        Ok(Blocks {
            listener,
            local_addr,
            services: Arc::new(services),
            failure_domain: cfg.failure_domain,
            shuckle: cfg.shuckle,
            register_interval: Duration::from_millis(cfg.register_interval_ms),
        })
    }

    /// The address actually bound, which tells the port when the configuration said 0.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The id of each directory's service, in the order of [`BlocksConfig::dirs`].
    pub fn service_ids(&self) -> Vec<BlockServiceId> {
        self.services.ids()
    }

    /// Registers with shuckle and serves until `shutdown` resolves. Requests in progress are
    /// abandoned then; none was acknowledged before it was durable.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), BlocksError> {
        let addr = Addr::from_socket_addr(self.local_addr)
            .ok_or_else(|| BlocksError::BadConfig("bind address must be IPv4".into()))?;
        let registration = tokio::spawn(register::run(register::Registration {
            services: self.services.clone(),
            addr,
            failure_domain: self.failure_domain,
            shuckle: eggs_client::ShuckleClient::new(self.shuckle),
            interval: self.register_interval,
        }));
        server::run(self.listener, self.services.clone(), shutdown).await;
        registration.abort();
        let _ = registration.await;
        if !self.services.wait_unused(SHUTDOWN_GRACE).await {
            tracing::warn!("file work still running after {SHUTDOWN_GRACE:?}; stopping anyway");
        }
        Ok(())
    }
}

fn check_config(cfg: &BlocksConfig) -> Result<(), BlocksError> {
    if cfg.dirs.is_empty() {
        return Err(BlocksError::BadConfig("no directories to serve".into()));
    }
    if cfg.register_interval_ms == 0 {
        return Err(BlocksError::BadConfig(
            "register_interval_ms must be at least 1".into(),
        ));
    }
    if !cfg.bind.is_ipv4() {
        return Err(BlocksError::BadConfig("bind address must be IPv4".into()));
    }
    if cfg.bind.ip().is_unspecified() {
        tracing::warn!(
            "bound to {}: shuckle will hand out an address other hosts cannot reach",
            cfg.bind
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_specs() {
        let p = |s: &str| parse_dir(s).expect("valid");
        assert_eq!(p("/d"), ("/d".into(), StorageClass::Flash));
        assert_eq!(p("/d:hdd"), ("/d".into(), StorageClass::Hdd));
        assert_eq!(p("/d:flash"), ("/d".into(), StorageClass::Flash));
        assert_eq!(p("/a:b"), ("/a:b".into(), StorageClass::Flash));
        assert!(parse_dir(":hdd").is_err());
        assert!(parse_dir("").is_err());
    }

    #[test]
    fn failure_domains() {
        let fd = failure_domain("rack1").expect("valid");
        assert_eq!(&fd[..5], b"rack1");
        assert!(fd[5..].iter().all(|&b| b == 0));
        assert!(failure_domain(&"x".repeat(16)).is_ok());
        assert!(failure_domain(&"x".repeat(17)).is_err());
        assert!(failure_domain("").is_err());
        assert_ne!(default_failure_domain(), [0; 16]);
    }
}
