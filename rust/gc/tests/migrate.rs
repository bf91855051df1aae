//! Migration against a real cluster: the blocks of a decommissioned service holding blocks
//! of many files are moved elsewhere, after which the service's process is killed and its
//! directory wiped, and every file still reads back with every block intact. Migration is
//! also interrupted half way and rerun, and run twice at once.

// Test code: a failed unwrap or expect is the failed test's message, and casts of test
// patterns and sizes need no checking.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]

mod repair_common;

use eggs_client::repair::BlockHealth;
use eggs_client::{Client, FileWriter};
use eggs_gc::migrate::{count_files, migrate_block_service};
use eggs_protocol::shuckle::{flags, SetBlockServiceFlagsReq};
use eggs_protocol::{BlockServiceId, InodeId, Name};
use repair_common::{cluster, contents, health, services, span_blocks};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Writes `n` files of assorted sizes (mirrored, one and several RS spans).
async fn write_files(c: &Client, dir: InodeId, n: u64) -> Vec<(InodeId, Vec<u8>)> {
    let mut out = Vec::new();
    for i in 0..n {
        let len = match i % 3 {
            0 => 3000 + i as usize * 100,
            1 => (100 << 10) + i as usize,
            _ => (600 << 10) + i as usize * 7,
        };
        let data = contents(i, len);
        let name = Name::new(format!("f{i}")).unwrap();
        let id = FileWriter::write_in(c, dir, &name, &data[..])
            .await
            .unwrap();
        out.push((id, data));
    }
    out
}

/// The service holding blocks of the most files.
async fn busiest(c: &Client, files: &[(InodeId, Vec<u8>)]) -> (BlockServiceId, usize) {
    let mut per_service: HashMap<BlockServiceId, usize> = HashMap::new();
    for (f, _) in files {
        let mut seen: Vec<BlockServiceId> = span_blocks(c, *f)
            .await
            .into_iter()
            .flatten()
            .map(|(s, _)| s)
            .collect();
        seen.sort();
        seen.dedup();
        for s in seen {
            *per_service.entry(s).or_default() += 1;
        }
    }
    per_service.into_iter().max_by_key(|&(_, n)| n).unwrap()
}

async fn decommission(c: &Client, bs: BlockServiceId) {
    let both = flags::DECOMMISSIONED | flags::NO_WRITE;
    c.shuckle()
        .request(SetBlockServiceFlagsReq {
            id: bs,
            flags: both,
            mask: both,
        })
        .await
        .unwrap();
}

