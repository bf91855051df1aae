//! `eggscli snapshots`, `undelete` and `gc status` against a real cluster running `eggsgc`
//! (the server binaries and `eggsgc` must be built first; `cargo xtask test` does that).

// Test code: a failed unwrap or expect is the failed test's message, and casts of test
// patterns and sizes need no checking.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]

use eggs_run::{Cluster, ClusterConfig, GcIntervals};
use std::time::{Duration, Instant};

mod common;
use common::Cli;

fn built() -> bool {
    let bin = eggs_run::default_bin_dir().join("eggsgc");
    if !bin.is_file() {
        eprintln!(
            "skipped: {} is not built (cargo build --bins)",
            bin.display()
        );
    }
    bin.is_file()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_undelete_and_gc_status() {
    if !built() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("eggs-cli-undelete-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut cfg = ClusterConfig::new(&dir);
    cfg.gc = Some(GcIntervals {
        collect_ms: 200,
        destroy_ms: 200,
        ..GcIntervals::LOCAL
    });
    let cluster = Cluster::start(cfg).await.expect("cluster starts");
    cluster
        .wait_registered(Duration::from_secs(60))
        .await
        .expect("cluster registers");
    let cli = Cli {
        shuckle: cluster.shuckle_addr(),
    };

    cli.ok(&["mkdir", "/d"]);
    cli.ok_with(&["write", "/d/f"], b"first version");
    cli.ok(&["rm", "/d/f"]);
    let versions = cli.ok(&["snapshots", "/d/f"]);
    assert!(
        versions.contains("snapshot") && versions.contains("deleted"),
        "{versions}"
    );
    assert!(cli.ok(&["undelete", "/d/f"]).starts_with("restored /d/f"));
    assert_eq!(cli.ok(&["cat", "/d/f"]), "first version");
    assert!(cli.fails_verbose(&["undelete", "/d/f"]).contains("exists"));

    // Overwritten: the old version comes back once the new one is out of the way.
    cli.ok_with(&["write", "/d/f"], b"second");
    let old = cli
        .ok(&["snapshots", "/d/f"])
        .lines()
        .find(|l| l.contains("snapshot"))
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .expect("the overwritten version");
    cli.ok(&["mv", "/d/f", "/d/g"]);
    cli.ok(&["undelete", "/d/f", "--version", &old]);
    assert_eq!(cli.ok(&["cat", "/d/f"]), "first version");
    assert_eq!(cli.ok(&["cat", "/d/g"]), "second");

    // A removed directory comes back too.
    cli.ok(&["mkdir", "/d/sub"]);
    cli.ok(&["rmdir", "/d/sub"]);
    assert!(cli
        .ok(&["undelete", "/d/sub"])
        .starts_with("restored directory /d/sub"));
    assert!(cli.ok(&["ls", "/d"]).contains("sub"));

    // With a short policy, eggsgc (running in the background) collects it: gone for good.
    cli.ok(&["policy", "set", "/d", "--snapshot-delete-after", "1ms"]);
    cli.ok(&["rm", "/d/f"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = cli.run(&["snapshots", "/d/f"], b"");
        if !out.status.success() {
            break;
        }
        assert!(Instant::now() < deadline, "eggsgc never collected /d/f");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let err = cli.fails_verbose(&["undelete", "/d/f"]);
    assert!(err.contains("gone"), "{err}");

    let status_file = dir.join("gc").join("status");
    let status = cli.ok(&[
        "gc",
        "status",
        "--status-file",
        status_file.to_str().unwrap(),
    ]);
    assert!(
        status.contains("collect") && status.contains("destroy"),
        "{status}"
    );
    assert!(status.contains("pending: "), "{status}");
    assert!(!status.contains("no GC status"), "{status}");

    cluster.stop().await.expect("cluster stops cleanly");
    let _ = std::fs::remove_dir_all(dir);
}
