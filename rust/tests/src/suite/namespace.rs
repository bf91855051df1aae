//! Namespace tests: random operations checked against the model, and many directories at once.

use super::{ensure, Context, Env, TestError, TestResult};
use crate::model::{Stats, Worker, WorkerConfig};
use eggs_client::FileWriter;
use eggs_protocol::{InodeId, Name};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::task::JoinSet;

/// Makes `n` shared directories under the test's directory.
pub(super) async fn shared_dirs(env: &Env, n: usize) -> Result<Vec<InodeId>, TestError> {
    let mut dirs = Vec::new();
    for i in 0..n {
        dirs.push(env.subdir(&format!("shared-{i}")).await?);
    }
    Ok(dirs)
}

/// Runs model workers until `stop` is set, then has each verify its model; returns their
/// summed statistics. Fails as soon as one worker fails.
pub(super) fn run_workers(
    env: &Env,
    shared: &[InodeId],
    cfgs: Vec<WorkerConfig>,
    stop: Arc<AtomicBool>,
) -> JoinSet<Result<Stats, TestError>> {
    let mut set = JoinSet::new();
    for cfg in cfgs {
        let mut w = Worker::new(env.client.clone(), shared.to_vec(), cfg);
        let stop = stop.clone();
        set.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                w.step().await?;
            }
            w.verify().await?;
            Ok(w.stats)
        });
    }
    set
}

/// Waits for every worker; returns the summed statistics or the first failure.
pub(super) async fn join_workers(
    mut set: JoinSet<Result<Stats, TestError>>,
) -> Result<Stats, TestError> {
    let mut total = Stats::default();
    while let Some(r) = set.join_next().await {
        let s = r.map_err(|e| TestError::Failed(format!("worker panicked: {e}")))??;
        total.add(&s);
    }
    Ok(total)
}

pub(super) fn worker_configs(
    env: &Env,
    n: usize,
    faults: bool,
    max_file: u64,
) -> Vec<WorkerConfig> {
    (0..n)
        .map(|k| WorkerConfig {
            worker: k,
            names: 6,
            max_file_bytes: max_file,
            large_file_percent: if max_file > 5000 { 40 } else { 0 },
            faults,
            seed: env.seed.wrapping_add(k as u64),
        })
        .collect()
}

/// Several clients' worth of concurrent random operations in shared directories; every
/// outcome must match the model, and the final namespace and file contents too.
pub(super) async fn namespace_model(env: &mut Env) -> TestResult {
    let shared = shared_dirs(env, 3).await?;
    let stop = Arc::new(AtomicBool::new(false));
    // Files up to 5000 bytes: inline, across the 4 KiB inline-span boundary.
    let cfgs = worker_configs(env, 6, false, 5000);
    let set = run_workers(env, &shared, cfgs, stop.clone());
    tokio::time::sleep(env.secs(10.0)).await;
    stop.store(true, Ordering::Relaxed);
    let stats = join_workers(set).await?;
    ensure!(stats.ok > 100, "the load did not run: {stats}");
    Ok(format!("6 workers: {stats}"))
}

/// Many directories filled in parallel, with same- and cross-directory renames between them,
/// and one directory big enough to list in many pages.
pub(super) async fn parallel_dirs(env: &mut Env) -> TestResult {
    const TASKS: usize = 8;
    let dirs_per_task = env.count(8);
    let files = 12;
    let big = env.subdir("big").await?;
    let big_per_task = env.count(250);
    let mut set = JoinSet::new();
    for t in 0..TASKS {
        let (c, root) = (env.client.clone(), env.dir);
        set.spawn(async move {
            let name = |s: String| Name::new(s).expect("valid");
            // Expected listing of each of this task's directories.
            let mut expect: Vec<(InodeId, BTreeMap<String, InodeId>)> = Vec::new();
            for d in 0..dirs_per_task {
                let id = c
                    .mkdir_in(root, &name(format!("t{t}-d{d}")))
                    .await
                    .ctx("mkdir")?;
                let mut m = BTreeMap::new();
                for f in 0..files {
                    let n = format!("f{f}");
                    let fid = FileWriter::write_in(&c, id, &name(n.clone()), n.as_bytes())
                        .await
                        .ctx("create")?;
                    m.insert(n, fid);
                }
                expect.push((id, m));
            }
            // Same-directory renames f -> g, then the odd ones move to the next directory.
            for i in 0..expect.len() {
                let (dir, _) = expect[i];
                for f in 0..files {
                    let (from, to) = (format!("f{f}"), format!("g{f}"));
                    let fid = expect[i].1[&from];
                    let e = c.lookup(dir, &name(from.clone())).await.ctx("lookup")?;
                    c.rename_edge(
                        fid,
                        dir,
                        &name(from.clone()),
                        e.creation_time,
                        dir,
                        &name(to.clone()),
                    )
                    .await
                    .ctx("same-directory rename")?;
                    expect[i].1.remove(&from);
                    expect[i].1.insert(to.clone(), fid);
                    if f % 2 == 1 {
                        let j = (i + 1) % expect.len();
                        let (next, _) = expect[j];
                        let e = c.lookup(dir, &name(to.clone())).await.ctx("lookup")?;
                        let moved = format!("m{i}-{f}");
                        c.rename_edge(
                            fid,
                            dir,
                            &name(to.clone()),
                            e.creation_time,
                            next,
                            &name(moved.clone()),
                        )
                        .await
                        .ctx("cross-directory rename")?;
                        expect[i].1.remove(&to);
                        expect[j].1.insert(moved, fid);
                    }
                }
            }
            let mut mine = BTreeMap::new();
            for k in 0..big_per_task {
                let n = format!("t{t}-{k}");
                let fid = FileWriter::write_in(&c, big, &name(n.clone()), n.as_bytes())
                    .await
                    .ctx("create in the big directory")?;
                mine.insert(n, fid);
            }
            Ok::<_, TestError>((expect, mine))
        });
    }
    let mut all_dirs = Vec::new();
    let mut big_expect = BTreeMap::new();
    while let Some(r) = set.join_next().await {
        let (dirs, mine) = r.map_err(|e| TestError::Failed(format!("task panicked: {e}")))??;
        all_dirs.extend(dirs);
        big_expect.extend(mine);
    }
    let c = &env.client;
    for (dir, want) in &all_dirs {
        let got: BTreeMap<String, InodeId> = c
            .readdir(*dir)
            .await
            .ctx("readdir")?
            .into_iter()
            .map(|e| (e.name.to_string(), e.target_id))
            .collect();
        ensure!(
            got == *want,
            "directory {dir}: listed {got:?}, expected {want:?}"
        );
        for (n, id) in want.iter().take(2) {
            let data = c.read_file(*id).await.ctx("read")?;
            // Files hold their first name: `f<k>`, renamed `g<k>`, moved `m<i>-<k>`.
            let k = n.trim_start_matches('g').rsplit('-').next().unwrap_or("");
            ensure!(
                data == format!("f{k}").as_bytes(),
                "{dir}/{n} holds {data:?}"
            );
        }
    }
    let listed = c.readdir(big).await.ctx("readdir big")?;
    let got: BTreeMap<String, InodeId> = listed
        .iter()
        .map(|e| (e.name.to_string(), e.target_id))
        .collect();
    ensure!(
        listed.len() == got.len() && got == big_expect,
        "the big directory lists {} entries ({} distinct), expected {}",
        listed.len(),
        got.len(),
        big_expect.len()
    );
    Ok(format!(
        "{} directories of {files} files from {TASKS} tasks, {} entries in one directory",
        all_dirs.len(),
        big_expect.len()
    ))
}
