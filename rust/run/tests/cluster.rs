//! The cluster library against the real server binaries, which must be built first
//! (`cargo xtask test` does: `cargo build --workspace --bins`).

// Test code: a failed unwrap or expect is the failed test's message, and casts of test
// patterns and sizes need no checking.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]

use eggs_client::FileWriter;
use eggs_run::{ChildEvent, Cluster, ClusterConfig, RunError, Signal};
use std::time::{Duration, Instant};

const REGISTER: Duration = Duration::from_secs(30);

async fn start(dir: &tempfile::TempDir, shard_processes: usize) -> Cluster {
    let mut cfg = ClusterConfig::new(dir.path());
    cfg.shard_processes = shard_processes;
    let cluster = Cluster::start(cfg).await.expect("starting the cluster");
    cluster
        .wait_registered(REGISTER)
        .await
        .expect("waiting for registration");
    cluster
}

fn alive(pid: u32) -> bool {
    // A zombie still has a /proc entry; its state letter is Z.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

#[tokio::test]
async fn start_use_restart_and_stop() {
    let dir = tempfile::tempdir().expect("create temp dir");
    let mut cluster = start(&dir, 2).await;
    let names: Vec<String> = cluster.processes().into_iter().map(|p| p.0).collect();
    assert_eq!(names, ["shuckle", "shard-0", "shard-1", "cdc"]);
    assert!(cluster.log_path("shard-1").is_file());

    let client = cluster.client().await.unwrap();
    client.mkdir_p("/a/b").await.unwrap();
    FileWriter::write_path(&client, "/a/b/f", &b"hello"[..])
        .await
        .unwrap();

    for name in ["shard-0", "cdc", "shuckle"] {
        let (_, old_pid) = cluster
            .processes()
            .into_iter()
            .find(|p| p.0 == name)
            .unwrap();
        cluster.kill(name, Signal::SIGKILL).unwrap();
        cluster.restart(name).await.unwrap();
        let (_, new_pid) = cluster
            .processes()
            .into_iter()
            .find(|p| p.0 == name)
            .unwrap();
        assert_ne!(old_pid, new_pid);
        cluster.wait_registered(REGISTER).await.unwrap();
    }
    let client = cluster.client().await.unwrap();
    let id = client.resolve("/a/b/f").await.unwrap();
    assert_eq!(client.read_file(id).await.unwrap(), b"hello");
    client.mkdir("/a/c").await.unwrap();

    let pids: Vec<u32> = cluster.processes().into_iter().map(|p| p.1).collect();
    cluster
        .stop()
        .await
        .expect("every server stops cleanly on SIGTERM");
    assert!(pids.iter().all(|&p| !alive(p)));
}

#[tokio::test]
async fn data_survives_a_second_start() {
    let dir = tempfile::tempdir().expect("create temp dir");
    let cluster = start(&dir, 1).await;
    let client = cluster.client().await.unwrap();
    client.mkdir_p("/kept/here").await.unwrap();
    drop(client);
    cluster.stop().await.unwrap();

    let cluster = start(&dir, 1).await;
    let client = cluster.client().await.unwrap();
    assert!(client.resolve("/kept/here").await.unwrap().is_dir());
    drop(client);
    // Another split of the shards over processes would lose track of their data.
    let mut cfg = ClusterConfig::new(dir.path());
    cfg.shard_processes = 3;
    cluster.stop().await.unwrap();
    assert!(matches!(
        Cluster::start(cfg).await,
        Err(RunError::Config(_))
    ));
}

#[tokio::test]
async fn supervise_restarts_a_dead_child() {
    let dir = tempfile::tempdir().expect("create temp dir");
    let mut cluster = start(&dir, 1).await;
    cluster.kill("shard-0", Signal::SIGKILL).unwrap();
    let mut events = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !events
        .iter()
        .any(|e| matches!(e, ChildEvent::Restarted { .. }))
    {
        assert!(Instant::now() < deadline, "no restart: {events:?}");
        events.extend(cluster.supervise());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(matches!(&events[0], ChildEvent::Exited { name, .. } if name == "shard-0"));
    cluster.wait_registered(REGISTER).await.unwrap();
    let client = cluster.client().await.unwrap();
    client.mkdir("/after-restart").await.unwrap();
    drop(client);
    cluster.stop().await.unwrap();
}

#[tokio::test]
async fn drop_kills_children_and_the_lock_is_exclusive() {
    let dir = tempfile::tempdir().expect("create temp dir");
    let cluster = start(&dir, 1).await;
    assert!(matches!(
        Cluster::start(ClusterConfig::new(dir.path())).await,
        Err(RunError::DirInUse { .. })
    ));
    let pids: Vec<u32> = cluster.processes().into_iter().map(|p| p.1).collect();
    drop(cluster);
    assert!(pids.iter().all(|&p| !alive(p)));
}

#[tokio::test]
async fn a_dead_child_fails_wait_registered_with_its_log() {
    let dir = tempfile::tempdir().expect("create temp dir");
    let mut cluster = Cluster::start(ClusterConfig::new(dir.path()))
        .await
        .unwrap();
    cluster.kill("cdc", Signal::SIGKILL).unwrap();
    match cluster.wait_registered(REGISTER).await {
        Err(RunError::ChildExited { name, status, .. }) => {
            assert_eq!(name, "cdc");
            assert_eq!(status, "killed by SIGKILL");
        }
        other => panic!("expected ChildExited, got {other:?}"),
    }
}

/// Once `wait_registered` returns, every shard can place blocks: none is left with a list of
/// block services fetched before they had all registered.
#[tokio::test]
async fn every_shard_can_place_blocks_right_after_wait_registered() {
    let dir = tempfile::tempdir().expect("create temp dir");
    let mut cfg = ClusterConfig::new(dir.path());
    cfg.shard_processes = 2;
    cfg.block_services = eggs_run::BlockServicesLayout {
        failure_domains: 3,
        flash: 3,
        hdd: 0,
    };
    let cluster = Cluster::start(cfg).await.expect("starting the cluster");
    cluster.wait_registered(REGISTER).await.unwrap();
    let client = std::sync::Arc::new(cluster.client().await.unwrap());
    // New directories go round the shards; write into the first one each shard process
    // (shards 0..=127 and 128..=255) owns.
    let mut halves = [false; 2];
    let data = vec![0x5au8; 20_000];
    for i in 0.. {
        assert!(i < 256, "256 directories all on one half of the shards");
        let d = client.mkdir(&format!("/d{i}")).await.unwrap();
        let half = d.shard().0 as usize / 128;
        if halves[half] {
            continue;
        }
        let path = format!("/d{i}/f");
        FileWriter::write_path(&client, &path, &data[..])
            .await
            .unwrap_or_else(|e| {
                panic!("writing {path} (shard {}): {e}", d.shard().0);
            });
        halves[half] = true;
        if halves == [true, true] {
            break;
        }
    }
    let id = client.resolve("/d0/f").await.unwrap();
    assert_eq!(client.read_file(id).await.unwrap(), data);
    drop(client);
    cluster.stop().await.unwrap();
}

/// Every server drops its capabilities at start, in every thread: run as root here, they keep
/// none, not even in the bounding set; and they still work (a file through the block services
/// written and read back; every server, GC included, still running when stopped).
#[tokio::test]
async fn servers_run_without_capabilities() {
    let dir = tempfile::tempdir().expect("create temp dir");
    let mut cfg = ClusterConfig::new(dir.path());
    cfg.block_services = eggs_run::BlockServicesLayout {
        failure_domains: 3,
        flash: 3,
        hdd: 0,
    };
    cfg.gc = Some(eggs_run::GcIntervals::LOCAL);
    let cluster = Cluster::start(cfg).await.expect("starting the cluster");
    cluster.wait_registered(REGISTER).await.unwrap();
    let client = cluster.client().await.unwrap();
    let data = vec![0xa5u8; 20_000];
    client.mkdir("/caps").await.unwrap();
    FileWriter::write_path(&client, "/caps/f", &data[..])
        .await
        .unwrap();
    let id = client.resolve("/caps/f").await.unwrap();
    assert_eq!(client.read_file(id).await.unwrap(), data);

    let setpcap = eggs_common::caps::Capability::CAP_SETPCAP.bitmask();
    let own = eggs_common::caps::of_process(std::process::id()).unwrap();
    let may_cut_bounding = own.iter().all(|t| t.effective & setpcap != 0);
    let names: Vec<String> = cluster.processes().into_iter().map(|p| p.0).collect();
    for want in ["shuckle", "shard-0", "cdc", "blocks-0", "gc"] {
        assert!(names.iter().any(|n| n == want), "{want} runs: {names:?}");
    }
    for (name, pid) in cluster.processes() {
        let threads = eggs_common::caps::of_process(pid).unwrap();
        assert!(!threads.is_empty(), "{name} has threads");
        for t in threads {
            let held = (t.effective, t.permitted, t.inheritable, t.ambient);
            assert_eq!(held, (0, 0, 0, 0), "{name}: {t:?}");
            if may_cut_bounding {
                assert_eq!(t.bounding, 0, "{name}: {t:?}");
            }
        }
    }
    drop(client);
    cluster.stop().await.unwrap();
}
