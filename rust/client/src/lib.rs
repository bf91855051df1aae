//! The EggsFS client library.
//!
//! [`Client`] finds shards and the CDC through shuckle, routes each request by the shard of
//! the inode it concerns, retries on time-outs with backoff (servers deduplicate retries), and
//! offers path-level operations on top. Where what is: `client.rs` (the `Client`, addresses,
//! one request), `namespace.rs`, `policy.rs`, `write.rs` ([`FileWriter`], the only writer),
//! `read.rs`, `span_pager.rs` (listing a file's spans), `repair.rs`, `blocks.rs` (block
//! services), `rpc.rs` (UDP retries), `span.rs` and `rs.rs` (span layout and erasure coding).

pub mod blocks;
mod client;
mod error;
mod namespace;
mod policy;
mod read;
pub mod repair;
pub mod retry;
mod rpc;
pub mod rs;
mod shuckle;
pub mod span;
mod span_pager;
mod write;

pub use blocks::{BlockClientOptions, BlockPool};
pub use client::{Client, ClientOptions};
pub use error::{ClientError, Result};
pub use namespace::{DirEntry, Stat};
pub use retry::{backoff_ms, Retry, RetryPolicy};
pub use rpc::UdpRpc;
pub use shuckle::ShuckleClient;
pub use span_pager::SpanPager;
pub use write::{FileWriter, Progress};

/// Where `eggsrun` puts shuckle unless told otherwise, and so where tools look by default.
pub const DEFAULT_SHUCKLE_ADDR: &str = "127.0.0.1:10001";