/// Kills the process serving `bs` (it serves nothing else: one flash service per failure
/// domain), wipes its directory, and checks every file: no block left on `bs`, every block
/// intact on its service, contents bit-exact.
async fn wipe_and_check(
    cluster: &mut eggs_run::Cluster,
    c: &Client,
    bs: BlockServiceId,
    files: &[(InodeId, Vec<u8>)],
) -> String {
    let svcs = services(c).await;
    let (path, proc) = svcs[&bs].clone();
    cluster.kill(&proc, eggs_run::Signal::SIGKILL).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    std::fs::remove_dir_all(&path).unwrap();
    assert_eq!(count_files(c, bs).await.unwrap(), 0);
    for (f, data) in files {
        let blocks = span_blocks(c, *f).await;
        assert!(
            blocks.iter().flatten().all(|(s, _)| *s != bs),
            "{f} still has a block on {bs:?}"
        );
        for (i, span) in health(c, *f).await.iter().enumerate() {
            assert!(
                span.iter().all(|h| *h == BlockHealth::Good),
                "{f} span {i}: {span:?}"
            );
        }
        assert!(c.read_file(*f).await.unwrap() == *data, "{f} reads back");
    }
    proc
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_migration_is_rerun_and_the_service_wiped() {
    let (mut cluster, c, dir) = cluster("gc-migrate", 8).await;
    let files = write_files(&c, dir, 24).await;
    let (bs, n_files) = busiest(&c, &files).await;
    assert!(n_files >= 10, "only {n_files} files on the busiest service");
    decommission(&c, bs).await;
    let before = count_files(&c, bs).await.unwrap();
    // The index agrees with the spans (the warmup file may be there too).
    assert!(
        before as usize >= n_files && before as usize <= n_files + 1,
        "{before}"
    );

    // Killed part way (the task is dropped between two requests, as with kill -9: the
    // shard keeps whatever was recorded).
    let c2: Arc<Client> = c.clone();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let mut progress = |s: &eggs_gc::migrate::MigrateStats| {
            let _ = tx.send(s.blocks_moved);
        };
        migrate_block_service(&c2, bs, &mut progress).await.unwrap()
    });
    while let Some(moved) = rx.recv().await {
        if moved >= 4 {
            break;
        }
    }
    task.abort();
    let _ = task.await;
    let mid = count_files(&c, bs).await.unwrap();
    assert!(mid > 0 && mid < before, "{mid} of {before} files left");
    // Every file still reads back in the middle.
    for (f, data) in &files {
        assert!(c.read_file(*f).await.unwrap() == *data);
    }

    let s = migrate_block_service(&c, bs, &mut |_| {}).await.unwrap();
    assert_eq!(s.remaining_files, 0, "{s:?}");
    assert_eq!(s.failed, 0, "{s:?}");
    assert!(s.blocks_moved >= mid, "{s:?} after {mid} of {before} left");
    assert_eq!(s.blocks_rebuilt, 0, "the service was up: blocks are copied");
    let killed = wipe_and_check(&mut cluster, &c, bs, &files).await;
    eggs_tests::finish_after_kills(cluster, &[killed]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_migrations_at_once_and_of_a_dead_service() {
    let (mut cluster, c, dir) = cluster("gc-migrate2", 8).await;
    let files = write_files(&c, dir, 15).await;
    let (bs, _) = busiest(&c, &files).await;
    decommission(&c, bs).await;
    // Two GCs: separate clients, as two processes would have.
    let other = Arc::new(
        Client::new(cluster.shuckle_addr(), Default::default())
            .await
            .unwrap(),
    );
    let (mut pa, mut pb) = (|_: &_| {}, |_: &_| {});
    let (a, b) = tokio::join!(
        migrate_block_service(&c, bs, &mut pa),
        migrate_block_service(&other, bs, &mut pb)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(
        (a.remaining_files, b.remaining_files),
        (0, 0),
        "{a:?} {b:?}"
    );
    assert_eq!((a.failed, b.failed), (0, 0), "{a:?} {b:?}");
    let killed = wipe_and_check(&mut cluster, &c, bs, &files).await;

    // A second service dies without warning: its blocks are rebuilt from parity.
    let (dead, _) = busiest(&c, &files).await;
    let svcs = services(&c).await;
    let (path, proc) = svcs[&dead].clone();
    cluster.kill(&proc, eggs_run::Signal::SIGKILL).unwrap();
    std::fs::remove_dir_all(&path).unwrap();
    decommission(&c, dead).await;
    let s = migrate_block_service(&c, dead, &mut |_| {}).await.unwrap();
    assert_eq!((s.remaining_files, s.failed), (0, 0), "{s:?}");
    assert_eq!(s.blocks_rebuilt, s.blocks_moved, "{s:?}");
    // Every old block stays behind on the dead disk; targets abandoned by the two racing
    // migrations above may have landed on it too, and cannot be erased either.
    assert!(
        s.leftovers >= s.blocks_moved,
        "nothing can be erased on a dead service: {s:?}"
    );
    for (f, data) in &files {
        for (i, span) in health(&c, *f).await.iter().enumerate() {
            assert!(span.iter().all(|h| *h == BlockHealth::Good), "{f} span {i}");
        }
        assert!(c.read_file(*f).await.unwrap() == *data);
    }
    eggs_tests::finish_after_kills(cluster, &[killed, proc]).await;
}

/// The eggsgc daemon's `migrate` loop empties a service flagged decommissioned on its own,
/// without anyone running `eggscli migrate`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_empties_a_decommissioned_service() {
    let (mut cluster, c, dir) = cluster("gc-migrate-daemon", 8).await;
    let files = write_files(&c, dir, 8).await;
    let (bs, _) = busiest(&c, &files).await;
    let status = cluster.dir().join("gc-status");
    let mut gc = tokio::process::Command::new(cluster.config().bin_dir.join("eggsgc"))
        .arg("--shuckle")
        .arg(cluster.shuckle_addr().to_string())
        .args([
            "--collect-interval-ms",
            "600000",
            "--destroy-interval-ms",
            "600000",
        ])
        .args(["--scrub-interval-ms", "0", "--migrate-interval-ms", "200"])
        .arg("--status-file")
        .arg(&status)
        .kill_on_drop(true)
        .spawn()
        .expect("eggsgc starts");
    decommission(&c, bs).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while count_files(&c, bs).await.unwrap() > 0 {
        assert!(
            Instant::now() < deadline,
            "the migrate loop did not empty {bs:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let text = std::fs::read_to_string(&status).unwrap_or_default();
    assert!(text.contains("loop=migrate"), "status file: {text}");
    gc.kill().await.unwrap();
    let killed = wipe_and_check(&mut cluster, &c, bs, &files).await;
    eggs_tests::finish_after_kills(cluster, &[killed]).await;
}
