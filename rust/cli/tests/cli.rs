//! `eggscli` as a user runs it, against a real local cluster (the server binaries must be
//! built first; `cargo xtask test` does that).

// Test code: a failed unwrap or expect is the failed test's message, and casts of test
// patterns and sizes need no checking.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]

use eggs_run::{Cluster, ClusterConfig};
use std::time::Duration;

mod common;
use common::Cli;

#[tokio::test]
async fn commands_against_a_cluster() {
    let dir = tempfile::tempdir().expect("create temp dir");
    let cluster = Cluster::start(ClusterConfig::new(dir.path()))
        .await
        .unwrap();
    cluster
        .wait_registered(Duration::from_secs(30))
        .await
        .unwrap();
    let cli = Cli {
        shuckle: cluster.shuckle_addr(),
    };
    namespace(&cli);
    files(&cli);
    policies(&cli);
    errors(&cli);
    let status = cli.ok(&["status"]);
    assert!(status.contains("shards: 256 of 256 registered"), "{status}");
    assert!(
        status.contains("block services: none registered"),
        "{status}"
    );
    cluster.stop().await.unwrap();
}

fn namespace(cli: &Cli) {
    cli.ok(&["mkdir", "-p", "/x/y/z"]);
    cli.ok(&["mkdir", "-p", "/x/y"]);
    cli.ok(&["mkdir", "/x/w"]);
    assert_eq!(cli.ok(&["ls", "/x"]), "w\ny\n");
    cli.ok(&["mv", "/x/w", "/x/y"]);
    assert_eq!(cli.ok(&["ls", "/x/y"]), "w\nz\n");
    cli.ok(&["mv", "/x/y/w", "/x/v"]);
    cli.ok(&["rmdir", "/x/v"]);
    let tree = cli.ok(&["tree", "/x"]);
    assert_eq!(tree, "/x\n└── y/\n    └── z/\n\n2 directories, 0 files\n");
    let stat = cli.ok(&["stat", "/x/y"]);
    assert!(stat.contains("type:   dir"), "{stat}");
    assert!(stat.contains("(inherited)"), "{stat}");
}

fn files(cli: &Cli) {
    cli.ok_with(&["write", "/x/f"], b"one");
    cli.ok_with(&["write", "/x/f"], b"two!");
    assert_eq!(cli.ok(&["cat", "/x/f"]), "two!");
    let long = cli.ok(&["ls", "-l", "/x/f"]);
    assert!(long.starts_with("file  4  "), "{long}");
    cli.ok(&["rm", "/x/f"]);
    let versions = cli.ok(&["ls", "--snapshots", "/x"]);
    let states: Vec<&str> = versions
        .lines()
        .filter(|l| l.ends_with(" f"))
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(states, ["snapshot", "snapshot", "deleted"], "{versions}");
    // Larger files need block services, which this cluster has none of.
    let big = vec![b'x'; 300_000];
    let e = String::from_utf8(cli.run(&["write", "/x/big"], &big).stderr).unwrap();
    assert!(e.contains("not enough block services"), "{e}");
}

fn policies(cli: &Cli) {
    let out = cli.ok(&[
        "policy",
        "set",
        "/x",
        "--snapshot-delete-after",
        "12h",
        "--stripe-size",
        "64K",
    ]);
    assert!(
        out.contains("delete-after=12h keep-versions=all  (set here)"),
        "{out}"
    );
    let out = cli.ok(&["policy", "get", "/x/y"]);
    assert!(out.contains("stripe    64K"), "{out}");
    cli.ok(&["policy", "set", "/x", "--inherit", "stripe"]);
    let out = cli.ok(&["policy", "get", "/x"]);
    assert!(out.contains("stripe    1M"), "{out}");
}

fn errors(cli: &Cli) {
    assert_eq!(
        cli.fails(&["ls", "/nope"]),
        "eggscli: ls /nope: no such name"
    );
    assert_eq!(
        cli.fails(&["rmdir", "/x"]),
        "eggscli: rmdir /x: directory not empty"
    );
    assert_eq!(cli.fails(&["cat", "/x"]), "eggscli: cat /x: is a directory");
    assert_eq!(cli.fails(&["rm", "/x"]), "eggscli: rm /x: is a directory");
    assert_eq!(
        cli.fails(&["mkdir", "/x"]),
        "eggscli: mkdir /x: name already exists"
    );
    let usage = cli.run(&["mkdir"], b"");
    assert_eq!(usage.status.code(), Some(2));
}
