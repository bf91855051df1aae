//! The EggsFS client library.
//!
//! [`Client`] finds shards and the CDC through shuckle, routes each request by the shard of
//! the inode it concerns, retries on time-outs with backoff (servers deduplicate retries), and
//! offers path-level operations on top.

pub mod blocks;
mod error;
mod fs;
mod read;
pub mod repair;
pub mod retry;
mod rpc;
pub mod rs;
mod shuckle;
pub mod span;
mod write;

pub use blocks::{BlockClientOptions, BlockPool};
pub use error::{ClientError, Result};
pub use fs::{Client, ClientOptions, DirEntry, Stat};
pub use retry::{backoff_ms, Retry, RetryPolicy};
pub use rpc::UdpRpc;
pub use shuckle::ShuckleClient;
pub use write::FileWriter;

/// Where `eggsrun` puts shuckle unless told otherwise, and so where tools look by default.
pub const DEFAULT_SHUCKLE_ADDR: &str = "127.0.0.1:10001";
