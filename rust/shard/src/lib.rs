//! Metadata shards.
//!
//! [`ShardCore`] holds the logic of every shard request: it reads state through a [`Kv`] and
//! turns a request into a response plus a set of changes, with the time passed in, and never
//! touches a socket. [`server`] wraps it in a UDP loop with group commit: the changes of all
//! requests received together are made durable with one WAL sync before any reply leaves,
//! by the rules of [`GroupCommit`] (which the simulator drives too).

mod core;
mod error;
pub mod group_commit;
mod keys;
mod kv;
mod migrate;
pub mod server;
mod values;

pub use crate::core::{reply_limit, ShardCore, ShardOptions};
pub use error::{ServerError, ShardError};
pub use group_commit::GroupCommit;
pub use kv::{Changes, Kv, MemKv, RocksKv, Table};
pub use server::{parse_shard_set, ShardServer, ShardServerConfig};
