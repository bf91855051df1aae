//! eggsgc against a real cluster: deleted data leaves the block services' disks and the
//! metadata, abandoned writes go after their deadline, undelete works until expiry, and
//! concurrent or killed GC passes leave nothing behind and corrupt nothing.
//!
//! Needs the binaries: `cargo build --bins` (the tests skip themselves otherwise).

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
use eggs_gc::{run_once, GcOptions};
use eggs_protocol::policy::{
    BlockPolicy, BlockPolicyEntry, DirectoryInfo, Parity, SnapshotPolicy, SpanPolicy,
    SpanPolicyEntry, StorageClass, StripePolicy,
};
use eggs_protocol::shard::*;
use eggs_protocol::{EggsError, InodeId, InodeType, Name, MAX_UDP_MTU};
use eggs_run::{BlockServicesLayout, Cluster, ClusterConfig};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const SERVICES: usize = 3;

fn built() -> bool {
    let dir = eggs_run::default_bin_dir();
    let missing: Vec<&str> = [
        "eggsshard",
        "eggsblocks",
        "eggsgc",
        "eggscdc",
        "eggsshuckle",
    ]
    .into_iter()
    .filter(|b| !dir.join(b).is_file())
    .collect();
    if !missing.is_empty() {
        eprintln!(
            "skipped: {missing:?} not built in {} (cargo build --bins)",
            dir.display()
        );
    }
    missing.is_empty()
}

