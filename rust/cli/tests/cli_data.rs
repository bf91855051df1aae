//! `eggscli cp`, `cat`, `stat` and `blockservice` against a real cluster with block services
//! (the server binaries, `eggsblocks` included, must be built first; `cargo xtask test` does
//! that).

// Test code: a failed unwrap or expect is the failed test's message, and casts of test
// patterns and sizes need no checking.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]

use eggs_run::{BlockServicesLayout, Cluster, ClusterConfig};
use std::path::Path;
use std::time::{Duration, Instant};

mod common;
use common::Cli;

/// Deterministic bytes that do not compress into a pattern.
fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 56) as u8
        })
        .collect()
}

const BIG: usize = (3 << 20) + 1;

/// Relative path and contents of every file of the local test tree.
fn tree_files() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("empty", Vec::new()),
        ("one", vec![b'!']),
        ("small", bytes(5000, 1)),
        ("sub/big", bytes(BIG, 2)),
    ]
}

fn make_tree(root: &Path) {
    for (rel, data) in tree_files() {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }
}

/// Files below `dir`, relative, sorted.
fn list_files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap();
                out.push(rel.to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn data_commands_against_a_cluster() {
    let dir = tempfile::tempdir().expect("create temp dir");
    let mut cfg = ClusterConfig::new(dir.path().join("cluster"));
    cfg.block_services = BlockServicesLayout {
        failure_domains: 6,
        flash: 6,
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
    let t = Instant::now();
    cli.ok(&["mkdir", "-p", "/t"]);
    cli.ok(&[
        "policy",
        "set",
        "/t",
        "--span",
        "64K:1+2,1M:4+2",
        "--block",
        "0:flash",
        "--stripe-size",
        "64K",
    ]);
    wait_writable(&cli);

    // A tree in, and out again.
    let src = dir.path().join("src");
    make_tree(&src);
    let src_s = src.to_str().unwrap();
    let out = cli.ok(&["cp", "-r", "-v", src_s, "eggs:/t"]);
    assert!(out.starts_with("4 files, 3150730 bytes"), "{out}");
    assert_eq!(cli.ok(&["ls", "/t/src"]), "empty\none\nsmall\nsub\n");
    let back = dir.path().join("back");
    cli.ok(&["cp", "-r", "eggs:/t/src", back.to_str().unwrap()]);
    assert_eq!(list_files(&back), ["empty", "one", "small", "sub/big"]);
    for (rel, data) in tree_files() {
        assert!(
            std::fs::read(back.join(rel)).unwrap() == data,
            "{rel} differs"
        );
    }

    // One file into an existing directory, under its own name; no temporary left.
    cli.ok(&["cp", "eggs:/t/src/small", back.to_str().unwrap()]);
    cli.ok(&["cp", &format!("{src_s}/one"), "eggs:/t/src/sub"]);
    assert_eq!(cli.ok(&["ls", "/t/src/sub"]), "big\none\n");
    assert_eq!(list_files(&back), ["empty", "one", "small", "sub/big"]);

    // cat streams block spans.
    let big = cli.ok_bytes(&["cat", "/t/src/sub/big"]);
    assert!(big == bytes(BIG, 2), "cat of the big file differs");
    assert_eq!(cli.ok(&["cat", "/t/src/one"]), "!");

    // write streams too.
    let data = bytes(200_000, 3);
    let w = cli.run(&["write", "/t/w"], &data);
    assert!(w.status.success(), "{w:?}");
    assert!(cli.ok_bytes(&["cat", "/t/w"]) == data);

    // stat lists spans and blocks.
    let stat = cli.ok(&["stat", "/t/src/sub/big"]);
    assert!(stat.contains("mirrored 1+2 flash"), "{stat}");
    assert!(
        stat.lines()
            .any(|l| l.starts_with("size:") && l.ends_with(" 3145729")),
        "{stat}"
    );
    assert!(stat.contains("spans: 4"), "{stat}");
    assert!(stat.contains("RS(4,2) flash"), "{stat}");
    assert!(stat.contains("BLOCK"), "{stat}");
    assert!(stat.contains("5 (p)"), "{stat}");
    let stat = cli.ok(&["stat", "/t/src/one"]);
    assert!(stat.contains("inline"), "{stat}");
    let stat = cli.ok(&["stat", "/t/src/empty"]);
    assert!(stat.contains("spans: 0"), "{stat}");

    // Errors.
    let e = cli.fails(&["cp", "eggs:/t/src", back.to_str().unwrap()]);
    assert!(e.ends_with("/t/src is a directory (use -r)"), "{e}");
    let e = cli.fails(&["cp", src_s, "eggs:/t"]);
    assert!(e.ends_with("is a directory (use -r)"), "{e}");
    let e = cli.fails(&["cp", "eggs:/t/nope", back.to_str().unwrap()]);
    assert!(e.ends_with("no such name"), "{e}");
    let e = cli.fails(&["cp", src_s, src_s]);
    assert!(e.contains("exactly one of SRC and DST"), "{e}");
    let e = cli.fails(&["cat", "/t"]);
    assert!(e.ends_with("is a directory"), "{e}");

    // Block service flags.
    let list = cli.ok(&["blockservice", "list"]);
    assert!(list.starts_with("block services: 6"), "{list}");
    let id = list
        .lines()
        .nth(2)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap();
    let out = cli.ok(&["blockservice", "flag", id, "--set", "no-write"]);
    assert_eq!(out.trim(), format!("{id}  no-write"));
    let list = cli.ok(&["blockservice", "list"]);
    let line = list.lines().find(|l| l.contains(id)).unwrap();
    assert!(line.contains("no-write"), "{list}");
    let out = cli.ok(&["blockservice", "flag", id, "--clear", "no-write"]);
    assert_eq!(out.trim(), format!("{id}  -"));
    let e = cli.fails(&[
        "blockservice",
        "flag",
        "00000000deadbeef",
        "--set",
        "no-read",
    ]);
    assert!(e.contains("no block service 00000000deadbeef"), "{e}");
    eprintln!("commands took {:?}", t.elapsed());
    cluster.stop().await.unwrap();
}

/// The shard learns of block services from shuckle periodically: write until it has.
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
