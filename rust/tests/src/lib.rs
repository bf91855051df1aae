//! Shared helpers for the integration tests and the benchmark: a throw-away cluster of real
//! processes on loopback, latency statistics, and a seeded data stream with a hashing sink
//! (so that large files are checked without holding them in memory).
//!
//! [`model`] is the in-memory namespace model that the `eggstests` binary's tests (in
//! [`suite`]) check the cluster against; [`netns`] gives them a private network namespace
//! and network partitions.

// The test harness: a failed unwrap or expect is a failed test (with its message), and
// casts of test patterns, sizes and rates need no checking.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap,
    clippy::cast_precision_loss
)]

pub mod model;
pub mod netns;
pub mod suite;

use eggs_client::{Client, FileWriter};
use eggs_protocol::policy::{
    BlockPolicy, BlockPolicyEntry, DirectoryInfo, Parity, SpanPolicy, SpanPolicyEntry,
    StorageClass, StripePolicy,
};
use eggs_protocol::shard::SpanBody;
use eggs_protocol::shuckle::{flags, BlockServicesReq};
use eggs_protocol::{BlockId, BlockServiceId, EggsError, InodeId, Name};
use eggs_run::{BlockServicesLayout, Cluster, ClusterConfig, RunError};
use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A fresh directory for one test's cluster, removed first if a previous run left it.
pub fn test_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("eggs-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Starts a cluster of real processes (binaries from `target/<profile>`) on free ports.
pub async fn start_cluster(name: &str, shard_processes: usize) -> (Cluster, Arc<Client>) {
    start_cluster_with_blocks(name, shard_processes, BlockServicesLayout::default()).await
}

/// Like [`start_cluster`], with block services started by eggs-run (`eggsblocks` processes
/// named `blocks-<failure domain>`); returns once they have all registered too.
pub async fn start_cluster_with_blocks(
    name: &str,
    shard_processes: usize,
    blocks: BlockServicesLayout,
) -> (Cluster, Arc<Client>) {
    eggs_common::logging::init("warn");
    let mut cfg = ClusterConfig::new(test_dir(name));
    cfg.shuckle_port = 0;
    cfg.shard_processes = shard_processes;
    cfg.block_services = blocks;
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

/// Like [`finish`] for a cluster some of whose children the test killed on purpose: those
/// (`killed`, by name) may be reported as not stopped cleanly, the others may not.
pub async fn finish_after_kills(cluster: Cluster, killed: &[String]) {
    let dir = cluster.dir().to_path_buf();
    match cluster.stop().await {
        Ok(()) => {}
        Err(RunError::Unclean(list)) => {
            let unexpected: Vec<&String> = list
                .iter()
                .filter(|u| !killed.iter().any(|k| u.starts_with(&format!("{k} "))))
                .collect();
            assert!(unexpected.is_empty(), "not stopped cleanly: {unexpected:?}");
        }
        Err(e) => panic!("stopping the cluster: {e}"),
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Directory policies for data tests on a few failure domains: mirroring (1+2) up to one
/// stripe, then RS(4,2) spans of at most `max_span` bytes with `stripe`-byte stripes, all on
/// flash. Small spans make multi-span files cheap; 6 blocks fit on 7 failure domains with one
/// down.
pub fn rs_4_2_policy(max_span: u32, stripe: u32) -> DirectoryInfo {
    DirectoryInfo {
        snapshot: None,
        span: Some(SpanPolicy {
            entries: vec![
                SpanPolicyEntry {
                    max_span_size: stripe,
                    parity: Parity { data: 1, parity: 2 },
                },
                SpanPolicyEntry {
                    max_span_size: max_span,
                    parity: Parity { data: 4, parity: 2 },
                },
            ],
        }),
        block: Some(BlockPolicy {
            entries: vec![BlockPolicyEntry {
                min_size: 0,
                storage_class: StorageClass::Flash,
            }],
        }),
        stripe: Some(StripePolicy {
            target_stripe_size: stripe,
        }),
    }
}

/// Writes a `size`-byte file named `name` into `dir` until the shards have learnt of enough
/// block services for its widest span (they ask shuckle periodically); fails after `timeout`.
pub async fn wait_writable(
    c: &Client,
    dir: InodeId,
    name: &Name,
    size: u64,
    timeout: Duration,
) -> eggs_client::Result<InodeId> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match FileWriter::write_in(c, dir, name, PrngReader::new(1, size)).await {
            Err(e)
                if e.eggs() == Some(EggsError::NotEnoughBlockServices)
                    && std::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            other => return other,
        }
    }
}

/// Where each registered (not stale) block service keeps its blocks and which eggs-run
/// process serves it (eggs-run puts service directories under `<data dir>/blocks-<fd>/`).
pub async fn block_service_processes(
    c: &Client,
) -> eggs_client::Result<HashMap<BlockServiceId, (PathBuf, String)>> {
    let services = c.shuckle().request(BlockServicesReq {}).await?;
    Ok(services
        .services
        .iter()
        .filter(|s| s.flags & flags::STALE == 0)
        .map(|s| {
            let path = PathBuf::from(&s.path);
            let proc = path
                .parent()
                .and_then(|p| p.file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            (s.id, (path, proc))
        })
        .collect())
}

/// Where each block span of a file keeps its blocks: its parity and `(service, block)` per
/// block, in block order (inline spans are left out).
pub async fn span_blocks(
    c: &Client,
    file: InodeId,
) -> eggs_client::Result<Vec<(Parity, Vec<(BlockServiceId, BlockId)>)>> {
    let mut out = Vec::new();
    for s in c.file_spans(file).await? {
        if let SpanBody::Blocks(b) = s.body {
            let blocks = b.blocks.iter().map(|b| (b.block_service_id, b.block_id));
            out.push((b.parity, blocks.collect()));
        }
    }
    Ok(out)
}

/// The first `len` bytes of the [`FastRng`] stream of `seed` (what [`PrngReader`] yields).
pub fn prng_bytes(seed: u64, len: usize) -> Vec<u8> {
    prng_range(seed, 0, len)
}

/// Bytes `offset..offset + len` of the [`FastRng`] stream of `seed`, without generating what
/// comes before them.
pub fn prng_range(seed: u64, offset: u64, len: usize) -> Vec<u8> {
    let mut rng = FastRng::new(seed);
    rng.skip_words(offset / 8);
    let skip = (offset % 8) as usize;
    let mut buf = vec![0u8; len + skip];
    rng.fill(&mut buf);
    buf.drain(..skip);
    buf
}

/// CRC-32C of the first `len` bytes of the [`FastRng`] stream of `seed`, generated in pieces.
pub fn prng_crc(seed: u64, len: u64) -> u32 {
    let mut rng = FastRng::new(seed);
    let mut buf = vec![0u8; 1 << 20];
    let (mut left, mut crc) = (len, 0);
    while left > 0 {
        // Whole words except at the very end, so the stream matches one big fill.
        let n = left.min(buf.len() as u64) as usize;
        rng.fill(&mut buf[..n]);
        crc = crc32c::crc32c_append(crc, &buf[..n]);
        left -= n as u64;
    }
    crc
}

/// A fast, seeded pseudo-random generator (wyrand): benchmarks and tests stream gigabytes
/// of it, and the data only has to be incompressible-looking and reproducible, not secure.
#[derive(Clone, Debug)]
pub struct FastRng(u64);

impl FastRng {
    pub fn new(seed: u64) -> FastRng {
        FastRng(seed)
    }

    /// Moves ahead as if `words` values had been drawn (the state only ever adds a constant).
    pub fn skip_words(&mut self, words: u64) {
        self.0 = self.0.wrapping_add(Self::STEP.wrapping_mul(words));
    }

    const STEP: u64 = 0xa076_1d64_78bd_642f;

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(Self::STEP);
        let t = (self.0 as u128).wrapping_mul((self.0 ^ 0xe703_7ed1_a0b4_28db) as u128);
        ((t >> 64) as u64) ^ (t as u64)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        if !rest.is_empty() {
            let v = self.next_u64().to_le_bytes();
            rest.copy_from_slice(&v[..rest.len()]);
        }
    }
}

/// `len` bytes of [`FastRng`] output as an `AsyncRead`, with the CRC-32C of what it has
/// yielded so far. Each read yields whole 8-byte words (except at the very end), so the
/// stream does not depend on how callers size their reads.
pub struct PrngReader {
    rng: FastRng,
    left: u64,
    crc: u32,
    /// Bytes of the last generated word not handed out yet.
    pending: Vec<u8>,
}

impl PrngReader {
    pub fn new(seed: u64, len: u64) -> PrngReader {
        PrngReader {
            rng: FastRng::new(seed),
            left: len,
            crc: 0,
            pending: Vec::new(),
        }
    }

    /// CRC-32C of every byte read so far.
    pub fn crc(&self) -> u32 {
        self.crc
    }

    fn read_into(&mut self, out: &mut [u8]) -> usize {
        let n = (out.len() as u64).min(self.left) as usize;
        let out = &mut out[..n];
        let from_pending = self.pending.len().min(n);
        out[..from_pending].copy_from_slice(&self.pending[..from_pending]);
        self.pending.drain(..from_pending);
        let rest = &mut out[from_pending..];
        let whole = rest.len() / 8 * 8;
        self.rng.fill(&mut rest[..whole]);
        let tail = &mut rest[whole..];
        if !tail.is_empty() {
            let word = self.rng.next_u64().to_le_bytes();
            tail.copy_from_slice(&word[..tail.len()]);
            self.pending.extend_from_slice(&word[tail.len()..]);
        }
        self.crc = crc32c::crc32c_append(self.crc, out);
        self.left -= n as u64;
        n
    }
}

impl AsyncRead for PrngReader {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let n = this.read_into(buf.initialize_unfilled());
        buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

/// An `AsyncWrite` that keeps only the length and CRC-32C of what is written to it.
#[derive(Default, Debug)]
pub struct HashSink {
    pub len: u64,
    pub crc: u32,
}

impl AsyncWrite for HashSink {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.crc = crc32c::crc32c_append(this.crc, buf);
        this.len += buf.len() as u64;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// The stream is the same whatever the read sizes, so a writer reading in its own chunks
    /// and a test generating it again see the same bytes.
    #[tokio::test]
    async fn prng_stream_does_not_depend_on_read_sizes() {
        let mut whole = Vec::new();
        PrngReader::new(9, 1001)
            .read_to_end(&mut whole)
            .await
            .unwrap();
        assert_eq!(whole.len(), 1001);
        let mut r = PrngReader::new(9, 1001);
        let mut pieces = Vec::new();
        for n in [1usize, 3, 8, 13, 500, 1000].iter().cycle() {
            let mut b = vec![0; *n];
            let got = r.read(&mut b).await.unwrap();
            if got == 0 {
                break;
            }
            pieces.extend_from_slice(&b[..got]);
        }
        assert_eq!(pieces, whole);
        assert_eq!(r.crc(), crc32c::crc32c(&whole));
        let mut sink = HashSink::default();
        tokio::io::copy(&mut &whole[..], &mut sink).await.unwrap();
        assert_eq!((sink.len, sink.crc), (1001, r.crc()));
        assert_eq!(prng_bytes(9, 1001), whole);
        assert_eq!(prng_crc(9, 1001), r.crc());
        for (off, len) in [(0, 5), (3, 20), (8, 8), (13, 988), (1000, 1)] {
            assert_eq!(
                prng_range(9, off, len),
                whole[off as usize..off as usize + len]
            );
        }
    }
}
