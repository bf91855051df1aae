//! `eggscli snapshots`, `undelete` and `gc status` against a real cluster running `eggsgc`
//! (the server binaries and `eggsgc` must be built first; `cargo xtask test` does that).

use eggs_run::{Cluster, ClusterConfig, GcIntervals};
use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

struct Cli {
    shuckle: SocketAddr,
}

impl Cli {
    fn run(&self, args: &[&str], input: &[u8]) -> Output {
        let mut child = Command::new(env!("CARGO_BIN_EXE_eggscli"))
            .arg("--shuckle")
            .arg(self.shuckle.to_string())
            .args(args)
            .env_remove("EGGS_SHUCKLE")
            .env_remove("EGGS_GC_STATUS")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running eggscli");
        let mut stdin = child.stdin.take().unwrap();
        let _ = stdin.write_all(input);
        drop(stdin);
        child.wait_with_output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        self.ok_with(args, b"")
    }

    fn ok_with(&self, args: &[&str], input: &[u8]) -> String {
        let out = self.run(args, input);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "eggscli {args:?} failed: {stderr}");
        String::from_utf8(out.stdout).unwrap()
    }

    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args, b"");
        assert_eq!(out.status.code(), Some(1), "eggscli {args:?}: {out:?}");
        String::from_utf8(out.stderr)
            .unwrap()
            .trim_end()
            .to_string()
    }
}

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
    assert!(cli.fails(&["undelete", "/d/f"]).contains("exists"));

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
    let err = cli.fails(&["undelete", "/d/f"]);
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
