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

use eggs_cli::accounts::Accounts;
use eggs_run::{Cluster, ClusterConfig};
use std::os::unix::fs::MetadataExt;
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
    attributes(&cli);
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
    let long = cli.ok(&["ls", "-n", "/x/f"]);
    let cols: Vec<&str> = long.split_whitespace().collect();
    assert!(cols[0].starts_with("-rw"), "{long}");
    assert_eq!(cols[1], euid().to_string(), "{long}");
    assert_eq!(cols[3], "4", "{long}");
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

/// This process's effective uid: the owner of its `/proc/self`.
fn euid() -> u32 {
    std::fs::metadata("/proc/self").unwrap().uid()
}

/// `chmod`, `chown`, and how `stat` and `ls -l` show modes, owners and groups; as root, and
/// as other users whom the shard holds to Linux's rules.
fn attributes(cli: &Cli) {
    cli.ok_with(&["write", "/x/attrs"], b"mode");
    cli.ok(&["chmod", "640", "/x/attrs"]);
    let stat = cli.ok(&["stat", "/x/attrs"]);
    assert!(stat.contains("mode:   0640 (-rw-r-----)"), "{stat}");
    for key in ["uid:", "gid:", "atime:", "mtime:", "ctime:"] {
        assert!(stat.lines().any(|l| l.starts_with(key)), "{key} {stat}");
    }
    let long = cli.ok(&["ls", "-l", "/x"]);
    let line = long.lines().find(|l| l.ends_with(" attrs")).unwrap();
    assert!(line.starts_with("-rw-r-----  "), "{long}");
    let dir = long.lines().find(|l| l.ends_with(" y")).unwrap();
    assert!(dir.starts_with("drwx"), "{long}");
    cli.ok(&["chmod", "g+w,o=r", "/x/attrs"]);
    let stat = cli.ok(&["stat", "/x/attrs"]);
    assert!(stat.contains("mode:   0664 (-rw-rw-r--)"), "{stat}");
    cli.ok(&["chmod", "1777", "/x/y"]);
    assert!(cli.ok(&["ls", "-l", "/x"]).contains("drwxrwxrwt  "));
    cli.ok(&["chmod", "755", "/x/y"]);
    assert!(cli
        .ok(&["stat", "/x/y"])
        .contains("mode:   0755 (drwxr-xr-x)"));
    cli.ok(&["chmod", "640", "/x/attrs"]);

    if euid() != 0 {
        // Only root gives files away.
        let e = cli.fails(&["chown", "1234:5678", "/x/attrs"]);
        assert!(
            e.contains("operation not permitted: only root may give"),
            "{e}"
        );
        return;
    }
    cli.ok(&["chown", "1234:5678", "/x/attrs"]);
    let long = cli.ok(&["ls", "-n", "/x/attrs"]);
    assert!(long.starts_with("-rw-r-----  1234  5678  4  "), "{long}");
    let accounts = Accounts::load();
    let (user, group) = (accounts.show_user(1234), accounts.show_group(5678));
    let long = cli.ok(&["ls", "-l", "/x/attrs"]);
    assert!(
        long.starts_with(&format!("-rw-r-----  {user}  {group}  4  ")),
        "{long}"
    );
    let stat = cli.ok(&["stat", "/x/attrs"]);
    assert!(
        stat.lines().any(|l| l.starts_with("uid:    1234")),
        "{stat}"
    );
    assert!(
        stat.lines().any(|l| l.starts_with("gid:    5678")),
        "{stat}"
    );
    cli.ok(&["chown", ":0", "/x/attrs"]);
    assert!(cli
        .ok(&["ls", "-n", "/x/attrs"])
        .starts_with("-rw-r-----  1234  0  "));

    // The owner changes the mode, and the group to its own; not the owner.
    cli.ok_as(1234, 5678, &["chmod", "600", "/x/attrs"]);
    cli.ok_as(1234, 5678, &["chown", ":5678", "/x/attrs"]);
    cli.ok_as(1234, 5678, &["chown", "1234", "/x/attrs"]);
    assert!(cli
        .ok(&["ls", "-n", "/x/attrs"])
        .starts_with("-rw-------  1234  5678  "));
    let e = cli.fails_as(1234, 5678, &["chown", "4321", "/x/attrs"]);
    assert_eq!(
        e,
        format!(
            "eggscli: chown 4321 /x/attrs: operation not permitted: only root may give \
             /x/attrs to another user (you are uid 1234{})",
            accounts
                .user_name(1234)
                .map(|n| format!(" ({n})"))
                .unwrap_or_default()
        )
    );
    let e = cli.fails_as(1234, 5678, &["chown", ":99", "/x/attrs"]);
    assert!(e.contains("operation not permitted: "), "{e}");
    assert!(e.contains("is not in group 99"), "{e}");
    let e = cli.fails_as(4321, 5678, &["chmod", "777", "/x/attrs"]);
    assert!(
        e.starts_with(
            "eggscli: chmod 777 /x/attrs: operation not permitted: /x/attrs belongs to uid 1234"
        ),
        "{e}"
    );
    let e = cli.fails_as(4321, 5678, &["chown", ":5678", "/x/attrs"]);
    assert!(e.contains("operation not permitted: "), "{e}");
    // Members of the file's group may set setgid; others (the owner too) may not, and the
    // shard drops the bit.
    let out = cli.ok_as(1234, 5678, &["chmod", "2755", "/x/attrs"]);
    assert!(out.is_empty(), "{out}");
    cli.ok(&["chown", ":0", "/x/attrs"]);
    let out = cli.ok_as(1234, 5678, &["chmod", "2755", "/x/attrs"]);
    assert!(
        out.contains("the mode is 0755 (-rwxr-xr-x), not 2755"),
        "{out}"
    );
    // What nobody may do, and what makes no sense.
    let e = cli.fails(&["chmod", "640", "/nope"]);
    assert_eq!(e, "eggscli: chmod 640 /nope: no such name");
    let usage = cli.run(&["chmod", "u+q", "/x/attrs"], b"");
    assert_eq!(usage.status.code(), Some(2));
    let e = String::from_utf8(usage.stderr).unwrap();
    assert!(e.contains("bad mode \"u+q\""), "{e}");
    let usage = cli.run(&["chown", "1:2:3", "/x/attrs"], b"");
    assert_eq!(usage.status.code(), Some(2));
    cli.ok(&["rm", "/x/attrs"]);
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
