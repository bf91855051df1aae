//! Crash safety of the data path: SIGKILL the shard process and block services while
//! clients write files, restart them, and check that every acknowledged file reads back
//! bit-exact and that every visible file is whole.

// Test code: a failed unwrap or expect is the failed test's message, and casts of test
// patterns and sizes need no checking.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]

use eggs_client::{Client, FileWriter};
use eggs_protocol::{InodeId, Name};
use eggs_run::BlockServicesLayout;
use eggs_tests::{
    prng_crc, rs_4_2_policy, start_cluster_with_blocks, FastRng, HashSink, PrngReader,
};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const WRITERS: u64 = 3;

/// A file's name says what it must contain: `f<seed>-<size>`.
fn parse(name: &str) -> (u64, u64) {
    let (seed, size) = name[1..].split_once('-').expect("f<seed>-<size>");
    (seed.parse().expect("seed"), size.parse().expect("size"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_during_writes_loses_no_acknowledged_file() {
    let layout = BlockServicesLayout {
        failure_domains: 7,
        flash: 7,
        hdd: 0,
    };
    let (mut cluster, c) = start_cluster_with_blocks("crash-writes", 1, layout).await;
    let dir = c.mkdir("/w").await.unwrap();
    // RS(4,2) spans of at most 256 KiB, so that files span several spans quickly.
    c.set_directory_info(dir, rs_4_2_policy(256 << 10, 64 << 10))
        .await
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (c, stop) = (c.clone(), stop.clone());
        writers.push(tokio::spawn(
            async move { write_until(c, dir, w, stop).await },
        ));
    }
    let mut killed = Vec::new();
    let mut rng = FastRng::new(eggs_protocol::EggsTime::now().0);
    for round in 0..6u64 {
        tokio::time::sleep(Duration::from_millis(300 + rng.next_u64() % 400)).await;
        let victim = if round % 2 == 0 {
            "shard-0".to_string()
        } else {
            format!("blocks-{}", rng.next_u64() % 7)
        };
        cluster.kill(&victim, eggs_run::Signal::SIGKILL).unwrap();
        tokio::time::sleep(Duration::from_millis(100 + rng.next_u64() % 200)).await;
        cluster.restart(&victim).await.unwrap();
        killed.push(victim);
    }
    cluster
        .wait_registered(Duration::from_secs(60))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut acknowledged = HashSet::new();
    for w in writers {
        acknowledged.extend(w.await.unwrap());
    }
    assert!(
        acknowledged.len() >= 10,
        "the load did run: {}",
        acknowledged.len()
    );
    let listed = c.readdir(dir).await.unwrap();
    let names: HashSet<String> = listed.iter().map(|e| e.name.to_string()).collect();
    for a in &acknowledged {
        assert!(names.contains(a), "acknowledged file {a} is missing");
    }
    // Every visible file is whole, acknowledged or not (a reply can be lost in a crash).
    for e in &listed {
        let (seed, size) = parse(&e.name.to_string());
        let mut sink = HashSink::default();
        c.read_file_to(e.target_id, &mut sink).await.unwrap();
        assert_eq!(sink.len, size, "{}", e.name);
        assert_eq!(sink.crc, prng_crc(seed, size), "{}", e.name);
    }
    eprintln!(
        "{} files acknowledged, {} visible, across kills of {killed:?}",
        acknowledged.len(),
        listed.len()
    );
    eggs_tests::finish(cluster).await;
}

/// Writes files of random sizes until told to stop; returns the names acknowledged.
async fn write_until(c: Arc<Client>, dir: InodeId, w: u64, stop: Arc<AtomicBool>) -> Vec<String> {
    let mut rng = FastRng::new(w);
    let mut done = Vec::new();
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        let seed = w * 1_000_000 + i;
        i += 1;
        let size = rng.next_u64() % 700_000;
        let name = format!("f{seed}-{size}");
        let reader = PrngReader::new(seed, size);
        let n = Name::new(name.as_str()).unwrap();
        // A write may fail while its services are down: then it must simply not be visible.
        if FileWriter::write_in(&c, dir, &n, reader).await.is_ok() {
            done.push(name);
        }
    }
    done
}
