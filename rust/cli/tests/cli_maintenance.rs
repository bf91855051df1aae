//! `eggscli blockservice decommission`, `migrate` (killed with SIGKILL part way, then run
//! again) and `scrub --now` against a real cluster with block services (the server binaries
//! must be built first; `cargo xtask test` does that).

// Test code: a failed unwrap or expect is the failed test's message, and casts of test
// patterns and sizes need no checking.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]

use eggs_client::Client;
use eggs_protocol::shard::SpanBody;
use eggs_protocol::shuckle::BlockServicesReq;
use eggs_protocol::{BlockId, BlockServiceId, InodeId};
use eggs_run::{BlockServicesLayout, Cluster, ClusterConfig};
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

mod common;
use common::Cli;

/// Deterministic bytes that do not compress into a pattern.
fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(6364136223846793005) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 56) as u8
        })
        .collect()
}

fn wait_writable(cli: &Cli) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = cli.run(&["write", "/t/probe"], &[7u8; 5000]);
        if out.status.success() {
            return;
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("not enough block services") && Instant::now() < deadline,
            "{stderr}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `(service, block)` of every block of a file.
async fn blocks_of(c: &Client, file: InodeId) -> Vec<(BlockServiceId, BlockId)> {
    let mut out = Vec::new();
    for s in c.file_spans(file).await.unwrap() {
        if let SpanBody::Blocks(b) = s.body {
            out.extend(b.blocks.iter().map(|b| (b.block_service_id, b.block_id)));
        }
    }
    out
}

/// The file of a block in a service directory (the block service's on-disk format).
fn block_file(service_dir: &std::path::Path, id: BlockId) -> PathBuf {
    let id = id.0;
    service_dir
        .join(format!("{:02x}", (id ^ (id >> 8)) & 0xff))
        .join(format!("{id:016x}"))
}

#[tokio::test]
async fn decommission_migrate_after_a_kill_and_scrub() {
    let dir = tempfile::tempdir().expect("create temp dir");
    let mut cfg = ClusterConfig::new(dir.path().join("cluster"));
    cfg.block_services = BlockServicesLayout {
        failure_domains: 8,
        flash: 8,
        hdd: 0,
    };
    let cluster = Cluster::start(cfg).await.unwrap();
    cluster
        .wait_registered(Duration::from_secs(30))
        .await
        .unwrap();
    let cli = Cli {
        shuckle: cluster.shuckle_addr(),
    };
    cli.ok(&["mkdir", "-p", "/t"]);
    cli.ok(&[
        "policy",
        "set",
        "/t",
        "--span",
        "64K:1+2,256K:4+2",
        "--block",
        "0:flash",
        "--stripe-size",
        "64K",
    ]);
    wait_writable(&cli);
    let files: Vec<(String, Vec<u8>)> = (0..12)
        .map(|i| (format!("/t/f{i}"), bytes(3000 + i * 70_000, i as u64)))
        .collect();
    for (path, data) in &files {
        let out = cli.run(&["write", path], data);
        assert!(out.status.success(), "{out:?}");
    }
    let c = Client::new(cluster.shuckle_addr(), Default::default())
        .await
        .unwrap();
    let mut ids = Vec::new();
    let mut per_service: HashMap<BlockServiceId, usize> = HashMap::new();
    for (path, _) in &files {
        let id = c.resolve(path).await.unwrap();
        for (s, _) in blocks_of(&c, id).await {
            *per_service.entry(s).or_default() += 1;
        }
        ids.push(id);
    }
    let (bs, _) = per_service.iter().max_by_key(|(_, n)| **n).unwrap();
    let hex = format!("{:016x}", bs.0);

    let out = cli.ok(&["blockservice", "decommission", &hex]);
    assert!(
        out.contains("decommissioned") && out.contains("no-write"),
        "{out}"
    );

    let err = cli.fails_verbose(&["blockservice", "forget", &hex]);
    assert!(err.contains("files still have blocks"), "{err}");

    // A migration killed with SIGKILL shortly after it starts, then run to the end.
    let mut child = cli.command(&["migrate", &hex]).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    child.kill().unwrap();
    child.wait().unwrap();
    let out = cli.ok(&["migrate", &hex]);
    assert!(out.contains("holds no blocks any file refers to"), "{out}");
    for id in &ids {
        assert!(blocks_of(&c, *id).await.iter().all(|(s, _)| s != bs));
    }
    // Empty, but its process still registers: shuckle keeps it.
    let err = cli.fails_verbose(&["blockservice", "forget", &hex]);
    assert!(err.contains("stopped registering"), "{err}");

    // Corrupt one data byte of a block; the scrub finds and repairs it.
    let services = c.shuckle().request(BlockServicesReq {}).await.unwrap();
    let (victim_bs, victim) = blocks_of(&c, ids[5]).await[2];
    let victim_dir = &services
        .services
        .iter()
        .find(|s| s.id == victim_bs)
        .unwrap()
        .path;
    let path = block_file(std::path::Path::new(victim_dir), victim);
    let mut raw = std::fs::read(&path).unwrap();
    raw[32 + 1000] ^= 0xff;
    std::fs::write(&path, raw).unwrap();
    let out = cli.ok(&["scrub", "--now", "--rate", "0"]);
    assert!(
        out.contains("0 missing, 1 corrupt, 0 unreachable; 1 repaired"),
        "{out}"
    );
    let out = cli.ok(&["scrub", "--now"]);
    assert!(out.contains("0 missing, 0 corrupt"), "{out}");
    assert!(!blocks_of(&c, ids[5]).await.contains(&(victim_bs, victim)));

    for (path, data) in &files {
        let out = cli.run(&["cat", path], b"");
        assert!(out.status.success() && out.stdout == *data, "{path}");
    }
    cluster.stop().await.unwrap();
}
