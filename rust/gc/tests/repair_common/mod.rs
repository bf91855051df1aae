//! What the scrub and migration tests share: a cluster with a test directory of small RS(4,2)
//! spans, where each block service keeps its files, and file contents.

#![allow(dead_code)]

use eggs_client::repair::BlockHealth;
use eggs_client::{Client, FileWriter};
use eggs_protocol::policy::DirectoryInfo;
use eggs_protocol::shard::{BlocksSpan, SpanBody};
use eggs_protocol::shuckle::BlockServicesReq;
use eggs_protocol::{BlockId, BlockServiceId, EggsError, InodeId, Name};
use eggs_run::{BlockServicesLayout, Cluster};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Mirroring (1+2) up to 64 KiB, then RS(4,2) spans of up to 256 KiB with 64 KiB stripes.
pub fn policy() -> DirectoryInfo {
    eggs_tests::rs_4_2_policy(256 << 10, 64 << 10)
}

/// A cluster with one flash service in each of `domains` failure domains and a directory
/// `/d` with [`policy`], once the shard can place blocks.
pub async fn cluster(name: &str, domains: usize) -> (Cluster, Arc<Client>, InodeId) {
    let layout = BlockServicesLayout {
        failure_domains: domains,
        flash: domains,
        hdd: 0,
    };
    let (cluster, c) = eggs_tests::start_cluster_with_blocks(name, 1, layout).await;
    let dir = c.mkdir("/d").await.unwrap();
    c.set_directory_info(dir, policy()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let warmup = Name::new("warmup").unwrap();
    loop {
        match FileWriter::write_in(&c, dir, &warmup, &[1u8; 5000][..]).await {
            Err(e)
                if e.eggs() == Some(EggsError::NotEnoughBlockServices)
                    && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            other => {
                other.unwrap();
                break;
            }
        }
    }
    (cluster, c, dir)
}

/// Reproducible file contents.
pub fn contents(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = eggs_tests::FastRng::new(seed);
    let mut v = vec![0u8; len];
    rng.fill(&mut v);
    v
}

/// Each service's directory and the eggs-run process serving it (`blocks-<fd>`).
pub async fn services(c: &Client) -> HashMap<BlockServiceId, (PathBuf, String)> {
    let r = c.shuckle().request(BlockServicesReq {}).await.unwrap();
    r.services
        .iter()
        .map(|s| {
            let path = PathBuf::from(&s.path);
            let proc = path
                .parent()
                .and_then(|p| p.file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            (s.id, (path, proc))
        })
        .collect()
}

/// Every block span of a file.
pub async fn spans(c: &Client, file: InodeId) -> Vec<BlocksSpan> {
    let mut out = Vec::new();
    for s in c.file_spans(file).await.unwrap() {
        if let SpanBody::Blocks(b) = s.body {
            out.push(b);
        }
    }
    out
}

/// `(service, block)` of each block of each block span.
pub async fn span_blocks(c: &Client, file: InodeId) -> Vec<Vec<(BlockServiceId, BlockId)>> {
    spans(c, file)
        .await
        .iter()
        .map(|s| {
            s.blocks
                .iter()
                .map(|b| (b.block_service_id, b.block_id))
                .collect()
        })
        .collect()
}

/// What each block's service says of it.
pub async fn health(c: &Client, file: InodeId) -> Vec<Vec<BlockHealth>> {
    let mut out = Vec::new();
    for s in spans(c, file).await {
        let mut h = Vec::new();
        for i in 0..s.blocks.len() {
            h.push(c.check_block_health(&s, i).await);
        }
        out.push(h);
    }
    out
}
