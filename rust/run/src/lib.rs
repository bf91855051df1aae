//! A whole EggsFS cluster on one machine: shuckle, the shard process(es) and the CDC as child
//! processes under one data directory.
//!
//! Used by the `eggsrun` binary and by integration and crash tests:
//!
//! ```no_run
//! # async fn demo() -> Result<(), eggs_run::RunError> {
//! use eggs_run::{Cluster, ClusterConfig, Signal};
//! use std::time::Duration;
//!
//! let mut cluster = Cluster::start(ClusterConfig::new("/tmp/eggs-test")).await?;
//! cluster.wait_registered(Duration::from_secs(30)).await?;
//! let client = cluster.client().await?;
//! client.mkdir("/a").await?;
//! cluster.kill("shard-0", Signal::SIGKILL)?;
//! cluster.restart("shard-0").await?;
//! cluster.wait_registered(Duration::from_secs(30)).await?;
//! cluster.stop().await?;
//! # Ok(())
//! # }
//! ```
//!
//! Children run in their own process group and get SIGTERM from the kernel if the process that
//! started them dies, so a crashed test does not leave servers behind. Dropping a [`Cluster`]
//! kills its children with SIGKILL.

mod cluster;
mod error;
mod fuse;
mod layout;
mod proc;

pub use cluster::{BlockServicesLayout, ChildEvent, Cluster, ClusterConfig, GcIntervals};
pub use error::RunError;
pub use fuse::{clean_stale_mount, is_fuse_mounted, lazy_unmount, FuseMount};
pub use layout::{default_bin_dir, free_port, recorded_shard_processes, shards_arg, split_shards};
/// The signals [`Cluster::kill`] sends.
pub use nix::sys::signal::Signal;
pub use proc::{log_tail, rss_bytes, send_signal};
