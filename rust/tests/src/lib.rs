//! Shared helpers for the integration tests and the benchmark: a throw-away cluster of real
//! processes on loopback, and latency statistics.

use eggs_client::Client;
use eggs_run::{Cluster, ClusterConfig};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// A fresh directory for one test's cluster, removed first if a previous run left it.
pub fn test_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("eggs-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Starts a cluster of real processes (binaries from `target/<profile>`) on free ports.
pub async fn start_cluster(name: &str, shard_processes: usize) -> (Cluster, Arc<Client>) {
    eggs_common::logging::init("warn");
    let mut cfg = ClusterConfig::new(test_dir(name));
    cfg.shuckle_port = 0;
    cfg.shard_processes = shard_processes;
    let cluster = Cluster::start(cfg).await.expect("cluster starts");
    cluster
        .wait_registered(Duration::from_secs(60))
        .await
        .expect("cluster registers");
    let client = Client::new(cluster.shuckle_addr(), Default::default())
        .await
        .expect("client connects");
    (cluster, Arc::new(client))
}

/// Stops the cluster cleanly (failing the test if a process had to be killed) and removes its
/// data directory.
pub async fn finish(cluster: Cluster) {
    let dir = cluster.dir().to_path_buf();
    cluster.stop().await.expect("cluster stops cleanly");
    let _ = std::fs::remove_dir_all(dir);
}

/// Latency samples in microseconds.
#[derive(Default, Clone)]
pub struct Latencies {
    pub micros: Vec<u32>,
}

impl Latencies {
    pub fn push(&mut self, d: Duration) {
        self.micros.push(d.as_micros().min(u32::MAX as u128) as u32);
    }
    pub fn merge(&mut self, other: Latencies) {
        self.micros.extend(other.micros);
    }
    /// The `p`-th percentile (0..=100) in microseconds.
    pub fn percentile(&mut self, p: f64) -> u32 {
        if self.micros.is_empty() {
            return 0;
        }
        self.micros.sort_unstable();
        let i = ((p / 100.0) * (self.micros.len() - 1) as f64).round() as usize;
        self.micros[i.min(self.micros.len() - 1)]
    }
}