async fn start(name: &str, transient_deadline_ms: Option<u64>) -> (Cluster, Arc<Client>) {
    eggs_common::logging::init("warn");
    let mut cfg = ClusterConfig::new(eggs_tests::test_dir(name));
    cfg.block_services = BlockServicesLayout {
        failure_domains: SERVICES,
        flash: SERVICES,
        hdd: 0,
    };
    cfg.transient_deadline_ms = transient_deadline_ms;
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

/// Mirrored spans (1 data + 2 parity blocks) on flash, so three services do; snapshots kept
/// an hour unless the test shortens it.
fn policy(snapshot_ns: u64) -> DirectoryInfo {
    DirectoryInfo {
        snapshot: Some(SnapshotPolicy {
            delete_after_ns: snapshot_ns,
            delete_after_versions: 0,
        }),
        span: Some(SpanPolicy {
            entries: vec![SpanPolicyEntry {
                max_span_size: 1 << 20,
                parity: Parity { data: 1, parity: 2 },
            }],
        }),
        block: Some(BlockPolicy {
            entries: vec![BlockPolicyEntry {
                min_size: 0,
                storage_class: StorageClass::Flash,
            }],
        }),
        stripe: Some(StripePolicy {
            target_stripe_size: 64 << 10,
        }),
    }
}

const HOUR_NS: u64 = 3600 * 1_000_000_000;

async fn make_dir(c: &Client, path: &str) -> InodeId {
    let dir = c.mkdir(path).await.unwrap();
    c.set_directory_info(dir, policy(HOUR_NS)).await.unwrap();
    // Shards learn the block services from shuckle within a heartbeat or two.
    let deadline = Instant::now() + Duration::from_secs(30);
    let probe = format!("{path}/.probe");
    loop {
        match FileWriter::write_path(c, &probe, &[7u8; 20_000][..]).await {
            Ok(_) => break,
            Err(e) if e.eggs() == Some(EggsError::NotEnoughBlockServices) => {
                assert!(
                    Instant::now() < deadline,
                    "shards never saw the block services"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("first write: {e}"),
        }
    }
    c.unlink(&probe).await.unwrap();
    dir
}

fn data(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|j| (j * 31 + i * 7) as u8).collect()
}

/// Block files (and their bytes) under every block service directory of the cluster.
fn blocks_on_disk(dir: &Path) -> (usize, u64) {
    fn walk(p: &Path, acc: &mut (usize, u64)) {
        let Ok(rd) = std::fs::read_dir(p) else { return };
        for e in rd.flatten() {
            let path = e.path();
            let name = e.file_name().to_string_lossy().to_string();
            if path.is_dir() {
                walk(&path, acc);
            } else if name.len() == 16 && name.chars().all(|c| c.is_ascii_hexdigit()) {
                acc.0 += 1;
                acc.1 += e.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
    }
    let mut acc = (0, 0);
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.file_name().to_string_lossy().starts_with("blocks-") {
            walk(&e.path(), &mut acc);
        }
    }
    acc
}

async fn transient_files(c: &Client) -> Vec<InodeId> {
    let mut out = Vec::new();
    for s in 0..=255u8 {
        let mut start = InodeId::NULL;
        loop {
            let r = c
                .shard_request(
                    eggs_protocol::ShardId(s),
                    VisitTransientFilesReq {
                        start_id: start,
                        mtu: MAX_UDP_MTU,
                    },
                )
                .await
                .unwrap();
            out.extend(r.files.iter().map(|f| f.id));
            match r.next_id {
                Some(n) => start = n,
                None => break,
            }
        }
    }
    out
}

async fn shorten_policy(c: &Client, dir: InodeId) {
    c.set_directory_info(dir, policy(1)).await.unwrap();
}

async fn write_files(c: &Client, dir: &str, n: usize, len: usize) -> Vec<InodeId> {
    let mut ids = Vec::new();
    for i in 0..n {
        let id = FileWriter::write_path(c, &format!("{dir}/f{i}"), &data(i, len)[..])
            .await
            .unwrap();
        ids.push(id);
    }
    ids
}

async fn remove_files(c: &Client, dir: &str, n: usize) {
    for i in 0..n {
        c.unlink(&format!("{dir}/f{i}")).await.unwrap();
    }
}

fn no_errors(r: &eggs_gc::PassReport) {
    assert_eq!(r.collect.errors, 0, "{r:?}");
    assert_eq!(r.destroy.errors, 0, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_files_leave_the_disks_and_the_metadata() {
    if !built() {
        return;
    }
    let (cluster, c) = start("gc-deleted", None).await;
    let dir = make_dir(&c, "/t").await;
    let setup_leftovers = transient_files(&c).await;
    let opts = GcOptions::default();
    let ids = write_files(&c, "/t", 5, 300_000).await;
    FileWriter::write_path(&c, "/t/kept", &data(99, 200_000)[..])
        .await
        .unwrap();
    let (blocks_before, bytes_before) = blocks_on_disk(cluster.dir());
    assert!(blocks_before >= 6 * 3, "{blocks_before} blocks");
    remove_files(&c, "/t", 5).await;

    // Within the policy nothing goes, and the files are still readable by id.
    let r = run_once(&c, &opts).await;
    no_errors(&r);
    assert_eq!(blocks_on_disk(cluster.dir()), (blocks_before, bytes_before));
    assert_eq!(c.read_file(ids[0]).await.unwrap(), data(0, 300_000));

    shorten_policy(&c, dir).await;
    let r = run_once(&c, &opts).await;
    no_errors(&r);
    assert!(r.collect.released_files >= 5, "{r:?}");
    assert!(r.destroy.destroyed_files >= 5, "{r:?}");
    // Only the kept file's blocks are left.
    let (blocks_after, _) = blocks_on_disk(cluster.dir());
    assert_eq!(blocks_after, 3, "one mirrored span of the kept file");
    for id in &ids {
        let st = c.shard_request(id.shard(), StatFileReq { id: *id }).await;
        assert_eq!(st.unwrap_err().eggs(), Some(EggsError::FileNotFound));
    }
    let edges = c.full_readdir(dir).await.unwrap();
    let names: Vec<String> = edges.iter().map(|e| e.name.to_string()).collect();
    assert_eq!(
        names,
        vec!["kept"],
        "only the kept file's current edge is left"
    );
    let left = transient_files(&c).await;
    assert!(left.iter().all(|f| setup_leftovers.contains(f)));
    assert_eq!(
        c.read_file(c.resolve("/t/kept").await.unwrap())
            .await
            .unwrap(),
        data(99, 200_000)
    );

    // Remove the directory itself: once empty and past its policy it goes too.
    c.unlink("/t/kept").await.unwrap();
    run_once(&c, &opts).await;
    c.rmdir("/t").await.unwrap();
    let r = run_once(&c, &opts).await;
    no_errors(&r);
    assert_eq!(r.collect.destroyed_directories, 1, "{r:?}");
    let st = c
        .shard_request(dir.shard(), StatDirectoryReq { id: dir })
        .await;
    assert_eq!(st.unwrap_err().eggs(), Some(EggsError::DirectoryNotFound));
    assert_eq!(blocks_on_disk(cluster.dir()), (0, 0));
    eggs_tests::finish(cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_write_is_destroyed_after_its_deadline() {
    if !built() {
        return;
    }
    let (cluster, c) = start("gc-abandoned", Some(3000)).await;
    let dir = make_dir(&c, "/w").await;
    // Destroy what the probe write left, so that only the abandoned file is transient.
    shorten_policy(&c, dir).await;
    tokio::time::sleep(Duration::from_millis(3100)).await;
    run_once(&c, &GcOptions::default()).await;
    let (blocks_idle, _) = blocks_on_disk(cluster.dir());

    // A writer that stores two spans' worth and then disappears (never links).
    let mut w = FileWriter::new(&c, dir, InodeType::File).await.unwrap();
    w.append(&data(1, 3 << 20)).await.unwrap();
    let file = w.id();
    drop(w);
    let wait_stored = Instant::now() + Duration::from_secs(10);
    while blocks_on_disk(cluster.dir()).0 <= blocks_idle {
        assert!(Instant::now() < wait_stored, "the writer stored no block");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (blocks_written, _) = blocks_on_disk(cluster.dir());
    assert!(transient_files(&c).await.contains(&file));

    // Before the deadline it is a write in progress: left alone.
    let r = run_once(&c, &GcOptions::default()).await;
    no_errors(&r);
    assert_eq!(r.destroy.destroyed_files, 0, "{r:?}");
    assert_eq!(blocks_on_disk(cluster.dir()).0, blocks_written);

    tokio::time::sleep(Duration::from_millis(3100)).await;
    let r = run_once(&c, &GcOptions::default()).await;
    no_errors(&r);
    assert_eq!(r.destroy.destroyed_files, 1, "{r:?}");
    assert_eq!(blocks_on_disk(cluster.dir()).0, blocks_idle);
    assert!(transient_files(&c).await.is_empty());
    eggs_tests::finish(cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undelete_works_until_the_snapshot_expires() {
    if !built() {
        return;
    }
    let (cluster, c) = start("gc-undelete", None).await;
    let dir = make_dir(&c, "/u").await;
    let name = Name::new("doc").unwrap();
    let original = data(5, 150_000);
    let id = FileWriter::write_path(&c, "/u/doc", &original[..])
        .await
        .unwrap();
    c.unlink("/u/doc").await.unwrap();
    run_once(&c, &GcOptions::default()).await;

    let version = |edges: &[Edge]| {
        edges
            .iter()
            .rev()
            .find(|e| e.name == name && !e.current && !e.target_id.is_null())
            .map(|e| e.creation_time)
    };
    let v = version(&c.full_readdir(dir).await.unwrap()).expect("a snapshot of doc");
    let restore = |ct| RestoreSnapshotEdgeReq {
        dir_id: dir,
        name: name.clone(),
        creation_time: ct,
    };
    let r = c.shard_request(dir.shard(), restore(v)).await.unwrap();
    assert_eq!(r.target_id, id);
    let back = c.resolve("/u/doc").await.unwrap();
    assert_eq!(c.read_file(back).await.unwrap(), original);

    // Deleted again and expired: the data is gone and undelete says so.
    c.unlink("/u/doc").await.unwrap();
    let v = version(&c.full_readdir(dir).await.unwrap()).unwrap();
    shorten_policy(&c, dir).await;
    no_errors(&run_once(&c, &GcOptions::default()).await);
    let err = c.shard_request(dir.shard(), restore(v)).await.unwrap_err();
    assert_eq!(err.eggs(), Some(EggsError::SnapshotNotFound));
    assert!(c.resolve("/u/doc").await.is_err());
    assert_eq!(blocks_on_disk(cluster.dir()), (0, 0));

    // A removed directory comes back through the CDC, with what was deleted inside it.
    // (A removed directory no longer knows its parent: it follows its own snapshot policy,
    // or the root's.)
    let sub = c.mkdir("/u/sub").await.unwrap();
    c.set_directory_info(sub, policy(3_000_000_000))
        .await
        .unwrap();
    FileWriter::write_path(&c, "/u/sub/inner", &data(8, 1000)[..])
        .await
        .unwrap();
    c.set_directory_info(dir, policy(HOUR_NS)).await.unwrap();
    c.unlink("/u/sub/inner").await.unwrap();
    c.rmdir("/u/sub").await.unwrap();
    run_once(&c, &GcOptions::default()).await;
    let undelete = eggs_protocol::cdc::UndeleteDirectoryReq {
        owner_id: dir,
        name: Name::new("sub").unwrap(),
        target_id: sub,
    };
    c.cdc_request(undelete.clone()).await.unwrap();
    assert_eq!(c.resolve("/u/sub").await.unwrap(), sub);
    let inner = c.full_readdir(sub).await.unwrap();
    assert!(inner
        .iter()
        .any(|e| e.name.to_string() == "inner" && !e.current));
    // Asking again changes nothing (the CDC's steps are idempotent).
    c.cdc_request(undelete.clone()).await.unwrap();
    assert_eq!(c.resolve("/u/sub").await.unwrap(), sub);
    // Removed again while another directory took the name: refused, and detached again.
    c.rmdir("/u/sub").await.unwrap();
    let newer = c.mkdir("/u/sub").await.unwrap();
    let err = c.cdc_request(undelete.clone()).await.unwrap_err();
    assert_eq!(err.eggs(), Some(EggsError::NameExists));
    assert_eq!(c.resolve("/u/sub").await.unwrap(), newer);
    let st = c
        .shard_request(sub.shard(), StatDirectoryReq { id: sub })
        .await;
    assert!(st.unwrap().owner_id.is_null());
    c.rmdir("/u/sub").await.unwrap();
    // Collected: gone for good.
    shorten_policy(&c, dir).await;
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let r = run_once(&c, &GcOptions::default()).await;
    no_errors(&r);
    assert_eq!(r.collect.destroyed_directories, 1, "{r:?}");
    let err = c.cdc_request(undelete).await.unwrap_err();
    assert_eq!(err.eggs(), Some(EggsError::SnapshotNotFound));
    eggs_tests::finish(cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_and_killed_gc_passes_finish_the_job() {
    if !built() {
        return;
    }
    let (cluster, c) = start("gc-concurrent", None).await;
    let dir = make_dir(&c, "/k").await;
    // Writes refused while the shards had not heard of the block services yet leave transient
    // files with their (hour-long) deadline: not the GC's business yet.
    let setup_leftovers = transient_files(&c).await;
    // Cross-directory moves: the moved files must survive their old edges' expiry.
    let other = c.mkdir("/other").await.unwrap();
    c.set_directory_info(other, policy(HOUR_NS)).await.unwrap();
    let n = 40;
    write_files(&c, "/k", n, 70_000).await;
    for i in 0..4 {
        c.rename(&format!("/k/f{i}"), &format!("/other/m{i}"))
            .await
            .unwrap();
    }
    for i in 4..n {
        c.unlink(&format!("/k/f{i}")).await.unwrap();
    }
    shorten_policy(&c, dir).await;

    // An eggsgc process killed with SIGKILL in the middle of its pass.
    let mut child = tokio::process::Command::new(eggs_run::default_bin_dir().join("eggsgc"))
        .args(["--once", "--shuckle", &cluster.shuckle_addr().to_string()])
        .env("EGGS_LOG", "warn")
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let _ = child.start_kill();
    let _ = child.wait().await;

    // Two passes at once, then one more: everything deleted is gone, nothing else.
    let opts = GcOptions::default();
    let (a, b) = tokio::join!(run_once(&c, &opts), run_once(&c, &opts));
    no_errors(&a);
    no_errors(&b);
    let third = run_once(&c, &opts).await;
    no_errors(&third);
    let left = transient_files(&c).await;
    assert!(
        left.iter().all(|f| setup_leftovers.contains(f)),
        "{a:?}\n{b:?}\n{third:?}"
    );
    let left = c.full_readdir(dir).await.unwrap();
    assert!(left.is_empty(), "{left:?}");
    for i in 0..4 {
        let id = c.resolve(&format!("/other/m{i}")).await.unwrap();
        assert_eq!(c.read_file(id).await.unwrap(), data(i, 70_000));
    }
    assert_eq!(
        blocks_on_disk(cluster.dir()).0,
        4 * 3,
        "only the moved files' blocks"
    );
    eggs_tests::finish(cluster).await;
}
