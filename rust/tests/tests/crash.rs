//! Crash safety: SIGKILL the CDC and shard processes in the middle of cross-directory
//! renames, restart them, and check that no file was lost or duplicated.

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
use eggs_protocol::{EggsError, EggsTime, InodeId, Name};
use eggs_tests::start_cluster;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const DIRS: usize = 5;
const WORKERS: usize = 8;
const FILES_PER_WORKER: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_during_cross_directory_renames_loses_nothing() {
    let (mut cluster, c) = start_cluster("crash", 2).await;
    let mut dirs = Vec::new();
    for i in 0..DIRS {
        dirs.push(c.mkdir(&format!("/d{i}")).await.unwrap());
    }
    let mut files = Vec::new();
    for w in 0..WORKERS {
        for k in 0..FILES_PER_WORKER {
            let n = Name::new(format!("f{w}-{k}")).unwrap();
            let id = FileWriter::write_in(&c, dirs[0], &n, n.as_bytes())
                .await
                .unwrap();
            files.push((w, n, id));
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let renames = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for w in 0..WORKERS {
        let mine: Vec<(Name, InodeId)> = files
            .iter()
            .filter(|f| f.0 == w)
            .map(|f| (f.1.clone(), f.2))
            .collect();
        let (c, dirs, stop, renames) = (c.clone(), dirs.clone(), stop.clone(), renames.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(w as u64);
            while !stop.load(Ordering::Relaxed) {
                let (n, id) = &mine[rng.gen_range(0..mine.len())];
                let Some((from, ctime)) = locate(&c, &dirs, n).await else {
                    panic!("{n} vanished");
                };
                let to = dirs[rng.gen_range(0..dirs.len())];
                if to == from {
                    continue;
                }
                match c.rename_edge(*id, from, n, ctime, to, n).await {
                    Ok(_) => {
                        renames.fetch_add(1, Ordering::Relaxed);
                    }
                    // A retry across a crash may find the rename already done or the edge
                    // still locked by the resuming transaction: both are fine, we re-locate.
                    Err(e)
                        if matches!(
                            e.eggs(),
                            Some(EggsError::MismatchingCreationTime)
                                | Some(EggsError::NameNotFound)
                                | Some(EggsError::EdgeLocked)
                                | Some(EggsError::MismatchingTarget)
                        ) => {}
                    Err(e) => panic!("rename {n}: {e}"),
                }
            }
        }));
    }
    // The killer: SIGKILL a random metadata process, let it stay dead a moment, restart.
    let mut rng = rand::rngs::StdRng::seed_from_u64(EggsTime::now().0);
    let victims = ["cdc", "shard-0", "shard-1"];
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(200..600))).await;
        let v = victims[rng.gen_range(0..victims.len())];
        cluster.kill(v, eggs_run::Signal::SIGKILL).unwrap();
        tokio::time::sleep(Duration::from_millis(rng.gen_range(50..300))).await;
        cluster.restart(v).await.unwrap();
    }
    cluster
        .wait_registered(Duration::from_secs(60))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let done = renames.load(Ordering::Relaxed);
    eprintln!("{done} renames completed across 8 kills");
    assert!(done > 20, "the load did run");

    // Every file is in exactly one directory, under its own name, and reads back.
    let mut seen: HashMap<String, InodeId> = HashMap::new();
    for d in &dirs {
        for e in c.readdir(*d).await.unwrap() {
            let prev = seen.insert(e.name.to_string(), e.target_id);
            assert!(prev.is_none(), "{} is linked twice", e.name);
        }
    }
    assert_eq!(seen.len(), files.len(), "files lost: {seen:?}");
    for (_, n, id) in &files {
        assert_eq!(seen[&n.to_string()], *id);
        assert_eq!(c.read_file(*id).await.unwrap(), n.as_bytes());
    }
    // No edge stays locked: every file can still be moved (transactions resumed and ended).
    for (_, n, id) in &files {
        let mut tries = 0;
        loop {
            let (from, ctime) = locate(&c, &dirs, n).await.unwrap();
            let to = dirs[(dirs.iter().position(|d| *d == from).unwrap() + 1) % DIRS];
            match c.rename_edge(*id, from, n, ctime, to, n).await {
                Ok(_) => break,
                Err(e) if e.eggs() == Some(EggsError::EdgeLocked) && tries < 50 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("final rename of {n}: {e}"),
            }
        }
    }
    eggs_tests::finish(cluster).await;
}

/// Finds the directory currently holding `name`, and its edge's creation time.
async fn locate(
    c: &eggs_client::Client,
    dirs: &[InodeId],
    name: &Name,
) -> Option<(InodeId, EggsTime)> {
    // The name may be mid-move (briefly in both, locked in one): look until it settles.
    for _ in 0..100 {
        let mut found = Vec::new();
        for d in dirs {
            if let Ok(e) = c.lookup(*d, name).await {
                found.push((*d, e.creation_time));
            }
        }
        if found.len() == 1 {
            return found.pop();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}
