//! End-to-end namespace tests: real shuckle, shard and CDC processes on loopback, driven
//! through the client library and the `eggscli` binary.

// Test code: a failed unwrap or expect is the failed test's message, and casts of test
// patterns and sizes need no checking.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]

use eggs_client::{Client, FileWriter, Stat};
use eggs_protocol::policy::{DirectoryInfo, StripePolicy};
use eggs_protocol::{EggsError, InodeId, MAX_INLINE_SPAN};
use eggs_tests::start_cluster;
use std::sync::Arc;

fn err(r: eggs_client::Result<impl std::fmt::Debug>) -> EggsError {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e
            .eggs()
            .unwrap_or_else(|| panic!("expected a server error, got {e}")),
    }
}

async fn names(c: &Client, path: &str) -> Vec<String> {
    let dir = c.resolve(path).await.unwrap();
    let mut v: Vec<String> = c
        .readdir(dir)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name.to_string())
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_operations_end_to_end() {
    let (cluster, c) = start_cluster("namespace", 2).await;
    c.mkdir_p("/a/b/c").await.unwrap();
    c.mkdir("/x").await.unwrap();
    assert_eq!(err(c.mkdir("/x").await), EggsError::NameExists);
    FileWriter::write_path(&c, "/a/f1", &b"hello"[..])
        .await
        .unwrap();
    // As large as a file without block services (this cluster has none) can be: one inline span.
    FileWriter::write_path(&c, "/a/b/f2", &(&vec![7u8; MAX_INLINE_SPAN])[..])
        .await
        .unwrap();
    assert_eq!(names(&c, "/").await, ["a", "x"]);
    assert_eq!(names(&c, "/a").await, ["b", "f1"]);

    // Same-directory rename (shard), cross-directory rename of a file and a directory (CDC).
    c.rename("/a/f1", "/a/g1").await.unwrap();
    c.rename("/a/g1", "/x/g1").await.unwrap();
    c.rename("/a/b", "/x/b").await.unwrap();
    assert_eq!(names(&c, "/a").await, Vec::<String>::new());
    assert_eq!(names(&c, "/x").await, ["b", "g1"]);
    let f = c.resolve("/x/g1").await.unwrap();
    assert_eq!(c.read_file(f).await.unwrap(), b"hello");
    let f2 = c.resolve("/x/b/f2").await.unwrap();
    assert_eq!(c.read_file(f2).await.unwrap(), vec![7u8; MAX_INLINE_SPAN]);
    let b = c.resolve("/x/b").await.unwrap();
    match c.stat(b).await.unwrap() {
        Stat::Directory { owner_id, .. } => assert_eq!(owner_id, c.resolve("/x").await.unwrap()),
        s => panic!("{s:?}"),
    }

    // No directory may move inside itself.
    assert_eq!(
        err(c.rename("/x", "/x/b/c/x").await),
        EggsError::LoopInDirectoryRename
    );
    assert_eq!(
        err(c.rename("/x/b", "/x/b/c/b").await),
        EggsError::LoopInDirectoryRename
    );

    // rmdir only when empty; rm only files.
    assert_eq!(err(c.rmdir("/x/b").await), EggsError::DirectoryNotEmpty);
    assert_eq!(err(c.unlink("/x/b").await), EggsError::IsADirectory);
    c.unlink("/x/b/f2").await.unwrap();
    c.rmdir("/x/b/c").await.unwrap();
    c.rmdir("/x/b").await.unwrap();
    assert_eq!(names(&c, "/x").await, ["g1"]);
    assert_eq!(err(c.resolve("/x/b").await), EggsError::NameNotFound);

    // Deleted and renamed names stay as snapshot edges.
    let x = c.resolve("/x").await.unwrap();
    let edges = c.full_readdir(x).await.unwrap();
    assert!(edges
        .iter()
        .any(|e| e.name.to_string() == "b" && !e.current));
    assert!(edges
        .iter()
        .any(|e| e.name.to_string() == "g1" && e.current));

    // Overwriting a name keeps the old file as a snapshot.
    FileWriter::write_path(&c, "/x/g1", &b"second"[..])
        .await
        .unwrap();
    let edges = c.full_readdir(x).await.unwrap();
    let g1: Vec<_> = edges
        .iter()
        .filter(|e| e.name.to_string() == "g1")
        .collect();
    assert_eq!(g1.len(), 2);
    assert!(!g1[0].current && g1[1].current && g1[0].target_id == f);

    // Policies are inherited.
    let a = c.resolve("/a").await.unwrap();
    let info = DirectoryInfo {
        stripe: Some(StripePolicy {
            target_stripe_size: 65536,
        }),
        ..Default::default()
    };
    c.set_directory_info(a, info).await.unwrap();
    c.mkdir_p("/a/deep/er").await.unwrap();
    let deep = c.resolve("/a/deep/er").await.unwrap();
    let eff = c.effective_directory_info(deep).await.unwrap();
    assert_eq!(eff.stripe.unwrap().target_stripe_size, 65536);
    assert_eq!(eff.snapshot, DirectoryInfo::root_default().snapshot);
    eggs_tests::finish(cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_survives_a_full_restart() {
    let (cluster, c) = start_cluster("restart", 1).await;
    c.mkdir_p("/keep/me").await.unwrap();
    FileWriter::write_path(&c, "/keep/me/file", &b"durable"[..])
        .await
        .unwrap();
    c.rename("/keep/me/file", "/keep/file").await.unwrap();
    let cfg = cluster.config().clone();
    cluster.stop().await.unwrap();
    drop(c);

    let cluster = eggs_run::Cluster::start(cfg).await.unwrap();
    cluster
        .wait_registered(std::time::Duration::from_secs(60))
        .await
        .unwrap();
    let c = Client::new(cluster.shuckle_addr(), Default::default())
        .await
        .unwrap();
    assert_eq!(names(&c, "/keep").await, ["file", "me"]);
    let f = c.resolve("/keep/file").await.unwrap();
    assert_eq!(c.read_file(f).await.unwrap(), b"durable");
    // New directories after a restart get fresh ids.
    let d = c.mkdir("/keep/new").await.unwrap();
    assert_ne!(d, c.resolve("/keep/me").await.unwrap());
    eggs_tests::finish(cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_renames_keep_every_file_exactly_once() {
    let (cluster, c) = start_cluster("concurrent", 2).await;
    let dirs: Vec<InodeId> = futures_dirs(&c, 6).await;
    let files_per_worker = 5;
    let workers = 12;
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (c, dirs) = (c.clone(), dirs.clone());
        tasks.push(tokio::spawn(async move {
            let mut placed = Vec::new();
            for k in 0..files_per_worker {
                let n = eggs_protocol::Name::new(format!("f{w}-{k}")).unwrap();
                let id = FileWriter::write_in(&c, dirs[0], &n, &b"x"[..])
                    .await
                    .unwrap();
                let ct = c.lookup(dirs[0], &n).await.unwrap().creation_time;
                placed.push((n, id, 0usize, ct));
            }
            for round in 0..20 {
                for (n, id, at, ct) in placed.iter_mut() {
                    let to = (*at + 1 + (round + w) % (dirs.len() - 1)) % dirs.len();
                    *ct = c
                        .rename_edge(*id, dirs[*at], n, *ct, dirs[to], n)
                        .await
                        .unwrap();
                    *at = to;
                }
            }
            placed
        }));
    }
    let mut expected = Vec::new();
    for t in tasks {
        expected.extend(t.await.unwrap());
    }
    let mut seen = std::collections::HashMap::new();
    for (i, d) in dirs.iter().enumerate() {
        for e in c.readdir(*d).await.unwrap() {
            assert!(seen.insert(e.name.to_string(), (i, e.target_id)).is_none());
        }
    }
    assert_eq!(seen.len(), workers * files_per_worker);
    for (n, id, at, _) in expected {
        assert_eq!(seen[&n.to_string()], (at, id));
    }
    eggs_tests::finish(cluster).await;
}

async fn futures_dirs(c: &Arc<Client>, n: usize) -> Vec<InodeId> {
    let mut out = Vec::new();
    for i in 0..n {
        out.push(c.mkdir(&format!("/d{i}")).await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_datagrams_and_frames_do_not_disturb_servers() {
    use eggs_protocol::shuckle::{CdcReq, ShardsReq};
    use tokio::io::AsyncWriteExt;
    let (cluster, c) = start_cluster("garbage", 1).await;
    c.mkdir("/before").await.unwrap();
    let shard = c.shuckle().request(ShardsReq {}).await.unwrap().shards[0].addr;
    let cdc = c.shuckle().request(CdcReq {}).await.unwrap().addr;
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut junk: Vec<Vec<u8>> = vec![vec![], b"SHA\x01".to_vec(), b"CDC\x01".to_vec()];
    for i in 0..200u32 {
        let len = (i * 37 % 1500) as usize;
        let mut v: Vec<u8> = (0..len).map(|j| (j as u32 * 31 + i) as u8).collect();
        // Valid magic and request id, then junk: exercises the decoder past the header.
        if i % 2 == 0 && v.len() > 12 {
            v[..4].copy_from_slice(if i % 4 == 0 { b"SHA\x01" } else { b"CDC\x01" });
        }
        junk.push(v);
    }
    for j in &junk {
        sock.send_to(j, shard.to_socket_addr()).await.unwrap();
        sock.send_to(j, cdc.to_socket_addr()).await.unwrap();
    }
    for j in junk.iter().take(20) {
        if let Ok(mut s) = tokio::net::TcpStream::connect(cluster.shuckle_addr()).await {
            let _ = s.write_all(j).await;
        }
    }
    c.mkdir("/after").await.unwrap();
    c.rename("/before", "/after/before").await.unwrap();
    assert_eq!(names(&c, "/").await, ["after"]);
    eggs_tests::finish(cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eggscli_commands() {
    let (cluster, _c) = start_cluster("cli", 1).await;
    let bin = cluster.config().bin_dir.join("eggscli");
    let shuckle = cluster.shuckle_addr().to_string();
    let run = |args: &[&str], stdin: Option<&[u8]>| {
        let mut cmd = std::process::Command::new(&bin);
        cmd.arg("--shuckle").arg(&shuckle).args(args);
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().expect("eggscli runs");
        if let Some(data) = stdin {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(data).unwrap();
        } else {
            drop(child.stdin.take());
        }
        let out = child.wait_with_output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let ok = |r: (i32, String, String)| {
        assert_eq!(r.0, 0, "stdout: {} stderr: {}", r.1, r.2);
        r.1
    };
    ok(run(&["mkdir", "-p", "/p/q"], None));
    ok(run(&["write", "/p/q/hello.txt"], Some(b"hi there")));
    assert_eq!(ok(run(&["cat", "/p/q/hello.txt"], None)), "hi there");
    ok(run(&["mv", "/p/q/hello.txt", "/p/hello.txt"], None));
    let ls = ok(run(&["ls", "/p"], None));
    assert!(ls.contains("hello.txt") && ls.contains('q'), "{ls}");
    let snaps = ok(run(&["ls", "--snapshots", "/p/q"], None));
    assert!(snaps.contains("hello.txt"), "{snaps}");
    let tree = ok(run(&["tree", "/"], None));
    assert!(tree.contains("hello.txt"), "{tree}");
    ok(run(
        &["policy", "set", "/p", "--snapshot-delete-after", "1d"],
        None,
    ));
    let pol = ok(run(&["policy", "get", "/p/q"], None));
    assert!(
        pol.contains("86400") || pol.contains("1d") || pol.contains("24h"),
        "{pol}"
    );
    let status = ok(run(&["status"], None));
    assert!(status.contains("256") || status.contains("255"), "{status}");
    // Errors: one line on stderr and exit code 1.
    let (code, _, stderr) = run(&["rmdir", "/p"], None);
    assert_eq!(code, 1);
    assert!(stderr.contains("not empty"), "{stderr}");
    let (code, _, stderr) = run(&["ls", "/nope"], None);
    assert_eq!(code, 1);
    assert!(stderr.contains("no such name"), "{stderr}");
    ok(run(&["rm", "/p/hello.txt"], None));
    ok(run(&["rmdir", "/p/q"], None));
    eggs_tests::finish(cluster).await;
}
